//! The publisher's decisions without I/O: which root to announce when. Time is passed in
//! and [`AnnounceSchedule::poll_timeout`] says when something next falls due, so the node
//! drives it with tokio (`super::publisher`) and tests and the scale simulator with a
//! virtual clock.

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap},
    time::{Duration, Instant},
};

/// First retry delay after a failed announcement; doubles per failure, up to the interval.
pub const FIRST_RETRY: Duration = Duration::from_secs(5);
/// How long after the node's advertised addresses change every root is announced again
/// (changes come in bursts: a relay slot gives an address per relay transport).
pub const READVERTISE_AFTER: Duration = Duration::from_secs(2);

/// Per key: when it is next due, and how many times in a row it failed.
#[derive(Debug)]
struct Due {
    at: Instant,
    failures: u32,
}

/// Announces every key provided, then each again `interval` after its last announcement
/// reached someone, with at most `concurrency` in flight; a failed one is retried after
/// [`FIRST_RETRY`], doubling per failure up to the interval.
#[derive(Debug)]
pub struct AnnounceSchedule<K> {
    interval: Duration,
    concurrency: usize,
    due: HashMap<K, Due>,
    /// Entries whose time no longer matches `due` are stale and skipped.
    queue: BinaryHeap<Reverse<(Instant, K)>>,
    in_flight: usize,
}

impl<K: Copy + Eq + std::hash::Hash + Ord> AnnounceSchedule<K> {
    /// A schedule re-announcing every `interval`, `concurrency` (at least 1) at a time.
    pub fn new(interval: Duration, concurrency: usize) -> Self {
        Self {
            interval,
            concurrency: concurrency.max(1),
            due: HashMap::new(),
            queue: BinaryHeap::new(),
            in_flight: 0,
        }
    }

    /// Starts announcing `key` (due at once). Idempotent.
    pub fn provide(&mut self, key: K, now: Instant) {
        if let std::collections::hash_map::Entry::Vacant(e) = self.due.entry(key) {
            e.insert(Due {
                at: now,
                failures: 0,
            });
            self.queue.push(Reverse((now, key)));
        }
    }

    /// Stops announcing `key`.
    pub fn withdraw(&mut self, key: K) {
        self.due.remove(&key);
    }

    /// Keys being announced.
    pub fn len(&self) -> usize {
        self.due.len()
    }

    /// Whether no key is announced.
    pub fn is_empty(&self) -> bool {
        self.due.is_empty()
    }

    /// The next key to announce at `now`, if one is due and fewer than `concurrency` are
    /// in flight; report its end with [`Self::announced`].
    pub fn poll_announce(&mut self, now: Instant) -> Option<K> {
        while self.in_flight < self.concurrency {
            let Reverse((at, key)) = *self.queue.peek()?;
            if at > now {
                return None;
            }
            self.queue.pop();
            if self.due.get(&key).is_some_and(|d| d.at == at) {
                self.in_flight += 1;
                return Some(key);
            }
        }
        None
    }

    /// An announcement of `key` ended at `now`: it `reached` at least one peer, or nobody.
    pub fn announced(&mut self, key: K, reached: bool, now: Instant) {
        self.in_flight = self.in_flight.saturating_sub(1);
        let Some(d) = self.due.get_mut(&key) else {
            return; // withdrawn meanwhile
        };
        d.failures = if reached { 0 } else { d.failures + 1 };
        let wait = if reached {
            self.interval
        } else {
            FIRST_RETRY
                .saturating_mul(1 << d.failures.min(16).saturating_sub(1))
                .min(self.interval)
        };
        d.at = now + wait;
        self.queue.push(Reverse((d.at, key)));
    }

    /// The node's advertised addresses changed at `now`: every key is announced again
    /// [`READVERTISE_AFTER`] from now (those due sooner keep their time).
    pub fn addresses_changed(&mut self, now: Instant) {
        let at = now + READVERTISE_AFTER;
        for (key, d) in &mut self.due {
            if d.at > at {
                d.at = at;
                self.queue.push(Reverse((at, *key)));
            }
        }
    }

    /// When the next key falls due, if one can be launched then (`None`: nothing is due,
    /// or `concurrency` are in flight and only an end can free a place).
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        if self.in_flight >= self.concurrency {
            return None;
        }
        // Drop stale entries so the time returned is a real one.
        while let Some(Reverse((at, key))) = self.queue.peek().copied() {
            if self.due.get(&key).is_some_and(|d| d.at == at) {
                return Some(at);
            }
            self.queue.pop();
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    /// Runs the schedule for `until` with announcements that take `took` and reach a peer
    /// when `reaches(key, attempt)`; returns (time since start, key) of each launch.
    fn drive(
        s: &mut AnnounceSchedule<u32>,
        t0: Instant,
        until: Duration,
        took: Duration,
        reaches: impl Fn(u32, usize) -> bool,
    ) -> Vec<(Duration, u32)> {
        let mut now = t0;
        let mut ends: Vec<(Instant, u32)> = Vec::new();
        let mut launched = Vec::new();
        let mut attempts: HashMap<u32, usize> = HashMap::new();
        loop {
            while let Some(key) = s.poll_announce(now) {
                launched.push((now - t0, key));
                ends.push((now + took, key));
            }
            ends.sort();
            let next_end = ends.first().map(|e| e.0);
            let next = match (next_end, s.poll_timeout()) {
                (Some(a), Some(b)) => a.min(b),
                (Some(a), None) | (None, Some(a)) => a,
                (None, None) => break,
            };
            assert!(next >= now, "time only moves on");
            if next - t0 > until {
                break;
            }
            now = next;
            while ends.first().is_some_and(|e| e.0 <= now) {
                let (_, key) = ends.remove(0);
                let n = attempts.entry(key).or_default();
                *n += 1;
                s.announced(key, reaches(key, *n), now);
            }
        }
        launched
    }

    #[test]
    fn many_keys_are_paced_and_each_comes_back_after_the_interval() {
        let t0 = Instant::now();
        let mut s = AnnounceSchedule::new(HOUR, 4);
        for key in 0..100 {
            s.provide(key, t0);
        }
        let launched = drive(
            &mut s,
            t0,
            HOUR + HOUR / 2,
            Duration::from_secs(1),
            |_, _| true,
        );
        // 100 keys, 4 at a time, 1 s each: the first round takes 25 s.
        let first: Vec<_> = launched.iter().filter(|(t, _)| *t < HOUR).collect();
        assert_eq!(first.len(), 100);
        assert_eq!(first.last().map(|l| l.0), Some(Duration::from_secs(24)));
        // Each again one interval after its announcement ended, still 4 at a time.
        let second: Vec<_> = launched.iter().filter(|(t, _)| *t >= HOUR).collect();
        assert_eq!(second.len(), 100);
        assert_eq!(second[0].0, HOUR + Duration::from_secs(1));
        assert_eq!(
            second.last().map(|l| l.0),
            Some(HOUR + Duration::from_secs(25))
        );
    }

    #[test]
    fn failures_back_off_doubling_up_to_the_interval_and_a_success_resets() {
        let t0 = Instant::now();
        let mut s = AnnounceSchedule::new(Duration::from_secs(60), 1);
        s.provide(7, t0);
        // Fails 5 times, then reaches a peer.
        let launched = drive(
            &mut s,
            t0,
            Duration::from_secs(200),
            Duration::ZERO,
            |_, n| n > 5,
        );
        let times: Vec<u64> = launched.iter().map(|(t, _)| t.as_secs()).collect();
        // Retries after 5, 10, 20, 40, then 60 (capped); then every 60 s.
        assert_eq!(times, vec![0, 5, 15, 35, 75, 135, 195]);
    }

    #[test]
    fn a_withdrawn_key_is_not_announced_again_and_new_addresses_pull_keys_in() {
        let t0 = Instant::now();
        let mut s = AnnounceSchedule::new(HOUR, 8);
        s.provide(1, t0);
        s.provide(2, t0);
        assert_eq!(s.poll_announce(t0), Some(1));
        assert_eq!(s.poll_announce(t0), Some(2));
        s.announced(1, true, t0);
        s.withdraw(2);
        s.announced(2, true, t0);
        assert_eq!(s.len(), 1);
        assert_eq!(s.poll_timeout(), Some(t0 + HOUR));
        let t1 = t0 + Duration::from_secs(10);
        s.addresses_changed(t1);
        assert_eq!(s.poll_timeout(), Some(t1 + READVERTISE_AFTER));
        assert_eq!(s.poll_announce(t1 + READVERTISE_AFTER), Some(1));
        assert_eq!(s.poll_announce(t1 + READVERTISE_AFTER), None, "2 is gone");
    }
}
