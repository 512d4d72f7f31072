//! Fuzz target `config`: the node's TOML config file, parsed and checked by the node's own
//! source (`node/src/config/file.rs`, pure, included here so the fuzz crate need not build
//! the node and RocksDB). The property is `file::fuzz_property`; `make test` replays the
//! corpus through it.
#![no_main]

#[allow(dead_code)]
#[path = "../../node/src/config/file.rs"]
mod file;
#[allow(dead_code)]
#[path = "../../node/src/discovery/mode.rs"]
mod mode;
#[allow(dead_code)]
#[path = "../../node/src/origin/source.rs"]
mod source;

// What `file` takes from its parent module in the node (`node/src/config.rs`).
use mode::{default_ttl_and_interval_secs, DhtMode};
use multiaddr::Multiaddr;
use source::HubSource;

libfuzzer_sys::fuzz_target!(|data: &[u8]| file::fuzz_property(data));
