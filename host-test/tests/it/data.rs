//! Real CloudTrail data from `../shared/data/` through every back end, as files are
//! delivered and one record a line.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::Value;

use crate::backend::{Backend, Out, ALL};
use crate::json_field;

/// `../shared/data` beside the repository (or `NEWTERMS_SHARED_DATA`).
pub fn shared_data() -> PathBuf {
    match std::env::var_os("NEWTERMS_SHARED_DATA") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"),
    }
}

pub fn files(dir: &str) -> Vec<PathBuf> {
    let dir = shared_data().join(dir);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json" || x == "jsonl"))
        .collect();
    v.sort();
    v
}

/// The records of a delivery file (`{"Records": [...]}`) or array file, one per line.
pub fn as_lines(path: &PathBuf) -> Vec<Vec<u8>> {
    let doc: Value =
        serde_json::from_slice(&std::fs::read(path).expect("read")).expect("JSON file");
    let records = match &doc {
        Value::Object(o) => o["Records"].as_array().expect("Records").clone(),
        Value::Array(a) => a.clone(),
        _ => panic!("unexpected file shape"),
    };
    records
        .iter()
        .map(|r| serde_json::to_vec(r).expect("serialize"))
        .collect()
}

struct Alert {
    terms: Vec<String>,
    identity_type: String,
    event_time: String,
    uuid: String,
}

fn alerts(backend: Backend, inputs: &[Vec<u8>]) -> (Vec<Alert>, Vec<(String, u64)>) {
    let mut d = backend.open("", "").expect("default rule");
    let mut alerts = Vec::new();
    for outs in d.run(inputs) {
        for o in outs {
            match o {
                Out::Emit(text) => {
                    let doc: Value = serde_json::from_str(&text).expect("alert JSON");
                    let s = |p: &str| {
                        json_field(&doc, p)
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_owned()
                    };
                    alerts.push(Alert {
                        terms: serde_json::from_value(doc["kibana.alert.new_terms"].clone())
                            .expect("terms"),
                        identity_type: s("userIdentity.type"),
                        event_time: s("eventTime"),
                        uuid: s("kibana.alert.uuid"),
                    });
                }
                Out::Error { kind, message } => {
                    panic!("[{}] unexpected error {kind}: {message}", backend.name())
                }
            }
        }
    }
    (alerts, d.stats())
}

fn read_all(paths: &[PathBuf]) -> Vec<Vec<u8>> {
    paths
        .iter()
        .map(|p| std::fs::read(p).expect("read"))
        .collect()
}

#[test]
fn invictus_ir_gives_one_alert_for_bert_jan_first_call() {
    let paths = files("cloudtrail/invictus-ir");
    assert_eq!(paths.len(), 55);
    let whole = read_all(&paths);
    let lines: Vec<Vec<u8>> = paths.iter().flat_map(as_lines).collect();
    assert_eq!(lines.len(), 2900);
    let mut uuids = BTreeSet::new();
    for backend in ALL {
        for (how, inputs) in [("files", &whole), ("lines", &lines)] {
            let (alerts, stats) = alerts(backend, inputs);
            assert_eq!(alerts.len(), 1, "[{} {how}] one alert", backend.name());
            let a = &alerts[0];
            assert_eq!(a.terms, vec!["arn:aws:iam::123837392027:user/bert-jan"]);
            assert_eq!(a.identity_type, "IAMUser");
            // The earliest of bert-jan's 14 GetCallerIdentity calls.
            assert_eq!(
                a.event_time,
                "2023-07-10T11:54:38Z",
                "[{} {how}]",
                backend.name()
            );
            uuids.insert(a.uuid.clone());
            let stat = |k: &str| stats.iter().find(|(n, _)| n == k).map(|(_, v)| *v);
            assert_eq!(stat("records"), Some(2900), "[{} {how}]", backend.name());
            assert_eq!(
                stat("matched"),
                Some(14),
                "the AssumedRole call does not match"
            );
            assert_eq!(stat("suppressed"), Some(13));
        }
    }
    assert_eq!(
        uuids.len(),
        1,
        "the alert id is the same however the record arrived"
    );
}

#[test]
fn stratus_red_team_gives_the_iam_user_and_the_federated_user() {
    let paths = files("cloudtrail/stratus-red-team");
    assert_eq!(paths.len(), 35);
    let whole = read_all(&paths);
    let lines: Vec<Vec<u8>> = paths.iter().flat_map(as_lines).collect();
    assert_eq!(lines.len(), 310);
    for backend in ALL {
        for (how, inputs) in [("files", &whole), ("lines", &lines)] {
            let (alerts, _) = alerts(backend, inputs);
            let mut types: Vec<&str> = alerts.iter().map(|a| a.identity_type.as_str()).collect();
            types.sort();
            assert_eq!(
                types,
                vec!["FederatedUser", "IAMUser"],
                "[{} {how}]",
                backend.name()
            );
        }
    }
}

#[test]
fn panther_events_pass_and_the_one_without_an_arn_gives_no_alert() {
    let path = shared_data().join("rule-tests/panther/panther_getcalleridentity_events.jsonl");
    let text = std::fs::read_to_string(&path).expect("panther events");
    let lines: Vec<Vec<u8>> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.as_bytes().to_vec())
        .collect();
    assert_eq!(lines.len(), 4);
    for backend in ALL {
        let (alerts, stats) = alerts(backend, &lines);
        let terms: BTreeSet<String> = alerts.iter().flat_map(|a| a.terms.clone()).collect();
        assert_eq!(
            terms,
            BTreeSet::from([
                "arn:aws:iam::123456789012:user/compromised-user".to_owned(),
                "arn:aws:iam::187901811700:user/exposed.user".to_owned(),
            ]),
            "[{}] the admin-user event has no ARN",
            backend.name()
        );
        let stat = |k: &str| stats.iter().find(|(n, _)| n == k).map(|(_, v)| *v);
        assert_eq!(stat("no_term"), Some(1));
        assert_eq!(stat("records"), Some(4));
    }
}

/// The example exception export, as settings.
fn terraform_exception() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/exceptions/automation-user-agents.ndjson");
    let text = std::fs::read_to_string(path).expect("example exceptions");
    newterms_host::settings_text(
        &newterms::Settings::default().with_kibana_exceptions(&[text], &Default::default()),
    )
    .expect("settings")
}

#[test]
fn invictus_ir_with_the_terraform_exception_alerts_on_the_first_other_call() {
    let settings = terraform_exception();
    let lines: Vec<Vec<u8>> = files("cloudtrail/invictus-ir")
        .iter()
        .flat_map(as_lines)
        .collect();
    for backend in ALL {
        let mut d = backend.open("", &settings).expect("rule with exceptions");
        let outs: Vec<Out> = d.run(&lines).into_iter().flatten().collect();
        assert_eq!(outs.len(), 1, "[{}]", backend.name());
        let Out::Emit(text) = &outs[0] else {
            panic!("{outs:?}")
        };
        let doc: Value = serde_json::from_str(text).expect("alert");
        assert_eq!(
            doc["eventTime"],
            "2023-07-10T12:25:05Z",
            "[{}]",
            backend.name()
        );
        assert!(doc["userAgent"]
            .as_str()
            .is_some_and(|u| !u.contains("Terraform")));
        let stats = d.stats();
        let stat = |k: &str| stats.iter().find(|(n, _)| n == k).map(|(_, v)| *v);
        assert_eq!(
            stat("excepted"),
            Some(13),
            "[{}] the 13 Terraform calls",
            backend.name()
        );
        assert_eq!(stat("matched"), Some(1));
    }
    // Per item: the Terraform item excepted all 13.
    let mut native = newterms::Detector::from_config("", &settings).expect("rule");
    for l in &lines {
        native.process_collect(l);
    }
    let counts = native.exception_counts();
    assert_eq!(counts[0], ("terraform".to_owned(), 13));
    let mut session = newterms_host::Session::open(crate::backend::runtime(), "", &settings)
        .expect("instance")
        .expect("rule");
    session.process_batch(&lines).expect("batch");
    assert_eq!(session.exception_counts().expect("counts"), counts);
}

/// The shared CloudTrail records, invictus-ir's then stratus-red-team's, one a line.
pub fn cloudtrail_lines() -> Vec<Vec<u8>> {
    let mut lines: Vec<Vec<u8>> = files("cloudtrail/invictus-ir")
        .iter()
        .flat_map(as_lines)
        .collect();
    lines.extend(
        files("cloudtrail/stratus-red-team")
            .iter()
            .flat_map(as_lines),
    );
    lines
}
