//! Writing blobs and datasets back to the file system.
//!
//! Every byte is verified on its way out (see [`Store::read_blob_verified`]). Each file is
//! written to a fresh temporary name beside its target and renamed into place only once
//! complete and verified, so a failed or interrupted export leaves no half-written file
//! under the real name. Manifest paths are validated when the manifest is parsed; on top of
//! that, every folder created is checked to be inside the target folder, so a symbolic
//! link already in the target cannot redirect a write elsewhere.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, BufWriter},
    path::{Path, PathBuf},
};

use commons_protocol::{Hash, Manifest};

use crate::{
    include::Include,
    store::{BlobState, Store, StoreError},
};

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// Reading from the store failed (unknown hash, corruption…).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The target already exists and overwriting was not asked for.
    #[error("{path} already exists with other content (use --force to overwrite)")]
    Exists {
        /// The existing file.
        path: PathBuf,
    },
    /// `--include` patterns that match no file of the dataset.
    #[error("{0}")]
    NothingIncluded(String),
    /// A folder on the way to a file resolves outside the target folder.
    #[error("{path} leads outside the target folder; refusing to write there")]
    Escapes {
        /// The offending folder.
        path: PathBuf,
    },
    /// Some wanted files are not (all) here yet: nothing was written.
    #[error(
        "not all of it is here yet: {missing} of {wanted} file{} still to fetch (first: \
         {first}); `commons get {root}` fetches the rest",
        if *.wanted == 1 { "" } else { "s" }
    )]
    Incomplete {
        /// The dataset.
        root: Hash,
        /// Wanted files missing or partial.
        missing: usize,
        /// Files wanted.
        wanted: usize,
        /// Path of the first of them.
        first: String,
    },
    /// A bundle's data failed its checks.
    #[error(transparent)]
    Bundle(#[from] commons_protocol::archive::ArchiveError),
    /// Creating or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder concerned.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
}

/// Where an export reads blobs from, each verified as it is written: the store, or a
/// bundle (`unpack --to`). One export path serves both.
pub trait BlobSource {
    /// Whether blob `hash` is here whole.
    fn has_complete(&self, hash: &Hash) -> Result<bool, ExportError>;
    /// Writes blob `hash` to `out`, each chunk group verified before it is written;
    /// returns the bytes written.
    fn write_verified(&self, hash: &Hash, out: &mut dyn io::Write) -> Result<u64, ExportError>;
}

impl BlobSource for Store {
    fn has_complete(&self, hash: &Hash) -> Result<bool, ExportError> {
        Ok(self
            .blob(hash)?
            .is_some_and(|m| m.state == BlobState::Complete))
    }

    fn write_verified(&self, hash: &Hash, out: &mut dyn io::Write) -> Result<u64, ExportError> {
        Ok(self.read_blob_verified(hash, out)?)
    }
}

/// Receives progress of a long export.
pub trait ExportProgress {
    /// Called once with the totals.
    fn start(&self, _files: u64, _bytes: u64) {}
    /// Called after each file, with its size.
    fn file_done(&self, _bytes: u64) {}
    /// Whether whoever asked has gone (Ctrl-C, a client that left): checked before each
    /// file, and the export stops there (files already written stay, complete).
    fn cancelled(&self) -> bool {
        false
    }
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExportReport {
    /// Files written, with their paths.
    pub files: Vec<PathBuf>,
    /// Total bytes written.
    pub bytes: u64,
    /// Files already there with the same content (checked, not rewritten).
    pub unchanged: u64,
}

/// What an export wrote: the reply of the `export` request (its `--json`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExportOutcome {
    /// The dataset or blob.
    pub hash: Hash,
    /// Where it went.
    pub dest: String,
    /// Files written (paths shown lossily where they are not UTF-8).
    pub files: Vec<String>,
    /// Bytes written.
    pub bytes: u64,
    /// Files already there with the same content: checked (BLAKE3), not rewritten, so
    /// re-running a finished `get -o DIR` or `export` succeeds.
    pub unchanged: u64,
    /// The signature written beside the files (`model.sig`), if the dataset carries one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

/// Exports a dataset (only the files `include` accepts) or a blob to `dest`.
pub fn export(
    store: &Store,
    hash: &Hash,
    dest: &Path,
    force: bool,
    include: &Include,
    progress: &dyn ExportProgress,
) -> Result<ExportOutcome, ExportError> {
    let report = if store.dataset(hash)?.is_some() {
        export_dataset(store, hash, dest, force, include, progress)?
    } else {
        export_blob(store, hash, dest, force)?
    };
    Ok(ExportOutcome {
        hash: *hash,
        dest: dest.display().to_string(),
        files: report
            .files
            .iter()
            .map(|p| p.display().to_string())
            .collect(),
        bytes: report.bytes,
        unchanged: report.unchanged,
        signature: None,
    })
}

/// Whether `path` is a regular file (not a link) holding exactly the blob `hash` of `size`
/// bytes: read and hashed, so a file of the right size with other bytes is not taken.
fn holds_blob(path: &Path, hash: &Hash, size: u64) -> bool {
    let Ok(meta) = path.symlink_metadata() else {
        return false;
    };
    if !meta.is_file() || meta.len() != size {
        return false;
    }
    let Ok(mut file) = File::open(path) else {
        return false;
    };
    let mut hasher = blake3::Hasher::new();
    if io::copy(&mut file, &mut hasher).is_err() {
        return false;
    }
    Hash::from(hasher.finalize()) == *hash
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ExportError + '_ {
    move |source| ExportError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes the files of dataset `root` under `dir` (created if needed): all of them, or
/// those whose path `include` accepts. Refuses to replace existing files unless
/// `overwrite`; that check covers all files before any is written.
fn export_dataset(
    store: &Store,
    root: &Hash,
    dir: &Path,
    overwrite: bool,
    include: &Include,
    progress: &dyn ExportProgress,
) -> Result<ExportReport, ExportError> {
    let manifest = store.read_manifest(root)?;
    export_files(store, root, &manifest, dir, overwrite, include, progress)
}

/// Writes the files of dataset `root` (its `manifest`, the files `include` accepts) from
/// `source` under `dir`, verified; refuses before writing anything if one is missing or
/// a different file is in the way (unless `overwrite`).
pub fn export_files(
    source: &dyn BlobSource,
    root: &Hash,
    manifest: &Manifest,
    dir: &Path,
    overwrite: bool,
    include: &Include,
    progress: &dyn ExportProgress,
) -> Result<ExportReport, ExportError> {
    include
        .check_matches(manifest.entries().iter().map(|e| e.path.as_str()))
        .map_err(ExportError::NothingIncluded)?;
    let entries: Vec<_> = manifest
        .entries()
        .iter()
        .filter(|e| include.matches(&e.path))
        .collect();
    // Checked from the store's metadata before any path is created, so an unfinished
    // fetch leaves no half-exported folder behind.
    let mut incomplete = Vec::new();
    for entry in &entries {
        if !source.has_complete(&entry.hash)? {
            incomplete.push(entry.path.as_str());
        }
    }
    if let Some(first) = incomplete.first() {
        return Err(ExportError::Incomplete {
            root: *root,
            missing: incomplete.len(),
            wanted: entries.len(),
            first: first.to_string(),
        });
    }
    let targets: Vec<PathBuf> = entries
        .iter()
        .map(|e| e.path.split('/').fold(dir.to_path_buf(), |p, c| p.join(c)))
        .collect();
    // A file already there with the same content is kept as it is; any other is refused
    // (before anything is written) unless `overwrite`.
    let mut same = vec![false; targets.len()];
    if !overwrite {
        for (i, (entry, target)) in entries.iter().zip(&targets).enumerate() {
            if target.symlink_metadata().is_err() {
                continue;
            }
            if !holds_blob(target, &entry.hash, entry.size) {
                return Err(ExportError::Exists {
                    path: target.clone(),
                });
            }
            same[i] = true;
        }
    }
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let canonical_dir = dir.canonicalize().map_err(io_err(dir))?;
    progress.start(entries.len() as u64, entries.iter().map(|e| e.size).sum());
    let mut report = ExportReport {
        files: Vec::with_capacity(targets.len()),
        bytes: 0,
        unchanged: 0,
    };
    for ((entry, target), same) in entries.into_iter().zip(targets).zip(same) {
        if progress.cancelled() {
            return Err(ExportError::Store(StoreError::Cancelled));
        }
        // Checked for a file kept as it is too: one reached through a link out of the
        // target folder is not "already there".
        let parent = target.parent().unwrap_or(dir);
        fs::create_dir_all(parent).map_err(io_err(parent))?;
        let canonical_parent = parent.canonicalize().map_err(io_err(parent))?;
        if !canonical_parent.starts_with(&canonical_dir) {
            return Err(ExportError::Escapes {
                path: parent.to_path_buf(),
            });
        }
        if same {
            progress.file_done(entry.size);
            report.unchanged += 1;
            continue;
        }
        let bytes = write_blob_file(source, &entry.hash, &target, entry.executable)?;
        progress.file_done(bytes);
        report.bytes += bytes;
        report.files.push(target);
    }
    Ok(report)
}

/// Writes blob `hash` to `dest`: into `dest/<hash>` when `dest` is an existing folder,
/// otherwise to the path `dest` itself (like `cp`).
fn export_blob(
    store: &Store,
    hash: &Hash,
    dest: &Path,
    overwrite: bool,
) -> Result<ExportReport, ExportError> {
    // Fail on unknown or partial blobs before touching the file system.
    store.blob_reader(hash)?;
    let target = if dest.is_dir() {
        dest.join(hash.to_string())
    } else {
        dest.to_path_buf()
    };
    if !overwrite && target.symlink_metadata().is_ok() {
        let size = store.blob(hash)?.map_or(0, |m| m.size);
        if holds_blob(&target, hash, size) {
            return Ok(ExportReport {
                files: Vec::new(),
                bytes: 0,
                unchanged: 1,
            });
        }
        return Err(ExportError::Exists { path: target });
    }
    if let Some(parent) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    let bytes = write_blob_file(store, hash, &target, false)?;
    Ok(ExportReport {
        files: vec![target],
        bytes,
        unchanged: 0,
    })
}

/// Writes one verified blob to a temporary file beside `target`, then renames it into
/// place. The rename replaces a symbolic link at `target` rather than following it.
fn write_blob_file(
    source: &dyn BlobSource,
    hash: &Hash,
    target: &Path,
    executable: bool,
) -> Result<u64, ExportError> {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = target.with_file_name(format!(".{name}.commons-partial"));
    // create_new refuses to follow or reuse anything already at the temporary name.
    let _ = fs::remove_file(&temp);
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp)
        .map_err(io_err(&temp))?;
    let result = (|| {
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let bytes = source.write_verified(hash, &mut out)?;
        let file = out
            .into_inner()
            .map_err(|e| io_err(&temp)(e.into_error()))?;
        set_executable(&file, executable).map_err(io_err(&temp))?;
        Ok::<_, ExportError>(bytes)
    })();
    match result {
        Ok(bytes) => {
            fs::rename(&temp, target).map_err(io_err(target))?;
            Ok(bytes)
        }
        Err(e) => {
            let _ = fs::remove_file(&temp);
            Err(match e {
                ExportError::Store(StoreError::Output(source)) => ExportError::Io {
                    path: target.to_path_buf(),
                    source,
                },
                other => other,
            })
        }
    }
}

#[cfg(unix)]
fn set_executable(file: &File, executable: bool) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if executable {
        let mut perms = file.metadata()?.permissions();
        // Executable for whoever may read it.
        let mode = perms.mode();
        perms.set_mode(mode | ((mode & 0o444) >> 2));
        file.set_permissions(perms)?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn set_executable(_file: &File, _executable: bool) -> io::Result<()> {
    Ok(())
}
