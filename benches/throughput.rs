//! Throughput of every path on the same generated CloudTrail mix, side by side, plus the
//! cost against the number of terms held, bytes per term, and an optional soak.
//!
//! `bash .ci/bench [--records N] [--runs R] [--soak N] [--only-elastic] [--only-instructions]` (or `cargo bench -p host-test
//! --bench throughput -- ...`). Times are medians of R runs; every path must agree on what
//! it found, or the benchmark fails.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use newterms::{Detector, Output};
use newterms_host::gen::{Generator, Mix, Templates};
use newterms_host::{Costs, FluentBitModule, Runtime, Session, FLUENTBIT_MODULE};
use serde_json::Value;

#[path = "throughput/hosts.rs"]
mod hosts;

struct Args {
    records: usize,
    runs: usize,
    soak: Option<usize>,
    skip_terms: bool,
    /// Only the table of Elastic's whole set (`--only-elastic`).
    only_elastic: bool,
    /// Only the Fluent Bit module's instruction counts (`--only-instructions`).
    only_instructions: bool,
}

fn args() -> Result<Args> {
    let mut a = Args {
        records: 200_000,
        runs: 5,
        soak: None,
        skip_terms: false,
        only_elastic: false,
        only_instructions: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut num = |name: &str| -> Result<usize> {
            it.next()
                .and_then(|v| v.replace('_', "").parse().ok())
                .with_context(|| format!("{name} needs a number"))
        };
        match arg.as_str() {
            "--records" => a.records = num("--records")?,
            "--runs" => a.runs = num("--runs")?.max(1),
            "--soak" => a.soak = Some(num("--soak")?),
            "--skip-terms" => a.skip_terms = true,
            "--only-elastic" => a.only_elastic = true,
            "--only-instructions" => a.only_instructions = true,
            "--bench" => {}
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(a)
}

/// Median seconds of `runs` runs of `f`, which returns what it found (checked equal).
fn measure<T: PartialEq + std::fmt::Debug>(
    runs: usize,
    mut f: impl FnMut() -> Result<T>,
) -> Result<(f64, T)> {
    let mut times = Vec::new();
    let mut found = None;
    for _ in 0..runs {
        let t = Instant::now();
        let got = f()?;
        times.push(t.elapsed().as_secs_f64());
        if let Some(prev) = &found {
            if *prev != got {
                bail!("a run found {got:?}, another {prev:?}");
            }
        }
        found = Some(got);
    }
    times.sort_by(f64::total_cmp);
    Ok((times[times.len() / 2], found.context("no run")?))
}

/// The number of alerts of a detector run over all records.
fn native(records: &[String]) -> Result<usize> {
    let mut d = Detector::from_config("", "")?;
    let mut alerts = 0;
    for r in records {
        d.process(r.as_bytes(), &mut |o| {
            if let Output::Emit(_) = o {
                alerts += 1
            }
        });
    }
    Ok(alerts)
}

fn component_batch(rt: &Runtime, batches: &[Vec<Vec<u8>>]) -> Result<usize> {
    let mut s = Session::open(rt, "", "")?.map_err(|e| anyhow::anyhow!(e.message))?;
    let mut alerts = 0;
    for b in batches {
        alerts += s.process_batch(b)?.len();
    }
    Ok(alerts)
}

fn component_lines(rt: &Runtime, packed: &[Vec<u8>]) -> Result<usize> {
    let mut s = Session::open(rt, "", "")?.map_err(|e| anyhow::anyhow!(e.message))?;
    let mut alerts = 0;
    for p in packed {
        alerts += s.process_lines(p)?.len();
    }
    Ok(alerts)
}

fn component_single(rt: &Runtime, records: &[String]) -> Result<usize> {
    let mut s = Session::open(rt, "", "")?.map_err(|e| anyhow::anyhow!(e.message))?;
    let mut alerts = 0;
    for r in records {
        alerts += s.process(r.as_bytes())?.len();
    }
    Ok(alerts)
}

fn fluentbit(module: &FluentBitModule, records: &[String]) -> Result<usize> {
    let mut m = module.instantiate("newterms_filter", None)?;
    let mut alerts = 0;
    for r in records {
        if !m
            .call(b"aws.cloudtrail", (0, 0), Some(r.as_bytes()))?
            .is_empty()
        {
            alerts += 1;
        }
    }
    Ok(alerts)
}

/// The Fluent Bit calling convention's own cost: the same calls (two copies in through
/// `malloc`, the filter, two `free`s) with a record of two bytes, `{}`, which the filter
/// rejects at once.
fn fluentbit_floor(module: &FluentBitModule, n: usize) -> Result<usize> {
    let mut m = module.instantiate("newterms_filter", None)?;
    let mut answers = 0;
    for _ in 0..n {
        answers += m.call(b"aws.cloudtrail", (0, 0), Some(b"{}"))?.len();
    }
    Ok(answers)
}

/// The naive way, in this project's own code: parse every record fully into a
/// `serde_json::Value`, then decide with the same rule and the same window.
fn naive(records: &[String]) -> Result<usize> {
    let window = 10 * 86_400 * newterms::time::NANOS_PER_SEC;
    let mut last_seen: HashMap<String, i64> = HashMap::new();
    let mut alerts = 0;
    for r in records {
        let Ok(v) = serde_json::from_str::<Value>(r) else {
            continue;
        };
        let provider = v.get("eventSource").and_then(Value::as_str);
        let action = v.get("eventName").and_then(Value::as_str);
        let kind = v.pointer("/userIdentity/type").and_then(Value::as_str);
        if provider != Some("sts.amazonaws.com")
            || action != Some("GetCallerIdentity")
            || kind == Some("AssumedRole")
        {
            continue;
        }
        let Some(arn) = v
            .pointer("/userIdentity/arn")
            .and_then(Value::as_str)
            .filter(|a| !a.is_empty())
        else {
            continue;
        };
        let Some(ts) = v
            .get("eventTime")
            .and_then(Value::as_str)
            .and_then(newterms::time::parse_timestamp)
        else {
            continue;
        };
        let new = match last_seen.get_mut(arn) {
            Some(seen) => {
                let new = ts - *seen > window;
                *seen = (*seen).max(ts);
                new
            }
            None => {
                last_seen.insert(arn.to_owned(), ts);
                true
            }
        };
        if new {
            let mut alert = v.clone();
            alert["kibana.alert.new_terms"] = Value::from(vec![arn]);
            alerts += usize::from(!alert.to_string().is_empty());
        }
    }
    Ok(alerts)
}

const JQ_FILTER: &str = r#"select(.eventSource == "sts.amazonaws.com" and .eventName == "GetCallerIdentity" and .userIdentity.type != "AssumedRole")"#;

/// `jq` doing only the filter (as a user might instead); returns matches.
fn jq(file: &PathBuf) -> Result<usize> {
    let out = Command::new("jq")
        .args(["-c", JQ_FILTER])
        .arg(file)
        .stderr(Stdio::inherit())
        .output()
        .context("running jq (apt-get install jq)")?;
    if !out.status.success() {
        bail!("jq failed");
    }
    Ok(out.stdout.iter().filter(|&&b| b == b'\n').count())
}

fn matched(records: &[String]) -> Result<u64> {
    let mut d = Detector::from_config("", "")?;
    for r in records {
        d.process(r.as_bytes(), &mut |_| {});
    }
    Ok(d.stats().matched)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores, {cpu}")
}

/// A GetCallerIdentity record of identity `i` at second `t` (ARN-sized term).
fn gci(i: u64, t: i64) -> Vec<u8> {
    format!(
        r#"{{"eventTime":"{}","eventSource":"sts.amazonaws.com","eventName":"GetCallerIdentity","userIdentity":{{"type":"IAMUser","arn":"arn:aws:iam::123456789012:user/u{i:010}"}}}}"#,
        newterms_host::gen::rfc3339(1_767_225_600 + t)
    )
    .into_bytes()
}

fn main() -> Result<()> {
    let a = args()?;
    let shared = std::env::var_os("NEWTERMS_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"));
    let templates = Templates::load(&shared.join("cloudtrail"))?;
    let mix = Mix::default();
    let records = Generator::new(&templates, mix.clone()).generate(a.records);
    let bytes: usize = records.iter().map(|r| r.len() + 1).sum();
    let mb = bytes as f64 / 1e6;
    let gci_count = records
        .iter()
        .filter(|r| r.contains("\"GetCallerIdentity\""))
        .count();
    println!(
        "newterms throughput: {} records, {:.1} MB (mean {} B), {:.2}% GetCallerIdentity, {} identities, seed {}",
        records.len(),
        mb,
        bytes / records.len().max(1),
        100.0 * gci_count as f64 / records.len().max(1) as f64,
        mix.identities,
        mix.seed
    );
    println!("machine: {}; medians of {} runs", machine(), a.runs);

    if a.only_instructions {
        return hosts::instructions(&records);
    }
    let rt = Runtime::embedded()?;
    if a.only_elastic {
        elastic_set(&a, &rt, &records)?;
        let ecs = newterms_host::pack::stream(3, records.len().min(100_000));
        hosts::run_against_jq(&records, &ecs, a.runs.min(3))?;
        hosts::pack_instructions(&records)?;
        return hosts::real_fluent_bit(&records, a.runs.min(3));
    }
    let batches: Vec<Vec<Vec<u8>>> = records
        .chunks(256)
        .map(|c| c.iter().map(|r| r.as_bytes().to_vec()).collect())
        .collect();
    let ndjson = std::env::temp_dir().join(format!("newterms-bench-{}.ndjson", std::process::id()));
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&ndjson)?);
        for r in &records {
            writeln!(f, "{r}")?;
        }
    }

    let packed: Vec<Vec<u8>> = records
        .chunks(1024)
        .map(|c| c.join("\n").into_bytes())
        .collect();
    let fb_module = FluentBitModule::compile(FLUENTBIT_MODULE)?;
    let has_jq = Command::new("jq").arg("--version").output().is_ok();
    let want_matches = matched(&records)? as usize;
    // Every path, run once per round, round after round: each path's ratio to the native
    // core is the median of its per-round ratios, so a slow spell of this shared machine
    // weighs on both sides of a ratio alike.
    type Path<'p> = (&'static str, Box<dyn FnMut() -> Result<usize> + 'p>);
    let mut paths: Vec<Path<'_>> = vec![
        (
            "native core (Detector::process)",
            Box::new(|| native(&records)),
        ),
        (
            "component, process-lines (1024 NDJSON lines/call)",
            Box::new(|| component_lines(&rt, &packed)),
        ),
        (
            "component, process-batch (256/call)",
            Box::new(|| component_batch(&rt, &batches)),
        ),
        (
            "component, process (1/call)",
            Box::new(|| component_single(&rt, &records)),
        ),
        (
            "Fluent Bit module in wasmtime (1/call)",
            Box::new(|| fluentbit(&fb_module, &records)),
        ),
        (
            "Fluent Bit convention alone: the same calls with `{}`",
            Box::new(|| fluentbit_floor(&fb_module, records.len())),
        ),
        (
            "naive: serde_json::Value per record",
            Box::new(|| naive(&records)),
        ),
    ];
    if has_jq {
        paths.push(("jq, the filter only", Box::new(|| jq(&ndjson))));
    } else {
        println!("(jq not installed: its row is left out)");
    }
    let names: Vec<&str> = paths.iter().map(|(name, _)| *name).collect();
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); paths.len()];
    let mut found: Vec<usize> = vec![0; paths.len()];
    for _ in 0..a.runs {
        for (i, (_, run)) in paths.iter_mut().enumerate() {
            let t = Instant::now();
            found[i] = run()?;
            times[i].push(t.elapsed().as_secs_f64());
        }
    }
    drop(paths);
    let _ = std::fs::remove_file(&ndjson);
    let alerts = found[0];
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!();
    println!("| path | records/s | MB/s | vs native | found |");
    println!("|---|---:|---:|---:|---|");
    for (i, t) in times.iter().enumerate() {
        let what = match names[i] {
            n if n.starts_with("Fluent Bit convention") => "(the floor)".to_owned(),
            n if n.starts_with("jq") => {
                if found[i] != want_matches {
                    bail!("jq matched {} records, the core {want_matches}", found[i]);
                }
                format!("{} matches", found[i])
            }
            _ => {
                if found[i] != alerts {
                    bail!(
                        "{} found {} alerts, the native core {alerts}",
                        names[i],
                        found[i]
                    );
                }
                format!("{} alerts", found[i])
            }
        };
        let ratios: Vec<f64> = times[0].iter().zip(t).map(|(n, p)| n / p).collect();
        let m = median(t);
        println!(
            "| {} | {:.0} | {:.1} | {:.3} | {what} |",
            names[i],
            records.len() as f64 / m,
            mb / m,
            median(&ratios),
        );
    }

    hosts::instructions(&records)?;
    hosts::startup(a.runs)?;
    hosts::real_fluent_bit(&records, a.runs.min(3))?;
    packs(&a, &rt, &records, &packed, mb)?;
    elastic_set(&a, &rt, &records)?;
    let ecs = newterms_host::pack::stream(3, records.len().min(100_000));
    hosts::run_against_jq(&records, &ecs, a.runs.min(3))?;
    if !a.skip_terms {
        terms_held(&a, &rt, &records)?;
    }
    if let Some(n) = a.soak {
        soak(&rt, n)?;
    }
    Ok(())
}

/// Alerts of a pack (or one rule) over the records, natively.
fn native_rules(rules: &[(String, String)], records: &[String]) -> Result<usize> {
    let mut d = Detector::open(rules, &newterms::Settings::default(), None)?;
    let mut alerts = 0;
    for r in records {
        d.process(r.as_bytes(), &mut |o| {
            if matches!(o, Output::Emit(_)) {
                alerts += 1;
            }
        });
    }
    Ok(alerts)
}

/// The same through the component, NDJSON packed per call.
fn component_rules(rt: &Runtime, rules: &[(String, String)], packed: &[Vec<u8>]) -> Result<usize> {
    let set = newterms_host::Rules::Pack(rules.to_vec());
    let mut s = Session::open_rules(
        rt,
        &set,
        "",
        None,
        newterms_host::Limits::for_rules(&set, ""),
    )?
    .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    let mut alerts = 0;
    for p in packed {
        alerts += s
            .process_lines(p)?
            .iter()
            .filter(|o| matches!(o.output, newterms_host::Output::Emit(_)))
            .count();
    }
    Ok(alerts)
}

/// Rule packs: the built-in rule with 49 and 99 generated ECS rules over the CloudTrail
/// mix (which none of them matches), against the built-in rule alone; then the 50-rule
/// pack over an ECS stream that its rules match, against running each rule alone.
fn packs(a: &Args, rt: &Runtime, records: &[String], packed: &[Vec<u8>], mb: f64) -> Result<()> {
    let seed = vec![("built-in".to_owned(), newterms::DEFAULT_RULE.to_owned())];
    let pack = |n: usize| {
        let mut p = seed.clone();
        p.extend(newterms_host::pack::rules(n - 1));
        p
    };
    let (p50, p100) = (pack(50), pack(100));
    let (t1, want) = measure(a.runs, || native_rules(&seed, records))?;
    let mut rows = vec![("1 rule (built-in), native", t1)];
    for (name, rules) in [("50 rules, native", &p50), ("100 rules, native", &p100)] {
        let (t, got) = measure(a.runs, || native_rules(rules, records))?;
        if got != want {
            bail!("{name} found {got} alerts, the built-in rule alone {want}");
        }
        rows.push((name, t));
    }
    let (tc1, _) = measure(a.runs, || component_lines(rt, packed))?;
    let (tc50, got) = measure(a.runs, || component_rules(rt, &p50, packed))?;
    if got != want {
        bail!("the component's 50-rule pack found {got} alerts, not {want}");
    }
    println!();
    println!("Rule packs over the CloudTrail mix (the generated ECS rules match none of it):");
    println!();
    println!("| rules | records/s | MB/s | vs 1 rule |");
    println!("|---|---:|---:|---:|");
    for (name, t) in &rows {
        println!(
            "| {name} | {:.0} | {:.1} | {:.3} |",
            records.len() as f64 / t,
            mb / t,
            t1 / t
        );
    }
    for (name, t) in [
        ("1 rule, component process-lines", tc1),
        ("50 rules, component process-lines", tc50),
    ] {
        println!(
            "| {name} | {:.0} | {:.1} | {:.3} |",
            records.len() as f64 / t,
            mb / t,
            tc1 / t
        );
    }

    let ecs = newterms_host::pack::stream(1, records.len().min(100_000));
    let ecs_mb = ecs.iter().map(|r| r.len() + 1).sum::<usize>() as f64 / 1e6;
    let (t_pack, n_pack) = measure(a.runs, || native_rules(&p50, &ecs))?;
    let (t_alone, n_alone) = measure(a.runs, || {
        p50.iter()
            .map(|r| native_rules(std::slice::from_ref(r), &ecs))
            .sum::<Result<usize>>()
    })?;
    if n_pack != n_alone {
        bail!("the pack found {n_pack} alerts, its rules alone {n_alone}");
    }
    println!();
    println!(
        "The 50-rule pack over {} ECS records its rules match ({n_pack} alerts):",
        ecs.len()
    );
    println!();
    println!("| run | records/s | MB/s | vs the pack |");
    println!("|---|---:|---:|---:|");
    for (name, t) in [
        ("one pack of 50 rules", t_pack),
        ("50 runs, one rule each", t_alone),
    ] {
        println!(
            "| {name} | {:.0} | {:.1} | {:.3} |",
            ecs.len() as f64 / t,
            ecs_mb / t,
            t_pack / t
        );
    }
    Ok(())
}

/// Elastic's whole `new_terms` set as one pack (`.ci/elastic-rules`), against the built-in
/// rule alone: throughput natively and in the component, and the component's memory, on
/// the CloudTrail mix and on an ECS stream.
fn elastic_set(a: &Args, rt: &Runtime, records: &[String]) -> Result<()> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/elastic-rules");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        println!();
        println!(
            "(no Elastic rules at {}: run bash .ci/elastic-rules)",
            dir.display()
        );
        return Ok(());
    };
    let mut files: Vec<_> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    let set: Vec<(String, String)> = files
        .iter()
        .map(|p| Ok((p.display().to_string(), std::fs::read_to_string(p)?)))
        .collect::<Result<_>>()?;
    let seed = vec![("built-in".to_owned(), newterms::DEFAULT_RULE.to_owned())];
    let ecs: Vec<String> = newterms_host::pack::stream(3, records.len().min(100_000));
    println!();
    println!(
        "Elastic's {} new_terms rules as one pack, against the built-in rule alone:",
        set.len()
    );
    println!();
    println!("| stream | rules | native records/s | vs 1 rule | component records/s | vs 1 rule | component memory |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    for (stream, recs) in [("CloudTrail mix", records), ("ECS stream", &ecs[..])] {
        let packed: Vec<Vec<u8>> = recs
            .chunks(1024)
            .map(|c| c.join("\n").into_bytes())
            .collect();
        let mut base = (0.0, 0.0);
        for (name, rules) in [("built-in", &seed), ("the whole set", &set)] {
            let (tn, _) = measure(a.runs, || native_rules(rules, recs))?;
            let (tc, _) = measure(a.runs, || component_rules(rt, rules, &packed))?;
            let rules_set = newterms_host::Rules::Pack(rules.clone());
            let mut s = Session::open_rules(
                rt,
                &rules_set,
                "",
                None,
                newterms_host::Limits::for_rules(&rules_set, ""),
            )?
            .map_err(|e| anyhow::anyhow!("{}", e.message))?;
            for p in &packed {
                s.process_lines(p)?;
            }
            let mem = s.memory_bytes() as f64 / (1 << 20) as f64;
            if base.0 == 0.0 {
                base = (tn, tc);
            }
            println!(
                "| {stream} | {name} | {:.0} | {:.3} | {:.0} | {:.3} | {mem:.1} MiB |",
                recs.len() as f64 / tn,
                base.0 / tn,
                recs.len() as f64 / tc,
                base.1 / tc
            );
        }
    }
    println!();
    println!("Where the whole set's time goes natively, stage by stage (each stage timed over every record it sees):");
    println!();
    println!("| stream | gate (index read or foretold, search, prefilters) | parse | index | decide | records chosen / parsed / admitted | rule decisions per admitted record |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (stream, recs) in [("CloudTrail mix", records), ("ECS stream", &ecs[..])] {
        let mut d = Detector::open(&set, &newterms::Settings::default(), None)?;
        let texts: Vec<&[u8]> = recs.iter().map(|r| r.as_bytes()).collect();
        let t = d.profile_stages(&texts);
        let total = t.gate_seconds + t.parse_seconds + t.index_seconds + t.decide_seconds;
        let us = |s: f64| s * 1e6 / t.records as f64;
        let cell = |s: f64| format!("{:.2} µs ({:.0}%)", us(s), 100.0 * s / total);
        println!(
            "| {stream} | {} | {} | {} | {} | {} / {} / {} | {:.1} |",
            cell(t.gate_seconds),
            cell(t.parse_seconds),
            cell(t.index_seconds),
            cell(t.decide_seconds),
            t.records,
            t.chosen,
            t.admitted,
            t.decisions as f64 / t.admitted.max(1) as f64
        );
    }
    Ok(())
}

/// Throughput on the mix with 1 thousand, 100 thousand and 1 million terms already held,
/// natively and through the component; and the guest's bytes per term.
fn terms_held(a: &Args, rt: &Runtime, records: &[String]) -> Result<()> {
    let settings = "max_terms = 2000000\nmax_table_bytes = 1073741824";
    println!();
    println!("| terms held | native records/s | component batch records/s | guest memory | bytes per term |");
    println!("|---:|---:|---:|---:|---:|");
    let batches: Vec<Vec<Vec<u8>>> = records
        .chunks(256)
        .map(|c| c.iter().map(|r| r.as_bytes().to_vec()).collect())
        .collect();
    let mut base_memory = None;
    for held in [1_000u64, 100_000, 1_000_000] {
        // Terms from an hour before the mix, so none expires and none is the mix's.
        let prefill: Vec<Vec<u8>> = (0..held).map(|i| gci(1_000_000_000 + i, -3600)).collect();
        let mut d = Detector::from_config("", settings)?;
        for r in &prefill {
            d.process(r, &mut |_| {});
        }
        let (t_native, _) = measure(a.runs, || {
            for r in records {
                d.process(r.as_bytes(), &mut |_| {});
            }
            Ok(())
        })?;
        let mut s = Session::open(rt, "", settings)?.map_err(|e| anyhow::anyhow!(e.message))?;
        let empty = s.memory_bytes();
        let base = *base_memory.get_or_insert(empty);
        for chunk in prefill.chunks(4096) {
            s.process_batch(chunk)?;
        }
        let memory = s.memory_bytes();
        let (t_comp, _) = measure(a.runs, || {
            for b in &batches {
                s.process_batch(b)?;
            }
            Ok(())
        })?;
        let held_now = s.stats()?.terms_held;
        println!(
            "| {held} | {:.0} | {:.0} | {:.1} MiB | {:.1} |",
            records.len() as f64 / t_native,
            records.len() as f64 / t_comp,
            memory as f64 / (1 << 20) as f64,
            (memory - base) as f64 / held_now as f64
        );
    }
    println!("(bytes per term: guest memory growth over terms held, terms of 45 bytes; 64 KiB page granularity)");
    Ok(())
}

/// `n` records, one million distinct ARNs, through the component: the guest's memory is
/// printed every million records and must stop growing once the table is full.
fn soak(rt: &Runtime, n: usize) -> Result<()> {
    let settings = "max_terms = 1000000\nmax_table_bytes = 134217728";
    let mut s = Session::open(rt, "", settings)?.map_err(|e| anyhow::anyhow!(e.message))?;
    println!();
    println!(
        "soak: {n} records, 1,000,000 distinct ARNs, max_terms 1,000,000, through the component"
    );
    let t = Instant::now();
    let mut batch = Vec::with_capacity(1024);
    let mut at_full = None;
    let mut alerts = 0usize;
    for i in 0..n as u64 {
        batch.push(gci(i % 1_000_000, i as i64 / 100));
        if batch.len() == 1024 {
            alerts += s.process_batch(&batch)?.len();
            batch.clear();
        }
        if (i + 1) % 1_000_000 == 0 {
            let mem = s.memory_bytes();
            println!(
                "  {:>10} records: guest memory {:.1} MiB, terms held {}",
                i + 1,
                mem as f64 / (1 << 20) as f64,
                s.stats()?.terms_held
            );
            if i + 1 == 2_000_000 {
                at_full = Some(mem);
            }
        }
    }
    alerts += s.process_batch(&batch)?.len();
    let peak = s.memory_bytes();
    println!(
        "soak: {:.1} s, {alerts} alerts, peak guest memory {:.1} MiB{}",
        t.elapsed().as_secs_f64(),
        peak as f64 / (1 << 20) as f64,
        match at_full {
            Some(m) if m == peak => ", unchanged since the table filled",
            Some(_) => ", GREW after the table filled",
            None => "",
        }
    );
    Ok(())
}
