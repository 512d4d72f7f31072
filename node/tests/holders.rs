//! The holder exchange: a peer fetching a blob learns from its provider which other peers
//! fetched it, and can fetch from them: holders beyond what the DHT returns.

mod common;

use commons_node::store::AsyncStore;
use std::{sync::Arc, time::Duration};

use common::{client_node, serving_node};
use commons_node::{
    store::{NoProgress, Store, StoreOptions},
    transfer::{ask_holders, fetch_blob, TransferStats},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_fetcher_learns_of_the_first_and_fetches_from_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(tmp.path().join("f"), &data).expect("write");
    let open = |name: &str| {
        Arc::new(Store::open(tmp.path().join(name), StoreOptions::default()).expect("store"))
    };
    let (seed_store, first_store, second_store) = (open("seed"), open("first"), open("second"));
    let hash = seed_store
        .add_file(&tmp.path().join("f"), &NoProgress)
        .expect("add")
        .hash;
    let seed = serving_node(seed_store).await;
    let first = serving_node(first_store.clone()).await;
    let stats = Arc::new(TransferStats::default());

    // The first fetcher gets the blob from the seed, and asks it for other holders.
    first
        .connect(seed.peer_id(), seed.listen_addrs().await)
        .await
        .expect("connect");
    fetch_blob(
        &first,
        &AsyncStore::new(first_store.clone()),
        seed.peer_id(),
        hash,
        &stats,
        Arc::new(|_| {}),
    )
    .await
    .expect("first fetch");
    let known = ask_holders(&first, seed.peer_id(), hash)
        .await
        .expect("ask");
    assert!(known.is_empty(), "nobody else holds it yet: {known:?}");

    // The second asks the seed and is told about the first, with a usable address.
    let second = client_node().await;
    second
        .connect(seed.peer_id(), seed.listen_addrs().await)
        .await
        .expect("connect");
    let mut told = Vec::new();
    for _ in 0..40 {
        told = ask_holders(&second, seed.peer_id(), hash)
            .await
            .expect("ask");
        if !told.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(told.len(), 1, "{told:?}");
    assert_eq!(told[0].peer, first.peer_id());
    second
        .connect(told[0].peer, told[0].addrs.clone())
        .await
        .expect("dial the holder it was told about");
    fetch_blob(
        &second,
        &AsyncStore::new(second_store.clone()),
        told[0].peer,
        hash,
        &stats,
        Arc::new(|_| {}),
    )
    .await
    .expect("fetch from the first fetcher");
    let mut out = Vec::new();
    second_store
        .read_blob_verified(&hash, &mut out)
        .expect("complete and verified");
    assert!(out == data, "byte-identical");
}
