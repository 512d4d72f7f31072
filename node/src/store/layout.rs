//! The on-disk layout of the store: column families, key encodings and value formats.
//!
//! This is the code form of `docs/storage.md`; change both together and bump
//! [`LAYOUT_VERSION`] when an existing store could no longer be read.

use commons_protocol::Hash;
use serde::{Deserialize, Serialize};

/// Version of the layout below, kept in [`CF_META`] under [`META_LAYOUT_VERSION`].
pub const LAYOUT_VERSION: u32 = 1;

/// Blob metadata: `hash (32 bytes)` → [`BlobMeta`].
pub const CF_BLOBS: &str = "blobs";
/// Chunk data: [`span_key`] → up to `span_bytes` bytes of a blob. Stored with RocksDB's
/// BlobDB key-value separation, so bulk bytes are written once and not churned by compaction.
pub const CF_DATA: &str = "data";
/// Post-order outboards: [`span_key`] (piece index) → up to [`OUTBOARD_PIECE_BYTES`] bytes.
pub const CF_OUTBOARDS: &str = "outboards";
/// Verified spans of *partial* blobs: [`span_key`] → the span's own subtree outboard
/// (post-order hash pairs, 960 bytes for a 256 KiB span; empty for a short last span or a
/// span size that is not a power of two), so completing the blob needs no second pass over
/// its data. A complete blob needs none.
pub const CF_VERIFIED: &str = "verified";
/// Pairs above spans of *partial* blobs: [`above_key`] → 64 bytes, the hash pair of a tree
/// node that reaches into more than one span (`commons_protocol::partial::nodes_above`),
/// written in the batch of the first span that needed it. With a span's own outboard in
/// [`CF_VERIFIED`] these let a node serve the spans it holds before it holds them all.
pub const CF_ABOVE: &str = "above";
/// Imports in progress: `blob id (8 bytes BE)` → start time (unix seconds, 8 bytes BE).
/// Whatever is left here at open time belongs to an import that crashed and is deleted.
pub const CF_IMPORTS: &str = "imports";
/// Datasets: `root hash` → [`DatasetMeta`]; the manifest itself is the blob `root hash`.
pub const CF_DATASETS: &str = "datasets";
/// Pins: `hash` → [`PinMeta`]. Pinned datasets and blobs, and every blob a pinned dataset
/// lists, survive garbage collection.
pub const CF_PINS: &str = "pins";
/// Store-wide settings: the keys `META_*` below.
pub const CF_META: &str = "meta";
/// Local names: [`name_key`] → [`NameMeta`].
pub const CF_NAMES: &str = "names";
/// When each blob was last used (stored, fetched, served): `hash` → unix seconds (u64 BE),
/// written at most every [`USED_RESOLUTION_SECS`]. Quota-driven collection removes the
/// least recently used unpinned blobs first.
pub const CF_USED: &str = "used";
/// How stale a `used` time may get before a use writes it again.
pub const USED_RESOLUTION_SECS: u64 = 600;

/// Every column family, in creation order.
pub const ALL_CFS: &[&str] = &[
    CF_BLOBS,
    CF_DATA,
    CF_OUTBOARDS,
    CF_VERIFIED,
    CF_IMPORTS,
    CF_DATASETS,
    CF_PINS,
    CF_META,
    CF_ABOVE,
    CF_NAMES,
    CF_USED,
];

/// Key of a name binding: `org/name` ‖ 0x00 ‖ revision (neither may hold a NUL), so a
/// name's revisions sort together.
pub fn name_key(name: &str, revision: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(name.len() + 1 + revision.len());
    key.extend_from_slice(name.as_bytes());
    key.push(0);
    key.extend_from_slice(revision.as_bytes());
    key
}

/// The name and revision of a [`name_key`].
pub fn split_name_key(key: &[u8]) -> Option<(&str, &str)> {
    let nul = key.iter().position(|&b| b == 0)?;
    let name = std::str::from_utf8(&key[..nul]).ok()?;
    let revision = std::str::from_utf8(&key[nul + 1..]).ok()?;
    Some((name, revision))
}

/// What a name binds to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameMeta {
    /// The dataset root.
    pub root: Hash,
    /// When it was bound (unix seconds).
    pub set_at: u64,
}

/// `u32` layout version.
pub const META_LAYOUT_VERSION: &[u8] = b"layout_version";
/// `u64` size of a data span in bytes, fixed when the store is created.
pub const META_SPAN_BYTES: &[u8] = b"span_bytes";
/// `u64` next free blob id.
pub const META_NEXT_ID: &[u8] = b"next_id";

/// Outboard bytes per row: 1,024 hash pairs, covering 16 MiB of data.
pub const OUTBOARD_PIECE_BYTES: u64 = 64 * 1024;

/// Internal number of a blob's rows. Data is keyed by id rather than hash so an import can
/// write bytes while it is still hashing them (the hash is known only at the end).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BlobId(pub u64);

/// Key of row `index` of blob `id` in [`CF_DATA`], [`CF_OUTBOARDS`] or [`CF_VERIFIED`]:
/// big-endian id then index, so a blob's rows sort together and in order.
pub fn span_key(id: BlobId, index: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&id.0.to_be_bytes());
    key[8..].copy_from_slice(&index.to_be_bytes());
    key
}

/// Key of the pair of the tree node over chunk groups `groups` (untruncated) of blob `id`
/// in [`CF_ABOVE`]: id, first group, end group, all big-endian. It sorts inside
/// [`blob_key_range`], so a blob's pairs go with its other rows.
pub fn above_key(id: BlobId, groups: &std::ops::Range<u64>) -> [u8; 24] {
    let mut key = [0u8; 24];
    key[..8].copy_from_slice(&id.0.to_be_bytes());
    key[8..16].copy_from_slice(&groups.start.to_be_bytes());
    key[16..].copy_from_slice(&groups.end.to_be_bytes());
    key
}

/// The half-open key range holding all rows of blob `id`: from its first span's key to
/// the next id alone (8 bytes), which sorts before every key of that next blob. Ending at
/// the next blob's first key instead made a range deletion's file end where the next
/// blob's rows begin, so RocksDB counted the two as overlapping and put a table file
/// ingested for that blob (`ingest`) above the deletion, to be rewritten by a compaction.
pub fn blob_key_range(id: BlobId) -> ([u8; 16], [u8; 8]) {
    (span_key(id, 0), (id.0 + 1).to_be_bytes())
}

/// Whether all of a blob's bytes are stored and verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlobState {
    /// Every span is stored and verified.
    Complete,
    /// Only the spans listed in [`CF_VERIFIED`] are.
    Partial,
}

/// Value in [`CF_BLOBS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobMeta {
    /// Where the rows are.
    pub id: BlobId,
    /// Size in bytes.
    pub size: u64,
    /// Complete or partial.
    pub state: BlobState,
}

/// Value in [`CF_DATASETS`]: a summary so listing does not parse every manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetMeta {
    /// Number of files.
    pub files: u64,
    /// Sum of file sizes.
    pub total_size: u64,
}

/// What a pin holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PinKind {
    /// A single blob.
    Blob,
    /// A dataset and every blob its manifest lists.
    Dataset,
}

/// Value in [`CF_PINS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinMeta {
    /// Blob or dataset.
    pub kind: PinKind,
    /// Unix seconds when pinned.
    pub pinned_at: u64,
}

/// Encodes a value for the store (postcard). Plain structs of integers cannot fail.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).unwrap_or_default()
}

/// Decodes a stored value; `None` if the bytes are damaged.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Option<T> {
    postcard::from_bytes(bytes).ok()
}

/// Reads a big-endian `u64` value.
pub fn decode_u64(bytes: &[u8]) -> Option<u64> {
    bytes.try_into().ok().map(u64::from_be_bytes)
}

/// Reads a hash key.
pub fn decode_hash(key: &[u8]) -> Option<Hash> {
    Hash::from_slice(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn span_keys_sort_by_blob_then_index() {
        let a = span_key(BlobId(1), 300);
        let b = span_key(BlobId(2), 0);
        let c = span_key(BlobId(1), 2);
        assert!(c < a && a < b);
        let (start, end) = blob_key_range(BlobId(1));
        assert!(start[..] <= c[..] && a[..] < end[..]);
        let above = above_key(BlobId(1), &(u64::MAX - 1..u64::MAX));
        assert!(
            above[..] < end[..],
            "every row of the blob is inside its range"
        );
        // The range ends before the next blob's first key: a deletion of this blob's rows
        // and a table file of the next blob's rows do not overlap.
        assert!(end[..] < b[..]);
    }

    #[test]
    fn values_round_trip() {
        let meta = BlobMeta {
            id: BlobId(7),
            size: 1 << 40,
            state: BlobState::Partial,
        };
        assert_eq!(decode::<BlobMeta>(&encode(&meta)), Some(meta));
        assert_eq!(decode::<BlobMeta>(&[0xff; 3]), None);
    }
}
