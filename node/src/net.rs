//! The node's one libp2p host: QUIC, one identity, one UDP port.
//!
//! The swarm runs in its own task; the rest of the node talks to it through [`Host`]:
//! opening and accepting streams via `libp2p-stream`'s `Control`, dialling through a small
//! command channel. Discovery (Kademlia, identify) joins this same host later.

use std::{collections::HashMap, time::Duration};

use libp2p::{
    futures::StreamExt,
    identity::Keypair,
    multiaddr::Protocol,
    swarm::{dial_opts::DialOpts, SwarmEvent},
    Multiaddr, PeerId, StreamProtocol,
};
use tokio::sync::{mpsc, oneshot, watch};

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
const COMMAND_QUEUE: usize = 64;

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
    /// The host task has stopped.
    #[error("the network host has stopped")]
    Stopped,
}

enum Command {
    Dial {
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        reply: oneshot::Sender<Result<(), String>>,
    },
}

/// A handle on the running host. Cheap to clone.
#[derive(Clone)]
pub struct Host {
    peer_id: PeerId,
    control: libp2p_stream::Control,
    commands: mpsc::Sender<Command>,
    listen_addrs: watch::Receiver<Vec<Multiaddr>>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("peer_id", &self.peer_id)
            .finish()
    }
}

impl Host {
    /// Starts the host on `listen` addresses (e.g. `/ip4/0.0.0.0/udp/4433/quic-v1`).
    /// Must be called inside a tokio runtime.
    pub async fn start(key: Keypair, listen: &[Multiaddr]) -> Result<Self, NetError> {
        let peer_id = key.public().to_peer_id();
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key)
            .with_tokio()
            .with_quic_config(|mut config| {
                config.max_stream_data = QUIC_STREAM_WINDOW;
                config.max_connection_data = QUIC_CONNECTION_WINDOW;
                config.max_concurrent_stream_limit = QUIC_MAX_STREAMS;
                config
            })
            .with_behaviour(|_| libp2p_stream::Behaviour::new())
            .map_err(|e| NetError::Listen {
                addr: Multiaddr::empty(),
                reason: e.to_string(),
            })?
            .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT))
            .build();
        for addr in listen {
            swarm
                .listen_on(addr.clone())
                .map_err(|e| NetError::Listen {
                    addr: addr.clone(),
                    reason: e.to_string(),
                })?;
        }
        let control = swarm.behaviour().new_control();
        let (commands, mut rx) = mpsc::channel(COMMAND_QUEUE);
        let (addrs_tx, listen_addrs) = watch::channel(Vec::new());
        tokio::spawn(async move {
            let mut pending: HashMap<PeerId, Vec<oneshot::Sender<Result<(), String>>>> =
                HashMap::new();
            loop {
                tokio::select! {
                    event = swarm.select_next_some() => match event {
                        SwarmEvent::NewListenAddr { address, .. } => {
                            tracing::info!(%address, "listening");
                            addrs_tx.send_modify(|a| a.push(address));
                        }
                        SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                            for reply in pending.remove(&peer_id).unwrap_or_default() {
                                let _ = reply.send(Ok(()));
                            }
                        }
                        SwarmEvent::OutgoingConnectionError { peer_id: Some(peer), error, .. } => {
                            for reply in pending.remove(&peer).unwrap_or_default() {
                                let _ = reply.send(Err(error.to_string()));
                            }
                        }
                        _ => {}
                    },
                    command = rx.recv() => match command {
                        Some(Command::Dial { peer, addrs, reply }) => {
                            if swarm.is_connected(&peer) {
                                let _ = reply.send(Ok(()));
                                continue;
                            }
                            let opts = DialOpts::peer_id(peer).addresses(addrs).build();
                            match swarm.dial(opts) {
                                Ok(()) => pending.entry(peer).or_default().push(reply),
                                Err(e) => { let _ = reply.send(Err(e.to_string())); }
                            }
                        }
                        None => break,
                    },
                }
            }
        });
        Ok(Self {
            peer_id,
            control,
            commands,
            listen_addrs,
        })
    }

    /// This node's PeerId.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Waits until the host listens on at least one address, then returns them all, each
    /// ending in `/p2p/<peer id>` so it can be dialled as printed.
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

    /// Connects to `peer` at `addrs` (no-op if already connected), within [`DIAL_TIMEOUT`].
    pub async fn connect(&self, peer: PeerId, addrs: Vec<Multiaddr>) -> Result<(), NetError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Dial { peer, addrs, reply })
            .await
            .map_err(|_| NetError::Stopped)?;
        match tokio::time::timeout(DIAL_TIMEOUT, rx).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(reason))) => Err(NetError::Dial { peer, reason }),
            Ok(Err(_)) => Err(NetError::Stopped),
            Err(_) => Err(NetError::Dial {
                peer,
                reason: format!("no answer within {} s", DIAL_TIMEOUT.as_secs()),
            }),
        }
    }

    /// The stream control, to open streams and accept them for a protocol.
    pub fn control(&self) -> libp2p_stream::Control {
        self.control.clone()
    }
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
