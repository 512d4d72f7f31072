//! The decisions of one scheduling round over a blob's missing spans, without I/O.
//!
//! [`SwarmRound`] takes events (a provider joined, answered which spans it holds, a request
//! ended) with the current time, and hands out [`Action`]s (ask a provider what it holds,
//! fetch a batch from it, cancel a copy no longer needed). It never sleeps: when nothing can
//! happen until some time passes, [`SwarmRound::poll_timeout`] says when to poll again. The
//! model is quinn-proto's `Connection`. The node drives it with tokio (`super::swarm_blob`);
//! tests and the scale simulator drive it with a virtual clock.
//!
//! The rules (the module docs of `super` say why): each provider first says what it holds,
//! then runs up to `requests_per_peer` requests, the extra ones only once every provider
//! has its first; a batch that fails goes back to the front of the queue; bad data drops a
//! provider at once, `max_peer_failures` failures in a row too (requests that were in flight
//! together and fail together count once; a request cut by a hole punch does not count);
//! when nothing waits, an idle complete provider duplicates a batch another has had for too
//! long, and the slower copy is cancelled when the other completes; a partial provider is
//! asked again what it holds when its answer is older than `have_refresh` (twice as long
//! after each answer that gave it nothing to fetch, up to `max_have_refresh`), and leaves
//! the round when it has had nothing to give for twice `have_refresh`. At most `max_peers`
//! providers take part at once; one that joins a full round is asked what it holds, and
//! takes the place of a partial provider if it holds the whole blob (so a round of slow
//! partial providers does not keep out a complete one found later), or leaves if not. A
//! provider found while the round runs is offered ([`SwarmRound::offer`]): a full round
//! asks only one the DHT named (likely to hold the whole blob), not one the holder exchange
//! named.

use std::{
    collections::{HashMap, VecDeque},
    ops::Range,
    sync::Arc,
    time::{Duration, Instant},
};

use super::schedule::{union, Held, Schedule, Take};

/// Limits and timings of a round; [`RoundConfig::default`] is what the node uses.
#[derive(Debug, Clone)]
pub struct RoundConfig {
    /// Spans per batch (a larger value is cut to 64: a batch's missing spans are a bit
    /// mask).
    pub batch_spans: u64,
    /// Requests in flight per provider.
    pub requests_per_peer: usize,
    /// Providers taking part at once (a complete provider that joins a full round takes a
    /// partial one's place).
    pub max_peers: usize,
    /// Providers a round keeps, counting those that left or were dropped: bounds its
    /// memory and work however many holders the exchange brings (a newcomer takes the
    /// place of one that left or failed honestly).
    pub max_joined: usize,
    /// Before any batch has completed, how long one may take before it is duplicated.
    pub endgame_first_wait: Duration,
    /// How long a request slot that found its batch already stored waits before it takes
    /// another (so it does not spin on a batch others still work on).
    pub retry_pause: Duration,
    /// Consecutive failures (other than bad data) after which a provider is dropped.
    pub max_peer_failures: u32,
    /// How old a partial provider's list of held spans may get before it is asked again.
    pub have_refresh: Duration,
    /// The longest wait between asks of a partial provider that keeps having nothing to
    /// give (the wait doubles from `have_refresh` after each such answer).
    pub max_have_refresh: Duration,
}

impl Default for RoundConfig {
    fn default() -> Self {
        Self {
            batch_spans: super::BATCH_SPANS,
            requests_per_peer: super::REQUESTS_PER_PEER,
            max_peers: super::MAX_SWARM_PEERS,
            max_joined: super::MAX_JOINED_PEERS,
            endgame_first_wait: super::ENDGAME_FIRST_WAIT,
            retry_pause: super::RETRY_PAUSE,
            max_peer_failures: super::MAX_PEER_FAILURES,
            have_refresh: super::HAVE_REFRESH,
            max_have_refresh: super::MAX_HAVE_REFRESH,
        }
    }
}

/// Identifies one request of a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// What the round asks its driver to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action<P> {
    /// Ask a provider which spans it holds; answer with [`SwarmRound::have_answered`].
    AskHave {
        /// The provider.
        peer: P,
    },
    /// Fetch from a provider whatever of a batch is still missing and, for a partial
    /// provider, within what it holds; answer with [`SwarmRound::request_ended`].
    Fetch {
        /// Names this request in [`SwarmRound::request_ended`] and [`Action::Cancel`].
        request: RequestId,
        /// The provider.
        peer: P,
        /// The batch's span range.
        batch: Range<u64>,
        /// The span ranges a partial provider holds (`None`: a complete provider).
        held: Option<Arc<Vec<Range<u64>>>>,
    },
    /// Stop a request: another copy of its batch completed (its result no longer counts).
    Cancel {
        /// The request.
        request: RequestId,
    },
}

/// What a provider said it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holding {
    /// All of the blob (or it is a server too old to say: treated alike).
    Complete,
    /// These span ranges (sorted), possibly none. Shared: a caller that hands back the
    /// same `Arc` for an unchanged list (the scale model does, for most answers of a slow
    /// partial provider) has it known the same without reading it (comparing each
    /// answer's list with the last was half of `have_answered`'s time in the model at
    /// 100,000 mirrors). The node builds a new one per answer, compared by contents.
    Spans(Arc<Vec<Range<u64>>>),
}

impl Holding {
    /// A partial provider's answer: these span ranges (sorted).
    pub fn spans(spans: Vec<Range<u64>>) -> Self {
        Self::Spans(Arc::new(spans))
    }
}

/// How a request ended.
#[derive(Debug)]
pub enum Outcome<E> {
    /// It ran to its end.
    Fetched {
        /// Whether anything was asked of the peer (`false`: all of it was stored already).
        sent: bool,
        /// The spans of the batch the store still lacks.
        left: Vec<Range<u64>>,
    },
    /// It failed.
    Failed {
        /// Why, kept as the reason a provider is dropped.
        error: E,
        /// The peer broke the protocol or sent bad data.
        misbehaved: bool,
        /// The peer said it does not hold what was asked.
        refused: bool,
        /// The connection it used closed because a direct one replaced it.
        cut_by_punch: bool,
    },
    /// The blob restarted at another size: this round's plan is void.
    Restarted,
}

/// What became of one provider in a round.
#[derive(Debug)]
pub struct PeerOutcome<P, E> {
    /// The provider.
    pub peer: P,
    /// It sent at least one batch.
    pub contributed: bool,
    /// It was dropped, with why.
    pub dropped_for: Option<E>,
}

#[derive(Debug)]
struct Peer<P, E> {
    id: P,
    failures: u32,
    /// When the last counted failure happened: requests already in flight then that fail
    /// too are not counted again (one cause, e.g. a connection closing under several
    /// requests, is one failure).
    last_failure: Option<Instant>,
    contributed: bool,
    dropped_for: Option<E>,
    /// It sent bad data or broke the protocol: never forgotten, so that it is reported.
    misbehaved: bool,
    /// The spans a partial provider holds (`None`: a complete provider), and when it said.
    have: Option<(Arc<Vec<Range<u64>>>, Instant)>,
    /// Not asked yet, or an answer is awaited: it takes no batch meanwhile.
    asking: bool,
    /// Joined a full round: it takes part only if it answers that it holds the whole blob.
    candidate: bool,
    /// How long after its last answer a partial provider is asked again.
    have_wait: Duration,
    /// A partial provider was given a batch since it was last asked what it holds.
    gave_since_asked: bool,
    /// It has left the round (a partial provider with nothing left to give), or the
    /// schedule told it everything is done.
    stopped: bool,
    /// Its first request slot has taken a batch (or stopped).
    first_started: bool,
    /// Its extra slots are open (once every provider's first one started).
    extra_open: bool,
    /// Requests in flight.
    busy: usize,
    /// Slots resting until these times.
    resting: Vec<Instant>,
    /// A partial provider with nothing to give, since when.
    idle_since: Option<Instant>,
    /// A partial provider found no batch to take in the queue as of this
    /// [`Schedule::queue_gen`] with these holdings: it finds none while both stay, and is
    /// not searched again (a quarter of the scale model's time at 10,000 mirrors); once
    /// the queue changes, only the batches changed since are searched.
    found_nothing: Option<(u64, Arc<Vec<Range<u64>>>)>,
}

impl<P, E> Peer<P, E> {
    fn live(&self) -> bool {
        self.dropped_for.is_none() && !self.stopped
    }

    /// Taking part: live and not waiting to learn whether it may.
    fn taking_part(&self) -> bool {
        self.live() && !self.candidate
    }

    /// Left, or dropped for an honest failure (busy, gone), with nothing in flight: its
    /// place may be given to another, or to itself afresh.
    fn forgettable(&self) -> bool {
        !self.live() && !self.misbehaved && self.busy == 0 && !self.asking
    }

    /// Said it holds only part of the blob (it may be being asked again).
    fn partial(&self) -> bool {
        self.have.is_some()
    }

    /// Leaves the round: it takes no more batches (those in flight run to their end).
    fn leave(&mut self) {
        self.stopped = true;
        self.first_started = true;
    }

    /// Asks it again what it holds, waiting twice as long before the next ask if nothing it
    /// held was given to fetch since the last one.
    fn ask_again(&mut self, config: &RoundConfig) {
        self.have_wait = if self.gave_since_asked {
            config.have_refresh
        } else {
            (self.have_wait * 2).min(config.max_have_refresh)
        };
        self.gave_since_asked = false;
        self.asking = true;
    }
}

#[derive(Debug)]
struct InFlight<P> {
    peer: P,
    batch: usize,
    asked_at: Instant,
    /// Asked of a partial provider.
    partial: bool,
}

/// One scheduling round (see the module docs).
#[derive(Debug)]
pub struct SwarmRound<P, E> {
    config: RoundConfig,
    schedule: Schedule<P>,
    peers: Vec<Peer<P, E>>,
    requests: HashMap<RequestId, InFlight<P>>,
    next_request: u64,
    actions: VecDeque<Action<P>>,
}

impl<P: Copy + PartialEq + std::fmt::Debug, E> SwarmRound<P, E> {
    /// A round over the `missing` span ranges, walked from `start` (a fraction of the way
    /// in); `seed` drives the random choices.
    pub fn new(missing: &[Range<u64>], start: f64, seed: u64, config: RoundConfig) -> Self {
        let mut schedule =
            Schedule::new(missing, config.batch_spans, config.endgame_first_wait, seed);
        schedule.start_at(start);
        Self {
            config,
            schedule,
            peers: Vec::new(),
            requests: HashMap::new(),
            next_request: 0,
            actions: VecDeque::new(),
        }
    }

    /// `peer` joins as a provider; `false` if it is there already (and has not left or
    /// failed honestly: then it joins afresh), nothing is left to fetch, the round holds
    /// `max_joined` providers none of which can be forgotten, or it is full with no partial
    /// provider whose place a complete one could take. Joining a full round, it is asked
    /// what it holds and takes part only if that is the whole blob.
    pub fn join(&mut self, peer: P) -> bool {
        let earlier = self.peers.iter().position(|p| p.id == peer);
        if earlier.is_some_and(|i| !self.peers[i].forgettable()) {
            return false;
        }
        let candidate = self.is_full();
        if self.schedule.undone() == 0
            || (candidate && !self.peers.iter().any(|p| p.taking_part() && p.partial()))
            || (earlier.is_none()
                && self.peers.len() >= self.config.max_joined
                && !self.forget_one())
        {
            return false;
        }
        // Accepted: its earlier entry gives way to a fresh one.
        if let Some(i) = earlier {
            self.peers.remove(i);
        }
        self.peers.push(Peer {
            id: peer,
            failures: 0,
            last_failure: None,
            contributed: false,
            dropped_for: None,
            misbehaved: false,
            have: None,
            asking: true,
            candidate,
            have_wait: self.config.have_refresh,
            gave_since_asked: false,
            stopped: false,
            first_started: false,
            extra_open: false,
            busy: 0,
            resting: Vec::new(),
            idle_since: None,
            found_nothing: None,
        });
        self.actions.push_back(Action::AskHave { peer });
        true
    }

    /// A provider found while the round runs joins: one the DHT named (`announced`: it
    /// holds the whole blob, or for a dataset at least its manifest) as [`Self::join`] says,
    /// so a full round asks it what it holds and it stays only if complete; one the holder
    /// exchange named (often still fetching) only if the round has room. In a full round such a
    /// provider would be asked what it holds, at best to be told to leave, and in a crowd
    /// every fetcher learns the same holders: in the 100,000-mirror model's first 35 s, 12 M
    /// of its 20 M events were `Have` asks, nearly all answered "nothing held"
    /// (`docs/benchmarks.md`, "Stop 39"). One not taken stays known to the fetch, which
    /// dials it once this blob's swarm ends without the blob, or for its next blob. So a
    /// complete holder only the exchange named no longer takes a slow partial provider's
    /// place: it waits for the DHT's next answer (`PROVIDERS_REFRESH`). `false` if it did
    /// not join.
    pub fn offer(&mut self, peer: P, announced: bool) -> bool {
        if !announced && self.is_full() {
            return false;
        }
        self.join(peer)
    }

    /// As many providers take part as may (`max_peers`): a newcomer joins only as a
    /// candidate for a partial provider's place.
    fn is_full(&self) -> bool {
        self.peers.iter().filter(|p| p.taking_part()).count() >= self.config.max_peers
    }

    /// Forgets a provider that left or was dropped for an honest failure (busy, gone) and
    /// has nothing in flight, one that never sent anything first, to make room for one
    /// that joins: a long fetch in a busy swarm meets many such, and must not stop taking
    /// newcomers. Its outcome goes unreported; a misbehaving one is never forgotten.
    fn forget_one(&mut self) -> bool {
        let forgettable = self
            .peers
            .iter()
            .enumerate()
            .filter(|(_, p)| p.forgettable())
            .min_by_key(|(i, p)| (p.contributed, *i))
            .map(|(i, _)| i);
        match forgettable {
            Some(i) => {
                self.peers.remove(i);
                true
            }
            None => false,
        }
    }

    fn peer_mut(&mut self, peer: P) -> Option<&mut Peer<P, E>> {
        self.peers.iter_mut().find(|p| p.id == peer)
    }

    /// `peer` answered which spans it holds, or could not: it is dropped for the error,
    /// which says whether the peer misbehaved (broke the protocol) so that it is reported.
    pub fn have_answered(&mut self, peer: P, answer: Result<Holding, (E, bool)>, now: Instant) {
        let Some(p) = self.peer_mut(peer) else {
            return;
        };
        p.asking = false;
        let complete = match answer {
            Ok(Holding::Complete) => {
                p.have = None;
                true
            }
            Ok(Holding::Spans(spans)) => {
                // The same list as before keeps its `Arc`, and with it what `found_nothing`
                // knows: most answers from a slow partial provider are unchanged.
                let spans = match p.have.take() {
                    // The pointer first: the model hands back the very `Arc` it answered
                    // with, and that must not cost a read of the list.
                    Some((had, _)) if Arc::ptr_eq(&had, &spans) || had == spans => had,
                    _ => spans,
                };
                p.have = Some((spans, now));
                false
            }
            Err((error, misbehaved)) => {
                p.misbehaved |= misbehaved;
                p.dropped_for.get_or_insert(error);
                p.first_started = true;
                false
            }
        };
        if !p.candidate {
            return;
        }
        p.candidate = false;
        if !p.live() {
            return;
        }
        let others = self
            .peers
            .iter()
            .filter(|q| q.id != peer && q.taking_part())
            .count();
        if others < self.config.max_peers {
            return;
        }
        // The round is full: a complete provider takes the place of the partial one that
        // gives least (nothing in flight, then fewest spans held), a partial one leaves.
        let replaced = self
            .peers
            .iter_mut()
            .filter(|q| q.id != peer && q.taking_part() && q.partial())
            .min_by_key(|q| {
                let held: u64 = q
                    .have
                    .as_ref()
                    .map_or(0, |(h, _)| h.iter().map(|r| r.end - r.start).sum::<u64>());
                (q.busy, held)
            });
        match replaced {
            Some(q) if complete => q.leave(),
            _ => {
                if let Some(p) = self.peer_mut(peer) {
                    p.leave();
                }
            }
        }
    }

    /// A request ended with `outcome` at `now` (ignored if it was cancelled).
    pub fn request_ended(&mut self, request: RequestId, outcome: Outcome<E>, now: Instant) {
        let Some(r) = self.requests.remove(&request) else {
            return;
        };
        if let Some(p) = self.peer_mut(r.peer) {
            p.busy -= 1;
        }
        match outcome {
            Outcome::Fetched { sent, left } => {
                // Given back with nothing fetched: the slot rests before it takes another.
                let rest = !sent && !left.is_empty();
                if left.is_empty() {
                    self.finish(r.batch, r.peer, true, now);
                } else {
                    self.schedule.give_back(r.batch, r.peer, Some(left));
                }
                let pause = self.config.retry_pause;
                if let Some(p) = self.peer_mut(r.peer) {
                    if sent {
                        p.failures = 0;
                        p.contributed = true;
                    } else if rest {
                        p.resting.push(now + pause);
                    }
                }
            }
            // A partial provider no longer (or not yet) holds what it said: ask again.
            // Twice in a row, and it is dropped like any failing provider.
            Outcome::Failed {
                error,
                refused: true,
                ..
            } if r.partial => {
                self.schedule.give_back(r.batch, r.peer, None);
                let config = self.config.clone();
                if let Some(p) = self.peer_mut(r.peer) {
                    p.failures += 1;
                    if p.failures >= config.max_peer_failures {
                        p.dropped_for.get_or_insert(error);
                    } else if !p.asking {
                        p.ask_again(&config);
                        self.actions.push_back(Action::AskHave { peer: r.peer });
                    }
                }
            }
            Outcome::Failed {
                error,
                misbehaved,
                cut_by_punch,
                ..
            } => {
                self.finish(r.batch, r.peer, false, now);
                let max = self.config.max_peer_failures;
                if let Some(p) = self.peer_mut(r.peer) {
                    if !cut_by_punch && p.last_failure.is_none_or(|at| r.asked_at > at) {
                        p.failures += 1;
                        p.last_failure = Some(now);
                    }
                    p.misbehaved |= misbehaved;
                    // Bad data is the reason reported, even after an honest failure.
                    if misbehaved {
                        p.dropped_for = Some(error);
                    } else if p.failures >= max {
                        p.dropped_for.get_or_insert(error);
                    }
                }
            }
            Outcome::Restarted => {
                self.schedule.abandon();
                let mut cancelled: Vec<RequestId> = self.requests.keys().copied().collect();
                cancelled.sort();
                for request in cancelled {
                    self.cancel(request);
                }
            }
        }
    }

    /// Finishes `batch` for `peer`, cancelling the other copies a completion makes moot.
    fn finish(&mut self, batch: usize, peer: P, ok: bool, now: Instant) {
        let others = self.schedule.finish(batch, peer, ok, now);
        let mut moot: Vec<RequestId> = self
            .requests
            .iter()
            .filter(|(_, r)| r.batch == batch && others.contains(&r.peer))
            .map(|(id, _)| *id)
            .collect();
        // In order, so that the same events give the same actions (the simulator's runs
        // repeat for a seed).
        moot.sort();
        for request in moot {
            self.cancel(request);
        }
    }

    fn cancel(&mut self, request: RequestId) {
        if let Some(r) = self.requests.remove(&request) {
            if let Some(p) = self.peer_mut(r.peer) {
                p.busy -= 1;
            }
            self.actions.push_back(Action::Cancel { request });
        }
    }

    /// The next thing to do at `now`, if any; call until `None`, then wait for an event or
    /// [`Self::poll_timeout`].
    pub fn poll_action(&mut self, now: Instant) -> Option<Action<P>> {
        if let Some(action) = self.actions.pop_front() {
            return Some(action);
        }
        // What the partial providers hold together: a complete provider is asked first for
        // what none of them has, so the scarce copy is fetched where it exists. Listed only
        // if a complete provider may look for work, by index (their lists do not change in
        // a poll; in the 100,000-mirror model's profile most of this poll's time was the
        // atomic counts of cloned `Arc`s), as they are now, before any leaves below.
        let complete_may_take = self
            .peers
            .iter()
            .any(|p| p.live() && !p.asking && p.have.is_none());
        let partial: Vec<usize> = if complete_may_take {
            (0..self.peers.len())
                .filter(|&j| self.peers[j].live() && self.peers[j].have.is_some())
                .collect()
        } else {
            Vec::new()
        };
        // Merged only if a complete provider looks for work.
        let mut held_by_others: Option<Option<Vec<Range<u64>>>> = None;
        let all_first_started = self.peers.iter().all(|p| p.first_started || !p.live());
        for i in 0..self.peers.len() {
            let refresh = self.config.have_refresh;
            let config = &self.config;
            let p = &mut self.peers[i];
            if !p.live() || p.asking {
                continue;
            }
            p.resting.retain(|until| *until > now);
            if all_first_started {
                p.extra_open = true;
            }
            let slots = if p.extra_open {
                self.config.requests_per_peer
            } else {
                1
            };
            if p.busy + p.resting.len() >= slots {
                continue;
            }
            if p.have
                .as_ref()
                .is_some_and(|(_, at)| now >= *at + p.have_wait)
            {
                p.ask_again(config);
                return Some(Action::AskHave { peer: p.id });
            }
            if p.have.is_none() && held_by_others.is_none() {
                let peers = &self.peers;
                held_by_others = Some((!partial.is_empty()).then(|| {
                    union(
                        partial
                            .iter()
                            .filter_map(|&j| peers[j].have.as_ref().map(|(h, _)| h.as_slice())),
                    )
                }));
            }
            let p = &mut self.peers[i];
            let held = p.have.as_ref().map(|(h, _)| h);
            let gen = self.schedule.queue_gen();
            let found_nothing_at = match (held, &p.found_nothing) {
                (Some(h), Some((at, had))) if Arc::ptr_eq(h, had) => Some(*at),
                _ => None,
            };
            let still_nothing = self.schedule.undone() > 0 && found_nothing_at == Some(gen);
            let take = if still_nothing {
                Take::Wait
            } else {
                let take = self.schedule.take(
                    p.id,
                    held.map(|h| Held {
                        spans: h.as_slice(),
                        found_nothing_at,
                    }),
                    match held {
                        Some(_) => None,
                        None => held_by_others.as_ref().and_then(|u| u.as_deref()),
                    },
                    now,
                );
                p.found_nothing = match (&take, held) {
                    (Take::Wait, Some(h)) => Some((gen, Arc::clone(h))),
                    _ => None,
                };
                take
            };
            match take {
                Take::Batch(batch) => {
                    let held = held.cloned();
                    p.idle_since = None;
                    p.gave_since_asked = true;
                    p.first_started = true;
                    p.busy += 1;
                    let request = RequestId(self.next_request);
                    self.next_request += 1;
                    self.requests.insert(
                        request,
                        InFlight {
                            peer: p.id,
                            batch,
                            asked_at: now,
                            partial: held.is_some(),
                        },
                    );
                    return Some(Action::Fetch {
                        request,
                        peer: p.id,
                        batch: self.schedule.spans(batch),
                        held,
                    });
                }
                Take::Wait => {
                    // A partial provider with nothing we need (its list is refreshed every
                    // `have_refresh`): if that lasts, and no one else is fetching anything
                    // it could catch up on, it is of no more use in this round.
                    if held.is_some() && !self.schedule.anything_in_flight() {
                        let since = *p.idle_since.get_or_insert(now);
                        // It leaves on an answer given while idle, not on one up to
                        // `max_have_refresh` old.
                        let fresh = p.have.as_ref().is_some_and(|(_, at)| *at >= since);
                        if now >= since + 2 * refresh && fresh && p.busy == 0 {
                            p.leave();
                        }
                    } else {
                        p.idle_since = None;
                    }
                }
                Take::Done => {
                    if p.busy == 0 {
                        p.stopped = true;
                    }
                    p.first_started = true;
                }
            }
        }
        self.actions.pop_front()
    }

    /// When to poll again if no event comes first (`None`: only an event can change
    /// anything), as things stand at `now` (the time of the last [`Self::poll_action`]).
    pub fn poll_timeout(&self, now: Instant) -> Option<Instant> {
        let refresh = self.config.have_refresh;
        let mut next: Option<Instant> = None;
        let mut at = |t: Instant| next = Some(next.map_or(t, |n: Instant| n.min(t)));
        for p in self.peers.iter().filter(|p| p.live() && !p.asking) {
            if let Some(until) = p.resting.iter().min() {
                at(*until);
            }
            let slots = if p.extra_open {
                self.config.requests_per_peer
            } else {
                1
            };
            if p.busy + p.resting.len() >= slots {
                continue;
            }
            match &p.have {
                Some((_, said)) => {
                    at(*said + p.have_wait);
                    // Leaving waits for a fresh answer (asked at `said + have_wait`).
                    if let Some(since) = p.idle_since.filter(|since| said >= since) {
                        at(since + 2 * refresh);
                    }
                }
                // A complete provider duplicates a stalled batch when nothing waiting is
                // for it (nothing at all, or only batches partial providers hold).
                None => {
                    if let Some(stall) = self.schedule.next_stall_for(p.id, now) {
                        at(stall);
                    }
                }
            }
        }
        next
    }

    /// Whether the round is over: every batch is done, or no provider can take one, and
    /// nothing is in flight.
    pub fn is_finished(&self) -> bool {
        self.requests.is_empty()
            && self.actions.is_empty()
            && self.peers.iter().all(|p| !p.asking || !p.live())
            && (self.schedule.undone() == 0 || self.peers.iter().all(|p| !p.live()))
    }

    /// The span range of the batch `request` is fetching, while it is in flight.
    pub fn batch_of(&self, request: RequestId) -> Option<Range<u64>> {
        self.requests
            .get(&request)
            .map(|r| self.schedule.spans(r.batch))
    }

    /// The providers and what became of them: those still taking part first, complete
    /// ones before partial ones, then those that left (a next round admits them in this
    /// order); otherwise in the order they joined.
    pub fn into_outcomes(mut self) -> Vec<PeerOutcome<P, E>> {
        self.peers
            .sort_by_key(|p| (!p.taking_part(), p.taking_part() && p.partial()));
        self.peers
            .into_iter()
            .map(|p| PeerOutcome {
                peer: p.id,
                contributed: p.contributed,
                dropped_for: p.dropped_for,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
