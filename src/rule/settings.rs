//! Our settings: the `[newterms]` table of a rule file, then the host's overrides.
//!
//! One type, [`Settings`], serves every front end: a user's TOML (a rule file's
//! `[newterms]` table, the component's settings text), the npm package's options object,
//! and a host that builds it in code (the command, from its options). Each key is one field,
//! its default one accessor; an unknown key is refused.

use serde::{de, Deserialize, Serialize};

use super::RuleError;
use crate::exceptions::{parse_kibana_export, Condition, ExceptionItem, ValueLists};
pub use crate::index::UnknownIndex;
use crate::time::{self, Nanos};

/// What is emitted for a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
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

/// What the detector is fed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputMode {
    /// Log records (the default).
    Records,
    /// Match documents written by an edge in `matches` output mode: the table is kept
    /// here, for the (rule, term) each names (see [`crate::matches`]).
    Matches,
}

/// What a host with a single output stream (Fluent Bit) does with a record in error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorPolicy {
    /// Pass the record on with a `newterms.error` field added (nothing is lost silently).
    Pass,
    /// Drop it (it is still counted in the statistics).
    Drop,
}

/// What a host that takes one record back per record (Fluent Bit) does with a record that
/// gives several outputs (alerts of several rules, several match documents, an alert and
/// an error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SeveralOutputs {
    /// Hand back one record holding them all, `{"newterms_outputs":[...]}`, for a
    /// configuration step to split (nothing is lost).
    Bundle,
    /// Hand back the first, and count the others as dropped.
    First,
}

/// Our settings, as a rule file's `[newterms]` table, a host's overrides or an options
/// object give them: a key not set is `None` (or empty), and takes its default from the
/// accessor of the same name. Unknown keys are refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table of newterms settings")]
pub struct Settings {
    /// `output`: `alert` (default), `passthrough`, `annotate` or `matches`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(deserialize_with = "one_of")]
    pub output: Option<OutputMode>,
    /// `input`: `records` (default) or `matches` (match documents from an edge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(deserialize_with = "one_of")]
    pub input: Option<InputMode>,
    /// `max_terms`: the most terms the table holds (default 100,000, about 15 MiB with
    /// ARN-sized terms); when full, the term seen longest ago is evicted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(deserialize_with = "at_least_one")]
    pub max_terms: Option<usize>,
    /// `max_table_bytes`: the most memory the table may count, at the term's bytes plus 64
    /// per term (default 64 MiB: enough for 100,000 terms of 600 bytes); whichever of this
    /// and `max_terms` binds first evicts, oldest first. A single term over it is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(deserialize_with = "at_least_one")]
    pub max_table_bytes: Option<usize>,
    /// `allowed_lateness`: how far behind the newest record time a record may be and
    /// still be decided exactly as Elastic would (default `1h`: CloudTrail delivers within
    /// about 15 minutes, and delivery files overlap by minutes). Written as a duration
    /// (`90m`).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "duration")]
    pub allowed_lateness: Option<Nanos>,
    /// `learning_period`: for this long in record time, counted from the first record the
    /// rule accepts, new terms are learned without alerting (counted as `learned`), so
    /// that a fresh table does not alert on every identity (default: none). Written as a
    /// duration (`7d`), or `forever`: learn only, as `newterms run --learn` does to build
    /// a baseline.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "period")]
    pub learning_period: Option<Nanos>,
    /// `max_record_bytes`: longer records are refused with a `too-large` error (default
    /// 1 MiB; CloudTrail records are at most a few hundred KiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(deserialize_with = "at_least_one")]
    pub max_record_bytes: Option<usize>,
    /// `on_error`: `pass` (default) or `drop`: what a host with one output stream (the
    /// Fluent Bit filter) does with a record in error. Hosts with an error channel (the
    /// component, the command) report errors there whatever this says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(deserialize_with = "one_of")]
    pub on_error: Option<ErrorPolicy>,
    /// `several_outputs`: `bundle` (default) or `first`: what a host that takes one record
    /// back per record (the Fluent Bit filter) does with a record that gives several
    /// outputs. Hosts with an output stream (the component, the command) send each.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(deserialize_with = "one_of")]
    pub several_outputs: Option<SeveralOutputs>,
    /// `state_file`: where a host without its own state option (the Fluent Bit module)
    /// keeps the term table across restarts, as a path it can write (default: none, the
    /// table lives in memory only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(deserialize_with = "file_path")]
    pub state_file: Option<String>,
    /// `state_every_records`: records between state writes (default 10,000, from
    /// [`crate::host::StatePolicy`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(deserialize_with = "at_least_one")]
    pub state_every_records: Option<u64>,
    /// `state_every_seconds`: record-time seconds between state writes (default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(deserialize_with = "at_least_one")]
    pub state_every_seconds: Option<u64>,
    /// `exceptions`: KQL conditions; a record matching any does not match the rule.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exceptions: Vec<String>,
    /// `kibana_exceptions`: Kibana exception-list exports (NDJSON text), read as
    /// `exceptions` are.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kibana_exceptions: Vec<String>,
    /// `value_lists`: a table from a Kibana value list's id to its values, one a line,
    /// for the exports' `type: list` entries.
    #[serde(default, skip_serializing_if = "ValueLists::is_empty")]
    pub value_lists: ValueLists,
    /// `index`: the index the host names for the stream, for records that do not name
    /// their own (`data_stream.*`, a Beat's `agent.type`): see [`crate::index`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(deserialize_with = "index_name")]
    pub index: Option<String>,
    /// `unknown_index`: `skip` (default) or `match`: whether a rule with index patterns
    /// sees a record whose index cannot be told. `skip` is Elastic's answer (a document
    /// is always in some index, and a rule reads only its own); a raw CloudTrail record
    /// is never unknown, so the built-in rule on CloudTrail is unaffected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(deserialize_with = "one_of")]
    pub unknown_index: Option<UnknownIndex>,
    /// `data_views`: a table from a Kibana data view's id to its index patterns (the
    /// view's title: comma-separated patterns), for rules with `data_view_id` and no
    /// `index`.
    #[serde(default, skip_serializing_if = "ValueLists::is_empty")]
    pub data_views: ValueLists,
    /// `index_by_tag`: for a host that tags its records (Fluent Bit), a table from a tag
    /// pattern (`*` for any run) to the index of the records so tagged; it names the index
    /// in place of `index` where a pattern matches (an exact tag first, else the longest
    /// pattern).
    #[serde(default, skip_serializing_if = "ValueLists::is_empty")]
    pub index_by_tag: ValueLists,
}

impl Settings {
    pub fn output(&self) -> OutputMode {
        self.output.unwrap_or(OutputMode::Alert)
    }
    pub fn input(&self) -> InputMode {
        self.input.unwrap_or(InputMode::Records)
    }
    pub fn max_terms(&self) -> usize {
        self.max_terms.unwrap_or(100_000)
    }
    pub fn max_table_bytes(&self) -> usize {
        self.max_table_bytes.unwrap_or(64 << 20)
    }
    pub fn allowed_lateness(&self) -> Nanos {
        self.allowed_lateness.unwrap_or(time::NANOS_PER_HOUR)
    }
    pub fn learning_period(&self) -> Option<Nanos> {
        self.learning_period
    }
    pub fn max_record_bytes(&self) -> usize {
        self.max_record_bytes.unwrap_or(1 << 20)
    }
    pub fn unknown_index(&self) -> UnknownIndex {
        self.unknown_index.unwrap_or(UnknownIndex::Skip)
    }
    pub fn on_error(&self) -> ErrorPolicy {
        self.on_error.unwrap_or(ErrorPolicy::Pass)
    }
    pub fn several_outputs(&self) -> SeveralOutputs {
        self.several_outputs.unwrap_or(SeveralOutputs::Bundle)
    }
    /// `state_every_records` and `state_every_seconds`, defaults from the one policy.
    pub fn state_policy(&self) -> crate::host::StatePolicy {
        let default = crate::host::StatePolicy::default();
        crate::host::StatePolicy {
            every_records: self.state_every_records.unwrap_or(default.every_records),
            every_seconds: self.state_every_seconds.unwrap_or(default.every_seconds),
        }
    }

    /// Settings from a user's TOML text: the keys of the `[newterms]` table
    /// (`output = "annotate"`). Errors name the key, as `newterms.<key>`.
    pub fn from_toml(text: &str) -> Result<Settings, RuleError> {
        if text.trim().is_empty() {
            return Ok(Settings::default());
        }
        let table = super::parse_toml(text).map_err(|e| RuleError::Toml {
            message: format!("in the settings: {}", super::toml_message(&e, text)),
        })?;
        Settings::from_toml_value(toml::Value::Table(table))
    }

    /// Settings from a parsed `[newterms]` table. It is flat (strings, numbers, arrays of
    /// strings and one table of strings), so this stays within a Fluent Bit module's stack.
    pub(super) fn from_toml_value(value: toml::Value) -> Result<Settings, RuleError> {
        serde_path_to_error::deserialize(value).map_err(|e| {
            let key = e.path().to_string();
            RuleError::key(named(&key), e.inner().message().to_owned())
        })
    }

    /// Settings from JSON text (the npm package's options object).
    pub fn from_json(text: &str) -> Result<Settings, RuleError> {
        let de = &mut serde_json::Deserializer::from_str(text);
        let error = |e: serde_json::Error, key: &str| {
            let mut message = e.to_string();
            // serde_json places its errors in the text; the key says where.
            if let Some(at) = message.find(" at line ") {
                message.truncate(at);
            }
            RuleError::key(named(key), message)
        };
        let settings = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
            let key = e.path().to_string();
            error(e.into_inner(), &key)
        })?;
        de.end().map_err(|e| error(e, ""))?;
        Ok(settings)
    }

    /// These settings with `top`'s over them: a key set in `top` wins; exceptions and
    /// exports add up; value lists merge, `top`'s winning.
    pub fn layered(&self, top: &Settings) -> Settings {
        // Destructured whole: a key added to the struct and not here fails to compile.
        let Settings {
            output,
            input,
            max_terms,
            max_table_bytes,
            allowed_lateness,
            learning_period,
            max_record_bytes,
            on_error,
            several_outputs,
            state_file,
            state_every_records,
            state_every_seconds,
            exceptions,
            kibana_exceptions,
            value_lists,
            index,
            unknown_index,
            data_views,
            index_by_tag,
        } = top;
        let mut out = self.clone();
        out.output = output.or(out.output);
        out.input = input.or(out.input);
        out.max_terms = max_terms.or(out.max_terms);
        out.max_table_bytes = max_table_bytes.or(out.max_table_bytes);
        out.allowed_lateness = allowed_lateness.or(out.allowed_lateness);
        out.learning_period = learning_period.or(out.learning_period);
        out.max_record_bytes = max_record_bytes.or(out.max_record_bytes);
        out.on_error = on_error.or(out.on_error);
        out.several_outputs = several_outputs.or(out.several_outputs);
        out.state_file = state_file.clone().or(out.state_file);
        out.state_every_records = state_every_records.or(out.state_every_records);
        out.state_every_seconds = state_every_seconds.or(out.state_every_seconds);
        out.exceptions.extend(exceptions.iter().cloned());
        out.kibana_exceptions
            .extend(kibana_exceptions.iter().cloned());
        out.value_lists
            .extend(value_lists.iter().map(|(k, v)| (k.clone(), v.clone())));
        out.index = index.clone().or(out.index);
        out.unknown_index = unknown_index.or(out.unknown_index);
        out.data_views
            .extend(data_views.iter().map(|(k, v)| (k.clone(), v.clone())));
        out.index_by_tag
            .extend(index_by_tag.iter().map(|(k, v)| (k.clone(), v.clone())));
        out
    }

    /// The exception items of this layer's `exceptions` and `kibana_exceptions`, in that
    /// order, the exports' list entries read from `lists`; an item that cannot be read is
    /// an error naming its key (`newterms.exceptions[1]`, counted within this layer).
    pub fn exception_items(&self, lists: &ValueLists) -> Result<Vec<ExceptionItem>, RuleError> {
        let mut items = Vec::new();
        for (i, text) in self.exceptions.iter().enumerate() {
            let key = format!("newterms.exceptions[{i}]");
            crate::query::parse(text).map_err(|e| RuleError::key(&key, e.to_string()))?;
            items.push(ExceptionItem {
                id: key,
                name: text.clone(),
                condition: Condition::Kql(text.clone()),
            });
        }
        for (i, text) in self.kibana_exceptions.iter().enumerate() {
            let export = parse_kibana_export(text, lists).map_err(|e| {
                RuleError::key(format!("newterms.kibana_exceptions[{i}]"), e.to_string())
            })?;
            items.extend(export);
        }
        Ok(items)
    }

    /// Adds Kibana exception-list exports and the value lists they name (for hosts that
    /// read them from files).
    pub fn with_kibana_exceptions<S: AsRef<str>>(
        mut self,
        exports: &[S],
        lists: &ValueLists,
    ) -> Self {
        self.kibana_exceptions
            .extend(exports.iter().map(|t| t.as_ref().to_owned()));
        self.value_lists
            .extend(lists.iter().map(|(k, v)| (k.clone(), v.clone())));
        self
    }
}

/// `newterms.<path>`, or `newterms` for the table itself.
fn named(path: &str) -> String {
    if path.is_empty() || path == "." {
        "newterms".to_owned()
    } else {
        format!("newterms.{path}")
    }
}

/// A whole number of at least 1, for counts and sizes.
fn at_least_one<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: de::Deserializer<'de>,
    T: TryFrom<u64>,
{
    struct Count;
    impl de::Visitor<'_> for Count {
        type Value = u64;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a whole number of at least 1")
        }
        fn visit_u64<E: de::Error>(self, n: u64) -> Result<u64, E> {
            if n >= 1 {
                Ok(n)
            } else {
                Err(E::custom("expected a whole number of at least 1"))
            }
        }
        fn visit_i64<E: de::Error>(self, n: i64) -> Result<u64, E> {
            match u64::try_from(n) {
                Ok(n) => self.visit_u64(n),
                Err(_) => Err(E::custom("expected a whole number of at least 1")),
            }
        }
    }
    let n = d.deserialize_u64(Count)?;
    T::try_from(n)
        .map(Some)
        .map_err(|_| de::Error::custom("too large"))
}

/// One of an enum's names, read as a string first so that any other type is refused as
/// "expected a string" (the names themselves are the enum's, `rename_all`).
fn one_of<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: de::Deserializer<'de>,
    T: Deserialize<'de>,
{
    use de::IntoDeserializer;
    let name = String::deserialize(d)?;
    let named: de::value::StrDeserializer<'_, de::value::Error> = name.as_str().into_deserializer();
    T::deserialize(named).map(Some).map_err(de::Error::custom)
}

/// An index name: not empty, and no pattern (`*`, `,`) or cluster (`:`) in it.
fn index_name<'de, D: de::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = String::deserialize(d)?;
    crate::index::check_name(&s).map_err(de::Error::custom)?;
    Ok(Some(s))
}

/// A path that is not empty.
fn file_path<'de, D: de::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = String::deserialize(d)?;
    if s.is_empty() {
        return Err(de::Error::custom("expected a file path"));
    }
    Ok(Some(s))
}

/// A learning period as text: a duration, or `forever` ([`crate::time::FOREVER`]).
mod period {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::time::{Nanos, FOREVER};

    pub fn serialize<S: Serializer>(d: &Option<Nanos>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(FOREVER) => s.serialize_str("forever"),
            _ => super::duration::serialize(d, s),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Nanos>, D::Error> {
        let text = String::deserialize(d).map_err(|_| {
            serde::de::Error::custom("expected a duration string such as \"7d\", or \"forever\"")
        })?;
        if text.trim() == "forever" {
            return Ok(Some(FOREVER));
        }
        super::duration::deserialize(serde::de::value::StringDeserializer::new(text))
    }
}

/// A duration as text (`1h`, `90m`).
mod duration {
    use serde::{de, Deserialize, Deserializer, Serializer};

    use crate::time::{self, Nanos};

    pub fn serialize<S: Serializer>(d: &Option<Nanos>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&time::format_duration(*d)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Nanos>, D::Error> {
        let text = String::deserialize(d)
            .map_err(|_| de::Error::custom("expected a duration string such as \"1h\""))?;
        time::parse_duration(&text).map(Some).ok_or_else(|| {
            de::Error::custom(format!(
                "`{text}` is not a duration (a number and ms, s, m, h, d or w)"
            ))
        })
    }
}
