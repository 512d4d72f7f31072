//! Crash soak (issue 20, `make crash-soak`): SIGKILLs `commons` at random moments of its
//! operations, checks the store after every kill, then lets the interrupted operation
//! complete and checks the result byte for byte. Then it fills the disk and breaks it.
//!
//! Phases (each kill lands after a delay drawn uniformly over the operation's duration,
//! measured once first on a clean run):
//! - **add**: `commons add` of a dataset folder (four files and a `config.json`). After
//!   every few kills the add runs to completion and the dataset is exported and compared
//!   with the folder; every other round it is then removed and collected, so the next
//!   kills hit first-time adds, and the store must shrink back to its empty size.
//! - **get**: `commons get <hash> --bootstrap <seeder>` from several seeders (`node run`,
//!   each with an upload limit so a kill lands mid-fetch; the getter finds all of them in
//!   the DHT). Same rounds; the bytes the seeders sent (their `node status`) against one
//!   clean fetch give the bytes re-fetched because of the kills.
//! - **resume**: the dedicated measurement of re-sent bytes: one seeder, one file, each
//!   kill placed when the seeder has sent a random share of the file since the run began,
//!   so every kill lands mid-fetch; re-sent = (bytes sent − one clean fetch's) ÷ size.
//! - **rm/gc**: the dataset added again, then `rm` (or `unpin` + `gc`) killed; a second
//!   pinned dataset shares a file with it and must survive every kill whole. At the end
//!   everything is removed and collected, and the store's size is compared with a fresh
//!   store's.
//! - **mirror**: a publisher node signs and publishes successive versions of a name
//!   (`commons publish`); a mirror node follows it (`mirror add <publisher>/org/name
//!   --follow`) and is SIGKILLed and restarted while it fetches each new version. After a
//!   restart it must bind the version by itself.
//! - **ENOSPC** (root): a small tmpfs as data dir, `add` of a file twice its size and `get`
//!   of a blob larger than it: each must fail within `--error-timeout-secs` of the disk
//!   filling, with an error that says the disk is full, no panic, a store that verifies;
//!   then the tmpfs grows and the operation completes.
//! - **EIO** (root): an ext4 image on a loop device as data dir, shut down
//!   (`EXT4_IOC_SHUTDOWN`, nothing flushed) in the middle of `add` and of `get`: every I/O
//!   then fails with EIO. The process must fail with an I/O error, no panic; after a
//!   remount (journal replay) the store verifies and the operation completes. A
//!   device-mapper `error` target is the other way to get EIO; it is used only to say why
//!   not when the kernel has no device mapper.
//!
//! After every kill: `commons --json verify` must exit 0 with nothing corrupt, and no
//! `commons` process may print a panic. In the add and rm/gc phases, every pinned dataset
//! must also be complete (their pin is written in the same batch as the data's binding).
//! A corrupt store is copied to `<scratch>/evidence/`, and the scratch folder kept.
//!
//! Prints one markdown report (also written to `--markdown-out`) and exits 1 if any store
//! was corrupt, any process panicked or hung, or any operation did not complete.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use clap::Parser;
use commons_simulations::{
    crash::{
        dir_bytes, free_bytes, same_file, same_tree, store_bytes, Finished, Mount, Proc,
        WireCounter,
    },
    netns::is_root,
    write_random_file,
};
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde_json::Value;

/// Crash soak: kills during add, get, rm/gc and a mirror following a name; ENOSPC and EIO.
#[derive(Debug, Parser)]
struct Args {
    /// Path to the `commons` binary (release build)
    #[arg(long)]
    commons: PathBuf,
    /// Seed of the data and of every random delay
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Size of the dataset of the add, get, rm/gc and mirror phases, in MiB
    #[arg(long, default_value_t = 128)]
    size_mib: u64,
    /// SIGKILLs of `commons add`
    #[arg(long, default_value_t = 30)]
    add_kills: usize,
    /// SIGKILLs of `commons get` from several seeders
    #[arg(long, default_value_t = 30)]
    get_kills: usize,
    /// SIGKILLs of `commons rm` / `commons gc`
    #[arg(long, default_value_t = 20)]
    rm_kills: usize,
    /// SIGKILLs of the mirror node following a name
    #[arg(long, default_value_t = 20)]
    mirror_kills: usize,
    /// SIGKILLs of the dedicated resume measurement
    #[arg(long, default_value_t = 20)]
    resume_kills: usize,
    /// Size of the file of the resume measurement (and of the blob the ENOSPC and EIO gets
    /// fetch), in MiB
    #[arg(long, default_value_t = 256)]
    resume_size_mib: u64,
    /// Kills before the operation is let complete (add, get)
    #[arg(long, default_value_t = 3)]
    kills_per_round: usize,
    /// Seeders of the get phase
    #[arg(long, default_value_t = 3)]
    seeders: usize,
    /// Upload limit of each seeder of the get phase, MiB/s
    #[arg(long, default_value_t = 10.0)]
    seeder_mib_per_sec: f64,
    /// Upload limit of the seeder of the resume measurement, MiB/s
    #[arg(long, default_value_t = 16.0)]
    resume_mib_per_sec: f64,
    /// Upload limit of the publisher of the mirror phase, MiB/s
    #[arg(long, default_value_t = 10.0)]
    publisher_mib_per_sec: f64,
    /// Size of the tmpfs of the ENOSPC phase, MiB (the add's file is twice as large)
    #[arg(long, default_value_t = 150)]
    enospc_mib: u64,
    /// Longest wait for an error once the disk is full or broken, seconds (longer: a hang)
    #[arg(long, default_value_t = 30)]
    error_timeout_secs: u64,
    /// A smoke run: small data, 3 kills per phase (overrides the sizes and counts)
    #[arg(long)]
    quick: bool,
    /// Phases to run, comma-separated: add,get,resume,rm,mirror,enospc,eio
    #[arg(long, default_value = "add,get,resume,rm,mirror,enospc,eio")]
    phases: String,
    /// Scratch folder (default: a new temporary folder, deleted unless something failed)
    #[arg(long)]
    scratch: Option<PathBuf>,
    /// Keep the scratch folder
    #[arg(long)]
    keep: bool,
    /// Where to write the markdown report
    #[arg(long, default_value = "crash-soak.md")]
    markdown_out: PathBuf,
}

impl Args {
    fn apply_quick(&mut self) {
        if self.quick {
            self.size_mib = 24;
            self.add_kills = 3;
            self.get_kills = 3;
            self.rm_kills = 2;
            self.mirror_kills = 2;
            self.resume_kills = 3;
            self.resume_size_mib = 48;
            self.enospc_mib = 24;
        }
    }
}

/// Longest any command that should succeed may take.
const OP_TIMEOUT: Duration = Duration::from_secs(300);
/// Longest `verify` may take.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(120);
/// Slack over a fresh store's data bytes that still counts as "shrank back to empty":
/// less than one blob file (~16 MiB, one per memtable flush).
const EMPTY_SLACK: u64 = 4 << 20;
/// Kills of the mirror node per published version.
const MIRROR_KILLS_PER_VERSION: usize = 4;
const MIB: f64 = (1u64 << 20) as f64;
/// A tmpfs with less free space than this counts as full (RocksDB fails a write of a few
/// MiB before the last byte is taken).
const FULL_BELOW: u64 = 8 << 20;

/// One phase's figures: a row of the summary table.
#[derive(Debug, Default, Clone)]
struct PhaseStats {
    name: String,
    /// The operation's duration on a clean run (the range the kill delays are drawn from).
    op_secs: f64,
    /// Processes SIGKILLed while running.
    kills: usize,
    /// Processes that ended by themselves before their kill moment.
    ended_before_kill: usize,
    verify_runs: usize,
    corrupt: usize,
    completions: usize,
    completed: usize,
    identical: usize,
    compared: usize,
    /// Bytes sent by the seeders ÷ what one clean fetch takes, minus 1.
    refetch: Option<f64>,
    peak_rss_killed: u64,
    wall_secs: f64,
}

impl PhaseStats {
    fn new(name: &str) -> Self {
        PhaseStats {
            name: name.to_string(),
            ..Default::default()
        }
    }

    fn note_kill(&mut self, f: &Finished) {
        if f.killed {
            self.kills += 1;
            self.peak_rss_killed = self.peak_rss_killed.max(f.max_rss);
        } else {
            self.ended_before_kill += 1;
        }
    }
}

/// What checking a store found.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Check {
    /// `verify` passed (and the pins are whole where asked).
    Consistent,
    /// Counted and reported.
    Corrupt,
    /// `verify` could not open the store: its disk is full (the error it printed).
    CannotOpenDiskFull(String),
}

/// A dataset on disk and its hash once added.
#[derive(Debug, Clone)]
struct Dataset {
    dir: PathBuf,
    hash: String,
    size: u64,
}

/// A running `commons node run` and what it printed when ready.
struct NodeProc {
    proc: Proc,
    dir: PathBuf,
    addr: String,
    ready: Value,
}

/// The ENOSPC / EIO results: one row per case.
#[derive(Debug, Default, Clone)]
struct FaultRow {
    case: String,
    /// Seconds from the fault (disk seen full, or shut down) to the process's exit.
    secs_to_error: Option<f64>,
    /// Seconds from its start to its exit.
    total_secs: f64,
    /// Still running `error_timeout` after the fault.
    hung: bool,
    /// What `verify` said right after (`ok`, or what went wrong).
    verify_ok: String,
    error: String,
    typed: bool,
    panicked: bool,
    completed_after: bool,
    peak_rss: u64,
}

/// What the resume measurement found.
#[derive(Debug, Default, Clone)]
struct ResumeStats {
    size: u64,
    kills: usize,
    mid_fetch: usize,
    clean_sent: u64,
    sent: u64,
    /// The same two on the wire (UDP bytes the seeder sent, nftables), when root.
    wire: Option<(u64, u64)>,
    /// Where the killed runs' lost bytes went, on the wire (when root), summed over kills:
    /// sent before the kill but not held after it, and sent after the kill.
    lost: Option<(u64, u64)>,
    completed: bool,
}

/// Store sizes: fresh, after the final removal and collection, and the worst round.
#[derive(Debug, Default, Clone)]
struct SpaceStats {
    empty_data: u64,
    empty_logs: u64,
    add_rounds_checked: usize,
    add_worst_data: u64,
    /// rm/gc phase: the store with only the shared dataset, after clean removals.
    rm_baseline_data: u64,
    rm_cycles: usize,
    /// rm/gc phase: the largest store after a killed removal was completed (same content).
    rm_worst_data: u64,
    final_data: u64,
    final_logs: u64,
    final_disk: u64,
}

/// The harness: where things go, the random source, and everything found.
struct Soak {
    commons: PathBuf,
    scratch: PathBuf,
    logs: PathBuf,
    rng: StdRng,
    spawned: u64,
    problems: Vec<String>,
    evidence: u64,
    error_timeout: Duration,
}

impl Soak {
    fn command(&self, dir: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.commons);
        cmd.env_remove("COMMONS_CONFIG")
            .env_remove("COMMONS_DATA_DIR")
            .env_remove("COMMONS_LOG")
            .arg("--data-dir")
            .arg(dir)
            .arg("--json")
            .args(args);
        cmd
    }

    fn spawn(&mut self, dir: &Path, args: &[&str]) -> Result<Proc> {
        self.spawned += 1;
        let label = format!(
            "{:05}-{}",
            self.spawned,
            args.iter()
                .take(2)
                .map(|a| a.chars().filter(char::is_ascii_alphanumeric).take(12))
                .map(String::from_iter)
                .collect::<Vec<_>>()
                .join("-")
        );
        Proc::spawn(self.command(dir, args), &self.logs, &label)
    }

    fn problem(&mut self, what: String) {
        eprintln!("PROBLEM: {what}");
        self.problems.push(what);
    }

    /// Records a panic if `f` printed one.
    fn check_panic(&mut self, f: &Finished, what: &str) {
        if f.panicked() {
            let line = f
                .stderr
                .lines()
                .find(|l| l.contains("panicked"))
                .unwrap_or("")
                .to_string();
            self.problem(format!("panic in {what}: {line}"));
        }
    }

    /// Runs `commons ARGS` on `dir` to its end (a hang past `timeout` is recorded, and the
    /// process killed).
    fn run(&mut self, dir: &Path, args: &[&str], timeout: Duration) -> Result<Finished> {
        let mut p = self.spawn(dir, args)?;
        let what = format!("`commons {}` on {}", args.join(" "), dir.display());
        let f = match p.wait_until(Instant::now() + timeout)? {
            Some(f) => f,
            None => {
                self.problem(format!(
                    "hang: {what} still ran after {} s (killed)",
                    timeout.as_secs()
                ));
                p.kill()?
            }
        };
        self.check_panic(&f, &what);
        Ok(f)
    }

    /// Runs `commons --json ARGS`, which must succeed; returns its JSON reply.
    fn run_ok(&mut self, dir: &Path, args: &[&str]) -> Result<Value> {
        let f = self.run(dir, args, OP_TIMEOUT)?;
        ensure!(
            f.success(),
            "`commons {}` on {} failed ({:?}): {}",
            args.join(" "),
            dir.display(),
            f.ended,
            f.last_error()
        );
        f.json().context("a JSON reply")
    }

    /// After a kill (or a fault): `verify` must exit 0 and report nothing corrupt; with
    /// `pinned_complete`, every pinned dataset must be complete. A bad store is counted,
    /// reported and copied to the evidence folder. A store that cannot even be opened
    /// because its disk is full is reported as such (not as corrupt) when `disk_full`:
    /// the caller frees space and checks again.
    fn check_store(
        &mut self,
        dir: &Path,
        stats: &mut PhaseStats,
        pinned_complete: bool,
        after: &str,
    ) -> Result<Check> {
        self.check_store_on(dir, stats, pinned_complete, after, false)
    }

    fn check_store_on(
        &mut self,
        dir: &Path,
        stats: &mut PhaseStats,
        pinned_complete: bool,
        after: &str,
        disk_full: bool,
    ) -> Result<Check> {
        stats.verify_runs += 1;
        let mut bad = Vec::new();
        let v = self.run(dir, &["verify"], VERIFY_TIMEOUT)?;
        if !v.success() {
            if disk_full && v.stderr.contains("cannot open the store") && says_disk_full(&v) {
                return Ok(Check::CannotOpenDiskFull(v.last_error()));
            }
            bad.push(format!(
                "verify ended {:?}: {} {}",
                v.ended,
                v.stdout.trim(),
                v.last_error()
            ));
        } else if let Some(corrupt) = v.json().and_then(|j| j["corrupt"].as_array().cloned()) {
            if !corrupt.is_empty() {
                bad.push(format!("verify found corruption: {corrupt:?}"));
            }
        }
        if pinned_complete && bad.is_empty() {
            let ls = self.run_ok(dir, &["ls"])?;
            for d in ls["datasets"].as_array().into_iter().flatten() {
                if d["pinned"] == Value::Bool(true) && d["complete"] != Value::Bool(true) {
                    bad.push(format!("pinned dataset not complete: {d}"));
                }
            }
        }
        if bad.is_empty() {
            return Ok(Check::Consistent);
        }
        stats.corrupt += 1;
        let copy = self.keep_evidence(dir, &stats.name.replace('/', "-"))?;
        self.problem(format!(
            "corrupt store after {after} ({}; copy in {}): {}",
            stats.name,
            copy.display(),
            bad.join("; ")
        ));
        Ok(Check::Corrupt)
    }

    /// Copies the data dir `dir` to `<scratch>/evidence/` (the scratch folder is then kept).
    fn keep_evidence(&mut self, dir: &Path, what: &str) -> Result<PathBuf> {
        self.evidence += 1;
        let copy = self
            .scratch
            .join("evidence")
            .join(format!("{what}-{}", self.evidence));
        std::fs::create_dir_all(copy.parent().context("parent")?)?;
        let _ = Command::new("cp").arg("-a").arg(dir).arg(&copy).status();
        Ok(copy)
    }

    /// Exports `hash` from `dir` and compares it with `source` (a folder, or a file for a
    /// blob).
    /// After a disk fault was cleared: whether the operation `f` completed; if it did, the
    /// store (`dir`, holding `hash`, exported and compared with `source`) is checked.
    fn completed_after_fault(
        &mut self,
        f: &Finished,
        (dir, hash, source): (&Path, &str, &Path),
        st: &mut PhaseStats,
        what: &str,
        after: &str,
    ) -> Result<bool> {
        if !f.success() {
            self.problem(format!(
                "{what}: did not complete after {after}: {}",
                f.last_error()
            ));
            return Ok(false);
        }
        st.completed += 1;
        self.check_store(dir, st, true, &format!("{what} completed"))?;
        self.export_matches(dir, hash, source, st)?;
        Ok(true)
    }

    fn export_matches(
        &mut self,
        dir: &Path,
        hash: &str,
        source: &Path,
        stats: &mut PhaseStats,
    ) -> Result<()> {
        let out = self.scratch.join("export");
        let _ = std::fs::remove_dir_all(&out);
        let _ = std::fs::remove_file(&out);
        stats.compared += 1;
        let out_s = out.to_string_lossy().to_string();
        self.run_ok(dir, &["export", hash, &out_s, "--no-signature"])?;
        let same = if source.is_dir() {
            same_tree(source, &out)?
        } else {
            same_file(source, &out)?
        };
        if same {
            stats.identical += 1;
        } else {
            self.problem(format!(
                "{}: export of {hash} from {} differs from {}",
                stats.name,
                dir.display(),
                source.display()
            ));
        }
        let _ = std::fs::remove_dir_all(&out);
        let _ = std::fs::remove_file(&out);
        Ok(())
    }

    fn delay(&mut self, max: Duration) -> Duration {
        Duration::from_secs_f64(self.rng.random_range(0.0..max.as_secs_f64().max(0.001)))
    }

    /// Starts `commons node run` on `dir` (loopback, a free port) and waits for its ready
    /// line.
    fn start_node(&mut self, dir: &Path, bootstrap: Option<&str>) -> Result<NodeProc> {
        let mut args = vec!["node", "run", "--listen", "/ip4/127.0.0.1/udp/0/quic-v1"];
        if let Some(b) = bootstrap {
            args.extend(["--bootstrap", b]);
        }
        let mut proc = self.spawn(dir, &args)?;
        let Some(line) = proc.first_line(Duration::from_secs(60))? else {
            let f = proc.kill()?;
            self.check_panic(&f, "node run");
            bail!(
                "`commons node run` on {} did not start: {}",
                dir.display(),
                f.last_error()
            );
        };
        let ready: Value = serde_json::from_str(&line).context("node ready line")?;
        let addr = ready["addrs"][0]
            .as_str()
            .context("a listen address")?
            .to_string();
        Ok(NodeProc {
            proc,
            dir: dir.to_path_buf(),
            addr,
            ready,
        })
    }

    /// Bytes the running node on `dir` has sent to peers since it started.
    fn bytes_served(&mut self, dir: &Path) -> Result<u64> {
        let s = self.run_ok(dir, &["node", "status"])?;
        s["bytes_served"].as_u64().context("bytes_served")
    }

    fn served_by(&mut self, nodes: &[NodeProc]) -> Result<u64> {
        let dirs: Vec<PathBuf> = nodes.iter().map(|n| n.dir.clone()).collect();
        let mut total = 0;
        for d in dirs {
            total += self.bytes_served(&d)?;
        }
        Ok(total)
    }

    /// A fresh store's size (data, informational logs).
    fn empty_store_bytes(&mut self) -> Result<(u64, u64)> {
        let dir = self.scratch.join("empty-store");
        let _ = std::fs::remove_dir_all(&dir);
        self.run_ok(&dir, &["ls"])?;
        let sizes = store_bytes(&dir);
        std::fs::remove_dir_all(&dir)?;
        Ok(sizes)
    }

    fn stop_node(&mut self, node: NodeProc, what: &str) -> Result<()> {
        let f = node.proc.stop(Duration::from_secs(30))?;
        self.check_panic(&f, what);
        Ok(())
    }
}

/// Writes a dataset folder of about `total` bytes: four files of 50, 25, 15 and 10 % in two
/// subfolders, and a `config.json`.
fn make_dataset(dir: &Path, total: u64, seed: u64) -> Result<()> {
    std::fs::create_dir_all(dir.join("shards"))?;
    std::fs::create_dir_all(dir.join("extra"))?;
    std::fs::write(
        dir.join("config.json"),
        format!("{{\"seed\": {seed}, \"bytes\": {total}}}\n"),
    )?;
    let parts = [
        ("shards/part-00001.bin", total / 2),
        ("shards/part-00002.bin", total / 4),
        ("shards/part-00003.bin", total * 15 / 100),
        (
            "extra/tail.bin",
            total - total / 2 - total / 4 - total * 15 / 100,
        ),
    ];
    for (i, (name, size)) in parts.iter().enumerate() {
        write_random_file(&dir.join(name), *size, seed * 10 + i as u64)?;
    }
    Ok(())
}

fn s(p: &Path) -> String {
    p.to_string_lossy().to_string()
}

fn hash_of(reply: &Value) -> Result<String> {
    Ok(reply["hash"].as_str().context("hash")?.to_string())
}

/// Adds `dir` to a fresh store (a clean run): its hash, and how long the add took.
fn measure_add(soak: &mut Soak, ds_dir: &Path) -> Result<(Dataset, Duration)> {
    let store = soak.scratch.join("add-measure");
    let _ = std::fs::remove_dir_all(&store);
    let f = soak.run(&store, &["add", &s(ds_dir)], OP_TIMEOUT)?;
    ensure!(f.success(), "clean add failed: {}", f.last_error());
    let reply = f.json().context("add reply")?;
    let ds = Dataset {
        dir: ds_dir.to_path_buf(),
        hash: hash_of(&reply)?,
        size: reply["size"].as_u64().context("size")?,
    };
    std::fs::remove_dir_all(&store)?;
    Ok((ds, f.elapsed))
}

/// Phase 1: `commons add` killed; rounds of kills, then the add completes and is compared.
fn phase_add(
    soak: &mut Soak,
    args: &Args,
    ds: &Dataset,
    t_add: Duration,
    space: &mut SpaceStats,
) -> Result<PhaseStats> {
    let mut st = PhaseStats::new("add");
    st.op_secs = t_add.as_secs_f64();
    let started = Instant::now();
    let store = soak.scratch.join("add");
    let src = s(&ds.dir);
    let mut round = 0;
    while st.kills < args.add_kills {
        for _ in 0..args.kills_per_round {
            if st.kills >= args.add_kills {
                break;
            }
            let delay = soak.delay(t_add);
            let p = soak.spawn(&store, &["add", &src])?;
            let f = p.kill_after(delay)?;
            soak.check_panic(&f, "killed add");
            st.note_kill(&f);
            if !f.killed && !f.success() {
                soak.problem(format!("add failed by itself: {}", f.last_error()));
            }
            soak.check_store(&store, &mut st, true, &format!("add killed at {delay:?}"))?;
        }
        st.completions += 1;
        let f = soak.run(&store, &["add", &src], OP_TIMEOUT)?;
        let hash = f
            .json()
            .and_then(|j| j["hash"].as_str().map(str::to_string));
        if f.success() && hash.as_deref() == Some(&ds.hash) {
            st.completed += 1;
        } else {
            soak.problem(format!(
                "add after kills did not complete: {:?} {}",
                f.ended,
                f.last_error()
            ));
        }
        soak.check_store(&store, &mut st, true, "the completed add")?;
        soak.export_matches(&store, &ds.hash, &ds.dir, &mut st)?;
        if round % 2 == 0 {
            soak.run_ok(&store, &["rm", &ds.hash])?;
            soak.run_ok(&store, &["gc"])?;
            let (data, _) = store_bytes(&store);
            space.add_rounds_checked += 1;
            space.add_worst_data = space.add_worst_data.max(data);
            if data > space.empty_data + EMPTY_SLACK {
                let copy = soak.keep_evidence(&store, &format!("add-leak-{round}"))?;
                soak.problem(format!(
                    "add round {round}: after rm + gc the store holds {:.1} MiB of data files \
                     (a fresh store: {:.1} MiB; copy in {})",
                    data as f64 / MIB,
                    space.empty_data as f64 / MIB,
                    copy.display()
                ));
            }
        }
        round += 1;
    }
    std::fs::remove_dir_all(&store)?;
    st.wall_secs = started.elapsed().as_secs_f64();
    Ok(st)
}

/// Writes a node config: a DHT server (loopback is not public) saving state every second,
/// with an upload limit.
fn node_dir(dir: &Path, upload_mib_per_sec: Option<f64>) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut config = String::from("[dht]\nmode = \"server\"\nsave_interval_secs = 1\n");
    if let Some(rate) = upload_mib_per_sec {
        writeln!(config, "[limits]\nupload_mib_per_sec = {rate}")?;
    }
    std::fs::write(dir.join("config.toml"), config)?;
    Ok(())
}

/// Phase 2: `commons get` from several seeders, killed.
fn phase_get(soak: &mut Soak, args: &Args, ds: &Dataset) -> Result<PhaseStats> {
    let mut st = PhaseStats::new("get");
    let started = Instant::now();
    let mut seeders: Vec<NodeProc> = Vec::new();
    for i in 0..args.seeders.max(1) {
        let dir = soak.scratch.join(format!("seed-{i}"));
        node_dir(&dir, Some(args.seeder_mib_per_sec))?;
        soak.run_ok(&dir, &["add", &s(&ds.dir)])?;
        let bootstrap = seeders.first().map(|n| n.addr.clone());
        seeders.push(soak.start_node(&dir, bootstrap.as_deref())?);
    }
    let first = seeders[0].dir.clone();
    let bootstrap = seeders[0].addr.clone();
    // Every seeder's provider record must be in the DHT before the getter looks.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let p = soak.run_ok(&first, &["providers", &ds.hash])?;
        let n = p["providers"].as_array().map_or(0, Vec::len);
        if n + 1 >= seeders.len() {
            break;
        }
        if Instant::now() > deadline {
            soak.problem(format!(
                "get: only {} of {} seeders found in the DHT after 30 s",
                n + 1,
                seeders.len()
            ));
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let get_args = ["get", ds.hash.as_str(), "--bootstrap", bootstrap.as_str()];

    // A clean fetch: its duration and the bytes the seeders send for one whole copy.
    let measure = soak.scratch.join("get-measure");
    let before = soak.served_by(&seeders)?;
    let f = soak.run(&measure, &get_args, OP_TIMEOUT)?;
    ensure!(f.success(), "clean get failed: {}", f.last_error());
    let clean_sent = soak.served_by(&seeders)? - before;
    let t_get = f.elapsed;
    st.op_secs = t_get.as_secs_f64();
    std::fs::remove_dir_all(&measure)?;

    let store = soak.scratch.join("get");
    let before = soak.served_by(&seeders)?;
    let mut rounds = 0u64;
    while st.kills < args.get_kills {
        for _ in 0..args.kills_per_round {
            if st.kills >= args.get_kills {
                break;
            }
            let delay = soak.delay(t_get);
            let p = soak.spawn(&store, &get_args)?;
            let f = p.kill_after(delay)?;
            soak.check_panic(&f, "killed get");
            st.note_kill(&f);
            if !f.killed && !f.success() {
                soak.problem(format!("get failed by itself: {}", f.last_error()));
            }
            soak.check_store(&store, &mut st, false, &format!("get killed at {delay:?}"))?;
        }
        st.completions += 1;
        let f = soak.run(&store, &get_args, OP_TIMEOUT)?;
        if f.success() {
            st.completed += 1;
        } else {
            soak.problem(format!(
                "get after kills did not complete: {:?} {}",
                f.ended,
                f.last_error()
            ));
        }
        soak.check_store(&store, &mut st, true, "the completed get")?;
        soak.export_matches(&store, &ds.hash, &ds.dir, &mut st)?;
        // Forget it, so the next round fetches the whole dataset again.
        soak.run_ok(&store, &["rm", &ds.hash])?;
        soak.run_ok(&store, &["gc"])?;
        rounds += 1;
    }
    let sent = soak.served_by(&seeders)? - before;
    st.refetch = Some(sent as f64 / (rounds * clean_sent) as f64 - 1.0);
    println!(
        "get: the seeders sent {:.1} MiB for {rounds} whole fetches of {:.1} MiB \
         (a clean fetch: {:.1} MiB sent)",
        sent as f64 / MIB,
        ds.size as f64 / MIB,
        clean_sent as f64 / MIB
    );
    for n in seeders {
        soak.stop_node(n, "seeder")?;
    }
    for i in 0..args.seeders.max(1) {
        std::fs::remove_dir_all(soak.scratch.join(format!("seed-{i}")))?;
    }
    std::fs::remove_dir_all(&store)?;
    st.wall_secs = started.elapsed().as_secs_f64();
    Ok(st)
}

/// One seeder of a dataset of one large file, for the resume measurement and the
/// disk-fault gets (a node's tickets name datasets, not blobs added on their own).
struct FileSeeder {
    /// The dataset's folder.
    folder: PathBuf,
    /// Its one file (also added on its own, as a blob, by the disk-fault adds).
    node: NodeProc,
    file: PathBuf,
    hash: String,
    ticket: String,
    size: u64,
}

fn start_blob_seeder(soak: &mut Soak, args: &Args) -> Result<FileSeeder> {
    let dir = soak.scratch.join("blob-seed");
    node_dir(&dir, Some(args.resume_mib_per_sec))?;
    let folder = soak.scratch.join("one-file-ds");
    std::fs::create_dir_all(&folder)?;
    let file = folder.join("weights.bin");
    let size = args.resume_size_mib << 20;
    write_random_file(&file, size, args.seed * 100 + 7)?;
    let reply = soak.run_ok(&dir, &["add", &s(&folder)])?;
    let hash = hash_of(&reply)?;
    let node = soak.start_node(&dir, None)?;
    let ticket = node.ready["tickets"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["hash"].as_str() == Some(&hash))
        .and_then(|t| t["ticket"].as_str())
        .context("the seeder's ticket for the dataset")?
        .to_string();
    Ok(FileSeeder {
        folder,
        node,
        file,
        hash,
        ticket,
        size,
    })
}

/// The dedicated measurement: kills placed by the seeder's progress, so each lands
/// mid-fetch; re-sent bytes ÷ size.
fn phase_resume(
    soak: &mut Soak,
    args: &Args,
    seeder: &FileSeeder,
) -> Result<(PhaseStats, ResumeStats)> {
    let mut st = PhaseStats::new("resume");
    let started = Instant::now();
    let sdir = seeder.node.dir.clone();
    let get_args = ["get", seeder.ticket.as_str()];

    // What the seeder hands QUIC overstates what a kill costs: it goes on writing to a
    // killed client until the stream's flow-control window is full, and little of that
    // is ever sent. Packets on the wire are the true measure (root: nftables).
    let wire = if is_root() {
        match WireCounter::of_process(seeder.node.proc.pid()) {
            Ok(w) => Some(w),
            Err(e) => {
                println!("resume: bytes on the wire not counted: {e:#}");
                None
            }
        }
    } else {
        None
    };
    let wire_bytes = |w: &Option<WireCounter>| w.as_ref().map(|w| w.bytes()).transpose();
    let measure = soak.scratch.join("resume-measure");
    let before = soak.bytes_served(&sdir)?;
    let wire_before = wire_bytes(&wire)?;
    let f = soak.run(&measure, &get_args, OP_TIMEOUT)?;
    ensure!(f.success(), "clean get failed: {}", f.last_error());
    let clean_sent = soak.bytes_served(&sdir)? - before;
    // Settle: what the seeder still sends after the get ended (acknowledgements) counts.
    std::thread::sleep(Duration::from_secs(1));
    let wire_clean = wire_bytes(&wire)?.zip(wire_before).map(|(a, b)| a - b);
    st.op_secs = f.elapsed.as_secs_f64();
    std::fs::remove_dir_all(&measure)?;

    let store = soak.scratch.join("resume");
    let mut rs = ResumeStats {
        size: seeder.size,
        clean_sent,
        ..Default::default()
    };
    let before = soak.bytes_served(&sdir)?;
    let wire_before = wire_bytes(&wire)?;
    let share = seeder.size as f64 / (args.resume_kills + 1) as f64;
    let mut lost = wire.as_ref().map(|_| (0u64, 0u64));
    for i in 0..args.resume_kills {
        let target = (share * soak.rng.random_range(0.5..1.5)) as u64;
        let run_start = soak.bytes_served(&sdir)?;
        let held_start = if i == 0 { 0 } else { held(soak, &store)? };
        let wire_start = wire_bytes(&wire)?;
        let mut p = soak.spawn(&store, &get_args)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut ended = None;
        loop {
            if let Some(f) = p.try_finish()? {
                ended = Some(f);
                break;
            }
            if soak.bytes_served(&sdir)? - run_start >= target || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let f = match ended {
            Some(f) => f,
            None => p.kill()?,
        };
        if let (Some(lost), Some(start), Some(at_kill)) =
            (lost.as_mut(), wire_start, wire_bytes(&wire)?)
        {
            // What the seeder sends before it notices, and what the store kept of the rest.
            std::thread::sleep(Duration::from_secs(2));
            let after = wire_bytes(&wire)?.unwrap_or(at_kill);
            let kept = held(soak, &store)?.saturating_sub(held_start);
            lost.0 += (at_kill - start).saturating_sub(kept);
            lost.1 += after - at_kill;
        }
        soak.check_panic(&f, "killed get (resume)");
        st.note_kill(&f);
        let progressed = soak.bytes_served(&sdir)? > run_start;
        if f.killed && progressed {
            rs.mid_fetch += 1;
        }
        soak.check_store(&store, &mut st, false, &format!("resume kill {i}"))?;
    }
    rs.kills = st.kills;
    rs.lost = lost;
    st.completions += 1;
    let f = soak.run(&store, &get_args, OP_TIMEOUT)?;
    rs.completed = f.success();
    if f.success() {
        st.completed += 1;
    } else {
        soak.problem(format!("resumed get did not complete: {}", f.last_error()));
    }
    rs.sent = soak.bytes_served(&sdir)? - before;
    std::thread::sleep(Duration::from_secs(1));
    let wire_sent = wire_bytes(&wire)?.zip(wire_before).map(|(a, b)| a - b);
    rs.wire = wire_clean.zip(wire_sent);
    st.refetch = Some(match rs.wire {
        Some((clean, sent)) => sent as f64 / clean as f64 - 1.0,
        None => rs.sent as f64 / clean_sent as f64 - 1.0,
    });
    soak.check_store(&store, &mut st, true, "the completed resumed get")?;
    soak.export_matches(&store, &seeder.hash, &seeder.folder, &mut st)?;
    std::fs::remove_dir_all(&store)?;
    st.wall_secs = started.elapsed().as_secs_f64();
    Ok((st, rs))
}

/// Bytes of its datasets the store at `dir` holds (`ls`).
fn held(soak: &mut Soak, dir: &Path) -> Result<u64> {
    let listing = soak.run_ok(dir, &["ls"])?;
    Ok(listing["datasets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["held"].as_u64())
        .sum())
}

/// Phase 3: `rm` and `unpin` + `gc` killed; a dataset sharing a file must survive whole.
fn phase_rm(
    soak: &mut Soak,
    args: &Args,
    ds: &Dataset,
    space: &mut SpaceStats,
) -> Result<PhaseStats> {
    let mut st = PhaseStats::new("rm/gc");
    let started = Instant::now();
    let store = soak.scratch.join("rmgc");
    // A second dataset sharing `shards/part-00003.bin` with the first.
    let other_dir = soak.scratch.join("shared-ds");
    std::fs::create_dir_all(other_dir.join("shards"))?;
    std::fs::copy(
        ds.dir.join("shards/part-00003.bin"),
        other_dir.join("shards/part-00003.bin"),
    )?;
    std::fs::write(
        other_dir.join("README.md"),
        "shares a file with the soak's dataset\n",
    )?;
    let other = hash_of(&soak.run_ok(&store, &["add", &s(&other_dir)])?)?;
    let src = s(&ds.dir);

    // Clean runs: how long rm, and unpin + gc, take.
    soak.run_ok(&store, &["add", &src])?;
    let f = soak.run(&store, &["rm", &ds.hash], OP_TIMEOUT)?;
    ensure!(f.success(), "clean rm failed: {}", f.last_error());
    let t_rm = f.elapsed;
    soak.run_ok(&store, &["add", &src])?;
    soak.run_ok(&store, &["unpin", &ds.hash])?;
    let f = soak.run(&store, &["gc"], OP_TIMEOUT)?;
    ensure!(f.success(), "clean gc failed: {}", f.last_error());
    let t_gc = f.elapsed;
    st.op_secs = (t_rm.as_secs_f64() + t_gc.as_secs_f64()) / 2.0;
    // What the store holds with only the other dataset, after clean removals.
    space.rm_baseline_data = store_bytes(&store).0;
    println!(
        "rm/gc: rm {:.2} s, gc {:.2} s on a clean run",
        t_rm.as_secs_f64(),
        t_gc.as_secs_f64()
    );

    let mut i = 0usize;
    while st.kills < args.rm_kills {
        soak.run_ok(&store, &["add", &src])?;
        let use_rm = i.is_multiple_of(2);
        let f = if use_rm {
            let delay = soak.delay(t_rm);
            soak.spawn(&store, &["rm", &ds.hash])?.kill_after(delay)?
        } else {
            soak.run_ok(&store, &["unpin", &ds.hash])?;
            let delay = soak.delay(t_gc);
            soak.spawn(&store, &["gc"])?.kill_after(delay)?
        };
        let op = if use_rm { "rm" } else { "gc" };
        soak.check_panic(&f, &format!("killed {op}"));
        st.note_kill(&f);
        if !f.killed && !f.success() {
            soak.problem(format!("{op} failed by itself: {}", f.last_error()));
        }
        soak.check_store(&store, &mut st, true, &format!("{op} killed"))?;
        let listed = |ls: &Value, h: &str| {
            ls["datasets"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|d| d["hash"].as_str() == Some(h))
                .cloned()
        };
        let ls = soak.run_ok(&store, &["ls"])?;
        match listed(&ls, &other) {
            Some(d) if d["complete"] == Value::Bool(true) => {}
            d => {
                st.corrupt += 1;
                soak.problem(format!(
                    "{op} killed: the dataset sharing a file is no longer whole: {d:?}"
                ));
            }
        }
        // Complete the interrupted operation.
        st.completions += 1;
        let still_pinned = listed(&ls, &ds.hash).is_some_and(|d| d["pinned"] == Value::Bool(true));
        let mut ok = true;
        if use_rm && still_pinned {
            ok &= soak.run(&store, &["rm", &ds.hash], OP_TIMEOUT)?.success();
        }
        ok &= soak.run(&store, &["gc"], OP_TIMEOUT)?.success();
        let ls = soak.run_ok(&store, &["ls", "--all"])?;
        let gone = listed(&ls, &ds.hash).is_none();
        let dry = soak.run_ok(&store, &["gc", "--dry-run"])?;
        let nothing_left = dry["blobs"].as_array().is_some_and(Vec::is_empty);
        if ok && gone && nothing_left {
            st.completed += 1;
        } else {
            soak.problem(format!(
                "{op} after a kill did not complete: commands ok {ok}, dataset gone {gone}, \
                 garbage left {dry}"
            ));
        }
        soak.check_store(&store, &mut st, true, &format!("the completed {op}"))?;
        let (data, _) = store_bytes(&store);
        space.rm_cycles += 1;
        space.rm_worst_data = space.rm_worst_data.max(data);
        i += 1;
    }
    // The other dataset is still whole, byte for byte.
    soak.export_matches(&store, &other, &other_dir, &mut st)?;
    // Everything removed: the store must shrink back to a fresh store's size.
    soak.run_ok(&store, &["rm", &other])?;
    soak.run_ok(&store, &["gc"])?;
    let (data, logs) = store_bytes(&store);
    space.final_data = data;
    space.final_logs = logs;
    space.final_disk = dir_bytes(&store);
    if data > space.empty_data + EMPTY_SLACK {
        let copy = soak.keep_evidence(&store, "rm-gc-leak")?;
        soak.problem(format!(
            "rm/gc: with everything removed the store holds {:.1} MiB of data files \
             (a fresh store: {:.1} MiB; copy in {})",
            data as f64 / MIB,
            space.empty_data as f64 / MIB,
            copy.display()
        ));
    }
    std::fs::remove_dir_all(&store)?;
    std::fs::remove_dir_all(&other_dir)?;
    st.wall_secs = started.elapsed().as_secs_f64();
    Ok(st)
}

/// Phase 4: a mirror following a signed name, killed and restarted while it fetches each
/// new version.
fn phase_mirror(soak: &mut Soak, args: &Args) -> Result<PhaseStats> {
    let mut st = PhaseStats::new("mirror");
    let started = Instant::now();
    let pub_dir = soak.scratch.join("publisher");
    node_dir(&pub_dir, Some(args.publisher_mib_per_sec))?;
    let key = soak.run_ok(&pub_dir, &["key", "generate", "lab-x"])?;
    let public = key["public_key"]
        .as_str()
        .context("public key")?
        .to_string();
    // Version 1 is fetched by a fresh mirror, version 2 is the clean update whose duration
    // the kill delays are drawn from, the others are fetched under kills.
    let versions = 2 + args.mirror_kills.div_ceil(MIRROR_KILLS_PER_VERSION).max(1);
    let base_size = (args.size_mib << 20) / 4;
    let new_size = (args.size_mib << 20) / 4;
    let base = soak.scratch.join("mirror-base.bin");
    write_random_file(&base, base_size, args.seed * 1000)?;
    let mut roots = Vec::new();
    let mut folders = Vec::new();
    for v in 1..=versions {
        let dir = soak.scratch.join(format!("corpus-v{v}"));
        std::fs::create_dir_all(&dir)?;
        std::fs::copy(&base, dir.join("base.bin"))?;
        write_random_file(
            &dir.join(format!("new-{v}.bin")),
            new_size,
            args.seed * 1000 + v as u64,
        )?;
        std::fs::write(dir.join("version.json"), format!("{{\"version\": {v}}}\n"))?;
        let root = hash_of(&soak.run_ok(&pub_dir, &["add", &s(&dir)])?)?;
        soak.run_ok(&pub_dir, &["sign", &root, "--key", "lab-x"])?;
        roots.push(root);
        folders.push(dir);
    }
    let publisher = soak.start_node(&pub_dir, None)?;
    let paddr = publisher.addr.clone();
    soak.run_ok(
        &pub_dir,
        &["publish", "lab-x/corpus", &roots[0], "--key", "lab-x"],
    )?;

    let mdir = soak.scratch.join("mirror");
    node_dir(&mdir, None)?;
    let follow = format!("{public}/lab-x/corpus");
    let served0 = soak.bytes_served(&pub_dir)?;
    let mut mirror = soak.start_node(&mdir, Some(&paddr))?;
    soak.run_ok(
        &mdir,
        &["mirror", "add", &follow, "--follow", "--interval", "1"],
    )?;
    let bound = |soak: &mut Soak, root: &str| -> Result<bool> {
        let names = soak.run(&mdir, &["name", "ls"], OP_TIMEOUT)?;
        Ok(names.json().is_some_and(|j| {
            j["names"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|n| n["name"] == "lab-x/corpus" && n["root"].as_str() == Some(root))
        }))
    };
    let wait_bound = |soak: &mut Soak, root: &str, timeout: Duration| -> Result<bool> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if bound(soak, root)? {
                return Ok(true);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(false)
    };
    // A fresh mirror told to follow binds version 1; then version 2, published while it
    // runs, is the clean update: its duration (publication to binding) is the range of the
    // kill delays.
    ensure!(
        wait_bound(soak, &roots[0], Duration::from_secs(120))?,
        "the mirror never bound version 1"
    );
    let v1_sent = soak.bytes_served(&pub_dir)? - served0;
    let overhead = v1_sent as f64 / (base_size + new_size) as f64;
    soak.run_ok(
        &pub_dir,
        &["publish", "lab-x/corpus", &roots[1], "--key", "lab-x"],
    )?;
    let published = Instant::now();
    ensure!(
        wait_bound(soak, &roots[1], Duration::from_secs(120))?,
        "the mirror never bound version 2"
    );
    let t_version = published.elapsed();
    st.op_secs = t_version.as_secs_f64();
    let sent_before = soak.bytes_served(&pub_dir)?;
    let mut expected = 0.0;

    for v in 3..=versions {
        let root = roots[v - 1].clone();
        soak.run_ok(
            &pub_dir,
            &["publish", "lab-x/corpus", &root, "--key", "lab-x"],
        )?;
        let published = Instant::now();
        expected += overhead * new_size as f64;
        let mut first = true;
        for _ in 0..MIRROR_KILLS_PER_VERSION {
            if st.kills >= args.mirror_kills {
                break;
            }
            // The first kill counts from the publication, the others from the restart.
            let delay = soak.delay(t_version);
            let from = if first {
                published
            } else {
                Instant::now() - mirror.proc.age()
            };
            first = false;
            let mut proc = mirror.proc;
            let f = match proc.wait_until(from + delay)? {
                Some(f) => f,
                None => proc.kill()?,
            };
            soak.check_panic(&f, "killed mirror node");
            if !f.killed {
                soak.problem(format!(
                    "the mirror node ended by itself: {}",
                    f.last_error()
                ));
            }
            st.note_kill(&f);
            soak.check_store(&mdir, &mut st, false, &format!("mirror killed (v{v})"))?;
            mirror = soak.start_node(&mdir, Some(&paddr))?;
        }
        st.completions += 1;
        if wait_bound(soak, &root, Duration::from_secs(120))? {
            st.completed += 1;
        } else {
            let ls = soak.run(&mdir, &["mirror", "ls"], OP_TIMEOUT)?;
            soak.problem(format!(
                "the restarted mirror did not bind version {v} within 120 s: {}",
                ls.stdout.trim()
            ));
            continue;
        }
        soak.check_store(&mdir, &mut st, false, &format!("mirror bound v{v}"))?;
        soak.export_matches(&mdir, &root, &folders[v - 1], &mut st)?;
    }
    let sent = soak.bytes_served(&pub_dir)? - sent_before;
    if expected > 0.0 {
        st.refetch = Some(sent as f64 / expected - 1.0);
    }
    soak.stop_node(mirror, "mirror node")?;
    soak.stop_node(publisher, "publisher node")?;
    for dir in folders {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::remove_file(&base)?;
    std::fs::remove_dir_all(&pub_dir)?;
    std::fs::remove_dir_all(&mdir)?;
    st.wall_secs = started.elapsed().as_secs_f64();
    Ok(st)
}

/// How a process met a disk fault.
struct FaultEnd {
    finished: Finished,
    /// Seconds from the fault (or from when the disk was first seen full) to its exit;
    /// `None` when it ended before the disk was seen full.
    secs_after_fault: Option<f64>,
    /// It was still running `error_timeout` after the fault, and was killed.
    hung: bool,
}

/// Watches `p` until it ends; `fault_at` is when the fault happened (set by `is_full` when
/// the disk is first seen full). A process still running `error_timeout` after the fault
/// (or `OP_TIMEOUT` in all) is a hang: it is killed and reported.
fn watch_fault(
    soak: &mut Soak,
    mut p: Proc,
    mut fault_at: Option<Instant>,
    mut is_full: impl FnMut() -> bool,
    what: &str,
) -> Result<FaultEnd> {
    let overall = Instant::now() + OP_TIMEOUT;
    loop {
        if let Some(f) = p.try_finish()? {
            soak.check_panic(&f, what);
            return Ok(FaultEnd {
                finished: f,
                secs_after_fault: fault_at.map(|t| t.elapsed().as_secs_f64()),
                hung: false,
            });
        }
        if fault_at.is_none() && is_full() {
            fault_at = Some(Instant::now());
        }
        let hung = fault_at.is_some_and(|t| t.elapsed() > soak.error_timeout);
        if hung || Instant::now() > overall {
            let f = p.kill()?;
            soak.check_panic(&f, what);
            soak.problem(format!(
                "hang: {what} still ran {} s after the fault (killed)",
                soak.error_timeout.as_secs()
            ));
            return Ok(FaultEnd {
                finished: f,
                secs_after_fault: fault_at.map(|t| t.elapsed().as_secs_f64()),
                hung: true,
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn says_disk_full(f: &Finished) -> bool {
    let text = format!("{} {}", f.stdout, f.stderr).to_lowercase();
    [
        "no space",
        "disk full",
        "disk is full",
        "enospc",
        "storage full",
    ]
    .iter()
    .any(|w| text.contains(w))
}

fn says_io_error(f: &Finished) -> bool {
    let text = format!("{} {}", f.stdout, f.stderr).to_lowercase();
    ["input/output error", "i/o error", "os error 5", "eio"]
        .iter()
        .any(|w| text.contains(w))
}

/// ENOSPC: add and get onto a tmpfs too small, then grown.
fn phase_enospc(
    soak: &mut Soak,
    args: &Args,
    seeder: &FileSeeder,
    rows: &mut Vec<FaultRow>,
) -> Result<PhaseStats> {
    let mut st = PhaseStats::new("ENOSPC");
    let started = Instant::now();
    let mnt = soak.scratch.join("enospc-mnt");
    let tmpfs = Mount::tmpfs(&mnt, args.enospc_mib)?;
    let big = soak.scratch.join("enospc-big.bin");
    write_random_file(&big, (args.enospc_mib * 2) << 20, args.seed * 77)?;
    let big_s = s(&big);
    // (operation, arguments, what it stores, its size, its hash if known)
    let cases: [(&str, Vec<String>, PathBuf, u64, String); 2] = [
        (
            "add",
            vec!["add".into(), big_s.clone()],
            big.clone(),
            (args.enospc_mib * 2) << 20,
            String::new(),
        ),
        (
            "get",
            vec!["get".into(), seeder.ticket.clone()],
            seeder.folder.clone(),
            seeder.size,
            seeder.hash.clone(),
        ),
    ];
    for (name, cmd, source, size, known_hash) in cases {
        let store = mnt.join(name);
        let mut row = FaultRow {
            case: format!(
                "{name} of {} MiB into a {} MiB tmpfs",
                size >> 20,
                args.enospc_mib
            ),
            ..Default::default()
        };
        let argv: Vec<&str> = cmd.iter().map(String::as_str).collect();
        // A get records and pins its dataset before the first file arrives; an add pins it
        // in the batch that binds its data.
        let pinned_complete = name == "add";
        let p = soak.spawn(&store, &argv)?;
        let mnt2 = mnt.clone();
        let end = watch_fault(
            soak,
            p,
            None,
            || free_bytes(&mnt2).is_ok_and(|b| b < FULL_BELOW),
            &format!("{name} onto a full tmpfs"),
        )?;
        let f = end.finished;
        row.secs_to_error = end.secs_after_fault;
        row.hung = end.hung;
        row.total_secs = f.elapsed.as_secs_f64();
        row.error = f.last_error();
        row.panicked = f.panicked();
        row.peak_rss = f.max_rss;
        row.typed = !f.success() && says_disk_full(&f);
        if f.success() {
            soak.problem(format!("ENOSPC {name}: succeeded on a disk too small"));
        } else if !row.typed {
            soak.problem(format!(
                "ENOSPC {name}: the error does not say the disk is full: {}",
                row.error
            ));
        }
        let check = soak.check_store_on(
            &store,
            &mut st,
            pinned_complete,
            &format!("ENOSPC {name}"),
            true,
        )?;
        // Space freed: grow the tmpfs; the store must verify, and the operation complete.
        tmpfs.resize_tmpfs(args.enospc_mib * 6)?;
        row.verify_ok = match check {
            Check::Consistent => "ok".to_string(),
            Check::Corrupt => "**corrupt**".to_string(),
            Check::CannotOpenDiskFull(error) => {
                // Opening replays the log into a table file, which needs space: with the
                // disk full, the store's own "the disk … is full: free some space" is the
                // clear error expected; anything else (RocksDB's raw IO error) is not.
                if !error.contains("free some space") {
                    soak.problem(format!(
                        "ENOSPC {name}: with the disk full, verify cannot open the store \
                         and says so unclearly: {error}"
                    ));
                }
                let again = soak.check_store(
                    &store,
                    &mut st,
                    pinned_complete,
                    &format!("ENOSPC {name}, disk grown"),
                )?;
                if again == Check::Consistent {
                    "says the disk is full until space is freed; then ok".to_string()
                } else {
                    "says the disk is full; **corrupt** once space is freed".to_string()
                }
            }
        };
        st.completions += 1;
        let f = soak.run(&store, &argv, OP_TIMEOUT)?;
        let hash = if known_hash.is_empty() {
            f.json()
                .and_then(|j| j["hash"].as_str().map(str::to_string))
                .unwrap_or_default()
        } else {
            known_hash.clone()
        };
        row.completed_after = soak.completed_after_fault(
            &f,
            (&store, &hash, &source),
            &mut st,
            &format!("ENOSPC {name}"),
            "the disk grew",
        )?;
        std::fs::remove_dir_all(&store)?;
        tmpfs.resize_tmpfs(args.enospc_mib)?;
        rows.push(row);
    }
    drop(tmpfs);
    std::fs::remove_file(&big)?;
    st.wall_secs = started.elapsed().as_secs_f64();
    Ok(st)
}

/// Why device-mapper cannot be used here, if it cannot.
fn device_mapper_unavailable() -> Option<String> {
    match Command::new("dmsetup").arg("targets").output() {
        Err(e) => Some(format!("dmsetup: {e}")),
        Ok(out) if !out.status.success() => Some(
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .next()
                .unwrap_or("dmsetup targets failed")
                .to_string(),
        ),
        Ok(_) => None,
    }
}

/// EIO: the ext4 holding the data dir is shut down mid-add and mid-get.
fn phase_eio(
    soak: &mut Soak,
    args: &Args,
    seeder: &FileSeeder,
    rows: &mut Vec<FaultRow>,
) -> Result<PhaseStats> {
    let mut st = PhaseStats::new("EIO");
    let started = Instant::now();
    let image = soak.scratch.join("eio.img");
    let mnt = soak.scratch.join("eio-mnt");
    let size_mib = (args.resume_size_mib * 3).max(256);
    let mut fs = Mount::ext4_image(&image, &mnt, size_mib)?;
    // (operation, arguments, what it stores: the file as a blob, or the one-file dataset)
    let cases = [
        (
            "add",
            vec!["add".to_string(), s(&seeder.file)],
            seeder.file.clone(),
        ),
        (
            "get",
            vec!["get".to_string(), seeder.ticket.clone()],
            seeder.folder.clone(),
        ),
    ];
    for (name, cmd, source) in cases {
        let argv: Vec<&str> = cmd.iter().map(String::as_str).collect();
        // A clean run on the same file system: its hash, and proof the file system works.
        let measure = mnt.join(format!("{name}-measure"));
        let f = soak.run(&measure, &argv, OP_TIMEOUT)?;
        ensure!(
            f.success(),
            "clean {name} on ext4 failed: {}",
            f.last_error()
        );
        let hash = f
            .json()
            .and_then(|j| j["hash"].as_str().map(str::to_string))
            .context("the hash in the reply")?;
        std::fs::remove_dir_all(&measure)?;
        let store = mnt.join(name);
        let mut row = FaultRow {
            case: format!(
                "{name} of {} MiB, ext4 shut down mid-way",
                seeder.size >> 20
            ),
            ..Default::default()
        };
        let mut faulted = None;
        for _attempt in 0..3 {
            // The fault lands once the store holds a random 20–80 % of the data.
            let target = (seeder.size as f64 * soak.rng.random_range(0.2..0.8)) as u64;
            let mut p = soak.spawn(&store, &argv)?;
            let deadline = Instant::now() + OP_TIMEOUT;
            let mut ended = None;
            while dir_bytes(&store) < target && Instant::now() < deadline {
                if let Some(f) = p.try_finish()? {
                    ended = Some(f);
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            if let Some(f) = ended {
                // Ended before the fault: start again from a fresh store.
                soak.check_panic(&f, name);
                std::fs::remove_dir_all(&store)?;
                continue;
            }
            fs.shutdown()?;
            let when = Instant::now();
            faulted = Some(watch_fault(
                soak,
                p,
                Some(when),
                || false,
                &format!("{name} on a shut-down ext4"),
            )?);
            break;
        }
        let Some(end) = faulted else {
            soak.problem(format!("EIO {name}: ended before the fault three times"));
            continue;
        };
        let f = end.finished;
        row.secs_to_error = end.secs_after_fault;
        row.hung = end.hung;
        row.total_secs = f.elapsed.as_secs_f64();
        row.error = f.last_error();
        row.panicked = f.panicked();
        row.peak_rss = f.max_rss;
        row.typed = !f.success() && says_io_error(&f);
        if f.success() {
            soak.problem(format!(
                "EIO {name}: succeeded on a file system that was shut down"
            ));
        } else if !row.typed {
            soak.problem(format!(
                "EIO {name}: the error does not say I/O error: {}",
                row.error
            ));
        }
        // The disk comes back (journal replayed): the store must verify, then complete.
        fs.remount_image()?;
        // A get records and pins its dataset before the first file arrives; an add pins it
        // in the batch that binds its data.
        let pinned_complete = name == "add";
        row.verify_ok =
            match soak.check_store(&store, &mut st, pinned_complete, &format!("EIO {name}"))? {
                Check::Consistent => "ok".to_string(),
                _ => "**corrupt**".to_string(),
            };
        st.completions += 1;
        let f = soak.run(&store, &argv, OP_TIMEOUT)?;
        row.completed_after = soak.completed_after_fault(
            &f,
            (&store, &hash, &source),
            &mut st,
            &format!("EIO {name}"),
            "the remount",
        )?;
        std::fs::remove_dir_all(&store)?;
        rows.push(row);
    }
    drop(fs);
    std::fs::remove_file(&image)?;
    st.wall_secs = started.elapsed().as_secs_f64();
    Ok(st)
}

fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / MIB)
}

/// `git ARGS` in this repository (the crate's parent folder), whatever the current folder.
fn git(args: &[&str]) -> String {
    Command::new("git")
        .arg("-C")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

#[allow(clippy::too_many_arguments)]
fn report(
    args: &Args,
    phases: &[PhaseStats],
    resume: Option<&ResumeStats>,
    space: &SpaceStats,
    faults: &[FaultRow],
    eio_note: &str,
    problems: &[String],
    total: Duration,
) -> Result<String> {
    let mut md = String::new();
    let commit = git(&["rev-parse", "--short", "HEAD"]);
    let dirty = if git(&["status", "--porcelain", "--untracked-files=no"]).is_empty() {
        ""
    } else {
        " + uncommitted changes"
    };
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    writeln!(
        md,
        "Crash soak, {date}, commit {commit}{dirty}; seed {}, dataset {} MiB{}, {:.0} s in all.\n",
        args.seed,
        args.size_mib,
        if args.quick { " (--quick)" } else { "" },
        total.as_secs_f64()
    )?;
    writeln!(
        md,
        "| phase | operation, clean run (s) | kills | ended before its kill | verify runs | \
         corrupt stores | completed after the kills | exports identical | bytes sent ÷ one \
         clean fetch − 1 | peak RSS of killed processes (MiB) | wall (s) |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|")?;
    let mut kills = 0;
    let mut corrupt = 0;
    for p in phases {
        kills += p.kills;
        corrupt += p.corrupt;
        writeln!(
            md,
            "| {} | {} | {} | {} | {} | **{}** | {}/{} | {}/{} | {} | {} | {:.0} |",
            p.name,
            if p.op_secs > 0.0 {
                format!("{:.2}", p.op_secs)
            } else {
                "–".to_string()
            },
            p.kills,
            p.ended_before_kill,
            p.verify_runs,
            p.corrupt,
            p.completed,
            p.completions,
            p.identical,
            p.compared,
            p.refetch
                .map_or("–".to_string(), |r| format!("{:+.1} %", r * 100.0)),
            if p.kills > 0 {
                mib(p.peak_rss_killed)
            } else {
                "–".to_string()
            },
            p.wall_secs
        )?;
    }
    writeln!(
        md,
        "| **all** | | **{kills}** | | | **{corrupt}** | | | | | {:.0} |\n",
        total.as_secs_f64()
    )?;
    if let Some(r) = resume {
        writeln!(
            md,
            "| resume: {} kills of a get of a {} MiB file (one seeder at {} MiB/s) | value |",
            r.kills,
            r.size >> 20,
            args.resume_mib_per_sec
        )?;
        writeln!(md, "|---|---|")?;
        writeln!(
            md,
            "| kills that landed mid-fetch | {}/{} |",
            r.mid_fetch, r.kills
        )?;
        writeln!(
            md,
            "| bytes sent for one clean fetch | {} MiB |",
            mib(r.clean_sent)
        )?;
        writeln!(
            md,
            "| bytes sent in all (kills + completion) | {} MiB |",
            mib(r.sent)
        )?;
        writeln!(
            md,
            "| handed to QUIC, re-sent ÷ size | {:.2} % |",
            (r.sent as f64 - r.clean_sent as f64) / r.size as f64 * 100.0
        )?;
        if let Some((clean, sent)) = r.wire {
            writeln!(
                md,
                "| on the wire: one clean fetch / in all | {} MiB / {} MiB |",
                mib(clean),
                mib(sent)
            )?;
            writeln!(
                md,
                "| **on the wire, re-sent ÷ one clean fetch** (target ≤ 2 %) | **{:.2} %** |",
                (sent as f64 / clean as f64 - 1.0) * 100.0
            )?;
        }
        if let Some((before, after)) = r.lost {
            let per_kill = |b: u64| b as f64 / r.kills.max(1) as f64 / 1024.0;
            writeln!(
                md,
                "| per kill: sent before it and not held after / sent after it | {:.0} KiB / {:.0} KiB |",
                per_kill(before),
                per_kill(after)
            )?;
        }
        writeln!(
            md,
            "| completed after the kills | {} |\n",
            if r.completed { "yes" } else { "**no**" }
        )?;
    }
    if space.empty_data > 0 {
        writeln!(
            md,
            "| store size | data files (MiB) | RocksDB info logs (MiB) |"
        )?;
        writeln!(md, "|---|---|---|")?;
        writeln!(
            md,
            "| fresh store | {} | {} |",
            mib(space.empty_data),
            mib(space.empty_logs)
        )?;
        if space.add_rounds_checked > 0 {
            writeln!(
                md,
                "| add phase, worst of {} rounds of kills then rm + gc | {} | |",
                space.add_rounds_checked,
                mib(space.add_worst_data)
            )?;
        }
        if space.rm_cycles > 0 {
            writeln!(
                md,
                "| rm/gc phase, only the shared dataset left: after clean removals / worst of \
                 {} completed killed removals | {} / {} | |",
                space.rm_cycles,
                mib(space.rm_baseline_data),
                mib(space.rm_worst_data)
            )?;
        }
        if space.final_disk > 0 {
            writeln!(
                md,
                "| rm/gc phase, everything removed then gc | {} | {} |",
                mib(space.final_data),
                mib(space.final_logs)
            )?;
        }
        writeln!(md)?;
    }
    if !faults.is_empty() || !eio_note.is_empty() {
        writeln!(
            md,
            "| disk fault | error after (s) | says so | panic | verify after | completed after \
             space freed / remount | peak RSS (MiB) | error |"
        )?;
        writeln!(md, "|---|---|---|---|---|---|---|---|")?;
        for r in faults {
            let err: String = r.error.chars().take(160).collect();
            writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | `{}` |",
                r.case,
                match (r.hung, r.secs_to_error) {
                    (true, _) => "**hang**".to_string(),
                    (false, Some(s)) => format!("{s:.1}"),
                    (false, None) => format!("{:.1} after its start", r.total_secs),
                },
                if r.typed { "yes" } else { "**no**" },
                if r.panicked { "**yes**" } else { "no" },
                r.verify_ok,
                if r.completed_after { "yes" } else { "**no**" },
                mib(r.peak_rss),
                err.replace('|', "\\|").replace('`', "'")
            )?;
        }
        if !eio_note.is_empty() {
            writeln!(md, "\n{eio_note}")?;
        }
        writeln!(md)?;
    }
    if problems.is_empty() {
        writeln!(md, "No problem found.")?;
    } else {
        writeln!(md, "Problems found ({}):\n", problems.len())?;
        for p in problems {
            writeln!(md, "- {}", p.replace('\n', " "))?;
        }
    }
    Ok(md)
}

fn main() -> Result<()> {
    let mut args = Args::parse();
    args.apply_quick();
    let started = Instant::now();
    let phases: Vec<&str> = args.phases.split(',').map(str::trim).collect();
    let want = |p: &str| phases.contains(&p);
    let tmp = match &args.scratch {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            None
        }
        None => Some(tempfile::Builder::new().prefix("crash-soak").tempdir()?),
    };
    let scratch = match (&args.scratch, &tmp) {
        (Some(dir), _) => dir.clone(),
        (None, Some(t)) => t.path().to_path_buf(),
        (None, None) => bail!("no scratch folder"),
    };
    let logs = scratch.join("logs");
    std::fs::create_dir_all(&logs)?;
    let mut soak = Soak {
        commons: args.commons.clone(),
        scratch: scratch.clone(),
        logs,
        rng: StdRng::seed_from_u64(args.seed),
        spawned: 0,
        problems: Vec::new(),
        evidence: 0,
        error_timeout: Duration::from_secs(args.error_timeout_secs),
    };
    eprintln!("crash soak in {}", scratch.display());

    let ds_dir = scratch.join("dataset");
    make_dataset(&ds_dir, args.size_mib << 20, args.seed)?;
    let (ds, t_add) = measure_add(&mut soak, &ds_dir)?;
    let (empty_data, empty_logs) = soak.empty_store_bytes()?;
    let mut space = SpaceStats {
        empty_data,
        empty_logs,
        ..Default::default()
    };
    let mut stats = Vec::new();
    let mut resume = None;
    let mut faults = Vec::new();
    let mut eio_note = String::new();

    let mut record = |soak: &mut Soak, name: &str, r: Result<PhaseStats>| match r {
        Ok(st) => {
            eprintln!(
                "{name}: {} kills, {} corrupt, {}/{} completed ({:.0} s)",
                st.kills, st.corrupt, st.completed, st.completions, st.wall_secs
            );
            stats.push(st);
        }
        Err(e) => soak.problem(format!("phase {name} stopped: {e:#}")),
    };
    if want("add") {
        let r = phase_add(&mut soak, &args, &ds, t_add, &mut space);
        record(&mut soak, "add", r);
    }
    if want("get") {
        let r = phase_get(&mut soak, &args, &ds);
        record(&mut soak, "get", r);
    }
    let needs_blob = want("resume") || want("enospc") || want("eio");
    let mut seeder = None;
    if needs_blob {
        match start_blob_seeder(&mut soak, &args) {
            Ok(b) => seeder = Some(b),
            Err(e) => soak.problem(format!("the blob seeder did not start: {e:#}")),
        }
    }
    if let (true, Some(b)) = (want("resume"), &seeder) {
        let r = phase_resume(&mut soak, &args, b).map(|(st, rs)| {
            resume = Some(rs);
            st
        });
        record(&mut soak, "resume", r);
    }
    if want("rm") {
        let r = phase_rm(&mut soak, &args, &ds, &mut space);
        record(&mut soak, "rm/gc", r);
    }
    if want("mirror") {
        let r = phase_mirror(&mut soak, &args);
        record(&mut soak, "mirror", r);
    }
    let root = is_root();
    if let (true, Some(b)) = (want("enospc"), &seeder) {
        if root {
            let r = phase_enospc(&mut soak, &args, b, &mut faults);
            record(&mut soak, "ENOSPC", r);
        } else {
            eio_note.push_str("ENOSPC skipped: mounting a tmpfs needs root. ");
        }
    }
    if let (true, Some(b)) = (want("eio"), &seeder) {
        if root {
            let dm = device_mapper_unavailable();
            if let Some(why) = &dm {
                write!(
                    eio_note,
                    "EIO: no device-mapper error target here ({why}); the data dir's ext4 \
                     (on a loop device) is shut down instead (`EXT4_IOC_SHUTDOWN`, nothing \
                     flushed), after which every I/O on it fails with EIO."
                )?;
            } else {
                write!(
                    eio_note,
                    "EIO: the data dir's ext4 (on a loop device) is shut down \
                     (`EXT4_IOC_SHUTDOWN`, nothing flushed), after which every I/O on it \
                     fails with EIO."
                )?;
            }
            let r = phase_eio(&mut soak, &args, b, &mut faults);
            record(&mut soak, "EIO", r);
        } else {
            eio_note.push_str("EIO skipped: loop devices and mounts need root.");
        }
    }
    if let Some(b) = seeder {
        soak.stop_node(b.node, "blob seeder")?;
    }

    let md = report(
        &args,
        &stats,
        resume.as_ref(),
        &space,
        &faults,
        &eio_note,
        &soak.problems,
        started.elapsed(),
    )?;
    println!("{md}");
    std::fs::write(&args.markdown_out, &md)?;
    eprintln!("report written to {}", args.markdown_out.display());
    let failed = !soak.problems.is_empty();
    if failed || args.keep {
        if let Some(t) = tmp {
            let kept = t.keep();
            eprintln!("scratch kept in {}", kept.display());
        }
    } else {
        let _ = std::fs::remove_dir_all(&soak.logs);
    }
    if failed {
        eprintln!("{} problem(s) found", soak.problems.len());
        std::process::exit(1);
    }
    Ok(())
}
