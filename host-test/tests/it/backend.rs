//! The back ends every test runs through: the core natively, and the component in
//! wasmtime (one record a call, or a whole batch a call).

use std::sync::OnceLock;

use newterms_host::{Output as WitOutput, Runtime, Session};

/// One output, as every back end reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out {
    Emit(String),
    Error { kind: String, message: String },
}

/// A load error: the key named, and the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    pub key: Option<String>,
    pub message: String,
}

pub trait Detect {
    /// Processes the inputs; returns, per input, its outputs.
    fn run(&mut self, inputs: &[Vec<u8>]) -> Vec<Vec<Out>>;
    fn stats(&mut self) -> Vec<(String, u64)>;
    /// The term table's snapshot, where the back end exposes it.
    fn snapshot(&mut self) -> Option<Vec<u8>> {
        None
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Native,
    Component,
    ComponentBatch,
    /// The component, NDJSON lines packed in one buffer per call (`process-lines`).
    ComponentLines,
    /// The Fluent Bit module, called as Fluent Bit calls it: one record, one answer.
    FluentBit,
}

pub const ALL: [Backend; 4] = [
    Backend::Native,
    Backend::Component,
    Backend::ComponentBatch,
    Backend::ComponentLines,
];

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Native => "native",
            Backend::Component => "component",
            Backend::ComponentBatch => "component-batch",
            Backend::ComponentLines => "component-lines",
            Backend::FluentBit => "fluentbit",
        }
    }

    pub fn open(self, rule: &str, settings: &str) -> Result<Box<dyn Detect>, LoadError> {
        match self {
            Backend::Native => newterms::Detector::from_config(rule, settings)
                .map(|d| Box::new(Native(d)) as Box<dyn Detect>)
                .map_err(|e| LoadError {
                    key: e.key_name().map(str::to_owned),
                    message: e.to_string(),
                }),
            Backend::FluentBit => {
                let fb = FluentBitDetect::open(rule, settings)?;
                Ok(Box::new(fb) as Box<dyn Detect>)
            }
            Backend::Component | Backend::ComponentBatch | Backend::ComponentLines => {
                let opened =
                    Session::open(runtime(), rule, settings).expect("instantiating the component");
                opened
                    .map(|s| {
                        Box::new(Wasm {
                            session: s,
                            mode: self,
                        }) as Box<dyn Detect>
                    })
                    .map_err(|e| LoadError {
                        key: e.key,
                        message: e.message,
                    })
            }
        }
    }
}

/// The embedded component, compiled once per test process.
pub fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| Runtime::embedded().expect("the component (run .ci/build-guest first)"))
}

struct Native(newterms::Detector);

impl Detect for Native {
    fn run(&mut self, inputs: &[Vec<u8>]) -> Vec<Vec<Out>> {
        inputs
            .iter()
            .map(|input| {
                self.0
                    .process_collect(input)
                    .into_iter()
                    .map(|o| match o {
                        newterms::Output::Emit(s) => Out::Emit(s.into_owned()),
                        newterms::Output::Error(e) => Out::Error {
                            kind: e.kind().as_str().to_owned(),
                            message: e.message().to_owned(),
                        },
                    })
                    .collect()
            })
            .collect()
    }

    fn stats(&mut self) -> Vec<(String, u64)> {
        self.0.stats().fields()
    }

    fn snapshot(&mut self) -> Option<Vec<u8>> {
        Some(self.0.snapshot())
    }
}

struct Wasm {
    session: Session,
    mode: Backend,
}

fn out(o: WitOutput) -> Out {
    match o {
        WitOutput::Emit(s) => Out::Emit(s),
        WitOutput::Error(e) => Out::Error {
            kind: e.kind.as_str().to_owned(),
            message: e.message,
        },
    }
}

impl Detect for Wasm {
    fn run(&mut self, inputs: &[Vec<u8>]) -> Vec<Vec<Out>> {
        if self.mode == Backend::ComponentLines {
            // Runs of one-line inputs go packed, one call per run; an input with a newline
            // (a pretty-printed document) goes alone through process-batch.
            let mut per_input = vec![Vec::new(); inputs.len()];
            let mut i = 0;
            while i < inputs.len() {
                if inputs[i].contains(&b'\n') {
                    for o in self
                        .session
                        .process_batch(&inputs[i..=i])
                        .expect("process-batch trapped")
                    {
                        per_input[i].push(out(o.output));
                    }
                    i += 1;
                    continue;
                }
                let start = i;
                while i < inputs.len() && !inputs[i].contains(&b'\n') {
                    i += 1;
                }
                let packed = inputs[start..i].join(&b'\n');
                for o in self
                    .session
                    .process_lines(&packed)
                    .expect("process-lines trapped")
                {
                    per_input[start + o.input as usize].push(out(o.output));
                }
            }
            return per_input;
        }
        if self.mode == Backend::ComponentBatch {
            let mut per_input = vec![Vec::new(); inputs.len()];
            for o in self
                .session
                .process_batch(inputs)
                .expect("process-batch trapped")
            {
                per_input[o.input as usize].push(out(o.output));
            }
            per_input
        } else {
            inputs
                .iter()
                .map(|i| {
                    self.session
                        .process(i)
                        .expect("process trapped")
                        .into_iter()
                        .map(out)
                        .collect()
                })
                .collect()
        }
    }

    fn stats(&mut self) -> Vec<(String, u64)> {
        self.session.stats().expect("stats trapped").fields()
    }

    fn snapshot(&mut self) -> Option<Vec<u8>> {
        Some(self.session.snapshot().expect("snapshot trapped"))
    }
}

/// The Fluent Bit module with its rule file in a fresh directory (seen as /etc/newterms).
pub struct FluentBitDetect {
    module: newterms_host::FluentBit,
    _dir: TempDir,
}

/// A directory removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("newterms-{label}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl FluentBitDetect {
    /// The rule (empty: none written, the built-in one) with `settings` as its
    /// `[newterms]` table. A rule that does not load is a load error here too.
    pub fn open(rule: &str, settings: &str) -> Result<FluentBitDetect, LoadError> {
        Self::open_with(rule, settings, "newterms_filter")
    }

    pub fn open_with(
        rule: &str,
        settings: &str,
        function: &str,
    ) -> Result<FluentBitDetect, LoadError> {
        let dir = TempDir::new("fluentbit");
        let rule = if rule.is_empty() && !settings.is_empty() {
            newterms::DEFAULT_RULE
        } else {
            rule
        };
        if !rule.is_empty() {
            let text = if settings.is_empty() {
                rule.to_owned()
            } else {
                format!("{rule}\n[newterms]\n{settings}\n")
            };
            std::fs::write(dir.0.join("rule.toml"), text).expect("write rule");
        }
        let mut module =
            newterms_host::FluentBit::load(newterms_host::FLUENTBIT_MODULE, function, Some(&dir.0))
                .expect("the Fluent Bit module (run .ci/build-guest first)");
        let stats = module.stats().expect("newterms_stats");
        if let Some(msg) = stats.get("config_error").and_then(|m| m.as_str()) {
            return Err(LoadError {
                key: None,
                message: msg.to_owned(),
            });
        }
        Ok(FluentBitDetect { module, _dir: dir })
    }

    pub fn module(&mut self) -> &mut newterms_host::FluentBit {
        &mut self.module
    }
}

/// What the module answered, as outputs: none (dropped), an error it carried in the
/// record's `newterms.error` field, or a record; a bundle (`newterms_outputs`) is each of
/// its outputs, as the configuration's split step makes them.
pub fn fluentbit_out(answer: Vec<u8>) -> Vec<Out> {
    if answer.is_empty() {
        return Vec::new();
    }
    let text = String::from_utf8(answer).expect("the module answers UTF-8");
    // Each output's own text, as the split step hands it on.
    type Bundle<'a> = std::collections::BTreeMap<String, Vec<&'a serde_json::value::RawValue>>;
    match serde_json::from_str::<Bundle>(&text) {
        Ok(doc) if doc.contains_key(newterms::host::BUNDLE_FIELD) => {
            assert_eq!(doc.len(), 1, "a bundle holds nothing else: {text}");
            let outputs = &doc[newterms::host::BUNDLE_FIELD];
            assert!(outputs.len() > 1, "a bundle holds several outputs: {text}");
            outputs
                .iter()
                .map(|o| one_out(o.get().to_owned()))
                .collect()
        }
        _ => vec![one_out(text)],
    }
}

fn one_out(text: String) -> Out {
    if let Ok(serde_json::Value::Object(doc)) = serde_json::from_str::<serde_json::Value>(&text) {
        if let Some(e) = doc.get("newterms.error") {
            return Out::Error {
                kind: e["kind"].as_str().unwrap_or("").to_owned(),
                message: e["message"].as_str().unwrap_or("").to_owned(),
            };
        }
    }
    Out::Emit(text)
}

/// A one-answer host's answer for `outputs` (each an object's JSON text): nothing, the
/// one output, or a bundle of them all, as `docs/contract.md` writes it.
pub fn bundle(outputs: &[String]) -> String {
    match outputs {
        [] => String::new(),
        [one] => one.clone(),
        many => format!(
            "{{\"{}\":[{}]}}",
            newterms::host::BUNDLE_FIELD,
            many.join(",")
        ),
    }
}

impl Detect for FluentBitDetect {
    fn run(&mut self, inputs: &[Vec<u8>]) -> Vec<Vec<Out>> {
        inputs
            .iter()
            .map(|i| {
                let answer = self
                    .module
                    .call(b"cloudtrail", (0, 0), Some(i))
                    .expect("the filter trapped");
                fluentbit_out(answer)
            })
            .collect()
    }

    fn stats(&mut self) -> Vec<(String, u64)> {
        let doc = self.module.stats().expect("newterms_stats");
        let obj = doc.as_object().expect("stats object");
        obj.iter()
            .filter(|(k, _)| {
                !matches!(
                    k.as_str(),
                    "extra_outputs_dropped"
                        | "bundles"
                        | "bundled_outputs"
                        | "bad_calls"
                        | "state_errors"
                        | "recoveries"
                        | "allocator_restarts"
                        | "excepted_by"
                )
            })
            .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
            .collect()
    }
}

/// A configuration directory with `rules` (sources as file paths or names) in its
/// `rules/` (under `sub`, for the real Fluent Bit's relative places).
pub fn rules_dir(label: &str, sub: &str, rules: &[(String, String)]) -> TempDir {
    let dir = TempDir::new(label);
    let at = dir.0.join(sub).join("rules");
    std::fs::create_dir_all(&at).expect("rules dir");
    for (source, text) in rules {
        let name = std::path::Path::new(source).file_name().expect("file name");
        std::fs::write(at.join(name), text).expect("rule file");
    }
    dir
}

/// The core's outputs for each record that are records (alerts, match documents), as
/// JSON text, in order.
pub fn all_outputs(rules: &[(String, String)], records: &[Vec<u8>]) -> Vec<Vec<String>> {
    let mut pack =
        newterms::Detector::open(rules, &newterms::Settings::default(), None).expect("pack");
    records
        .iter()
        .map(|r| {
            pack.process_collect(r)
                .into_iter()
                .filter_map(|o| match o {
                    newterms::Output::Emit(a) => Some(a.into_owned()),
                    newterms::Output::Error(_) => None,
                })
                .collect()
        })
        .collect()
}
