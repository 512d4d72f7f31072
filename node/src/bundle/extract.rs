//! `unpack --to`: a bundle's datasets written as plain files, with no store, each file
//! verified through its outboard as it is written (the export code path, reading from
//! the bundle).

use std::io;

use commons_protocol::{
    archive::{self, Archive, ArchiveError, BlobEntry},
    provenance::bundle::SIGNATURE_FILE,
    tree::{self, ReadAt},
    Hash,
};
use serde::{Deserialize, Serialize};

use crate::export::ExportError;

/// A bundle as the source of an export: its blobs, each verified through its outboard as
/// it is written.
pub struct BundleBlobs<'a, R>(pub &'a Archive<R>);

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
            e => archive::bad_data(&b, e).into(),
        })
    }
}

impl<R> BundleBlobs<'_, R> {
    fn entry(&self, hash: &Hash) -> Option<BlobEntry> {
        self.0.index.blob(hash)
    }
}

/// Where `unpack` writes when not into a store.
#[derive(Debug, Clone)]
pub enum ExtractTarget {
    /// Plain files (`--to DIR`): one dataset into `dir`, several into `dir/<root>`.
    Files {
        /// The folder.
        dir: std::path::PathBuf,
        /// Replace files that exist with other content.
        force: bool,
    },
    /// The Hugging Face cache layout (`--hf-cache DIR`).
    HfCache(crate::hf_cache::CacheTarget),
}

/// What `unpack --to` or `--hf-cache` wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtractOutcome {
    /// Each dataset written as plain files, with where it went.
    #[serde(default)]
    pub datasets: Vec<ExtractedDataset>,
    /// Each dataset written into a Hugging Face cache.
    #[serde(default)]
    pub hf_caches: Vec<crate::hf_cache::CacheOutcome>,
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

/// Writes the bundle's datasets to `target` (no store). Each file is verified as it is
/// written, to a temporary name renamed once whole. As plain files, a signature the
/// bundle carries becomes `model.sig` (unless the dataset has a file of that name).
pub fn extract<R: ReadAt>(
    archive: &Archive<R>,
    target: &ExtractTarget,
    progress: &dyn crate::export::ExportProgress,
) -> Result<ExtractOutcome, ExportError> {
    archive.check_whole()?;
    if let Some(root) = archive.index.requires.first() {
        return Err(ArchiveError::Requires { root: *root }.into());
    }
    let source = BundleBlobs(archive);
    let mut outcome = ExtractOutcome::default();
    let several = archive.index.roots.len() > 1;
    for root in &archive.index.roots {
        let manifest = archive.manifest(root)?;
        let (dest, force) = match target {
            ExtractTarget::Files { dir, force } => (dir, *force),
            ExtractTarget::HfCache(cache) => {
                if several && cache.repo.is_some() {
                    return Err(ExportError::NothingIncluded(format!(
                        "the bundle holds {} datasets and --repo names one repository: leave --repo out to write each under its upstream repository",
                        archive.index.roots.len()
                    )));
                }
                let written = crate::hf_cache::write(&source, root, &manifest, cache, progress)?;
                outcome.hf_caches.push(written);
                continue;
            }
        };
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
                Some(write_signature(&dir, &bytes, force)?)
            }
            _ => None,
        };
        outcome.datasets.push(ExtractedDataset {
            root: *root,
            dir,
            files: report.files.len() + report.unchanged as usize,
            bytes: report.bytes,
            signature,
        });
    }
    Ok(outcome)
}

/// Writes `model.sig` into `dir` as the other files are written: to a temporary name,
/// renamed into place (replacing a link, never writing through it); a different file
/// already there is kept unless `force`.
fn write_signature(
    dir: &std::path::Path,
    bytes: &[u8],
    force: bool,
) -> Result<std::path::PathBuf, ExportError> {
    let path = dir.join(SIGNATURE_FILE);
    if let Ok(meta) = path.symlink_metadata() {
        let same = meta.is_file() && std::fs::read(&path).is_ok_and(|held| held == bytes);
        if same {
            return Ok(path);
        }
        if !force {
            return Err(ExportError::Exists { path });
        }
    }
    let tmp = dir.join(format!("{SIGNATURE_FILE}.commons-partial"));
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            ExportError::Io {
                path: path.clone(),
                source: e,
            }
        })?;
    Ok(path)
}
