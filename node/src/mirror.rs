//! A mirror's standing orders: fetch each configured dataset, keep it pinned (and named),
//! and fetch it again if it goes missing.
//!
//! Each dataset has its own task. A failed fetch is retried with backoff (5 s doubling to
//! [`MAX_RETRY`]); what was fetched before a failure or a restart is kept, so each attempt
//! resumes. A complete dataset is checked again every [`RECHECK`] (cheap: store reads only).

use std::time::Duration;

use crate::{
    api::Progress,
    config::MirrorEntry,
    fetch::{self, GetTarget},
    include::Include,
    node::Node,
    store::{BlobState, StoreError},
};

/// First wait after a failed fetch.
pub const FIRST_RETRY: Duration = Duration::from_secs(5);
/// Longest wait between attempts.
pub const MAX_RETRY: Duration = Duration::from_secs(300);
/// How often a complete dataset is checked again (it may have been removed by hand).
pub const RECHECK: Duration = Duration::from_secs(600);

/// Keeps every entry, one task each, until the node shuts down.
pub async fn run(node: Node, entries: Vec<MirrorEntry>) {
    let mut tasks = tokio::task::JoinSet::new();
    for entry in entries {
        tasks.spawn(keep(node.clone(), entry));
    }
    while tasks.join_next().await.is_some() {}
}

/// The hash or ticket an entry names; a name (`org/name[@revision]`) is looked up among
/// this node's names (names are local: this keeps what `commons name set` bound).
async fn target_of(node: &Node, entry: &MirrorEntry) -> Result<GetTarget, String> {
    if let Ok(target) = GetTarget::parse(entry.target()) {
        return Ok(target);
    }
    let name = commons_protocol::NameRef::parse(entry.target()).map_err(|e| e.to_string())?;
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
        }),
        Ok(None) => Err(format!(
            "no dataset is named {}@{} on this node (names are local: bind it with `commons name set`, or give a hash or ticket)",
            name.name, name.revision
        )),
        Err(e) => Err(e.to_string()),
    }
}

async fn keep(node: Node, entry: MirrorEntry) {
    let mut wait = FIRST_RETRY;
    loop {
        let target = match target_of(&node, &entry).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(target = entry.target(), error = %e, retry_in = ?wait, "mirror: cannot use this entry yet");
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
                    _ => crate::ops::dataset_complete(store, &hash).unwrap_or(false),
                })
            })
            .await
            .unwrap_or(false);
        if !held {
            tracing::info!(hash = %target.hash, "mirror: fetching");
            let fetched = match node.network().await {
                Ok(network) => fetch::get(
                    &node,
                    network,
                    &target,
                    &Include::default(),
                    fetch::Keep::Pinned,
                    &Progress::none(),
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
        tokio::time::sleep(RECHECK).await;
    }
}
