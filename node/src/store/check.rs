//! The store's rows checked against each other (`commons verify` runs it with the data
//! check): every complete blob has all its data rows and no leftover marks, every verified
//! mark of a partial blob has its data, no rows belong to a blob the store does not know,
//! and every dataset, pin and name points at something held. The crash soak runs it after
//! each kill: a crash may lose unfinished work, never leave rows that disagree.
//!
//! Everything is read from one RocksDB snapshot, so a fetch or import running meanwhile
//! (through a running node) cannot look like damage.

use std::collections::{BTreeMap, HashSet};

use commons_protocol::Hash;
use rocksdb::{IteratorMode, SnapshotWithThreadMode, DB};

use super::{layout::*, Result, Store, StoreError};

/// Problems listed at most; past this, only the count grows.
pub const MAX_ROW_PROBLEMS: usize = 100;

/// What [`Store::check_rows`] found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RowCheck {
    /// Blob records checked.
    pub blobs: u64,
    /// What disagrees, in words (at most [`MAX_ROW_PROBLEMS`]).
    pub problems: Vec<String>,
    /// How many problems there were in all.
    pub problem_count: u64,
}

impl RowCheck {
    fn problem(&mut self, what: String) {
        self.problem_count += 1;
        if self.problems.len() < MAX_ROW_PROBLEMS {
            self.problems.push(what);
        }
    }
}

/// The rows of one column family, per blob id: indexes seen.
type RowsById = BTreeMap<u64, Vec<u64>>;

impl Store {
    /// Checks that the store's rows agree with each other (see the module docs).
    pub fn check_rows(&self) -> Result<RowCheck> {
        let snap = self.db.snapshot();
        let mut check = RowCheck::default();
        let damaged = |what: &str| StoreError::Damaged(what.to_string());

        let mut blobs: BTreeMap<u64, (Hash, BlobMeta)> = BTreeMap::new();
        for item in snap.iterator_cf(self.cf(CF_BLOBS), IteratorMode::Start) {
            let (key, value) = item?;
            let hash = decode_hash(&key).ok_or_else(|| damaged("blob key"))?;
            let Some(meta) = decode::<BlobMeta>(&value) else {
                check.problem(format!("blob {hash}: its record does not decode"));
                continue;
            };
            check.blobs += 1;
            if let Some((other, _)) = blobs.insert(meta.id.0, (hash, meta)) {
                check.problem(format!(
                    "blobs {other} and {hash} share row id {}",
                    meta.id.0
                ));
            }
        }
        let mut imports = HashSet::new();
        for item in snap.iterator_cf(self.cf(CF_IMPORTS), IteratorMode::Start) {
            let (key, _) = item?;
            imports.insert(decode_u64(&key).ok_or_else(|| damaged("import record"))?);
        }

        let data = self.rows_by_id(&snap, CF_DATA)?;
        let verified = self.rows_by_id(&snap, CF_VERIFIED)?;
        let outboards = self.rows_by_id(&snap, CF_OUTBOARDS)?;
        let above = self.rows_by_id(&snap, CF_ABOVE)?;
        for (cf, rows) in [
            ("data", &data),
            ("outboard", &outboards),
            ("verified", &verified),
            ("above", &above),
        ] {
            for (id, indexes) in rows {
                if !blobs.contains_key(id) && !imports.contains(id) {
                    check.problem(format!(
                        "{} {cf} rows of row id {id} belong to no blob",
                        indexes.len()
                    ));
                }
            }
        }

        let none = Vec::new();
        for (id, (hash, meta)) in &blobs {
            let held = data.get(id).unwrap_or(&none);
            let marks = verified.get(id).unwrap_or(&none);
            match meta.state {
                BlobState::Complete => {
                    let spans = self.span_count(meta.size);
                    let expected = (0..spans).collect::<Vec<_>>();
                    // An empty blob may keep one empty row (a fetch writes its one span).
                    let empty_row = meta.size == 0 && held.iter().all(|i| *i == 0);
                    if *held != expected && !empty_row {
                        check.problem(format!(
                            "complete blob {hash}: {} of its {spans} data rows present",
                            held.iter().filter(|i| **i < spans).count()
                        ));
                    }
                    if meta.size > 0 && !outboards.contains_key(id) && needs_outboard(meta.size) {
                        check.problem(format!("complete blob {hash}: no outboard rows"));
                    }
                    if !marks.is_empty() || above.contains_key(id) {
                        check.problem(format!("complete blob {hash}: partial marks left over"));
                    }
                }
                BlobState::Partial => {
                    let held: HashSet<u64> = held.iter().copied().collect();
                    let unbacked = marks.iter().filter(|i| !held.contains(i)).count();
                    if unbacked > 0 {
                        check.problem(format!(
                            "partial blob {hash}: {unbacked} verified marks without their data"
                        ));
                    }
                }
            }
        }

        let is_held =
            |hash: &[u8]| -> Result<bool> { Ok(snap.get_cf(self.cf(CF_BLOBS), hash)?.is_some()) };
        for item in snap.iterator_cf(self.cf(CF_DATASETS), IteratorMode::Start) {
            let (key, _) = item?;
            let root = decode_hash(&key).ok_or_else(|| damaged("dataset key"))?;
            let complete = snap
                .get_cf(self.cf(CF_BLOBS), key)?
                .and_then(|v| decode::<BlobMeta>(&v))
                .is_some_and(|m| m.state == BlobState::Complete);
            if !complete {
                check.problem(format!("dataset {root}: its manifest is not held whole"));
            }
        }
        for item in snap.iterator_cf(self.cf(CF_PINS), IteratorMode::Start) {
            let (key, _) = item?;
            let hash = decode_hash(&key).ok_or_else(|| damaged("pin key"))?;
            if !is_held(&key)? {
                check.problem(format!("pin {hash}: nothing of it is held"));
            }
        }
        for item in snap.iterator_cf(self.cf(CF_NAMES), IteratorMode::Start) {
            let (key, value) = item?;
            let name = String::from_utf8_lossy(&key).replace('\0', "@");
            match decode::<NameMeta>(&value) {
                Some(meta) if is_held(meta.root.as_bytes())? => {}
                Some(meta) => check.problem(format!("name {name}: {} is not held", meta.root)),
                None => check.problem(format!("name {name}: its record does not decode")),
            }
        }
        Ok(check)
    }

    /// The row indexes of `cf`, grouped by blob id (keys only).
    fn rows_by_id(&self, snap: &SnapshotWithThreadMode<'_, DB>, cf: &str) -> Result<RowsById> {
        let mut rows = RowsById::new();
        let mut options = rocksdb::ReadOptions::default();
        options.set_snapshot(snap);
        let mut iter = self.db.raw_iterator_cf_opt(self.cf(cf), options);
        iter.seek_to_first();
        while let Some(key) = iter.key() {
            let id = key.get(..8).and_then(decode_u64);
            let index = key.get(8..16).and_then(decode_u64).unwrap_or(0);
            let id = id.ok_or_else(|| StoreError::Damaged(format!("a {cf} row key")))?;
            rows.entry(id).or_default().push(index);
            iter.next();
        }
        iter.status()?;
        Ok(rows)
    }
}

/// Whether a blob of `size` bytes has outboard rows: one chunk group needs no tree.
fn needs_outboard(size: u64) -> bool {
    size > commons_protocol::tree::CHUNK_GROUP_BYTES
}
