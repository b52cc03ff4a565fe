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
//! at the rule's first alert.

use std::borrow::Cow;

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
    /// The record is a raw CloudTrail record: the alert adds the ECS fields Elastic's AWS
    /// integration would have set ([`CLOUDTRAIL_ECS`]).
    pub cloudtrail: bool,
}

/// What an alert's id is made from besides its rule, terms and time: the record's event
/// id, or its text (as [`AlertFacts::uuid`] takes it), as 64 bits.
pub(crate) fn fingerprint(event_id: Option<&str>, record: &[u8]) -> u64 {
    let mut h = StableHash::new();
    match event_id {
        Some(id) => h.write(id.as_bytes()),
        None => h.write(record),
    }
    h.finish().0
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
        // The same bytes as `fingerprint` reads.
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
/// once, at the rule's first alert.
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
    let mut ecs = match facts.cloudtrail {
        true => cloudtrail_ecs(&entries),
        false => Vec::new(),
    };
    if !event_is_object && !wrote_event_kind {
        if out.len() > 1 {
            out.push(',');
        }
        if has_event || original_kind.is_some() {
            out.push_str("\"event.kind\":\"signal\"");
        } else {
            // A new `event` object: the kind, and a CloudTrail record's event fields.
            out.push_str("\"event\":{\"kind\":\"signal\"");
            for (name, value) in ecs.iter().filter(|(n, _)| n.starts_with("event.")) {
                out.push(',');
                push_json_str(&mut out, &name["event.".len()..]);
                out.push(':');
                out.push_str(value);
            }
            out.push('}');
        }
    }
    ecs.retain(|(name, _)| !name.starts_with("event."));
    // Every alert has `@timestamp`: the record's own, else the record's time.
    if !entries.iter().any(|(k, _)| k == "@timestamp") {
        out.push_str(",\"@timestamp\":");
        push_json_str(&mut out, &time::format_timestamp(facts.time));
    }
    // The other ECS fields as objects, one per top-level name the record does not have.
    let mut i = 0;
    while i < ecs.len() {
        let group = ecs[i].0.split('.').next().unwrap_or_default();
        let end = ecs[i..]
            .iter()
            .position(|(n, _)| n.split('.').next() != Some(group))
            .map_or(ecs.len(), |k| i + k);
        let taken = entries
            .iter()
            .any(|(k, _)| k == group || k.strip_prefix(group).is_some_and(|r| r.starts_with('.')));
        if !taken {
            out.push(',');
            push_nested(&mut out, group, &ecs[i..end]);
        }
        i = end;
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

/// An object's entry: its key (unescaped) and its value's text.
type Entry<'t> = (Cow<'t, str>, &'t str);

/// The ECS fields an alert from a raw CloudTrail record carries, as Elastic's AWS
/// integration (its CloudTrail ingest pipeline) sets them from the same record, so the
/// alert indexes into an ECS data stream and Kibana's views show who, from where, on what.
/// Each is read where the record mapping reads it ([`crate::record::cloudtrail_paths`]);
/// grouped by their first name, in the order written.
const CLOUDTRAIL_ECS: &[&str] = &[
    "event.action",
    "event.provider",
    "event.outcome",
    "cloud.account.id",
    "cloud.region",
    "source.address",
    "source.ip",
    "user_agent.original",
    "user.name",
    "user.id",
    "aws.cloudtrail.user_identity.arn",
    "aws.cloudtrail.user_identity.type",
];

/// The [`CLOUDTRAIL_ECS`] fields a CloudTrail record gives, with their JSON text: the
/// value as the record writes it; `event.outcome` `failure` when the record has an
/// `errorCode` or `errorMessage`, else `success`; `source.ip` only when
/// `sourceIPAddress` is an address (an AWS service's name is only `source.address`).
fn cloudtrail_ecs<'t>(entries: &[Entry<'t>]) -> Vec<(&'static str, String)> {
    // The objects read so far (`userIdentity` serves six fields): each parsed once.
    let mut objects: Vec<(&'t str, Vec<Entry<'t>>)> = Vec::new();
    let mut lookup = |path: &str| -> Option<&'t str> {
        let mut parts = path.split('.');
        let first = parts.next()?;
        let mut value = entries.iter().rev().find(|(k, _)| k == first)?.1;
        for part in parts {
            if !value.starts_with('{') {
                return None;
            }
            let i = match objects.iter().position(|(o, _)| std::ptr::eq(*o, value)) {
                Some(i) => i,
                None => {
                    objects.push((value, crate::record::entries(value).ok()?));
                    objects.len() - 1
                }
            };
            value = objects[i].1.iter().rev().find(|(k, _)| k == part)?.1;
        }
        (value.trim() != "null").then_some(value)
    };
    let mut out = Vec::new();
    for &name in CLOUDTRAIL_ECS {
        let value = match name {
            "event.outcome" => {
                let failed = ["errorCode", "errorMessage"]
                    .iter()
                    .any(|k| lookup(k).is_some());
                Some(format!(
                    "\"{}\"",
                    if failed { "failure" } else { "success" }
                ))
            }
            _ => crate::record::cloudtrail_paths(name)
                .iter()
                .find_map(|p| lookup(p))
                .filter(|v| v.starts_with('"'))
                .filter(|v| {
                    name != "source.ip" || v[1..v.len() - 1].parse::<std::net::IpAddr>().is_ok()
                })
                .map(minified),
        };
        if let Some(v) = value {
            out.push((name, v));
        }
    }
    out
}

/// `"group":{...}` for fields named `group.a.b`, their JSON texts given: nested objects.
fn push_nested(out: &mut String, group: &str, fields: &[(&str, String)]) {
    push_json_str(out, group);
    out.push(':');
    // Open and close objects as consecutive names share or leave prefixes (the fields
    // of one object are listed together).
    let mut open: Vec<&str> = Vec::new();
    out.push('{');
    let mut first = true;
    for (name, value) in fields {
        let parts: Vec<&str> = name.split('.').skip(1).collect();
        let (path, leaf) = parts.split_at(parts.len().saturating_sub(1));
        let shared = open.iter().zip(path).take_while(|(a, b)| a == b).count();
        while open.len() > shared {
            open.pop();
            out.push('}');
        }
        for p in &path[shared..] {
            if !first {
                out.push(',');
            }
            push_json_str(out, p);
            out.push_str(":{");
            open.push(p);
            first = true;
        }
        if !first {
            out.push(',');
        }
        first = false;
        push_json_str(out, leaf.first().copied().unwrap_or_default());
        out.push(':');
        out.push_str(value);
    }
    for _ in open {
        out.push('}');
    }
    out.push('}');
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
pub(crate) struct StableHash(u64, u64);

impl StableHash {
    pub(crate) fn new() -> Self {
        StableHash(0xcbf2_9ce4_8422_2325, 0x6c62_272e_07bb_0142)
    }

    pub(crate) fn write(&mut self, bytes: &[u8]) {
        for &b in bytes.iter().chain(&[0xff]) {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
            self.1 = (self.1 ^ u64::from(b.rotate_left(3))).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    pub(crate) fn finish(&self) -> (u64, u64) {
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
            cloudtrail: false,
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
    fn a_cloudtrail_alert_carries_the_integrations_ecs_fields() {
        let rule = Rule::default_rule();
        let facts = |cloudtrail| AlertFacts {
            rule: &rule,
            terms: &["arn"],
            time: 1_700_000_000_000_000_000,
            event_id: None,
            cloudtrail,
        };
        let record = r#"{"eventTime":"2023-11-14T22:13:20Z","eventSource":"sts.amazonaws.com","eventName":"GetCallerIdentity","awsRegion":"us-east-1","sourceIPAddress":"198.51.100.7","userAgent":"aws-cli/2","recipientAccountId":"222","userIdentity":{"type":"AssumedRole","principalId":"AROA:s","arn":"arn:aws:sts::111:assumed-role/R/s","accountId":"111","sessionContext":{"sessionIssuer":{"userName":"R"}}}}"#;
        let out = render(record.as_bytes(), &facts(true), &Template::new(&rule)).unwrap();
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["@timestamp"], "2023-11-14T22:13:20.000Z");
        assert_eq!(
            v["event"],
            serde_json::json!({"kind": "signal", "action": "GetCallerIdentity", "provider": "sts.amazonaws.com", "outcome": "success"})
        );
        assert_eq!(
            v["cloud"],
            serde_json::json!({"account": {"id": "111"}, "region": "us-east-1"})
        );
        assert_eq!(
            v["source"],
            serde_json::json!({"address": "198.51.100.7", "ip": "198.51.100.7"})
        );
        assert_eq!(v["user_agent"]["original"], "aws-cli/2");
        assert_eq!(v["user"], serde_json::json!({"name": "R", "id": "AROA:s"}));
        assert_eq!(
            v["aws"]["cloudtrail"]["user_identity"],
            serde_json::json!({"arn": "arn:aws:sts::111:assumed-role/R/s", "type": "AssumedRole"})
        );
        // An AWS service: its name is no address, no caller account; a failed call; fields
        // the record has are kept as they are.
        let record = r#"{"eventTime":"2023-11-14T22:13:20Z","eventSource":"sts.amazonaws.com","eventName":"AssumeRole","sourceIPAddress":"ec2.amazonaws.com","errorCode":"AccessDenied","recipientAccountId":"222","userIdentity":{"type":"AWSService"},"user":{"name":"mine"},"@timestamp":"2000-01-01T00:00:00Z"}"#;
        let out = render(record.as_bytes(), &facts(true), &Template::new(&rule)).unwrap();
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["@timestamp"], "2000-01-01T00:00:00Z");
        assert_eq!(v["event"]["outcome"], "failure");
        assert_eq!(
            v["source"],
            serde_json::json!({"address": "ec2.amazonaws.com"})
        );
        assert_eq!(v["cloud"]["account"]["id"], "222");
        assert_eq!(v["user"], serde_json::json!({"name": "mine"}));
        assert!(v.get("user_agent").is_none());
        assert_eq!(out.matches("\"@timestamp\"").count(), 1);
        // Not CloudTrail: only the time.
        let out = render(br#"{"a":1}"#, &facts(false), &Template::new(&rule)).unwrap();
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["@timestamp"], "2023-11-14T22:13:20.000Z");
        assert!(v.get("cloud").is_none());
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
            cloudtrail: false,
        };
        let out = render(record.as_bytes(), &facts, &Template::new(&rule)).unwrap();
        assert!(
            out.starts_with(r#"{"a":1.50,"z":"last","u":"\u00e9","event":{"kind":"signal"},"@timestamp":"1970-01-01T00:00:00.000Z","kibana.alert.uuid":"#),
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
            cloudtrail: false,
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
            cloudtrail: false,
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
            cloudtrail: false,
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
