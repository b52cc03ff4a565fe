//! Wu and Manber's multi-literal search over byte pairs: the gate's search for 65 to 256
//! literals, and for fewer where there is no vector search (WAMR's interpreter).
//!
//! A window of `m` bytes (the shortest literal's length) slides over the text. Each
//! literal has a window of its own, `m` of its bytes from an offset chosen where its pairs
//! are rarest in log text ([`window`]). The table says, for the pair of bytes that ends the
//! text's window, how far it may move without passing over any literal's window: `m - 2 -
//! j` for the pair at offset `j` of some literal's window, the least such, and `m - 1` for
//! a pair in none. A pair that ends some literal's window (a move of 0) names a bucket of
//! those literals, each compared with the text where its window says it starts; then the
//! window moves by one.
//!
//! Why: a step is a pair load, a byte load from the table and an add (in WAMR's interpreter
//! about a dozen WebAssembly instructions; four steps run between looks, a bucket's move of
//! 0 keeping the window where it is), and moves the window up to `m - 1` bytes, where an
//! automaton pays a table lookup for every byte (24 instructions in [`super::dfa`]). Over
//! CloudTrail, the 154 literals of the first search of Elastic's set
//! ([`super::Gate::new`]) take 0.31 steps a byte and one bucket in 55 bytes (0.33 and one in
//! 18 with every window at its literal's start: `"eventName"`'s window was `"even`, a
//! bucket at every `"eventTime"`, `"eventSource"` and the like); a bucket is mostly told
//! apart by the byte before the pair (a bit set), then by the literals' first four bytes.
//!
//! Sound because the text's window visits every place where a literal's window could
//! stand: a move `s` for the pair at the window's end means no literal's window has that
//! pair at offset `m - 2 - t` for any `t < s`, so no literal's window starts at any of the
//! `s` places skipped; and each literal is at its window's place less its offset.

/// The longest window: shifts must fit in a byte.
const MAX_WINDOW: usize = 0x100;

/// The 512 byte pairs most common in log text, most common first (counted over the records
/// of `../shared/data/cloudtrail/`, written compactly as JSON): the pairs a literal's window
/// should avoid ([`window`]).
const COMMON_PAIRS: &[u8] = concat!(
    "\":,\":\"\",nterenretee\"amonve\"emeesstsewsusevor20aw\"araion\"Id1.ea\"r{\"d\"12des",
    "\"atnaouco02et23truean:{\"A92tIeds-ce.1t\"t-alarecasss\"1\"u27rs39ge37-18373ma38ccti",
    "lsy\"rr\"}emaf\"t\"sroform},-ernciipIDs:-4agac10uregsiitypinbe/1peri.0lecrungor\"rct",
    "yNa7\".2s.ad\"cprm\"omidd-ruiCviquie.aazeqzo.covtTe,llpiia-0ta-tD\"CaVeIAtPrym-sh:tr",
    "tlihi-r3-7-Com.:1rpATNS-aSCQRTF7NFQR7 () sojansgitltununc19:a07ts-j7:tt::}}n:0.08hes",
    "/DeeI8-\"2 a25ic0 2.ddiley56//\"mpa28utl\"psRe\"b:uZ\".3tpo/ht-bHa; 6\"ww:/ol+hp/Pa.",
    "i.t H(+T1m:po44\"p1\"8\"0Tc2Ev2:tAuldOtSAcdr1657TysRr/KetNim17tVrS:i\"i0\"2\"yIfaPAt",
    "hAdph68AM15eEe-lIisTirIexMaOnsp\"MtCnlIPAgUslyrAtEAwsASocl\"TrNEl  sK-saiAp\"I-93\":",
    "nl,64SuDA8.smAIuiMUTLAELS2ZosESkeAUA2SHHAHeHoGCCM-8Prm/C511Sed6c-/b\"EU2765A-g2-ZVIE",
    "3.ECE\"3IV3sDv14-tHSvdHsVibr-HEA--ARSCDE-DHSAS1-R:[-S-GM-AKKIa-:01:ca9-dk-p4.sdk-7.:",
    "s0-.4 tX2/ab-Te00\"vha/0C8uxf-22BJp-4XIn6-Q48Q0BJ\"{}9.5-49md[{}]bu451-/rxe-22 48ckD",
    "aw. l/w1 APPN/pc/N//ho1 Taby.o)s)40/c(gx;4).u:52447da6.\"Dsu013142\"f41/358fe43eb99A",
    "Ra\"460921977 lu18.7:2uc3;-379scvaAW-c-7nD30ef]}WS91a6-d2913m_/s",
)
.as_bytes();

/// How common each pair of bytes (first byte low) is in log text: 512 for the most common of
/// [`COMMON_PAIRS`], down to 1; 0 for any other.
fn commonness() -> Vec<u16> {
    let mut rank = vec![0; 0x10000];
    let n = COMMON_PAIRS.len() / 2;
    for (i, p) in COMMON_PAIRS.chunks_exact(2).enumerate() {
        rank[usize::from(p[0]) | usize::from(p[1]) << 8] = (n - i) as u16;
    }
    rank
}

/// The search.
#[derive(Debug, Clone)]
pub(crate) struct WuManber {
    /// The window's length: the shortest literal's, at most [`MAX_WINDOW`].
    m: usize,
    /// For each pair of bytes (first byte low): how far the window may move, 0 for a pair
    /// that ends some literal's window. Bytes, so that a step is a pair load, a byte load
    /// and an add (in WebAssembly no shift of the index, no mask).
    shift: Box<[u8; 0x10000]>,
    /// For each pair that ends some literal's window, its bucket.
    bucket_of: Box<[u16; 0x10000]>,
    /// Bucket `b`'s literals are `members[starts[b]..starts[b + 1]]`.
    starts: Vec<u32>,
    members: Vec<Member>,
    /// For bucket `b`, the bytes its windows have just before the pair (offset `m - 3`),
    /// as a 256-bit set: most windows whose pair ends a literal's window are told apart by
    /// the byte before, without a look at the bucket.
    before: Vec<[u8; 32]>,
    literals: Vec<Vec<u8>>,
}

/// A literal in a bucket.
#[derive(Debug, Clone, Copy)]
struct Member {
    /// Its first four bytes (little-endian): a literal that does not start where its window
    /// says is told by one comparison, without a call to compare bytes.
    head: u32,
    id: u32,
    /// Where its window starts in it.
    offset: u32,
}

impl WuManber {
    /// The search for `literals`, or `None` when one is shorter than `shortest` (at least
    /// 4), too short a window to skip far, or there are too many buckets.
    pub(crate) fn new(literals: Vec<Vec<u8>>, shortest: usize) -> Option<WuManber> {
        let m = literals.iter().map(Vec::len).min()?.min(MAX_WINDOW);
        if m < shortest.max(4) {
            return None;
        }
        let offsets = windows(&literals, m);
        let mut shift: Box<[u8; 0x10000]> = vec![(m - 1) as u8; 0x10000]
            .into_boxed_slice()
            .try_into()
            .ok()?;
        let mut bucket_of: Box<[u16; 0x10000]> =
            vec![0; 0x10000].into_boxed_slice().try_into().ok()?;
        let pair = |w: &[u8], j: usize| usize::from(w[j]) | usize::from(w[j + 1]) << 8;
        let windows = || literals.iter().zip(&offsets).map(|(l, &o)| &l[o..o + m]);
        for w in windows() {
            for j in 0..m - 1 {
                let p = pair(w, j);
                shift[p] = shift[p].min((m - 2 - j) as u8);
            }
        }
        // The pairs that end a window, each a bucket.
        let mut ends: Vec<(usize, u32)> = windows()
            .enumerate()
            .map(|(id, w)| (pair(w, m - 2), id as u32))
            .collect();
        ends.sort_unstable();
        let mut starts = Vec::new();
        let mut members = Vec::with_capacity(ends.len());
        let mut before: Vec<[u8; 32]> = Vec::new();
        for (k, &(p, id)) in ends.iter().enumerate() {
            if k == 0 || ends[k - 1].0 != p {
                shift[p] = 0;
                bucket_of[p] = u16::try_from(starts.len()).ok()?;
                starts.push(members.len() as u32);
                before.push([0; 32]);
            }
            let lit = &literals[id as usize];
            let offset = offsets[id as usize];
            let c = usize::from(lit[offset + m - 3]);
            if let Some(set) = before.last_mut() {
                set[c >> 3] |= 1 << (c & 7);
            }
            members.push(Member {
                head: head(lit),
                id,
                offset: offset as u32,
            });
        }
        starts.push(members.len() as u32);
        Some(WuManber {
            m,
            shift,
            bucket_of,
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
        self.shift.len() * 3 + self.starts.len() * 36 + self.members.len() * 12
    }

    /// Calls `found` with every literal at every place it starts in `text` (not in the
    /// order of the places).
    pub(crate) fn each(&self, text: &[u8], found: &mut dyn FnMut(usize)) {
        let m = self.m;
        let most = m - 1;
        let shift: &[u8; 0x10000] = &self.shift;
        // Two bytes before the text, so that the pair ending at `end` is at `end` from here
        // (a subtraction less a step).
        let back = text.as_ptr().wrapping_sub(2);
        // The pair that ends the window `text[end - m..end]`, as an index.
        let pair = |end: usize| {
            debug_assert!(m <= end && end <= text.len());
            // SAFETY: every caller has `4 <= m <= end <= text.len()` (`WuManber::new` takes
            // no window under 4), so the two bytes at `back + end`, which are `text[end - 2]`
            // and `text[end - 1]`, are in the text. A checked slice costs a comparison and a
            // branch a step: in WAMR's interpreter, a step is this load, the table's load
            // and an add.
            let bytes = unsafe { back.wrapping_add(end).cast::<[u8; 2]>().read_unaligned() };
            usize::from(u16::from_le_bytes(bytes))
        };
        let step = |end: usize| usize::from(shift[pair(end)]);
        let mut end = m;
        // While four of the longest moves keep the window in the text, four moves without a
        // look in between: a pair that ends a literal's window moves by 0, so the window
        // stays there for the look after the four.
        if let Some(fast_end) = text.len().checked_sub(4 * most) {
            while end <= fast_end {
                end += step(end);
                end += step(end);
                end += step(end);
                end += step(end);
                if step(end) == 0 {
                    self.look(text, end, pair(end), found);
                    end += 1;
                }
            }
        }
        while end <= text.len() {
            match step(end) {
                0 => {
                    self.look(text, end, pair(end), found);
                    end += 1;
                }
                s => end += s,
            }
        }
    }

    /// The window `text[end - m..end]` ends with `pair`, which ends some literal's window:
    /// reports the literals of its bucket that are there. Most such windows are told apart
    /// by the byte before the pair, without a look at the bucket.
    #[inline(always)]
    fn look(&self, text: &[u8], end: usize, pair: usize, found: &mut dyn FnMut(usize)) {
        let k = usize::from(self.bucket_of[pair]);
        // SAFETY: as in `each`: `end >= m >= 4`.
        let c = usize::from(unsafe { *text.as_ptr().add(end - 3) });
        let may = self
            .before
            .get(k)
            .is_some_and(|set| set[c >> 3] & (1 << (c & 7)) != 0);
        if may {
            self.bucket(text, end - self.m, k, found);
        }
    }

    /// Reports the literals of bucket `k` whose window starts at `at`.
    #[inline(never)]
    fn bucket(&self, text: &[u8], at: usize, k: usize, found: &mut dyn FnMut(usize)) {
        let (from, to) = (self.starts[k] as usize, self.starts[k + 1] as usize);
        for member in self.members.get(from..to).unwrap_or_default() {
            let Some(start) = at.checked_sub(member.offset as usize) else {
                continue;
            };
            let Some(here) = text.get(start..) else {
                continue;
            };
            if head(here) == member.head && starts_with(here, &self.literals[member.id as usize]) {
                found(member.id as usize);
            }
        }
    }
}

/// Where each literal's window of `m` bytes starts ([`window`]). A call of its own, so that
/// its frame is gone before the tables are built: loading a pack runs near the Fluent Bit
/// module's stack budget ([`crate::host::STACK_NEED`]).
#[inline(never)]
fn windows(literals: &[Vec<u8>], m: usize) -> Vec<usize> {
    let common = commonness();
    literals.iter().map(|l| window(l, m, &common)).collect()
}

/// Where in `literal` its window of `m` bytes starts: where its pairs are least common in
/// log text. A pair common in the text and late in the window holds the window back (its
/// shift is short), and the window's last pair, where the text holds it, costs a look at
/// the bucket; the offset with the least of both wins, the earliest on a tie.
///
/// Any offset is sound: a literal at `p` has its window at `p + offset`, and the search
/// visits every place a window can end.
fn window(literal: &[u8], m: usize, common: &[u16]) -> usize {
    let pair = |w: &[u8], j: usize| {
        let p = usize::from(w[j]) | usize::from(w[j + 1]) << 8;
        usize::from(common.get(p).copied().unwrap_or(0))
    };
    (0..=literal.len() - m)
        .min_by_key(|&o| {
            let w = &literal[o..o + m];
            let held: usize = (0..m - 1).map(|j| pair(w, j) * (j + 1)).sum();
            held + pair(w, m - 2) * 4 * m
        })
        .unwrap_or(0)
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
