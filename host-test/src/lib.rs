//! The wasmtime host of the newterms component.
//!
//! [`Runtime`] compiles the component once (the one embedded at build time, or a file);
//! each [`Session`] is an instance with one open detector. The component imports nothing,
//! so it is instantiated with an empty linker.

mod fluentbit;
pub mod gen;
pub mod pack;
pub mod wamr_stack;
pub mod wasm_entry;

pub use fluentbit::{
    fluent_bit_json, passthrough_module, Costs, FluentBit, FluentBitModule, FLUENTBIT_MODULE,
};

use anyhow::{anyhow, Context, Result};
use std::path::{Path, PathBuf};
use std::time::Duration;
use wasmtime::component::{Component, Linker, ResourceAny};

use wasmtime::{Config, Engine, ResourceLimiter, Store, StoreLimits, StoreLimitsBuilder};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "newterms",
    });
}

pub use bindings::exports::newterms::detector::detect::{
    BatchOutput, ConfigError, ErrorKind, Output, RecordError, RuleFile, Stats,
};

/// The rules a detector is opened with: one rule file's text (empty: the built-in rule),
/// or a pack of rule files, each with its source (its path, for errors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rules {
    One(String),
    Pack(Vec<(String, String)>),
}

impl Rules {
    /// The rule files at `paths`: files, and directories (their `*.toml` files, sorted
    /// by name). No path: the built-in rule; one file: that rule alone; more: a pack.
    pub fn load(paths: &[PathBuf]) -> Result<Rules> {
        let files = rule_files(paths)?;
        let read = |p: &Path| {
            std::fs::read_to_string(p).with_context(|| format!("reading rule file {}", p.display()))
        };
        Ok(match files.as_slice() {
            [] if paths.is_empty() => Rules::One(String::new()),
            [] => anyhow::bail!("no rule files (*.toml) in {}", paths[0].display()),
            [one] if paths.len() == 1 && one == &paths[0] => Rules::One(read(one)?),
            many => Rules::Pack(
                many.iter()
                    .map(|p| Ok((p.display().to_string(), read(p)?)))
                    .collect::<Result<_>>()?,
            ),
        })
    }

    /// The first rule's text (its settings are the host's).
    pub fn first(&self) -> &str {
        match self {
            Rules::One(t) => t,
            Rules::Pack(files) => files.first().map_or("", |(_, t)| t.as_str()),
        }
    }

    fn texts(&self) -> Vec<&str> {
        match self {
            Rules::One(t) => vec![t.as_str()],
            Rules::Pack(files) => files.iter().map(|(_, t)| t.as_str()).collect(),
        }
    }
}

/// The rule files named by `paths`: each file as given, each directory's `*.toml` files
/// sorted by name.
pub fn rule_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            out.extend(
                newterms::pack_files(p)
                    .with_context(|| format!("reading directory {}", p.display()))?,
            );
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// The component built from this checkout's guest (see `build.rs`).
pub const COMPONENT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/newterms.component.wasm"));

/// What the host allows one guest instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The most linear memory the instance may grow to, in bytes. A guest that needs
    /// more fails the call.
    pub max_memory: usize,
    /// The longest one call may run; a guest still running then is interrupted.
    pub max_call: Duration,
}

impl Limits {
    /// Limits derived from the rule's table budget: room for the table twice over (the
    /// term bytes and the index around them) plus 128 MiB for inputs and outputs in
    /// flight, at least 256 MiB; ten seconds per call.
    pub fn for_table_bytes(max_table_bytes: usize) -> Limits {
        Limits {
            max_memory: max_table_bytes
                .saturating_mul(2)
                .saturating_add(128 << 20)
                .max(256 << 20),
            max_call: Duration::from_secs(10),
        }
    }

    /// Limits for a rule text and settings overrides, as the guest will read them (an
    /// unreadable rule gets the defaults; the guest reports the rule's error itself).
    pub fn for_rule(rule: &str, settings: &str) -> Limits {
        Limits::for_rules(&Rules::One(rule.to_owned()), settings)
    }

    /// Limits for rules: the sum of their table budgets.
    pub fn for_rules(rules: &Rules, settings: &str) -> Limits {
        let settings = newterms::Settings::from_toml(settings).unwrap_or_default();
        let budget = rules
            .texts()
            .iter()
            .map(|t| {
                newterms::Rule::parse(t, &settings)
                    .map_or(settings.max_table_bytes(), |r| r.settings.max_table_bytes())
            })
            .fold(0usize, usize::saturating_add);
        Limits::for_table_bytes(budget)
    }
}

/// Settings as the text the component's `open` takes: TOML, written by serde, one
/// `key = value` line a key (tables inline), so that it also reads as the body of a rule
/// file's `[newterms]` table. A number TOML cannot hold (over 2^63 - 1) is an error.
pub fn settings_text(settings: &newterms::Settings) -> Result<String, toml::ser::Error> {
    let table = toml::Table::try_from(settings)?;
    Ok(table.iter().map(|(k, v)| format!("{k} = {v}\n")).collect())
}

/// How often the engine's epoch advances: the resolution of `max_call`.
const TICK: Duration = Duration::from_millis(10);

/// A compiled component, ready to instantiate (cheap to clone).
#[derive(Clone)]
pub struct Runtime {
    engine: Engine,
    component: Component,
    linker: Linker<HostState>,
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
        Runtime::with_cache(bytes, None)
    }

    /// A component from its bytes, its compiled form kept in `cache` (a directory) between
    /// runs: compiling it costs over a second of CPU, loading it a few milliseconds.
    ///
    /// A compiled file is named by the component's SHA-256 and the engine's compatibility
    /// hash (wasmtime's version and settings), and starts with the SHA-256 of the rest: a
    /// file that does not match, or that wasmtime refuses, is compiled again and replaced,
    /// never trusted. The cache is a convenience: when it cannot be written, the run goes on.
    pub fn with_cache(bytes: &[u8], cache: Option<&Path>) -> Result<Runtime> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        let engine = Engine::new(&config)?;
        let component = match cache {
            Some(dir) => compiled(&engine, bytes, dir)?,
            None => compile(&engine, bytes)?,
        };
        // Empty: the component must import nothing.
        let linker = Linker::new(&engine);
        // The epoch clock for per-call deadlines; it holds only a weak reference.
        let weak = engine.weak();
        std::thread::spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(TICK);
            }
        });
        Ok(Runtime {
            engine,
            component,
            linker,
        })
    }
}

fn compile(engine: &Engine, bytes: &[u8]) -> Result<Component> {
    Component::from_binary(engine, bytes)
        .map_err(anyhow::Error::from)
        .context("loading the component")
}

/// The component compiled, from `dir` when a good compiled file is there, else compiled
/// and written there (see [`Runtime::with_cache`]).
fn compiled(engine: &Engine, bytes: &[u8], dir: &Path) -> Result<Component> {
    use sha2::{Digest, Sha256};
    use std::hash::{Hash, Hasher};
    let mut compat = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut compat);
    let name = format!(
        "component-{:x}-{:016x}.cwasm",
        Sha256::digest(bytes),
        compat.finish()
    );
    let path = dir.join(name);
    if let Ok(file) = std::fs::read(&path) {
        if file.len() > 32 && Sha256::digest(&file[32..])[..] == file[..32] {
            // SAFETY: wasmtime runs a compiled file as machine code. This one is what an
            // engine of this program's version and settings wrote for these component
            // bytes (its name), whole and unchanged since (its checksum); wasmtime checks
            // the version and settings again and refuses a mismatch.
            if let Ok(component) = unsafe { Component::deserialize(engine, &file[32..]) } {
                return Ok(component);
            }
        }
    }
    let component = compile(engine, bytes)?;
    if let Ok(serialized) = component.serialize() {
        let mut file = Sha256::digest(&serialized).to_vec();
        file.extend_from_slice(&serialized);
        let tmp = dir.join(format!(".{}.tmp", std::process::id()));
        let written = std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::write(&tmp, &file))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }
    Ok(component)
}

/// Where the `newterms` command keeps compiled components: `NEWTERMS_CACHE_DIR` (empty:
/// no cache), else `$XDG_CACHE_HOME/newterms`, else `~/.cache/newterms`.
pub fn cache_dir() -> Option<PathBuf> {
    match std::env::var_os("NEWTERMS_CACHE_DIR") {
        Some(d) if d.is_empty() => None,
        Some(d) => Some(PathBuf::from(d)),
        None => std::env::var_os("XDG_CACHE_HOME")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .map(|d| d.join("newterms")),
    }
}

/// The host's side of a store: the limits it enforces, and the guest's memory size.
pub struct HostState {
    limits: StoreLimits,
    memory: usize,
}

impl ResourceLimiter for HostState {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.limits.memory_growing(current, desired, maximum)?;
        if allowed {
            self.memory = self.memory.max(desired);
        }
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }
}

fn instantiate(rt: &Runtime, limits: Limits) -> Result<(Store<HostState>, bindings::Newterms)> {
    let state = HostState {
        limits: StoreLimitsBuilder::new()
            .memory_size(limits.max_memory)
            .build(),
        memory: 0,
    };
    let mut store = Store::new(&rt.engine, state);
    store.limiter(|s| s as &mut dyn ResourceLimiter);
    store.epoch_deadline_trap();
    store.set_epoch_deadline(ticks(limits.max_call));
    let api = bindings::Newterms::instantiate(&mut store, &rt.component, &rt.linker)
        .map_err(anyhow::Error::from)
        .context("instantiating the component")?;
    Ok((store, api))
}

fn ticks(d: Duration) -> u64 {
    (d.as_millis() / TICK.as_millis()).max(1) as u64 + 1
}

/// One instance of the component with one open detector.
pub struct Session {
    store: Store<HostState>,
    api: bindings::Newterms,
    detector: ResourceAny,
    limits: Limits,
}

impl Session {
    /// Opens a detector with the limits derived from its rule: the outer error is the
    /// host's (a trap), the inner the rule's.
    pub fn open(
        rt: &Runtime,
        rule: &str,
        settings: &str,
    ) -> Result<std::result::Result<Session, ConfigError>> {
        Session::open_with(rt, rule, settings, None, Limits::for_rule(rule, settings))
    }

    /// Opens a detector with the term table of `snapshot`.
    pub fn restore(
        rt: &Runtime,
        rule: &str,
        settings: &str,
        snapshot: &[u8],
    ) -> Result<std::result::Result<Session, ConfigError>> {
        Session::open_with(
            rt,
            rule,
            settings,
            Some(snapshot),
            Limits::for_rule(rule, settings),
        )
    }

    /// Opens a detector (from a snapshot, when given) under explicit limits.
    pub fn open_with(
        rt: &Runtime,
        rule: &str,
        settings: &str,
        snapshot: Option<&[u8]>,
        limits: Limits,
    ) -> Result<std::result::Result<Session, ConfigError>> {
        Session::open_rules(rt, &Rules::One(rule.to_owned()), settings, snapshot, limits)
    }

    /// Opens a detector for one rule or a pack (from a snapshot, when given).
    pub fn open_rules(
        rt: &Runtime,
        rules: &Rules,
        settings: &str,
        snapshot: Option<&[u8]>,
        limits: Limits,
    ) -> Result<std::result::Result<Session, ConfigError>> {
        let (mut store, api) = instantiate(rt, limits)?;
        let detector = api.newterms_detector_detect().detector();
        let opened = match (rules, snapshot) {
            (Rules::One(rule), Some(bytes)) => {
                detector.call_restore(&mut store, rule, settings, bytes)?
            }
            (Rules::One(rule), None) => detector.call_open(&mut store, rule, settings)?,
            (Rules::Pack(files), snapshot) => {
                let files: Vec<RuleFile> = files
                    .iter()
                    .map(|(source, text)| RuleFile {
                        source: source.clone(),
                        text: text.clone(),
                    })
                    .collect();
                match snapshot {
                    Some(bytes) => {
                        detector.call_restore_pack(&mut store, &files, settings, bytes)?
                    }
                    None => detector.call_open_pack(&mut store, &files, settings)?,
                }
            }
        };
        Ok(opened.map(|detector| Session {
            store,
            api,
            detector,
            limits,
        }))
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The guest's linear memory, in bytes (it never shrinks).
    pub fn memory_bytes(&self) -> usize {
        self.store.data().memory
    }

    /// Arms the per-call deadline.
    fn arm(&mut self) {
        self.store.set_epoch_deadline(ticks(self.limits.max_call));
    }

    pub fn snapshot(&mut self) -> Result<Vec<u8>> {
        self.arm();
        self.api
            .newterms_detector_detect()
            .detector()
            .call_snapshot(&mut self.store, self.detector)
            .map_err(anyhow::Error::from)
    }

    /// The record clock: the newest record time taken, in seconds since the epoch.
    pub fn record_clock(&mut self) -> Result<Option<i64>> {
        self.arm();
        let ns = self
            .api
            .newterms_detector_detect()
            .detector()
            .call_watermark(&mut self.store, self.detector)?;
        Ok(ns.map(|ns| ns.div_euclid(1_000_000_000)))
    }

    pub fn process(&mut self, input: &[u8]) -> Result<Vec<Output>> {
        self.arm();
        self.api
            .newterms_detector_detect()
            .detector()
            .call_process(&mut self.store, self.detector, input)
            .map_err(anyhow::Error::from)
    }

    pub fn process_batch(&mut self, inputs: &[Vec<u8>]) -> Result<Vec<BatchOutput>> {
        self.arm();
        self.api
            .newterms_detector_detect()
            .detector()
            .call_process_batch(&mut self.store, self.detector, inputs)
            .map_err(anyhow::Error::from)
    }

    /// NDJSON in one buffer; outputs carry their 0-based line number.
    pub fn process_lines(&mut self, ndjson: &[u8]) -> Result<Vec<BatchOutput>> {
        self.arm();
        self.api
            .newterms_detector_detect()
            .detector()
            .call_process_lines(&mut self.store, self.detector, ndjson)
            .map_err(anyhow::Error::from)
    }

    pub fn exception_counts(&mut self) -> Result<Vec<(String, u64)>> {
        self.arm();
        self.api
            .newterms_detector_detect()
            .detector()
            .call_exception_counts(&mut self.store, self.detector)
            .map_err(anyhow::Error::from)
    }

    pub fn stats(&mut self) -> Result<Stats> {
        self.arm();
        self.api
            .newterms_detector_detect()
            .detector()
            .call_stats(&mut self.store, self.detector)
            .map_err(anyhow::Error::from)
    }

    /// Each rule's id and counters, in load order.
    pub fn rule_stats(&mut self) -> Result<Vec<(String, Stats)>> {
        self.arm();
        self.api
            .newterms_detector_detect()
            .detector()
            .call_rule_stats(&mut self.store, self.detector)
            .map_err(anyhow::Error::from)
    }
}

/// A call the guest could not complete (a trap: out of memory, out of time, a bug).
#[derive(Debug, Clone)]
pub struct CallFailed {
    /// What wasmtime said.
    pub reason: String,
    /// Inputs in the failed call: none of them was processed.
    pub inputs: usize,
    /// Inputs processed since the last checkpoint, whose sightings were lost with the
    /// instance (they were processed and answered; the restarted table no longer has them).
    pub lost_since_checkpoint: u64,
}

/// A session that survives its guest: after a failed call it carries on with a fresh
/// instance restored from the last checkpoint (a snapshot taken every
/// `checkpoint_every` inputs).
pub struct Supervised {
    rt: Runtime,
    rules: Rules,
    settings: String,
    session: Session,
    checkpoint: Vec<u8>,
    since_checkpoint: u64,
    checkpoint_every: u64,
    restarts: u64,
}

impl Supervised {
    pub fn open(
        rt: &Runtime,
        rules: &Rules,
        settings: &str,
        snapshot: Option<&[u8]>,
        limits: Limits,
        checkpoint_every: u64,
    ) -> Result<std::result::Result<Supervised, ConfigError>> {
        let mut session = match Session::open_rules(rt, rules, settings, snapshot, limits)? {
            Ok(s) => s,
            Err(e) => return Ok(Err(e)),
        };
        let checkpoint = session.snapshot()?;
        Ok(Ok(Supervised {
            rt: rt.clone(),
            rules: rules.clone(),
            settings: settings.to_owned(),
            session,
            checkpoint,
            since_checkpoint: 0,
            checkpoint_every: checkpoint_every.max(1),
            restarts: 0,
        }))
    }

    /// Processes a batch; a failed call restarts the instance from the last checkpoint.
    /// The outer error is a failure to restart.
    pub fn process_batch(
        &mut self,
        inputs: &[Vec<u8>],
    ) -> Result<std::result::Result<Vec<BatchOutput>, CallFailed>> {
        let result = self.session.process_batch(inputs);
        self.settle(result, inputs.len())
    }

    /// Processes `count` NDJSON lines in one buffer, as [`Supervised::process_batch`].
    pub fn process_lines(
        &mut self,
        ndjson: &[u8],
        count: usize,
    ) -> Result<std::result::Result<Vec<BatchOutput>, CallFailed>> {
        let result = self.session.process_lines(ndjson);
        self.settle(result, count)
    }

    fn settle(
        &mut self,
        result: Result<Vec<BatchOutput>>,
        inputs: usize,
    ) -> Result<std::result::Result<Vec<BatchOutput>, CallFailed>> {
        match result {
            Ok(out) => {
                self.since_checkpoint += inputs as u64;
                if self.since_checkpoint >= self.checkpoint_every {
                    self.checkpoint()?;
                }
                Ok(Ok(out))
            }
            Err(e) => {
                let failed = CallFailed {
                    reason: format!("{e:#}"),
                    inputs,
                    lost_since_checkpoint: self.since_checkpoint,
                };
                let limits = self.session.limits();
                self.session = Session::open_rules(
                    &self.rt,
                    &self.rules,
                    &self.settings,
                    Some(&self.checkpoint),
                    limits,
                )?
                .map_err(|e| anyhow!("restarting the guest: {}", e.message))?;
                self.since_checkpoint = 0;
                self.restarts += 1;
                Ok(Err(failed))
            }
        }
    }

    /// Takes a checkpoint now.
    pub fn checkpoint(&mut self) -> Result<()> {
        self.checkpoint = self.session.snapshot()?;
        self.since_checkpoint = 0;
        Ok(())
    }

    /// The current table, as a snapshot.
    pub fn snapshot(&mut self) -> Result<Vec<u8>> {
        self.session.snapshot()
    }

    /// The record clock (seconds), as [`Session::record_clock`].
    pub fn record_clock(&mut self) -> Result<Option<i64>> {
        self.session.record_clock()
    }

    /// The current instance's statistics (they restart with each restarted instance).
    pub fn stats(&mut self) -> Result<Stats> {
        self.session.stats()
    }

    /// The current instance's statistics per rule.
    pub fn rule_stats(&mut self) -> Result<Vec<(String, Stats)>> {
        self.session.rule_stats()
    }

    /// How many times the guest was restarted.
    pub fn restarts(&self) -> u64 {
        self.restarts
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
    /// Name and value of every counter, named by the core's `Stats::fields` (one list of
    /// names for every host).
    pub fn fields(&self) -> Vec<(String, u64)> {
        newterms::Stats::from(self).fields()
    }
}

impl From<&Stats> for newterms::Stats {
    fn from(s: &Stats) -> Self {
        // Whole, without `..`: a field added to the WIT record must be named here to
        // compile; a name the core does not know, or a counter of the core's missing here,
        // is caught by `Stats::from_fields` (and fails the tests, never reads as zero).
        let Stats {
            records,
            prefiltered,
            out_of_index,
            index_unknown,
            unmatched,
            excepted,
            matched,
            no_term,
            suppressed,
            alerted,
            alerts,
            learned,
            late,
            errors_invalid_json,
            errors_not_object,
            errors_wrong_type,
            errors_too_large,
            errors_bad_time,
            evicted_window,
            evicted_capacity,
            terms_held,
        } = *s;
        let fields = [
            ("records", records),
            ("prefiltered", prefiltered),
            ("out_of_index", out_of_index),
            ("index_unknown", index_unknown),
            ("unmatched", unmatched),
            ("excepted", excepted),
            ("matched", matched),
            ("no_term", no_term),
            ("suppressed", suppressed),
            ("alerted", alerted),
            ("alerts", alerts),
            ("learned", learned),
            ("late", late),
            ("errors.invalid-json", errors_invalid_json),
            ("errors.not-object", errors_not_object),
            ("errors.wrong-type", errors_wrong_type),
            ("errors.too-large", errors_too_large),
            ("errors.bad-time", errors_bad_time),
            ("evicted_window", evicted_window),
            ("evicted_capacity", evicted_capacity),
            ("terms_held", terms_held),
        ];
        match newterms::Stats::from_fields(fields) {
            Ok(stats) => stats,
            // The WIT and the core disagree: a build defect the tests catch first.
            Err(e) => panic!("the component's counters do not match the core's: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::settings_text;
    use newterms::{InputMode, Settings};

    #[test]
    fn settings_written_as_text_read_back_the_same() {
        let s = Settings {
            input: Some(InputMode::Matches),
            max_terms: Some(7),
            allowed_lateness: Some(90 * newterms::time::NANOS_PER_MIN),
            exceptions: vec!["user.name: \"ci \\\"bot\\\"\"".into()],
            kibana_exceptions: vec!["{\"a\": 1}\n{\"b\": \"\\u00e9\"}".into()],
            value_lists: [("ips".to_owned(), "10.0.0.1\n10.0.0.2".to_owned())].into(),
            ..Settings::default()
        };
        let text = settings_text(&s).unwrap();
        assert_eq!(Settings::from_toml(&text).unwrap(), s, "{text}");
        // The same lines are the body of a rule file's `[newterms]` table.
        let rule = format!("{}\n[newterms]\n{text}", newterms::DEFAULT_RULE);
        let table: toml::Table = rule.parse().unwrap();
        assert_eq!(table["newterms"]["max_terms"].as_integer(), Some(7));
        assert_eq!(settings_text(&Settings::default()).unwrap(), "");
        let huge = Settings {
            max_terms: Some(usize::MAX),
            ..Settings::default()
        };
        assert!(settings_text(&huge).is_err(), "refused, not a panic");
    }
}
