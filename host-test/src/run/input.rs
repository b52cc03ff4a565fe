//! Where a run's records come from: the files and directories to read, how a file's
//! bytes are counted, and what the framer gave.

use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use anyhow::{Context, Result};

use newterms::host::Frame;

use crate::usage;

/// A reader that says how much it holds already read (so the next read may wait).
pub(crate) trait Buffered: BufRead {
    fn buffered(&self) -> usize;
}

impl<R: Read> Buffered for BufReader<R> {
    fn buffered(&self) -> usize {
        self.buffer().len()
    }
}

/// Counts the bytes read through it (before decompression), for the progress line.
pub(crate) struct Counted<R> {
    pub(crate) inner: R,
    pub(crate) count: std::rc::Rc<std::cell::Cell<u64>>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}

/// The inputs to read, in order: `-` and files as given; a directory's files (every level
/// down) in the order [`newterms::host::reading_order`] gives.
pub(crate) fn inputs(args: &[String]) -> Result<Vec<String>> {
    fn walk(dir: &Path, out: &mut Vec<String>) -> Result<()> {
        let entries =
            std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
            let path = entry.path();
            // Hidden files and directories (`.git`, editors' files) are not input.
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            if path.is_dir() {
                walk(&path, out)?;
            } else if path.is_file() {
                out.push(path.display().to_string());
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    for a in args {
        let path = Path::new(a);
        // Not only regular files: `/dev/stdin`, a pipe, `<(zcat ...)`.
        if a == "-" || (path.exists() && !path.is_dir()) {
            files.push(a.clone());
        } else if path.is_dir() {
            let mut found = Vec::new();
            walk(path, &mut found)?;
            newterms::host::reading_order(&mut found);
            files.extend(found);
        } else {
            return Err(usage(format!("{a}: no such file or directory")));
        }
    }
    Ok(files)
}

/// What the framer gave since the last call: values packed one after another, each
/// followed by a newline (a run of one-line values is NDJSON as it stands, sent without
/// another copy), with where each stands and its line; and the lines the command itself
/// reports (not JSON, too large to keep).
#[derive(Default)]
pub(crate) struct Framed {
    pub(crate) packed: Vec<u8>,
    /// Each value: its range in `packed`, its first line, and whether it spans lines.
    pub(crate) values: Vec<Value>,
    pub(crate) refused: Vec<(u64, &'static str, String)>,
}

#[derive(Clone, Copy)]
pub(crate) struct Value {
    pub(crate) start: usize,
    pub(crate) end: usize,
    pub(crate) line: u64,
    pub(crate) multiline: bool,
}

impl Framed {
    pub(crate) fn take(&mut self, frame: Frame<'_>, max_document: usize) {
        match frame {
            Frame::Value { line, text } => {
                let start = self.packed.len();
                self.packed.extend_from_slice(text);
                self.values.push(Value {
                    start,
                    end: self.packed.len(),
                    line,
                    multiline: text.contains(&b'\n'),
                });
                self.packed.push(b'\n');
            }
            Frame::Bad { line, text, why } => {
                const SHOWN: usize = 120;
                let shown = String::from_utf8_lossy(&text[..text.len().min(SHOWN)]);
                let more = if text.len() > SHOWN { "..." } else { "" };
                let message = format!("{why}: {shown}{more}");
                self.refused.push((line, "invalid-json", message));
            }
            Frame::TooLarge { line, bytes } => self.refused.push((
                line,
                "too-large",
                format!(
                    "a value of {bytes} bytes or more, over the host's limit of {max_document}: refused by the host"
                ),
            )),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.values.is_empty() && self.refused.is_empty()
    }

    pub(crate) fn clear(&mut self) {
        self.packed.clear();
        self.values.clear();
    }
}
