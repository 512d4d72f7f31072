//! A mirror's standing orders: fetch each configured dataset, keep it pinned (and named),
//! and fetch it again if it goes missing.
//!
//! Each dataset has its own task. A failed fetch is retried with backoff (5 s doubling to
//! [`MAX_RETRY`]); what was fetched before a failure or a restart is kept, so each attempt
//! resumes. A complete dataset is checked again every [`RECHECK`] (cheap: store reads only).

pub mod board;

use std::{sync::Arc, time::Duration};

use board::{change_saved, unix_now};
pub use board::{
    saved_entries, Mirror, MirrorEntryStatus, MirrorState, MAX_MIRROR_ENTRIES, META_MIRROR_ENTRIES,
};

use crate::{
    api::{ApiError, ErrorKind, Progress, ProgressEvent, ProgressSink},
    config::MirrorEntry,
    fetch::{self, GetTarget},
    include::Include,
    node::Node,
    store::{BlobState, Store, StoreError},
};

/// First wait after a failed fetch.
pub const FIRST_RETRY: Duration = Duration::from_secs(5);
/// Longest wait between attempts.
pub const MAX_RETRY: Duration = Duration::from_secs(300);
/// How often a complete dataset is checked again (it may have been removed by hand).
pub const RECHECK: Duration = Duration::from_secs(600);
/// How long the first attempts wait for the node to join the network (a fetch started
/// before that finds no provider and only makes noise).
pub const JOIN_WAIT: Duration = Duration::from_secs(30);

/// Starts keeping every entry (a running node); each task runs until the node shuts down
/// or its entry is removed.
pub fn start(node: &Node) {
    let targets: Vec<String> = node.mirror().lock().keys().cloned().collect();
    for target in targets {
        spawn_keeper(node, &target);
    }
}

/// Starts the task that keeps `target` (a running node only).
fn spawn_keeper(node: &Node, target: &str) {
    if node.daemon().is_err() {
        return;
    }
    let mut entries = node.mirror().lock();
    let Some(kept) = entries.get_mut(target) else {
        return;
    };
    let (task_node, entry, token) = (
        node.clone(),
        kept.entry.clone(),
        node.shutdown_token().clone(),
    );
    let task = tokio::spawn(async move {
        tokio::select! {
            () = token.cancelled() => {}
            () = keep(task_node, entry) => {}
        }
    });
    kept.task = Some(task.abort_handle());
}

/// `commons mirror add`: keeps `entry` from now on (saved: kept after a restart too).
pub async fn add(node: &Node, entry: MirrorEntry) -> Result<bool, ApiError> {
    let target = entry.target().to_string();
    if !node.mirror().insert(entry.clone(), "added")? {
        return Ok(false);
    }
    let saved = node
        .store()
        .run(move |store| {
            change_saved(store, |entries| {
                entries.retain(|e| e.target() != entry.target());
                entries.push(entry);
            })
        })
        .await;
    if let Err(e) = saved {
        node.mirror().lock().remove(&target);
        return Err(e.into());
    }
    spawn_keeper(node, &target);
    Ok(true)
}

/// `commons mirror rm`: stops keeping `target` (the data stays, pinned, until unpinned).
pub async fn remove(node: &Node, target: &str) -> Result<(), ApiError> {
    let source = node
        .mirror()
        .lock()
        .get(target)
        .map(|k| k.status.source.clone());
    match source.as_deref() {
        None => {
            return Err(ApiError::new(
                ErrorKind::NotFound,
                format!("{target} is not mirrored here (see `commons mirror ls`)"),
            ))
        }
        Some("config") => {
            return Err(ApiError::new(
                ErrorKind::InvalidInput,
                format!("{target} is in the config file's [mirror] datasets: remove it there"),
            ))
        }
        Some(_) => {}
    }
    let owned = target.to_string();
    node.store()
        .run(move |store| change_saved(store, |entries| entries.retain(|e| e.target() != owned)))
        .await?;
    if let Some(kept) = node.mirror().lock().remove(target) {
        if let Some(task) = kept.task {
            task.abort();
        }
    }
    Ok(())
}

/// Counts a fetch's progress into its entry's status.
struct Board {
    node: Node,
    target: String,
}

impl ProgressSink for Board {
    fn event(&self, event: ProgressEvent) {
        self.node.mirror().update(&self.target, |s| match event {
            ProgressEvent::Start { bytes, .. } => {
                s.size = bytes;
                s.held = 0;
            }
            ProgressEvent::Advance { bytes } => s.held = s.held.saturating_add(bytes),
            _ => {}
        });
    }
}

/// The size of a complete dataset or blob.
fn total_size(store: &Store, hash: &commons_protocol::Hash) -> Result<u64, StoreError> {
    Ok(match store.dataset(hash)? {
        Some(d) => d.total_size,
        None => store.blob(hash)?.map_or(0, |m| m.size),
    })
}

/// The hash or ticket an entry names; a name (`org/name[@revision]`) is looked up among
/// this node's names (names are local: this keeps what `commons name set` bound).
async fn target_of(node: &Node, entry: &MirrorEntry) -> Result<GetTarget, String> {
    if let Ok(target) = GetTarget::parse(&entry.target()) {
        return Ok(target);
    }
    let name = commons_protocol::NameRef::parse(&entry.target()).map_err(|e| e.to_string())?;
    let (n, revision) = (name.name.clone(), name.revision.clone());
    let bound = node
        .store()
        .run(move |s| s.resolve_name(&n, &revision))
        .await;
    match bound {
        Ok(Some(hash)) => Ok(GetTarget {
            hash,
            kind: Some(commons_protocol::TicketKind::Dataset),
            providers: Vec::new(),
            publisher: None,
        }),
        Ok(None) => Err(format!(
            "no dataset is named {}@{} on this node (names are local: bind it with `commons name set`, or give a hash or ticket)",
            name.name, name.revision
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// Shows entry `key` as failing with `error`, tried again after `wait`.
fn mark_failing(node: &Node, key: &str, error: &str, wait: Duration) {
    node.mirror().update(key, |s| {
        s.state = MirrorState::Failing;
        s.last_error = Some(error.to_string());
        s.retry_at = Some(unix_now() + wait.as_secs());
    });
}

/// Shows entry `key` as complete, `size` bytes held.
fn mark_complete(node: &Node, key: &str, size: u64) {
    node.mirror().update(key, |s| {
        s.state = MirrorState::Complete;
        s.size = size;
        s.held = size;
        s.last_error = None;
        s.retry_at = None;
    });
}

/// Keeps a Hub repository: imports its revision, then checks every interval whether the
/// revision moved and imports the new commit (older ones stay, pinned and named by their
/// commit id).
async fn keep_hub(node: Node, source: crate::origin::HubSource) {
    let key = source.label();
    let interval = Duration::from_secs(
        source
            .interval
            .unwrap_or(crate::origin::source::DEFAULT_FOLLOW_INTERVAL_SECS),
    );
    let mut wait = FIRST_RETRY;
    let mut imported: Option<(String, commons_protocol::Hash)> = None;
    let _ = tokio::time::timeout(JOIN_WAIT, node.joined()).await;
    loop {
        // Small metadata only, unless the commit moved or its data went missing.
        if let Some((commit, root)) = &imported {
            let root = *root;
            let complete = node
                .store()
                .run(move |s| s.dataset_complete(&root))
                .await
                .unwrap_or(false);
            match crate::origin::current_commit(&source).await {
                Ok(now) if now == *commit && complete => {
                    tokio::time::sleep(interval).await;
                    continue;
                }
                Ok(now) => {
                    tracing::info!(source = %key, commit = %now, "mirror: the revision moved")
                }
                // The origin is away: what is held stays served; asked again next interval.
                Err(e) if complete => {
                    tracing::warn!(source = %key, error = %e, "mirror: cannot check the revision");
                    tokio::time::sleep(interval).await;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(source = %key, error = %e, "mirror: cannot check the revision")
                }
            }
        }
        node.mirror()
            .update(&key, |s| s.state = MirrorState::Fetching);
        let board = Progress::new(Arc::new(Board {
            node: node.clone(),
            target: key.clone(),
        }));
        match crate::origin::import(&node, &source, true, &board).await {
            Ok(outcome) => {
                tracing::info!(source = %key, commit = %outcome.commit, hash = %outcome.hash,
                    origin_bytes = outcome.origin_bytes, peer_bytes = outcome.peer_bytes, "mirror: imported");
                mark_complete(&node, &key, outcome.size);
                node.mirror()
                    .update(&key, |s| s.name = outcome.names.first().cloned());
                imported = Some((outcome.commit, outcome.hash));
                wait = FIRST_RETRY;
                tokio::time::sleep(interval).await;
            }
            Err(e) => {
                tracing::warn!(source = %key, error = %e, retry_in = ?wait, "mirror: import failed");
                mark_failing(&node, &key, &e.to_string(), wait);
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(MAX_RETRY);
            }
        }
    }
}

/// Follows a signed name: resolves it every interval, fetches each new version (which must
/// carry its publisher's signature), binds it locally, and keeps its record alive in the
/// DHT. Versions fetched before stay pinned.
async fn keep_followed(node: Node, follow: String, interval: Option<u64>) {
    use crate::provenance::names;
    let interval = Duration::from_secs(interval.unwrap_or(names::DEFAULT_FOLLOW_INTERVAL_SECS));
    let mut wait = FIRST_RETRY;
    let _ = tokio::time::timeout(JOIN_WAIT, node.joined()).await;
    loop {
        match follow_once(&node, &follow).await {
            Ok((size, name)) => {
                mark_complete(&node, &follow, size);
                node.mirror().update(&follow, |s| s.name = Some(name));
                wait = FIRST_RETRY;
                tokio::time::sleep(interval).await;
            }
            Err(e) => {
                tracing::warn!(name = %follow, error = %e, retry_in = ?wait, "mirror: cannot follow");
                mark_failing(&node, &follow, &e.to_string(), wait);
                tokio::time::sleep(wait.min(interval)).await;
                wait = (wait * 2).min(MAX_RETRY);
            }
        }
    }
}

/// One round of following `follow`: the newest version, fetched and bound; returns its
/// size and local name.
async fn follow_once(node: &Node, follow: &str) -> Result<(u64, String), ApiError> {
    let (target, name, record) = crate::provenance::names::name_target(node, follow, false).await?;
    let root = target.hash;
    let publisher = target.publisher.clone();
    let held = node
        .store()
        .run(move |s| {
            Ok::<_, StoreError>(
                s.dataset_complete(&root)?
                    && publisher.as_ref().map_or(Ok(true), |p| {
                        crate::provenance::signatures::is_signed_by(s, &root, p)
                    })?,
            )
        })
        .await?;
    if !held {
        tracing::info!(name = %name, %root, seq = record.record.seq, "mirror: fetching a new version");
        node.mirror()
            .update(follow, |s| s.state = MirrorState::Fetching);
        let board = Progress::new(Arc::new(Board {
            node: node.clone(),
            target: follow.to_string(),
        }));
        let network = node.network().await?;
        fetch::get(
            node,
            network,
            &target,
            &Include::default(),
            fetch::FetchOptions::pinned(),
            &board,
        )
        .await?;
    }
    let (local, key) = (
        name.clone(),
        commons_protocol::provenance::name_key(
            &record
                .record
                .publisher_key()
                .map_err(|e| ApiError::new(crate::api::ErrorKind::Corrupt, e.to_string()))?,
            &name,
        ),
    );
    let kept = record.clone();
    let size = node
        .store()
        .run(move |s| {
            if s.resolve_name(&local.name, &local.revision)? != Some(root) {
                s.set_name(&local.name, &local.revision, &root)?;
            }
            // Kept alive by this node from now on, even when its publisher is away.
            s.remember_name(&key, &kept, true, false)?;
            total_size(s, &root)
        })
        .await?;
    Ok((size, name.to_string()))
}

async fn keep(node: Node, entry: MirrorEntry) {
    if let MirrorEntry::Hub(source) = entry {
        return keep_hub(node, source).await;
    }
    if let MirrorEntry::Follow(f) = entry {
        return keep_followed(node, f.follow, f.interval).await;
    }
    let mut wait = FIRST_RETRY;
    let key = entry.target().to_string();
    let failed = |error: &str, wait: Duration| mark_failing(&node, &key, error, wait);
    // A fetch started before the node joined the network finds nobody: wait for the join.
    let _ = tokio::time::timeout(JOIN_WAIT, node.joined()).await;
    loop {
        let target = match target_of(&node, &entry).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(target = %entry.target(), error = %e, retry_in = ?wait, "mirror: cannot use this entry yet");
                failed(&e, wait);
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(MAX_RETRY);
                continue;
            }
        };
        // Reads (and verifies) the manifest.
        let (hash, kind) = (target.hash, target.kind);
        let held = node
            .store()
            .run(move |store| {
                Ok::<_, StoreError>(match kind {
                    Some(commons_protocol::TicketKind::Blob) => store
                        .blob(&hash)
                        .is_ok_and(|m| m.is_some_and(|m| m.state == BlobState::Complete)),
                    _ => store.dataset_complete(&hash).unwrap_or(false),
                })
            })
            .await
            .unwrap_or(false);
        if !held {
            tracing::info!(hash = %target.hash, "mirror: fetching");
            node.mirror()
                .update(&key, |s| s.state = MirrorState::Fetching);
            let board = Progress::new(Arc::new(Board {
                node: node.clone(),
                target: key.clone(),
            }));
            let fetched = match node.network().await {
                Ok(network) => fetch::get(
                    &node,
                    network,
                    &target,
                    &Include::default(),
                    fetch::FetchOptions::pinned(),
                    &board,
                )
                .await
                .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match fetched {
                Ok(outcome) => {
                    tracing::info!(hash = %target.hash, files = outcome.files, bytes = outcome.size, "mirror: complete");
                    wait = FIRST_RETRY;
                }
                Err(e) => {
                    tracing::warn!(hash = %target.hash, error = %e, retry_in = ?wait, "mirror: fetch failed");
                    failed(&e, wait);
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(MAX_RETRY);
                    continue;
                }
            }
        }
        if let Some((name, revision)) = entry.name() {
            let (n, r, hash) = (name.clone(), revision.to_string(), target.hash);
            let named = node
                .store()
                .run(move |store| {
                    if store.resolve_name(&n, &r)? == Some(hash) {
                        return Ok(false);
                    }
                    store.set_name(&n, &r, &hash).map(|_| true)
                })
                .await;
            match named {
                Ok(true) => tracing::info!(%name, revision, hash = %target.hash, "mirror: named"),
                Ok(false) => {}
                Err(e) => tracing::warn!(%name, error = %e, "mirror: cannot bind the name"),
            }
        }
        let size = node
            .store()
            .run(move |store| total_size(store, &hash))
            .await
            .unwrap_or(0);
        mark_complete(&node, &key, size);
        tokio::time::sleep(RECHECK).await;
    }
}
