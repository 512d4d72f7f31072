//! Bounds on the host's connections: how many in all, how many dialled in by strangers, how
//! many per peer, per remote IP, and how many handshakes at once.
//!
//! A PeerId costs nothing to mint and a QUIC handshake little to start, so without these one
//! machine could open connections until the node ran out of memory. libp2p's own
//! `connection_limits` (0.7) has no per-IP limit, and it keeps an entry for every peer that
//! ever connected (its per-peer map is never pruned): a map anyone grows by minting ids. This
//! behaviour does all of it with maps no larger than the connections they count.
//!
//! Refusals happen in the swarm, before any protocol sees the connection: a refused inbound
//! connection is closed (at the pending stage when the IP is already full, so it costs no
//! handshake), a refused dial fails with the reason (`connection limit reached: ...`).

use std::{
    collections::{HashMap, HashSet, VecDeque},
    convert::Infallible,
    net::{IpAddr, Ipv4Addr},
    task::{Context, Poll, Waker},
};

use libp2p::{
    core::{transport::PortUse, ConnectedPoint, Endpoint},
    swarm::{
        behaviour::ConnectionEstablished, dummy, CloseConnection, ConnectionClosed,
        ConnectionDenied, ConnectionId, DialFailure, FromSwarm, ListenFailure, NetworkBehaviour,
        THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
    },
    Multiaddr, PeerId,
};

use super::{ip_of, is_local_ip};

/// Established connections, both directions: 1,024. A mirror serving a class or a cluster
/// talks to a few hundred peers at once (a full routing table is a few hundred peers, each
/// fetching client one more), so this leaves it room while bounding the per-connection
/// state (QUIC, the protocol handlers) a crowd of strangers can make it keep.
pub const MAX_ESTABLISHED_CONNECTIONS: usize = 1024;
/// Established connections other peers dialled: 768. The other 256 of
/// [`MAX_ESTABLISHED_CONNECTIONS`] are kept for the node's own dials (lookups, announcements,
/// fetches), so strangers dialling in cannot starve the node's own work.
pub const MAX_ESTABLISHED_INCOMING: usize = 768;
// Some connections are always left for the node's own dials.
const _: () = assert!(MAX_ESTABLISHED_INCOMING < MAX_ESTABLISHED_CONNECTIONS);

/// Connections to one peer: 4. Commons needs one per peer (QUIC multiplexes every stream);
/// two appear when both sides dial at once, and as many again while a pair being replaced
/// is still closing. More buys a peer nothing but this node's memory.
///
/// A new connection beyond it is not refused: the peer's oldest is closed instead. A peer
/// that comes back after a crash (a `commons get` killed and run again, with the same
/// identity) opens a new connection while its dead ones linger here until their idle
/// timeout; refusing the new one would shut it out for that long, keeping the oldest
/// would keep the dead ones. A peer that churns connections only replaces its own.
pub const MAX_CONNECTIONS_PER_PEER: usize = 4;
/// Connections from one IPv4 address or one IPv6 /56 ([`IPV6_GROUP_PREFIX`]): 16. Minting
/// PeerIds is free, addresses are not: this is what stops one machine from taking all of
/// [`MAX_ESTABLISHED_INCOMING`]. go-libp2p allows 8 per address; 16 leaves room for a
/// campus or carrier NAT with several Commons users behind one address. Only connections
/// dialled in are refused (the node's own dials are its choice); loopback, private,
/// link-local and shared (CGNAT) addresses are exempt by default (see
/// [`crate::discovery::DiscoveryConfig::exempt_local_addresses`]): on a LAN, in a lab or
/// behind a port-forwarding gateway many peers share one such address by nature, and tests
/// and benchmarks start dozens of nodes on 127.0.0.1.
pub const MAX_CONNECTIONS_PER_IP: usize = 16;
/// IPv6 addresses are counted per /56: a site or home line gets a /56 or /48, a single host
/// at least a /64, so counting single IPv6 addresses would bound nothing.
pub const IPV6_GROUP_PREFIX: u8 = 56;
/// Inbound QUIC handshakes in progress at once: 128. A handshake costs a TLS key exchange; a
/// flood of half-open handshakes is refused beyond this while established peers are served.
pub const MAX_PENDING_INCOMING: usize = 128;
/// The node's own dials in progress at once: 128. Kademlia walks dial 3 peers at a time
/// each, the publisher runs 16 announcements, a fetch dials its providers: well under this.
/// It bounds what a peer can make this node dial (provider records and walk answers carry
/// addresses).
pub const MAX_PENDING_OUTGOING: usize = 128;

/// The limits, defaults from the constants above; tests lower them to exceed them cheaply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// [`MAX_ESTABLISHED_CONNECTIONS`].
    pub max_established: usize,
    /// [`MAX_ESTABLISHED_INCOMING`].
    pub max_established_incoming: usize,
    /// [`MAX_CONNECTIONS_PER_PEER`].
    pub max_per_peer: usize,
    /// [`MAX_CONNECTIONS_PER_IP`].
    pub max_per_ip: usize,
    /// [`MAX_PENDING_INCOMING`].
    pub max_pending_incoming: usize,
    /// [`MAX_PENDING_OUTGOING`].
    pub max_pending_outgoing: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_established: MAX_ESTABLISHED_CONNECTIONS,
            max_established_incoming: MAX_ESTABLISHED_INCOMING,
            max_per_peer: MAX_CONNECTIONS_PER_PEER,
            max_per_ip: MAX_CONNECTIONS_PER_IP,
            max_pending_incoming: MAX_PENDING_INCOMING,
            max_pending_outgoing: MAX_PENDING_OUTGOING,
        }
    }
}

/// Why a connection was refused; the swarm carries it inside its `ConnectionDenied`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("connection limit reached: at most {limit} {what}")]
pub struct LimitReached {
    /// The limit.
    pub limit: usize,
    /// What it counts, e.g. "connections per peer".
    pub what: &'static str,
}

/// The unit the per-IP limit counts: one IPv4 address, or one IPv6 /56.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum IpGroup {
    V4(Ipv4Addr),
    V6([u8; IPV6_GROUP_PREFIX as usize / 8]),
}

impl IpGroup {
    /// The group of `ip` (an IPv4-mapped IPv6 address counts as its IPv4 address).
    fn of(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Self::V4(v4),
            IpAddr::V6(v6) => {
                const LEN: usize = IPV6_GROUP_PREFIX as usize / 8;
                let mut prefix = [0; LEN];
                prefix.copy_from_slice(&v6.octets()[..LEN]);
                Self::V6(prefix)
            }
        }
    }
}

/// One established connection, as counted.
#[derive(Debug, Clone, Copy)]
struct Counted {
    peer: PeerId,
    incoming: bool,
    /// `None` for exempt addresses and addresses without an IP.
    group: Option<IpGroup>,
}

/// The behaviour enforcing [`ConnectionLimits`]. Every map holds only live connections (at
/// most `max_established`, `max_pending_incoming`, `max_pending_outgoing` entries), and a
/// count that falls to zero is removed.
#[derive(Debug)]
pub struct ConnectionBounds {
    limits: ConnectionLimits,
    exempt_local: bool,
    pending_incoming: HashSet<ConnectionId>,
    pending_outgoing: HashSet<ConnectionId>,
    established: HashMap<ConnectionId, Counted>,
    incoming: usize,
    per_peer: HashMap<PeerId, usize>,
    per_ip: HashMap<IpGroup, usize>,
    /// Connections being closed to make room for a newer one of the same peer (at most one
    /// per connection admitted beyond [`ConnectionLimits::max_per_peer`]).
    closing: HashSet<ConnectionId>,
    /// Closes to hand to the swarm.
    to_close: VecDeque<(PeerId, ConnectionId)>,
    waker: Option<Waker>,
}

fn check(count: usize, limit: usize, what: &'static str) -> Result<(), ConnectionDenied> {
    if count >= limit {
        tracing::debug!(limit, what, "refused a connection");
        return Err(ConnectionDenied::new(LimitReached { limit, what }));
    }
    Ok(())
}

/// Adds one to a count.
fn up<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: K) {
    *map.entry(key).or_default() += 1;
}

/// Takes one from a count, forgetting it at zero.
fn down<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: K) {
    if let std::collections::hash_map::Entry::Occupied(mut e) = map.entry(key) {
        *e.get_mut() -= 1;
        if *e.get() == 0 {
            e.remove();
        }
    }
}

impl ConnectionBounds {
    /// Enforces `limits`; with `exempt_local`, loopback, private, link-local and shared
    /// addresses are not held to the per-IP limit.
    pub fn new(limits: ConnectionLimits, exempt_local: bool) -> Self {
        Self {
            limits,
            exempt_local,
            pending_incoming: HashSet::new(),
            pending_outgoing: HashSet::new(),
            established: HashMap::new(),
            incoming: 0,
            per_peer: HashMap::new(),
            per_ip: HashMap::new(),
            closing: HashSet::new(),
            to_close: VecDeque::new(),
            waker: None,
        }
    }

    /// Established connections counted.
    pub fn established(&self) -> usize {
        self.established.len()
    }

    /// The group the per-IP limit counts `addr` in, if it is held to it.
    fn group_of(&self, addr: &Multiaddr) -> Option<IpGroup> {
        let ip = ip_of(addr)?;
        if self.exempt_local && is_local_ip(ip) {
            return None;
        }
        Some(IpGroup::of(ip))
    }

    fn check_ip(&self, remote: &Multiaddr) -> Result<Option<IpGroup>, ConnectionDenied> {
        let group = self.group_of(remote);
        if let Some(g) = group {
            let count = self.per_ip.get(&g).copied().unwrap_or(0);
            check(count, self.limits.max_per_ip, "connections per IP address")?;
        }
        Ok(group)
    }

    /// Admits one more established connection of `peer`, closing its oldest one when it
    /// has [`ConnectionLimits::max_per_peer`] already (see [`MAX_CONNECTIONS_PER_PEER`]).
    /// Connections still closing count too, up to twice the limit: then it is refused.
    fn check_established(&mut self, peer: &PeerId) -> Result<(), ConnectionDenied> {
        check(
            self.established.len(),
            self.limits.max_established,
            "established connections",
        )?;
        let count = self.per_peer.get(peer).copied().unwrap_or(0);
        check(
            count,
            2 * self.limits.max_per_peer,
            "connections per peer (with those closing)",
        )?;
        let live = self
            .established
            .iter()
            .filter(|(id, c)| c.peer == *peer && !self.closing.contains(id));
        if live.clone().count() >= self.limits.max_per_peer {
            // Connection ids grow: the smallest is the oldest.
            if let Some(oldest) = live.map(|(id, _)| *id).min() {
                tracing::debug!(%peer, "closing a peer's oldest connection for its new one");
                self.closing.insert(oldest);
                self.to_close.push_back((*peer, oldest));
                if let Some(w) = self.waker.take() {
                    w.wake();
                }
            }
        }
        Ok(())
    }
}

impl NetworkBehaviour for ConnectionBounds {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        id: ConnectionId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        check(
            self.pending_incoming.len(),
            self.limits.max_pending_incoming,
            "pending incoming connections",
        )?;
        self.check_ip(remote)?;
        self.pending_incoming.insert(id);
        Ok(())
    }

    fn handle_established_inbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.pending_incoming.remove(&id);
        check(
            self.incoming,
            self.limits.max_established_incoming,
            "established incoming connections",
        )?;
        self.check_established(&peer)?;
        self.check_ip(remote)?;
        Ok(dummy::ConnectionHandler)
    }

    fn handle_pending_outbound_connection(
        &mut self,
        id: ConnectionId,
        _peer: Option<PeerId>,
        _addrs: &[Multiaddr],
        _role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        check(
            self.pending_outgoing.len(),
            self.limits.max_pending_outgoing,
            "pending outgoing connections",
        )?;
        self.pending_outgoing.insert(id);
        Ok(Vec::new())
    }

    fn handle_established_outbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        _addr: &Multiaddr,
        _role: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.pending_outgoing.remove(&id);
        self.check_established(&peer)?;
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionEstablished(ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            }) => {
                let incoming = matches!(endpoint, ConnectedPoint::Listener { .. });
                let group = self.group_of(endpoint.get_remote_address());
                let counted = Counted {
                    peer: peer_id,
                    incoming,
                    group,
                };
                if self.established.insert(connection_id, counted).is_none() {
                    self.incoming += usize::from(incoming);
                    up(&mut self.per_peer, peer_id);
                    if let Some(g) = group {
                        up(&mut self.per_ip, g);
                    }
                }
            }
            FromSwarm::ConnectionClosed(ConnectionClosed { connection_id, .. }) => {
                self.closing.remove(&connection_id);
                if let Some(c) = self.established.remove(&connection_id) {
                    self.incoming -= usize::from(c.incoming);
                    down(&mut self.per_peer, c.peer);
                    if let Some(g) = c.group {
                        down(&mut self.per_ip, g);
                    }
                }
            }
            FromSwarm::DialFailure(DialFailure { connection_id, .. }) => {
                self.pending_outgoing.remove(&connection_id);
            }
            FromSwarm::ListenFailure(ListenFailure { connection_id, .. }) => {
                self.pending_incoming.remove(&connection_id);
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _peer: PeerId,
        _id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Infallible, THandlerInEvent<Self>>> {
        if let Some((peer_id, id)) = self.to_close.pop_front() {
            return Poll::Ready(ToSwarm::CloseConnection {
                peer_id,
                connection: CloseConnection::One(id),
            });
        }
        self.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(ip: &str) -> Multiaddr {
        format!("/ip4/{ip}/udp/4433/quic-v1")
            .parse()
            .or_else(|_| format!("/ip6/{ip}/udp/4433/quic-v1").parse())
            .expect("addr")
    }

    /// Runs an inbound connection through both stages and, if admitted, reports it
    /// established, as the swarm does.
    fn dial_in(b: &mut ConnectionBounds, id: usize, peer: PeerId, ip: &str) -> bool {
        let id = ConnectionId::new_unchecked(id);
        let (local, remote) = (addr("10.0.0.1"), addr(ip));
        let admitted = b
            .handle_pending_inbound_connection(id, &local, &remote)
            .is_ok()
            && b.handle_established_inbound_connection(id, peer, &local, &remote)
                .is_ok();
        if admitted {
            let endpoint = ConnectedPoint::Listener {
                local_addr: local,
                send_back_addr: remote,
            };
            b.on_swarm_event(FromSwarm::ConnectionEstablished(ConnectionEstablished {
                peer_id: peer,
                connection_id: id,
                endpoint: &endpoint,
                failed_addresses: &[],
                other_established: 0,
            }));
        }
        admitted
    }

    fn dial_out(b: &mut ConnectionBounds, id: usize, peer: PeerId, ip: &str) -> bool {
        let id = ConnectionId::new_unchecked(id);
        let remote = addr(ip);
        let admitted = b
            .handle_pending_outbound_connection(id, Some(peer), &[], Endpoint::Dialer)
            .is_ok()
            && b.handle_established_outbound_connection(
                id,
                peer,
                &remote,
                Endpoint::Dialer,
                PortUse::Reuse,
            )
            .is_ok();
        if admitted {
            let endpoint = ConnectedPoint::Dialer {
                address: remote,
                role_override: Endpoint::Dialer,
                port_use: PortUse::Reuse,
            };
            b.on_swarm_event(FromSwarm::ConnectionEstablished(ConnectionEstablished {
                peer_id: peer,
                connection_id: id,
                endpoint: &endpoint,
                failed_addresses: &[],
                other_established: 0,
            }));
        }
        admitted
    }

    fn close(b: &mut ConnectionBounds, id: usize, peer: PeerId, ip: &str, incoming: bool) {
        let endpoint = if incoming {
            ConnectedPoint::Listener {
                local_addr: addr("10.0.0.1"),
                send_back_addr: addr(ip),
            }
        } else {
            ConnectedPoint::Dialer {
                address: addr(ip),
                role_override: Endpoint::Dialer,
                port_use: PortUse::Reuse,
            }
        };
        b.on_swarm_event(FromSwarm::ConnectionClosed(ConnectionClosed {
            peer_id: peer,
            connection_id: ConnectionId::new_unchecked(id),
            endpoint: &endpoint,
            cause: None,
            remaining_established: 0,
        }));
    }

    #[test]
    fn the_defaults_are_the_named_constants() {
        let l = ConnectionLimits::default();
        assert_eq!(l.max_established, MAX_ESTABLISHED_CONNECTIONS);
        assert_eq!(l.max_established_incoming, MAX_ESTABLISHED_INCOMING);
        assert_eq!(l.max_per_peer, MAX_CONNECTIONS_PER_PEER);
        assert_eq!(l.max_per_ip, MAX_CONNECTIONS_PER_IP);
        assert_eq!(l.max_pending_incoming, MAX_PENDING_INCOMING);
        assert_eq!(l.max_pending_outgoing, MAX_PENDING_OUTGOING);
    }

    /// The connections the behaviour asks the swarm to close.
    fn closes(b: &mut ConnectionBounds) -> Vec<usize> {
        let waker = libp2p::futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut closed = Vec::new();
        while let Poll::Ready(ToSwarm::CloseConnection {
            connection: CloseConnection::One(id),
            ..
        }) = b.poll(&mut cx)
        {
            closed.push(format!("{id}").parse().expect("a number"));
        }
        closed
    }

    #[test]
    fn a_peers_new_connection_beyond_the_limit_replaces_its_oldest() {
        let mut b = ConnectionBounds::new(ConnectionLimits::default(), true);
        let peer = PeerId::random();
        for id in 0..MAX_CONNECTIONS_PER_PEER {
            assert!(dial_in(&mut b, id, peer, &format!("203.0.113.{id}")));
        }
        assert!(closes(&mut b).is_empty());
        // A fifth comes in (a restarted client whose dead connections linger): the oldest
        // goes, in either direction.
        assert!(dial_in(&mut b, 100, peer, "203.0.113.200"));
        assert_eq!(closes(&mut b), vec![0]);
        assert!(dial_out(&mut b, 101, peer, "203.0.113.201"));
        assert_eq!(closes(&mut b), vec![1]);
        // The swarm closes them.
        close(&mut b, 0, peer, "203.0.113.0", true);
        close(&mut b, 1, peer, "203.0.113.1", true);
        assert_eq!(b.per_peer.get(&peer), Some(&MAX_CONNECTIONS_PER_PEER));
        // Connections still closing count, up to twice the limit: a peer opening faster
        // than its old ones close is refused.
        for id in 0..MAX_CONNECTIONS_PER_PEER {
            assert!(dial_in(&mut b, 200 + id, peer, "203.0.113.9"));
        }
        assert_eq!(closes(&mut b).len(), MAX_CONNECTIONS_PER_PEER);
        assert!(!dial_in(&mut b, 300, peer, "203.0.113.9"), "refused");
        assert!(!dial_out(&mut b, 301, peer, "203.0.113.9"), "refused");
        assert!(dial_in(&mut b, 302, PeerId::random(), "203.0.113.9"));
    }

    #[test]
    fn one_address_gets_at_most_max_connections_per_ip() {
        let mut b = ConnectionBounds::new(ConnectionLimits::default(), true);
        for id in 0..MAX_CONNECTIONS_PER_IP {
            assert!(dial_in(&mut b, id, PeerId::random(), "198.51.100.7"));
        }
        let stranger = PeerId::random();
        let (local, remote) = (addr("10.0.0.1"), addr("198.51.100.7"));
        let refused = b
            .handle_pending_inbound_connection(ConnectionId::new_unchecked(99), &local, &remote)
            .expect_err("refused before the handshake");
        assert_eq!(
            refused.downcast_ref::<LimitReached>().map(|l| l.limit),
            Some(MAX_CONNECTIONS_PER_IP)
        );
        assert!(!dial_in(&mut b, 100, stranger, "198.51.100.7"));
        assert!(
            dial_in(&mut b, 101, stranger, "198.51.100.8"),
            "next address"
        );
        // The node's own dials to that address are its choice.
        assert!(dial_out(&mut b, 102, PeerId::random(), "198.51.100.7"));
        // IPv6 counts per /56; an IPv4-mapped address as its IPv4 address.
        for id in 0..MAX_CONNECTIONS_PER_IP {
            let ip = format!("2001:db8:0:{:x}::{id:x}", id % 256);
            assert!(dial_in(&mut b, 200 + id, PeerId::random(), &ip));
        }
        assert!(!dial_in(&mut b, 300, stranger, "2001:db8:0:ff::1"));
        assert!(
            dial_in(&mut b, 301, stranger, "2001:db8:0:100::1"),
            "next /56"
        );
        assert!(!dial_in(
            &mut b,
            302,
            PeerId::random(),
            "::ffff:198.51.100.7"
        ));
    }

    #[test]
    fn local_addresses_are_exempt_from_the_per_ip_limit_unless_told_otherwise() {
        for (exempt, admitted) in [(true, MAX_CONNECTIONS_PER_IP + 4), (false, 16)] {
            let mut b = ConnectionBounds::new(ConnectionLimits::default(), exempt);
            let n = (0..MAX_CONNECTIONS_PER_IP + 4)
                .filter(|id| dial_in(&mut b, *id, PeerId::random(), "127.0.0.1"))
                .count();
            assert_eq!(n, admitted, "exempt: {exempt}");
            let n = (100..100 + MAX_CONNECTIONS_PER_IP + 4)
                .filter(|id| dial_in(&mut b, *id, PeerId::random(), "192.168.1.9"))
                .count();
            assert_eq!(n, admitted, "exempt: {exempt}");
        }
    }

    #[test]
    fn incoming_connections_leave_room_for_the_nodes_own_dials() {
        let limits = ConnectionLimits {
            max_established: 6,
            max_established_incoming: 4,
            ..ConnectionLimits::default()
        };
        let mut b = ConnectionBounds::new(limits, true);
        for id in 0..4 {
            assert!(dial_in(&mut b, id, PeerId::random(), "203.0.113.1"));
        }
        assert!(
            !dial_in(&mut b, 10, PeerId::random(), "203.0.113.2"),
            "incoming full"
        );
        assert!(dial_out(&mut b, 11, PeerId::random(), "203.0.113.3"));
        assert!(dial_out(&mut b, 12, PeerId::random(), "203.0.113.4"));
        assert!(
            !dial_out(&mut b, 13, PeerId::random(), "203.0.113.5"),
            "all full"
        );
        assert_eq!(b.established(), 6);
        close(&mut b, 11, PeerId::random(), "203.0.113.3", false);
        assert!(
            !dial_in(&mut b, 14, PeerId::random(), "203.0.113.6"),
            "still 4 in"
        );
        assert!(dial_out(&mut b, 15, PeerId::random(), "203.0.113.7"));
    }

    #[test]
    fn handshakes_in_progress_are_bounded_and_released() {
        let limits = ConnectionLimits {
            max_pending_incoming: 2,
            max_pending_outgoing: 2,
            ..ConnectionLimits::default()
        };
        let mut b = ConnectionBounds::new(limits, true);
        let (local, remote) = (addr("10.0.0.1"), addr("203.0.113.9"));
        let id = ConnectionId::new_unchecked;
        for i in 0..2 {
            b.handle_pending_inbound_connection(id(i), &local, &remote)
                .expect("room");
            b.handle_pending_outbound_connection(id(10 + i), None, &[], Endpoint::Dialer)
                .expect("room");
        }
        assert!(b
            .handle_pending_inbound_connection(id(2), &local, &remote)
            .is_err());
        assert!(b
            .handle_pending_outbound_connection(id(12), None, &[], Endpoint::Dialer)
            .is_err());
        // A failed handshake and a failed dial free their places.
        let error = libp2p::swarm::ListenError::Aborted;
        b.on_swarm_event(FromSwarm::ListenFailure(ListenFailure {
            local_addr: &local,
            send_back_addr: &remote,
            error: &error,
            connection_id: id(0),
            peer_id: None,
        }));
        let error = libp2p::swarm::DialError::Aborted;
        b.on_swarm_event(FromSwarm::DialFailure(DialFailure {
            peer_id: None,
            error: &error,
            connection_id: id(10),
        }));
        b.handle_pending_inbound_connection(id(3), &local, &remote)
            .expect("freed");
        b.handle_pending_outbound_connection(id(13), None, &[], Endpoint::Dialer)
            .expect("freed");
    }

    #[test]
    fn counts_fall_to_nothing_when_connections_close() {
        let mut b = ConnectionBounds::new(ConnectionLimits::default(), false);
        let peers: Vec<PeerId> = (0..50).map(|_| PeerId::random()).collect();
        for (i, p) in peers.iter().enumerate() {
            assert!(dial_in(&mut b, i, *p, &format!("203.0.113.{i}")));
        }
        for (i, p) in peers.iter().enumerate() {
            close(&mut b, i, *p, &format!("203.0.113.{i}"), true);
        }
        assert!(b.established.is_empty() && b.per_peer.is_empty() && b.per_ip.is_empty());
        assert_eq!(b.incoming, 0);
    }
}
