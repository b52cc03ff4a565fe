use super::*;

/// The frames of `text` read a line at a time, as `(kind, line, text)`.
fn frames_of(text: &str, max: usize) -> Vec<(&'static str, u64, String)> {
    let mut framer = Framer::new(max);
    let mut out = Vec::new();
    let mut sink = |f: Frame<'_>| {
        out.push(match f {
            Frame::Value { line, text } => {
                ("value", line, String::from_utf8_lossy(text).into_owned())
            }
            Frame::Bad { line, text, .. } => {
                ("bad", line, String::from_utf8_lossy(text).into_owned())
            }
            Frame::TooLarge { line, bytes } => ("too-large", line, bytes.to_string()),
        })
    };
    for line in text.split('\n') {
        framer.line(line.as_bytes(), &mut sink);
    }
    framer.finish(&mut sink);
    out
}

fn frames(text: &str) -> Vec<(&'static str, u64, String)> {
    frames_of(text, 1 << 20)
}

fn v(line: u64, text: &str) -> (&'static str, u64, String) {
    ("value", line, text.to_owned())
}

fn bad(line: u64, text: &str) -> (&'static str, u64, String) {
    ("bad", line, text.to_owned())
}

#[test]
fn ndjson_lines_are_values_with_their_line_numbers() {
    assert_eq!(
        frames("{\"a\":1}\n\n{\"b\":[1,{\"c\":\"}\"}]}\r\n  {\"d\":true}  \n"),
        vec![
            v(1, "{\"a\":1}"),
            v(3, "{\"b\":[1,{\"c\":\"}\"}]}"),
            v(4, "{\"d\":true}")
        ]
    );
}

#[test]
fn a_bad_first_line_costs_that_line_only() {
    // Cut between tokens: the next line could continue it, until the one after.
    assert_eq!(
        frames("{\"a\":\n{\"b\":1}\n{\"c\":2}"),
        vec![bad(1, "{\"a\":"), v(2, "{\"b\":1}"), v(3, "{\"c\":2}")]
    );
    // Cut inside a string: no string holds a line break.
    assert_eq!(
        frames("{\"a\":\"x\n{\"b\":1}"),
        vec![bad(1, "{\"a\":\"x"), v(2, "{\"b\":1}")]
    );
    // Cut after a comma: a key must follow.
    assert_eq!(
        frames("{\"a\":1,\n{\"b\":1}"),
        vec![bad(1, "{\"a\":1,"), v(2, "{\"b\":1}")]
    );
    // Not JSON at all, and a cut literal.
    assert_eq!(
        frames("not json\n{\"a\":tru\n{\"b\":1}"),
        vec![bad(1, "not json"), bad(2, "{\"a\":tru"), v(3, "{\"b\":1}")]
    );
    // The last line cut: the end of the stream is the damage.
    assert_eq!(
        frames("{\"a\":1}\n{\"b\":[1,"),
        vec![v(1, "{\"a\":1}"), bad(2, "{\"b\":[1,")]
    );
}

#[test]
fn damage_says_where() {
    let mut whys = Vec::new();
    let mut framer = Framer::new(1 << 20);
    for line in [
        "{\"a\":1} x",
        "{\"a\":\"b",
        "{\"a\":",
        "{\"b\":1}",
        "{\"c\":2}",
        "[1,",
    ] {
        framer.line(line.as_bytes(), &mut |f| {
            if let Frame::Bad { line, why, .. } = f {
                whys.push((line, why.to_string()));
            }
        });
    }
    framer.finish(&mut |f| {
        if let Frame::Bad { line, why, .. } = f {
            whys.push((line, why.to_string()));
        }
    });
    assert_eq!(
        whys,
        [
            (1, "not JSON: `x` at column 9".to_owned()),
            (
                2,
                "not JSON: the line ends inside a string or a word".to_owned()
            ),
            (
                3,
                "not JSON: a value starts here and is not whole (line 5 cannot continue it)"
                    .to_owned()
            ),
            (6, "not JSON: the input ends inside this value".to_owned()),
        ]
    );
}

#[test]
fn two_cut_lines_in_a_row_are_two_bad_lines() {
    assert_eq!(
        frames("{\"a\":[\n{\"b\":{\n{\"c\":1}\n{\"d\":2}"),
        vec![
            bad(1, "{\"a\":["),
            bad(2, "{\"b\":{"),
            v(3, "{\"c\":1}"),
            v(4, "{\"d\":2}")
        ]
    );
}

#[test]
fn a_pretty_printed_document_is_one_value() {
    let doc = "{\n  \"Records\": [\n    {\n      \"a\": 1\n    },\n    {\"b\": \"x\\\"y\"}\n  ]\n}";
    assert_eq!(frames(doc), vec![v(1, doc)]);
    let array = "[\n{\"a\":1},\n{\"a\":2}\n]";
    assert_eq!(frames(array), vec![v(1, array)]);
}

#[test]
fn documents_one_after_another_are_each_read() {
    assert_eq!(
        frames("{\n\"a\": 1\n}\n{\n\"b\": 2\n}{\"c\":3} {\"d\":4},{\"e\":5}\n7 \"s\" null"),
        vec![
            v(1, "{\n\"a\": 1\n}"),
            v(4, "{\n\"b\": 2\n}"),
            v(6, "{\"c\":3}"),
            v(6, "{\"d\":4}"),
            v(6, "{\"e\":5}"),
            v(7, "7"),
            v(7, "\"s\""),
            v(7, "null")
        ]
    );
    // A number ends where the next value starts.
    assert_eq!(frames("1{\"a\":1}"), vec![v(1, "1"), v(1, "{\"a\":1}")]);
}

#[test]
fn a_damaged_line_is_bad_from_where_the_last_value_ended() {
    // Values that start on the damaged line go with it: the line is the unit.
    assert_eq!(
        frames("{\"a\":1} }\n{\n\"b\":1\n} x\n{\"c\":1}"),
        vec![
            bad(1, "{\"a\":1} }"),
            v(2, "{\n\"b\":1\n}"),
            bad(4, "x"),
            v(5, "{\"c\":1}")
        ]
    );
}

#[test]
fn escapes_are_followed() {
    let line = r#"{"a":"\"}\\","b":"\u00e9\/\n","c":"{["}"#;
    assert_eq!(frames(line), vec![v(1, line)]);
    assert_eq!(frames(r#"{"a":"\x"}"#), vec![bad(1, r#"{"a":"\x"}"#)]);
    assert_eq!(
        frames(r#"{"a":"\u00g0"}"#),
        vec![bad(1, r#"{"a":"\u00g0"}"#)]
    );
    assert_eq!(frames("{\"a\":\"\t\"}"), vec![bad(1, "{\"a\":\"\t\"}")]);
}

#[test]
fn a_value_over_the_limit_is_reported_and_reading_goes_on() {
    assert_eq!(
        frames_of("{\"a\":\"0123456789\"}\n{\"b\":1}", 10),
        vec![("too-large", 1, "18".into()), v(2, "{\"b\":1}")]
    );
    assert_eq!(
        frames_of("{\n\"a\": \"0123456789\"\n}\n{\"b\":1}", 10),
        vec![("too-large", 1, "21".into()), v(4, "{\"b\":1}")]
    );
}

#[test]
fn files_are_read_in_the_time_their_names_carry() {
    let mut paths: Vec<String> = [
        "t/us-west-2/2024/01/02/1_CloudTrail_us-west-2_20240102T0100Z_b.json.gz",
        "t/us-east-1/2024/01/02/1_CloudTrail_us-east-1_20240102T0200Z_a.json.gz",
        "t/us-east-1/2024/01/01/1_CloudTrail_us-east-1_20240101T2355Z_c.json.gz",
        "t/notes.json",
        "t/us-west-2/2024/01/01/1_CloudTrail_us-west-2_20240101T2350Z_d.json.gz",
        "t/a.json",
    ]
    .map(String::from)
    .to_vec();
    reading_order(&mut paths);
    let ends: Vec<&str> = paths
        .iter()
        .map(|p| &p[p.len().saturating_sub(9)..])
        .collect();
    assert_eq!(
        ends,
        [
            "t/a.json",
            "otes.json",
            "d.json.gz",
            "c.json.gz",
            "b.json.gz",
            "a.json.gz"
        ]
    );
    assert_eq!(name_time("x/20240101T2350Z"), Some("20240101T2350Z"));
    assert_eq!(name_time("20240101T2350Z/x"), None);
    assert_eq!(name_time("1_20240101T235Z_"), None);
}

#[test]
fn a_byte_order_mark_is_skipped() {
    assert_eq!(frames("\u{feff}{\"a\":1}"), vec![v(1, "{\"a\":1}")]);
}

/// NDJSON of generated records with lines cut at every kind of place: each whole line
/// comes out as itself with its number, each cut line as bad, nothing else.
#[test]
fn cut_lines_never_take_their_neighbours() {
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    for _ in 0..300 {
        let mut text = String::new();
        let mut want = Vec::new();
        let lines = 1 + next(8);
        for n in 1..=lines {
            let record = format!(
                r#"{{"id":{n},"s":"a\"b\\c","arr":[1,-2.5e3,true,null,{{"k":"v"}}],"o":{{"x":[]}}}}"#
            );
            if next(3) == 0 {
                let cut = &record[..1 + next(record.len() - 1)];
                want.push(bad(n as u64, cut.trim_ascii()));
                text.push_str(cut);
            } else {
                want.push(v(n as u64, &record));
                text.push_str(&record);
            }
            if n < lines {
                text.push('\n');
            }
        }
        assert_eq!(frames(&text), want, "{text}");
    }
}
