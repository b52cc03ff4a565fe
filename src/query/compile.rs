//! A parsed query bound to a record layout, and its evaluation against one record.

use super::ast::{Expr, Pattern, ValueExpr};
use super::error::QueryError;
use crate::error::{ErrorKind, RecordError};
use crate::record::{Field, FieldId, Layout, LayoutBuilder, RecordView};

/// A compiled query node: value lists are distributed over their field, so every leaf
/// reads one field.
#[derive(Debug, Clone)]
pub enum Node {
    And(Vec<Node>),
    Or(Vec<Node>),
    Not(Box<Node>),
    Match {
        field: FieldId,
        pattern: Pattern,
    },
    Exists(FieldId),
    /// A value matches a wildcard with `*` and `?` (exception entries).
    Glob {
        field: FieldId,
        pattern: String,
    },
    /// A value is an IP address inside a network (exception entries on IP fields).
    InNetwork {
        field: FieldId,
        net: crate::exceptions::Cidr,
    },
    /// A value is one of a set, or an IP address inside one of the networks (value lists).
    InSet {
        field: FieldId,
        values: hashbrown::HashSet<String>,
        nets: Vec<crate::exceptions::Cidr>,
    },
}

pub(crate) fn compile(expr: &Expr, layout: &mut LayoutBuilder) -> Result<Node, QueryError> {
    Ok(match expr {
        Expr::And(items) => Node::And(
            items
                .iter()
                .map(|e| compile(e, layout))
                .collect::<Result<_, _>>()?,
        ),
        Expr::Or(items) => Node::Or(
            items
                .iter()
                .map(|e| compile(e, layout))
                .collect::<Result<_, _>>()?,
        ),
        Expr::Not(e) => Node::Not(Box::new(compile(e, layout)?)),
        Expr::Field { field, value } => {
            let id = layout
                .field(field)
                .map_err(|_| QueryError::too_many_fields())?;
            distribute(id, value)
        }
    })
}

/// `f: (a or b)` is `f: a or f: b`; `f: (a and b)` is `f: a and f: b` (on an array field
/// the two may hold for different elements, as in Elasticsearch).
fn distribute(field: FieldId, value: &ValueExpr) -> Node {
    match value {
        ValueExpr::And(items) => Node::And(items.iter().map(|v| distribute(field, v)).collect()),
        ValueExpr::Or(items) => Node::Or(items.iter().map(|v| distribute(field, v)).collect()),
        ValueExpr::Not(v) => Node::Not(Box::new(distribute(field, v))),
        ValueExpr::Value(p) if p.is_exists() => Node::Exists(field),
        ValueExpr::Value(p) => Node::Match {
            field,
            pattern: p.clone(),
        },
    }
}

impl Node {
    /// Evaluates the node. A field read with a shape it cannot have is an error for the
    /// record; fields that evaluation does not reach (short-circuit) are not judged.
    pub fn eval(&self, view: &RecordView<'_>, layout: &Layout) -> Result<bool, RecordError> {
        match self {
            Node::And(items) => {
                for n in items {
                    if !n.eval(view, layout)? {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            Node::Or(items) => {
                for n in items {
                    if n.eval(view, layout)? {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
            Node::Not(n) => Ok(!n.eval(view, layout)?),
            Node::Exists(f) => match view.get(layout, *f) {
                Field::Absent => Ok(false),
                Field::Values(_) | Field::Object => Ok(true),
                Field::Mismatch => Err(wrong_type(layout, *f, false)),
            },
            Node::Match { field, pattern } => {
                any_value(view, layout, *field, |t| pattern.matches(t))
            }
            Node::Glob { field, pattern } => any_value(view, layout, *field, |t| {
                crate::exceptions::glob(pattern, t)
            }),
            Node::InNetwork { field, net } => any_value(view, layout, *field, |t| net.contains(t)),
            Node::InSet {
                field,
                values,
                nets,
            } => any_value(view, layout, *field, |t| {
                values.contains(t) || nets.iter().any(|n| n.contains(t))
            }),
        }
    }
}

/// Whether any value of `field` satisfies `test`; absent is false.
fn any_value(
    view: &RecordView<'_>,
    layout: &Layout,
    field: FieldId,
    test: impl Fn(&str) -> bool,
) -> Result<bool, RecordError> {
    match view.get(layout, field) {
        Field::Absent => Ok(false),
        Field::Values(values) => Ok(values.iter().any(|v| test(&v.text()))),
        Field::Object => Err(wrong_type(layout, field, true)),
        Field::Mismatch => Err(wrong_type(layout, field, false)),
    }
}

/// The per-record error for a field of the wrong shape.
pub(crate) fn wrong_type(layout: &Layout, field: FieldId, is_object: bool) -> RecordError {
    let name = layout.field_name(field);
    let what = if is_object {
        format!("field `{name}` holds an object where the rule reads a value")
    } else {
        format!("field `{name}` cannot be read: a value stands where its path needs an object")
    };
    RecordError::new(ErrorKind::WrongType, what)
}
