//! The hosts' own figures: the Fluent Bit module's instruction counts (what WAMR's
//! interpreter runs), the real Fluent Bit's whole-run CPU, and the command's start-up.

use super::*;

/// WebAssembly instructions per record in the Fluent Bit module (wasmtime's fuel): what
/// Fluent Bit's interpreter runs. For the mix, and for the convention alone (`{}`). With
/// `NEWTERMS_MODULE_BEFORE` naming an earlier build of the module, the same figures for it
/// first, for a before and after.
pub(super) fn instructions(records: &[String]) -> Result<()> {
    if let Some(path) = std::env::var_os("NEWTERMS_MODULE_BEFORE") {
        let before = std::fs::read(&path).with_context(|| {
            format!(
                "reading NEWTERMS_MODULE_BEFORE={}",
                Path::new(&path).display()
            )
        })?;
        println!();
        println!("Before: {}", Path::new(&path).display());
        instructions_of(&before, records)?;
        println!();
        println!("After: this build");
    }
    instructions_of(FLUENTBIT_MODULE, records)?;
    pack_instructions(records)
}

/// Instructions per record in the Fluent Bit module with Elastic's whole `new_terms` set
/// as one pack (from `target/elastic-rules`), against the built-in rule: what the pack
/// costs in WAMR's interpreter, deterministically.
pub(super) fn pack_instructions(records: &[String]) -> Result<()> {
    let elastic = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/elastic-rules");
    let Ok(entries) = std::fs::read_dir(&elastic) else {
        println!(
            "(no whole-set instructions: no Elastic rules at {})",
            elastic.display()
        );
        return Ok(());
    };
    let dir = std::env::temp_dir().join(format!("newterms-bench-pack-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("rules"))?;
    for e in entries.flatten() {
        if e.path().extension().is_some_and(|x| x == "toml") {
            std::fs::copy(e.path(), dir.join("rules").join(e.file_name()))?;
        }
    }
    let module = FluentBitModule::compile_metered(FLUENTBIT_MODULE)?;
    let n = records.len().min(30_000);
    println!();
    println!(
        "Fluent Bit module, instructions per record over {n} records of the mix (no tag names an index):"
    );
    println!();
    println!("| rules | mean | median | 99th percentile | loading the rules |");
    println!("|---|---:|---:|---:|---:|");
    let mut base = 0.0;
    for (name, config) in [("built-in", None), ("Elastic's whole set", Some(&dir))] {
        let mut m = module.instantiate("newterms_filter", config.map(|d| d.as_path()))?;
        m.call(b"t", (0, 0), Some(b"{}"))?; // loads the rules: not per record
        let load = m.instructions();
        let mut all = Vec::with_capacity(n);
        for r in &records[..n] {
            let before = m.instructions();
            m.call(b"aws.cloudtrail", (0, 0), Some(r.as_bytes()))?;
            all.push(m.instructions() - before);
        }
        all.sort_unstable();
        let mean = all.iter().sum::<u64>() as f64 / n.max(1) as f64;
        if base == 0.0 {
            base = mean;
        }
        println!(
            "| {name} | {mean:.0} ({:.1}x) | {} | {} | {load} |",
            mean / base,
            Costs::percentile(&all, 50),
            Costs::percentile(&all, 99)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn instructions_of(module: &[u8], records: &[String]) -> Result<()> {
    let module = FluentBitModule::compile_metered(module)?;
    let n = records.len().min(50_000);
    let mut m = module.instantiate("newterms_filter", None)?;
    m.call(b"t", (0, 0), Some(b"{}"))?; // loads the rule: not per record
    let costs = m.costs(b"aws.cloudtrail", records[..n].iter().map(|r| r.as_bytes()))?;
    let all: u64 = [&costs.rejected, &costs.read, &costs.answered]
        .iter()
        .flat_map(|v| v.iter())
        .sum();
    let mix = all as f64 / n as f64;
    let before = m.instructions();
    for _ in 0..n {
        m.call(b"aws.cloudtrail", (0, 0), Some(b"{}"))?;
    }
    let floor = (m.instructions() - before) as f64 / n as f64;
    let bytes = records[..n].iter().map(String::len).sum::<usize>() as f64 / n as f64;
    println!();
    println!(
        "Fluent Bit module, WebAssembly instructions per record (what WAMR's interpreter runs): \
         {mix:.0} on the mix ({:.2} per byte of record), {floor:.0} for `{{}}` (the \
         convention's own calls)",
        mix / bytes
    );
    println!();
    println!("| record | records | median | 99th percentile | mean |");
    println!("|---|---:|---:|---:|---:|");
    for (what, v) in [
        ("rejected by the prefilter", &costs.rejected),
        ("parsed, no alert", &costs.read),
        ("alert", &costs.answered),
    ] {
        let mean = v.iter().sum::<u64>() as f64 / v.len().max(1) as f64;
        println!(
            "| {what} | {} | {} | {} | {mean:.0} |",
            v.len(),
            Costs::percentile(v, 50),
            Costs::percentile(v, 99)
        );
    }
    Ok(())
}

/// The `newterms` command's start-up: CPU for a run over an empty input, the first time
/// (compiling the component into an empty cache) and after (loading it from the cache),
/// and for a `check-rule` of Elastic's whole `new_terms` set. Medians of `runs`.
pub(super) fn startup(runs: usize) -> Result<()> {
    let exe = env!("CARGO_BIN_EXE_newterms");
    let cache = std::env::temp_dir().join(format!("newterms-bench-cache-{}", std::process::id()));
    let cpu = |args: &[&str], fresh: bool| -> Result<f64> {
        median_cpu(runs, || {
            if fresh {
                let _ = std::fs::remove_dir_all(&cache);
            }
            let mut c = Command::new(exe);
            c.args(args).env("NEWTERMS_CACHE_DIR", &cache);
            c
        })
    };
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/elastic-rules");
    let mut rows = vec![
        (
            "`newterms run` on an empty input, compiling (no cache)".to_owned(),
            cpu(&["run", "-"], true)?,
        ),
        (
            "`newterms run` on an empty input, from the cache".to_owned(),
            cpu(&["run", "-"], false)?,
        ),
    ];
    match newterms_host::rule_files(std::slice::from_ref(&rules)) {
        Ok(files) if !files.is_empty() => rows.push((
            format!(
                "`newterms check-rule` of {} rules, from the cache",
                files.len()
            ),
            cpu(&["check-rule", &rules.display().to_string()], false)?,
        )),
        _ => println!(
            "(no Elastic rules at {}: run bash .ci/elastic-rules)",
            rules.display()
        ),
    }
    let _ = std::fs::remove_dir_all(&cache);
    println!();
    println!(
        "Start-up of the `newterms` command, CPU (user + system, to 10 ms), median of {runs}:"
    );
    println!();
    println!("| run | CPU ms |");
    println!("|---|---:|");
    for (what, secs) in rows {
        println!("| {what} | {:.0} |", secs * 1000.0);
    }
    Ok(())
}

/// CPU seconds (user and system) that this process's waited-for children have used:
/// `/proc/self/stat`'s `cutime` and `cstime`, in clock ticks of 1/100 s.
/// The two targets for the command, side by side: `newterms run` with Elastic's
/// whole set against the built-in rule over the CloudTrail mix, and against `jq -c .` over
/// the generated ECS stream (one full parse and print of each record). Whole-process CPU,
/// medians of `runs`.
pub(super) fn run_against_jq(mix: &[String], ecs: &[String], runs: usize) -> Result<()> {
    let exe = env!("CARGO_BIN_EXE_newterms");
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/elastic-rules");
    if !rules.is_dir() {
        println!(
            "(no `newterms run` rows: no Elastic rules at {})",
            rules.display()
        );
        return Ok(());
    }
    let dir = std::env::temp_dir().join(format!("newterms-bench-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (mix_file, ecs_file) = (dir.join("mix.ndjson"), dir.join("ecs.ndjson"));
    std::fs::write(&mix_file, mix.join("\n") + "\n")?;
    std::fs::write(&ecs_file, ecs.join("\n") + "\n")?;
    let has_jq = Command::new("jq").arg("--version").output().is_ok();
    let cpu = |program: &str, args: &[&str]| -> Result<f64> {
        median_cpu(runs, || {
            let mut c = Command::new(program);
            c.args(args);
            c
        })
    };
    let (mix_s, ecs_s, rules_s) = (
        mix_file.display().to_string(),
        ecs_file.display().to_string(),
        rules.display().to_string(),
    );
    let one = cpu(exe, &["run", &mix_s])?;
    let whole_mix = cpu(exe, &["run", "--rule", &rules_s, &mix_s])?;
    let whole_ecs = cpu(exe, &["run", "--rule", &rules_s, &ecs_s])?;
    println!();
    println!(
        "`newterms run`, whole-process CPU, median of {runs} ({} records of the mix, {} of the ECS stream):",
        mix.len(),
        ecs.len()
    );
    println!();
    println!("| run | CPU s | ratio | target |");
    println!("|---|---:|---:|---:|");
    println!("| the built-in rule, the mix | {one:.2} | 1.00 | |");
    println!(
        "| Elastic's whole set, the mix | {whole_mix:.2} | {:.2} of the built-in rule | 2 |",
        whole_mix / one
    );
    if has_jq {
        let jq = cpu("jq", &["-c", ".", &ecs_s])?;
        println!("| `jq -c .`, the ECS stream | {jq:.2} | 1.00 | |");
        println!(
            "| Elastic's whole set, the ECS stream | {whole_ecs:.2} | {:.2} of `jq` | 0.25 |",
            whole_ecs / jq
        );
    } else {
        println!("| Elastic's whole set, the ECS stream | {whole_ecs:.2} | (no jq) | |");
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The median whole-process CPU (user + system) of `runs` runs of the command `make`
/// builds (called once before each run), its output discarded; an error if one fails.
fn median_cpu(runs: usize, mut make: impl FnMut() -> Command) -> Result<f64> {
    let mut times = Vec::new();
    for _ in 0..runs.max(1) {
        let mut command = make();
        let before = children_cpu()?;
        let status = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        if !status.success() {
            bail!("{command:?} failed: {status}");
        }
        times.push(children_cpu()? - before);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

fn children_cpu() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // The fields after the command name (which ends with the last `)`).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // cutime and cstime are fields 16 and 17 of the whole line; `rest` starts at field 3.
    let ticks = |i: usize| -> Result<f64> {
        fields
            .get(i - 3)
            .and_then(|f| f.parse::<f64>().ok())
            .context("reading /proc/self/stat")
    };
    Ok((ticks(16)? + ticks(17)?) / 100.0)
}

/// The real Fluent Bit (`NEWTERMS_FLUENT_BIT`, else `../shared/tools/fluent-bit/`), its
/// whole-run CPU over the first 30,000 records side by side: no filter, its native `grep`,
/// a wasm filter that does nothing, the module interpreted, and the module compiled ahead
/// of time by `wamrc` (beside it). Each the median of `runs`, in turns.
pub(super) fn real_fluent_bit(records: &[String], runs: usize) -> Result<()> {
    let binary = std::env::var_os("NEWTERMS_FLUENT_BIT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../shared/tools/fluent-bit/fluent-bit")
        });
    println!();
    if !binary.exists() {
        println!(
            "SKIPPED: no Fluent Bit at {} (set NEWTERMS_FLUENT_BIT): no figures from the real host",
            binary.display()
        );
        return Ok(());
    }
    let dir = std::env::temp_dir().join(format!("newterms-bench-fb-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let n = records.len().min(30_000);
    let input = dir.join("input.ndjson");
    std::fs::write(&input, records[..n].join("\n") + "\n")?;
    let wasm = dir.join("newterms.wasm");
    std::fs::write(&wasm, FLUENTBIT_MODULE)?;
    let nothing = dir.join("passthrough.wasm");
    std::fs::write(&nothing, newterms_host::passthrough_module())?;
    let aot = dir.join("newterms.aot");
    let wamrc = binary.with_file_name("").join("../wamrc/wamrc");
    let compiled = Command::new(&wamrc)
        .args(["-o".as_ref(), aot.as_os_str(), wasm.as_os_str()])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    let wasm_filter = |path: &PathBuf, function: &str| {
        format!(
            "[FILTER]\n    Name wasm\n    Match *\n    Event_Format json\n    Wasm_Path {}\n    \
             Function_Name {function}\n    Accessible_Paths .\n",
            path.display()
        )
    };
    let mut filters: Vec<(&str, String)> = vec![
        ("no filter", String::new()),
        (
            "Fluent Bit's native `grep` on eventName",
            "[FILTER]\n    Name grep\n    Match *\n    Regex eventName ^GetCallerIdentity$\n"
                .into(),
        ),
        (
            "a wasm filter that does nothing, every record back",
            wasm_filter(&nothing, "passthrough"),
        ),
        (
            "a wasm filter that does nothing, every record dropped",
            wasm_filter(&nothing, "drop_all"),
        ),
        (
            "newterms, interpreted",
            wasm_filter(&wasm, "newterms_filter"),
        ),
    ];
    if compiled {
        filters.push((
            "newterms, compiled ahead of time (wamrc)",
            wasm_filter(&aot, "newterms_filter"),
        ));
    }
    // Elastic's whole set as one pack: the module finds `newterms/rules/` in the directory
    // Fluent Bit runs in, so that run has one of its own.
    let elastic = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/elastic-rules");
    let pack_dir = dir.join("pack");
    let mut pack_from = filters.len();
    if let Ok(entries) = std::fs::read_dir(&elastic) {
        std::fs::create_dir_all(pack_dir.join("newterms/rules"))?;
        for e in entries.flatten() {
            if e.path().extension().is_some_and(|x| x == "toml") {
                std::fs::copy(
                    e.path(),
                    pack_dir.join("newterms/rules").join(e.file_name()),
                )?;
            }
        }
        pack_from = filters.len();
        filters.push((
            "newterms, Elastic's whole new_terms set as one pack, interpreted",
            wasm_filter(&wasm, "newterms_filter"),
        ));
    } else {
        println!(
            "(no pack row: no Elastic rules at {}: run bash .ci/elastic-rules)",
            elastic.display()
        );
    }
    let parsers = binary.with_file_name("parsers.conf");
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); filters.len()];
    let mut outputs: Vec<usize> = vec![0; filters.len()];
    for _ in 0..runs {
        for (i, (_, filter)) in filters.iter().enumerate() {
            let out = dir.join("out");
            let _ = std::fs::remove_dir_all(&out);
            std::fs::create_dir_all(&out)?;
            let conf = dir.join("fluent-bit.conf");
            std::fs::write(
                &conf,
                format!(
                    "[SERVICE]\n    Flush 1\n    Log_Level warn\n\
                     [INPUT]\n    Name tail\n    Path {}\n    Read_from_Head true\n    Parser json\n    \
                     Exit_On_Eof true\n{filter}\
                     [OUTPUT]\n    Name file\n    Match *\n    Path {}\n    File records\n    Format plain\n",
                    input.display(),
                    out.display()
                ),
            )?;
            let before = children_cpu()?;
            let cwd = if i >= pack_from { &pack_dir } else { &dir };
            let status = Command::new(&binary)
                .current_dir(cwd)
                .args([
                    "-c".as_ref(),
                    conf.as_os_str(),
                    "-R".as_ref(),
                    parsers.as_os_str(),
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()?;
            if !status.success() {
                bail!("Fluent Bit failed with {status} on {}", conf.display());
            }
            cpu[i].push(children_cpu()? - before);
            outputs[i] = std::fs::read_to_string(out.join("records"))
                .unwrap_or_default()
                .lines()
                .count();
        }
    }
    let median = |v: &[f64]| {
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        s[s.len() / 2]
    };
    let base = median(&cpu[0]);
    println!(
        "The real Fluent Bit ({}), {n} records of the mix, whole-run CPU (user + system), median of {runs}:",
        binary.display()
    );
    println!();
    println!("| filter | CPU s | vs no filter | records out |");
    println!("|---|---:|---:|---:|");
    for (i, (name, _)) in filters.iter().enumerate() {
        let m = median(&cpu[i]);
        println!("| {name} | {m:.2} | {:.2} | {} |", m / base, outputs[i]);
    }
    let own = median(&cpu[4]) - median(&cpu[3]);
    println!();
    println!(
        "The module's own work, interpreted: {own:.2} s over {n} records ({:.1} µs a record): \
         newterms less the do-nothing filter that drops every record, as newterms drops nearly all.",
        own * 1e6 / n as f64
    );
    if pack_from < filters.len() {
        println!(
            "Elastic's whole set against the built-in rule, interpreted, whole run: {:.2}",
            median(&cpu[pack_from]) / median(&cpu[4])
        );
    }
    if !compiled {
        println!(
            "(no AOT row: wamrc at {} did not run; it needs `apt-get install libllvm19`)",
            wamrc.display()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
