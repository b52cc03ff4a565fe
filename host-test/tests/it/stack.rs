//! The Fluent Bit module's calls fit WAMR's default interpreter stack (8 KiB) with room to
//! spare, whatever the record: measured with the module instrumented to count WAMR's
//! frames (`newterms_host::wamr_stack`), on real data and on the records that need the most.

use newterms_host::{wamr_stack, FluentBitModule, FLUENTBIT_MODULE};

use crate::backend::TempDir;
use crate::data::{as_lines, files};

/// Fluent Bit's default `Wasm_Stack_Size`.
const FLUENT_BIT_DEFAULT: u32 = 8192;

fn stress_records() -> Vec<(String, Vec<u8>)> {
    let mut v = Vec::new();
    let alert = |arn: &str, extra: &str| {
        format!(
            r#"{{"eventTime":"2026-01-01T00:00:00Z","eventSource":"sts.amazonaws.com","eventName":"GetCallerIdentity","userIdentity":{{"type":"IAMUser","arn":"{arn}"}}{extra}}}"#
        )
        .into_bytes()
    };
    v.push(("an alert".into(), alert("arn:aws:iam::1:user/a", "")));
    let deep_unread = format!(
        r#","requestParameters":{}1{}"#,
        "[{\"a\":".repeat(5000),
        "}]".repeat(5000)
    );
    v.push((
        "an alert nested 10,000 deep".into(),
        alert("arn:aws:iam::1:user/b", &deep_unread),
    ));
    let deep_read = format!(
        r#"{{"eventTime":"2026-01-01T00:00:00Z","eventSource":"sts.amazonaws.com","eventName":"GetCallerIdentity","userIdentity":{{"type":"IAMUser","arn":{}"arn:aws:iam::1:user/c"{}}}}}"#,
        "[".repeat(120),
        "]".repeat(120)
    );
    v.push((
        "a read field nested 120 deep".into(),
        deep_read.into_bytes(),
    ));
    v.push((
        "not JSON".into(),
        b"{\"eventName\":\"GetCallerIdentity\",".to_vec(),
    ));
    v.push((
        "an escaped record".into(),
        br#"{"eventTime":"2026-01-01T00:00:00Z","eventSource":"sts\u002eamazonaws.com","eventName":"\u0047etCallerIdentity","userIdentity":{"type":"IAMUser","arn":"arn:aws:iam::1:user/\ud83d\ude00"}}"#.to_vec(),
    ));
    v
}

/// The most stack each step needs: loading the configuration in `dir` (the first call),
/// then each of `records`.
fn measure(
    compiled: &FluentBitModule,
    dir: &std::path::Path,
    records: &[Vec<u8>],
) -> (newterms_host::FluentBit, u32, u32) {
    let mut fb = compiled
        .instantiate("newterms_filter", Some(dir))
        .expect("instantiating");
    fb.reset_stack_need().unwrap();
    fb.call(b"t", (0, 0), Some(b"{}")).unwrap();
    let load = fb.stack_need().unwrap();
    let mut most = 0;
    for r in records {
        fb.reset_stack_need().unwrap();
        fb.call(b"t", (0, 0), Some(r)).unwrap();
        most = most.max(fb.stack_need().unwrap());
    }
    (fb, load, most)
}

#[test]
fn every_call_fits_the_default_stack() {
    let module = wamr_stack::instrument(FLUENTBIT_MODULE).expect("instrumenting the module");
    let compiled = FluentBitModule::compile(&module).expect("compiling");
    let invictus: Vec<Vec<u8>> = files("cloudtrail/invictus-ir")
        .iter()
        .flat_map(as_lines)
        .collect();
    let dir = TempDir::new("stack");
    let (mut fb, load, data) = measure(&compiled, &dir.0, &invictus);
    let mut report = vec![
        ("the first call (loading the rule)".to_owned(), load),
        ("the invictus-ir records".into(), data),
    ];
    for (name, record) in stress_records() {
        fb.reset_stack_need().unwrap();
        fb.call(b"t", (0, 0), Some(&record)).unwrap();
        report.push((name, fb.stack_need().unwrap()));
    }
    fb.reset_stack_need().unwrap();
    fb.stats().unwrap();
    report.push(("newterms_stats".into(), fb.stack_need().unwrap()));
    // A pack of rules, loaded from a directory, over records its rules match.
    let pack = crate::backend::rules_dir("stack-pack", "", &newterms_host::pack::rules(60));
    let stream: Vec<Vec<u8>> = newterms_host::pack::stream(7, 3_000)
        .into_iter()
        .map(String::into_bytes)
        .collect();
    let (_, load, data) = measure(&compiled, &pack.0, &stream);
    report.push(("loading a pack of 60 rules".into(), load));
    report.push(("a pack's records".into(), data));
    // Every Elastic new_terms rule as one pack, when they are at hand.
    if let Some(rules) = crate::elastic::elastic_rules() {
        let pack = crate::backend::rules_dir("stack-elastic", "", &rules);
        let (_, load, data) = measure(&compiled, &pack.0, &invictus);
        report.push((
            format!(
                "loading Elastic's {} new_terms rules as one pack",
                rules.len()
            ),
            load,
        ));
        report.push(("the Elastic pack over invictus-ir".into(), data));
    }
    for (name, need) in &report {
        eprintln!("WAMR stack: {need:5} bytes: {name}");
    }
    let most = report.iter().map(|(_, n)| *n).max().unwrap_or(0);
    let said = newterms::host::STACK_NEED;
    assert!(
        most <= said,
        "a call needs {most} bytes of WAMR stack, more than the {said} the module says it needs"
    );
    assert!(
        said <= FLUENT_BIT_DEFAULT * 7 / 8,
        "the module needs {said} bytes: over 7/8 of Fluent Bit's default {FLUENT_BIT_DEFAULT}"
    );
}
