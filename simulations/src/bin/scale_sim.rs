//! `make scale-sim`: the node's swarm decisions for many nodes in virtual time.
//!
//! `--validate` runs the namespace lab's scenarios (`swarm-lab`, `swarm-lab-flash`) in the
//! model and prints the simulated times beside the measured ones (docs/benchmarks.md). The
//! default runs the flash-crowd study: one seeder, N mirrors starting together. `--dht`
//! runs the Kademlia study instead (`commons_simulations::scale::dht`): the model against
//! `dht-bench`'s measured walks, then provider lookups for `--dht-nodes` servers with and
//! without churn, and the records each node holds; charts go to `--out-dir`.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::Result;
use clap::Parser;
use commons_node::transfer::swarm_machine::RoundConfig;
use commons_node::transfer::BATCH_SPANS;
use commons_simulations::{
    median, percentile, plot,
    scale::{
        dht,
        swarm::{
            run, run_reporting, Admission, NodeResult, NodeSpec, Scenario, SimResult, EVENT_KINDS,
        },
    },
    sorted,
};

/// A 100,000-mirror run holds 7 GB of small objects (rounds, schedules, holder sets)
/// and touches them all over: the allocator, and the pages' size (see [`allocator_options`]),
/// decide much of its cost per event.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Asks the allocator for 2 MiB pages where the kernel has them (transparent huge pages,
/// `madvise` mode here): fewer TLB misses over a working set of gigabytes. With
/// mimalloc, 10,000 mirrors of 10 GiB ran in about 0.85x the time glibc's malloc took,
/// same events. mimalloc mapped huge pages here without this option too (AnonHugePages
/// 442 MB 20 s into a run, 406 MB with it), and the option's own gain measured within
/// noise; it is kept because the 100,000-mirror figures in docs/benchmarks.md were
/// measured with it.
///
/// And never to give freed memory back to the kernel: the model frees and allocates
/// small objects all along, and memory given back comes back as fresh pages the kernel
/// zeroes (6 % of the middle of a 100,000-mirror run, with mimalloc's purging 4 % more).
/// Without purging the time to 120 M events there was 0.89-0.92x (docs/benchmarks.md,
/// stop 46).
#[allow(unsafe_code)]
fn allocator_options() {
    // mimalloc 3's `mi_option_purge_delay` (its `mimalloc.h`), which libmimalloc-sys does
    // not name; -1: never purge. An index, not a name: check it against that header when
    // libmimalloc-sys is updated.
    const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    // SAFETY: each sets one of the allocator's options, a plain integer store with no
    // pointers, at the start of `main` before the model allocates.
    unsafe {
        libmimalloc_sys::mi_option_set(libmimalloc_sys::mi_option_large_os_pages, 1);
        libmimalloc_sys::mi_option_set(PURGE_DELAY, -1);
    }
}

/// `scale-sim | head` ends quietly when the reader goes away, as Unix tools do, instead
/// of panicking in `println!` (Rust ignores SIGPIPE by default). The model writes to no
/// socket or pipe but stdout.
#[allow(unsafe_code)]
fn quiet_on_closed_stdout() {
    // SAFETY: called first thing in main, before any other thread exists; SIG_DFL is a
    // valid disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

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
    #[arg(long, value_delimiter = ',', default_value = "10,100,1000,10000")]
    mirrors: Vec<usize>,
    /// Runs of each flash crowd, with seeds `--seed`, `--seed` + 1, …; past one, a row of
    /// their medians follows. The seed draws the mirrors' links and start times and every
    /// choice the model makes at random: at 3,000 mirrors, eight seeds were half done at
    /// 2,088 to 4,134 s. Compare two builds seed by seed, over several. With
    /// `--validate`, each lab scenario's median and range over the seeds.
    #[arg(long, default_value_t = 1)]
    seeds: u64,
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
    /// Run the Kademlia study (lookups with and without churn, records per node) instead.
    #[arg(long)]
    dht: bool,
    /// DHT servers in the Kademlia study (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1000,10000,100000")]
    dht_nodes: Vec<usize>,
    /// Provider lookups per run of the Kademlia study.
    #[arg(long, default_value_t = 2000)]
    dht_lookups: usize,
    /// Departures per node per hour in the churn runs (0.3: 30 % of the population).
    #[arg(long, default_value_t = 0.3)]
    dht_churn: f64,
    /// Routing-table refresh interval in seconds (libp2p's periodic bootstrap); 0: none,
    /// departed entries go only when a request to them fails.
    #[arg(long, default_value_t = 300)]
    dht_refresh_secs: u64,
    /// Where the charts go.
    #[arg(long, default_value = "target/scale-sim")]
    out_dir: PathBuf,
    /// Serve every request at once: leave out the transfer server's send buffer.
    #[arg(long)]
    no_admission: bool,
    /// Threads of the swarm model (1 to 4): its nodes are split among them, each running
    /// its own in lockstep windows of virtual time. Part of the model's seed: a run with
    /// other threads draws other random choices, so its figures differ as another seed's do.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=4))]
    threads: u8,
}

/// The store's span.
const SPAN: u64 = 256 * 1024;
/// Events between a flash-crowd run's progress lines.
const PROGRESS_EVENTS: u64 = 10_000_000;
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
        partitions: 1,
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

/// The swarm lab's scenarios, each run with seeds `seed` to `seed + seeds - 1`: past one
/// seed, the median and the range (an 11-node flash crowd's time moves by a fifth from seed
/// to seed).
fn validate(seed: u64, seeds: u64, verbose: bool, admission: bool, threads: u8) {
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
        ("4 seeders → 1 leecher, 1 GiB", 23.0, (1024, four())),
        ("4 seeders, one killed at 11 s", 28.9, (1024, killed)),
        ("3 honest seeders + 1 liar", 32.4, (1024, liar)),
        (
            "flash crowd: 1 seeder, 10 leechers, 256 MiB",
            37.2,
            (256, flash),
        ),
    ];
    for (name, measured, (size_mib, nodes)) in cases {
        let started = Instant::now();
        let (mut simulated, mut copies, mut events) = (Vec::new(), Vec::new(), Vec::new());
        for seed in seed..seed.saturating_add(seeds.max(1)) {
            let mut s = scenario(size_mib, nodes.clone(), seed, admission);
            s.partitions = threads.into();
            let r = run(&s);
            simulated.push(secs(all_done(&r)));
            copies.push(
                r.nodes[first_honest_seeder(&s)].sent as f64 / (s.spans * s.span_bytes) as f64,
            );
            events.push(r.events as f64);
            if verbose {
                println!("    seed {seed}: {:.1} s", secs(all_done(&r)));
                for (i, n) in r.nodes.iter().enumerate() {
                    println!(
                        "      node {i}: done {:.1} s, sent {:.1} MiB, received {:.1} MiB",
                        secs(n.done_at),
                        n.sent as f64 / (1 << 20) as f64,
                        n.received as f64 / (1 << 20) as f64
                    );
                }
            }
        }
        let simulated = sorted(simulated);
        let middle = median(&simulated);
        let range = if simulated.len() > 1 {
            format!(
                " ({:.1}–{:.1})",
                simulated[0],
                simulated[simulated.len() - 1]
            )
        } else {
            String::new()
        };
        println!(
            "| {name} | {measured:.1} s | {middle:.1} s{range} | {:.2} | {:.2} | {:.0} | {:.2} s |",
            middle / measured,
            median(&sorted(copies)),
            median(&sorted(events)),
            started.elapsed().as_secs_f64()
        );
    }
}

/// `dht-bench`'s measured requests per full walk (README, "Discovery"): nodes, median, p99.
const DHT_BENCH_WALKS: [(usize, f64, f64); 2] = [(20, 19.0, 19.0), (50, 23.0, 27.0)];

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The model's full walks (no early return) on loopback-like latency beside `dht-bench`'s.
fn dht_validate(seed: u64) {
    println!(
        "validation: requests per full walk (to the k closest), model vs dht-bench on loopback"
    );
    println!("| nodes | measured median / p99 | model median / p99 | model mean | model hops to the first provider, median |");
    println!("|---|---|---|---|---|");
    for (n, med, p99) in DHT_BENCH_WALKS {
        let s = dht::Scenario {
            latency: dht::Latency::Uniform(Duration::from_micros(20), Duration::from_micros(80)),
            keys: 20,
            publishers: n,
            lookups: 200,
            window: Duration::from_secs(3600),
            want: usize::MAX,
            settle: None,
            ..dht::Scenario::node_defaults(n, seed)
        };
        let r = dht::run(&s);
        let walks = sorted(
            r.lookups
                .iter()
                .map(|l| f64::from(l.walk_requests))
                .collect(),
        );
        let hops = sorted(
            r.lookups
                .iter()
                .filter_map(|l| l.hops)
                .map(f64::from)
                .collect(),
        );
        println!(
            "| {n} | {med:.0} / {p99:.0} | {:.0} / {:.0} | {:.1} | {:.0} |",
            percentile(&walks, 0.5),
            percentile(&walks, 0.99),
            walks.iter().sum::<f64>() / walks.len().max(1) as f64,
            percentile(&hops, 0.5),
        );
    }
}

/// One row of the lookup table.
struct DhtRun {
    nodes: usize,
    churn: f64,
    result: dht::StudyResult,
    wall: f64,
}

fn dht_row(r: &DhtRun) {
    let l = &r.result.lookups;
    let found: Vec<&dht::LookupResult> = l.iter().filter(|x| x.found).collect();
    let hops = sorted(found.iter().filter_map(|x| x.hops).map(f64::from).collect());
    let first = sorted(found.iter().filter_map(|x| x.first).map(ms).collect());
    let msgs = sorted(l.iter().map(|x| f64::from(x.requests)).collect());
    let walk = sorted(l.iter().map(|x| f64::from(x.walk_requests)).collect());
    let back = sorted(l.iter().map(|x| ms(x.returned)).collect());
    let failed: u32 = l.iter().map(|x| x.failed).sum();
    let sent: u32 = l.iter().map(|x| x.walk_requests).sum();
    println!(
        "| {} | {} | {:.1} % ({} of {}) | {:.0} / {:.0} | {:.0} / {:.0} | {:.0} | {:.0} / {:.0} ms | {:.0} / {:.0} ms | {:.1} % | {:.1} % | {} | {:.1} s |",
        thousands(r.nodes),
        if r.churn > 0.0 { format!("{:.0} %/h", r.churn * 100.0) } else { "none".into() },
        100.0 * found.len() as f64 / l.len().max(1) as f64,
        found.len(),
        l.len(),
        percentile(&hops, 0.5),
        percentile(&hops, 0.99),
        percentile(&msgs, 0.5),
        percentile(&msgs, 0.99),
        percentile(&walk, 0.5),
        percentile(&first, 0.5),
        percentile(&first, 0.99),
        percentile(&back, 0.5),
        percentile(&back, 0.99),
        100.0 * f64::from(failed) / f64::from(sent.max(1)),
        100.0 * r.result.stale_share,
        r.result.joins,
        r.wall,
    );
}

/// Success and replicas by time since the key was announced, in 1-hour bins.
fn dht_by_age(r: &DhtRun) -> Vec<(u64, f64, f64, usize)> {
    let mut out = Vec::new();
    for h in 0..12u64 {
        let bin: Vec<&dht::LookupResult> = r
            .result
            .lookups
            .iter()
            .filter(|x| {
                x.age >= Duration::from_secs(h * 3600)
                    && x.age < Duration::from_secs((h + 1) * 3600)
            })
            .collect();
        let n = bin.len().max(1) as f64;
        let found = bin.iter().filter(|x| x.found).count() as f64 / n;
        let replicas = bin.iter().map(|x| f64::from(x.replicas)).sum::<f64>() / n;
        out.push((h, found, replicas, bin.len()));
    }
    out
}

fn write_chart(dir: &Path, name: &str, svg: &str) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(name);
    std::fs::write(&path, svg)?;
    println!("chart: {}", path.display());
    Ok(())
}

fn dht_study(args: &Args) -> Result<()> {
    dht_validate(args.seed);
    let refresh = (args.dht_refresh_secs > 0).then(|| Duration::from_secs(args.dht_refresh_secs));
    let mut runs = Vec::new();
    for &n in &args.dht_nodes {
        for churn in [0.0, args.dht_churn] {
            let s = dht::Scenario {
                churn_per_hour: churn,
                refresh,
                // Tables reach their churned state within a few refreshes; records are
                // announced after an hour of churn.
                warm_up: if churn > 0.0 {
                    Duration::from_secs(3600)
                } else {
                    Duration::ZERO
                },
                lookups: args.dht_lookups,
                ..dht::Scenario::node_defaults(n, args.seed)
            };
            let started = Instant::now();
            let result = dht::run(&s);
            runs.push(DhtRun {
                nodes: n,
                churn,
                result,
                wall: started.elapsed().as_secs_f64(),
            });
            eprintln!(
                "  done: {n} nodes, churn {churn}: {:.1} s",
                runs.last().map_or(0.0, |r| r.wall)
            );
        }
    }
    println!(
        "\nprovider lookups (find_providers(hash, LOOKUP_WANT = {}, settle {} ms)), {} lookups per run at uniformly random times over one announce interval ({} h) after the keys were announced; WonderProxy latencies; table refresh {}",
        commons_node::fetch::LOOKUP_WANT,
        commons_node::net::LOOKUP_SETTLE.as_millis(),
        args.dht_lookups,
        commons_node::discovery::DEFAULT_ANNOUNCE_INTERVAL.as_secs() / 3600,
        refresh.map_or("none".to_string(), |r| format!("every {} s", r.as_secs())),
    );
    println!("| nodes | churn | found a provider | hops to the first, p50 / p99 | messages until the answer, p50 / p99 | messages of the whole walk, p50 | first provider, p50 / p99 | answer, p50 / p99 | requests to departed nodes | stale table entries at the end | joins | wall |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &runs {
        dht_row(r);
    }
    for r in runs.iter().filter(|r| r.churn > 0.0) {
        println!(
            "\nwith churn, {} nodes: by time since the key was announced (replicas: live nodes other than the publisher holding the record)",
            thousands(r.nodes)
        );
        println!("| age | lookups | found a provider | replicas alive, mean |");
        println!("|---|---|---|---|");
        for (h, found, replicas, count) in dht_by_age(r) {
            println!(
                "| {h}–{} h | {count} | {:.0} % | {replicas:.1} |",
                h + 1,
                found * 100.0
            );
        }
    }
    let series: Vec<plot::Series> = runs
        .iter()
        .map(|r| plot::Series {
            name: format!(
                "{} nodes, {}",
                thousands(r.nodes),
                if r.churn > 0.0 {
                    format!("churn {:.0} %/h", r.churn * 100.0)
                } else {
                    "no churn".into()
                }
            ),
            done_secs: r
                .result
                .lookups
                .iter()
                .filter_map(|l| l.first)
                .map(|d| d.as_secs_f64())
                .collect(),
        })
        .collect();
    write_chart(
        &args.out_dir,
        "dht-first-provider.svg",
        &plot::step_chart_labelled(
            "Kademlia model: time to the first provider (lookups that found none never rise)",
            "seconds from the lookup's start",
            "lookups with a provider",
            &series,
        ),
    )?;
    let mut bars = Vec::new();
    for r in runs.iter().filter(|r| r.churn > 0.0) {
        let ages = dht_by_age(r);
        for pair in ages.chunks(2) {
            let count: usize = pair.iter().map(|a| a.3).sum();
            let found: f64 =
                pair.iter().map(|a| a.1 * a.3 as f64).sum::<f64>() / count.max(1) as f64;
            bars.push((
                format!("{}: {}–{} h", thousands(r.nodes), pair[0].0, pair[0].0 + 2),
                100.0 * found,
            ));
        }
    }
    if !bars.is_empty() {
        write_chart(
            &args.out_dir,
            "dht-success-by-age.svg",
            &plot::bar_chart(
                "Kademlia model, churn: lookups that found a provider, by time since the announcement",
                "% of lookups",
                &bars,
                None,
            ),
        )?;
    }
    println!("\nrecords per node: every node announces 10 roots, 1 % of nodes (mirrors) 10,000; one popular root provided by all nodes (capped at {} per node); memory at {} B per key + {} B per record", commons_node::discovery::ProviderLimits::default().max_providers_per_key, dht::KEY_BYTES, dht::PER_RECORD_BYTES);
    println!("| nodes | keys per node, mean / p99 / max | records per node, mean / p99 / max | memory per node, mean / p99 / max | wall |");
    println!("|---|---|---|---|---|");
    for &n in &args.dht_nodes {
        let started = Instant::now();
        let r = dht::records(&dht::RecordsScenario {
            nodes: n,
            roots_per_node: 10,
            mirror_share: 0.01,
            mirror_roots: 10_000,
            popular_providers: n,
            max_providers_per_key: commons_node::discovery::ProviderLimits::default()
                .max_providers_per_key,
            seed: args.seed,
        });
        let wall = started.elapsed().as_secs_f64();
        let stats = |v: &[u64]| {
            let s = sorted(v.iter().map(|x| *x as f64).collect());
            (
                s.iter().sum::<f64>() / s.len().max(1) as f64,
                percentile(&s, 0.99),
                percentile(&s, 1.0),
            )
        };
        let (km, kp, kx) = stats(&r.keys);
        let (rm, rp, rx) = stats(&r.records);
        let (bm, bp, bx) = stats(&r.bytes());
        let kib = 1024.0;
        println!(
            "| {} | {km:.0} / {kp:.0} / {kx:.0} | {rm:.0} / {rp:.0} / {rx:.0} | {:.0} / {:.0} / {:.0} KiB | {wall:.1} s |",
            thousands(n),
            bm / kib,
            bp / kib,
            bx / kib
        );
    }
    Ok(())
}

/// 1 Gbit/s, in bytes per second.
const GBIT: f64 = 1e9 / 8.0;

/// The flash crowd of `n` mirrors for `seed`: one 1 Gbit/s seeder, mirrors on 100 Mbit/s,
/// 1 Gbit/s or 10 Gbit/s links (a third each), starting within 2 s.
fn flash_crowd(args: &Args, n: usize, seed: u64) -> Scenario {
    let mut nodes = vec![NodeSpec {
        latency: Duration::from_millis(10),
        ..node(GBIT, GBIT, true)
    }];
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed);
    for _ in 0..n {
        let rate = [0.1, 1.0, 10.0][rand::Rng::random_range(&mut rng, 0..3)] * GBIT;
        let latency = Duration::from_millis(rand::Rng::random_range(&mut rng, 5..50));
        nodes.push(NodeSpec {
            latency,
            starts_at: Duration::from_millis(rand::Rng::random_range(&mut rng, 0..2000)),
            ..node(rate, rate, false)
        });
    }
    let mut s = scenario(args.size_mib, nodes, seed, !args.no_admission);
    s.partitions = args.threads.into();
    s.span_bytes = ((args.size_mib << 20) / args.study_spans.max(1)).max(SPAN);
    s.spans = (args.size_mib << 20).div_ceil(s.span_bytes);
    s
}

/// Refuses arguments the models cannot run with, in one clear line each.
fn check(args: &Args) -> Result<()> {
    anyhow::ensure!(
        args.mirrors.iter().all(|&n| n >= 1),
        "--mirrors: each run needs at least one mirror"
    );
    anyhow::ensure!(
        args.seeds >= 1,
        "--seeds: at least one run of each flash crowd"
    );
    anyhow::ensure!(
        args.size_mib >= 1 && args.study_spans >= 1,
        "--size-mib and --study-spans must be at least 1"
    );
    anyhow::ensure!(
        args.dht_nodes.iter().all(|&n| n > dht::K),
        "--dht-nodes: each run needs more than {} nodes (k, a full bucket)",
        dht::K
    );
    anyhow::ensure!(args.dht_lookups >= 1, "--dht-lookups must be at least 1");
    anyhow::ensure!(
        args.dht_churn == 0.0 || (0.001..=10.0).contains(&args.dht_churn),
        "--dht-churn is departures per node per hour: 0, or from 0.001 to 10 (0.3: 30 % per hour)"
    );
    Ok(())
}

fn main() -> Result<()> {
    quiet_on_closed_stdout();
    allocator_options();
    let args = Args::parse();
    check(&args)?;
    if args.dht {
        return dht_study(&args);
    }
    if args.validate {
        validate(
            args.seed,
            args.seeds,
            args.verbose,
            !args.no_admission,
            args.threads,
        );
        return Ok(());
    }
    println!(
        "flash crowd: one seeder (1 Gbit/s up) releases {} MiB to N mirrors (100 Mbit/s–10 Gbit/s)",
        args.size_mib
    );
    println!("| mirrors | 50 % done | 95 % done | all done | Kumar–Ross bound | central host | seeder sent (copies) | events | wall |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let (mut series, mut bars, mut last_bound) = (Vec::new(), Vec::new(), (String::new(), 0.0));
    for &n in &args.mirrors {
        let mut rows: Vec<[f64; 5]> = Vec::new();
        for seed in args.seed..args.seed.saturating_add(args.seeds) {
            let s = flash_crowd(&args, n, seed);
            let started = Instant::now();
            // A progress line on stderr every 10 M events (a 10,000-mirror run takes minutes).
            let r = run_reporting(&s, PROGRESS_EVENTS, |p| {
                let kinds: Vec<String> = EVENT_KINDS
                    .iter()
                    .zip(p.events_by_kind)
                    .filter(|(_, count)| *count > 0)
                    .map(|(kind, count)| format!("{kind} {:.1}", count as f64 / 1e6))
                    .collect();
                eprintln!(
                    "  {} mirrors: {:.0} s of virtual time, {} M events ({}), {} done, {:.0} s",
                    thousands(n),
                    p.now.as_secs_f64(),
                    p.events / 1_000_000,
                    kinds.join(", "),
                    thousands(p.holders - 1),
                    started.elapsed().as_secs_f64()
                )
            });
            let wall = started.elapsed().as_secs_f64();
            let mut done: Vec<f64> = r.nodes[1..].iter().map(|x| secs(x.done_at)).collect();
            done.sort_by(f64::total_cmp);
            let q =
                |f: f64| done[((done.len() as f64 * f).ceil() as usize).clamp(1, done.len()) - 1];
            let size = (args.size_mib << 20) as f64;
            let up_sum: f64 = s.nodes.iter().map(|x| x.up).sum();
            let d_min = s.nodes[1..].iter().map(|x| x.down).fold(f64::MAX, f64::min);
            let bound = (size / GBIT)
                .max(n as f64 * size / up_sum)
                .max(size / d_min);
            let central = n as f64 * size / GBIT;
            // The charts show each N's first seed.
            if seed == args.seed {
                series.push(plot::Series {
                    name: format!("{} mirrors", thousands(n)),
                    done_secs: done.clone(),
                });
                bars.push((format!("{}: 95 % done", thousands(n)), q(0.95) / bound));
                bars.push((format!("{}: all done", thousands(n)), q(1.0) / bound));
                // The largest run's, named as such.
                last_bound = (format!("Kumar–Ross bound, {} mirrors", thousands(n)), bound);
            }
            let copies = r.nodes[0].sent as f64 / size;
            rows.push([q(0.5), q(0.95), q(1.0), copies, r.events as f64]);
            let label = if args.seeds > 1 {
                format!("{n} (seed {seed})")
            } else {
                n.to_string()
            };
            println!(
            "| {label} | {:.1} s | {:.1} s | {:.1} s | {bound:.1} s | {central:.1} s | {copies:.2} | {} | {wall:.1} s |",
            q(0.5),
            q(0.95),
            q(1.0),
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
                        .filter(|(_, spec)| (spec.down - class * GBIT).abs() < 1.0)
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
                last.sort_by(|a, b| {
                    secs(r.nodes[*b].done_at).total_cmp(&secs(r.nodes[*a].done_at))
                });
                for i in last.into_iter().take(3) {
                    let n = &r.nodes[i];
                    println!(
                    "    last: mirror {i} ({:.1} Gbit/s, started {:.1} s): done {:.0} s, {} gets, {} rounds, received {:.2} copies, sent {:.2}",
                    s.nodes[i].down / GBIT,
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
        if rows.len() > 1 {
            let column = |i: usize| median(&sorted(rows.iter().map(|r| r[i]).collect()));
            println!(
                "| {n}, median of {} seeds | {:.1} s | {:.1} s | {:.1} s | | | {:.2} | {:.0} | |",
                rows.len(),
                column(0),
                column(1),
                column(2),
                column(3),
                column(4)
            );
        }
    }
    write_chart(
        &args.out_dir,
        "flash-crowd-done.svg",
        &plot::share_chart(
            &format!(
                "Scale model: {} GiB from one 1 Gbit/s seeder to N mirrors",
                args.size_mib / 1024
            ),
            "seconds since the release",
            &series,
            Some((&last_bound.0, last_bound.1)),
        ),
    )?;
    write_chart(
        &args.out_dir,
        "flash-crowd-vs-bound.svg",
        &plot::bar_chart(
            "Scale model: time to 95 % and to all mirrors done, in Kumar–Ross bounds",
            "times the bound",
            &bars,
            Some(("bound", 1.0)),
        ),
    )?;
    Ok(())
}
