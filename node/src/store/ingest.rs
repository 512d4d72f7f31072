//! Large imports write their data rows into a table file of their own and hand it to
//! RocksDB whole (`IngestExternalFile`), rather than through the memtable.
//!
//! Through the memtable a 1 GiB `add` was 64 flushes of 16 MiB, each syncing several files
//! (462 syncs in all), with the writer stalled behind them: 1.5–1.9× the time of cp + sync +
//! b3sum on the same disk and 3.4–4.4 core-s/GiB. Written once, in key order, into one
//! file synced once, the same import takes about 0.6× the time for half the CPU
//! (docs/benchmarks.md, issue 22, part 6).
//!
//! The file's values are inline (a table file writer cannot make RocksDB's blob files),
//! which reads as well as a blob file: one read per span. Crash rules: the file is written
//! under [`INGEST_DIR`] in the store folder, which every open empties, so a crash while it
//! is written leaves nothing behind. RocksDB records an ingested file in its MANIFEST or
//! not at all, and ingestion happens only once the blob's hash is known, under the
//! import's id in `imports` like any import's rows: a crash between ingestion and the
//! binding batch leaves rows that the next open deletes.

use std::path::PathBuf;

use rocksdb::{IngestExternalFileOptions, SstFileWriter};

use super::{layout::*, Result, Store, StoreError, MIN_BLOB_BYTES};

/// Blobs this large or larger are imported through a table file of their own. Below it an
/// import is a few memtable flushes, and a file per small blob would only add files.
pub const INGEST_FROM_BYTES: u64 = 64 << 20;

/// Folder inside the store where table files are written before RocksDB takes them.
pub const INGEST_DIR: &str = "ingest";

/// A blob's data rows being written into a table file, in index order.
pub(super) struct SpanFile<'a> {
    writer: SstFileWriter<'a>,
    file: UningestedFile,
}

/// A finished, synced table file not yet handed to RocksDB; removed if dropped before
/// [`Store::ingest`] takes it.
#[derive(Debug)]
pub(super) struct UningestedFile {
    path: PathBuf,
}

impl Drop for UningestedFile {
    fn drop(&mut self) {
        // Ingestion moves the file away; after a failure it is only garbage.
        let _ = std::fs::remove_file(&self.path);
    }
}

impl<'a> SpanFile<'a> {
    /// Starts the table file of blob `id`'s data rows.
    pub(super) fn create(store: &'a Store, id: BlobId) -> Result<Self> {
        let dir = store.path.join(INGEST_DIR);
        std::fs::create_dir_all(&dir).map_err(|source| StoreError::Io {
            path: dir.clone(),
            source,
        })?;
        let file = UningestedFile {
            path: dir.join(format!("{}.sst", id.0)),
        };
        let writer = SstFileWriter::create(&store.span_file_options);
        writer.open(&file.path).map_err(|e| store.db_error(e))?;
        Ok(Self { writer, file })
    }

    /// Appends row `index` of blob `id` (rows must come in increasing index order).
    pub(super) fn put(&mut self, store: &Store, id: BlobId, index: u64, span: &[u8]) -> Result<()> {
        self.writer
            .put(span_key(id, index), span)
            .map_err(|e| store.db_error(e))
    }

    /// Writes the file's index and footer and syncs it.
    pub(super) fn finish(mut self, store: &Store) -> Result<UningestedFile> {
        self.writer.finish().map_err(|e| store.db_error(e))?;
        Ok(self.file)
    }
}

impl Store {
    /// Moves a finished table file into the data column family, atomically.
    pub(super) fn ingest(&self, file: UningestedFile) -> Result<()> {
        let mut options = IngestExternalFileOptions::default();
        // A hard link, not a copy: the bytes are written once.
        options.set_move_files(true);
        self.db
            .ingest_external_file_cf_opts(self.cf(CF_DATA), &options, vec![&file.path])
            .map_err(|e| self.db_error(e))
    }

    /// Deletes whole the ingested table files of `data` that lie inside one of `ranges`
    /// (key ranges as [`blob_key_range`] makes them, whose rows were all deleted): the
    /// compaction that follows would otherwise read every byte of them only to drop them
    /// (a 1 GiB blob's `rm`: 2.4 s). Only ingested files: their values are inline, so
    /// deleting one cannot leave a blob file behind, where deleting a file of blob
    /// references could (RocksDB keeps a blob file until compactions have counted all of
    /// it as garbage). The files are listed once for all the ranges: a collection may
    /// remove thousands of blobs.
    pub(super) fn delete_ingested_files_in(&self, ranges: &[([u8; 16], [u8; 8])]) -> Result<()> {
        for file in self.db.live_files()? {
            let (Some(first), Some(last)) = (&file.start_key, &file.end_key) else {
                continue;
            };
            // Flushes and compactions keep only values under `MIN_BLOB_BYTES` inline, so
            // a file averaging twice that per row holds spans: an ingested file.
            let ingested = file.num_entries > 0
                && file.size as u64 / file.num_entries >= 2 * MIN_BLOB_BYTES as u64;
            let inside = ranges
                .iter()
                .any(|(start, end)| first[..] >= start[..] && last[..] < end[..]);
            if file.column_family_name == CF_DATA && ingested && inside {
                self.db
                    .delete_file_in_range_cf(self.cf(CF_DATA), first, last)
                    .map_err(|e| self.db_error(e))?;
            }
        }
        Ok(())
    }

    /// Deletes table files a crash left in [`INGEST_DIR`] (written, never ingested). Called
    /// at open, before anything is written. Returns the bytes freed.
    pub(super) fn remove_uningested_files(&self) -> Result<u64> {
        let dir = self.path.join(INGEST_DIR);
        let io = |source| StoreError::Io {
            path: dir.clone(),
            source,
        };
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(io(e)),
        };
        let mut freed = 0;
        for entry in entries {
            let path = entry.map_err(io)?.path();
            let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            tracing::info!(file = %path.display(), size, "removing a table file a crash left before ingestion");
            std::fs::remove_file(&path).map_err(io)?;
            freed += size;
        }
        Ok(freed)
    }
}
