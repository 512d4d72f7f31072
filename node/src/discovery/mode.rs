//! The DHT mode and the record timing defaults: what the config file names.
//!
//! Pure (serde only, no libp2p), so the `config` fuzz target (`fuzz/`) includes this very
//! file beside `config/file.rs` instead of a copy.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How long other nodes keep a provider record of ours by default.
pub const DEFAULT_RECORD_TTL: Duration = Duration::from_secs(48 * 3600);
/// How often each record is re-announced by default: well inside the TTL.
pub const DEFAULT_ANNOUNCE_INTERVAL: Duration = Duration::from_secs(12 * 3600);

/// The record TTL and announce interval (seconds) a config file that sets neither leaves.
pub fn default_ttl_and_interval_secs() -> (u64, u64) {
    (
        DEFAULT_RECORD_TTL.as_secs(),
        DEFAULT_ANNOUNCE_INTERVAL.as_secs(),
    )
}

/// Whether this node answers DHT queries and stores records for others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DhtMode {
    /// Server when reachable: when an external address is configured or a listen address
    /// is a public IP; client otherwise.
    #[default]
    Auto,
    /// Always a server: its listen addresses are taken as reachable (LANs, labs, tests).
    Server,
    /// Only asks, never answers: for nodes behind NAT and one-shot `commons get`.
    Client,
}

impl std::str::FromStr for DhtMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "server" => Ok(Self::Server),
            "client" => Ok(Self::Client),
            _ => Err(format!(
                "unknown DHT mode {s:?}: use auto, server or client"
            )),
        }
    }
}
