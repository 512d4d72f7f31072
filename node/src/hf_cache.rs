//! A dataset written into the Hugging Face cache layout (`huggingface_hub`'s
//! `HF_HUB_CACHE`), so the Hub's own clients load it with `HF_HUB_OFFLINE=1` and no
//! network (`unpack --hf-cache`):
//!
//! ```text
//! {models|datasets}--{org}--{name}/
//!   blobs/<etag>                      each distinct file once, verified as written
//!   snapshots/<commit>/<path>         → ../../blobs/<etag> (relative symlinks)
//!   refs/<revision>                   the commit (no newline, as the client writes it)
//! ```
//!
//! The etag is the Hub's id of the file (the SHA-256 of an LFS file, the git blob id
//! otherwise), computed as the file is written and, when the manifest records one,
//! checked against it; without recorded ids, the git blob id. The commit is the upstream commit when the dataset came from the Hub, else
//! the first 40 hex digits of the dataset's root: a made-up commit the client accepts as
//! any other, which names this exact content.

use std::{
    fs,
    io::{self, Write},
    path::{Path, PathBuf},
};

use commons_protocol::{hub::HubHasher, Hash, Manifest, RepoKind};
use serde::{Deserialize, Serialize};

use crate::export::{io_err, BlobSource, ExportError, ExportProgress};

/// Where and as what a dataset goes into the cache.
#[derive(Debug, Clone)]
pub struct CacheTarget {
    /// The cache folder (`HF_HUB_CACHE`, by default `~/.cache/huggingface/hub`).
    pub cache: PathBuf,
    /// `org/name`; `None` takes the dataset's upstream repository.
    pub repo: Option<String>,
    /// Model or dataset repository; `None` takes the upstream's kind, else model (the
    /// client's default).
    pub kind: Option<RepoKind>,
    /// The ref to point at the commit.
    pub revision: String,
}

/// What was written for one dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheOutcome {
    /// The dataset.
    pub root: Hash,
    /// `org/name`.
    pub repo: String,
    /// `model` or `dataset`.
    pub kind: RepoKind,
    /// The repository's folder in the cache.
    pub repo_dir: PathBuf,
    /// The commit its snapshot is under.
    pub commit: String,
    /// The ref written.
    pub revision: String,
    /// Files in the snapshot.
    pub files: usize,
    /// Bytes of blobs written.
    pub bytes: u64,
}

/// Writes dataset `root` (its `manifest`, its blobs from `source`) into the cache.
/// Every blob is verified as it is written, to a temporary name renamed once whole.
pub fn write(
    source: &dyn BlobSource,
    root: &Hash,
    manifest: &Manifest,
    target: &CacheTarget,
    progress: &dyn ExportProgress,
) -> Result<CacheOutcome, ExportError> {
    let upstream = manifest.upstream();
    let repo = match (&target.repo, upstream) {
        (Some(repo), _) => repo.clone(),
        (None, Some(u)) => u.repo.clone(),
        (None, None) => {
            return Err(ExportError::NothingIncluded(format!(
                "{root} did not come from the Hub: name its repository with --repo org/name"
            )))
        }
    };
    commons_protocol::hub::validate_repo_id(&repo)
        .map_err(|e| ExportError::NothingIncluded(format!("--repo {repo}: {e}")))?;
    let kind = target
        .kind
        .or(upstream.map(|u| u.kind))
        .unwrap_or(RepoKind::Model);
    let commit = match upstream {
        Some(u) if u.repo == repo => u.commit.to_string(),
        _ => root.to_string()[..40].to_string(),
    };
    if !valid_revision(&target.revision) {
        return Err(ExportError::NothingIncluded(format!(
            "revision {:?} is not a plain ref name",
            target.revision
        )));
    }
    for entry in manifest.entries() {
        if !source.has_complete(&entry.hash)? {
            return Err(ExportError::Incomplete {
                root: *root,
                missing: 1,
                wanted: manifest.entries().len(),
                first: entry.path.clone(),
            });
        }
    }
    let repo_dir = target
        .cache
        .join(format!("{}s--{}", kind.as_str(), repo.replace('/', "--")));
    let blobs = repo_dir.join("blobs");
    let snapshot = repo_dir.join("snapshots").join(&commit);
    for dir in [&blobs, &snapshot] {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    progress.start(
        manifest.entries().len() as u64,
        manifest.entries().iter().map(|e| e.size).sum(),
    );
    let mut written: std::collections::HashMap<Hash, String> = Default::default();
    let mut bytes = 0;
    for entry in manifest.entries() {
        if progress.cancelled() {
            return Err(ExportError::Io {
                path: snapshot,
                source: io::Error::new(io::ErrorKind::Interrupted, "cancelled"),
            });
        }
        let etag = match written.get(&entry.hash) {
            Some(etag) => etag.clone(),
            None => {
                let etag = write_blob(source, &blobs, entry)?;
                bytes += entry.size;
                written.insert(entry.hash, etag.clone());
                etag
            }
        };
        link(&snapshot, &entry.path, &etag)?;
        progress.file_done(entry.size);
    }
    let refs = repo_dir.join("refs");
    fs::create_dir_all(&refs).map_err(io_err(&refs))?;
    let ref_file = refs.join(&target.revision);
    fs::write(&ref_file, &commit).map_err(io_err(&ref_file))?;
    Ok(CacheOutcome {
        root: *root,
        repo,
        kind,
        repo_dir,
        commit,
        revision: target.revision.clone(),
        files: manifest.entries().len(),
        bytes,
    })
}

/// A ref name the client would write: no path separators, nothing hidden.
fn valid_revision(revision: &str) -> bool {
    !revision.is_empty()
        && revision.len() <= 255
        && !revision.starts_with('.')
        && revision
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// Writes one file's blob, verified, and returns its etag.
fn write_blob(
    source: &dyn BlobSource,
    blobs: &Path,
    entry: &commons_protocol::ManifestEntry,
) -> Result<String, ExportError> {
    let tmp = blobs.join(format!("{}.commons-incomplete", entry.hash));
    let file = fs::File::create(&tmp).map_err(io_err(&tmp))?;
    // Hashed on the way whatever the manifest says: a blob is filed under the Hub id its
    // bytes have, never under one a bundle merely claims (it could replace another
    // snapshot's blob).
    let mut out = HashingWriter {
        out: io::BufWriter::with_capacity(1 << 20, file),
        hasher: HubHasher::new(entry.size),
    };
    let result = source
        .write_verified(&entry.hash, &mut out)
        .and_then(|_| out.out.flush().map_err(io_err(&tmp)));
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    let lfs = entry.hub.is_some_and(|ids| ids.lfs);
    let computed = out.hasher.finish(lfs);
    let etag = match (entry.hub, computed) {
        (None, Some(ids)) => ids.git_oid.to_string(),
        (Some(claimed), Some(ids))
            if (claimed.lfs && claimed.sha256 == ids.sha256)
                || (!claimed.lfs && claimed.git_oid == ids.git_oid) =>
        {
            claimed.etag()
        }
        _ => {
            let _ = fs::remove_file(&tmp);
            return Err(ExportError::Io {
                path: PathBuf::from(&entry.path),
                source: io::Error::other(
                    "its bytes do not have the Hub id the manifest records for it",
                ),
            });
        }
    };
    let path = blobs.join(&etag);
    fs::rename(&tmp, &path).map_err(io_err(&path))?;
    Ok(etag)
}

/// Links `snapshot/path` to `../…/blobs/etag`, replacing a link already there.
fn link(snapshot: &Path, path: &str, etag: &str) -> Result<(), ExportError> {
    let parts: Vec<&str> = path.split('/').collect();
    let at = parts.iter().fold(snapshot.to_path_buf(), |p, c| p.join(c));
    if let Some(parent) = at.parent() {
        fs::create_dir_all(parent).map_err(io_err(parent))?;
        // Manifest paths have no `..`; a symlinked folder on the way could still lead out.
        let inside = parent
            .canonicalize()
            .ok()
            .zip(snapshot.canonicalize().ok())
            .is_some_and(|(p, s)| p.starts_with(s));
        if !inside {
            return Err(ExportError::Escapes {
                path: parent.to_path_buf(),
            });
        }
    }
    let up = "../".repeat(parts.len() + 1);
    let target = format!("{up}blobs/{etag}");
    match at.symlink_metadata() {
        Ok(m) if m.file_type().is_symlink() => fs::remove_file(&at).map_err(io_err(&at))?,
        Ok(_) => return Err(ExportError::Exists { path: at }),
        Err(_) => {}
    }
    symlink(&target, &at).map_err(io_err(&at))
}

#[cfg(unix)]
fn symlink(target: &str, at: &Path) -> io::Result<()> {
    std::os::unix::fs::symlink(target, at)
}

#[cfg(not(unix))]
fn symlink(_target: &str, _at: &Path) -> io::Result<()> {
    Err(io::Error::other(
        "the Hugging Face cache layout needs symlinks",
    ))
}

/// Writes through, computing the Hub ids.
struct HashingWriter<W> {
    out: W,
    hasher: HubHasher,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}
