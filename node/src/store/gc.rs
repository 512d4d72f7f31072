//! Pins, removal and garbage collection.
//!
//! What is live: every pinned blob, every pinned dataset's manifest, and every blob such a
//! manifest lists. Everything else can go. Collection runs under the same lock that binds
//! imported blobs, so an import that reuses an existing blob cannot lose it to a concurrent
//! collection.

use std::collections::HashSet;

use commons_protocol::Hash;
use rocksdb::{IteratorMode, WriteBatch};

use super::{layout::*, Result, Store, StoreError};

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
    /// Blobs removed, with their sizes.
    pub removed: Vec<(Hash, u64)>,
    /// Dataset records removed.
    pub removed_datasets: Vec<Hash>,
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
        self.db.write(batch)?;
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
        self.db.write(batch)?;
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
        self.db.write(batch)?;
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

    /// The hashes garbage collection must keep.
    fn live_set(&self) -> Result<HashSet<Hash>> {
        let mut live = HashSet::new();
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
        let _guard = self.bind_lock.lock().unwrap_or_else(|e| e.into_inner());
        let live = self.live_set()?;
        let mut report = GcReport::default();
        let mut batch = WriteBatch::default();
        let mut removed_ids = Vec::new();
        for (hash, meta) in self.blobs()? {
            if !live.contains(&hash) {
                report.removed.push((hash, meta.size));
                batch.delete_cf(self.cf(CF_BLOBS), hash.as_bytes());
                self.delete_rows(&mut batch, meta.id);
                removed_ids.push(meta.id);
            }
        }
        for item in self
            .db
            .iterator_cf(self.cf(CF_DATASETS), IteratorMode::Start)
        {
            let (key, _) = item?;
            if let Some(hash) = decode_hash(&key) {
                if !live.contains(&hash) {
                    report.removed_datasets.push(hash);
                    batch.delete_cf(self.cf(CF_DATASETS), key);
                }
            }
        }
        if dry_run || (report.removed.is_empty() && report.removed_datasets.is_empty()) {
            return Ok(report);
        }
        self.db.write(batch)?;
        self.reclaim(&removed_ids)?;
        Ok(report)
    }

    /// Compacts the key ranges of removed blobs so their blob files can be deleted and the
    /// disk space returned.
    fn reclaim(&self, ids: &[BlobId]) -> Result<()> {
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
        for (first, last) in ranges {
            let (start, _) = blob_key_range(first);
            let (_, end) = blob_key_range(last);
            for cf in [CF_DATA, CF_OUTBOARDS, CF_VERIFIED] {
                self.db
                    .compact_range_cf(self.cf(cf), Some(&start[..]), Some(&end[..]));
            }
        }
        Ok(())
    }

    /// Bytes the store's files take on disk.
    pub fn disk_usage(&self) -> Result<u64> {
        let mut total = 0;
        let entries = std::fs::read_dir(&self.path).map_err(|source| StoreError::Io {
            path: self.path.clone(),
            source,
        })?;
        for entry in entries.flatten() {
            if let Ok(meta) = entry.metadata() {
                if meta.is_file() {
                    total += meta.len();
                }
            }
        }
        Ok(total)
    }
}
