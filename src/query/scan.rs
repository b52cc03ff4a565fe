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

#[cfg(test)]
mod tests {
    use super::*;

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
