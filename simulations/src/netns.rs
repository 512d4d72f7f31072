//! Network namespaces joined by one bridge, for experiments on shaped links (needs root).
//!
//! The bridge lives in a namespace of its own, so the host's firewall never sees the traffic.
//! Each node gets a namespace `{prefix}-{i}`, a veth to the bridge and the address
//! `{subnet}.{i}/24`; its uplink (the veth's egress inside the node) can be capped with
//! `tbf`. Everything is deleted when the [`Lab`] is dropped, also on failure, and namespaces
//! a crashed run left behind (same prefix) when the next lab starts.

use std::process::Command;

use anyhow::{ensure, Context, Result};

/// Runs `cmd` to completion, failing (with its stderr) unless it exits 0.
pub fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("{cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Runs `ip` with `args`.
pub fn ip(args: &[&str]) -> Result<()> {
    run(Command::new("ip").args(args))
}

/// Runs the command `args` inside namespace `ns`.
pub fn in_ns(ns: &str, args: &[&str]) -> Result<()> {
    run(Command::new("ip").args(["netns", "exec", ns]).args(args))
}

/// Whether this process runs as root (namespaces, veth and `tc` need it).
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// The namespaces: created by [`Lab::new`] and [`Lab::add_node`], deleted (with their
/// links) on drop.
#[derive(Debug)]
pub struct Lab {
    prefix: String,
    subnet: String,
    nodes: Vec<String>,
}

impl Lab {
    /// Deletes every namespace whose name starts with `prefix` (left by a crashed run).
    fn cleanup_stale(prefix: &str) {
        let out = Command::new("ip").args(["netns", "list"]).output();
        if let Ok(out) = out {
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                if let Some(name) = line.split_whitespace().next() {
                    if name.starts_with(prefix) {
                        let _ = ip(&["netns", "del", name]);
                    }
                }
            }
        }
    }

    /// A lab whose namespaces and interfaces are named after `prefix` (at most 10
    /// characters, distinct from other labs' so they can run side by side), its nodes
    /// addressed `{subnet}.{i}` (`subnet`: the first three bytes, e.g. `10.77.0`). Creates
    /// the bridge's namespace.
    pub fn new(prefix: &str, subnet: &str) -> Result<Self> {
        ensure!(
            !prefix.is_empty() && prefix.len() <= 10,
            "lab prefix {prefix:?}: 1 to 10 characters (interface names are 15 at most)"
        );
        Self::cleanup_stale(prefix);
        let lab = Self {
            prefix: prefix.to_string(),
            subnet: subnet.to_string(),
            nodes: Vec::new(),
        };
        let switch = lab.switch();
        ip(&["netns", "add", &switch])?;
        in_ns(&switch, &["ip", "link", "add", "br0", "type", "bridge"])?;
        in_ns(&switch, &["ip", "link", "set", "br0", "up"])?;
        Ok(lab)
    }

    /// The bridge's namespace.
    fn switch(&self) -> String {
        format!("{}-sw", self.prefix)
    }

    /// The namespace of node `i`.
    pub fn ns(&self, i: usize) -> String {
        format!("{}-{i}", self.prefix)
    }

    /// The address of node `i` (without prefix length).
    pub fn addr(&self, i: usize) -> String {
        format!("{}.{i}", self.subnet)
    }

    /// Node `i`'s interface inside its namespace.
    fn inside(&self, i: usize) -> String {
        format!("{}{i}i", self.prefix)
    }

    /// Adds node `i` (1 to 254) to the bridge, its uplink capped at `rate_mbit` Mbit/s if
    /// given; returns its namespace.
    pub fn add_node(&mut self, i: usize, rate_mbit: Option<u64>) -> Result<String> {
        ensure!((1..=254).contains(&i), "node {i}: 1 to 254");
        let ns = self.ns(i);
        let (outside, inside) = (format!("{}{i}o", self.prefix), self.inside(i));
        let switch = self.switch();
        ip(&["netns", "add", &ns])?;
        self.nodes.push(ns.clone());
        ip(&[
            "link", "add", &outside, "netns", &switch, "type", "veth", "peer", "name", &inside,
            "netns", &ns,
        ])?;
        in_ns(
            &switch,
            &["ip", "link", "set", &outside, "master", "br0", "up"],
        )?;
        let addr = format!("{}/24", self.addr(i));
        in_ns(&ns, &["ip", "addr", "add", &addr, "dev", &inside])?;
        in_ns(&ns, &["ip", "link", "set", &inside, "up"])?;
        in_ns(&ns, &["ip", "link", "set", "lo", "up"])?;
        if let Some(rate) = rate_mbit {
            let rate = format!("{rate}mbit");
            in_ns(
                &ns,
                &[
                    "tc", "qdisc", "add", "dev", &inside, "root", "tbf", "rate", &rate, "burst",
                    "256kb", "latency", "100ms",
                ],
            )?;
        }
        Ok(ns)
    }

    /// Bytes node `i` has sent on its link so far (headers included).
    pub fn tx_bytes(&self, i: usize) -> Result<u64> {
        let path = format!("/sys/class/net/{}/statistics/tx_bytes", self.inside(i));
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns(i), "cat", &path])
            .output()?;
        ensure!(out.status.success(), "reading {path} in {}", self.ns(i));
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .with_context(|| format!("{path} in {}", self.ns(i)))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.nodes.iter().chain(std::iter::once(&self.switch())) {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}
