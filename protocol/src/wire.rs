//! Wire protocol v1 of `/commons/transfer/1`: requests, response headers, and the verified
//! decoding of response data. Specified in `docs/protocol.md`.
//!
//! Each request is its own stream: the client writes one framed [`Request`]; the server
//! answers with one framed [`ResponseHeader`] and, after `Ok`, the requested chunk groups
//! Bao-encoded (pre-order parent pairs interleaved with 16 KiB groups). Frames are a 4-byte
//! big-endian length then a postcard body; every length is checked against a named limit
//! before anything is allocated.

use std::io::Read;

use bao_tree::{
    io::{sync::DecodeResponseIter, BaoContentItem, DecodeError},
    ChunkNum, ChunkRanges,
};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::{
    tree::{blob_tree, CHUNK_GROUP_BYTES},
    Hash,
};

/// The libp2p protocol id; the version is part of it.
pub const TRANSFER_PROTOCOL: &str = "/commons/transfer/1";
/// Largest request frame accepted, in bytes.
pub const MAX_REQUEST_BYTES: u32 = 16 * 1024;
/// Largest response header frame accepted, in bytes.
pub const MAX_HEADER_BYTES: u32 = 4 * 1024;
/// Most ranges one request may list.
pub const MAX_REQUEST_RANGES: usize = 512;
/// Longest error message a server sends (and a client shows).
pub const MAX_ERROR_MESSAGE: usize = 512;
/// Largest blob size a peer may claim: 2^50 bytes (1 PiB). Bounds tree arithmetic.
pub const MAX_BLOB_SIZE: u64 = 1 << 50;
/// Chunks per chunk group (16 KiB / 1 KiB).
const CHUNKS_PER_GROUP: u64 = CHUNK_GROUP_BYTES / 1024;

/// A half-open range of 16 KiB chunk-group indices; `end == None` means "to the end".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRange {
    /// First group.
    pub start: u64,
    /// One past the last group, or `None` for "through the last group".
    pub end: Option<u64>,
}

/// What a client asks for. New request kinds get new variants; the tags of existing ones
/// never change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Chunk groups of one blob.
    Get {
        /// The blob.
        hash: Hash,
        /// Sorted, non-overlapping, non-empty ranges.
        ranges: Vec<GroupRange>,
    },
    /// Which other nodes the server knows to hold (all or part of) a blob or dataset: how
    /// peers fetching the same data tell each other about holders the DHT did not return.
    /// Answered with one [`HoldersResponse`] frame.
    Holders {
        /// The dataset root or blob.
        hash: Hash,
    },
    /// Which chunk groups of a blob the server holds, verified, and can serve: how a
    /// fetcher learns what a partial holder (a node still fetching it) can give. Answered
    /// with one [`HaveResponse`] frame.
    Have {
        /// The blob.
        hash: Hash,
    },
    /// Where the server's bulk-data endpoint listens (a QUIC endpoint of its own beside
    /// libp2p's, carrying the same requests; `docs/protocol.md`). Answered with one
    /// [`BulkResponse`] frame.
    Bulk,
    /// Which dataset roots the server holds for a Hugging Face Hub commit, by the commit's
    /// DHT key (`hub::hub_commit_key`): how a mirror of the same repository finds the
    /// manifest to fetch from peers. Answered with one [`UpstreamResponse`] frame.
    Upstream {
        /// The commit's key.
        key: Hash,
    },
    /// Which blob the server holds, checked, for a file with this Hub id (the SHA-256 of an
    /// LFS file, the git blob id of another): how mirrors importing the same commit at the
    /// same time share files before either has the whole commit. Answered with one
    /// [`HubFileResponse`] frame.
    HubFile {
        /// The file's Hub id.
        id: HubFileId,
    },
    /// The signatures the server holds for a dataset (OpenSSF Model Signing bundles,
    /// `provenance::bundle`): how a signature travels with the data it signs. Answered with
    /// one [`SignaturesResponse`] frame.
    Signatures {
        /// The dataset root.
        root: Hash,
    },
}

/// A file's id on the Hub, as its ETag names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HubFileId {
    /// A git blob id (non-LFS files).
    GitOid(crate::GitOid),
    /// A SHA-256 (LFS files).
    Sha256(crate::Sha256),
}

impl std::fmt::Display for HubFileId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::GitOid(o) => o.fmt(f),
            Self::Sha256(s) => s.fmt(f),
        }
    }
}

/// Longest [`HubFileResponse`] frame.
pub const MAX_HUB_FILE_BYTES: u32 = 64;

/// The answer to [`Request::HubFile`]: the blob and its size, if the server holds it (a
/// claim: the asker fetches the blob by its hash and hashes it again for the Hub id), or
/// whether it is downloading that file from its origin now (the asker may take another
/// file first and ask again, instead of downloading the same bytes at the same time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HubFileResponse {
    /// The blob and its size in bytes.
    pub blob: Option<(Hash, u64)>,
    /// Whether the server is downloading the file now (when it does not hold it).
    pub fetching: bool,
}

impl HubFileResponse {
    /// Decodes a response body, refusing sizes above [`MAX_BLOB_SIZE`].
    pub fn decode(body: &[u8]) -> Result<Self, WireError> {
        let response: HubFileResponse = decode_exact(body)?;
        if let Some((_, size)) = response.blob {
            if size > MAX_BLOB_SIZE {
                return Err(WireError::SizeTooLarge(size));
            }
        }
        Ok(response)
    }
}

/// Roots one [`UpstreamResponse`] names, at most.
pub const MAX_UPSTREAM_ROOTS: usize = 8;
/// Longest [`UpstreamResponse`] frame.
pub const MAX_UPSTREAM_BYTES: u32 = 1024;

/// The answer to [`Request::Upstream`]: dataset roots the server holds for that commit (a
/// claim: the asker checks each manifest against the origin's listing before using it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamResponse {
    /// Up to [`MAX_UPSTREAM_ROOTS`] roots.
    pub roots: Vec<Hash>,
}

impl UpstreamResponse {
    /// Decodes a response body, refusing more than [`MAX_UPSTREAM_ROOTS`] roots.
    pub fn decode(body: &[u8]) -> Result<Self, WireError> {
        let response: UpstreamResponse = decode_exact(body)?;
        if response.roots.len() > MAX_UPSTREAM_ROOTS {
            return Err(WireError::Malformed(format!(
                "{} roots, more than {MAX_UPSTREAM_ROOTS}",
                response.roots.len()
            )));
        }
        Ok(response)
    }
}

/// Signatures one [`SignaturesResponse`] carries, and a node keeps per dataset, at most.
pub const MAX_SIGNATURES_PER_ROOT: usize = 8;
/// Longest [`SignaturesResponse`] frame: one bundle of the largest size, and some.
pub const MAX_SIGNATURES_BYTES: u32 = crate::provenance::MAX_SIGNATURE_BYTES as u32 + 1024;

/// The answer to [`Request::Signatures`]: signature bundles the server holds for the root
/// (claims: the asker checks each against the manifest, and against the publisher's key
/// when it knows which publisher to expect, before keeping it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignaturesResponse {
    /// Up to [`MAX_SIGNATURES_PER_ROOT`] bundles (JSON bytes), within
    /// [`MAX_SIGNATURES_BYTES`] together.
    pub bundles: Vec<Vec<u8>>,
}

impl SignaturesResponse {
    /// Decodes a response body, refusing more than [`MAX_SIGNATURES_PER_ROOT`] bundles.
    pub fn decode(body: &[u8]) -> Result<Self, WireError> {
        let response: SignaturesResponse = decode_exact(body)?;
        if response.bundles.len() > MAX_SIGNATURES_PER_ROOT {
            return Err(WireError::Malformed(format!(
                "{} signatures, more than {MAX_SIGNATURES_PER_ROOT}",
                response.bundles.len()
            )));
        }
        Ok(response)
    }

    /// The bundles that fit in one frame, in order (a node never holds more than
    /// [`MAX_SIGNATURES_PER_ROOT`]; this keeps a reply within the frame limit regardless).
    pub fn within_limits(bundles: Vec<Vec<u8>>) -> Self {
        let mut total = 16;
        let bundles = bundles
            .into_iter()
            .take(MAX_SIGNATURES_PER_ROOT)
            .filter(|b| {
                let fits = total + b.len() + 8 <= MAX_SIGNATURES_BYTES as usize;
                total += if fits { b.len() + 8 } else { 0 };
                fits
            })
            .collect();
        Self { bundles }
    }
}

/// Longest [`BulkResponse`] frame.
pub const MAX_BULK_BYTES: u32 = 16;

/// The answer to [`Request::Bulk`]: the UDP port of the server's bulk endpoint, on the IP
/// address the asker reached it at, or `None` when it has none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkResponse {
    /// The port.
    pub port: Option<u16>,
}

impl BulkResponse {
    /// Decodes a response body; port 0 is refused.
    pub fn decode(body: &[u8]) -> Result<Self, WireError> {
        let response: BulkResponse = decode_exact(body)?;
        if response.port == Some(0) {
            return Err(WireError::Malformed("bulk port 0".into()));
        }
        Ok(response)
    }
}

/// Ranges one [`HaveResponse`] lists, at most: a holder with more gaps lists its first
/// ones (the rest it simply does not offer).
pub const MAX_HAVE_RANGES: usize = 4096;
/// Longest [`HaveResponse`] frame: [`MAX_HAVE_RANGES`] ranges of the largest blob fit.
pub const MAX_HAVE_BYTES: u32 = 96 * 1024;

/// The answer to [`Request::Have`]. A claim like any other: every group fetched on its
/// strength is still verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HaveResponse {
    /// The server holds nothing of this blob.
    NotFound,
    /// The server holds these chunk groups.
    Held {
        /// Size of the blob in bytes, as the server knows it.
        size: u64,
        /// Whether the server holds all of it (then `groups` is empty).
        complete: bool,
        /// Sorted, non-overlapping, non-empty ranges of chunk-group indices.
        groups: Vec<std::ops::Range<u64>>,
    },
}

impl HaveResponse {
    /// Decodes and validates a response body: size within limits, at most
    /// [`MAX_HAVE_RANGES`] sorted ranges inside the blob.
    pub fn decode(body: &[u8]) -> Result<Self, WireError> {
        let response: HaveResponse = decode_exact(body)?;
        if let HaveResponse::Held { size, groups, .. } = &response {
            if *size > MAX_BLOB_SIZE {
                return Err(WireError::SizeTooLarge(*size));
            }
            if groups.len() > MAX_HAVE_RANGES {
                return Err(WireError::InvalidRanges("too many ranges"));
            }
            let total = crate::partial::group_count(*size);
            let mut next_free = 0;
            for r in groups {
                if r.start >= r.end {
                    return Err(WireError::InvalidRanges("empty range"));
                }
                if r.start < next_free {
                    return Err(WireError::InvalidRanges("unsorted or overlapping"));
                }
                if r.end > total {
                    return Err(WireError::InvalidRanges("range beyond the blob"));
                }
                next_free = r.end;
            }
        }
        Ok(response)
    }
}

/// Holders a server names in one [`HoldersResponse`], at most.
pub const MAX_HOLDERS: usize = 32;
/// Addresses per holder, at most.
pub const MAX_HOLDER_ADDRS: usize = 8;
/// Bytes of one binary peer id or multiaddr, at most.
pub const MAX_HOLDER_FIELD_BYTES: usize = 256;
/// Longest [`HoldersResponse`] frame: every limit above at its maximum fits.
pub const MAX_HOLDERS_BYTES: u32 = 96 * 1024;

/// One node said to hold some data: its binary libp2p PeerId and binary multiaddrs. Kept as
/// bytes so this crate needs no libp2p; the node parses them and drops what does not parse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HolderRecord {
    /// The PeerId, in libp2p's binary form.
    pub peer: Vec<u8>,
    /// Addresses, in multiaddr binary form.
    pub addrs: Vec<Vec<u8>>,
}

/// The answer to [`Request::Holders`]: holders other than the server and the asker; empty
/// when the server knows none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldersResponse {
    /// Up to [`MAX_HOLDERS`] holders.
    pub holders: Vec<HolderRecord>,
}

impl HoldersResponse {
    /// Decodes a response body, refusing more holders, addresses or bytes than the limits.
    pub fn decode(body: &[u8]) -> Result<Self, WireError> {
        let response: HoldersResponse = decode_exact(body)?;
        if response.holders.len() > MAX_HOLDERS {
            return Err(WireError::Malformed(format!(
                "{} holders, more than {MAX_HOLDERS}",
                response.holders.len()
            )));
        }
        for h in &response.holders {
            if h.peer.len() > MAX_HOLDER_FIELD_BYTES
                || h.addrs.len() > MAX_HOLDER_ADDRS
                || h.addrs.iter().any(|a| a.len() > MAX_HOLDER_FIELD_BYTES)
            {
                return Err(WireError::Malformed("holder record beyond limits".into()));
            }
        }
        Ok(response)
    }
}

/// A server's answer, before any data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResponseHeader {
    /// The data follows. `size` is a claim: it is proven only once the last group verifies.
    Ok {
        /// Size of the blob in bytes.
        size: u64,
    },
    /// The server does not have this blob.
    NotFound,
    /// The server has only part of the requested ranges.
    NotComplete,
    /// The server is at its limit for this peer; try later or elsewhere.
    Busy,
    /// The request broke a rule.
    BadRequest(String),
}

/// Why peer bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// A frame is longer than its limit.
    #[error("frame of {len} bytes exceeds the limit of {limit}")]
    FrameTooLarge {
        /// Declared length.
        len: u32,
        /// The limit.
        limit: u32,
    },
    /// A frame does not decode.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The ranges are unsorted, overlapping, empty or too many.
    #[error("invalid ranges: {0}")]
    InvalidRanges(&'static str),
    /// A claimed size is beyond [`MAX_BLOB_SIZE`].
    #[error("claimed size {0} is beyond the limit")]
    SizeTooLarge(u64),
}

/// Frames `value`: 4-byte big-endian length, then postcard.
pub fn encode_frame<T: Serialize>(value: &T) -> Vec<u8> {
    // Enums of hashes, integers and short strings always serialize.
    let body = postcard::to_stdvec(value).unwrap_or_default();
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend(body);
    out
}

/// Reads a frame length prefix, refusing lengths beyond `limit`.
pub fn frame_len(prefix: [u8; 4], limit: u32) -> Result<usize, WireError> {
    let len = u32::from_be_bytes(prefix);
    if len > limit {
        return Err(WireError::FrameTooLarge { len, limit });
    }
    Ok(len as usize)
}

impl Request {
    /// Decodes and validates a request body (the frame without its length prefix).
    pub fn decode(body: &[u8]) -> Result<Self, WireError> {
        let req: Request = decode_exact(body)?;
        if let Request::Get { ranges, .. } = &req {
            validate_ranges(ranges)?;
        }
        Ok(req)
    }
}

impl ResponseHeader {
    /// Decodes and validates a response header body.
    pub fn decode(body: &[u8]) -> Result<Self, WireError> {
        let header: ResponseHeader = decode_exact(body)?;
        match &header {
            ResponseHeader::Ok { size } if *size > MAX_BLOB_SIZE => {
                Err(WireError::SizeTooLarge(*size))
            }
            ResponseHeader::BadRequest(m) if m.len() > MAX_ERROR_MESSAGE => {
                Err(WireError::Malformed("error message too long".into()))
            }
            _ => Ok(header),
        }
    }
}

fn decode_exact<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, WireError> {
    let (value, rest) =
        postcard::take_from_bytes(body).map_err(|e| WireError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(WireError::Malformed(format!(
            "{} trailing bytes",
            rest.len()
        )));
    }
    Ok(value)
}

/// Checks ranges are non-empty, sorted, non-overlapping and few enough.
pub fn validate_ranges(ranges: &[GroupRange]) -> Result<(), WireError> {
    if ranges.is_empty() {
        return Err(WireError::InvalidRanges("no ranges"));
    }
    if ranges.len() > MAX_REQUEST_RANGES {
        return Err(WireError::InvalidRanges("too many ranges"));
    }
    let mut next_free = 0u64;
    for (i, r) in ranges.iter().enumerate() {
        if r.start < next_free && i > 0 {
            return Err(WireError::InvalidRanges("unsorted or overlapping"));
        }
        match r.end {
            Some(end) if end <= r.start => return Err(WireError::InvalidRanges("empty range")),
            Some(end) => next_free = end,
            None if i + 1 != ranges.len() => {
                return Err(WireError::InvalidRanges("open range before the last"))
            }
            None => {}
        }
        // Group indices beyond the largest blob are nonsense; refuse before multiplying.
        if r.start > MAX_BLOB_SIZE / CHUNK_GROUP_BYTES {
            return Err(WireError::InvalidRanges("range beyond any blob"));
        }
    }
    Ok(())
}

/// The `bao-tree` chunk ranges for group ranges (already validated).
pub fn chunk_ranges(ranges: &[GroupRange]) -> ChunkRanges {
    let mut out = ChunkRanges::empty();
    for r in ranges {
        let start = ChunkNum(r.start.saturating_mul(CHUNKS_PER_GROUP));
        out |= match r.end {
            Some(end) => ChunkRanges::from(start..ChunkNum(end.saturating_mul(CHUNKS_PER_GROUP))),
            None => ChunkRanges::from(start..),
        };
    }
    out
}

/// One 16 KiB chunk group (or the shorter last one) that matched the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedGroup {
    /// Byte offset in the blob; a multiple of 16 KiB.
    pub offset: u64,
    /// The bytes.
    pub data: Bytes,
}

/// Why response data was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// Bytes did not match the tree: the peer sent bad data (or lied about the size).
    #[error("data at byte offset {offset} failed verification")]
    Mismatch {
        /// Where the bad group (or tree node) starts.
        offset: u64,
    },
    /// The stream ended early.
    #[error("response ended early at byte offset {offset}")]
    Truncated {
        /// Where data stopped.
        offset: u64,
    },
    /// Reading failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Verifies a response stream group by group against `root`, for the blob size the server
/// claimed and the chunk ranges requested. Yields only verified groups; stops at the first
/// error. Groups are yielded whole: requests must use whole chunk groups.
pub fn verify_response<'a, R: Read + 'a>(
    root: Hash,
    size: u64,
    ranges: &'a ChunkRanges,
    encoded: R,
) -> impl Iterator<Item = Result<VerifiedGroup, DataError>> + 'a {
    verify_response_items(root, size, ranges, encoded).filter_map(|item| match item {
        Ok(VerifiedItem::Group(group)) => Some(Ok(group)),
        Ok(VerifiedItem::Parent { .. }) => None,
        Err(e) => Some(Err(e)),
    })
}

/// One verified piece of a response: a hash pair (checked against its parent) or a chunk
/// group (checked against its pair).
#[derive(Debug, Clone)]
pub enum VerifiedItem {
    /// The pair of a tree node, which covers chunk groups `groups` (untruncated).
    Parent {
        /// The chunk groups below this node.
        groups: std::ops::Range<u64>,
        /// Left and right child chaining values.
        pair: [u8; 64],
    },
    /// A chunk group's data.
    Group(VerifiedGroup),
}

/// Like [`verify_response`], but also yields the verified hash pairs, in pre-order, so a
/// receiver can keep the outboard of what it stores without hashing it again.
pub fn verify_response_items<'a, R: Read + 'a>(
    root: Hash,
    size: u64,
    ranges: &'a ChunkRanges,
    encoded: R,
) -> impl Iterator<Item = Result<VerifiedItem, DataError>> + 'a {
    let iter = DecodeResponseIter::new(root.into(), blob_tree(size), encoded, ranges);
    iter.map(|item| match item {
        Ok(BaoContentItem::Parent(parent)) => {
            // bao-tree counts a node's range in 1 KiB chunks.
            let range = parent.node.chunk_range();
            let mut pair = [0u8; 64];
            pair[..32].copy_from_slice(parent.pair.0.as_bytes());
            pair[32..].copy_from_slice(parent.pair.1.as_bytes());
            Ok(VerifiedItem::Parent {
                groups: range.start.0 / CHUNKS_PER_GROUP..range.end.0 / CHUNKS_PER_GROUP,
                pair,
            })
        }
        Ok(BaoContentItem::Leaf(leaf)) => Ok(VerifiedItem::Group(VerifiedGroup {
            offset: leaf.offset,
            data: leaf.data,
        })),
        Err(e) => Err(match e {
            DecodeError::LeafHashMismatch(c) => DataError::Mismatch {
                offset: c.to_bytes(),
            },
            DecodeError::ParentHashMismatch(n) => DataError::Mismatch {
                offset: n.chunk_range().start.to_bytes(),
            },
            DecodeError::LeafNotFound(c) => DataError::Truncated {
                offset: c.to_bytes(),
            },
            DecodeError::ParentNotFound(n) => DataError::Truncated {
                offset: n.chunk_range().start.to_bytes(),
            },
            DecodeError::Io(e) => DataError::Io(e),
        }),
    })
}

#[cfg(test)]
mod tests {
    use bao_tree::io::{outboard::PostOrderMemOutboard, sync::encode_ranges_validated};

    use super::*;
    use crate::tree::BLOCK_SIZE;

    fn encoded(data: &[u8], ranges: &ChunkRanges) -> Vec<u8> {
        let ob = PostOrderMemOutboard::create(data, BLOCK_SIZE);
        let mut out = Vec::new();
        encode_ranges_validated(data, &ob, ranges, &mut out).expect("encode");
        out
    }

    fn data(size: usize) -> Vec<u8> {
        (0..size).map(|i| (i * 7 + i / 5000) as u8).collect()
    }

    #[test]
    fn frames_round_trip_and_limits_hold() {
        let req = Request::Get {
            hash: Hash::of(b"x"),
            ranges: vec![
                GroupRange {
                    start: 0,
                    end: Some(2),
                },
                GroupRange {
                    start: 5,
                    end: None,
                },
            ],
        };
        let frame = encode_frame(&req);
        let len = frame_len(frame[..4].try_into().expect("4"), MAX_REQUEST_BYTES).expect("len");
        assert_eq!(Request::decode(&frame[4..4 + len]), Ok(req));
        assert_eq!(
            frame_len(u32::MAX.to_be_bytes(), MAX_REQUEST_BYTES),
            Err(WireError::FrameTooLarge {
                len: u32::MAX,
                limit: MAX_REQUEST_BYTES
            })
        );
        for header in [
            ResponseHeader::Ok { size: 12345 },
            ResponseHeader::NotFound,
            ResponseHeader::Busy,
            ResponseHeader::BadRequest("nope".into()),
        ] {
            let f = encode_frame(&header);
            assert_eq!(ResponseHeader::decode(&f[4..]), Ok(header));
        }
        let lie = encode_frame(&ResponseHeader::Ok { size: u64::MAX });
        assert!(matches!(
            ResponseHeader::decode(&lie[4..]),
            Err(WireError::SizeTooLarge(_))
        ));
    }

    #[test]
    fn bad_ranges_are_refused() {
        let r = |start, end| GroupRange { start, end };
        assert!(validate_ranges(&[]).is_err());
        assert!(validate_ranges(&[r(3, Some(3))]).is_err());
        assert!(validate_ranges(&[r(3, Some(5)), r(4, Some(6))]).is_err());
        assert!(validate_ranges(&[r(0, None), r(4, Some(6))]).is_err());
        assert!(validate_ranges(&[r(u64::MAX, None)]).is_err());
        assert!(validate_ranges(&vec![r(0, Some(1)); MAX_REQUEST_RANGES + 1]).is_err());
        assert!(validate_ranges(&[r(0, Some(1)), r(1, Some(2)), r(9, None)]).is_ok());
    }

    #[test]
    fn a_response_verifies_group_by_group() {
        let d = data(10 * CHUNK_GROUP_BYTES as usize + 300);
        let root = Hash::of(&d);
        let ranges = chunk_ranges(&[
            GroupRange {
                start: 2,
                end: Some(4),
            },
            GroupRange {
                start: 9,
                end: None,
            },
        ]);
        let enc = encoded(&d, &ranges);
        let groups: Vec<VerifiedGroup> = verify_response(root, d.len() as u64, &ranges, &enc[..])
            .collect::<Result<_, _>>()
            .expect("verifies");
        let offsets: Vec<u64> = groups
            .iter()
            .map(|g| g.offset / CHUNK_GROUP_BYTES)
            .collect();
        assert_eq!(offsets, [2, 3, 9, 10]);
        for g in groups {
            assert_eq!(
                &g.data[..],
                &d[g.offset as usize..g.offset as usize + g.data.len()]
            );
        }
    }

    #[test]
    fn flipped_bytes_truncation_and_size_lies_are_caught() {
        let d = data(6 * CHUNK_GROUP_BYTES as usize);
        let root = Hash::of(&d);
        let all = ChunkRanges::all();
        let enc = encoded(&d, &all);
        // Flip a data byte in the last group.
        let mut bad = enc.clone();
        let last = bad.len() - 10;
        bad[last] ^= 1;
        let results: Vec<_> = verify_response(root, d.len() as u64, &all, &bad[..]).collect();
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 5);
        assert!(
            matches!(results.last(), Some(Err(DataError::Mismatch { offset })) if *offset == 5 * CHUNK_GROUP_BYTES)
        );
        // Flip a parent hash.
        let mut bad = enc.clone();
        bad[3] ^= 1;
        let first = verify_response(root, d.len() as u64, &all, &bad[..]).next();
        assert!(
            matches!(first, Some(Err(DataError::Mismatch { .. }))),
            "{first:?}"
        );
        // Flip the pair of the node over groups 4..6, which comes (pre-order) after the
        // root's, 0..4's and 0..2's pairs, groups 0-1, 2..4's pair and groups 2-3.
        let at = 3 * 64 + 2 * CHUNK_GROUP_BYTES as usize + 64 + 2 * CHUNK_GROUP_BYTES as usize;
        let mut bad = enc.clone();
        bad[at + 3] ^= 1;
        let results: Vec<_> = verify_response(root, d.len() as u64, &all, &bad[..]).collect();
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 4);
        assert!(
            matches!(results.last(), Some(Err(DataError::Mismatch { offset })) if *offset == 4 * CHUNK_GROUP_BYTES),
            "the offset of the bad parent is where its groups start: {:?}",
            results.last()
        );
        // Truncated.
        let cut = &enc[..enc.len() / 2];
        let last = verify_response(root, d.len() as u64, &all, cut).last();
        assert!(
            matches!(last, Some(Err(DataError::Truncated { .. }))),
            "{last:?}"
        );
        // A lying size: never a full verified blob.
        for lie in [
            d.len() as u64 - 1,
            d.len() as u64 + 1,
            1,
            100 * CHUNK_GROUP_BYTES,
        ] {
            let ok: u64 = verify_response(root, lie, &all, &enc[..])
                .map_while(Result::ok)
                .map(|g| g.data.len() as u64)
                .sum();
            assert!(ok < d.len() as u64, "size {lie} must not verify fully");
        }
    }

    #[test]
    fn holders_round_trip_and_limits_hold() {
        let req = Request::Holders {
            hash: Hash::of(b"root"),
        };
        let frame = encode_frame(&req);
        assert_eq!(Request::decode(&frame[4..]), Ok(req));
        let record = HolderRecord {
            peer: vec![7; 38],
            addrs: vec![vec![1; MAX_HOLDER_FIELD_BYTES]; MAX_HOLDER_ADDRS],
        };
        let full = HoldersResponse {
            holders: vec![record.clone(); MAX_HOLDERS],
        };
        let frame = encode_frame(&full);
        assert!(
            frame.len() - 4 <= MAX_HOLDERS_BYTES as usize,
            "limits fit the frame"
        );
        assert_eq!(HoldersResponse::decode(&frame[4..]), Ok(full));
        let too_many = HoldersResponse {
            holders: vec![record.clone(); MAX_HOLDERS + 1],
        };
        assert!(HoldersResponse::decode(&encode_frame(&too_many)[4..]).is_err());
        let long_addr = HoldersResponse {
            holders: vec![HolderRecord {
                peer: vec![7; 38],
                addrs: vec![vec![1; MAX_HOLDER_FIELD_BYTES + 1]],
            }],
        };
        assert!(HoldersResponse::decode(&encode_frame(&long_addr)[4..]).is_err());
    }

    #[test]
    fn upstream_round_trips_and_limits_hold() {
        let req = Request::Upstream {
            key: Hash::of(b"commit key"),
        };
        assert_eq!(Request::decode(&encode_frame(&req)[4..]), Ok(req));
        let full = UpstreamResponse {
            roots: vec![Hash::of(b"r"); MAX_UPSTREAM_ROOTS],
        };
        let frame = encode_frame(&full);
        assert!(frame.len() - 4 <= MAX_UPSTREAM_BYTES as usize);
        assert_eq!(UpstreamResponse::decode(&frame[4..]), Ok(full));
        let too_many = UpstreamResponse {
            roots: vec![Hash::of(b"r"); MAX_UPSTREAM_ROOTS + 1],
        };
        assert!(UpstreamResponse::decode(&encode_frame(&too_many)[4..]).is_err());
    }

    #[test]
    fn hub_file_round_trips_and_limits_hold() {
        for id in [
            HubFileId::GitOid(crate::GitOid([1; 20])),
            HubFileId::Sha256(crate::Sha256([2; 32])),
        ] {
            let req = Request::HubFile { id };
            assert_eq!(Request::decode(&encode_frame(&req)[4..]), Ok(req));
        }
        let held = HubFileResponse {
            blob: Some((Hash::of(b"b"), MAX_BLOB_SIZE)),
            fetching: false,
        };
        let frame = encode_frame(&held);
        assert!(frame.len() - 4 <= MAX_HUB_FILE_BYTES as usize);
        assert_eq!(HubFileResponse::decode(&frame[4..]), Ok(held));
        let lie = HubFileResponse {
            blob: Some((Hash::of(b"b"), MAX_BLOB_SIZE + 1)),
            fetching: false,
        };
        assert!(HubFileResponse::decode(&encode_frame(&lie)[4..]).is_err());
    }

    #[test]
    fn bulk_round_trips_and_refuses_port_zero() {
        assert_eq!(
            Request::decode(&encode_frame(&Request::Bulk)[4..]),
            Ok(Request::Bulk)
        );
        for port in [None, Some(1), Some(u16::MAX)] {
            let frame = encode_frame(&BulkResponse { port });
            assert!(frame.len() - 4 <= MAX_BULK_BYTES as usize);
            assert_eq!(BulkResponse::decode(&frame[4..]), Ok(BulkResponse { port }));
        }
        let zero = encode_frame(&BulkResponse { port: Some(0) });
        assert!(BulkResponse::decode(&zero[4..]).is_err());
    }

    #[test]
    #[allow(clippy::single_range_in_vec_init)] // lists of group ranges
    fn have_round_trips_and_refuses_ranges_outside_the_blob() {
        let req = Request::Have {
            hash: Hash::of(b"blob"),
        };
        assert_eq!(Request::decode(&encode_frame(&req)[4..]), Ok(req));
        let size = 1 << 50; // the largest blob: its group indices are the longest varints
        let total = size / CHUNK_GROUP_BYTES;
        let full = HaveResponse::Held {
            size,
            complete: false,
            groups: (0..MAX_HAVE_RANGES as u64)
                .map(|i| {
                    total - 2 * MAX_HAVE_RANGES as u64 + 2 * i
                        ..total - 2 * MAX_HAVE_RANGES as u64 + 2 * i + 1
                })
                .collect(),
        };
        let frame = encode_frame(&full);
        assert!(
            frame.len() - 4 <= MAX_HAVE_BYTES as usize,
            "limits fit the frame"
        );
        assert_eq!(HaveResponse::decode(&frame[4..]), Ok(full));
        let held = |groups: Vec<std::ops::Range<u64>>| {
            HaveResponse::decode(
                &encode_frame(&HaveResponse::Held {
                    size: 10 * CHUNK_GROUP_BYTES,
                    complete: false,
                    groups,
                })[4..],
            )
        };
        assert!(held(vec![0..2, 4..10]).is_ok());
        assert!(held(vec![0..11]).is_err(), "past the last group");
        assert!(held(vec![4..6, 0..2]).is_err(), "unsorted");
        assert!(held(vec![3..3]).is_err(), "empty");
        assert!(held(vec![0..1; MAX_HAVE_RANGES + 1]).is_err(), "too many");
    }

    proptest::proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..2048)) {
            let _ = Request::decode(&bytes);
            let _ = ResponseHeader::decode(&bytes);
            let _ = HoldersResponse::decode(&bytes);
            let _ = HaveResponse::decode(&bytes);
            let _ = UpstreamResponse::decode(&bytes);
            let _ = HubFileResponse::decode(&bytes);
            let ranges = ChunkRanges::all();
            let _ = verify_response(Hash::of(b"r"), bytes.len() as u64 * 3, &ranges, &bytes[..]).count();
        }
    }
}
