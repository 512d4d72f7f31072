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
//! Time is virtual: the same scenario, seed and partitions give the same run.
//!
//! Nodes act on each other only by messages, each taking at least the one-way delay
//! between them (the sum of their latencies), so that the nodes can be split among
//! partitions run by threads of their own ([`lockstep`](super::lockstep); the lookahead is
//! the shortest such delay). A question (`Have`, holders) is answered from the asked
//! node's state when it arrives, one way after it was asked, and the answer takes one
//! way back. A request reaches its server one way after it is asked; the server serves
//! it or lets it wait for a place in its send buffer, and its bytes reach the client one
//! way later. A flow belongs to its client, which stores its spans: it goes at the smaller
//! of the client's share of its downlink, known at once, and the server's share of its
//! uplink as the server last said, a lookahead after its number of responses changed
//! (much as a sender's rate reaches its receivers a path delay later). That number counts
//! the responses whose first bytes are on their way and those whose end has not reached
//! the server yet, so the shares are equal only up to those delays. The end of a flow
//! reaches its server one way later, which frees its place. An announcement to the DHT
//! reaches every node a lookahead later, and so does a death for the requests the dead
//! node held; a dial, a request or a holder ask to a dead node fails as it would at the
//! node (the time of death is the scenario's, known to every partition).

use std::{
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

use super::{
    calendar::Calendar,
    lockstep::{Lockstep, Mail},
};
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
    /// Partitions of the nodes, each run by a thread of its own (at most
    /// [`MAX_PARTITIONS`]; one if the [`lookahead`] is zero). The same scenario, seed and
    /// partitions give the same run; other partitions draw other random choices and order
    /// events due at the same time otherwise, so their figures differ as another seed's do.
    pub partitions: usize,
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
pub const EVENT_KINDS: [&str; 21] = [
    "start",
    "poll",
    "have ask",
    "have answer",
    "request",
    "begin",
    "flow end",
    "done",
    "dies",
    "unreachable",
    "ask holders",
    "holders ask",
    "holders answer",
    "round",
    "busy",
    "refused",
    "retry",
    "gone",
    "share",
    "server died",
    "announce",
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

/// What happens at one node (a timer, or a message from another node, which arrives no
/// sooner than the lookahead after it was sent: see [`lockstep`](super::lockstep)).
/// A flow belongs to its client's partition; its server keeps a [`Response`].
#[derive(Debug)]
enum Event {
    Start(u32),
    /// Poll node's round; stale unless `gen` is the node's latest.
    Poll(u32, u64),
    /// `node`'s question what `peer` holds reaches the peer, which answers from its state
    /// now.
    HaveAsk {
        node: u32,
        peer: u32,
    },
    /// The answer reaches `node` (`None`: the peer is gone).
    HaveAnswer {
        node: u32,
        peer: u32,
        holding: Option<Holding>,
    },
    /// Try `attempt` of the request flow `flow` carries reaches its server.
    Request {
        flow: u64,
        client: u32,
        server: u32,
        attempt: u32,
    },
    /// The server's first bytes of flow `flow` reach its client: the flow's bytes flow.
    Begin(u64),
    /// A flow has carried all its bytes, unless `gen` is stale.
    FlowEnd(u64, u64),
    /// The client ended or cancelled flow `flow`: its server frees the place it held.
    Done {
        flow: u64,
        server: u32,
    },
    /// A node dies.
    Dies(u32),
    /// A request to a dead node fails.
    Unreachable {
        node: u32,
        request: RequestId,
    },
    AskHolders(u32),
    /// `node`'s question which holders `peer` knows reaches the peer; `after`: how long
    /// the peer's list was when it last answered this get ([`NOT_ANSWERED`]: it has not);
    /// `first`: `node` never asked `peer` before, so it is not among its holders yet.
    HoldersAsk {
        node: u32,
        peer: u32,
        after: u32,
        first: bool,
    },
    /// The answer reaches `node`: the names listed after `after`, of `listed`.
    HoldersAnswer {
        node: u32,
        peer: u32,
        listed: u32,
        names: Box<[u32]>,
    },
    /// The node's swarm runs its next round (or, when the swarm is over, the get its next
    /// step).
    Round(u32),
    /// At the server: a request still waiting for its place is answered `Busy`, unless
    /// `attempt` is stale.
    Busy {
        flow: u64,
        server: u32,
        attempt: u32,
    },
    /// The `Busy` reaches the client, which asks again later or gives up.
    Refused {
        flow: u64,
        attempt: u32,
    },
    /// The client asks again (try `attempt`), unless the flow was cancelled meanwhile.
    /// A timer at the client, so that its messages to the server leave, and arrive, in
    /// order (a new ask sent ahead with the wait in its delay arrived after a cancel sent
    /// during the wait, and took a place for good).
    Retry {
        flow: u64,
        attempt: u32,
    },
    /// The request reached a dead server.
    Gone(u64),
    /// `server`'s uplink is shared by a new number of flows: this partition's flows from
    /// it go at `share` (bytes per second) at most.
    Share {
        server: u32,
        share: f64,
    },
    /// `server` died: this partition's requests to it fail.
    ServerDied(u32),
    /// `node` announced that it holds the whole blob: lookups find it from now on.
    Announce(u32),
}

impl Event {
    /// Its index in [`EVENT_KINDS`].
    fn kind(&self) -> usize {
        match self {
            Event::Start(_) => 0,
            Event::Poll(..) => 1,
            Event::HaveAsk { .. } => 2,
            Event::HaveAnswer { .. } => 3,
            Event::Request { .. } => 4,
            Event::Begin(_) => 5,
            Event::FlowEnd(..) => 6,
            Event::Done { .. } => 7,
            Event::Dies(_) => 8,
            Event::Unreachable { .. } => 9,
            Event::AskHolders(..) => 10,
            Event::HoldersAsk { .. } => 11,
            Event::HoldersAnswer { .. } => 12,
            Event::Round(_) => 13,
            Event::Busy { .. } => 14,
            Event::Refused { .. } => 15,
            Event::Retry { .. } => 16,
            Event::Gone(_) => 17,
            Event::Share { .. } => 18,
            Event::ServerDied(_) => 19,
            Event::Announce(_) => 20,
        }
    }
}

/// The live flows of a partition, in slots reused as flows end: looked up on nearly every
/// event, without hashing (2 % fewer instructions at 100 mirrors). A flow's id is the count
/// of flows made before it in its partition, times the partitions, plus its partition,
/// then its slot in the low [`SLOT_BITS`] bits: ids are never reused anywhere, so a stale
/// event cannot reach a newer flow in the same slot, and a server can key its responses by
/// them.
#[derive(Default)]
struct Flows {
    slots: Vec<Option<(u64, Flow)>>,
    free: Vec<usize>,
    made: u64,
    part: u64,
    parts: u64,
}

/// Bits of a flow id that name its slot: room for 16 M flows at once.
const SLOT_BITS: u32 = 24;

impl Flows {
    fn new(part: usize, parts: usize) -> Self {
        Self {
            part: part as u64,
            parts: parts as u64,
            ..Self::default()
        }
    }

    fn insert(&mut self, flow: Flow) -> u64 {
        let slot = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.slots.len() - 1
        });
        assert!(
            slot < 1 << SLOT_BITS,
            "more flows at once than ids can name"
        );
        let id = (self.made * self.parts + self.part) << SLOT_BITS | slot as u64;
        self.made += 1;
        self.slots[slot] = Some((id, flow));
        id
    }

    fn slot(id: u64) -> usize {
        (id & ((1 << SLOT_BITS) - 1)) as usize
    }

    fn get(&self, id: u64) -> Option<&Flow> {
        match self.slots.get(Self::slot(id)) {
            Some(Some((live, flow))) if *live == id => Some(flow),
            _ => None,
        }
    }

    fn get_mut(&mut self, id: u64) -> Option<&mut Flow> {
        match self.slots.get_mut(Self::slot(id)) {
            Some(Some((live, flow))) if *live == id => Some(flow),
            _ => None,
        }
    }

    fn remove(&mut self, id: u64) -> Option<Flow> {
        self.get(id)?;
        let slot = Self::slot(id);
        self.free.push(slot);
        self.slots[slot].take().map(|(_, flow)| flow)
    }

    /// The live flows' ids.
    fn ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.slots.iter().flatten().map(|(id, _)| *id)
    }
}

/// A request as its client sees it: asked, then flowing once the server's first bytes
/// arrive.
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
    /// When the client first asked, how long it waits after the next `Busy`, and which
    /// try this is.
    asked_at: Duration,
    busy_wait: Duration,
    attempt: u32,
}

/// A request as its server sees it: waiting for a place in the send buffer (`lane` none)
/// or served.
#[derive(Debug, Clone, Copy)]
struct Response {
    client: u32,
    attempt: u32,
    lane: Option<Lane>,
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
    known: Vec<Known>,
    known_set: KnownHolders<u32, rustc_hash::FxBuildHasher>,
    /// The swarm's providers still live after its last round, the rounds it ran, and the
    /// spans missing before the last one (a round that stores nothing ends the swarm).
    live: Vec<u32>,
    rounds: usize,
    missing_before: Option<u64>,
    /// When it last asked the DHT for providers.
    looked_up_at: Duration,
    /// Where in `known` its last holder ask went: the answer comes back before the next
    /// ask (the asks are half a second apart at least, a round trip here is 200 ms at
    /// most), so its provider is found without a search.
    last_asked: usize,
}

/// A provider a get knows, and how long its list of holders was when it last answered
/// this get (or [`Known::NEVER_ASKED`], [`Known::ASKED`]). The list only grows at its end,
/// so the names before that were offered already and are skipped (looking each up again
/// was a sixth of the model's time). Kept beside the provider, not in a map by provider:
/// the map's look-ups, one per ask and one per answer, each a random read, were 3.6 % of
/// the profile of a 100,000-mirror run's first minutes.
#[derive(Clone, Copy)]
struct Known {
    id: u32,
    listed: u32,
}

/// A node's links (its spec's, copied) and the state of it that its partition's events
/// read often, apart from the larger [`Node`].
struct Links {
    up: f64,
    down: f64,
    latency: Duration,
    lies: bool,
    /// It holds the whole blob (kept by its own partition).
    holds_all: bool,
    /// Flows coming in (`Node::down`, kept beside the list and checked against it, and
    /// `holds_all` against `Node::held`, in tests at every share change).
    receiving: u32,
}

const _: () = assert!(std::mem::size_of::<Links>() == 40);

/// The most partitions (threads) a run may have.
pub const MAX_PARTITIONS: usize = 4;

/// A node, in each partition's list: the partition that owns the node keeps all of it;
/// every other partition keeps only `up` (its own flows from the node) and what its flows
/// counted as `result.sent`.
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
    /// This partition's flows flowing from this node (what a change of its uplink's share
    /// reaches here), and into it.
    up: Vec<u64>,
    down: Vec<u64>,
    /// As a server: the requests that reached it and are not done, by flow.
    responses: FxHashMap<u64, Response>,
    /// As a server: responses it sends, by the partition of their clients (a share change
    /// goes to the partitions with some); their sum is [`Node::sending`].
    serving_in: [u32; MAX_PARTITIONS],
    /// Requests waiting for a place in this node's send buffer, in order of arrival; the
    /// places taken (all, shared) and by whom.
    /// Entries are (flow, attempt): one no longer waiting in `responses` on that attempt is
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
    /// `holders` as a set, built the first time an ask may come from one listed already
    /// (see [`record_holder`]).
    holder_set: Option<FxHashSet<u32>>,
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

/// How much of a node [`Sim::warm`] asks the caches for: in the layout the compiler chose,
/// its `get` and the first half of its `round`, what most events at a client read first.
/// Asking for all of its 1.5 KB filled the core's queue of misses: at 100,000 mirrors,
/// 768 bytes ran 2 % faster than all of it, and 384 bytes 2 % slower (stop 55).
const WARM_NODE_BYTES: usize = 768;

/// How much of the holder names an answer copies [`Sim::warm`] asks for.
const WARM_NAMES_BYTES: usize = 320;

/// How many of the flows a share change or a `Have` answer reaches [`Sim::warm`] asks for.
const WARM_FLOWS: usize = 8;

/// The pending events, earliest first: a calendar queue, and the next [`LOOKAHEAD`] events
/// taken out of it ahead of time, so that the caches can be asked for what they will read
/// while earlier ones are handled (the model's time at 100,000 mirrors is mostly waiting
/// for memory). The calendar takes no event due before the last one taken: an event due
/// before the last one taken ahead goes into the lookahead, in order.
#[derive(Default)]
struct Lookahead {
    calendar: Calendar<Event>,
    ahead: std::collections::VecDeque<((u64, u64), Event)>,
}

impl Node {
    /// As a server: the responses it sends, which share its uplink.
    fn sending(&self) -> u32 {
        self.serving_in.iter().sum()
    }
}

impl Lookahead {
    fn push(&mut self, key: (u64, u64), event: Event) {
        match self.ahead.back() {
            Some((last, _)) if key < *last => {
                let at = self.ahead.partition_point(|(k, _)| *k < key);
                self.ahead.insert(at, (key, event));
            }
            _ => self.calendar.push(key, event),
        }
    }

    fn fill(&mut self) {
        while self.ahead.len() <= LOOKAHEAD {
            let Some((key, event)) = self.calendar.pop() else {
                break;
            };
            self.ahead.push_back((key, event));
        }
    }

    fn pop(&mut self) -> Option<((u64, u64), Event)> {
        self.fill();
        self.ahead.pop_front()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.ahead.is_empty() && self.calendar.is_empty()
    }

    /// When the next event is due (nanoseconds), if there is one.
    fn next_due(&mut self) -> Option<u64> {
        self.fill();
        self.ahead.front().map(|((due, _), _)| *due)
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

/// The lookahead of `scenario`: the shortest one-way delay between two of its nodes (the
/// sum of the two smallest latencies), which every message between nodes takes at least.
pub fn lookahead(scenario: &Scenario) -> Duration {
    let mut latencies: Vec<Duration> = scenario.nodes.iter().map(|n| n.latency).collect();
    latencies.sort_unstable();
    latencies.iter().take(2).sum()
}

/// Runs `scenario`, handing `report` the run's progress every `every` events (never if 0).
/// With one partition, exactly every `every` events; with more, at the end of the first
/// window past each multiple of `every`.
pub fn run_reporting(
    scenario: &Scenario,
    every: u64,
    mut report: impl FnMut(Progress) + Send,
) -> SimResult {
    let parts = scenario.partitions.clamp(1, MAX_PARTITIONS);
    if parts == 1 || lookahead(scenario).is_zero() {
        let mut sim = Sim::new(scenario, 0, 1);
        sim.start();
        sim.run_until(u64::MAX, every, &mut report);
        return merge(vec![sim]);
    }
    let step = Lockstep::new(parts);
    let reporting = Reporting {
        every,
        counts: [0, 1].map(|_| {
            (0..parts)
                .map(|_| std::sync::Mutex::new([0; EVENT_KINDS.len()]))
                .collect()
        }),
        report: std::sync::Mutex::new(report),
    };
    let sims = std::thread::scope(|threads| {
        let handles: Vec<_> = (0..parts)
            .map(|part| {
                let (step, reporting) = (&step, &reporting);
                threads.spawn(move || {
                    let _stop = step.stop_all_on_panic();
                    let mut sim = Sim::new(scenario, part, parts);
                    sim.start();
                    sim.run_windows(step, reporting);
                    sim
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a partition's thread panicked"))
            .collect::<Vec<_>>()
    });
    merge(sims)
}

/// The partitions' results as one: each node's from its own partition, but for what it
/// sent, which every partition counted for its own flows.
fn merge(sims: Vec<Sim<'_>>) -> SimResult {
    #[cfg(test)]
    for sim in &sims {
        sim.assert_drained();
    }
    let parts = sims.len();
    let count = sims[0].nodes.len();
    let mut events_by_kind = [0; EVENT_KINDS.len()];
    for sim in &sims {
        for (total, n) in events_by_kind.iter_mut().zip(sim.events_by_kind) {
            *total += n;
        }
    }
    let nodes = (0..count)
        .map(|n| {
            let mut result = sims[n % parts].nodes[n].result.clone();
            result.sent = sims.iter().map(|s| s.nodes[n].result.sent).sum();
            result
        })
        .collect();
    SimResult {
        nodes,
        events: sims.iter().map(|s| s.events).sum(),
        events_by_kind,
    }
}

/// What a run on several threads shares besides the [`Lockstep`]: each partition's event
/// counts by kind (for progress reports; in two sets, used by turns as the lockstep's
/// slots are), and the report.
struct Reporting<F> {
    every: u64,
    counts: [Vec<std::sync::Mutex<[u64; EVENT_KINDS.len()]>>; 2],
    report: std::sync::Mutex<F>,
}

/// One partition of a run: the nodes it owns (every `parts`-th, from `part`), their events
/// and flows. With one partition, the whole run.
struct Sim<'a> {
    s: &'a Scenario,
    part: usize,
    parts: usize,
    /// The shortest delay of a message between two nodes ([`lookahead`]): what a change at
    /// a server takes to reach its flows' clients, and an announcement the DHT.
    lookahead: Duration,
    /// Messages for other partitions, sent in this window.
    outbox: Vec<Mail<Event>>,
    nodes: Vec<Node>,
    /// Pending events by (time in nanoseconds, sequence), earliest first. A radix heap
    /// (a binary heap's pops were a tenth of the model's time): it takes no event due
    /// before the last one taken, so [`Sim::at`] moves such an event (a poll time already
    /// past) to now, where it comes after those already due now. The events are the
    /// heap's values (when they were kept in a slab beside it, fetching each popped one
    /// from a random slot was 6 % of the 100,000-mirror run's time). The next events are
    /// taken out ahead, so that [`Sim::warm`] can ask for their memory early.
    queue: Lookahead,
    /// Each node's links and flows coming in, apart from [`Node`]: what a flow's rate
    /// needs of its client, in 40 bytes instead of a random read of its 1.5 KB `Node` and
    /// its 72-byte spec (those reads were most of the share changes' time at 100,000
    /// mirrors, whose nodes do not fit in the caches).
    links: Vec<Links>,
    /// Each server's share of its uplink per flow, as its last share change here said.
    shares: Vec<f64>,
    /// For each server this partition owns, the share it last sent each partition: what
    /// that partition's `shares` holds once the message is in. A change of responses
    /// that leaves the share as it was (a place freed and taken again at once, as at a
    /// busy seeder) sends nothing: its message would change no rate.
    shares_sent: Vec<[f64; MAX_PARTITIONS]>,
    /// Whether any node dies: if none, [`Sim::alive`] needs no look at the specs.
    mortal: bool,
    flows: Flows,
    /// [`Sim::rerate`]'s list of flows, kept to be reused (it runs on most events).
    reshared: Vec<u64>,
    seq: u64,
    now: Duration,
    t0: Instant,
    rng: StdRng,
    events: u64,
    events_by_kind: [u64; EVENT_KINDS.len()],
    /// Nodes that hold the whole blob and announced it, in the order the announcements
    /// reached this partition: what a DHT lookup finds (a node that died stays in it, as
    /// its record outlives it).
    announced: Vec<u32>,
}

impl<'a> Sim<'a> {
    fn new(s: &'a Scenario, part: usize, parts: usize) -> Self {
        let nodes = s
            .nodes
            .iter()
            .enumerate()
            .map(|(i, spec)| {
                if i % parts != part {
                    return Node::default();
                }
                Node {
                    stored: vec![spec.seeds; s.spans as usize],
                    held: if spec.seeds { s.spans } else { 0 },
                    result: NodeResult {
                        done_at: spec.seeds.then_some(Duration::ZERO),
                        ..NodeResult::default()
                    },
                    ..Node::default()
                }
            })
            .collect();
        // Partition 0 draws as a run on one thread does; the others from seeds of their own.
        let seed = s
            .seed
            .wrapping_add((part as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        Self {
            s,
            part,
            parts,
            lookahead: lookahead(s),
            outbox: (0..parts).map(|_| Vec::new()).collect(),
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
                    receiving: 0,
                })
                .collect(),
            shares: s.nodes.iter().map(|spec| spec.up).collect(),
            shares_sent: s
                .nodes
                .iter()
                .map(|spec| [spec.up; MAX_PARTITIONS])
                .collect(),
            mortal: s.nodes.iter().any(|spec| spec.dies_at.is_some()),
            flows: Flows::new(part, parts),
            reshared: Vec::new(),
            seq: 0,
            now: Duration::ZERO,
            t0: Instant::now(),
            rng: StdRng::seed_from_u64(seed),
            events: 0,
            events_by_kind: [0; EVENT_KINDS.len()],
            announced: (0..s.nodes.len() as u32)
                .filter(|&i| s.nodes[i as usize].seeds)
                .collect(),
        }
    }

    /// In tests, at the end of a run that was not cut short: every request has ended at
    /// its server too, so no place in a send buffer is still taken (one left taken would
    /// shrink the server's buffer and uplink share for the rest of the run).
    #[cfg(test)]
    fn assert_drained(&self) {
        if !self.queue.is_empty() {
            return; // stopped at the scenario's limit
        }
        assert!(self.outbox.iter().all(Vec::is_empty), "mail left unsent");
        assert_eq!(self.flows.ids().count(), 0, "flows left");
        for (i, n) in self.nodes.iter().enumerate() {
            if !self.owns(i as u32) {
                continue;
            }
            assert!(n.responses.is_empty(), "node {i}: responses left");
            assert_eq!(n.taken, (0, 0), "node {i}: send buffer places left taken");
            assert!(n.taken_by.is_empty(), "node {i}: places left taken");
            assert_eq!(
                n.serving_in, [0; MAX_PARTITIONS],
                "node {i}: flows left counted"
            );
        }
    }

    fn owns(&self, node: u32) -> bool {
        node as usize % self.parts == self.part
    }

    fn at(&mut self, when: Duration, event: Event) {
        self.at_nanos(when.max(self.now).as_nanos() as u64, event);
    }

    fn at_nanos(&mut self, when: u64, event: Event) {
        self.seq += 1;
        self.queue.push((when, self.seq), event);
    }

    /// Sends `event` to node `to`, arriving `delay` from now (at least the lookahead).
    fn send(&mut self, to: u32, delay: Duration, event: Event) {
        // What makes the windows safe: checked in every build (one comparison per message).
        assert!(delay >= self.lookahead, "{delay:?} is within the lookahead");
        self.deliver(to as usize % self.parts, self.now + delay, event);
    }

    fn deliver(&mut self, part: usize, when: Duration, event: Event) {
        if part == self.part {
            self.at(when, event);
        } else {
            self.outbox[part].push((when.as_nanos() as u64, event));
        }
    }

    /// Sends `event` to every partition, arriving after the lookahead.
    fn broadcast(&mut self, event: impl Fn() -> Event) {
        let when = self.now + self.lookahead;
        for part in 0..self.parts {
            self.deliver(part, when, event());
        }
    }

    /// Asks the caches for what the events due soon will read (see [`Lookahead`]): the
    /// node an event happens at (and an asker's links), [`LOOKAHEAD`] events ahead; half
    /// as far ahead, once the lines asked for first have come, what they point to: a
    /// flow's two ends, the holder names an answer copies, the flows a share change or a
    /// `Have` answer settles, the provider a holder answer came from.
    fn warm(&self) {
        if let Some(event) = self.queue.ahead(LOOKAHEAD - 1) {
            match *event {
                Event::Start(n)
                | Event::Poll(n, _)
                | Event::AskHolders(n)
                | Event::Round(n)
                | Event::Dies(n)
                | Event::Unreachable { node: n, .. }
                | Event::HaveAnswer { node: n, .. }
                | Event::HoldersAnswer { node: n, .. }
                | Event::Request { server: n, .. }
                | Event::Done { server: n, .. }
                | Event::Busy { server: n, .. } => self.warm_node(n),
                // The asker's links too: the answer's delay reads its latency.
                Event::HaveAsk { node, peer } => {
                    self.warm_holdings(peer);
                    prefetch(&self.links[node as usize]);
                }
                Event::HoldersAsk { node, peer, .. } => {
                    prefetch(&self.nodes[peer as usize].holders);
                    prefetch(&self.links[node as usize]);
                    prefetch(&self.links[peer as usize]);
                }
                Event::Share { server, .. } => {
                    prefetch(&self.nodes[server as usize].up);
                    prefetch(&self.shares[server as usize]);
                }
                Event::Begin(id)
                | Event::FlowEnd(id, _)
                | Event::Refused { flow: id, .. }
                | Event::Retry { flow: id, .. }
                | Event::Gone(id) => prefetch(&self.flows.slots[Flows::slot(id)]),
                Event::ServerDied(_) | Event::Announce(_) => {}
            }
        }
        match self.queue.ahead(LOOKAHEAD / 2) {
            Some(
                Event::Begin(id)
                | Event::FlowEnd(id, _)
                | Event::Refused { flow: id, .. }
                | Event::Gone(id),
            ) => {
                if let Some(f) = self.flows.get(*id) {
                    self.warm_node(f.client);
                    prefetch(&self.nodes[f.server as usize].up);
                    prefetch(&self.shares[f.server as usize]);
                }
            }
            // The names the answer copies, and where the asker may be added.
            Some(Event::HoldersAsk { peer, after, .. }) => {
                let holders = &self.nodes[*peer as usize].holders;
                let from = answer_from(holders.len(), self.s.holders_answer, *after);
                let names = holders.as_ptr().wrapping_add(from).cast::<u8>();
                let bytes = ((holders.len().saturating_sub(from) + 1) * 4).min(WARM_NAMES_BYTES);
                // Each line from the first name's to the last byte's.
                let first_line = names as usize % 64;
                for line in (0..first_line + bytes).step_by(64) {
                    prefetch(names.wrapping_sub(first_line).wrapping_add(line));
                }
            }
            // The flows whose rates the share changes.
            Some(Event::Share { server, .. }) => self.warm_flows(&self.nodes[*server as usize].up),
            // The provider that answered, in the get's list.
            Some(Event::HoldersAnswer { node, .. }) => {
                if let Some(get) = &self.nodes[*node as usize].get {
                    prefetch(get.known.as_ptr().wrapping_add(get.last_asked));
                }
            }
            // The flows coming in that a partial peer settles before it answers.
            Some(Event::HaveAsk { peer, .. }) => self.warm_flows(&self.nodes[*peer as usize].down),
            _ => {}
        }
    }

    /// The first [`WARM_FLOWS`] of flows `ids`.
    fn warm_flows(&self, ids: &[u64]) {
        for &id in ids.iter().take(WARM_FLOWS) {
            prefetch(&self.flows.slots[Flows::slot(id)]);
        }
    }

    /// The first [`WARM_NODE_BYTES`] of node `n`, and its links.
    fn warm_node(&self, n: u32) {
        let start = &self.nodes[n as usize] as *const Node as *const u8;
        for line in (0..WARM_NODE_BYTES.min(std::mem::size_of::<Node>())).step_by(64) {
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

    /// The one-way delay between `a` and `b`.
    fn one_way(&self, a: u32, b: u32) -> Duration {
        self.links[a as usize].latency + self.links[b as usize].latency
    }

    fn rtt(&self, a: u32, b: u32) -> Duration {
        2 * self.one_way(a, b)
    }

    /// Puts this partition's nodes' first events in the queue.
    fn start(&mut self) {
        for (i, spec) in self.s.nodes.iter().enumerate() {
            if !self.owns(i as u32) {
                continue;
            }
            if !spec.seeds {
                self.at(spec.starts_at, Event::Start(i as u32));
            }
            if let Some(at) = spec.dies_at {
                self.at(at, Event::Dies(i as u32));
            }
        }
    }

    /// Handles the events due before `until` (nanoseconds) and no later than the
    /// scenario's limit, reporting every `every` events (never if 0).
    fn run_until(&mut self, until: u64, every: u64, report: &mut impl FnMut(Progress)) {
        let limit = self.s.limit.as_nanos() as u64;
        while self
            .queue
            .next_due()
            .is_some_and(|due| due < until && due <= limit)
        {
            let ((nanos, _), event) = self.queue.pop().expect("an event is due");
            self.warm();
            self.now = Duration::from_nanos(nanos);
            self.events += 1;
            self.events_by_kind[event.kind()] += 1;
            self.handle(event);
            if every > 0 && self.events.is_multiple_of(every) {
                report(self.progress(self.events, self.events_by_kind));
            }
        }
    }

    fn progress(&self, events: u64, events_by_kind: [u64; EVENT_KINDS.len()]) -> Progress {
        Progress {
            now: self.now,
            events,
            holders: self.announced.len(),
            events_by_kind,
        }
    }

    /// Runs this partition in lockstep with the others (see [`lockstep`](super::lockstep)):
    /// each window from the earliest event due anywhere to a lookahead later. Partition 0
    /// reports the run's progress at the end of the first window past each multiple of
    /// `every`.
    fn run_windows<F: FnMut(Progress) + Send>(
        &mut self,
        step: &Lockstep<Event>,
        reporting: &Reporting<F>,
    ) {
        let limit = self.s.limit.as_nanos() as u64;
        let window = self.lookahead.as_nanos() as u64;
        let mut reported = 0;
        let mut step = step.partition(self.part);
        let mut earliest = step.start(self.queue.next_due().unwrap_or(u64::MAX));
        while earliest <= limit {
            self.run_until(earliest.saturating_add(window), 0, &mut |_| {});
            let set = step.set();
            if reporting.every > 0 {
                *reporting.counts[set][self.part].lock().expect("counts") = self.events_by_kind;
            }
            let next = self.queue.next_due().unwrap_or(u64::MAX);
            let mut outbox = std::mem::take(&mut self.outbox);
            earliest = step.swap(next, &mut outbox, |when, event| self.at_nanos(when, event));
            self.outbox = outbox;
            if self.part == 0 && reporting.every > 0 {
                let mut by_kind = [0; EVENT_KINDS.len()];
                for counts in &reporting.counts[set] {
                    let counts = counts.lock().expect("counts");
                    for (total, n) in by_kind.iter_mut().zip(counts.iter()) {
                        *total += n;
                    }
                }
                let events: u64 = by_kind.iter().sum();
                if events / reporting.every > reported {
                    reported = events / reporting.every;
                    (reporting.report.lock().expect("report"))(self.progress(events, by_kind));
                }
            }
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
            Event::HaveAsk { node, peer } => self.have_asked(node, peer),
            Event::HaveAnswer {
                node,
                peer,
                holding,
            } => {
                let answer =
                    holding.ok_or_else(|| (Failure::new(format!("peer {peer} is gone")), false));
                let now = self.instant();
                if let Some(round) = &mut self.nodes[node as usize].round {
                    round.have_answered(peer, answer, now);
                }
                self.drive(node);
            }
            Event::Request {
                flow,
                client,
                server,
                attempt,
            } => self.request(flow, client, server, attempt),
            Event::Begin(flow) => self.begin(flow),
            Event::FlowEnd(flow, gen) => self.flow_end(flow, gen),
            Event::Done { flow, server } => self.done(flow, server),
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
            Event::HoldersAsk {
                node,
                peer,
                after,
                first,
            } => self.holders_asked(node, peer, after, first),
            Event::HoldersAnswer {
                node,
                peer,
                listed,
                names,
            } => self.holders_answered(node, peer, listed, &names),
            Event::Busy {
                flow,
                server,
                attempt,
            } => self.busy(flow, server, attempt),
            Event::Refused { flow, attempt } => self.refused(flow, attempt),
            Event::Retry { flow, attempt } => {
                if let Some(f) = self.flows.get(flow).filter(|f| f.attempt == attempt) {
                    let (client, server) = (f.client, f.server);
                    let delay = self.one_way(client, server);
                    self.send(
                        server,
                        delay,
                        Event::Request {
                            flow,
                            client,
                            server,
                            attempt,
                        },
                    );
                }
            }
            Event::Gone(flow) => {
                if self.flows.get(flow).is_some() {
                    let f = self.drop_flow(flow, false);
                    self.request_ended(f.client, f.request, gone(f.server));
                }
            }
            Event::Share { server, share } => {
                // What the server last sent here is what this partition holds: a share
                // it did not change is never sent (`Sim::shares_sent`).
                #[cfg(test)]
                assert_ne!(self.shares[server as usize], share, "server {server}");
                self.shares[server as usize] = share;
                self.reshare(server, false);
            }
            Event::ServerDied(server) => {
                let ids: Vec<u64> = self
                    .flows
                    .ids()
                    .filter(|id| self.flow(*id).server == server)
                    .collect();
                for id in ids {
                    let f = self.drop_flow(id, false);
                    self.request_ended(f.client, f.request, gone(server));
                }
            }
            Event::Announce(node) => self.announced.push(node),
        }
    }

    /// `node`'s `Have` reached `peer`: it answers from what it holds now.
    fn have_asked(&mut self, node: u32, peer: u32) {
        let holding = if !self.alive(peer, self.now) {
            None
        } else if self.links[peer as usize].holds_all {
            Some(Holding::Complete)
        } else {
            self.settle_inbound(peer);
            let p = &mut self.nodes[peer as usize];
            let held = p.held_runs.get_or_insert_with(|| Arc::new(runs(&p.stored)));
            Some(Holding::Spans(Arc::clone(held)))
        };
        let delay = self.one_way(node, peer);
        self.send(
            node,
            delay,
            Event::HaveAnswer {
                node,
                peer,
                holding,
            },
        );
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
            let known: Vec<u32> = get.known.iter().map(|k| k.id).collect();
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
                    let delay = self.one_way(node, peer);
                    self.send(peer, delay, Event::HaveAsk { node, peer });
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
                get.known.retain(|k| !misbehaved.contains(&k.id));
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
        if let Some(t) = round.poll_timeout(now) {
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
        let delay = self.one_way(node, peer);
        self.send(
            peer,
            delay,
            Event::Request {
                flow: id,
                client: node,
                server: peer,
                attempt: 0,
            },
        );
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
        let done = n.held == self.s.spans && n.result.done_at.is_none();
        if done {
            self.links[client as usize].holds_all = true;
            n.result.done_at = Some(now);
        }
        // Counted here for the server; the partitions' counts are summed at the end.
        self.nodes[server as usize].result.sent += bytes;
        if done {
            // It announces itself as a provider: lookups find it once that has spread.
            self.broadcast(|| Event::Announce(client));
        }
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

    /// The share of a link changed at `node`: settles the flows through it that this
    /// partition holds (`inbound`: coming into it; else going out of it), gives each its
    /// new rate, and reschedules its end.
    fn reshare(&mut self, node: u32, inbound: bool) {
        let mut ids = std::mem::take(&mut self.reshared);
        ids.clear();
        let n = &self.nodes[node as usize];
        ids.extend_from_slice(if inbound { &n.down } else { &n.up });
        #[cfg(test)]
        if inbound {
            let (node_, links) = (&self.nodes[node as usize], &self.links[node as usize]);
            assert_eq!(
                links.receiving as usize,
                node_.down.len(),
                "node {node}'s flows coming in"
            );
            assert_eq!(
                links.holds_all,
                node_.held == self.s.spans,
                "node {node} holds all"
            );
        }
        for &id in &ids {
            let f = self.flow(id);
            let (server, client) = (f.server as usize, f.client as usize);
            let up = self.shares[server];
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

    /// At the server: try `attempt` of flow `flow`'s request arrived. Served at once, or
    /// waiting for a place.
    fn request(&mut self, flow: u64, client: u32, server: u32, attempt: u32) {
        if !self.alive(client, self.now) {
            return; // its flows went with it
        }
        if !self.alive(server, self.now) {
            let delay = self.one_way(client, server);
            return self.send(client, delay, Event::Gone(flow));
        }
        if let Some(lane) = self.admit(server, client) {
            self.begin_serving(server, flow, client, attempt, lane);
            self.share_changed(server);
            return self.send_begin(server, flow, client);
        }
        let n = &mut self.nodes[server as usize];
        n.responses.insert(
            flow,
            Response {
                client,
                attempt,
                lane: None,
            },
        );
        if n.stale_waiting > 64 && n.stale_waiting * 2 > n.waiting.len() {
            let responses = &n.responses;
            n.waiting.retain(|e| still_waiting(responses, *e));
            n.stale_waiting = 0;
        }
        n.waiting.push_back((flow, attempt));
        let wait = self
            .s
            .admission
            .as_ref()
            .map_or(Duration::ZERO, |a| a.send_wait);
        self.at(
            self.now + wait,
            Event::Busy {
                flow,
                server,
                attempt,
            },
        );
    }

    /// Reserves a place in `server`'s send buffer for a response to `client`, if there is
    /// one (always, with no admission modelled: the places are counted all the same).
    fn admit(&mut self, server: u32, client: u32) -> Option<Lane> {
        let n = &mut self.nodes[server as usize];
        let held = n.taken_by.get(&client).copied().unwrap_or(0);
        let lane = if held == 0 { Lane::First } else { Lane::Shared };
        if let Some(a) = &self.s.admission {
            let room = n.taken.0 < a.slots
                && (lane == Lane::First || (held < a.per_peer && n.taken.1 < a.shared_slots));
            if !room {
                return None;
            }
        }
        n.taken.0 += 1;
        n.taken.1 += usize::from(lane == Lane::Shared);
        *n.taken_by.entry(client).or_default() += 1;
        Some(lane)
    }

    /// `server` starts sending try `attempt` of flow `flow` from its place in `lane` (the
    /// caller then tells the partitions the new share, and the client its first bytes:
    /// in that order, so that the share has arrived when the bytes do).
    fn begin_serving(&mut self, server: u32, flow: u64, client: u32, attempt: u32, lane: Lane) {
        let part = client as usize % self.parts;
        let n = &mut self.nodes[server as usize];
        n.responses.insert(
            flow,
            Response {
                client,
                attempt,
                lane: Some(lane),
            },
        );
        n.serving_in[part] += 1;
        n.result.most_served = n.result.most_served.max(n.sending() as usize);
    }

    /// `server`'s first bytes of flow `flow` go to `client`, arriving one way later.
    fn send_begin(&mut self, server: u32, flow: u64, client: u32) {
        let delay = self.one_way(client, server);
        self.send(client, delay, Event::Begin(flow));
    }

    /// `server`'s count of responses changed: its share of the uplink goes to the
    /// partitions holding flows from it, those it did not already tell that share.
    fn share_changed(&mut self, server: u32) {
        let share =
            self.links[server as usize].up / self.nodes[server as usize].sending().max(1) as f64;
        let when = self.now + self.lookahead;
        for part in 0..self.parts {
            let sent = &mut self.shares_sent[server as usize][part];
            if self.nodes[server as usize].serving_in[part] > 0 && *sent != share {
                *sent = share;
                self.deliver(part, when, Event::Share { server, share });
            }
        }
    }

    /// At the server: flow `flow` ended or was cancelled at its client. Its place is
    /// given back, and the requests waiting that now fit are served, in order.
    fn done(&mut self, flow: u64, server: u32) {
        let n = &mut self.nodes[server as usize];
        let Some(response) = n.responses.remove(&flow) else {
            return; // answered `Busy`, or the server died
        };
        let Some(lane) = response.lane else {
            n.stale_waiting += 1;
            return;
        };
        n.taken.0 -= 1;
        n.taken.1 -= usize::from(lane == Lane::Shared);
        if let Some(held) = n.taken_by.get_mut(&response.client) {
            *held -= 1;
            if *held == 0 {
                n.taken_by.remove(&response.client);
            }
        }
        n.serving_in[response.client as usize % self.parts] -= 1;
        let slots = self.s.admission.as_ref().map_or(usize::MAX, |a| a.slots);
        let mut begun = Vec::new();
        let mut i = 0;
        while i < self.nodes[server as usize].waiting.len()
            && self.nodes[server as usize].taken.0 < slots
        {
            let n = &mut self.nodes[server as usize];
            let entry = n.waiting[i];
            if !still_waiting(&n.responses, entry) {
                if i == 0 {
                    n.waiting.pop_front();
                    n.stale_waiting = n.stale_waiting.saturating_sub(1);
                } else {
                    i += 1;
                }
                continue;
            }
            let (flow, attempt) = entry;
            let client = n.responses[&flow].client;
            let Some(lane) = self.admit(server, client) else {
                i += 1;
                continue;
            };
            self.nodes[server as usize].waiting.remove(i);
            self.begin_serving(server, flow, client, attempt, lane);
            begun.push((flow, client));
        }
        self.share_changed(server);
        for (flow, client) in begun {
            self.send_begin(server, flow, client);
        }
    }

    /// At the client: flow `id`'s first bytes arrived; they flow from now on.
    fn begin(&mut self, id: u64) {
        let now = self.now;
        let Some(f) = self.flows.get_mut(id) else {
            return; // cancelled on the way: the server was told
        };
        f.flowing = true;
        f.updated = now;
        let (client, server) = (f.client, f.server);
        self.nodes[server as usize].up.push(id);
        self.nodes[client as usize].down.push(id);
        self.links[client as usize].receiving += 1;
        self.reshare(client, true);
    }

    /// At the server: the request waited in vain for its place; it is answered `Busy`.
    fn busy(&mut self, flow: u64, server: u32, attempt: u32) {
        let n = &mut self.nodes[server as usize];
        if !still_waiting(&n.responses, (flow, attempt)) {
            return;
        }
        let client = n.responses.remove(&flow).expect("waiting").client;
        n.stale_waiting += 1;
        let delay = self.one_way(client, server);
        self.send(client, delay, Event::Refused { flow, attempt });
    }

    /// At the client: `Busy`. It asks again later, or gives up.
    fn refused(&mut self, id: u64, attempt: u32) {
        let Some(f) = self.flows.get(id) else {
            return;
        };
        if f.attempt != attempt || f.flowing {
            return;
        }
        let Some(a) = self.s.admission.clone() else {
            return;
        };
        let (client, server, request) = (f.client, f.server, f.request);
        let asked_for = self.now.saturating_sub(f.asked_at);
        if asked_for + f.busy_wait <= a.busy_patience {
            let f = self.flow_mut(id);
            let wait = f.busy_wait;
            f.busy_wait *= 2;
            f.attempt += 1;
            let attempt = f.attempt;
            self.at(self.now + wait, Event::Retry { flow: id, attempt });
            return;
        }
        self.drop_flow(id, false);
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

    /// Takes flow `id` off its client's links (settled first) and frees it; tells its
    /// server (`tell_server`) so that it gives back the flow's place.
    fn drop_flow(&mut self, id: u64, tell_server: bool) -> Flow {
        self.settle(id);
        let f = self.flows.remove(id).expect("a live flow");
        // A flow joins the lists only when its bytes start to flow (`begin`).
        if f.flowing {
            self.nodes[f.server as usize].up.retain(|x| *x != id);
            self.nodes[f.client as usize].down.retain(|x| *x != id);
            self.links[f.client as usize].receiving -= 1;
        }
        self.nodes[f.client as usize].requests.remove(&f.request);
        if f.flowing {
            self.reshare(f.client, true);
        }
        if tell_server {
            let delay = self.one_way(f.client, f.server);
            self.send(
                f.server,
                delay,
                Event::Done {
                    flow: id,
                    server: f.server,
                },
            );
        }
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
        let f = self.drop_flow(id, true);
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
            self.drop_flow(id, true);
        }
    }

    /// `node` dies: the requests it serves fail (what they carried is kept) once its
    /// clients notice, and its own stop.
    fn dies(&mut self, node: u32) {
        let n = &mut self.nodes[node as usize];
        n.responses.clear();
        n.waiting.clear();
        n.taken = (0, 0);
        n.taken_by.clear();
        n.serving_in = [0; MAX_PARTITIONS];
        self.broadcast(|| Event::ServerDied(node));
        let own: Vec<u64> = self.nodes[node as usize]
            .requests
            .values()
            .copied()
            .collect();
        for id in own {
            self.drop_flow(id, true);
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

    /// The holder exchange's next ask: a provider `node` knows is asked for the holders it
    /// knows (and, every `PROVIDERS_REFRESH`, the DHT for providers).
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
            Some(k) if self.alive(k.id, self.now) => Some(pick),
            Some(_) => {
                let alive: Vec<usize> = (0..get.known.len())
                    .filter(|&i| self.alive(get.known[i].id, self.now))
                    .collect();
                alive.get(pick % alive.len().max(1)).copied()
            }
            None => None,
        };
        let refresh = self.now >= get.looked_up_at + PROVIDERS_REFRESH;
        if let Some(i) = asked {
            let Known { id: peer, listed } = get.known[i];
            let delay = self.one_way(node, peer);
            let n = &mut self.nodes[node as usize];
            // Not asked in its first get yet: it never asked this peer, since a get lists
            // each provider once, a ban is for good, and `listed` never goes back to
            // `NEVER_ASKED` (so a peer that died before recording it is not asked as first
            // again).
            let (after, first) = match listed {
                Known::NEVER_ASKED => (NOT_ANSWERED, n.result.gets == 1),
                Known::ASKED => (NOT_ANSWERED, false),
                answered => (answered, false),
            };
            if let Some(get) = n.get.as_mut() {
                get.last_asked = i;
                if listed == Known::NEVER_ASKED {
                    get.known[i].listed = Known::ASKED;
                }
            }
            self.send(
                peer,
                delay,
                Event::HoldersAsk {
                    node,
                    peer,
                    after,
                    first,
                },
            );
        }
        // As `refresh_holders`: the DHT again every PROVIDERS_REFRESH, for providers that
        // completed since: those it names are offered even if known.
        if refresh {
            let found = self.lookup(node);
            if let Some(get) = self.nodes[node as usize].get.as_mut() {
                get.looked_up_at = self.now;
            }
            self.offer(node, found.into_iter().map(|p| (p, true)));
        }
        let n = &mut self.nodes[node as usize];
        n.holder_asks.asked();
        let next = n.holder_asks.wait();
        self.at(self.now + next, Event::AskHolders(node));
    }

    /// At `peer`: `node` asks which holders it knows. It answers with the newest it listed
    /// since it last answered this get (`after`), and records the asker as one (`first`:
    /// it never asked before).
    fn holders_asked(&mut self, node: u32, peer: u32, after: u32, first: bool) {
        if !self.alive(peer, self.now) {
            return; // the ask fails; the asker's next one comes on its timer
        }
        let p = &mut self.nodes[peer as usize];
        let listed = p.holders.len();
        let names: Box<[u32]> =
            p.holders[answer_from(listed, self.s.holders_answer, after)..].into();
        // A peer this get heard from recorded it then (its list never forgets).
        if after == NOT_ANSWERED {
            record_holder(p, node, first);
        }
        let delay = self.one_way(node, peer);
        self.send(
            node,
            delay,
            Event::HoldersAnswer {
                node,
                peer,
                listed: listed as u32,
                names,
            },
        );
    }

    /// At `node`: `peer`'s holders arrived; each new one is offered to the round.
    fn holders_answered(&mut self, node: u32, peer: u32, listed: u32, names: &[u32]) {
        let Some(get) = self.nodes[node as usize].get.as_mut() else {
            return; // the get is over
        };
        get.heard(peer, listed);
        self.offer(node, names.iter().map(|h| (*h, false)));
    }

    /// Offers the holders `found` to `node`'s round, as the fetch does: (holder, announced),
    /// one it knew already only if announced.
    fn offer(&mut self, node: u32, found: impl Iterator<Item = (u32, bool)>) {
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
    }
}

impl Get {
    /// Records provider `p`, named by a lookup; `false` if it was known already.
    fn know(&mut self, p: u32) -> bool {
        let new = self.known_set.insert(p);
        if new {
            self.known.push(Known::new(p));
        }
        new
    }

    /// Provider `peer`'s list of holders was `listed` long when it answered: the one last
    /// asked, unless a ban took providers out of `known` meanwhile (then it is searched
    /// for; a banned one is not, as it is never asked again). An answer to one not known
    /// is dropped: only a get that started since the ask could receive one, and a mirror
    /// waits 5 s at least before its next get (`FIRST_RETRY`), far more than a round trip.
    fn heard(&mut self, peer: u32, listed: u32) {
        let at = match self.known.get(self.last_asked) {
            Some(k) if k.id == peer => Some(self.last_asked),
            _ => self.known.iter().position(|k| k.id == peer),
        };
        if let Some(i) = at {
            self.known[i].listed = listed;
        }
    }

    /// Records holder `p`, named by the holder exchange, as the node does (up to
    /// `MAX_KNOWN_HOLDERS`); `false` if it was known already or is past the bound.
    fn learn(&mut self, p: u32) -> bool {
        let new = self.known_set.learn(p);
        if new {
            self.known.push(Known::new(p));
        }
        new
    }
}

/// In a holder ask's `after`: the peer has not answered this get.
const NOT_ANSWERED: u32 = u32::MAX;

impl Known {
    /// In `listed`: not asked in this get (sent as [`NOT_ANSWERED`]).
    const NEVER_ASKED: u32 = NOT_ANSWERED;
    /// In `listed`: asked in this get, and no answer yet (sent as [`NOT_ANSWERED`]).
    const ASKED: u32 = u32::MAX - 1;

    fn new(id: u32) -> Self {
        Self {
            id,
            listed: Self::NEVER_ASKED,
        }
    }
}

/// Where in a list of `listed` holders an answer starts: the newest `answer` of them,
/// and none the asker's get heard of before (`after`, or [`NOT_ANSWERED`]).
fn answer_from(listed: usize, answer: usize, after: u32) -> usize {
    let heard = if after == NOT_ANSWERED {
        0
    } else {
        after as usize
    };
    listed.saturating_sub(answer).max(heard).min(listed)
}

/// Records `asker` among `p`'s holders, unless listed already. An asker's first ask
/// (`first`) is not: it is pushed without a look (most of the holder exchange's
/// records: a mirror mostly runs one get). Any other builds the set of those listed, once,
/// and looks there; a set once built is kept in step. Kept always, the sets were 0.7 GiB
/// of the 100,000-mirror run's peak (9.0 GiB), and each insert a random read.
fn record_holder(p: &mut Node, asker: u32, first: bool) {
    #[cfg(test)]
    assert!(
        !(first && p.holders.contains(&asker)),
        "{asker} asked before, yet said it never had"
    );
    match &mut p.holder_set {
        None if first => p.holders.push(asker),
        set => {
            let set = set.get_or_insert_with(|| p.holders.iter().copied().collect());
            if set.insert(asker) {
                p.holders.push(asker);
            }
        }
    }
}

/// Whether a send-buffer queue entry (flow, attempt) still waits: its request is there,
/// not served, and on that attempt.
fn still_waiting(responses: &FxHashMap<u64, Response>, (flow, attempt): (u64, u32)) -> bool {
    responses
        .get(&flow)
        .is_some_and(|r| r.attempt == attempt && r.lane.is_none())
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
            partitions: 1,
            limit: Duration::from_secs(3600),
        }
    }

    #[test]
    fn four_seeders_fill_the_summed_links_and_the_same_seed_repeats() {
        let mut nodes: Vec<NodeSpec> = (0..4).map(|_| node(10.0, true)).collect();
        nodes.push(node(0.0, false));
        let mut s = scenario(nodes, 7);
        for partitions in [1, 2] {
            s.partitions = partitions;
            let a = run(&s);
            let done = a.nodes[4].done_at.expect("the leecher completes");
            // 64 MiB over 4 × 10 MiB/s: 1.6 s at best; the batch gaps and the end cost a
            // little.
            assert!(done >= Duration::from_millis(1600), "{done:?}");
            assert!(done < Duration::from_millis(1900), "{done:?}");
            // With two partitions, seeders 1 and 3 are in the other one than the leecher:
            // what they sent was counted there and summed.
            assert!(a.nodes[..4].iter().all(|n| n.sent >= 12 << 20), "{a:?}");
            assert_eq!(a, run(&s), "deterministic for a seed and partitions");
        }
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
        let mut s = scenario(nodes, 5);
        // With two partitions, the dead seeder and the third one in one, the liar and the
        // leecher in the other.
        for partitions in [1, 2] {
            s.partitions = partitions;
            let r = run(&s);
            assert!(r.nodes[3].done_at.is_some(), "{r:?}");
            assert_eq!(r.nodes[1].sent, 0, "nothing of the liar's is stored");
            assert!(r.nodes[0].sent > 0 && r.nodes[0].sent < 8 << 20, "{r:?}");
        }
    }

    #[test]
    fn across_partitions_every_byte_received_was_sent_and_leechers_trade() {
        let mut nodes = vec![node(10.0, true)];
        nodes.extend((0..8).map(|_| node(10.0, false)));
        let mut s = scenario(nodes, 3);
        for partitions in [1, 2, 3] {
            s.partitions = partitions;
            let r = run(&s);
            assert!(r.nodes.iter().all(|n| n.done_at.is_some()), "{r:?}");
            let sent: u64 = r.nodes.iter().map(|n| n.sent).sum();
            let received: u64 = r.nodes.iter().map(|n| n.received).sum();
            assert_eq!(sent, received, "{partitions} partitions");
            assert!(received >= 8 * (64 << 20), "{partitions} partitions");
            let copies = r.nodes[0].sent as f64 / (64.0 * MIB);
            assert!(copies < 3.0, "the seeder sent {copies:.2} copies");
        }
    }

    #[test]
    fn a_run_on_two_threads_reports_its_progress_without_changing_it() {
        let mut nodes = vec![node(10.0, true)];
        nodes.extend((0..4).map(|_| node(10.0, false)));
        let mut s = scenario(nodes, 9);
        s.partitions = 2;
        let mut reports = Vec::new();
        let r = run_reporting(&s, 50, |p| reports.push(p));
        assert_eq!(r, run(&s), "reporting changes nothing");
        assert!(!reports.is_empty(), "{} events", r.events);
        // At the end of the first window past each multiple of 50 events.
        assert!(reports.len() as u64 <= r.events / 50, "{reports:?}");
        for (i, p) in reports.iter().enumerate() {
            assert!(p.events >= 50 * (i as u64 + 1), "{p:?}");
            assert_eq!(p.events_by_kind.iter().sum::<u64>(), p.events, "{p:?}");
        }
        assert!(reports
            .windows(2)
            .all(|w| w[0].now <= w[1].now && w[0].events / 50 < w[1].events / 50));
        assert!(reports.last().expect("reports").events <= r.events);
    }

    #[test]
    fn the_lookahead_is_the_shortest_delay_between_two_nodes() {
        let mut nodes: Vec<NodeSpec> = (0..3).map(|_| node(10.0, true)).collect();
        for (n, ms) in nodes.iter_mut().zip([7, 3, 5]) {
            n.latency = Duration::from_millis(ms);
        }
        let mut s = scenario(nodes, 1);
        assert_eq!(lookahead(&s), Duration::from_millis(8));
        // With none, a run keeps to one partition: the same run as asked for with one.
        s.nodes.push(node(0.0, false));
        for n in &mut s.nodes {
            n.latency = Duration::ZERO;
        }
        assert_eq!(lookahead(&s), Duration::ZERO);
        s.partitions = 2;
        let two = run(&s);
        s.partitions = 1;
        assert_eq!(two, run(&s));
        assert!(two.nodes[3].done_at.is_some(), "{two:?}");
    }

    /// A send buffer of two responses, one shared, one per peer; a short wait for a place.
    fn small_buffer() -> Admission {
        Admission {
            slots: 2,
            shared_slots: 1,
            per_peer: 1,
            send_wait: Duration::from_millis(300),
            busy_first_wait: Duration::from_millis(100),
            busy_patience: Duration::from_secs(2),
        }
    }

    /// The index of event kind `name` in [`EVENT_KINDS`].
    fn kind(name: &str) -> usize {
        EVENT_KINDS.iter().position(|k| *k == name).expect("a kind")
    }

    #[test]
    fn a_full_send_buffer_holds_requests_back_and_busy_ones_are_asked_again() {
        let mut nodes = vec![node(10.0, true)];
        nodes.extend((0..6).map(|_| node(10.0, false)));
        let mut s = scenario(nodes, 11);
        s.admission = Some(small_buffer());
        let busy = kind("busy");
        for partitions in [1, 2] {
            s.partitions = partitions;
            let r = run(&s);
            assert!(r.nodes.iter().all(|n| n.done_at.is_some()), "{r:?}");
            assert!(r.nodes.iter().all(|n| n.most_served <= 2), "{r:?}");
            assert_eq!(r.nodes[0].most_served, 2, "the seeder's buffer was full");
            assert!(
                r.events_by_kind[busy] > 0,
                "some requests were answered busy"
            );
        }
        // Without the buffer the seeder serves every request at once.
        s.admission = None;
        let free = run(&s);
        assert!(free.nodes[0].most_served > 2, "{free:?}");
    }

    /// A crowd at a small send buffer: many requests answered `Busy`, asked again, and
    /// cancelled by the endgame, some while waiting to ask again. Every place taken is
    /// given back by the end (checked for every run in tests).
    #[test]
    fn a_crowd_at_a_small_send_buffer_gives_back_every_place() {
        let mut nodes = vec![node(10.0, true), node(10.0, true)];
        nodes.extend((0..30).map(|_| node(10.0, false)));
        // Seed 0 cancelled a request during its wait before asking again: the cancel
        // reached the server before the new ask, which then took a place for good.
        let mut s = scenario(nodes, 0);
        s.admission = Some(small_buffer());
        let refused = kind("refused");
        for partitions in [1, 2] {
            s.partitions = partitions;
            let r = run(&s);
            assert!(r.nodes.iter().all(|n| n.done_at.is_some()), "{r:?}");
            assert!(r.events_by_kind[refused] > 0, "{:?}", r.events_by_kind);
        }
    }

    #[test]
    fn an_answer_is_kept_beside_the_provider_asked_even_after_a_ban() {
        let mut get = Get::default();
        for p in [5, 6, 7] {
            assert!(get.know(p));
        }
        get.last_asked = 1;
        get.heard(6, 40);
        // 7 was asked; a ban took 5 out while 7's answer was on its way: 7 is no longer
        // where it was asked, and is searched for.
        get.last_asked = 2;
        get.known.retain(|k| k.id != 5);
        get.heard(7, 12);
        // One no longer known (banned) is not recorded anywhere.
        get.heard(5, 99);
        let listed: Vec<(u32, u32)> = get.known.iter().map(|k| (k.id, k.listed)).collect();
        assert_eq!(listed, [(6, 40), (7, 12)]);
        assert!(get.learn(8));
        assert_eq!(get.known[2].listed, Known::NEVER_ASKED, "never answered");
    }

    /// An asker's first ask is listed without a set; the first that may come from one
    /// listed builds the set from the list, and later first asks keep it in step.
    #[test]
    fn a_peer_lists_each_asker_once_and_builds_its_set_only_when_needed() {
        let mut p = Node::default();
        record_holder(&mut p, 1, true);
        record_holder(&mut p, 2, true);
        assert!(p.holder_set.is_none(), "first asks need no set");
        record_holder(&mut p, 2, false); // asked before: not listed again
        record_holder(&mut p, 3, false); // a later get's ask, never asked before
        record_holder(&mut p, 4, true);
        assert_eq!(p.holders, [1, 2, 3, 4]);
        let mut set: Vec<u32> = p.holder_set.iter().flatten().copied().collect();
        set.sort_unstable();
        assert_eq!(set, [1, 2, 3, 4], "built once needed, then kept in step");
    }

    #[test]
    fn the_node_buffer_holds_fifteen_batches() {
        // 64 MiB of send buffer, a 4 MiB batch taking ~4.09 MiB while it is sent.
        let a = Admission::node(16 * 256 * 1024);
        assert_eq!((a.slots, a.shared_slots, a.per_peer), (15, 11, 3));
    }
}
