//! Relays that carry data, in one process on loopback: a node that listens only through a
//! relay is found through the DHT by its relayed address and serves a blob through the
//! relay; the relay's limits (bytes per circuit, the total budget) are enforced: a fetch
//! cut by them goes on over a new circuit with what it already verified, until the budget
//! is spent and the relay refuses, saying so.

mod common;

use std::{sync::Arc, time::Duration};

use commons_node::{
    discovery::{DhtMode, DiscoveryConfig},
    net::{
        reachability::is_relayed,
        relay::{NatConfig, RelayConfig},
        strip_peer, Host,
    },
    store::{AsyncStore, Store, StoreOptions},
    transfer::{fetch_blob, TransferStats},
};
use commons_protocol::Hash;
use libp2p::{identity::Keypair, Multiaddr, PeerId};

/// A public relay (a DHT server relaying with `relay`'s limits) listening on loopback, at
/// a port free for TCP too: a relay also listens on TCP at its QUIC port, and a port the
/// system handed out for UDP can be taken on TCP by another test's connection (`make
/// test` once failed that way: no TCP listener).
async fn relay_node(relay: RelayConfig) -> (Host, Vec<Multiaddr>) {
    let config = DiscoveryConfig {
        mode: DhtMode::Server,
        relay: RelayConfig {
            enabled: Some(true),
            ..relay
        },
        ..DiscoveryConfig::default()
    };
    let listen: Multiaddr = format!("/ip4/127.0.0.1/udp/{}/quic-v1", port_free_for_udp_and_tcp())
        .parse()
        .expect("addr");
    let host = Host::start(Keypair::generate_ed25519(), &[listen], &config)
        .await
        .expect("relay host");
    let addrs = host.listen_addrs().await;
    (host, addrs)
}

/// A loopback port no socket holds on UDP or on TCP just now.
fn port_free_for_udp_and_tcp() -> u16 {
    loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("tcp bind");
        let port = tcp.local_addr().expect("addr").port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A node with no listen address of its own, reachable only through a slot on `relay`,
/// serving `store`, joined to the DHT through the relay and announcing `hash`.
async fn relayed_seeder(
    relay: &[Multiaddr],
    store: Arc<Store>,
    hash: Hash,
    hole_punching: bool,
) -> Host {
    let config = DiscoveryConfig {
        nat: NatConfig {
            relays: relay.to_vec(),
            hole_punching,
            ..NatConfig::default()
        },
        ..DiscoveryConfig::default()
    };
    let host = Host::start(Keypair::generate_ed25519(), &[], &config)
        .await
        .expect("seeder");
    common::spawn_server(store, &host);
    let addrs = tokio::time::timeout(Duration::from_secs(10), host.listen_addrs())
        .await
        .expect("a relay reservation within 10 s");
    assert!(
        !addrs.is_empty() && addrs.iter().all(is_relayed),
        "listens only through the relay: {addrs:?}"
    );
    host.bootstrap(relay)
        .await
        .expect("joins through the relay");
    host.announce(hash).await.expect("announce");
    host
}

/// Finds `hash`'s provider through the DHT (bootstrapped from `relay`); returns it and
/// the addresses found for it. Asks again for up to 10 s: libp2p-kad counts an
/// ADD_PROVIDER, which has no answer, a success once it is queued for the connection, so
/// the seeder's announce returns before the relay holds the record (a lookup under load
/// found none).
async fn find(client: &Host, relay: &[Multiaddr], hash: Hash) -> (PeerId, Vec<Multiaddr>) {
    client.bootstrap(relay).await.expect("join");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let found = client.find_providers(hash, 1, true).await.expect("lookup");
        if let Some(provider) = found.providers.first() {
            return (provider.peer, provider.addrs.clone());
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no provider found within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Fetches blob `hash` from `peer` (connected) into a new store in `dir`; returns its bytes.
async fn fetch_whole(client: &Host, peer: PeerId, hash: Hash, dir: &std::path::Path) -> Vec<u8> {
    let fetched = Arc::new(Store::open(dir, StoreOptions::default()).expect("store"));
    fetch_blob(
        client,
        &AsyncStore::new(fetched.clone()),
        peer,
        hash,
        &Arc::new(TransferStats::default()),
        Arc::new(|_| {}),
    )
    .await
    .expect("fetch");
    let mut out = Vec::new();
    fetched
        .read_blob_verified(&hash, &mut out)
        .expect("complete");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_listening_only_through_a_relay_is_found_and_serves_through_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = common::pattern(1 << 20, 7);
    let (store, hash) = common::store_with_blob(tmp.path(), "seeder", &data);
    let (relay, relay_addrs) = relay_node(RelayConfig::default()).await;
    let seeder = relayed_seeder(&relay_addrs, store, hash, true).await;

    let client = common::client_node_with(&DiscoveryConfig::client(relay_addrs.clone())).await;
    let (peer, addrs) = find(&client, &relay_addrs, hash).await;
    assert_eq!(peer, seeder.peer_id());
    assert!(
        addrs.iter().any(is_relayed),
        "the provider record carries the relayed address: {addrs:?}"
    );
    assert!(
        addrs.iter().all(is_relayed),
        "and no other (it has none): {addrs:?}"
    );
    client
        .connect(peer, addrs)
        .await
        .expect("connect through the relay");
    let out = fetch_whole(&client, peer, hash, &tmp.path().join("client")).await;
    assert!(out == data, "identical");

    let status = client.status().await.expect("status");
    assert!(status.nat.counters.relayed_connections >= 1, "{status:?}");
    // Bytes by path: the 1 MiB came through the relay, and is counted there, not also
    // as direct (it crossed the direct connection to the relay inside the circuit).
    let bytes = status.nat.counters.bytes;
    assert!(bytes.relayed_received >= data.len() as u64, "{bytes:?}");
    assert!(bytes.direct_received < data.len() as u64 / 2, "{bytes:?}");
    let seeder_bytes = seeder.status().await.expect("status").nat.counters.bytes;
    assert!(
        seeder_bytes.relayed_sent >= data.len() as u64,
        "{seeder_bytes:?}"
    );
    assert_eq!(
        client.remote_ip(peer).await,
        None,
        "no bulk endpoint through a relay"
    );
    let relay_status = relay.status().await.expect("status");
    assert!(relay_status.nat.relay_serving, "{relay_status:?}");
    assert!(relay_status.nat.relay_reservations >= 1, "{relay_status:?}");
    let seeder_status = seeder.status().await.expect("status");
    let relayed = &seeder_status.nat.relayed_addrs;
    assert!(
        !relayed.is_empty() && relayed.iter().all(|a| a.contains("/p2p-circuit/")),
        "{seeder_status:?}"
    );

    // The relay listens on TCP too, at its QUIC port: reachable where UDP is blocked.
    let tcp = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let found = relay.listen_addrs().await.into_iter().find(|a| {
                a.iter()
                    .any(|p| matches!(p, libp2p::multiaddr::Protocol::Tcp(_)))
            });
            match found {
                Some(a) => break a,
                None => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await
    .expect("a TCP listener");
    let over_tcp = common::client_node().await;
    assert_eq!(
        over_tcp.connect_addr(tcp).await.expect("connect over TCP"),
        relay.peer_id()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_cuts_circuits_at_their_byte_limit_and_refuses_past_its_budget() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    const CIRCUIT: u64 = 1 << 20;
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = common::pattern(8 << 20, 9);
    let (store, hash) = common::store_with_blob(tmp.path(), "seeder", &data);
    // Room for 4 circuits an hour (each circuit a relay opens counts, AutoNAT's dial-backs
    // through it too): at most 4 MiB of the 8 MiB blob.
    let (_relay, relay_addrs) = relay_node(RelayConfig {
        max_circuit_bytes: CIRCUIT,
        budget_bytes_per_hour: 4 * CIRCUIT,
        ..RelayConfig::default()
    })
    .await;
    // No hole punching: on loopback a punch dials the other side's dial-only socket and
    // times out, which would muddle the circuits counted here.
    let _seeder = relayed_seeder(&relay_addrs, store, hash, false).await;
    let client = common::client_node_with(&DiscoveryConfig {
        nat: NatConfig {
            hole_punching: false,
            ..NatConfig::default()
        },
        ..DiscoveryConfig::client(relay_addrs.clone())
    })
    .await;
    let (peer, addrs) = find(&client, &relay_addrs, hash).await;
    let fetched =
        Arc::new(Store::open(tmp.path().join("client"), StoreOptions::default()).expect("store"));
    let async_store = AsyncStore::new(fetched.clone());
    let stats = Arc::new(TransferStats::default());
    let mut last_error = String::new();
    let mut progress = Vec::new();
    // Each round dials the seeder through the relay again (a new circuit; libp2p may open
    // more within one fetch) until the relay refuses.
    for _ in 0..8 {
        if let Err(e) = client.connect(peer, addrs.clone()).await {
            last_error = e.to_string();
            break;
        }
        match fetch_blob(&client, &async_store, peer, hash, &stats, Arc::new(|_| {})).await {
            Ok(()) => panic!("8 MiB went through a relay that allows 4 MiB"),
            Err(e) => last_error = e.to_string(),
        }
        progress.push(fetched.held_bytes(&hash).expect("db"));
        // Wait for the cut circuit's connection to be gone before dialling a new one.
        tokio::time::timeout(Duration::from_secs(5), async {
            while client
                .status()
                .await
                .expect("status")
                .connected
                .contains(&peer.to_string())
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the cut connection closes");
    }
    assert!(
        progress[0] > 0 && progress.windows(2).all(|w| w[1] >= w[0]),
        "the fetch moved on over the first circuits and kept what it verified: {progress:?}"
    );
    let total = *progress.last().expect("progress");
    assert!(
        total < data.len() as u64,
        "the relay's limits stopped the fetch short of 8 MiB: {total} bytes"
    );
    assert!(
        last_error.contains("resource limit exceeded"),
        "past its budget the relay refuses new circuits, and says so: {last_error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hole_punch_moves_a_relayed_connection_to_a_direct_one() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = common::pattern(1 << 20, 11);
    let (store, hash) = common::store_with_blob(tmp.path(), "seeder", &data);
    let (_relay, relay_addrs) = relay_node(RelayConfig::default()).await;
    // Both sides listen (on loopback, so a "punch" always gets through), but the fetcher
    // dials the seeder through the relay.
    let with_relay = DiscoveryConfig {
        nat: NatConfig {
            relays: relay_addrs.clone(),
            ..NatConfig::default()
        },
        ..DiscoveryConfig::default()
    };
    let seeder = common::serving_node_with(store, &with_relay).await;
    tokio::time::timeout(Duration::from_secs(10), async {
        while seeder
            .status()
            .await
            .expect("status")
            .nat
            .relayed_addrs
            .is_empty()
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("a relay reservation");
    // The fetcher is given the relayed address alone (the DHT path is the first test's): on
    // one machine a lookup would also hand it the seeder's loopback address.
    let relayed: Vec<Multiaddr> = seeder
        .status()
        .await
        .expect("status")
        .nat
        .relayed_addrs
        .iter()
        .filter(|a| a.contains("/udp/"))
        .map(|a| strip_peer(&a.parse().expect("multiaddr")))
        .collect();
    let peer = seeder.peer_id();
    let client = common::listening_node().await;
    client
        .connect(peer, relayed)
        .await
        .expect("connect through the relay");

    let direct = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let status = client.status().await.expect("status");
            let seeder_side = seeder.status().await.expect("status");
            // A punch that made the connection direct and closed the relayed one. DCUtR
            // may call it failed while one of its dials got through (on a loaded machine):
            // the relayed connection is then closed all the same.
            let moved = status.nat.counters.relayed_closed_after_punch
                + seeder_side.nat.counters.relayed_closed_after_punch;
            let attempted = status.nat.counters.punches_succeeded
                + seeder_side.nat.counters.punches_succeeded
                + status.nat.counters.punches_failed
                + seeder_side.nat.counters.punches_failed;
            if moved > 0 && attempted > 0 && client.remote_ip(peer).await.is_some() {
                break (status, seeder_side);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let Ok(direct) = direct else {
        panic!(
            "no punch within 20 s: fetcher {:?}; seeder {:?}",
            client.status().await.expect("status"),
            seeder.status().await.expect("status")
        );
    };
    assert!(
        direct.0.nat.counters.relayed_connections >= 1,
        "the first connection went through the relay: {direct:?}"
    );
    let closed = direct.0.nat.counters.relayed_closed_after_punch
        + direct.1.nat.counters.relayed_closed_after_punch;
    assert!(closed >= 1, "the relayed connection was closed: {direct:?}");

    let out = fetch_whole(&client, peer, hash, &tmp.path().join("client")).await;
    assert!(out == data, "identical");
}

/// A root's provider records outlive the fetchers that left them; dialling many such gone
/// peers through one relay at once must not crowd out the live one behind them (libp2p's
/// relay client drops circuit requests beyond ten in flight per relay connection: the NAT
/// lab's symmetric ↔ symmetric fetches all failed so). Dials through a relay take turns,
/// and a request to a peer without a reservation costs the relay's budget nothing (here
/// sixteen circuits an hour: more than the requests in flight at once, three dials of up to
/// three addresses each plus the live one's, but fewer than the gone peers' requests).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_provider_is_reached_through_a_relay_behind_many_gone_ones() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = common::pattern(64 << 10, 9);
    let (store, hash) = common::store_with_blob(tmp.path(), "seeder", &data);
    let (_relay, relay_addrs) = relay_node(RelayConfig {
        max_circuit_bytes: 1 << 20,
        budget_bytes_per_hour: 16 << 20,
        ..RelayConfig::default()
    })
    .await;
    let seeder = relayed_seeder(&relay_addrs, store, hash, false).await;
    let client = common::client_node_with(&DiscoveryConfig::client(relay_addrs.clone())).await;
    let (peer, addrs) = find(&client, &relay_addrs, hash).await;
    assert_eq!(peer, seeder.peer_id());
    // The same relayed addresses, for peers the relay holds no reservation for.
    let gone: Vec<PeerId> = (0..12).map(|_| PeerId::random()).collect();
    let dials = gone
        .iter()
        .map(|p| (*p, addrs.clone()))
        .chain(std::iter::once((peer, addrs.clone())))
        .map(|(p, a)| {
            let client = &client;
            async move { (p, client.connect(p, a).await) }
        });
    let results = libp2p::futures::future::join_all(dials).await;
    for (p, result) in &results {
        if *p == peer {
            assert!(result.is_ok(), "the live provider is reached: {result:?}");
        } else {
            let reason = format!("{:?}", result.as_ref().expect_err("a gone peer"));
            assert!(
                !reason.contains("canceled"),
                "a gone peer fails for its own reason: {reason}"
            );
        }
    }
    let out = fetch_whole(&client, peer, hash, &tmp.path().join("client")).await;
    assert!(out == data, "identical");
}
