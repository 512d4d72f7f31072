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

async fn keep(ctx: FetchContext, entry: MirrorEntry) {
    let target = match GetTarget::parse(entry.target()) {
        Ok(t) => t,
        Err(e) => {
            // The config check refuses these before the node starts.
            tracing::error!(target = entry.target(), error = %e, "mirror: cannot use this entry");
            return;
        }
    };
    let mut wait = FIRST_RETRY;
    loop {
        let held = match target.kind {
            Some(commons_protocol::TicketKind::Blob) => ctx
                .store
                .blob(&target.hash)
                .is_ok_and(|m| m.is_some_and(|m| m.state == crate::store::BlobState::Complete)),
            _ => crate::ops::dataset_complete(&ctx.store, &target.hash).unwrap_or(false),
        };
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
