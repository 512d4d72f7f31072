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

/// Peers counted one by one at most. Peer ids cost nothing to mint, so the map is bounded:
/// past this, the peer that moved the fewest bytes is folded into the others' sum (totals
/// stay exact; only the per-peer breakdown forgets it).
pub const MAX_STATS_PEERS: usize = 1024;

impl PeerStats {
    fn add(&mut self, s: &PeerStats) {
        self.bytes_sent += s.bytes_sent;
        self.bytes_received += s.bytes_received;
        self.requests_served += s.requests_served;
        self.requests_made += s.requests_made;
        self.bulk_requests += s.bulk_requests;
        self.bad_responses += s.bad_responses;
    }
}

/// The per-peer counters, and the sum of the peers folded out of them.
#[derive(Debug, Default)]
struct Counters {
    peers: BTreeMap<PeerId, PeerStats>,
    others: PeerStats,
}

/// Counters for every peer, shared by the server and the client, and the node's rate
/// limits: every transferred byte is counted here, which is where it is also throttled.
#[derive(Debug, Default)]
pub struct TransferStats {
    counters: Mutex<Counters>,
    /// Upload and download limits (none by default).
    pub limits: TransferLimits,
}

impl TransferStats {
    /// Counters with these limits.
    pub fn limited(limits: TransferLimits) -> Self {
        Self {
            counters: Mutex::default(),
            limits,
        }
    }

    /// Applies `f` to `peer`'s counters.
    pub fn update(&self, peer: PeerId, f: impl FnOnce(&mut PeerStats)) {
        let mut c = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        if c.peers.len() >= MAX_STATS_PEERS && !c.peers.contains_key(&peer) {
            let quietest = c
                .peers
                .iter()
                .min_by_key(|(_, s)| s.bytes_sent + s.bytes_received)
                .map(|(p, _)| *p);
            if let Some(stats) = quietest.and_then(|p| c.peers.remove(&p)) {
                c.others.add(&stats);
            }
        }
        f(c.peers.entry(peer).or_default());
    }

    /// A copy of the counters of every peer counted one by one.
    pub fn snapshot(&self) -> BTreeMap<PeerId, PeerStats> {
        let c = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        c.peers.clone()
    }

    /// Sum over all peers, those folded out of the breakdown included.
    pub fn total(&self) -> PeerStats {
        let c = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        c.peers.values().fold(c.others, |mut acc, s| {
            acc.add(s);
            acc
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_peer_counters_are_bounded_and_totals_stay_exact() {
        let stats = TransferStats::default();
        let busy = PeerId::random();
        stats.update(busy, |s| s.bytes_sent = 1 << 30);
        for _ in 0..MAX_STATS_PEERS + 100 {
            stats.update(PeerId::random(), |s| s.bytes_received += 10);
        }
        let snapshot = stats.snapshot();
        assert_eq!(snapshot.len(), MAX_STATS_PEERS);
        assert!(snapshot.contains_key(&busy), "the busiest peer is kept");
        let total = stats.total();
        assert_eq!(total.bytes_sent, 1 << 30);
        assert_eq!(total.bytes_received, 10 * (MAX_STATS_PEERS as u64 + 100));
    }
}
