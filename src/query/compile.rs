//! A parsed query bound to a record layout, and its evaluation against one record.

use std::cmp::Ordering;

use super::ast::{Expr, Pattern, RangeOp, ValueExpr};
use super::error::QueryError;
use crate::error::{ErrorKind, RecordError};
use crate::exceptions::Cidr;
use crate::record::{Field, FieldId, Layout, LayoutBuilder, RecordView, Scalar};

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
    /// A value matches a wildcard with `*` and `?` (exception entries, filters).
    Glob {
        field: FieldId,
        pattern: String,
        case_insensitive: bool,
    },
    /// A value compares with a bound (`field >= 5`).
    Range {
        field: FieldId,
        op: RangeOp,
        bound: Bound,
    },
    /// A value is an IP address inside a network (exception entries on IP fields).
    InNetwork {
        field: FieldId,
        net: Cidr,
    },
    /// A value is one of a set, or an IP address inside one of the networks (value lists).
    InSet {
        field: FieldId,
        values: hashbrown::HashSet<String>,
        nets: Vec<Cidr>,
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
            let id = layout.field(field);
            distribute(id, value, is_ip_field(field))
        }
        Expr::Range { field, op, value } => Node::Range {
            field: layout.field(field),
            op: *op,
            bound: Bound::new(value),
        },
    })
}

/// Whether an ECS field is of type `ip` (`source.ip`, `host.ip`, `related.ip`,
/// `source.nat.ip` ...): there a value in CIDR notation is a network, and an address
/// matches whatever way it is written.
pub fn is_ip_field(name: &str) -> bool {
    name == "ip" || name.ends_with(".ip")
}

/// A range bound, read as a number and as a time where it can be.
#[derive(Debug, Clone)]
pub struct Bound {
    text: String,
    number: Option<f64>,
    time: Option<crate::time::Nanos>,
}

impl Bound {
    pub fn new(text: &str) -> Bound {
        Bound {
            text: text.to_owned(),
            number: text.parse::<f64>().ok().filter(|n| n.is_finite()),
            time: crate::time::parse_timestamp(text),
        }
    }

    /// How `value` compares with the bound: as numbers when both are numbers, as times
    /// when both are timestamps, else as text (keyword order); `None` when a number or
    /// time bound meets a value that is neither.
    fn compare(&self, value: &Scalar<'_>) -> Option<Ordering> {
        match value {
            Scalar::Num(n) => self
                .number?
                .partial_cmp(&n.as_f64()?)
                .map(Ordering::reverse),
            Scalar::Bool(_) => None,
            Scalar::Str(s) => {
                if let (Some(b), Ok(v)) = (self.number, s.parse::<f64>()) {
                    return v.partial_cmp(&b);
                }
                if let (Some(b), Some(v)) = (self.time, crate::time::parse_timestamp(s)) {
                    return Some(v.cmp(&b));
                }
                if self.number.is_some() || self.time.is_some() {
                    return None;
                }
                Some(s.as_ref().cmp(self.text.as_str()))
            }
        }
    }
}

/// `f: (a or b)` is `f: a or f: b`; `f: (a and b)` is `f: a and f: b` (on an array field
/// the two may hold for different elements, as in Elasticsearch).
fn distribute(field: FieldId, value: &ValueExpr, ip: bool) -> Node {
    let each = |items: &[ValueExpr]| items.iter().map(|v| distribute(field, v, ip)).collect();
    match value {
        ValueExpr::And(items) => Node::And(each(items)),
        ValueExpr::Or(items) => Node::Or(each(items)),
        ValueExpr::Not(v) => Node::Not(Box::new(distribute(field, v, ip))),
        ValueExpr::Value(p) if p.is_exists() => Node::Exists(field),
        ValueExpr::Value(p) => match p {
            Pattern::Exact(s) if ip => match Cidr::parse(s) {
                Some(net) => Node::InNetwork { field, net },
                None => Node::Match {
                    field,
                    pattern: p.clone(),
                },
            },
            _ => Node::Match {
                field,
                pattern: p.clone(),
            },
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
            Node::Match { field, pattern } => match view.get(layout, *field) {
                Field::Values(values) => Ok(values.iter().any(|v| match v {
                    // A number matches a number however either is written (`5`, `5.0`).
                    Scalar::Num(n) => {
                        pattern.matches(&v.text()) || numbers_equal(pattern, n.as_f64())
                    }
                    _ => pattern.matches(&v.text()),
                })),
                _ => any_value(view, layout, *field, |_| false),
            },
            Node::Glob {
                field,
                pattern,
                case_insensitive,
            } => any_value(view, layout, *field, |t| {
                crate::exceptions::glob_with(pattern, t, *case_insensitive)
            }),
            Node::Range { field, op, bound } => match view.get(layout, *field) {
                Field::Values(values) => Ok(values
                    .iter()
                    .any(|v| bound.compare(v).is_some_and(|o| op.holds(o)))),
                _ => any_value(view, layout, *field, |_| false),
            },
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

fn numbers_equal(pattern: &Pattern, value: Option<f64>) -> bool {
    match (pattern, value) {
        (Pattern::Exact(s), Some(v)) => s.parse::<f64>().is_ok_and(|p| p == v),
        _ => false,
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
