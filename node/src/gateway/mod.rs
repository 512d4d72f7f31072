//! The read-only HTTP gateway: complete, verified data for clients that only speak HTTP.
//!
//! - `GET /blob/<hash>`: a blob's bytes;
//! - `GET /dataset/<hash or org/name[@revision]>`: a JSON listing of a dataset's files;
//! - `GET /dataset/<hash or org/name[@revision]>/<path>`: one file of a dataset;
//! - the Hugging Face Hub endpoints `huggingface_hub` uses ([`hf`]), so `HF_ENDPOINT`
//!   can point at a mirror.
//!
//! Every file answer supports `HEAD`, single `Range` requests (206, or 416 when the range
//! lies outside the file), `ETag` (the BLAKE3 hash; the Hub's id on the Hub endpoints) and
//! `If-None-Match`. Bytes are read through the hash tree as they are sent (constant
//! memory); a chunk group that fails verification ends the response early instead of
//! sending bad bytes. With `fetch_missing`, data the node does not hold is fetched from the
//! network first (a `HEAD` of a dataset's file is answered from its manifest at once).

mod hf;
mod range;
pub mod stats;

use std::sync::Arc;

use axum::{
    extract::{Path, State},
    http::{header, HeaderMap, HeaderValue, Method, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use commons_protocol::{manifest::validate_path, Hash, Manifest, NameRef, TicketKind};
use serde::Serialize;

use crate::{
    api::Progress,
    fetch::{self, GetTarget},
    include::Include,
    node::Node,
    store::{AsyncStore, BlobState, Store, StoreError},
};

pub use crate::config::GatewayConfig;
pub use stats::GatewayStats;

/// What the handlers share.
#[derive(Clone)]
pub struct Gateway {
    store: AsyncStore,
    /// Present when missing data may be fetched (`fetch_missing`).
    fetcher: Option<Node>,
    /// One gateway-triggered fetch at a time: two requests for the same missing file do
    /// not race each other's writes, and a burst of requests cannot start a hundred fetches.
    fetching: Arc<tokio::sync::Mutex<()>>,
    /// Bodies being sent: each holds a blocking thread, so at most [`MAX_RESPONSES`].
    responses: Arc<tokio::sync::Semaphore>,
    /// Bytes of body chunks in memory, all responses together: [`MAX_BODY_BUFFER`].
    body_buffer: Arc<tokio::sync::Semaphore>,
    /// Manifests read lately (verified when read; content-addressed, so never stale).
    manifests: Arc<ManifestCache>,
    /// What it served, for `node status` and metrics.
    stats: Arc<GatewayStats>,
    /// Names it covers are served only with their publisher's signature.
    trust: Arc<commons_protocol::provenance::TrustPolicy>,
    /// (root, publisher) pairs whose signature verified: a signature checks ~2 MB of JSON
    /// for 10,000 files, and a Hub client asks twice per file. At most
    /// [`MAX_SIGNED_CACHE`]; emptied when full (datasets are immutable, so never stale).
    signed: Arc<std::sync::Mutex<std::collections::HashSet<(Hash, String)>>>,
    /// Largest file a request may make it fetch.
    fetch_max: u64,
    /// Time a connection has to send its request head.
    header_timeout: std::time::Duration,
}

/// Manifests the gateway keeps parsed, at most (a manifest is at most a few MiB).
const CACHED_MANIFESTS: usize = 16;

/// The last [`CACHED_MANIFESTS`] manifests read, by root.
#[derive(Debug, Default)]
struct ManifestCache(std::sync::Mutex<std::collections::VecDeque<(Hash, Arc<Manifest>)>>);

impl ManifestCache {
    fn get(&self, root: &Hash) -> Option<Arc<Manifest>> {
        let cached = self.0.lock().unwrap_or_else(|e| e.into_inner());
        cached
            .iter()
            .find(|(r, _)| r == root)
            .map(|(_, m)| m.clone())
    }

    fn insert(&self, root: Hash, manifest: Manifest) -> Arc<Manifest> {
        let manifest = Arc::new(manifest);
        let mut cached = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if cached.len() == CACHED_MANIFESTS {
            cached.pop_front();
        }
        cached.push_back((root, manifest.clone()));
        manifest
    }
}

/// Time a client has to send its request head (line and headers) on a connection.
pub const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Connections one client address may hold at once.
pub const MAX_CONNECTIONS_PER_IP: usize = 64;
/// Connections all clients may hold at once.
pub const MAX_CONNECTIONS: usize = 4096;

/// Open connections, per client address and in all; a slot is given back when dropped.
#[derive(Clone, Default)]
struct ConnectionSlots(Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>);

/// One open connection's place in [`ConnectionSlots`].
struct ConnectionSlot {
    slots: ConnectionSlots,
    ip: std::net::IpAddr,
}

impl ConnectionSlots {
    /// A slot for a connection from `ip`, unless it or everyone is at the limit. The map
    /// holds only addresses with open connections, so it is bounded by [`MAX_CONNECTIONS`].
    fn take(&self, ip: std::net::IpAddr) -> Option<ConnectionSlot> {
        let mut open = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let total: usize = open.values().sum();
        let mine = open.get(&ip).copied().unwrap_or(0);
        if total >= MAX_CONNECTIONS || mine >= MAX_CONNECTIONS_PER_IP {
            return None;
        }
        open.insert(ip, mine + 1);
        Some(ConnectionSlot {
            slots: self.clone(),
            ip,
        })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut open = self.slots.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Bodies the gateway sends at once; more requests get `503` with `Retry-After`. Each one
/// holds a thread from tokio's blocking pool (512 threads) while its client reads, so this
/// leaves room for the node's other store work.
pub const MAX_RESPONSES: usize = 256;
/// Bytes of large body chunks all responses may hold at once (filled, queued, or being
/// written by the connection). A response that finds none left sends small chunks outside
/// it, so slow clients cost little and never starve a fast one: see `range::ChannelWriter`.
pub const MAX_BODY_BUFFER: usize = 32 << 20;
/// Hyper's buffers per connection: a request head may be this large, and the connection
/// takes the next body chunk once what it has queued is below this.
pub const HTTP_BUFFER: usize = 64 << 10;
/// Verified (dataset, publisher) pairs the gateway remembers, at most.
pub const MAX_SIGNED_CACHE: usize = 1024;

impl Gateway {
    /// A gateway over `store`; `fetcher` enables fetching missing data.
    pub fn new(store: impl Into<AsyncStore>, fetcher: Option<Node>) -> Self {
        Self {
            store: store.into(),
            fetcher,
            fetching: Arc::default(),
            responses: Arc::new(tokio::sync::Semaphore::new(MAX_RESPONSES)),
            body_buffer: Arc::new(tokio::sync::Semaphore::new(MAX_BODY_BUFFER)),
            manifests: Arc::default(),
            stats: Arc::default(),
            trust: Arc::default(),
            signed: Arc::default(),
            fetch_max: crate::config::DEFAULT_FETCH_MISSING_MAX_BYTES,
            header_timeout: HEADER_READ_TIMEOUT,
        }
    }

    /// The same gateway fetching files of at most `bytes` for its clients.
    pub fn with_fetch_limit(mut self, bytes: u64) -> Self {
        self.fetch_max = bytes;
        self
    }

    /// The same gateway serving names `trust` covers only when their dataset carries the
    /// signature of the publisher it names (data the publisher did not sign cannot pass for theirs).
    pub fn with_trust(mut self, trust: commons_protocol::provenance::TrustPolicy) -> Self {
        self.trust = Arc::new(trust);
        self
    }

    /// The same gateway counting what it serves into `stats` (the node's).
    pub fn with_stats(mut self, stats: Arc<GatewayStats>) -> Self {
        self.stats = stats;
        self
    }

    /// The same gateway sending at most `n` bodies at once (default [`MAX_RESPONSES`]).
    pub fn with_max_responses(mut self, n: usize) -> Self {
        self.responses = Arc::new(tokio::sync::Semaphore::new(n));
        self
    }

    /// The routes.
    pub fn router(self) -> Router {
        Router::new()
            .route("/blob/{hash}", get(blob))
            .route("/dataset/{*rest}", get(dataset))
            .merge(hf::routes())
            .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint") })
            .with_state(self)
    }

    /// The same gateway closing a connection whose request head takes longer than `limit`
    /// (default [`HEADER_READ_TIMEOUT`]).
    pub fn with_header_timeout(mut self, limit: std::time::Duration) -> Self {
        self.header_timeout = limit;
        self
    }

    /// Serves on `listener` until the task is dropped. Each connection must send its
    /// request head within the header timeout (a client trickling bytes keeps no slot), and
    /// one client address holds at most [`MAX_CONNECTIONS_PER_IP`] connections, all
    /// clients at most [`MAX_CONNECTIONS`]: more are closed at once.
    pub async fn serve(self, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        let header_timeout = self.header_timeout;
        let app = self.router();
        let slots = ConnectionSlots::default();
        loop {
            let (stream, peer) = listener.accept().await?;
            let Some(slot) = slots.take(peer.ip()) else {
                tracing::debug!(%peer, "gateway: too many connections; closed");
                continue;
            };
            let service = hyper_util::service::TowerToHyperService::new(app.clone());
            tokio::spawn(async move {
                let _slot = slot;
                let served = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(header_timeout)
                    // Queue body chunks as they are (no copy into a buffer of its own), one at a time.
                    .writev(true)
                    .max_buf_size(HTTP_BUFFER)
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
                if let Err(e) = served {
                    tracing::debug!(%peer, error = %e, "gateway: connection ended");
                }
            });
        }
    }

    /// Whether `wanted` is complete here.
    async fn is_complete(&self, wanted: Wanted<'_>) -> Result<bool, Refusal> {
        let hash = wanted.hash();
        let manifest = matches!(wanted, Wanted::Manifest(_));
        self.store
            .run(move |store: &Store| {
                let blob = store.blob(&hash)?;
                let blob_done = blob.is_some_and(|m| m.state == BlobState::Complete);
                Ok::<_, StoreError>(blob_done && (!manifest || store.dataset(&hash)?.is_some()))
            })
            .await
            .map_err(internal)
    }

    /// What serving `wanted` takes: nothing (`None`, it is complete here) or a fetch with
    /// the returned node; refused when it is neither held nor fetched by this gateway. Asks
    /// nothing of the network, so a `HEAD` can be answered from a manifest at once.
    async fn missing(&self, wanted: Wanted<'_>) -> Result<Option<&Node>, Refusal> {
        if self.is_complete(wanted).await? {
            return Ok(None);
        }
        let hash = wanted.hash();
        let Some(node) = &self.fetcher else {
            let held = self
                .store
                .run(move |s| s.blob(&hash))
                .await
                .map_err(internal)?;
            let what = match held {
                Some(_) => "is not complete on this node yet",
                None => "is not held by this node",
            };
            return Err(error(StatusCode::NOT_FOUND, &format!("{hash} {what}")));
        };
        if let Wanted::File { size, path, .. } = wanted {
            if size > self.fetch_max {
                return Err(error(
                    StatusCode::FORBIDDEN,
                    &format!(
                        "{path} ({size} bytes) is larger than this gateway fetches on demand \
                         ({} bytes): ask the operator to mirror the dataset",
                        self.fetch_max
                    ),
                ));
            }
        }
        Ok(Some(node))
    }

    /// Makes sure `wanted` is complete here (fetching it when allowed), or says why not.
    async fn ensure(&self, wanted: Wanted<'_>) -> Result<(), Refusal> {
        let Some(node) = self.missing(wanted).await? else {
            return Ok(());
        };
        let hash = wanted.hash();
        let _one = self.fetching.lock().await;
        if self.is_complete(wanted).await? {
            return Ok(());
        }
        // Only roots are announced in the DHT: a dataset's file is fetched as part of its
        // dataset, from the dataset's holders.
        let (target, kind, include) = match wanted {
            Wanted::Blob(hash) => (hash, TicketKind::Blob, Include::default()),
            Wanted::Manifest(root) => (root, TicketKind::Dataset, Include::nothing()),
            Wanted::File { root, path, .. } => (root, TicketKind::Dataset, Include::exactly(path)),
        };
        tracing::info!(%hash, "gateway: fetching missing data");
        let target = GetTarget {
            hash: target,
            kind: Some(kind),
            providers: Vec::new(),
            publisher: None,
        };
        let network = node.network().await.map_err(|e| {
            error(
                StatusCode::BAD_GATEWAY,
                &format!("cannot fetch {hash}: {e}"),
            )
        })?;
        fetch::get(
            node,
            network,
            &target,
            &include,
            fetch::FetchOptions {
                max_bytes: Some(self.fetch_max),
                ..fetch::FetchOptions::unpinned()
            },
            &Progress::none(),
        )
        .await
        .map_err(|e| {
            let status = match e {
                // Refused by this gateway's limit, not a failure of the network.
                fetch::GetError::TooLarge { .. } => StatusCode::FORBIDDEN,
                _ => StatusCode::BAD_GATEWAY,
            };
            error(status, &format!("cannot fetch {hash}: {e}"))
        })?;
        Ok(())
    }

    /// The dataset a target names: a full hash, or `org/name[@revision]` bound here.
    async fn resolve_name(&self, name: &str) -> Result<Hash, Refusal> {
        let name =
            NameRef::parse(name).map_err(|e| error(StatusCode::BAD_REQUEST, &e.to_string()))?;
        let (n, revision) = (name.name.clone(), name.revision.clone());
        let root = self
            .store
            .run(move |s| s.resolve_name(&n, &revision))
            .await
            .map_err(internal)?
            .ok_or_else(|| {
                error(
                    StatusCode::NOT_FOUND,
                    &format!(
                        "no dataset named {}@{} on this node",
                        name.name, name.revision
                    ),
                )
            })?;
        if let Some(why) = self.untrusted(&name.name, root).await {
            return Err(error(StatusCode::FORBIDDEN, &why));
        }
        Ok(root)
    }

    /// Why `root`, bound to `name`, may not be served as `name`: the trust policy names a
    /// publisher for it, and the dataset carries no signature of theirs (a name bound by
    /// hand cannot pass for theirs). `None` when it may.
    pub(crate) async fn untrusted(
        &self,
        name: &commons_protocol::DatasetName,
        root: Hash,
    ) -> Option<String> {
        let publisher = self.trust.publisher_of(name)?.clone();
        let pair = (root, publisher.to_string());
        let cached = |signed: &Self| {
            signed
                .signed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&pair)
        };
        if cached(self) {
            return None;
        }
        let key = publisher.clone();
        let signed = self
            .store
            .run(move |s| crate::provenance::signatures::is_signed_by(s, &root, &key))
            .await
            .unwrap_or(false);
        if signed {
            let mut cache = self.signed.lock().unwrap_or_else(|e| e.into_inner());
            if cache.len() >= MAX_SIGNED_CACHE {
                cache.clear();
            }
            cache.insert(pair);
        }
        (!signed).then(|| {
            format!(
                "{name} is bound to {root}, which carries no signature by {publisher}, the \
                 publisher this node's trust policy names for it"
            )
        })
    }

    /// The manifest of `root`, complete and verified (fetched first when allowed). Kept
    /// in a small cache: a Hub client asks for every file of a snapshot twice (HEAD, GET),
    /// and a manifest is immutable, so it is read and verified once, not per request.
    async fn manifest(&self, root: Hash) -> Result<Arc<Manifest>, Refusal> {
        self.ensure(Wanted::Manifest(root)).await?;
        if let Some(m) = self.manifests.get(&root) {
            return Ok(m);
        }
        let manifest = self
            .store
            .run(move |s| s.read_manifest(&root))
            .await
            .map_err(internal)?;
        Ok(self.manifests.insert(root, manifest))
    }

    /// Answers with one file of a dataset, by its path in the manifest (`extra` headers
    /// added; an `ETag` there replaces the BLAKE3 one).
    async fn file(
        &self,
        root: Hash,
        manifest: &Manifest,
        path: &str,
        request: &Request,
        extra: HeaderMap,
    ) -> Result<Response, Refusal> {
        validate_path(path).map_err(|problem| {
            error(
                StatusCode::BAD_REQUEST,
                &format!("bad path {path:?}: {problem}"),
            )
        })?;
        let entry = manifest.entry(path).ok_or_else(|| {
            error(
                StatusCode::NOT_FOUND,
                &format!("no file {path:?} in this dataset"),
            )
        })?;
        let wanted = Wanted::File {
            root,
            path,
            hash: entry.hash,
            size: entry.size,
        };
        if request.method == Method::HEAD {
            // The manifest says all a HEAD answers (size, ids): a client asking for a file's
            // metadata does not wait for the whole file to be fetched, only learns whether
            // a GET would be refused.
            self.missing(wanted).await?;
        } else {
            self.ensure(wanted).await?;
        }
        Ok(range::respond(self, entry.hash, entry.size, request, extra))
    }
}

/// What a request needs held here.
#[derive(Debug, Clone, Copy)]
enum Wanted<'a> {
    /// A blob on its own.
    Blob(Hash),
    /// A dataset's manifest (and its record).
    Manifest(Hash),
    /// One file of a dataset.
    File {
        /// The dataset.
        root: Hash,
        /// Its path there.
        path: &'a str,
        /// Its blob.
        hash: Hash,
        /// Its size.
        size: u64,
    },
}

impl Wanted<'_> {
    fn hash(&self) -> Hash {
        match *self {
            Wanted::Blob(h) | Wanted::Manifest(h) | Wanted::File { hash: h, .. } => h,
        }
    }
}

/// The parts of a request a file answer depends on.
pub(crate) struct Request {
    method: Method,
    headers: HeaderMap,
}

/// `GET /blob/<hash>`.
async fn blob(
    State(gw): State<Gateway>,
    Path(hash): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    let hash: Hash = hash
        .parse()
        .map_err(|e| error(StatusCode::BAD_REQUEST, &format!("bad hash {hash:?}: {e}")))?;
    gw.ensure(Wanted::Blob(hash)).await?;
    let size = gw
        .store
        .run(move |s| s.blob(&hash))
        .await
        .map_err(internal)?
        .ok_or_else(|| error(StatusCode::NOT_FOUND, &format!("{hash} is not held")))?
        .size;
    let request = Request { method, headers };
    Ok(range::respond(&gw, hash, size, &request, HeaderMap::new()))
}

/// One file of a dataset listing.
#[derive(Debug, Serialize)]
struct ListedFile<'a> {
    path: &'a str,
    size: u64,
    /// Hex, as everywhere users see hashes.
    hash: String,
    executable: bool,
}

/// `GET /dataset/<target>` (listing) and `GET /dataset/<target>/<path>` (a file).
async fn dataset(
    State(gw): State<Gateway>,
    Path(rest): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    let rest = rest.trim_end_matches('/');
    let (first, after) = rest.split_once('/').unwrap_or((rest, ""));
    let (root, path) = match first.parse::<Hash>() {
        Ok(hash) => (hash, after),
        Err(_) => {
            let (name, path) = after.split_once('/').unwrap_or((after, ""));
            (gw.resolve_name(&format!("{first}/{name}")).await?, path)
        }
    };
    let manifest = gw.manifest(root).await?;
    if path.is_empty() {
        let files: Vec<ListedFile> = manifest
            .entries()
            .iter()
            .map(|e| ListedFile {
                path: &e.path,
                size: e.size,
                hash: e.hash.to_string(),
                executable: e.executable,
            })
            .collect();
        let body = serde_json::json!({
            "root": root.to_string(),
            "total_size": manifest.total_size(),
            "files": files,
        });
        return Ok(Json(body).into_response());
    }
    gw.file(
        root,
        &manifest,
        path,
        &Request { method, headers },
        HeaderMap::new(),
    )
    .await
}

/// Why a request is refused: a status, a message for the user and, for the Hugging Face
/// endpoints, the Hub's error code. Sent as a plain-text body, or with a Hub error code as
/// the Hub sends it: `{"error": message}`.
#[derive(Debug)]
pub(crate) struct Refusal {
    status: StatusCode,
    hub_code: Option<&'static str>,
    message: String,
    /// More headers to send (the Hub's `X-Repo-Commit` with a missing file): a list, not a
    /// `HeaderMap`, so a refusal stays small enough to return by value.
    headers: Vec<(&'static str, HeaderValue)>,
}

impl Refusal {
    /// Adds the Hub's `X-Error-Code` (the client raises `RepositoryNotFoundError`,
    /// `RevisionNotFoundError`, `EntryNotFoundError` from it).
    pub(crate) fn hub(mut self, code: &'static str) -> Self {
        self.hub_code = Some(code);
        self
    }

    /// Adds header `name` (a value that is not a valid header value is left out).
    pub(crate) fn with_header(mut self, name: &'static str, value: &str) -> Self {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.headers.push((name, v));
        }
        self
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut response = match self.hub_code {
            // The Hub's own form, which its clients read the message from.
            Some(_) => (
                self.status,
                Json(serde_json::json!({ "error": self.message })),
            )
                .into_response(),
            None => (self.status, format!("{}\n", self.message)).into_response(),
        };
        let headers = response.headers_mut();
        for (name, value) in self.headers {
            headers.insert(name, value);
        }
        if let Some(code) = self.hub_code {
            headers.insert("X-Error-Code", HeaderValue::from_static(code));
            if let Ok(v) = HeaderValue::from_str(&self.message) {
                headers.insert("X-Error-Message", v);
            }
        } else {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
        }
        response
    }
}

/// A refusal with `status` and `message`.
pub(crate) fn error(status: StatusCode, message: &str) -> Refusal {
    Refusal {
        status,
        hub_code: None,
        message: message.to_string(),
        headers: Vec::new(),
    }
}

fn internal(e: impl std::fmt::Display) -> Refusal {
    tracing::warn!(error = %e, "gateway: request failed");
    error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string())
}
