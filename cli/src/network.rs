//! The commands that use the network: `node run` and `get`.

use std::{path::Path, process::ExitCode, sync::Arc};

use anyhow::{bail, Context, Result};
use commons_node::{
    admin::{AdminReply, AdminRequest, ProvidersReport},
    config::ConfigFile,
    daemon::{self, DaemonConfig},
    discovery::{persist::save_net_state, DiscoveryConfig},
    fetch::{self, FetchContext, GetProgress, GetTarget},
    gateway::GatewayConfig,
    identity,
    net::Host,
    ops::{self, Include},
    store::NoProgress,
    transfer::TransferStats,
    Store,
};
use commons_protocol::{Hash, Ticket, TicketKind};
use indicatif::HumanBytes;
use libp2p::Multiaddr;
use serde_json::json;

use crate::{
    commands::{open_store, print_json, running_node, via_node},
    progress::Bar,
};

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// The error a command returns when Ctrl-C or SIGTERM stopped it; `main` exits with 130
/// for it, as shells expect of an interrupted command.
#[derive(Debug)]
pub struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted: what was received is kept; run the same command again to resume")
    }
}

impl std::error::Error for Interrupted {}

/// Runs `work` until it ends or Ctrl-C or SIGTERM stops it (then [`Interrupted`]).
async fn until_interrupted<T>(work: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::select! {
        result = work => result,
        signal = daemon::shutdown_signal() => {
            signal.context("cannot wait for signals")?;
            Err(Interrupted.into())
        }
    }
}

/// Gives SIGINT and SIGTERM their default action back once this process waits for no more
/// signals: tokio keeps its handlers installed after its runtime is gone, which would make
/// Ctrl-C do nothing during what follows a fetch (an export can be long).
#[cfg(unix)]
#[allow(unsafe_code)]
fn restore_default_signals() {
    // SAFETY: SIG_DFL is a valid disposition for both signals; no handler of ours runs
    // after this point (the runtime that installed them has been dropped).
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_DFL);
        libc::signal(libc::SIGTERM, libc::SIG_DFL);
    }
}

#[cfg(not(unix))]
fn restore_default_signals() {}

fn parse_addrs(list: &[String], what: &str) -> Result<Vec<Multiaddr>> {
    list.iter()
        .map(|a| {
            a.parse()
                .with_context(|| format!("invalid {what} address {a:?} (expected a multiaddr such as /ip4/203.0.113.5/udp/4433/quic-v1/p2p/12D3Koo…)"))
        })
        .collect()
}

/// `node run`'s flags, which add to (or override) the config file.
pub struct RunFlags {
    pub listen: Vec<String>,
    pub bootstrap: Vec<String>,
    pub dht_mode: Option<String>,
    pub external_addrs: Vec<String>,
    pub mdns: bool,
    pub no_bulk: bool,
}

pub fn node_run(
    data_dir: &Path,
    config: Option<&Path>,
    flags: &RunFlags,
    json: bool,
) -> Result<ExitCode> {
    let file = ConfigFile::load(config, data_dir)?;
    let mut discovery = file.discovery();
    discovery
        .bootstrap
        .extend(parse_addrs(&flags.bootstrap, "bootstrap")?);
    discovery
        .external_addrs
        .extend(parse_addrs(&flags.external_addrs, "external")?);
    discovery.mdns |= flags.mdns;
    discovery.bulk &= !flags.no_bulk;
    if let Some(mode) = &flags.dht_mode {
        discovery.mode = mode.parse().map_err(anyhow::Error::msg)?;
    }
    let listen = if !flags.listen.is_empty() {
        parse_addrs(&flags.listen, "listen")?
    } else if !file.listen.is_empty() {
        file.listen.clone()
    } else {
        daemon::default_listen_addrs()
    };
    let datasets = {
        let store = open_store(data_dir)?;
        store.datasets()?
    };
    let config = DaemonConfig {
        data_dir: data_dir.to_path_buf(),
        listen,
        discovery,
        gateway: file.gateway.as_ref().map(|g| GatewayConfig {
            listen: g.listen,
            fetch_missing: g.fetch_missing,
        }),
        mirror: file.mirror.datasets.clone(),
        limits: file.transfer_limits(),
        quota: file.storage.quota_bytes(),
        metrics: file.metrics.as_ref().map(|m| m.listen),
    };
    runtime()?.block_on(daemon::run(config, |ready| {
        let daemon::Ready {
            peer,
            addrs,
            gateway,
            metrics,
            bulk,
        } = ready;
        let providers: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
        let tickets: Vec<(String, String)> = datasets
            .iter()
            .map(|(root, _)| {
                let ticket = Ticket {
                    kind: TicketKind::Dataset,
                    hash: *root,
                    providers: providers.clone(),
                };
                (root.to_string(), ticket.to_string())
            })
            .collect();
        if json {
            print_json(json!({
                "peer_id": peer.to_string(),
                "addrs": providers,
                "tickets": tickets.iter().map(|(h, t)| json!({"hash": h, "ticket": t})).collect::<Vec<_>>(),
                "gateway": gateway.map(|a| format!("http://{a}")),
                "metrics": metrics.map(|a| format!("http://{a}/metrics")),
                "bulk": bulk.map(|a| a.to_string()),
            }));
        } else {
            println!("peer id: {peer}");
            for a in &providers {
                println!("listening on: {a}");
            }
            if let Some(addr) = bulk {
                println!("bulk data (UDP): {addr}");
            }
            for (hash, ticket) in &tickets {
                println!("serving dataset {hash}\n  ticket: {ticket}");
            }
            if let Some(addr) = gateway {
                println!("HTTP gateway: http://{addr}");
            }
            if let Some(addr) = metrics {
                println!("metrics: http://{addr}/metrics");
            }
            println!("press Ctrl-C to stop");
        }
        // Tests and scripts read these lines while the node keeps running.
        let _ = std::io::Write::flush(&mut std::io::stdout());
    }))
    .context("the node stopped with an error")?;
    Ok(ExitCode::SUCCESS)
}

/// The discovery settings of a one-shot command: the config file's bootstrap peers and
/// `--bootstrap`, as a DHT client (it asks, then leaves).
fn one_shot_discovery(
    data_dir: &Path,
    config: Option<&Path>,
    bootstrap: &[String],
) -> Result<DiscoveryConfig> {
    let file = ConfigFile::load(config, data_dir)?;
    let mut peers = file.discovery().bootstrap;
    peers.extend(parse_addrs(bootstrap, "bootstrap")?);
    Ok(DiscoveryConfig {
        query_timeout: file.discovery().query_timeout,
        bulk: file.discovery().bulk,
        ..DiscoveryConfig::client(peers)
    })
}

/// Starts a client host for one command; with `join`, joins the DHT first (through the
/// bootstrap peers and those saved by earlier runs), failing with the reason if it cannot.
async fn one_shot_host(
    store: &Store,
    data_dir: &Path,
    discovery: &DiscoveryConfig,
    join: bool,
) -> Result<Host> {
    let key = identity::load_or_create(data_dir)?;
    let host = Host::start(key, &[], discovery).await?;
    host.restore_state(store.load_net_state()?).await?;
    if join {
        let report = host.bootstrap(&discovery.bootstrap).await?;
        for (addr, reason) in &report.failed {
            tracing::warn!("bootstrap peer {addr} did not answer: {reason}");
        }
    }
    Ok(host)
}

/// Progress of `get` on a bar: bytes received against the total.
impl GetProgress for Bar {
    fn total(&self, files: u64, bytes: u64) {
        self.set_length(bytes);
        self.set_files(files);
    }
    fn file_done(&self) {
        Bar::file_done(self);
    }
    fn already_have(&self, bytes: u64) {
        self.inc(bytes);
    }
    fn received(&self, bytes: u64) {
        self.inc(bytes);
    }
    fn peers(&self, n: usize) {
        self.set_peers(n as u64);
    }
}

/// `get`'s arguments.
pub struct GetArgs<'a> {
    pub target: &'a str,
    pub bootstrap: &'a [String],
    pub output: Option<&'a Path>,
    pub include: &'a [String],
    pub force: bool,
}

pub fn get(data_dir: &Path, config: Option<&Path>, args: &GetArgs, json: bool) -> Result<ExitCode> {
    let target = GetTarget::parse(args.target)?;
    let patterns = Include::parse(args.include).map_err(anyhow::Error::msg)?;
    let bar = Arc::new(Bar::new(json, "fetching"));
    let outcome = if let Some(node) = running_node(data_dir) {
        let request = AdminRequest::Get {
            target: args.target.trim().to_string(),
            include: args.include.to_vec(),
        };
        // The call blocks on the node's socket: it runs on a thread of its own, so a signal
        // can end this process, which closes the socket, and the node stops the fetch.
        let (tx, rx) = tokio::sync::oneshot::channel();
        let thread_bar = bar.clone();
        std::thread::spawn(move || {
            let _ = tx.send(via_node(node, &request, &thread_bar));
        });
        let reply = runtime()?.block_on(until_interrupted(async {
            rx.await
                .context("the call to the running node ended unexpectedly")?
        }));
        bar.finish();
        restore_default_signals();
        match reply? {
            AdminReply::Got(outcome) => outcome,
            other => bail!("the running node gave an unexpected answer: {other:?}"),
        }
    } else {
        let discovery = one_shot_discovery(data_dir, config, args.bootstrap)?;
        let store = Arc::new(open_store(data_dir)?);
        let fetched = runtime()?.block_on(async {
            // A ticket's providers are enough to start; a bare hash needs the DHT.
            let host = one_shot_host(&store, data_dir, &discovery, target.providers.is_empty())
                .await
                .with_context(|| format!("cannot look up {}", target.hash))?;
            let limits = ConfigFile::load(config, data_dir)?.transfer_limits();
            let ctx = FetchContext::new(host.clone(), store.clone(), None)
                .with_stats(Arc::new(TransferStats::limited(limits)));
            // On a runtime worker rather than this (main) thread: `block_on` would make a
            // third busy thread on two workers' cores (a 1 GiB fetch took ~5 % longer).
            let fetch = tokio::spawn({
                let (ctx, target, patterns) = (ctx.clone(), target.clone(), patterns.clone());
                let progress = bar.clone();
                async move { fetch::get(&ctx, &target, &patterns, progress).await }
            });
            let stop_fetch = fetch.abort_handle();
            let result = until_interrupted(async {
                fetch
                    .await
                    .context("the fetch ended unexpectedly")?
                    .with_context(|| format!("cannot get {}", target.hash))
            })
            .await;
            stop_fetch.abort();
            save_net_state(&host, &store).await;
            result
        });
        bar.finish();
        restore_default_signals();
        // Spans of large blobs skip the WAL: put what this run received on disk, whatever
        // its outcome, so a rerun resumes from it.
        store.persist_spans().context("cannot flush the store")?;
        fetched?
    };
    if let Some(dir) = args.output {
        if let Some(node) = running_node(data_dir) {
            let request = AdminRequest::Export {
                target: target.hash.to_string(),
                dest: std::path::absolute(dir).context("invalid destination")?,
                force: args.force,
                include: args.include.to_vec(),
            };
            match via_node(node, &request, &Bar::new(true, ""))? {
                AdminReply::Exported { .. } => {}
                other => bail!("the running node gave an unexpected answer: {other:?}"),
            }
        } else {
            let store = open_store(data_dir)?;
            ops::export(
                &store,
                &target.hash,
                dir,
                args.force,
                &patterns,
                &NoProgress,
            )
            .with_context(|| format!("fetched {}, but cannot export it", target.hash))?;
        }
    }
    if json {
        print_json(json!({
            "hash": outcome.hash.to_string(), "kind": outcome.kind.to_string(),
            "files": outcome.files, "size": outcome.size, "bytes_received": outcome.bytes_received,
            "requests": outcome.requests, "bulk_requests": outcome.bulk_requests,
            "dropped": outcome.dropped,
        }));
    } else {
        println!(
            "fetched {} {}: {} file{}, {} ({} received, all verified)",
            outcome.kind,
            outcome.hash,
            outcome.files,
            if outcome.files == 1 { "" } else { "s" },
            HumanBytes(outcome.size),
            HumanBytes(outcome.bytes_received),
        );
        for peer in &outcome.dropped {
            println!("dropped provider {peer}: it sent data that failed verification");
        }
        if let Some(dir) = args.output {
            println!("exported to {}", dir.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn providers(
    data_dir: &Path,
    config: Option<&Path>,
    hash: &str,
    bootstrap: &[String],
    json: bool,
) -> Result<ExitCode> {
    let hash: Hash = hash
        .trim()
        .parse()
        .map_err(|_| anyhow::anyhow!("{hash:?} is not a full hash (64 hex characters)"))?;
    let report = if let Some(node) = running_node(data_dir) {
        match via_node(node, &AdminRequest::Providers { hash }, &Bar::new(true, ""))? {
            AdminReply::ProvidersFound(report) => report,
            other => bail!("the running node gave an unexpected answer: {other:?}"),
        }
    } else {
        let discovery = one_shot_discovery(data_dir, config, bootstrap)?;
        let store = Arc::new(open_store(data_dir)?);
        runtime()?.block_on(async {
            let host = one_shot_host(&store, data_dir, &discovery, true)
                .await
                .with_context(|| format!("cannot look up {hash}"))?;
            let report = ProvidersReport::look_up(&host, hash).await;
            save_net_state(&host, &store).await;
            report.with_context(|| format!("cannot look up {hash}"))
        })?
    };
    if json {
        print_json(serde_json::to_value(&report)?);
    } else if report.providers.is_empty() {
        println!(
            "no provider of {hash} found ({} DHT requests)",
            report.cost.requests
        );
    } else {
        println!(
            "{} provider{} of {hash}:",
            report.providers.len(),
            if report.providers.len() == 1 { "" } else { "s" }
        );
        for p in &report.providers {
            println!("  {}", p.peer_id);
            for a in &p.addrs {
                println!("    {a}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The node running on `data_dir`, for commands that only a running node can answer.
fn required_node(data_dir: &Path) -> Result<commons_node::admin::AdminClient> {
    running_node(data_dir).with_context(|| {
        format!(
            "no node is running on {}: start one with `commons node run`",
            data_dir.display()
        )
    })
}

pub fn node_stats(data_dir: &Path, json: bool) -> Result<ExitCode> {
    let node = required_node(data_dir)?;
    let peers = match via_node(node, &AdminRequest::Stats, &Bar::new(true, ""))? {
        AdminReply::Stats { peers } => peers,
        other => bail!("the running node gave an unexpected answer: {other:?}"),
    };
    if json {
        print_json(serde_json::to_value(&peers)?);
    } else if peers.is_empty() {
        println!("no data exchanged with any peer since the node started");
    } else {
        println!(
            "{:<54} {:>10} {:>10} {:>8} {:>8} {:>4}",
            "peer", "sent", "received", "served", "asked", "bad"
        );
        for p in &peers {
            println!(
                "{:<54} {:>10} {:>10} {:>8} {:>8} {:>4}",
                p.peer_id,
                HumanBytes(p.bytes_sent).to_string(),
                HumanBytes(p.bytes_received).to_string(),
                p.requests_served,
                p.requests_made,
                p.bad_responses
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn node_status(data_dir: &Path, json: bool) -> Result<ExitCode> {
    let node = required_node(data_dir)?;
    let s = match via_node(node, &AdminRequest::Status, &Bar::new(true, ""))? {
        AdminReply::Status(status) => status,
        other => bail!("the running node gave an unexpected answer: {other:?}"),
    };
    if json {
        print_json(serde_json::to_value(&s)?);
        return Ok(ExitCode::SUCCESS);
    }
    let hours = s.uptime_secs as f64 / 3600.0;
    println!(
        "peer id:   {} (DHT {}, up {hours:.1} h)",
        s.peer_id, s.dht_mode
    );
    println!(
        "peers:     {} connected, {} in the routing table",
        s.connected_peers, s.routing_table
    );
    println!(
        "data:      {} datasets, {} blobs ({} complete), {} pinned",
        s.datasets, s.blobs, s.complete_blobs, s.pinned
    );
    println!(
        "traffic:   {} served ({} requests), {} fetched, {} bad responses",
        HumanBytes(s.bytes_served),
        s.requests_served,
        HumanBytes(s.bytes_fetched),
        s.bad_responses
    );
    let quota = match s.quota_bytes {
        Some(q) => format!(
            "of a {} quota ({:.0} %)",
            HumanBytes(q),
            s.stored_bytes as f64 * 100.0 / q.max(1) as f64
        ),
        None => "(no quota)".into(),
    };
    println!(
        "disk:      {} stored {quota}; {} on disk",
        HumanBytes(s.stored_bytes),
        HumanBytes(s.disk_bytes)
    );
    if let Some(gw) = &s.gateway {
        println!("gateway:   {gw}");
    }
    Ok(ExitCode::SUCCESS)
}

pub fn node_peers(data_dir: &Path, json: bool) -> Result<ExitCode> {
    let node = required_node(data_dir)?;
    let status = match via_node(node, &AdminRequest::Peers, &Bar::new(true, ""))? {
        AdminReply::Network(status) => status,
        other => bail!("the running node gave an unexpected answer: {other:?}"),
    };
    if json {
        print_json(serde_json::to_value(&status)?);
    } else {
        println!("peer id: {}", status.peer_id);
        println!("dht mode: {}", status.dht_mode);
        println!("routing table: {} peers", status.routing_table);
        println!("provider records held: {} keys", status.provider_keys);
        println!("connected: {} peers", status.connected.len());
        for p in &status.connected {
            println!("  {p}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
