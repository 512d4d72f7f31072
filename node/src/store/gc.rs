//! Pins, removal and garbage collection.
//!
//! What is live: every pinned blob, every pinned dataset's manifest, and every blob such a
//! manifest lists. Everything else can go. Collection runs under the same lock that binds
//! imported blobs, so an import that reuses an existing blob cannot lose it to a concurrent
//! collection.

use std::{
    collections::{HashMap, HashSet},
    sync::{atomic::Ordering, Arc, Mutex},
};

use commons_protocol::Hash;
use rocksdb::{IteratorMode, WriteBatch};

use super::{layout::*, Result, Store, StoreError};

/// Share of the blob files' bytes that may be garbage (values of removed blobs) before a
/// collection rewrites the files (see `Store::rewrite_wasteful_blob_files`).
pub const BLOB_GARBAGE_REWRITE: f64 = 0.25;

/// A table file smaller than this counts as small to [`Store::merge_small_table_files`].
pub const SMALL_TABLE_FILE_BYTES: usize = 1 << 20;

/// Small table files side by side in one column family from which they are merged into
/// one (see [`Store::merge_small_table_files`]).
pub const SMALL_TABLE_FILES_MERGED_FROM: usize = 8;

/// Bytes of small table files one merge compacts at most (a run is cut there): the first
/// open of a store that piled up files for long does its merging in bounded steps.
pub const SMALL_TABLE_FILES_MERGED_BYTES: usize = 64 << 20;

/// Imports and completed fetches between two merges of small table files in a store open
/// that long (a daemon's): each import flushes `data` and `outboards`, a small file in each,
/// so a mirror importing from the Hub makes them all day (4,479 imports in 75 s once).
/// Open and removals merge them whatever the count.
pub const SMALL_TABLE_FILES_MERGED_EVERY: u64 = 32;

/// What [`Store::remove`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RemoveReport {
    /// Whether `hash` was a dataset (rather than a single blob).
    pub was_dataset: bool,
    /// What garbage collection then removed.
    pub gc: GcReport,
    /// Blobs of the removed dataset (or the removed blob) kept because something still
    /// pinned uses them.
    pub kept_shared: u64,
}

/// What [`Store::gc`] removed (or, for a dry run, would remove).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GcReport {
    /// Blobs removed, with their sizes, least recently used first.
    pub removed: Vec<(Hash, u64)>,
    /// Dataset records removed.
    pub removed_datasets: Vec<Hash>,
    /// Bytes stored after the collection.
    #[serde(default)]
    pub stored_bytes: u64,
    /// Bytes still above the quota after it (pinned or in use: never removed).
    #[serde(default)]
    pub over_quota: u64,
}

/// Hashes that fetches in progress are writing, counted (two fetches may share a blob).
#[derive(Debug, Default)]
pub(super) struct HeldHashes(Arc<Mutex<HashMap<Hash, usize>>>);

/// Keeps hashes from garbage collection while it lives: a fetch holds what it is writing
/// until it has pinned it (a known way for peers of this kind to lose data is a collection
/// deleting a blob a download is still filling).
#[derive(Debug)]
pub struct Hold {
    held: Arc<Mutex<HashMap<Hash, usize>>>,
    hashes: Vec<Hash>,
}

impl Drop for Hold {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        for h in &self.hashes {
            if let Some(n) = held.get_mut(h) {
                *n -= 1;
                if *n == 0 {
                    held.remove(h);
                }
            }
        }
    }
}

impl GcReport {
    /// Total bytes of the removed blobs.
    pub fn bytes(&self) -> u64 {
        self.removed.iter().map(|(_, size)| size).sum()
    }
}

impl Store {
    /// Pins a blob or dataset so garbage collection keeps it.
    pub fn pin(&self, hash: &Hash) -> Result<PinKind> {
        let kind = if self.dataset(hash)?.is_some() {
            PinKind::Dataset
        } else if self.blob(hash)?.is_some() {
            PinKind::Blob
        } else {
            return Err(StoreError::NotFound { hash: *hash });
        };
        let mut batch = WriteBatch::default();
        self.put_pin(&mut batch, hash, kind);
        self.write(batch)?;
        Ok(kind)
    }

    /// Unpins a dataset or blob without collecting: it stays until garbage collection
    /// needs its space. Names bound to it go too (they would name data about to be
    /// collected). Returns whether it was pinned.
    pub fn unpin(&self, hash: &Hash) -> Result<bool> {
        let was = self.pinned(hash)?.is_some();
        let mut batch = WriteBatch::default();
        batch.delete_cf(self.cf(CF_PINS), hash.as_bytes());
        self.delete_names_of(&mut batch, hash)?;
        self.write(batch)?;
        Ok(was)
    }

    /// Forgets a dataset or blob: unpins it and collects garbage. Blobs still used by
    /// another pinned dataset stay. Fails with [`StoreError::NotFound`] for unknown hashes.
    pub fn remove(&self, hash: &Hash) -> Result<RemoveReport> {
        let was_dataset = self.dataset(hash)?.is_some();
        if !was_dataset && self.blob(hash)?.is_none() {
            return Err(StoreError::NotFound { hash: *hash });
        }
        let members: Vec<Hash> = if was_dataset {
            // A damaged manifest still lets its pin go; its blobs are then judged by
            // whether anything else keeps them.
            let mut m: Vec<Hash> = match self.read_manifest(hash) {
                Ok(manifest) => manifest.entries().iter().map(|e| e.hash).collect(),
                Err(_) => Vec::new(),
            };
            m.push(*hash);
            m
        } else {
            vec![*hash]
        };
        let mut batch = WriteBatch::default();
        batch.delete_cf(self.cf(CF_PINS), hash.as_bytes());
        self.delete_names_of(&mut batch, hash)?;
        self.write(batch)?;
        let gc = self.gc(false)?;
        let removed: HashSet<Hash> = gc.removed.iter().map(|(h, _)| *h).collect();
        let kept_shared = members
            .iter()
            .collect::<HashSet<_>>()
            .into_iter()
            .filter(|h| !removed.contains(h) && self.blob(h).ok().flatten().is_some())
            .count() as u64;
        Ok(RemoveReport {
            was_dataset,
            gc,
            kept_shared,
        })
    }

    /// Keeps `hashes` from garbage collection until the returned guard is dropped. Waits
    /// for a collection in progress to finish, so none can be deleting them meanwhile.
    pub fn hold(&self, hashes: impl IntoIterator<Item = Hash>) -> Hold {
        let _guard = self.bind_lock.lock().unwrap_or_else(|e| e.into_inner());
        let hashes: Vec<Hash> = hashes.into_iter().collect();
        let mut held = self.held.0.lock().unwrap_or_else(|e| e.into_inner());
        for h in &hashes {
            *held.entry(*h).or_default() += 1;
        }
        Hold {
            held: self.held.0.clone(),
            hashes,
        }
    }

    /// Records that `hash` was used now (stored, fetched, served), unless it was within
    /// [`USED_RESOLUTION_SECS`]: a read, and at most one small write per ten minutes.
    pub fn touch(&self, hash: &Hash) -> Result<()> {
        let now = super::unix_now();
        let last = self
            .db
            .get_pinned_cf(self.cf(CF_USED), hash.as_bytes())?
            .and_then(|v| decode_u64(&v));
        if last.is_none_or(|t| now.saturating_sub(t) >= USED_RESOLUTION_SECS) {
            self.put(CF_USED, hash.as_bytes(), now.to_be_bytes())?;
        }
        Ok(())
    }

    /// When `hash` was last used (unix seconds; 0 if never recorded).
    pub fn last_used(&self, hash: &Hash) -> Result<u64> {
        Ok(self
            .db
            .get_pinned_cf(self.cf(CF_USED), hash.as_bytes())?
            .and_then(|v| decode_u64(&v))
            .unwrap_or(0))
    }

    /// Bytes of every stored blob (a partial one counts at its full size: it is on its
    /// way there). What a quota is measured against.
    pub fn stored_bytes(&self) -> Result<u64> {
        Ok(bytes_of(&self.blobs()?))
    }

    /// The hashes garbage collection must keep.
    fn live_set(&self) -> Result<HashSet<Hash>> {
        let mut live: HashSet<Hash> = self
            .held
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .copied()
            .collect();
        for (hash, pin) in self.pins()? {
            live.insert(hash);
            if pin.kind == PinKind::Dataset {
                // If a pinned manifest cannot be read we cannot know what it keeps alive:
                // refuse to collect rather than risk deleting pinned data.
                let manifest = self.read_manifest(&hash)?;
                live.extend(manifest.entries().iter().map(|e| e.hash));
            }
        }
        Ok(live)
    }

    /// Removes every blob and dataset record nothing pinned needs, and reclaims the space.
    /// With `dry_run`, only reports what would go.
    pub fn gc(&self, dry_run: bool) -> Result<GcReport> {
        self.collect(None, dry_run)
    }

    /// Removes unpinned blobs, least recently used first, until the store holds at most
    /// `quota` bytes; pinned data and data a fetch is writing are never removed (the report
    /// says by how much they alone exceed the quota). With `dry_run`, only reports.
    pub fn gc_to_quota(&self, quota: u64, dry_run: bool) -> Result<GcReport> {
        self.collect(Some(quota), dry_run)
    }

    fn collect(&self, quota: Option<u64>, dry_run: bool) -> Result<GcReport> {
        let guard = self.bind_lock.lock().unwrap_or_else(|e| e.into_inner());
        let blobs = self.blobs()?;
        let mut stored = bytes_of(&blobs);
        if quota.is_some_and(|q| stored <= q) {
            // Under the quota (the usual case, checked every minute): no manifest is read.
            return Ok(GcReport {
                stored_bytes: stored,
                ..GcReport::default()
            });
        }
        let live = self.live_set()?;
        let mut candidates = Vec::new();
        for (hash, meta) in blobs {
            if !live.contains(&hash) {
                candidates.push((self.last_used(&hash)?, hash, meta));
            }
        }
        candidates.sort_by_key(|(used, hash, _)| (*used, *hash));
        let mut report = GcReport::default();
        let mut batch = WriteBatch::default();
        let mut removed_ids = Vec::new();
        let mut gone = HashSet::new();
        for (_, hash, meta) in candidates {
            if quota.is_some_and(|q| stored <= q) {
                break;
            }
            stored -= meta.size;
            report.removed.push((hash, meta.size));
            gone.insert(hash);
            batch.delete_cf(self.cf(CF_BLOBS), hash.as_bytes());
            batch.delete_cf(self.cf(CF_USED), hash.as_bytes());
            self.delete_rows(&mut batch, meta.id);
            removed_ids.push(meta.id);
        }
        for item in self
            .db
            .iterator_cf(self.cf(CF_DATASETS), IteratorMode::Start)
        {
            let (key, _) = item?;
            if let Some(hash) = decode_hash(&key) {
                // A dataset record goes with its manifest (or, in a full collection, as
                // soon as nothing pins it).
                if !live.contains(&hash) && (quota.is_none() || gone.contains(&hash)) {
                    report.removed_datasets.push(hash);
                    batch.delete_cf(self.cf(CF_DATASETS), key);
                    // Its signatures go with it, in the same write.
                    self.delete_signatures(&mut batch, &hash)?;
                }
            }
        }
        report.stored_bytes = stored;
        report.over_quota = quota.map_or(0, |q| stored.saturating_sub(q));
        if dry_run || (report.removed.is_empty() && report.removed_datasets.is_empty()) {
            return Ok(report);
        }
        self.write(batch)?;
        // Compaction may take a while: imports and fetches need not wait for it.
        drop(guard);
        self.reclaim(&removed_ids)?;
        Ok(report)
    }

    /// Compacts the key ranges of removed blobs so their blob files can be deleted and the
    /// disk space returned. Called wherever rows are dropped: collections, imports of
    /// content already stored, imports a crash left unfinished.
    pub(super) fn reclaim(&self, ids: &[BlobId]) -> Result<()> {
        let mut ids = ids.to_vec();
        ids.sort();
        // Merge runs of consecutive ids into one range each.
        let mut ranges: Vec<(BlobId, BlobId)> = Vec::new();
        for id in ids {
            match ranges.last_mut() {
                Some((_, end)) if end.0 + 1 == id.0 => *end = id,
                _ => ranges.push((id, id)),
            }
        }
        let key_ranges: Vec<_> = ranges
            .iter()
            .map(|&(first, last)| (blob_key_range(first).0, blob_key_range(last).1))
            .collect();
        self.delete_ingested_files_in(&key_ranges)?;
        for (start, end) in key_ranges {
            for cf in [CF_DATA, CF_OUTBOARDS, CF_VERIFIED, CF_ABOVE] {
                self.db
                    .compact_range_cf(self.cf(cf), Some(&start[..]), Some(&end[..]));
            }
        }
        self.rewrite_wasteful_blob_files()?;
        self.merge_small_table_files();
        Ok(())
    }

    /// Merges runs of [`SMALL_TABLE_FILES_MERGED_FROM`] or more small table files that lie
    /// side by side in a column family, each run into one file. RocksDB moves a table file
    /// that overlaps nothing down to the last level unchanged, and never merges files
    /// there on its own: each flush of a few keys (every command that writes flushes all
    /// families at once, `atomic_flush`) and each removal's range deletions stayed a file
    /// of its own for good (40 rounds of `add` and `rm` left 80 files in `verified` alone).
    /// Only small files are rewritten ([`small_file_runs`]). Called at open and after every
    /// removal, and after every [`SMALL_TABLE_FILES_MERGED_EVERY`] imports and completed
    /// fetches ([`Self::merge_small_table_files_now_and_then`]). Housekeeping: a failure is
    /// logged, never returned (what the caller did is done).
    pub(super) fn merge_small_table_files(&self) {
        self.stores_since_merge.store(0, Ordering::Relaxed);
        let files = match self.db.live_files() {
            Ok(files) => files,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list table files to merge the small ones");
                return;
            }
        };
        let mut by_family: HashMap<String, Vec<rocksdb::LiveFile>> = HashMap::new();
        for file in files {
            by_family
                .entry(file.column_family_name.clone())
                .or_default()
                .push(file);
        }
        // While blob files are rewritten (a compaction of all of `data`, long on a large
        // store), a compaction of `data` would wait for it: imports need not.
        let rewriting = self.blob_rewrite.try_lock().is_err();
        let mut options = rocksdb::CompactOptions::default();
        // A lone run in the last level would otherwise be left as it is.
        options.set_bottommost_level_compaction(rocksdb::BottommostLevelCompaction::ForceOptimized);
        for (family, files) in by_family {
            if rewriting && family == CF_DATA {
                continue;
            }
            let Some(cf) = self.db.cf_handle(&family) else {
                continue;
            };
            for (first, last) in small_file_runs(files) {
                self.db
                    .compact_range_cf_opt(cf, Some(&first), Some(&last), &options);
            }
        }
    }

    /// Counts one import or completed fetch, and runs [`Self::merge_small_table_files`]
    /// after every [`SMALL_TABLE_FILES_MERGED_EVERY`] of them.
    pub(super) fn merge_small_table_files_now_and_then(&self) {
        let count = self.stores_since_merge.fetch_add(1, Ordering::Relaxed) + 1;
        if count >= self.small_files_merged_every {
            self.merge_small_table_files();
        }
    }

    /// Blob files whose every value was removed are gone after [`Self::reclaim`]'s
    /// compactions; a file that also holds live values (blobs stored or fetched at the same
    /// time as removed ones) stays whole. Once such garbage passes
    /// [`BLOB_GARBAGE_REWRITE`] of the blob files' size, every live value is rewritten into
    /// new files (one compaction of `data` with blob garbage collection on) and the old
    /// files deleted: space wasted stays bounded, and the rewrite, proportional to the
    /// store, happens only after that much was removed.
    fn rewrite_wasteful_blob_files(&self) -> Result<()> {
        let cf = self.cf(CF_DATA);
        let size = self
            .db
            .property_int_value_cf(cf, "rocksdb.live-blob-file-size")?
            .unwrap_or(0);
        let garbage = self
            .db
            .property_int_value_cf(cf, "rocksdb.live-blob-file-garbage-size")?
            .unwrap_or(0);
        if size == 0 || (garbage as f64) < BLOB_GARBAGE_REWRITE * size as f64 {
            return Ok(());
        }
        // One rewrite at a time: another would turn collection off under this one.
        let _rewriting = self.blob_rewrite.lock().unwrap_or_else(|e| e.into_inner());
        tracing::info!(
            garbage,
            size,
            "rewriting blob files to reclaim removed data"
        );
        self.db.set_options_cf(
            cf,
            &[
                ("enable_blob_garbage_collection", "true"),
                ("blob_garbage_collection_age_cutoff", "1.0"),
            ],
        )?;
        // Force: a lone SST would otherwise be moved, not rewritten, and keep its files.
        let mut options = rocksdb::CompactOptions::default();
        options.set_bottommost_level_compaction(rocksdb::BottommostLevelCompaction::Force);
        self.db
            .compact_range_cf_opt(cf, None::<&[u8]>, None::<&[u8]>, &options);
        self.db
            .set_options_cf(cf, &[("enable_blob_garbage_collection", "false")])?;
        Ok(())
    }

    /// Deletes blob files a crash left half-written (a flush killed mid-way): RocksDB
    /// 11 keeps every blob file without a footer, in case it is being written, so each
    /// killed import left up to a memtable's worth of bytes nothing reclaimed (12 kills:
    /// 50 MB). Called at open, before anything is written and while `data`'s compactions
    /// are paused (`Store::open`): no flush or compaction is writing a blob file, and every
    /// blob file the store uses was closed with its footer before RocksDB recorded it.
    /// Returns the bytes freed.
    pub(super) fn remove_unfinished_blob_files(&self) -> Result<u64> {
        let io = |source| StoreError::Io {
            path: self.path.clone(),
            source,
        };
        let mut freed = 0;
        for entry in std::fs::read_dir(&self.path).map_err(io)? {
            let path = entry.map_err(io)?.path();
            if path.extension().is_none_or(|e| e != "blob") || has_blob_footer(&path) {
                continue;
            }
            let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            tracing::info!(file = %path.display(), size, "removing a blob file a crash left unfinished");
            std::fs::remove_file(&path).map_err(io)?;
            freed += size;
        }
        Ok(freed)
    }

    /// Bytes the store's files take on disk.
    pub fn disk_usage(&self) -> Result<u64> {
        let mut total = 0;
        let entries = std::fs::read_dir(&self.path).map_err(|source| StoreError::Io {
            path: self.path.clone(),
            source,
        })?;
        // Table files being written for ingestion count too.
        let ingesting = std::fs::read_dir(self.path.join(super::ingest::INGEST_DIR));
        for entry in entries
            .flatten()
            .chain(ingesting.into_iter().flatten().flatten())
        {
            if let Ok(meta) = entry.metadata() {
                if meta.is_file() {
                    total += meta.len();
                }
            }
        }
        Ok(total)
    }
}

/// Key ranges (first and last key, both included) of the runs of small files worth merging
/// among one family's table files, of every level. A compaction of a key range takes every
/// file overlapping it, and with each file every file of the next level overlapping that
/// file's own range, and so on: so the files are first put in groups of files whose ranges
/// overlap, directly or through others (a sweep in key order), and a run is a series of
/// neighbouring groups holding only small files: compacting its range takes no other file.
/// A run needs [`SMALL_TABLE_FILES_MERGED_FROM`] files, and is cut at
/// [`SMALL_TABLE_FILES_MERGED_BYTES`].
fn small_file_runs(files: Vec<rocksdb::LiveFile>) -> Vec<(Vec<u8>, Vec<u8>)> {
    struct Group {
        first: Vec<u8>,
        last: Vec<u8>,
        files: usize,
        bytes: usize,
        large: bool,
    }
    let mut files: Vec<_> = files
        .into_iter()
        .filter_map(|f| Some((f.start_key?, f.end_key?, f.size)))
        .collect();
    files.sort();
    let mut groups: Vec<Group> = Vec::new();
    for (first, last, size) in files {
        match groups.last_mut() {
            Some(g) if first <= g.last => {
                if last > g.last {
                    g.last = last;
                }
                g.files += 1;
                g.bytes += size;
                g.large |= size >= SMALL_TABLE_FILE_BYTES;
            }
            _ => groups.push(Group {
                first,
                last,
                files: 1,
                bytes: size,
                large: size >= SMALL_TABLE_FILE_BYTES,
            }),
        }
    }
    let mut runs = Vec::new();
    let mut run: Option<Group> = None;
    let mut close = |run: &mut Option<Group>| {
        if let Some(r) = run.take() {
            if r.files >= SMALL_TABLE_FILES_MERGED_FROM {
                runs.push((r.first, r.last));
            }
        }
    };
    for group in groups {
        if group.large {
            close(&mut run);
            continue;
        }
        if run
            .as_ref()
            .is_some_and(|r| r.bytes + group.bytes > SMALL_TABLE_FILES_MERGED_BYTES)
        {
            close(&mut run);
        }
        match &mut run {
            Some(r) => {
                r.last = group.last;
                r.files += group.files;
                r.bytes += group.bytes;
            }
            None => run = Some(group),
        }
    }
    close(&mut run);
    runs
}

/// Bytes of `blobs` (a partial blob at its full size): what a quota counts.
fn bytes_of(blobs: &[(Hash, BlobMeta)]) -> u64 {
    blobs.iter().map(|(_, m)| m.size).sum()
}

/// Magic number opening a closed RocksDB blob file's 32-byte footer
/// (`db/blob/blob_log_format.h`).
const BLOB_FOOTER_MAGIC: u32 = 0x0024_8f37;
/// Size of that footer.
const BLOB_FOOTER_BYTES: u64 = 32;

/// Whether the blob file at `path` ends with a footer (it was closed). Unreadable files
/// count as closed: only what is surely unfinished is removed.
fn has_blob_footer(path: &std::path::Path) -> bool {
    use std::os::unix::fs::FileExt;
    let Ok(file) = std::fs::File::open(path) else {
        return true;
    };
    let Ok(len) = file.metadata().map(|m| m.len()) else {
        return true;
    };
    let Some(at) = len.checked_sub(BLOB_FOOTER_BYTES) else {
        return false;
    };
    let mut magic = [0u8; 4];
    match file.read_exact_at(&mut magic, at) {
        Ok(()) => u32::from_le_bytes(magic) == BLOB_FOOTER_MAGIC,
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(first: u8, last: u8, size: usize) -> rocksdb::LiveFile {
        file_at(&[first], &[last], size)
    }

    fn file_at(first: &[u8], last: &[u8], size: usize) -> rocksdb::LiveFile {
        rocksdb::LiveFile {
            column_family_name: CF_VERIFIED.into(),
            name: format!("{first:?}-{last:?}.sst"),
            size,
            level: 6,
            start_key: Some(first.to_vec()),
            end_key: Some(last.to_vec()),
            num_entries: 1,
            num_deletions: 0,
        }
    }

    #[test]
    fn only_long_runs_of_small_files_no_large_file_overlaps_are_merged() {
        let n = SMALL_TABLE_FILES_MERGED_FROM as u8;
        let small = SMALL_TABLE_FILE_BYTES - 1;
        let large = SMALL_TABLE_FILE_BYTES;
        // A long run, a large file, a run one file short, a large file, a long run that a
        // large file of another level overlaps.
        let mut files: Vec<_> = (0..n).map(|i| file(i, i, small)).collect();
        files.push(file(100, 101, large));
        files.extend((0..n - 1).map(|i| file(110 + i, 110 + i, small)));
        files.push(file(150, 151, large));
        files.extend((0..n).map(|i| file(200 + i, 200 + i, small)));
        files.push(file(199, 201, large));
        // Listed in no particular order, as `live_files` lists levels.
        files.reverse();
        assert_eq!(small_file_runs(files), vec![(vec![0], vec![n - 1])]);
    }

    #[test]
    fn a_small_file_overlapping_a_large_one_keeps_its_neighbours_out_of_runs() {
        // Compacting the run [700, 707] would take the small file [0, 1000] of another
        // level, and with it the large [500, 600] below it.
        let small = SMALL_TABLE_FILE_BYTES - 1;
        let mut files = vec![
            file_at(&[0], &[3, 232], small),
            file_at(&[1, 244], &[2, 88], SMALL_TABLE_FILE_BYTES),
        ];
        files.extend(
            (0..SMALL_TABLE_FILES_MERGED_FROM as u8)
                .map(|i| file_at(&[2, 188 + i], &[2, 188 + i], small)),
        );
        assert!(small_file_runs(files).is_empty());
    }

    #[test]
    fn runs_are_cut_at_the_byte_cap_and_files_without_keys_are_left_out() {
        let size = SMALL_TABLE_FILE_BYTES - 1;
        let per_run = SMALL_TABLE_FILES_MERGED_BYTES / size;
        let mut files: Vec<_> = (0..2 * per_run + 2)
            .map(|i| file_at(&(i as u16).to_be_bytes(), &(i as u16).to_be_bytes(), size))
            .collect();
        files.push(rocksdb::LiveFile {
            start_key: None,
            end_key: None,
            ..file(0, 0, 1)
        });
        let key = |i: usize| (i as u16).to_be_bytes().to_vec();
        assert_eq!(
            small_file_runs(files),
            vec![
                (key(0), key(per_run - 1)),
                (key(per_run), key(2 * per_run - 1))
            ],
            "two full runs; the two files left are too few"
        );
    }

    #[test]
    fn a_run_ends_at_its_widest_file() {
        let small = SMALL_TABLE_FILE_BYTES - 1;
        let mut files: Vec<_> = (0..SMALL_TABLE_FILES_MERGED_FROM as u8)
            .map(|i| file(i, i, small))
            .collect();
        files.push(file(1, 50, small));
        assert_eq!(small_file_runs(files), vec![(vec![0], vec![50])]);
    }
}
