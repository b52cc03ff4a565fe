//! The record path: any bytes, in every output mode (the edge's `matches` included).
//! Properties: no panic; the counters add up; an error leaves the table as it was; the
//! detector still works afterwards; the table survives a snapshot round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use newterms::{Detector, Output, OutputMode, Settings};

const PROBE: &[u8] = br#"{"eventTime":"2100-01-01T00:00:00Z","eventSource":"sts.amazonaws.com","eventName":"GetCallerIdentity","userIdentity":{"type":"IAMUser","arn":"arn:aws:iam::1:user/fuzz-probe"}}"#;

fuzz_target!(|data: &[u8]| {
    for output in [
        OutputMode::Alert,
        OutputMode::Passthrough,
        OutputMode::Annotate,
        OutputMode::Matches,
    ] {
        let settings = Settings {
            output: Some(output),
            max_terms: Some(8),
            ..Settings::default()
        };
        let mut d = Detector::open(&[("rule", "")], &settings, None).unwrap();
        let before = d.snapshot();
        let mut errors = 0;
        d.process(data, &mut |o| {
            if let Output::Error(_) = o {
                errors += 1;
            }
        });
        let s = d.stats();
        let parts = s.prefiltered
            + s.unmatched
            + s.excepted
            + s.no_term
            + s.suppressed
            + s.alerted
            + s.error_total();
        assert_eq!(
            parts, s.records,
            "counters must partition the records: {s:?}"
        );
        if s.records == s.error_total() && s.records > 0 {
            assert_eq!(
                d.snapshot(),
                before,
                "errors alone must not change the table"
            );
        }
        assert!(errors as u64 >= s.error_total());
        let snap = d.snapshot();
        let restored = Detector::open(&[("rule", "")], &settings, Some(&snap)).unwrap();
        assert_eq!(restored.snapshot(), snap);
        let mut alerted = false;
        d.process(PROBE, &mut |o| alerted |= matches!(o, Output::Emit(_)));
        assert!(alerted, "the detector must still work after any input");
    }
    // The consumer's side: any bytes as a match document.
    let mut c = Detector::from_config("", "input = \"matches\"").unwrap();
    let before = c.snapshot();
    c.process(data, &mut |_| {});
    let s = c.stats();
    assert_eq!(s.records, 1);
    assert_eq!(s.suppressed + s.alerted + s.error_total(), 1, "{s:?}");
    if s.error_total() == 1 {
        assert_eq!(c.snapshot(), before, "an error must not change the table");
    }
});
