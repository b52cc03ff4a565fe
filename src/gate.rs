//! The pack's gate: which rules could match a record, from one search of its text for
//! every rule's gate literals, before any parse.
//!
//! A rule's gate is one of its prefilter's groups (a record it can match holds one of the
//! group's literals, or an escape that could hide one). Each rule takes a group of values
//! before one of keys (`query::literal`'s `key_of`), then the group whose literals the
//! most rules share (then the one with the longest shortest literal): rules of one data
//! source share literals (`network`, a dataset name), so the literals stay few however
//! many rules there are. A large pack, whose search holds every group of values anyway,
//! takes the group the fewest rules share instead: the literal that opens the rule is then
//! rarer in records (an action's name, not its service's), and fewer rules are judged a
//! record (over the CloudTrail mix, 1.9 instead of 6.1). Each rule the gate lets through
//! then runs its whole prefilter, so the choice changes only the cost, never a decision.
//!
//! The search finds every occurrence of every literal ([`Search::new`] chooses how):
//! - up to 64 literals, a vector search: natively Aho-Corasick's (Teddy), in WebAssembly
//!   with SIMD (the component, the npm package) a Teddy of our own on `simd128`
//!   ([`Teddy`]);
//! - past that, and wherever there is no vector search (the Fluent Bit module, run by
//!   WAMR's interpreter): up to 256 literals, Wu and Manber's skip search over byte pairs
//!   ([`wu_manber`]), about a third of a step a byte of CloudTrail; past 256, a dense
//!   automaton of our own ([`dfa`]), one table lookup a byte.
//!
//! When the pack's rules read only their own indices, the same search also looks for the
//! keys a record's index is told by ([`crate::index::evidence`]), so what the text
//! foretells of the index costs no pass of its own. A large pack also has a *first
//! search*: the literals of only the rules that a record naming no index of its own can
//! reach (the host's index, or raw CloudTrail's, or an unknown one), with the evidence.
//! Most records of a collector name no index (raw CloudTrail, a Fluent Bit tail), and for
//! Elastic's set that search holds 154 literals instead of 1,427, few and long enough to
//! skip. A record that may name its own index has its index read instead, and is then
//! searched for only the literals of the rules that index admits ([`Gate::open_admitted`]).

use crate::query::Prefilter;

mod dfa;
mod wu_manber;

/// The most literals aho-corasick's vector search (Teddy) takes; past it the gate keeps
/// the literals' quotes (see [`crate::query::unquoted`]).
const VECTOR_LITERALS: usize = 64;

/// The most literals the skip search ([`wu_manber::WuManber`]) takes; past it the dense
/// automaton ([`dfa::Dfa`]). Over real CloudTrail, the 149 literals of the CloudTrail rules
/// of Elastic's set take 0.32 steps and 0.11 literal comparisons a byte, where the whole
/// set's 1,422 literals take 0.57 steps and 2.2 comparisons: a byte pair says less and
/// less as literals grow many, and the automaton's flat cost a byte wins.
const SKIP_LITERALS: usize = 256;

/// The shortest literal the skip search takes: its window, hence its longest skip.
const SKIP_WINDOW: usize = 4;

/// The gate of a pack.
#[derive(Debug)]
pub(crate) struct Gate {
    /// The search for every literal. With a first search it is built when a record first
    /// needs it (one that names its own index): a collector of raw CloudTrail never pays
    /// for it (Elastic's set: a 4.9 MB automaton, a sixth of the time to load the set).
    search: std::cell::OnceCell<Option<Search>>,
    /// Every literal, by id.
    literals: Vec<Vec<u8>>,
    /// The search a record takes first when its index can be foretold without the parse
    /// (see [`Gate::new`]).
    first: Option<First>,
    /// For each literal, the rules it opens.
    rules_of: Vec<Vec<u32>>,
    /// Rules with no gate: offered every record.
    always: Vec<u32>,
    /// How many rules the pack has.
    rules: u32,
    /// Whether an escape could hide a literal, so a record with escapes opens every rule
    /// (see [`crate::query::Writer`]).
    escapes_hide: bool,
    /// For each literal, which index evidence it is ([`Found`]'s bits; 0 for none).
    evidence: Vec<u8>,
    /// When the search holds every literal of every rule's groups of values and its gate
    /// (a large pack, whose literals keep their quotes): those groups as literal ids. A
    /// rule's prefilter is then decided from what the search found, but for its groups of
    /// keys (`keys_left`), which the rule judges itself.
    exact: Option<Vec<Vec<Vec<u32>>>>,
    /// With `exact`: each rule has groups of keys the search leaves out (see
    /// [`crate::query::Prefilter::key_groups`]), which its own prefilter then judges.
    keys_left: Vec<bool>,
    /// The search of each set of rules an index admits ([`Gate::open_admitted`]), by the
    /// set's id in [`crate::index::Admissions`]; built when a record of it first comes.
    admitted: Vec<Option<Admitted>>,
    /// What writes the texts, for the escapes of the searches built later.
    writer: crate::query::Writer,
}

/// The most sets of admitted rules that get a search of their own; a record of any
/// other set takes the search for every literal (a stream names a few indices, and each
/// search holds a 128 KiB table or more).
const ADMITTED_SEARCHES: usize = 32;

/// The search for the rules one index admits.
#[derive(Debug)]
enum Admitted {
    /// Their literals, by id in the gate's numbering, found by a search of their own.
    Own(First),
    /// They have no literal (every one of them reads every record).
    Nothing,
    /// They hold too many of the literals for a search of their own to pay: the search
    /// for every literal.
    Every,
}

/// The literals a search found in the current record, by id: a list, to forget them, and
/// a set, to ask of any literal in one load ([`Gate::passes`] asks for every literal of a
/// rule's groups, dozens for a rule that lists many actions).
#[derive(Debug, Default)]
pub(crate) struct Seen {
    list: Vec<u32>,
    bits: Vec<u64>,
}

impl Seen {
    /// Forgets every literal (only those found are cleared).
    pub(crate) fn clear(&mut self) {
        for &l in &self.list {
            if let Some(w) = self.bits.get_mut(l as usize / 64) {
                *w = 0;
            }
        }
        self.list.clear();
    }

    fn insert(&mut self, l: u32) {
        let (w, bit) = (l as usize / 64, 1u64 << (l % 64));
        if self.bits.len() <= w {
            self.bits.resize(w + 1, 0);
        }
        if self.bits[w] & bit == 0 {
            self.bits[w] |= bit;
            self.list.push(l);
        }
    }

    fn contains(&self, l: u32) -> bool {
        self.bits
            .get(l as usize / 64)
            .is_some_and(|w| w & (1 << (l % 64)) != 0)
    }
}

/// What the search found says of a rule's prefilter ([`Gate::passes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Passes,
    Fails,
    /// Every group the search holds is there; the rule's groups of keys are to be judged
    /// ([`crate::query::Prefilter::keys_may_match`]).
    Keys,
    /// The rule's whole prefilter is to judge.
    Own,
}

/// The gate's first search ([`Gate::new`]).
#[derive(Debug)]
struct First {
    search: Search,
    /// Its literals by id in the gate's numbering.
    ids: Vec<u32>,
    /// Whether an escape could hide one of its literals (as [`Gate`]'s, for these).
    escapes_hide: bool,
}

/// What the search found of the index evidence literals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Found {
    bits: u8,
    /// An escape could hide a literal: every rule was opened, and only each rule's own
    /// prefilter can judge it.
    everything: bool,
}

const NAMES_ITSELF: u8 = 1;
const CLOUDTRAIL_SOURCE: u8 = 2;
const CLOUDTRAIL_NAME: u8 = 4;

impl Found {
    /// The record may name its own index (a literal, or an escape that could hide one).
    pub(crate) fn names_itself(self) -> bool {
        self.bits & NAMES_ITSELF != 0
    }
    /// Both keys of a raw CloudTrail record are in the text.
    pub(crate) fn cloudtrail_keys(self) -> bool {
        self.bits & (CLOUDTRAIL_SOURCE | CLOUDTRAIL_NAME) == CLOUDTRAIL_SOURCE | CLOUDTRAIL_NAME
    }
}

#[derive(Debug)]
enum Search {
    /// Every occurrence, by restarting a leftmost-first search one byte after each match
    /// start (which keeps the automaton's fast literal prefilter); two literals that
    /// occur at the same place are one a prefix of the other, and `same_start` lists
    /// those to check there.
    AhoCorasick {
        automaton: aho_corasick::AhoCorasick,
        literals: Vec<Vec<u8>>,
        same_start: Vec<Vec<u32>>,
    },
    /// Every occurrence in one pass of a dense automaton of our own ([`dfa::Dfa`]).
    Dfa(Box<dfa::Dfa>),
    /// Every occurrence, skipping by byte pairs ([`wu_manber::WuManber`]).
    WuManber(Box<wu_manber::WuManber>),
    #[cfg_attr(
        not(all(target_arch = "wasm32", target_feature = "simd128")),
        allow(dead_code)
    )]
    Teddy(Box<Teddy>),
}

/// Each rule's gate: a group of values before one of keys (`keys`), then the group whose
/// literals the most rules share (`shared`), or with `fewest` the fewest, then the one
/// with the longest shortest literal. A call of its own: loading a pack runs near the
/// Fluent Bit module's stack budget ([`crate::host::STACK_NEED`]).
#[inline(never)]
fn choose(
    groups: &[Vec<Vec<&[u8]>>],
    shared: &hashbrown::HashMap<&[u8], usize>,
    keys: &[Vec<bool>],
    fewest: bool,
) -> Vec<Option<usize>> {
    let is_key = |r: usize, g: usize| keys[r].get(g).copied().unwrap_or(false);
    groups
        .iter()
        .enumerate()
        .map(|(r, rule)| {
            (0..rule.len()).max_by_key(|&g| {
                let lits = &rule[g];
                let sharing = lits
                    .iter()
                    .map(|l| shared.get(l).copied().unwrap_or(0))
                    .min()
                    .map(|s| if fewest { usize::MAX - s } else { s });
                let length = lits.iter().map(|l| l.len()).min();
                (!is_key(r, g), sharing, length)
            })
        })
        .collect()
}

impl Gate {
    /// The gate of rules with these prefilters (`None`: no prefilter, every record); with
    /// `index_evidence`, the search also reports the index evidence literals.
    ///
    /// `foreseen`: the rules an index foretold without the parse can admit (a record that
    /// names no index of its own: the host's index, or raw CloudTrail, or unknown). A large
    /// pack then searches such a record first for only their literals and the evidence, a
    /// far smaller search (Elastic's set: 149 literals for its 53 CloudTrail rules, against
    /// 1,422), and searches for every literal only when the record turns out to name its
    /// own index ([`Gate::open`]).
    pub(crate) fn new(
        prefilters: &[Option<&Prefilter>],
        index_evidence: bool,
        foreseen: Option<&[bool]>,
    ) -> Option<Gate> {
        let groups: Vec<Vec<Vec<&[u8]>>> = prefilters
            .iter()
            .map(|p| p.map(|p| p.groups()).unwrap_or_default())
            .collect();
        let mut shared: hashbrown::HashMap<&[u8], usize> = hashbrown::HashMap::new();
        for rule in &groups {
            let mut seen: Vec<&[u8]> = rule.iter().flatten().copied().collect();
            seen.sort_unstable();
            seen.dedup();
            for lit in seen {
                *shared.entry(lit).or_default() += 1;
            }
        }
        // A field's key is in most records of its source: a group of values first.
        let keys: Vec<Vec<bool>> = prefilters
            .iter()
            .map(|p| p.map(|p| p.key_groups()).unwrap_or_default())
            .collect();
        let is_key = |r: usize, g: usize| keys[r].get(g).copied().unwrap_or(false);
        let mut choice = choose(&groups, &shared, &keys, false);
        // Without their quotes when that leaves few enough literals for a vector search,
        // else as they are (see `query::unquoted`).
        let mut bare: Vec<&[u8]> = groups
            .iter()
            .zip(&choice)
            .filter_map(|(rule, c)| c.and_then(|g| rule.get(g)))
            .flat_map(|g| g.iter().map(|l| crate::query::unquoted(l)))
            .collect();
        bare.sort_unstable();
        bare.dedup();
        let specials: Vec<(&[u8], u8)> = match index_evidence {
            false => Vec::new(),
            true => {
                use crate::index::evidence;
                let mut v: Vec<(&[u8], u8)> = evidence::NAMES_ITSELF
                    .iter()
                    .map(|l| (*l, NAMES_ITSELF))
                    .collect();
                v.push((evidence::CLOUDTRAIL_SOURCE, CLOUDTRAIL_SOURCE));
                v.push((evidence::CLOUDTRAIL_NAME, CLOUDTRAIL_NAME));
                v
            }
        };
        let strip = bare.len() + specials.len() <= VECTOR_LITERALS;
        // Past the vector search's literals the search holds every group of values (see
        // `exact` below), so the group a rule is opened by costs the search nothing: the one
        // fewest rules share, which a record holds least often (a service's name opens every
        // rule of the service, an action's a few), and so opens the fewest rules to judge.
        if !strip {
            choice = choose(&groups, &shared, &keys, true);
        }
        let chosen: Vec<Option<&Vec<&[u8]>>> = groups
            .iter()
            .zip(&choice)
            .map(|(rule, c)| c.and_then(|g| rule.get(g)))
            .collect();
        let mut literals: Vec<Vec<u8>> = Vec::new();
        let mut rules_of: Vec<Vec<u32>> = Vec::new();
        // Each literal's id, by its text (a pack has over a thousand).
        let mut ids: hashbrown::HashMap<Vec<u8>, u32> = hashbrown::HashMap::new();
        let mut id_of = |lit: &[u8], literals: &mut Vec<Vec<u8>>, rules_of: &mut Vec<Vec<u32>>| {
            *ids.entry(lit.to_vec()).or_insert_with(|| {
                literals.push(lit.to_vec());
                rules_of.push(Vec::new());
                (literals.len() - 1) as u32
            })
        };
        let mut always = Vec::new();
        for (i, chosen) in chosen.iter().enumerate() {
            let Some(lits) = chosen else {
                always.push(i as u32);
                continue;
            };
            for lit in lits.iter() {
                let lit = match strip {
                    true => crate::query::unquoted(lit),
                    false => lit,
                };
                let p = id_of(lit, &mut literals, &mut rules_of);
                rules_of[p as usize].push(i as u32);
            }
        }
        // Past the vector search's literals, every literal of every group of values (and
        // the chosen group, whatever it is) is searched as it is, so the search alone
        // decides each prefilter but for its keys (`Gate::passes`).
        let exact: Option<Vec<Vec<Vec<u32>>>> = (!strip).then(|| {
            groups
                .iter()
                .enumerate()
                .map(|(r, rule)| {
                    rule.iter()
                        .enumerate()
                        .filter(|&(g, _)| !is_key(r, g) || choice[r] == Some(g))
                        .map(|(_, g)| {
                            g.iter()
                                .map(|lit| id_of(lit, &mut literals, &mut rules_of))
                                .collect()
                        })
                        .collect()
                })
                .collect()
        });
        // The rules with a group of keys the search leaves out.
        let keys_left: Vec<bool> = (0..groups.len())
            .map(|r| (0..groups[r].len()).any(|g| is_key(r, g) && choice[r] != Some(g)))
            .collect();
        let mut evidence = Vec::new();
        for (lit, bit) in specials {
            let p = id_of(lit, &mut literals, &mut rules_of) as usize;
            evidence.resize(literals.len(), 0);
            evidence[p] |= bit;
        }
        evidence.resize(literals.len(), 0);
        // The first search: every literal of every foreseen rule's prefilter, and the
        // evidence. Only when each prefilter is decided by the search (`exact`), so a rule
        // the first search leaves out is decided all the same.
        let first = match (&exact, foreseen) {
            (Some(exact), Some(foreseen)) if index_evidence => {
                let mut ids: Vec<u32> = exact
                    .iter()
                    .enumerate()
                    .filter(|(r, _)| foreseen.get(*r).copied().unwrap_or(true))
                    .flat_map(|(_, groups)| groups.iter().flatten().copied())
                    .chain((0..literals.len() as u32).filter(|&l| evidence[l as usize] != 0))
                    .collect();
                ids.sort_unstable();
                ids.dedup();
                // Worth a search of its own only when far smaller: a record that names its
                // own index pays for both.
                let few = ids.len() * 3 <= literals.len() * 2;
                let search = few
                    .then(|| {
                        Search::new(ids.iter().map(|&l| literals[l as usize].clone()).collect())
                    })
                    .flatten();
                search.map(|search| First {
                    search,
                    ids,
                    escapes_hide: true,
                })
            }
            _ => None,
        };
        let search = std::cell::OnceCell::new();
        if first.is_none() {
            let _ = search.set(Some(Search::new(literals.clone())?));
        }
        Some(Gate {
            search,
            literals,
            first,
            rules_of,
            always,
            rules: prefilters.len() as u32,
            escapes_hide: true,
            evidence,
            exact,
            keys_left,
            admitted: Vec::new(),
            writer: crate::query::Writer::default(),
        })
    }

    /// Whether each rule's prefilter is decided by the search (a large pack's gate; its
    /// groups of keys aside):
    /// then a record whose index is read before any search ([`Gate::open_admitted`]) is
    /// searched for only the literals of the rules that index admits.
    pub(crate) fn decides_prefilters(&self) -> bool {
        self.exact.is_some()
    }

    /// Whether the search for every literal was ever built (a record took it).
    #[cfg(test)]
    pub(crate) fn built_every_literal_search(&self) -> bool {
        self.search.get().is_some()
    }

    /// Whether a record that names no index of its own is searched first for fewer
    /// literals.
    #[cfg(test)]
    pub(crate) fn has_first_search(&self) -> bool {
        self.first.is_some()
    }

    /// Assumes the text comes from `writer`: escapes need no look when it writes every
    /// literal as itself (each search's own: one literal of a rule of another index does
    /// not cost the first search an escape search).
    pub(crate) fn assume(&mut self, writer: crate::query::Writer) {
        let hide = |l: &[Vec<u8>]| !l.iter().all(|l| writer.writes_as_itself(l));
        self.writer = writer;
        self.admitted.clear();
        self.escapes_hide = hide(&self.literals);
        if let Some(first) = &mut self.first {
            first.escapes_hide = hide(first.search.literals());
        }
    }

    /// Whether rule `r`'s prefilter passes, decided from the literals the search found
    /// (`found`, from [`Gate::open`]): [`Verdict::Own`] when the search cannot decide it
    /// (no exact search, or the text had an escape that could hide a literal), and
    /// [`Verdict::Keys`] when it found every group of the rule it holds and left the
    /// rule's groups of keys out. Sound as the prefilter is: a group holds when one of its
    /// literals is in the text, and no escape can hide one here.
    pub(crate) fn passes(&self, r: u32, found: &Found, seen: &Seen) -> Verdict {
        let Some(exact) = &self.exact else {
            return Verdict::Own;
        };
        if found.everything {
            return Verdict::Own;
        }
        let Some(groups) = exact.get(r as usize) else {
            return Verdict::Own;
        };
        let found = groups.iter().all(|g| g.iter().any(|&l| seen.contains(l)));
        match found {
            false => Verdict::Fails,
            true if self.keys_left.get(r as usize).copied().unwrap_or(false) => Verdict::Keys,
            true => Verdict::Passes,
        }
    }

    /// Calls `open` with every rule the text lets through, possibly more than once, and
    /// says which index evidence it found; `seen` gets the literals found when the search
    /// decides the prefilters ([`Gate::passes`]).
    ///
    /// `foreseen`: the record's index, unless it names its own, is one of those the first
    /// search was built for ([`Gate::new`]; the host's index has not changed since). The
    /// first search then runs, and its answer stands unless the record names its own index:
    /// every rule an index it foretells admits has all its literals in it, and the rules it
    /// leaves out are then kept out by that index anyway. A record that names its own
    /// index is searched again, for every literal (where no index is read first: see
    /// [`Gate::open_first`]).
    pub(crate) fn open(
        &self,
        text: &[u8],
        open: &mut dyn FnMut(u32),
        seen: &mut Seen,
        foreseen: bool,
    ) -> Found {
        let mut found = Found::default();
        seen.clear();
        // Unless a search could be done (an escape could hide a literal, for one): every
        // rule looks, and the record may name its own index.
        let everything = !self.search(text, open, &mut found, seen, foreseen);
        if everything {
            (0..self.rules).for_each(open);
            found.bits = NAMES_ITSELF | CLOUDTRAIL_SOURCE | CLOUDTRAIL_NAME;
            found.everything = true;
        } else {
            self.always.iter().for_each(|&r| open(r));
        }
        found
    }
}

impl Gate {
    /// The first search alone ([`Gate::new`]): what it found, or `None` when it cannot
    /// decide the record (it may name its own index, an escape could hide one of its
    /// literals, or the pack has no first search). The rules it opened are then to be
    /// forgotten: the record's index is to be read, and [`Gate::open_admitted`] decides.
    pub(crate) fn open_first(
        &self,
        text: &[u8],
        open: &mut dyn FnMut(u32),
        seen: &mut Seen,
    ) -> Option<Found> {
        let first = self.first.as_ref()?;
        if first.escapes_hide && crate::query::has_escape(text) {
            return None;
        }
        let mut found = Found::default();
        seen.clear();
        if !self.run(
            &first.search,
            Some(&first.ids),
            text,
            open,
            &mut found,
            seen,
        ) || found.names_itself()
        {
            return None;
        }
        self.always.iter().for_each(|&r| open(r));
        Some(found)
    }

    /// Calls `open` with every rule the text lets through among those its index admits,
    /// `admits` (set `set` of [`crate::index::Admissions`]; rules outside it may be opened
    /// too, and are to be left out), searching for only their literals. Only for a gate
    /// that [decides prefilters](Gate::decides_prefilters): `seen` gets the literals found,
    /// for [`Gate::passes`].
    ///
    /// Sound as the first search is: each admitted rule's every literal is in the search,
    /// so the literals found decide its prefilter, and a rule the search leaves out is one
    /// the index keeps out anyway.
    pub(crate) fn open_admitted(
        &mut self,
        set: u32,
        admits: &[bool],
        text: &[u8],
        open: &mut dyn FnMut(u32),
        seen: &mut Seen,
    ) -> Found {
        let set = set as usize;
        if set < ADMITTED_SEARCHES && self.admitted.get(set).is_none_or(Option::is_none) {
            let built = self.admitted_search(admits);
            if self.admitted.len() <= set {
                self.admitted.resize_with(set + 1, || None);
            }
            self.admitted[set] = Some(built);
        }
        let mut found = Found::default();
        seen.clear();
        let searched = match self.admitted.get(set) {
            Some(Some(Admitted::Own(own))) => {
                !(own.escapes_hide && crate::query::has_escape(text))
                    && self.run(&own.search, Some(&own.ids), text, open, &mut found, seen)
            }
            Some(Some(Admitted::Nothing)) => true,
            _ => self.search(text, open, &mut found, seen, false),
        };
        if searched {
            self.always.iter().for_each(|&r| open(r));
        } else {
            (0..self.rules).for_each(open);
            found.everything = true;
        }
        found.bits = 0;
        found
    }

    /// The search for the literals of the rules `admits` names.
    fn admitted_search(&self, admits: &[bool]) -> Admitted {
        let Some(exact) = &self.exact else {
            return Admitted::Every;
        };
        let mut ids: Vec<u32> = exact
            .iter()
            .enumerate()
            .filter(|(r, _)| admits.get(*r).copied().unwrap_or(true))
            .flat_map(|(_, groups)| groups.iter().flatten().copied())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.is_empty() {
            return Admitted::Nothing;
        }
        // Worth a search of its own only when far smaller than the one for every literal.
        if ids.len() * 3 > self.literals.len() * 2 {
            return Admitted::Every;
        }
        let literals: Vec<Vec<u8>> = ids
            .iter()
            .map(|&l| self.literals[l as usize].clone())
            .collect();
        let escapes_hide = !literals.iter().all(|l| self.writer.writes_as_itself(l));
        match Search::new(literals) {
            Some(search) => Admitted::Own(First {
                search,
                ids,
                escapes_hide,
            }),
            None => Admitted::Every,
        }
    }

    /// The first search when `foreseen` allows, then (when the record names its own index)
    /// or else the search for every literal; false when a search could not be done, or an
    /// escape in the text could hide one of its literals.
    fn search(
        &self,
        text: &[u8],
        open: &mut dyn FnMut(u32),
        found: &mut Found,
        seen: &mut Seen,
        foreseen: bool,
    ) -> bool {
        let hidden = |hide: bool| hide && crate::query::has_escape(text);
        if let (Some(first), true) = (&self.first, foreseen) {
            if hidden(first.escapes_hide) {
                return false;
            }
            if self.run(&first.search, Some(&first.ids), text, open, found, seen)
                && !found.names_itself()
            {
                return true;
            }
            // Named its own index: every literal, from the start. What the first search
            // opened is decided by what this one finds.
            found.bits = 0;
            seen.clear();
        }
        let all = self
            .search
            .get_or_init(|| Search::new(self.literals.clone()));
        match all {
            Some(all) => !hidden(self.escapes_hide) && self.run(all, None, text, open, found, seen),
            None => false,
        }
    }

    /// Runs `search` over `text` (its literal `l` is `ids[l]`, or `l`), opening the rules
    /// of each literal found and noting the evidence; false when it could not be done.
    fn run(
        &self,
        search: &Search,
        ids: Option<&[u32]>,
        text: &[u8],
        open: &mut dyn FnMut(u32),
        found: &mut Found,
        seen: &mut Seen,
    ) -> bool {
        let collect = self.exact.is_some();
        search.each(text, &mut |l| {
            let lit = ids.map_or(l, |ids| ids[l] as usize);
            found.bits |= self.evidence[lit];
            if collect {
                seen.insert(lit as u32);
            }
            for &r in &self.rules_of[lit] {
                open(r);
            }
        })
    }
}

impl Search {
    fn literals(&self) -> &[Vec<u8>] {
        match self {
            Search::AhoCorasick { literals, .. } => literals,
            Search::Dfa(d) => d.literals(),
            Search::WuManber(w) => w.literals(),
            Search::Teddy(t) => &t.literals,
        }
    }

    fn new(literals: Vec<Vec<u8>>) -> Option<Search> {
        // Teddy's buckets hold a few literals each; past the vector search's literals a
        // candidate position would check dozens, and the DFA is cheaper.
        if cfg!(all(target_arch = "wasm32", target_feature = "simd128"))
            && literals.len() <= VECTOR_LITERALS
        {
            if let Some(t) = Teddy::new(&literals) {
                return Some(Search::Teddy(Box::new(t)));
            }
        }
        // Past them, and wherever there is no vector search (the Fluent Bit module): a skip
        // search over byte pairs for a few hundred literals, or one pass of a dense
        // automaton for more (see `SKIP_LITERALS`). Natively, up to 64 literals,
        // aho-corasick's vectorised search is faster.
        let vector_search = !cfg!(target_arch = "wasm32") || cfg!(target_feature = "simd128");
        if literals.len() > VECTOR_LITERALS || !vector_search {
            if literals.len() <= SKIP_LITERALS {
                if let Some(w) = wu_manber::WuManber::new(literals.clone(), SKIP_WINDOW) {
                    return Some(Search::WuManber(Box::new(w)));
                }
            }
            if let Some(d) = dfa::Dfa::new(literals.clone()) {
                return Some(Search::Dfa(Box::new(d)));
            }
        }
        let same_start = literals
            .iter()
            .enumerate()
            .map(|(i, p)| {
                (0..literals.len())
                    .filter(|&j| {
                        j != i && (literals[j].starts_with(p) || p.starts_with(&literals[j]))
                    })
                    .map(|j| j as u32)
                    .collect()
            })
            .collect();
        // A DFA: one table lookup a byte, which is what the search costs where there is no
        // vector search (past 64 literals, and in WAMR's interpreter, where an NFA's
        // transitions cost several times more instructions a byte); the NFA when the DFA
        // would be too large.
        let builder = |kind| {
            aho_corasick::AhoCorasick::builder()
                .match_kind(aho_corasick::MatchKind::LeftmostFirst)
                .kind(kind)
                .build(&literals)
                .ok()
        };
        let automaton =
            builder(Some(aho_corasick::AhoCorasickKind::DFA)).or_else(|| builder(None))?;
        Some(Search::AhoCorasick {
            automaton,
            literals,
            same_start,
        })
    }

    /// Calls `found` with the index of every literal the text holds (possibly more than
    /// once). False when the search could not be done (then every rule looks).
    fn each(&self, text: &[u8], found: &mut dyn FnMut(usize)) -> bool {
        match self {
            Search::AhoCorasick {
                automaton,
                literals,
                same_start,
            } => {
                let mut at = 0;
                while at < text.len() {
                    let input = aho_corasick::Input::new(text).span(at..text.len());
                    let m = match automaton.try_find(input) {
                        Ok(Some(m)) => m,
                        Ok(None) => break,
                        Err(_) => return false,
                    };
                    let p = m.pattern().as_usize();
                    found(p);
                    let here = &text[m.start()..];
                    for &q in &same_start[p] {
                        if here.starts_with(&literals[q as usize]) {
                            found(q as usize);
                        }
                    }
                    at = m.start() + 1;
                }
                true
            }
            Search::Dfa(d) => {
                d.each(text, found);
                true
            }
            Search::WuManber(w) => {
                w.each(text, found);
                true
            }
            Search::Teddy(t) => {
                t.each(text, found);
                true
            }
        }
    }
}

/// Teddy (from Hyperscan, as in the aho-corasick crate): the literals go into 8 buckets;
/// for each of their first 3 bytes, two 16-entry tables give the buckets whose literals
/// have that low nibble and that high nibble there. One SIMD lookup (`swizzle`) per
/// table finds, for 16 text positions at once, the buckets whose literals could start
/// there; each candidate is then checked against its bucket's literals.
#[derive(Debug, Clone)]
pub(crate) struct Teddy {
    literals: Vec<Vec<u8>>,
    buckets: [Vec<u32>; 8],
    /// For fingerprint byte `p`: the buckets by low nibble, then by high nibble.
    low: [[u8; 16]; 3],
    high: [[u8; 16]; 3],
}

impl Teddy {
    /// Needs literals of at least 3 bytes.
    pub(crate) fn new(literals: &[Vec<u8>]) -> Option<Teddy> {
        if literals.is_empty() || literals.iter().any(|l| l.len() < 3) {
            return None;
        }
        // Literals in order, cut into 8 runs: ones that share a beginning share a bucket,
        // so a bucket's fingerprints stay few.
        let mut order: Vec<u32> = (0..literals.len() as u32).collect();
        order.sort_by(|&a, &b| literals[a as usize].cmp(&literals[b as usize]));
        let mut buckets: [Vec<u32>; 8] = Default::default();
        for (k, &l) in order.iter().enumerate() {
            buckets[k * 8 / order.len()].push(l);
        }
        let mut low = [[0u8; 16]; 3];
        let mut high = [[0u8; 16]; 3];
        for (b, bucket) in buckets.iter().enumerate() {
            for &l in bucket {
                for p in 0..3 {
                    let byte = literals[l as usize][p];
                    low[p][usize::from(byte & 0xF)] |= 1 << b;
                    high[p][usize::from(byte >> 4)] |= 1 << b;
                }
            }
        }
        Some(Teddy {
            literals: literals.to_vec(),
            buckets,
            low,
            high,
        })
    }

    /// The buckets whose literals could start at `at` (one position, without SIMD).
    fn candidates(&self, text: &[u8], at: usize) -> u8 {
        let Some(three) = text.get(at..at + 3) else {
            return 0;
        };
        let mut bits = 0xFF;
        for (p, &byte) in three.iter().enumerate() {
            bits &= self.low[p][usize::from(byte & 0xF)] & self.high[p][usize::from(byte >> 4)];
        }
        bits
    }

    /// Reports the literals of the buckets in `bits` that start at `at`.
    fn check(&self, text: &[u8], at: usize, mut bits: u8, found: &mut dyn FnMut(usize)) {
        let here = &text[at..];
        while bits != 0 {
            let b = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            for &l in &self.buckets[b] {
                if here.starts_with(&self.literals[l as usize]) {
                    found(l as usize);
                }
            }
        }
    }

    /// Calls `found` with every literal at every place it starts.
    pub(crate) fn each(&self, text: &[u8], found: &mut dyn FnMut(usize)) {
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        let at = self.each_simd(text, found);
        #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
        let at = 0;
        for pos in at..text.len() {
            let bits = self.candidates(text, pos);
            if bits != 0 {
                self.check(text, pos, bits, found);
            }
        }
    }

    /// The SIMD part of [`Teddy::each`]: 16 positions a step while 18 bytes remain;
    /// returns where it stopped.
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    fn each_simd(&self, text: &[u8], found: &mut dyn FnMut(usize)) -> usize {
        use core::arch::wasm32::*;
        let table = |t: &[u8; 16]| -> v128 {
            // SAFETY: 16 readable bytes.
            unsafe { v128_load(t.as_ptr() as *const v128) }
        };
        let (l0, l1, l2) = (
            table(&self.low[0]),
            table(&self.low[1]),
            table(&self.low[2]),
        );
        let (h0, h1, h2) = (
            table(&self.high[0]),
            table(&self.high[1]),
            table(&self.high[2]),
        );
        let nibble = u8x16_splat(0x0F);
        let look = |lo: v128, hi: v128, c: v128| {
            v128_and(
                u8x16_swizzle(lo, v128_and(c, nibble)),
                u8x16_swizzle(hi, u8x16_shr(c, 4)),
            )
        };
        let mut at = 0;
        while at + 18 <= text.len() {
            // SAFETY: `at + 2 + 16 <= len`: the three loads read inside the text.
            let (c0, c1, c2) = unsafe {
                let p = text.as_ptr().add(at);
                (
                    v128_load(p as *const v128),
                    v128_load(p.add(1) as *const v128),
                    v128_load(p.add(2) as *const v128),
                )
            };
            let hits = v128_and(
                look(l0, h0, c0),
                v128_and(look(l1, h1, c1), look(l2, h2, c2)),
            );
            if v128_any_true(hits) {
                let mut bytes = [0u8; 16];
                // SAFETY: 16 writable bytes.
                unsafe { v128_store(bytes.as_mut_ptr() as *mut v128, hits) };
                for (k, &bits) in bytes.iter().enumerate() {
                    if bits != 0 {
                        self.check(text, at + k, bits, found);
                    }
                }
            }
            at += 16;
        }
        at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A search over one text, reporting to the callback.
    type Each<'a> = &'a dyn Fn(&mut dyn FnMut(usize));

    /// Every search the gate can choose finds every occurrence of every literal, as a
    /// naive search does: random literals (short and long, sharing prefixes and suffixes,
    /// quotes, backslashes, NUL and 0xFF) over random texts of the same bytes.
    #[test]
    fn every_search_finds_every_occurrence_of_every_literal() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move |m: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % m as u64) as usize
        };
        let alphabet = b"abcdefgh\"\\:{}.-_AB\x00\xff";
        let mut tried = [0; 4];
        for round in 0..4_000 {
            let few = 2 + next(8);
            let shortest = 1 + next(6);
            let literals: Vec<Vec<u8>> = (0..1 + next(40))
                .map(|_| {
                    let len = shortest + next(7);
                    (0..len).map(|_| alphabet[next(few)]).collect()
                })
                .collect();
            let text: Vec<u8> = (0..next(300)).map(|_| alphabet[next(few)]).collect();
            let mut want = Vec::new();
            for pos in 0..text.len() {
                for (l, lit) in literals.iter().enumerate() {
                    if text[pos..].starts_with(lit) {
                        want.push(l);
                    }
                }
            }
            want.sort_unstable();
            let mut check = |kind: usize, each: Each<'_>| {
                let mut got = Vec::new();
                each(&mut |l| got.push(l));
                got.sort_unstable();
                assert_eq!(got, want, "round {round}, search {kind}: {literals:?}");
                tried[kind] += 1;
            };
            if let Some(t) = Teddy::new(&literals) {
                check(0, &|f| t.each(&text, f));
            }
            if let Some(w) = wu_manber::WuManber::new(literals.clone(), 4) {
                check(1, &|f| w.each(&text, f));
            }
            if let Some(d) = dfa::Dfa::new(literals.clone()) {
                check(2, &|f| d.each(&text, f));
            }
            if let Some(s) = Search::new(literals.clone()) {
                check(3, &|f| assert!(s.each(&text, f)));
            }
        }
        assert!(tried.iter().all(|&n| n > 500), "{tried:?}");
    }
}
