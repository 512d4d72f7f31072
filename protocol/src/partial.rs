//! Serving a blob held only in part: the Bao encoding of the verified spans of a blob its
//! holder is still fetching, so peers fetching the same data trade what they already have.
//!
//! A fetching node stores data span by span. With each span it keeps the span's own
//! subtree outboard ([`crate::subtree`]) and the pairs of the tree nodes above it that
//! reach into it ([`nodes_above`]), as they arrived, verified, in the response that brought
//! the span. That is every pair needed to encode any range of held spans:
//! [`encode_partial`] runs `bao-tree`'s encoder over an outboard that looks pairs up there
//! (or, for a span whose subtree was not kept, such as a short last span, hashes its data)
//! and checks every chunk group against them before it is written, exactly as for complete
//! blobs.

use std::{cell::RefCell, io, io::Write, ops::Range};

use bao_tree::{
    io::sync::{encode_ranges_validated, Outboard},
    BaoTree, ChunkRanges, TreeNode,
};

use crate::{
    subtree::{self, is_subtree_len, pair_index},
    tree::{
        blob_tree, read_exact_at, verify_error, ReadAt, VerifyError, CHUNK_GROUP_BYTES,
        HASH_PAIR_BYTES,
    },
    Hash,
};

/// Chunks per chunk group (bao-tree counts node ranges in 1 KiB chunks).
const CHUNKS_PER_GROUP: u64 = CHUNK_GROUP_BYTES / 1024;

/// Chunk groups in a blob of `size` bytes.
pub fn group_count(size: u64) -> u64 {
    size.div_ceil(CHUNK_GROUP_BYTES)
}

/// Whether the tree node over chunk groups `node` (untruncated, as `bao-tree` and
/// [`crate::wire::VerifiedItem::Parent`] give it) lies within one span of `span_groups`
/// groups, in a blob of `groups` groups. Such pairs belong to the span (its kept subtree
/// outboard, or its data); the others are kept on their own.
pub fn inside_one_span(node: &Range<u64>, groups: u64, span_groups: u64) -> bool {
    let end = node.end.min(groups);
    end > node.start && node.start / span_groups == (end - 1) / span_groups
}

/// The tree nodes (untruncated chunk-group ranges, root first) that reach into the groups
/// `span` without lying inside one span: the pairs a holder of `span` needs, beyond the
/// span's own, to serve it. Nodes whose right half is past the end of the blob are not
/// nodes of its tree (their left child takes their place) and are skipped.
pub fn nodes_above(span: Range<u64>, groups: u64, span_groups: u64) -> Vec<Range<u64>> {
    let mut out = Vec::new();
    if groups > 1 && span_groups > 0 {
        collect_above(
            0..groups.next_power_of_two(),
            &span,
            groups,
            span_groups,
            &mut out,
        );
    }
    out
}

fn collect_above(
    node: Range<u64>,
    span: &Range<u64>,
    groups: u64,
    span_groups: u64,
    out: &mut Vec<Range<u64>>,
) {
    let reaches = node.start < span.end && span.start < node.end;
    if node.start >= groups || !reaches || inside_one_span(&node, groups, span_groups) {
        return;
    }
    let mid = node.start + (node.end - node.start) / 2;
    if mid < groups {
        out.push(node.clone());
    }
    collect_above(node.start..mid, span, groups, span_groups, out);
    collect_above(mid..node.end, span, groups, span_groups, out);
}

/// Where [`encode_partial`] finds the kept pairs of a partial blob.
pub trait PartialPairs {
    /// The pair of node `groups` (one of [`nodes_above`] some held span), if kept.
    fn above(&self, groups: &Range<u64>) -> io::Result<Option<[u8; 64]>>;
    /// The kept subtree outboard of span `index` (empty or `None`: not kept).
    fn span_outboard(&self, index: u64) -> io::Result<Option<Vec<u8>>>;
}

/// Writes the Bao encoding of `ranges` of a partially held blob to `out` (the wire format of
/// a complete blob's response), checking every chunk group and pair against `root` on the
/// way. `ranges` must lie within held spans (of `span_bytes` bytes) whose
/// [`nodes_above`] pairs are kept: anything else fails with an error, never bad bytes.
pub fn encode_partial(
    root: Hash,
    size: u64,
    span_bytes: u64,
    data: impl ReadAt,
    pairs: impl PartialPairs,
    ranges: &ChunkRanges,
    out: impl Write,
) -> Result<(), VerifyError> {
    let outboard = PartialOutboard {
        root: root.into(),
        tree: blob_tree(size),
        size,
        span_bytes,
        data: &data,
        pairs,
        span_cache: RefCell::new(None),
    };
    encode_ranges_validated(&data, &outboard, ranges, out).map_err(verify_error)
}

/// A `bao-tree` outboard over the kept pairs of a partial blob.
struct PartialOutboard<'a, D, P> {
    root: blake3::Hash,
    tree: BaoTree,
    size: u64,
    span_bytes: u64,
    data: &'a D,
    pairs: P,
    /// The last span outboard read, since a span's nodes are loaded one after another.
    span_cache: RefCell<Option<(u64, Option<Vec<u8>>)>>,
}

impl<D: ReadAt, P: PartialPairs> PartialOutboard<'_, D, P> {
    fn pair(&self, groups: Range<u64>) -> io::Result<[u8; 64]> {
        let total = group_count(self.size);
        let span_groups = self.span_bytes / CHUNK_GROUP_BYTES;
        if !inside_one_span(&groups, total, span_groups) {
            // Not kept: a pair of zeros never verifies, so the encoder stops there.
            return Ok(self.pairs.above(&groups)?.unwrap_or([0; 64]));
        }
        let index = groups.start / span_groups;
        let span_start = index * self.span_bytes;
        let whole = is_subtree_len(self.span_bytes) && span_start + self.span_bytes <= self.size;
        if whole {
            let mut cache = self.span_cache.borrow_mut();
            if cache.as_ref().map(|(i, _)| *i) != Some(index) {
                *cache = Some((index, self.pairs.span_outboard(index)?));
            }
            let expected = (span_groups - 1) * HASH_PAIR_BYTES;
            if let Some((_, Some(kept))) = cache.as_ref() {
                if kept.len() as u64 == expected {
                    let at = (pair_index(
                        groups.start - index * span_groups,
                        groups.end - groups.start,
                    ) * HASH_PAIR_BYTES) as usize;
                    let mut pair = [0u8; 64];
                    pair.copy_from_slice(&kept[at..at + 64]);
                    return Ok(pair);
                }
            }
        }
        // No kept outboard (the short last span, or one stored without): hash the data of
        // this node, at most one span. The result is checked against the parent like any pair.
        let start = groups.start * CHUNK_GROUP_BYTES;
        let end = (groups.end * CHUNK_GROUP_BYTES).min(self.size);
        let half = (groups.end - groups.start) / 2 * CHUNK_GROUP_BYTES;
        let mut buf = vec![0u8; (end - start) as usize];
        read_exact_at(self.data, start, &mut buf)?;
        Ok(subtree::node_pair(start, &buf, half))
    }
}

impl<D: ReadAt, P: PartialPairs> Outboard for &PartialOutboard<'_, D, P> {
    fn root(&self) -> blake3::Hash {
        self.root
    }

    fn tree(&self) -> BaoTree {
        self.tree
    }

    fn load(&self, node: TreeNode) -> io::Result<Option<(blake3::Hash, blake3::Hash)>> {
        if self.tree.post_order_offset(node).is_none() {
            return Ok(None); // inside a chunk group: not an outboard node
        }
        let chunks = node.chunk_range();
        let groups = chunks.start.0 / CHUNKS_PER_GROUP..chunks.end.0 / CHUNKS_PER_GROUP;
        let pair = self.pair(groups)?;
        let (l, r) = pair.split_at(32);
        let l: [u8; 32] = l.try_into().map_err(io::Error::other)?;
        let r: [u8; 32] = r.try_into().map_err(io::Error::other)?;
        Ok(Some((blake3::Hash::from(l), blake3::Hash::from(r))))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::{
        tree::{compute_outboard, encode_verified},
        wire::{verify_response, verify_response_items, VerifiedItem},
    };

    const SPAN: u64 = 4 * CHUNK_GROUP_BYTES;

    fn data(size: usize) -> Vec<u8> {
        (0..size)
            .map(|i| (i * 7 % 251) as u8 ^ (i >> 13) as u8)
            .collect()
    }

    /// What a fetcher keeps from full responses: per span, its outboard, and the pairs
    /// above spans; spans not in `held` are dropped.
    #[derive(Default)]
    struct Kept {
        above: HashMap<(u64, u64), [u8; 64]>,
        spans: HashMap<u64, Vec<u8>>,
    }

    impl PartialPairs for &Kept {
        fn above(&self, groups: &Range<u64>) -> io::Result<Option<[u8; 64]>> {
            Ok(self.above.get(&(groups.start, groups.end)).copied())
        }
        fn span_outboard(&self, index: u64) -> io::Result<Option<Vec<u8>>> {
            Ok(self.spans.get(&index).cloned())
        }
    }

    /// Encodes everything, then keeps what a fetcher holding `held` spans would keep.
    fn keep(bytes: &[u8], root: Hash, outboard: &[u8], held: &[u64]) -> Kept {
        let size = bytes.len() as u64;
        let span_groups = SPAN / CHUNK_GROUP_BYTES;
        let total = group_count(size);
        let all = ChunkRanges::all();
        let mut encoded = Vec::new();
        encode_verified(root, size, bytes, outboard, &all, &mut encoded).expect("encode");
        let mut kept = Kept::default();
        let mut wanted_above = std::collections::HashSet::new();
        for &s in held {
            for n in nodes_above(s * span_groups..(s + 1) * span_groups, total, span_groups) {
                wanted_above.insert((n.start, n.end));
            }
            let start = (s * SPAN) as usize;
            if start + SPAN as usize <= bytes.len() {
                kept.spans.insert(
                    s,
                    subtree::subtree_outboard(start as u64, &bytes[start..start + SPAN as usize]),
                );
            }
        }
        for item in verify_response_items(root, size, &all, &encoded[..]) {
            if let VerifiedItem::Parent { groups, pair } = item.expect("verifies") {
                if !inside_one_span(&groups, total, span_groups) {
                    assert!(
                        wanted_above.contains(&(groups.start, groups.end))
                            || !held.iter().any(|s| {
                                groups.start < (s + 1) * span_groups && s * span_groups < groups.end
                            }),
                        "a node reaching into a held span is one of nodes_above"
                    );
                    if wanted_above.contains(&(groups.start, groups.end)) {
                        kept.above.insert((groups.start, groups.end), pair);
                    }
                }
            }
        }
        assert_eq!(
            kept.above.len(),
            wanted_above.len(),
            "every node above came"
        );
        kept
    }

    /// Bytes of `bytes` with the spans not held zeroed, as a partial store reads them.
    struct Holes<'a> {
        bytes: &'a [u8],
        held: &'a [u64],
    }

    impl ReadAt for Holes<'_> {
        fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<usize> {
            if !self.held.contains(&(pos / SPAN)) {
                return Err(io::Error::other("span not held"));
            }
            let start = pos as usize;
            let end = (start + buf.len())
                .min(self.bytes.len())
                .min(((pos / SPAN + 1) * SPAN) as usize);
            buf[..end - start].copy_from_slice(&self.bytes[start..end]);
            Ok(end - start)
        }
    }

    fn span_chunks(spans: Range<u64>, size: u64) -> ChunkRanges {
        let per = SPAN / 1024;
        let end = (spans.end * per).min(size.div_ceil(1024));
        ChunkRanges::from(bao_tree::ChunkNum(spans.start * per)..bao_tree::ChunkNum(end))
    }

    #[test]
    fn held_spans_encode_exactly_as_from_the_whole_blob() {
        for size in [
            SPAN + 1,
            3 * SPAN,
            5 * SPAN + 3000,
            8 * SPAN,
            13 * SPAN + CHUNK_GROUP_BYTES,
        ] {
            let bytes = data(size as usize);
            let mut outboard = Vec::new();
            let root = compute_outboard(&bytes[..], size, &mut outboard).expect("hash");
            let spans = size.div_ceil(SPAN);
            let held: Vec<u64> = (0..spans)
                .filter(|s| s % 2 == 1 || *s == spans - 1)
                .collect();
            let kept = keep(&bytes, root, &outboard, &held);
            for &s in &held {
                let ranges = span_chunks(s..s + 1, size);
                let mut expected = Vec::new();
                encode_verified(
                    root,
                    size,
                    &bytes[..],
                    &outboard[..],
                    &ranges,
                    &mut expected,
                )
                .expect("encode whole");
                let mut got = Vec::new();
                let holes = Holes {
                    bytes: &bytes,
                    held: &held,
                };
                encode_partial(root, size, SPAN, holes, &kept, &ranges, &mut got)
                    .unwrap_or_else(|e| panic!("size {size} span {s}: {e}"));
                assert!(got == expected, "size {size} span {s}: same encoding");
                let groups: Vec<_> = verify_response(root, size, &ranges, &got[..])
                    .collect::<Result<_, _>>()
                    .expect("the encoding verifies");
                assert!(!groups.is_empty());
            }
        }
    }

    #[test]
    fn a_span_not_held_or_a_missing_pair_fails_instead_of_sending_bad_bytes() {
        let size = 8 * SPAN;
        let bytes = data(size as usize);
        let mut outboard = Vec::new();
        let root = compute_outboard(&bytes[..], size, &mut outboard).expect("hash");
        let held = [1u64, 2];
        let mut kept = keep(&bytes, root, &outboard, &held);
        let holes = |held| Holes {
            bytes: &bytes,
            held,
        };
        let not_held = span_chunks(3..4, size);
        assert!(
            encode_partial(root, size, SPAN, holes(&held), &kept, &not_held, Vec::new()).is_err()
        );
        // A lost pair above span 2: zeros never verify.
        let lost = nodes_above(8..12, group_count(size), 4)
            .pop()
            .expect("a node");
        kept.above.remove(&(lost.start, lost.end));
        let mut out = Vec::new();
        let result = encode_partial(
            root,
            size,
            SPAN,
            holes(&held),
            &kept,
            &span_chunks(2..3, size),
            &mut out,
        );
        assert!(
            matches!(result, Err(VerifyError::OutboardMismatch { .. })),
            "{result:?}"
        );
        // Damaged data in a held span is caught too.
        let mut damaged = bytes.clone();
        damaged[(SPAN + 100) as usize] ^= 1;
        let result = encode_partial(
            root,
            size,
            SPAN,
            Holes {
                bytes: &damaged,
                held: &held,
            },
            &kept,
            &span_chunks(1..2, size),
            Vec::new(),
        );
        assert!(
            matches!(result, Err(VerifyError::DataMismatch { offset }) if offset == SPAN),
            "{result:?}"
        );
    }

    #[test]
    fn nodes_above_a_span_are_its_ancestors_root_first() {
        // 8 spans of 4 groups: the root (32 groups), then 16, then 8 above span 5.
        assert_eq!(nodes_above(20..24, 32, 4), vec![0..32, 16..32, 16..24]);
        // 5 groups, spans of 2: the root covers 8 groups; 4..8 is no node (its right half
        // is past the end), so the last span has the root alone above it.
        assert_eq!(nodes_above(4..5, 5, 2), vec![0..8]);
        assert_eq!(nodes_above(0..2, 5, 2), vec![0..8, 0..4]);
        assert!(nodes_above(0..1, 1, 4).is_empty(), "one group: no pairs");
        assert!(
            nodes_above(0..4, 3, 4).is_empty(),
            "one span: all pairs are its own"
        );
    }
}
