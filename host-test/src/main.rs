//! `newterms`: run new-terms detection rules over log files, through the component.

use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use newterms_host::{Limits, Runtime, Session};

mod consume;
mod run;

const USAGE: &str = "\
newterms: edge-side detection of Elastic new_terms rules (default: first sts:GetCallerIdentity
per AWS identity in 10 days)

Usage:
  newterms run [OPTIONS] [FILE...]   detect over files (or stdin), write outputs to stdout
  newterms consume [OPTIONS]         a Kafka consumer-group member deciding the match documents
                                     of edges in `matches` mode (`newterms consume --help`)
  newterms check-rule PATH...        validate rule files (and directories of them)
  newterms component --out FILE      write the WebAssembly component this command runs
  newterms fluentbit-module --out FILE
                                     write the Fluent Bit filter module built with it
  newterms help | --help             this text; `newterms run --help` for run's options
";

#[derive(Debug)]
struct Usage(String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Usage(msg.into()))
}

fn main() -> ExitCode {
    match run_main() {
        Ok(code) => code,
        Err(e) => {
            if is_broken_pipe(&e) {
                return ExitCode::SUCCESS;
            }
            eprintln!("newterms: {e:#}");
            if e.downcast_ref::<Usage>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}

fn run_main() -> Result<ExitCode> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first() else {
        eprint!("{USAGE}");
        return Err(usage("no command given"));
    };
    let rest = &args[1..];
    match cmd.as_str() {
        "run" => run::run(run::args::parse_run(rest)?),
        "consume" => consume::consume(rest),
        "check-rule" => check_rule(rest),
        "component" => write_artifact(rest, "component", newterms_host::COMPONENT),
        "fluentbit-module" => {
            write_artifact(rest, "fluentbit-module", newterms_host::FLUENTBIT_MODULE)
        }
        "help" | "--help" | "-h" => {
            print!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        other => Err(usage(format!(
            "unknown command `{other}` (see `newterms --help`)"
        ))),
    }
}

/// The component (the built-in one, or `--component`), compiled once and then loaded
/// from the cache ([`newterms_host::cache_dir`]).
fn runtime(component: Option<&PathBuf>) -> Result<Runtime> {
    let cache = newterms_host::cache_dir();
    match component {
        Some(p) => {
            let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
            Runtime::with_cache(&bytes, cache.as_deref())
        }
        None if newterms_host::COMPONENT.is_empty() => Runtime::embedded(),
        None => Runtime::with_cache(newterms_host::COMPONENT, cache.as_deref()),
    }
}

/// The settings that carry the given export files, with the value lists they name read
/// from beside them.
fn exception_settings(files: &[PathBuf]) -> Result<newterms::Settings> {
    let mut texts = Vec::new();
    let mut lists = newterms::exceptions::ValueLists::new();
    for p in files {
        let text = std::fs::read_to_string(p)
            .with_context(|| format!("reading exceptions {}", p.display()))?;
        let read = |path: &Path| match std::fs::read_to_string(path) {
            Ok(t) => Ok(Some(t)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        };
        let found = newterms::exceptions::value_lists_beside(p, &text, read)
            .map_err(|(path, e)| anyhow::anyhow!("reading value list {}: {e}", path.display()))?;
        lists.extend(found);
        texts.push(text);
    }
    Ok(newterms::Settings::default().with_kibana_exceptions(&texts, &lists))
}

fn check_rule(args: &[String]) -> Result<ExitCode> {
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!(
            "Usage: newterms check-rule PATH... [--exceptions FILE]...\n\n\
             Loads each rule file (each PATH a file, or a directory of *.toml files) as \
             `newterms run` would, with the exception exports, and says per rule whether it \
             loads or why not, and which exception items it loaded. Several rules are then \
             loaded together, as the pack `newterms run` would run. Exit status 1 when any \
             does not load."
        );
        return Ok(ExitCode::SUCCESS);
    }
    let mut paths = Vec::new();
    let mut exceptions = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--exceptions" => exceptions.push(PathBuf::from(
                it.next()
                    .ok_or_else(|| usage("--exceptions needs a value"))?,
            )),
            other if !other.starts_with('-') => paths.push(PathBuf::from(other)),
            other => return Err(usage(format!("check-rule: unexpected `{other}`"))),
        }
    }
    if paths.is_empty() {
        return Err(usage(
            "usage: newterms check-rule PATH... [--exceptions FILE]...",
        ));
    }
    let typed = exception_settings(&exceptions)?;
    let settings =
        newterms_host::settings_text(&typed).map_err(|e| usage(format!("the settings: {e}")))?;
    let rt = runtime(None)?;
    let files = newterms_host::rule_files(&paths)?;
    let (mut loaded, mut failed) = (Vec::new(), 0usize);
    for path in &files {
        let shown = path.display();
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                println!("{shown}: cannot read: {e}");
                failed += 1;
                continue;
            }
        };
        match Session::open(&rt, &text, &settings)? {
            Ok(_) => {
                // The same parse the guest made, natively, to list what it loaded.
                let rule =
                    newterms::Rule::parse(&text, &typed).map_err(|e| anyhow::anyhow!("{e}"))?;
                println!("{shown}: ok: {} ({})", rule.name, rule.rule_id);
                for note in rule.index_notes() {
                    println!("  note: {note}");
                }
                for item in &rule.exceptions {
                    println!("  exception {}: {}", item.id, item.name);
                }
                println!("  {} exception items", rule.exceptions.len());
                loaded.push((shown.to_string(), text));
            }
            Err(e) => {
                println!("{shown}: {}", e.message);
                failed += 1;
            }
        }
    }
    let mut pack_ok = true;
    if loaded.len() > 1 {
        let rules = newterms_host::Rules::Pack(loaded.clone());
        let limits = Limits::for_rules(&rules, &settings);
        if let Err(e) = Session::open_rules(&rt, &rules, &settings, None, limits)? {
            println!("pack: {}", e.message);
            pack_ok = false;
        }
    }
    println!(
        "{} rules: {} loaded, {failed} did not{}",
        files.len(),
        loaded.len(),
        match (loaded.len() > 1, pack_ok) {
            (true, true) => "; the loaded ones run together as a pack",
            (true, false) => "; the loaded ones do not run together (see pack:)",
            _ => "",
        }
    );
    Ok(if failed == 0 && pack_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Writes one of the artifacts built into this command (`component`, `fluentbit-module`).
fn write_artifact(args: &[String], name: &str, bytes: &[u8]) -> Result<ExitCode> {
    let [flag, out] = args else {
        return Err(usage(format!("usage: newterms {name} --out FILE")));
    };
    if flag != "--out" {
        return Err(usage(format!("usage: newterms {name} --out FILE")));
    }
    if bytes.is_empty() {
        bail!("this build has no {name}: run `.ci/build-guest`");
    }
    std::fs::write(out, bytes).with_context(|| format!("writing {out}"))?;
    Ok(ExitCode::SUCCESS)
}
