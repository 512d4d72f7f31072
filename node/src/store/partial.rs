//! Partial blobs: data that arrives in verified pieces (from peers) rather than from a file.
//!
//! A partial blob has a `blobs` row in state `Partial` with the size its first provider
//! claimed, and one `verified` mark per span it holds. Each span's data and its mark are
//! written in one atomic batch, so after any crash every mark is backed by its data and a
//! fetch resumes with exactly the spans that are missing. The claimed size is proven once
//! the last span (holding the last chunk group) has verified; until then a provider claiming
//! a different size restarts the blob rather than mixing two trees.

use std::{io, ops::Range};

use commons_protocol::wire::{GroupRange, HaveResponse, MAX_HAVE_RANGES};
use commons_protocol::{partial as tree_partial, subtree, tree, Hash};
use rocksdb::{WriteBatch, WriteOptions};

use super::{layout::*, pieces::PieceWriter, read::RowReader, Result, Store, StoreError};

/// Where a blob being fetched stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartialBlob {
    /// Its rows.
    pub id: BlobId,
    /// Size in bytes (a claim until the last span is verified).
    pub size: u64,
    /// Whether the store already has the whole blob, complete.
    pub complete: bool,
}

/// Outboard bytes written per batch while completing a blob.
const OUTBOARD_BATCH_PIECES: u64 = 64;

/// Blobs at least this large may have their fetched spans written without RocksDB's WAL
/// (while the store receives them at [`UNLOGGED_RATE`] or more): each byte is then written
/// once (to a blob file, when the memtable is flushed) instead of twice, which made a 1 GiB
/// fetch 1.17× as fast (docs/benchmarks.md). Atomic flush (see `db_options`) keeps a span
/// and its mark together: a crash loses both or neither. Smaller blobs keep the WAL, so a
/// dataset of many small files needs no flush per file.
pub const UNLOGGED_SPANS_FROM: u64 = 16 << 20;

/// Rate of fetched span bytes at or above which they skip the WAL. What a crash loses of
/// unlogged spans is what the memtables hold (at most ~48 MiB), which at this rate arrived
/// in under a second; below it spans are logged, so a kill loses only what was in flight
/// (20 kills of a rate-limited 256 MiB fetch re-fetched 0.99× the file when every span of
/// a large blob skipped the WAL).
pub const UNLOGGED_RATE: u64 = 64 << 20;
/// How often the span rate is measured.
const RATE_WINDOW: std::time::Duration = std::time::Duration::from_millis(100);

/// The rate at which the store receives spans of large blobs, over the last window.
#[derive(Debug)]
pub(super) struct SpanRate {
    window_start: std::time::Instant,
    window_bytes: u64,
    fast: bool,
}

impl Default for SpanRate {
    fn default() -> Self {
        Self {
            window_start: std::time::Instant::now(),
            window_bytes: 0,
            fast: false,
        }
    }
}

impl SpanRate {
    /// A rate that counts as fast for the next hour, whatever arrives (tests).
    #[cfg(test)]
    pub(super) fn fast_for_an_hour() -> Self {
        Self {
            window_start: std::time::Instant::now() + std::time::Duration::from_secs(3600),
            window_bytes: 0,
            fast: true,
        }
    }

    /// Counts `len` more bytes; returns whether spans now skip the WAL, and whether they
    /// just stopped doing so (the unlogged ones must then reach the disk: a slow fetch
    /// could leave them in the memtables for minutes).
    fn add(&mut self, len: u64) -> (bool, bool) {
        self.window_bytes += len;
        let elapsed = self.window_start.elapsed();
        let was_fast = self.fast;
        if elapsed >= RATE_WINDOW {
            self.fast = self.window_bytes as f64 >= UNLOGGED_RATE as f64 * elapsed.as_secs_f64();
            self.window_start = std::time::Instant::now();
            self.window_bytes = 0;
        }
        (self.fast, was_fast && !self.fast)
    }
}

impl Store {
    /// Number of spans in a blob of `size` bytes.
    pub fn span_count(&self, size: u64) -> u64 {
        size.div_ceil(self.span_bytes)
    }

    /// Starts, or resumes, receiving blob `hash` whose provider claims `claimed_size`.
    pub fn begin_partial(&self, hash: &Hash, claimed_size: u64) -> Result<PartialBlob> {
        let _guard = self.bind_lock.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(meta) = self.blob(hash)? {
            if meta.state == BlobState::Complete {
                if meta.size != claimed_size {
                    return Err(StoreError::SizeConflict {
                        hash: *hash,
                        known: meta.size,
                        claimed: claimed_size,
                    });
                }
                return Ok(PartialBlob {
                    id: meta.id,
                    size: meta.size,
                    complete: true,
                });
            }
            if meta.size == claimed_size {
                return Ok(PartialBlob {
                    id: meta.id,
                    size: meta.size,
                    complete: false,
                });
            }
            // The size is proven once the span holding the last chunk group is stored.
            // (Only that span's mark is read: every request of a fetch comes through here.)
            let last = self.span_count(meta.size).saturating_sub(1);
            let size_proven =
                meta.size == 0 || self.missing_spans_in(meta.id, last..last + 1)?.is_empty();
            if size_proven {
                return Err(StoreError::SizeConflict {
                    hash: *hash,
                    known: meta.size,
                    claimed: claimed_size,
                });
            }
            // Our size was never proven: start over with the new claim.
            let mut batch = WriteBatch::default();
            self.delete_rows(&mut batch, meta.id);
            self.write(batch)?;
            self.reclaim(&[meta.id])?;
        }
        let mut batch = WriteBatch::default();
        let id = self.allocate_id(&mut batch);
        let meta = BlobMeta {
            id,
            size: claimed_size,
            state: BlobState::Partial,
        };
        batch.put_cf(self.cf(CF_BLOBS), hash.as_bytes(), encode(&meta));
        self.write(batch)?;
        Ok(PartialBlob {
            id,
            size: claimed_size,
            complete: false,
        })
    }

    /// Forgets partial blob `hash` and every span stored of it (a copy that failed
    /// verification part-way, begun by the caller); a complete or unknown blob is left.
    pub fn discard_partial(&self, hash: &Hash) -> Result<()> {
        let _guard = self.bind_lock.lock().unwrap_or_else(|e| e.into_inner());
        let Some(meta) = self.blob(hash)? else {
            return Ok(());
        };
        if meta.state != BlobState::Partial {
            return Ok(());
        }
        let mut batch = WriteBatch::default();
        self.delete_rows(&mut batch, meta.id);
        batch.delete_cf(self.cf(CF_BLOBS), hash.as_bytes());
        self.write(batch)?;
        self.reclaim(&[meta.id])
    }

    /// Span index ranges of partial blob `id` that have no verified mark.
    pub fn missing_spans(&self, id: BlobId, size: u64) -> Result<Vec<Range<u64>>> {
        self.missing_spans_in(id, 0..self.span_count(size))
    }

    /// The span ranges of `spans` that blob `id` still lacks: reads only the marks of those
    /// spans, so asking about one batch does not scan the whole blob.
    pub fn missing_spans_in(&self, id: BlobId, spans: Range<u64>) -> Result<Vec<Range<u64>>> {
        let mut missing = Vec::new();
        let mut next = spans.start;
        if spans.is_empty() {
            return Ok(missing);
        }
        // Keys only, bounded to these spans: a mark's value (the span's kept subtree
        // outboard, ~1 KB) is never copied out, and nothing past the range is read.
        let mut options = rocksdb::ReadOptions::default();
        options.set_iterate_upper_bound(span_key(id, spans.end).to_vec());
        let mut iter = self.db.raw_iterator_cf_opt(self.cf(CF_VERIFIED), options);
        iter.seek(span_key(id, spans.start));
        while let Some(key) = iter.key() {
            let index = key
                .get(8..16)
                .and_then(decode_u64)
                .filter(|_| key.get(..8) == Some(&id.0.to_be_bytes()[..]))
                .ok_or_else(|| StoreError::Damaged("verified mark key".into()))?;
            if index > next {
                missing.push(next..index);
            }
            next = index + 1;
            iter.next();
        }
        iter.status()?;
        if next < spans.end {
            missing.push(next..spans.end);
        }
        Ok(missing)
    }

    /// Stores span `index` of partial blob `id` together with its verified mark, in one
    /// atomic batch. The caller must have verified every chunk group in `data`. A whole
    /// span's mark holds the span's own subtree outboard, so completing the blob needs no
    /// second pass over its data (see [`commons_protocol::subtree`]).
    ///
    /// `pairs` is that outboard when the caller already has it (the verified pairs of a
    /// response); otherwise it is computed from `data`. `above` are verified pairs of tree
    /// nodes above the span (see [`CF_ABOVE`]): written in the same batch, so a held span
    /// can always be served.
    pub fn put_verified_span(
        &self,
        id: BlobId,
        blob_size: u64,
        index: u64,
        data: &[u8],
        pairs: Option<&[u8]>,
        above: &[(Range<u64>, [u8; 64])],
    ) -> Result<()> {
        let whole =
            data.len() as u64 == self.span_bytes && subtree::is_subtree_len(self.span_bytes);
        let pairs = match pairs {
            Some(p) if whole => p.to_vec(),
            None if whole => subtree::subtree_outboard(index * self.span_bytes, data),
            _ => Vec::new(),
        };
        let mut options = WriteOptions::default();
        if blob_size >= UNLOGGED_SPANS_FROM {
            let (fast, slowed) = self
                .span_rate
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .add(data.len() as u64);
            if slowed {
                self.persist_spans()?;
            }
            options.disable_wal(fast);
            if fast {
                self.flushed_blob_files.drop_finished(&self.path);
            }
        }
        // The rows' values, plus at most 64 bytes of key and framing per row (an `above`
        // row's value is 64 bytes).
        let reserve = data.len() + pairs.len() + above.len() * (64 + 64) + 2 * 64;
        self.write_with(options, reserve, |batch| {
            batch.put_cf(self.cf(CF_DATA), span_key(id, index), data);
            batch.put_cf(self.cf(CF_VERIFIED), span_key(id, index), &pairs);
            for (node, pair) in above {
                batch.put_cf(self.cf(CF_ABOVE), above_key(id, node), pair);
            }
        })
    }

    /// Puts spans written without the WAL (with their marks and pairs) on disk. Needed
    /// before anything logged in the WAL relies on them (completing their blob), and at
    /// shutdown so a stopped fetch keeps what it received. The blob files the flush
    /// finished then leave the page cache (`page_cache`).
    pub fn persist_spans(&self) -> Result<()> {
        let cfs = [self.cf(CF_DATA), self.cf(CF_VERIFIED), self.cf(CF_ABOVE)];
        let flushed = self
            .db
            .flush_cfs_opt(&cfs, &rocksdb::FlushOptions::default())
            .map_err(|e| self.db_error(e));
        self.flushed_blob_files.stop(&self.path);
        flushed
    }

    /// Turns a partial blob whose spans are all stored into a complete one: assembles its
    /// outboard from the spans' kept subtree outboards (hashing only the nodes above them,
    /// and the data of spans without one), checks the root, then marks it complete and drops
    /// the per-span marks in one batch. Should the root not match (a damaged kept outboard),
    /// the outboard is computed again from the data alone before anything is called corrupt.
    pub fn complete_partial(&self, hash: &Hash) -> Result<()> {
        let meta = self
            .blob(hash)?
            .ok_or(StoreError::NotFound { hash: *hash })?;
        if meta.state == BlobState::Complete {
            return Ok(());
        }
        if !self.missing_spans(meta.id, meta.size)?.is_empty() {
            return Err(StoreError::NotComplete { hash: *hash });
        }
        let data = RowReader::new(self, CF_DATA, meta.id, meta.size, self.span_bytes);
        let mut kept = KeptSpans {
            store: self,
            id: meta.id,
            data: &data,
        };
        let mut root = self.write_outboard(meta.id, |mut sink| {
            subtree::assemble_outboard(&mut kept, meta.size, &mut sink)
        })?;
        if root != *hash {
            tracing::warn!(%hash, "kept span outboards do not add up: hashing the data again");
            // Same pieces at the same keys: this overwrites what the first pass wrote.
            root = self.write_outboard(meta.id, |sink| {
                let reader = SequentialReader {
                    inner: &data,
                    pos: 0,
                };
                tree::compute_outboard(reader, meta.size, sink)
            })?;
        }
        if root != *hash {
            // Every span verified on arrival, so this means the store itself was damaged.
            return Err(StoreError::Corrupt {
                hash: *hash,
                offset: 0,
            });
        }
        if meta.size >= UNLOGGED_SPANS_FROM {
            // The completion below goes through the WAL; the spans it stands on must not
            // be lost by a crash that keeps it.
            self.persist_spans()?;
        }
        let _guard = self.bind_lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut batch = WriteBatch::default();
        let complete = BlobMeta {
            state: BlobState::Complete,
            ..meta
        };
        batch.put_cf(self.cf(CF_BLOBS), hash.as_bytes(), encode(&complete));
        self.put_used(&mut batch, hash);
        let (start, end) = blob_key_range(meta.id);
        batch.delete_range_cf(self.cf(CF_VERIFIED), &start[..], &end[..]);
        batch.delete_range_cf(self.cf(CF_ABOVE), &start[..], &end[..]);
        self.write(batch)?;
        drop(_guard);
        self.merge_small_table_files_now_and_then();
        Ok(())
    }
}

impl Store {
    /// Streams an outboard produced by `produce` into blob `id`'s outboard rows, in
    /// batches of [`OUTBOARD_BATCH_PIECES`] pieces. The blob stays partial meanwhile, so a
    /// crash here only repeats this work. Returns what `produce` returns (the root).
    fn write_outboard(
        &self,
        id: BlobId,
        produce: impl FnOnce(&mut dyn io::Write) -> io::Result<Hash>,
    ) -> Result<Hash> {
        let io_err = |source| StoreError::Io {
            path: self.path.clone(),
            source,
        };
        let mut batch = WriteBatch::default();
        let mut sink = PieceWriter::new(|index, piece| {
            batch.put_cf(self.cf(CF_OUTBOARDS), span_key(id, index), piece);
            if (index + 1).is_multiple_of(OUTBOARD_BATCH_PIECES) {
                self.db
                    .write(std::mem::take(&mut batch))
                    .map_err(io::Error::other)?;
            }
            Ok(())
        });
        let root = produce(&mut sink).map_err(io_err)?;
        sink.finish().map_err(io_err)?;
        drop(sink);
        self.write(batch)?;
        Ok(root)
    }
}

/// A partial blob's data and the subtree outboards kept in its verified marks.
struct KeptSpans<'a, 'b> {
    store: &'a Store,
    id: BlobId,
    data: &'a RowReader<'b>,
}

impl subtree::SubtreeSource for KeptSpans<'_, '_> {
    fn data(&mut self, offset: u64, len: u64) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; len as usize];
        tree::read_exact_at(self.data, offset, &mut buf)?;
        Ok(buf)
    }

    fn pairs(&mut self, offset: u64, _len: u64) -> io::Result<Option<Vec<u8>>> {
        let key = span_key(self.id, offset / self.store.span_bytes);
        self.store
            .db
            .get_cf(self.store.cf(CF_VERIFIED), key)
            .map_err(io::Error::other)
    }

    fn kept_len(&self) -> u64 {
        if subtree::is_subtree_len(self.store.span_bytes) {
            self.store.span_bytes
        } else {
            0
        }
    }
}

/// Reads a [`RowReader`] front to back.
struct SequentialReader<'a, 'b> {
    inner: &'a RowReader<'b>,
    pos: u64,
}

impl io::Read for SequentialReader<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = tree::ReadAt::read_at(self.inner, self.pos, buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Store {
    /// The stored bytes of span `index` of blob `id`, if present. For partial blobs only
    /// spans with a verified mark hold data.
    pub fn read_span(&self, id: BlobId, index: u64) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get_cf(self.cf(CF_DATA), span_key(id, index))?)
    }
}

impl Store {
    /// Bytes of blob `hash` held verified here: its size when complete, the verified spans
    /// of a partial one, 0 when absent. What `ls` shows of an interrupted fetch.
    pub fn held_bytes(&self, hash: &Hash) -> Result<u64> {
        let Some(meta) = self.blob(hash)? else {
            return Ok(0);
        };
        if meta.state == BlobState::Complete {
            return Ok(meta.size);
        }
        let missing: u64 = self
            .span_byte_ranges(&self.missing_spans(meta.id, meta.size)?, meta.size)
            .iter()
            .map(|r| r.end - r.start)
            .sum();
        Ok(meta.size.saturating_sub(missing))
    }

    /// Byte ranges of span index ranges of a blob of `size` bytes, the last one cut at
    /// its end (a size claimed by a peer cannot make them overflow).
    pub fn span_byte_ranges(&self, spans: &[Range<u64>], size: u64) -> Vec<Range<u64>> {
        let bytes = |index: u64| index.saturating_mul(self.span_bytes).min(size);
        spans.iter().map(|r| bytes(r.start)..bytes(r.end)).collect()
    }

    /// The chunk groups of blob `hash` this node can serve: everything for a complete blob,
    /// the verified spans (first [`MAX_HAVE_RANGES`] ranges) of a partial one.
    pub fn held_groups(&self, hash: &Hash) -> Result<HaveResponse> {
        let Some(meta) = self.blob(hash)? else {
            return Ok(HaveResponse::NotFound);
        };
        if meta.state == BlobState::Complete {
            return Ok(HaveResponse::Held {
                size: meta.size,
                complete: true,
                groups: Vec::new(),
            });
        }
        let per_span = self.span_bytes / tree::CHUNK_GROUP_BYTES;
        let total = tree_partial::group_count(meta.size);
        let mut held: Vec<Range<u64>> = Vec::new();
        let mut next = 0;
        for gap in self
            .missing_spans(meta.id, meta.size)?
            .into_iter()
            .chain(std::iter::once(self.span_count(meta.size)..u64::MAX))
        {
            if gap.start > next {
                held.push(next * per_span..(gap.start * per_span).min(total));
                if held.len() == MAX_HAVE_RANGES {
                    break;
                }
            }
            next = gap.end;
        }
        if held.is_empty() {
            return Ok(HaveResponse::NotFound);
        }
        Ok(HaveResponse::Held {
            size: meta.size,
            complete: false,
            groups: held,
        })
    }

    /// Whether every group of `ranges` of partial blob `meta` is held with the pairs
    /// needed to serve it: its span verified and every node above the span kept.
    pub fn can_serve_partial(&self, meta: &BlobMeta, ranges: &[GroupRange]) -> Result<bool> {
        let per_span = self.span_bytes / tree::CHUNK_GROUP_BYTES;
        let total = tree_partial::group_count(meta.size);
        let spans = self.span_count(meta.size);
        let mut nodes = std::collections::BTreeSet::new();
        for r in ranges {
            // A start past the end asks for the last group (a size proof).
            let first = r.start.min(total.saturating_sub(1)) / per_span;
            let end = r.end.map_or(spans, |e| e.div_ceil(per_span).min(spans));
            if first >= end || !self.missing_spans_in(meta.id, first..end)?.is_empty() {
                return Ok(false);
            }
            for span in first..end {
                nodes.extend(
                    tree_partial::nodes_above(
                        span * per_span..(span + 1) * per_span,
                        total,
                        per_span,
                    )
                    .into_iter()
                    .map(|n| above_key(meta.id, &n)),
                );
            }
        }
        let cf = self.cf(CF_ABOVE);
        for found in self
            .db
            .multi_get_cf(nodes.iter().map(|k| (cf, k.as_slice())))
        {
            if found?.is_none() {
                return Ok(false);
            }
        }
        Ok(true)
    }
}
