//! Who can reach this node, and which addresses may be told to whom.
//!
//! An address has a *scope* ([`AddrScope`]): loopback, local (a LAN's private ranges),
//! public, or relayed (through a relay's circuit). Peers enter the routing table only with
//! addresses in the scope they were met in (a LAN peer with its LAN addresses, a peer met
//! over the internet with its public ones), and never with relayed ones: so a LAN of
//! private nodes forms a DHT of its own with default settings, while public nodes never
//! learn (nor pass on) private addresses, and DHT queries never load a relay.
//!
//! [`Reachability`] is what AutoNAT found: confirmed public addresses make a node
//! `public`; addresses confirmed only on a LAN, or probes that failed, make it `private`
//! (it then reserves relay slots). Pure: the swarm task feeds it events.

use std::collections::BTreeSet;

use libp2p::{multiaddr::Protocol, Multiaddr};
use serde::{Deserialize, Serialize};

use super::{ip_of, is_local_ip};

/// Where an address can be reached from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AddrScope {
    /// This machine only (127.0.0.0/8, ::1).
    Loopback,
    /// A local network: private, link-local, shared (CGNAT) and unique-local ranges.
    Local,
    /// Anywhere on the internet.
    Public,
    /// Through a relay's circuit (`…/p2p-circuit`), wherever the relay is.
    Relayed,
}

impl AddrScope {
    /// The scope of `addr`; `None` for an address with no IP (a DNS name).
    pub fn of(addr: &Multiaddr) -> Option<Self> {
        if is_relayed(addr) {
            return Some(Self::Relayed);
        }
        let ip = ip_of(addr)?.to_canonical();
        Some(if ip.is_loopback() {
            Self::Loopback
        } else if is_local_ip(ip) {
            Self::Local
        } else if is_global(ip) {
            Self::Public
        } else {
            // Multicast, broadcast, documentation, non-unicast IPv6: nobody's address.
            return None;
        })
    }

    /// Whether a peer met over a connection in `self` (the scope of its remote address)
    /// may enter the routing table with an address in `addr`'s scope: its own scope, and
    /// public addresses from a LAN (a dual-homed peer); from loopback only loopback (the
    /// nodes of one machine, as in tests, must not dial each other's LAN addresses);
    /// relayed addresses never (queries would run through relays).
    pub fn admits_for_routing(self, addr: AddrScope) -> bool {
        match (self, addr) {
            (_, AddrScope::Relayed) => false,
            (AddrScope::Loopback, a) => a == AddrScope::Loopback,
            (AddrScope::Local, a) => a == AddrScope::Local || a == AddrScope::Public,
            (AddrScope::Public | AddrScope::Relayed, a) => a == AddrScope::Public,
        }
    }

    /// Whether an address of a peer met over `self` is worth keeping to dial it later
    /// (the routing table's rule, plus relayed addresses, which reach it from anywhere).
    pub fn admits_for_dialing(self, addr: AddrScope) -> bool {
        addr == AddrScope::Relayed || self.admits_for_routing(addr)
    }
}

/// Whether a non-local `ip` can be a host's address on the internet: IPv4 other than
/// multicast, broadcast and documentation ranges; IPv6 global unicast (2000::/3).
fn is_global(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(ip) => {
            !(ip.is_multicast() || ip.is_broadcast() || ip.is_documentation())
        }
        std::net::IpAddr::V6(ip) => (ip.segments()[0] & 0xe000) == 0x2000,
    }
}

/// Whether `addr` goes through a relay.
pub fn is_relayed(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, Protocol::P2pCircuit))
}

/// What the node knows of its own reachability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reachability {
    /// No probe has answered yet.
    Unknown,
    /// Reachable directly from the internet at a confirmed (or configured) address.
    Public,
    /// Not reachable from the internet: behind NAT or a firewall, or only on a LAN.
    Private,
}

impl std::fmt::Display for Reachability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Unknown => "unknown",
            Self::Public => "public",
            Self::Private => "private",
        })
    }
}

/// The probes' findings so far.
#[derive(Debug, Clone, Default)]
pub struct ReachabilityState {
    /// Public addresses confirmed by a dial-back (or configured as external).
    public: BTreeSet<Multiaddr>,
    /// LAN or loopback addresses a peer on the same network dialled back.
    local: BTreeSet<Multiaddr>,
    /// Addresses a probe found unreachable.
    failed: BTreeSet<Multiaddr>,
}

/// Addresses remembered per kind, at most: a peer's observations must not grow them.
pub const MAX_TRACKED_ADDRS: usize = 16;

impl ReachabilityState {
    /// A dial-back reached `addr`.
    pub fn confirmed(&mut self, addr: Multiaddr) {
        self.failed.remove(&addr);
        let set = match AddrScope::of(&addr) {
            Some(AddrScope::Public) => &mut self.public,
            Some(AddrScope::Loopback | AddrScope::Local) => &mut self.local,
            // A relayed address is reachable by construction: not a finding.
            Some(AddrScope::Relayed) | None => return,
        };
        if set.len() < MAX_TRACKED_ADDRS {
            set.insert(addr);
        }
    }

    /// A confirmed address expired or was withdrawn.
    pub fn expired(&mut self, addr: &Multiaddr) {
        self.public.remove(addr);
        self.local.remove(addr);
    }

    /// A probe could not reach `addr`.
    pub fn unreachable(&mut self, addr: Multiaddr) {
        if !self.public.contains(&addr)
            && !self.local.contains(&addr)
            && self.failed.len() < MAX_TRACKED_ADDRS
        {
            self.failed.insert(addr);
        }
    }

    /// Public if any public address is confirmed; private if only LAN addresses are, or
    /// probes failed; unknown before any answer.
    pub fn reachability(&self) -> Reachability {
        if !self.public.is_empty() {
            Reachability::Public
        } else if !self.local.is_empty() || !self.failed.is_empty() {
            Reachability::Private
        } else {
            Reachability::Unknown
        }
    }

    /// Confirmed public addresses.
    pub fn public_addrs(&self) -> impl Iterator<Item = &Multiaddr> {
        self.public.iter()
    }

    /// Addresses confirmed only on a LAN.
    pub fn local_addrs(&self) -> impl Iterator<Item = &Multiaddr> {
        self.local.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Multiaddr {
        s.parse().expect("addr")
    }

    #[test]
    fn scopes_of_addresses() {
        let scope = |s: &str| AddrScope::of(&addr(s));
        assert_eq!(
            scope("/ip4/127.0.0.1/udp/1/quic-v1"),
            Some(AddrScope::Loopback)
        );
        assert_eq!(scope("/ip6/::1/udp/1/quic-v1"), Some(AddrScope::Loopback));
        assert_eq!(scope("/ip4/10.0.0.2/udp/1/quic-v1"), Some(AddrScope::Local));
        assert_eq!(
            scope("/ip4/100.64.1.1/udp/1/quic-v1"),
            Some(AddrScope::Local)
        );
        assert_eq!(scope("/ip6/fd00::1/udp/1/quic-v1"), Some(AddrScope::Local));
        assert_eq!(scope("/ip4/8.8.8.8/udp/1/quic-v1"), Some(AddrScope::Public));
        let relay = "/ip4/8.8.8.8/udp/1/quic-v1/p2p/12D3KooWLRPJAA5o6ADKfzEXu2Mxv1qsPAnvTCtkJGEJ6S8CuXAH/p2p-circuit";
        assert_eq!(scope(relay), Some(AddrScope::Relayed));
        assert_eq!(scope("/dns4/example.org/udp/1/quic-v1"), None);
        for nobody in [
            "/ip4/224.0.0.1/udp/1/quic-v1",
            "/ip4/255.255.255.255/udp/1/quic-v1",
            "/ip4/192.0.2.1/udp/1/quic-v1",
            "/ip6/ff02::1/udp/1/quic-v1",
        ] {
            assert_eq!(scope(nobody), None, "{nobody}");
        }
        assert_eq!(
            scope("/ip6/2001:4860::1/udp/1/quic-v1"),
            Some(AddrScope::Public)
        );
    }

    #[test]
    fn public_peers_never_take_private_addresses_into_the_routing_table() {
        use AddrScope::*;
        assert!(Public.admits_for_routing(Public));
        for other in [Loopback, Local, Relayed] {
            assert!(!Public.admits_for_routing(other), "{other:?}");
        }
        assert!(Local.admits_for_routing(Local) && Local.admits_for_routing(Public));
        assert!(!Local.admits_for_routing(Loopback));
        assert!(Loopback.admits_for_routing(Loopback) && !Loopback.admits_for_routing(Local));
        for met in [Loopback, Local, Public, Relayed] {
            assert!(!met.admits_for_routing(Relayed), "{met:?}");
            assert!(met.admits_for_dialing(Relayed), "{met:?}");
        }
        assert!(!Public.admits_for_dialing(Local));
    }

    #[test]
    fn reachability_follows_the_probes() {
        let mut state = ReachabilityState::default();
        assert_eq!(state.reachability(), Reachability::Unknown);
        state.unreachable(addr("/ip4/8.8.8.8/udp/1/quic-v1"));
        assert_eq!(state.reachability(), Reachability::Private);
        state.confirmed(addr("/ip4/8.8.8.8/udp/1/quic-v1"));
        assert_eq!(state.reachability(), Reachability::Public);
        state.expired(&addr("/ip4/8.8.8.8/udp/1/quic-v1"));
        assert_eq!(state.reachability(), Reachability::Unknown);
        state.confirmed(addr("/ip4/192.168.1.5/udp/1/quic-v1"));
        assert_eq!(
            state.reachability(),
            Reachability::Private,
            "a LAN address only"
        );
        assert_eq!(state.local_addrs().count(), 1);
        for i in 0..100u16 {
            state.unreachable(addr(&format!("/ip4/8.8.8.8/udp/{i}/quic-v1")));
        }
        assert!(state.failed.len() <= MAX_TRACKED_ADDRS, "bounded");
    }
}
