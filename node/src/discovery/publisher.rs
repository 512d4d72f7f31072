//! The paced publisher: announces every root this node provides, then re-announces each
//! one `interval` after its last announcement, with at most `concurrency` announcements in
//! flight. rust-libp2p's built-in republishing snapshots every key at once; a mirror with
//! thousands of datasets would flood its peers every 12 hours. Failed announcements (no
//! peers yet, say) are retried with a backoff from 5 s up to the interval. When the node's
//! advertised addresses change, every root is announced again 2 s later. The decisions are
//! [`AnnounceSchedule`]'s (`pacing.rs`); this task carries them out.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use commons_protocol::Hash;
use tokio::{
    sync::Notify,
    task::JoinSet,
    time::{sleep_until, Instant},
};

use super::pacing::AnnounceSchedule;
use crate::net::Host;

/// Counters of the publisher, for status and benchmarks.
#[derive(Debug, Default)]
pub struct PublisherStats {
    /// Announcements that reached at least one peer.
    pub announced: AtomicU64,
    /// Announcements that reached nobody.
    pub failed: AtomicU64,
}

/// Changes asked of the publisher and not yet taken: per root, provide (`true`) or
/// withdraw, the latest wins. Keyed by this node's own roots, so it holds at most one entry
/// per root the store has, however often they change (a channel would grow per call).
#[derive(Debug, Default)]
struct Changes {
    pending: Mutex<HashMap<Hash, bool>>,
    wake: Notify,
}

impl Changes {
    fn push(&self, hash: Hash, provide: bool) {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(hash, provide);
        self.wake.notify_one();
    }

    fn take(&self) -> HashMap<Hash, bool> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// A handle on the publisher task. Cheap to clone; the task stops when all are dropped.
#[derive(Debug, Clone)]
pub struct Publisher {
    changes: Arc<Changes>,
    stats: Arc<PublisherStats>,
    /// Dropped with the last handle: tells the task to stop.
    _alive: Arc<Alive>,
}

/// Wakes the task when the last [`Publisher`] handle goes.
#[derive(Debug)]
struct Alive(Arc<Changes>);

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.wake.notify_one();
    }
}

impl Publisher {
    /// Starts the publisher on `host`.
    pub fn spawn(host: Host, interval: Duration, concurrency: usize) -> Self {
        let changes = Arc::new(Changes::default());
        let alive = Arc::new(Alive(changes.clone()));
        let stats = Arc::new(PublisherStats::default());
        tokio::spawn(run(
            host,
            interval,
            concurrency.max(1),
            changes.clone(),
            Arc::downgrade(&alive),
            stats.clone(),
        ));
        Self {
            changes,
            stats,
            _alive: alive,
        }
    }

    /// Starts announcing `hash` (now, then every interval). Idempotent.
    pub fn provide(&self, hash: Hash) {
        self.changes.push(hash, true);
    }

    /// Stops announcing `hash`; the records peers hold lapse at their TTL.
    pub fn withdraw(&self, hash: Hash) {
        self.changes.push(hash, false);
    }

    /// The counters.
    pub fn stats(&self) -> &PublisherStats {
        &self.stats
    }
}

async fn run(
    host: Host,
    interval: Duration,
    concurrency: usize,
    changes: Arc<Changes>,
    alive: std::sync::Weak<Alive>,
    stats: Arc<PublisherStats>,
) {
    let mut schedule = AnnounceSchedule::new(interval, concurrency);
    let mut in_flight: JoinSet<(Hash, bool)> = JoinSet::new();
    // Which root each task announces, so that a task that panics still frees its place.
    let mut announcing: HashMap<tokio::task::Id, Hash> = HashMap::new();
    // Records carry the addresses the node had when it announced: when they change (a
    // private node won a relay slot), every root is announced again.
    let mut advertised = host.advertised_addrs_changed();
    advertised.mark_unchanged();
    loop {
        while let Some(hash) = schedule.poll_announce(now()) {
            let host = host.clone();
            let task = in_flight.spawn(async move {
                let reached = matches!(host.announce(hash).await, Ok(cost) if cost.successes > 0);
                (hash, reached)
            });
            announcing.insert(task.id(), hash);
        }
        let next = schedule.poll_timeout();
        tokio::select! {
            () = changes.wake.notified() => {
                for (hash, provide) in changes.take() {
                    if provide {
                        schedule.provide(hash, now());
                    } else {
                        schedule.withdraw(hash);
                        let _ = host.withdraw(hash).await;
                    }
                }
                if alive.strong_count() == 0 {
                    break;
                }
            },
            Some(ended) = in_flight.join_next_with_id(), if !in_flight.is_empty() => {
                let (id, reached) = match ended {
                    Ok((id, (_, reached))) => (id, reached),
                    Err(e) => (e.id(), false),
                };
                if let Some(hash) = announcing.remove(&id) {
                    let counter = if reached { &stats.announced } else { &stats.failed };
                    counter.fetch_add(1, Ordering::Relaxed);
                    schedule.announced(hash, reached, now());
                }
            }
            Ok(()) = advertised.changed() => schedule.addresses_changed(now()),
            _ = sleep_until(next.map_or_else(Instant::now, Instant::from_std)), if next.is_some() => {}
        }
    }
}

/// The schedule's time: tokio's clock, as the sleeps that wait for it.
fn now() -> std::time::Instant {
    Instant::now().into_std()
}
