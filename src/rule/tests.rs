use super::*;
use crate::time::NANOS_PER_HOUR;

/// A rule file with settings as TOML text.
fn parse(text: &str, over: &str) -> Result<Rule, RuleError> {
    Rule::parse(text, &Settings::from_toml(over)?)
}

#[test]
fn default_rule_facts() {
    let r = Rule::default_rule();
    assert_eq!(r.rule_id, "30fbf4db-c502-4e68-a239-2e99af0f70da");
    assert_eq!(r.new_terms_fields, vec!["aws.cloudtrail.user_identity.arn"]);
    assert_eq!(r.history_window, 10 * NANOS_PER_DAY);
    assert_eq!(r.timestamp_override.as_deref(), Some("event.ingested"));
    assert_eq!(r.risk_score, 47);
    assert_eq!(r.threat[0]["tactic"]["id"], "TA0007");
    assert_eq!(r.settings, Settings::default());
    assert_eq!(parse("", "").unwrap(), r, "empty text loads the default");
}

#[test]
fn settings_and_overrides() {
    let text = format!("{DEFAULT_RULE}\n[newterms]\nmax_terms = 5\noutput = \"passthrough\"\n");
    let r = parse(&text, "output = \"annotate\"\nallowed_lateness = \"2h\"").unwrap();
    assert_eq!(r.settings.max_terms(), 5);
    assert_eq!(r.settings.output(), OutputMode::Annotate);
    assert_eq!(r.settings.allowed_lateness(), 2 * NANOS_PER_HOUR);
}

#[test]
fn errors_name_the_key() {
    let key = |text: &str, over: &str| parse(text, over).unwrap_err().key_name().map(str::to_owned);
    assert_eq!(key("", "max_terms = 0"), Some("newterms.max_terms".into()));
    assert_eq!(key("", "colour = 1"), Some("newterms.colour".into()));
    assert_eq!(key("", "output = \"xml\""), Some("newterms.output".into()));
    assert_eq!(
        key("", "allowed_lateness = \"soon\""),
        Some("newterms.allowed_lateness".into())
    );
    let swap = |from: &str, to: &str| DEFAULT_RULE.replacen(from, to, 1);
    assert_eq!(
        key(&swap("type = \"new_terms\"", "type = \"eql\""), ""),
        Some("rule.type".into())
    );
    assert_eq!(
        key(&swap("value = \"now-10d\"", "value = \"10d\""), ""),
        Some("rule.new_terms.history_window_start".into())
    );
    assert_eq!(
        key(&swap("risk_score = 47", "risk_score = \"high\""), ""),
        Some("rule.risk_score".into())
    );
    assert_eq!(
        key(&swap("rule_id =", "rule_idx ="), ""),
        Some("rule.rule_id".into())
    );
    assert_eq!(
        key(&swap("and not", "and not ("), ""),
        Some("rule.query".into())
    );
    assert!(matches!(parse("[rule\n", ""), Err(RuleError::Toml { .. })));
    let r = parse(&swap("now-10d", "now-12h"), "").unwrap();
    assert_eq!(r.history_window, 12 * NANOS_PER_HOUR);
}

#[test]
fn toml_is_read_as_the_toml_crate_reads_it() {
    let docs = [
            DEFAULT_RULE,
            "a = 0x1f\nb = 0o17\nb2 = -17\nc = 1_000\nd = 1.5e3\ne = inf\nf = 1979-05-27T07:32:00Z\n[[t.u]]\nv = [[1, 2], [{ w = { x = [] } }]]\n[[t.u]]\ny = 'z'",
            "",
        ];
    for doc in docs {
        let ours = parse_toml(doc).unwrap();
        let theirs: Table = doc.parse().unwrap();
        assert_eq!(ours, theirs, "{doc}");
    }
    for bad in [
        "a = 1\na = 2",
        "a = 99999999999999999999",
        "[a\n",
        "a = [1,",
    ] {
        assert!(parse_toml(bad).is_err(), "{bad}");
        assert!(bad.parse::<Table>().is_err(), "{bad}");
    }
}
#[test]
fn a_query_error_names_its_line_and_column_in_the_file() {
    let start = DEFAULT_RULE.find("query = ").unwrap();
    let end = start + 11 + DEFAULT_RULE[start + 11..].find("'''").unwrap() + 3;
    let rule = |query: &str| format!("{}{query}{}", &DEFAULT_RULE[..start], &DEFAULT_RULE[end..]);
    let text = rule("query = '''\nevent.action: x and\n  y: (z\n'''");
    let e = parse(&text, "").unwrap_err();
    let line = text.lines().position(|l| l == "  y: (z").unwrap() + 1;
    // The `(` that is not closed.
    assert!(
        matches!(e, RuleError::Query { at: Some((l, 6)), .. } if l == line),
        "{e}"
    );
    assert!(
        e.to_string().contains(&format!("line {line}, column 6")),
        "{e}"
    );
    let text = rule(r#"query = "a: \"x\" and b: \u0028 c""#);
    let e = parse(&text, "").unwrap_err();
    let line = text
        .lines()
        .position(|l| l.starts_with("query = "))
        .unwrap()
        + 1;
    assert!(
        matches!(e, RuleError::Query { at: Some((l, 26)), .. } if l == line),
        "{e}"
    );
}

#[test]
fn settings_read_the_same_from_toml_and_from_json() {
    let toml = r#"
        output = "annotate"
        input = "records"
        max_terms = 5
        max_table_bytes = 4096
        allowed_lateness = "90m"
        max_record_bytes = 2048
        on_error = "drop"
        state_file = "/var/lib/t.state"
        state_every_records = 7
        state_every_seconds = 9
        exceptions = ["user.name: ci"]
        kibana_exceptions = []
        value_lists = { ips = "10.0.0.1" }
    "#;
    let from_toml = Settings::from_toml(toml).unwrap();
    let json = r#"{"output": "annotate", "input": "records", "max_terms": 5,
        "max_table_bytes": 4096, "allowed_lateness": "90m", "max_record_bytes": 2048,
        "on_error": "drop", "state_file": "/var/lib/t.state", "state_every_records": 7,
        "state_every_seconds": 9, "exceptions": ["user.name: ci"],
        "value_lists": {"ips": "10.0.0.1"}}"#;
    assert_eq!(Settings::from_json(json).unwrap(), from_toml);
    assert_eq!(
        from_toml.allowed_lateness(),
        90 * crate::time::NANOS_PER_MIN
    );
    assert_eq!(from_toml.state_policy().every_records, 7);
    // Written back by serde, read again: the same settings.
    let written = serde_json::to_string(&from_toml).unwrap();
    assert_eq!(Settings::from_json(&written).unwrap(), from_toml);
    assert_eq!(
        serde_json::to_string(&Settings::default()).unwrap(),
        "{}",
        "a key not set is not written"
    );
}

#[test]
fn settings_errors_name_the_key_in_toml_and_json() {
    let toml = |t: &str| Settings::from_toml(t).unwrap_err();
    let json = |t: &str| Settings::from_json(t).unwrap_err();
    for (e, key, says) in [
        (toml("max_term = 5"), "newterms.max_term", "unknown field"),
        (
            json(r#"{"max_term": 5}"#),
            "newterms.max_term",
            "unknown field",
        ),
        (toml("max_terms = 0"), "newterms.max_terms", "at least 1"),
        (
            json(r#"{"max_terms": -3}"#),
            "newterms.max_terms",
            "at least 1",
        ),
        (
            json(r#"{"max_terms": "5"}"#),
            "newterms.max_terms",
            "at least 1",
        ),
        (toml("output = \"xml\""), "newterms.output", "alert"),
        (
            toml("allowed_lateness = \"soon\""),
            "newterms.allowed_lateness",
            "duration",
        ),
        (toml("exceptions = [1]"), "newterms.exceptions[0]", "string"),
        (
            toml("state_file = \"\""),
            "newterms.state_file",
            "file path",
        ),
        (
            json(r#"{"output": 1}"#),
            "newterms.output",
            "expected a string",
        ),
        (json(r#"{"max_terms": 5} x"#), "newterms", "trailing"),
    ] {
        assert_eq!(e.key_name(), Some(key), "{e}");
        assert!(e.to_string().contains(says), "{e}");
        assert!(!e.to_string().contains(" at line "), "{e}");
    }
}

#[test]
fn settings_layer_key_by_key() {
    let own = Settings::from_toml(
        "max_terms = 5\noutput = \"passthrough\"\nexceptions = [\"a: 1\"]\nvalue_lists = { l = \"x\", m = \"y\" }",
    )
    .unwrap();
    let host = Settings {
        output: Some(OutputMode::Annotate),
        exceptions: vec!["b: 2".into()],
        value_lists: [("m".to_owned(), "z".to_owned())].into(),
        ..Settings::default()
    };
    let s = own.layered(&host);
    assert_eq!(s.max_terms(), 5, "kept from below");
    assert_eq!(s.output(), OutputMode::Annotate, "set above wins");
    assert_eq!(s.exceptions, ["a: 1", "b: 2"], "exceptions add up");
    assert_eq!(s.value_lists["l"], "x");
    assert_eq!(s.value_lists["m"], "z");
    assert_eq!(own.layered(&Settings::default()), own);
    assert_eq!(Settings::default().layered(&own), own);
}

#[test]
fn exception_items_are_numbered_within_their_layer_the_rules_first() {
    let export = |list: &str| {
        format!(
            "{{\"list_id\":\"l\",\"type\":\"detection\",\"name\":\"L\"}}\n{{\"item_id\":\"{list}-item\",\"list_id\":\"l\",\"name\":\"I\",\"type\":\"simple\",\"entries\":[{{\"field\":\"source.ip\",\"operator\":\"included\",\"type\":\"list\",\"list\":{{\"id\":\"{list}\",\"type\":\"ip\"}}}}]}}"
        )
    };
    let own = Settings {
        exceptions: vec!["a: 1".into()],
        kibana_exceptions: vec![export("own")],
        value_lists: [("own".to_owned(), "10.0.0.1".to_owned())].into(),
        ..Settings::default()
    };
    let rule = format!("{DEFAULT_RULE}\n[newterms]\n{}", toml_body(&own));
    let host = Settings {
        exceptions: vec!["b: 2".into()],
        kibana_exceptions: vec![export("own"), export("host")],
        value_lists: [("host".to_owned(), "10.0.0.2".to_owned())].into(),
        ..Settings::default()
    };
    let r = Rule::parse(&rule, &host).unwrap();
    let ids: Vec<&str> = r.exceptions.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "newterms.exceptions[0]",
            "own-item",
            "newterms.exceptions[0]",
            "own-item",
            "host-item"
        ],
        "the rule's items, then the host's; the host's exports read both layers' lists"
    );
    assert!(r.settings.exceptions.is_empty() && r.settings.value_lists.is_empty());
    // The rule's own exports read only the rule's lists.
    let mut own_needs_host = own.clone();
    own_needs_host.kibana_exceptions = vec![export("host")];
    let rule = format!("{DEFAULT_RULE}\n[newterms]\n{}", toml_body(&own_needs_host));
    let e = Rule::parse(&rule, &host).unwrap_err();
    assert_eq!(e.key_name(), Some("newterms.kibana_exceptions[0]"), "{e}");
}

/// The exception keys of settings as the lines of a `[newterms]` table (a JSON string is a
/// TOML basic string).
fn toml_body(s: &Settings) -> String {
    let q = |t: &str| serde_json::Value::from(t).to_string();
    let list = |v: &[String]| v.iter().map(|t| q(t)).collect::<Vec<_>>().join(", ");
    let lists: Vec<String> = s
        .value_lists
        .iter()
        .map(|(k, v)| format!("{} = {}", q(k), q(v)))
        .collect();
    format!(
        "exceptions = [{}]\nkibana_exceptions = [{}]\nvalue_lists = {{ {} }}\n",
        list(&s.exceptions),
        list(&s.kibana_exceptions),
        lists.join(", ")
    )
}
