//! Drives each record through the steps: frame, prefilter, view, query, terms, output.

use std::borrow::Cow;

use serde_json::value::RawValue;

use crate::alert::{self, AlertFacts};
use crate::error::{ErrorKind, RecordError};
use crate::query::{self, Prefilter, Query};
use crate::record::{Field, FieldId, Layout, LayoutBuilder, RecordView, Scalar, TooManyFields};
use crate::rule::{OutputMode, Rule, RuleError};
use crate::snapshot::Snapshot;
use crate::stats::Stats;
use crate::terms::{TermLimits, TermTable};
use crate::time::{self, Nanos};

/// The most term combinations one record may produce (array values multiply).
pub const MAX_COMBINATIONS: usize = 1000;

/// Separates the values of a term tuple in its key: a byte UTF-8 never contains.
const TUPLE_SEPARATOR: u8 = 0xff;

/// One thing the detector emits for its input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output<'a> {
    /// A record to pass on: an alert document, or a record as given.
    Emit(Cow<'a, str>),
    /// A record that could not be processed.
    Error(RecordError),
}

/// The detector: one rule, its compiled query, its term table and its counters.
#[derive(Debug)]
pub struct Detector {
    rule: Rule,
    layout: Layout,
    query: Query,
    prefilter: Prefilter,
    term_fields: Vec<FieldId>,
    time_fields: Vec<FieldId>,
    event_id: FieldId,
    /// The exception items, compiled; and how many records each excepted.
    exceptions: Vec<(String, query::Node)>,
    excepted_by: Vec<u64>,
    terms: TermTable,
    stats: Stats,
    /// The key of the current term, reused between records.
    key: Vec<u8>,
}

fn too_many(_: TooManyFields) -> RuleError {
    RuleError::Query {
        error: query::QueryError::too_many_fields(),
    }
}

impl Detector {
    /// Loads a rule file (empty: the embedded default) with settings overrides.
    pub fn from_config(rule_text: &str, overrides: &str) -> Result<Detector, RuleError> {
        Detector::new(Rule::parse(rule_text, overrides)?)
    }

    /// Loads a rule as [`Detector::from_config`] does, with the term table of a snapshot
    /// (from any build). The snapshot must be of the same rule id and new-terms fields.
    pub fn restore(
        rule_text: &str,
        overrides: &str,
        snapshot: &[u8],
    ) -> Result<Detector, RuleError> {
        let mut d = Detector::from_config(rule_text, overrides)?;
        let snap = Snapshot::decode(snapshot).map_err(|error| RuleError::Snapshot { error })?;
        if snap.rule_id != d.rule.rule_id || snap.fields != d.rule.new_terms_fields {
            let error = crate::snapshot::SnapshotError::OtherRule {
                snapshot: format!("rule {} over [{}]", snap.rule_id, snap.fields.join(", ")),
                rule: format!(
                    "rule {} over [{}]",
                    d.rule.rule_id,
                    d.rule.new_terms_fields.join(", ")
                ),
            };
            return Err(RuleError::Snapshot { error });
        }
        d.terms = TermTable::restore(d.terms.limits(), snap.watermark, snap.terms);
        Ok(d)
    }

    /// The term table as portable bytes (see [`crate::snapshot`]).
    pub fn snapshot(&self) -> Vec<u8> {
        Snapshot {
            rule_id: self.rule.rule_id.clone(),
            fields: self.rule.new_terms_fields.clone(),
            window: self.rule.history_window,
            watermark: self.terms.watermark(),
            terms: self
                .terms
                .entries()
                .into_iter()
                .map(|(k, t)| (k.to_vec(), t))
                .collect(),
        }
        .encode()
    }

    pub fn new(rule: Rule) -> Result<Detector, RuleError> {
        let mut b = LayoutBuilder::new();
        let query =
            Query::compile(&rule.query, &mut b).map_err(|error| RuleError::Query { error })?;
        let term_fields = rule
            .new_terms_fields
            .iter()
            .map(|f| b.field(f))
            .collect::<Result<Vec<_>, _>>()
            .map_err(too_many)?;
        let mut time_fields = Vec::new();
        if let Some(f) = &rule.timestamp_override {
            time_fields.push(b.field(f).map_err(too_many)?);
        }
        let ts = b.field("@timestamp").map_err(too_many)?;
        if !time_fields.contains(&ts) {
            time_fields.push(ts);
        }
        let event_id = b.field("event.id").map_err(too_many)?;
        let exceptions = rule
            .settings
            .exceptions
            .iter()
            .map(|item| {
                item.condition
                    .compile(&mut b)
                    .map(|node| (item.id.clone(), node))
                    .map_err(|error| RuleError::Key {
                        key: format!("exception {}", item.id),
                        message: error.to_string(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let excepted_by = vec![0; exceptions.len()];
        let layout = b.build().map_err(too_many)?;
        let prefilter = query.prefilter(&layout);
        let terms = TermTable::new(TermLimits {
            window: rule.history_window,
            allowed_lateness: rule.settings.allowed_lateness,
            max_terms: rule.settings.max_terms,
            max_bytes: rule.settings.max_table_bytes,
        });
        Ok(Detector {
            rule,
            layout,
            query,
            prefilter,
            term_fields,
            time_fields,
            event_id,
            exceptions,
            excepted_by,
            terms,
            stats: Stats::default(),
            key: Vec::new(),
        })
    }

    /// Changes what is emitted from the next record on (a host that selects the mode per
    /// entry point, as the Fluent Bit module does).
    pub fn set_output(&mut self, mode: OutputMode) {
        self.rule.settings.output = mode;
    }

    pub fn rule(&self) -> &Rule {
        &self.rule
    }

    pub fn prefilter(&self) -> &Prefilter {
        &self.prefilter
    }

    pub fn terms(&self) -> &TermTable {
        &self.terms
    }

    /// How many records each exception item excepted: `(item id, count)`.
    pub fn exception_counts(&self) -> Vec<(String, u64)> {
        self.exceptions
            .iter()
            .zip(&self.excepted_by)
            .map(|((id, _), n)| (id.clone(), *n))
            .collect()
    }

    pub fn stats(&self) -> Stats {
        let c = self.terms.counters();
        Stats {
            evicted_window: c.evicted_window,
            evicted_capacity: c.evicted_capacity,
            terms_held: self.terms.len() as u64,
            ..self.stats
        }
    }

    /// Processes one input: a record, a CloudTrail delivery object (`{"Records": [...]}`),
    /// a JSON array of records, or an EventBridge envelope. Every output goes to `sink`.
    pub fn process(&mut self, input: &[u8], sink: &mut dyn FnMut(Output<'_>)) {
        if first_byte(input) == Some(b'[') {
            self.process_array(input, sink);
        } else {
            self.process_record(input, true, None, sink);
        }
    }

    /// Processes NDJSON: each line of `lines` is one input (a trailing `\r` is dropped, blank
    /// lines are skipped). `sink` gets each output with the 0-based number of its line.
    /// One buffer for many records: the cheapest way across a boundary.
    pub fn process_lines(&mut self, lines: &[u8], sink: &mut dyn FnMut(usize, Output<'_>)) {
        let mut start = 0;
        let mut number = 0;
        while start < lines.len() {
            let end = memchr::memchr(b'\n', &lines[start..]).map_or(lines.len(), |i| start + i);
            let mut line = &lines[start..end];
            if let [head @ .., b'\r'] = line {
                line = head;
            }
            if !line.trim_ascii().is_empty() {
                self.process(line, &mut |o| sink(number, o));
            }
            start = end + 1;
            number += 1;
        }
    }

    /// Processes one input and collects its outputs (convenience for tests and hosts).
    pub fn process_collect(&mut self, input: &[u8]) -> Vec<Output<'static>> {
        let mut out = Vec::new();
        self.process(input, &mut |o| {
            out.push(match o {
                Output::Emit(s) => Output::Emit(Cow::Owned(s.into_owned())),
                Output::Error(e) => Output::Error(e),
            })
        });
        out
    }

    fn process_array(&mut self, input: &[u8], sink: &mut dyn FnMut(Output<'_>)) {
        match serde_json::from_slice::<Vec<&RawValue>>(input) {
            Ok(items) => {
                for (i, raw) in items.iter().enumerate() {
                    let place = format!("[{i}]");
                    self.process_record(raw.get().as_bytes(), false, Some(&place), sink);
                }
            }
            Err(e) => self.fail(
                RecordError::new(ErrorKind::InvalidJson, e.to_string()),
                None,
                sink,
            ),
        }
    }

    fn fail(&mut self, err: RecordError, place: Option<&str>, sink: &mut dyn FnMut(Output<'_>)) {
        self.stats.records += 1;
        self.stats.count_error(err.kind());
        sink(Output::Error(match place {
            Some(p) => err.within(p),
            None => err,
        }));
    }

    /// Passes a record on unchanged (annotate mode), as text.
    fn pass(&mut self, text: &[u8], place: Option<&str>, sink: &mut dyn FnMut(Output<'_>)) {
        match std::str::from_utf8(text) {
            Ok(s) => sink(Output::Emit(Cow::Borrowed(s))),
            Err(e) => {
                // Only a record the prefilter passed over unparsed can get here; it stays
                // counted as such, and the host learns why it did not get the text.
                let err = RecordError::new(ErrorKind::InvalidJson, format!("invalid UTF-8: {e}"));
                sink(Output::Error(match place {
                    Some(p) => err.within(p),
                    None => err,
                }));
            }
        }
    }

    fn process_record(
        &mut self,
        text: &[u8],
        envelopes: bool,
        place: Option<&str>,
        sink: &mut dyn FnMut(Output<'_>),
    ) {
        let limit = self.rule.settings.max_record_bytes;
        let annotate = self.rule.settings.output == OutputMode::Annotate;
        // A CloudTrail delivery object is always opened, so its records are counted and
        // (in annotate mode) passed one by one.
        let delivery = envelopes && starts_with_records_key(text);
        if text.len() > limit && !delivery {
            let err = RecordError::new(
                ErrorKind::TooLarge,
                format!(
                    "{} bytes, over the limit of {limit} (max_record_bytes)",
                    text.len()
                ),
            );
            return self.fail(err, place, sink);
        }
        // Only an object can match: anything else is parsed, to report what it is.
        let object = first_byte(text) == Some(b'{');
        if object && !delivery && !self.prefilter.may_match(text) {
            // In annotate mode an EventBridge envelope must still be opened.
            let eventbridge =
                annotate && envelopes && memchr::memmem::find(text, b"\"detail-type\"").is_some();
            if !eventbridge {
                self.stats.records += 1;
                self.stats.prefiltered += 1;
                if annotate {
                    self.pass(text, place, sink);
                }
                return;
            }
        }
        let mut view = match RecordView::parse(text, &self.layout, envelopes) {
            Ok(v) => v,
            Err(e) => return self.fail(e, place, sink),
        };
        if envelopes {
            if let Some(records) = view.take_records() {
                for (i, raw) in records.iter().enumerate() {
                    let p = format!("Records[{i}]");
                    self.process_record(raw.get().as_bytes(), false, Some(&p), sink);
                }
                return;
            }
            if let Some(detail) = view.eventbridge_detail(&self.layout) {
                return self.process_record(detail.get().as_bytes(), false, Some("detail"), sink);
            }
        }
        if text.len() > limit {
            let err = RecordError::new(
                ErrorKind::TooLarge,
                format!(
                    "{} bytes, over the limit of {limit} (max_record_bytes)",
                    text.len()
                ),
            );
            return self.fail(err, place, sink);
        }
        match self.decide(text, &view, sink) {
            Ok(()) => {}
            Err(e) => self.fail(e, place, sink),
        }
    }

    /// Query, terms, time, table, output. Any error returns before the table is touched.
    fn decide(
        &mut self,
        text: &[u8],
        view: &RecordView<'_>,
        sink: &mut dyn FnMut(Output<'_>),
    ) -> Result<(), RecordError> {
        let annotate = self.rule.settings.output == OutputMode::Annotate;
        if !self.query.matches(view, &self.layout)? {
            self.stats.records += 1;
            self.stats.unmatched += 1;
            if annotate {
                self.pass(text, None, sink);
            }
            return Ok(());
        }
        // An exception item that holds takes the record out of the rule altogether.
        let mut excepted = None;
        for (i, (_, node)) in self.exceptions.iter().enumerate() {
            if node.eval(view, &self.layout)? {
                excepted = Some(i);
                break;
            }
        }
        if let Some(i) = excepted {
            self.stats.records += 1;
            self.stats.excepted += 1;
            self.excepted_by[i] += 1;
            if annotate {
                self.pass(text, None, sink);
            }
            return Ok(());
        }
        let mut columns: [&[Scalar<'_>]; 3] = [&[]; 3];
        let mut combinations = 1usize;
        for (i, f) in self.term_fields.iter().enumerate() {
            columns[i] = match view.get(&self.layout, *f) {
                Field::Absent => &[],
                Field::Values(v) => v,
                Field::Object => return Err(query::wrong_type(&self.layout, *f, true)),
                Field::Mismatch => return Err(query::wrong_type(&self.layout, *f, false)),
            };
            combinations =
                combinations.saturating_mul(columns[i].iter().filter(|s| !is_empty(s)).count());
        }
        let fields = self.term_fields.len();
        if combinations == 0 {
            self.stats.records += 1;
            self.stats.matched += 1;
            self.stats.no_term += 1;
            if annotate {
                self.pass(text, None, sink);
            }
            return Ok(());
        }
        if combinations > MAX_COMBINATIONS {
            return Err(RecordError::new(
                ErrorKind::TooLarge,
                format!("its new-terms fields give {combinations} combinations, over the limit of {MAX_COMBINATIONS}"),
            ));
        }
        let ts = self.record_time(view)?;
        // A term the table could never hold is refused, not stored and not alerted on
        // forever after. The longest combination is the sum of each field's longest value.
        let longest: usize = columns[..fields]
            .iter()
            .map(|c| c.iter().map(|s| s.text().len()).max().unwrap_or(0))
            .sum::<usize>()
            + fields.saturating_sub(1);
        if !self.terms.fits(longest) {
            return Err(RecordError::new(
                ErrorKind::TooLarge,
                format!(
                    "a term of {longest} bytes cannot be held within max_table_bytes = {}",
                    self.rule.settings.max_table_bytes
                ),
            ));
        }

        // From here on the record is accepted: count it and update the table.
        self.stats.records += 1;
        self.stats.matched += 1;
        if self.terms.is_late(ts) {
            self.stats.late += 1;
        }
        let mut odometer = [0usize; 3];
        let mut emitted = false;
        loop {
            let mut values: [Cow<'_, str>; 3] =
                [Cow::Borrowed(""), Cow::Borrowed(""), Cow::Borrowed("")];
            let mut complete = true;
            for i in 0..fields {
                match columns[i].get(odometer[i]) {
                    Some(s) if !is_empty(s) => values[i] = s.text(),
                    _ => complete = false,
                }
            }
            if complete {
                self.key.clear();
                for (i, v) in values[..fields].iter().enumerate() {
                    if i > 0 {
                        self.key.push(TUPLE_SEPARATOR);
                    }
                    self.key.extend_from_slice(v.as_bytes());
                }
                if self.terms.observe(&self.key, ts).new {
                    self.stats.alerts += 1;
                    let terms: [&str; 3] = [&values[0], &values[1], &values[2]];
                    let event_id = first_text(view, &self.layout, self.event_id);
                    let facts = AlertFacts {
                        rule: &self.rule,
                        terms: &terms[..fields],
                        time: ts,
                        event_id: event_id.as_deref(),
                    };
                    let output = self.rule.settings.output;
                    let render =
                        output == OutputMode::Alert || (output == OutputMode::Annotate && !emitted);
                    if render {
                        // The table already holds the term: a record the alert cannot be
                        // built from (a lone surrogate escape in a field the rule does not
                        // read) is reported, and the sighting stands.
                        match alert::render(text, &facts) {
                            Ok(doc) => sink(Output::Emit(Cow::Owned(doc))),
                            Err(e) => {
                                self.stats.count_error(e.kind());
                                sink(Output::Error(e));
                            }
                        }
                    } else if output == OutputMode::Passthrough && !emitted {
                        self.pass(text, None, sink);
                    }
                    emitted = true;
                }
            }
            // Advance the odometer over the value columns.
            let mut i = 0;
            loop {
                if i == fields {
                    if emitted {
                        self.stats.alerted += 1;
                    } else {
                        self.stats.suppressed += 1;
                        if annotate {
                            self.pass(text, None, sink);
                        }
                    }
                    return Ok(());
                }
                odometer[i] += 1;
                if odometer[i] < columns[i].len() {
                    break;
                }
                odometer[i] = 0;
                i += 1;
            }
        }
    }

    /// The record's time: the rule's `timestamp_override` field when present, else
    /// `@timestamp` (for raw CloudTrail, `eventTime`).
    fn record_time(&self, view: &RecordView<'_>) -> Result<Nanos, RecordError> {
        for &f in &self.time_fields {
            let name = self.layout.field_name(f);
            let bad = |what: String| {
                RecordError::new(ErrorKind::BadTime, format!("field `{name}`: {what}"))
            };
            match view.get(&self.layout, f) {
                Field::Absent => continue,
                Field::Values([Scalar::Str(s), ..]) => {
                    return time::parse_timestamp(s)
                        .ok_or_else(|| bad(format!("`{s}` is not a timestamp")))
                }
                Field::Values([Scalar::Num(n), ..]) => {
                    return n
                        .as_f64()
                        .and_then(time::from_epoch_millis)
                        .ok_or_else(|| bad(format!("{n} is not a time in epoch milliseconds")))
                }
                Field::Values(_) => return Err(bad("not a timestamp".into())),
                Field::Object | Field::Mismatch => return Err(bad("not a timestamp".into())),
            }
        }
        let names: Vec<&str> = self
            .time_fields
            .iter()
            .map(|f| self.layout.field_name(*f))
            .collect();
        Err(RecordError::new(
            ErrorKind::BadTime,
            format!("no time: none of {} is present", names.join(", ")),
        ))
    }
}

fn first_byte(text: &[u8]) -> Option<u8> {
    text.iter().copied().find(|b| !b.is_ascii_whitespace())
}

fn is_empty(s: &Scalar<'_>) -> bool {
    matches!(s, Scalar::Str(v) if v.is_empty())
}

fn first_text(view: &RecordView<'_>, layout: &Layout, f: FieldId) -> Option<String> {
    match view.get(layout, f) {
        Field::Values([first, ..]) => Some(first.text().into_owned()),
        _ => None,
    }
}

/// Whether the text is an object whose first key is `Records` (a CloudTrail delivery
/// file), judged from its first bytes.
fn starts_with_records_key(text: &[u8]) -> bool {
    let mut rest = text;
    let skip_ws = |r: &mut &[u8]| {
        while let [b, tail @ ..] = *r {
            if b.is_ascii_whitespace() {
                *r = tail;
            } else {
                break;
            }
        }
    };
    skip_ws(&mut rest);
    let Some(after) = rest.strip_prefix(b"{") else {
        return false;
    };
    rest = after;
    skip_ws(&mut rest);
    rest.starts_with(b"\"Records\"")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::{format_timestamp, NANOS_PER_DAY, NANOS_PER_MIN};

    /// A deterministic stream: `n` GetCallerIdentity records of `identities` IAM users over
    /// about 60 days (so windows expire), a few minutes late as a rule, now and then hours
    /// late (past the allowed lateness).
    fn stream(n: usize, identities: u64, very_late: bool) -> Vec<Vec<u8>> {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let start = 1_767_225_600 * crate::time::NANOS_PER_SEC; // 2026-01-01
        let step = 60 * NANOS_PER_DAY / n as i64;
        (0..n)
            .map(|i| {
                let r = next();
                let mut t = start + i as i64 * step;
                match r % 100 {
                    0..=4 => t -= (r >> 8) as i64 % (30 * NANOS_PER_MIN),
                    5 if very_late => t -= (r >> 8) as i64 % (3 * 60 * NANOS_PER_MIN),
                    _ => {}
                }
                // A drifting population: each identity is active for a while, then gone.
                let who = (i as u64 / 500) * 20 + (r >> 20) % identities;
                format!(
                    r#"{{"eventTime":"{}","eventID":"e{i}","eventSource":"sts.amazonaws.com","eventName":"GetCallerIdentity","userIdentity":{{"type":"IAMUser","arn":"arn:aws:iam::1:user/u{who}"}}}}"#,
                    format_timestamp(t)
                )
                .into_bytes()
            })
            .collect()
    }

    fn alerts(d: &mut Detector, records: &[Vec<u8>]) -> Vec<String> {
        let mut out = Vec::new();
        for r in records {
            d.process(r, &mut |o| match o {
                Output::Emit(s) => out.push(s.into_owned()),
                Output::Error(e) => panic!("unexpected error {e}"),
            });
        }
        out
    }

    #[test]
    fn a_run_split_by_a_snapshot_equals_the_uninterrupted_run() {
        let records = stream(100_000, 400, true);
        let settings = "max_terms = 1050";
        let mut whole = Detector::from_config("", settings).unwrap();
        let expected = alerts(&mut whole, &records);
        let s = whole.stats();
        assert!(
            s.alerts > 3_000 && s.evicted_window > 0 && s.evicted_capacity > 0 && s.late > 0,
            "{s:?}"
        );
        for split in [0, 1, 12_345, 50_000, 99_999, 100_000] {
            let mut first = Detector::from_config("", settings).unwrap();
            let mut got = alerts(&mut first, &records[..split]);
            let bytes = first.snapshot();
            let mut second = Detector::restore("", settings, &bytes).unwrap();
            assert_eq!(
                second.snapshot(),
                bytes,
                "restore then snapshot gives the same bytes"
            );
            got.extend(alerts(&mut second, &records[split..]));
            assert_eq!(got.len(), expected.len(), "split at {split}");
            assert!(got == expected, "split at {split}: the alerts differ");
        }
    }

    #[test]
    fn replaying_records_from_before_the_snapshot_gives_no_alert() {
        let records = stream(20_000, 500, false);
        let mut d = Detector::from_config("", "").unwrap();
        alerts(&mut d, &records);
        let mut restored = Detector::restore("", "", &d.snapshot()).unwrap();
        // The last 1,000 records: three days, well within the window.
        assert!(alerts(&mut restored, &records[19_000..]).is_empty());
        assert_eq!(restored.stats().suppressed, 1_000);
    }

    #[test]
    fn restore_refuses_damaged_or_foreign_snapshots() {
        let mut d = Detector::from_config("", "").unwrap();
        alerts(&mut d, &stream(100, 10, false));
        let bytes = d.snapshot();
        let err = |b: &[u8]| Detector::restore("", "", b).unwrap_err().to_string();
        assert!(err(&bytes[..bytes.len() - 1]).contains("snapshot"));
        assert!(err(b"").contains("not a newterms snapshot"));
        let other =
            crate::DEFAULT_RULE.replace("30fbf4db-c502-4e68-a239-2e99af0f70da", "other-rule");
        let e = Detector::restore(&other, "", &bytes).unwrap_err();
        assert_eq!(e.key_name(), Some("snapshot"));
        assert!(e.to_string().contains("other-rule"));
    }
}

#[cfg(test)]
mod allocation {
    //! The hot path allocates nothing for a record the query rejects, whether the
    //! prefilter rejects it or the parse does.

    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    use super::*;

    struct Counting;

    thread_local! {
        static COUNT: Cell<Option<u64>> = const { Cell::new(None) };
    }

    // SAFETY: forwards to the system allocator; only counts, on the calling thread.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let _ = COUNT.try_with(|c| c.set(c.get().map(|n| n + 1)));
            unsafe { System.alloc(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    #[global_allocator]
    static ALLOCATOR: Counting = Counting;

    fn allocations(f: impl FnOnce()) -> u64 {
        COUNT.with(|c| c.set(Some(0)));
        f();
        COUNT.with(|c| c.replace(None)).unwrap_or(0)
    }

    #[test]
    fn rejected_records_allocate_nothing() {
        let mut d = Detector::from_config("", "").unwrap();
        let prefiltered = br#"{"eventTime":"2026-01-01T00:00:00Z","eventSource":"ec2.amazonaws.com","eventName":"DescribeInstances","userIdentity":{"type":"IAMUser","arn":"arn:aws:iam::1:user/a"},"requestParameters":{"filterSet":{"items":[{"name":"x","valueSet":{"items":[{"value":"y"}]}}]}}}"#;
        let parsed_unmatched = br#"{"eventTime":"2026-01-01T00:00:00Z","eventSource":"sts.amazonaws.com","eventName":"GetCallerIdentity","userIdentity":{"type":"AssumedRole","arn":"arn:aws:sts::1:assumed-role/r/s"},"requestParameters":null}"#;
        let suppressed = br#"{"eventTime":"2026-01-01T00:00:01Z","eventSource":"sts.amazonaws.com","eventName":"GetCallerIdentity","userIdentity":{"type":"IAMUser","arn":"arn:aws:iam::1:user/a"}}"#;
        // The first sighting allocates its term and its alert (and shows the counter works).
        assert!(allocations(|| d.process(suppressed, &mut |_| {})) > 0);
        for (name, record) in [
            ("prefiltered", &prefiltered[..]),
            ("parsed, unmatched", &parsed_unmatched[..]),
            ("matched, seen before", &suppressed[..]),
        ] {
            let mut outputs = 0;
            let n = allocations(|| d.process(record, &mut |_| outputs += 1));
            assert_eq!(outputs, 0, "{name}");
            assert_eq!(n, 0, "{name}: {n} allocations");
        }
        let s = d.stats();
        assert_eq!((s.prefiltered, s.unmatched, s.suppressed), (1, 1, 1));
    }
}
