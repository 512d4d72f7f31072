//! Cost benchmark (issue 22): CPU seconds (user, system) per GiB moved, for each side of a
//! transfer over loopback, in the same run: a Commons seeder serving `commons get` (bulk
//! endpoint, then libp2p streams only), nginx over TLS and plain nginx (sendfile) serving
//! the same file to curl, the Commons HTTP gateway against plain nginx, and `commons add`
//! against `cp` + `sync` + `b3sum`. Servers are measured from `/proc/<pid>/stat` before and
//! after each transfer (with their child processes: nginx's worker), clients by `wait4`'s
//! rusage. With `--perf`, each side of the first size's transfers is then profiled once
//! more with `perf record` and the reports are saved beside the figures.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{ensure, Context, Result};
use clap::Parser;
use commons_simulations::{
    cpu_of, loopback_seeder, run_measured, start_and_read, start_nginx, start_nginx_server,
    write_random_file, Guard, RunStats,
};

/// CPU cost per GiB of serving, fetching and adding, against nginx, curl and cp + b3sum.
#[derive(Debug, Parser)]
struct Args {
    /// Path to the `commons` binary (release build)
    #[arg(long)]
    commons: PathBuf,
    /// File sizes to move, in MiB
    #[arg(long, value_delimiter = ',', default_value = "1024,10240")]
    sizes_mib: Vec<u64>,
    /// Save `perf` profiles of each side (first size only) in this directory
    #[arg(long)]
    perf: Option<PathBuf>,
    /// Scratch directory (the data, the stores; needs about 4× the largest size free)
    #[arg(long)]
    scratch: Option<PathBuf>,
    /// Runs of each transfer; each figure is the median of its runs
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// What to measure (to look at one change quickly; a comparison needs its baseline too,
    /// e.g. `get,nginx`)
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "add,get,get-no-offload,get-libp2p,nginx,gateway"
    )]
    parts: Vec<Part>,
}

/// One part of the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Part {
    /// `commons add` against cp + sync + b3sum
    Add,
    /// `commons get` over the bulk endpoint
    Get,
    /// `commons get` over the bulk endpoint with UDP GSO/GRO off on both sides
    GetNoOffload,
    /// `commons get --no-bulk` (libp2p streams)
    GetLibp2p,
    /// nginx over TLS and plain nginx to curl
    Nginx,
    /// the gateway against plain nginx
    Gateway,
}

/// One transfer's cost: wall time and each side's CPU.
#[derive(Debug, Clone, Copy)]
struct Cost {
    elapsed: Duration,
    server: (Duration, Duration),
    client: (Duration, Duration),
}

/// `pid` and its descendants (nginx's worker).
fn process_tree(pid: u32) -> Vec<u32> {
    let mut pids = vec![pid];
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    for child in children.split_whitespace().filter_map(|c| c.parse().ok()) {
        pids.extend(process_tree(child));
    }
    pids
}

/// CPU of `pid` and its descendants, user and system.
fn cpu_tree(pid: u32) -> (Duration, Duration) {
    process_tree(pid)
        .into_iter()
        .filter_map(cpu_of)
        .fold(Default::default(), |(u, s), (cu, cs)| (u + cu, s + cs))
}

/// Each figure's median over `runs` runs of `once` (`before` runs first each time, to
/// clear what the last run left).
fn median_cost(
    runs: usize,
    mut before: impl FnMut(),
    mut once: impl FnMut() -> Result<Cost>,
) -> Result<Cost> {
    let mut costs = Vec::new();
    for _ in 0..runs.max(1) {
        before();
        costs.push(once()?);
    }
    let median = |f: &dyn Fn(&Cost) -> Duration| {
        let mut v: Vec<Duration> = costs.iter().map(f).collect();
        v.sort();
        v[v.len() / 2]
    };
    Ok(Cost {
        elapsed: median(&|c| c.elapsed),
        server: (median(&|c| c.server.0), median(&|c| c.server.1)),
        client: (median(&|c| c.client.0), median(&|c| c.client.1)),
    })
}

/// Runs `client` to completion while `server` serves it; both sides' CPU.
fn measure(server: u32, client: &mut Command) -> Result<Cost> {
    run_measured(&mut Command::new("sync"))?;
    let before = cpu_tree(server);
    let run: RunStats = run_measured(client.stdout(Stdio::null()).stderr(Stdio::null()))?;
    let after = cpu_tree(server);
    Ok(Cost {
        elapsed: run.elapsed,
        server: (after.0 - before.0, after.1 - before.1),
        client: (run.user, run.system),
    })
}

/// `perf record` of process `pid` and its descendants until the returned guard is dropped
/// (SIGTERM: perf writes its file and stops).
fn perf_attach(pid: u32, out: &Path) -> Result<Guard> {
    let pids: Vec<String> = process_tree(pid).iter().map(u32::to_string).collect();
    let child = Command::new("perf")
        .args(["record", "-F", "499", "-g", "-o"])
        .arg(out)
        .args(["-p", &pids.join(",")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("perf (apt-get install linux-perf)")?;
    std::thread::sleep(Duration::from_millis(500));
    Ok(Guard(child))
}

/// Writes `perf report` of `data` as text beside it: the flat profile (`.txt`, symbols
/// over 0.5 % of the samples) and the call graphs (`.graph.txt`, over 1 %).
fn perf_report(data: &Path) -> Result<()> {
    let report = |extra: &[&str]| -> Result<Vec<u8>> {
        let out = Command::new("perf")
            .args(["report", "--stdio", "--no-children", "-i"])
            .arg(data)
            .args(extra)
            .output()?;
        Ok(out.stdout)
    };
    let flat = report(&[
        "-g",
        "none",
        "--percent-limit",
        "0.5",
        "--sort",
        "comm,dso,symbol",
    ])?;
    std::fs::write(data.with_extension("txt"), flat)?;
    let graph = report(&["--percent-limit", "1"])?;
    std::fs::write(data.with_extension("graph.txt"), graph)?;
    let _ = std::fs::remove_file(data);
    Ok(())
}

/// The client side of a transfer, profiled with `perf record` (a second run).
fn perf_client(client: &mut Command, out: &Path) -> Result<()> {
    let mut perf = Command::new("perf");
    perf.args(["record", "-F", "499", "-g", "-o"])
        .arg(out)
        .arg("--")
        .arg(client.get_program())
        .args(client.get_args());
    if let Some(dir) = client.get_current_dir() {
        perf.current_dir(dir);
    }
    run_measured(perf.stdout(Stdio::null()).stderr(Stdio::null()))?;
    perf_report(out)
}

/// Makes the store at `dir` hold `file` alone (its blob) and its directory (a dataset, for
/// a ticket), with the gateway on; returns the file's blob hash.
fn seed(args: &Args, dir: &Path, file: &Path) -> Result<String> {
    let add = |target: &Path| -> Result<serde_json::Value> {
        let out = Command::new(&args.commons)
            .arg("--data-dir")
            .arg(dir)
            .args(["--json", "add"])
            .arg(target)
            .output()?;
        ensure!(
            out.status.success(),
            "add failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(serde_json::from_slice(&out.stdout)?)
    };
    let blob = add(file)?["hash"]
        .as_str()
        .context("no hash in `add --json`")?
        .to_string();
    add(file.parent().context("parent")?)?;
    write_config(dir, true, true)?;
    Ok(blob)
}

/// A node's config file: the bulk endpoint's segmentation offload on or off, and a gateway
/// on a free loopback port if `gateway`.
fn write_config(dir: &Path, offload: bool, gateway: bool) -> Result<()> {
    let mut text = format!("bulk_offload = {offload}\n");
    if gateway {
        text.push_str("\n[gateway]\nlisten = \"127.0.0.1:0\"\n");
    }
    std::fs::create_dir_all(dir)?;
    Ok(std::fs::write(dir.join("config.toml"), text)?)
}

/// Starts a Commons seeder on the store at `dir` ([`seed`]); returns it with its ticket
/// and its HTTP gateway's address.
fn start_seeder(args: &Args, dir: &Path, bulk: bool) -> Result<(Guard, String, String)> {
    let cmd = loopback_seeder(&args.commons, dir, bulk);
    let (guard, line) = start_and_read(cmd, |line| {
        line.contains("\"ticket\"").then(|| line.to_string())
    })?;
    let v: serde_json::Value = serde_json::from_str(&line)?;
    let ticket = v["tickets"][0]["ticket"]
        .as_str()
        .context("no ticket in the seeder's start line")?
        .to_string();
    let gateway = v["gateway"].as_str().unwrap_or_default().to_string();
    Ok((guard, ticket, gateway))
}

/// One row of the table: a name and its cost.
struct Row {
    name: String,
    cost: Cost,
}

fn per_gib(d: Duration, bytes: u64) -> f64 {
    d.as_secs_f64() / (bytes as f64 / (1u64 << 30) as f64)
}

fn print_table(title: &str, bytes: u64, rows: &[Row], base: &str) {
    println!("\n### {title}");
    println!(
        "| transfer | seconds | MiB/s | server core-s/GiB (user + sys) | client core-s/GiB (user + sys) | throughput ÷ {base} |"
    );
    println!("|---|---|---|---|---|---|");
    // Without the baseline in this run (`--parts` left it out) there is no ratio to give.
    let base_secs = rows
        .iter()
        .find(|r| r.name.starts_with(base))
        .map(|r| r.cost.elapsed.as_secs_f64());
    for r in rows {
        let c = &r.cost;
        let both = |(u, s): (Duration, Duration)| {
            format!(
                "{:.2} ({:.2} + {:.2})",
                per_gib(u + s, bytes),
                per_gib(u, bytes),
                per_gib(s, bytes)
            )
        };
        let ratio = base_secs.map_or_else(
            || "–".to_string(),
            |b| format!("{:.2}", b / c.elapsed.as_secs_f64()),
        );
        println!(
            "| {} | {:.2} | {:.0} | {} | {} | {ratio} |",
            r.name,
            c.elapsed.as_secs_f64(),
            bytes as f64 / (1 << 20) as f64 / c.elapsed.as_secs_f64(),
            both(c.server),
            both(c.client),
        );
    }
}

/// A self-signed certificate and key for nginx's TLS (ECDSA P-256, as a current server).
fn make_cert(scratch: &Path) -> Result<(PathBuf, PathBuf)> {
    let (cert, key) = (scratch.join("cert.pem"), scratch.join("key.pem"));
    let ok = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    ensure!(ok.success(), "openssl could not make a certificate");
    Ok((cert, key))
}

fn curl(url: &str, out: &Path) -> Command {
    let mut c = Command::new("curl");
    c.args(["-sfk", "-o"]).arg(out).arg(url);
    c
}

/// Every transfer of one file size; returns the tables' rows.
fn run_size(args: &Args, scratch: &Path, size_mib: u64, perf: Option<&Path>) -> Result<()> {
    let bytes = size_mib << 20;
    let data = scratch.join("data");
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data)?;
    let file = data.join("weights.bin");
    eprintln!("writing {size_mib} MiB of random data…");
    write_random_file(&file, bytes, 22)?;
    let seed_dir = scratch.join(format!("seed-{size_mib}"));
    let fetch_dir = scratch.join("fetch");
    let _ = std::fs::remove_dir_all(&seed_dir);
    let hash = seed(args, &seed_dir, &file)?;
    let mut transfers = Vec::new();
    let mut add_rows = Vec::new();
    let mut gateway_rows = Vec::new();
    let wants = |part| args.parts.contains(&part);

    // `add` against cp + sync + b3sum (the bound: a durable copy and a hash).
    if wants(Part::Add) {
        let add_dir = scratch.join("add");
        let copy = scratch.join("copy.bin");
        let alone = |cmd: &mut Command| -> Result<Cost> {
            run_measured(&mut Command::new("sync"))?;
            let run = run_measured(cmd.stdout(Stdio::null()).stderr(Stdio::null()))?;
            Ok(Cost {
                elapsed: run.elapsed,
                server: (Duration::ZERO, Duration::ZERO),
                client: (run.user, run.system),
            })
        };
        let add = median_cost(
            args.runs,
            || {
                let _ = std::fs::remove_dir_all(&add_dir);
            },
            || {
                alone(
                    Command::new(&args.commons)
                        .arg("--data-dir")
                        .arg(&add_dir)
                        .arg("add")
                        .arg(&data),
                )
            },
        )?;
        let _ = std::fs::remove_dir_all(&add_dir);
        let cp = median_cost(
            args.runs,
            || {
                let _ = std::fs::remove_file(&copy);
            },
            || {
                alone(
                    Command::new("sh")
                        .args(["-c", "cp \"$0\" \"$1\" && sync && b3sum \"$1\" >/dev/null"])
                        .arg(&file)
                        .arg(&copy),
                )
            },
        )?;
        let _ = std::fs::remove_file(&copy);
        add_rows.extend([
            Row {
                name: "commons add".into(),
                cost: add,
            },
            Row {
                name: "cp + sync + b3sum".into(),
                cost: cp,
            },
        ]);
    }

    for (part, name) in [
        (Part::Get, "commons get (bulk endpoint)"),
        (
            Part::GetNoOffload,
            "commons get (bulk endpoint, no GSO/GRO)",
        ),
        (Part::GetLibp2p, "commons get (libp2p streams, `--no-bulk`)"),
    ] {
        if !wants(part) {
            continue;
        }
        let (bulk, offload) = (part != Part::GetLibp2p, part != Part::GetNoOffload);
        write_config(&seed_dir, offload, true)?;
        let fetch_config = scratch.join("fetch-config");
        write_config(&fetch_config, offload, false)?;
        let (seeder, ticket, _) = start_seeder(args, &seed_dir, bulk)?;
        let get = || {
            let mut c = Command::new(&args.commons);
            c.arg("--data-dir").arg(&fetch_dir);
            c.arg("--config").arg(fetch_config.join("config.toml"));
            c.args(["get", &ticket]);
            c
        };
        let cost = median_cost(
            args.runs,
            || {
                let _ = std::fs::remove_dir_all(&fetch_dir);
            },
            || measure(seeder.0.id(), &mut get()),
        )?;
        write_config(&seed_dir, true, true)?;
        transfers.push(Row {
            name: name.into(),
            cost,
        });
        if let (Some(perf), Part::Get) = (perf, part) {
            let _ = std::fs::remove_dir_all(&fetch_dir);
            let recording = perf_attach(seeder.0.id(), &perf.join("seeder.data"))?;
            perf_client(&mut get(), &perf.join("fetcher.data"))?;
            drop(recording);
            perf_report(&perf.join("seeder.data"))?;
        }
        let _ = std::fs::remove_dir_all(&fetch_dir);
    }

    let out = scratch.join("curl.out");
    let (cert, key) = make_cert(scratch)?;
    for (tls, name) in [
        (true, "nginx TLS → curl"),
        (false, "nginx (sendfile) → curl"),
    ] {
        if !wants(Part::Nginx) {
            continue;
        }
        let server = if tls {
            format!(
                "listen 127.0.0.1:18443 ssl; root {}; ssl_certificate {}; ssl_certificate_key {};",
                data.display(),
                cert.display(),
                key.display()
            )
        } else {
            format!("listen 127.0.0.1:18443; root {};", data.display())
        };
        let nginx = start_nginx_server(&[], scratch, &server)?;
        let url = format!(
            "{}://127.0.0.1:18443/weights.bin",
            if tls { "https" } else { "http" }
        );
        let cost = median_cost(
            args.runs,
            || {},
            || measure(nginx.0.id(), &mut curl(&url, &out)),
        )?;
        ensure!(
            std::fs::metadata(&out)?.len() == bytes,
            "{name}: curl got a short file"
        );
        transfers.push(Row {
            name: name.into(),
            cost,
        });
        if let (Some(perf), true) = (perf, tls) {
            let recording = perf_attach(nginx.0.id(), &perf.join("nginx-tls.data"))?;
            perf_client(&mut curl(&url, &out), &perf.join("curl-tls.data"))?;
            drop(recording);
            perf_report(&perf.join("nginx-tls.data"))?;
        }
        std::fs::remove_file(&out)?;
    }

    // The gateway against plain nginx, both to curl.
    if wants(Part::Gateway) {
        let (seeder, _, gateway) = start_seeder(args, &seed_dir, true)?;
        let url = format!("{gateway}/blob/{hash}");
        let cost = median_cost(
            args.runs,
            || {},
            || measure(seeder.0.id(), &mut curl(&url, &out)),
        )?;
        ensure!(
            std::fs::metadata(&out)?.len() == bytes,
            "the gateway sent a short file"
        );
        gateway_rows.push(Row {
            name: "Commons gateway → curl".into(),
            cost,
        });
        if let Some(perf) = perf {
            let recording = perf_attach(seeder.0.id(), &perf.join("gateway.data"))?;
            run_measured(curl(&url, &out).stdout(Stdio::null()))?;
            drop(recording);
            perf_report(&perf.join("gateway.data"))?;
        }
        std::fs::remove_file(&out)?;
        drop(seeder);
        let nginx = start_nginx(&[], scratch, &data, "127.0.0.1:18443")?;
        let cost = median_cost(
            args.runs,
            || {},
            || {
                measure(
                    nginx.0.id(),
                    &mut curl("http://127.0.0.1:18443/weights.bin", &out),
                )
            },
        )?;
        gateway_rows.push(Row {
            name: "nginx (sendfile) → curl".into(),
            cost,
        });
        std::fs::remove_file(&out)?;
    }
    let _ = std::fs::remove_dir_all(&seed_dir);

    println!(
        "\n## {size_mib} MiB over loopback (median of {} runs each, same machine, same run)",
        args.runs
    );
    for (title, rows, base) in [
        (
            "Serving and fetching (server: seeder or nginx; client: commons get or curl)",
            &transfers,
            "nginx TLS",
        ),
        (
            "HTTP gateway (server: the node)",
            &gateway_rows,
            "nginx (sendfile)",
        ),
        (
            "Adding (client: the command)",
            &add_rows,
            "cp + sync + b3sum",
        ),
    ] {
        if !rows.is_empty() {
            print_table(title, bytes, rows, base);
        }
    }
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    let scratch = match &args.scratch {
        Some(dir) => tempfile::tempdir_in(dir)?,
        None => tempfile::tempdir()?,
    };
    if let Some(perf) = &args.perf {
        std::fs::create_dir_all(perf)?;
    }
    for (i, size) in args.sizes_mib.iter().enumerate() {
        let perf = args.perf.as_deref().filter(|_| i == 0);
        run_size(&args, scratch.path(), *size, perf)?;
    }
    if let Some(perf) = &args.perf {
        println!("\nprofiles (perf report, first size): {}", perf.display());
    }
    Ok(())
}
