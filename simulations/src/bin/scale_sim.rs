//! `make scale-sim`: the node's swarm decisions for many nodes in virtual time.
//!
//! `--validate` runs the namespace lab's scenarios (`swarm-lab`, `swarm-lab-flash`) in the
//! model and prints the simulated times beside the measured ones (docs/benchmarks.md). The
//! default runs the flash-crowd study: one seeder, N mirrors starting together.

use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Parser;
use commons_node::transfer::swarm_machine::RoundConfig;
use commons_node::transfer::BATCH_SPANS;
use commons_simulations::scale::swarm::{
    run, Admission, NodeResult, NodeSpec, Scenario, SimResult, EVENT_KINDS,
};

#[derive(Parser)]
#[command(about = "Scale model: the node's swarm decisions for many nodes, in virtual time")]
struct Args {
    /// Run the namespace lab's scenarios and compare with their measured times.
    #[arg(long)]
    validate: bool,
    /// Seed of the run (the same seed gives the same run).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Mirrors in the flash-crowd study (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "10,100,1000")]
    mirrors: Vec<usize>,
    /// Print each node's figures too.
    #[arg(long)]
    verbose: bool,
    /// Size of the study's dataset, in MiB.
    #[arg(long, default_value_t = 100 * 1024)]
    size_mib: u64,
    /// Spans the study's dataset is cut into (the node's 256 KiB spans would make 409,600
    /// of a 100 GiB one: the study keeps the node's 16 spans per batch and coarser spans,
    /// so a mirror asks for 64 batches, as it does for 256 MiB).
    #[arg(long, default_value_t = 1024)]
    study_spans: u64,
    /// Serve every request at once: leave out the transfer server's send buffer.
    #[arg(long)]
    no_admission: bool,
}

/// The store's span.
const SPAN: u64 = 256 * 1024;
/// Payload a `tbf rate 100mbit` link carried in the lab: the one-seeder baseline moved
/// 94 Mbit/s of payload (docs/benchmarks.md, swarm lab).
const LAB_LINK: f64 = 100e6 / 8.0 * 0.94;
/// An uncapped veth in the lab: more than the fetcher's CPU can take (about 2 Gbit/s).
const UNCAPPED: f64 = 2e9 / 8.0;
/// One-way latency across the lab's bridge.
const LAB_LATENCY: Duration = Duration::from_micros(50);
/// From `commons get` (or the daemon being told the hash) to the first request: process
/// start, store open, bootstrap, DHT lookup, dials. Read from the lab's logs.
const LAB_STARTUP: Duration = Duration::from_millis(600);

fn node(up: f64, down: f64, seeds: bool) -> NodeSpec {
    NodeSpec {
        up,
        down,
        latency: LAB_LATENCY,
        seeds,
        starts_at: if seeds { Duration::ZERO } else { LAB_STARTUP },
        dies_at: None,
        lies: false,
    }
}

fn scenario(size_mib: u64, nodes: Vec<NodeSpec>, seed: u64, admission: bool) -> Scenario {
    Scenario {
        spans: (size_mib << 20).div_ceil(SPAN),
        span_bytes: SPAN,
        nodes,
        config: RoundConfig::default(),
        holders_answer: commons_node::discovery::holders::MAX_HOLDERS_PER_HASH,
        // The node's responses are batches of the store's spans, whatever span the model
        // cuts the blob into.
        admission: admission.then(|| Admission::node(BATCH_SPANS * SPAN)),
        seed,
        limit: Duration::from_secs(24 * 3600),
    }
}

fn secs(d: Option<Duration>) -> f64 {
    d.map_or(f64::NAN, |d| d.as_secs_f64())
}

/// The first seeder that does not lie.
fn first_honest_seeder(s: &Scenario) -> usize {
    s.nodes.iter().position(|n| n.seeds && !n.lies).unwrap_or(0)
}

/// When the last fetcher finished.
fn all_done(r: &SimResult) -> Option<Duration> {
    r.nodes
        .iter()
        .map(|n| n.done_at)
        .collect::<Option<Vec<_>>>()?
        .into_iter()
        .max()
}

fn validate(seed: u64, verbose: bool, admission: bool) {
    println!("| scenario | measured | simulated | simulated ÷ measured | first honest seeder sent (copies) | events | wall |");
    println!("|---|---|---|---|---|---|---|");
    let four = || {
        let mut nodes: Vec<NodeSpec> = (0..4).map(|_| node(LAB_LINK, UNCAPPED, true)).collect();
        nodes.push(node(UNCAPPED, UNCAPPED, false));
        nodes
    };
    let mut killed = four();
    killed[0].dies_at = Some(Duration::from_secs(11));
    let mut liar = four();
    liar[0].lies = true;
    let mut flash = vec![node(LAB_LINK, UNCAPPED, true)];
    flash.extend((0..10).map(|_| node(LAB_LINK, UNCAPPED, false)));
    // Measured: docs/benchmarks.md, `make swarm-lab` and `make swarm-lab-flash` of
    // 2026-12-02 with this code (the flash crowd took 28.7 s in November, before the
    // transfer server's per-peer gates; 39.4 s with the code before the state machines).
    let cases = [
        (
            "4 seeders → 1 leecher, 1 GiB",
            23.0,
            scenario(1024, four(), seed, admission),
        ),
        (
            "4 seeders, one killed at 11 s",
            28.9,
            scenario(1024, killed, seed, admission),
        ),
        (
            "3 honest seeders + 1 liar",
            32.4,
            scenario(1024, liar, seed, admission),
        ),
        (
            "flash crowd: 1 seeder, 10 leechers, 256 MiB",
            37.2,
            scenario(256, flash, seed, admission),
        ),
    ];
    for (name, measured, s) in cases {
        let started = Instant::now();
        let r = run(&s);
        let simulated = secs(all_done(&r));
        println!(
            "| {name} | {measured:.1} s | {simulated:.1} s | {:.2} | {:.2} | {} | {:.2} s |",
            simulated / measured,
            r.nodes[first_honest_seeder(&s)].sent as f64 / (s.spans * s.span_bytes) as f64,
            r.events,
            started.elapsed().as_secs_f64()
        );
        if verbose {
            for (i, n) in r.nodes.iter().enumerate() {
                println!(
                    "    node {i}: done {:.1} s, sent {:.1} MiB, received {:.1} MiB",
                    secs(n.done_at),
                    n.sent as f64 / (1 << 20) as f64,
                    n.received as f64 / (1 << 20) as f64
                );
            }
        }
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.validate {
        validate(args.seed, args.verbose, !args.no_admission);
        return Ok(());
    }
    let gbit = 1e9 / 8.0;
    println!(
        "flash crowd: one seeder (1 Gbit/s up) releases {} MiB to N mirrors (100 Mbit/s–10 Gbit/s)",
        args.size_mib
    );
    println!("| mirrors | 50 % done | 95 % done | all done | Kumar–Ross bound | central host | seeder sent (copies) | events | wall |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for &n in &args.mirrors {
        let mut nodes = vec![NodeSpec {
            latency: Duration::from_millis(10),
            ..node(gbit, gbit, true)
        }];
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(args.seed);
        for _ in 0..n {
            // Links spread over 100 Mbit/s, 1 Gbit/s and 10 Gbit/s, a third each.
            let rate = [0.1, 1.0, 10.0][rand::Rng::random_range(&mut rng, 0..3)] * gbit;
            let latency = Duration::from_millis(rand::Rng::random_range(&mut rng, 5..50));
            nodes.push(NodeSpec {
                latency,
                starts_at: Duration::from_millis(rand::Rng::random_range(&mut rng, 0..2000)),
                ..node(rate, rate, false)
            });
        }
        let mut s = scenario(args.size_mib, nodes, args.seed, !args.no_admission);
        s.span_bytes = ((args.size_mib << 20) / args.study_spans.max(1)).max(SPAN);
        s.spans = (args.size_mib << 20).div_ceil(s.span_bytes);
        let started = Instant::now();
        let r = run(&s);
        let wall = started.elapsed().as_secs_f64();
        let mut done: Vec<f64> = r.nodes[1..].iter().map(|x| secs(x.done_at)).collect();
        done.sort_by(f64::total_cmp);
        let q = |f: f64| done[((done.len() as f64 * f).ceil() as usize).clamp(1, done.len()) - 1];
        let size = (args.size_mib << 20) as f64;
        let up_sum: f64 = s.nodes.iter().map(|x| x.up).sum();
        let d_min = s.nodes[1..].iter().map(|x| x.down).fold(f64::MAX, f64::min);
        let bound = (size / gbit)
            .max(n as f64 * size / up_sum)
            .max(size / d_min);
        let central = n as f64 * size / gbit;
        println!(
            "| {n} | {:.1} s | {:.1} s | {:.1} s | {bound:.1} s | {central:.1} s | {:.2} | {} | {wall:.1} s |",
            q(0.5),
            q(0.95),
            q(1.0),
            r.nodes[0].sent as f64 / size,
            r.events
        );
        if args.verbose {
            let kinds: Vec<String> = EVENT_KINDS
                .iter()
                .zip(r.events_by_kind)
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            println!("    events: {}", kinds.join(", "));
            for class in [0.1, 1.0, 10.0] {
                let of: Vec<&NodeResult> = r.nodes[1..]
                    .iter()
                    .zip(&s.nodes[1..])
                    .filter(|(_, spec)| (spec.down - class * gbit).abs() < 1.0)
                    .map(|(n, _)| n)
                    .collect();
                let mut done: Vec<f64> = of.iter().map(|n| secs(n.done_at)).collect();
                done.sort_by(f64::total_cmp);
                let gets: u32 = of.iter().map(|n| n.gets).sum();
                let rounds: u32 = of.iter().map(|n| n.rounds).sum();
                let sent: f64 = of.iter().map(|n| n.sent as f64).sum::<f64>() / size;
                println!(
                    "    {class} Gbit/s: {} mirrors, done median {:.0} s, last {:.0} s; {gets} gets, {rounds} rounds; sent {sent:.1} copies",
                    of.len(),
                    done.get(done.len() / 2).copied().unwrap_or(f64::NAN),
                    done.last().copied().unwrap_or(f64::NAN),
                );
            }
            let mut last: Vec<usize> = (1..r.nodes.len()).collect();
            last.sort_by(|a, b| secs(r.nodes[*b].done_at).total_cmp(&secs(r.nodes[*a].done_at)));
            for i in last.into_iter().take(3) {
                let n = &r.nodes[i];
                println!(
                    "    last: mirror {i} ({:.1} Gbit/s, started {:.1} s): done {:.0} s, {} gets, {} rounds, received {:.2} copies, sent {:.2}",
                    s.nodes[i].down / gbit,
                    s.nodes[i].starts_at.as_secs_f64(),
                    secs(n.done_at),
                    n.gets,
                    n.rounds,
                    n.received as f64 / size,
                    n.sent as f64 / size,
                );
            }
        }
    }
    Ok(())
}
