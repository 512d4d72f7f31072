//! A discrete-event model of many nodes fetching one blob from each other, driven by the
//! node's own scheduling state machine ([`SwarmRound`]): every decision (which batch to
//! whom, the endgame, drops, asking partial holders again) is the node's code; only the
//! network and the store are modelled.
//!
//! The network: each node has an uplink and a downlink (payload bytes per second) and a
//! one-way latency to the core. A request's bytes start to flow one round trip after it is
//! asked; the flows through a node share its links equally (processor sharing, as the
//! node's streams share a connection), a flow going at the smaller of its two shares. The
//! spans a flow has carried are stored, and served onward, as they arrive (the node verifies
//! and stores each span as it comes). A node that dies fails the requests it was serving
//! (the spans carried before count) and every later one. A liar's data fails verification.
//! A fetcher learns of other holders as the node
//! does (`fetch.rs`): it asks a provider for the holders it knows (those that asked it
//! before) after 0.5 s, 1 s, then every [`HOLDERS_REFRESH`], and each new one joins its
//! round.
//! Time is virtual: the same scenario and seed give the same run.

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashSet},
    ops::Range,
    time::{Duration, Instant},
};

use commons_node::{
    fetch::HOLDERS_REFRESH,
    transfer::swarm_machine::{Action, Holding, Outcome, RequestId, RoundConfig, SwarmRound},
};
use rand::{rngs::StdRng, seq::SliceRandom, Rng, SeedableRng};

/// One node of a scenario.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// Uplink, payload bytes per second.
    pub up: f64,
    /// Downlink, payload bytes per second.
    pub down: f64,
    /// One-way latency to the core.
    pub latency: Duration,
    /// Holds the blob from the start.
    pub seeds: bool,
    /// When it starts fetching (fetchers only).
    pub starts_at: Duration,
    /// When it dies, if it does.
    pub dies_at: Option<Duration>,
    /// Sends bad data (every request it serves fails as misbehaviour).
    pub lies: bool,
}

/// What to simulate.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Spans of the blob.
    pub spans: u64,
    /// Bytes per span (the store's 256 KiB; the large studies use coarser spans).
    pub span_bytes: u64,
    /// The nodes; fetchers know the seeders from the start (a DHT lookup).
    pub nodes: Vec<NodeSpec>,
    /// The round's limits and timings (the node's by default).
    pub config: RoundConfig,
    /// Holders a node answers with (the node's `MAX_HOLDERS_PER_HASH`).
    pub holders_answer: usize,
    /// Seeds every random choice (the nodes' and the model's).
    pub seed: u64,
    /// Give up at this virtual time.
    pub limit: Duration,
}

/// What became of each node.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeResult {
    /// When it held the whole blob (seeders: zero).
    pub done_at: Option<Duration>,
    /// Payload bytes it sent.
    pub sent: u64,
    /// Payload bytes it received (cancelled copies count what arrived before the cancel).
    pub received: u64,
}

/// A run's results.
#[derive(Debug, Clone, PartialEq)]
pub struct SimResult {
    /// Per node, in the scenario's order.
    pub nodes: Vec<NodeResult>,
    /// Events processed.
    pub events: u64,
}

type Round = SwarmRound<u32, String>;

#[derive(Debug)]
enum Event {
    Start(u32),
    /// Poll node's round; stale unless `gen` is the node's latest.
    Poll(u32, u64),
    Have {
        node: u32,
        peer: u32,
    },
    /// A request's bytes start to flow.
    FlowStart(u64),
    /// A flow has carried all its bytes, unless `gen` is stale.
    FlowEnd(u64, u64),
    /// A node dies.
    Dies(u32),
    /// A request to a dead node fails.
    Unreachable {
        node: u32,
        request: RequestId,
    },
    AskHolders(u32, Duration),
    Restart(u32),
}

#[derive(Debug)]
struct Flow {
    client: u32,
    server: u32,
    request: RequestId,
    /// The spans asked, in order: the first `stored` of them are at the client.
    spans: Vec<u64>,
    stored: usize,
    /// Bytes carried as of `updated`, and the rate since.
    carried: f64,
    rate: f64,
    updated: Duration,
    /// Bumped when the flow's end is rescheduled: older end events are stale.
    gen: u64,
    flowing: bool,
}

#[derive(Default)]
struct Node {
    stored: Vec<bool>,
    held: u64,
    round: Option<Round>,
    poll_gen: u64,
    poll_at: Option<Duration>,
    /// This node's requests in flight, by the flow carrying each.
    requests: std::collections::HashMap<RequestId, u64>,
    /// Flows going out of and into this node.
    up: Vec<u64>,
    down: Vec<u64>,
    /// Peers that asked it for holders (what it answers when asked), newest last.
    holders: Vec<u32>,
    /// Providers it knows, and those it dropped.
    known: Vec<u32>,
    banned: HashSet<u32>,
    result: NodeResult,
}

/// Runs `scenario`.
pub fn run(scenario: &Scenario) -> SimResult {
    Sim::new(scenario).run()
}

struct Sim<'a> {
    s: &'a Scenario,
    nodes: Vec<Node>,
    queue: BinaryHeap<Reverse<(Duration, u64, usize)>>,
    /// Events by the index in `queue`'s entries (kept apart so the heap orders by time and
    /// sequence only).
    pending: Vec<Option<Event>>,
    free: Vec<usize>,
    /// Flows by id; ids are never reused, so a stale event cannot reach a newer flow.
    flows: std::collections::HashMap<u64, Flow>,
    next_flow: u64,
    seq: u64,
    now: Duration,
    t0: Instant,
    rng: StdRng,
    events: u64,
}

impl<'a> Sim<'a> {
    fn new(s: &'a Scenario) -> Self {
        let nodes = s
            .nodes
            .iter()
            .map(|spec| Node {
                stored: vec![spec.seeds; s.spans as usize],
                held: if spec.seeds { s.spans } else { 0 },
                result: NodeResult {
                    done_at: spec.seeds.then_some(Duration::ZERO),
                    ..NodeResult::default()
                },
                ..Node::default()
            })
            .collect();
        Self {
            s,
            nodes,
            queue: BinaryHeap::new(),
            pending: Vec::new(),
            free: Vec::new(),
            flows: std::collections::HashMap::new(),
            next_flow: 0,
            seq: 0,
            now: Duration::ZERO,
            t0: Instant::now(),
            rng: StdRng::seed_from_u64(s.seed),
            events: 0,
        }
    }

    fn at(&mut self, when: Duration, event: Event) {
        let slot = match self.free.pop() {
            Some(i) => {
                self.pending[i] = Some(event);
                i
            }
            None => {
                self.pending.push(Some(event));
                self.pending.len() - 1
            }
        };
        self.seq += 1;
        self.queue.push(Reverse((when, self.seq, slot)));
    }

    fn instant(&self) -> Instant {
        self.t0 + self.now
    }

    fn alive(&self, node: u32, at: Duration) -> bool {
        self.s.nodes[node as usize].dies_at.is_none_or(|d| at < d)
    }

    fn rtt(&self, a: u32, b: u32) -> Duration {
        2 * (self.s.nodes[a as usize].latency + self.s.nodes[b as usize].latency)
    }

    fn run(mut self) -> SimResult {
        for (i, spec) in self.s.nodes.iter().enumerate() {
            if !spec.seeds {
                self.at(spec.starts_at, Event::Start(i as u32));
            }
            if let Some(at) = spec.dies_at {
                self.at(at, Event::Dies(i as u32));
            }
        }
        while let Some(Reverse((when, _, slot))) = self.queue.pop() {
            if when > self.s.limit {
                break;
            }
            let Some(event) = self.pending[slot].take() else {
                continue;
            };
            self.free.push(slot);
            self.now = when;
            self.events += 1;
            self.handle(event);
        }
        SimResult {
            nodes: self.nodes.into_iter().map(|n| n.result).collect(),
            events: self.events,
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Start(node) => {
                if !self.alive(node, self.now) {
                    return;
                }
                let seeders: Vec<u32> = (0..self.s.nodes.len() as u32)
                    .filter(|&i| self.s.nodes[i as usize].seeds)
                    .collect();
                self.nodes[node as usize].known = seeders;
                self.start_round(node);
                let first = HOLDERS_REFRESH / 4;
                self.at(self.now + first, Event::AskHolders(node, first));
            }
            Event::Restart(node) => self.start_round(node),
            Event::Poll(node, gen) => {
                if self.nodes[node as usize].poll_gen == gen {
                    self.nodes[node as usize].poll_at = None;
                    self.drive(node);
                }
            }
            Event::Have { node, peer } => {
                let answer = if !self.alive(peer, self.now) {
                    Err(format!("peer {peer} is gone"))
                } else if self.nodes[peer as usize].held == self.s.spans {
                    Ok(Holding::Complete)
                } else {
                    self.settle_inbound(peer);
                    Ok(Holding::Spans(runs(&self.nodes[peer as usize].stored)))
                };
                let now = self.instant();
                if let Some(round) = &mut self.nodes[node as usize].round {
                    round.have_answered(peer, answer, now);
                }
                self.drive(node);
            }
            Event::FlowStart(flow) => self.flow_start(flow),
            Event::FlowEnd(flow, gen) => self.flow_end(flow, gen),
            Event::Dies(node) => self.dies(node),
            Event::Unreachable { node, request } => self.request_ended(
                node,
                request,
                Outcome::Failed {
                    error: "gone".into(),
                    misbehaved: false,
                    refused: false,
                    cut_by_punch: false,
                },
            ),
            Event::AskHolders(node, wait) => self.ask_holders(node, wait),
        }
    }

    fn start_round(&mut self, node: u32) {
        if !self.alive(node, self.now) {
            return;
        }
        let n = &mut self.nodes[node as usize];
        if n.held == self.s.spans {
            return;
        }
        let missing = runs_of_missing(&n.stored);
        let start = self.rng.random::<f64>();
        let mut round = Round::new(&missing, start, self.rng.random(), self.s.config.clone());
        let mut candidates: Vec<u32> = n
            .known
            .iter()
            .copied()
            .filter(|p| !n.banned.contains(p))
            .collect();
        candidates.shuffle(&mut self.rng);
        for peer in candidates {
            round.join(peer);
        }
        n.round = Some(round);
        self.drive(node);
    }

    /// Carries out what `node`'s round wants now, and arranges its next poll.
    fn drive(&mut self, node: u32) {
        let now = self.instant();
        loop {
            let Some(round) = &mut self.nodes[node as usize].round else {
                return;
            };
            let Some(action) = round.poll_action(now) else {
                break;
            };
            match action {
                Action::AskHave { peer } => {
                    let rtt = self.rtt(node, peer);
                    self.at(self.now + rtt, Event::Have { node, peer });
                }
                Action::Fetch {
                    request,
                    peer,
                    batch,
                    held,
                } => self.fetch(node, request, peer, batch, held.as_deref().map(|h| &h[..])),
                Action::Cancel { request } => self.cancel(node, request),
            }
        }
        let n = &mut self.nodes[node as usize];
        let Some(round) = &mut n.round else {
            return;
        };
        if round.is_finished() {
            let round = n.round.take().expect("a round");
            for o in round.into_outcomes() {
                if o.dropped_for.is_some() {
                    n.banned.insert(o.peer);
                }
            }
            if n.held < self.s.spans {
                // The node's fetch tries its providers again (a new round, or the next
                // providers): a short pause stands for its dials and lookups.
                self.at(self.now + Duration::from_millis(500), Event::Restart(node));
            }
            return;
        }
        if let Some(t) = round.poll_timeout() {
            let t = t.duration_since(self.t0);
            if n.poll_at.is_none_or(|p| p != t) {
                n.poll_gen += 1;
                n.poll_at = Some(t);
                let gen = n.poll_gen;
                self.at(t, Event::Poll(node, gen));
            }
        }
    }

    fn fetch(
        &mut self,
        node: u32,
        request: RequestId,
        peer: u32,
        batch: Range<u64>,
        held: Option<&[Range<u64>]>,
    ) {
        let n = &self.nodes[node as usize];
        let spans: Vec<u64> = batch
            .filter(|s| !n.stored[*s as usize])
            .filter(|s| held.is_none_or(|h| h.iter().any(|r| r.contains(s))))
            .collect();
        if spans.is_empty() {
            let left = self.batch_left(node, request);
            return self.request_ended(node, request, Outcome::Fetched { sent: false, left });
        }
        if !self.alive(peer, self.now) {
            let rtt = self.rtt(node, peer);
            self.at(self.now + rtt, Event::Unreachable { node, request });
            return;
        }
        let flow = Flow {
            client: node,
            server: peer,
            request,
            spans,
            stored: 0,
            carried: 0.0,
            rate: 0.0,
            updated: self.now,
            gen: 0,
            flowing: false,
        };
        let id = self.next_flow;
        self.next_flow += 1;
        self.flows.insert(id, flow);
        self.nodes[node as usize].requests.insert(request, id);
        let rtt = self.rtt(node, peer);
        self.at(self.now + rtt, Event::FlowStart(id));
    }

    fn flow(&self, id: u64) -> &Flow {
        self.flows.get(&id).expect("a live flow")
    }

    fn flow_mut(&mut self, id: u64) -> &mut Flow {
        self.flows.get_mut(&id).expect("a live flow")
    }

    /// Brings flow `id`'s carried bytes up to now and stores the spans they complete.
    fn settle(&mut self, id: u64) {
        let (now, span_bytes, s) = (self.now, self.s.span_bytes as f64, self.s);
        let f = self.flows.get_mut(&id).expect("a live flow");
        if f.flowing {
            f.carried += f.rate * now.saturating_sub(f.updated).as_secs_f64();
        }
        f.updated = now;
        let whole = ((f.carried / span_bytes + 1e-9).floor() as usize).min(f.spans.len());
        if whole <= f.stored || s.nodes[f.server as usize].lies {
            return;
        }
        let (client, server) = (f.client, f.server);
        let new: Vec<u64> = f.spans[f.stored..whole].to_vec();
        f.stored = whole;
        let n = &mut self.nodes[client as usize];
        for s in new.iter().copied() {
            if !n.stored[s as usize] {
                n.stored[s as usize] = true;
                n.held += 1;
            }
        }
        let bytes = new.len() as u64 * self.s.span_bytes;
        n.result.received += bytes;
        if n.held == self.s.spans && n.result.done_at.is_none() {
            n.result.done_at = Some(now);
        }
        self.nodes[server as usize].result.sent += bytes;
    }

    /// Settles the flows coming into `node` (before it says what it holds).
    fn settle_inbound(&mut self, node: u32) {
        for id in self.nodes[node as usize].down.clone() {
            self.settle(id);
        }
    }

    /// Shares of the links changed at `nodes`: settles their flows, gives each its new
    /// rate, and reschedules its end.
    fn reshare(&mut self, nodes: &[u32]) {
        let mut ids: Vec<u64> = nodes
            .iter()
            .flat_map(|n| {
                let n = &self.nodes[*n as usize];
                n.up.iter().chain(n.down.iter()).copied()
            })
            .collect();
        ids.sort_unstable();
        ids.dedup();
        for id in ids {
            self.settle(id);
            let f = self.flow(id);
            let (server, client) = (f.server as usize, f.client as usize);
            let up = self.s.nodes[server].up / self.nodes[server].up.len().max(1) as f64;
            let down = self.s.nodes[client].down / self.nodes[client].down.len().max(1) as f64;
            let rate = up.min(down);
            // A liar's data fails verification at its first span: the request ends there.
            let spans = if self.s.nodes[server].lies {
                1
            } else {
                f.spans.len()
            };
            let left = spans as f64 * self.s.span_bytes as f64 - f.carried;
            let f = self.flow_mut(id);
            f.rate = rate;
            f.gen += 1;
            let gen = f.gen;
            let end = self.now + Duration::from_secs_f64((left.max(0.0) / rate).max(1e-9));
            self.at(end, Event::FlowEnd(id, gen));
        }
    }

    fn flow_start(&mut self, id: u64) {
        let Some(f) = self.flows.get_mut(&id) else {
            return; // cancelled before its bytes flowed
        };
        f.flowing = true;
        f.updated = self.now;
        let (client, server, request) = (f.client, f.server, f.request);
        if !self.alive(client, self.now) {
            self.remove_flow(id);
            return;
        }
        if !self.alive(server, self.now) {
            self.remove_flow(id);
            return self.request_ended(client, request, gone(server));
        }
        self.nodes[server as usize].up.push(id);
        self.nodes[client as usize].down.push(id);
        self.reshare(&[server, client]);
    }

    /// Takes flow `id` off its links (settled first) and frees it.
    fn remove_flow(&mut self, id: u64) -> Flow {
        self.settle(id);
        let f = self.flows.remove(&id).expect("a live flow");
        self.nodes[f.server as usize].up.retain(|x| *x != id);
        self.nodes[f.client as usize].down.retain(|x| *x != id);
        self.nodes[f.client as usize].requests.remove(&f.request);
        if f.flowing {
            self.reshare(&[f.server, f.client]);
        }
        f
    }

    fn flow_end(&mut self, id: u64, gen: u64) {
        if self.flows.get(&id).is_none_or(|f| f.gen != gen) {
            return;
        }
        self.flow_mut(id).carried = f64::MAX / 4.0; // all of it, whatever the rounding
        let f = self.remove_flow(id);
        let outcome = if self.s.nodes[f.server as usize].lies {
            Outcome::Failed {
                error: format!("peer {} sent bad data", f.server),
                misbehaved: true,
                refused: false,
                cut_by_punch: false,
            }
        } else {
            Outcome::Fetched {
                sent: true,
                left: self.batch_left(f.client, f.request),
            }
        };
        self.request_ended(f.client, f.request, outcome);
    }

    fn cancel(&mut self, node: u32, request: RequestId) {
        if let Some(id) = self.nodes[node as usize].requests.get(&request).copied() {
            self.remove_flow(id);
        }
    }

    /// `node` dies: the flows it serves fail (what they carried is kept), and its own stop.
    fn dies(&mut self, node: u32) {
        let served = self.nodes[node as usize].up.clone();
        for id in served {
            let f = self.remove_flow(id);
            self.request_ended(f.client, f.request, gone(node));
        }
        let own: Vec<u64> = self.nodes[node as usize]
            .requests
            .values()
            .copied()
            .collect();
        for id in own {
            self.remove_flow(id);
        }
        self.nodes[node as usize].round = None;
    }

    fn request_ended(&mut self, node: u32, request: RequestId, outcome: Outcome<String>) {
        self.nodes[node as usize].requests.remove(&request);
        let now = self.instant();
        if let Some(round) = &mut self.nodes[node as usize].round {
            round.request_ended(request, outcome, now);
        }
        self.drive(node);
    }

    /// The spans of `request`'s batch still missing at `node`.
    fn batch_left(&self, node: u32, request: RequestId) -> Vec<Range<u64>> {
        let n = &self.nodes[node as usize];
        let Some(batch) = n.round.as_ref().and_then(|r| r.batch_of(request)) else {
            return Vec::new();
        };
        runs_of_missing(&n.stored[batch.start as usize..batch.end as usize])
            .into_iter()
            .map(|r| r.start + batch.start..r.end + batch.start)
            .collect()
    }

    fn ask_holders(&mut self, node: u32, wait: Duration) {
        let n = &self.nodes[node as usize];
        if n.held == self.s.spans || !self.alive(node, self.now) {
            return;
        }
        let asked: Vec<u32> = n
            .known
            .iter()
            .copied()
            .filter(|p| self.alive(*p, self.now))
            .collect();
        if let Some(&peer) = asked.get(self.rng.random_range(0..asked.len().max(1))) {
            // It answers with the holders it knows, and records the asker as one.
            let answer: Vec<u32> = {
                let h = &mut self.nodes[peer as usize].holders;
                let answer = h[h.len().saturating_sub(self.s.holders_answer)..].to_vec();
                if !h.contains(&node) {
                    h.push(node);
                }
                answer
            };
            let n = &mut self.nodes[node as usize];
            let mut joined = false;
            for holder in answer {
                if holder != node && !n.known.contains(&holder) && !n.banned.contains(&holder) {
                    n.known.push(holder);
                    if let Some(round) = &mut n.round {
                        joined |= round.join(holder);
                    }
                }
            }
            if joined {
                self.drive(node);
            }
        }
        // As `refresh_holders`: waits of 0.5 s, 1 s, 2 s, 2 s… between asks.
        let next = (wait * 2).min(HOLDERS_REFRESH);
        self.at(self.now + next, Event::AskHolders(node, next));
    }
}

fn gone(peer: u32) -> Outcome<String> {
    Outcome::Failed {
        error: format!("peer {peer} is gone"),
        misbehaved: false,
        refused: false,
        cut_by_punch: false,
    }
}

/// The ranges of `true` in `flags`.
fn runs(flags: &[bool]) -> Vec<Range<u64>> {
    let mut out: Vec<Range<u64>> = Vec::new();
    for (i, f) in flags.iter().enumerate() {
        if *f {
            let i = i as u64;
            match out.last_mut() {
                Some(r) if r.end == i => r.end += 1,
                _ => out.push(i..i + 1),
            }
        }
    }
    out
}

/// The ranges of `false` in `flags`.
fn runs_of_missing(flags: &[bool]) -> Vec<Range<u64>> {
    let inverted: Vec<bool> = flags.iter().map(|f| !f).collect();
    runs(&inverted)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: f64 = (1 << 20) as f64;

    fn node(up_mib: f64, seeds: bool) -> NodeSpec {
        NodeSpec {
            up: up_mib * MIB,
            down: 1000.0 * MIB,
            latency: Duration::from_millis(1),
            seeds,
            starts_at: Duration::ZERO,
            dies_at: None,
            lies: false,
        }
    }

    fn scenario(nodes: Vec<NodeSpec>, seed: u64) -> Scenario {
        Scenario {
            spans: 256, // 64 MiB
            span_bytes: 256 * 1024,
            nodes,
            config: RoundConfig::default(),
            holders_answer: 64,
            seed,
            limit: Duration::from_secs(3600),
        }
    }

    #[test]
    fn four_seeders_fill_the_summed_links_and_the_same_seed_repeats() {
        let mut nodes: Vec<NodeSpec> = (0..4).map(|_| node(10.0, true)).collect();
        nodes.push(node(0.0, false));
        let s = scenario(nodes, 7);
        let a = run(&s);
        let done = a.nodes[4].done_at.expect("the leecher completes");
        // 64 MiB over 4 × 10 MiB/s: 1.6 s at best; the batch gaps and the end cost a little.
        assert!(done >= Duration::from_millis(1600), "{done:?}");
        assert!(done < Duration::from_millis(1900), "{done:?}");
        assert!(a.nodes[..4].iter().all(|n| n.sent >= 12 << 20), "{a:?}");
        assert_eq!(a, run(&s), "deterministic for a seed");
    }

    #[test]
    fn leechers_trade_what_they_hold_so_the_seeder_sends_few_copies() {
        let mut nodes = vec![node(10.0, true)];
        nodes.extend((0..8).map(|_| node(10.0, false)));
        let r = run(&scenario(nodes, 3));
        assert!(r.nodes.iter().all(|n| n.done_at.is_some()), "{r:?}");
        let copies = r.nodes[0].sent as f64 / (64.0 * MIB);
        assert!(copies < 3.0, "the seeder sent {copies:.2} copies");
        // Eight copies through one 10 MiB/s uplink would take 51 s.
        let last = r
            .nodes
            .iter()
            .filter_map(|n| n.done_at)
            .max()
            .expect("done");
        assert!(last < Duration::from_secs(20), "{last:?}");
    }

    #[test]
    fn a_dead_seeder_and_a_liar_cost_time_not_data() {
        let mut nodes: Vec<NodeSpec> = (0..3).map(|_| node(10.0, true)).collect();
        nodes[0].dies_at = Some(Duration::from_millis(500));
        nodes[1].lies = true;
        nodes.push(node(0.0, false));
        let r = run(&scenario(nodes, 5));
        assert!(r.nodes[3].done_at.is_some(), "{r:?}");
        assert_eq!(r.nodes[1].sent, 0, "nothing of the liar's is stored");
        assert!(r.nodes[0].sent > 0 && r.nodes[0].sent < 8 << 20, "{r:?}");
    }
}
