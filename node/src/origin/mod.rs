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
    store::{ImportProgress, StoreError},
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

/// Imports `source` into the store (see the module doc). `use_peers`: take what peers hold
/// of the commit (a running node).
pub async fn import(
    node: &Node,
    source: &HubSource,
    use_peers: bool,
    progress: &Progress,
) -> Result<ImportOutcome, ApiError> {
    let commit = resolve(source).await?;
    let total = commit
        .files
        .iter()
        .try_fold(0u64, |sum, f| sum.checked_add(f.size))
        .ok_or_else(|| {
            ApiError::new(
                ErrorKind::Peer,
                format!("{}: the listed sizes overflow", source.label()),
            )
        })?;
    // A repository read with a token is gated or private: it is neither taken from nor
    // announced to peers, and its files are never named to them.
    let private = source.token_file.is_some();
    let received_before = node.stats().total().bytes_received;
    let mut refused_peers = Vec::new();
    let mut seeds = if use_peers && !private && !all_held(node, &commit.files).await? {
        Seeds::find(node, &commit).await
    } else {
        None
    };
    if let Some(seeds) = &mut seeds {
        if let Err(e) = from_peers(node, &commit, seeds, &mut refused_peers, progress).await {
            tracing::info!(source = %source.label(), error = %e, "no whole copy from peers; files come from peers that have them and from the origin");
        }
    }
    progress.event(ProgressEvent::Start {
        files: commit.files.len() as u64,
        bytes: total,
    });
    let mut found: Vec<Option<(Hash, HubIds)>> = vec![None; commit.files.len()];
    // Kept from garbage collection until the dataset is recorded (and pinned).
    let mut holds = Vec::with_capacity(commit.files.len());
    let (mut origin_bytes, mut held_files) = (0, 0);
    // A file a peer is downloading goes to the back of the queue once (others first); when
    // it comes round again the peer may hold it.
    let mut queue: std::collections::VecDeque<(usize, Option<std::time::Instant>)> =
        file_order(seeds.as_ref(), commit.files.len())
            .into_iter()
            .map(|i| (i, None))
            .collect();
    while let Some((i, deferred)) = queue.pop_front() {
        let file = &commit.files[i];
        let (etag, size) = (file.ids.etag(), file.size);
        let held = node
            .store()
            .run(move |s| {
                // Looked up and held in one step: no collection can come between.
                let held = s.hub_file(&etag, size)?;
                Ok::<_, StoreError>(held.map(|(hash, ids)| (hash, ids, s.hold([hash]))))
            })
            .await?;
        let (hash, ids, hold) = match held {
            Some((hash, held_ids, hold)) => {
                held_files += 1;
                progress.event(ProgressEvent::Advance { bytes: file.size });
                // The ids as this listing gives them (the same content: the same etag).
                let ids = HubIds {
                    git_oid: file.ids.git_oid,
                    sha256: held_ids.sha256,
                    lfs: file.ids.lfs_sha256.is_some(),
                };
                (hash, ids, hold)
            }
            None => {
                let from_peer = match &mut seeds {
                    Some(seeds) => {
                        seeds.refresh(node, &commit).await;
                        seeds.file(node, file, &mut refused_peers, progress).await
                    }
                    None => PeerFile::None,
                };
                match from_peer {
                    PeerFile::Found(fetched) => fetched,
                    PeerFile::Fetching if deferred.is_none() => {
                        queue.push_back((i, Some(std::time::Instant::now())));
                        continue;
                    }
                    PeerFile::Fetching
                        if deferred.is_some_and(|at| at.elapsed() < PEER_DOWNLOAD_WAIT) =>
                    {
                        if queue.is_empty() {
                            tokio::time::sleep(PEER_DOWNLOAD_POLL).await;
                        }
                        queue.push_back((i, deferred));
                        continue;
                    }
                    PeerFile::Fetching | PeerFile::None => {
                        let fetched = from_origin(node, &commit, file, private, progress).await?;
                        origin_bytes += file.size;
                        fetched
                    }
                }
            }
        };
        holds.push(hold);
        progress.event(ProgressEvent::FileDone);
        found[i] = Some((hash, ids));
    }
    let entries = commit
        .files
        .iter()
        .zip(found)
        .filter_map(|(file, found)| {
            let (hash, ids) = found?;
            Some(ManifestEntry {
                path: file.path.clone(),
                size: file.size,
                hash,
                executable: false,
                hub: Some(ids),
            })
        })
        .collect();
    let manifest = Manifest::with_upstream(entries, Some(commit.upstream.clone()))
        .map_err(|e| ApiError::new(ErrorKind::Peer, format!("{}: {e}", source.label())))?;
    let root = record(node, &manifest, private).await?;
    drop(holds);
    let names = bind_names(node, source, &commit.upstream, root).await?;
    if !private {
        node.announce(root);
        node.announce(commit.upstream.dht_key());
    }
    Ok(ImportOutcome {
        hash: root,
        source: source.label(),
        commit: commit.upstream.commit.to_string(),
        files: manifest.entries().len() as u64,
        size: total,
        origin_bytes,
        peer_bytes: node.stats().total().bytes_received - received_before,
        held_files,
        refused_peers,
        names,
    })
}

/// The order files are taken in: with peers, an order of this node's own (sorted by a hash
/// of its id and the file's index), so mirrors importing the same commit at once work on
/// different files and take the others from each other as they finish them.
fn file_order(seeds: Option<&Seeds>, count: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..count).collect();
    if let Some(seeds) = seeds {
        let me = seeds.me.to_bytes();
        order.sort_by_cached_key(|i| {
            let mut h = blake3::Hasher::new();
            h.update(&me);
            h.update(&(*i as u64).to_le_bytes());
            *h.finalize().as_bytes()
        });
    }
    order
}

/// How often the peers holding (or importing) a commit are looked up again during an
/// import: mirrors that start later are found too.
pub const SEEDS_REFRESH: std::time::Duration = std::time::Duration::from_secs(10);
/// Peers asked for one file, at most.
pub const MAX_PEERS_PER_FILE: usize = 4;

/// The peers that announced a commit (they hold it, or are importing it): asked for each
/// file before the origin.
struct Seeds {
    me: libp2p::PeerId,
    peers: Vec<PeerAddrs>,
    /// Peers not asked again in this import: their data failed a check, or they could not
    /// be reached.
    dropped: std::collections::VecDeque<libp2p::PeerId>,
    looked_up: std::time::Instant,
}

/// Peers remembered as left out of one import, at most: peer ids cost nothing to mint, so
/// past this the oldest are forgotten (and may be asked again).
pub const MAX_DROPPED_SEEDS: usize = 1024;

/// Time a commit's peer has to be reached before it is left out of this import.
pub const SEED_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl Seeds {
    /// Announces that this node imports the commit (so others find it while it does) and
    /// looks up who else does. `None` without a network.
    async fn find(node: &Node, commit: &Commit) -> Option<Self> {
        let network = node.joined_network().await.ok()?;
        let key = commit.upstream.dht_key();
        node.announce(key);
        let mut seeds = Self {
            me: network.host.peer_id(),
            peers: Vec::new(),
            dropped: std::collections::VecDeque::new(),
            looked_up: std::time::Instant::now(),
        };
        seeds.look_up(node, key).await;
        Some(seeds)
    }

    async fn look_up(&mut self, node: &Node, key: Hash) {
        let Ok(network) = node.joined_network().await else {
            return;
        };
        let lookup = network
            .host
            .find_providers(key, MAX_COMMIT_PEERS, true)
            .await;
        for peer in lookup.map(|l| l.providers).unwrap_or_default() {
            if self.peers.len() >= MAX_COMMIT_PEERS {
                break;
            }
            let known = peer.peer == self.me
                || self.dropped.contains(&peer.peer)
                || self.peers.iter().any(|p| p.peer == peer.peer);
            if known {
                continue;
            }
            let connect = network.host.connect(peer.peer, peer.addrs.clone());
            match tokio::time::timeout(SEED_CONNECT_TIMEOUT, connect).await {
                Ok(Ok(())) => self.peers.push(peer),
                _ => self.leave_out(peer.peer),
            }
        }
        self.looked_up = std::time::Instant::now();
    }

    /// Looks the commit up again if the last lookup is older than [`SEEDS_REFRESH`].
    async fn refresh(&mut self, node: &Node, commit: &Commit) {
        if self.looked_up.elapsed() >= SEEDS_REFRESH {
            self.look_up(node, commit.upstream.dht_key()).await;
        }
    }

    /// Leaves `peer` out of the rest of this import.
    fn drop_peer(&mut self, peer: libp2p::PeerId) {
        self.peers.retain(|p| p.peer != peer);
        self.leave_out(peer);
    }

    /// Remembers `peer` as not to be asked again, within [`MAX_DROPPED_SEEDS`].
    fn leave_out(&mut self, peer: libp2p::PeerId) {
        if self.dropped.len() == MAX_DROPPED_SEEDS {
            self.dropped.pop_front();
        }
        self.dropped.push_back(peer);
    }

    /// `file` from a peer that holds it, checked against its Hub id and held from garbage
    /// collection; `None` when no peer gives it (the origin then does). A peer whose claim
    /// or data fails a check is not asked again in this import.
    async fn file(
        &mut self,
        node: &Node,
        file: &ListedFile,
        refused: &mut Vec<String>,
        progress: &Progress,
    ) -> PeerFile {
        let Ok(network) = node.joined_network().await else {
            return PeerFile::None;
        };
        let mut fetching = false;
        let asked: Vec<PeerAddrs> = self
            .peers
            .iter()
            .take(MAX_PEERS_PER_FILE)
            .cloned()
            .collect();
        // Next time, others first: every peer of the commit gets asked in turn.
        let turn = asked.len().min(self.peers.len());
        self.peers.rotate_left(turn);
        for peer in &asked {
            let id = file.ids.file_id();
            let Ok(answer) = crate::transfer::ask_hub_file(&network.host, peer.peer, id).await
            else {
                continue;
            };
            let Some((hash, size)) = answer.blob else {
                fetching |= answer.fetching;
                continue;
            };
            if size != file.size {
                refused.push(format!(
                    "{}: claims {} has {size} bytes",
                    peer.peer, file.path
                ));
                self.drop_peer(peer.peer);
                continue;
            }
            let target = GetTarget {
                hash,
                kind: Some(TicketKind::Blob),
                providers: vec![peer.clone()],
                publisher: None,
            };
            // The blob's size is proven only as it arrives: bounded by the listed size
            // (plus the tree's hash pairs and framing).
            let options = FetchOptions {
                max_bytes: Some(file.size.saturating_add(file.size / 32 + (64 << 10))),
                ..FetchOptions::unpinned()
            };
            let advance = Progress::new(Arc::new(crate::progress::AdvanceOnly(progress.clone())));
            if let Err(e) = fetch::get(
                node,
                network,
                &target,
                &Include::default(),
                options,
                &advance,
            )
            .await
            {
                tracing::debug!(peer = %peer.peer, file = %file.path, error = %e, "a peer's file did not arrive");
                continue;
            }
            let listed = file.ids;
            let checked = node
                .store()
                .run(move |s| {
                    let ids = s.check_hub_file(&hash, &listed)?;
                    Ok::<_, StoreError>(ids.map(|ids| (hash, ids, s.hold([hash]))))
                })
                .await;
            match checked {
                Ok(Some(found)) => return PeerFile::Found(found),
                _ => {
                    tracing::warn!(peer = %peer.peer, file = %file.path, "refused a peer's file: it does not match the origin's id");
                    refused.push(format!(
                        "{}: its {} does not match the origin's id {}",
                        peer.peer,
                        file.path,
                        file.ids.etag()
                    ));
                    self.drop_peer(peer.peer);
                }
            }
        }
        if fetching {
            PeerFile::Fetching
        } else {
            PeerFile::None
        }
    }
}

/// What the peers of a commit said of one file.
enum PeerFile {
    /// One gave it, checked and held.
    Found((Hash, HubIds, crate::store::Hold)),
    /// None holds it, but one is downloading it from the origin now.
    Fetching,
    /// None holds it.
    None,
}

/// How long an import waits, in all per file, for a peer downloading a file it needs
/// (when it has nothing else left to do), before downloading that file itself.
pub const PEER_DOWNLOAD_WAIT: std::time::Duration = std::time::Duration::from_secs(300);
/// How often a peer downloading a needed file is asked again meanwhile.
pub const PEER_DOWNLOAD_POLL: std::time::Duration = std::time::Duration::from_secs(2);

/// A client for `source`'s origin, with its token.
fn client_for(source: &HubSource) -> Result<HubClient, ApiError> {
    source
        .check()
        .map_err(|e| ApiError::new(ErrorKind::InvalidInput, e))?;
    let token = source
        .token()
        .map_err(|e| ApiError::new(ErrorKind::InvalidInput, e))?;
    Ok(HubClient::new(source.origin(), token)?)
}

/// The commit `source`'s revision points to now, and its files.
async fn resolve(source: &HubSource) -> Result<Commit, ApiError> {
    let client = client_for(source)?;
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
    let client = client_for(source)?;
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
/// says what the origin says; checks each file's Hub ids. What it brings is then held.
async fn from_peers(
    node: &Node,
    commit: &Commit,
    seeds: &mut Seeds,
    refused: &mut Vec<String>,
    progress: &Progress,
) -> Result<(), ApiError> {
    let network = node.joined_network().await?;
    let key = commit.upstream.dht_key();
    let mut candidates: Vec<(Hash, PeerAddrs)> = Vec::new();
    for peer in seeds.peers.clone() {
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
                "no peer holds all of {} at {}",
                commit.upstream.repo, commit.upstream.commit
            ),
        ));
    }
    for (root, peer) in candidates {
        match from_peer_root(node, network, commit, root, &peer, progress).await {
            Ok(()) => return Ok(()),
            Err(why) => {
                tracing::warn!(peer = %peer.peer, %root, reason = %why, "refused a peer's copy of a Hub commit");
                refused.push(format!("{} (root {root}): {why}", peer.peer));
                seeds.drop_peer(peer.peer);
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
        publisher: None,
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
        publisher: None,
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
        let (hash, listed, size) = (entry.hash, file.ids, file.size);
        let checked = node
            .store()
            .run(move |s| {
                // Checked before (an earlier commit or import): not read again.
                if let Some((known, ids)) = s.hub_file(&listed.etag(), size)? {
                    if known == hash {
                        return Ok(Some(ids));
                    }
                }
                match s.blob(&hash)? {
                    Some(m) if m.state == crate::store::BlobState::Complete => {
                        s.check_hub_file(&hash, &listed)
                    }
                    _ => Ok(None),
                }
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

/// Files being downloaded from an origin by this process, by Hub id: what a peer asking
/// for one of them is told (`HubFileResponse::fetching`). Per process: a node is one.
static DOWNLOADING: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Whether this process is downloading the file with Hub id `etag` from an origin now.
pub fn downloading(etag: &str) -> bool {
    DOWNLOADING
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .any(|e| e == etag)
}

/// One file in [`DOWNLOADING`] while it lives.
struct Downloading(String);

impl Downloading {
    fn start(etag: String) -> Self {
        DOWNLOADING
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(etag.clone());
        Self(etag)
    }
}

impl Drop for Downloading {
    fn drop(&mut self) {
        let mut list = DOWNLOADING.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(at) = list.iter().position(|e| *e == self.0) {
            list.swap_remove(at);
        }
    }
}

/// Files this large are downloaded into `<data dir>/incoming/` before they are imported,
/// so a download cut off half-way (Ctrl-C, kill -9, a dropped connection) resumes from
/// where it stopped with an HTTP range; smaller ones stream straight into the store.
pub const STAGE_MIN_BYTES: u64 = 8 << 20;
/// Where staged downloads live, in the data dir.
pub const INCOMING_DIR: &str = "incoming";

/// One file from the origin into the store, checked against its Hub id.
async fn from_origin(
    node: &Node,
    commit: &Commit,
    file: &ListedFile,
    private: bool,
    progress: &Progress,
) -> Result<(Hash, HubIds, crate::store::Hold), ApiError> {
    let _downloading = Downloading::start(file.ids.etag());
    if file.size >= STAGE_MIN_BYTES {
        return from_origin_staged(node, commit, file, private, progress).await;
    }
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
    node.store()
        .run(move |s| s.add_hub_file(reader, size, &path, &listed, private, sink.as_ref()))
        .await
        .map(|(blob, ids, hold)| (blob.hash, ids, hold))
        .map_err(|e| import_error(&origin, file, e))
}

/// What a failed import of `file` from `origin` tells the user.
fn import_error(origin: &str, file: &ListedFile, e: StoreError) -> ApiError {
    match e {
        StoreError::FileChanged { .. } => ApiError::new(
            ErrorKind::Peer,
            format!(
                "{origin} sent a different number of bytes for {} than the {} its listing says; nothing of it was kept",
                file.path, file.size
            ),
        ),
        e @ StoreError::HubIdMismatch { .. } => ApiError::new(
            ErrorKind::Corrupt,
            format!("refused {} from {origin}: {e}; nothing of it was kept", file.path),
        ),
        e => ApiError::from(e).context(format_args!("cannot import {} from {origin}", file.path)),
    }
}

/// A large file from the origin: downloaded into `incoming/{etag}.part` (resuming what an
/// earlier attempt left there), then imported from it, checked against its Hub id. The
/// staged copy goes once imported, or refused.
async fn from_origin_staged(
    node: &Node,
    commit: &Commit,
    file: &ListedFile,
    private: bool,
    progress: &Progress,
) -> Result<(Hash, HubIds, crate::store::Hold), ApiError> {
    use tokio::io::{AsyncSeekExt, AsyncWriteExt};
    let origin = commit.client.base().to_string();
    let dir = node.data_dir().join(INCOMING_DIR);
    // The etag is hex: a safe file name.
    let staged = dir.join(format!("{}.part", file.ids.etag()));
    let io = |e: std::io::Error| ApiError::new(ErrorKind::Io, format!("{}: {e}", staged.display()));
    tokio::fs::create_dir_all(&dir).await.map_err(io)?;
    let had = tokio::fs::metadata(&staged)
        .await
        .map_or(0, |m| m.len())
        .min(file.size);
    if had < file.size {
        let up = &commit.upstream;
        let (mut response, start) = commit
            .client
            .file(up.kind, &up.repo, &up.commit, &file.path, had)
            .await?;
        let mut out = tokio::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&staged)
            .await
            .map_err(io)?;
        out.set_len(start).await.map_err(io)?;
        out.seek(std::io::SeekFrom::Start(start))
            .await
            .map_err(io)?;
        progress.event(ProgressEvent::Advance { bytes: start });
        let mut written = start;
        while let Some(chunk) = response.chunk().await.map_err(|e| {
            ApiError::new(
                ErrorKind::Io,
                format!(
                    "{origin}: {} broke off: {}",
                    file.path,
                    client::describe(&e)
                ),
            )
        })? {
            if written + chunk.len() as u64 > file.size {
                let _ = tokio::fs::remove_file(&staged).await;
                return Err(import_error(
                    &origin,
                    file,
                    StoreError::FileChanged {
                        path: staged.clone(),
                    },
                ));
            }
            out.write_all(&chunk).await.map_err(io)?;
            written += chunk.len() as u64;
            progress.event(ProgressEvent::Advance {
                bytes: chunk.len() as u64,
            });
            if ImportProgress::cancelled(progress) {
                out.flush().await.map_err(io)?;
                return Err(ApiError::new(
                    ErrorKind::Cancelled,
                    "import cancelled".to_string(),
                ));
            }
        }
        out.flush().await.map_err(io)?;
        if written != file.size {
            return Err(ApiError::new(
                ErrorKind::Io,
                format!(
                    "{origin} ended {} after {written} of {} bytes (kept; the next attempt resumes)",
                    file.path, file.size
                ),
            ));
        }
    }
    let (path, size, listed) = (file.path.clone(), file.size, file.ids);
    let staged_path = staged.clone();
    // Its bytes were counted as they arrived: the import reports only cancellation.
    let quiet: Arc<Progress> = Arc::new(Progress::new(Arc::new(crate::progress::Quiet(
        progress.clone(),
    ))));
    let imported = node
        .store()
        .run(move |s| {
            // Opened off the async workers, like every other file the store reads.
            let reader = std::fs::File::open(&staged_path).map_err(|source| StoreError::Io {
                path: staged_path.clone(),
                source,
            })?;
            s.add_hub_file(reader, size, &path, &listed, private, quiet.as_ref())
        })
        .await;
    if !matches!(
        imported,
        Err(StoreError::Cancelled) | Err(StoreError::Io { .. })
    ) {
        let _ = tokio::fs::remove_file(&staged).await;
    }
    imported
        .map(|(blob, ids, hold)| (blob.hash, ids, hold))
        .map_err(|e| import_error(&origin, file, e))
}

/// Stores the manifest as a blob, records the dataset and pins it; returns its root. A
/// public one is remembered for its commit (peers asking for the commit are told of it).
async fn record(node: &Node, manifest: &Manifest, private: bool) -> Result<Hash, ApiError> {
    let manifest = manifest.clone();
    Ok(node
        .store()
        .run(move |s| {
            let root = s.add_manifest(&manifest)?;
            s.record_dataset(&root, &manifest, true)?;
            match manifest.upstream() {
                Some(up) if !private => s.remember_upstream(&up.dht_key(), &root)?,
                _ => {}
            }
            Ok::<_, StoreError>(root)
        })
        .await?)
}

/// Binds `org/name@revision` and `org/name@commit` to `root` (the gateway then serves both
/// revisions, and older commits stay reachable by their id). The name is the source's
/// `name` (`org/name`, or `org/name@revision` to bind that revision instead of the source's)
/// or else the repository id; a repository id that is not a valid local name is not bound.
async fn bind_names(
    node: &Node,
    source: &HubSource,
    up: &Upstream,
    root: Hash,
) -> Result<Vec<String>, ApiError> {
    let (name, revision) = match &source.name {
        Some(given) => {
            let parsed = commons_protocol::NameRef::parse(given)?;
            let revision = if given.contains('@') {
                parsed.revision
            } else {
                source.revision.clone()
            };
            (parsed.name, revision)
        }
        None => match commons_protocol::DatasetName::parse(&up.repo) {
            Ok(name) => (name, source.revision.clone()),
            Err(_) => return Ok(Vec::new()),
        },
    };
    let commit = up.commit.to_string();
    let mut revisions = vec![revision];
    if revisions[0] != commit {
        revisions.push(commit);
    }
    let mut bound = Vec::new();
    for revision in revisions {
        let (n, r) = (name.clone(), revision.clone());
        node.store().run(move |s| s.set_name(&n, &r, &root)).await?;
        bound.push(format!("{name}@{revision}"));
    }
    Ok(bound)
}
