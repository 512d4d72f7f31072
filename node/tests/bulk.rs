//! Data requests take the bulk-data endpoint when both sides have one, and libp2p streams
//! when either side has none; the blob arrives whole and verified either way.

mod common;

use std::sync::Arc;

use commons_node::{
    discovery::DiscoveryConfig,
    net::Host,
    store::{Store, StoreOptions},
    transfer::{fetch_blob, PeerStats, TransferStats},
};

const SIZE: usize = 2 << 20;

/// Fetches a 2 MiB blob from a seeder with `seeder_config` into a fresh store, by a client
/// with `client_config`; checks the bytes and returns the client's counters.
async fn fetch_with(seeder_config: DiscoveryConfig, client_config: DiscoveryConfig) -> PeerStats {
    let tmp = tempfile::tempdir().expect("tempdir");
    let original = common::pattern(SIZE, 7);
    let (source, hash) = common::store_with_blob(tmp.path(), "a", &original);
    let seeder = common::serving_node_with(source, &seeder_config).await;
    let client: Host = common::client_node_with(&client_config).await;
    client
        .connect(seeder.peer_id(), seeder.listen_addrs().await)
        .await
        .expect("connect");
    let store = Arc::new(Store::open(tmp.path().join("b"), StoreOptions::default()).expect("b"));
    let stats = Arc::new(TransferStats::default());
    fetch_blob(
        &client,
        &store,
        seeder.peer_id(),
        hash,
        &stats,
        Arc::new(|_| {}),
    )
    .await
    .expect("fetch");
    let mut out = Vec::new();
    store.read_blob_verified(&hash, &mut out).expect("complete");
    assert!(out == original, "the fetched blob differs");
    stats.total()
}

fn without_bulk() -> DiscoveryConfig {
    DiscoveryConfig {
        bulk: false,
        ..DiscoveryConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_requests_use_the_bulk_endpoint_when_both_sides_have_one() {
    let stats = fetch_with(DiscoveryConfig::default(), DiscoveryConfig::default()).await;
    assert!(stats.requests_made > 0);
    assert_eq!(stats.bulk_requests, stats.requests_made, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeder_without_bulk_endpoint_is_fetched_from_over_libp2p() {
    let stats = fetch_with(without_bulk(), DiscoveryConfig::default()).await;
    assert!(stats.requests_made > 0);
    assert_eq!(stats.bulk_requests, 0, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_bulk_endpoint_fetches_over_libp2p() {
    let stats = fetch_with(DiscoveryConfig::default(), without_bulk()).await;
    assert!(stats.requests_made > 0);
    assert_eq!(stats.bulk_requests, 0, "{stats:?}");
}
