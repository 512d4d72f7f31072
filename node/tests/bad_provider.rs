//! A provider that sends bad data: the fetch stops at the first bad group, names the peer
//! and offset, stores none of the bad bytes, and an honest provider then completes the blob.

mod common;

use commons_node::store::AsyncStore;
use std::{fs, sync::Arc};

use common::{bad_provider, client_node, serving_node, Lie};
use commons_node::{
    store::{BlobState, NoProgress, Store, StoreOptions},
    transfer::{fetch_blob, FetchError, TransferStats},
};

const SIZE: usize = 3 * 256 * 1024 + 5000;

fn data() -> Vec<u8> {
    (0..SIZE)
        .map(|i| (i % 251) as u8 ^ (i / 4096) as u8)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_data_is_refused_and_an_honest_provider_completes_the_blob() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let original = data();
    fs::write(tmp.path().join("f"), &original).expect("write");
    let source =
        Arc::new(Store::open(tmp.path().join("source"), StoreOptions::default()).expect("store"));
    let hash = source
        .add_file(&tmp.path().join("f"), &NoProgress)
        .expect("add")
        .hash;

    for lie in [
        Lie::FlipDataByte,
        Lie::FlipParentHash,
        Lie::Truncate,
        Lie::WrongSize,
    ] {
        let fetcher_dir = tmp.path().join(format!("fetcher-{lie:?}"));
        let store = Arc::new(Store::open(&fetcher_dir, StoreOptions::default()).expect("store"));
        let bad = bad_provider(source.clone(), hash, SIZE as u64, lie).await;
        let client = client_node().await;
        client
            .connect(bad.peer_id(), bad.listen_addrs().await)
            .await
            .expect("connect");
        let stats = Arc::new(TransferStats::default());
        let err = fetch_blob(
            &client,
            &AsyncStore::new(store.clone()),
            bad.peer_id(),
            hash,
            &stats,
            Arc::new(|_| {}),
        )
        .await
        .expect_err("bad data must fail");
        match (&err, lie) {
            (FetchError::BadData { peer, offset, .. }, Lie::FlipDataByte) => {
                assert_eq!(*peer, bad.peer_id());
                // The last byte of a response is in the last group it asked for.
                assert!(
                    offset % 16384 == 0 && *offset < SIZE as u64,
                    "offset {offset}"
                );
                assert!(err.to_string().contains(&bad.peer_id().to_string()));
            }
            (FetchError::BadData { .. }, Lie::FlipParentHash | Lie::WrongSize) => {}
            (FetchError::Truncated { .. }, Lie::Truncate) => {}
            (other, lie) => panic!("{lie:?}: unexpected {other:?}"),
        }
        assert!(err.peer_misbehaved() || matches!(lie, Lie::Truncate));

        // Nothing unverified was stored: every stored span equals the original bytes.
        let meta = store.blob(&hash).expect("db");
        if let Some(meta) = meta {
            assert_eq!(meta.state, BlobState::Partial);
            let spans = store.span_count(meta.size);
            let missing = store.missing_spans(meta.id, meta.size).expect("missing");
            for index in (0..spans).filter(|i| !missing.iter().any(|r| r.contains(i))) {
                let row = store.read_span(meta.id, index).expect("db").expect("row");
                let start = index as usize * store.span_bytes() as usize;
                assert!(
                    row[..] == original[start..start + row.len()],
                    "{lie:?}: span {index}"
                );
            }
        }

        // An honest provider completes it, fetching only what is missing.
        let honest = serving_node(source.clone()).await;
        client
            .connect(honest.peer_id(), honest.listen_addrs().await)
            .await
            .expect("connect");
        fetch_blob(
            &client,
            &AsyncStore::new(store.clone()),
            honest.peer_id(),
            hash,
            &stats,
            Arc::new(|_| {}),
        )
        .await
        .expect("honest fetch");
        let mut out = Vec::new();
        store.read_blob_verified(&hash, &mut out).expect("complete");
        assert!(out == original, "{lie:?}: complete and identical");
    }
}
