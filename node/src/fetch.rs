//! `get`: fetch a blob or a whole dataset from the providers a ticket names.
//!
//! The manifest comes first (verified like any blob, then parsed with every path rule),
//! then each wanted file's blob. Providers are tried in order for each blob; one that sends
//! bad data is dropped for the rest of the fetch. Everything is resumable: what the store
//! already holds is never asked for again.

use std::sync::Arc;

use commons_protocol::{Hash, Ticket, TicketKind};
use libp2p::{Multiaddr, PeerId};

use crate::{
    net::{split_peer_addr, Host},
    ops::{GetOutcome, Include},
    store::{BlobState, Store, StoreError},
    transfer::{fetch_blob, FetchError, TransferStats},
};

/// Why a `get` failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GetError {
    /// The ticket names no provider (discovery by hash alone comes with the DHT).
    #[error("the ticket names no provider to fetch from")]
    NoProviders,
    /// A provider address is not a multiaddr ending in `/p2p/<peer id>`.
    #[error("provider address {0:?} is not a multiaddr ending in /p2p/<peer id>")]
    BadProvider(String),
    /// Every provider failed for some blob; the last error of each is listed.
    #[error("could not fetch {hash}: {}", .errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    AllProvidersFailed {
        /// The blob that could not be had.
        hash: Hash,
        /// What each provider did.
        errors: Vec<FetchError>,
    },
    /// The manifest fetched does not parse.
    #[error("dataset {root}: {source}")]
    BadManifest {
        /// The dataset.
        root: Hash,
        /// Why.
        source: StoreError,
    },
    /// Our store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Progress of a `get`.
pub trait GetProgress: Send + Sync {
    /// Total bytes of the files to fetch, once the manifest is known.
    fn total(&self, _files: u64, _bytes: u64) {}
    /// Bytes already held when the fetch starts (resumed work).
    fn already_have(&self, _bytes: u64) {}
    /// Response bytes received.
    fn received(&self, _bytes: u64) {}
    /// One file is complete.
    fn file_done(&self) {}
}

/// The provider peers and addresses of a ticket.
pub fn ticket_providers(ticket: &Ticket) -> Result<Vec<(PeerId, Multiaddr)>, GetError> {
    ticket
        .providers
        .iter()
        .map(|p| {
            p.parse::<Multiaddr>()
                .ok()
                .and_then(|a| split_peer_addr(&a))
                .ok_or_else(|| GetError::BadProvider(p.clone()))
        })
        .collect()
}

/// Fetches what `ticket` names into `store`. For a dataset, only the files `include`
/// accepts are fetched; the dataset is recorded and pinned once the manifest and those
/// files are complete.
pub async fn get(
    host: &Host,
    store: &Arc<Store>,
    ticket: &Ticket,
    include: &Include,
    stats: &Arc<TransferStats>,
    progress: Arc<dyn GetProgress>,
) -> Result<GetOutcome, GetError> {
    let received_before = stats.total().bytes_received;
    let (files, size) = fetch_ticket(host, store, ticket, include, stats, progress).await?;
    Ok(GetOutcome {
        kind: ticket.kind,
        hash: ticket.hash,
        files,
        size,
        bytes_received: stats.total().bytes_received - received_before,
    })
}

/// The work of [`get`]; returns the number of files and their total size.
async fn fetch_ticket(
    host: &Host,
    store: &Arc<Store>,
    ticket: &Ticket,
    include: &Include,
    stats: &Arc<TransferStats>,
    progress: Arc<dyn GetProgress>,
) -> Result<(u64, u64), GetError> {
    let providers = ticket_providers(ticket)?;
    if providers.is_empty() {
        return Err(GetError::NoProviders);
    }
    let mut good: Vec<(PeerId, Multiaddr)> = providers;
    match ticket.kind {
        TicketKind::Blob => {
            let size =
                fetch_from_any(host, store, &mut good, ticket.hash, stats, &progress).await?;
            store.pin(&ticket.hash)?;
            progress.file_done();
            Ok((1, size))
        }
        TicketKind::Dataset => {
            let root = ticket.hash;
            fetch_from_any(host, store, &mut good, root, stats, &progress).await?;
            let manifest = store
                .read_manifest(&root)
                .map_err(|source| GetError::BadManifest { root, source })?;
            let wanted: Vec<_> = manifest
                .entries()
                .iter()
                .filter(|e| include.matches(&e.path))
                .collect();
            progress.total(wanted.len() as u64, wanted.iter().map(|e| e.size).sum());
            let mut bytes = 0;
            for entry in &wanted {
                if let Some(meta) = store.blob(&entry.hash)? {
                    if meta.state == BlobState::Complete {
                        progress.already_have(meta.size);
                        progress.file_done();
                        bytes += meta.size;
                        continue;
                    }
                }
                bytes +=
                    fetch_from_any(host, store, &mut good, entry.hash, stats, &progress).await?;
                progress.file_done();
            }
            // Recorded (and pinned) even when only some files were wanted: `ls` shows it
            // as partial, and GC keeps what was fetched.
            store.record_dataset(&root, &manifest)?;
            Ok((wanted.len() as u64, bytes))
        }
    }
}

/// Fetches one blob, trying providers in order; drops those that misbehave. Returns its size.
async fn fetch_from_any(
    host: &Host,
    store: &Arc<Store>,
    providers: &mut Vec<(PeerId, Multiaddr)>,
    hash: Hash,
    stats: &Arc<TransferStats>,
    progress: &Arc<dyn GetProgress>,
) -> Result<u64, GetError> {
    let mut errors = Vec::new();
    let mut i = 0;
    while i < providers.len() {
        let (peer, addr) = providers[i].clone();
        let on_bytes = {
            let progress = progress.clone();
            Arc::new(move |n| progress.received(n)) as Arc<dyn Fn(u64) + Send + Sync>
        };
        let result = match host.connect(peer, vec![addr]).await {
            Ok(()) => fetch_blob(host, store, peer, hash, stats, on_bytes).await,
            Err(e) => Err(e.into()),
        };
        match result {
            Ok(()) => {
                let meta = store.blob(&hash)?.ok_or(StoreError::NotFound { hash })?;
                return Ok(meta.size);
            }
            Err(FetchError::Store(e)) if !matches!(e, StoreError::SizeConflict { .. }) => {
                return Err(e.into())
            }
            Err(e) => {
                tracing::info!(%peer, error = %e, "provider failed");
                if e.peer_misbehaved() {
                    providers.remove(i);
                } else {
                    i += 1;
                }
                errors.push(e);
            }
        }
    }
    Err(GetError::AllProvidersFailed { hash, errors })
}
