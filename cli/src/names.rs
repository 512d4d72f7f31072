//! `pin`, `unpin` and `name set/ls/rm`: what a node keeps, and what it calls it.

use std::{path::Path, process::ExitCode};

use anyhow::Result;
use commons_node::{
    admin::{AdminReply, AdminRequest},
    ops,
    store::NameEntry,
};
use serde_json::json;

use crate::{
    commands::{open_store, print_json, running_node, unexpected, via_node},
    progress::Bar,
    NameCommand,
};

/// Asks the running node, or runs `local` on the store when no node runs.
fn on_node_or_store(
    data_dir: &Path,
    request: AdminRequest,
    local: impl FnOnce(&commons_node::Store) -> Result<AdminReply, String>,
) -> Result<AdminReply> {
    match running_node(data_dir) {
        Some(node) => via_node(node, &request, &Bar::new(true, "")),
        None => local(&open_store(data_dir)?).map_err(anyhow::Error::msg),
    }
}

/// `commons pin` / `commons unpin`.
pub fn pin(data_dir: &Path, target: &str, pin: bool, json: bool) -> Result<ExitCode> {
    let request = AdminRequest::Pin {
        target: target.to_string(),
        pin,
    };
    let outcome = match on_node_or_store(data_dir, request, |store| {
        ops::set_pinned(store, target, pin).map(AdminReply::PinChanged)
    })? {
        AdminReply::PinChanged(outcome) => outcome,
        other => return Err(unexpected(other)),
    };
    if json {
        print_json(
            json!({ "hash": outcome.hash.to_string(), "pinned": pin, "changed": outcome.changed }),
        );
    } else {
        let (verb, already) = if pin {
            ("pinned", "was already pinned")
        } else {
            ("unpinned", "was not pinned")
        };
        if outcome.changed {
            println!("{verb} {}", outcome.hash);
        } else {
            println!("{} {already}", outcome.hash);
        }
        if !pin {
            println!("it stays stored until garbage collection (`commons gc`) needs the space");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `commons name set/ls/rm`.
pub fn name(data_dir: &Path, command: NameCommand, json: bool) -> Result<ExitCode> {
    match command {
        NameCommand::Set { name, target } => {
            let request = AdminRequest::NameSet {
                name: name.clone(),
                target: target.clone(),
            };
            let entry = match on_node_or_store(data_dir, request, |store| {
                ops::set_name(store, &name, &target).map(AdminReply::Named)
            })? {
                AdminReply::Named(entry) => entry,
                other => return Err(unexpected(other)),
            };
            if json {
                print_json(entry_json(&entry));
            } else {
                println!(
                    "{}@{} → {} (pinned)",
                    entry.name, entry.revision, entry.root
                );
            }
        }
        NameCommand::Ls => {
            let names = match on_node_or_store(data_dir, AdminRequest::Names, |store| {
                store
                    .names()
                    .map(|names| AdminReply::NamesListed { names })
                    .map_err(|e| e.to_string())
            })? {
                AdminReply::NamesListed { names } => names,
                other => return Err(unexpected(other)),
            };
            if json {
                print_json(json!({ "names": names.iter().map(entry_json).collect::<Vec<_>>() }));
            } else if names.is_empty() {
                println!("no names: bind one with `commons name set org/name <hash>`");
            } else {
                for e in &names {
                    println!("{:<40}  {}", format!("{}@{}", e.name, e.revision), e.root);
                }
            }
        }
        NameCommand::Rm { name } => {
            let request = AdminRequest::NameRm { name: name.clone() };
            let existed = match on_node_or_store(data_dir, request, |store| {
                ops::unset_name(store, &name).map(|existed| AdminReply::Unnamed { existed })
            })? {
                AdminReply::Unnamed { existed } => existed,
                other => return Err(unexpected(other)),
            };
            if !existed {
                anyhow::bail!("no name {name} is bound on this node (see `commons name ls`)");
            }
            if json {
                print_json(json!({ "name": name, "removed": true }));
            } else {
                println!("removed the name {name}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn entry_json(e: &NameEntry) -> serde_json::Value {
    json!({ "name": e.name.as_str(), "revision": e.revision, "root": e.root.to_string(), "set_at": e.set_at })
}
