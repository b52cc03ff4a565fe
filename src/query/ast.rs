//! The KQL syntax tree, as parsed, before fields are resolved.

/// A query expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
    /// `field: value-expression`.
    Field {
        field: String,
        value: ValueExpr,
    },
    /// `field >= value` (and `<=`, `>`, `<`).
    Range {
        field: String,
        op: RangeOp,
        value: String,
    },
    /// A value without a field: matches when any value of the record does.
    FreeText(Pattern),
    /// `path: { query }`: the query's fields are under `path`, and it must hold for one
    /// element of `path`.
    Nested {
        path: String,
        query: Box<Expr>,
    },
}

/// A range comparison's operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeOp {
    Lt,
    Lte,
    Gt,
    Gte,
}

impl RangeOp {
    pub fn as_str(self) -> &'static str {
        match self {
            RangeOp::Lt => "<",
            RangeOp::Lte => "<=",
            RangeOp::Gt => ">",
            RangeOp::Gte => ">=",
        }
    }

    /// Whether `ordering` (the value against the bound) satisfies the operator.
    pub fn holds(self, ordering: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::*;
        matches!(
            (self, ordering),
            (RangeOp::Lt, Less)
                | (RangeOp::Lte, Less | Equal)
                | (RangeOp::Gt, Greater)
                | (RangeOp::Gte, Greater | Equal)
        )
    }
}

/// The right-hand side of `field:`; `field: (a or b)` is a tree of values.
#[derive(Debug, Clone, PartialEq)]
pub enum ValueExpr {
    And(Vec<ValueExpr>),
    Or(Vec<ValueExpr>),
    Not(Box<ValueExpr>),
    Value(Pattern),
}

/// One value.
#[derive(Debug, Clone, PartialEq)]
pub enum Pattern {
    /// Matches exactly (a quoted string, or a bare value without an unescaped `*`).
    Exact(String),
    /// A bare value with unescaped `*`: the literal pieces between the stars.
    /// `*` alone (pieces `["", ""]`) is an existence test.
    Wildcard(Vec<String>),
}

impl Pattern {
    /// `field: *`.
    pub fn is_exists(&self) -> bool {
        matches!(self, Pattern::Wildcard(p) if p.iter().all(String::is_empty))
    }

    /// Whether `text` matches: exactly and case-sensitively, `*` standing for any run of
    /// characters (possibly empty).
    pub fn matches(&self, text: &str) -> bool {
        match self {
            Pattern::Exact(s) => s == text,
            Pattern::Wildcard(pieces) => wildcard_match(pieces, text),
        }
    }
}

/// Prints KQL that parses back to the same tree: exact values quoted, wildcards bare with
/// every character the grammar treats specially escaped.
impl std::fmt::Display for Expr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expr::And(items) => join(f, items, " and "),
            Expr::Or(items) => join(f, items, " or "),
            Expr::Not(e) => write!(f, "not ({e})"),
            Expr::Field { field, value } => {
                write_field(f, field)?;
                write!(f, ": ({value})")
            }
            Expr::Range { field, op, value } => {
                // No space after a bare field: `xnot >` would read `not ` as a keyword.
                write_field(f, field)?;
                write!(f, "{} ", op.as_str())?;
                write_quoted(f, value)
            }
            Expr::FreeText(p) => write_pattern(f, p),
            Expr::Nested { path, query } => {
                write_field(f, path)?;
                write!(f, ": {{ {query} }}")
            }
        }
    }
}

impl std::fmt::Display for ValueExpr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ValueExpr::And(items) => join(f, items, " and "),
            ValueExpr::Or(items) => join(f, items, " or "),
            ValueExpr::Not(v) => write!(f, "not ({v})"),
            ValueExpr::Value(p) => write_pattern(f, p),
        }
    }
}

fn write_pattern(f: &mut std::fmt::Formatter<'_>, p: &Pattern) -> std::fmt::Result {
    match p {
        Pattern::Exact(s) => write_quoted(f, s),
        Pattern::Wildcard(pieces) => {
            for (i, piece) in pieces.iter().enumerate() {
                if i > 0 {
                    f.write_str("*")?;
                }
                write_bare(f, piece)?;
            }
            Ok(())
        }
    }
}

/// A quoted string, with the escapes KQL reads back.
fn write_quoted(f: &mut std::fmt::Formatter<'_>, s: &str) -> std::fmt::Result {
    f.write_str("\"")?;
    for c in s.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\t' => f.write_str("\\t")?,
            '\r' => f.write_str("\\r")?,
            c => write!(f, "{c}")?,
        }
    }
    f.write_str("\"")
}

/// A field name: bare when it is plain, else quoted.
fn write_field(f: &mut std::fmt::Formatter<'_>, field: &str) -> std::fmt::Result {
    let plain = field
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_.@-".contains(c))
        && !matches!(field.to_ascii_lowercase().as_str(), "and" | "or" | "not");
    if plain {
        f.write_str(field)
    } else {
        write_quoted(f, field)
    }
}

/// Part of an unquoted literal: special characters escaped, `\t \r \n` as escapes, and
/// the first letter of every `or`, `and`, `not` written as `\uXXXX`, so that no keyword
/// can be read in it.
fn write_bare(f: &mut std::fmt::Formatter<'_>, word: &str) -> std::fmt::Result {
    let chars: Vec<char> = word.chars().collect();
    let starts_keyword = |i: usize| {
        ["or", "and", "not"].iter().any(|k| {
            k.chars().enumerate().all(|(j, kc)| {
                chars
                    .get(i + j)
                    .is_some_and(|c| c.to_ascii_lowercase() == kc)
            })
        })
    };
    for (i, &c) in chars.iter().enumerate() {
        match c {
            '\n' => f.write_str("\\n")?,
            '\t' => f.write_str("\\t")?,
            '\r' => f.write_str("\\r")?,
            c if "\\():<>\"*{}".contains(c) => write!(f, "\\{c}")?,
            c if starts_keyword(i) => write!(f, "\\u{:04x}", c as u32)?,
            c => write!(f, "{c}")?,
        }
    }
    Ok(())
}

fn join<T: std::fmt::Display>(
    f: &mut std::fmt::Formatter<'_>,
    items: &[T],
    sep: &str,
) -> std::fmt::Result {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(sep)?;
        }
        write!(f, "({item})")?;
    }
    Ok(())
}

/// Glob match of `text` against `pieces[0] * pieces[1] * ... * pieces[n-1]`.
fn wildcard_match(pieces: &[String], text: &str) -> bool {
    let (Some(first), Some(last)) = (pieces.first(), pieces.last()) else {
        return true;
    };
    if pieces.len() == 1 {
        return first == text;
    }
    let Some(mut rest) = text.strip_prefix(first.as_str()) else {
        return false;
    };
    let middle = &pieces[1..pieces.len() - 1];
    for piece in middle {
        // Leftmost match of each middle piece is optimal for a `*`-only glob.
        match rest.find(piece.as_str()) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(p: &[&str]) -> Pattern {
        Pattern::Wildcard(p.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn wildcards() {
        assert!(w(&["", ""]).matches(""));
        assert!(w(&["", ""]).is_exists());
        assert!(w(&["Get", ""]).matches("GetCallerIdentity"));
        assert!(!w(&["Get", ""]).matches("getCallerIdentity"));
        assert!(w(&["", "Identity"]).matches("GetCallerIdentity"));
        assert!(w(&["G", "Caller", "y"]).matches("GetCallerIdentity"));
        assert!(!w(&["G", "Caller", "y"]).matches("GetCallerIdentit"));
        assert!(w(&["ab", "ab"]).matches("abab"));
        assert!(
            !w(&["ab", "ab"]).matches("aba"),
            "prefix and suffix may not overlap"
        );
        assert!(w(&["a", "b", "b"]).matches("abb"));
        assert!(!w(&["a", "b", "b"]).matches("ab"));
        assert!(Pattern::Exact("a*".into()).matches("a*"));
        assert!(!Pattern::Exact("a*".into()).matches("ab"));
    }
}
