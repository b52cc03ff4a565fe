//! `newterms`: run new-terms detection rules over log files, through the component.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use newterms::host::{Frame, Framer};
use newterms_host::{BatchOutput, Limits, Output, Runtime, Session, Supervised};

const USAGE: &str = "\
newterms: edge-side detection of Elastic new_terms rules (default: first sts:GetCallerIdentity
per AWS identity in 10 days)

Usage:
  newterms run [OPTIONS] [FILE...]   detect over files (or stdin), write outputs to stdout
  newterms check-rule PATH...        validate rule files (and directories of them)
  newterms component --out FILE      write the WebAssembly component this command runs
  newterms fluentbit-module --out FILE
                                     write the Fluent Bit filter module built with it
  newterms help | --help             this text; `newterms run --help` for run's options
";

const RUN_USAGE: &str = "\
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
  --output MODE               alert (default) | passthrough | annotate
  --max-terms N               most terms held (default 100000)
  --allowed-lateness DUR      e.g. 1h (default), 30m
  --max-record-bytes N        larger records are errors (default 1048576)
  --exceptions FILE           a Kibana exception-list export (NDJSON) for the rule;
                              repeatable. Matching records do not count for the rule.
  --errors FILE               write per-record errors as NDJSON to FILE (default: a count
                              and the first error on stderr)
  --component FILE            run this component instead of the built-in one
  --batch N                   records per call into the component (default 256)
  --state FILE                keep the term table in FILE: read at start when present,
                              written atomically at the end and every --state-every records
  --state-every N             records between state writes (default 100000)
  --state-every-seconds N     and seconds between them (default 60)
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

struct RunArgs {
    rules: Vec<PathBuf>,
    settings: Vec<String>,
    errors: Option<PathBuf>,
    component: Option<PathBuf>,
    batch: usize,
    files: Vec<String>,
    state: Option<PathBuf>,
    state_every: u64,
    state_every_seconds: u64,
    state_reset: bool,
    quiet: bool,
    exceptions: Vec<PathBuf>,
    max_guest_memory: Option<usize>,
    max_call_seconds: Option<u64>,
}

/// A usage error: exit status 2.
#[derive(Debug)]
struct Usage(String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Usage(msg.into()))
}

fn main() -> ExitCode {
    match run_main() {
        Ok(code) => code,
        Err(e) => {
            if is_broken_pipe(&e) {
                return ExitCode::SUCCESS;
            }
            eprintln!("newterms: {e:#}");
            if e.downcast_ref::<Usage>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}

fn run_main() -> Result<ExitCode> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first() else {
        eprint!("{USAGE}");
        return Err(usage("no command given"));
    };
    let rest = &args[1..];
    match cmd.as_str() {
        "run" => run(parse_run(rest)?),
        "check-rule" => check_rule(rest),
        "component" => write_artifact(rest, "component", newterms_host::COMPONENT),
        "fluentbit-module" => {
            write_artifact(rest, "fluentbit-module", newterms_host::FLUENTBIT_MODULE)
        }
        "help" | "--help" | "-h" => {
            print!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        other => Err(usage(format!(
            "unknown command `{other}` (see `newterms --help`)"
        ))),
    }
}

fn parse_run(args: &[String]) -> Result<RunArgs> {
    let mut a = RunArgs {
        rules: Vec::new(),
        settings: Vec::new(),
        errors: None,
        component: None,
        batch: 256,
        files: Vec::new(),
        state: None,
        state_every: 100_000,
        state_every_seconds: 60,
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
            "--output" => a
                .settings
                .push(format!("output = {:?}", value("--output")?)),
            "--max-terms" => a.settings.push(format!(
                "max_terms = {}",
                number(&value("--max-terms")?, "--max-terms")?
            )),
            "--allowed-lateness" => a.settings.push(format!(
                "allowed_lateness = {:?}",
                value("--allowed-lateness")?
            )),
            "--max-record-bytes" => a.settings.push(format!(
                "max_record_bytes = {}",
                number(&value("--max-record-bytes")?, "--max-record-bytes")?
            )),
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
    Ok(a)
}

fn number(s: &str, name: &str) -> Result<u64> {
    s.parse()
        .map_err(|_| usage(format!("{name}: `{s}` is not a whole number")))
}

/// The component (the built-in one, or `--component`), compiled once and then loaded
/// from the cache ([`newterms_host::cache_dir`]).
fn runtime(component: Option<&PathBuf>) -> Result<Runtime> {
    let cache = newterms_host::cache_dir();
    match component {
        Some(p) => {
            let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
            Runtime::with_cache(&bytes, cache.as_deref())
        }
        None if newterms_host::COMPONENT.is_empty() => Runtime::embedded(),
        None => Runtime::with_cache(newterms_host::COMPONENT, cache.as_deref()),
    }
}

/// The settings TOML for the given export files, with the value lists they name read
/// from beside them.
fn exception_settings(files: &[PathBuf]) -> Result<String> {
    let mut texts = Vec::new();
    let mut lists = newterms::exceptions::ValueLists::new();
    for p in files {
        let text = std::fs::read_to_string(p)
            .with_context(|| format!("reading exceptions {}", p.display()))?;
        let read = |path: &Path| match std::fs::read_to_string(path) {
            Ok(t) => Ok(Some(t)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        };
        let found = newterms::exceptions::value_lists_beside(p, &text, read)
            .map_err(|(path, e)| anyhow::anyhow!("reading value list {}: {e}", path.display()))?;
        lists.extend(found);
        texts.push(text);
    }
    Ok(newterms::kibana_exceptions_setting(&texts, &lists))
}

fn check_rule(args: &[String]) -> Result<ExitCode> {
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!(
            "Usage: newterms check-rule PATH... [--exceptions FILE]...\n\n\
             Loads each rule file (each PATH a file, or a directory of *.toml files) as \
             `newterms run` would, with the exception exports, and says per rule whether it \
             loads or why not, and which exception items it loaded. Several rules are then \
             loaded together, as the pack `newterms run` would run. Exit status 1 when any \
             does not load."
        );
        return Ok(ExitCode::SUCCESS);
    }
    let mut paths = Vec::new();
    let mut exceptions = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--exceptions" => exceptions.push(PathBuf::from(
                it.next()
                    .ok_or_else(|| usage("--exceptions needs a value"))?,
            )),
            other if !other.starts_with('-') => paths.push(PathBuf::from(other)),
            other => return Err(usage(format!("check-rule: unexpected `{other}`"))),
        }
    }
    if paths.is_empty() {
        return Err(usage(
            "usage: newterms check-rule PATH... [--exceptions FILE]...",
        ));
    }
    let settings = exception_settings(&exceptions)?;
    let rt = runtime(None)?;
    let files = newterms_host::rule_files(&paths)?;
    let (mut loaded, mut failed) = (Vec::new(), 0usize);
    for path in &files {
        let shown = path.display();
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                println!("{shown}: cannot read: {e}");
                failed += 1;
                continue;
            }
        };
        match Session::open(&rt, &text, &settings)? {
            Ok(_) => {
                // The same parse the guest made, natively, to list what it loaded.
                let rule =
                    newterms::Rule::parse(&text, &settings).map_err(|e| anyhow::anyhow!("{e}"))?;
                println!("{shown}: ok: {} ({})", rule.name, rule.rule_id);
                for item in &rule.settings.exceptions {
                    println!("  exception {}: {}", item.id, item.name);
                }
                println!("  {} exception items", rule.settings.exceptions.len());
                loaded.push((shown.to_string(), text));
            }
            Err(e) => {
                println!("{shown}: {}", e.message);
                failed += 1;
            }
        }
    }
    let mut pack_ok = true;
    if loaded.len() > 1 {
        let rules = newterms_host::Rules::Pack(loaded.clone());
        let limits = Limits::for_rules(&rules, &settings);
        if let Err(e) = Session::open_rules(&rt, &rules, &settings, None, limits)? {
            println!("pack: {}", e.message);
            pack_ok = false;
        }
    }
    println!(
        "{} rules: {} loaded, {failed} did not{}",
        files.len(),
        loaded.len(),
        match (loaded.len() > 1, pack_ok) {
            (true, true) => "; the loaded ones run together as a pack",
            (true, false) => "; the loaded ones do not run together (see pack:)",
            _ => "",
        }
    );
    Ok(if failed == 0 && pack_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Writes one of the artifacts built into this command (`component`, `fluentbit-module`).
fn write_artifact(args: &[String], name: &str, bytes: &[u8]) -> Result<ExitCode> {
    let [flag, out] = args else {
        return Err(usage(format!("usage: newterms {name} --out FILE")));
    };
    if flag != "--out" {
        return Err(usage(format!("usage: newterms {name} --out FILE")));
    }
    if bytes.is_empty() {
        bail!("this build has no {name}: run `.ci/build-guest`");
    }
    std::fs::write(out, bytes).with_context(|| format!("writing {out}"))?;
    Ok(ExitCode::SUCCESS)
}

/// Where per-record errors go.
/// Where per-record errors go: a file (`--errors`), or a count and the first on stderr.
struct ErrorSink {
    file: Option<io::BufWriter<File>>,
    count: u64,
    first: Option<String>,
    /// Errors found by the command itself, not the detector, by kind (the detector's are
    /// in its statistics).
    host: std::collections::BTreeMap<&'static str, u64>,
}

impl ErrorSink {
    fn record(&mut self, source: &str, line: u64, kind: &str, message: &str) -> Result<()> {
        self.count += 1;
        match &mut self.file {
            Some(w) => {
                let doc = serde_json::json!({"source": source, "line": line, "kind": kind, "message": message});
                writeln!(w, "{doc}")?;
            }
            None if self.first.is_none() => {
                self.first = Some(format!("{source}:{line}: {kind}: {message}"));
            }
            None => {}
        }
        Ok(())
    }

    /// An error the command found itself.
    fn host(&mut self, source: &str, line: u64, kind: &'static str, message: &str) -> Result<()> {
        *self.host.entry(kind).or_default() += 1;
        self.record(source, line, kind, message)
    }
}

/// A reader that says how much it holds already read (so the next read may wait).
trait Buffered: BufRead {
    fn buffered(&self) -> usize;
}

impl<R: Read> Buffered for BufReader<R> {
    fn buffered(&self) -> usize {
        self.buffer().len()
    }
}

/// Counts the bytes read through it (before decompression), for the progress line.
struct Counted<R> {
    inner: R,
    count: std::rc::Rc<std::cell::Cell<u64>>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}

/// The live line on stderr for a long run: only on a terminal, not with `--quiet`, and
/// only once the run has lasted a second.
struct Progress {
    shown: bool,
    enabled: bool,
    started: std::time::Instant,
    last: std::time::Instant,
    files: u64,
    total_files: u64,
    records: u64,
    alerts: u64,
    errors: u64,
    bytes: std::rc::Rc<std::cell::Cell<u64>>,
    total_bytes: Option<u64>,
}

impl Progress {
    fn new(enabled: bool, total_files: u64, total_bytes: Option<u64>) -> Progress {
        let now = std::time::Instant::now();
        Progress {
            shown: false,
            enabled,
            started: now,
            last: now,
            files: 0,
            total_files,
            records: 0,
            alerts: 0,
            errors: 0,
            bytes: Default::default(),
            total_bytes,
        }
    }

    fn show(&mut self) {
        let elapsed = self.started.elapsed().as_secs_f64();
        if !self.enabled || elapsed < 1.0 || self.last.elapsed().as_millis() < 250 {
            return;
        }
        self.last = std::time::Instant::now();
        let bytes = self.bytes.get() as f64;
        let rate = bytes / elapsed;
        let left = match self.total_bytes {
            Some(total) if rate > 0.0 => {
                let secs = ((total as f64 - bytes).max(0.0) / rate) as u64;
                format!(", {}:{:02} left", secs / 60, secs % 60)
            }
            _ => String::new(),
        };
        eprint!(
            "\r\x1b[Knewterms: {}/{} files, {} records, {:.1} MB/s, {} alerts, {} errors{left}",
            self.files,
            self.total_files,
            self.records,
            rate / 1e6,
            self.alerts,
            self.errors
        );
        self.shown = true;
    }

    /// Clears the line before the summary.
    fn done(&mut self) {
        if self.shown {
            eprint!("\r\x1b[K");
        }
    }
}

/// The inputs to read, in order: `-` and files as given; a directory's files (every level
/// down) in the order [`newterms::host::reading_order`] gives.
fn inputs(args: &[String]) -> Result<Vec<String>> {
    fn walk(dir: &Path, out: &mut Vec<String>) -> Result<()> {
        let entries =
            std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
            let path = entry.path();
            // Hidden files and directories (`.git`, editors' files) are not input.
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            if path.is_dir() {
                walk(&path, out)?;
            } else if path.is_file() {
                out.push(path.display().to_string());
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    for a in args {
        let path = Path::new(a);
        // Not only regular files: `/dev/stdin`, a pipe, `<(zcat ...)`.
        if a == "-" || (path.exists() && !path.is_dir()) {
            files.push(a.clone());
        } else if path.is_dir() {
            let mut found = Vec::new();
            walk(path, &mut found)?;
            newterms::host::reading_order(&mut found);
            files.extend(found);
        } else {
            return Err(usage(format!("{a}: no such file or directory")));
        }
    }
    Ok(files)
}

/// Where the term table is kept between runs.
struct StateFile {
    path: PathBuf,
    every: u64,
    every_seconds: u64,
    since_save: u64,
    saved_at: std::time::Instant,
}

impl StateFile {
    /// Writes the snapshot atomically: a temporary file beside it, synced, renamed over.
    fn save(&mut self, session: &mut Supervised) -> Result<()> {
        let bytes = session.snapshot()?;
        let tmp = self.path.with_extension("tmp");
        let write = || -> io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                // Make the rename itself durable where the platform allows.
                let _ = File::open(dir).and_then(|d| d.sync_all());
            }
            Ok(())
        };
        write().with_context(|| format!("writing state to {}", self.path.display()))?;
        self.since_save = 0;
        self.saved_at = std::time::Instant::now();
        Ok(())
    }

    /// Whether enough records or (wall-clock) seconds have passed since the last write.
    fn due(&self) -> bool {
        self.since_save >= self.every || self.saved_at.elapsed().as_secs() >= self.every_seconds
    }
}

struct Runner<'a> {
    session: Supervised,
    /// The lines of one call, joined by newlines (reused).
    packed: Vec<u8>,
    /// Longer values are refused before they reach the guest.
    max_document: usize,
    progress: Progress,
    out: io::BufWriter<io::StdoutLock<'a>>,
    errors: ErrorSink,
    batch: usize,
    state: Option<StateFile>,
}

impl Runner<'_> {
    /// Sends inputs (each with its line number) through the component: runs of one-line
    /// values packed as NDJSON (the cheapest way across the boundary), a value that spans
    /// lines on its own.
    fn flush(
        &mut self,
        source: &str,
        inputs: &mut Vec<Vec<u8>>,
        lines: &mut Vec<u64>,
    ) -> Result<()> {
        let mut start = 0;
        while start < inputs.len() {
            let multiline = |i: &Vec<u8>| i.contains(&b'\n');
            let end = match multiline(&inputs[start]) {
                true => start + 1,
                false => inputs[start..]
                    .iter()
                    .position(multiline)
                    .map_or(inputs.len(), |k| start + k),
            };
            self.send(source, &inputs[start..end], &lines[start..end])?;
            start = end;
        }
        self.out.flush()?;
        if let Some(state) = &mut self.state {
            state.since_save += inputs.len() as u64;
            if state.due() {
                state.save(&mut self.session)?;
            }
        }
        inputs.clear();
        lines.clear();
        Ok(())
    }

    fn send(&mut self, source: &str, inputs: &[Vec<u8>], lines: &[u64]) -> Result<()> {
        let call = if inputs.len() == 1 && inputs[0].contains(&b'\n') {
            self.session.process_batch(inputs)?
        } else {
            self.packed.clear();
            for (i, input) in inputs.iter().enumerate() {
                if i > 0 {
                    self.packed.push(b'\n');
                }
                self.packed.extend_from_slice(input);
            }
            self.session.process_lines(&self.packed, inputs.len())?
        };
        let outputs: Vec<BatchOutput> = match call {
            Ok(outputs) => outputs,
            Err(failed) => {
                eprintln!(
                    "newterms: the guest failed on a call of {} records ({}); restarted from the last checkpoint, \
                     losing the sightings of {} records processed since",
                    failed.inputs, failed.reason, failed.lost_since_checkpoint
                );
                for line in lines.iter() {
                    self.errors
                        .host(source, *line, "guest-failure", &failed.reason)?;
                }
                Vec::new()
            }
        };
        for BatchOutput { input, output } in outputs {
            match output {
                Output::Emit(doc) => {
                    self.progress.alerts += 1;
                    self.out.write_all(doc.as_bytes())?;
                    self.out.write_all(b"\n")?;
                }
                Output::Error(e) => {
                    let line = lines.get(input as usize).copied().unwrap_or(0);
                    self.errors
                        .record(source, line, e.kind.as_str(), &e.message)?;
                }
            }
        }
        self.progress.records += inputs.len() as u64;
        Ok(())
    }

    /// One input: a file (plain or gzip) or standard input, cut into values by
    /// [`Framer`] whatever its layout. A read that fails part way (a truncated gzip
    /// stream, an I/O error) keeps every value before it and is one error naming where.
    fn file(&mut self, name: &str) -> Result<()> {
        let raw: Box<dyn Read> = if name == "-" {
            Box::new(io::stdin().lock())
        } else {
            Box::new(File::open(name).with_context(|| format!("opening {name}"))?)
        };
        let raw = Counted {
            inner: raw,
            count: self.progress.bytes.clone(),
        };
        let mut reader = BufReader::with_capacity(1 << 16, raw);
        let source = if name == "-" { "stdin" } else { name };
        let gz = reader
            .fill_buf()
            .with_context(|| format!("reading {source}"))?
            .starts_with(&[0x1f, 0x8b]);
        let mut reader: Box<dyn Buffered> = if gz {
            Box::new(BufReader::with_capacity(
                1 << 16,
                flate2::read::MultiGzDecoder::new(reader),
            ))
        } else {
            Box::new(reader)
        };
        self.progress.files += 1;
        let max_document = self.max_document;
        let mut framer = Framer::new(max_document);
        let mut got = Framed::default();
        let mut line = Vec::new();
        let failure = loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) => break None,
                Ok(_) => {
                    if line.last() == Some(&b'\n') {
                        line.pop();
                    }
                    framer.line(&line, &mut |f| got.take(f, max_document));
                }
                Err(e) => {
                    // What was read of the last line still counts as a line.
                    if !line.is_empty() {
                        framer.line(&line, &mut |f| got.take(f, max_document));
                    }
                    break Some(e);
                }
            }
            // Send when the batch is full, or, on standard input, before a read that may
            // wait for more (so a stream is answered as it comes).
            let waiting = name == "-" && reader.buffered() == 0;
            if got.inputs.len() >= self.batch || (waiting && !got.is_empty()) {
                self.send_framed(source, &mut got)?;
            }
        };
        framer.finish(&mut |f| got.take(f, max_document));
        self.send_framed(source, &mut got)?;
        if let Some(e) = failure {
            let what = if gz { "the gzip stream" } else { "the input" };
            let message = format!(
                "{what} broke off after line {} ({e}); every record before it was read",
                framer.lines()
            );
            self.errors
                .host(source, framer.lines(), "truncated", &message)?;
        }
        Ok(())
    }

    fn send_framed(&mut self, source: &str, got: &mut Framed) -> Result<()> {
        self.flush(source, &mut got.inputs, &mut got.lines)?;
        for (line, kind, message) in got.refused.drain(..) {
            self.errors.host(source, line, kind, &message)?;
        }
        self.progress.errors = self.errors.count;
        self.progress.show();
        Ok(())
    }
}

/// What the framer gave since the last call: values with their lines, and the lines the
/// command itself reports (not JSON, too large to keep).
#[derive(Default)]
struct Framed {
    inputs: Vec<Vec<u8>>,
    lines: Vec<u64>,
    refused: Vec<(u64, &'static str, String)>,
}

impl Framed {
    fn take(&mut self, frame: Frame<'_>, max_document: usize) {
        match frame {
            Frame::Value { line, text } => {
                self.inputs.push(text.to_vec());
                self.lines.push(line);
            }
            Frame::Bad { line, text, why } => {
                const SHOWN: usize = 120;
                let shown = String::from_utf8_lossy(&text[..text.len().min(SHOWN)]);
                let more = if text.len() > SHOWN { "..." } else { "" };
                let message = format!("{why}: {shown}{more}");
                self.refused.push((line, "invalid-json", message));
            }
            Frame::TooLarge { line, bytes } => self.refused.push((
                line,
                "too-large",
                format!(
                    "a value of {bytes} bytes or more, over the host's limit of {max_document}: refused by the host"
                ),
            )),
        }
    }

    fn is_empty(&self) -> bool {
        self.inputs.is_empty() && self.refused.is_empty()
    }
}

fn run(args: RunArgs) -> Result<ExitCode> {
    let files = inputs(&args.files)?;
    let rules = newterms_host::Rules::load(&args.rules).map_err(|e| usage(format!("{e:#}")))?;
    let rt = runtime(args.component.as_ref())?;
    let mut settings = args.settings.join("\n");
    settings.push_str(&exception_settings(&args.exceptions)?);
    let previous = match &args.state {
        Some(p) if !args.state_reset => match std::fs::read(p) {
            Ok(bytes) => Some(bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!("reading state {}", p.display())))
            }
        },
        _ => None,
    };
    let mut limits = Limits::for_rules(&rules, &settings);
    if let Some(m) = args.max_guest_memory {
        limits.max_memory = m;
    }
    if let Some(secs) = args.max_call_seconds {
        limits.max_call = std::time::Duration::from_secs(secs);
    }
    let session =
        match Supervised::open(&rt, &rules, &settings, previous.as_deref(), limits, 10_000)? {
            Ok(s) => s,
            Err(e) if e.key.as_deref() == Some("snapshot") => {
                return Err(usage(format!(
                    "state file {}: {}; to start with an empty table instead, add --state-reset",
                    args.state
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                    e.message
                )))
            }
            Err(e) => return Err(usage(format!("rule: {}", e.message))),
        };
    let errors = ErrorSink {
        file: match &args.errors {
            Some(p) => Some(io::BufWriter::new(
                File::create(p).with_context(|| format!("creating {}", p.display()))?,
            )),
            None => None,
        },
        count: 0,
        first: None,
        host: Default::default(),
    };
    let total_bytes = files
        .iter()
        .map(|f| match f.as_str() {
            "-" => None,
            f => std::fs::metadata(f).ok().map(|m| m.len()),
        })
        .sum::<Option<u64>>();
    let progress = Progress::new(
        !args.quiet && io::IsTerminal::is_terminal(&io::stderr()),
        files.len() as u64,
        total_bytes,
    );
    let stdout = io::stdout();
    let mut runner = Runner {
        session,
        packed: Vec::new(),
        max_document: limits.max_memory / 4,
        progress,
        out: io::BufWriter::new(stdout.lock()),
        errors,
        batch: args.batch,
        state: args.state.as_ref().map(|p| StateFile {
            path: p.clone(),
            every: args.state_every,
            every_seconds: args.state_every_seconds,
            since_save: 0,
            saved_at: std::time::Instant::now(),
        }),
    };
    for f in &files {
        runner.file(f)?;
    }
    runner.progress.done();
    runner.out.flush()?;
    if let Some(state) = &mut runner.state {
        state.save(&mut runner.session)?;
    }
    let stats = runner.session.stats()?;
    let mut summary = vec![format!("files={}", runner.progress.files)];
    summary.extend(
        stats
            .fields()
            .into_iter()
            .filter(|(k, v)| *v != 0 || matches!(k.as_str(), "records" | "matched" | "alerts"))
            .map(|(k, v)| format!("{k}={v}")),
    );
    // The command's own errors count with the detector's, under the same names.
    for (kind, n) in &runner.errors.host {
        let key = format!("errors.{kind}");
        match summary
            .iter_mut()
            .find(|s| s.starts_with(&format!("{key}=")))
        {
            Some(s) => {
                let had: u64 = s[key.len() + 1..].parse().unwrap_or(0);
                *s = format!("{key}={}", had + n);
            }
            None => summary.push(format!("{key}={n}")),
        }
    }
    eprintln!("newterms: {}", summary.join(" "));
    if matches!(rules, newterms_host::Rules::Pack(_)) {
        for (id, s) in runner.session.rule_stats()? {
            eprintln!(
                "newterms: rule {id}: matched={} alerts={} terms_held={}",
                s.matched, s.alerts, s.terms_held
            );
        }
    }
    match (&mut runner.errors.file, &runner.errors.first) {
        (Some(w), _) => w.flush()?,
        (None, Some(first)) => eprintln!(
            "newterms: {} records had errors (use --errors FILE to keep them); first: {first}",
            runner.errors.count
        ),
        (None, None) => {}
    }
    Ok(ExitCode::SUCCESS)
}
