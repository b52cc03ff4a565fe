//! A dense Aho-Corasick automaton that reports every occurrence of every literal in one
//! pass: the gate's search past 256 literals (Elastic's whole set: 1,427), where a skip
//! search's byte pairs say too little.
//!
//! Why our own: a pack's gate wants every literal at every place it occurs, which the
//! `aho-corasick` crate gives only by restarting a leftmost search after each match, and
//! its DFA's search loop is general (anchoring, match kinds, prefilters). In WAMR's
//! interpreter, where every WebAssembly instruction is paid for, that came to some 55
//! instructions a byte of record; this loop takes 24 (one class lookup, one table lookup,
//! one comparison: a state past `first_match` is one where a literal ends).
//!
//! The automaton is the classic one: a trie of the literals, failure links by breadth-first
//! order, and every transition filled in (a byte with no edge from a state goes where its
//! failure state goes). Every byte that occurs in a literal has a class (a column of the
//! table) of its own; every other byte is class 0, which leads back to the root from
//! everywhere.

/// The most table entries (64 MiB): past this a pack uses the `aho-corasick` crate's
/// automaton.
const MAX_ENTRIES: usize = 1 << 24;

/// The automaton. A state is its row's offset in the table (`state * stride`), so a step is
/// one addition and one load; states where a literal ends are numbered last, from
/// `first_match` on.
#[derive(Debug, Clone)]
pub(crate) struct Dfa {
    /// Each byte's class.
    classes: [u8; 256],
    /// How many classes there are: the table's row length.
    stride: usize,
    /// `table[state + class]`: the next state (a row offset).
    table: Vec<u32>,
    /// The first state (row offset) where a literal ends.
    first_match: u32,
    /// For match state `first_match + k`: its literals are
    /// `ends[ends_at[k]..ends_at[k + 1]]` (every literal that is a suffix of what the state
    /// has read, its failure chain's included).
    ends_at: Vec<u32>,
    ends: Vec<u32>,
    literals: Vec<Vec<u8>>,
}

impl Dfa {
    /// The automaton of `literals` (none empty), or `None` when its table would hold more
    /// than [`MAX_ENTRIES`] entries.
    pub(crate) fn new(literals: Vec<Vec<u8>>) -> Option<Dfa> {
        if literals.is_empty() || literals.iter().any(|l| l.is_empty()) {
            return None;
        }
        let (classes, stride) = byte_classes(&literals);
        // The trie, its edges by class (u32::MAX: none yet).
        const NONE: u32 = u32::MAX;
        let mut next: Vec<u32> = vec![NONE; stride];
        let mut own_ends: Vec<Vec<u32>> = vec![Vec::new()];
        for (id, lit) in literals.iter().enumerate() {
            let mut s = 0usize;
            for &b in lit {
                let at = s * stride + usize::from(classes[usize::from(b)]);
                if next[at] == NONE {
                    let fresh = own_ends.len();
                    if (fresh + 1) * stride > MAX_ENTRIES {
                        return None;
                    }
                    next[at] = fresh as u32;
                    next.resize(next.len() + stride, NONE);
                    own_ends.push(Vec::new());
                }
                s = next[at] as usize;
            }
            own_ends[s].push(id as u32);
        }
        let states = own_ends.len();
        // Breadth-first: each state's failure state is shallower, so its row and its
        // literals are complete when the state is reached.
        let mut fail = vec![0u32; states];
        let mut ends = own_ends;
        let mut queue = std::collections::VecDeque::new();
        // The root's row: a byte with no edge stays at the root.
        for n in &mut next[..stride] {
            match *n {
                NONE => *n = 0,
                child => queue.push_back(child),
            }
        }
        while let Some(s) = queue.pop_front() {
            let s = s as usize;
            let f = fail[s] as usize;
            if !ends[f].is_empty() {
                let inherited = ends[f].clone();
                ends[s].extend(inherited);
            }
            for c in 0..stride {
                let at = s * stride + c;
                let via_fail = next[f * stride + c];
                match next[at] {
                    NONE => next[at] = via_fail,
                    child => {
                        fail[child as usize] = via_fail;
                        queue.push_back(child);
                    }
                }
            }
        }
        // Renumber: states where no literal ends first (the root stays 0), then the rest.
        let mut order: Vec<usize> = (0..states).filter(|&s| ends[s].is_empty()).collect();
        let first_match = order.len();
        order.extend((0..states).filter(|&s| !ends[s].is_empty()));
        let mut new_id = vec![0u32; states];
        for (new, &old) in order.iter().enumerate() {
            new_id[old] = (new * stride) as u32;
        }
        let mut table = Vec::with_capacity(states * stride);
        let mut ends_at = vec![0u32];
        let mut flat = Vec::new();
        for &old in &order {
            table.extend(
                next[old * stride..(old + 1) * stride]
                    .iter()
                    .map(|&n| new_id[n as usize]),
            );
            if !ends[old].is_empty() {
                let mut e = std::mem::take(&mut ends[old]);
                e.sort_unstable();
                e.dedup();
                flat.extend(e);
                ends_at.push(flat.len() as u32);
            }
        }
        let dfa = Dfa {
            classes,
            stride,
            table,
            first_match: (first_match * stride) as u32,
            ends_at,
            ends: flat,
            literals,
        };
        dfa.valid().then_some(dfa)
    }

    /// The literals, by id.
    pub(crate) fn literals(&self) -> &[Vec<u8>] {
        &self.literals
    }

    /// Bytes of memory the automaton holds.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn memory(&self) -> usize {
        (self.table.len() + self.ends_at.len() + self.ends.len()) * 4 + 256
    }

    /// Calls `found` with every literal at every place it ends in `text`.
    pub(crate) fn each(&self, text: &[u8], found: &mut dyn FnMut(usize)) {
        let (table, classes, first_match) = (&self.table[..], &self.classes, self.first_match);
        let mut s = 0u32;
        for &b in text {
            let at = s as usize + usize::from(classes[usize::from(b)]);
            // In the table: every entry is a row offset `state * stride` below
            // `table.len()` and every class is below `stride` (`Dfa::new` builds it so, and
            // `Dfa::valid` checks it), so `at < table.len()`. A checked index here costs a
            // comparison and a branch a byte, a sixth of a step in WAMR's interpreter.
            debug_assert!(at < table.len());
            // SAFETY: `at < table.len()`, as above.
            s = unsafe { *table.get_unchecked(at) };
            if s >= first_match {
                let k = (s - first_match) as usize / self.stride;
                let (from, to) = (self.ends_at[k] as usize, self.ends_at[k + 1] as usize);
                for &l in &self.ends[from..to] {
                    found(l as usize);
                }
            }
        }
    }

    /// Whether every entry is a row offset inside the table and every class below the
    /// stride: what makes [`Dfa::each`]'s unchecked lookup safe.
    fn valid(&self) -> bool {
        let rows = self.table.len() / self.stride;
        self.table.len() == rows * self.stride
            && self.classes.iter().all(|&c| usize::from(c) < self.stride)
            && self
                .table
                .iter()
                .all(|&s| s as usize % self.stride == 0 && (s as usize) < self.table.len())
            && self.ends_at.len() == (rows - (self.first_match as usize / self.stride)) + 1
    }
}

/// Each byte's class, and how many classes: every byte that occurs in some literal has a
/// class of its own, and the rest share class 0.
fn byte_classes(literals: &[Vec<u8>]) -> ([u8; 256], usize) {
    let mut used = [false; 256];
    for &b in literals.iter().flatten() {
        used[usize::from(b)] = true;
    }
    let mut classes = [0u8; 256];
    if used.iter().all(|&u| u) {
        // No byte is left over for class 0: each byte is its own class.
        for (b, c) in classes.iter_mut().enumerate() {
            *c = b as u8;
        }
        return (classes, 256);
    }
    let mut stride = 1;
    for (b, _) in used.iter().enumerate().filter(|(_, u)| **u) {
        // At most 255 used bytes here: classes 1 to 255.
        classes[b] = stride as u8;
        stride += 1;
    }
    (classes, stride)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_empty_literals_and_counts_its_memory() {
        assert!(Dfa::new(Vec::new()).is_none());
        assert!(Dfa::new(vec![b"a".to_vec(), Vec::new()]).is_none());
        let dfa = Dfa::new(vec![b"\"GetCallerIdentity\"".to_vec()]).expect("dfa");
        // 20 states (the root and one a byte) by 14 classes (13 distinct bytes and the
        // rest), one match state with one literal.
        assert_eq!(dfa.memory(), (20 * 14 + 2 + 1) * 4 + 256);
    }
}
