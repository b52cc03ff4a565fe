//! Wu and Manber's multi-literal search over byte pairs: the gate's search for 65 to 256
//! literals, and for fewer where there is no vector search (WAMR's interpreter).
//!
//! A window of `m` bytes (the shortest literal's length) slides over the text. The table
//! says, for the pair of bytes that ends the window, how far the window may move without
//! passing over the start of any literal: `m - 2 - j` for the pair at offset `j` of some
//! literal's first `m` bytes, the least such, and `m - 1` for a pair in no literal's first
//! `m` bytes. A pair that ends some literal's first `m` bytes (shift 0) names a bucket of
//! those literals, each compared with the text where the window starts; then the window
//! moves by one.
//!
//! Why: a step costs a pair load, a table load and a comparison (23 WebAssembly
//! instructions), and moves the window up to `m - 1` bytes, where an automaton pays a
//! table lookup for every byte (24 instructions in [`super::dfa`]). Over CloudTrail, the
//! 154 literals of the first search of Elastic's set ([`super::Gate::new`]) take a third
//! of a step a byte, and one bucket in eighteen bytes; a bucket is mostly told apart by
//! the byte before the pair (a bit set), then by the literals' first four bytes.
//!
//! Sound because the window visits, as its start, every position where a literal could
//! start: a shift `s` for the pair at the window's end means no literal has that pair at
//! offset `m - 2 - t` of its first `m` bytes for any `t < s`, so no literal starts at any
//! of the `s` positions skipped.

/// Entries of the table from this value on name a bucket (`entry - BUCKET`); below it they
/// are shifts.
const BUCKET: u16 = 0x100;

/// The longest window: shifts must stay below [`BUCKET`].
const MAX_WINDOW: usize = 0x100;

/// The search.
#[derive(Debug, Clone)]
pub(crate) struct WuManber {
    /// The window's length: the shortest literal's, at most [`MAX_WINDOW`].
    m: usize,
    /// For each pair of bytes (first byte low): a shift, or `BUCKET + bucket`.
    table: Box<[u16; 0x10000]>,
    /// Bucket `b`'s literals are `members[starts[b]..starts[b + 1]]`, each with its first
    /// four bytes (little-endian): a literal that does not start where the window does is
    /// told by one comparison, without a call to compare bytes.
    starts: Vec<u32>,
    members: Vec<(u32, u32)>,
    /// For bucket `b`, the bytes its literals have just before the pair (offset `m - 3`),
    /// as a 256-bit set: most windows whose pair ends a literal's window are told apart by
    /// the byte before, without a look at the bucket.
    before: Vec<[u8; 32]>,
    literals: Vec<Vec<u8>>,
}

impl WuManber {
    /// The search for `literals`, or `None` when one is shorter than `shortest` (at least
    /// 4), too short a window to skip far, or there are too many buckets.
    pub(crate) fn new(literals: Vec<Vec<u8>>, shortest: usize) -> Option<WuManber> {
        let m = literals.iter().map(Vec::len).min()?.min(MAX_WINDOW);
        if m < shortest.max(4) {
            return None;
        }
        let mut table: Box<[u16; 0x10000]> = vec![(m - 1) as u16; 0x10000]
            .into_boxed_slice()
            .try_into()
            .ok()?;
        let pair = |lit: &[u8], j: usize| usize::from(lit[j]) | usize::from(lit[j + 1]) << 8;
        for lit in &literals {
            for j in 0..m - 1 {
                let p = pair(lit, j);
                table[p] = table[p].min((m - 2 - j) as u16);
            }
        }
        // The pairs that end a window of some literal, each a bucket.
        let mut ends: Vec<(usize, u32)> = literals
            .iter()
            .enumerate()
            .map(|(id, lit)| (pair(lit, m - 2), id as u32))
            .collect();
        ends.sort_unstable();
        let mut starts = Vec::new();
        let mut members = Vec::with_capacity(ends.len());
        let mut before: Vec<[u8; 32]> = Vec::new();
        for (k, &(p, id)) in ends.iter().enumerate() {
            if k == 0 || ends[k - 1].0 != p {
                let bucket = u16::try_from(starts.len()).ok()?.checked_add(BUCKET)?;
                table[p] = bucket;
                starts.push(members.len() as u32);
                before.push([0; 32]);
            }
            let lit = &literals[id as usize];
            let c = usize::from(lit[m - 3]);
            if let Some(set) = before.last_mut() {
                set[c >> 3] |= 1 << (c & 7);
            }
            members.push((head(lit), id));
        }
        starts.push(members.len() as u32);
        Some(WuManber {
            m,
            table,
            starts,
            members,
            before,
            literals,
        })
    }

    /// The literals, by id.
    pub(crate) fn literals(&self) -> &[Vec<u8>] {
        &self.literals
    }

    /// Bytes of memory the search holds (beyond its literals).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn memory(&self) -> usize {
        self.table.len() * 2 + self.starts.len() * 36 + self.members.len() * 8
    }

    /// Calls `found` with every literal at every place it starts in `text`.
    pub(crate) fn each(&self, text: &[u8], found: &mut dyn FnMut(usize)) {
        let m = self.m;
        let table = &self.table;
        // The window is `text[end - m..end]`.
        let mut end = m;
        while end <= text.len() {
            // SAFETY: `3 <= m <= end <= text.len()` (`WuManber::new` takes no window under
            // 4), so the three bytes before `end` are in the text. A checked slice costs a
            // comparison and a branch a step, a fifth of a step in WAMR's interpreter.
            let pair = unsafe {
                text.as_ptr()
                    .add(end - 2)
                    .cast::<[u8; 2]>()
                    .read_unaligned()
            };
            let v = table[usize::from(u16::from_le_bytes(pair))];
            if v < BUCKET {
                end += usize::from(v);
                continue;
            }
            let k = usize::from(v - BUCKET);
            // SAFETY: as above.
            let c = usize::from(unsafe { *text.as_ptr().add(end - 3) });
            if self
                .before
                .get(k)
                .is_some_and(|set| set[c >> 3] & (1 << (c & 7)) != 0)
            {
                self.check(text, end - m, k, found);
            }
            end += 1;
        }
    }

    /// Reports the literals of bucket `k` that start at `at`.
    fn check(&self, text: &[u8], at: usize, k: usize, found: &mut dyn FnMut(usize)) {
        let Some(here) = text.get(at..) else {
            return;
        };
        let (from, to) = (self.starts[k] as usize, self.starts[k + 1] as usize);
        let first = head(here);
        for &(h, l) in self.members.get(from..to).unwrap_or_default() {
            if h == first && starts_with(here, &self.literals[l as usize]) {
                found(l as usize);
            }
        }
    }
}

/// Whether `text` starts with `literal`, eight bytes a comparison: in WebAssembly a slice
/// comparison is a call to a `memcmp` that compares a byte at a time.
fn starts_with(text: &[u8], literal: &[u8]) -> bool {
    let Some(text) = text.get(..literal.len()) else {
        return false;
    };
    let (a, b) = (text.chunks_exact(8), literal.chunks_exact(8));
    let tails = a.remainder().iter().eq(b.remainder());
    tails
        && a.zip(b).all(|(x, y)| {
            let word = |c: &[u8]| u64::from_le_bytes(c.try_into().unwrap_or([0; 8]));
            word(x) == word(y)
        })
}

/// The first four bytes of `bytes` (at least four), little-endian.
fn head(bytes: &[u8]) -> u32 {
    match bytes {
        [a, b, c, d, ..] => u32::from_le_bytes([*a, *b, *c, *d]),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_windows_too_short() {
        assert!(WuManber::new(Vec::new(), 4).is_none());
        assert!(WuManber::new(vec![b"abc".to_vec()], 2).is_none());
        assert!(WuManber::new(vec![b"abc".to_vec(), b"abcdef".to_vec()], 4).is_none());
        let wm = WuManber::new(vec![b"\"GetCallerIdentity\"".to_vec()], 4).expect("search");
        assert!(wm.memory() >= 0x20000);
    }
}
