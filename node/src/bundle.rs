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
    tree::{self, ReadAt},
    Hash, Manifest,
};
use serde::{Deserialize, Serialize};

use commons_protocol::provenance::bundle::SIGNATURE_FILE;

use crate::{
    error::{ApiError, ErrorKind},
    export::ExportError,
    progress::{Progress, ProgressEvent},
    store::{ImportProgress, Store},
};

/// What `pack` wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackOutcome {
    /// The datasets packed.
    pub roots: Vec<Hash>,
    /// Blobs (manifests included), each once.
    pub blobs: usize,
    /// Signature bundles carried.
    pub signatures: usize,
    /// Bytes of blob data.
    pub data_bytes: u64,
    /// Bytes of the bundle.
    pub bundle_bytes: u64,
}

/// Writes a bundle of the complete datasets `roots` to `out`: every blob's outboard and
/// data (read back verified), and the roots' signatures.
pub fn pack(
    store: &Store,
    roots: &[Hash],
    out: impl io::Write,
    progress: &Progress,
) -> Result<PackOutcome, ApiError> {
    let mut blobs = Vec::new();
    let mut signatures = Vec::new();
    let mut signature_bytes = Vec::new();
    for root in roots {
        if !store.dataset_complete(root)? {
            return Err(ApiError::new(
                ErrorKind::NotFound,
                format!("{root} is not a complete dataset here: only complete datasets are packed"),
            ));
        }
        let manifest = store.read_manifest(root)?;
        let manifest_size = store
            .blob(root)?
            .map(|m| m.size)
            .ok_or_else(|| ApiError::new(ErrorKind::NotFound, format!("{root}: no manifest")))?;
        blobs.push(BlobEntry {
            hash: *root,
            size: manifest_size,
        });
        blobs.extend(manifest.entries().iter().map(|e| BlobEntry {
            hash: e.hash,
            size: e.size,
        }));
        for bytes in store.signatures(root)? {
            let entry = SignatureEntry {
                root: *root,
                hash: Hash::of(&bytes),
            };
            signatures.push(entry);
            signature_bytes.push((entry, bytes));
        }
    }
    let index = Index::new(roots.to_vec(), blobs, signatures);
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
    let (_, bundle_bytes) = writer.finish().map_err(io_error)?;
    Ok(PackOutcome {
        roots: index.roots.clone(),
        blobs: index.blobs.len(),
        signatures: signature_bytes.len(),
        data_bytes: index.data_bytes(),
        bundle_bytes,
    })
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
    /// Where the bundle ends early, if it does.
    pub truncated: Option<String>,
}

/// Imports bundle `archive` into the store. A bundle cut short is refused unless `resume`
/// is given; then what it holds is imported and the rest waits for the next unpack. A
/// blob that fails verification is refused, and what this unpack stored of it removed.
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
        if record_if_complete(store, root, manifest)? {
            outcome.signatures += keep_signatures(store, archive, root, manifest)?;
            outcome.complete.push(*root);
        } else {
            outcome.incomplete.push(*root);
        }
    }
    for root in &archive.index.roots {
        if !manifests.iter().any(|(r, _)| r == root) {
            outcome.incomplete.push(*root);
        }
    }
    Ok(outcome)
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
                let name = match e {
                    tree::VerifyError::OutboardMismatch { .. } => archive::outboard_name(&b.hash),
                    _ => archive::data_name(&b.hash),
                };
                let at = match e {
                    tree::VerifyError::DataMismatch { offset }
                    | tree::VerifyError::OutboardMismatch { offset } => offset,
                    _ => range.start,
                };
                let group = at / tree::CHUNK_GROUP_BYTES * tree::CHUNK_GROUP_BYTES;
                return Err(ApiError::new(
                    ErrorKind::Corrupt,
                    format!(
                        "{name}: bytes {group}..{} fail verification ({e}); nothing of this blob was kept",
                        (group + tree::CHUNK_GROUP_BYTES).min(b.size)
                    ),
                ));
            }
            store.put_verified_span(partial.id, b.size, index, &buf, None, &[])?;
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

/// Records (and pins) dataset `root` if the store holds every blob it names.
fn record_if_complete(store: &Store, root: &Hash, manifest: &Manifest) -> Result<bool, ApiError> {
    for e in manifest.entries() {
        if !store
            .blob(&e.hash)?
            .is_some_and(|m| m.state == crate::store::BlobState::Complete)
        {
            return Ok(false);
        }
    }
    store.record_dataset(root, manifest, true)?;
    Ok(true)
}

/// Keeps the signatures the bundle carries for `root` (checked to name its manifest; as
/// a folder's `model.sig`, unverified until a key or policy checks them).
fn keep_signatures<R: ReadAt>(
    store: &Store,
    archive: &Archive<R>,
    root: &Hash,
    manifest: &Manifest,
) -> Result<usize, ApiError> {
    let mut kept = 0;
    for s in archive.index.signatures.iter().filter(|s| s.root == *root) {
        let bytes = archive.signature(s)?;
        crate::provenance::signatures::check_bundle(root, manifest, &bytes)
            .map_err(|e| e.context(archive::signature_name(s)))?;
        crate::provenance::signatures::keep(store, root, &bytes, false)?;
        kept += 1;
    }
    Ok(kept)
}

/// A bundle as the source of an export: its blobs, each verified through its outboard as
/// it is written.
struct BundleBlobs<'a, R>(&'a Archive<R>);

impl<R: ReadAt> crate::export::BlobSource for BundleBlobs<'_, R> {
    fn has_complete(&self, hash: &Hash) -> Result<bool, ExportError> {
        Ok(self.entry(hash).is_some_and(|b| {
            self.0
                .entry(&archive::data_name(&b.hash))
                .is_some_and(|e| e.present == e.size)
        }))
    }

    fn write_verified(&self, hash: &Hash, out: &mut dyn io::Write) -> Result<u64, ExportError> {
        let b = self.entry(hash).ok_or_else(|| ArchiveError::Missing {
            name: archive::data_name(hash),
        })?;
        let (outboard, data) = self.0.blob(&b)?;
        tree::copy_verified(b.hash, b.size, &data, &outboard, out).map_err(|e| match e {
            tree::VerifyError::Io(e) => ExportError::Io {
                path: archive::data_name(hash).into(),
                source: e,
            },
            tree::VerifyError::OutboardMismatch { offset } => ArchiveError::BadData {
                name: archive::outboard_name(hash),
                range: group_of(offset, b.size),
            }
            .into(),
            tree::VerifyError::DataMismatch { offset } => ArchiveError::BadData {
                name: archive::data_name(hash),
                range: group_of(offset, b.size),
            }
            .into(),
            other => ExportError::Io {
                path: archive::data_name(hash).into(),
                source: io::Error::other(other.to_string()),
            },
        })
    }
}

impl<R> BundleBlobs<'_, R> {
    fn entry(&self, hash: &Hash) -> Option<BlobEntry> {
        let blobs = &self.0.index.blobs;
        blobs
            .binary_search_by_key(hash, |b| b.hash)
            .ok()
            .map(|i| blobs[i])
    }
}

/// The 16 KiB group holding `offset`, clipped to the blob.
fn group_of(offset: u64, size: u64) -> Range<u64> {
    let start = offset / tree::CHUNK_GROUP_BYTES * tree::CHUNK_GROUP_BYTES;
    start..(start + tree::CHUNK_GROUP_BYTES).min(size)
}

/// What `unpack --to` wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtractOutcome {
    /// Each dataset, with where it went.
    pub datasets: Vec<ExtractedDataset>,
}

/// One dataset written as plain files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtractedDataset {
    /// Its root.
    pub root: Hash,
    /// The folder its files are in.
    pub dir: std::path::PathBuf,
    /// Files written (and kept as they were, identical).
    pub files: usize,
    /// Bytes written.
    pub bytes: u64,
    /// The `model.sig` written, if the bundle carries a signature of it.
    pub signature: Option<std::path::PathBuf>,
}

/// Writes the bundle's datasets as plain files under `dest` (no store): one dataset goes
/// into `dest`, several into `dest/<root>`. Each file is verified as it is written, to a
/// temporary name renamed once whole; a signature the bundle carries becomes `model.sig`
/// (unless the dataset has a file of that name).
pub fn extract<R: ReadAt>(
    archive: &Archive<R>,
    dest: &std::path::Path,
    force: bool,
    progress: &dyn crate::export::ExportProgress,
) -> Result<ExtractOutcome, ExportError> {
    archive.check_whole()?;
    let source = BundleBlobs(archive);
    let mut datasets = Vec::new();
    let several = archive.index.roots.len() > 1;
    for root in &archive.index.roots {
        let manifest = archive.manifest(root)?;
        let dir = if several {
            dest.join(root.to_string())
        } else {
            dest.to_path_buf()
        };
        let report = crate::export::export_files(
            &source,
            root,
            &manifest,
            &dir,
            force,
            &crate::include::Include::default(),
            progress,
        )?;
        let signature = match archive.index.signatures.iter().find(|s| s.root == *root) {
            Some(s) if manifest.entry(SIGNATURE_FILE).is_none() => {
                let bytes = archive.signature(s)?;
                let path = dir.join(SIGNATURE_FILE);
                std::fs::write(&path, bytes).map_err(|e| ExportError::Io {
                    path: path.clone(),
                    source: e,
                })?;
                Some(path)
            }
            _ => None,
        };
        datasets.push(ExtractedDataset {
            root: *root,
            dir,
            files: report.files.len() + report.unchanged as usize,
            bytes: report.bytes,
            signature,
        });
    }
    Ok(ExtractOutcome { datasets })
}

fn io_error(e: io::Error) -> ApiError {
    ApiError::new(ErrorKind::Io, format!("writing the bundle: {e}"))
}
