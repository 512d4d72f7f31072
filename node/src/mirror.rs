//! A mirror's standing orders: fetch each configured dataset, keep it pinned (and named),
//! and fetch it again if it goes missing.
//!
//! Each dataset has its own task. A failed fetch is retried with backoff (5 s doubling to
//! [`MAX_RETRY`]); what was fetched before a failure or a restart is kept, so each attempt
//! resumes. A complete dataset is checked again every [`RECHECK`] (cheap: store reads only).

use std::{sync::Arc, time::Duration};

use crate::{
    config::MirrorEntry,
    fetch::{self, FetchContext, GetTarget},
    ops::Include,
};

/// First wait after a failed fetch.
pub const FIRST_RETRY: Duration = Duration::from_secs(5);
/// Longest wait between attempts.
pub const MAX_RETRY: Duration = Duration::from_secs(300);
/// How often a complete dataset is checked again (it may have been removed by hand).
pub const RECHECK: Duration = Duration::from_secs(600);

/// Starts one task per entry; they run until the returned handles are aborted.
pub fn spawn(ctx: FetchContext, entries: Vec<MirrorEntry>) -> Vec<tokio::task::JoinHandle<()>> {
    entries
        .into_iter()
        .map(|entry| tokio::spawn(keep(ctx.clone(), entry)))
        .collect()
}

/// The hash or ticket an entry names; a name (`org/name[@revision]`) is looked up among
/// this node's names (names are local: this keeps what `commons name set` bound).
fn target_of(ctx: &FetchContext, entry: &MirrorEntry) -> Result<GetTarget, String> {
    if let Ok(target) = GetTarget::parse(entry.target()) {
        return Ok(target);
    }
    let name = commons_protocol::NameRef::parse(entry.target()).map_err(|e| e.to_string())?;
    match ctx.store.resolve_name(&name.name, &name.revision) {
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

async fn keep(ctx: FetchContext, entry: MirrorEntry) {
    let mut wait = FIRST_RETRY;
    loop {
        let target = match target_of(&ctx, &entry) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(target = entry.target(), error = %e, retry_in = ?wait, "mirror: cannot use this entry yet");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(MAX_RETRY);
                continue;
            }
        };
        // Reads (and verifies) the manifest: off the async workers.
        let (store, hash, kind) = (ctx.store.clone(), target.hash, target.kind);
        let held = tokio::task::spawn_blocking(move || match kind {
            Some(commons_protocol::TicketKind::Blob) => store
                .blob(&hash)
                .is_ok_and(|m| m.is_some_and(|m| m.state == crate::store::BlobState::Complete)),
            _ => crate::ops::dataset_complete(&store, &hash).unwrap_or(false),
        })
        .await
        .unwrap_or(false);
        if !held {
            tracing::info!(hash = %target.hash, "mirror: fetching");
            match fetch::get(&ctx, &target, &Include::default(), Arc::new(())).await {
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
            let bound = ctx.store.resolve_name(name, revision).ok().flatten();
            if bound != Some(target.hash) {
                match ctx.store.set_name(name, revision, &target.hash) {
                    Ok(_) => tracing::info!(%name, revision, hash = %target.hash, "mirror: named"),
                    Err(e) => tracing::warn!(%name, error = %e, "mirror: cannot bind the name"),
                }
            }
        }
        tokio::time::sleep(RECHECK).await;
    }
}
