//! Serving `/commons/transfer/1`: answer each request stream with verified ranges.
//!
//! Complete blobs are served whole; a blob still being fetched is served from the spans
//! already verified (seeding while downloading), and `Have` requests say which those are.
//! Every chunk group is checked again against the tree as it is encoded, so bit rot in our
//! own store is never passed on. Limits (streams per peer, time to send a request, time a write may stall) are
//! named in [`ServeLimits`] so a misbehaving client cannot exhaust the node.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use commons_protocol::wire::{
    chunk_ranges, encode_frame, BulkResponse, HaveResponse, HubFileResponse, Request,
    ResponseHeader, SignaturesResponse, UpstreamResponse, MAX_REQUEST_BYTES,
};
use libp2p::{
    futures::{stream, AsyncWriteExt, StreamExt},
    PeerId,
};
use tokio::sync::mpsc;

use super::{
    exchange::answer_holders,
    io::{read_frame, write_frame, ChannelWriter, CHUNK_QUEUE},
    TransferStats, TransferStream,
};
use crate::{
    discovery::Holders,
    net::{transfer_protocol, Host},
    store::{AsyncStore, BlobState, StoreError},
};

/// Bounds on what one peer can make the server do.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// Requests one peer may have in progress at once; more get `Busy`.
    pub streams_per_peer: usize,
    /// Time a client has to send its request after opening a stream.
    pub request_timeout: Duration,
    /// Time one write to a client may stall before the stream is dropped.
    pub write_timeout: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            streams_per_peer: 16,
            request_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(30),
        }
    }
}

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
        let active: Arc<Mutex<HashMap<PeerId, usize>>> = Arc::default();
        while let Some((peer, stream)) = incoming.next().await {
            let admitted = {
                let mut active = active.lock().unwrap_or_else(|e| e.into_inner());
                let n = active.entry(peer).or_default();
                if *n < limits.streams_per_peer {
                    *n += 1;
                    true
                } else {
                    false
                }
            };
            let (store, stats, active) = (store.clone(), stats.clone(), active.clone());
            let (host, holders) = (host.clone(), holders.clone());
            tokio::spawn(async move {
                if admitted {
                    handle(store, &host, &holders, peer, stream, &stats, limits).await;
                    let mut active = active.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(n) = active.get_mut(&peer) {
                        *n -= 1;
                        if *n == 0 {
                            active.remove(&peer);
                        }
                    }
                } else {
                    let mut stream = stream;
                    let _ = write_frame(&mut stream, &encode_frame(&ResponseHeader::Busy)).await;
                    let _ = stream.close().await;
                }
            });
        }
    })
}

/// Serves one request stream; every failure just ends the stream (and is logged).
async fn handle(
    store: AsyncStore,
    host: &Host,
    holders: &Holders,
    peer: PeerId,
    mut stream: TransferStream,
    stats: &TransferStats,
    limits: ServeLimits,
) {
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
    let header = store
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
        }
        Ok(Err(e)) => {
            // Our own copy failed verification: stop without a clean close, so the
            // client sees a truncated response, never bad bytes.
            tracing::error!(%hash, error = %e, "refusing to serve data that fails verification");
        }
        Err(e) => tracing::error!(error = %e, "encoder task failed"),
    }
}

async fn reply(
    stream: &mut TransferStream,
    header: &impl serde::Serialize,
) -> std::io::Result<u64> {
    let frame = encode_frame(header);
    write_frame(stream, &frame).await?;
    Ok(frame.len() as u64)
}
