//! The WebAssembly component front end (wit-bindgen): `wit/newterms.wit`.

use std::cell::RefCell;

use crate::{Detector, ErrorKind, Output, RecordError, RuleError, Settings, Stats};

wit_bindgen::generate!({
    path: "wit",
    world: "newterms",
});

use exports::newterms::detector::detect as wit;

struct Component;

export!(Component);

impl wit::Guest for Component {
    type Detector = DetectorResource;
}

/// The exported resource wraps the core detector (methods take `&self`).
pub struct DetectorResource {
    inner: RefCell<Detector>,
}

impl From<ErrorKind> for wit::ErrorKind {
    fn from(k: ErrorKind) -> Self {
        match k {
            ErrorKind::InvalidJson => wit::ErrorKind::InvalidJson,
            ErrorKind::NotObject => wit::ErrorKind::NotObject,
            ErrorKind::WrongType => wit::ErrorKind::WrongType,
            ErrorKind::TooLarge => wit::ErrorKind::TooLarge,
            ErrorKind::BadTime => wit::ErrorKind::BadTime,
        }
    }
}

impl From<RecordError> for wit::RecordError {
    fn from(e: RecordError) -> Self {
        wit::RecordError {
            kind: e.kind().into(),
            message: e.message().to_owned(),
        }
    }
}

impl From<RuleError> for wit::ConfigError {
    fn from(e: RuleError) -> Self {
        wit::ConfigError {
            key: e.key_name().map(str::to_owned),
            message: e.to_string(),
        }
    }
}

impl From<Output<'_>> for wit::Output {
    fn from(o: Output<'_>) -> Self {
        match o {
            Output::Emit(s) => wit::Output::Emit(s.into_owned()),
            Output::Error(e) => wit::Output::Error(e.into()),
        }
    }
}

impl From<Stats> for wit::Stats {
    /// Field by field. A counter of the core's missing from the WIT record fails the
    /// tests (`stats.rs` compares the record with `Stats::fields`, and the host rebuilds
    /// the core's counters with `Stats::from_fields`, which refuses a missing one).
    fn from(s: Stats) -> Self {
        wit::Stats {
            records: s.records,
            prefiltered: s.prefiltered,
            out_of_index: s.out_of_index,
            index_unknown: s.index_unknown,
            unmatched: s.unmatched,
            excepted: s.excepted,
            matched: s.matched,
            no_term: s.no_term,
            suppressed: s.suppressed,
            alerted: s.alerted,
            alerts: s.alerts,
            learned: s.learned,
            late: s.late,
            errors_invalid_json: s.errors_of(ErrorKind::InvalidJson),
            errors_not_object: s.errors_of(ErrorKind::NotObject),
            errors_wrong_type: s.errors_of(ErrorKind::WrongType),
            errors_too_large: s.errors_of(ErrorKind::TooLarge),
            errors_bad_time: s.errors_of(ErrorKind::BadTime),
            evicted_window: s.evicted_window,
            evicted_capacity: s.evicted_capacity,
            terms_held: s.terms_held,
        }
    }
}

/// A detector resource for rules as the host gave them, with its settings text (TOML, as
/// the user wrote it) and a snapshot if any.
fn opened(
    rules: &[(String, String)],
    settings: &str,
    snapshot: Option<&[u8]>,
) -> Result<wit::Detector, wit::ConfigError> {
    let detector = Detector::open(rules, &Settings::from_toml(settings)?, snapshot)?;
    Ok(wit::Detector::new(DetectorResource {
        inner: RefCell::new(detector),
    }))
}

fn pack(rules: Vec<wit::RuleFile>) -> Vec<(String, String)> {
    rules.into_iter().map(|r| (r.source, r.text)).collect()
}

impl wit::GuestDetector for DetectorResource {
    fn open(rule: String, settings: String) -> Result<wit::Detector, wit::ConfigError> {
        opened(&[("rule".to_owned(), rule)], &settings, None)
    }

    fn restore(
        rule: String,
        settings: String,
        snapshot: Vec<u8>,
    ) -> Result<wit::Detector, wit::ConfigError> {
        opened(&[("rule".to_owned(), rule)], &settings, Some(&snapshot))
    }

    fn open_pack(
        rules: Vec<wit::RuleFile>,
        settings: String,
    ) -> Result<wit::Detector, wit::ConfigError> {
        opened(&pack(rules), &settings, None)
    }

    fn restore_pack(
        rules: Vec<wit::RuleFile>,
        settings: String,
        snapshot: Vec<u8>,
    ) -> Result<wit::Detector, wit::ConfigError> {
        opened(&pack(rules), &settings, Some(&snapshot))
    }

    fn rule_stats(&self) -> Vec<(String, wit::Stats)> {
        self.inner
            .borrow()
            .all_rule_stats()
            .into_iter()
            .map(|(id, s)| (id, s.into()))
            .collect()
    }

    fn snapshot(&self) -> Vec<u8> {
        self.inner.borrow().snapshot()
    }

    fn watermark(&self) -> Option<i64> {
        self.inner.borrow().watermark()
    }

    fn process(&self, input: Vec<u8>) -> Vec<wit::Output> {
        let mut out = Vec::new();
        self.inner
            .borrow_mut()
            .process(&input, &mut |o| out.push(o.into()));
        out
    }

    fn process_batch(&self, inputs: Vec<Vec<u8>>) -> Vec<wit::BatchOutput> {
        let mut out = Vec::new();
        let mut detector = self.inner.borrow_mut();
        for (i, input) in inputs.iter().enumerate() {
            let index = i as u32;
            detector.process(input, &mut |o| {
                out.push(wit::BatchOutput {
                    input: index,
                    output: o.into(),
                })
            });
        }
        out
    }

    fn process_lines(&self, ndjson: Vec<u8>) -> Vec<wit::BatchOutput> {
        let mut out = Vec::new();
        self.inner
            .borrow_mut()
            .process_lines(&ndjson, &mut |line, o| {
                out.push(wit::BatchOutput {
                    input: line as u32,
                    output: o.into(),
                })
            });
        out
    }

    fn exception_counts(&self) -> Vec<(String, u64)> {
        self.inner.borrow().exception_counts()
    }

    fn stats(&self) -> wit::Stats {
        self.inner.borrow().stats().into()
    }
}
