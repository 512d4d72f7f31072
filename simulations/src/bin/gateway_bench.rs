//! Gateway benchmark: a 1 GiB blob served over HTTP by a Commons node's gateway (read and
//! verified from RocksDB as it is sent) against nginx serving the same file from disk, both
//! to `curl` on loopback, in the same run; then the node's peak RSS while 50 clients fetch
//! byte ranges at once.

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use clap::Parser;
use commons_simulations::{
    run_measured, start_and_read, start_nginx, write_random_file, CommonArgs, RunStats,
};
use rand::{Rng, SeedableRng};

/// Gateway throughput against nginx, and memory under concurrent range requests.
#[derive(Debug, Parser)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Repetitions of each whole-file download (the median is reported)
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Concurrent range clients for the memory measurement
    #[arg(long, default_value_t = 50)]
    clients: usize,
    /// Bytes each range client asks for, in MiB
    #[arg(long, default_value_t = 32)]
    range_mib: u64,
}

/// `curl` to /dev/null, `runs` times; the median.
fn download(url: &str, runs: usize) -> Result<RunStats> {
    let mut all = Vec::new();
    for _ in 0..runs {
        all.push(run_measured(Command::new("curl").args([
            "-sf",
            "-o",
            "/dev/null",
            url,
        ]))?);
    }
    Ok(RunStats::median(all))
}

/// Resident memory of `pid` now, in bytes.
fn rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Starts `clients` curls at once, each asking for a random range of `range` bytes of a
/// `size`-byte blob; samples `pid`'s RSS until they are all done. Returns (peak RSS, time).
fn concurrent_ranges(
    url: &str,
    size: u64,
    range: u64,
    clients: usize,
    pid: u32,
) -> Result<(u64, Duration)> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let start = Instant::now();
    let mut children: Vec<Child> = (0..clients)
        .map(|_| {
            let first = rng.random_range(0..size.saturating_sub(range).max(1));
            let last = (first + range).min(size) - 1;
            Command::new("curl")
                .args([
                    "-sf",
                    "-o",
                    "/dev/null",
                    "-r",
                    &format!("{first}-{last}"),
                    url,
                ])
                .stdout(Stdio::null())
                .spawn()
                .context("curl")
        })
        .collect::<Result<_>>()?;
    let mut peak = 0;
    loop {
        peak = peak.max(rss(pid));
        let mut running = false;
        for c in &mut children {
            match c.try_wait()? {
                Some(status) => anyhow::ensure!(status.success(), "a range client failed"),
                None => running = true,
            }
        }
        if !running {
            return Ok((peak, start.elapsed()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn hash_of(out: &[u8]) -> Result<String> {
    let v: serde_json::Value = serde_json::from_slice(out)?;
    Ok(v["hash"].as_str().context("a hash")?.to_string())
}

fn main() -> Result<()> {
    let args = Args::parse();
    let scratch = tempfile::tempdir()?;
    let data = scratch.path().join("data");
    std::fs::create_dir_all(&data)?;
    let file = data.join("weights.bin");
    let size = args.common.size_mib << 20;
    eprintln!("writing {} MiB of random data…", args.common.size_mib);
    write_random_file(&file, size, 5)?;

    let node_dir = scratch.path().join("node");
    let out = Command::new(&args.common.commons)
        .arg("--data-dir")
        .arg(&node_dir)
        .args(["--json", "add"])
        .arg(&file)
        .output()?;
    anyhow::ensure!(out.status.success(), "add failed");
    let hash = hash_of(&out.stdout)?;
    let config = scratch.path().join("gateway.toml");
    std::fs::write(&config, "[gateway]\nlisten = \"127.0.0.1:0\"\n")?;
    let mut cmd = Command::new(&args.common.commons);
    cmd.arg("--data-dir")
        .arg(&node_dir)
        .arg("--config")
        .arg(&config)
        .args([
            "--json",
            "node",
            "run",
            "--listen",
            "/ip4/127.0.0.1/udp/0/quic-v1",
        ]);
    let (node, gateway) = start_and_read(cmd, |line| {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        v["gateway"].as_str().map(str::to_string)
    })?;
    let _nginx = start_nginx(&[], scratch.path(), &data, "127.0.0.1:18432")?;
    let gateway_url = format!("{gateway}/blob/{hash}");
    let nginx_url = "http://127.0.0.1:18432/weights.bin";

    // Both serve the same bytes.
    let check = scratch.path().join("check.bin");
    let ok = Command::new("curl")
        .args(["-sf", "-o"])
        .arg(&check)
        .arg(&gateway_url)
        .status()?;
    anyhow::ensure!(ok.success(), "the gateway did not answer");
    let same = Command::new("cmp").arg(&check).arg(&file).status()?;
    anyhow::ensure!(same.success(), "the gateway sent other bytes");
    std::fs::remove_file(&check)?;

    eprintln!("whole-file downloads…");
    let commons = download(&gateway_url, args.runs)?;
    let nginx = download(nginx_url, args.runs)?;
    let pid = node.0.id();
    let idle = rss(pid);
    eprintln!("{} concurrent range clients…", args.clients);
    let range = args.range_mib << 20;
    let (peak, took) = concurrent_ranges(&gateway_url, size, range, args.clients, pid)?;
    let (_, nginx_took) =
        concurrent_ranges(nginx_url, size, range, args.clients, std::process::id())?;

    let mib = args.common.size_mib as f64;
    let rate = |s: &RunStats| mib / s.elapsed.as_secs_f64();
    println!(
        "## {} MiB over loopback to curl (median of {} runs)",
        args.common.size_mib, args.runs
    );
    println!("| server | seconds | MiB/s | gateway ÷ this (throughput) |");
    println!("|---|---|---|---|");
    for (name, s) in [
        ("Commons gateway (RocksDB, verified while sent)", &commons),
        ("nginx (file on disk, sendfile)", &nginx),
    ] {
        println!(
            "| {name} | {:.2} | {:.0} | {:.2} |",
            s.elapsed.as_secs_f64(),
            rate(s),
            rate(&commons) / rate(s)
        );
    }
    let total = (args.clients as u64 * range) as f64 / (1 << 20) as f64;
    println!(
        "\n{} concurrent range clients × {} MiB: gateway {:.2} s ({:.0} MiB/s), nginx {:.2} s ({:.0} MiB/s)",
        args.clients,
        args.range_mib,
        took.as_secs_f64(),
        total / took.as_secs_f64(),
        nginx_took.as_secs_f64(),
        total / nginx_took.as_secs_f64(),
    );
    println!(
        "node RSS: idle {:.1} MiB, peak while serving them {:.1} MiB (target ≤ 200)",
        idle as f64 / (1 << 20) as f64,
        peak as f64 / (1 << 20) as f64
    );
    Ok(())
}
