//! The commands that use the network: `node run` and `get`.

use std::{path::Path, process::ExitCode, sync::Arc};

use anyhow::{bail, Context, Result};
use commons_node::{
    admin::{AdminReply, AdminRequest},
    daemon::{self, DaemonConfig},
    fetch,
    fetch::GetProgress,
    identity,
    net::Host,
    ops::{self, Include},
    store::NoProgress,
    transfer::TransferStats,
};
use commons_protocol::{Ticket, TicketKind};
use indicatif::HumanBytes;
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

pub fn node_run(data_dir: &Path, listen: &[String], json: bool) -> Result<ExitCode> {
    let listen = if listen.is_empty() {
        daemon::default_listen_addrs()
    } else {
        listen
            .iter()
            .map(|a| {
                a.parse()
                    .with_context(|| format!("invalid listen address {a:?}"))
            })
            .collect::<Result<_>>()?
    };
    let datasets = {
        let store = open_store(data_dir)?;
        store.datasets()?
    };
    let config = DaemonConfig {
        data_dir: data_dir.to_path_buf(),
        listen,
    };
    runtime()?.block_on(daemon::run(config, |peer, addrs| {
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
            }));
        } else {
            println!("peer id: {peer}");
            for a in &providers {
                println!("listening on: {a}");
            }
            for (hash, ticket) in &tickets {
                println!("serving dataset {hash}\n  ticket: {ticket}");
            }
            println!("press Ctrl-C to stop");
        }
        // Tests and scripts read these lines while the node keeps running.
        let _ = std::io::Write::flush(&mut std::io::stdout());
    }))
    .context("the node stopped with an error")?;
    Ok(ExitCode::SUCCESS)
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
}

pub fn get(
    data_dir: &Path,
    ticket: &str,
    output: Option<&Path>,
    include: &[String],
    force: bool,
    json: bool,
) -> Result<ExitCode> {
    let ticket: Ticket = ticket.parse().context("invalid ticket")?;
    if ticket.providers.is_empty() {
        bail!("the ticket names no provider; fetching by hash alone needs discovery, which is not built yet");
    }
    let patterns = Include::parse(include).map_err(anyhow::Error::msg)?;
    let bar = Arc::new(Bar::new(json, "fetching"));
    let outcome = if let Some(node) = running_node(data_dir) {
        let request = AdminRequest::Get {
            ticket: ticket.to_string(),
            include: include.to_vec(),
        };
        match via_node(node, &request, &bar)? {
            AdminReply::Got(outcome) => outcome,
            other => bail!("the running node gave an unexpected answer: {other:?}"),
        }
    } else {
        let store = Arc::new(open_store(data_dir)?);
        let key = identity::load_or_create(data_dir)?;
        let stats = Arc::new(TransferStats::default());
        let fetched = runtime()?.block_on(async {
            let host = Host::start(key, &[]).await?;
            fetch::get(&host, &store, &ticket, &patterns, &stats, bar.clone())
                .await
                .map_err(anyhow::Error::from)
        });
        bar.finish();
        fetched.with_context(|| format!("cannot get {}", ticket.hash))?
    };
    if let Some(dir) = output {
        if let Some(node) = running_node(data_dir) {
            let request = AdminRequest::Export {
                target: ticket.hash.to_string(),
                dest: std::path::absolute(dir).context("invalid destination")?,
                force,
                include: include.to_vec(),
            };
            match via_node(node, &request, &Bar::new(true, ""))? {
                AdminReply::Exported { .. } => {}
                other => bail!("the running node gave an unexpected answer: {other:?}"),
            }
        } else {
            let store = open_store(data_dir)?;
            ops::export(&store, &ticket.hash, dir, force, &patterns, &NoProgress)
                .with_context(|| format!("fetched {}, but cannot export it", ticket.hash))?;
        }
    }
    if json {
        print_json(json!({
            "hash": outcome.hash.to_string(), "kind": outcome.kind.to_string(),
            "files": outcome.files, "size": outcome.size, "bytes_received": outcome.bytes_received,
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
        if let Some(dir) = output {
            println!("exported to {}", dir.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
