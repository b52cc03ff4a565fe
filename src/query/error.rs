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
    /// The query reads more fields than a layout holds.
    TooManyFields,
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

    pub(crate) fn too_many_fields() -> Self {
        QueryError {
            kind: QueryErrorKind::TooManyFields,
            position: 0,
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
            QueryErrorKind::TooManyFields => write!(
                f,
                "the query reads too many distinct fields (at most {})",
                crate::record::MAX_SLOTS
            ),
        }
    }
}

impl std::error::Error for QueryError {}
