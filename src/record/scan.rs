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

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// Whether any byte of `w` is `"`, `\` or a control character.
fn has_special(w: u64) -> bool {
    let quote = w ^ (LO * u64::from(b'"'));
    let backslash = w ^ (LO * u64::from(b'\\'));
    let zero = |v: u64| v.wrapping_sub(LO) & !v & HI;
    (zero(quote) | zero(backslash) | (w.wrapping_sub(LO * 0x20) & !w & HI)) != 0
}

fn hex(b: u8) -> Option<u16> {
    match b {
        b'0'..=b'9' => Some(u16::from(b - b'0')),
        b'a'..=b'f' => Some(u16::from(b - b'a' + 10)),
        b'A'..=b'F' => Some(u16::from(b - b'A' + 10)),
        _ => None,
    }
}

struct Scanner<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

type Result<T> = std::result::Result<T, ScanError>;

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

    /// Moves to the first `"`, `\` or control character at or after `pos`.
    fn skip_plain(&mut self) {
        while let Some(chunk) = self.bytes.get(self.pos..self.pos + 8) {
            let mut w = [0u8; 8];
            w.copy_from_slice(chunk);
            if has_special(u64::from_le_bytes(w)) {
                break;
            }
            self.pos += 8;
        }
        while let Some(b) = self.peek() {
            if b == b'"' || b == b'\\' || b < 0x20 {
                return;
            }
            self.pos += 1;
        }
    }

    fn four_hex(&mut self) -> Result<u16> {
        let Some(digits) = self.bytes.get(self.pos..self.pos + 4) else {
            self.pos = self.bytes.len();
            return Err(self.error(Code::EofString));
        };
        let mut n = 0;
        for &d in digits {
            match hex(d) {
                Some(v) => n = n * 16 + v,
                None => {
                    self.pos += 4;
                    return Err(self.error(Code::InvalidEscape));
                }
            }
        }
        self.pos += 4;
        Ok(n)
    }

    /// Skips a string whose opening quote is at `pos`: escapes need only be well formed.
    fn skip_string(&mut self) -> Result<()> {
        self.pos += 1;
        loop {
            self.skip_plain();
            match self.peek() {
                None => return Err(self.error(Code::EofString)),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let Some(e) = self.peek() else {
                        return Err(self.error(Code::EofString));
                    };
                    self.pos += 1;
                    match e {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                        b'u' => {
                            self.four_hex()?;
                        }
                        _ => return Err(self.error(Code::InvalidEscape)),
                    }
                }
                Some(_) => {
                    self.pos += 1;
                    return Err(self.error(Code::ControlCharacter));
                }
            }
        }
    }

    /// Reads a string whose opening quote is at `pos`, borrowed when it has no escape;
    /// `\u` escapes must pair their surrogates.
    fn string(&mut self) -> Result<Cow<'a, str>> {
        self.string_with(true)
    }

    /// [`Scanner::string`]; when not `strict`, a surrogate escape that is not half of a
    /// pair reads as U+FFFD instead of being an error.
    fn string_with(&mut self, strict: bool) -> Result<Cow<'a, str>> {
        self.pos += 1;
        let start = self.pos;
        self.skip_plain();
        match self.peek() {
            Some(b'"') => {
                let s = &self.text[start..self.pos];
                self.pos += 1;
                return Ok(Cow::Borrowed(s));
            }
            None => return Err(self.error(Code::EofString)),
            _ => {}
        }
        let mut out = String::with_capacity(self.pos - start + 16);
        let mut run = start;
        loop {
            self.skip_plain();
            out.push_str(&self.text[run..self.pos]);
            match self.peek() {
                None => return Err(self.error(Code::EofString)),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(Cow::Owned(out));
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let at = self.pos;
                    match self.escape(&mut out) {
                        Ok(()) => {}
                        Err(e) if strict || !e.is_surrogate() => return Err(e),
                        Err(_) => {
                            // Its four hex digits, read again without pairing.
                            self.pos = at + 1;
                            self.four_hex()?;
                            out.push('\u{fffd}');
                        }
                    }
                    run = self.pos;
                }
                Some(_) => {
                    self.pos += 1;
                    return Err(self.error(Code::ControlCharacter));
                }
            }
        }
    }

    /// One escape after its backslash, decoded into `out`.
    fn escape(&mut self, out: &mut String) -> Result<()> {
        let Some(e) = self.peek() else {
            return Err(self.error(Code::EofString));
        };
        self.pos += 1;
        let c = match e {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let n = self.four_hex()?;
                if (0xDC00..=0xDFFF).contains(&n) {
                    return Err(self.error(Code::LoneLeadingSurrogate));
                }
                if !(0xD800..=0xDBFF).contains(&n) {
                    // Outside the surrogates every code unit is a character.
                    char::from_u32(u32::from(n)).unwrap_or('\u{fffd}')
                } else {
                    // A leading surrogate: `\u` and a trailing one must follow.
                    self.expect_byte(b'\\')?;
                    self.expect_byte(b'u')?;
                    let n2 = self.four_hex()?;
                    if !(0xDC00..=0xDFFF).contains(&n2) {
                        return Err(self.error(Code::LoneLeadingSurrogate));
                    }
                    let c = ((u32::from(n - 0xD800) << 10) | u32::from(n2 - 0xDC00)) + 0x1_0000;
                    char::from_u32(c).unwrap_or('\u{fffd}')
                }
            }
            _ => return Err(self.error(Code::InvalidEscape)),
        };
        out.push(c);
        Ok(())
    }

    /// Moves past `b`, which must come next in a string's second half of a surrogate pair.
    fn expect_byte(&mut self, b: u8) -> Result<()> {
        match self.peek() {
            None => Err(self.error(Code::EofString)),
            Some(c) => {
                self.pos += 1;
                if c == b {
                    Ok(())
                } else {
                    Err(self.error(Code::UnexpectedEndOfHexEscape))
                }
            }
        }
    }

    /// Checks a number's syntax at `pos` and moves past it; returns its text.
    fn number_text(&mut self) -> Result<&'a str> {
        let start = self.pos;
        let digits = |s: &mut Self| {
            let from = s.pos;
            while let Some(b'0'..=b'9') = s.peek() {
                s.pos += 1;
            }
            s.pos > from
        };
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => {
                self.pos += 1;
                if let Some(b'0'..=b'9') = self.peek() {
                    return Err(self.error(Code::InvalidNumber));
                }
            }
            Some(b'1'..=b'9') => {
                digits(self);
            }
            None => return Err(self.error(Code::EofValue)),
            Some(_) => return Err(self.error(Code::InvalidNumber)),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if !digits(self) {
                return Err(self.error(if self.peek().is_none() {
                    Code::EofValue
                } else {
                    Code::InvalidNumber
                }));
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if !digits(self) {
                return Err(self.error(if self.peek().is_none() {
                    Code::EofValue
                } else {
                    Code::InvalidNumber
                }));
            }
        }
        Ok(&self.text[start..self.pos])
    }

    /// A number read for its value, converted by serde_json itself.
    fn number(&mut self) -> Result<serde_json::Number> {
        let text = self.number_text()?;
        serde_json::from_str(text).map_err(|_| self.error(Code::NumberOutOfRange))
    }

    fn ident(&mut self, word: &[u8]) -> Result<()> {
        for &w in word {
            match self.peek() {
                None => return Err(self.error(Code::EofValue)),
                Some(b) if b == w => self.pos += 1,
                Some(_) => {
                    self.pos += 1;
                    return Err(self.error(Code::ExpectedIdent));
                }
            }
        }
        Ok(())
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
    let mut s = Scanner {
        text,
        bytes: text.as_bytes(),
        pos: 0,
    };
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
    let mut s = Scanner {
        text,
        bytes: text.as_bytes(),
        pos: 0,
    };
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
    let mut s = Scanner {
        text,
        bytes: text.as_bytes(),
        pos: 0,
    };
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
