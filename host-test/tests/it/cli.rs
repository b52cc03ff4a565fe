//! The `newterms` command, run as a user runs it.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use crate::data::{as_lines, files};

fn newterms(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_newterms"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn newterms");
    let mut pipe = child.stdin.take().expect("stdin");
    let input = stdin.unwrap_or_default().to_vec();
    let writer = std::thread::spawn(move || {
        let _ = pipe.write_all(&input);
    });
    let out = child.wait_with_output().expect("wait");
    writer.join().expect("writer");
    out
}

fn stdout_lines(o: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("NDJSON output"))
        .collect()
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("newterms-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    dir.join(name)
}

fn arns(o: &Output) -> Vec<String> {
    stdout_lines(o)
        .iter()
        .map(|d| {
            d["kibana.alert.new_terms"][0]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect()
}

#[test]
fn run_on_delivery_files_ndjson_gzip_and_stdin() {
    let paths = files("cloudtrail/invictus-ir");
    let args: Vec<&str> = std::iter::once("run")
        .chain(paths.iter().map(|p| p.to_str().expect("utf8 path")))
        .collect();
    let o = newterms(&args, None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(arns(&o), vec!["arn:aws:iam::123837392027:user/bert-jan"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("records=2900") && stderr.contains("alerts=1"),
        "{stderr}"
    );

    let mut ndjson = Vec::new();
    for p in &paths {
        for line in as_lines(p) {
            ndjson.extend_from_slice(&line);
            ndjson.push(b'\n');
        }
    }
    let plain = tmp("invictus.ndjson");
    std::fs::write(&plain, &ndjson).expect("write");
    let gz = tmp("invictus.ndjson.gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(&ndjson).expect("gzip");
    std::fs::write(&gz, enc.finish().expect("gzip")).expect("write");
    for f in [&plain, &gz] {
        let o = newterms(&["run", f.to_str().expect("path")], None);
        assert!(o.status.success());
        assert_eq!(
            arns(&o),
            vec!["arn:aws:iam::123837392027:user/bert-jan"],
            "{}",
            f.display()
        );
    }
    let o = newterms(&["run"], Some(&ndjson));
    assert_eq!(
        arns(&o),
        vec!["arn:aws:iam::123837392027:user/bert-jan"],
        "stdin"
    );
}

#[test]
fn errors_go_to_the_errors_file_with_their_line() {
    let input = b"{\"eventSource\":\"sts.amazonaws.com\",\"eventName\":\"GetCallerIdentity\",\n\
{\"eventTime\":\"2026-01-01T00:00:00Z\",\"eventSource\":\"sts.amazonaws.com\",\"eventName\":\"GetCallerIdentity\",\"userIdentity\":{\"arn\":\"arn:aws:iam::1:user/a\"}}\n";
    let errors = tmp("errors.ndjson");
    let o = newterms(
        &["run", "--errors", errors.to_str().expect("path"), "-"],
        Some(input),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // The first line is not a complete JSON value, so stdin is read as one document.
    let errs = std::fs::read_to_string(&errors).expect("errors file");
    let first: serde_json::Value =
        serde_json::from_str(errs.lines().next().expect("an error")).expect("JSON");
    assert_eq!(first["kind"], "invalid-json");
    assert_eq!(first["source"], "stdin");

    let input = b"{\"eventTime\":\"2026-01-01T00:00:00Z\",\"eventSource\":\"sts.amazonaws.com\",\"eventName\":\"GetCallerIdentity\",\"userIdentity\":{\"arn\":\"arn:aws:iam::1:user/a\"}}\n\
{\"eventSource\":\"sts.amazonaws.com\",\"eventName\":\"GetCallerIdentity\",\"userIdentity\":{\"arn\":\"arn:aws:iam::1:user/b\"}}\n\
not json\n";
    let o = newterms(
        &["run", "--errors", errors.to_str().expect("path")],
        Some(input),
    );
    assert_eq!(arns(&o), vec!["arn:aws:iam::1:user/a"]);
    let errs: Vec<serde_json::Value> = std::fs::read_to_string(&errors)
        .expect("errors file")
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert_eq!(errs.len(), 2);
    assert_eq!(
        (errs[0]["line"].as_u64(), errs[0]["kind"].as_str()),
        (Some(2), Some("bad-time"))
    );
    assert_eq!(
        (errs[1]["line"].as_u64(), errs[1]["kind"].as_str()),
        (Some(3), Some("invalid-json"))
    );

    // Without --errors: a count and the first error on stderr.
    let o = newterms(&["run"], Some(input));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("2 records had errors") && stderr.contains("stdin:2: bad-time"),
        "{stderr}"
    );
}

#[test]
fn options_reach_the_detector() {
    let input = b"{\"eventTime\":\"2026-01-01T00:00:00Z\",\"eventSource\":\"sts.amazonaws.com\",\"eventName\":\"GetCallerIdentity\",\"userIdentity\":{\"arn\":\"arn:aws:iam::1:user/a\"}}\n\
{\"eventTime\":\"2026-01-01T00:00:00Z\",\"eventSource\":\"ec2.amazonaws.com\",\"eventName\":\"DescribeInstances\"}\n";
    let o = newterms(&["run", "--output", "annotate"], Some(input));
    assert_eq!(stdout_lines(&o).len(), 2);
    let o = newterms(&["run", "--output", "passthrough"], Some(input));
    let lines = stdout_lines(&o);
    assert_eq!(lines.len(), 1);
    assert!(lines[0].get("kibana.alert.uuid").is_none());
    let o = newterms(&["run", "--max-record-bytes", "50"], Some(input));
    assert!(String::from_utf8_lossy(&o.stderr).contains("too-large"));
}

#[test]
fn check_rule_and_bad_arguments() {
    let rule = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/rules/aws-sts-getcalleridentity-first-time.toml");
    let o = newterms(&["check-rule", rule.to_str().expect("path")], None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    let bad = tmp("bad-rule.toml");
    let text = std::fs::read_to_string(&rule)
        .expect("rule")
        .replace("now-10d", "yesterday");
    std::fs::write(&bad, text).expect("write");
    let o = newterms(&["check-rule", bad.to_str().expect("path")], None);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).contains("rule.new_terms.history_window_start"));
    let o = newterms(&["run", "--rule", bad.to_str().expect("path")], Some(b""));
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        newterms(&["run", "--output", "xml"], Some(b""))
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        newterms(&["run", "--frobnicate"], Some(b"")).status.code(),
        Some(2)
    );
    assert_eq!(
        newterms(&["run", "/nonexistent/file.json"], None)
            .status
            .code(),
        Some(2)
    );
    assert_eq!(newterms(&["bogus"], None).status.code(), Some(2));
    assert!(newterms(&["run", "--help"], None).status.success());
    assert!(newterms(&["--help"], None).status.success());
}

#[test]
fn the_host_refuses_an_oversized_line_before_the_guest() {
    let errors = tmp("refused.ndjson");
    let long = format!(
        "{{\"eventSource\":\"sts.amazonaws.com\",\"eventName\":\"GetCallerIdentity\",\"pad\":\"{}\"}}\n",
        "x".repeat(2000)
    );
    let ok = "{\"eventTime\":\"2026-01-01T00:00:00Z\",\"eventSource\":\"sts.amazonaws.com\",\"eventName\":\"GetCallerIdentity\",\"userIdentity\":{\"arn\":\"arn:aws:iam::1:user/a\"}}\n";
    let input = format!("{ok}{long}");
    let o = newterms(
        &[
            "run",
            "--max-record-bytes",
            "1000",
            "--errors",
            errors.to_str().expect("path"),
        ],
        Some(input.as_bytes()),
    );
    assert_eq!(arns(&o), vec!["arn:aws:iam::1:user/a"]);
    let errs = std::fs::read_to_string(&errors).expect("errors");
    assert!(
        errs.contains("refused by the host") && errs.contains("\"line\":2"),
        "{errs}"
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("records=1 "),
        "the guest never saw it: {stderr}"
    );
}

#[test]
fn exceptions_on_the_command_line() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let rule = root.join("examples/rules/aws-sts-getcalleridentity-first-time.toml");
    let ua = root.join("examples/exceptions/automation-user-agents.ndjson");
    let arn = root.join("examples/exceptions/automation-arn.ndjson");
    let o = newterms(
        &[
            "check-rule",
            rule.to_str().expect("path"),
            "--exceptions",
            ua.to_str().expect("path"),
            "--exceptions",
            arn.to_str().expect("path"),
        ],
        None,
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("exception terraform: Terraform user agent")
            && out.contains("4 exception items"),
        "{out}"
    );

    let paths = files("cloudtrail/invictus-ir");
    let mut args = vec!["run", "--exceptions", ua.to_str().expect("path")];
    args.extend(paths.iter().map(|p| p.to_str().expect("path")));
    let o = newterms(&args, None);
    let lines = stdout_lines(&o);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["eventTime"], "2023-07-10T12:25:05Z");
    assert!(String::from_utf8_lossy(&o.stderr).contains("excepted=13"));

    // A value list is read from beside its export; without it, the item is named.
    let dir = tmp("value-list");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let list_export = dir.join("arns.ndjson");
    std::fs::copy(
        root.join("examples/exceptions/automation-arns-list.ndjson"),
        &list_export,
    )
    .expect("copy");
    let _ = std::fs::remove_file(dir.join("automation-arns.txt"));
    let o = newterms(
        &["run", "--exceptions", list_export.to_str().expect("path")],
        Some(b""),
    );
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("item automation-arns") && err.contains("automation-arns.txt"),
        "{err}"
    );
    std::fs::write(
        dir.join("automation-arns.txt"),
        "arn:aws:iam::123456789012:user/ci-deployer\narn:aws:iam::123837392027:user/bert-jan\n",
    )
    .expect("write");
    let mut args = vec!["run", "--exceptions", list_export.to_str().expect("path")];
    args.extend(paths.iter().map(|p| p.to_str().expect("path")));
    let o = newterms(&args, None);
    assert_eq!(stdout_lines(&o).len(), 0, "bert-jan is in the list");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("excepted=14"), "{err}");
    let o = newterms(
        &[
            "check-rule",
            rule.to_str().expect("path"),
            "--exceptions",
            list_export.to_str().expect("path"),
        ],
        None,
    );
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("exception automation-arns"));

    let bad = tmp("bad-exceptions.ndjson");
    std::fs::write(
        &bad,
        "{\"list_id\":\"l\"}\n{\"item_id\":\"i\",\"entries\":[{\"field\":\"a\",\"type\":\"exists\",\"operator\":\"maybe\"}]}\n",
    )
    .expect("write");
    let o = newterms(
        &["run", "--exceptions", bad.to_str().expect("path")],
        Some(b""),
    );
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("line 2") && err.contains("entries[0].operator"),
        "{err}"
    );
}

#[test]
fn packs_from_directories_and_check_rule_per_file() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = tmp("pack");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    for (name, text) in newterms_host::pack::rules(6) {
        std::fs::write(dir.join(name), text).expect("write");
    }
    let seed = root.join("examples/rules/aws-sts-getcalleridentity-first-time.toml");
    let sample = root.join("examples/data/cloudtrail-sample.ndjson");
    let ecs = tmp("pack-stream.ndjson");
    std::fs::write(&ecs, newterms_host::pack::stream(3, 2_000).join("\n")).expect("write");

    // The directory and the built-in rule's file together: one pack.
    let o = newterms(
        &[
            "run",
            "--rule",
            dir.to_str().expect("path"),
            "--rule",
            seed.to_str().expect("path"),
            ecs.to_str().expect("path"),
            sample.to_str().expect("path"),
        ],
        None,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut by_rule = std::collections::BTreeMap::<String, usize>::new();
    for a in stdout_lines(&o) {
        let id = crate::json_field(&a, "kibana.alert.rule.rule_id")
            .and_then(|v| v.as_str())
            .expect("rule id")
            .to_owned();
        *by_rule.entry(id).or_default() += 1;
    }
    // The same files, one rule at a time.
    let mut paths: Vec<PathBuf> =
        newterms_host::rule_files(std::slice::from_ref(&dir)).expect("files");
    paths.push(seed.clone());
    for p in &paths {
        let o = newterms(
            &[
                "run",
                "--rule",
                p.to_str().expect("path"),
                ecs.to_str().expect("path"),
                sample.to_str().expect("path"),
            ],
            None,
        );
        let text = std::fs::read_to_string(p).expect("rule");
        let id = newterms::Rule::parse(&text, "").expect("rule").rule_id;
        assert_eq!(
            stdout_lines(&o).len(),
            by_rule.get(&id).copied().unwrap_or(0),
            "{}",
            p.display()
        );
    }
    assert!(by_rule.len() >= 5, "{by_rule:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("newterms: rule nt-generated-000: matched="),
        "the pack's run reports each rule: {err}"
    );

    // check-rule over a directory: per file, a summary, and status 1 for a bad one.
    std::fs::write(dir.join("zz-bad.toml"), "[rule]\ntype = \"eql\"\n").expect("write");
    let o = newterms(&["check-rule", dir.to_str().expect("path")], None);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("nt-generated-005.toml: ok: Generated rule 5"),
        "{out}"
    );
    assert!(out.contains("zz-bad.toml: "), "{out}");
    assert!(out.contains("7 rules: 6 loaded, 1 did not"), "{out}");
    std::fs::remove_file(dir.join("zz-bad.toml")).expect("rm");
    let o = newterms(&["check-rule", dir.to_str().expect("path")], None);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("run together as a pack"));
}
