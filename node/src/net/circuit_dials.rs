//! How many dials may open circuits through one relay at once.
//!
//! rust-libp2p's relay client carries every circuit request to a relay over one connection
//! to it, whose handler holds at most 10 in flight; an 11th is dropped and its dial fails
//! with "Response from behaviour was canceled", whatever the peer behind the relay. A
//! fetch dials up to eight providers at once, each at a relayed address per transport of
//! each relay, and a popular root's provider records include fetchers long gone: measured
//! in the NAT lab, a symmetric fetcher's dial of the one live seeder was dropped behind
//! twenty stale providers' in every trial. So dials through a relay wait their turn here
//! ([`MAX_CIRCUIT_DIALS_PER_RELAY`] at once), and a dial through a relay already connected
//! asks it once, not once per transport of the relay's address.

use std::collections::{HashMap, VecDeque};

use libp2p::{multiaddr::Protocol, swarm::ConnectionId, Multiaddr, PeerId};

/// Dials through one relay in flight at once. Each may open up to three circuits (the
/// given address, and those Kademlia adds for the relay's other transports), so three stay
/// within libp2p's ten per connection.
pub const MAX_CIRCUIT_DIALS_PER_RELAY: usize = 3;
/// Dials waiting for a relay's turn, at most; past it a dial fails at once.
pub const MAX_WAITING_CIRCUIT_DIALS: usize = 256;

/// The relay an address goes through (`…/p2p/<relay>/p2p-circuit/…`), if it is relayed.
pub fn relay_of(addr: &Multiaddr) -> Option<PeerId> {
    let mut last_peer = None;
    for p in addr.iter() {
        match p {
            Protocol::P2p(peer) => last_peer = Some(peer),
            Protocol::P2pCircuit => return last_peer,
            _ => {}
        }
    }
    None
}

/// Keeps one relayed address per relay that `connected` says is connected: the relay
/// client opens the circuit over that connection whichever address names it, so the others
/// would only open the same circuit again. Direct addresses, and relayed ones through
/// relays not connected (their address decides how the relay is reached), all stay.
pub fn one_per_connected_relay(
    addrs: Vec<Multiaddr>,
    connected: impl Fn(&PeerId) -> bool,
) -> Vec<Multiaddr> {
    let mut seen = Vec::new();
    addrs
        .into_iter()
        .filter(|a| match relay_of(a) {
            Some(relay) if connected(&relay) => {
                if seen.contains(&relay) {
                    false
                } else {
                    seen.push(relay);
                    true
                }
            }
            _ => true,
        })
        .collect()
}

/// The distinct relays `addrs` go through.
pub fn relays_of(addrs: &[Multiaddr]) -> Vec<PeerId> {
    let mut relays = Vec::new();
    for relay in addrs.iter().filter_map(relay_of) {
        if !relays.contains(&relay) {
            relays.push(relay);
        }
    }
    relays
}

/// Dials through relays in flight, and those waiting for room. `T` is what a waiting dial
/// needs to be started later.
pub struct CircuitDials<T> {
    in_flight: HashMap<ConnectionId, Vec<PeerId>>,
    per_relay: HashMap<PeerId, usize>,
    waiting: VecDeque<(Vec<PeerId>, T)>,
}

impl<T> Default for CircuitDials<T> {
    fn default() -> Self {
        Self {
            in_flight: HashMap::new(),
            per_relay: HashMap::new(),
            waiting: VecDeque::new(),
        }
    }
}

impl<T> CircuitDials<T> {
    /// Whether a dial through `relays` may start now: none of them is at its limit, and no
    /// earlier dial waits for one of them (turns are taken in order per relay). A direct
    /// dial (no relay) always may.
    pub fn has_room(&self, relays: &[PeerId]) -> bool {
        relays.is_empty()
            || (self.room(relays)
                && !self
                    .waiting
                    .iter()
                    .any(|(w, _)| w.iter().any(|r| relays.contains(r))))
    }

    fn room(&self, relays: &[PeerId]) -> bool {
        relays
            .iter()
            .all(|r| self.per_relay.get(r).copied().unwrap_or(0) < MAX_CIRCUIT_DIALS_PER_RELAY)
    }

    /// Records a dial through `relays` as started (a dial through none is not tracked).
    pub fn started(&mut self, id: ConnectionId, relays: Vec<PeerId>) {
        if relays.is_empty() {
            return;
        }
        for r in &relays {
            *self.per_relay.entry(*r).or_default() += 1;
        }
        self.in_flight.insert(id, relays);
    }

    /// Records that dial `id` ended (connected or failed); a dial not tracked is ignored.
    pub fn finished(&mut self, id: ConnectionId) {
        for r in self.in_flight.remove(&id).unwrap_or_default() {
            if let std::collections::hash_map::Entry::Occupied(mut e) = self.per_relay.entry(r) {
                *e.get_mut() -= 1;
                if *e.get() == 0 {
                    e.remove();
                }
            }
        }
    }

    /// Queues a dial through `relays` until there is room; gives it back when
    /// [`MAX_WAITING_CIRCUIT_DIALS`] already wait.
    pub fn wait(&mut self, relays: Vec<PeerId>, dial: T) -> Result<(), T> {
        if self.waiting.len() >= MAX_WAITING_CIRCUIT_DIALS {
            return Err(dial);
        }
        self.waiting.push_back((relays, dial));
        Ok(())
    }

    /// The first waiting dial that has room now, with its relays (to pass to
    /// [`Self::started`] once it is dialled).
    pub fn next_ready(&mut self) -> Option<(Vec<PeerId>, T)> {
        let i = self.waiting.iter().position(|(r, _)| self.room(r))?;
        self.waiting.remove(i)
    }

    /// Dials in flight through `relay` (for tests and status).
    pub fn through(&self, relay: &PeerId) -> usize {
        self.per_relay.get(relay).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relayed(relay: PeerId, transport: &str) -> Multiaddr {
        format!("/ip4/198.18.0.2/{transport}/p2p/{relay}/p2p-circuit")
            .parse()
            .expect("address")
    }

    #[test]
    fn relay_of_names_the_relay_and_only_for_relayed_addresses() {
        let relay = PeerId::random();
        let target = PeerId::random();
        let addr: Multiaddr = format!("{}/p2p/{target}", relayed(relay, "udp/4433/quic-v1"))
            .parse()
            .expect("address");
        assert_eq!(relay_of(&addr), Some(relay));
        let direct: Multiaddr = format!("/ip4/198.18.0.2/udp/4433/quic-v1/p2p/{target}")
            .parse()
            .expect("address");
        assert_eq!(relay_of(&direct), None);
        // A circuit address without the relay's id names no relay.
        let bare: Multiaddr = "/ip4/198.18.0.2/tcp/1/p2p-circuit"
            .parse()
            .expect("address");
        assert_eq!(relay_of(&bare), None);
    }

    #[test]
    fn one_relayed_address_is_kept_per_connected_relay() {
        let (r1, r2) = (PeerId::random(), PeerId::random());
        let direct: Multiaddr = "/ip4/192.168.1.2/udp/4433/quic-v1".parse().expect("addr");
        let addrs = vec![
            relayed(r1, "udp/4433/quic-v1"),
            relayed(r1, "tcp/4433"),
            direct.clone(),
            relayed(r2, "udp/4433/quic-v1"),
            relayed(r2, "tcp/4433"),
        ];
        let kept = one_per_connected_relay(addrs, |p| *p == r1);
        assert_eq!(
            kept,
            vec![
                relayed(r1, "udp/4433/quic-v1"),
                direct,
                relayed(r2, "udp/4433/quic-v1"),
                relayed(r2, "tcp/4433"),
            ],
            "r1 is connected: one of its two; r2 is not: both ways to reach it stay"
        );
        assert_eq!(relays_of(&kept), vec![r1, r2]);
    }

    #[test]
    fn dials_beyond_a_relays_limit_wait_and_start_in_order_as_others_end() {
        let (r1, r2) = (PeerId::random(), PeerId::random());
        let mut dials = CircuitDials::default();
        for i in 0..MAX_CIRCUIT_DIALS_PER_RELAY {
            assert!(dials.has_room(&[r1]));
            dials.started(ConnectionId::new_unchecked(i), vec![r1]);
        }
        assert_eq!(dials.through(&r1), MAX_CIRCUIT_DIALS_PER_RELAY);
        assert!(!dials.has_room(&[r1]), "r1 is full");
        assert!(!dials.has_room(&[r2, r1]), "a dial also through r1 waits");
        assert!(dials.has_room(&[r2]), "r2 has room");
        dials.wait(vec![r1], "first").expect("room to wait");
        dials.wait(vec![r1, r2], "second").expect("room to wait");
        assert!(
            !dials.has_room(&[r2]),
            "turns are taken in order while dials wait"
        );
        assert!(dials.has_room(&[]), "a direct dial never waits for relays");
        assert!(
            dials.has_room(&[PeerId::random()]),
            "nor does a dial through a relay nobody waits for"
        );
        assert!(dials.next_ready().is_none(), "nothing ended yet");
        dials.finished(ConnectionId::new_unchecked(0));
        let (relays, first) = dials.next_ready().expect("room for one");
        assert_eq!((relays.clone(), first), (vec![r1], "first"));
        dials.started(ConnectionId::new_unchecked(100), relays);
        assert!(dials.next_ready().is_none(), "r1 is full again");
        // Untracked and repeated endings change nothing.
        dials.finished(ConnectionId::new_unchecked(999));
        dials.finished(ConnectionId::new_unchecked(0));
        assert_eq!(dials.through(&r1), MAX_CIRCUIT_DIALS_PER_RELAY);
        dials.finished(ConnectionId::new_unchecked(100));
        assert_eq!(dials.next_ready().map(|(_, d)| d), Some("second"));
        // A dial through no relay is not tracked.
        dials.started(ConnectionId::new_unchecked(200), Vec::new());
        assert_eq!(dials.through(&r2), 0);
    }

    #[test]
    fn waiting_is_bounded() {
        let relay = PeerId::random();
        let mut dials = CircuitDials::default();
        for i in 0..MAX_WAITING_CIRCUIT_DIALS {
            dials.wait(vec![relay], i).expect("room to wait");
        }
        assert_eq!(
            dials.wait(vec![relay], usize::MAX),
            Err(usize::MAX),
            "the dial is given back"
        );
    }
}
