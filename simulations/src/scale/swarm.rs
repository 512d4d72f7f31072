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
//! before) when the node's [`HolderAsks`] says, remembers up to [`MAX_KNOWN_HOLDERS`], and
//! each new one joins its round.
//! Time is virtual: the same scenario and seed give the same run.

use std::{
    cmp::Reverse,
    ops::Range,
    sync::Arc,
    time::{Duration, Instant},
};

use commons_node::{
    fetch::{
        HolderAsks, KnownHolders, NextStep, ProviderPlan, DIAL_GRACE, LOOKUP_WANT,
        PROVIDERS_REFRESH,
    },
    mirror::{FIRST_RETRY, MAX_RETRY},
    transfer::{
        response_memory,
        swarm_machine::{Action, Holding, Outcome, RequestId, RoundConfig, SwarmRound},
        ServeLimits, BUSY_FIRST_WAIT, BUSY_PATIENCE, MAX_ROUNDS,
    },
};
use commons_protocol::wire::GroupRange;
use radix_heap::RadixHeapMap;
use rand::{rngs::StdRng, Rng, SeedableRng};
use rustc_hash::{FxHashMap, FxHashSet};

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
    /// How a server admits requests (`None`: every request is served at once).
    pub admission: Option<Admission>,
    /// Seeds every random choice (the nodes' and the model's).
    pub seed: u64,
    /// Give up at this virtual time.
    pub limit: Duration,
}

/// The transfer server's send buffer (`ServeLimits` in the node's `transfer/gate.rs`),
/// counted in responses: a request is served once its response's memory is reserved; it
/// waits for that at most `send_wait`, then is answered `Busy`, and the client asks again
/// after `busy_first_wait`, doubling, until `busy_patience` has passed (`transfer/client.rs`),
/// when the request fails as refused. A peer holding no response takes from the whole
/// buffer; one holding some also from the shared part, so each peer's first response is
/// never in line behind other peers' further ones.
#[derive(Debug, Clone, PartialEq)]
pub struct Admission {
    /// Responses the whole buffer holds.
    pub slots: usize,
    /// Responses peers already holding one may hold together.
    pub shared_slots: usize,
    /// Responses one peer may hold.
    pub per_peer: usize,
    /// How long a request waits for its place.
    pub send_wait: Duration,
    /// The client's first wait after `Busy`.
    pub busy_first_wait: Duration,
    /// How long the client keeps asking after `Busy`.
    pub busy_patience: Duration,
}

impl Admission {
    /// The node's defaults, for responses of `response_bytes` (a batch of the store's spans).
    pub fn node(response_bytes: u64) -> Self {
        let limits = ServeLimits::default();
        let whole = [GroupRange {
            start: 0,
            end: None,
        }];
        let memory = response_memory(response_bytes, &whole).max(1);
        let count = |bytes: u64| ((bytes / memory) as usize).max(1);
        Self {
            slots: count(limits.send_buffer),
            shared_slots: count(limits.shared_send_buffer()),
            per_peer: count(limits.send_buffer_per_peer),
            send_wait: limits.send_wait,
            busy_first_wait: BUSY_FIRST_WAIT,
            busy_patience: BUSY_PATIENCE,
        }
    }
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
    /// The most responses it sent at once.
    pub most_served: usize,
    /// The `get`s it ran (a mirror runs another when one fails).
    pub gets: u32,
    /// The swarm rounds its gets ran.
    pub rounds: u32,
}

/// A run's results.
#[derive(Debug, Clone, PartialEq)]
pub struct SimResult {
    /// Per node, in the scenario's order.
    pub nodes: Vec<NodeResult>,
    /// Events processed.
    pub events: u64,
    /// Events processed by kind (see [`EVENT_KINDS`]): where a run's cost goes.
    pub events_by_kind: [u64; EVENT_KINDS.len()],
}

/// Names of the kinds counted in [`SimResult::events_by_kind`], in its order.
pub const EVENT_KINDS: [&str; 10] = [
    "start",
    "poll",
    "have",
    "flow start",
    "flow end",
    "dies",
    "unreachable",
    "ask holders",
    "round",
    "busy",
];

type Round = SwarmRound<u32, Failure>;

/// Why a request failed (what the node's `FetchError` says): whether the provider broke
/// the protocol decides whether the fetch drops it for good.
#[derive(Debug, Clone, PartialEq)]
struct Failure {
    why: String,
    misbehaved: bool,
}

impl Failure {
    fn new(why: String) -> Self {
        Self {
            why,
            misbehaved: false,
        }
    }
}

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
    AskHolders(u32),
    /// The node's swarm runs its next round (or, when the swarm is over, the get its next
    /// step).
    Round(u32),
    /// A request still waiting for its place at its server is answered `Busy`, unless
    /// `attempt` is stale.
    Busy(u64, u32),
}

impl Event {
    /// Its index in [`EVENT_KINDS`].
    fn kind(&self) -> usize {
        match self {
            Event::Start(_) => 0,
            Event::Poll(..) => 1,
            Event::Have { .. } => 2,
            Event::FlowStart(_) => 3,
            Event::FlowEnd(..) => 4,
            Event::Dies(_) => 5,
            Event::Unreachable { .. } => 6,
            Event::AskHolders(..) => 7,
            Event::Round(_) => 8,
            Event::Busy(..) => 9,
        }
    }
}

/// The live flows, in slots reused as flows end: looked up on nearly every event, without
/// hashing (2 % fewer instructions at 100 mirrors). A flow's id is the count of flows made before it,
/// then its slot in the low [`SLOT_BITS`] bits: ids are never reused, so a stale event
/// cannot reach a newer flow in the same slot, and ids order as the flows were made.
#[derive(Default)]
struct Flows {
    slots: Vec<Option<(u64, Flow)>>,
    free: Vec<usize>,
    made: u64,
}

/// Bits of a flow id that name its slot: room for 16 M flows at once.
const SLOT_BITS: u32 = 24;

impl Flows {
    fn insert(&mut self, flow: Flow) -> u64 {
        let slot = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.slots.len() - 1
        });
        assert!(
            slot < 1 << SLOT_BITS,
            "more flows at once than ids can name"
        );
        let id = self.made << SLOT_BITS | slot as u64;
        self.made += 1;
        self.slots[slot] = Some((id, flow));
        id
    }

    fn slot(id: u64) -> usize {
        (id & ((1 << SLOT_BITS) - 1)) as usize
    }

    fn get(&self, id: u64) -> Option<&Flow> {
        match &self.slots[Self::slot(id)] {
            Some((live, flow)) if *live == id => Some(flow),
            _ => None,
        }
    }

    fn get_mut(&mut self, id: u64) -> Option<&mut Flow> {
        match &mut self.slots[Self::slot(id)] {
            Some((live, flow)) if *live == id => Some(flow),
            _ => None,
        }
    }

    fn remove(&mut self, id: u64) -> Option<Flow> {
        self.get(id)?;
        let slot = Self::slot(id);
        self.free.push(slot);
        self.slots[slot].take().map(|(_, flow)| flow)
    }
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
    /// When its pending end event fires. A slower rate leaves it in place (the event
    /// finds bytes left and comes back later): most rate changes at a busy node slow its
    /// flows, and rescheduling each was most of the model's events.
    end_at: Option<Duration>,
    flowing: bool,
    /// Its place in the server's send buffer, once admitted.
    lane: Option<Lane>,
    /// When the client first asked, how long it waits after the next `Busy`, and which
    /// try this is.
    asked_at: Duration,
    busy_wait: Duration,
    attempt: u32,
}

/// Which part of the send buffer a response holds.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Lane {
    /// The client's first response at this server: from the whole buffer.
    First,
    /// A further one: from the shared part too.
    Shared,
}

/// One `get` of the blob, as `fetch.rs` runs it: the providers it knows (from the lookup,
/// then the holder exchange), which it tried ([`ProviderPlan`]), and the swarm over those
/// reached, round after round as `swarm_blob` runs them.
#[derive(Default)]
struct Get {
    plan: ProviderPlan<u32>,
    /// Providers it knows, in the order it learnt of them, and as a set.
    known: Vec<u32>,
    known_set: KnownHolders<u32, rustc_hash::FxBuildHasher>,
    /// The swarm's providers still live after its last round, the rounds it ran, and the
    /// spans missing before the last one (a round that stores nothing ends the swarm).
    live: Vec<u32>,
    rounds: usize,
    missing_before: Option<u64>,
    /// When it last asked the DHT for providers.
    looked_up_at: Duration,
    /// How long each provider's list of holders was when it last answered: the list only
    /// grows at its end, so the names before that were offered already and are skipped
    /// (looking each up again was a sixth of the model's time).
    heard_from: FxHashMap<u32, usize>,
}

/// What events at other nodes read of a node: its links (its spec's, copied), whether it
/// holds the whole blob, and the flows sharing its links now.
struct Links {
    up: f64,
    down: f64,
    latency: Duration,
    lies: bool,
    holds_all: bool,
    /// Flows going out (the length of its `Node::up`) and coming in (`Node::down`),
    /// kept beside the lists (checked against them, and `holds_all` against `Node::held`,
    /// in tests at every share change).
    sending: u32,
    receiving: u32,
}

#[derive(Default)]
struct Node {
    stored: Vec<bool>,
    held: u64,
    /// `stored` as span ranges, while it stays: what it answers `Have` with (a scan of every
    /// span per answer was a tenth of the model's time), the same `Arc` to every asker
    /// until it changes.
    held_runs: Option<Arc<Vec<Range<u64>>>>,
    round: Option<Round>,
    poll_gen: u64,
    poll_at: Option<Duration>,
    /// This node's requests in flight, by the flow carrying each.
    requests: FxHashMap<RequestId, u64>,
    /// Flows going out of and into this node.
    up: Vec<u64>,
    down: Vec<u64>,
    /// Requests waiting for a place in this node's send buffer, in order of arrival; the
    /// places taken (all, shared) and by whom.
    /// Entries are (flow, attempt): one whose flow is gone, admitted or asking again is
    /// stale, skipped and dropped in bulk (removing each from the middle of a busy
    /// seeder's long queue was a tenth of the 10,000-mirror run's time).
    waiting: std::collections::VecDeque<(u64, u32)>,
    /// Entries of `waiting` that went stale since it was last swept (an upper bound).
    stale_waiting: usize,
    taken: (usize, usize),
    taken_by: FxHashMap<u32, usize>,
    /// Peers that asked it for holders, each once, in the order they first asked; the
    /// newest `holders_answer` are answered. (The node's `Holders::add` also moves a peer
    /// asking again to the newest place and forgets the oldest beyond
    /// `MAX_HOLDERS_PER_HASH`; the model does not yet: a known difference.)
    holders: Vec<u32>,
    holder_set: FxHashSet<u32>,
    /// Its holder exchange is running (one chain of asks per node), and its pace.
    asking_holders: bool,
    holder_asks: HolderAsks,
    /// Its `get` of the blob, while it runs.
    get: Option<Get>,
    /// How long its mirror waits before the next `get` after one failed.
    retry_wait: Duration,
    /// Providers that sent it bad data (the node's scores shun them).
    banned: FxHashSet<u32>,
    result: NodeResult,
}

/// Events popped this many ahead of the one handled, so that the memory they read can be
/// asked for early (see [`Lookahead`]).
const LOOKAHEAD: usize = 16;

/// The pending events, earliest first: a radix heap, and the next [`LOOKAHEAD`] events
/// taken out of it ahead of time, so that the caches can be asked for what they will read
/// while earlier ones are handled (the model's time at 100,000 mirrors is mostly waiting
/// for memory). A radix heap takes no event due before the last one taken: an event due
/// before the last one taken ahead goes into the lookahead, in order.
#[derive(Default)]
struct Lookahead {
    heap: RadixHeapMap<Reverse<(u64, u64)>, Event>,
    ahead: std::collections::VecDeque<((u64, u64), Event)>,
}

impl Lookahead {
    fn push(&mut self, key: (u64, u64), event: Event) {
        match self.ahead.back() {
            Some((last, _)) if key < *last => {
                let at = self.ahead.partition_point(|(k, _)| *k < key);
                self.ahead.insert(at, (key, event));
            }
            _ => self.heap.push(Reverse(key), event),
        }
    }

    fn pop(&mut self) -> Option<((u64, u64), Event)> {
        while self.ahead.len() <= LOOKAHEAD {
            let Some((Reverse(key), event)) = self.heap.pop() else {
                break;
            };
            self.ahead.push_back((key, event));
        }
        self.ahead.pop_front()
    }

    /// The event `i` places after the next one, if taken out already.
    fn ahead(&self, i: usize) -> Option<&Event> {
        self.ahead.get(i).map(|(_, e)| e)
    }
}

/// Asks the cache for the line holding `p` (a hint: no effect on what the program does).
#[allow(unsafe_code)]
fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads nothing the program sees and cannot fault, whatever the
    // address; SSE, which it needs, is part of every x86-64.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T1 }>(p as *const i8)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Runs `scenario`.
pub fn run(scenario: &Scenario) -> SimResult {
    run_reporting(scenario, 0, |_| {})
}

/// How far a run has got, for a progress line on a long one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Virtual time.
    pub now: Duration,
    /// Events processed.
    pub events: u64,
    /// Nodes that hold the whole blob and announced it: seeders included, and nodes that
    /// died after announcing still counted (as in what a lookup finds).
    pub holders: usize,
    /// Events processed so far by kind (see [`EVENT_KINDS`]).
    pub events_by_kind: [u64; EVENT_KINDS.len()],
}

/// Runs `scenario`, handing `report` the run's progress every `every` events (never if 0).
pub fn run_reporting(scenario: &Scenario, every: u64, report: impl FnMut(Progress)) -> SimResult {
    Sim::new(scenario).run(every, report)
}

struct Sim<'a> {
    s: &'a Scenario,
    nodes: Vec<Node>,
    /// Pending events by (time in nanoseconds, sequence), earliest first. A radix heap
    /// (a binary heap's pops were a tenth of the model's time): it takes no event due
    /// before the last one taken, so [`Sim::at`] moves such an event (a poll time already
    /// past) to now, where it comes after those already due now. The events are the
    /// heap's values (when they were kept in a slab beside it, fetching each popped one
    /// from a random slot was 6 % of the 100,000-mirror run's time). The next events are
    /// taken out ahead, so that [`Sim::warm`] can ask for their memory early.
    queue: Lookahead,
    /// Each node's links and flow counts, apart from [`Node`]: what sharing a link needs
    /// of the node at a flow's other end, in 48 bytes instead of a random read of its
    /// 1.5 KB `Node` and its 72-byte spec (those reads were most of [`Sim::reshare`]'s
    /// time at 100,000 mirrors, whose nodes do not fit in the caches).
    links: Vec<Links>,
    /// Whether any node dies: if none, [`Sim::alive`] needs no look at the specs.
    mortal: bool,
    flows: Flows,
    /// [`Sim::reshare`]'s list of flows, kept to be reused (it runs on most events).
    reshared: Vec<u64>,
    seq: u64,
    now: Duration,
    t0: Instant,
    rng: StdRng,
    events: u64,
    events_by_kind: [u64; EVENT_KINDS.len()],
    /// Nodes that hold the whole blob and announced it, in that order: what a DHT lookup
    /// finds (a node that died stays in it, as its record outlives it).
    announced: Vec<u32>,
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
            queue: Lookahead::default(),
            links: s
                .nodes
                .iter()
                .map(|spec| Links {
                    up: spec.up,
                    down: spec.down,
                    latency: spec.latency,
                    lies: spec.lies,
                    holds_all: spec.seeds,
                    sending: 0,
                    receiving: 0,
                })
                .collect(),
            mortal: s.nodes.iter().any(|spec| spec.dies_at.is_some()),
            flows: Flows::default(),
            reshared: Vec::new(),
            seq: 0,
            now: Duration::ZERO,
            t0: Instant::now(),
            rng: StdRng::seed_from_u64(s.seed),
            events: 0,
            events_by_kind: [0; EVENT_KINDS.len()],
            announced: (0..s.nodes.len() as u32)
                .filter(|&i| s.nodes[i as usize].seeds)
                .collect(),
        }
    }

    fn at(&mut self, when: Duration, event: Event) {
        self.seq += 1;
        let when = when.max(self.now).as_nanos() as u64;
        self.queue.push((when, self.seq), event);
    }

    /// Asks the caches for what the events due soon will read (see [`Lookahead`]): the
    /// nodes an event names, [`LOOKAHEAD`] events ahead; a flow's two ends, once its own
    /// line has come, half as far ahead.
    fn warm(&self) {
        if let Some(event) = self.queue.ahead(LOOKAHEAD - 1) {
            match *event {
                Event::Start(n)
                | Event::Poll(n, _)
                | Event::AskHolders(n)
                | Event::Round(n)
                | Event::Dies(n)
                | Event::Unreachable { node: n, .. } => self.warm_node(n),
                Event::Have { node, peer } => {
                    self.warm_node(node);
                    self.warm_holdings(peer);
                }
                Event::FlowStart(id) | Event::FlowEnd(id, _) | Event::Busy(id, _) => {
                    prefetch(&self.flows.slots[Flows::slot(id)]);
                }
            }
        }
        if let Some(Event::FlowStart(id) | Event::FlowEnd(id, _) | Event::Busy(id, _)) =
            self.queue.ahead(LOOKAHEAD / 2)
        {
            if let Some(f) = self.flows.get(*id) {
                self.warm_node(f.client);
                self.warm_node(f.server);
            }
        }
    }

    /// All of node `n` and its links.
    fn warm_node(&self, n: u32) {
        let start = &self.nodes[n as usize] as *const Node as *const u8;
        for line in (0..std::mem::size_of::<Node>()).step_by(64) {
            prefetch(start.wrapping_add(line));
        }
        prefetch(&self.links[n as usize]);
    }

    /// What answering a `Have` reads of node `n`: its links, then, if partial, its flows
    /// coming in and its spans.
    fn warm_holdings(&self, n: u32) {
        prefetch(&self.links[n as usize]);
        let node = &self.nodes[n as usize];
        prefetch(&node.stored);
        prefetch(&node.down);
        prefetch(&node.held_runs);
    }

    fn instant(&self) -> Instant {
        self.t0 + self.now
    }

    fn alive(&self, node: u32, at: Duration) -> bool {
        !self.mortal || self.s.nodes[node as usize].dies_at.is_none_or(|d| at < d)
    }

    fn rtt(&self, a: u32, b: u32) -> Duration {
        2 * (self.links[a as usize].latency + self.links[b as usize].latency)
    }

    fn run(mut self, every: u64, mut report: impl FnMut(Progress)) -> SimResult {
        for (i, spec) in self.s.nodes.iter().enumerate() {
            if !spec.seeds {
                self.at(spec.starts_at, Event::Start(i as u32));
            }
            if let Some(at) = spec.dies_at {
                self.at(at, Event::Dies(i as u32));
            }
        }
        while let Some(((nanos, _), event)) = self.queue.pop() {
            self.warm();
            let when = Duration::from_nanos(nanos);
            if when > self.s.limit {
                break;
            }
            self.now = when;
            self.events += 1;
            self.events_by_kind[event.kind()] += 1;
            self.handle(event);
            if every > 0 && self.events.is_multiple_of(every) {
                report(Progress {
                    now: self.now,
                    events: self.events,
                    holders: self.announced.len(),
                    events_by_kind: self.events_by_kind,
                });
            }
        }
        SimResult {
            nodes: self.nodes.into_iter().map(|n| n.result).collect(),
            events: self.events,
            events_by_kind: self.events_by_kind,
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Start(node) => self.start_get(node),
            Event::Round(node) => self.next_round(node),
            Event::Poll(node, gen) => {
                if self.nodes[node as usize].poll_gen == gen {
                    self.nodes[node as usize].poll_at = None;
                    self.drive(node);
                }
            }
            Event::Have { node, peer } => {
                let answer = if !self.alive(peer, self.now) {
                    Err((Failure::new(format!("peer {peer} is gone")), false))
                } else if self.links[peer as usize].holds_all {
                    Ok(Holding::Complete)
                } else {
                    self.settle_inbound(peer);
                    let p = &mut self.nodes[peer as usize];
                    let held = p.held_runs.get_or_insert_with(|| Arc::new(runs(&p.stored)));
                    Ok(Holding::Spans(Arc::clone(held)))
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
                    error: Failure::new("gone".into()),
                    misbehaved: false,
                    refused: false,
                    cut_by_punch: false,
                },
            ),
            Event::AskHolders(node) => self.ask_holders(node),
            Event::Busy(flow, attempt) => self.busy(flow, attempt),
        }
    }

    /// A `get` starts: a DHT lookup finds providers, then the plan picks whom to dial.
    fn start_get(&mut self, node: u32) {
        if !self.alive(node, self.now) || self.nodes[node as usize].held == self.s.spans {
            return;
        }
        self.nodes[node as usize].result.gets += 1;
        let mut get = Get {
            looked_up_at: self.now,
            ..Get::default()
        };
        for p in self.lookup(node) {
            get.know(p);
        }
        get.plan.mark_looked_up();
        self.nodes[node as usize].get = Some(get);
        self.next_step(node);
        let n = &mut self.nodes[node as usize];
        if n.get.is_some() && !n.asking_holders {
            n.asking_holders = true;
            n.holder_asks = HolderAsks::default();
            let first = n.holder_asks.wait();
            self.at(self.now + first, Event::AskHolders(node));
        }
    }

    /// What a DHT lookup by `node` finds: up to `LOOKUP_WANT` of the nodes that announced
    /// the blob, at random.
    fn lookup(&mut self, node: u32) -> Vec<u32> {
        let want = (LOOKUP_WANT + 1).min(self.announced.len());
        let mut picked: Vec<usize> = Vec::with_capacity(want);
        while picked.len() < want {
            let i = self.rng.random_range(0..self.announced.len());
            if !picked.contains(&i) {
                picked.push(i);
            }
        }
        let n = &self.nodes[node as usize];
        let mut found: Vec<u32> = picked
            .into_iter()
            .map(|i| self.announced[i])
            .filter(|p| *p != node && !n.banned.contains(p))
            .collect();
        found.truncate(LOOKUP_WANT);
        found
    }

    /// The get's next step ([`ProviderPlan::next`]): dial the next providers and swarm over
    /// those reached, look up once more, or fail (the mirror tries again later).
    fn next_step(&mut self, node: u32) {
        loop {
            let Some(get) = self.nodes[node as usize].get.as_mut() else {
                return;
            };
            let known = get.known.clone();
            match get.plan.next(known, |_| {}, |_, _| false) {
                NextStep::Dial(peers) => {
                    let now = self.instant();
                    let (reached, gone): (Vec<u32>, Vec<u32>) =
                        peers.into_iter().partition(|p| self.alive(*p, self.now));
                    // The swarm starts once the first dial answered and the rest had their
                    // grace: at the slowest round trip among those reached.
                    let dialled = reached
                        .iter()
                        .map(|p| self.rtt(node, *p))
                        .max()
                        .unwrap_or_default()
                        .min(DIAL_GRACE);
                    let get = self.nodes[node as usize].get.as_mut().expect("a get");
                    for p in gone {
                        get.plan.dial_failed(p, now);
                    }
                    if reached.is_empty() {
                        continue;
                    }
                    get.live = reached;
                    get.rounds = 0;
                    get.missing_before = None;
                    self.at(self.now + dialled, Event::Round(node));
                    return;
                }
                NextStep::LookUp => {
                    let found = self.lookup(node);
                    let get = self.nodes[node as usize].get.as_mut().expect("a get");
                    get.looked_up_at = self.now;
                    for p in found {
                        get.know(p);
                    }
                }
                NextStep::Exhausted => {
                    // The get fails; the mirror asks again after its backoff.
                    let n = &mut self.nodes[node as usize];
                    n.get = None;
                    n.retry_wait = (n.retry_wait * 2).clamp(FIRST_RETRY, MAX_RETRY);
                    let wait = n.retry_wait;
                    self.at(self.now + wait, Event::Start(node));
                    return;
                }
            }
        }
    }

    /// The swarm's next round over its live providers, as `swarm_blob` runs them; when the
    /// swarm is over (no live provider, a round stored nothing, or `MAX_ROUNDS`), the get's
    /// next step.
    fn next_round(&mut self, node: u32) {
        if !self.alive(node, self.now) {
            return;
        }
        let n = &mut self.nodes[node as usize];
        let Some(get) = n.get.as_mut() else {
            return;
        };
        if n.held == self.s.spans {
            n.get = None;
            return;
        }
        let count = self.s.spans - n.held;
        if get.live.is_empty() || get.missing_before == Some(count) || get.rounds >= MAX_ROUNDS {
            return self.next_step(node);
        }
        get.rounds += 1;
        get.missing_before = Some(count);
        n.result.rounds += 1;
        let missing = runs_of_missing(&n.stored);
        let start = self.rng.random::<f64>();
        let mut round = Round::new(&missing, start, self.rng.random(), self.s.config.clone());
        for peer in get.live.drain(..) {
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
            let outcomes = round.into_outcomes();
            let misbehaved: Vec<u32> = outcomes
                .iter()
                .filter(|o| o.dropped_for.as_ref().is_some_and(|e| e.misbehaved))
                .map(|o| o.peer)
                .collect();
            n.banned.extend(misbehaved.iter().copied());
            if let Some(get) = n.get.as_mut() {
                get.known.retain(|p| !misbehaved.contains(p));
                for p in &misbehaved {
                    get.known_set.remove(p);
                }
                get.live = outcomes
                    .iter()
                    .filter(|o| o.dropped_for.is_none())
                    .map(|o| o.peer)
                    .collect();
            }
            self.at(self.now, Event::Round(node));
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
        // What the other copies coming in have carried is stored (the node's store is).
        self.settle_inbound(node);
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
            end_at: None,
            flowing: false,
            lane: None,
            asked_at: self.now,
            busy_wait: self
                .s
                .admission
                .as_ref()
                .map_or(Duration::ZERO, |a| a.busy_first_wait),
            attempt: 0,
        };
        let id = self.flows.insert(flow);
        self.nodes[node as usize].requests.insert(request, id);
        let rtt = self.rtt(node, peer);
        self.at(self.now + rtt, Event::FlowStart(id));
    }

    fn flow(&self, id: u64) -> &Flow {
        self.flows.get(id).expect("a live flow")
    }

    fn flow_mut(&mut self, id: u64) -> &mut Flow {
        self.flows.get_mut(id).expect("a live flow")
    }

    /// Brings flow `id`'s carried bytes up to now and stores the spans they complete.
    fn settle(&mut self, id: u64) {
        let (now, span_bytes) = (self.now, self.s.span_bytes as f64);
        let f = self.flows.get_mut(id).expect("a live flow");
        if f.flowing {
            f.carried += f.rate * now.saturating_sub(f.updated).as_secs_f64();
        }
        f.updated = now;
        let whole = ((f.carried / span_bytes + 1e-9).floor() as usize).min(f.spans.len());
        if whole <= f.stored || self.links[f.server as usize].lies {
            return;
        }
        let (client, server) = (f.client, f.server);
        let new = f.stored..whole;
        f.stored = whole;
        let n = &mut self.nodes[client as usize];
        for &s in &f.spans[new.clone()] {
            if !n.stored[s as usize] {
                n.stored[s as usize] = true;
                n.held_runs = None;
                n.held += 1;
            }
        }
        let bytes = new.len() as u64 * self.s.span_bytes;
        n.result.received += bytes;
        if n.held == self.s.spans && n.result.done_at.is_none() {
            self.links[client as usize].holds_all = true;
            n.result.done_at = Some(now);
            // It announces itself as a provider (a DHT lookup finds it from now on).
            self.announced.push(client);
        }
        self.nodes[server as usize].result.sent += bytes;
    }

    /// Settles the flows coming into `node` (before it says what it holds).
    fn settle_inbound(&mut self, node: u32) {
        // By index: settling does not change the list, and copying it was an allocation
        // per `Have` answer.
        for i in 0..self.nodes[node as usize].down.len() {
            let id = self.nodes[node as usize].down[i];
            self.settle(id);
        }
    }

    /// Shares of the links changed at `nodes`: settles their flows, gives each its new
    /// rate, and reschedules its end.
    fn reshare(&mut self, nodes: &[u32]) {
        let mut ids = std::mem::take(&mut self.reshared);
        ids.clear();
        ids.extend(nodes.iter().flat_map(|n| {
            let n = &self.nodes[*n as usize];
            n.up.iter().chain(n.down.iter()).copied()
        }));
        ids.sort_unstable();
        ids.dedup();
        #[cfg(test)]
        for &n in nodes {
            let (node, links) = (&self.nodes[n as usize], &self.links[n as usize]);
            assert_eq!(
                (links.sending as usize, links.receiving as usize),
                (node.up.len(), node.down.len()),
                "node {n}'s flow counts"
            );
            assert_eq!(
                links.holds_all,
                node.held == self.s.spans,
                "node {n} holds all"
            );
        }
        for &id in &ids {
            let f = self.flow(id);
            let (server, client) = (f.server as usize, f.client as usize);
            let up = self.links[server].up / self.links[server].sending.max(1) as f64;
            let down = self.links[client].down / self.links[client].receiving.max(1) as f64;
            let rate = up.min(down);
            // A flow whose rate stays keeps its end event (most flows at a busy node are
            // held back by the other end): the model's main cost at scale.
            if f.rate > 0.0 && (rate - f.rate).abs() <= rate * 1e-12 {
                continue;
            }
            self.settle(id);
            self.flow_mut(id).rate = rate;
            self.schedule_end(id, false);
        }
        self.reshared = ids;
    }

    /// Bytes flow `id` still has to carry at its current rate: all its spans, or up to the
    /// first for a liar (its data fails verification there and the request ends).
    fn bytes_left(&self, id: u64) -> f64 {
        let f = self.flow(id);
        let spans = if self.links[f.server as usize].lies {
            1
        } else {
            f.spans.len()
        };
        spans as f64 * self.s.span_bytes as f64 - f.carried
    }

    /// Schedules settled flow `id`'s end at its current rate, unless its pending end event
    /// comes no sooner (`force`: there is none).
    fn schedule_end(&mut self, id: u64, force: bool) {
        let (left, now) = (self.bytes_left(id), self.now);
        let f = self.flow_mut(id);
        let end = now + Duration::from_secs_f64((left.max(0.0) / f.rate).max(1e-9));
        if !force && f.end_at.is_some_and(|at| at <= end) {
            return;
        }
        f.gen += 1;
        f.end_at = Some(end);
        let gen = f.gen;
        self.at(end, Event::FlowEnd(id, gen));
    }

    /// Request `id` reaches its server: served at once, or waiting for a place.
    fn flow_start(&mut self, id: u64) {
        let Some(f) = self.flows.get(id) else {
            return; // cancelled before it reached the server
        };
        let (client, server, request, attempt) = (f.client, f.server, f.request, f.attempt);
        if !self.alive(client, self.now) {
            self.remove_flow(id);
            return;
        }
        if !self.alive(server, self.now) {
            self.remove_flow(id);
            return self.request_ended(client, request, gone(server));
        }
        if !self.admit(id) {
            let n = &mut self.nodes[server as usize];
            if n.stale_waiting > 64 && n.stale_waiting * 2 > n.waiting.len() {
                let flows = &self.flows;
                n.waiting.retain(|e| still_waiting(flows, *e));
                n.stale_waiting = 0;
            }
            n.waiting.push_back((id, attempt));
            let wait = self
                .s
                .admission
                .as_ref()
                .map_or(Duration::ZERO, |a| a.send_wait);
            self.at(self.now + wait, Event::Busy(id, attempt));
            return;
        }
        self.begin_flowing(id);
    }

    /// Reserves flow `id`'s place in its server's send buffer if there is one (always, with
    /// no admission modelled).
    fn admit(&mut self, id: u64) -> bool {
        let Some(a) = &self.s.admission else {
            return true;
        };
        let f = self.flow(id);
        let (client, server) = (f.client, f.server);
        let n = &self.nodes[server as usize];
        let held = n.taken_by.get(&client).copied().unwrap_or(0);
        let lane = if held == 0 { Lane::First } else { Lane::Shared };
        let room = n.taken.0 < a.slots
            && (lane == Lane::First || (held < a.per_peer && n.taken.1 < a.shared_slots));
        if !room {
            return false;
        }
        let n = &mut self.nodes[server as usize];
        n.taken.0 += 1;
        n.taken.1 += usize::from(lane == Lane::Shared);
        *n.taken_by.entry(client).or_default() += 1;
        self.flow_mut(id).lane = Some(lane);
        true
    }

    /// Gives back flow `f`'s place at its server and admits the requests waiting there that
    /// now fit, in order.
    fn release(&mut self, f: &Flow) {
        let Some(lane) = f.lane else {
            return;
        };
        let n = &mut self.nodes[f.server as usize];
        n.taken.0 -= 1;
        n.taken.1 -= usize::from(lane == Lane::Shared);
        if let Some(held) = n.taken_by.get_mut(&f.client) {
            *held -= 1;
            if *held == 0 {
                n.taken_by.remove(&f.client);
            }
        }
        let slots = self.s.admission.as_ref().map_or(usize::MAX, |a| a.slots);
        let mut i = 0;
        while i < self.nodes[f.server as usize].waiting.len()
            && self.nodes[f.server as usize].taken.0 < slots
        {
            let entry = self.nodes[f.server as usize].waiting[i];
            let id = entry.0;
            if !still_waiting(&self.flows, entry) {
                if i == 0 {
                    let n = &mut self.nodes[f.server as usize];
                    n.waiting.pop_front();
                    n.stale_waiting = n.stale_waiting.saturating_sub(1);
                } else {
                    i += 1;
                }
            } else if self.admit(id) {
                self.nodes[f.server as usize].waiting.remove(i);
                self.begin_flowing(id);
            } else {
                i += 1;
            }
        }
    }

    /// Flow `id`'s bytes start to flow.
    fn begin_flowing(&mut self, id: u64) {
        let now = self.now;
        let f = self.flow_mut(id);
        f.flowing = true;
        f.updated = now;
        let (client, server) = (f.client, f.server);
        let n = &mut self.nodes[server as usize];
        n.up.push(id);
        n.result.most_served = n.result.most_served.max(n.up.len());
        self.nodes[client as usize].down.push(id);
        self.links[server as usize].sending += 1;
        self.links[client as usize].receiving += 1;
        self.reshare(&[server, client]);
    }

    /// Request `id` waited in vain: `Busy`. The client asks again later, or gives up.
    fn busy(&mut self, id: u64, attempt: u32) {
        let Some(f) = self.flows.get(id) else {
            return;
        };
        if f.attempt != attempt || f.lane.is_some() {
            return;
        }
        let Some(a) = self.s.admission.clone() else {
            return;
        };
        let (client, server, request) = (f.client, f.server, f.request);
        self.nodes[server as usize].stale_waiting += 1;
        let asked_for = self.now.saturating_sub(f.asked_at);
        if asked_for + f.busy_wait <= a.busy_patience {
            let rtt = self.rtt(client, server);
            let f = self.flow_mut(id);
            let again = f.busy_wait + rtt;
            f.busy_wait *= 2;
            f.attempt += 1;
            self.at(self.now + again, Event::FlowStart(id));
            return;
        }
        self.remove_flow(id);
        self.request_ended(
            client,
            request,
            Outcome::Failed {
                error: Failure::new(format!("peer {server}: busy, try again later")),
                misbehaved: false,
                refused: true,
                cut_by_punch: false,
            },
        );
    }

    /// Takes flow `id` off its links (settled first) and frees it.
    fn remove_flow(&mut self, id: u64) -> Flow {
        self.settle(id);
        let f = self.flows.remove(id).expect("a live flow");
        let server = &mut self.nodes[f.server as usize];
        // A flow joins its nodes' lists only when it starts flowing (`begin_flowing`).
        if f.flowing {
            server.up.retain(|x| *x != id);
            self.nodes[f.client as usize].down.retain(|x| *x != id);
            self.links[f.server as usize].sending -= 1;
            self.links[f.client as usize].receiving -= 1;
        } else {
            server.stale_waiting += 1;
        }
        self.nodes[f.client as usize].requests.remove(&f.request);
        if f.flowing {
            self.reshare(&[f.server, f.client]);
        }
        self.release(&f);
        f
    }

    fn flow_end(&mut self, id: u64, gen: u64) {
        if self.flows.get(id).is_none_or(|f| f.gen != gen) {
            return;
        }
        // Its rate fell since this end was set: bytes are left (beyond rounding).
        self.settle(id);
        if self.bytes_left(id) > (self.flow(id).rate * 1e-6).max(1.0) {
            return self.schedule_end(id, true);
        }
        self.flow_mut(id).carried = f64::MAX / 4.0; // all of it, whatever the rounding
        let f = self.remove_flow(id);
        let outcome = if self.links[f.server as usize].lies {
            Outcome::Failed {
                error: Failure {
                    why: format!("peer {} sent bad data", f.server),
                    misbehaved: true,
                },
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
        let mut served = self.nodes[node as usize].up.clone();
        let flows = &self.flows;
        served.extend(
            self.nodes[node as usize]
                .waiting
                .iter()
                .filter(|e| still_waiting(flows, **e))
                .map(|e| e.0),
        );
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

    fn request_ended(&mut self, node: u32, request: RequestId, outcome: Outcome<Failure>) {
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

    fn ask_holders(&mut self, node: u32) {
        let alive = self.alive(node, self.now);
        let Some(get) = self.nodes[node as usize].get.as_ref().filter(|_| alive) else {
            // Asked only while a get runs; the next get asks again.
            self.nodes[node as usize].asking_holders = false;
            return;
        };
        // One of the live providers it knows, at random (all of them are alive unless
        // the scenario has deaths: then the live ones are listed).
        let pick = self.rng.random_range(0..get.known.len().max(1));
        let asked = match get.known.get(pick) {
            Some(&p) if self.alive(p, self.now) => Some(p),
            Some(_) => {
                let alive: Vec<u32> = get
                    .known
                    .iter()
                    .copied()
                    .filter(|p| self.alive(*p, self.now))
                    .collect();
                alive.get(pick % alive.len().max(1)).copied()
            }
            None => None,
        };
        // As `refresh_holders`: the DHT again every PROVIDERS_REFRESH, for providers that
        // completed since; (provider, announced): those it names are offered even if known.
        let mut found = Vec::new();
        if self.now >= get.looked_up_at + PROVIDERS_REFRESH {
            found = self.lookup(node).into_iter().map(|p| (p, true)).collect();
            if let Some(get) = self.nodes[node as usize].get.as_mut() {
                get.looked_up_at = self.now;
            }
        }
        if let Some(peer) = asked {
            // It answers with the holders it knows, and records the asker as one.
            let listed = self.nodes[peer as usize].holders.len();
            let heard_before = self.nodes[node as usize]
                .get
                .as_mut()
                .and_then(|get| get.heard_from.insert(peer, listed));
            let p = &mut self.nodes[peer as usize];
            let from = listed
                .saturating_sub(self.s.holders_answer)
                .max(heard_before.unwrap_or(0));
            found.extend(p.holders[from..].iter().map(|h| (*h, false)));
            // A peer this get asked before recorded it then (its set never forgets): the
            // look-up is skipped, a random read at 100,000 mirrors.
            if heard_before.is_none() && p.holder_set.insert(node) {
                p.holders.push(node);
            }
        }
        let n = &mut self.nodes[node as usize];
        let mut joined = false;
        if let Some(get) = n.get.as_mut() {
            for (holder, announced) in found {
                if holder == node || n.banned.contains(&holder) {
                    continue;
                }
                let new = get.learn(holder);
                if new || announced {
                    if let Some(round) = &mut n.round {
                        joined |= round.offer(holder, announced);
                    }
                }
            }
        }
        if joined {
            self.drive(node);
        }
        let n = &mut self.nodes[node as usize];
        n.holder_asks.asked();
        let next = n.holder_asks.wait();
        self.at(self.now + next, Event::AskHolders(node));
    }
}

impl Get {
    /// Records provider `p`, named by a lookup; `false` if it was known already.
    fn know(&mut self, p: u32) -> bool {
        let new = self.known_set.insert(p);
        if new {
            self.known.push(p);
        }
        new
    }

    /// Records holder `p`, named by the holder exchange, as the node does (up to
    /// `MAX_KNOWN_HOLDERS`); `false` if it was known already or is past the bound.
    fn learn(&mut self, p: u32) -> bool {
        let new = self.known_set.learn(p);
        if new {
            self.known.push(p);
        }
        new
    }
}

/// Whether a send-buffer queue entry (flow, attempt) still waits: its flow is live, not
/// admitted, and on that attempt.
fn still_waiting(flows: &Flows, (id, attempt): (u64, u32)) -> bool {
    flows
        .get(id)
        .is_some_and(|f| f.attempt == attempt && f.lane.is_none() && !f.flowing)
}

fn gone(peer: u32) -> Outcome<Failure> {
    Outcome::Failed {
        error: Failure::new(format!("peer {peer} is gone")),
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

    /// The lookahead hands out events in the order of their keys, as the radix heap alone
    /// does, also those pushed due before events already taken ahead (as the model pushes
    /// them: never before the last one handed out).
    #[test]
    fn the_lookahead_keeps_the_order_of_the_keys() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut queue = Lookahead::default();
        let mut reference = std::collections::BTreeMap::new();
        let (mut now, mut seq, mut early) = (0u64, 0u64, 0);
        for _ in 0..20_000 {
            if rng.random_bool(0.55) {
                seq += 1;
                // Mostly soon (before the events taken ahead), sometimes now, some far off.
                let when = now
                    + match rng.random_range(0..10) {
                        0 => 0,
                        1..=6 => rng.random_range(0..50),
                        _ => rng.random_range(0..100_000),
                    };
                early += usize::from(queue.ahead.back().is_some_and(|(k, _)| (when, seq) < *k));
                queue.push((when, seq), Event::Start(seq as u32));
                reference.insert((when, seq), seq as u32);
            } else {
                let got = queue.pop();
                let want = reference.pop_first();
                match (got, want) {
                    (Some((key, Event::Start(id))), Some((want_key, want_id))) => {
                        assert_eq!((key, id), (want_key, want_id));
                        now = key.0;
                    }
                    (None, None) => {}
                    (got, want) => panic!("popped {:?}, expected {want:?}", got.map(|g| g.0)),
                }
            }
        }
        assert!(
            early > 1000,
            "pushes due before events taken ahead: {early}"
        );
        while let Some((key, _)) = queue.pop() {
            assert_eq!(Some(key), reference.pop_first().map(|(k, _)| k));
        }
        assert!(reference.is_empty());
    }

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
            admission: None,
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
    fn a_run_reports_its_progress_every_so_many_events_without_changing_it() {
        let mut nodes = vec![node(10.0, true)];
        nodes.extend((0..4).map(|_| node(10.0, false)));
        let s = scenario(nodes, 9);
        let mut reports = Vec::new();
        let r = run_reporting(&s, 50, |p| reports.push(p));
        assert_eq!(r, run(&s), "reporting changes nothing");
        assert_eq!(reports.len() as u64, r.events / 50, "{reports:?}");
        for (i, p) in reports.iter().enumerate() {
            assert_eq!(p.events, 50 * (i as u64 + 1));
            assert_eq!(p.events_by_kind.iter().sum::<u64>(), p.events, "{p:?}");
        }
        let last = reports.last().expect("reports").events_by_kind;
        assert!(
            last.iter().zip(r.events_by_kind).all(|(l, r)| *l <= r),
            "counts so far never pass the run's: {last:?}, {:?}",
            r.events_by_kind
        );
        assert!(reports
            .windows(2)
            .all(|w| w[0].now <= w[1].now && w[0].holders <= w[1].holders));
        assert!(
            reports[0].holders >= 1,
            "the seeder holds it from the start"
        );
        assert!(reports.last().expect("reports").holders <= 5);
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

    #[test]
    fn a_full_send_buffer_holds_requests_back_and_busy_ones_are_asked_again() {
        let mut nodes = vec![node(10.0, true)];
        nodes.extend((0..6).map(|_| node(10.0, false)));
        let mut s = scenario(nodes, 11);
        s.admission = Some(Admission {
            slots: 2,
            shared_slots: 1,
            per_peer: 1,
            send_wait: Duration::from_millis(300),
            busy_first_wait: Duration::from_millis(100),
            busy_patience: Duration::from_secs(2),
        });
        let r = run(&s);
        assert!(r.nodes.iter().all(|n| n.done_at.is_some()), "{r:?}");
        assert!(r.nodes.iter().all(|n| n.most_served <= 2), "{r:?}");
        assert_eq!(r.nodes[0].most_served, 2, "the seeder's buffer was full");
        assert!(r.events_by_kind[9] > 0, "some requests were answered busy");
        // Without the buffer the seeder serves every request at once.
        s.admission = None;
        let free = run(&s);
        assert!(free.nodes[0].most_served > 2, "{free:?}");
    }

    #[test]
    fn the_node_buffer_holds_fifteen_batches() {
        // 64 MiB of send buffer, a 4 MiB batch taking ~4.09 MiB while it is sent.
        let a = Admission::node(16 * 256 * 1024);
        assert_eq!((a.slots, a.shared_slots, a.per_peer), (15, 11, 3));
    }
}
