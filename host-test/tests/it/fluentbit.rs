//! The Fluent Bit module, driven exactly as Fluent Bit's `filter_wasm` drives it.

use serde_json::Value;

use crate::backend::{fluentbit_out, Backend, FluentBitDetect, Out, TempDir};
use crate::data::{as_lines, files};

fn record(arn: &str, secs: u32) -> Vec<u8> {
    format!(
        r#"{{"eventTime":"2026-01-01T{:02}:{:02}:{:02}Z","eventSource":"sts.amazonaws.com","eventName":"GetCallerIdentity","userIdentity":{{"type":"IAMUser","arn":"{arn}"}}}}"#,
        secs / 3600 % 24,
        secs / 60 % 60,
        secs % 60
    )
    .into_bytes()
}

#[test]
fn shared_data_one_call_per_record_equals_the_component() {
    let lines = crate::data::cloudtrail_lines();
    assert_eq!(lines.len(), 3210);
    let mut fb = Backend::FluentBit.open("", "").expect("module");
    let mut comp = Backend::Component.open("", "").expect("component");
    let a = fb.run(&lines);
    let b = comp.run(&lines);
    assert_eq!(
        a, b,
        "the module and the component answer alike, record by record"
    );
    let alerts = a
        .iter()
        .flatten()
        .filter(|o| matches!(o, Out::Emit(_)))
        .count();
    assert_eq!(
        alerts, 3,
        "bert-jan, and stratus-red-team's IAM user and federated user"
    );
}

#[test]
fn memory_stops_growing_once_the_table_is_full() {
    let mut fb = FluentBitDetect::open("", "max_terms = 1000").expect("module");
    let m = fb.module();
    let mut sizes = Vec::new();
    for i in 0..30_000u32 {
        let arn = format!("arn:aws:iam::123456789012:user/u{i:08}");
        let out = m.call(b"t", (0, 0), Some(&record(&arn, i))).expect("call");
        assert!(!out.is_empty(), "every identity is new");
        if i % 5_000 == 4_999 {
            sizes.push(m.memory_bytes());
        }
    }
    let stats = m.stats().expect("stats");
    assert_eq!(stats["terms_held"], 1000);
    assert_eq!(stats["evicted_capacity"], 29_000);
    // Once full (after 1,000 records), 5,000 to 30,000 records later the memory is the same.
    assert!(
        sizes.windows(2).all(|w| w[0] == w[1]),
        "memory grew: {sizes:?}"
    );
}

#[test]
fn records_of_every_bad_kind_give_the_documented_answer() {
    let mut fb = FluentBitDetect::open("", "").expect("module");
    let m = fb.module();
    // A record of exactly 1 MiB is processed; one byte more is too large.
    let mut big = record("arn:aws:iam::1:user/big", 0);
    big.pop();
    let pad = (1 << 20) - big.len() - r#","pad":""}"#.len();
    big.extend_from_slice(format!(r#","pad":"{}"}}"#, "x".repeat(pad)).as_bytes());
    assert_eq!(big.len(), 1 << 20);
    let out = fluentbit_out(m.call(b"t", (0, 0), Some(&big)).expect("call"));
    assert!(
        matches!(&out[..], [Out::Emit(a)] if a.contains("user/big")),
        "{out:?}"
    );
    let mut bigger = record("arn:aws:iam::1:user/bigger", 1);
    bigger.pop();
    bigger.extend_from_slice(format!(r#","pad":"{}"}}"#, "x".repeat(1 << 20)).as_bytes());
    let answer = m.call(b"t", (0, 0), Some(&bigger)).expect("call");
    let doc: Value = serde_json::from_slice(&answer).expect("an object");
    assert_eq!(doc["newterms.error"]["kind"], "too-large");
    assert_eq!(
        doc["eventName"], "GetCallerIdentity",
        "the record is passed on with the error field"
    );

    let broken = br#"{"eventSource":"sts.amazonaws.com","eventName":"GetCallerIdentity", nope"#;
    for (input, kind) in [
        (&broken[..], "invalid-json"),
        (b"[1,2]", "not-object"),
        (b"\"x\"", "not-object"),
    ] {
        let answer = m.call(b"t", (0, 0), Some(input)).expect("call");
        let mut doc: Value = serde_json::from_slice(&answer).expect("an object");
        // `[1,2]` is an array of two records, each not an object: both, in one bundle.
        if input == b"[1,2]" {
            let outputs = doc[newterms::host::BUNDLE_FIELD]
                .as_array()
                .expect("a bundle");
            assert_eq!(outputs.len(), 2, "{doc}");
            assert_eq!(outputs[0]["newterms.error"]["kind"], kind);
            doc = outputs[1].clone();
        }
        assert_eq!(doc["newterms.error"]["kind"], kind);
        assert_eq!(
            doc["newterms.original"].as_str().map(str::as_bytes),
            Some(input)
        );
    }
    // A broken record the prefilter rejects is not parsed: it cannot match (docs/contract.md).
    assert!(m
        .call(b"t", (0, 0), Some(b"{\"eventName\": nope"))
        .expect("call")
        .is_empty());
    let answer = m
        .call(b"t", (0, 0), None)
        .expect("a null record does not trap");
    let doc: Value = serde_json::from_slice(&answer).expect("an object");
    assert!(doc["newterms.error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("null"));
    // The detector carries on.
    let out = fluentbit_out(
        m.call(b"t", (0, 0), Some(&record("arn:aws:iam::1:user/after", 2)))
            .expect("call"),
    );
    assert!(matches!(&out[..], [Out::Emit(a)] if a.contains("user/after")));
    let stats = m.stats().expect("stats");
    assert_eq!(stats["bad_calls"], 1);
    assert_eq!(stats["errors.too-large"], 1);
    assert_eq!(stats["errors.not-object"], 3);
    assert_eq!(stats["bundles"], 1);
    assert_eq!(stats["bundled_outputs"], 2);
    assert_eq!(stats["extra_outputs_dropped"], 0);
    assert_eq!(stats["errors.invalid-json"], 1);
}

#[test]
fn several_outputs_first_hands_back_the_first_and_counts_the_rest() {
    let mut fb = FluentBitDetect::open("", "several_outputs = \"first\"").expect("module");
    let m = fb.module();
    let answer = m.call(b"t", (0, 0), Some(b"[1,2,3]")).expect("call");
    let doc: Value = serde_json::from_slice(&answer).expect("an object");
    assert_eq!(
        doc["newterms.error"]["message"],
        "[0]: a record must be a JSON object"
    );
    let stats = m.stats().expect("stats");
    assert_eq!(stats["extra_outputs_dropped"], 2);
    assert_eq!(stats["bundles"], 0);
}

#[test]
fn on_error_drop_drops_bad_records() {
    let mut fb = FluentBitDetect::open("", "on_error = \"drop\"").expect("module");
    let m = fb.module();
    assert!(m.call(b"t", (0, 0), Some(b"[1]")).expect("call").is_empty());
    assert!(m.call(b"t", (0, 0), None).expect("call").is_empty());
    assert_eq!(m.stats().expect("stats")["errors.not-object"], 1);
}

#[test]
fn a_rule_file_that_does_not_load_lets_records_through_with_the_reason() {
    let dir = TempDir::new("badrule");
    std::fs::write(dir.0.join("rule.toml"), "[rule\n").expect("write");
    let mut m = newterms_host::FluentBit::load(
        newterms_host::FLUENTBIT_MODULE,
        "newterms_filter",
        Some(&dir.0),
    )
    .expect("module");
    let input = br#"{"eventName":"DescribeInstances","x":1}"#;
    let doc: Value =
        serde_json::from_slice(&m.call(b"t", (0, 0), Some(input)).expect("call")).expect("object");
    assert_eq!(doc["newterms.error"]["kind"], "config");
    assert!(doc["newterms.error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("/etc/newterms/rule.toml"));
    assert_eq!(doc["x"], 1, "the record's own fields pass");
    assert!(m.stats().expect("stats")["config_error"].is_string());
}

#[test]
fn the_function_name_picks_the_output_mode() {
    let input = record("arn:aws:iam::1:user/a", 0);
    let other = br#"{"eventName":"DescribeInstances","eventSource":"ec2.amazonaws.com"}"#;
    let mut pass = FluentBitDetect::open_with("", "", "newterms_passthrough").expect("module");
    assert_eq!(
        pass.module()
            .call(b"t", (0, 0), Some(&input))
            .expect("call"),
        input
    );
    let mut annotate = FluentBitDetect::open_with("", "", "newterms_annotate").expect("module");
    assert_eq!(
        annotate
            .module()
            .call(b"t", (0, 0), Some(other))
            .expect("call"),
        other
    );
    let mut alert =
        FluentBitDetect::open_with("", "output = \"annotate\"", "newterms_alert").expect("module");
    assert!(alert
        .module()
        .call(b"t", (0, 0), Some(other))
        .expect("call")
        .is_empty());
}

#[test]
fn each_records_tag_names_its_index() {
    let dir = TempDir::new("fb-tags");
    let rule = format!(
        "{}\n[newterms]\nindex_by_tag = {{ \"cloudtrail.*\" = \"logs-aws.cloudtrail-default\", \"*\" = \"logs-syslog.other-default\" }}\n",
        newterms::DEFAULT_RULE
    );
    std::fs::write(dir.0.join("rule.toml"), rule).expect("rule");
    let mut m = newterms_host::FluentBit::load(
        newterms_host::FLUENTBIT_MODULE,
        "newterms_filter",
        Some(&dir.0),
    )
    .expect("module");
    let mut alerted = Vec::new();
    for (i, tag) in ["syslog", "cloudtrail.us", "other", "cloudtrail.eu"]
        .iter()
        .enumerate()
    {
        let r = record(&format!("arn:aws:iam::1:user/u{i}"), i as u32);
        let out = fluentbit_out(m.call(tag.as_bytes(), (0, 0), Some(&r)).expect("call"));
        alerted.push(matches!(out[..], [Out::Emit(_)]));
    }
    // A record tagged for another index is not the CloudTrail rule's, raw or not.
    assert_eq!(alerted, [false, true, false, true]);
    let stats = m.stats().expect("stats");
    assert_eq!(stats["out_of_index"], 2, "{stats}");
}

#[test]
fn an_exceptions_file_beside_the_rule_applies() {
    let dir = TempDir::new("fb-exceptions");
    let export = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/exceptions/automation-user-agents.ndjson");
    std::fs::copy(export, dir.0.join("exceptions.ndjson")).expect("copy");
    let mut m = newterms_host::FluentBit::load(
        newterms_host::FLUENTBIT_MODULE,
        "newterms_filter",
        Some(&dir.0),
    )
    .expect("module");
    let mut alerts = Vec::new();
    for l in files("cloudtrail/invictus-ir").iter().flat_map(as_lines) {
        for out in fluentbit_out(m.call(b"t", (0, 0), Some(&l)).expect("call")) {
            if let Out::Emit(a) = out {
                alerts.push(a);
            }
        }
    }
    assert_eq!(alerts.len(), 1);
    assert!(alerts[0].contains("\"eventTime\":\"2023-07-10T12:25:05Z\""));
    let stats = m.stats().expect("stats");
    assert_eq!(stats["excepted"], 13);
    assert_eq!(stats["excepted_by"]["terraform"], 13);
}

#[test]
fn a_value_list_beside_the_exceptions_file_applies() {
    let dir = TempDir::new("fb-value-list");
    let export = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/exceptions/automation-arns-list.ndjson");
    std::fs::copy(export, dir.0.join("exceptions.ndjson")).expect("copy");
    let load = || {
        newterms_host::FluentBit::load(
            newterms_host::FLUENTBIT_MODULE,
            "newterms_filter",
            Some(&dir.0),
        )
        .expect("module")
    };
    // Without the list's file the filter does not load, and says which item and file.
    let mut m = load();
    let doc: Value =
        serde_json::from_slice(&m.call(b"t", (0, 0), Some(b"{\"x\":1}")).expect("call"))
            .expect("object");
    let message = doc["newterms.error"]["message"].as_str().unwrap_or("");
    assert!(
        message.contains("item automation-arns") && message.contains("automation-arns.txt"),
        "{doc}"
    );
    std::fs::write(
        dir.0.join("automation-arns.txt"),
        "arn:aws:iam::123837392027:user/bert-jan\n",
    )
    .expect("write");
    let mut m = load();
    let mut alerts = 0;
    for l in files("cloudtrail/invictus-ir").iter().flat_map(as_lines) {
        let outs = fluentbit_out(m.call(b"t", (0, 0), Some(&l)).expect("call"));
        alerts += outs.iter().filter(|o| matches!(o, Out::Emit(_))).count();
    }
    assert_eq!(alerts, 0);
    let stats = m.stats().expect("stats");
    assert!(
        stats["excepted_by"]["automation-arns"].as_u64() > Some(0),
        "{stats}"
    );
}

#[test]
fn a_rules_directory_runs_as_a_pack() {
    let dir = TempDir::new("fb-pack");
    let rules_dir = dir.0.join("rules");
    std::fs::create_dir_all(&rules_dir).expect("mkdir");
    let mut rules: Vec<(String, String)> = newterms_host::pack::rules(8);
    rules.push((
        "seed.toml".into(),
        std::fs::read_to_string(
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../examples/rules/aws-sts-getcalleridentity-first-time.toml"),
        )
        .expect("seed"),
    ));
    rules.sort();
    for (name, text) in &rules {
        std::fs::write(rules_dir.join(name), text).expect("write");
    }
    let mut m = newterms_host::FluentBit::load(
        newterms_host::FLUENTBIT_MODULE,
        "newterms_filter",
        Some(&dir.0),
    )
    .expect("module");
    let mut native =
        newterms::Detector::open(&rules, &newterms::Settings::default(), None).expect("pack");
    let mut records: Vec<Vec<u8>> = files("cloudtrail/invictus-ir")
        .iter()
        .flat_map(as_lines)
        .collect();
    records.extend(
        newterms_host::pack::stream(9, 3_000)
            .into_iter()
            .map(String::into_bytes),
    );
    let (mut got, mut want) = (Vec::new(), Vec::new());
    for r in &records {
        for out in fluentbit_out(m.call(b"t", (0, 0), Some(r)).expect("call")) {
            if let Out::Emit(a) = out {
                got.push(a);
            }
        }
        // Every output, a record's several in one bundle.
        for out in native.process_collect(r) {
            if let newterms::Output::Emit(a) = out {
                want.push(a.to_string());
            }
        }
    }
    assert!(want.len() > 20, "{}", want.len());
    assert!(
        got == want,
        "{} outputs, expected {}",
        got.len(),
        want.len()
    );
    let stats = m.stats().expect("stats");
    assert_eq!(stats["rules"].as_object().map(|r| r.len()), Some(9));
    assert_eq!(
        stats["rules"]["30fbf4db-c502-4e68-a239-2e99af0f70da"]["alerts"], 1,
        "bert-jan, in the pack as alone"
    );
}

/// The module as Fluent Bit holds it, over a configuration directory whose rule keeps its
/// table in a state file written after every record.
fn stateful_module(
    module: &newterms_host::FluentBitModule,
    dir: &TempDir,
) -> newterms_host::FluentBit {
    let rule = format!(
        "{}\n[newterms]\nstate_file = \"/etc/newterms/t.state\"\nstate_every_records = 1\n",
        newterms::DEFAULT_RULE
    );
    std::fs::write(dir.0.join("rule.toml"), rule).expect("rule file");
    module
        .instantiate("newterms_filter", Some(&dir.0))
        .expect("module")
}

/// What the core answers for each record, as the filter does (the first output, or none).
fn reference(records: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut d = newterms::Detector::from_config("", "").expect("rule");
    records
        .iter()
        .map(|r| match d.process_collect(r).into_iter().next() {
            Some(newterms::Output::Emit(s)) => s.into_owned().into_bytes(),
            _ => Vec::new(),
        })
        .collect()
}

#[test]
fn a_call_that_traps_anywhere_is_survived() {
    // 60 records of 12 identities over an hour; record 30 is a first sighting.
    let records: Vec<Vec<u8>> = (0..60u32)
        .map(|i| {
            record(
                &format!("arn:aws:iam::1:user/u{}", (i * 7) % 12 + i / 30 * 12),
                i * 60,
            )
        })
        .collect();
    let at = 30;
    let full = reference(&records);
    assert!(!full[at].is_empty(), "record {at} is an alert");
    let skip: Vec<Vec<u8>> = records
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != at)
        .map(|(_, r)| r.clone())
        .collect();
    let without = reference(&skip);
    // Without record `at` (its sighting lost), or with it (saved before the trap).
    let after_without: Vec<Vec<u8>> = without[at..].to_vec();
    let after_with: Vec<Vec<u8>> = full[at + 1..].to_vec();
    // The instructions the call takes, so that traps land all through it.
    let metered = newterms_host::FluentBitModule::compile_metered(newterms_host::FLUENTBIT_MODULE)
        .expect("module");
    let dir = TempDir::new("trap-cost");
    let mut fb = stateful_module(&metered, &dir);
    for r in &records[..at] {
        fb.call(b"t", (0, 0), Some(r)).expect("call");
    }
    let before = fb.instructions();
    fb.call(b"t", (0, 0), Some(&records[at])).expect("call");
    let cost = fb.instructions() - before;
    assert!(cost > 1_000, "{cost}");
    let mut points: Vec<u64> = vec![1, 2, 5, 10, 50];
    // `cost` includes Fluent Bit's copies around the call: stop short of its end.
    points.extend((1..120).map(|n| cost * n / 130));
    let (mut lost, mut kept, mut rebuilt, mut in_allocator) = (0, 0, 0, 0);
    for fuel in points {
        let dir = TempDir::new("trap");
        let mut fb = stateful_module(&metered, &dir);
        for (i, r) in records[..at].iter().enumerate() {
            assert_eq!(fb.call(b"t", (0, 0), Some(r)).expect("call"), full[i]);
        }
        let trapped = fb.call_with_fuel(b"t", (0, 0), Some(&records[at]), Some(fuel));
        assert!(
            trapped.is_err(),
            "fuel {fuel} of {cost}: the call should trap"
        );
        let after: Vec<Vec<u8>> = records[at + 1..]
            .iter()
            .map(|r| {
                fb.call(b"t", (0, 0), Some(r))
                    .expect("a call after the trap")
            })
            .collect();
        if after == after_without {
            lost += 1;
        } else {
            assert!(
                after == after_with,
                "fuel {fuel} of {cost}: after the trap the filter answers neither as without record {at} nor as with it"
            );
            kept += 1;
        }
        // A trap before the call reached the filter leaves nothing to rebuild.
        let stats = fb.stats().expect("stats");
        let recoveries = stats["recoveries"].as_u64().unwrap_or(9);
        assert!(recoveries <= 1, "fuel {fuel}: {stats}");
        rebuilt += recoveries;
        in_allocator += stats["allocator_restarts"].as_u64().unwrap_or(0);
    }
    assert!(
        lost > 90,
        "the sighting of the trapped call is mostly lost ({lost} of {})",
        lost + kept
    );
    assert!(
        rebuilt >= 119,
        "most traps were inside the filter and rebuilt it ({rebuilt})"
    );
    assert!(in_allocator > 0, "some traps were inside the allocator");
}

#[test]
fn a_malloc_that_traps_anywhere_is_survived() {
    // Fluent Bit copies each record in through the module's malloc; a trap there leaves
    // the allocator half-way through a change. Stop one at every instruction in turn.
    let records: Vec<Vec<u8>> = (0..40u32)
        .map(|i| {
            record(
                &format!("arn:aws:iam::1:user/u{}", i % 9 + i / 20 * 9),
                i * 60,
            )
        })
        .collect();
    let full = reference(&records);
    let metered = newterms_host::FluentBitModule::compile_metered(newterms_host::FLUENTBIT_MODULE)
        .expect("module");
    let mut restarts = 0;
    let mut fuel = 1;
    loop {
        let dir = TempDir::new("malloc-trap");
        let mut fb = stateful_module(&metered, &dir);
        for (i, r) in records[..20].iter().enumerate() {
            assert_eq!(fb.call(b"t", (0, 0), Some(r)).expect("call"), full[i]);
        }
        if fb.malloc_with_fuel(3000, fuel).is_ok() {
            break;
        }
        for (i, r) in records[20..].iter().enumerate() {
            let got = fb
                .call(b"t", (0, 0), Some(r))
                .expect("a call after the trap");
            assert_eq!(got, full[20 + i], "fuel {fuel}: record {}", 20 + i);
        }
        let stats = fb.stats().expect("stats");
        assert_eq!(stats["recoveries"], 0, "no filter call was abandoned");
        restarts += stats["allocator_restarts"].as_u64().unwrap_or(0);
        fuel += 1;
    }
    assert!(fuel > 20, "malloc took {fuel} instructions");
    assert!(
        restarts > 0,
        "no trap landed inside the allocator in {fuel} tries"
    );
}

#[test]
fn the_module_is_a_reactor_whose_exports_start_at_the_stack_top() {
    let m = newterms_host::FLUENTBIT_MODULE;
    let exports: Vec<String> = wasmparser::Parser::new(0)
        .parse_all(m)
        .filter_map(|p| match p.expect("module") {
            wasmparser::Payload::ExportSection(r) => Some(
                r.into_iter()
                    .map(|e| e.expect("export").name.to_owned())
                    .collect::<Vec<_>>(),
            ),
            _ => None,
        })
        .flatten()
        .collect();
    for name in [
        "_initialize",
        "malloc",
        "free",
        "newterms_filter",
        "newterms_stats",
    ] {
        assert!(
            exports.iter().any(|e| e == name),
            "{name} is not exported: {exports:?}"
        );
    }
    assert!(
        !exports
            .iter()
            .any(|e| e == "_start" || e == "newterms_fault_filter"),
        "{exports:?}"
    );
    assert_eq!(
        newterms_host::wasm_entry::exports_reset_stack(m),
        Ok(true),
        "every export sets the stack pointer first"
    );
}

/// Records as Fluent Bit's encoder writes them, with the rules' values among escaped
/// quotes, backslashes, control characters and non-ASCII text: the module (whose prefilter
/// trusts that encoder, and skips through the text for a lone rule's literal) decides
/// every record as the core does with no prefilter at all, with `json.escape_unicode` on
/// and off.
#[test]
fn records_written_by_fluent_bit_are_decided_as_without_a_prefilter() {
    use newterms_host::{fluent_bit_json, gen::Rng};
    let queries = [
        r#"event.action: "GetCallerIdentity""#,
        r#"a: "say \"hi\" \\ now/then""#,
        r#"a: *needle/in-hay* and b.c: pre-fix*"#,
        r#"a: "café-olé""#,
        r#"a: *tab-here* or b.c: *-suffix-value"#,
    ];
    let fragments = [
        "GetCallerIdentity",
        "say \"hi\" \\ now/then",
        "needle/in-hay",
        "pre-fix",
        "café-olé",
        "tab-here",
        "-suffix-value",
        "\"",
        "\\",
        "\n",
        "\t",
        "\u{1}",
        "\u{7f}",
        "é",
        "😀",
        "/",
        "x",
        "Get",
        "Caller",
        "say ",
        "hi",
    ];
    let users = ["alice", "bob", "carol \"c\"", "dave\\d", "éva"];
    let mut rng = Rng::new(7);
    let value = |rng: &mut Rng| -> String {
        (0..1 + rng.below(4))
            .map(|_| fragments[rng.below(fragments.len() as u64) as usize])
            .collect()
    };
    let docs: Vec<serde_json::Value> = (0..1_000)
        .map(|i| {
            serde_json::json!({
                "@timestamp": newterms_host::gen::rfc3339(1_790_000_000 + i * 60),
                "user": {"name": users[rng.below(users.len() as u64) as usize]},
                "event": {"action": value(&mut rng)},
                "a": value(&mut rng),
                "b": {"c": value(&mut rng)},
            })
        })
        .collect();
    let module = newterms_host::FluentBitModule::compile(newterms_host::FLUENTBIT_MODULE)
        .expect("the Fluent Bit module");
    for (i, query) in queries.iter().enumerate() {
        let rule = newterms_host::pack::rule_file(
            "",
            &format!("00000000-0000-0000-0000-00000000000{i}"),
            &format!("written by Fluent Bit {i}"),
            query,
            &["user.name"],
            "now-10d",
            None,
        );
        for escape_unicode in [false, true] {
            let records: Vec<Vec<u8>> = docs
                .iter()
                .map(|d| fluent_bit_json(d, escape_unicode).into_bytes())
                .collect();
            let mut core = newterms::Detector::open(
                &[("r.toml".to_owned(), rule.clone())],
                &newterms::Settings::default(),
                None,
            )
            .expect("rule")
            .without_prefilter();
            let dir = TempDir::new("written-by-fluent-bit");
            std::fs::write(dir.0.join("rule.toml"), &rule).expect("rule file");
            let mut fb = module
                .instantiate("newterms_filter", Some(&dir.0))
                .expect("module");
            let mut alerts = 0;
            for r in &records {
                let want = match core.process_collect(r).into_iter().next() {
                    Some(newterms::Output::Emit(s)) => s.into_owned().into_bytes(),
                    Some(newterms::Output::Error(e)) => panic!("{query}: {e:?} for {r:?}"),
                    None => Vec::new(),
                };
                let got = fb.call(b"t", (0, 0), Some(r)).expect("call");
                assert_eq!(
                    String::from_utf8_lossy(&got),
                    String::from_utf8_lossy(&want),
                    "{query} (escape_unicode {escape_unicode}): {}",
                    String::from_utf8_lossy(r)
                );
                alerts += usize::from(!want.is_empty());
            }
            let stats = fb.stats().expect("stats");
            assert!(alerts > 0, "{query}: some records alert");
            // Non-ASCII values keep the escape-aware search, which lets through every
            // record with a `\u` escape.
            let floor = if query.contains('é') { 50 } else { 500 };
            assert!(
                stats["prefiltered"].as_u64().unwrap_or(0) > floor,
                "{query}: the prefilter rejects records: {stats}"
            );
        }
    }
}

/// The instructions Fluent Bit's interpreter runs for a record the prefilter rejects, on
/// the benchmark's mix, all included (Fluent Bit's `malloc` and `free` of its copies, and
/// the call): the median within the target. Fuel counts are deterministic.
#[test]
fn a_rejected_record_costs_at_most_2000_instructions_on_the_mix() {
    use newterms_host::gen::{Generator, Mix, Templates};
    const TARGET: u64 = 2_000;
    let templates =
        Templates::load(&crate::data::shared_data().join("cloudtrail")).expect("shared data");
    let records = Generator::new(&templates, Mix::default()).generate(5_000);
    let module = newterms_host::FluentBitModule::compile_metered(newterms_host::FLUENTBIT_MODULE)
        .expect("module");
    let mut m = module.instantiate("newterms_filter", None).expect("module");
    m.call(b"t", (0, 0), Some(b"{}")).expect("first call");
    let costs = m
        .costs(b"aws.cloudtrail", records.iter().map(|r| r.as_bytes()))
        .expect("calls");
    let median = newterms_host::Costs::percentile(&costs.rejected, 50);
    eprintln!(
        "rejected: {} records, median {median}, 99th percentile {}",
        costs.rejected.len(),
        newterms_host::Costs::percentile(&costs.rejected, 99)
    );
    assert!(
        costs.rejected.len() > records.len() * 9 / 10,
        "the mix is mostly rejected: {costs:?}"
    );
    assert!(median <= TARGET, "median {median} > {TARGET}");
}

/// What the state journal costs a matched record in Fluent Bit's interpreter: the
/// instructions of the same calls with and without a state file (which brings the
/// journal), at the median. The journal's write itself is one WASI `fd_write`, outside the
/// count. Fuel counts are deterministic.
#[test]
fn the_journal_costs_a_matched_record_under_4000_instructions() {
    let records: Vec<String> = newterms_host::gen::sts_calls(20_000, 3_000, 30)
        .lines()
        .map(str::to_owned)
        .collect();
    let module = newterms_host::FluentBitModule::compile_metered(newterms_host::FLUENTBIT_MODULE)
        .expect("module");
    let median = |state: bool| {
        let dir = TempDir::new("fb-journal-cost");
        if state {
            let rule = format!(
                "{}\n[newterms]\nstate_file = \"/etc/newterms/t.state\"\n",
                newterms::DEFAULT_RULE
            );
            std::fs::write(dir.0.join("rule.toml"), rule).expect("rule");
        }
        let mut m = module
            .instantiate("newterms_filter", Some(&dir.0))
            .expect("module");
        m.call(b"t", (0, 0), Some(b"{}")).expect("first call");
        let costs = m
            .costs(b"aws.cloudtrail", records.iter().map(|r| r.as_bytes()))
            .expect("calls");
        (
            newterms_host::Costs::percentile(&costs.read, 50),
            newterms_host::Costs::percentile(&costs.answered, 50),
        )
    };
    let (read, alert) = median(false);
    let (read_j, alert_j) = median(true);
    eprintln!(
        "journal: a matched record already seen {read} -> {read_j} instructions (+{}), an alert {alert} -> {alert_j} (+{})",
        read_j as i64 - read as i64,
        alert_j as i64 - alert as i64
    );
    assert!(read_j > read, "the journal is written");
    assert!(read_j - read <= 4_000, "{read} -> {read_j}");
    assert!(
        alert_j.saturating_sub(alert) <= 7_000,
        "{alert} -> {alert_j}"
    );
}

/// A state file the module cannot write: counted in `state_errors`, and the records are
/// decided as without one.
#[test]
fn a_state_file_that_cannot_be_written_is_counted_not_fatal() {
    let mut fb = FluentBitDetect::open("", "state_file = \"/nowhere/t.state\"").expect("module");
    let m = fb.module();
    let mut alerts = 0;
    for i in 0..20 {
        let r = record(&format!("arn:aws:iam::1:user/u{}", i % 5), i);
        alerts += fluentbit_out(m.call(b"t", (0, 0), Some(&r)).expect("call")).len();
    }
    assert_eq!(alerts, 5);
    let stats = m.stats().expect("stats");
    assert_eq!(
        stats["state_errors"], 20,
        "every change failed to reach the journal: {stats}"
    );
}
