//! Helpers shared by the node's integration tests (each file uses some of them).
#![allow(dead_code)]

use commons_node::store::AsyncStore;
use std::sync::Arc;

use commons_node::{
    discovery::{DiscoveryConfig, Holders},
    net::{transfer_protocol, Host},
    store::Store,
    transfer::{serve, ServeLimits, TransferStats},
};
use commons_protocol::{
    wire::{chunk_ranges, encode_frame, HaveResponse, Request, ResponseHeader, MAX_REQUEST_BYTES},
    Hash,
};
use libp2p::{
    futures::{AsyncReadExt, AsyncWriteExt, StreamExt},
    identity::Keypair,
    Multiaddr,
};

/// A free loopback QUIC address.
pub fn loopback() -> Vec<Multiaddr> {
    vec!["/ip4/127.0.0.1/udp/0/quic-v1".parse().expect("addr")]
}

/// `size` bytes of a fixed, non-repeating pattern.
pub fn pattern(size: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..size)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// A store in `dir/name` holding `data` as one blob (added from the file `dir/f`).
pub fn store_with_blob(dir: &std::path::Path, name: &str, data: &[u8]) -> (Arc<Store>, Hash) {
    std::fs::write(dir.join("f"), data).expect("write");
    let store = Arc::new(
        Store::open(dir.join(name), commons_node::store::StoreOptions::default()).expect("store"),
    );
    let hash = store
        .add_file(&dir.join("f"), &commons_node::store::NoProgress)
        .expect("add")
        .hash;
    (store, hash)
}

/// A host listening on loopback, serving nothing yet.
pub async fn listening_node() -> Host {
    listening_node_with(&DiscoveryConfig::default()).await
}

/// A host listening on loopback with these settings.
pub async fn listening_node_with(config: &DiscoveryConfig) -> Host {
    Host::start(Keypair::generate_ed25519(), &loopback(), config)
        .await
        .expect("host")
}

/// A host that listens on loopback and serves `store` honestly.
pub async fn serving_node(store: Arc<Store>) -> Host {
    serving_node_with(store, &DiscoveryConfig::default()).await
}

/// A host with these settings that listens on loopback and serves `store` honestly.
pub async fn serving_node_with(store: Arc<Store>, config: &DiscoveryConfig) -> Host {
    let host = listening_node_with(config).await;
    spawn_server(store, &host);
    host
}

/// Serves `store` honestly on `host` (with default limits) until the task is aborted.
pub fn spawn_server(store: Arc<Store>, host: &Host) -> tokio::task::JoinHandle<()> {
    tokio::spawn(
        serve(
            AsyncStore::new(store),
            host.clone(),
            Arc::new(TransferStats::default()),
            Arc::new(Holders::default()),
            ServeLimits::default(),
        )
        .expect("serve"),
    )
}

/// A host that does not listen (a client).
pub async fn client_node() -> Host {
    client_node_with(&DiscoveryConfig::default()).await
}

/// A host with these settings that does not listen (a client).
pub async fn client_node_with(config: &DiscoveryConfig) -> Host {
    Host::start(Keypair::generate_ed25519(), &[], config)
        .await
        .expect("client")
}

/// How a bad provider damages its answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lie {
    /// The last data byte of every response.
    FlipDataByte,
    /// The first parent hash.
    FlipParentHash,
    /// Stops half-way through every response, as a provider that dies would.
    Truncate,
    /// Claims a size 16 KiB larger.
    WrongSize,
    /// Serves honestly until it has sent this many bytes in all, then stops mid-response
    /// and answers nothing more, as a provider killed half-way would.
    DieAfter(u64),
}

/// Serves blob `hash` of `size` bytes from `store`, every answer damaged as `lie` says.
pub async fn bad_provider(store: Arc<Store>, hash: Hash, size: u64, lie: Lie) -> Host {
    let host = listening_node().await;
    let mut incoming = host.control().accept(transfer_protocol()).expect("accept");
    let mut sent = 0u64;
    tokio::spawn(async move {
        while let Some((_, mut stream)) = incoming.next().await {
            if matches!(lie, Lie::DieAfter(limit) if sent >= limit) {
                drop(stream); // dead: every new request fails at once
                continue;
            }
            let mut prefix = [0u8; 4];
            if stream.read_exact(&mut prefix).await.is_err() {
                continue;
            }
            let len = u32::from_be_bytes(prefix).min(MAX_REQUEST_BYTES) as usize;
            let mut body = vec![0u8; len];
            if stream.read_exact(&mut body).await.is_err() {
                continue;
            }
            let ranges = match Request::decode(&body) {
                Ok(Request::Get { ranges, .. }) => ranges,
                Ok(Request::Have { .. }) => {
                    // It claims the whole blob, at the size it lies about.
                    let claimed = size + if lie == Lie::WrongSize { 16 * 1024 } else { 0 };
                    let held = HaveResponse::Held {
                        size: claimed,
                        complete: true,
                        groups: Vec::new(),
                    };
                    let _ = stream.write_all(&encode_frame(&held)).await;
                    let _ = stream.close().await;
                    continue;
                }
                _ => continue,
            };
            let mut encoded = Vec::new();
            store
                .encode_ranges(&hash, &chunk_ranges(&ranges), &mut encoded)
                .expect("encode");
            let mut claimed = size;
            match lie {
                Lie::FlipDataByte => {
                    let n = encoded.len();
                    encoded[n - 1] ^= 1;
                }
                Lie::FlipParentHash => encoded[0] ^= 1,
                Lie::Truncate => encoded.truncate(encoded.len() / 2),
                Lie::WrongSize => claimed += 16 * 1024,
                Lie::DieAfter(limit) => {
                    let left = limit.saturating_sub(sent) as usize;
                    encoded.truncate(left);
                }
            }
            sent += encoded.len() as u64;
            let _ = stream
                .write_all(&encode_frame(&ResponseHeader::Ok { size: claimed }))
                .await;
            let _ = stream.write_all(&encoded).await;
            let _ = stream.close().await;
        }
    });
    host
}
