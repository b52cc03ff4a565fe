//! Our settings: the `[newterms]` table of a rule file, then the host's overrides.

use toml::{Table, Value};

use super::RuleError;
use crate::exceptions::{parse_kibana_export, Condition, ExceptionItem, ValueLists};
use crate::time::{self, Nanos};

/// What is emitted for a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputMode {
    /// One ECS alert document per new term; everything else is dropped.
    Alert,
    /// The records that carry a new term, unchanged; everything else is dropped.
    Passthrough,
    /// Every record; those that carry a new term with the alert fields added.
    Annotate,
    /// No table: one match document per (rule, term) of each matching record, keyed by
    /// `newterms_key`, for a `newterms consume` group to decide (see [`crate::matches`]).
    Matches,
}

impl OutputMode {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "alert" => Some(OutputMode::Alert),
            "passthrough" => Some(OutputMode::Passthrough),
            "annotate" => Some(OutputMode::Annotate),
            "matches" => Some(OutputMode::Matches),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            OutputMode::Alert => "alert",
            OutputMode::Passthrough => "passthrough",
            OutputMode::Annotate => "annotate",
            OutputMode::Matches => "matches",
        }
    }
}

/// What the detector is fed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputMode {
    /// Log records (the default).
    Records,
    /// Match documents written by an edge in `matches` output mode: the table is kept
    /// here, for the (rule, term) each names (see [`crate::matches`]).
    Matches,
}

impl InputMode {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "records" => Some(InputMode::Records),
            "matches" => Some(InputMode::Matches),
            _ => None,
        }
    }
}

/// What a host with a single output stream (Fluent Bit) does with a record in error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorPolicy {
    /// Pass the record on with a `newterms.error` field added (nothing is lost silently).
    Pass,
    /// Drop it (it is still counted in the statistics).
    Drop,
}

impl ErrorPolicy {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pass" => Some(ErrorPolicy::Pass),
            "drop" => Some(ErrorPolicy::Drop),
            _ => None,
        }
    }
}

/// Our settings: the `[newterms]` table of the rule file, then any overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `output`: `alert` (default), `passthrough`, `annotate` or `matches`.
    pub output: OutputMode,
    /// `input`: `records` (default) or `matches` (match documents from an edge).
    pub input: InputMode,
    /// `max_terms`: the most terms the table holds (default 100,000, about 15 MiB with
    /// ARN-sized terms); when full, the term seen longest ago is evicted.
    pub max_terms: usize,
    /// `max_table_bytes`: the most memory the table may count, at the term's bytes plus 64
    /// per term (default 64 MiB: enough for 100,000 terms of 600 bytes); whichever of this
    /// and `max_terms` binds first evicts, oldest first. A single term over it is refused.
    pub max_table_bytes: usize,
    /// `allowed_lateness`: how far behind the newest record time a record may be and
    /// still be decided exactly as Elastic would (default `1h`: CloudTrail delivers within
    /// about 15 minutes, and delivery files overlap by minutes).
    pub allowed_lateness: Nanos,
    /// `max_record_bytes`: longer records are refused with a `too-large` error (default
    /// 1 MiB; CloudTrail records are at most a few hundred KiB).
    pub max_record_bytes: usize,
    /// `on_error`: `pass` (default) or `drop`: what a host with one output stream (the
    /// Fluent Bit filter) does with a record in error. Hosts with an error channel (the
    /// component, the command) report errors there whatever this says.
    pub on_error: ErrorPolicy,
    /// `state_file`: where a host without its own state option (the Fluent Bit module)
    /// keeps the term table across restarts, as a path it can write (default: none, the
    /// table lives in memory only).
    pub state_file: Option<String>,
    /// `state_every_records`: records between state writes (default 10,000).
    pub state_every_records: u64,
    /// `state_every_seconds`: record-time seconds between state writes (default 60).
    pub state_every_seconds: u64,
    /// `exceptions` (KQL conditions) and `kibana_exceptions` (Kibana exception-list
    /// exports, NDJSON text): a record matching any item does not match the rule.
    pub exceptions: Vec<ExceptionItem>,
    /// `value_lists`: a table from a Kibana value list's id to its values, one a line,
    /// for the exports' `type: list` entries.
    pub value_lists: ValueLists,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            output: OutputMode::Alert,
            input: InputMode::Records,
            max_terms: 100_000,
            max_table_bytes: 64 << 20,
            allowed_lateness: time::NANOS_PER_HOUR,
            max_record_bytes: 1 << 20,
            on_error: ErrorPolicy::Pass,
            state_file: None,
            state_every_records: 10_000,
            state_every_seconds: 60,
            exceptions: Vec::new(),
            value_lists: ValueLists::new(),
        }
    }
}

const SETTING_KEYS: &[&str] = &[
    "output",
    "input",
    "max_terms",
    "max_table_bytes",
    "allowed_lateness",
    "max_record_bytes",
    "on_error",
    "state_file",
    "state_every_records",
    "state_every_seconds",
    "exceptions",
    "kibana_exceptions",
    "value_lists",
];

impl Settings {
    /// Applies the keys of a `[newterms]`-style table, naming `prefix.key` in errors.
    pub(super) fn apply(&mut self, table: &Table, prefix: &str) -> Result<(), RuleError> {
        // Value lists first: the exports in the same table name them.
        if let Some(v) = table.get("value_lists") {
            let key = format!("{prefix}value_lists");
            let lists = v
                .as_table()
                .ok_or_else(|| RuleError::key(&key, "expected a table of list id = values"))?;
            for (id, values) in lists {
                let values = values.as_str().ok_or_else(|| {
                    RuleError::key(format!("{key}.{id}"), "expected the values as a string")
                })?;
                self.value_lists.insert(id.clone(), values.to_owned());
            }
        }
        for (k, v) in table {
            let key = format!("{prefix}{k}");
            match k.as_str() {
                "output" => {
                    let s = v
                        .as_str()
                        .ok_or_else(|| RuleError::key(&key, "expected a string"))?;
                    self.output = OutputMode::parse(s).ok_or_else(|| {
                        RuleError::key(
                            &key,
                            format!("`{s}` is not one of alert, passthrough, annotate, matches"),
                        )
                    })?;
                }
                "input" => {
                    let s = v
                        .as_str()
                        .ok_or_else(|| RuleError::key(&key, "expected a string"))?;
                    self.input = InputMode::parse(s).ok_or_else(|| {
                        RuleError::key(&key, format!("`{s}` is not one of records, matches"))
                    })?;
                }
                "on_error" => {
                    let s = v
                        .as_str()
                        .ok_or_else(|| RuleError::key(&key, "expected a string"))?;
                    self.on_error = ErrorPolicy::parse(s).ok_or_else(|| {
                        RuleError::key(&key, format!("`{s}` is not one of pass, drop"))
                    })?;
                }
                "state_file" => {
                    let s = v
                        .as_str()
                        .filter(|s| !s.is_empty())
                        .ok_or_else(|| RuleError::key(&key, "expected a file path"))?;
                    self.state_file = Some(s.to_owned());
                }
                "exceptions" => {
                    for (i, text) in strings(v, &key)?.into_iter().enumerate() {
                        crate::query::parse(text)
                            .map_err(|e| RuleError::key(format!("{key}[{i}]"), e.to_string()))?;
                        self.exceptions.push(ExceptionItem {
                            id: format!("{key}[{i}]"),
                            name: text.to_owned(),
                            condition: Condition::Kql(text.to_owned()),
                        });
                    }
                }
                "kibana_exceptions" => {
                    for (i, text) in strings(v, &key)?.into_iter().enumerate() {
                        let items = parse_kibana_export(text, &self.value_lists)
                            .map_err(|e| RuleError::key(format!("{key}[{i}]"), e.to_string()))?;
                        self.exceptions.extend(items);
                    }
                }
                "value_lists" => {} // read above
                "state_every_records" => self.state_every_records = positive(v, &key)? as u64,
                "state_every_seconds" => self.state_every_seconds = positive(v, &key)? as u64,
                "max_terms" => self.max_terms = positive(v, &key)?,
                "max_table_bytes" => self.max_table_bytes = positive(v, &key)?,
                "max_record_bytes" => self.max_record_bytes = positive(v, &key)?,
                "allowed_lateness" => {
                    let s = v.as_str().ok_or_else(|| {
                        RuleError::key(&key, "expected a duration string such as \"1h\"")
                    })?;
                    self.allowed_lateness = time::parse_duration(s).ok_or_else(|| {
                        RuleError::key(
                            &key,
                            format!("`{s}` is not a duration (a number and ms, s, m, h, d or w)"),
                        )
                    })?;
                }
                _ => {
                    return Err(RuleError::key(
                        &key,
                        format!("unknown setting (known: {})", SETTING_KEYS.join(", ")),
                    ))
                }
            }
        }
        Ok(())
    }
}

/// The settings text (`kibana_exceptions = [...]`, `value_lists = {...}`) that carries
/// Kibana exception-list exports and the value lists they name to a detector; empty for
/// none. For hosts that read the exports from files.
pub fn kibana_exceptions_setting<S: AsRef<str>>(exports: &[S], lists: &ValueLists) -> String {
    // A JSON string is a valid TOML basic string.
    let quote = |t: &str| serde_json::Value::from(t).to_string();
    let mut out = String::new();
    if !exports.is_empty() {
        let quoted: Vec<String> = exports.iter().map(|t| quote(t.as_ref())).collect();
        out.push_str(&format!("\nkibana_exceptions = [{}]\n", quoted.join(", ")));
    }
    if !lists.is_empty() {
        let pairs: Vec<String> = lists
            .iter()
            .map(|(id, values)| format!("{} = {}", quote(id), quote(values)))
            .collect();
        out.push_str(&format!("value_lists = {{ {} }}\n", pairs.join(", ")));
    }
    out
}

fn strings<'v>(v: &'v Value, key: &str) -> Result<Vec<&'v str>, RuleError> {
    v.as_array()
        .and_then(|a| a.iter().map(Value::as_str).collect::<Option<Vec<_>>>())
        .ok_or_else(|| RuleError::key(key, "expected an array of strings"))
}

fn positive(v: &Value, key: &str) -> Result<usize, RuleError> {
    match v.as_integer() {
        Some(n) if n >= 1 => usize::try_from(n).map_err(|_| RuleError::key(key, "too large")),
        _ => Err(RuleError::key(key, "expected a whole number of at least 1")),
    }
}
