//! Reading blobs back out of the store, always through the hash tree.
//!
//! [`RowReader`] presents a blob's rows (data spans or outboard pieces) as one random-access
//! byte range, which is what `bao-tree` verifies against. Nothing leaves the store without
//! passing `commons_protocol::tree`'s checks first.

use std::{cell::RefCell, io, ops::Range};

use bao_tree::ChunkRanges;
use commons_protocol::{
    manifest::MAX_MANIFEST_BYTES,
    tree::{self, ReadAt, VerifyError},
    Hash, Manifest,
};

use super::{layout::*, Result, Store, StoreError};

/// A row that should exist but does not: the store lost data (or was tampered with).
#[derive(Debug)]
struct MissingRow {
    offset: u64,
}

impl std::fmt::Display for MissingRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "stored bytes missing at offset {}", self.offset)
    }
}

impl std::error::Error for MissingRow {}

/// Random access over the rows of one blob in one column family. Keeps the last row it
/// read, since the verifier reads a 256 KiB span 16 KiB at a time.
pub(super) struct RowReader<'a> {
    store: &'a Store,
    cf: &'static str,
    id: BlobId,
    len: u64,
    row_bytes: u64,
    /// For `verify`: treat a missing row as zeros so it is reported as a corrupt range
    /// instead of stopping the scan.
    missing_as_zeros: bool,
    /// The last row read: its index and its bytes, pinned in RocksDB's buffer (no copy).
    cache: RefCell<Option<(u64, Row<'a>)>>,
}

/// One row's bytes: as RocksDB holds them, or zeros standing in for a missing row.
enum Row<'a> {
    Pinned(rocksdb::DBPinnableSlice<'a>),
    Zeros(Vec<u8>),
}

impl std::ops::Deref for Row<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Row::Pinned(slice) => slice,
            Row::Zeros(zeros) => zeros,
        }
    }
}

impl<'a> RowReader<'a> {
    pub(super) fn new(
        store: &'a Store,
        cf: &'static str,
        id: BlobId,
        len: u64,
        row_bytes: u64,
    ) -> Self {
        Self {
            store,
            cf,
            id,
            len,
            row_bytes,
            missing_as_zeros: false,
            cache: RefCell::new(None),
        }
    }
}

impl ReadAt for RowReader<'_> {
    fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<usize> {
        if pos >= self.len || buf.is_empty() {
            return Ok(0);
        }
        let index = pos / self.row_bytes;
        let mut cache = self.cache.borrow_mut();
        if cache.as_ref().map(|(i, _)| *i) != Some(index) {
            let key = span_key(self.id, index);
            // Drop the previous row first: RocksDB can release its buffer.
            *cache = None;
            let row = self
                .store
                .db
                .get_pinned_cf(self.store.cf(self.cf), key)
                .map_err(io::Error::other)?;
            let row = match row {
                Some(row) => Row::Pinned(row),
                None if self.missing_as_zeros => {
                    let start = index * self.row_bytes;
                    Row::Zeros(vec![0; (self.len - start).min(self.row_bytes) as usize])
                }
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        MissingRow {
                            offset: index * self.row_bytes,
                        },
                    ))
                }
            };
            *cache = Some((index, row));
        }
        let Some((_, row)) = cache.as_ref() else {
            return Ok(0);
        };
        let offset = (pos - index * self.row_bytes) as usize;
        // A row shorter than it should be reads as a short read, which the verifier
        // turns into an error for that chunk group.
        let available = row.get(offset..).unwrap_or_default();
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        Ok(n)
    }
}

/// Maps a verification failure to the store's error: bad or missing stored bytes are
/// corruption; anything else came from the output.
fn verify_failure(hash: &Hash, e: VerifyError) -> StoreError {
    match e {
        VerifyError::DataMismatch { offset } | VerifyError::OutboardMismatch { offset } => {
            StoreError::Corrupt {
                hash: *hash,
                offset,
            }
        }
        VerifyError::Io(e) => match e.get_ref().and_then(|e| e.downcast_ref::<MissingRow>()) {
            Some(missing) => StoreError::Corrupt {
                hash: *hash,
                offset: missing.offset,
            },
            None => StoreError::Output(e),
        },
        other => StoreError::Output(io::Error::other(other.to_string())),
    }
}

/// The readers for one complete blob: its data and its outboard.
pub struct BlobReader<'a> {
    /// The blob's address.
    pub hash: Hash,
    /// Its size in bytes.
    pub size: u64,
    data: RowReader<'a>,
    outboard: RowReader<'a>,
}

/// One damaged range found by [`Store::verify_blob`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobCorruption {
    /// The blob.
    pub hash: Hash,
    /// Byte range whose chunk groups fail verification.
    pub range: Range<u64>,
}

impl Store {
    /// Readers over a complete blob; fails for unknown or partial blobs.
    pub fn blob_reader(&self, hash: &Hash) -> Result<BlobReader<'_>> {
        let meta = self
            .blob(hash)?
            .ok_or(StoreError::NotFound { hash: *hash })?;
        self.reader_for(hash, meta)
    }

    /// Readers over blob `hash` whose metadata the caller has already read.
    fn reader_for(&self, hash: &Hash, meta: BlobMeta) -> Result<BlobReader<'_>> {
        if meta.state != BlobState::Complete {
            return Err(StoreError::NotComplete { hash: *hash });
        }
        Ok(BlobReader {
            hash: *hash,
            size: meta.size,
            data: RowReader::new(self, CF_DATA, meta.id, meta.size, self.span_bytes),
            outboard: RowReader::new(
                self,
                CF_OUTBOARDS,
                meta.id,
                tree::outboard_size(meta.size),
                OUTBOARD_PIECE_BYTES,
            ),
        })
    }

    /// Writes a complete blob's outboard (post-order hash tree) to `out`; returns its size.
    /// Not checked here: it is checked with the data ([`Store::read_blob_verified`]).
    pub fn read_outboard(&self, hash: &Hash, mut out: impl io::Write) -> Result<u64> {
        let reader = self.blob_reader(hash)?;
        let size = tree::outboard_size(reader.size);
        let mut buf = vec![0u8; OUTBOARD_PIECE_BYTES as usize];
        let mut pos = 0;
        while pos < size {
            let n = (size - pos).min(buf.len() as u64) as usize;
            tree::read_exact_at(&reader.outboard, pos, &mut buf[..n])
                .map_err(StoreError::Output)?;
            out.write_all(&buf[..n]).map_err(StoreError::Output)?;
            pos += n as u64;
        }
        Ok(size)
    }

    /// Writes a complete blob to `out`, verifying every chunk group before it is written.
    /// A corrupt group stops the copy with [`StoreError::Corrupt`]; none of its bytes are
    /// written. Returns the number of bytes written.
    pub fn read_blob_verified(&self, hash: &Hash, out: impl io::Write) -> Result<u64> {
        let reader = self.blob_reader(hash)?;
        tree::copy_verified(*hash, reader.size, &reader.data, &reader.outboard, out)
            .map_err(|e| verify_failure(hash, e))
    }

    /// Writes bytes `range` of a complete blob to `out` (clipped to its size), verifying
    /// every chunk group the range touches before any of its bytes is written. Returns the
    /// number of bytes written.
    pub fn read_range_verified(
        &self,
        hash: &Hash,
        range: Range<u64>,
        out: impl io::Write,
    ) -> Result<u64> {
        let reader = self.blob_reader(hash)?;
        tree::copy_range_verified(
            *hash,
            reader.size,
            &reader.data,
            &reader.outboard,
            range,
            out,
        )
        .map_err(|e| verify_failure(hash, e))
    }

    /// Writes the Bao encoding of `ranges` of a blob (the transfer protocol's data format)
    /// to `out`, verifying every chunk group before it is written. A partial blob is
    /// encoded from its verified spans and kept pairs; ranges beyond them fail (check
    /// [`Store::can_serve_partial`] first).
    pub fn encode_ranges(
        &self,
        hash: &Hash,
        ranges: &ChunkRanges,
        out: impl io::Write,
    ) -> Result<()> {
        let meta = self
            .blob(hash)?
            .ok_or(StoreError::NotFound { hash: *hash })?;
        if meta.state == BlobState::Partial {
            let data = RowReader::new(self, CF_DATA, meta.id, meta.size, self.span_bytes);
            let pairs = KeptPairs {
                store: self,
                id: meta.id,
            };
            return commons_protocol::partial::encode_partial(
                *hash,
                meta.size,
                self.span_bytes,
                &data,
                pairs,
                ranges,
                out,
            )
            .map_err(|e| verify_failure(hash, e));
        }
        let reader = self.reader_for(hash, meta)?;
        tree::encode_verified(
            *hash,
            reader.size,
            &reader.data,
            &reader.outboard,
            ranges,
            out,
        )
        .map_err(|e| verify_failure(hash, e))
    }

    /// Reads and parses the manifest of dataset `root`, verified.
    pub fn read_manifest(&self, root: &Hash) -> Result<Manifest> {
        let meta = self
            .blob(root)?
            .ok_or(StoreError::NotFound { hash: *root })?;
        if meta.size > MAX_MANIFEST_BYTES {
            return Err(commons_protocol::ManifestError::TooLarge { len: meta.size }.into());
        }
        let mut bytes = Vec::with_capacity(meta.size as usize);
        self.read_blob_verified(root, &mut bytes)?;
        Ok(Manifest::from_bytes(&bytes)?)
    }

    /// Re-checks a blob against its tree and returns every damaged byte range (empty when
    /// healthy). Of a partial blob, the spans it holds are checked, each through the pairs
    /// kept with it up to the root, as a peer asking for it would check it.
    pub fn verify_blob(&self, hash: &Hash) -> Result<Vec<BlobCorruption>> {
        let meta = self
            .blob(hash)?
            .ok_or(StoreError::NotFound { hash: *hash })?;
        if meta.state != BlobState::Complete {
            return self.verify_partial(hash, &meta);
        }
        let mut reader = self.blob_reader(hash)?;
        reader.data.missing_as_zeros = true;
        reader.outboard.missing_as_zeros = true;
        let ranges = tree::corrupt_ranges(*hash, reader.size, &reader.data, &reader.outboard)
            .map_err(|source| StoreError::Io {
                path: self.path.clone(),
                source,
            })?;
        Ok(ranges
            .into_iter()
            .map(|range| BlobCorruption { hash: *hash, range })
            .collect())
    }
}

impl Store {
    /// [`Store::verify_blob`] of a partial blob: every held span is encoded as for a peer,
    /// which checks each group against the kept pairs and those against the root.
    fn verify_partial(&self, hash: &Hash, meta: &BlobMeta) -> Result<Vec<BlobCorruption>> {
        let per_span = self.span_bytes / tree::CHUNK_GROUP_BYTES;
        let spans = self.span_count(meta.size);
        let mut held = Vec::new();
        let mut next = 0;
        for gap in self
            .missing_spans(meta.id, meta.size)?
            .into_iter()
            .chain(std::iter::once(spans..spans))
        {
            held.extend(next..gap.start);
            next = gap.end;
        }
        let mut corrupt = Vec::new();
        for span in held {
            let groups = commons_protocol::wire::GroupRange {
                start: span * per_span,
                end: Some((span + 1) * per_span),
            };
            let ranges = commons_protocol::wire::chunk_ranges(&[groups]);
            match self.encode_ranges(hash, &ranges, io::sink()) {
                Ok(()) => {}
                Err(StoreError::Corrupt { .. }) => {
                    let start = span * self.span_bytes;
                    corrupt.push(BlobCorruption {
                        hash: *hash,
                        range: start..(start + self.span_bytes).min(meta.size),
                    });
                }
                Err(e) => return Err(e),
            }
        }
        Ok(corrupt)
    }

    /// Whether `root` is a dataset held whole here: its record, its manifest and every
    /// file complete. A mirror fetches until this holds.
    pub fn dataset_complete(&self, root: &Hash) -> Result<bool> {
        let store = self;
        let complete = |h: &Hash| -> Result<bool> {
            Ok(store
                .blob(h)?
                .is_some_and(|m| m.state == BlobState::Complete))
        };
        if store.dataset(root)?.is_none() || !complete(root)? {
            return Ok(false);
        }
        for entry in store.read_manifest(root)?.entries() {
            if !complete(&entry.hash)? {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// A partial blob's kept pairs, for [`commons_protocol::partial::encode_partial`].
struct KeptPairs<'a> {
    store: &'a Store,
    id: BlobId,
}

impl commons_protocol::partial::PartialPairs for KeptPairs<'_> {
    fn above(&self, groups: &std::ops::Range<u64>) -> std::io::Result<Option<[u8; 64]>> {
        let row = self
            .store
            .db
            .get_pinned_cf(self.store.cf(CF_ABOVE), above_key(self.id, groups))
            .map_err(std::io::Error::other)?;
        Ok(row.and_then(|r| <[u8; 64]>::try_from(&r[..]).ok()))
    }

    fn span_outboard(&self, index: u64) -> std::io::Result<Option<Vec<u8>>> {
        self.store
            .db
            .get_cf(self.store.cf(CF_VERIFIED), span_key(self.id, index))
            .map_err(std::io::Error::other)
    }
}
