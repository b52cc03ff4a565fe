//! Rule exceptions, in the shapes users already have: Kibana's exception-list export
//! (NDJSON) and a short form of KQL conditions in our settings.
//!
//! As in Elastic, where exceptions are added to the rule's query as negated filters, a
//! record that matches any exception item is treated as not matching the rule: no alert,
//! no state, no history. It is counted as `excepted`, and per item.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;

pub use crate::query::{glob, glob_with, Cidr, Condition};

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

/// The values of Kibana value lists, by list id: the text of a value-list file, one value
/// a line (as Kibana imports and exports them).
pub type ValueLists = BTreeMap<String, String>;

/// Reads a Kibana exception-list export: one JSON object a line (the list, then its
/// items, then an export summary). Items are the objects with `entries`. An entry of
/// `type: list` takes its values from `lists`, by the list's id.
pub fn parse_kibana_export(
    text: &str,
    lists: &ValueLists,
) -> Result<Vec<ExceptionItem>, ExceptionError> {
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
            .map(|(j, e)| {
                entry(e, "", &format!("entries[{j}]"), lists)
                    .map_err(|(key, m)| err(&key, format!("item {id}: {m}")))
            })
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
fn entry(
    e: &Value,
    parent: &str,
    at: &str,
    lists: &ValueLists,
) -> Result<Condition, (String, String)> {
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
            .map(|(j, sub)| entry(sub, &prefix, &format!("{at}.entries[{j}]"), lists))
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
            case_insensitive: false,
        },
        "exists" => Condition::Exists { field },
        "list" => value_list(obj, field, lists).map_err(|(k, m)| (key(k), m))?,
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

/// Value-list types whose values are matched as IP addresses and networks.
const IP_LIST_TYPES: &[&str] = &["ip", "ip_range"];
/// Value-list types whose values are matched as exact text (numbers and booleans as their
/// JSON text, as the query matches them).
const TEXT_LIST_TYPES: &[&str] = &[
    "keyword",
    "text",
    "long",
    "integer",
    "short",
    "byte",
    "double",
    "float",
    "half_float",
    "boolean",
];

/// A `type: list` entry, its values from `lists[list.id]`.
fn value_list(
    obj: &serde_json::Map<String, Value>,
    field: String,
    lists: &ValueLists,
) -> Result<Condition, (&'static str, String)> {
    let list = obj
        .get("list")
        .and_then(Value::as_object)
        .ok_or(("list", "expected an object with id and type".to_owned()))?;
    let id = list
        .get("id")
        .and_then(Value::as_str)
        .ok_or(("list.id", "missing or not a string".to_owned()))?;
    let kind = list
        .get("type")
        .and_then(Value::as_str)
        .ok_or(("list.type", "missing or not a string".to_owned()))?;
    let ip = IP_LIST_TYPES.contains(&kind);
    if !ip && !TEXT_LIST_TYPES.contains(&kind) {
        return Err((
            "list.type",
            format!(
                "value lists of type `{kind}` are not supported (supported: {}, {})",
                IP_LIST_TYPES.join(", "),
                TEXT_LIST_TYPES.join(", ")
            ),
        ));
    }
    let text = lists.get(id).ok_or_else(|| {
        (
            "list.id",
            format!(
                "value list `{id}` has no values: put its file ({}) beside the export",
                value_list_file_names(id).join(" or ")
            ),
        )
    })?;
    let (mut values, mut nets) = (Vec::new(), Vec::new());
    for (n, line) in text.lines().enumerate() {
        let value = line.trim();
        if value.is_empty() {
            continue;
        }
        if !ip {
            values.push(value.to_owned());
            continue;
        }
        let net = Cidr::parse(value).or_else(|| Cidr::parse_range(value));
        match net {
            Some(net) if net.is_single() => values.push(value.to_owned()),
            Some(net) => nets.push(net),
            None => {
                return Err((
                    "list.id",
                    format!(
                        "value list `{id}` line {}: `{value}` is not an IP address, CIDR \
                         block or range (a-b)",
                        n + 1
                    ),
                ))
            }
        }
    }
    Ok(Condition::InList {
        field,
        values,
        nets,
    })
}

/// The file names a value list's values are read from, beside the export that names it:
/// `<id>.txt`, then `<id>`. None when the id cannot safely name a file.
pub fn value_list_file_names(id: &str) -> Vec<String> {
    let safe = !id.is_empty()
        && !id.starts_with('.')
        && !id.contains(['/', '\\', '\0'])
        && id.len() <= 200;
    if safe {
        vec![format!("{id}.txt"), id.to_owned()]
    } else {
        Vec::new()
    }
}

/// The ids of the value lists an export names (`type: list` entries, nested ones too),
/// each once. Lenient: lines that are not items are skipped; the full parse reports them.
pub fn value_list_ids(export: &str) -> Vec<String> {
    fn walk(v: &Value, ids: &mut Vec<String>) {
        let Some(entries) = v.get("entries").and_then(Value::as_array) else {
            return;
        };
        for e in entries {
            if e.get("type").and_then(Value::as_str) == Some("list") {
                if let Some(id) = e.pointer("/list/id").and_then(Value::as_str) {
                    if !ids.iter().any(|x| x == id) {
                        ids.push(id.to_owned());
                    }
                }
            }
            walk(e, ids);
        }
    }
    let mut ids = Vec::new();
    for line in export.lines() {
        if let Ok(v) = serde_json::from_str::<Value>(line) {
            walk(&v, &mut ids);
        }
    }
    ids
}

/// The value lists an export file names, read from the files beside it (see
/// [`value_list_file_names`]) with `read`, which gives `Ok(None)` for a file that does
/// not exist. A list with no file is left out: loading the export then names the item.
pub fn value_lists_beside<E>(
    export_path: &Path,
    export_text: &str,
    mut read: impl FnMut(&Path) -> Result<Option<String>, E>,
) -> Result<ValueLists, (PathBuf, E)> {
    let dir = export_path.parent().unwrap_or(Path::new(""));
    let mut lists = ValueLists::new();
    for id in value_list_ids(export_text) {
        for name in value_list_file_names(&id) {
            let path = dir.join(name);
            match read(&path) {
                Ok(Some(text)) => {
                    lists.insert(id, text);
                    break;
                }
                Ok(None) => continue,
                Err(e) => return Err((path, e)),
            }
        }
    }
    Ok(lists)
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
        assert!(Cidr::parse("10.1.2.3").unwrap().is_single());
        let r = Cidr::parse_range("10.0.0.5-10.0.0.9").unwrap();
        assert!(r.contains("10.0.0.5") && r.contains("10.0.0.9") && !r.contains("10.0.0.10"));
        assert_eq!(Cidr::parse_range("10.0.0.9-10.0.0.5"), None);
        assert_eq!(Cidr::parse_range("10.0.0.1-::1"), None);
    }

    #[test]
    fn export_errors_name_the_line_and_key() {
        let list = r#"{"list_id":"l","type":"detection","name":"L"}"#;
        let item = |entries: &str| {
            format!(
                r#"{{"item_id":"i","list_id":"l","name":"I","type":"simple","entries":{entries}}}"#
            )
        };
        let err = |text: String| parse_kibana_export(&text, &ValueLists::new()).unwrap_err();
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
        assert_eq!(e.key, "entries[0].list.id");
        assert!(
            e.message.contains("item i") && e.message.contains("x.txt"),
            "{e}"
        );
    }

    #[test]
    fn value_lists() {
        let export = concat!(
            r#"{"list_id":"l","type":"detection","name":"L"}"#,
            "\n",
            r#"{"item_id":"i","list_id":"l","name":"I","type":"simple","entries":[{"field":"source.ip","operator":"included","type":"list","list":{"id":"nets","type":"ip_range"}},{"field":"a","type":"nested","entries":[{"field":"b","operator":"excluded","type":"list","list":{"id":"names.txt","type":"keyword"}}]}]}"#,
        );
        assert_eq!(value_list_ids(export), ["nets", "names.txt"]);
        let mut lists = ValueLists::new();
        lists.insert(
            "nets".into(),
            "10.0.0.0/8\r\n\n192.0.2.7\n198.51.100.1-198.51.100.9\n".into(),
        );
        lists.insert("names.txt".into(), "alice\n bob \n".into());
        let items = parse_kibana_export(export, &lists).unwrap();
        let Condition::All(c) = &items[0].condition else {
            panic!("{items:?}")
        };
        let Condition::InList {
            field,
            values,
            nets,
        } = &c[0]
        else {
            panic!("{c:?}")
        };
        assert_eq!(
            (field.as_str(), values.as_slice()),
            ("source.ip", &["192.0.2.7".to_owned()][..])
        );
        assert_eq!(nets.len(), 2);
        let Condition::All(inner) = &c[1] else {
            panic!("{c:?}")
        };
        assert_eq!(
            inner[0],
            Condition::Not(Box::new(Condition::InList {
                field: "a.b".into(),
                values: vec!["alice".into(), "bob".into()],
                nets: vec![],
            }))
        );
        lists.insert("nets".into(), "10.0.0.0/8\nnot-an-ip\n".into());
        let e = parse_kibana_export(export, &lists).unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (2, "entries[0].list.id"));
        assert!(
            e.message.contains("line 2") && e.message.contains("not-an-ip"),
            "{e}"
        );
        let geo = export.replace("ip_range", "geo_point");
        let e = parse_kibana_export(&geo, &lists).unwrap_err();
        assert_eq!(e.key, "entries[0].list.type");
        assert!(value_list_file_names("../etc/passwd").is_empty());
        assert!(value_list_file_names(".hidden").is_empty());
        assert_eq!(value_list_file_names("ips"), ["ips.txt", "ips"]);
    }

    #[test]
    fn value_lists_are_read_beside_the_export() {
        let export = r#"{"item_id":"i","entries":[{"field":"f","operator":"included","type":"list","list":{"id":"ids","type":"keyword"}}]}"#;
        let mut asked = Vec::new();
        let lists = value_lists_beside(Path::new("/etc/newterms/exceptions.ndjson"), export, |p| {
            asked.push(p.to_path_buf());
            Ok::<_, ()>((p == Path::new("/etc/newterms/ids")).then(|| "x\n".to_owned()))
        })
        .unwrap();
        assert_eq!(
            asked,
            [
                Path::new("/etc/newterms/ids.txt"),
                Path::new("/etc/newterms/ids")
            ]
        );
        assert_eq!(lists.get("ids").map(String::as_str), Some("x\n"));
    }
}
