//! KQL text to [`Expr`], read as Kibana's kuery grammar reads it.
//!
//! The grammar (Kibana's `grammar.peggy`, in our words):
//!
//! ```text
//! query      = space* or? space*                  an empty query matches every record
//! or         = and (space+ "or" space+ and)*        keywords in any case
//! and        = not (space+ "and" space+ not)*
//! not        = "not" space+ sub | sub               one `not`, one operand
//! sub        = "(" space* or space* ")" | nested | expression
//! nested     = field space* ":" space* "{" space* or space* "}"
//! expression = field space* range-op space* literal | field space* ":" space* values | value
//! values     = "(" space* value-or space* ")" | value     `value-or` is `or` over values
//! field      = literal;  value = literal;  literal = quoted | unquoted
//! ```
//!
//! - An **unquoted** literal runs over any characters, spaces included, up to a special
//!   character (`\ ( ) : < > " * { }`, of which `*` is a wildcard and does not end it) or
//!   a keyword: a space, `or`/`and` and a space, or `not` and a space anywhere (so
//!   `cannot find` ends at `can`, and what follows is an error, as in Kibana). It is then
//!   trimmed. Escapes: `\t \r \n`, `\` before a special character, `\uXXXX`, and `\or`,
//!   `\and`, `\not` for the word itself (as `\n` is tried first, `\not` is a newline and
//!   `ot`). Any other escape is an error.
//! - A **quoted** string holds any characters but `"`; escapes: `\t \r \n`, `\uXXXX`,
//!   `\\`, `\"`. Any other backslash is itself (`"C:\Program Files"`). Never a wildcard.
//! - A value with no field is **free text**: it matches when any value in the record does.
//! - `field: { ... }` is a **nested** query: its fields are under `field`, and its
//!   conditions hold for one element of `field`.
//!
//! The parser is iterative (an explicit stack of open groups), so a rule's nesting costs
//! no call stack; groups nest at most [`MAX_NESTING`] deep.

use super::ast::{Expr, Pattern, RangeOp, ValueExpr};
use super::error::QueryError;

/// The most groups (parentheses, nested queries, value lists) open at once.
pub const MAX_NESTING: usize = 32;

/// Kibana's space: space, tab, CR, LF and no-break space.
fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n' | '\u{a0}')
}

/// Characters that end an unquoted literal unless escaped (`*` is a wildcard in one).
fn is_special(c: char) -> bool {
    matches!(
        c,
        '\\' | '(' | ')' | ':' | '<' | '>' | '"' | '*' | '{' | '}'
    )
}

/// What JavaScript's `String.prototype.trim` removes: its WhiteSpace and LineTerminator.
fn is_js_space(c: char) -> bool {
    matches!(
        c,
        '\u{9}' | '\u{a}' | '\u{b}' | '\u{c}' | '\u{d}' | ' ' | '\u{a0}' | '\u{1680}' | '\u{2000}'
            ..='\u{200a}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202f}'
                | '\u{205f}'
                | '\u{3000}'
                | '\u{feff}'
    )
}

/// A literal as read: its text, and for an unquoted one with unescaped `*`, the pieces
/// between them.
#[derive(Debug, Clone, PartialEq)]
struct Literal {
    text: String,
    wildcard: Option<Vec<String>>,
    quoted: bool,
}

impl Literal {
    fn pattern(self) -> Pattern {
        match self.wildcard {
            Some(pieces) => Pattern::Wildcard(pieces),
            None => Pattern::Exact(self.text),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    LParen,
    RParen,
    LBrace,
    RBrace,
    Colon,
    Range(RangeOp),
    And,
    Or,
    Not,
    Lit(Literal),
    End,
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    pos: usize,
}

fn describe(t: &Tok) -> &'static str {
    match t {
        Tok::LParen => "`(`",
        Tok::RParen => "`)`",
        Tok::LBrace => "`{`",
        Tok::RBrace => "`}`",
        Tok::Colon => "`:`",
        Tok::Range(_) => "a range operator",
        Tok::And => "`and`",
        Tok::Or => "`or`",
        Tok::Not => "`not`",
        Tok::Lit(l) if l.quoted => "a quoted value",
        Tok::Lit(_) => "a value",
        Tok::End => "the end of the query",
    }
}

/// Reads tokens off the query's characters.
struct Lexer {
    chars: Vec<char>,
    at: usize,
}

impl Lexer {
    /// Whether a keyword (`word`, any case) stands at `i`.
    fn word_at(&self, i: usize, word: &str) -> bool {
        let n = word.len();
        i + n <= self.chars.len()
            && self.chars[i..i + n]
                .iter()
                .zip(word.chars())
                .all(|(a, b)| a.to_ascii_lowercase() == b)
    }

    fn space_at(&self, i: usize) -> bool {
        self.chars.get(i).copied().is_some_and(is_space)
    }

    /// Kibana's `Keyword`, which ends an unquoted literal: a space, `or`/`and`, a space;
    /// or `not` and a space.
    fn keyword_at(&self, i: usize) -> bool {
        (self.space_at(i)
            && ((self.word_at(i + 1, "or") && self.space_at(i + 3))
                || (self.word_at(i + 1, "and") && self.space_at(i + 4))))
            || (self.word_at(i, "not") && self.space_at(i + 3))
    }

    fn skip_spaces(&mut self) {
        while self.space_at(self.at) {
            self.at += 1;
        }
    }

    /// The next token. Where an operand is expected, spaces are skipped and `not` (with a
    /// space after it) is a keyword; elsewhere `or` and `and` between spaces are.
    fn next(&mut self, operand: bool) -> Result<Token, QueryError> {
        if operand {
            self.skip_spaces();
            let pos = self.at;
            if self.word_at(pos, "not") && self.space_at(pos + 3) {
                self.at = pos + 3;
                self.skip_spaces();
                return Ok(Token { tok: Tok::Not, pos });
            }
        } else if self.word_at(self.at, "not") && self.space_at(self.at + 3) {
            // Not an operator: reported as what it is.
            let pos = self.at;
            self.at += 3;
            return Ok(Token { tok: Tok::Not, pos });
        } else if self.space_at(self.at) {
            let mut j = self.at;
            while self.space_at(j) {
                j += 1;
            }
            for (word, tok) in [("or", Tok::Or), ("and", Tok::And)] {
                let end = j + word.len();
                if self.word_at(j, word) && self.space_at(end) {
                    self.at = end;
                    self.skip_spaces();
                    return Ok(Token { tok, pos: j });
                }
            }
            self.at = j;
        }
        let pos = self.at;
        let Some(&c) = self.chars.get(pos) else {
            return Ok(Token { tok: Tok::End, pos });
        };
        let simple = match c {
            '(' => Some(Tok::LParen),
            ')' => Some(Tok::RParen),
            '{' => Some(Tok::LBrace),
            '}' => Some(Tok::RBrace),
            ':' => Some(Tok::Colon),
            '<' | '>' => {
                let or_equal = self.chars.get(pos + 1) == Some(&'=');
                if or_equal {
                    self.at += 1;
                }
                Some(Tok::Range(match (c, or_equal) {
                    ('<', false) => RangeOp::Lt,
                    ('<', true) => RangeOp::Lte,
                    ('>', false) => RangeOp::Gt,
                    _ => RangeOp::Gte,
                }))
            }
            _ => None,
        };
        if let Some(tok) = simple {
            self.at += 1;
            return Ok(Token { tok, pos });
        }
        let lit = if c == '"' {
            self.quoted()?
        } else {
            self.unquoted()?
        };
        Ok(Token {
            tok: Tok::Lit(lit),
            pos,
        })
    }

    /// `\uXXXX` at `i` (the backslash): the character, joining a surrogate pair written
    /// as two escapes; `None` when no four hex digits follow.
    fn unicode_escape(&self, i: usize) -> Result<Option<(char, usize)>, QueryError> {
        let unit = |j: usize| -> Option<u32> {
            if self.chars.get(j) != Some(&'\\') || self.chars.get(j + 1) != Some(&'u') {
                return None;
            }
            let hex: String = self.chars.get(j + 2..j + 6)?.iter().collect();
            if hex.len() != 4 || !hex.chars().all(|h| h.is_ascii_hexdigit()) {
                return None;
            }
            u32::from_str_radix(&hex, 16).ok()
        };
        let Some(first) = unit(i) else {
            return Ok(None);
        };
        let lone = || {
            QueryError::unsupported(
                "a `\\u` escape of half a surrogate pair (a character that is not one)",
                i,
            )
        };
        if (0xD800..0xDC00).contains(&first) {
            match unit(i + 6) {
                Some(second) if (0xDC00..0xE000).contains(&second) => {
                    let c = 0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00);
                    Ok(Some((char::from_u32(c).ok_or_else(lone)?, i + 12)))
                }
                _ => Err(lone()),
            }
        } else {
            Ok(Some((char::from_u32(first).ok_or_else(lone)?, i + 6)))
        }
    }

    fn quoted(&mut self) -> Result<Literal, QueryError> {
        let start = self.at;
        let mut text = String::new();
        let mut i = start + 1;
        loop {
            let Some(&c) = self.chars.get(i) else {
                return Err(QueryError::syntax("a quoted string is not closed", start));
            };
            match c {
                '"' => break,
                '\\' => {
                    let next = self.chars.get(i + 1).copied();
                    if let Some(ws) = whitespace_escape(next) {
                        text.push(ws);
                        i += 2;
                    } else if let Some((ch, after)) = self.unicode_escape(i)? {
                        text.push(ch);
                        i = after;
                    } else if let Some(q @ ('\\' | '"')) = next {
                        text.push(q);
                        i += 2;
                    } else {
                        // Not an escape: the backslash is itself.
                        text.push('\\');
                        i += 1;
                    }
                }
                c => {
                    text.push(c);
                    i += 1;
                }
            }
        }
        self.at = i + 1;
        Ok(Literal {
            text,
            wildcard: None,
            quoted: true,
        })
    }

    fn unquoted(&mut self) -> Result<Literal, QueryError> {
        /// One unquoted character: a character, or a wildcard.
        enum Item {
            Char(char),
            Star,
        }
        let mut items: Vec<Item> = Vec::new();
        let mut i = self.at;
        while let Some(&c) = self.chars.get(i) {
            if c == '\\' {
                let next = self.chars.get(i + 1).copied();
                if let Some(ws) = whitespace_escape(next) {
                    items.push(Item::Char(ws));
                    i += 2;
                } else if let Some(s) = next.filter(|&n| is_special(n)) {
                    items.push(Item::Char(s));
                    i += 2;
                } else if let Some((ch, after)) = self.unicode_escape(i)? {
                    items.push(Item::Char(ch));
                    i = after;
                } else if let Some(word) = ["or", "and", "not"]
                    .into_iter()
                    .find(|w| self.word_at(i + 1, w))
                {
                    // The word as typed.
                    let n = word.len();
                    items.extend(self.chars[i + 1..i + 1 + n].iter().map(|&c| Item::Char(c)));
                    i += 1 + n;
                } else {
                    return Err(QueryError::syntax(
                        match next {
                            Some(n) => format!(
                                "`\\{n}` is not an escape (only \\t \\r \\n, \\ before one of \\():<>\"*{{}}, \\uXXXX and \\or \\and \\not)"
                            ),
                            None => "a `\\` at the end of the query".to_owned(),
                        },
                        i,
                    ));
                }
                continue;
            }
            if c == '*' {
                items.push(Item::Star);
                i += 1;
                continue;
            }
            if is_special(c) || self.keyword_at(i) {
                break;
            }
            items.push(Item::Char(c));
            i += 1;
        }
        if i == self.at {
            return Err(QueryError::syntax("expected a value", i));
        }
        self.at = i;
        // Trimmed after the escapes are read, as Kibana trims the joined characters.
        let is_blank = |it: &Item| matches!(it, Item::Char(c) if is_js_space(*c));
        let first = items
            .iter()
            .position(|it| !is_blank(it))
            .unwrap_or(items.len());
        let last = items
            .iter()
            .rposition(|it| !is_blank(it))
            .map_or(first, |l| l + 1);
        let kept = &items[first..last];
        let mut pieces = vec![String::new()];
        for item in kept {
            match item {
                Item::Char(c) => {
                    if let Some(p) = pieces.last_mut() {
                        p.push(*c);
                    }
                }
                Item::Star => pieces.push(String::new()),
            }
        }
        let text: String = pieces.join("*");
        let wildcard = (pieces.len() > 1).then_some(pieces);
        Ok(Literal {
            text,
            wildcard,
            quoted: false,
        })
    }
}

/// `\t`, `\r`, `\n` (the letter after the backslash).
fn whitespace_escape(letter: Option<char>) -> Option<char> {
    match letter {
        Some('t') => Some('\t'),
        Some('r') => Some('\r'),
        Some('n') => Some('\n'),
        _ => None,
    }
}

/// What kind of group is open, and where it opened.
#[derive(Debug)]
enum Opened {
    /// The whole query.
    Top,
    Paren(usize),
    /// `path: { ... }`.
    Nested {
        path: String,
        at: usize,
    },
    /// `field: ( ... )`: a value list.
    Values {
        field: String,
        at: usize,
    },
    /// Parentheses inside a value list.
    ValueParen(usize),
}

/// An open group: its operands so far, as `or` over `and` lists.
#[derive(Debug)]
struct Group<T> {
    opened: Opened,
    ors: Vec<Vec<T>>,
    /// Where a pending `not` for the next operand stands.
    not: Option<usize>,
    expect_operand: bool,
}

impl<T> Group<T> {
    fn new(opened: Opened) -> Self {
        Group {
            opened,
            ors: vec![Vec::new()],
            not: None,
            expect_operand: true,
        }
    }

    /// Adds an operand (under a pending `not`).
    fn push(&mut self, operand: T, not: fn(Box<T>) -> T) {
        let operand = match self.not.take() {
            Some(_) => not(Box::new(operand)),
            None => operand,
        };
        if let Some(ands) = self.ors.last_mut() {
            ands.push(operand);
        }
        self.expect_operand = false;
    }

    /// The group's expression.
    fn finish(self, and: fn(Vec<T>) -> T, or: fn(Vec<T>) -> T) -> (Opened, T) {
        let mut terms: Vec<T> = self
            .ors
            .into_iter()
            .map(|mut ands| {
                if ands.len() == 1 {
                    ands.remove(0)
                } else {
                    and(ands)
                }
            })
            .collect();
        let e = if terms.len() == 1 {
            terms.remove(0)
        } else {
            or(terms)
        };
        (self.opened, e)
    }
}

/// The open groups, innermost last: query groups below, then (inside a value list)
/// value groups.
struct Parser {
    lex: Lexer,
    peeked: Option<Token>,
    queries: Vec<Group<Expr>>,
    values: Vec<Group<ValueExpr>>,
}

/// Parses a KQL query. An empty query matches every record (`Expr::And(vec![])`).
pub fn parse(text: &str) -> Result<Expr, QueryError> {
    let mut p = Parser {
        lex: Lexer {
            chars: text.chars().collect(),
            at: 0,
        },
        peeked: None,
        queries: vec![Group::new(Opened::Top)],
        values: Vec::new(),
    };
    let first = p.next(true)?;
    if first.tok == Tok::End {
        return Ok(Expr::And(Vec::new()));
    }
    p.peeked = Some(first);
    loop {
        if !p.values.is_empty() {
            p.value_step()?;
        } else if let Some(done) = p.query_step()? {
            return Ok(done);
        }
    }
}

impl Parser {
    fn next(&mut self, operand: bool) -> Result<Token, QueryError> {
        match self.peeked.take() {
            Some(t) => Ok(t),
            None => self.lex.next(operand),
        }
    }

    fn open(&mut self, opened: Opened, at: usize) -> Result<(), QueryError> {
        if self.queries.len() + self.values.len() >= MAX_NESTING {
            return Err(QueryError::unsupported(
                "groups nested more than 32 deep",
                at,
            ));
        }
        match opened {
            Opened::Values { .. } | Opened::ValueParen(_) => self.values.push(Group::new(opened)),
            _ => self.queries.push(Group::new(opened)),
        }
        Ok(())
    }

    fn query(&mut self) -> Result<&mut Group<Expr>, QueryError> {
        self.queries
            .last_mut()
            .ok_or_else(|| QueryError::syntax("internal: no open group", 0))
    }

    /// One token in a query group; the whole query once it is complete.
    fn query_step(&mut self) -> Result<Option<Expr>, QueryError> {
        let expect_operand = self.query()?.expect_operand;
        let t = self.next(expect_operand)?;
        if expect_operand {
            let operand = match t.tok {
                Tok::Not if self.query()?.not.is_none() => {
                    self.query()?.not = Some(t.pos);
                    return Ok(None);
                }
                Tok::LParen => {
                    self.open(Opened::Paren(t.pos), t.pos)?;
                    return Ok(None);
                }
                Tok::Lit(lit) => match self.after_literal(lit, t.pos)? {
                    Some(e) => e,
                    None => return Ok(None),
                },
                Tok::Not => {
                    return Err(QueryError::syntax(
                        "`not` takes one operand: `not not` needs parentheses",
                        t.pos,
                    ))
                }
                Tok::End => {
                    return Err(QueryError::syntax(
                        "the query ends where an expression is expected",
                        t.pos,
                    ))
                }
                other => {
                    return Err(QueryError::syntax(
                        format!(
                            "expected a field, a value, `not` or `(`, found {}",
                            describe(&other)
                        ),
                        t.pos,
                    ))
                }
            };
            self.query()?.push(operand, Expr::Not);
            return Ok(None);
        }
        let closes = match (&t.tok, &self.query()?.opened) {
            (Tok::And, _) => {
                self.query()?.expect_operand = true;
                return Ok(None);
            }
            (Tok::Or, _) => {
                let g = self.query()?;
                g.ors.push(Vec::new());
                g.expect_operand = true;
                return Ok(None);
            }
            (Tok::End, Opened::Top)
            | (Tok::RParen, Opened::Paren(_))
            | (Tok::RBrace, Opened::Nested { .. }) => true,
            (Tok::End, Opened::Paren(at)) => {
                return Err(QueryError::syntax("`(` is not closed", *at))
            }
            (Tok::End, Opened::Nested { at, .. }) => {
                return Err(QueryError::syntax(
                    "the nested query's `{` is not closed",
                    *at,
                ))
            }
            (other, _) => {
                return Err(QueryError::syntax(
                    format!(
                        "unexpected {} after a complete expression (missing `and`/`or`?)",
                        describe(other)
                    ),
                    t.pos,
                ))
            }
        };
        debug_assert!(closes);
        let Some(group) = self.queries.pop() else {
            return Err(QueryError::syntax("internal: no open group", t.pos));
        };
        let (opened, e) = group.finish(Expr::And, Expr::Or);
        let e = match opened {
            Opened::Nested { path, .. } => Expr::Nested {
                path,
                query: Box::new(e),
            },
            Opened::Top => return Ok(Some(e)),
            _ => e,
        };
        self.query()?.push(e, Expr::Not);
        Ok(None)
    }

    /// After a literal where a query operand stands: a field (`:` or a range operator
    /// follows) or free text. `None` when a group was opened instead.
    fn after_literal(&mut self, lit: Literal, pos: usize) -> Result<Option<Expr>, QueryError> {
        let after = self.next(false)?;
        match after.tok {
            Tok::Colon => {
                let field = field_name(lit, pos)?;
                let v = self.next(true)?;
                match v.tok {
                    Tok::LBrace => {
                        self.open(
                            Opened::Nested {
                                path: field,
                                at: v.pos,
                            },
                            v.pos,
                        )?;
                        Ok(None)
                    }
                    Tok::LParen => {
                        self.open(Opened::Values { field, at: v.pos }, v.pos)?;
                        Ok(None)
                    }
                    Tok::Lit(value) => Ok(Some(Expr::Field {
                        field,
                        value: ValueExpr::Value(value.pattern()),
                    })),
                    other => Err(QueryError::syntax(
                        format!(
                            "expected a value, `(` or `{{` after `{field}:`, found {}",
                            describe(&other)
                        ),
                        v.pos,
                    )),
                }
            }
            Tok::Range(op) => {
                let field = field_name(lit, pos)?;
                let v = self.next(true)?;
                match v.tok {
                    Tok::Lit(Literal {
                        wildcard: None,
                        text,
                        ..
                    }) => Ok(Some(Expr::Range {
                        field,
                        op,
                        value: text,
                    })),
                    Tok::Lit(_) => Err(QueryError::unsupported(
                        "a wildcard in a range bound",
                        v.pos,
                    )),
                    _ => Err(QueryError::syntax(
                        "expected a value after the range operator",
                        v.pos,
                    )),
                }
            }
            _ => {
                self.peeked = Some(after);
                Ok(Some(Expr::FreeText(lit.pattern())))
            }
        }
    }

    /// One token in a value list.
    fn value_step(&mut self) -> Result<(), QueryError> {
        let Some(g) = self.values.last_mut() else {
            return Ok(());
        };
        let expect_operand = g.expect_operand;
        let t = self.next(expect_operand)?;
        let Some(g) = self.values.last_mut() else {
            return Ok(());
        };
        if expect_operand {
            let operand = match t.tok {
                Tok::Not if g.not.is_none() => {
                    g.not = Some(t.pos);
                    return Ok(());
                }
                Tok::LParen => return self.open(Opened::ValueParen(t.pos), t.pos),
                Tok::Lit(lit) => ValueExpr::Value(lit.pattern()),
                Tok::LBrace => {
                    return Err(QueryError::syntax(
                        "a nested query goes right after `field:`, not inside a value list",
                        t.pos,
                    ))
                }
                Tok::Not => {
                    return Err(QueryError::syntax(
                        "`not` takes one operand: `not not` needs parentheses",
                        t.pos,
                    ))
                }
                other => {
                    return Err(QueryError::syntax(
                        format!("expected a value, found {}", describe(&other)),
                        t.pos,
                    ))
                }
            };
            g.push(operand, ValueExpr::Not);
            return Ok(());
        }
        match t.tok {
            Tok::And => g.expect_operand = true,
            Tok::Or => {
                g.ors.push(Vec::new());
                g.expect_operand = true;
            }
            Tok::RParen => {
                let Some(group) = self.values.pop() else {
                    return Ok(());
                };
                let (opened, v) = group.finish(ValueExpr::And, ValueExpr::Or);
                match opened {
                    Opened::Values { field, .. } => self
                        .query()?
                        .push(Expr::Field { field, value: v }, Expr::Not),
                    _ => match self.values.last_mut() {
                        Some(outer) => outer.push(v, ValueExpr::Not),
                        None => return Err(QueryError::syntax("internal: value group", t.pos)),
                    },
                }
            }
            Tok::End => {
                let at = match g.opened {
                    Opened::Values { at, .. } | Opened::ValueParen(at) => at,
                    _ => t.pos,
                };
                return Err(QueryError::syntax("the value list's `(` is not closed", at));
            }
            Tok::Colon => {
                return Err(QueryError::syntax(
                    "a field inside a value list: close the list first",
                    t.pos,
                ))
            }
            other => {
                return Err(QueryError::syntax(
                    format!(
                        "unexpected {} in a value list (missing `and`/`or`?)",
                        describe(&other)
                    ),
                    t.pos,
                ))
            }
        }
        Ok(())
    }
}

/// A literal used as a field name.
fn field_name(lit: Literal, pos: usize) -> Result<String, QueryError> {
    if lit.wildcard.is_some() {
        return Err(QueryError::unsupported("a wildcard in a field name", pos));
    }
    if lit.text.is_empty() {
        return Err(QueryError::syntax("an empty field name", pos));
    }
    Ok(lit.text)
}

#[cfg(test)]
#[path = "parse_cases.rs"]
mod cases;
