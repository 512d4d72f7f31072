//! What the host speaks: the transfer streams, Kademlia and identify, on one QUIC swarm,
//! within the connection bounds of [`super::limits`].

use std::num::NonZeroUsize;

use libp2p::{
    identify,
    identity::Keypair,
    kad, mdns,
    swarm::{behaviour::toggle::Toggle, NetworkBehaviour},
    StreamProtocol, Swarm,
};

use super::{
    limits::ConnectionBounds, NetError, IDLE_CONNECTION_TIMEOUT, QUIC_CONNECTION_WINDOW,
    QUIC_MAX_STREAMS, QUIC_STREAM_WINDOW,
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
}

/// The Kademlia protocol id.
pub(super) fn kad_protocol() -> StreamProtocol {
    StreamProtocol::new(KAD_PROTOCOL)
}

/// Builds the swarm: QUIC with Commons' windows, and the behaviours set up by `config`.
pub(super) fn build_swarm(
    key: Keypair,
    config: &DiscoveryConfig,
) -> Result<Swarm<Behaviour>, NetError> {
    let swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_quic_config(|mut quic| {
            quic.max_stream_data = QUIC_STREAM_WINDOW;
            quic.max_connection_data = QUIC_CONNECTION_WINDOW;
            quic.max_concurrent_stream_limit = QUIC_MAX_STREAMS;
            quic
        })
        .with_behaviour(|key| {
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
            match config.mode {
                DhtMode::Server => kad.set_mode(Some(kad::Mode::Server)),
                DhtMode::Client => kad.set_mode(Some(kad::Mode::Client)),
                DhtMode::Auto => kad.set_mode(None),
            }
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
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Behaviour {
                bounds: ConnectionBounds::new(
                    config.connection_limits,
                    config.exempt_local_addresses,
                ),
                stream: libp2p_stream::Behaviour::new(),
                kad,
                identify,
                mdns: mdns.into(),
            })
        })
        .map_err(|e| NetError::Listen {
            addr: libp2p::Multiaddr::empty(),
            reason: e.to_string(),
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT))
        .build();
    Ok(swarm)
}
