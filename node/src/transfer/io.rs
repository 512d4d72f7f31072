//! Bridges between libp2p's async streams and bao-tree's synchronous readers and writers.

use std::io::{self, Read, Write};

use bytes::Bytes;
use libp2p::futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// Bytes per chunk passed between the async and blocking sides.
pub const CHUNK_BYTES: usize = 64 * 1024;
/// Chunks queued between the two sides: bounds memory per stream to 256 KiB, and what an
/// interrupted fetch has read but not yet stored.
pub const CHUNK_QUEUE: usize = 4;

/// Reads one length-prefixed frame of at most `limit` bytes.
pub async fn read_frame<S: AsyncRead + Unpin>(stream: &mut S, limit: u32) -> io::Result<Vec<u8>> {
    let mut prefix = [0u8; 4];
    stream.read_exact(&mut prefix).await?;
    let len = commons_protocol::wire::frame_len(prefix, limit)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await?;
    Ok(body)
}

/// Writes one already-framed message.
pub async fn write_frame<S: AsyncWrite + Unpin>(stream: &mut S, frame: &[u8]) -> io::Result<()> {
    stream.write_all(frame).await?;
    stream.flush().await
}

/// A blocking `Write` that hands chunks to an async task.
pub struct ChannelWriter {
    tx: mpsc::Sender<Bytes>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    /// Writes into `tx`; the receiver writes to the stream.
    pub fn new(tx: mpsc::Sender<Bytes>) -> Self {
        Self {
            tx,
            buf: Vec::with_capacity(CHUNK_BYTES),
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(CHUNK_BYTES),
        ));
        self.tx
            .blocking_send(chunk)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "stream closed"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = (CHUNK_BYTES - self.buf.len()).min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK_BYTES {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// A blocking `Read` fed with chunks by an async task.
pub struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl ChannelReader {
    /// Reads what an async task sends into the paired sender.
    pub fn new(rx: mpsc::Receiver<io::Result<Bytes>>) -> Self {
        Self {
            rx,
            current: Bytes::new(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = self.current.len().min(buf.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        Ok(n)
    }
}

/// Copies an async stream into `tx` chunk by chunk until it ends; returns the bytes read.
/// Stops early (without error) when the reader side has gone away.
pub async fn pump<S: AsyncRead + Unpin>(
    stream: &mut S,
    tx: mpsc::Sender<io::Result<Bytes>>,
    idle: std::time::Duration,
    limits: &super::TransferLimits,
    fetch_limit: Option<&super::limit::RateLimit>,
    mut on_bytes: impl FnMut(u64),
) -> u64 {
    let mut total = 0;
    loop {
        let mut buf = vec![0u8; CHUNK_BYTES];
        let read = tokio::time::timeout(idle, stream.read(&mut buf)).await;
        let item = match read {
            Ok(Ok(0)) => return total,
            Ok(Ok(n)) => {
                buf.truncate(n);
                total += n as u64;
                on_bytes(n as u64);
                limits.after_download(n as u64).await;
                if let Some(limit) = fetch_limit {
                    let wait = limit.debit(n as u64);
                    if !wait.is_zero() {
                        tokio::time::sleep(wait).await;
                    }
                }
                Ok(Bytes::from(buf))
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "peer stopped sending",
            )),
        };
        let failed = item.is_err();
        if tx.send(item).await.is_err() || failed {
            return total;
        }
    }
}
