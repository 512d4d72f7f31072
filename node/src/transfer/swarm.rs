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

use std::{
    collections::{HashMap, VecDeque},
    ops::Range,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use commons_protocol::{tree::CHUNK_GROUP_BYTES, wire::GroupRange, Hash};
use libp2p::PeerId;
use tokio::sync::watch;

use super::{
    client::{fetch_round, span_ranges_to_groups},
    FetchError, TransferStats,
};
use crate::{
    net::Host,
    store::{BlobId, BlobState, Store},
};

/// Spans per request: 4 MiB with 256 KiB spans. Small enough to spread a blob over many
/// providers and to lose little when one fails, large enough that a request's round trip
/// is a small part of its time.
pub const BATCH_SPANS: u64 = 16;
/// Requests in flight per provider. One: on the 2-core benchmark machine, where seeder
/// and fetcher share the CPU, two per provider fetched 1 GiB at 0.71× sendme's throughput
/// against 0.95–1.13× with one (docs/benchmarks.md). Revisit on real links, where a
/// second request hides the round trip between batches.
pub const REQUESTS_PER_PEER: usize = 1;
/// Before any batch has completed, a batch in flight this long may be duplicated by an
/// idle provider (afterwards: twice the median batch time).
const ENDGAME_FIRST_WAIT: Duration = Duration::from_secs(5);
/// How often an idle request slot looks for stalled batches to duplicate.
const ENDGAME_POLL: Duration = Duration::from_millis(50);
/// Consecutive failures (other than bad data) after which a provider is dropped.
const MAX_PEER_FAILURES: u32 = 2;
/// Scheduling rounds per blob: a round ends when no slot can take more work.
const MAX_ROUNDS: usize = 16;

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
pub async fn swarm_blob(
    host: &Host,
    store: &Arc<Store>,
    peers: &[PeerId],
    hash: Hash,
    stats: &Arc<TransferStats>,
    progress: Arc<dyn Fn(u64) + Send + Sync>,
) -> Result<SwarmReport, SwarmError> {
    let mut live: Vec<PeerId> = peers.to_vec();
    let mut report = SwarmReport::default();
    let fail = |report: SwarmReport, missing: Vec<Range<u64>>| SwarmError {
        hash,
        missing,
        report,
    };
    for _ in 0..MAX_ROUNDS {
        let meta = match store.blob(&hash) {
            Ok(meta) => meta,
            Err(e) => {
                report.dropped.push((host.peer_id(), e.into()));
                return Err(fail(report, Vec::new()));
            }
        };
        let Some(meta) = meta else {
            // Size unknown: the first span alone, from the first provider that answers.
            learn_size(host, store, &mut live, hash, stats, &progress, &mut report).await;
            if live.is_empty() {
                return Err(fail(report, Vec::new()));
            }
            continue;
        };
        if meta.state == BlobState::Complete {
            return Ok(report);
        }
        let missing = match store.missing_spans(meta.id, meta.size) {
            Ok(missing) => missing,
            Err(e) => {
                report.dropped.push((host.peer_id(), e.into()));
                return Err(fail(report, Vec::new()));
            }
        };
        if missing.is_empty() {
            let started = Instant::now();
            let completed = store.complete_partial(&hash);
            tracing::debug!(%hash, millis = started.elapsed().as_millis() as u64, "blob complete: outboard built");
            if let Err(e) = completed {
                report.dropped.push((host.peer_id(), e.into()));
                return Err(fail(report, Vec::new()));
            }
            return Ok(report);
        }
        if live.is_empty() {
            return Err(fail(report, span_bytes(store, &missing, meta.size)));
        }
        let round = Round {
            host,
            store,
            hash,
            id: meta.id,
            size: meta.size,
            stats,
            progress: &progress,
            schedule: Mutex::new(Schedule::new(&missing, BATCH_SPANS)),
            peers: Mutex::new(live.iter().map(|p| (*p, PeerState::default())).collect()),
        };
        // Interleaved (a, b, a, b…) so the first batches go to different providers.
        let slots = (0..REQUESTS_PER_PEER).flat_map(|_| live.iter().map(|peer| round.slot(*peer)));
        libp2p::futures::future::join_all(slots).await;
        let peers = round.peers.into_inner().unwrap_or_else(|e| e.into_inner());
        for (peer, state) in peers {
            if state.contributed && !report.contributed.contains(&peer) {
                report.contributed.push(peer);
            }
            if let Some(error) = state.dropped_for {
                live.retain(|p| *p != peer);
                report.dropped.push((peer, error));
            }
        }
    }
    let missing = match store.blob(&hash) {
        Ok(Some(meta)) => store
            .missing_spans(meta.id, meta.size)
            .map(|spans| span_bytes(store, &spans, meta.size))
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    Err(fail(report, missing))
}

/// Byte ranges of span ranges, the last one cut at the blob's end.
fn span_bytes(store: &Store, spans: &[Range<u64>], size: u64) -> Vec<Range<u64>> {
    let span = store.span_bytes();
    spans
        .iter()
        .map(|r| r.start * span..(r.end * span).min(size))
        .collect()
}

/// Asks providers in turn for the first span until one answers with data, which fixes the
/// blob's size; drops those that misbehave or fail.
async fn learn_size(
    host: &Host,
    store: &Arc<Store>,
    live: &mut Vec<PeerId>,
    hash: Hash,
    stats: &Arc<TransferStats>,
    progress: &Arc<dyn Fn(u64) + Send + Sync>,
    report: &mut SwarmReport,
) {
    let first = vec![GroupRange {
        start: 0,
        end: Some(store.span_bytes() / CHUNK_GROUP_BYTES),
    }];
    while let Some(peer) = live.first().copied() {
        match fetch_round(
            host,
            store,
            peer,
            hash,
            first.clone(),
            None,
            stats,
            progress,
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
                live.remove(0);
                report.dropped.push((peer, e));
            }
        }
    }
}

#[derive(Default)]
struct PeerState {
    failures: u32,
    contributed: bool,
    dropped_for: Option<FetchError>,
}

/// One scheduling round over a fixed set of missing spans.
struct Round<'a> {
    host: &'a Host,
    store: &'a Arc<Store>,
    hash: Hash,
    id: BlobId,
    size: u64,
    stats: &'a Arc<TransferStats>,
    progress: &'a Arc<dyn Fn(u64) + Send + Sync>,
    schedule: Mutex<Schedule>,
    peers: Mutex<HashMap<PeerId, PeerState>>,
}

impl Round<'_> {
    fn lock_schedule(&self) -> std::sync::MutexGuard<'_, Schedule> {
        self.schedule.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_peers(&self) -> std::sync::MutexGuard<'_, HashMap<PeerId, PeerState>> {
        self.peers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One request slot of `peer`: takes batches until none is left or the peer is dropped.
    async fn slot(&self, peer: PeerId) {
        loop {
            if self
                .lock_peers()
                .get(&peer)
                .is_none_or(|s| s.dropped_for.is_some())
            {
                return;
            }
            let next = self.lock_schedule().take(peer, Instant::now());
            let (batch, mut done) = match next {
                Take::Batch(batch, done) => (batch, done),
                Take::Wait => {
                    tokio::time::sleep(ENDGAME_POLL).await;
                    continue;
                }
                Take::Done => return,
            };
            // A batch handed out again (after a failure, or in endgame) may be partly stored
            // already: ask only for what is still missing of it.
            let spans = self.lock_schedule().spans(batch);
            let missing = self
                .store
                .missing_spans_in(self.id, spans.clone())
                .unwrap_or_else(|_| vec![spans]);
            if missing.is_empty() {
                self.lock_schedule()
                    .finish(batch, peer, true, Instant::now());
                continue;
            }
            let ranges = span_ranges_to_groups(self.store, &missing, self.size);
            let request = fetch_round(
                self.host,
                self.store,
                peer,
                self.hash,
                ranges,
                Some(self.size),
                self.stats,
                self.progress,
            );
            let result = tokio::select! {
                r = request => Some(r),
                // Another provider finished this batch first (endgame): stop asking.
                _ = done.wait_for(|d| *d) => None,
            };
            match result {
                None => {}
                Some(Ok(true)) => {
                    self.lock_schedule()
                        .finish(batch, peer, true, Instant::now());
                    let mut peers = self.lock_peers();
                    if let Some(s) = peers.get_mut(&peer) {
                        s.failures = 0;
                        s.contributed = true;
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
                    if let Some(s) = peers.get_mut(&peer) {
                        s.failures += 1;
                        if e.peer_misbehaved() || s.failures >= MAX_PEER_FAILURES {
                            s.dropped_for = Some(e);
                        }
                    }
                }
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

    /// The next thing for `peer` to do at `now`: a waiting batch if any; else (endgame) a
    /// batch exactly one other peer has been fetching for too long; else wait, or stop.
    fn take(&mut self, peer: PeerId, now: Instant) -> Take {
        let batch = match self.waiting.pop_front() {
            Some(b) => b,
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
        assert_eq!(batch(s.take(a, at(0))), 0);
        assert_eq!(batch(s.take(b, at(0))), 1);
        s.finish(1, b, true, at(100)); // a batch takes 100 ms: stalled after 200 ms
        assert_eq!(batch(s.take(b, at(100))), 2);
        // Nothing waits, and nothing in flight is stalled yet: c waits.
        assert!(matches!(s.take(c, at(150)), Take::Wait));
        // a's batch 0 is 250 ms old: c duplicates it; b's batch 2 is not stalled.
        let Take::Batch(dup, mut dup_done) = s.take(c, at(250)) else {
            panic!("c duplicates a's stalled batch");
        };
        assert_eq!(dup, 0);
        assert!(matches!(s.take(c, at(250)), Take::Wait), "one copy at most");
        s.finish(0, a, true, at(260));
        assert!(*dup_done.borrow_and_update(), "c's copy is told to stop");
        s.finish(0, c, false, at(265));
        assert!(s.waiting.is_empty(), "a done batch is never requeued");
        s.finish(2, b, true, at(280));
        assert!(matches!(s.take(c, at(300)), Take::Done));
    }

    #[test]
    #[allow(clippy::single_range_in_vec_init)]
    fn a_failed_batch_goes_back_to_the_front_for_another_peer() {
        let (a, b) = (PeerId::random(), PeerId::random());
        let mut s = Schedule::new(&[0..2], 1);
        let now = Instant::now();
        let first = batch(s.take(a, now));
        s.finish(first, a, false, now);
        assert_eq!(batch(s.take(b, now)), 0, "requeued first");
    }
}
