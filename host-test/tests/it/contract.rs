//! Runs `tests/contract.toml` through every back end: the back ends must agree byte for
//! byte, and each case must produce what it states.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::Value;

use crate::backend::{Backend, Out, ALL};
use crate::json_field;

#[derive(Debug, Deserialize)]
struct Table {
    case: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    clause: String,
    #[serde(default)]
    rule_replace: Vec<(String, String)>,
    #[serde(default)]
    rule_append: String,
    rule: Option<String>,
    /// A rule file under `host-test/tests/`, as the rule.
    rule_file: Option<String>,
    #[serde(default)]
    settings: String,
    /// KQL exception conditions, added to the settings as `exceptions`.
    #[serde(default)]
    exceptions: Vec<String>,
    /// Kibana exception-list exports, added to the settings as `kibana_exceptions`.
    #[serde(default)]
    kibana_exceptions: Vec<String>,
    /// Value lists for the exports' `type: list` entries, by list id.
    #[serde(default)]
    value_lists: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    inputs: Vec<Input>,
    #[serde(default)]
    expect: Vec<Expect>,
    #[serde(default)]
    stats: HashMap<String, u64>,
    config_error: Option<String>,
    #[serde(default)]
    config_contains: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Input {
    Text(String),
    Hex { hex: String },
}

impl Input {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Input::Text(s) => s.as_bytes().to_vec(),
            Input::Hex { hex } => (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex input"))
                .collect(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    alert: Option<Vec<String>>,
    #[serde(default)]
    fields: HashMap<String, toml::Value>,
    input: Option<usize>,
    record: Option<String>,
    error: Option<String>,
    contains: Option<String>,
}

fn load() -> Vec<Case> {
    let text = include_str!("../contract.toml");
    let table: Table = toml::from_str(text).expect("contract.toml parses");
    table.case
}

fn rule_text(case: &Case) -> String {
    if let Some(r) = &case.rule {
        return r.clone();
    }
    if let Some(f) = &case.rule_file {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests")
            .join(f);
        return std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: reading {}: {e}", case.name, path.display()));
    }
    let mut text = newterms::DEFAULT_RULE.to_owned();
    for (from, to) in &case.rule_replace {
        assert!(
            text.contains(from.as_str()),
            "{}: rule_replace text not found: {from:?}",
            case.name
        );
        text = text.replacen(from.as_str(), to, 1);
    }
    text + &case.rule_append
}

/// The case's settings, with its exceptions.
fn settings_text(case: &Case) -> String {
    let lists = newterms::Settings {
        exceptions: case.exceptions.clone(),
        kibana_exceptions: case.kibana_exceptions.clone(),
        value_lists: case.value_lists.clone(),
        ..Default::default()
    };
    if lists == newterms::Settings::default() {
        return case.settings.clone();
    }
    format!(
        "{}\n{}",
        case.settings,
        newterms_host::settings_text(&lists).expect("settings")
    )
}

/// Outputs (per input) and statistics of one back end, or its load error.
type Run = Result<(Vec<Vec<Out>>, Vec<(String, u64)>), crate::backend::LoadError>;

fn run(backend: Backend, case: &Case) -> Run {
    let mut d = backend.open(&rule_text(case), &settings_text(case))?;
    let inputs: Vec<Vec<u8>> = case.inputs.iter().map(Input::bytes).collect();
    let outs = d.run(&inputs);
    Ok((outs, d.stats()))
}

fn check(case: &Case, result: &Run, captures: &mut HashMap<String, String>) -> Result<(), String> {
    if let Some(key) = &case.config_error {
        let err = match result {
            Ok(_) => return Err("expected a load error, the rule loaded".into()),
            Err(e) => e,
        };
        let want = if key.is_empty() {
            None
        } else {
            Some(key.as_str())
        };
        if err.key.as_deref() != want {
            return Err(format!(
                "load error names {:?}, expected {want:?}: {}",
                err.key, err.message
            ));
        }
        for c in &case.config_contains {
            if !err.message.contains(c.as_str()) {
                return Err(format!("load error {:?} lacks {c:?}", err.message));
            }
        }
        return Ok(());
    }
    let (outs, stats) = result
        .as_ref()
        .map_err(|e| format!("load error: {}", e.message))?;
    let flat: Vec<&Out> = outs.iter().flatten().collect();
    if flat.len() != case.expect.len() {
        return Err(format!(
            "{} outputs, expected {}: {flat:#?}",
            flat.len(),
            case.expect.len()
        ));
    }
    for (i, (got, want)) in flat.iter().zip(&case.expect).enumerate() {
        check_output(case, got, want, captures).map_err(|e| format!("output {i}: {e}"))?;
    }
    let stats: HashMap<&str, u64> = stats.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    for (k, want) in &case.stats {
        let got = stats
            .get(k.as_str())
            .ok_or_else(|| format!("no counter {k}"))?;
        if got != want {
            return Err(format!(
                "counter {k} = {got}, expected {want}; all: {stats:?}"
            ));
        }
    }
    // The counters partition the records.
    let parts = [
        "prefiltered",
        "out_of_index",
        "unmatched",
        "excepted",
        "no_term",
        "suppressed",
        "alerted",
    ];
    let errors: u64 = stats
        .iter()
        .filter(|(k, _)| k.starts_with("errors."))
        .map(|(_, v)| v)
        .sum();
    let sum: u64 = parts.iter().map(|p| stats[p]).sum::<u64>() + errors;
    if sum != stats["records"] {
        return Err(format!("counters do not add up to records: {stats:?}"));
    }
    Ok(())
}

fn check_output(
    case: &Case,
    got: &Out,
    want: &Expect,
    captures: &mut HashMap<String, String>,
) -> Result<(), String> {
    if let Some(kind) = &want.error {
        let Out::Error { kind: k, message } = got else {
            return Err(format!("expected a {kind} error, got {got:?}"));
        };
        if k != kind {
            return Err(format!("error kind {k}, expected {kind}: {message}"));
        }
        if let Some(c) = &want.contains {
            if !message.contains(c.as_str()) {
                return Err(format!("error message {message:?} lacks {c:?}"));
            }
        }
        return Ok(());
    }
    let Out::Emit(text) = got else {
        return Err(format!("expected a record, got {got:?}"));
    };
    if let Some(n) = want.input {
        let input = case.inputs[n].bytes();
        if text.as_bytes() != input {
            return Err(format!("expected input {n} unchanged, got {text}"));
        }
    }
    if let Some(r) = &want.record {
        if text != r {
            return Err(format!("expected {r}, got {text}"));
        }
    }
    if let Some(terms) = &want.alert {
        let doc: Value =
            serde_json::from_str(text).map_err(|e| format!("alert is not JSON: {e}"))?;
        let got_terms = json_field(&doc, "kibana.alert.new_terms");
        if got_terms != Some(&Value::from(terms.clone())) {
            return Err(format!("new_terms {got_terms:?}, expected {terms:?}"));
        }
        if json_field(&doc, "event.kind") != Some(&Value::from("signal")) {
            return Err("event.kind is not signal".into());
        }
        for (path, want) in &want.fields {
            let got = json_field(&doc, path).ok_or_else(|| format!("alert has no {path}"))?;
            if let Some(name) = want.as_str().and_then(|s| s.strip_prefix('=')) {
                // A named capture: the same name must hold the same value within the case.
                let got = got.to_string();
                let seen = captures
                    .entry(name.to_owned())
                    .or_insert_with(|| got.clone());
                if *seen != got {
                    return Err(format!("{path} = {got}, but {name} was {seen}"));
                }
                continue;
            }
            let want = serde_json::to_value(want).map_err(|e| e.to_string())?;
            if *got != want {
                return Err(format!("{path} = {got}, expected {want}"));
            }
        }
        let distinct: std::collections::HashSet<_> = captures.values().collect();
        if distinct.len() != captures.len() {
            return Err(format!(
                "different names captured equal values: {captures:?}"
            ));
        }
    }
    Ok(())
}

#[test]
fn contract_table() {
    let cases = load();
    assert!(cases.len() >= 40, "the table has {} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let runs: Vec<(Backend, Run)> = ALL.iter().map(|b| (*b, run(*b, case))).collect();
        for (b, r) in &runs {
            let mut captures = HashMap::new();
            if let Err(e) = check(case, r, &mut captures) {
                failures.push(format!(
                    "[{}] {} ({}): {e}",
                    b.name(),
                    case.name,
                    case.clause
                ));
            }
        }
        // Every back end gives the same bytes.
        let (first_backend, first) = &runs[0];
        for (b, r) in &runs[1..] {
            let same = match (first, r) {
                (Ok(a), Ok(b)) => a == b,
                (Err(a), Err(b)) => a.key == b.key,
                _ => false,
            };
            if !same {
                failures.push(format!(
                    "{}: {} and {} differ:\n{first:#?}\n{r:#?}",
                    case.name,
                    first_backend.name(),
                    b.name()
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    export_for_js(&cases);
}

/// Writes every case with the core's answers to `target/contract-cases.json`, so the
/// JavaScript package and the component under jco are held to the same bytes
/// (`host-test/js/`).
fn export_for_js(cases: &[Case]) {
    let mut out = Vec::new();
    for case in cases {
        let settings: toml::Table = settings_text(case).parse().expect("settings TOML");
        let native = run(Backend::Native, case);
        let (outputs, stats, config_error) = match &native {
            Ok((outs, stats)) => (
                outs.iter()
                    .map(|per| {
                        per.iter()
                            .map(|o| match o {
                                Out::Emit(s) => serde_json::json!({ "emit": s }),
                                Out::Error { kind, message } => {
                                    serde_json::json!({ "error": { "kind": kind, "message": message } })
                                }
                            })
                            .collect::<Vec<_>>()
                    })
                    .collect::<Vec<_>>(),
                stats.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
                None,
            ),
            Err(e) => (Vec::new(), Default::default(), Some(e.key.clone().unwrap_or_default())),
        };
        out.push(serde_json::json!({
            "name": case.name,
            "rule": rule_text(case),
            "settings": settings,
            "settings_toml": settings_text(case),
            "inputs": case.inputs.iter().map(|i| base64(&i.bytes())).collect::<Vec<_>>(),
            "utf8": case.inputs.iter().all(|i| matches!(i, Input::Text(_))),
            "outputs": outputs,
            "stats": stats,
            "config_error": config_error,
        }));
    }
    let path =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/contract-cases.json");
    let text = serde_json::to_string_pretty(&out).expect("JSON");
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// Standard base64, for bytes in JSON.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn base64_known_vectors() {
    assert_eq!(base64(b""), "");
    assert_eq!(base64(b"f"), "Zg==");
    assert_eq!(base64(b"fo"), "Zm8=");
    assert_eq!(base64(b"foo"), "Zm9v");
    assert_eq!(base64(b"foob"), "Zm9vYg==");
}

/// The Fluent Bit module answers one record per call and carries errors in the record,
/// so it runs the cases where each input gives at most one output; there it must give
/// exactly what the core gives, statistics included. A rule that does not load makes it
/// pass records with the reason instead (checked in `fluentbit.rs`).
///
/// The module reads only what Fluent Bit writes (its prefilter relies on Fluent Bit's
/// encoder, `docs/contract.md` §3), so each input that is JSON is first written as Fluent
/// Bit would write it, and the core gets the same text. Where that changes an input, the
/// case's expectations (written for the original text) give way to the comparison alone.
#[test]
fn contract_table_through_the_fluent_bit_module() {
    let mut failures = Vec::new();
    let mut ran = 0;
    for mut case in load() {
        if case.config_error.is_some() {
            continue;
        }
        let mut rewritten = false;
        for input in &mut case.inputs {
            let bytes = input.bytes();
            if let Ok(value) = serde_json::from_slice::<serde_json::Value>(&bytes) {
                let written = newterms_host::fluent_bit_json(&value, false);
                rewritten |= written.as_bytes() != bytes;
                *input = Input::Text(written);
            }
        }
        let native = run(Backend::Native, &case);
        let Ok((outs, _)) = &native else {
            failures.push(format!("{}: native did not load", case.name));
            continue;
        };
        if outs.iter().any(|o| o.len() > 1) {
            continue;
        }
        ran += 1;
        let fb = run(Backend::FluentBit, &case);
        let mut captures = HashMap::new();
        if let Err(e) = match rewritten {
            true => Ok(()),
            false => check(&case, &fb, &mut captures),
        } {
            failures.push(format!("[fluentbit] {} ({}): {e}", case.name, case.clause));
        }
        match (&native, &fb) {
            (Ok(a), Ok(b)) => {
                let stats_b: HashMap<_, _> = b.1.iter().cloned().collect();
                let stats_a: HashMap<_, _> = a.1.iter().cloned().collect();
                if a.0 != b.0 || stats_a != stats_b {
                    failures.push(format!(
                        "{}: native and fluentbit differ:\n{a:#?}\n{b:#?}",
                        case.name
                    ));
                }
            }
            _ => failures.push(format!("{}: fluentbit did not load", case.name)),
        }
    }
    assert!(
        ran >= 35,
        "only {ran} cases ran through the Fluent Bit module"
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn the_table_covers_every_clause_of_the_contract() {
    let cases = load();
    let clauses: std::collections::HashSet<&str> = cases
        .iter()
        .map(|c| c.clause.split(':').next().unwrap_or(""))
        .collect();
    for section in [
        "inputs",
        "mapping",
        "query",
        "new terms",
        "output",
        "bad input",
        "configuration",
    ] {
        assert!(
            clauses.contains(section),
            "no case for the contract's {section} section"
        );
    }
}

/// Every case with the prefilter off gives the same outputs, and the same counters once
/// `prefiltered` is folded into `unmatched`.
#[test]
fn the_prefilter_never_changes_a_decision_in_the_table() {
    let mut compared = 0;
    for case in load() {
        let (rule, settings) = (rule_text(&case), settings_text(&case));
        let (Ok(mut on), Ok(off)) = (
            newterms::Detector::from_config(&rule, &settings),
            newterms::Detector::from_config(&rule, &settings),
        ) else {
            continue;
        };
        let mut off = off.without_prefilter();
        for input in &case.inputs {
            let bytes = input.bytes();
            assert_eq!(
                on.process_collect(&bytes),
                off.process_collect(&bytes),
                "{}",
                case.name
            );
        }
        let (a, b) = (on.stats(), off.stats());
        // A record the prefilter rejects may be one the parse would have placed outside
        // the rule's indices (and counted as of an unknown index).
        assert_eq!(
            a.prefiltered + a.unmatched + a.out_of_index,
            b.unmatched + b.out_of_index,
            "{}",
            case.name
        );
        assert!(a.index_unknown <= b.index_unknown, "{}", case.name);
        assert_eq!(
            newterms::Stats {
                prefiltered: 0,
                unmatched: 0,
                out_of_index: 0,
                index_unknown: 0,
                ..a
            },
            newterms::Stats {
                unmatched: 0,
                out_of_index: 0,
                index_unknown: 0,
                ..b
            },
            "{}",
            case.name
        );
        compared += 1;
    }
    assert!(compared >= 50, "{compared}");
}
