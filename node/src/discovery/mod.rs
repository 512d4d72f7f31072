//! Discovery: finding who holds a dataset by its hash alone.
//!
//! A Kademlia DHT (in the node's one libp2p host, see [`crate::net`]) keeps *provider
//! records*: "peer P holds root R". Only dataset roots and blobs pinned on their own are
//! announced, never files inside a dataset nor chunk groups (IPFS's lesson: one record per
//! chunk does not scale). The pieces:
//! - [`records`]: the bounded record store that survives restarts;
//! - [`publisher`]: announces what the node holds, paced, before records lapse;
//! - [`holders`]: who else is known to hold a root, shared with peers fetching the same data
//!   through the transfer protocol's holder exchange;
//! - [`diversity`]: the routing table's address-diversity rule (few peers per /24 or /48);
//! - [`pacing`]: the publisher's decisions (which root to announce when), without I/O;
//! - [`persist`]: saving known peers and records in the store, so a restart needs no
//!   bootstrap list.

pub mod diversity;
pub mod holders;
mod mode;
pub mod pacing;
pub mod persist;
pub mod publisher;
pub mod records;

use std::time::Duration;

use libp2p::Multiaddr;

use crate::net::{
    limits::ConnectionLimits,
    relay::{NatConfig, RelayConfig},
};

pub use holders::Holders;
pub use mode::{
    default_ttl_and_interval_secs, DhtMode, DEFAULT_ANNOUNCE_INTERVAL, DEFAULT_RECORD_TTL,
};
pub use publisher::Publisher;
pub use records::{ProviderLimits, ProviderStore};

/// The Kademlia protocol id: Commons' own DHT, never mixed with IPFS's `/ipfs/kad/1.0.0`.
pub const KAD_PROTOCOL: &str = "/commons/kad/1";
/// The identify protocol version string peers exchange.
pub const IDENTIFY_PROTOCOL: &str = "/commons/id/1";

/// Settings of discovery; the defaults suit a public node.
#[derive(Debug, Clone)]
pub struct DiscoveryConfig {
    /// Server, client, or decided by reachability.
    pub mode: DhtMode,
    /// Peers to join the DHT through (each ideally ending in `/p2p/<peer id>`).
    pub bootstrap: Vec<Multiaddr>,
    /// Addresses others can reach this node at (e.g. behind a port forward).
    pub external_addrs: Vec<Multiaddr>,
    /// How long other nodes keep a provider record of ours: 48 h.
    pub record_ttl: Duration,
    /// How often each record is re-announced: 12 h, well inside the TTL.
    pub announce_interval: Duration,
    /// Announcements in flight at once.
    pub announce_concurrency: usize,
    /// How long one DHT lookup may take.
    pub query_timeout: Duration,
    /// What other peers can make this node remember.
    pub limits: ProviderLimits,
    /// How often known peers and records are saved to the store.
    pub save_interval: Duration,
    /// Find peers on the local network with mDNS (off by default: a public node has no
    /// reason to announce itself on its LAN).
    pub mdns: bool,
    /// Carry data requests on a bulk-data endpoint beside libp2p (`net::bulk`) when the
    /// peer has one too. On by default; off, every transfer uses libp2p streams.
    pub bulk: bool,
    /// Let the kernel segment and coalesce the bulk endpoint's datagrams (UDP GSO/GRO)
    /// where it can. On by default; off for a NIC that mishandles them, or to measure them.
    pub bulk_offload: bool,
    /// Bounds on the host's connections ([`crate::net::limits`]); the defaults are its
    /// named constants.
    pub connection_limits: ConnectionLimits,
    /// Whether local addresses (loopback, private, link-local, shared: see
    /// [`crate::net::is_local_ip`]) are exempt from the per-IP connection limit and from the
    /// routing table's address-diversity rule ([`diversity`]). On by default: the nodes of a
    /// LAN, a lab or a test share one range by nature, and a DHT on a LAN must work without
    /// settings. Off, they are held to both rules like public addresses (tests of the rules
    /// turn it off on 127.0.0.0/8).
    pub exempt_local_addresses: bool,
    /// Relaying for others (`[relay]`).
    pub relay: RelayConfig,
    /// Reachability probes, relay reservations and hole punching (`[nat]`).
    pub nat: NatConfig,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            mode: DhtMode::Auto,
            bootstrap: Vec::new(),
            external_addrs: Vec::new(),
            record_ttl: DEFAULT_RECORD_TTL,
            announce_interval: DEFAULT_ANNOUNCE_INTERVAL,
            announce_concurrency: 16,
            query_timeout: Duration::from_secs(30),
            limits: ProviderLimits::default(),
            save_interval: Duration::from_secs(300),
            mdns: false,
            bulk: true,
            bulk_offload: true,
            connection_limits: ConnectionLimits::default(),
            exempt_local_addresses: true,
            relay: RelayConfig::default(),
            nat: NatConfig::default(),
        }
    }
}

impl DiscoveryConfig {
    /// For one-shot commands (`commons get`, `commons providers`): a client that asks and
    /// leaves, never announcing nor storing records for others.
    pub fn client(bootstrap: Vec<Multiaddr>) -> Self {
        Self {
            mode: DhtMode::Client,
            bootstrap,
            ..Self::default()
        }
    }
}
