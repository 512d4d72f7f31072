//! The round's decisions under a virtual clock: simulated providers (fast, slow, lying,
//! vanishing, partial) answer its actions after the time their link would take; no
//! sockets, no sleeps, the same result for the same seed.
#![allow(clippy::single_range_in_vec_init)] // lists of span ranges, not ranges of values

use std::{
    collections::{BTreeMap, HashSet},
    time::{Duration, Instant},
};

use super::*;
use crate::transfer::swarm::{schedule::intersect, MAX_SWARM_PEERS};

/// Bytes per span in these tests (the store's span).
const SPAN: u64 = 256 * 1024;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Honest,
    /// Sends bad data: every request fails as misbehaviour.
    Liar,
    /// Gone at this time: requests in flight then, and later ones, fail.
    VanishesAt(Duration),
}

#[derive(Debug, Clone)]
struct SimPeer {
    /// Upload, bytes per second.
    rate: f64,
    /// Round-trip time.
    rtt: Duration,
    kind: Kind,
    /// Span ranges held (`None`: all).
    holds: Option<Vec<Range<u64>>>,
    /// When it offers to join the round (as the holder exchange brings it).
    joins_at: Duration,
}

fn honest(rate_mib: f64) -> SimPeer {
    SimPeer {
        rate: rate_mib * 1024.0 * 1024.0,
        rtt: Duration::from_millis(10),
        kind: Kind::Honest,
        holds: None,
        joins_at: Duration::ZERO,
    }
}

#[derive(Debug)]
struct Flow {
    peer: u8,
    bytes: u64,
    start: Instant,
    end: Instant,
    batch: Range<u64>,
}

#[derive(Debug)]
enum Due {
    Join(u8),
    Have(u8),
    Ended(RequestId, Vec<Range<u64>>),
}

/// What a run did.
#[derive(Debug, PartialEq)]
struct Run {
    /// When the round finished, from its start.
    took: Duration,
    /// Spans stored.
    complete: bool,
    /// Bytes each peer sent (cancelled copies count what they sent until cancelled).
    sent: Vec<u64>,
    cancels: usize,
    dropped: Vec<u8>,
    contributed: Vec<u8>,
    /// Those the round admitted (all that offered at the start must be).
    joined: Vec<u8>,
    /// When each peer was asked what it holds, from the round's start.
    asks: Vec<(u8, Duration)>,
}

/// Runs one round over `spans` spans with `peers` (ids 0..) and the node's configuration.
fn run(spans: u64, peers: &[SimPeer], seed: u64) -> Run {
    run_with(spans, peers, seed, RoundConfig::default())
}

fn run_with(spans: u64, peers: &[SimPeer], seed: u64, config: RoundConfig) -> Run {
    let t0 = Instant::now();
    let mut now = t0;
    let mut stored = vec![false; spans as usize];
    let mut machine: SwarmRound<u8, String> = SwarmRound::new(&[0..spans], 0.0, seed, config);
    // (time, sequence) → what becomes due then; a peer's link sends one request at a time.
    let mut due: BTreeMap<(Instant, u64), Due> = BTreeMap::new();
    let mut seq = 0u64;
    let mut joined = Vec::new();
    let mut asks = Vec::new();
    for (id, p) in peers.iter().enumerate() {
        let id = id as u8;
        if p.joins_at.is_zero() {
            assert!(machine.join(id));
            joined.push(id);
        } else {
            seq += 1;
            due.insert((t0 + p.joins_at, seq), Due::Join(id));
        }
    }
    let mut link_free = vec![t0; peers.len()];
    let mut sent = vec![0u64; peers.len()];
    // Per request: who, how many bytes, when they start and stop flowing, the batch.
    let mut flows: HashMap<RequestId, Flow> = HashMap::new();
    let mut cancelled = HashSet::new();
    let mut cancels = 0;
    loop {
        while let Some(action) = machine.poll_action(now) {
            seq += 1;
            match action {
                Action::AskHave { peer } => {
                    asks.push((peer, now - t0));
                    let p = &peers[peer as usize];
                    due.insert((now + p.rtt, seq), Due::Have(peer));
                }
                Action::Fetch {
                    request,
                    peer,
                    batch,
                    held,
                } => {
                    let p = &peers[peer as usize];
                    let missing: Vec<Range<u64>> = batch
                        .clone()
                        .filter(|s| !stored[*s as usize])
                        .map(|s| s..s + 1)
                        .collect();
                    let wanted = match &held {
                        Some(h) => intersect(&missing, h),
                        None => missing,
                    };
                    let bytes = wanted.iter().map(|r| r.end - r.start).sum::<u64>() * SPAN;
                    let start = (now + p.rtt / 2).max(link_free[peer as usize]);
                    let end = start + Duration::from_secs_f64(bytes as f64 / p.rate) + p.rtt / 2;
                    link_free[peer as usize] = end - p.rtt / 2;
                    flows.insert(
                        request,
                        Flow {
                            peer,
                            bytes,
                            start,
                            end,
                            batch,
                        },
                    );
                    due.insert((end, seq), Due::Ended(request, wanted));
                }
                Action::Cancel { request } => {
                    cancels += 1;
                    cancelled.insert(request);
                    if let Some(f) = flows.remove(&request) {
                        let part = now.saturating_duration_since(f.start).as_secs_f64()
                            / f.end.duration_since(f.start).as_secs_f64().max(1e-9);
                        sent[f.peer as usize] += (f.bytes as f64 * part.min(1.0)) as u64;
                        // The link is free again from now.
                        link_free[f.peer as usize] = link_free[f.peer as usize].min(now);
                    }
                }
            }
        }
        let timeout = machine.poll_timeout(now);
        if let Some(t) = timeout {
            assert!(
                t > now,
                "a timeout in the past would spin: {t:?} <= {now:?}"
            );
        }
        if machine.is_finished() {
            break;
        }
        let next_due = due.keys().next().copied();
        let (at, event) = match (next_due, timeout) {
            (Some((at, _)), Some(t)) if t < at => (t, None),
            (Some(key), _) => (key.0, due.remove(&key)),
            (None, Some(t)) => (t, None),
            (None, None) => break,
        };
        now = at;
        assert!(now - t0 < Duration::from_secs(3600), "the round never ends");
        match event {
            None => {}
            Some(Due::Join(peer)) if machine.join(peer) => joined.push(peer),
            Some(Due::Join(_)) => {}
            Some(Due::Have(peer)) => {
                let p = &peers[peer as usize];
                let answer = match (&p.kind, &p.holds) {
                    (Kind::VanishesAt(t), _) if now - t0 >= *t => Err(("gone".to_string(), false)),
                    (_, None) => Ok(Holding::Complete),
                    (_, Some(h)) => Ok(Holding::spans(h.clone())),
                };
                machine.have_answered(peer, answer, now);
            }
            Some(Due::Ended(request, wanted)) => {
                if cancelled.contains(&request) {
                    continue;
                }
                let Flow {
                    peer, bytes, batch, ..
                } = flows.remove(&request).expect("a flow per request");
                let p = &peers[peer as usize];
                let outcome = match p.kind {
                    Kind::Liar => Outcome::Failed {
                        error: format!("peer {peer} sent bad data"),
                        misbehaved: true,
                        refused: false,
                        cut_by_punch: false,
                    },
                    Kind::VanishesAt(t) if now - t0 >= t => Outcome::Failed {
                        error: format!("peer {peer} is gone"),
                        misbehaved: false,
                        refused: false,
                        cut_by_punch: false,
                    },
                    _ => {
                        sent[peer as usize] += bytes;
                        for r in &wanted {
                            for s in r.clone() {
                                stored[s as usize] = true;
                            }
                        }
                        Outcome::Fetched {
                            sent: bytes > 0,
                            left: batch
                                .filter(|s| !stored[*s as usize])
                                .map(|s| s..s + 1)
                                .collect(),
                        }
                    }
                };
                machine.request_ended(request, outcome, now);
            }
        }
    }
    let outcomes = machine.into_outcomes();
    Run {
        took: now - t0,
        complete: stored.iter().all(|s| *s),
        sent,
        cancels,
        dropped: outcomes
            .iter()
            .filter(|o| o.dropped_for.is_some())
            .map(|o| o.peer)
            .collect(),
        contributed: outcomes
            .iter()
            .filter(|o| o.contributed)
            .map(|o| o.peer)
            .collect(),
        joined,
        asks,
    }
}

/// 64 MiB: 16 batches of 16 spans.
const SPANS: u64 = 256;
const BLOB: u64 = SPANS * SPAN;

#[test]
fn equally_fast_providers_share_the_blob_and_fetch_nothing_twice() {
    let r = run(SPANS, &[honest(100.0), honest(100.0), honest(100.0)], 1);
    assert!(r.complete, "{r:?}");
    assert_eq!(r.sent.iter().sum::<u64>(), BLOB, "nothing twice: {r:?}");
    assert_eq!(r.cancels, 0);
    assert!(r.sent.iter().all(|s| *s >= BLOB / 4), "shared: {r:?}");
    // Three 100 MiB/s links: 64 MiB in about 0.21 s, plus round trips.
    assert!(r.took < Duration::from_millis(300), "{r:?}");
}

#[test]
fn a_slow_provider_cannot_hold_the_fetch_hostage() {
    // 100 MiB/s against 0.5 MiB/s: a batch from the slow one takes 8 s.
    let r = run(SPANS, &[honest(0.5), honest(100.0)], 2);
    assert!(r.complete, "{r:?}");
    assert!(r.cancels >= 1, "the slow copy is cancelled: {r:?}");
    // Alone, the fast one takes 0.64 s; the endgame duplicates the slow one's batches
    // after twice the median batch time, so the whole takes well under one slow batch.
    assert!(r.took < Duration::from_secs(2), "{r:?}");
    assert!(r.sent[1] >= BLOB - 2 * 4 * SPAN * 16, "{r:?}");
    assert!(r.dropped.is_empty(), "slow is not wrong: {r:?}");
}

#[test]
fn a_liar_is_dropped_at_once_and_the_others_complete() {
    let liar = SimPeer {
        kind: Kind::Liar,
        ..honest(100.0)
    };
    let r = run(SPANS, &[liar, honest(50.0), honest(50.0)], 3);
    assert!(r.complete, "{r:?}");
    assert_eq!(r.dropped, vec![0], "{r:?}");
    assert_eq!(r.sent[0], 0, "nothing of the liar's is stored: {r:?}");
    assert!(!r.contributed.contains(&0));
}

#[test]
fn a_provider_that_vanishes_is_dropped_after_two_failures_and_costs_little() {
    let vanishing = SimPeer {
        kind: Kind::VanishesAt(Duration::from_millis(150)),
        ..honest(50.0)
    };
    let r = run(SPANS, &[vanishing, honest(50.0), honest(50.0)], 4);
    assert!(r.complete, "{r:?}");
    assert_eq!(r.dropped, vec![0], "{r:?}");
    // Its two requests in flight when it went fail together and count once; it is
    // dropped at the next failure. What it sent before vanishing is kept.
    assert!(r.sent[0] > 0 && r.sent[0] < BLOB / 2, "{r:?}");
    assert_eq!(
        r.sent.iter().sum::<u64>(),
        BLOB,
        "nothing fetched twice: {r:?}"
    );
}

#[test]
fn requests_failing_together_count_once() {
    // Two requests in flight fail at the same moment (one cause): not dropped, since
    // `max_peer_failures` is 2 and the second does not count.
    let t0 = Instant::now();
    let mut m: SwarmRound<u8, String> = SwarmRound::new(&[0..64], 0.0, 0, RoundConfig::default());
    m.join(0);
    m.join(1);
    let mut fetches = Vec::new();
    while let Some(a) = m.poll_action(t0) {
        match a {
            Action::AskHave { peer } => m.have_answered(peer, Ok(Holding::Complete), t0),
            Action::Fetch { request, peer, .. } => fetches.push((request, peer)),
            Action::Cancel { .. } => panic!("nothing to cancel"),
        }
    }
    let of_0: Vec<RequestId> = fetches.iter().filter(|f| f.1 == 0).map(|f| f.0).collect();
    assert_eq!(of_0.len(), 2, "two slots each: {fetches:?}");
    let fail = || Outcome::Failed {
        error: "connection closed".to_string(),
        misbehaved: false,
        refused: false,
        cut_by_punch: false,
    };
    let t1 = t0 + Duration::from_millis(30);
    m.request_ended(of_0[0], fail(), t1);
    m.request_ended(of_0[1], fail(), t1);
    let next = m.poll_action(t1);
    assert!(
        matches!(next, Some(Action::Fetch { peer: 0, .. })),
        "still a provider: {next:?}"
    );
}

#[test]
fn a_partial_provider_gets_only_what_it_holds_and_the_seeder_the_rest() {
    let partial = SimPeer {
        holds: Some(vec![0..SPANS / 2]),
        ..honest(100.0)
    };
    let r = run(SPANS, &[partial, honest(100.0)], 5);
    assert!(r.complete, "{r:?}");
    assert!(r.dropped.is_empty(), "{r:?}");
    assert!(r.sent[0] > 0 && r.sent[0] <= BLOB / 2, "{r:?}");
    assert_eq!(r.sent.iter().sum::<u64>(), BLOB, "nothing twice: {r:?}");
}

#[test]
fn a_partial_provider_with_nothing_needed_leaves_the_round() {
    let useless = SimPeer {
        holds: Some(Vec::new()),
        ..honest(100.0)
    };
    let r = run(SPANS, &[useless, honest(100.0)], 6);
    assert!(r.complete, "{r:?}");
    assert_eq!(r.sent[0], 0);
    assert!(r.dropped.is_empty(), "leaving is not being dropped: {r:?}");
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let peers = [honest(3.0), honest(40.0), honest(100.0), honest(7.0)];
    let a = run(SPANS, &peers, 42);
    let b = run(SPANS, &peers, 42);
    assert_eq!(a, b);
    assert!(a.complete);
}

#[test]
fn a_stalled_partial_provider_cannot_hold_the_fetch_hostage_either() {
    // It holds everything the seeder could give, so the seeder is offered nothing scarce;
    // its batches stall, and the seeder duplicates them after the endgame's wait.
    let stalled = SimPeer {
        holds: Some(vec![0..SPANS]),
        ..honest(0.05)
    };
    let r = run(SPANS, &[stalled, honest(100.0)], 7);
    assert!(r.complete, "{r:?}");
    assert!(r.cancels >= 1, "the stalled copies are cancelled: {r:?}");
    // One of its batches alone would take 80 s.
    assert!(r.took < Duration::from_secs(20), "{r:?}");
}

/// A provider on a 0.05 MiB/s uplink holding `holds`: one batch takes 80 s.
fn stalled(holds: Vec<Range<u64>>) -> SimPeer {
    SimPeer {
        holds: Some(holds),
        ..honest(0.05)
    }
}

#[test]
fn a_complete_provider_found_later_takes_a_slow_partial_ones_place_in_a_full_round() {
    // The round is full of partial providers on slow uplinks; the endgame duplicates only
    // onto complete providers, so without the newcomer this takes minutes.
    let mut peers = vec![stalled(vec![0..SPANS]); MAX_SWARM_PEERS];
    peers.push(SimPeer {
        joins_at: Duration::from_secs(1),
        ..honest(100.0)
    });
    let newcomer = MAX_SWARM_PEERS as u8;
    let r = run(SPANS, &peers, 8);
    assert!(r.complete, "{r:?}");
    assert!(r.joined.contains(&newcomer), "{r:?}");
    assert!(r.sent[newcomer as usize] >= BLOB / 2, "{r:?}");
    assert!(r.took < Duration::from_secs(10), "{r:?}");
    assert!(r.dropped.is_empty(), "leaving is not being dropped: {r:?}");
}

#[test]
fn a_partial_provider_joining_a_full_round_leaves_without_a_batch() {
    let mut peers = vec![stalled(vec![0..SPANS / 2]); MAX_SWARM_PEERS - 1];
    peers.push(honest(10.0));
    peers.push(SimPeer {
        holds: Some(vec![0..SPANS]),
        joins_at: Duration::from_secs(1),
        ..honest(100.0)
    });
    let newcomer = MAX_SWARM_PEERS as u8;
    let r = run(SPANS, &peers, 9);
    assert!(r.complete, "{r:?}");
    assert!(r.joined.contains(&newcomer), "asked what it holds: {r:?}");
    assert_eq!(r.sent[newcomer as usize], 0, "{r:?}");
    assert!(r.dropped.is_empty(), "{r:?}");
}

#[test]
fn a_full_round_admits_no_one_when_no_partial_provider_could_be_replaced() {
    let t0 = Instant::now();
    let config = RoundConfig {
        max_peers: 2,
        max_joined: 4,
        ..RoundConfig::default()
    };
    let mut m: SwarmRound<u8, String> = SwarmRound::new(&[0..64], 0.0, 0, config);
    assert!(m.join(0) && m.join(1));
    // Not answered yet: whether they are partial is unknown, so there is no place to take.
    assert!(!m.join(2), "full");
    m.have_answered(0, Ok(Holding::Complete), t0);
    m.have_answered(1, Ok(Holding::spans(vec![0..32])), t0);
    assert!(m.join(2), "may take 1's place");
    assert!(m.join(3), "may take 1's place");
    assert!(!m.join(4), "max_joined kept, none of them forgettable");
    // 2 holds all of it: it takes 1's place; 3 holds part and leaves.
    m.have_answered(2, Ok(Holding::Complete), t0);
    m.have_answered(3, Ok(Holding::spans(vec![0..64])), t0);
    let mut fetching = HashSet::new();
    while let Some(a) = m.poll_action(t0) {
        if let Action::Fetch { peer, .. } = a {
            fetching.insert(peer);
        }
    }
    assert_eq!(fetching, HashSet::from([0, 2]));
    let order: Vec<u8> = m.into_outcomes().iter().map(|o| o.peer).collect();
    assert_eq!(
        &order[..2],
        &[0, 2],
        "those taking part come first: {order:?}"
    );
}

#[test]
fn a_full_round_asks_only_announced_providers_found_later_and_one_with_room_asks_any() {
    let t0 = Instant::now();
    let config = RoundConfig {
        max_peers: 2,
        ..RoundConfig::default()
    };
    let mut m: SwarmRound<u8, String> = SwarmRound::new(&[0..64], 0.0, 0, config.clone());
    assert!(m.offer(0, false), "room: a holder the exchange named joins");
    assert!(m.offer(1, true));
    m.have_answered(0, Ok(Holding::spans(vec![0..32])), t0);
    m.have_answered(1, Ok(Holding::Complete), t0);
    let mut asked = Vec::new();
    let drain = |m: &mut SwarmRound<u8, String>, asked: &mut Vec<u8>| {
        while let Some(a) = m.poll_action(t0) {
            if let Action::AskHave { peer } = a {
                asked.push(peer);
            }
        }
    };
    drain(&mut m, &mut asked);
    assert_eq!(asked, [0, 1]);
    asked.clear();
    // Full, with a partial provider a complete one could replace.
    assert!(!m.offer(2, false), "an exchange-named holder is not asked");
    drain(&mut m, &mut asked);
    assert!(asked.is_empty(), "{asked:?}");
    assert!(
        m.offer(3, true),
        "one the DHT named is asked, to take 0's place"
    );
    drain(&mut m, &mut asked);
    assert_eq!(asked, [3]);
    // Room is counted among those taking part: a dropped provider leaves a place.
    let mut m: SwarmRound<u8, String> = SwarmRound::new(&[0..64], 0.0, 0, config);
    assert!(m.offer(0, false) && m.offer(1, true));
    m.have_answered(0, Err(("gone".to_string(), false)), t0);
    assert!(m.offer(2, false), "0 was dropped: there is room");
}

#[test]
fn an_idle_partial_provider_is_asked_less_and_less_often() {
    // It holds nothing needed; a slow complete provider keeps the round going for 64 s.
    let peers = [stalled(Vec::new()), honest(1.0)];
    let r = run(SPANS, &peers, 10);
    assert!(r.complete, "{r:?}");
    let asked: Vec<Duration> = r.asks.iter().filter(|a| a.0 == 0).map(|a| a.1).collect();
    let waits: Vec<u64> = asked
        .windows(2)
        .map(|w| (w[1] - w[0]).as_millis() as u64 / 100)
        .collect();
    // In tenths of a second: the answer's round trip is 10 ms.
    assert!(waits.len() >= 6, "{asked:?}");
    assert_eq!(&waits[..6], &[10, 20, 40, 80, 80, 80], "{asked:?}");
}

#[test]
fn a_round_at_max_joined_forgets_an_honestly_failed_provider_for_a_newcomer() {
    let t0 = Instant::now();
    let config = RoundConfig {
        max_peers: 2,
        max_joined: 3,
        ..RoundConfig::default()
    };
    let mut m: SwarmRound<u8, String> = SwarmRound::new(&[0..64], 0.0, 0, config);
    assert!(m.join(0) && m.join(1));
    m.have_answered(0, Ok(Holding::Complete), t0);
    m.have_answered(1, Err(("unreachable".into(), false)), t0);
    assert!(m.join(2), "1 no longer takes part");
    m.have_answered(2, Err(("busy".into(), false)), t0);
    assert!(m.join(3), "3 kept already: 1 is forgotten");
    let kept: Vec<u8> = m.into_outcomes().iter().map(|o| o.peer).collect();
    assert_eq!(kept, vec![0, 3, 2], "{kept:?}");
}

#[test]
fn a_provider_that_misbehaved_is_never_forgotten_so_it_is_reported() {
    let t0 = Instant::now();
    let config = RoundConfig {
        max_peers: 1,
        max_joined: 2,
        ..RoundConfig::default()
    };
    let mut m: SwarmRound<u8, String> = SwarmRound::new(&[0..64], 0.0, 0, config);
    assert!(m.join(0));
    m.have_answered(0, Err(("malformed Have".into(), true)), t0);
    assert!(m.join(1));
    m.have_answered(1, Err(("gone".into(), false)), t0);
    assert!(m.join(2), "1 is forgotten, not 0");
    assert!(!m.join(0), "nor may 0 join afresh");
    let outcomes = m.into_outcomes();
    let dropped: Vec<u8> = outcomes
        .iter()
        .filter(|o| o.dropped_for.is_some())
        .map(|o| o.peer)
        .collect();
    assert_eq!(dropped, vec![0], "{outcomes:?}");
}

/// Partial provider 1, holding the first of two batches, has found nothing to take: both
/// are in flight with complete provider 0. Returns the round and those requests by first
/// span.
fn a_partial_provider_that_found_nothing(
    t0: Instant,
) -> (SwarmRound<u8, String>, BTreeMap<u64, RequestId>) {
    let config = RoundConfig {
        batch_spans: 16,
        ..RoundConfig::default()
    };
    let mut round: SwarmRound<u8, String> = SwarmRound::new(&[0..32], 0.0, 1, config);
    let (complete, partial) = (0u8, 1u8);
    assert!(round.join(complete));
    assert_eq!(
        drain(&mut round, t0),
        vec![Action::AskHave { peer: complete }]
    );
    round.have_answered(complete, Ok(Holding::Complete), t0);
    // The complete provider takes both batches (its extra slots open at once).
    let fetches: BTreeMap<u64, RequestId> = drain(&mut round, t0)
        .into_iter()
        .filter_map(|a| match a {
            Action::Fetch { request, batch, .. } => Some((batch.start, request)),
            _ => None,
        })
        .collect();
    assert_eq!(fetches.keys().copied().collect::<Vec<_>>(), vec![0, 16]);
    // A partial provider holding the first batch joins: nothing waits for it.
    assert!(round.join(partial));
    assert_eq!(
        drain(&mut round, t0),
        vec![Action::AskHave { peer: partial }]
    );
    round.have_answered(partial, Ok(Holding::spans(vec![0..16])), t0);
    assert_eq!(drain(&mut round, t0), vec![], "nothing to take yet");
    assert_eq!(drain(&mut round, t0), vec![], "still nothing");
    (round, fetches)
}

fn drain(round: &mut SwarmRound<u8, String>, now: Instant) -> Vec<Action<u8>> {
    std::iter::from_fn(|| round.poll_action(now)).collect()
}

/// A partial provider that found nothing to take is not searched again while the queue
/// and its holdings stay; a batch coming back to the queue must still reach it.
#[test]
fn a_partial_provider_that_found_nothing_takes_a_batch_that_comes_back() {
    let t0 = Instant::now();
    let (mut round, fetches) = a_partial_provider_that_found_nothing(t0);
    let partial = 1u8;
    // The complete provider's copy of the first batch fails: it is queued again, and the
    // partial provider, which holds it, takes it.
    let t1 = t0 + Duration::from_millis(10);
    round.request_ended(
        fetches[&0],
        Outcome::Failed {
            error: "reset".into(),
            misbehaved: false,
            refused: false,
            cut_by_punch: false,
        },
        t1,
    );
    let actions = drain(&mut round, t1);
    assert!(
        matches!(&actions[..], [Action::Fetch { peer, batch, .. }] if *peer == partial && *batch == (0..16)),
        "{actions:?}"
    );
}

/// The same list answered again keeps the holdings' `Arc`, and with it what the last
/// search found; a changed list is new, and is searched afresh.
#[test]
fn an_unchanged_answer_keeps_what_the_last_search_found() {
    let t0 = Instant::now();
    let (mut round, _) = a_partial_provider_that_found_nothing(t0);
    let partial = 1u8;
    let state = |round: &SwarmRound<u8, String>| {
        let p = round.peers.iter().find(|p| p.id == partial).expect("peer");
        let held = Arc::clone(&p.have.as_ref().expect("partial").0);
        let found_nothing = p.found_nothing.as_ref().map(|(_, h)| Arc::clone(h));
        (held, found_nothing)
    };
    let (before, found_nothing) = state(&round);
    assert!(found_nothing.is_some_and(|h| Arc::ptr_eq(&h, &before)));

    let t1 = t0 + Duration::from_secs(1);
    round.have_answered(partial, Ok(Holding::spans(vec![0..16])), t1);
    let (after, _) = state(&round);
    assert!(Arc::ptr_eq(&before, &after), "same list, same Arc");
    assert_eq!(drain(&mut round, t1), vec![]);
    // The very list it answered with before (the scale model shares one per holder).
    round.have_answered(partial, Ok(Holding::Spans(Arc::clone(&before))), t1);
    let (again, found_nothing) = state(&round);
    assert!(Arc::ptr_eq(&before, &again));
    assert!(found_nothing.is_some_and(|h| Arc::ptr_eq(&h, &before)));
    assert_eq!(drain(&mut round, t1), vec![]);

    round.have_answered(partial, Ok(Holding::spans(vec![0..20])), t1);
    let (changed, _) = state(&round);
    assert!(
        !Arc::ptr_eq(&before, &changed),
        "a changed list is a new one"
    );
    assert_eq!(*changed, vec![0..20]);
}
