//! Fuzz target `config`: the node's TOML config file, parsed and checked by the node's own
//! source (`node/src/config/file.rs`, pure, included here so the fuzz crate need not build
//! the node and RocksDB). The property is `file::fuzz_property`; `make test` replays the
//! corpus through it.
#![no_main]

#[allow(dead_code)]
#[path = "../../node/src/config/file.rs"]
mod file;
#[allow(dead_code)]
#[path = "../../node/src/origin/source.rs"]
mod source;

// What `file` takes from its parent module in the node (`node/src/config.rs`).
use multiaddr::Multiaddr;
use source::HubSource;

/// The node's `discovery::DhtMode` (the discovery module needs libp2p's host): the same
/// three lowercase names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DhtMode {
    #[default]
    Auto,
    Server,
    Client,
}

/// The node's discovery defaults: a 48 h record TTL, announced every 12 h.
fn default_ttl_and_interval_secs() -> (u64, u64) {
    (48 * 3600, 12 * 3600)
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| file::fuzz_property(data));
