//! Load lab (issue 20): one seeder (`commons node run`, gateway on) holding a dataset, under
//! 200 honest fetchers, 1,000 idle transfer streams and 300 slow gateway clients at once
//! (in-process, `commons_simulations::load`). Measures the seeder's peak RSS (the run fails
//! above [`SEEDER_RSS_CAP_MIB`]), whether every honest fetcher completes, and how much
//! slower three probes get under the load than without it, in the same run:
//!
//! - a `commons get` run on the seeder itself (through its admin socket), fetching another
//!   dataset from a second node: the seeder's own, local work;
//! - a `commons get` of the seeder's dataset by a fresh peer: one more remote client;
//! - a `curl` of the dataset's file through the seeder's gateway.
//!
//! Then, in a phase of their own, the same probes while 200 DHT clients that know only the
//! seeder look up providers of random hashes back to back (issue 20: "200 concurrent
//! lookups slowed a normal get from 0.5 s to 2.15 s").

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use clap::Parser;
use commons_node::net::split_peer_addr;
use commons_simulations::{
    load::{
        spawn_fetchers, spawn_idle_streams, spawn_lookups, spawn_slow_clients, FetchFigures,
        IdleFigures, LookupFigures, SlowFigures, Slowness, Stop, Target,
    },
    memory_of, percentile, sorted, start_and_read, write_random_file, Guard,
};

/// The seeder's resident memory may not exceed this under the lab's load (MiB).
const SEEDER_RSS_CAP_MIB: u64 = 256;
/// A probe that takes longer than this counts as failed.
const PROBE_TIMEOUT: Duration = Duration::from_secs(600);
/// Longest wait for every honest fetcher to finish a fetch after the probes.
const FETCHERS_DEADLINE: Duration = Duration::from_secs(900);

/// One seeder under many fetchers, idle streams and slow HTTP clients.
#[derive(Debug, Parser)]
struct Args {
    /// Path to the `commons` binary (release build)
    #[arg(long)]
    commons: PathBuf,
    /// Size of each dataset's file, in MiB
    #[arg(long, default_value_t = 64)]
    size_mib: u64,
    /// Honest fetchers (in-process peers, each fetching the seeder's file again and again)
    #[arg(long, default_value_t = 200)]
    fetchers: usize,
    /// Idle streams held open on the seeder's transfer protocol
    #[arg(long, default_value_t = 1000)]
    idle_streams: usize,
    /// Peers the idle streams come from (the server admits 16 per peer)
    #[arg(long, default_value_t = 100)]
    idle_peers: usize,
    /// Gateway clients sending their request head one byte per second
    #[arg(long, default_value_t = 150)]
    slow_heads: usize,
    /// Gateway clients reading the body a few KiB per second
    #[arg(long, default_value_t = 150)]
    slow_readers: usize,
    /// Loopback addresses the slow gateway clients come from (the gateway admits 64
    /// connections per address)
    #[arg(long, default_value_t = 32)]
    slow_sources: usize,
    /// DHT clients looking up providers through the seeder, back to back, in a phase of
    /// their own after the main load (0: none)
    #[arg(long, default_value_t = 200)]
    lookups: usize,
    /// Runs of each probe, with and without load (the median is reported)
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Seconds over which the load's peers arrive, then as many again before the probes
    #[arg(long, default_value_t = 10)]
    warmup_secs: u64,
    /// The seeder's RSS cap in MiB (default: the lab's constant)
    #[arg(long, default_value_t = SEEDER_RSS_CAP_MIB)]
    rss_cap_mib: u64,
}

/// A started `commons node run`, and what it printed.
struct NodeRun {
    guard: Guard,
    peer: libp2p::PeerId,
    addrs: Vec<libp2p::Multiaddr>,
    ticket: String,
    gateway: Option<SocketAddr>,
}

fn start_node(commons: &Path, dir: &Path, config: Option<&Path>) -> Result<NodeRun> {
    let mut cmd = Command::new(commons);
    cmd.arg("--data-dir").arg(dir);
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    cmd.args([
        "--json",
        "node",
        "run",
        "--listen",
        "/ip4/127.0.0.1/udp/0/quic-v1",
    ]);
    let (guard, line) = start_and_read(cmd, |line| {
        line.contains("\"peer_id\"").then(|| line.to_string())
    })?;
    let v: serde_json::Value = serde_json::from_str(&line)?;
    let mut peer = None;
    let mut addrs = Vec::new();
    for a in v["addrs"].as_array().context("addrs")? {
        let (p, addr) = split_peer_addr(&a.as_str().context("addr")?.parse()?).context("/p2p/")?;
        peer = Some(p);
        addrs.push(addr);
    }
    let ticket = v["tickets"][0]["ticket"]
        .as_str()
        .context("a ticket")?
        .to_string();
    let gateway = v["gateway"]
        .as_str()
        .map(|g| g.trim_start_matches("http://").parse())
        .transpose()?;
    Ok(NodeRun {
        guard,
        peer: peer.context("a peer id")?,
        addrs,
        ticket,
        gateway,
    })
}

fn add(commons: &Path, dir: &Path, what: &Path) -> Result<String> {
    let out = Command::new(commons)
        .arg("--data-dir")
        .arg(dir)
        .args(["--json", "add"])
        .arg(what)
        .output()?;
    anyhow::ensure!(out.status.success(), "add failed");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok(v["hash"].as_str().context("a hash")?.to_string())
}

/// Runs `cmd` to completion within [`PROBE_TIMEOUT`]; its time, or why it failed.
fn probe(cmd: &mut Command) -> Result<f64> {
    let start = Instant::now();
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn()?;
    loop {
        if let Some(status) = child.try_wait()? {
            let took = start.elapsed().as_secs_f64();
            if status.success() {
                return Ok(took);
            }
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            bail!("{cmd:?} failed ({status}): {}", err.trim());
        }
        if start.elapsed() > PROBE_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{cmd:?} took more than {PROBE_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// What the probes measure, run `runs` times each.
struct Probes<'a> {
    commons: &'a Path,
    scratch: &'a Path,
    seed_dir: &'a Path,
    /// Ticket and root of the second node's dataset (fetched by the seeder: local work).
    other_ticket: &'a str,
    other_root: &'a str,
    /// The seeder's dataset.
    ticket: &'a str,
    /// A file of it through the gateway.
    url: &'a str,
}

/// Each probe's times (failed runs left out) and its failures: local get, remote get, curl.
#[derive(Debug, Default)]
struct ProbeTimes {
    local_get: Timed,
    remote_get: Timed,
    curl: Timed,
}

/// Picks one probe's runs out of [`ProbeTimes`].
type PickProbe = fn(&ProbeTimes) -> &Timed;

/// One probe's runs: seconds of those that succeeded, and why the others failed.
#[derive(Debug, Default)]
struct Timed {
    secs: Vec<f64>,
    failures: Vec<String>,
}

impl Timed {
    fn push(&mut self, r: Result<f64>) {
        match r {
            Ok(s) => self.secs.push(s),
            Err(e) => {
                eprintln!("    probe failed: {e:#}");
                self.failures.push(format!("{e:#}"));
            }
        }
    }

    /// Median of the runs that succeeded.
    fn median(&self) -> Option<f64> {
        (!self.secs.is_empty()).then(|| percentile(&sorted(self.secs.clone()), 0.5))
    }
}

impl Probes<'_> {
    /// Runs each probe `runs` times; a failed run is recorded, not fatal (a failure under
    /// load is a figure).
    fn run(&self, runs: usize, label: &str) -> Result<ProbeTimes> {
        let mut t = ProbeTimes::default();
        for i in 0..runs {
            eprintln!("  {label}: probes, run {}/{runs}…", i + 1);
            t.local_get.push(probe(
                Command::new(self.commons)
                    .arg("--data-dir")
                    .arg(self.seed_dir)
                    .args(["get", self.other_ticket]),
            ));
            // Forget it again, so the next run fetches it again.
            let rm = Command::new(self.commons)
                .arg("--data-dir")
                .arg(self.seed_dir)
                .args(["rm", self.other_root])
                .output()?;
            anyhow::ensure!(rm.status.success(), "rm failed");
            let fresh = self.scratch.join(format!("probe-{label}-{i}"));
            t.remote_get.push(probe(
                Command::new(self.commons)
                    .arg("--data-dir")
                    .arg(&fresh)
                    .args(["get", self.ticket]),
            ));
            let _ = std::fs::remove_dir_all(&fresh);
            t.curl.push(probe(Command::new("curl").args([
                "-sf",
                "-o",
                "/dev/null",
                self.url,
            ])));
        }
        Ok(t)
    }
}

/// Samples `pid`'s RSS every 20 ms until `done`; returns the highest seen.
fn sample_rss(pid: u32, done: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut peak = 0;
        while !done.load(Ordering::Relaxed) {
            if let Some((rss, _)) = memory_of(pid) {
                peak = peak.max(rss);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        peak
    })
}

/// Resets the kernel's peak-RSS mark of `pid` (`VmHWM`), so it covers the load alone.
fn reset_peak(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// CPU seconds (user + system) `pid` has used so far ("self": this process).
fn cpu_secs(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name (which may hold spaces) end with ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

fn main() -> Result<()> {
    let args = Args::parse();
    let scratch = tempfile::tempdir()?;
    let scratch = scratch.path();
    let size = args.size_mib << 20;
    eprintln!("writing two datasets of {} MiB…", args.size_mib);
    let (ds, other_ds) = (scratch.join("ds"), scratch.join("other-ds"));
    std::fs::create_dir_all(&ds)?;
    std::fs::create_dir_all(&other_ds)?;
    write_random_file(&ds.join("weights.bin"), size, 11)?;
    std::fs::write(ds.join("config.json"), "{\"lab\": \"load\"}\n")?;
    write_random_file(&other_ds.join("weights.bin"), size, 12)?;

    let (seed_dir, other_dir) = (scratch.join("seed"), scratch.join("other"));
    let root = add(&args.commons, &seed_dir, &ds)?;
    let other_root = add(&args.commons, &other_dir, &other_ds)?;
    let config = scratch.join("gateway.toml");
    std::fs::write(&config, "[gateway]\nlisten = \"127.0.0.1:0\"\n")?;
    let seeder = start_node(&args.commons, &seed_dir, Some(&config))?;
    let other = start_node(&args.commons, &other_dir, None)?;
    let gateway = seeder.gateway.context("the seeder's gateway")?;
    let pid = seeder.guard.0.id();

    // The file's blob, for the in-process fetchers.
    let listing = Command::new("curl")
        .args(["-sf", &format!("http://{gateway}/dataset/{root}")])
        .output()?;
    let listing: serde_json::Value = serde_json::from_slice(&listing.stdout)?;
    let file = listing["files"]
        .as_array()
        .context("files")?
        .iter()
        .find(|f| f["path"] == "weights.bin")
        .context("weights.bin listed")?;
    let target = Target {
        peer: seeder.peer,
        addrs: seeder.addrs.clone(),
        hash: file["hash"].as_str().context("hash")?.parse()?,
        size,
    };
    let path = format!("/dataset/{root}/weights.bin");
    let url = format!("http://{gateway}{path}");
    let probes = Probes {
        commons: &args.commons,
        scratch,
        seed_dir: &seed_dir,
        other_ticket: &other.ticket,
        other_root: &other_root,
        ticket: &seeder.ticket,
        url: &url,
    };

    eprintln!("without load…");
    let quiet = probes.run(args.runs, "no load")?;
    let idle_rss = memory_of(pid).map_or(0, |(rss, _)| rss);
    let quiet_peak = memory_of(pid).map_or(0, |(_, hwm)| hwm);
    let reset = reset_peak(pid);

    eprintln!(
        "starting the load: {} fetchers, {} idle streams from {} peers, {} + {} slow gateway clients…",
        args.fetchers, args.idle_streams, args.idle_peers, args.slow_heads, args.slow_readers
    );
    let sampling = Arc::new(AtomicBool::new(false));
    let sampler = sample_rss(pid, sampling.clone());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let stop = Arc::new(Stop::default());
    let fetch = Arc::new(FetchFigures::default());
    let idle = Arc::new(IdleFigures::default());
    let (heads, readers) = (
        Arc::new(SlowFigures::default()),
        Arc::new(SlowFigures::default()),
    );
    let load_start = Instant::now();
    let cpu_start = (cpu_secs(&pid.to_string()), cpu_secs("self"));
    let per_peer = args.idle_streams.div_ceil(args.idle_peers.max(1));
    let ramp_up = Duration::from_secs(args.warmup_secs);
    spawn_idle_streams(
        rt.handle(),
        args.idle_peers,
        per_peer,
        ramp_up,
        &target,
        &stop,
        &idle,
    );
    for (n, slowness, figures) in [
        (args.slow_heads, Slowness::Head, &heads),
        (args.slow_readers, Slowness::Reader, &readers),
    ] {
        spawn_slow_clients(
            rt.handle(),
            n,
            args.slow_sources,
            slowness,
            gateway,
            &path,
            &stop,
            figures,
        );
    }
    spawn_fetchers(rt.handle(), args.fetchers, ramp_up, &target, &stop, &fetch);
    std::thread::sleep(ramp_up * 2);
    eprintln!(
        "  after {} s: {} idle streams open, {} + {} slow clients open, {} fetches done",
        args.warmup_secs * 2,
        idle.open.load(Ordering::Relaxed),
        heads.open.load(Ordering::Relaxed),
        readers.open.load(Ordering::Relaxed),
        fetch.completed.load(Ordering::Relaxed),
    );

    eprintln!("under load…");
    let loaded = probes.run(args.runs, "load")?;
    let open_during = (
        idle.open.load(Ordering::Relaxed),
        heads.open.load(Ordering::Relaxed) + readers.open.load(Ordering::Relaxed),
    );
    eprintln!("waiting for every fetcher to complete a fetch…");
    let deadline = Instant::now() + FETCHERS_DEADLINE;
    while fetch.fetchers_done.load(Ordering::Relaxed)
        + fetch.fetchers_broken.load(Ordering::Relaxed)
        < args.fetchers as u64
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.stop();
    let load_secs = load_start.elapsed().as_secs_f64();
    let cpu_load = (
        cpu_secs(&pid.to_string()) - cpu_start.0,
        cpu_secs("self") - cpu_start.1,
    );
    rt.shutdown_timeout(Duration::from_secs(5));
    sampling.store(true, Ordering::Relaxed);
    let sampled_peak = sampler.join().unwrap_or(0);
    let load_peak = match memory_of(pid) {
        Some((_, hwm)) if reset => hwm.max(sampled_peak),
        _ => sampled_peak,
    };

    // Then DHT lookups alone: the seeder's own work (a `get`) while many walks ask it.
    let lookups = Arc::new(LookupFigures::default());
    let mut under_lookups = None;
    if args.lookups > 0 {
        eprintln!("starting {} DHT lookers…", args.lookups);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        let stop = Arc::new(Stop::default());
        spawn_lookups(rt.handle(), args.lookups, ramp_up, &target, &stop, &lookups);
        std::thread::sleep(ramp_up * 2);
        let before = lookups.done.load(Ordering::Relaxed);
        let started = Instant::now();
        let cpu_before = (cpu_secs(&pid.to_string()), cpu_secs("self"));
        let probed = probes.run(args.runs, "lookups");
        let secs = started.elapsed().as_secs_f64();
        let rate = (lookups.done.load(Ordering::Relaxed) - before) as f64 / secs;
        eprintln!(
            "  lookups phase: {:.0} s; CPU seconds per second: seeder {:.2}, lookers {:.2}",
            secs,
            (cpu_secs(&pid.to_string()) - cpu_before.0) / secs,
            (cpu_secs("self") - cpu_before.1) / secs,
        );
        stop.stop();
        rt.shutdown_timeout(Duration::from_secs(5));
        under_lookups = Some((probed?, rate));
    }
    drop(other);
    drop(seeder);

    let times = sorted(
        fetch
            .times
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone(),
    );
    println!(
        "## Load lab: one seeder, a {} MiB file, {:.0} s of load",
        args.size_mib, load_secs
    );
    println!("| load | figures |");
    println!("|---|---|");
    println!(
        "| {} honest fetchers (in-process peers, 4 MiB batches, 2 in flight, every group verified) | {} of {} completed at least one whole fetch ({} fetches in all, {} failed, {} could not connect); per fetch median {:.1} s, p90 {:.1} s, max {:.1} s; {} `Busy` answers, {} request errors, {} handshakes retried |",
        args.fetchers,
        fetch.fetchers_done.load(Ordering::Relaxed),
        args.fetchers,
        fetch.completed.load(Ordering::Relaxed),
        fetch.failed.load(Ordering::Relaxed),
        fetch.fetchers_broken.load(Ordering::Relaxed),
        percentile(&times, 0.5),
        percentile(&times, 0.9),
        percentile(&times, 1.0),
        fetch.busy.load(Ordering::Relaxed),
        fetch.errors.load(Ordering::Relaxed),
        fetch.connect_retries.load(Ordering::Relaxed),
    );
    println!(
        "| {} idle streams ({} peers × {}, no request sent, reopened when closed) | {} open at the probes, {} at most; {} opened in all, {} refused; {} peers could not connect, {} handshakes retried |",
        args.idle_peers * per_peer,
        args.idle_peers,
        per_peer,
        open_during.0,
        idle.peak.load(Ordering::Relaxed),
        idle.opened.load(Ordering::Relaxed),
        idle.refused.load(Ordering::Relaxed),
        idle.broken.load(Ordering::Relaxed),
        idle.connect_retries.load(Ordering::Relaxed),
    );
    let (head_mean, head_max) = heads.held_secs();
    println!(
        "| {} slow gateway clients sending their head 1 byte/s (from {} addresses) | {} open at most, {} connections in all, each held {:.1} s on average, {:.1} s at most (closed by the gateway) |",
        args.slow_heads,
        args.slow_sources.min(args.slow_heads.max(1)),
        heads.peak.load(Ordering::Relaxed),
        heads.connections.load(Ordering::Relaxed),
        head_mean,
        head_max,
    );
    let (read_mean, read_max) = readers.held_secs();
    println!(
        "| {} slow gateway clients reading 4 KiB/s (from {} addresses) | {} open at most, {} connections in all, {} refused or closed unanswered; {} answered 200, {} answered 503; each held {:.1} s on average, {:.1} s at most |",
        args.slow_readers,
        args.slow_sources.min(args.slow_readers.max(1)),
        readers.peak.load(Ordering::Relaxed),
        readers.connections.load(Ordering::Relaxed),
        readers.refused.load(Ordering::Relaxed),
        readers.served.load(Ordering::Relaxed),
        readers.unavailable.load(Ordering::Relaxed),
        read_mean,
        read_max,
    );
    println!();
    println!(
        "| probe (median of {}) | no load, s | under load, s | under load ÷ no load |",
        args.runs
    );
    println!("|---|---|---|---|");
    let rows: [(&str, PickProbe); 3] = [
        (
            "`commons get` on the seeder (its own work: another node's dataset)",
            |p| &p.local_get,
        ),
        ("`commons get` of the seeder's dataset by a new peer", |p| {
            &p.remote_get
        }),
        ("`curl` of the file through the seeder's gateway", |p| {
            &p.curl
        }),
    ];
    let cell = |t: &Timed| match (t.median(), t.failures.len()) {
        (Some(m), 0) => format!("{m:.2}"),
        (Some(m), f) => format!("{m:.2} ({f} of {} failed)", f + t.secs.len()),
        (None, f) => format!("all {f} failed"),
    };
    let ratio = |q: &Timed, l: &Timed| match (q.median(), l.median()) {
        (Some(q), Some(l)) => format!("{:.1}", l / q),
        _ => "—".into(),
    };
    for (name, pick) in rows {
        let (q, l) = (pick(&quiet), pick(&loaded));
        println!("| {name} | {} | {} | {} |", cell(q), cell(l), ratio(q, l));
    }
    if let Some((probed, rate)) = &under_lookups {
        println!();
        println!(
            "| probe (median of {}) while {} DHT clients look up providers through the seeder ({:.0} lookups/s, {} failed, {} clients could not join) | no load, s | under lookups, s | under lookups ÷ no load |",
            args.runs,
            args.lookups,
            rate,
            lookups.failed.load(Ordering::Relaxed),
            lookups.broken.load(Ordering::Relaxed),
        );
        println!("|---|---|---|---|");
        for (name, pick) in rows {
            let (q, l) = (pick(&quiet), pick(probed));
            println!("| {name} | {} | {} | {} |", cell(q), cell(l), ratio(q, l));
        }
    }
    for (name, t) in [
        ("local get", &loaded.local_get),
        ("remote get", &loaded.remote_get),
        ("curl", &loaded.curl),
    ] {
        for f in t.failures.iter().take(2) {
            println!("{name} under load failed: {f}");
        }
    }
    println!();
    println!(
        "seeder RSS: {:.0} MiB idle, {:.0} MiB at most without load, {:.0} MiB at most under load (cap {} MiB{})",
        mib(idle_rss),
        mib(quiet_peak),
        mib(load_peak),
        args.rss_cap_mib,
        if reset { "" } else { "; sampled every 20 ms" },
    );
    println!(
        "CPU during the load ({:.0} s, {} cores): seeder {:.2} s per second, the lab's in-process load {:.2} s per second",
        load_secs,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_load.0 / load_secs,
        cpu_load.1 / load_secs,
    );
    for (kind, n) in fetch.top_errors(3) {
        println!("fetcher errors: {n} × {kind}…");
    }

    let mut failures = Vec::new();
    let failed_probes = loaded.local_get.failures.len()
        + loaded.remote_get.failures.len()
        + loaded.curl.failures.len();
    if failed_probes > 0 {
        failures.push(format!("{failed_probes} probe runs under load failed"));
    }
    if mib(load_peak) > args.rss_cap_mib as f64 {
        failures.push(format!(
            "the seeder's RSS reached {:.0} MiB, above the cap of {} MiB",
            mib(load_peak),
            args.rss_cap_mib
        ));
    }
    let done = fetch.fetchers_done.load(Ordering::Relaxed);
    if done < args.fetchers as u64 {
        failures.push(format!(
            "only {done} of {} honest fetchers completed a fetch",
            args.fetchers
        ));
    }
    if failures.is_empty() {
        Ok(())
    } else {
        bail!("{}", failures.join("; "))
    }
}
