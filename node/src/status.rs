//! What a running node reports about itself: `commons node status` and the Prometheus
//! metrics endpoint read the same snapshot.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::{fetch::FetchContext, store::BlobState};

/// What a node knows about itself beyond its store and host.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// The storage quota in bytes, if any.
    pub quota: Option<u64>,
    /// The HTTP gateway's address, if it runs.
    pub gateway: Option<std::net::SocketAddr>,
    /// When the node started.
    pub started: Instant,
}

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
}

/// Takes a snapshot (reads the store on a blocking thread).
pub async fn snapshot(ctx: &FetchContext, info: &NodeInfo) -> Result<NodeStatus, String> {
    let network = ctx.host.status().await.map_err(|e| e.to_string())?;
    let totals = ctx.stats.total();
    let store = ctx.store.clone();
    let (datasets, blobs, complete_blobs, pinned, stored_bytes, disk_bytes) =
        tokio::task::spawn_blocking(move || {
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
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
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
        quota_bytes: info.quota,
        gateway: info.gateway.map(|a| format!("http://{a}")),
        uptime_secs: info.started.elapsed().as_secs(),
    })
}
