//! The prefilter: literals every matching record's text must contain, searched for before
//! any parse.
//!
//! From the compiled query we derive groups of literals such that a matching record
//! contains at least one literal of every group. `and` joins its children's groups, `or`
//! merges one group from each branch (if any branch has none, the `or` gives none), `not`
//! and `field: *` give none. A value is only used when it appears verbatim in the text of
//! any record that has it: values of fields a raw CloudTrail record merely implies
//! (`event.dataset`, `event.outcome`) are never used.
//!
//! A literal is searched in its canonical JSON form (`"` as `\"`, `\` as `\\`). JSON can
//! also write any character as `\uXXXX` and `/` as `\/`; a record whose text has such
//! escapes takes the full path instead of being rejected, so the prefilter never changes
//! a decision.

use memchr::memmem::Finder;

use super::ast::Pattern;
use super::compile::Node;
use crate::record::{verbatim_in_text, Layout};

/// Literals shorter than this are too common in log text to be worth a search.
const MIN_LITERAL: usize = 4;

#[derive(Debug, Clone)]
struct Group {
    finders: Vec<Finder<'static>>,
    has_slash: bool,
}

/// The prefilter of one query; empty (accepting everything) when nothing is required.
#[derive(Debug, Clone)]
pub struct Prefilter {
    groups: Vec<Group>,
    /// `\u`: any character may be written so.
    unicode_escape: Finder<'static>,
    /// `\/`: a slash may be written so.
    slash_escape: Finder<'static>,
}

impl Prefilter {
    pub(crate) fn from_node(node: &Node, layout: &Layout) -> Self {
        let groups = required(node, layout)
            .into_iter()
            .map(|lits| Group {
                has_slash: lits.iter().any(|l| l.contains('/')),
                finders: lits
                    .iter()
                    .map(|l| Finder::new(l.as_bytes()).into_owned())
                    .collect(),
            })
            .collect();
        Prefilter {
            groups,
            unicode_escape: Finder::new(b"\\u").into_owned(),
            slash_escape: Finder::new(b"\\/").into_owned(),
        }
    }

    /// Whether the prefilter can reject anything at all.
    pub fn is_active(&self) -> bool {
        !self.groups.is_empty()
    }

    /// The literals, group by group (for diagnostics and tests).
    pub fn literals(&self) -> Vec<Vec<String>> {
        self.groups
            .iter()
            .map(|g| {
                g.finders
                    .iter()
                    .map(|f| String::from_utf8_lossy(f.needle()).into_owned())
                    .collect()
            })
            .collect()
    }

    /// The literals of each group, as searched: a record that can match contains one
    /// literal of every group, or an escape (`\u`, `\/`) that could hide one. A rule pack
    /// chooses one group of each rule as its gate and searches all gates in one pass.
    pub fn groups(&self) -> Vec<Vec<&[u8]>> {
        self.groups
            .iter()
            .map(|g| g.finders.iter().map(|f| f.needle()).collect())
            .collect()
    }

    /// False only when the record's text cannot match the query.
    pub fn may_match(&self, text: &[u8]) -> bool {
        // Whether `text` has escapes that could hide a literal: each searched at most once,
        // and only when a literal is missing (the common case costs one literal search and
        // one `\u` search).
        let mut unicode: Option<bool> = None;
        let mut slash: Option<bool> = None;
        for g in &self.groups {
            if g.finders.iter().any(|f| f.find(text).is_some()) {
                continue;
            }
            if *unicode.get_or_insert_with(|| self.unicode_escape.find(text).is_some()) {
                continue;
            }
            if g.has_slash && *slash.get_or_insert_with(|| self.slash_escape.find(text).is_some()) {
                continue;
            }
            return false;
        }
        true
    }
}

/// Groups of literals (in canonical JSON form): one of each group must be in the text.
fn required(node: &Node, layout: &Layout) -> Vec<Vec<String>> {
    match node {
        Node::And(items) => items.iter().flat_map(|n| required(n, layout)).collect(),
        Node::Or(items) => {
            let mut merged = Vec::new();
            for n in items {
                // The most selective group of each branch: its longest shortest literal.
                let best = required(n, layout)
                    .into_iter()
                    .max_by_key(|g| g.iter().map(String::len).min().unwrap_or(0));
                match best {
                    Some(g) => merged.extend(g),
                    None => return Vec::new(),
                }
            }
            merged.sort();
            merged.dedup();
            if merged.is_empty() {
                Vec::new()
            } else {
                vec![merged]
            }
        }
        Node::Not(_)
        | Node::Exists(_)
        | Node::Glob { .. }
        | Node::InNetwork { .. }
        | Node::InSet { .. }
        | Node::Range { .. } => Vec::new(),
        Node::Match { field, pattern } => {
            if !verbatim_in_text(layout.field_name(*field)) {
                return Vec::new();
            }
            let lit = match pattern {
                Pattern::Exact(s) => s.as_str(),
                Pattern::Wildcard(pieces) => pieces
                    .iter()
                    .max_by_key(|p| p.len())
                    .map_or("", |s| s.as_str()),
            };
            // Numbers and booleans may be written differently from their text (`5.0`).
            let scalar_like = lit.parse::<f64>().is_ok() || lit == "true" || lit == "false";
            let lit = json_escaped(lit);
            if lit.len() < MIN_LITERAL || scalar_like {
                Vec::new()
            } else {
                vec![vec![lit]]
            }
        }
    }
}

/// `s` as it appears between the quotes of a JSON string written with minimal escapes.
fn json_escaped(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::Query;
    use crate::record::LayoutBuilder;

    fn prefilter(q: &str) -> Prefilter {
        let mut b = LayoutBuilder::new();
        let query = Query::compile(q, &mut b).unwrap();
        let layout = b.build().unwrap();
        Prefilter::from_node(query.root(), &layout)
    }

    #[test]
    fn seed_rule_literals() {
        let p = prefilter(
            r#"event.dataset: "aws.cloudtrail" and event.provider: "sts.amazonaws.com" and event.action: "GetCallerIdentity" and not aws.cloudtrail.user_identity.type: "AssumedRole""#,
        );
        assert_eq!(
            p.literals(),
            vec![
                vec!["sts.amazonaws.com".to_owned()],
                vec!["GetCallerIdentity".to_owned()]
            ]
        );
        assert!(
            p.may_match(br#"{"eventSource":"sts.amazonaws.com","eventName":"GetCallerIdentity"}"#)
        );
        assert!(!p.may_match(br#"{"eventSource":"sts.amazonaws.com","eventName":"AssumeRole"}"#));
        assert!(
            p.may_match(
                br#"{"eventSource":"sts.amazonaws.com","eventName":"\u0047etCallerIdentity"}"#
            ),
            "a \\u escape could hide the literal"
        );
    }

    #[test]
    fn or_not_wildcards_and_escapes() {
        assert_eq!(
            prefilter("a: (abcd or efgh)").literals(),
            vec![vec!["abcd".to_owned(), "efgh".to_owned()]]
        );
        assert!(prefilter("a: abcd or not b: efgh").literals().is_empty());
        assert!(prefilter("a: *").literals().is_empty());
        assert!(prefilter("a: 12345").literals().is_empty());
        assert_eq!(
            prefilter("a: *abc*defgh*").literals(),
            vec![vec!["defgh".to_owned()]]
        );
        let p = prefilter(r#"a: "x\"y/z""#);
        assert_eq!(p.literals(), vec![vec![r#"x\"y/z"#.to_owned()]]);
        assert!(
            p.may_match(br#"{"a":"x\"y\/z"}"#),
            "an escaped slash could hide the literal"
        );
        assert!(!p.may_match(br#"{"a":"x\"y_z"}"#));
    }
}
