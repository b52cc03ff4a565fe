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
    // The first line is not a whole JSON value: an error for that line, and the record
    // after it is read.
    assert_eq!(arns(&o), vec!["arn:aws:iam::1:user/a"]);
    let errs = std::fs::read_to_string(&errors).expect("errors file");
    let first: serde_json::Value =
        serde_json::from_str(errs.lines().next().expect("an error")).expect("JSON");
    assert_eq!(first["kind"], "invalid-json");
    assert_eq!(first["source"], "stdin");
    assert_eq!(first["line"], 1);

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

/// `--learn` builds a baseline without an alert; the next run from it alerts only on what
/// the archive did not hold.
#[test]
fn learn_builds_a_baseline_without_alerts() {
    let archive = crate::data::shared_data().join("cloudtrail/invictus-ir");
    let archive = archive.to_str().expect("utf8");
    let state = tmp("learned.state");
    let _ = std::fs::remove_file(&state);
    let refused = newterms(&["run", "--learn", archive], None);
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--learn needs --state"));
    let state_arg = state.to_str().expect("utf8");
    let learned = newterms(
        &["run", "-q", "--learn", "--state", state_arg, archive],
        None,
    );
    assert!(
        learned.status.success(),
        "{}",
        String::from_utf8_lossy(&learned.stderr)
    );
    assert!(learned.stdout.is_empty(), "no alert while learning");
    let said = String::from_utf8_lossy(&learned.stderr);
    assert!(
        said.contains("alerts=0") && said.contains("learned=1"),
        "{said}"
    );
    // The same records again, and a new identity after them: only the new one alerts.
    let mut input = invictus_ndjson();
    input.extend_from_slice(b"{\"eventTime\":\"2023-07-10T13:30:00Z\",\"eventSource\":\"sts.amazonaws.com\",\"eventName\":\"GetCallerIdentity\",\"userIdentity\":{\"type\":\"IAMUser\",\"arn\":\"arn:aws:iam::1:user/new\"}}\n");
    let after = newterms(&["run", "--state", state_arg], Some(&input));
    assert!(
        after.status.success(),
        "{}",
        String::from_utf8_lossy(&after.stderr)
    );
    assert_eq!(arns(&after), vec!["arn:aws:iam::1:user/new"]);
    // A learning period: bert-jan's first call starts it, and he is learned.
    let period = newterms(&["run", "--learning-period", "30m"], Some(&input));
    assert_eq!(arns(&period), vec!["arn:aws:iam::1:user/new"]);
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
fn an_oversized_record_is_an_error_for_its_line() {
    let errors = tmp("refused.ndjson");
    let long = format!(
        "{{\"eventSource\":\"sts.amazonaws.com\",\"eventName\":\"GetCallerIdentity\",\"pad\":\"{}\"}}\n",
        "x".repeat(2000)
    );
    let ok = "{\"eventTime\":\"2026-01-01T00:00:00Z\",\"eventSource\":\"sts.amazonaws.com\",\"eventName\":\"GetCallerIdentity\",\"userIdentity\":{\"arn\":\"arn:aws:iam::1:user/a\"}}\n";
    let input = format!("{ok}{long}{}", ok.replace("user/a", "user/b"));
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
    assert_eq!(
        arns(&o),
        vec!["arn:aws:iam::1:user/a", "arn:aws:iam::1:user/b"]
    );
    let errs = std::fs::read_to_string(&errors).expect("errors");
    assert!(
        errs.contains("\"kind\":\"too-large\"") && errs.contains("\"line\":2"),
        "{errs}"
    );
}

/// Invictus' records as NDJSON, and the alert they give.
fn invictus_ndjson() -> Vec<u8> {
    let mut ndjson = Vec::new();
    for p in &files("cloudtrail/invictus-ir") {
        for line in as_lines(p) {
            ndjson.extend_from_slice(&line);
            ndjson.push(b'\n');
        }
    }
    ndjson
}

const INVICTUS_ALERT: &str = "arn:aws:iam::123837392027:user/bert-jan";

/// `newterms run --errors ERRORS FILE`.
fn run_keeping_errors(file: &std::path::Path, errors: &std::path::Path) -> Output {
    newterms(
        &[
            "run",
            "--errors",
            errors.to_str().expect("path"),
            file.to_str().expect("path"),
        ],
        None,
    )
}

fn summary(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_bad_first_line_costs_that_line_and_nothing_else() {
    let ndjson = invictus_ndjson();
    let records = ndjson
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .count();
    for bad in [
        &b"{\"eventTime\":\"2023-07-10T11:45:00Z\",\"eventSo"[..],
        b"{\"Records\":[{\"a\":",
        b"<html>",
    ] {
        let mut input = bad.to_vec();
        input.push(b'\n');
        input.extend_from_slice(&ndjson);
        let file = tmp("bad-first.ndjson");
        std::fs::write(&file, &input).expect("write");
        let errors = tmp("bad-first.errors");
        let o = run_keeping_errors(&file, &errors);
        assert!(o.status.success(), "{}", summary(&o));
        assert_eq!(arns(&o), vec![INVICTUS_ALERT]);
        assert!(
            summary(&o).contains(&format!("records={records} ")),
            "{}",
            summary(&o)
        );
        let errs = std::fs::read_to_string(&errors).expect("errors");
        assert_eq!(errs.lines().count(), 1, "{errs}");
        assert!(
            errs.contains("\"line\":1") && errs.contains("invalid-json"),
            "{errs}"
        );
    }
}

#[test]
fn documents_are_read_whatever_their_layout() {
    let paths = files("cloudtrail/invictus-ir");
    let records: usize = paths.iter().map(|p| as_lines(p).len()).sum();
    // Pretty-printed delivery files, one after another in one file, and an array.
    let mut several = Vec::new();
    let mut array = Vec::new();
    for (i, p) in paths.iter().enumerate() {
        let doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(p).expect("read")).expect("JSON");
        match i % 2 {
            0 => several.extend(serde_json::to_vec_pretty(&doc).expect("json")),
            _ => several.extend(serde_json::to_vec(&doc).expect("json")),
        }
        several.push(b'\n');
        array.extend(doc["Records"].as_array().expect("Records").iter().cloned());
    }
    let array = serde_json::to_vec_pretty(&serde_json::Value::Array(array)).expect("json");
    for (name, bytes) in [("several.json", several), ("array.json", array)] {
        let file = tmp(name);
        std::fs::write(&file, bytes).expect("write");
        let o = newterms(&["run", file.to_str().expect("path")], None);
        assert!(o.status.success(), "{}", summary(&o));
        assert_eq!(arns(&o), vec![INVICTUS_ALERT], "{name}");
        assert!(
            summary(&o).contains(&format!("records={records} ")) && !summary(&o).contains("errors"),
            "{name}: {}",
            summary(&o)
        );
    }
}

#[test]
fn a_truncated_gzip_stream_keeps_every_record_before_the_cut() {
    let ndjson = invictus_ndjson();
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(&ndjson).expect("gzip");
    let gz = enc.finish().expect("gzip");
    let cut = &gz[..gz.len() * 3 / 5];
    // What a reader gets of the cut stream before the error.
    let mut got = Vec::new();
    let mut dec = flate2::read::GzDecoder::new(cut);
    let mut buf = [0u8; 4096];
    loop {
        match std::io::Read::read(&mut dec, &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let whole = got.iter().filter(|&&b| b == b'\n').count();
    assert!(whole > 100 && whole < 2900, "{whole}");
    let file = tmp("cut.ndjson.gz");
    std::fs::write(&file, cut).expect("write");
    let errors = tmp("cut.errors");
    let o = run_keeping_errors(&file, &errors);
    assert!(o.status.success(), "{}", summary(&o));
    let text = summary(&o);
    let records: usize = text
        .split_whitespace()
        .find_map(|w| w.strip_prefix("records="))
        .and_then(|n| n.parse().ok())
        .expect("records in the summary");
    // Every whole line, and the partial last one only if it happened to be whole JSON.
    assert!(
        records == whole || records == whole + 1,
        "{records} vs {whole}: {text}"
    );
    assert!(text.contains("errors.truncated=1"), "{text}");
    let errs = std::fs::read_to_string(&errors).expect("errors");
    assert!(
        errs.contains("the gzip stream broke off after line"),
        "{errs}"
    );
}

#[test]
fn standard_input_is_read_as_it_comes() {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_newterms"))
        .args(["run", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn newterms");
    let mut stdin = child.stdin.take().expect("stdin");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = std::io::BufReader::new(stdout).lines();
        while let Some(Ok(line)) = lines.next() {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let record = |user: &str| {
        format!("{{\"eventTime\":\"2026-01-01T00:00:00Z\",\"eventSource\":\"sts.amazonaws.com\",\"eventName\":\"GetCallerIdentity\",\"userIdentity\":{{\"arn\":\"arn:aws:iam::1:user/{user}\"}}}}\n")
    };
    // The alert comes while standard input is still open.
    for user in ["a", "b"] {
        stdin.write_all(record(user).as_bytes()).expect("write");
        stdin.flush().expect("flush");
        let alert = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("an alert before the end of the input");
        assert!(alert.contains(&format!("user/{user}")), "{alert}");
    }
    drop(stdin);
    assert!(child.wait().expect("wait").success());
}

#[test]
fn a_directory_tree_is_read_in_event_time_order_as_one_run() {
    let root = tmp("tree");
    let _ = std::fs::remove_dir_all(&root);
    let record = |time: &str| {
        format!("{{\"Records\":[{{\"eventTime\":\"{time}\",\"eventSource\":\"sts.amazonaws.com\",\"eventName\":\"GetCallerIdentity\",\"userIdentity\":{{\"type\":\"IAMUser\",\"arn\":\"arn:aws:iam::1:user/a\"}}}}]}}")
    };
    // By path, us-east-1 (the later event) would come first; by the names' time, us-west-2.
    let place = |region: &str, day: &str, stamp: &str, time: &str| {
        let dir = root.join(format!("AWSLogs/1/CloudTrail/{region}/2024/01/{day}"));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let file = dir.join(format!("1_CloudTrail_{region}_{stamp}_x.json.gz"));
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(record(time).as_bytes()).expect("gzip");
        std::fs::write(file, enc.finish().expect("gzip")).expect("write");
    };
    place("us-east-1", "02", "20240102T0000Z", "2024-01-02T00:00:00Z");
    place("us-west-2", "01", "20240101T0000Z", "2024-01-01T00:00:00Z");
    std::fs::write(root.join(".hidden"), "not a record").expect("write");
    let o = newterms(&["run", root.to_str().expect("path")], None);
    assert!(o.status.success(), "{}", summary(&o));
    let alerts = stdout_lines(&o);
    assert_eq!(alerts.len(), 1, "{}", summary(&o));
    assert_eq!(
        alerts[0]["kibana.alert.original_time"], "2024-01-01T00:00:00.000Z",
        "the earlier event is read first"
    );
    let text = summary(&o);
    assert!(
        text.contains("files=2 ") && text.contains("records=2 "),
        "{text}"
    );
    assert!(!text.contains("late="), "nothing read out of order: {text}");
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
        let id = newterms::Rule::parse(&text, &newterms::Settings::default())
            .expect("rule")
            .rule_id;
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

#[test]
fn the_compiled_component_is_cached_and_a_bad_cache_is_compiled_again() {
    let cache = tmp("cache");
    let _ = std::fs::remove_dir_all(&cache);
    let sample =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/data/cloudtrail-sample.ndjson");
    let run = || {
        let o = Command::new(env!("CARGO_BIN_EXE_newterms"))
            .args(["run", sample.to_str().expect("path")])
            .env("NEWTERMS_CACHE_DIR", &cache)
            .output()
            .expect("run newterms");
        assert!(o.status.success(), "{}", summary(&o));
        o.stdout
    };
    let cached = || -> PathBuf {
        let files: Vec<PathBuf> = std::fs::read_dir(&cache)
            .expect("the cache directory")
            .map(|e| e.expect("entry").path())
            .collect();
        assert_eq!(files.len(), 1, "{files:?}");
        files[0].clone()
    };
    let first = run();
    assert!(!first.is_empty());
    let file = cached();
    let good = std::fs::read(&file).expect("read");
    assert_eq!(run(), first, "from the cache");
    // Damaged (a flipped byte, a cut file, another file under its name): compiled again,
    // the same answers, and the file replaced by a good one.
    let mut flipped = good.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x40;
    for bad in [
        flipped,
        good[..good.len() / 3].to_vec(),
        b"not a component".to_vec(),
    ] {
        std::fs::write(&file, &bad).expect("write");
        assert_eq!(run(), first);
        assert_eq!(std::fs::read(cached()).expect("read"), good);
    }
}

#[test]
fn check_rule_reads_a_tree_of_rules() {
    let dir = tmp("rule-tree");
    let _ = std::fs::remove_dir_all(&dir);
    for (i, (name, text)) in newterms_host::pack::rules(4).into_iter().enumerate() {
        let sub = dir.join(format!("level{}", i % 2)).join("deeper");
        std::fs::create_dir_all(&sub).expect("mkdir");
        std::fs::write(sub.join(name), text).expect("write");
    }
    std::fs::create_dir_all(dir.join(".git")).expect("mkdir");
    std::fs::write(dir.join(".git/x.toml"), "not a rule").expect("write");
    let o = newterms(&["check-rule", dir.to_str().expect("path")], None);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("4 rules: 4 loaded, 0 did not"), "{out}");
}
