//! One function per subcommand: open the store, call the node library, print the result.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{bail, Context, Result};
use commons_node::{
    admin::{AdminClient, AdminReply, AdminRequest},
    config::ConfigFile,
    export::ExportReport,
    ops::{self, AddOutcome, Listing, VerifyReport},
    Store, StoreOptions,
};
use commons_protocol::Hash;
use indicatif::HumanBytes;
use serde_json::json;

use crate::{progress::Bar, Cli, Command, NodeCommand};

/// Runs the parsed command; `Ok` carries the exit code (verify fails with 1 on corruption).
pub fn run(cli: Cli) -> Result<ExitCode> {
    let data_dir = match (cli.data_dir, cli.config.as_deref()) {
        (Some(dir), _) => dir,
        // A config file named explicitly may say where the data lives.
        (None, Some(file)) => match ConfigFile::load(Some(file), Path::new(""))?.data_dir {
            Some(dir) => dir,
            None => data_dir(None)?,
        },
        (None, None) => data_dir(None)?,
    };
    let json = cli.json;
    let config = cli.config.as_deref();
    match cli.command {
        Command::Add { path, name } => add(&data_dir, &path, name, json),
        Command::Ls { all, pinned } => ls(&data_dir, all, pinned, json),
        Command::Pin { target } => crate::names::pin(&data_dir, &target, true, json),
        Command::Unpin { target } => crate::names::pin(&data_dir, &target, false, json),
        Command::Name(command) => crate::names::name(&data_dir, command, json),
        Command::Export { target, dir, force } => export(&data_dir, &target, &dir, force, json),
        Command::Verify { target } => verify(&data_dir, target.as_deref(), json),
        Command::Rm { target } => rm(&data_dir, &target, json),
        Command::Gc { dry_run, quota_gib } => {
            let quota = quota_gib.map(|g| (g * 1024.0 * 1024.0 * 1024.0) as u64);
            gc(&data_dir, dry_run, quota, json)
        }
        Command::Node(NodeCommand::Id) => node_id(&data_dir, json),
        Command::Node(NodeCommand::Run {
            listen,
            bootstrap,
            dht_mode,
            external_addr,
            mdns,
            no_bulk,
        }) => {
            let flags = crate::network::RunFlags {
                listen,
                bootstrap,
                dht_mode,
                external_addrs: external_addr,
                mdns,
                no_bulk,
            };
            crate::network::node_run(&data_dir, config, &flags, json)
        }
        Command::Node(NodeCommand::Peers) => crate::network::node_peers(&data_dir, json),
        Command::Node(NodeCommand::Stats) => crate::network::node_stats(&data_dir, json),
        Command::Node(NodeCommand::Status) => crate::network::node_status(&data_dir, json),
        Command::Get {
            target,
            bootstrap,
            output,
            include,
            force,
        } => {
            let get = crate::network::GetArgs {
                target: &target,
                bootstrap: &bootstrap,
                output: output.as_deref(),
                include: &include,
                force,
            };
            crate::network::get(&data_dir, config, &get, json)
        }
        Command::Providers { hash, bootstrap } => {
            crate::network::providers(&data_dir, config, &hash, &bootstrap, json)
        }
    }
}

/// `--data-dir`, else `COMMONS_DATA_DIR` (both via clap), else the XDG data dir.
fn data_dir(given: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(dir) = given {
        return Ok(dir);
    }
    directories::ProjectDirs::from("", "", "commons")
        .map(|d| d.data_dir().to_path_buf())
        .context("no home folder found: pass --data-dir or set COMMONS_DATA_DIR")
}

/// Opens the store directly (no node is running on it).
pub fn open_store(data_dir: &std::path::Path) -> Result<Store> {
    match Store::open(data_dir.join("store"), StoreOptions::default()) {
        Ok(store) => Ok(store),
        Err(commons_node::StoreError::InUse { .. }) => bail!(
            "the store in {} is in use by another commons process",
            data_dir.display()
        ),
        Err(e) => {
            Err(e).with_context(|| format!("cannot open the store in {}", data_dir.display()))
        }
    }
}

/// Turns a hash, unique hash prefix or ticket into a hash the store knows.
fn resolve(store: &Store, target: &str) -> Result<Hash> {
    Ok(ops::resolve(store, target)?)
}

pub fn print_json(value: serde_json::Value) {
    println!("{value}");
}

/// The running node on `data_dir`, if any: commands then go through its admin socket.
pub fn running_node(data_dir: &std::path::Path) -> Option<AdminClient> {
    AdminClient::connect(data_dir)
}

/// Sends `request` to a running node, showing its progress on `bar`.
pub fn via_node(client: AdminClient, request: &AdminRequest, bar: &Bar) -> Result<AdminReply> {
    let reply = client.call(request, |total, advance, peers| {
        if let Some(total) = total {
            bar.set_length(total);
        }
        if let Some(peers) = peers {
            bar.set_peers(peers);
        }
        bar.inc(advance);
    });
    bar.finish();
    Ok(reply?)
}

pub fn unexpected(reply: AdminReply) -> anyhow::Error {
    anyhow::anyhow!("the running node gave an unexpected answer: {reply:?}")
}

fn add(
    data_dir: &std::path::Path,
    path: &std::path::Path,
    name: Option<String>,
    json: bool,
) -> Result<ExitCode> {
    if let Some(name) = &name {
        // Checked before the (possibly long) import, not after it.
        commons_protocol::NameRef::parse(name)?;
    }
    let bar = Bar::new(json, "adding");
    let outcome = if let Some(node) = running_node(data_dir) {
        let path =
            std::path::absolute(path).with_context(|| format!("cannot add {}", path.display()))?;
        let request = AdminRequest::Add {
            path,
            name: name.clone(),
        };
        match via_node(node, &request, &bar)? {
            AdminReply::Added(outcome) => outcome,
            other => return Err(unexpected(other)),
        }
    } else {
        std::fs::metadata(path).with_context(|| format!("cannot add {}", path.display()))?;
        let store = open_store(data_dir)?;
        let outcome = ops::add(&store, path, Vec::new(), &bar)
            .with_context(|| format!("cannot add {}", path.display()))?;
        bar.finish();
        if let Some(name) = &name {
            ops::set_name(&store, name, &outcome.hash.to_string()).map_err(anyhow::Error::msg)?;
        }
        outcome
    };
    let AddOutcome {
        kind,
        hash,
        files,
        size,
        new_blobs,
        ticket,
    } = outcome;
    if json {
        print_json(json!({
            "kind": kind.to_string(), "hash": hash.to_string(), "ticket": ticket,
            "files": files, "size": size, "new_blobs": new_blobs, "name": name,
        }));
    } else {
        println!(
            "added {kind} {}: {files} file{}, {} ({new_blobs} new blob{})",
            path.display(),
            if files == 1 { "" } else { "s" },
            HumanBytes(size),
            if new_blobs == 1 { "" } else { "s" },
        );
        println!("hash:   {hash}");
        println!("ticket: {ticket}");
        if let Some(name) = &name {
            println!("name:   {name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn state_word(complete: bool) -> &'static str {
    if complete {
        "complete"
    } else {
        "partial"
    }
}

/// "complete", or "partial 49 %" for a dataset whose fetch has not finished.
fn dataset_state(d: &ops::DatasetEntry) -> String {
    if d.complete {
        return state_word(true).to_string();
    }
    // Rounded down, so a dataset missing one byte never shows 100 %.
    let percent = (d.held as u128 * 100)
        .checked_div(d.size as u128)
        .unwrap_or(0);
    format!("{} {percent} %", state_word(false))
}

fn ls(data_dir: &std::path::Path, all: bool, pinned: bool, json: bool) -> Result<ExitCode> {
    let listing = if let Some(node) = running_node(data_dir) {
        match via_node(node, &AdminRequest::List { all }, &Bar::new(true, ""))? {
            AdminReply::Listed(listing) => listing,
            other => return Err(unexpected(other)),
        }
    } else {
        ops::list(&open_store(data_dir)?, all)?
    };
    let Listing {
        mut datasets,
        mut blobs,
    } = listing;
    if pinned {
        datasets.retain(|d| d.pinned);
        blobs.retain(|b| b.pinned);
    }
    if json {
        print_json(json!({
            "datasets": datasets.iter().map(|d| json!({
                "hash": d.hash.to_string(), "files": d.files, "size": d.size,
                "complete": d.complete, "held": d.held, "pinned": d.pinned,
            })).collect::<Vec<_>>(),
            "blobs": blobs.iter().map(|b| json!({
                "hash": b.hash.to_string(), "size": b.size, "state": state_word(b.complete),
                "pinned": b.pinned,
            })).collect::<Vec<_>>(),
        }));
        return Ok(ExitCode::SUCCESS);
    }
    if datasets.is_empty() && blobs.is_empty() {
        if pinned {
            println!("nothing is pinned: garbage collection may remove everything stored");
        } else {
            println!("the store is empty: add something with `commons add <path>`");
        }
        return Ok(ExitCode::SUCCESS);
    }
    if !datasets.is_empty() {
        println!("datasets:");
        for d in &datasets {
            println!(
                "  {}  {:>7} files  {:>11}  {:<12}  {}",
                d.hash,
                d.files,
                HumanBytes(d.size).to_string(),
                dataset_state(d),
                if d.pinned { "pinned" } else { "" },
            );
        }
    }
    if !blobs.is_empty() {
        println!("blobs:");
        for b in &blobs {
            println!(
                "  {}  {:>11}  {:<8}  {}",
                b.hash,
                HumanBytes(b.size).to_string(),
                state_word(b.complete),
                if b.pinned { "pinned" } else { "" },
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn export(
    data_dir: &std::path::Path,
    target: &str,
    dir: &std::path::Path,
    force: bool,
    json: bool,
) -> Result<ExitCode> {
    let bar = Bar::new(json, "exporting");
    let (hash, outcome) = if let Some(node) = running_node(data_dir) {
        let request = AdminRequest::Export {
            target: target.to_string(),
            dest: std::path::absolute(dir).context("invalid destination")?,
            force,
            include: Vec::new(),
        };
        match via_node(node, &request, &bar)? {
            AdminReply::Exported { hash, outcome } => (hash, outcome),
            other => return Err(unexpected(other)),
        }
    } else {
        let store = open_store(data_dir)?;
        let hash = resolve(&store, target)?;
        let outcome = ops::export(&store, &hash, dir, force, &ops::Include::default(), &bar)
            .with_context(|| format!("cannot export {hash}"))?;
        bar.finish();
        (hash, outcome)
    };
    print_export(&hash, &outcome, dir, json);
    Ok(ExitCode::SUCCESS)
}

/// Prints what an export wrote.
pub fn print_export(hash: &Hash, outcome: &ExportReport, dir: &std::path::Path, json: bool) {
    if json {
        print_json(json!({
            "hash": hash.to_string(),
            "files": outcome.files.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            "bytes": outcome.bytes,
        }));
    } else {
        println!(
            "exported {hash}: {} file{}, {} (verified) to {}",
            outcome.files.len(),
            if outcome.files.len() == 1 { "" } else { "s" },
            HumanBytes(outcome.bytes),
            dir.display()
        );
    }
}

fn verify(data_dir: &std::path::Path, target: Option<&str>, json: bool) -> Result<ExitCode> {
    let bar = Bar::new(json, "verifying");
    let report = if let Some(node) = running_node(data_dir) {
        let request = AdminRequest::Verify {
            target: target.map(str::to_string),
        };
        match via_node(node, &request, &bar)? {
            AdminReply::Verified(report) => report,
            other => return Err(unexpected(other)),
        }
    } else {
        let store = open_store(data_dir)?;
        let hash = target.map(|t| resolve(&store, t)).transpose()?;
        let report = ops::verify(&store, hash.as_ref(), &bar)?;
        bar.finish();
        report
    };
    let VerifyReport {
        checked_blobs,
        checked_bytes,
        problems,
        partial_blobs,
    } = &report;
    if json {
        print_json(json!({
            "checked_blobs": checked_blobs, "checked_bytes": checked_bytes,
            "partial_blobs": partial_blobs,
            "corrupt": problems.iter().map(|p| json!({
                "blob": p.blob.to_string(),
                "start": p.range.as_ref().map(|r| r.start),
                "end": p.range.as_ref().map(|r| r.end),
                "missing": p.range.is_none(),
                "files": p.files,
            })).collect::<Vec<_>>(),
        }));
    } else {
        for p in problems {
            let files = if p.files.is_empty() {
                String::new()
            } else {
                format!(" (file {})", p.files.join(", "))
            };
            match &p.range {
                Some(r) => println!(
                    "CORRUPT blob {}{files}: bytes {}..{} ({}) fail verification",
                    p.blob,
                    r.start,
                    r.end,
                    HumanBytes(r.end - r.start)
                ),
                None => println!("MISSING blob {}{files}: not in the store", p.blob),
            }
        }
        let summary = if problems.is_empty() {
            "all intact".to_string()
        } else {
            format!(
                "{} problem{} found",
                problems.len(),
                if problems.len() == 1 { "" } else { "s" }
            )
        };
        println!(
            "checked {checked_blobs} blobs ({}): {summary}",
            HumanBytes(*checked_bytes)
        );
        if *partial_blobs > 0 {
            println!(
                "not checked: {partial_blobs} partly fetched blob{} (each 16 KiB was \
                 verified on arrival; run `commons get` again to finish)",
                if *partial_blobs == 1 { "" } else { "s" }
            );
        }
    }
    Ok(if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn rm(data_dir: &std::path::Path, target: &str, json: bool) -> Result<ExitCode> {
    let (hash, report) = if let Some(node) = running_node(data_dir) {
        let request = AdminRequest::Remove {
            target: target.to_string(),
        };
        match via_node(node, &request, &Bar::new(true, ""))? {
            AdminReply::Removed { hash, report } => (hash, report),
            other => return Err(unexpected(other)),
        }
    } else {
        let store = open_store(data_dir)?;
        let hash = resolve(&store, target)?;
        let report = store
            .remove(&hash)
            .with_context(|| format!("cannot remove {hash}"))?;
        (hash, report)
    };
    let kind = if report.was_dataset {
        "dataset"
    } else {
        "blob"
    };
    if json {
        print_json(json!({
            "hash": hash.to_string(), "kind": kind,
            "removed_blobs": report.gc.removed.len(), "freed_bytes": report.gc.bytes(),
            "kept_shared": report.kept_shared,
        }));
    } else {
        println!(
            "removed {kind} {hash}: {} blob{} ({}) deleted",
            report.gc.removed.len(),
            if report.gc.removed.len() == 1 {
                ""
            } else {
                "s"
            },
            HumanBytes(report.gc.bytes())
        );
        if report.kept_shared > 0 {
            println!(
                "kept {} blob{} still used by other pinned data",
                report.kept_shared,
                if report.kept_shared == 1 { "" } else { "s" }
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn gc(
    data_dir: &std::path::Path,
    dry_run: bool,
    quota: Option<u64>,
    json: bool,
) -> Result<ExitCode> {
    let report = if let Some(node) = running_node(data_dir) {
        match via_node(
            node,
            &AdminRequest::Gc { dry_run, quota },
            &Bar::new(true, ""),
        )? {
            AdminReply::Collected(report) => report,
            other => return Err(unexpected(other)),
        }
    } else {
        let store = open_store(data_dir)?;
        match quota {
            Some(q) => store.gc_to_quota(q, dry_run)?,
            None => store.gc(dry_run)?,
        }
    };
    if json {
        print_json(json!({
            "dry_run": dry_run,
            "blobs": report.removed.iter().map(|(h, s)| json!({"hash": h.to_string(), "size": s})).collect::<Vec<_>>(),
            "bytes": report.bytes(),
            "stored_bytes": report.stored_bytes,
            "over_quota": report.over_quota,
        }));
    } else {
        let verb = if dry_run { "would remove" } else { "removed" };
        for (h, size) in &report.removed {
            println!("{verb} {h}  {}", HumanBytes(*size));
        }
        println!(
            "{verb} {} blob{} ({})",
            report.removed.len(),
            if report.removed.len() == 1 { "" } else { "s" },
            HumanBytes(report.bytes())
        );
        if report.over_quota > 0 {
            println!(
                "pinned data alone is {} over the quota: unpin something to make room",
                HumanBytes(report.over_quota)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn node_id(data_dir: &std::path::Path, json: bool) -> Result<ExitCode> {
    let key = commons_node::identity::load_or_create(data_dir)?;
    let peer_id = key.public().to_peer_id();
    if json {
        print_json(json!({ "peer_id": peer_id.to_string() }));
    } else {
        println!("{peer_id}");
    }
    Ok(ExitCode::SUCCESS)
}
