//! Data requests take the bulk-data endpoint when both sides have one, and libp2p streams
//! when either side has none; the blob arrives whole and verified either way. A seeder
//! that restarts on other ports is found on its new bulk port.

mod common;

use commons_node::store::AsyncStore;
use std::{fs, sync::Arc};

use commons_node::{
    discovery::DiscoveryConfig,
    net::Host,
    store::{NoProgress, Store, StoreOptions},
    transfer::{fetch_blob, PeerStats, TransferStats},
};
use libp2p::identity::Keypair;

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
        &AsyncStore::new(store.clone()),
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

fn offload(on: bool) -> DiscoveryConfig {
    DiscoveryConfig {
        bulk_offload: on,
        ..DiscoveryConfig::default()
    }
}

/// Segmentation offload (UDP GSO/GRO) changes system calls, never data: with it off on
/// either side or both, the blob is fetched over the bulk endpoint and stored with the same
/// verified bytes as with it on (the first test above).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_with_offload_off_stores_the_same_bytes_as_with_it_on() {
    for (seeder, client) in [(false, false), (true, false), (false, true)] {
        let stats = fetch_with(offload(seeder), offload(client)).await;
        assert!(stats.requests_made > 0);
        assert_eq!(
            stats.bulk_requests, stats.requests_made,
            "seeder offload {seeder}, client offload {client}: {stats:?}"
        );
    }
}

/// A seeder started under the same key, on `store`, listening on fresh ports; returns the
/// host and its server task (abort it, and drop the host, to stop the node).
async fn start_seeder(key: &Keypair, store: Arc<Store>) -> (Host, tokio::task::JoinHandle<()>) {
    let host = Host::start(
        key.clone(),
        &common::loopback(),
        &DiscoveryConfig::default(),
    )
    .await
    .expect("host");
    let server = common::spawn_server(store, &host);
    (host, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeder_restarted_on_new_ports_is_reached_on_its_new_bulk_port() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // Three requests' worth (4 MiB batches): the first after the restart may fall back.
    let first = common::pattern(SIZE, 1);
    let second = common::pattern(10 << 20, 2);
    let (source, first_hash) = common::store_with_blob(tmp.path(), "a", &first);
    fs::write(tmp.path().join("g"), &second).expect("write");
    let second_hash = source
        .add_file(&tmp.path().join("g"), &NoProgress)
        .expect("add")
        .hash;
    let key = Keypair::generate_ed25519();
    let client = common::client_node().await;
    let store = Arc::new(Store::open(tmp.path().join("b"), StoreOptions::default()).expect("b"));
    let stats = Arc::new(TransferStats::default());

    let (seeder, server) = start_seeder(&key, source.clone()).await;
    let peer = seeder.peer_id();
    client
        .connect(peer, seeder.listen_addrs().await)
        .await
        .expect("connect");
    fetch_blob(
        &client,
        &AsyncStore::new(store.clone()),
        peer,
        first_hash,
        &stats,
        Arc::new(|_| {}),
    )
    .await
    .expect("first fetch");
    let before = stats.total().bulk_requests;
    assert!(before > 0, "the first fetch used the bulk endpoint");
    server.abort();
    drop(seeder);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let (seeder, _server) = start_seeder(&key, source).await;
    client
        .connect(peer, seeder.listen_addrs().await)
        .await
        .expect("reconnect");
    fetch_blob(
        &client,
        &AsyncStore::new(store.clone()),
        peer,
        second_hash,
        &stats,
        Arc::new(|_| {}),
    )
    .await
    .expect("second fetch");
    let mut out = Vec::new();
    store
        .read_blob_verified(&second_hash, &mut out)
        .expect("complete");
    assert!(out == second, "the second blob differs");
    assert!(
        stats.total().bulk_requests > before,
        "the restarted seeder's new bulk port was not used: {:?}",
        stats.total()
    );
}
