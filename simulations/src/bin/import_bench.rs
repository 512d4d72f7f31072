//! Import benchmark: `commons add` of a large file against `cp` + `b3sum` of the same file,
//! measured in the same run, plus peak RSS of `add` on a larger file and a sweep of data
//! row (span) sizes through the library. Prints ratios; absolute times are machine noise.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context, Result};
use clap::Parser;
use commons_node::{store::NoProgress, Store, StoreOptions};
use commons_simulations::{run_measured, time, write_random_file, CommonArgs};

/// Import benchmark for `commons add`.
#[derive(Debug, Parser)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Size of the file whose peak RSS is measured, in MiB
    #[arg(long, default_value_t = 4096)]
    rss_size_mib: u64,
    /// Span sizes (KiB) to compare through the library
    #[arg(long, value_delimiter = ',', default_value = "16,64,256,1024")]
    spans_kib: Vec<u64>,
    /// Repetitions of each timed step (the median is reported)
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Folder for the scratch files (default: a temp dir on the same disk as the target)
    #[arg(long)]
    dir: Option<PathBuf>,
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn quiet(cmd: &mut Command) -> &mut Command {
    cmd.stdout(Stdio::null()).stderr(Stdio::null())
}

fn commons_add(
    commons: &Path,
    data_dir: &Path,
    file: &Path,
) -> Result<commons_simulations::RunStats> {
    let _ = std::fs::remove_dir_all(data_dir);
    run_measured(quiet(
        Command::new(commons)
            .arg("--data-dir")
            .arg(data_dir)
            .arg("add")
            .arg(file),
    ))
}

/// Writes back all dirty pages, so one step's writes are not charged to the next.
fn sync() -> Result<()> {
    run_measured(&mut Command::new("sync"))?;
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    let scratch = match &args.dir {
        Some(d) => tempfile::tempdir_in(d)?,
        None => tempfile::tempdir()?,
    };
    let file = scratch.path().join("input.bin");
    eprintln!("writing {} MiB of random data…", args.common.size_mib);
    write_random_file(&file, args.common.size_mib << 20, 1)?;
    let copy = scratch.path().join("copy.bin");
    let data_dir = scratch.path().join("data");

    // Warm the page cache equally for everyone.
    run_measured(quiet(Command::new("b3sum").arg(&file))).context("b3sum (cargo install b3sum)")?;

    let mut baseline = Vec::new();
    let mut durable = Vec::new();
    let mut add = Vec::new();
    for _ in 0..args.runs {
        let _ = std::fs::remove_file(&copy);
        // Each timed step starts with no dirty pages left by the previous one.
        sync()?;
        let cp = run_measured(quiet(Command::new("cp").arg(&file).arg(&copy)))?.elapsed;
        let b3 = run_measured(quiet(Command::new("b3sum").arg(&file)))?.elapsed;
        baseline.push(cp + b3);
        let (synced, sync_time) = time(sync);
        synced?;
        durable.push(cp + sync_time + b3);
        let _ = std::fs::remove_file(&copy);
        sync()?;
        add.push(commons_add(&args.common.commons, &data_dir, &file)?.elapsed);
    }
    let (base, durable, add) = (median(baseline), median(durable), median(add));
    println!(
        "## import of a {} MiB file (median of {} runs)",
        args.common.size_mib, args.runs
    );
    println!("| step | seconds | GiB/s | ratio to cp + b3sum |");
    println!("|---|---|---|---|");
    let gib = args.common.size_mib as f64 / 1024.0;
    for (name, d) in [
        ("cp + b3sum (baseline)", base),
        ("cp + sync + b3sum (durable copy)", durable),
        ("commons add (RocksDB flushes and syncs)", add),
    ] {
        println!(
            "| {name} | {:.2} | {:.2} | {:.2} |",
            secs(d),
            gib / secs(d),
            secs(d) / secs(base)
        );
    }

    println!(
        "\n## span size sweep (library import, {} MiB, median of {} runs)",
        args.common.size_mib, args.runs
    );
    println!("| span | rows per GiB | seconds | ratio to cp + b3sum |");
    println!("|---|---|---|---|");
    for kib in &args.spans_kib {
        let mut runs = Vec::new();
        for _ in 0..args.runs {
            let _ = std::fs::remove_dir_all(&data_dir);
            sync()?;
            let store = Store::open(
                &data_dir,
                StoreOptions {
                    span_bytes: kib * 1024,
                },
            )?;
            let (res, d) = time(|| store.add_file(&file, &NoProgress));
            res?;
            runs.push(d);
        }
        let d = median(runs);
        println!(
            "| {kib} KiB | {} | {:.2} | {:.2} |",
            1024 * 1024 / kib,
            secs(d),
            secs(d) / secs(base)
        );
    }

    std::fs::remove_file(&copy).ok();
    std::fs::remove_file(&file)?;
    let _ = std::fs::remove_dir_all(&data_dir);
    if args.rss_size_mib > 0 {
        eprintln!("writing {} MiB of random data…", args.rss_size_mib);
        let big = scratch.path().join("big.bin");
        write_random_file(&big, args.rss_size_mib << 20, 2)?;
        let stats = commons_add(&args.common.commons, &data_dir, &big)?;
        println!(
            "\n## peak RSS of `commons add` on a {} MiB file: {:.1} MiB ({:.2} s)",
            args.rss_size_mib,
            stats.max_rss as f64 / (1 << 20) as f64,
            secs(stats.elapsed)
        );
    }
    Ok(())
}
