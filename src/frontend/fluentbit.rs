//! The Fluent Bit `filter_wasm` front end: a wasm32-wasip1 core module with Fluent Bit's
//! calling convention.
//!
//! Fluent Bit copies the tag and the record (JSON) into our memory through our `malloc`,
//! calls the filter function, copies the NUL-terminated string it returns (which stays
//! ours), then frees its copies. An empty string drops the record. One function per filter
//! instance; the instance lives as long as the filter (Fluent Bit 4.2.0 and later).
//!
//! The functions differ only in the output mode they force: `newterms_filter` uses the
//! rule file's, `newterms_alert`, `newterms_passthrough` and `newterms_annotate` force one.
//! Configuration comes from a file (there is no other way into a wasm filter): the first of
//! [`RULE_PATHS`] that exists, else the built-in rule.

use std::sync::Mutex;

use crate::rule::{ErrorPolicy, OutputMode};
use crate::{with_error_field, Detector, Output};

/// Where the rule file is looked for, in order. Relative paths resolve against the
/// directories Fluent Bit's `Accessible_Paths` opens.
pub const RULE_PATHS: [&str; 2] = ["/etc/newterms/rule.toml", "newterms/rule.toml"];

enum State {
    Ready(Box<Detector>),
    /// The rule file exists but does not load: every record passes with the reason.
    Failed(String),
}

/// Where the table is saved, and when it was last.
struct StateFile {
    path: String,
    every_records: u64,
    every_seconds: u64,
    since_save: u64,
    saved_at: Option<i64>,
}

impl StateFile {
    /// Saves when enough records or record-time seconds have passed.
    fn maybe_save(&mut self, detector: &Detector, time_sec: i32) {
        self.since_save += 1;
        let now = i64::from(time_sec);
        let saved_at = *self.saved_at.get_or_insert(now);
        if self.since_save >= self.every_records || now - saved_at >= self.every_seconds as i64 {
            self.save(detector, now);
        }
    }

    /// Writes atomically: a temporary file beside it, synced, renamed over.
    fn save(&mut self, detector: &Detector, now: i64) {
        let tmp = format!("{}.tmp", self.path);
        let bytes = detector.snapshot();
        let result = std::fs::File::create(&tmp)
            .and_then(|mut f| {
                std::io::Write::write_all(&mut f, &bytes)?;
                f.sync_all()
            })
            .and_then(|()| std::fs::rename(&tmp, &self.path));
        if let Err(e) = result {
            eprintln!("[newterms] cannot write state to {}: {e}", self.path);
        }
        self.since_save = 0;
        self.saved_at = Some(now);
    }
}

struct Filter {
    state: State,
    file: Option<StateFile>,
    policy: ErrorPolicy,
    /// The returned string; reused, so memory stops growing with the table.
    out: Vec<u8>,
    /// Outputs beyond the first of one call (Fluent Bit takes one record back).
    extra_outputs: u64,
    /// Calls with a null or negative-length record.
    bad_calls: u64,
}

static FILTER: Mutex<Option<Filter>> = Mutex::new(None);

fn load() -> Filter {
    let mut source = "the built-in rule".to_owned();
    let mut text = String::new();
    for path in RULE_PATHS {
        match std::fs::read_to_string(path) {
            Ok(t) => {
                source = path.to_owned();
                text = t;
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                let msg = format!("cannot read {path}: {e}");
                return failed(msg);
            }
        }
    }
    match Detector::from_config(&text, "") {
        Ok(d) => {
            eprintln!(
                "[newterms] loaded {source}: rule {} ({})",
                d.rule().rule_id,
                d.rule().name
            );
            let settings = d.rule().settings.clone();
            let file = settings.state_file.map(|path| StateFile {
                path,
                every_records: settings.state_every_records,
                every_seconds: settings.state_every_seconds,
                since_save: 0,
                saved_at: None,
            });
            let d = match &file {
                Some(f) => restore(d, &text, &f.path),
                None => d,
            };
            Filter {
                policy: settings.on_error,
                file,
                state: State::Ready(Box::new(d)),
                out: Vec::new(),
                extra_outputs: 0,
                bad_calls: 0,
            }
        }
        Err(e) => failed(format!("{source} does not load: {e}")),
    }
}

/// The detector with the table saved at `path`, if there is one. A file that does not
/// restore is moved aside to `<path>.bad` (kept for inspection, never overwritten by the
/// next save) and the detector starts empty: records keep flowing.
fn restore(fresh: Detector, rule_text: &str, path: &str) -> Detector {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return fresh,
        Err(e) => {
            eprintln!("[newterms] cannot read state {path}: {e}; starting with an empty table");
            return fresh;
        }
    };
    match Detector::restore(rule_text, "", &bytes) {
        Ok(d) => {
            eprintln!("[newterms] restored {} terms from {path}", d.terms().len());
            d
        }
        Err(e) => {
            let aside = format!("{path}.bad");
            let moved = std::fs::rename(path, &aside).map(|()| format!("moved to {aside}"));
            eprintln!(
                "[newterms] state {path} does not restore ({e}); {}; starting with an empty table",
                moved.unwrap_or_else(|m| format!("could not move it aside: {m}"))
            );
            fresh
        }
    }
}

fn failed(msg: String) -> Filter {
    eprintln!("[newterms] {msg}; every record passes unchanged with a newterms.error field");
    Filter {
        file: None,
        state: State::Failed(msg),
        policy: ErrorPolicy::Pass,
        out: Vec::new(),
        extra_outputs: 0,
        bad_calls: 0,
    }
}

/// One call: the record in, a pointer to our NUL-terminated answer out.
///
/// # Safety
/// `record` must point to `len` readable bytes (or be null).
unsafe fn call(mode: Option<OutputMode>, time_sec: i32, record: *const u8, len: i32) -> *const u8 {
    let mut guard = FILTER
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let filter = guard.get_or_insert_with(load);
    filter.out.clear();
    if record.is_null() || len < 0 {
        filter.bad_calls += 1;
        if filter.policy == ErrorPolicy::Pass {
            let msg = format!("the host passed a null record (length {len})");
            filter
                .out
                .extend_from_slice(with_error_field(b"", "invalid-json", &msg).as_bytes());
        }
    } else {
        // SAFETY: the caller guarantees `len` readable bytes at `record`.
        let record = unsafe { std::slice::from_raw_parts(record, len as usize) };
        let Filter {
            state,
            policy,
            out,
            extra_outputs,
            file,
            ..
        } = filter;
        match state {
            State::Failed(msg) => {
                out.extend_from_slice(with_error_field(record, "config", msg).as_bytes())
            }
            State::Ready(detector) => {
                if let Some(mode) = mode {
                    detector.set_output(mode);
                }
                let mut answered = false;
                detector.process(record, &mut |o| {
                    if answered {
                        *extra_outputs += 1;
                        return;
                    }
                    match o {
                        Output::Emit(text) => {
                            out.extend_from_slice(text.as_bytes());
                            answered = true;
                        }
                        Output::Error(e) if *policy == ErrorPolicy::Pass => {
                            let marked = with_error_field(record, e.kind().as_str(), e.message());
                            out.extend_from_slice(marked.as_bytes());
                            answered = true;
                        }
                        Output::Error(_) => {}
                    }
                });
                if let Some(f) = file {
                    f.maybe_save(detector, time_sec);
                }
            }
        }
    }
    filter.out.push(0);
    filter.out.as_ptr()
}

/// Defines one exported filter function per output mode (Fluent Bit's `Function_Name`).
macro_rules! filter_functions {
    ($($(#[$doc:meta])* $name:ident => $mode:expr;)*) => {$(
        $(#[$doc])*
        ///
        /// # Safety
        /// Called by Fluent Bit with pointers into this module's memory.
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            _tag: *const u8,
            _tag_len: i32,
            time_sec: i32,
            _time_nsec: i32,
            record: *const u8,
            record_len: i32,
        ) -> *const u8 {
            unsafe { call($mode, time_sec, record, record_len) }
        }
    )*};
}

filter_functions! {
    /// The filter with the rule file's output mode (`Function_Name newterms_filter`).
    newterms_filter => None;
    /// The filter in `alert` mode.
    newterms_alert => Some(OutputMode::Alert);
    /// The filter in `passthrough` mode.
    newterms_passthrough => Some(OutputMode::Passthrough);
    /// The filter in `annotate` mode.
    newterms_annotate => Some(OutputMode::Annotate);
}

/// The counters as a NUL-terminated JSON object (valid until the next call).
#[no_mangle]
pub extern "C" fn newterms_stats() -> *const u8 {
    let mut guard = FILTER
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let filter = guard.get_or_insert_with(load);
    let mut doc = serde_json::Map::new();
    match &filter.state {
        State::Ready(d) => {
            for (k, v) in d.stats().fields() {
                doc.insert(k, v.into());
            }
        }
        State::Failed(msg) => {
            doc.insert("config_error".into(), msg.as_str().into());
        }
    }
    doc.insert("extra_outputs_dropped".into(), filter.extra_outputs.into());
    doc.insert("bad_calls".into(), filter.bad_calls.into());
    filter.out.clear();
    filter
        .out
        .extend_from_slice(serde_json::Value::Object(doc).to_string().as_bytes());
    filter.out.push(0);
    filter.out.as_ptr()
}
