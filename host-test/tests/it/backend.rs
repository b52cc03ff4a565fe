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

/// What the module answered, as an output: nothing (dropped), an error it carried in the
/// record's `newterms.error` field, or a record.
pub fn fluentbit_out(answer: Vec<u8>) -> Option<Out> {
    if answer.is_empty() {
        return None;
    }
    let text = String::from_utf8(answer).expect("the module answers UTF-8");
    if let Ok(serde_json::Value::Object(doc)) = serde_json::from_str::<serde_json::Value>(&text) {
        if let Some(e) = doc.get("newterms.error") {
            return Some(Out::Error {
                kind: e["kind"].as_str().unwrap_or("").to_owned(),
                message: e["message"].as_str().unwrap_or("").to_owned(),
            });
        }
    }
    Some(Out::Emit(text))
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
                fluentbit_out(answer).into_iter().collect()
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
                        | "bad_calls"
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

/// The core's one answer a record, as a one-answer host (Fluent Bit) gives it: the
/// record's first output, empty for none.
pub fn first_outputs(rules: &[(String, String)], records: &[Vec<u8>]) -> Vec<String> {
    let mut pack =
        newterms::Detector::open(rules, &newterms::Settings::default(), None).expect("pack");
    records
        .iter()
        .map(|r| match pack.process_collect(r).into_iter().next() {
            Some(newterms::Output::Emit(a)) => a.into_owned(),
            _ => String::new(),
        })
        .collect()
}
