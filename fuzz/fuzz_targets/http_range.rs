//! Fuzz target `http_range`: the gateway's `Range` header reading, included from the node's
//! own source (pure, so the fuzz crate need not build the node and RocksDB). The property
//! is `range_header::fuzz_property`; `make test` replays the corpus through it.
#![no_main]

#[path = "../../node/src/gateway/range/range_header.rs"]
mod range_header;

libfuzzer_sys::fuzz_target!(|data: &[u8]| range_header::fuzz_property(data));
