//! The Fluent Bit `filter_wasm` front end: a wasm32-wasip1 core module with Fluent Bit's
//! calling convention, over [`crate::host::Filter`].
//!
//! Fluent Bit copies the tag and the record (JSON) into our memory through our `malloc`,
//! calls the filter function, copies the NUL-terminated string it returns (which stays
//! ours), then frees its copies. An empty string drops the record. One function per filter
//! instance; the instance lives as long as the filter (Fluent Bit 4.2.0 and later).
//!
//! The functions differ only in the output mode they force: `newterms_filter` uses the
//! rule file's, `newterms_alert`, `newterms_passthrough`, `newterms_annotate` and
//! `newterms_matches` force one.
//!
//! **A call that never returns.** When a call traps (WAMR's "wasm operand stack overflow",
//! say), Fluent Bit drops that record, clears the trap and goes on calling the same
//! instance. Nothing in the instance was unwound: the filter may be half-way through a
//! change, and so may the allocator. So:
//! - every export starts at the shadow stack's top (the build wraps the exports; see
//!   `host-test`'s `wasm_entry`), so an abandoned call's frames are not kept;
//! - a flag set for the length of a call tells the next call that the last one never
//!   returned: the old filter is left as it is (its memory is not reused) and a new one
//!   is built from the configuration and state file ([`Filter::reopen`]);
//! - if a call (the filter's, or Fluent Bit's own `malloc` or `free`) was abandoned inside
//!   the allocator, the allocator itself starts over on fresh memory ([`allocator`]).

use std::cell::UnsafeCell;

use crate::host::{Filter, Recoveries, StdFiles, FLUENT_BIT};
use crate::rule::OutputMode;

/// The module's one filter and what it knows about the calls into it. Fluent Bit calls a
/// filter from one thread, never re-entrantly.
struct Slot {
    filter: Option<Filter>,
    /// A call is under way (or was abandoned, if a new call finds it set).
    in_call: bool,
    /// The answer handed back; reused, so memory stops growing with the table.
    out: Vec<u8>,
    /// Calls that never returned, so far.
    recoveries: Recoveries,
}

struct Global(UnsafeCell<Slot>);

// SAFETY: the module is single-threaded (wasm32-wasip1 without threads).
unsafe impl Sync for Global {}

static SLOT: Global = Global(UnsafeCell::new(Slot {
    filter: None,
    in_call: false,
    out: Vec::new(),
    recoveries: Recoveries {
        calls: 0,
        allocator_restarts: 0,
    },
}));

/// One line on Fluent Bit's log (the module's stderr), written at once so that it is not
/// interleaved with Fluent Bit's own lines.
fn log(line: &str) {
    let line = format!("[newterms] {line}\n");
    let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
}

/// The slot, made ready for a new call: a call abandoned before this one is dealt with.
///
/// # Safety
/// Only from an export, which Fluent Bit calls one at a time.
unsafe fn enter() -> &'static mut Slot {
    // SAFETY: one call at a time (above); the reference lives for this call only.
    let slot = unsafe { &mut *SLOT.0.get() };
    if allocator::recover() {
        slot.recoveries.allocator_restarts += 1;
    }
    if slot.in_call {
        // The last call never returned. Its filter and answer buffer are abandoned, not
        // dropped: their state is unknown.
        slot.recoveries.calls += 1;
        std::mem::forget(slot.filter.take());
        std::mem::forget(std::mem::take(&mut slot.out));
        // Set before the rebuild: a rebuild that traps counts as one more.
        slot.in_call = true;
        slot.filter = Some(Filter::reopen(
            &StdFiles,
            &FLUENT_BIT,
            slot.recoveries,
            &mut log,
        ));
    }
    slot.in_call = true;
    if slot.filter.is_none() {
        slot.filter = Some(Filter::open(&StdFiles, &FLUENT_BIT, &mut log));
    }
    slot
}

/// The answer as Fluent Bit reads it: NUL-terminated; the call is over.
fn leave(slot: &mut Slot) -> *const u8 {
    slot.out.push(0);
    slot.in_call = false;
    slot.out.as_ptr()
}

/// One call: the record in, a pointer to our NUL-terminated answer out.
///
/// # Safety
/// `record` must point to `len` readable bytes (or be null).
unsafe fn call(
    mode: Option<OutputMode>,
    tag: (*const u8, i32),
    time_sec: i32,
    record: *const u8,
    len: i32,
) -> *const u8 {
    let slot = unsafe { enter() };
    let tag: &[u8] = match tag {
        (p, n) if !p.is_null() && n > 0 => {
            // SAFETY: Fluent Bit passes `n` readable bytes of the tag at `p`.
            unsafe { std::slice::from_raw_parts(p, n as usize) }
        }
        _ => &[],
    };
    let record = (!record.is_null() && len >= 0).then(|| {
        // SAFETY: the caller guarantees `len` readable bytes at `record`.
        unsafe { std::slice::from_raw_parts(record, len as usize) }
    });
    let Slot { filter, out, .. } = &mut *slot;
    if let Some(filter) = filter {
        filter.answer(
            &StdFiles,
            tag,
            record,
            i64::from(time_sec),
            mode,
            out,
            &mut log,
        );
    }
    leave(slot)
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
            tag: *const u8,
            tag_len: i32,
            time_sec: i32,
            _time_nsec: i32,
            record: *const u8,
            record_len: i32,
        ) -> *const u8 {
            unsafe { call($mode, (tag, tag_len), time_sec, record, record_len) }
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
    /// The filter in `matches` mode: no table, one match document per (rule, term) for a
    /// `newterms consume` group. Fluent Bit takes one record back per record: a record
    /// with several comes back as one bundle, which the README's `lua` step splits (or,
    /// with `several_outputs = "first"`, as its first, the others counted in
    /// `extra_outputs_dropped`; see [`crate::host::Filter`]).
    newterms_matches => Some(OutputMode::Matches);
}

/// The counters as a NUL-terminated JSON object (valid until the next call).
#[no_mangle]
pub extern "C" fn newterms_stats() -> *const u8 {
    // SAFETY: an export, called one at a time.
    let slot = unsafe { enter() };
    slot.out.clear();
    if let Some(f) = &slot.filter {
        slot.out
            .extend_from_slice(f.stats_json(slot.recoveries).as_bytes());
    }
    leave(slot)
}

/// A filter that traps (`unreachable`) after answering any record that holds the text
/// `newterms-test-trap`: for testing the recovery above in the real host. Built only with
/// the `fault-injection` feature, never into the shipped module.
///
/// # Safety
/// As the filter functions.
#[cfg(feature = "fault-injection")]
#[no_mangle]
pub unsafe extern "C" fn newterms_fault_filter(
    tag: *const u8,
    tag_len: i32,
    time_sec: i32,
    time_nsec: i32,
    record: *const u8,
    record_len: i32,
) -> *const u8 {
    let answer = unsafe { newterms_filter(tag, tag_len, time_sec, time_nsec, record, record_len) };
    // SAFETY: as in `call`.
    let text = unsafe { std::slice::from_raw_parts(record, record_len.max(0) as usize) };
    if memchr::memmem::find(text, b"newterms-test-trap").is_some() {
        // Mid-call, as far as the next call can tell.
        unsafe { (*SLOT.0.get()).in_call = true };
        std::process::abort();
    }
    answer
}

/// The module's allocator, which can start over after an abandoned call (wasm builds only:
/// natively its symbols would replace the C library's own).
#[cfg(target_family = "wasm")]
mod allocator;

/// Natively there is no allocator of ours to start over (the module only runs in wasm).
#[cfg(not(target_family = "wasm"))]
mod allocator {
    pub(super) fn recover() -> bool {
        false
    }
}
