//! When and how a host saves the term table, and what it does when it does not restore;
//! the journal beside the state file that keeps every change in between.

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

/// A state file, when it was last written, and its journal (`<path>.journal`): every
/// change to the tables since the last write, appended before the call that made it
/// returns ([`crate::journal`]), so a host stopped anywhere restarts where it stopped.
/// The journal is folded into the state file at the state file's cadence, and sooner when
/// it passes [`JOURNAL_MAX_BYTES`].
#[derive(Debug, Clone)]
pub struct StateFile {
    pub path: String,
    pub cadence: Cadence,
    journal: String,
    /// The checksum of the state file as last read or written (0: none), which the
    /// journal's header names.
    base: u64,
    /// The journal's size, as far as this host wrote it.
    journal_bytes: u64,
    /// Changes taken from the detector, reused between calls.
    scratch: Vec<u8>,
    /// The new sightings since the last fold, as journal entries: the next journal starts
    /// with them, so that a record the host delivers again after a fold still gets its
    /// alert ([`crate::journal`], outputs the host lost).
    carry: Vec<u8>,
}

/// The journal is folded into the state file once it is this large, whatever the cadence:
/// it bounds the journal's size and the time a restart spends replaying it.
pub const JOURNAL_MAX_BYTES: u64 = 16 << 20;

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
        let path = path.into();
        StateFile {
            journal: format!("{path}.journal"),
            path,
            cadence: Cadence::new(policy),
            base: 0,
            journal_bytes: 0,
            scratch: Vec::new(),
            carry: Vec::new(),
        }
    }

    /// The journal's path.
    pub fn journal_path(&self) -> &str {
        &self.journal
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
        self.base = crate::journal::base_of(Some(bytes));
        self.cadence.saved(now);
        Ok(())
    }

    /// Folds the journal into the state file: the detector's table written atomically,
    /// then an empty journal that follows it. A crash between the two leaves a journal
    /// naming the older state file, which a restart knows to be stale.
    pub fn fold(
        &mut self,
        files: &dyn Files,
        detector: &Detector,
        now: Option<i64>,
    ) -> Result<(), HostError> {
        self.save(files, &detector.snapshot(), now)?;
        self.start_journal(files, detector)
    }

    /// Starts a journal that follows the state file as last written: its header, then the
    /// new sightings carried over.
    fn start_journal(&mut self, files: &dyn Files, detector: &Detector) -> Result<(), HostError> {
        let mut journal = detector.journal_header(self.base);
        journal.append(&mut self.carry);
        files
            .write_atomic(&self.journal, &journal)
            .map_err(|e| io_error(&self.journal, e))?;
        self.journal_bytes = journal.len() as u64;
        Ok(())
    }

    /// Keeps the new sightings among `entries` for the next journal.
    fn carry_new(&mut self, entries: &[u8], at: usize) {
        for (entry, raw) in crate::journal::Entries::new(entries, at).flatten() {
            if entry.new.is_some() {
                self.carry.extend_from_slice(raw);
            }
        }
    }

    /// Replays the journal into `detector` (just restored from this state file) and makes
    /// it keep its changes from now on, folding what was replayed into the state file.
    /// Returns lines for the host's log.
    pub fn resume(
        &mut self,
        files: &dyn Files,
        detector: &mut Detector,
    ) -> Result<Vec<String>, HostError> {
        let mut said = Vec::new();
        let path = self.journal.clone();
        let bytes = files.read(&path).map_err(|e| io_error(&path, e))?;
        let mut replayed = false;
        match bytes.as_deref().map(crate::journal::read) {
            None => {}
            Some(Err(e)) => said.push(format!("journal {path} is not read ({e}): ignored")),
            Some(Ok(j)) if j.base != self.base => said.push(format!(
                "journal {path} is older than state {}, which holds its changes: ignored",
                self.path
            )),
            Some(Ok(j)) => {
                let (applied, skipped) = detector.replay(&j);
                if let Some(b) = &bytes {
                    self.carry_new(b, j.entries_at);
                }
                replayed = applied > 0 || j.damage.is_some();
                let mut line = format!("replayed {applied} changes from journal {path}");
                if skipped > 0 {
                    line.push_str(&format!(" ({skipped} of rules no longer loaded skipped)"));
                }
                said.push(line);
                if let Some(d) = &j.damage {
                    said.push(format!(
                        "journal {path}: {d} (a write cut short by a crash costs only the change \
                         it held)"
                    ));
                }
                if !replayed {
                    // Whole and empty: appending goes on after its header.
                    self.journal_bytes = bytes.as_ref().map_or(0, |b| b.len() as u64);
                }
            }
        }
        detector.keep_changes(true);
        if replayed {
            self.fold(files, detector, None)?;
        } else if self.journal_bytes == 0 {
            self.start_journal(files, detector)?;
        }
        Ok(said)
    }

    /// After a call: appends the changes it made to the journal, counts its `records`
    /// (the newest at record time `now`, seconds), and folds the journal into the state
    /// file when the cadence or the journal's size says so. Whether it wrote anything.
    pub fn after_call(
        &mut self,
        files: &dyn Files,
        detector: &mut Detector,
        records: u64,
        now: Option<i64>,
    ) -> Result<bool, HostError> {
        self.scratch.clear();
        detector.take_changes(&mut self.scratch);
        let wrote = !self.scratch.is_empty();
        if wrote {
            files
                .append(&self.journal, &self.scratch)
                .map_err(|e| io_error(&self.journal, e))?;
            self.journal_bytes += self.scratch.len() as u64;
            let scratch = std::mem::take(&mut self.scratch);
            self.carry_new(&scratch, 0);
            self.scratch = scratch;
        }
        if self.tick(records, now) || self.journal_bytes > JOURNAL_MAX_BYTES {
            self.fold(files, detector, now)?;
            // What a restart left pending is long delivered.
            detector.settle();
            return Ok(true);
        }
        Ok(wrote)
    }

    /// The detector `open` makes, with the table saved here when there is one. A file
    /// that does not restore is moved aside to `<path>.bad` (kept for inspection, never
    /// overwritten by the next save) and the detector starts empty.
    pub fn restore(
        &mut self,
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
                self.base = crate::journal::base_of(Some(&bytes));
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
        let mut f = StateFile::new("t.state", StatePolicy::default());
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

    /// A host stopped anywhere restarts with every change: those in the state file and
    /// those its journal kept after it; the records it delivers again get the alerts it
    /// may have lost; a torn last entry costs that change alone.
    #[test]
    fn the_journal_keeps_what_the_state_file_lacks() {
        let fs = Memory::default();
        let policy = StatePolicy {
            every_records: 10,
            every_seconds: 1_000_000,
        };
        let record = |i: u32| {
            format!(
                r#"{{"eventTime":"2026-01-01T00:00:{i:02}Z","eventSource":"sts.amazonaws.com","eventName":"GetCallerIdentity","userIdentity":{{"type":"IAMUser","arn":"arn:aws:iam::1:user/u{i}"}}}}"#
            )
        };
        let open = |snap: Option<&[u8]>| {
            Detector::open::<&str, &str>(&[], &crate::Settings::default(), snap)
        };
        let start = |fs: &Memory| {
            let mut f = StateFile::new("t.state", policy);
            let mut d = f.restore(fs, open).unwrap().detector();
            let said = f.resume(fs, &mut d).unwrap();
            (f, d, said)
        };
        let alerts = |d: &mut Detector, f: &mut StateFile, from: u32, to: u32| {
            let mut n = 0;
            for i in from..to {
                n += d.process_collect(record(i).as_bytes()).len();
                f.after_call(&fs, d, 1, Some(i64::from(i))).unwrap();
            }
            n
        };
        let (mut f, mut d, said) = start(&fs);
        assert!(said.is_empty(), "{said:?}");
        assert_eq!(alerts(&mut d, &mut f, 0, 12), 12);
        // Stopped after 12 records: the state file holds 10; the journal carries the new
        // sightings of those 10, and holds the last 2.
        let (mut f, mut d, said) = start(&fs);
        assert_eq!(said, ["replayed 12 changes from journal t.state.journal"]);
        assert_eq!(d.stats().terms_held, 12);
        assert_eq!(
            alerts(&mut d, &mut f, 10, 12),
            2,
            "records delivered again get the alerts the host may have lost"
        );
        assert_eq!(alerts(&mut d, &mut f, 10, 12), 0, "once");
        assert_eq!(alerts(&mut d, &mut f, 12, 14), 2);
        // A crash mid-append: the last change (u13's) is torn, and only it is lost.
        let mut journal = fs.read("t.state.journal").unwrap().unwrap();
        let whole = journal.len();
        journal.truncate(whole - 3);
        fs.write_atomic("t.state.journal", &journal).unwrap();
        let (mut f, d, said) = start(&fs);
        assert_eq!(said[0], "replayed 13 changes from journal t.state.journal");
        assert!(said[1].contains("a torn entry"), "{said:?}");
        assert_eq!(d.stats().terms_held, 13);
        // A journal older than the state file (a crash between the two writes of a
        // fold) is ignored: the state file holds its changes.
        f.fold(&fs, &d, None).unwrap();
        let mut stale = d.journal_header(12345);
        crate::journal::push_entry(&mut stale, 0, None, 0, b"arn:aws:iam::1:user/stale");
        fs.write_atomic("t.state.journal", &stale).unwrap();
        let (_, d, said) = start(&fs);
        assert!(said[0].contains("is older than state t.state"), "{said:?}");
        assert_eq!(d.stats().terms_held, 13);
    }
}
