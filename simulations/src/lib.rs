//! Shared helpers for Commons benchmarks and experiments: test data, timing, peak memory.

pub mod bittorrent;
pub mod crash;
pub mod dht;
pub mod hub_origin;
pub mod load;
pub mod netns;
pub mod plot;
pub mod scale;

use std::{
    fs::File,
    io::{self, BufRead, BufReader, BufWriter, Write},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};

use rand::{RngCore, SeedableRng};

/// Writes `size` bytes of seeded random (incompressible) data to `path`.
pub fn write_random_file(path: &Path, size: u64, seed: u64) -> io::Result<()> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill_bytes(&mut buf[..n]);
        out.write_all(&buf[..n])?;
        left -= n as u64;
    }
    out.into_inner().map_err(|e| e.into_error())?.sync_all()
}

/// What running a child process cost.
#[derive(Debug, Clone, Copy)]
pub struct RunStats {
    /// Wall-clock time.
    pub elapsed: Duration,
    /// Peak resident memory of the child, in bytes.
    pub max_rss: u64,
    /// CPU time the child spent in user space.
    pub user: Duration,
    /// CPU time the kernel spent for the child.
    pub system: Duration,
}

impl RunStats {
    /// The run with the median time (the upper one of an even count).
    pub fn median(mut runs: Vec<RunStats>) -> RunStats {
        runs.sort_by_key(|s| s.elapsed);
        runs[runs.len() / 2]
    }
}

/// Runs `cmd` to completion, failing unless it exits 0, and measures time and peak RSS.
pub fn run_measured(cmd: &mut Command) -> anyhow::Result<RunStats> {
    let start = Instant::now();
    let child = cmd.spawn()?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: `rusage` is plain old data, and wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe_zeroed_rusage();
    let rc = wait4(pid, &mut status, &mut usage);
    let elapsed = start.elapsed();
    anyhow::ensure!(rc == pid, "wait4 failed: {}", io::Error::last_os_error());
    anyhow::ensure!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{cmd:?} failed with status {status}"
    );
    let secs = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Ok(RunStats {
        elapsed,
        max_rss: usage.ru_maxrss as u64 * 1024,
        user: secs(usage.ru_utime),
        system: secs(usage.ru_stime),
    })
}

#[allow(unsafe_code)]
fn unsafe_zeroed_rusage() -> libc::rusage {
    // SAFETY: an all-zero `rusage` is a valid value of this C struct.
    unsafe { std::mem::zeroed() }
}

#[allow(unsafe_code)]
fn wait4(pid: libc::pid_t, status: &mut i32, usage: &mut libc::rusage) -> libc::pid_t {
    // SAFETY: pointers are to live, exclusively borrowed locals.
    unsafe { libc::wait4(pid, status, 0, usage) }
}

/// The value at fraction `p` (0.5: median, 0.99: p99) of `sorted`, nearest rank; 0 when
/// empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

/// The median of `sorted`: for an even count, the mean of the middle two; NaN when empty.
pub fn median(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// `v` sorted ascending, for [`percentile`] and [`median`].
pub fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

/// Resident memory of process `pid` now and at its peak (`VmRSS`, `VmHWM` of
/// `/proc/<pid>/status`), in bytes; `None` once it has exited.
pub fn memory_of(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map(|kb| kb * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// CPU time (user, system) process `pid` has used so far, from `/proc/<pid>/stat`; `None`
/// once it has exited.
pub fn cpu_of(pid: u32) -> Option<(Duration, Duration)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces), from field 3 on.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<u64>().ok();
    let hz = clock_ticks_per_second();
    let at = |t: u64| Duration::from_nanos(t * 1_000_000_000 / hz);
    // utime and stime are fields 14 and 15 (1-based): 11 and 12 here.
    Some((at(ticks(11)?), at(ticks(12)?)))
}

#[allow(unsafe_code)]
fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf reads a constant of the system.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as u64
    } else {
        100
    }
}

/// Times a closure.
pub fn time<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed())
}

/// Stops the child when dropped (SIGTERM, so nginx takes its workers down too, and a
/// `commons node` saves its state), so no server outlives an experiment.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

/// Starts nginx serving the files of `root` over plain HTTP on `listen` (`ip:port`), its
/// config and pid file in `scratch`; `prefix` runs it through another command (e.g.
/// `ip netns exec <ns>`). One worker, `sendfile` on: the central host Commons replaces.
pub fn start_nginx(
    prefix: &[&str],
    scratch: &Path,
    root: &Path,
    listen: &str,
) -> anyhow::Result<Guard> {
    start_nginx_server(
        prefix,
        scratch,
        &format!("listen {listen}; root {};", root.display()),
    )
}

/// Starts nginx (one worker, `sendfile` on) with one `server { … }` block whose body is
/// `server`; see [`start_nginx`].
pub fn start_nginx_server(prefix: &[&str], scratch: &Path, server: &str) -> anyhow::Result<Guard> {
    let conf = scratch.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "user root; worker_processes 1; daemon off; pid {pid}; error_log /dev/null;
             events {{ worker_connections 256; }}
             http {{ access_log off; sendfile on;
               server {{ {server} }} }}",
            pid = scratch.join("nginx.pid").display(),
        ),
    )?;
    let mut cmd = match prefix.split_first() {
        Some((first, rest)) => {
            let mut cmd = Command::new(first);
            cmd.args(rest).arg("nginx");
            cmd
        }
        None => Command::new("nginx"),
    };
    let child = cmd
        .arg("-c")
        .arg(&conf)
        .arg("-p")
        .arg(scratch)
        .stderr(Stdio::null())
        .spawn()
        .context("nginx (apt-get install nginx)")?;
    std::thread::sleep(std::time::Duration::from_millis(500));
    Ok(Guard(child))
}

/// `commons node run --json` on the store at `dir`, listening on loopback (any port), with
/// or without its bulk endpoint: a seeder for loopback benchmarks.
pub fn loopback_seeder(commons: &Path, dir: &Path, bulk: bool) -> Command {
    let mut cmd = Command::new(commons);
    cmd.arg("--data-dir").arg(dir).args([
        "--json",
        "node",
        "run",
        "--listen",
        "/ip4/127.0.0.1/udp/0/quic-v1",
    ]);
    if !bulk {
        cmd.arg("--no-bulk");
    }
    cmd
}

/// Starts `cmd` and returns it with the first stdout line for which `pick` gives a value.
pub fn start_and_read(
    mut cmd: Command,
    pick: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<(Guard, String)> {
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn()?;
    read_started(child, cmd, pick)
}

/// [`start_and_read`], with the child's stderr (its log) appended to `log`.
pub fn start_and_read_logged(
    mut cmd: Command,
    log: &std::path::Path,
    pick: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<(Guard, String)> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let child = cmd.stdout(Stdio::piped()).stderr(log).spawn()?;
    read_started(child, cmd, pick)
}

fn read_started(
    mut child: std::process::Child,
    cmd: Command,
    pick: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<(Guard, String)> {
    let stdout = child.stdout.take().context("stdout")?;
    let guard = Guard(child);
    for line in BufReader::new(stdout).lines() {
        if let Some(v) = pick(&line?) {
            return Ok((guard, v));
        }
    }
    bail!("{cmd:?} ended without printing what was expected")
}

/// The arguments every benchmark takes: which `commons` to run, and how much data.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// Path to the `commons` binary (release build)
    #[arg(long)]
    pub commons: std::path::PathBuf,
    /// Size of the test file, in MiB
    #[arg(long, default_value_t = 1024)]
    pub size_mib: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        assert_eq!(median(&sorted(vec![9.0, 1.0, 2.0])), 2.0);
        assert_eq!(median(&sorted(vec![9.0, 3.0, 1.0, 2.0])), 2.5);
        assert!(median(&[]).is_nan());
    }
}
