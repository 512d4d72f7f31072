//! Transfer statistics per peer, so tests, benchmarks and `node status` can count what
//! crossed the wire.

use std::{collections::BTreeMap, sync::Mutex};

use libp2p::PeerId;
use serde::Serialize;

use super::TransferLimits;

/// Counters for one peer.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PeerStats {
    /// Bytes of responses sent to the peer (headers, hash pairs and data).
    pub bytes_sent: u64,
    /// Bytes of responses received from the peer.
    pub bytes_received: u64,
    /// Requests the peer made to us.
    pub requests_served: u64,
    /// Requests we made to the peer.
    pub requests_made: u64,
    /// Of those, data requests that went to its bulk endpoint (the rest used libp2p).
    pub bulk_requests: u64,
    /// Responses from the peer that failed verification.
    pub bad_responses: u64,
}

/// Counters for every peer, shared by the server and the client, and the node's rate
/// limits: every transferred byte is counted here, which is where it is also throttled.
#[derive(Debug, Default)]
pub struct TransferStats {
    peers: Mutex<BTreeMap<PeerId, PeerStats>>,
    /// Upload and download limits (none by default).
    pub limits: TransferLimits,
}

impl TransferStats {
    /// Counters with these limits.
    pub fn limited(limits: TransferLimits) -> Self {
        Self {
            peers: Mutex::default(),
            limits,
        }
    }

    /// Applies `f` to `peer`'s counters.
    pub fn update(&self, peer: PeerId, f: impl FnOnce(&mut PeerStats)) {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        f(peers.entry(peer).or_default());
    }

    /// A copy of every peer's counters.
    pub fn snapshot(&self) -> BTreeMap<PeerId, PeerStats> {
        self.peers.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Sum over all peers.
    pub fn total(&self) -> PeerStats {
        self.snapshot()
            .values()
            .fold(PeerStats::default(), |mut acc, s| {
                acc.bytes_sent += s.bytes_sent;
                acc.bytes_received += s.bytes_received;
                acc.requests_served += s.requests_served;
                acc.requests_made += s.requests_made;
                acc.bulk_requests += s.bulk_requests;
                acc.bad_responses += s.bad_responses;
                acc
            })
    }
}
