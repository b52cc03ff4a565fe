//! The integration tests: one binary, every back end.

mod backend;
mod cli;
mod component;
mod contract;
mod data;
mod elastic;
mod fluentbit;
mod hostile;
mod kafka;
mod limits;
mod pack;
mod real_fluentbit;
mod stack;
mod state;

use serde_json::Value;

/// A field of a JSON document by dotted path, whether the document nests it, dots it
/// or mixes both.
pub fn json_field<'a>(doc: &'a Value, path: &str) -> Option<&'a Value> {
    let obj = doc.as_object()?;
    if let Some(v) = obj.get(path) {
        return Some(v);
    }
    let mut at = 0;
    while let Some(dot) = path[at..].find('.') {
        let (head, tail) = (&path[..at + dot], &path[at + dot + 1..]);
        if let Some(v) = obj.get(head).and_then(|inner| json_field(inner, tail)) {
            return Some(v);
        }
        at += dot + 1;
    }
    None
}
