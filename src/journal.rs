//! The state journal: every change to a term table that the last snapshot lacks, appended
//! as it happens, so that a host stopped at any point (gracefully or killed) restarts with
//! the table it had. A change is a term and its new `last_seen`: a term seen for the first
//! time, or seen later than before. Replaying the changes in order through the table gives
//! the table again, evictions and watermark included (they follow from the same sightings).
//!
//! Layout, version 1; integers little-endian:
//!
//! ```text
//! header   magic "NEWTERMJ", u16 version 1, u16 reserved 0,
//!          u64 base      the checksum that ends the snapshot this journal follows (its
//!                        last 8 bytes); 0 when it follows none
//!          u32 rules, then each rule id: u32 length + UTF-8   (entries name rules by
//!                        their position here)
//!          u64 FNV-1a 64 of the header before it
//! entry    u32 length n, then n bytes: u32 rule (its high bit set when the sighting was
//!          new: an alert, or a term learned), i64 last_seen (nanoseconds), u64 the
//!          record's fingerprint (of a new sighting: what its alert id is made from besides
//!          rule, term and time; else 0), the term's key; then u32: the low half of FNV-1a
//!          64 over the length and the n bytes
//! ```
//!
//! **Outputs the host lost.** A host may lose a record's output after the call that made it
//! returned, and deliver the record again: Fluent Bit runs filters on a batch of records
//! before it stores their outputs, and its `tail` input re-reads a batch it had not
//! committed. The journal has the record's change by then, so the record would be decided
//! as seen, and its alert lost. So a replay marks each new sighting it applies as pending,
//! and the same record (term, time and fingerprint) seen again is new once more: the same
//! alert, with the same id. A fold carries the new sightings of the period it folds into the next journal, so a
//! record delivered again just after a fold is covered too. Outputs are at least once: a
//! host that delivers a record again may deliver its alert again.
//!
//! An entry is appended whole by one write, so a crash mid-append leaves at most the last
//! entry torn: reading stops there, reports it, and keeps every entry before it. A journal
//! whose base is not the snapshot's own is stale (the snapshot was written after it and
//! holds its changes) and is not replayed.

use std::fmt;

use crate::snapshot::fnv1a;
use crate::time::Nanos;

const MAGIC: &[u8; 8] = b"NEWTERMJ";
const VERSION: u16 = 1;
/// Length, rule, time and fingerprint: the bytes of an entry besides its key and check.
const ENTRY_FIXED: usize = 4 + 4 + 8 + 8;

/// The base of a journal that follows `snapshot` (a snapshot's last 8 bytes are its
/// checksum); 0 for none.
pub fn base_of(snapshot: Option<&[u8]>) -> u64 {
    match snapshot {
        Some(s) if s.len() >= 8 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&s[s.len() - 8..]);
            u64::from_le_bytes(b)
        }
        _ => 0,
    }
}

/// A journal's header: its base and the rule ids its entries name, in order.
pub fn header<S: AsRef<str>>(base: u64, rules: &[S]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&base.to_le_bytes());
    out.extend_from_slice(&(rules.len() as u32).to_le_bytes());
    for r in rules {
        let r = r.as_ref().as_bytes();
        out.extend_from_slice(&(r.len() as u32).to_le_bytes());
        out.extend_from_slice(r);
    }
    let sum = fnv1a(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    out
}

/// The high bit of an entry's rule: the sighting was new.
const NEW: u32 = 1 << 31;

/// Appends one entry: rule `rule` (its position in the header) saw `key` last at `time`;
/// `new` when the sighting was new, then in the record of fingerprint `record`.
pub fn push_entry(out: &mut Vec<u8>, rule: u32, new: Option<u64>, time: Nanos, key: &[u8]) {
    let start = out.len();
    let len = (ENTRY_FIXED - 4 + key.len()) as u32;
    out.extend_from_slice(&len.to_le_bytes());
    let rule = if new.is_some() { rule | NEW } else { rule };
    out.extend_from_slice(&rule.to_le_bytes());
    out.extend_from_slice(&time.to_le_bytes());
    out.extend_from_slice(&new.unwrap_or(0).to_le_bytes());
    out.extend_from_slice(key);
    let check = fnv1a(&out[start..]) as u32;
    out.extend_from_slice(&check.to_le_bytes());
}

/// One change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    /// The rule's position in the header's list.
    pub rule: u32,
    /// The sighting was new (an alert, or a term learned): the record's fingerprint.
    pub new: Option<u64>,
    pub time: Nanos,
    pub key: &'a [u8],
}

/// A journal as read: its header, the entries that are whole, and where reading stopped
/// early, if it did.
#[derive(Debug)]
pub struct Journal<'a> {
    pub base: u64,
    pub rules: Vec<String>,
    pub entries: Vec<Entry<'a>>,
    pub damage: Option<Damage>,
    /// Where the entries start (after the header).
    pub entries_at: usize,
}

/// Where a journal stops being readable: the byte offset of the first entry that is not
/// whole, why, and how many bytes from there on were dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    pub at: usize,
    pub dropped: usize,
    pub why: &'static str,
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at byte {}: its last {} bytes are dropped",
            self.why, self.at, self.dropped
        )
    }
}

/// A journal whose header cannot be read: none of it can be trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JournalError {
    /// Not a newterms journal.
    Foreign,
    /// Another format version.
    Version(u16),
    /// The header is cut short or does not match its checksum.
    Header,
}

impl fmt::Display for JournalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JournalError::Foreign => f.write_str("not a newterms journal (bad magic)"),
            JournalError::Version(v) => {
                write!(f, "journal format version {v} (this build reads {VERSION})")
            }
            JournalError::Header => f.write_str("its header is damaged"),
        }
    }
}

impl std::error::Error for JournalError {}

/// The entries of `bytes` from offset `at` on, each with its raw bytes, until the end or
/// the first that is not whole (then a [`Damage`], and nothing more).
pub struct Entries<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Entries<'a> {
    pub fn new(bytes: &'a [u8], at: usize) -> Self {
        Entries { bytes, at }
    }
}

impl<'a> Iterator for Entries<'a> {
    type Item = Result<(Entry<'a>, &'a [u8]), Damage>;

    fn next(&mut self) -> Option<Self::Item> {
        let at = self.at;
        let rest = self.bytes.get(at..).filter(|r| !r.is_empty())?;
        let stop = |why| {
            Some(Err(Damage {
                at,
                dropped: rest.len(),
                why,
            }))
        };
        // Nothing is read after damage.
        let end = self.bytes.len();
        let Some(len) = rest.get(..4) else {
            self.at = end;
            return stop("a torn entry");
        };
        let n = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
        if n < ENTRY_FIXED - 4 {
            self.at = end;
            return stop("an entry of an impossible length");
        }
        let Some(whole) = rest.get(..4 + n + 4) else {
            self.at = end;
            return stop("a torn entry");
        };
        let c = &whole[4 + n..];
        if fnv1a(&whole[..4 + n]) as u32 != u32::from_le_bytes([c[0], c[1], c[2], c[3]]) {
            self.at = end;
            return stop("an entry that does not match its check");
        }
        let body = &whole[4..4 + n];
        let rule = u32::from_le_bytes([body[0], body[1], body[2], body[3]]);
        let mut t = [0u8; 8];
        t.copy_from_slice(&body[4..12]);
        let mut f = [0u8; 8];
        f.copy_from_slice(&body[12..20]);
        self.at = at + whole.len();
        Some(Ok((
            Entry {
                rule: rule & !NEW,
                new: (rule & NEW != 0).then_some(u64::from_le_bytes(f)),
                time: i64::from_le_bytes(t),
                key: &body[20..],
            },
            whole,
        )))
    }
}

/// A reader over the header's bytes.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], JournalError> {
        let s = self
            .bytes
            .get(self.at..self.at + N)
            .ok_or(JournalError::Header)?;
        self.at += N;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn slice(&mut self, n: usize) -> Result<&'a [u8], JournalError> {
        let end = self.at.checked_add(n).ok_or(JournalError::Header)?;
        let s = self.bytes.get(self.at..end).ok_or(JournalError::Header)?;
        self.at = end;
        Ok(s)
    }
}

/// Reads a journal: its header, then every whole entry up to the first that is not.
pub fn read(bytes: &[u8]) -> Result<Journal<'_>, JournalError> {
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(JournalError::Foreign);
    }
    let mut r = Reader {
        bytes,
        at: MAGIC.len(),
    };
    let version = u16::from_le_bytes(r.take()?);
    if version != VERSION {
        return Err(JournalError::Version(version));
    }
    let _reserved: [u8; 2] = r.take()?;
    let base = u64::from_le_bytes(r.take()?);
    let count = u32::from_le_bytes(r.take()?) as usize;
    // Each rule id takes at least 4 bytes: a count beyond that is a lie.
    if count > bytes.len() / 4 {
        return Err(JournalError::Header);
    }
    let mut rules = Vec::with_capacity(count);
    for _ in 0..count {
        let n = u32::from_le_bytes(r.take()?) as usize;
        let id = std::str::from_utf8(r.slice(n)?).map_err(|_| JournalError::Header)?;
        rules.push(id.to_owned());
    }
    let end = r.at;
    let sum = u64::from_le_bytes(r.take()?);
    if fnv1a(&bytes[..end]) != sum {
        return Err(JournalError::Header);
    }
    let mut entries = Vec::new();
    let mut damage = None;
    let entries_at = r.at;
    for e in Entries::new(bytes, r.at) {
        match e {
            Ok((entry, _)) => entries.push(entry),
            Err(d) => damage = Some(d),
        }
    }
    Ok(Journal {
        base,
        rules,
        entries,
        damage,
        entries_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut j = header(7, &["a", "rule-b"]);
        push_entry(&mut j, 0, Some(5), 100, b"x");
        push_entry(&mut j, 1, None, 200, b"arn:aws:iam::1:user/y");
        push_entry(&mut j, 0, Some(0), 300, b"");
        j
    }

    #[test]
    fn entries_round_trip() {
        let bytes = sample();
        let j = read(&bytes).unwrap();
        assert_eq!(j.base, 7);
        assert_eq!(j.rules, ["a", "rule-b"]);
        assert_eq!(j.damage, None);
        let got: Vec<(u32, Option<u64>, i64, &[u8])> = j
            .entries
            .iter()
            .map(|e| (e.rule, e.new, e.time, e.key))
            .collect();
        assert_eq!(
            got,
            [
                (0, Some(5), 100, &b"x"[..]),
                (1, None, 200, &b"arn:aws:iam::1:user/y"[..]),
                (0, Some(0), 300, &b""[..])
            ]
        );
    }

    #[test]
    fn a_torn_or_damaged_entry_costs_itself_and_what_follows() {
        let bytes = sample();
        let whole = read(&bytes).unwrap().entries.len();
        let header_len = header(7, &["a", "rule-b"]).len();
        // Every cut keeps the entries before it; one inside an entry says so.
        let sizes = [1usize, 21, 0].map(|key| ENTRY_FIXED + key + 4);
        let mut ends = vec![header_len];
        for s in sizes {
            ends.push(ends[ends.len() - 1] + s);
        }
        assert_eq!(ends[3], bytes.len());
        for cut in header_len..bytes.len() {
            let j = read(&bytes[..cut]).unwrap();
            let whole_before = ends.iter().filter(|&&e| e <= cut).count() - 1;
            assert_eq!(j.entries.len(), whole_before, "cut at {cut}");
            assert_eq!(j.damage.is_none(), ends.contains(&cut), "cut at {cut}");
            if let Some(d) = &j.damage {
                assert_eq!((d.at, d.at + d.dropped), (ends[whole_before], cut));
            }
        }
        // A flipped byte in an entry: that entry and the rest are dropped.
        for i in header_len..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            let j = read(&b).unwrap();
            assert!(j.damage.is_some(), "flip at {i}");
            assert!(j.entries.len() < whole);
        }
        // A damaged header: nothing is trusted.
        for i in 8..header_len {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            assert!(read(&b).is_err(), "flip at {i}");
        }
        assert_eq!(read(b"nope").unwrap_err(), JournalError::Foreign);
    }

    #[test]
    fn the_base_is_the_snapshots_checksum() {
        assert_eq!(base_of(None), 0);
        assert_eq!(base_of(Some(&[9, 2, 0, 0, 0, 0, 0, 0, 0])), 2);
    }
}
