//! NAT experiments: real `commons` nodes behind NAT routers in network namespaces (needs
//! root and nftables). Cleans up after itself, also on failure.
//!
//! The internet is a bridge (`198.18.0.0/24`) with two public relays (`r1`, `r2`, their
//! uplinks capped at `--relay-mbit`) and a public seeder (`p`, same cap, relaying off).
//! Sites are hosts on `192.168.i.0/24` behind their own router, which masquerades and drops
//! unsolicited inbound packets as home routers do: cone (one public port per socket) or
//! symmetric (a random port per destination), one of them dropping all outbound UDP.
//! Seeders: `A` (cone), `T` (symmetric). Fetchers: `B` (cone), `S` (symmetric), `U` (cone,
//! UDP blocked). Every node runs with the defaults, given only `r1`'s address.
//!
//! Scenarios, each printing a table:
//! - a: B fetches A's dataset by hash: a punch, then direct; bytes through relays ≤ 1 %;
//! - b: S fetches A's dataset: the punch fails, the data comes through a relay at its cap;
//! - c: B fetches a dataset held by T (relay only) and by p (public): both serve;
//! - d: U (UDP blocked) fetches A's dataset, over TCP to the relay;
//! - punches: `--trials` fresh fetchers per pair of NAT kinds (cone/symmetric each side),
//!   each counting whether its punch made a direct connection.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use clap::Parser;
use commons_simulations::{
    netns::{Lab, Nat, NatSite},
    start_and_read_logged, write_random_file, Guard,
};
use serde_json::Value;

/// NAT traversal experiments in network namespaces (needs root and nftables).
#[derive(Debug, Parser)]
struct Args {
    /// Path to the `commons` binary (release build)
    #[arg(long)]
    commons: PathBuf,
    /// Size of each scenario's dataset, in MiB
    #[arg(long, default_value_t = 64)]
    size_mib: u64,
    /// Uplink of each relay and of the public seeder, in Mbit/s
    #[arg(long, default_value_t = 40)]
    relay_mbit: u64,
    /// Punch trials per pair of NAT kinds
    #[arg(long, default_value_t = 20)]
    trials: usize,
    /// Scenarios to run (a, b, c, d, punches)
    #[arg(long, value_delimiter = ',', default_value = "a,b,c,d,punches")]
    only: Vec<String>,
    /// Where the logs of failed fetches are kept (each node logs at
    /// `COMMONS_LOG`, default `warn,commons_node=info`)
    #[arg(long, default_value = "/tmp/nat-lab-logs")]
    logs: PathBuf,
}

/// Prefix of every namespace and interface this lab creates.
const PREFIX: &str = "cmnat";
/// The public network's first three bytes (RFC 2544's benchmarking range: global to the
/// nodes, never routed anywhere real).
const SUBNET: &str = "198.18.0";
/// The port every node listens on (QUIC; relays also open TCP on it).
const PORT: u16 = 4433;
/// The relays' budget (`[relay] budget_gib_per_hour`).
const RELAY_BUDGET_GIB: u64 = 256;
/// How long a fetcher waits for its punch's outcome once its fetch is done.
const PUNCH_WAIT: Duration = Duration::from_secs(15);

/// A running `commons node` in a namespace.
struct Node {
    _guard: Guard,
    ns: String,
    dir: PathBuf,
    peer_id: String,
}

impl Node {
    /// A `commons` command on this node (through its running daemon).
    fn cmd(&self, args: &Args) -> Command {
        commons(args, &self.ns, &self.dir)
    }

    /// `node status --json`.
    fn status(&self, args: &Args) -> Result<Value> {
        let out = self.cmd(args).args(["--json", "node", "status"]).output()?;
        ensure!(
            out.status.success(),
            "node status in {}: {}",
            self.ns,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    /// Its address on the public network at `ip`, over QUIC (or TCP).
    fn addr(&self, ip: &str, tcp: bool) -> String {
        let transport = if tcp {
            format!("tcp/{PORT}")
        } else {
            format!("udp/{PORT}/quic-v1")
        };
        format!("/ip4/{ip}/{transport}/p2p/{}", self.peer_id)
    }
}

/// A `commons` command run inside namespace `ns` on data dir `dir`.
fn commons(args: &Args, ns: &str, dir: &Path) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns])
        .arg(&args.commons)
        .arg("--data-dir")
        .arg(dir)
        .env(
            "COMMONS_LOG",
            std::env::var("COMMONS_LOG").unwrap_or_else(|_| "warn,commons_node=info".into()),
        );
    cmd
}

/// Starts a node with the defaults in `ns` on `dir` at `port`, bootstrapping from
/// `bootstrap`.
fn start_node(
    args: &Args,
    ns: &str,
    dir: &Path,
    port: u16,
    bootstrap: Option<&str>,
) -> Result<Node> {
    let mut cmd = commons(args, ns, dir);
    cmd.args(["--json", "node", "run", "--listen"])
        .arg(format!("/ip4/0.0.0.0/udp/{port}/quic-v1"));
    if let Some(b) = bootstrap {
        cmd.args(["--bootstrap", b]);
    }
    // Each node's log (COMMONS_LOG, default info for commons) beside its data dir.
    let log = dir.with_extension("log");
    let (guard, peer_id) = start_and_read_logged(cmd, &log, |line| {
        let v: Value = serde_json::from_str(line).ok()?;
        v["peer_id"].as_str().map(str::to_string)
    })
    .with_context(|| format!("starting a node in {ns}"))?;
    Ok(Node {
        _guard: guard,
        ns: ns.to_string(),
        dir: dir.to_path_buf(),
        peer_id,
    })
}

/// Waits (up to `limit`) until `ready` holds for `node`'s status.
fn wait_for(
    args: &Args,
    node: &Node,
    limit: Duration,
    what: &str,
    ready: impl Fn(&Value) -> bool,
) -> Result<Value> {
    let start = Instant::now();
    loop {
        let status = node.status(args)?;
        if ready(&status) {
            return Ok(status);
        }
        if start.elapsed() > limit {
            bail!(
                "{} ({}): {what} not within {limit:?}",
                node.ns,
                node.peer_id
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Adds a random file of `size` bytes (from `seed`) to the store at `dir`; returns the hash.
fn add_dataset(args: &Args, scratch: &Path, dir: &Path, size: u64, seed: u64) -> Result<String> {
    let data = scratch.join(format!("data-{seed}"));
    std::fs::create_dir_all(&data)?;
    let file = data.join("weights.bin");
    if !file.exists() {
        write_random_file(&file, size, seed)?;
    }
    let out = Command::new(&args.commons)
        .arg("--data-dir")
        .arg(dir)
        .args(["--json", "add"])
        .arg(&data)
        .output()?;
    ensure!(
        out.status.success(),
        "add: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let v: Value = serde_json::from_slice(&out.stdout)?;
    Ok(v["hash"].as_str().context("hash")?.to_string())
}

/// The counters of a status's `nat` object.
fn counter(status: &Value, name: &str) -> u64 {
    status["nat"]["counters"][name].as_u64().unwrap_or(0)
}

/// The path byte counter `name` (`relayed_received`, …).
fn path_bytes(status: &Value, name: &str) -> u64 {
    status["nat"]["counters"]["bytes"][name]
        .as_u64()
        .unwrap_or(0)
}

/// What one fetch by a fresh node did.
struct Fetch {
    elapsed: Duration,
    /// The fetcher's status once the punch's outcome is known (or [`PUNCH_WAIT`] passed).
    status: Value,
}

impl Fetch {
    fn punched(&self) -> bool {
        counter(&self.status, "punches_succeeded") > 0
    }

    fn punch_failed(&self) -> bool {
        counter(&self.status, "punches_failed") > 0
    }

    /// Whether it ever had a relayed connection (else it reached the seeder directly).
    fn went_through_relay(&self) -> bool {
        counter(&self.status, "relayed_connections") > 0
    }

    /// Fraction of the data that came through relays.
    fn relayed_share(&self, size: u64) -> f64 {
        path_bytes(&self.status, "relayed_received") as f64 / size as f64
    }

    fn mbit(&self, size: u64) -> f64 {
        size as f64 * 8.0 / 1e6 / self.elapsed.as_secs_f64()
    }
}

/// Starts a fresh node in `site` at `port` (a new one per trial: a new NAT mapping),
/// fetches `hash` through it (checking the bytes against the seed file), waits for its
/// punch's outcome, and stops it.
#[allow(clippy::too_many_arguments)]
fn fetch(
    args: &Args,
    scratch: &Path,
    site: &NatSite,
    port: u16,
    name: &str,
    bootstrap: &str,
    hash: &str,
    expect: &Path,
) -> Result<Fetch> {
    let dir = scratch.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(dir.with_extension("log"));
    let node = start_node(args, &site.host, &dir, port, Some(bootstrap))?;
    wait_for(args, &node, Duration::from_secs(30), "a DHT peer", |s| {
        s["routing_table"].as_u64().unwrap_or(0) > 0
    })?;
    let out_dir = scratch.join(format!("{name}-out"));
    let _ = std::fs::remove_dir_all(&out_dir);
    let start = Instant::now();
    let out = node
        .cmd(args)
        .args(["--json", "get", hash, "-o"])
        .arg(&out_dir)
        .output()?;
    let elapsed = start.elapsed();
    ensure!(
        out.status.success(),
        "{name}: get failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    ensure!(
        std::fs::read(out_dir.join("weights.bin"))? == std::fs::read(expect)?,
        "{name}: the fetched file differs from the seeder's"
    );
    let status = wait_for(args, &node, PUNCH_WAIT, "a punch outcome", |s| {
        counter(s, "punches_succeeded") + counter(s, "punches_failed") > 0
    })
    .or_else(|_| node.status(args))?;
    let _ = std::fs::remove_dir_all(&out_dir);
    Ok(Fetch { elapsed, status })
}

/// The lab: relays, public seeder, NAT sites, seeders and their datasets.
struct World {
    lab: Lab,
    r1: Node,
    r2: Node,
    p: Node,
    t: Node,
    /// Nodes kept running, not looked at after the start (A).
    _others: Vec<Node>,
    b: NatSite,
    s: NatSite,
    u: NatSite,
    /// Dataset hashes and their files, by scenario.
    sets: std::collections::HashMap<&'static str, (String, PathBuf)>,
}

fn build(args: &Args, scratch: &Path) -> Result<World> {
    let size = args.size_mib << 20;
    // Which seeder holds what: a, b, d and the small trial set on A; c on T and p.
    let mut sets = std::collections::HashMap::new();
    let plan: [(&str, &[&str], u64, u64); 6] = [
        ("a", &["A"], size, 1),
        ("b", &["A"], size, 2),
        ("c", &["T", "p"], size, 3),
        ("d", &["A"], size, 4),
        ("trial-A", &["A"], 1 << 20, 5),
        ("trial-T", &["T"], 1 << 20, 6),
    ];
    for (set, holders, bytes, seed) in plan {
        let mut hash = String::new();
        for holder in holders {
            hash = add_dataset(args, scratch, &scratch.join(holder), bytes, seed)?;
        }
        let file = scratch.join(format!("data-{seed}")).join("weights.bin");
        sets.insert(set, (hash, file));
    }
    // The public seeder only seeds: it must not relay for the NAT seeders too.
    std::fs::write(scratch.join("p/config.toml"), "[relay]\nenabled = false\n")?;
    // The relays' budget charges each circuit at its full byte limit (256 MiB), so the
    // default 8 GiB an hour admits 32 circuits: fewer than the trials open.
    for relay in ["r1", "r2"] {
        std::fs::create_dir_all(scratch.join(relay))?;
        std::fs::write(
            scratch.join(relay).join("config.toml"),
            format!("[relay]\nbudget_gib_per_hour = {RELAY_BUDGET_GIB}\n"),
        )?;
    }

    let mut lab = Lab::new(PREFIX, SUBNET)?;
    let rate = Some(args.relay_mbit);
    let r1_ns = lab.add_node(10, rate)?;
    let r2_ns = lab.add_node(11, rate)?;
    let p_ns = lab.add_node(12, rate)?;
    let a_site = lab.add_nat_site(20, Nat::Cone, false, None)?;
    let t_site = lab.add_nat_site(21, Nat::Symmetric, false, None)?;
    let b = lab.add_nat_site(30, Nat::Cone, false, None)?;
    let s = lab.add_nat_site(31, Nat::Symmetric, false, None)?;
    let u = lab.add_nat_site(32, Nat::Cone, true, None)?;

    let r1 = start_node(args, &r1_ns, &scratch.join("r1"), PORT, None)?;
    let bootstrap = r1.addr(&lab.addr(10), false);
    let r2 = start_node(args, &r2_ns, &scratch.join("r2"), PORT, Some(&bootstrap))?;
    let p = start_node(args, &p_ns, &scratch.join("p"), PORT, Some(&bootstrap))?;
    let a = start_node(
        args,
        &a_site.host,
        &scratch.join("A"),
        PORT,
        Some(&bootstrap),
    )?;
    let t = start_node(
        args,
        &t_site.host,
        &scratch.join("T"),
        PORT,
        Some(&bootstrap),
    )?;
    let settle = Duration::from_secs(90);
    for relay in [&r1, &r2] {
        wait_for(args, relay, settle, "relaying", |s| {
            s["nat"]["relay_serving"] == true
        })?;
    }
    for seeder in [&a, &t] {
        wait_for(
            args,
            seeder,
            settle,
            "private with relayed addresses",
            |s| {
                s["nat"]["reachability"] == "private"
                    && s["nat"]["relayed_addrs"]
                        .as_array()
                        .is_some_and(|a| !a.is_empty())
            },
        )?;
    }
    wait_for(args, &p, settle, "public", |s| {
        s["nat"]["reachability"] == "public"
    })?;
    // Roots are announced again 2 s after the advertised addresses change.
    std::thread::sleep(Duration::from_secs(5));
    Ok(World {
        lab,
        r1,
        r2,
        p,
        t,
        _others: vec![a],
        b,
        s,
        u,
        sets,
    })
}

/// Bytes both relays' links have sent so far (counted by the kernel, headers included).
fn relay_tx(world: &World) -> Result<u64> {
    Ok(world.lab.tx_bytes(10)? + world.lab.tx_bytes(11)?)
}

fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(
        commons_simulations::netns::is_root(),
        "nat-lab needs root (network namespaces, nftables)"
    );
    let scratch = tempfile::tempdir()?;
    let size = args.size_mib << 20;
    println!(
        "nat-lab: {} MiB per scenario; relays and the public seeder capped at {} Mbit/s",
        args.size_mib, args.relay_mbit
    );
    let world = build(&args, scratch.path())?;
    let bootstrap = world.r1.addr(&format!("{SUBNET}.10"), false);
    let bootstrap_tcp = world.r1.addr(&format!("{SUBNET}.10"), true);
    let run = |s: &str| args.only.iter().any(|o| o == s);
    let set = |s: &str| world.sets[s].clone();

    if run("a") {
        through_relays(
            &args,
            &world,
            scratch.path(),
            "a",
            &world.b,
            &bootstrap,
            "(a) cone ↔ cone: B fetches A's data by hash",
        )?;
    }

    if run("b") {
        through_relays(
            &args,
            &world,
            scratch.path(),
            "b",
            &world.s,
            &bootstrap,
            "(b) symmetric ↔ cone: S fetches A's data",
        )?;
    }

    if run("c") {
        let (hash, file) = set("c");
        let before = [world.t.status(&args)?, world.p.status(&args)?];
        let f = fetch(
            &args,
            scratch.path(),
            &world.b,
            PORT,
            "c",
            &bootstrap,
            &hash,
            &file,
        )?;
        let after = [world.t.status(&args)?, world.p.status(&args)?];
        // Served bytes count the bulk endpoint too (p serves over it: a direct path).
        let delta =
            |i: usize, key: &dyn Fn(&Value) -> u64| key(&after[i]).saturating_sub(key(&before[i]));
        let served = |s: &Value| s["bytes_served"].as_u64().unwrap_or(0);
        let relayed = |s: &Value| path_bytes(s, "relayed_sent");
        let (t_served, t_relayed, p_served) =
            (delta(0, &served), delta(0, &relayed), delta(1, &served));
        let mib = |b: u64| b as f64 / 1048576.0;
        let share = |b: u64| b as f64 / size as f64 * 100.0;
        println!(
            "\n(c) B fetches {} MiB held by T (symmetric NAT: relay only) and p (public); \
             both capped at {} Mbit/s",
            args.size_mib, args.relay_mbit
        );
        println!("| time | rate | T served (through the relay) | p served |");
        println!("|---|---|---|---|");
        println!(
            "| {:.2} s | {:.1} Mbit/s | {:.1} MiB, {:.0} % ({:.1} MiB) | {:.1} MiB, {:.0} % |",
            f.elapsed.as_secs_f64(),
            f.mbit(size),
            mib(t_served),
            share(t_served),
            mib(t_relayed),
            mib(p_served),
            share(p_served),
        );
    }

    if run("d") {
        through_relays(
            &args,
            &world,
            scratch.path(),
            "d",
            &world.u,
            &bootstrap_tcp,
            "(d) UDP blocked at U: U fetches A's data, bootstrapping over TCP",
        )?;
    }

    if run("punches") {
        println!(
            "\npunches: {} fresh fetchers per pair (a new port each: a new NAT mapping), \
             each fetching 1 MiB through a relay, then waiting up to {} s",
            args.trials,
            PUNCH_WAIT.as_secs()
        );
        println!("| fetcher ↔ seeder | direct after a punch | punch failed | still relayed, no outcome yet | direct without a relay | fetch failed | circuits open on the relays after |");
        println!("|---|---|---|---|---|---|---|");
        let pairs = [
            ("cone ↔ cone", &world.b, "trial-A"),
            ("symmetric ↔ cone", &world.s, "trial-A"),
            ("cone ↔ symmetric", &world.b, "trial-T"),
            ("symmetric ↔ symmetric", &world.s, "trial-T"),
        ];
        for (label, site, set_name) in pairs {
            let (hash, file) = set(set_name);
            let mut outcomes = [0; 5];
            for trial in 0..args.trials {
                let name = format!("trial-{trial}");
                let port = PORT + 1 + trial as u16;
                let slot = match fetch(
                    &args,
                    scratch.path(),
                    site,
                    port,
                    &name,
                    &bootstrap,
                    &hash,
                    &file,
                ) {
                    Err(e) => {
                        // The first reason here, every reason and the fetcher's log kept.
                        let e = format!("{e:#}");
                        let kept = keep_log(&args, scratch.path(), &name, label, trial, &e);
                        eprintln!(
                            "{label}, trial {trial}: {} (all reasons and the log: {})",
                            e.split("; ").next().unwrap_or(&e),
                            kept.display()
                        );
                        4
                    }
                    Ok(f) => match (f.punched(), f.punch_failed(), f.went_through_relay()) {
                        (true, _, _) => 0,
                        (false, true, _) => 1,
                        (false, false, true) => 2,
                        (false, false, false) => 3,
                    },
                };
                outcomes[slot] += 1;
            }
            let [ok, failed, pending, direct, broken] = outcomes;
            let circuits = |n: &Node| {
                n.status(&args)
                    .map(|s| s["nat"]["relay_circuits"].as_u64().unwrap_or(0))
                    .unwrap_or(0)
            };
            let open = circuits(&world.r1) + circuits(&world.r2);
            println!("| {label} | {ok} | {failed} | {pending} | {direct} | {broken} | {open} |");
        }
    }
    Ok(())
}

/// Runs scenario `set` (a fresh fetcher in `site`), printing its table: time, rate (also
/// against the relays' cap), the punch's outcome, and the share of the data that went
/// through relays by the fetcher's count and on the relays' links.
fn through_relays(
    args: &Args,
    world: &World,
    scratch: &Path,
    set: &str,
    site: &NatSite,
    bootstrap: &str,
    title: &str,
) -> Result<()> {
    let (hash, file) = world.sets[set].clone();
    let size = args.size_mib << 20;
    let before = relay_tx(world)?;
    let f = fetch(args, scratch, site, PORT, set, bootstrap, &hash, &file)?;
    let relays = relay_tx(world)? - before;
    println!(
        "\n{title} ({} MiB; relays capped at {} Mbit/s)",
        args.size_mib, args.relay_mbit
    );
    println!("| time | rate | of the relays' cap | punch | relayed (fetcher's count) | relays' uplinks |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| {:.2} s | {:.1} Mbit/s | {:.0} % | {} | {:.2} % | {:.2} % of the data |",
        f.elapsed.as_secs_f64(),
        f.mbit(size),
        f.mbit(size) / args.relay_mbit as f64 * 100.0,
        punch_word(&f),
        f.relayed_share(size) * 100.0,
        relays as f64 / size as f64 * 100.0
    );
    Ok(())
}

/// Keeps a failed trial's error and its fetcher's log in `args.logs`; returns the file.
fn keep_log(
    args: &Args,
    scratch: &Path,
    name: &str,
    label: &str,
    trial: usize,
    error: &str,
) -> PathBuf {
    let pair: String = label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let kept = args.logs.join(format!("{pair}-{trial}.log"));
    let log = std::fs::read_to_string(scratch.join(name).with_extension("log")).unwrap_or_default();
    let _ = std::fs::create_dir_all(&args.logs);
    let _ = std::fs::write(&kept, format!("{}\n\n{log}", error.replace("; ", "\n")));
    kept
}

fn punch_word(f: &Fetch) -> &'static str {
    match (f.punched(), f.punch_failed()) {
        (true, _) => "succeeded",
        (false, true) => "failed",
        (false, false) => "none seen",
    }
}
