//! A parsed query (or an exception entry, or a filter) bound to the record layout: every
//! field it names gets its capture slots, and value lists are distributed over their
//! field so that every test reads one field.

use super::ast::{Expr, Pattern, ValueExpr};
use super::condition::Condition;
use super::error::QueryError;
use super::net::Cidr;
use super::node::{Bound, Nested, Node, Test};
use super::pattern::{lower, Fold};
use super::program::Program;
use crate::record::{FieldId, LayoutBuilder};

/// An operator whose operands are the last ones compiled.
enum Visit<'e, T> {
    Enter(&'e T),
    And(usize),
    Or(usize),
    Not,
}

/// Builds the node of an operator from its operands, the last `n` of `done`.
fn close(done: &mut Vec<Node>, op: Visit<'_, impl Sized>) {
    let at = |n: usize, done: &Vec<Node>| done.len().saturating_sub(n);
    let node = match op {
        Visit::And(n) => Node::And(done.split_off(at(n, done))),
        Visit::Or(n) => Node::Or(done.split_off(at(n, done))),
        Visit::Not => match done.pop() {
            Some(n) => Node::Not(Box::new(n)),
            None => return,
        },
        Visit::Enter(_) => return,
    };
    done.push(node);
}

/// Compiles a query, with a stack of its own (a rule's nesting costs no call stack: the
/// Fluent Bit module loads rules on an 8 KiB one).
pub(crate) fn compile(root: &Expr, layout: &mut LayoutBuilder) -> Result<Node, QueryError> {
    let mut todo = vec![Visit::Enter(root)];
    let mut done: Vec<Node> = Vec::new();
    while let Some(visit) = todo.pop() {
        let Visit::Enter(expr) = visit else {
            close(&mut done, visit);
            continue;
        };
        match expr {
            Expr::And(items) | Expr::Or(items) => {
                todo.push(if matches!(expr, Expr::And(_)) {
                    Visit::And(items.len())
                } else {
                    Visit::Or(items.len())
                });
                todo.extend(items.iter().rev().map(Visit::Enter));
            }
            Expr::Not(e) => {
                todo.push(Visit::Not);
                todo.push(Visit::Enter(e));
            }
            Expr::Field { field, value } => {
                let id = layout.field(field);
                done.push(distribute(id, value, is_ip_field(field), Fold::of(field).0));
            }
            Expr::Range { field, op, value } => done.push(Node::Test(Test::Range {
                field: layout.field(field),
                op: *op,
                bound: Bound::new(value),
                fold: Fold::of(field).0,
            })),
            Expr::FreeText(p) => {
                layout.collect_all();
                done.push(Node::Test(Test::FreeText(p.clone())));
            }
            Expr::Nested { path, query } => {
                // The elements are records of their own, with a layout of their own.
                let mut inner = LayoutBuilder::new();
                let node = compile(query, &mut inner)?;
                let program = Program::new(&node);
                done.push(Node::Test(Test::Nested(Box::new(Nested {
                    raw: layout.raw(path),
                    node,
                    layout: inner.build(),
                    program,
                }))));
            }
        }
    }
    done.pop()
        .ok_or_else(|| QueryError::syntax("internal: nothing compiled", 0))
}

/// Whether an ECS field is of type `ip` (`source.ip`, `host.ip`, `related.ip`,
/// `source.nat.ip` ...): there a value in CIDR notation is a network, and an address
/// matches whatever way it is written.
pub fn is_ip_field(name: &str) -> bool {
    name == "ip" || name.ends_with(".ip")
}

/// A pattern as a folded field compares it: lowercased for `.caseless`.
fn folded(p: &Pattern, fold: Fold) -> Pattern {
    match (fold, p) {
        (Fold::Lower, Pattern::Exact(s)) => Pattern::Exact(lower(s)),
        (Fold::Lower, Pattern::Wildcard(pieces)) => {
            Pattern::Wildcard(pieces.iter().map(|s| lower(s)).collect())
        }
        _ => p.clone(),
    }
}

/// `f: (a or b)` is `f: a or f: b`; `f: (a and b)` is `f: a and f: b` (on an array field
/// the two may hold for different elements, as in Elasticsearch).
fn distribute(field: FieldId, value: &ValueExpr, ip: bool, fold: Fold) -> Node {
    let mut todo = vec![Visit::Enter(value)];
    let mut done: Vec<Node> = Vec::new();
    while let Some(visit) = todo.pop() {
        let Visit::Enter(v) = visit else {
            close(&mut done, visit);
            continue;
        };
        match v {
            ValueExpr::And(items) | ValueExpr::Or(items) => {
                todo.push(if matches!(v, ValueExpr::And(_)) {
                    Visit::And(items.len())
                } else {
                    Visit::Or(items.len())
                });
                todo.extend(items.iter().rev().map(Visit::Enter));
            }
            ValueExpr::Not(inner) => {
                todo.push(Visit::Not);
                todo.push(Visit::Enter(inner));
            }
            ValueExpr::Value(p) => done.push(Node::Test(value_test(field, p, ip, fold))),
        }
    }
    done.pop().unwrap_or(Node::Or(Vec::new()))
}

/// The test of one value against a field.
fn value_test(field: FieldId, p: &Pattern, ip: bool, fold: Fold) -> Test {
    if p.is_exists() {
        return Test::Exists(field);
    }
    match p {
        Pattern::Exact(s) if ip => match Cidr::parse(s) {
            Some(net) => Test::InNetwork { field, net },
            None => Test::Match {
                field,
                pattern: p.clone(),
                fold,
            },
        },
        _ => Test::Match {
            field,
            pattern: folded(p, fold),
            fold,
        },
    }
}

impl Condition {
    /// The condition as a query node over `layout`'s fields.
    pub(crate) fn compile(&self, layout: &mut LayoutBuilder) -> Result<Node, QueryError> {
        Ok(match self {
            Condition::All(items) => Node::And(
                items
                    .iter()
                    .map(|c| c.compile(layout))
                    .collect::<Result<_, _>>()?,
            ),
            Condition::Any(items) => Node::Or(
                items
                    .iter()
                    .map(|c| c.compile(layout))
                    .collect::<Result<_, _>>()?,
            ),
            Condition::Not(c) => Node::Not(Box::new(c.compile(layout)?)),
            Condition::Equals { field, value } => {
                let fold = Fold::of(field).0;
                Node::Test(Test::Match {
                    field: layout.field(field),
                    pattern: folded(&Pattern::Exact(value.clone()), fold),
                    fold,
                })
            }
            Condition::Wildcard {
                field,
                pattern,
                case_insensitive,
            } => Node::Test(Test::Glob {
                field: layout.field(field),
                pattern: pattern.clone(),
                case_insensitive: *case_insensitive || Fold::of(field).0 != Fold::None,
            }),
            Condition::InNetwork { field, net } => Node::Test(Test::InNetwork {
                field: layout.field(field),
                net: *net,
            }),
            Condition::Exists { field } => Node::Test(Test::Exists(layout.field(field))),
            Condition::InList {
                field,
                values,
                nets,
            } => {
                let fold = Fold::of(field).0;
                Node::Test(Test::InSet {
                    field: layout.field(field),
                    values: values
                        .iter()
                        .map(|v| match fold {
                            Fold::None => v.clone(),
                            Fold::Lower | Fold::Text => lower(v),
                        })
                        .collect(),
                    nets: nets.clone(),
                })
            }
            Condition::Kql(text) => compile(&super::parse(text)?, layout)?,
        })
    }
}
