//! What a user asks of a node — add, list, get, export — with results as plain data.
//!
//! The CLI runs these directly on a store it opens, or asks a running daemon to run them
//! (see [`crate::admin`]); either way the same code does the work and the same result
//! types come back, so both paths print the same thing.

use std::{collections::BTreeMap, path::Path};

use commons_protocol::{Hash, NameRef, Ticket, TicketKind};
use serde::{Deserialize, Serialize};

use crate::{
    export::ExportReport,
    store::{BlobState, ImportProgress, NameEntry, PinKind, Store, StoreError},
};

/// What `add` stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddOutcome {
    /// Blob (a file) or dataset (a folder).
    pub kind: TicketKind,
    /// Its address.
    pub hash: Hash,
    /// Files added (1 for a blob).
    pub files: u64,
    /// Total bytes.
    pub size: u64,
    /// Blobs that were new to the store.
    pub new_blobs: u64,
    /// A ticket for it; carries this node's addresses when a node is running.
    pub ticket: String,
}

/// Adds a file (as a blob) or a folder (as a dataset) and pins it. `providers` go into the
/// ticket (a running node's addresses; empty otherwise).
pub fn add(
    store: &Store,
    path: &Path,
    providers: Vec<String>,
    progress: &dyn ImportProgress,
) -> Result<AddOutcome, StoreError> {
    let meta = std::fs::metadata(path).map_err(|source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let (kind, hash, files, size, new_blobs) = if meta.is_dir() {
        let ds = store.add_folder(path, progress)?;
        let files = ds.manifest.entries().len() as u64;
        let size = ds.manifest.total_size();
        (TicketKind::Dataset, ds.root, files, size, ds.new_blobs)
    } else {
        let blob = store.add_file(path, progress)?;
        let new = u64::from(!blob.already_stored);
        (TicketKind::Blob, blob.hash, 1, blob.size, new)
    };
    let ticket = Ticket {
        kind,
        hash,
        providers,
    }
    .to_string();
    Ok(AddOutcome {
        kind,
        hash,
        files,
        size,
        new_blobs,
        ticket,
    })
}

/// One dataset in a [`Listing`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetEntry {
    /// Root hash.
    pub hash: Hash,
    /// Number of files.
    pub files: u64,
    /// Total bytes.
    pub size: u64,
    /// Whether the manifest and every file are complete.
    pub complete: bool,
    /// Bytes of its files held verified (`size` when complete): how far a fetch got.
    #[serde(default)]
    pub held: u64,
    /// Whether it is pinned.
    pub pinned: bool,
}

/// One blob in a [`Listing`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobEntry {
    /// Its hash.
    pub hash: Hash,
    /// Size in bytes.
    pub size: u64,
    /// Whether all of it is stored.
    pub complete: bool,
    /// Whether it is pinned.
    pub pinned: bool,
}

/// What the store holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listing {
    /// Datasets.
    pub datasets: Vec<DatasetEntry>,
    /// Blobs added on their own (with `all`: every blob that is not a manifest).
    pub blobs: Vec<BlobEntry>,
}

/// Whether `root` is a dataset held whole here: its record, its manifest and every file
/// complete. A mirror fetches until this holds.
pub fn dataset_complete(store: &Store, root: &Hash) -> Result<bool, StoreError> {
    let complete = |h: &Hash| -> Result<bool, StoreError> {
        Ok(store
            .blob(h)?
            .is_some_and(|m| m.state == BlobState::Complete))
    };
    if store.dataset(root)?.is_none() || !complete(root)? {
        return Ok(false);
    }
    for entry in store.read_manifest(root)?.entries() {
        if !complete(&entry.hash)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Lists datasets, and blobs added on their own (every blob with `all`).
pub fn list(store: &Store, all: bool) -> Result<Listing, StoreError> {
    let pins: BTreeMap<Hash, PinKind> = store
        .pins()?
        .into_iter()
        .map(|(h, p)| (h, p.kind))
        .collect();
    let blobs = store.blobs()?;
    let states: BTreeMap<Hash, BlobState> = blobs.iter().map(|(h, m)| (*h, m.state)).collect();
    let complete = |h: &Hash| states.get(h) == Some(&BlobState::Complete);
    let mut listing = Listing::default();
    let mut held_of_partial: BTreeMap<Hash, u64> = BTreeMap::new();
    for (root, meta) in store.datasets()? {
        let manifest = store.read_manifest(&root).ok();
        let all_there = complete(&root)
            && manifest
                .as_ref()
                .is_some_and(|m| m.entries().iter().all(|e| complete(&e.hash)));
        let mut held = 0;
        for entry in manifest.iter().flat_map(|m| m.entries()) {
            held += if complete(&entry.hash) {
                entry.size
            } else if let Some(bytes) = held_of_partial.get(&entry.hash) {
                *bytes
            } else {
                let bytes = store.held_bytes(&entry.hash)?;
                held_of_partial.insert(entry.hash, bytes);
                bytes
            };
        }
        listing.datasets.push(DatasetEntry {
            hash: root,
            files: meta.files,
            size: meta.total_size,
            complete: all_there,
            held,
            pinned: pins.contains_key(&root),
        });
    }
    let roots: std::collections::BTreeSet<Hash> = listing.datasets.iter().map(|d| d.hash).collect();
    listing.blobs = blobs
        .iter()
        .filter(|(h, _)| !roots.contains(h))
        .filter(|(h, _)| all || pins.get(h) == Some(&PinKind::Blob))
        .map(|(h, m)| BlobEntry {
            hash: *h,
            size: m.size,
            complete: m.state == BlobState::Complete,
            pinned: pins.contains_key(h),
        })
        .collect();
    Ok(listing)
}

/// What `get` fetched (see [`crate::fetch::get`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetOutcome {
    /// Blob or dataset.
    pub kind: TicketKind,
    /// Its address.
    pub hash: Hash,
    /// Files now complete.
    pub files: u64,
    /// Their total size.
    pub size: u64,
    /// Response bytes received from providers for this fetch.
    pub bytes_received: u64,
    /// Data requests made to providers for this fetch.
    #[serde(default)]
    pub requests: u64,
    /// Of those, data requests carried by providers' bulk endpoints (the rest: libp2p).
    #[serde(default)]
    pub bulk_requests: u64,
    /// Providers dropped for sending bad data (PeerIds); none of their bytes was stored.
    #[serde(default)]
    pub dropped: Vec<String>,
}

/// Exports a dataset (only the files `include` accepts) or a blob to `dest`.
pub fn export(
    store: &Store,
    hash: &Hash,
    dest: &Path,
    force: bool,
    include: &Include,
    progress: &dyn crate::export::ExportProgress,
) -> Result<ExportReport, crate::export::ExportError> {
    if store.dataset(hash)?.is_some() {
        crate::export::export_dataset(store, hash, dest, force, include, progress)
    } else {
        crate::export::export_blob(store, hash, dest, force)
    }
}

/// `--include` patterns: a file is wanted when any pattern matches its manifest path.
#[derive(Debug, Clone, Default)]
pub struct Include {
    patterns: Vec<glob::Pattern>,
    /// No file at all: a dataset fetch stops at its manifest.
    nothing: bool,
}

impl Include {
    /// Parses glob patterns (`*.json`, `data/**`); an empty list means "everything".
    pub fn parse(patterns: &[String]) -> Result<Self, String> {
        let patterns = patterns
            .iter()
            .map(|p| {
                glob::Pattern::new(p).map_err(|e| format!("invalid --include pattern {p:?}: {e}"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            patterns,
            nothing: false,
        })
    }

    /// Wants exactly the file at `path` (no glob characters are interpreted).
    pub fn exactly(path: &str) -> Self {
        let patterns: Vec<_> = glob::Pattern::new(&glob::Pattern::escape(path))
            .into_iter()
            .collect();
        // An escaped path always parses; should it not, want nothing rather than all.
        let nothing = patterns.is_empty();
        Self { patterns, nothing }
    }

    /// Wants no file: fetching a dataset with it fetches (and pins) only its manifest; the
    /// gateway then fetches each file when it is asked for.
    pub fn nothing() -> Self {
        Self {
            patterns: Vec::new(),
            nothing: true,
        }
    }

    /// Whether every file is wanted (no pattern was given).
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty() && !self.nothing
    }

    /// Whether `path` is wanted.
    pub fn matches(&self, path: &str) -> bool {
        self.is_empty() || self.patterns.iter().any(|p| p.matches(path))
    }
}

/// Why a user's hash, prefix or ticket names nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// A ticket that does not parse.
    #[error("invalid ticket: {0}")]
    Ticket(#[from] commons_protocol::TicketError),
    /// A name that does not parse.
    #[error(transparent)]
    Name(#[from] commons_protocol::NameError),
    /// A name bound to nothing here.
    #[error("no dataset is named {0} on this node (see `commons name ls`)")]
    NoName(String),
    /// A hex prefix no stored hash starts with.
    #[error("no blob or dataset in the store starts with '{0}'")]
    NoMatch(String),
    /// Neither a hash nor a ticket.
    #[error("'{0}' is neither a hash (64 hex characters, or a unique prefix of at least 4), a ticket (commons1…) nor a name (org/name)")]
    NotAHash(String),
    /// The store failed (or the prefix is ambiguous).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Turns a hash, a unique hash prefix (≥ 4 hex characters) or a ticket into a hash.
pub fn resolve(store: &Store, target: &str) -> Result<Hash, ResolveError> {
    let target = target.trim();
    if Ticket::looks_like(target) {
        return Ok(target.parse::<Ticket>()?.hash);
    }
    if target.contains('/') {
        let name = NameRef::parse(target)?;
        return store
            .resolve_name(&name.name, &name.revision)?
            .ok_or_else(|| ResolveError::NoName(format!("{}@{}", name.name, name.revision)));
    }
    if let Ok(hash) = target.parse::<Hash>() {
        return Ok(hash);
    }
    match store.resolve_prefix(target)? {
        Some(hash) => Ok(hash),
        None if target.len() >= 4 && target.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Err(ResolveError::NoMatch(target.to_string()))
        }
        None => Err(ResolveError::NotAHash(target.to_string())),
    }
}

/// One problem `verify` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyProblem {
    /// The blob.
    pub blob: Hash,
    /// Byte range failing verification; `None` when the blob is missing altogether.
    pub range: Option<std::ops::Range<u64>>,
    /// Dataset file names of the blob (when a dataset was verified).
    pub files: Vec<String>,
}

/// What `verify` checked and found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// Blobs checked.
    pub checked_blobs: u64,
    /// Their bytes.
    pub checked_bytes: u64,
    /// Everything that failed.
    pub problems: Vec<VerifyProblem>,
    /// Blobs not checked because a fetch has not finished them (their spans were verified
    /// as they arrived; a blob is re-checked whole once complete).
    #[serde(default)]
    pub partial_blobs: u64,
}

/// Re-checks every complete blob, or one blob, or one dataset (its manifest and files),
/// against the hash trees.
pub fn verify(
    store: &Store,
    target: Option<&Hash>,
    progress: &dyn ImportProgress,
) -> Result<VerifyReport, StoreError> {
    let mut names: BTreeMap<Hash, Vec<String>> = BTreeMap::new();
    let hashes: Vec<Hash> = match target {
        Some(hash) if store.dataset(hash)?.is_some() => {
            for e in store.read_manifest(hash)?.entries() {
                names.entry(e.hash).or_default().push(e.path.clone());
            }
            std::iter::once(*hash)
                .chain(names.keys().copied())
                .collect()
        }
        Some(hash) if store.blob(hash)?.is_some() => vec![*hash],
        Some(hash) => return Err(StoreError::NotFound { hash: *hash }),
        None => store.blobs()?.into_iter().map(|(h, _)| h).collect(),
    };
    let mut report = VerifyReport::default();
    let mut sizes = Vec::with_capacity(hashes.len());
    for hash in &hashes {
        let meta = store.blob(hash)?;
        if meta
            .as_ref()
            .is_some_and(|m| m.state != BlobState::Complete)
        {
            report.partial_blobs += 1;
            continue;
        }
        sizes.push((hash, meta.map(|m| m.size)));
    }
    progress.start(sizes.len() as u64, sizes.iter().flat_map(|(_, s)| *s).sum());
    for (hash, size) in sizes {
        let files = names.get(hash).cloned().unwrap_or_default();
        let Some(size) = size else {
            report.problems.push(VerifyProblem {
                blob: *hash,
                range: None,
                files,
            });
            continue;
        };
        for c in store.verify_blob(hash)? {
            report.problems.push(VerifyProblem {
                blob: *hash,
                range: Some(c.range),
                files: files.clone(),
            });
        }
        report.checked_blobs += 1;
        report.checked_bytes += size;
        progress.advance(size);
    }
    Ok(report)
}

/// What `pin` or `unpin` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinOutcome {
    /// The dataset or blob.
    pub hash: Hash,
    /// Whether anything changed (false: it already was pinned, or was not).
    pub changed: bool,
}

/// Pins (`pin = true`) or unpins a dataset or blob named by hash, prefix, ticket or name.
/// Unpinning keeps the data until garbage collection needs the space, and drops names
/// bound to it.
pub fn set_pinned(store: &Store, target: &str, pin: bool) -> Result<PinOutcome, String> {
    let hash = resolve(store, target).map_err(|e| e.to_string())?;
    let was = store.pinned(&hash).map_err(|e| e.to_string())?.is_some();
    if pin {
        store
            .pin(&hash)
            .map_err(|e| format!("cannot pin {hash}: {e}"))?;
    } else {
        store
            .unpin(&hash)
            .map_err(|e| format!("cannot unpin {hash}: {e}"))?;
    }
    Ok(PinOutcome {
        hash,
        changed: was != pin,
    })
}

/// Binds `name` (`org/name` or `org/name@revision`) to the dataset `target` names, and pins it.
pub fn set_name(store: &Store, name: &str, target: &str) -> Result<NameEntry, String> {
    let name = NameRef::parse(name).map_err(|e| e.to_string())?;
    let root = resolve(store, target).map_err(|e| e.to_string())?;
    store
        .set_name(&name.name, &name.revision, &root)
        .map_err(|e| format!("cannot name {root} {}: {e}", name.name))
}

/// Removes the binding of `name` (`org/name[@revision]`); the dataset stays pinned.
/// Returns whether there was one.
pub fn unset_name(store: &Store, name: &str) -> Result<bool, String> {
    let name = NameRef::parse(name).map_err(|e| e.to_string())?;
    store
        .unset_name(&name.name, &name.revision)
        .map_err(|e| e.to_string())
}
