//! BitTorrent baselines with Debian's `aria2c`, `mktorrent` and `opentracker`: the peer-to-peer
//! tool Commons is compared with on the same shaped links.
//!
//! Every command takes a `prefix` (e.g. `ip netns exec <ns>`) so it runs inside a lab's
//! namespace. DHT, local peer discovery and peer exchange are off: the tracker alone
//! introduces peers, as the lab's closed network requires.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{ensure, Context, Result};

use crate::Guard;

/// Whether `aria2c`, `mktorrent` and `opentracker` are installed.
pub fn available() -> bool {
    ["aria2c", "mktorrent", "opentracker"].iter().all(|tool| {
        Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

fn command(prefix: &[&str], program: &str) -> Command {
    match prefix.split_first() {
        Some((first, rest)) => {
            let mut cmd = Command::new(first);
            cmd.args(rest).arg(program);
            cmd
        }
        None => Command::new(program),
    }
}

/// Options every aria2c here shares: the tracker is the only source of peers.
const ARIA2_COMMON: &[&str] = &[
    "--enable-dht=false",
    "--enable-dht6=false",
    "--bt-enable-lpd=false",
    "--enable-peer-exchange=false",
    "--file-allocation=none",
    "--summary-interval=0",
    "--console-log-level=warn",
    "--listen-port=6881",
];

/// Makes `torrent` for `file` (1 MiB pieces) announcing to `tracker`; returns its info hash.
pub fn make_torrent(file: &Path, tracker: &str, torrent: &Path) -> Result<String> {
    let out = Command::new("mktorrent")
        .args(["-l", "20", "-a", tracker, "-o"])
        .arg(torrent)
        .arg(file)
        .output()
        .context("mktorrent")?;
    ensure!(
        out.status.success(),
        "mktorrent: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let show = Command::new("aria2c").arg("-S").arg(torrent).output()?;
    String::from_utf8_lossy(&show.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("Info Hash: ").map(|h| h.trim().to_string()))
        .context("aria2c -S printed no info hash")
}

/// Starts opentracker on `ip`:6969 (TCP and UDP), serving only `info_hash` (Debian's build
/// needs a whitelist). It refuses to run as root: it chroots into `dir` and drops to
/// `nobody`, so the whitelist is written there and named from inside the chroot.
pub fn start_tracker(prefix: &[&str], ip: &str, info_hash: &str, dir: &Path) -> Result<Guard> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    let whitelist = dir.join("whitelist");
    std::fs::write(&whitelist, format!("{info_hash}\n"))?;
    std::fs::set_permissions(&whitelist, std::fs::Permissions::from_mode(0o644))?;
    let mut child = command(prefix, "opentracker")
        .args(["-i", ip, "-p", "6969", "-P", "6969", "-d"])
        .arg(dir)
        .args(["-w", "/whitelist"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("opentracker")?;
    std::thread::sleep(Duration::from_millis(300));
    ensure!(
        child.try_wait()?.is_none(),
        "opentracker stopped at once (run it by hand to see why)"
    );
    Ok(Guard(child))
}

/// Starts aria2c seeding `torrent` from `dir` (which holds the file) until stopped.
pub fn start_seed(prefix: &[&str], torrent: &Path, dir: &Path) -> Result<Guard> {
    let child = command(prefix, "aria2c")
        .args(ARIA2_COMMON)
        .args([
            "--seed-ratio=0.0",
            "--bt-seed-unverified=true",
            "--check-integrity=false",
        ])
        .arg("-d")
        .arg(dir)
        .arg(torrent)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("aria2c")?;
    Ok(Guard(child))
}

/// Downloads `torrent` into `dir` and stops as soon as it is complete; returns the time.
pub fn download(prefix: &[&str], torrent: &Path, dir: &Path) -> Result<Duration> {
    let start = Instant::now();
    let out = command(prefix, "aria2c")
        .args(ARIA2_COMMON)
        // Gives up after a minute without a byte, instead of waiting forever.
        .args(["--seed-time=0", "--bt-max-peers=0", "--bt-stop-timeout=60"])
        .arg("-d")
        .arg(dir)
        .arg(torrent)
        .output()
        .context("aria2c")?;
    let elapsed = start.elapsed();
    ensure!(
        out.status.success(),
        "aria2c download failed: {}",
        String::from_utf8_lossy(&out.stdout).trim()
    );
    Ok(elapsed)
}
