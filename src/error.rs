//! Per-record errors: what went wrong with one record, never with the detector.
//!
//! A record error leaves the detector's state exactly as it was; the next record is
//! processed normally. Configuration errors are [`crate::RuleError`].

use std::fmt;

/// The kind of a per-record error. The WIT interface mirrors it variant for variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Not JSON, not UTF-8, or nested deeper than the parser allows (128 levels).
    InvalidJson,
    /// JSON, but not an object (a record must be an object).
    NotObject,
    /// A field the rule reads has a type it cannot read: an object where a value is
    /// expected, or a value where an object must be descended into.
    WrongType,
    /// Longer than the record size limit (`max_record_bytes`).
    TooLarge,
    /// The record matched the query but its time field is absent or unreadable.
    BadTime,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 5] = [
        ErrorKind::InvalidJson,
        ErrorKind::NotObject,
        ErrorKind::WrongType,
        ErrorKind::TooLarge,
        ErrorKind::BadTime,
    ];

    /// The stable name used in statistics, error records and the WIT enum.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidJson => "invalid-json",
            ErrorKind::NotObject => "not-object",
            ErrorKind::WrongType => "wrong-type",
            ErrorKind::TooLarge => "too-large",
            ErrorKind::BadTime => "bad-time",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// One record's error: a kind and a message saying what and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordError {
    kind: ErrorKind,
    message: String,
}

impl RecordError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        RecordError {
            kind,
            message: message.into(),
        }
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// Prefixes the message with where the record sat in its input (`Records[17]`).
    pub(crate) fn within(mut self, place: &str) -> Self {
        self.message = format!("{place}: {}", self.message);
        self
    }
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.message)
    }
}

impl std::error::Error for RecordError {}
