//! Which providers a fetch tries next, without I/O: the fetch pool's decisions.
//!
//! A fetch tries its providers [`MAX_SWARM_PEERS`] at a time, each at most once (a provider
//! that failed in one swarm is not asked again by the same fetch), best ranked first. When
//! every provider known has been tried, the DHT is asked once for more. After that, a
//! provider whose dial failed and that a hole punch has since reached directly is asked
//! again, once; so is one whose swarm a hole punch cut short (its relayed connection closed
//! as the direct one replaced it). Then the fetch has run out of providers.
//!
//! The node drives [`ProviderPlan`] from `fetch.rs` (dials, the lookup and hole punches are
//! its I/O); the scale simulator drives the same plan in virtual time.

use std::{collections::HashSet, hash::Hash, time::Instant};

use crate::transfer::MAX_SWARM_PEERS;

/// What a fetch should do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextStep<P> {
    /// Dial these providers and fetch from those reached.
    Dial(Vec<P>),
    /// Ask the DHT for providers (once per fetch), add them, and ask again.
    LookUp,
    /// Every provider has been tried: the fetch fails.
    Exhausted,
}

/// The providers a fetch tried, and the second chances it gave (see the module docs).
#[derive(Debug)]
pub struct ProviderPlan<P> {
    tried: HashSet<P>,
    looked_up: bool,
    /// Providers whose dial failed, and when.
    unreachable: Vec<(P, Instant)>,
    retried_after_unreachable: HashSet<P>,
    retried_after_punch: HashSet<P>,
}

impl<P> Default for ProviderPlan<P> {
    fn default() -> Self {
        Self {
            tried: HashSet::new(),
            looked_up: false,
            unreachable: Vec::new(),
            retried_after_unreachable: HashSet::new(),
            retried_after_punch: HashSet::new(),
        }
    }
}

impl<P: Copy + Eq + Hash> ProviderPlan<P> {
    /// The next step, given the providers `known` (in the order found), `rank` to order
    /// those not tried yet (best first), and `punched_since(p, t)`: whether a hole punch
    /// has reached `p` directly since `t`.
    pub fn next(
        &mut self,
        known: impl IntoIterator<Item = P>,
        rank: impl FnOnce(&mut Vec<P>),
        punched_since: impl Fn(&P, Instant) -> bool,
    ) -> NextStep<P> {
        let mut batch: Vec<P> = known
            .into_iter()
            .filter(|p| !self.tried.contains(p))
            .collect();
        if batch.is_empty() {
            if !self.looked_up {
                self.looked_up = true;
                return NextStep::LookUp;
            }
            let punched: Vec<P> = self
                .unreachable
                .iter()
                .filter(|(p, failed_at)| punched_since(p, *failed_at))
                .map(|(p, _)| *p)
                .collect();
            batch = punched
                .into_iter()
                .filter(|p| self.retried_after_unreachable.insert(*p))
                .collect();
            if batch.is_empty() {
                return NextStep::Exhausted;
            }
        }
        rank(&mut batch);
        batch.truncate(MAX_SWARM_PEERS);
        self.tried.extend(batch.iter().copied());
        NextStep::Dial(batch)
    }

    /// The DHT was asked outside [`Self::next`].
    pub fn mark_looked_up(&mut self) {
        self.looked_up = true;
    }

    /// Dialling `peer` failed at `at`.
    pub fn dial_failed(&mut self, peer: P, at: Instant) {
        if !self.unreachable.iter().any(|(p, _)| *p == peer) {
            self.unreachable.push((peer, at));
        }
    }

    /// `peer` was still being dialled when the swarm started: a later step may try it.
    pub fn not_dialled(&mut self, peer: P) {
        self.tried.remove(&peer);
    }

    /// `peer`'s swarm was cut short by a hole punch: it is tried again, once. Returns
    /// whether it will be.
    pub fn retry_after_punch(&mut self, peer: P) -> bool {
        if !self.retried_after_punch.insert(peer) {
            return false;
        }
        self.tried.remove(&peer);
        true
    }

    /// Whether `peer` was already given its second chance after a hole punch.
    pub fn retried_after_punch(&self, peer: &P) -> bool {
        self.retried_after_punch.contains(peer)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn no_punch(_: &u32, _: Instant) -> bool {
        false
    }

    #[test]
    fn providers_are_tried_eight_at_a_time_once_each_then_the_dht_then_none() {
        let mut plan = ProviderPlan::default();
        let known: Vec<u32> = (0..10).collect();
        let first = plan.next(known.clone(), |_| {}, no_punch);
        assert_eq!(first, NextStep::Dial((0..8).collect()));
        assert_eq!(
            plan.next(known.clone(), |_| {}, no_punch),
            NextStep::Dial(vec![8, 9])
        );
        assert_eq!(plan.next(known.clone(), |_| {}, no_punch), NextStep::LookUp);
        // The lookup found one more.
        let mut known = known;
        known.push(10);
        assert_eq!(
            plan.next(known.clone(), |_| {}, no_punch),
            NextStep::Dial(vec![10])
        );
        assert_eq!(plan.next(known, |_| {}, no_punch), NextStep::Exhausted);
    }

    #[test]
    fn ranking_picks_the_best_of_those_not_tried() {
        let mut plan = ProviderPlan::default();
        let known: Vec<u32> = (0..12).collect();
        let step = plan.next(
            known,
            |b: &mut Vec<u32>| b.sort_by(|a, b| b.cmp(a)),
            no_punch,
        );
        assert_eq!(step, NextStep::Dial((4..12).rev().collect()));
    }

    #[test]
    fn second_chances_after_a_punch_and_for_those_not_dialled_in_time() {
        let t0 = Instant::now();
        let mut plan = ProviderPlan::default();
        plan.mark_looked_up();
        let known = vec![1u32, 2, 3];
        assert_eq!(
            plan.next(known.clone(), |_| {}, no_punch),
            NextStep::Dial(vec![1, 2, 3])
        );
        plan.dial_failed(1, t0);
        plan.not_dialled(2);
        assert!(plan.retry_after_punch(3));
        assert!(!plan.retry_after_punch(3), "once only");
        assert!(plan.retried_after_punch(&3));
        assert_eq!(
            plan.next(known.clone(), |_| {}, no_punch),
            NextStep::Dial(vec![2, 3])
        );
        // Provider 1's dial failed at t0; a punch reached it later: asked again, once.
        let punched = |p: &u32, at: Instant| *p == 1 && at <= t0 + Duration::from_secs(1);
        assert_eq!(
            plan.next(known.clone(), |_| {}, punched),
            NextStep::Dial(vec![1])
        );
        assert_eq!(plan.next(known, |_| {}, punched), NextStep::Exhausted);
    }
}
