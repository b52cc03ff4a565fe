//! The alert document: the source record plus Elastic's alert fields.
//!
//! Alert fields are written as dotted top-level keys, the way Elastic's alerts-as-data
//! documents carry them (`"kibana.alert.rule.name": ...`). `event.kind` becomes `signal`:
//! inside the record's `event` object when it has one (its former value is kept as
//! `kibana.alert.original_event.kind`), else as a new `event` object.
//!
//! Building an alert parses the record a second time, into a document to merge into. It
//! happens once per new term, not per record: the per-record path stays one borrowed parse.

use serde_json::{Map, Value};

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

/// The alert document for a record.
///
/// A record the detector could read but that does not parse as a whole (nested deeper than
/// 128 levels, or a lone surrogate escape, in fields the rule does not read) still gives
/// its alert: without the record's own fields, with `newterms.source_error` saying why.
/// A new term is never lost to the shape of the rest of its record.
pub fn render(record: &[u8], facts: &AlertFacts<'_>) -> Result<String, RecordError> {
    let mut doc: Map<String, Value> = match serde_json::from_slice(record) {
        Ok(doc) => doc,
        Err(e) => {
            let mut doc = Map::new();
            doc.insert(
                "newterms.source_error".to_owned(),
                format!("the source record could not be copied into the alert: {e}").into(),
            );
            doc
        }
    };
    let original_kind = set_event_kind(&mut doc);
    let rule = facts.rule;
    let mut put = |k: &str, v: Value| {
        doc.insert(k.to_owned(), v);
    };
    put("kibana.alert.uuid", facts.uuid(record).into());
    put(
        "kibana.alert.new_terms",
        Value::Array(facts.terms.iter().map(|t| Value::from(*t)).collect()),
    );
    put(
        "kibana.alert.original_time",
        time::format_timestamp(facts.time).into(),
    );
    put("kibana.alert.reason", facts.reason().into());
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
        Value::Array(rule.tags.iter().map(|t| Value::from(t.as_str())).collect()),
    );
    if let Some(kind) = original_kind {
        put("kibana.alert.original_event.kind", kind);
    }
    serde_json::to_string(&doc).map_err(|e| RecordError::new(ErrorKind::InvalidJson, e.to_string()))
}

/// Sets `event.kind` to `signal`; returns the value it replaced.
fn set_event_kind(doc: &mut Map<String, Value>) -> Option<Value> {
    let signal = Value::from("signal");
    let mut original = None;
    if let Some(v) = doc.get_mut("event.kind") {
        original = Some(std::mem::replace(v, signal.clone()));
    }
    match doc.get_mut("event") {
        Some(Value::Object(event)) => {
            if let Some(old) = event.insert("kind".to_owned(), signal) {
                original = Some(old);
            }
        }
        Some(_) => {
            doc.insert("event.kind".to_owned(), signal);
        }
        None if original.is_none() => {
            let mut event = Map::new();
            event.insert("kind".to_owned(), signal);
            doc.insert("event".to_owned(), Value::Object(event));
        }
        None => {}
    }
    original
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

    #[test]
    fn merges_event_kind_and_adds_fields() {
        let rule = Rule::default_rule();
        let facts = AlertFacts {
            rule: &rule,
            terms: &["arn:aws:iam::1:user/a"],
            time: 0,
            event_id: Some("e1"),
        };
        let out = render(br#"{"event":{"kind":"event","action":"X"},"a":1}"#, &facts).unwrap();
        let v: Value = serde_json::from_str(&out).unwrap();
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

        let out = render(br#"{"eventName":"X"}"#, &facts).unwrap();
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["event"]["kind"], "signal");

        let deep = format!("{{\"x\":{}1{}}}", "[".repeat(200), "]".repeat(200));
        let v: Value = serde_json::from_str(&render(deep.as_bytes(), &facts).unwrap()).unwrap();
        assert_eq!(v["kibana.alert.new_terms"][0], "arn:aws:iam::1:user/a");
        assert!(v["newterms.source_error"]
            .as_str()
            .unwrap()
            .contains("recursion limit"));
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
