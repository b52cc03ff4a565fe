//! newterms: Elastic `new_terms` detection rules run inside the log stream.
//!
//! Records flow one way: bytes in, a borrowed [`RecordView`] of the fields the rule reads,
//! the rule's [`Query`], the [`TermTable`] of when each term was last seen, and an alert
//! out. [`Detector`] drives them, for one rule or a pack; the WebAssembly front ends only
//! translate types.
//!
//! ```
//! use newterms::{Detector, Output};
//!
//! // The embedded default rule: first sts:GetCallerIdentity per identity in 10 days.
//! let mut detector = Detector::from_config("", "").unwrap();
//! let record = br#"{"eventVersion":"1.08","eventTime":"2023-07-10T11:46:18Z",
//!   "eventSource":"sts.amazonaws.com","eventName":"GetCallerIdentity",
//!   "userIdentity":{"type":"IAMUser","arn":"arn:aws:iam::123456789012:user/alice"}}"#;
//! let first = detector.process_collect(record);
//! assert!(matches!(&first[..], [Output::Emit(alert)] if alert.contains("kibana.alert.new_terms")));
//! assert!(detector.process_collect(record).is_empty(), "seen within the window");
//! ```

mod alert;
mod detection;
mod engine;
mod error;
pub mod exceptions;
mod gate;
pub mod host;
pub mod index;
pub mod journal;
mod json;
pub mod matches;
pub mod query;
mod record;
mod rule;
pub mod snapshot;
mod stats;
mod terms;
pub mod time;

#[cfg(any(feature = "component", feature = "fluentbit", feature = "js"))]
mod frontend;

pub use alert::{render as render_alert, AlertFacts, Template as AlertTemplate};
pub use engine::{Detector, Output, MAX_COMBINATIONS};
pub use error::{with_error_field, ErrorKind, RecordError};
pub use query::{Prefilter, Query, QueryError, Writer};
pub use record::{Field, FieldId, Layout, LayoutBuilder, RecordView, Scalar};
pub use rule::{
    pack_files, ErrorPolicy, InputMode, OutputMode, Rule, RuleError, Settings, DEFAULT_RULE,
};
pub use stats::Stats;
pub use terms::{Observation, TermLimits, TermTable};
