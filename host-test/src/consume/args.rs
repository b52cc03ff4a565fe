//! `newterms consume`'s options.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use newterms::host::StatePolicy;

use crate::run::args::{count, duration, number};
use crate::usage;

pub(crate) const HELP: &str = "\
Usage: newterms consume --brokers HOSTS --topic TOPIC --state-topic TOPIC [OPTIONS]

A member of a Kafka consumer group over a topic of match documents (written by edges in
`matches` output mode, keyed by `newterms_key`). It keeps one term table per assigned
partition, saves each to the state topic with the offset it covers, restores it when the
partition is assigned (here or to another member), and writes one alert per new term.
Delivery is at least once: alerts are written before the state and the offsets that cover
them, and a replayed alert has the same id.

Options:
  --brokers HOSTS             bootstrap servers (host:port, comma separated)
  --group ID                  consumer group (default newterms)
  --topic TOPIC               the matches topic
  --state-topic TOPIC         where partition snapshots go (make it compacted)
  --alerts-topic TOPIC        where alerts go (default: stdout, NDJSON)
  --errors-topic TOPIC        where bad records and damaged snapshots go, with the reason
                              in the `newterms-error` header (default: stderr)
  --rule PATH                 rule file or directory, repeatable (default: the built-in
                              rule); the edges' rules, or more
  --max-terms N               most terms held per rule and partition (default 100000)
  --allowed-lateness DUR      e.g. 1h (default)
  --state-every N             records between a partition's saves (default 10000)
  --state-every-seconds N     and seconds of record time between them (default 60)
  --batch N                   most records per call into the component (default 512)
  --exit-when-idle SECS       leave the group and exit after SECS without a record (counted
                              from the first assignment)
  --stats FILE                write per-partition statistics (JSON) here on exit
  --kafka KEY=VALUE           a librdkafka setting, repeatable (session.timeout.ms=10000)
  --quiet, -q                 no progress line
";

pub(crate) struct ConsumeArgs {
    pub(crate) brokers: String,
    pub(crate) group: String,
    pub(crate) topic: String,
    pub(crate) state_topic: String,
    pub(crate) alerts_topic: Option<String>,
    pub(crate) errors_topic: Option<String>,
    pub(crate) rules: Vec<PathBuf>,
    /// Settings from the options, over each rule's.
    pub(crate) settings: newterms::Settings,
    pub(crate) policy: StatePolicy,
    pub(crate) batch: usize,
    pub(crate) exit_when_idle: Option<Duration>,
    pub(crate) stats: Option<PathBuf>,
    pub(crate) kafka: Vec<(String, String)>,
    pub(crate) quiet: bool,
}

/// `None`: help was asked for (and printed).
pub(crate) fn parse(args: &[String]) -> Result<Option<ConsumeArgs>> {
    let mut a = ConsumeArgs {
        brokers: String::new(),
        group: "newterms".into(),
        topic: String::new(),
        state_topic: String::new(),
        alerts_topic: None,
        errors_topic: None,
        rules: Vec::new(),
        settings: newterms::Settings::default(),
        policy: StatePolicy::default(),
        batch: 512,
        exit_when_idle: None,
        stats: None,
        kafka: Vec::new(),
        quiet: false,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| usage(format!("{name} needs a value")))
        };
        match flag.as_str() {
            "--help" | "-h" => {
                print!("{HELP}");
                return Ok(None);
            }
            "--brokers" => a.brokers = value(flag)?,
            "--group" => a.group = value(flag)?,
            "--topic" => a.topic = value(flag)?,
            "--state-topic" => a.state_topic = value(flag)?,
            "--alerts-topic" => a.alerts_topic = Some(value(flag)?),
            "--errors-topic" => a.errors_topic = Some(value(flag)?),
            "--rule" => a.rules.push(value(flag)?.into()),
            "--max-terms" => a.settings.max_terms = Some(count(&value(flag)?, flag)?),
            "--allowed-lateness" => {
                a.settings.allowed_lateness = Some(duration(&value(flag)?, flag)?)
            }
            "--state-every" => a.policy.every_records = number(&value(flag)?, flag)?.max(1),
            "--state-every-seconds" => a.policy.every_seconds = number(&value(flag)?, flag)?.max(1),
            "--batch" => a.batch = number(&value(flag)?, flag)?.max(1) as usize,
            "--exit-when-idle" => {
                a.exit_when_idle = Some(Duration::from_secs(number(&value(flag)?, flag)?))
            }
            "--stats" => a.stats = Some(value(flag)?.into()),
            "--kafka" => {
                let kv = value(flag)?;
                let Some((k, v)) = kv.split_once('=') else {
                    return Err(usage(format!("--kafka: `{kv}` is not KEY=VALUE")));
                };
                a.kafka.push((k.to_owned(), v.to_owned()));
            }
            "--quiet" | "-q" => a.quiet = true,
            other => return Err(usage(format!("consume: unknown option `{other}`"))),
        }
    }
    for (name, v) in [
        ("--brokers", &a.brokers),
        ("--topic", &a.topic),
        ("--state-topic", &a.state_topic),
    ] {
        if v.is_empty() {
            return Err(usage(format!("consume: {name} is required")));
        }
    }
    Ok(Some(a))
}
