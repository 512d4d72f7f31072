//! Hugging Face Hub compatible endpoints: what `huggingface_hub` (and so `transformers`
//! and `datasets`) call, so `HF_ENDPOINT=http://<mirror>` downloads from a Commons mirror.
//!
//! A repository `org/name` is a dataset bound to that name on this node; a revision is a
//! revision of the name (`main` unless given), and a repository's *commit id* is the first
//! 40 hex digits of the dataset's root hash (the client expects 40 hex digits, and asking
//! by commit id must give the same files). Models and datasets share the names.
//!
//! - `GET /api/{models|datasets}/{org}/{name}[/revision/{rev}]`: repository info (`sha`,
//!   `siblings`);
//! - `GET /api/{models|datasets}/{org}/{name}/tree/{rev}[/{path}]`: the file list
//!   (`?recursive=true` for everything below);
//! - `GET|HEAD /{org}/{name}/resolve/{rev}/{path}` and
//!   `/datasets/{org}/{name}/resolve/{rev}/{path}`: a file, with `X-Repo-Commit`, `ETag`,
//!   `Content-Length` and byte ranges.

use std::collections::{BTreeMap, BTreeSet};

use axum::{
    extract::{Path, Query, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use commons_protocol::{name::DEFAULT_REVISION, DatasetName, Hash, Manifest};
use serde::Deserialize;
use serde_json::json;

use super::{error, Gateway, Refusal, Request};

/// Hex digits of a root hash used as the repository's commit id.
const COMMIT_ID_HEX: usize = 40;

/// The routes, to be merged into the gateway's router.
pub(super) fn routes() -> Router<Gateway> {
    Router::new()
        .route("/api/{kind}/{org}/{name}", get(info_main))
        .route("/api/{kind}/{org}/{name}/revision/{rev}", get(info))
        .route("/api/{kind}/{org}/{name}/tree/{rev}", get(tree_root))
        .route("/api/{kind}/{org}/{name}/tree/{rev}/{*path}", get(tree))
        .route("/{org}/{name}/resolve/{rev}/{*path}", get(resolve))
        .route("/datasets/{org}/{name}/resolve/{rev}/{*path}", get(resolve))
}

/// The commit id of a dataset root.
pub fn commit_id(root: &Hash) -> String {
    root.to_string()[..COMMIT_ID_HEX].to_string()
}

/// A refusal in the Hub's form.
fn hub_error(status: StatusCode, code: &'static str, message: &str) -> Refusal {
    error(status, message).hub(code)
}

impl Gateway {
    /// The root of repository `org/name` at `rev` (a revision or a commit id).
    async fn repo_root(&self, org: &str, name: &str, rev: &str) -> Result<Hash, Refusal> {
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
        bindings
            .iter()
            .find(|b| b.revision == rev)
            .or_else(|| bindings.iter().find(|b| commit_id(&b.root) == rev))
            .map(|b| b.root)
            .ok_or_else(|| {
                hub_error(
                    StatusCode::NOT_FOUND,
                    "RevisionNotFound",
                    &format!("{repo} has no revision {rev:?} on this mirror"),
                )
            })
    }

    async fn repo_manifest(
        &self,
        org: &str,
        name: &str,
        rev: &str,
    ) -> Result<(Hash, std::sync::Arc<Manifest>), Refusal> {
        let root = self.repo_root(org, name, rev).await?;
        Ok((root, self.manifest(root).await?))
    }
}

fn check_kind(kind: &str) -> Result<(), Refusal> {
    match kind {
        "models" | "datasets" => Ok(()),
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
    info_at(gw, kind, org, name, DEFAULT_REVISION.to_string()).await
}

async fn info(
    State(gw): State<Gateway>,
    Path((kind, org, name, rev)): Path<(String, String, String, String)>,
) -> Result<Response, Refusal> {
    info_at(gw, kind, org, name, rev).await
}

/// Repository info: what `repo_info`/`model_info`/`dataset_info` read.
async fn info_at(
    gw: Gateway,
    kind: String,
    org: String,
    name: String,
    rev: String,
) -> Result<Response, Refusal> {
    check_kind(&kind)?;
    let (root, manifest) = gw.repo_manifest(&org, &name, &rev).await?;
    let siblings: Vec<_> = manifest
        .entries()
        .iter()
        .map(|e| json!({ "rfilename": e.path, "size": e.size }))
        .collect();
    let id = format!("{org}/{name}");
    Ok(Json(json!({
        "_id": root.to_string(),
        "id": id,
        "modelId": id,
        "sha": commit_id(&root),
        "private": false,
        "gated": false,
        "disabled": false,
        "downloads": 0,
        "likes": 0,
        "tags": [],
        "siblings": siblings,
        "usedStorage": manifest.total_size(),
    }))
    .into_response())
}

/// `?recursive=true|false` of a tree listing.
#[derive(Debug, Deserialize)]
struct TreeQuery {
    #[serde(default)]
    recursive: Option<String>,
}

async fn tree_root(
    State(gw): State<Gateway>,
    Path((kind, org, name, rev)): Path<(String, String, String, String)>,
    Query(q): Query<TreeQuery>,
) -> Result<Response, Refusal> {
    tree_at(gw, kind, org, name, rev, String::new(), q).await
}

async fn tree(
    State(gw): State<Gateway>,
    Path((kind, org, name, rev, path)): Path<(String, String, String, String, String)>,
    Query(q): Query<TreeQuery>,
) -> Result<Response, Refusal> {
    tree_at(gw, kind, org, name, rev, path, q).await
}

/// The file list under `path`: what `list_repo_tree` reads (one page: no `Link` header).
async fn tree_at(
    gw: Gateway,
    kind: String,
    org: String,
    name: String,
    rev: String,
    path: String,
    q: TreeQuery,
) -> Result<Response, Refusal> {
    check_kind(&kind)?;
    let (_, manifest) = gw.repo_manifest(&org, &name, &rev).await?;
    let recursive = matches!(q.recursive.as_deref(), Some("true" | "True" | "1"));
    Ok(Json(tree_entries(&manifest, path.trim_matches('/'), recursive)).into_response())
}

/// Files (and, when not recursive, folders) below `dir` in the Hub's tree format. A
/// folder's `oid` is a hash of its path (the Hub's is a git tree id; clients only carry it).
fn tree_entries(manifest: &Manifest, dir: &str, recursive: bool) -> Vec<serde_json::Value> {
    let prefix = if dir.is_empty() {
        String::new()
    } else {
        format!("{dir}/")
    };
    let mut folders = BTreeSet::new();
    let mut files = BTreeMap::new();
    for e in manifest.entries() {
        let Some(rest) = e.path.strip_prefix(&prefix) else {
            continue;
        };
        match rest.split_once('/') {
            Some((folder, _)) if !recursive => {
                folders.insert(format!("{prefix}{folder}"));
            }
            _ => {
                files.insert(e.path.clone(), e);
            }
        }
    }
    let folders = folders.into_iter().map(|path| {
        json!({ "type": "directory", "path": path, "oid": commit_id(&Hash::of(path.as_bytes())) })
    });
    let files = files.into_values().map(
        |e| json!({ "type": "file", "path": e.path, "size": e.size, "oid": e.hash.to_string() }),
    );
    folders.chain(files).collect()
}

/// One file, as `hf_hub_download` fetches it: `HEAD` for its metadata, then `GET`. The
/// same for models and datasets.
async fn resolve(
    State(gw): State<Gateway>,
    Path((org, name, rev, path)): Path<(String, String, String, String)>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    let request = Request { method, headers };
    let (root, manifest) = gw.repo_manifest(&org, &name, &rev).await?;
    if manifest.entry(&path).is_none() {
        return Err(hub_error(
            StatusCode::NOT_FOUND,
            "EntryNotFound",
            &format!("{org}/{name} has no file {path:?}"),
        ));
    }
    let mut extra = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&commit_id(&root)) {
        extra.insert("X-Repo-Commit", v);
    }
    gw.file(root, &manifest, &path, &request, extra).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use commons_protocol::ManifestEntry;

    #[test]
    fn a_tree_lists_files_and_folders_like_the_hub() {
        let entry = |path: &str| ManifestEntry {
            path: path.into(),
            size: 1,
            hash: Hash::of(path.as_bytes()),
            executable: false,
            hub: None,
        };
        let manifest = Manifest::new(vec![
            entry("config.json"),
            entry("weights/a.safetensors"),
            entry("weights/sub/b.bin"),
        ])
        .expect("valid");
        let paths = |v: Vec<serde_json::Value>| -> Vec<String> {
            v.iter()
                .map(|e| {
                    format!(
                        "{}:{}",
                        e["type"].as_str().unwrap_or(""),
                        e["path"].as_str().unwrap_or("")
                    )
                })
                .collect()
        };
        assert_eq!(
            paths(tree_entries(&manifest, "", false)),
            ["directory:weights", "file:config.json"]
        );
        assert_eq!(
            paths(tree_entries(&manifest, "", true)),
            [
                "file:config.json",
                "file:weights/a.safetensors",
                "file:weights/sub/b.bin"
            ]
        );
        assert_eq!(
            paths(tree_entries(&manifest, "weights", false)),
            ["directory:weights/sub", "file:weights/a.safetensors"]
        );
    }

    #[test]
    fn a_commit_id_is_forty_hex_digits_of_the_root() {
        let root = Hash::of(b"root");
        let id = commit_id(&root);
        assert_eq!(id.len(), 40);
        assert!(root.to_string().starts_with(&id));
    }
}
