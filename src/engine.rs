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
use crate::gate::{Gate, Verdict};
use crate::index::{Admissions, Foretold, IndexFields, IndexOf, TagIndices};
use crate::record::{FieldId, Layout, LayoutBuilder, RecordView};
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
    seen: crate::gate::Seen,
    /// Some rule has changes to take ([`Detector::take_changes`]).
    pub(crate) changed: bool,
}

/// Which rules a record is offered to, and what its index did to choose them
/// ([`Detector::choose`]).
#[derive(Debug, Default, Clone, Copy)]
struct Choice {
    /// What the text foretold of the index (`None` without a gate, or when the index was
    /// read first).
    foretold: Option<Foretold>,
    /// The index alone left no candidate.
    by_index: bool,
    /// The index was read before the search: the candidates are those it admits, and
    /// the record is counted; the parse need not place it again.
    admitted: bool,
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
    /// The last record named its own index. The next one then goes straight to reading
    /// its index: a stream is mostly of one kind, and on one whose records name their
    /// indices (an ECS stream) the first search would be wasted on each.
    last_named: bool,
    /// A layout of only the fields an index is read from, and their ids in it: a record
    /// that names its own index has it read with this before any search of a large
    /// pack's gate ([`Detector::choose_by_index`]).
    reader: Option<(Layout, IndexFields)>,
    /// Records whose index was read before the search, by the set of rules it admits
    /// (an unknown index's are in `foretold_records`): the rules a set does not admit
    /// count them as out of their indices.
    set_records: Vec<u64>,
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
        let reader = fields.map(|_| {
            let mut b = LayoutBuilder::new();
            let fields = IndexFields::register(&mut b);
            (b.build(), fields)
        });
        IndexGate {
            reader,
            set_records: Vec::new(),
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

    /// Records rule `r` was kept from by what their text foretold of their index, or by
    /// their index read before the search.
    fn foretold_out(&self, r: usize) -> u64 {
        let foretold: u64 = self
            .foretold
            .iter()
            .zip(&self.foretold_records)
            .filter(|(admits, _)| !admits[r])
            .map(|(_, n)| n)
            .sum();
        let read: u64 = self
            .set_records
            .iter()
            .enumerate()
            .filter(|(set, _)| {
                !self
                    .admissions
                    .set(*set as u32)
                    .get(r)
                    .copied()
                    .unwrap_or(true)
            })
            .map(|(_, n)| n)
            .sum();
        foretold + read
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
    /// admits, or (a large pack's record that names its own index) the index read before
    /// the search admits.
    fn choose(&mut self, text: &[u8], envelopes: bool) -> Choice {
        self.candidates.clear();
        if self.gate.is_none() {
            for (i, d) in self.rules.iter().enumerate() {
                if d.may_match(text) {
                    self.candidates.push(i as u32);
                }
            }
            return Choice::default();
        }
        self.next_generation();
        let Some(gate) = &self.gate else {
            return Choice::default();
        };
        let by_index_first = gate.decides_prefilters() && self.index.reader.is_some();
        let foreseen = self.index.foreseen && !self.index.last_named;
        let found = {
            let mut mark = marker(&mut self.stamp, self.generation, &mut self.candidates);
            let seen = &mut self.seen;
            match by_index_first {
                // A large pack: the first search decides a record that names no index of
                // its own; any other has its index read first.
                true => foreseen
                    .then(|| gate.open_first(text, &mut mark, seen))
                    .flatten(),
                false => Some(gate.open(text, &mut mark, seen, foreseen)),
            }
        };
        let Some(found) = found else {
            return self.choose_by_index(text, envelopes);
        };
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
                let opened = self.candidates.len();
                self.candidates.retain(|&r| admits[r as usize]);
                by_index = opened > 0 && self.candidates.is_empty();
            }
            foretold = Some(f);
        }
        self.narrow(text, &found);
        Choice {
            foretold,
            by_index,
            admitted: false,
        }
    }

    /// A large pack's record that may name its own index: the index is read first (a
    /// parse of only the fields it comes from), then only the literals of the rules it
    /// admits are searched for. A record outside every rule's indices costs no search
    /// for literals and no full parse.
    ///
    /// Sound: the index read here is the one the full parse reads (the same fields and
    /// derivation, [`IndexFields::read`]), and the search holds every literal of every
    /// rule that index admits ([`Gate::open_admitted`]); the rules it leaves out are
    /// counted out of their indices as the full path counts them.
    fn choose_by_index(&mut self, text: &[u8], envelopes: bool) -> Choice {
        self.candidates.clear();
        self.next_generation();
        let IndexGate {
            reader: Some((layout, fields)),
            host,
            admissions,
            buf,
            set_records,
            foretold_records,
            last_named,
            ..
        } = &mut self.index
        else {
            return self.choose_every(text);
        };
        let index = match RecordView::parse(text, layout, envelopes) {
            Ok(mut view) => {
                let envelope = envelopes
                    && (view.take_records().is_some() || view.eventbridge_detail(layout).is_some());
                match envelope {
                    false => Some(fields.read(&view, layout, host.as_deref(), buf)),
                    true => None,
                }
            }
            Err(_) => None,
        };
        // Not a JSON object, or an envelope to open: the full path decides (and reports).
        let Some((index, own)) = index else {
            return self.choose_every(text);
        };
        *last_named = own;
        let set = admissions.set_of(index);
        match (index, &set) {
            (IndexOf::Unknown, _) => {
                foretold_records[Foretold::Unknown as usize] += 1;
                self.stats.index_unknown += 1;
            }
            (IndexOf::Named(_), Ok(set)) => {
                let set = *set as usize;
                if set_records.len() <= set {
                    set_records.resize(set + 1, 0);
                }
                set_records[set] += 1;
            }
            (IndexOf::Named(_), Err(admits)) => {
                for (d, _) in self
                    .rules
                    .iter_mut()
                    .zip(admits.iter())
                    .filter(|(_, a)| !**a)
                {
                    d.stats.out_of_index += 1;
                }
            }
        }
        let admits: &[bool] = match &set {
            Ok(id) => admissions.set(*id),
            Err(admits) => admits,
        };
        if !admits.iter().any(|&a| a) {
            return Choice {
                foretold: None,
                by_index: true,
                admitted: true,
            };
        }
        let Some(gate) = &mut self.gate else {
            return Choice::default();
        };
        let mut candidate = marker(&mut self.stamp, self.generation, &mut self.candidates);
        let mut mark = |r: u32| {
            if admits.get(r as usize).copied().unwrap_or(false) {
                candidate(r);
            }
        };
        // A set past the first 1,024 index texts has no id: the search for every literal.
        let id = set.as_ref().map_or(u32::MAX, |id| *id);
        let found = gate.open_admitted(id, admits, text, &mut mark, &mut self.seen);
        drop(candidate);
        self.narrow(text, &found);
        Choice {
            foretold: None,
            by_index: false,
            admitted: true,
        }
    }

    /// The search for every literal, the index read after the parse.
    fn choose_every(&mut self, text: &[u8]) -> Choice {
        self.candidates.clear();
        self.next_generation();
        let Some(gate) = &self.gate else {
            return Choice::default();
        };
        let mut mark = marker(&mut self.stamp, self.generation, &mut self.candidates);
        let found = gate.open(text, &mut mark, &mut self.seen, false);
        drop(mark);
        self.index.last_named = found.names_itself();
        self.narrow(text, &found);
        Choice {
            foretold: self.index.fields.is_some().then_some(Foretold::AfterParse),
            by_index: false,
            admitted: false,
        }
    }

    /// Keeps the candidates whose prefilters pass, decided by what the gate's search
    /// found where it can, else by each rule's own.
    fn narrow(&mut self, text: &[u8], found: &crate::gate::Found) {
        let Some(gate) = &self.gate else { return };
        self.candidates.sort_unstable();
        let rules = &self.rules;
        let seen = &self.seen;
        self.candidates
            .retain(|&r| match gate.passes(r, found, seen) {
                Verdict::Passes => true,
                Verdict::Fails => false,
                Verdict::Keys => rules[r as usize].keys_may_match(text),
                Verdict::Own => rules[r as usize].may_match(text),
            });
    }

    fn next_generation(&mut self) {
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            self.stamp.iter_mut().for_each(|s| *s = 0);
            self.generation = 1;
        }
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
        let (index, _) = fields.read(view, &self.layout, host.as_deref(), buf);
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
        let mut choice = Choice::default();
        if open_all {
            self.candidates.clear();
            self.candidates.extend(0..self.rules.len() as u32);
        } else {
            choice = self.choose(text, envelopes);
            if self.candidates.is_empty() {
                self.stats.records += 1;
                match choice.by_index {
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
        if !choice.admitted && !self.admit(&view, choice.foretold) {
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

/// Makes `r` a candidate of the current record (`generation`), once.
fn marker<'a>(
    stamp: &'a mut [u32],
    generation: u32,
    candidates: &'a mut Vec<u32>,
) -> impl FnMut(u32) + 'a {
    move |r: u32| {
        if let Some(s) = stamp.get_mut(r as usize) {
            if *s != generation {
                *s = generation;
                candidates.push(r);
            }
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
        let mut chosen: Vec<(usize, Vec<u32>, Choice)> = Vec::new();
        let start = Instant::now();
        for (i, text) in records.iter().enumerate() {
            let choice = self.choose(text, false);
            if !self.candidates.is_empty() {
                chosen.push((i, self.candidates.clone(), choice));
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
            if f.admitted || self.admit(view, f.foretold) {
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
