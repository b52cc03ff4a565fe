//! The module's allocator (wasm builds only: natively these symbols would replace the C
//! library's own).
//!
//! Fluent Bit allocates its copies of the tag and record with the module's exported
//! `malloc` and releases them with `free`; Rust allocates through its global allocator.
//! Both go to one allocator of ours (dlmalloc over the module's memory): the exported
//! functions are backed by the Rust allocator, whatever C library the module is linked
//! with, and the C library's own allocator is never linked in.
//!
//! Fluent Bit allocates and frees two blocks for every record (its copies of the tag and
//! the record), so `free` keeps a few C blocks and `malloc` hands back the smallest kept
//! one that fits: a record then costs a few dozen instructions of allocation instead of
//! dlmalloc's bookkeeping four times (about 1,200 instructions, measured by
//! `benches/throughput.rs`). C blocks are rounded up to a power of two, so that one kept
//! block serves records of many sizes.
//!
//! A call abandoned inside the allocator leaves its bookkeeping half-changed, so the
//! allocator can start over: a new dlmalloc on memory grown from then on, and no kept
//! blocks. Blocks of the old one stay where they are, readable, and freeing them does
//! nothing.

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
