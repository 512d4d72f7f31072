//! Helpers for the crash soak (`simulations/src/bin/crash_soak.rs`): child processes that
//! can be SIGKILLed at a chosen moment with their peak RSS still measured, deadlines on
//! every wait (a hang is a finding, not a stuck harness), and small file systems whose
//! faults are real: a tmpfs that fills (ENOSPC) and an ext4 image on a loop device that
//! is shut down under a running process (every later I/O fails with EIO).
//!
//! Mounting needs root; everything mounted is unmounted when its guard is dropped, also on
//! failure.

use std::{
    fs::File,
    io::{self, Read, Write},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};

use crate::netns::run;

/// How a child process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// It exited with this status code.
    Exited(i32),
    /// A signal ended it (9: our SIGKILL).
    Signaled(i32),
}

/// What a finished child left: how it ended, how long it ran, its peak RSS and its output.
#[derive(Debug, Clone)]
pub struct Finished {
    /// How it ended.
    pub ended: Ended,
    /// Whether the harness killed it (SIGKILL) rather than it ending by itself.
    pub killed: bool,
    /// Wall-clock time from spawn to the end.
    pub elapsed: Duration,
    /// Peak resident memory (from `wait4`'s rusage, also for a killed process), bytes.
    pub max_rss: u64,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

impl Finished {
    /// Whether it exited by itself with status 0.
    pub fn success(&self) -> bool {
        self.ended == Ended::Exited(0)
    }

    /// Whether it panicked (Rust's panic message on stderr), the one thing that must never
    /// happen whatever the disk or a kill did.
    pub fn panicked(&self) -> bool {
        self.stderr.contains("panicked")
    }

    /// Its stdout parsed as one JSON value (`commons --json` replies), if it is one.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_str(self.stdout.trim()).ok()
    }

    /// Its stderr's last line: the one-line error `commons` ends with.
    pub fn last_error(&self) -> String {
        self.stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim()
            .to_string()
    }
}

/// A running child whose stdout and stderr go to files (no pipe can fill and block it),
/// reaped with `wait4` so its peak RSS is known however it ended. Killed (SIGKILL) when
/// dropped unfinished.
#[derive(Debug)]
pub struct Proc {
    child: Child,
    started: Instant,
    out: PathBuf,
    err: PathBuf,
    reaped: bool,
}

impl Proc {
    /// Starts `cmd`, its output in `<logs>/<label>.out` and `.err`.
    pub fn spawn(mut cmd: Command, logs: &Path, label: &str) -> Result<Proc> {
        let out = logs.join(format!("{label}.out"));
        let err = logs.join(format!("{label}.err"));
        let child = cmd
            .stdin(Stdio::null())
            .stdout(File::create(&out)?)
            .stderr(File::create(&err)?)
            .spawn()
            .with_context(|| format!("spawn {cmd:?}"))?;
        Ok(Proc {
            child,
            started: Instant::now(),
            out,
            err,
            reaped: false,
        })
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Time since it was started.
    pub fn age(&self) -> Duration {
        self.started.elapsed()
    }

    /// Reaps it if it has ended.
    pub fn try_finish(&mut self) -> Result<Option<Finished>> {
        self.reap(libc::WNOHANG)
    }

    /// Waits until it ends or `deadline` passes (then `None`: it still runs).
    pub fn wait_until(&mut self, deadline: Instant) -> Result<Option<Finished>> {
        loop {
            if let Some(done) = self.try_finish()? {
                return Ok(Some(done));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            std::thread::sleep((deadline - now).min(Duration::from_millis(5)));
        }
    }

    /// SIGKILLs it (unless it already ended) and reaps it.
    pub fn kill(mut self) -> Result<Finished> {
        if let Some(done) = self.try_finish()? {
            return Ok(done);
        }
        self.child.kill().context("SIGKILL")?;
        let mut done = self.reap(0)?.context("a killed child is reaped")?;
        done.killed = true;
        Ok(done)
    }

    /// Lets it run for `delay`, then SIGKILLs it; `killed` says whether it was still running.
    pub fn kill_after(mut self, delay: Duration) -> Result<Finished> {
        if let Some(done) = self.wait_until(self.started + delay)? {
            return Ok(done);
        }
        self.kill()
    }

    /// Sends SIGTERM (a clean stop for `commons node run`) and waits up to `timeout`, then
    /// SIGKILLs it.
    pub fn stop(mut self, timeout: Duration) -> Result<Finished> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        if let Some(done) = self.wait_until(Instant::now() + timeout)? {
            return Ok(done);
        }
        self.kill()
    }

    /// The first whole line it printed on stdout, waiting up to `timeout` (`None` if it ended
    /// or the time passed first).
    pub fn first_line(&mut self, timeout: Duration) -> Result<Option<String>> {
        let deadline = Instant::now() + timeout;
        loop {
            let text = std::fs::read_to_string(&self.out).unwrap_or_default();
            if let Some((line, _)) = text.split_once('\n') {
                return Ok(Some(line.to_string()));
            }
            if Instant::now() >= deadline || self.is_zombie() {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether it has ended but is not reaped yet (without reaping it: that is `wait4`'s job,
    /// which alone sees its rusage).
    fn is_zombie(&self) -> bool {
        std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().next().map(|st| st == "Z"))
            })
            .unwrap_or(true)
    }

    fn reap(&mut self, flags: i32) -> Result<Option<Finished>> {
        ensure!(!self.reaped, "already reaped");
        let pid = self.child.id() as libc::pid_t;
        let mut status = 0;
        let mut usage = zeroed_rusage();
        let rc = wait4(pid, &mut status, flags, &mut usage);
        if rc == 0 {
            return Ok(None);
        }
        ensure!(rc == pid, "wait4: {}", io::Error::last_os_error());
        self.reaped = true;
        let ended = if libc::WIFSIGNALED(status) {
            Ended::Signaled(libc::WTERMSIG(status))
        } else {
            Ended::Exited(libc::WEXITSTATUS(status))
        };
        Ok(Some(Finished {
            ended,
            killed: false,
            elapsed: self.started.elapsed(),
            max_rss: usage.ru_maxrss as u64 * 1024,
            stdout: read_lossy(&self.out),
            stderr: read_lossy(&self.err),
        }))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.child.kill();
            let _ = self.reap(0);
        }
    }
}

fn read_lossy(path: &Path) -> String {
    let mut bytes = Vec::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.read_to_end(&mut bytes);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

#[allow(unsafe_code)]
fn zeroed_rusage() -> libc::rusage {
    // SAFETY: an all-zero `rusage` is a valid value of this C struct.
    unsafe { std::mem::zeroed() }
}

#[allow(unsafe_code)]
fn wait4(pid: libc::pid_t, status: &mut i32, flags: i32, usage: &mut libc::rusage) -> libc::pid_t {
    // SAFETY: pointers are to live, exclusively borrowed locals; `pid` is our own child.
    unsafe { libc::wait4(pid, status, flags, usage) }
}

/// Free bytes of the file system holding `path` (for an unprivileged writer).
pub fn free_bytes(path: &Path) -> Result<u64> {
    commons_node::store::free_bytes(path)
        .with_context(|| format!("free space of {}", path.display()))
}

/// Counts the UDP bytes one process sends from the ports it has open now: what really left
/// it, packets on the wire, unlike the node's own `bytes_served`, which counts what it
/// handed to QUIC (a seeder keeps handing a killed client data until its flow-control
/// window is full, most of which is never sent). An nftables table of its own (root),
/// removed when dropped.
pub struct WireCounter {
    table: String,
}

impl WireCounter {
    /// Starts counting what process `pid` sends from its UDP ports.
    pub fn of_process(pid: u32) -> Result<Self> {
        let out = Command::new("ss").args(["-Hunap"]).output().context("ss")?;
        let needle = format!("pid={pid},");
        let ports: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains(&needle))
            .filter_map(|l| {
                l.split_whitespace()
                    .nth(3)?
                    .rsplit(':')
                    .next()
                    .map(String::from)
            })
            .collect();
        ensure!(!ports.is_empty(), "process {pid} has no UDP port open");
        let table = format!("commons_soak_{pid}");
        let rules = format!(
            "table inet {table} {{\n chain out {{\n  type filter hook output priority 0;\n  \
             udp sport {{ {} }} counter\n }}\n}}\n",
            ports.join(", ")
        );
        let mut nft = Command::new("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("nft")?;
        nft.stdin
            .take()
            .context("nft's stdin")?
            .write_all(rules.as_bytes())?;
        let out = nft.wait_with_output()?;
        ensure!(
            out.status.success(),
            "nft: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(Self { table })
    }

    /// Bytes sent so far (IP packets, headers included).
    pub fn bytes(&self) -> Result<u64> {
        let out = Command::new("nft")
            .args(["-j", "list", "table", "inet", &self.table])
            .output()
            .context("nft list")?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("nft's JSON")?;
        v["nftables"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|item| item["rule"]["expr"].as_array())
            .flatten()
            .find_map(|e| e["counter"]["bytes"].as_u64())
            .context("the counter")
    }
}

impl Drop for WireCounter {
    fn drop(&mut self) {
        let _ = Command::new("nft")
            .args(["delete", "table", "inet", &self.table])
            .output();
    }
}

/// Bytes of the regular files under `dir` (recursively; 0 if it does not exist).
pub fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

/// A store folder's size split in two: RocksDB's data (tables, blob files, WAL, manifest,
/// options) and its informational logs (`LOG`, `LOG.old.*`), which grow with the number
/// of times the store was opened, not with what it holds.
pub fn store_bytes(data_dir: &Path) -> (u64, u64) {
    let mut data = 0;
    let mut info_logs = 0;
    if let Ok(entries) = std::fs::read_dir(data_dir.join("store")) {
        for e in entries.flatten() {
            let len = e.metadata().map(|m| m.len()).unwrap_or(0);
            if e.file_name().to_string_lossy().starts_with("LOG") {
                info_logs += len;
            } else {
                data += len;
            }
        }
    }
    (data, info_logs)
}

/// Whether the files under `a` and `b` are the same paths with byte-identical contents.
pub fn same_tree(a: &Path, b: &Path) -> Result<bool> {
    let (fa, fb) = (files_under(a)?, files_under(b)?);
    if fa != fb {
        return Ok(false);
    }
    for rel in &fa {
        if !same_file(&a.join(rel), &b.join(rel))? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Whether two files hold the same bytes.
pub fn same_file(a: &Path, b: &Path) -> Result<bool> {
    let (mut fa, mut fb) = (File::open(a)?, File::open(b)?);
    if fa.metadata()?.len() != fb.metadata()?.len() {
        return Ok(false);
    }
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = read_full(&mut fa, &mut ba)?;
        if read_full(&mut fb, &mut bb[..n])? != n || ba[..n] != bb[..n] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Relative paths of the regular files under `root`, sorted.
fn files_under(root: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).with_context(|| format!("read {}", dir.display()))? {
            let e = e?;
            if e.file_type()?.is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path().strip_prefix(root)?.to_path_buf());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// A file system mounted for an experiment, unmounted when dropped.
#[derive(Debug)]
pub struct Mount {
    dir: PathBuf,
    image: Option<PathBuf>,
    mounted: bool,
}

/// `EXT4_IOC_SHUTDOWN` (`_IOR('X', 125, __u32)`, the same number as XFS's
/// `XFS_IOC_GOINGDOWN`): the file system stops; every later I/O on it fails with EIO.
const EXT4_IOC_SHUTDOWN: libc::c_ulong = 0x8004_587d;
/// Shut down without flushing anything: what was not synced is lost, as on a disk that died.
const EXT4_GOING_FLAGS_NOLOGFLUSH: u32 = 2;

impl Mount {
    /// A tmpfs of `size_mib` MiB on `dir` (created if needed).
    pub fn tmpfs(dir: &Path, size_mib: u64) -> Result<Mount> {
        std::fs::create_dir_all(dir)?;
        run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(dir))?;
        Ok(Mount {
            dir: dir.to_path_buf(),
            image: None,
            mounted: true,
        })
    }

    /// Grows (or shrinks) a tmpfs to `size_mib` MiB in place, keeping its files.
    pub fn resize_tmpfs(&self, size_mib: u64) -> Result<()> {
        run(Command::new("mount")
            .args(["-o", &format!("remount,size={size_mib}m")])
            .arg(&self.dir))
    }

    /// A fresh ext4 file system in the sparse file `image` (`size_mib` MiB) on a loop device,
    /// mounted on `dir`.
    pub fn ext4_image(image: &Path, dir: &Path, size_mib: u64) -> Result<Mount> {
        let _ = std::fs::remove_file(image);
        File::create(image)?.set_len(size_mib << 20)?;
        run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(image))?;
        std::fs::create_dir_all(dir)?;
        let mut m = Mount {
            dir: dir.to_path_buf(),
            image: Some(image.to_path_buf()),
            mounted: false,
        };
        m.mount_image()?;
        Ok(m)
    }

    fn mount_image(&mut self) -> Result<()> {
        let image = self.image.as_ref().context("not an image")?;
        run(Command::new("mount")
            .args(["-t", "ext4", "-o", "loop"])
            .arg(image)
            .arg(&self.dir))?;
        self.mounted = true;
        Ok(())
    }

    /// Shuts the mounted ext4 down at once (`EXT4_IOC_SHUTDOWN`, nothing flushed): from
    /// now on every read and write on it fails with EIO, as on a disk that died.
    pub fn shutdown(&self) -> Result<()> {
        let dir = File::open(&self.dir)?;
        let flags = EXT4_GOING_FLAGS_NOLOGFLUSH;
        ensure!(
            shutdown_ioctl(dir.as_raw_fd(), &flags) == 0,
            "EXT4_IOC_SHUTDOWN: {}",
            io::Error::last_os_error()
        );
        Ok(())
    }

    /// Unmounts and mounts the image again: its journal is replayed, as after a reboot.
    pub fn remount_image(&mut self) -> Result<()> {
        self.unmount()?;
        self.mount_image()
    }

    fn unmount(&mut self) -> Result<()> {
        if !self.mounted {
            return Ok(());
        }
        // A process that was just killed may still hold files for a moment.
        for _ in 0..50 {
            if run(Command::new("umount").arg(&self.dir)).is_ok() {
                self.mounted = false;
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("cannot unmount {}", self.dir.display())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if self.unmount().is_err() {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

#[allow(unsafe_code)]
fn shutdown_ioctl(fd: i32, flags: &u32) -> i32 {
    // SAFETY: `fd` is an open descriptor of the mount point; the ioctl reads one u32 through
    // the pointer, which points to a live borrowed value.
    unsafe { libc::ioctl(fd, EXT4_IOC_SHUTDOWN as _, flags as *const u32) }
}
