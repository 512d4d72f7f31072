//! Answering for one file: `Range`, `ETag`, `HEAD`, and the verified, streamed body.

use std::{io, ops::Range, sync::Arc};

use axum::{
    body::{Body, Bytes},
    http::{header, HeaderMap, HeaderValue, Method, StatusCode},
    response::{IntoResponse, Response},
};
use commons_protocol::Hash;
use tokio::sync::{
    mpsc::{self, error::SendTimeoutError},
    OwnedSemaphorePermit,
};

use super::{error, Gateway, Request, MAX_RESPONSES};
use crate::store::AsyncStore;

mod range_header;

pub(crate) use range_header::Wanted;

/// Bytes per body chunk handed to the HTTP connection.
const BODY_CHUNK: usize = 256 * 1024;
/// Body chunks queued per response: with the one being filled, at most 768 KiB per client.
const BODY_QUEUE: usize = 2;
/// A client that takes nothing for this long loses its response (and its slot).
pub const CLIENT_STALL_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

/// What the request's `Range` header asks of a file of `size` bytes (the whole file when it
/// has none, or one that is not text): see [`range_header::wanted`].
pub(crate) fn wanted(headers: &HeaderMap, size: u64) -> Wanted {
    match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(value) => range_header::wanted(value, size),
        None => Wanted::All,
    }
}

/// The strong ETag of a blob: its BLAKE3 hash.
pub(crate) fn etag(hash: &Hash) -> String {
    format!("\"{hash}\"")
}

/// Answers `request` with blob `hash` of `size` bytes, plus `extra` headers. An `ETag` in
/// `extra` (the Hub's id of the file) is sent instead of the BLAKE3 one, and it is the tag
/// `If-None-Match` is compared with: a client revalidates with the tag it was given.
pub(crate) fn respond(
    gw: &Gateway,
    hash: Hash,
    size: u64,
    request: &Request,
    extra: HeaderMap,
) -> Response {
    let mut headers = extra;
    let tag = match headers.get(header::ETAG).and_then(|v| v.to_str().ok()) {
        Some(given) => given.to_string(),
        None => etag(&hash),
    };
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = HeaderValue::from_str(&tag) {
        headers.insert(header::ETAG, v);
    }
    let not_modified = request
        .headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"));
    if not_modified {
        return with_headers(StatusCode::NOT_MODIFIED, headers, Body::empty());
    }
    let (status, range) = match wanted(&request.headers, size) {
        Wanted::All => (StatusCode::OK, 0..size),
        Wanted::Part(r) => {
            let value = format!("bytes {}-{}/{size}", r.start, r.end - 1);
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(header::CONTENT_RANGE, v);
            }
            (StatusCode::PARTIAL_CONTENT, r)
        }
        Wanted::Unsatisfiable => {
            let mut response = error(
                StatusCode::RANGE_NOT_SATISFIABLE,
                &format!("the range lies outside the file ({size} bytes)"),
            )
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                response.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return response;
        }
    };
    headers.insert(
        header::CONTENT_LENGTH,
        HeaderValue::from(range.end - range.start),
    );
    let body = if request.method == Method::HEAD {
        Body::empty()
    } else {
        let Ok(permit) = gw.responses.clone().try_acquire_owned() else {
            let mut busy = error(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("busy: {MAX_RESPONSES} responses in progress; try again shortly"),
            )
            .into_response();
            busy.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return busy;
        };
        gw.stats
            .responses
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        verified_body(gw.store.clone(), hash, range, permit, gw.stats.clone())
    };
    with_headers(status, headers, body)
}

fn with_headers(status: StatusCode, headers: HeaderMap, body: Body) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// Streams bytes `range` of a blob, read and verified on a blocking thread as the client
/// takes them. A chunk group that fails verification ends the body with an error (the
/// client sees a short response, never bad bytes).
fn verified_body(
    store: AsyncStore,
    hash: Hash,
    range: Range<u64>,
    permit: OwnedSemaphorePermit,
    stats: Arc<super::GatewayStats>,
) -> Body {
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(BODY_QUEUE);
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        // On the blocking pool: this thread may use the store directly.
        let store = store.blocking();
        let _permit = permit;
        let mut out = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(BODY_CHUNK),
            runtime,
            stats,
        };
        let result = store
            .read_range_verified(&hash, range, &mut out)
            .and_then(|_| store.touch(&hash))
            .map_err(|e| io::Error::other(e.to_string()))
            .and_then(|_| out.send());
        if let Err(e) = result {
            if !tx.is_closed() {
                tracing::warn!(%hash, error = %e, "gateway: response ended early");
                let _ = tx.blocking_send(Err(e));
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Body::from_stream(stream)
}

/// Collects verified bytes into body chunks; fails once the client is gone, which stops the
/// read.
struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
    /// To wait for the client with a time limit from the blocking thread.
    runtime: tokio::runtime::Handle,
    /// Counts the bytes handed to the client.
    stats: Arc<super::GatewayStats>,
}

impl ChannelWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(BODY_CHUNK),
        ));
        let len = chunk.len() as u64;
        let sent = self
            .runtime
            .block_on(self.tx.send_timeout(Ok(chunk), CLIENT_STALL_LIMIT));
        if sent.is_ok() {
            self.stats
                .bytes
                .fetch_add(len, std::sync::atomic::Ordering::Relaxed);
        }
        sent.map_err(|e| match e {
            SendTimeoutError::Timeout(_) => io::Error::new(
                io::ErrorKind::TimedOut,
                "the client stopped reading; its response is dropped",
            ),
            SendTimeoutError::Closed(_) => {
                io::Error::new(io::ErrorKind::BrokenPipe, "the client went away")
            }
        })
    }
}

impl io::Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(BODY_CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == BODY_CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_range_header_is_read_when_it_is_text() {
        assert_eq!(wanted(&HeaderMap::new(), 10), Wanted::All);
        let mut headers = HeaderMap::new();
        headers.insert(header::RANGE, HeaderValue::from_static("bytes=-3"));
        assert_eq!(wanted(&headers, 10), Wanted::Part(7..10));
        headers.insert(
            header::RANGE,
            HeaderValue::from_bytes(b"bytes=\xff-").expect("opaque bytes"),
        );
        assert_eq!(wanted(&headers, 10), Wanted::All);
    }
}
