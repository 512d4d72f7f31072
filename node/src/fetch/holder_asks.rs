//! When a fetch asks its providers for more holders of the blob (`refresh_holders`), and
//! which it remembers. Pure: the node sleeps for [`HolderAsks::wait`], the scale model
//! schedules an event after it, so both pace the asks, and bound what they learn, alike.

use std::{
    collections::HashSet,
    hash::{BuildHasher, Hash, RandomState},
    time::Duration,
};

/// While a blob is being fetched, how often a provider is asked which other holders it
/// knows: peers that started fetching after us (and serve what they have) join this way,
/// and the provider asked records us as a holder, so that others find us. Backing off
/// while the asks name no one new was measured and rejected: in the scale model's
/// 1,000-mirror flash crowd it cut the asks tenfold but the fast mirrors' median went from
/// 2,010 s to 3,640 s (fewer asks record fewer holders; docs/benchmarks.md, "Stop 35").
pub const HOLDERS_REFRESH: Duration = Duration::from_secs(2);
/// Holders one fetch remembers from the exchange (to dial, ask in turn and keep for its
/// next blobs): a crowd's answers cannot grow a fetch's memory without end. Past it, newly
/// named holders are ignored; providers the DHT names are still offered to the swarm.
pub const MAX_KNOWN_HOLDERS: usize = 1024;

/// The wait before the next holder ask: 0.5 s and 1 s at first (peers starting together
/// learn of each other early), then [`HOLDERS_REFRESH`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HolderAsks {
    wait: Duration,
}

impl Default for HolderAsks {
    fn default() -> Self {
        Self {
            wait: HOLDERS_REFRESH / 4,
        }
    }
}

impl HolderAsks {
    /// How long to wait before the next ask.
    pub fn wait(&self) -> Duration {
        self.wait
    }

    /// An ask was made.
    pub fn asked(&mut self) {
        self.wait = (self.wait * 2).min(HOLDERS_REFRESH);
    }
}

/// The providers one fetch knows: those it started with or a DHT lookup named (the
/// lookups are bounded by the fetch's plan), and up to [`MAX_KNOWN_HOLDERS`] named by the
/// holder exchange.
#[derive(Debug, Clone, Default)]
pub struct KnownHolders<P, S = RandomState> {
    known: HashSet<P, S>,
    /// Learnt through the exchange.
    learnt: usize,
}

impl<P: Hash + Eq, S: BuildHasher> KnownHolders<P, S> {
    /// Records a provider a lookup named; `false` if it was known.
    pub fn insert(&mut self, provider: P) -> bool {
        self.known.insert(provider)
    }

    /// Records a holder the exchange named; `false` if it was known, or
    /// [`MAX_KNOWN_HOLDERS`] were learnt this way already.
    pub fn learn(&mut self, holder: P) -> bool {
        if self.learnt >= MAX_KNOWN_HOLDERS || !self.known.insert(holder) {
            return false;
        }
        self.learnt += 1;
        true
    }

    /// Whether `provider` is known.
    pub fn contains(&self, provider: &P) -> bool {
        self.known.contains(provider)
    }

    /// Forgets `provider` (it misbehaved); it may not be learnt again by the caller's rules.
    pub fn remove(&mut self, provider: &P) -> bool {
        self.known.remove(provider)
    }
}

impl<P: Hash + Eq> FromIterator<P> for KnownHolders<P> {
    fn from_iter<I: IntoIterator<Item = P>>(providers: I) -> Self {
        Self {
            known: providers.into_iter().collect(),
            learnt: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fetch_learns_at_most_max_known_holders_from_the_exchange() {
        let mut known: KnownHolders<u32> = [0, 1].into_iter().collect();
        assert!(!known.learn(1), "known from the start");
        let learnt = (2..).take_while(|&p| known.learn(p)).count();
        assert_eq!(learnt, MAX_KNOWN_HOLDERS);
        let next = 2 + MAX_KNOWN_HOLDERS as u32;
        assert!(!known.contains(&next), "named past the bound: ignored");
        assert!(known.insert(next), "a lookup's provider is still recorded");
        assert!(!known.learn(next + 1));
    }

    #[test]
    fn asks_start_soon_and_settle_at_the_refresh() {
        let mut asks = HolderAsks::default();
        let mut waits = vec![asks.wait().as_millis()];
        for _ in 0..4 {
            asks.asked();
            waits.push(asks.wait().as_millis());
        }
        assert_eq!(waits, vec![500, 1000, 2000, 2000, 2000]);
    }
}
