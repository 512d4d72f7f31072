//! An event-ordered model of the node's Kademlia provider lookups for many nodes in virtual
//! time (issue 21): how many hops and messages a lookup costs, how long to its first
//! provider, whether it finds one at all when nodes come and go, and how many records each
//! node ends up holding.
//!
//! What the node does, and the model copies (rust-libp2p 0.57, libp2p-kad 0.49, with the
//! node's settings from `node/src/net/behaviour.rs` and `node/src/discovery/mod.rs`):
//! - Routing tables of k-buckets ([`K`] = 20). A well-connected network's tables are taken
//!   as random picks of up to k live nodes from each bucket's range of IDs (IDs are random
//!   `u128`s, distance is XOR).
//! - A lookup is libp2p's `ClosestPeersIter` (`protocols/kad/src/query/peers/closest.rs`),
//!   rewritten here as `Walk`: it starts from the asker's k closest entries, keeps
//!   [`ALPHA`] = 3 requests in flight, and is *stalled* after α answers in a row brought no
//!   closer peer, when it may have up to k in flight; it ends once the k closest peers it
//!   knows have all answered (failed peers skipped) or nobody is left to ask. A peer gets
//!   [`PEER_TIMEOUT`] before it stops counting. A `GET_PROVIDERS` answer carries the
//!   responder's k closest entries to the key and the providers it stores; libp2p feeds
//!   both into the walk as peers to ask (`Behaviour::discovered`, `behaviour.rs`).
//! - The node's `find_providers(hash, LOOKUP_WANT, settle = true)` returns when
//!   [`LOOKUP_WANT`] providers are found, [`LOOKUP_SETTLE`] after the first, when the walk
//!   ends, or at the query timeout (30 s). The walk goes on after that until the next
//!   answer with new providers (the node's task then finishes it) or its end: both the
//!   messages until the answer and those of the whole walk are counted.
//! - A request to a live node costs [`ROUND_TRIPS_PER_REQUEST`] round trips (a new QUIC
//!   connection, then the request); one to a departed node fails after
//!   [`DEPARTED_PEER_COST`], and the asker drops it from its table (the node's task removes
//!   a peer whose dial failed: `node/src/net/task.rs`, `OutgoingConnectionError`).
//! - A peer that answered enters the asker's table, and the asker the peer's, when the
//!   bucket has room (libp2p reports both as routable; a full bucket only queues a pending
//!   entry, left out here).
//! - Routing-table refresh: libp2p-kad 0.49 runs a bootstrap every 5 minutes by default
//!   (`Config::periodic_bootstrap_interval`, which the node leaves as is) and after new
//!   entries: a lookup of the node's own ID, then one of a random key in each bucket farther
//!   than its closest neighbour's. The model assumes each node's refresh (at its own phase,
//!   every [`REFRESH_INTERVAL`]) drops every entry that had departed by then and fills the
//!   emptied places with random live nodes of the bucket's range. That is optimistic: the
//!   real walks dial only some of a bucket's entries. [`Scenario::refresh`] = `None` is
//!   the other bound: stale entries go only when a request to them fails.
//! - Joining: a joiner's table is filled the same way (its bootstrap walk), and it enters
//!   the tables of the nodes in its table when their bucket has room (those its walk
//!   contacted).
//! - Provider records: a publisher walks to the k closest nodes of the key
//!   (`GET_CLOSEST_PEERS`) and stores its record at the k that answered (replication factor
//!   20), at most [`ProviderLimits::max_providers_per_key`] per key and node; records
//!   expire after [`DEFAULT_RECORD_TTL`]; the publisher re-announces every
//!   [`DEFAULT_ANNOUNCE_INTERVAL`] (libp2p's own republishing is off in the node); a node
//!   that leaves takes its records with it, and a joiner gets none (libp2p replication is
//!   off too).
//! - Churn: every node leaves after an exponential lifetime (rate
//!   [`Scenario::churn_per_hour`] per node: 0.3 means 30 % of the population's size leaves
//!   per hour) and is replaced at once by a fresh node with a new ID. Publishers stay.
//! - Latency: each node has a one-way latency to the core; a round trip between two nodes
//!   is twice their sum (as in [`super::swarm`]). [`Latency::WonderProxy`] draws it from
//!   measured round trips between cities ([`WONDERPROXY_RTT_MS`]).
//!
//! Time is virtual and every random choice comes from one seeded `StdRng`: the same
//! scenario and seed give the same run. Each lookup runs as its own small event queue at
//! its start time (the churn between its events, a few per second at 100,000 nodes, is
//! seen through each node's departure time).

use std::{
    cmp::Reverse,
    collections::{BTreeMap, BinaryHeap},
    time::Duration,
};

use commons_node::{
    discovery::{ProviderLimits, DEFAULT_ANNOUNCE_INTERVAL, DEFAULT_RECORD_TTL},
    fetch::LOOKUP_WANT,
    net::LOOKUP_SETTLE,
};
use rand::{rngs::StdRng, Rng, SeedableRng};

/// Bucket size and the number of closest peers a walk wants: libp2p's `K_VALUE` (20), and
/// the node's replication factor (`set_replication_factor(20)`, `node/src/net/behaviour.rs`;
/// not public).
pub const K: usize = 20;
/// Requests a walk keeps in flight: libp2p's `ALPHA_VALUE` (3); the node leaves
/// `Config::set_parallelism` at its default.
pub const ALPHA: usize = 3;
/// How long a walk waits for one peer before it stops counting it: libp2p's
/// `ClosestPeersIterConfig::default().peer_timeout` (10 s); the node does not change it.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(10);
/// What a request to a departed node costs before it fails: the QUIC handshake timeout of
/// libp2p-quic 0.14 (`Config::handshake_timeout`, 5 s; the node sets only windows and
/// streams). Kademlia dials through the swarm, so the node's `net::DIAL_TIMEOUT` (10 s,
/// for its own `connect` calls) does not apply; the iterator's 10 s would come later. The
/// node's task notes the same figure ("5 s per dial", `net/task.rs`).
pub const DEPARTED_PEER_COST: Duration = Duration::from_secs(5);
/// Round trips a request to a live node costs: one for the QUIC handshake (TLS 1.3 in
/// QUIC's first flight) and one for the request on a new stream (multistream-select's
/// optimistic negotiation rides with the request). Connections left from earlier requests
/// would save one; with idle connections closed after 60 s, a node of a large network
/// rarely has one to the peers of a given walk.
pub const ROUND_TRIPS_PER_REQUEST: u32 = 2;
/// How often each node refreshes its routing table: libp2p-kad 0.49's default
/// `periodic_bootstrap_interval` (5 min), left as is by the node.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(300);
/// The query timeout: `DiscoveryConfig::default().query_timeout` (30 s,
/// `node/src/discovery/mod.rs`), set on Kademlia by `behaviour.rs`.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(30);
/// Memory of one key held for others, without its records: "roughly 200 bytes"
/// (`ProviderLimits::max_keys`' doc, `node/src/discovery/records.rs`).
pub const KEY_BYTES: u64 = 200;
/// Memory of one provider record: 200 bytes. From the same doc: 250,000 keys "bound this at
/// about 100 MB", so 400 bytes per key with its one record, 200 of them the key's. A
/// libp2p `ProviderRecord` is about 150 bytes inline (key, PeerId, expiry, address list;
/// checked by a test) plus one QUIC address on the heap (about 50 bytes with the
/// allocation's header).
pub const PER_RECORD_BYTES: u64 = 200;

/// Round trips between ten cities, in ms, measured by WonderProxy (P. Reinheimer, "Miles
/// per Millisecond: A Look at the WonderProxy Network", WonderProxy blog, 9 February 2011,
/// table "Pings Between Cities": Baltimore, Brisbane, Dallas, Fremont, Milan, Moscow, New
/// York, Paris, Sydney, Zurich). One figure of each pair, as the table's upper triangle
/// reads; 44 of the 45 pairs (Sydney–Zurich was cut off in the copy read). Median
/// 140.6 ms, mean 166 ms, from 11 ms (Milan–Zurich) to 387 ms (Moscow–Sydney).
pub const WONDERPROXY_RTT_MS: [f64; 44] = [
    // Baltimore to Brisbane, Dallas, Fremont, Milan, Moscow, New York, Paris, Sydney, Zurich
    239.38, 35.64, 79.68, 104.70, 141.15, 174.71, 97.71, 251.07, 114.11,
    // Brisbane to Dallas … Zurich
    221.60, 174.38, 350.12, 357.21, 245.89, 335.79, 33.45, 346.92,
    // Dallas to Fremont … Zurich
    44.00, 140.00, 168.00, 36.80, 130.94, 221.72, 127.74,
    // Fremont to Milan … Zurich
    167.85, 214.59, 78.43, 176.22, 184.91, 167.16, // Milan to Moscow … Zurich
    67.08, 112.17, 21.61, 344.70, 11.17, // Moscow to New York … Zurich
    131.29, 56.74, 387.09, 60.29, // New York to Paris, Sydney, Zurich
    78.33, 319.33, 101.03, // Paris to Sydney, Zurich
    348.84, 108.06,
];

/// How far nodes are from each other.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Latency {
    /// Each node's one-way latency to the core is a quarter of a round trip drawn from
    /// [`WONDERPROXY_RTT_MS`], so a pair's round trip is the mean of two measured ones:
    /// the same mean as the table, a narrower spread.
    WonderProxy,
    /// One-way latency uniform in [lo, hi] (loopback: tens of microseconds).
    Uniform(Duration, Duration),
}

/// What to simulate.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// DHT servers (constant under churn).
    pub nodes: usize,
    /// Latency between nodes.
    pub latency: Latency,
    /// Departures per node per hour (0.3: 30 % of the population per hour); 0: none.
    pub churn_per_hour: f64,
    /// Table refresh interval; `None`: stale entries go only when a request to them fails.
    pub refresh: Option<Duration>,
    /// Churn before the studied keys are first announced.
    pub warm_up: Duration,
    /// The lookups start at uniformly random times in `[warm_up, warm_up + window)`.
    pub window: Duration,
    /// Keys studied, each announced by one publisher.
    pub keys: usize,
    /// Publishers (stable nodes); key i is announced by publisher i mod this.
    pub publishers: usize,
    /// Lookups.
    pub lookups: usize,
    /// The lookup returns when this many providers are found ([`LOOKUP_WANT`]).
    pub want: usize,
    /// ... or this long after the first ([`LOOKUP_SETTLE`]); `None`: no early return.
    pub settle: Option<Duration>,
    /// The walk's bound ([`QUERY_TIMEOUT`]).
    pub query_timeout: Duration,
    /// Record lifetime and re-announce interval (the node's defaults).
    pub record_ttl: Duration,
    /// How often a publisher announces again.
    pub announce_interval: Duration,
    /// Providers a node keeps per key.
    pub max_providers_per_key: usize,
    /// Seeds every random choice.
    pub seed: u64,
}

impl Scenario {
    /// The node's settings for `nodes` servers on WonderProxy's latencies, without churn:
    /// keys announced at once, lookups over one announce interval.
    pub fn node_defaults(nodes: usize, seed: u64) -> Self {
        Self {
            nodes,
            latency: Latency::WonderProxy,
            churn_per_hour: 0.0,
            refresh: Some(REFRESH_INTERVAL),
            warm_up: Duration::ZERO,
            window: DEFAULT_ANNOUNCE_INTERVAL,
            keys: 200,
            publishers: (nodes / 100).clamp(1, 20),
            lookups: 2000,
            want: LOOKUP_WANT,
            settle: Some(LOOKUP_SETTLE),
            query_timeout: QUERY_TIMEOUT,
            record_ttl: DEFAULT_RECORD_TTL,
            announce_interval: DEFAULT_ANNOUNCE_INTERVAL,
            max_providers_per_key: ProviderLimits::default().max_providers_per_key,
            seed,
        }
    }
}

/// What one lookup saw.
#[derive(Debug, Clone, PartialEq)]
pub struct LookupResult {
    /// Time since its key was last announced.
    pub age: Duration,
    /// Live nodes other than the publisher holding an unexpired record of the key when it
    /// started (the truth the lookup tries to reach).
    pub replicas: u32,
    /// It returned with at least one provider.
    pub found: bool,
    /// From its start to the first provider.
    pub first: Option<Duration>,
    /// The chain of requests to the first provider (0: the asker held a record).
    pub hops: Option<u32>,
    /// When it returned, from its start.
    pub returned: Duration,
    /// Requests sent until it returned.
    pub requests: u32,
    /// Requests the walk sent in all (it goes on after the answer, see the module doc).
    pub walk_requests: u32,
    /// Requests of the whole walk that went to departed nodes.
    pub failed: u32,
}

/// A run's results.
#[derive(Debug, Clone, PartialEq)]
pub struct StudyResult {
    /// Per lookup, in start order.
    pub lookups: Vec<LookupResult>,
    /// Nodes that joined (and left) during the run.
    pub joins: u64,
    /// Mean entries per routing table at the end.
    pub table_entries: f64,
    /// Share of routing-table entries that had departed, at the end (those a refresh since
    /// has dropped not counted).
    pub stale_share: f64,
}

/// Runs `scenario`.
pub fn run(scenario: &Scenario) -> StudyResult {
    let mut sim = Sim::new(scenario);
    sim.run()
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    node: u32,
    /// When the node departs, seconds (the model's shortcut for "did it leave before the
    /// refresh"; the table's owner never reads it).
    departs_s: f32,
}

#[derive(Debug, Clone, Copy)]
struct Record {
    key: u32,
    provider: u32,
    expires: Duration,
}

#[derive(Debug)]
struct Node {
    id: u128,
    one_way: Duration,
    joined: Duration,
    departs: Duration,
    /// Refreshes happen at `phase + i × interval`.
    phase: Duration,
    refreshed: Duration,
    /// Bucket b holds nodes whose distance has b leading zero bits.
    table: Vec<Vec<Entry>>,
    records: Vec<Record>,
    /// Index in `Sim::live`, while alive.
    live_pos: usize,
}

#[derive(Debug)]
struct Key {
    id: u128,
    publisher: u32,
    announced: Duration,
    /// Nodes that ever stored a record of it.
    holders: Vec<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Depart(u32),
    Announce(u32),
    Lookup(u32),
}

/// What one walk did.
#[derive(Debug, Default)]
struct WalkOutcome {
    /// Providers found until the lookup returned: (provider, when, hops).
    providers: Vec<(u32, Duration, u32)>,
    returned_at: Duration,
    requests_at_return: u32,
    requests: u32,
    failed: u32,
    /// The k closest peers that answered, closest first.
    closest: Vec<u32>,
}

struct Sim<'a> {
    s: &'a Scenario,
    nodes: Vec<Node>,
    /// Live nodes by ID.
    index: BTreeMap<u128, u32>,
    live: Vec<u32>,
    keys: Vec<Key>,
    rng: StdRng,
    end: Duration,
    queue: BinaryHeap<Reverse<(Duration, u64, Event)>>,
    seq: u64,
    joins: u64,
}

fn f32_secs(d: Duration) -> f32 {
    if d == Duration::MAX {
        f32::INFINITY
    } else {
        d.as_secs_f32()
    }
}

/// Bits before the first difference: the bucket `b` sits in (0: the far half).
fn bucket_of(a: u128, b: u128) -> usize {
    (a ^ b).leading_zeros() as usize
}

/// The IDs sharing the first `bits` bits with `id`.
fn subtree(id: u128, bits: usize) -> (u128, u128) {
    let mask = if bits == 0 { 0 } else { !0u128 << (128 - bits) };
    (id & mask, (id & mask) | !mask)
}

/// The IDs of `id`'s bucket `b`: the first `b` bits shared, bit `b` different.
fn bucket_range(id: u128, b: usize) -> (u128, u128) {
    let bit = 1u128 << (127 - b);
    let (lo, _) = subtree(id, b);
    let lo = lo | ((id & bit) ^ bit);
    (lo, lo | (bit - 1))
}

impl<'a> Sim<'a> {
    fn new(s: &'a Scenario) -> Self {
        let mut sim = Self {
            s,
            nodes: Vec::new(),
            index: BTreeMap::new(),
            live: Vec::new(),
            keys: Vec::new(),
            rng: StdRng::seed_from_u64(s.seed),
            end: s.warm_up + s.window,
            queue: BinaryHeap::new(),
            seq: 0,
            joins: 0,
        };
        for i in 0..s.nodes {
            let stable = i < s.publishers;
            sim.create(Duration::ZERO, stable);
        }
        // A well-connected network: every table filled from the whole population.
        for x in 0..s.nodes as u32 {
            let table = sim.fill_table(x);
            sim.nodes[x as usize].table = table;
        }
        sim
    }

    fn at(&mut self, when: Duration, event: Event) {
        self.seq += 1;
        self.queue.push(Reverse((when, self.seq, event)));
    }

    fn alive(&self, node: u32, at: Duration) -> bool {
        let n = &self.nodes[node as usize];
        n.joined <= at && at < n.departs
    }

    fn rtt(&self, a: u32, b: u32) -> Duration {
        2 * (self.nodes[a as usize].one_way + self.nodes[b as usize].one_way)
    }

    fn one_way(&mut self) -> Duration {
        match self.s.latency {
            Latency::WonderProxy => {
                let i = self.rng.random_range(0..WONDERPROXY_RTT_MS.len());
                Duration::from_secs_f64(WONDERPROXY_RTT_MS[i] / 4.0 / 1000.0)
            }
            Latency::Uniform(lo, hi) => {
                Duration::from_secs_f64(self.rng.random_range(lo.as_secs_f64()..=hi.as_secs_f64()))
            }
        }
    }

    /// A new live node (its table is filled by the caller).
    fn create(&mut self, now: Duration, stable: bool) -> u32 {
        let id = loop {
            let id: u128 = self.rng.random();
            if !self.index.contains_key(&id) {
                break id;
            }
        };
        let departs = if stable || self.s.churn_per_hour <= 0.0 {
            Duration::MAX
        } else {
            let u: f64 = self.rng.random_range(f64::MIN_POSITIVE..1.0);
            now + Duration::from_secs_f64(-u.ln() / self.s.churn_per_hour * 3600.0)
        };
        let refresh = self.s.refresh.unwrap_or(Duration::MAX);
        let phase = if refresh == Duration::MAX {
            Duration::MAX
        } else {
            now + Duration::from_secs_f64(self.rng.random_range(0.0..refresh.as_secs_f64()))
        };
        let one_way = self.one_way();
        let x = self.nodes.len() as u32;
        self.nodes.push(Node {
            id,
            one_way,
            joined: now,
            departs,
            phase,
            refreshed: now,
            table: Vec::new(),
            records: Vec::new(),
            live_pos: self.live.len(),
        });
        self.index.insert(id, x);
        self.live.push(x);
        if departs < self.end {
            self.at(departs, Event::Depart(x));
        }
        x
    }

    fn entry(&self, node: u32) -> Entry {
        Entry {
            node,
            departs_s: f32_secs(self.nodes[node as usize].departs),
        }
    }

    /// Up to `k` random live nodes of IDs `lo..=hi`, none of `skip`.
    fn sample(&mut self, lo: u128, hi: u128, k: usize, skip: &[Entry]) -> Vec<u32> {
        let first: Vec<u32> = self
            .index
            .range(lo..=hi)
            .map(|(_, &n)| n)
            .filter(|n| !skip.iter().any(|e| e.node == *n))
            .take(k + 1)
            .collect();
        if first.len() <= k {
            return first;
        }
        let mut out: Vec<u32> = Vec::with_capacity(k);
        for _ in 0..8 * k {
            if out.len() == k {
                break;
            }
            let r = self.rng.random_range(lo..=hi);
            let n = self
                .index
                .range(r..=hi)
                .next()
                .or_else(|| self.index.range(lo..=hi).next())
                .map(|(_, &n)| n);
            if let Some(n) = n {
                if !out.contains(&n) && !skip.iter().any(|e| e.node == n) {
                    out.push(n);
                }
            }
        }
        out
    }

    /// `x`'s table as a well-connected network has it: up to k random live nodes of each
    /// bucket's range.
    fn fill_table(&mut self, x: u32) -> Vec<Vec<Entry>> {
        let id = self.nodes[x as usize].id;
        let mut table = Vec::new();
        for b in 0..128 {
            let (slo, shi) = subtree(id, b);
            if self.index.range(slo..=shi).nth(1).is_none() {
                break; // nobody else shares these bits
            }
            let (lo, hi) = bucket_range(id, b);
            let picked = self.sample(lo, hi, K, &[]);
            table.push(picked.into_iter().map(|n| self.entry(n)).collect());
        }
        table
    }

    /// The last refresh instant of `x` at or before `now`.
    fn last_refresh(&self, x: u32, now: Duration) -> Option<Duration> {
        let r = self.s.refresh?;
        let phase = self.nodes[x as usize].phase;
        if now < phase {
            return None;
        }
        let i = (now - phase).as_nanos() / r.as_nanos();
        Some(phase + r * i as u32)
    }

    /// Applies `x`'s periodic refresh, if one fell due since the last applied: entries
    /// departed by then go, and their places are filled from the bucket's live nodes.
    fn refresh(&mut self, x: u32, now: Duration) {
        let Some(last) = self.last_refresh(x, now) else {
            return;
        };
        if last <= self.nodes[x as usize].refreshed {
            return;
        }
        self.nodes[x as usize].refreshed = last;
        let last_s = f32_secs(last);
        let id = self.nodes[x as usize].id;
        for b in 0..self.nodes[x as usize].table.len() {
            let bucket = &mut self.nodes[x as usize].table[b];
            let before = bucket.len();
            bucket.retain(|e| e.departs_s > last_s);
            if bucket.len() < before {
                let (lo, hi) = bucket_range(id, b);
                let have = bucket.clone();
                let picked = self.sample(lo, hi, K - have.len(), &have);
                let entries: Vec<Entry> = picked.into_iter().map(|n| self.entry(n)).collect();
                self.nodes[x as usize].table[b].extend(entries);
            }
        }
    }

    /// `y` enters `x`'s table if its bucket has room (after the entries `x`'s last refresh
    /// would have dropped).
    fn insert(&mut self, x: u32, y: u32, now: Duration) {
        if x == y || !self.alive(x, now) {
            return;
        }
        let b = bucket_of(self.nodes[x as usize].id, self.nodes[y as usize].id);
        let last = self.last_refresh(x, now).map(f32_secs);
        let entry = self.entry(y);
        let table = &mut self.nodes[x as usize].table;
        if table.len() <= b {
            table.resize_with(b + 1, Vec::new);
        }
        let bucket = &mut table[b];
        if bucket.iter().any(|e| e.node == y) {
            return;
        }
        if bucket.len() >= K {
            if let Some(last) = last {
                bucket.retain(|e| e.departs_s > last);
            }
        }
        if bucket.len() < K {
            bucket.push(entry);
        }
    }

    fn remove(&mut self, x: u32, y: u32) {
        let b = bucket_of(self.nodes[x as usize].id, self.nodes[y as usize].id);
        if let Some(bucket) = self.nodes[x as usize].table.get_mut(b) {
            bucket.retain(|e| e.node != y);
        }
    }

    /// The `k` entries of `x`'s table closest to `target`, closest first, without `not`.
    fn closest_in_table(&self, x: u32, target: u128, k: usize, not: u32) -> Vec<u32> {
        let mut all: Vec<(u128, u32)> = self.nodes[x as usize]
            .table
            .iter()
            .flatten()
            .filter(|e| e.node != not)
            .map(|e| (self.nodes[e.node as usize].id ^ target, e.node))
            .collect();
        if all.len() > k {
            all.select_nth_unstable(k);
            all.truncate(k);
        }
        all.sort_unstable();
        all.into_iter().map(|(_, n)| n).collect()
    }

    fn providers_at(&self, x: u32, key: u32, at: Duration) -> Vec<u32> {
        self.nodes[x as usize]
            .records
            .iter()
            .filter(|r| r.key == key && r.expires > at)
            .map(|r| r.provider)
            .collect()
    }

    /// Stores `provider`'s record of `key` at `x`, within the per-key cap.
    fn store(&mut self, x: u32, key: u32, provider: u32, expires: Duration) {
        let cap = self.s.max_providers_per_key;
        let records = &mut self.nodes[x as usize].records;
        if let Some(r) = records
            .iter_mut()
            .find(|r| r.key == key && r.provider == provider)
        {
            r.expires = expires;
            return;
        }
        if records.iter().filter(|r| r.key == key).count() < cap {
            records.push(Record {
                key,
                provider,
                expires,
            });
            self.keys[key as usize].holders.push(x);
        }
    }

    /// `x` leaves (its records with it) and a fresh node joins in its place.
    fn depart(&mut self, x: u32, now: Duration) {
        let n = &mut self.nodes[x as usize];
        n.table = Vec::new();
        n.records = Vec::new();
        let pos = n.live_pos;
        let id = n.id;
        self.index.remove(&id);
        self.live.swap_remove(pos);
        if let Some(&moved) = self.live.get(pos) {
            self.nodes[moved as usize].live_pos = pos;
        }
        let joiner = self.create(now, false);
        self.joins += 1;
        let table = self.fill_table(joiner);
        let contacted: Vec<u32> = table.iter().flatten().map(|e| e.node).collect();
        self.nodes[joiner as usize].table = table;
        for y in contacted {
            self.insert(y, joiner, now);
        }
    }

    /// One walk of `asker` towards `target`: `GET_PROVIDERS` of `key` when given (returning
    /// as the node's `find_providers` does), else `GET_CLOSEST_PEERS`.
    fn walk(&mut self, asker: u32, target: u128, key: Option<u32>, start: Duration) -> WalkOutcome {
        self.refresh(asker, start);
        let initial = self.closest_in_table(asker, target, K, asker);
        let mut walk = Walk::new(
            target,
            initial.iter().map(|&n| (self.nodes[n as usize].id, n)),
        );
        let mut out = WalkOutcome::default();
        let mut seen: Vec<u32> = Vec::new();
        let mut returned: Option<Duration> = None;
        let mut settle_until: Option<Duration> = None;
        if let Some(key) = key {
            for p in self.providers_at(asker, key, start) {
                if p != asker && !seen.contains(&p) {
                    seen.push(p);
                    out.providers.push((p, start, 0));
                }
            }
            if !out.providers.is_empty() {
                if out.providers.len() >= self.s.want {
                    returned = Some(start);
                    out.requests_at_return = 0;
                } else if let Some(settle) = self.s.settle {
                    settle_until = Some(start + settle);
                }
            }
        }
        let hard_end = start + self.s.query_timeout;
        // (when, seq, peer, answered)
        let mut queue: BinaryHeap<Reverse<(Duration, u64, u32, bool)>> = BinaryHeap::new();
        let mut seq = 0u64;
        let mut now = start;
        let walk_end = loop {
            while let Some(peer) = walk.next(now) {
                out.requests += 1;
                seq += 1;
                let answered =
                    self.alive(peer, now) && self.alive(peer, now + self.rtt(asker, peer));
                let when = if answered {
                    now + ROUND_TRIPS_PER_REQUEST * self.rtt(asker, peer)
                } else {
                    now + DEPARTED_PEER_COST
                };
                queue.push(Reverse((when, seq, peer, answered)));
            }
            if walk.finished() {
                break now;
            }
            let Some(Reverse((when, _, peer, answered))) = queue.pop() else {
                break now;
            };
            if when > hard_end {
                break hard_end;
            }
            if let (None, Some(until)) = (returned, settle_until) {
                if when > until {
                    returned = Some(until);
                    out.requests_at_return = out.requests;
                }
            }
            now = when;
            if !answered {
                out.failed += 1;
                walk.on_failure(self.nodes[peer as usize].id);
                self.remove(asker, peer);
                continue;
            }
            self.refresh(peer, now);
            self.insert(asker, peer, now);
            self.insert(peer, asker, now);
            let mut learned: Vec<(u128, u32)> = self
                .closest_in_table(peer, target, K, asker)
                .into_iter()
                .map(|n| (self.nodes[n as usize].id, n))
                .collect();
            let mut new_providers = Vec::new();
            if let Some(key) = key {
                for p in self.providers_at(peer, key, now) {
                    learned.push((self.nodes[p as usize].id, p));
                    if p != asker && !seen.contains(&p) {
                        seen.push(p);
                        new_providers.push(p);
                    }
                }
            }
            let depth = walk.on_success(self.nodes[peer as usize].id, &learned, asker);
            if new_providers.is_empty() {
                continue;
            }
            if returned.is_some() {
                // Nobody waits for more: the node's task finishes the walk.
                break now;
            }
            for p in new_providers {
                out.providers.push((p, now, depth));
            }
            if out.providers.len() >= self.s.want {
                returned = Some(now);
                out.requests_at_return = out.requests;
            } else if settle_until.is_none() {
                settle_until = self.s.settle.map(|s| now + s);
            }
        };
        match returned {
            Some(at) => out.returned_at = at,
            None => {
                // The walk ended (or timed out) before any other condition: the answer.
                out.returned_at = match settle_until {
                    Some(until) if until < walk_end => until,
                    _ => walk_end,
                };
                out.requests_at_return = out.requests;
            }
        }
        out.providers.retain(|(_, at, _)| *at <= out.returned_at);
        out.closest = walk.closest_answered(K);
        out
    }

    fn announce(&mut self, k: u32, now: Duration) {
        let (id, publisher) = (self.keys[k as usize].id, self.keys[k as usize].publisher);
        let walk = self.walk(publisher, id, None, now);
        let expires = walk.returned_at + self.s.record_ttl;
        // Its own record (re-announcing keeps it).
        self.store(publisher, k, publisher, Duration::MAX);
        for x in walk.closest {
            self.store(x, k, publisher, expires);
        }
        self.keys[k as usize].announced = now;
        let next = now + self.s.announce_interval;
        if next < self.end {
            self.at(next, Event::Announce(k));
        }
    }

    /// Live nodes other than the publisher holding an unexpired record of `key` at `at`.
    fn replicas(&self, key: u32, at: Duration) -> u32 {
        let k = &self.keys[key as usize];
        k.holders
            .iter()
            .filter(|&&x| x != k.publisher && self.alive(x, at))
            .filter(|&&x| !self.providers_at(x, key, at).is_empty())
            .count() as u32
    }

    fn run(&mut self) -> StudyResult {
        for k in 0..self.s.keys {
            let publisher = (k % self.s.publishers.max(1)) as u32;
            let id = self.rng.random();
            self.keys.push(Key {
                id,
                publisher,
                announced: Duration::ZERO,
                holders: Vec::new(),
            });
            self.at(self.s.warm_up, Event::Announce(k as u32));
        }
        let window = self.s.window.as_secs_f64();
        let mut starts: Vec<Duration> = (0..self.s.lookups)
            .map(|_| {
                self.s.warm_up
                    + Duration::from_secs_f64(self.rng.random_range(0.0..window.max(1e-9)))
                    + Duration::from_millis(1)
            })
            .collect();
        starts.sort();
        for (i, t) in starts.iter().enumerate() {
            self.at(*t, Event::Lookup(i as u32));
        }
        let mut lookups = Vec::with_capacity(self.s.lookups);
        while let Some(Reverse((now, _, event))) = self.queue.pop() {
            if now > self.end {
                break;
            }
            match event {
                Event::Depart(x) => self.depart(x, now),
                Event::Announce(k) => self.announce(k, now),
                Event::Lookup(_) => lookups.push(self.lookup(now)),
            }
        }
        // Tables as they stand at the end: entries departed before each node's last
        // refresh are gone (refreshes are applied when a table is read, so not all are).
        let mut entries = 0u64;
        let mut stale = 0u64;
        for &x in &self.live {
            let last = self
                .last_refresh(x, self.end)
                .map_or(f32::NEG_INFINITY, f32_secs);
            for e in self.nodes[x as usize].table.iter().flatten() {
                if e.departs_s > last {
                    entries += 1;
                    stale += u64::from(!self.alive(e.node, self.end));
                }
            }
        }
        StudyResult {
            lookups,
            joins: self.joins,
            table_entries: entries as f64 / self.live.len().max(1) as f64,
            stale_share: stale as f64 / entries.max(1) as f64,
        }
    }

    fn lookup(&mut self, now: Duration) -> LookupResult {
        let k = self.rng.random_range(0..self.keys.len()) as u32;
        let publisher = self.keys[k as usize].publisher;
        let asker = loop {
            let a = self.live[self.rng.random_range(0..self.live.len())];
            if a != publisher || self.live.len() == 1 {
                break a;
            }
        };
        let replicas = self.replicas(k, now);
        let target = self.keys[k as usize].id;
        let w = self.walk(asker, target, Some(k), now);
        let first = w.providers.first().map(|(_, at, hops)| (*at - now, *hops));
        LookupResult {
            age: now.saturating_sub(self.keys[k as usize].announced),
            replicas,
            found: first.is_some(),
            first: first.map(|f| f.0),
            hops: first.map(|f| f.1),
            returned: w.returned_at - now,
            requests: w.requests_at_return,
            walk_requests: w.requests,
            failed: w.failed,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum PeerState {
    NotContacted,
    Waiting(Duration),
    Unresponsive,
    Failed,
    Succeeded,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum WalkState {
    Iterating { no_progress: usize },
    Stalled,
    Finished,
}

#[derive(Debug)]
struct Peer {
    node: u32,
    state: PeerState,
    /// Requests in the chain that led to it (the asker's own entries: 1).
    depth: u32,
}

/// libp2p's `ClosestPeersIter`, rewritten: the peers known, by distance to the target, and
/// the rules that pick whom to ask next and when to stop (see the module doc).
struct Walk {
    target: u128,
    closest: BTreeMap<u128, Peer>,
    state: WalkState,
    waiting: usize,
}

impl Walk {
    fn new(target: u128, initial: impl Iterator<Item = (u128, u32)>) -> Self {
        let closest = initial
            .take(K)
            .map(|(id, node)| {
                (
                    id ^ target,
                    Peer {
                        node,
                        state: PeerState::NotContacted,
                        depth: 1,
                    },
                )
            })
            .collect();
        Self {
            target,
            closest,
            state: WalkState::Iterating { no_progress: 0 },
            waiting: 0,
        }
    }

    fn finished(&self) -> bool {
        self.state == WalkState::Finished
    }

    fn at_capacity(&self) -> bool {
        match self.state {
            WalkState::Stalled => self.waiting >= K.max(ALPHA),
            WalkState::Iterating { .. } => self.waiting >= ALPHA,
            WalkState::Finished => true,
        }
    }

    /// The next peer to ask at `now`, if any (`ClosestPeersIter::next`).
    fn next(&mut self, now: Duration) -> Option<u32> {
        if self.finished() {
            return None;
        }
        let mut answered = Some(0);
        let at_capacity = self.at_capacity();
        for peer in self.closest.values_mut() {
            match peer.state {
                PeerState::Waiting(deadline) => {
                    if now >= deadline {
                        self.waiting -= 1;
                        peer.state = PeerState::Unresponsive;
                    } else if at_capacity {
                        return None;
                    } else {
                        answered = None;
                    }
                }
                PeerState::Succeeded => {
                    if let Some(n) = &mut answered {
                        *n += 1;
                        if *n >= K {
                            self.state = WalkState::Finished;
                            return None;
                        }
                    }
                }
                PeerState::NotContacted => {
                    if at_capacity {
                        return None;
                    }
                    peer.state = PeerState::Waiting(now + PEER_TIMEOUT);
                    self.waiting += 1;
                    return Some(peer.node);
                }
                PeerState::Unresponsive | PeerState::Failed => {}
            }
        }
        if self.waiting == 0 {
            self.state = WalkState::Finished;
        }
        None
    }

    /// `peer` answered with `learned` (`ClosestPeersIter::on_success`); returns its depth.
    fn on_success(&mut self, peer: u128, learned: &[(u128, u32)], asker: u32) -> u32 {
        let distance = peer ^ self.target;
        let Some(p) = self.closest.get_mut(&distance) else {
            return 0;
        };
        match p.state {
            PeerState::Waiting(_) => {
                self.waiting -= 1;
                p.state = PeerState::Succeeded;
            }
            PeerState::Unresponsive => p.state = PeerState::Succeeded,
            _ => return p.depth,
        }
        let depth = p.depth;
        let cur_range = self
            .closest
            .keys()
            .nth(K - 1)
            .or_else(|| self.closest.keys().last())
            .copied()
            .unwrap_or(distance);
        let mut progress = self.closest.len() < K;
        for &(id, node) in learned {
            if node == asker {
                continue;
            }
            let d = id ^ self.target;
            if let std::collections::btree_map::Entry::Vacant(e) = self.closest.entry(d) {
                e.insert(Peer {
                    node,
                    state: PeerState::NotContacted,
                    depth: depth + 1,
                });
                progress |= d < cur_range;
            }
        }
        self.state = match self.state {
            WalkState::Iterating { no_progress } => {
                let no_progress = if progress { 0 } else { no_progress + 1 };
                if no_progress >= ALPHA {
                    WalkState::Stalled
                } else {
                    WalkState::Iterating { no_progress }
                }
            }
            WalkState::Stalled if progress => WalkState::Iterating { no_progress: 0 },
            s => s,
        };
        depth
    }

    fn on_failure(&mut self, peer: u128) {
        if self.finished() {
            return;
        }
        if let Some(p) = self.closest.get_mut(&(peer ^ self.target)) {
            match p.state {
                PeerState::Waiting(_) => {
                    self.waiting -= 1;
                    p.state = PeerState::Failed;
                }
                PeerState::Unresponsive => p.state = PeerState::Failed,
                _ => {}
            }
        }
    }

    fn closest_answered(&self, k: usize) -> Vec<u32> {
        self.closest
            .values()
            .filter(|p| p.state == PeerState::Succeeded)
            .map(|p| p.node)
            .take(k)
            .collect()
    }
}

/// The records scenario: every node announces some roots, a few mirrors many, and one
/// popular root is provided by every node (after a flash crowd).
#[derive(Debug, Clone)]
pub struct RecordsScenario {
    /// DHT servers.
    pub nodes: usize,
    /// Roots each node announces.
    pub roots_per_node: usize,
    /// Share of nodes that are mirrors.
    pub mirror_share: f64,
    /// Roots each mirror announces.
    pub mirror_roots: usize,
    /// Providers of the popular root (all nodes after the flash crowd).
    pub popular_providers: usize,
    /// Providers kept per key and node.
    pub max_providers_per_key: usize,
    /// Seeds the IDs.
    pub seed: u64,
}

/// Keys and records each node holds (its own included), without churn.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordsResult {
    /// Keys per node.
    pub keys: Vec<u64>,
    /// Provider records per node.
    pub records: Vec<u64>,
}

impl RecordsResult {
    /// Each node's memory for them: [`KEY_BYTES`] per key, [`PER_RECORD_BYTES`] per record.
    pub fn bytes(&self) -> Vec<u64> {
        self.keys
            .iter()
            .zip(&self.records)
            .map(|(k, r)| k * KEY_BYTES + r * PER_RECORD_BYTES)
            .collect()
    }
}

/// The `k` IDs of `sorted` closest to `key` by XOR, as indices.
fn closest_sorted(sorted: &[u128], key: u128, k: usize) -> Vec<usize> {
    let count = |bits: usize| {
        let (lo, hi) = subtree(key, bits);
        let a = sorted.partition_point(|x| *x < lo);
        let b = sorted.partition_point(|x| *x <= hi);
        (a, b)
    };
    let mut bits = 0;
    let (mut a, mut b) = (0, sorted.len());
    while bits < 128 {
        let (na, nb) = count(bits + 1);
        if nb - na < k {
            break;
        }
        (a, b, bits) = (na, nb, bits + 1);
    }
    let mut found: Vec<(u128, usize)> = (a..b).map(|i| (sorted[i] ^ key, i)).collect();
    if found.len() > k {
        found.select_nth_unstable(k);
        found.truncate(k);
    }
    found.into_iter().map(|(_, i)| i).collect()
}

/// Places every announced root at its [`K`] closest nodes (the walk finds them without
/// churn) and counts what each node holds.
pub fn records(s: &RecordsScenario) -> RecordsResult {
    let mut rng = StdRng::seed_from_u64(s.seed);
    let mut ids: Vec<u128> = (0..s.nodes).map(|_| rng.random()).collect();
    ids.sort_unstable();
    ids.dedup();
    let n = ids.len();
    let mut keys = vec![0u64; n];
    let mut records = vec![0u64; n];
    for node in 0..n {
        let roots = if rng.random_bool(s.mirror_share.clamp(0.0, 1.0)) {
            s.mirror_roots
        } else {
            s.roots_per_node
        };
        // Its own records, then one at each of the k closest per root.
        keys[node] += roots as u64;
        records[node] += roots as u64;
        for _ in 0..roots {
            for i in closest_sorted(&ids, rng.random(), K) {
                keys[i] += 1;
                records[i] += 1;
            }
        }
    }
    let popular: u128 = rng.random();
    for i in closest_sorted(&ids, popular, K) {
        keys[i] += 1;
        records[i] += s.popular_providers.min(s.max_providers_per_key) as u64;
    }
    RecordsResult { keys, records }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quick(nodes: usize, seed: u64) -> Scenario {
        Scenario {
            keys: 20,
            lookups: 100,
            window: Duration::from_secs(3600),
            ..Scenario::node_defaults(nodes, seed)
        }
    }

    fn mean(v: impl Iterator<Item = f64>) -> f64 {
        let v: Vec<f64> = v.collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    }

    fn mean_hops(r: &StudyResult) -> f64 {
        mean(r.lookups.iter().filter_map(|l| l.hops).map(f64::from))
    }

    #[test]
    fn without_churn_every_lookup_finds_its_provider_and_hops_grow_with_the_network() {
        let small = run(&quick(60, 1));
        let large = run(&quick(3000, 1));
        for r in [&small, &large] {
            assert!(r.lookups.iter().all(|l| l.found), "{:?}", r.lookups);
            assert!(r.lookups.iter().all(|l| l.replicas >= K as u32));
            assert!(r.lookups.iter().all(|l| l.failed == 0));
            // No departed node: the answer comes within a few round trips, far under 1 s.
            assert!(r
                .lookups
                .iter()
                .all(|l| l.first.is_some_and(|f| f < Duration::from_secs(5))));
        }
        let (h_small, h_large) = (mean_hops(&small), mean_hops(&large));
        assert!(h_small < h_large, "{h_small} vs {h_large}");
        assert!(h_large <= (3000f64).log2() / 2.0, "{h_large}");
        // A walk to the end asks more in the larger network.
        let walk = |r: &StudyResult| mean(r.lookups.iter().map(|l| f64::from(l.walk_requests)));
        assert!(walk(&small) < walk(&large));
    }

    #[test]
    fn the_same_seed_gives_the_same_run() {
        let mut s = quick(400, 9);
        s.churn_per_hour = 0.3;
        s.warm_up = Duration::from_secs(1800);
        let a = run(&s);
        assert_eq!(a, run(&s));
        assert!(a.joins > 50, "{}", a.joins);
        s.seed = 10;
        assert_ne!(a, run(&s));
    }

    /// Announces one key at 0, makes every node holding it (the publisher too) leave at
    /// `gone`, and walks for it at `t` from a node that held none.
    fn lookup_after_replicas_left(
        refresh: Option<Duration>,
        gone: Duration,
        t: Duration,
    ) -> WalkOutcome {
        let s = Scenario {
            refresh,
            ..quick(500, 3)
        };
        let mut sim = Sim::new(&s);
        sim.end = Duration::MAX;
        sim.keys.push(Key {
            id: sim.rng.random(),
            publisher: 0,
            announced: Duration::ZERO,
            holders: Vec::new(),
        });
        sim.announce(0, Duration::ZERO);
        let holders = sim.keys[0].holders.clone();
        assert!(holders.len() > K, "{holders:?}"); // k replicas and the publisher's own
        for &x in &holders {
            sim.nodes[x as usize].departs = gone;
        }
        for node in &mut sim.nodes {
            for e in node.table.iter_mut().flatten() {
                if holders.contains(&e.node) {
                    e.departs_s = gone.as_secs_f32();
                }
            }
        }
        for &x in &holders {
            sim.depart(x, gone);
        }
        let asker = (0..sim.nodes.len() as u32)
            .find(|&x| !holders.contains(&x) && sim.alive(x, t))
            .expect("a node that held none");
        let target = sim.keys[0].id;
        sim.walk(asker, target, Some(0), t)
    }

    #[test]
    fn with_every_replica_departed_the_lookup_fails_after_the_walk() {
        // Refreshed tables: the departed are gone from them; the walk ends without a
        // provider, well before the query timeout.
        let (gone, t) = (Duration::from_secs(60), Duration::from_secs(60 + 400));
        let w = lookup_after_replicas_left(Some(REFRESH_INTERVAL), gone, t);
        assert!(w.providers.is_empty());
        assert!(w.requests >= K as u32, "{}", w.requests);
        assert!(
            w.returned_at < t + DEPARTED_PEER_COST,
            "{:?}",
            w.returned_at - t
        );
        assert_eq!(w.requests_at_return, w.requests);
        // Stale tables: the 21 departed holders were the closest entries, asked three at a
        // time at 5 s each: the lookup runs into the query timeout.
        let w = lookup_after_replicas_left(None, gone, t);
        assert!(w.providers.is_empty());
        assert!(w.failed >= 6, "{}", w.failed);
        assert_eq!(w.returned_at, t + QUERY_TIMEOUT);
    }

    #[test]
    fn a_full_walk_of_twenty_nodes_asks_the_other_nineteen() {
        let s = Scenario {
            latency: Latency::Uniform(Duration::from_micros(20), Duration::from_micros(80)),
            want: usize::MAX,
            settle: None,
            publishers: 20,
            ..quick(20, 4)
        };
        let r = run(&s);
        assert!(r.lookups.iter().all(|l| l.walk_requests == 19), "{r:?}");
    }

    #[test]
    fn with_churn_replicas_drain_between_announcements() {
        let s = Scenario {
            churn_per_hour: 0.3,
            warm_up: Duration::from_secs(1800),
            window: Duration::from_secs(12 * 3600),
            lookups: 300,
            ..quick(300, 5)
        };
        let r = run(&s);
        let bin = |lo: u64, hi: u64| -> Vec<&LookupResult> {
            r.lookups
                .iter()
                .filter(|l| l.age >= Duration::from_secs(lo * 3600))
                .filter(|l| l.age < Duration::from_secs(hi * 3600))
                .collect()
        };
        let (early, late) = (bin(0, 2), bin(9, 12));
        let replicas = |v: &[&LookupResult]| mean(v.iter().map(|l| f64::from(l.replicas)));
        // About e^(-0.3 h⁻¹ × 1 h) of 20 early; about e^(-3.15) of 20 late.
        assert!(replicas(&early) > 12.0, "{}", replicas(&early));
        assert!(replicas(&late) < 4.0, "{}", replicas(&late));
        let found = |v: &[&LookupResult]| mean(v.iter().map(|l| f64::from(u8::from(l.found))));
        assert!(found(&early) > 0.95, "{}", found(&early));
        assert!(found(&late) < found(&early));
        // Refreshed every 5 min, about 1 % of the entries are departed at any time; without
        // the refresh, only failed requests clean the tables.
        assert!(r.stale_share < 0.03, "{}", r.stale_share);
        let unrefreshed = run(&Scenario { refresh: None, ..s });
        assert!(unrefreshed.stale_share > 2.0 * r.stale_share.max(0.01));
    }

    #[test]
    fn records_spread_twenty_per_root_and_the_popular_root_hits_the_cap() {
        let s = RecordsScenario {
            nodes: 500,
            roots_per_node: 5,
            mirror_share: 0.0,
            mirror_roots: 0,
            popular_providers: 500,
            max_providers_per_key: 64,
            seed: 2,
        };
        let r = records(&s);
        let keys: u64 = r.keys.iter().sum();
        let recs: u64 = r.records.iter().sum();
        // 500 × 5 roots, each at 20 nodes plus its own; the popular root at 20 nodes.
        assert_eq!(keys, 500 * 5 * 21 + 20);
        assert_eq!(recs, 500 * 5 * 21 + 20 * 64);
        let capped = r
            .keys
            .iter()
            .zip(&r.records)
            .filter(|(k, r)| **r == **k + 63);
        assert_eq!(capped.count(), 20);
        assert_eq!(r.bytes()[0], r.keys[0] * 200 + r.records[0] * 200);
    }

    #[test]
    fn closest_sorted_agrees_with_a_full_sort() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut ids: Vec<u128> = (0..2000).map(|_| rng.random()).collect();
        ids.sort_unstable();
        for _ in 0..50 {
            let key: u128 = rng.random();
            let mut got: Vec<u128> = closest_sorted(&ids, key, K)
                .into_iter()
                .map(|i| ids[i])
                .collect();
            got.sort_unstable_by_key(|x| x ^ key);
            let mut all = ids.clone();
            all.sort_unstable_by_key(|x| x ^ key);
            assert_eq!(got, all[..K]);
        }
    }

    #[test]
    fn the_record_figure_covers_libp2ps_record() {
        let inline = std::mem::size_of::<libp2p::kad::ProviderRecord>() as u64;
        assert!(inline < PER_RECORD_BYTES, "{inline}");
        let mut rtts = WONDERPROXY_RTT_MS.to_vec();
        rtts.sort_by(f64::total_cmp);
        let median = (rtts[21] + rtts[22]) / 2.0;
        assert!((median - 140.6).abs() < 0.1, "{median}");
    }
}
