//! Packing datasets into a bundle and unpacking one into the store (the format and its
//! checks: [`commons_protocol::archive`]).
//!
//! Unpacking is one verified pass: each span of each blob is checked against the blob's
//! hash through the outboard that travels before it, and stored with its verified mark in
//! one write, as a fetch stores what peers send. So a crash or a cut bundle loses at most
//! the span being written, and the next unpack continues from the spans still missing.
//! A dataset is recorded (listed, pinned) only once every blob it names is complete.

use std::{io, ops::Range};

use commons_protocol::{
    archive::{self, Archive, ArchiveError, BlobEntry, Index, SignatureEntry, Writer},
    provenance::{name_key, SignedNameRecord},
    tree::{self, ReadAt},
    Hash, Manifest,
};
use serde::{Deserialize, Serialize};

use crate::{
    error::{ApiError, ErrorKind},
    progress::{Progress, ProgressEvent},
    store::{ImportProgress, Store},
};

mod extract;
mod files;
#[cfg(test)]
mod tests;

pub use extract::{extract, BundleBlobs, ExtractOutcome, ExtractTarget, ExtractedDataset};
pub use files::{open, volume_paths, write_bundle, BundleFile, MAX_VOLUMES, MIN_VOLUME_BYTES};

/// What `pack` wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackOutcome {
    /// The datasets packed.
    pub roots: Vec<Hash>,
    /// For a delta bundle, the datasets whose blobs were left out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requires: Vec<Hash>,
    /// Blobs (manifests included), each once.
    pub blobs: usize,
    /// Signature bundles carried.
    pub signatures: usize,
    /// Signed name records carried.
    #[serde(default)]
    pub names: usize,
    /// Bytes of blob data.
    pub data_bytes: u64,
    /// Bytes of the bundle.
    pub bundle_bytes: u64,
    /// The files written (one, or the volumes of a split bundle).
    #[serde(default)]
    pub files: Vec<std::path::PathBuf>,
}

/// Writes a bundle of the complete datasets `roots` to `out`: every blob's outboard and
/// data (read back verified), the roots' signatures and the name records this store
/// remembers pointing at them. With `since` (datasets this store holds), the blobs those
/// list are left out: a delta bundle that requires them.
pub fn pack(
    store: &Store,
    roots: &[Hash],
    since: &[Hash],
    out: impl io::Write,
    progress: &Progress,
) -> Result<PackOutcome, ApiError> {
    let mut blobs = Vec::new();
    let mut signatures = Vec::new();
    let mut signature_bytes = Vec::new();
    let mut left_out = std::collections::HashSet::new();
    for older in since {
        let manifest = store.read_manifest(older).map_err(|e| {
            ApiError::from(e).context(format_args!("--since {older}: its manifest"))
        })?;
        left_out.extend(manifest.entries().iter().map(|e| e.hash));
        blobs.push(manifest_entry(store, older)?);
    }
    for root in roots {
        if !store.dataset_complete(root)? {
            return Err(ApiError::new(
                ErrorKind::NotFound,
                format!("{root} is not a complete dataset here: only complete datasets are packed"),
            ));
        }
        let manifest = store.read_manifest(root)?;
        blobs.push(manifest_entry(store, root)?);
        blobs.extend(
            manifest
                .entries()
                .iter()
                .filter(|e| !left_out.contains(&e.hash))
                .map(|e| BlobEntry {
                    hash: e.hash,
                    size: e.size,
                }),
        );
        for bytes in store.signatures(root)? {
            let entry = SignatureEntry {
                root: *root,
                hash: Hash::of(&bytes),
            };
            signatures.push(entry);
            signature_bytes.push((entry, bytes));
        }
    }
    let packed: std::collections::HashSet<Hash> = roots.iter().copied().collect();
    let mut names: Vec<(Hash, Vec<u8>)> = store
        .remembered_names()?
        .into_iter()
        .filter(|(_, record, _)| packed.contains(&record.record.root))
        .map(|(_, record, _)| {
            let bytes = record.encode();
            (Hash::of(&bytes), bytes)
        })
        .collect();
    names.sort();
    names.dedup();
    let index = Index::new(roots.to_vec(), blobs, signatures)
        .with(names.iter().map(|(h, _)| *h).collect(), since.to_vec());
    progress.event(ProgressEvent::Start {
        files: index.blobs.len() as u64,
        bytes: index.data_bytes(),
    });
    let mut writer = Writer::new(out, &index).map_err(io_error)?;
    for b in &index.blobs {
        if progress.cancelled() {
            return Err(ApiError::new(ErrorKind::Cancelled, "pack cancelled"));
        }
        writer
            .outboard(b, |w| {
                store.read_outboard(&b.hash, w).map_err(io::Error::other)
            })
            .map_err(io_error)?;
        writer
            .data(b, |w| {
                store
                    .read_blob_verified(&b.hash, w)
                    .map_err(io::Error::other)
            })
            .map_err(io_error)?;
        progress.event(ProgressEvent::Advance { bytes: b.size });
        progress.event(ProgressEvent::FileDone);
    }
    signature_bytes.sort_by_key(|(s, _)| archive::signature_name(s));
    signature_bytes.dedup_by_key(|(s, _)| *s);
    for (entry, bytes) in &signature_bytes {
        writer.signature(entry, bytes).map_err(io_error)?;
    }
    for (hash, bytes) in &names {
        writer.name_record(hash, bytes).map_err(io_error)?;
    }
    let (_, bundle_bytes) = writer.finish().map_err(io_error)?;
    Ok(PackOutcome {
        roots: index.roots.clone(),
        requires: index.requires.clone(),
        blobs: index.blobs.len(),
        signatures: signature_bytes.len(),
        names: names.len(),
        data_bytes: index.data_bytes(),
        bundle_bytes,
        files: Vec::new(),
    })
}

/// The bundle entry of dataset `root`'s manifest.
fn manifest_entry(store: &Store, root: &Hash) -> Result<BlobEntry, ApiError> {
    let size = store
        .blob(root)?
        .map(|m| m.size)
        .ok_or_else(|| ApiError::new(ErrorKind::NotFound, format!("{root}: no manifest here")))?;
    Ok(BlobEntry { hash: *root, size })
}

/// What `unpack` did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnpackOutcome {
    /// Datasets now complete in the store (recorded and pinned).
    pub complete: Vec<Hash>,
    /// Datasets still missing blobs (the bundle was cut short: unpack again with the rest).
    pub incomplete: Vec<Hash>,
    /// Blobs imported now.
    pub blobs_imported: usize,
    /// Blobs the store already held.
    pub blobs_held: usize,
    /// Bytes verified and stored now.
    pub bytes_imported: u64,
    /// Bytes already held (whole blobs, or spans of an earlier, interrupted unpack).
    pub bytes_held: u64,
    /// Signatures kept.
    pub signatures: usize,
    /// Name records remembered (each newer than, or the same as, any seen before).
    #[serde(default)]
    pub names: usize,
    /// Where the bundle ends early, if it does.
    pub truncated: Option<String>,
}

/// Imports bundle `archive` into the store. A bundle cut short is refused unless `resume`
/// is given; then what it holds is imported and the rest waits for the next unpack. A
/// blob that fails verification is refused, and what this unpack stored of it removed.
/// Refused before anything is stored: a delta bundle whose required datasets the store
/// lacks, and a bundle carrying a name record older than one this store has seen (a
/// rollback).
pub fn unpack<R: ReadAt>(
    store: &Store,
    archive: &Archive<R>,
    resume: bool,
    progress: &Progress,
) -> Result<UnpackOutcome, ApiError> {
    let mut outcome = UnpackOutcome::default();
    if let Some(cut) = &archive.truncated {
        if !resume {
            return Err(ApiError::new(
                ErrorKind::Corrupt,
                format!("{cut}; with --resume what it holds is imported, and unpacking again once the rest has arrived completes it"),
            ));
        }
        outcome.truncated = Some(cut.to_string());
    }
    for required in &archive.index.requires {
        if !store.dataset_complete(required)? {
            return Err(ArchiveError::Requires { root: *required }.into());
        }
    }
    // Records and signatures come last in a bundle: one cut short may lack them, and then
    // no dataset is recorded until a run that has them checks them.
    let (names, names_whole) = checked_names(store, archive, resume)?;
    // The manifests first: a bad one is refused before any data is stored.
    let mut manifests = Vec::new();
    for root in &archive.index.roots {
        match archive.manifest(root) {
            Ok(m) => manifests.push((*root, m)),
            Err(ArchiveError::Truncated { .. }) if resume => {}
            Err(e) => return Err(e.into()),
        }
    }
    progress.event(ProgressEvent::Start {
        files: archive.index.blobs.len() as u64,
        bytes: archive.index.data_bytes(),
    });
    for b in &archive.index.blobs {
        if progress.cancelled() {
            return Err(ApiError::new(ErrorKind::Cancelled, "unpack cancelled"));
        }
        match import_blob(store, archive, b, progress)? {
            BlobImport::Held => {
                outcome.blobs_held += 1;
                outcome.bytes_held += b.size;
            }
            BlobImport::Imported { new, held } => {
                outcome.blobs_imported += 1;
                outcome.bytes_imported += new;
                outcome.bytes_held += held;
            }
            BlobImport::Cut { new, held } => {
                outcome.bytes_imported += new;
                outcome.bytes_held += held;
                break;
            }
        }
        progress.event(ProgressEvent::FileDone);
    }
    for (root, manifest) in &manifests {
        let signatures = match signatures_of(archive, root, manifest, resume)? {
            Some(signatures) if names_whole && holds_all(store, manifest)? => signatures,
            _ => {
                outcome.incomplete.push(*root);
                continue;
            }
        };
        for bytes in &signatures {
            crate::provenance::signatures::keep(store, root, bytes, false)?;
        }
        store.record_dataset(root, manifest, true)?;
        outcome.signatures += signatures.len();
        outcome.complete.push(*root);
    }
    for root in &archive.index.roots {
        if !manifests.iter().any(|(r, _)| r == root) {
            outcome.incomplete.push(*root);
        }
    }
    // A name is remembered once the dataset it points at is here.
    for (key, record) in names {
        if outcome.complete.contains(&record.record.root)
            && !matches!(
                store.remember_name(&key, &record, false, false)?,
                crate::store::NameUpdate::Older(_)
            )
        {
            outcome.names += 1;
        }
    }
    Ok(outcome)
}

/// The bundle's name records, each with its DHT key, checked not to be older than what
/// the store has seen for its name; and whether all of them were there (with `resume`,
/// records past the end of a bundle cut short are left for a later run).
fn checked_names<R: ReadAt>(
    store: &Store,
    archive: &Archive<R>,
    resume: bool,
) -> Result<(Vec<(Hash, SignedNameRecord)>, bool), ApiError> {
    let mut names = Vec::new();
    let mut whole = true;
    for hash in &archive.index.names {
        let record = match archive.name_record(hash) {
            Ok(record) => record,
            Err(ArchiveError::Truncated { .. }) if resume => {
                whole = false;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let publisher = record
            .record
            .publisher_key()
            .map_err(|e| ApiError::new(ErrorKind::Corrupt, e.to_string()))?;
        let key = name_key(&publisher, &record.record.name_ref());
        if let Some((held, _)) = store.seen_name(&key)? {
            if held != record && !record.supersedes(&held) {
                return Err(ApiError::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "{}: the bundle points {} at {} with record {}, older than record {} seen here (pointing at {}): a rollback, refused",
                        archive::name_record_name(hash),
                        record.record.name_ref(),
                        record.record.root,
                        record.record.seq,
                        held.record.seq,
                        held.record.root
                    ),
                ));
            }
        }
        names.push((key, record));
    }
    Ok((names, whole))
}

/// What became of one blob.
enum BlobImport {
    /// The store held it whole.
    Held,
    /// Imported: `new` bytes now, `held` bytes from an earlier unpack.
    Imported { new: u64, held: u64 },
    /// The bundle ends inside it (resume mode): what it held is stored, `new` bytes now.
    Cut { new: u64, held: u64 },
}

fn import_blob<R: ReadAt>(
    store: &Store,
    archive: &Archive<R>,
    b: &BlobEntry,
    progress: &Progress,
) -> Result<BlobImport, ApiError> {
    let partial = store.begin_partial(&b.hash, b.size)?;
    if partial.complete {
        progress.event(ProgressEvent::Advance { bytes: b.size });
        return Ok(BlobImport::Held);
    }
    let (outboard, data) = match archive.blob(b) {
        Ok(files) => files,
        Err(ArchiveError::Truncated { .. }) if archive.truncated.is_some() => {
            return Ok(BlobImport::Cut { new: 0, held: 0 })
        }
        Err(e) => return Err(e.into()),
    };
    let present = archive
        .entry(&archive::data_name(&b.hash))
        .map_or(0, |e| e.present);
    let missing = store.missing_spans(partial.id, b.size)?;
    let spans = store.span_byte_ranges(&missing, b.size);
    let missing_bytes: u64 = spans.iter().map(|r| r.end - r.start).sum();
    // Only what this unpack stores is taken back on bad data: spans an earlier fetch or
    // unpack verified stay.
    let fresh = missing_bytes == b.size;
    progress.event(ProgressEvent::Advance {
        bytes: b.size - missing_bytes,
    });
    let span_bytes = store.span_bytes();
    let mut buf = Vec::with_capacity(span_bytes as usize);
    let mut pairs = Vec::new();
    let mut new = 0;
    for (indices, bytes) in missing.iter().zip(&spans) {
        for index in indices.clone() {
            let range: Range<u64> =
                (index * span_bytes).max(bytes.start)..((index + 1) * span_bytes).min(bytes.end);
            if range.end > present {
                return Ok(BlobImport::Cut {
                    new,
                    held: b.size - missing_bytes,
                });
            }
            buf.clear();
            if let Err(e) =
                tree::copy_range_verified(b.hash, b.size, &data, &outboard, range.clone(), &mut buf)
            {
                if fresh {
                    store.discard_partial(&b.hash)?;
                }
                let kept = if fresh {
                    "nothing of this blob was kept"
                } else {
                    "what earlier runs verified of this blob is kept"
                };
                let err = ApiError::from(archive::bad_data(b, e));
                return Err(ApiError::new(err.kind, format!("{}; {kept}", err.message)));
            }
            // The span's own pairs come with the bundle (verified just now, with its
            // data): cut out, not computed again.
            let whole_span = range.end - range.start == span_bytes
                && commons_protocol::subtree::is_subtree_len(span_bytes);
            let pairs = if whole_span {
                let at =
                    commons_protocol::subtree::subtree_pairs_in_outboard(range.start, span_bytes);
                pairs.resize((at.end - at.start) as usize, 0);
                tree::read_exact_at(&outboard, at.start, &mut pairs).map_err(|e| {
                    ApiError::new(
                        ErrorKind::Io,
                        format!("{}: {e}", archive::outboard_name(&b.hash)),
                    )
                })?;
                Some(&pairs[..])
            } else {
                None
            };
            store.put_verified_span(partial.id, b.size, index, &buf, pairs, &[])?;
            new += range.end - range.start;
            progress.event(ProgressEvent::Advance {
                bytes: range.end - range.start,
            });
        }
    }
    store.complete_partial(&b.hash)?;
    Ok(BlobImport::Imported {
        new,
        held: b.size - missing_bytes,
    })
}

/// Whether the store holds every blob `manifest` names, complete.
fn holds_all(store: &Store, manifest: &Manifest) -> Result<bool, ApiError> {
    for e in manifest.entries() {
        if !store
            .blob(&e.hash)?
            .is_some_and(|m| m.state == crate::store::BlobState::Complete)
        {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The signatures the bundle carries for `root`, each checked to name its manifest (kept
/// as a folder's `model.sig` is, unverified until a key or policy checks them); `None`
/// when, with `resume`, the bundle ends before one of them.
fn signatures_of<R: ReadAt>(
    archive: &Archive<R>,
    root: &Hash,
    manifest: &Manifest,
    resume: bool,
) -> Result<Option<Vec<Vec<u8>>>, ApiError> {
    let mut signatures = Vec::new();
    for s in archive.index.signatures.iter().filter(|s| s.root == *root) {
        let bytes = match archive.signature(s) {
            Ok(bytes) => bytes,
            Err(ArchiveError::Truncated { .. }) if resume => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        crate::provenance::signatures::check_bundle(root, manifest, &bytes)
            .map_err(|e| e.context(archive::signature_name(s)))?;
        signatures.push(bytes);
    }
    Ok(Some(signatures))
}

fn io_error(e: io::Error) -> ApiError {
    ApiError::new(ErrorKind::Io, format!("writing the bundle: {e}"))
}
