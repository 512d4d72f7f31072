//! [`Client`]: how a caller reaches a node, in-process or running. The caller holds one and
//! calls it; it never asks where the node is.
//!
//! The admin socket's protocol (served by [`crate::admin`]): one request per connection.
//! The client writes one JSON line, a [`Request`]; the node answers with JSON lines, each a
//! [`Frame`]: any number of `{"progress": …}`, then exactly one `{"ok": <reply>}` or
//! `{"error": {"kind": …, "message": …}}`. A client that closes its side cancels the work.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

use super::{ApiError, Call, ErrorKind, Progress, ProgressEvent, ProgressSink, Request};
use crate::node::Node;

/// File name of the admin socket inside the data dir.
pub const ADMIN_SOCKET: &str = "admin.sock";

/// Longest line either side accepts, in bytes (a listing of a large store is the longest
/// reply; a request is a few hundred bytes).
pub const MAX_FRAME_LINE: usize = 64 * 1024 * 1024;

/// One line of the node's answer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Frame<T> {
    /// Work in progress.
    Progress(ProgressEvent),
    /// The reply.
    Ok(T),
    /// The request failed.
    Error(ApiError),
}

/// A node to call: in this process, or the daemon running on the data dir.
#[derive(Clone)]
pub enum Client {
    /// Runs requests in this process, on a store it opened.
    Local(Node),
    /// Sends requests to the node running on the data dir.
    Remote(RemoteNode),
}

impl Client {
    /// Calls `request`, reporting progress to `progress`.
    pub async fn call<C: Call>(
        &self,
        request: C,
        progress: Arc<dyn ProgressSink>,
    ) -> Result<C::Reply, ApiError> {
        match self {
            Client::Local(node) => request.run(node, Progress::new(progress)).await,
            Client::Remote(remote) => remote.call(request, progress.as_ref()).await,
        }
    }

    /// Ends an in-process node's work (saves its network state, flushes what it fetched);
    /// nothing to do for a running node.
    pub async fn close(&self) {
        if let Client::Local(node) = self {
            node.close().await;
        }
    }
}

/// The node running on a data dir, reached through its admin socket.
#[derive(Debug, Clone)]
pub struct RemoteNode {
    socket: PathBuf,
}

fn lost(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        ErrorKind::Io,
        format!("lost contact with the running node: {e}"),
    )
}

impl RemoteNode {
    /// The node running on `data_dir`, if one answers there. A socket file left by a node
    /// that died is not a running node.
    pub fn find(data_dir: &Path) -> Option<Self> {
        let socket = data_dir.join(ADMIN_SOCKET);
        std::os::unix::net::UnixStream::connect(&socket)
            .ok()
            .map(|_| Self { socket })
    }

    /// Sends `request`, passes progress events to `progress`, returns the reply.
    pub async fn call<C: Call>(
        &self,
        request: C,
        progress: &dyn ProgressSink,
    ) -> Result<C::Reply, ApiError> {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(lost)?;
        let (read, mut write) = stream.into_split();
        let mut line = serde_json::to_string(&Into::<Request>::into(request))
            .map_err(|e| ApiError::new(ErrorKind::Internal, e.to_string()))?;
        line.push('\n');
        write.write_all(line.as_bytes()).await.map_err(lost)?;
        // `write` stays open until the answer is in: closing it tells the node to stop.
        let mut reader = tokio::io::BufReader::new(read);
        let mut line = String::new();
        while read_line(&mut reader, &mut line, MAX_FRAME_LINE)
            .await
            .map_err(lost)?
        {
            let frame: Frame<C::Reply> = serde_json::from_str(&line).map_err(|e| {
                ApiError::new(
                    ErrorKind::Internal,
                    format!("the running node sent an answer this command does not understand (a different version?): {e}"),
                )
            })?;
            match frame {
                Frame::Progress(event) => progress.event(event),
                Frame::Ok(reply) => return Ok(reply),
                Frame::Error(e) => return Err(e),
            }
        }
        drop(write);
        Err(lost("the node closed the connection"))
    }
}

/// Reads one line (without its newline) into `line`, at most `max` bytes; `false` at the
/// end of the stream. A longer line is an error, never an allocation beyond `max`.
pub(crate) async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
    line: &mut String,
    max: usize,
) -> std::io::Result<bool> {
    use tokio::io::AsyncReadExt;
    line.clear();
    let read = (&mut *reader).take(max as u64 + 1).read_line(line).await?;
    if line.len() > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a line longer than {max} bytes"),
        ));
    }
    if line.ends_with('\n') {
        line.pop();
    }
    Ok(read > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kind, in the form the socket carries it, decodes to the same kind (the
    /// in-process path needs no encoding). A kind added later must be listed in both the
    /// array and the match (the match makes the compiler point here).
    #[test]
    fn every_error_kind_crosses_the_wire_unchanged() {
        let kinds = [
            ErrorKind::NotFound,
            ErrorKind::InvalidInput,
            ErrorKind::AlreadyExists,
            ErrorKind::Corrupt,
            ErrorKind::Io,
            ErrorKind::Peer,
            ErrorKind::NotRunning,
            ErrorKind::Busy,
            ErrorKind::Cancelled,
            ErrorKind::Internal,
        ];
        for kind in kinds {
            // Exhaustive on purpose: a new kind fails to compile here, a reminder to list it
            // in the array too.
            match kind {
                ErrorKind::NotFound
                | ErrorKind::InvalidInput
                | ErrorKind::AlreadyExists
                | ErrorKind::Corrupt
                | ErrorKind::Io
                | ErrorKind::Peer
                | ErrorKind::NotRunning
                | ErrorKind::Busy
                | ErrorKind::Cancelled
                | ErrorKind::Internal => {}
            }
            let sent = Frame::<()>::Error(ApiError::new(kind, format!("{kind:?} happened")));
            let line = serde_json::to_string(&sent).expect("encode");
            let got: Frame<crate::api::Listing> = serde_json::from_str(&line).expect("decode");
            match got {
                Frame::Error(e) => {
                    assert_eq!(e.kind, kind, "{line}");
                    assert_eq!(e.message, format!("{kind:?} happened"));
                }
                _ => panic!("not an error: {line}"),
            }
        }
    }
}
