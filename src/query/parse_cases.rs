//! How Kibana's kuery grammar reads queries, case by case (each checked against Kibana's
//! grammar), and that every tree prints back to KQL that reads the same.

use super::parse;
use crate::query::ast::{Expr, Pattern, RangeOp, ValueExpr};
use crate::query::error::QueryErrorKind;

fn exact(s: &str) -> Pattern {
    Pattern::Exact(s.into())
}

fn wild(p: &[&str]) -> Pattern {
    Pattern::Wildcard(p.iter().map(|s| s.to_string()).collect())
}

fn field(f: &str, p: Pattern) -> Expr {
    Expr::Field {
        field: f.into(),
        value: ValueExpr::Value(p),
    }
}

fn values(f: &str, v: ValueExpr) -> Expr {
    Expr::Field {
        field: f.into(),
        value: v,
    }
}

fn free(p: Pattern) -> Expr {
    Expr::FreeText(p)
}

fn val(p: Pattern) -> ValueExpr {
    ValueExpr::Value(p)
}

fn not(e: Expr) -> Expr {
    Expr::Not(Box::new(e))
}

/// Queries Kibana reads, and the tree each reads as.
fn accepted() -> Vec<(&'static str, Expr)> {
    vec![
        // Unquoted values hold inner spaces and wildcards.
        (
            "user_agent.original: (*S3 Browser* or *Cyberduck*)",
            values(
                "user_agent.original",
                ValueExpr::Or(vec![
                    val(wild(&["", "S3 Browser", ""])),
                    val(wild(&["", "Cyberduck", ""])),
                ]),
            ),
        ),
        ("p:   foo  bar   ", field("p", exact("foo  bar"))),
        ("foo bar: baz", field("foo bar", exact("baz"))),
        ("a: 070", field("a", exact("070"))),
        ("a: b?c", field("a", exact("b?c"))),
        // An unknown escape inside quotes is a backslash; \t \r \n are escapes there.
        (
            r#"process.executable: "C:\Program Files\WinRAR\uninstall.exe""#,
            field(
                "process.executable",
                exact(r"C:\Program Files\WinRAR\uninstall.exe"),
            ),
        ),
        (r#"a: "C:\new\temp""#, field("a", exact("C:\new\temp"))),
        (r#"a: "b*\"\\\u0041""#, field("a", exact("b*\"\\A"))),
        (r#"a: "\ud83d\ude00""#, field("a", exact("\u{1f600}"))),
        ("a: \"multi\nline\"", field("a", exact("multi\nline"))),
        // Keywords inside values.
        ("p: nottingham", field("p", exact("nottingham"))),
        ("p: cannot", field("p", exact("cannot"))),
        ("p: foo not", field("p", exact("foo not"))),
        ("a:x and", field("a", exact("x and"))),
        ("a: x or", field("a", exact("x or"))),
        ("a:(or)", field("a", exact("or"))),
        (r"p: foo \and bar", field("p", exact("foo and bar"))),
        (r"m: can\NOT find", field("m", exact("canNOT find"))),
        (r"m: can\Not find", field("m", exact("canNot find"))),
        // `\n` is read before `\not`: a newline, then `ot`.
        (r"m: can\not find", field("m", exact("can\not find"))),
        (
            "f: *No such file or directory*",
            Expr::Or(vec![
                field("f", wild(&["", "No such file"])),
                free(wild(&["directory", ""])),
            ]),
        ),
        (
            "p: foo or bar",
            Expr::Or(vec![field("p", exact("foo")), free(exact("bar"))]),
        ),
        // Unquoted escapes.
        (r"a: b\:c\*", field("a", exact("b:c*"))),
        (r"a\*b: x", field("a*b", exact("x"))),
        (r"a: x\*y*", field("a", wild(&["x*y", ""]))),
        (r"x: C\:\\Windows", field("x", exact(r"C:\Windows"))),
        (r"a: \u0041b", field("a", exact("Ab"))),
        (r"p: foo\t", field("p", exact("foo"))),
        // Free text.
        (r#""hello world""#, free(exact("hello world"))),
        ("example", free(exact("example"))),
        ("hello*", free(wild(&["hello", ""]))),
        (r#"not "missing""#, not(free(exact("missing")))),
        (
            r#""missing" or number:1"#,
            Expr::Or(vec![free(exact("missing")), field("number", exact("1"))]),
        ),
        ("foo bar", free(exact("foo bar"))),
        (
            "foo and bar",
            Expr::And(vec![free(exact("foo")), free(exact("bar"))]),
        ),
        ("or foo", free(exact("or foo"))),
        ("( or x)", free(exact("or x"))),
        // Fields.
        (r#""a b":c"#, field("a b", exact("c"))),
        ("or:1", field("or", exact("1"))),
        ("and:1", field("and", exact("1"))),
        ("a : b", field("a", exact("b"))),
        // Ranges.
        (
            "a<5",
            Expr::Range {
                field: "a".into(),
                op: RangeOp::Lt,
                value: "5".into(),
            },
        ),
        (
            r#"b >= "x y""#,
            Expr::Range {
                field: "b".into(),
                op: RangeOp::Gte,
                value: "x y".into(),
            },
        ),
        // Keywords in any case; NOT binds tighter than AND, AND than OR.
        (
            "a:1 OR b:2 and NoT c:3",
            Expr::Or(vec![
                field("a", exact("1")),
                Expr::And(vec![field("b", exact("2")), not(field("c", exact("3")))]),
            ]),
        ),
        (
            "a:1\u{a0}or\u{a0}b:2",
            Expr::Or(vec![field("a", exact("1")), field("b", exact("2"))]),
        ),
        (
            "a: (x or not (y and z))",
            values(
                "a",
                ValueExpr::Or(vec![
                    val(exact("x")),
                    ValueExpr::Not(Box::new(ValueExpr::And(vec![
                        val(exact("y")),
                        val(exact("z")),
                    ]))),
                ]),
            ),
        ),
        // Nested queries.
        (
            "items:{ a:1 and b:2 }",
            Expr::Nested {
                path: "items".into(),
                query: Box::new(Expr::And(vec![
                    field("a", exact("1")),
                    field("b", exact("2")),
                ])),
            },
        ),
        (
            "a:{b:{c:1}} or d:2",
            Expr::Or(vec![
                Expr::Nested {
                    path: "a".into(),
                    query: Box::new(Expr::Nested {
                        path: "b".into(),
                        query: Box::new(field("c", exact("1"))),
                    }),
                },
                field("d", exact("2")),
            ]),
        ),
        // Empty: every record.
        ("", Expr::And(vec![])),
        ("  \n ", Expr::And(vec![])),
    ]
}

/// Queries Kibana refuses, with the character where we say the error is.
fn refused() -> Vec<(&'static str, usize)> {
    vec![
        ("message: cannot find", 12),
        ("p: knot tying", 4),
        ("a:foo andb:bar", 10),
        ("p: not foo", 3),
        ("not not a:1", 4),
        ("a: (not not x)", 8),
        ("a > 1 < 2", 6),
        ("a:b:c", 3),
        ("a:{b:1}:c", 7),
        (r#"a:"x"y"#, 5),
        ("a: ()", 4),
        ("()", 1),
        ("a:", 2),
        (":a", 0),
        ("(a:1)or(b:2)", 5),
        ("a:1 or(b:2)", 6),
        ("not(a:1)", 3),
        (r"x: C:\Windows", 4),
        (r"x: C\:\Windows", 6),
        (r"p: a\Pb", 4),
        (r"foo\ bar", 3),
        (r#"a: "x"#, 3),
        ("(a: 1", 0),
        ("a: { b: 1 ", 3),
        ("a: (b or { c: 1 })", 9),
        ("a: 1 b: 2", 6),
        ("a >", 3),
        ("> 5", 0),
    ]
}

#[test]
fn reads_as_kibana_reads() {
    for (q, want) in accepted() {
        match parse(q) {
            Ok(got) => assert_eq!(got, want, "{q:?}"),
            Err(e) => panic!("{q:?}: {e}"),
        }
    }
}

#[test]
fn refuses_what_kibana_refuses_and_says_where() {
    for (q, at) in refused() {
        match parse(q) {
            Ok(e) => panic!("{q:?} should not parse, read as {e:?}"),
            Err(e) => assert_eq!(e.position(), at, "{q:?}: {e}"),
        }
    }
}

#[test]
fn what_we_do_not_run_is_named() {
    for (q, what) in [
        ("a*: 1", "a wildcard in a field name"),
        ("a > 5*", "a wildcard in a range bound"),
        (r#"a: "\ud800""#, "half a surrogate pair"),
    ] {
        let e = parse(q).unwrap_err();
        assert!(
            matches!(e.kind(), QueryErrorKind::Unsupported(_)),
            "{q}: {e}"
        );
        assert!(e.to_string().contains(what), "{q}: {e}");
    }
    let deep = format!("{}a:1{}", "(".repeat(40), ")".repeat(40));
    assert!(parse(&deep).unwrap_err().to_string().contains("nested"));
    let ok = format!("{}a:1{}", "(".repeat(30), ")".repeat(30));
    assert_eq!(parse(&ok).unwrap(), field("a", exact("1")));
}

#[test]
fn every_tree_prints_back_to_itself() {
    let mut queries: Vec<&str> = accepted().into_iter().map(|(q, _)| q).collect();
    queries.extend([
        r#"event.dataset: "aws.cloudtrail" and not a.b: "x\"y" or c: (d or e* and not "f g")"#,
        r#"a: *x\:y z* and b: "\\" and c: "line\nbreak""#,
        "a: * or not (b: 1 and c: true)",
        r#"\not: x and a\:b: y and c: \or*"#,
        r#"a >= 5 and b < "x\"y" and c: { d <= 2 or e: f }"#,
        r"a: *x \or y* and *\NOT z*",
        "a: *\tx\u{a0}and\u{a0}y*",
    ]);
    for q in queries {
        let e = parse(q).unwrap_or_else(|e| panic!("{q:?}: {e}"));
        let printed = e.to_string();
        assert_eq!(
            parse(&printed).unwrap_or_else(|err| panic!("{q:?} printed as {printed:?}: {err}")),
            e,
            "{q:?} printed as {printed:?}"
        );
    }
}
