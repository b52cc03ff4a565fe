//! A host that answers each record with at most one record: Fluent Bit's `wasm` filter.
//!
//! Everything such a host decides lives here: where it finds its rules (its [`Places`]),
//! restoring and saving its state file, what it answers for a record in error (the
//! rule's `on_error`), outputs beyond the first, its counters, and how it starts over
//! after a call that never returned. The Fluent Bit module only translates its calling
//! convention into [`Filter`] calls.

use super::{first_present, read_rules, Exceptions, Files, Restored, StateFile};
use crate::rule::{ErrorPolicy, OutputMode, Settings, SeveralOutputs};
use crate::{with_error_field, Detector, Output, Writer};

/// Where a host looks for its configuration: each name, within each directory, in order;
/// the first that exists is used.
#[derive(Debug, Clone, Copy)]
pub struct Places {
    /// Directories searched before those the host opened (its WASI preopens).
    pub first: &'static [&'static str],
    /// Where in each directory: the directory itself (`""`), or a subdirectory of it
    /// (`"newterms/"`).
    pub within: &'static [&'static str],
    /// The rule file.
    pub rule: &'static str,
    /// A directory of rule files (`*.toml`, in name order) loaded after the rule file as
    /// a pack.
    pub rules_dir: &'static str,
    /// A Kibana exception-list export.
    pub exceptions: &'static str,
    /// Who writes the records' JSON text.
    pub writer: Writer,
}

/// The Fluent Bit module's places: `/etc/newterms`, then every directory Fluent Bit's
/// `Accessible_Paths` opens, each for the files themselves or a `newterms/` beneath.
pub const FLUENT_BIT: Places = Places {
    first: &["/etc/newterms"],
    within: &["", "newterms/"],
    rule: "rule.toml",
    rules_dir: "rules",
    exceptions: "exceptions.ndjson",
    // `filter_wasm` hands over JSON written by Fluent Bit's own encoder.
    writer: Writer::FluentBit,
};

impl Places {
    /// The directories searched, in order: `first`, then `opened` (each once).
    fn directories(&self, opened: &[String]) -> Vec<String> {
        let mut dirs: Vec<String> = self.first.iter().map(|d| (*d).to_owned()).collect();
        for d in opened {
            let d = d.trim_end_matches('/');
            let d = if d.is_empty() { "/" } else { d };
            if !dirs.iter().any(|known| known == d) {
                dirs.push(d.to_owned());
            }
        }
        dirs
    }

    /// Every path where `name` may be, in order of preference.
    fn candidates(&self, dirs: &[String], name: &str) -> Vec<String> {
        let mut out = Vec::new();
        for dir in dirs {
            for within in self.within {
                out.push(match dir.as_str() {
                    "." => format!("{within}{name}"),
                    "/" => format!("/{within}{name}"),
                    d => format!("{d}/{within}{name}"),
                });
            }
        }
        out
    }
}

/// The field of a bundle, the one record handed back for a record that gives several
/// outputs (with `several_outputs = "bundle"`, the default):
/// `{"newterms_outputs":[<output>,<output>,...]}`, each output as it would be alone.
pub const BUNDLE_FIELD: &str = "newterms_outputs";

/// The configuration step that splits a bundle back into one record per output: the body
/// of Fluent Bit's `lua` filter (`Call newterms_split`, `Enable_Flb_Null true` so that a
/// record's JSON nulls survive the trip through Lua), placed right after the `wasm`
/// filter. A record that is not a bundle passes unchanged (`return 0`: not even re-encoded).
/// One line, so that it fits a classic configuration's `Code` key as it is; the README
/// holds it verbatim (a test checks).
pub const SPLIT_LUA: &str = "function newterms_split(tag, ts, record) local outputs = \
record.newterms_outputs if outputs == nil then return 0, ts, record end return 1, ts, outputs end";

/// After this many calls that never returned, the filter stops rebuilding itself: each
/// rebuild leaves the abandoned detector's memory behind, and a cause that keeps
/// trapping will not go away on its own.
pub const MAX_RECOVERIES: u32 = 8;

/// The most interpreter stack one call of the Fluent Bit module needs, in bytes, in WAMR's
/// accounting: measured by `host-test`'s stack test, which fails when a call needs more.
/// Fluent Bit's default (8 KiB) holds it with room to spare.
pub const STACK_NEED: u32 = 6912;

enum State {
    Ready(Box<Detector>),
    /// The configuration does not load, or the filter gave up: every record passes with
    /// the reason.
    Failed(String),
}

/// A detector in a one-answer host, with its state file and counters.
pub struct Filter {
    state: State,
    file: Option<StateFile>,
    policy: ErrorPolicy,
    several: SeveralOutputs,
    /// Outputs beyond the first of one call, dropped (`several_outputs = "first"`).
    extra_outputs: u64,
    /// Records answered with a bundle, and the outputs those bundles held.
    bundles: u64,
    bundled_outputs: u64,
    /// Calls with a null or negative-length record.
    bad_calls: u64,
    /// Writes to the state file or its journal that failed, and whether the last did
    /// (a failure is logged once, and so is the recovery: not once per record).
    state_errors: u64,
    state_failing: bool,
}

/// What a host went through with calls that never returned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recoveries {
    /// Calls that never returned (each rebuilt the filter).
    pub calls: u32,
    /// Of those, the ones abandoned inside the allocator, which then started over on
    /// fresh memory.
    pub allocator_restarts: u32,
}

impl Filter {
    /// Finds the configuration in `places`, loads it and restores the state file; every
    /// step is logged. A configuration that does not load gives a filter that passes
    /// every record with the reason.
    pub fn open(files: &dyn Files, places: &Places, log: &mut dyn FnMut(&str)) -> Filter {
        match Filter::load(files, places, log) {
            Ok(f) => f,
            Err(msg) => Filter::failed(msg, log),
        }
    }

    /// A new filter after a call that never returned (it trapped: the host abandoned it
    /// midway, so the old detector cannot be trusted and is not touched). It is rebuilt
    /// from the state file, as at start; `recoveries` counts this one.
    pub fn reopen(
        files: &dyn Files,
        places: &Places,
        recoveries: Recoveries,
        log: &mut dyn FnMut(&str),
    ) -> Filter {
        let count = recoveries.calls;
        log(&format!(
            "the previous call did not return: it trapped, and the host dropped its record (Fluent \
             Bit logs the trap just before this). Rebuilding the detector from its configuration, \
             state file and journal (without a state file, the table starts empty). If the trap was \
             'wasm operand \
             stack overflow', raise Wasm_Stack_Size: this module needs at most {STACK_NEED} bytes \
             (recovery {count} of at most {MAX_RECOVERIES})"
        ));
        if count > MAX_RECOVERIES {
            let msg = format!(
                "stopped after {MAX_RECOVERIES} calls that trapped; restart the host once the cause \
                 is fixed"
            );
            return Filter::failed(msg, log);
        }
        Filter::open(files, places, log)
    }

    fn load(
        files: &dyn Files,
        places: &Places,
        log: &mut dyn FnMut(&str),
    ) -> Result<Filter, String> {
        let dirs = places.directories(&files.opened_dirs());
        let found = |name: &str| {
            let candidates = places.candidates(&dirs, name);
            let list: Vec<&str> = candidates.iter().map(String::as_str).collect();
            first_present(files, &list)
                .map(|p| p.map(str::to_owned))
                .map_err(|e| format!("cannot read {e}"))
        };
        let paths: Vec<String> = [found(places.rule)?, found(places.rules_dir)?]
            .into_iter()
            .flatten()
            .collect();
        if paths.is_empty() {
            let within: Vec<String> = places
                .within
                .iter()
                .map(|w| format!("{w}{}", places.rule))
                .chain(
                    places
                        .within
                        .iter()
                        .map(|w| format!("{w}{}/", places.rules_dir)),
                )
                .collect();
            log(&format!(
                "no rule file in {} (looked for {}): running the built-in rule",
                dirs.join(", "),
                within.join(", ")
            ));
        }
        let rules = read_rules(files, &paths).map_err(|e| format!("cannot read {e}"))?;
        let mut source = match rules.as_slice() {
            [] => "the built-in rule".to_owned(),
            [(path, _)] => path.clone(),
            many => format!("a pack of {} rules", many.len()),
        };
        let mut settings = Settings::default();
        if let Some(path) = found(places.exceptions)? {
            let exceptions =
                Exceptions::read(files, &[&path]).map_err(|e| format!("cannot read {e}"))?;
            settings = exceptions.settings();
            source = format!("{source} with exceptions {path}");
        }
        let detector = Detector::open(&rules, &settings, None)
            .map_err(|e| format!("{source} does not load: {e}"))?;
        // One line a rule for a few; a count for a pack of many.
        let loaded: Vec<&crate::Rule> = detector.rules().collect();
        if loaded.len() <= 10 {
            for rule in &loaded {
                log(&format!(
                    "loaded {source}: rule {} ({})",
                    rule.rule_id, rule.name
                ));
            }
        } else {
            log(&format!(
                "loaded {source}: rules {} to {}",
                loaded[0].rule_id,
                loaded[loaded.len() - 1].rule_id
            ));
        }
        let settings_of_host = detector.rule().settings.clone();
        let mut file = settings_of_host
            .state_file
            .clone()
            .map(|path| StateFile::new(path, settings_of_host.state_policy()));
        let mut detector = match &mut file {
            None => detector,
            Some(f) => {
                let open = |snapshot: Option<&[u8]>| Detector::open(&rules, &settings, snapshot);
                let restored = f
                    .restore(files, open)
                    .map_err(|e| format!("{source} does not load: {e}"))?;
                if !matches!(restored, Restored::Fresh(_)) {
                    log(&restored.describe(&f.path));
                }
                let mut detector = restored.detector();
                // The journal: what changed after the state file was written.
                match f.resume(files, &mut detector) {
                    Ok(said) => said.iter().for_each(|line| log(line)),
                    Err(e) => log(&format!(
                        "cannot keep a journal at {e}: changes since the last state write \
                         are lost on a stop"
                    )),
                }
                detector
            }
        };
        detector.assume_writer(places.writer);
        Ok(Filter {
            state: State::Ready(Box::new(detector)),
            file,
            policy: settings_of_host.on_error(),
            several: settings_of_host.several_outputs(),
            extra_outputs: 0,
            bundles: 0,
            bundled_outputs: 0,
            bad_calls: 0,
            state_errors: 0,
            state_failing: false,
        })
    }

    fn failed(msg: String, log: &mut dyn FnMut(&str)) -> Filter {
        log(&format!(
            "{msg}; every record passes unchanged with a newterms.error field"
        ));
        Filter {
            state: State::Failed(msg),
            file: None,
            policy: ErrorPolicy::Pass,
            several: SeveralOutputs::Bundle,
            extra_outputs: 0,
            bundles: 0,
            bundled_outputs: 0,
            bad_calls: 0,
            state_errors: 0,
            state_failing: false,
        }
    }

    /// Answers one record (`None`: the host passed no record) into `out`: empty to drop
    /// it, else the one record to pass on. `time` is the record's time in seconds as the
    /// host has it (the clock of the state file's policy); `tag` is the record's tag
    /// (the `index_by_tag` setting reads it); `mode` overrides the rule's output mode.
    #[allow(clippy::too_many_arguments)]
    pub fn answer(
        &mut self,
        files: &dyn Files,
        tag: &[u8],
        record: Option<&[u8]>,
        time: i64,
        mode: Option<OutputMode>,
        out: &mut Vec<u8>,
        log: &mut dyn FnMut(&str),
    ) {
        out.clear();
        let Some(record) = record else {
            self.bad_calls += 1;
            if self.policy == ErrorPolicy::Pass {
                let marked = with_error_field(b"", "invalid-json", "the host passed a null record");
                out.extend_from_slice(marked.as_bytes());
            }
            return;
        };
        let detector = match &mut self.state {
            State::Failed(msg) => {
                out.extend_from_slice(with_error_field(record, "config", msg).as_bytes());
                return;
            }
            State::Ready(d) => d,
        };
        if let Some(mode) = mode {
            detector.set_output(mode);
        }
        // A tag that is not UTF-8 names no index of its own.
        detector.set_tag(std::str::from_utf8(tag).unwrap_or(""));
        let (policy, several) = (self.policy, self.several);
        let (mut outputs, mut dropped) = (0u64, 0u64);
        detector.process(record, &mut |o| {
            let text = match o {
                Output::Emit(text) => text,
                Output::Error(e) if policy == ErrorPolicy::Pass => {
                    with_error_field(record, e.kind().as_str(), e.message()).into()
                }
                Output::Error(_) => return,
            };
            outputs += 1;
            match (outputs, several) {
                (1, _) => {}
                (_, SeveralOutputs::First) => {
                    dropped += 1;
                    return;
                }
                (2, SeveralOutputs::Bundle) => {
                    let head = format!("{{\"{BUNDLE_FIELD}\":[");
                    out.splice(0..0, head.bytes());
                    out.push(b',');
                }
                (_, SeveralOutputs::Bundle) => out.push(b','),
            }
            out.extend_from_slice(text.as_bytes());
        });
        self.extra_outputs += dropped;
        if outputs > 1 && several == SeveralOutputs::Bundle {
            out.extend_from_slice(b"]}");
            self.bundles += 1;
            self.bundled_outputs += outputs;
        }
        if let Some(f) = &mut self.file {
            match f.after_call(files, detector, 1, Some(time)) {
                Ok(true) if self.state_failing => {
                    self.state_failing = false;
                    log(&format!("writing state to {} again", f.path));
                }
                Ok(_) => {}
                Err(e) => {
                    self.state_errors += 1;
                    if !std::mem::replace(&mut self.state_failing, true) {
                        log(&format!(
                            "cannot write state to {e}; counted in state_errors, and said again \
                             only once it works"
                        ));
                    }
                }
            }
        }
    }

    /// The counters as a JSON object: the detector's, per exception item
    /// (`excepted_by`), per rule for a pack (`rules`), and the host's own, with what the
    /// host went through (`recoveries`).
    pub fn stats_json(&self, recoveries: Recoveries) -> String {
        let mut doc = serde_json::Map::new();
        match &self.state {
            State::Ready(d) => {
                for (k, v) in d.stats().fields() {
                    doc.insert(k, v.into());
                }
                let by: serde_json::Map<String, serde_json::Value> = d
                    .exception_counts()
                    .into_iter()
                    .map(|(k, v)| (k, v.into()))
                    .collect();
                doc.insert("excepted_by".into(), by.into());
                if d.rules().nth(1).is_some() {
                    let rules: serde_json::Map<String, serde_json::Value> = d
                        .all_rule_stats()
                        .into_iter()
                        .map(|(id, s)| {
                            let fields: serde_json::Map<String, serde_json::Value> =
                                s.fields().into_iter().map(|(k, v)| (k, v.into())).collect();
                            (id, fields.into())
                        })
                        .collect();
                    doc.insert("rules".into(), rules.into());
                }
            }
            State::Failed(msg) => {
                doc.insert("config_error".into(), msg.as_str().into());
            }
        }
        doc.insert("extra_outputs_dropped".into(), self.extra_outputs.into());
        doc.insert("bundles".into(), self.bundles.into());
        doc.insert("bundled_outputs".into(), self.bundled_outputs.into());
        doc.insert("bad_calls".into(), self.bad_calls.into());
        doc.insert("state_errors".into(), self.state_errors.into());
        doc.insert("recoveries".into(), recoveries.calls.into());
        doc.insert(
            "allocator_restarts".into(),
            recoveries.allocator_restarts.into(),
        );
        serde_json::Value::Object(doc).to_string()
    }
}
