//! A provider that sends bad data: the fetch stops at the first bad group, names the peer
//! and offset, stores none of the bad bytes, and an honest provider then completes the blob.

use std::{fs, sync::Arc};

use commons_node::{
    discovery::DiscoveryConfig,
    net::{transfer_protocol, Host},
    store::{BlobState, NoProgress, Store, StoreOptions},
    transfer::{fetch_blob, serve, FetchError, ServeLimits, TransferStats},
};
use commons_protocol::{
    wire::{chunk_ranges, encode_frame, Request, ResponseHeader, MAX_REQUEST_BYTES},
    Hash,
};
use libp2p::{
    futures::{AsyncReadExt, AsyncWriteExt, StreamExt},
    identity::Keypair,
    Multiaddr,
};

const SIZE: usize = 3 * 256 * 1024 + 5000;

fn data() -> Vec<u8> {
    (0..SIZE)
        .map(|i| (i % 251) as u8 ^ (i / 4096) as u8)
        .collect()
}

fn loopback() -> Vec<Multiaddr> {
    vec!["/ip4/127.0.0.1/udp/0/quic-v1".parse().expect("addr")]
}

/// How the bad provider damages its answers.
#[derive(Clone, Copy, Debug)]
enum Lie {
    FlipDataByte,
    FlipParentHash,
    Truncate,
    WrongSize,
}

/// Serves `encoded` answers for one blob, damaged as `lie` says.
async fn bad_provider(store: Arc<Store>, hash: Hash, lie: Lie) -> Host {
    let host = Host::start(
        Keypair::generate_ed25519(),
        &loopback(),
        &DiscoveryConfig::default(),
    )
    .await
    .expect("host");
    let mut incoming = host.control().accept(transfer_protocol()).expect("accept");
    tokio::spawn(async move {
        while let Some((_, mut stream)) = incoming.next().await {
            let mut prefix = [0u8; 4];
            if stream.read_exact(&mut prefix).await.is_err() {
                continue;
            }
            let len = u32::from_be_bytes(prefix).min(MAX_REQUEST_BYTES) as usize;
            let mut body = vec![0u8; len];
            if stream.read_exact(&mut body).await.is_err() {
                continue;
            }
            let Ok(Request::Get { ranges, .. }) = Request::decode(&body) else {
                continue;
            };
            let mut encoded = Vec::new();
            store
                .encode_ranges(&hash, &chunk_ranges(&ranges), &mut encoded)
                .expect("encode");
            let mut size = SIZE as u64;
            match lie {
                // The last data byte of the response.
                Lie::FlipDataByte => {
                    let n = encoded.len();
                    encoded[n - 1] ^= 1;
                }
                Lie::FlipParentHash => encoded[0] ^= 1,
                Lie::Truncate => encoded.truncate(encoded.len() / 2),
                Lie::WrongSize => size += 16 * 1024,
            }
            let _ = stream
                .write_all(&encode_frame(&ResponseHeader::Ok { size }))
                .await;
            let _ = stream.write_all(&encoded).await;
            let _ = stream.close().await;
        }
    });
    host
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
        let bad = bad_provider(source.clone(), hash, lie).await;
        let client = Host::start(
            Keypair::generate_ed25519(),
            &[],
            &DiscoveryConfig::default(),
        )
        .await
        .expect("client");
        client
            .connect(bad.peer_id(), bad.listen_addrs().await)
            .await
            .expect("connect");
        let stats = Arc::new(TransferStats::default());
        let err = fetch_blob(
            &client,
            &store,
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
        let honest = Host::start(
            Keypair::generate_ed25519(),
            &loopback(),
            &DiscoveryConfig::default(),
        )
        .await
        .expect("honest");
        let serve_stats = Arc::new(TransferStats::default());
        tokio::spawn(serve(
            source.clone(),
            honest.clone(),
            serve_stats.clone(),
            Arc::default(),
            ServeLimits::default(),
        ));
        client
            .connect(honest.peer_id(), honest.listen_addrs().await)
            .await
            .expect("connect");
        fetch_blob(
            &client,
            &store,
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
