//! Providers that sent bad data, remembered for a while: a node does not ask them again in
//! its next fetches either, however often the DHT or other peers name them.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use libp2p::PeerId;

/// How long a provider that sent bad data is shunned.
pub const BAN_DURATION: Duration = Duration::from_secs(3600);
/// Peers remembered at most; expired bans are dropped first, then the oldest.
const MAX_BANS: usize = 10_000;

/// The shunned providers and until when.
#[derive(Debug)]
pub struct Bans {
    duration: Duration,
    until: Mutex<HashMap<PeerId, Instant>>,
}

impl Default for Bans {
    fn default() -> Self {
        Self::with_duration(BAN_DURATION)
    }
}

impl Bans {
    /// Bans that last `duration`.
    pub fn with_duration(duration: Duration) -> Self {
        Self {
            duration,
            until: Mutex::new(HashMap::new()),
        }
    }

    /// Shuns `peer` from now on, for the ban duration.
    pub fn ban(&self, peer: PeerId) {
        let now = Instant::now();
        let mut until = self.until.lock().unwrap_or_else(|e| e.into_inner());
        if until.len() >= MAX_BANS {
            until.retain(|_, t| *t > now);
            if until.len() >= MAX_BANS {
                if let Some(oldest) = until.iter().min_by_key(|(_, t)| **t).map(|(p, _)| *p) {
                    until.remove(&oldest);
                }
            }
        }
        until.insert(peer, now + self.duration);
    }

    /// Whether `peer` is shunned now.
    pub fn is_banned(&self, peer: &PeerId) -> bool {
        let until = self.until.lock().unwrap_or_else(|e| e.into_inner());
        until.get(peer).is_some_and(|t| *t > Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ban_holds_for_its_duration_then_lapses() {
        let bans = Bans::with_duration(Duration::from_millis(50));
        let (liar, other) = (PeerId::random(), PeerId::random());
        bans.ban(liar);
        assert!(bans.is_banned(&liar) && !bans.is_banned(&other));
        std::thread::sleep(Duration::from_millis(60));
        assert!(!bans.is_banned(&liar));
    }
}
