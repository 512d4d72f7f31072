//! Fetching one blob from one peer, resumably.
//!
//! The client asks for the spans its store is missing (everything, the first time), checks
//! each 16 KiB group against the root as it arrives, assembles whole spans and commits each
//! with its verified mark in one batch. A kill at any moment loses at most the span in
//! flight; the next run asks only for what is still missing. The first bad group ends the
//! fetch with an error naming the peer and offset; nothing of that group is stored.

use std::{sync::Arc, time::Duration};

use commons_protocol::{
    partial,
    tree::CHUNK_GROUP_BYTES,
    wire::{
        chunk_ranges, encode_frame, verify_response_items, DataError, GroupRange, Request,
        ResponseHeader, VerifiedItem, WireError, MAX_HEADER_BYTES, MAX_REQUEST_RANGES,
    },
    Hash,
};
use libp2p::{futures::AsyncWriteExt, PeerId};
use tokio::sync::mpsc;

use super::{
    io::{pump, read_frame, ChannelReader, CHUNK_QUEUE},
    TransferStats,
};
use crate::{
    net::{Host, NetError},
    store::{AsyncStore, Store, StoreError},
};

/// How long a peer may stay silent mid-response.
pub const RESPONSE_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a request answered `Busy` is asked again (first after [`BUSY_FIRST_WAIT`], then
/// doubling) before the answer counts as a refusal: 40 s. `Busy` is a provider's way of
/// saying "later": its send buffer is taken (`ServeLimits::send_wait`, 10 s), or it still
/// counts the requests of a client that crashed and came back, until their connection's
/// idle timeout (10 s) and write timeout end them. A restarted `get` must not give up on
/// every provider for that.
pub const BUSY_PATIENCE: Duration = Duration::from_secs(40);
/// The first wait before a request answered `Busy` is asked again.
pub const BUSY_FIRST_WAIT: Duration = Duration::from_millis(500);
/// Why fetching from a peer failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The peer could not be reached.
    #[error(transparent)]
    Net(#[from] NetError),
    /// The stream failed (closed, reset, timed out).
    #[error("peer {peer}: {reason}")]
    Stream {
        /// The peer.
        peer: PeerId,
        /// What happened.
        reason: String,
    },
    /// The peer answered, but not with data.
    #[error("peer {peer} answered: {answer}")]
    Refused {
        /// The peer.
        peer: PeerId,
        /// The blob.
        hash: Hash,
        /// Its answer.
        answer: String,
    },
    /// The peer sent bytes that fail verification (or lied about the size).
    #[error(
        "peer {peer} sent bad data for {hash} at byte offset {offset}; nothing of it was stored"
    )]
    BadData {
        /// The peer.
        peer: PeerId,
        /// The blob.
        hash: Hash,
        /// Where the bad group starts.
        offset: u64,
    },
    /// The peer stopped before sending everything it promised.
    #[error("peer {peer} stopped sending {hash} at byte offset {offset}")]
    Truncated {
        /// The peer.
        peer: PeerId,
        /// The blob.
        hash: Hash,
        /// Where data stopped.
        offset: u64,
    },
    /// The peer broke the protocol.
    #[error("peer {peer} broke the protocol: {source}")]
    Protocol {
        /// The peer.
        peer: PeerId,
        /// What was wrong.
        source: WireError,
    },
    /// Our store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl FetchError {
    /// Whether the peer itself misbehaved (bad data, lies, broken protocol), as opposed to
    /// being unreachable or not having the blob: a misbehaving peer should be dropped.
    pub fn peer_misbehaved(&self) -> bool {
        matches!(
            self,
            Self::BadData { .. }
                | Self::Protocol { .. }
                | Self::Store(StoreError::SizeConflict { .. })
        )
    }
}

/// Fetches whatever part of blob `hash` the store is missing from `peer` alone (see
/// [`super::swarm_blob`] for several providers), then marks the blob complete.
pub async fn fetch_blob(
    host: &Host,
    store: &AsyncStore,
    peer: PeerId,
    hash: Hash,
    stats: &Arc<TransferStats>,
    progress: Arc<dyn Fn(u64) + Send + Sync>,
) -> Result<(), FetchError> {
    let mut feed = super::PeerFeed::none();
    match super::swarm_blob(host, store, &[peer], &mut feed, hash, stats, progress, None).await {
        Ok(_) => Ok(()),
        Err(mut e) => Err(match e.report.dropped.pop() {
            Some((_, error)) => error,
            None => FetchError::Stream {
                peer,
                reason: e.to_string(),
            },
        }),
    }
}

/// Group ranges covering the given span ranges (at most [`MAX_REQUEST_RANGES`]); the range
/// holding the last span is open-ended so both sides agree on where the blob ends.
pub(super) fn span_ranges_to_groups(
    span_bytes: u64,
    spans: &[std::ops::Range<u64>],
    size: u64,
) -> Vec<GroupRange> {
    let per_span = span_bytes / CHUNK_GROUP_BYTES;
    let last = size.div_ceil(span_bytes);
    spans
        .iter()
        .take(MAX_REQUEST_RANGES)
        .map(|r| GroupRange {
            start: r.start * per_span,
            end: (r.end < last).then_some(r.end * per_span),
        })
        .collect()
}

/// One request/response. Returns `Ok(false)` when the blob was restarted for a different
/// size claim (the caller's next round asks again for the new layout). A `partial_peer`
/// (one still fetching the blob itself) never restarts it: its size claim is unproven, so a
/// different one only ends this request.
#[allow(clippy::too_many_arguments)]
pub(super) async fn fetch_round(
    host: &Host,
    store: &AsyncStore,
    peer: PeerId,
    hash: Hash,
    ranges: Vec<GroupRange>,
    expected_size: Option<u64>,
    partial_peer: bool,
    stats: &Arc<TransferStats>,
    progress: &Arc<dyn Fn(u64) + Send + Sync>,
    limit: Option<&super::limit::RateLimit>,
) -> Result<bool, FetchError> {
    let stream_err = |reason: String| FetchError::Stream { peer, reason };
    let request = encode_frame(&Request::Get {
        hash,
        ranges: ranges.clone(),
    });
    let asked = std::time::Instant::now();
    let mut wait = BUSY_FIRST_WAIT;
    let (mut stream, header) = loop {
        let mut stream =
            super::request::send_request(|| super::open_data_stream(host, peer), &request)
                .await
                .map_err(stream_err)?;
        let bulk = stream.is_bulk();
        stats.update(peer, |s| {
            s.requests_made += 1;
            s.bulk_requests += u64::from(bulk);
        });
        let header = tokio::time::timeout(
            RESPONSE_IDLE_TIMEOUT,
            read_frame(&mut stream, MAX_HEADER_BYTES),
        )
        .await
        .map_err(|_| stream_err("no answer in time".into()))?
        .map_err(|e| stream_err(e.to_string()))?;
        let busy = matches!(ResponseHeader::decode(&header), Ok(ResponseHeader::Busy));
        if busy && asked.elapsed() + wait <= BUSY_PATIENCE {
            tracing::debug!(%peer, ?wait, "busy: asking again later");
            drop(stream);
            tokio::time::sleep(wait).await;
            wait *= 2;
            continue;
        }
        break (stream, header);
    };
    let size = match ResponseHeader::decode(&header) {
        Ok(ResponseHeader::Ok { size }) => size,
        Ok(other) => {
            return Err(FetchError::Refused {
                peer,
                hash,
                answer: match other {
                    ResponseHeader::NotFound => "not found".into(),
                    ResponseHeader::NotComplete => "it holds only part of it".into(),
                    ResponseHeader::Busy => "busy, try again later".into(),
                    ResponseHeader::BadRequest(why) => format!("bad request: {why}"),
                    ResponseHeader::Ok { .. } => "ok".into(),
                },
            })
        }
        Err(source) => return Err(FetchError::Protocol { peer, source }),
    };
    if partial_peer && expected_size.is_some_and(|s| s != size) {
        let _ = stream.close().await;
        return Err(FetchError::Refused {
            peer,
            hash,
            answer: format!("it holds part of it, for another size ({size} bytes)"),
        });
    }
    let partial = store.run(move |s| s.begin_partial(&hash, size)).await?;
    if partial.complete {
        return Ok(true);
    }
    if expected_size.is_some_and(|s| s != size) {
        // The blob was restarted for this peer's size; ask again for the new layout.
        let _ = stream.close().await;
        return Ok(false);
    }

    let (tx, rx) = mpsc::channel(CHUNK_QUEUE);
    let store2 = store.clone();
    let wanted = chunk_ranges(&ranges);
    let verifier = tokio::task::spawn_blocking(move || {
        store_verified_groups(
            // On the blocking pool: this thread may use the store directly.
            store2.blocking(),
            hash,
            size,
            partial.id,
            &wanted,
            ChannelReader::new(rx),
        )
    });
    let stats2 = stats.clone();
    let progress2 = progress.clone();
    pump(
        &mut stream,
        tx,
        RESPONSE_IDLE_TIMEOUT,
        &stats.limits,
        limit,
        move |n| {
            stats2.update(peer, |s| s.bytes_received += n);
            progress2(n);
        },
    )
    .await;
    let result = verifier
        .await
        .map_err(|e| stream_err(format!("verifier failed: {e}")))?;
    match result {
        Ok(()) => Ok(true),
        Err(GroupError::Data(DataError::Mismatch { offset })) => {
            stats.update(peer, |s| s.bad_responses += 1);
            Err(FetchError::BadData { peer, hash, offset })
        }
        Err(GroupError::Data(DataError::Truncated { offset })) => {
            Err(FetchError::Truncated { peer, hash, offset })
        }
        Err(GroupError::Data(DataError::Io(e))) => Err(stream_err(e.to_string())),
        Err(GroupError::Data(other)) => Err(stream_err(other.to_string())),
        Err(GroupError::Store(e)) => Err(e.into()),
    }
}

/// Hash pairs of span subtrees, gathered from a response until their span is stored, and
/// the pairs of nodes above spans, stored with the first span below them.
struct SpanPairs {
    groups_per_span: u64,
    /// Groups in the blob.
    groups: u64,
    /// Span index → its subtree outboard being filled, and how many pairs are in.
    filling: std::collections::HashMap<u64, (Vec<u8>, u64)>,
    /// Pairs of nodes above spans (by group range), and whether they are stored yet. Nodes
    /// wholly before the span being assembled are dropped: the map holds one tree path.
    above: std::collections::BTreeMap<(u64, u64), ([u8; 64], bool)>,
}

impl SpanPairs {
    fn new(span_bytes: u64, size: u64) -> Self {
        let whole = commons_protocol::subtree::is_subtree_len(span_bytes);
        Self {
            groups_per_span: if whole {
                span_bytes / CHUNK_GROUP_BYTES
            } else {
                0
            },
            groups: partial::group_count(size),
            filling: std::collections::HashMap::new(),
            above: std::collections::BTreeMap::new(),
        }
    }

    /// Files a verified pair: with its span if its node lies inside one span's subtree,
    /// else with the nodes above spans.
    fn add(&mut self, groups: std::ops::Range<u64>, pair: &[u8; 64], span_groups: u64) {
        if !partial::inside_one_span(&groups, self.groups, span_groups) {
            self.above
                .insert((groups.start, groups.end), (*pair, false));
            return;
        }
        let g = self.groups_per_span;
        let len = groups.end - groups.start;
        if g == 0 || len > g || len < 2 {
            return;
        }
        let index = groups.start / g;
        if groups.end > (index + 1) * g {
            return;
        }
        // Pre-order: a span's pairs come just before its data, after every earlier span's
        // data. Entries of earlier spans are of spans that never completed: drop them, so
        // the map holds one or two spans whatever the response.
        self.filling.retain(|i, _| *i >= index);
        let (buf, count) = self
            .filling
            .entry(index)
            .or_insert_with(|| (vec![0u8; ((g - 1) * 64) as usize], 0));
        let at = commons_protocol::subtree::pair_index(groups.start - index * g, len) as usize * 64;
        buf[at..at + 64].copy_from_slice(pair);
        *count += 1;
    }

    /// The complete subtree outboard of span `index`, if every one of its pairs came.
    fn take(&mut self, index: u64) -> Option<Vec<u8>> {
        let (buf, count) = self.filling.remove(&index)?;
        (count == self.groups_per_span - 1).then_some(buf)
    }

    /// The pairs above span `index` (of `span_groups` groups) not stored yet, marked as
    /// stored; forgets nodes that end before this span.
    fn take_above(
        &mut self,
        index: u64,
        span_groups: u64,
    ) -> Vec<(std::ops::Range<u64>, [u8; 64])> {
        let start = index * span_groups;
        self.above.retain(|(_, end), _| *end > start);
        let mut out = Vec::new();
        for node in partial::nodes_above(start..start + span_groups, self.groups, span_groups) {
            if let Some((pair, stored)) = self.above.get_mut(&(node.start, node.end)) {
                if !*stored {
                    *stored = true;
                    out.push((node, *pair));
                }
            }
        }
        out
    }
}

enum GroupError {
    Data(DataError),
    Store(StoreError),
}

/// Verifies the response group by group and commits each whole span with its mark.
fn store_verified_groups(
    store: &Store,
    hash: Hash,
    size: u64,
    id: crate::store::BlobId,
    wanted: &bao_tree::ChunkRanges,
    encoded: ChannelReader,
) -> Result<(), GroupError> {
    let span_bytes = store.span_bytes();
    // The span being assembled; its buffer is reused from span to span.
    let mut span: Option<u64> = None;
    let mut buf: Vec<u8> = Vec::with_capacity(span_bytes as usize);
    // The verified pairs inside each span's subtree, which arrive (pre-order) before the
    // span's data: kept with the span, so nothing is hashed twice.
    let span_groups = span_bytes / CHUNK_GROUP_BYTES;
    let mut pairs = SpanPairs::new(span_bytes, size);
    for item in verify_response_items(hash, size, wanted, encoded) {
        let group = match item.map_err(GroupError::Data)? {
            VerifiedItem::Parent { groups, pair } => {
                pairs.add(groups, &pair, span_groups);
                continue;
            }
            VerifiedItem::Group(group) => group,
        };
        let index = group.offset / span_bytes;
        let span_start = index * span_bytes;
        let span_len = (size - span_start).min(span_bytes) as usize;
        if span != Some(index) {
            // A new span begins; an unfinished previous one is dropped (asked for again).
            span = Some(index);
            buf.clear();
        }
        if (group.offset - span_start) as usize != buf.len() {
            // Groups of a span arrive in order; anything else means we asked oddly.
            buf.clear();
            continue;
        }
        buf.extend_from_slice(&group.data);
        if buf.len() == span_len {
            let kept = pairs.take(index);
            let above = pairs.take_above(index, span_groups);
            store
                .put_verified_span(id, size, index, &buf, kept.as_deref(), &above)
                .map_err(GroupError::Store)?;
            span = None;
            buf.clear();
        }
    }
    Ok(())
}
