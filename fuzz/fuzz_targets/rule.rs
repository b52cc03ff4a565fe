//! The rule parser: any text as a rule file and as a KQL query. Properties: no panic; a
//! query that parses prints as KQL that parses back to the same tree.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = newterms::Detector::from_config(text, "");
    let _ = newterms::Detector::from_config("", text);
    if let Ok(expr) = newterms::query::parse(text) {
        let printed = expr.to_string();
        let again = newterms::query::parse(&printed).expect("printed KQL parses");
        assert_eq!(again, expr, "{text:?} printed as {printed:?}");
    }
});
