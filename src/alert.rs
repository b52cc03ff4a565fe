//! The alert document: the source record plus Elastic's alert fields.
//!
//! Alert fields are written as dotted top-level keys, the way Elastic's alerts-as-data
//! documents carry them (`"kibana.alert.rule.name": ...`), after the record's own fields.
//! `event.kind` becomes `signal`: inside the record's `event` object when it has one (its
//! former value is kept as `kibana.alert.original_event.kind`), else as a new `event`
//! object.
//!
//! The record is copied as text, entry by entry, without building a document: its values
//! keep their form (whitespace between tokens removed, so the alert is one line), and no
//! step recurses into them, so any record that was read gives its alert whatever its
//! nesting, on any host's stack. A key the record repeats keeps its last value, where it
//! last stood. The fields that are the same for every alert of a rule are rendered once,
//! when the rule is loaded.

use crate::error::{ErrorKind, RecordError};
use crate::rule::Rule;
use crate::time::{self, Nanos};

/// What an alert says beyond its record.
#[derive(Debug, Clone, Copy)]
pub struct AlertFacts<'a> {
    pub rule: &'a Rule,
    /// The new combination's values, in the order of the rule's new-terms fields.
    pub terms: &'a [&'a str],
    /// The record's time (`kibana.alert.original_time`).
    pub time: Nanos,
    /// The record's `event.id` (CloudTrail `eventID`), for a stable alert id.
    pub event_id: Option<&'a str>,
}

impl AlertFacts<'_> {
    /// A deterministic id: the same rule, terms, time and event id (or record text) give
    /// the same id, so a replayed record deduplicates downstream. Formatted as a UUID
    /// (version 8, RFC 9562's custom version).
    pub fn uuid(&self, record: &[u8]) -> String {
        let mut h = StableHash::new();
        h.write(self.rule.rule_id.as_bytes());
        for t in self.terms {
            h.write(t.as_bytes());
        }
        h.write(&self.time.to_le_bytes());
        match self.event_id {
            Some(id) => h.write(id.as_bytes()),
            None => h.write(record),
        }
        let (a, b) = h.finish();
        let a = (a & !0xf000) | 0x8000; // version 8 in bits 48..52 of the first half
        let b = (b & !(0b11 << 62)) | (0b10 << 62); // RFC 9562 variant
        format!(
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xffff,
            b >> 48,
            b & 0xffff_ffff_ffff
        )
    }

    pub fn reason(&self) -> String {
        let fields = self.rule.new_terms_fields.join(", ");
        let values = self.terms.join(", ");
        format!(
            "First sighting in {} of [{values}] in [{fields}] for rule \"{}\"",
            time::format_duration(self.rule.history_window),
            self.rule.name
        )
    }
}

/// The part of a rule's alerts that is the same for every alert: its fields, rendered
/// once when the rule is loaded.
#[derive(Debug, Clone)]
pub struct Template {
    /// `"kibana.alert.severity":...,...,"kibana.alert.rule.tags":[...]`.
    rule_fields: String,
}

impl Template {
    pub fn new(rule: &Rule) -> Template {
        let mut out = String::new();
        let mut put = |k: &str, v: serde_json::Value| {
            if !out.is_empty() {
                out.push(',');
            }
            push_json_str(&mut out, k);
            out.push(':');
            crate::json::write(&mut out, &v);
        };
        put("kibana.alert.severity", rule.severity.as_str().into());
        put("kibana.alert.risk_score", rule.risk_score.into());
        put("kibana.alert.rule.rule_id", rule.rule_id.as_str().into());
        put("kibana.alert.rule.name", rule.name.as_str().into());
        put("kibana.alert.rule.severity", rule.severity.as_str().into());
        put("kibana.alert.rule.risk_score", rule.risk_score.into());
        put("kibana.alert.rule.type", "new_terms".into());
        put("kibana.alert.rule.threat", rule.threat.clone());
        put(
            "kibana.alert.rule.tags",
            serde_json::Value::Array(
                rule.tags
                    .iter()
                    .map(|t| serde_json::Value::from(t.as_str()))
                    .collect(),
            ),
        );
        Template { rule_fields: out }
    }
}

/// Whether the alert sets this top-level key itself (the record's own is dropped).
fn alert_owned(key: &str) -> bool {
    key.starts_with("kibana.alert.") || key == "event.kind"
}

/// The alert document for a record (an object the detector has read).
pub fn render(
    record: &[u8],
    facts: &AlertFacts<'_>,
    template: &Template,
) -> Result<String, RecordError> {
    let bad = |e: String| RecordError::new(ErrorKind::InvalidJson, e);
    let text = std::str::from_utf8(record).map_err(|e| bad(e.to_string()))?;
    let entries = crate::record::entries(text).map_err(bad)?;
    let mut out = String::with_capacity(text.len() + template.rule_fields.len() + 512);
    out.push('{');
    let mut original_kind: Option<String> = None;
    let mut event_is_object = false;
    let mut wrote_event_kind = false;
    // The record's dotted `event.kind` is replaced; its value is the original kind unless
    // an `event` object has one too.
    if let Some((_, v)) = entries.iter().rev().find(|(k, _)| k == "event.kind") {
        original_kind = Some(minified(v));
    }
    let last = last_occurrences(&entries);
    for (i, (key, value)) in entries.iter().enumerate() {
        // A repeated key keeps its last value.
        if !last[i] {
            continue;
        }
        if key == "event.kind" {
            continue;
        }
        if alert_owned(key) {
            continue;
        }
        if out.len() > 1 {
            out.push(',');
        }
        push_json_str(&mut out, key);
        out.push(':');
        // An `event` object whose keys do not all decode (it was never read) is kept as it
        // is, with the kind beside it.
        let inner = match key == "event" && value.starts_with('{') {
            true => crate::record::entries(value).ok(),
            false => None,
        };
        if let Some(inner) = inner {
            event_is_object = true;
            out.push('{');
            let mut first = true;
            let last = last_occurrences(&inner);
            for (j, (k, v)) in inner.iter().enumerate() {
                if !last[j] {
                    continue;
                }
                if !first {
                    out.push(',');
                }
                first = false;
                push_json_str(&mut out, k);
                out.push(':');
                if k == "kind" {
                    original_kind = Some(minified(v));
                    out.push_str("\"signal\"");
                } else {
                    push_minified(&mut out, v);
                }
            }
            if !inner.iter().any(|(k, _)| k == "kind") {
                if !first {
                    out.push(',');
                }
                out.push_str("\"kind\":\"signal\"");
            }
            out.push('}');
        } else {
            if key == "event" {
                // `event` is not an object we can read: the kind goes beside it, dotted.
                out.push_str(&minified(value));
                out.push_str(",\"event.kind\":\"signal\"");
                wrote_event_kind = true;
                continue;
            }
            push_minified(&mut out, value);
        }
    }
    let has_event = entries.iter().any(|(k, _)| k == "event");
    if !event_is_object && !wrote_event_kind {
        if out.len() > 1 {
            out.push(',');
        }
        if has_event || original_kind.is_some() {
            out.push_str("\"event.kind\":\"signal\"");
        } else {
            out.push_str("\"event\":{\"kind\":\"signal\"}");
        }
    }
    if out.len() > 1 {
        out.push(',');
    }
    let field = |out: &mut String, k: &str| {
        push_json_str(out, k);
        out.push(':');
    };
    field(&mut out, "kibana.alert.uuid");
    push_json_str(&mut out, &facts.uuid(record));
    out.push(',');
    field(&mut out, "kibana.alert.new_terms");
    out.push('[');
    for (i, t) in facts.terms.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_str(&mut out, t);
    }
    out.push_str("],");
    field(&mut out, "kibana.alert.original_time");
    push_json_str(&mut out, &time::format_timestamp(facts.time));
    out.push(',');
    field(&mut out, "kibana.alert.reason");
    push_json_str(&mut out, &facts.reason());
    out.push(',');
    out.push_str(&template.rule_fields);
    if let Some(kind) = original_kind {
        out.push(',');
        field(&mut out, "kibana.alert.original_event.kind");
        out.push_str(&kind);
    }
    out.push('}');
    Ok(out)
}

/// For each entry, whether no later entry has its key.
fn last_occurrences(entries: &[(std::borrow::Cow<'_, str>, &str)]) -> Vec<bool> {
    let mut seen = hashbrown::HashSet::with_capacity(entries.len());
    let mut last: Vec<bool> = entries
        .iter()
        .rev()
        .map(|(k, _)| seen.insert(k.as_ref()))
        .collect();
    last.reverse();
    last
}

use crate::json::push_str as push_json_str;

/// A valid JSON value's text without the whitespace between its tokens.
fn minified(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    push_minified(&mut out, value);
    out
}

fn push_minified(out: &mut String, value: &str) {
    let bytes = value.as_bytes();
    let mut in_string = false;
    let mut escaped = false;
    let mut run = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
        } else if matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            out.push_str(&value[run..i]);
            run = i + 1;
        }
    }
    out.push_str(&value[run..]);
}

/// 128-bit FNV-1a pair: stable across platforms, builds and runs (unlike the table's
/// seeded hasher). Not cryptographic; it only needs to spread.
struct StableHash(u64, u64);

impl StableHash {
    fn new() -> Self {
        StableHash(0xcbf2_9ce4_8422_2325, 0x6c62_272e_07bb_0142)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes.iter().chain(&[0xff]) {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
            self.1 = (self.1 ^ u64::from(b.rotate_left(3))).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn finish(&self) -> (u64, u64) {
        (self.0, self.1 ^ self.0.rotate_left(32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn alert(record: &str) -> Value {
        let rule = Rule::default_rule();
        let facts = AlertFacts {
            rule: &rule,
            terms: &["arn:aws:iam::1:user/a"],
            time: 0,
            event_id: Some("e1"),
        };
        let out = render(record.as_bytes(), &facts, &Template::new(&rule)).unwrap();
        assert!(!out.contains('\n'), "one line: {out}");
        serde_json::from_str(&out).unwrap()
    }

    #[test]
    fn merges_event_kind_and_adds_fields() {
        let rule = Rule::default_rule();
        let v = alert(r#"{"event":{"kind":"event","action":"X"},"a":1}"#);
        assert_eq!(v["event"]["kind"], "signal");
        assert_eq!(v["event"]["action"], "X");
        assert_eq!(v["kibana.alert.original_event.kind"], "event");
        assert_eq!(v["kibana.alert.new_terms"][0], "arn:aws:iam::1:user/a");
        assert_eq!(v["kibana.alert.original_time"], "1970-01-01T00:00:00.000Z");
        assert_eq!(v["kibana.alert.rule.rule_id"], rule.rule_id.as_str());
        assert_eq!(
            v["kibana.alert.rule.threat"][0]["technique"][0]["id"],
            "T1087"
        );
        assert_eq!(v["a"], 1);

        let v = alert(r#"{"eventName":"X"}"#);
        assert_eq!(v["event"]["kind"], "signal");
        assert!(v.get("kibana.alert.original_event.kind").is_none());

        let v = alert(r#"{"event.kind":"event","event.action":"X"}"#);
        assert_eq!(v["event.kind"], "signal");
        assert_eq!(v["kibana.alert.original_event.kind"], "event");
        assert!(v.get("event").is_none());

        let v = alert(r#"{"event":"odd","b":2}"#);
        assert_eq!(
            (&v["event"], &v["event.kind"]),
            (&"odd".into(), &"signal".into())
        );

        let v = alert(r#"{"event":{"action":"X"},"kibana.alert.uuid":"forged"}"#);
        assert_eq!(v["event"]["kind"], "signal");
        assert_ne!(v["kibana.alert.uuid"], "forged");
    }

    #[test]
    fn keeps_the_record_as_written_and_in_order() {
        let record = "{ \"z\" : [ 1 , { \"s\" : \"a b\\n\\\" }\" } ],\n \"a\":1.50, \"z\":\"last\", \"u\":\"\\u00e9\"}";
        let rule = Rule::default_rule();
        let facts = AlertFacts {
            rule: &rule,
            terms: &["t\"q"],
            time: 0,
            event_id: None,
        };
        let out = render(record.as_bytes(), &facts, &Template::new(&rule)).unwrap();
        assert!(
            out.starts_with(r#"{"a":1.50,"z":"last","u":"\u00e9","event":{"kind":"signal"},"kibana.alert.uuid":"#),
            "{out}"
        );
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["kibana.alert.new_terms"][0], "t\"q");
    }

    #[test]
    fn any_nesting_renders() {
        let deep = format!("{{\"x\":{}1{}}}", "[".repeat(5000), "]".repeat(5000));
        let rule = Rule::default_rule();
        let facts = AlertFacts {
            rule: &rule,
            terms: &["a"],
            time: 0,
            event_id: None,
        };
        let template = Template::new(&rule);
        let out = std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || render(deep.as_bytes(), &facts_static(), &template).unwrap())
            .unwrap()
            .join()
            .unwrap();
        assert!(out.starts_with(&format!("{{\"x\":{}", "[".repeat(5000))));
        let _ = facts;
    }

    fn facts_static() -> AlertFacts<'static> {
        static RULE: std::sync::OnceLock<Rule> = std::sync::OnceLock::new();
        AlertFacts {
            rule: RULE.get_or_init(Rule::default_rule),
            terms: &["a"],
            time: 0,
            event_id: None,
        }
    }

    #[test]
    fn uuid_is_deterministic() {
        let rule = Rule::default_rule();
        let facts = |id| AlertFacts {
            rule: &rule,
            terms: &["t"],
            time: 5,
            event_id: id,
        };
        let a = facts(Some("e1")).uuid(b"{}");
        assert_eq!(
            a,
            facts(Some("e1")).uuid(b"{ }"),
            "the event id decides, not the text"
        );
        assert_ne!(a, facts(Some("e2")).uuid(b"{}"));
        assert_ne!(facts(None).uuid(b"{}"), facts(None).uuid(b"{ }"));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "8");
    }
}
