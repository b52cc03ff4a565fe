//! A query bound to a record layout: a tree of `and`, `or`, `not` over [`Test`]s, each of
//! which reads one field (or, for free text, every value). The tree is what the prefilter
//! studies; [`super::Program`] is what runs.

use std::cmp::Ordering;

use super::ast::{Pattern, RangeOp};
use super::net::Cidr;
use super::pattern::{glob_with, lower, words, Fold};
use crate::error::{ErrorKind, RecordError};
use crate::record::{Field, FieldId, Layout, RecordView, Scalar};

/// A compiled query node.
#[derive(Debug, Clone)]
pub enum Node {
    And(Vec<Node>),
    Or(Vec<Node>),
    Not(Box<Node>),
    Test(Test),
}

/// One test of one record.
#[derive(Debug, Clone)]
pub enum Test {
    /// A value matches a KQL pattern (exact, or with `*`). For a folded field the pattern
    /// is folded as its values are.
    Match {
        field: FieldId,
        pattern: Pattern,
        fold: Fold,
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
        fold: Fold,
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
    /// Free text: any value of the record matches (a wildcard, any string value).
    FreeText(Pattern),
    /// A nested query: it holds for one element of a path.
    Nested(Box<Nested>),
}

/// A nested query (`path: { query }`): the elements of `path` (the objects of an array,
/// or the one object) are read as records of their own, and the query must hold for one.
#[derive(Debug, Clone)]
pub struct Nested {
    /// The raw capture of the path.
    pub(crate) raw: u32,
    /// The query over an element's fields, and the layout it reads them with.
    pub(crate) node: Node,
    pub(crate) layout: Layout,
    pub(crate) program: super::Program,
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
    fn compare(&self, value: &Scalar<'_>, fold: Fold) -> Option<Ordering> {
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
                Some(match fold {
                    Fold::None => s.as_ref().cmp(self.text.as_str()),
                    Fold::Lower | Fold::Text => lower(s).cmp(&lower(&self.text)),
                })
            }
        }
    }
}

impl Test {
    /// Evaluates the test. A field read with a shape it cannot have is an error for the
    /// record.
    pub fn eval(&self, view: &RecordView<'_>, layout: &Layout) -> Result<bool, RecordError> {
        match self {
            Test::Exists(f) => match view.get(layout, *f) {
                Field::Absent => Ok(false),
                Field::Values(_) | Field::Object => Ok(true),
                Field::Mismatch => Err(wrong_type(layout, *f, false)),
            },
            Test::Match {
                field,
                pattern,
                fold,
            } => match view.get(layout, *field) {
                Field::Values(values) => Ok(values.iter().any(|v| match (v, fold) {
                    // A number matches a number however either is written (`5`, `5.0`).
                    (Scalar::Num(n), _) => {
                        pattern.matches(&v.text()) || numbers_equal(pattern, n.as_f64())
                    }
                    (_, Fold::None) => pattern.matches(&v.text()),
                    (_, Fold::Lower) => pattern.matches(&lower(&v.text())),
                    (_, Fold::Text) => text_matches(pattern, &v.text()),
                })),
                _ => any_value(view, layout, *field, |_| false),
            },
            Test::Glob {
                field,
                pattern,
                case_insensitive,
            } => any_value(view, layout, *field, |t| {
                glob_with(pattern, t, *case_insensitive)
            }),
            Test::Range {
                field,
                op,
                bound,
                fold,
            } => match view.get(layout, *field) {
                Field::Values(values) => Ok(values
                    .iter()
                    .any(|v| bound.compare(v, *fold).is_some_and(|o| op.holds(o)))),
                _ => any_value(view, layout, *field, |_| false),
            },
            Test::InNetwork { field, net } => any_value(view, layout, *field, |t| net.contains(t)),
            Test::FreeText(pattern) => Ok(view.all_values().iter().any(|v| match v {
                Scalar::Str(s) => pattern.matches(s),
                Scalar::Num(n) => {
                    matches!(pattern, Pattern::Exact(_))
                        && (pattern.matches(&v.text()) || numbers_equal(pattern, n.as_f64()))
                }
                Scalar::Bool(_) => {
                    matches!(pattern, Pattern::Exact(_)) && pattern.matches(&v.text())
                }
            })),
            Test::Nested(nested) => {
                for text in view.raw(nested.raw) {
                    for element in crate::record::elements(text) {
                        let inner = RecordView::parse(element.as_bytes(), &nested.layout, false)?;
                        if nested.program.eval(&inner, &nested.layout)? {
                            return Ok(true);
                        }
                    }
                }
                Ok(false)
            }
            Test::InSet {
                field,
                values,
                nets,
            } => {
                let fold = layout.fold(*field);
                any_value(view, layout, *field, |t| {
                    let found = match fold {
                        Fold::None => values.contains(t),
                        Fold::Lower | Fold::Text => values.contains(&lower(t)),
                    };
                    found || nets.iter().any(|n| n.contains(t))
                })
            }
        }
    }
}

/// Analysed text: the pattern's words stand in the value's words one after another; a
/// wildcard pattern matches when one of its space-separated terms matches one word.
fn text_matches(pattern: &Pattern, value: &str) -> bool {
    let have: Vec<String> = words(value).collect();
    match pattern {
        Pattern::Exact(p) => {
            let want: Vec<String> = words(p).collect();
            !want.is_empty() && have.windows(want.len()).any(|w| w == want.as_slice())
        }
        Pattern::Wildcard(pieces) => {
            let glob = lower(&pieces.join("*"));
            glob.split_whitespace()
                .any(|term| have.iter().any(|w| glob_with(term, w, false)))
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
