//! Bundle benchmark: `commons pack` and `commons unpack` of a dataset (four shards and a
//! few small files, 1 GiB by default) against `tar cf` / `tar xf` + `b3sum -c` of the same
//! files, measured in the same run (medians of `--runs`); peak RSS of each; and what
//! resuming costs after the bundle was cut at 50 %. Every step ends with `sync`, inside
//! its timing, so each pays for its own writes. Prints a Markdown table of ratios.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context, Result};
use clap::Parser;
use commons_simulations::{run_measured, write_random_file, CommonArgs, RunStats};

/// Bundle benchmark for `commons pack` / `unpack`.
#[derive(Debug, Parser)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Repetitions of each timed step (the median is reported)
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Folder for the scratch files (default: a temp dir)
    #[arg(long)]
    dir: Option<PathBuf>,
}

fn quiet(cmd: &mut Command) -> &mut Command {
    cmd.stdout(Stdio::null()).stderr(Stdio::null())
}

/// `script` run by `sh -c` with `sync` after it, measured.
fn shell(script: &str) -> Result<RunStats> {
    run_measured(quiet(
        Command::new("sh")
            .arg("-c")
            .arg(format!("{script} && sync")),
    ))
}

fn commons(args: &Args, data_dir: &Path, rest: &[&str]) -> Command {
    let mut cmd = Command::new(&args.common.commons);
    cmd.arg("--data-dir").arg(data_dir).args(rest);
    cmd
}

/// Runs `commons … && sync`, measured.
fn commons_measured(args: &Args, data_dir: &Path, rest: &[&str]) -> Result<RunStats> {
    let cmd = commons(args, data_dir, rest);
    let line = format!(
        "{} && sync",
        std::iter::once(cmd.get_program())
            .chain(cmd.get_args())
            .map(|a| shell_quote(&a.to_string_lossy()))
            .collect::<Vec<_>>()
            .join(" ")
    );
    run_measured(quiet(Command::new("sh").arg("-c").arg(line)))
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap_or_default()
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// Runs `step` `runs` times after `prepare` each time; the median.
fn median_of(
    runs: usize,
    mut prepare: impl FnMut() -> Result<()>,
    mut step: impl FnMut() -> Result<RunStats>,
) -> Result<RunStats> {
    let mut all = Vec::new();
    for _ in 0..runs {
        prepare()?;
        all.push(step()?);
    }
    Ok(RunStats::median(all))
}

fn main() -> Result<()> {
    let args = Args::parse();
    let scratch = match &args.dir {
        Some(d) => tempfile::tempdir_in(d)?,
        None => tempfile::tempdir()?,
    };
    let s = scratch.path();
    let dataset = s.join("dataset");
    std::fs::create_dir_all(dataset.join("shards"))?;
    let shard = (args.common.size_mib << 20) / 4;
    eprintln!("writing a {} MiB dataset…", args.common.size_mib);
    for i in 0..4u64 {
        write_random_file(
            &dataset.join(format!("shards/model-{i:05}.safetensors")),
            shard,
            i + 1,
        )?;
    }
    std::fs::write(dataset.join("config.json"), b"{\"hidden_size\": 4096}\n")?;
    std::fs::write(dataset.join("README.md"), b"# a dataset\n")?;
    let seeder = s.join("seeder");
    let added = commons(&args, &seeder, &["--json", "add", p(&dataset)])
        .output()
        .context("commons add")?;
    anyhow::ensure!(added.status.success(), "commons add failed");
    let root = serde_json::from_slice::<serde_json::Value>(&added.stdout)?["hash"]
        .as_str()
        .context("no hash")?
        .to_string();
    // The sums b3sum -c checks, made once (the baseline's equivalent of B3SUMS).
    let sums = s.join("SUMS");
    shell(&format!(
        "cd {} && find . -type f | sort | xargs b3sum > {}",
        shell_quote(p(&dataset)),
        shell_quote(p(&sums))
    ))
    .context("b3sum (install it: cargo install b3sum)")?;

    let bundle = s.join("set.tar");
    let base_tar = s.join("base.tar");
    let out = s.join("out");
    let site = s.join("site");
    let rm = |path: &Path| {
        let _ = std::fs::remove_dir_all(path);
        let _ = std::fs::remove_file(path);
        Ok(())
    };

    eprintln!("pack ×{}…", args.runs);
    let pack = median_of(
        args.runs,
        || rm(&bundle),
        || commons_measured(&args, &seeder, &["pack", &root, "-o", p(&bundle)]),
    )?;
    let tar_c = median_of(
        args.runs,
        || rm(&base_tar),
        || {
            shell(&format!(
                "tar cf {} -C {} .",
                shell_quote(p(&base_tar)),
                shell_quote(p(&dataset))
            ))
        },
    )?;
    eprintln!("unpack ×{}…", args.runs);
    let unpack = median_of(
        args.runs,
        || rm(&site),
        || commons_measured(&args, &site, &["unpack", p(&bundle)]),
    )?;
    let tar_x = median_of(
        args.runs,
        || {
            rm(&out)?;
            std::fs::create_dir_all(&out)?;
            Ok(())
        },
        || {
            shell(&format!(
                "tar xf {} -C {o} && sync && cd {o} && b3sum -c --quiet {}",
                shell_quote(p(&base_tar)),
                shell_quote(p(&sums)),
                o = shell_quote(p(&out)),
            ))
        },
    )?;
    let verify = median_of(
        args.runs,
        || Ok(()),
        || {
            run_measured(quiet(
                Command::new(&args.common.commons)
                    .args(["bundle", "verify"])
                    .arg(&bundle),
            ))
        },
    )?;

    // Resume: the first half of the bundle, then the whole.
    eprintln!("resume after a cut at 50 %…");
    // Copied, not read into memory: a large parent would show in its children's RSS.
    let cut = s.join("cut.tar");
    let half = std::fs::metadata(&bundle)?.len() / 2;
    std::io::copy(
        &mut std::io::Read::take(std::fs::File::open(&bundle)?, half),
        &mut std::fs::File::create(&cut)?,
    )?;
    // Once with --json for the bytes each run imported, once timed.
    rm(&site)?;
    let unpack_json = |bundle: &Path, resume: bool| -> Result<serde_json::Value> {
        let mut rest = vec!["--json", "unpack"];
        if resume {
            rest.push("--resume");
        }
        rest.push(p(bundle));
        let out = commons(&args, &site, &rest).output()?;
        anyhow::ensure!(
            out.status.code() == Some(if resume { 3 } else { 0 }),
            "unpack {}: {}",
            bundle.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(serde_json::from_slice(&out.stdout)?)
    };
    let first = unpack_json(&cut, true)?;
    let rest = unpack_json(&bundle, false)?;
    let field = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap_or(0);
    let first_bytes = field(&first, "bytes_imported");
    let rest_bytes = field(&rest, "bytes_imported");
    let data_total = rest_bytes + field(&rest, "bytes_held");
    let reread = (first_bytes + rest_bytes).saturating_sub(data_total);
    rm(&site)?;
    unpack_json(&cut, true)?;
    let resumed = commons_measured(&args, &site, &["unpack", p(&bundle)])?;

    let size = args.common.size_mib;
    println!(
        "## Bundles: {size} MiB dataset (4 shards), medians of {} runs\n",
        args.runs
    );
    println!("| step | time (s) | peak RSS (MiB) | baseline | baseline time (s) | ratio |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| `commons pack` | {:.2} | {:.0} | `tar cf` | {:.2} | {:.2}× |",
        secs(pack.elapsed),
        mib(pack.max_rss),
        secs(tar_c.elapsed),
        secs(pack.elapsed) / secs(tar_c.elapsed)
    );
    println!(
        "| `commons unpack` (verified, into the store) | {:.2} | {:.0} | `tar xf` + `b3sum -c` | {:.2} | {:.2}× |",
        secs(unpack.elapsed),
        mib(unpack.max_rss),
        secs(tar_x.elapsed),
        secs(unpack.elapsed) / secs(tar_x.elapsed)
    );
    println!(
        "| `commons bundle verify` | {:.2} | {:.0} | `tar xf` + `b3sum -c` | {:.2} | {:.2}× |",
        secs(verify.elapsed),
        mib(verify.max_rss),
        secs(tar_x.elapsed),
        secs(verify.elapsed) / secs(tar_x.elapsed)
    );
    println!(
        "| `unpack` of the whole after `--resume` of the first half | {:.2} | {:.0} | a full `unpack` | {:.2} | {:.2}× |",
        secs(resumed.elapsed),
        mib(resumed.max_rss),
        secs(unpack.elapsed),
        secs(resumed.elapsed) / secs(unpack.elapsed)
    );
    println!(
        "\nResume after a cut at 50 %: {:.1} MiB imported from the cut bundle, {:.1} MiB from the \
         whole one, of {:.1} MiB: {} bytes read twice (at most one 256 KiB span expected).",
        mib(first_bytes),
        mib(rest_bytes),
        mib(data_total),
        reread
    );
    Ok(())
}
