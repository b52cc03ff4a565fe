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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Native,
    Component,
    ComponentBatch,
}

pub const ALL: [Backend; 3] = [Backend::Native, Backend::Component, Backend::ComponentBatch];

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Native => "native",
            Backend::Component => "component",
            Backend::ComponentBatch => "component-batch",
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
            Backend::Component | Backend::ComponentBatch => {
                let opened =
                    Session::open(runtime(), rule, settings).expect("instantiating the component");
                opened
                    .map(|s| {
                        Box::new(Wasm {
                            session: s,
                            batch: self == Backend::ComponentBatch,
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
}

struct Wasm {
    session: Session,
    batch: bool,
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
        if self.batch {
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
}
