//! What this node remembers of the providers it fetched from, across fetches: a score per
//! peer that bad data and failures lower and verified answers raise, decaying toward zero
//! (half of it every [`SCORE_HALF_LIFE`]). A peer at or below [`BAN_SCORE`] is not asked
//! again however often the DHT or other peers name it; the others are asked best first.
//!
//! Bad data bans at once, for at least an hour, whatever credit the peer had earned, and
//! longer for each repeat; a peer that fails or stalls again and again ends up banned for a
//! while too. The model is libtorrent's trust points, per peer rather than per block.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use libp2p::PeerId;

/// How fast a score fades: half of it every hour, so one lie bans for an hour and an old
/// one is forgiven.
pub const SCORE_HALF_LIFE: Duration = Duration::from_secs(3600);
/// At or below this score a peer is not asked.
pub const BAN_SCORE: f64 = -50.0;
/// What bad data (a group that fails verification, a lie about a size, a broken protocol)
/// does to a score, from zero at most: twice [`BAN_SCORE`], so it bans for one half-life.
pub const BAD_DATA_PENALTY: f64 = -100.0;
/// What a failure that may not be the peer's fault costs (unreachable, a stream reset,
/// a stall, a refusal): six in a short while ban it for a quarter of an hour.
pub const FAILURE_PENALTY: f64 = -10.0;
/// What a verified contribution to a fetch earns.
pub const SERVED_REWARD: f64 = 1.0;
/// Most credit a peer can earn: good service ranks it first, it cannot bank immunity.
pub const MAX_SCORE: f64 = 20.0;
/// Peers remembered at most; beyond, the one whose score is nearest zero is forgotten.
pub const MAX_SCORED_PEERS: usize = 10_000;

/// A score as of a moment.
#[derive(Debug, Clone, Copy)]
struct Score {
    value: f64,
    at: Instant,
}

impl Score {
    fn now(self, now: Instant) -> f64 {
        let halves =
            now.saturating_duration_since(self.at).as_secs_f64() / SCORE_HALF_LIFE.as_secs_f64();
        self.value * 0.5f64.powf(halves)
    }
}

/// The scores of the peers this node fetched from.
#[derive(Debug, Default)]
pub struct PeerScores {
    scores: Mutex<HashMap<PeerId, Score>>,
}

impl PeerScores {
    /// `peer` sent bad data: banned at once (its credit is forfeit).
    pub fn bad_data(&self, peer: PeerId) {
        self.update(peer, |s| s.min(0.0) + BAD_DATA_PENALTY);
    }

    /// A request to `peer` failed in a way that may not be its fault.
    pub fn failed(&self, peer: PeerId) {
        self.update(peer, |s| s + FAILURE_PENALTY);
    }

    /// `peer` contributed verified data to a fetch.
    pub fn served(&self, peer: PeerId) {
        self.update(peer, |s| (s + SERVED_REWARD).min(MAX_SCORE));
    }

    /// `peer`'s score now (zero for a peer not remembered).
    pub fn score(&self, peer: &PeerId) -> f64 {
        let now = Instant::now();
        self.lock().get(peer).map_or(0.0, |s| s.now(now))
    }

    /// Whether `peer` is not to be asked now.
    pub fn is_banned(&self, peer: &PeerId) -> bool {
        self.score(peer) <= BAN_SCORE
    }

    /// Orders `items` best peer first (a stable sort: equal scores keep their order).
    pub fn rank<T>(&self, items: &mut [T], peer: impl Fn(&T) -> PeerId) {
        let now = Instant::now();
        let scores = self.lock();
        let score = |t: &T| scores.get(&peer(t)).map_or(0.0, |s| s.now(now));
        items.sort_by(|a, b| score(b).total_cmp(&score(a)));
    }

    fn update(&self, peer: PeerId, change: impl FnOnce(f64) -> f64) {
        let now = Instant::now();
        let mut scores = self.lock();
        if scores.len() >= MAX_SCORED_PEERS && !scores.contains_key(&peer) {
            let forgettable = scores
                .iter()
                .min_by(|a, b| a.1.now(now).abs().total_cmp(&b.1.now(now).abs()))
                .map(|(p, _)| *p);
            if let Some(p) = forgettable {
                scores.remove(&p);
            }
        }
        let old = scores.get(&peer).map_or(0.0, |s| s.now(now));
        scores.insert(
            peer,
            Score {
                value: change(old),
                at: now,
            },
        );
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PeerId, Score>> {
        self.scores.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(scores: &PeerScores, peer: PeerId, ago: Duration) {
        let mut map = scores.lock();
        if let Some(s) = map.get_mut(&peer) {
            s.at -= ago;
        }
    }

    #[test]
    fn bad_data_bans_for_a_half_life_whatever_credit_the_peer_had() {
        let scores = PeerScores::default();
        let (liar, other) = (PeerId::random(), PeerId::random());
        for _ in 0..50 {
            scores.served(liar);
        }
        assert!(
            (scores.score(&liar) - MAX_SCORE).abs() < 1e-6,
            "credit is capped"
        );
        scores.bad_data(liar);
        assert!(scores.is_banned(&liar) && !scores.is_banned(&other));
        at(&scores, liar, SCORE_HALF_LIFE - Duration::from_secs(60));
        assert!(scores.is_banned(&liar), "still banned just before an hour");
        at(&scores, liar, Duration::from_secs(120));
        assert!(!scores.is_banned(&liar), "forgiven after an hour");
    }

    #[test]
    fn repeated_lies_ban_longer_and_repeated_failures_ban_too() {
        let scores = PeerScores::default();
        let (liar, flaky) = (PeerId::random(), PeerId::random());
        scores.bad_data(liar);
        scores.bad_data(liar);
        at(&scores, liar, SCORE_HALF_LIFE + Duration::from_secs(60));
        assert!(scores.is_banned(&liar), "two lies: banned past an hour");
        for _ in 0..5 {
            scores.failed(flaky);
        }
        assert!(!scores.is_banned(&flaky), "a few failures are forgiven");
        scores.failed(flaky);
        assert!(scores.is_banned(&flaky), "six in a row ban");
    }

    #[test]
    fn good_peers_rank_first_and_memory_is_bounded() {
        let scores = PeerScores::default();
        let (good, neutral, flaky) = (PeerId::random(), PeerId::random(), PeerId::random());
        scores.served(good);
        scores.failed(flaky);
        let mut peers = vec![flaky, neutral, good];
        scores.rank(&mut peers, |p| *p);
        assert_eq!(peers, vec![good, neutral, flaky]);

        for _ in 0..MAX_SCORED_PEERS + 10 {
            scores.served(PeerId::random());
        }
        scores.bad_data(flaky);
        assert!(scores.lock().len() <= MAX_SCORED_PEERS);
        assert!(scores.is_banned(&flaky), "a ban is kept over neutral peers");
    }
}
