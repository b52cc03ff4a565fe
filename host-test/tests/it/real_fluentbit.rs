//! The Fluent Bit module inside the real Fluent Bit (`../shared/tools/fluent-bit/`, or
//! `NEWTERMS_FLUENT_BIT`), on the shared data, with Fluent Bit's default settings: every
//! output mode against the component (what the `newterms` command runs), the state file
//! across a restart, the module compiled ahead of time with `wamrc`, and a call that
//! traps on purpose. Without the binary each test says SKIPPED and does nothing; CI has it.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::backend::TempDir;
use crate::data::{as_lines, files};

/// The Fluent Bit binary, or `None` (said loudly) when it is not there.
fn fluent_bit() -> Option<PathBuf> {
    let path = match std::env::var_os("NEWTERMS_FLUENT_BIT") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/tools/fluent-bit/fluent-bit"),
    };
    if path.is_file() {
        Some(path)
    } else {
        eprintln!(
            "SKIPPED: no Fluent Bit at {} (set NEWTERMS_FLUENT_BIT): the module is not tested in the real host",
            path.display()
        );
        None
    }
}

/// What a Fluent Bit run gave: the records its output wrote, and its log.
struct Run {
    out: Vec<Value>,
    log: String,
}

impl Run {
    /// Lines of the log that are warnings or errors (Fluent Bit's own shutdown notice
    /// aside).
    fn complaints(&self) -> Vec<&str> {
        self.log
            .lines()
            .filter(|l| {
                (l.contains("[error]") || l.contains("[ warn]") || l.contains("warning"))
                    && !l.contains("service will shutdown")
            })
            .collect()
    }
}

/// Runs Fluent Bit once over `input` (NDJSON) with the module at `module`, in `dir`
/// (`Accessible_Paths .`: the module finds `newterms/rule.toml` there). `filter` holds
/// extra lines for the filter section.
fn run(
    binary: &Path,
    module: &Path,
    function: &str,
    input: &Path,
    dir: &Path,
    filter: &str,
) -> Run {
    let pipeline = Pipeline {
        module,
        function,
        input,
        filter,
        ..Pipeline::default()
    };
    launch(binary, dir, &pipeline)
}

/// A Fluent Bit pipeline: `tail` over NDJSON, the module, the split step (the README's),
/// and an output (a file in `dir/out`, unless given).
struct Pipeline<'a> {
    module: &'a Path,
    function: &'a str,
    input: &'a Path,
    /// The `Accessible_Paths` value.
    accessible: &'a str,
    /// Extra lines for the `wasm` filter's section.
    filter: &'a str,
    /// The `lua` filter that splits a bundle, as the README configures it.
    split: bool,
    /// An `[OUTPUT]` section in place of the file.
    output: Option<String>,
    /// Fluent Bit keeps its place and its buffered records on disk: the `tail` input's
    /// database and filesystem storage (`dir/tail.db`, `dir/storage`), as a deployment that
    /// must lose nothing across a restart configures it.
    durable: bool,
    /// Keep the output file of an earlier run (a restart adds to it).
    keep_output: bool,
}

impl Default for Pipeline<'_> {
    fn default() -> Self {
        Pipeline {
            module: Path::new(""),
            function: "newterms_filter",
            input: Path::new(""),
            accessible: ".",
            filter: "",
            split: false,
            output: None,
            durable: false,
            keep_output: false,
        }
    }
}

/// The README's split step, in a classic configuration.
fn split_section() -> String {
    format!(
        "[FILTER]\n    Name lua\n    Match *\n    Call newterms_split\n    Enable_Flb_Null true\n    Code {}\n",
        newterms::host::SPLIT_LUA
    )
}

fn launch(binary: &Path, dir: &Path, p: &Pipeline) -> Run {
    let output = command(binary, dir, p)
        .output()
        .expect("running Fluent Bit");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "Fluent Bit failed:\n{log}");
    Run {
        out: written(dir),
        log,
    }
}

/// The records the file output wrote in `dir/out`.
fn written(dir: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(dir.join("out/records")).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("output line {l}: {e}")))
        .collect()
}

/// Fluent Bit over `p`'s pipeline in `dir`, ready to run.
fn command(binary: &Path, dir: &Path, p: &Pipeline) -> Command {
    let out_dir = dir.join("out");
    if !p.keep_output {
        let _ = std::fs::remove_dir_all(&out_dir);
    }
    std::fs::create_dir_all(&out_dir).expect("output dir");
    let output = p.output.clone().unwrap_or_else(|| {
        format!(
            "[OUTPUT]\n    Name file\n    Match *\n    Path {}\n    File records\n    Format plain\n",
            out_dir.display()
        )
    });
    let (service, input) = if p.durable {
        (
            format!("    storage.path {}\n", dir.join("storage").display()),
            format!(
                "    DB {}\n    storage.type filesystem\n",
                dir.join("tail.db").display()
            ),
        )
    } else {
        (String::new(), String::new())
    };
    let config = format!(
        "[SERVICE]\n    Flush 1\n    Log_Level info\n{service}\
         [INPUT]\n    Name tail\n    Path {}\n    Read_from_Head true\n    Parser json\n    Exit_On_Eof true\n{input}\
         [FILTER]\n    Name wasm\n    Match *\n    Event_Format json\n    Wasm_Path {}\n    Function_Name {}\n    Accessible_Paths {}\n{}\
         {}{output}",
        p.input.display(),
        p.module.display(),
        p.function,
        p.accessible,
        p.filter,
        if p.split { split_section() } else { String::new() },
    );
    let conf = dir.join("fluent-bit.conf");
    std::fs::write(&conf, config).expect("config");
    let parsers = binary.with_file_name("parsers.conf");
    let mut c = Command::new(binary);
    c.current_dir(dir).args([
        "-c".as_ref(),
        conf.as_os_str(),
        "-R".as_ref(),
        parsers.as_os_str(),
    ]);
    c
}

/// The alert ids of `docs`, and how many of them came more than once.
fn ids(docs: &[Value]) -> (std::collections::BTreeSet<String>, usize) {
    let all: Vec<String> = docs
        .iter()
        .map(|d| d["kibana.alert.uuid"].as_str().expect("uuid").to_owned())
        .collect();
    let set: std::collections::BTreeSet<String> = all.iter().cloned().collect();
    let repeated = all.len() - set.len();
    (set, repeated)
}

/// The built-in rule with a state file at the default cadence, over a stream of 60,000
/// GetCallerIdentity records by 3,000 identities, in Fluent Bit kept durable (tail
/// database, filesystem storage); the uninterrupted answer is the component's.
struct Restart {
    fb: PathBuf,
    dir: TempDir,
    module: PathBuf,
    input: PathBuf,
    lines: Vec<Vec<u8>>,
    want: std::collections::BTreeSet<String>,
}

impl Restart {
    fn new(label: &str) -> Option<Restart> {
        let fb = fluent_bit()?;
        let dir = TempDir::new(label);
        rule_with_default_state(&dir.0);
        let text = newterms_host::gen::sts_calls(60_000, 3_000, 30);
        let lines: Vec<Vec<u8>> = text.lines().map(|l| l.as_bytes().to_vec()).collect();
        let (want, _) = ids(&component(&lines, ""));
        assert!(want.len() > 3_000, "{}", want.len());
        let module = module_file(&dir.0, newterms_host::FLUENTBIT_MODULE, "newterms.wasm");
        let input = dir.0.join("input.ndjson");
        Some(Restart {
            fb,
            dir,
            module,
            input,
            lines,
            want,
        })
    }

    fn pipeline(&self, keep_output: bool) -> Pipeline<'_> {
        Pipeline {
            module: &self.module,
            input: &self.input,
            durable: true,
            keep_output,
            ..Pipeline::default()
        }
    }

    /// Writes the first `n` records to the input file (the rest come later, appended).
    fn write_input(&self, from: usize, to: usize) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.input)
            .expect("input");
        for l in &self.lines[from..to] {
            f.write_all(l).expect("write");
            f.write_all(b"\n").expect("write");
        }
    }

    fn journal(&self) -> PathBuf {
        self.dir.0.join("newterms/t.state.journal")
    }
}

/// The built-in rule in `dir/newterms/rule.toml` with a state file at the default cadence.
fn rule_with_default_state(dir: &Path) {
    std::fs::create_dir_all(dir.join("newterms")).expect("config dir");
    let rule = format!(
        "{}\n[newterms]\nstate_file = \"newterms/t.state\"\n",
        newterms::DEFAULT_RULE
    );
    std::fs::write(dir.join("newterms/rule.toml"), rule).expect("rule file");
}

/// The shared data as one NDJSON file, and its lines: the invictus-ir records, then (with
/// `stratus`) the stratus-red-team ones.
fn input(dir: &Path, stratus: bool, marker_at: Option<usize>) -> (PathBuf, Vec<Vec<u8>>) {
    let mut lines: Vec<Vec<u8>> = files("cloudtrail/invictus-ir")
        .iter()
        .flat_map(as_lines)
        .collect();
    if stratus {
        lines.extend(
            files("cloudtrail/stratus-red-team")
                .iter()
                .flat_map(as_lines),
        );
    }
    if let Some(i) = marker_at {
        let mut v: Value = serde_json::from_slice(&lines[i]).expect("record");
        v["userAgent"] = "newterms-test-trap".into();
        lines[i] = v.to_string().into_bytes();
    }
    let path = dir.join("input.ndjson");
    let mut text = lines.join(&b'\n');
    text.push(b'\n');
    std::fs::write(&path, text).expect("input");
    (path, lines)
}

/// What the component (the `newterms` command's engine) emits for `lines`.
fn component(lines: &[Vec<u8>], settings: &str) -> Vec<Value> {
    let mut s = newterms_host::Session::open(crate::backend::runtime(), "", settings)
        .expect("component")
        .expect("rule");
    s.process_batch(lines)
        .expect("process")
        .into_iter()
        .filter_map(|o| match o.output {
            newterms_host::Output::Emit(doc) => Some(serde_json::from_str(&doc).expect("JSON")),
            newterms_host::Output::Error(_) => None,
        })
        .collect()
}

/// The built-in rule in `dir/newterms/rule.toml`, keeping its table in
/// `newterms/t.state`, saved every `every` records.
fn rule_with_state(dir: &Path, every: u64) {
    std::fs::create_dir_all(dir.join("newterms")).expect("config dir");
    let rule = format!(
        "{}\n[newterms]\nstate_file = \"newterms/t.state\"\nstate_every_records = {every}\n",
        newterms::DEFAULT_RULE
    );
    std::fs::write(dir.join("newterms/rule.toml"), rule).expect("rule file");
}

fn module_file(dir: &Path, bytes: &[u8], name: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).expect("module file");
    p
}

#[test]
fn every_mode_with_default_settings_answers_as_the_command() {
    let Some(fb) = fluent_bit() else { return };
    let dir = TempDir::new("real-fb");
    let (path, lines) = input(&dir.0, true, None);
    let module = module_file(&dir.0, newterms_host::FLUENTBIT_MODULE, "newterms.wasm");
    for (function, settings) in [
        ("newterms_filter", ""),
        ("newterms_alert", ""),
        ("newterms_passthrough", "output = \"passthrough\""),
        ("newterms_annotate", "output = \"annotate\""),
        ("newterms_matches", "output = \"matches\""),
    ] {
        let got = run(&fb, &module, function, &path, &dir.0, "");
        assert_eq!(
            got.complaints(),
            Vec::<&str>::new(),
            "{function}: {}",
            got.log
        );
        let want = component(&lines, settings);
        assert_eq!(got.out.len(), want.len(), "{function}");
        assert!(
            got.out == want,
            "{function}: Fluent Bit's outputs differ from the component's"
        );
        if function == "newterms_filter" {
            let terms: Vec<&Value> = got
                .out
                .iter()
                .map(|a| &a["kibana.alert.new_terms"][0])
                .collect();
            assert_eq!(
                terms.len(),
                3,
                "bert-jan, and stratus-red-team's IAM and federated users"
            );
            assert!(
                terms[0]
                    .as_str()
                    .is_some_and(|t| t.ends_with(":user/bert-jan")),
                "{terms:?}"
            );
        }
    }
}

#[test]
fn the_state_file_survives_a_restart() {
    let Some(fb) = fluent_bit() else { return };
    let dir = TempDir::new("real-fb-state");
    // Saved every 100 records: Fluent Bit gives a filter no call at shutdown, so what came
    // after the last save is not kept.
    rule_with_state(&dir.0, 100);
    // One 55-minute window: bert-jan is the one identity that alerts.
    let (path, _) = input(&dir.0, false, None);
    let module = module_file(&dir.0, newterms_host::FLUENTBIT_MODULE, "newterms.wasm");
    let first = run(&fb, &module, "newterms_filter", &path, &dir.0, "");
    assert_eq!(first.out.len(), 1, "{}", first.log);
    assert!(
        dir.0.join("newterms/t.state").is_file(),
        "the state file is written"
    );
    let second = run(&fb, &module, "newterms_filter", &path, &dir.0, "");
    assert!(second.log.contains("restored 1 terms"), "{}", second.log);
    assert_eq!(
        second.out.len(),
        0,
        "every identity was seen within the window"
    );
}

#[test]
fn compiled_ahead_of_time_it_answers_the_same() {
    let Some(fb) = fluent_bit() else { return };
    let wamrc = fb.with_file_name("").join("../wamrc/wamrc");
    let dir = TempDir::new("real-fb-aot");
    let module = module_file(&dir.0, newterms_host::FLUENTBIT_MODULE, "newterms.wasm");
    let aot = dir.0.join("newterms.aot");
    let compiled = Command::new(&wamrc)
        .args(["-o".as_ref(), aot.as_os_str(), module.as_os_str()])
        .output();
    match compiled {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "wamrc failed (it needs `apt-get install libllvm19`): {}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => {
            eprintln!(
                "SKIPPED: no wamrc at {} ({e}): the AOT module is not tested",
                wamrc.display()
            );
            return;
        }
    }
    let (path, _) = input(&dir.0, true, None);
    let interpreted = run(&fb, &module, "newterms_filter", &path, &dir.0, "");
    let ahead = run(&fb, &aot, "newterms_filter", &path, &dir.0, "");
    assert_eq!(ahead.complaints(), Vec::<&str>::new(), "{}", ahead.log);
    assert_eq!(ahead.out.len(), 3);
    assert!(
        ahead.out == interpreted.out,
        "the AOT module answers as the interpreted one"
    );
}

/// The module built with `fault-injection` (`bash .ci/build-guest --fault-injection`).
fn fault_module() -> Option<Vec<u8>> {
    let path = match std::env::var_os("NEWTERMS_FAULT_MODULE") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../target/fault/wasm32-wasip1/guest/newterms.wasm"),
    };
    match std::fs::read(&path) {
        Ok(raw) => Some(newterms_host::wasm_entry::wrap_exports(&raw).expect("wrapping")),
        Err(_) => {
            eprintln!(
                "SKIPPED: no fault-injection module at {} (bash .ci/build-guest --fault-injection)",
                path.display()
            );
            None
        }
    }
}

#[test]
fn a_call_that_traps_is_survived_in_fluent_bit() {
    let Some(fb) = fluent_bit() else { return };
    let Some(fault) = fault_module() else { return };
    let dir = TempDir::new("real-fb-trap");
    rule_with_state(&dir.0, 1);
    // The trap comes a few records after bert-jan's first call, which is saved by then.
    let (_, plain) = input(&dir.0, true, None);
    let first = plain
        .iter()
        .position(|l| {
            let s = String::from_utf8_lossy(l);
            s.contains("GetCallerIdentity") && s.contains("user/bert-jan")
        })
        .expect("bert-jan's first call");
    let (path, _) = input(&dir.0, true, Some(first + 5));
    let module = module_file(&dir.0, &fault, "fault.wasm");
    let got = run(&fb, &module, "newterms_fault_filter", &path, &dir.0, "");
    let traps = got.log.matches("Got exception running wasm code").count();
    assert_eq!(traps, 1, "{}", got.log);
    assert!(
        got.log
            .contains("[newterms] the previous call did not return"),
        "{}",
        got.log
    );
    assert!(got.log.contains("restored 1 terms"), "{}", got.log);
    // bert-jan is remembered across the rebuild, and the later identities still alert.
    assert_eq!(got.out.len(), 3, "{}", got.log);
}

#[test]
fn the_whole_elastic_set_runs_as_one_pack_in_fluent_bit() {
    let Some(fb) = fluent_bit() else { return };
    let Some(rules) = crate::elastic::elastic_rules() else {
        return;
    };
    let dir = crate::backend::rules_dir("real-fb-elastic", "newterms", &rules);
    let (path, lines) = input(&dir.0, true, None);
    let module = module_file(&dir.0, newterms_host::FLUENTBIT_MODULE, "newterms.wasm");
    let pipeline = Pipeline {
        module: &module,
        input: &path,
        split: true,
        ..Pipeline::default()
    };
    let got = launch(&fb, &dir.0, &pipeline);
    assert_eq!(got.complaints(), Vec::<&str>::new(), "{}", got.log);
    assert!(
        got.log
            .contains(&format!("loaded a pack of {} rules", rules.len())),
        "{}",
        got.log
    );
    // Every output of every record, in order: a record that alerts for several rules
    // gives them all, through the bundle and the split step.
    let all = crate::backend::all_outputs(&rules, &lines);
    let alerting = all.iter().filter(|w| !w.is_empty()).count();
    let want: Vec<Value> = all
        .iter()
        .flatten()
        .map(|a| serde_json::from_str(a).expect("alert"))
        .collect();
    assert!(
        want.len() > alerting,
        "some record alerts for several rules: {} alerts from {alerting} records",
        want.len()
    );
    assert_eq!(got.out.len(), want.len(), "{}", got.log);
    assert!(
        got.out == want,
        "Fluent Bit's outputs differ from the core's"
    );
    // And the same ids as the command's.
    let ids = |docs: &[Value]| -> Vec<String> {
        docs.iter()
            .map(|d| d["kibana.alert.uuid"].as_str().expect("uuid").to_owned())
            .collect()
    };
    let command = crate::kafka::single_run(&dir.0.join("newterms/rules"), &path);
    assert_eq!(ids(&got.out), command);
}

/// The edge in `matches` mode, in Fluent Bit, with the split step and `out_kafka`, into
/// librdkafka's mock cluster; a `newterms consume` group behind it writes the alert ids
/// the command writes over the same records.
#[test]
fn fluent_bit_into_kafka_gives_the_single_answer() {
    let Some(fb) = fluent_bit() else { return };
    let Some(rules) = crate::elastic::elastic_rules() else {
        return;
    };
    let dir = crate::backend::rules_dir("real-fb-kafka", "newterms", &rules);
    let rules_path = dir.0.join("newterms/rules");
    let (path, lines) = input(&dir.0, true, None);
    let module = module_file(&dir.0, newterms_host::FLUENTBIT_MODULE, "newterms.wasm");
    let cluster = crate::kafka::Cluster::start();
    let output = format!(
        "[OUTPUT]\n    Name kafka\n    Match *\n    Brokers {}\n    Topics matches\n    Format json\n    Message_Key_Field newterms_key\n",
        cluster.brokers
    );
    let pipeline = Pipeline {
        module: &module,
        function: "newterms_matches",
        input: &path,
        split: true,
        output: Some(output),
        ..Pipeline::default()
    };
    let got = launch(&fb, &dir.0, &pipeline);
    assert_eq!(got.complaints(), Vec::<&str>::new(), "{}", got.log);
    // Every match document reached the topic, records with several included.
    let mut edge = newterms::Detector::open(
        &rules,
        &newterms::Settings {
            output: Some(newterms::OutputMode::Matches),
            ..newterms::Settings::default()
        },
        None,
    )
    .expect("pack");
    let per_record: Vec<usize> = lines
        .iter()
        .map(|l| edge.process_collect(l).len())
        .collect();
    let documents: usize = per_record.iter().sum();
    assert!(
        per_record.iter().any(|&n| n > 1),
        "some record gives several match documents"
    );
    assert_eq!(cluster.read_all("matches").len(), documents);
    let rules_arg = ["--rule", rules_path.to_str().expect("utf8")];
    let members = [
        cluster.consumer_with("fb-a", &rules_arg),
        cluster.consumer_with("fb-b", &rules_arg),
    ];
    for (child, name) in members.into_iter().zip(["fb-a", "fb-b"]) {
        crate::kafka::wait(child, name);
    }
    let got: std::collections::BTreeSet<String> = cluster.alert_ids().into_iter().collect();
    let want: std::collections::BTreeSet<String> = crate::kafka::single_run(&rules_path, &path)
        .into_iter()
        .collect();
    assert!(!want.is_empty());
    assert_eq!(got, want, "the group's alert ids are the single run's");
}

/// A rule file directly in a directory Fluent Bit opens (an absolute `Accessible_Paths`),
/// and the log's list of the directories searched when none holds one.
#[test]
fn a_rule_in_any_accessible_directory_is_found() {
    let Some(fb) = fluent_bit() else { return };
    let dir = TempDir::new("real-fb-places");
    let conf = dir.0.join("conf");
    std::fs::create_dir_all(&conf).expect("conf dir");
    let (path, _) = input(&dir.0, true, None);
    let module = module_file(&dir.0, newterms_host::FLUENTBIT_MODULE, "newterms.wasm");
    let accessible = conf.to_str().expect("utf8");
    let pipeline = Pipeline {
        module: &module,
        input: &path,
        accessible,
        ..Pipeline::default()
    };
    let none = launch(&fb, &dir.0, &pipeline);
    assert!(
        none.log.contains(&format!(
            "no rule file in /etc/newterms, {accessible} (looked for rule.toml, newterms/rule.toml"
        )),
        "{}",
        none.log
    );
    assert_eq!(none.out.len(), 3, "the built-in rule runs");
    // The seed rule in `passthrough` mode: the records themselves come out.
    std::fs::write(
        conf.join("rule.toml"),
        format!(
            "{}\n[newterms]\noutput = \"passthrough\"\n",
            newterms::DEFAULT_RULE
        ),
    )
    .expect("rule file");
    let found = launch(&fb, &dir.0, &pipeline);
    assert!(
        found
            .log
            .contains(&format!("loaded {accessible}/rule.toml: rule")),
        "{}",
        found.log
    );
    assert_eq!(found.out.len(), 3);
    assert!(found
        .out
        .iter()
        .all(|r| r["eventName"] == "GetCallerIdentity"));
}

/// Fluent Bit stopped gracefully mid-stream (its input ends; more records come after the
/// restart): the alert ids of both runs are the uninterrupted run's, none repeated.
#[test]
fn a_graceful_restart_mid_stream_repeats_and_loses_no_alert() {
    let Some(r) = Restart::new("real-fb-graceful") else {
        return;
    };
    r.write_input(0, 25_000);
    let first = launch(&r.fb, &r.dir.0, &r.pipeline(false));
    assert_eq!(first.complaints(), Vec::<&str>::new(), "{}", first.log);
    r.write_input(25_000, r.lines.len());
    let second = launch(&r.fb, &r.dir.0, &r.pipeline(true));
    assert!(second.log.contains("replayed"), "{}", second.log);
    let (got, repeated) = ids(&second.out);
    assert_eq!(repeated, 0, "nothing repeated");
    assert!(
        got == r.want,
        "{} ids, {} expected",
        got.len(),
        r.want.len()
    );
}

/// Fluent Bit killed (SIGKILL) mid-stream, then started again: the alert ids are the
/// uninterrupted run's; what repeats is only what Fluent Bit delivered twice. Then a
/// journal torn by a crash mid-append: reported, and it costs that one change.
#[test]
fn a_killed_fluent_bit_restarts_with_the_uninterrupted_alerts() {
    let Some(r) = Restart::new("real-fb-kill") else {
        return;
    };
    r.write_input(0, r.lines.len());
    for round in 0..2 {
        let pipeline = r.pipeline(round > 0);
        let mut child = command(&r.fb, &r.dir.0, &pipeline)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("Fluent Bit");
        // Killed once the journal holds some changes (a state write and then some, in the
        // second round).
        let enough = 20_000 + round * 400_000;
        let started = std::time::Instant::now();
        while std::fs::metadata(r.journal()).map_or(0, |m| m.len()) < enough {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(120),
                "the journal never grew"
            );
            if let Some(status) = child.try_wait().expect("wait") {
                panic!("Fluent Bit ended ({status}) before it was killed");
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        child.kill().expect("SIGKILL");
        let _ = child.wait();
    }
    let end = launch(&r.fb, &r.dir.0, &r.pipeline(true));
    assert!(end.log.contains("replayed"), "{}", end.log);
    let (got, repeated) = ids(&end.out);
    eprintln!(
        "killed twice: {} ids, {repeated} delivered twice by Fluent Bit",
        got.len()
    );
    let missing = r.want.difference(&got).count();
    let extra = got.difference(&r.want).count();
    assert_eq!((missing, extra), (0, 0), "{}", end.log);

    // A torn last entry: the journal cut short by 3 bytes, as a crash mid-append leaves it.
    let j = std::fs::read(r.journal()).expect("journal");
    std::fs::write(r.journal(), &j[..j.len() - 3]).expect("journal");
    // The module reads its state at its first record: a few more records.
    r.write_input(0, 10);
    let again = launch(&r.fb, &r.dir.0, &r.pipeline(true));
    assert!(again.log.contains("a torn entry at byte"), "{}", again.log);
}

/// A baseline built by `newterms run --learn` over an archive (CloudTrail's delivery
/// files, as S3 holds them), loaded by Fluent Bit as its state file: no alert for the
/// identities the archive held, and the others still alert.
#[test]
fn a_baseline_learned_from_an_archive_silences_known_identities() {
    let Some(fb) = fluent_bit() else { return };
    let dir = TempDir::new("real-fb-baseline");
    rule_with_state(&dir.0, 10_000);
    let archive = crate::data::shared_data().join("cloudtrail/invictus-ir");
    let learned = Command::new(env!("CARGO_BIN_EXE_newterms"))
        .args(["run", "-q", "--learn", "--state"])
        .arg(dir.0.join("newterms/t.state"))
        .arg(&archive)
        .output()
        .expect("newterms run --learn");
    assert!(
        learned.status.success(),
        "{}",
        String::from_utf8_lossy(&learned.stderr)
    );
    assert!(learned.stdout.is_empty(), "no alert while learning");
    let (path, _) = input(&dir.0, true, None);
    let module = module_file(&dir.0, newterms_host::FLUENTBIT_MODULE, "newterms.wasm");
    let got = run(&fb, &module, "newterms_filter", &path, &dir.0, "");
    assert!(got.log.contains("restored 1 terms"), "{}", got.log);
    let terms: Vec<&str> = got
        .out
        .iter()
        .map(|a| a["kibana.alert.new_terms"][0].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        terms.len(),
        2,
        "stratus-red-team's two, not bert-jan: {terms:?}"
    );
    assert!(
        terms.iter().all(|t| !t.ends_with("user/bert-jan")),
        "{terms:?}"
    );
}

/// `learning_period` in the rule file: bert-jan's first call starts it and he is learned;
/// stratus-red-team's identities, a year later, alert.
#[test]
fn a_learning_period_in_fluent_bit() {
    let Some(fb) = fluent_bit() else { return };
    let dir = TempDir::new("real-fb-learning");
    std::fs::create_dir_all(dir.0.join("newterms")).expect("config dir");
    let rule = format!(
        "{}\n[newterms]\nlearning_period = \"30m\"\n",
        newterms::DEFAULT_RULE
    );
    std::fs::write(dir.0.join("newterms/rule.toml"), rule).expect("rule file");
    let (path, lines) = input(&dir.0, true, None);
    let module = module_file(&dir.0, newterms_host::FLUENTBIT_MODULE, "newterms.wasm");
    let got = run(&fb, &module, "newterms_filter", &path, &dir.0, "");
    assert_eq!(got.complaints(), Vec::<&str>::new(), "{}", got.log);
    let want = component(&lines, "learning_period = \"30m\"");
    assert_eq!(got.out.len(), 2, "{}", got.log);
    assert!(got.out == want, "Fluent Bit answers as the component");
}

/// The README's first classic and YAML configurations (In Fluent Bit), as written but for
/// the paths, the `tail` input's run to the end of its file and a file output in place of
/// `stdout`: with Elastic's whole set in `rules/`, every alert comes out, one record each.
#[test]
fn the_readmes_configurations_give_every_alert() {
    let Some(fb) = fluent_bit() else { return };
    let Some(rules) = crate::elastic::elastic_rules() else {
        return;
    };
    let readme = std::fs::read_to_string(
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../README.md"),
    )
    .expect("README");
    let section = &readme[readme
        .find("## In Fluent Bit")
        .expect("the Fluent Bit section")..];
    let block = |fence: &str| -> String {
        let start = section.find(fence).expect("a block") + fence.len();
        let len = section[start..].find("```").expect("its end");
        section[start..start + len].to_owned()
    };
    let dir = crate::backend::rules_dir("real-fb-readme", "etc", &rules);
    let (path, lines) = input(&dir.0, true, None);
    let module = module_file(&dir.0, newterms_host::FLUENTBIT_MODULE, "newterms.wasm");
    let etc = dir.0.join("etc");
    let out_dir = dir.0.join("out");
    let want: Vec<Value> = crate::backend::all_outputs(&rules, &lines)
        .iter()
        .flatten()
        .map(|a| serde_json::from_str(a).expect("alert"))
        .collect();
    let paths = |text: String| {
        text.replace("/var/log/cloudtrail/*.ndjson", &path.display().to_string())
            .replace(
                "/etc/newterms/newterms-fluentbit.wasm",
                &module.display().to_string(),
            )
            .replace("/etc/newterms", &etc.display().to_string())
    };
    let classic = paths(block("```ini\n"))
        .replace(
            "    Tag     aws.cloudtrail\n",
            "    Tag     aws.cloudtrail\n    Read_from_Head true\n    Exit_On_Eof true\n",
        )
        .replace(
            "    Name   stdout\n",
            &format!(
                "    Name   file\n    Path   {}\n    File   records\n    Format plain\n",
                out_dir.display()
            ),
        );
    let yaml = paths(block("```yaml\n"))
        .replace(
            "      tag: aws.cloudtrail\n",
            "      tag: aws.cloudtrail\n      read_from_head: true\n      exit_on_eof: true\n",
        )
        .replace(
            "    - name: stdout\n",
            &format!(
                "    - name: file\n      path: {}\n      file: records\n      format: plain\n",
                out_dir.display()
            ),
        );
    for (name, config) in [("readme.conf", classic), ("readme.yaml", yaml)] {
        assert!(config.contains(newterms::host::SPLIT_LUA), "{config}");
        let _ = std::fs::remove_dir_all(&out_dir);
        std::fs::create_dir_all(&out_dir).expect("output dir");
        let conf = dir.0.join(name);
        std::fs::write(&conf, &config).expect("config");
        let output = Command::new(&fb)
            .args([
                "-c".as_ref(),
                conf.as_os_str(),
                "-R".as_ref(),
                fb.with_file_name("parsers.conf").as_os_str(),
            ])
            .output()
            .expect("running Fluent Bit");
        let log = String::from_utf8_lossy(&output.stderr).into_owned()
            + &String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{name}: {log}");
        let got = written(&dir.0);
        assert_eq!(got.len(), want.len(), "{name}: {log}");
        assert!(got == want, "{name}: the alerts differ from the core's");
    }
}

/// The do-nothing filters the benchmark sets the module against: one passes every record
/// through the real host unchanged, the other drops every record.
#[test]
fn the_benchmarks_do_nothing_filter_passes_every_record() {
    let Some(fb) = fluent_bit() else { return };
    let dir = TempDir::new("real-fb-passthrough");
    let (path, lines) = input(&dir.0, false, None);
    let module = module_file(&dir.0, &newterms_host::passthrough_module(), "nothing.wasm");
    let got = run(&fb, &module, "passthrough", &path, &dir.0, "");
    assert_eq!(got.complaints(), Vec::<&str>::new(), "{}", got.log);
    let want: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_slice(l).expect("record"))
        .collect();
    assert_eq!(got.out.len(), want.len());
    assert!(got.out == want, "every record comes back as it went in");
    let dropped = run(&fb, &module, "drop_all", &path, &dir.0, "");
    assert_eq!(dropped.complaints(), Vec::<&str>::new(), "{}", dropped.log);
    assert_eq!(dropped.out.len(), 0, "the empty answer drops every record");
}
