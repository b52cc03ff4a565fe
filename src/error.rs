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

/// The record with a `newterms.error` field (`{"kind": ..., "message": ...}`) added in
/// front, for hosts whose only channel is the record stream. A record that is an object
/// keeps its fields; anything else (not JSON, not an object, not UTF-8) is carried as a
/// string in `newterms.original`, so the result is always a JSON object.
pub fn with_error_field(record: &[u8], kind: &str, message: &str) -> String {
    let error = serde_json::json!({ "kind": kind, "message": message });
    let spliceable = matches!(kind, "wrong-type" | "too-large" | "bad-time" | "config")
        && record.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    match (spliceable, std::str::from_utf8(record)) {
        (true, Ok(text)) => {
            let body = text.trim_start()[1..].trim_start();
            let sep = if body.starts_with('}') { "" } else { "," };
            format!("{{\"newterms.error\":{error}{sep}{body}")
        }
        _ => {
            let original = String::from_utf8_lossy(record);
            serde_json::json!({ "newterms.error": error, "newterms.original": original })
                .to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_field_keeps_the_record_an_object() {
        let v: serde_json::Value =
            serde_json::from_str(&with_error_field(br#" {"a":1}"#, "bad-time", "m")).unwrap();
        assert_eq!(v["a"], 1);
        assert_eq!(v["newterms.error"]["kind"], "bad-time");
        let v: serde_json::Value =
            serde_json::from_str(&with_error_field(b"{}", "config", "m")).unwrap();
        assert_eq!(v["newterms.error"]["message"], "m");
        let v: serde_json::Value =
            serde_json::from_str(&with_error_field(b"{\"a\":", "invalid-json", "m")).unwrap();
        assert_eq!(v["newterms.original"], "{\"a\":");
        let v: serde_json::Value =
            serde_json::from_str(&with_error_field(b"\xff", "invalid-json", "m")).unwrap();
        assert_eq!(v["newterms.original"], "\u{fffd}");
    }
}
