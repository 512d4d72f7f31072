//! The host's bounds, end to end on loopback: each connection limit with one peer over it,
//! and the routing table's address-diversity rule (at most 3 peers per /24, 2 per bucket).
//!
//! All of 127.0.0.0/8 is local on Linux, so nodes listening on 127.0.1.1 and 127.0.2.1 are
//! "other addresses" and "other /24s" for these tests; the node under test turns the
//! exemption of local addresses off (`exempt_local_addresses`) to be held to the rules.

mod common;

use std::time::Duration;

use commons_node::{
    discovery::{
        diversity::{MAX_PEERS_PER_RANGE, MAX_PEERS_PER_RANGE_PER_BUCKET},
        DhtMode, DiscoveryConfig,
    },
    net::{
        limits::{ConnectionLimits, MAX_CONNECTIONS_PER_IP, MAX_CONNECTIONS_PER_PEER},
        Host,
    },
};
use libp2p::{
    futures::StreamExt,
    identity::Keypair,
    kad::KBucketKey,
    swarm::{dial_opts::DialOpts, dial_opts::PeerCondition, dummy, SwarmEvent},
    Multiaddr, PeerId,
};

/// Long enough for anything on loopback; a test that waits this long has failed.
const PATIENCE: Duration = Duration::from_secs(15);

fn on(ip: &str) -> Vec<Multiaddr> {
    vec![format!("/ip4/{ip}/udp/0/quic-v1").parse().expect("addr")]
}

/// A node held to every rule on loopback, with `limits`.
fn strict(limits: ConnectionLimits) -> DiscoveryConfig {
    DiscoveryConfig {
        mode: DhtMode::Server,
        bulk: false,
        connection_limits: limits,
        exempt_local_addresses: false,
        ..DiscoveryConfig::default()
    }
}

fn plain() -> DiscoveryConfig {
    DiscoveryConfig {
        mode: DhtMode::Server,
        bulk: false,
        ..DiscoveryConfig::default()
    }
}

async fn start(key: Keypair, ip: &str, config: &DiscoveryConfig) -> Host {
    Host::start(key, &on(ip), config).await.expect("host")
}

/// Waits until `check` holds, or fails naming `what`.
async fn until<F: std::future::Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let waited = tokio::time::timeout(PATIENCE, async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "timed out waiting until {what}");
}

async fn connected(host: &Host, peer: PeerId) -> bool {
    let peer = peer.to_string();
    host.status()
        .await
        .expect("status")
        .connected
        .contains(&peer)
}

/// `b` dials `a`; `a` keeps the connection.
async fn admitted(a: &Host, b: &Host) {
    let addr = a.listen_addrs().await[0].clone();
    b.connect_addr(addr).await.expect("admitted");
    until("the connection is up at both ends", || async {
        connected(a, b.peer_id()).await && connected(b, a.peer_id()).await
    })
    .await;
}

/// `b` dials `a`; `a` refuses (before or after the handshake: `b` may see the connection
/// for a moment), and neither end keeps it.
async fn refused(a: &Host, b: &Host) {
    let addr = a.listen_addrs().await[0].clone();
    let _ = b.connect_addr(addr).await;
    until("the refused connection is gone", || async {
        !connected(b, a.peer_id()).await
    })
    .await;
    assert!(!connected(a, b.peer_id()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_gets_at_most_max_connections_per_ip() {
    let a = start(
        Keypair::generate_ed25519(),
        "127.0.0.1",
        &strict(ConnectionLimits::default()),
    )
    .await;
    let mut peers = Vec::new();
    for _ in 0..MAX_CONNECTIONS_PER_IP {
        let b = start(Keypair::generate_ed25519(), "127.0.0.1", &plain()).await;
        admitted(&a, &b).await;
        peers.push(b);
    }
    let one_more = start(Keypair::generate_ed25519(), "127.0.0.1", &plain()).await;
    refused(&a, &one_more).await;
    let elsewhere = start(Keypair::generate_ed25519(), "127.0.1.1", &plain()).await;
    admitted(&a, &elsewhere).await;
    assert_eq!(
        a.status().await.expect("status").connected.len(),
        MAX_CONNECTIONS_PER_IP + 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_is_exempt_from_the_per_ip_limit_by_default() {
    let a = start(Keypair::generate_ed25519(), "127.0.0.1", &plain()).await;
    let mut peers = Vec::new();
    for _ in 0..MAX_CONNECTIONS_PER_IP + 2 {
        let b = start(Keypair::generate_ed25519(), "127.0.0.1", &plain()).await;
        admitted(&a, &b).await;
        peers.push(b);
    }
    assert_eq!(
        a.status().await.expect("status").connected.len(),
        MAX_CONNECTIONS_PER_IP + 2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peers_connection_beyond_the_limit_replaces_its_oldest() {
    let a = start(
        Keypair::generate_ed25519(),
        "127.0.0.1",
        &strict(ConnectionLimits::default()),
    )
    .await;
    let addr = a.listen_addrs().await[0].clone();
    // A bare libp2p host, to open several connections to one peer (a `Host` reuses one).
    let mut raw = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_quic()
        .with_behaviour(|_| dummy::Behaviour)
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    let dial = |raw: &mut libp2p::Swarm<dummy::Behaviour>| {
        let opts = DialOpts::peer_id(a.peer_id())
            .addresses(vec![addr.clone()])
            .condition(PeerCondition::Always)
            .build();
        let id = opts.connection_id();
        raw.dial(opts).expect("dial");
        id
    };
    // The peer's first connections, up to the limit, all stay.
    let mut old = Vec::new();
    for _ in 0..MAX_CONNECTIONS_PER_PEER {
        old.push(dial(&mut raw));
    }
    let mut up = 0;
    let settled = tokio::time::timeout(PATIENCE, async {
        while up < MAX_CONNECTIONS_PER_PEER {
            match raw.select_next_some().await {
                SwarmEvent::ConnectionEstablished { .. } => up += 1,
                SwarmEvent::ConnectionClosed { .. }
                | SwarmEvent::OutgoingConnectionError { .. } => {
                    panic!("a connection within the limit failed")
                }
                _ => {}
            }
        }
    })
    .await;
    assert!(settled.is_ok(), "only {up} connections up");
    // One more (a client restarted after a crash, whose dead connections linger): it gets
    // in, and one of the old ones is closed instead.
    let new = dial(&mut raw);
    let (mut new_up, mut closed) = (false, Vec::new());
    let done = tokio::time::timeout(PATIENCE, async {
        while !new_up || closed.is_empty() {
            match raw.select_next_some().await {
                SwarmEvent::ConnectionEstablished { connection_id, .. } => {
                    new_up |= connection_id == new
                }
                SwarmEvent::ConnectionClosed { connection_id, .. } => closed.push(connection_id),
                SwarmEvent::OutgoingConnectionError { .. } => {
                    panic!("the new connection was refused")
                }
                _ => {}
            }
        }
    })
    .await;
    assert!(done.is_ok(), "new up: {new_up}, closed: {closed:?}");
    assert_eq!(closed.len(), 1, "{closed:?}");
    assert!(
        old.contains(&closed[0]),
        "{closed:?} is not an old connection"
    );
    assert_eq!(
        raw.network_info().connection_counters().num_established() as usize,
        MAX_CONNECTIONS_PER_PEER
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_keeps_at_most_max_established_connections() {
    let limits = ConnectionLimits {
        max_established: 3,
        ..ConnectionLimits::default()
    };
    let a = start(Keypair::generate_ed25519(), "127.0.0.1", &strict(limits)).await;
    let mut peers = Vec::new();
    for i in 0..3 {
        let b = start(
            Keypair::generate_ed25519(),
            &format!("127.0.3.{i}"),
            &plain(),
        )
        .await;
        admitted(&a, &b).await;
        peers.push(b);
    }
    let one_more = start(Keypair::generate_ed25519(), "127.0.3.9", &plain()).await;
    refused(&a, &one_more).await;
    // Nor may the node dial out past it.
    let addr = one_more.listen_addrs().await[0].clone();
    assert!(a.connect_addr(addr).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_dialling_in_leave_room_for_the_nodes_own_dials() {
    let limits = ConnectionLimits {
        max_established: 3,
        max_established_incoming: 2,
        ..ConnectionLimits::default()
    };
    let a = start(Keypair::generate_ed25519(), "127.0.0.1", &strict(limits)).await;
    let mut peers = Vec::new();
    for i in 0..2 {
        let b = start(
            Keypair::generate_ed25519(),
            &format!("127.0.4.{i}"),
            &plain(),
        )
        .await;
        admitted(&a, &b).await;
        peers.push(b);
    }
    let third = start(Keypair::generate_ed25519(), "127.0.4.9", &plain()).await;
    refused(&a, &third).await;
    admitted(&third, &a).await; // the node's own dial
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dials_in_progress_are_bounded() {
    let limits = ConnectionLimits {
        max_pending_outgoing: 1,
        ..ConnectionLimits::default()
    };
    let a = start(Keypair::generate_ed25519(), "127.0.0.1", &strict(limits)).await;
    // A UDP socket that never answers: a dial to it stays in progress until it times out.
    let silent = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let silent_addr: Multiaddr = format!("/ip4/127.0.0.1/udp/{port}/quic-v1")
        .parse()
        .expect("addr");
    let first = {
        let a = a.clone();
        tokio::spawn(async move { a.connect(PeerId::random(), vec![silent_addr]).await })
    };
    let mut buf = [0; 2048];
    tokio::time::timeout(PATIENCE, silent.recv_from(&mut buf))
        .await
        .expect("the first dial reaches the silent socket")
        .expect("recv");
    let other = start(Keypair::generate_ed25519(), "127.0.0.1", &plain()).await;
    let err = a
        .connect(other.peer_id(), other.listen_addrs().await)
        .await
        .expect_err("a second dial while the first is in progress");
    assert!(err.to_string().contains("pending outgoing"), "{err}");
    first.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_in_progress_are_bounded() {
    let limits = ConnectionLimits {
        max_pending_incoming: 1,
        ..ConnectionLimits::default()
    };
    let a = start(Keypair::generate_ed25519(), "127.0.0.1", &strict(limits)).await;
    let a_port = match a.listen_addrs().await[0].iter().nth(1) {
        Some(libp2p::multiaddr::Protocol::Udp(port)) => port,
        other => panic!("not a UDP address: {other:?}"),
    };
    // A half-open handshake: what a real client sends (caught on a socket that never
    // answers) is relayed to `a` from a socket that never passes `a`'s answers back.
    let catcher = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = catcher.local_addr().expect("addr").port();
    let replayer = std::sync::Arc::new(
        tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind"),
    );
    let relay = {
        let replayer = replayer.clone();
        tokio::spawn(async move {
            let mut buf = [0; 2048];
            while let Ok((len, _)) = catcher.recv_from(&mut buf).await {
                let _ = replayer.send_to(&buf[..len], ("127.0.0.1", a_port)).await;
            }
        })
    };
    let client = start(Keypair::generate_ed25519(), "127.0.0.1", &plain()).await;
    let dialling = {
        let client = client.clone();
        let addr: Multiaddr = format!("/ip4/127.0.0.1/udp/{port}/quic-v1")
            .parse()
            .expect("addr");
        tokio::spawn(async move { client.connect(PeerId::random(), vec![addr]).await })
    };
    let mut answer = [0; 2048];
    tokio::time::timeout(PATIENCE, replayer.recv_from(&mut answer))
        .await
        .expect("a starts the handshake")
        .expect("recv");
    // `a` now has one handshake in progress: a second one is refused.
    let b = start(Keypair::generate_ed25519(), "127.0.5.1", &plain()).await;
    refused(&a, &b).await;
    dialling.abort();
    relay.abort();
}

/// `n` keys whose peers fall in the k-buckets `buckets` of `of` (one key per entry, in
/// order): deterministic, from seeds counted up from `seed`.
fn keys_in_buckets(of: PeerId, buckets: &[u32], seed: u8) -> Vec<Keypair> {
    let me = KBucketKey::from(of);
    let mut found: Vec<Option<Keypair>> = buckets.iter().map(|_| None).collect();
    for i in 0u32.. {
        let mut bytes = [seed; 32];
        bytes[..4].copy_from_slice(&i.to_be_bytes());
        let key = Keypair::ed25519_from_bytes(bytes).expect("key");
        let bucket = me
            .distance(&KBucketKey::from(key.public().to_peer_id()))
            .ilog2();
        if let Some(slot) = buckets
            .iter()
            .zip(found.iter_mut())
            .find(|(b, slot)| Some(**b) == bucket && slot.is_none())
            .map(|(_, slot)| slot)
        {
            *slot = Some(key);
        }
        if found.iter().all(Option::is_some) {
            break;
        }
    }
    found.into_iter().flatten().collect()
}

fn seeded(seed: u8) -> Keypair {
    Keypair::ed25519_from_bytes([seed; 32]).expect("key")
}

async fn routing_table(host: &Host) -> usize {
    host.status().await.expect("status").routing_table
}

/// Starts a DHT server on `ip` with `key` that joins through `a`, and waits until `a` has
/// heard what it listens on (identify), which is when `a` decides whether it enters the
/// routing table.
async fn join(a: &Host, key: Keypair, ip: &str) -> Host {
    let b = start(key, ip, &plain()).await;
    b.bootstrap(&a.listen_addrs().await).await.expect("join");
    until("a knows the joiner's addresses", || async {
        !a.addresses(b.peer_id())
            .await
            .expect("addresses")
            .is_empty()
    })
    .await;
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fourth_peer_from_one_slash_24_stays_out_of_the_routing_table() {
    let a = start(seeded(1), "127.0.0.1", &strict(ConnectionLimits::default())).await;
    // Six peers on 127.0.0.1, in six buckets: only the per-/24 rule can keep them out.
    let keys = keys_in_buckets(a.peer_id(), &[255, 254, 253, 252, 251, 250], 2);
    let mut peers = Vec::new();
    for key in keys {
        peers.push(join(&a, key, "127.0.0.1").await);
    }
    assert_eq!(routing_table(&a).await, MAX_PEERS_PER_RANGE);
    // Peers from other /24s are admitted.
    peers.push(join(&a, seeded(3), "127.0.1.1").await);
    peers.push(join(&a, seeded(4), "127.0.2.1").await);
    assert_eq!(routing_table(&a).await, MAX_PEERS_PER_RANGE + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_third_peer_from_one_range_in_one_bucket_stays_out() {
    let a = start(seeded(5), "127.0.0.1", &strict(ConnectionLimits::default())).await;
    let keys = keys_in_buckets(a.peer_id(), &[255, 255, 255, 254], 6);
    let mut keys = keys.into_iter();
    let mut peers = Vec::new();
    for key in keys.by_ref().take(3) {
        peers.push(join(&a, key, "127.0.0.1").await);
    }
    assert_eq!(routing_table(&a).await, MAX_PEERS_PER_RANGE_PER_BUCKET);
    for key in keys {
        peers.push(join(&a, key, "127.0.0.1").await);
    }
    assert_eq!(routing_table(&a).await, MAX_PEERS_PER_RANGE_PER_BUCKET + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lan_fills_the_routing_table_with_the_defaults() {
    let a = start(seeded(7), "127.0.0.1", &plain()).await;
    let keys = keys_in_buckets(a.peer_id(), &[255, 255, 255, 254, 254, 253], 8);
    let mut peers = Vec::new();
    for key in keys {
        peers.push(join(&a, key, "127.0.0.1").await);
    }
    assert_eq!(routing_table(&a).await, 6);
}
