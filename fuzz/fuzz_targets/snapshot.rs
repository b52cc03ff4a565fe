//! The snapshot decoder: any bytes. Properties: no panic; what decodes encodes to the same
//! bytes, and restores.
#![no_main]

use libfuzzer_sys::fuzz_target;
use newterms::snapshot::Snapshot;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = Snapshot::decode(data) {
        assert_eq!(
            s.encode(),
            data,
            "decode then encode must give the same bytes"
        );
        let _ =
            newterms::Detector::open(&[("rule", "")], &newterms::Settings::default(), Some(data));
    }
});
