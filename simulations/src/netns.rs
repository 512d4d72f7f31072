//! Network namespaces joined by one bridge, for experiments on shaped links (needs root).
//! Nodes may sit behind NAT routers ([`Lab::add_nat_site`]).
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

/// How a NAT router maps its LAN's flows to its public address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nat {
    /// One public port per inside socket, whoever it talks to (endpoint-independent
    /// mapping, as most home routers): hole punching can work.
    Cone,
    /// A fresh random port for each destination (`masquerade random,fully-random`): the port
    /// a peer saw is not the one it must send to, so punches fail.
    Symmetric,
}

/// A host behind a NAT router: the router is node `i` on the bridge, the host sits on the
/// LAN `192.168.{i}.0/24` behind it.
#[derive(Debug, Clone)]
pub struct NatSite {
    /// The router's namespace (public address [`Lab::addr`]`(i)`).
    pub router: String,
    /// The host's namespace.
    pub host: String,
    /// The host's (private) address.
    pub host_addr: String,
}

impl Lab {
    /// Adds node `i` as a NAT router of kind `nat` (its uplink capped at `rate_mbit`) and
    /// a host behind it. The router drops every unsolicited inbound packet, to itself too,
    /// as home routers do (without that its own conntrack entries make the far NAT remap
    /// ports and punches fail); with `block_udp` it also drops the LAN's outbound UDP, as
    /// sites that allow only TCP out. Needs `nft` (apt-get install nftables).
    pub fn add_nat_site(
        &mut self,
        i: usize,
        nat: Nat,
        block_udp: bool,
        rate_mbit: Option<u64>,
    ) -> Result<NatSite> {
        let router = self.add_node(i, rate_mbit)?;
        let host = format!("{}-h{i}", self.prefix);
        let (lan_router, lan_host) = (
            format!("{}{i}l", self.prefix),
            format!("{}{i}h", self.prefix),
        );
        ip(&["netns", "add", &host])?;
        self.nodes.push(host.clone());
        ip(&[
            "link",
            "add",
            &lan_router,
            "netns",
            &router,
            "type",
            "veth",
            "peer",
            "name",
            &lan_host,
            "netns",
            &host,
        ])?;
        let (router_addr, host_addr) = (format!("192.168.{i}.1"), format!("192.168.{i}.2"));
        in_ns(
            &router,
            &[
                "ip",
                "addr",
                "add",
                &format!("{router_addr}/24"),
                "dev",
                &lan_router,
            ],
        )?;
        in_ns(&router, &["ip", "link", "set", &lan_router, "up"])?;
        in_ns(
            &host,
            &[
                "ip",
                "addr",
                "add",
                &format!("{host_addr}/24"),
                "dev",
                &lan_host,
            ],
        )?;
        in_ns(&host, &["ip", "link", "set", &lan_host, "up"])?;
        in_ns(&host, &["ip", "link", "set", "lo", "up"])?;
        in_ns(
            &host,
            &["ip", "route", "add", "default", "via", &router_addr],
        )?;
        in_ns(&router, &["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        let wan = self.inside(i);
        let masquerade = match nat {
            Nat::Cone => "masquerade",
            Nat::Symmetric => "masquerade random,fully-random",
        };
        let udp_out = if block_udp {
            format!("iifname \"{lan_router}\" meta l4proto udp drop")
        } else {
            String::new()
        };
        let rules = format!(
            "table ip nat {{
               chain postrouting {{
                 type nat hook postrouting priority 100;
                 oifname \"{wan}\" {masquerade}
               }}
             }}
             table ip filter {{
               chain input {{
                 type filter hook input priority 0; policy drop;
                 iifname \"lo\" accept
                 iifname \"{lan_router}\" accept
                 ct state established,related accept
               }}
               chain forward {{
                 type filter hook forward priority 0; policy drop;
                 {udp_out}
                 iifname \"{lan_router}\" accept
                 ct state established,related accept
               }}
             }}"
        );
        let mut nft = Command::new("ip");
        nft.args(["netns", "exec", &router, "nft", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        let mut child = nft.spawn().context("nft (apt-get install nftables)")?;
        {
            use std::io::Write as _;
            let mut stdin = child.stdin.take().context("nft's stdin")?;
            stdin.write_all(rules.as_bytes())?;
        }
        let out = child.wait_with_output()?;
        ensure!(
            out.status.success(),
            "nft in {router}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(NatSite {
            router,
            host,
            host_addr,
        })
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.nodes.iter().chain(std::iter::once(&self.switch())) {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}
