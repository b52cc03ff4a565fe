//! KQL text to [`Expr`].
//!
//! Supported: `and`, `or`, `not` (any case), parentheses, `field: "quoted"`, `field: bare`
//! with `*` wildcards and `\`-escapes, `field: *`, value lists `field: (a or b and not
//! c)`, ranges `field >= value`, and nested queries `field: { inner: x and other: y }`
//! (read as the query over `field.inner` and `field.other`). Everything else KQL has is
//! reported as unsupported, with its position: terms without a field, and wildcards in
//! field names.

use super::ast::{Expr, Pattern, RangeOp, ValueExpr};
use super::error::QueryError;

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
    Quoted(String),
    /// A bare word: its literal pieces split at unescaped `*` (one piece: no wildcard).
    Bare(Vec<String>),
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    pos: usize,
}

fn tokenize(text: &str) -> Result<Vec<Token>, QueryError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let pos = i;
        let simple = match c {
            c if c.is_whitespace() => {
                i += 1;
                continue;
            }
            '(' => Some(Tok::LParen),
            ')' => Some(Tok::RParen),
            '{' => Some(Tok::LBrace),
            '}' => Some(Tok::RBrace),
            ':' => Some(Tok::Colon),
            '<' | '>' => {
                let or_equal = chars.get(i + 1) == Some(&'=');
                if or_equal {
                    i += 1;
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
            out.push(Token { tok, pos });
            i += 1;
            continue;
        }
        if c == '"' {
            let (s, next) = quoted(&chars, i)?;
            out.push(Token {
                tok: Tok::Quoted(s),
                pos,
            });
            i = next;
            continue;
        }
        // A bare word.
        let mut pieces = vec![String::new()];
        let mut plain = String::new();
        while i < chars.len() {
            let c = chars[i];
            if c.is_whitespace() || matches!(c, '(' | ')' | '{' | '}' | ':' | '<' | '>' | '"') {
                break;
            }
            if c == '\\' {
                let Some(&next) = chars.get(i + 1) else {
                    return Err(QueryError::syntax("a `\\` at the end of the query", i));
                };
                if let Some(last) = pieces.last_mut() {
                    last.push(next);
                }
                plain.push('\\');
                plain.push(next);
                i += 2;
                continue;
            }
            if c == '*' {
                pieces.push(String::new());
            } else if let Some(last) = pieces.last_mut() {
                last.push(c);
            }
            plain.push(c);
            i += 1;
        }
        let tok = match plain.to_ascii_lowercase().as_str() {
            "and" => Tok::And,
            "or" => Tok::Or,
            "not" => Tok::Not,
            _ => Tok::Bare(pieces),
        };
        out.push(Token { tok, pos });
    }
    Ok(out)
}

/// A quoted string starting at `chars[start] == '"'`; returns it and the index after it.
fn quoted(chars: &[char], start: usize) -> Result<(String, usize), QueryError> {
    let mut s = String::new();
    let mut i = start + 1;
    while i < chars.len() {
        match chars[i] {
            '"' => return Ok((s, i + 1)),
            '\\' => {
                let Some(&e) = chars.get(i + 1) else { break };
                match e {
                    'n' => s.push('\n'),
                    't' => s.push('\t'),
                    'r' => s.push('\r'),
                    'u' => {
                        let hex: String = chars.get(i + 2..i + 6).unwrap_or(&[]).iter().collect();
                        let code = u32::from_str_radix(&hex, 16)
                            .ok()
                            .filter(|_| hex.len() == 4)
                            .and_then(char::from_u32)
                            .ok_or_else(|| {
                                QueryError::syntax(
                                    "a `\\u` escape needs four hex digits of a character",
                                    i,
                                )
                            })?;
                        s.push(code);
                        i += 6;
                        continue;
                    }
                    other => s.push(other),
                }
                i += 2;
            }
            c => {
                s.push(c);
                i += 1;
            }
        }
    }
    Err(QueryError::syntax("a quoted string is not closed", start))
}

/// A nested query's expression with its fields taken under `parent`.
fn under(parent: &str, e: Expr) -> Expr {
    let name = |f: String| format!("{parent}.{f}");
    match e {
        Expr::And(items) => Expr::And(items.into_iter().map(|e| under(parent, e)).collect()),
        Expr::Or(items) => Expr::Or(items.into_iter().map(|e| under(parent, e)).collect()),
        Expr::Not(e) => Expr::Not(Box::new(under(parent, *e))),
        Expr::Field { field, value } => Expr::Field {
            field: name(field),
            value,
        },
        Expr::Range { field, op, value } => Expr::Range {
            field: name(field),
            op,
            value,
        },
    }
}

struct Parser {
    toks: Vec<Token>,
    at: usize,
    end: usize,
}

/// Parses a KQL query.
pub fn parse(text: &str) -> Result<Expr, QueryError> {
    let end = text.chars().count();
    let mut p = Parser {
        toks: tokenize(text)?,
        at: 0,
        end,
    };
    if p.toks.is_empty() {
        return Err(QueryError::syntax("the query is empty", 0));
    }
    let e = p.or_expr()?;
    if let Some(t) = p.peek() {
        return Err(QueryError::syntax(
            format!(
                "unexpected {} after a complete expression (missing `and`/`or`?)",
                describe(&t.tok)
            ),
            t.pos,
        ));
    }
    Ok(e)
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
        Tok::Quoted(_) => "a quoted value",
        Tok::Bare(_) => "a value",
    }
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.toks.get(self.at)
    }

    fn pos(&self) -> usize {
        self.peek().map_or(self.end, |t| t.pos)
    }

    fn eat(&mut self, tok: &Tok) -> bool {
        if self.peek().map(|t| &t.tok) == Some(tok) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn or_expr(&mut self) -> Result<Expr, QueryError> {
        let mut items = vec![self.and_expr()?];
        while self.eat(&Tok::Or) {
            items.push(self.and_expr()?);
        }
        Ok(if items.len() == 1 {
            items.remove(0)
        } else {
            Expr::Or(items)
        })
    }

    fn and_expr(&mut self) -> Result<Expr, QueryError> {
        let mut items = vec![self.not_expr()?];
        while self.eat(&Tok::And) {
            items.push(self.not_expr()?);
        }
        Ok(if items.len() == 1 {
            items.remove(0)
        } else {
            Expr::And(items)
        })
    }

    fn not_expr(&mut self) -> Result<Expr, QueryError> {
        if self.eat(&Tok::Not) {
            return Ok(Expr::Not(Box::new(self.not_expr()?)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr, QueryError> {
        let pos = self.pos();
        let Some(tok) = self.peek().map(|t| t.tok.clone()) else {
            return Err(QueryError::syntax(
                "the query ends where an expression is expected",
                pos,
            ));
        };
        self.at += 1;
        match tok {
            Tok::LParen => {
                let e = self.or_expr()?;
                if !self.eat(&Tok::RParen) {
                    return Err(QueryError::syntax("expected `)`", self.pos()));
                }
                Ok(e)
            }
            Tok::Bare(pieces) => {
                let next = self.peek().map(|t| (t.tok.clone(), t.pos));
                match next {
                    Some((Tok::Colon, _)) => {
                        if pieces.len() > 1 {
                            return Err(QueryError::unsupported("a wildcard in a field name", pos));
                        }
                        self.at += 1;
                        let field = pieces.concat();
                        if field.is_empty() {
                            return Err(QueryError::syntax("empty field name", pos));
                        }
                        if self.eat(&Tok::LBrace) {
                            let inner = self.or_expr()?;
                            if !self.eat(&Tok::RBrace) {
                                return Err(QueryError::syntax(
                                    "expected `}` closing the nested query",
                                    self.pos(),
                                ));
                            }
                            return Ok(under(&field, inner));
                        }
                        let value = self.value_top()?;
                        Ok(Expr::Field { field, value })
                    }
                    Some((Tok::Range(op), _)) => {
                        if pieces.len() > 1 {
                            return Err(QueryError::unsupported("a wildcard in a field name", pos));
                        }
                        self.at += 1;
                        let at = self.pos();
                        let value = match self.peek().map(|t| t.tok.clone()) {
                            Some(Tok::Quoted(s)) => s,
                            Some(Tok::Bare(p)) if p.len() == 1 => p.concat(),
                            Some(Tok::Bare(_)) => {
                                return Err(QueryError::syntax(
                                    "a range bound cannot hold a wildcard",
                                    at,
                                ))
                            }
                            _ => {
                                return Err(QueryError::syntax(
                                    "expected a value after the range operator",
                                    at,
                                ))
                            }
                        };
                        self.at += 1;
                        Ok(Expr::Range {
                            field: pieces.concat(),
                            op,
                            value,
                        })
                    }
                    _ => Err(QueryError::unsupported(
                        "a value without a field (full-text search)",
                        pos,
                    )),
                }
            }
            Tok::Quoted(_) => Err(QueryError::unsupported(
                "a value without a field (full-text search)",
                pos,
            )),
            Tok::LBrace => Err(QueryError::unsupported("a nested query (`{ ... }`)", pos)),
            other => Err(QueryError::syntax(
                format!("expected a field, `not` or `(`, found {}", describe(&other)),
                pos,
            )),
        }
    }

    /// The value after `field:`: one value, or a parenthesised value list.
    fn value_top(&mut self) -> Result<ValueExpr, QueryError> {
        if self.eat(&Tok::LParen) {
            let v = self.value_or()?;
            if !self.eat(&Tok::RParen) {
                return Err(QueryError::syntax(
                    "expected `)` closing the value list",
                    self.pos(),
                ));
            }
            return Ok(v);
        }
        self.value()
    }

    fn value_or(&mut self) -> Result<ValueExpr, QueryError> {
        let mut items = vec![self.value_and()?];
        while self.eat(&Tok::Or) {
            items.push(self.value_and()?);
        }
        Ok(if items.len() == 1 {
            items.remove(0)
        } else {
            ValueExpr::Or(items)
        })
    }

    fn value_and(&mut self) -> Result<ValueExpr, QueryError> {
        let mut items = vec![self.value_not()?];
        while self.eat(&Tok::And) {
            items.push(self.value_not()?);
        }
        Ok(if items.len() == 1 {
            items.remove(0)
        } else {
            ValueExpr::And(items)
        })
    }

    fn value_not(&mut self) -> Result<ValueExpr, QueryError> {
        if self.eat(&Tok::Not) {
            return Ok(ValueExpr::Not(Box::new(self.value_not()?)));
        }
        if self.eat(&Tok::LParen) {
            let v = self.value_or()?;
            if !self.eat(&Tok::RParen) {
                return Err(QueryError::syntax("expected `)`", self.pos()));
            }
            return Ok(v);
        }
        self.value()
    }

    fn value(&mut self) -> Result<ValueExpr, QueryError> {
        let pos = self.pos();
        let Some(tok) = self.peek().map(|t| t.tok.clone()) else {
            return Err(QueryError::syntax(
                "the query ends where a value is expected",
                pos,
            ));
        };
        let pattern = match tok {
            Tok::Quoted(s) => Pattern::Exact(s),
            Tok::Bare(mut pieces) => {
                if pieces.len() == 1 {
                    Pattern::Exact(pieces.remove(0))
                } else {
                    Pattern::Wildcard(pieces)
                }
            }
            Tok::Range(_) => {
                return Err(QueryError::syntax(
                    "a range operator goes between a field and a value (`field >= 5`)",
                    pos,
                ))
            }
            Tok::LBrace => {
                return Err(QueryError::syntax(
                    "a nested query goes right after `field:`, not inside a value list",
                    pos,
                ))
            }
            other => {
                return Err(QueryError::syntax(
                    format!("expected a value, found {}", describe(&other)),
                    pos,
                ))
            }
        };
        self.at += 1;
        // Two values in a row (`field: a b`) are not one value here: say so plainly.
        if let Some(t) = self.peek() {
            if matches!(t.tok, Tok::Bare(_) | Tok::Quoted(_)) {
                let after = self.toks.get(self.at + 1).map(|t| &t.tok);
                if after != Some(&Tok::Colon) {
                    return Err(QueryError::syntax(
                        "two values in a row: join them with `and`/`or`, or quote them as one",
                        t.pos,
                    ));
                }
            }
        }
        Ok(ValueExpr::Value(pattern))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::error::QueryErrorKind;

    fn field(f: &str, p: Pattern) -> Expr {
        Expr::Field {
            field: f.into(),
            value: ValueExpr::Value(p),
        }
    }

    #[test]
    fn seed_query() {
        let q = r#"event.dataset: "aws.cloudtrail" and event.provider: "sts.amazonaws.com" and event.action: "GetCallerIdentity"
and not aws.cloudtrail.user_identity.type: "AssumedRole""#;
        let e = parse(q).unwrap();
        assert_eq!(
            e,
            Expr::And(vec![
                field("event.dataset", Pattern::Exact("aws.cloudtrail".into())),
                field("event.provider", Pattern::Exact("sts.amazonaws.com".into())),
                field("event.action", Pattern::Exact("GetCallerIdentity".into())),
                Expr::Not(Box::new(field(
                    "aws.cloudtrail.user_identity.type",
                    Pattern::Exact("AssumedRole".into())
                ))),
            ])
        );
    }

    #[test]
    fn precedence_lists_wildcards_escapes() {
        let e = parse("a:1 OR b:2 and NOT c:3").unwrap();
        assert_eq!(
            e,
            Expr::Or(vec![
                field("a", Pattern::Exact("1".into())),
                Expr::And(vec![
                    field("b", Pattern::Exact("2".into())),
                    Expr::Not(Box::new(field("c", Pattern::Exact("3".into())))),
                ]),
            ])
        );
        let e = parse(r#"a: (x or "y z" or w*)"#).unwrap();
        assert_eq!(
            e,
            Expr::Field {
                field: "a".into(),
                value: ValueExpr::Or(vec![
                    ValueExpr::Value(Pattern::Exact("x".into())),
                    ValueExpr::Value(Pattern::Exact("y z".into())),
                    ValueExpr::Value(Pattern::Wildcard(vec!["w".into(), "".into()])),
                ]),
            }
        );
        assert_eq!(
            parse(r"a: b\:c\*").unwrap(),
            field("a", Pattern::Exact("b:c*".into()))
        );
        assert_eq!(
            parse(r#"a: "b*\"\u0041""#).unwrap(),
            field("a", Pattern::Exact("b*\"A".into()))
        );
        assert!(
            matches!(parse("a: *").unwrap(), Expr::Field { value: ValueExpr::Value(p), .. } if p.is_exists())
        );
    }

    #[test]
    fn ranges_and_nested_queries() {
        assert_eq!(
            parse(r#"a: 1 and b >= 5 and c < "x y""#).unwrap(),
            Expr::And(vec![
                field("a", Pattern::Exact("1".into())),
                Expr::Range {
                    field: "b".into(),
                    op: RangeOp::Gte,
                    value: "5".into()
                },
                Expr::Range {
                    field: "c".into(),
                    op: RangeOp::Lt,
                    value: "x y".into()
                },
            ])
        );
        assert_eq!(
            parse("a: { b: 1 and not c: { d > 2 } }").unwrap(),
            Expr::And(vec![
                field("a.b", Pattern::Exact("1".into())),
                Expr::Not(Box::new(Expr::Range {
                    field: "a.c.d".into(),
                    op: RangeOp::Gt,
                    value: "2".into()
                })),
            ])
        );
    }

    #[test]
    fn errors_name_construct_and_position() {
        let e = parse("a: 1 and b > 5*").unwrap_err();
        assert!(matches!(e.kind(), QueryErrorKind::Syntax(_)));
        assert_eq!(e.position(), 13);
        assert_eq!(parse("a: { b: 1 ").unwrap_err().position(), 10);
        assert_eq!(parse("a: (b or { c: 1 })").unwrap_err().position(), 9);
        assert!(parse("a >").is_err());
        assert!(parse("> 5").is_err());
        assert!(matches!(
            parse("foo").unwrap_err().kind(),
            QueryErrorKind::Unsupported(_)
        ));
        assert!(matches!(
            parse("a*: 1").unwrap_err().kind(),
            QueryErrorKind::Unsupported(_)
        ));
        assert_eq!(parse("(a: 1").unwrap_err().position(), 5);
        assert_eq!(parse(r#"a: "x"#).unwrap_err().position(), 3);
        assert!(parse("").is_err());
        assert!(parse("a: 1 b: 2").is_err());
        assert!(parse("a: x y").is_err());
        assert!(parse("a:").is_err());
    }
}

#[cfg(test)]
mod round_trip {
    use super::parse;

    #[test]
    fn print_then_parse_gives_the_same_tree() {
        for q in [
            r#"event.dataset: "aws.cloudtrail" and not a.b: "x\"y" or c: (d or e* and not "f g")"#,
            r#"a: *x\:y\ z* and b: "\\" and c: "line\nbreak""#,
            "a: * or not (b: 1 and c: true)",
            r#"\not: x and a\:b: y and c: \or*"#,
            r#"a >= 5 and b < "x\"y" and c: { d <= 2 or e: f }"#,
        ] {
            let e = parse(q).unwrap();
            let printed = e.to_string();
            assert_eq!(parse(&printed).unwrap(), e, "{q} printed as {printed}");
        }
    }
}
