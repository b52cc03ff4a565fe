//! The rule's KQL query: parsed once, bound to the record layout, evaluated per record.

mod ast;
mod compile;
mod condition;
mod dsl;
mod error;
mod literal;
mod net;
mod node;
mod parse;
mod pattern;
mod program;
mod scan;

pub use ast::{Expr, Pattern, ValueExpr};
pub use compile::is_ip_field;
pub use condition::Condition;
pub use dsl::{parse_filters, DslError};
pub use error::{QueryError, QueryErrorKind};
pub(crate) use literal::{has_escape, unquoted};
pub use literal::{BufferScan, Prefilter, Writer};
pub use net::Cidr;
pub use node::{Bound, Node, Test};
pub use parse::parse;
pub use pattern::{glob, glob_with, Fold};
pub use program::Program;
pub(crate) use scan::PORTABLE;

pub(crate) use node::wrong_type;

use crate::error::RecordError;
use crate::record::{Layout, LayoutBuilder, RecordView};

/// A compiled query: its tree (what the prefilter studies) and its program (what runs).
#[derive(Debug, Clone)]
pub struct Query {
    root: Node,
    program: Program,
}

impl Query {
    /// Parses `text` and registers every field it reads with `layout`.
    pub fn compile(text: &str, layout: &mut LayoutBuilder) -> Result<Query, QueryError> {
        Query::compile_parsed(&parse(text)?, layout)
    }

    /// Compiles a query already parsed.
    pub fn compile_parsed(expr: &Expr, layout: &mut LayoutBuilder) -> Result<Query, QueryError> {
        Ok(Query::of(compile::compile(expr, layout)?))
    }

    fn of(root: Node) -> Query {
        let program = Program::new(&root);
        Query { root, program }
    }

    /// The query with further conditions that must also hold (the rule's filters).
    pub fn and(self, more: Vec<Node>) -> Query {
        if more.is_empty() {
            return self;
        }
        let mut all = vec![self.root];
        all.extend(more);
        Query::of(Node::And(all))
    }

    pub fn root(&self) -> &Node {
        &self.root
    }

    /// The prefilter this query allows.
    pub fn prefilter(&self, layout: &Layout) -> Prefilter {
        Prefilter::from_node(&self.root, layout)
    }

    /// Whether the record matches.
    pub fn matches(&self, view: &RecordView<'_>, layout: &Layout) -> Result<bool, RecordError> {
        self.program.eval(view, layout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn run(q: &str, rec: &str) -> Result<bool, ErrorKind> {
        let mut b = LayoutBuilder::new();
        let query = Query::compile(q, &mut b).unwrap();
        let layout = b.build();
        let view = RecordView::parse(rec.as_bytes(), &layout, false).unwrap();
        query.matches(&view, &layout).map_err(|e| e.kind())
    }

    #[test]
    fn semantics() {
        assert_eq!(run("a: x", r#"{"a":"x"}"#), Ok(true));
        assert_eq!(run("a: x", r#"{"a":"X"}"#), Ok(false), "case-sensitive");
        assert_eq!(run("a: x", r#"{}"#), Ok(false));
        assert_eq!(
            run("not a: x", r#"{}"#),
            Ok(true),
            "not is true when absent"
        );
        assert_eq!(run("not a: x", r#"{"a":null}"#), Ok(true));
        assert_eq!(run("a: x", r#"{"a":["y","x"]}"#), Ok(true), "any element");
        assert_eq!(run("a: (x and y)", r#"{"a":["y","x"]}"#), Ok(true));
        assert_eq!(run("a: (x and z)", r#"{"a":["y","x"]}"#), Ok(false));
        assert_eq!(run("a: *", r#"{"a":{"b":1}}"#), Ok(true));
        assert_eq!(run("a: *", r#"{"a":null}"#), Ok(false));
        assert_eq!(run("a: x*", r#"{"a":"xyz"}"#), Ok(true));
        assert_eq!(
            run(r#"a: "x*""#, r#"{"a":"xyz"}"#),
            Ok(false),
            "quoted * is literal"
        );
        assert_eq!(
            run("a: 5", r#"{"a":5}"#),
            Ok(true),
            "numbers compare as keyword text"
        );
        assert_eq!(run("a: true", r#"{"a":true}"#), Ok(true));
        assert_eq!(run("a: x", r#"{"a":{"b":"x"}}"#), Err(ErrorKind::WrongType));
        assert_eq!(run("a.b: x", r#"{"a":"x"}"#), Err(ErrorKind::WrongType));
        assert_eq!(
            run("c: y and a: x", r#"{"a":{"b":"x"}}"#),
            Ok(false),
            "short-circuit"
        );
    }

    /// Each construct Kibana reads, on records that show what it matches: `(query,
    /// record, answer)`, where the answer is a match, no match, or the error kind.
    #[test]
    fn every_construct_on_records() {
        use ErrorKind::WrongType;
        let cases: &[(&str, &str, Result<bool, ErrorKind>)] = &[
            // Unquoted values with inner spaces and wildcards.
            (
                "ua: (*S3 Browser* or *Cyberduck*)",
                r#"{"ua":"Mozilla S3 Browser 9"}"#,
                Ok(true),
            ),
            (
                "ua: (*S3 Browser* or *Cyberduck*)",
                r#"{"ua":"S3Browser"}"#,
                Ok(false),
            ),
            ("p: foo  bar", r#"{"p":"foo  bar"}"#, Ok(true)),
            ("p: foo  bar", r#"{"p":"foo bar"}"#, Ok(false)),
            // Escapes: an unknown one inside quotes is a backslash.
            (
                r#"exe: "C:\Program Files\WinRAR\uninstall.exe""#,
                r#"{"exe":"C:\\Program Files\\WinRAR\\uninstall.exe"}"#,
                Ok(true),
            ),
            (r"x: C\:\\Windows", r#"{"x":"C:\\Windows"}"#, Ok(true)),
            (r"m: can\NOT find", r#"{"m":"canNOT find"}"#, Ok(true)),
            (r"a: x\*y*", r#"{"a":"x*yz"}"#, Ok(true)),
            (r"a: x\*y*", r#"{"a":"xayz"}"#, Ok(false)),
            // Free text: any value of the record; wildcards only against strings.
            (
                r#""hello world""#,
                r#"{"a":{"b":["x","hello world"]}}"#,
                Ok(true),
            ),
            (r#""hello world""#, r#"{"hello world":"x"}"#, Ok(false)),
            ("example", r#"{"deep":[[{"x":"example"}]]}"#, Ok(true)),
            ("hello*", r#"{"a":"hello there"}"#, Ok(true)),
            ("1*", r#"{"n":123}"#, Ok(false)),
            ("42", r#"{"n":42.0}"#, Ok(true)),
            ("true", r#"{"b":true}"#, Ok(true)),
            (r#"not "missing""#, r#"{"a":"present"}"#, Ok(true)),
            (r#"not "missing""#, r#"{"a":"missing"}"#, Ok(false)),
            (r#""missing" or number:1"#, r#"{"number":1}"#, Ok(true)),
            (
                "eventName: X and GetCallerIdentity",
                r#"{"eventName":"X","y":"GetCallerIdentity"}"#,
                Ok(true),
            ),
            // Nested: the conditions hold for one element.
            (
                "items:{ a:1 and b:2 }",
                r#"{"items":[{"a":1,"b":3},{"a":2,"b":2}]}"#,
                Ok(false),
            ),
            (
                "items:{ a:1 and b:2 }",
                r#"{"items":[{"a":0},{"a":1,"b":2}]}"#,
                Ok(true),
            ),
            (
                "items:{ a:1 and b:2 }",
                r#"{"items":{"a":1,"b":2}}"#,
                Ok(true),
            ),
            (
                "items:{ a:1 } and items:{ b:2 }",
                r#"{"items":[{"a":1,"b":3},{"a":2,"b":2}]}"#,
                Ok(true),
            ),
            ("items:{ a:1 }", r#"{"items":[[{"a":1}]]}"#, Ok(true)),
            ("items:{ a:1 }", r#"{"items":"x"}"#, Ok(false)),
            ("items:{ a:1 }", r#"{}"#, Ok(false)),
            ("not items:{ a:1 }", r#"{"items":[{"a":2}]}"#, Ok(true)),
            (
                "a:{ b:{ c:1 and d:2 } }",
                r#"{"a":[{"b":[{"c":1,"d":2}]}]}"#,
                Ok(true),
            ),
            (
                "a:{ b:{ c:1 and d:2 } }",
                r#"{"a":[{"b":[{"c":1},{"d":2}]}]}"#,
                Ok(false),
            ),
            (
                "items:{ a:1 } and x: y",
                r#"{"items":[{"a":1}],"x":"y"}"#,
                Ok(true),
            ),
            (
                "items:{ a.b:1 }",
                r#"{"items":[{"a":"scalar"}]}"#,
                Err(WrongType),
            ),
            // Multi-fields: .caseless reads the field lowercased; .text its words.
            (
                "process.name.caseless: quickassist.exe",
                r#"{"process":{"name":"QuickAssist.exe"}}"#,
                Ok(true),
            ),
            (
                "process.name.caseless: QuickAssist.exe",
                r#"{"process.name":"quickassist.EXE"}"#,
                Ok(true),
            ),
            (
                "process.name.caseless: quick*",
                r#"{"process":{"name":"QUICKASSIST.EXE"}}"#,
                Ok(true),
            ),
            (
                "process.name.caseless: quickassist.exe",
                r#"{"process":{"name":"other.exe"}}"#,
                Ok(false),
            ),
            (
                "process.name.caseless: *",
                r#"{"process":{"name":"x"}}"#,
                Ok(true),
            ),
            (
                "process.name.caseless: x",
                r#"{"process":{"name":{"y":1}}}"#,
                Err(WrongType),
            ),
            (
                r#"message.text: "error occurred""#,
                r#"{"message":"An Error occurred."}"#,
                Ok(true),
            ),
            (
                r#"message.text: "error occurred""#,
                r#"{"message":"error, then it occurred"}"#,
                Ok(false),
            ),
            (
                "message.text: occur*",
                r#"{"message":"An Error occurred."}"#,
                Ok(true),
            ),
            // An empty query matches every record.
            ("", r#"{"a":1}"#, Ok(true)),
        ];
        for (q, rec, want) in cases {
            assert_eq!(run(q, rec), *want, "{q} on {rec}");
        }
    }

    /// The prefilter never rejects a record the query matches, for every construct.
    #[test]
    fn the_prefilter_is_sound_for_every_construct() {
        for (q, rec) in [
            (r#""hello world""#, r#"{"a":"hello world"}"#),
            (r#""hello world""#, r#"{"a":"hello\u0020world"}"#),
            ("items:{ name: abcdef }", r#"{"items":[{"name":"abcdef"}]}"#),
            (
                "process.name.caseless: quickassist.exe",
                r#"{"process":{"name":"QuickAssist.exe"}}"#,
            ),
            (
                "process.name.caseless: kite",
                "{\"process\":{\"name\":\"\u{212a}ITE\"}}",
            ),
        ] {
            let mut b = LayoutBuilder::new();
            let query = Query::compile(q, &mut b).unwrap();
            let layout = b.build();
            let view = RecordView::parse(rec.as_bytes(), &layout, false).unwrap();
            assert_eq!(query.matches(&view, &layout), Ok(true), "{q} on {rec}");
            assert!(
                query.prefilter(&layout).may_match(rec.as_bytes()),
                "{q} on {rec}"
            );
        }
    }
}
