//! Framing: how one input becomes records. An input is a record, a JSON array of them, a
//! CloudTrail delivery object or an EventBridge envelope (the last two are opened by the
//! record's one parse, in [`Detector::process_record`]); a buffer is NDJSON lines; a
//! match document goes to [`Detector::process_match`].

use std::borrow::Cow;

use serde_json::value::RawValue;

use super::{Detector, Output};
use crate::error::{ErrorKind, RecordError};
use crate::rule::{InputMode, OutputMode};

impl Detector {
    /// Processes one input: a record, a CloudTrail delivery object (`{"Records": [...]}`),
    /// a JSON array of records, or an EventBridge envelope. Every output goes to `sink`.
    pub fn process(&mut self, input: &[u8], sink: &mut dyn FnMut(Output<'_>)) {
        if self.input == InputMode::Matches {
            self.process_match(input, sink);
        } else if first_byte(input) == Some(b'[') {
            self.process_array(input, sink);
        } else {
            self.process_record(input, true, None, sink);
        }
    }

    /// Processes NDJSON: each line of `lines` is one input (a trailing `\r` is dropped, blank
    /// lines are skipped). `sink` gets each output with the 0-based number of its line.
    /// One buffer for many records: the cheapest way across a boundary.
    ///
    /// With one rule, the prefilter judges the lines together: each literal is searched
    /// across the whole buffer once, and a line it rejects is counted without a call of
    /// its own (the answer is the same as line by line).
    pub fn process_lines(&mut self, lines: &[u8], sink: &mut dyn FnMut(usize, Output<'_>)) {
        let prefilter = match (self.output, self.input) {
            (OutputMode::Annotate, _) | (_, InputMode::Matches) => None,
            _ => self.line_prefilter.take(),
        };
        let mut scan = prefilter.as_ref().map(crate::query::BufferScan::new);
        let mut start = 0;
        let mut number = 0;
        while start < lines.len() {
            let end = memchr::memchr(b'\n', &lines[start..]).map_or(lines.len(), |i| start + i);
            let mut line = &lines[start..end];
            if let [head @ .., b'\r'] = line {
                line = head;
            }
            let rejected = scan.as_mut().is_some_and(|scan| {
                first_byte(line) == Some(b'{')
                    && line.len() <= self.max_record_bytes
                    && !starts_with_records_key(line)
                    && !scan.may_match(lines, start, start + line.len())
            });
            if rejected {
                self.stats.records += 1;
                self.stats.prefiltered += 1;
            } else if !line.trim_ascii().is_empty() {
                self.process(line, &mut |o| sink(number, o));
            }
            start = end + 1;
            number += 1;
        }
        if prefilter.is_some() {
            self.line_prefilter = prefilter;
        }
    }

    /// Processes one input and collects its outputs (convenience for tests and hosts).
    pub fn process_collect(&mut self, input: &[u8]) -> Vec<Output<'static>> {
        let mut out = Vec::new();
        self.process(input, &mut |o| {
            out.push(match o {
                Output::Emit(s) => Output::Emit(Cow::Owned(s.into_owned())),
                Output::Error(e) => Output::Error(e),
            })
        });
        out
    }

    fn process_array(&mut self, input: &[u8], sink: &mut dyn FnMut(Output<'_>)) {
        match serde_json::from_slice::<Vec<&RawValue>>(input) {
            Ok(items) => {
                for (i, raw) in items.iter().enumerate() {
                    let place = format!("[{i}]");
                    self.process_record(raw.get().as_bytes(), false, Some(&place), sink);
                }
            }
            Err(e) => self.fail(
                RecordError::new(ErrorKind::InvalidJson, e.to_string()),
                None,
                sink,
            ),
        }
    }
}

pub(super) fn first_byte(text: &[u8]) -> Option<u8> {
    text.iter().copied().find(|b| !b.is_ascii_whitespace())
}

/// Whether the text is an object whose first key is `Records` (a CloudTrail delivery
/// file), judged from its first bytes.
pub(super) fn starts_with_records_key(text: &[u8]) -> bool {
    let mut rest = text;
    let skip_ws = |r: &mut &[u8]| {
        while let [b, tail @ ..] = *r {
            if b.is_ascii_whitespace() {
                *r = tail;
            } else {
                break;
            }
        }
    };
    skip_ws(&mut rest);
    let Some(after) = rest.strip_prefix(b"{") else {
        return false;
    };
    rest = after;
    skip_ws(&mut rest);
    rest.starts_with(b"\"Records\"")
}
