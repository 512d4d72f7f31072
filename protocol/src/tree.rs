//! Verified chunk trees: BLAKE3 trees over 16 KiB chunk groups, via `bao-tree`.
//!
//! A blob's *outboard* holds the hash pairs of its tree above the chunk groups, in post
//! order (64 bytes per 16 KiB group, about 0.4 % of the data). With the root hash, the
//! outboard lets anyone check any 16 KiB group on its own: that is what makes stored data
//! re-checkable and, later, every range a peer sends verifiable on arrival.
//!
//! The functions here take plain `Read`/`Write`/`ReadAt` values; the node decides where the
//! bytes live.

use std::{
    io::{self, Read, Write},
    ops::Range,
};

use bao_tree::{
    io::{
        outboard::PostOrderOutboard,
        sync::{encode_ranges_validated, outboard_post_order, valid_ranges},
        EncodeError,
    },
    iter::{BaoChunk, PreOrderPartialChunkIterRef},
    BaoTree, BlockSize, ChunkNum, ChunkRanges, ChunkRangesRef,
};

pub use bao_tree::io::sync::ReadAt;

/// Fills `buf` from `data` at `offset`; a short source is an `UnexpectedEof` error.
pub fn read_exact_at(data: &impl ReadAt, offset: u64, buf: &mut [u8]) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = data.read_at(offset + filled as u64, &mut buf[filled..])?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        filled += n;
    }
    Ok(())
}

use crate::Hash;

/// Chunk groups of 2^4 BLAKE3 chunks: 16 KiB is the unit of verification.
pub const BLOCK_SIZE: BlockSize = BlockSize::from_chunk_log(4);

/// Bytes in one chunk group, the smallest piece that can be verified on its own.
pub const CHUNK_GROUP_BYTES: u64 = 16 * 1024;

/// Bytes of outboard per hash pair (two 32-byte BLAKE3 chaining values).
pub const HASH_PAIR_BYTES: u64 = 64;

/// The tree geometry of a blob of `size` bytes.
pub fn blob_tree(size: u64) -> BaoTree {
    BaoTree::new(size, BLOCK_SIZE)
}

/// Size in bytes of the post-order outboard of a blob of `size` bytes. Zero for blobs of
/// one chunk group or less: their root hash alone verifies them.
pub fn outboard_size(size: u64) -> u64 {
    blob_tree(size).outboard_size()
}

/// Hashes exactly `size` bytes from `data`, streaming the post-order outboard into
/// `outboard` as it goes. Returns the blob's root hash. Memory use is one chunk group plus
/// the tree's stack, whatever the size.
pub fn compute_outboard(data: impl Read, size: u64, outboard: impl Write) -> io::Result<Hash> {
    outboard_post_order(data, blob_tree(size), outboard).map(Hash::from)
}

/// Why stored data could not be read back as verified.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The bytes of the chunk group at `offset` do not hash to what the tree says.
    #[error("data at byte offset {offset} does not match its hash")]
    DataMismatch {
        /// Byte offset of the first byte of the bad chunk group.
        offset: u64,
    },
    /// The outboard itself is damaged (a hash pair does not match its parent).
    #[error("the hash tree is damaged near byte offset {offset}")]
    OutboardMismatch {
        /// Byte offset of the first byte covered by the damaged tree node.
        offset: u64,
    },
    /// Reading the data or outboard, or writing the output, failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Copies a whole blob from `data` to `out`, checking every chunk group against the tree
/// (`root`, `size`, post-order `outboard`) *before* it is written. On a mismatch nothing of
/// the bad group reaches `out`, and the error names its offset. Returns the bytes written.
pub fn copy_verified(
    root: Hash,
    size: u64,
    data: impl ReadAt,
    outboard: impl ReadAt,
    out: impl Write,
) -> Result<u64, VerifyError> {
    let tree = blob_tree(size);
    let outboard = PostOrderOutboard {
        root: root.into(),
        tree,
        data: outboard,
    };
    let all = ChunkRanges::all();
    let mut sink = LeafWriter::new(tree, &all, 0..u64::MAX, out);
    encode_ranges_validated(data, &outboard, &all, &mut sink).map_err(verify_error)?;
    Ok(sink.written)
}

/// Writes the bytes `range` of a blob to `out` (clipped to the blob), verifying every chunk
/// group the range touches before any of its bytes is written: what an HTTP `Range` request
/// is answered from. Reads only those groups and the pairs above them. Returns the number
/// of bytes written.
pub fn copy_range_verified(
    root: Hash,
    size: u64,
    data: impl ReadAt,
    outboard: impl ReadAt,
    range: Range<u64>,
    out: impl Write,
) -> Result<u64, VerifyError> {
    let range = range.start.min(size)..range.end.min(size);
    if range.is_empty() && size > 0 {
        return Ok(0);
    }
    let tree = blob_tree(size);
    let outboard = PostOrderOutboard {
        root: root.into(),
        tree,
        data: outboard,
    };
    // Whole chunk groups around the range: the unit that can be verified.
    let first = range.start / CHUNK_GROUP_BYTES * (CHUNK_GROUP_BYTES / 1024);
    let end = range.end.div_ceil(CHUNK_GROUP_BYTES) * (CHUNK_GROUP_BYTES / 1024);
    let chunks = ChunkRanges::from(ChunkNum(first)..ChunkNum(end.max(first + 1)));
    let mut sink = LeafWriter::new(tree, &chunks, range, out);
    encode_ranges_validated(data, &outboard, &chunks, &mut sink).map_err(verify_error)?;
    Ok(sink.written)
}

/// Writes the Bao encoding of `ranges` of a blob (pre-order parent pairs and chunk groups,
/// the wire format of `docs/protocol.md`) to `out`, checking every group against the tree
/// before it is written: a node never serves bytes that do not verify.
pub fn encode_verified(
    root: Hash,
    size: u64,
    data: impl ReadAt,
    outboard: impl ReadAt,
    ranges: &ChunkRanges,
    out: impl Write,
) -> Result<(), VerifyError> {
    let outboard = PostOrderOutboard {
        root: root.into(),
        tree: blob_tree(size),
        data: outboard,
    };
    encode_ranges_validated(data, &outboard, ranges, out).map_err(verify_error)
}

pub(crate) fn verify_error(e: EncodeError) -> VerifyError {
    match e {
        EncodeError::LeafHashMismatch(chunk) => VerifyError::DataMismatch {
            offset: chunk.to_bytes(),
        },
        EncodeError::ParentHashMismatch(node) => VerifyError::OutboardMismatch {
            offset: node.chunk_range().start.0 * CHUNK_GROUP_BYTES,
        },
        EncodeError::Io(e) => VerifyError::Io(e),
        other => VerifyError::Io(io::Error::other(other.to_string())),
    }
}

/// Byte ranges of a blob whose chunk groups do *not* verify against the tree: empty for a
/// healthy blob. Unlike [`copy_verified`] this keeps going past the first bad group, so a
/// report can list every damaged range.
pub fn corrupt_ranges(
    root: Hash,
    size: u64,
    data: impl ReadAt,
    outboard: impl ReadAt,
) -> io::Result<Vec<Range<u64>>> {
    let tree = blob_tree(size);
    let outboard = PostOrderOutboard {
        root: root.into(),
        tree,
        data: outboard,
    };
    let mut bad = Vec::new();
    let mut next_good_start = 0u64;
    for valid in valid_ranges(&outboard, data, &ChunkRanges::all()) {
        let valid = valid?;
        let start = valid.start.to_bytes().min(size);
        let end = valid.end.to_bytes().min(size);
        if start > next_good_start {
            bad.push(next_good_start..start);
        }
        next_good_start = end;
    }
    // An empty blob has no chunks to report as valid, and nothing can be corrupt in it.
    if next_good_start < size {
        bad.push(next_good_start..size);
    }
    Ok(bad)
}

/// A `Write` that receives a full-range Bao encoding (pre-order parent pairs interleaved
/// with chunk groups) and passes only the chunk-group bytes on. It walks the same traversal
/// as the encoder, so it knows at every byte whether it is inside a parent pair or inside
/// data, however the encoder splits its writes. Constant memory: the traversal is lazy.
struct LeafWriter<'a, W> {
    items: PreOrderPartialChunkIterRef<'a>,
    /// Bytes left in the current item, and whether that item is data.
    remaining: usize,
    in_data: bool,
    /// Blob offset of the next data byte.
    pos: u64,
    /// Only data bytes at these blob offsets are passed on.
    window: Range<u64>,
    out: W,
    written: u64,
}

impl<'a, W: Write> LeafWriter<'a, W> {
    fn new(tree: BaoTree, ranges: &'a ChunkRangesRef, window: Range<u64>, out: W) -> Self {
        Self {
            items: tree.ranges_pre_order_chunks_iter_ref(ranges, 0),
            remaining: 0,
            in_data: false,
            pos: 0,
            window,
            out,
            written: 0,
        }
    }
}

impl<W: Write> Write for LeafWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut rest = buf;
        while !rest.is_empty() {
            if self.remaining == 0 {
                (self.in_data, self.remaining) = match self.items.next() {
                    Some(BaoChunk::Parent { .. }) => (false, HASH_PAIR_BYTES as usize),
                    Some(BaoChunk::Leaf {
                        size, start_chunk, ..
                    }) => {
                        self.pos = start_chunk.to_bytes();
                        (true, size)
                    }
                    None => return Err(io::Error::other("encoder wrote past the end of the tree")),
                };
                continue;
            }
            let n = self.remaining.min(rest.len());
            if self.in_data {
                let here = self.pos..self.pos + n as u64;
                let from = here.start.max(self.window.start);
                let to = here.end.min(self.window.end);
                if from < to {
                    let slice = &rest[(from - here.start) as usize..(to - here.start) as usize];
                    self.out.write_all(slice)?;
                    self.written += slice.len() as u64;
                }
                self.pos = here.end;
            }
            self.remaining -= n;
            rest = &rest[n..];
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(size: usize) -> Vec<u8> {
        (0..size)
            .map(|i| (i % 251) as u8 ^ (i / 7919) as u8)
            .collect()
    }

    fn outboard_of(data: &[u8]) -> (Hash, Vec<u8>) {
        let mut ob = Vec::new();
        let root = compute_outboard(data, data.len() as u64, &mut ob).expect("in-memory");
        (root, ob)
    }

    const EDGE_SIZES: &[usize] = &[
        0,
        1,
        1023,
        1024,
        1025,
        16383,
        16384,
        16385,
        32768,
        65537,
        1 << 20,
    ];

    #[test]
    fn root_is_plain_blake3_and_outboard_has_the_documented_size() {
        for &size in EDGE_SIZES {
            let data = pattern(size);
            let (root, ob) = outboard_of(&data);
            assert_eq!(root, Hash::of(&data), "size {size}");
            assert_eq!(ob.len() as u64, outboard_size(size as u64), "size {size}");
        }
        assert_eq!(outboard_size(16384), 0);
        assert_eq!(outboard_size(16385), 64);
    }

    #[test]
    fn copy_verified_round_trips_every_edge_size() {
        for &size in EDGE_SIZES {
            let data = pattern(size);
            let (root, ob) = outboard_of(&data);
            let mut out = Vec::new();
            let n = copy_verified(root, size as u64, &data[..], &ob[..], &mut out)
                .expect("healthy data verifies");
            assert_eq!(n, size as u64);
            assert_eq!(out, data, "size {size}");
            assert!(corrupt_ranges(root, size as u64, &data[..], &ob[..])
                .expect("in-memory")
                .is_empty());
        }
    }

    #[test]
    fn any_byte_range_copies_verified() {
        let size = 5 * CHUNK_GROUP_BYTES as usize + 100;
        let data = pattern(size);
        let (root, ob) = outboard_of(&data);
        let g = CHUNK_GROUP_BYTES as usize;
        for range in [
            0..1,
            0..size,
            1..2,
            g - 1..g + 1,
            3 * g + 5..size,
            size - 1..size,
            7..7,
        ] {
            let mut out = Vec::new();
            let n = copy_range_verified(
                root,
                size as u64,
                &data[..],
                &ob[..],
                range.start as u64..range.end as u64,
                &mut out,
            )
            .expect("healthy data verifies");
            assert_eq!(out, data[range.clone()], "{range:?}");
            assert_eq!(n, range.len() as u64);
        }
        // A corrupt group inside the range stops the copy before its bytes; one outside it
        // is never read.
        let mut bad = data.clone();
        bad[2 * g + 3] ^= 1;
        let mut out = Vec::new();
        let err = copy_range_verified(
            root,
            size as u64,
            &bad[..],
            &ob[..],
            10..3 * g as u64,
            &mut out,
        )
        .expect_err("corruption in range");
        assert!(matches!(err, VerifyError::DataMismatch { offset } if offset == 2 * g as u64));
        assert_eq!(out, data[10..2 * g]);
        let mut out = Vec::new();
        copy_range_verified(
            root,
            size as u64,
            &bad[..],
            &ob[..],
            4 * g as u64..4 * g as u64 + 9,
            &mut out,
        )
        .expect("the bad group is outside the range");
        assert_eq!(out, data[4 * g..4 * g + 9]);
        // An empty blob has one (empty) group, checked against the root.
        let (root0, ob0) = outboard_of(&[]);
        let mut out = Vec::new();
        assert_eq!(
            copy_range_verified(root0, 0, &[][..], &ob0[..], 0..0, &mut out).expect("empty"),
            0
        );
    }

    #[test]
    fn a_flipped_byte_is_caught_before_it_is_written() {
        let size = 5 * CHUNK_GROUP_BYTES as usize + 100;
        let data = pattern(size);
        let (root, ob) = outboard_of(&data);
        let mut bad = data.clone();
        let flipped_at = 3 * CHUNK_GROUP_BYTES as usize + 77;
        bad[flipped_at] ^= 1;

        let mut out = Vec::new();
        let err = copy_verified(root, size as u64, &bad[..], &ob[..], &mut out)
            .expect_err("corruption must be detected");
        assert!(
            matches!(err, VerifyError::DataMismatch { offset } if offset == 3 * CHUNK_GROUP_BYTES),
            "{err:?}"
        );
        // Only the three good groups before the bad one were written, none of its bytes.
        assert_eq!(out, data[..3 * CHUNK_GROUP_BYTES as usize]);

        let ranges = corrupt_ranges(root, size as u64, &bad[..], &ob[..]).expect("in-memory");
        assert_eq!(ranges, vec![3 * CHUNK_GROUP_BYTES..4 * CHUNK_GROUP_BYTES]);
    }

    #[test]
    fn a_wrong_root_fails_even_for_a_single_group_blob() {
        let data = pattern(1000);
        let (_, ob) = outboard_of(&data);
        let wrong = Hash::of(b"something else");
        let err = copy_verified(wrong, 1000, &data[..], &ob[..], &mut Vec::new())
            .expect_err("wrong root");
        assert!(
            matches!(err, VerifyError::DataMismatch { offset: 0 }),
            "{err:?}"
        );
        assert_eq!(
            corrupt_ranges(wrong, 1000, &data[..], &ob[..]).expect("in-memory"),
            vec![0..1000]
        );
    }

    #[test]
    fn a_damaged_outboard_is_reported() {
        let size = 8 * CHUNK_GROUP_BYTES as usize;
        let data = pattern(size);
        let (root, mut ob) = outboard_of(&data);
        ob[0] ^= 0xff;
        let err = copy_verified(root, size as u64, &data[..], &ob[..], &mut Vec::new())
            .expect_err("damaged outboard");
        assert!(
            matches!(
                err,
                VerifyError::OutboardMismatch { .. } | VerifyError::DataMismatch { .. }
            ),
            "{err:?}"
        );
    }
}
