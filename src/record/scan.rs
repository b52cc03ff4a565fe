//! The record scanner: one pass over a record's JSON text that validates all of it and
//! captures the values at the layout's paths.
//!
//! It is iterative: an explicit stack of the containers it walks into (at most 128, the
//! nesting limit below) and a bit stack for the subtrees it skips, so a record nested a
//! hundred thousand levels deep costs no more call stack than a flat one. A host with a
//! small fixed stack (Fluent Bit's WAMR: 8 KiB by default) can parse any record.
//!
//! What it accepts is exactly what serde_json accepts, with the same strictness in the
//! same places (tested against a serde-based walker in `reference.rs`):
//! - every value's syntax is checked, skipped or not;
//! - strings the rules read, and the keys of objects walked into, must have well-formed
//!   surrogate pairs in their `\u` escapes; skipped strings need only four hex digits;
//! - numbers the rules read must fit an `f64`; skipped numbers need only their syntax;
//! - containers walked into (objects on a rule's path, arrays at a read field) nest at
//!   most 127 deep under the record (serde_json's recursion limit of 128); skipped ones
//!   nest without limit.
//!
//! Numbers read are converted by serde_json itself, so a value's text (`1e2` reads as
//! `100.0`) is what it always was.

use std::borrow::Cow;
use std::fmt;

use super::{Captured, Layout, RecordView, Scalar};

mod lexeme;

// What the scanner captures besides the slots: with a layout that `collects_all`, every
// scalar of the record (free text reads them), and for each raw path, its values' text.

/// serde_json's recursion limit: walked containers nest at most this deep, minus one.
const MAX_DEPTH: usize = 128;

/// Why a text is not JSON, with serde_json's wording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Code {
    EofList,
    EofObject,
    EofString,
    EofValue,
    ExpectedColon,
    ExpectedListCommaOrEnd,
    ExpectedObjectCommaOrEnd,
    ExpectedIdent,
    ExpectedValue,
    InvalidEscape,
    InvalidNumber,
    NumberOutOfRange,
    ControlCharacter,
    KeyMustBeAString,
    LoneLeadingSurrogate,
    TrailingComma,
    TrailingCharacters,
    UnexpectedEndOfHexEscape,
    RecursionLimit,
}

impl Code {
    fn as_str(self) -> &'static str {
        match self {
            Code::EofList => "EOF while parsing a list",
            Code::EofObject => "EOF while parsing an object",
            Code::EofString => "EOF while parsing a string",
            Code::EofValue => "EOF while parsing a value",
            Code::ExpectedColon => "expected `:`",
            Code::ExpectedListCommaOrEnd => "expected `,` or `]`",
            Code::ExpectedObjectCommaOrEnd => "expected `,` or `}`",
            Code::ExpectedIdent => "expected ident",
            Code::ExpectedValue => "expected value",
            Code::InvalidEscape => "invalid escape",
            Code::InvalidNumber => "invalid number",
            Code::NumberOutOfRange => "number out of range",
            Code::ControlCharacter => {
                "control character (\\u0000-\\u001F) found while parsing a string"
            }
            Code::KeyMustBeAString => "key must be a string",
            Code::LoneLeadingSurrogate => "lone leading surrogate in hex escape",
            Code::TrailingComma => "trailing comma",
            Code::TrailingCharacters => "trailing characters",
            Code::UnexpectedEndOfHexEscape => "unexpected end of hex escape",
            Code::RecursionLimit => "recursion limit exceeded",
        }
    }
}

/// A text that is not JSON: what, and where (1-based line and column, in bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ScanError {
    code: Code,
    line: usize,
    column: usize,
}

impl ScanError {
    /// A surrogate escape that is not half of a pair.
    fn is_surrogate(&self) -> bool {
        matches!(
            self.code,
            Code::LoneLeadingSurrogate | Code::UnexpectedEndOfHexEscape
        )
    }
}

impl fmt::Display for ScanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at line {} column {}",
            self.code.as_str(),
            self.line,
            self.column
        )
    }
}

/// Where a value's contents go: the slot whose path ends here, and the trie node of the
/// paths that continue below.
#[derive(Debug, Clone, Copy)]
struct Target {
    exact: Option<u32>,
    below: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// An object on the rules' paths: keys are looked up from `node`.
    Object { node: u32, top: bool },
    /// An object with nothing to capture below it: keys are parsed, values skipped.
    Keys,
    /// An array at a captured path: every element goes to the frame's target.
    Array,
    /// The top-level `Records` array: every element is kept as text.
    Records,
}

#[derive(Debug, Clone, Copy)]
struct Frame {
    kind: Kind,
    target: Target,
    /// No element read yet.
    first: bool,
}

const EMPTY_FRAME: Frame = Frame {
    kind: Kind::Keys,
    target: Target {
        exact: None,
        below: None,
    },
    first: true,
};

/// Which kind of container each skipped level is: a bit per level, inline for the usual
/// depths.
struct BitStack {
    inline: [u64; 4],
    spill: Vec<u64>,
    len: usize,
}

impl BitStack {
    fn new() -> Self {
        BitStack {
            inline: [0; 4],
            spill: Vec::new(),
            len: 0,
        }
    }

    fn word(&mut self, i: usize) -> &mut u64 {
        if i < self.inline.len() {
            &mut self.inline[i]
        } else {
            let j = i - self.inline.len();
            if self.spill.len() <= j {
                self.spill.resize(j + 1, 0);
            }
            &mut self.spill[j]
        }
    }

    fn push(&mut self, object: bool) {
        let (i, bit) = (self.len / 64, self.len % 64);
        let w = self.word(i);
        *w = (*w & !(1 << bit)) | (u64::from(object) << bit);
        self.len += 1;
    }

    /// The innermost level's kind (`true`: an object), if any.
    fn top(&mut self) -> Option<bool> {
        let n = self.len.checked_sub(1)?;
        Some((*self.word(n / 64) >> (n % 64)) & 1 == 1)
    }

    fn pop(&mut self) {
        self.len -= 1;
    }
}

struct Scanner<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

type Result<T> = std::result::Result<T, ScanError>;

impl<'a> Scanner<'a> {
    fn new(text: &'a str) -> Scanner<'a> {
        Scanner {
            text,
            bytes: text.as_bytes(),
            pos: 0,
        }
    }
}

impl<'a> Scanner<'a> {
    fn error(&self, code: Code) -> ScanError {
        let upto = &self.bytes[..self.pos.min(self.bytes.len())];
        let line = memchr::memchr_iter(b'\n', upto).count() + 1;
        let column = match memchr::memrchr(b'\n', upto) {
            Some(nl) => upto.len() - nl,
            None => upto.len() + 1,
        };
        ScanError { code, line, column }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    /// A scalar read for its value at `pos` (`None`: null); containers are not scalars.
    fn scalar(&mut self) -> Result<Option<Scalar<'a>>> {
        Ok(Some(match self.peek() {
            Some(b'"') => Scalar::Str(self.string()?),
            Some(b'-' | b'0'..=b'9') => Scalar::Num(self.number()?),
            Some(b't') => {
                self.ident(b"true")?;
                Scalar::Bool(true)
            }
            Some(b'f') => {
                self.ident(b"false")?;
                Scalar::Bool(false)
            }
            Some(b'n') => {
                self.ident(b"null")?;
                return Ok(None);
            }
            None => return Err(self.error(Code::EofValue)),
            Some(_) => return Err(self.error(Code::ExpectedValue)),
        }))
    }

    /// Skips one value at `pos` (after whitespace), checking its syntax, at any depth.
    fn skip_value(&mut self) -> Result<()> {
        self.walk_value(None)
    }

    /// [`Scanner::skip_value`], handing every scalar in it to `collect` when there is
    /// one (free text reads every value). Collected strings are decoded leniently (a lone
    /// surrogate escape reads as U+FFFD) and numbers past `f64` are left out, so that
    /// collecting changes nothing about which records are JSON.
    fn walk_value(&mut self, mut collect: Option<&mut Vec<Scalar<'a>>>) -> Result<()> {
        let mut levels = BitStack::new();
        'value: loop {
            self.ws();
            match self.peek() {
                Some(b'{') => {
                    self.pos += 1;
                    self.ws();
                    match self.peek() {
                        Some(b'}') => self.pos += 1,
                        Some(b'"') => {
                            levels.push(true);
                            self.skip_key()?;
                            continue 'value;
                        }
                        None => return Err(self.error(Code::EofObject)),
                        Some(_) => return Err(self.error(Code::KeyMustBeAString)),
                    }
                }
                Some(b'[') => {
                    self.pos += 1;
                    self.ws();
                    if self.peek() == Some(b']') {
                        self.pos += 1;
                    } else {
                        levels.push(false);
                        continue 'value;
                    }
                }
                Some(b'"') => match collect.as_deref_mut() {
                    None => self.skip_string()?,
                    Some(all) => all.push(Scalar::Str(self.string_with(false)?)),
                },
                Some(b'-' | b'0'..=b'9') => {
                    let text = self.number_text()?;
                    if let Some(all) = collect.as_deref_mut() {
                        if let Ok(n) = serde_json::from_str(text) {
                            all.push(Scalar::Num(n));
                        }
                    }
                }
                Some(b't') => {
                    self.ident(b"true")?;
                    if let Some(all) = collect.as_deref_mut() {
                        all.push(Scalar::Bool(true));
                    }
                }
                Some(b'f') => {
                    self.ident(b"false")?;
                    if let Some(all) = collect.as_deref_mut() {
                        all.push(Scalar::Bool(false));
                    }
                }
                Some(b'n') => self.ident(b"null")?,
                None => return Err(self.error(Code::EofValue)),
                Some(_) => return Err(self.error(Code::ExpectedValue)),
            }
            // A value is complete: close the levels it completes.
            loop {
                let Some(object) = levels.top() else {
                    return Ok(());
                };
                self.ws();
                match (object, self.peek()) {
                    (_, Some(b',')) => {
                        self.pos += 1;
                        self.ws();
                        match (object, self.peek()) {
                            (false, Some(b']')) | (true, Some(b'}')) => {
                                return Err(self.error(Code::TrailingComma))
                            }
                            (true, Some(b'"')) => self.skip_key()?,
                            (true, None) => return Err(self.error(Code::EofValue)),
                            (true, Some(_)) => return Err(self.error(Code::KeyMustBeAString)),
                            (false, _) => {}
                        }
                        continue 'value;
                    }
                    (false, Some(b']')) | (true, Some(b'}')) => {
                        self.pos += 1;
                        levels.pop();
                    }
                    (false, None) => return Err(self.error(Code::EofList)),
                    (true, None) => return Err(self.error(Code::EofObject)),
                    (false, Some(_)) => return Err(self.error(Code::ExpectedListCommaOrEnd)),
                    (true, Some(_)) => return Err(self.error(Code::ExpectedObjectCommaOrEnd)),
                }
            }
        }
    }

    /// A skipped object's key at `pos` and its colon.
    fn skip_key(&mut self) -> Result<()> {
        self.skip_string()?;
        self.colon()
    }

    fn colon(&mut self) -> Result<()> {
        self.ws();
        match self.peek() {
            Some(b':') => {
                self.pos += 1;
                Ok(())
            }
            None => Err(self.error(Code::EofObject)),
            Some(_) => Err(self.error(Code::ExpectedColon)),
        }
    }
}

/// Scans a record's text into `view`. Returns whether it is an object (anything else is
/// still validated, and captures nothing).
pub(super) fn scan<'a>(
    text: &'a str,
    layout: &Layout,
    envelopes: bool,
    view: &mut RecordView<'a>,
) -> Result<bool> {
    let mut s = Scanner::new(text);
    s.ws();
    let is_object = match s.peek() {
        Some(b'{') => {
            walk(&mut s, layout, envelopes, view)?;
            true
        }
        // A top-level array's elements are not read.
        Some(b'[') => {
            s.skip_value()?;
            false
        }
        _ => {
            s.scalar()?;
            false
        }
    };
    s.ws();
    if s.pos < s.bytes.len() {
        return Err(s.error(Code::TrailingCharacters));
    }
    Ok(is_object)
}

/// Walks the top-level object at `pos` (and everything on the rules' paths inside it).
fn walk<'a>(
    s: &mut Scanner<'a>,
    layout: &Layout,
    envelopes: bool,
    view: &mut RecordView<'a>,
) -> Result<()> {
    let mut stack = [EMPTY_FRAME; MAX_DEPTH];
    let mut depth = 1;
    s.pos += 1;
    stack[0] = Frame {
        kind: Kind::Object {
            node: 0,
            top: envelopes,
        },
        target: EMPTY_FRAME.target,
        first: true,
    };
    while depth > 0 {
        let frame = &mut stack[depth - 1];
        let first = std::mem::replace(&mut frame.first, false);
        let (kind, target) = (frame.kind, frame.target);
        let object = !matches!(kind, Kind::Array | Kind::Records);
        // Between elements: a comma, or the end of the container.
        s.ws();
        let close = if object { b'}' } else { b']' };
        match s.peek() {
            Some(c) if c == close => {
                s.pos += 1;
                depth -= 1;
                continue;
            }
            Some(b',') if !first => {
                s.pos += 1;
                s.ws();
                if s.peek() == Some(close) {
                    return Err(s.error(Code::TrailingComma));
                }
            }
            None if object => return Err(s.error(Code::EofObject)),
            None => return Err(s.error(Code::EofList)),
            Some(_) if !first && object => return Err(s.error(Code::ExpectedObjectCommaOrEnd)),
            Some(_) if !first => return Err(s.error(Code::ExpectedListCommaOrEnd)),
            Some(_) => {}
        }
        // One element.
        let target = match kind {
            Kind::Array => target,
            Kind::Records => {
                s.ws();
                let start = s.pos;
                s.skip_value()?;
                view.records
                    .get_or_insert_with(Vec::new)
                    .push(&s.text[start..s.pos]);
                continue;
            }
            Kind::Keys | Kind::Object { .. } => {
                match s.peek() {
                    Some(b'"') => {}
                    None => return Err(s.error(Code::EofValue)),
                    Some(_) => return Err(s.error(Code::KeyMustBeAString)),
                }
                let key = s.string()?;
                s.colon()?;
                s.ws();
                let Kind::Object { node, top } = kind else {
                    s.walk_value(layout.collects_all().then_some(&mut view.all))?;
                    continue;
                };
                if top && key == "Records" {
                    records_value(s, view, &mut stack, &mut depth)?;
                    continue;
                }
                if top && key == "detail" {
                    let start = s.pos;
                    s.skip_value()?;
                    let raw = &s.text[start..s.pos];
                    if raw.starts_with('{') {
                        view.detail = Some(raw);
                    }
                    continue;
                }
                match layout.step(node, &key) {
                    None => {
                        s.walk_value(layout.collects_all().then_some(&mut view.all))?;
                        continue;
                    }
                    Some(n) => {
                        let node = layout.node(n);
                        if let Some(raw) = node.raw {
                            // Kept whole (a nested query reads its elements), and read
                            // again below when other paths go on into it.
                            let start = s.pos;
                            s.skip_value()?;
                            view.raw_mut(raw).push(&s.text[start..s.pos]);
                            if node.slot.is_none() && !node.has_children() {
                                if layout.collects_all() {
                                    s.pos = start;
                                    s.walk_value(Some(&mut view.all))?;
                                }
                                continue;
                            }
                            s.pos = start;
                        }
                        Target {
                            exact: node.slot,
                            below: node.has_children().then_some(n),
                        }
                    }
                }
            }
        };
        // A value at `target`.
        s.ws();
        match s.peek() {
            Some(open @ (b'{' | b'[')) => {
                if depth + 1 >= MAX_DEPTH {
                    return Err(s.error(Code::RecursionLimit));
                }
                s.pos += 1;
                let kind = if open == b'[' {
                    Kind::Array
                } else {
                    if let Some(slot) = target.exact {
                        view.cap_mut(slot).mark_object();
                    }
                    match target.below {
                        Some(node) => Kind::Object { node, top: false },
                        None => Kind::Keys,
                    }
                };
                stack[depth] = Frame {
                    kind,
                    target,
                    first: true,
                };
                depth += 1;
            }
            _ => {
                if let Some(value) = s.scalar()? {
                    if layout.collects_all() {
                        view.all.push(value.clone());
                    }
                    if let Some(slot) = target.exact {
                        view.cap_mut(slot).push(value);
                    }
                    if let Some(node) = target.below {
                        for &slot in &layout.node(node).below {
                            *view.cap_mut(slot) = Captured::Mismatch;
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// The value of the top-level `Records` key: an array's elements are kept as text, an
/// object is walked for its keys, a scalar is read and dropped.
fn records_value<'a>(
    s: &mut Scanner<'a>,
    view: &mut RecordView<'a>,
    stack: &mut [Frame; MAX_DEPTH],
    depth: &mut usize,
) -> Result<()> {
    let kind = match s.peek() {
        Some(b'[') => Kind::Records,
        Some(b'{') => Kind::Keys,
        _ => {
            s.scalar()?;
            return Ok(());
        }
    };
    if *depth + 1 >= MAX_DEPTH {
        return Err(s.error(Code::RecursionLimit));
    }
    s.pos += 1;
    if kind == Kind::Records {
        view.records = Some(Vec::new());
    }
    stack[*depth] = Frame {
        kind,
        ..EMPTY_FRAME
    };
    *depth += 1;
    Ok(())
}

/// The entries of a JSON object's text, in order: each key (decoded) and its value's text.
/// Iterative, like the scanner: the value texts are not looked into.
pub(crate) fn entries(text: &str) -> std::result::Result<Vec<(Cow<'_, str>, &str)>, String> {
    let mut s = Scanner::new(text);
    let mut out = Vec::new();
    let mut go = || -> Result<()> {
        s.ws();
        if s.peek() != Some(b'{') {
            return Err(s.error(Code::ExpectedValue));
        }
        s.pos += 1;
        s.ws();
        if s.peek() == Some(b'}') {
            s.pos += 1;
            return Ok(());
        }
        loop {
            s.ws();
            if s.peek() != Some(b'"') {
                return Err(s.error(Code::KeyMustBeAString));
            }
            let key = s.string()?;
            s.colon()?;
            s.ws();
            let start = s.pos;
            s.skip_value()?;
            out.push((key, &s.text[start..s.pos]));
            s.ws();
            match s.peek() {
                Some(b',') => s.pos += 1,
                Some(b'}') => {
                    s.pos += 1;
                    return Ok(());
                }
                None => return Err(s.error(Code::EofObject)),
                Some(_) => return Err(s.error(Code::ExpectedObjectCommaOrEnd)),
            }
        }
    };
    go().map_err(|e| e.to_string())?;
    Ok(out)
}

/// The elements of a nested path's value: the value itself when it is an object; the
/// objects in it when it is an array (arrays in it flattened); nothing else.
pub(crate) fn elements(text: &str) -> Vec<&str> {
    let mut s = Scanner::new(text);
    let mut out = Vec::new();
    let mut go = || -> Result<()> {
        s.ws();
        match s.peek() {
            Some(b'{') => {
                out.push(text.trim());
                return Ok(());
            }
            Some(b'[') => {}
            _ => return Ok(()),
        }
        let mut depth = 0usize;
        loop {
            s.ws();
            match s.peek() {
                Some(b'[') => {
                    s.pos += 1;
                    depth += 1;
                    continue;
                }
                Some(b']') => {
                    s.pos += 1;
                    depth -= 1;
                }
                Some(b',') => {
                    s.pos += 1;
                    continue;
                }
                Some(b'{') => {
                    let start = s.pos;
                    s.skip_value()?;
                    out.push(&text[start..s.pos]);
                }
                Some(_) => s.skip_value()?,
                None => return Ok(()),
            }
            if depth == 0 {
                return Ok(());
            }
        }
    };
    // The text was read as JSON already; what does not read again gives no elements.
    let _ = go();
    out
}
