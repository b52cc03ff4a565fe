//! The Fluent Bit `filter_wasm` front end: a wasm32-wasip1 core module with Fluent Bit's
//! calling convention.
//!
//! Fluent Bit copies the tag and the record (JSON) into our memory through our `malloc`,
//! calls the filter function, copies the NUL-terminated string it returns (which stays
//! ours), then frees its copies. An empty string drops the record. One function per filter
//! instance; the instance lives as long as the filter (Fluent Bit 4.2.0 and later).
//!
//! The functions differ only in the output mode they force: `newterms_filter` uses the
//! rule file's, `newterms_alert`, `newterms_passthrough` and `newterms_annotate` force one.
//! Configuration comes from a file (there is no other way into a wasm filter): the first of
//! [`RULE_PATHS`] that exists, else the built-in rule.

use std::sync::Mutex;

use crate::rule::{ErrorPolicy, OutputMode};
use crate::{with_error_field, Detector, Output};

/// Where the rule file is looked for, in order. Relative paths resolve against the
/// directories Fluent Bit's `Accessible_Paths` opens.
pub const RULE_PATHS: [&str; 2] = ["/etc/newterms/rule.toml", "newterms/rule.toml"];

/// Directories whose `*.toml` files (sorted by name) are loaded as a pack, after the rule
/// file when there is one; the first that exists is used.
pub const RULES_DIRS: [&str; 2] = ["/etc/newterms/rules", "newterms/rules"];

/// Kibana exception-list exports applied to the rule, when present.
pub const EXCEPTION_PATHS: [&str; 2] = [
    "/etc/newterms/exceptions.ndjson",
    "newterms/exceptions.ndjson",
];

enum State {
    Ready(Box<Detector>),
    /// The rule file exists but does not load: every record passes with the reason.
    Failed(String),
}

/// Where the table is saved, and when it was last.
struct StateFile {
    path: String,
    every_records: u64,
    every_seconds: u64,
    since_save: u64,
    saved_at: Option<i64>,
}

impl StateFile {
    /// Saves when enough records or record-time seconds have passed.
    fn maybe_save(&mut self, detector: &Detector, time_sec: i32) {
        self.since_save += 1;
        let now = i64::from(time_sec);
        let saved_at = *self.saved_at.get_or_insert(now);
        if self.since_save >= self.every_records || now - saved_at >= self.every_seconds as i64 {
            self.save(detector, now);
        }
    }

    /// Writes atomically: a temporary file beside it, synced, renamed over.
    fn save(&mut self, detector: &Detector, now: i64) {
        let tmp = format!("{}.tmp", self.path);
        let bytes = detector.snapshot();
        let result = std::fs::File::create(&tmp)
            .and_then(|mut f| {
                std::io::Write::write_all(&mut f, &bytes)?;
                f.sync_all()
            })
            .and_then(|()| std::fs::rename(&tmp, &self.path));
        if let Err(e) = result {
            eprintln!("[newterms] cannot write state to {}: {e}", self.path);
        }
        self.since_save = 0;
        self.saved_at = Some(now);
    }
}

struct Filter {
    state: State,
    file: Option<StateFile>,
    policy: ErrorPolicy,
    /// The returned string; reused, so memory stops growing with the table.
    out: Vec<u8>,
    /// Outputs beyond the first of one call (Fluent Bit takes one record back).
    extra_outputs: u64,
    /// Calls with a null or negative-length record.
    bad_calls: u64,
}

static FILTER: Mutex<Option<Filter>> = Mutex::new(None);

/// Whether a read failed because the file is not there: not found, or outside every
/// directory Fluent Bit made accessible (WASI's ENOTCAPABLE, 76, which older wasi-libc
/// gives for a relative path when `.` is not accessible).
fn absent(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(76)
}

/// The rule file and the pack directory's files, as `(path, text)`.
fn rule_files() -> Result<Vec<(String, String)>, String> {
    let mut rules = Vec::new();
    for path in RULE_PATHS {
        match std::fs::read_to_string(path) {
            Ok(t) => {
                rules.push((path.to_owned(), t));
                break;
            }
            Err(e) if absent(&e) => continue,
            Err(e) => return Err(format!("cannot read {path}: {e}")),
        }
    }
    for dir in RULES_DIRS {
        let paths = match crate::pack_files(dir.as_ref()) {
            Ok(paths) => paths,
            Err(e) if absent(&e) => continue,
            Err(e) => return Err(format!("cannot read {dir}: {e}")),
        };
        for p in paths {
            let p = p.display().to_string();
            let t = std::fs::read_to_string(&p).map_err(|e| format!("cannot read {p}: {e}"))?;
            rules.push((p, t));
        }
        break;
    }
    Ok(rules)
}

fn load() -> Filter {
    let rules = match rule_files() {
        Ok(r) => r,
        Err(msg) => return failed(msg),
    };
    let mut source = match rules.as_slice() {
        [] => "the built-in rule".to_owned(),
        [(path, _)] => path.clone(),
        many => format!("a pack of {} rules", many.len()),
    };
    let mut overrides = String::new();
    for path in EXCEPTION_PATHS {
        match std::fs::read_to_string(path) {
            Ok(t) => {
                let read = |p: &std::path::Path| match std::fs::read_to_string(p) {
                    Ok(t) => Ok(Some(t)),
                    Err(e) if absent(&e) => Ok(None),
                    Err(e) => Err(e),
                };
                let lists = match crate::exceptions::value_lists_beside(path.as_ref(), &t, read) {
                    Ok(lists) => lists,
                    Err((p, e)) => return failed(format!("cannot read {}: {e}", p.display())),
                };
                overrides = crate::kibana_exceptions_setting(&[t], &lists);
                source = format!("{source} with exceptions {path}");
                break;
            }
            Err(e) if absent(&e) => continue,
            Err(e) => return failed(format!("cannot read {path}: {e}")),
        }
    }
    match Detector::from_rules(&rules, &overrides) {
        Ok(d) => {
            for rule in d.rules() {
                eprintln!(
                    "[newterms] loaded {source}: rule {} ({})",
                    rule.rule_id, rule.name
                );
            }
            let settings = d.rule().settings.clone();
            let file = settings.state_file.map(|path| StateFile {
                path,
                every_records: settings.state_every_records,
                every_seconds: settings.state_every_seconds,
                since_save: 0,
                saved_at: None,
            });
            let d = match &file {
                Some(f) => restore(d, &rules, &overrides, &f.path),
                None => d,
            };
            Filter {
                policy: settings.on_error,
                file,
                state: State::Ready(Box::new(d)),
                out: Vec::new(),
                extra_outputs: 0,
                bad_calls: 0,
            }
        }
        Err(e) => failed(format!("{source} does not load: {e}")),
    }
}

/// The detector with the table saved at `path`, if there is one. A file that does not
/// restore is moved aside to `<path>.bad` (kept for inspection, never overwritten by the
/// next save) and the detector starts empty: records keep flowing.
fn restore(fresh: Detector, rules: &[(String, String)], overrides: &str, path: &str) -> Detector {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if absent(&e) => return fresh,
        Err(e) => {
            eprintln!("[newterms] cannot read state {path}: {e}; starting with an empty table");
            return fresh;
        }
    };
    match Detector::restore_rules(rules, overrides, &bytes) {
        Ok(d) => {
            eprintln!(
                "[newterms] restored {} terms from {path}",
                d.stats().terms_held
            );
            d
        }
        Err(e) => {
            let aside = format!("{path}.bad");
            let moved = std::fs::rename(path, &aside).map(|()| format!("moved to {aside}"));
            eprintln!(
                "[newterms] state {path} does not restore ({e}); {}; starting with an empty table",
                moved.unwrap_or_else(|m| format!("could not move it aside: {m}"))
            );
            fresh
        }
    }
}

fn failed(msg: String) -> Filter {
    eprintln!("[newterms] {msg}; every record passes unchanged with a newterms.error field");
    Filter {
        file: None,
        state: State::Failed(msg),
        policy: ErrorPolicy::Pass,
        out: Vec::new(),
        extra_outputs: 0,
        bad_calls: 0,
    }
}

/// One call: the record in, a pointer to our NUL-terminated answer out.
///
/// # Safety
/// `record` must point to `len` readable bytes (or be null).
unsafe fn call(mode: Option<OutputMode>, time_sec: i32, record: *const u8, len: i32) -> *const u8 {
    let mut guard = FILTER
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let filter = guard.get_or_insert_with(load);
    filter.out.clear();
    if record.is_null() || len < 0 {
        filter.bad_calls += 1;
        if filter.policy == ErrorPolicy::Pass {
            let msg = format!("the host passed a null record (length {len})");
            filter
                .out
                .extend_from_slice(with_error_field(b"", "invalid-json", &msg).as_bytes());
        }
    } else {
        // SAFETY: the caller guarantees `len` readable bytes at `record`.
        let record = unsafe { std::slice::from_raw_parts(record, len as usize) };
        let Filter {
            state,
            policy,
            out,
            extra_outputs,
            file,
            ..
        } = filter;
        match state {
            State::Failed(msg) => {
                out.extend_from_slice(with_error_field(record, "config", msg).as_bytes())
            }
            State::Ready(detector) => {
                if let Some(mode) = mode {
                    detector.set_output(mode);
                }
                let mut answered = false;
                detector.process(record, &mut |o| {
                    if answered {
                        *extra_outputs += 1;
                        return;
                    }
                    match o {
                        Output::Emit(text) => {
                            out.extend_from_slice(text.as_bytes());
                            answered = true;
                        }
                        Output::Error(e) if *policy == ErrorPolicy::Pass => {
                            let marked = with_error_field(record, e.kind().as_str(), e.message());
                            out.extend_from_slice(marked.as_bytes());
                            answered = true;
                        }
                        Output::Error(_) => {}
                    }
                });
                if let Some(f) = file {
                    f.maybe_save(detector, time_sec);
                }
            }
        }
    }
    filter.out.push(0);
    filter.out.as_ptr()
}

/// Defines one exported filter function per output mode (Fluent Bit's `Function_Name`).
macro_rules! filter_functions {
    ($($(#[$doc:meta])* $name:ident => $mode:expr;)*) => {$(
        $(#[$doc])*
        ///
        /// # Safety
        /// Called by Fluent Bit with pointers into this module's memory.
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            _tag: *const u8,
            _tag_len: i32,
            time_sec: i32,
            _time_nsec: i32,
            record: *const u8,
            record_len: i32,
        ) -> *const u8 {
            unsafe { call($mode, time_sec, record, record_len) }
        }
    )*};
}

filter_functions! {
    /// The filter with the rule file's output mode (`Function_Name newterms_filter`).
    newterms_filter => None;
    /// The filter in `alert` mode.
    newterms_alert => Some(OutputMode::Alert);
    /// The filter in `passthrough` mode.
    newterms_passthrough => Some(OutputMode::Passthrough);
    /// The filter in `annotate` mode.
    newterms_annotate => Some(OutputMode::Annotate);
}

/// The counters as a NUL-terminated JSON object (valid until the next call).
#[no_mangle]
pub extern "C" fn newterms_stats() -> *const u8 {
    let mut guard = FILTER
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let filter = guard.get_or_insert_with(load);
    let mut doc = serde_json::Map::new();
    match &filter.state {
        State::Ready(d) => {
            for (k, v) in d.stats().fields() {
                doc.insert(k, v.into());
            }
            let by: serde_json::Map<String, serde_json::Value> = d
                .exception_counts()
                .into_iter()
                .map(|(k, v)| (k, v.into()))
                .collect();
            doc.insert("excepted_by".into(), by.into());
            if d.rules().nth(1).is_some() {
                let rules: serde_json::Map<String, serde_json::Value> = d
                    .all_rule_stats()
                    .into_iter()
                    .map(|(id, s)| {
                        let fields: serde_json::Map<String, serde_json::Value> =
                            s.fields().into_iter().map(|(k, v)| (k, v.into())).collect();
                        (id, fields.into())
                    })
                    .collect();
                doc.insert("rules".into(), rules.into());
            }
        }
        State::Failed(msg) => {
            doc.insert("config_error".into(), msg.as_str().into());
        }
    }
    doc.insert("extra_outputs_dropped".into(), filter.extra_outputs.into());
    doc.insert("bad_calls".into(), filter.bad_calls.into());
    filter.out.clear();
    filter
        .out
        .extend_from_slice(serde_json::Value::Object(doc).to_string().as_bytes());
    filter.out.push(0);
    filter.out.as_ptr()
}

/// The module's allocator (wasm builds only: natively these symbols would replace the C
/// library's own).
///
/// Fluent Bit allocates its copies of the tag and record with the module's exported
/// `malloc` and releases them with `free`; Rust allocates through its global allocator.
/// Both go to one allocator of ours (dlmalloc over the module's memory): the exported
/// functions are backed by the Rust allocator, whatever C library the module is linked
/// with, and the C library's own allocator is never linked in.
#[cfg(target_family = "wasm")]
mod allocator {
    use std::alloc::Layout;

    #[global_allocator]
    static ALLOCATOR: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

    /// Every C block starts this far after its allocation; the two words before the block
    /// hold the allocation's size and alignment.
    const MIN_ALIGN: usize = 16;

    /// A C block of `size` bytes aligned to `align` (at least 16).
    fn c_alloc(size: usize, align: usize) -> *mut u8 {
        let align = align.max(MIN_ALIGN);
        let Some(total) = size.checked_add(align) else {
            return std::ptr::null_mut();
        };
        let Ok(layout) = Layout::from_size_align(total, align) else {
            return std::ptr::null_mut();
        };
        // SAFETY: the layout has a non-zero size (at least `align`).
        let base = unsafe { std::alloc::alloc(layout) };
        if base.is_null() {
            return base;
        }
        // SAFETY: `align` >= 16 bytes lie before the block, inside the allocation.
        unsafe {
            let block = base.add(align);
            (block.sub(16) as *mut usize).write_unaligned(total);
            (block.sub(8) as *mut usize).write_unaligned(align);
            block
        }
    }

    /// The allocation a C block came from: (base, layout).
    ///
    /// # Safety
    /// `block` must come from [`c_alloc`] and not have been freed.
    unsafe fn c_allocation(block: *mut u8) -> (*mut u8, Layout) {
        unsafe {
            let total = (block.sub(16) as *const usize).read_unaligned();
            let align = (block.sub(8) as *const usize).read_unaligned();
            (
                block.sub(align),
                Layout::from_size_align_unchecked(total, align),
            )
        }
    }

    /// C `malloc`, exported for Fluent Bit.
    #[no_mangle]
    pub extern "C" fn malloc(size: usize) -> *mut u8 {
        c_alloc(size, MIN_ALIGN)
    }

    /// C `free`, exported for Fluent Bit; a null pointer is ignored.
    ///
    /// # Safety
    /// `block` must be null or come from this module's `malloc` family, freed once.
    #[no_mangle]
    pub unsafe extern "C" fn free(block: *mut u8) {
        if block.is_null() {
            return;
        }
        unsafe {
            let (base, layout) = c_allocation(block);
            std::alloc::dealloc(base, layout);
        }
    }

    /// C `calloc`.
    #[no_mangle]
    pub extern "C" fn calloc(count: usize, size: usize) -> *mut u8 {
        let Some(bytes) = count.checked_mul(size) else {
            return std::ptr::null_mut();
        };
        let block = c_alloc(bytes, MIN_ALIGN);
        if !block.is_null() {
            // SAFETY: the block has `bytes` writable bytes.
            unsafe { block.write_bytes(0, bytes) };
        }
        block
    }

    /// C `realloc`.
    ///
    /// # Safety
    /// As [`free`] for `block`.
    #[no_mangle]
    pub unsafe extern "C" fn realloc(block: *mut u8, size: usize) -> *mut u8 {
        if block.is_null() {
            return c_alloc(size, MIN_ALIGN);
        }
        let fresh = c_alloc(size, MIN_ALIGN);
        if !fresh.is_null() {
            unsafe {
                let (_, layout) = c_allocation(block);
                let old = layout.size() - layout.align();
                fresh.copy_from_nonoverlapping(block, old.min(size));
                free(block);
            }
        }
        fresh
    }

    /// C `aligned_alloc`.
    #[no_mangle]
    pub extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut u8 {
        if !align.is_power_of_two() {
            return std::ptr::null_mut();
        }
        c_alloc(size, align)
    }

    /// C `posix_memalign`: 0, or WASI's ENOMEM (48) / EINVAL (28).
    ///
    /// # Safety
    /// `out` must be writable.
    #[no_mangle]
    pub unsafe extern "C" fn posix_memalign(out: *mut *mut u8, align: usize, size: usize) -> i32 {
        if !align.is_power_of_two() || align < std::mem::size_of::<usize>() {
            return 28;
        }
        let block = c_alloc(size, align);
        if block.is_null() {
            return 48;
        }
        unsafe { out.write(block) };
        0
    }

    /// C `malloc_usable_size`.
    ///
    /// # Safety
    /// As [`free`].
    #[no_mangle]
    pub unsafe extern "C" fn malloc_usable_size(block: *mut u8) -> usize {
        if block.is_null() {
            return 0;
        }
        let (_, layout) = unsafe { c_allocation(block) };
        layout.size() - layout.align()
    }
}
