//! Building a blob's outboard from the outboards of its pieces.
//!
//! A blob fetched from peers arrives span by span, out of order. Hashing it again once it
//! is complete costs a full read of the data (3.5 s for 1 GiB here, most of a loopback
//! fetch). Instead, each span's own subtree outboard is kept beside it (the verified pairs
//! of the response, placed with [`pair_index`], or [`subtree_outboard`] of the span while
//! it is in memory), and at the end [`assemble_outboard`]
//! stitches those together, hashing only the few nodes above the spans (and reading the
//! data of any span whose subtree was not kept). The result is byte-identical to
//! [`crate::tree::compute_outboard`].
//!
//! A span qualifies when it is a complete subtree of the blob's tree: its size is a power
//! of two number of chunk groups (two or more) and it starts at a multiple of its size.
//! Every aligned power-of-two range wholly inside the blob is a node of a BLAKE3 tree.

use std::io::{self, Write};

use blake3::hazmat::{
    merge_subtrees_non_root, merge_subtrees_root, ChainingValue, HasherExt, Mode,
};

use crate::{
    tree::{CHUNK_GROUP_BYTES, HASH_PAIR_BYTES},
    Hash,
};

/// Where [`assemble_outboard`] gets what it needs.
pub trait SubtreeSource {
    /// The blob's bytes at `offset..offset + len` (at most one chunk group).
    fn data(&mut self, offset: u64, len: u64) -> io::Result<Vec<u8>>;
    /// The kept post-order outboard of the complete subtree `offset..offset + len`, if
    /// any. Only asked for subtrees of [`SubtreeSource::kept_len`] bytes.
    fn pairs(&mut self, offset: u64, len: u64) -> io::Result<Option<Vec<u8>>>;
    /// The size of the subtrees whose outboards are kept (a span), or 0 for none.
    fn kept_len(&self) -> u64;
}

/// Whether a piece of `len` bytes at multiples of `len` is a subtree worth keeping.
pub fn is_subtree_len(len: u64) -> bool {
    len >= 2 * CHUNK_GROUP_BYTES && len.is_power_of_two()
}

/// The post-order outboard of the complete subtree holding `data` at byte `offset` of a
/// larger blob (`data.len()` satisfies [`is_subtree_len`], `offset` is a multiple of it).
pub fn subtree_outboard(offset: u64, data: &[u8]) -> Vec<u8> {
    let mut pairs = Vec::with_capacity(
        ((data.len() as u64 / CHUNK_GROUP_BYTES).saturating_sub(1) * HASH_PAIR_BYTES) as usize,
    );
    let mut source = Memory { offset, data };
    // Writing into a Vec cannot fail, and Memory serves every range it is asked for.
    let _ = chaining_value(&mut source, offset, data.len() as u64, &mut pairs);
    pairs
}

/// Where the pair of the node covering chunk groups `start..start + len` goes in the
/// post-order outboard of a complete subtree whose first group is 0 (`start` relative to
/// it, `len` a power of two of at least 2): the internal nodes wholly before it
/// (`start - popcount(start)`), then its own subtree's, itself last.
pub fn pair_index(start: u64, len: u64) -> u64 {
    start - u64::from(start.count_ones()) + len - 2
}

/// Where the pairs of the complete subtree at bytes `offset..offset + len` of a blob lie
/// in the blob's whole post-order outboard: one run of `len / 16 KiB - 1` pairs after the
/// internal nodes wholly before it. So a span's [`subtree_outboard`] can be cut out of an
/// outboard that came with the data (a bundle's) instead of hashing the span again.
pub fn subtree_pairs_in_outboard(offset: u64, len: u64) -> std::ops::Range<u64> {
    let first = offset / CHUNK_GROUP_BYTES;
    let groups = len / CHUNK_GROUP_BYTES;
    let start = (first - u64::from(first.count_ones())) * HASH_PAIR_BYTES;
    start..start + (groups - 1) * HASH_PAIR_BYTES
}

/// Streams the post-order outboard of a blob of `size` bytes into `out`, from the kept
/// subtree outboards and, where none was kept, from the data. Returns the root hash, which
/// the caller compares with the blob's hash: a wrong top pair of a kept subtree changes it.
/// Pairs deeper in a kept subtree do not reach the root; they were computed from verified
/// data, are stored under RocksDB's block checksums, and `verify` checks every chunk group
/// against them.
pub fn assemble_outboard(
    source: &mut impl SubtreeSource,
    size: u64,
    out: &mut impl Write,
) -> io::Result<Hash> {
    if size <= CHUNK_GROUP_BYTES {
        let data = source.data(0, size)?;
        return Ok(Hash::from(blake3::hash(&data)));
    }
    let left = left_len(size);
    let l = chaining_value(source, 0, left, out)?;
    let r = chaining_value(source, left, size - left, out)?;
    out.write_all(&l)?;
    out.write_all(&r)?;
    Ok(Hash::from(merge_subtrees_root(&l, &r, Mode::Hash)))
}

/// BLAKE3's split: the left subtree holds the largest power of two of chunks that leaves
/// at least one byte on the right.
fn left_len(len: u64) -> u64 {
    blake3::hazmat::left_subtree_len(len)
}

/// The non-root chaining value of `offset..offset + len`, writing its outboard pairs.
fn chaining_value(
    source: &mut impl SubtreeSource,
    offset: u64,
    len: u64,
    out: &mut impl Write,
) -> io::Result<ChainingValue> {
    if len <= CHUNK_GROUP_BYTES {
        let data = source.data(offset, len)?;
        return Ok(blake3::Hasher::new()
            .set_input_offset(offset)
            .update(&data)
            .finalize_non_root());
    }
    if len == source.kept_len() && offset.is_multiple_of(len) {
        if let Some(pairs) = source.pairs(offset, len)? {
            let expected = (len / CHUNK_GROUP_BYTES - 1) * HASH_PAIR_BYTES;
            if pairs.len() as u64 == expected {
                out.write_all(&pairs)?;
                let last = &pairs[pairs.len() - HASH_PAIR_BYTES as usize..];
                let (l, r) = last.split_at(32);
                let l: ChainingValue = l.try_into().map_err(io::Error::other)?;
                let r: ChainingValue = r.try_into().map_err(io::Error::other)?;
                return Ok(merge_subtrees_non_root(&l, &r, Mode::Hash));
            }
        }
    }
    let left = left_len(len);
    let l = chaining_value(source, offset, left, out)?;
    let r = chaining_value(source, offset + left, len - left, out)?;
    out.write_all(&l)?;
    out.write_all(&r)?;
    Ok(merge_subtrees_non_root(&l, &r, Mode::Hash))
}

/// The pair (left and right child chaining values) of the tree node over `data`, which
/// starts at byte `offset` of its blob and splits after `half` bytes. For nodes whose pair
/// was not kept: the caller checks the result against the node's parent.
pub fn node_pair(offset: u64, data: &[u8], half: u64) -> [u8; 64] {
    let mut source = Memory { offset, data };
    let len = data.len() as u64;
    if half == 0 || half >= len {
        return [0; 64]; // not a node with two children: a pair that never verifies
    }
    // Memory serves every range inside `data`; the outboard pairs go nowhere.
    let mut sink = io::sink();
    let l = chaining_value(&mut source, offset, half, &mut sink).unwrap_or_default();
    let r = chaining_value(&mut source, offset + half, len - half, &mut sink).unwrap_or_default();
    let mut pair = [0u8; 64];
    pair[..32].copy_from_slice(&l);
    pair[32..].copy_from_slice(&r);
    pair
}

/// A subtree held in memory, with nothing kept.
struct Memory<'a> {
    offset: u64,
    data: &'a [u8],
}

impl SubtreeSource for Memory<'_> {
    fn data(&mut self, offset: u64, len: u64) -> io::Result<Vec<u8>> {
        let start = (offset - self.offset) as usize;
        Ok(self.data[start..start + len as usize].to_vec())
    }
    fn pairs(&mut self, _offset: u64, _len: u64) -> io::Result<Option<Vec<u8>>> {
        Ok(None)
    }
    fn kept_len(&self) -> u64 {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::compute_outboard;

    #[test]
    fn a_subtree_outboard_is_a_run_of_the_whole_outboard() {
        // Odd sizes too: the tree's right edge is not complete there.
        for size in [1_048_576u64, 1_300_000, 5 * 262_144 + 17] {
            let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            let mut whole = Vec::new();
            compute_outboard(&data[..], size, &mut whole).expect("test step");
            for len in [2 * CHUNK_GROUP_BYTES, 262_144] {
                let mut offset = 0;
                while offset + len <= size {
                    let range = subtree_pairs_in_outboard(offset, len);
                    let expected =
                        subtree_outboard(offset, &data[offset as usize..(offset + len) as usize]);
                    assert_eq!(
                        &whole[range.start as usize..range.end as usize],
                        &expected[..],
                        "size {size}, span {offset}+{len}"
                    );
                    offset += len;
                }
            }
        }
    }

    /// A blob in memory whose spans' outboards are kept, except those listed.
    struct Spans<'a> {
        data: &'a [u8],
        span: u64,
        missing: Vec<u64>,
        reads: u64,
    }

    impl SubtreeSource for Spans<'_> {
        fn data(&mut self, offset: u64, len: u64) -> io::Result<Vec<u8>> {
            self.reads += len;
            Ok(self.data[offset as usize..(offset + len) as usize].to_vec())
        }
        fn pairs(&mut self, offset: u64, len: u64) -> io::Result<Option<Vec<u8>>> {
            let index = offset / self.span;
            let end = (offset + len) as usize;
            if self.missing.contains(&index) || end > self.data.len() {
                return Ok(None);
            }
            Ok(Some(subtree_outboard(
                offset,
                &self.data[offset as usize..end],
            )))
        }
        fn kept_len(&self) -> u64 {
            self.span
        }
    }

    fn data(size: usize) -> Vec<u8> {
        (0..size)
            .map(|i| (i * 31 % 253) as u8 ^ (i >> 12) as u8)
            .collect()
    }

    #[test]
    fn assembled_outboards_equal_computed_ones_for_every_shape() {
        let span = 4 * CHUNK_GROUP_BYTES;
        for size in [
            0u64,
            1,
            16 * 1024,
            16 * 1024 + 1,
            span - 1,
            span,
            span + 1,
            3 * span,
            3 * span + 5000,
            8 * span,
            13 * span + 16 * 1024,
        ] {
            let bytes = data(size as usize);
            let mut expected = Vec::new();
            let root = compute_outboard(&bytes[..], size, &mut expected).expect("compute");
            for missing in [vec![], vec![0, 2]] {
                let mut source = Spans {
                    data: &bytes,
                    span,
                    missing: missing.clone(),
                    reads: 0,
                };
                let mut got = Vec::new();
                let assembled = assemble_outboard(&mut source, size, &mut got).expect("assemble");
                assert_eq!(assembled, root, "size {size}, missing {missing:?}");
                assert!(
                    got == expected,
                    "outboard of size {size}, missing {missing:?}"
                );
                let whole_spans = size / span;
                if missing.is_empty() && whole_spans > 0 && size > span {
                    assert!(
                        source.reads <= size - whole_spans * span,
                        "size {size}: read {} bytes, only the tail needs reading",
                        source.reads
                    );
                }
            }
        }
    }

    #[test]
    fn pairs_from_a_response_fill_each_span_outboard_at_their_index() {
        use crate::{
            tree::encode_verified,
            wire::{verify_response_items, VerifiedItem},
        };
        let span = 4 * CHUNK_GROUP_BYTES;
        let groups_per_span = span / CHUNK_GROUP_BYTES;
        let bytes = data(5 * span as usize + 3000);
        let size = bytes.len() as u64;
        let mut outboard = Vec::new();
        let root = compute_outboard(&bytes[..], size, &mut outboard).expect("compute");
        let all = bao_tree::ChunkRanges::all();
        let mut encoded = Vec::new();
        encode_verified(root, size, &bytes[..], &outboard[..], &all, &mut encoded).expect("encode");
        let mut kept = vec![vec![0u8; ((groups_per_span - 1) * 64) as usize]; 5];
        for item in verify_response_items(root, size, &all, &encoded[..]) {
            if let VerifiedItem::Parent { groups, pair } = item.expect("verifies") {
                let index = groups.start / groups_per_span;
                let len = groups.end - groups.start;
                if len <= groups_per_span && index < 5 {
                    let at = pair_index(groups.start - index * groups_per_span, len) as usize * 64;
                    kept[index as usize][at..at + 64].copy_from_slice(&pair);
                }
            }
        }
        for (i, pairs) in kept.iter().enumerate() {
            let start = i * span as usize;
            let expected = subtree_outboard(start as u64, &bytes[start..start + span as usize]);
            assert!(*pairs == expected, "span {i}");
        }
    }

    #[test]
    fn a_damaged_kept_outboard_changes_the_root() {
        let span = 4 * CHUNK_GROUP_BYTES;
        let bytes = data(3 * span as usize);
        let mut ignore = Vec::new();
        let root = compute_outboard(&bytes[..], bytes.len() as u64, &mut ignore).expect("compute");
        struct Damaged<'a>(Spans<'a>);
        impl SubtreeSource for Damaged<'_> {
            fn data(&mut self, offset: u64, len: u64) -> io::Result<Vec<u8>> {
                self.0.data(offset, len)
            }
            fn pairs(&mut self, offset: u64, len: u64) -> io::Result<Option<Vec<u8>>> {
                let mut pairs = self.0.pairs(offset, len)?;
                if let Some(p) = pairs.as_mut() {
                    // The subtree's own pair: its chaining value, hence the root, changes.
                    let last = p.len() - 1;
                    p[last] ^= 1;
                }
                Ok(pairs)
            }
            fn kept_len(&self) -> u64 {
                self.0.span
            }
        }
        let mut source = Damaged(Spans {
            data: &bytes,
            span,
            missing: vec![],
            reads: 0,
        });
        let got =
            assemble_outboard(&mut source, bytes.len() as u64, &mut Vec::new()).expect("runs");
        assert_ne!(got, root);
    }
}
