//! Drives each record through the steps: frame, prefilter, view, then each rule's
//! detection (query, exceptions, terms, alerts), then what passes on.
//!
//! A detector holds one rule or a pack of them. Every rule's fields go into one record
//! layout, so a record is parsed at most once whatever the number of rules. Before the
//! parse, one multi-literal search over the record's text finds the rules whose required
//! literals it contains (their gates); only those rules run their full prefilter, and a
//! record no rule can match is never parsed.

use std::borrow::Cow;

use serde_json::value::RawValue;

use crate::detection::{Detection, Outcome};
use crate::error::{ErrorKind, RecordError};
use crate::gate::Gate;
use crate::record::{FieldId, Layout, LayoutBuilder, RecordView};
use crate::rule::{InputMode, OutputMode, Rule, RuleError};
use crate::snapshot::{self, SnapshotError};
use crate::stats::Stats;
use crate::terms::TermTable;

pub use crate::detection::MAX_COMBINATIONS;

/// One thing the detector emits for its input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output<'a> {
    /// A record to pass on: an alert document, or a record as given.
    Emit(Cow<'a, str>),
    /// A record that could not be processed.
    Error(RecordError),
}

/// The detector: its rules, the record layout they share, and the counters.
#[derive(Debug)]
pub struct Detector {
    pub(crate) layout: Layout,
    pub(crate) rules: Vec<Detection>,
    gate: Option<Gate>,
    pub(crate) event_id: FieldId,
    pub(crate) output: OutputMode,
    input: InputMode,
    max_record_bytes: usize,
    /// For the whole detector (a pack's records, each counted once).
    pub(crate) stats: Stats,
    /// Errors found before any rule was chosen, which count for every rule.
    frame_errors: [u64; ErrorKind::ALL.len()],
    /// The rules the current record is offered to (reused between records).
    candidates: Vec<u32>,
    /// `stamp[r] == generation`: rule `r` is already a candidate for this record.
    stamp: Vec<u32>,
    generation: u32,
    /// The one rule's prefilter, for judging the lines of a buffer together (taken while
    /// a buffer is processed).
    line_prefilter: Option<crate::Prefilter>,
}

impl Detector {
    /// Loads a rule file (empty: the embedded default) with settings overrides.
    pub fn from_config(rule_text: &str, overrides: &str) -> Result<Detector, RuleError> {
        Detector::new(Rule::parse(rule_text, overrides)?)
    }

    /// Loads a pack: `(source, rule file text)` for each rule (the source, a file name,
    /// names the rule in load errors), every rule with the same settings overrides.
    /// Settings that concern the host rather than a rule (`output`, `max_record_bytes`,
    /// `on_error`, `state_*`) are taken from the first rule. Rule ids must be distinct.
    pub fn from_pack<S: AsRef<str>, T: AsRef<str>>(
        rules: &[(S, T)],
        overrides: &str,
    ) -> Result<Detector, RuleError> {
        let mut parsed: Vec<Rule> = Vec::with_capacity(rules.len());
        let mut sources: Vec<&str> = Vec::with_capacity(rules.len());
        for (source, text) in rules {
            let (source, text) = (source.as_ref(), text.as_ref());
            let in_pack = |error| RuleError::in_pack(source, error);
            if text.trim().is_empty() {
                return Err(in_pack(RuleError::key("rule", "the rule file is empty")));
            }
            let rule = Rule::parse(text, overrides).map_err(in_pack)?;
            if let Some(i) = parsed.iter().position(|r| r.rule_id == rule.rule_id) {
                return Err(in_pack(RuleError::key(
                    "rule.rule_id",
                    format!("`{}` is also the id of {}", rule.rule_id, sources[i]),
                )));
            }
            parsed.push(rule);
            sources.push(source);
        }
        Detector::with_rules(parsed, &sources)
    }

    /// The rules a host found, as `(source, text)`: none is the built-in rule, one is
    /// that rule as [`Detector::from_config`] loads it, more are a pack.
    pub fn from_rules<S: AsRef<str>, T: AsRef<str>>(
        rules: &[(S, T)],
        overrides: &str,
    ) -> Result<Detector, RuleError> {
        match rules {
            [] => Detector::from_config("", overrides),
            [(_, text)] => Detector::from_config(text.as_ref(), overrides),
            many => Detector::from_pack(many, overrides),
        }
    }

    /// [`Detector::from_rules`] with the term tables of a snapshot.
    pub fn restore_rules<S: AsRef<str>, T: AsRef<str>>(
        rules: &[(S, T)],
        overrides: &str,
        snapshot: &[u8],
    ) -> Result<Detector, RuleError> {
        Detector::from_rules(rules, overrides)?.restored(snapshot)
    }

    /// One rule.
    pub fn new(rule: Rule) -> Result<Detector, RuleError> {
        Detector::with_rules(vec![rule], &[])
    }

    fn with_rules(rules: Vec<Rule>, sources: &[&str]) -> Result<Detector, RuleError> {
        let Some(first) = rules.first() else {
            return Err(RuleError::key("rule", "the pack has no rules"));
        };
        let output = first.settings.output;
        let input = first.settings.input;
        if input == InputMode::Matches && output == OutputMode::Matches {
            return Err(RuleError::key(
                "newterms.output",
                "a detector reading matches (input = \"matches\") cannot write them",
            ));
        }
        let max_record_bytes = first.settings.max_record_bytes;
        let mut b = LayoutBuilder::new();
        let mut detections = Vec::with_capacity(rules.len());
        for (i, rule) in rules.into_iter().enumerate() {
            let d = Detection::compile(rule, &mut b).map_err(|error| match sources.get(i) {
                Some(source) => RuleError::in_pack(source, error),
                None => error,
            })?;
            detections.push(d);
        }
        let event_id = b.field("event.id");
        let layout = b.build();
        for d in &mut detections {
            d.finish(&layout);
        }
        let gate = (detections.len() > 1)
            .then(|| {
                let prefilters: Vec<Option<&crate::Prefilter>> =
                    detections.iter().map(|d| d.prefilter.as_ref()).collect();
                Gate::new(&prefilters)
            })
            .flatten();
        let line_prefilter = match detections.as_slice() {
            [one] => one.prefilter.clone().filter(crate::Prefilter::is_active),
            _ => None,
        };
        let n = detections.len();
        Ok(Detector {
            layout,
            rules: detections,
            gate,
            event_id,
            output,
            input,
            max_record_bytes,
            stats: Stats::default(),
            frame_errors: [0; ErrorKind::ALL.len()],
            candidates: Vec::with_capacity(n),
            stamp: vec![0; n],
            generation: 0,
            line_prefilter,
        })
    }

    /// Loads a rule as [`Detector::from_config`] does, with the term table of a snapshot
    /// (from any build). The snapshot must be of the same rule id and new-terms fields.
    pub fn restore(
        rule_text: &str,
        overrides: &str,
        snapshot: &[u8],
    ) -> Result<Detector, RuleError> {
        Detector::from_config(rule_text, overrides)?.restored(snapshot)
    }

    /// Loads a pack as [`Detector::from_pack`] does, with the term tables of a snapshot.
    /// Each rule takes the table saved under its id; a rule the snapshot does not hold
    /// starts empty, and a saved rule no longer in the pack is dropped. A snapshot that
    /// holds none of the pack's rules is refused.
    pub fn restore_pack<S: AsRef<str>, T: AsRef<str>>(
        rules: &[(S, T)],
        overrides: &str,
        snapshot: &[u8],
    ) -> Result<Detector, RuleError> {
        Detector::from_pack(rules, overrides)?.restored(snapshot)
    }

    /// This detector with the term tables of a snapshot.
    fn restored(mut self, snapshot: &[u8]) -> Result<Detector, RuleError> {
        self.restore_state(snapshot)?;
        Ok(self)
    }

    fn restore_state(&mut self, bytes: &[u8]) -> Result<(), RuleError> {
        let err = |error| RuleError::Snapshot { error };
        let snaps = snapshot::decode_any(bytes).map_err(err)?;
        let mut used = 0;
        let mut first_other = None;
        for snap in snaps {
            match self
                .rules
                .iter_mut()
                .find(|d| d.rule.rule_id == snap.rule_id)
            {
                Some(d) => {
                    d.restore(snap).map_err(err)?;
                    used += 1;
                }
                None => {
                    first_other.get_or_insert(snap);
                }
            }
        }
        if let (0, Some(snap)) = (used, first_other) {
            let rule = &self.rules[0].rule;
            let what = if self.rules.len() == 1 {
                format!(
                    "rule {} over [{}]",
                    rule.rule_id,
                    rule.new_terms_fields.join(", ")
                )
            } else {
                format!("any rule of this pack of {}", self.rules.len())
            };
            return Err(err(SnapshotError::OtherRule {
                snapshot: format!("rule {} over [{}]", snap.rule_id, snap.fields.join(", ")),
                rule: what,
            }));
        }
        Ok(())
    }

    /// The term tables as portable bytes (see [`crate::snapshot`]): one rule's snapshot,
    /// or for a pack the container of its rules' snapshots.
    pub fn snapshot(&self) -> Vec<u8> {
        match self.rules.as_slice() {
            [one] => one.snapshot().encode(),
            many => {
                snapshot::encode_pack(&many.iter().map(Detection::snapshot).collect::<Vec<_>>())
            }
        }
    }

    /// The same detector with its prefilters off: every record takes the full path. The
    /// answers are the same, only slower, and records the prefilter would have rejected
    /// count as `unmatched`. For tests and benchmarks that show exactly that.
    #[doc(hidden)]
    pub fn without_prefilter(mut self) -> Detector {
        for d in &mut self.rules {
            d.prefilter = None;
        }
        self.gate = None;
        self.line_prefilter = None;
        self
    }

    /// Assumes every record's text comes from `writer` (the Fluent Bit module: Fluent
    /// Bit's own JSON encoder), which spares the prefilter its escape searches where the
    /// writer never escapes a literal. A lone rule in a build without vector search also
    /// searches its rarest literal by skipping ([`crate::query::Writer`]); a pack has its
    /// gate for that.
    pub fn assume_writer(&mut self, writer: crate::query::Writer) {
        let skip = self.rules.len() == 1 && crate::query::PORTABLE;
        let prefilters = self.rules.iter_mut().filter_map(|d| d.prefilter.as_mut());
        for p in prefilters.chain(self.line_prefilter.as_mut()) {
            p.assume(writer, skip);
        }
        if let Some(g) = &mut self.gate {
            g.assume(writer);
        }
    }

    /// Changes what is emitted from the next record on (a host that selects the mode per
    /// entry point, as the Fluent Bit module does).
    pub fn set_output(&mut self, mode: OutputMode) {
        self.output = mode;
        for d in &mut self.rules {
            d.rule.settings.output = mode;
        }
    }

    /// The first (or only) rule; its settings are the host's.
    pub fn rule(&self) -> &Rule {
        &self.rules[0].rule
    }

    /// Every rule, in load order.
    pub fn rules(&self) -> impl Iterator<Item = &Rule> {
        self.rules.iter().map(|d| &d.rule)
    }

    /// The first rule's prefilter.
    pub fn prefilter(&self) -> Option<&crate::Prefilter> {
        self.rules[0].prefilter.as_ref()
    }

    /// The first rule's term table.
    pub fn terms(&self) -> &TermTable {
        &self.rules[0].terms
    }

    /// The newest record time any rule's table has taken (nanoseconds since the epoch):
    /// the record clock a host's state policy counts by.
    pub fn watermark(&self) -> Option<crate::time::Nanos> {
        self.rules.iter().filter_map(|d| d.terms.watermark()).max()
    }

    /// How many records each exception item excepted: `(item id, count)`; in a pack,
    /// `rule_id/item_id`.
    pub fn exception_counts(&self) -> Vec<(String, u64)> {
        let pack = self.rules.len() > 1;
        self.rules
            .iter()
            .flat_map(|d| {
                d.exception_counts().map(move |(id, n)| {
                    let id = if pack {
                        format!("{}/{id}", d.rule.rule_id)
                    } else {
                        id.to_owned()
                    };
                    (id, n)
                })
            })
            .collect()
    }

    /// The counters of the detector. For one rule, that rule's; for a pack, each record
    /// once, under the furthest any rule took it: alerted, then in error, suppressed,
    /// no term, excepted, unmatched, prefiltered. `alerts`, evictions and terms held are
    /// the rules' sums.
    pub fn stats(&self) -> Stats {
        if self.rules.len() == 1 {
            return self.rule_stats(0);
        }
        let mut s = self.stats;
        for d in &self.rules {
            let c = d.terms.counters();
            s.alerts += d.stats.alerts;
            s.evicted_window += c.evicted_window;
            s.evicted_capacity += c.evicted_capacity;
            s.terms_held += d.terms.len() as u64;
        }
        s
    }

    /// The counters of rule `i` (in load order), as if it ran alone.
    pub fn rule_stats(&self, i: usize) -> Stats {
        let d = &self.rules[i];
        let c = d.terms.counters();
        let mut s = d.stats;
        for (mine, frame) in s.errors.iter_mut().zip(&self.frame_errors) {
            *mine += frame;
        }
        let frame_total: u64 = self.frame_errors.iter().sum();
        s.records = self.stats.records;
        s.prefiltered = self.stats.records.saturating_sub(d.offered + frame_total);
        s.evicted_window = c.evicted_window;
        s.evicted_capacity = c.evicted_capacity;
        s.terms_held = d.terms.len() as u64;
        s
    }

    /// Every rule's id and counters, in load order.
    pub fn all_rule_stats(&self) -> Vec<(String, Stats)> {
        (0..self.rules.len())
            .map(|i| (self.rules[i].rule.rule_id.clone(), self.rule_stats(i)))
            .collect()
    }

    /// Processes one input: a record, a CloudTrail delivery object (`{"Records": [...]}`),
    /// a JSON array of records, or an EventBridge envelope. Every output goes to `sink`.
    pub fn process(&mut self, input: &[u8], sink: &mut dyn FnMut(Output<'_>)) {
        if self.input == InputMode::Matches {
            self.process_match(input, sink);
        } else if first_byte(input) == Some(b'[') {
            self.process_array(input, sink);
        } else {
            self.process_record(input, true, None, sink);
        }
    }

    /// Processes NDJSON: each line of `lines` is one input (a trailing `\r` is dropped, blank
    /// lines are skipped). `sink` gets each output with the 0-based number of its line.
    /// One buffer for many records: the cheapest way across a boundary.
    ///
    /// With one rule, the prefilter judges the lines together: each literal is searched
    /// across the whole buffer once, and a line it rejects is counted without a call of
    /// its own (the answer is the same as line by line).
    pub fn process_lines(&mut self, lines: &[u8], sink: &mut dyn FnMut(usize, Output<'_>)) {
        let prefilter = match (self.output, self.input) {
            (OutputMode::Annotate, _) | (_, InputMode::Matches) => None,
            _ => self.line_prefilter.take(),
        };
        let mut scan = prefilter.as_ref().map(crate::query::BufferScan::new);
        let mut start = 0;
        let mut number = 0;
        while start < lines.len() {
            let end = memchr::memchr(b'\n', &lines[start..]).map_or(lines.len(), |i| start + i);
            let mut line = &lines[start..end];
            if let [head @ .., b'\r'] = line {
                line = head;
            }
            let rejected = scan.as_mut().is_some_and(|scan| {
                first_byte(line) == Some(b'{')
                    && line.len() <= self.max_record_bytes
                    && !starts_with_records_key(line)
                    && !scan.may_match(lines, start, start + line.len())
            });
            if rejected {
                self.stats.records += 1;
                self.stats.prefiltered += 1;
            } else if !line.trim_ascii().is_empty() {
                self.process(line, &mut |o| sink(number, o));
            }
            start = end + 1;
            number += 1;
        }
        if prefilter.is_some() {
            self.line_prefilter = prefilter;
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

    /// A record in error before any rule was chosen: it counts for every rule.
    pub(crate) fn fail(
        &mut self,
        err: RecordError,
        place: Option<&str>,
        sink: &mut dyn FnMut(Output<'_>),
    ) {
        self.frame_errors[err.kind().index()] += 1;
        self.fail_for(&[], err, place, sink);
    }

    /// A record in error for the candidate rules only (the others' prefilters rejected it).
    fn fail_candidates(
        &mut self,
        err: RecordError,
        place: Option<&str>,
        sink: &mut dyn FnMut(Output<'_>),
    ) {
        let candidates = std::mem::take(&mut self.candidates);
        self.fail_for(&candidates, err, place, sink);
        self.candidates = candidates;
    }

    /// Counts a record in error, for the detector and for `rules`, and reports it.
    fn fail_for(
        &mut self,
        rules: &[u32],
        err: RecordError,
        place: Option<&str>,
        sink: &mut dyn FnMut(Output<'_>),
    ) {
        self.stats.records += 1;
        self.stats.count_error(err.kind());
        for &r in rules {
            let d = &mut self.rules[r as usize];
            d.offered += 1;
            d.stats.count_error(err.kind());
        }
        sink(Output::Error(placed(err, place)));
    }

    /// Passes a record on unchanged, as text.
    fn pass(text: &[u8], place: Option<&str>, sink: &mut dyn FnMut(Output<'_>)) {
        match std::str::from_utf8(text) {
            Ok(s) => sink(Output::Emit(Cow::Borrowed(s))),
            Err(e) => {
                // Only a record the prefilter passed over unparsed can get here; it stays
                // counted as such, and the host learns why it did not get the text.
                let err = RecordError::new(ErrorKind::InvalidJson, format!("invalid UTF-8: {e}"));
                sink(Output::Error(placed(err, place)));
            }
        }
    }

    /// Chooses the rules whose prefilters `text` passes, into `self.candidates`.
    fn choose(&mut self, text: &[u8]) {
        self.candidates.clear();
        let Some(gate) = &self.gate else {
            for (i, d) in self.rules.iter().enumerate() {
                if d.may_match(text) {
                    self.candidates.push(i as u32);
                }
            }
            return;
        };
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            self.stamp.iter_mut().for_each(|s| *s = 0);
            self.generation = 1;
        }
        let (stamp, generation, candidates) =
            (&mut self.stamp, self.generation, &mut self.candidates);
        let mut mark = |r: u32| {
            if stamp[r as usize] != generation {
                stamp[r as usize] = generation;
                candidates.push(r);
            }
        };
        gate.open(text, &mut mark);
        candidates.sort_unstable();
        let rules = &self.rules;
        candidates.retain(|&r| rules[r as usize].may_match(text));
    }

    fn process_record(
        &mut self,
        text: &[u8],
        envelopes: bool,
        place: Option<&str>,
        sink: &mut dyn FnMut(Output<'_>),
    ) {
        let limit = self.max_record_bytes;
        let annotate = self.output == OutputMode::Annotate;
        // A CloudTrail delivery object is always opened, so its records are counted and
        // (in annotate mode) passed one by one.
        let delivery = envelopes && starts_with_records_key(text);
        if text.len() > limit && !delivery {
            return self.fail(too_large(text, limit), place, sink);
        }
        // Only an object can match: anything else is parsed, to report what it is. In
        // annotate mode an EventBridge envelope must still be opened.
        let object = first_byte(text) == Some(b'{');
        let open_all = !object
            || delivery
            || (annotate && envelopes && memchr::memmem::find(text, b"\"detail-type\"").is_some());
        if open_all {
            self.candidates.clear();
            self.candidates.extend(0..self.rules.len() as u32);
        } else {
            self.choose(text);
            if self.candidates.is_empty() {
                self.stats.records += 1;
                self.stats.prefiltered += 1;
                if annotate {
                    Detector::pass(text, place, sink);
                }
                return;
            }
        }
        let mut view = match RecordView::parse(text, &self.layout, envelopes) {
            Ok(v) => v,
            Err(e) if delivery => return self.fail(e, place, sink),
            Err(e) => return self.fail_candidates(e, place, sink),
        };
        if envelopes {
            if let Some(records) = view.take_records() {
                for (i, raw) in records.iter().enumerate() {
                    let p = format!("Records[{i}]");
                    self.process_record(raw.as_bytes(), false, Some(&p), sink);
                }
                return;
            }
            if let Some(detail) = view.eventbridge_detail(&self.layout) {
                return self.process_record(detail.as_bytes(), false, Some("detail"), sink);
            }
        }
        if text.len() > limit {
            return self.fail_candidates(too_large(text, limit), place, sink);
        }
        self.decide(text, &view, place, sink);
    }

    /// Offers a parsed record to each candidate rule, then passes it on as the output
    /// mode says.
    fn decide(
        &mut self,
        text: &[u8],
        view: &RecordView<'_>,
        place: Option<&str>,
        sink: &mut dyn FnMut(Output<'_>),
    ) {
        let pack = self.rules.len() > 1;
        let mut best: Option<Outcome> = None;
        let mut error: Option<ErrorKind> = None;
        let mut late = false;
        for &r in &self.candidates {
            let d = &mut self.rules[r as usize];
            d.offered += 1;
            match d.decide(text, view, &self.layout, self.event_id, self.output, sink) {
                Ok(decision) => {
                    best = best.max(Some(decision.outcome));
                    late |= decision.late;
                }
                Err(e) => {
                    d.stats.count_error(e.kind());
                    error.get_or_insert(e.kind());
                    let e = if pack {
                        e.within(&format!("rule {}", d.rule.rule_id))
                    } else {
                        e
                    };
                    sink(Output::Error(placed(e, place)));
                }
            }
        }
        let s = &mut self.stats;
        s.records += 1;
        match (best, error) {
            (Some(Outcome::Alerted), _) => s.alerted += 1,
            (_, Some(kind)) => s.count_error(kind),
            (Some(Outcome::Suppressed), None) => s.suppressed += 1,
            (Some(Outcome::NoTerm), None) => s.no_term += 1,
            (Some(Outcome::Excepted), None) => s.excepted += 1,
            (Some(Outcome::Unmatched), None) => s.unmatched += 1,
            // Every candidate failed its prefilter after a forced open (not reachable:
            // an opened record is decided by every rule).
            (None, None) => s.unmatched += 1,
        }
        if best >= Some(Outcome::NoTerm) {
            s.matched += 1;
        }
        if late {
            s.late += 1;
        }
        let alerted = best == Some(Outcome::Alerted);
        let pass = match self.output {
            OutputMode::Passthrough => alerted,
            OutputMode::Annotate => !alerted && error.is_none(),
            OutputMode::Alert | OutputMode::Matches => false,
        };
        if pass {
            Detector::pass(text, None, sink);
        }
    }
}

/// An error, placed within its input when it came from part of one.
fn placed(err: RecordError, place: Option<&str>) -> RecordError {
    match place {
        Some(p) => err.within(p),
        None => err,
    }
}

/// A record over `max_record_bytes`.
fn too_large(text: &[u8], limit: usize) -> RecordError {
    RecordError::new(
        ErrorKind::TooLarge,
        format!(
            "{} bytes, over the limit of {limit} (max_record_bytes)",
            text.len()
        ),
    )
}

fn first_byte(text: &[u8]) -> Option<u8> {
    text.iter().copied().find(|b| !b.is_ascii_whitespace())
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
mod tests;

#[cfg(test)]
mod allocation;
