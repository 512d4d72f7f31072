//! Relays that carry data, and how a private node uses them.
//!
//! Any public node may relay (circuit relay v2) for nodes behind NAT: they reserve a slot,
//! advertise `<relay>/p2p-circuit` addresses, and peers reach them through it. libp2p's
//! defaults are sized for signalling (2 min and 128 KiB per circuit); Commons' are sized
//! for data, and a relay also keeps a total budget ([`CircuitBudget`]) so relaying cannot
//! take more of its uplink than its operator gave. A relay serves only once it is reachable
//! at a public address ([`ReservationGate`]), unless `[relay] enabled = true` says so.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use libp2p::{relay, Multiaddr, PeerId};

/// Bytes one circuit may carry (both directions), by default: 256 MiB.
pub const DEFAULT_MAX_CIRCUIT_BYTES: u64 = 256 << 20;
/// How long one circuit may last, by default: 30 min.
pub const DEFAULT_MAX_CIRCUIT_DURATION: Duration = Duration::from_secs(30 * 60);
/// Circuits open at once through one relay, by default.
pub const DEFAULT_MAX_CIRCUITS: usize = 32;
/// Circuits open at once from or to one peer, by default.
pub const DEFAULT_MAX_CIRCUITS_PER_PEER: usize = 4;
/// Reservations (private nodes reachable through this relay) at once, by default.
pub const DEFAULT_MAX_RESERVATIONS: usize = 128;
/// Reservations one peer may hold here at once.
pub const MAX_RESERVATIONS_PER_PEER: usize = 2;
/// How long a reservation lasts before the private node renews it.
pub const RESERVATION_DURATION: Duration = Duration::from_secs(60 * 60);
/// Bytes all circuits may carry per hour, by default: 8 GiB (about 19 Mbit/s on average).
pub const DEFAULT_RELAY_BUDGET_PER_HOUR: u64 = 8 << 30;
/// The window [`CircuitBudget`] counts in.
pub const BUDGET_WINDOW: Duration = Duration::from_secs(60 * 60);
/// Relays a private node reserves slots on, by default.
pub const DEFAULT_RELAY_SLOTS: usize = 2;
/// New circuits (or reservations) one source peer may open in a burst: libp2p's default.
pub const SOURCE_PEER_BURST: u32 = 30;
/// … and then one per this interval: libp2p's default.
pub const SOURCE_PEER_REFILL: Duration = Duration::from_secs(2 * 60);
/// New circuits (or reservations) from one IP address in a burst. libp2p's default (60,
/// then one a minute) is per host; a site behind one NAT address (a campus, a lab) is many
/// nodes, and the NAT lab ran out of it after about twenty fetches from one site.
pub const SOURCE_IP_BURST: u32 = 600;
/// … and then one per this interval (600 an hour).
pub const SOURCE_IP_REFILL: Duration = Duration::from_secs(6);
/// Sources tracked by one [`SourceLimiter`] before full buckets are dropped.
const SOURCE_LIMITER_KEYS: usize = 10_000;

/// The `[relay]` settings: whether this node relays for others, and within what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayConfig {
    /// `Some(true)`: relay always; `Some(false)`: never; `None` (the default): once
    /// AutoNAT confirms a public address (or the node is a configured DHT server).
    pub enabled: Option<bool>,
    /// Bytes per circuit (both directions); past it the relay closes the circuit.
    pub max_circuit_bytes: u64,
    /// Longest circuit.
    pub max_circuit_duration: Duration,
    /// Circuits at once.
    pub max_circuits: usize,
    /// Circuits at once per peer.
    pub max_circuits_per_peer: usize,
    /// Reservations at once.
    pub max_reservations: usize,
    /// Bytes all circuits may carry per hour ([`CircuitBudget`]).
    pub budget_bytes_per_hour: u64,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            enabled: None,
            max_circuit_bytes: DEFAULT_MAX_CIRCUIT_BYTES,
            max_circuit_duration: DEFAULT_MAX_CIRCUIT_DURATION,
            max_circuits: DEFAULT_MAX_CIRCUITS,
            max_circuits_per_peer: DEFAULT_MAX_CIRCUITS_PER_PEER,
            max_reservations: DEFAULT_MAX_RESERVATIONS,
            budget_bytes_per_hour: DEFAULT_RELAY_BUDGET_PER_HOUR,
        }
    }
}

/// The `[nat]` settings: how a node learns its reachability and gets reached when private.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatConfig {
    /// Relays to reserve slots on (each ending in `/p2p/<peer id>`), before any found
    /// through the DHT.
    pub relays: Vec<Multiaddr>,
    /// Relays to hold slots on at once when private (0: never reserve on relays found
    /// through the DHT; the listed `relays` are still used).
    pub relay_slots: usize,
    /// Probe reachability with AutoNAT v2, and answer others' probes.
    pub autonat: bool,
    /// Upgrade relayed connections to direct ones by hole punching (DCUtR).
    pub hole_punching: bool,
}

impl Default for NatConfig {
    fn default() -> Self {
        Self {
            relays: Vec::new(),
            relay_slots: DEFAULT_RELAY_SLOTS,
            autonat: true,
            hole_punching: true,
        }
    }
}

/// Admits reservations only while the node serves as a relay: set once it is reachable
/// at a public address (a private relay would hand out addresses nobody can use).
#[derive(Debug, Clone, Default)]
pub struct ReservationGate(Arc<AtomicBool>);

impl ReservationGate {
    /// Opens or closes the gate.
    pub fn set_open(&self, open: bool) {
        self.0.store(open, Ordering::Relaxed);
    }

    /// Whether reservations are admitted.
    pub fn is_open(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

impl relay::RateLimiter for ReservationGate {
    fn try_next(&mut self, _: PeerId, _: &Multiaddr, _: Instant) -> bool {
        self.is_open()
    }
}

/// The relay's total byte budget: a circuit is admitted only if, with every circuit
/// admitted in the last [`BUDGET_WINDOW`] carrying its full `max_circuit_bytes`, the
/// window stays within `budget`. So the bytes relayed in any hour are at most the budget
/// (plus the circuits still open from the hour before).
#[derive(Debug)]
pub struct CircuitBudget {
    per_circuit: u64,
    budget: u64,
    admitted: VecDeque<Instant>,
}

impl CircuitBudget {
    /// A budget of `budget` bytes per window for circuits of at most `per_circuit` bytes.
    pub fn new(per_circuit: u64, budget: u64) -> Self {
        Self {
            per_circuit: per_circuit.max(1),
            budget,
            admitted: VecDeque::new(),
        }
    }

    /// Gives back the place of the circuit admitted at `at` (it carried nothing).
    pub fn give_back(&mut self, at: Instant) {
        if let Some(i) = self.admitted.iter().rposition(|t| *t == at) {
            self.admitted.remove(i);
        }
    }

    /// Admits one more circuit at `now`, if the budget has room.
    pub fn admit(&mut self, now: Instant) -> bool {
        while self
            .admitted
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= BUDGET_WINDOW)
        {
            self.admitted.pop_front();
        }
        let after = (self.admitted.len() as u64 + 1).saturating_mul(self.per_circuit);
        if after > self.budget {
            return false;
        }
        self.admitted.push_back(now);
        true
    }
}

impl relay::RateLimiter for CircuitBudget {
    fn try_next(&mut self, _: PeerId, _: &Multiaddr, now: Instant) -> bool {
        self.admit(now)
    }
}

/// Charges of circuit requests not yet settled, at most; past it a request is still
/// admitted or not as usual, but cannot be refunded.
pub const MAX_PENDING_CHARGES: usize = 4_096;
/// A charge the relay has not settled within this long is kept (its event was missed).
const PENDING_CHARGE_TTL: Duration = Duration::from_secs(60);

/// What one admitted circuit request took: a token of its peer and of its IP, and a place
/// in the budget.
#[derive(Debug, Clone, Copy)]
struct Charge {
    ip: Option<std::net::IpAddr>,
    at: Instant,
}

/// The limits on new circuits taken together, all or nothing: the per-peer and per-IP
/// buckets ([`SourceLimiter`]) and the byte budget ([`CircuitBudget`]). libp2p-relay asks
/// them before it looks for the destination's reservation, so every request to a peer that
/// holds none (a provider record outliving its node: in the NAT lab each fetcher dialled
/// every earlier trial's gone fetcher) used to cost its source a token and the relay a
/// whole circuit's budget; the lab's relays refused everything within the hour. Such a
/// request ([`Self::settle`] with `refund`) gets its charge back.
#[derive(Debug, Clone)]
pub struct CircuitLimits(Arc<std::sync::Mutex<CircuitLimitsState>>);

#[derive(Debug)]
struct CircuitLimitsState {
    peer: SourceLimiter,
    ip: SourceLimiter,
    budget: CircuitBudget,
    /// Charges per source, oldest first, until the relay accepts or denies the request.
    pending: HashMap<PeerId, VecDeque<Charge>>,
    pending_len: usize,
}

impl CircuitLimits {
    /// Limits per peer and per IP as [`SOURCE_PEER_BURST`] and [`SOURCE_IP_BURST`] say,
    /// and `budget` bytes an hour for circuits of at most `per_circuit` bytes.
    pub fn new(per_circuit: u64, budget: u64) -> Self {
        Self(Arc::new(std::sync::Mutex::new(CircuitLimitsState {
            peer: SourceLimiter::per_peer(SOURCE_PEER_BURST, SOURCE_PEER_REFILL),
            ip: SourceLimiter::per_ip(SOURCE_IP_BURST, SOURCE_IP_REFILL),
            budget: CircuitBudget::new(per_circuit, budget),
            pending: HashMap::new(),
            pending_len: 0,
        })))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, CircuitLimitsState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits a request from `peer` at `addr`, charging every limit, or none.
    pub fn admit(&self, peer: PeerId, addr: &Multiaddr, now: Instant) -> bool {
        let mut s = self.state();
        let ip = ip_of_addr(addr);
        let ip_key = ip.map_or(SourceKey::Peer(peer), SourceKey::Ip);
        if !s.peer.take(SourceKey::Peer(peer), now) {
            return false;
        }
        if !s.ip.take(ip_key, now) {
            s.peer.give_back(SourceKey::Peer(peer));
            return false;
        }
        if !s.budget.admit(now) {
            s.peer.give_back(SourceKey::Peer(peer));
            s.ip.give_back(ip_key);
            return false;
        }
        if s.pending_len >= MAX_PENDING_CHARGES {
            let before = s.pending_len;
            s.pending.retain(|_, q| {
                q.retain(|c| now.saturating_duration_since(c.at) < PENDING_CHARGE_TTL);
                !q.is_empty()
            });
            s.pending_len = s.pending.values().map(VecDeque::len).sum();
            tracing::debug!(
                before,
                after = s.pending_len,
                "dropped stale circuit charges"
            );
        }
        if s.pending_len < MAX_PENDING_CHARGES {
            s.pending
                .entry(peer)
                .or_default()
                .push_back(Charge { ip, at: now });
            s.pending_len += 1;
        }
        true
    }

    /// The relay answered `peer`'s oldest admitted request: with `refund`, it carried
    /// nothing (no reservation at the destination), and its charge is given back.
    pub fn settle(&self, peer: PeerId, refund: bool) {
        let mut s = self.state();
        let charge = match s.pending.get_mut(&peer) {
            Some(q) => {
                let c = q.pop_front();
                if q.is_empty() {
                    s.pending.remove(&peer);
                }
                c
            }
            None => None,
        };
        let Some(charge) = charge else { return };
        s.pending_len -= 1;
        if refund {
            s.peer.give_back(SourceKey::Peer(peer));
            s.ip.give_back(charge.ip.map_or(SourceKey::Peer(peer), SourceKey::Ip));
            s.budget.give_back(charge.at);
        }
    }
}

impl relay::RateLimiter for CircuitLimits {
    fn try_next(&mut self, peer: PeerId, addr: &Multiaddr, now: Instant) -> bool {
        self.admit(peer, addr, now)
    }
}

/// The IP address in `addr` (the first), if any.
fn ip_of_addr(addr: &Multiaddr) -> Option<std::net::IpAddr> {
    addr.iter().find_map(|p| match p {
        libp2p::multiaddr::Protocol::Ip4(ip) => Some(std::net::IpAddr::V4(ip)),
        libp2p::multiaddr::Protocol::Ip6(ip) => Some(std::net::IpAddr::V6(ip)),
        _ => None,
    })
}

/// What a [`SourceLimiter`] counts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceKey {
    /// The source's peer id.
    Peer(PeerId),
    /// The IP address the source reached the relay from (the first of its address).
    Ip(std::net::IpAddr),
}

/// A token bucket per source (peer or IP): `burst` new circuits at once, then one per
/// `refill`. libp2p-relay's own limiter cannot be built with other numbers from outside
/// the crate, hence this one.
#[derive(Debug)]
pub struct SourceLimiter {
    by_ip: bool,
    burst: u32,
    refill: Duration,
    /// Tokens left and when they were counted, per source.
    buckets: HashMap<SourceKey, (u32, Instant)>,
}

impl SourceLimiter {
    /// A limiter per peer.
    pub fn per_peer(burst: u32, refill: Duration) -> Self {
        Self::new(false, burst, refill)
    }

    /// A limiter per IP address.
    pub fn per_ip(burst: u32, refill: Duration) -> Self {
        Self::new(true, burst, refill)
    }

    fn new(by_ip: bool, burst: u32, refill: Duration) -> Self {
        Self {
            by_ip,
            burst: burst.max(1),
            refill: refill.max(Duration::from_millis(1)),
            buckets: HashMap::new(),
        }
    }

    /// Takes one token of `key` at `now`, if it has one.
    pub fn take(&mut self, key: SourceKey, now: Instant) -> bool {
        if self.buckets.len() >= SOURCE_LIMITER_KEYS {
            // Sources whose bucket has refilled are as good as new: forget them.
            let (burst, refill) = (self.burst, self.refill);
            self.buckets
                .retain(|_, (tokens, at)| refilled(*tokens, *at, now, refill) < burst);
            if self.buckets.len() >= SOURCE_LIMITER_KEYS {
                // A flood of new sources: start over rather than scan on every call (the
                // relay's circuit count and byte budget still bound what they get).
                tracing::warn!(
                    sources = self.buckets.len(),
                    "too many sources to rate-limit one by one; counting afresh"
                );
                self.buckets.clear();
            }
        }
        let (burst, refill) = (self.burst, self.refill);
        let bucket = self.buckets.entry(key).or_insert((burst, now));
        let tokens = refilled(bucket.0, bucket.1, now, refill).min(burst);
        // Count from when the last whole token came, so fractions are not lost.
        let gained = tokens - bucket.0.min(tokens);
        let since = if tokens == burst {
            now
        } else {
            bucket.1 + refill * gained
        };
        if tokens == 0 {
            *bucket = (0, since);
            return false;
        }
        *bucket = (tokens - 1, since);
        true
    }

    /// Gives back a token [`Self::take`] took from `key` (never beyond the burst).
    pub fn give_back(&mut self, key: SourceKey) {
        if let Some(bucket) = self.buckets.get_mut(&key) {
            bucket.0 = (bucket.0 + 1).min(self.burst);
        }
    }
}

/// Tokens of a bucket that had `tokens` at `at`, at `now`.
fn refilled(tokens: u32, at: Instant, now: Instant, refill: Duration) -> u32 {
    let gained = now.saturating_duration_since(at).as_nanos() / refill.as_nanos().max(1);
    tokens.saturating_add(u32::try_from(gained).unwrap_or(u32::MAX))
}

impl relay::RateLimiter for SourceLimiter {
    fn try_next(&mut self, peer: PeerId, addr: &Multiaddr, now: Instant) -> bool {
        let key = if self.by_ip {
            // No IP (a relayed source): counted by peer.
            ip_of_addr(addr).map_or(SourceKey::Peer(peer), SourceKey::Ip)
        } else {
            SourceKey::Peer(peer)
        };
        self.take(key, now)
    }
}

/// The per-peer and per-IP limits on new circuits or reservations.
fn source_limiters() -> Vec<Box<dyn relay::RateLimiter>> {
    vec![
        Box::new(SourceLimiter::per_peer(
            SOURCE_PEER_BURST,
            SOURCE_PEER_REFILL,
        )),
        Box::new(SourceLimiter::per_ip(SOURCE_IP_BURST, SOURCE_IP_REFILL)),
    ]
}

/// The relay behaviour's settings from `config`, with `gate` deciding when it serves.
pub fn behaviour_config(
    config: &RelayConfig,
    gate: ReservationGate,
    circuits: CircuitLimits,
) -> relay::Config {
    // Rate limits per peer and per IP on reservations and new circuits: libp2p's per
    // peer, and per IP sized for sites behind one NAT address.
    let mut c = relay::Config {
        max_reservations: config.max_reservations,
        max_reservations_per_peer: MAX_RESERVATIONS_PER_PEER,
        reservation_duration: RESERVATION_DURATION,
        max_circuits: config.max_circuits,
        max_circuits_per_peer: config.max_circuits_per_peer,
        max_circuit_duration: config.max_circuit_duration,
        max_circuit_bytes: config.max_circuit_bytes,
        ..relay::Config::default()
    };
    c.reservation_rate_limiters = source_limiters();
    c.reservation_rate_limiters.push(Box::new(gate));
    c.circuit_src_rate_limiters = vec![Box::new(circuits)];
    c
}

/// `relay`'s address for reserving a slot through it: `<relay>/p2p-circuit`.
pub fn circuit_listen_addr(relay: &Multiaddr) -> Multiaddr {
    relay.clone().with(libp2p::multiaddr::Protocol::P2pCircuit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn circuit_limits_charge_all_or_nothing_and_refund_requests_that_carried_nothing() {
        let limits = CircuitLimits::new(1 << 20, 3 << 20);
        let addr: Multiaddr = "/ip4/198.18.0.20/udp/4433/quic-v1".parse().expect("addr");
        let t0 = Instant::now();
        let peer = PeerId::random();
        // Three circuits fit the budget; each refunded one (no reservation at the
        // destination) gives its place back, so a gone provider costs nothing.
        for _ in 0..10 {
            assert!(limits.admit(peer, &addr, t0));
            limits.settle(peer, true);
        }
        for _ in 0..3 {
            assert!(limits.admit(peer, &addr, t0));
        }
        assert!(!limits.admit(peer, &addr, t0), "the budget is spent");
        // Settled without a refund (accepted): still spent.
        for _ in 0..3 {
            limits.settle(peer, false);
        }
        assert!(!limits.admit(PeerId::random(), &addr, t0));
        // Settling what was never charged changes nothing.
        limits.settle(PeerId::random(), true);
        assert!(!limits.admit(peer, &addr, t0));
    }

    #[test]
    fn a_source_out_of_tokens_is_refused_without_spending_the_budget_or_its_ip() {
        let limits = CircuitLimits::new(1, u64::MAX);
        let addr: Multiaddr = "/ip4/198.18.0.21/tcp/1".parse().expect("addr");
        let t0 = Instant::now();
        let peer = PeerId::random();
        for _ in 0..SOURCE_PEER_BURST {
            assert!(limits.admit(peer, &addr, t0));
        }
        assert!(!limits.admit(peer, &addr, t0), "the peer's burst is spent");
        // The refused request took none of the IP's tokens: the others behind the same
        // address get exactly what is left of its burst.
        let left = SOURCE_IP_BURST - SOURCE_PEER_BURST;
        let mut admitted = 0;
        for _ in 0..left + 5 {
            if limits.admit(PeerId::random(), &addr, t0) {
                admitted += 1;
            }
        }
        assert_eq!(admitted, left);
        // A refunded request gives back its peer's token and its IP's: one more fits.
        assert!(!limits.admit(peer, &addr, t0));
        limits.settle(peer, true);
        assert!(limits.admit(peer, &addr, t0));
        assert!(
            !limits.admit(PeerId::random(), &addr, t0),
            "the IP's burst is spent"
        );
    }

    #[test]
    fn the_budget_admits_circuits_while_their_full_size_fits_the_window() {
        let mut budget = CircuitBudget::new(256 << 20, 1 << 30);
        let t0 = Instant::now();
        for _ in 0..4 {
            assert!(budget.admit(t0), "4 x 256 MiB fit 1 GiB");
        }
        assert!(!budget.admit(t0), "a fifth does not");
        assert!(!budget.admit(t0 + BUDGET_WINDOW - Duration::from_secs(1)));
        assert!(
            budget.admit(t0 + BUDGET_WINDOW),
            "an hour later the window has room again"
        );
        assert!(budget.admitted.len() <= 4, "bounded by budget / circuit");
    }

    #[test]
    fn a_source_gets_its_burst_then_one_per_refill() {
        let mut limiter = SourceLimiter::per_ip(3, Duration::from_secs(10));
        let ip = SourceKey::Ip([10, 0, 0, 1].into());
        let other = SourceKey::Ip([10, 0, 0, 2].into());
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.take(ip, t0));
        }
        assert!(!limiter.take(ip, t0), "the burst is spent");
        assert!(limiter.take(other, t0), "another source has its own");
        assert!(!limiter.take(ip, t0 + Duration::from_secs(9)));
        assert!(
            limiter.take(ip, t0 + Duration::from_secs(10)),
            "one refilled"
        );
        assert!(!limiter.take(ip, t0 + Duration::from_secs(15)));
        assert!(
            limiter.take(ip, t0 + Duration::from_secs(20)),
            "and the next"
        );
        assert!(
            (0..3).all(|_| limiter.take(ip, t0 + Duration::from_secs(1000))),
            "refilled to the burst, no more"
        );
        assert!(!limiter.take(ip, t0 + Duration::from_secs(1000)));
    }

    #[test]
    fn the_limiter_forgets_refilled_sources_when_full() {
        let mut limiter = SourceLimiter::per_peer(2, Duration::from_secs(1));
        let t0 = Instant::now();
        for _ in 0..SOURCE_LIMITER_KEYS {
            limiter.take(SourceKey::Peer(PeerId::random()), t0);
        }
        limiter.take(
            SourceKey::Peer(PeerId::random()),
            t0 + Duration::from_secs(5),
        );
        assert_eq!(limiter.buckets.len(), 1, "the refilled ones went");
    }

    #[test]
    fn a_budget_smaller_than_one_circuit_admits_none() {
        let mut budget = CircuitBudget::new(256 << 20, 1 << 20);
        assert!(!budget.admit(Instant::now()));
    }

    #[test]
    fn the_gate_admits_reservations_only_when_open() {
        use relay::RateLimiter;
        let mut gate = ReservationGate::default();
        let (peer, addr) = (PeerId::random(), Multiaddr::empty());
        assert!(!gate.try_next(peer, &addr, Instant::now()));
        gate.clone().set_open(true);
        assert!(
            gate.try_next(peer, &addr, Instant::now()),
            "clones share it"
        );
    }
}
