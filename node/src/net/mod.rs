//! The node's one libp2p host: QUIC, one identity, one UDP port, carrying both the
//! transfer protocol and discovery (Kademlia + identify).
//!
//! The swarm runs in its own task ([`task`]); the rest of the node talks to it through
//! [`Host`]: opening and accepting streams via `libp2p-stream`'s `Control`, and everything
//! else (dials, DHT lookups and announcements, status, saved state) through a small command
//! channel, each command answered on its own oneshot.

mod behaviour;
pub mod bulk;
mod bulk_socket;
pub mod circuit_dials;
pub mod limits;
pub mod path_bytes;
pub mod reachability;
pub mod relay;
mod task;

use std::{collections::HashMap, sync::Arc, time::Duration};

use bulk::{BulkEndpoint, BulkIncoming, BulkTuning};

use commons_protocol::Hash;
use libp2p::{identity::Keypair, multiaddr::Protocol, Multiaddr, PeerId, StreamProtocol};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};

use crate::discovery::{persist::NetState, DiscoveryConfig};

/// Batches of found providers one lookup may have waiting; the swarm's event loop never
/// blocks on a slow asker: a batch beyond this is dropped (the asker has what it needs).
pub const FOUND_PROVIDERS_QUEUE: usize = 64;
/// Per-stream QUIC receive window (bytes in flight on one stream): 16 MiB, enough for
/// 1 Gbit/s at 100 ms RTT.
pub const QUIC_STREAM_WINDOW: u32 = 16 << 20;
/// Per-connection QUIC receive window, across all streams: 64 MiB.
pub const QUIC_CONNECTION_WINDOW: u32 = 64 << 20;
/// Streams a peer may have open at once on one connection (QUIC-level limit).
pub const QUIC_MAX_STREAMS: u32 = 64;
/// How long an idle connection is kept.
pub const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a dial may take before it is reported as failed.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// Commands queued to the swarm task.
const COMMAND_QUEUE: usize = 256;

/// Why the host could not start or reach a peer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// A listen address could not be used.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// Why.
        reason: String,
    },
    /// A peer could not be reached.
    #[error("cannot reach peer {peer}: {reason}")]
    Dial {
        /// The peer.
        peer: PeerId,
        /// Why.
        reason: String,
    },
    /// An address could not be reached.
    #[error("cannot reach {addr}: {reason}")]
    DialAddr {
        /// The address.
        addr: Multiaddr,
        /// Why.
        reason: String,
    },
    /// A DHT operation failed.
    #[error("DHT: {0}")]
    Dht(String),
    /// No peer to join the DHT through.
    #[error("cannot join the network: {}", describe_unjoinable(.failed))]
    Unjoinable {
        /// Bootstrap addresses that did not answer, with why.
        failed: Vec<(Multiaddr, String)>,
    },
    /// The host task has stopped.
    #[error("the network host has stopped")]
    Stopped,
}

/// A peer and the addresses it may be reached at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAddrs {
    /// The peer.
    pub peer: PeerId,
    /// Its addresses (may be empty when only the DHT's routing table knows them).
    pub addrs: Vec<Multiaddr>,
}

/// What a DHT query cost: the figures the discovery benchmark reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryCost {
    /// Requests sent to peers.
    pub requests: u32,
    /// Requests that were answered.
    pub successes: u32,
    /// Wall time in milliseconds.
    pub millis: u64,
}

/// The result of a provider lookup.
#[derive(Debug, Clone, Default)]
pub struct Lookup {
    /// Providers found, this node excluded, in the order they were found.
    pub providers: Vec<PeerAddrs>,
    /// What the lookup cost.
    pub cost: QueryCost,
}

/// A batch of providers a running lookup found, or its end.
enum FoundProviders {
    Some(Vec<PeerAddrs>),
    Done(QueryCost),
}

/// How long a lookup keeps going after its first provider, waiting for more, unless it
/// has found as many as wanted or ends first: a fetch should not wait for every slow or
/// dead peer the walk still asks.
pub const LOOKUP_SETTLE: Duration = Duration::from_millis(500);
/// How long a request cut short waits to learn whether a hole punch cut it
/// ([`Host::punched_since_settled`]).
pub const PUNCH_SETTLE: Duration = Duration::from_millis(500);

/// The host's view of the network, for `commons node peers`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkStatus {
    /// This node.
    pub peer_id: String,
    /// `server` (answers DHT queries) or `client`.
    pub dht_mode: String,
    /// Peers in the Kademlia routing table.
    pub routing_table: usize,
    /// Peers with an open connection.
    pub connected: Vec<String>,
    /// Keys with provider records held (own and for others).
    pub provider_keys: usize,
    /// Reachability, relays and hole punching.
    #[serde(default)]
    pub nat: NatStatus,
}

/// What the node knows of its reachability, and how it reaches and is reached by peers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NatStatus {
    /// `public`, `private` or `unknown` (see [`reachability::Reachability`]).
    pub reachability: reachability::Reachability,
    /// Public addresses confirmed by AutoNAT dial-backs (or configured as external).
    pub public_addrs: Vec<String>,
    /// Addresses confirmed only on a LAN (never told to public peers).
    pub local_addrs: Vec<String>,
    /// Addresses through relays this node holds a reservation on.
    pub relayed_addrs: Vec<String>,
    /// Whether this node relays for others now.
    pub relay_serving: bool,
    /// Reservations other nodes hold on this relay.
    pub relay_reservations: u64,
    /// Circuits this relay carries now.
    pub relay_circuits: u64,
    /// Counters since start.
    pub counters: NatCounters,
}

impl Default for NatStatus {
    fn default() -> Self {
        Self {
            reachability: reachability::Reachability::Unknown,
            public_addrs: Vec::new(),
            local_addrs: Vec::new(),
            relayed_addrs: Vec::new(),
            relay_serving: false,
            relay_reservations: 0,
            relay_circuits: 0,
            counters: NatCounters::default(),
        }
    }
}

/// Connections by path, and hole punches, since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NatCounters {
    /// Direct connections established.
    pub direct_connections: u64,
    /// Connections established through a relay.
    pub relayed_connections: u64,
    /// Hole punches that made a direct connection.
    pub punches_succeeded: u64,
    /// Hole punches that failed (the relayed connection stays).
    pub punches_failed: u64,
    /// Relayed connections closed because a punch replaced them.
    pub relayed_closed_after_punch: u64,
    /// Bytes over libp2p connections by path (the bulk endpoint's, always direct, are
    /// not in these: see the transfer counters).
    #[serde(default)]
    pub bytes: path_bytes::PathBytes,
}

/// Which peers of a bootstrap list answered.
#[derive(Debug, Clone, Default)]
pub struct BootstrapReport {
    /// Peers reached.
    pub reached: Vec<PeerId>,
    /// Addresses that did not answer, with why.
    pub failed: Vec<(Multiaddr, String)>,
}

enum Command {
    Dial {
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        reply: oneshot::Sender<Result<(), String>>,
    },
    DialAddr {
        addr: Multiaddr,
        reply: oneshot::Sender<Result<PeerId, String>>,
    },
    /// Answers `Err` when the routing table is empty.
    Bootstrap {
        reply: oneshot::Sender<Result<(), ()>>,
    },
    /// Found providers are streamed on `found`; the channel closes when the query ends.
    /// Dropping the receiver ends the query.
    FindProviders {
        hash: Hash,
        found: mpsc::Sender<FoundProviders>,
    },
    Announce {
        hash: Hash,
        reply: oneshot::Sender<Result<QueryCost, String>>,
    },
    Withdraw {
        hash: Hash,
    },
    AddDhtPeer {
        peer: PeerId,
        addr: Multiaddr,
    },
    Addresses {
        peer: PeerId,
        reply: oneshot::Sender<Vec<Multiaddr>>,
    },
    RemoteAddr {
        peer: PeerId,
        reply: oneshot::Sender<Option<Multiaddr>>,
    },
    Status {
        reply: oneshot::Sender<NetworkStatus>,
    },
    SaveState {
        reply: oneshot::Sender<NetState>,
    },
    RestoreState {
        state: NetState,
    },
    /// Stores a name record here and at the peers closest to its key.
    PutName {
        key: Hash,
        value: Vec<u8>,
        reply: oneshot::Sender<Result<QueryCost, String>>,
    },
    /// Stores a name record at the given peers only (writing a newer record back to peers
    /// that answered with an older one), without waiting.
    PutNameTo {
        key: Hash,
        value: Vec<u8>,
        peers: Vec<PeerId>,
    },
    /// Collects name records for `key` (this node's own first, if it holds one) until
    /// `want` of them pass `valid` (value, key) or the walk ends; all answers are returned,
    /// so the caller can write the newest back to peers that sent anything else.
    GetNames {
        key: Hash,
        want: usize,
        valid: fn(&[u8], &[u8]) -> bool,
        reply: oneshot::Sender<FoundNames>,
    },
}

/// The name records a DHT lookup found, as peers sent them (unchecked), and its cost.
#[derive(Debug, Default)]
pub struct FoundNames {
    /// Each answer: the peer (`None`: this node's own record store) and the record bytes.
    pub records: Vec<(Option<PeerId>, Vec<u8>)>,
    /// Whether each answer passed the lookup's `valid` check (same order as `records`), so
    /// the caller need not check a signature twice.
    pub valid: Vec<bool>,
    /// What the lookup cost.
    pub cost: QueryCost,
}

/// A handle on the running host. Cheap to clone.
#[derive(Clone)]
pub struct Host {
    peer_id: PeerId,
    control: libp2p_stream::Control,
    commands: mpsc::Sender<Command>,
    listen_addrs: watch::Receiver<Vec<Multiaddr>>,
    /// Bumped when the addresses this node advertises change (a relay slot won or lost, a
    /// public address confirmed or expired): its provider records must be announced again.
    advertised: watch::Receiver<u64>,
    query_timeout: Duration,
    /// The bulk-data endpoint (see [`bulk`]); `None` only if it could not be set up.
    bulk: Option<Arc<BulkEndpoint>>,
    /// Request streams accepted on the bulk endpoint, until the server takes them.
    bulk_incoming: Arc<std::sync::Mutex<Option<BulkIncoming>>>,
    /// When punches moved peers to direct connections.
    punches: PunchTimes,
}

/// When a hole punch last moved each peer to a direct connection. The relayed connection
/// is then closed, cutting the streams on it: a request cut that way is not the peer's
/// failure (see [`Host::punched_since`]).
#[derive(Debug, Clone, Default)]
pub(crate) struct PunchTimes(Arc<std::sync::Mutex<HashMap<PeerId, std::time::Instant>>>);

impl PunchTimes {
    /// How long a punch is remembered (entries older are dropped at each new one, so the
    /// map holds at most the punches of that long).
    const KEEP: Duration = Duration::from_secs(120);

    /// Requests that fail this soon after a punch are taken as cut by it: the NAT lab saw
    /// requests opened around the punch (on the relayed connection just before it closed,
    /// or on a duplicate direct connection the dial race closes) fail a second or two
    /// later, and the fetch drop its only provider.
    const CUT_GRACE: Duration = Duration::from_secs(10);

    fn record(&self, peer: PeerId, now: std::time::Instant) {
        let mut times = self.0.lock().unwrap_or_else(|e| e.into_inner());
        times.retain(|_, at| now.saturating_duration_since(*at) < Self::KEEP);
        times.insert(peer, now);
    }

    /// Whether a punch happened after `since`, or less than [`Self::CUT_GRACE`] before
    /// `now`.
    fn cut(&self, peer: &PeerId, since: std::time::Instant, now: std::time::Instant) -> bool {
        let times = self.0.lock().unwrap_or_else(|e| e.into_inner());
        times
            .get(peer)
            .is_some_and(|at| *at >= since || now.saturating_duration_since(*at) < Self::CUT_GRACE)
    }
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("peer_id", &self.peer_id)
            .finish()
    }
}

impl Host {
    /// Starts the host on `listen` addresses (e.g. `/ip4/0.0.0.0/udp/4433/quic-v1`) with
    /// discovery set up by `discovery` (bootstrap peers are not dialled here: see
    /// [`Host::bootstrap`]). Must be called inside a tokio runtime.
    pub async fn start(
        key: Keypair,
        listen: &[Multiaddr],
        discovery: &DiscoveryConfig,
    ) -> Result<Self, NetError> {
        let peer_id = key.public().to_peer_id();
        let (bulk, bulk_incoming) = if discovery.bulk {
            start_bulk(&key, listen, discovery.bulk_offload)
        } else {
            (None, None)
        };
        let (mut swarm, relay_gate, path_meter) = behaviour::build_swarm(key, discovery)?;
        for addr in listen {
            swarm
                .listen_on(addr.clone())
                .map_err(|e| NetError::Listen {
                    addr: addr.clone(),
                    reason: listen_failure(&e),
                })?;
        }
        let control = swarm.behaviour().stream.new_control();
        let (commands, rx) = mpsc::channel(COMMAND_QUEUE);
        let (addrs_tx, listen_addrs) = watch::channel(Vec::new());
        let (advertised_tx, advertised) = watch::channel(0);
        let punches = PunchTimes::default();
        tokio::spawn(task::run(
            swarm,
            discovery.clone(),
            (relay_gate, path_meter, punches.clone()),
            rx,
            (addrs_tx, advertised_tx),
        ));
        Ok(Self {
            peer_id,
            control,
            commands,
            listen_addrs,
            advertised,
            query_timeout: discovery.query_timeout,
            bulk,
            bulk_incoming: Arc::new(std::sync::Mutex::new(bulk_incoming)),
            punches,
        })
    }

    /// Changes each time the addresses this node advertises change (see
    /// [`crate::discovery::Publisher`], which announces every root again then).
    pub fn advertised_addrs_changed(&self) -> watch::Receiver<u64> {
        self.advertised.clone()
    }

    /// Whether a request to `peer` asked at `since` that failed now may have been cut by a
    /// hole punch moving the peer to a direct connection (closing the relayed one, and the
    /// streams on it): a punch after `since`, or only moments ago.
    pub fn punched_since(&self, peer: &PeerId, since: std::time::Instant) -> bool {
        self.punches.cut(peer, since, std::time::Instant::now())
    }

    /// [`Self::punched_since`], waiting up to [`PUNCH_SETTLE`] for the punch to be
    /// recorded: a stream on a relayed connection the peer closed after its punch ends
    /// a moment before this node learns of the close.
    pub async fn punched_since_settled(&self, peer: &PeerId, since: std::time::Instant) -> bool {
        let until = tokio::time::Instant::now() + PUNCH_SETTLE;
        loop {
            if self.punched_since(peer, since) {
                return true;
            }
            if tokio::time::Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(PUNCH_SETTLE / 10).await;
        }
    }

    /// The bulk-data endpoint, if there is one.
    pub fn bulk(&self) -> Option<&Arc<BulkEndpoint>> {
        self.bulk.as_ref()
    }

    /// The UDP port of the bulk endpoint, if it serves and can be reached from `peer`'s
    /// address (same family; loopback only from loopback).
    pub async fn bulk_port_for(&self, peer: PeerId) -> Option<u16> {
        let local = self.bulk.as_ref()?.local_addr().ok()?;
        let remote = self.remote_ip(peer).await?;
        bulk::reaches(local, remote).then_some(local.port())
    }

    /// Takes the stream of requests accepted on the bulk endpoint (once: the server's).
    pub fn take_bulk_incoming(&self) -> Option<BulkIncoming> {
        self.bulk_incoming
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// The IP address of `peer` on our open connection to it, if connected.
    /// `None` when the connection is relayed: the IP would be the relay's.
    pub async fn remote_ip(&self, peer: PeerId) -> Option<std::net::IpAddr> {
        let addr = self
            .ask(|reply| Command::RemoteAddr { peer, reply })
            .await
            .ok()??;
        if reachability::is_relayed(&addr) {
            return None;
        }
        ip_of(&addr)
    }

    /// This node's PeerId.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Waits until the host listens on at least one address, then returns them all, each
    /// ending in `/p2p/<peer id>` so it can be dialled as printed. A host started with no
    /// listen address (a one-shot client) returns none at once.
    pub async fn listen_addrs(&self) -> Vec<Multiaddr> {
        let mut rx = self.listen_addrs.clone();
        let addrs = rx
            .wait_for(|a| !a.is_empty())
            .await
            .map(|a| a.clone())
            .unwrap_or_default();
        addrs
            .into_iter()
            .map(|a| a.with(Protocol::P2p(self.peer_id)))
            .collect()
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, NetError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(make(reply))
            .await
            .map_err(|_| NetError::Stopped)?;
        rx.await.map_err(|_| NetError::Stopped)
    }

    /// Connects to `peer` at `addrs` (no-op if already connected), within [`DIAL_TIMEOUT`].
    /// With no addresses, those the DHT and identify know are used.
    pub async fn connect(&self, peer: PeerId, addrs: Vec<Multiaddr>) -> Result<(), NetError> {
        let dial = self.ask(|reply| Command::Dial { peer, addrs, reply });
        match tokio::time::timeout(DIAL_TIMEOUT, dial).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(reason))) => Err(NetError::Dial { peer, reason }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(NetError::Dial {
                peer,
                reason: format!("no answer within {} s", DIAL_TIMEOUT.as_secs()),
            }),
        }
    }

    /// Connects to an address, with or without a `/p2p/<peer id>` suffix, within
    /// [`DIAL_TIMEOUT`]; returns the peer that answered.
    pub async fn connect_addr(&self, addr: Multiaddr) -> Result<PeerId, NetError> {
        let a = addr.clone();
        let dial = self.ask(|reply| Command::DialAddr { addr: a, reply });
        match tokio::time::timeout(DIAL_TIMEOUT, dial).await {
            Ok(Ok(Ok(peer))) => Ok(peer),
            Ok(Ok(Err(reason))) => Err(NetError::DialAddr { addr, reason }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(NetError::DialAddr {
                addr,
                reason: format!("no answer within {} s", DIAL_TIMEOUT.as_secs()),
            }),
        }
    }

    /// Joins the DHT: dials every address in `peers` at once (each within
    /// [`DIAL_TIMEOUT`]), then, if any answered or the routing table already knows peers
    /// (saved from an earlier run), starts a Kademlia bootstrap that fills the routing
    /// table in the background. Fails only when there is no peer to start from.
    pub async fn bootstrap(&self, peers: &[Multiaddr]) -> Result<BootstrapReport, NetError> {
        let dials = peers.iter().map(|addr| {
            let addr = addr.clone();
            async move { (addr.clone(), self.connect_addr(addr).await) }
        });
        let mut report = BootstrapReport::default();
        for (addr, result) in libp2p::futures::future::join_all(dials).await {
            match result {
                Ok(peer) => {
                    // A bootstrap peer is a DHT server by definition: into the routing
                    // table now, without waiting for identify to say so.
                    let addr = strip_peer(&addr);
                    let _ = self.commands.send(Command::AddDhtPeer { peer, addr }).await;
                    report.reached.push(peer);
                }
                Err(NetError::DialAddr { reason, .. }) => report.failed.push((addr, reason)),
                Err(e) => report.failed.push((addr, e.to_string())),
            }
        }
        match self.ask(|reply| Command::Bootstrap { reply }).await? {
            Ok(()) => Ok(report),
            Err(()) => Err(NetError::Unjoinable {
                failed: report.failed,
            }),
        }
    }

    /// Looks up providers of `hash` in the DHT. Returns when the walk ends, when `want`
    /// are found, or [`LOOKUP_SETTLE`] after the first one was found (`settle`), whichever
    /// comes first; the walk is bounded by the query timeout.
    pub async fn find_providers(
        &self,
        hash: Hash,
        want: usize,
        settle: bool,
    ) -> Result<Lookup, NetError> {
        let (found, mut rx) = mpsc::channel(FOUND_PROVIDERS_QUEUE);
        self.commands
            .send(Command::FindProviders { hash, found })
            .await
            .map_err(|_| NetError::Stopped)?;
        let started = tokio::time::Instant::now();
        let hard_end = started + self.query_timeout + Duration::from_secs(5);
        let mut lookup = Lookup::default();
        let mut end = hard_end;
        loop {
            match tokio::time::timeout_at(end, rx.recv()).await {
                Ok(Some(FoundProviders::Some(batch))) => {
                    lookup.providers.extend(batch);
                    if lookup.providers.len() >= want {
                        break;
                    }
                    if settle && !lookup.providers.is_empty() {
                        end = end.min(tokio::time::Instant::now() + LOOKUP_SETTLE);
                    }
                }
                Ok(Some(FoundProviders::Done(cost))) => {
                    lookup.cost = cost;
                    return Ok(lookup);
                }
                // The walk ended without its closing message reaching us (the queue was
                // full): what was found stands.
                Ok(None) => break,
                Err(_) if end < hard_end => break,
                Err(_) => return Err(NetError::Dht("the provider lookup did not finish".into())),
            }
        }
        lookup.cost.millis = started.elapsed().as_millis() as u64;
        Ok(lookup)
    }

    /// Announces this node as a provider of `hash` to the peers closest to it.
    pub async fn announce(&self, hash: Hash) -> Result<QueryCost, NetError> {
        self.ask(|reply| Command::Announce { hash, reply })
            .await?
            .map_err(NetError::Dht)
    }

    /// Stores a name record (checked by this node's record store first) here and at the
    /// peers closest to `key`.
    pub async fn put_name(&self, key: Hash, value: Vec<u8>) -> Result<QueryCost, NetError> {
        self.ask(|reply| Command::PutName { key, value, reply })
            .await?
            .map_err(NetError::Dht)
    }

    /// Sends a name record to `peers` (a write-back), without waiting for them.
    pub async fn put_name_to(
        &self,
        key: Hash,
        value: Vec<u8>,
        peers: Vec<PeerId>,
    ) -> Result<(), NetError> {
        if peers.is_empty() {
            return Ok(());
        }
        self.commands
            .send(Command::PutNameTo { key, value, peers })
            .await
            .map_err(|_| NetError::Stopped)
    }

    /// Asks the DHT for the name records under `key` until `want` answers pass `valid`
    /// (peers that answer junk do not end the walk early), within the query timeout.
    pub async fn get_names(
        &self,
        key: Hash,
        want: usize,
        valid: fn(&[u8], &[u8]) -> bool,
    ) -> Result<FoundNames, NetError> {
        let asked = self.ask(|reply| Command::GetNames {
            key,
            want,
            valid,
            reply,
        });
        tokio::time::timeout(self.query_timeout + Duration::from_secs(5), asked)
            .await
            .map_err(|_| NetError::Dht("the name lookup did not end in time".into()))?
    }

    /// Stops announcing `hash`. Records already held by others lapse at their TTL:
    /// Kademlia has no withdrawal.
    pub async fn withdraw(&self, hash: Hash) -> Result<(), NetError> {
        self.commands
            .send(Command::Withdraw { hash })
            .await
            .map_err(|_| NetError::Stopped)
    }

    /// Addresses known for `peer` (from identify, the routing table and past dials).
    pub async fn addresses(&self, peer: PeerId) -> Result<Vec<Multiaddr>, NetError> {
        self.ask(|reply| Command::Addresses { peer, reply }).await
    }

    /// Routing table size, connected peers and DHT mode.
    pub async fn status(&self) -> Result<NetworkStatus, NetError> {
        self.ask(|reply| Command::Status { reply }).await
    }

    /// The routing table and the provider records held for others, to be saved.
    pub async fn save_state(&self) -> Result<NetState, NetError> {
        self.ask(|reply| Command::SaveState { reply }).await
    }

    /// Loads saved peers into the routing table and saved records into the record store.
    pub async fn restore_state(&self, state: NetState) -> Result<(), NetError> {
        self.commands
            .send(Command::RestoreState { state })
            .await
            .map_err(|_| NetError::Stopped)
    }

    /// The stream control, to open streams and accept them for a protocol.
    pub fn control(&self) -> libp2p_stream::Control {
        self.control.clone()
    }
}

/// The bulk endpoint: serving on the IP of the first IP listen address (any free port),
/// or dial-only when the host listens nowhere. A failure is logged, not fatal: transfers
/// then use libp2p streams alone.
fn start_bulk(
    key: &Keypair,
    listen: &[Multiaddr],
    offload: bool,
) -> (Option<Arc<BulkEndpoint>>, Option<BulkIncoming>) {
    let ip = listen.iter().find_map(ip_of);
    let tuning = BulkTuning {
        offload,
        ..BulkTuning::default()
    };
    let started = match ip {
        Some(ip) => BulkEndpoint::bind(key.clone(), std::net::SocketAddr::new(ip, 0), tuning)
            .map(|(bulk, incoming)| (bulk, Some(incoming))),
        None => BulkEndpoint::client(key, tuning).map(|bulk| (bulk, None)),
    };
    match started {
        Ok((bulk, incoming)) => (Some(Arc::new(bulk)), incoming),
        Err(e) => {
            tracing::warn!(error = %e, "no bulk endpoint: transfers use libp2p streams only");
            (None, None)
        }
    }
}

/// Why a listen address could not be used, in the user's terms. libp2p's transport error
/// says nothing itself (its cause, the OS error, is one level down), so the causes are
/// read, and the common one — a port already taken — comes with what to do.
fn listen_failure(e: &(dyn std::error::Error + 'static)) -> String {
    let mut causes = Vec::new();
    let mut next = Some(e);
    let mut in_use = false;
    while let Some(cause) = next {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            in_use |= io.kind() == std::io::ErrorKind::AddrInUse;
        }
        let text = cause.to_string();
        // Some layers wrap the OS error in their own type: its text still names it.
        in_use |= text.contains("os error 98") || text.contains("Address already in use");
        if !text.is_empty() && !causes.iter().any(|c: &String| c.contains(&text)) {
            causes.push(text);
        }
        next = cause.source();
    }
    if in_use {
        return "the port is already in use (another `commons node run` on this machine? \
                stop it, or give another port with --listen, e.g. \
                /ip4/0.0.0.0/udp/4434/quic-v1, or port 0 for any free one)"
            .into();
    }
    if causes.is_empty() {
        "the transport refused it without saying why (is it a QUIC address such as \
         /ip4/0.0.0.0/udp/4433/quic-v1?)"
            .into()
    } else {
        causes.join(": ")
    }
}

/// Whether `ip` is an address that many peers share by nature, never a public one: loopback,
/// unspecified, private (RFC 1918, IPv6 unique local `fc00::/7`), link-local, or shared
/// (carrier-grade NAT, `100.64.0.0/10`). Such addresses are exempt by default from the
/// per-IP connection limit ([`limits::MAX_CONNECTIONS_PER_IP`]) and the routing table's
/// address-diversity rule ([`crate::discovery::diversity`]). IPv4-mapped IPv6 addresses are
/// judged as their IPv4 address.
pub fn is_local_ip(ip: std::net::IpAddr) -> bool {
    match ip.to_canonical() {
        std::net::IpAddr::V4(ip) => {
            let [a, b, ..] = ip.octets();
            ip.is_loopback()
                || ip.is_unspecified()
                || ip.is_private()
                || ip.is_link_local()
                || (a == 100 && (b & 0xc0) == 64)
        }
        std::net::IpAddr::V6(ip) => {
            let first = ip.segments()[0];
            ip.is_loopback()
                || ip.is_unspecified()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
        }
    }
}

/// The IP address in a multiaddr, if it has one.
fn ip_of(addr: &Multiaddr) -> Option<std::net::IpAddr> {
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(ip.into()),
        Protocol::Ip6(ip) => Some(ip.into()),
        _ => None,
    })
}

fn describe_unjoinable(failed: &[(Multiaddr, String)]) -> String {
    if failed.is_empty() {
        return "no bootstrap peer was given and none is saved from an earlier run \
                (give --bootstrap <multiaddr>, or `bootstrap` in the config file)"
            .into();
    }
    let each: Vec<String> = failed
        .iter()
        .map(|(a, why)| format!("{a} ({why})"))
        .collect();
    format!("no bootstrap peer answered: {}", each.join("; "))
}

/// `addr` without a trailing `/p2p/<peer id>`.
pub fn strip_peer(addr: &Multiaddr) -> Multiaddr {
    let mut addr = addr.clone();
    if let Some(Protocol::P2p(_)) = addr.iter().last() {
        addr.pop();
    }
    addr
}

/// Splits a provider multiaddr ending in `/p2p/<peer id>` into the peer and the address.
pub fn split_peer_addr(addr: &Multiaddr) -> Option<(PeerId, Multiaddr)> {
    let mut addr = addr.clone();
    match addr.pop() {
        Some(Protocol::P2p(peer)) => Some((peer, addr)),
        _ => None,
    }
}

/// The protocol id of the transfer protocol, as libp2p wants it.
pub fn transfer_protocol() -> StreamProtocol {
    StreamProtocol::new(commons_protocol::wire::TRANSFER_PROTOCOL)
}
