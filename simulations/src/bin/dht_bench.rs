//! DHT benchmark: N real nodes (in one process, each with its own QUIC endpoint on
//! loopback) form a Kademlia network; measures provider lookups (median and p99 time,
//! requests per lookup) and how long one node takes to announce 10,000 dataset roots.
//!
//! The baseline, measured in the same run, is one request/response round trip on an open
//! connection (the transfer protocol's holder exchange): lookup times are reported as
//! multiples of it.

use std::{sync::Arc, time::Duration};

use anyhow::{bail, Context, Result};
use clap::Parser;
use commons_node::{
    discovery::{DhtMode, DiscoveryConfig, Holders, Publisher},
    net::Host,
    store::{Store, StoreOptions},
    transfer::{ask_holders, serve, ServeLimits, TransferStats},
};
use commons_protocol::Hash;
use commons_simulations::{dht::start_network, percentile, sorted};
use tokio::time::Instant;

#[derive(Debug, Parser)]
struct Args {
    /// Network sizes to run, one after the other
    #[arg(long, value_delimiter = ',', default_value = "20,50")]
    nodes: Vec<usize>,
    /// Provider lookups per network size
    #[arg(long, default_value_t = 200)]
    lookups: usize,
    /// Roots one node announces
    #[arg(long, default_value_t = 10_000)]
    announce: usize,
    /// Announcements in flight (the publisher's concurrency)
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
}

/// Median time of one holders request on an open connection: one round trip.
async fn round_trip_baseline(hosts: &[Host]) -> Result<f64> {
    let tmp = tempfile::tempdir()?;
    let store = Arc::new(Store::open(tmp.path(), StoreOptions::default())?);
    tokio::spawn(serve(
        commons_node::store::AsyncStore::new(store),
        hosts[0].clone(),
        Arc::new(TransferStats::default()),
        Arc::new(Holders::default()),
        ServeLimits::default(),
    )?);
    let client = &hosts[1];
    client
        .connect(hosts[0].peer_id(), hosts[0].listen_addrs().await)
        .await?;
    let mut times = Vec::new();
    for i in 0..200u32 {
        let start = Instant::now();
        ask_holders(client, hosts[0].peer_id(), Hash::of(&i.to_be_bytes())).await?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    Ok(percentile(&sorted(times), 0.5))
}

async fn run(n: usize, args: &Args) -> Result<()> {
    println!("\n== {n} nodes ==");
    let config = DiscoveryConfig {
        mode: DhtMode::Server,
        ..DiscoveryConfig::default()
    };
    let hosts = start_network(n, &config).await?;
    let rtt = round_trip_baseline(&hosts).await?;
    println!("  baseline: one request/response round trip, median {rtt:.2} ms");

    // Providers: 20 roots, each announced by a random node.
    let roots: Vec<(Hash, usize)> = (0..20u32)
        .map(|i| {
            (
                Hash::of(format!("root {n} {i}").as_bytes()),
                rand::random_range(0..n),
            )
        })
        .collect();
    for (root, owner) in &roots {
        let cost = hosts[*owner].announce(*root).await?;
        if cost.successes == 0 {
            bail!("announcing {root} reached nobody");
        }
    }
    let (mut full_ms, mut first_ms, mut requests) = (Vec::new(), Vec::new(), Vec::new());
    let (mut misses, mut first_misses) = (0, 0);
    for i in 0..args.lookups {
        let (root, owner) = roots[i % roots.len()];
        let mut asker = rand::random_range(0..n);
        if asker == owner {
            asker = (asker + 1) % n;
        }
        let start = Instant::now();
        let first = hosts[asker].find_providers(root, 1, false).await?;
        first_ms.push(start.elapsed().as_secs_f64() * 1e3);
        first_misses += usize::from(first.providers.is_empty());
        let full = hosts[asker].find_providers(root, usize::MAX, false).await?;
        if !full
            .providers
            .iter()
            .any(|p| p.peer == hosts[owner].peer_id())
        {
            misses += 1;
        }
        full_ms.push(full.cost.millis as f64);
        requests.push(full.cost.requests as f64);
    }
    let (full_ms, first_ms, requests) = (sorted(full_ms), sorted(first_ms), sorted(requests));
    println!(
        "  lookup to the first provider: median {:.2} ms ({:.1}x RTT), p99 {:.2} ms ({:.1}x RTT); none found in {first_misses} of {}",
        percentile(&first_ms, 0.5),
        percentile(&first_ms, 0.5) / rtt,
        percentile(&first_ms, 0.99),
        percentile(&first_ms, 0.99) / rtt,
        args.lookups,
    );
    println!(
        "  full lookup (walk to the closest peers): median {:.0} ms ({:.1}x RTT), p99 {:.0} ms; requests median {:.0}, p99 {:.0}; provider missed in {misses} of {}",
        percentile(&full_ms, 0.5),
        percentile(&full_ms, 0.5) / rtt,
        percentile(&full_ms, 0.99),
        percentile(&requests, 0.5),
        percentile(&requests, 0.99),
        args.lookups,
    );

    // One node announces many roots through the paced publisher.
    let announcer = &hosts[n / 2];
    let mut sample = Vec::new();
    for i in 0..50u32 {
        let cost = announcer
            .announce(Hash::of(format!("sample {i}").as_bytes()))
            .await?;
        sample.push(cost.requests as f64);
    }
    let publisher = Publisher::spawn(
        announcer.clone(),
        Duration::from_secs(12 * 3600),
        args.concurrency,
    );
    let start = Instant::now();
    for i in 0..args.announce {
        publisher.provide(Hash::of(format!("bulk {n} {i}").as_bytes()));
    }
    let total = args.announce as u64;
    loop {
        let s = publisher.stats();
        let done = s.announced.load(std::sync::atomic::Ordering::Relaxed)
            + s.failed.load(std::sync::atomic::Ordering::Relaxed);
        if done >= total {
            break;
        }
        if start.elapsed() > Duration::from_secs(1800) {
            bail!("announcing took more than 30 minutes ({done} of {total} done)");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    let failed = publisher
        .stats()
        .failed
        .load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "  announcing {} roots from one node ({} in flight): {secs:.1} s, {:.0} roots/s, {failed} reached nobody; requests per announcement median {:.0}",
        args.announce,
        args.concurrency,
        args.announce as f64 / secs,
        percentile(&sorted(sample), 0.5),
    );
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    println!("dht-bench: provider lookups and announcements, nodes on loopback in one process");
    for &n in &args.nodes {
        if n < 3 {
            bail!("--nodes: at least 3");
        }
        // One runtime per network: dropping it stops every node of the previous size.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("runtime")?;
        runtime.block_on(run(n, &args))?;
    }
    Ok(())
}
