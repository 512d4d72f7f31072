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
    OwnedSemaphorePermit, Semaphore,
};

use super::{error, Gateway, Request, MAX_RESPONSES};
use crate::store::AsyncStore;

mod range_header;

pub(crate) use range_header::Wanted;

/// Bytes per body chunk handed to the HTTP connection, while [`super::MAX_BODY_BUFFER`] has room
/// (large chunks keep a fast client's wake-ups few: see the gateway benchmark).
const BODY_CHUNK: usize = 256 * 1024;
/// Bytes per body chunk when [`super::MAX_BODY_BUFFER`] is spent: with [`BODY_QUEUE`], the one
/// being filled and the one the connection writes, at most 64 KiB per response outside it.
const SMALL_BODY_CHUNK: usize = 16 * 1024;
/// Body chunks queued per response, besides the one being filled and the one being written.
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
        verified_body(
            gw.store.clone(),
            hash,
            range,
            permit,
            gw.body_buffer.clone(),
            gw.stats.clone(),
        )
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
    body_buffer: Arc<Semaphore>,
    stats: Arc<super::GatewayStats>,
) -> Body {
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(BODY_QUEUE);
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        // On the blocking pool: this thread may use the store directly.
        let store = store.blocking();
        let _permit = permit;
        let mut out = ChannelWriter::new(tx.clone(), runtime, body_buffer, stats);
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
/// read. A chunk is [`BODY_CHUNK`] bytes when the gateway's body buffer can hold it (the
/// bytes go back when the connection has written the chunk), else [`SMALL_BODY_CHUNK`].
struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    /// The chunk being filled.
    chunk: Option<BufferedChunk>,
    body_buffer: Arc<Semaphore>,
    /// To wait for the client with a time limit from the blocking thread.
    runtime: tokio::runtime::Handle,
    /// Counts the bytes handed to the client.
    stats: Arc<super::GatewayStats>,
}

/// A body chunk holding its share of the body buffer (none for a small chunk) until the
/// connection drops it.
struct BufferedChunk {
    bytes: Vec<u8>,
    /// Its size when full.
    limit: usize,
    _share: Option<OwnedSemaphorePermit>,
}

impl AsRef<[u8]> for BufferedChunk {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl ChannelWriter {
    fn new(
        tx: mpsc::Sender<io::Result<Bytes>>,
        runtime: tokio::runtime::Handle,
        body_buffer: Arc<Semaphore>,
        stats: Arc<super::GatewayStats>,
    ) -> Self {
        Self {
            tx,
            chunk: None,
            body_buffer,
            runtime,
            stats,
        }
    }

    /// The chunk being filled, started with the largest size the body buffer allows.
    fn chunk(&mut self) -> &mut BufferedChunk {
        let body_buffer = &self.body_buffer;
        self.chunk.get_or_insert_with(|| {
            let share = body_buffer
                .clone()
                .try_acquire_many_owned(BODY_CHUNK as u32)
                .ok();
            let limit = if share.is_some() {
                BODY_CHUNK
            } else {
                SMALL_BODY_CHUNK
            };
            BufferedChunk {
                bytes: Vec::with_capacity(limit),
                limit,
                _share: share,
            }
        })
    }

    fn send(&mut self) -> io::Result<()> {
        let Some(chunk) = self.chunk.take().filter(|c| !c.bytes.is_empty()) else {
            return Ok(());
        };
        let len = chunk.bytes.len() as u64;
        let chunk = Bytes::from_owner(chunk);
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
        let chunk = self.chunk();
        let n = data.len().min(chunk.limit - chunk.bytes.len());
        chunk.bytes.extend_from_slice(&data[..n]);
        if chunk.bytes.len() == chunk.limit {
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

    #[test]
    fn large_chunks_take_the_body_buffer_until_written_and_small_ones_need_none() {
        use std::io::Write;
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let (tx, mut rx) = mpsc::channel(8);
        let buffer = Arc::new(Semaphore::new(BODY_CHUNK));
        let mut out =
            ChannelWriter::new(tx, runtime.handle().clone(), buffer.clone(), Arc::default());
        let data = vec![7u8; BODY_CHUNK + 2 * SMALL_BODY_CHUNK];
        out.write_all(&data).expect("queued");
        let mut received = || {
            runtime
                .block_on(rx.recv())
                .expect("a chunk")
                .expect("bytes")
        };
        let large = received();
        assert_eq!(large.len(), BODY_CHUNK);
        assert_eq!(received().len(), SMALL_BODY_CHUNK, "the buffer is spent");
        assert_eq!(buffer.available_permits(), 0);
        drop(large);
        assert_eq!(
            buffer.available_permits(),
            BODY_CHUNK,
            "written: given back"
        );
        assert_eq!(received().len(), SMALL_BODY_CHUNK);
        // With the buffer free again, the next chunk is large.
        out.write_all(&data[..BODY_CHUNK]).expect("queued");
        out.send().expect("nothing left to send");
        assert_eq!(received().len(), BODY_CHUNK);
    }
}
