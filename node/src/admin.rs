//! The admin socket: how a running node serves the [`crate::api`] to the CLI (and anything
//! else of its user) without the store being opened a second time, which RocksDB refuses.
//!
//! `<data dir>/admin.sock`, mode 0600, so only the node's own user can use it and nothing
//! on the network can. The protocol is [`crate::api::Client`]'s: one JSON request line, then
//! progress lines and one `ok` or `error` line. A client that closes its side (Ctrl-C on
//! `commons get`) cancels the work: it is stopped, not left running behind the user's back.

use std::{
    os::unix::net::UnixStream,
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{UnixListener, UnixStream as AsyncUnixStream},
    sync::{mpsc, Semaphore},
};

use crate::{
    api::{
        dispatch, read_line, ApiError, ErrorKind, Frame, Progress, ProgressEvent, ProgressSink,
        Request, ADMIN_SOCKET,
    },
    node::Node,
};

/// Longest request line accepted, in bytes.
pub const MAX_REQUEST_LINE: usize = 64 * 1024;
/// Progress events queued per request; more are dropped (the result never is).
pub const PROGRESS_QUEUE: usize = 64;
/// Admin connections served at once; more wait to be accepted.
pub const MAX_ADMIN_CONNECTIONS: usize = 64;
/// Time a client has to send its request line.
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Binds `<data_dir>/admin.sock` (mode 0600), replacing a stale socket from a node that
/// died. Bound before the node says it is ready, so the CLI can use it from then on.
pub fn bind_admin(data_dir: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let path = data_dir.join(ADMIN_SOCKET);
    if path.exists() && UnixStream::connect(&path).is_err() {
        std::fs::remove_file(&path)?;
    }
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// What a node serves on its socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serving {
    /// Every request: the running node (`commons node run`).
    Everything,
    /// Quick reads only ([`Request::is_quick_read`]): a one-shot command holding the store,
    /// which must not take on others' long work and end it when it exits.
    QuickReads,
}

/// Answers requests on `listener` until the task is dropped.
pub async fn serve_admin(
    listener: UnixListener,
    node: Node,
    serving: Serving,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(MAX_ADMIN_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return Ok(());
        };
        let (conn, _) = listener.accept().await?;
        let node = node.clone();
        tokio::spawn(async move {
            let _slot = slot;
            handle(conn, node, serving).await;
        });
    }
}

/// Progress of one request, queued for its connection without ever blocking the work
/// (events are dropped when the queue is full).
struct Events {
    tx: mpsc::Sender<Frame<serde_json::Value>>,
    /// Set when the client went away: long blocking work checks it.
    gone: Arc<AtomicBool>,
}

impl ProgressSink for Events {
    fn event(&self, event: ProgressEvent) {
        let _ = self.tx.try_send(Frame::Progress(event));
    }
    fn cancelled(&self) -> bool {
        self.gone.load(Ordering::Relaxed)
    }
}

/// Ends a request's work when its connection's handler ends, however it ends (the client
/// went away, the node shuts down): the task is aborted and long blocking work sees
/// `cancelled()`.
struct StopWork {
    gone: Arc<AtomicBool>,
    work: tokio::task::AbortHandle,
}

impl Drop for StopWork {
    fn drop(&mut self) {
        self.gone.store(true, Ordering::Relaxed);
        self.work.abort();
    }
}

async fn handle(conn: AsyncUnixStream, node: Node, serving: Serving) {
    let (read, mut write) = conn.into_split();
    let mut reader = tokio::io::BufReader::new(read);
    let mut line = String::new();
    let read = tokio::time::timeout(
        REQUEST_TIMEOUT,
        read_line(&mut reader, &mut line, MAX_REQUEST_LINE),
    )
    .await;
    let request = match read {
        Ok(Ok(_)) => serde_json::from_str::<Request>(&line)
            .map_err(|e| {
                ApiError::new(
                    ErrorKind::InvalidInput,
                    format!("malformed admin request: {e}"),
                )
            })
            .and_then(|request| {
                if serving == Serving::QuickReads && !request.is_quick_read() {
                    return Err(ApiError::new(
                        ErrorKind::Busy,
                        "the store is held by another commons command, which answers only \
                         `ls`, `name ls` and `mirror ls` meanwhile: wait for it to end, or \
                         run `commons node run` so that commands share the store",
                    ));
                }
                Ok(request)
            }),
        Ok(Err(e)) => Err(ApiError::new(ErrorKind::InvalidInput, e.to_string())),
        Err(_) => return, // no request in time: the slot goes to someone else
    };
    let (tx, mut rx) = mpsc::channel(PROGRESS_QUEUE);
    let gone = Arc::new(AtomicBool::new(false));
    let events = Progress::new(Arc::new(Events {
        tx: tx.clone(),
        gone: gone.clone(),
    }));
    let work = tokio::spawn(async move {
        let reply = match request {
            Ok(request) => dispatch(&node, request, events).await,
            Err(e) => Err(e),
        };
        let frame = match reply {
            Ok(value) => Frame::Ok(value),
            Err(e) => Frame::Error(e),
        };
        let _ = tx.send(frame).await;
    });
    let _stop = StopWork {
        gone: gone.clone(),
        work: work.abort_handle(),
    };
    // A client keeps its side open until it has the answer; its end means nobody wants
    // the answer. What it sends after its request is ignored; a small buffer keeps that
    // cheap.
    let mut rest = reader.into_inner();
    let client_gone = async move {
        let mut ignored = [0u8; 64];
        while matches!(rest.read(&mut ignored).await, Ok(n) if n > 0) {}
    };
    tokio::pin!(client_gone);
    loop {
        let frame = tokio::select! {
            frame = rx.recv() => frame,
            () = &mut client_gone => None,
        };
        let Some(frame) = frame else {
            break;
        };
        let done = !matches!(frame, Frame::Progress(_));
        let mut out = serde_json::to_string(&frame).unwrap_or_else(|e| {
            let error = Frame::<()>::Error(ApiError::new(
                ErrorKind::Internal,
                format!("the node could not encode its answer: {e}"),
            ));
            serde_json::to_string(&error).unwrap_or_default()
        });
        out.push('\n');
        if write.write_all(out.as_bytes()).await.is_err() || done {
            break;
        }
    }
    // Whatever is still running was asked for by a client that is gone: `_stop` ends it.
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Client, List, NameRm, RemoteNode, Status, Verify};
    use crate::node::{NodeFlags, NodeSettings};

    /// A node on a fresh data dir, served on its admin socket (no network started).
    async fn served() -> (tempfile::TempDir, Client, Client) {
        let dir = tempfile::tempdir().expect("tempdir");
        let settings =
            NodeSettings::load(dir.path(), None, &NodeFlags::default()).expect("settings");
        let node = Node::open(settings).expect("open");
        let listener = bind_admin(dir.path()).expect("bind");
        tokio::spawn(serve_admin(listener, node.clone(), Serving::Everything));
        let remote = RemoteNode::find(dir.path()).expect("the socket answers");
        (dir, Client::Local(node), Client::Remote(remote))
    }

    /// The same error, with the same kind, in-process and through the socket.
    async fn same_error<C: crate::api::Call + Clone>(
        local: &Client,
        remote: &Client,
        request: C,
        kind: ErrorKind,
    ) {
        let here = local.call(request.clone(), Arc::new(())).await.err();
        let there = remote.call(request, Arc::new(())).await.err();
        assert_eq!(here.as_ref().map(|e| e.kind), Some(kind), "{here:?}");
        assert_eq!(here, there, "the error crosses the socket unchanged");
    }

    #[tokio::test]
    async fn each_error_kind_keeps_its_kind_across_the_socket() {
        let (_dir, local, remote) = served().await;
        same_error(
            &local,
            &remote,
            Verify {
                target: Some("abcdef12".into()),
                publisher: None,
            },
            ErrorKind::NotFound,
        )
        .await;
        same_error(
            &local,
            &remote,
            Verify {
                target: Some("not a hash!".into()),
                publisher: None,
            },
            ErrorKind::InvalidInput,
        )
        .await;
        same_error(
            &local,
            &remote,
            NameRm {
                name: "org/none".into(),
            },
            ErrorKind::NotFound,
        )
        .await;
        same_error(
            &local,
            &remote,
            crate::api::Add {
                path: "relative/path".into(),
                name: None,
                hub_ids: None,
            },
            ErrorKind::InvalidInput,
        )
        .await;
        let dest = tempfile::tempdir().expect("dest");
        let file = dest.path().join("blob");
        std::fs::write(&file, b"exists").expect("write");
        let added = local
            .call(
                crate::api::Add {
                    path: file.clone(),
                    name: None,
                    hub_ids: None,
                },
                Arc::new(()),
            )
            .await
            .expect("add");
        // A file already there with other content (identical content would be kept).
        let other = dest.path().join("other");
        std::fs::write(&other, b"other").expect("write");
        same_error(
            &local,
            &remote,
            crate::api::Export {
                target: added.hash.to_string(),
                dest: other,
                force: false,
                include: Vec::new(),
                publisher: None,
                no_signature: false,
            },
            ErrorKind::AlreadyExists,
        )
        .await;
        // An in-process node is no running node: status is refused the same way.
        let here = local.call(Status {}, Arc::new(())).await.err();
        assert_eq!(here.map(|e| e.kind), Some(ErrorKind::NotRunning));
        // Replies cross unchanged too.
        let a = local.call(List::default(), Arc::new(())).await.expect("ls");
        let b = remote
            .call(List::default(), Arc::new(()))
            .await
            .expect("ls");
        assert_eq!(a, b);
        assert_eq!(a.blobs.len(), 1);
    }

    #[tokio::test]
    async fn a_malformed_or_oversized_request_gets_an_invalid_input_error() {
        let (dir, _local, _remote) = served().await;
        for request in [
            b"{\"op\":\"nonsense\"}\n".to_vec(),
            vec![b'x'; MAX_REQUEST_LINE + 10],
        ] {
            let mut conn = AsyncUnixStream::connect(dir.path().join(ADMIN_SOCKET))
                .await
                .expect("connect");
            conn.write_all(&request).await.expect("write");
            let mut reader = tokio::io::BufReader::new(conn);
            let mut line = String::new();
            read_line(&mut reader, &mut line, 1 << 20)
                .await
                .expect("answer");
            let frame: Frame<serde_json::Value> = serde_json::from_str(&line).expect("frame");
            assert!(
                matches!(&frame, Frame::Error(e) if e.kind == ErrorKind::InvalidInput),
                "{line}"
            );
        }
    }
}
