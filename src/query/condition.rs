//! Conditions from outside KQL: exception entries and query DSL filters, before their
//! fields are resolved.

use super::net::Cidr;

/// One condition of an exception item, before fields are resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    All(Vec<Condition>),
    Any(Vec<Condition>),
    Not(Box<Condition>),
    /// The field has a value equal to this one.
    Equals {
        field: String,
        value: String,
    },
    /// The field has a value matching this wildcard (`*` any run, `?` one character).
    Wildcard {
        field: String,
        pattern: String,
        case_insensitive: bool,
    },
    /// The field has an IP address value inside this network.
    InNetwork {
        field: String,
        net: Cidr,
    },
    /// The field has a value in a value list (`type: list`): equal to one of `values`,
    /// or, for an IP list, an address inside one of `nets`.
    InList {
        field: String,
        values: Vec<String>,
        nets: Vec<Cidr>,
    },
    /// The field exists.
    Exists {
        field: String,
    },
    /// A KQL condition (the short form).
    Kql(String),
}
