//! Intake: a stream of text cut into JSON values, whatever its layout, without losing a
//! record to its neighbour's damage.
//!
//! The host hands over the stream a line at a time ([`Framer::line`], then
//! [`Framer::finish`]); the framer hands back [`Frame`]s. It decides the layout from the
//! content, value by value, so no one guess about the whole stream can go wrong:
//!
//! - a line holding whole values (NDJSON) gives each value at once, so a stream is read as
//!   it comes (standard input does not wait for its end);
//! - a value that does not end on its line (a pretty-printed document, an array) goes on
//!   over the next lines, and comes out whole, as one frame;
//! - several values one after another are each a frame, whether they share a line or not;
//!   a comma between two values at the top level is taken as a separator.
//!
//! **Damage.** The framer follows JSON's grammar (strings, escapes, nesting, where a key
//! or a comma may stand), not only its brackets, so it sees where the text stops being
//! JSON. A string never holds a raw line break, so a line cut short inside a string is
//! found at its end; a line cut elsewhere is found where the next line's text cannot
//! continue it (`{"a":1,` then `{"b":2}`: a key must follow the comma). Then:
//!
//! - a value that began on the damaged line: the line is a [`Frame::Bad`], and the next
//!   line starts afresh;
//! - a value that began on an earlier line: that first line is a [`Frame::Bad`], and every
//!   later line it had taken is read again from the top level. A truncated NDJSON line
//!   costs that line and nothing else; the records after it come out as records.
//! - the end of the stream inside a value is damage of the same kind (a truncated file).
//!
//! A bad frame says where the text stopped being JSON ([`Damage`]); the host reports it as
//! an error for its line (`invalid-json`), since the detector's prefilter may skip text
//! that cannot match without parsing it. A value over the
//! size limit is not kept: it is followed to its end and reported as
//! [`Frame::TooLarge`], without reading it again.
//!
//! Each line is scanned once; a damaged value's lines are scanned again at most once per
//! line it held before the damage showed, and the limit bounds what is held.

use std::collections::VecDeque;

/// One piece of the stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A JSON value (as far as its structure goes) and the line it starts on (1-based).
    Value { line: u64, text: &'a [u8] },
    /// Text that is not JSON: a damaged line, or the first line of a damaged value.
    Bad {
        line: u64,
        text: &'a [u8],
        why: Damage,
    },
    /// A value over the limit, from its first line; `bytes` is its size, or what there was
    /// of it when it broke off.
    TooLarge { line: u64, bytes: usize },
}

/// Where text stopped being JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Damage {
    /// A byte that cannot stand there, at a 1-based column of the bad line.
    Unexpected { column: usize, byte: u8 },
    /// The line ends inside a string or a `true`/`false`/`null`.
    LineEnds,
    /// The value goes on over later lines until one that cannot continue it.
    NotContinued { line: u64 },
    /// The stream ends inside the value.
    StreamEnds,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Damage::Unexpected { column, byte } => match byte {
                0x20..=0x7E => write!(f, "not JSON: `{}` at column {column}", *byte as char),
                _ => write!(f, "not JSON: byte 0x{byte:02X} at column {column}"),
            },
            Damage::LineEnds => write!(f, "not JSON: the line ends inside a string or a word"),
            Damage::NotContinued { line } => write!(
                f,
                "not JSON: a value starts here and is not whole (line {line} cannot continue it)"
            ),
            Damage::StreamEnds => write!(f, "not JSON: the input ends inside this value"),
        }
    }
}

/// Cuts a stream, a line at a time, into [`Frame`]s.
#[derive(Debug)]
pub struct Framer {
    syntax: Syntax,
    max_value: usize,
    /// Lines read so far.
    lines: u64,
    /// The value that runs on from earlier lines: its text so far (lines joined by `\n`),
    /// where each line after the first starts in it, and its first line's number.
    pending: Vec<u8>,
    pending_starts: Vec<usize>,
    pending_line: u64,
    /// The pending value is over the limit: followed, no longer kept.
    oversize: Option<usize>,
    /// Lines to read again after damage, with their numbers.
    again: VecDeque<(u64, Vec<u8>)>,
    /// The values that began and ended on the current line (kept between lines, so a line
    /// costs no allocation).
    whole: Vec<(usize, usize)>,
}

impl Framer {
    /// A framer that refuses values over `max_value` bytes.
    pub fn new(max_value: usize) -> Framer {
        Framer {
            syntax: Syntax::default(),
            max_value,
            lines: 0,
            pending: Vec::new(),
            pending_starts: Vec::new(),
            pending_line: 0,
            oversize: None,
            again: VecDeque::new(),
            whole: Vec::new(),
        }
    }

    /// Lines read so far.
    pub fn lines(&self) -> u64 {
        self.lines
    }

    /// Whether a value runs on past the last line (more lines are needed to finish it).
    pub fn in_value(&self) -> bool {
        self.syntax.in_value()
    }

    /// Reads the next line (without its `\n`; a trailing `\r` is blank space).
    pub fn line(&mut self, text: &[u8], sink: &mut dyn FnMut(Frame<'_>)) {
        self.lines += 1;
        let text = match (self.lines, text) {
            (1, [0xEF, 0xBB, 0xBF, rest @ ..]) => rest, // a UTF-8 byte order mark
            _ => text,
        };
        self.feed(self.lines, text, sink);
        self.read_again(sink);
    }

    /// The end of the stream: a value still open is damage (a truncated stream).
    pub fn finish(&mut self, sink: &mut dyn FnMut(Frame<'_>)) {
        while self.syntax.in_value() {
            self.broken(None, sink);
            self.read_again(sink);
        }
    }

    fn read_again(&mut self, sink: &mut dyn FnMut(Frame<'_>)) {
        while let Some((number, text)) = self.again.pop_front() {
            self.feed(number, &text, sink);
        }
    }

    /// One line: its values, or its damage.
    fn feed(&mut self, number: u64, text: &[u8], sink: &mut dyn FnMut(Frame<'_>)) {
        // Whether the value in progress began on an earlier line.
        let mut continuing = self.syntax.in_value();
        // Where the line's own text starts: after the earlier value, once it ends.
        let mut rest = 0;
        // The values that began and ended on this line, given when the line is good.
        let mut whole = std::mem::take(&mut self.whole);
        whole.clear();
        let mut start = 0;
        let mut i = 0;
        while i <= text.len() {
            let at_top = !self.syntax.in_value();
            let step = match text.get(i) {
                Some(&b) => self.syntax.byte(b),
                None => self.syntax.end_of_line(),
            };
            // A byte that ended a number is read again, as what follows the number.
            let consumed = i < text.len() && !self.syntax.reread;
            match step {
                Step::Next => {
                    if at_top && self.syntax.in_value() {
                        start = i;
                    }
                }
                Step::Ended => {
                    let end = if consumed { i + 1 } else { i };
                    if continuing {
                        self.close_pending(&text[..end], sink);
                        continuing = false;
                        rest = end;
                    } else {
                        whole.push((start, end));
                    }
                }
                Step::Invalid => {
                    if continuing {
                        self.broken(Some((number, text)), sink);
                    } else {
                        self.syntax = Syntax::default();
                        sink(Frame::Bad {
                            line: number,
                            text: text[rest..].trim_ascii(),
                            why: match text.get(i) {
                                Some(&byte) => Damage::Unexpected {
                                    column: i + 1,
                                    byte,
                                },
                                None => Damage::LineEnds,
                            },
                        });
                    }
                    self.whole = whole;
                    return;
                }
            }
            if consumed || i == text.len() {
                i += 1;
            }
        }
        for &(s, e) in &whole {
            let value = &text[s..e];
            match value.len() > self.max_value {
                true => sink(Frame::TooLarge {
                    line: number,
                    bytes: value.len(),
                }),
                false => sink(Frame::Value {
                    line: number,
                    text: value,
                }),
            }
        }
        self.whole = whole;
        if self.syntax.in_value() {
            if continuing {
                self.extend_pending(text);
            } else {
                self.pending.clear();
                self.pending_starts.clear();
                self.pending_line = number;
                self.oversize = None;
                self.extend_pending(&text[start..]);
            }
        }
    }

    fn extend_pending(&mut self, text: &[u8]) {
        if let Some(bytes) = &mut self.oversize {
            *bytes += text.len() + 1;
            return;
        }
        if !self.pending.is_empty() || !self.pending_starts.is_empty() {
            self.pending.push(b'\n');
            self.pending_starts.push(self.pending.len());
        }
        self.pending.extend_from_slice(text);
        if self.pending.len() > self.max_value {
            self.oversize = Some(self.pending.len());
            self.pending = Vec::new();
            self.pending_starts.clear();
        }
    }

    /// The value from earlier lines ends on this line, with `tail`.
    fn close_pending(&mut self, tail: &[u8], sink: &mut dyn FnMut(Frame<'_>)) {
        let line = self.pending_line;
        if let Some(bytes) = self.oversize.take() {
            sink(Frame::TooLarge {
                line,
                bytes: bytes + 1 + tail.len(),
            });
            return;
        }
        self.extend_pending(tail);
        if let Some(bytes) = self.oversize.take() {
            sink(Frame::TooLarge { line, bytes });
            return;
        }
        sink(Frame::Value {
            line,
            text: &self.pending,
        });
        self.pending.clear();
        self.pending_starts.clear();
    }

    /// The value from earlier lines is damaged (at `current`, or at the end of the
    /// stream): its first line is bad, and the lines after it are read again.
    fn broken(&mut self, current: Option<(u64, &[u8])>, sink: &mut dyn FnMut(Frame<'_>)) {
        self.syntax = Syntax::default();
        let line = self.pending_line;
        if let Some(bytes) = self.oversize.take() {
            // Not kept, so not read again: the value is reported whole, and reading goes
            // on after the line where the damage showed.
            sink(Frame::TooLarge {
                line,
                bytes: bytes + current.map_or(0, |(_, t)| t.len()),
            });
            return;
        }
        let first_end = self
            .pending_starts
            .first()
            .map_or(self.pending.len(), |&s| s - 1);
        sink(Frame::Bad {
            line,
            text: self.pending[..first_end].trim_ascii(),
            why: match current {
                Some((number, _)) => Damage::NotContinued { line: number },
                None => Damage::StreamEnds,
            },
        });
        let mut again = Vec::new();
        for (k, &s) in self.pending_starts.iter().enumerate() {
            let e = self
                .pending_starts
                .get(k + 1)
                .map_or(self.pending.len(), |&n| n - 1);
            again.push((line + 1 + k as u64, self.pending[s..e].to_vec()));
        }
        if let Some((number, text)) = current {
            again.push((number, text.to_vec()));
        }
        for item in again.into_iter().rev() {
            self.again.push_front(item);
        }
        self.pending.clear();
        self.pending_starts.clear();
    }
}

/// What one byte did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Read (or, with [`Syntax::reread`], to be read again).
    Next,
    /// A top-level value ended: with this byte, or before it when it is to be read again.
    Ended,
    /// This byte cannot continue JSON.
    Invalid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Between top-level values.
    Top,
    Value,
    ValueOrClose,
    Key,
    KeyOrClose,
    Colon,
    CommaOrClose,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    None,
    /// Inside a string: `escape` is 1 after a backslash, 2 to 5 inside a `\u` escape (the
    /// hex digits still to come, plus one), else 0.
    Str {
        key: bool,
        escape: u8,
    },
    Number,
    /// `true`, `false` or `null`: the letters still to come.
    Literal(&'static [u8]),
}

/// JSON's grammar, a byte at a time, as far as framing needs it: the containers open, what
/// may come next, and the token under way. Numbers are read loosely (their characters);
/// the detector's parser judges them.
#[derive(Debug, Clone)]
struct Syntax {
    stack: Vec<u8>,
    expect: Expect,
    token: Token,
    /// The last byte ended a number and is to be read again.
    reread: bool,
}

impl Default for Syntax {
    fn default() -> Syntax {
        Syntax {
            stack: Vec::new(),
            expect: Expect::Top,
            token: Token::None,
            reread: false,
        }
    }
}

impl Syntax {
    fn in_value(&self) -> bool {
        self.expect != Expect::Top || self.token != Token::None
    }

    /// A value (or a key) ended: `Ended` when it was a top-level value.
    fn after_value(&mut self, key: bool) -> Step {
        if key {
            self.expect = Expect::Colon;
            Step::Next
        } else if self.stack.is_empty() {
            self.expect = Expect::Top;
            Step::Ended
        } else {
            self.expect = Expect::CommaOrClose;
            Step::Next
        }
    }

    /// The line ends: a line break is blank space, except inside a string or a literal.
    fn end_of_line(&mut self) -> Step {
        self.reread = false;
        match self.token {
            Token::Str { .. } | Token::Literal(_) => Step::Invalid,
            Token::Number => {
                self.token = Token::None;
                self.after_value(false)
            }
            Token::None => Step::Next,
        }
    }

    fn byte(&mut self, b: u8) -> Step {
        self.reread = false;
        match self.token {
            Token::Str { key, escape } => {
                self.token = match (escape, b) {
                    (0, b'"') => {
                        self.token = Token::None;
                        return self.after_value(key);
                    }
                    (0, b'\\') => Token::Str { key, escape: 1 },
                    (0, 0..=0x1F) => return Step::Invalid,
                    (0, _) => return Step::Next,
                    (1, b'u') => Token::Str { key, escape: 5 },
                    (1, b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                        Token::Str { key, escape: 0 }
                    }
                    (n, b) if n >= 2 && b.is_ascii_hexdigit() => Token::Str {
                        key,
                        escape: if n == 2 { 0 } else { n - 1 },
                    },
                    _ => return Step::Invalid,
                };
                Step::Next
            }
            Token::Number => {
                if matches!(b, b'0'..=b'9' | b'+' | b'-' | b'.' | b'e' | b'E') {
                    return Step::Next;
                }
                self.token = Token::None;
                self.reread = true;
                self.after_value(false)
            }
            Token::Literal(rest) => match rest.split_first() {
                Some((&c, more)) if c == b => {
                    self.token = Token::Literal(more);
                    if more.is_empty() {
                        self.token = Token::None;
                        return self.after_value(false);
                    }
                    Step::Next
                }
                _ => Step::Invalid,
            },
            Token::None => self.structure(b),
        }
    }

    fn structure(&mut self, b: u8) -> Step {
        if matches!(b, b' ' | b'\t' | b'\r') {
            return Step::Next;
        }
        let value = matches!(
            self.expect,
            Expect::Top | Expect::Value | Expect::ValueOrClose
        );
        match b {
            b'{' if value => {
                self.stack.push(b'{');
                self.expect = Expect::KeyOrClose;
            }
            b'[' if value => {
                self.stack.push(b'[');
                self.expect = Expect::ValueOrClose;
            }
            b'"' if value => {
                self.token = Token::Str {
                    key: false,
                    escape: 0,
                }
            }
            b'"' if matches!(self.expect, Expect::Key | Expect::KeyOrClose) => {
                self.token = Token::Str {
                    key: true,
                    escape: 0,
                }
            }
            b'-' | b'0'..=b'9' if value => self.token = Token::Number,
            b't' if value => self.token = Token::Literal(b"rue"),
            b'f' if value => self.token = Token::Literal(b"alse"),
            b'n' if value => self.token = Token::Literal(b"ull"),
            b':' if self.expect == Expect::Colon => self.expect = Expect::Value,
            b',' if self.expect == Expect::Top => {} // a separator between values
            b',' if self.expect == Expect::CommaOrClose => {
                self.expect = match self.stack.last() {
                    Some(b'{') => Expect::Key,
                    _ => Expect::Value,
                }
            }
            b'}' | b']'
                if matches!(
                    (self.expect, self.stack.last(), b),
                    (Expect::CommaOrClose | Expect::KeyOrClose, Some(b'{'), b'}')
                        | (
                            Expect::CommaOrClose | Expect::ValueOrClose,
                            Some(b'['),
                            b']'
                        )
                ) =>
            {
                self.stack.pop();
                return self.after_value(false);
            }
            _ => return Step::Invalid,
        }
        Step::Next
    }
}

/// Puts files found in a directory in the order to read them: by the time their names
/// carry, where they carry one, so event time runs as monotone as the layout allows. A
/// CloudTrail delivery file is named `<account>_CloudTrail_<region>_<YYYYMMDDTHHMMZ>_<id>.json.gz`
/// and filed under `<region>/<year>/<month>/<day>/`: by path, every region would be read
/// through before the next, going back in time at each; by the name's time, the regions'
/// files interleave. Files whose names carry no time come first, by path; ties by path.
pub fn reading_order(paths: &mut [String]) {
    paths.sort_by(|a, b| (name_time(a), a.as_str()).cmp(&(name_time(b), b.as_str())));
}

/// The `YYYYMMDDTHHMMZ` in a file's name (after its last `/`), when it has one.
fn name_time(path: &str) -> Option<&str> {
    let name = path.rsplit('/').next().unwrap_or(path);
    let bytes = name.as_bytes();
    (0..bytes.len().saturating_sub(13)).find_map(|i| {
        let w = &bytes[i..i + 14];
        let shape = w[..8].iter().all(u8::is_ascii_digit)
            && w[8] == b'T'
            && w[9..13].iter().all(u8::is_ascii_digit)
            && w[13] == b'Z';
        shape.then(|| &name[i..i + 14])
    })
}

#[cfg(test)]
mod tests;
