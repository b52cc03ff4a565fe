//! When and how a host saves the term table, and what it does when it does not restore.

use super::{io_error, Files, HostError};
use crate::{Detector, RuleError};

/// When a host saves the term table: every so many records, or every so many seconds of
/// record time (the newest record time the host has seen), whichever comes first.
///
/// One default for every host: 10,000 records or 60 seconds. Record time, not the wall
/// clock, so a replay saves where the live run did, and a stalled stream does not write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatePolicy {
    pub every_records: u64,
    pub every_seconds: u64,
}

impl Default for StatePolicy {
    fn default() -> Self {
        StatePolicy {
            every_records: 10_000,
            every_seconds: 60,
        }
    }
}

/// When the last save was, and whether the next is due under a [`StatePolicy`]: what a
/// state file and a `newterms consume` partition both count.
#[derive(Debug, Clone, Copy)]
pub struct Cadence {
    pub policy: StatePolicy,
    since: u64,
    saved_at: Option<i64>,
}

impl Cadence {
    pub fn new(policy: StatePolicy) -> Cadence {
        Cadence {
            policy,
            since: 0,
            saved_at: None,
        }
    }

    /// Counts `records` more records, the newest at record time `now` (seconds); whether
    /// a save is due.
    pub fn tick(&mut self, records: u64, now: Option<i64>) -> bool {
        self.since += records;
        let saved_at = match (self.saved_at, now) {
            (Some(at), _) => Some(at),
            (None, Some(now)) => {
                self.saved_at = Some(now);
                Some(now)
            }
            (None, None) => None,
        };
        let by_time = match (saved_at, now) {
            (Some(at), Some(now)) => now.saturating_sub(at) >= self.policy.every_seconds as i64,
            _ => false,
        };
        self.since >= self.policy.every_records || by_time
    }

    /// A save was made at record time `now`: counting starts again.
    pub fn saved(&mut self, now: Option<i64>) {
        self.since = 0;
        if now.is_some() {
            self.saved_at = now;
        }
    }

    /// Records counted since the last save.
    pub fn since_save(&self) -> u64 {
        self.since
    }
}

/// A state file and when it was last written.
#[derive(Debug, Clone)]
pub struct StateFile {
    pub path: String,
    pub cadence: Cadence,
}

/// What a host found in its state file at start.
#[derive(Debug)]
pub enum Restored {
    /// No state file: an empty table.
    Fresh(Detector),
    /// The table was restored; the number of terms.
    Restored(Detector, u64),
    /// The file did not restore (the reason); it was moved to the path given (or could
    /// not be, and the message says so), and the detector starts empty.
    Quarantined(Detector, String),
}

impl Restored {
    pub fn detector(self) -> Detector {
        match self {
            Restored::Fresh(d) | Restored::Restored(d, _) | Restored::Quarantined(d, _) => d,
        }
    }

    /// A line for the host's log.
    pub fn describe(&self, path: &str) -> String {
        match self {
            Restored::Fresh(_) => format!("no state at {path}: starting with an empty table"),
            Restored::Restored(_, n) => format!("restored {n} terms from {path}"),
            Restored::Quarantined(_, why) => why.clone(),
        }
    }
}

impl StateFile {
    pub fn new(path: impl Into<String>, policy: StatePolicy) -> StateFile {
        StateFile {
            path: path.into(),
            cadence: Cadence::new(policy),
        }
    }

    /// Counts `records` more records, the newest at record time `now` (seconds); whether
    /// a save is due.
    pub fn tick(&mut self, records: u64, now: Option<i64>) -> bool {
        self.cadence.tick(records, now)
    }

    /// Writes the table atomically, and starts counting again from `now`.
    pub fn save(
        &mut self,
        files: &dyn Files,
        bytes: &[u8],
        now: Option<i64>,
    ) -> Result<(), HostError> {
        files
            .write_atomic(&self.path, bytes)
            .map_err(|e| io_error(&self.path, e))?;
        self.cadence.saved(now);
        Ok(())
    }

    /// The detector `open` makes, with the table saved here when there is one. A file
    /// that does not restore is moved aside to `<path>.bad` (kept for inspection, never
    /// overwritten by the next save) and the detector starts empty.
    pub fn restore(
        &self,
        files: &dyn Files,
        open: impl Fn(Option<&[u8]>) -> Result<Detector, RuleError>,
    ) -> Result<Restored, RuleError> {
        let bytes = match files.read(&self.path) {
            Ok(Some(b)) => b,
            Ok(None) => return open(None).map(Restored::Fresh),
            Err(e) => {
                let fresh = open(None)?;
                return Ok(Restored::Quarantined(
                    fresh,
                    format!(
                        "cannot read state {}: {e}; starting with an empty table",
                        self.path
                    ),
                ));
            }
        };
        match open(Some(&bytes)) {
            Ok(d) => {
                let n = d.stats().terms_held;
                Ok(Restored::Restored(d, n))
            }
            Err(RuleError::Snapshot { error }) => {
                let fresh = open(None)?;
                let aside = format!("{}.bad", self.path);
                let moved = match files.rename(&self.path, &aside) {
                    Ok(()) => format!("moved to {aside}"),
                    Err(e) => format!("could not move it aside: {e}"),
                };
                Ok(Restored::Quarantined(
                    fresh,
                    format!(
                        "state {} does not restore ({error}); {moved}; starting with an empty table",
                        self.path
                    ),
                ))
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::tests::Memory;

    #[test]
    fn saves_by_records_and_by_record_time() {
        let mut f = StateFile::new(
            "s",
            StatePolicy {
                every_records: 3,
                every_seconds: 60,
            },
        );
        assert!(!f.tick(1, Some(1000)));
        assert!(!f.tick(1, Some(1059)));
        assert!(f.tick(1, Some(1059)), "three records");
        let fs = Memory::default();
        f.save(&fs, b"x", Some(1059)).unwrap();
        assert!(!f.tick(1, Some(1100)));
        assert!(f.tick(1, Some(1119)), "sixty seconds of record time");
        f.save(&fs, b"y", Some(1119)).unwrap();
        assert!(!f.tick(1, None), "no clock: records only");
        assert_eq!(fs.read("s").unwrap(), Some(b"y".to_vec()));
    }

    #[test]
    fn a_bad_state_file_is_quarantined() {
        let fs = Memory::default();
        let f = StateFile::new("t.state", StatePolicy::default());
        let open = |snap: Option<&[u8]>| match snap {
            None => Detector::from_config("", ""),
            Some(b) => Detector::open::<&str, &str>(&[], &crate::Settings::default(), Some(b)),
        };
        assert!(matches!(f.restore(&fs, open).unwrap(), Restored::Fresh(_)));
        fs.write_atomic("t.state", b"garbage").unwrap();
        let r = f.restore(&fs, open).unwrap();
        assert!(matches!(r, Restored::Quarantined(..)), "{r:?}");
        assert!(r.describe("t.state").contains("moved to t.state.bad"));
        assert_eq!(fs.read("t.state.bad").unwrap(), Some(b"garbage".to_vec()));
        assert_eq!(fs.read("t.state").unwrap(), None);
        let good = Detector::from_config("", "").unwrap().snapshot();
        fs.write_atomic("t.state", &good).unwrap();
        assert!(matches!(
            f.restore(&fs, open).unwrap(),
            Restored::Restored(_, 0)
        ));
    }
}
