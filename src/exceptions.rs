//! Rule exceptions, in the shapes users already have: Kibana's exception-list export
//! (NDJSON) and a short form of KQL conditions in our settings.
//!
//! As in Elastic, where exceptions are added to the rule's query as negated filters, a
//! record that matches any exception item is treated as not matching the rule: no alert,
//! no state, no history. It is counted as `excepted`, and per item.

use std::fmt;
use std::net::IpAddr;

use serde_json::Value;

use crate::query::{self, Node, Pattern, QueryError};
use crate::record::LayoutBuilder;

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
    },
    /// The field has an IP address value inside this network.
    InNetwork {
        field: String,
        net: Cidr,
    },
    /// The field exists.
    Exists {
        field: String,
    },
    /// A KQL condition (the short form).
    Kql(String),
}

/// One exception item: all its entries must hold for it to apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExceptionItem {
    /// `item_id` (or the short form's position, `exceptions[2]`).
    pub id: String,
    /// `name`, for people.
    pub name: String,
    pub condition: Condition,
}

/// An exception file or entry that cannot be loaded: where, which key, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExceptionError {
    pub line: usize,
    pub key: String,
    pub message: String,
}

impl fmt::Display for ExceptionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}: {}", self.line, self.key, self.message)
    }
}

/// An IPv4 or IPv6 network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// `10.0.0.0/8`, `fc00::/7`, or a single address.
    pub fn parse(text: &str) -> Option<Cidr> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a.parse::<IpAddr>().ok()?, p.parse::<u8>().ok()?),
            None => {
                let a = text.parse::<IpAddr>().ok()?;
                (a, if a.is_ipv4() { 32 } else { 128 })
            }
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(Cidr { addr, prefix })
    }

    pub fn contains(&self, text: &str) -> bool {
        let Ok(ip) = text.parse::<IpAddr>() else {
            return false;
        };
        let bits = |a: IpAddr| -> (u128, u32) {
            match a {
                IpAddr::V4(v) => (u128::from(u32::from(v)), 32),
                IpAddr::V6(v) => (u128::from(v), 128),
            }
        };
        let ((net, width), (got, got_width)) = (bits(self.addr), bits(ip));
        if width != got_width {
            return false;
        }
        let shift = width - u32::from(self.prefix);
        shift >= width || (net >> shift) == (got >> shift)
    }
}

/// Whether `text` matches `pattern`: `*` any run of characters, `?` exactly one.
pub fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

impl Condition {
    /// The condition as a query node over `layout`'s fields.
    pub(crate) fn compile(&self, layout: &mut LayoutBuilder) -> Result<Node, QueryError> {
        let mut field = |name: &str| {
            layout
                .field(name)
                .map_err(|_| QueryError::too_many_fields())
        };
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
            Condition::Equals { field: f, value } => Node::Match {
                field: field(f)?,
                pattern: Pattern::Exact(value.clone()),
            },
            Condition::Wildcard { field: f, pattern } => Node::Glob {
                field: field(f)?,
                pattern: pattern.clone(),
            },
            Condition::InNetwork { field: f, net } => Node::InNetwork {
                field: field(f)?,
                net: *net,
            },
            Condition::Exists { field: f } => Node::Exists(field(f)?),
            Condition::Kql(text) => query::compile_expr(&query::parse(text)?, layout)?,
        })
    }
}

/// Reads a Kibana exception-list export: one JSON object a line (the list, then its
/// items, then an export summary). Items are the objects with `entries`.
pub fn parse_kibana_export(text: &str) -> Result<Vec<ExceptionItem>, ExceptionError> {
    let mut items = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let err = |key: &str, message: String| ExceptionError {
            line: line_no,
            key: key.to_owned(),
            message,
        };
        let v: Value =
            serde_json::from_str(line).map_err(|e| err("(line)", format!("not JSON: {e}")))?;
        let Some(obj) = v.as_object() else {
            return Err(err("(line)", "not a JSON object".into()));
        };
        if obj.keys().any(|k| k.starts_with("exported_")) {
            continue; // the export summary
        }
        let Some(entries) = obj.get("entries") else {
            continue; // the list itself
        };
        let id = obj
            .get("item_id")
            .and_then(Value::as_str)
            .ok_or_else(|| err("item_id", "missing or not a string".into()))?
            .to_owned();
        let name = obj
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or(&id)
            .to_owned();
        let entries = entries
            .as_array()
            .filter(|a| !a.is_empty())
            .ok_or_else(|| err("entries", "expected a non-empty array".into()))?;
        let conditions = entries
            .iter()
            .enumerate()
            .map(|(j, e)| entry(e, "", &format!("entries[{j}]")).map_err(|(key, m)| err(&key, m)))
            .collect::<Result<Vec<_>, _>>()?;
        items.push(ExceptionItem {
            id,
            name,
            condition: Condition::All(conditions),
        });
    }
    Ok(items)
}

/// One entry, under a `nested` parent's field path (`parent.`).
fn entry(e: &Value, parent: &str, at: &str) -> Result<Condition, (String, String)> {
    let key = |k: &str| format!("{at}.{k}");
    let obj = e
        .as_object()
        .ok_or_else(|| (at.to_owned(), "expected an object".to_owned()))?;
    let get_str = |k: &str| -> Result<&str, (String, String)> {
        obj.get(k)
            .and_then(Value::as_str)
            .ok_or_else(|| (key(k), "missing or not a string".to_owned()))
    };
    let field = format!("{parent}{}", get_str("field")?);
    let kind = get_str("type")?;
    if kind == "nested" {
        let inner = obj
            .get("entries")
            .and_then(Value::as_array)
            .filter(|a| !a.is_empty())
            .ok_or_else(|| (key("entries"), "expected a non-empty array".to_owned()))?;
        let prefix = format!("{field}.");
        let parts = inner
            .iter()
            .enumerate()
            .map(|(j, sub)| entry(sub, &prefix, &format!("{at}.entries[{j}]")))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(Condition::All(parts));
    }
    let included = match get_str("operator")? {
        "included" => true,
        "excluded" => false,
        other => {
            return Err((
                key("operator"),
                format!("`{other}` is not included or excluded"),
            ))
        }
    };
    let value_str = || get_str("value");
    let holds = match kind {
        "match" => equals_or_network(&field, value_str()?),
        "match_any" => {
            let values = obj
                .get("value")
                .and_then(Value::as_array)
                .filter(|a| !a.is_empty())
                .ok_or_else(|| {
                    (
                        key("value"),
                        "expected a non-empty array of strings".to_owned(),
                    )
                })?;
            let any = values
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(|s| equals_or_network(&field, s))
                        .ok_or_else(|| (key("value"), "expected strings".to_owned()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Condition::Any(any)
        }
        "wildcard" => Condition::Wildcard {
            field,
            pattern: value_str()?.to_owned(),
        },
        "exists" => Condition::Exists { field },
        "list" => {
            return Err((
                key("list"),
                "value lists are not supported: give the values as a match_any entry".to_owned(),
            ))
        }
        other => {
            return Err((
                key("type"),
                format!("`{other}` is not one of match, match_any, wildcard, exists, nested, list"),
            ))
        }
    };
    Ok(if included {
        holds
    } else {
        Condition::Not(Box::new(holds))
    })
}

/// An exact value, or a network when the value is CIDR notation (`10.0.0.0/8`): on an IP
/// field Elasticsearch matches such a value as a range of addresses.
fn equals_or_network(field: &str, value: &str) -> Condition {
    match (value.contains('/'), Cidr::parse(value)) {
        (true, Some(net)) => Condition::InNetwork {
            field: field.to_owned(),
            net,
        },
        _ => Condition::Equals {
            field: field.to_owned(),
            value: value.to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("*Terraform*", "APN/1.0 HashiCorp/1.0 Terraform/1.1.2"));
        assert!(glob("a?c", "abc"));
        assert!(!glob("a?c", "ac"));
        assert!(glob("*", ""));
        assert!(!glob("a*b", "acbx"));
        assert!(glob("a*b*", "acbx"));
    }

    #[test]
    fn networks() {
        let n = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(n.contains("10.200.3.4"));
        assert!(!n.contains("11.0.0.1"));
        assert!(!n.contains("fc00::1"));
        assert!(!n.contains("ec2.amazonaws.com"));
        let v6 = Cidr::parse("FC00::/7").unwrap();
        assert!(v6.contains("fd12::1"));
        assert!(!v6.contains("fe80::1"));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains("1.2.3.4"));
        assert_eq!(Cidr::parse("10.0.0.0/33"), None);
    }

    #[test]
    fn export_errors_name_the_line_and_key() {
        let list = r#"{"list_id":"l","type":"detection","name":"L"}"#;
        let item = |entries: &str| {
            format!(
                r#"{{"item_id":"i","list_id":"l","name":"I","type":"simple","entries":{entries}}}"#
            )
        };
        let err = |text: String| parse_kibana_export(&text).unwrap_err();
        let e = err(format!("{list}\n{{bad"));
        assert_eq!((e.line, e.key.as_str()), (2, "(line)"));
        let e = err(format!(
            "{list}\n{}",
            item(r#"[{"field":"a","operator":"maybe","type":"match","value":"x"}]"#)
        ));
        assert_eq!((e.line, e.key.as_str()), (2, "entries[0].operator"));
        let e = err(format!(
            "{list}\n{}",
            item(r#"[{"field":"a","operator":"included","type":"regex","value":"x"}]"#)
        ));
        assert_eq!(e.key, "entries[0].type");
        let e = err(format!(
            "{list}\n\n{}",
            item(r#"[{"operator":"included","type":"match","value":"x"}]"#)
        ));
        assert_eq!((e.line, e.key.as_str()), (3, "entries[0].field"));
        let e = err(format!(
            "{list}\n{}",
            item(
                r#"[{"field":"a","type":"nested","entries":[{"field":"b","operator":"included","type":"match"}]}]"#
            )
        ));
        assert_eq!(e.key, "entries[0].entries[0].value");
        let e = err(format!(
            "{list}\n{}",
            item(
                r#"[{"field":"a","operator":"included","type":"list","list":{"id":"x","type":"ip"}}]"#
            )
        ));
        assert_eq!(e.key, "entries[0].list");
    }
}
