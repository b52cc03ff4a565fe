//! A query as a program of tests with jumps: each step runs one [`Test`] and goes on to
//! the step its answer names, or ends with the answer. `and`, `or` and `not` become the
//! jumps (short-circuit evaluation, as a tree walk does it), so evaluating a record is a
//! loop, whatever the query's nesting: no call stack grows with the rule.

use super::node::{Node, Test};
use crate::error::RecordError;
use crate::record::{Layout, RecordView};

/// The query holds.
const YES: u32 = u32::MAX;
/// The query does not hold.
const NO: u32 = u32::MAX - 1;

#[derive(Debug, Clone)]
struct Step {
    test: Test,
    yes: u32,
    no: u32,
}

/// A compiled query, ready to run.
#[derive(Debug, Clone)]
pub struct Program {
    steps: Vec<Step>,
    entry: u32,
}

/// An `and` or `or` whose operands are being laid out, last first.
struct Open<'n> {
    items: &'n [Node],
    and: bool,
    yes: u32,
    no: u32,
    /// The operand being laid out.
    at: usize,
}

impl Program {
    /// Lays out `node`. Each operand of an `and` goes on to the next when it holds and
    /// ends with no when it does not; of an `or`, the reverse. Operands are laid out
    /// from the last, so each knows where the next one starts; `not` swaps the exits.
    pub fn new(node: &Node) -> Program {
        let mut steps: Vec<Step> = Vec::new();
        let mut open: Vec<Open<'_>> = Vec::new();
        let mut todo: Option<(&Node, u32, u32)> = Some((node, YES, NO));
        // Where the node last laid out starts.
        let mut start;
        loop {
            if let Some((mut n, mut yes, mut no)) = todo.take() {
                while let Node::Not(inner) = n {
                    n = inner;
                    std::mem::swap(&mut yes, &mut no);
                }
                match n {
                    Node::And(items) | Node::Or(items) if !items.is_empty() => {
                        let and = matches!(n, Node::And(_));
                        let at = items.len() - 1;
                        open.push(Open {
                            items,
                            and,
                            yes,
                            no,
                            at,
                        });
                        todo = Some((&items[at], yes, no));
                        continue;
                    }
                    // An empty `and` always holds; an empty `or` never does.
                    Node::And(_) => start = yes,
                    Node::Or(_) => start = no,
                    Node::Test(test) => {
                        steps.push(Step {
                            test: test.clone(),
                            yes,
                            no,
                        });
                        start = (steps.len() - 1) as u32;
                    }
                    Node::Not(_) => start = no,
                }
            } else {
                return Program { steps, entry: NO };
            }
            // `start` is where the operand just laid out begins.
            loop {
                let Some(o) = open.last_mut() else {
                    return Program {
                        steps,
                        entry: start,
                    };
                };
                if o.at == 0 {
                    open.pop();
                    continue;
                }
                o.at -= 1;
                let (yes, no) = if o.and { (start, o.no) } else { (o.yes, start) };
                todo = Some((&o.items[o.at], yes, no));
                break;
            }
        }
    }

    /// Whether the record satisfies the query. Only the tests evaluation reaches are
    /// run, so a field the answer did not need is not judged.
    pub fn eval(&self, view: &RecordView<'_>, layout: &Layout) -> Result<bool, RecordError> {
        let mut at = self.entry;
        loop {
            match at {
                YES => return Ok(true),
                NO => return Ok(false),
                _ => {
                    let Some(step) = self.steps.get(at as usize) else {
                        return Ok(false);
                    };
                    at = if step.test.eval(view, layout)? {
                        step.yes
                    } else {
                        step.no
                    };
                }
            }
        }
    }
}
