//! What a running node reports about itself: `commons node status` and the Prometheus
//! metrics endpoint read the same snapshot.

use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use crate::{error::ApiError, node::Node, store::BlobState};

/// A snapshot of a running node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// Its PeerId.
    pub peer_id: String,
    /// `server` or `client`.
    pub dht_mode: String,
    /// Peers with an open connection.
    pub connected_peers: u64,
    /// Peers in the DHT routing table.
    pub routing_table: u64,
    /// Datasets stored (complete or not).
    pub datasets: u64,
    /// Blobs stored, and how many of them are complete.
    pub blobs: u64,
    /// Complete blobs.
    pub complete_blobs: u64,
    /// Pinned datasets and blobs.
    pub pinned: u64,
    /// Response bytes served to peers since start.
    pub bytes_served: u64,
    /// Response bytes fetched from peers since start.
    pub bytes_fetched: u64,
    /// Requests peers made to this node since start.
    pub requests_served: u64,
    /// Responses that failed verification since start.
    pub bad_responses: u64,
    /// Bytes of stored blobs (what the quota counts).
    pub stored_bytes: u64,
    /// Bytes the store's files take on disk.
    pub disk_bytes: u64,
    /// The quota, if any.
    pub quota_bytes: Option<u64>,
    /// The gateway's URL, if it runs.
    pub gateway: Option<String>,
    /// Seconds since start.
    pub uptime_secs: u64,
    /// Responses with data the HTTP gateway sent since start.
    pub gateway_responses: u64,
    /// Body bytes the HTTP gateway sent since start.
    pub gateway_bytes: u64,
    /// Each mirrored dataset: fetching (how far), complete, or failing (why, and when it
    /// is tried again).
    pub mirror: Vec<crate::mirror::board::MirrorEntryStatus>,
    /// Reachability (public, private, unknown), relays, and connections by path.
    pub nat: crate::net::NatStatus,
}

/// Takes a snapshot of the running node (a `not_running` error for an in-process one).
pub async fn snapshot(node: &Node) -> Result<NodeStatus, ApiError> {
    let info = node.daemon()?.clone();
    let network = node.network().await?.host.status().await?;
    let totals = node.stats().total();
    let (datasets, blobs, complete_blobs, pinned, stored_bytes, disk_bytes) = node
        .store()
        .run(|store| {
            let blobs = store.blobs()?;
            let complete = blobs
                .iter()
                .filter(|(_, m)| m.state == BlobState::Complete)
                .count();
            Ok::<_, crate::StoreError>((
                store.datasets()?.len() as u64,
                blobs.len() as u64,
                complete as u64,
                store.pins()?.len() as u64,
                store.stored_bytes()?,
                store.disk_usage()?,
            ))
        })
        .await?;
    Ok(NodeStatus {
        peer_id: network.peer_id,
        dht_mode: network.dht_mode,
        connected_peers: network.connected.len() as u64,
        routing_table: network.routing_table as u64,
        datasets,
        blobs,
        complete_blobs,
        pinned,
        bytes_served: totals.bytes_sent,
        bytes_fetched: totals.bytes_received,
        requests_served: totals.requests_served,
        bad_responses: totals.bad_responses,
        stored_bytes,
        disk_bytes,
        quota_bytes: node.quota(),
        gateway: info.gateway.map(|a| format!("http://{a}")),
        uptime_secs: info.started.elapsed().as_secs(),
        gateway_responses: node.gateway_stats().responses.load(Ordering::Relaxed),
        gateway_bytes: node.gateway_stats().bytes.load(Ordering::Relaxed),
        mirror: node.mirror().statuses(),
        nat: network.nat,
    })
}
