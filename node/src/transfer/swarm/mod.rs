//! Fetching one blob from several providers at once.
//!
//! The missing spans are cut into batches ([`BATCH_SPANS`] spans each); every provider runs
//! [`REQUESTS_PER_PEER`] request slot(s) pulling the next batch when the previous one is
//! done, so faster providers take more. A batch that fails goes back to the queue for
//! someone else; a provider that sends bad data is dropped at once, one that fails twice in
//! a row too. When nothing is left to hand out, an idle slot duplicates a batch another
//! provider has had in flight for twice the median batch time (endgame; the batches still in
//! flight count as taking at least their age, so ones progressing together, unevenly, on a
//! shared link are not taken for stalled before `ENDGAME_FIRST_WAIT` (5 s) beyond twice the
//! completed batches' median): whichever copy finishes first wins, the other is
//! cancelled, so one slow or stalled provider cannot hold the fetch hostage, while equally
//! fast providers never fetch anything twice. Every group is verified before it is stored,
//! whoever sent it.
//!
//! Providers may be partial: peers still fetching the blob themselves. Each provider is
//! first asked which chunk groups it holds (`Request::Have`, asked again when it has nothing
//! we need), and a partial one is given only batches it holds spans of, and asked only for
//! those spans. Each fetcher walks the blob's batches from its own starting point (derived
//! from its peer id), so peers fetching together from one seeder hold different parts
//! early and can trade them. Providers found while the blob is being fetched (by the
//! holder exchange, or the DHT asked again) are offered through a [`PeerFeed`].

pub mod machine;
mod schedule;

use std::{
    collections::HashMap,
    ops::Range,
    sync::Arc,
    time::{Duration, Instant},
};

use commons_protocol::{
    tree::CHUNK_GROUP_BYTES,
    wire::{GroupRange, HaveResponse},
    Hash,
};
use libp2p::{
    futures::{
        future::{abortable, AbortHandle, BoxFuture},
        stream::FuturesUnordered,
        FutureExt, StreamExt,
    },
    PeerId,
};

use machine::{Action, Holding, Outcome, PeerOutcome, RequestId, RoundConfig, SwarmRound};
use schedule::{held_spans, intersect};

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
// A batch's missing spans are one bit mask (`Schedule`).
const _: () = assert!(BATCH_SPANS <= schedule::MAX_BATCH_SPANS);
/// Requests in flight per provider. Two: while one request's tail is verified and stored
/// and the next is asked for, the other keeps data coming, so the provider never waits
/// for us between batches (the round trip, on real links). On loopback (1 GiB, one
/// seeder, runs alternated) two took a median 3.36 s against 3.76 s for one; three or four
/// were no faster and used more memory (docs/benchmarks.md).
pub const REQUESTS_PER_PEER: usize = 2;
/// Before any batch has completed, a batch in flight this long may be duplicated by an
/// idle provider (afterwards: twice the median batch time; while that median is unknown,
/// most other batches being still in flight and older than those done, this long beyond
/// twice the completed batches' median).
const ENDGAME_FIRST_WAIT: Duration = Duration::from_secs(5);
/// How long a request slot that found its batch already stored (by a copy that won)
/// rests before it takes another, so it does not spin on a batch others still work on.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// Consecutive failures (other than bad data) after which a provider is dropped; requests
/// that were in flight together and fail together count once.
const MAX_PEER_FAILURES: u32 = 2;
/// Scheduling rounds per blob: a round ends when no slot can take more work.
pub const MAX_ROUNDS: usize = 16;
/// Providers one blob is fetched from at once. One found mid-fetch joins while there is
/// room; when there is none, one the DHT named that holds the whole blob takes a partial
/// provider's place ([`machine::SwarmRound::offer`]).
pub const MAX_SWARM_PEERS: usize = 8;
/// Providers one scheduling round keeps (taking part, left, or dropped): bounds the round's
/// memory and per-poll work however many holders the exchange brings. When it is reached, a
/// newcomer takes the place of one that left or was dropped for an honest failure.
pub const MAX_JOINED_PEERS: usize = 4 * MAX_SWARM_PEERS;
/// How old a partial provider's list of held ranges may get before it is asked again, when
/// nothing it was known to hold is still needed.
const HAVE_REFRESH: Duration = Duration::from_secs(1);
/// The longest wait between asks of a partial provider that keeps having nothing we need:
/// the wait doubles from [`HAVE_REFRESH`] after each ask that led to no batch, so idle
/// partial providers are not asked every second for hours (the scale model's 1,000-mirror
/// flash crowd spent a third of its work on such asks), yet one that catches up is used
/// within seconds.
const MAX_HAVE_REFRESH: Duration = Duration::from_secs(8);

/// Providers offered to a blob's fetch while it runs (from the holder exchange and the
/// DHT); a feed that never yields is [`PeerFeed::none`].
pub struct PeerFeed(Option<tokio::sync::mpsc::Receiver<FoundProvider>>);

/// A provider found while a blob is fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FoundProvider {
    /// The provider.
    pub peer: PeerId,
    /// Named by the DHT (it announced the root: it holds the whole blob, or, for a
    /// dataset, at least its manifest), not by the holder exchange (see
    /// [`machine::SwarmRound::offer`]).
    pub announced: bool,
}

impl PeerFeed {
    /// A feed fed by `rx`.
    pub fn new(rx: tokio::sync::mpsc::Receiver<FoundProvider>) -> Self {
        Self(Some(rx))
    }

    /// A feed with no one joining.
    pub fn none() -> Self {
        Self(None)
    }

    /// The next provider to join; pends forever once the feed is empty and closed.
    async fn next(&mut self) -> FoundProvider {
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
        let round = Round {
            host,
            store,
            hash,
            id: meta.id,
            size: meta.size,
            stats,
            progress: &progress,
            limit,
        };
        // Those that sent bad data in an earlier round stay out, even if offered again.
        let shunned: Vec<PeerId> = report
            .dropped
            .iter()
            .filter(|(_, e)| e.peer_misbehaved())
            .map(|(p, _)| *p)
            .collect();
        let peers = round.run(&missing, &live, &shunned, feed).await;
        live.clear();
        for PeerOutcome {
            peer,
            contributed,
            dropped_for,
        } in peers
        {
            if contributed && !report.contributed.contains(&peer) {
                report.contributed.push(peer);
            }
            match dropped_for {
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

/// One scheduling round's I/O: carries out a [`SwarmRound`]'s actions on the network and
/// the store, and tells it what came of them.
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
}

/// The time given to a round's machine: tokio's clock, so that the machine's deadlines and
/// the driver's sleeps agree (also under tokio's paused time).
fn round_now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// What a round's I/O brings back to its state machine.
enum Event {
    Have(PeerId, Result<Holding, FetchError>),
    Ended(RequestId, Outcome<FetchError>),
}

impl Round<'_> {
    /// Runs one round over the `missing` spans with the providers `live` and those `feed`
    /// brings (but not `shunned` ones), until the machine says it is over.
    async fn run(
        &self,
        missing: &[Range<u64>],
        live: &[PeerId],
        shunned: &[PeerId],
        feed: &mut PeerFeed,
    ) -> Vec<PeerOutcome<PeerId, FetchError>> {
        let me = self.host.peer_id();
        let mut machine = SwarmRound::new(
            missing,
            start_point(&me),
            rand::random(),
            RoundConfig::default(),
        );
        for peer in live {
            machine.join(*peer);
        }
        let mut work: FuturesUnordered<BoxFuture<'_, Option<Event>>> = FuturesUnordered::new();
        let mut cancels: HashMap<RequestId, AbortHandle> = HashMap::new();
        loop {
            let now = round_now();
            while let Some(action) = machine.poll_action(now) {
                match action {
                    Action::AskHave { peer } => {
                        work.push(
                            async move { Some(Event::Have(peer, self.have(peer).await)) }.boxed(),
                        );
                    }
                    Action::Fetch {
                        request,
                        peer,
                        batch,
                        held,
                    } => {
                        let (fetch, cancel) = abortable(self.fetch(peer, batch, held));
                        cancels.insert(request, cancel);
                        work.push(
                            fetch
                                .map(move |ended| Some(Event::Ended(request, ended.ok()?)))
                                .boxed(),
                        );
                    }
                    Action::Cancel { request } => {
                        if let Some(cancel) = cancels.remove(&request) {
                            cancel.abort();
                        }
                    }
                }
            }
            let timeout = machine.poll_timeout(now);
            if machine.is_finished() || (work.is_empty() && timeout.is_none()) {
                break;
            }
            let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(
                timeout.unwrap_or_else(round_now),
            ));
            tokio::select! {
                Some(event) = work.next() => match event {
                    Some(Event::Have(peer, answer)) => {
                        let answer = answer.map_err(|e| {
                            let misbehaved = e.peer_misbehaved();
                            (e, misbehaved)
                        });
                        machine.have_answered(peer, answer, round_now());
                    }
                    Some(Event::Ended(request, outcome)) => {
                        cancels.remove(&request);
                        machine.request_ended(request, outcome, round_now());
                    }
                    None => {}
                },
                found = feed.next() => {
                    let peer = found.peer;
                    if peer != me && !shunned.contains(&peer) && machine.offer(peer, found.announced) {
                        tracing::debug!(%peer, hash = %self.hash, "provider joins the fetch");
                    }
                }
                () = sleep, if timeout.is_some() => {}
            }
        }
        machine.into_outcomes()
    }

    /// Asks `peer` which spans it holds. One that holds the blob at another size, breaks
    /// the protocol, or cannot be reached is an error (and dropped by the machine).
    async fn have(&self, peer: PeerId) -> Result<Holding, FetchError> {
        let span_groups = self.store.span_bytes() / CHUNK_GROUP_BYTES;
        let groups = commons_protocol::partial::group_count(self.size);
        match ask_have(self.host, peer, self.hash).await? {
            // A server from before `Have` existed: treat it as a complete provider.
            None => Ok(Holding::Complete),
            Some(HaveResponse::NotFound) => Ok(Holding::spans(Vec::new())),
            // A complete provider's claim is settled by the data (see `fetch_round`); a
            // partial one's is not proven, so a different one only drops it.
            Some(HaveResponse::Held { complete: true, .. }) => Ok(Holding::Complete),
            Some(HaveResponse::Held { size, .. }) if size != self.size => {
                Err(FetchError::Refused {
                    peer,
                    hash: self.hash,
                    answer: format!("it holds {size} bytes of it, not {}", self.size),
                })
            }
            Some(HaveResponse::Held { groups: held, .. }) => {
                Ok(Holding::spans(held_spans(&held, groups, span_groups)))
            }
        }
    }

    /// Fetches from `peer` what is still missing of the spans `batch` (within `held`, for
    /// a partial provider), and says what the batch still lacks afterwards.
    async fn fetch(
        &self,
        peer: PeerId,
        batch: Range<u64>,
        held: Option<Arc<Vec<Range<u64>>>>,
    ) -> Outcome<FetchError> {
        // A batch handed out again (after a failure, or in endgame) may be partly stored
        // already: ask only for what is still missing of it.
        let left = self.missing_of(batch.clone()).await;
        let wanted = match &held {
            Some(held) => intersect(&left, held),
            None => left.clone(),
        };
        if wanted.is_empty() {
            return Outcome::Fetched { sent: false, left };
        }
        let ranges = span_ranges_to_groups(self.store.span_bytes(), &wanted, self.size);
        let asked_at = Instant::now();
        let fetched = fetch_round(
            self.host,
            self.store,
            peer,
            self.hash,
            ranges,
            Some(self.size),
            held.is_some(),
            self.stats,
            self.progress,
            self.limit,
        )
        .await;
        match fetched {
            Ok(true) => Outcome::Fetched {
                sent: true,
                left: self.missing_of(batch).await,
            },
            Ok(false) => Outcome::Restarted,
            Err(error) => {
                tracing::info!(%peer, %error, "provider failed");
                Outcome::Failed {
                    misbehaved: error.peer_misbehaved(),
                    refused: matches!(error, FetchError::Refused { .. }),
                    // A request cut because a punch closed its relayed connection is not
                    // the peer's failure: it goes on over the direct one.
                    cut_by_punch: self.host.punched_since(&peer, asked_at),
                    error,
                }
            }
        }
    }

    /// The spans of `spans` still missing (all of them when the store cannot say).
    async fn missing_of(&self, spans: Range<u64>) -> Vec<Range<u64>> {
        let id = self.id;
        let asked = spans.clone();
        self.store
            .run(move |s| s.missing_spans_in(id, asked))
            .await
            .unwrap_or_else(|_| vec![spans])
    }
}
