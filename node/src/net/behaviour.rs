//! What the host speaks: the transfer streams, Kademlia and identify, on one QUIC swarm,
//! within the connection bounds of [`super::limits`]; and for reachability (see
//! [`super::reachability`] and [`super::relay`]) AutoNAT v2, circuit relay v2 (as relay and
//! as client), DCUtR hole punching, and TCP for peers whose UDP is blocked.

use std::num::NonZeroUsize;

use libp2p::{
    autonat, dcutr, identify,
    identity::Keypair,
    kad, mdns, noise, relay,
    swarm::{behaviour::toggle::Toggle, NetworkBehaviour},
    tcp, yamux, StreamProtocol, Swarm,
};

use super::{
    limits::ConnectionBounds,
    path_bytes::PathMeter,
    relay::{behaviour_config, CircuitLimits, ReservationGate},
    NetError, IDLE_CONNECTION_TIMEOUT, QUIC_CONNECTION_WINDOW, QUIC_MAX_STREAMS,
    QUIC_STREAM_WINDOW,
};
use crate::discovery::{DhtMode, DiscoveryConfig, ProviderStore, IDENTIFY_PROTOCOL, KAD_PROTOCOL};

/// Largest Kademlia message: a provider response with the full
/// [`crate::discovery::ProviderLimits::max_providers_per_key`] and their addresses fits.
const KAD_MAX_PACKET: usize = 256 * 1024;

/// The protocols of the host, combined.
#[derive(NetworkBehaviour)]
pub(super) struct Behaviour {
    /// First, so a connection over a limit is refused before any protocol sees it.
    pub(super) bounds: ConnectionBounds,
    pub(super) stream: libp2p_stream::Behaviour,
    pub(super) kad: kad::Behaviour<ProviderStore>,
    pub(super) identify: identify::Behaviour,
    /// LAN discovery, only with `--mdns`.
    pub(super) mdns: Toggle<mdns::tokio::Behaviour>,
    /// Probes this node's reachability (`[nat] autonat`).
    pub(super) autonat: Toggle<autonat::v2::client::Behaviour>,
    /// Answers others' probes (not on one-shot clients).
    pub(super) autonat_server: Toggle<autonat::v2::server::Behaviour>,
    /// Relays for private nodes, within `[relay]`'s limits (not on one-shot clients, nor
    /// with `[relay] enabled = false`; serves only while its gate is open).
    pub(super) relay: Toggle<relay::Behaviour>,
    /// Reserves slots on relays and reaches peers through them.
    pub(super) relay_client: relay::client::Behaviour,
    /// Hole punching over relayed connections (`[nat] hole_punching`).
    pub(super) dcutr: Toggle<dcutr::Behaviour>,
}

/// The Kademlia protocol id.
pub(super) fn kad_protocol() -> StreamProtocol {
    StreamProtocol::new(KAD_PROTOCOL)
}

/// The relay service's handles the network task keeps: the gate that opens it, and its
/// limits on new circuits (told how each admitted request ended).
pub(super) type RelayHandles = (ReservationGate, CircuitLimits);

/// Builds the swarm: QUIC with Commons' windows, TCP, relayed connections, and the
/// behaviours set up by `config`; returns it with the relay service's handles (the gate
/// that opens it, its limits on new circuits) and the meter of its connections' bytes by
/// path.
pub(super) fn build_swarm(
    key: Keypair,
    config: &DiscoveryConfig,
) -> Result<(Swarm<Behaviour>, RelayHandles, PathMeter), NetError> {
    let failed = |e: &dyn std::fmt::Display| NetError::Listen {
        addr: libp2p::Multiaddr::empty(),
        reason: e.to_string(),
    };
    let gate = ReservationGate::default();
    gate.set_open(config.relay.enabled == Some(true));
    let relay_gate = gate.clone();
    let circuits = CircuitLimits::new(
        config.relay.max_circuit_bytes,
        config.relay.budget_bytes_per_hour,
    );
    let relay_circuits = circuits.clone();
    let mut meter = PathMeter::default();
    let swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| failed(&e))?
        .with_quic_config(|mut quic| {
            quic.max_stream_data = QUIC_STREAM_WINDOW;
            quic.max_connection_data = QUIC_CONNECTION_WINDOW;
            quic.max_concurrent_stream_limit = QUIC_MAX_STREAMS;
            quic
        })
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .map_err(|e| failed(&e))?
        .with_bandwidth_metrics(&mut meter.registry)
        .with_behaviour(|key, relay_client| {
            let local = key.public().to_peer_id();
            let mut kad_config = kad::Config::new(kad_protocol());
            kad_config
                .set_query_timeout(config.query_timeout)
                .set_provider_record_ttl(Some(config.record_ttl))
                // Our own paced publisher re-announces (see discovery::publisher): the
                // built-in job re-publishes every key at once.
                .set_provider_publication_interval(None)
                .set_record_ttl(None)
                .set_publication_interval(None)
                .set_replication_interval(None)
                .set_max_packet_size(KAD_MAX_PACKET)
                // Peers enter the routing table only through the task's address-diversity
                // rule (`discovery::diversity`): Kademlia reports them as routable instead.
                .set_kbucket_inserts(kad::BucketInserts::Manual)
                .set_replication_factor(NonZeroUsize::new(20).unwrap_or(NonZeroUsize::MIN));
            let store = ProviderStore::new(local, config.limits);
            let mut kad = kad::Behaviour::with_config(local, store, kad_config);
            // Set, never left to Kademlia: it would turn server on any confirmed address,
            // relayed ones too. `auto` answers queries everywhere, and who may store this
            // node in a routing table is decided by scope (`net::reachability`): a LAN of
            // private nodes forms a DHT with default settings, and public peers never take
            // private addresses in.
            kad.set_mode(Some(match config.mode {
                DhtMode::Server | DhtMode::Auto => kad::Mode::Server,
                DhtMode::Client => kad::Mode::Client,
            }));
            let identify = identify::Behaviour::new(
                identify::Config::new(IDENTIFY_PROTOCOL.into(), key.public())
                    .with_agent_version(format!("commons/{}", env!("CARGO_PKG_VERSION")))
                    .with_push_listen_addr_updates(true),
            );
            let mdns = if config.mdns {
                Some(mdns::tokio::Behaviour::new(mdns::Config::default(), local)?)
            } else {
                None
            };
            let serving = config.mode != DhtMode::Client;
            let autonat = config
                .nat
                .autonat
                .then(autonat::v2::client::Behaviour::default);
            let autonat_server =
                (config.nat.autonat && serving).then(autonat::v2::server::Behaviour::default);
            let relay = (serving && config.relay.enabled != Some(false)).then(|| {
                let mut relay = relay::Behaviour::new(
                    local,
                    behaviour_config(&config.relay, relay_gate, relay_circuits),
                );
                // Set once, before any connection: libp2p's automatic status follows the
                // external addresses and tells every connection's handler of a change,
                // relayed ones too, whose handler cannot take it (a panic in libp2p-relay
                // 0.22). Whether it serves is the gate's decision instead.
                relay.set_status(Some(relay::Status::Enable));
                relay
            });
            let dcutr = config
                .nat
                .hole_punching
                .then(|| dcutr::Behaviour::new(local));
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Behaviour {
                bounds: ConnectionBounds::new(
                    config.connection_limits,
                    config.exempt_local_addresses,
                ),
                stream: libp2p_stream::Behaviour::new(),
                kad,
                identify,
                mdns: mdns.into(),
                autonat: autonat.into(),
                autonat_server: autonat_server.into(),
                relay: relay.into(),
                relay_client,
                dcutr: dcutr.into(),
            })
        })
        .map_err(|e| failed(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT))
        .build();
    Ok((swarm, (gate, circuits), meter))
}
