//! `newterms run`: files and directories through the component, outputs to stdout.

pub(crate) mod args;
mod input;
mod report;
mod state;

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::process::ExitCode;

use anyhow::{Context, Result};
use newterms::host::Framer;
use newterms_host::{BatchOutput, Limits, Output, Supervised};

use crate::{exception_settings, runtime, usage};
use args::RunArgs;
use input::{inputs, Buffered, Counted, Framed, Value};
use report::{ErrorSink, Progress};
use state::StateFile;

pub(crate) struct Runner<'a> {
    pub(crate) session: Supervised,
    /// Longer values are refused before they reach the guest.
    pub(crate) max_document: usize,
    pub(crate) progress: Progress,
    pub(crate) out: io::BufWriter<io::StdoutLock<'a>>,
    pub(crate) errors: ErrorSink,
    pub(crate) batch: usize,
    pub(crate) state: Option<StateFile>,
}

impl Runner<'_> {
    /// Sends what the framer gave through the component: each run of one-line values as
    /// the NDJSON it already is (the cheapest way across the boundary), a value that spans
    /// lines on its own.
    pub(crate) fn flush(&mut self, source: &str, got: &mut Framed) -> Result<()> {
        let values = &got.values;
        let mut start = 0;
        while start < values.len() {
            let end = match values[start].multiline {
                true => start + 1,
                false => values[start..]
                    .iter()
                    .position(|v| v.multiline)
                    .map_or(values.len(), |k| start + k),
            };
            self.send(source, &got.packed, &values[start..end])?;
            start = end;
        }
        self.out.flush()?;
        if let Some(state) = &mut self.state {
            state.tick(&mut self.session, values.len() as u64)?;
        }
        got.clear();
        Ok(())
    }

    /// One call: `values` (of `packed`) are one value spanning lines, or a run of one-line
    /// values, which stand in `packed` joined by newlines.
    pub(crate) fn send(&mut self, source: &str, packed: &[u8], values: &[Value]) -> Result<()> {
        let (Some(first), Some(last)) = (values.first(), values.last()) else {
            return Ok(());
        };
        let text = &packed[first.start..last.end];
        let call = match first.multiline {
            true => self.session.process_batch(&[text.to_vec()])?,
            false => self.session.process_lines(text, values.len())?,
        };
        let outputs: Vec<BatchOutput> = match call {
            Ok(outputs) => outputs,
            Err(failed) => {
                eprintln!(
                    "newterms: the guest failed on a call of {} records ({}); restarted from the last checkpoint, \
                     losing the sightings of {} records processed since",
                    failed.inputs, failed.reason, failed.lost_since_checkpoint
                );
                for v in values {
                    self.errors
                        .host(source, v.line, "guest-failure", &failed.reason)?;
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
                    let line = values.get(input as usize).map_or(0, |v| v.line);
                    self.errors
                        .record(source, line, e.kind.as_str(), &e.message)?;
                }
            }
        }
        self.progress.records += values.len() as u64;
        Ok(())
    }

    /// One input: a file (plain or gzip) or standard input, cut into values by
    /// [`Framer`] whatever its layout. A read that fails part way (a truncated gzip
    /// stream, an I/O error) keeps every value before it and is one error naming where.
    pub(crate) fn file(&mut self, name: &str) -> Result<()> {
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
            if got.values.len() >= self.batch || (waiting && !got.is_empty()) {
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

    pub(crate) fn send_framed(&mut self, source: &str, got: &mut Framed) -> Result<()> {
        self.flush(source, got)?;
        for (line, kind, message) in got.refused.drain(..) {
            self.errors.host(source, line, kind, &message)?;
        }
        self.progress.errors = self.errors.count;
        self.progress.show();
        Ok(())
    }
}

pub(crate) fn run(args: RunArgs) -> Result<ExitCode> {
    let files = inputs(&args.files)?;
    let rules = newterms_host::Rules::load(&args.rules).map_err(|e| usage(format!("{e:#}")))?;
    let rt = runtime(args.component.as_ref())?;
    let settings = args
        .settings
        .layered(&exception_settings(&args.exceptions)?);
    let settings =
        newterms_host::settings_text(&settings).map_err(|e| usage(format!("the settings: {e}")))?;
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
        max_document: limits.max_memory / 4,
        progress,
        out: io::BufWriter::new(stdout.lock()),
        errors,
        batch: args.batch,
        state: args.state.as_ref().map(|p| StateFile {
            path: p.clone(),
            cadence: newterms::host::Cadence::new(newterms::host::StatePolicy {
                every_records: args.state_every,
                every_seconds: args.state_every_seconds,
            }),
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
    let total = newterms::Stats::from(&stats);
    if total.index_unknown > 0 && total.out_of_index > 0 {
        eprintln!(
            "newterms: {} records named no index (no data_stream.*, no Beat, no event.dataset, not raw CloudTrail) and rules with index patterns skipped them: name their index with --index NAME, or read them anyway with --unknown-index match",
            total.index_unknown
        );
    }
    if matches!(rules, newterms_host::Rules::Pack(_)) {
        for (id, s) in runner.session.rule_stats()? {
            eprintln!(
                "newterms: rule {id}: matched={} alerts={} out_of_index={} terms_held={}",
                s.matched, s.alerts, s.out_of_index, s.terms_held
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
