//! A partition's state message: the term tables of one matches partition and the offset
//! they cover, as one message of the (compacted) state topic, keyed by
//! `<matches topic>/<partition>`.
//!
//! ```text
//! newterms-partition-state/1\n
//! {"topic":"matches","partition":3,"next_offset":120000}\n
//! <sha-256 of the line above and the snapshot, hex>\n
//! <the detector's snapshot (itself versioned and checksummed)>
//! ```

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const MAGIC: &[u8] = b"newterms-partition-state/1\n";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Header {
    pub(crate) topic: String,
    pub(crate) partition: i32,
    /// The first offset the snapshot does not cover: where the partition resumes.
    pub(crate) next_offset: i64,
}

/// The state topic's key for a matches partition.
pub(crate) fn key(topic: &str, partition: i32) -> String {
    format!("{topic}/{partition}")
}

pub(crate) fn encode(header: &Header, snapshot: &[u8]) -> Result<Vec<u8>> {
    let line = serde_json::to_vec(header)?;
    let mut h = Sha256::new();
    h.update(&line);
    h.update(snapshot);
    let digest = hex(&h.finalize());
    let mut out = Vec::with_capacity(MAGIC.len() + line.len() + 66 + snapshot.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&line);
    out.push(b'\n');
    out.extend_from_slice(digest.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(snapshot);
    Ok(out)
}

/// The header and snapshot of a state message, which must be of `topic`/`partition`.
pub(crate) fn decode<'a>(
    bytes: &'a [u8],
    topic: &str,
    partition: i32,
) -> Result<(Header, &'a [u8])> {
    let Some(rest) = bytes.strip_prefix(MAGIC) else {
        bail!("not a newterms partition state (no `newterms-partition-state/1` line)");
    };
    let (line, rest) = split_line(rest).context("no header line")?;
    let (digest, snapshot) = split_line(rest).context("no checksum line")?;
    let mut h = Sha256::new();
    h.update(line);
    h.update(snapshot);
    if hex(&h.finalize()).as_bytes() != digest {
        bail!("checksum mismatch: the message is damaged");
    }
    let header: Header = serde_json::from_slice(line).context("header")?;
    if header.topic != topic || header.partition != partition {
        bail!(
            "it is the state of {}/{}, not of {topic}/{partition}",
            header.topic,
            header.partition
        );
    }
    if header.next_offset < 0 {
        bail!("negative offset {}", header.next_offset);
    }
    Ok((header, snapshot))
}

fn split_line(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let i = memchr_newline(b)?;
    Some((&b[..i], &b[i + 1..]))
}

fn memchr_newline(b: &[u8]) -> Option<usize> {
    b.iter().position(|&c| c == b'\n')
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let h = Header {
            topic: "m".into(),
            partition: 3,
            next_offset: 42,
        };
        let bytes = encode(&h, b"\x00snap\nshot").unwrap();
        let (got, snap) = decode(&bytes, "m", 3).unwrap();
        assert_eq!(got, h);
        assert_eq!(snap, b"\x00snap\nshot");
        assert!(decode(&bytes, "m", 4).is_err(), "another partition's");
        for i in MAGIC.len()..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x20;
            assert!(decode(&bad, "m", 3).is_err(), "a flip at byte {i} passed");
        }
        assert!(decode(b"garbage", "m", 3).is_err());
    }
}
