//! Fuzz target `paths_info`: the gateway's reading of a `paths-info` request body (a form
//! or JSON), included from the node's own source (pure, so the fuzz crate need not build
//! the node and RocksDB). The property is `paths_body::fuzz_property`; `make test` replays
//! the corpus through it.
#![no_main]

#[path = "../../node/src/gateway/hf/paths_body.rs"]
mod paths_body;

libfuzzer_sys::fuzz_target!(|data: &[u8]| paths_body::fuzz_property(data));
