//! Drives each record through the steps: frame, prefilter, view, then each rule's
//! detection (query, exceptions, terms, alerts), then what passes on.
//!
//! Opening (rules, settings, a snapshot) is in `engine/open.rs`, framing (arrays, NDJSON
//! buffers, match documents) in `engine/framing.rs`; this file holds the record's path:
//! the gate, the one parse, each rule's decision and the counting.
//!
//! A detector holds one rule or a pack of them. Every rule's fields go into one record
//! layout, so a record is parsed at most once whatever the number of rules. Before the
//! parse, one multi-literal search over the record's text finds the rules whose required
//! literals it contains (their gates); only those rules run their full prefilter, and a
//! record no rule can match is never parsed.

use std::borrow::Cow;

use crate::detection::{Detection, Outcome};
use crate::error::{ErrorKind, RecordError};
use crate::gate::Gate;
use crate::index::{Admissions, Foretold, IndexFields, IndexOf, TagIndices};
use crate::record::{FieldId, Layout, RecordView};
use crate::rule::{InputMode, OutputMode, Rule};
use crate::stats::Stats;
use crate::terms::TermTable;
use framing::{first_byte, starts_with_records_key};

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
    /// Each rule's indices, and what each index admits.
    pub(crate) index: IndexGate,
    /// The gate literals the current record holds (reused).
    seen: Vec<u32>,
    /// Some rule has changes to take ([`Detector::take_changes`]).
    pub(crate) changed: bool,
}

/// The index as a gate: where a record's index is read from, what each index admits, and
/// (in a pack) what the text foretold of it before the parse.
#[derive(Debug)]
pub(crate) struct IndexGate {
    /// `None` when no rule has index patterns: every rule sees every record.
    fields: Option<IndexFields>,
    /// The index the host names for the current record: its `index` setting, or the one
    /// `index_by_tag` gives the record's tag.
    host: Option<String>,
    /// The `index` setting.
    host_default: Option<String>,
    /// The `index_by_tag` setting.
    tags: TagIndices,
    admissions: Admissions,
    /// What each foretold index admits (by [`Foretold`] as an index; `AfterParse`: all).
    foretold: [Box<[bool]>; 4],
    /// Records of each foretold index (not `AfterParse`): the rules it does not admit
    /// count them as out of their indices.
    foretold_records: [u64; 4],
    /// The index text of the current record, reused.
    buf: String,
    /// The host's index is the one the gate's first search was built for (the `index`
    /// setting): see [`Gate::open`].
    foreseen: bool,
    /// The last record named its own index. The next one then goes straight to the search
    /// for every literal: a stream is mostly of one kind, and on one whose records name
    /// their indices (an ECS stream) the first search would be wasted on each.
    last_named: bool,
}

impl IndexGate {
    fn new(
        fields: Option<IndexFields>,
        host: Option<String>,
        tags: TagIndices,
        mut admissions: Admissions,
    ) -> Self {
        let all = [
            Foretold::AfterParse,
            Foretold::Host,
            Foretold::CloudTrailOrUnknown,
            Foretold::Unknown,
        ];
        let foretold = all.map(|f| admissions.foretold(f, host.as_deref()).into_boxed_slice());
        IndexGate {
            fields,
            host_default: host.clone(),
            host,
            tags,
            admissions,
            foretold,
            foretold_records: [0; 4],
            buf: String::new(),
            foreseen: true,
            last_named: false,
        }
    }

    /// The rules a record that names no index of its own can reach, which the gate's first
    /// search is built for: those the host's index admits, or without one, raw
    /// CloudTrail's or an unknown index's. `None` when no rule has index patterns.
    fn foreseen_rules(&self) -> Option<&[bool]> {
        self.fields.as_ref()?;
        let f = match self.host {
            Some(_) => Foretold::Host,
            None => Foretold::CloudTrailOrUnknown,
        };
        Some(&self.foretold[f as usize])
    }

    /// Names the host's index for the records from now on (a change of it).
    fn set_host(&mut self, host: Option<String>, rules: &mut [Detection]) {
        // The records counted under the old host index stay with the rules it kept out.
        let h = Foretold::Host as usize;
        let n = std::mem::take(&mut self.foretold_records[h]);
        for (r, d) in rules.iter_mut().enumerate() {
            if !self.foretold[h][r] {
                d.stats.out_of_index += n;
            }
        }
        self.host = host;
        self.foreseen = self.host == self.host_default;
        self.foretold[h] = self
            .admissions
            .foretold(Foretold::Host, self.host.as_deref())
            .into_boxed_slice();
    }

    /// Records rule `r` was kept from by what their text foretold of their index.
    fn foretold_out(&self, r: usize) -> u64 {
        self.foretold
            .iter()
            .zip(&self.foretold_records)
            .filter(|(admits, _)| !admits[r])
            .map(|(_, n)| n)
            .sum()
    }
}

impl Detector {
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

    /// Says which tag the next records carry (Fluent Bit passes each record's): the
    /// `index_by_tag` setting then names their index, in place of `index`.
    pub fn set_tag(&mut self, tag: &str) {
        let index = &mut self.index;
        if index.tags.is_empty() {
            return;
        }
        let named = index.tags.of(tag).or(index.host_default.as_deref());
        // Only a change of index costs anything: most records carry the last one's tag.
        if index.host.as_deref() != named {
            let named = named.map(str::to_owned);
            index.set_host(named, &mut self.rules);
        }
    }

    /// Keeps every change to the term tables from now on as journal entries
    /// ([`crate::journal`]), for a host to append to its journal ([`Detector::take_changes`]).
    pub fn keep_changes(&mut self, on: bool) {
        for (i, d) in self.rules.iter_mut().enumerate() {
            d.changes = on.then(Vec::new);
            d.position = i as u32;
        }
        self.changed = false;
    }

    /// Moves the changes kept since the last call to the end of `out`, in the order they
    /// were made for each rule.
    pub fn take_changes(&mut self, out: &mut Vec<u8>) {
        if !std::mem::take(&mut self.changed) {
            return;
        }
        for d in &mut self.rules {
            if let Some(c) = &mut d.changes {
                out.extend_from_slice(c);
                c.clear();
            }
        }
    }

    /// Drops the new sightings a replay left pending ([`crate::journal`]): a host calls it
    /// once the records it would deliver again are behind it (at its next fold).
    pub fn settle(&mut self) {
        for d in &mut self.rules {
            d.settle();
        }
    }

    /// A journal header for this detector's rules, following the snapshot whose checksum
    /// is `base` ([`crate::journal::base_of`]).
    pub fn journal_header(&self, base: u64) -> Vec<u8> {
        let ids: Vec<&str> = self.rules.iter().map(|d| d.rule.rule_id.as_str()).collect();
        crate::journal::header(base, &ids)
    }

    /// Applies a journal's entries (read by [`crate::journal::read`]), in order: each
    /// rule's table becomes what it was after the sightings that wrote them, and their new
    /// sightings are pending: seen again, each is new once more (its output may have been
    /// lost with the host). An entry of a rule no longer loaded is skipped; returns how
    /// many were applied and skipped.
    pub fn replay(&mut self, journal: &crate::journal::Journal<'_>) -> (u64, u64) {
        let map: Vec<Option<usize>> = journal
            .rules
            .iter()
            .map(|id| self.rules.iter().position(|d| &d.rule.rule_id == id))
            .collect();
        let (mut applied, mut skipped) = (0, 0);
        for e in &journal.entries {
            match map.get(e.rule as usize).copied().flatten() {
                Some(r) => {
                    self.rules[r].replay(e.new, e.time, e.key);
                    applied += 1;
                }
                None => skipped += 1,
            }
        }
        (applied, skipped)
    }

    /// Changes what is emitted from the next record on (a host that selects the mode per
    /// entry point, as the Fluent Bit module does).
    pub fn set_output(&mut self, mode: OutputMode) {
        self.output = mode;
        for d in &mut self.rules {
            d.rule.settings.output = Some(mode);
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
    /// no term, excepted, unmatched, prefiltered. `alerts`, `learned`, evictions and terms held are
    /// the rules' sums.
    pub fn stats(&self) -> Stats {
        if self.rules.len() == 1 {
            return self.rule_stats(0);
        }
        let mut s = self.stats;
        for d in &self.rules {
            let c = d.terms.counters();
            s.alerts += d.stats.alerts;
            s.learned += d.stats.learned;
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
        s.out_of_index += self.index.foretold_out(i);
        if self.index.admissions.has_patterns(i) {
            s.index_unknown += self.index.foretold_records[Foretold::Unknown as usize];
        }
        s.prefiltered = self
            .stats
            .records
            .saturating_sub(d.offered + frame_total + s.out_of_index);
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

    /// Chooses the rules whose prefilters `text` passes, into `self.candidates`, and in a
    /// pack whose rules read their own indices, only those the index the text foretells
    /// admits. Returns what was foretold (`None` without a gate), and whether the index
    /// alone left no candidate.
    fn choose(&mut self, text: &[u8]) -> (Option<Foretold>, bool) {
        self.candidates.clear();
        let Some(gate) = &self.gate else {
            for (i, d) in self.rules.iter().enumerate() {
                if d.may_match(text) {
                    self.candidates.push(i as u32);
                }
            }
            return (None, false);
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
        let seen = &mut self.seen;
        let foreseen = self.index.foreseen && !self.index.last_named;
        let found = gate.open(text, &mut mark, seen, foreseen);
        self.index.last_named = found.names_itself();
        let mut foretold = None;
        let mut by_index = false;
        let index = &mut self.index;
        if index.fields.is_some() {
            let f = Foretold::from_search(
                found.names_itself(),
                index.host.is_some(),
                found.cloudtrail_keys(),
            );
            if f != Foretold::AfterParse {
                index.foretold_records[f as usize] += 1;
                if f == Foretold::Unknown {
                    self.stats.index_unknown += 1;
                }
                let admits = &index.foretold[f as usize];
                let opened = candidates.len();
                candidates.retain(|&r| admits[r as usize]);
                by_index = opened > 0 && candidates.is_empty();
            }
            foretold = Some(f);
        }
        candidates.sort_unstable();
        let rules = &self.rules;
        let seen = &self.seen;
        candidates.retain(|&r| match gate.passes(r, &found, seen) {
            Some(decided) => decided,
            None => rules[r as usize].may_match(text),
        });
        (foretold, by_index)
    }

    /// Keeps the candidates the record's index admits (its text parsed into `view`);
    /// false when none is left, the record then counted.
    fn admit(&mut self, view: &RecordView<'_>, foretold: Option<Foretold>) -> bool {
        let IndexGate {
            fields: Some(fields),
            host,
            admissions,
            buf,
            ..
        } = &mut self.index
        else {
            return true;
        };
        let index = fields.of_record(view, &self.layout, host.as_deref(), buf);
        let unknown = index == IndexOf::Unknown;
        // An unknown index is counted once: where the text foretold it, already.
        if unknown && foretold != Some(Foretold::Unknown) {
            self.stats.index_unknown += 1;
        }
        let rules = &mut self.rules;
        if unknown {
            for &r in &self.candidates {
                if admissions.has_patterns(r as usize) {
                    rules[r as usize].stats.index_unknown += 1;
                }
            }
        }
        let admits = admissions.of(index);
        self.candidates.retain(|&r| {
            let keep = admits.get(r as usize).copied().unwrap_or(true);
            if !keep {
                rules[r as usize].stats.out_of_index += 1;
            }
            keep
        });
        if self.candidates.is_empty() {
            self.stats.records += 1;
            self.stats.out_of_index += 1;
            return false;
        }
        true
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
        let mut foretold = None;
        if open_all {
            self.candidates.clear();
            self.candidates.extend(0..self.rules.len() as u32);
        } else {
            let by_index;
            (foretold, by_index) = self.choose(text);
            if self.candidates.is_empty() {
                self.stats.records += 1;
                match by_index {
                    true => self.stats.out_of_index += 1,
                    false => self.stats.prefiltered += 1,
                }
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
        if !self.admit(&view, foretold) {
            if annotate {
                Detector::pass(text, place, sink);
            }
            return;
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
            let decided = d.decide(text, view, &self.layout, self.event_id, self.output, sink);
            self.changed |= d.changes.as_ref().is_some_and(|c| !c.is_empty());
            match decided {
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

mod framing;
mod open;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod allocation;

/// Where a detector's time goes, stage by stage (natively; for the benchmarks).
#[doc(hidden)]
#[derive(Debug, Clone, Copy, Default)]
pub struct StageTimes {
    pub records: usize,
    /// The gate: the literal search, what the text foretells of the index, each chosen
    /// rule's whole prefilter.
    pub gate_seconds: f64,
    /// Records some rule's prefilter let through.
    pub chosen: usize,
    /// Their one parse.
    pub parse_seconds: f64,
    /// Their index, derived and looked up.
    pub index_seconds: f64,
    /// Records some rule still reads after the index.
    pub admitted: usize,
    /// The candidates' decisions over those (query, exceptions, terms, alerts).
    pub decide_seconds: f64,
    /// Candidate rules summed over the records decided.
    pub decisions: usize,
}

#[cfg(not(target_family = "wasm"))]
impl Detector {
    /// Runs `records` (plain records, one object each) through the record path stage by
    /// stage, timing each stage over all of them: a profile, with the same decisions as
    /// [`Detector::process`] made.
    #[doc(hidden)]
    pub fn profile_stages(&mut self, records: &[&[u8]]) -> StageTimes {
        use std::time::Instant;
        let mut t = StageTimes {
            records: records.len(),
            ..StageTimes::default()
        };
        let mut chosen: Vec<(usize, Vec<u32>, Option<Foretold>)> = Vec::new();
        let start = Instant::now();
        for (i, text) in records.iter().enumerate() {
            let (f, _) = self.choose(text);
            if !self.candidates.is_empty() {
                chosen.push((i, self.candidates.clone(), f));
            }
        }
        t.gate_seconds = start.elapsed().as_secs_f64();
        t.chosen = chosen.len();
        let start = Instant::now();
        let views: Vec<Option<RecordView<'_>>> = chosen
            .iter()
            .map(|(i, _, _)| RecordView::parse(records[*i], &self.layout, false).ok())
            .collect();
        t.parse_seconds = start.elapsed().as_secs_f64();
        let start = Instant::now();
        let mut admitted = Vec::new();
        for ((i, cands, f), view) in chosen.iter().zip(&views) {
            let Some(view) = view else { continue };
            self.candidates.clone_from(cands);
            if self.admit(view, *f) {
                admitted.push((*i, self.candidates.clone(), view));
            }
        }
        t.index_seconds = start.elapsed().as_secs_f64();
        t.admitted = admitted.len();
        let start = Instant::now();
        let mut sink = |_: Output<'_>| {};
        for (i, cands, view) in &admitted {
            t.decisions += cands.len();
            self.candidates.clone_from(cands);
            self.decide(records[*i], view, None, &mut sink);
        }
        t.decide_seconds = start.elapsed().as_secs_f64();
        t
    }
}
