//! Every `new_terms` rule of Elastic's detection-rules as one pack: each loads alone, the
//! whole set loads as one pack in the core, the component and the Fluent Bit module, and
//! the pack's alerts on the shared data are each rule's alone. The rules are fetched at
//! test time by `.ci/elastic-rules` (never kept in this repository); without them each
//! test says SKIPPED.

use std::collections::BTreeMap;
use std::path::PathBuf;

use newterms::{Detector, Output};
use newterms_host::{Limits, Rules, Session};

/// The rule files, or `None` (said loudly).
pub fn elastic_rules() -> Option<Vec<(String, String)>> {
    let dir = match std::env::var_os("NEWTERMS_ELASTIC_RULES") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/elastic-rules"),
    };
    let Ok(entries) = std::fs::read_dir(&dir) else {
        eprintln!(
            "SKIPPED: no Elastic rules at {} (bash .ci/elastic-rules): the whole-set tests do not run",
            dir.display()
        );
        return None;
    };
    let mut paths: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    let rules: Vec<(String, String)> = paths
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("rule file");
            (p.display().to_string(), text)
        })
        .collect();
    assert!(
        rules.len() >= 240,
        "only {} rules in {}",
        rules.len(),
        dir.display()
    );
    Some(rules)
}

/// Alerts by rule id, from the outputs of a detector.
fn by_rule(outputs: impl IntoIterator<Item = String>) -> BTreeMap<String, Vec<String>> {
    let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for a in outputs {
        let doc: serde_json::Value = serde_json::from_str(&a).expect("alert");
        let id = doc["kibana.alert.rule.rule_id"]
            .as_str()
            .expect("rule id")
            .to_owned();
        m.entry(id).or_default().push(a);
    }
    m
}

fn native(d: &mut Detector, lines: &[Vec<u8>]) -> Vec<String> {
    let mut out = Vec::new();
    for l in lines {
        d.process(l, &mut |o| {
            if let Output::Emit(a) = o {
                out.push(a.into_owned());
            }
        });
    }
    out
}

#[test]
fn every_rule_loads_and_the_set_runs_as_one_pack_as_each_rule_alone() {
    let Some(rules) = elastic_rules() else { return };
    let lines = crate::data::cloudtrail_lines();
    let mut pack = Detector::open(&rules, &newterms::Settings::default(), None)
        .expect("the whole set loads as one pack");
    let together = by_rule(native(&mut pack, &lines));
    let mut alerting = 0;
    for (source, text) in &rules {
        let mut alone = Detector::from_config(text, "")
            .unwrap_or_else(|e| panic!("{source} does not load: {e}"));
        let id = alone.rule().rule_id.clone();
        let mut mine = by_rule(native(&mut alone, &lines));
        let want = mine.remove(&id).unwrap_or_default();
        assert!(
            together.get(&id).cloned().unwrap_or_default() == want,
            "{source}: its alerts in the pack differ from its alerts alone"
        );
        alerting += usize::from(!want.is_empty());
    }
    assert!(
        alerting >= 2,
        "the AWS rules alert on the shared CloudTrail ({alerting})"
    );
    // The component holds the same pack and answers the same.
    let set = Rules::Pack(rules.clone());
    let mut s = Session::open_rules(
        crate::backend::runtime(),
        &set,
        "",
        None,
        Limits::for_rules(&set, ""),
    )
    .expect("instantiating")
    .expect("the whole set loads as one pack in the component");
    let mut component = Vec::new();
    for chunk in lines.chunks(256) {
        for o in s.process_batch(chunk).expect("batch") {
            if let newterms_host::Output::Emit(a) = o.output {
                component.push(a);
            }
        }
    }
    assert!(
        by_rule(component) == together,
        "the component answers as the core"
    );
    let records: Vec<String> = lines
        .iter()
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect();
    crate::pack::export_case("elastic-case.json", &rules, &records);
}

#[test]
fn the_fluent_bit_module_runs_the_whole_set_as_one_pack() {
    let Some(rules) = elastic_rules() else { return };
    let dir = crate::backend::rules_dir("elastic-fb", "", &rules);
    let mut fb = newterms_host::FluentBit::load(
        newterms_host::FLUENTBIT_MODULE,
        "newterms_filter",
        Some(&dir.0),
    )
    .expect("module");
    let lines = crate::data::cloudtrail_lines();
    let got: Vec<String> = lines
        .iter()
        .map(|l| String::from_utf8(fb.call(b"t", (0, 0), Some(l)).expect("call")).expect("UTF-8"))
        .collect();
    let stats = fb.stats().expect("stats");
    assert!(stats.get("config_error").is_none(), "{stats}");
    assert_eq!(
        stats["rules"].as_object().map(|r| r.len()),
        Some(rules.len())
    );
    // One answer per call: each record's outputs as the core gives them, several in a
    // bundle.
    let all = crate::backend::all_outputs(&rules, &lines);
    assert!(all.iter().any(|w| w.len() > 1), "some record alerts twice");
    let want: Vec<String> = all.iter().map(|w| crate::backend::bundle(w)).collect();
    assert!(got.iter().any(|a| !a.is_empty()));
    assert!(got == want, "the module answers as the core");
}

/// The reference for a rule's indices, written from the rule file alone: its `index` list
/// (no exclusions or remote clusters in Elastic's set: checked), `*` as any run.
fn reference_admits(rule_text: &str, index: &str) -> bool {
    fn glob(p: &[u8], t: &[u8]) -> bool {
        // Dynamic programming over (pattern, text) prefixes: a different algorithm from
        // the core's.
        let mut row = vec![false; t.len() + 1];
        row[0] = true;
        for &c in p {
            let mut next = vec![false; t.len() + 1];
            if c == b'*' {
                let mut any = false;
                for j in 0..=t.len() {
                    any |= row[j];
                    next[j] = any;
                }
            } else {
                for j in 1..=t.len() {
                    next[j] = row[j - 1] && t[j - 1] == c;
                }
            }
            row = next;
        }
        row[t.len()]
    }
    let doc: toml::Table = rule_text.parse().expect("rule TOML");
    let list = doc["rule"]["index"]
        .as_array()
        .expect("every Elastic rule has an index");
    list.iter().any(|p| {
        let p = p.as_str().expect("a pattern");
        assert!(
            !p.starts_with('-') && !p.contains(':') && !p.contains(','),
            "{p}"
        );
        glob(p.as_bytes(), index.as_bytes())
    })
}

#[test]
fn a_mixed_stream_of_data_streams_alerts_as_each_rule_over_its_own_indices() {
    let Some(rules) = elastic_rules() else { return };
    // Real CloudTrail records, each given a data stream: its own, the rules' other ones,
    // an unrelated one, or none (a raw CloudTrail record: logs-aws.cloudtrail-default).
    let streams = [
        Some("aws.cloudtrail"),
        Some("github.audit"),
        Some("o365.audit"),
        Some("endpoint.events.process"),
        Some("nginx.access"),
        None,
    ];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut lines = Vec::new();
    let mut indices = Vec::new();
    for l in crate::data::cloudtrail_lines() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let stream = streams[(x % streams.len() as u64) as usize];
        let mut v: serde_json::Value = serde_json::from_slice(&l).expect("record");
        let index = match stream {
            Some(d) => {
                v["data_stream"] =
                    serde_json::json!({"type": "logs", "dataset": d, "namespace": "default"});
                format!("logs-{d}-default")
            }
            None => "logs-aws.cloudtrail-default".to_owned(),
        };
        lines.push(serde_json::to_vec(&v).expect("record"));
        indices.push(index);
    }
    let mut pack =
        Detector::open(&rules, &newterms::Settings::default(), None).expect("the whole set loads");
    let got = by_rule(native(&mut pack, &lines));
    // The reference: each rule without its `index`, over only the records its index list
    // admits.
    let mut want: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut kept_out = 0;
    for (source, text) in &rules {
        let unindexed: String = {
            let mut doc: toml::Table = text.parse().expect("rule TOML");
            let rule = doc
                .get_mut("rule")
                .and_then(|r| r.as_table_mut())
                .expect("rule");
            rule.remove("index");
            toml::to_string(&doc).expect("TOML")
        };
        let mut alone = Detector::from_config(&unindexed, "")
            .unwrap_or_else(|e| panic!("{source} without its index: {e}"));
        let mine: Vec<Vec<u8>> = lines
            .iter()
            .zip(&indices)
            .filter(|(_, i)| reference_admits(text, i))
            .map(|(l, _)| l.clone())
            .collect();
        kept_out += lines.len() - mine.len();
        for (id, alerts) in by_rule(native(&mut alone, &mine)) {
            want.entry(id).or_default().extend(alerts);
        }
    }
    assert!(kept_out > 0);
    let count = |m: &BTreeMap<String, Vec<String>>| m.values().map(Vec::len).sum::<usize>();
    assert!(count(&want) >= 5, "the reference alerts: {}", count(&want));
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "the rules that alert"
    );
    assert!(got == want, "each rule's alerts over its own indices");
    let kept: u64 = (0..rules.len())
        .map(|i| pack.rule_stats(i).out_of_index)
        .sum();
    assert!(kept > 0, "{:?}", pack.stats());
}
