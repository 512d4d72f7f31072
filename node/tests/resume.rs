//! A fetch interrupted half-way (its connection dropped) resumes and, in total, receives
//! little more than the blob itself.

mod common;

use commons_node::store::AsyncStore;
use std::{sync::Arc, time::Duration};

use commons_node::{
    net::Host,
    store::{Store, StoreOptions},
    transfer::{fetch_blob, TransferStats},
};

const SIZE: usize = 48 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_fetch_resumes_and_receives_at_most_2_percent_extra() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let original = common::pattern(SIZE, 0x9e37_79b9_7f4a_7c15);
    let (source, hash) = common::store_with_blob(tmp.path(), "a", &original);
    let seeder = common::serving_node(source.clone()).await;

    let store = Arc::new(Store::open(tmp.path().join("b"), StoreOptions::default()).expect("b"));
    let stats = Arc::new(TransferStats::default());
    let connect = |host: Host| {
        let seeder = seeder.clone();
        async move {
            host.connect(seeder.peer_id(), seeder.listen_addrs().await)
                .await
                .expect("connect");
            host
        }
    };
    let first = connect(common::client_node().await).await;
    let task = {
        let (store, stats, first) = (store.clone(), stats.clone(), first.clone());
        let peer = seeder.peer_id();
        tokio::spawn(async move {
            fetch_blob(
                &first,
                &AsyncStore::new(store.clone()),
                peer,
                hash,
                &stats,
                Arc::new(|_| {}),
            )
            .await
        })
    };
    // Interrupt once about half the spans are stored.
    let spans = store.span_count(SIZE as u64);
    loop {
        if let Some(meta) = store.blob(&hash).expect("db") {
            let missing: u64 = store
                .missing_spans(meta.id, meta.size)
                .expect("missing")
                .iter()
                .map(|r| r.end - r.start)
                .sum();
            if missing <= spans / 2 {
                break;
            }
        }
        assert!(
            !task.is_finished(),
            "the fetch ended before it could be interrupted"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    task.abort();
    drop(first); // the connection goes with the host
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after_first = stats.total().bytes_received;
    assert!(after_first < SIZE as u64, "interrupted before the end");

    // A new host (new connection) resumes with the missing spans only.
    let second = connect(common::client_node().await).await;
    fetch_blob(
        &second,
        &AsyncStore::new(store.clone()),
        seeder.peer_id(),
        hash,
        &stats,
        Arc::new(|_| {}),
    )
    .await
    .expect("resume");
    let total = stats.total().bytes_received;
    let ratio = total as f64 / SIZE as f64;
    eprintln!("resume: received {total} bytes for {SIZE} ({ratio:.4}×)");
    assert!(
        ratio <= 1.02,
        "received {total} bytes for {SIZE}: {ratio:.4}×"
    );
    let mut out = Vec::new();
    store.read_blob_verified(&hash, &mut out).expect("complete");
    assert!(out == original);
}
