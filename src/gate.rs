//! The pack's gate: which rules could match a record, from one search of its text for
//! every rule's gate literals, before any parse.
//!
//! A rule's gate is one of its prefilter's groups (a record it can match holds one of the
//! group's literals, or an escape that could hide one). Each rule takes the group whose
//! literals the most rules share (then the one with the longest shortest literal): rules
//! of one data source share literals (`network`, a dataset name), so the literals stay few
//! however many rules there are. Each rule the gate lets through then runs its whole
//! prefilter, so the choice changes only the cost, never a decision.
//!
//! The search finds every occurrence of every literal. Natively it is Aho-Corasick (whose
//! search is vectorised); in WebAssembly with SIMD (the component, the npm package) it is
//! a Teddy of our own on `simd128` ([`Teddy`]), since Aho-Corasick has no vector search
//! there and walks the text byte by byte.
//!
//! When the pack's rules read only their own indices, the same search also looks for the
//! keys a record's index is told by ([`crate::index::evidence`]), so what the text
//! foretells of the index costs no pass of its own.

use crate::query::Prefilter;

/// The most literals aho-corasick's vector search (Teddy) takes; past it the gate keeps
/// the literals' quotes (see [`crate::query::unquoted`]).
const VECTOR_LITERALS: usize = 64;

/// The gate of a pack.
#[derive(Debug)]
pub(crate) struct Gate {
    search: Search,
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
    /// When the search holds every literal of every rule's prefilter (a large pack, whose
    /// literals keep their quotes): each rule's groups as literal ids. A rule's prefilter
    /// is then decided from what the search found, with no search of its own.
    exact: Option<Vec<Vec<Vec<u32>>>>,
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
    #[cfg_attr(
        not(all(target_arch = "wasm32", target_feature = "simd128")),
        allow(dead_code)
    )]
    Teddy(Box<Teddy>),
}

impl Gate {
    /// The gate of rules with these prefilters (`None`: no prefilter, every record); with
    /// `index_evidence`, the search also reports the index evidence literals.
    pub(crate) fn new(prefilters: &[Option<&Prefilter>], index_evidence: bool) -> Option<Gate> {
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
        let chosen: Vec<Option<&Vec<&[u8]>>> = groups
            .iter()
            .map(|rule| {
                rule.iter().max_by_key(|g| {
                    let sharing = g.iter().map(|l| shared.get(l).copied().unwrap_or(0)).min();
                    let length = g.iter().map(|l| l.len()).min();
                    (sharing, length)
                })
            })
            .collect();
        // Without their quotes when that leaves few enough literals for a vector search,
        // else as they are (see `query::unquoted`).
        let mut bare: Vec<&[u8]> = chosen
            .iter()
            .flatten()
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
        // Past the vector search's literals, every literal of every group is searched
        // as it is, so the search alone decides each prefilter (`Gate::passes`).
        let exact = (!strip).then(|| {
            groups
                .iter()
                .map(|rule| {
                    rule.iter()
                        .map(|g| {
                            g.iter()
                                .map(|lit| id_of(lit, &mut literals, &mut rules_of))
                                .collect()
                        })
                        .collect()
                })
                .collect()
        });
        let mut evidence = Vec::new();
        for (lit, bit) in specials {
            let p = id_of(lit, &mut literals, &mut rules_of) as usize;
            evidence.resize(literals.len(), 0);
            evidence[p] |= bit;
        }
        evidence.resize(literals.len(), 0);
        Some(Gate {
            search: Search::new(literals)?,
            rules_of,
            always,
            rules: prefilters.len() as u32,
            escapes_hide: true,
            evidence,
            exact,
        })
    }

    /// Assumes the text comes from `writer`: escapes need no look when it writes every
    /// literal as itself.
    pub(crate) fn assume(&mut self, writer: crate::query::Writer) {
        self.escapes_hide = !self
            .search
            .literals()
            .iter()
            .all(|l| writer.writes_as_itself(l));
    }

    /// Whether rule `r`'s prefilter passes, decided from the literals the search found
    /// (`found`, from [`Gate::open`]); `None` when the search cannot decide it (no exact
    /// search, or the text had an escape that could hide a literal), and the rule's own
    /// prefilter must. Sound as the prefilter is: a group holds when one of its literals
    /// is in the text, and no escape can hide one here.
    pub(crate) fn passes(&self, r: u32, found: &Found, seen: &[u32]) -> Option<bool> {
        let exact = self.exact.as_ref()?;
        if found.everything {
            return None;
        }
        let groups = exact.get(r as usize)?;
        Some(
            groups
                .iter()
                .all(|g| g.iter().any(|l| seen.binary_search(l).is_ok())),
        )
    }

    /// Calls `open` with every rule the text lets through, possibly more than once, and
    /// says which index evidence it found; `seen` gets the literals found (sorted, once
    /// each) when the search decides the prefilters ([`Gate::passes`]).
    pub(crate) fn open(
        &self,
        text: &[u8],
        open: &mut dyn FnMut(u32),
        seen: &mut Vec<u32>,
    ) -> Found {
        let mut found = Found::default();
        seen.clear();
        let collect = self.exact.is_some();
        // An escape could hide any literal: every rule looks, and the record may name its
        // own index.
        let everything = (self.escapes_hide && crate::query::has_escape(text)) || {
            let (rules_of, evidence) = (&self.rules_of, &self.evidence);
            !self.search.each(text, &mut |lit| {
                found.bits |= evidence[lit];
                if collect {
                    seen.push(lit as u32);
                }
                for &r in &rules_of[lit] {
                    open(r);
                }
            })
        };
        if everything {
            (0..self.rules).for_each(open);
            found.bits = NAMES_ITSELF | CLOUDTRAIL_SOURCE | CLOUDTRAIL_NAME;
            found.everything = true;
        } else {
            self.always.iter().for_each(|&r| open(r));
            seen.sort_unstable();
            seen.dedup();
        }
        found
    }
}

impl Search {
    fn literals(&self) -> &[Vec<u8>] {
        match self {
            Search::AhoCorasick { literals, .. } => literals,
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

    #[test]
    fn teddy_finds_every_occurrence_of_every_literal() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let alphabet = b"abcdefgh\"\\:{}.-_AB\x00\xff";
        for round in 0..3_000 {
            let n = 1 + (next() % 30) as usize;
            let literals: Vec<Vec<u8>> = (0..n)
                .map(|_| {
                    let len = 3 + (next() % 6) as usize;
                    (0..len)
                        .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                        .collect()
                })
                .collect();
            let t = Teddy::new(&literals).expect("teddy");
            let len = (next() % 200) as usize;
            let text: Vec<u8> = (0..len).map(|_| alphabet[(next() % 8) as usize]).collect();
            let mut got = Vec::new();
            t.each(&text, &mut |l| got.push(l));
            let mut want = Vec::new();
            for pos in 0..text.len() {
                for (l, lit) in literals.iter().enumerate() {
                    if text[pos..].starts_with(lit) {
                        want.push(l);
                    }
                }
            }
            got.sort_unstable();
            want.sort_unstable();
            assert_eq!(got, want, "round {round}");
        }
    }
}
