//! A small Hugging Face Hub compatible origin server, for tests and benchmarks: it never
//! reaches the internet. Tests start it on loopback, publish folders as repositories, and
//! have a Commons node import from it as it would from `https://huggingface.co`.
//!
//! It speaks the HTTP API shapes `huggingface_hub` uses:
//!
//! - `GET /api/{models|datasets}/{org}/{name}[/revision/{rev}]`: repository info (`sha`,
//!   `siblings`, `gated`, ...; `?blobs=true` adds sizes and LFS ids to the siblings);
//! - `GET /api/{models|datasets}/{org}/{name}/tree/{rev}[/{path}]`: the entries under a
//!   folder (`?recursive=true` for everything below it), paginated with a `Link` header;
//! - `POST /api/{models|datasets}/{org}/{name}/paths-info/{rev}`: the entries of the paths
//!   given (a form body `paths=a&paths=b`, or JSON `{"paths": [...]}`);
//! - `GET /api/{models|datasets}/{org}/{name}/refs`: branches;
//! - `GET|HEAD /{org}/{name}/resolve/{rev}/{path}` (models) and
//!   `/datasets/{org}/{name}/resolve/{rev}/{path}` (datasets): a file's content, or for an
//!   LFS file a `302` with `X-Linked-Etag` and `X-Linked-Size` to its content at
//!   `/_lfs/{sha256}` on a second port, the "CDN" ([`HubOrigin::cdn_url`]);
//! - `GET|HEAD /_lfs/{sha256}` (on both ports): LFS content. Like the Hub's pre-signed CDN
//!   links it needs no token.
//!
//! The CDN is another origin because `huggingface_hub` follows redirects within one origin
//! when it asks for a file's metadata (`HEAD`): the `X-Repo-Commit` and `X-Linked-*` headers
//! it needs are on the `302`, which it must stop at, as it does for the Hub's real CDN.
//!
//! Ids are the Hub's: a file's `oid` is its git blob SHA-1 (of the LFS pointer for LFS
//! files), `lfs.oid` the SHA-256 of the content. Revisions are branch names or 40-hex
//! commit ids. File bodies are streamed from disk, with byte ranges, an optional rate cap
//! and optional deliberate corruption.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fs,
    io::{self, Read},
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex, MutexGuard,
    },
    time::{Duration, Instant},
};

use anyhow::{anyhow, ensure, Context};
use axum::{
    body::{Body, Bytes},
    extract::{Path as UrlPath, State},
    http::{header, HeaderMap, HeaderValue, StatusCode, Uri},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use serde_json::{json, Value};
use sha1::Digest as _;
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};

/// Files this large or larger are stored with LFS.
const LFS_THRESHOLD: u64 = 10 * 1024 * 1024;

/// Extensions the Hub's default `.gitattributes` stores with LFS.
const LFS_EXTENSIONS: &[&str] = &[
    "safetensors",
    "bin",
    "parquet",
    "onnx",
    "pt",
    "pth",
    "h5",
    "msgpack",
    "gguf",
    "arrow",
    "ckpt",
    "zip",
    "gz",
    "tar",
];

/// Default number of entries per page of a tree listing (the Hub's).
const DEFAULT_PAGE_SIZE: usize = 1000;

/// Largest body chunk read from disk and sent at once.
const MAX_CHUNK: u64 = 256 * 1024;

/// `lastModified` of a repository's first commit (2026-01-02T03:04:05Z); each later commit
/// is an hour later.
const FIRST_COMMIT_TIME: u64 = 1_767_323_045;

/// Request kinds counted by [`HubOrigin::requests`].
const REQUEST_KINDS: [&str; 6] = ["info", "tree", "paths_info", "resolve", "lfs", "refs"];

// The ids below are computed here independently of `commons_protocol::hub` on purpose: the
// test origin is the tests' model of the Hub, so a mistake in the node's id computation
// shows as a mismatch instead of agreeing with itself.

/// Whether the Hub's default `.gitattributes` stores `path` (of `size` bytes) with LFS: files
/// of 10 MiB or more, and files whose extension is one of `safetensors`, `bin`, `parquet`,
/// `onnx`, `pt`, `pth`, `h5`, `msgpack`, `gguf`, `arrow`, `ckpt`, `zip`, `gz`, `tar`
/// (compared case-sensitively, as git attributes are).
pub fn is_lfs(path: &str, size: u64) -> bool {
    if size >= LFS_THRESHOLD {
        return true;
    }
    let name = path.rsplit('/').next().unwrap_or(path);
    name.rsplit_once('.')
        .is_some_and(|(_, ext)| LFS_EXTENSIONS.contains(&ext))
}

/// The git blob id (40 lowercase hex digits) of the `size` bytes `reader` yields:
/// SHA-1 of `blob {size}\0` followed by the content. Fails when the reader yields a
/// different number of bytes.
pub fn git_blob_sha1(size: u64, reader: impl Read) -> io::Result<String> {
    let mut hasher = sha1::Sha1::new();
    hasher.update(format!("blob {size}\0").as_bytes());
    let seen = feed(reader, |bytes| hasher.update(bytes))?;
    if seen != size {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("expected {size} bytes, read {seen}"),
        ));
    }
    Ok(hex(&hasher.finalize()))
}

/// The SHA-256 (64 lowercase hex digits) of everything `reader` yields, and its length.
pub fn sha256_hex(reader: impl Read) -> io::Result<(String, u64)> {
    let mut hasher = sha2::Sha256::new();
    let seen = feed(reader, |bytes| hasher.update(bytes))?;
    Ok((hex(&hasher.finalize()), seen))
}

/// Hands everything `reader` yields to `eat`, 1 MiB at a time; returns how many bytes.
fn feed(mut reader: impl Read, mut eat: impl FnMut(&[u8])) -> io::Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut seen = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(seen),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        seen += n as u64;
        eat(&buf[..n]);
    }
}

/// The text of the git LFS pointer of a file with this SHA-256 (hex) and size.
pub fn lfs_pointer(sha256: &str, size: u64) -> String {
    format!("version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n")
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn sha1_hex(parts: &[&[u8]]) -> String {
    let mut hasher = sha1::Sha1::new();
    for part in parts {
        hasher.update(part);
    }
    hex(&hasher.finalize())
}

fn is_commit_sha(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `secs` since the Unix epoch as `YYYY-MM-DDTHH:MM:SS.000Z`.
fn iso8601(secs: u64) -> String {
    // Howard Hinnant's civil_from_days.
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let rem = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.000Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Repository type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Model,
    Dataset,
}

impl Kind {
    /// From `model`/`dataset` (as given to `publish`) or `models`/`datasets` (as in URLs).
    fn parse(s: &str) -> Option<Kind> {
        match s {
            "model" | "models" => Some(Kind::Model),
            "dataset" | "datasets" => Some(Kind::Dataset),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Kind::Model => "model",
            Kind::Dataset => "dataset",
        }
    }
}

/// LFS ids of a file.
#[derive(Debug)]
struct LfsIds {
    sha256: String,
    pointer_size: u64,
}

/// A file of a commit.
#[derive(Debug)]
struct FileEntry {
    /// Where its content is read from when served.
    disk: PathBuf,
    size: u64,
    /// The git blob id: of the content, or of the LFS pointer for LFS files.
    oid: String,
    lfs: Option<LfsIds>,
}

/// A published snapshot.
#[derive(Debug)]
struct Commit {
    sha: String,
    last_modified: String,
    files: BTreeMap<String, Arc<FileEntry>>,
    /// Every folder holding a file, at any depth.
    dirs: BTreeSet<String>,
    used_storage: u64,
}

impl Commit {
    fn dir_oid(&self, path: &str) -> String {
        sha1_hex(&[b"tree\0", self.sha.as_bytes(), b"\0", path.as_bytes()])
    }

    fn file_json(path: &str, file: &FileEntry) -> Value {
        let mut v = json!({"type": "file", "oid": file.oid, "size": file.size, "path": path});
        if let (Some(lfs), Value::Object(map)) = (&file.lfs, &mut v) {
            map.insert(
                "lfs".into(),
                json!({"oid": lfs.sha256, "size": file.size, "pointerSize": lfs.pointer_size}),
            );
        }
        v
    }

    fn dir_json(&self, path: &str) -> Value {
        json!({"type": "directory", "oid": self.dir_oid(path), "size": 0, "path": path})
    }

    /// The tree entry of `path` (file or folder), if there is one.
    fn entry(&self, path: &str) -> Option<Value> {
        if let Some(file) = self.files.get(path) {
            Some(Self::file_json(path, file))
        } else if self.dirs.contains(path) {
            Some(self.dir_json(path))
        } else {
            None
        }
    }

    /// The entries under folder `dir` ("" for the root), sorted by path: its direct children,
    /// or with `recursive` everything below it, folders included. `None` when `dir` does not
    /// exist; a file's listing is the file itself.
    fn list(&self, dir: &str, recursive: bool) -> Option<Vec<Value>> {
        if let Some(file) = self.files.get(dir) {
            return Some(vec![Self::file_json(dir, file)]);
        }
        if !dir.is_empty() && !self.dirs.contains(dir) {
            return None;
        }
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        let wanted = |p: &str| {
            p.strip_prefix(&prefix)
                .is_some_and(|rest| !rest.is_empty() && (recursive || !rest.contains('/')))
        };
        let mut out: Vec<(&str, Value)> = Vec::new();
        for d in self.dirs.range(prefix.clone()..) {
            if !d.starts_with(&prefix) {
                break;
            }
            if wanted(d) {
                out.push((d, self.dir_json(d)));
            }
        }
        for (p, file) in self.files.range(prefix.clone()..) {
            if !p.starts_with(&prefix) {
                break;
            }
            if wanted(p) {
                out.push((p, Self::file_json(p, file)));
            }
        }
        out.sort_by(|a, b| a.0.cmp(b.0));
        Some(out.into_iter().map(|(_, v)| v).collect())
    }
}

/// A repository: its commits and branches.
#[derive(Debug)]
struct Repo {
    default_branch: String,
    branches: BTreeMap<String, Arc<Commit>>,
    commits: HashMap<String, Arc<Commit>>,
    latest: Option<Arc<Commit>>,
    first_commit_time: Option<String>,
}

impl Repo {
    fn resolve(&self, rev: &str) -> Option<Arc<Commit>> {
        let branch = rev.strip_prefix("refs/heads/").unwrap_or(rev);
        self.branches
            .get(branch)
            .or_else(|| {
                is_commit_sha(rev)
                    .then(|| self.commits.get(&rev.to_ascii_lowercase()))
                    .flatten()
            })
            .cloned()
    }
}

/// Content served at `/_lfs/{sha256}`.
#[derive(Debug)]
struct LfsObject {
    disk: PathBuf,
    size: u64,
    /// The (repo, path) pairs holding it, for `corrupt`.
    owners: BTreeSet<(String, String)>,
}

/// State shared by the handle and the server.
#[derive(Debug)]
struct Shared {
    base_url: String,
    /// Where LFS content is served from.
    cdn_url: String,
    repos: Mutex<HashMap<(Kind, String), Repo>>,
    tokens: Mutex<HashMap<String, String>>,
    corrupt: Mutex<HashMap<(String, String), BTreeSet<u64>>>,
    lfs: Mutex<HashMap<String, LfsObject>>,
    rate: AtomicU64,
    /// When the rate cap next allows a byte to go out.
    pacer: Mutex<Instant>,
    page_size: AtomicUsize,
    bytes_served: AtomicU64,
    counters: [AtomicU64; 6],
}

impl Shared {
    fn count(&self, kind: &str) {
        if let Some(i) = REQUEST_KINDS.iter().position(|k| *k == kind) {
            self.counters[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The commit `rev` of repo `org/name` of type `kind` (as in URLs), if the request may see
    /// it; else the Hub's error response.
    fn lookup(
        &self,
        kind: &str,
        org: &str,
        name: &str,
        rev: Option<&str>,
        headers: &HeaderMap,
    ) -> Result<(String, Arc<Commit>), Box<Response>> {
        let id = format!("{org}/{name}");
        let not_found = || {
            hub_error(
                StatusCode::NOT_FOUND,
                "RepoNotFound",
                &format!("Repository Not Found for url: {id}."),
            )
        };
        let kind = Kind::parse(kind).ok_or_else(not_found)?;
        let (rev, commit) = {
            let repos = lock(&self.repos);
            let repo = repos.get(&(kind, id.clone())).ok_or_else(not_found)?;
            let rev = rev.unwrap_or(&repo.default_branch).to_string();
            let commit = repo.resolve(&rev);
            (rev, commit)
        };
        self.authorize(&id, headers)?;
        let commit = commit.ok_or_else(|| {
            hub_error(
                StatusCode::NOT_FOUND,
                "RevisionNotFound",
                &format!("Invalid rev id: {rev}"),
            )
        })?;
        Ok((id, commit))
    }

    /// Refuses a request for a gated repo without its token.
    fn authorize(&self, repo: &str, headers: &HeaderMap) -> Result<(), Box<Response>> {
        let tokens = lock(&self.tokens);
        let Some(token) = tokens.get(repo) else {
            return Ok(());
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        if given == Some(token.as_str()) {
            Ok(())
        } else {
            Err(Box::new(hub_error(
                StatusCode::UNAUTHORIZED,
                "GatedRepo",
                &format!("Access to repo {repo} is restricted. You must have access to it and be authenticated to access it."),
            )))
        }
    }

    /// Offsets to corrupt in a body that is the file of any of `owners` (repo, path).
    fn corrupted(&self, owners: &[(String, String)]) -> BTreeSet<u64> {
        let corrupt = lock(&self.corrupt);
        owners
            .iter()
            .filter_map(|o| corrupt.get(o))
            .flatten()
            .copied()
            .collect()
    }

    /// Waits until the rate cap lets `n` more bytes go out.
    async fn pace(&self, n: u64) {
        let rate = self.rate.load(Ordering::Relaxed);
        if rate == 0 {
            return;
        }
        let wait = {
            let mut next = lock(&self.pacer);
            let now = Instant::now();
            let start = (*next).max(now);
            let done = start + Duration::from_secs_f64(n as f64 / rate as f64);
            *next = done;
            done - now
        };
        tokio::time::sleep(wait).await;
    }

    /// `http://host` as the client addressed this server.
    fn origin(&self, headers: &HeaderMap) -> String {
        headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(|h| format!("http://{h}"))
            .unwrap_or_else(|| self.base_url.clone())
    }
}

/// A running test Hub. Serving stops when it is dropped (or [`HubOrigin::stop`]ped), open
/// connections included.
#[derive(Debug)]
pub struct HubOrigin {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HubOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HubOrigin {
    /// Starts serving on a free loopback port.
    pub async fn start() -> anyhow::Result<HubOrigin> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts serving on `addr`, and LFS content on another port of the same address.
    pub async fn start_on(addr: SocketAddr) -> anyhow::Result<HubOrigin> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let cdn_listener = tokio::net::TcpListener::bind(SocketAddr::new(addr.ip(), 0))
            .await
            .with_context(|| format!("binding {}:0", addr.ip()))?;
        let url = |mut local: SocketAddr| {
            if local.ip().is_unspecified() {
                local.set_ip(if local.is_ipv4() {
                    [127, 0, 0, 1].into()
                } else {
                    std::net::Ipv6Addr::LOCALHOST.into()
                });
            }
            format!("http://{local}")
        };
        let shared = Arc::new(Shared {
            base_url: url(listener.local_addr()?),
            cdn_url: url(cdn_listener.local_addr()?),
            repos: Mutex::default(),
            tokens: Mutex::default(),
            corrupt: Mutex::default(),
            lfs: Mutex::default(),
            rate: AtomicU64::new(0),
            pacer: Mutex::new(Instant::now()),
            page_size: AtomicUsize::new(DEFAULT_PAGE_SIZE),
            bytes_served: AtomicU64::new(0),
            counters: Default::default(),
        });
        let app = router(shared.clone());
        let cdn = Router::new()
            .route("/_lfs/{sha256}", get(lfs_content))
            .fallback(not_found)
            .with_state(shared.clone());
        let task = tokio::spawn(accept_loop(vec![(listener, app), (cdn_listener, cdn)]));
        Ok(HubOrigin { shared, task })
    }

    /// The base URL, `http://127.0.0.1:PORT` (what `HF_ENDPOINT` would be set to).
    pub fn url(&self) -> String {
        self.shared.base_url.clone()
    }

    /// The base URL of the second port, which serves LFS content (`/_lfs/{sha256}`): what the
    /// `Location` of an LFS file's `302` points to.
    pub fn cdn_url(&self) -> String {
        self.shared.cdn_url.clone()
    }

    /// Stops serving: closes the listener and every open connection.
    pub fn stop(&self) {
        self.task.abort();
    }

    /// Snapshots `folder` (every regular file under it, recursively, `/`-separated relative
    /// paths, sorted) as a new commit of repository `repo` (`org/name`) of type `kind`
    /// (`model` or `dataset`), and moves branch `branch` to it. Creates the repository on
    /// first call (its default branch being `branch`). Older commits stay resolvable by their
    /// id. Files are read from disk when served, so `folder` must stay unchanged. Hashing
    /// streams the files on a blocking thread. Returns the commit id (40 hex digits).
    pub async fn publish(
        &self,
        kind: &str,
        repo: &str,
        folder: &Path,
        branch: &str,
    ) -> anyhow::Result<String> {
        let kind = Kind::parse(kind)
            .ok_or_else(|| anyhow!("unknown repository type {kind:?} (model or dataset)"))?;
        let parts: Vec<&str> = repo.split('/').collect();
        ensure!(
            parts.len() == 2
                && parts
                    .iter()
                    .all(|p| !p.is_empty() && !p.contains(['?', '#', '%', ' '])),
            "repository id {repo:?} is not of the form org/name"
        );
        ensure!(
            !branch.is_empty() && !branch.contains(['?', '#', '%']),
            "bad branch name {branch:?}"
        );
        let dir = folder.to_path_buf();
        let files = tokio::task::spawn_blocking(move || snapshot(&dir))
            .await
            .context("hashing task failed")?
            .with_context(|| format!("publishing {}", folder.display()))?;

        let commit = {
            let mut repos = lock(&self.shared.repos);
            let entry = repos
                .entry((kind, repo.to_string()))
                .or_insert_with(|| Repo {
                    default_branch: branch.to_string(),
                    branches: BTreeMap::new(),
                    commits: HashMap::new(),
                    latest: None,
                    first_commit_time: None,
                });
            let parent = entry
                .branches
                .get(branch)
                .or(entry.latest.as_ref())
                .map(|c| c.sha.clone())
                .unwrap_or_default();
            let mut hasher = sha1::Sha1::new();
            hasher.update(
                format!(
                    "commons hub-origin commit\n{}\n{repo}\n{parent}\n",
                    kind.as_str()
                )
                .as_bytes(),
            );
            for (path, file) in &files {
                hasher.update(format!("{path}\0{}\n", file.oid).as_bytes());
            }
            let sha = hex(&hasher.finalize());
            let commit = match entry.commits.get(&sha) {
                Some(existing) => existing.clone(),
                None => {
                    let n = entry.commits.len() as u64;
                    let dirs = files
                        .keys()
                        .flat_map(|p| {
                            p.match_indices('/')
                                .map(|(i, _)| p[..i].to_string())
                                .collect::<Vec<_>>()
                        })
                        .collect();
                    let commit = Arc::new(Commit {
                        sha: sha.clone(),
                        last_modified: iso8601(FIRST_COMMIT_TIME + n * 3600),
                        used_storage: files.values().map(|f| f.size).sum(),
                        files,
                        dirs,
                    });
                    entry
                        .first_commit_time
                        .get_or_insert_with(|| commit.last_modified.clone());
                    entry.commits.insert(sha, commit.clone());
                    entry.latest = Some(commit.clone());
                    commit
                }
            };
            entry.branches.insert(branch.to_string(), commit.clone());
            commit
        };
        let mut lfs = lock(&self.shared.lfs);
        for (path, file) in &commit.files {
            if let Some(ids) = &file.lfs {
                lfs.entry(ids.sha256.clone())
                    .or_insert_with(|| LfsObject {
                        disk: file.disk.clone(),
                        size: file.size,
                        owners: BTreeSet::new(),
                    })
                    .owners
                    .insert((repo.to_string(), path.clone()));
            }
        }
        Ok(commit.sha.clone())
    }

    /// Makes `repo` (`org/name`, of either type) gated: every API and file request for it
    /// then needs `Authorization: Bearer <token>` (else `401`, `X-Error-Code: GatedRepo`).
    /// LFS content links (`/_lfs/...`), like the Hub's pre-signed CDN links, need none.
    pub fn require_token(&self, repo: &str, token: &str) {
        lock(&self.shared.tokens).insert(repo.to_string(), token.to_string());
    }

    /// Serves file `path` of `repo` (every commit, and its LFS content link) with the byte at
    /// `offset` XORed with `0xff`; the advertised ids stay those of the real content. Calls
    /// add up (several offsets, several files).
    pub fn corrupt(&self, repo: &str, path: &str, offset: u64) {
        lock(&self.shared.corrupt)
            .entry((repo.to_string(), path.trim_matches('/').to_string()))
            .or_default()
            .insert(offset);
    }

    /// Caps file-body sending at `bytes_per_sec` in all, across connections (0 = unlimited).
    pub fn set_rate(&self, bytes_per_sec: u64) {
        self.shared.rate.store(bytes_per_sec, Ordering::Relaxed);
        *lock(&self.shared.pacer) = Instant::now();
    }

    /// Entries per page of tree listings (default 1000; at least 1).
    pub fn set_page_size(&self, n: usize) {
        self.shared.page_size.store(n.max(1), Ordering::Relaxed);
    }

    /// File-body bytes sent (by `resolve` and LFS content requests), since start or the last
    /// [`HubOrigin::reset_counters`].
    pub fn bytes_served(&self) -> u64 {
        self.shared.bytes_served.load(Ordering::Relaxed)
    }

    /// Requests seen of `kind`: `info`, `tree`, `paths_info`, `resolve`, `lfs` or `refs`
    /// (0 for anything else), since start or the last [`HubOrigin::reset_counters`].
    pub fn requests(&self, kind: &str) -> u64 {
        REQUEST_KINDS
            .iter()
            .position(|k| *k == kind)
            .map_or(0, |i| self.shared.counters[i].load(Ordering::Relaxed))
    }

    /// Zeroes [`HubOrigin::bytes_served`] and [`HubOrigin::requests`].
    pub fn reset_counters(&self) {
        self.shared.bytes_served.store(0, Ordering::Relaxed);
        for c in &self.shared.counters {
            c.store(0, Ordering::Relaxed);
        }
    }
}

/// Every regular file under `folder` (following symlinks to files), hashed.
fn snapshot(folder: &Path) -> anyhow::Result<BTreeMap<String, Arc<FileEntry>>> {
    let mut found = Vec::new();
    let mut stack = vec![(folder.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        for entry in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let entry = entry?;
            let name = entry
                .file_name()
                .into_string()
                .map_err(|n| anyhow!("file name {n:?} is not UTF-8"))?;
            let rel = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let path = entry.path();
            let ty = entry.file_type()?;
            if ty.is_dir() {
                stack.push((path, rel));
            } else if ty.is_file() || (ty.is_symlink() && path.is_file()) {
                found.push((rel, path));
            }
        }
    }
    found.sort();
    let mut files = BTreeMap::new();
    for (rel, path) in found {
        let entry =
            hash_file(&rel, &path).with_context(|| format!("hashing {}", path.display()))?;
        files.insert(rel, Arc::new(entry));
    }
    Ok(files)
}

fn hash_file(rel: &str, path: &Path) -> anyhow::Result<FileEntry> {
    let file = fs::File::open(path)?;
    let size = file.metadata()?.len();
    let disk = path.to_path_buf();
    if is_lfs(rel, size) {
        let (sha256, seen) = sha256_hex(file)?;
        ensure!(seen == size, "file changed while read");
        let pointer = lfs_pointer(&sha256, size);
        let oid = git_blob_sha1(pointer.len() as u64, pointer.as_bytes())?;
        Ok(FileEntry {
            disk,
            size,
            oid,
            lfs: Some(LfsIds {
                sha256,
                pointer_size: pointer.len() as u64,
            }),
        })
    } else {
        let oid = git_blob_sha1(size, file)?;
        Ok(FileEntry {
            disk,
            size,
            oid,
            lfs: None,
        })
    }
}

/// Serves connections on every listener, each with its router, until aborted; aborting
/// drops (and so aborts) every connection task.
async fn accept_loop(listeners: Vec<(tokio::net::TcpListener, Router)>) {
    let mut connections = tokio::task::JoinSet::new();
    let (accepted_tx, mut accepted) = tokio::sync::mpsc::channel(16);
    let mut acceptors = tokio::task::JoinSet::new();
    for (listener, app) in listeners {
        let tx = accepted_tx.clone();
        acceptors.spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        if tx.send((stream, app.clone())).await.is_err() {
                            return;
                        }
                    }
                    // E.g. out of file descriptors: try again a little later.
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
    }
    drop(accepted_tx);
    loop {
        tokio::select! {
            next = accepted.recv() => {
                let Some((stream, app)) = next else { return };
                let stream: tokio::net::TcpStream = stream;
                let _ = stream.set_nodelay(true);
                let service = hyper_util::service::TowerToHyperService::new(app);
                connections.spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn not_found() -> Response {
    hub_error(
        StatusCode::NOT_FOUND,
        "",
        "Sorry, we can't find the page you are looking for.",
    )
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/api/{kind}/{org}/{name}", get(info))
        .route("/api/{kind}/{org}/{name}/revision/{*rev}", get(info_rev))
        .route("/api/{kind}/{org}/{name}/tree/{rev}", get(tree_root))
        .route("/api/{kind}/{org}/{name}/tree/{rev}/{*path}", get(tree))
        .route(
            "/api/{kind}/{org}/{name}/paths-info/{*rev}",
            post(paths_info),
        )
        .route("/api/{kind}/{org}/{name}/refs", get(refs))
        .route("/{org}/{name}/resolve/{rev}/{*path}", get(resolve_model))
        .route(
            "/datasets/{org}/{name}/resolve/{rev}/{*path}",
            get(resolve_dataset),
        )
        .route("/_lfs/{sha256}", get(lfs_content))
        .fallback(not_found)
        .with_state(shared)
}

fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

/// The Hub's error: `{"error": message}`, with `X-Error-Code` (unless empty) and
/// `X-Error-Message`.
fn hub_error(status: StatusCode, code: &str, message: &str) -> Response {
    let mut headers = HeaderMap::new();
    if !code.is_empty() {
        headers.insert("x-error-code", header_value(code));
    }
    let ascii: String = message
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    headers.insert("x-error-message", header_value(&ascii));
    (status, headers, Json(json!({ "error": message }))).into_response()
}

/// Decodes `%XX` and `+` of a URL-encoded form value.
fn form_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let digit = |b: u8| (b as char).to_digit(16);
                match (digit(bytes[i + 1]), digit(bytes[i + 2])) {
                    (Some(hi), Some(lo)) => {
                        out.push((hi * 16 + lo) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The `key=value` pairs of a URL-encoded form or query string, decoded.
fn form_pairs(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (form_decode(k), form_decode(v))
        })
        .collect()
}

fn truthy(v: &str) -> bool {
    matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes")
}

async fn info(
    State(s): State<Arc<Shared>>,
    UrlPath((kind, org, name)): UrlPath<(String, String, String)>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    info_inner(&s, &kind, &org, &name, None, &uri, &headers)
}

async fn info_rev(
    State(s): State<Arc<Shared>>,
    UrlPath((kind, org, name, rev)): UrlPath<(String, String, String, String)>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    info_inner(&s, &kind, &org, &name, Some(&rev), &uri, &headers)
}

fn info_inner(
    s: &Shared,
    kind: &str,
    org: &str,
    name: &str,
    rev: Option<&str>,
    uri: &Uri,
    headers: &HeaderMap,
) -> Response {
    s.count("info");
    let (id, commit) = match s.lookup(kind, org, name, rev, headers) {
        Ok(found) => found,
        Err(refusal) => return *refusal,
    };
    let blobs = form_pairs(uri.query().unwrap_or(""))
        .iter()
        .any(|(k, v)| k == "blobs" && truthy(v));
    let siblings: Vec<Value> = commit
        .files
        .iter()
        .map(|(path, file)| {
            if !blobs {
                return json!({ "rfilename": path });
            }
            let mut v = json!({"rfilename": path, "size": file.size, "blobId": file.oid});
            if let (Some(lfs), Value::Object(map)) = (&file.lfs, &mut v) {
                map.insert(
                    "lfs".into(),
                    json!({"sha256": lfs.sha256, "size": file.size, "pointerSize": lfs.pointer_size}),
                );
            }
            v
        })
        .collect();
    let gated = if lock(&s.tokens).contains_key(&id) {
        json!("auto")
    } else {
        json!(false)
    };
    let created = {
        let repos = lock(&s.repos);
        Kind::parse(kind)
            .and_then(|k| repos.get(&(k, id.clone())))
            .and_then(|r| r.first_commit_time.clone())
            .unwrap_or_else(|| commit.last_modified.clone())
    };
    let mut v = json!({
        "_id": &sha1_hex(&[b"repo\0", kind.as_bytes(), b"\0", id.as_bytes()])[..24],
        "id": id,
        "author": org,
        "sha": commit.sha,
        "createdAt": created,
        "lastModified": commit.last_modified,
        "private": false,
        "gated": gated,
        "disabled": false,
        "downloads": 0,
        "likes": 0,
        "tags": [],
        "cardData": {},
        "siblings": siblings,
        "usedStorage": commit.used_storage,
    });
    if Kind::parse(kind) == Some(Kind::Model) {
        if let Value::Object(map) = &mut v {
            map.insert("modelId".into(), json!(id));
            map.insert("pipeline_tag".into(), Value::Null);
        }
    }
    Json(v).into_response()
}

async fn tree_root(
    State(s): State<Arc<Shared>>,
    UrlPath((kind, org, name, rev)): UrlPath<(String, String, String, String)>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    tree_inner(&s, &kind, &org, &name, &rev, "", &uri, &headers)
}

async fn tree(
    State(s): State<Arc<Shared>>,
    UrlPath((kind, org, name, rev, path)): UrlPath<(String, String, String, String, String)>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    tree_inner(&s, &kind, &org, &name, &rev, &path, &uri, &headers)
}

#[allow(clippy::too_many_arguments)]
fn tree_inner(
    s: &Shared,
    kind: &str,
    org: &str,
    name: &str,
    rev: &str,
    path: &str,
    uri: &Uri,
    headers: &HeaderMap,
) -> Response {
    s.count("tree");
    let (id, mut commit) = match s.lookup(kind, org, name, Some(rev), headers) {
        Ok(found) => found,
        Err(refusal) => return *refusal,
    };
    let query = uri.query().unwrap_or("");
    let pairs = form_pairs(query);
    let recursive = pairs.iter().any(|(k, v)| k == "recursive" && truthy(v));
    // The cursor is `{offset}.{commit}`: later pages list the commit the first one did,
    // even if the branch moved meanwhile.
    let mut offset = 0usize;
    if let Some((_, cursor)) = pairs.iter().find(|(k, _)| k == "cursor") {
        let parsed = cursor
            .split_once('.')
            .and_then(|(o, sha)| Some((o.parse::<usize>().ok()?, sha)));
        let Some((o, sha)) = parsed else {
            return hub_error(StatusCode::BAD_REQUEST, "", "Invalid cursor");
        };
        offset = o;
        if sha != commit.sha {
            let repos = lock(&s.repos);
            let pinned = Kind::parse(kind)
                .and_then(|k| repos.get(&(k, id.clone())))
                .and_then(|r| r.commits.get(sha).cloned());
            match pinned {
                Some(c) => commit = c,
                None => return hub_error(StatusCode::BAD_REQUEST, "", "Invalid cursor"),
            }
        }
    }
    let path = path.trim_matches('/');
    let Some(entries) = commit.list(path, recursive) else {
        let mut refusal = hub_error(
            StatusCode::NOT_FOUND,
            "EntryNotFound",
            &format!("{path} does not exist on \"{rev}\""),
        );
        refusal
            .headers_mut()
            .insert("x-repo-commit", header_value(&commit.sha));
        return refusal;
    };
    let page_size = s.page_size.load(Ordering::Relaxed).max(1);
    let end = offset.saturating_add(page_size).min(entries.len());
    let page: Vec<Value> = entries
        .get(offset.min(entries.len())..end)
        .unwrap_or_default()
        .to_vec();
    let mut out = HeaderMap::new();
    if end < entries.len() {
        let mut next: Vec<&str> = query
            .split('&')
            .filter(|p| !p.is_empty() && !p.starts_with("cursor="))
            .collect();
        let cursor = format!("cursor={end}.{}", commit.sha);
        next.push(&cursor);
        let link = format!(
            "<{}{}?{}>; rel=\"next\"",
            s.origin(headers),
            uri.path(),
            next.join("&")
        );
        out.insert(header::LINK, header_value(&link));
    }
    (out, Json(Value::Array(page))).into_response()
}

async fn paths_info(
    State(s): State<Arc<Shared>>,
    UrlPath((kind, org, name, rev)): UrlPath<(String, String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    s.count("paths_info");
    let (_, commit) = match s.lookup(&kind, &org, &name, Some(&rev), &headers) {
        Ok(found) => found,
        Err(refusal) => return *refusal,
    };
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"))
        || body.trim_ascii_start().starts_with(b"{");
    let paths: Vec<String> = if is_json {
        let Ok(v) = serde_json::from_slice::<Value>(&body) else {
            return hub_error(StatusCode::BAD_REQUEST, "", "Invalid JSON body");
        };
        match v.get("paths") {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|p| p.as_str().map(str::to_string))
                .collect(),
            Some(Value::String(p)) => vec![p.clone()],
            _ => Vec::new(),
        }
    } else {
        form_pairs(&String::from_utf8_lossy(&body))
            .into_iter()
            .filter(|(k, _)| k == "paths" || k == "paths[]")
            .map(|(_, v)| v)
            .collect()
    };
    let mut seen = BTreeSet::new();
    let entries: Vec<Value> = paths
        .iter()
        .map(|p| p.trim_matches('/'))
        .filter(|p| seen.insert(p.to_string()))
        .filter_map(|p| commit.entry(p))
        .collect();
    Json(Value::Array(entries)).into_response()
}

async fn refs(
    State(s): State<Arc<Shared>>,
    UrlPath((kind, org, name)): UrlPath<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    s.count("refs");
    let (id, _) = match s.lookup(&kind, &org, &name, None, &headers) {
        Ok(found) => found,
        Err(refusal) => return *refusal,
    };
    let branches: Vec<Value> = {
        let repos = lock(&s.repos);
        Kind::parse(&kind)
            .and_then(|k| repos.get(&(k, id)))
            .map(|r| {
                r.branches
                    .iter()
                    .map(|(b, c)| {
                        json!({"name": b, "ref": format!("refs/heads/{b}"), "targetCommit": c.sha})
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    Json(json!({"branches": branches, "tags": [], "converts": []})).into_response()
}

async fn resolve_model(
    State(s): State<Arc<Shared>>,
    UrlPath((org, name, rev, path)): UrlPath<(String, String, String, String)>,
    headers: HeaderMap,
) -> Response {
    resolve(&s, "models", &org, &name, &rev, &path, &headers)
}

async fn resolve_dataset(
    State(s): State<Arc<Shared>>,
    UrlPath((org, name, rev, path)): UrlPath<(String, String, String, String)>,
    headers: HeaderMap,
) -> Response {
    resolve(&s, "datasets", &org, &name, &rev, &path, &headers)
}

fn resolve(
    s: &Arc<Shared>,
    kind: &str,
    org: &str,
    name: &str,
    rev: &str,
    path: &str,
    headers: &HeaderMap,
) -> Response {
    s.count("resolve");
    let (id, commit) = match s.lookup(kind, org, name, Some(rev), headers) {
        Ok(found) => found,
        Err(refusal) => return *refusal,
    };
    let path = path.trim_matches('/');
    let mut out = HeaderMap::new();
    out.insert("x-repo-commit", header_value(&commit.sha));
    let Some(file) = commit.files.get(path) else {
        let mut refusal = hub_error(
            StatusCode::NOT_FOUND,
            "EntryNotFound",
            &format!("Entry not found: {path}"),
        );
        refusal.headers_mut().extend(out);
        return refusal;
    };
    if let Some(lfs) = &file.lfs {
        let location = format!("{}/_lfs/{}", s.cdn_url, lfs.sha256);
        out.insert(header::LOCATION, header_value(&location));
        out.insert(
            "x-linked-etag",
            header_value(&format!("\"{}\"", lfs.sha256)),
        );
        out.insert("x-linked-size", header_value(&file.size.to_string()));
        out.insert(header::ETAG, header_value(&format!("\"{}\"", lfs.sha256)));
        return (StatusCode::FOUND, out).into_response();
    }
    let corrupted = s.corrupted(&[(id, path.to_string())]);
    serve_content(
        s,
        file.disk.clone(),
        file.size,
        &file.oid,
        corrupted,
        headers,
        out,
    )
}

async fn lfs_content(
    State(s): State<Arc<Shared>>,
    UrlPath(sha256): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    s.count("lfs");
    let object = {
        let lfs = lock(&s.lfs);
        lfs.get(&sha256.to_ascii_lowercase()).map(|o| {
            (
                o.disk.clone(),
                o.size,
                o.owners.iter().cloned().collect::<Vec<_>>(),
            )
        })
    };
    let Some((disk, size, owners)) = object else {
        return hub_error(StatusCode::NOT_FOUND, "EntryNotFound", "No such LFS object");
    };
    let corrupted = s.corrupted(&owners);
    serve_content(
        &s,
        disk,
        size,
        &sha256.to_ascii_lowercase(),
        corrupted,
        &headers,
        HeaderMap::new(),
    )
}

/// What a `Range` header asks of a body of some size.
#[derive(Debug, PartialEq, Eq)]
enum Span {
    /// The whole body (no header, or one not understood: ignored, as RFC 9110 allows).
    Full,
    /// Bytes `first..=last`.
    Part(u64, u64),
    /// Nothing of the body.
    Unsatisfiable,
}

fn parse_range(value: Option<&HeaderValue>, size: u64) -> Span {
    let Some(spec) = value
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix("bytes="))
    else {
        return Span::Full;
    };
    if spec.contains(',') {
        return Span::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Span::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        let Ok(n) = b.parse::<u64>() else {
            return Span::Full;
        };
        if n == 0 || size == 0 {
            return Span::Unsatisfiable;
        }
        return Span::Part(size - n.min(size), size - 1);
    }
    let Ok(first) = a.parse::<u64>() else {
        return Span::Full;
    };
    let last = if b.is_empty() {
        u64::MAX
    } else {
        match b.parse::<u64>() {
            Ok(last) if last >= first => last,
            _ => return Span::Full,
        }
    };
    if first >= size {
        return Span::Unsatisfiable;
    }
    Span::Part(first, last.min(size - 1))
}

/// A file body (or the range asked of it), streamed from disk.
fn serve_content(
    s: &Arc<Shared>,
    disk: PathBuf,
    size: u64,
    etag: &str,
    corrupted: BTreeSet<u64>,
    req: &HeaderMap,
    mut out: HeaderMap,
) -> Response {
    out.insert(header::ETAG, header_value(&format!("\"{etag}\"")));
    out.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let (status, first, end) = match parse_range(req.get(header::RANGE), size) {
        Span::Full => (StatusCode::OK, 0, size),
        Span::Part(first, last) => {
            out.insert(
                header::CONTENT_RANGE,
                header_value(&format!("bytes {first}-{last}/{size}")),
            );
            (StatusCode::PARTIAL_CONTENT, first, last + 1)
        }
        Span::Unsatisfiable => {
            out.insert(
                header::CONTENT_RANGE,
                header_value(&format!("bytes */{size}")),
            );
            return (StatusCode::RANGE_NOT_SATISFIABLE, out, Body::empty()).into_response();
        }
    };
    out.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    out.insert(
        header::CONTENT_LENGTH,
        header_value(&(end - first).to_string()),
    );
    (
        status,
        out,
        file_body(s.clone(), disk, first, end, corrupted),
    )
        .into_response()
}

/// Where a body stream is.
struct BodyState {
    shared: Arc<Shared>,
    disk: PathBuf,
    file: Option<tokio::fs::File>,
    pos: u64,
    end: u64,
    corrupted: BTreeSet<u64>,
}

/// Bytes `first..end` of `disk`, in chunks, paced by the rate cap, corrupted as asked.
fn file_body(
    shared: Arc<Shared>,
    disk: PathBuf,
    first: u64,
    end: u64,
    corrupted: BTreeSet<u64>,
) -> Body {
    let state = BodyState {
        shared,
        disk,
        file: None,
        pos: first,
        end,
        corrupted,
    };
    let stream = futures_util::stream::unfold(Some(state), |state| async move {
        let mut st = state?;
        if st.pos >= st.end {
            return None;
        }
        match next_chunk(&mut st).await {
            Ok(chunk) => Some((Ok(chunk), Some(st))),
            Err(e) => Some((Err(e), None)),
        }
    });
    Body::from_stream(stream)
}

async fn next_chunk(st: &mut BodyState) -> io::Result<Bytes> {
    let file = match &mut st.file {
        Some(file) => file,
        None => {
            let mut file = tokio::fs::File::open(&st.disk).await?;
            file.seek(io::SeekFrom::Start(st.pos)).await?;
            st.file.insert(file)
        }
    };
    let rate = st.shared.rate.load(Ordering::Relaxed);
    let chunk = if rate == 0 {
        MAX_CHUNK
    } else {
        (rate / 16).clamp(1024, MAX_CHUNK)
    };
    let n = chunk.min(st.end - st.pos);
    st.shared.pace(n).await;
    let mut buf = vec![0u8; n as usize];
    file.read_exact(&mut buf).await?;
    for &offset in st.corrupted.range(st.pos..st.pos + n) {
        buf[(offset - st.pos) as usize] ^= 0xff;
    }
    st.pos += n;
    st.shared.bytes_served.fetch_add(n, Ordering::Relaxed);
    Ok(Bytes::from(buf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt as _;

    /// A response as the raw test client read it.
    struct Resp {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Resp {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }

        fn json(&self) -> Value {
            serde_json::from_slice(&self.body).expect("JSON body")
        }
    }

    /// One HTTP/1.1 request on a fresh connection (`Connection: close`); `target` is a path
    /// or an absolute `http://` URL.
    async fn http(
        origin: &HubOrigin,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Resp {
        let url = origin.url();
        let (host, path) = match target.strip_prefix("http://") {
            Some(absolute) => {
                let slash = absolute.find('/').unwrap_or(absolute.len());
                (absolute[..slash].to_string(), &absolute[slash..])
            }
            None => (url.trim_start_matches("http://").to_string(), target),
        };
        let mut stream = tokio::net::TcpStream::connect(&host)
            .await
            .expect("connect");
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        stream.write_all(req.as_bytes()).await.expect("write");
        stream.write_all(body).await.expect("write body");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.expect("read");
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("end of head");
        let head = String::from_utf8(raw[..split].to_vec()).expect("ASCII head");
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|c| c.parse().ok())
            .expect("status line");
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let mut body = raw[split + 4..].to_vec();
        let chunked = headers
            .iter()
            .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
        if chunked {
            let mut out = Vec::new();
            let mut rest = &body[..];
            loop {
                let eol = rest
                    .windows(2)
                    .position(|w| w == b"\r\n")
                    .expect("chunk size");
                let size_text = std::str::from_utf8(&rest[..eol]).expect("chunk size");
                let size = usize::from_str_radix(size_text.trim(), 16).expect("chunk size");
                rest = &rest[eol + 2..];
                if size == 0 {
                    break;
                }
                out.extend_from_slice(&rest[..size]);
                rest = &rest[size + 2..];
            }
            body = out;
        }
        Resp {
            status,
            headers,
            body,
        }
    }

    async fn get(origin: &HubOrigin, target: &str) -> Resp {
        http(origin, "GET", target, &[], b"").await
    }

    /// A folder: `config.json`, `model.safetensors` ("hello\n"), `a/x.txt`, `a/b/y.txt`,
    /// `a/b/z.txt`, `c/w.txt`, `big.txt` (300 KiB of a pattern).
    fn folder() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |rel: &str, content: &[u8]| {
            let path = dir.path().join(rel);
            fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            fs::write(path, content).expect("write");
        };
        write("config.json", b"{\"hidden_size\": 8}\n");
        write("model.safetensors", b"hello\n");
        write("a/x.txt", b"x");
        write("a/b/y.txt", b"y");
        write("a/b/z.txt", b"zz");
        write("c/w.txt", b"w");
        let big: Vec<u8> = (0..300 * 1024).map(|i| (i % 251) as u8).collect();
        write("big.txt", &big);
        dir
    }

    #[test]
    fn hub_origin_ids() {
        assert_eq!(
            git_blob_sha1(6, &b"hello\n"[..]).expect("hash"),
            "ce013625030ba8dba906f756967f9e9ca394464a"
        );
        assert_eq!(
            git_blob_sha1(0, &b""[..]).expect("hash"),
            "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
        );
        assert!(git_blob_sha1(7, &b"hello\n"[..]).is_err());
        let (sha256, n) = sha256_hex(&b"hello\n"[..]).expect("hash");
        assert_eq!(n, 6);
        assert_eq!(
            sha256,
            "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
        );
        let pointer = lfs_pointer(&sha256, 6);
        assert_eq!(pointer.len(), 126);
        assert_eq!(
            git_blob_sha1(126, pointer.as_bytes()).expect("hash"),
            "fa61e1ef71c9908c0926776a4aa3504b3a27f159"
        );
        assert!(is_lfs("model.safetensors", 6));
        assert!(is_lfs("data/train.parquet", 1));
        assert!(is_lfs("a/notes.txt", 10 * 1024 * 1024));
        assert!(!is_lfs("a/notes.txt", 10 * 1024 * 1024 - 1));
        assert!(!is_lfs("bin/readme", 3));
        assert!(!is_lfs("config.json", 3));
        assert_eq!(iso8601(FIRST_COMMIT_TIME), "2026-01-02T03:04:05.000Z");
        assert_eq!(iso8601(951_782_400), "2000-02-29T00:00:00.000Z");
        assert_eq!(parse_range(None, 10), Span::Full);
        let range = |s: &str, size| parse_range(Some(&HeaderValue::from_str(s).expect("v")), size);
        assert_eq!(range("bytes=2-4", 10), Span::Part(2, 4));
        assert_eq!(range("bytes=2-", 10), Span::Part(2, 9));
        assert_eq!(range("bytes=-3", 10), Span::Part(7, 9));
        assert_eq!(range("bytes=-30", 10), Span::Part(0, 9));
        assert_eq!(range("bytes=5-100", 10), Span::Part(5, 9));
        assert_eq!(range("bytes=10-", 10), Span::Unsatisfiable);
        assert_eq!(range("bytes=-0", 10), Span::Unsatisfiable);
        assert_eq!(range("bytes=4-2", 10), Span::Full);
        assert_eq!(form_decode("a%2Fb+c%zz"), "a/b c%zz");
    }

    #[tokio::test]
    async fn hub_origin_api_and_lfs() {
        let dir = folder();
        let origin = HubOrigin::start().await.expect("start");
        let sha = origin
            .publish("model", "acme/tiny", dir.path(), "main")
            .await
            .expect("publish");
        assert!(is_commit_sha(&sha));

        let info = get(&origin, "/api/models/acme/tiny").await;
        assert_eq!(info.status, 200);
        let info = info.json();
        assert_eq!(info["id"], "acme/tiny");
        assert_eq!(info["modelId"], "acme/tiny");
        assert_eq!(info["sha"], sha.as_str());
        assert_eq!(info["gated"], false);
        assert_eq!(info["lastModified"], "2026-01-02T03:04:05.000Z");
        let siblings: Vec<&str> = info["siblings"]
            .as_array()
            .expect("siblings")
            .iter()
            .map(|s| s["rfilename"].as_str().expect("rfilename"))
            .collect();
        assert_eq!(
            siblings,
            [
                "a/b/y.txt",
                "a/b/z.txt",
                "a/x.txt",
                "big.txt",
                "c/w.txt",
                "config.json",
                "model.safetensors"
            ]
        );

        // The LFS file's ids, as paths-info (a form body, as `requests` sends it) gives them.
        let resp = http(
            &origin,
            "POST",
            &format!("/api/models/acme/tiny/paths-info/{sha}"),
            &[("Content-Type", "application/x-www-form-urlencoded")],
            b"paths=model.safetensors&paths=a%2Fb&paths=nope&expand=False",
        )
        .await;
        assert_eq!(resp.status, 200);
        let entries = resp.json();
        assert_eq!(entries.as_array().map(Vec::len), Some(2));
        assert_eq!(entries[0]["type"], "file");
        assert_eq!(entries[0]["path"], "model.safetensors");
        assert_eq!(
            entries[0]["oid"],
            "fa61e1ef71c9908c0926776a4aa3504b3a27f159"
        );
        assert_eq!(entries[0]["size"], 6);
        assert_eq!(
            entries[0]["lfs"]["oid"],
            "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
        );
        assert_eq!(entries[0]["lfs"]["size"], 6);
        assert_eq!(entries[0]["lfs"]["pointerSize"], 126);
        assert_eq!(entries[1]["type"], "directory");
        assert_eq!(entries[1]["path"], "a/b");
        let resp = http(
            &origin,
            "POST",
            "/api/models/acme/tiny/paths-info/main",
            &[("Content-Type", "application/json")],
            br#"{"paths": ["config.json"]}"#,
        )
        .await;
        assert_eq!(
            resp.json()[0]["oid"],
            git_blob_sha1(19, &b"{\"hidden_size\": 8}\n"[..]).expect("hash")
        );
        assert!(resp.json()[0].get("lfs").is_none());

        // Non-recursive listing of a folder given URL-encoded.
        let resp = get(&origin, "/api/models/acme/tiny/tree/main/a%2Fb").await;
        let paths: Vec<String> = resp
            .json()
            .as_array()
            .expect("list")
            .iter()
            .map(|e| e["path"].as_str().expect("path").to_string())
            .collect();
        assert_eq!(paths, ["a/b/y.txt", "a/b/z.txt"]);
        let resp = get(&origin, "/api/models/acme/tiny/tree/main/nope").await;
        assert_eq!(resp.status, 404);
        assert_eq!(resp.header("x-error-code"), Some("EntryNotFound"));

        // The LFS file redirects to its content.
        let resp = http(
            &origin,
            "HEAD",
            "/acme/tiny/resolve/main/model.safetensors",
            &[],
            b"",
        )
        .await;
        assert_eq!(resp.status, 302);
        let sha256 = "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03";
        assert_eq!(resp.header("x-repo-commit"), Some(sha.as_str()));
        assert_eq!(
            resp.header("x-linked-etag"),
            Some(format!("\"{sha256}\"").as_str())
        );
        assert_eq!(resp.header("x-linked-size"), Some("6"));
        let location = resp.header("location").expect("location").to_string();
        assert_eq!(location, format!("{}/_lfs/{sha256}", origin.cdn_url()));
        assert_ne!(origin.cdn_url(), origin.url());
        let resp = get(&origin, &location).await;
        assert_eq!(resp.status, 200);
        assert_eq!(resp.body, b"hello\n");
        assert_eq!(resp.header("etag"), Some(format!("\"{sha256}\"").as_str()));

        // Refs, missing things.
        let refs = get(&origin, "/api/models/acme/tiny/refs").await.json();
        assert_eq!(refs["branches"][0]["name"], "main");
        assert_eq!(refs["branches"][0]["targetCommit"], sha.as_str());
        let resp = get(&origin, "/acme/tiny/resolve/main/missing.txt").await;
        assert_eq!(resp.status, 404);
        assert_eq!(resp.header("x-error-code"), Some("EntryNotFound"));
        assert_eq!(resp.header("x-repo-commit"), Some(sha.as_str()));
        assert!(resp.json()["error"].is_string());
        let resp = get(&origin, "/acme/nope/resolve/main/config.json").await;
        assert_eq!(resp.header("x-error-code"), Some("RepoNotFound"));
        let resp = get(&origin, "/datasets/acme/tiny/resolve/main/config.json").await;
        assert_eq!(resp.header("x-error-code"), Some("RepoNotFound"));
        let resp = get(&origin, "/acme/tiny/resolve/dev/config.json").await;
        assert_eq!(resp.status, 404);
        assert_eq!(resp.header("x-error-code"), Some("RevisionNotFound"));

        // A second commit; the first stays resolvable by id.
        let second = tempfile::tempdir().expect("tempdir");
        fs::write(second.path().join("config.json"), b"{}\n").expect("write");
        let sha2 = origin
            .publish("model", "acme/tiny", second.path(), "main")
            .await
            .expect("publish");
        assert_ne!(sha, sha2);
        let resp = get(&origin, "/acme/tiny/resolve/main/config.json").await;
        assert_eq!(resp.body, b"{}\n");
        assert_eq!(resp.header("x-repo-commit"), Some(sha2.as_str()));
        let resp = get(&origin, &format!("/acme/tiny/resolve/{sha}/config.json")).await;
        assert_eq!(resp.body, b"{\"hidden_size\": 8}\n");
        assert_eq!(
            get(&origin, "/api/models/acme/tiny").await.json()["lastModified"],
            "2026-01-02T04:04:05.000Z"
        );
        assert_eq!(origin.requests("resolve"), 7);
        assert_eq!(origin.requests("lfs"), 1);
        assert_eq!(origin.requests("paths_info"), 2);
    }

    #[tokio::test]
    async fn hub_origin_tree_pagination() {
        let dir = folder();
        let origin = HubOrigin::start().await.expect("start");
        origin
            .publish("dataset", "acme/data", dir.path(), "main")
            .await
            .expect("publish");
        origin.set_page_size(2);
        let mut next =
            Some("/api/datasets/acme/data/tree/main?recursive=True&expand=False".to_string());
        let mut seen = Vec::new();
        let mut pages = 0;
        while let Some(target) = next.take() {
            let resp = get(&origin, &target).await;
            assert_eq!(resp.status, 200);
            let page = resp.json();
            let page = page.as_array().expect("list");
            assert!(page.len() <= 2);
            for e in page {
                seen.push((
                    e["path"].as_str().expect("path").to_string(),
                    e["type"].as_str().expect("type").to_string(),
                ));
            }
            pages += 1;
            next = resp.header("link").map(|link| {
                assert!(link.ends_with("; rel=\"next\""), "{link}");
                let url = link
                    .strip_prefix('<')
                    .and_then(|l| l.split_once('>'))
                    .expect("<url>")
                    .0;
                assert!(url.starts_with(&origin.url()), "{url}");
                url.to_string()
            });
        }
        let expected = [
            ("a", "directory"),
            ("a/b", "directory"),
            ("a/b/y.txt", "file"),
            ("a/b/z.txt", "file"),
            ("a/x.txt", "file"),
            ("big.txt", "file"),
            ("c", "directory"),
            ("c/w.txt", "file"),
            ("config.json", "file"),
            ("model.safetensors", "file"),
        ];
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(p, t)| (p.to_string(), t.to_string()))
            .collect();
        assert_eq!(seen, expected);
        assert_eq!(pages, 5);
        assert_eq!(origin.requests("tree"), 5);

        // Non-recursive root listing: direct children only.
        origin.set_page_size(1000);
        let resp = get(&origin, "/api/datasets/acme/data/tree/main").await;
        assert!(resp.header("link").is_none());
        let paths: Vec<String> = resp
            .json()
            .as_array()
            .expect("list")
            .iter()
            .map(|e| e["path"].as_str().expect("path").to_string())
            .collect();
        assert_eq!(
            paths,
            ["a", "big.txt", "c", "config.json", "model.safetensors"]
        );
    }

    #[tokio::test]
    async fn hub_origin_ranges_gating_corruption() {
        let dir = folder();
        let big = fs::read(dir.path().join("big.txt")).expect("read");
        let origin = HubOrigin::start().await.expect("start");
        let sha = origin
            .publish("model", "acme/tiny", dir.path(), "main")
            .await
            .expect("publish");
        let oid = git_blob_sha1(big.len() as u64, &big[..]).expect("hash");

        // Ranges.
        let url = "/acme/tiny/resolve/main/big.txt";
        let resp = http(&origin, "GET", url, &[("Range", "bytes=1000-1009")], b"").await;
        assert_eq!(resp.status, 206);
        assert_eq!(resp.body, &big[1000..1010]);
        assert_eq!(
            resp.header("content-range"),
            Some(format!("bytes 1000-1009/{}", big.len()).as_str())
        );
        assert_eq!(resp.header("content-length"), Some("10"));
        let resp = http(&origin, "GET", url, &[("Range", "bytes=-5")], b"").await;
        assert_eq!(resp.body, &big[big.len() - 5..]);
        let resp = http(&origin, "GET", url, &[("Range", "bytes=307000-")], b"").await;
        assert_eq!(resp.status, 206);
        assert_eq!(resp.body, &big[307_000..]);
        let resp = http(&origin, "GET", url, &[("Range", "bytes=999999-")], b"").await;
        assert_eq!(resp.status, 416);
        assert_eq!(
            resp.header("content-range"),
            Some(format!("bytes */{}", big.len()).as_str())
        );
        let resp = http(&origin, "HEAD", url, &[], b"").await;
        assert_eq!(resp.status, 200);
        assert_eq!(
            resp.header("content-length"),
            Some(big.len().to_string().as_str())
        );
        assert_eq!(resp.header("etag"), Some(format!("\"{oid}\"").as_str()));
        assert_eq!(resp.header("x-repo-commit"), Some(sha.as_str()));
        assert_eq!(resp.header("accept-ranges"), Some("bytes"));
        assert!(resp.body.is_empty());
        origin.reset_counters();
        let resp = get(&origin, url).await;
        assert_eq!(resp.status, 200);
        assert_eq!(resp.body, big);
        assert_eq!(origin.bytes_served(), big.len() as u64);
        assert_eq!(origin.requests("resolve"), 1);

        // Corruption: exactly one byte differs, the ids don't.
        origin.corrupt("acme/tiny", "big.txt", 200_000);
        origin.corrupt("acme/tiny", "model.safetensors", 0);
        let resp = get(&origin, url).await;
        assert_eq!(resp.body.len(), big.len());
        let differ: Vec<usize> = (0..big.len()).filter(|&i| resp.body[i] != big[i]).collect();
        assert_eq!(differ, [200_000]);
        assert_eq!(resp.body[200_000], big[200_000] ^ 0xff);
        assert_eq!(resp.header("etag"), Some(format!("\"{oid}\"").as_str()));
        let resp = http(
            &origin,
            "GET",
            url,
            &[("Range", "bytes=199999-200001")],
            b"",
        )
        .await;
        assert_eq!(resp.body, [big[199_999], big[200_000] ^ 0xff, big[200_001]]);
        let resp = get(&origin, "/acme/tiny/resolve/main/model.safetensors").await;
        let location = resp.header("location").expect("location").to_string();
        assert_eq!(get(&origin, &location).await.body, b"\x97ello\n");

        // Gating.
        origin.require_token("acme/tiny", "SECRET");
        for target in [
            url,
            "/api/models/acme/tiny",
            "/api/models/acme/tiny/tree/main",
        ] {
            let resp = get(&origin, target).await;
            assert_eq!(resp.status, 401, "{target}");
            assert_eq!(resp.header("x-error-code"), Some("GatedRepo"));
            assert!(resp.json()["error"].is_string());
        }
        let resp = http(
            &origin,
            "GET",
            url,
            &[("Authorization", "Bearer WRONG")],
            b"",
        )
        .await;
        assert_eq!(resp.status, 401);
        let auth = [("Authorization", "Bearer SECRET")];
        let resp = http(&origin, "GET", "/api/models/acme/tiny", &auth, b"").await;
        assert_eq!(resp.status, 200);
        assert_eq!(resp.json()["gated"], "auto");
        let resp = http(&origin, "GET", url, &auth, b"").await;
        assert_eq!(resp.status, 200);
        assert_eq!(resp.body.len(), big.len());
    }

    #[tokio::test]
    async fn hub_origin_rate_and_stop() {
        let dir = folder();
        let origin = HubOrigin::start().await.expect("start");
        origin
            .publish("model", "acme/tiny", dir.path(), "main")
            .await
            .expect("publish");
        origin.set_rate(1024 * 1024);
        let started = Instant::now();
        let resp = get(&origin, "/acme/tiny/resolve/main/big.txt").await;
        assert_eq!(resp.body.len(), 300 * 1024);
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(250), "{elapsed:?}");
        let host = origin.url().trim_start_matches("http://").to_string();
        origin.stop();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(tokio::net::TcpStream::connect(&host).await.is_err());
    }
}
