//! The hot path allocates nothing for a record the query rejects, whether the
//! prefilter rejects it or the parse does.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use super::*;

struct Counting;

thread_local! {
    static COUNT: Cell<Option<u64>> = const { Cell::new(None) };
}

// SAFETY: forwards to the system allocator; only counts, on the calling thread.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = COUNT.try_with(|c| c.set(c.get().map(|n| n + 1)));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn allocations(f: impl FnOnce()) -> u64 {
    COUNT.with(|c| c.set(Some(0)));
    f();
    COUNT.with(|c| c.replace(None)).unwrap_or(0)
}

#[test]
fn rejected_records_allocate_nothing() {
    let mut d = Detector::from_config("", "").unwrap();
    let prefiltered = br#"{"eventTime":"2026-01-01T00:00:00Z","eventSource":"ec2.amazonaws.com","eventName":"DescribeInstances","userIdentity":{"type":"IAMUser","arn":"arn:aws:iam::1:user/a"},"requestParameters":{"filterSet":{"items":[{"name":"x","valueSet":{"items":[{"value":"y"}]}}]}}}"#;
    let parsed_unmatched = br#"{"eventTime":"2026-01-01T00:00:00Z","eventSource":"sts.amazonaws.com","eventName":"GetCallerIdentity","userIdentity":{"type":"AssumedRole","arn":"arn:aws:sts::1:assumed-role/r/s"},"requestParameters":null}"#;
    let suppressed = br#"{"eventTime":"2026-01-01T00:00:01Z","eventSource":"sts.amazonaws.com","eventName":"GetCallerIdentity","userIdentity":{"type":"IAMUser","arn":"arn:aws:iam::1:user/a"}}"#;
    // The first sighting allocates its term and its alert (and shows the counter works).
    assert!(allocations(|| d.process(suppressed, &mut |_| {})) > 0);
    for (name, record) in [
        ("prefiltered", &prefiltered[..]),
        ("parsed, unmatched", &parsed_unmatched[..]),
        ("matched, seen before", &suppressed[..]),
    ] {
        let mut outputs = 0;
        let n = allocations(|| d.process(record, &mut |_| outputs += 1));
        assert_eq!(outputs, 0, "{name}");
        assert_eq!(n, 0, "{name}: {n} allocations");
    }
    let s = d.stats();
    assert_eq!((s.prefiltered, s.unmatched, s.suppressed), (1, 1, 1));
}
