//! Errors in a rule's query: what is wrong and where.

use std::fmt;

/// A query that cannot be run, with the character position (0-based) it was found at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryError {
    kind: QueryErrorKind,
    position: usize,
}

/// What is wrong with a query.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum QueryErrorKind {
    /// Valid KQL this engine does not run (range, nested query, field-less term ...).
    Unsupported(&'static str),
    /// Not valid KQL: the text says what was expected.
    Syntax(String),
}

impl QueryError {
    pub(crate) fn unsupported(construct: &'static str, position: usize) -> Self {
        QueryError {
            kind: QueryErrorKind::Unsupported(construct),
            position,
        }
    }

    pub(crate) fn syntax(message: impl Into<String>, position: usize) -> Self {
        QueryError {
            kind: QueryErrorKind::Syntax(message.into()),
            position,
        }
    }

    pub fn kind(&self) -> &QueryErrorKind {
        &self.kind
    }

    /// The 0-based character offset in the query text.
    pub fn position(&self) -> usize {
        self.position
    }
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            QueryErrorKind::Unsupported(what) => {
                write!(
                    f,
                    "unsupported KQL construct at character {}: {what}",
                    self.position
                )
            }
            QueryErrorKind::Syntax(msg) => {
                write!(f, "KQL syntax error at character {}: {msg}", self.position)
            }
        }
    }
}

impl std::error::Error for QueryError {}
