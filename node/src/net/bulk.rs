//! The bulk-data endpoint: a QUIC endpoint of Commons' own (quinn) beside the libp2p host,
//! carrying `/commons/transfer/1` requests when both sides have one.
//!
//! Why a second endpoint: measured on loopback, the libp2p stream cannot move bytes at half
//! of nginx's rate even with nothing stored or verified, and libp2p-tls always prefers
//! ChaCha20, which it does not let be changed; AES-GCM moves 1.3-1.5x as much
//! (`docs/benchmarks.md`, "Bulk-data endpoint"). This endpoint prefers AES-GCM, and lets
//! MTU discovery grow its datagrams to [`BULK_MAX_UDP_PAYLOAD`] where the path allows.
//!
//! Same identity: certificates are libp2p-tls's (the node's ed25519 key signs the
//! certificate's key), both sides must present one, and a client dialing peer X accepts
//! only X's certificate. The port is advertised through libp2p (`Request::Bulk`); anything
//! that fails here falls back to libp2p streams, so the endpoint is an accelerator, never a
//! requirement.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use libp2p::{
    futures::{AsyncRead, AsyncWrite},
    identity::Keypair,
    PeerId,
};
use quinn::{
    crypto::rustls::{QuicClientConfig, QuicServerConfig},
    IdleTimeout, MtuDiscoveryConfig, TransportConfig, VarInt,
};
use rustls::{
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::aws_lc_rs::cipher_suite,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime},
    server::danger::{ClientCertVerified, ClientCertVerifier},
    DigitallySignedStruct, DistinguishedName, SignatureScheme,
};
use tokio::sync::mpsc;

use super::{
    bulk_socket::{segments_per_send, BulkSocket},
    QUIC_CONNECTION_WINDOW, QUIC_MAX_STREAMS, QUIC_STREAM_WINDOW,
};

/// ALPN of the bulk endpoint: the transfer protocol's id, so the version is negotiated in
/// the handshake.
pub const BULK_ALPN: &[u8] = commons_protocol::wire::TRANSFER_PROTOCOL.as_bytes();
/// Largest UDP payload sent or accepted (MTU discovery's upper bound). Where the path
/// allows it (loopback, jumbo-frame links) datagrams grow to this size, and each carries
/// 4.4 times the bytes of a 1,472-byte one for the same per-packet work: the seeder spent
/// a quarter less CPU per GiB on loopback (docs/benchmarks.md, cost part 9). On a
/// 1,500-byte path MTU discovery ends near 1,472 (about 1,466, after a few lost probes of
/// larger sizes), and a peer that accepts less (an older node says 1,472 in its transport
/// parameters) is sent no more than it accepts.
///
/// Why 6,500: the socket caps how many datagrams go in one segmented send so that the
/// batch fits one UDP send (`bulk_socket`), by this largest size, on every path; at 6,500
/// that is ten, quinn's most, so batches on 1,500-byte paths stay as large as before. At
/// 8,972 (jumbo frames' largest) they would be seven.
pub const BULK_MAX_UDP_PAYLOAD: u16 = 6_500;
/// Datagrams quinn 0.11 puts in one segmented send at most (its private
/// `MAX_TRANSMIT_SEGMENTS`). Only checked against [`BULK_MAX_UDP_PAYLOAD`]: should quinn
/// change it, the socket's cap still keeps every send whole.
const QUINN_MAX_SEGMENTS: usize = 10;
const _: () = assert!(segments_per_send(BULK_MAX_UDP_PAYLOAD) >= QUINN_MAX_SEGMENTS);
/// A connection silent this long is closed (no keep-alive): unused connections of a
/// long-running node go away (the next request re-dials, one round trip), and a peer that
/// vanished mid-transfer is noticed as fast as on libp2p-quic (10 s idle timeout there).
pub const BULK_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a peer without a reachable bulk endpoint is not asked again.
pub const BULK_RETRY_AFTER: Duration = Duration::from_secs(600);
/// Peers whose bulk route is remembered, at most (the map is cleared beyond).
const MAX_ROUTES: usize = 10_000;
/// Socket buffers asked of the kernel (capped by `net.core.rmem_max`/`wmem_max`), so a
/// receiver that falls behind for a moment drops fewer datagrams than the default ~208 KiB
/// (about 140 full datagrams) would. Not measured separately.
pub const BULK_SOCKET_BUFFER: usize = 4 << 20;
/// Connections the endpoint accepts at once; more are refused (clients fall back to
/// libp2p).
pub const BULK_MAX_CONNECTIONS: usize = 512;
/// How long a dial may take before the client falls back to libp2p.
pub const BULK_DIAL_TIMEOUT: Duration = Duration::from_secs(3);
/// Streams accepted but not yet taken by the server, across connections.
const ACCEPT_QUEUE: usize = 64;

/// Why the bulk endpoint could not start or reach a peer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BulkError {
    /// The UDP socket could not be bound.
    #[error("cannot bind the bulk endpoint on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// TLS or QUIC could not be configured (a bug, not a runtime condition).
    #[error("bulk endpoint configuration: {0}")]
    Config(String),
    /// The peer could not be reached, or is not who we dialed.
    #[error("bulk connection to {peer} at {addr}: {reason}")]
    Connect {
        /// The peer (boxed: a PeerId is 80 bytes).
        peer: Box<PeerId>,
        /// Where.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
}

/// Knobs the transport benchmark varies; nodes use [`BulkTuning::default`] with `offload`
/// from their config (`bulk_offload`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkTuning {
    /// Largest UDP payload (MTU discovery's upper bound); segmented sends hold as many of
    /// these as fit one UDP send.
    pub max_udp_payload: u16,
    /// Offer AES-GCM before ChaCha20-Poly1305.
    pub prefer_aes: bool,
    /// Let the kernel segment sends and coalesce receives (UDP GSO/GRO) where it can; off,
    /// one datagram per send call and none coalesced ([`BulkSocket::no_offload`]).
    pub offload: bool,
}

impl Default for BulkTuning {
    fn default() -> Self {
        Self {
            max_udp_payload: BULK_MAX_UDP_PAYLOAD,
            prefer_aes: true,
            offload: true,
        }
    }
}

/// A bidirectional request stream on the bulk endpoint, read and written like a libp2p
/// stream.
#[derive(Debug)]
pub struct BulkStream {
    send: quinn::SendStream,
    recv: quinn::RecvStream,
}

impl AsyncRead for BulkStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        AsyncRead::poll_read(Pin::new(&mut self.recv), cx, buf)
    }
}

impl AsyncWrite for BulkStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        AsyncWrite::poll_write(Pin::new(&mut self.send), cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        AsyncWrite::poll_flush(Pin::new(&mut self.send), cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        AsyncWrite::poll_close(Pin::new(&mut self.send), cx)
    }
}

impl BulkStream {
    /// Queues `chunk` for sending without copying it into quinn's send buffer.
    pub async fn write_chunk(&mut self, chunk: Bytes) -> std::io::Result<()> {
        Ok(self.send.write_chunk(chunk).await?)
    }
}

/// Where a peer's bulk endpoint is, as far as we know.
#[derive(Debug, Clone, Copy)]
enum Route {
    At(SocketAddr),
    Unavailable(Instant),
}

/// Request streams accepted by a serving endpoint, each with the peer that opened it.
pub type BulkIncoming = mpsc::Receiver<(PeerId, BulkStream)>;

/// The node's bulk endpoint: serves when bound to a listen address, and dials peers'.
pub struct BulkEndpoint {
    /// The serving endpoint, if this node serves.
    endpoint: Option<quinn::Endpoint>,
    /// This node's libp2p-tls certificate and its key, made once.
    certificate: Certificate,
    tuning: BulkTuning,
    /// Client endpoints by address family, for peers the serving socket cannot reach (or
    /// for a node that serves nothing), bound on first use.
    clients: Mutex<HashMap<bool, quinn::Endpoint>>,
    /// Open connections to peers, reused for every request.
    connections: Mutex<HashMap<PeerId, quinn::Connection>>,
    /// Peers' bulk addresses, or when they were found to have none.
    routes: Mutex<HashMap<PeerId, Route>>,
}

impl std::fmt::Debug for BulkEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BulkEndpoint")
            .field("local_addr", &self.local_addr().ok())
            .finish()
    }
}

impl BulkEndpoint {
    /// Binds a serving endpoint on `addr` (port 0: any free port). Accepted request
    /// streams arrive, with the peer that opened them, on the returned receiver. Must be
    /// called inside a tokio runtime.
    pub fn bind(
        key: Keypair,
        addr: SocketAddr,
        tuning: BulkTuning,
    ) -> Result<(Self, BulkIncoming), BulkError> {
        let mut bulk = Self::client(&key, tuning)?;
        let endpoint = open_endpoint(&bulk.certificate, addr, tuning, true)?;
        let (tx, rx) = mpsc::channel(ACCEPT_QUEUE);
        tokio::spawn(accept_loop(endpoint.clone(), tx));
        bulk.endpoint = Some(endpoint);
        Ok((bulk, rx))
    }

    /// An endpoint that only dials (a one-shot `commons get`); sockets are bound on first
    /// use.
    pub fn client(key: &Keypair, tuning: BulkTuning) -> Result<Self, BulkError> {
        Ok(Self {
            endpoint: None,
            certificate: certificate(key)?,
            tuning,
            clients: Mutex::default(),
            connections: Mutex::default(),
            routes: Mutex::default(),
        })
    }

    /// The address the serving endpoint is bound to.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match &self.endpoint {
            Some(e) => e.local_addr(),
            None => Err(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "a client-only bulk endpoint serves nothing",
            )),
        }
    }

    /// What is known of `peer`'s bulk endpoint: `None` if nothing, `Some(None)` if it has
    /// none we can reach (asked less than [`BULK_RETRY_AFTER`] ago), else its address.
    pub fn route(&self, peer: &PeerId) -> Option<Option<SocketAddr>> {
        let routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        match routes.get(peer)? {
            Route::At(addr) => Some(Some(*addr)),
            Route::Unavailable(since) if since.elapsed() < BULK_RETRY_AFTER => Some(None),
            Route::Unavailable(_) => None,
        }
    }

    /// Records where `peer`'s bulk endpoint is, or that it has none we can use.
    pub fn set_route(&self, peer: PeerId, addr: Option<SocketAddr>) {
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        if routes.len() >= MAX_ROUTES {
            routes.clear();
        }
        let route = addr.map_or(Route::Unavailable(Instant::now()), Route::At);
        routes.insert(peer, route);
    }

    /// Forgets what is known of `peer`'s bulk endpoint (it is asked again next time).
    pub fn forget_route(&self, peer: &PeerId) {
        self.routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(peer);
    }

    /// Opens a request stream to `peer`, whose bulk endpoint is at `addr`: on the open
    /// connection if there is one, else over a new one (within [`BULK_DIAL_TIMEOUT`]).
    pub async fn open_stream(
        &self,
        peer: PeerId,
        addr: SocketAddr,
    ) -> Result<BulkStream, BulkError> {
        let err = |reason: String| BulkError::Connect {
            peer: Box::new(peer),
            addr,
            reason,
        };
        let cached = self.lock_connections().get(&peer).cloned();
        let connection = match cached {
            Some(c) if c.close_reason().is_none() => c,
            _ => {
                let c = self.connect(peer, addr).await?;
                self.lock_connections().insert(peer, c.clone());
                c
            }
        };
        match connection.open_bi().await {
            Ok((send, recv)) => Ok(BulkStream { send, recv }),
            Err(e) => {
                self.lock_connections().remove(&peer);
                Err(err(e.to_string()))
            }
        }
    }

    /// Whether a connection to `peer` is open now.
    #[cfg(test)]
    fn is_connected(&self, peer: &PeerId) -> bool {
        self.lock_connections()
            .get(peer)
            .is_some_and(|c| c.close_reason().is_none())
    }

    async fn connect(
        &self,
        peer: PeerId,
        addr: SocketAddr,
    ) -> Result<quinn::Connection, BulkError> {
        let err = |reason: String| BulkError::Connect {
            peer: Box::new(peer),
            addr,
            reason,
        };
        let endpoint = self.endpoint_for(addr)?;
        let config = client_config(&self.certificate, Some(peer), self.tuning)?;
        let connecting = endpoint
            .connect_with(config, addr, "commons")
            .map_err(|e| err(e.to_string()))?;
        match tokio::time::timeout(BULK_DIAL_TIMEOUT, connecting).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(err(e.to_string())),
            Err(_) => Err(err(format!(
                "no handshake within {} s",
                BULK_DIAL_TIMEOUT.as_secs()
            ))),
        }
    }

    /// The serving endpoint when its address family matches `addr`'s, else a client
    /// endpoint of the right family.
    fn endpoint_for(&self, addr: SocketAddr) -> Result<quinn::Endpoint, BulkError> {
        if let Some(serving) = &self.endpoint {
            if serving.local_addr().is_ok_and(|l| reaches(l, addr.ip())) {
                return Ok(serving.clone());
            }
        }
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = clients.get(&addr.is_ipv4()) {
            return Ok(e.clone());
        }
        let any: IpAddr = if addr.is_ipv4() {
            Ipv4Addr::UNSPECIFIED.into()
        } else {
            Ipv6Addr::UNSPECIFIED.into()
        };
        let e = open_endpoint(
            &self.certificate,
            SocketAddr::new(any, 0),
            self.tuning,
            false,
        )?;
        clients.insert(addr.is_ipv4(), e.clone());
        Ok(e)
    }

    fn lock_connections(&self) -> std::sync::MutexGuard<'_, HashMap<PeerId, quinn::Connection>> {
        let mut map = self.connections.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, c| c.close_reason().is_none());
        map
    }
}

impl Drop for BulkEndpoint {
    fn drop(&mut self) {
        if let Some(e) = &self.endpoint {
            e.close(VarInt::from_u32(0), b"shutting down");
        }
    }
}

/// Whether a socket bound to `local` can exchange datagrams with `remote`: same family,
/// and loopback only with loopback unless bound to all addresses.
pub fn reaches(local: SocketAddr, remote: IpAddr) -> bool {
    local.is_ipv4() == remote.is_ipv4()
        && (local.ip().is_unspecified() || local.ip().is_loopback() == remote.is_loopback())
}

/// A quinn endpoint on `addr` with Commons' transport settings; `serve` adds the server
/// side.
fn open_endpoint(
    certificate: &Certificate,
    addr: SocketAddr,
    tuning: BulkTuning,
    serve: bool,
) -> Result<quinn::Endpoint, BulkError> {
    let bind_err = |source: std::io::Error| BulkError::Bind { addr, source };
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )
    .map_err(bind_err)?;
    if addr.is_ipv6() {
        // Like libp2p's listeners: an IPv6 address serves IPv6 only.
        socket.set_only_v6(true).map_err(bind_err)?;
    }
    // Best effort: the kernel caps these at its maximum.
    let _ = socket.set_recv_buffer_size(BULK_SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(BULK_SOCKET_BUFFER);
    socket.bind(&addr.into()).map_err(bind_err)?;
    let socket: UdpSocket = socket.into();
    let mut endpoint_config = quinn::EndpointConfig::default();
    endpoint_config
        .max_udp_payload_size(tuning.max_udp_payload)
        .map_err(|e| BulkError::Config(e.to_string()))?;
    let server = if serve {
        let tls = server_tls(certificate, tuning)?;
        let crypto =
            QuicServerConfig::try_from(tls).map_err(|e| BulkError::Config(e.to_string()))?;
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        config.transport_config(Arc::new(transport(tuning)?));
        Some(config)
    } else {
        None
    };
    let runtime = Arc::new(quinn::TokioRuntime);
    let socket = if tuning.offload {
        BulkSocket::fitted(socket, &*runtime, tuning.max_udp_payload)
    } else {
        BulkSocket::no_offload(socket, &*runtime)
    }
    .map_err(bind_err)?;
    quinn::Endpoint::new_with_abstract_socket(endpoint_config, server, socket, runtime)
        .map_err(bind_err)
}

/// Windows and stream limits as on the libp2p host; MTU discovery up to the tuning's bound.
fn transport(tuning: BulkTuning) -> Result<TransportConfig, BulkError> {
    let mut t = TransportConfig::default();
    t.stream_receive_window(VarInt::from_u32(QUIC_STREAM_WINDOW))
        .receive_window(VarInt::from_u32(QUIC_CONNECTION_WINDOW))
        .send_window(u64::from(QUIC_CONNECTION_WINDOW))
        .max_concurrent_bidi_streams(VarInt::from_u32(QUIC_MAX_STREAMS))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .max_idle_timeout(Some(
            IdleTimeout::try_from(BULK_IDLE_TIMEOUT)
                .map_err(|e| BulkError::Config(e.to_string()))?,
        ));
    let mut mtu = MtuDiscoveryConfig::default();
    mtu.upper_bound(tuning.max_udp_payload);
    t.mtu_discovery_config(Some(mtu));
    Ok(t)
}

fn crypto_provider(tuning: BulkTuning) -> Arc<rustls::crypto::CryptoProvider> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.cipher_suites = if tuning.prefer_aes {
        vec![
            cipher_suite::TLS13_AES_128_GCM_SHA256,
            cipher_suite::TLS13_AES_256_GCM_SHA384,
            cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        ]
    } else {
        vec![
            cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
            cipher_suite::TLS13_AES_128_GCM_SHA256,
        ]
    };
    Arc::new(provider)
}

/// A libp2p-tls certificate and the key it certifies.
type Certificate = (CertificateDer<'static>, PrivateKeyDer<'static>);

fn certificate(key: &Keypair) -> Result<Certificate, BulkError> {
    libp2p_tls::certificate::generate(key).map_err(|e| BulkError::Config(e.to_string()))
}

/// Always presents our certificate. (rustls' own single-certificate setup runs webpki's
/// checks, which reject libp2p's critical extension.)
#[derive(Debug)]
struct OwnCertificate(Arc<rustls::sign::CertifiedKey>);

impl OwnCertificate {
    fn new(
        (cert, private): &Certificate,
        provider: &rustls::crypto::CryptoProvider,
    ) -> Result<Arc<Self>, BulkError> {
        let key = provider
            .key_provider
            .load_private_key(private.clone_key())
            .map_err(|e| BulkError::Config(e.to_string()))?;
        Ok(Arc::new(Self(Arc::new(rustls::sign::CertifiedKey::new(
            vec![cert.clone()],
            key,
        )))))
    }
}

impl rustls::server::ResolvesServerCert for OwnCertificate {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
}

impl rustls::client::ResolvesClientCert for OwnCertificate {
    fn resolve(
        &self,
        _hints: &[&[u8]],
        _schemes: &[SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

fn server_tls(
    certificate: &Certificate,
    tuning: BulkTuning,
) -> Result<rustls::ServerConfig, BulkError> {
    let provider = crypto_provider(tuning);
    let own = OwnCertificate::new(certificate, &provider)?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| BulkError::Config(e.to_string()))?
        .with_client_cert_verifier(Arc::new(PeerVerifier { expected: None }))
        .with_cert_resolver(own);
    tls.alpn_protocols = vec![BULK_ALPN.to_vec()];
    // Our preference (AES first) decides, not the client's.
    tls.ignore_client_order = true;
    Ok(tls)
}

fn client_config(
    certificate: &Certificate,
    expected: Option<PeerId>,
    tuning: BulkTuning,
) -> Result<quinn::ClientConfig, BulkError> {
    let provider = crypto_provider(tuning);
    let own = OwnCertificate::new(certificate, &provider)?;
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| BulkError::Config(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PeerVerifier { expected }))
        .with_client_cert_resolver(own);
    tls.alpn_protocols = vec![BULK_ALPN.to_vec()];
    let crypto = QuicClientConfig::try_from(tls).map_err(|e| BulkError::Config(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(transport(tuning)?));
    Ok(config)
}

/// Accepts connections, and each connection's request streams, until the endpoint closes.
async fn accept_loop(endpoint: quinn::Endpoint, tx: mpsc::Sender<(PeerId, BulkStream)>) {
    while let Some(incoming) = endpoint.accept().await {
        if endpoint.open_connections() >= BULK_MAX_CONNECTIONS {
            incoming.refuse();
            continue;
        }
        let tx = tx.clone();
        tokio::spawn(async move {
            let connection = match incoming.await {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(error = %e, "bulk handshake failed");
                    return;
                }
            };
            let Some(peer) = peer_of(&connection) else {
                connection.close(VarInt::from_u32(1), b"no libp2p certificate");
                return;
            };
            while let Ok((send, recv)) = connection.accept_bi().await {
                if tx.send((peer, BulkStream { send, recv })).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// The PeerId in the certificate the remote side presented (verified in the handshake).
fn peer_of(connection: &quinn::Connection) -> Option<PeerId> {
    let identity = connection.peer_identity()?;
    let certs = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    let cert = certs.first()?;
    libp2p_tls::certificate::parse(cert)
        .ok()
        .map(|c| c.peer_id())
}

/// Checks libp2p-tls certificates: exactly one, self-signed, carrying a valid signature by
/// the host key; for a server, the host key must be the `expected` peer's.
#[derive(Debug)]
struct PeerVerifier {
    expected: Option<PeerId>,
}

fn bad_cert(e: impl std::fmt::Display) -> rustls::Error {
    rustls::Error::General(format!("not a valid libp2p certificate: {e}"))
}

impl PeerVerifier {
    fn check(
        &self,
        end: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Result<(), rustls::Error> {
        if !intermediates.is_empty() {
            return Err(bad_cert("more than one certificate"));
        }
        let peer = libp2p_tls::certificate::parse(end)
            .map_err(bad_cert)?
            .peer_id();
        match self.expected {
            Some(expected) if expected != peer => Err(rustls::Error::General(format!(
                "the certificate is {peer}'s, not {expected}'s"
            ))),
            _ => Ok(()),
        }
    }

    fn signature(
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        libp2p_tls::certificate::parse(cert)
            .map_err(bad_cert)?
            .verify_signature(dss.scheme, message, dss.signature())
            .map_err(bad_cert)?;
        Ok(HandshakeSignatureValid::assertion())
    }

    fn schemes() -> Vec<SignatureScheme> {
        vec![
            SignatureScheme::ECDSA_NISTP256_SHA256,
            SignatureScheme::ECDSA_NISTP384_SHA384,
            SignatureScheme::ED25519,
        ]
    }
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity, intermediates)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not offered".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Self::signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        Self::schemes()
    }
}

impl ClientCertVerifier for PeerVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity, intermediates)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not offered".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Self::signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        Self::schemes()
    }
}

#[cfg(test)]
mod tests {
    use libp2p::futures::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn loopback() -> SocketAddr {
        "127.0.0.1:0".parse().expect("address")
    }

    #[tokio::test]
    async fn request_stream_reaches_the_named_peer_and_names_the_client() {
        let (server_key, client_key) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
        let server_peer = server_key.public().to_peer_id();
        let client_peer = client_key.public().to_peer_id();
        let (server, mut incoming) =
            BulkEndpoint::bind(server_key, loopback(), BulkTuning::default()).expect("bind");
        let addr = server.local_addr().expect("addr");
        let (client, _) =
            BulkEndpoint::bind(client_key, loopback(), BulkTuning::default()).expect("bind");
        let echo = tokio::spawn(async move {
            let (peer, mut stream) = incoming.recv().await.expect("stream");
            let mut got = Vec::new();
            stream.read_to_end(&mut got).await.expect("read");
            stream.write_all(&got).await.expect("write");
            stream.close().await.expect("close");
            peer
        });
        let mut stream = client.open_stream(server_peer, addr).await.expect("open");
        stream.write_all(b"hello").await.expect("write");
        stream.close().await.expect("close");
        let mut back = Vec::new();
        stream.read_to_end(&mut back).await.expect("read");
        assert_eq!(back, b"hello");
        assert_eq!(echo.await.expect("join"), client_peer);
        assert!(client.is_connected(&server_peer));
    }

    /// Sends `bytes` from a client tuned `client_tuning` to a server tuned `server_tuning`
    /// over loopback, reads them back whole on the server, and returns the largest datagram
    /// the client's connection reached (MTU discovery runs while the bytes flow).
    async fn path_mtu_after_sending(
        client_tuning: BulkTuning,
        server_tuning: BulkTuning,
        bytes: usize,
    ) -> u16 {
        let server_key = Keypair::generate_ed25519();
        let server_peer = server_key.public().to_peer_id();
        let (server, mut incoming) =
            BulkEndpoint::bind(server_key, loopback(), server_tuning).expect("bind server");
        let addr = server.local_addr().expect("addr");
        let (client, _) =
            BulkEndpoint::bind(Keypair::generate_ed25519(), loopback(), client_tuning)
                .expect("bind client");
        let sink = tokio::spawn(async move {
            let (_, mut stream) = incoming.recv().await.expect("stream");
            let mut got = Vec::new();
            stream.read_to_end(&mut got).await.expect("read");
            got
        });
        let sent: Vec<u8> = (0..bytes).map(|i| (i * 31 % 251) as u8).collect();
        let mut stream = client.open_stream(server_peer, addr).await.expect("open");
        stream.write_all(&sent).await.expect("write");
        stream.close().await.expect("close");
        assert!(
            sink.await.expect("join") == sent,
            "the bytes arrived changed"
        );
        let connection = client.lock_connections().get(&server_peer).cloned();
        let connection = connection.expect("the connection is open");
        // Discovery probes one size per round trip: give it a moment after the bytes.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mtu = connection.stats().path.current_mtu;
            if mtu
                >= client_tuning
                    .max_udp_payload
                    .min(server_tuning.max_udp_payload)
                || Instant::now() > deadline
            {
                return mtu;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn datagrams_grow_to_the_largest_payload_where_the_path_allows() {
        let tuning = BulkTuning::default();
        let mtu = path_mtu_after_sending(tuning, tuning, 4 << 20).await;
        // Loopback carries any size up to 64 KiB. A probe dropped three times (a receive
        // buffer at the kernel's default 208 KiB fills) ends the search a little short.
        assert!(
            mtu > BULK_MAX_UDP_PAYLOAD / 10 * 9 && mtu <= BULK_MAX_UDP_PAYLOAD,
            "{mtu}"
        );
    }

    #[tokio::test]
    async fn a_peer_that_accepts_only_1472_byte_datagrams_is_sent_no_larger() {
        // What nodes before the larger payload said in their transport parameters.
        let older = BulkTuning {
            max_udp_payload: 1_472,
            ..BulkTuning::default()
        };
        let mtu = path_mtu_after_sending(BulkTuning::default(), older, 4 << 20).await;
        assert!((1_300..=1_472).contains(&mtu), "{mtu}");
    }

    /// Ten 8,972-byte datagrams do not fit one UDP send: without the socket's cap every
    /// full batch was lost, quinn took that for a black hole and fell back to 1,200 bytes.
    #[tokio::test]
    async fn jumbo_datagrams_go_fewer_to_a_send_and_arrive() {
        let jumbo = BulkTuning {
            max_udp_payload: 8_972,
            ..BulkTuning::default()
        };
        let mtu = path_mtu_after_sending(jumbo, jumbo, 4 << 20).await;
        // Short of 8,972 only if a probe was dropped three times (see above).
        assert!(mtu > 8_000 && mtu <= 8_972, "{mtu}");
    }

    #[tokio::test]
    async fn a_server_with_another_key_is_refused() {
        let server_key = Keypair::generate_ed25519();
        let (server, _incoming) =
            BulkEndpoint::bind(server_key, loopback(), BulkTuning::default()).expect("bind");
        let addr = server.local_addr().expect("addr");
        let (client, _) = BulkEndpoint::bind(
            Keypair::generate_ed25519(),
            loopback(),
            BulkTuning::default(),
        )
        .expect("bind");
        let impostor_for = Keypair::generate_ed25519().public().to_peer_id();
        let err = client
            .open_stream(impostor_for, addr)
            .await
            .expect_err("another key must be refused");
        assert!(err.to_string().contains(&impostor_for.to_string()), "{err}");
        assert!(!client.is_connected(&impostor_for));
    }
}
