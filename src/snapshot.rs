//! The portable state format: a detector's term table as bytes, and back.
//!
//! The same bytes on every build (native, component, Fluent Bit module): integers are
//! little-endian, terms are written oldest first (by `last_seen`, then by bytes), so the
//! hasher's seed and the platform play no part. Layout, version 2:
//!
//! ```text
//! magic      8 bytes  "NEWTERMS"
//! version    u16      2
//! reserved   u16      0
//! rule_id    u32 length + UTF-8
//! fields     u32 count, then each: u32 length + UTF-8   (the new-terms fields, in order)
//! window     i64      nanoseconds (informational: the loading rule's window applies)
//! watermark  i64      nanoseconds; i64::MIN when nothing was seen
//! first      i64      the time of the first record the rule accepted (its learning
//!                     period starts there); i64::MIN when none
//! count      u64
//! terms      count times: i64 last_seen, u32 length, bytes
//! checksum   u64      FNV-1a 64 of everything before it
//! ```
//!
//! Version 1 is the same without `first`; it is read as having accepted a record long ago
//! when it has a watermark (a table with history is a baseline: no learning period starts
//! over on it), and none otherwise.
//!
//! A rule pack's state is its rules' snapshots in one container, version 1:
//!
//! ```text
//! magic      8 bytes  "NEWTERMP"
//! version    u16      1
//! reserved   u16      0
//! count      u32
//! snapshots  count times: u64 length, then one rule's snapshot as above
//! checksum   u64      FNV-1a 64 of everything before it
//! ```

use std::fmt;

use crate::time::Nanos;

const MAGIC: &[u8; 8] = b"NEWTERMS";
const VERSION: u16 = 2;
const PACK_MAGIC: &[u8; 8] = b"NEWTERMP";
const PACK_VERSION: u16 = 1;

/// Encodes the snapshots of a pack's rules as one container.
pub fn encode_pack(snapshots: &[Snapshot]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(PACK_MAGIC);
    out.extend_from_slice(&PACK_VERSION.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&(snapshots.len() as u32).to_le_bytes());
    for s in snapshots {
        let one = s.encode();
        out.extend_from_slice(&(one.len() as u64).to_le_bytes());
        out.extend_from_slice(&one);
    }
    let sum = fnv1a(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    out
}

/// Decodes a pack container or a single rule's snapshot, as a list of rule snapshots.
pub fn decode_any(bytes: &[u8]) -> Result<Vec<Snapshot>, SnapshotError> {
    if bytes.len() < PACK_MAGIC.len() || &bytes[..PACK_MAGIC.len()] != PACK_MAGIC {
        return Snapshot::decode(bytes).map(|s| vec![s]);
    }
    let (mut r, _) = checked_body(bytes, &[PACK_VERSION])?;
    let body = r.bytes;
    let _reserved = u16::from_le_bytes(r.array()?);
    let count = u32::from_le_bytes(r.array()?);
    let mut out = Vec::new();
    for _ in 0..count {
        let len = u64::from_le_bytes(r.array()?);
        let len = usize::try_from(len).map_err(|_| SnapshotError::Truncated { at: r.at })?;
        out.push(Snapshot::decode(r.take(len)?)?);
    }
    if r.at != body.len() {
        return Err(SnapshotError::Malformed(format!(
            "{} bytes after the rules' snapshots",
            body.len() - r.at
        )));
    }
    Ok(out)
}

/// The decoded content of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub rule_id: String,
    pub fields: Vec<String>,
    pub window: Nanos,
    pub watermark: Option<Nanos>,
    /// The time of the first record the rule accepted: its learning period starts there.
    pub first_accepted: Option<Nanos>,
    /// `(term, last_seen)`, oldest first.
    pub terms: Vec<(Vec<u8>, Nanos)>,
}

/// A snapshot that cannot be restored.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SnapshotError {
    /// Not a newterms snapshot at all.
    Foreign,
    /// A newer (or unknown) format version.
    Version(u16),
    /// Ends early: `needed` more bytes at `at`.
    Truncated { at: usize },
    /// The checksum does not match: the bytes were changed.
    Corrupt,
    /// Well-formed but inconsistent (what, where).
    Malformed(String),
    /// Taken by another rule (or with other new-terms fields).
    OtherRule { snapshot: String, rule: String },
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotError::Foreign => f.write_str("not a newterms snapshot (bad magic)"),
            SnapshotError::Version(v) => write!(
                f,
                "snapshot format version {v} is not supported (this build reads 1 to {VERSION})"
            ),
            SnapshotError::Truncated { at } => write!(f, "snapshot truncated at byte {at}"),
            SnapshotError::Corrupt => {
                f.write_str("snapshot checksum mismatch: the file is corrupted")
            }
            SnapshotError::Malformed(m) => write!(f, "malformed snapshot: {m}"),
            SnapshotError::OtherRule { snapshot, rule } => {
                write!(f, "the snapshot belongs to {snapshot}, not to {rule}")
            }
        }
    }
}

impl std::error::Error for SnapshotError {}

pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl Snapshot {
    pub fn encode(&self) -> Vec<u8> {
        let size: usize = 64 + self.terms.iter().map(|(k, _)| k.len() + 12).sum::<usize>();
        let mut out = Vec::with_capacity(size);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        put_bytes(&mut out, self.rule_id.as_bytes());
        out.extend_from_slice(&(self.fields.len() as u32).to_le_bytes());
        for f in &self.fields {
            put_bytes(&mut out, f.as_bytes());
        }
        out.extend_from_slice(&self.window.to_le_bytes());
        out.extend_from_slice(&self.watermark.unwrap_or(i64::MIN).to_le_bytes());
        out.extend_from_slice(&self.first_accepted.unwrap_or(i64::MIN).to_le_bytes());
        out.extend_from_slice(&(self.terms.len() as u64).to_le_bytes());
        for (k, t) in &self.terms {
            out.extend_from_slice(&t.to_le_bytes());
            put_bytes(&mut out, k);
        }
        let sum = fnv1a(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Snapshot, SnapshotError> {
        if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
            return Err(SnapshotError::Foreign);
        }
        let (mut r, version) = checked_body(bytes, &[1, VERSION])?;
        let body = r.bytes;
        let _reserved = u16::from_le_bytes(r.array()?);
        let rule_id = r.string("rule_id")?;
        let nfields = u32::from_le_bytes(r.array()?) as usize;
        if nfields > 3 {
            return Err(SnapshotError::Malformed(format!(
                "{nfields} new-terms fields"
            )));
        }
        let fields = (0..nfields)
            .map(|_| r.string("field"))
            .collect::<Result<Vec<_>, _>>()?;
        let window = i64::from_le_bytes(r.array()?);
        let watermark = match i64::from_le_bytes(r.array()?) {
            i64::MIN => None,
            w => Some(w),
        };
        let first_accepted = if version == 1 {
            watermark.map(|_| i64::MIN)
        } else {
            match i64::from_le_bytes(r.array()?) {
                i64::MIN => None,
                t => Some(t),
            }
        };
        let count = u64::from_le_bytes(r.array()?);
        // Each term takes at least 12 bytes: a count beyond that is a lie, not a reason
        // to allocate.
        if count > (body.len() / 12) as u64 {
            return Err(SnapshotError::Malformed(format!(
                "{count} terms in {} bytes",
                body.len()
            )));
        }
        let mut terms = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let t = i64::from_le_bytes(r.array()?);
            let k = r.bytes()?.to_vec();
            if watermark.is_some_and(|w| t > w) {
                return Err(SnapshotError::Malformed(
                    "a term seen after the watermark".into(),
                ));
            }
            terms.push((k, t));
        }
        if r.at != body.len() {
            return Err(SnapshotError::Malformed(format!(
                "{} bytes after the terms",
                body.len() - r.at
            )));
        }
        Ok(Snapshot {
            rule_id,
            fields,
            window,
            watermark,
            first_accepted,
            terms,
        })
    }
}

/// Checks the version after the 8-byte magic (one of `versions`) and the trailing
/// checksum; returns a reader over the bytes before the checksum, at the reserved field,
/// and the version.
fn checked_body<'b>(bytes: &'b [u8], versions: &[u16]) -> Result<(Reader<'b>, u16), SnapshotError> {
    let mut r = Reader { bytes, at: 8 };
    let found = u16::from_le_bytes(r.array()?);
    if !versions.contains(&found) {
        return Err(SnapshotError::Version(found));
    }
    if bytes.len() < r.at + 2 + 4 + 8 {
        return Err(SnapshotError::Truncated { at: bytes.len() });
    }
    let (body, sum) = bytes.split_at(bytes.len() - 8);
    let mut sum_bytes = [0u8; 8];
    sum_bytes.copy_from_slice(sum);
    if fnv1a(body) != u64::from_le_bytes(sum_bytes) {
        // A short file fails here too.
        return Err(SnapshotError::Corrupt);
    }
    Ok((
        Reader {
            bytes: body,
            at: r.at,
        },
        found,
    ))
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SnapshotError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else {
            return Err(SnapshotError::Truncated { at: self.at });
        };
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], SnapshotError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn bytes(&mut self) -> Result<&'a [u8], SnapshotError> {
        let n = u32::from_le_bytes(self.array()?) as usize;
        self.take(n)
    }

    fn string(&mut self, what: &str) -> Result<String, SnapshotError> {
        let b = self.bytes()?;
        String::from_utf8(b.to_vec())
            .map_err(|_| SnapshotError::Malformed(format!("{what} is not UTF-8")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Snapshot {
        Snapshot {
            rule_id: "r".into(),
            fields: vec!["a.b".into()],
            window: 10,
            watermark: Some(100),
            first_accepted: Some(5),
            terms: vec![(b"x".to_vec(), 5), (b"yy".to_vec(), 100)],
        }
    }

    #[test]
    fn round_trip_and_fixed_bytes() {
        let s = sample();
        let bytes = s.encode();
        assert_eq!(Snapshot::decode(&bytes), Ok(s));
        assert_eq!(
            &bytes[..10],
            b"NEWTERMS\x02\x00",
            "magic and little-endian version"
        );
        let empty = Snapshot {
            watermark: None,
            terms: vec![],
            ..sample()
        };
        assert_eq!(Snapshot::decode(&empty.encode()), Ok(empty));
    }

    /// A version 1 snapshot (no `first`): its table is a baseline, so a learning period
    /// does not start over on it; an empty one has accepted nothing yet.
    #[test]
    fn version_1_reads_as_having_accepted_long_ago() {
        let v1 = |s: &Snapshot| {
            let v2 = s.encode();
            // Without the 8 bytes of `first`, after magic, version, reserved, rule id
            // (4 + 1), fields (4 + 4 + 3), window and watermark.
            let at = 8 + 2 + 2 + 5 + 11 + 8 + 8;
            let mut b = v2[..at].to_vec();
            b.extend_from_slice(&v2[at + 8..v2.len() - 8]);
            b[8] = 1;
            let sum = fnv1a(&b);
            b.extend_from_slice(&sum.to_le_bytes());
            b
        };
        let s = sample();
        let read = Snapshot::decode(&v1(&s)).expect("version 1");
        assert_eq!(read.first_accepted, Some(i64::MIN));
        assert_eq!(read.terms, s.terms);
        let empty = Snapshot {
            watermark: None,
            first_accepted: None,
            terms: vec![],
            ..sample()
        };
        let read = Snapshot::decode(&v1(&empty)).expect("version 1");
        assert_eq!(read.first_accepted, None);
    }

    #[test]
    fn packs_round_trip_and_damage_is_an_error() {
        let other = Snapshot {
            rule_id: "s".into(),
            ..sample()
        };
        let bytes = encode_pack(&[sample(), other.clone()]);
        assert_eq!(decode_any(&bytes), Ok(vec![sample(), other]));
        assert_eq!(decode_any(&sample().encode()), Ok(vec![sample()]));
        for cut in 0..bytes.len() {
            assert!(decode_any(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        for i in 10..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            assert!(decode_any(&b).is_err(), "flip at {i}");
        }
    }

    #[test]
    fn damage_is_an_error() {
        let bytes = sample().encode();
        assert_eq!(
            Snapshot::decode(b"{\"not\":1}"),
            Err(SnapshotError::Foreign)
        );
        assert_eq!(Snapshot::decode(&[]), Err(SnapshotError::Foreign));
        for cut in 8..bytes.len() {
            assert!(Snapshot::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        for i in 10..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            assert!(Snapshot::decode(&b).is_err(), "flip at {i}");
        }
        let mut v3 = bytes.clone();
        v3[8] = 3;
        assert_eq!(Snapshot::decode(&v3), Err(SnapshotError::Version(3)));
    }
}
