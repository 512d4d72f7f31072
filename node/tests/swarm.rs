//! Fetching one blob from several providers at once: the work is shared, and a provider
//! that lies or dies mid-response costs only its in-flight ranges.

mod common;

use std::sync::Arc;

use common::{bad_provider, client_node, pattern, serving_node, Lie};
use commons_node::{
    store::{NoProgress, Store, StoreOptions},
    transfer::{swarm_blob, TransferStats},
};

/// 12 MiB: the first span, then three 4 MiB batches, so two providers both get work.
const SIZE: usize = 12 << 20;

/// A source store holding SIZE bytes, the original bytes, and their hash.
fn source(tmp: &std::path::Path) -> (Arc<Store>, Vec<u8>, commons_protocol::Hash) {
    let data = pattern(SIZE, 7);
    std::fs::write(tmp.join("f"), &data).expect("write");
    let store = Arc::new(Store::open(tmp.join("source"), StoreOptions::default()).expect("store"));
    let hash = store
        .add_file(&tmp.join("f"), &NoProgress)
        .expect("add")
        .hash;
    (store, data, hash)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_honest_providers_share_the_work() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (source_store, data, hash) = source(tmp.path());
    let (a, b) = (
        serving_node(source_store.clone()).await,
        serving_node(source_store).await,
    );
    let client = client_node().await;
    for p in [&a, &b] {
        client
            .connect(p.peer_id(), p.listen_addrs().await)
            .await
            .expect("connect");
    }
    let store = Arc::new(Store::open(tmp.path().join("b"), StoreOptions::default()).expect("b"));
    let stats = Arc::new(TransferStats::default());
    let report = swarm_blob(
        &client,
        &store,
        &[a.peer_id(), b.peer_id()],
        hash,
        &stats,
        Arc::new(|_| {}),
    )
    .await
    .expect("fetch");
    assert!(report.dropped.is_empty(), "{:?}", report.dropped);
    let per_peer = stats.snapshot();
    for p in [&a, &b] {
        let got = per_peer.get(&p.peer_id()).map_or(0, |s| s.bytes_received);
        assert!(got >= 4 << 20, "each provider sent at least a batch: {got}");
    }
    let total: u64 = per_peer.values().map(|s| s.bytes_received).sum();
    assert!(
        total < SIZE as u64 * 3 / 2,
        "endgame duplicates stay bounded: {total}"
    );
    let mut out = Vec::new();
    store.read_blob_verified(&hash, &mut out).expect("complete");
    assert!(out == data, "byte-identical");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_and_a_dying_provider_cost_only_their_ranges() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (source_store, data, hash) = source(tmp.path());
    let liar = bad_provider(source_store.clone(), hash, SIZE as u64, Lie::FlipDataByte).await;
    let dying = bad_provider(source_store.clone(), hash, SIZE as u64, Lie::Truncate).await;
    let honest = serving_node(source_store).await;
    let client = client_node().await;
    for p in [&liar, &dying, &honest] {
        client
            .connect(p.peer_id(), p.listen_addrs().await)
            .await
            .expect("connect");
    }
    let store = Arc::new(Store::open(tmp.path().join("b"), StoreOptions::default()).expect("b"));
    let report = swarm_blob(
        &client,
        &store,
        &[liar.peer_id(), dying.peer_id(), honest.peer_id()],
        hash,
        &Arc::new(TransferStats::default()),
        Arc::new(|_| {}),
    )
    .await
    .expect("the honest provider completes the blob");
    let liar_error = report
        .dropped
        .iter()
        .find(|(p, _)| *p == liar.peer_id())
        .map(|(_, e)| e)
        .expect("the liar is dropped");
    assert!(liar_error.peer_misbehaved(), "{liar_error}");
    assert!(
        report
            .dropped
            .iter()
            .any(|(p, e)| *p == dying.peer_id() && !e.peer_misbehaved()),
        "the provider that keeps dying is dropped, without being called a liar: {:?}",
        report.dropped
    );
    assert!(report.contributed.contains(&honest.peer_id()));
    let mut out = Vec::new();
    store
        .read_blob_verified(&hash, &mut out)
        .expect("complete and verified: no bad byte was stored");
    assert!(out == data, "byte-identical");
}
