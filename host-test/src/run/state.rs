//! The command's state file, saved on the core's cadence (records, and the record clock).

use std::path::PathBuf;

use anyhow::{Context, Result};

use newterms::host::Cadence;
use newterms_host::Supervised;

/// Where the term table is kept between runs.
pub(crate) struct StateFile {
    pub(crate) path: PathBuf,
    pub(crate) cadence: Cadence,
}

impl StateFile {
    /// Counts `records` more records; saves when the cadence says so.
    pub(crate) fn tick(&mut self, session: &mut Supervised, records: u64) -> Result<()> {
        let now = session.record_clock()?;
        if self.cadence.tick(records, now) {
            self.save(session)?;
        }
        Ok(())
    }

    /// Writes the snapshot atomically, as every host does (`newterms::host::Files`: a
    /// temporary file beside it, synced, renamed over, the directory synced).
    pub(crate) fn save(&mut self, session: &mut Supervised) -> Result<()> {
        use newterms::host::Files;
        let bytes = session.snapshot()?;
        let path = self.path.display().to_string();
        newterms::host::StdFiles
            .write_atomic(&path, &bytes)
            .with_context(|| format!("writing state to {path}"))?;
        self.cadence.saved(session.record_clock()?);
        Ok(())
    }
}
