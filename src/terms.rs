//! The term table: when each term was last seen, bounded by a window and a capacity.
//!
//! A term is the bytes of its value (a tuple of values is joined with `0xFF`, a byte
//! UTF-8 never contains). Each term's `last_seen` lives in a slot; a hash index of slot
//! numbers finds it; a min-heap of `(last_seen, slot)` finds the oldest. The heap holds
//! exactly one entry per live slot and its key never exceeds the slot's `last_seen`
//! (which only grows): an entry found stale on top is pushed back with the true value,
//! so the oldest term is always found without an entry per update.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use hashbrown::HashTable;

use crate::time::Nanos;

/// What the table said about one sighting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    /// No state for the term, or its last sighting more than the window ago.
    pub new: bool,
    /// The sighting is older than the watermark by more than the allowed lateness.
    pub late: bool,
    /// The table changed: the term is stored anew, or its `last_seen` grew (a change a
    /// journal must keep; any other sighting leaves the table as it was).
    pub changed: bool,
}

/// The table's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TermLimits {
    /// The history window W: a term is new when last seen more than W ago.
    pub window: Nanos,
    /// How far behind the newest time a record may be and still be decided exactly.
    pub allowed_lateness: Nanos,
    /// The most terms held; the oldest `last_seen` is evicted first.
    pub max_terms: usize,
    /// The most bytes the table may hold, counted as [`TermTable::cost`] per term; the
    /// oldest `last_seen` is evicted first. Whichever of the two binds first evicts.
    pub max_bytes: usize,
}

/// The bytes one term costs beyond its own: its slot (key pointer and length,
/// `last_seen`), its heap entry, its index entry with the hash table's slack, and the
/// allocator's header for the key. Measured by `benches/memory.rs`.
pub const TERM_OVERHEAD: usize = 64;

/// Counters the table keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TermCounters {
    pub evicted_window: u64,
    pub evicted_capacity: u64,
}

#[derive(Debug)]
struct Slot {
    key: Box<[u8]>,
    last_seen: Nanos,
}

/// The bounded table of terms and when each was last seen.
#[derive(Debug)]
pub struct TermTable {
    limits: TermLimits,
    hasher: ahash::RandomState,
    index: HashTable<u32>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    heap: BinaryHeap<Reverse<(Nanos, u32)>>,
    watermark: Option<Nanos>,
    counters: TermCounters,
    /// The sum of [`TermTable::cost`] over the terms held.
    bytes: usize,
}

impl TermTable {
    /// What a term of `key_len` bytes counts against `max_bytes`.
    pub fn cost(key_len: usize) -> usize {
        key_len + TERM_OVERHEAD
    }

    /// Whether a term of `key_len` bytes can be held at all under the byte budget.
    pub fn fits(&self, key_len: usize) -> bool {
        Self::cost(key_len) <= self.limits.max_bytes
    }

    /// The bytes counted against `max_bytes` now.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn new(limits: TermLimits) -> Self {
        TermTable {
            limits,
            hasher: hasher(),
            index: HashTable::new(),
            slots: Vec::new(),
            free: Vec::new(),
            heap: BinaryHeap::new(),
            watermark: None,
            counters: TermCounters::default(),
            bytes: 0,
        }
    }

    pub fn limits(&self) -> TermLimits {
        self.limits
    }

    /// How many terms the table holds.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// The newest time seen so far.
    pub fn watermark(&self) -> Option<Nanos> {
        self.watermark
    }

    pub fn counters(&self) -> TermCounters {
        self.counters
    }

    /// Whether a sighting at `ts` would be late (more than the allowed lateness behind
    /// the newest time seen).
    pub fn is_late(&self, ts: Nanos) -> bool {
        self.watermark
            .is_some_and(|w| ts < w.saturating_sub(self.limits.allowed_lateness))
    }

    /// Records a sighting of `key` at `ts` and says whether it was new.
    pub fn observe(&mut self, key: &[u8], ts: Nanos) -> Observation {
        let late = self.is_late(ts);
        if self.watermark.is_none_or(|w| ts > w) {
            self.watermark = Some(ts);
            self.evict_expired();
        }
        let hash = self.hasher.hash_one(key);
        let slots = &self.slots;
        if let Some(&slot) = self.index.find(hash, |&i| *slots[i as usize].key == *key) {
            let s = &mut self.slots[slot as usize];
            let new = ts.saturating_sub(s.last_seen) > self.limits.window;
            let changed = ts > s.last_seen;
            s.last_seen = s.last_seen.max(ts);
            return Observation { new, late, changed };
        }
        self.make_room(key.len());
        self.insert(hash, key, ts);
        Observation {
            new: true,
            late,
            changed: true,
        }
    }

    /// Evicts the oldest terms until one more of `key_len` bytes fits both limits.
    fn make_room(&mut self, key_len: usize) {
        while self.len() >= self.limits.max_terms
            || self.bytes + Self::cost(key_len) > self.limits.max_bytes
        {
            if !self.evict_oldest(None) {
                break;
            }
            self.counters.evicted_capacity += 1;
        }
    }

    fn insert(&mut self, hash: u64, key: &[u8], ts: Nanos) {
        self.bytes += Self::cost(key.len());
        let slot = Slot {
            key: key.into(),
            last_seen: ts,
        };
        let idx = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = slot;
                i
            }
            None => {
                self.slots.push(slot);
                (self.slots.len() - 1) as u32
            }
        };
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.index
            .insert_unique(hash, idx, |&i| hasher.hash_one(&*slots[i as usize].key));
        self.heap.push(Reverse((ts, idx)));
    }

    /// Drops every term last seen before `watermark - window - allowed_lateness`.
    fn evict_expired(&mut self) {
        let Some(w) = self.watermark else { return };
        let horizon = w
            .saturating_sub(self.limits.window)
            .saturating_sub(self.limits.allowed_lateness);
        while self.evict_oldest(Some(horizon)) {
            self.counters.evicted_window += 1;
        }
    }

    /// Evicts the term with the oldest `last_seen` (only if older than `before`, when
    /// given). Returns whether one was evicted.
    fn evict_oldest(&mut self, before: Option<Nanos>) -> bool {
        while let Some(&Reverse((key_ts, idx))) = self.heap.peek() {
            if before.is_some_and(|b| key_ts >= b) {
                return false;
            }
            self.heap.pop();
            let last_seen = self.slots[idx as usize].last_seen;
            if last_seen > key_ts {
                // Stale entry: the term was seen since; requeue with its true time.
                self.heap.push(Reverse((last_seen, idx)));
                continue;
            }
            let key = std::mem::take(&mut self.slots[idx as usize].key);
            self.bytes -= Self::cost(key.len());
            let hash = self.hasher.hash_one(&*key);
            if let Ok(entry) = self.index.find_entry(hash, |&i| i == idx) {
                entry.remove();
            }
            self.free.push(idx);
            return true;
        }
        false
    }

    /// A table holding `terms` (oldest first) as of `watermark`, as a snapshot saved them.
    /// Terms beyond `max_terms` are evicted oldest first, as if they had been seen.
    pub fn restore(
        limits: TermLimits,
        watermark: Option<Nanos>,
        terms: Vec<(Vec<u8>, Nanos)>,
    ) -> Self {
        let mut t = TermTable::new(limits);
        for (key, ts) in terms {
            let hash = t.hasher.hash_one(&key[..]);
            let slots = &t.slots;
            if let Some(&slot) = t.index.find(hash, |&i| *slots[i as usize].key == *key) {
                let s = &mut t.slots[slot as usize];
                s.last_seen = s.last_seen.max(ts);
                continue;
            }
            if !t.fits(key.len()) {
                continue;
            }
            t.make_room(key.len());
            t.insert(hash, &key, ts);
        }
        t.watermark = watermark;
        t
    }

    /// The terms and their `last_seen`, oldest first (for tests and diagnostics).
    pub fn entries(&self) -> Vec<(&[u8], Nanos)> {
        let mut v: Vec<_> = self
            .heap
            .iter()
            .map(|Reverse((_, i))| {
                let s = &self.slots[*i as usize];
                (&*s.key, s.last_seen)
            })
            .collect();
        v.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(b.0)));
        v
    }
}

/// The index hasher. Natively it is seeded from the process's random hash keys, so an
/// attacker cannot precompute colliding terms; a wasm guest has no entropy source (the
/// component imports nothing) and uses fixed keys.
fn hasher() -> ahash::RandomState {
    #[cfg(not(target_family = "wasm"))]
    {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(0x6e65_7774_6572_6d73);
        let a = h.finish();
        h.write_u64(a);
        let b = h.finish();
        ahash::RandomState::with_seeds(a, b, a.rotate_left(17), b.rotate_left(29))
    }
    #[cfg(target_family = "wasm")]
    {
        ahash::RandomState::with_seeds(
            0x243f_6a88_85a3_08d3,
            0x1319_8a2e_0370_7344,
            0xa409_3822_299f_31d0,
            0x082e_fa98_ec4e_6c89,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::{NANOS_PER_DAY, NANOS_PER_HOUR};

    fn table(max_terms: usize) -> TermTable {
        TermTable::new(TermLimits {
            window: 10 * NANOS_PER_DAY,
            allowed_lateness: NANOS_PER_HOUR,
            max_terms,
            max_bytes: usize::MAX,
        })
    }

    const D: Nanos = NANOS_PER_DAY;

    #[test]
    fn window_boundary_is_inclusive() {
        let mut t = table(10);
        assert!(t.observe(b"a", 0).new);
        assert!(
            !t.observe(b"a", 10 * D).new,
            "exactly W later is still seen"
        );
        assert!(
            t.observe(b"a", 20 * D + 1).new,
            "more than W after the last sighting"
        );
        assert!(!t.observe(b"a", 5 * D).new, "a late record is never new");
        assert_eq!(t.entries(), vec![(&b"a"[..], 20 * D + 1)]);
    }

    #[test]
    fn window_eviction_and_lateness() {
        let mut t = table(10);
        t.observe(b"old", 0);
        t.observe(b"mid", 5 * D);
        t.observe(b"x", 10 * D + NANOS_PER_HOUR);
        assert_eq!(
            t.len(),
            3,
            "nothing is older than watermark - W - lateness yet"
        );
        t.observe(b"x", 10 * D + NANOS_PER_HOUR + 1);
        assert_eq!(t.len(), 2);
        assert_eq!(t.counters().evicted_window, 1);
        assert!(t.is_late(10 * D - 1));
        assert!(!t.is_late(10 * D + 1));
    }

    #[test]
    fn capacity_evicts_oldest_last_seen() {
        let mut t = table(2);
        t.observe(b"a", 1);
        t.observe(b"b", 2);
        t.observe(b"a", 3); // a is now newer than b
        assert!(t.observe(b"c", 4).new);
        assert_eq!(t.counters().evicted_capacity, 1);
        let keys: Vec<_> = t.entries().into_iter().map(|(k, _)| k.to_vec()).collect();
        assert_eq!(keys, vec![b"a".to_vec(), b"c".to_vec()]);
        assert!(t.observe(b"b", 5).new, "b was evicted");
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn the_byte_budget_evicts_oldest_first() {
        let mut t = TermTable::new(TermLimits {
            window: 10 * D,
            allowed_lateness: NANOS_PER_HOUR,
            max_terms: 100,
            max_bytes: 3 * TermTable::cost(10),
        });
        for (i, k) in [b"aaaaaaaaaa", b"bbbbbbbbbb", b"cccccccccc"]
            .iter()
            .enumerate()
        {
            t.observe(*k, i as Nanos);
        }
        assert_eq!((t.len(), t.bytes()), (3, 3 * TermTable::cost(10)));
        t.observe(&[b'd'; 20], 5);
        let keys: Vec<_> = t.entries().into_iter().map(|(k, _)| k[0]).collect();
        assert_eq!(keys, vec![b'c', b'd'], "a and b made room for the longer d");
        assert_eq!(t.counters().evicted_capacity, 2);
        assert_eq!(t.bytes(), TermTable::cost(10) + TermTable::cost(20));
        assert!(!t.fits(3 * TermTable::cost(10)));
    }

    #[test]
    fn slots_are_reused_and_index_stays_consistent() {
        let mut t = table(3);
        for i in 0..1000u32 {
            let k = (i % 7).to_le_bytes();
            t.observe(&k, i64::from(i));
            assert!(t.len() <= 3);
        }
        assert_eq!(t.slots.len(), 3);
        for (k, _) in t.entries() {
            let hash = t.hasher.hash_one(k);
            assert!(t
                .index
                .find(hash, |&i| *t.slots[i as usize].key == *k)
                .is_some());
        }
    }
}
