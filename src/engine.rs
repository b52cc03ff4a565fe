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
        let mut d = Detector::from_rules(rules, overrides)?;
        d.restore_state(snapshot)?;
        Ok(d)
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
        let mut d = Detector::from_config(rule_text, overrides)?;
        d.restore_state(snapshot)?;
        Ok(d)
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
        let mut d = Detector::from_pack(rules, overrides)?;
        d.restore_state(snapshot)?;
        Ok(d)
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
        self.stats.records += 1;
        self.stats.count_error(err.kind());
        self.frame_errors[err.kind().index()] += 1;
        sink(Output::Error(match place {
            Some(p) => err.within(p),
            None => err,
        }));
    }

    /// A record in error for the candidate rules only (the others' prefilters rejected it).
    fn fail_candidates(
        &mut self,
        err: RecordError,
        place: Option<&str>,
        sink: &mut dyn FnMut(Output<'_>),
    ) {
        self.stats.records += 1;
        self.stats.count_error(err.kind());
        for &r in &self.candidates {
            let d = &mut self.rules[r as usize];
            d.offered += 1;
            d.stats.count_error(err.kind());
        }
        sink(Output::Error(match place {
            Some(p) => err.within(p),
            None => err,
        }));
    }

    /// Passes a record on unchanged, as text.
    fn pass(text: &[u8], place: Option<&str>, sink: &mut dyn FnMut(Output<'_>)) {
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
            let err = RecordError::new(
                ErrorKind::TooLarge,
                format!(
                    "{} bytes, over the limit of {limit} (max_record_bytes)",
                    text.len()
                ),
            );
            return self.fail(err, place, sink);
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
            let err = RecordError::new(
                ErrorKind::TooLarge,
                format!(
                    "{} bytes, over the limit of {limit} (max_record_bytes)",
                    text.len()
                ),
            );
            return self.fail_candidates(err, place, sink);
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
                    sink(Output::Error(match place {
                        Some(p) => e.within(p),
                        None => e,
                    }));
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

    /// The built-in rule with another id and query, over the field `f`.
    fn rule_with(id: &str, query: &str) -> (String, String) {
        let text = crate::DEFAULT_RULE
            .replace("30fbf4db-c502-4e68-a239-2e99af0f70da", id)
            .replace(
                "event.dataset: \"aws.cloudtrail\" and event.provider: \"sts.amazonaws.com\" and event.action: \"GetCallerIdentity\"\nand not aws.cloudtrail.user_identity.type: \"AssumedRole\"",
                query,
            )
            .replace("[\"aws.cloudtrail.user_identity.arn\"]", "[\"f\"]");
        (id.to_owned(), text)
    }

    #[test]
    fn the_gate_finds_overlapping_and_nested_literals() {
        let rules = [
            rule_with("r1", "f: abcd*"),
            rule_with("r2", "f: *abcdef*"),
            rule_with("r3", "f: *cdefgh*"),
            rule_with("r4", "f: *defg*"),
            rule_with("r5", "f: *zzzz*"),
        ];
        assert!(rules.iter().all(|(_, t)| t.contains("f: ")));
        let mut d = Detector::from_pack(&rules, "").unwrap();
        assert!(d.gate.is_some());
        let record = br#"{"@timestamp":"2026-01-01T00:00:00Z","f":"abcdefgh"}"#;
        let ids: Vec<String> = d
            .process_collect(record)
            .into_iter()
            .map(|o| match o {
                Output::Emit(a) => {
                    let v: serde_json::Value = serde_json::from_str(&a).unwrap();
                    v["kibana.alert.rule.rule_id"].as_str().unwrap().to_owned()
                }
                Output::Error(e) => panic!("{e}"),
            })
            .collect();
        assert_eq!(ids, ["r1", "r2", "r3", "r4"]);
        // Hidden behind an escape: every rule looks.
        let escaped = br#"{"@timestamp":"2026-01-01T00:00:00Z","f":"\u007azzz"}"#;
        assert_eq!(d.process_collect(escaped).len(), 1);
        let s = d.rule_stats(4);
        assert_eq!((s.records, s.prefiltered, s.alerts), (2, 1, 1));
    }

    /// GetCallerIdentity records whose literals are written with JSON escapes (`\u`, `\/`),
    /// among plain ones, other calls, blank lines, CRs, non-objects and an oversized line.
    fn escaped_stream(n: usize) -> Vec<Vec<u8>> {
        let plain = stream(n, 300, false);
        plain
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                let r = String::from_utf8(r).unwrap();
                match i % 13 {
                    0 => r.replace("GetCallerIdentity", "\\u0047etCallerIdentity"),
                    1 => r.replace("sts.amazonaws.com", "sts\\u002eamazonaws.com"),
                    2 => r.replace("user/", "user\\/"),
                    3 => r.replace("GetCallerIdentity", "DescribeInstances"),
                    4 => r.replace("sts.amazonaws.com", "ec2.amazonaws.com"),
                    5 => r.replace("GetCallerIdentity", "GetCallerIdentit\\u0079"),
                    6 => format!("{r}\r"),
                    7 => String::new(),
                    8 => "[1,2]".to_owned(),
                    9 if i == 9 => format!("{{\"pad\":\"{}\",{}", "x".repeat(1 << 20), &r[1..]),
                    _ => r,
                }
                .into_bytes()
            })
            .collect()
    }

    fn collect_lines(d: &mut Detector, lines: &[u8]) -> Vec<(usize, Output<'static>)> {
        let mut out = Vec::new();
        d.process_lines(lines, &mut |n, o| {
            out.push((
                n,
                match o {
                    Output::Emit(s) => Output::Emit(Cow::Owned(s.into_owned())),
                    Output::Error(e) => Output::Error(e),
                },
            ))
        });
        out
    }

    #[test]
    fn the_prefilter_never_changes_a_decision() {
        let records = escaped_stream(20_000);
        let mut on = Detector::from_config("", "").unwrap();
        let mut off = Detector::from_config("", "").unwrap().without_prefilter();
        for (i, r) in records.iter().enumerate() {
            assert_eq!(on.process_collect(r), off.process_collect(r), "record {i}");
        }
        let (a, b) = (on.stats(), off.stats());
        assert!(a.prefiltered > 3_000 && b.prefiltered == 0, "{a:?}");
        assert!(a.alerts > 1_000, "{a:?}");
        assert_eq!(a.prefiltered + a.unmatched, b.unmatched);
        assert_eq!(
            Stats {
                prefiltered: 0,
                unmatched: 0,
                ..a
            },
            Stats { unmatched: 0, ..b }
        );
    }

    #[test]
    fn a_buffer_of_lines_is_decided_as_each_line_alone() {
        let records = escaped_stream(20_000);
        let mut buffer = records.join(&b'\n');
        buffer.extend_from_slice(b"\n\n   \n");
        for settings in ["", "output = \"passthrough\"", "output = \"annotate\""] {
            let mut by_line = Detector::from_config("", settings).unwrap();
            let mut want = Vec::new();
            for (i, r) in buffer.split(|&b| b == b'\n').enumerate() {
                let r = r.strip_suffix(b"\r").unwrap_or(r);
                if !r.trim_ascii().is_empty() {
                    want.extend(by_line.process_collect(r).into_iter().map(|o| (i, o)));
                }
            }
            let mut together = Detector::from_config("", settings).unwrap();
            let got = collect_lines(&mut together, &buffer);
            assert!(got == want, "{settings}: the outputs differ");
            assert_eq!(together.stats(), by_line.stats(), "{settings}");
        }
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
