//! The commands that use the network: `node run` and `get`.

use std::{path::Path, process::ExitCode, sync::Arc};

use anyhow::{bail, Context, Result};
use commons_node::{
    daemon::{self, DaemonConfig},
    export, fetch,
    fetch::GetProgress,
    identity,
    net::Host,
    transfer::TransferStats,
};
use commons_protocol::{Ticket, TicketKind};
use indicatif::HumanBytes;
use serde_json::json;

use crate::{
    commands::{open_store, print_json},
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
    fn total(&self, _files: u64, bytes: u64) {
        self.set_length(bytes);
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
    let patterns = include
        .iter()
        .map(|g| glob::Pattern::new(g).with_context(|| format!("invalid --include pattern {g:?}")))
        .collect::<Result<Vec<_>>>()?;
    let store = Arc::new(open_store(data_dir)?);
    let key = identity::load_or_create(data_dir)?;
    let stats = Arc::new(TransferStats::default());
    let bar = Arc::new(Bar::new(json, "fetching"));
    let outcome = runtime()?.block_on(async {
        let host = Host::start(key, &[]).await?;
        let filter = |path: &str| patterns.iter().any(|p| p.matches(path));
        let include: Option<&(dyn Fn(&str) -> bool + Sync)> = if patterns.is_empty() {
            None
        } else {
            Some(&filter)
        };
        fetch::get(&host, &store, &ticket, include, &stats, bar.clone())
            .await
            .map_err(anyhow::Error::from)
    });
    bar.finish();
    let outcome = outcome.with_context(|| format!("cannot get {}", ticket.hash))?;
    let received = stats.total().bytes_received;
    if let Some(dir) = output {
        let filter = |path: &str| patterns.iter().any(|p| p.matches(path));
        let include: Option<&dyn Fn(&str) -> bool> = if patterns.is_empty() {
            None
        } else {
            Some(&filter)
        };
        match ticket.kind {
            TicketKind::Dataset => export::export_dataset(
                &store,
                &ticket.hash,
                dir,
                force,
                include,
                &commons_node::store::NoProgress,
            ),
            TicketKind::Blob => export::export_blob(&store, &ticket.hash, dir, force),
        }
        .with_context(|| format!("fetched {}, but cannot export it", ticket.hash))?;
    }
    if json {
        print_json(json!({
            "hash": ticket.hash.to_string(), "kind": ticket.kind.to_string(),
            "files": outcome.files, "size": outcome.bytes, "bytes_received": received,
        }));
    } else {
        println!(
            "fetched {} {}: {} file{}, {} ({} received, all verified)",
            ticket.kind,
            ticket.hash,
            outcome.files,
            if outcome.files == 1 { "" } else { "s" },
            HumanBytes(outcome.bytes),
            HumanBytes(received),
        );
        if let Some(dir) = output {
            println!("exported to {}", dir.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
