use super::*;
use crate::time::{format_timestamp, NANOS_PER_DAY, NANOS_PER_MIN};
use crate::{RuleError, Settings};

/// A deterministic stream: `n` GetCallerIdentity records of `identities` IAM users over
/// about 60 days (so windows expire), a few minutes late as a rule, now and then hours
/// late (past the allowed lateness).
fn stream(n: usize, identities: u64, very_late: bool) -> Vec<Vec<u8>> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let start = 1_767_225_600 * crate::time::NANOS_PER_SEC; // 2026-01-01
    let step = 60 * NANOS_PER_DAY / n as i64;
    (0..n)
            .map(|i| {
                let r = next();
                let mut t = start + i as i64 * step;
                match r % 100 {
                    0..=4 => t -= (r >> 8) as i64 % (30 * NANOS_PER_MIN),
                    5 if very_late => t -= (r >> 8) as i64 % (3 * 60 * NANOS_PER_MIN),
                    _ => {}
                }
                // A drifting population: each identity is active for a while, then gone.
                let who = (i as u64 / 500) * 20 + (r >> 20) % identities;
                format!(
                    r#"{{"eventTime":"{}","eventID":"e{i}","eventSource":"sts.amazonaws.com","eventName":"GetCallerIdentity","userIdentity":{{"type":"IAMUser","arn":"arn:aws:iam::1:user/u{who}"}}}}"#,
                    format_timestamp(t)
                )
                .into_bytes()
            })
            .collect()
}

fn alerts(d: &mut Detector, records: &[Vec<u8>]) -> Vec<String> {
    let mut out = Vec::new();
    for r in records {
        d.process(r, &mut |o| match o {
            Output::Emit(s) => out.push(s.into_owned()),
            Output::Error(e) => panic!("unexpected error {e}"),
        });
    }
    out
}

#[test]
fn a_run_split_by_a_snapshot_equals_the_uninterrupted_run() {
    let records = stream(100_000, 400, true);
    let settings = "max_terms = 1050";
    let mut whole = Detector::from_config("", settings).unwrap();
    let expected = alerts(&mut whole, &records);
    let s = whole.stats();
    assert!(
        s.alerts > 3_000 && s.evicted_window > 0 && s.evicted_capacity > 0 && s.late > 0,
        "{s:?}"
    );
    for split in [0, 1, 12_345, 50_000, 99_999, 100_000] {
        let mut first = Detector::from_config("", settings).unwrap();
        let mut got = alerts(&mut first, &records[..split]);
        let bytes = first.snapshot();
        let mut second = restore("", settings, &bytes).unwrap();
        assert_eq!(
            second.snapshot(),
            bytes,
            "restore then snapshot gives the same bytes"
        );
        got.extend(alerts(&mut second, &records[split..]));
        assert_eq!(got.len(), expected.len(), "split at {split}");
        assert!(got == expected, "split at {split}: the alerts differ");
    }
}

#[test]
fn replaying_records_from_before_the_snapshot_gives_no_alert() {
    let records = stream(20_000, 500, false);
    let mut d = Detector::from_config("", "").unwrap();
    alerts(&mut d, &records);
    let mut restored = restore("", "", &d.snapshot()).unwrap();
    // The last 1,000 records: three days, well within the window.
    assert!(alerts(&mut restored, &records[19_000..]).is_empty());
    assert_eq!(restored.stats().suppressed, 1_000);
}

/// The built-in rule with another id and query, over the field `f`.
fn rule_with(id: &str, query: &str) -> (String, String) {
    let text = crate::DEFAULT_RULE
            .replace("30fbf4db-c502-4e68-a239-2e99af0f70da", id)
            .replace(
                "event.dataset: \"aws.cloudtrail\" and event.provider: \"sts.amazonaws.com\" and event.action: \"GetCallerIdentity\"\nand not aws.cloudtrail.user_identity.type: \"AssumedRole\"",
                query,
            )
            .replace("[\"aws.cloudtrail.user_identity.arn\"]", "[\"f\"]")
            // Our own rules over our own records: no index, so every record is theirs.
            .replace("index = [\"filebeat-*\", \"logs-aws.cloudtrail-*\"]\n", "");
    (id.to_owned(), text)
}

#[test]
fn the_gate_finds_overlapping_and_nested_literals() {
    let rules = [
        rule_with("r1", "f: abcd*"),
        rule_with("r2", "f: *abcdef*"),
        rule_with("r3", "f: *cdefgh*"),
        rule_with("r4", "f: *defg*"),
        rule_with("r5", "f: *zzzz*"),
    ];
    assert!(rules.iter().all(|(_, t)| t.contains("f: ")));
    let mut d = Detector::open(&rules, &Settings::default(), None).unwrap();
    assert!(d.gate.is_some());
    let record = br#"{"@timestamp":"2026-01-01T00:00:00Z","f":"abcdefgh"}"#;
    let ids = alert_ids(&mut d, std::str::from_utf8(record).unwrap());
    assert_eq!(ids, ["r1", "r2", "r3", "r4"]);
    // Hidden behind an escape: every rule looks.
    let escaped = br#"{"@timestamp":"2026-01-01T00:00:00Z","f":"\u007azzz"}"#;
    assert_eq!(d.process_collect(escaped).len(), 1);
    let s = d.rule_stats(4);
    assert_eq!((s.records, s.prefiltered, s.alerts), (2, 1, 1));
}

/// GetCallerIdentity records whose literals are written with JSON escapes (`\u`, `\/`),
/// among plain ones, other calls, blank lines, CRs, non-objects and an oversized line.
fn escaped_stream(n: usize) -> Vec<Vec<u8>> {
    let plain = stream(n, 300, false);
    plain
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let r = String::from_utf8(r).unwrap();
            match i % 13 {
                0 => r.replace("GetCallerIdentity", "\\u0047etCallerIdentity"),
                1 => r.replace("sts.amazonaws.com", "sts\\u002eamazonaws.com"),
                2 => r.replace("user/", "user\\/"),
                3 => r.replace("GetCallerIdentity", "DescribeInstances"),
                4 => r.replace("sts.amazonaws.com", "ec2.amazonaws.com"),
                5 => r.replace("GetCallerIdentity", "GetCallerIdentit\\u0079"),
                6 => format!("{r}\r"),
                7 => String::new(),
                8 => "[1,2]".to_owned(),
                9 if i == 9 => format!("{{\"pad\":\"{}\",{}", "x".repeat(1 << 20), &r[1..]),
                _ => r,
            }
            .into_bytes()
        })
        .collect()
}

fn collect_lines(d: &mut Detector, lines: &[u8]) -> Vec<(usize, Output<'static>)> {
    let mut out = Vec::new();
    d.process_lines(lines, &mut |n, o| {
        out.push((
            n,
            match o {
                Output::Emit(s) => Output::Emit(Cow::Owned(s.into_owned())),
                Output::Error(e) => Output::Error(e),
            },
        ))
    });
    out
}

#[test]
fn the_prefilter_never_changes_a_decision() {
    let records = escaped_stream(20_000);
    let mut on = Detector::from_config("", "").unwrap();
    let mut off = Detector::from_config("", "").unwrap().without_prefilter();
    for (i, r) in records.iter().enumerate() {
        assert_eq!(on.process_collect(r), off.process_collect(r), "record {i}");
    }
    let (a, b) = (on.stats(), off.stats());
    assert!(a.prefiltered > 3_000 && b.prefiltered == 0, "{a:?}");
    assert!(a.alerts > 1_000, "{a:?}");
    assert_eq!(a.prefiltered + a.unmatched, b.unmatched);
    assert_eq!(
        Stats {
            prefiltered: 0,
            unmatched: 0,
            ..a
        },
        Stats { unmatched: 0, ..b }
    );
}

#[test]
fn a_buffer_of_lines_is_decided_as_each_line_alone() {
    let records = escaped_stream(20_000);
    let mut buffer = records.join(&b'\n');
    buffer.extend_from_slice(b"\n\n   \n");
    for settings in ["", "output = \"passthrough\"", "output = \"annotate\""] {
        let mut by_line = Detector::from_config("", settings).unwrap();
        let mut want = Vec::new();
        for (i, r) in buffer.split(|&b| b == b'\n').enumerate() {
            let r = r.strip_suffix(b"\r").unwrap_or(r);
            if !r.trim_ascii().is_empty() {
                want.extend(by_line.process_collect(r).into_iter().map(|o| (i, o)));
            }
        }
        let mut together = Detector::from_config("", settings).unwrap();
        let got = collect_lines(&mut together, &buffer);
        assert!(got == want, "{settings}: the outputs differ");
        assert_eq!(together.stats(), by_line.stats(), "{settings}");
    }
}

#[test]
fn restore_refuses_damaged_or_foreign_snapshots() {
    let mut d = Detector::from_config("", "").unwrap();
    alerts(&mut d, &stream(100, 10, false));
    let bytes = d.snapshot();
    let err = |b: &[u8]| restore("", "", b).unwrap_err().to_string();
    assert!(err(&bytes[..bytes.len() - 1]).contains("snapshot"));
    assert!(err(b"").contains("not a newterms snapshot"));
    let other = crate::DEFAULT_RULE.replace("30fbf4db-c502-4e68-a239-2e99af0f70da", "other-rule");
    let e = restore(&other, "", &bytes).unwrap_err();
    assert_eq!(e.key_name(), Some("snapshot"));
    assert!(e.to_string().contains("other-rule"));
}

/// One rule file, settings as TOML text, and a snapshot.
fn restore(rule: &str, settings: &str, snapshot: &[u8]) -> Result<Detector, RuleError> {
    Detector::open(
        &[("rule", rule)],
        &Settings::from_toml(settings)?,
        Some(snapshot),
    )
}

/// A rule over `f` that reads only `index`.
fn indexed(id: &str, index: &str) -> (String, String) {
    let (id, text) = rule_with(id, "f: *");
    let text = text.replace("[rule]\n", &format!("[rule]\nindex = [{index}]\n"));
    (id, text)
}

fn alert_ids(d: &mut Detector, record: &str) -> Vec<String> {
    d.process_collect(record.as_bytes())
        .into_iter()
        .map(|o| match o {
            Output::Emit(a) => {
                let v: serde_json::Value = serde_json::from_str(&a).unwrap();
                v["kibana.alert.rule.rule_id"].as_str().unwrap().to_owned()
            }
            Output::Error(e) => panic!("{e}"),
        })
        .collect()
}

#[test]
fn each_rule_sees_only_its_indices_in_a_pack_and_alone() {
    let rules = [
        indexed("ct", r#""logs-aws.cloudtrail-*""#),
        indexed("win", r#""winlogbeat-*", "logs-windows.*""#),
        indexed("any", r#""*", "-logs-test-*""#),
    ];
    let record = |n: u32, index_fields: &str| {
        format!(r#"{{"@timestamp":"2026-01-01T00:00:00Z","f":"v{n}"{index_fields}}}"#)
    };
    let ds = |t: &str, d: &str, n: &str| {
        format!(r#","data_stream":{{"type":"{t}","dataset":"{d}","namespace":"{n}"}}"#)
    };
    let cases: Vec<(String, Vec<&str>)> = vec![
        (ds("logs", "aws.cloudtrail", "prod"), vec!["ct", "any"]),
        (ds("logs", "windows.sysmon", "default"), vec!["win", "any"]),
        (ds("logs", "test", "x"), vec![]),
        (r#","agent":{"type":"winlogbeat","version":"8.1.0"}"#.into(), vec!["win", "any"]),
        (r#","event":{"dataset":"aws.cloudtrail"}"#.into(), vec!["ct", "any"]),
        // Dotted keys name the same fields.
        (
            r#","data_stream.type":"logs","data_stream.dataset":"aws.cloudtrail","data_stream.namespace":"d""#.into(),
            vec!["ct", "any"],
        ),
        // No index of its own, not CloudTrail: unknown, skipped by default.
        (String::new(), vec![]),
    ];
    for pack in [true, false] {
        for (n, (fields, want)) in cases.iter().enumerate() {
            let text = record(n as u32, fields);
            let got: Vec<String> = if pack {
                let mut d = Detector::open(&rules, &Settings::default(), None).unwrap();
                alert_ids(&mut d, &text)
            } else {
                // Each rule alone gives the same answer as in the pack.
                rules
                    .iter()
                    .flat_map(|r| {
                        let mut d =
                            Detector::open(std::slice::from_ref(r), &Settings::default(), None)
                                .unwrap();
                        alert_ids(&mut d, &text)
                    })
                    .collect()
            };
            assert_eq!(got, *want, "pack {pack}: {text}");
        }
    }
    // A raw CloudTrail record is logs-aws.cloudtrail-default.
    let mut d = Detector::open(&rules, &Settings::default(), None).unwrap();
    let ct = r#"{"@timestamp":"2026-01-01T00:00:00Z","f":"x","eventSource":"s","eventName":"n"}"#;
    assert_eq!(alert_ids(&mut d, ct), ["ct", "any"]);
    // The host's index names a record that names none; the record's own wins.
    let host = Settings {
        index: Some("logs-windows.forwarded-default".into()),
        ..Settings::default()
    };
    let mut d = Detector::open(&rules, &host, None).unwrap();
    assert_eq!(alert_ids(&mut d, &record(100, "")), ["win", "any"]);
    assert_eq!(
        alert_ids(&mut d, &record(101, &ds("logs", "aws.cloudtrail", "p"))),
        ["ct", "any"]
    );
    // `unknown_index = "match"`: every rule sees what cannot be placed.
    let matching = Settings {
        unknown_index: Some(crate::index::UnknownIndex::Match),
        ..Settings::default()
    };
    let mut d = Detector::open(&rules, &matching, None).unwrap();
    assert_eq!(alert_ids(&mut d, &record(102, "")), ["ct", "win", "any"]);
}

#[test]
fn a_record_outside_a_rules_indices_leaves_its_table_alone_and_is_counted() {
    let rules = [
        indexed("ct", r#""logs-aws.cloudtrail-*""#),
        indexed("w", r#""winlogbeat-*""#),
    ];
    let mut d = Detector::open(&rules, &Settings::default(), None).unwrap();
    let win = r#"{"@timestamp":"2026-01-01T00:00:00Z","f":"same","agent":{"type":"winlogbeat"}}"#;
    let ct =
        r#"{"@timestamp":"2026-01-01T00:01:00Z","f":"same","event":{"dataset":"aws.cloudtrail"}}"#;
    let nowhere = r#"{"@timestamp":"2026-01-01T00:02:00Z","f":"same"}"#;
    assert_eq!(alert_ids(&mut d, win), ["w"]);
    // The winlogbeat sighting did not enter the CloudTrail rule's table.
    assert_eq!(alert_ids(&mut d, ct), ["ct"]);
    assert!(alert_ids(&mut d, nowhere).is_empty());
    let s = d.stats();
    assert_eq!(
        (s.records, s.alerted, s.out_of_index, s.index_unknown),
        (3, 2, 1, 1)
    );
    let ct_stats = d.rule_stats(0);
    assert_eq!((ct_stats.out_of_index, ct_stats.alerts), (2, 1));
    assert_eq!(
        ct_stats.records,
        ct_stats.prefiltered
            + ct_stats.out_of_index
            + ct_stats.unmatched
            + ct_stats.alerted
            + ct_stats.suppressed
            + ct_stats.no_term
            + ct_stats.excepted
            + ct_stats.error_total()
    );
}

#[test]
fn a_tag_names_the_index_of_records_that_name_none() {
    let rules = [
        indexed("ct", r#""logs-aws.cloudtrail-*""#),
        indexed("w", r#""logs-windows.*""#),
    ];
    let settings = Settings::from_toml(
        "index = \"logs-windows.default-default\"\nindex_by_tag = { \"aws.*\" = \"logs-aws.cloudtrail-default\" }",
    )
    .unwrap();
    for pack in [true, false] {
        let mut all = Vec::new();
        let chosen: &[(String, String)] = if pack { &rules } else { &rules[..1] };
        let mut d = Detector::open(chosen, &settings, None).unwrap();
        for (i, tag) in ["aws.cloudtrail", "syslog", "aws.guardduty", "syslog"]
            .iter()
            .enumerate()
        {
            d.set_tag(tag);
            all.extend(alert_ids(
                &mut d,
                &format!(r#"{{"@timestamp":"2026-01-01T00:00:00Z","f":"v{i}"}}"#),
            ));
        }
        if pack {
            assert_eq!(all, ["ct", "w", "ct", "w"]);
        } else {
            assert_eq!(all, ["ct", "ct"]);
        }
        let s = d.rule_stats(0);
        assert_eq!(
            (s.records, s.out_of_index, s.alerts),
            (4, 2, 2),
            "pack {pack}"
        );
    }
    let bad = Settings::from_toml("index_by_tag = { \"x\" = \"logs-*\" }").unwrap();
    let err = Detector::open(&rules, &bad, None).unwrap_err();
    assert_eq!(err.key_name(), Some("newterms.index_by_tag.x"));
}

/// A deterministic generator of numbers below `m`.
fn xorshift(mut x: u64) -> impl FnMut(u64) -> u64 {
    move |m: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % m
    }
}

/// Each rule's counters in `pack` add up as the same rule's `alone` (a record outside its
/// indices may be `out_of_index` in one and `prefiltered` in the other).
fn counted_as_alone(pack: &Detector, alone: &[Detector]) {
    for (i, d) in alone.iter().enumerate() {
        let (p, a) = (pack.rule_stats(i), d.rule_stats(0));
        assert_eq!(
            (p.records, p.matched, p.alerts, p.suppressed, p.no_term),
            (a.records, a.matched, a.alerts, a.suppressed, a.no_term),
            "rule {i}"
        );
        assert_eq!(p.error_total(), a.error_total(), "rule {i}");
        assert_eq!(
            p.prefiltered + p.out_of_index + p.unmatched,
            a.prefiltered + a.out_of_index + a.unmatched,
            "rule {i}"
        );
    }
}

/// A pack past the vector search's literals (so its gate searches a record that names no
/// index of its own first for only the literals of the rules its index can admit) decides
/// every rule as that rule alone, over records of every origin, with escapes, with and
/// without the host naming an index, and as tags change it.
#[test]
fn a_large_packs_first_search_decides_as_each_rule_alone() {
    let n = 90;
    let rules: Vec<(String, String)> = (0..n)
        .map(|i| {
            let (id, text) = rule_with(&format!("r{i:02}"), &format!("f: \"w{i:02}x\""));
            let index = match i % 5 {
                0 => "[rule]\nindex = [\"logs-aws.cloudtrail-*\"]\n",
                1 => "[rule]\n",
                _ => "[rule]\nindex = [\"logs-app.x-*\", \"filebeat-*\"]\n",
            };
            (id, text.replace("[rule]\n", index))
        })
        .collect();
    let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
    let mut records = Vec::new();
    for k in 0..3_000u64 {
        let j = next(n as u64);
        let value = match next(10) {
            0 => format!("\\u0077{j:02}x"),
            _ => format!("w{j:02}x"),
        };
        let also = match next(4) {
            0 => format!(r#","g":"w{:02}x""#, next(n as u64)),
            _ => String::new(),
        };
        let origin = match next(9) {
            0 => r#","eventSource":"s3.amazonaws.com","eventName":"GetObject""#.to_owned(),
            1 => r#","data_stream":{"type":"logs","dataset":"app.x","namespace":"default"}"#
                .to_owned(),
            2 => r#","data_stream.type":"logs","data_stream.dataset":"aws.cloudtrail","data_stream.namespace":"p""#.to_owned(),
            3 => r#","agent":{"type":"filebeat","version":"8.1.0"}"#.to_owned(),
            4 => r#","event":{"dataset":"aws.cloudtrail"}"#.to_owned(),
            // A Beat's name dotted and escaped, an agent that is no Beat, a dotted dataset.
            5 => r#","agent.type":"winlogbeat","agent.version":"7.17.0""#.to_owned(),
            6 => match next(2) {
                0 => r#","agent":{"type":"elastic-agent"}"#.to_owned(),
                _ => r#","agent":{"type":"\u0066ilebeat"}"#.to_owned(),
            },
            7 => r#","event.dataset":"app.x""#.to_owned(),
            _ => String::new(),
        };
        let t = 1_767_225_600 + k * 600;
        records.push(format!(
            r#"{{"@timestamp":{t}000,"f":"{value}"{also}{origin},"u":"{}"}}"#,
            next(7)
        ));
    }
    let tags = ["aws.cloudtrail", "app", "other"];
    for settings in [
        "",
        "index = \"logs-aws.cloudtrail-default\"",
        "unknown_index = \"match\"",
        "index_by_tag = { \"app\" = \"logs-app.x-default\", \"aws.*\" = \"logs-aws.cloudtrail-x\" }",
    ] {
        // An unknown index that every rule sees leaves no rule out of a first search.
        let first = !settings.contains("match");
        let settings = Settings::from_toml(settings).unwrap();
        let mut pack = Detector::open(&rules, &settings, None).unwrap();
        assert_eq!(pack.gate.as_ref().map(|g| g.has_first_search()), Some(first));
        let mut alone: Vec<Detector> = rules
            .iter()
            .map(|r| Detector::open(std::slice::from_ref(r), &settings, None).unwrap())
            .collect();
        for (k, r) in records.iter().enumerate() {
            let tag = tags[k / 500 % tags.len()];
            pack.set_tag(tag);
            let mut got = alert_ids(&mut pack, r);
            got.sort();
            let mut want = Vec::new();
            for d in &mut alone {
                d.set_tag(tag);
                want.extend(alert_ids(d, r));
            }
            want.sort();
            assert_eq!(got, want, "record {k}: {r}");
        }
        counted_as_alone(&pack, &alone);
    }
}

/// A large pack reads the index of a record that names its own before any search, and
/// searches only the literals of the rules that index admits: over many data streams
/// (more sets of admitted rules than get a search of their own), a stream outside every
/// rule's indices, and an EventBridge envelope that follows records naming their
/// indices, every rule decides as it does alone, and is counted as it is alone.
#[test]
fn a_record_naming_its_index_is_searched_for_only_the_rules_it_admits() {
    let n = 90;
    let rules: Vec<(String, String)> = (0..n)
        .map(|i| {
            let (id, text) = rule_with(&format!("r{i:02}"), &format!("f: \"w{i:02}x\""));
            let index = match i % 3 {
                0 => format!("[rule]\nindex = [\"logs-app{}.x-*\"]\n", i % 45),
                1 => "[rule]\nindex = [\"logs-aws.cloudtrail-*\"]\n".to_owned(),
                _ => format!(
                    "[rule]\nindex = [\"logs-app{}.x-*\", \"logs-shared-*\"]\n",
                    i % 45
                ),
            };
            (id, text.replace("[rule]\n", &index))
        })
        .collect();
    let mut next = xorshift(0x2545_f491_4f6c_dd1d);
    let mut records = Vec::new();
    for k in 0..4_000u64 {
        let t = 1_767_225_600 + k * 600;
        let value = format!("w{:02}x", next(n as u64));
        let record = match next(8) {
            // Outside every rule's indices.
            0 | 1 => format!(
                r#"{{"@timestamp":{t}000,"f":"{value}","data_stream":{{"type":"logs","dataset":"nowhere","namespace":"default"}}}}"#
            ),
            2 => format!(
                r#"{{"@timestamp":{t}000,"f":"{value}","data_stream":{{"type":"logs","dataset":"shared","namespace":"default"}}}}"#
            ),
            // A CloudTrail event in an EventBridge envelope, or raw.
            3 => format!(
                r#"{{"detail-type":"AWS API Call via CloudTrail","detail":{{"eventTime":"{}","eventSource":"s","eventName":"n","f":"{value}"}}}}"#,
                crate::time::format_timestamp(t as i64 * 1_000_000_000)
            ),
            4 => format!(
                r#"{{"@timestamp":{t}000,"f":"{value}","eventSource":"s","eventName":"n"}}"#
            ),
            // Not JSON, to be reported as alone.
            5 if next(10) == 0 => format!(r#"{{"@timestamp":{t}000,"f":"{value}","data_stream":"#),
            _ => format!(
                r#"{{"@timestamp":{t}000,"data_stream.type":"logs","data_stream.dataset":"app{}.x","data_stream.namespace":"p","f":"{value}"}}"#,
                next(45)
            ),
        };
        records.push(record);
    }
    for settings in ["", "unknown_index = \"match\""] {
        let settings = Settings::from_toml(settings).unwrap();
        let mut pack = Detector::open(&rules, &settings, None).unwrap();
        assert!(pack.gate.as_ref().is_some_and(|g| g.decides_prefilters()));
        let mut alone: Vec<Detector> = rules
            .iter()
            .map(|r| Detector::open(std::slice::from_ref(r), &settings, None).unwrap())
            .collect();
        let mut errors = (0, 0);
        for (k, r) in records.iter().enumerate() {
            let sort = |outputs: Vec<Output<'static>>, ids: &mut Vec<String>, e: &mut usize| {
                for o in outputs {
                    match o {
                        Output::Emit(a) => {
                            let v: serde_json::Value = serde_json::from_str(&a).unwrap();
                            ids.push(v["kibana.alert.rule.rule_id"].as_str().unwrap().to_owned());
                        }
                        Output::Error(_) => *e += 1,
                    }
                }
            };
            let mut got = Vec::new();
            sort(pack.process_collect(r.as_bytes()), &mut got, &mut errors.0);
            got.sort();
            let mut want = Vec::new();
            for d in &mut alone {
                sort(d.process_collect(r.as_bytes()), &mut want, &mut errors.1);
            }
            want.sort();
            assert_eq!(got, want, "record {k}: {r}");
        }
        assert!(errors.0 > 0 && errors.1 >= errors.0, "{errors:?}");
        counted_as_alone(&pack, &alone);
    }
    // A stream of records outside every rule's indices costs no search for literals.
    let mut pack = Detector::open(&rules, &Settings::default(), None).unwrap();
    for k in 0..50 {
        let r = format!(
            r#"{{"@timestamp":"2026-01-01T00:00:{k:02}Z","f":"w01x","data_stream":{{"type":"logs","dataset":"nowhere","namespace":"default"}}}}"#
        );
        assert!(alert_ids(&mut pack, &r).is_empty());
    }
    let s = pack.stats();
    assert_eq!((s.records, s.out_of_index), (50, 50));
    assert_eq!(pack.rule_stats(1).out_of_index, 50);
    assert!(!pack
        .gate
        .as_ref()
        .is_some_and(|g| g.built_every_literal_search()));
}

/// Rules whose tests give no value literal (numbers, ranges, networks, `exists`,
/// multi-fields) are prefiltered by their fields' keys: alone and in a large pack (whose
/// search leaves the keys to each rule), every decision equals the one without any
/// prefilter, over records that nest, dot, mix and escape their keys.
#[test]
fn a_fields_key_as_prefilter_never_changes_a_decision() {
    let queries = [
        "source.as.number: (216025 or 57138)",
        "user: * and f: *",
        "event.severity >= 3",
        "process.name.caseless: \"cmd.exe\"",
        "source.address: 10.0.0.0/8",
        "user.name: * and event.count < 5",
    ];
    let mut rules: Vec<(String, String)> = queries
        .iter()
        .enumerate()
        .map(|(i, q)| rule_with(&format!("k{i}"), q))
        .collect();
    // Past 64 literals, so the pack's one search decides its values and leaves the keys.
    rules.extend((0..70).map(|i| rule_with(&format!("v{i:02}"), &format!("f: \"w{i:02}x\""))));
    let mut next = xorshift(0x853c_49e6_748f_ea9b);
    let mut records = Vec::new();
    for k in 0..4_000u64 {
        let t = 1_767_225_600 + k * 60;
        let mut fields = vec![format!(r#""f":"w{:02}x""#, next(80))];
        let forms: [&[&str]; 6] = [
            &[
                r#""source":{"as":{"number":216025}}"#,
                r#""source.as.number":57138"#,
                r#""source":{"as.number":[1,57138]}"#,
                r#""source":{"as":{"n\u0075mber":216025}}"#,
            ],
            &[
                r#""user":{"name":"u1"}"#,
                r#""user.name":"u2""#,
                r#""user":"flat""#,
                r#""userName":"u3""#,
            ],
            &[
                r#""event":{"severity":4}"#,
                r#""event.severity":"7""#,
                r#""event":{"severity":1,"count":2}"#,
            ],
            &[
                r#""process":{"name":"CMD.EXE"}"#,
                r#""process.name":"cmd.exe""#,
                r#""process":{"name":"other"}"#,
            ],
            &[
                r#""source":{"address":"10.1.2.3"}"#,
                r#""source.address":"192.168.0.1""#,
            ],
            &[
                r#""event.count":3"#,
                r#""userIdentity":{"userName":"x"},"eventSource":"s","eventName":"n""#,
            ],
        ];
        for form in forms {
            if next(3) > 0 {
                fields.push(form[next(form.len() as u64) as usize].to_owned());
            }
        }
        records.push(format!(r#"{{"@timestamp":{t}000,{}}}"#, fields.join(",")).into_bytes());
    }
    for pack in [true, false] {
        let chosen: Vec<(String, String)> = match pack {
            true => rules.clone(),
            false => rules[..queries.len()].to_vec(),
        };
        let mut detectors: Vec<Detector> = match pack {
            true => vec![Detector::open(&chosen, &Settings::default(), None).unwrap()],
            false => chosen
                .iter()
                .map(|r| {
                    Detector::open(std::slice::from_ref(r), &Settings::default(), None).unwrap()
                })
                .collect(),
        };
        let mut plain: Vec<Detector> = match pack {
            true => vec![Detector::open(&chosen, &Settings::default(), None)
                .unwrap()
                .without_prefilter()],
            false => chosen
                .iter()
                .map(|r| {
                    Detector::open(std::slice::from_ref(r), &Settings::default(), None)
                        .unwrap()
                        .without_prefilter()
                })
                .collect(),
        };
        let mut rejected = 0;
        // The alerts are the same; an error is reported by both, or only by the run that
        // parses a record no literal admits (docs/contract.md §3: a record the prefilter
        // rejects is not judged; `k5` errs on `"user":"flat"` before it reads the count).
        for (i, r) in records.iter().enumerate() {
            for (d, p) in detectors.iter_mut().zip(&mut plain) {
                let (mut got, mut want) = (d.process_collect(r), p.process_collect(r));
                let errors = |o: &mut Vec<Output<'static>>| {
                    let e: Vec<Output<'static>> = o
                        .iter()
                        .filter(|x| matches!(x, Output::Error(_)))
                        .cloned()
                        .collect();
                    o.retain(|x| !matches!(x, Output::Error(_)));
                    e
                };
                let (got_errors, want_errors) = (errors(&mut got), errors(&mut want));
                assert_eq!(got, want, "record {i}");
                assert!(
                    got_errors.is_empty() || got_errors == want_errors,
                    "record {i}"
                );
            }
        }
        for i in 0..queries.len() {
            rejected += match pack {
                true => detectors[0].rule_stats(i).prefiltered,
                false => detectors[i].rule_stats(0).prefiltered,
            };
        }
        assert!(
            rejected > 4_000,
            "pack {pack}: the keys rejected {rejected}"
        );
    }
}

#[test]
fn a_learning_period_is_kept_across_a_snapshot() {
    let records = stream(20_000, 300, true);
    let settings = "learning_period = \"5d\"";
    let mut whole = Detector::from_config("", settings).unwrap();
    let expected = alerts(&mut whole, &records);
    let s = whole.stats();
    assert!(s.learned > 100 && s.alerts > 100, "{s:?}");
    let mut plain = Detector::from_config("", "").unwrap();
    assert_eq!(
        alerts(&mut plain, &records).len() as u64,
        s.alerts + s.learned,
        "every term learned would have alerted"
    );
    for split in [1, 500, 1_600, 10_000] {
        let mut first = Detector::from_config("", settings).unwrap();
        let mut got = alerts(&mut first, &records[..split]);
        let mut second = restore("", settings, &first.snapshot()).unwrap();
        got.extend(alerts(&mut second, &records[split..]));
        assert!(got == expected, "split at {split}: the alerts differ");
    }
}

#[test]
fn a_pack_keeps_each_rules_learning_period() {
    // Rule a's records from day 0, rule b's from day 5: each learns for a day from its
    // own first record.
    let start = 1_767_225_600 * crate::time::NANOS_PER_SEC;
    let record = |event: &str, day: i64, who: u32| {
        format!(
            r#"{{"@timestamp":"{}","event":{{"action":"{event}"}},"f":"{event}-{who}"}}"#,
            format_timestamp(start + day * NANOS_PER_DAY + i64::from(who) * NANOS_PER_MIN)
        )
        .into_bytes()
    };
    let mut records = Vec::new();
    for day in 0..10 {
        for who in 0..3 {
            records.push(record("a", day, who + day as u32 * 10));
            if day >= 5 {
                records.push(record("b", day, who + day as u32 * 10));
            }
        }
    }
    let rules = [
        rule_with("rule-a", "event.action: \"a\""),
        rule_with("rule-b", "event.action: \"b\""),
    ];
    let settings = Settings::from_toml("learning_period = \"1d\"").unwrap();
    let mut pack = Detector::open(&rules, &settings, None).unwrap();
    let got = alerts(&mut pack, &records);
    let alone = |id: &str| {
        let rule = rules.iter().find(|r| r.0 == id).unwrap();
        let mut d = Detector::open(std::slice::from_ref(rule), &settings, None).unwrap();
        let out = alerts(&mut d, &records);
        assert_eq!(d.stats().learned, 3, "{id}: its first day's three terms");
        out
    };
    let mut want = alone("rule-a");
    want.extend(alone("rule-b"));
    assert_eq!(want.len(), 27 + 12);
    let mut got_sorted = got.clone();
    got_sorted.sort();
    want.sort();
    assert!(got_sorted == want, "the pack alerts as each rule alone");
    assert_eq!(pack.stats().learned, 6);
}

/// A host that saves a snapshot now and then and journals every change in between,
/// stopped anywhere, restarts (snapshot, then the journal replayed) with the alerts of the
/// run that never stopped; a journal torn at its end costs only the torn entry's change.
#[test]
fn a_snapshot_and_its_journal_restart_where_the_run_stopped() {
    let records = stream(60_000, 400, true);
    let settings = "max_terms = 1050\nlearning_period = \"1d\"";
    let mut whole = Detector::from_config("", settings).unwrap();
    let expected = alerts(&mut whole, &records);
    for (saved, stopped) in [
        (0, 0),
        (0, 7_777),
        (10_000, 10_000),
        (20_000, 33_333),
        (50_000, 59_999),
    ] {
        let mut first = Detector::from_config("", settings).unwrap();
        let mut got = alerts(&mut first, &records[..saved]);
        let snapshot = (saved > 0).then(|| first.snapshot());
        let mut journal = first.journal_header(crate::journal::base_of(snapshot.as_deref()));
        first.keep_changes(true);
        for r in &records[saved..stopped] {
            got.extend(alerts(&mut first, std::slice::from_ref(r)));
            first.take_changes(&mut journal);
        }
        let mut second = match &snapshot {
            Some(s) => restore("", settings, s).unwrap(),
            None => Detector::from_config("", settings).unwrap(),
        };
        let read = crate::journal::read(&journal).unwrap();
        assert_eq!(read.damage, None);
        assert_eq!(read.base, crate::journal::base_of(snapshot.as_deref()));
        let (applied, skipped) = second.replay(&read);
        assert_eq!(skipped, 0);
        assert!(stopped == saved || applied > 0);
        got.extend(alerts(&mut second, &records[stopped..]));
        assert_eq!(
            got.len(),
            expected.len(),
            "saved at {saved}, stopped at {stopped}"
        );
        assert!(got == expected, "saved at {saved}, stopped at {stopped}");
    }
}

/// A host that lost the outputs of its last records before it stopped, and delivers those
/// records again after the restart, gets their alerts again (same ids): nothing is lost,
/// and only what it delivered twice is repeated. Also across a fold of the journal into
/// the state file just before the stop.
#[test]
fn records_delivered_again_after_a_restart_get_the_alerts_they_lost() {
    use std::collections::BTreeSet;
    let records = stream(30_000, 400, false);
    let mut whole = Detector::from_config("", "").unwrap();
    let expected: BTreeSet<String> = alerts(&mut whole, &records).into_iter().collect();
    for (folded, stopped, lost) in [
        (0, 5_000, 300),
        (10_000, 10_200, 400),
        (20_000, 29_000, 2_000),
    ] {
        let mut first = Detector::from_config("", "").unwrap();
        let mut got: Vec<String> = alerts(&mut first, &records[..folded - folded.min(lost)]);
        // The new sightings since `folded - lost` are carried into the journal that
        // follows the snapshot at `folded` (as the host's fold does).
        let mut carried = Vec::new();
        first.keep_changes(true);
        for r in &records[folded - folded.min(lost)..folded] {
            got.extend(alerts(&mut first, std::slice::from_ref(r)));
            first.take_changes(&mut carried);
        }
        let snapshot = (folded > 0).then(|| first.snapshot());
        let mut journal = first.journal_header(crate::journal::base_of(snapshot.as_deref()));
        for (e, raw) in crate::journal::Entries::new(&carried, 0).flatten() {
            if e.new.is_some() {
                journal.extend_from_slice(raw);
            }
        }
        for (i, r) in records[folded..stopped].iter().enumerate() {
            let out = alerts(&mut first, std::slice::from_ref(r));
            // The host loses the outputs of the last `lost` records before the stop.
            if folded + i < stopped - lost {
                got.extend(out);
            }
            first.take_changes(&mut journal);
        }
        let mut second = match &snapshot {
            Some(s) => restore("", "", s).unwrap(),
            None => Detector::from_config("", "").unwrap(),
        };
        second.replay(&crate::journal::read(&journal).unwrap());
        got.extend(alerts(&mut second, &records[stopped - lost..]));
        let ids: BTreeSet<String> = got.iter().cloned().collect();
        let missing = expected.difference(&ids).count();
        let extra = ids.difference(&expected).count();
        assert_eq!(
            (missing, extra),
            (0, 0),
            "folded at {folded}, stopped at {stopped}"
        );
    }
}
