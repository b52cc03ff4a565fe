//! What a run reports beside its outputs: per-record errors, and the progress line.

use std::fs::File;
use std::io::{self, Write};

use anyhow::Result;

/// Where per-record errors go: a file (`--errors`), or a count and the first on stderr.
pub(crate) struct ErrorSink {
    pub(crate) file: Option<io::BufWriter<File>>,
    pub(crate) count: u64,
    pub(crate) first: Option<String>,
    /// Errors found by the command itself, not the detector, by kind (the detector's are
    /// in its statistics).
    pub(crate) host: std::collections::BTreeMap<&'static str, u64>,
}

impl ErrorSink {
    pub(crate) fn record(
        &mut self,
        source: &str,
        line: u64,
        kind: &str,
        message: &str,
    ) -> Result<()> {
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
    pub(crate) fn host(
        &mut self,
        source: &str,
        line: u64,
        kind: &'static str,
        message: &str,
    ) -> Result<()> {
        *self.host.entry(kind).or_default() += 1;
        self.record(source, line, kind, message)
    }
}

/// The live line on stderr for a long run: only on a terminal, not with `--quiet`, and
/// only once the run has lasted a second.
pub(crate) struct Progress {
    pub(crate) shown: bool,
    pub(crate) enabled: bool,
    pub(crate) started: std::time::Instant,
    pub(crate) last: std::time::Instant,
    pub(crate) files: u64,
    pub(crate) total_files: u64,
    pub(crate) records: u64,
    pub(crate) alerts: u64,
    pub(crate) errors: u64,
    pub(crate) bytes: std::rc::Rc<std::cell::Cell<u64>>,
    pub(crate) total_bytes: Option<u64>,
}

impl Progress {
    pub(crate) fn new(enabled: bool, total_files: u64, total_bytes: Option<u64>) -> Progress {
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

    pub(crate) fn show(&mut self) {
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
    pub(crate) fn done(&mut self) {
        if self.shown {
            eprint!("\r\x1b[K");
        }
    }
}
