//! Fetching one blob from several providers at once.
//!
//! The missing spans are cut into batches ([`BATCH_SPANS`] spans each); every provider runs
//! [`REQUESTS_PER_PEER`] request slot(s) pulling the next batch when the previous one is
//! done, so faster providers take more. A batch that fails goes back to the queue for
//! someone else; a provider that sends bad data is dropped at once, one that fails twice in
//! a row too. When nothing is left to hand out, an idle slot duplicates a batch another
//! provider has had in flight for twice the median batch time (endgame): whichever copy
//! finishes first wins, the other is cancelled, so one slow or stalled provider cannot hold
//! the fetch hostage, while equally fast providers never fetch anything twice. Every group is verified before it is
//! stored, whoever sent it.
//!
//! Providers may be partial: peers still fetching the blob themselves. Each provider is
//! first asked which chunk groups it holds (`Request::Have`, asked again when it has nothing
//! we need), and a partial one is given only batches it holds spans of, and asked only for
//! those spans. Each fetcher walks the blob's batches from its own starting point (derived
//! from its peer id), so peers fetching together from one seeder hold different parts
//! early and can trade them. Providers found while the blob is being fetched (through the
//! holder exchange) join through a [`PeerFeed`].

use std::{
    collections::{HashMap, VecDeque},
    ops::Range,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use commons_protocol::{
    tree::CHUNK_GROUP_BYTES,
    wire::{GroupRange, HaveResponse},
    Hash,
};
use libp2p::{
    futures::{stream::FuturesUnordered, StreamExt},
    PeerId,
};
use tokio::sync::watch;

use super::{
    client::{fetch_round, span_ranges_to_groups},
    exchange::ask_have,
    limit::RateLimit,
    FetchError, TransferStats,
};
use crate::{
    net::Host,
    store::{AsyncStore, BlobId, BlobState, StoreError},
};

/// Spans per request: 4 MiB with 256 KiB spans. Small enough to spread a blob over many
/// providers and to lose little when one fails, large enough that a request's round trip
/// is a small part of its time.
pub const BATCH_SPANS: u64 = 16;
/// Requests in flight per provider. Two: while one request's tail is verified and stored
/// and the next is asked for, the other keeps data coming, so the provider never waits
/// for us between batches (the round trip, on real links). On loopback (1 GiB, one
/// seeder, runs alternated) two took a median 3.36 s against 3.76 s for one; three or four
/// were no faster and used more memory (docs/benchmarks.md).
pub const REQUESTS_PER_PEER: usize = 2;
/// Before any batch has completed, a batch in flight this long may be duplicated by an
/// idle provider (afterwards: twice the median batch time).
const ENDGAME_FIRST_WAIT: Duration = Duration::from_secs(5);
/// How often an idle request slot looks for stalled batches to duplicate.
const ENDGAME_POLL: Duration = Duration::from_millis(50);
/// Consecutive failures (other than bad data) after which a provider is dropped; requests
/// that were in flight together and fail together count once.
const MAX_PEER_FAILURES: u32 = 2;
/// Scheduling rounds per blob: a round ends when no slot can take more work.
const MAX_ROUNDS: usize = 16;
/// Providers one blob is fetched from at once, counting those that join mid-fetch.
pub const MAX_SWARM_PEERS: usize = 8;
/// How old a partial provider's list of held ranges may get before it is asked again, when
/// nothing it was known to hold is still needed.
const HAVE_REFRESH: Duration = Duration::from_secs(1);

/// Providers that join a blob's fetch while it runs (from the holder exchange); a feed
/// that never yields is [`PeerFeed::none`].
pub struct PeerFeed(Option<tokio::sync::mpsc::Receiver<PeerId>>);

impl PeerFeed {
    /// A feed fed by `rx`.
    pub fn new(rx: tokio::sync::mpsc::Receiver<PeerId>) -> Self {
        Self(Some(rx))
    }

    /// A feed with no one joining.
    pub fn none() -> Self {
        Self(None)
    }

    /// The next provider to join; pends forever once the feed is empty and closed.
    async fn next(&mut self) -> PeerId {
        if let Some(rx) = &mut self.0 {
            if let Some(peer) = rx.recv().await {
                return peer;
            }
            self.0 = None;
        }
        std::future::pending().await
    }
}

/// What happened to the providers of one blob.
#[derive(Debug, Default)]
pub struct SwarmReport {
    /// Providers dropped, with why: callers drop those that misbehaved for the whole fetch.
    pub dropped: Vec<(PeerId, FetchError)>,
    /// Providers that sent at least one verified batch.
    pub contributed: Vec<PeerId>,
}

/// Why a blob could not be had from any of its providers.
#[derive(Debug, thiserror::Error)]
#[error("no provider could supply {} of {hash}{}", describe_missing(.missing), describe_errors(.report))]
pub struct SwarmError {
    /// The blob.
    pub hash: Hash,
    /// Byte ranges still missing (empty when even the size is unknown).
    pub missing: Vec<Range<u64>>,
    /// What each provider did.
    pub report: SwarmReport,
}

fn describe_missing(missing: &[Range<u64>]) -> String {
    match missing {
        [] => "any byte".into(),
        [r] => format!("bytes {}..{}", r.start, r.end),
        [r, ..] => format!(
            "bytes {}..{} and {} more ranges",
            r.start,
            r.end,
            missing.len() - 1
        ),
    }
}

fn describe_errors(report: &SwarmReport) -> String {
    if report.dropped.is_empty() {
        return String::new();
    }
    let each: Vec<String> = report.dropped.iter().map(|(_, e)| e.to_string()).collect();
    format!(": {}", each.join("; "))
}

/// Fetches whatever part of blob `hash` the store is missing from `peers` (connected or
/// dialable by the host), then marks it complete. `progress` receives response bytes.
#[allow(clippy::too_many_arguments)]
pub async fn swarm_blob(
    host: &Host,
    store: &AsyncStore,
    peers: &[PeerId],
    feed: &mut PeerFeed,
    hash: Hash,
    stats: &Arc<TransferStats>,
    progress: Arc<dyn Fn(u64) + Send + Sync>,
    limit: Option<&RateLimit>,
) -> Result<SwarmReport, SwarmError> {
    let mut live: Vec<PeerId> = peers.iter().copied().take(MAX_SWARM_PEERS).collect();
    let mut report = SwarmReport::default();
    let fail = |report: SwarmReport, missing: Vec<Range<u64>>| SwarmError {
        hash,
        missing,
        report,
    };
    // Spans still missing after the last round: a round that stores nothing ends the fetch.
    let mut missing_before: Option<u64> = None;
    for _ in 0..MAX_ROUNDS {
        let meta = match store.run(move |s| s.blob(&hash)).await {
            Ok(meta) => meta,
            Err(e) => {
                report.dropped.push((host.peer_id(), e.into()));
                return Err(fail(report, Vec::new()));
            }
        };
        let Some(meta) = meta else {
            // Size unknown: the first span alone, from the first provider that answers.
            learn_size(
                host,
                store,
                &mut live,
                hash,
                stats,
                &progress,
                limit,
                &mut report,
            )
            .await;
            if live.is_empty() {
                return Err(fail(report, Vec::new()));
            }
            continue;
        };
        if meta.state == BlobState::Complete {
            return Ok(report);
        }
        let (id, size) = (meta.id, meta.size);
        let missing = match store.run(move |s| s.missing_spans(id, size)).await {
            Ok(missing) => missing,
            Err(e) => {
                report.dropped.push((host.peer_id(), e.into()));
                return Err(fail(report, Vec::new()));
            }
        };
        if missing.is_empty() {
            let started = Instant::now();
            let completed = store.run(move |s| s.complete_partial(&hash)).await;
            tracing::debug!(%hash, millis = started.elapsed().as_millis() as u64, "blob complete: outboard built");
            if let Err(e) = completed {
                report.dropped.push((host.peer_id(), e.into()));
                return Err(fail(report, Vec::new()));
            }
            return Ok(report);
        }
        let count: u64 = missing.iter().map(|r| r.end - r.start).sum();
        if live.is_empty() || missing_before == Some(count) {
            return Err(fail(report, store.span_byte_ranges(&missing, meta.size)));
        }
        missing_before = Some(count);
        let mut schedule = Schedule::new(&missing, BATCH_SPANS);
        schedule.start_at(start_point(&host.peer_id()));
        let round = Round {
            host,
            store,
            hash,
            id: meta.id,
            size: meta.size,
            stats,
            progress: &progress,
            limit,
            schedule: Mutex::new(schedule),
            peers: Mutex::new(live.iter().map(|p| (*p, PeerState::default())).collect()),
            first_slots: tokio::sync::Notify::new(),
        };
        // A provider's first slot, then its extra ones (which wait for the first to have a
        // batch), so the first batches go to different providers.
        let mut slots: FuturesUnordered<_> = (0..REQUESTS_PER_PEER)
            .flat_map(|i| live.iter().map(move |peer| (*peer, i > 0)))
            .map(|(peer, extra)| round.slot(peer, extra))
            .collect();
        loop {
            tokio::select! {
                next = slots.next() => if next.is_none() { break },
                peer = feed.next() => {
                    let joined = {
                        let mut peers = round.lock_peers();
                        let room = peers.len() < MAX_SWARM_PEERS;
                        room && peer != host.peer_id() && peers.insert(peer, PeerState::default()).is_none()
                    };
                    if joined {
                        tracing::debug!(%peer, %hash, "provider joins the fetch");
                        for i in 0..REQUESTS_PER_PEER {
                            slots.push(round.slot(peer, i > 0));
                        }
                    }
                }
            }
        }
        drop(slots);
        let peers = round.peers.into_inner().unwrap_or_else(|e| e.into_inner());
        live.clear();
        for (peer, state) in peers {
            if state.contributed && !report.contributed.contains(&peer) {
                report.contributed.push(peer);
            }
            match state.dropped_for {
                Some(error) => report.dropped.push((peer, error)),
                None => live.push(peer),
            }
        }
    }
    let missing = store
        .run(move |s| {
            let Some(meta) = s.blob(&hash)? else {
                return Ok(Vec::new());
            };
            let spans = s.missing_spans(meta.id, meta.size)?;
            Ok::<_, StoreError>(s.span_byte_ranges(&spans, meta.size))
        })
        .await
        .unwrap_or_default();
    Err(fail(report, missing))
}

/// Asks providers in turn for the first span until one answers with data, which fixes the
/// blob's size; drops those that misbehave or fail.
#[allow(clippy::too_many_arguments)]
async fn learn_size(
    host: &Host,
    store: &AsyncStore,
    live: &mut Vec<PeerId>,
    hash: Hash,
    stats: &Arc<TransferStats>,
    progress: &Arc<dyn Fn(u64) + Send + Sync>,
    limit: Option<&RateLimit>,
    report: &mut SwarmReport,
) {
    let first = vec![GroupRange {
        start: 0,
        end: Some(store.span_bytes() / CHUNK_GROUP_BYTES),
    }];
    // A peer that refuses (say, one still fetching that lacks the first span) stays a
    // provider for later, unless every one refuses.
    let mut refused = Vec::new();
    for peer in live.clone() {
        match fetch_round(
            host,
            store,
            peer,
            hash,
            first.clone(),
            None,
            false,
            stats,
            progress,
            limit,
        )
        .await
        {
            Ok(_) => {
                if !report.contributed.contains(&peer) {
                    report.contributed.push(peer);
                }
                return;
            }
            Err(e) => {
                tracing::info!(%peer, error = %e, "provider failed");
                if matches!(e, FetchError::Refused { .. }) {
                    refused.push((peer, e));
                } else {
                    live.retain(|p| *p != peer);
                    report.dropped.push((peer, e));
                }
            }
        }
    }
    for (peer, e) in refused {
        live.retain(|p| *p != peer);
        report.dropped.push((peer, e));
    }
}

/// Where this node starts walking a blob's batches, as a fraction of the way in: derived
/// from its peer id, so nodes fetching together start at different places.
fn start_point(me: &PeerId) -> f64 {
    let bytes = me.to_bytes();
    let tail: [u8; 8] = bytes[bytes.len().saturating_sub(8)..]
        .try_into()
        .unwrap_or_default();
    (u64::from_le_bytes(tail) % 1_000_000) as f64 / 1_000_000.0
}

/// The spans (of `span_groups` groups) wholly inside the held group ranges of a blob of
/// `groups` groups, whose last span may be short.
fn held_spans(held: &[Range<u64>], groups: u64, span_groups: u64) -> Vec<Range<u64>> {
    let spans = groups.div_ceil(span_groups);
    held.iter()
        .filter_map(|r| {
            let first = r.start.div_ceil(span_groups);
            let end = if r.end >= groups {
                spans
            } else {
                r.end / span_groups
            };
            (first < end).then_some(first..end)
        })
        .collect()
}

/// The parts of span ranges `a` that are also in span ranges `b` (both sorted).
fn intersect(a: &[Range<u64>], b: &[Range<u64>]) -> Vec<Range<u64>> {
    let mut out = Vec::new();
    for x in a {
        for y in b {
            let (start, end) = (x.start.max(y.start), x.end.min(y.end));
            if start < end {
                out.push(start..end);
            }
        }
    }
    out
}

#[derive(Default)]
struct PeerState {
    failures: u32,
    /// When the last counted failure happened: requests already in flight then that fail
    /// too are not counted again (one cause, e.g. a connection closing under several
    /// requests, such as a relayed one after a hole punch, is one failure).
    last_failure: Option<Instant>,
    contributed: bool,
    dropped_for: Option<FetchError>,
    /// The spans a partial provider holds (`None`: a complete provider), and when it said.
    have: Option<(Arc<Vec<Range<u64>>>, Instant)>,
    /// Its slot has stopped for this round (a partial provider with nothing left to give).
    departed: bool,
    /// Its first slot has taken a batch (or stopped); extra slots start when every
    /// provider's has.
    first_slot_started: bool,
}

/// One scheduling round over a fixed set of missing spans.
struct Round<'a> {
    host: &'a Host,
    store: &'a AsyncStore,
    hash: Hash,
    id: BlobId,
    size: u64,
    stats: &'a Arc<TransferStats>,
    progress: &'a Arc<dyn Fn(u64) + Send + Sync>,
    /// This fetch's own download limit (`get --limit-rate`), on top of the node's.
    limit: Option<&'a RateLimit>,
    schedule: Mutex<Schedule>,
    peers: Mutex<HashMap<PeerId, PeerState>>,
    /// Wakes extra slots when a first slot has started.
    first_slots: tokio::sync::Notify,
}

impl Round<'_> {
    fn lock_schedule(&self) -> std::sync::MutexGuard<'_, Schedule> {
        self.schedule.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_peers(&self) -> std::sync::MutexGuard<'_, HashMap<PeerId, PeerState>> {
        self.peers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `peer`'s slot stops: what it holds no longer holds back complete providers.
    fn leave(&self, peer: PeerId) {
        if let Some(s) = self.lock_peers().get_mut(&peer) {
            s.departed = true;
        }
    }

    /// Drops `peer` from this blob's fetch for `error`.
    fn drop_peer(&self, peer: PeerId, error: FetchError) {
        if let Some(s) = self.lock_peers().get_mut(&peer) {
            s.dropped_for.get_or_insert(error);
        }
    }

    /// Asks `peer` which spans it holds and records the answer; drops it if it holds the
    /// blob at another size, breaks the protocol, or cannot be reached.
    async fn refresh_have(&self, peer: PeerId) {
        let answer = ask_have(self.host, peer, self.hash).await;
        let span_groups = self.store.span_bytes() / CHUNK_GROUP_BYTES;
        let groups = commons_protocol::partial::group_count(self.size);
        let have = match answer {
            // A server from before `Have` existed: treat it as a complete provider.
            Ok(None) => None,
            Ok(Some(HaveResponse::NotFound)) => Some(Vec::new()),
            // A complete provider's claim is settled by the data (see `fetch_round`); a
            // partial one's is not proven, so a different one only drops it.
            Ok(Some(HaveResponse::Held { complete: true, .. })) => None,
            Ok(Some(HaveResponse::Held { size, .. })) if size != self.size => {
                let answer = format!("it holds {size} bytes of it, not {}", self.size);
                return self.drop_peer(
                    peer,
                    FetchError::Refused {
                        peer,
                        hash: self.hash,
                        answer,
                    },
                );
            }
            Ok(Some(HaveResponse::Held { groups: held, .. })) => {
                Some(held_spans(&held, groups, span_groups))
            }
            Err(e) => return self.drop_peer(peer, e),
        };
        if let Some(s) = self.lock_peers().get_mut(&peer) {
            s.have = have.map(|spans| (Arc::new(spans), Instant::now()));
        }
    }

    /// One request slot of `peer`: takes batches until none is left or the peer is dropped.
    /// One request slot of `peer`. An `extra` slot (the second of [`REQUESTS_PER_PEER`])
    /// starts once every provider's first slot has a batch (or has stopped), so with few
    /// batches every provider gets one before any gets two.
    async fn slot(&self, peer: PeerId, extra: bool) {
        if extra {
            loop {
                let started = self.first_slots.notified();
                tokio::pin!(started);
                started.as_mut().enable();
                {
                    let peers = self.lock_peers();
                    match peers.get(&peer) {
                        Some(s) if s.dropped_for.is_none() && !s.departed => {}
                        _ => return,
                    }
                    let all_started = peers
                        .values()
                        .all(|s| s.first_slot_started || s.dropped_for.is_some() || s.departed);
                    if all_started {
                        break;
                    }
                }
                started.await;
            }
        } else {
            self.refresh_have(peer).await;
        }
        self.run_slot(peer).await;
        if !extra {
            self.first_slot_started(peer);
        }
    }

    /// Notes that `peer`'s first slot has started, which may let extra slots start.
    fn first_slot_started(&self, peer: PeerId) {
        if let Some(s) = self.lock_peers().get_mut(&peer) {
            s.first_slot_started = true;
        }
        self.first_slots.notify_waiters();
    }

    async fn run_slot(&self, peer: PeerId) {
        let mut idle_since: Option<Instant> = None;
        loop {
            let (mut have, others) = {
                let peers = self.lock_peers();
                let Some(me) = peers.get(&peer).filter(|s| s.dropped_for.is_none()) else {
                    return;
                };
                // What the partial providers hold: a complete provider is asked first for
                // what none of them has, so the scarce copy is fetched where it exists.
                let others: Vec<_> = peers
                    .values()
                    .filter(|s| s.dropped_for.is_none() && !s.departed)
                    .filter_map(|s| s.have.as_ref().map(|(h, _)| h.clone()))
                    .collect();
                (me.have.clone(), others)
            };
            if have
                .as_ref()
                .is_some_and(|(_, at)| at.elapsed() > HAVE_REFRESH)
            {
                self.refresh_have(peer).await;
                have = match self.lock_peers().get(&peer) {
                    Some(s) if s.dropped_for.is_none() => s.have.clone(),
                    _ => return,
                };
            }
            let next = self.lock_schedule().take(
                peer,
                have.as_ref().map(|(spans, _)| spans.as_slice()),
                &others,
                Instant::now(),
            );
            let (batch, mut done) = match next {
                Take::Batch(batch, done) => {
                    idle_since = None;
                    self.first_slot_started(peer);
                    (batch, done)
                }
                Take::Wait => {
                    // A partial provider with nothing we need (its list is refreshed every
                    // HAVE_REFRESH above): if that lasts, and no one else is fetching
                    // anything it could catch up on, it is of no more use in this round.
                    if have.is_some() && self.lock_schedule().in_flight.is_empty() {
                        let since = *idle_since.get_or_insert_with(Instant::now);
                        if since.elapsed() > 2 * HAVE_REFRESH {
                            return self.leave(peer);
                        }
                    } else {
                        idle_since = None;
                    }
                    tokio::time::sleep(ENDGAME_POLL).await;
                    continue;
                }
                Take::Done => return,
            };
            // A batch handed out again (after a failure, or in endgame) may be partly stored
            // already: ask only for what is still missing of it, and of a partial
            // provider only what it holds.
            let spans = self.lock_schedule().spans(batch);
            let mut missing = self.missing_of(spans.clone()).await;
            if let Some((held, _)) = &have {
                missing = intersect(&missing, held);
            }
            if missing.is_empty() {
                self.finish_batch(batch, peer, spans, false).await;
                continue;
            }
            let ranges = span_ranges_to_groups(self.store.span_bytes(), &missing, self.size);
            let asked_at = Instant::now();
            let request = fetch_round(
                self.host,
                self.store,
                peer,
                self.hash,
                ranges,
                Some(self.size),
                have.is_some(),
                self.stats,
                self.progress,
                self.limit,
            );
            let result = tokio::select! {
                r = request => Some(r),
                // Another provider finished this batch first (endgame): stop asking.
                _ = done.wait_for(|d| *d) => None,
            };
            match result {
                None => {}
                Some(Ok(true)) => {
                    self.finish_batch(batch, peer, spans, true).await;
                    let mut peers = self.lock_peers();
                    if let Some(s) = peers.get_mut(&peer) {
                        s.failures = 0;
                        s.contributed = true;
                    }
                }
                // A partial provider no longer (or not yet) holds what it said: ask again.
                // Twice in a row, and it is dropped like any failing provider.
                Some(Err(e @ FetchError::Refused { .. })) if have.is_some() => {
                    self.lock_schedule().give_back(batch, peer, None);
                    let failed_twice = self.lock_peers().get_mut(&peer).is_some_and(|s| {
                        s.failures += 1;
                        s.failures >= MAX_PEER_FAILURES
                    });
                    if failed_twice {
                        self.drop_peer(peer, e);
                    } else {
                        self.refresh_have(peer).await;
                    }
                }
                // The blob restarted for another size claim: this round's plan is void.
                Some(Ok(false)) => {
                    self.lock_schedule().abandon();
                    return;
                }
                Some(Err(e)) => {
                    self.lock_schedule()
                        .finish(batch, peer, false, Instant::now());
                    tracing::info!(%peer, error = %e, "provider failed");
                    let mut peers = self.lock_peers();
                    // A request cut because a punch closed its relayed connection is not
                    // the peer's failure: it goes on over the direct one.
                    let cut_by_punch = self.host.punched_since(&peer, asked_at);
                    if let Some(s) = peers.get_mut(&peer) {
                        if !cut_by_punch && s.last_failure.is_none_or(|at| asked_at > at) {
                            s.failures += 1;
                            s.last_failure = Some(Instant::now());
                        }
                        if e.peer_misbehaved() || s.failures >= MAX_PEER_FAILURES {
                            s.dropped_for = Some(e);
                        }
                    }
                }
            }
        }
    }
}

impl Round<'_> {
    /// The spans of `spans` still missing (all of them when the store cannot say).
    async fn missing_of(&self, spans: Range<u64>) -> Vec<Range<u64>> {
        let id = self.id;
        let asked = spans.clone();
        self.store
            .run(move |s| s.missing_spans_in(id, asked))
            .await
            .unwrap_or_else(|_| vec![spans])
    }

    /// `peer` has fetched what it could of `batch`: done if nothing of it is missing any
    /// more, else back to the queue for others (a partial provider held only part of it);
    /// if `peer` `fetched` nothing of it, after a pause, so a slot with nothing else to do
    /// does not spin on it.
    async fn finish_batch(&self, batch: usize, peer: PeerId, spans: Range<u64>, fetched: bool) {
        let left = self.missing_of(spans).await;
        if left.is_empty() {
            self.lock_schedule()
                .finish(batch, peer, true, Instant::now());
        } else {
            self.lock_schedule().give_back(batch, peer, Some(left));
            if !fetched {
                tokio::time::sleep(ENDGAME_POLL).await;
            }
        }
    }
}

/// What a request slot should do next.
#[derive(Debug)]
enum Take {
    /// Fetch this batch; the receiver fires when someone completes it.
    Batch(usize, watch::Receiver<bool>),
    /// Nothing to do now, but batches are still in flight: look again shortly.
    Wait,
    /// Every batch is done.
    Done,
}

/// Which batches of spans are waiting, in flight (with whom, since when), or done.
#[derive(Debug)]
struct Schedule {
    batches: Vec<Range<u64>>,
    waiting: VecDeque<usize>,
    fetching: Vec<Vec<(PeerId, Instant)>>,
    done: Vec<watch::Sender<bool>>,
    /// Batches not yet done, so "all done" needs no scan.
    undone: usize,
    /// Batches someone is fetching: the endgame looks only at these, never at them all.
    in_flight: std::collections::BTreeSet<usize>,
    /// How long the last [`RECENT_BATCHES`] completed batches took, for the endgame's
    /// idea of "too slow".
    took: VecDeque<Duration>,
    /// What batches partly fetched from partial providers still lack.
    left: HashMap<usize, Vec<Range<u64>>>,
}

/// Completed batch times the endgame's median is taken over.
const RECENT_BATCHES: usize = 32;

impl Schedule {
    /// Cuts span ranges into batches of at most `per_batch` spans, in order.
    fn new(missing: &[Range<u64>], per_batch: u64) -> Self {
        let mut batches = Vec::new();
        for r in missing {
            let mut start = r.start;
            while start < r.end {
                let end = r.end.min(start + per_batch.max(1));
                batches.push(start..end);
                start = end;
            }
        }
        let n = batches.len();
        Self {
            batches,
            waiting: (0..n).collect(),
            fetching: vec![Vec::new(); n],
            done: (0..n).map(|_| watch::channel(false).0).collect(),
            undone: n,
            in_flight: std::collections::BTreeSet::new(),
            took: VecDeque::with_capacity(RECENT_BATCHES),
            left: HashMap::new(),
        }
    }

    fn spans(&self, batch: usize) -> Range<u64> {
        self.batches[batch].clone()
    }

    fn is_done(&self, batch: usize) -> bool {
        *self.done[batch].borrow()
    }

    /// In flight this long, a batch counts as stalled: twice the median time the recent
    /// batches took, or [`ENDGAME_FIRST_WAIT`] before any finished.
    fn stalled_after(&self) -> Duration {
        let mut took: Vec<Duration> = self.took.iter().copied().collect();
        took.sort();
        took.get(took.len() / 2)
            .map_or(ENDGAME_FIRST_WAIT, |median| *median * 2)
    }

    /// Starts the queue `fraction` of the way in (wrapping around), so peers fetching the
    /// same blob together ask for different parts first.
    fn start_at(&mut self, fraction: f64) {
        let n = self.waiting.len();
        let at = ((n as f64 * fraction) as usize).min(n.saturating_sub(1));
        self.waiting.rotate_left(at);
    }

    /// The first waiting batch `peer` can help with: any for a complete provider (`held`
    /// is `None`), else one reaching into a span it holds.
    fn first_waiting(
        &mut self,
        held: Option<&[Range<u64>]>,
        others: &[Arc<Vec<Range<u64>>>],
    ) -> Option<usize> {
        let at = match held {
            Some(held) => self.position_for(held)?,
            None if others.is_empty() => 0,
            // A batch no partial provider can give, picked at random so that peers fetching
            // together from one seeder rarely ask it for the same one; none such: leave
            // the rest to the partial providers (the endgame still rescues a stalled one).
            None => {
                let scarce: Vec<usize> = (0..self.waiting.len())
                    .filter(|&i| {
                        let b = self.waiting[i];
                        !others.iter().any(|o| self.lacks_some_of(b, o))
                    })
                    .collect();
                if scarce.is_empty() {
                    return None;
                }
                // RandomState is randomly keyed: a fresh one is a cheap random number.
                let pick = std::hash::BuildHasher::hash_one(
                    &std::collections::hash_map::RandomState::new(),
                    self.undone,
                );
                scarce[pick as usize % scarce.len()]
            }
        };
        self.waiting.remove(at)
    }

    /// Where in the queue the first batch is that still lacks some of the spans `held`.
    fn position_for(&self, held: &[Range<u64>]) -> Option<usize> {
        self.waiting
            .iter()
            .position(|&b| self.lacks_some_of(b, held))
    }

    /// Whether batch `b` still lacks a span within `held` (sorted span ranges).
    fn lacks_some_of(&self, b: usize, held: &[Range<u64>]) -> bool {
        let overlaps = |r: &Range<u64>| {
            let i = held.partition_point(|h| h.end <= r.start);
            held.get(i).is_some_and(|h| h.start < r.end)
        };
        match self.left.get(&b) {
            Some(left) => left.iter().any(overlaps),
            None => overlaps(&self.batches[b]),
        }
    }

    /// The next thing for `peer` to do at `now`: a waiting batch it can help with, if any
    /// (for a complete provider, preferably one none of the partial providers' spans
    /// `others` covers); else (endgame, complete providers only) a batch exactly one other
    /// peer has been fetching for too long; else wait, or stop.
    fn take(
        &mut self,
        peer: PeerId,
        held: Option<&[Range<u64>]>,
        others: &[Arc<Vec<Range<u64>>>],
        now: Instant,
    ) -> Take {
        let batch = match self.first_waiting(held, others) {
            Some(b) => b,
            None if held.is_some() && self.undone > 0 => return Take::Wait,
            None => {
                if self.undone == 0 {
                    return Take::Done;
                }
                let patience = self.stalled_after();
                let stalled = self.in_flight.iter().copied().find(|&b| {
                    !self.is_done(b)
                        && matches!(self.fetching[b][..], [(other, since)]
                        if other != peer && now.duration_since(since) > patience)
                });
                match stalled {
                    Some(b) => b,
                    None => return Take::Wait,
                }
            }
        };
        self.fetching[batch].push((peer, now));
        self.in_flight.insert(batch);
        Take::Batch(batch, self.done[batch].subscribe())
    }

    /// `peer` is done with `batch` at `now`: completed it (`ok`) or gave up; a batch nobody
    /// is fetching any more goes back to the front of the queue.
    fn finish(&mut self, batch: usize, peer: PeerId, ok: bool, now: Instant) {
        let since = self.fetching[batch]
            .iter()
            .find(|(p, _)| *p == peer)
            .map(|(_, t)| *t);
        self.fetching[batch].retain(|(p, _)| *p != peer);
        if self.fetching[batch].is_empty() {
            self.in_flight.remove(&batch);
        }
        if ok {
            self.left.remove(&batch);
            if !self.is_done(batch) {
                self.undone -= 1;
                if let Some(since) = since {
                    if self.took.len() == RECENT_BATCHES {
                        self.took.pop_front();
                    }
                    self.took.push_back(now.duration_since(since));
                }
            }
            self.done[batch].send_replace(true);
        } else if !self.is_done(batch) && self.fetching[batch].is_empty() {
            self.waiting.push_front(batch);
        }
    }

    /// `peer` stops working on `batch` without having failed: unless done, or someone
    /// else has it, it goes back to the front of the queue.
    /// `left`, when known, is what the batch still lacks: only providers holding some of
    /// it are given the batch again.
    fn give_back(&mut self, batch: usize, peer: PeerId, left: Option<Vec<Range<u64>>>) {
        if let Some(left) = left {
            self.left.insert(batch, left);
        }
        self.fetching[batch].retain(|(p, _)| *p != peer);
        if self.fetching[batch].is_empty() {
            self.in_flight.remove(&batch);
            if !self.is_done(batch) {
                self.waiting.push_front(batch);
            }
        }
    }

    /// Stops handing out work (the blob's layout changed).
    fn abandon(&mut self) {
        self.waiting.clear();
        self.undone = 0;
        for d in &self.done {
            d.send_replace(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::single_range_in_vec_init)] // lists of span ranges, not ranges of values
    fn batches_cover_the_missing_spans_in_order() {
        let s = Schedule::new(&[0..5, 9..10], 2);
        assert_eq!(s.batches, vec![0..2, 2..4, 4..5, 9..10]);
    }

    fn batch(t: Take) -> usize {
        match t {
            Take::Batch(b, _) => b,
            other => panic!("expected a batch, got {other:?}"),
        }
    }

    #[test]
    #[allow(clippy::single_range_in_vec_init)] // lists of span ranges, not ranges of values
    fn peers_pull_batches_and_duplicate_only_stalled_ones() {
        let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut s = Schedule::new(&[0..3], 1);
        assert_eq!(batch(s.take(a, None, &[], at(0))), 0);
        assert_eq!(batch(s.take(b, None, &[], at(0))), 1);
        s.finish(1, b, true, at(100)); // a batch takes 100 ms: stalled after 200 ms
        assert_eq!(batch(s.take(b, None, &[], at(100))), 2);
        // Nothing waits, and nothing in flight is stalled yet: c waits.
        assert!(matches!(s.take(c, None, &[], at(150)), Take::Wait));
        // a's batch 0 is 250 ms old: c duplicates it; b's batch 2 is not stalled.
        let Take::Batch(dup, mut dup_done) = s.take(c, None, &[], at(250)) else {
            panic!("c duplicates a's stalled batch");
        };
        assert_eq!(dup, 0);
        assert!(
            matches!(s.take(c, None, &[], at(250)), Take::Wait),
            "one copy at most"
        );
        s.finish(0, a, true, at(260));
        assert!(*dup_done.borrow_and_update(), "c's copy is told to stop");
        s.finish(0, c, false, at(265));
        assert!(s.waiting.is_empty(), "a done batch is never requeued");
        s.finish(2, b, true, at(280));
        assert!(matches!(s.take(c, None, &[], at(300)), Take::Done));
    }

    #[test]
    #[allow(clippy::single_range_in_vec_init)]
    fn a_failed_batch_goes_back_to_the_front_for_another_peer() {
        let (a, b) = (PeerId::random(), PeerId::random());
        let mut s = Schedule::new(&[0..2], 1);
        let now = Instant::now();
        let first = batch(s.take(a, None, &[], now));
        s.finish(first, a, false, now);
        assert_eq!(batch(s.take(b, None, &[], now)), 0, "requeued first");
    }
}
