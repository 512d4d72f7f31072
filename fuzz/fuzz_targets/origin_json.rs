//! Fuzz target `origin_json`: the JSON a Hub origin answers (a revision, a tree listing's
//! pages), read by the node's own source (`node/src/origin/client/listing.rs`, pure,
//! included here so the fuzz crate need not build the node and RocksDB). The property is
//! `listing::fuzz_property`, which `make test` replays the corpus through; here the
//! allocator also checks that no answer makes the reader allocate beyond a small multiple
//! of its size.
#![no_main]

use std::{
    alloc::{GlobalAlloc, Layout, System},
    sync::atomic::{AtomicUsize, Ordering::Relaxed},
};

#[allow(dead_code)]
#[path = "../../node/src/origin/client/listing.rs"]
mod listing;

/// Bytes allocated now, and the most since the last reset.
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

struct Counting;

// SAFETY: forwards to the system allocator, only counting.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Relaxed) + layout.size();
            PEAK.fetch_max(now, Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE.fetch_sub(layout.size(), Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Allocation allowed per input byte (the kept files, and the property's own re-encoding
/// of them), plus a fixed allowance.
const BYTES_PER_INPUT_BYTE: usize = 64;
const FIXED_ALLOWANCE: usize = 1 << 20;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let before = LIVE.load(Relaxed);
    PEAK.store(before, Relaxed);
    listing::fuzz_property(data);
    let used = PEAK.load(Relaxed) - before;
    assert!(
        used <= BYTES_PER_INPUT_BYTE * data.len() + FIXED_ALLOWANCE,
        "{used} bytes allocated for {} input bytes",
        data.len()
    );
});
