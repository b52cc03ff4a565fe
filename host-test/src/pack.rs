//! A generated rule pack and an ECS stream for it, deterministic for a seed: for the pack
//! test (each rule's alerts in the pack equal its alerts alone) and the pack benchmark.
//!
//! The rules are written in Elastic's detection-rules format from four templates that
//! between them use value lists, wildcards, escapes, CIDR blocks, numbers, ranges, arrays
//! and one to three new-terms fields, with windows in hours and days and with and without
//! `timestamp_override`. The stream holds ECS records of the kinds the rules look at
//! (processes, connections, cloud actions, files), out of order now and then, plus a few
//! records of the wrong shape for some rules.

use crate::gen::{rfc3339, Rng};

/// A rule file in the detection-rules format, reading the indices `index` (TOML array
/// items).
pub fn rule_file(
    index: &str,
    rule_id: &str,
    name: &str,
    query: &str,
    fields: &[&str],
    window: &str,
    timestamp_override: Option<&str>,
) -> String {
    let ts = timestamp_override
        .map(|f| format!("timestamp_override = \"{f}\"\n"))
        .unwrap_or_default();
    let fields: Vec<String> = fields.iter().map(|f| format!("\"{f}\"")).collect();
    // No `index` at all for "": the rule reads every record.
    let index = match index {
        "" => String::new(),
        some => format!("index = [{some}]\n"),
    };
    format!(
        r#"[metadata]
creation_date = "2026/11/28"
maturity = "development"
updated_date = "2026/11/28"

[rule]
author = ["newterms"]
description = "{name}"
from = "now-9m"
{index}language = "kuery"
license = "Elastic License v2"
name = "{name}"
risk_score = 21
rule_id = "{rule_id}"
severity = "low"
tags = ["Generated"]
{ts}type = "new_terms"
query = '''
{query}
'''

[rule.new_terms]
field = "new_terms_fields"
value = [{fields}]
[[rule.new_terms.history_window_start]]
field = "history_window_start"
value = "{window}"
"#,
        fields = fields.join(", ")
    )
}

/// `count` generated rules, as `(file name, text)`.
pub fn rules(count: usize) -> Vec<(String, String)> {
    (0..count)
        .map(|i| {
            let k = i / 4;
            let (query, fields, window, ts): (String, Vec<&str>, String, Option<&str>) =
                match i % 4 {
                    0 => (
                        format!(
                            r#"event.category: process and process.name: (proc{k}.exe or "PROC{k}.EXE" or *\\proc{k}.exe) and not user.name: *$"#
                        ),
                        vec!["host.name", "user.name"],
                        format!("now-{}d", 1 + k % 10),
                        Some("event.ingested"),
                    ),
                    1 => (
                        format!(
                            r#"event.category: network and destination.port: {} and source.ip: (10.0.0.0/8 or "FD00::/8") and not destination.ip: 192.168.0.0/16"#,
                            port(k)
                        ),
                        vec!["source.ip"],
                        format!("now-{}h", 6 + k),
                        None,
                    ),
                    2 => (
                        format!(r#"event.action: action-{k} and event.outcome: (success or unknown)"#),
                        vec!["user.name", "cloud.region", "cloud.account.id"],
                        "now-10d".into(),
                        None,
                    ),
                    _ => (
                        format!(
                            r#"event.category: file and file.size >= {} and file.extension: (zip or "7z") and file.path: *\:\\Temp\\*"#,
                            1000 * (k + 1)
                        ),
                        vec!["user.name"],
                        format!("now-{}h", 1 + k),
                        Some("event.created"),
                    ),
                };
            let id = format!("nt-generated-{i:03}");
            let text = rule_file(
                INDICES[i % 4],
                &id,
                &format!("Generated rule {i}"),
                &query,
                &fields,
                &window,
                ts,
            );
            (format!("{id}.toml"), text)
        })
        .collect()
}

/// The indices of each of [`rules`]' four templates.
const INDICES: [&str; 4] = [
    r#""logs-endpoint.events.process-*", "winlogbeat-*""#,
    r#""logs-endpoint.events.network-*", "packetbeat-*""#,
    r#""logs-aws.cloudtrail-*""#,
    r#""logs-endpoint.events.file-*""#,
];

/// Where a record of [`stream`] says it comes from, for a record of template `kind`: its
/// template's data stream mostly, now and then another's, a Beat's, or nothing.
fn origin(rng: &mut Rng, kind: usize) -> String {
    let datasets = [
        "endpoint.events.process",
        "endpoint.events.network",
        "aws.cloudtrail",
        "endpoint.events.file",
    ];
    let ds = |d: &str| {
        format!(r#","data_stream":{{"type":"logs","dataset":"{d}","namespace":"default"}}"#)
    };
    match rng.below(20) {
        0 => ds(datasets[rng.below(4) as usize]),
        1 => r#","agent":{"type":"winlogbeat","version":"8.11.0"}"#.into(),
        2 => r#","data_stream.type":"logs","data_stream.dataset":"system.auth","data_stream.namespace":"default""#.into(),
        3 => String::new(),
        _ => ds(datasets[kind % 4]),
    }
}

fn port(k: usize) -> u16 {
    [
        22, 3389, 445, 5985, 23, 21, 1433, 3306, 5432, 6379, 27017, 9200, 11211, 2049,
    ][k % 14]
}

/// `n` ECS records for [`rules`] (any count of rules up to 56 find matches in it).
pub fn stream(seed: u64, n: usize) -> Vec<String> {
    let mut rng = Rng::new(seed);
    let start = 1_767_225_600i64; // 2026-01-01T00:00:00Z
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let mut t = start + i as i64 * 30;
        if rng.below(100) < 3 {
            t -= rng.below(3600) as i64; // out of order, up to an hour late
        }
        let ts = rfc3339(t);
        let k = rng.below(16);
        let user = if rng.below(20) == 0 {
            format!("HOST{}$", rng.below(5))
        } else {
            format!("u{}", rng.below(40))
        };
        let host = format!("h{}", rng.below(30));
        let shape = rng.below(5);
        let mut rec = match shape {
            0 => {
                let name = match rng.below(3) {
                    0 => format!("proc{k}.exe"),
                    1 => format!("C:\\\\Windows\\\\proc{k}.exe"),
                    _ => format!("other{k}.exe"),
                };
                format!(
                    r#"{{"@timestamp":"{ts}","event":{{"category":"process","ingested":"{ts}"}},"host":{{"name":"{host}"}},"user":{{"name":"{user}"}},"process":{{"name":"{name}","pid":{}}}}}"#,
                    rng.below(60000)
                )
            }
            1 => {
                let src = match rng.below(4) {
                    0 => format!("10.{}.{}.{}", rng.below(4), rng.below(4), rng.below(8)),
                    1 => format!("fd00::{:x}", rng.below(64)),
                    2 => format!("172.16.0.{}", rng.below(8)),
                    _ => format!("10.0.0.{}", rng.below(4)),
                };
                let dst = if rng.below(4) == 0 {
                    format!("192.168.1.{}", rng.below(250))
                } else {
                    format!("203.0.113.{}", rng.below(250))
                };
                let p = port(k as usize);
                let p = if rng.below(2) == 0 {
                    p.to_string()
                } else {
                    format!("\"{p}\"")
                };
                format!(
                    r#"{{"@timestamp":"{ts}","event":{{"category":"network"}},"source":{{"ip":"{src}"}},"destination":{{"ip":"{dst}","port":{p}}},"network":{{"transport":"tcp"}}}}"#
                )
            }
            2 => {
                let regions = ["us-east-1", "eu-west-1", "ap-south-1"];
                let region = if rng.below(5) == 0 {
                    format!(
                        r#"["{}","{}"]"#,
                        regions[rng.below(3) as usize],
                        regions[rng.below(3) as usize]
                    )
                } else {
                    format!(r#""{}""#, regions[rng.below(3) as usize])
                };
                let outcome = ["success", "failure", "unknown"][rng.below(3) as usize];
                let users = if rng.below(10) == 0 {
                    format!(r#"["{user}","u{}"]"#, rng.below(40))
                } else {
                    format!(r#""{user}""#)
                };
                format!(
                    r#"{{"@timestamp":"{ts}","event":{{"action":"action-{k}","outcome":"{outcome}"}},"user":{{"name":{users}}},"cloud":{{"region":{region},"account":{{"id":"{}"}}}}}}"#,
                    100 + rng.below(3)
                )
            }
            3 => {
                let ext = ["zip", "7z", "txt"][rng.below(3) as usize];
                let dir = if rng.below(3) == 0 {
                    "D:\\\\Data"
                } else {
                    "C:\\\\Temp"
                };
                format!(
                    r#"{{"@timestamp":"{ts}","event":{{"category":"file","created":"{ts}"}},"user":{{"name":"{user}"}},"file":{{"size":{},"extension":"{ext}","path":"{dir}\\f{k}.{ext}"}}}}"#,
                    rng.below(20000)
                )
            }
            _ => {
                // Shapes some rules cannot read: `user` a string, `process` a number.
                match rng.below(10) {
                    0 => format!(
                        r#"{{"@timestamp":"{ts}","event":{{"category":"process"}},"user":"{user}","process":{{"name":"proc{k}.exe"}},"host":{{"name":"{host}"}}}}"#
                    ),
                    1 => format!(
                        r#"{{"@timestamp":"{ts}","event":{{"action":"action-{k}","outcome":"success"}},"user":{{"name":"{user}"}},"cloud":{{"region":{{"name":"x"}},"account":{{"id":"1"}}}}}}"#
                    ),
                    _ => format!(
                        r#"{{"@timestamp":"{ts}","event":{{"category":"authentication"}},"user":{{"name":"{user}"}},"message":"unrelated {i}"}}"#
                    ),
                }
            }
        };
        // Its origin, as the last key.
        rec.pop();
        rec.push_str(&origin(&mut rng, shape as usize));
        rec.push('}');
        out.push(rec);
    }
    out
}

/// `count` generated rules over many fields: rule `i` reads fields of its own under
/// `labels.r<i>` (two or three each, so 200 rules read over 400 distinct fields), with the
/// constructs Elastic's rules use between them: value lists, wildcards with spaces, ranges,
/// `.caseless` multi-fields, free text and nested queries. For [`wide_stream`].
pub fn wide_rules(count: usize) -> Vec<(String, String)> {
    (0..count)
        .map(|i| {
            let f = |name: &str| format!("labels.r{i}.{name}");
            let (query, fields): (String, Vec<String>) = match i % 6 {
                0 => (
                    format!(
                        r#"{}: (k{i} or "K {i}") and not {}: bot*"#,
                        f("kind"),
                        f("actor")
                    ),
                    vec![f("actor")],
                ),
                1 => (
                    format!(
                        r#"{}: *wide {i} kind* and {} >= {}"#,
                        f("kind"),
                        f("count"),
                        i % 50
                    ),
                    vec![f("actor"), f("host")],
                ),
                2 => (format!(r#"{}.caseless: k{i}"#, f("kind")), vec![f("actor")]),
                3 => (
                    format!(r#""wide-{i}-marker" and {}: *"#, f("kind")),
                    vec![f("actor")],
                ),
                4 => (
                    format!(r#"{}:{{ kind: k{i} and level > 2 }}"#, f("events")),
                    vec![f("actor")],
                ),
                _ => (
                    format!(r#"{}: (k{i} or x{i}) and {}: *"#, f("kind"), f("host")),
                    vec![f("actor"), f("host"), f("count")],
                ),
            };
            let id = format!("nt-wide-{i:03}");
            let fields: Vec<&str> = fields.iter().map(String::as_str).collect();
            let text = rule_file(
                r#""logs-wide.*", "-logs-wide.excluded-*""#,
                &id,
                &format!("Wide rule {i}"),
                &query,
                &fields,
                "now-2h",
                None,
            );
            (format!("{id}.toml"), text)
        })
        .collect()
}

/// `n` records for [`wide_rules`] of `count` rules: each for one rule's fields, matching it
/// or not, with actors that come back within the window and ones that do not.
pub fn wide_stream(seed: u64, n: usize, count: usize) -> Vec<String> {
    let mut rng = Rng::new(seed);
    let start = 1_767_225_600i64;
    (0..n)
        .map(|j| {
            let t = rfc3339(start + j as i64 * 20);
            let i = rng.below(count as u64) as usize;
            let actor = if rng.below(6) == 0 {
                format!("bot{}", rng.below(3))
            } else {
                format!("a{}", rng.below(25))
            };
            let hit = rng.below(4) != 0;
            let kind = match (i % 6, hit) {
                (1, true) => format!("the wide {i} kind of thing"),
                (2, true) => format!("K{i}"),
                (_, true) if rng.below(5) == 0 => format!("K {i}"),
                (_, true) => format!("k{i}"),
                (_, false) => format!("k{}", i + 1),
            };
            let body = match i % 6 {
                4 => format!(
                    r#""events":[{{"kind":"{kind}","level":{}}},{{"kind":"other","level":9}}]"#,
                    rng.below(5)
                ),
                3 => format!(r#""kind":"{kind}","note":"wide-{}-marker""#, if hit { i } else { i + 1 }),
                _ => format!(r#""kind":"{kind}""#),
            };
            let dataset = match rng.below(10) {
                0 => "wide.excluded",
                1 => "other",
                _ => "wide.main",
            };
            format!(
                r#"{{"@timestamp":"{t}","labels":{{"r{i}":{{{body},"actor":"{actor}","host":"h{}","count":{}}}}},"data_stream":{{"type":"logs","dataset":"{dataset}","namespace":"default"}}}}"#,
                rng.below(4),
                rng.below(60)
            )
        })
        .collect()
}
