//! The paced publisher: announces every root this node provides, then re-announces each
//! one `interval` after its last announcement, with at most `concurrency` announcements in
//! flight. rust-libp2p's built-in republishing snapshots every key at once; a mirror with
//! thousands of datasets would flood its peers every 12 hours. Failed announcements (no
//! peers yet, say) are retried with a backoff from 5 s up to the interval. When the node's
//! advertised addresses change, every root is announced again 2 s later.

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap},
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

use crate::net::Host;

/// First retry delay after a failed announcement; doubles per failure, up to the interval.
const FIRST_RETRY: Duration = Duration::from_secs(5);
/// How long after the node's advertised addresses change every root is announced again
/// (changes come in bursts: a relay slot gives an address per relay transport).
const READVERTISE_AFTER: Duration = Duration::from_secs(2);

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

/// Per key: when it is next due, and how many times in a row it failed.
struct Due {
    at: Instant,
    failures: u32,
}

async fn run(
    host: Host,
    interval: Duration,
    concurrency: usize,
    changes: Arc<Changes>,
    alive: std::sync::Weak<Alive>,
    stats: Arc<PublisherStats>,
) {
    let mut due: HashMap<Hash, Due> = HashMap::new();
    // Entries whose time no longer matches `due` are stale and skipped.
    let mut queue: BinaryHeap<Reverse<(Instant, Hash)>> = BinaryHeap::new();
    let mut in_flight: JoinSet<(Hash, bool)> = JoinSet::new();
    // Records carry the addresses the node had when it announced: when they change (a
    // private node won a relay slot), every root is announced again.
    let mut advertised = host.advertised_addrs_changed();
    advertised.mark_unchanged();
    loop {
        let now = Instant::now();
        while in_flight.len() < concurrency {
            let Some(Reverse((at, hash))) = queue.peek().copied() else {
                break;
            };
            if at > now {
                break;
            }
            queue.pop();
            if due.get(&hash).is_some_and(|d| d.at == at) {
                let host = host.clone();
                in_flight.spawn(async move {
                    let reached =
                        matches!(host.announce(hash).await, Ok(cost) if cost.successes > 0);
                    (hash, reached)
                });
            }
        }
        let next = queue.peek().map(|Reverse((at, _))| *at);
        let can_launch = in_flight.len() < concurrency && next.is_some();
        tokio::select! {
            () = changes.wake.notified() => {
                for (hash, provide) in changes.take() {
                    if provide {
                        if let std::collections::hash_map::Entry::Vacant(e) = due.entry(hash) {
                            let at = Instant::now();
                            e.insert(Due { at, failures: 0 });
                            queue.push(Reverse((at, hash)));
                        }
                    } else {
                        due.remove(&hash);
                        let _ = host.withdraw(hash).await;
                    }
                }
                if alive.strong_count() == 0 {
                    break;
                }
            },
            Some(Ok((hash, reached))) = in_flight.join_next(), if !in_flight.is_empty() => {
                let counter = if reached { &stats.announced } else { &stats.failed };
                counter.fetch_add(1, Ordering::Relaxed);
                if let Some(d) = due.get_mut(&hash) {
                    d.failures = if reached { 0 } else { d.failures + 1 };
                    let wait = if reached {
                        interval
                    } else {
                        FIRST_RETRY
                            .saturating_mul(1 << d.failures.min(16).saturating_sub(1))
                            .min(interval)
                    };
                    d.at = Instant::now() + wait;
                    queue.push(Reverse((d.at, hash)));
                }
            }
            Ok(()) = advertised.changed() => {
                let at = Instant::now() + READVERTISE_AFTER;
                for (hash, d) in &mut due {
                    if d.at > at {
                        d.at = at;
                        queue.push(Reverse((at, *hash)));
                    }
                }
            }
            _ = sleep_until(next.unwrap_or_else(Instant::now)), if can_launch => {}
        }
    }
}
