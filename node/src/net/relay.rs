//! Relays that carry data, and how a private node uses them.
//!
//! Any public node may relay (circuit relay v2) for nodes behind NAT: they reserve a slot,
//! advertise `<relay>/p2p-circuit` addresses, and peers reach them through it. libp2p's
//! defaults are sized for signalling (2 min and 128 KiB per circuit); Commons' are sized
//! for data, and a relay also keeps a total budget ([`CircuitBudget`]) so relaying cannot
//! take more of its uplink than its operator gave. A relay serves only once it is reachable
//! at a public address ([`ReservationGate`]), unless `[relay] enabled = true` says so.

use std::{
    collections::VecDeque,
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

/// The relay behaviour's settings from `config`, with `gate` deciding when it serves.
pub fn behaviour_config(config: &RelayConfig, gate: ReservationGate) -> relay::Config {
    // libp2p's rate limits per peer and per IP (reservations and new circuits) stay.
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
    c.reservation_rate_limiters.push(Box::new(gate));
    c.circuit_src_rate_limiters
        .push(Box::new(CircuitBudget::new(
            config.max_circuit_bytes,
            config.budget_bytes_per_hour,
        )));
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
