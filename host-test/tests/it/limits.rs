//! The host's limits on the guest: memory, time per call, record size; and carrying on
//! after a guest failure.

use std::time::Duration;

use newterms_host::{Limits, Supervised};

use crate::backend::runtime;

fn gci(arn: &str) -> Vec<u8> {
    format!(r#"{{"eventTime":"2026-01-01T00:00:00Z","eventSource":"sts.amazonaws.com","eventName":"GetCallerIdentity","userIdentity":{{"type":"IAMUser","arn":"{arn}"}}}}"#).into_bytes()
}

fn alerts(s: &mut Supervised, inputs: &[Vec<u8>]) -> usize {
    s.process_batch(inputs).expect("host").expect("call").len()
}

/// A supervised session of the built-in rule.
fn built_in(limits: Limits, checkpoint_every: u64) -> Supervised {
    let rules = newterms_host::Rules::One(String::new());
    Supervised::open(runtime(), &rules, "", None, limits, checkpoint_every)
        .expect("host")
        .expect("rule")
}

#[test]
fn a_guest_out_of_memory_fails_the_call_and_the_session_carries_on() {
    let limits = Limits {
        max_memory: 32 << 20,
        max_call: Duration::from_secs(30),
    };
    let mut s = built_in(limits, 1);
    assert_eq!(alerts(&mut s, &[gci("arn:aws:iam::1:user/before")]), 1);
    let checkpoint = s.snapshot().expect("snapshot");
    let huge = vec![b' '; 40 << 20];
    let failed = s
        .process_batch(&[huge])
        .expect("host survives")
        .expect_err("the call fails");
    assert_eq!(failed.inputs, 1);
    assert_eq!(failed.lost_since_checkpoint, 0);
    assert_eq!(s.restarts(), 1);
    assert_eq!(
        s.snapshot().expect("snapshot"),
        checkpoint,
        "restored from the last checkpoint"
    );
    assert_eq!(
        alerts(&mut s, &[gci("arn:aws:iam::1:user/before")]),
        0,
        "still remembered"
    );
    assert_eq!(alerts(&mut s, &[gci("arn:aws:iam::1:user/after")]), 1);
}

#[test]
fn a_call_over_its_time_is_interrupted_and_the_session_carries_on() {
    let limits = Limits {
        max_memory: 512 << 20,
        max_call: Duration::from_millis(10),
    };
    let mut s = built_in(limits, 1000);
    assert_eq!(alerts(&mut s, &[gci("arn:aws:iam::1:user/a")]), 1);
    // Two million records in one call take far longer than 10 ms in any build.
    let many = std::iter::repeat_n("{}", 2_000_000)
        .collect::<Vec<_>>()
        .join(",");
    let envelope = format!(r#"{{"Records":[{many}]}}"#).into_bytes();
    let failed = s
        .process_batch(&[envelope])
        .expect("host survives")
        .expect_err("interrupted");
    assert!(failed.reason.contains("interrupt"), "{}", failed.reason);
    assert_eq!(
        failed.lost_since_checkpoint, 1,
        "the one record since the opening checkpoint"
    );
    // The sighting of user/a was after the last checkpoint: lost with the instance.
    assert_eq!(alerts(&mut s, &[gci("arn:aws:iam::1:user/a")]), 1);
}

#[test]
fn limits_derive_from_the_table_budget() {
    assert_eq!(Limits::for_rule("", "").max_memory, 256 << 20);
    let l = Limits::for_rule("", "max_table_bytes = 1073741824");
    assert_eq!(l.max_memory, (2 << 30) + (128 << 20));
}
