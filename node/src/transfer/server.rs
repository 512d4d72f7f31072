//! Serving `/commons/transfer/1`: answer each request stream with verified ranges.
//!
//! Complete blobs are served whole; a blob still being fetched is served from the spans
//! already verified (seeding while downloading), and `Have` requests say which those are.
//! Every chunk group is checked again against the tree as it is encoded, so bit rot in our
//! own store is never passed on. What one peer, and all peers together, may make the server
//! do (requests in progress and per second, memory for responses, time to send a request,
//! time a write may stall) is bounded in [`ServeLimits`] (`gate.rs`), so neither a
//! misbehaving client nor a crowd of honest ones can exhaust the node.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use commons_protocol::wire::{
    chunk_ranges, encode_frame, BulkResponse, HaveResponse, HubFileResponse, Request,
    ResponseHeader, SignaturesResponse, UpstreamResponse, MAX_REQUEST_BYTES,
};
use libp2p::{
    futures::{stream, AsyncReadExt, AsyncWriteExt, StreamExt},
    PeerId,
};
use tokio::sync::mpsc;

use super::{
    exchange::answer_holders,
    gate::{response_memory, Admitted, Gate, ServeLimits},
    io::{read_frame, write_frame, ChannelWriter, CHUNK_QUEUE},
    TransferStats, TransferStream,
};
use crate::{
    discovery::Holders,
    net::{transfer_protocol, Host},
    store::{AsyncStore, BlobState, StoreError},
};

/// How long a refused stream is kept open for the client to finish sending its request and
/// read the `Busy` answer; bounded so refused streams cost the server little.
pub const REFUSED_LINGER: Duration = Duration::from_secs(2);

/// Registers the transfer protocol on `host` now, and returns the loop (to spawn) that
/// accepts transfer streams and serves them from `store` until the host stops. Holder
/// requests are answered from `holders`.
pub fn serve(
    store: AsyncStore,
    host: Host,
    stats: Arc<TransferStats>,
    holders: Arc<Holders>,
    limits: ServeLimits,
) -> Result<impl std::future::Future<Output = ()> + Send + 'static, crate::net::NetError> {
    // Registered here, before the caller spawns the loop or says it is ready: a peer that
    // opens a stream at once must not be told the protocol is unsupported.
    let libp2p = host
        .control()
        .accept(transfer_protocol())
        .map_err(|_| crate::net::NetError::Stopped)?
        .map(|(peer, s)| (peer, TransferStream::Libp2p(s)));
    // The same requests arrive on the bulk endpoint, if this node has one.
    let bulk = stream::unfold(host.take_bulk_incoming(), |rx| async move {
        let mut rx = rx?;
        let (peer, s) = rx.recv().await?;
        Some(((peer, TransferStream::Bulk(s)), Some(rx)))
    });
    Ok(async move {
        let mut incoming = std::pin::pin!(stream::select(libp2p, bulk));
        let gate = Gate::new(limits);
        while let Some((peer, stream)) = incoming.next().await {
            let admitted = gate.admit(peer, std::time::Instant::now());
            let (store, stats, gate) = (store.clone(), stats.clone(), gate.clone());
            let (host, holders) = (host.clone(), holders.clone());
            tokio::spawn(async move {
                match admitted {
                    Ok(admitted) => {
                        let ctx = Context {
                            host: &host,
                            holders: &holders,
                            stats: &stats,
                            gate: &gate,
                            limits,
                        };
                        handle(store, ctx, peer, stream, admitted).await;
                    }
                    Err(why) => {
                        tracing::debug!(%peer, ?why, "busy: over a per-peer limit");
                        let mut stream = stream;
                        let _ =
                            write_frame(&mut stream, &encode_frame(&ResponseHeader::Busy)).await;
                        let _ = stream.close().await;
                        // Read what the client still sends (its request) rather than stop
                        // its side at once: a stopped stream fails the client's write, and
                        // it would take a plain `Busy` for a broken peer.
                        until_released(&mut stream, REFUSED_LINGER).await;
                    }
                }
            });
        }
    })
}

/// What every request's handler shares.
struct Context<'a> {
    host: &'a Host,
    holders: &'a Holders,
    stats: &'a TransferStats,
    gate: &'a Gate,
    limits: ServeLimits,
}

/// Serves one request stream; every failure just ends the stream (and is logged). The
/// request counts as in progress for its peer until `admitted` is dropped.
async fn handle(
    store: AsyncStore,
    ctx: Context<'_>,
    peer: PeerId,
    mut stream: TransferStream,
    admitted: Admitted,
) {
    let Context {
        host,
        holders,
        stats,
        gate,
        limits,
    } = ctx;
    if !admitted.wait.is_zero() {
        // Over its request rate: the peer's request waits its turn, unread.
        tokio::time::sleep(admitted.wait).await;
    }
    stats.update(peer, |s| s.requests_served += 1);
    let body = match tokio::time::timeout(
        limits.request_timeout,
        read_frame(&mut stream, MAX_REQUEST_BYTES),
    )
    .await
    {
        Ok(Ok(body)) => body,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "bad request frame");
            let _ = reply(&mut stream, &ResponseHeader::BadRequest(e.to_string())).await;
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "no request in time");
            return;
        }
    };
    let (hash, ranges) = match Request::decode(&body) {
        Ok(Request::Get { hash, ranges }) => (hash, ranges),
        Ok(Request::Holders { hash }) => {
            if let Ok(n) = answer_holders(host, holders, peer, hash, &mut stream).await {
                stats.update(peer, |s| s.bytes_sent += n);
            }
            return;
        }
        Ok(Request::Bulk) => {
            let answer = BulkResponse {
                port: host.bulk_port_for(peer).await,
            };
            if let Ok(n) = reply(&mut stream, &answer).await {
                stats.update(peer, |s| s.bytes_sent += n);
            }
            let _ = stream.close().await;
            return;
        }
        Ok(Request::Upstream { key }) => {
            let roots = store
                .run(move |s| s.upstream_roots(&key))
                .await
                .unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "store error while listing upstream roots");
                    Vec::new()
                });
            if let Ok(n) = reply(&mut stream, &UpstreamResponse { roots }).await {
                stats.update(peer, |s| s.bytes_sent += n);
            }
            let _ = stream.close().await;
            return;
        }
        Ok(Request::HubFile { id }) => {
            let blob = store
                .run(move |s| s.hub_file_held(&id.to_string()))
                .await
                .unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "store error while looking up a Hub file");
                    None
                });
            let fetching = blob.is_none() && crate::origin::downloading(&id.to_string());
            if let Ok(n) = reply(&mut stream, &HubFileResponse { blob, fetching }).await {
                stats.update(peer, |s| s.bytes_sent += n);
            }
            let _ = stream.close().await;
            return;
        }
        Ok(Request::Signatures { root }) => {
            let bundles = store
                .run(move |s| s.signatures(&root))
                .await
                .unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "store error while listing signatures");
                    Vec::new()
                });
            let answer = SignaturesResponse::within_limits(bundles);
            if let Ok(n) = reply(&mut stream, &answer).await {
                stats.update(peer, |s| s.bytes_sent += n);
            }
            let _ = stream.close().await;
            return;
        }
        Ok(Request::Have { hash }) => {
            // Lists the marks of a partial blob: a scan.
            let held = store
                .run(move |s| s.held_groups(&hash))
                .await
                .unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "store error while listing held ranges");
                    HaveResponse::NotFound
                });
            if let Ok(n) = reply(&mut stream, &held).await {
                stats.update(peer, |s| s.bytes_sent += n);
            }
            let _ = stream.close().await;
            return;
        }
        Err(e) => {
            let _ = reply(&mut stream, &ResponseHeader::BadRequest(e.to_string())).await;
            return;
        }
    };
    let asked = ranges.clone();
    let mut header = store
        .run(move |s| {
            Ok::<_, StoreError>(match s.blob(&hash)? {
                Some(meta) if meta.state == BlobState::Complete => {
                    ResponseHeader::Ok { size: meta.size }
                }
                // Seeding while downloading: the spans held so far, if they cover the
                // request.
                Some(meta) if s.can_serve_partial(&meta, &asked)? => {
                    ResponseHeader::Ok { size: meta.size }
                }
                Some(_) => ResponseHeader::NotComplete,
                None => ResponseHeader::NotFound,
            })
        })
        .await
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "store error while serving");
            ResponseHeader::Busy
        });
    // Its part of the send buffer before anything is sent: when the buffer is taken, the
    // request waits in line (and is answered `Busy` if that takes too long).
    let mut reserved = None;
    if let ResponseHeader::Ok { size } = header {
        reserved = gate.reserve(peer, response_memory(size, &ranges)).await;
        if reserved.is_none() {
            tracing::debug!(%peer, "busy: no room in the send buffer in time");
            header = ResponseHeader::Busy;
        }
    }
    let ok = matches!(header, ResponseHeader::Ok { .. });
    match reply(&mut stream, &header).await {
        Ok(n) => stats.update(peer, |s| s.bytes_sent += n),
        Err(_) => return,
    }
    if !ok {
        let _ = stream.close().await;
        return;
    }
    let ranges = chunk_ranges(&ranges);
    let (tx, mut rx) = mpsc::channel::<Bytes>(CHUNK_QUEUE);
    let encoder = tokio::task::spawn_blocking(move || {
        // On the blocking pool: this thread may use the store directly.
        let store = store.blocking();
        let mut out = ChannelWriter::new(tx);
        store.encode_ranges(&hash, &ranges, &mut out)?;
        store.touch(&hash)?;
        std::io::Write::flush(&mut out).map_err(crate::store::StoreError::Output)
    });
    while let Some(chunk) = rx.recv().await {
        let len = chunk.len() as u64;
        stats.limits.before_upload(peer, len).await;
        match tokio::time::timeout(limits.write_timeout, stream.write_bytes(chunk)).await {
            Ok(Ok(())) => stats.update(peer, |s| s.bytes_sent += len),
            _ => {
                tracing::debug!(%peer, "client stopped reading");
                return; // dropping rx stops the encoder
            }
        }
    }
    match encoder.await {
        Ok(Ok(())) => {
            let _ = stream.close().await;
            // The response may still sit in the transport's buffers: its part of the send
            // buffer is given back once the client has read it and let the stream go.
            until_released(&mut stream, limits.write_timeout).await;
            drop(reserved);
        }
        Ok(Err(e)) => {
            // Our own copy failed verification: stop without a clean close, so the
            // client sees a truncated response, never bad bytes.
            tracing::error!(%hash, error = %e, "refusing to serve data that fails verification");
        }
        Err(e) => tracing::error!(error = %e, "encoder task failed"),
    }
}

/// Waits, at most `limit`, until the client ends its side of `stream` (an honest client
/// drops the stream once it has read the whole response).
async fn until_released(stream: &mut TransferStream, limit: Duration) {
    let mut buf = [0u8; 64];
    let _ = tokio::time::timeout(limit, async {
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

async fn reply(
    stream: &mut TransferStream,
    header: &impl serde::Serialize,
) -> std::io::Result<u64> {
    let frame = encode_frame(header);
    write_frame(stream, &frame).await?;
    Ok(frame.len() as u64)
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use commons_protocol::{wire::GroupRange, Hash};
    use libp2p::{identity::Keypair, Stream};

    use super::*;
    use crate::{
        discovery::DiscoveryConfig,
        net::split_peer_addr,
        store::{NoProgress, Store, StoreOptions},
    };

    async fn host(listen: bool) -> Host {
        let addrs: Vec<libp2p::Multiaddr> = if listen {
            vec!["/ip4/127.0.0.1/udp/0/quic-v1".parse().expect("addr")]
        } else {
            Vec::new()
        };
        // libp2p streams only: every request goes through the same accept loop either way.
        let config = DiscoveryConfig {
            bulk: false,
            ..DiscoveryConfig::default()
        };
        Host::start(Keypair::generate_ed25519(), &addrs, &config)
            .await
            .expect("host")
    }

    /// A host serving, with `limits`, a store that holds one blob of `size` bytes.
    async fn server(dir: &std::path::Path, size: usize, limits: ServeLimits) -> (Host, Hash) {
        let file = dir.join("blob");
        let data: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&file, data).expect("write");
        let store = Store::open(dir.join("store"), StoreOptions::default()).expect("store");
        let hash = store.add_file(&file, &NoProgress).expect("add").hash;
        let host = host(true).await;
        let serving = serve(
            AsyncStore::new(Arc::new(store)),
            host.clone(),
            Arc::default(),
            Arc::default(),
            limits,
        )
        .expect("serve");
        tokio::spawn(serving);
        (host, hash)
    }

    /// A client host connected to `server`.
    async fn client_of(server: &Host) -> Host {
        let client = host(false).await;
        let addrs = server
            .listen_addrs()
            .await
            .iter()
            .filter_map(split_peer_addr)
            .map(|(_, a)| a)
            .collect();
        client
            .connect(server.peer_id(), addrs)
            .await
            .expect("connect");
        client
    }

    /// Opens a stream, asks for `groups` of `hash`, and returns the answer's header with
    /// the stream (the data, if any, unread).
    async fn ask(
        client: &Host,
        server: PeerId,
        hash: Hash,
        groups: u64,
    ) -> (ResponseHeader, Stream) {
        let mut stream = client
            .control()
            .open_stream(server, transfer_protocol())
            .await
            .expect("stream");
        let request = Request::Get {
            hash,
            ranges: vec![GroupRange {
                start: 0,
                end: Some(groups),
            }],
        };
        write_frame(&mut stream, &encode_frame(&request))
            .await
            .expect("request");
        let header = read_frame(&mut stream, commons_protocol::wire::MAX_HEADER_BYTES)
            .await
            .expect("header");
        (ResponseHeader::decode(&header).expect("a header"), stream)
    }

    #[tokio::test]
    async fn a_peer_over_its_request_rate_is_paced_then_refused_while_another_is_served() {
        let dir = tempfile::tempdir().expect("tempdir");
        let limits = ServeLimits {
            streams_per_peer: 8,
            requests_per_sec: 10,
            request_burst: 5,
            ..ServeLimits::default()
        };
        let (server, hash) = server(dir.path(), 64 * 1024, limits).await;
        let (flooder, honest) = (client_of(&server).await, client_of(&server).await);
        let peer = server.peer_id();
        let start = Instant::now();
        // 60 requests at once from one peer.
        let flood = (0..60).map(|_| {
            let flooder = flooder.clone();
            async move {
                let (header, mut stream) = ask(&flooder, peer, hash, 1).await;
                let mut data = Vec::new();
                let _ = stream.read_to_end(&mut data).await;
                (header, start.elapsed())
            }
        });
        let flood = tokio::spawn(libp2p::futures::future::join_all(flood));
        // Meanwhile another peer is answered at once.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let asked = Instant::now();
        let (header, _stream) = ask(&honest, peer, hash, 1).await;
        assert_eq!(header, ResponseHeader::Ok { size: 64 * 1024 });
        assert!(
            asked.elapsed() < Duration::from_secs(2),
            "{:?}",
            asked.elapsed()
        );

        let answers = flood.await.expect("flood");
        let served: Vec<Duration> = answers
            .iter()
            .filter(|(h, _)| matches!(h, ResponseHeader::Ok { .. }))
            .map(|(_, t)| *t)
            .collect();
        let busy = answers
            .iter()
            .filter(|(h, _)| *h == ResponseHeader::Busy)
            .count();
        assert_eq!(served.len() + busy, 60, "{answers:?}");
        // Beyond its burst of 5, the peer is served at 10 requests per second at most:
        // the requests served took at least (served − 5) / 10 s in all.
        let last = served.iter().max().copied().unwrap_or_default();
        let floor = Duration::from_millis(100 * (served.len() as u64).saturating_sub(5));
        assert!(
            last >= floor.mul_f64(0.9),
            "{} served by {last:?}",
            served.len()
        );
        // The streams it opened beyond its 8 in progress were refused at once.
        assert!(busy >= 20, "only {busy} of 60 refused");
    }

    #[tokio::test]
    async fn a_fetch_answered_busy_asks_again_until_it_is_served() {
        let dir = tempfile::tempdir().expect("tempdir");
        let limits = ServeLimits {
            send_buffer_per_peer: 1 << 20,
            send_wait: Duration::from_millis(200),
            ..ServeLimits::default()
        };
        let size = 2 << 20;
        let (server, hash) = server(dir.path(), size, limits).await;
        let client = client_of(&server).await;
        let peer = server.peer_id();
        let groups = size as u64 / (16 * 1024);
        // A response the client does not read holds its whole share (as the requests of a
        // crashed client do until its connection times out)...
        let (header, unread) = ask(&client, peer, hash, groups).await;
        assert_eq!(header, ResponseHeader::Ok { size: size as u64 });
        let release = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            drop(unread);
        });
        // ... so the fetch is answered `Busy` at first, waits, asks again, and is served.
        let store = Store::open(dir.path().join("client"), StoreOptions::default()).expect("store");
        let store = AsyncStore::new(Arc::new(store));
        let stats = Arc::new(TransferStats::default());
        let progress: Arc<dyn Fn(u64) + Send + Sync> = Arc::new(|_| {});
        let range = vec![GroupRange {
            start: 0,
            end: Some(groups),
        }];
        let fetched = crate::transfer::client::fetch_round(
            &client, &store, peer, hash, range, None, false, &stats, &progress, None,
        )
        .await
        .expect("served after waiting");
        assert!(fetched);
        assert!(stats.total().requests_made >= 2, "asked again");
        release.await.expect("release");
    }

    #[tokio::test]
    async fn a_peer_beyond_its_share_of_the_send_buffer_waits_then_gets_busy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let limits = ServeLimits {
            send_buffer_per_peer: 1 << 20,
            send_wait: Duration::from_millis(300),
            ..ServeLimits::default()
        };
        let size = 2 << 20;
        let (server, hash) = server(dir.path(), size, limits).await;
        let (greedy, other) = (client_of(&server).await, client_of(&server).await);
        let peer = server.peer_id();
        let groups = size as u64 / (16 * 1024);
        // A response the client does not read holds the peer's whole share.
        let (header, unread) = ask(&greedy, peer, hash, groups).await;
        assert_eq!(header, ResponseHeader::Ok { size: size as u64 });
        let asked = Instant::now();
        let (header, _) = ask(&greedy, peer, hash, groups).await;
        assert_eq!(header, ResponseHeader::Busy);
        assert!(asked.elapsed() >= Duration::from_millis(300));
        // Other peers have their own share.
        let (header, mut stream) = ask(&other, peer, hash, groups).await;
        assert_eq!(header, ResponseHeader::Ok { size: size as u64 });
        let mut data = Vec::new();
        stream.read_to_end(&mut data).await.expect("data");
        assert!(data.len() as u64 > size as u64, "the whole encoding");
        // Once the client lets the unread response go, its share comes back.
        drop(unread);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (header, _) = ask(&greedy, peer, hash, 1).await;
            if header != ResponseHeader::Busy {
                assert_eq!(header, ResponseHeader::Ok { size: size as u64 });
                break;
            }
            assert!(Instant::now() < deadline, "the share never came back");
        }
    }
}
