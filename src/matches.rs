//! Match documents: what an edge in `matches` output mode sends for each (rule, term) of a
//! matching record, and what a detector with `input = "matches"` (the `newterms consume`
//! group) reads back and decides.
//!
//! The edge keeps no table. Its document names the rule, the term's values and a routing
//! key, and carries the record as it was read:
//!
//! ```json
//! {"newterms_key":"<32 hex>","newterms_rule":"<rule id>","newterms_terms":["<value>"],"record":{...}}
//! ```
//!
//! `newterms_key` is a function of the rule id and the term values only (a fixed 128-bit
//! hash, the same in every build and on every platform), so a Kafka producer keyed on it
//! sends every sighting of one (rule, term) to one partition, in order. That is what makes
//! one table per partition give the single-table answer: a term's decision depends only on
//! its own sightings (docs/contract.md §14).
//!
//! Fields other than these four are ignored (Fluent Bit's `out_kafka` adds a timestamp).

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::alert::StableHash;
use crate::detection::{Offered, Outcome};
use crate::error::{ErrorKind, RecordError};
use crate::record::RecordView;
use crate::rule::OutputMode;
use crate::Output;

/// The routing key's field.
pub const KEY_FIELD: &str = "newterms_key";

/// The routing key of a (rule, term): 32 lowercase hex digits.
pub fn key(rule_id: &str, terms: &[&str]) -> String {
    let mut h = StableHash::new();
    h.write(b"newterms-key/1");
    h.write(rule_id.as_bytes());
    for t in terms {
        h.write(t.as_bytes());
    }
    let (a, b) = h.finish();
    format!("{a:016x}{b:016x}")
}

/// The match document for one (rule, term) of `record` (a JSON object's text).
pub fn render(rule_id: &str, terms: &[&str], record: &str) -> String {
    let mut out = String::with_capacity(record.len() + 128);
    out.push_str("{\"newterms_key\":\"");
    out.push_str(&key(rule_id, terms));
    out.push_str("\",\"newterms_rule\":");
    crate::json::push_str(&mut out, rule_id);
    out.push_str(",\"newterms_terms\":[");
    for (i, t) in terms.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        crate::json::push_str(&mut out, t);
    }
    out.push_str("],\"record\":");
    out.push_str(record);
    out.push('}');
    out
}

/// A match document, read.
#[derive(Debug, Deserialize)]
pub struct Match<'a> {
    #[serde(rename = "newterms_key", borrow)]
    pub key: Cow<'a, str>,
    #[serde(rename = "newterms_rule", borrow)]
    pub rule: Cow<'a, str>,
    #[serde(rename = "newterms_terms", borrow)]
    pub terms: Vec<Cow<'a, str>>,
    #[serde(borrow)]
    pub record: &'a RawValue,
}

impl<'a> Match<'a> {
    /// Reads a match document; its key must be the one its rule and terms give (a
    /// document edited or written by another scheme would land in the wrong partition).
    pub fn parse(text: &'a [u8]) -> Result<Match<'a>, RecordError> {
        let m: Match<'a> = serde_json::from_slice(text).map_err(|e| {
            let kind = if e.is_data() {
                ErrorKind::WrongType
            } else {
                ErrorKind::InvalidJson
            };
            RecordError::new(kind, format!("not a match document: {e}"))
        })?;
        let terms: Vec<&str> = m.terms.iter().map(|t| t.as_ref()).collect();
        let expected = key(&m.rule, &terms);
        if m.key != expected {
            return Err(RecordError::new(
                ErrorKind::WrongType,
                format!(
                    "`newterms_key` {} is not the key of rule {} and its terms ({expected})",
                    m.key, m.rule
                ),
            ));
        }
        if terms.iter().any(|t| t.is_empty()) {
            return Err(RecordError::new(
                ErrorKind::WrongType,
                "`newterms_terms` holds an empty value",
            ));
        }
        if !m.record.get().starts_with('{') {
            return Err(RecordError::new(
                ErrorKind::NotObject,
                "`record` is not an object",
            ));
        }
        Ok(m)
    }
}

impl crate::Detector {
    /// Decides one match document (`input = "matches"`): its rule's table takes the term,
    /// and a new one is alerted on as a detector over the original record would have.
    /// A document that does not read, or names a rule not loaded here, is an error for
    /// that input (counted for every rule: no rule was chosen).
    pub(crate) fn process_match(&mut self, text: &[u8], sink: &mut dyn FnMut(Output<'_>)) {
        let m = match Match::parse(text) {
            Ok(m) => m,
            Err(e) => return self.fail(e, None, sink),
        };
        let Some(r) = self.rules.iter().position(|d| d.rule.rule_id == m.rule) else {
            let e = RecordError::new(
                ErrorKind::WrongType,
                format!("rule {} is not loaded here", m.rule),
            );
            return self.fail(e, None, sink);
        };
        let record = m.record.get().as_bytes();
        let view = match RecordView::parse(record, &self.layout, false) {
            Ok(v) => v,
            Err(e) => return self.fail(e.within("record"), None, sink),
        };
        let terms: Vec<&str> = m.terms.iter().map(|t| t.as_ref()).collect();
        let d = &mut self.rules[r];
        d.offered += 1;
        let offered = Offered {
            text: record,
            view: &view,
            layout: &self.layout,
            event_id: self.event_id,
        };
        let decided = d.decide_match(&terms, &offered, self.output, sink);
        self.changed |= d.changes.as_ref().is_some_and(|c| !c.is_empty());
        let s = &mut self.stats;
        s.records += 1;
        match decided {
            Ok(decision) => {
                s.matched += 1;
                s.late += u64::from(decision.late);
                match decision.outcome {
                    Outcome::Alerted => s.alerted += 1,
                    _ => s.suppressed += 1,
                }
                let pass = match self.output {
                    OutputMode::Passthrough => decision.outcome == Outcome::Alerted,
                    OutputMode::Annotate => decision.outcome != Outcome::Alerted,
                    OutputMode::Alert | OutputMode::Matches => false,
                };
                if pass {
                    sink(Output::Emit(Cow::Borrowed(m.record.get())));
                }
            }
            Err(e) => {
                d.stats.count_error(e.kind());
                s.count_error(e.kind());
                sink(Output::Error(e.within(&format!("rule {}", m.rule))));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Detector, DEFAULT_RULE};

    /// A second rule over an array-valued field, so a record can give several terms.
    fn by_tag() -> String {
        DEFAULT_RULE
            .replace("30fbf4db-c502-4e68-a239-2e99af0f70da", "tag-rule")
            .replace(r#"["aws.cloudtrail.user_identity.arn"]"#, r#"["tags"]"#)
    }

    /// Records in time order over 40 days by 60 identities, five sleepers and seven tags.
    fn stream(n: usize) -> Vec<String> {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let start = 1_767_225_600 * crate::time::NANOS_PER_SEC;
        let step = 40 * crate::time::NANOS_PER_DAY / n as i64;
        (0..n)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Five sleepers are active on days 0-12 and 24-36 only: new twice.
                let era = i * 40 / n / 12;
                let who = if x % 10 == 0 && era % 2 == 0 {
                    1000 + (x >> 24) % 5
                } else {
                    x % 60
                };
                let (a, b) = ((x >> 8) % 7, (x >> 16) % 7);
                format!(
                    r#"{{"eventTime":"{}","eventID":"e{i}","eventSource":"sts.amazonaws.com","eventName":"GetCallerIdentity","userIdentity":{{"type":"IAMUser","arn":"arn:aws:iam::1:user/u{who}"}},"tags":["t{a}","t{b}","t{a}"]}}"#,
                    crate::time::format_timestamp(start + i as i64 * step)
                )
            })
            .collect()
    }

    fn run(d: &mut Detector, inputs: &[String]) -> Vec<String> {
        let mut out = Vec::new();
        for r in inputs {
            d.process(r.as_bytes(), &mut |o| match o {
                Output::Emit(s) => out.push(s.into_owned()),
                Output::Error(e) => panic!("unexpected error {e}"),
            });
        }
        out
    }

    /// The edge's documents, decided by consumers that each hold one slice of the keys
    /// (as partitions do), give the alerts of one detector over the records, byte for byte.
    #[test]
    fn edge_and_partitioned_consumers_equal_one_detector() {
        let rules = [("a", DEFAULT_RULE.to_owned()), ("b", by_tag())];
        let records = stream(4_000);
        let mut single =
            Detector::open(&rules, &crate::Settings::from_toml("").unwrap(), None).unwrap();
        let mut expected = run(&mut single, &records);
        let mut edge = Detector::open(
            &rules,
            &crate::Settings::from_toml("output = \"matches\"").unwrap(),
            None,
        )
        .unwrap();
        let docs = run(&mut edge, &records);
        assert_eq!(edge.stats().alerts as usize, docs.len());
        assert_eq!(edge.stats().terms_held, 0, "the edge keeps no table");
        // A record with tags [a, b, a] sends a and b once each.
        let first = Match::parse(docs[1].as_bytes()).unwrap();
        assert_eq!(first.rule, "tag-rule");
        let parts = 4;
        let mut consumers: Vec<Detector> = (0..parts)
            .map(|_| {
                Detector::open(
                    &rules,
                    &crate::Settings::from_toml("input = \"matches\"").unwrap(),
                    None,
                )
                .unwrap()
            })
            .collect();
        let mut got = Vec::new();
        for doc in &docs {
            let m = Match::parse(doc.as_bytes()).unwrap();
            let p = u64::from_str_radix(&m.key[..8], 16).unwrap() as usize % parts;
            got.extend(run(&mut consumers[p], std::slice::from_ref(doc)));
        }
        // Identities 0, 10, .., 50 are drawn only on days 12-24 and 36-40 (the sleepers take
        // their draws the rest of the time): they are new twice too.
        assert_eq!(
            expected.len(),
            60 + 6 + 5 * 2 + 7,
            "identities, sleepers twice, tags"
        );
        // The order differs between partitions; the documents do not.
        expected.sort();
        got.sort();
        assert_eq!(got, expected);
        let held: u64 = consumers.iter().map(|c| c.stats().terms_held).sum();
        assert_eq!(held, single.stats().terms_held);
    }

    #[test]
    fn a_consumer_refuses_what_it_cannot_decide() {
        let mut d = Detector::from_config("", "input = \"matches\"").unwrap();
        let kinds = |d: &mut Detector, t: &str| {
            d.process_collect(t.as_bytes())
                .into_iter()
                .map(|o| match o {
                    Output::Error(e) => e.kind(),
                    Output::Emit(s) => panic!("emitted {s}"),
                })
                .collect::<Vec<_>>()
        };
        let other = render(
            "not-loaded",
            &["a"],
            r#"{"eventTime":"2026-01-01T00:00:00Z"}"#,
        );
        assert_eq!(kinds(&mut d, &other), [ErrorKind::WrongType]);
        let rule = "30fbf4db-c502-4e68-a239-2e99af0f70da";
        let two = render(rule, &["a", "b"], r#"{"eventTime":"2026-01-01T00:00:00Z"}"#);
        assert_eq!(kinds(&mut d, &two), [ErrorKind::WrongType]);
        let no_time = render(rule, &["a"], "{}");
        assert_eq!(kinds(&mut d, &no_time), [ErrorKind::BadTime]);
        let s = d.stats();
        assert_eq!((s.records, s.error_total(), s.terms_held), (3, 3, 0));
        assert!(Detector::from_config("", "input = \"matches\"\noutput = \"matches\"").is_err());
    }

    #[test]
    fn key_is_fixed() {
        // The key is part of the wire format: a change re-partitions every deployment.
        assert_eq!(key("r", &["a"]), key("r", &["a"]));
        assert_ne!(key("r", &["a", "b"]), key("r", &["ab"]));
        assert_ne!(key("r", &["a"]), key("s", &["a"]));
        assert_eq!(key("r", &["a"]).len(), 32);
        assert_eq!(key("r", &["a"]), "08def844bcf6d32093651499d62b22ef");
    }

    #[test]
    fn round_trip() {
        let doc = render("rule-1", &["x\"y", "z"], r#"{"a":1}"#);
        let m = Match::parse(doc.as_bytes()).unwrap();
        assert_eq!(m.rule, "rule-1");
        assert_eq!(m.terms, ["x\"y", "z"]);
        assert_eq!(m.record.get(), r#"{"a":1}"#);
    }

    #[test]
    fn refuses_what_is_not_a_match() {
        let kind = |t: &str| Match::parse(t.as_bytes()).unwrap_err().kind();
        assert_eq!(kind("{"), ErrorKind::InvalidJson);
        assert_eq!(kind(r#"{"record":{}}"#), ErrorKind::WrongType);
        let forged = render("r", &["a"], "{}").replace(&key("r", &["a"]), &key("r", &["b"]));
        assert_eq!(kind(&forged), ErrorKind::WrongType);
        let not_object = render("r", &["a"], "[1]");
        assert_eq!(kind(&not_object), ErrorKind::NotObject);
    }
}
