//! One rule's decision over a parsed record: its query and filters, its exceptions, its
//! term table, its alerts and its counters. The [`crate::Detector`] offers each record to
//! the detections of its rules.

use std::borrow::Cow;

use crate::alert::{self, AlertFacts};
use crate::error::{ErrorKind, RecordError};
use crate::query::{self, Prefilter, Query};
use crate::record::{Field, FieldId, Layout, LayoutBuilder, RecordView, Scalar};
use crate::rule::{OutputMode, Rule, RuleError, MAX_TERM_FIELDS};
use crate::snapshot::{Snapshot, SnapshotError};
use crate::stats::Stats;
use crate::terms::{TermLimits, TermTable};
use crate::time::{self, Nanos};

/// The most term combinations one record may produce (array values multiply).
pub const MAX_COMBINATIONS: usize = 1000;

/// Separates the values of a term tuple in its key: a byte UTF-8 never contains.
const TUPLE_SEPARATOR: u8 = 0xff;

/// What one rule made of one record it was offered (in order of precedence, lowest
/// first, when a pack sums its rules up for a record).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Outcome {
    Unmatched,
    Excepted,
    NoTerm,
    Suppressed,
    Alerted,
}

/// What one rule decided for a record it accepted: its outcome, and whether the record was
/// late (more than the allowed lateness behind the table's newest time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Decision {
    pub(crate) outcome: Outcome,
    pub(crate) late: bool,
}

impl Decision {
    fn only(outcome: Outcome) -> Decision {
        Decision {
            outcome,
            late: false,
        }
    }
}

/// A record offered to a rule: its text, its view and what reading it needs.
#[derive(Clone, Copy)]
pub(crate) struct Offered<'a, 'v> {
    pub(crate) text: &'a [u8],
    pub(crate) view: &'a RecordView<'v>,
    pub(crate) layout: &'a Layout,
    pub(crate) event_id: FieldId,
}

/// One term combination of a record, and what its alert is built from.
struct Sighting<'a, 'v> {
    terms: &'a [&'a str],
    time: Nanos,
    record: Offered<'a, 'v>,
}

/// One rule, compiled against a (possibly shared) record layout.
#[derive(Debug)]
pub(crate) struct Detection {
    pub(crate) rule: Rule,
    query: Query,
    /// Set once the layout is built.
    pub(crate) prefilter: Option<Prefilter>,
    term_fields: Vec<FieldId>,
    time_fields: Vec<FieldId>,
    /// The exception items, compiled; and how many records each excepted.
    exceptions: Vec<(String, query::Program)>,
    pub(crate) excepted_by: Vec<u64>,
    pub(crate) terms: TermTable,
    /// What this rule decided: every counter but `records` and `prefiltered`, which the
    /// detector derives (see [`crate::Detector::rule_stats`]).
    pub(crate) stats: Stats,
    /// Records offered to this rule after its prefilter (decided or in error).
    pub(crate) offered: u64,
    /// The time of the first record this rule accepted (its learning period starts
    /// there); kept in snapshots.
    pub(crate) first_accepted: Option<Nanos>,
    /// The changes to the table not yet taken, as journal entries ([`crate::journal`]),
    /// when the host keeps them; this rule's position in the detector names it there.
    pub(crate) changes: Option<Vec<u8>>,
    pub(crate) position: u32,
    /// New sightings a journal replay applied, as key then time: seen again, each is new
    /// once more, since its output may have been lost with the host ([`crate::journal`]).
    pending: hashbrown::HashSet<Vec<u8>>,
    /// The key of the current term, reused between records.
    key: Vec<u8>,
    /// The rule's alert fields, rendered at the rule's first alert: most rules of a
    /// large pack never alert, and rendering each one's at load (its `threat` above all)
    /// was a twelfth of the time to load Elastic's set.
    template: std::cell::OnceCell<alert::Template>,
}

impl Detection {
    /// Compiles `rule`, registering every field it reads with `b`.
    pub(crate) fn compile(rule: Rule, b: &mut LayoutBuilder) -> Result<Detection, RuleError> {
        let filters = rule
            .filters
            .iter()
            .map(|c| c.compile(b))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| RuleError::key("rule.filters", error.to_string()))?;
        let query = Query::compile_parsed(&rule.parsed, b)
            .map_err(|error| RuleError::Query { error, at: None })?
            .and(filters);
        let term_fields = rule.new_terms_fields.iter().map(|f| b.field(f)).collect();
        let mut time_fields = Vec::new();
        if let Some(f) = &rule.timestamp_override {
            time_fields.push(b.field(f));
        }
        let ts = b.field("@timestamp");
        if !time_fields.contains(&ts) {
            time_fields.push(ts);
        }
        let exceptions = rule
            .exceptions
            .iter()
            .map(|item| {
                item.condition
                    .compile(b)
                    .map(|node| (item.id.clone(), query::Program::new(&node)))
                    .map_err(|error| RuleError::Key {
                        key: format!("exception {}", item.id),
                        message: error.to_string(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let excepted_by = vec![0; exceptions.len()];
        let terms = TermTable::new(TermLimits {
            window: rule.history_window,
            allowed_lateness: rule.settings.allowed_lateness(),
            max_terms: rule.settings.max_terms(),
            max_bytes: rule.settings.max_table_bytes(),
        });
        Ok(Detection {
            query,
            prefilter: None,
            term_fields,
            time_fields,
            exceptions,
            excepted_by,
            terms,
            stats: Stats::default(),
            offered: 0,
            first_accepted: None,
            changes: None,
            position: 0,
            pending: hashbrown::HashSet::new(),
            key: Vec::new(),
            template: std::cell::OnceCell::new(),
            rule,
        })
    }

    /// The prefilter, once the layout is known.
    pub(crate) fn finish(&mut self, layout: &Layout) {
        self.prefilter = Some(self.query.prefilter(layout));
    }

    pub(crate) fn may_match(&self, text: &[u8]) -> bool {
        self.prefilter.as_ref().is_none_or(|p| p.may_match(text))
    }

    /// [`Detection::may_match`] over the prefilter's groups of keys alone.
    pub(crate) fn keys_may_match(&self, text: &[u8]) -> bool {
        self.prefilter
            .as_ref()
            .is_none_or(|p| p.keys_may_match(text))
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        Snapshot {
            rule_id: self.rule.rule_id.clone(),
            fields: self.rule.new_terms_fields.clone(),
            window: self.rule.history_window,
            watermark: self.terms.watermark(),
            first_accepted: self.first_accepted,
            terms: self
                .terms
                .entries()
                .into_iter()
                .map(|(k, t)| (k.to_vec(), t))
                .collect(),
        }
    }

    /// Takes the term table of `snap`, which must be of this rule and its fields.
    pub(crate) fn restore(&mut self, snap: Snapshot) -> Result<(), SnapshotError> {
        if snap.rule_id != self.rule.rule_id || snap.fields != self.rule.new_terms_fields {
            return Err(SnapshotError::OtherRule {
                snapshot: format!("rule {} over [{}]", snap.rule_id, snap.fields.join(", ")),
                rule: format!(
                    "rule {} over [{}]",
                    self.rule.rule_id,
                    self.rule.new_terms_fields.join(", ")
                ),
            });
        }
        self.terms = TermTable::restore(self.terms.limits(), snap.watermark, snap.terms);
        self.first_accepted = snap.first_accepted;
        Ok(())
    }

    /// Query, exceptions, terms, time, table, alerts. Any error returns before the table
    /// is touched. Emits alert documents only (in `annotate` mode the first new
    /// combination's); passing records on is the detector's part.
    pub(crate) fn decide(
        &mut self,
        text: &[u8],
        view: &RecordView<'_>,
        layout: &Layout,
        event_id: FieldId,
        output: OutputMode,
        sink: &mut dyn FnMut(crate::Output<'_>),
    ) -> Result<Decision, RecordError> {
        if !self.query.matches(view, layout)? {
            self.stats.unmatched += 1;
            return Ok(Decision::only(Outcome::Unmatched));
        }
        // An exception item that holds takes the record out of the rule altogether.
        let mut excepted = None;
        for (i, (_, program)) in self.exceptions.iter().enumerate() {
            if program.eval(view, layout)? {
                excepted = Some(i);
                break;
            }
        }
        if let Some(i) = excepted {
            self.stats.excepted += 1;
            self.excepted_by[i] += 1;
            return Ok(Decision::only(Outcome::Excepted));
        }
        let mut columns: [&[Scalar<'_>]; MAX_TERM_FIELDS] = [&[]; MAX_TERM_FIELDS];
        let mut combinations = 1usize;
        for (i, f) in self.term_fields.iter().enumerate() {
            columns[i] = match view.get(layout, *f) {
                Field::Absent => &[],
                Field::Values(v) => v,
                Field::Object => return Err(query::wrong_type(layout, *f, true)),
                Field::Mismatch => return Err(query::wrong_type(layout, *f, false)),
            };
            combinations =
                combinations.saturating_mul(columns[i].iter().filter(|s| !is_empty(s)).count());
        }
        let fields = self.term_fields.len();
        if combinations == 0 {
            self.stats.matched += 1;
            self.stats.no_term += 1;
            return Ok(Decision::only(Outcome::NoTerm));
        }
        if combinations > MAX_COMBINATIONS {
            return Err(RecordError::new(
                ErrorKind::TooLarge,
                format!("its new-terms fields give {combinations} combinations, over the limit of {MAX_COMBINATIONS}"),
            ));
        }
        let ts = self.record_time(view, layout)?;
        // The longest combination is the sum of each field's longest value.
        let longest: usize = columns[..fields]
            .iter()
            .map(|c| c.iter().map(|s| s.text().len()).max().unwrap_or(0))
            .sum::<usize>()
            + fields.saturating_sub(1);
        self.must_fit(longest)?;

        // In `matches` mode the record's text goes out whole: it must be UTF-8 throughout,
        // not only where the rule reads.
        let matches_text = match output {
            OutputMode::Matches => Some(std::str::from_utf8(text).map_err(|e| {
                RecordError::new(ErrorKind::InvalidJson, format!("invalid UTF-8: {e}"))
            })?),
            _ => None,
        };

        // From here on the record is accepted: count it and update the table (or, in
        // `matches` mode, which keeps no table, send each term on).
        self.stats.matched += 1;
        self.first_accepted.get_or_insert(ts);
        let late = matches_text.is_none() && self.terms.is_late(ts);
        if late {
            self.stats.late += 1;
        }
        let mut odometer = [0usize; MAX_TERM_FIELDS];
        let mut alerted = false;
        // In `matches` mode, the keys sent for this record (a value repeated in an array
        // gives the same term twice; it is sent once).
        let mut sent: Vec<Vec<u8>> = Vec::new();
        loop {
            let mut values: [Cow<'_, str>; MAX_TERM_FIELDS] =
                std::array::from_fn(|_| Cow::Borrowed(""));
            let mut complete = true;
            for i in 0..fields {
                match columns[i].get(odometer[i]) {
                    Some(s) if !is_empty(s) => values[i] = s.text(),
                    _ => complete = false,
                }
            }
            if complete {
                let terms: [&str; MAX_TERM_FIELDS] = std::array::from_fn(|i| &*values[i]);
                let terms = &terms[..fields];
                if let Some(record) = matches_text {
                    self.set_key(terms);
                    if !sent.contains(&self.key) {
                        sent.push(self.key.clone());
                        self.stats.alerts += 1;
                        alerted = true;
                        let doc = crate::matches::render(&self.rule.rule_id, terms, record);
                        sink(crate::Output::Emit(Cow::Owned(doc)));
                    }
                } else {
                    let render =
                        output == OutputMode::Alert || (output == OutputMode::Annotate && !alerted);
                    let record = Offered {
                        text,
                        view,
                        layout,
                        event_id,
                    };
                    let sighting = Sighting {
                        terms,
                        time: ts,
                        record,
                    };
                    alerted |= self.sight(&sighting, render, sink);
                }
            }
            // Advance the odometer over the value columns.
            let mut i = 0;
            loop {
                if i == fields {
                    return Ok(self.conclude(alerted, late));
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

    /// Decides one match document's (rule, term), read back by a detector with `input =
    /// "matches"`: the edge has run the query and exceptions; the time, the table and the
    /// alert are as [`Detection::decide`]'s, so the alert is the one a single detector
    /// over the original records would have written.
    pub(crate) fn decide_match(
        &mut self,
        terms: &[&str],
        record: &Offered<'_, '_>,
        output: OutputMode,
        sink: &mut dyn FnMut(crate::Output<'_>),
    ) -> Result<Decision, RecordError> {
        let Offered { view, layout, .. } = *record;
        if terms.len() != self.term_fields.len() {
            return Err(RecordError::new(
                ErrorKind::WrongType,
                format!(
                    "{} term values for rule {}, which has {} new-terms fields",
                    terms.len(),
                    self.rule.rule_id,
                    self.term_fields.len()
                ),
            ));
        }
        let ts = self.record_time(view, layout)?;
        self.must_fit(terms.iter().map(|t| t.len()).sum::<usize>() + terms.len() - 1)?;
        self.stats.matched += 1;
        self.first_accepted.get_or_insert(ts);
        let late = self.terms.is_late(ts);
        if late {
            self.stats.late += 1;
        }
        let sighting = Sighting {
            terms,
            time: ts,
            record: *record,
        };
        let render = matches!(output, OutputMode::Alert | OutputMode::Annotate);
        let alerted = self.sight(&sighting, render, sink);
        Ok(self.conclude(alerted, late))
    }

    /// Refuses a term the table could never hold (it would be stored nowhere and alerted
    /// on forever after).
    fn must_fit(&self, key_len: usize) -> Result<(), RecordError> {
        if self.terms.fits(key_len) {
            return Ok(());
        }
        Err(RecordError::new(
            ErrorKind::TooLarge,
            format!(
                "a term of {key_len} bytes cannot be held within max_table_bytes = {}",
                self.rule.settings.max_table_bytes()
            ),
        ))
    }

    /// Counts a decided record.
    fn conclude(&mut self, alerted: bool, late: bool) -> Decision {
        let outcome = if alerted {
            self.stats.alerted += 1;
            Outcome::Alerted
        } else {
            self.stats.suppressed += 1;
            Outcome::Suppressed
        };
        Decision { outcome, late }
    }

    /// The table key of a term combination, into `self.key`.
    fn set_key(&mut self, terms: &[&str]) {
        self.key.clear();
        for (i, v) in terms.iter().enumerate() {
            if i > 0 {
                self.key.push(TUPLE_SEPARATOR);
            }
            self.key.extend_from_slice(v.as_bytes());
        }
    }

    /// Records one term combination in the table; whether it was new. A new one is counted
    /// and, when `render`, its alert goes to `sink`.
    fn sight(
        &mut self,
        s: &Sighting<'_, '_>,
        render: bool,
        sink: &mut dyn FnMut(crate::Output<'_>),
    ) -> bool {
        self.set_key(s.terms);
        let seen = self.terms.observe(&self.key, s.time);
        if let (true, Some(changes)) = (seen.changed, &mut self.changes) {
            let new = seen.new.then(|| fingerprint(&s.record));
            crate::journal::push_entry(changes, self.position, new, s.time, &self.key);
        }
        if !seen.new && !self.again(s.time, &s.record) {
            return false;
        }
        if self.learning(s.time) {
            self.stats.learned += 1;
            return false;
        }
        self.stats.alerts += 1;
        if render {
            let r = &s.record;
            let event_id = first_text(r.view, r.layout, r.event_id);
            let facts = AlertFacts {
                rule: &self.rule,
                terms: s.terms,
                time: s.time,
                event_id: event_id.as_deref(),
                cloudtrail: r.view.is_cloudtrail(),
            };
            // The table already holds the term: a record the alert cannot be built from
            // (not UTF-8 after an unread field) is reported, and the sighting stands.
            let template = self
                .template
                .get_or_init(|| alert::Template::new(&self.rule));
            match alert::render(r.text, &facts, template) {
                Ok(doc) => sink(crate::Output::Emit(Cow::Owned(doc))),
                Err(e) => {
                    self.stats.count_error(e.kind());
                    sink(crate::Output::Error(e));
                }
            }
        }
        true
    }

    /// Applies a journal entry: the table as it was after the sighting that wrote it. A
    /// new sighting is pending until it is seen again or [`Detection::settle`] drops it.
    pub(crate) fn replay(&mut self, new: Option<u64>, time: Nanos, key: &[u8]) {
        self.first_accepted.get_or_insert(time);
        self.terms.observe(key, time);
        if let Some(record) = new {
            let mut k = key.to_vec();
            k.extend_from_slice(&time.to_le_bytes());
            k.extend_from_slice(&record.to_le_bytes());
            self.pending.insert(k);
        }
    }

    /// Whether the current key at `time` in `record` is a pending new sighting (taken
    /// once).
    fn again(&mut self, time: Nanos, record: &Offered<'_, '_>) -> bool {
        if self.pending.is_empty() {
            return false;
        }
        let len = self.key.len();
        self.key.extend_from_slice(&time.to_le_bytes());
        self.key
            .extend_from_slice(&fingerprint(record).to_le_bytes());
        let hit = self.pending.remove(self.key.as_slice());
        self.key.truncate(len);
        hit
    }

    /// Drops the pending sightings: the host has long delivered what it would again.
    pub(crate) fn settle(&mut self) {
        self.pending = hashbrown::HashSet::new();
    }

    /// Whether a new term seen at `ts` is learned rather than alerted: within
    /// `learning_period` of the first record the rule accepted (record time, so a replay
    /// decides the same; `forever` never ends).
    fn learning(&self, ts: Nanos) -> bool {
        match (self.rule.settings.learning_period(), self.first_accepted) {
            (Some(period), Some(first)) => ts < first.saturating_add(period),
            _ => false,
        }
    }

    /// The record's time: the rule's `timestamp_override` field when present, else
    /// `@timestamp` (for raw CloudTrail, `eventTime`).
    fn record_time(&self, view: &RecordView<'_>, layout: &Layout) -> Result<Nanos, RecordError> {
        for &f in &self.time_fields {
            let name = layout.field_name(f);
            let bad = |what: String| {
                RecordError::new(ErrorKind::BadTime, format!("field `{name}`: {what}"))
            };
            match view.get(layout, f) {
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
            .map(|f| layout.field_name(*f))
            .collect();
        Err(RecordError::new(
            ErrorKind::BadTime,
            format!("no time: none of {} is present", names.join(", ")),
        ))
    }

    /// How many records each exception item excepted.
    pub(crate) fn exception_counts(&self) -> impl Iterator<Item = (&str, u64)> {
        self.exceptions
            .iter()
            .zip(&self.excepted_by)
            .map(|((id, _), n)| (id.as_str(), *n))
    }
}

fn is_empty(s: &Scalar<'_>) -> bool {
    matches!(s, Scalar::Str(v) if v.is_empty())
}

/// The record's fingerprint, as its alert id takes it ([`alert::fingerprint`]).
fn fingerprint(r: &Offered<'_, '_>) -> u64 {
    let event_id = first_text(r.view, r.layout, r.event_id);
    alert::fingerprint(event_id.as_deref(), r.text)
}

fn first_text(view: &RecordView<'_>, layout: &Layout, f: FieldId) -> Option<String> {
    match view.get(layout, f) {
        Field::Values([first, ..]) => Some(first.text().into_owned()),
        _ => None,
    }
}
