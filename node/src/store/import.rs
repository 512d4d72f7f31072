//! Streaming import of files and folders.
//!
//! One pass over each file: the calling thread reads span-sized buffers and hashes them
//! (building the outboard as it goes) while a writer thread puts the rows into RocksDB. The
//! queue between them is bounded, so memory stays flat whatever the file size.
//!
//! Rows are written without the WAL (the bulk bytes would otherwise be written twice) under
//! a fresh [`BlobId`] recorded in `imports`; a large blob's data rows go into a table file
//! of their own instead, ingested once the blob is hashed (`ingest`). When the hashes are
//! known, the data and outboard column families are flushed to disk and then one atomic
//! batch binds each hash to its id, marks it complete and, for a folder, records the
//! dataset and its pin. A crash before that batch leaves only an `imports` record, whose
//! rows the next open deletes.

use std::{
    collections::HashMap,
    fs::File,
    io::{self, Read},
    path::{Path, PathBuf},
    sync::mpsc::{sync_channel, Receiver, SyncSender},
};

use commons_protocol::{
    hub::{self, HubHasher, HubIds, RepoKind, Upstream},
    manifest::validate_path,
    tree::{self},
    GitOid, Hash, Manifest, ManifestEntry, ManifestError,
};
use rocksdb::{WriteBatch, WriteOptions};

use super::{
    ingest::{SpanFile, UningestedFile},
    layout::*,
    pieces::PieceWriter,
    unix_now, Result, Store, StoreError,
};

/// Rows queued between the hashing thread and the writer thread: bounds import memory to
/// about this many spans.
pub const WRITE_QUEUE_ROWS: usize = 8;

/// Receives progress of long store work (import, verify), e.g. to draw a progress bar.
pub trait ImportProgress: Sync {
    /// Called once before any byte is read, with the totals.
    fn start(&self, _files: u64, _bytes: u64) {}
    /// Called as bytes are hashed and queued for writing.
    fn advance(&self, _bytes: u64) {}
    /// Whether whoever asked for the work has gone (a CLI interrupted while a node does
    /// its import): checked before each span is read; the import then stops, keeping
    /// nothing of it.
    fn cancelled(&self) -> bool {
        false
    }
}

/// Progress that goes nowhere.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl ImportProgress for NoProgress {}

/// Result of adding one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportedBlob {
    /// The blob's address (its BLAKE3 hash).
    pub hash: Hash,
    /// Size in bytes.
    pub size: u64,
    /// True when the store already held this content and kept its existing copy.
    pub already_stored: bool,
}

/// Result of adding one folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedDataset {
    /// The dataset's address: the hash of its manifest.
    pub root: Hash,
    /// The manifest.
    pub manifest: Manifest,
    /// How many of its blobs were new to the store.
    pub new_blobs: u64,
}

/// Whether a folder's files get Hugging Face Hub ids (SHA-256, git blob id) in its manifest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum HubIdChoice {
    /// For a Hugging Face cache snapshot (`…/models--org--name/snapshots/<commit>`) yes,
    /// with the repository and commit as its upstream; otherwise no.
    #[default]
    Auto,
    /// Always (LFS decided by the Hub's default rules, or by the snapshot's blob names).
    Yes,
    /// Never: a version 1 manifest, the same root as before Hub ids existed.
    No,
}

/// A blob whose rows are written under `id` but not yet bound to its hash.
#[derive(Debug)]
pub(super) struct Pending {
    pub(super) id: BlobId,
    pub(super) hash: Hash,
    size: u64,
}

/// Why hashing a file stopped.
enum HashFailure {
    /// The file shrank or grew while it was read.
    Changed,
    /// The progress receiver cancelled the import.
    Cancelled,
    /// Reading failed, or the writer thread stopped.
    Failed(io::Error),
}
use HashFailure::{Cancelled, Changed, Failed};

/// A row on its way to the writer thread.
enum Row {
    Data(u64, Vec<u8>),
    Outboard(u64, Vec<u8>),
}

/// One file found in a folder.
struct FileToAdd {
    rel: String,
    abs: PathBuf,
    size: u64,
    executable: bool,
    /// Whether a Hugging Face snapshot stores it in LFS (its blob is named by a SHA-256).
    lfs: Option<bool>,
}

impl Store {
    /// Adds one file as a blob and pins it.
    pub fn add_file(&self, path: &Path, progress: &dyn ImportProgress) -> Result<ImportedBlob> {
        let file = open(path)?;
        let size = file_len(&file, path)?;
        progress.start(1, size);
        let pending = self.write_rows(file, size, path, progress)?;
        let hash = pending.hash;
        let bound = self.commit(vec![pending], |store, batch| {
            store.put_pin(batch, &hash, PinKind::Blob)
        })?;
        Ok(bound[0])
    }

    /// Adds every file under `root` as a dataset and pins it. Files are visited in a
    /// stable order; the manifest is canonical, so the same content gives the same root.
    pub fn add_folder(
        &self,
        root: &Path,
        progress: &dyn ImportProgress,
    ) -> Result<ImportedDataset> {
        self.add_folder_with(root, HubIdChoice::Auto, progress)
    }

    /// [`Store::add_folder`], saying whether to compute Hub ids (in the same pass).
    pub fn add_folder_with(
        &self,
        root: &Path,
        hub_ids: HubIdChoice,
        progress: &dyn ImportProgress,
    ) -> Result<ImportedDataset> {
        self.add_folder_skipping(root, hub_ids, &[], progress)
    }

    /// [`Store::add_folder_with`], leaving out the files (or folders: everything under
    /// them) at the top of `root` named in `skip` (a `model.sig` beside the files it signs
    /// is the signature, not data, and what it ignores is not part of what it signs).
    pub fn add_folder_skipping(
        &self,
        root: &Path,
        hub_ids: HubIdChoice,
        skip: &[&str],
        progress: &dyn ImportProgress,
    ) -> Result<ImportedDataset> {
        let mut files = collect_files(root)?;
        files.retain(|f| {
            !skip
                .iter()
                .any(|s| f.rel == *s || f.rel.strip_prefix(s).is_some_and(|r| r.starts_with('/')))
        });
        let snapshot = root.canonicalize().ok().and_then(|r| snapshot_upstream(&r));
        let (with_ids, upstream) = match hub_ids {
            HubIdChoice::No => (false, None),
            HubIdChoice::Yes => (true, snapshot),
            HubIdChoice::Auto => (snapshot.is_some(), snapshot),
        };
        progress.start(files.len() as u64, files.iter().map(|f| f.size).sum());
        let mut pending = Vec::with_capacity(files.len() + 1);
        let mut entries = Vec::with_capacity(files.len());
        // The files' rows are written one by one and bound together at the end: when one
        // fails, the rows of those before it go too, now rather than at the next open.
        let written = (|| {
            for f in files {
                let file = open(&f.abs)?;
                if file_len(&file, &f.abs)? != f.size {
                    return Err(StoreError::FileChanged { path: f.abs });
                }
                let (p, hub) = if with_ids {
                    let (p, hasher) = with_hub_hasher(file, f.size, |tee| {
                        self.write_rows(tee, f.size, &f.abs, progress)
                    });
                    let lfs = f
                        .lfs
                        .unwrap_or_else(|| hub::is_lfs_by_default(&f.rel, f.size));
                    (p?, hasher.finish(lfs))
                } else {
                    (self.write_rows(file, f.size, &f.abs, progress)?, None)
                };
                entries.push(ManifestEntry {
                    path: f.rel,
                    size: f.size,
                    hash: p.hash,
                    executable: f.executable,
                    hub,
                });
                pending.push(p);
            }
            let manifest = Manifest::with_upstream(std::mem::take(&mut entries), upstream)?;
            let bytes = manifest.to_bytes();
            let manifest_pending = self.write_rows(
                &bytes[..],
                bytes.len() as u64,
                Path::new("<manifest>"),
                &super::NoProgress,
            )?;
            let root_hash = manifest_pending.hash;
            pending.push(manifest_pending);
            Ok((manifest, root_hash))
        })();
        let (manifest, root_hash) = match written {
            Ok(written) => written,
            Err(e) => {
                self.discard_imports_or_log(pending.iter().map(|p| p.id).collect());
                return Err(e);
            }
        };
        let bound = self.commit(pending, |store, batch| {
            store.put_dataset(batch, &root_hash, &manifest)
        })?;
        if let Some(up) = manifest.upstream() {
            // A Hugging Face snapshot: peers importing that commit may ask for it.
            self.remember_upstream(&up.dht_key(), &root_hash)?;
        }
        let new_blobs = bound[..bound.len() - 1]
            .iter()
            .filter(|b| !b.already_stored)
            .count() as u64;
        Ok(ImportedDataset {
            root: root_hash,
            manifest,
            new_blobs,
        })
    }

    /// Adds `size` bytes read from `reader` (a file of an origin, named `path` there) as one
    /// complete, unpinned blob, if its content has the Hub id `listed` gives: SHA-256 and
    /// git blob id are computed in the same pass as BLAKE3. When it does not, nothing of it
    /// is kept ([`StoreError::HubIdMismatch`]). The blob is remembered under its Hub id
    /// (`private`: from a gated or private repository, never named to peers) and held from
    /// garbage collection until the returned guard is dropped.
    pub fn add_hub_file(
        &self,
        reader: impl Read,
        size: u64,
        path: &str,
        listed: &hub::ListedIds,
        private: bool,
        progress: &dyn ImportProgress,
    ) -> Result<(ImportedBlob, HubIds, super::Hold)> {
        let (pending, hasher) = with_hub_hasher(reader, size, |tee| {
            self.write_rows(tee, size, Path::new(path), progress)
        });
        let pending = pending?;
        let computed = hasher.finish(false);
        let Some(ids) = computed.and_then(|c| listed.confirm(&c)) else {
            self.discard_imports_or_log(vec![pending.id]);
            let found = computed.map_or_else(
                || "a different size".to_string(),
                |c| match listed.lfs_sha256 {
                    Some(_) => c.sha256.to_string(),
                    None => c.git_oid.to_string(),
                },
            );
            return Err(StoreError::HubIdMismatch {
                path: path.to_string(),
                expected: listed.etag(),
                found,
            });
        };
        let hash = pending.hash;
        // Held before it is bound: no collection can come between.
        let hold = self.hold([hash]);
        let mut recorded = Ok(());
        let bound = self.commit(vec![pending], |store, batch| {
            recorded = store.put_hub_file(batch, &ids, &hash, private);
        })?;
        recorded?;
        Ok((bound[0], ids, hold))
    }

    /// Stores `manifest`'s encoding as a complete (unpinned) blob; returns the root.
    pub fn add_manifest(&self, manifest: &Manifest) -> Result<Hash> {
        let bytes = manifest.to_bytes();
        let pending = self.write_rows(
            &bytes[..],
            bytes.len() as u64,
            Path::new("<manifest>"),
            &super::NoProgress,
        )?;
        Ok(self.commit(vec![pending], |_, _| {})?[0].hash)
    }

    /// Streams `size` bytes from `reader` into rows under a fresh id, hashing as it goes.
    pub(super) fn write_rows(
        &self,
        reader: impl Read,
        size: u64,
        path: &Path,
        progress: &dyn ImportProgress,
    ) -> Result<Pending> {
        let mut batch = WriteBatch::default();
        let id = self.allocate_id(&mut batch);
        batch.put_cf(
            self.cf(CF_IMPORTS),
            id.0.to_be_bytes(),
            unix_now().to_be_bytes(),
        );
        self.write(batch)?;

        let io_err = |source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        };
        let (tx, rx) = sync_channel::<Row>(WRITE_QUEUE_ROWS);
        let (hashed, written) = std::thread::scope(|s| {
            // Span buffers go back to the reader once written: no fresh allocation (and
            // page faults) per 256 KiB.
            let (spare_tx, spare_rx) = sync_channel::<Vec<u8>>(WRITE_QUEUE_ROWS + 2);
            let writer = s.spawn(move || -> Result<Option<UningestedFile>> {
                let unlogged = || {
                    let mut opts = WriteOptions::default();
                    opts.disable_wal(true);
                    opts
                };
                let mut span_file = (size >= self.ingest_from_bytes)
                    .then(|| SpanFile::create(self, id))
                    .transpose()?;
                for row in rx {
                    let (cf, i, bytes) = match row {
                        Row::Data(i, bytes) => (CF_DATA, i, bytes),
                        Row::Outboard(i, bytes) => (CF_OUTBOARDS, i, bytes),
                    };
                    match span_file.as_mut() {
                        Some(file) if cf == CF_DATA => file.put(self, id, i, &bytes)?,
                        _ => {
                            let cf_handle = self.cf(cf);
                            self.write_with(unlogged(), bytes.len() + 64, |b| {
                                b.put_cf(cf_handle, span_key(id, i), &bytes)
                            })?;
                        }
                    }
                    if cf == CF_DATA {
                        let _ = spare_tx.try_send(bytes);
                    }
                }
                span_file.map(|file| file.finish(self)).transpose()
            });
            let mut tee = SpanTee {
                inner: reader,
                span: Vec::with_capacity(self.span_bytes as usize),
                span_bytes: self.span_bytes as usize,
                pos_in_span: 0,
                index: 0,
                remaining: size,
                ended_early: false,
                cancelled: false,
                tx: tx.clone(),
                spare: spare_rx,
                progress,
            };
            let mut outboard = PieceWriter::new(move |index, piece| {
                tx.send(Row::Outboard(index, piece))
                    .map_err(|_| io::Error::other("the store writer stopped"))
            });
            let hashed = match tree::compute_outboard(&mut tee, size, &mut outboard) {
                Ok(_) if tee.grew() => Err(Changed),
                Ok(hash) => tee
                    .finish()
                    .and_then(|()| outboard.finish())
                    .map(|()| hash)
                    .map_err(Failed),
                Err(_) if tee.ended_early => Err(Changed),
                Err(_) if tee.cancelled => Err(Cancelled),
                Err(e) => Err(Failed(e)),
            };
            drop(tee);
            drop(outboard);
            let written = writer
                .join()
                .unwrap_or_else(|_| Err(StoreError::Damaged("writer thread panicked".into())));
            (hashed, written)
        });
        // A writer error (full disk…) is the root cause of any send failure: report it first.
        let outcome = written.and_then(|span_file| match hashed {
            // Only an import that hashed to the end hands its file to RocksDB.
            Ok(hash) => span_file
                .map_or(Ok(()), |file| self.ingest(file))
                .map(|()| hash),
            Err(Changed) => Err(StoreError::FileChanged {
                path: path.to_path_buf(),
            }),
            Err(Cancelled) => Err(StoreError::Cancelled),
            Err(Failed(e)) => Err(io_err(e)),
        });
        match outcome {
            Ok(hash) => Ok(Pending { id, hash, size }),
            Err(e) => {
                // Its rows go now, not at the next open (a node may run for months).
                self.discard_imports_or_log(vec![id]);
                Err(e)
            }
        }
    }

    /// Makes pending blobs durable and complete in one batch (plus `extra` records).
    /// Content already complete in the store is kept once: the new rows are dropped.
    fn commit(
        &self,
        pending: Vec<Pending>,
        extra: impl FnOnce(&Store, &mut WriteBatch),
    ) -> Result<Vec<ImportedBlob>> {
        // Rows were written without the WAL: put them on disk before anything refers to them.
        for cf in [CF_DATA, CF_OUTBOARDS] {
            self.db
                .flush_cf(self.cf(cf))
                .map_err(|e| self.db_error(e))?;
        }

        let guard = self.bind_lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut batch = WriteBatch::default();
        let mut bound_now: HashMap<Hash, BlobId> = HashMap::new();
        let mut results = Vec::with_capacity(pending.len());
        // Rows written for nothing (content already stored) or superseded (a partial copy).
        let mut dropped = Vec::new();
        for p in pending {
            batch.delete_cf(self.cf(CF_IMPORTS), p.id.0.to_be_bytes());
            let existing = self.blob(&p.hash)?;
            let already_stored = bound_now.contains_key(&p.hash)
                || matches!(existing, Some(m) if m.state == BlobState::Complete);
            if already_stored {
                self.delete_rows(&mut batch, p.id);
                dropped.push(p.id);
            } else {
                if let Some(old) = existing {
                    // A partial copy is superseded by this complete one.
                    self.delete_rows(&mut batch, old.id);
                    dropped.push(old.id);
                }
                let meta = BlobMeta {
                    id: p.id,
                    size: p.size,
                    state: BlobState::Complete,
                };
                batch.put_cf(self.cf(CF_BLOBS), p.hash.as_bytes(), encode(&meta));
                self.put_used(&mut batch, &p.hash);
                bound_now.insert(p.hash, p.id);
            }
            results.push(ImportedBlob {
                hash: p.hash,
                size: p.size,
                already_stored,
            });
        }
        extra(self, &mut batch);
        self.write(batch)?;
        drop(guard);
        if dropped.is_empty() {
            self.merge_small_table_files_now_and_then();
        } else {
            self.reclaim(&dropped)?;
        }
        Ok(results)
    }

    /// Records that the store holds dataset `root` (whose manifest is `manifest`), and pins
    /// it if `pin` (unpinned, garbage collection may take it, least recently used first:
    /// what an HTTP client's request fetched).
    pub fn record_dataset(&self, root: &Hash, manifest: &Manifest, pin: bool) -> Result<()> {
        let mut batch = WriteBatch::default();
        if pin {
            self.put_dataset(&mut batch, root, manifest);
        } else {
            self.put_dataset_record(&mut batch, root, manifest);
        }
        self.write(batch)?;
        Ok(())
    }

    /// Adds a dataset record and its pin to `batch`.
    fn put_dataset(&self, batch: &mut WriteBatch, root: &Hash, manifest: &Manifest) {
        self.put_dataset_record(batch, root, manifest);
        self.put_pin(batch, root, PinKind::Dataset);
    }

    /// Adds a dataset record (no pin: garbage collection may take it) to `batch`.
    fn put_dataset_record(&self, batch: &mut WriteBatch, root: &Hash, manifest: &Manifest) {
        let dataset = DatasetMeta {
            files: manifest.entries().len() as u64,
            total_size: manifest.total_size(),
        };
        batch.put_cf(self.cf(CF_DATASETS), root.as_bytes(), encode(&dataset));
    }

    /// Adds "used now" for `hash` to `batch`.
    pub(super) fn put_used(&self, batch: &mut WriteBatch, hash: &Hash) {
        batch.put_cf(self.cf(CF_USED), hash.as_bytes(), unix_now().to_be_bytes());
    }

    /// Adds a pin record for `hash` to `batch`.
    pub(super) fn put_pin(&self, batch: &mut WriteBatch, hash: &Hash, kind: PinKind) {
        let pin = PinMeta {
            kind,
            pinned_at: unix_now(),
        };
        batch.put_cf(self.cf(CF_PINS), hash.as_bytes(), encode(&pin));
    }
}

/// Bytes handed to the Hub-id hashing thread at once.
const HUB_HASH_CHUNK: usize = 1 << 20;

/// Runs `f` with a reader over `reader` whose bytes are also hashed for Hub ids
/// (SHA-256, git SHA-1) on a thread of their own, beside the BLAKE3 hashing `f` does (the
/// two would otherwise take turns on one core). Returns `f`'s result and the hasher.
fn with_hub_hasher<R: Read, T>(
    reader: R,
    size: u64,
    f: impl FnOnce(HubTee<R>) -> T,
) -> (T, HubHasher) {
    std::thread::scope(|s| {
        let (tx, rx) = sync_channel::<Vec<u8>>(4);
        let worker = s.spawn(move || {
            let mut hasher = HubHasher::new(size);
            for chunk in rx {
                hasher.update(&chunk);
            }
            hasher
        });
        let out = f(HubTee {
            inner: reader,
            pending: Vec::with_capacity(HUB_HASH_CHUNK),
            tx: Some(tx),
        });
        // A hashing thread that died gives a hasher that saw nothing: its ids never match.
        let hasher = worker.join().unwrap_or_else(|_| HubHasher::new(size));
        (out, hasher)
    })
}

/// A `Read` that passes every byte on to the Hub-id hashing thread too, in
/// [`HUB_HASH_CHUNK`] pieces (the rest when dropped).
pub(super) struct HubTee<R> {
    inner: R,
    pending: Vec<u8>,
    tx: Option<SyncSender<Vec<u8>>>,
}

impl<R> HubTee<R> {
    fn send_pending(&mut self) {
        let chunk = std::mem::replace(&mut self.pending, Vec::with_capacity(HUB_HASH_CHUNK));
        let gone = self.tx.as_ref().is_some_and(|tx| tx.send(chunk).is_err());
        if gone {
            self.tx = None;
        }
    }
}

impl<R: Read> Read for HubTee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pending.extend_from_slice(&buf[..n]);
        if self.pending.len() >= HUB_HASH_CHUNK {
            self.send_pending();
        }
        Ok(n)
    }
}

impl<R> Drop for HubTee<R> {
    fn drop(&mut self) {
        if !self.pending.is_empty() {
            self.send_pending();
        }
    }
}

/// The Hub commit a Hugging Face cache snapshot folder holds, read from its path:
/// `…/{models|datasets}--{org}--{name}/snapshots/{40 hex commit}`.
fn snapshot_upstream(canonical_root: &Path) -> Option<Upstream> {
    let commit = GitOid::parse(canonical_root.file_name()?.to_str()?).ok()?;
    let snapshots = canonical_root.parent()?;
    if snapshots.file_name()? != "snapshots" {
        return None;
    }
    let repo_dir = snapshots.parent()?.file_name()?.to_str()?;
    let mut parts = repo_dir.split("--");
    let kind = match parts.next()? {
        "models" => RepoKind::Model,
        "datasets" => RepoKind::Dataset,
        _ => return None,
    };
    let upstream = Upstream {
        kind,
        repo: parts.collect::<Vec<_>>().join("/"),
        commit,
        last_modified: None,
    };
    upstream.validate().ok().map(|()| upstream)
}

/// A `Read` that serves the hasher from span-sized buffers and, as each span fills, hands
/// the buffer to the writer thread (moved, not copied).
struct SpanTee<'a, R> {
    inner: R,
    span: Vec<u8>,
    span_bytes: usize,
    /// How much of `span` the hasher has consumed.
    pos_in_span: usize,
    index: u64,
    /// Bytes of the file not yet read into a span.
    remaining: u64,
    /// The file ended before its announced size.
    ended_early: bool,
    /// The progress receiver cancelled the import.
    cancelled: bool,
    tx: SyncSender<Row>,
    /// Buffers the writer has finished with.
    spare: Receiver<Vec<u8>>,
    progress: &'a dyn ImportProgress,
}

impl<R: Read> SpanTee<'_, R> {
    /// Reads the next span from the file, sending the consumed one first.
    fn refill(&mut self) -> io::Result<()> {
        if self.progress.cancelled() {
            self.cancelled = true;
            // Not `ErrorKind::Interrupted`: `read_exact` retries that.
            return Err(io::Error::other("import cancelled"));
        }
        if !self.span.is_empty() {
            self.send_span()?;
        }
        let want = (self.span_bytes as u64).min(self.remaining) as usize;
        self.span.clear();
        // read_to_end fills spare capacity without zeroing it first.
        (&mut self.inner)
            .take(want as u64)
            .read_to_end(&mut self.span)?;
        if self.span.len() < want {
            self.ended_early = true;
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.remaining -= want as u64;
        self.pos_in_span = 0;
        self.progress.advance(want as u64);
        Ok(())
    }

    fn send_span(&mut self) -> io::Result<()> {
        let next = self
            .spare
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(self.span_bytes));
        let full = std::mem::replace(&mut self.span, next);
        self.tx
            .send(Row::Data(self.index, full))
            .map_err(|_| io::Error::other("the store writer stopped"))?;
        self.index += 1;
        Ok(())
    }

    /// Sends the last span after hashing ends.
    fn finish(&mut self) -> io::Result<()> {
        if !self.span.is_empty() {
            self.send_span()?;
        }
        Ok(())
    }

    /// Whether the file has more bytes than it had when the import started.
    fn grew(&mut self) -> bool {
        let mut probe = [0u8; 1];
        self.remaining == 0 && matches!(self.inner.read(&mut probe), Ok(n) if n > 0)
    }
}

impl<R: Read> Read for SpanTee<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos_in_span == self.span.len() {
            if self.remaining == 0 {
                return Ok(0);
            }
            self.refill()?;
        }
        let available = &self.span[self.pos_in_span..];
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.pos_in_span += n;
        Ok(n)
    }
}

fn open(path: &Path) -> Result<File> {
    File::open(path).map_err(|source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn file_len(file: &File, path: &Path) -> Result<u64> {
    file.metadata()
        .map(|m| m.len())
        .map_err(|source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        })
}

fn unsupported(path: &Path, reason: &str) -> StoreError {
    StoreError::UnsupportedEntry {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Where the symbolic links of a folder being added may lead: inside the folder itself,
/// or, for a Hugging Face snapshot (`…/models--org--name/snapshots/<commit>`, whose files
/// are links to `../../blobs/<etag>`), inside its repository folder's `blobs`.
fn link_roots(canonical_root: &Path) -> Vec<PathBuf> {
    let mut roots = vec![canonical_root.to_path_buf()];
    let parent = canonical_root.parent();
    let repo = parent.and_then(Path::parent);
    if let (Some(parent), Some(repo)) = (parent, repo) {
        let blobs = repo.join("blobs");
        if parent.file_name().is_some_and(|n| n == "snapshots") && blobs.is_dir() {
            roots.push(blobs);
        }
    }
    roots
}

/// Lists the files under `root` in a stable order, with their manifest paths. Symbolic
/// links to files inside `root` (or a Hugging Face snapshot's `blobs`, see [`link_roots`])
/// are followed; links leading elsewhere, or to folders, are refused, as are names that
/// are not UTF-8 and special files.
fn collect_files(root: &Path) -> Result<Vec<FileToAdd>> {
    let io_err = |path: &Path, source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    };
    let canonical_root = root.canonicalize().map_err(|e| io_err(root, e))?;
    let allowed = link_roots(&canonical_root);
    let mut files = Vec::new();
    for entry in walkdir::WalkDir::new(root)
        .follow_links(false)
        .sort_by_file_name()
        .min_depth(1)
    {
        let entry = entry.map_err(|e| {
            let path = e.path().unwrap_or(root).to_path_buf();
            let source = e
                .into_io_error()
                .unwrap_or_else(|| io::Error::other("file system loop"));
            io_err(&path, source)
        })?;
        let path = entry.path();
        let ft = entry.file_type();
        if ft.is_dir() {
            continue;
        }
        let mut lfs = None;
        let meta = if ft.is_symlink() {
            let target = path.canonicalize().map_err(|e| io_err(path, e))?;
            if allowed[1..].iter().any(|blobs| target.starts_with(blobs)) {
                // A snapshot's blob is named by its ETag: SHA-256 (64 hex) for LFS files.
                lfs = target.file_name().map(|n| n.len() == 64);
            }
            if !allowed.iter().any(|r| target.starts_with(r)) {
                return Err(unsupported(
                    path,
                    "symbolic link points outside the folder being added",
                ));
            }
            let meta = std::fs::metadata(&target).map_err(|e| io_err(path, e))?;
            if !meta.is_file() {
                return Err(unsupported(
                    path,
                    "symbolic link to a folder is not followed",
                ));
            }
            meta
        } else if ft.is_file() {
            entry.metadata().map_err(|e| {
                io_err(
                    path,
                    e.into_io_error()
                        .unwrap_or_else(|| io::Error::other("metadata")),
                )
            })?
        } else {
            return Err(unsupported(path, "not a regular file"));
        };
        let rel = manifest_path(root, path)?;
        files.push(FileToAdd {
            rel,
            abs: path.to_path_buf(),
            size: meta.len(),
            executable: is_executable(&meta),
            lfs,
        });
    }
    Ok(files)
}

/// The `/`-separated manifest path of `path` under `root`, checked against the manifest's
/// path rules.
fn manifest_path(root: &Path, path: &Path) -> Result<String> {
    let rel = path
        .strip_prefix(root)
        .map_err(|_| unsupported(path, "not inside the folder being added"))?;
    let mut parts = Vec::new();
    for c in rel.components() {
        let s = c
            .as_os_str()
            .to_str()
            .ok_or_else(|| unsupported(path, "name is not valid UTF-8"))?;
        parts.push(s);
    }
    let rel = parts.join("/");
    validate_path(&rel).map_err(|problem| ManifestError::InvalidPath {
        path: rel.clone(),
        problem,
    })?;
    Ok(rel)
}

#[cfg(unix)]
fn is_executable(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o111 != 0
}

#[cfg(not(unix))]
fn is_executable(_meta: &std::fs::Metadata) -> bool {
    false
}
