//! JSON built and written without recursion: a rule's TOML tables into JSON values (its
//! `threat` and `filters`), and JSON values into text. Each walks with a stack of its own,
//! so a rule's nesting costs no call stack (the Fluent Bit module loads rules on WAMR's
//! 8 KiB one, where a recursive serializer spends several hundred bytes a level).

use std::fmt::Write as _;

use serde_json::{Map, Value};

/// A JSON string literal, escaped as serde_json escapes it.
pub(crate) fn push_str(out: &mut String, s: &str) {
    out.push('"');
    let mut run = 0;
    for (i, b) in s.bytes().enumerate() {
        let esc = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[run..i]);
        if esc.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(esc);
        }
        run = i + 1;
    }
    out.push_str(&s[run..]);
    out.push('"');
}

/// A JSON value as compact text, as `serde_json::to_string` writes it.
pub(crate) fn write(out: &mut String, value: &Value) {
    enum Open<'v> {
        Array(std::slice::Iter<'v, Value>),
        Object(serde_json::map::Iter<'v>),
    }
    let mut stack: Vec<(Open<'_>, bool)> = Vec::new();
    let mut next = Some(value);
    loop {
        if let Some(v) = next.take() {
            match v {
                Value::Null => out.push_str("null"),
                Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
                Value::Number(n) => {
                    let _ = write!(out, "{n}");
                }
                Value::String(s) => push_str(out, s),
                Value::Array(a) => {
                    out.push('[');
                    stack.push((Open::Array(a.iter()), true));
                }
                Value::Object(o) => {
                    out.push('{');
                    stack.push((Open::Object(o.iter()), true));
                }
            }
        }
        let Some((open, first)) = stack.last_mut() else {
            return;
        };
        let comma = !std::mem::replace(first, false);
        match open {
            Open::Array(items) => match items.next() {
                Some(v) => {
                    if comma {
                        out.push(',');
                    }
                    next = Some(v);
                }
                None => {
                    out.push(']');
                    stack.pop();
                }
            },
            Open::Object(entries) => match entries.next() {
                Some((k, v)) => {
                    if comma {
                        out.push(',');
                    }
                    push_str(out, k);
                    out.push(':');
                    next = Some(v);
                }
                None => {
                    out.push('}');
                    stack.pop();
                }
            },
        }
    }
}

/// A TOML value as JSON: tables as objects, arrays as arrays, dates as their text; a
/// float JSON cannot hold (NaN, infinity) as null.
pub(crate) fn from_toml(value: &toml::Value) -> Value {
    enum Open<'v> {
        Array(std::slice::Iter<'v, toml::Value>, Vec<Value>),
        Table(
            toml::map::Iter<'v, String, toml::Value>,
            Map<String, Value>,
            Option<&'v String>,
        ),
    }
    let scalar = |v: &toml::Value| -> Option<Value> {
        Some(match v {
            toml::Value::String(s) => Value::String(s.clone()),
            toml::Value::Integer(n) => Value::from(*n),
            toml::Value::Float(f) => {
                serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number)
            }
            toml::Value::Boolean(b) => Value::Bool(*b),
            toml::Value::Datetime(d) => Value::String(d.to_string()),
            toml::Value::Array(_) | toml::Value::Table(_) => return None,
        })
    };
    fn open(v: &toml::Value) -> Option<Open<'_>> {
        match v {
            toml::Value::Array(a) => Some(Open::Array(a.iter(), Vec::new())),
            toml::Value::Table(t) => Some(Open::Table(t.iter(), Map::new(), None)),
            _ => None,
        }
    }
    let Some(root) = open(value) else {
        return scalar(value).unwrap_or(Value::Null);
    };
    let mut stack = vec![root];
    loop {
        let Some(top) = stack.last_mut() else {
            return Value::Null;
        };
        let child = match top {
            Open::Array(items, _) => items.next(),
            Open::Table(entries, _, key) => entries.next().map(|(k, v)| {
                *key = Some(k);
                v
            }),
        };
        let done = match child {
            Some(v) => match open(v) {
                Some(inner) => {
                    stack.push(inner);
                    continue;
                }
                None => scalar(v).unwrap_or(Value::Null),
            },
            None => match stack.pop() {
                Some(Open::Array(_, items)) => Value::Array(items),
                Some(Open::Table(_, map, _)) => Value::Object(map),
                None => return Value::Null,
            },
        };
        match stack.last_mut() {
            None => return done,
            Some(Open::Array(_, items)) => items.push(done),
            Some(Open::Table(_, map, key)) => {
                if let Some(k) = key.take() {
                    map.insert(k.clone(), done);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_serde_writes_and_converts() {
        let toml: toml::Table = r#"
            a = [1, 2.5, "x\"y\n", true, [[]], { b = { c = [ { d = -3 } ] } }]
            e = 1979-05-27T07:32:00Z
            [[f.g]]
            h = "\u0001é"
        "#
        .parse()
        .unwrap();
        let value = toml::Value::Table(toml);
        let ours = from_toml(&value);
        let mut theirs = serde_json::to_value(&value).unwrap();
        // serde's route writes a date as a private table; ours as its text.
        theirs["e"] = Value::String("1979-05-27T07:32:00Z".into());
        assert_eq!(ours, theirs);
        let mut text = String::new();
        write(&mut text, &ours);
        assert_eq!(text, serde_json::to_string(&ours).unwrap());
    }
}
