//! The prefilter: literals every matching record's text must contain, searched for before
//! any parse.
//!
//! From the compiled query we derive groups of literals such that a matching record
//! contains at least one literal of every group. `and` joins its children's groups, `or`
//! merges one group from each branch (if any branch has none, the `or` gives none), `not`
//! gives none, and a test whose value gives no literal (`field: *`, a number) gives its
//! field's key (`key_of`). A value is only used when it appears verbatim in the text of
//! any record that has it: a raw CloudTrail record implies `event.dataset`
//! (`aws.cloudtrail`) and `event.outcome` (`success`, `failure`) without writing them, so
//! a pattern that could match one of those is never used (`event.dataset: azure.*` still
//! is: no record holds a value it matches unless its text does).
//!
//! A literal is searched in its canonical JSON form (`"` as `\"`, `\` as `\\`). JSON can
//! also write any character as `\uXXXX` and `/` as `\/`; a record whose text has such
//! escapes takes the full path instead of being rejected, so the prefilter never changes
//! a decision.
//!
//! **Text written by Fluent Bit** ([`Writer::FluentBit`]). Fluent Bit hands a filter each
//! record as JSON it wrote itself from its msgpack (`flb_msgpack_raw_to_json_sds`), and its
//! encoder (`json_escape_table` in `src/flb_utils.c`, 5.1.1) escapes only `"` (as `\"`),
//! `\` (as `\\`), the control characters, 0x7F and, with `json.escape_unicode`, non-ASCII
//! characters. Every other character is written as itself; `\uXXXX` and `\/` never stand
//! for one. So a value made only of printable ASCII (0x20 to 0x7E) appears in that text
//! exactly in its canonical form wherever a string holds it, and the search for such a
//! literal needs no escape search beside it: a record without it cannot match. A literal
//! with any other character (a control character, 0x7F, non-ASCII: written one way or the
//! other depending on the setting) keeps the escape-aware search. The same holds for the
//! values found inside a record (CloudTrail's `Records`, EventBridge's `detail`): they are
//! slices of the same text. Only the Fluent Bit module declares this writer; every other
//! host reads text from anyone.

use memchr::memmem::Finder;

use super::scan;

use super::ast::Pattern;
use super::node::{Node, Test};
use super::pattern::Fold;
use crate::record::{cloudtrail_paths, implied_values, Layout};

/// Literals shorter than this are too common in log text to be worth a search.
const MIN_LITERAL: usize = 4;

/// Who wrote the JSON text of the records, and so how a value can appear in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Writer {
    /// Anyone: any character may be escaped.
    #[default]
    Any,
    /// Fluent Bit's JSON encoder: printable ASCII other than `"` and `\` is never escaped
    /// (see the module's documentation).
    FluentBit,
}

impl Writer {
    /// Whether every record this writer writes holds `literal` (canonical JSON) as it is
    /// wherever a string holds its value, so that no escape can hide it.
    pub(crate) fn writes_as_itself(self, literal: &[u8]) -> bool {
        self == Writer::FluentBit && printable_ascii(literal)
    }
}

#[derive(Debug, Clone)]
struct Group {
    finders: Vec<Finder<'static>>,
    has_slash: bool,
    /// For a group of one literal, the offset of its anchor byte for [`scan::group_holds`].
    anchor: usize,
    /// Every literal is written as itself by [`Prefilter::writer`]: no escape can hide one.
    verbatim: bool,
    /// The group is a field's key ([`key_of`]), not a value: keys recur in most records of
    /// a source, so a pack's search leaves such a group to the rule's own prefilter.
    key: bool,
}

/// The prefilter of one query; empty (accepting everything) when nothing is required.
#[derive(Debug, Clone)]
pub struct Prefilter {
    groups: Vec<Group>,
    /// When every group is one literal: the groups' order for [`scan::group_holds`], the
    /// rarest anchor first.
    portable_order: Option<Vec<usize>>,
    writer: Writer,
    /// A verbatim group of one literal searched first, by skipping ([`Prefilter::assume`]).
    skip: Option<(usize, scan::Skip)>,
}

/// Whether a literal (canonical JSON) is only printable ASCII and the escapes of `"` and
/// `\`: what Fluent Bit always writes as itself.
fn printable_ascii(literal: &[u8]) -> bool {
    let mut i = 0;
    while let Some(&b) = literal.get(i) {
        match b {
            b'\\' if matches!(literal.get(i + 1), Some(b'"' | b'\\')) => i += 2,
            b'\\' => return false,
            0x20..=0x7e => i += 1,
            _ => return false,
        }
    }
    true
}

/// Where `\` followed by `second` first occurs in `text`: `\u` (any character may be
/// written so) or `\/` (a slash may). A search for the backslash alone (rare in log text,
/// and one byte is the cheapest search there is), then a look at the next byte.
fn find_escape(text: &[u8], second: u8) -> Option<usize> {
    let mut at = 0;
    while let Some(i) = memchr::memchr(b'\\', &text[at..]) {
        let p = at + i;
        if text.get(p + 1) == Some(&second) {
            return Some(p);
        }
        at = p + 1;
    }
    None
}

/// Whether `text` has an escape (`\u`, `\/`) that could hide a literal.
pub(crate) fn has_escape(text: &[u8]) -> bool {
    find_escape(text, b'u').is_some() || find_escape(text, b'/').is_some()
}

/// What a [`BufferScan`] cursor looks for.
#[derive(Clone, Copy)]
enum Needle<'f> {
    Literal(&'f Finder<'static>),
    Escape(u8),
}

impl Needle<'_> {
    fn find(self, text: &[u8]) -> Option<usize> {
        match self {
            Needle::Literal(f) => f.find(text),
            Needle::Escape(second) => find_escape(text, second),
        }
    }

    fn len(self) -> usize {
        match self {
            Needle::Literal(f) => f.needle().len(),
            Needle::Escape(_) => 2,
        }
    }
}

impl Prefilter {
    pub(crate) fn from_node(node: &Node, layout: &Layout) -> Self {
        // Tests of fields under one path give the same path group: it is required once.
        let mut needs: Vec<Need> = Vec::new();
        for need in required(node, layout) {
            if !needs.iter().any(|n| n.lits == need.lits) {
                needs.push(need);
            }
        }
        let groups: Vec<Group> = needs
            .into_iter()
            .map(|Need { lits, key, .. }| Group {
                has_slash: lits.iter().any(|l| l.contains('/')),
                anchor: scan::anchor(lits.first().map_or(&[][..], |l| l.as_bytes())),
                verbatim: false,
                key,
                finders: lits
                    .iter()
                    .map(|l| Finder::new(l.as_bytes()).into_owned())
                    .collect(),
            })
            .collect();
        let portable_order = groups.iter().all(|g| g.finders.len() == 1).then(|| {
            let mut order: Vec<usize> = (0..groups.len()).collect();
            order.sort_by_key(|&i| scan::anchor_commonness(groups[i].finders[0].needle()));
            order
        });
        Prefilter {
            groups,
            portable_order,
            writer: Writer::Any,
            skip: None,
        }
    }

    /// Assumes the records' text comes from `writer`. With `skip`, a group of one literal
    /// that is written as itself is searched first by [`scan::Skip`] (64 KiB of table:
    /// the caller decides where that is worth it).
    pub(crate) fn assume(&mut self, writer: Writer, skip: bool) {
        self.writer = writer;
        for g in &mut self.groups {
            g.verbatim = g
                .finders
                .iter()
                .all(|f| writer.writes_as_itself(f.needle()));
        }
        let first = self
            .portable_order
            .as_ref()
            .and_then(|o| o.first().copied());
        let candidate = (0..self.groups.len())
            .filter(|&i| self.groups[i].verbatim && self.groups[i].finders.len() == 1)
            // The rarest anchor first, as the portable order has it; else the longest.
            .max_by_key(|&i| (Some(i) == first, self.groups[i].finders[0].needle().len()));
        self.skip = candidate
            .filter(|_| skip)
            .and_then(|i| Some((i, scan::Skip::new(self.groups[i].finders[0].needle())?)));
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

    /// Which of [`Prefilter::groups`] are a field's key rather than a value.
    pub(crate) fn key_groups(&self) -> Vec<bool> {
        self.groups.iter().map(|g| g.key).collect()
    }

    /// False only when the record's text cannot match the query.
    pub fn may_match(&self, text: &[u8]) -> bool {
        let skipped = match &self.skip {
            Some((i, skip)) if !skip.holds(text) => return false,
            Some((i, _)) => Some(*i),
            None => None,
        };
        // Whether `text` has escapes that could hide a literal: each searched at most once,
        // and only when a literal is missing (the common case costs one literal search and
        // one `\u` search).
        if let (true, Some(order)) = (scan::PORTABLE, &self.portable_order) {
            return order.iter().filter(|&&i| Some(i) != skipped).all(|&i| {
                let g = &self.groups[i];
                let literal = g.finders[0].needle();
                if g.verbatim {
                    g.finders[0].find(text).is_some()
                } else {
                    scan::group_holds(text, literal, g.anchor, g.has_slash)
                }
            });
        }
        self.groups_hold(text, |i, _| Some(i) != skipped)
    }

    /// [`Prefilter::may_match`] over its groups of keys alone ([`Prefilter::key_groups`]):
    /// what a pack's search leaves to the rule (`Gate::passes`).
    pub(crate) fn keys_may_match(&self, text: &[u8]) -> bool {
        self.groups_hold(text, |_, g| g.key)
    }

    /// Whether each group `which` names holds in `text`: one of its literals is there, or
    /// an escape could hide one.
    fn groups_hold(&self, text: &[u8], which: impl Fn(usize, &Group) -> bool) -> bool {
        let mut unicode: Option<bool> = None;
        let mut slash: Option<bool> = None;
        for (i, g) in self.groups.iter().enumerate() {
            if !which(i, g) || g.finders.iter().any(|f| f.find(text).is_some()) {
                continue;
            }
            if g.verbatim {
                return false;
            }
            if *unicode.get_or_insert_with(|| find_escape(text, b'u').is_some()) {
                continue;
            }
            if g.has_slash && *slash.get_or_insert_with(|| find_escape(text, b'/').is_some()) {
                continue;
            }
            return false;
        }
        true
    }
}

/// The prefilter over one buffer holding many records (NDJSON lines): each literal, and
/// each escape, is searched across the whole buffer once, in long runs, instead of once
/// per record; a record is then judged from where the next occurrences lie. Answers
/// exactly as [`Prefilter::may_match`] does for the record alone.
pub struct BufferScan<'p> {
    prefilter: &'p Prefilter,
    /// Per literal (groups flattened), then `\u`, then `\/`: the next occurrence at or
    /// after the position it was searched from (`usize::MAX`: none left).
    next: Vec<usize>,
    /// Where each `next` was searched from (`usize::MAX`: not yet).
    from: Vec<usize>,
}

impl<'p> BufferScan<'p> {
    pub fn new(prefilter: &'p Prefilter) -> BufferScan<'p> {
        let n = prefilter
            .groups
            .iter()
            .map(|g| g.finders.len())
            .sum::<usize>()
            + 2;
        BufferScan {
            prefilter,
            next: vec![0; n],
            from: vec![usize::MAX; n],
        }
    }

    /// Whether cursor `i`'s needle occurs within `buf[start..end]`. Records are asked
    /// about in buffer order, so each search goes on from where the last one stopped.
    fn occurs(
        &mut self,
        i: usize,
        needle: Needle<'_>,
        buf: &[u8],
        start: usize,
        end: usize,
    ) -> bool {
        let stale = self.from[i] == usize::MAX
            || self.from[i] > start
            || (self.next[i] != usize::MAX && self.next[i] < start);
        if stale {
            self.from[i] = start;
            self.next[i] = needle
                .find(&buf[start..])
                .map_or(usize::MAX, |at| start + at);
        }
        // Literals hold no raw newline, so an occurrence starting in the line ends in it.
        self.next[i] != usize::MAX && self.next[i] + needle.len() <= end
    }

    /// [`Prefilter::may_match`] for the record `buf[start..end]`.
    pub fn may_match(&mut self, buf: &[u8], start: usize, end: usize) -> bool {
        let p = self.prefilter;
        let escapes = self.next.len() - 2;
        let mut i = 0;
        for g in &p.groups {
            let mut found = false;
            for f in &g.finders {
                found = found || self.occurs(i, Needle::Literal(f), buf, start, end);
                i += 1;
            }
            if found {
                continue;
            }
            if self.occurs(escapes, Needle::Escape(b'u'), buf, start, end) {
                continue;
            }
            if g.has_slash && self.occurs(escapes + 1, Needle::Escape(b'/'), buf, start, end) {
                continue;
            }
            return false;
        }
        true
    }
}

/// Groups of literals (in canonical JSON form): one of each group must be in the text.
/// `and` joins its operands' groups; `or` merges the most selective group of each branch
/// into one (none when a branch has none). A walk with a stack of its own: a rule's
/// nesting costs no call stack (the Fluent Bit module loads rules on an 8 KiB one).
fn required(root: &Node, root_layout: &Layout) -> Vec<Need> {
    enum Visit<'n> {
        Enter(&'n Node, &'n Layout),
        /// An `and` (or `or`) whose operands' groups are the last `operands` on `done`.
        Exit {
            and: bool,
            operands: usize,
        },
    }
    let mut todo = vec![Visit::Enter(root, root_layout)];
    let mut done: Vec<Vec<Need>> = Vec::new();
    // Each field's path group, worked out once: a rule's value list is a test per value.
    let mut paths = Paths::default();
    while let Some(visit) = todo.pop() {
        match visit {
            Visit::Enter(Node::And(items) | Node::Or(items), layout) => {
                todo.push(Visit::Exit {
                    and: matches!(visit, Visit::Enter(Node::And(_), _)),
                    operands: items.len(),
                });
                todo.extend(items.iter().rev().map(|n| Visit::Enter(n, layout)));
            }
            // An element's values are in the record's text, as the element's own are.
            Visit::Enter(Node::Test(Test::Nested(n)), _) => {
                todo.push(Visit::Enter(&n.node, &n.layout))
            }
            Visit::Enter(Node::Not(_), _) => done.push(Vec::new()),
            Visit::Enter(Node::Test(test), layout) => {
                done.push(test_groups(test, layout, &mut paths))
            }
            Visit::Exit { and, operands } => {
                let groups = done.split_off(done.len().saturating_sub(operands));
                done.push(if and {
                    groups.into_iter().flatten().collect()
                } else {
                    either(groups)
                });
            }
        }
    }
    done.pop().unwrap_or_default()
}

/// One group a record must hold a literal of.
struct Need {
    lits: Vec<String>,
    /// A field's key ([`key_of`]) or path ([`path_of`]).
    key: bool,
    /// A field's path: a component that may be in any key of the record.
    path: bool,
}

impl Need {
    fn value(lits: Vec<String>) -> Need {
        Need {
            lits,
            key: false,
            path: false,
        }
    }
}

/// The one group an `or` requires: the most selective group of each branch (a value
/// before a key, a key before a path, then the longest shortest literal), merged; none
/// when a branch requires nothing. The merged group is a key group when any branch gave
/// one.
fn either(branches: Vec<Vec<Need>>) -> Vec<Need> {
    let mut merged = Vec::new();
    let mut key = false;
    for groups in branches {
        let best = groups.into_iter().max_by_key(|g| {
            let shortest = g.lits.iter().map(String::len).min().unwrap_or(0);
            (!g.key, !g.path, shortest)
        });
        match best {
            Some(g) => {
                key |= g.key;
                merged.extend(g.lits);
            }
            None => return Vec::new(),
        }
    }
    merged.sort();
    merged.dedup();
    if merged.is_empty() {
        Vec::new()
    } else {
        vec![Need {
            lits: merged,
            key,
            path: false,
        }]
    }
}

/// The path groups ([`path_of`]) of the fields of a query, by layout and field.
#[derive(Default)]
struct Paths(Vec<(*const Layout, crate::record::FieldId, Option<Vec<String>>)>);

impl Paths {
    fn of(&mut self, layout: &Layout, field: crate::record::FieldId) -> Option<Vec<String>> {
        let at = std::ptr::from_ref(layout);
        if let Some((_, _, group)) = self.0.iter().find(|(l, f, _)| *l == at && *f == field) {
            return group.clone();
        }
        let group = path_of(layout, field);
        self.0.push((at, field, group.clone()));
        group
    }
}

/// The groups one test requires: its value's literal, else the field's key; and the
/// field's path, when only the field's own path can give it a value ([`path_of`]).
fn test_groups(test: &Test, layout: &Layout, paths: &mut Paths) -> Vec<Need> {
    let mut groups = field_groups(test, layout);
    let field = match test {
        Test::Nested(_) | Test::FreeText(_) => None,
        Test::Exists(field)
        | Test::Glob { field, .. }
        | Test::InNetwork { field, .. }
        | Test::InSet { field, .. }
        | Test::Range { field, .. }
        | Test::Match { field, .. } => Some(*field),
    };
    if let Some(lits) = field.and_then(|f| paths.of(layout, f)) {
        groups.push(Need {
            lits,
            key: true,
            path: true,
        });
    }
    groups
}

/// The groups a test requires of its value or its field's key.
fn field_groups(test: &Test, layout: &Layout) -> Vec<Need> {
    let key = |field, object| {
        key_of(layout, field, object)
            .map(|lits| Need {
                lits,
                key: true,
                path: false,
            })
            .into_iter()
            .collect()
    };
    match test {
        Test::Nested(_) => Vec::new(),
        Test::FreeText(pattern) => literal_of(pattern, false)
            .map(Need::value)
            .into_iter()
            .collect(),
        Test::Exists(field) => key(*field, true),
        Test::Glob { field, .. }
        | Test::InNetwork { field, .. }
        | Test::InSet { field, .. }
        | Test::Range { field, .. } => key(*field, false),
        Test::Match {
            field,
            pattern,
            fold,
        } => {
            // A raw CloudTrail record implies some fields' values without writing them:
            // a pattern one of those could match is not required in the text. A folded
            // field's values are not in the text as the pattern writes them.
            let implied = implied_values(layout.field_name(*field));
            if implied.iter().any(|v| pattern.matches(v)) {
                return Vec::new();
            }
            match fold {
                Fold::None => match literal_of(pattern, true) {
                    Some(lits) => vec![Need::value(lits)],
                    None => key(*field, false),
                },
                _ => key(*field, false),
            }
        }
    }
}

/// The one-literal-of group a test of `field` requires of the text when its value gives
/// none (a number, a range, a folded value): the field's key. For the field to have a
/// value, some key of the record must end where the field's name does: its last
/// dot-separated component, after a quote (`{"number":..}`) or a dot
/// (`"source.as.number"`), before the key's closing quote. A raw CloudTrail record's value
/// may come from the CloudTrail keys the field is mapped from instead (`sourceIPAddress`
/// for `source.ip`), so those are in the group too. An `exists` test also holds for an
/// object, which a dotted key can reach without ending there (`"user.name"` for `user:*`):
/// then the component may be followed by a dot. A multi-field (`.caseless`) is its
/// parent's key. No group for a field a CloudTrail record implies without a key
/// (`event.outcome`), nor when a key literal would be under [`MIN_KEY_LITERAL`] bytes.
fn key_of(layout: &Layout, field: crate::record::FieldId, object: bool) -> Option<Vec<String>> {
    let (_, name) = Fold::of(layout.field_name(field));
    if !implied_values(name).is_empty() {
        return None;
    }
    let last = |path: &str| json_escaped(path.rsplit('.').next().unwrap_or(path));
    let mut keys = vec![last(name)];
    keys.extend(cloudtrail_paths(name).iter().map(|p| last(p)));
    let mut group = Vec::new();
    for key in keys {
        for before in ['"', '.'] {
            group.push(format!("{before}{key}\""));
            if object {
                group.push(format!("{before}{key}."));
            }
        }
    }
    group.sort();
    group.dedup();
    group
        .iter()
        .all(|l| l.len() >= MIN_KEY_LITERAL)
        .then_some(group)
}

/// The group a record must hold for `field` to have a value when only its own (ECS) path
/// can give it one: no raw CloudTrail key maps to it and a CloudTrail record implies
/// nothing of it (`aws.cloudtrail.flattened.request_parameters.attribute`,
/// `process.command_line`). Every component of the path is then in some key of the text
/// (the whole key, or a part of a dotted key), as JSON writes it; the longest but the last
/// is taken (the last is the field's key, [`key_of`]), as it is, with no quote or dot
/// around it: one literal to search (its four forms, `"c"`, `"c.`, `.c.` and `.c"`, cost
/// four searches to build for little more). Over raw CloudTrail, whose keys are
/// CloudTrail's (`requestParameters`), such a group rules out what only the ECS form of a
/// record can match, without a parse. `None` for a field of one component, or when the
/// longest but the last is under [`MIN_KEY_LITERAL`] bytes.
fn path_of(layout: &Layout, field: crate::record::FieldId) -> Option<Vec<String>> {
    let (_, name) = Fold::of(layout.field_name(field));
    if !implied_values(name).is_empty() || !cloudtrail_paths(name).is_empty() {
        return None;
    }
    let (parents, _) = name.rsplit_once('.')?;
    let component = json_escaped(parents.split('.').max_by_key(|c| c.len())?);
    (component.len() >= MIN_KEY_LITERAL).then(|| vec![component])
}

/// The shortest key literal ([`key_of`]): a key of one or two characters (`ip`, `id`) is
/// in most records, and its four bytes would shorten every step of a skip search over the
/// whole pack's literals.
const MIN_KEY_LITERAL: usize = MIN_LITERAL + 1;

/// The one-literal group a value pattern requires of the text, if any: the exact value,
/// or a wildcard's longest piece, as JSON writes it inside a string.
///
/// With `whole` (a field's value, compared as a whole: a keyword), the literal takes the
/// string's quotes where the value must start or end: `"GetCallerIdentity"` for an exact
/// value, `"arn:aws` for `arn:aws*`. A string's own quotes are never escaped, and a value
/// that is not a string (a number, `true`) has no literal at all, so a record the value
/// matches holds them; longer literals let the search skip further.
fn literal_of(pattern: &Pattern, whole: bool) -> Option<Vec<String>> {
    let (lit, starts, ends) = match pattern {
        Pattern::Exact(s) => (s.as_str(), true, true),
        Pattern::Wildcard(pieces) => {
            let (i, piece) = pieces.iter().enumerate().max_by_key(|(_, p)| p.len())?;
            (piece.as_str(), i == 0, i + 1 == pieces.len())
        }
    };
    // Numbers and booleans may be written differently from their text (`5.0`).
    let scalar_like = number_like(lit) || lit == "true" || lit == "false";
    if scalar_like || lit.is_empty() {
        return None;
    }
    let quote = |yes: bool| if whole && yes { "\"" } else { "" };
    let lit = format!("{}{}{}", quote(starts), json_escaped(lit), quote(ends));
    (lit.len() >= MIN_LITERAL).then(|| vec![lit])
}

/// `lit` without the quotes [`literal_of`] puts around a keyword's value, when what
/// remains is still [`MIN_LITERAL`] long: the form the pack's gate searches when it has few
/// enough literals for a vector search (`gate.rs`). A vector search is keyed on a
/// literal's first bytes, and `"` is among the commonest bytes of JSON; and a pack's
/// literals stay few only when rules share them (`x` as free text and `"x"` as a value are
/// one literal then). With more literals than that, the quotes stay: they make each
/// literal rarer, which is worth more than a vector search the pack cannot have. Measured
/// natively over the CloudTrail mix: generated packs of 50 and 100 rules ran at 0.21 and
/// 0.22 of one rule's speed with the quotes, 0.69 and 0.67 without; Elastic's 266 rules
/// at 122,000 records/s with the quotes, 74,000 without. Sound: a text that holds the
/// literal holds it without its first and last bytes, and each rule the gate opens runs its
/// own prefilter.
pub(crate) fn unquoted(lit: &[u8]) -> &[u8] {
    let lit = match lit {
        [b'"', rest @ ..] if rest.len() >= MIN_LITERAL => rest,
        _ => lit,
    };
    match lit {
        [rest @ .., b'"'] if rest.len() >= MIN_LITERAL => rest,
        _ => lit,
    }
}

/// Whether `s` could read as a number (every text `f64` parses, and some more): a sign,
/// digits, points and exponents, or infinity and NaN. Cheaper than parsing it.
fn number_like(s: &str) -> bool {
    let t = s.trim_start_matches(['+', '-']).to_ascii_lowercase();
    matches!(t.as_str(), "inf" | "infinity" | "nan")
        || (t.bytes().any(|b| b.is_ascii_digit())
            && t.bytes()
                .all(|b| b.is_ascii_digit() || b"+-.e".contains(&b)))
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
        let layout = b.build();
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
                vec![r#""sts.amazonaws.com""#.to_owned()],
                vec![r#""GetCallerIdentity""#.to_owned()]
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
            vec![vec![r#""abcd""#.to_owned(), r#""efgh""#.to_owned()]]
        );
        assert!(prefilter("a: abcd or not b: efgh").literals().is_empty());
        assert!(prefilter("a: *").literals().is_empty());
        assert!(prefilter("a: 12345").literals().is_empty());
        assert_eq!(
            prefilter("a: *abc*defgh*").literals(),
            vec![vec!["defgh".to_owned()]]
        );
        // A prefix or a suffix keeps the string's quote on its side; free text none.
        assert_eq!(
            prefilter("a: prefix*").literals(),
            vec![vec![r#""prefix"#.to_owned()]]
        );
        assert_eq!(
            prefilter("a: *.exe").literals(),
            vec![vec![r#".exe""#.to_owned()]]
        );
        assert_eq!(prefilter("abcd*").literals(), vec![vec!["abcd".to_owned()]]);
        let p = prefilter(r#"a: "x\"y/z""#);
        assert_eq!(p.literals(), vec![vec![r#""x\"y/z""#.to_owned()]]);
        assert!(
            p.may_match(br#"{"a":"x\"y\/z"}"#),
            "an escaped slash could hide the literal"
        );
        assert!(!p.may_match(br#"{"a":"x\"y_z"}"#));
    }

    /// Fluent Bit writes printable ASCII as itself, and `"` and `\` as `\"` and `\\`:
    /// such a literal needs no escape search; one with any other character still does.
    #[test]
    fn fluent_bit_text_needs_no_escape_search() {
        for (canonical, verbatim) in [
            (&br#"say \"hi\" \\ now/then"#[..], true),
            (b"GetCallerIdentity", true),
            (br#"line\nbreak"#, false),
            (br#"bell\u0007"#, false),
            ("caf\u{e9}".as_bytes(), false),
            (b"del\x7f", false),
            (br#"ends\"#, false),
        ] {
            assert_eq!(printable_ascii(canonical), verbatim, "{canonical:?}");
            assert!(!Writer::Any.writes_as_itself(canonical));
        }
        let q = r#"a: "say \"hi\" now" and b: GetCallerIdentity and c: "café""#;
        let hidden = r#"{"a":"say \"hi\" now","b":"\u0047etCallerIdentity","c":"café"}"#;
        let escaped = r#"{"a":"say \"hi\" now","b":"GetCallerIdentity","c":"caf\u00e9"}"#;
        let any = prefilter(q);
        assert!(any.may_match(hidden.as_bytes()) && any.may_match(escaped.as_bytes()));
        for skip in [false, true] {
            let mut fb = prefilter(q);
            fb.assume(Writer::FluentBit, skip);
            assert_eq!(fb.skip.is_some(), skip);
            // Fluent Bit never writes `G` as `\u0047`: the record cannot be Fluent Bit's.
            assert!(!fb.may_match(hidden.as_bytes()), "skip {skip}");
            // It does write `é` as `\u00e9` with json.escape_unicode on.
            assert!(fb.may_match(escaped.as_bytes()), "skip {skip}");
            let missing = escaped.replace("GetCaller", "GetCallers");
            assert!(!fb.may_match(missing.as_bytes()), "skip {skip}");
        }
    }

    /// A test whose value gives no literal requires the field's key: nested or dotted,
    /// and for a raw CloudTrail record the keys it is mapped from; `exists` also through a
    /// dotted key that continues past the field. Every record the query matches passes.
    #[test]
    fn a_value_without_a_literal_requires_its_fields_key() {
        let lits = |q: &str| prefilter(q).literals();
        let path = |c: &str| vec![c.to_owned()];
        // An `or` keeps one group of each branch: the key before the path.
        assert_eq!(
            lits("source.as.number: (216025 or 57138)"),
            vec![vec![r#""number""#.to_owned(), r#".number""#.to_owned()]]
        );
        assert_eq!(
            lits("source.as.number: 216025"),
            vec![
                vec![r#""number""#.to_owned(), r#".number""#.to_owned()],
                path("source")
            ]
        );
        assert_eq!(
            lits("user.name: *"),
            vec![[
                r#""name""#,
                r#""name."#,
                r#""userName""#,
                r#""userName."#,
                r#".name""#,
                r#".name."#,
                r#".userName""#,
                r#".userName."#
            ]
            .map(str::to_owned)
            .to_vec()]
        );
        assert_eq!(
            lits("process.name.caseless: \"cmd.exe\""),
            vec![
                vec![r#""name""#.to_owned(), r#".name""#.to_owned()],
                path("process")
            ],
            "a multi-field is its parent's key"
        );
        // Keys of one or two characters, and fields CloudTrail implies, give none.
        assert!(
            lits("source.ip: 10.0.0.0/8").is_empty(),
            "`ip` is too short a key"
        );
        assert!(lits("a.id >= 5").is_empty());
        assert!(lits("event.outcome: *").is_empty());
        // A value still comes before its key.
        assert_eq!(
            lits("source.as.organization.name: \"Acme\""),
            vec![vec![r#""Acme""#.to_owned()], path("organization")]
        );
        let number = prefilter("source.as.number: 216025");
        for (record, may) in [
            (&br#"{"source":{"as":{"number":216025}}}"#[..], true),
            (br#"{"source.as.number":216025}"#, true),
            (br#"{"source":{"as.number":2.16025e5}}"#, true),
            (br#"{"source":{"address":"216025"}}"#, false),
            (br#"{"source":{"as":{"n\u0075mber":1}}}"#, true),
        ] {
            assert_eq!(
                number.may_match(record),
                may,
                "{}",
                String::from_utf8_lossy(record)
            );
        }
        let user = prefilter("user: *");
        assert!(user.may_match(br#"{"user.name":"x"}"#));
        assert!(user.may_match(br#"{"user":{"name":"x"}}"#));
        assert!(!user.may_match(br#"{"userName":"x"}"#));
    }

    /// A field only its ECS path can give a value requires that path's longest parent
    /// component, which some key holds whole or as part of a dotted key; a field a raw
    /// CloudTrail record maps or implies does not. Every record the query matches passes,
    /// and a raw CloudTrail record of the same values does not.
    #[test]
    fn a_field_only_its_path_gives_requires_the_path() {
        let q = "aws.cloudtrail.flattened.request_parameters.attribute: \"userData\"";
        let p = prefilter(q);
        assert_eq!(p.literals().len(), 2, "{:?}", p.literals());
        assert_eq!(p.literals()[1], ["request_parameters"]);
        let records: [(&[u8], bool, bool); 7] = [
            (
                br#"{"aws":{"cloudtrail":{"flattened":{"request_parameters":{"attribute":"userData"}}}}}"#,
                true,
                true,
            ),
            (
                br#"{"aws.cloudtrail.flattened.request_parameters.attribute":"userData"}"#,
                true,
                true,
            ),
            (
                br#"{"aws.cloudtrail":{"flattened.request_parameters":{"attribute":"userData"}}}"#,
                true,
                true,
            ),
            (
                br#"{"aws":{"cloudtrail.flattened":{"request_parameters.attribute":"userData"}}}"#,
                true,
                true,
            ),
            (
                br#"{"request_parameters":{"attribute":"userData"}}"#,
                true,
                false,
            ),
            (
                br#"{"aws":{"cloudtrail":{"flattened":{"re\u0071uest_parameters":{"attribute":"userData"}}}}}"#,
                true,
                true,
            ),
            // Raw CloudTrail: its keys are CloudTrail's, which no mapping reads this from.
            (
                br#"{"eventSource":"ec2.amazonaws.com","eventName":"DescribeInstanceAttribute","requestParameters":{"attribute":"userData"}}"#,
                false,
                false,
            ),
        ];
        for (record, may, matches) in records {
            let shown = String::from_utf8_lossy(record);
            assert_eq!(p.may_match(record), may, "{shown}");
            // What the query matches, it passes; the raw CloudTrail record is no match.
            let mut b = LayoutBuilder::new();
            let query = Query::compile(q, &mut b).unwrap();
            let layout = b.build();
            let view = crate::RecordView::parse(record, &layout, false).unwrap();
            assert_eq!(query.matches(&view, &layout), Ok(matches), "{shown}");
        }
        // Mapped or implied fields, and fields of one component, give none.
        for (q, groups) in [
            ("aws.cloudtrail.user_identity.arn: \"x1234\"", 1),
            ("event.outcome: failure", 0),
            ("message: \"hello\"", 1),
        ] {
            assert_eq!(prefilter(q).literals().len(), groups, "{q}");
        }
    }

    /// A value a raw CloudTrail record implies is not in its text; any other value of the
    /// same field is, in every record that has it.
    #[test]
    fn implied_values_are_never_required() {
        for q in [
            "event.dataset: aws.cloudtrail",
            "data_stream.dataset: aws.*",
            "event.dataset: *trail",
            "event.outcome: success",
            "event.outcome: (failure or unknown)",
        ] {
            assert!(prefilter(q).literals().is_empty(), "{q}");
        }
        for (q, lit) in [
            (
                "data_stream.dataset: azure.signinlogs",
                r#""azure.signinlogs""#,
            ),
            ("event.dataset: okta*", r#""okta"#),
            ("event.outcome: unknown", r#""unknown""#),
        ] {
            assert_eq!(prefilter(q).literals(), vec![vec![lit.to_owned()]], "{q}");
        }
        let raw = br#"{"eventSource":"signin.amazonaws.com","eventName":"ConsoleLogin"}"#;
        assert!(!prefilter("data_stream.dataset: azure.signinlogs").may_match(raw));
        assert!(prefilter("data_stream.dataset: aws.cloudtrail").may_match(raw));
    }
}
