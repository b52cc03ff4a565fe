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

#[test]
fn every_call_fits_the_default_stack() {
    let module = wamr_stack::instrument(FLUENTBIT_MODULE).expect("instrumenting the module");
    let compiled = FluentBitModule::compile(&module).expect("compiling");
    let dir = TempDir::new("stack");
    let mut fb = compiled
        .instantiate("newterms_filter", Some(&dir.0))
        .expect("instantiating");
    fb.reset_stack_need().unwrap();
    fb.call(b"t", (0, 0), Some(b"{}")).unwrap();
    let load = fb.stack_need().unwrap();
    let mut report = vec![("the first call (loading the rule)".to_owned(), load)];
    let mut data = 0;
    for path in files("cloudtrail/invictus-ir") {
        for line in as_lines(&path) {
            fb.reset_stack_need().unwrap();
            fb.call(b"t", (0, 0), Some(&line)).unwrap();
            data = data.max(fb.stack_need().unwrap());
        }
    }
    report.push(("the invictus-ir records".into(), data));
    for (name, record) in stress_records() {
        fb.reset_stack_need().unwrap();
        fb.call(b"t", (0, 0), Some(&record)).unwrap();
        report.push((name, fb.stack_need().unwrap()));
    }
    fb.reset_stack_need().unwrap();
    fb.stats().unwrap();
    report.push(("newterms_stats".into(), fb.stack_need().unwrap()));
    // A pack of rules, loaded from a directory, over real data.
    let pack = TempDir::new("stack-pack");
    std::fs::create_dir_all(pack.0.join("rules")).unwrap();
    for (name, text) in newterms_host::pack::rules(60) {
        std::fs::write(pack.0.join("rules").join(name), text).unwrap();
    }
    let mut fb = compiled
        .instantiate("newterms_filter", Some(&pack.0))
        .expect("instantiating");
    fb.reset_stack_need().unwrap();
    fb.call(b"t", (0, 0), Some(b"{}")).unwrap();
    report.push((
        "loading a pack of 60 rules".into(),
        fb.stack_need().unwrap(),
    ));
    let mut data = 0;
    for line in newterms_host::pack::stream(7, 3_000) {
        fb.reset_stack_need().unwrap();
        fb.call(b"t", (0, 0), Some(line.as_bytes())).unwrap();
        data = data.max(fb.stack_need().unwrap());
    }
    report.push(("a pack's records".into(), data));
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
