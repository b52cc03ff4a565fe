//! The term table across restarts: snapshots from any build, the command's state file,
//! the Fluent Bit module's state file.

use std::process::Command;

use crate::backend::{fluentbit_out, runtime, Out, TempDir};
use crate::data::{as_lines, files};

fn invictus_lines() -> Vec<Vec<u8>> {
    files("cloudtrail/invictus-ir")
        .iter()
        .flat_map(as_lines)
        .collect()
}

#[test]
fn a_snapshot_is_the_same_bytes_in_every_build_and_restores_in_any() {
    let lines = invictus_lines();
    let mut native = newterms::Detector::from_config("", "").expect("rule");
    for l in &lines {
        native.process_collect(l);
    }
    let native_bytes = native.snapshot();

    let mut session = newterms_host::Session::open(runtime(), "", "")
        .expect("instance")
        .expect("rule");
    session.process_batch(&lines).expect("batch");
    let component_bytes = session.snapshot().expect("snapshot");
    assert_eq!(
        native_bytes, component_bytes,
        "the format does not depend on the build"
    );

    // Native bytes restore in the component, and component bytes natively: a replay of the
    // same records gives no alert.
    let mut restored = newterms_host::Session::restore(runtime(), "", "", &native_bytes)
        .expect("instance")
        .expect("restores");
    let outs = restored.process_batch(&lines).expect("batch");
    assert!(outs.is_empty(), "{} outputs after restore", outs.len());
    let mut restored = newterms::Detector::open(
        &[("rule", "")],
        &newterms::Settings::default(),
        Some(&component_bytes),
    )
    .expect("restores");
    assert!(lines.iter().all(|l| restored.process_collect(l).is_empty()));

    // A damaged snapshot is a load error naming the snapshot.
    let mut damaged = native_bytes.clone();
    let last = damaged.len() - 20;
    damaged[last] ^= 1;
    let Err(e) = newterms_host::Session::restore(runtime(), "", "", &damaged).expect("instance")
    else {
        panic!("a damaged snapshot restored");
    };
    assert_eq!(e.key.as_deref(), Some("snapshot"));
    assert!(e.message.contains("checksum"), "{}", e.message);
}

#[test]
fn the_command_keeps_state_and_refuses_a_damaged_file() {
    let dir = TempDir::new("cli-state");
    let state = dir.0.join("table.state");
    let paths = files("cloudtrail/invictus-ir");
    let (first, second) = paths.split_at(20);
    let run = |files: &[std::path::PathBuf], extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_newterms"))
            .arg("run")
            .args([
                "--state",
                state.to_str().expect("path"),
                "--state-every",
                "500",
            ])
            .args(extra)
            .args(files)
            .output()
            .expect("run newterms");
        let alerts = String::from_utf8_lossy(&out.stdout).lines().count();
        (
            out.status.code(),
            alerts,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (c1, a1, _) = run(first, &[]);
    let (c2, a2, _) = run(second, &[]);
    assert_eq!((c1, c2), (Some(0), Some(0)));
    assert_eq!(a1 + a2, 1, "split across two runs, still one alert");
    let (c3, a3, _) = run(&paths, &[]);
    assert_eq!(
        (c3, a3),
        (Some(0), 0),
        "a third run over everything: nothing is new"
    );
    assert!(
        !dir.0.join("table.tmp").exists(),
        "the temporary file was renamed over"
    );

    let mut bytes = std::fs::read(&state).expect("state file");
    let n = bytes.len();
    bytes.truncate(n - 3);
    std::fs::write(&state, &bytes).expect("write");
    let (code, _, stderr) = run(&paths[..1], &[]);
    assert_eq!(
        code,
        Some(2),
        "a damaged state file is not replaced silently"
    );
    assert!(stderr.contains("--state-reset"), "{stderr}");
    let (code, alerts, _) = run(&paths, &["--state-reset"]);
    assert_eq!((code, alerts), (Some(0), 1), "reset: an empty table");
    let (code, alerts, _) = run(&paths, &[]);
    assert_eq!((code, alerts), (Some(0), 0), "and it was saved again");
}

#[test]
fn the_fluent_bit_state_file_survives_a_restart() {
    let dir = TempDir::new("fb-state");
    let rule = format!(
        "{}\n[newterms]\nstate_file = \"/etc/newterms/table.state\"\nstate_every_records = 100\n",
        newterms::DEFAULT_RULE
    );
    std::fs::write(dir.0.join("rule.toml"), rule).expect("write rule");
    let lines = invictus_lines();
    let alerts = |lines: &[Vec<u8>]| {
        let mut m = newterms_host::FluentBit::load(
            newterms_host::FLUENTBIT_MODULE,
            "newterms_filter",
            Some(&dir.0),
        )
        .expect("module");
        let mut n = 0;
        for l in lines {
            let answer = m
                .call(b"aws.cloudtrail", (1_688_990_000, 0), Some(l))
                .expect("call");
            n += fluentbit_out(answer)
                .iter()
                .filter(|o| matches!(o, Out::Emit(_)))
                .count();
        }
        n
    };
    assert_eq!(alerts(&lines), 1);
    assert!(dir.0.join("table.state").exists());
    assert_eq!(alerts(&lines), 0, "after a restart, bert-jan is not new");
    // The file is the portable format: it restores natively.
    let bytes = std::fs::read(dir.0.join("table.state")).expect("state");
    let d = newterms::Detector::open(
        &[("rule", "")],
        &newterms::Settings::default(),
        Some(&bytes),
    )
    .expect("restores");
    assert_eq!(d.terms().len(), 1);
    // A damaged file is moved aside, and the filter starts empty.
    std::fs::write(dir.0.join("table.state"), b"garbage").expect("write");
    assert_eq!(alerts(&lines), 1);
    assert!(dir.0.join("table.state.bad").exists());
}
