//! The command's state file.

use std::path::PathBuf;

use anyhow::{Context, Result};

use newterms_host::Supervised;

/// Where the term table is kept between runs.
pub(crate) struct StateFile {
    pub(crate) path: PathBuf,
    pub(crate) every: u64,
    pub(crate) every_seconds: u64,
    pub(crate) since_save: u64,
    pub(crate) saved_at: std::time::Instant,
}

impl StateFile {
    /// Writes the snapshot atomically, as every host does (`newterms::host::Files`: a
    /// temporary file beside it, synced, renamed over, the directory synced).
    pub(crate) fn save(&mut self, session: &mut Supervised) -> Result<()> {
        use newterms::host::Files;
        let bytes = session.snapshot()?;
        let path = self.path.display().to_string();
        newterms::host::StdFiles
            .write_atomic(&path, &bytes)
            .with_context(|| format!("writing state to {path}"))?;
        self.since_save = 0;
        self.saved_at = std::time::Instant::now();
        Ok(())
    }

    /// Whether enough records or (wall-clock) seconds have passed since the last write.
    pub(crate) fn due(&self) -> bool {
        self.since_save >= self.every || self.saved_at.elapsed().as_secs() >= self.every_seconds
    }
}
