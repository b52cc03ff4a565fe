//! What the detector has done so far.

use crate::error::ErrorKind;

/// Counters since the detector was created. Every record is counted in `records` and in
/// exactly one of `prefiltered`, `unmatched`, `excepted`, `no_term`, `suppressed`,
/// `alerted` or `errors`; `alerts` counts new terms (a record may carry several), `late` counts matched
/// records older than the newest time by more than the allowed lateness.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Records seen (the elements of a `Records` array or JSON array each count; the
    /// envelope does not).
    pub records: u64,
    /// Records rejected by the prefilter without a parse.
    pub prefiltered: u64,
    /// Records parsed that do not match the query.
    pub unmatched: u64,
    /// Records that match the query but also an exception item (treated as not matching).
    pub excepted: u64,
    /// Records that match the query (and no exception).
    pub matched: u64,
    /// Matched records without a value in a new-terms field (they leave no state).
    pub no_term: u64,
    /// Matched records whose terms were all seen within the window.
    pub suppressed: u64,
    /// Matched records with at least one new term.
    pub alerted: u64,
    /// New terms (one alert each in `alert` mode).
    pub alerts: u64,
    /// Matched records more than the allowed lateness behind the newest time.
    pub late: u64,
    /// Per-record errors by kind, indexed like [`ErrorKind::ALL`].
    pub errors: [u64; ErrorKind::ALL.len()],
    /// Terms dropped because they were last seen before the window (and lateness).
    pub evicted_window: u64,
    /// Terms dropped to make room (`max_terms`).
    pub evicted_capacity: u64,
    /// Terms held now.
    pub terms_held: u64,
}

impl Stats {
    pub fn errors_of(&self, kind: ErrorKind) -> u64 {
        self.errors[kind.index()]
    }

    pub fn error_total(&self) -> u64 {
        self.errors.iter().sum()
    }

    pub(crate) fn count_error(&mut self, kind: ErrorKind) {
        self.errors[kind.index()] += 1;
    }

    /// Name and value of every counter, in a fixed order (errors as `errors.<kind>`).
    pub fn fields(&self) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = [
            ("records", self.records),
            ("prefiltered", self.prefiltered),
            ("unmatched", self.unmatched),
            ("excepted", self.excepted),
            ("matched", self.matched),
            ("no_term", self.no_term),
            ("suppressed", self.suppressed),
            ("alerted", self.alerted),
            ("alerts", self.alerts),
            ("late", self.late),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        for kind in ErrorKind::ALL {
            v.push((format!("errors.{}", kind.as_str()), self.errors_of(kind)));
        }
        v.push(("evicted_window".into(), self.evicted_window));
        v.push(("evicted_capacity".into(), self.evicted_capacity));
        v.push(("terms_held".into(), self.terms_held));
        v
    }
}
