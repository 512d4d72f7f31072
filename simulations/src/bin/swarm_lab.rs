//! Swarm experiments on shaped links: real `commons` nodes in network namespaces joined by
//! a bridge (itself in a namespace, so the host's firewall never sees the traffic), each
//! seeder's uplink capped with `tbf`. Needs root. Cleans up after itself, also on failure.
//!
//! Scenarios (one run prints them all, each against a baseline measured in the same run):
//! - `seeders`: one uncapped leecher fetches by hash alone (DHT) from N seeders each capped
//!   at R Mbit/s; aggregate rate against the sum of the links, and against the same fetch
//!   from one seeder;
//! - `kill`: the same, with one seeder killed (SIGKILL) half-way; extra bytes fetched;
//! - `corrupt`: the surviving seeders plus one that flips a byte in every answer
//!   (`bad-seeder`): the fetch completes, the liar is dropped, `verify` finds nothing;
//! - BitTorrent: `seeders` again with aria2c seeds, opentracker and an aria2c download
//!   over the same links (when the three are installed).
//!
//! With `--flash`, the flash crowd instead: one seeder and `--leechers` nodes (every
//! uplink capped at R Mbit/s) all start fetching at once; the time until all are done,
//! against the same clients fetching with curl from one nginx behind the same uplink.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use clap::Parser;
use commons_simulations::{
    bittorrent, netns::Lab, plot, start_and_read, start_nginx, write_random_file, CommonArgs, Guard,
};

/// Swarm experiments in network namespaces with shaped links (needs root).
#[derive(Debug, Parser)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Seeders
    #[arg(long, default_value_t = 4)]
    seeders: usize,
    /// Uplink of each seeder, in Mbit/s
    #[arg(long, default_value_t = 100)]
    rate_mbit: u64,
    /// Skip the one-seeder baseline (it takes N times longer than the swarm)
    #[arg(long)]
    no_baseline: bool,
    /// Print the leecher's logs (COMMONS_LOG=info, timestamped) after each fetch
    #[arg(long)]
    verbose: bool,
    /// The lying seeder [default: `bad-seeder` beside the `commons` binary]
    #[arg(long)]
    bad_seeder: Option<PathBuf>,
    /// Run the flash crowd (1 seeder, many leechers starting together, vs nginx) instead
    #[arg(long)]
    flash: bool,
    /// Leechers in the flash crowd
    #[arg(long, default_value_t = 10)]
    leechers: usize,
    /// Skip scenario 1 with aria2c (BitTorrent), which otherwise runs when aria2c,
    /// mktorrent and opentracker are installed
    #[arg(long)]
    no_bittorrent: bool,
    /// Folder for the charts (swarm-lab.svg, swarm-lab-flash.svg); outside the sources,
    /// so a run leaves the checkout clean
    #[arg(long, default_value = "target/swarm-lab")]
    plot_dir: PathBuf,
}

/// Writes an SVG chart into `--plot-dir` and says where.
fn write_plot(args: &Args, name: &str, svg: &str) -> Result<()> {
    std::fs::create_dir_all(&args.plot_dir)?;
    let path = args.plot_dir.join(name);
    std::fs::write(&path, svg).with_context(|| format!("writing {}", path.display()))?;
    println!("chart: {}", path.display());
    Ok(())
}

/// Prefix of every namespace and interface this lab creates.
const PREFIX: &str = "cmlab";
/// The first three bytes of every node's address.
const SUBNET: &str = "10.77.0";

/// A `commons` command run inside namespace `ns` on data dir `dir`.
fn commons(args: &Args, ns: &str, dir: &Path) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns])
        .arg(&args.common.commons)
        .arg("--data-dir")
        .arg(dir);
    cmd
}

/// Starts a seeder in `ns` listening on `ip`; returns it and its full address.
fn start_seeder(
    args: &Args,
    ns: &str,
    dir: &Path,
    ip: &str,
    bootstrap: Option<&str>,
) -> Result<(Guard, String)> {
    let mut cmd = commons(args, ns, dir);
    cmd.args(["--json", "node", "run", "--dht-mode", "server", "--listen"])
        .arg(format!("/ip4/{ip}/udp/4433/quic-v1"));
    if let Some(b) = bootstrap {
        cmd.args(["--bootstrap", b]);
    }
    start_and_read(cmd, |line| {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        v["addrs"][0].as_str().map(str::to_string)
    })
}

/// What one fetch did.
struct Fetch {
    elapsed: Duration,
    bytes_received: u64,
    dropped: Vec<String>,
}

/// Runs `commons get` in `ns` (one-shot, fresh data dir) to completion.
fn fetch(args: &Args, ns: &str, dir: &Path, target: &str, bootstrap: &str) -> Result<Fetch> {
    let start = Instant::now();
    let out = commons(args, ns, dir)
        .env(
            "COMMONS_LOG",
            if args.verbose {
                "commons_node=debug"
            } else {
                "warn"
            },
        )
        .args(["--json", "get", target, "--bootstrap", bootstrap])
        .output()?;
    let elapsed = start.elapsed();
    if args.verbose {
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    }
    ensure!(
        out.status.success(),
        "get failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok(Fetch {
        elapsed,
        bytes_received: v["bytes_received"].as_u64().unwrap_or(0),
        dropped: v["dropped"]
            .as_array()
            .map(|d| {
                d.iter()
                    .filter_map(|p| p.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
    })
}

fn mbit(bytes: u64, d: Duration) -> f64 {
    bytes as f64 * 8.0 / 1e6 / d.as_secs_f64()
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.flash {
        return flash_crowd(&args);
    }
    ensure!(args.seeders >= 2, "--seeders: at least 2");
    let scratch = tempfile::tempdir()?;
    let file = scratch.path().join("data.bin");
    let size = args.common.size_mib << 20;
    println!(
        "swarm-lab: {} MiB, {} seeders at {} Mbit/s each, 1 uncapped leecher",
        args.common.size_mib, args.seeders, args.rate_mbit
    );
    write_random_file(&file, size, 11)?;
    let mut hash = String::new();
    // Seeders 1..=N, and N + 1 for the liar.
    for i in 1..=args.seeders + 1 {
        let out = Command::new(&args.common.commons)
            .arg("--data-dir")
            .arg(scratch.path().join(format!("seed{i}")))
            .args(["--json", "add"])
            .arg(&file)
            .output()?;
        ensure!(out.status.success(), "add failed");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        hash = v["hash"].as_str().context("hash")?.to_string();
    }

    let mut lab = Lab::new(PREFIX, SUBNET)?;
    let mut seeders = Vec::new();
    let mut first_addr = String::new();
    for i in 1..=args.seeders {
        let ns = lab.add_node(i, Some(args.rate_mbit))?;
        let ip = format!("10.77.0.{i}");
        let dir = scratch.path().join(format!("seed{i}"));
        let bootstrap = (i > 1).then_some(first_addr.as_str());
        let (guard, addr) = start_seeder(&args, &ns, &dir, &ip, bootstrap)?;
        if i == 1 {
            first_addr = addr.clone();
        }
        seeders.push((guard, addr));
    }
    let leecher = lab.add_node(100, None)?;
    // Let every seeder announce the root.
    std::thread::sleep(Duration::from_secs(3));

    let links = args.seeders as f64 * args.rate_mbit as f64;
    println!("\n| scenario | seconds | Mbit/s | of the summed links | bytes received ÷ size |");
    println!("|---|---|---|---|---|");
    let swarm = fetch(
        &args,
        &leecher,
        &scratch.path().join("l-swarm"),
        &hash,
        &first_addr,
    )?;
    // Each leecher's copy goes once measured: a run of 1 GiB then needs about 7 GiB of disk.
    std::fs::remove_dir_all(scratch.path().join("l-swarm"))?;
    let rate = mbit(size, swarm.elapsed);
    let mut bars = vec![(format!("Commons, {} seeders", args.seeders), rate)];
    println!(
        "| {} seeders, by hash (DHT) | {:.1} | {rate:.0} | **{:.0} %** | {:.3} |",
        args.seeders,
        swarm.elapsed.as_secs_f64(),
        100.0 * rate / links,
        swarm.bytes_received as f64 / size as f64
    );

    let bt_rate = if args.no_bittorrent {
        None
    } else if !bittorrent::available() {
        println!(
            "| aria2c (BitTorrent) | skipped: apt-get install aria2 mktorrent opentracker | | | |"
        );
        None
    } else {
        let took = aria2_swarm(&args, scratch.path(), &file, &leecher)?;
        let rate = mbit(size, took);
        println!(
            "| aria2c (BitTorrent, opentracker), {} seeders | {:.1} | {rate:.0} | {:.0} % | — |",
            args.seeders,
            took.as_secs_f64(),
            100.0 * rate / links,
        );
        bars.push((format!("aria2c, {} seeders", args.seeders), rate));
        Some(rate)
    };

    // One seeder killed half-way.
    let ideal = Duration::from_secs_f64(size as f64 * 8.0 / 1e6 / links);
    let dir = scratch.path().join("l-kill");
    let get = commons(&args, &leecher, &dir)
        .args(["--json", "get", &hash, "--bootstrap", &first_addr])
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let start = Instant::now();
    std::thread::sleep(ideal / 2);
    let (victim, _) = seeders.remove(1);
    // SIGKILL: no clean close; the leecher sees the seeder go silent.
    let _ = Command::new("kill")
        .args(["-KILL", &victim.0.id().to_string()])
        .status();
    drop(victim);
    let out = get.wait_with_output()?;
    let elapsed = start.elapsed();
    if !out.status.success() {
        bail!("the fetch with a seeder killed half-way failed");
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let received = v["bytes_received"].as_u64().unwrap_or(0);
    std::fs::remove_dir_all(&dir)?;
    bars.push(("Commons, one killed".to_string(), mbit(size, elapsed)));
    println!(
        "| {} seeders, one killed at {:.0} s | {:.1} | {:.0} | {:.0} % | {:.3} |",
        args.seeders,
        (ideal / 2).as_secs_f64(),
        elapsed.as_secs_f64(),
        mbit(size, elapsed),
        100.0 * mbit(size, elapsed) / links,
        received as f64 / size as f64
    );

    // One seeder lies (the killed one stays dead): 3 honest + 1 liar.
    let bad_seeder = match &args.bad_seeder {
        Some(p) => p.clone(),
        None => args.common.commons.with_file_name("bad-seeder"),
    };
    let liar_ns = lab.add_node(args.seeders + 1, Some(args.rate_mbit))?;
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &liar_ns])
        .arg(&bad_seeder)
        .arg("--data-dir")
        .arg(scratch.path().join(format!("seed{}", args.seeders + 1)))
        .arg("--listen")
        .arg(format!(
            "/ip4/10.77.0.{}/udp/4433/quic-v1",
            args.seeders + 1
        ))
        .args(["--bootstrap", &first_addr]);
    let (liar, liar_addr) = start_and_read(cmd, |line| {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        v["addrs"][0].as_str().map(str::to_string)
    })?;
    std::thread::sleep(Duration::from_secs(2));
    let dir = scratch.path().join("l-corrupt");
    let corrupt = fetch(&args, &leecher, &dir, &hash, &first_addr)?;
    let liar_id = liar_addr.rsplit('/').next().unwrap_or_default().to_string();
    let verified = Command::new(&args.common.commons)
        .arg("--data-dir")
        .arg(&dir)
        .arg("verify")
        .output()?
        .status
        .success();
    let honest_links = (args.seeders - 1) as f64 * args.rate_mbit as f64;
    bars.push((
        format!("Commons, {} + 1 liar", args.seeders - 1),
        mbit(size, corrupt.elapsed),
    ));
    println!(
        "| {} honest seeders + 1 liar | {:.1} | {:.0} | {:.0} % of the honest links | {:.3} |",
        args.seeders - 1,
        corrupt.elapsed.as_secs_f64(),
        mbit(size, corrupt.elapsed),
        100.0 * mbit(size, corrupt.elapsed) / honest_links,
        corrupt.bytes_received as f64 / size as f64
    );
    println!(
        "\nliar dropped: {}; `commons verify` on the leecher: {}",
        if corrupt.dropped.contains(&liar_id) {
            "yes"
        } else {
            "NO"
        },
        if verified { "clean" } else { "FAILED" }
    );
    drop(liar);
    std::fs::remove_dir_all(&dir)?;

    if !args.no_baseline {
        let one = fetch_one(
            &args,
            &leecher,
            &scratch.path().join("l-one"),
            &hash,
            &first_addr,
        )?;
        println!(
            "| baseline: 1 seeder | {:.1} | {:.0} | {:.0} % of one link | {:.3} |",
            one.elapsed.as_secs_f64(),
            mbit(size, one.elapsed),
            100.0 * mbit(size, one.elapsed) / args.rate_mbit as f64,
            one.bytes_received as f64 / size as f64
        );
        println!(
            "\nswarm ÷ one seeder: {:.2}× faster (ideal {}×)",
            one.elapsed.as_secs_f64() / swarm.elapsed.as_secs_f64(),
            args.seeders
        );
        bars.push(("Commons, 1 seeder".to_string(), mbit(size, one.elapsed)));
    }
    if let Some(bt) = bt_rate {
        println!(
            "Commons ÷ aria2c (BitTorrent) on the same links: {:.2}× the throughput",
            rate / bt
        );
    }
    let title = format!(
        "{} MiB to one leecher, seeders capped at {} Mbit/s each",
        args.common.size_mib, args.rate_mbit
    );
    write_plot(
        &args,
        "swarm-lab.svg",
        &plot::bar_chart(&title, "Mbit/s", &bars, Some(("sum of the links", links))),
    )?;
    drop(seeders);
    drop(lab);
    Ok(())
}

/// Scenario 1 with BitTorrent: an aria2c seeder in each seeder's namespace (same capped
/// uplinks), opentracker beside seeder 1, and an aria2c download in the leecher's
/// namespace. Checks the bytes, returns the download time.
fn aria2_swarm(args: &Args, scratch: &Path, file: &Path, leecher: &str) -> Result<Duration> {
    let bt = scratch.join("bt");
    std::fs::create_dir_all(&bt)?;
    let torrent = bt.join("data.torrent");
    let info = bittorrent::make_torrent(file, "http://10.77.0.1:6969/announce", &torrent)?;
    let ns = |i: usize| format!("{PREFIX}-{i}");
    let tracker_ns = ns(1);
    let _tracker = bittorrent::start_tracker(
        &["ip", "netns", "exec", &tracker_ns],
        "10.77.0.1",
        &info,
        &bt.join("tracker"),
    )?;
    let data_dir = file.parent().context("the file's folder")?;
    let mut seeds = Vec::new();
    for i in 1..=args.seeders {
        let seed_ns = ns(i);
        seeds.push(bittorrent::start_seed(
            &["ip", "netns", "exec", &seed_ns],
            &torrent,
            data_dir,
        )?);
    }
    // Let every seed announce itself to the tracker.
    std::thread::sleep(Duration::from_secs(3));
    let out = bt.join("out");
    let took = bittorrent::download(&["ip", "netns", "exec", leecher], &torrent, &out)?;
    drop(seeds);
    let same = Command::new("cmp")
        .arg(file)
        .arg(out.join(file.file_name().context("name")?))
        .status()?;
    ensure!(same.success(), "aria2c's copy differs from the file");
    std::fs::remove_dir_all(&out)?;
    Ok(took)
}

/// The one-seeder baseline: a ticket naming seeder 1 alone, so no other provider is used.
fn fetch_one(args: &Args, ns: &str, dir: &Path, hash: &str, seeder: &str) -> Result<Fetch> {
    let ticket = make_ticket(hash, seeder)?;
    fetch(args, ns, dir, &ticket, seeder)
}

/// A blob ticket naming one provider, made with the library's own ticket type.
fn make_ticket(hash: &str, provider: &str) -> Result<String> {
    let ticket = commons_protocol::Ticket {
        kind: commons_protocol::TicketKind::Blob,
        hash: hash.parse().context("hash")?,
        providers: vec![provider.to_string()],
    };
    Ok(ticket.to_string())
}

/// Scenario 2: one seeder, `--leechers` nodes fetching at once, every uplink capped; then
/// the same clients fetching from one nginx behind the seeder's uplink.
fn flash_crowd(args: &Args) -> Result<()> {
    ensure!((1..=80).contains(&args.leechers), "--leechers: 1 to 80");
    let scratch = tempfile::tempdir()?;
    let data = scratch.path().join("data");
    std::fs::create_dir_all(&data)?;
    let file = data.join("weights.bin");
    let size = args.common.size_mib << 20;
    let n = args.leechers;
    println!(
        "swarm-lab --flash: {} MiB, 1 seeder and {n} leechers starting together, every uplink {} Mbit/s",
        args.common.size_mib, args.rate_mbit
    );
    write_random_file(&file, size, 12)?;
    let seed_dir = scratch.path().join("seed");
    let out = Command::new(&args.common.commons)
        .arg("--data-dir")
        .arg(&seed_dir)
        .args(["--json", "add"])
        .arg(&file)
        .output()?;
    ensure!(out.status.success(), "add failed");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let hash = v["hash"].as_str().context("hash")?.to_string();

    let mut lab = Lab::new(PREFIX, SUBNET)?;
    let seeder_ns = lab.add_node(1, Some(args.rate_mbit))?;
    let (seeder, seeder_addr) = start_seeder(args, &seeder_ns, &seed_dir, "10.77.0.1", None)?;
    let mut leechers = Vec::new();
    for i in 0..n {
        let ns = lab.add_node(10 + i, Some(args.rate_mbit))?;
        let dir = scratch.path().join(format!("leech{i}"));
        let ip = format!("10.77.0.{}", 10 + i);
        let (daemon, _) = start_seeder(args, &ns, &dir, &ip, Some(&seeder_addr))?;
        leechers.push((ns, dir, daemon));
    }
    std::thread::sleep(Duration::from_secs(2));

    // Commons: every leecher's node fetches by hash alone, all at once.
    let cpu_before = cpu_busy()?;
    let start = Instant::now();
    let mut gets: Vec<_> = leechers
        .iter()
        .map(|(ns, dir, _)| {
            commons(args, ns, dir)
                .args(["--json", "get", &hash])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
        })
        .collect::<std::io::Result<_>>()?;
    let commons_done = finish_times(&mut gets, start)?;
    let mut received = 0;
    for get in gets {
        let out = get.wait_with_output()?;
        ensure!(
            out.status.success(),
            "a leecher's get failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        received += v["bytes_received"].as_u64().unwrap_or(0);
    }
    let cpu = cpu_busy()?;
    let cpu_share = (cpu.0 - cpu_before.0) as f64 / (cpu.1 - cpu_before.1).max(1) as f64;
    let mut clean = 0;
    for (ns, dir, _) in &leechers {
        clean += usize::from(
            commons(args, ns, dir)
                .arg("verify")
                .output()?
                .status
                .success(),
        );
    }
    let served_by_seeder = seeder_sent(args, &seeder_ns, &seed_dir)?;
    drop(leechers);
    drop(seeder);

    // nginx in the seeder's namespace, the same clients with curl.
    let nginx_scratch = scratch.path().join("nginx");
    std::fs::create_dir_all(&nginx_scratch)?;
    let _nginx = start_nginx(
        &["ip", "netns", "exec", &seeder_ns],
        &nginx_scratch,
        &data,
        "10.77.0.1:8080",
    )?;
    let start = Instant::now();
    let curls: Vec<_> = (0..n)
        .map(|i| {
            Command::new("ip")
                .args(["netns", "exec", &format!("{PREFIX}-{}", 10 + i)])
                .args(["curl", "-sf", "-o"])
                .arg(scratch.path().join(format!("curl{i}.bin")))
                .arg("http://10.77.0.1:8080/weights.bin")
                .spawn()
        })
        .collect::<std::io::Result<_>>()?;
    let mut curls = curls;
    let nginx_done = finish_times(&mut curls, start)?;
    for curl in &mut curls {
        ensure!(curl.wait()?.success(), "a curl failed");
    }
    for i in 0..n {
        let got = std::fs::metadata(scratch.path().join(format!("curl{i}.bin")))?.len();
        ensure!(got == size, "curl {i} got {got} bytes of {size}");
    }
    drop(lab);

    let secs = |d: &[Duration]| {
        let max = d.iter().max().copied().unwrap_or_default().as_secs_f64();
        let min = d.iter().min().copied().unwrap_or_default().as_secs_f64();
        (min, max)
    };
    let (c_min, c_max) = secs(&commons_done);
    let (h_min, h_max) = secs(&nginx_done);
    let one_link = size as f64 * 8.0 / 1e6 / args.rate_mbit as f64;
    println!("\n| system | first done (s) | all done (s) | all done ÷ one copy over one uplink |");
    println!("|---|---|---|---|");
    println!(
        "| Commons, {n} nodes | {c_min:.1} | **{c_max:.1}** | {:.2} |",
        c_max / one_link
    );
    println!(
        "| nginx → curl ×{n} | {h_min:.1} | **{h_max:.1}** | {:.2} |",
        h_max / one_link
    );
    println!(
        "\nall done: Commons {:.2}× faster than one nginx (one copy over one uplink: {one_link:.1} s; \
         nginx's floor: {:.1} s)",
        h_max / c_max,
        one_link * n as f64
    );
    println!(
        "bytes received by all leechers ÷ (size × {n}): {:.3}; the seeder sent {:.2} copies; \
         `commons verify` clean on {clean} of {n}; CPU busy during the Commons run: {:.0} % \
         of this machine's cores",
        received as f64 / (size as f64 * n as f64),
        served_by_seeder as f64 / size as f64,
        100.0 * cpu_share
    );
    let secs = |d: &[Duration]| d.iter().map(Duration::as_secs_f64).collect();
    let title = format!(
        "Flash crowd: {n} clients, {} MiB, every uplink {} Mbit/s",
        args.common.size_mib, args.rate_mbit
    );
    let series = [
        plot::Series {
            name: format!("Commons: 1 seeder + {n} nodes"),
            done_secs: secs(&commons_done),
        },
        plot::Series {
            name: format!("one nginx → {n} curls"),
            done_secs: secs(&nginx_done),
        },
    ];
    write_plot(
        args,
        "swarm-lab-flash.svg",
        &plot::step_chart(&title, &series),
    )
}

/// When each child exits, polled every 20 ms from `start` (the children are left to be
/// waited on for their status and output).
fn finish_times(children: &mut [std::process::Child], start: Instant) -> Result<Vec<Duration>> {
    let mut done: Vec<Option<Duration>> = vec![None; children.len()];
    while done.iter().any(Option::is_none) {
        for (child, when) in children.iter_mut().zip(done.iter_mut()) {
            if when.is_none() && child.try_wait()?.is_some() {
                *when = Some(start.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(done.into_iter().flatten().collect())
}

/// Bytes the node on `dir` (running in `ns`) has sent, from `commons node status`.
fn seeder_sent(args: &Args, ns: &str, dir: &Path) -> Result<u64> {
    let out = commons(args, ns, dir)
        .args(["--json", "node", "status"])
        .output()?;
    ensure!(out.status.success(), "node status failed");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    v["bytes_served"]
        .as_u64()
        .context("node status has no bytes_served")
}

/// Busy and total CPU time of the whole machine so far (from `/proc/stat`, in ticks): the
/// flash crowd runs 11 nodes on one machine, so whether it was CPU-bound matters.
fn cpu_busy() -> Result<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().context("/proc/stat is empty")?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    let total: u64 = ticks.iter().sum();
    // idle and iowait
    let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
    Ok((total - idle, total))
}
