//! The local admin interface: how the CLI uses a running node instead of opening its
//! RocksDB store a second time (which RocksDB refuses).
//!
//! A Unix socket `<data dir>/admin.sock`, mode 0600, so only the node's own user can use it
//! and nothing on the network can. One request per connection: the client writes one JSON
//! line ([`AdminRequest`]); the node answers with JSON lines — [`AdminReply::Progress`]
//! while it works, then exactly one result or error.

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    sync::Arc,
};

use commons_protocol::Hash;
use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt},
    net::{UnixListener, UnixStream as AsyncUnixStream},
    sync::mpsc,
};

use crate::{
    export::ExportReport,
    fetch::{self, FetchContext, GetProgress, GetTarget},
    net::{Host, NetError, NetworkStatus, QueryCost},
    ops::{self, AddOutcome, GetOutcome, Include, Listing, PinOutcome, VerifyReport},
    status::{self, NodeInfo, NodeStatus},
    store::{GcReport, ImportProgress, NameEntry, RemoveReport, Store},
};

/// File name of the socket inside the data dir.
pub const ADMIN_SOCKET: &str = "admin.sock";
/// Longest request line accepted, in bytes.
pub const MAX_REQUEST_LINE: usize = 64 * 1024;
/// Progress events queued per request; more are dropped (the last result never is).
const PROGRESS_QUEUE: usize = 64;

/// What the CLI asks a running node.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum AdminRequest {
    /// Add a file or folder (absolute path).
    Add {
        /// What to add.
        path: PathBuf,
        /// A name to bind it to (`org/name[@revision]`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    /// Pin (`pin`) or unpin a dataset or blob.
    Pin {
        /// Hash, prefix, ticket or name.
        target: String,
        /// Pin or unpin.
        pin: bool,
    },
    /// Bind a name to a dataset.
    NameSet {
        /// `org/name[@revision]`.
        name: String,
        /// Hash, prefix, ticket or name of the dataset.
        target: String,
    },
    /// Remove a name.
    NameRm {
        /// `org/name[@revision]`.
        name: String,
    },
    /// List names.
    Names,
    /// List the store.
    List {
        /// Every blob, not only those added on their own.
        all: bool,
    },
    /// Fetch what a ticket or hash names.
    Get {
        /// A ticket, or a full hash to look up in the DHT.
        target: String,
        /// Glob patterns of files to fetch (all when empty).
        include: Vec<String>,
    },
    /// Write a dataset or blob to a folder (absolute path).
    Export {
        /// What to write: hash, unique prefix or ticket.
        target: String,
        /// Where.
        dest: PathBuf,
        /// Replace existing files.
        force: bool,
        /// Glob patterns of files to write (all when empty).
        include: Vec<String>,
    },
    /// Re-check stored data.
    Verify {
        /// One dataset or blob (hash, prefix or ticket), or everything.
        target: Option<String>,
    },
    /// Forget a dataset or blob.
    Remove {
        /// Hash, prefix or ticket.
        target: String,
    },
    /// Collect garbage.
    Gc {
        /// Only report.
        dry_run: bool,
        /// Collect only down to this many bytes (least recently used first).
        #[serde(default)]
        quota: Option<u64>,
    },
    /// Look up who holds a hash, in the DHT.
    Providers {
        /// The full hash.
        hash: Hash,
    },
    /// Routing table and connected peers.
    Peers,
    /// Per-peer transfer counters.
    Stats,
    /// The node's status: peers, data, traffic, disk use against the quota.
    Status,
}

/// One line of a node's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AdminReply {
    /// Work in progress: `total` bytes when known, `advance` more done.
    Progress {
        /// Total bytes, once known.
        total: Option<u64>,
        /// Bytes done since the last event.
        advance: u64,
        /// Providers a fetch is using now, when it changes.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        peers: Option<u64>,
    },
    /// Result of `Add`.
    Added(AddOutcome),
    /// Result of `Status`.
    Status(NodeStatus),
    /// Result of `Pin`.
    PinChanged(PinOutcome),
    /// Result of `NameSet`.
    Named(NameEntry),
    /// Result of `NameRm`.
    Unnamed {
        /// Whether the name was bound.
        existed: bool,
    },
    /// Result of `Names`.
    NamesListed {
        /// Every binding.
        names: Vec<NameEntry>,
    },
    /// Result of `List`.
    Listed(Listing),
    /// Result of `Get`.
    Got(GetOutcome),
    /// Result of `Export`: what was exported, and what was written.
    Exported {
        /// The dataset or blob.
        hash: Hash,
        /// What was written.
        outcome: ExportReport,
    },
    /// Result of `Verify`.
    Verified(VerifyReport),
    /// Result of `Remove`.
    Removed {
        /// What was removed.
        hash: Hash,
        /// What went with it.
        report: RemoveReport,
    },
    /// Result of `Gc`.
    Collected(GcReport),
    /// Result of `Providers`.
    ProvidersFound(ProvidersReport),
    /// Result of `Peers`.
    Network(NetworkStatus),
    /// Result of `Stats`: every peer this node exchanged data with since it started.
    /// (A struct variant: the reply is an internally tagged enum, which cannot hold a bare
    /// list.)
    Stats {
        /// One entry per peer.
        peers: Vec<PeerStatsEntry>,
    },
    /// The request failed; the message is for the user.
    Error {
        /// What went wrong.
        message: String,
    },
}

/// Why talking to the node failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// The socket failed mid-conversation.
    #[error("lost contact with the running node: {0}")]
    Io(#[from] std::io::Error),
    /// The node sent something this CLI does not understand (a different version?).
    #[error("the running node sent an unexpected answer: {0}")]
    Protocol(String),
    /// The node ran the request and it failed.
    #[error("{0}")]
    Failed(String),
}

/// A connection to a running node.
pub struct AdminClient {
    stream: UnixStream,
}

impl AdminClient {
    /// Connects to the node running on `data_dir`, if there is one. A socket file left by
    /// a node that died is not a running node.
    pub fn connect(data_dir: &Path) -> Option<Self> {
        UnixStream::connect(data_dir.join(ADMIN_SOCKET))
            .ok()
            .map(|stream| Self { stream })
    }

    /// Sends `request`, reports progress events (total, advance, providers in use) to
    /// `on_progress`, returns the result.
    pub fn call(
        mut self,
        request: &AdminRequest,
        mut on_progress: impl FnMut(Option<u64>, u64, Option<u64>),
    ) -> Result<AdminReply, AdminError> {
        let mut line =
            serde_json::to_string(request).map_err(|e| AdminError::Protocol(e.to_string()))?;
        line.push('\n');
        self.stream.write_all(line.as_bytes())?;
        for line in BufReader::new(self.stream).lines() {
            let reply: AdminReply =
                serde_json::from_str(&line?).map_err(|e| AdminError::Protocol(e.to_string()))?;
            match reply {
                AdminReply::Progress {
                    total,
                    advance,
                    peers,
                } => on_progress(total, advance, peers),
                AdminReply::Error { message } => return Err(AdminError::Failed(message)),
                result => return Ok(result),
            }
        }
        Err(AdminError::Protocol(
            "the node closed the connection".into(),
        ))
    }
}

/// Who holds a hash, as a DHT lookup found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvidersReport {
    /// The hash looked up.
    pub hash: Hash,
    /// Each provider: PeerId and the addresses known for it.
    pub providers: Vec<ProviderEntry>,
    /// What the lookup cost.
    pub cost: QueryCost,
}

/// One peer's transfer counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatsEntry {
    /// The peer.
    pub peer_id: String,
    /// Response bytes sent to it.
    pub bytes_sent: u64,
    /// Response bytes received from it.
    pub bytes_received: u64,
    /// Requests it made to us.
    pub requests_served: u64,
    /// Requests we made to it.
    pub requests_made: u64,
    /// Its responses that failed verification.
    pub bad_responses: u64,
}

/// One provider in a [`ProvidersReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderEntry {
    /// Its PeerId.
    pub peer_id: String,
    /// Its known addresses.
    pub addrs: Vec<String>,
}

impl ProvidersReport {
    /// Looks `hash` up, asking for every provider the DHT can return.
    pub async fn look_up(host: &Host, hash: Hash) -> Result<Self, NetError> {
        let lookup = host.find_providers(hash, usize::MAX, false).await?;
        Ok(Self {
            hash,
            providers: lookup
                .providers
                .into_iter()
                .map(|p| ProviderEntry {
                    peer_id: p.peer.to_string(),
                    addrs: p.addrs.iter().map(|a| a.to_string()).collect(),
                })
                .collect(),
            cost: lookup.cost,
        })
    }
}

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

/// Answers admin requests on `listener` until the task is dropped.
pub async fn serve_admin(
    listener: UnixListener,
    ctx: FetchContext,
    info: NodeInfo,
) -> std::io::Result<()> {
    loop {
        let (conn, _) = listener.accept().await?;
        tokio::spawn(handle(conn, ctx.clone(), info.clone()));
    }
}

/// Sends progress events without ever blocking the work (events are dropped when full).
#[derive(Clone)]
struct ProgressEvents(mpsc::Sender<AdminReply>);

impl ProgressEvents {
    fn send(&self, total: Option<u64>, advance: u64) {
        let _ = self.0.try_send(AdminReply::Progress {
            total,
            advance,
            peers: None,
        });
    }
}

impl ImportProgress for ProgressEvents {
    fn start(&self, _files: u64, bytes: u64) {
        self.send(Some(bytes), 0);
    }
    fn advance(&self, bytes: u64) {
        self.send(None, bytes);
    }
    /// The connection's handler drops the receiving end when its client goes away.
    fn cancelled(&self) -> bool {
        self.0.is_closed()
    }
}

impl GetProgress for ProgressEvents {
    fn total(&self, _files: u64, bytes: u64) {
        self.send(Some(bytes), 0);
    }
    fn already_have(&self, bytes: u64) {
        self.send(None, bytes);
    }
    fn received(&self, bytes: u64) {
        self.send(None, bytes);
    }
    fn peers(&self, n: usize) {
        let _ = self.0.try_send(AdminReply::Progress {
            total: None,
            advance: 0,
            peers: Some(n as u64),
        });
    }
}

impl crate::export::ExportProgress for ProgressEvents {
    fn start(&self, _files: u64, bytes: u64) {
        self.send(Some(bytes), 0);
    }
    fn file_done(&self, bytes: u64) {
        self.send(None, bytes);
    }
}

async fn handle(conn: AsyncUnixStream, ctx: FetchContext, info: NodeInfo) {
    let (read, mut write) = conn.into_split();
    let mut line = String::new();
    let mut reader = tokio::io::BufReader::new(read).take(MAX_REQUEST_LINE as u64);
    let request = match reader.read_line(&mut line).await {
        Ok(_) => serde_json::from_str::<AdminRequest>(&line)
            .map_err(|e| format!("malformed admin request: {e}")),
        Err(e) => Err(e.to_string()),
    };
    let (tx, mut rx) = mpsc::channel(PROGRESS_QUEUE);
    let events = ProgressEvents(tx.clone());
    let work = tokio::spawn(async move {
        let reply = match request {
            Ok(request) => run(request, ctx, &info, events).await,
            Err(message) => AdminReply::Error { message },
        };
        let _ = tx.send(reply).await;
    });
    // A client keeps its side open until it has the answer; its end (Ctrl-C on `commons
    // get`) means nobody wants the answer: the work is stopped, not left running behind
    // the user's back. What it reads is ignored; a small buffer keeps that cheap.
    let mut rest = reader.into_inner();
    let client_gone = async move {
        let mut ignored = [0u8; 64];
        while matches!(rest.read(&mut ignored).await, Ok(n) if n > 0) {}
    };
    tokio::pin!(client_gone);
    loop {
        let reply = tokio::select! {
            reply = rx.recv() => reply,
            () = &mut client_gone => None,
        };
        let Some(reply) = reply else {
            work.abort();
            break;
        };
        let done = !matches!(reply, AdminReply::Progress { .. });
        let mut out = serde_json::to_string(&reply).unwrap_or_else(|e| {
            let error = AdminReply::Error {
                message: format!("the node could not encode its answer: {e}"),
            };
            serde_json::to_string(&error).unwrap_or_default()
        });
        out.push('\n');
        if write.write_all(out.as_bytes()).await.is_err() {
            work.abort();
            break;
        }
        if done {
            break;
        }
    }
}

/// Runs store work on a blocking thread; an `Err` message becomes an error reply.
async fn blocking(
    ctx: FetchContext,
    work: impl FnOnce(&Store) -> Result<AdminReply, String> + Send + 'static,
) -> AdminReply {
    match tokio::task::spawn_blocking(move || work(&ctx.store)).await {
        Ok(Ok(reply)) => reply,
        Ok(Err(message)) => AdminReply::Error { message },
        Err(e) => failed(e),
    }
}

fn failed(e: impl std::fmt::Display) -> AdminReply {
    AdminReply::Error {
        message: e.to_string(),
    }
}

async fn run(
    request: AdminRequest,
    ctx: FetchContext,
    info: &NodeInfo,
    events: ProgressEvents,
) -> AdminReply {
    match request {
        AdminRequest::Add { path, name } => {
            let providers = ctx
                .host
                .listen_addrs()
                .await
                .iter()
                .map(|a| a.to_string())
                .collect();
            let publisher = ctx.publisher.clone();
            let reply = blocking(ctx, move |store| {
                let added = ops::add(store, &path, providers, &events)
                    .map_err(|e| format!("cannot add {}: {e}", path.display()))?;
                if let Some(name) = &name {
                    ops::set_name(store, name, &added.hash.to_string())?;
                }
                Ok(AdminReply::Added(added))
            })
            .await;
            if let (AdminReply::Added(added), Some(publisher)) = (&reply, publisher) {
                publisher.provide(added.hash);
            }
            reply
        }
        AdminRequest::Pin { target, pin } => {
            let publisher = ctx.publisher.clone();
            let reply = blocking(ctx, move |store| {
                ops::set_pinned(store, &target, pin).map(AdminReply::PinChanged)
            })
            .await;
            if let (AdminReply::PinChanged(outcome), Some(publisher)) = (&reply, publisher) {
                if pin {
                    publisher.provide(outcome.hash);
                } else {
                    publisher.withdraw(outcome.hash);
                }
            }
            reply
        }
        AdminRequest::NameSet { name, target } => {
            blocking(ctx, move |store| {
                ops::set_name(store, &name, &target).map(AdminReply::Named)
            })
            .await
        }
        AdminRequest::NameRm { name } => {
            blocking(ctx, move |store| {
                ops::unset_name(store, &name).map(|existed| AdminReply::Unnamed { existed })
            })
            .await
        }
        AdminRequest::Names => {
            blocking(ctx, move |store| {
                store
                    .names()
                    .map(|names| AdminReply::NamesListed { names })
                    .map_err(|e| e.to_string())
            })
            .await
        }
        AdminRequest::List { all } => {
            blocking(ctx, move |store| {
                ops::list(store, all)
                    .map(AdminReply::Listed)
                    .map_err(|e| e.to_string())
            })
            .await
        }
        AdminRequest::Get { target, include } => {
            let target = match GetTarget::parse(&target) {
                Ok(t) => t,
                Err(e) => return failed(e),
            };
            let include = match Include::parse(&include) {
                Ok(i) => i,
                Err(e) => return failed(e),
            };
            match fetch::get(&ctx, &target, &include, Arc::new(events)).await {
                Ok(outcome) => AdminReply::Got(outcome),
                Err(e) => failed(format!("cannot get {}: {e}", target.hash)),
            }
        }
        AdminRequest::Export {
            target,
            dest,
            force,
            include,
        } => {
            let include = match Include::parse(&include) {
                Ok(i) => i,
                Err(e) => return failed(e),
            };
            blocking(ctx, move |store| {
                let hash = ops::resolve(store, &target).map_err(|e| e.to_string())?;
                ops::export(store, &hash, &dest, force, &include, &events)
                    .map(|outcome| AdminReply::Exported { hash, outcome })
                    .map_err(|e| format!("cannot export {hash}: {e}"))
            })
            .await
        }
        AdminRequest::Verify { target } => {
            blocking(ctx, move |store| {
                let hash = target
                    .map(|t| ops::resolve(store, &t))
                    .transpose()
                    .map_err(|e| e.to_string())?;
                ops::verify(store, hash.as_ref(), &events)
                    .map(AdminReply::Verified)
                    .map_err(|e| e.to_string())
            })
            .await
        }
        AdminRequest::Remove { target } => {
            let publisher = ctx.publisher.clone();
            let reply = blocking(ctx, move |store| {
                let hash = ops::resolve(store, &target).map_err(|e| e.to_string())?;
                store
                    .remove(&hash)
                    .map(|report| AdminReply::Removed { hash, report })
                    .map_err(|e| format!("cannot remove {hash}: {e}"))
            })
            .await;
            if let (AdminReply::Removed { hash, .. }, Some(publisher)) = (&reply, publisher) {
                publisher.withdraw(*hash);
            }
            reply
        }
        AdminRequest::Providers { hash } => match ProvidersReport::look_up(&ctx.host, hash).await {
            Ok(report) => AdminReply::ProvidersFound(report),
            Err(e) => failed(format!("cannot look up {hash}: {e}")),
        },
        AdminRequest::Stats => AdminReply::Stats {
            peers: ctx
                .stats
                .snapshot()
                .into_iter()
                .map(|(peer, s)| PeerStatsEntry {
                    peer_id: peer.to_string(),
                    bytes_sent: s.bytes_sent,
                    bytes_received: s.bytes_received,
                    requests_served: s.requests_served,
                    requests_made: s.requests_made,
                    bad_responses: s.bad_responses,
                })
                .collect(),
        },
        AdminRequest::Status => match status::snapshot(&ctx, info).await {
            Ok(s) => AdminReply::Status(s),
            Err(message) => failed(message),
        },
        AdminRequest::Peers => match ctx.host.status().await {
            Ok(status) => AdminReply::Network(status),
            Err(e) => failed(e),
        },
        AdminRequest::Gc { dry_run, quota } => {
            blocking(ctx, move |store| {
                match quota {
                    Some(q) => store.gc_to_quota(q, dry_run),
                    None => store.gc(dry_run),
                }
                .map(AdminReply::Collected)
                .map_err(|e| e.to_string())
            })
            .await
        }
    }
}
