//! Rule packs: each record parsed once and offered to every rule; each rule's alerts and
//! counters in the pack equal those of the rule alone.

use std::collections::BTreeMap;
use std::path::PathBuf;

use newterms::{Detector, Output};
use newterms_host::{Limits, Rules, Runtime, Session};
use serde_json::Value;

use crate::json_field;

/// The fixture rules, the built-in rule and generated ones: at least 50 in all.
fn pack() -> Vec<(String, String)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/rules");
    let mut rules: Vec<(String, String)> = newterms_host::rule_files(&[dir])
        .expect("fixtures")
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("fixture");
            (p.display().to_string(), text)
        })
        .collect();
    rules.push(("built-in".into(), newterms::DEFAULT_RULE.to_owned()));
    rules.extend(newterms_host::pack::rules(44));
    assert!(rules.len() >= 50, "{}", rules.len());
    rules
}

fn rule_id(alert: &str) -> String {
    let doc: Value = serde_json::from_str(alert).expect("alert JSON");
    json_field(&doc, "kibana.alert.rule.rule_id")
        .and_then(Value::as_str)
        .expect("rule id")
        .to_owned()
}

/// Alerts (and error counts) of one detector over the stream, by rule id.
fn run(d: &mut Detector, records: &[String]) -> (BTreeMap<String, Vec<String>>, u64) {
    let mut alerts: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut errors = 0;
    for r in records {
        d.process(r.as_bytes(), &mut |o| match o {
            Output::Emit(a) => alerts.entry(rule_id(&a)).or_default().push(a.into_owned()),
            Output::Error(_) => errors += 1,
        });
    }
    (alerts, errors)
}

#[test]
fn each_rule_in_a_pack_alerts_as_it_does_alone() {
    let rules = pack();
    let records = newterms_host::pack::stream(7, 20_000);
    let mut together =
        Detector::open(&rules, &newterms::Settings::default(), None).expect("the pack loads");
    let (pack_alerts, pack_errors) = run(&mut together, &records);
    let mut alerting_rules = 0;
    let mut alone_errors = 0;
    for (i, (source, text)) in rules.iter().enumerate() {
        let mut alone = Detector::from_config(text, "").expect("the rule loads alone");
        let id = alone.rule().rule_id.clone();
        let (mut a, e) = run(&mut alone, &records);
        alone_errors += e;
        let expected = a.remove(&id).unwrap_or_default();
        let got = pack_alerts.get(&id).cloned().unwrap_or_default();
        assert_eq!(got.len(), expected.len(), "{source}: alert count");
        assert!(got == expected, "{source}: the alerts differ");
        assert_counters_as_alone(together.rule_stats(i), alone.stats(), source);
        alerting_rules += usize::from(!expected.is_empty());
    }
    // Most rules fire on this stream, and some records are in error for some rules.
    assert!(alerting_rules >= 40, "only {alerting_rules} rules alerted");
    assert!(pack_errors > 0 && pack_errors == alone_errors);
    // The pack's own counters count each record once and add up.
    let s = together.stats();
    assert_eq!(s.records, records.len() as u64);
    let parts = s.prefiltered
        + s.out_of_index
        + s.unmatched
        + s.excepted
        + s.no_term
        + s.suppressed
        + s.alerted;
    assert_eq!(parts + s.error_total(), s.records, "{s:?}");
    assert_eq!(
        s.alerts,
        pack_alerts.values().map(|v| v.len() as u64).sum::<u64>()
    );
}

#[test]
fn a_pack_snapshot_restores_each_rule_and_tolerates_changes_to_the_pack() {
    let rules = pack();
    let records = newterms_host::pack::stream(11, 6_000);
    let (first, second) = records.split_at(3_000);
    let mut whole = Detector::open(&rules, &newterms::Settings::default(), None).expect("pack");
    let (expected, _) = run(&mut whole, &records);
    let mut d = Detector::open(&rules, &newterms::Settings::default(), None).expect("pack");
    let (mut got, _) = run(&mut d, first);
    let bytes = d.snapshot();
    let mut restored =
        Detector::open(&rules, &newterms::Settings::default(), Some(&bytes)).expect("restores");
    assert_eq!(restored.snapshot(), bytes);
    for (id, mut more) in run(&mut restored, second).0 {
        got.entry(id).or_default().append(&mut more);
    }
    assert!(
        got == expected,
        "a split run gives the alerts of the whole run"
    );

    // A pack with a rule removed and a rule added: the others keep their tables.
    let mut changed = rules[1..].to_vec();
    changed.push((
        "new.toml".into(),
        newterms_host::pack::rules(45).remove(44).1,
    ));
    let r =
        Detector::open(&changed, &newterms::Settings::default(), Some(&bytes)).expect("restores");
    let held: u64 = r.all_rule_stats().iter().map(|(_, s)| s.terms_held).sum();
    let before: u64 = d.all_rule_stats()[1..]
        .iter()
        .map(|(_, s)| s.terms_held)
        .sum();
    assert_eq!(held, before);
    // One rule alone takes its own table out of the pack's snapshot.
    let at = rules.len() - 44;
    let (_, generated) = &rules[at];
    let one = Detector::open(
        &[("rule", generated)],
        &newterms::Settings::default(),
        Some(&bytes),
    )
    .expect("the rule's own table");
    assert_eq!(one.terms().len() as u64, d.rule_stats(at).terms_held);
    assert!(!one.terms().is_empty());
    // A snapshot of rules none of which is in the pack is refused.
    let other = Detector::from_config(&newterms_host::pack::rules(60).remove(59).1, "")
        .expect("rule")
        .snapshot();
    let e =
        Detector::open(&rules, &newterms::Settings::default(), Some(&other)).expect_err("refused");
    assert_eq!(e.key_name(), Some("snapshot"));
}

#[test]
fn pack_load_errors_name_the_rule_file() {
    let mut rules = pack();
    rules[3].1 = rules[3]
        .1
        .replace("type = \"new_terms\"", "type = \"query\"");
    let e = Detector::open(&rules, &newterms::Settings::default(), None).expect_err("refused");
    assert!(e.to_string().starts_with(&rules[3].0), "{e}");
    assert_eq!(e.key_name(), Some("rule.type"));
    let mut twice = pack();
    twice.push(twice[0].clone());
    let e = Detector::open(&twice, &newterms::Settings::default(), None).expect_err("duplicate id");
    assert!(e.to_string().contains("is also the id of"), "{e}");
}

#[test]
fn the_component_runs_a_pack_as_the_core_does() {
    let rules = pack();
    let records = newterms_host::pack::stream(5, 4_000);
    let mut native = Detector::open(&rules, &newterms::Settings::default(), None).expect("pack");
    let mut want = Vec::new();
    for r in &records {
        native.process(r.as_bytes(), &mut |o| {
            if let Output::Emit(a) = o {
                want.push(a.into_owned());
            }
        });
    }
    let rt = Runtime::embedded().expect("runtime");
    let set = Rules::Pack(rules.clone());
    let mut s = Session::open_rules(&rt, &set, "", None, Limits::for_rules(&set, ""))
        .expect("instance")
        .expect("the pack loads in the component");
    let mut got = Vec::new();
    for chunk in records.chunks(500) {
        let ndjson = chunk.join("\n");
        for o in s.process_lines(ndjson.as_bytes()).expect("call") {
            if let newterms_host::Output::Emit(a) = o.output {
                got.push(a);
            }
        }
    }
    assert!(!want.is_empty());
    assert!(got == want, "{} alerts, expected {}", got.len(), want.len());
    export_for_js(&rules, &records, &native);
    let per_rule = s.rule_stats().expect("rule stats");
    assert_eq!(per_rule.len(), rules.len());
    for (i, (id, st)) in per_rule.iter().enumerate() {
        let n = native.rule_stats(i);
        assert_eq!(
            (st.records, st.alerts, st.prefiltered),
            (n.records, n.alerts, n.prefiltered),
            "{id}"
        );
    }
    // A bad rule in the pack is named.
    let mut bad = rules;
    bad[0].1.push_str("\n[rule.bad\n");
    let set = Rules::Pack(bad.clone());
    let e = Session::open_rules(&rt, &set, "", None, Limits::for_rules(&set, ""))
        .expect("instance")
        .err()
        .expect("refused");
    assert!(e.message.starts_with(&bad[0].0), "{}", e.message);
}

/// Writes the pack, its records and the core's answers to `target/pack-case.json`, for
/// the npm package's test (`host-test/js/package.test.mjs`), with each rule's counters.
fn export_for_js(rules: &[(String, String)], records: &[String], native: &Detector) {
    let stats: serde_json::Map<String, Value> = native
        .all_rule_stats()
        .into_iter()
        .map(|(id, s)| {
            let fields: serde_json::Map<String, Value> =
                s.fields().into_iter().map(|(k, v)| (k, v.into())).collect();
            (id, fields.into())
        })
        .collect();
    export_case_with("pack-case.json", rules, records, Some(stats));
}

/// Every field a pack's rules read, with the CloudTrail paths their names map to.
fn distinct_fields(rules: &[(String, String)]) -> usize {
    let mut fields = std::collections::BTreeSet::new();
    for (_, text) in rules {
        let rule = newterms::Rule::parse(text, &newterms::Settings::default()).expect("rule");
        fields.extend(rule.new_terms_fields.iter().cloned());
        let mut b = newterms::LayoutBuilder::new();
        newterms::Query::compile(&rule.query, &mut b).expect("query");
        let layout = b.build();
        for i in 0..layout.field_count() {
            fields.insert(
                layout
                    .field_name(newterms::FieldId::from_index(i))
                    .to_owned(),
            );
        }
    }
    fields.len()
}

#[test]
fn a_pack_of_200_rules_over_400_fields_alerts_rule_by_rule_as_alone() {
    let rules = newterms_host::pack::wide_rules(204);
    assert!(
        distinct_fields(&rules) >= 400,
        "{}",
        distinct_fields(&rules)
    );
    let records = newterms_host::pack::wide_stream(11, 30_000, rules.len());
    let mut together =
        Detector::open(&rules, &newterms::Settings::default(), None).expect("the pack loads");
    let (pack_alerts, _) = run(&mut together, &records);
    let mut alerting = 0;
    for (i, (source, text)) in rules.iter().enumerate() {
        let mut alone = Detector::from_config(text, "").expect("the rule loads alone");
        let id = alone.rule().rule_id.clone();
        let (mut a, _) = run(&mut alone, &records);
        let expected = a.remove(&id).unwrap_or_default();
        assert!(
            pack_alerts.get(&id).cloned().unwrap_or_default() == expected,
            "{source}: the alerts differ"
        );
        assert_counters_as_alone(together.rule_stats(i), alone.stats(), source);
        alerting += usize::from(!expected.is_empty());
    }
    assert_eq!(alerting, rules.len(), "every rule alerts on the stream");
    // The component holds the same pack and gives the same alerts.
    let rt = Runtime::embedded().expect("component");
    let settings = "";
    let packed = Rules::Pack(rules.clone());
    let mut s = Session::open_rules(
        &rt,
        &packed,
        settings,
        None,
        Limits::for_rules(&packed, settings),
    )
    .expect("instantiating")
    .expect("the pack loads in the component");
    let lines: Vec<Vec<u8>> = records.iter().map(|r| r.clone().into_bytes()).collect();
    let mut component: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for chunk in lines.chunks(500) {
        for o in s.process_batch(chunk).expect("batch") {
            if let newterms_host::Output::Emit(a) = o.output {
                component.entry(rule_id(&a)).or_default().push(a);
            }
        }
    }
    assert!(
        component == pack_alerts,
        "the component's alerts differ from the core's"
    );
    // The Fluent Bit module, with the rules in its rules directory: one answer a record,
    // the core's first.
    let dir = crate::backend::rules_dir("wide-pack", "", &rules);
    let mut fb = newterms_host::FluentBit::load(
        newterms_host::FLUENTBIT_MODULE,
        "newterms_filter",
        Some(&dir.0),
    )
    .expect("module");
    let some: Vec<Vec<u8>> = records
        .iter()
        .take(6_000)
        .map(|r| r.clone().into_bytes())
        .collect();
    let want = crate::backend::all_outputs(&rules, &some);
    for (r, want) in some.iter().zip(want) {
        let got = fb.call(b"t", (0, 0), Some(r)).expect("call");
        assert_eq!(
            String::from_utf8(got).expect("UTF-8"),
            crate::backend::bundle(&want)
        );
    }
    export_case("wide-pack-case.json", &rules, &records[..5_000]);
}

/// Writes rules, records and the core's alert ids to `target/<name>`, for the npm
/// package's test (`host-test/js/package.test.mjs`).
pub fn export_case(name: &str, rules: &[(String, String)], records: &[String]) {
    export_case_with(name, rules, records, None)
}

fn export_case_with(
    name: &str,
    rules: &[(String, String)],
    records: &[String],
    rule_stats: Option<serde_json::Map<String, Value>>,
) {
    let mut d = Detector::open(rules, &newterms::Settings::default(), None).expect("pack");
    let mut uuids = Vec::new();
    for r in records {
        d.process(r.as_bytes(), &mut |o| {
            if let Output::Emit(a) = o {
                let doc: Value = serde_json::from_str(&a).expect("alert");
                uuids.push(json_field(&doc, "kibana.alert.uuid").cloned());
            }
        });
    }
    let texts: Vec<&str> = rules.iter().map(|(_, t)| t.as_str()).collect();
    let mut doc = serde_json::json!({ "rules": texts, "records": records, "alerts": uuids });
    if let Some(stats) = rule_stats {
        doc["rule_stats"] = stats.into();
    }
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target")
        .join(name);
    std::fs::write(&path, doc.to_string()).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// A rule's counters in a pack equal its counters alone, but for one thing: a record whose
/// text foretold an index the rule does not read is `out_of_index` in the pack, where alone
/// the rule's own literals may have rejected it first (`prefiltered`), and the pack knows
/// more records' index to be unknown.
pub fn assert_counters_as_alone(pack: newterms::Stats, alone: newterms::Stats, source: &str) {
    assert_eq!(
        pack.prefiltered + pack.out_of_index,
        alone.prefiltered + alone.out_of_index,
        "{source}: the records the rule did not read"
    );
    assert!(pack.index_unknown >= alone.index_unknown, "{source}");
    let plain = |s: newterms::Stats| newterms::Stats {
        prefiltered: 0,
        out_of_index: 0,
        index_unknown: 0,
        ..s
    };
    assert_eq!(plain(pack), plain(alone), "{source}: the counters differ");
}
