//! Joining the DHT does not wait for the bootstrap walk: a one-shot client whose bootstrap
//! node still lists a node that died finds providers without first waiting for dials to
//! the dead node to time out (each takes QUIC's 5 s handshake timeout; a walk made several,
//! so every `get` after a seeder died used to wait 10-35 s).

mod common;

use std::time::{Duration, Instant};

use commons_node::discovery::{DhtMode, DiscoveryConfig};
use commons_protocol::Hash;

/// How long a dial to a dead QUIC address takes to fail (libp2p-quic's handshake timeout).
const DEAD_DIAL: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_node_in_the_routing_tables_does_not_hold_up_a_lookup() {
    let server = DiscoveryConfig {
        mode: DhtMode::Server,
        ..DiscoveryConfig::default()
    };
    let a = common::listening_node_with(&server).await;
    let a_addrs = a.listen_addrs().await;
    let dead = common::listening_node_with(&server).await;
    dead.bootstrap(&a_addrs)
        .await
        .expect("the doomed node joins");
    tokio::time::timeout(Duration::from_secs(10), async {
        while a.status().await.expect("status").routing_table == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the bootstrap node learns of the other");
    let hash = Hash::of(b"a dataset root");
    a.announce(hash).await.expect("announce");
    drop(dead);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let started = Instant::now();
    let client = common::client_node_with(&DiscoveryConfig::client(a_addrs.clone())).await;
    client.bootstrap(&a_addrs).await.expect("join");
    let found = client.find_providers(hash, 1, true).await.expect("lookup");
    let took = started.elapsed();
    assert!(
        found.providers.iter().any(|p| p.peer == a.peer_id()),
        "the provider was not found: {found:?}"
    );
    assert!(
        took < DEAD_DIAL,
        "joining and looking up took {took:?}: it waited on the dead node"
    );
}
