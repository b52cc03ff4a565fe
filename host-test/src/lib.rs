//! The wasmtime host of the newterms component.
//!
//! [`Runtime`] compiles the component once (the one embedded at build time, or a file);
//! each [`Session`] is an instance with one open detector. The component imports nothing,
//! so it is instantiated with an empty linker.

mod fluentbit;

pub use fluentbit::{FluentBit, FLUENTBIT_MODULE};

use anyhow::{anyhow, Context, Result};
use wasmtime::component::{Component, Linker, ResourceAny};
use wasmtime::{Config, Engine, Store};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "newterms",
    });
}

pub use bindings::exports::newterms::detector::detect::{
    BatchOutput, ConfigError, ErrorKind, Output, RecordError, Stats,
};

/// The component built from this checkout's guest (see `build.rs`).
pub const COMPONENT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/newterms.component.wasm"));

/// A compiled component, ready to instantiate.
pub struct Runtime {
    engine: Engine,
    component: Component,
    linker: Linker<()>,
}

impl Runtime {
    /// The embedded component.
    pub fn embedded() -> Result<Runtime> {
        if COMPONENT.is_empty() {
            return Err(anyhow!(
                "this build has no guest component: run `.ci/build-guest`, then rebuild the host"
            ));
        }
        Runtime::from_bytes(COMPONENT)
    }

    /// A component from its bytes (a `.wasm` component file).
    pub fn from_bytes(bytes: &[u8]) -> Result<Runtime> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        let engine = Engine::new(&config)?;
        let component = Component::from_binary(&engine, bytes)
            .map_err(anyhow::Error::from)
            .context("loading the component")?;
        // Empty: the component must import nothing.
        let linker = Linker::new(&engine);
        Ok(Runtime {
            engine,
            component,
            linker,
        })
    }
}

fn instantiate(rt: &Runtime) -> Result<(Store<()>, bindings::Newterms)> {
    let mut store = Store::new(&rt.engine, ());
    let api = bindings::Newterms::instantiate(&mut store, &rt.component, &rt.linker)
        .map_err(anyhow::Error::from)
        .context("instantiating the component")?;
    Ok((store, api))
}

/// One instance of the component with one open detector.
pub struct Session {
    store: Store<()>,
    api: bindings::Newterms,
    detector: ResourceAny,
}

impl Session {
    /// Opens a detector: the outer error is the host's (a trap), the inner the rule's.
    pub fn open(
        rt: &Runtime,
        rule: &str,
        settings: &str,
    ) -> Result<std::result::Result<Session, ConfigError>> {
        let (mut store, api) = instantiate(rt)?;
        let opened = api
            .newterms_detector_detect()
            .detector()
            .call_open(&mut store, rule, settings)?;
        Ok(opened.map(|detector| Session {
            store,
            api,
            detector,
        }))
    }

    /// Opens a detector with the term table of `snapshot`.
    pub fn restore(
        rt: &Runtime,
        rule: &str,
        settings: &str,
        snapshot: &[u8],
    ) -> Result<std::result::Result<Session, ConfigError>> {
        let (mut store, api) = instantiate(rt)?;
        let opened = api
            .newterms_detector_detect()
            .detector()
            .call_restore(&mut store, rule, settings, snapshot)?;
        Ok(opened.map(|detector| Session {
            store,
            api,
            detector,
        }))
    }

    pub fn snapshot(&mut self) -> Result<Vec<u8>> {
        self.api
            .newterms_detector_detect()
            .detector()
            .call_snapshot(&mut self.store, self.detector)
            .map_err(anyhow::Error::from)
    }

    pub fn process(&mut self, input: &[u8]) -> Result<Vec<Output>> {
        self.api
            .newterms_detector_detect()
            .detector()
            .call_process(&mut self.store, self.detector, input)
            .map_err(anyhow::Error::from)
    }

    pub fn process_batch(&mut self, inputs: &[Vec<u8>]) -> Result<Vec<BatchOutput>> {
        self.api
            .newterms_detector_detect()
            .detector()
            .call_process_batch(&mut self.store, self.detector, inputs)
            .map_err(anyhow::Error::from)
    }

    pub fn stats(&mut self) -> Result<Stats> {
        self.api
            .newterms_detector_detect()
            .detector()
            .call_stats(&mut self.store, self.detector)
            .map_err(anyhow::Error::from)
    }
}

impl ErrorKind {
    /// The stable name (as in the core and the statistics).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidJson => "invalid-json",
            ErrorKind::NotObject => "not-object",
            ErrorKind::WrongType => "wrong-type",
            ErrorKind::TooLarge => "too-large",
            ErrorKind::BadTime => "bad-time",
        }
    }
}

impl Stats {
    /// Name and value of every counter, named as the core's `Stats::fields`.
    pub fn fields(&self) -> Vec<(String, u64)> {
        [
            ("records", self.records),
            ("prefiltered", self.prefiltered),
            ("unmatched", self.unmatched),
            ("matched", self.matched),
            ("no_term", self.no_term),
            ("suppressed", self.suppressed),
            ("alerted", self.alerted),
            ("alerts", self.alerts),
            ("late", self.late),
            ("errors.invalid-json", self.errors_invalid_json),
            ("errors.not-object", self.errors_not_object),
            ("errors.wrong-type", self.errors_wrong_type),
            ("errors.too-large", self.errors_too_large),
            ("errors.bad-time", self.errors_bad_time),
            ("evicted_window", self.evicted_window),
            ("evicted_capacity", self.evicted_capacity),
            ("terms_held", self.terms_held),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }
}
