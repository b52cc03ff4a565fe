//! The JavaScript front end (wasm-bindgen): `Detector` for Node and browsers.
//!
//! ```js
//! const { Detector } = require("newterms");
//! const d = new Detector();                     // the built-in rule; or new Detector(toml, options)
//! for (const out of d.process(record)) {         // a string or a plain object
//!   if (out.record) ship(out.record);            // an alert (or the record, per `output`)
//!   else console.error(out.error.kind, out.error.message);
//! }
//! ```
//!
//! Configuration errors throw an `Error` with `kind = "config"` and `key`; a bad record
//! never throws: it comes back as `{ error }`.

use js_sys::{Array, Object, Reflect, JSON};
use wasm_bindgen::prelude::*;

use crate::{Detector as Core, Output, RecordError, RuleError, Settings};

#[wasm_bindgen(typescript_custom_section)]
const TYPES: &'static str = r#"
/** Our settings (the rule file's [newterms] table), applied over the rule's. */
export interface Options {
  /** `matches`: no table, one match document per (rule, term), for `newterms consume`. */
  output?: "alert" | "passthrough" | "annotate" | "matches";
  /** `matches`: read match documents (what `newterms consume` does). */
  input?: "records" | "matches";
  max_terms?: number;
  max_table_bytes?: number;
  allowed_lateness?: string;
  /** Learn new terms without alerting for this long in record time ("7d"), or "forever". */
  learning_period?: string;
  max_record_bytes?: number;
  /** KQL conditions: a record matching any is treated as not matching the rule. */
  exceptions?: string[];
  /** Kibana exception-list exports (NDJSON text). */
  kibana_exceptions?: string[];
  /** Values of the Kibana value lists the exports name (`type: list`): list id to its
   *  values, one a line. */
  value_lists?: Record<string, string>;
}
/** What was wrong with one record. */
export interface RecordError { kind: string; message: string }
/** One output: a record to pass on, or a record's error; `input` is its index in a batch. */
export type Output = { record: Record<string, unknown>; input?: number } | { error: RecordError; input?: number };
"#;

/// A configuration error as a thrown `Error` with `kind` and `key`.
fn config_error(e: RuleError) -> JsValue {
    let err = js_sys::Error::new(&e.to_string());
    let _ = Reflect::set(&err, &"kind".into(), &"config".into());
    if let Some(k) = e.key_name() {
        let _ = Reflect::set(&err, &"key".into(), &k.into());
    }
    err.into()
}

fn usage_error(message: &str) -> JsValue {
    let err = js_sys::Error::new(message);
    let _ = Reflect::set(&err, &"kind".into(), &"usage".into());
    err.into()
}

/// Options (a plain object) as settings: its keys are the settings' keys, and a key
/// whose value is `null` or `undefined` is not set.
fn settings(options: &JsValue) -> Result<Settings, JsValue> {
    if options.is_undefined() || options.is_null() {
        return Ok(Settings::default());
    }
    let plain = || usage_error("options must be a plain object");
    if !options.is_object() || Array::is_array(options) {
        return Err(plain());
    }
    let json = JSON::stringify(options)?.as_string().ok_or_else(plain)?;
    let mut map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&json).map_err(|_| plain())?;
    map.retain(|_, v| !v.is_null());
    Settings::from_json(&serde_json::Value::Object(map).to_string()).map_err(config_error)
}

fn stats_object(s: &crate::Stats) -> Object {
    let o = Object::new();
    for (k, v) in s.fields() {
        let _ = Reflect::set(&o, &k.into(), &(v as f64).into());
    }
    o
}

/// The rule argument: undefined or null (the built-in rule), a rule file's text, or an
/// array of them (a pack; each named `rules[i]` in errors).
fn rules(rule: &JsValue) -> Result<Vec<(String, String)>, JsValue> {
    if rule.is_undefined() || rule.is_null() {
        return Ok(Vec::new());
    }
    if let Some(text) = rule.as_string() {
        return Ok(vec![("rule".to_owned(), text)]);
    }
    if Array::is_array(rule) {
        return Array::from(rule)
            .iter()
            .enumerate()
            .map(|(i, r)| {
                r.as_string()
                    .map(|t| (format!("rules[{i}]"), t))
                    .ok_or_else(|| usage_error("a rule pack must be an array of strings"))
            })
            .collect();
    }
    Err(usage_error(
        "the rule must be a string or an array of strings",
    ))
}

/// A record given as a string or as a plain object, as JSON text.
fn record_text(record: &JsValue) -> Result<String, JsValue> {
    if let Some(s) = record.as_string() {
        return Ok(s);
    }
    if record.is_object() {
        return JSON::stringify(record)?
            .as_string()
            .ok_or_else(|| usage_error("a record must be a string or a plain object"));
    }
    Err(usage_error("a record must be a string or a plain object"))
}

fn error_object(e: &RecordError) -> Object {
    let o = Object::new();
    let _ = Reflect::set(&o, &"kind".into(), &e.kind().as_str().into());
    let _ = Reflect::set(&o, &"message".into(), &e.message().into());
    o
}

/// One output as `{ record }` or `{ error }` (with `input` in a batch).
fn output(o: Output<'_>, input: Option<usize>) -> JsValue {
    let item = Object::new();
    match o {
        Output::Emit(text) => {
            let value = JSON::parse(&text).unwrap_or_else(|_| JsValue::from_str(&text));
            let _ = Reflect::set(&item, &"record".into(), &value);
        }
        Output::Error(e) => {
            let _ = Reflect::set(&item, &"error".into(), &error_object(&e));
        }
    }
    if let Some(i) = input {
        let _ = Reflect::set(&item, &"input".into(), &(i as u32).into());
    }
    item.into()
}

/// A new-terms detector: one rule or a pack, their term tables and counters.
#[wasm_bindgen]
pub struct Detector {
    inner: Core,
}

#[wasm_bindgen]
impl Detector {
    /// `rule`: a rule file's TOML (omitted or empty: the built-in rule), or an array of
    /// them: a pack, each record parsed once and offered to every rule; `options`: our
    /// settings. Throws an `Error` with `kind: "config"` and `key` when they do not load.
    #[wasm_bindgen(constructor)]
    pub fn new(
        #[wasm_bindgen(unchecked_param_type = "string | string[] | undefined")] rule: JsValue,
        #[wasm_bindgen(unchecked_param_type = "Options")] options: JsValue,
    ) -> Result<Detector, JsValue> {
        let inner = Core::open(&rules(&rule)?, &settings(&options)?, None).map_err(config_error)?;
        Ok(Detector { inner })
    }

    /// A detector with the term tables of a snapshot (from any build: Node, wasmtime, the
    /// command, the Fluent Bit module).
    pub fn restore(
        #[wasm_bindgen(unchecked_param_type = "string | string[] | undefined")] rule: JsValue,
        snapshot: &[u8],
        #[wasm_bindgen(unchecked_param_type = "Options")] options: JsValue,
    ) -> Result<Detector, JsValue> {
        let inner = Core::open(&rules(&rule)?, &settings(&options)?, Some(snapshot))
            .map_err(config_error)?;
        Ok(Detector { inner })
    }

    /// Each rule's counters, as if it ran alone, by rule id.
    #[wasm_bindgen(js_name = ruleStats, unchecked_return_type = "Record<string, Record<string, number>>")]
    pub fn rule_stats(&self) -> Object {
        let all = Object::new();
        for (id, s) in self.inner.all_rule_stats() {
            let _ = Reflect::set(&all, &id.into(), &stats_object(&s));
        }
        all
    }

    /// Processes one input (a record, a CloudTrail delivery object, an array of records,
    /// an EventBridge event), as a string or a plain object.
    #[wasm_bindgen(unchecked_return_type = "Output[]")]
    pub fn process(
        &mut self,
        #[wasm_bindgen(unchecked_param_type = "string | object")] record: JsValue,
    ) -> Result<Array, JsValue> {
        let text = record_text(&record)?;
        let out = Array::new();
        self.inner.process(text.as_bytes(), &mut |o| {
            out.push(&output(o, None));
        });
        Ok(out)
    }

    /// Processes many inputs; each output carries the index of its input.
    #[wasm_bindgen(js_name = processBatch, unchecked_return_type = "Output[]")]
    pub fn process_batch(
        &mut self,
        #[wasm_bindgen(unchecked_param_type = "Array<string | object>")] records: Array,
    ) -> Result<Array, JsValue> {
        let out = Array::new();
        for (i, record) in records.iter().enumerate() {
            let text = record_text(&record)?;
            self.inner.process(text.as_bytes(), &mut |o| {
                out.push(&output(o, Some(i)));
            });
        }
        Ok(out)
    }

    /// The counters, as an object of numbers (for a pack, each record once).
    #[wasm_bindgen(unchecked_return_type = "Record<string, number>")]
    pub fn stats(&self) -> Object {
        stats_object(&self.inner.stats())
    }

    /// How many records each exception item excepted, by item id.
    #[wasm_bindgen(js_name = exceptionCounts, unchecked_return_type = "Record<string, number>")]
    pub fn exception_counts(&self) -> Object {
        let o = Object::new();
        for (k, v) in self.inner.exception_counts() {
            let _ = Reflect::set(&o, &k.into(), &(v as f64).into());
        }
        o
    }

    /// The term table as portable bytes.
    pub fn snapshot(&self) -> Vec<u8> {
        self.inner.snapshot()
    }
}
