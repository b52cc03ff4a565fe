//! What the detector has done so far.

use crate::error::ErrorKind;

/// Counters since the detector was created. Every record is counted in `records` and in
/// exactly one of `prefiltered`, `out_of_index`, `unmatched`, `excepted`, `no_term`, `suppressed`,
/// `alerted` or `errors`; `alerts` counts new terms (a record may carry several), `late` counts matched
/// records older than the newest time by more than the allowed lateness.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Records seen (the elements of a `Records` array or JSON array each count; the
    /// envelope does not).
    pub records: u64,
    /// Records rejected by the prefilter without a full parse (a large pack may have
    /// read the index fields of a record first).
    pub prefiltered: u64,
    /// Records outside the rule's indices (for a pack: outside every rule's that could
    /// have matched them, or, where the index was read before the search, outside every
    /// rule's indices); see [`crate::index`] and docs/contract.md §15.
    pub out_of_index: u64,
    /// Records whose index could not be told (no `data_stream.*`, no Beat, no `index`
    /// setting, no `event.dataset`, not raw CloudTrail); `unknown_index` says whether
    /// rules with index patterns see them.
    pub index_unknown: u64,
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
    /// New terms learned without an alert: in a rule's `learning_period`, or in a run
    /// that only learns (`newterms run --learn`). A record whose new terms were all
    /// learned counts as `suppressed`.
    pub learned: u64,
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

    /// Name and value of every counter, in a fixed order (errors as `errors.<kind>`). The
    /// one list of counters every host reports (the JSON statistics, the npm package's
    /// object, the command's summary). A test checks the WIT record against it, and the
    /// wasmtime host rebuilds the counters with [`Stats::from_fields`], which refuses a
    /// missing or unknown one: a counter added here and missed elsewhere fails the tests.
    pub fn fields(&self) -> Vec<(String, u64)> {
        // Whole, without `..`: a new counter must be listed here to compile.
        let Stats {
            records,
            prefiltered,
            out_of_index,
            index_unknown,
            unmatched,
            excepted,
            matched,
            no_term,
            suppressed,
            alerted,
            alerts,
            learned,
            late,
            errors: _,
            evicted_window,
            evicted_capacity,
            terms_held,
        } = *self;
        let mut v: Vec<(String, u64)> = [
            ("records", records),
            ("prefiltered", prefiltered),
            ("out_of_index", out_of_index),
            ("index_unknown", index_unknown),
            ("unmatched", unmatched),
            ("excepted", excepted),
            ("matched", matched),
            ("no_term", no_term),
            ("suppressed", suppressed),
            ("alerted", alerted),
            ("alerts", alerts),
            ("learned", learned),
            ("late", late),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        for kind in ErrorKind::ALL {
            v.push((format!("errors.{}", kind.as_str()), self.errors_of(kind)));
        }
        v.push(("evicted_window".into(), evicted_window));
        v.push(("evicted_capacity".into(), evicted_capacity));
        v.push(("terms_held".into(), terms_held));
        v
    }

    /// The counters from name and value pairs named as [`Stats::fields`] names them: how a
    /// host rebuilds them from another representation. A name it does not know is an
    /// error, and so is a counter missing from `fields`.
    pub fn from_fields<'a>(
        fields: impl IntoIterator<Item = (&'a str, u64)>,
    ) -> Result<Stats, String> {
        let mut s = Stats::default();
        let mut seen = 0;
        for (name, value) in fields {
            let slot = match name {
                "records" => &mut s.records,
                "prefiltered" => &mut s.prefiltered,
                "out_of_index" => &mut s.out_of_index,
                "index_unknown" => &mut s.index_unknown,
                "unmatched" => &mut s.unmatched,
                "excepted" => &mut s.excepted,
                "matched" => &mut s.matched,
                "no_term" => &mut s.no_term,
                "suppressed" => &mut s.suppressed,
                "alerted" => &mut s.alerted,
                "alerts" => &mut s.alerts,
                "learned" => &mut s.learned,
                "late" => &mut s.late,
                "evicted_window" => &mut s.evicted_window,
                "evicted_capacity" => &mut s.evicted_capacity,
                "terms_held" => &mut s.terms_held,
                other => {
                    let kind = other
                        .strip_prefix("errors.")
                        .and_then(|k| ErrorKind::ALL.into_iter().find(|e| e.as_str() == k))
                        .ok_or_else(|| format!("unknown counter `{other}`"))?;
                    &mut s.errors[kind.index()]
                }
            };
            *slot = value;
            seen += 1;
        }
        let all = Stats::default().fields().len();
        match seen == all {
            true => Ok(s),
            false => Err(format!("{seen} counters given, {all} expected")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_counter_round_trips_by_name() {
        let mut s = Stats::default();
        let names: Vec<String> = s.fields().into_iter().map(|(k, _)| k).collect();
        // Give each counter a distinct value through its name, then read them back.
        let given: Vec<(&str, u64)> = names
            .iter()
            .enumerate()
            .map(|(i, k)| (k.as_str(), i as u64 + 1))
            .collect();
        s = Stats::from_fields(given.iter().copied()).unwrap();
        let back: Vec<(String, u64)> = s.fields();
        assert_eq!(
            back,
            given
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect::<Vec<_>>()
        );
        assert!(Stats::from_fields([("records", 1)]).is_err());
        assert!(Stats::from_fields([("bogus", 1)]).is_err());
    }

    /// The WIT interface's `stats` record names every counter, in the same order.
    #[test]
    fn the_wit_record_has_every_counter() {
        let wit = include_str!("../wit/newterms.wit");
        let body = wit
            .split("record stats {")
            .nth(1)
            .and_then(|rest| rest.split('}').next())
            .expect("the WIT has a stats record");
        let in_wit: Vec<String> = body
            .lines()
            .map(|l| l.trim())
            .filter(|l| !l.is_empty() && !l.starts_with("//"))
            .map(|l| l.split(':').next().unwrap_or_default().trim().to_owned())
            .collect();
        let ours: Vec<String> = Stats::default()
            .fields()
            .into_iter()
            .map(|(k, _)| k.replace(['.', '_'], "-"))
            .collect();
        assert_eq!(in_wit, ours);
    }
}
