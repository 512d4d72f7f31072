//! The swarm task: owns the libp2p swarm, turns its events into answers to [`Command`]s.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    net::IpAddr,
    time::{Duration, Instant},
};

use libp2p::{
    futures::StreamExt,
    identify,
    kad::{self, KBucketKey},
    mdns,
    multiaddr::Protocol,
    swarm::{dial_opts::DialOpts, ConnectionId, DialError, SwarmEvent},
    Multiaddr, PeerId, Swarm,
};
use tokio::sync::{mpsc, oneshot, watch};

use super::{
    behaviour::{kad_protocol, Behaviour, BehaviourEvent},
    ip_of, strip_peer, Command, FoundNames, FoundProviders, NetworkStatus, PeerAddrs, QueryCost,
};
use crate::discovery::{
    diversity::{AddressRange, RangeCounts},
    persist::{NetState, SavedPeer, MAX_SAVED_PEERS},
    DhtMode, DiscoveryConfig,
};

/// How often expired provider records are dropped from memory.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);
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

struct Task {
    swarm: Swarm<Behaviour>,
    mode: DhtMode,
    dials_by_connection: HashMap<ConnectionId, Vec<DialReply>>,
    dials_by_peer: HashMap<PeerId, Vec<DialReply>>,
    queries: HashMap<kad::QueryId, PendingQuery>,
    address_book: HashMap<PeerId, Vec<Multiaddr>>,
    /// Peers reached over loopback: only their loopback addresses are usable.
    loopback_peers: HashSet<PeerId>,
    /// The remote address of a connection to each connected peer (the latest).
    connected: HashMap<PeerId, Multiaddr>,
    /// Peers connected to since start: only these are saved for the next start, so dead
    /// peers from earlier runs do not pile up.
    session_peers: HashSet<PeerId>,
    listen_addrs: watch::Sender<Vec<Multiaddr>>,
    /// Local addresses count in no range of the routing table's diversity rule.
    exempt_local: bool,
}

/// Runs the swarm until every [`super::Host`] handle is dropped.
pub(super) async fn run(
    mut swarm: Swarm<Behaviour>,
    config: DiscoveryConfig,
    mut commands: mpsc::Receiver<Command>,
    listen_addrs: watch::Sender<Vec<Multiaddr>>,
) {
    for addr in &config.external_addrs {
        swarm.add_external_address(addr.clone());
    }
    let mut task = Task {
        swarm,
        mode: config.mode,
        dials_by_connection: HashMap::new(),
        dials_by_peer: HashMap::new(),
        queries: HashMap::new(),
        address_book: HashMap::new(),
        loopback_peers: HashSet::new(),
        connected: HashMap::new(),
        session_peers: HashSet::new(),
        listen_addrs,
        exempt_local: config.exempt_local_addresses,
    };
    let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
    loop {
        tokio::select! {
            event = task.swarm.select_next_some() => task.on_event(event),
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
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
                let reachable = match self.mode {
                    DhtMode::Server => true,
                    DhtMode::Auto => is_public(&address),
                    DhtMode::Client => false,
                };
                if reachable {
                    self.swarm.add_external_address(address.clone());
                }
                self.listen_addrs.send_modify(|a| a.push(address));
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                if is_loopback(endpoint.get_remote_address())
                    && self.loopback_peers.len() < MAX_SESSION_PEERS
                {
                    self.loopback_peers.insert(peer_id);
                }
                self.connected
                    .insert(peer_id, endpoint.get_remote_address().clone());
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
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                self.connected.remove(&peer_id);
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
            _ => {}
        }
    }

    /// Remembers a peer's listen addresses; adds DHT servers to the routing table.
    fn on_identified(&mut self, peer: PeerId, info: identify::Info) {
        let via_loopback = self.loopback_peers.contains(&peer);
        let addrs: Vec<Multiaddr> = info
            .listen_addrs
            .into_iter()
            .filter(|a| is_loopback(a) == via_loopback && !is_unspecified(a))
            .take(MAX_ADDRS_PER_PEER)
            .collect();
        if addrs.is_empty() {
            return;
        }
        if info.protocols.contains(&kad_protocol()) {
            self.add_dht_peer(peer, addrs.clone());
        }
        if self.address_book.len() >= MAX_ADDRESS_BOOK && !self.address_book.contains_key(&peer) {
            if let Some(evict) = self.address_book.keys().next().copied() {
                self.address_book.remove(&evict);
            }
        }
        self.address_book.insert(peer, addrs);
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

    fn dial(&mut self, peer: PeerId, addrs: Vec<Multiaddr>, reply: DialReply) {
        if self.swarm.is_connected(&peer) {
            reply.send(Ok(peer));
            return;
        }
        let opts = DialOpts::peer_id(peer)
            .addresses(addrs)
            .extend_addresses_through_behaviour()
            .build();
        let id = opts.connection_id();
        match self.swarm.dial(opts) {
            Ok(()) => self.dials_by_connection.entry(id).or_default().push(reply),
            // Already dialling this peer: wait for that dial.
            Err(DialError::DialPeerConditionFalse(_)) => {
                self.dials_by_peer.entry(peer).or_default().push(reply)
            }
            Err(e) => reply.send(Err(dial_error_text(&e))),
        }
    }

    /// Addresses known for `peer` (without `/p2p/` suffixes): the address book, then the
    /// routing table.
    fn addresses_of(&mut self, peer: &PeerId) -> Vec<Multiaddr> {
        let mut known = self.address_book.get(peer).cloned().unwrap_or_default();
        if let Some(bucket) = self.swarm.behaviour_mut().kad.kbucket(*peer) {
            for entry in bucket.iter() {
                if entry.node.key.preimage() == peer {
                    known.extend(entry.node.value.iter().cloned());
                }
            }
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

fn is_loopback(addr: &Multiaddr) -> bool {
    ip_of(addr).is_some_and(|ip| ip.is_loopback())
}

fn is_unspecified(addr: &Multiaddr) -> bool {
    ip_of(addr).is_some_and(|ip| ip.is_unspecified())
}

/// Whether an address is a public IP others can reach directly: not loopback, private,
/// link-local, shared (CGNAT) or unspecified.
fn is_public(addr: &Multiaddr) -> bool {
    match ip_of(addr) {
        Some(IpAddr::V4(ip)) => {
            let shared = ip.octets()[0] == 100 && (ip.octets()[1] & 0xc0) == 64;
            !(ip.is_private()
                || ip.is_loopback()
                || ip.is_link_local()
                || ip.is_unspecified()
                || ip.is_documentation()
                || shared)
        }
        // Global unicast is 2000::/3.
        Some(IpAddr::V6(ip)) => (ip.segments()[0] & 0xe000) == 0x2000,
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_count_as_reachable() {
        let public = |s: &str| is_public(&s.parse().expect("addr"));
        assert!(public("/ip4/8.8.8.8/udp/4433/quic-v1"));
        assert!(public("/ip6/2001:4860::1/udp/4433/quic-v1"));
        for private in [
            "/ip4/127.0.0.1/udp/1/quic-v1",
            "/ip4/10.1.2.3/udp/1/quic-v1",
            "/ip4/192.168.0.2/udp/1/quic-v1",
            "/ip4/100.64.0.1/udp/1/quic-v1",
            "/ip4/0.0.0.0/udp/1/quic-v1",
            "/ip6/::1/udp/1/quic-v1",
            "/ip6/fe80::1/udp/1/quic-v1",
        ] {
            assert!(!public(private), "{private}");
        }
    }
}
