//! A host that answers each record with at most one record: Fluent Bit's `wasm` filter.
//!
//! Everything such a host decides lives here: where it finds its rules (its [`Places`]),
//! restoring and saving its state file, what it answers for a record in error (the
//! rule's `on_error`), outputs beyond the first, its counters, and how it starts over
//! after a call that never returned. The Fluent Bit module only translates its calling
//! convention into [`Filter`] calls.

use super::{first_present, read_rules, Exceptions, Files, Restored, StateFile};
use crate::rule::{ErrorPolicy, OutputMode, Settings};
use crate::{with_error_field, Detector, Output, Writer};

/// Where a host looks for its configuration, each list in order of preference.
#[derive(Debug, Clone, Copy)]
pub struct Places {
    /// The rule file: the first that exists.
    pub rule: &'static [&'static str],
    /// A directory of rule files (`*.toml`, in name order) loaded after the rule file as
    /// a pack: the first that exists.
    pub rules_dir: &'static [&'static str],
    /// A Kibana exception-list export: the first that exists.
    pub exceptions: &'static [&'static str],
    /// Who writes the records' JSON text.
    pub writer: Writer,
}

/// The Fluent Bit module's places. Relative paths resolve against the directories
/// Fluent Bit's `Accessible_Paths` opens.
pub const FLUENT_BIT: Places = Places {
    rule: &["/etc/newterms/rule.toml", "newterms/rule.toml"],
    rules_dir: &["/etc/newterms/rules", "newterms/rules"],
    exceptions: &[
        "/etc/newterms/exceptions.ndjson",
        "newterms/exceptions.ndjson",
    ],
    // `filter_wasm` hands over JSON written by Fluent Bit's own encoder.
    writer: Writer::FluentBit,
};

/// After this many calls that never returned, the filter stops rebuilding itself: each
/// rebuild leaves the abandoned detector's memory behind, and a cause that keeps
/// trapping will not go away on its own.
pub const MAX_RECOVERIES: u32 = 8;

/// The most interpreter stack one call of the Fluent Bit module needs, in bytes, in WAMR's
/// accounting: measured by `host-test`'s stack test, which fails when a call needs more.
/// Fluent Bit's default (8 KiB) holds it with room to spare.
pub const STACK_NEED: u32 = 6656;

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
    /// Outputs beyond the first of one call (the host takes one record back).
    extra_outputs: u64,
    /// Calls with a null or negative-length record.
    bad_calls: u64,
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
             Bit logs the trap just before this). Rebuilding the detector from its configuration and \
             state file; sightings since the last save are forgotten. If the trap was 'wasm operand \
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
        let found = |list: &'static [&'static str]| {
            first_present(files, list).map_err(|e| format!("cannot read {e}"))
        };
        let paths: Vec<&str> = [found(places.rule)?, found(places.rules_dir)?]
            .into_iter()
            .flatten()
            .collect();
        let rules = read_rules(files, &paths).map_err(|e| format!("cannot read {e}"))?;
        let mut source = match rules.as_slice() {
            [] => "the built-in rule".to_owned(),
            [(path, _)] => path.clone(),
            many => format!("a pack of {} rules", many.len()),
        };
        let mut settings = Settings::default();
        if let Some(path) = found(places.exceptions)? {
            let exceptions =
                Exceptions::read(files, &[path]).map_err(|e| format!("cannot read {e}"))?;
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
        let file = settings_of_host
            .state_file
            .clone()
            .map(|path| StateFile::new(path, settings_of_host.state_policy()));
        let mut detector = match &file {
            None => detector,
            Some(f) => {
                let open = |snapshot: Option<&[u8]>| Detector::open(&rules, &settings, snapshot);
                let restored = f
                    .restore(files, open)
                    .map_err(|e| format!("{source} does not load: {e}"))?;
                if !matches!(restored, Restored::Fresh(_)) {
                    log(&restored.describe(&f.path));
                }
                restored.detector()
            }
        };
        detector.assume_writer(places.writer);
        Ok(Filter {
            state: State::Ready(Box::new(detector)),
            file,
            policy: settings_of_host.on_error(),
            extra_outputs: 0,
            bad_calls: 0,
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
            extra_outputs: 0,
            bad_calls: 0,
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
        let (policy, extra) = (self.policy, &mut self.extra_outputs);
        let mut answered = false;
        detector.process(record, &mut |o| {
            if answered {
                *extra += 1;
                return;
            }
            match o {
                Output::Emit(text) => {
                    out.extend_from_slice(text.as_bytes());
                    answered = true;
                }
                Output::Error(e) if policy == ErrorPolicy::Pass => {
                    let marked = with_error_field(record, e.kind().as_str(), e.message());
                    out.extend_from_slice(marked.as_bytes());
                    answered = true;
                }
                Output::Error(_) => {}
            }
        });
        if let Some(f) = &mut self.file {
            if f.tick(1, Some(time)) {
                if let Err(e) = f.save(files, &detector.snapshot(), Some(time)) {
                    log(&format!("cannot write state to {e}"));
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
        doc.insert("bad_calls".into(), self.bad_calls.into());
        doc.insert("recoveries".into(), recoveries.calls.into());
        doc.insert(
            "allocator_restarts".into(),
            recoveries.allocator_restarts.into(),
        );
        serde_json::Value::Object(doc).to_string()
    }
}
