//! The rule's KQL query: parsed once, bound to the record layout, evaluated per record.

mod ast;
mod compile;
mod dsl;
mod error;
mod literal;
mod parse;
mod scan;

pub use ast::{Expr, Pattern, ValueExpr};
pub use compile::{is_ip_field, Bound, Node};
pub use dsl::{parse_filters, DslError};
pub use error::{QueryError, QueryErrorKind};
pub use literal::{BufferScan, Prefilter};
pub use parse::parse;

pub(crate) use compile::{compile as compile_expr, wrong_type};

use crate::error::RecordError;
use crate::record::{Layout, LayoutBuilder, RecordView};

/// A compiled query.
#[derive(Debug, Clone)]
pub struct Query {
    root: Node,
}

impl Query {
    /// Parses `text` and registers every field it reads with `layout`.
    pub fn compile(text: &str, layout: &mut LayoutBuilder) -> Result<Query, QueryError> {
        let expr = parse(text)?;
        Ok(Query {
            root: compile::compile(&expr, layout)?,
        })
    }

    /// The query with further conditions that must also hold (the rule's filters).
    pub fn and(self, more: Vec<Node>) -> Query {
        if more.is_empty() {
            return self;
        }
        let mut all = vec![self.root];
        all.extend(more);
        Query {
            root: Node::And(all),
        }
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
        self.root.eval(view, layout)
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
}
