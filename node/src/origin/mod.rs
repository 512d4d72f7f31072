//! Hub-compatible origins (the Hugging Face Hub, a campus mirror of it) as verified
//! sources: `commons add hf://org/name@rev` and mirror entries `{ hf = "org/name" }`.
//!
//! An import resolves the revision to a commit and lists the commit's files with their Hub
//! ids (small metadata, always from the origin). Then, **peers first**: the DHT key of the
//! commit (`hub::hub_commit_key`) names nodes that imported it; each is asked for its root
//! (`Request::Upstream`), the manifest is fetched and must list exactly the origin's files
//! with the origin's ids, and the files are swarmed from peers. Every file that came from
//! peers is then hashed again with SHA-256 / git SHA-1 and must match the origin's ids: a
//! peer cannot substitute data under the right names. **The origin for the rest**: each
//! missing file is streamed from the origin into the store, hashed (BLAKE3, SHA-256, git
//! SHA-1) in the same pass, and kept only if its Hub id matches the listing.
//!
//! A file is complete (and remembered under its Hub id) as soon as it is checked, so an
//! interrupted import resumes with the next file; a file interrupted half-way starts again
//! (its Hub id can only be checked whole). The dataset (manifest version 2, with the
//! upstream commit) is recorded, pinned, named `org/name@revision` and `org/name@<commit>`,
//! and announced with its commit key once every file is held.

pub mod client;
pub mod source;

use std::sync::Arc;

use commons_protocol::{Hash, HubIds, Manifest, ManifestEntry, TicketKind, Upstream};
use tokio_util::io::{StreamReader, SyncIoBridge};

use crate::{
    api::{ApiError, ErrorKind, Progress, ProgressEvent},
    fetch::{self, FetchOptions, GetTarget},
    include::Include,
    net::PeerAddrs,
    node::Node,
    store::StoreError,
};
use client::{HubClient, ListedFile, OriginError};
pub use source::{HubSource, ImportOutcome};

/// Peers asked for their root of a commit, at most.
pub const MAX_COMMIT_PEERS: usize = 8;
/// Roots (peers' manifests) tried for one commit, at most: each costs a manifest fetch.
pub const MAX_CANDIDATE_ROOTS: usize = 8;

impl From<OriginError> for ApiError {
    fn from(e: OriginError) -> Self {
        let kind = match &e {
            OriginError::Status { status: 404, .. } => ErrorKind::NotFound,
            OriginError::Status {
                status: 401 | 403, ..
            }
            | OriginError::Invalid(_) => ErrorKind::InvalidInput,
            OriginError::Transport { .. } => ErrorKind::Io,
            _ => ErrorKind::Peer,
        };
        Self::new(kind, e.to_string())
    }
}

/// What is known of a commit before any file is fetched.
struct Commit {
    client: HubClient,
    upstream: Upstream,
    files: Vec<ListedFile>,
}

/// Imports `source` into the store (see the module doc). `use_peers`: look for other
/// holders of the commit first (a node with a network).
pub async fn import(
    node: &Node,
    source: &HubSource,
    use_peers: bool,
    progress: &Progress,
) -> Result<ImportOutcome, ApiError> {
    let commit = resolve(source).await?;
    let total: u64 = commit.files.iter().map(|f| f.size).sum();
    let mut refused_peers = Vec::new();
    let mut peer_bytes = 0;
    if use_peers && !all_held(node, &commit.files).await? {
        match from_peers(node, &commit, &mut refused_peers, progress).await {
            Ok(bytes) => peer_bytes = bytes,
            Err(e) => {
                tracing::info!(source = %source.label(), error = %e, "no copy from peers; the origin gives the rest")
            }
        }
    }
    progress.event(ProgressEvent::Start {
        files: commit.files.len() as u64,
        bytes: total,
    });
    let mut entries = Vec::with_capacity(commit.files.len());
    let (mut origin_bytes, mut held_files) = (0, 0);
    for file in &commit.files {
        let (etag, size) = (file.ids.etag(), file.size);
        let held = node.store().run(move |s| s.hub_file(&etag, size)).await?;
        let (hash, ids) = match held {
            Some(held) => {
                held_files += 1;
                progress.event(ProgressEvent::Advance { bytes: file.size });
                held
            }
            None => {
                let fetched = from_origin(node, &commit, file, progress).await?;
                origin_bytes += file.size;
                fetched
            }
        };
        progress.event(ProgressEvent::FileDone);
        entries.push(ManifestEntry {
            path: file.path.clone(),
            size: file.size,
            hash,
            executable: false,
            hub: Some(ids),
        });
    }
    let manifest = Manifest::with_upstream(entries, Some(commit.upstream.clone()))
        .map_err(|e| ApiError::new(ErrorKind::Peer, format!("{}: {e}", source.label())))?;
    let root = record(node, &manifest).await?;
    let names = bind_names(node, source, &commit.upstream, root).await;
    node.announce(root);
    node.announce(commit.upstream.dht_key());
    Ok(ImportOutcome {
        hash: root,
        source: source.label(),
        commit: commit.upstream.commit.to_string(),
        files: manifest.entries().len() as u64,
        size: total,
        origin_bytes,
        peer_bytes,
        held_files,
        refused_peers,
        names,
    })
}

/// The commit `source`'s revision points to now, and its files.
async fn resolve(source: &HubSource) -> Result<Commit, ApiError> {
    source
        .check()
        .map_err(|e| ApiError::new(ErrorKind::InvalidInput, e))?;
    let token = source
        .token()
        .map_err(|e| ApiError::new(ErrorKind::InvalidInput, e))?;
    let client = HubClient::new(source.origin(), token)?;
    let revision = client
        .revision(source.kind, &source.hf, &source.revision)
        .await?;
    let files = client
        .files(source.kind, &source.hf, &revision.commit)
        .await?;
    Ok(Commit {
        client,
        upstream: Upstream {
            kind: source.kind,
            repo: source.hf.clone(),
            commit: revision.commit,
            last_modified: revision.last_modified,
        },
        files,
    })
}

/// The commit a source's revision points to now (a mirror following a branch asks this
/// every interval: small metadata only).
pub async fn current_commit(source: &HubSource) -> Result<String, ApiError> {
    let token = source
        .token()
        .map_err(|e| ApiError::new(ErrorKind::InvalidInput, e))?;
    let client = HubClient::new(source.origin(), token)?;
    Ok(client
        .revision(source.kind, &source.hf, &source.revision)
        .await?
        .commit
        .to_string())
}

/// Whether every file is held already, checked under its Hub id.
async fn all_held(node: &Node, files: &[ListedFile]) -> Result<bool, ApiError> {
    let wanted: Vec<(String, u64)> = files.iter().map(|f| (f.ids.etag(), f.size)).collect();
    Ok(node
        .store()
        .run(move |s| {
            for (etag, size) in &wanted {
                if s.hub_file(etag, *size)?.is_none() {
                    return Ok::<_, StoreError>(false);
                }
            }
            Ok(true)
        })
        .await?)
}

/// Fetches the commit from peers that announced it, using the first root whose manifest
/// says what the origin says; checks each file's Hub ids. Returns the bytes received.
async fn from_peers(
    node: &Node,
    commit: &Commit,
    refused: &mut Vec<String>,
    progress: &Progress,
) -> Result<u64, ApiError> {
    let network = node.joined_network().await?;
    let key = commit.upstream.dht_key();
    let lookup = network
        .host
        .find_providers(key, MAX_COMMIT_PEERS, true)
        .await
        .map_err(ApiError::from)?;
    let mut candidates: Vec<(Hash, PeerAddrs)> = Vec::new();
    for peer in lookup.providers.into_iter().take(MAX_COMMIT_PEERS) {
        if peer.peer == network.host.peer_id() {
            continue;
        }
        let _ = network.host.connect(peer.peer, peer.addrs.clone()).await;
        match crate::transfer::ask_upstream(&network.host, peer.peer, key).await {
            Ok(roots) => {
                for root in roots {
                    if candidates.len() < MAX_CANDIDATE_ROOTS
                        && !candidates.iter().any(|(r, _)| *r == root)
                    {
                        candidates.push((root, peer.clone()));
                    }
                }
            }
            Err(e) => tracing::debug!(peer = %peer.peer, error = %e, "no answer for a Hub commit"),
        }
    }
    if candidates.is_empty() {
        return Err(ApiError::new(
            ErrorKind::NotFound,
            format!(
                "no peer announced {} at {}",
                commit.upstream.repo, commit.upstream.commit
            ),
        ));
    }
    for (root, peer) in candidates {
        let before = node.stats().total().bytes_received;
        match from_peer_root(node, network, commit, root, &peer, progress).await {
            Ok(()) => return Ok(node.stats().total().bytes_received - before),
            Err(why) => {
                tracing::warn!(peer = %peer.peer, %root, reason = %why, "refused a peer's copy of a Hub commit");
                refused.push(format!("{} (root {root}): {why}", peer.peer));
            }
        }
    }
    Err(ApiError::new(
        ErrorKind::Peer,
        "every peer's copy was refused".to_string(),
    ))
}

/// Fetches dataset `root` from `peer` (and whoever else holds it), after checking its
/// manifest against the origin's listing, and checks the files it brought.
async fn from_peer_root(
    node: &Node,
    network: &crate::node::Network,
    commit: &Commit,
    root: Hash,
    peer: &PeerAddrs,
    progress: &Progress,
) -> Result<(), String> {
    // The manifest alone first, unpinned, at most the largest manifest's size.
    let manifest_only = GetTarget {
        hash: root,
        kind: Some(TicketKind::Blob),
        providers: vec![peer.clone()],
    };
    let options = FetchOptions {
        max_bytes: Some(commons_protocol::manifest::MAX_MANIFEST_BYTES * 2),
        ..FetchOptions::unpinned()
    };
    fetch::get(
        node,
        network,
        &manifest_only,
        &Include::default(),
        options,
        &Progress::none(),
    )
    .await
    .map_err(|e| format!("cannot fetch its manifest: {e}"))?;
    let manifest = node
        .store()
        .run(move |s| s.read_manifest(&root))
        .await
        .map_err(|e| format!("its manifest does not parse: {e}"))?;
    check_manifest(&manifest, commit)?;
    let dataset = GetTarget {
        hash: root,
        kind: Some(TicketKind::Dataset),
        providers: vec![peer.clone()],
    };
    let fetched = fetch::get(
        node,
        network,
        &dataset,
        &Include::default(),
        FetchOptions::unpinned(),
        progress,
    )
    .await;
    // Whatever arrived is checked against the origin's ids, file by file; what is
    // missing or wrong comes from the origin.
    let mut wrong = Vec::new();
    for (entry, file) in manifest.entries().iter().zip(&commit.files) {
        let (hash, listed) = (entry.hash, file.ids);
        let checked = node
            .store()
            .run(move |s| match s.blob(&hash)? {
                Some(m) if m.state == crate::store::BlobState::Complete => {
                    s.check_hub_file(&hash, &listed)
                }
                _ => Ok(None),
            })
            .await;
        if let Ok(None) = checked {
            wrong.push(file.path.clone());
        }
    }
    match (fetched, wrong.is_empty()) {
        (Ok(_), true) => Ok(()),
        (Ok(_), false) => Err(format!(
            "its data for {} does not match the origin's ids",
            wrong.join(", ")
        )),
        (Err(e), _) => Err(format!("fetch incomplete: {e}")),
    }
}

/// A peer's manifest must list exactly the origin's files, sizes and Hub ids, for the
/// same commit.
fn check_manifest(manifest: &Manifest, commit: &Commit) -> Result<(), String> {
    let up = manifest
        .upstream()
        .ok_or("its manifest names no upstream commit")?;
    if up.kind != commit.upstream.kind
        || up.repo != commit.upstream.repo
        || up.commit != commit.upstream.commit
    {
        return Err(format!(
            "its manifest is for {} {} at {}",
            up.kind, up.repo, up.commit
        ));
    }
    if manifest.entries().len() != commit.files.len() {
        return Err(format!(
            "its manifest lists {} files, the origin {}",
            manifest.entries().len(),
            commit.files.len()
        ));
    }
    for (entry, file) in manifest.entries().iter().zip(&commit.files) {
        let agrees = entry.path == file.path
            && entry.size == file.size
            && !entry.executable
            && entry.hub.is_some_and(|ids| file.ids.matches(&ids));
        if !agrees {
            return Err(format!(
                "its manifest's entry {:?} differs from the origin's {:?} (path, size or Hub ids)",
                entry.path, file.path
            ));
        }
    }
    Ok(())
}

/// Streams one file from the origin into the store, checked against its Hub id.
async fn from_origin(
    node: &Node,
    commit: &Commit,
    file: &ListedFile,
    progress: &Progress,
) -> Result<(Hash, HubIds), ApiError> {
    let up = &commit.upstream;
    let (response, _) = commit
        .client
        .file(up.kind, &up.repo, &up.commit, &file.path, 0)
        .await?;
    let origin = commit.client.base().to_string();
    if let Some(len) = response.content_length() {
        if len != file.size {
            return Err(ApiError::new(
                ErrorKind::Peer,
                format!(
                    "{origin} sends {len} bytes for {}, which its listing says has {}",
                    file.path, file.size
                ),
            ));
        }
    }
    let stream = futures_util::TryStreamExt::map_err(response.bytes_stream(), |e| {
        std::io::Error::other(client::describe(&e))
    });
    let reader = SyncIoBridge::new(StreamReader::new(stream));
    let (path, size, listed) = (file.path.clone(), file.size, file.ids);
    let sink: Arc<Progress> = Arc::new(progress.clone());
    let imported = node
        .store()
        .run(move |s| s.add_hub_file(reader, size, &path, &listed, sink.as_ref()))
        .await;
    match imported {
        Ok((blob, ids)) => Ok((blob.hash, ids)),
        Err(StoreError::FileChanged { .. }) => Err(ApiError::new(
            ErrorKind::Peer,
            format!(
                "{origin} sent a different number of bytes for {} than the {} its listing says; nothing of it was kept",
                file.path, file.size
            ),
        )),
        Err(e @ StoreError::HubIdMismatch { .. }) => Err(ApiError::new(
            ErrorKind::Corrupt,
            format!(
                "refused {} from {origin}: {e}; nothing of it was kept",
                file.path
            ),
        )),
        Err(e) => {
            Err(ApiError::from(e)
                .context(format_args!("cannot import {} from {origin}", file.path)))
        }
    }
}

/// Stores the manifest as a blob, records the dataset and pins it; returns its root.
async fn record(node: &Node, manifest: &Manifest) -> Result<Hash, ApiError> {
    let manifest = manifest.clone();
    Ok(node
        .store()
        .run(move |s| {
            let root = s.add_manifest(&manifest)?;
            s.record_dataset(&root, &manifest, true)?;
            if let Some(up) = manifest.upstream() {
                s.remember_upstream(&up.dht_key(), &root)?;
            }
            Ok::<_, StoreError>(root)
        })
        .await?)
}

/// Binds `org/name@revision` and `org/name@commit` to `root` (the gateway then serves both
/// revisions, and older commits stay reachable by their id). A repository id that is not a
/// valid local name is not bound.
async fn bind_names(node: &Node, source: &HubSource, up: &Upstream, root: Hash) -> Vec<String> {
    let name = source.name.clone().unwrap_or_else(|| up.repo.clone());
    let Ok(name) = commons_protocol::DatasetName::parse(&name) else {
        return Vec::new();
    };
    let revisions = if source.revision == up.commit.to_string() {
        vec![source.revision.clone()]
    } else {
        vec![source.revision.clone(), up.commit.to_string()]
    };
    let mut bound = Vec::new();
    for revision in revisions {
        let (n, r) = (name.clone(), revision.clone());
        match node.store().run(move |s| s.set_name(&n, &r, &root)).await {
            Ok(_) => bound.push(format!("{name}@{revision}")),
            Err(e) => tracing::warn!(%name, revision, error = %e, "cannot bind the name"),
        }
    }
    bound
}
