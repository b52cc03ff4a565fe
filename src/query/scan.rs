//! The prefilter's search for targets without vector instructions (the Fluent Bit module:
//! WAMR runs no SIMD): one pass of 64-bit words over the text for a literal and for the
//! escapes that could hide it, where memchr's portable code would make two passes of
//! 32-bit words (`usize` on wasm32). WebAssembly has 64-bit integer operations even on
//! wasm32. Measured: the Fluent Bit path is bound by these passes, the component's and the
//! native ones by nothing like it, so they keep memchr's vector searches.

/// Whether this build's prefilter uses [`group_holds`] (and tries the group with the
/// rarest anchor first).
pub(crate) const PORTABLE: bool =
    cfg!(all(target_arch = "wasm32", not(target_feature = "simd128")));

const LO: u64 = 0x0101_0101_0101_0101;

/// The high bit of every byte of `v` that is zero (and possibly of some bytes above a
/// zero byte: each flagged position is checked).
fn zero_bytes(v: u64) -> u64 {
    v.wrapping_sub(LO) & !v & (LO << 7)
}

/// Eight bytes (a `chunks_exact(8)` chunk) as a little-endian word.
fn word(chunk: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(chunk);
    u64::from_le_bytes(w)
}

/// Printable bytes from the most to the least common in CloudTrail JSON (counted over the
/// records in `../shared/data/cloudtrail/`).
const BY_FREQUENCY: &[u8] =
    b"\"eatrs :n-oi2,c1dum30.7AlpI8v49w/fSb56gyCTDEh{}NRHPMVQFzZqUxkKjGOBL()J+_XW;Y[]\\%=*'!#@$?&";

/// How common a byte is in log text: lower is rarer.
fn commonness(b: u8) -> usize {
    BY_FREQUENCY
        .iter()
        .position(|&c| c == b)
        .map_or(0, |rank| BY_FREQUENCY.len() - rank)
}

/// How common the literal's rarest byte is (its anchor): a group with a rarer anchor is
/// tried first, as it rejects more records for fewer comparisons.
pub(crate) fn anchor_commonness(literal: &[u8]) -> usize {
    literal.get(anchor(literal)).map_or(0, |&b| commonness(b))
}

/// The offset of the literal's rarest byte (the last of equally rare ones): the pass looks
/// for it, then compares the whole literal.
pub(crate) fn anchor(literal: &[u8]) -> usize {
    (0..literal.len())
        .min_by_key(|&i| (commonness(literal[i]), std::cmp::Reverse(i)))
        .unwrap_or(0)
}

/// Whether `text` holds `literal`, or `\u`, or (with `slash`) `\/`: one group of the
/// prefilter, as [`super::Prefilter::may_match`] judges it, in one pass.
pub(crate) fn group_holds(text: &[u8], literal: &[u8], anchor: usize, slash: bool) -> bool {
    let n = literal.len();
    if n == 0 {
        return true;
    }
    let escape_at = |p: usize| {
        text[p] == b'\\'
            && text
                .get(p + 1)
                .is_some_and(|&c| c == b'u' || (slash && c == b'/'))
    };
    let literal_at = |s: usize| s + n <= text.len() && &text[s..s + n] == literal;
    // One anchor byte, the rarest: two words a step (the text and the text at the anchor),
    // half the work of two anchors for a few more literal comparisons.
    let (sa, sbs) = (LO * u64::from(literal[anchor]), LO * u64::from(b'\\'));
    let words = text
        .chunks_exact(8)
        .zip(text.get(anchor..).unwrap_or_default().chunks_exact(8));
    let mut i = 0;
    for (here, at_anchor) in words {
        let backslash = zero_bytes(word(here) ^ sbs);
        let start = zero_bytes(word(at_anchor) ^ sa);
        let mut flags = backslash | start;
        while flags != 0 {
            let bit = flags.trailing_zeros();
            let p = i + (bit / 8) as usize;
            if (backslash >> bit) & 1 == 1 && escape_at(p) {
                return true;
            }
            if (start >> bit) & 1 == 1 && literal_at(p) {
                return true;
            }
            flags &= flags - 1;
        }
        i += 8;
    }
    (i..text.len()).any(|p| escape_at(p) || literal_at(p))
}

/// One literal, searched by Horspool's method on byte pairs: each window of the text is
/// judged by the two bytes at its end, and a pair the literal does not hold moves the
/// window on by the literal's length less one. For text that only needs the literal
/// itself searched (no escape could hide it: [`super::Writer::FluentBit`]), in builds
/// without vector instructions, where a step costs about ten instructions and most steps
/// skip 14 or more bytes of CloudTrail JSON for a literal of 17.
#[derive(Clone)]
pub(crate) struct Skip {
    literal: Box<[u8]>,
    /// For each pair of bytes (little-endian), how far the window's end may move when the
    /// window ends with it; 0 for the literal's own last pair (the window is compared).
    shift: Box<[u8; 1 << 16]>,
    /// How far to move after comparing a window that ends with the literal's last pair.
    last_shift: usize,
}

impl std::fmt::Debug for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Skip")
            .field("literal", &String::from_utf8_lossy(&self.literal))
            .finish_non_exhaustive()
    }
}

/// The pair of bytes at `at` and `at + 1`, as an index.
fn pair(bytes: &[u8], at: usize) -> usize {
    usize::from(u16::from_le_bytes([bytes[at], bytes[at + 1]]))
}

impl Skip {
    /// The smallest and largest literal worth it (a shift must fit in a byte).
    const LENGTHS: std::ops::RangeInclusive<usize> = 6..=256;

    pub(crate) fn new(literal: &[u8]) -> Option<Skip> {
        let m = literal.len();
        if !Skip::LENGTHS.contains(&m) {
            return None;
        }
        // A pair nowhere in the literal but at its end lets the window move m - 1: a
        // shorter move would leave both bytes inside the literal's next place.
        let mut shift: Box<[u8; 1 << 16]> = vec![(m - 1) as u8; 1 << 16]
            .into_boxed_slice()
            .try_into()
            .ok()?;
        // Later places overwrite earlier ones: the smallest move wins.
        for i in 0..m - 2 {
            shift[pair(literal, i)] = (m - 2 - i) as u8;
        }
        let last = pair(literal, m - 2);
        let last_shift = usize::from(shift[last]);
        shift[last] = 0;
        Some(Skip {
            literal: literal.into(),
            shift,
            last_shift,
        })
    }

    /// Whether `text` holds the literal.
    ///
    /// `at` is the offset of the pair that ends the window `text[at + 2 - m..at + 2]`.
    /// While four of the largest moves keep `at` within the text, four moves are made
    /// without a look in between: a window ending with the literal's last pair moves by
    /// 0, so the moves after it stay there, and it is compared after the four. Each move
    /// is then a load, a load and an add, which is what the interpreter runs per step.
    pub(crate) fn holds(&self, text: &[u8]) -> bool {
        let m = self.literal.len();
        let Some(last) = text.len().checked_sub(2).filter(|_| text.len() >= m) else {
            return false;
        };
        let most = m - 1;
        let table: &[u8; 1 << 16] = &self.shift;
        let base = text.as_ptr();
        // The move for the window ending with the pair at `at`. Unchecked: the checked
        // form costs three times the instructions in an interpreter, in the loop that is
        // most of a rejected record's cost.
        let shift = |at: usize| {
            debug_assert!(at + 1 < text.len());
            // SAFETY: every caller has `at <= last`, so `at + 1 < text.len()`: both bytes
            // are in `text`. The index is a `u16`, within the table's 65,536 entries.
            let pair = unsafe { (base.add(at) as *const [u8; 2]).read() };
            usize::from(table[usize::from(u16::from_le_bytes(pair))])
        };
        let matches = |at: usize| text[at + 2 - m..at + 2] == *self.literal;
        let mut at = m - 2;
        if let Some(fast_end) = last.checked_sub(4 * most) {
            while at <= fast_end {
                at += shift(at);
                at += shift(at);
                at += shift(at);
                at += shift(at);
                if shift(at) == 0 {
                    if matches(at) {
                        return true;
                    }
                    at += self.last_shift;
                }
            }
        }
        while at <= last {
            match shift(at) {
                0 if matches(at) => return true,
                0 => at += self.last_shift,
                s => at += s,
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skip_agrees_with_memmem() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        // A small alphabet, so that pairs repeat and windows nearly match.
        let alphabet = b"abcGe\"\x00\xff";
        let pick = |r: u64| alphabet[(r % alphabet.len() as u64) as usize];
        for round in 0..50_000 {
            let literal: Vec<u8> = (0..6 + next() % 10).map(|_| pick(next())).collect();
            let mut text: Vec<u8> = (0..next() % 400).map(|_| pick(next())).collect();
            if next() % 3 == 0 {
                let at = (next() as usize) % (text.len() + 1);
                text.splice(at..at, literal.iter().copied());
            }
            let skip = Skip::new(&literal).unwrap();
            assert_eq!(
                skip.holds(&text),
                memchr::memmem::find(&text, &literal).is_some(),
                "round {round}: {text:?} / {literal:?}"
            );
        }
        let skip = Skip::new(b"GetCallerIdentity").unwrap();
        assert!(skip.holds(br#"{"eventName":"GetCallerIdentity"}"#));
        assert!(skip.holds(b"GetCallerIdentity"));
        assert!(!skip.holds(b"GetCallerIdentit"));
        assert!(!skip.holds(br#"{"eventName":"GetCallerIdentitY"}"#));
        assert!(Skip::new(b"short").is_none());
    }

    /// The two-pass answer: the literal anywhere, or an escape anywhere.
    fn reference(text: &[u8], literal: &[u8], slash: bool) -> bool {
        memchr::memmem::find(text, literal).is_some()
            || memchr::memmem::find(text, b"\\u").is_some()
            || (slash && memchr::memmem::find(text, b"\\/").is_some())
    }

    #[test]
    fn one_pass_agrees_with_two() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let alphabet = b"ab\\u/\"Ge\x00\xff\x01\x80";
        let pick = |r: u64| alphabet[(r % alphabet.len() as u64) as usize];
        for round in 0..50_000 {
            let len = (next() % 80) as usize;
            let text: Vec<u8> = (0..len).map(|_| pick(next())).collect();
            let literal: Vec<u8> = (0..1 + next() % 5).map(|_| pick(next())).collect();
            let slash = next() % 2 == 0;
            assert_eq!(
                group_holds(&text, &literal, anchor(&literal), slash),
                reference(&text, &literal, slash),
                "round {round}: {text:?} / {literal:?} / {slash}"
            );
        }
        let record = br#"{"eventSource":"sts.amazonaws.com","eventName":"GetCallerIdentity"}"#;
        for (lit, holds) in [
            (&b"GetCallerIdentity"[..], true),
            (b"sts.amazonaws.com", true),
            (b"AssumeRole", false),
        ] {
            assert_eq!(group_holds(record, lit, anchor(lit), false), holds);
        }
    }
}
