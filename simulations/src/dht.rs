//! A DHT network of real hosts in one process, for the benchmarks that measure lookups
//! (`dht-bench`, `name-bench`): each host has its own QUIC endpoint on loopback and runs
//! the node's own Kademlia code.

use std::time::Duration;

use anyhow::Result;
use commons_node::{discovery::DiscoveryConfig, net::Host};
use libp2p::identity::Keypair;
use tokio::time::Instant;

/// Starts `n` hosts; host i bootstraps from one random earlier host. Returns once every
/// routing table holds min(n − 1, 20) peers, or after 30 s (it prints how many did).
pub async fn start_network(n: usize, config: &DiscoveryConfig) -> Result<Vec<Host>> {
    let loopback = vec!["/ip4/127.0.0.1/udp/0/quic-v1".parse()?];
    let mut hosts: Vec<Host> = Vec::with_capacity(n);
    for i in 0..n {
        let host = Host::start(Keypair::generate_ed25519(), &loopback, config).await?;
        if i > 0 {
            let via = &hosts[rand::random_range(0..i)];
            let addr = via.listen_addrs().await[0].clone();
            host.bootstrap(&[addr]).await?;
        }
        hosts.push(host);
    }
    // Let bootstrap walks fill the routing tables.
    let want = (n - 1).min(20);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut full = 0;
        for h in &hosts {
            if h.status().await?.routing_table >= want {
                full += 1;
            }
        }
        if full == n || Instant::now() > deadline {
            println!("  routing tables with >= {want} peers: {full} of {n}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(hosts)
}
