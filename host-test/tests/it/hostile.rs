//! Hostile input: each gives a defined result within the limits, through the core and the
//! component, and leaves the state intact (an error changes nothing; the next record is
//! processed normally).

use crate::backend::{Backend, Out};

const GCI: &str = r#""eventTime":"2026-01-01T00:00:00Z","eventSource":"sts.amazonaws.com","eventName":"GetCallerIdentity""#;

fn gci(extra: &str, arn: &str) -> Vec<u8> {
    format!(r#"{{{GCI},"userIdentity":{{"type":"IAMUser","arn":"{arn}"}}{extra}}}"#).into_bytes()
}

enum Want {
    Alert(&'static str),
    Error(&'static str),
    Nothing,
}

struct Case {
    name: &'static str,
    settings: &'static str,
    input: Vec<u8>,
    want: Want,
}

fn cases() -> Vec<Case> {
    let deep = 100_000;
    let nested_skipped = gci(
        &format!(r#","x":{}1{}"#, r#"{"a":"#.repeat(deep), "}".repeat(deep)),
        "arn:aws:iam::1:user/deep",
    );
    let arrays_skipped = gci(
        &format!(r#","x":{}1{}"#, "[".repeat(deep), "]".repeat(deep)),
        "arn:aws:iam::1:user/deep",
    );
    let nested_read = format!(
        r#"{{{GCI},"userIdentity":{{"type":"IAMUser","arn":{}"a"{}}}}}"#,
        "[".repeat(deep),
        "]".repeat(deep)
    )
    .into_bytes();
    let many_keys: String = (0..100_000).map(|i| format!(r#","k{i}":{i}"#)).collect();
    let huge_string = gci(
        &format!(r#","pad":"{}""#, "x".repeat(64 << 20)),
        "arn:aws:iam::1:user/huge",
    );
    let million: String = std::iter::repeat_n("{}", 1_000_000)
        .collect::<Vec<_>>()
        .join(",");
    let big_term = "a".repeat(1 << 20);
    vec![
        Case {
            name: "100,000 levels of objects in a field the rule does not read: skipped, and carried whole in the alert",
            settings: "",
            input: nested_skipped,
            want: Want::Alert("arn:aws:iam::1:user/deep"),
        },
        Case {
            name: "100,000 levels of arrays in a field the rule does not read: skipped",
            settings: "",
            input: arrays_skipped,
            want: Want::Alert("arn:aws:iam::1:user/deep"),
        },
        Case {
            name: "100,000 levels of nesting where the rule reads",
            settings: "",
            input: nested_read,
            want: Want::Error("invalid-json"),
        },
        Case {
            name: "100,000 keys in one object",
            settings: "max_record_bytes = 4194304",
            input: gci(&many_keys, "arn:aws:iam::1:user/keys"),
            want: Want::Alert("arn:aws:iam::1:user/keys"),
        },
        Case {
            name: "a 64 MiB string",
            settings: "",
            input: huge_string,
            want: Want::Error("too-large"),
        },
        Case {
            name: "invalid UTF-8",
            settings: "",
            input: [&gci("", "arn:aws:iam::1:user/utf")[..20], b"\xc3\x28", &gci("", "x")[20..]].concat(),
            want: Want::Error("invalid-json"),
        },
        Case {
            name: "a lone surrogate escape where the rule reads",
            settings: "",
            input: gci("", r"arn:aws:iam::1:user/\ud800"),
            want: Want::Error("invalid-json"),
        },
        Case {
            name: "numbers where strings are expected",
            settings: "",
            input: format!(r#"{{{GCI},"userIdentity":{{"type":7,"arn":123456789}}}}"#).into_bytes(),
            want: Want::Alert("123456789"),
        },
        Case {
            name: "duplicate keys: both values count",
            settings: "",
            input: format!(r#"{{"eventName":"AssumeRole",{GCI},"userIdentity":{{"arn":"arn:aws:iam::1:user/dup"}}}}"#)
                .into_bytes(),
            want: Want::Alert("arn:aws:iam::1:user/dup"),
        },
        Case {
            name: "a Records array of a million elements",
            settings: "",
            input: format!(r#"{{"Records":[{million}]}}"#).into_bytes(),
            want: Want::Nothing,
        },
        Case {
            name: "a term of 1 MiB within the limits",
            settings: "max_record_bytes = 2097152",
            input: gci("", &big_term),
            want: Want::Alert("big"),
        },
        Case {
            name: "a term of 1 MiB over the table's byte budget",
            settings: "max_record_bytes = 2097152\nmax_table_bytes = 524288",
            input: gci("", &big_term),
            want: Want::Error("too-large"),
        },
    ]
}

#[test]
fn hostile_input_gives_defined_results_and_leaves_state_intact() {
    let warm = gci("", "arn:aws:iam::1:user/warm");
    let after = gci(r#","eventID":"after""#, "arn:aws:iam::1:user/after");
    for backend in [Backend::Native, Backend::Component] {
        for case in cases() {
            let label = format!("[{}] {}", backend.name(), case.name);
            let mut d = backend.open("", case.settings).expect("rule");
            assert_eq!(
                d.run(std::slice::from_ref(&warm))[0].len(),
                1,
                "{label}: warm-up alert"
            );
            let before = d.snapshot().expect("snapshot");
            let outs = d.run(&[case.input]).remove(0);
            match case.want {
                Want::Alert(term) => {
                    assert_eq!(outs.len(), 1, "{label}: {outs:?}");
                    let Out::Emit(doc) = &outs[0] else {
                        panic!("{label}: {outs:?}")
                    };
                    // The alert carries the record as it is, however deep: read its
                    // top-level entries only.
                    let entries: std::collections::BTreeMap<String, &serde_json::value::RawValue> =
                        serde_json::from_str(doc).expect("alert JSON");
                    let terms: Vec<String> =
                        serde_json::from_str(entries["kibana.alert.new_terms"].get())
                            .expect("new terms");
                    let got = terms.first().cloned().unwrap_or_default();
                    if term == "big" {
                        assert_eq!(got.len(), 1 << 20, "{label}");
                    } else {
                        assert_eq!(got, term, "{label}");
                    }
                }
                Want::Error(kind) => {
                    assert!(
                        matches!(&outs[..], [Out::Error { kind: k, .. }] if k == kind),
                        "{label}: {:?}",
                        outs.iter()
                            .map(|o| format!("{o:?}").chars().take(200).collect::<String>())
                            .collect::<Vec<_>>()
                    );
                    assert_eq!(
                        d.snapshot().expect("snapshot"),
                        before,
                        "{label}: an error changes no state"
                    );
                }
                Want::Nothing => {
                    assert!(outs.is_empty(), "{label}");
                    let stats = d.stats();
                    let records = stats.iter().find(|(k, _)| k == "records").map(|(_, v)| *v);
                    assert_eq!(records, Some(1_000_001), "{label}");
                }
            }
            assert_eq!(
                d.run(std::slice::from_ref(&after))[0].len(),
                1,
                "{label}: the next record alerts normally"
            );
        }
    }
}
