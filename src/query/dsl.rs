//! A rule's `filters`: Elasticsearch query DSL clauses, each with `meta.negate` and
//! `meta.disabled`, that a record must also satisfy. Supported clauses: `bool` (`must`,
//! `filter`, `should`, `must_not`, `minimum_should_match` of 1), `exists`, `match_phrase`,
//! `match`, `term`, `terms` and `wildcard` (with `case_insensitive`). Anything else is a
//! load error naming the clause and where it is.

use std::borrow::Cow;

use serde_json::{Map, Value};

use super::Condition;

/// A filter that cannot be run: the path to it (`rule.filters[0].query.bool.must[1]`) and
/// why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DslError {
    pub key: String,
    pub message: String,
}

fn err(key: &str, message: impl Into<String>) -> DslError {
    DslError {
        key: key.to_owned(),
        message: message.into(),
    }
}

/// The enabled filters of `rule.filters`, each negated when its `meta.negate` says so.
pub fn parse_filters(filters: &Value, key: &str) -> Result<Vec<Condition>, DslError> {
    let list = filters
        .as_array()
        .ok_or_else(|| err(key, "expected an array of filters"))?;
    let mut out = Vec::new();
    for (i, f) in list.iter().enumerate() {
        let at = format!("{key}[{i}]");
        let obj = f.as_object().ok_or_else(|| err(&at, "expected a table"))?;
        let meta = obj.get("meta").and_then(Value::as_object);
        let flag = |name: &str| -> Result<bool, DslError> {
            match meta.and_then(|m| m.get(name)) {
                None => Ok(false),
                Some(Value::Bool(b)) => Ok(*b),
                Some(_) => Err(err(&format!("{at}.meta.{name}"), "expected true or false")),
            }
        };
        let (negate, disabled) = (flag("negate")?, flag("disabled")?);
        if disabled {
            continue;
        }
        // The clause is under `query`, or (older exports) beside `meta`.
        let (clause, clause_at) = match obj.get("query") {
            Some(q) => (
                Cow::Borrowed(
                    q.as_object()
                        .ok_or_else(|| err(&format!("{at}.query"), "expected a table"))?,
                ),
                format!("{at}.query"),
            ),
            None => (
                Cow::Owned(
                    obj.iter()
                        .filter(|(k, _)| !matches!(k.as_str(), "meta" | "$state"))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                ),
                at.clone(),
            ),
        };
        let c = clause_of(&clause, &clause_at)?;
        out.push(if negate {
            Condition::Not(Box::new(c))
        } else {
            c
        });
    }
    Ok(out)
}

/// One clause: a table with exactly one key, the clause's kind.
fn clause_of(obj: &Map<String, Value>, at: &str) -> Result<Condition, DslError> {
    let mut kinds = obj.iter();
    let (Some((kind, body)), None) = (kinds.next(), kinds.next()) else {
        return Err(err(at, "expected exactly one query clause"));
    };
    let at = format!("{at}.{kind}");
    match kind.as_str() {
        "bool" => bool_clause(body, &at),
        "exists" => {
            let field = body
                .get("field")
                .and_then(Value::as_str)
                .ok_or_else(|| err(&format!("{at}.field"), "missing or not a string"))?;
            Ok(Condition::Exists {
                field: field.to_owned(),
            })
        }
        "match_phrase" | "match" | "term" => {
            let (field, v) = single_field(body, &at)?;
            let inner = if kind == "term" { "value" } else { "query" };
            let value = match v {
                Value::Object(o) => o
                    .get(inner)
                    .ok_or_else(|| err(&format!("{at}.{field}.{inner}"), "missing"))?,
                v => v,
            };
            Ok(Condition::Equals {
                field: field.to_owned(),
                value: scalar_text(value, &format!("{at}.{field}"))?,
            })
        }
        "terms" => {
            let (field, v) = single_field(body, &at)?;
            let values = v
                .as_array()
                .ok_or_else(|| err(&format!("{at}.{field}"), "expected an array of values"))?;
            let any = values
                .iter()
                .map(|v| {
                    Ok(Condition::Equals {
                        field: field.to_owned(),
                        value: scalar_text(v, &format!("{at}.{field}"))?,
                    })
                })
                .collect::<Result<Vec<_>, DslError>>()?;
            Ok(Condition::Any(any))
        }
        "wildcard" => {
            let (field, v) = single_field(body, &at)?;
            let (pattern, case_insensitive) = match v {
                Value::String(s) => (s.clone(), false),
                Value::Object(o) => {
                    let p = o
                        .get("value")
                        .or_else(|| o.get("wildcard"))
                        .and_then(Value::as_str)
                        .ok_or_else(|| err(&format!("{at}.{field}.value"), "missing"))?;
                    let ci = match o.get("case_insensitive") {
                        None => false,
                        Some(Value::Bool(b)) => *b,
                        Some(_) => {
                            return Err(err(
                                &format!("{at}.{field}.case_insensitive"),
                                "expected true or false",
                            ))
                        }
                    };
                    (p.to_owned(), ci)
                }
                _ => return Err(err(&format!("{at}.{field}"), "expected a string or table")),
            };
            Ok(Condition::Wildcard {
                field: field.to_owned(),
                pattern,
                case_insensitive,
            })
        }
        other => Err(err(
            &at,
            format!(
                "the query DSL clause `{other}` is not supported (supported: bool, exists, \
                 match_phrase, match, term, terms, wildcard)"
            ),
        )),
    }
}

fn bool_clause(body: &Value, at: &str) -> Result<Condition, DslError> {
    let obj = body
        .as_object()
        .ok_or_else(|| err(at, "expected a table"))?;
    let list = |name: &str| -> Result<Vec<Condition>, DslError> {
        let key = format!("{at}.{name}");
        match obj.get(name) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let k = format!("{key}[{i}]");
                    clause_of(
                        c.as_object().ok_or_else(|| err(&k, "expected a table"))?,
                        &k,
                    )
                })
                .collect(),
            Some(Value::Object(c)) => Ok(vec![clause_of(c, &key)?]),
            Some(_) => Err(err(&key, "expected a clause or an array of clauses")),
        }
    };
    for k in obj.keys() {
        if !matches!(
            k.as_str(),
            "must" | "filter" | "should" | "must_not" | "minimum_should_match"
        ) {
            return Err(err(
                &format!("{at}.{k}"),
                "not a bool key (must, filter, should, must_not, minimum_should_match)",
            ));
        }
    }
    let mut all = list("must")?;
    all.extend(list("filter")?);
    let should = list("should")?;
    // With no must or filter, at least one should clause must hold (Elasticsearch's
    // default); with them, should only scores, and scores do not decide here.
    let min = match obj.get("minimum_should_match") {
        None => usize::from(all.is_empty()),
        Some(Value::Number(n)) => n.as_u64().map_or(2, |n| n as usize),
        Some(Value::String(s)) => s.parse().unwrap_or(2),
        Some(_) => 2,
    };
    match min {
        0 => {}
        1 if !should.is_empty() => all.push(Condition::Any(should)),
        1 => {}
        _ => {
            return Err(err(
                &format!("{at}.minimum_should_match"),
                "only 0 or 1 is supported",
            ))
        }
    }
    for c in list("must_not")? {
        all.push(Condition::Not(Box::new(c)));
    }
    Ok(Condition::All(all))
}

/// `{ "field": value }`: the one field and its value.
fn single_field<'v>(body: &'v Value, at: &str) -> Result<(&'v str, &'v Value), DslError> {
    let obj = body
        .as_object()
        .ok_or_else(|| err(at, "expected a table of one field"))?;
    let mut it = obj.iter();
    match (it.next(), it.next()) {
        (Some((f, v)), None) => Ok((f.as_str(), v)),
        _ => Err(err(at, "expected exactly one field")),
    }
}

/// A string, number or boolean as the text it is matched as.
fn scalar_text(v: &Value, at: &str) -> Result<String, DslError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => Err(err(at, "expected a string, number or boolean")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn filters_become_conditions() {
        let f = json!([
            {"meta": {"negate": true}, "query": {"wildcard": {"user.name": {"value": "*$", "case_insensitive": true}}}},
            {"meta": {"disabled": true}, "query": {"exists": {"field": "x"}}},
            {"exists": {"field": "host.name"}},
            {"query": {"bool": {"should": [{"match_phrase": {"a": "1"}}, {"term": {"b": {"value": 2}}}], "must_not": {"terms": {"c": ["x", true]}}}}}
        ]);
        let c = parse_filters(&f, "rule.filters").unwrap();
        assert_eq!(c.len(), 3);
        assert_eq!(
            c[0],
            Condition::Not(Box::new(Condition::Wildcard {
                field: "user.name".into(),
                pattern: "*$".into(),
                case_insensitive: true
            }))
        );
        assert_eq!(
            c[1],
            Condition::Exists {
                field: "host.name".into()
            }
        );
        let eq = |f: &str, v: &str| Condition::Equals {
            field: f.into(),
            value: v.into(),
        };
        assert_eq!(
            c[2],
            Condition::All(vec![
                Condition::Any(vec![eq("a", "1"), eq("b", "2")]),
                Condition::Not(Box::new(Condition::Any(vec![
                    eq("c", "x"),
                    eq("c", "true")
                ]))),
            ])
        );
    }

    #[test]
    fn unsupported_clauses_name_their_place() {
        let f = json!([{"query": {"bool": {"must": [{"exists": {"field": "a"}}, {"regexp": {"a": "x.*"}}]}}}]);
        let e = parse_filters(&f, "rule.filters").unwrap_err();
        assert_eq!(e.key, "rule.filters[0].query.bool.must[1].regexp");
        assert!(e.message.contains("`regexp`"));
        let f = json!([{"query": {"exists": {}}}]);
        assert_eq!(
            parse_filters(&f, "rule.filters").unwrap_err().key,
            "rule.filters[0].query.exists.field"
        );
        let f = json!([{"query": {"bool": {"should": [{"exists": {"field": "a"}}], "minimum_should_match": 2}}}]);
        assert!(parse_filters(&f, "rule.filters").is_err());
    }
}
