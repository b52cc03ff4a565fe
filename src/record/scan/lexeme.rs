//! The scanner's lexemes: strings (skipped, or read with their escapes decoded), numbers,
//! literal words, and the word-at-a-time search for a string's end.

use std::borrow::Cow;

use super::{Code, Result, Scanner};

impl<'a> Scanner<'a> {
    /// Moves to the first `"`, `\` or control character at or after `pos`.
    pub(super) fn skip_plain(&mut self) {
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

    pub(super) fn four_hex(&mut self) -> Result<u16> {
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
    pub(super) fn skip_string(&mut self) -> Result<()> {
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
    pub(super) fn string(&mut self) -> Result<Cow<'a, str>> {
        self.string_with(true)
    }

    /// [`Scanner::string`]; when not `strict`, a surrogate escape that is not half of a
    /// pair reads as U+FFFD instead of being an error.
    pub(super) fn string_with(&mut self, strict: bool) -> Result<Cow<'a, str>> {
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
    pub(super) fn escape(&mut self, out: &mut String) -> Result<()> {
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
    pub(super) fn expect_byte(&mut self, b: u8) -> Result<()> {
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
    pub(super) fn number_text(&mut self) -> Result<&'a str> {
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
                return Err(self.number_cut());
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if !digits(self) {
                return Err(self.number_cut());
            }
        }
        Ok(&self.text[start..self.pos])
    }

    /// A number whose fraction or exponent has no digit: cut short, or malformed.
    fn number_cut(&self) -> super::ScanError {
        self.error(if self.peek().is_none() {
            Code::EofValue
        } else {
            Code::InvalidNumber
        })
    }

    /// A number read for its value, converted by serde_json itself.
    pub(super) fn number(&mut self) -> Result<serde_json::Number> {
        let text = self.number_text()?;
        serde_json::from_str(text).map_err(|_| self.error(Code::NumberOutOfRange))
    }

    pub(super) fn ident(&mut self, word: &[u8]) -> Result<()> {
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
