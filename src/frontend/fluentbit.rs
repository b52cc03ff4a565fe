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
unsafe fn call(mode: Option<OutputMode>, time_sec: i32, record: *const u8, len: i32) -> *const u8 {
    let slot = unsafe { enter() };
    let record = (!record.is_null() && len >= 0).then(|| {
        // SAFETY: the caller guarantees `len` readable bytes at `record`.
        unsafe { std::slice::from_raw_parts(record, len as usize) }
    });
    let Slot { filter, out, .. } = &mut *slot;
    if let Some(filter) = filter {
        filter.answer(&StdFiles, record, i64::from(time_sec), mode, out, &mut log);
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
    /// The filter in `matches` mode: no table, one match document for a `newterms
    /// consume` group (Fluent Bit takes one record back per record: a record with several
    /// (rule, term) sends its first, and counts the others in `extra_outputs`).
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

/// The module's allocator (wasm builds only: natively these symbols would replace the C
/// library's own).
///
/// Fluent Bit allocates its copies of the tag and record with the module's exported
/// `malloc` and releases them with `free`; Rust allocates through its global allocator.
/// Both go to one allocator of ours (dlmalloc over the module's memory): the exported
/// functions are backed by the Rust allocator, whatever C library the module is linked
/// with, and the C library's own allocator is never linked in.
///
/// Fluent Bit allocates and frees two blocks for every record (its copies of the tag and
/// the record), so `free` keeps a few C blocks and `malloc` hands back the smallest kept
/// one that fits: a record then costs a few dozen instructions of allocation instead of
/// dlmalloc's bookkeeping four times (about 1,200 instructions, measured by
/// `benches/throughput.rs`). C blocks are rounded up to a power of two, so that one kept
/// block serves records of many sizes.
///
/// A call abandoned inside the allocator leaves its bookkeeping half-changed, so the
/// allocator can start over: a new dlmalloc on memory grown from then on, and no kept
/// blocks. Blocks of the old one stay where they are, readable, and freeing them does
/// nothing.
#[cfg(target_family = "wasm")]
mod allocator {
    use std::alloc::{GlobalAlloc, Layout};
    use std::cell::UnsafeCell;

    /// How many freed C blocks are kept for reuse.
    const KEPT: usize = 2;

    /// The smallest C block: a tag fits in it.
    const MIN_C_BLOCK: usize = 64;

    /// A freed C block kept for reuse: its address and usable size (0: none).
    #[derive(Clone, Copy)]
    struct Kept {
        block: usize,
        size: usize,
    }

    const NONE: Kept = Kept { block: 0, size: 0 };

    struct Heap {
        arena: dlmalloc::Dlmalloc,
        /// Blocks below this address belong to an abandoned arena.
        fence: usize,
        /// An allocator call is under way.
        busy: bool,
        /// Freed C blocks, ready for the next `malloc`.
        kept: [Kept; KEPT],
    }

    struct Shared(UnsafeCell<Heap>);

    // SAFETY: single-threaded module.
    unsafe impl Sync for Shared {}

    static HEAP: Shared = Shared(UnsafeCell::new(Heap {
        arena: dlmalloc::Dlmalloc::new(),
        fence: 0,
        busy: false,
        kept: [NONE; KEPT],
    }));

    fn heap() -> &'static mut Heap {
        // SAFETY: single-threaded, and no allocator call nests in another.
        unsafe { &mut *HEAP.0.get() }
    }

    /// At the start of a call from the host: if the last call was abandoned inside the
    /// allocator (no allocator call is under way between calls otherwise), starts over
    /// with a new arena on fresh memory; the old one's blocks are never reused or freed.
    /// Whether it did.
    pub(super) fn recover() -> bool {
        let h = heap();
        if !h.busy {
            return false;
        }
        h.arena = dlmalloc::Dlmalloc::new();
        h.fence = core::arch::wasm32::memory_size(0) * 65536;
        h.kept = [NONE; KEPT];
        h.busy = false;
        true
    }

    /// [`recover`] for the C functions Fluent Bit calls (the count is the filter's).
    fn enter_c() {
        if recover() {
            // SAFETY: between calls, one at a time.
            unsafe { (*super::SLOT.0.get()).recoveries.allocator_restarts += 1 };
        }
    }

    struct Rust;

    #[global_allocator]
    static ALLOCATOR: Rust = Rust;

    // SAFETY: forwards to dlmalloc, whose blocks satisfy the layouts asked for.
    unsafe impl GlobalAlloc for Rust {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let h = heap();
            h.busy = true;
            let p = unsafe { h.arena.malloc(layout.size(), layout.align()) };
            h.busy = false;
            p
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            let h = heap();
            h.busy = true;
            let p = unsafe { h.arena.calloc(layout.size(), layout.align()) };
            h.busy = false;
            p
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            let h = heap();
            if (ptr as usize) < h.fence {
                return;
            }
            h.busy = true;
            unsafe { h.arena.free(ptr, layout.size(), layout.align()) };
            h.busy = false;
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            let h = heap();
            if (ptr as usize) < h.fence {
                let Ok(new) = Layout::from_size_align(new_size, layout.align()) else {
                    return std::ptr::null_mut();
                };
                let fresh = unsafe { self.alloc(new) };
                if !fresh.is_null() {
                    unsafe { fresh.copy_from_nonoverlapping(ptr, layout.size().min(new_size)) };
                }
                return fresh;
            }
            h.busy = true;
            let p = unsafe {
                h.arena
                    .realloc(ptr, layout.size(), layout.align(), new_size)
            };
            h.busy = false;
            p
        }
    }

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

    /// The usable size of a C block.
    ///
    /// # Safety
    /// As [`c_allocation`].
    unsafe fn c_size(block: *mut u8) -> usize {
        let (_, layout) = unsafe { c_allocation(block) };
        layout.size() - layout.align()
    }

    /// C `malloc`, exported for Fluent Bit: the smallest kept block that fits, else a new
    /// one.
    #[no_mangle]
    pub extern "C" fn malloc(size: usize) -> *mut u8 {
        enter_c();
        let h = heap();
        h.busy = true;
        let mut best: Option<usize> = None;
        for (i, k) in h.kept.iter().enumerate() {
            if k.size >= size && best.is_none_or(|b| k.size < h.kept[b].size) {
                best = Some(i);
            }
        }
        let reused = best.map(|i| std::mem::replace(&mut h.kept[i], NONE).block);
        h.busy = false;
        match reused {
            Some(block) => block as *mut u8,
            None => match size.max(MIN_C_BLOCK).checked_next_power_of_two() {
                Some(rounded) => c_alloc(rounded, MIN_ALIGN),
                None => std::ptr::null_mut(),
            },
        }
    }

    /// C `free`, exported for Fluent Bit; a null pointer is ignored. The block is kept for
    /// reuse in place of the smallest kept one (which is freed), if it is larger.
    ///
    /// # Safety
    /// `block` must be null or come from this module's `malloc` family, freed once.
    #[no_mangle]
    pub unsafe extern "C" fn free(block: *mut u8) {
        enter_c();
        let h = heap();
        if block.is_null() || (block as usize) < h.fence {
            return;
        }
        let size = unsafe { c_size(block) };
        h.busy = true;
        let mut smallest = 0;
        for (i, k) in h.kept.iter().enumerate() {
            if k.size < h.kept[smallest].size {
                smallest = i;
            }
        }
        let mut release = block;
        if size > h.kept[smallest].size {
            let out = std::mem::replace(
                &mut h.kept[smallest],
                Kept {
                    block: block as usize,
                    size,
                },
            );
            release = out.block as *mut u8;
        }
        h.busy = false;
        if !release.is_null() {
            unsafe {
                let (base, layout) = c_allocation(release);
                std::alloc::dealloc(base, layout);
            }
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
        unsafe { c_size(block) }
    }
}

/// Natively there is no allocator of ours to start over (the module only runs in wasm).
#[cfg(not(target_family = "wasm"))]
mod allocator {
    pub(super) fn recover() -> bool {
        false
    }
}
