//! The RocksDB store: content-addressed blobs (chunk data + outboards), datasets and pins.
//!
//! Layout in [`layout`] and `docs/storage.md`. Two rules keep it consistent whatever
//! moment a crash hits:
//! - an import writes its rows under a fresh [`BlobId`] recorded in `imports`; only after
//!   those rows are flushed to disk does one atomic batch bind the hash to the id and mark
//!   it complete. Leftover `imports` records are cleaned up at the next open;
//! - data received in pieces (partial blobs) is written together with its `verified` mark
//!   in one `WriteBatch`, so a mark never exists without its data.

mod check;
mod gc;
mod handle;
mod hub;
mod import;
mod ingest;
pub mod layout;
mod names;
mod page_cache;
mod partial;
mod pieces;
mod provenance;
mod read;
mod write;

use std::{
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
};

use commons_protocol::{Hash, ManifestError};
use rocksdb::{
    BlockBasedIndexType, BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor,
    IteratorMode, Options, WriteBatch, DB,
};

pub use check::{RowCheck, MAX_ROW_PROBLEMS};
pub use gc::{GcReport, Hold, RemoveReport};
pub use handle::AsyncStore;
pub use import::{HubIdChoice, ImportProgress, ImportedBlob, ImportedDataset, NoProgress};
pub use layout::{BlobId, BlobMeta, BlobState, DatasetMeta, PinKind, PinMeta};
pub use names::NameEntry;
pub use partial::{PartialBlob, UNLOGGED_RATE, UNLOGGED_SPANS_FROM};
pub use provenance::{NameUpdate, SeenName, MAX_KEPT_NAMES};
pub use read::{BlobCorruption, BlobReader};
pub use write::{free_bytes, DISK_FULL_GRACE, LOW_FREE_BYTES, STALL_LIMIT};

use layout::*;

/// Default bytes per data row (16 chunk groups). Chosen by `simulations`' import benchmark;
/// see `docs/storage.md` for the measurements.
pub const DEFAULT_SPAN_BYTES: u64 = 256 * 1024;

/// Settings fixed when a store is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// Bytes per data row; a multiple of 16 KiB. Only used when creating a new store: an
    /// existing store keeps the value it was created with.
    pub span_bytes: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            span_bytes: DEFAULT_SPAN_BYTES,
        }
    }
}

/// Everything that can go wrong in the store, in the user's terms.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Another process has the store open (RocksDB allows one writer).
    #[error("the store at {path} is in use by another commons process")]
    InUse {
        /// The store folder.
        path: PathBuf,
    },
    /// RocksDB reported an error (full disk, I/O error, damaged files…).
    #[error("store database error: {0}")]
    Db(#[from] rocksdb::Error),
    /// A file or folder could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder concerned.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The store was written by an incompatible version of Commons.
    #[error("the store uses layout version {found}; this build reads version {LAYOUT_VERSION}")]
    UnsupportedLayout {
        /// Version found on disk.
        found: u32,
    },
    /// A stored value could not be decoded.
    #[error("store metadata is damaged: {0}")]
    Damaged(String),
    /// Store work on the blocking pool ended without a result (it panicked, or the
    /// runtime is shutting down).
    #[error("store work stopped unexpectedly: {0}")]
    Background(String),
    /// Nothing with this hash is in the store.
    #[error("{hash} is not in the store")]
    NotFound {
        /// What was asked for.
        hash: Hash,
    },
    /// A hash prefix matches several entries.
    #[error("'{prefix}' matches more than one hash; give more characters")]
    AmbiguousPrefix {
        /// The prefix given.
        prefix: String,
    },
    /// The blob is only partly stored.
    #[error("blob {hash} is not complete in the store")]
    NotComplete {
        /// The blob.
        hash: Hash,
    },
    /// Stored bytes do not match the blob's hash tree.
    #[error("blob {hash} is corrupt at byte offset {offset}")]
    Corrupt {
        /// The blob.
        hash: Hash,
        /// First byte of the bad chunk group (or tree node).
        offset: u64,
    },
    /// A file changed size while it was being imported.
    #[error("{path} changed while it was being added; add it again once it is stable")]
    FileChanged {
        /// The file.
        path: PathBuf,
    },
    /// Whoever asked for an import went away before it ended; nothing of it was kept.
    #[error("the import was cancelled; nothing of it was kept")]
    Cancelled,
    /// A name in a folder cannot go into a manifest.
    #[error("{path}: {reason}")]
    UnsupportedEntry {
        /// The file or link.
        path: PathBuf,
        /// Why it is refused.
        reason: String,
    },
    /// Content read for a file did not hash to the Hub id its listing gave.
    #[error("{path}: content does not match its Hub id {expected} (it hashes to {found})")]
    HubIdMismatch {
        /// The file (as named by its source).
        path: String,
        /// The id the listing gave.
        expected: String,
        /// The id the content has.
        found: String,
    },
    /// A peer claims a different size for a blob whose size is already proven.
    #[error("blob {hash} has {known} bytes, but a provider claims {claimed}")]
    SizeConflict {
        /// The blob.
        hash: Hash,
        /// The proven size.
        known: u64,
        /// The claim.
        claimed: u64,
    },
    /// Writing the verified output (an export target, a pipe) failed.
    #[error("could not write the output: {0}")]
    Output(std::io::Error),
    /// The options given to [`Store::open`] are not usable.
    #[error("invalid store options: {0}")]
    InvalidOptions(&'static str),
    /// The manifest rules refused what was given.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// A name or revision cannot be bound.
    #[error("{0}")]
    BadName(String),
    /// A named limit of the store would be passed.
    #[error("{0}")]
    Limit(String),
    /// The disk holding the store is full: the write was refused, nothing stored was lost.
    #[error(
        "the disk holding {path} is full ({} MiB left): free some space (`commons gc` \
         removes unpinned data) and run again; what was stored is kept",
        free >> 20
    )]
    DiskFull {
        /// The store folder.
        path: PathBuf,
        /// Bytes left for the store's user.
        free: u64,
    },
    /// RocksDB refused writes for [`STALL_LIMIT`] on a disk with free space.
    #[error(
        "the store at {path} accepted no write for {secs} s: is its disk failing or overloaded?"
    )]
    Stalled {
        /// The store folder.
        path: PathBuf,
        /// How long the write waited.
        secs: u64,
    },
}

/// Shorthand for results in this module.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// An open store. Cheap to share by reference across threads.
pub struct Store {
    db: DB,
    path: PathBuf,
    span_bytes: u64,
    next_id: AtomicU64,
    /// Serialises "is this hash already complete?" with "bind it", so two imports of the
    /// same content cannot both bind it.
    bind_lock: Mutex<()>,
    /// Hashes fetches in progress are writing: garbage collection keeps them.
    held: gc::HeldHashes,
    /// Held while blob files are rewritten after removals (one rewrite at a time).
    blob_rewrite: Mutex<()>,
    /// How fast fetched spans arrive: fast ones skip the WAL (see [`UNLOGGED_RATE`]).
    span_rate: Mutex<partial::SpanRate>,
    /// Blob files flushes finish while fetched spans skip the WAL, dropped from the page
    /// cache.
    flushed_blob_files: page_cache::FlushedBlobFiles,
    /// The data column family's options, for the table files large imports write
    /// (`ingest`): the files must be laid out as the family's own.
    span_file_options: Options,
    /// Imports of blobs this large or larger go through a table file
    /// ([`ingest::INGEST_FROM_BYTES`]; lower in tests, to keep their data small).
    ingest_from_bytes: u64,
    /// Imports and completed fetches since small table files were last merged, and after
    /// how many they are merged again ([`gc::SMALL_TABLE_FILES_MERGED_EVERY`]; 1 in tests).
    stores_since_merge: AtomicU64,
    small_files_merged_every: u64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("span_bytes", &self.span_bytes)
            .finish_non_exhaustive()
    }
}

fn db_options() -> Options {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
    // Bound the WAL: data rows skip it (see import.rs), metadata is small.
    opts.set_max_total_wal_size(64 << 20);
    opts.increase_parallelism(2);
    // Start writing flushed files back while they are being written, so the sync at the
    // end of each flush has little left to do.
    opts.set_bytes_per_sync(1 << 20);
    // Flushes write through the page cache, not with direct I/O: on a disk where RocksDB's
    // direct 1 MiB writes took 4.7 ms each, direct I/O made a 1 GiB `add` take 3-4x and a
    // `get` 2.3-3x as long, and cost `get` more CPU on both sides, to save a page-cache
    // copy (docs/benchmarks.md, issue 22, part 5). Each flushed file is still synced
    // before RocksDB records it, so nothing is less durable.
    opts.set_use_direct_io_for_flush_and_compaction(false);
    // Fetched spans of large blobs skip the WAL (`partial::UNLOGGED_SPANS_FROM`): flushing
    // every column family together is what keeps such a span and its mark (in another
    // family) on disk together, or neither.
    opts.set_atomic_flush(true);
    // RocksDB's own log: one file per open (every CLI command opens the store), 1,000 kept
    // by default: ~200 MB after a thousand commands. Four old ones are plenty to debug.
    opts.set_keep_log_file_num(4);
    opts.set_max_log_file_size(4 << 20);
    // A served, exported or verified blob is read span after span from its blob file. By
    // default RocksDB advises random access on every file it opens, which turns the
    // kernel's readahead off: each span was then a synchronous read of the disk. With
    // readahead the disk works ahead of the sender (seeder CPU per GiB 11 % lower at 1 GiB,
    // 3–6 % at 4 GiB; docs/benchmarks.md, issue 22).
    opts.set_advise_random_on_open(false);
    opts
}

/// Values of `data` this large or larger go to blob files when RocksDB writes a table
/// (flushes, compactions); smaller ones, and every value of an ingested table file
/// (`ingest`), stay inline.
pub(super) const MIN_BLOB_BYTES: usize = 4096;

fn data_cf_options() -> Options {
    let mut opts = Options::default();
    // Bulk bytes go to blob files once and stay there; SSTs keep only small references.
    opts.set_enable_blob_files(true);
    opts.set_min_blob_size(MIN_BLOB_BYTES as u64);
    opts.set_blob_file_size(256 << 20);
    // Model weights and parquet barely compress; don't spend CPU trying.
    opts.set_blob_compression_type(rocksdb::DBCompressionType::None);
    opts.set_compression_type(rocksdb::DBCompressionType::None);
    // No blob garbage collection while data comes in: with it, compactions during a fetch
    // into a young store rewrote the blobs they met (a 1 GiB fetch took 1.4x as long, see
    // docs/benchmarks.md). Garbage exists only where rows were dropped, and every place
    // that drops rows calls `gc::reclaim`, which rewrites blob files once enough of them
    // is garbage.
    opts.set_enable_blob_gc(false);
    // Three 16 MiB memtables bound the memory an import uses (the 4 GiB import stays under
    // 150 MiB RSS), let two flushes run at once, and stall writers (back pressure) when
    // flushing falls behind.
    opts.set_write_buffer_size(16 << 20);
    opts.set_max_write_buffer_number(3);
    opts.set_block_based_table_factory(&data_table_options());
    opts
}

/// Bytes of the data column family's block cache.
pub const DATA_BLOCK_CACHE_BYTES: usize = 16 << 20;

/// Table files of large imports (`ingest`) hold spans inline, one 256 KiB block each, so
/// their index has an entry per span: 120 KB per GiB, which RocksDB would otherwise keep
/// in memory for every open file (a 10 TB mirror: 1.2 GB). Partitioned, with the
/// partitions in a bounded block cache, only the small top level of each file stays in
/// memory.
fn data_table_options() -> BlockBasedOptions {
    let mut table = BlockBasedOptions::default();
    table.set_index_type(BlockBasedIndexType::TwoLevelIndexSearch);
    table.set_cache_index_and_filter_blocks(true);
    table.set_pin_top_level_index_and_filter(true);
    table.set_block_cache(&Cache::new_lru_cache(DATA_BLOCK_CACHE_BYTES));
    table
}

fn small_cf_options() -> Options {
    let mut opts = Options::default();
    // Metadata and outboards (0.4 % of the data) need far less than the 64 MiB default.
    opts.set_write_buffer_size(8 << 20);
    opts.set_max_write_buffer_number(2);
    opts
}

impl Store {
    /// Opens (or creates) the store in `path`, then cleans up imports a crash left behind.
    pub fn open(path: impl AsRef<Path>, options: StoreOptions) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        std::fs::create_dir_all(&path).map_err(|source| StoreError::Io {
            path: path.clone(),
            source,
        })?;
        let cfs = ALL_CFS.iter().map(|&name| {
            let opts = if name == CF_DATA {
                // Paused until the files a crash left are removed (below).
                let mut opts = data_cf_options();
                opts.set_disable_auto_compactions(true);
                opts
            } else {
                small_cf_options()
            };
            ColumnFamilyDescriptor::new(name, opts)
        });
        let db = DB::open_cf_descriptors(&db_options(), &path, cfs).map_err(|e| {
            if e.to_string().contains("LOCK") {
                StoreError::InUse { path: path.clone() }
            } else if write::is_no_space(&e) {
                // Opening replays the log into a table file: it needs some space too.
                StoreError::DiskFull {
                    path: path.clone(),
                    free: free_bytes(&path).unwrap_or(0),
                }
            } else {
                StoreError::Db(e)
            }
        })?;
        let mut store = Self {
            db,
            path,
            span_bytes: options.span_bytes,
            next_id: AtomicU64::new(0),
            bind_lock: Mutex::new(()),
            blob_rewrite: Mutex::new(()),
            span_rate: Mutex::default(),
            flushed_blob_files: page_cache::FlushedBlobFiles::default(),
            held: gc::HeldHashes::default(),
            span_file_options: data_cf_options(),
            ingest_from_bytes: ingest::INGEST_FROM_BYTES,
            stores_since_merge: AtomicU64::new(0),
            small_files_merged_every: gc::SMALL_TABLE_FILES_MERGED_EVERY,
        };
        // RocksDB starts due compactions as soon as the database opens, and a compaction of
        // `data` writes blob files: removing footer-less blob files then could remove one
        // being written, which RocksDB would record once finished (a crash soak hit that:
        // "while stat a file for size: …/000878.blob"). So `data`'s compactions wait until
        // the leftovers are gone; nothing else writes blob files before `init_meta`.
        store.remove_unfinished_blob_files()?;
        store.remove_uningested_files()?;
        store
            .db
            .set_options_cf(store.cf(CF_DATA), &[("disable_auto_compactions", "false")])
            .map_err(|e| store.db_error(e))?;
        store.init_meta(options)?;
        store.discard_unfinished_imports()?;
        store.merge_small_table_files();
        Ok(store)
    }

    /// Reads or writes the store-wide settings.
    fn init_meta(&mut self, options: StoreOptions) -> Result<()> {
        let (span_bytes, next_id) = {
            let meta = self.cf(CF_META);
            match self.db.get_cf(meta, META_LAYOUT_VERSION)? {
                Some(v) => {
                    let found = v
                        .as_slice()
                        .try_into()
                        .map(u32::from_be_bytes)
                        .map_err(|_| StoreError::Damaged("layout version".into()))?;
                    if found != LAYOUT_VERSION {
                        return Err(StoreError::UnsupportedLayout { found });
                    }
                    let span = self.db.get_cf(meta, META_SPAN_BYTES)?;
                    let span = span
                        .as_deref()
                        .and_then(decode_u64)
                        .ok_or_else(|| StoreError::Damaged("span size".into()))?;
                    let next = self.db.get_cf(meta, META_NEXT_ID)?;
                    (span, next.as_deref().and_then(decode_u64).unwrap_or(0))
                }
                None => {
                    if options.span_bytes == 0
                        || !options
                            .span_bytes
                            .is_multiple_of(commons_protocol::tree::CHUNK_GROUP_BYTES)
                    {
                        return Err(StoreError::InvalidOptions(
                            "span_bytes must be a positive multiple of 16 KiB",
                        ));
                    }
                    let mut batch = WriteBatch::default();
                    batch.put_cf(meta, META_LAYOUT_VERSION, LAYOUT_VERSION.to_be_bytes());
                    batch.put_cf(meta, META_SPAN_BYTES, options.span_bytes.to_be_bytes());
                    batch.put_cf(meta, META_NEXT_ID, 0u64.to_be_bytes());
                    self.write(batch)?;
                    (options.span_bytes, 0)
                }
            }
        };
        self.span_bytes = span_bytes;
        self.next_id = AtomicU64::new(next_id);
        Ok(())
    }

    /// Deletes the rows of imports that never finished (a crash, a kill, a full disk).
    fn discard_unfinished_imports(&self) -> Result<()> {
        let mut ids = Vec::new();
        for item in self
            .db
            .iterator_cf(self.cf(CF_IMPORTS), IteratorMode::Start)
        {
            let (key, _) = item?;
            let id = decode_u64(&key)
                .map(BlobId)
                .ok_or_else(|| StoreError::Damaged("import record".into()))?;
            ids.push(id);
        }
        if !ids.is_empty() {
            tracing::info!(count = ids.len(), "discarding imports that did not finish");
            self.discard_imports(&ids)?;
        }
        Ok(())
    }

    /// Deletes the rows and import records of unfinished imports `ids`.
    fn discard_imports(&self, ids: &[BlobId]) -> Result<()> {
        let mut batch = WriteBatch::default();
        for &id in ids {
            self.delete_rows(&mut batch, id);
            batch.delete_cf(self.cf(CF_IMPORTS), id.0.to_be_bytes());
        }
        self.write(batch)?;
        self.reclaim(ids)
    }

    /// [`Self::discard_imports`] for an import that failed: its own error is what the
    /// caller reports; if discarding fails too, the next open discards them.
    fn discard_imports_or_log(&self, ids: Vec<BlobId>) {
        if let Err(e) = self.discard_imports(&ids) {
            tracing::warn!("cannot discard a failed import now (the next open will): {e}");
        }
    }

    /// The folder RocksDB lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes per data row in this store.
    pub fn span_bytes(&self) -> u64 {
        self.span_bytes
    }

    /// A value of the `meta` column family that is not the store's own (e.g. the saved
    /// network state); the key names its owner.
    pub fn get_meta(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get_cf(self.cf(CF_META), key)?)
    }

    /// Sets a `meta` value (written through the WAL, like every metadata write).
    pub fn put_meta(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.put(CF_META, key, value)
    }

    fn cf(&self, name: &str) -> &ColumnFamily {
        // Every name in ALL_CFS is created at open; a missing one is a programming error.
        self.db
            .cf_handle(name)
            .unwrap_or_else(|| panic!("column family {name} exists"))
    }

    /// Adds deletions of every row of `id` (data, outboard, verified marks) to `batch`.
    fn delete_rows(&self, batch: &mut WriteBatch, id: BlobId) {
        let (start, end) = blob_key_range(id);
        for cf in [CF_DATA, CF_OUTBOARDS, CF_VERIFIED, CF_ABOVE] {
            batch.delete_range_cf(self.cf(cf), &start[..], &end[..]);
        }
    }

    /// Hands out a fresh blob id, persisting the counter in `batch`.
    fn allocate_id(&self, batch: &mut WriteBatch) -> BlobId {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        batch.put_cf(self.cf(CF_META), META_NEXT_ID, (id + 1).to_be_bytes());
        BlobId(id)
    }

    /// Metadata of a blob, if the store has it (complete or partial).
    pub fn blob(&self, hash: &Hash) -> Result<Option<BlobMeta>> {
        match self.db.get_pinned_cf(self.cf(CF_BLOBS), hash.as_bytes())? {
            Some(v) => decode(&v)
                .map(Some)
                .ok_or_else(|| StoreError::Damaged(format!("metadata of blob {hash}"))),
            None => Ok(None),
        }
    }

    /// Summary of a dataset, if `hash` is a dataset root this store knows.
    pub fn dataset(&self, hash: &Hash) -> Result<Option<DatasetMeta>> {
        match self
            .db
            .get_pinned_cf(self.cf(CF_DATASETS), hash.as_bytes())?
        {
            Some(v) => decode(&v)
                .map(Some)
                .ok_or_else(|| StoreError::Damaged(format!("metadata of dataset {hash}"))),
            None => Ok(None),
        }
    }

    /// The pin on `hash`, if any.
    pub fn pinned(&self, hash: &Hash) -> Result<Option<PinMeta>> {
        match self.db.get_pinned_cf(self.cf(CF_PINS), hash.as_bytes())? {
            Some(v) => decode(&v)
                .map(Some)
                .ok_or_else(|| StoreError::Damaged(format!("pin of {hash}"))),
            None => Ok(None),
        }
    }

    /// Every blob, in hash order.
    pub fn blobs(&self) -> Result<Vec<(Hash, BlobMeta)>> {
        self.scan(CF_BLOBS)
    }

    /// Every dataset, in hash order.
    pub fn datasets(&self) -> Result<Vec<(Hash, DatasetMeta)>> {
        self.scan(CF_DATASETS)
    }

    /// Every pin, in hash order.
    pub fn pins(&self) -> Result<Vec<(Hash, PinMeta)>> {
        self.scan(CF_PINS)
    }

    fn scan<T: serde::de::DeserializeOwned>(&self, cf: &str) -> Result<Vec<(Hash, T)>> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(cf), IteratorMode::Start) {
            let (key, value) = item?;
            let hash =
                decode_hash(&key).ok_or_else(|| StoreError::Damaged(format!("key in {cf}")))?;
            let value =
                decode(&value).ok_or_else(|| StoreError::Damaged(format!("{cf} of {hash}")))?;
            out.push((hash, value));
        }
        Ok(out)
    }

    /// Finds the one blob or dataset whose hex hash starts with `prefix` (at least 4 hex
    /// characters), so users can type the start of a hash as with git.
    pub fn resolve_prefix(&self, prefix: &str) -> Result<Option<Hash>> {
        let prefix = prefix.to_ascii_lowercase();
        if prefix.len() < 4 || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        if let Ok(hash) = prefix.parse::<Hash>() {
            return Ok(Some(hash));
        }
        // Whole bytes of the prefix position the iterator; the rest is compared as hex.
        let start = data_encoding::HEXLOWER
            .decode(&prefix.as_bytes()[..prefix.len() / 2 * 2])
            .map_err(|_| StoreError::Damaged("hex".into()))?;
        let mut found = None;
        let iter = self.db.iterator_cf(
            self.cf(CF_BLOBS),
            IteratorMode::From(&start, rocksdb::Direction::Forward),
        );
        for item in iter {
            let (key, _) = item?;
            let Some(hash) = decode_hash(&key) else { break };
            if !hash.to_string().starts_with(&prefix) {
                if key.starts_with(&start) {
                    continue;
                }
                break;
            }
            if found.replace(hash).is_some() {
                return Err(StoreError::AmbiguousPrefix { prefix });
            }
        }
        Ok(found)
    }
}

/// Seconds since the Unix epoch, for pin and import timestamps.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
