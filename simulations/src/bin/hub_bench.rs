//! `hub-bench`: Commons as a mirror of a Hugging Face Hub repository (issue 16). Not a
//! timed test: every figure it prints comes from the same run, against a baseline measured
//! in that run.
//!
//! Loopback (always): a repository of `--size-mib` (4 `.safetensors` shards and a
//! `config.json`) on the test Hub origin (`commons_simulations::hub_origin`, in this
//! process, so the bytes it serves are counted):
//! - a plain `curl` of every file from the origin (sequential, following the LFS `302`)
//!   against `commons add hf://acme/model --origin URL` on a fresh data dir (medians of
//!   `--runs`): import ÷ curl;
//! - mirror A (a `commons node run` with the repository as a `[mirror]` entry) from start
//!   to complete; then mirror B, same entry, bootstrapped to A: its time, and the bytes it
//!   took from the origin ÷ the repository's size.
//!
//! Lab (`--lab`, needs root): network namespaces on one bridge (`commons_simulations::netns`):
//! the origin (the `hub-origin` binary) behind an uplink capped at `--rate-mbit` with `tbf`,
//! two mirror namespaces and `--clients` client namespaces, every other link unshaped. Each
//! client polls its mirror's gateway (`/api/models/acme/model`) until it answers 200, then
//! downloads every file with `curl`. Time from starting the mirrors until the last client is
//! done, for:
//! - 2 mirrors (B bootstrapped to A, both DHT servers, started together), half the clients
//!   on each;
//! - one pull-through cache: one mirror node with peers disabled (no bootstrap, DHT
//!   client), every client on it.

use std::{
    collections::BTreeSet,
    fs::File,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use clap::Parser;
use commons_simulations::{
    hub_origin::HubOrigin,
    netns::{self, Lab},
    run_measured, start_and_read, write_random_file, CommonArgs, Guard, RunStats,
};
use serde_json::{json, Value};

/// Commons as a Hub mirror: import vs curl, a second mirror's origin bytes, and 10 clients
/// through 2 mirrors vs one pull-through cache behind a capped origin (`--lab`, root).
#[derive(Debug, Parser)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Timed runs of the plain curl and of `commons add` on loopback (medians reported)
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Also run the network-namespace part (needs root)
    #[arg(long)]
    lab: bool,
    /// Run only the network-namespace part (implies --lab)
    #[arg(long)]
    lab_only: bool,
    /// Size of the repository in the namespace part, in MiB
    #[arg(long, default_value_t = 1024)]
    lab_size_mib: u64,
    /// The origin's uplink in the namespace part, in Mbit/s
    #[arg(long, default_value_t = 100)]
    rate_mbit: u64,
    /// Clients in the namespace part
    #[arg(long, default_value_t = 10)]
    clients: usize,
    /// The test Hub origin binary [default: `hub-origin` beside the `commons` binary]
    #[arg(long)]
    hub_origin: Option<PathBuf>,
    /// Clients write what they download and compare it with the repository's files
    /// (otherwise only sizes are checked; the gateway verifies what it serves)
    #[arg(long)]
    verify: bool,
    /// Folder for the repository, the data dirs and downloads [default: the system's
    /// temporary folder]
    #[arg(long)]
    scratch: Option<PathBuf>,
    /// Also write the figures to this file, as JSON
    #[arg(long)]
    json_out: Option<PathBuf>,
}

/// The repository every step uses.
const REPO: &str = "acme/model";
/// Weight shards in the repository.
const SHARDS: u64 = 4;
/// Prefix of the lab's namespaces and interfaces (not swarm-lab's, so both can coexist).
const LAB_PREFIX: &str = "cmhub";
/// The lab's addresses: the origin is `.1`, the mirrors `.2` and `.3`, clients from `.20`.
const LAB_SUBNET: &str = "10.78.0";
const ORIGIN_NODE: usize = 1;
const MIRROR_NODES: [usize; 2] = [2, 3];
const FIRST_CLIENT_NODE: usize = 20;
/// How often a client asks whether its mirror has the repository.
const POLL: Duration = Duration::from_millis(250);

/// One file of the test repository.
#[derive(Debug, Clone)]
struct RepoFile {
    /// Path in the repository.
    path: String,
    /// Where it is on disk.
    disk: PathBuf,
    size: u64,
}

/// Writes the repository into `dir`: a `config.json` and 4 shards of random data of
/// `size_mib` MiB in all.
fn make_repo(dir: &Path, size_mib: u64, seed: u64) -> Result<Vec<RepoFile>> {
    std::fs::create_dir_all(dir)?;
    let mut files = Vec::new();
    let config = dir.join("config.json");
    std::fs::write(
        &config,
        b"{\"architectures\": [\"BenchModel\"], \"hidden_size\": 4096}\n",
    )?;
    files.push(RepoFile {
        path: "config.json".into(),
        size: std::fs::metadata(&config)?.len(),
        disk: config,
    });
    let total = size_mib << 20;
    for n in 1..=SHARDS {
        let size = if n == SHARDS {
            total - (SHARDS - 1) * (total / SHARDS)
        } else {
            total / SHARDS
        };
        let path = format!("model-{n:05}-of-{SHARDS:05}.safetensors");
        let disk = dir.join(&path);
        write_random_file(&disk, size, seed * 100 + n)?;
        files.push(RepoFile { path, disk, size });
    }
    Ok(files)
}

fn total_size(files: &[RepoFile]) -> u64 {
    files.iter().map(|f| f.size).sum()
}

fn sync() {
    let _ = Command::new("sync").status();
}

/// A command run inside namespace `ns`, or here when `ns` is `None`.
fn command_in(ns: Option<&str>, program: &Path) -> Command {
    match ns {
        Some(ns) => {
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", ns]).arg(program);
            cmd
        }
        None => Command::new(program),
    }
}

/// `curl` GETs `url` (following redirects) into `out` (`/dev/null` when `None`); returns
/// the body's size. Fails on an HTTP error.
fn curl_get(ns: Option<&str>, url: &str, out: Option<&Path>) -> Result<u64> {
    let reply = command_in(ns, Path::new("curl"))
        .args(["-sfL", "-w", "%{size_download}", "-o"])
        .arg(out.unwrap_or(Path::new("/dev/null")))
        .arg(url)
        .stderr(Stdio::null())
        .output()
        .context("curl (apt-get install curl)")?;
    ensure!(reply.status.success(), "curl {url}: {}", reply.status);
    String::from_utf8_lossy(&reply.stdout)
        .trim()
        .parse()
        .with_context(|| format!("curl {url}: size"))
}

/// The URL of `file` under a Hub-compatible `base` (the origin, or a gateway).
fn resolve_url(base: &str, file: &str) -> String {
    format!("{base}/{REPO}/resolve/main/{file}")
}

/// Runs `commons` commands (in a namespace, or here).
struct Commons<'a> {
    bin: &'a Path,
    ns: Option<&'a str>,
}

impl Commons<'_> {
    fn cmd(&self, dir: &Path) -> Command {
        let mut cmd = command_in(self.ns, self.bin);
        cmd.arg("--data-dir").arg(dir);
        cmd
    }

    /// Starts a node on `dir` with `config`, listening on `ip`; returns it and its address.
    fn start_node(
        &self,
        dir: &Path,
        config: &Path,
        ip: &str,
        dht_mode: &str,
        bootstrap: Option<&str>,
    ) -> Result<(Guard, String)> {
        let mut cmd = self.cmd(dir);
        cmd.arg("--json")
            .arg("--config")
            .arg(config)
            .args(["node", "run", "--dht-mode", dht_mode, "--listen"])
            .arg(format!("/ip4/{ip}/udp/0/quic-v1"));
        if let Some(b) = bootstrap {
            cmd.args(["--bootstrap", b]);
        }
        start_and_read(cmd, |line| {
            let v: Value = serde_json::from_str(line).ok()?;
            v["addrs"][0].as_str().map(str::to_string)
        })
    }

    /// Polls the node on `dir` until its first mirror entry is complete; returns its status.
    fn wait_complete(&self, dir: &Path, timeout: Duration) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        let mut last = Value::Null;
        while Instant::now() < deadline {
            let out = self.cmd(dir).args(["--json", "node", "status"]).output()?;
            if out.status.success() {
                last = serde_json::from_slice(&out.stdout)?;
                if last["mirror"][0]["state"] == "complete" {
                    return Ok(last);
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "the mirror on {} was not complete after {timeout:?}: {last}",
            dir.display()
        )
    }
}

/// A node config mirroring the repository from `origin`, with a gateway on `gateway`.
fn write_mirror_config(path: &Path, origin: &str, gateway: Option<&str>) -> Result<()> {
    let gateway = gateway
        .map(|addr| format!("[gateway]\nlisten = \"{addr}\"\n\n"))
        .unwrap_or_default();
    std::fs::write(
        path,
        format!(
            "{gateway}[mirror]\ndatasets = [{{ hf = \"{REPO}\", origin = \"{origin}\", interval = 3600 }}]\n"
        ),
    )?;
    Ok(())
}

fn median(mut d: Vec<Duration>) -> Duration {
    d.sort();
    d[d.len() / 2]
}

fn mib_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / d.as_secs_f64()
}

/// What the loopback part measured.
struct Loopback {
    total: u64,
    curl: Duration,
    import: Duration,
    import_rss: u64,
    mirror_a: Duration,
    a_from_origin: u64,
    mirror_b: Duration,
    b_from_origin: u64,
    b_from_peers: u64,
}

fn loopback(args: &Args, scratch: &Path) -> Result<Loopback> {
    let runs = args.runs.max(1);
    println!(
        "== loopback: {} MiB repository ({SHARDS} shards + config.json) on the test Hub origin",
        args.common.size_mib
    );
    let files = make_repo(&scratch.join("repo"), args.common.size_mib, 1)?;
    let total = total_size(&files);
    let rt = tokio::runtime::Runtime::new()?;
    let origin = rt.block_on(HubOrigin::start())?;
    let commit = rt.block_on(origin.publish("model", REPO, &scratch.join("repo"), "main"))?;
    let url = origin.url();
    println!("origin {url}, {REPO} at {commit}");

    // Baseline: every file with curl, one after the other.
    let mut curls = Vec::new();
    for _ in 0..runs {
        origin.reset_counters();
        sync();
        let start = Instant::now();
        for f in &files {
            let got = curl_get(None, &resolve_url(&url, &f.path), None)?;
            ensure!(
                got == f.size,
                "curl got {got} bytes of {} ({})",
                f.size,
                f.path
            );
        }
        curls.push(start.elapsed());
        ensure!(
            origin.bytes_served() == total,
            "the origin served a wrong amount"
        );
    }
    let curl = median(curls.clone());
    println!(
        "curl of every file: {} → median {:.2} s ({:.0} MiB/s)",
        secs_list(&curls),
        curl.as_secs_f64(),
        mib_s(total, curl)
    );

    // `commons add hf://…` on a fresh data dir, no daemon: everything from the origin.
    let commons = Commons {
        bin: &args.common.commons,
        ns: None,
    };
    let mut imports = Vec::new();
    for run in 0..runs {
        origin.reset_counters();
        let dir = scratch.join(format!("add{run}"));
        let (out, err) = (scratch.join("add.json"), scratch.join("add.err"));
        sync();
        let stats = run_measured(
            commons
                .cmd(&dir)
                .args(["--json", "add", &format!("hf://{REPO}"), "--origin", &url])
                .stdout(File::create(&out)?)
                .stderr(File::create(&err)?),
        )
        .with_context(|| std::fs::read_to_string(&err).unwrap_or_default())?;
        let reply: Value = serde_json::from_slice(&std::fs::read(&out)?)?;
        ensure!(
            reply["size"] == total
                && reply["origin_bytes"] == total
                && reply["files"] == files.len()
                && reply["commit"] == commit.as_str(),
            "unexpected import: {reply}"
        );
        ensure!(
            origin.bytes_served() == total,
            "the origin served a wrong amount"
        );
        imports.push(stats);
        std::fs::remove_dir_all(&dir)?;
    }
    let times: Vec<Duration> = imports.iter().map(|s| s.elapsed).collect();
    let import = RunStats::median(imports);
    println!(
        "commons add hf://{REPO}: {} → median {:.2} s ({:.0} MiB/s, peak RSS {:.0} MiB)",
        secs_list(&times),
        import.elapsed.as_secs_f64(),
        mib_s(total, import.elapsed),
        import.max_rss as f64 / (1 << 20) as f64
    );
    println!(
        "import ÷ curl: {:.2}",
        import.elapsed.as_secs_f64() / curl.as_secs_f64()
    );

    // Mirror A, then mirror B bootstrapped to A.
    let timeout = Duration::from_secs(300 + args.common.size_mib);
    let config = scratch.join("mirror.toml");
    write_mirror_config(&config, &url, None)?;
    origin.reset_counters();
    let (a_dir, b_dir) = (scratch.join("mirror-a"), scratch.join("mirror-b"));
    sync();
    let start = Instant::now();
    let (a, a_addr) = commons.start_node(&a_dir, &config, "127.0.0.1", "server", None)?;
    let a_status = commons.wait_complete(&a_dir, timeout)?;
    let mirror_a = start.elapsed();
    let a_from_origin = origin.bytes_served();
    ensure!(a_status["mirror"][0]["held"] == total, "A: {a_status}");
    println!(
        "mirror A (daemon, start → complete): {:.2} s; from the origin {a_from_origin} B",
        mirror_a.as_secs_f64()
    );

    origin.reset_counters();
    sync();
    let start = Instant::now();
    let (b, _) = commons.start_node(&b_dir, &config, "127.0.0.1", "server", Some(&a_addr))?;
    let b_status = commons.wait_complete(&b_dir, timeout)?;
    let mirror_b = start.elapsed();
    let b_from_origin = origin.bytes_served();
    ensure!(b_status["mirror"][0]["held"] == total, "B: {b_status}");
    let b_from_peers = b_status["bytes_fetched"].as_u64().unwrap_or(0);
    println!(
        "mirror B (bootstrapped to A, start → complete): {:.2} s; from the origin {b_from_origin} B \
         = {:.4} of {total}; fetched from peers {b_from_peers} B",
        mirror_b.as_secs_f64(),
        b_from_origin as f64 / total as f64
    );
    drop((a, b));
    std::fs::remove_dir_all(&a_dir)?;
    std::fs::remove_dir_all(&b_dir)?;
    drop(origin);
    std::fs::remove_dir_all(scratch.join("repo"))?;
    Ok(Loopback {
        total,
        curl,
        import: import.elapsed,
        import_rss: import.max_rss,
        mirror_a,
        a_from_origin,
        mirror_b,
        b_from_origin,
        b_from_peers,
    })
}

fn secs_list(d: &[Duration]) -> String {
    d.iter()
        .map(|d| format!("{:.2}", d.as_secs_f64()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// When one client saw its mirror ready, and was done.
struct ClientRun {
    ready: Duration,
    done: Duration,
    bytes: u64,
}

/// What one lab scenario measured.
struct Scenario {
    /// Starting the mirrors → the last client done.
    all_done: Duration,
    first_done: Duration,
    /// When the first client of each mirror saw it ready.
    mirrors_ready: Vec<Duration>,
    /// Bytes the origin's uplink carried (headers included).
    origin_sent: u64,
    /// Bytes all clients received (bodies).
    client_bytes: u64,
}

/// One client in namespace `ns`: polls `gateway` until it has the repository, then gets
/// every file it lists, one after the other, and checks them.
fn client(
    ns: &str,
    gateway: &str,
    files: &[RepoFile],
    save: Option<&Path>,
    t0: Instant,
    deadline: Instant,
    abort: &AtomicBool,
) -> Result<ClientRun> {
    let info_url = format!("{gateway}/api/models/{REPO}");
    let info: Value = loop {
        ensure!(!abort.load(Ordering::Relaxed), "aborted");
        ensure!(Instant::now() < deadline, "{info_url} never answered 200");
        let out = command_in(Some(ns), Path::new("curl"))
            .args(["-s", "-w", "\n%{http_code}", &info_url])
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        if let Some((body, "200")) = text.rsplit_once('\n') {
            break serde_json::from_str(body).context("the gateway's repository info")?;
        }
        std::thread::sleep(POLL);
    };
    let ready = t0.elapsed();
    let listed: BTreeSet<&str> = info["siblings"]
        .as_array()
        .context("no siblings")?
        .iter()
        .filter_map(|s| s["rfilename"].as_str())
        .collect();
    let expected: BTreeSet<&str> = files.iter().map(|f| f.path.as_str()).collect();
    ensure!(listed == expected, "{gateway} lists {listed:?}");
    let mut bytes = 0;
    for f in files {
        let out = save.map(|dir| dir.join(&f.path));
        let got = curl_get(Some(ns), &resolve_url(gateway, &f.path), out.as_deref())?;
        ensure!(
            got == f.size,
            "{ns} got {got} bytes of {} ({})",
            f.size,
            f.path
        );
        if let Some(out) = out {
            netns::run(Command::new("cmp").arg(&f.disk).arg(&out))
                .with_context(|| format!("{ns}: {} differs from the origin's", f.path))?;
            std::fs::remove_file(&out)?;
        }
        bytes += got;
    }
    Ok(ClientRun {
        ready,
        done: t0.elapsed(),
        bytes,
    })
}

/// Starts the mirrors (`bootstrap_first`: each later one bootstrapped to the first, DHT
/// servers; else one DHT client with no peers), then the clients, spread evenly over the
/// mirrors, and waits for all of them.
fn scenario(
    args: &Args,
    lab: &Lab,
    scratch: &Path,
    name: &str,
    origin_url: &str,
    files: &[RepoFile],
    mirrors: usize,
) -> Result<Scenario> {
    let total = total_size(files);
    let before = lab.tx_bytes(ORIGIN_NODE)?;
    let mut nodes: Vec<(Guard, String, PathBuf)> = Vec::new();
    let mut gateways = Vec::new();
    sync();
    let t0 = Instant::now();
    for (k, &node) in MIRROR_NODES.iter().take(mirrors).enumerate() {
        let ns = lab.ns(node);
        let commons = Commons {
            bin: &args.common.commons,
            ns: Some(&ns),
        };
        let dir = scratch.join(format!("{name}-mirror{k}"));
        let config = scratch.join(format!("{name}-mirror{k}.toml"));
        let ip = lab.addr(node);
        write_mirror_config(&config, origin_url, Some(&format!("{ip}:8080")))?;
        let (dht_mode, bootstrap) = if mirrors == 1 {
            ("client", None)
        } else {
            ("server", nodes.first().map(|(_, addr, _)| addr.as_str()))
        };
        let (guard, addr) = commons.start_node(&dir, &config, &ip, dht_mode, bootstrap)?;
        nodes.push((guard, addr, dir));
        gateways.push(format!("http://{ip}:8080"));
    }
    // Generous: each mirror may take a whole copy through the origin's uplink.
    let one_pass = total as f64 * 8.0 / 1e6 / args.rate_mbit as f64;
    let deadline = t0 + Duration::from_secs_f64(120.0 + 4.0 * one_pass * mirrors as f64);
    let abort = AtomicBool::new(false);
    let runs: Vec<Result<ClientRun>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..args.clients)
            .map(|c| {
                let ns = lab.ns(FIRST_CLIENT_NODE + c);
                let gateway = &gateways[c % gateways.len()];
                let save = args.verify.then(|| scratch.join(format!("client{c}")));
                let abort = &abort;
                s.spawn(move || {
                    if let Some(dir) = &save {
                        std::fs::create_dir_all(dir)?;
                    }
                    let run = client(&ns, gateway, files, save.as_deref(), t0, deadline, abort);
                    if run.is_err() {
                        abort.store(true, Ordering::Relaxed);
                    }
                    run
                })
            })
            .collect();
        // A mirror that dies fails the scenario at once rather than at the deadline.
        while !handles.iter().all(|h| h.is_finished()) {
            for (guard, _, _) in &mut nodes {
                if let Ok(Some(status)) = guard.0.try_wait() {
                    eprintln!("{name}: a mirror exited ({status})");
                    abort.store(true, Ordering::Relaxed);
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a client panicked")))
            })
            .collect()
    });
    let runs = runs.into_iter().collect::<Result<Vec<_>>>()?;
    let origin_sent = lab.tx_bytes(ORIGIN_NODE)? - before;
    let done: Vec<Duration> = runs.iter().map(|r| r.done).collect();
    let mirrors_ready = (0..gateways.len())
        .map(|m| {
            runs.iter()
                .skip(m)
                .step_by(gateways.len())
                .map(|r| r.ready)
                .min()
                .unwrap_or_default()
        })
        .collect();
    drop(nodes);
    for k in 0..mirrors {
        std::fs::remove_dir_all(scratch.join(format!("{name}-mirror{k}")))?;
    }
    Ok(Scenario {
        all_done: done.iter().max().copied().unwrap_or_default(),
        first_done: done.iter().min().copied().unwrap_or_default(),
        mirrors_ready,
        origin_sent,
        client_bytes: runs.iter().map(|r| r.bytes).sum(),
    })
}

/// What the lab measured.
struct LabFigures {
    total: u64,
    two: Scenario,
    one: Scenario,
}

fn lab(args: &Args, scratch: &Path) -> Result<LabFigures> {
    ensure!((1..=200).contains(&args.clients), "--clients: 1 to 200");
    let hub_origin = match &args.hub_origin {
        Some(p) => p.clone(),
        None => args.common.commons.with_file_name("hub-origin"),
    };
    ensure!(
        hub_origin.exists(),
        "{} not found (build the workspace, or pass --hub-origin)",
        hub_origin.display()
    );
    println!(
        "\n== lab: {} MiB repository, origin uplink {} Mbit/s (tbf), {} clients, other links unshaped",
        args.lab_size_mib, args.rate_mbit, args.clients
    );
    let repo = scratch.join("lab-repo");
    let files = make_repo(&repo, args.lab_size_mib, 2)?;
    let total = total_size(&files);

    let mut lab = Lab::new(LAB_PREFIX, LAB_SUBNET)?;
    let origin_ns = lab.add_node(ORIGIN_NODE, Some(args.rate_mbit))?;
    for node in MIRROR_NODES {
        lab.add_node(node, None)?;
    }
    for c in 0..args.clients {
        lab.add_node(FIRST_CLIENT_NODE + c, None)?;
    }
    let mut cmd = command_in(Some(&origin_ns), &hub_origin);
    cmd.args(["--listen", &format!("{}:8080", lab.addr(ORIGIN_NODE))])
        .arg("--repo")
        .arg(format!("model:{REPO}={}", repo.display()));
    let (origin, origin_url) = start_and_read(cmd, |line| {
        let v: Value = serde_json::from_str(line).ok()?;
        v["url"].as_str().map(str::to_string)
    })?;
    println!("origin {origin_url} in {origin_ns}");

    let two = scenario(args, &lab, scratch, "two", &origin_url, &files, 2)?;
    report_scenario("2 mirrors", &two, total, args.clients);
    let one = scenario(args, &lab, scratch, "one", &origin_url, &files, 1)?;
    report_scenario("one pull-through cache", &one, total, args.clients);
    drop(origin);
    drop(lab);
    std::fs::remove_dir_all(&repo)?;
    Ok(LabFigures { total, two, one })
}

fn report_scenario(name: &str, s: &Scenario, total: u64, clients: usize) {
    println!(
        "{name}: all {clients} clients done {:.1} s after the mirrors started (first {:.1} s); \
         mirrors ready at {} s; the origin's uplink carried {:.2} copies; clients got {:.3} × \
         ({clients} × size)",
        s.all_done.as_secs_f64(),
        s.first_done.as_secs_f64(),
        secs_list(&s.mirrors_ready),
        s.origin_sent as f64 / total as f64,
        s.client_bytes as f64 / (total as f64 * clients as f64)
    );
}

fn main() -> Result<()> {
    let args = Args::parse();
    let scratch = match &args.scratch {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            tempfile::tempdir_in(dir)?
        }
        None => tempfile::tempdir()?,
    };
    let loop_figures = if args.lab_only {
        None
    } else {
        Some(loopback(&args, scratch.path())?)
    };
    let lab_figures = if !(args.lab || args.lab_only) {
        println!("\nlab: not run (pass --lab, as root)");
        None
    } else if !netns::is_root() {
        println!("\nlab: skipped: network namespaces need root (run with sudo)");
        None
    } else {
        Some(lab(&args, scratch.path())?)
    };

    println!("\n== hub-bench summary (one run)");
    let mut json = serde_json::Map::new();
    if let Some(l) = &loop_figures {
        let import_vs_curl = l.import.as_secs_f64() / l.curl.as_secs_f64();
        let b_share = l.b_from_origin as f64 / l.total as f64;
        println!(
            "loopback, {} MiB: curl of every file {:.2} s; commons add {:.2} s (peak RSS {:.0} MiB); \
             import ÷ curl = {import_vs_curl:.2}",
            args.common.size_mib,
            l.curl.as_secs_f64(),
            l.import.as_secs_f64(),
            l.import_rss as f64 / (1 << 20) as f64
        );
        println!(
            "mirror A (daemon) {:.2} s; mirror B (peer A) {:.2} s; B's bytes from the origin ÷ \
             total = {b_share:.4} ({} of {} B)",
            l.mirror_a.as_secs_f64(),
            l.mirror_b.as_secs_f64(),
            l.b_from_origin,
            l.total
        );
        json.insert(
            "loopback".into(),
            json!({
                "size_bytes": l.total,
                "runs": args.runs.max(1),
                "curl_secs": l.curl.as_secs_f64(),
                "import_secs": l.import.as_secs_f64(),
                "import_peak_rss_bytes": l.import_rss,
                "import_over_curl": import_vs_curl,
                "mirror_a_secs": l.mirror_a.as_secs_f64(),
                "mirror_a_origin_bytes": l.a_from_origin,
                "mirror_b_secs": l.mirror_b.as_secs_f64(),
                "mirror_b_origin_bytes": l.b_from_origin,
                "mirror_b_peer_bytes": l.b_from_peers,
                "mirror_b_origin_share": b_share,
            }),
        );
    }
    if let Some(f) = &lab_figures {
        let ratio = f.two.all_done.as_secs_f64() / f.one.all_done.as_secs_f64();
        println!(
            "lab, {} MiB, origin at {} Mbit/s, {} clients: 2 mirrors {:.1} s (origin sent {:.2} \
             copies) vs one pull-through cache {:.1} s ({:.2} copies): 2 mirrors ÷ one cache = \
             {ratio:.2}",
            args.lab_size_mib,
            args.rate_mbit,
            args.clients,
            f.two.all_done.as_secs_f64(),
            f.two.origin_sent as f64 / f.total as f64,
            f.one.all_done.as_secs_f64(),
            f.one.origin_sent as f64 / f.total as f64,
        );
        let scenario = |s: &Scenario| {
            json!({
                "all_done_secs": s.all_done.as_secs_f64(),
                "first_done_secs": s.first_done.as_secs_f64(),
                "mirrors_ready_secs": s.mirrors_ready.iter().map(Duration::as_secs_f64).collect::<Vec<_>>(),
                "origin_sent_bytes": s.origin_sent,
                "client_bytes": s.client_bytes,
            })
        };
        json.insert(
            "lab".into(),
            json!({
                "size_bytes": f.total,
                "origin_rate_mbit": args.rate_mbit,
                "clients": args.clients,
                "two_mirrors": scenario(&f.two),
                "one_cache": scenario(&f.one),
                "two_over_one": ratio,
            }),
        );
    }
    if let Some(path) = &args.json_out {
        std::fs::write(path, serde_json::to_string_pretty(&Value::Object(json))?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("figures written to {}", path.display());
    }
    Ok(())
}
