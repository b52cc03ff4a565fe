//! `newterms run`'s arguments.

use std::path::PathBuf;

use anyhow::Result;

use crate::usage;

pub(crate) const RUN_USAGE: &str = "\
Usage: newterms run [OPTIONS] [FILE|DIR...]

Reads each FILE (`-` or none: stdin), plain or gzip, whatever its layout: NDJSON (one record
per line), one JSON document (a CloudTrail delivery file {\"Records\": [...]}, an array of
records, an EventBridge event, a record, pretty-printed or not), or several documents one
after another. A line that is not JSON is an error for that line alone; the records around
it are read. A DIR is read every level down, its files in event-time order where their
names say it (CloudTrail's YYYYMMDDTHHMMZ), else by path; all through one detector. Runs
them through the newterms component in wasmtime and writes the outputs as NDJSON to stdout,
a summary of the statistics to stderr (and, on a terminal, a progress line).

Options:
  --rule PATH                 rule file (Elastic detection-rules TOML), or a directory of
                              them (*.toml); repeatable. More than one rule runs as a pack:
                              each record parsed once, each rule its own table and
                              counters. Default: the built-in rule
  --output MODE               alert (default) | passthrough | annotate | matches
  --max-terms N               most terms held (default 100000)
  --allowed-lateness DUR      e.g. 1h (default), 30m
  --learning-period DUR       learn new terms without alerting for DUR of record time
                              from each rule's first accepted record (e.g. 7d)
  --learn                     build a baseline: learn every new term, alert on none
                              (learning_period = \"forever\"); needs --state, where the
                              baseline goes for every host to load
  --max-record-bytes N        larger records are errors (default 1048576)
  --index NAME                the index of records that name none of their own (no
                              data_stream.*, no Beat's agent.type), e.g.
                              logs-aws.cloudtrail-default: each rule sees only the
                              records of its `index` patterns
  --unknown-index MODE        skip (default) | match: whether a rule with index patterns
                              sees a record whose index cannot be told
  --exceptions FILE           a Kibana exception-list export (NDJSON) for the rule;
                              repeatable. Matching records do not count for the rule.
  --errors FILE               write per-record errors as NDJSON to FILE (default: a count
                              and the first error on stderr)
  --component FILE            run this component instead of the built-in one
  --batch N                   records per call into the component (default 256)
  --state FILE                keep the term table in FILE: read at start when present,
                              written atomically at the end and every --state-every records
  --state-every N             records between state writes (default 10000)
  --state-every-seconds N     and seconds of record time between them (default 60)
  --state-reset               start with an empty table even if FILE does not restore
  --max-guest-memory BYTES    the most memory the guest may use (default: from the rule's
                              max_table_bytes, at least 256 MiB)
  --max-call-seconds N        the longest one call into the guest may run (default 10)
  --quiet, -q                 no progress line

A record longer than max_record_bytes is an error for that record. A call the
guest cannot complete (out of memory or time) is reported, its records are written to the
errors as `guest-failure`, and the run carries on with a fresh guest restored from the
last checkpoint (taken every 10,000 records).
";

pub(crate) struct RunArgs {
    pub(crate) rules: Vec<PathBuf>,
    /// Settings from the options, over each rule's.
    pub(crate) settings: newterms::Settings,
    pub(crate) errors: Option<PathBuf>,
    pub(crate) component: Option<PathBuf>,
    pub(crate) batch: usize,
    pub(crate) files: Vec<String>,
    pub(crate) state: Option<PathBuf>,
    pub(crate) state_every: u64,
    pub(crate) state_every_seconds: u64,
    pub(crate) state_reset: bool,
    pub(crate) quiet: bool,
    pub(crate) exceptions: Vec<PathBuf>,
    pub(crate) max_guest_memory: Option<usize>,
    pub(crate) max_call_seconds: Option<u64>,
}

/// A usage error: exit status 2.
pub(crate) fn parse_run(args: &[String]) -> Result<RunArgs> {
    let mut a = RunArgs {
        rules: Vec::new(),
        settings: newterms::Settings::default(),
        errors: None,
        component: None,
        batch: 256,
        files: Vec::new(),
        state: None,
        state_every: newterms::host::StatePolicy::default().every_records,
        state_every_seconds: newterms::host::StatePolicy::default().every_seconds,
        state_reset: false,
        quiet: false,
        exceptions: Vec::new(),
        max_guest_memory: None,
        max_call_seconds: None,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| usage(format!("{name} needs a value")))
        };
        match arg.as_str() {
            "--help" | "-h" => {
                print!("{RUN_USAGE}");
                std::process::exit(0);
            }
            "--rule" => a.rules.push(value("--rule")?.into()),
            "--output" => a.settings.output = Some(choice(&value("--output")?, "--output")?),
            "--max-terms" => {
                a.settings.max_terms = Some(count(&value("--max-terms")?, "--max-terms")?)
            }
            "--allowed-lateness" => {
                a.settings.allowed_lateness = Some(duration(
                    &value("--allowed-lateness")?,
                    "--allowed-lateness",
                )?)
            }
            "--learning-period" => {
                a.settings.learning_period =
                    Some(duration(&value("--learning-period")?, "--learning-period")?)
            }
            "--learn" => a.settings.learning_period = Some(newterms::time::FOREVER),
            "--max-record-bytes" => {
                a.settings.max_record_bytes =
                    Some(count(&value("--max-record-bytes")?, "--max-record-bytes")?)
            }
            "--index" => {
                let name = value("--index")?;
                newterms::index::check_name(&name).map_err(|e| usage(format!("--index: {e}")))?;
                a.settings.index = Some(name);
            }
            "--unknown-index" => {
                a.settings.unknown_index =
                    Some(choice(&value("--unknown-index")?, "--unknown-index")?)
            }
            "--errors" => a.errors = Some(value("--errors")?.into()),
            "--exceptions" => a.exceptions.push(value("--exceptions")?.into()),
            "--component" => a.component = Some(value("--component")?.into()),
            "--batch" => a.batch = number(&value("--batch")?, "--batch")?.max(1) as usize,
            "--state" => a.state = Some(value("--state")?.into()),
            "--state-every" => {
                a.state_every = number(&value("--state-every")?, "--state-every")?.max(1)
            }
            "--state-reset" => a.state_reset = true,
            "--quiet" | "-q" => a.quiet = true,
            "--state-every-seconds" => {
                a.state_every_seconds =
                    number(&value("--state-every-seconds")?, "--state-every-seconds")?
            }
            "--max-guest-memory" => {
                a.max_guest_memory =
                    Some(number(&value("--max-guest-memory")?, "--max-guest-memory")? as usize)
            }
            "--max-call-seconds" => {
                a.max_call_seconds =
                    Some(number(&value("--max-call-seconds")?, "--max-call-seconds")?.max(1))
            }
            "-" => a.files.push("-".into()),
            s if s.starts_with('-') => {
                return Err(usage(format!(
                    "unknown option `{s}` (see `newterms run --help`)"
                )))
            }
            file => a.files.push(file.into()),
        }
    }
    if a.files.is_empty() {
        a.files.push("-".into());
    }
    if a.settings.learning_period == Some(newterms::time::FOREVER) && a.state.is_none() {
        return Err(usage(
            "--learn needs --state FILE: the baseline it builds is written there",
        ));
    }
    Ok(a)
}

/// A whole number given to option `name`.
pub(crate) fn number(s: &str, name: &str) -> Result<u64> {
    s.parse()
        .map_err(|_| usage(format!("{name}: `{s}` is not a whole number")))
}

/// A count or size given to option `name`, as a setting can hold it.
pub(crate) fn count(s: &str, name: &str) -> Result<usize> {
    let n = number(s, name)?;
    usize::try_from(n)
        .ok()
        .filter(|_| i64::try_from(n).is_ok())
        .ok_or_else(|| usage(format!("{name}: `{s}` is too large")))
}

/// A duration (`90m`) given to option `name`.
pub(crate) fn duration(s: &str, name: &str) -> Result<newterms::time::Nanos> {
    newterms::time::parse_duration(s)
        .ok_or_else(|| usage(format!("{name}: `{s}` is not a duration")))
}

/// One of a setting's named values (`--output annotate`), read as the settings read it.
fn choice<T: serde::de::DeserializeOwned>(s: &str, name: &str) -> Result<T> {
    use serde::de::value::StrDeserializer;
    let de = StrDeserializer::<serde::de::value::Error>::new(s);
    T::deserialize(de).map_err(|e| usage(format!("{name}: {e}")))
}
