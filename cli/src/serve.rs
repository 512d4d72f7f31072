//! `commons node run` (the daemon, in the foreground) and `commons node id`: the two
//! commands that are not requests to a node.

use std::{path::Path, process::ExitCode};

use anyhow::{Context, Result};
use commons_node::{
    daemon, identity,
    node::{NodeFlags, NodeSettings},
};
use commons_protocol::{Ticket, TicketKind};
use serde_json::json;

/// Runs the node until Ctrl-C or SIGTERM, printing once it is ready what others need to
/// reach it (PeerId, addresses, a ticket per dataset, the gateway).
pub fn node_run(
    data_dir: &Path,
    config: Option<&Path>,
    flags: &NodeFlags,
    json: bool,
) -> Result<ExitCode> {
    let settings = NodeSettings::load(data_dir, config, flags)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime
        .block_on(daemon::run(settings, |ready| {
            let daemon::Ready {
                peer,
                addrs,
                gateway,
                metrics,
                bulk,
                datasets,
            } = ready;
            let providers: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
            let tickets: Vec<(String, String)> = datasets
                .iter()
                .map(|root| {
                    let ticket = Ticket {
                        kind: TicketKind::Dataset,
                        hash: *root,
                        providers: providers.clone(),
                    };
                    (root.to_string(), ticket.to_string())
                })
                .collect();
            if json {
                println!(
                    "{}",
                    json!({
                        "peer_id": peer.to_string(),
                        "addrs": providers,
                        "tickets": tickets.iter().map(|(h, t)| json!({"hash": h, "ticket": t})).collect::<Vec<_>>(),
                        "gateway": gateway.map(|a| format!("http://{a}")),
                        "metrics": metrics.map(|a| format!("http://{a}/metrics")),
                        "bulk": bulk.map(|a| a.to_string()),
                    })
                );
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

/// Prints this node's PeerId (its key is created on first use).
pub fn node_id(data_dir: &Path, json: bool) -> Result<ExitCode> {
    let key = identity::load_or_create(data_dir)?;
    let peer_id = key.public().to_peer_id();
    if json {
        println!("{}", json!({ "peer_id": peer_id.to_string() }));
    } else {
        println!("{peer_id}");
    }
    Ok(ExitCode::SUCCESS)
}
