//! Fetching one blob from several providers at once, the loopback versions of the swarm
//! lab's scenarios: four seeders share the work; one that corrupts data is dropped and none
//! of its bytes is stored; one killed half-way costs only its in-flight ranges. And seeding
//! while downloading: a peer holding part of a blob serves exactly that part.

mod common;

use commons_node::store::AsyncStore;
use std::sync::Arc;

use common::{bad_provider, client_node, pattern, serving_node, Lie};
use commons_node::{
    net::Host,
    store::{NoProgress, Store, StoreOptions},
    transfer::{ask_have, swarm_blob, PeerFeed, SwarmError, SwarmReport, TransferStats},
};
use commons_protocol::{wire::HaveResponse, Hash};

/// Held by each test for its whole run. The swarm's endgame is timed (a batch counts as
/// stalled after twice the others' median time), so the bytes these tests count depend on
/// how evenly the batches progress. Four swarms of five nodes at once on two cores, with
/// another busy process, duplicated a batch in 1 run of 100; one at a time, in none of 100.
static ONE_SWARM_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// 16 MiB: the first span, then four 4 MiB batches, so four providers all get work.
const SIZE: usize = 16 << 20;

/// A source store holding SIZE bytes, the original bytes, and their hash.
fn source(tmp: &std::path::Path) -> (Arc<Store>, Vec<u8>, Hash) {
    let data = pattern(SIZE, 7);
    std::fs::write(tmp.join("f"), &data).expect("write");
    let store = Arc::new(Store::open(tmp.join("source"), StoreOptions::default()).expect("store"));
    let hash = store
        .add_file(&tmp.join("f"), &NoProgress)
        .expect("add")
        .hash;
    (store, data, hash)
}

/// Fetches `hash` into a fresh store from `providers` at once; returns the store, what
/// happened and the bytes each provider sent.
async fn swarm_from(
    tmp: &std::path::Path,
    providers: &[&Host],
    hash: Hash,
) -> (Arc<Store>, Result<SwarmReport, SwarmError>, Vec<u64>) {
    let client = client_node().await;
    for p in providers {
        client
            .connect(p.peer_id(), p.listen_addrs().await)
            .await
            .expect("connect");
    }
    let store = Arc::new(Store::open(tmp.join("fetcher"), StoreOptions::default()).expect("b"));
    let stats = Arc::new(TransferStats::default());
    let peers: Vec<_> = providers.iter().map(|p| p.peer_id()).collect();
    let result = swarm_blob(
        &client,
        &AsyncStore::new(store.clone()),
        &peers,
        &mut PeerFeed::none(),
        hash,
        &stats,
        Arc::new(|_| {}),
        None,
    )
    .await;
    let per_peer = stats.snapshot();
    let sent = peers
        .iter()
        .map(|p| per_peer.get(p).map_or(0, |s| s.bytes_received))
        .collect();
    (store, result, sent)
}

fn assert_complete_and_identical(store: &Store, hash: &Hash, data: &[u8]) {
    let mut out = Vec::new();
    store
        .read_blob_verified(hash, &mut out)
        .expect("complete and verified: no bad byte was stored");
    assert!(out == data, "byte-identical");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_seeders_all_contribute() {
    let _alone = ONE_SWARM_AT_A_TIME.lock().await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let (source_store, data, hash) = source(tmp.path());
    let mut seeders = Vec::new();
    for _ in 0..4 {
        seeders.push(serving_node(source_store.clone()).await);
    }
    let (store, result, sent) =
        swarm_from(tmp.path(), &seeders.iter().collect::<Vec<_>>(), hash).await;
    let report = result.expect("fetch");
    assert!(report.dropped.is_empty(), "{:?}", report.dropped);
    for (i, bytes) in sent.iter().enumerate() {
        // The last batch is 15 spans (3.75 MiB), the others 16.
        assert!(*bytes >= 3 << 20, "seeder {i} sent a batch: {sent:?}");
    }
    let total: u64 = sent.iter().sum();
    assert!(
        (total as f64) < SIZE as f64 * 1.1,
        "equally fast seeders fetch nothing twice: {total} ({sent:?})"
    );
    assert_complete_and_identical(&store, &hash, &data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_four_seeders_corrupts_data_and_is_dropped() {
    let _alone = ONE_SWARM_AT_A_TIME.lock().await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let (source_store, data, hash) = source(tmp.path());
    let liar = bad_provider(source_store.clone(), hash, SIZE as u64, Lie::FlipDataByte).await;
    let mut seeders = vec![liar];
    for _ in 0..3 {
        seeders.push(serving_node(source_store.clone()).await);
    }
    let (store, result, _) =
        swarm_from(tmp.path(), &seeders.iter().collect::<Vec<_>>(), hash).await;
    let report = result.expect("the honest seeders complete the blob");
    let (_, error) = report
        .dropped
        .iter()
        .find(|(p, _)| *p == seeders[0].peer_id())
        .expect("the liar is dropped");
    assert!(error.peer_misbehaved(), "{error}");
    assert!(!report.contributed.is_empty());
    assert_complete_and_identical(&store, &hash, &data);
}

/// What the killed seeder sends before it dies: its first span, then half a batch.
const DYING_SEEDER_SENDS: u64 = (2 << 20) + 12_345;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_four_seeders_killed_half_way_costs_at_most_5_percent_extra() {
    let _alone = ONE_SWARM_AT_A_TIME.lock().await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let (source_store, data, hash) = source(tmp.path());
    // Takes the first span and then a batch (the swarm's order), and dies half-way
    // through that batch. It must die in its first batch: it answers one request at a time,
    // so a second batch of its waits behind the first, and the endgame gives it to another
    // seeder before it gets far (when it was to die at 6 MiB, it never did).
    let dying = bad_provider(
        source_store.clone(),
        hash,
        SIZE as u64,
        Lie::DieAfter(DYING_SEEDER_SENDS),
    )
    .await;
    let mut seeders = vec![dying];
    for _ in 0..3 {
        seeders.push(serving_node(source_store.clone()).await);
    }
    let (store, result, sent) =
        swarm_from(tmp.path(), &seeders.iter().collect::<Vec<_>>(), hash).await;
    let report = result.expect("the others complete the blob");
    assert_eq!(
        sent[0], DYING_SEEDER_SENDS,
        "the dying seeder got as far as its death: {sent:?}"
    );
    assert!(
        !report
            .dropped
            .iter()
            .any(|(p, e)| *p == seeders[0].peer_id() && e.peer_misbehaved()),
        "dying is not lying: {:?}",
        report.dropped
    );
    let total: u64 = sent.iter().sum();
    assert!(
        total as f64 <= SIZE as f64 * 1.05 + 64.0 * 1024.0,
        "extra bytes: {total} for {SIZE} ({sent:?})"
    );
    assert_complete_and_identical(&store, &hash, &data);
}

/// A store holding part of blob `hash`: fetched from a provider that dies after `bytes`.
async fn partial_holder(
    tmp: &std::path::Path,
    source_store: &Arc<Store>,
    hash: Hash,
    bytes: u64,
) -> Arc<Store> {
    let dying = bad_provider(
        source_store.clone(),
        hash,
        SIZE as u64,
        Lie::DieAfter(bytes),
    )
    .await;
    let dir = tmp.join("partial");
    std::fs::create_dir_all(&dir).expect("dir");
    let (store, result, _) = swarm_from(&dir, &[&dying], hash).await;
    assert!(result.is_err(), "the provider died: the blob stays partial");
    store
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_still_fetching_serves_exactly_the_spans_it_holds() {
    let _alone = ONE_SWARM_AT_A_TIME.lock().await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let (source_store, data, hash) = source(tmp.path());
    let partial = partial_holder(tmp.path(), &source_store, hash, 6 << 20).await;
    let held = partial.held_groups(&hash).expect("held");
    let HaveResponse::Held {
        complete: false,
        groups,
        ..
    } = &held
    else {
        panic!("partly held: {held:?}");
    };
    let held_bytes: u64 = groups.iter().map(|r| (r.end - r.start) * 16 * 1024).sum();
    assert!(
        held_bytes >= 4 << 20 && held_bytes < SIZE as u64,
        "{held:?}"
    );
    let server = serving_node(partial.clone()).await;

    // Asked, it says what it holds.
    let client = client_node().await;
    client
        .connect(server.peer_id(), server.listen_addrs().await)
        .await
        .expect("connect");
    let answer = ask_have(&client, server.peer_id(), hash)
        .await
        .expect("have");
    assert_eq!(answer, Some(held.clone()));

    // Fetching from it alone gets exactly that, verified, and a clear error for the rest.
    let dir = tmp.path().join("from-partial");
    std::fs::create_dir_all(&dir).expect("dir");
    let (store, result, sent) = swarm_from(&dir, &[&server], hash).await;
    let error = result.expect_err("the partial holder cannot give the rest");
    assert!(!error.missing.is_empty(), "{error}");
    assert!(
        error.to_string().contains("no provider could supply bytes"),
        "{error}"
    );
    assert_eq!(
        store.held_groups(&hash).expect("held"),
        held,
        "the same spans, no more"
    );
    assert!(sent[0] >= held_bytes, "it served all it had: {sent:?}");

    // With a complete seeder too, the blob completes, the partial holder serving its part.
    let seeder = serving_node(source_store.clone()).await;
    let dir = tmp.path().join("both");
    std::fs::create_dir_all(&dir).expect("dir");
    let (store, result, sent) = swarm_from(&dir, &[&server, &seeder], hash).await;
    let report = result.expect("fetch");
    assert!(report.dropped.is_empty(), "{:?}", report.dropped);
    assert!(
        report.contributed.contains(&server.peer_id()) && sent[0] >= 256 << 10,
        "the partial holder served a span at least: {sent:?}"
    );
    assert_complete_and_identical(&store, &hash, &data);
}
