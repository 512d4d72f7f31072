//! `/commons/transfer/1`: serving verified ranges, and fetching a blob from one peer.
//!
//! The message formats and their verification live in `commons_protocol::wire`; this module
//! moves them over libp2p streams, one request per stream. Bao-tree's encoder and decoder
//! are synchronous, so each side runs them on a blocking thread connected to the async
//! stream by a bounded channel of byte chunks: memory per stream stays constant.

mod client;
mod exchange;
mod gate;
mod io;
mod limit;
mod request;
mod route;
mod server;
mod stats;
mod swarm;

pub use client::{fetch_blob, FetchError, BUSY_FIRST_WAIT, BUSY_PATIENCE};
pub use exchange::{
    ask_have, ask_holders, ask_hub_file, ask_signatures, ask_upstream, HOLDERS_TIMEOUT,
};
pub use gate::{response_memory, ServeLimits, MAX_GATED_PEERS, MAX_PACING, SEND_WAIT};
pub use limit::{mib_per_sec, RateLimit, TransferLimits, BURST_BYTES};
pub use route::{open_data_stream, TransferStream};
pub use server::serve;
pub use stats::{PeerStats, TransferStats, MAX_STATS_PEERS};
/// The swarm's decisions as a state machine, for drivers other than the node's (the scale
/// simulator).
pub use swarm::machine as swarm_machine;
pub use swarm::{
    swarm_blob, FoundProvider, PeerFeed, SwarmError, SwarmReport, BATCH_SPANS, MAX_ROUNDS,
    MAX_SWARM_PEERS, REQUESTS_PER_PEER,
};
