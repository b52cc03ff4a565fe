//! Host policy, written once for every host: where a host finds its rules, exception
//! exports and value lists; when it saves the term table, how it saves it, and what it
//! does with a saved table that does not restore. The file system is passed in
//! ([`Files`]), so the same decisions run natively, under WASI in Fluent Bit, and in tests.

use std::io;
use std::path::Path;

use crate::exceptions::ValueLists;

mod filter;
mod intake;
mod state;

pub use filter::{
    Filter, Places, Recoveries, BUNDLE_FIELD, FLUENT_BIT, MAX_RECOVERIES, SPLIT_LUA, STACK_NEED,
};
pub use intake::{reading_order, Damage, Frame, Framer};
pub use state::{Cadence, Restored, StateFile, StatePolicy};

/// The file operations a host provides.
pub trait Files {
    /// A file's bytes; `None` when it does not exist.
    fn read(&self, path: &str) -> io::Result<Option<Vec<u8>>>;
    /// A directory's entries that are files, as paths; `None` when it does not exist.
    fn list(&self, dir: &str) -> io::Result<Option<Vec<String>>>;
    /// Replaces a file's contents all at once: a reader sees the old or the new bytes,
    /// and after a crash the file holds one or the other.
    fn write_atomic(&self, path: &str, bytes: &[u8]) -> io::Result<()>;
    /// Adds bytes at a file's end (creating it), in one write: a crash leaves them all, or
    /// a prefix of them, after what was there.
    fn append(&self, path: &str, bytes: &[u8]) -> io::Result<()>;
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    /// The directories the host opened for us (a WASI host's preopens, by the names it
    /// gave them), in its order; none where every path is reachable.
    fn opened_dirs(&self) -> Vec<String>;
}

/// The process's own file system (`std::fs`; under WASI, the directories the host opened).
#[derive(Debug, Clone, Copy, Default)]
pub struct StdFiles;

/// Whether an error means the file is not there: not found, or outside every directory a
/// WASI host opened (ENOTCAPABLE, 76, which wasi-libc gives for a relative path when `.`
/// is not opened).
fn absent(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
        || (cfg!(target_os = "wasi") && e.raw_os_error() == Some(76))
}

impl Files for StdFiles {
    fn read(&self, path: &str) -> io::Result<Option<Vec<u8>>> {
        match std::fs::read(path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if absent(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn list(&self, dir: &str) -> io::Result<Option<Vec<String>>> {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            // A file is not a directory to list.
            Err(e) if absent(&e) || e.kind() == io::ErrorKind::NotADirectory => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut files = Vec::new();
        for entry in entries {
            let path = entry?.path();
            if path.is_file() {
                files.push(path.display().to_string());
            }
        }
        Ok(Some(files))
    }

    /// A temporary file beside it, written and synced, renamed over it; then the
    /// directory is synced, so the rename itself survives a power loss where the platform
    /// allows it.
    fn write_atomic(&self, path: &str, bytes: &[u8]) -> io::Result<()> {
        use std::io::Write;
        let tmp = format!("{path}.tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = Path::new(path).parent() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            // Not every platform can open a directory to sync it; the rename stands.
            let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(())
    }

    /// Opened for each append: nothing is held between calls, so a call that never
    /// returns (a trap in Fluent Bit) leaves no lock or handle behind.
    fn append(&self, path: &str, bytes: &[u8]) -> io::Result<()> {
        use std::io::Write;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?
            .write_all(bytes)
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn opened_dirs(&self) -> Vec<String> {
        preopens::names()
    }
}

/// The directories a WASI preview 1 host opened: file descriptors from 3 up, each a
/// "prestat" directory, until the first that is not (the preview 1 convention wasi-libc
/// itself follows).
#[cfg(all(target_family = "wasm", target_os = "wasi"))]
mod preopens {
    #[link(wasm_import_module = "wasi_snapshot_preview1")]
    extern "C" {
        fn fd_prestat_get(fd: i32, prestat: *mut u32) -> i32;
        fn fd_prestat_dir_name(fd: i32, path: *mut u8, len: i32) -> i32;
    }

    /// Far more than any host opens; a bound on a loop that trusts the host.
    const MOST: i32 = 1024;

    pub(super) fn names() -> Vec<String> {
        let mut out = Vec::new();
        for fd in 3..3 + MOST {
            // `prestat`: a tag (0: a directory) in the first byte, the name's length after.
            let mut prestat = [0u32; 2];
            // SAFETY: the host writes the 8-byte prestat of `fd` into our buffer.
            if unsafe { fd_prestat_get(fd, prestat.as_mut_ptr()) } != 0 {
                break;
            }
            if prestat[0] & 0xff != 0 {
                continue;
            }
            let mut name = vec![0u8; prestat[1] as usize];
            // SAFETY: `name` has the length the host gave for this name.
            let errno = unsafe { fd_prestat_dir_name(fd, name.as_mut_ptr(), name.len() as i32) };
            if errno != 0 {
                continue;
            }
            // Some hosts count a trailing NUL.
            while name.last() == Some(&0) {
                name.pop();
            }
            if let Ok(name) = String::from_utf8(name) {
                out.push(name);
            }
        }
        out
    }
}

/// Natively every path is reachable: no directory is opened for us.
#[cfg(not(all(target_family = "wasm", target_os = "wasi")))]
mod preopens {
    pub(super) fn names() -> Vec<String> {
        Vec::new()
    }
}

/// A file a host could not use.
#[derive(Debug)]
pub struct HostError {
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for HostError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

impl std::error::Error for HostError {}

fn io_error(path: &str, e: io::Error) -> HostError {
    HostError {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

fn text(path: &str, bytes: Vec<u8>) -> Result<String, HostError> {
    String::from_utf8(bytes).map_err(|_| HostError {
        path: path.to_owned(),
        message: "not UTF-8 text".into(),
    })
}

/// The first of `candidates` that exists, as a file or a directory.
pub fn first_present<'c>(
    files: &dyn Files,
    candidates: &[&'c str],
) -> Result<Option<&'c str>, HostError> {
    for &c in candidates {
        if files.list(c).map_err(|e| io_error(c, e))?.is_some() {
            return Ok(Some(c));
        }
        if files.read(c).map_err(|e| io_error(c, e))?.is_some() {
            return Ok(Some(c));
        }
    }
    Ok(None)
}

/// The rule files at `paths`, as `(path, text)`: a file as it is, a directory as its
/// `*.toml` files in name order. A path that does not exist is an error.
pub fn read_rules<S: AsRef<str>>(
    files: &dyn Files,
    paths: &[S],
) -> Result<Vec<(String, String)>, HostError> {
    let mut rules = Vec::new();
    for p in paths {
        let p = p.as_ref();
        if let Some(mut entries) = files.list(p).map_err(|e| io_error(p, e))? {
            entries.retain(|f| f.ends_with(".toml"));
            entries.sort();
            for f in entries {
                let bytes = files.read(&f).map_err(|e| io_error(&f, e))?;
                let bytes = bytes.ok_or_else(|| HostError {
                    path: f.clone(),
                    message: "vanished while being read".into(),
                })?;
                rules.push((f.clone(), text(&f, bytes)?));
            }
            continue;
        }
        match files.read(p).map_err(|e| io_error(p, e))? {
            Some(bytes) => rules.push((p.to_owned(), text(p, bytes)?)),
            None => {
                return Err(HostError {
                    path: p.to_owned(),
                    message: "no such file or directory".into(),
                })
            }
        }
    }
    Ok(rules)
}

/// Kibana exception-list exports, and the value lists they name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Exceptions {
    pub exports: Vec<String>,
    pub lists: ValueLists,
}

impl Exceptions {
    /// The exports at `paths`, each with the value lists it names read from beside it
    /// (`<id>.txt`, else `<id>`). A path that does not exist is an error; a list without
    /// its file is left out, and loading the export then names the item and the file.
    pub fn read<S: AsRef<str>>(files: &dyn Files, paths: &[S]) -> Result<Exceptions, HostError> {
        let mut out = Exceptions::default();
        for p in paths {
            let p = p.as_ref();
            let bytes = files.read(p).map_err(|e| io_error(p, e))?;
            let export = text(
                p,
                bytes.ok_or_else(|| HostError {
                    path: p.to_owned(),
                    message: "no such file".into(),
                })?,
            )?;
            let read = |path: &Path| -> Result<Option<String>, HostError> {
                let shown = path.display().to_string();
                match files.read(&shown).map_err(|e| io_error(&shown, e))? {
                    Some(bytes) => text(&shown, bytes).map(Some),
                    None => Ok(None),
                }
            };
            let lists = crate::exceptions::value_lists_beside(Path::new(p), &export, read)
                .map_err(|(_, e)| e)?;
            out.lists.extend(lists);
            out.exports.push(export);
        }
        Ok(out)
    }

    /// The settings that carry them to a detector.
    pub fn settings(&self) -> crate::Settings {
        crate::Settings::default().with_kibana_exceptions(&self.exports, &self.lists)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    /// Files in memory.
    #[derive(Default)]
    pub(crate) struct Memory(RefCell<BTreeMap<String, Vec<u8>>>);

    impl Files for Memory {
        fn read(&self, path: &str) -> io::Result<Option<Vec<u8>>> {
            Ok(self.0.borrow().get(path).cloned())
        }
        fn list(&self, dir: &str) -> io::Result<Option<Vec<String>>> {
            let prefix = format!("{dir}/");
            let found: Vec<String> = self
                .0
                .borrow()
                .keys()
                .filter(|k| k.starts_with(&prefix) && !k[prefix.len()..].contains('/'))
                .cloned()
                .collect();
            Ok((!found.is_empty()).then_some(found))
        }
        fn write_atomic(&self, path: &str, bytes: &[u8]) -> io::Result<()> {
            self.0.borrow_mut().insert(path.into(), bytes.to_vec());
            Ok(())
        }
        fn opened_dirs(&self) -> Vec<String> {
            Vec::new()
        }
        fn append(&self, path: &str, bytes: &[u8]) -> io::Result<()> {
            self.0
                .borrow_mut()
                .entry(path.into())
                .or_default()
                .extend_from_slice(bytes);
            Ok(())
        }
        fn rename(&self, from: &str, to: &str) -> io::Result<()> {
            let b = self
                .0
                .borrow_mut()
                .remove(from)
                .ok_or(io::ErrorKind::NotFound)?;
            self.0.borrow_mut().insert(to.into(), b);
            Ok(())
        }
    }

    #[test]
    fn rules_and_packs_are_found() {
        let fs = Memory::default();
        fs.write_atomic("etc/rule.toml", b"r").unwrap();
        fs.write_atomic("etc/rules/b.toml", b"b").unwrap();
        fs.write_atomic("etc/rules/a.toml", b"a").unwrap();
        fs.write_atomic("etc/rules/notes.txt", b"x").unwrap();
        assert_eq!(
            first_present(&fs, &["nope", "etc/rules"]).unwrap(),
            Some("etc/rules")
        );
        let rules = read_rules(&fs, &["etc/rule.toml", "etc/rules"]).unwrap();
        let names: Vec<&str> = rules.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            names,
            ["etc/rule.toml", "etc/rules/a.toml", "etc/rules/b.toml"]
        );
        assert!(read_rules(&fs, &["missing.toml"]).is_err());
    }
}
