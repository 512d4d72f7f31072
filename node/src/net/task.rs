//! The swarm task: owns the libp2p swarm, turns its events into answers to [`Command`]s.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    time::{Duration, Instant},
};

use libp2p::{
    autonat,
    core::{transport::ListenerId, Endpoint},
    dcutr,
    futures::StreamExt,
    identify,
    kad::{self, KBucketKey},
    mdns,
    multiaddr::Protocol,
    relay,
    swarm::{
        dial_opts::{DialOpts, PeerCondition},
        ConnectionId, DialError, NetworkBehaviour, SwarmEvent,
    },
    Multiaddr, PeerId, Swarm,
};
use tokio::sync::{mpsc, oneshot, watch};

use super::{
    behaviour::{kad_protocol, Behaviour, BehaviourEvent, RelayHandles},
    circuit_dials::{self, CircuitDials},
    ip_of,
    path_bytes::PathMeter,
    reachability::{is_relayed, AddrScope, Reachability, ReachabilityState},
    relay::{circuit_listen_addr, CircuitLimits, NatConfig, ReservationGate},
    strip_peer, Command, FoundNames, FoundProviders, NatCounters, NatStatus, NetworkStatus,
    PeerAddrs, PunchTimes, QueryCost,
};
use crate::discovery::{
    diversity::{AddressRange, RangeCounts},
    persist::{NetState, SavedPeer, MAX_SAVED_PEERS},
    DhtMode, DiscoveryConfig,
};

/// How often expired provider records are dropped from memory.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);
/// How often relay reservations are checked (lost ones replaced, a private node's slots
/// filled).
const RELAY_CHECK_INTERVAL: Duration = Duration::from_secs(15);
/// Relays remembered as candidates for a reservation, at most.
pub const MAX_RELAY_CANDIDATES: usize = 32;
/// How long a relay that refused or lost a reservation is not asked again (a relay refuses
/// until AutoNAT has confirmed it public, which takes seconds after it starts).
const RELAY_RETRY_AFTER: Duration = Duration::from_secs(60);
/// Peers whose addresses are remembered outside the routing table, at most.
const MAX_ADDRESS_BOOK: usize = 10_000;
/// Addresses remembered per peer.
const MAX_ADDRS_PER_PEER: usize = 8;
/// Peers remembered as met this session (and as reached over loopback), at most: peer ids
/// cost nothing to mint, so a stranger connecting with a new one each time must not grow
/// the sets without end. Past it, newcomers are not remembered (only the first
/// [`MAX_SAVED_PEERS`] are ever saved anyway).
pub const MAX_SESSION_PEERS: usize = 10_000;

/// A caller waiting for a connection.
enum DialReply {
    Peer(oneshot::Sender<Result<(), String>>),
    Addr(oneshot::Sender<Result<PeerId, String>>),
}

impl DialReply {
    /// Whether the caller stopped waiting.
    fn is_closed(&self) -> bool {
        match self {
            DialReply::Peer(tx) => tx.is_closed(),
            DialReply::Addr(tx) => tx.is_closed(),
        }
    }

    fn send(self, result: Result<PeerId, String>) {
        match self {
            DialReply::Peer(tx) => {
                let _ = tx.send(result.map(|_| ()));
            }
            DialReply::Addr(tx) => {
                let _ = tx.send(result);
            }
        }
    }
}

/// A caller waiting for a DHT query.
enum PendingQuery {
    Providers {
        seen: HashSet<PeerId>,
        found: mpsc::Sender<FoundProviders>,
    },
    Announce(oneshot::Sender<Result<QueryCost, String>>),
    Names {
        want: usize,
        valid: fn(&[u8], &[u8]) -> bool,
        counted: usize,
        found: Vec<(Option<PeerId>, Vec<u8>)>,
        checked: Vec<bool>,
        reply: Option<oneshot::Sender<FoundNames>>,
    },
    /// A write-back nobody waits for.
    Quiet,
}

/// A relay reservation this node holds or is asking for.
struct Reservation {
    relay: PeerId,
    /// The relayed addresses it gave this node.
    addrs: Vec<Multiaddr>,
}

struct Task {
    swarm: Swarm<Behaviour>,
    mode: DhtMode,
    nat: NatConfig,
    /// Whether the relay service may open (`[relay] enabled`: `None` is auto).
    relay_enabled: Option<bool>,
    /// Opens the relay service to reservations.
    relay_gate: ReservationGate,
    /// The relay's limits on new circuits, told how each admitted request ended.
    relay_circuits: CircuitLimits,
    /// Bytes over direct and relayed connections.
    path_meter: PathMeter,
    /// When punches moved peers to direct connections (shared with the [`super::Host`]).
    punches: PunchTimes,
    /// Relays this node holds (or asks for) a slot on, by listener.
    reservations: HashMap<ListenerId, Reservation>,
    /// Public peers that offer to relay, with an address to reach them at.
    relay_candidates: HashMap<PeerId, Multiaddr>,
    /// Relays that refused or dropped us, and when: not asked again for a while.
    relay_failures: HashMap<PeerId, Instant>,
    reach: ReachabilityState,
    counters: NatCounters,
    /// Relayed connections to each peer, to close once a punch made a direct one.
    relayed_connections: HashMap<PeerId, Vec<ConnectionId>>,
    /// Reservations held on this relay, and circuits through it.
    relay_served: (u64, u64),
    /// QUIC listen addresses a TCP listener was opened beside (relays only).
    tcp_for: HashSet<Multiaddr>,
    dials_by_connection: HashMap<ConnectionId, Vec<DialReply>>,
    dials_by_peer: HashMap<PeerId, Vec<DialReply>>,
    /// Dials through relays, in turns ([`circuit_dials`]).
    circuit_dials: CircuitDials<(PeerId, Vec<Multiaddr>, DialReply)>,
    queries: HashMap<kad::QueryId, PendingQuery>,
    address_book: HashMap<PeerId, Vec<Multiaddr>>,
    /// The scope of the (direct) connection each peer was met over: which of its
    /// addresses are taken ([`AddrScope::admits_for_routing`]).
    met_over: HashMap<PeerId, AddrScope>,
    /// The remote address of a connection to each connected peer (the latest).
    connected: HashMap<PeerId, Multiaddr>,
    /// Peers connected to since start: only these are saved for the next start, so dead
    /// peers from earlier runs do not pile up.
    session_peers: HashSet<PeerId>,
    listen_addrs: watch::Sender<Vec<Multiaddr>>,
    /// Bumped when the advertised (external) addresses change.
    advertised: watch::Sender<u64>,
    /// Local addresses count in no range of the routing table's diversity rule.
    exempt_local: bool,
}

/// Runs the swarm until every [`super::Host`] handle is dropped.
pub(super) async fn run(
    mut swarm: Swarm<Behaviour>,
    config: DiscoveryConfig,
    ((relay_gate, relay_circuits), path_meter, punches): (RelayHandles, PathMeter, PunchTimes),
    mut commands: mpsc::Receiver<Command>,
    (listen_addrs, advertised): (watch::Sender<Vec<Multiaddr>>, watch::Sender<u64>),
) {
    let mut reach = ReachabilityState::default();
    for addr in &config.external_addrs {
        swarm.add_external_address(addr.clone());
        reach.confirmed(addr.clone());
    }
    let mut task = Task {
        swarm,
        mode: config.mode,
        nat: config.nat.clone(),
        relay_enabled: config.relay.enabled,
        relay_gate,
        relay_circuits,
        path_meter,
        punches,
        reservations: HashMap::new(),
        relay_candidates: HashMap::new(),
        relay_failures: HashMap::new(),
        reach,
        counters: NatCounters::default(),
        relayed_connections: HashMap::new(),
        relay_served: (0, 0),
        tcp_for: HashSet::new(),
        dials_by_connection: HashMap::new(),
        dials_by_peer: HashMap::new(),
        circuit_dials: CircuitDials::default(),
        queries: HashMap::new(),
        address_book: HashMap::new(),
        met_over: HashMap::new(),
        connected: HashMap::new(),
        session_peers: HashSet::new(),
        listen_addrs,
        advertised,
        exempt_local: config.exempt_local_addresses,
    };
    task.update_relay_service();
    task.check_relays();
    let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
    let mut relay_check = tokio::time::interval(RELAY_CHECK_INTERVAL);
    loop {
        tokio::select! {
            event = task.swarm.select_next_some() => task.on_event(event),
            _ = relay_check.tick() => task.check_relays(),
            command = commands.recv() => match command {
                Some(command) => task.on_command(command),
                None => break,
            },
            _ = sweep.tick() => {
                let gone = task.swarm.behaviour_mut().kad.store_mut().sweep_expired(Instant::now());
                if gone > 0 {
                    tracing::debug!(records = gone, "dropped expired provider records");
                }
            }
        }
    }
}

impl Task {
    fn on_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr {
                address,
                listener_id,
            } => {
                tracing::info!(%address, "listening");
                let scope = AddrScope::of(&address);
                let reachable = match self.mode {
                    // Through a relay this node holds a slot on: reachable by anyone.
                    _ if scope == Some(AddrScope::Relayed) => true,
                    DhtMode::Server => true,
                    // A public IP may still sit behind a firewall: AutoNAT confirms it (a
                    // peer observes it, then dials it back), unless AutoNAT is off.
                    DhtMode::Auto => scope == Some(AddrScope::Public) && !self.nat.autonat,
                    DhtMode::Client => false,
                };
                if reachable {
                    self.swarm.add_external_address(address.clone());
                }
                if let Some(r) = self.reservations.get_mut(&listener_id) {
                    r.addrs.push(address.clone());
                }
                self.listen_addrs.send_modify(|a| a.push(address));
                if self.relay_gate.is_open() {
                    self.listen_tcp();
                }
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.swarm.remove_external_address(&address);
                self.listen_addrs
                    .send_modify(|a| a.retain(|x| x != &address));
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                addresses,
                reason,
            } => {
                for address in &addresses {
                    self.swarm.remove_external_address(address);
                }
                if !addresses.is_empty() {
                    self.advertised.send_modify(|n| *n += 1);
                }
                self.listen_addrs
                    .send_modify(|a| a.retain(|x| !addresses.contains(x)));
                if let Some(r) = self.reservations.remove(&listener_id) {
                    tracing::info!(relay = %r.relay, ?reason, "relay reservation ended");
                    self.relay_failures.insert(r.relay, Instant::now());
                }
            }
            SwarmEvent::ExternalAddrConfirmed { address } => self.on_confirmed(address),
            SwarmEvent::ExternalAddrExpired { address } => {
                self.reach.expired(&address);
                self.advertised.send_modify(|n| *n += 1);
                self.update_relay_service();
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                let remote = endpoint.get_remote_address();
                if endpoint.is_relayed() {
                    self.counters.relayed_connections += 1;
                    let ids = self.relayed_connections.entry(peer_id).or_default();
                    if ids.len() < super::limits::MAX_CONNECTIONS_PER_PEER {
                        ids.push(connection_id);
                    }
                    self.connected
                        .entry(peer_id)
                        .or_insert_with(|| remote.clone());
                } else {
                    self.counters.direct_connections += 1;
                    if let Some(scope) = AddrScope::of(remote) {
                        if self.met_over.len() < MAX_SESSION_PEERS
                            || self.met_over.contains_key(&peer_id)
                        {
                            self.met_over.insert(peer_id, scope);
                        }
                    }
                    self.connected.insert(peer_id, remote.clone());
                }
                if self.session_peers.len() < MAX_SESSION_PEERS {
                    self.session_peers.insert(peer_id);
                }
                for reply in self
                    .dials_by_connection
                    .remove(&connection_id)
                    .into_iter()
                    .chain(self.dials_by_peer.remove(&peer_id))
                    .flatten()
                {
                    reply.send(Ok(peer_id));
                }
                self.dial_ended(connection_id);
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } => {
                if let Some(ids) = self.relayed_connections.get_mut(&peer_id) {
                    let was_relayed = ids.contains(&connection_id);
                    ids.retain(|id| *id != connection_id);
                    let relayed_left = ids.len();
                    if ids.is_empty() {
                        self.relayed_connections.remove(&peer_id);
                    }
                    // A relayed connection closed while a direct one stays: the peer's
                    // punch moved it (the side that punches first closes its relayed
                    // connection, cutting our streams on it before our own punch event).
                    if was_relayed && num_established as usize > relayed_left {
                        self.punches.record(peer_id, Instant::now());
                    }
                }
                if num_established == 0 {
                    self.connected.remove(&peer_id);
                    self.relayed_connections.remove(&peer_id);
                }
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id,
                error,
            } => {
                let waiting = self
                    .dials_by_connection
                    .remove(&connection_id)
                    .into_iter()
                    .chain(peer_id.and_then(|p| self.dials_by_peer.remove(&p)))
                    .flatten();
                for reply in waiting {
                    reply.send(Err(dial_error_text(&error)));
                }
                self.dial_ended(connection_id);
                // Kademlia keeps a peer whose every address failed (with its last address)
                // until its bucket fills; in a small network that means every lookup
                // waits on it again. Drop it: identify adds it back when it reappears.
                if let (Some(peer), DialError::Transport(_)) = (peer_id, &error) {
                    if !self.swarm.is_connected(&peer) {
                        self.swarm.behaviour_mut().kad.remove_peer(&peer);
                        self.session_peers.remove(&peer);
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(found))) => {
                // Any libp2p program on the LAN answers mDNS: dial, and let identify decide
                // whether it speaks Commons' DHT before it enters the routing table.
                let mut by_peer: HashMap<PeerId, Vec<Multiaddr>> = HashMap::new();
                for (peer, addr) in found {
                    by_peer.entry(peer).or_default().push(addr);
                }
                for (peer, addrs) in by_peer {
                    if !self.swarm.is_connected(&peer) {
                        let opts = DialOpts::peer_id(peer).addresses(addrs).build();
                        let _ = self.swarm.dial(opts);
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => self.on_identified(peer_id, info),
            // A peer this node dialled confirmed it speaks the DHT (Kademlia inserts none
            // itself: `BucketInserts::Manual`).
            SwarmEvent::Behaviour(BehaviourEvent::Kad(
                kad::Event::RoutablePeer { peer, address }
                | kad::Event::PendingRoutablePeer { peer, address },
            )) => self.add_dht_peer(peer, vec![address]),
            SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                id,
                result,
                stats,
                step,
            })) => self.on_query_progress(id, result, stats, step.last),
            SwarmEvent::Behaviour(BehaviourEvent::Autonat(autonat::v2::client::Event {
                tested_addr,
                server,
                result,
                ..
            })) => match result {
                // Confirmed addresses arrive as `ExternalAddrConfirmed`.
                Ok(()) => {}
                Err(e) => {
                    tracing::info!(%tested_addr, %server, "AutoNAT: not reachable: {e}");
                    self.reach.unreachable(tested_addr);
                    self.check_relays();
                }
            },
            SwarmEvent::Behaviour(BehaviourEvent::Dcutr(dcutr::Event {
                remote_peer_id,
                result,
            })) => self.on_punch(remote_peer_id, result),
            SwarmEvent::Behaviour(BehaviourEvent::Relay(event)) => self.on_relay_served(event),
            SwarmEvent::Behaviour(BehaviourEvent::RelayClient(
                relay::client::Event::ReservationReqAccepted { relay_peer_id, .. },
            )) => {
                tracing::info!(relay = %relay_peer_id, "relay reservation accepted");
            }
            _ => {}
        }
    }

    /// AutoNAT (or another behaviour) confirmed `address` reachable. A LAN address stays
    /// out of the external addresses (which go into provider records), unless the node is
    /// a configured server.
    fn on_confirmed(&mut self, address: Multiaddr) {
        tracing::info!(%address, "reachable at");
        self.reach.confirmed(address.clone());
        if self.mode == DhtMode::Auto
            && matches!(
                AddrScope::of(&address),
                Some(AddrScope::Loopback | AddrScope::Local)
            )
        {
            self.swarm.remove_external_address(&address);
        } else {
            self.advertised.send_modify(|n| *n += 1);
        }
        self.update_relay_service();
        self.check_relays();
    }

    /// Opens the relay service once the node is public (with `[relay] enabled` unset).
    fn update_relay_service(&mut self) {
        let open = match self.relay_enabled {
            Some(enabled) => enabled,
            None => {
                self.reach.reachability() == Reachability::Public
                    || (self.mode == DhtMode::Server && !self.listen_only_relayed())
            }
        };
        if open != self.relay_gate.is_open() {
            tracing::info!(open, "relay service");
            self.relay_gate.set_open(open);
            if open {
                self.listen_tcp();
            }
        }
    }

    /// A relay also listens on TCP, at the port of each QUIC listen address, so nodes at
    /// sites that block UDP can reach it (once; a port taken is only logged).
    fn listen_tcp(&mut self) {
        let listening: Vec<Multiaddr> = self.listen_addrs.borrow().clone();
        for addr in listening.iter().filter(|a| is_quic(a) && !is_relayed(a)) {
            if self.tcp_for.len() >= MAX_ADDRS_PER_PEER || !self.tcp_for.insert(addr.clone()) {
                continue;
            }
            let (Some(ip), Some(Protocol::Udp(port))) = (
                addr.iter().next(),
                addr.iter().find(|p| matches!(p, Protocol::Udp(_))),
            ) else {
                continue;
            };
            let tcp = Multiaddr::empty().with(ip).with(Protocol::Tcp(port));
            if let Err(e) = self.swarm.listen_on(tcp.clone()) {
                tracing::info!(%tcp, "no TCP listener for the relay: {e}");
            }
        }
    }

    fn listen_only_relayed(&self) -> bool {
        self.swarm
            .listeners()
            .count()
            .saturating_sub(self.reservations.len())
            == 0
    }

    /// A hole punch ended: on success the relayed connections to the peer are closed, so
    /// every stream goes over the direct one.
    fn on_punch(&mut self, peer: PeerId, result: Result<ConnectionId, dcutr::Error>) {
        match result {
            Ok(direct) => {
                self.counters.punches_succeeded += 1;
                self.punches.record(peer, Instant::now());
                tracing::info!(%peer, "hole punch made a direct connection");
                for id in self.relayed_connections.remove(&peer).unwrap_or_default() {
                    if id != direct && self.swarm.close_connection(id) {
                        self.counters.relayed_closed_after_punch += 1;
                    }
                }
            }
            Err(e) => {
                self.counters.punches_failed += 1;
                // DCUtR can report a failure although one of the simultaneous dials got
                // through (seen on a loaded machine): a direct connection is what counts.
                let direct = self
                    .connected
                    .get(&peer)
                    .is_some_and(|addr| !addr.iter().any(|p| p == Protocol::P2pCircuit));
                if direct {
                    tracing::info!(%peer, "hole punch reported failed, but a direct connection exists: {e}");
                    self.punches.record(peer, Instant::now());
                    for id in self.relayed_connections.remove(&peer).unwrap_or_default() {
                        if self.swarm.close_connection(id) {
                            self.counters.relayed_closed_after_punch += 1;
                        }
                    }
                } else {
                    tracing::info!(%peer, "hole punch failed, staying relayed: {e}");
                }
            }
        }
    }

    fn on_relay_served(&mut self, event: relay::Event) {
        let (reservations, circuits) = &mut self.relay_served;
        match event {
            relay::Event::ReservationReqAccepted { renewed: false, .. } => *reservations += 1,
            relay::Event::ReservationTimedOut { .. } | relay::Event::ReservationClosed { .. } => {
                *reservations = reservations.saturating_sub(1)
            }
            relay::Event::CircuitReqAccepted { src_peer_id, .. } => {
                *circuits += 1;
                self.relay_circuits.settle(src_peer_id, false);
            }
            // Denied by the limits themselves: nothing was charged.
            relay::Event::CircuitReqDenied {
                status: relay::StatusCode::ResourceLimitExceeded,
                ..
            } => {}
            // The destination holds no reservation (a gone provider): it carried
            // nothing, so it costs nothing.
            relay::Event::CircuitReqDenied {
                src_peer_id,
                status,
                ..
            } => self.relay_circuits.settle(
                src_peer_id,
                matches!(status, relay::StatusCode::NoReservation),
            ),
            relay::Event::CircuitClosed { .. } => *circuits = circuits.saturating_sub(1),
            _ => {}
        }
    }

    /// Keeps the relay reservations wanted: every configured relay, and, while the node is
    /// private, up to `[nat] relay_slots` found among its peers.
    fn check_relays(&mut self) {
        if self.mode == DhtMode::Client {
            return;
        }
        let now = Instant::now();
        self.relay_failures
            .retain(|_, at| now.saturating_duration_since(*at) < RELAY_RETRY_AFTER);
        let held: HashSet<PeerId> = self.reservations.values().map(|r| r.relay).collect();
        let mut wanted: Vec<Multiaddr> = Vec::new();
        for addr in &self.nat.relays {
            if let Some(Protocol::P2p(relay)) = addr.iter().last() {
                if !held.contains(&relay) && !self.relay_failures.contains_key(&relay) {
                    wanted.push(addr.clone());
                }
            }
        }
        let private = self.reach.reachability() == Reachability::Private;
        let mut free = self.nat.relay_slots.saturating_sub(held.len());
        if private {
            for (relay, addr) in &self.relay_candidates {
                if free == 0 {
                    break;
                }
                if held.contains(relay) || self.relay_failures.contains_key(relay) {
                    continue;
                }
                wanted.push(addr.clone().with(Protocol::P2p(*relay)));
                free -= 1;
            }
        }
        for addr in wanted {
            let Some(Protocol::P2p(relay)) = addr.iter().last() else {
                continue;
            };
            match self.swarm.listen_on(circuit_listen_addr(&addr)) {
                Ok(id) => {
                    tracing::info!(%addr, "asking for a relay reservation");
                    self.reservations.insert(
                        id,
                        Reservation {
                            relay,
                            addrs: Vec::new(),
                        },
                    );
                }
                Err(e) => {
                    tracing::info!(%addr, "cannot reserve on the relay: {e}");
                    self.relay_failures.insert(relay, now);
                }
            }
        }
    }

    /// Remembers a peer's listen addresses (those usable from where it was met, see
    /// [`AddrScope`]); adds DHT servers to the routing table, and public relays to the
    /// relay candidates.
    fn on_identified(&mut self, peer: PeerId, info: identify::Info) {
        // Met only through a relay: only its public and relayed addresses are of use.
        let met = self
            .met_over
            .get(&peer)
            .copied()
            .unwrap_or(AddrScope::Relayed);
        let mut addrs: Vec<Multiaddr> = info
            .listen_addrs
            .into_iter()
            .filter(|a| {
                !is_unspecified(a) && AddrScope::of(a).is_some_and(|s| met.admits_for_dialing(s))
            })
            .collect();
        // QUIC where the peer has it: TCP (with noise and yamux) is for UDP-blocked sites.
        if addrs.iter().any(is_quic) {
            addrs.retain(|a| is_quic(a) || AddrScope::of(a) == Some(AddrScope::Relayed));
        }
        addrs.truncate(MAX_ADDRS_PER_PEER);
        if addrs.is_empty() {
            return;
        }
        let routable: Vec<Multiaddr> = addrs
            .iter()
            .filter(|a| AddrScope::of(a).is_some_and(|s| met.admits_for_routing(s)))
            .cloned()
            .collect();
        if info.protocols.contains(&kad_protocol()) && !routable.is_empty() {
            self.add_dht_peer(peer, routable);
        }
        if info.protocols.contains(&relay::HOP_PROTOCOL_NAME) {
            self.note_relay_candidate(peer, &addrs);
        }
        if self.address_book.len() >= MAX_ADDRESS_BOOK && !self.address_book.contains_key(&peer) {
            if let Some(evict) = self.address_book.keys().next().copied() {
                self.address_book.remove(&evict);
            }
        }
        self.address_book.insert(peer, addrs);
    }

    /// Remembers `peer` as a relay to reserve on, at its first public address.
    fn note_relay_candidate(&mut self, peer: PeerId, addrs: &[Multiaddr]) {
        let Some(public) = addrs
            .iter()
            .find(|a| AddrScope::of(a) == Some(AddrScope::Public))
        else {
            return;
        };
        // Full: a newcomer replaces one (one that failed first), so relays met early and
        // gone since cannot keep new ones out for good.
        if self.relay_candidates.len() >= MAX_RELAY_CANDIDATES
            && !self.relay_candidates.contains_key(&peer)
        {
            let evict = self
                .relay_candidates
                .keys()
                .find(|p| self.relay_failures.contains_key(p))
                .or_else(|| self.relay_candidates.keys().next())
                .copied();
            if let Some(evict) = evict {
                self.relay_candidates.remove(&evict);
            }
        }
        self.relay_candidates.insert(peer, public.clone());
        if self.reach.reachability() == Reachability::Private
            && self.reservations.len() < self.nat.relay_slots
        {
            self.check_relays();
        }
    }

    fn on_query_progress(
        &mut self,
        id: kad::QueryId,
        result: kad::QueryResult,
        stats: kad::QueryStats,
        last: bool,
    ) {
        let local = *self.swarm.local_peer_id();
        if let (
            Some(PendingQuery::Providers { seen, .. }),
            kad::QueryResult::GetProviders(Ok(kad::GetProvidersOk::FoundProviders {
                providers,
                ..
            })),
        ) = (self.queries.get_mut(&id), &result)
        {
            let new: Vec<PeerId> = providers
                .iter()
                .filter(|p| **p != local && seen.insert(**p))
                .copied()
                .collect();
            let batch: Vec<PeerAddrs> = new
                .into_iter()
                .map(|peer| PeerAddrs {
                    peer,
                    addrs: self.addresses_of(&peer),
                })
                .collect();
            let gone = match self.queries.get(&id) {
                Some(PendingQuery::Providers { found, .. }) => {
                    !batch.is_empty()
                        && matches!(
                            found.try_send(FoundProviders::Some(batch)),
                            Err(mpsc::error::TrySendError::Closed(_))
                        )
                }
                _ => false,
            };
            if gone && !last {
                // Nobody waits for more: end the walk.
                if let Some(mut query) = self.swarm.behaviour_mut().kad.query_mut(&id) {
                    query.finish();
                }
            }
        }
        if let (
            Some(PendingQuery::Names {
                want,
                valid,
                counted,
                found,
                checked,
                reply,
            }),
            kad::QueryResult::GetRecord(Ok(kad::GetRecordOk::FoundRecord(peer_record))),
        ) = (self.queries.get_mut(&id), &result)
        {
            let record = &peer_record.record;
            let ok = valid(&record.value, record.key.as_ref());
            *counted += usize::from(ok);
            checked.push(ok);
            found.push((peer_record.peer, record.value.clone()));
            if *counted >= *want && !last {
                if let Some(reply) = reply.take() {
                    let _ = reply.send(FoundNames {
                        records: std::mem::take(found),
                        valid: std::mem::take(checked),
                        cost: QueryCost {
                            requests: stats.num_requests(),
                            successes: stats.num_successes(),
                            millis: stats.duration().unwrap_or_default().as_millis() as u64,
                        },
                    });
                }
                if let Some(mut query) = self.swarm.behaviour_mut().kad.query_mut(&id) {
                    query.finish();
                }
            }
        }
        if !last {
            return;
        }
        let cost = QueryCost {
            requests: stats.num_requests(),
            successes: stats.num_successes(),
            millis: stats.duration().unwrap_or_default().as_millis() as u64,
        };
        match self.queries.remove(&id) {
            Some(PendingQuery::Providers { found, .. }) => {
                let _ = found.try_send(FoundProviders::Done(cost));
            }
            Some(PendingQuery::Announce(reply)) => {
                let _ = reply.send(match result {
                    kad::QueryResult::StartProviding(Err(e)) => Err(e.to_string()),
                    kad::QueryResult::PutRecord(Err(e)) => Err(e.to_string()),
                    _ => Ok(cost),
                });
            }
            Some(PendingQuery::Names {
                found,
                checked,
                reply,
                ..
            }) => {
                if let Some(reply) = reply {
                    let _ = reply.send(FoundNames {
                        records: found,
                        valid: checked,
                        cost,
                    });
                }
            }
            Some(PendingQuery::Quiet) | None => {}
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Dial { peer, addrs, reply } => self.dial(peer, addrs, DialReply::Peer(reply)),
            Command::DialAddr { addr, reply } => {
                let mut bare = addr.clone();
                match bare.pop() {
                    Some(Protocol::P2p(peer)) => {
                        self.dial(peer, vec![bare], DialReply::Addr(reply))
                    }
                    _ => {
                        let opts = DialOpts::unknown_peer_id().address(addr).build();
                        let id = opts.connection_id();
                        match self.swarm.dial(opts) {
                            Ok(()) => self
                                .dials_by_connection
                                .entry(id)
                                .or_default()
                                .push(DialReply::Addr(reply)),
                            Err(e) => {
                                let _ = reply.send(Err(dial_error_text(&e)));
                            }
                        }
                    }
                }
            }
            // Answered once the walk has *started*: it fills the routing table in the
            // background. Waiting for its end made every one-shot `get` wait on each dead
            // peer the walk dials (5 s per dial, once per refreshed bucket: 10-35 s after
            // one seeder died), while the provider lookup needs only one live peer.
            Command::Bootstrap { reply } => {
                let started = self.swarm.behaviour_mut().kad.bootstrap();
                let _ = reply.send(started.map(|_| ()).map_err(|kad::NoKnownPeers()| ()));
            }
            Command::FindProviders { hash, found } => {
                let id = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .get_providers(kad::RecordKey::new(hash.as_bytes()));
                self.queries.insert(
                    id,
                    PendingQuery::Providers {
                        seen: HashSet::new(),
                        found,
                    },
                );
            }
            Command::Announce { hash, reply } => {
                let key = kad::RecordKey::new(hash.as_bytes());
                match self.swarm.behaviour_mut().kad.start_providing(key) {
                    Ok(id) => {
                        self.queries.insert(id, PendingQuery::Announce(reply));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.to_string()));
                    }
                }
            }
            Command::PutName { key, value, reply } => {
                let record = kad::Record::new(kad::RecordKey::new(key.as_bytes()), value);
                match self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .put_record(record, kad::Quorum::One)
                {
                    Ok(id) => {
                        self.queries.insert(id, PendingQuery::Announce(reply));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(format!("this node refused the record: {e:?}")));
                    }
                }
            }
            Command::PutNameTo { key, value, peers } => {
                let record = kad::Record::new(kad::RecordKey::new(key.as_bytes()), value);
                let id = self.swarm.behaviour_mut().kad.put_record_to(
                    record,
                    peers.into_iter(),
                    kad::Quorum::One,
                );
                self.queries.insert(id, PendingQuery::Quiet);
            }
            Command::GetNames {
                key,
                want,
                valid,
                reply,
            } => {
                let id = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .get_record(kad::RecordKey::new(key.as_bytes()));
                self.queries.insert(
                    id,
                    PendingQuery::Names {
                        want: want.max(1),
                        valid,
                        counted: 0,
                        found: Vec::new(),
                        checked: Vec::new(),
                        reply: Some(reply),
                    },
                );
            }
            Command::Withdraw { hash } => {
                let key = kad::RecordKey::new(hash.as_bytes());
                self.swarm.behaviour_mut().kad.stop_providing(&key);
            }
            Command::AddDhtPeer { peer, addr } => self.add_dht_peer(peer, vec![addr]),
            Command::RemoteAddr { peer, reply } => {
                let _ = reply.send(self.connected.get(&peer).cloned());
            }
            Command::Addresses { peer, reply } => {
                let _ = reply.send(self.addresses_of(&peer));
            }
            Command::Status { reply } => {
                let kad = &mut self.swarm.behaviour_mut().kad;
                let routing_table = kad.kbuckets().map(|b| b.num_entries()).sum();
                let dht_mode = kad.mode().to_string();
                let provider_keys = kad.store_mut().key_count();
                let nat = self.nat_status();
                let _ = reply.send(NetworkStatus {
                    peer_id: self.swarm.local_peer_id().to_string(),
                    dht_mode,
                    routing_table,
                    connected: self
                        .swarm
                        .connected_peers()
                        .map(|p| p.to_string())
                        .collect(),
                    provider_keys,
                    nat,
                });
            }
            Command::SaveState { reply } => {
                let kad = &mut self.swarm.behaviour_mut().kad;
                let mut peers = Vec::new();
                for bucket in kad.kbuckets() {
                    for entry in bucket.iter() {
                        let peer = entry.node.key.preimage();
                        if self.session_peers.contains(peer) {
                            let addrs: Vec<Multiaddr> = entry.node.value.iter().cloned().collect();
                            peers.push(SavedPeer::new(peer, &addrs));
                        }
                    }
                }
                peers.truncate(MAX_SAVED_PEERS);
                let providers = kad.store_mut().snapshot();
                let names = kad.store_mut().name_snapshot();
                let _ = reply.send(NetState {
                    peers,
                    providers,
                    names,
                });
            }
            Command::RestoreState { state } => {
                for (peer, addrs) in state.peers.iter().filter_map(SavedPeer::parse) {
                    self.add_dht_peer(peer, addrs);
                }
                let kad = &mut self.swarm.behaviour_mut().kad;
                let loaded = kad.store_mut().restore(state.providers);
                let names = kad.store_mut().restore_names(state.names);
                tracing::info!(
                    peers = state.peers.len(),
                    records = loaded,
                    names,
                    "restored the saved network state"
                );
            }
        }
    }

    /// Puts `peer` at `addrs` into the routing table within the address-diversity rule
    /// (`discovery::diversity`): the one way peers enter it. A new peer goes in only if
    /// every range its addresses lie in has room; a peer already in keeps its place, and
    /// only its new addresses in ranges with room (or ranges it is counted in) are added.
    fn add_dht_peer(&mut self, peer: PeerId, addrs: Vec<Multiaddr>) {
        let local = KBucketKey::from(*self.swarm.local_peer_id());
        let Some(bucket) = local.distance(&KBucketKey::from(peer)).ilog2() else {
            return; // this node itself
        };
        let exempt = self.exempt_local;
        let range_of = |a: &Multiaddr| ip_of(a).and_then(|ip| AddressRange::counted(ip, exempt));
        let kad = &mut self.swarm.behaviour_mut().kad;
        let mut counts = RangeCounts::default();
        let mut held: Option<BTreeSet<AddressRange>> = None;
        for b in kad.kbuckets() {
            for entry in b.iter() {
                let ranges: BTreeSet<AddressRange> =
                    entry.node.value.iter().filter_map(range_of).collect();
                if entry.node.key.preimage() == &peer {
                    held = Some(ranges);
                } else if let Some(i) = local.distance(entry.node.key).ilog2() {
                    counts.add_peer(i, &ranges);
                }
            }
        }
        let admitted: Vec<Multiaddr> = match held {
            Some(mut held) => addrs
                .into_iter()
                .filter(|a| match range_of(a) {
                    None => true,
                    Some(r) if held.contains(&r) => true,
                    Some(r) if counts.has_room(bucket, r) => held.insert(r),
                    Some(r) => {
                        tracing::debug!(%peer, range = %r, "address left out: range full");
                        false
                    }
                })
                .collect(),
            None => {
                let ranges: BTreeSet<AddressRange> = addrs.iter().filter_map(range_of).collect();
                if let Err(full) = counts.admits(bucket, &ranges) {
                    tracing::debug!(%peer, range = %full, "not added to the table: range full");
                    return;
                }
                addrs
            }
        };
        for addr in admitted {
            kad.add_address(&peer, addr);
        }
    }

    fn nat_status(&self) -> NatStatus {
        let text = |a: &Multiaddr| a.to_string();
        NatStatus {
            reachability: self.reach.reachability(),
            public_addrs: self.reach.public_addrs().map(text).collect(),
            local_addrs: self.reach.local_addrs().map(text).collect(),
            relayed_addrs: self
                .reservations
                .values()
                .flat_map(|r| r.addrs.iter().map(text))
                .collect(),
            relay_serving: self.relay_gate.is_open(),
            relay_reservations: self.relay_served.0,
            relay_circuits: self.relay_served.1,
            counters: NatCounters {
                bytes: self.path_meter.read(),
                ..self.counters
            },
        }
    }

    fn dial(&mut self, peer: PeerId, addrs: Vec<Multiaddr>, reply: DialReply) {
        if self.swarm.is_connected(&peer) {
            reply.send(Ok(peer));
            return;
        }
        let addrs =
            circuit_dials::one_per_connected_relay(addrs, |relay| self.swarm.is_connected(relay));
        let relays = circuit_dials::relays_of(&addrs);
        if self.circuit_dials.has_room(&relays) {
            self.start_dial(peer, addrs, relays, reply);
        } else if let Err((_, _, reply)) = self.circuit_dials.wait(relays, (peer, addrs, reply)) {
            reply.send(Err(format!(
                "{} dials already wait for a relay",
                circuit_dials::MAX_WAITING_CIRCUIT_DIALS
            )));
        }
    }

    fn start_dial(
        &mut self,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        relays: Vec<PeerId>,
        reply: DialReply,
    ) {
        // Given addresses are dialled even while another dial to the peer runs (a hole
        // punch's, or Kademlia's at an older address): waiting for that one would report
        // its failure, not ours.
        let condition = if addrs.is_empty() {
            PeerCondition::DisconnectedAndNotDialing
        } else {
            PeerCondition::Disconnected
        };
        let opts = DialOpts::peer_id(peer)
            .condition(condition)
            .addresses(addrs)
            .extend_addresses_through_behaviour()
            .build();
        let id = opts.connection_id();
        match self.swarm.dial(opts) {
            Ok(()) => {
                self.dials_by_connection.entry(id).or_default().push(reply);
                self.circuit_dials.started(id, relays);
            }
            // Already dialling this peer: wait for that dial.
            Err(DialError::DialPeerConditionFalse(_)) => {
                self.dials_by_peer.entry(peer).or_default().push(reply)
            }
            Err(e) => reply.send(Err(dial_error_text(&e))),
        }
    }

    /// Ends dial `id`'s turn at its relays and starts the waiting dials that now have room
    /// (those whose caller gave up are dropped).
    fn dial_ended(&mut self, id: ConnectionId) {
        self.circuit_dials.finished(id);
        while let Some((relays, (peer, addrs, reply))) = self.circuit_dials.next_ready() {
            if reply.is_closed() {
                continue;
            }
            if self.swarm.is_connected(&peer) {
                reply.send(Ok(peer));
            } else {
                self.start_dial(peer, addrs, relays, reply);
            }
        }
    }

    /// Addresses known for `peer` (without `/p2p/` suffixes): the address book, then
    /// the routing table and the addresses running lookups were given (a provider
    /// record's, such as a private node's relayed addresses: Kademlia reports providers by
    /// id alone, and forgets their addresses when the lookup ends).
    fn addresses_of(&mut self, peer: &PeerId) -> Vec<Multiaddr> {
        let mut known = self.address_book.get(peer).cloned().unwrap_or_default();
        if let Ok(addrs) = self
            .swarm
            .behaviour_mut()
            .kad
            .handle_pending_outbound_connection(
                ConnectionId::new_unchecked(0),
                Some(*peer),
                &[],
                Endpoint::Dialer,
            )
        {
            known.extend(addrs);
        }
        let mut addrs: Vec<Multiaddr> = Vec::new();
        for a in known.iter().map(strip_peer) {
            if !addrs.contains(&a) {
                addrs.push(a);
            }
        }
        addrs.truncate(MAX_ADDRS_PER_PEER);
        addrs
    }
}

/// A one-line reason a dial failed (libp2p's own text nests every attempted address, and
/// its transport errors keep the reason in their source chain).
fn dial_error_text(error: &DialError) -> String {
    match error {
        // With several addresses tried, each error says which one it was.
        DialError::Transport(attempts) if attempts.len() > 1 => attempts
            .iter()
            .map(|(addr, e)| format!("{}: {}", strip_peer(addr), error_chain(e)))
            .collect::<Vec<_>>()
            .join("; "),
        DialError::Transport(attempts) => attempts
            .iter()
            .map(|(_, e)| error_chain(e))
            .collect::<Vec<_>>()
            .join("; "),
        other => error_chain(other),
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut parts = vec![error.to_string()];
    let mut source = error.source();
    while let Some(e) = source {
        parts.push(e.to_string());
        source = e.source();
    }
    parts.retain(|p| !p.is_empty());
    parts.dedup();
    parts.join(": ")
}

fn is_unspecified(addr: &Multiaddr) -> bool {
    ip_of(addr).is_some_and(|ip| ip.is_unspecified())
}

/// Whether `addr` is a QUIC address.
fn is_quic(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, Protocol::QuicV1))
}
