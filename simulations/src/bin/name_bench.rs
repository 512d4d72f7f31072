//! Signed-names and signatures benchmark (issue 17), in one run:
//!
//! 1. N real DHT servers in one process on loopback (`commons_simulations::dht`, as
//!    `dht-bench`); random nodes publish name records, each under a P-256 key of its own.
//!    Measured with the node's own decision code (`provenance::names::lookup`): a cold
//!    resolution (a node that never saw the name), a warm one (the same node again, with the
//!    record it accepted as its floor), and the time until nodes polling a name see a new
//!    version after its publisher puts it. Baseline, same network and run: a provider lookup
//!    to the first provider (what every `get <hash>` does).
//! 2. Signing and verifying a dataset of 10,000 files from its manifest alone (no file data
//!    is read): `sign_manifest`, `SignatureBundle::parse`, `verify_signature`,
//!    `check_manifest`. Baseline: parsing the manifest (`Manifest::from_bytes`, what every
//!    fetch does with one).

use std::{
    collections::HashSet,
    hint::black_box,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, ensure, Context, Result};
use clap::Parser;
use commons_node::{
    discovery::{DhtMode, DiscoveryConfig},
    net::Host,
    provenance::names::{lookup, DEFAULT_LIFETIME_SECS, NAME_ANSWERS},
};
use commons_protocol::{
    provenance::{
        bundle::sign_manifest, name_key, KeyAlgorithm, NameRecord, SecretKey, SignatureBundle,
        SignedNameRecord,
    },
    Hash, Manifest, ManifestEntry, NameRef,
};
use commons_simulations::{dht::start_network, percentile, sorted};
use serde_json::{json, Value};
use tokio::time::Instant;

#[derive(Debug, Parser)]
struct Args {
    /// DHT servers in the network
    #[arg(long, default_value_t = 50)]
    nodes: usize,
    /// Names published, each by a random node under a key of its own
    #[arg(long, default_value_t = 30)]
    names: usize,
    /// Provider lookups, and (node, name) pairs resolved cold then warm
    #[arg(long, default_value_t = 100)]
    lookups: usize,
    /// Names given a second version while other nodes poll for it
    #[arg(long, default_value_t = 30)]
    updates: usize,
    /// Nodes polling each updated name
    #[arg(long, default_value_t = 3)]
    watchers: usize,
    /// Files in the signed dataset
    #[arg(long, default_value_t = 10_000)]
    files: usize,
    /// Timed runs of each signing step (medians are reported)
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// Also print every figure as one JSON object on the last line
    #[arg(long)]
    json: bool,
}

/// How long a node polls for a new version before it counts as a miss.
const SEE_DEADLINE: Duration = Duration::from_secs(30);
/// Pause after each timed lookup. A provider lookup returns at the first provider but its
/// Kademlia walk goes on to the end in the background (~25 requests); back to back, those
/// walks load the next measurement (it took 5–20 ms instead of ~1 ms on this machine).
const QUIET: Duration = Duration::from_millis(50);
/// Pause between one polling node's lookups, so the pollers leave the publisher some CPU.
const POLL_GAP: Duration = Duration::from_millis(5);

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A fresh P-256 publisher key.
fn new_key() -> SecretKey {
    loop {
        if let Some(key) = SecretKey::from_seed(KeyAlgorithm::P256, &rand::random()) {
            return key;
        }
    }
}

/// `key`'s record of `name` at `seq`, naming a random root, valid for the default lifetime.
fn name_record(key: &SecretKey, name: &NameRef, seq: u64, prev: Option<Hash>) -> SignedNameRecord {
    let now = unix_now();
    let root = Hash::from_bytes(rand::random());
    NameRecord::new(
        &key.public(),
        name,
        root,
        seq,
        prev,
        now..now + DEFAULT_LIFETIME_SECS,
    )
    .sign(key)
}

/// A published name: its key, DHT key, publishing node and current record.
struct Published {
    key: SecretKey,
    name: NameRef,
    dht_key: Hash,
    owner: usize,
    record: SignedNameRecord,
}

/// Median and p99 of a sample, in milliseconds.
struct Stat {
    median: f64,
    p99: f64,
    n: usize,
}

impl Stat {
    fn of(v: Vec<f64>) -> Self {
        let n = v.len();
        let v = sorted(v);
        Self {
            median: percentile(&v, 0.5),
            p99: percentile(&v, 0.99),
            n,
        }
    }

    fn json(&self, base: f64) -> Value {
        json!({
            "median_ms": self.median,
            "p99_ms": self.p99,
            "samples": self.n,
            "median_ratio": self.median / base,
            "p99_ratio": self.p99 / base,
        })
    }
}

/// A random node other than `not`.
fn other_node(n: usize, not: usize) -> usize {
    let i = rand::random_range(0..n - 1);
    if i >= not {
        i + 1
    } else {
        i
    }
}

/// Polls `name` from `host` until a lookup returns sequence `want`; the time from `start`
/// and the number of lookups, or `None` after [`SEE_DEADLINE`].
async fn watch(
    host: Host,
    dht_key: Hash,
    seen: SignedNameRecord,
    want: u64,
    start: Instant,
) -> Option<(f64, usize)> {
    let mut polls = 0;
    while start.elapsed() < SEE_DEADLINE {
        polls += 1;
        if let Ok(Some(found)) = lookup(&host, dht_key, Some(seen.clone()), false).await {
            if found.record.record.seq >= want {
                return Some((ms(start.elapsed()), polls));
            }
        }
        tokio::time::sleep(POLL_GAP).await;
    }
    None
}

/// Part 1: the DHT. Returns the figures as JSON.
async fn names(args: &Args) -> Result<Value> {
    let n = args.nodes;
    println!("\n== signed names: {n} DHT servers on loopback ==");
    let config = DiscoveryConfig {
        mode: DhtMode::Server,
        ..DiscoveryConfig::default()
    };
    let hosts = start_network(n, &config).await?;

    // Baseline: provider lookups, 20 roots announced by random nodes.
    let roots: Vec<(Hash, usize)> = (0..20)
        .map(|_| (Hash::from_bytes(rand::random()), rand::random_range(0..n)))
        .collect();
    for (root, owner) in &roots {
        let cost = hosts[*owner].announce(*root).await?;
        ensure!(cost.successes > 0, "announcing {root} reached nobody");
    }
    let (mut provider_ms, mut provider_misses) = (Vec::new(), 0);
    for i in 0..args.lookups {
        let (root, owner) = roots[i % roots.len()];
        let asker = other_node(n, owner);
        let start = Instant::now();
        let found = hosts[asker].find_providers(root, 1, false).await?;
        provider_ms.push(ms(start.elapsed()));
        provider_misses += usize::from(found.providers.is_empty());
        tokio::time::sleep(QUIET).await;
    }
    let provider = Stat::of(provider_ms);
    let base = provider.median;

    // Names: each published by a random node (put_name, the node's publish path).
    let mut published = Vec::with_capacity(args.names);
    let mut put_ms = Vec::new();
    for i in 0..args.names {
        let key = new_key();
        let name = NameRef::parse(&format!("bench/set-{i:03}@main"))?;
        let dht_key = name_key(&key.public(), &name);
        let record = name_record(&key, &name, 1, None);
        let owner = rand::random_range(0..n);
        let start = Instant::now();
        let cost = hosts[owner].put_name(dht_key, record.encode()).await?;
        put_ms.push(ms(start.elapsed()));
        ensure!(cost.successes > 0, "publishing {name} reached nobody");
        published.push(Published {
            key,
            name,
            dht_key,
            owner,
            record,
        });
    }
    let put1 = Stat::of(put_ms);

    // Cold then warm resolutions of distinct (node, name) pairs, by nodes that never saw
    // the name.
    let pairs = args.lookups.min(args.names * (n - 1));
    let verify_record = {
        let p = &published[0];
        let (bytes, now) = (p.record.encode(), unix_now());
        let times = (0..200)
            .map(|_| {
                let start = std::time::Instant::now();
                let _ = black_box(SignedNameRecord::decode_verified(
                    black_box(&bytes),
                    p.dht_key.as_bytes(),
                    now,
                ));
                ms(start.elapsed())
            })
            .collect();
        percentile(&sorted(times), 0.5)
    };
    let mut used = HashSet::new();
    let (mut cold_ms, mut warm_ms, mut answers, mut requests) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut cold_misses, mut warm_misses) = (0, 0);
    for i in 0..pairs {
        let j = i % args.names;
        let p = &published[j];
        let mut node = other_node(n, p.owner);
        while !used.insert((node, j)) {
            node = other_node(n, p.owner);
        }
        let start = Instant::now();
        let cold = lookup(&hosts[node], p.dht_key, None, false).await?;
        cold_ms.push(ms(start.elapsed()));
        tokio::time::sleep(QUIET).await;
        let Some(cold) = cold.filter(|r| r.record == p.record) else {
            cold_misses += 1;
            continue;
        };
        answers.push(cold.answers as f64);
        requests.push(f64::from(cold.cost.requests));
        let start = Instant::now();
        let warm = lookup(&hosts[node], p.dht_key, Some(cold.record), false).await?;
        warm_ms.push(ms(start.elapsed()));
        warm_misses += usize::from(!warm.is_some_and(|r| r.record == p.record));
        tokio::time::sleep(QUIET).await;
    }
    let (cold, warm) = (Stat::of(cold_ms), Stat::of(warm_ms));
    let (answers, requests) = (Stat::of(answers), Stat::of(requests));

    // A new version: the publisher puts sequence 2 while `watchers` other nodes poll.
    let (mut see_ms, mut polls, mut put2_ms, mut see_misses) =
        (Vec::new(), Vec::new(), Vec::new(), 0);
    let updates = args.updates.min(published.len());
    let watchers = args.watchers.min(n - 1);
    for p in published.iter_mut().take(updates) {
        let next = name_record(&p.key, &p.name, 2, Some(p.record.id()));
        let mut chosen = HashSet::new();
        while chosen.len() < watchers {
            chosen.insert(other_node(n, p.owner));
        }
        let start = Instant::now();
        let polling: Vec<_> = chosen
            .into_iter()
            .map(|w| {
                tokio::spawn(watch(
                    hosts[w].clone(),
                    p.dht_key,
                    p.record.clone(),
                    2,
                    start,
                ))
            })
            .collect();
        let cost = hosts[p.owner].put_name(p.dht_key, next.encode()).await?;
        put2_ms.push(ms(start.elapsed()));
        ensure!(
            cost.successes > 0,
            "publishing {} again reached nobody",
            p.name
        );
        for task in polling {
            match task.await.context("watcher")? {
                Some((t, k)) => {
                    see_ms.push(t);
                    polls.push(k as f64);
                }
                None => see_misses += 1,
            }
        }
        p.record = next;
        tokio::time::sleep(QUIET).await;
    }
    let (see, put2, polls) = (Stat::of(see_ms), Stat::of(put2_ms), Stat::of(polls));

    println!(
        "  names: {} published by random nodes; answers a lookup waits for: NAME_ANSWERS = {NAME_ANSWERS}",
        args.names
    );
    println!();
    println!(
        "  | {:<56} | {:>10} | {:>10} | {:>9} | {:>9} |",
        "figure", "median ms", "p99 ms", "median ÷", "p99 ÷"
    );
    println!(
        "  |{:-<58}|{:-<12}|{:-<12}|{:-<11}|{:-<11}|",
        "", "", "", "", ""
    );
    let row = |label: &str, s: &Stat| {
        println!(
            "  | {:<56} | {:>10.2} | {:>10.2} | {:>8.1}x | {:>8.1}x |",
            format!("{label} (n={})", s.n),
            s.median,
            s.p99,
            s.median / base,
            s.p99 / base
        );
    };
    row("provider lookup, first provider (baseline)", &provider);
    row("name put, sequence 1 (put_name)", &put1);
    row("cold resolution (seen: None)", &cold);
    row("warm resolution (seen: the record)", &warm);
    row("publish of sequence 2 (put_name)", &put2);
    row("publish start → a polling node sees sequence 2", &see);
    println!("  (÷: divided by the provider lookup's median, {base:.2} ms)");
    println!();
    println!(
        "  cold resolutions: valid answers median {:.0} (p99 {:.0}), requests median {:.0} (p99 {:.0})",
        answers.median, answers.p99, requests.median, requests.p99
    );
    println!(
        "  checking one name record (decode_verified: P-256 signature, key, times): {verify_record:.3} ms; a lookup checks each answer"
    );
    println!(
        "  lookups per polling node until sequence 2: median {:.0}, p99 {:.0}",
        polls.median, polls.p99
    );
    println!(
        "  misses: provider {provider_misses} of {}, cold {cold_misses} of {pairs}, warm {warm_misses}, \
         sequence 2 not seen within {} s by {see_misses} of {} nodes",
        args.lookups,
        SEE_DEADLINE.as_secs(),
        updates * watchers
    );
    Ok(json!({
        "nodes": n,
        "names": args.names,
        "name_answers": NAME_ANSWERS,
        "provider_lookup": provider.json(base),
        "put_seq1": put1.json(base),
        "cold_resolution": cold.json(base),
        "warm_resolution": warm.json(base),
        "put_seq2": put2.json(base),
        "new_version_seen": see.json(base),
        "record_verify_ms": verify_record,
        "cold_answers_median": answers.median,
        "cold_requests_median": requests.median,
        "polls_median": polls.median,
        "misses": {
            "provider": provider_misses,
            "cold": cold_misses,
            "warm": warm_misses,
            "new_version": see_misses,
        },
    }))
}

/// Median time of `runs` calls of `f`, in milliseconds.
fn median_ms<T>(runs: usize, mut f: impl FnMut() -> T) -> f64 {
    let times = (0..runs.max(1))
        .map(|_| {
            let start = std::time::Instant::now();
            black_box(f());
            ms(start.elapsed())
        })
        .collect();
    percentile(&sorted(times), 0.5)
}

/// Part 2: signing and verifying a dataset from its manifest. Returns the figures as JSON.
fn signatures(args: &Args) -> Result<Value> {
    let files = args.files;
    println!("\n== signing a dataset of {files} files (manifest only, no file data) ==");
    let entries = (0..files)
        .map(|i| ManifestEntry {
            path: format!("data/train-{i:05}-of-{files:05}.parquet"),
            size: rand::random_range(1 << 20..1 << 30),
            hash: Hash::from_bytes(rand::random()),
            executable: false,
            hub: None,
        })
        .collect();
    let manifest = Manifest::new(entries)?;
    let manifest_bytes = manifest.to_bytes();
    let key = new_key();
    let public = key.public();
    let root = manifest.hash();
    let bundle = sign_manifest(&root, &manifest, &key)?;
    let parsed = SignatureBundle::parse(&bundle)?;
    parsed.verify(&public, &root, &manifest)?;

    let runs = args.runs;
    let parse_manifest = median_ms(runs, || Manifest::from_bytes(black_box(&manifest_bytes)));
    let sign = median_ms(runs, || sign_manifest(&root, black_box(&manifest), &key));
    let parse = median_ms(runs, || SignatureBundle::parse(black_box(&bundle)));
    let signature = median_ms(runs, || parsed.verify_signature(black_box(&public)));
    let check = median_ms(runs, || parsed.check_manifest(&root, black_box(&manifest)));
    let verify = parse + signature + check;

    println!();
    println!(
        "  | {:<46} | {:>10} | {:>12} |",
        "step (median of runs)", "ms", "÷ baseline"
    );
    println!("  |{:-<48}|{:-<12}|{:-<14}|", "", "", "");
    let row = |label: &str, t: f64| {
        println!(
            "  | {label:<46} | {t:>10.3} | {:>11.2}x |",
            t / parse_manifest
        );
    };
    row("Manifest::from_bytes (baseline)", parse_manifest);
    row("sign_manifest", sign);
    row("SignatureBundle::parse", parse);
    row("verify_signature", signature);
    row("check_manifest", check);
    row("verify in all (parse + signature + check)", verify);
    println!();
    println!(
        "  manifest {} bytes; bundle {} bytes ({:.1} bytes per file, {:.2}x the manifest); {runs} runs each",
        manifest_bytes.len(),
        bundle.len(),
        bundle.len() as f64 / files as f64,
        bundle.len() as f64 / manifest_bytes.len() as f64,
    );
    Ok(json!({
        "files": files,
        "runs": runs,
        "manifest_bytes": manifest_bytes.len(),
        "bundle_bytes": bundle.len(),
        "manifest_from_bytes_ms": parse_manifest,
        "sign_ms": sign,
        "bundle_parse_ms": parse,
        "verify_signature_ms": signature,
        "check_manifest_ms": check,
        "verify_total_ms": verify,
        "sign_ratio": sign / parse_manifest,
        "verify_total_ratio": verify / parse_manifest,
    }))
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.nodes < 3 {
        bail!("--nodes: at least 3");
    }
    if args.names == 0 || args.lookups == 0 || args.files == 0 {
        bail!("--names, --lookups and --files: at least 1");
    }
    println!(
        "name-bench: signed names in a DHT (nodes on loopback in one process), dataset signatures"
    );
    // The network's runtime is dropped before part 2, so its nodes stop and the signing
    // figures are taken on a quiet machine.
    let names = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("runtime")?
        .block_on(names(&args))?;
    let signatures = signatures(&args)?;
    if args.json {
        println!("{}", json!({ "names": names, "signatures": signatures }));
    }
    Ok(())
}
