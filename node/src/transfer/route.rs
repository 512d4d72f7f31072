//! Which path a request takes to a peer: its bulk endpoint when it has one we can reach
//! (`net::bulk`: QUIC of our own, AES-GCM; `docs/protocol.md`), else a libp2p stream on the
//! host's connection. Both carry the same frames; the answer is the same either way.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use commons_protocol::wire::{BulkResponse, Request, ResponseHeader, MAX_BULK_BYTES};
use libp2p::{
    futures::{AsyncRead, AsyncWrite, AsyncWriteExt},
    PeerId, Stream,
};

use super::exchange::ask;
use crate::net::{bulk::BulkStream, transfer_protocol, Host};

/// A request stream, over whichever path it took.
#[derive(Debug)]
pub enum TransferStream {
    /// A libp2p stream on the host's connection.
    Libp2p(Stream),
    /// A stream on the bulk endpoint.
    Bulk(BulkStream),
}

impl TransferStream {
    /// Whether the stream is on the bulk endpoint.
    pub fn is_bulk(&self) -> bool {
        matches!(self, Self::Bulk(_))
    }

    /// Writes all of `chunk`; on the bulk endpoint without copying it.
    pub async fn write_bytes(&mut self, chunk: Bytes) -> io::Result<()> {
        match self {
            Self::Libp2p(s) => s.write_all(&chunk).await,
            Self::Bulk(s) => s.write_chunk(chunk).await,
        }
    }
}

impl AsyncRead for TransferStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Libp2p(s) => Pin::new(s).poll_read(cx, buf),
            Self::Bulk(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for TransferStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Libp2p(s) => Pin::new(s).poll_write(cx, buf),
            Self::Bulk(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Libp2p(s) => Pin::new(s).poll_flush(cx),
            Self::Bulk(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Libp2p(s) => Pin::new(s).poll_close(cx),
            Self::Bulk(s) => Pin::new(s).poll_close(cx),
        }
    }
}

/// Times a libp2p stream open is tried again after an I/O failure: libp2p-stream fails
/// every open waiting on a peer when any dial to it fails, a hole punch's too, while the
/// relayed connection still works (seen in the NAT lab: fetches failed mid-punch).
const OPEN_RETRIES: u32 = 2;
/// The pause before each retry.
const OPEN_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(250);

/// Opens a stream for a data request to `peer`: on its bulk endpoint if it has one we can
/// reach, else on libp2p.
pub async fn open_data_stream(host: &Host, peer: PeerId) -> Result<TransferStream, String> {
    if let Some(stream) = open_bulk(host, peer).await {
        return Ok(TransferStream::Bulk(stream));
    }
    let mut retries = 0;
    loop {
        match host.control().open_stream(peer, transfer_protocol()).await {
            Ok(stream) => return Ok(TransferStream::Libp2p(stream)),
            Err(libp2p_stream::OpenStreamError::Io(e)) if retries < OPEN_RETRIES => {
                retries += 1;
                tracing::debug!(%peer, error = %e, "stream open failed; trying again");
                tokio::time::sleep(OPEN_RETRY_PAUSE).await;
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// A stream on `peer`'s bulk endpoint, or `None` (then libp2p is used). The endpoint's
/// address is asked of the peer over libp2p and remembered. A remembered address that
/// fails is forgotten (the peer may have restarted on another port: the next request asks
/// again); a peer without an endpoint, or whose freshly given one cannot be reached, is
/// not asked again for [`crate::net::bulk::BULK_RETRY_AFTER`].
async fn open_bulk(host: &Host, peer: PeerId) -> Option<BulkStream> {
    let bulk = host.bulk()?;
    let (addr, fresh) = match bulk.route(&peer) {
        Some(Some(addr)) => (addr, false),
        Some(None) => return None,
        None => {
            let addr = locate(host, peer).await;
            bulk.set_route(peer, addr);
            (addr?, true)
        }
    };
    match bulk.open_stream(peer, addr).await {
        Ok(stream) => Some(stream),
        Err(e) => {
            tracing::debug!(%peer, error = %e, "bulk endpoint unreachable; using libp2p");
            if fresh {
                bulk.set_route(peer, None);
            } else {
                bulk.forget_route(&peer);
            }
            None
        }
    }
}

/// Asks `peer` for its bulk port; the address is that port on the IP we reach it at.
async fn locate(host: &Host, peer: PeerId) -> Option<SocketAddr> {
    let body = ask(host, peer, &Request::Bulk, MAX_BULK_BYTES).await.ok()?;
    let port = match BulkResponse::decode(&body) {
        Ok(BulkResponse { port }) => port?,
        // A peer that predates `Bulk` answers `BadRequest`.
        Err(_) => {
            if !matches!(
                ResponseHeader::decode(&body),
                Ok(ResponseHeader::BadRequest(_))
            ) {
                tracing::debug!(%peer, "malformed bulk answer");
            }
            return None;
        }
    };
    let ip = host.remote_ip(peer).await?;
    Some(SocketAddr::new(ip, port))
}
