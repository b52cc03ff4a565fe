//! The rule file (Elastic detection-rules TOML) and our own settings.
//!
//! What is read from the rule: `rule.type` (must be `new_terms`), `rule.language` (must
//! be `kuery`), `rule.query`, `rule.rule_id`, `rule.name`, `rule.severity`,
//! `rule.risk_score`, `rule.tags`, `rule.threat`, `rule.timestamp_override`,
//! `rule.new_terms.value` (the new-terms fields) and the `history_window_start` entry of
//! `rule.new_terms.history_window_start`. Every other key of Elastic's format is accepted
//! and ignored. Our settings live in an optional `[newterms]` table, where an unknown key
//! is an error.

use std::fmt;

use toml::{Table, Value};

use crate::exceptions::{Condition, ExceptionItem};
use crate::index::Patterns;
use crate::query::QueryError;
use crate::time::{self, Nanos, NANOS_PER_DAY};

mod settings;
pub use settings::{ErrorPolicy, InputMode, OutputMode, Settings, SeveralOutputs};

/// The rule built in: Elastic's "AWS STS GetCallerIdentity API Called for the First Time".
pub const DEFAULT_RULE: &str =
    include_str!("../examples/rules/aws-sts-getcalleridentity-first-time.toml");

/// The most new-terms fields a rule may have (Elastic allows three); a decision keeps
/// this many value columns on its stack.
pub const MAX_TERM_FIELDS: usize = 3;

/// A rule that cannot be loaded: which key, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RuleError {
    /// The file is not valid TOML.
    Toml { message: String },
    /// A key is missing, has the wrong type or an unusable value.
    Key { key: String, message: String },
    /// The query cannot be run; `at` is where in the rule file (line and column, from 1),
    /// when the query came from one.
    Query {
        error: QueryError,
        at: Option<(usize, usize)>,
    },
    /// The state to restore cannot be used.
    Snapshot {
        error: crate::snapshot::SnapshotError,
    },
    /// A rule of a pack does not load: which one (its file name), and why.
    InPack {
        source: String,
        error: Box<RuleError>,
    },
}

impl RuleError {
    pub(crate) fn key(key: impl Into<String>, message: impl Into<String>) -> Self {
        RuleError::Key {
            key: key.into(),
            message: message.into(),
        }
    }

    /// The error of the rule from `source` (its file) in a pack.
    pub(crate) fn in_pack(source: &str, error: RuleError) -> Self {
        RuleError::InPack {
            source: source.to_owned(),
            error: Box::new(error),
        }
    }

    /// The key the error is about, when there is one.
    pub fn key_name(&self) -> Option<&str> {
        match self {
            RuleError::Key { key, .. } => Some(key),
            RuleError::Query { .. } => Some("rule.query"),
            RuleError::Snapshot { .. } => Some("snapshot"),
            RuleError::Toml { .. } => None,
            RuleError::InPack { error, .. } => error.key_name(),
        }
    }
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuleError::Toml { message } => write!(f, "the rule file is not valid TOML: {message}"),
            RuleError::Key { key, message } => write!(f, "{key}: {message}"),
            RuleError::Query {
                error,
                at: Some((line, column)),
            } => write!(f, "rule.query (line {line}, column {column}): {error}"),
            RuleError::Query { error, at: None } => write!(f, "rule.query: {error}"),
            RuleError::Snapshot { error } => write!(f, "snapshot: {error}"),
            RuleError::InPack { source, error } => write!(f, "{source}: {error}"),
        }
    }
}

impl std::error::Error for RuleError {}

/// The rule files of a pack directory: its `*.toml` files, every level down (hidden ones
/// aside), sorted by path. For the command's `--rule DIR` and `check-rule DIR`.
pub fn pack_files(dir: &std::path::Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            // Hidden files and directories (`.git`, editors' files) hold no rules.
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out)?;
            } else if path.extension().is_some_and(|x| x == "toml") && path.is_file() {
                out.push(path);
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(dir, &mut files)?;
    files.sort();
    Ok(files)
}

/// A loaded rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub rule_id: String,
    pub name: String,
    pub severity: String,
    pub risk_score: i64,
    pub tags: Vec<String>,
    /// `rule.threat` as JSON, copied into alerts.
    pub threat: serde_json::Value,
    pub query: String,
    /// `query`, parsed (once, at load).
    pub(crate) parsed: crate::query::Expr,
    /// The new-terms fields (one to three), in order.
    pub new_terms_fields: Vec<String>,
    /// The history window W.
    pub history_window: Nanos,
    /// The field read for a record's time before `@timestamp`.
    pub timestamp_override: Option<String>,
    /// `rule.filters` (query DSL), enabled ones, negated as their `meta.negate` says: a
    /// record must satisfy all of them as well as the query.
    pub filters: Vec<Condition>,
    /// The exception items of the settings, read: a record matching any does not match.
    pub exceptions: Vec<ExceptionItem>,
    /// The indices the rule reads (`rule.index`, or the patterns of its data view); `None`
    /// for a rule that names none: it sees every record.
    pub index: Option<Patterns>,
    /// The rule's own `[newterms]` table with the host's settings over it; its exception
    /// keys (`exceptions`, `kibana_exceptions`, `value_lists`) are read into `exceptions`
    /// and left empty here.
    pub settings: Settings,
}

impl Rule {
    /// What a host says at load of the rule's indices: the expressions that name another
    /// cluster's indices or a failure store (no record here is in them), and a rule that
    /// can see no record at all.
    pub fn index_notes(&self) -> Vec<String> {
        let Some(p) = &self.index else {
            return vec!["no index patterns: the rule sees every record".to_owned()];
        };
        let mut notes: Vec<String> = p
            .elsewhere()
            .iter()
            .map(|e| format!("index `{e}` names indices of another cluster or a failure store: no record here is in them"))
            .collect();
        if !p.names_local() {
            notes.push("the rule names no local index: it sees no record".to_owned());
        }
        notes
    }

    /// The embedded default rule.
    pub fn default_rule() -> Rule {
        // The embedded file is tested to load; fall back to nothing else.
        match Rule::parse(DEFAULT_RULE, &Settings::default()) {
            Ok(r) => r,
            Err(e) => unreachable!("the embedded rule does not load: {e}"),
        }
    }

    /// Loads a rule file, then lays `overrides` over its own `[newterms]` table. An empty
    /// `text` loads the default rule.
    pub fn parse(text: &str, overrides: &Settings) -> Result<Rule, RuleError> {
        let text = if text.trim().is_empty() {
            DEFAULT_RULE
        } else {
            text
        };
        let mut doc: Table =
            parse_toml_kept(text, rule_keeps).map_err(|e: toml::de::Error| RuleError::Toml {
                message: toml_message(&e, text),
            })?;
        let own = doc.remove("newterms");
        let rule = get_table(&doc, "", "rule")?;
        let kind = get_str(rule, "rule.", "type")?;
        if kind != "new_terms" {
            return Err(RuleError::key(
                "rule.type",
                format!("`{kind}` rules are not supported: only new_terms"),
            ));
        }
        let language = get_str(rule, "rule.", "language")?;
        if language != "kuery" {
            return Err(RuleError::key(
                "rule.language",
                format!("`{language}` is not supported: only kuery (KQL)"),
            ));
        }
        let filters = match rule.get("filters") {
            None => Vec::new(),
            Some(f) => {
                let json = crate::json::from_toml(f);
                crate::query::parse_filters(&json, "rule.filters")
                    .map_err(|e| RuleError::key(e.key, e.message))?
            }
        };
        let new_terms = get_table(rule, "rule.", "new_terms")?;
        let fields = match new_terms.get("value") {
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    RuleError::key("rule.new_terms.value", "expected an array of field names")
                })?,
            Some(_) => {
                return Err(RuleError::key(
                    "rule.new_terms.value",
                    "expected an array of field names",
                ))
            }
            None => return Err(RuleError::key("rule.new_terms.value", "missing")),
        };
        if fields.is_empty() || fields.len() > MAX_TERM_FIELDS {
            return Err(RuleError::key(
                "rule.new_terms.value",
                format!(
                    "expected one to {MAX_TERM_FIELDS} fields, found {}",
                    fields.len()
                ),
            ));
        }
        let history_window = history_window(new_terms)?;
        let tags = match rule.get("tags") {
            None => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| RuleError::key("rule.tags", "expected an array of strings"))?,
            Some(_) => return Err(RuleError::key("rule.tags", "expected an array of strings")),
        };
        let threat = match rule.get("threat") {
            None => serde_json::Value::Array(Vec::new()),
            Some(v @ Value::Array(_)) => crate::json::from_toml(v),
            Some(_) => return Err(RuleError::key("rule.threat", "expected an array of tables")),
        };
        let risk_score = match rule.get("risk_score") {
            Some(Value::Integer(n)) if (0..=100).contains(n) => *n,
            Some(_) => {
                return Err(RuleError::key(
                    "rule.risk_score",
                    "expected a whole number from 0 to 100",
                ))
            }
            None => return Err(RuleError::key("rule.risk_score", "missing")),
        };
        let own = match own {
            None => Settings::default(),
            Some(own @ Value::Table(_)) => Settings::from_toml_value(own)?,
            Some(_) => return Err(RuleError::key("newterms", "expected a table")),
        };
        let mut settings = own.layered(overrides);
        // Each layer's items are numbered within it, the rule's first; the rule's exports
        // read the rule's value lists, the host's read both (the host's winning).
        let mut exceptions = own.exception_items(&own.value_lists)?;
        exceptions.extend(overrides.exception_items(&settings.value_lists)?);
        // Read into `exceptions`: the texts and lists are not kept a second time.
        settings.exceptions = Vec::new();
        settings.kibana_exceptions = Vec::new();
        settings.value_lists = Default::default();
        let query = get_str(rule, "rule.", "query")?;
        let parsed = crate::query::parse(query).map_err(|error| RuleError::Query {
            at: query_location(text, error.position()),
            error,
        })?;
        let timestamp_override = match rule.get("timestamp_override") {
            None => None,
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(_) => {
                return Err(RuleError::key(
                    "rule.timestamp_override",
                    "expected a field name",
                ))
            }
        };
        let index = index_patterns(rule, &settings)?;
        Ok(Rule {
            index,
            rule_id: get_str(rule, "rule.", "rule_id")?.to_owned(),
            name: get_str(rule, "rule.", "name")?.to_owned(),
            severity: get_str(rule, "rule.", "severity")?.to_owned(),
            risk_score,
            tags,
            threat,
            query: query.to_owned(),
            parsed,
            new_terms_fields: fields,
            history_window,
            timestamp_override,
            filters,
            exceptions,
            settings,
        })
    }
}

/// The keys of a rule file that [`Rule::parse`] reads: the `[rule]` table's (not its
/// documentation: `note`, `setup`, `description`, `references` and the like are most of a
/// file's text), and the whole `[newterms]` table. `path` is a key's table, then the key.
fn rule_keeps(path: &[&str]) -> bool {
    const RULE: &[&str] = &[
        "data_view_id",
        "filters",
        "index",
        "language",
        "name",
        "new_terms",
        "query",
        "risk_score",
        "rule_id",
        "severity",
        "tags",
        "threat",
        "timestamp_override",
        "type",
    ];
    match path {
        [top] => *top == "rule" || *top == "newterms",
        ["rule", key] => RULE.contains(key),
        _ => true,
    }
}

/// Parses a TOML document into a table. The parser builds its own tree, which this
/// copies level by level with a stack of its own: `toml`'s serde route
/// (`str::parse::<Table>`), like any recursive copy, nests calls per level and needs
/// several times the stack a Fluent Bit module has (8 KiB).
pub(crate) fn parse_toml(text: &str) -> Result<Table, toml::de::Error> {
    parse_toml_kept(text, |_| true)
}

/// [`parse_toml`], copying only the keys `keep` keeps (it sees a key's table keys down
/// from the top, then the key; only the first two levels are asked). The document is
/// checked whole all the same for its syntax; a value in a key not kept is not converted,
/// so an integer out of range there is not an error.
fn parse_toml_kept(text: &str, keep: fn(&[&str]) -> bool) -> Result<Table, toml::de::Error> {
    use serde::de::Error as _;
    use toml::de::{DeString, DeTable, DeValue};
    type Entries<'i> =
        Box<dyn Iterator<Item = (Option<DeString<'i>>, toml::Spanned<DeValue<'i>>)> + 'i>;
    enum Open {
        Table(Table),
        Array(Vec<Value>),
    }
    /// An open container, its entries still to copy, and its key in its parent.
    struct Level<'i> {
        open: Open,
        rest: Entries<'i>,
        key: Option<String>,
    }
    /// A value to copy: a container to open, or a scalar.
    enum Item<'i> {
        Open(Level<'i>),
        Scalar(Value),
    }
    fn item<'i>(v: DeValue<'i>, key: Option<String>) -> Result<Item<'i>, toml::de::Error> {
        let (open, rest): (Open, Entries<'i>) = match v {
            DeValue::Table(t) => (
                Open::Table(Table::new()),
                Box::new(t.into_iter().map(|(k, v)| (Some(k.into_inner()), v))),
            ),
            DeValue::Array(a) => (
                Open::Array(Vec::new()),
                Box::new(a.into_iter().map(|v| (None, v))),
            ),
            DeValue::String(s) => return Ok(Item::Scalar(Value::String(s.into_owned()))),
            DeValue::Integer(i) => {
                let n = i64::from_str_radix(i.as_str(), i.radix())
                    .map_err(|_| toml::de::Error::custom(format!("integer {i} out of range")))?;
                return Ok(Item::Scalar(Value::Integer(n)));
            }
            DeValue::Float(f) => {
                let x = f
                    .as_str()
                    .parse()
                    .map_err(|_| toml::de::Error::custom(format!("invalid float {f}")))?;
                return Ok(Item::Scalar(Value::Float(x)));
            }
            DeValue::Boolean(b) => return Ok(Item::Scalar(Value::Boolean(b))),
            DeValue::Datetime(d) => return Ok(Item::Scalar(Value::Datetime(d))),
        };
        Ok(Item::Open(Level { open, rest, key }))
    }
    let root = DeTable::parse(text)?.into_inner();
    let mut stack = vec![Level {
        open: Open::Table(Table::new()),
        rest: Box::new(root.into_iter().map(|(k, v)| (Some(k.into_inner()), v))),
        key: None,
    }];
    loop {
        let depth = stack.len();
        let Some(top) = stack.last_mut() else {
            return Ok(Table::new());
        };
        let (key, value) = match top.rest.next() {
            Some((key, v)) => {
                let key = key.map(|k| k.into_owned());
                if let (Some(k), 1..=2) = (&key, depth) {
                    // At the second level the open table is the key's parent.
                    let kept = match (depth, top.key.as_deref()) {
                        (2, Some(p)) => keep(&[p, k]),
                        _ => keep(&[k]),
                    };
                    if !kept {
                        continue;
                    }
                }
                match item(v.into_inner(), key.clone())? {
                    Item::Open(inner) => {
                        stack.push(inner);
                        continue;
                    }
                    Item::Scalar(value) => (key, value),
                }
            }
            None => {
                let Some(done) = stack.pop() else {
                    return Ok(Table::new());
                };
                let value = match done.open {
                    Open::Table(t) => Value::Table(t),
                    Open::Array(a) => Value::Array(a),
                };
                if stack.is_empty() {
                    return match value {
                        Value::Table(t) => Ok(t),
                        _ => Ok(Table::new()),
                    };
                }
                (done.key, value)
            }
        };
        let Some(top) = stack.last_mut() else {
            return Ok(Table::new());
        };
        match (&mut top.open, key) {
            (Open::Table(t), Some(k)) => {
                t.insert(k, value);
            }
            (Open::Array(a), _) => a.push(value),
            (Open::Table(_), None) => {}
        }
    }
}

/// Where, in a rule file, character `offset` of its `rule.query` stands: line and column
/// (from 1, the column in characters), reading the TOML string's escapes.
fn query_location(text: &str, offset: usize) -> Option<(usize, usize)> {
    let doc = toml::de::DeTable::parse(text).ok()?;
    let rule = doc.get_ref().get("rule")?.get_ref().as_table()?;
    let span = rule.get("query")?.span();
    let raw = text.get(span.clone())?;
    let byte = span.start + toml_string_offset(raw, offset)?;
    let before = text.get(..byte)?;
    let line = before.matches('\n').count() + 1;
    let column = before[before.rfind('\n').map_or(0, |i| i + 1)..]
        .chars()
        .count()
        + 1;
    Some((line, column))
}

/// The byte offset in a TOML string's source (`raw`, quotes included) of its decoded
/// character `n`.
fn toml_string_offset(raw: &str, n: usize) -> Option<usize> {
    let (open, basic) = if raw.starts_with("\"\"\"") {
        (3, true)
    } else if raw.starts_with("'''") {
        (3, false)
    } else if raw.starts_with('"') {
        (1, true)
    } else {
        (1, false)
    };
    let bytes = raw.as_bytes();
    let mut i = open;
    // A newline right after a multi-line string's opening is not part of it.
    if open == 3 {
        if raw[i..].starts_with("\r\n") {
            i += 2;
        } else if raw[i..].starts_with('\n') {
            i += 1;
        }
    }
    let mut decoded = 0;
    while i < bytes.len() {
        if decoded == n {
            return Some(i);
        }
        let c = raw[i..].chars().next()?;
        if basic && c == '\\' {
            let next = *bytes.get(i + 1)?;
            i += match next {
                b'u' => 6,
                b'U' => 10,
                b'x' => 4,
                b' ' | b'\t' | b'\r' | b'\n' => {
                    // A line-ending backslash: the whitespace up to the next character
                    // is dropped.
                    let rest = &raw[i + 1..];
                    let kept = rest.trim_start_matches([' ', '\t', '\r', '\n']);
                    i += 1 + rest.len() - kept.len();
                    continue;
                }
                _ => 2,
            };
        } else {
            i += c.len_utf8();
        }
        decoded += 1;
    }
    (decoded == n).then_some(i)
}

pub(crate) fn toml_message(e: &toml::de::Error, text: &str) -> String {
    let msg = e.message().trim();
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}: {msg}")
        }
        None => msg.to_owned(),
    }
}

fn get_table<'t>(t: &'t Table, prefix: &str, key: &str) -> Result<&'t Table, RuleError> {
    match t.get(key) {
        Some(Value::Table(inner)) => Ok(inner),
        Some(_) => Err(RuleError::key(format!("{prefix}{key}"), "expected a table")),
        None => Err(RuleError::key(format!("{prefix}{key}"), "missing")),
    }
}

fn get_str<'t>(t: &'t Table, prefix: &str, key: &str) -> Result<&'t str, RuleError> {
    match t.get(key) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(RuleError::key(
            format!("{prefix}{key}"),
            "expected a string",
        )),
        None => Err(RuleError::key(format!("{prefix}{key}"), "missing")),
    }
}

/// The rule's index patterns: `rule.index`, else the patterns the `data_views` setting
/// gives its `rule.data_view_id`, else none.
fn index_patterns(rule: &Table, settings: &Settings) -> Result<Option<Patterns>, RuleError> {
    let strings = |key: &str, v: &Value| -> Result<Vec<String>, RuleError> {
        match v {
            Value::Array(a) => a
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| RuleError::key(key, "expected an array of index patterns")),
            Value::String(s) => Ok(vec![s.clone()]),
            _ => Err(RuleError::key(key, "expected an array of index patterns")),
        }
    };
    let (key, list) = match (rule.get("index"), rule.get("data_view_id")) {
        (Some(v), _) => ("rule.index", strings("rule.index", v)?),
        (None, Some(Value::String(id))) => match settings.data_views.get(id) {
            Some(title) => ("newterms.data_views", vec![title.clone()]),
            None => {
                return Err(RuleError::key(
                    "rule.data_view_id",
                    format!(
                        "the rule reads data view `{id}` and names no index: give its \
                         patterns in the data_views setting (data_views = {{ \"{id}\" = \"logs-*\" }})"
                    ),
                ))
            }
        },
        (None, Some(_)) => return Err(RuleError::key("rule.data_view_id", "expected a string")),
        (None, None) => return Ok(None),
    };
    if list.is_empty() {
        return Err(RuleError::key(key, "an empty list of index patterns"));
    }
    Patterns::parse(&list)
        .map(Some)
        .map_err(|message| RuleError::key(key, message))
}

/// The `history_window_start` entry: `now-` and an amount in Elastic's date-math units
/// (`s`, `m`, `h`/`H`, `d`, `w`; `M` is taken as 30 days and `y` as 365 days).
fn history_window(new_terms: &Table) -> Result<Nanos, RuleError> {
    const KEY: &str = "rule.new_terms.history_window_start";
    let entries = match new_terms.get("history_window_start") {
        Some(Value::Array(a)) => a,
        Some(_) => return Err(RuleError::key(KEY, "expected an array of tables")),
        None => return Err(RuleError::key(KEY, "missing")),
    };
    let value = entries
        .iter()
        .filter_map(Value::as_table)
        .find(|t| t.get("field").and_then(Value::as_str) == Some("history_window_start"))
        .and_then(|t| t.get("value"))
        .and_then(Value::as_str)
        .ok_or_else(|| {
            RuleError::key(
                KEY,
                "no entry with field = \"history_window_start\" and a string value",
            )
        })?;
    let bad = || {
        RuleError::key(
            KEY,
            format!("`{value}` is not of the form now-<amount><unit>, e.g. now-10d"),
        )
    };
    let amount = value.strip_prefix("now-").ok_or_else(bad)?;
    let window = if let Some(n) = amount.strip_suffix('M') {
        n.parse::<i64>()
            .ok()
            .and_then(|n| n.checked_mul(30 * NANOS_PER_DAY))
    } else if let Some(n) = amount.strip_suffix('y') {
        n.parse::<i64>()
            .ok()
            .and_then(|n| n.checked_mul(365 * NANOS_PER_DAY))
    } else if amount.ends_with("ms") {
        None
    } else {
        time::parse_duration(amount)
    };
    match window {
        Some(w) if w > 0 => Ok(w),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests;
