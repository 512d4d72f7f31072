//! Hugging Face Hub compatible endpoints: what `huggingface_hub` (and so `transformers`
//! and `datasets`) call, so `HF_ENDPOINT=http://<mirror>` downloads from a Commons mirror
//! with every client unchanged. The mapping is documented in `docs/gateway.md`.
//!
//! A repository `org/name` is a dataset bound to that name on this node; a revision is a
//! revision of the name (`main` unless given) or a commit id. A repository's *commit* is
//! the upstream Hub commit when the manifest records one (a dataset imported from the Hub),
//! otherwise the first 40 hex digits of the dataset's root hash (the client expects 40 hex
//! digits, and asking by commit must give the same files). A file's ids are the Hub's (git
//! blob id, SHA-256 for LFS) when the manifest records them, so the client's cache and
//! `hf cache verify` check what it downloaded; otherwise the BLAKE3 hash. Models and
//! datasets share the names.
//!
//! - `GET /api/{models|datasets}/{org}/{name}[/revision/{rev}]`: repository info;
//! - `GET /api/{models|datasets}/{org}/{name}/tree/{rev}[/{path}]`: the entries under a
//!   folder (`?recursive=true` for everything below), [`TREE_PAGE_SIZE`] a page with a
//!   `Link` header to the next;
//! - `POST /api/{models|datasets}/{org}/{name}/paths-info/{rev}`: the entries of the paths
//!   given (form or JSON body);
//! - `GET /api/{models|datasets}/{org}/{name}/refs`: the name's revisions as branches;
//! - `GET|HEAD /{org}/{name}/resolve/{rev}/{path}` and
//!   `/datasets/{org}/{name}/resolve/{rev}/{path}`: a file, with `X-Repo-Commit`, `ETag`
//!   (and `X-Linked-Etag`, `X-Linked-Size` for LFS files), `Content-Length` and byte
//!   ranges.

use std::{ops::Range, sync::Arc};

use axum::{
    body::Bytes,
    extract::{DefaultBodyLimit, Path, Query, State},
    http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use commons_protocol::{
    hub::{lfs_pointer, RepoKind},
    name::DEFAULT_REVISION,
    DatasetName, Hash, Manifest, ManifestEntry,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{error, Gateway, Refusal, Request};

mod paths_body;

use crate::store::NameEntry;
use paths_body::parse_paths;

/// Hex digits of a root hash used as the repository's commit id.
const COMMIT_ID_HEX: usize = 40;
/// Entries per page of a tree listing, at most (the Hub's page size).
pub const TREE_PAGE_SIZE: usize = 1000;
/// Largest `paths-info` request body: a client asks for a few paths at a time.
pub const MAX_PATHS_INFO_BODY: usize = 1 << 20;

/// The routes, to be merged into the gateway's router.
pub(super) fn routes() -> Router<Gateway> {
    Router::new()
        .route("/api/{kind}/{org}/{name}", get(info_main))
        .route("/api/{kind}/{org}/{name}/revision/{*rev}", get(info))
        .route("/api/{kind}/{org}/{name}/tree/{rev}", get(tree_root))
        .route("/api/{kind}/{org}/{name}/tree/{rev}/{*path}", get(tree))
        .route(
            "/api/{kind}/{org}/{name}/paths-info/{*rev}",
            post(paths_info).layer(DefaultBodyLimit::max(MAX_PATHS_INFO_BODY)),
        )
        .route("/api/{kind}/{org}/{name}/refs", get(refs))
        .route("/{org}/{name}/resolve/{rev}/{*path}", get(resolve_model))
        .route(
            "/datasets/{org}/{name}/resolve/{rev}/{*path}",
            get(resolve_dataset),
        )
}

/// The commit id of a dataset root that records no upstream commit.
pub fn commit_id(root: &Hash) -> String {
    root.to_string()[..COMMIT_ID_HEX].to_string()
}

/// The commit the Hub endpoints give dataset `root`: its upstream commit if recorded (so a
/// client's cache names the snapshot as the Hub does), else [`commit_id`].
fn repo_commit(root: &Hash, manifest: &Manifest) -> String {
    match manifest.upstream() {
        Some(up) => up.commit.to_string(),
        None => commit_id(root),
    }
}

/// Whether `rev` has the form of a commit id (40 hex digits).
fn is_commit(rev: &str) -> bool {
    rev.len() == COMMIT_ID_HEX && rev.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A refusal in the Hub's form.
fn hub_error(status: StatusCode, code: &'static str, message: &str) -> Refusal {
    error(status, message).hub(code)
}

/// The Hub's 404 for a path missing from an existing commit. It carries the commit, so
/// `huggingface_hub` records the file as missing for that commit (`.no_exist`) and its
/// callers do not ask again.
fn entry_not_found(repo: &RepoAt, path: &str) -> Refusal {
    hub_error(
        StatusCode::NOT_FOUND,
        "EntryNotFound",
        &format!("{} has no file or folder {path:?}", repo.id),
    )
    .with_header("X-Repo-Commit", &repo.commit)
}

/// A repository at one revision, as the Hub endpoints describe it.
struct RepoAt {
    /// `org/name`.
    id: String,
    /// The dataset the revision names.
    root: Hash,
    manifest: Arc<Manifest>,
    /// See [`repo_commit`].
    commit: String,
    /// When the revision was bound here (unix seconds).
    bound_at: u64,
    /// When the name was first bound here (unix seconds).
    first_bound_at: u64,
}

impl Gateway {
    /// The bindings of `org/name`, or the Hub's `RepoNotFound`.
    async fn bindings(&self, org: &str, name: &str) -> Result<(String, Vec<NameEntry>), Refusal> {
        let repo = format!("{org}/{name}");
        let name = DatasetName::parse(&repo)
            .map_err(|e| hub_error(StatusCode::NOT_FOUND, "RepoNotFound", &e.to_string()))?;
        let bindings = self
            .store
            .run(move |s| s.revisions(&name))
            .await
            .map_err(super::internal)?;
        if bindings.is_empty() {
            return Err(hub_error(
                StatusCode::NOT_FOUND,
                "RepoNotFound",
                &format!("no repository {repo} on this mirror"),
            ));
        }
        Ok((repo, bindings))
    }

    /// Repository `org/name` of type `kind` at `rev`: a revision bound here (`refs/heads/`
    /// allowed before it), or a commit id (the root's, or an upstream commit a bound dataset
    /// records). A dataset imported from the Hub answers only as the type it has there.
    async fn repo_at(
        &self,
        kind: RepoKind,
        org: &str,
        name: &str,
        rev: &str,
    ) -> Result<RepoAt, Refusal> {
        let (id, bindings) = self.bindings(org, name).await?;
        let branch = rev.strip_prefix("refs/heads/").unwrap_or(rev);
        let found = match bindings.iter().find(|b| b.revision == branch) {
            Some(b) => Some((b, self.manifest(b.root).await?)),
            None if is_commit(rev) => self.by_commit(&bindings, rev).await,
            None => None,
        };
        let (binding, manifest) = found.ok_or_else(|| {
            hub_error(
                StatusCode::NOT_FOUND,
                "RevisionNotFound",
                &format!("{id} has no revision {rev:?} on this mirror"),
            )
        })?;
        let trusted_name = DatasetName::parse(&id).ok();
        if let Some(name) = trusted_name {
            if let Some(why) = self.untrusted(&name, binding.root).await {
                return Err(hub_error(StatusCode::FORBIDDEN, "UnsignedRepo", &why));
            }
        }
        if let Some(up) = manifest.upstream().filter(|up| up.kind != kind) {
            return Err(hub_error(
                StatusCode::NOT_FOUND,
                "RepoNotFound",
                &format!(
                    "{id} is a {} repository on this mirror, not a {kind}",
                    up.kind
                ),
            ));
        }
        Ok(RepoAt {
            id,
            root: binding.root,
            commit: repo_commit(&binding.root, &manifest),
            manifest,
            bound_at: binding.set_at,
            first_bound_at: bindings.iter().map(|b| b.set_at).min().unwrap_or_default(),
        })
    }

    /// The binding whose dataset has commit `commit`: by root, else by the upstream commit
    /// its manifest records (a dataset added from a Hub cache snapshot is bound as `main`
    /// only). A manifest that cannot be read is skipped: it cannot be served either.
    async fn by_commit<'b>(
        &self,
        bindings: &'b [NameEntry],
        commit: &str,
    ) -> Option<(&'b NameEntry, Arc<Manifest>)> {
        let commit = commit.to_ascii_lowercase();
        let by_root = bindings.iter().find(|b| commit_id(&b.root) == commit);
        if let Some(b) = by_root {
            return Some((b, self.manifest(b.root).await.ok()?));
        }
        for b in bindings {
            let Ok(manifest) = self.manifest(b.root).await else {
                continue;
            };
            if manifest
                .upstream()
                .is_some_and(|up| up.commit.to_string() == commit)
            {
                return Some((b, manifest));
            }
        }
        None
    }
}

/// The repository type an API path names (`models` or `datasets`).
fn repo_kind(kind: &str) -> Result<RepoKind, Refusal> {
    match kind {
        "models" => Ok(RepoKind::Model),
        "datasets" => Ok(RepoKind::Dataset),
        _ => Err(error(
            StatusCode::NOT_FOUND,
            &format!("repositories of type {kind:?} are not mirrored (models and datasets are)"),
        )),
    }
}

async fn info_main(
    State(gw): State<Gateway>,
    Path((kind, org, name)): Path<(String, String, String)>,
) -> Result<Response, Refusal> {
    info_at(&gw, &kind, &org, &name, DEFAULT_REVISION).await
}

async fn info(
    State(gw): State<Gateway>,
    Path((kind, org, name, rev)): Path<(String, String, String, String)>,
) -> Result<Response, Refusal> {
    info_at(&gw, &kind, &org, &name, &rev).await
}

async fn info_at(
    gw: &Gateway,
    kind: &str,
    org: &str,
    name: &str,
    rev: &str,
) -> Result<Response, Refusal> {
    let kind = repo_kind(kind)?;
    let repo = gw.repo_at(kind, org, name, rev).await?;
    Ok(Json(info_json(kind, &repo)).into_response())
}

/// Repository info: what `repo_info`/`model_info`/`dataset_info` read. `lastModified` is
/// the upstream commit's time when known, else when the revision was bound here;
/// `createdAt` the upstream commit's time, else when the name was first bound here (the
/// client parses both as dates: they must be valid ISO 8601).
fn info_json(kind: RepoKind, repo: &RepoAt) -> serde_json::Value {
    let upstream_time = repo
        .manifest
        .upstream()
        .and_then(|up| up.last_modified.clone());
    let last_modified = upstream_time
        .clone()
        .unwrap_or_else(|| iso8601(repo.bound_at));
    let created = upstream_time.unwrap_or_else(|| iso8601(repo.first_bound_at));
    let siblings: Vec<Sibling> = repo.manifest.entries().iter().map(Sibling::of).collect();
    let id_hash = Hash::of(format!("repo\0{kind}\0{}", repo.id).as_bytes());
    let mut info = json!({
        "_id": &id_hash.to_string()[..24],
        "id": repo.id,
        "author": repo.id.split('/').next(),
        "sha": repo.commit,
        "createdAt": created,
        "lastModified": last_modified,
        "private": false,
        "gated": false,
        "disabled": false,
        "downloads": 0,
        "likes": 0,
        "tags": [],
        "cardData": {},
        "siblings": siblings,
        "usedStorage": repo.manifest.total_size(),
    });
    if let (RepoKind::Model, Some(map)) = (kind, info.as_object_mut()) {
        map.insert("modelId".into(), json!(repo.id));
        map.insert("pipeline_tag".into(), serde_json::Value::Null);
    }
    info
}

/// `secs` since the Unix epoch as the Hub writes times: `YYYY-MM-DDTHH:MM:SS.000Z`.
fn iso8601(secs: u64) -> String {
    // Howard Hinnant's days_from_civil, inverted (civil_from_days).
    let days = (secs / 86_400) as i64 + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    let rest = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.000Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// A file's id: its git blob id (of the LFS pointer for an LFS file) when the manifest
/// records Hub ids, else its BLAKE3 hash.
fn file_oid(e: &ManifestEntry) -> String {
    match &e.hub {
        Some(ids) => ids.git_oid.to_string(),
        None => e.hash.to_string(),
    }
}

/// An LFS file's ids, if the manifest says it is one.
fn lfs_of(e: &ManifestEntry) -> Option<LfsInfo> {
    let ids = e.hub.filter(|ids| ids.lfs)?;
    Some(LfsInfo {
        oid: ids.sha256.to_string(),
        size: e.size,
        pointer_size: lfs_pointer(&ids.sha256, e.size).len(),
    })
}

/// The `lfs` of a tree entry: `oid` is the SHA-256 of the content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct LfsInfo {
    oid: String,
    size: u64,
    #[serde(rename = "pointerSize")]
    pointer_size: usize,
}

/// The `lfs` of a sibling in repository info: the same ids, the SHA-256 named `sha256`
/// (what `RepoSibling` reads).
#[derive(Debug, Serialize)]
struct SiblingLfs {
    sha256: String,
    size: u64,
    #[serde(rename = "pointerSize")]
    pointer_size: usize,
}

impl From<LfsInfo> for SiblingLfs {
    fn from(lfs: LfsInfo) -> Self {
        SiblingLfs {
            sha256: lfs.oid,
            size: lfs.size,
            pointer_size: lfs.pointer_size,
        }
    }
}

/// One of `siblings` in repository info.
#[derive(Debug, Serialize)]
struct Sibling<'a> {
    rfilename: &'a str,
    size: u64,
    #[serde(rename = "blobId")]
    blob_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    lfs: Option<SiblingLfs>,
}

impl<'a> Sibling<'a> {
    fn of(e: &'a ManifestEntry) -> Self {
        Sibling {
            rfilename: &e.path,
            size: e.size,
            blob_id: file_oid(e),
            lfs: lfs_of(e).map(SiblingLfs::from),
        }
    }
}

/// An entry of a tree listing or of `paths-info`, in the Hub's form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum TreeEntry<'a> {
    /// A file.
    File {
        oid: String,
        size: u64,
        path: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        lfs: Option<LfsInfo>,
    },
    /// A folder: its `oid` stands in for the Hub's git tree id (clients only carry it).
    Directory {
        oid: String,
        size: u64,
        path: &'a str,
    },
}

impl<'a> TreeEntry<'a> {
    fn file(e: &'a ManifestEntry) -> Self {
        TreeEntry::File {
            oid: file_oid(e),
            size: e.size,
            path: &e.path,
            lfs: lfs_of(e),
        }
    }

    /// Folder `path` of dataset `root`: its id changes with the dataset, as a tree id does.
    fn directory(root: &Hash, path: &'a str) -> Self {
        let id = Hash::of(&[root.as_bytes(), b"\0".as_slice(), path.as_bytes()].concat());
        TreeEntry::Directory {
            oid: commit_id(&id),
            size: 0,
            path,
        }
    }

    fn path(&self) -> &'a str {
        match self {
            TreeEntry::File { path, .. } | TreeEntry::Directory { path, .. } => path,
        }
    }
}

/// The entries below folder `prefix` (empty, or ending in `/`): a slice, as entries are
/// sorted by path bytes.
fn entries_below<'a>(manifest: &'a Manifest, prefix: &str) -> &'a [ManifestEntry] {
    let entries = manifest.entries();
    let start = entries.partition_point(|e| e.path.as_bytes() < prefix.as_bytes());
    let len = entries[start..]
        .iter()
        .take_while(|e| e.path.starts_with(prefix))
        .count();
    &entries[start..start + len]
}

/// The folder prefix of `dir` (`""` for the root, else `dir/`).
fn folder_prefix(dir: &str) -> String {
    if dir.is_empty() {
        String::new()
    } else {
        format!("{dir}/")
    }
}

/// The tree listing of `dir` (`""` for the root) in dataset `root`, sorted by path like the
/// Hub's: its direct children, or with `recursive` everything below it, folders included. A
/// file's listing is the file itself; `None` when there is no such file or folder.
fn listing<'a>(
    manifest: &'a Manifest,
    root: &Hash,
    dir: &str,
    recursive: bool,
) -> Option<Vec<TreeEntry<'a>>> {
    if let Some(file) = manifest.entry(dir) {
        return Some(vec![TreeEntry::file(file)]);
    }
    let prefix = folder_prefix(dir);
    let below = entries_below(manifest, &prefix);
    if below.is_empty() && !dir.is_empty() {
        return None;
    }
    let mut folders = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for e in below {
        let rest = &e.path[prefix.len()..];
        let mut slashes = rest.match_indices('/').map(|(i, _)| prefix.len() + i);
        if recursive {
            folders.extend(slashes.map(|end| &e.path[..end]));
            out.push(TreeEntry::file(e));
        } else if let Some(end) = slashes.next() {
            folders.insert(&e.path[..end]);
        } else {
            out.push(TreeEntry::file(e));
        }
    }
    out.extend(folders.into_iter().map(|p| TreeEntry::directory(root, p)));
    out.sort_by(|a, b| a.path().as_bytes().cmp(b.path().as_bytes()));
    Some(out)
}

/// The part of a listing of `total` entries one request gets.
#[derive(Debug, PartialEq, Eq)]
struct Page {
    /// The entries to send.
    range: Range<usize>,
    /// The cursor of the next page, if there is one.
    next: Option<usize>,
}

/// Page `cursor..` of a listing of `total` entries, at most `limit` (≥ 1) long.
fn page(total: usize, cursor: usize, limit: usize) -> Page {
    let start = cursor.min(total);
    let end = start.saturating_add(limit.max(1)).min(total);
    Page {
        range: start..end,
        next: (end < total).then_some(end),
    }
}

/// What a tree listing's query may say (`expand`, and anything else, is ignored).
#[derive(Debug, Default, Deserialize)]
struct TreeQuery {
    /// `true`, `True` or `1` for everything below the folder.
    #[serde(default)]
    recursive: Option<String>,
    /// Where the page starts (from a `Link` header).
    #[serde(default)]
    cursor: Option<String>,
    /// Entries per page wanted, at most [`TREE_PAGE_SIZE`].
    #[serde(default)]
    limit: Option<String>,
}

impl TreeQuery {
    fn recursive(&self) -> bool {
        matches!(
            self.recursive.as_deref(),
            Some("true" | "True" | "TRUE" | "1")
        )
    }

    /// The first entry and page length asked for.
    fn window(&self) -> Result<(usize, usize), Refusal> {
        let number = |what: &str, v: &Option<String>| {
            v.as_deref()
                .map(|s| {
                    s.parse::<usize>()
                        .map_err(|_| error(StatusCode::BAD_REQUEST, &format!("bad {what} {s:?}")))
                })
                .transpose()
        };
        let cursor = number("cursor", &self.cursor)?.unwrap_or(0);
        let limit = number("limit", &self.limit)?.map_or(TREE_PAGE_SIZE, |n| n.min(TREE_PAGE_SIZE));
        Ok((cursor, limit))
    }
}

async fn tree_root(
    State(gw): State<Gateway>,
    Path((kind, org, name, rev)): Path<(String, String, String, String)>,
    Query(q): Query<TreeQuery>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    let at = TreeAt {
        org,
        name,
        rev,
        path: String::new(),
    };
    tree_at(gw, &kind, at, q, &uri, &headers).await
}

async fn tree(
    State(gw): State<Gateway>,
    Path((kind, org, name, rev, path)): Path<(String, String, String, String, String)>,
    Query(q): Query<TreeQuery>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    let at = TreeAt {
        org,
        name,
        rev,
        path,
    };
    tree_at(gw, &kind, at, q, &uri, &headers).await
}

/// The folder a tree listing is of.
struct TreeAt {
    org: String,
    name: String,
    rev: String,
    path: String,
}

/// One page of the listing under a folder: what `list_repo_tree` and `HfFileSystem` read.
async fn tree_at(
    gw: Gateway,
    kind: &str,
    at: TreeAt,
    q: TreeQuery,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Response, Refusal> {
    let kind = repo_kind(kind)?;
    let (cursor, limit) = q.window()?;
    let repo = gw.repo_at(kind, &at.org, &at.name, &at.rev).await?;
    let dir = at.path.trim_matches('/');
    let entries = listing(&repo.manifest, &repo.root, dir, q.recursive())
        .ok_or_else(|| entry_not_found(&repo, dir))?;
    let page = page(entries.len(), cursor, limit);
    let mut response = Json(&entries[page.range]).into_response();
    if let Some(next) = page.next {
        let link = next_link(uri, headers, &commit_id(&repo.root), next);
        if let Ok(v) = HeaderValue::from_str(&link) {
            response.headers_mut().insert(header::LINK, v);
        }
    }
    Ok(response)
}

/// The `Link` header to the page at `cursor`: the same request with the revision replaced
/// by the dataset's root commit id (every page then lists the same dataset, even if the
/// revision is bound anew meanwhile) and the cursor set. Absolute when the request named
/// its host (the client follows it as given).
fn next_link(uri: &Uri, headers: &HeaderMap, pinned: &str, cursor: usize) -> String {
    // `/api/{kind}/{org}/{name}/tree/{rev}[/{path}]`: the revision is the 7th part.
    let mut parts: Vec<&str> = uri.path().splitn(8, '/').collect();
    if parts.len() >= 7 && parts[5] == "tree" {
        parts[6] = pinned;
    }
    let cursor = format!("cursor={cursor}");
    let mut query: Vec<&str> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("cursor="))
        .collect();
    query.push(&cursor);
    format!(
        "<{}{}?{}>; rel=\"next\"",
        base_url(headers),
        parts.join("/"),
        query.join("&")
    )
}

/// `scheme://host` as the client addressed this gateway (`https` behind a proxy that says
/// so), or nothing when the request did not name a usable host.
fn base_url(headers: &HeaderMap) -> String {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let Some(host) = text(header::HOST.as_str()).filter(|h| {
        !h.is_empty()
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b))
    }) else {
        return String::new();
    };
    let scheme = match text("x-forwarded-proto") {
        Some(p) if p.eq_ignore_ascii_case("https") => "https",
        _ => "http",
    };
    format!("{scheme}://{host}")
}

/// Why a `paths-info` body was refused.
/// The entries (files and folders) of the `paths` that exist, in the order asked, each once.
fn paths_info_entries<'a>(
    manifest: &'a Manifest,
    root: &Hash,
    paths: &'a [String],
) -> Vec<TreeEntry<'a>> {
    let mut seen = std::collections::HashSet::new();
    paths
        .iter()
        .map(|p| p.trim_matches('/'))
        .filter(|p| !p.is_empty() && seen.insert(*p))
        .filter_map(|p| match manifest.entry(p) {
            Some(file) => Some(TreeEntry::file(file)),
            None => (!entries_below(manifest, &folder_prefix(p)).is_empty())
                .then(|| TreeEntry::directory(root, p)),
        })
        .collect()
}

/// `paths-info`: what `get_paths_info` and `HfFileSystem` ask for a few paths at once.
async fn paths_info(
    State(gw): State<Gateway>,
    Path((kind, org, name, rev)): Path<(String, String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Refusal> {
    let kind = repo_kind(&kind)?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let paths = parse_paths(content_type, &body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, &e.to_string()))?;
    let repo = gw.repo_at(kind, &org, &name, &rev).await?;
    let entries = paths_info_entries(&repo.manifest, &repo.root, &paths);
    Ok(Json(entries).into_response())
}

/// A branch in `refs`.
#[derive(Debug, Serialize)]
struct Branch {
    name: String,
    #[serde(rename = "ref")]
    reference: String,
    #[serde(rename = "targetCommit")]
    target_commit: String,
}

/// `refs`: what `list_repo_refs` reads. Every revision bound here is a branch, except those
/// that are themselves commit ids (bound so older commits stay reachable). No tags, no
/// conversions.
async fn refs(
    State(gw): State<Gateway>,
    Path((kind, org, name)): Path<(String, String, String)>,
) -> Result<Response, Refusal> {
    repo_kind(&kind)?;
    let (_, bindings) = gw.bindings(&org, &name).await?;
    let mut branches = Vec::new();
    for b in bindings.iter().filter(|b| !is_commit(&b.revision)) {
        let manifest = gw.manifest(b.root).await?;
        branches.push(Branch {
            name: b.revision.clone(),
            reference: format!("refs/heads/{}", b.revision),
            target_commit: repo_commit(&b.root, &manifest),
        });
    }
    Ok(Json(json!({ "branches": branches, "tags": [], "converts": [] })).into_response())
}

/// The headers of a file answer besides the body's: the commit, and for a file with Hub
/// ids the ETag the Hub sends (SHA-256 for LFS, git blob id otherwise; the client names its
/// cached blob by it), with `X-Linked-Etag` and `X-Linked-Size` for an LFS file (which the
/// client reads first). Without Hub ids the gateway's BLAKE3 ETag stands.
fn file_headers(entry: &ManifestEntry, commit: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let mut put = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    };
    put("X-Repo-Commit", commit.to_string());
    if let Some(ids) = &entry.hub {
        let tag = format!("\"{}\"", ids.etag());
        if ids.lfs {
            put("X-Linked-Etag", tag.clone());
            put("X-Linked-Size", entry.size.to_string());
        }
        put(header::ETAG.as_str(), tag);
    }
    headers
}

/// A model's file (`/{org}/{name}/resolve/…`).
async fn resolve_model(
    State(gw): State<Gateway>,
    Path(at): Path<(String, String, String, String)>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    resolve(gw, RepoKind::Model, at, Request { method, headers }).await
}

/// A dataset's file (`/datasets/{org}/{name}/resolve/…`).
async fn resolve_dataset(
    State(gw): State<Gateway>,
    Path(at): Path<(String, String, String, String)>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    resolve(gw, RepoKind::Dataset, at, Request { method, headers }).await
}

/// One file, as `hf_hub_download` fetches it: `HEAD` for its metadata, then `GET`. An LFS
/// file is served here too (no redirect): the client takes a `2xx` with `X-Linked-Etag` as
/// the LFS file itself.
async fn resolve(
    gw: Gateway,
    kind: RepoKind,
    (org, name, rev, path): (String, String, String, String),
    request: Request,
) -> Result<Response, Refusal> {
    let repo = gw.repo_at(kind, &org, &name, &rev).await?;
    let entry = repo
        .manifest
        .entry(&path)
        .ok_or_else(|| entry_not_found(&repo, &path))?;
    let extra = file_headers(entry, &repo.commit);
    gw.file(repo.root, &repo.manifest, &path, &request, extra)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use commons_protocol::{
        hub::{GitOid, HubIds, Sha256, Upstream},
        ManifestEntry,
    };

    fn entry(path: &str) -> ManifestEntry {
        ManifestEntry {
            path: path.into(),
            size: 1,
            hash: Hash::of(path.as_bytes()),
            executable: false,
            hub: None,
        }
    }

    fn manifest(paths: &[&str]) -> Manifest {
        Manifest::new(paths.iter().map(|p| entry(p)).collect()).expect("valid")
    }

    fn kinds_and_paths(entries: &[TreeEntry<'_>]) -> Vec<String> {
        entries
            .iter()
            .map(|e| match e {
                TreeEntry::File { path, .. } => format!("file:{path}"),
                TreeEntry::Directory { path, .. } => format!("directory:{path}"),
            })
            .collect()
    }

    #[test]
    fn a_tree_lists_files_and_folders_like_the_hub() {
        let m = manifest(&[
            "config.json",
            "weights/a.safetensors",
            "weights/sub/b.bin",
            "weights-old.bin",
        ]);
        let root = Hash::of(b"root");
        let list =
            |dir, recursive| kinds_and_paths(&listing(&m, &root, dir, recursive).expect("exists"));
        assert_eq!(
            list("", false),
            [
                "file:config.json",
                "directory:weights",
                "file:weights-old.bin"
            ]
        );
        assert_eq!(
            list("", true),
            [
                "file:config.json",
                "directory:weights",
                "file:weights-old.bin",
                "file:weights/a.safetensors",
                "directory:weights/sub",
                "file:weights/sub/b.bin"
            ],
            "sorted by path bytes, as the Hub does ('-' before '/')"
        );
        assert_eq!(
            list("weights", false),
            ["file:weights/a.safetensors", "directory:weights/sub"]
        );
        assert_eq!(list("config.json", false), ["file:config.json"]);
        assert!(listing(&m, &root, "nope", false).is_none());
        assert!(listing(&m, &root, "weight", true).is_none());
        assert_eq!(list("", false).len(), 3, "the root of any dataset exists");
    }

    #[test]
    fn a_folder_id_is_forty_hex_and_depends_on_the_dataset() {
        let a = TreeEntry::directory(&Hash::of(b"a"), "data");
        let b = TreeEntry::directory(&Hash::of(b"b"), "data");
        assert_ne!(a, b);
        let TreeEntry::Directory { oid, size, .. } = a else {
            panic!("a folder")
        };
        assert!(is_commit(&oid) && size == 0);
        let json = serde_json::to_value(TreeEntry::directory(&Hash::of(b"a"), "d")).expect("json");
        assert_eq!(json["type"], "directory");
        assert_eq!(json["size"], 0);
    }

    #[test]
    fn pages_follow_each_other_to_the_end() {
        assert_eq!(
            page(5, 0, 2),
            Page {
                range: 0..2,
                next: Some(2)
            }
        );
        assert_eq!(
            page(5, 4, 2),
            Page {
                range: 4..5,
                next: None
            }
        );
        assert_eq!(page(5, 9, 2).range, 5..5, "a cursor past the end: empty");
        assert_eq!(page(0, 0, TREE_PAGE_SIZE).next, None);
        assert_eq!(page(3, 0, 0).range, 0..1, "a page holds at least one entry");
        let mut cursor = Some(0);
        let mut seen = Vec::new();
        while let Some(c) = cursor {
            let p = page(2001, c, TREE_PAGE_SIZE);
            seen.extend(p.range);
            cursor = p.next;
        }
        assert_eq!(seen, (0..2001).collect::<Vec<_>>());
    }

    #[test]
    fn a_next_link_pins_the_dataset_and_sets_the_cursor() {
        let uri: Uri =
            "/api/datasets/acme/data/tree/main/data%20x?recursive=True&cursor=2&expand=False"
                .parse()
                .expect("uri");
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        let pinned = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(
            next_link(&uri, &headers, pinned, 4),
            format!(
                "<http://127.0.0.1:8080/api/datasets/acme/data/tree/{pinned}/data%20x\
                 ?recursive=True&expand=False&cursor=4>; rel=\"next\""
            )
        );
        headers.insert(header::HOST, HeaderValue::from_static("evil>; x"));
        let root_only: Uri = "/api/models/a/b/tree/main".parse().expect("uri");
        assert_eq!(
            next_link(&root_only, &headers, pinned, 1000),
            format!("</api/models/a/b/tree/{pinned}?cursor=1000>; rel=\"next\"")
        );
        let mut proxied = HeaderMap::new();
        proxied.insert(header::HOST, HeaderValue::from_static("mirror.example"));
        proxied.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert_eq!(base_url(&proxied), "https://mirror.example");
    }

    #[test]
    fn paths_info_gives_files_and_folders_that_exist_once_in_order() {
        let m = manifest(&["a/b/y.txt", "a/x.txt", "config.json"]);
        let root = Hash::of(b"root");
        let asked: Vec<String> = ["config.json", "a/b", "nope", "a/b/", "a/x", "", "a"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            kinds_and_paths(&paths_info_entries(&m, &root, &asked)),
            ["file:config.json", "directory:a/b", "directory:a"]
        );
    }

    fn hub_entry(path: &str, lfs: bool) -> ManifestEntry {
        ManifestEntry {
            hub: Some(HubIds {
                git_oid: GitOid([0xab; 20]),
                sha256: Sha256([0xcd; 32]),
                lfs,
            }),
            size: 6,
            ..entry(path)
        }
    }

    #[test]
    fn files_with_hub_ids_carry_the_hubs_ids() {
        let plain = hub_entry("config.json", false);
        let h = file_headers(&plain, "c0ffee");
        assert_eq!(h["x-repo-commit"], "c0ffee");
        assert_eq!(h["etag"], format!("\"{}\"", "ab".repeat(20)).as_str());
        assert!(h.get("x-linked-etag").is_none());

        let lfs = hub_entry("model.safetensors", true);
        let h = file_headers(&lfs, "c0ffee");
        let sha = format!("\"{}\"", "cd".repeat(32));
        assert_eq!(h["etag"], sha.as_str());
        assert_eq!(h["x-linked-etag"], sha.as_str());
        assert_eq!(h["x-linked-size"], "6");

        let json = serde_json::to_value(TreeEntry::file(&lfs)).expect("json");
        assert_eq!(json["type"], "file");
        assert_eq!(json["oid"], "ab".repeat(20));
        assert_eq!(json["lfs"]["oid"], "cd".repeat(32));
        assert_eq!(json["lfs"]["size"], 6);
        let pointer = lfs_pointer(&Sha256([0xcd; 32]), 6);
        assert_eq!(json["lfs"]["pointerSize"], pointer.len());
        let sibling = serde_json::to_value(Sibling::of(&lfs)).expect("json");
        assert_eq!(sibling["blobId"], "ab".repeat(20));
        assert_eq!(sibling["lfs"]["sha256"], "cd".repeat(32));
        assert!(serde_json::to_value(TreeEntry::file(&plain)).expect("json")["lfs"].is_null());
    }

    #[test]
    fn files_without_hub_ids_keep_blake3() {
        let e = entry("config.json");
        let h = file_headers(&e, "c0ffee");
        assert!(h.get("etag").is_none(), "the gateway's BLAKE3 ETag stands");
        let json = serde_json::to_value(TreeEntry::file(&e)).expect("json");
        assert_eq!(json["oid"], e.hash.to_string());
        assert!(json["lfs"].is_null());
    }

    #[test]
    fn the_commit_is_the_upstream_one_when_recorded() {
        let root = Hash::of(b"root");
        let local = manifest(&["a"]);
        assert_eq!(repo_commit(&root, &local), commit_id(&root));
        let up = Upstream {
            kind: RepoKind::Model,
            repo: "acme/tiny".into(),
            commit: GitOid([0x12; 20]),
            last_modified: Some("2026-01-02T03:04:05.000Z".into()),
        };
        let imported = Manifest::with_upstream(vec![entry("a")], Some(up)).expect("valid");
        assert_eq!(repo_commit(&root, &imported), "12".repeat(20));
        let repo = RepoAt {
            id: "acme/tiny".into(),
            root,
            commit: repo_commit(&root, &imported),
            manifest: Arc::new(imported),
            bound_at: 0,
            first_bound_at: 0,
        };
        let info = info_json(RepoKind::Model, &repo);
        assert_eq!(info["sha"], "12".repeat(20));
        assert_eq!(info["lastModified"], "2026-01-02T03:04:05.000Z");
        assert_eq!(info["pipeline_tag"], serde_json::Value::Null);
        assert!(info["cardData"].is_object());
        let data = info_json(RepoKind::Dataset, &repo);
        assert!(data.get("modelId").is_none() && data.get("pipeline_tag").is_none());
    }

    #[test]
    fn a_commit_id_is_forty_hex_digits_of_the_root() {
        let root = Hash::of(b"root");
        let id = commit_id(&root);
        assert!(is_commit(&id));
        assert!(root.to_string().starts_with(&id));
        assert!(!is_commit("main") && !is_commit(&"g".repeat(40)));
    }

    #[test]
    fn times_are_iso_8601_utc_with_milliseconds() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(1_767_323_045), "2026-01-02T03:04:05.000Z");
        assert_eq!(iso8601(951_782_400), "2000-02-29T00:00:00.000Z");
    }
}
