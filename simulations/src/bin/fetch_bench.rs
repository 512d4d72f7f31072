//! Fetch benchmark: one seeding node, one fetcher, a 1 GiB file over loopback. Prints the
//! fetcher's throughput and peak RSS against, in the same run, `sendme` (iroh's
//! BLAKE3-over-QUIC tool) and nginx serving the file to curl.

use std::{
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{Context, Result};
use clap::Parser;
use commons_simulations::{
    loopback_seeder, run_measured, start_and_read, start_nginx, write_random_file, CommonArgs,
    RunStats,
};

/// Fetch benchmark for `commons get`.
#[derive(Debug, Parser)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Repetitions (the median is reported)
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Skip the sendme comparison
    #[arg(long)]
    no_sendme: bool,
    /// Skip the nginx comparison
    #[arg(long)]
    no_nginx: bool,
    /// Skip the run with the seeder's bulk endpoint off (libp2p streams only)
    #[arg(long)]
    no_libp2p_only: bool,
}

/// `commons get` from a seeder with (`bulk`) or without its bulk-data endpoint.
fn commons_fetch(args: &Args, scratch: &Path, file: &Path, bulk: bool) -> Result<RunStats> {
    let seed_dir = scratch.join("seed");
    if !seed_dir.exists() {
        let out = Command::new(&args.common.commons)
            .arg("--data-dir")
            .arg(&seed_dir)
            .arg("add")
            .arg(file.parent().context("parent")?)
            .output()?;
        anyhow::ensure!(out.status.success(), "add failed");
    }
    let cmd = loopback_seeder(&args.common.commons, &seed_dir, bulk);
    let (_seeder, ticket) = start_and_read(cmd, |line| {
        let start = line.find("\"ticket\":\"")? + 10;
        let end = line[start..].find('"')? + start;
        Some(line[start..end].to_string())
    })?;
    let mut runs = Vec::new();
    for i in 0..args.runs {
        let fetch_dir = scratch.join(format!("fetch-{i}"));
        run_measured(&mut Command::new("sync"))?;
        runs.push(run_measured(
            Command::new(&args.common.commons)
                .arg("--data-dir")
                .arg(&fetch_dir)
                .args(["get", &ticket])
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )?);
        std::fs::remove_dir_all(&fetch_dir)?;
    }
    Ok(RunStats::median(runs))
}

fn sendme_fetch(args: &Args, scratch: &Path, file: &Path) -> Result<RunStats> {
    let mut cmd = Command::new("sendme");
    cmd.current_dir(scratch)
        .args(["send", "--relay", "disabled", "--ticket-type", "addresses"])
        .arg(file);
    let (_sender, ticket) = start_and_read(cmd, |line| {
        line.split_whitespace()
            .find(|w| w.starts_with("blob"))
            .map(str::to_string)
    })?;
    let mut runs = Vec::new();
    for i in 0..args.runs {
        let dir = scratch.join(format!("sendme-{i}"));
        std::fs::create_dir_all(&dir)?;
        run_measured(&mut Command::new("sync"))?;
        runs.push(run_measured(
            Command::new("sendme")
                .current_dir(&dir)
                .args(["receive", "--relay", "disabled", &ticket])
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )?);
        std::fs::remove_dir_all(&dir)?;
    }
    Ok(RunStats::median(runs))
}

/// nginx serving the file to curl; with `durable`, the timed step ends with `sync`, so the
/// file is on disk as a `commons get`'s data is when it exits (its flushes are synced),
/// rather than in the page cache.
fn nginx_fetch(args: &Args, scratch: &Path, file: &Path, durable: bool) -> Result<RunStats> {
    let root = file.parent().context("parent")?;
    let _nginx = start_nginx(&[], scratch, root, "127.0.0.1:18431")?;
    let name = file
        .file_name()
        .context("name")?
        .to_string_lossy()
        .to_string();
    let mut runs = Vec::new();
    for _ in 0..args.runs {
        let out = scratch.join("curl.out");
        run_measured(&mut Command::new("sync"))?;
        let url = format!("http://127.0.0.1:18431/{name}");
        let mut fetch = if durable {
            let mut sh = Command::new("sh");
            sh.args(["-c", "curl -sf -o \"$0\" \"$1\" && sync"])
                .arg(&out)
                .arg(&url);
            sh
        } else {
            let mut curl = Command::new("curl");
            curl.args(["-sf", "-o"]).arg(&out).arg(&url);
            curl
        };
        runs.push(run_measured(&mut fetch)?);
        std::fs::remove_file(&out)?;
    }
    Ok(RunStats::median(runs))
}

fn main() -> Result<()> {
    let args = Args::parse();
    let scratch = tempfile::tempdir()?;
    let data = scratch.path().join("data");
    std::fs::create_dir_all(&data)?;
    let file = data.join("weights.bin");
    eprintln!("writing {} MiB of random data…", args.common.size_mib);
    write_random_file(&file, args.common.size_mib << 20, 3)?;

    let mut rows = vec![(
        "commons get (bulk endpoint; verified, stored in RocksDB)",
        commons_fetch(&args, scratch.path(), &file, true)?,
    )];
    if !args.no_libp2p_only {
        rows.push((
            "commons get, libp2p streams only (`node run --no-bulk`)",
            commons_fetch(&args, scratch.path(), &file, false)?,
        ));
    }
    if !args.no_sendme {
        rows.push((
            "sendme receive (iroh-blobs over QUIC)",
            sendme_fetch(&args, scratch.path(), &file)?,
        ));
    }
    if !args.no_nginx {
        rows.push((
            "nginx → curl (plain HTTP)",
            nginx_fetch(&args, scratch.path(), &file, false)?,
        ));
        rows.push((
            "nginx → curl, then sync (the file on disk, as `commons get` leaves its data)",
            nginx_fetch(&args, scratch.path(), &file, true)?,
        ));
    }
    let mib = args.common.size_mib as f64;
    let commons = rows[0].1;
    println!(
        "## fetch of a {} MiB file over loopback (median of {} runs)",
        args.common.size_mib, args.runs
    );
    println!("| fetcher | seconds | MiB/s | peak RSS MiB | commons throughput ÷ this |");
    println!("|---|---|---|---|---|");
    for (name, s) in &rows {
        println!(
            "| {name} | {:.2} | {:.0} | {:.1} | {:.2} |",
            s.elapsed.as_secs_f64(),
            mib / s.elapsed.as_secs_f64(),
            s.max_rss as f64 / (1 << 20) as f64,
            s.elapsed.as_secs_f64() / commons.elapsed.as_secs_f64(),
        );
    }
    Ok(())
}
