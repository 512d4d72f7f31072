//! Each subcommand as one request to the node: get a [`Client`] once (the node running on
//! the data dir, else one opened in this process), call it, print the reply (as text, or
//! serialized with `--json`). No command knows where the node is.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
};

use anyhow::{Context, Result};
use commons_node::{
    api::{self, ApiError, Call, Client, ErrorKind, ProgressEvent, ProgressSink, RemoteNode},
    config::ConfigFile,
    node::{Node, NodeFlags, NodeSettings},
};
use serde::Serialize;

use crate::{
    progress::Bar, render, serve, BundleCommand, Cli, Command, KeyCommand, MirrorCommand,
    NameCommand, NodeCommand,
};

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

/// `--data-dir`, else `COMMONS_DATA_DIR` (both via clap), else a config file's
/// `data_dir`, else the XDG data dir.
fn data_dir(cli: &Cli) -> Result<PathBuf> {
    if let Some(dir) = &cli.data_dir {
        return Ok(dir.clone());
    }
    if let Some(file) = cli.config.as_deref() {
        if let Some(dir) = ConfigFile::load(Some(file), Path::new(""))?.data_dir {
            return Ok(dir);
        }
    }
    directories::ProjectDirs::from("", "", "commons")
        .map(|d| d.data_dir().to_path_buf())
        .context("no home folder found: pass --data-dir or set COMMONS_DATA_DIR")
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// How a command reaches the node, and prints.
struct Session {
    client: Client,
    runtime: tokio::runtime::Runtime,
    json: bool,
    /// The admin socket this process serves while its in-process node holds the store, so
    /// `ls`, `verify` and the rest work meanwhile (through this process); removed at close.
    serving: Option<PathBuf>,
}

impl Session {
    /// The node running on `data_dir`, else (unless `running_only`) one opened here.
    fn open(
        data_dir: &Path,
        config: Option<&Path>,
        flags: &NodeFlags,
        running_only: bool,
        json: bool,
    ) -> Result<Self> {
        let runtime = runtime()?;
        let mut serving = None;
        let client = match RemoteNode::find(data_dir) {
            Some(remote) => Client::Remote(remote),
            None if running_only => {
                return Err(ApiError::new(
                    ErrorKind::NotRunning,
                    format!(
                        "no node is running on {}: start one with `commons node run`",
                        data_dir.display()
                    ),
                )
                .into())
            }
            None => {
                let node = Node::open(NodeSettings::load(data_dir, config, flags)?)?;
                // This process holds the store now: listings on this data dir go through
                // it meanwhile (other commands are told to wait). Without a socket (a
                // read-only data dir) they are refused as before.
                let _entered = runtime.enter();
                match commons_node::admin::bind_admin(data_dir) {
                    Ok(listener) => {
                        runtime.spawn(commons_node::admin::serve_admin(
                            listener,
                            node.clone(),
                            commons_node::admin::Serving::QuickReads,
                        ));
                        serving = Some(data_dir.join(api::ADMIN_SOCKET));
                    }
                    Err(e) => tracing::debug!("cannot serve the admin socket: {e}"),
                }
                Client::Local(node)
            }
        };
        Ok(Self {
            client,
            runtime,
            json,
            serving,
        })
    }

    /// Runs `request` (on a runtime worker: a fetch's work then spreads over both cores),
    /// drawing its progress on a bar named `verb` (none when `verb` is empty).
    fn call<C: Call>(&self, request: C, verb: &'static str) -> Result<C::Reply, ApiError> {
        let bar = Arc::new(Bar::new(self.json || verb.is_empty(), verb));
        let (client, sink) = (self.client.clone(), bar.clone() as Arc<dyn ProgressSink>);
        let reply = self.runtime.block_on(async move {
            tokio::spawn(async move { client.call(request, sink).await })
                .await
                .unwrap_or_else(|e| Err(ApiError::new(ErrorKind::Internal, e.to_string())))
        });
        bar.finish();
        reply
    }

    /// As [`Session::call`], until Ctrl-C or SIGTERM stops it ([`Interrupted`]): the work
    /// is dropped (a running node sees its client go and stops it too), and what it
    /// received is kept.
    fn call_interruptible<C: Call>(&self, request: C, verb: &'static str) -> Result<C::Reply> {
        let bar = Arc::new(Bar::new(self.json, verb));
        let (client, sink) = (self.client.clone(), bar.clone() as Arc<dyn ProgressSink>);
        let interrupted = bar.clone();
        let reply = self.runtime.block_on(async move {
            let work = tokio::spawn(async move { client.call(request, sink).await });
            let stop = work.abort_handle();
            tokio::select! {
                reply = work => reply
                    .unwrap_or_else(|e| Err(ApiError::new(ErrorKind::Internal, e.to_string())))
                    .map_err(anyhow::Error::from),
                signal = commons_node::daemon::shutdown_signal() => {
                    // Blocking steps (an export) check this; the rest stops with the task.
                    interrupted.cancel();
                    stop.abort();
                    signal.context("cannot wait for signals")?;
                    Err(Interrupted.into())
                }
            }
        });
        bar.finish();
        restore_default_signals();
        reply
    }

    /// Prints `reply`: serialized with `--json`, else as `text` renders it.
    fn show<R: Serialize>(&self, reply: &R, text: impl FnOnce(&R)) -> Result<ExitCode> {
        if self.json {
            println!("{}", serde_json::to_string(reply)?);
        } else {
            text(reply);
        }
        Ok(ExitCode::SUCCESS)
    }

    /// Ends an in-process node's work (its network state saved, what it fetched on disk).
    fn close(self) {
        self.runtime.block_on(self.client.close());
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(socket) = &self.serving {
            let _ = std::fs::remove_file(socket);
        }
    }
}

/// Gives SIGINT and SIGTERM their default action back once this process waits for no more
/// signals: tokio keeps its handlers installed after its runtime is gone, which would make
/// Ctrl-C do nothing during what follows.
#[cfg(unix)]
#[allow(unsafe_code)]
fn restore_default_signals() {
    // SAFETY: SIG_DFL is a valid disposition for both signals; no handler of ours runs
    // after this point (nothing waits on the runtime's signal streams any more).
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_DFL);
        libc::signal(libc::SIGTERM, libc::SIG_DFL);
    }
}

#[cfg(not(unix))]
fn restore_default_signals() {}

/// `path` made absolute: a running node resolves it in its own working directory.
fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("invalid path {}", path.display()))
}

/// Longest key or PEM file read for a command.
const MAX_SMALL_FILE: u64 = 64 * 1024;

/// A small text file (a PEM key), within [`MAX_SMALL_FILE`].
fn read_small(path: &Path) -> Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_SMALL_FILE).read_to_string(&mut text))
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(text)
}

/// A `--publisher` argument as the node takes it: a PEM file is read here (a running
/// node may not see this process's files); key texts and key names pass as given.
fn publisher_arg(text: &str) -> Result<String> {
    let path = Path::new(text);
    if !text.contains(':') && path.is_file() {
        return read_small(path);
    }
    Ok(text.to_string())
}

/// What `bundle verify` found (its `--json` reply).
#[derive(Debug, serde::Serialize)]
struct BundleVerified {
    bundle: PathBuf,
    quick: bool,
    /// Name records the config's `[trust]` covers, each by its publisher, whose dataset
    /// that publisher signed.
    trusted_names: usize,
    #[serde(flatten)]
    verified: commons_protocol::archive::Verified,
}

/// `bundle verify`: checks a bundle file here, with no store and no node.
fn bundle_verify(
    path: &Path,
    quick: bool,
    publisher: Option<&str>,
    trust: &commons_protocol::provenance::TrustPolicy,
    json: bool,
) -> Result<ExitCode> {
    use commons_protocol::archive::Depth;
    let publisher = publisher
        .map(|text| {
            let text = publisher_arg(text)?;
            commons_protocol::provenance::PublicKey::parse(text.trim())
                .with_context(|| format!("--publisher {text}: not a public key"))
        })
        .transpose()?;
    let archive = open_bundle(path)?;
    let bar = Bar::new(json, "verifying");
    bar.event(ProgressEvent::Start {
        files: archive.index.blobs.len() as u64,
        bytes: archive.index.data_bytes(),
    });
    let depth = if quick {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Depth::Quick { seed }
    } else {
        Depth::Full
    };
    let verified = archive
        .verify(depth, publisher.as_ref(), &mut |bytes| {
            bar.event(ProgressEvent::Advance { bytes })
        })
        .with_context(|| format!("{} failed verification", path.display()));
    bar.finish();
    let verified = verified?;
    let trusted_names = archive
        .check_trust(trust)
        .with_context(|| format!("{} fails the trust policy", path.display()))?;
    let reply = BundleVerified {
        bundle: path.to_path_buf(),
        quick,
        trusted_names,
        verified,
    };
    if json {
        println!("{}", serde_json::to_string(&reply)?);
    } else {
        render::bundle_verified(&reply.verified, path, quick, reply.trusted_names);
    }
    Ok(ExitCode::SUCCESS)
}

/// Opens a bundle file (or its volumes) for reading.
fn open_bundle(path: &Path) -> Result<commons_node::bundle::BundleFile> {
    commons_node::bundle::open(path)
        .with_context(|| format!("{} is not a good bundle", path.display()))
}

/// `unpack --to` / `--hf-cache`: writes a bundle's datasets as files, with no store and
/// no node.
fn bundle_extract(
    path: &Path,
    target: &commons_node::bundle::ExtractTarget,
    json: bool,
) -> Result<ExitCode> {
    let archive = open_bundle(path)?;
    let bar = Arc::new(Bar::new(json, "writing"));
    let progress = commons_node::progress::Progress::new(bar.clone());
    let outcome = commons_node::bundle::extract(&archive, target, &progress)
        .with_context(|| format!("cannot unpack {}", path.display()));
    bar.finish();
    let outcome = outcome?;
    if json {
        println!("{}", serde_json::to_string(&outcome)?);
    } else {
        render::extracted(&outcome);
    }
    Ok(ExitCode::SUCCESS)
}

/// `pack -o -`: the node writes the bundle into a named pipe this process copies to
/// stdout (the node may be a daemon that cannot write to this process's stdout).
fn pack_to_stdout(node: &Session, request: api::Pack, json: bool) -> Result<ExitCode> {
    let dir = tempfile::tempdir().context("cannot make a folder for the pipe")?;
    let pipe = dir.path().join("bundle");
    make_fifo(&pipe)?;
    let mut request = request;
    request.output = pipe.clone();
    let reader = std::thread::spawn(move || -> std::io::Result<u64> {
        let mut from = std::fs::File::open(&pipe)?;
        let mut out = std::io::stdout().lock();
        let n = std::io::copy(&mut from, &mut out)?;
        std::io::Write::flush(&mut out)?;
        Ok(n)
    });
    // If the node fails before opening the pipe, the reader waits on it forever: the
    // process ends with the error instead, leaving the reader behind.
    let reply = node.call_interruptible(request, "packing")?;
    let copied = reader
        .join()
        .map_err(|_| anyhow::anyhow!("the copy to stdout failed"))?
        .context("writing the bundle to stdout")?;
    if copied != reply.bundle_bytes {
        anyhow::bail!(
            "{copied} bytes reached stdout, {} expected",
            reply.bundle_bytes
        );
    }
    let mut err = std::io::stderr().lock();
    if json {
        use std::io::Write;
        writeln!(err, "{}", serde_json::to_string(&reply)?)?;
    } else {
        render::packed(&reply, &mut err)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Makes a named pipe at `path`.
#[cfg(unix)]
#[allow(unsafe_code)]
fn make_fifo(path: &Path) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .context("a pipe path with a NUL byte")?;
    // SAFETY: `c_path` is a valid NUL-terminated string that outlives the call.
    let rc = unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("cannot make the pipe {}", path.display()));
    }
    Ok(())
}

#[cfg(not(unix))]
fn make_fifo(_path: &Path) -> Result<()> {
    anyhow::bail!("-o - needs named pipes (Unix)")
}

/// Runs the parsed command; `Ok` carries the exit code (verify fails with 1 on corruption).
pub fn run(cli: Cli) -> Result<ExitCode> {
    let data_dir = data_dir(&cli)?;
    let (json, config) = (cli.json, cli.config.clone());
    let config = config.as_deref();
    let mut flags = NodeFlags::default();
    let running_only = matches!(
        cli.command,
        Command::Node(NodeCommand::Peers | NodeCommand::Stats | NodeCommand::Status)
    );
    match cli.command {
        Command::Node(NodeCommand::Run {
            listen,
            bootstrap,
            dht_mode,
            external_addr,
            mdns,
            no_bulk,
        }) => {
            let flags = NodeFlags {
                listen,
                bootstrap,
                dht_mode,
                external_addrs: external_addr,
                mdns,
                no_bulk,
            };
            return serve::node_run(&data_dir, config, &flags, json);
        }
        Command::Node(NodeCommand::Id) => return serve::node_id(&data_dir, json),
        Command::Bundle(BundleCommand::Verify {
            bundle,
            quick,
            publisher,
        }) => {
            let trust = ConfigFile::load(config, &data_dir)?
                .trust_policy()
                .context("the config's [trust]")?;
            return bundle_verify(&bundle, quick, publisher.as_deref(), &trust, json);
        }
        Command::Unpack {
            ref bundle,
            to: Some(ref dir),
            force,
            ..
        } => {
            let target = commons_node::bundle::ExtractTarget::Files {
                dir: dir.clone(),
                force,
            };
            return bundle_extract(bundle, &target, json);
        }
        Command::Unpack {
            ref bundle,
            hf_cache: Some(ref cache),
            ref repo,
            ref repo_type,
            ref revision,
            ..
        } => {
            let kind = repo_type
                .as_deref()
                .map(commons_protocol::RepoKind::parse)
                .transpose()?;
            let target =
                commons_node::bundle::ExtractTarget::HfCache(commons_node::hf_cache::CacheTarget {
                    cache: cache.clone(),
                    repo: repo.clone(),
                    kind,
                    revision: revision.clone(),
                });
            return bundle_extract(bundle, &target, json);
        }
        Command::Get { ref bootstrap, .. }
        | Command::Providers { ref bootstrap, .. }
        | Command::Publish { ref bootstrap, .. }
        | Command::Resolve { ref bootstrap, .. } => {
            flags.bootstrap = bootstrap.clone();
        }
        _ => {}
    }
    let node = Session::open(&data_dir, config, &flags, running_only, json)?;
    let code = match cli.command {
        Command::Add {
            path,
            name,
            hub_ids,
            no_hub_ids,
            origin,
            token_file,
        } => {
            if let Some(name) = &name {
                // Checked before the (possibly long) import, not after it.
                commons_protocol::NameRef::parse(name)?;
            }
            if let Some(url) = path.to_str().filter(|p| p.starts_with("hf://")) {
                let mut source = api::HubSource::parse(url).map_err(anyhow::Error::msg)?;
                source.origin = Some(origin);
                source.token_file = token_file.map(|f| absolute(&f)).transpose()?;
                source.name = name;
                let reply = node.call(api::Import { source }, "importing")?;
                node.show(&reply, render::imported)
            } else {
                let request = api::Add {
                    path: absolute(&path)?,
                    name,
                    hub_ids: match (hub_ids, no_hub_ids) {
                        (true, _) => Some(true),
                        (_, true) => Some(false),
                        _ => None,
                    },
                };
                let reply = node.call(request, "adding")?;
                node.show(&reply, |r| render::added(r, &path))
            }
        }
        Command::Ls {
            target: Some(target),
            ..
        } => {
            let reply = node.call(api::Files { target }, "")?;
            node.show(&reply, render::files)
        }
        Command::Ls {
            target: None,
            all,
            pinned,
        } => {
            let reply = node.call(api::List { all, pinned }, "")?;
            node.show(&reply, |r| render::listing(r, pinned))
        }
        Command::Pin { target } => {
            let reply = node.call(api::SetPin { target, pin: true }, "")?;
            node.show(&reply, render::pin)
        }
        Command::Unpin { target } => {
            let reply = node.call(api::SetPin { target, pin: false }, "")?;
            node.show(&reply, render::pin)
        }
        Command::Name(NameCommand::Set { name, target }) => {
            let reply = node.call(api::NameSet { name, target }, "")?;
            node.show(&reply, render::named)
        }
        Command::Name(NameCommand::Ls) => {
            let reply = node.call(api::Names {}, "")?;
            node.show(&reply, render::names)
        }
        Command::Name(NameCommand::Rm { name }) => {
            let reply = node.call(api::NameRm { name }, "")?;
            node.show(&reply, render::unnamed)
        }
        Command::Pack {
            targets,
            output,
            force,
            since,
            split,
        } => {
            let to_stdout = output.as_os_str() == "-";
            if to_stdout && split.is_some() {
                anyhow::bail!("--split writes files: it cannot go with -o - (stdout)");
            }
            let request = api::Pack {
                targets,
                output: absolute(&output)?,
                force,
                since,
                split,
            };
            if to_stdout {
                return pack_to_stdout(&node, request, json);
            }
            let reply = node.call_interruptible(request, "packing")?;
            node.show(&reply, |r| {
                // stdout gone (`| head`) is not a failure of the pack.
                let _ = render::packed(r, &mut std::io::stdout().lock());
            })
        }
        Command::Unpack { bundle, resume, .. } => {
            let request = api::Unpack {
                bundle: absolute(&bundle)?,
                resume,
            };
            let reply = node.call_interruptible(request, "unpacking")?;
            node.show(&reply, render::unpacked)?;
            // A bundle cut short leaves work for the next run: not a success yet.
            if reply.incomplete.is_empty() {
                Ok(ExitCode::SUCCESS)
            } else {
                Ok(ExitCode::from(3))
            }
        }
        Command::Export {
            target,
            dir,
            force,
            publisher,
            no_signature,
        } => {
            let request = api::Export {
                target,
                dest: absolute(&dir)?,
                force,
                include: Vec::new(),
                publisher: publisher.map(|p| publisher_arg(&p)).transpose()?,
                no_signature,
            };
            let reply = node.call(request, "exporting")?;
            node.show(&reply, |r| render::exported(r, &dir))
        }
        Command::Verify { target, publisher } => {
            let publisher = publisher.map(|p| publisher_arg(&p)).transpose()?;
            let reply = node.call(api::Verify { target, publisher }, "verifying")?;
            let clean = reply.corrupt.is_empty() && reply.store_problems.is_empty();
            node.show(&reply, render::verified)?;
            Ok(if clean {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Rm { target } => {
            let reply = node.call(api::Remove { target }, "")?;
            node.show(&reply, render::removed)
        }
        Command::Gc { dry_run, quota_gib } => {
            let quota = quota_gib.map(|g| (g * 1024.0 * 1024.0 * 1024.0) as u64);
            let reply = node.call(api::Gc { dry_run, quota }, "")?;
            node.show(&reply, render::collected)
        }
        Command::Get {
            target,
            output,
            include,
            force,
            no_keep,
            limit_rate,
            bootstrap: _,
            publisher,
            allow_older,
        } => {
            let request = api::Get {
                target: target.trim().to_string(),
                include,
                output: output.as_deref().map(absolute).transpose()?,
                force,
                keep: !no_keep,
                limit_rate,
                publisher: publisher.map(|p| publisher_arg(&p)).transpose()?,
                allow_older,
            };
            // The node stops either way: what it received is put on disk first.
            let reply = node.call_interruptible(request, "fetching");
            let reply = match reply {
                Ok(reply) => reply,
                Err(e) => {
                    node.close();
                    return Err(e);
                }
            };
            node.show(&reply, |r| render::fetched(r, output.as_deref(), no_keep))
        }
        Command::Providers { hash, bootstrap: _ } => {
            let hash = hash.trim().parse().map_err(|_| {
                ApiError::new(
                    ErrorKind::InvalidInput,
                    format!("{hash:?} is not a full hash (64 hex characters)"),
                )
            })?;
            let reply = node.call(api::Providers { hash }, "")?;
            node.show(&reply, render::providers)
        }
        Command::Node(NodeCommand::Peers) => {
            let reply = node.call(api::Peers {}, "")?;
            node.show(&reply, render::peers)
        }
        Command::Node(NodeCommand::Stats) => {
            let reply = node.call(api::Stats {}, "")?;
            node.show(&reply, render::stats)
        }
        Command::Node(NodeCommand::Status) => {
            let reply = node.call(api::Status {}, "")?;
            node.show(&reply, render::status)
        }
        Command::Mirror(MirrorCommand::Add {
            target,
            name,
            origin,
            token_file,
            interval,
            follow,
        }) => {
            let hub = match target.strip_prefix("hf://") {
                Some(_) => {
                    let mut source = api::HubSource::parse(&target).map_err(anyhow::Error::msg)?;
                    source.origin = origin;
                    source.token_file = token_file.map(|f| absolute(&f)).transpose()?;
                    source.interval = interval;
                    source.name = name.clone();
                    Some(source)
                }
                None => None,
            };
            let interval = if follow { interval } else { None };
            let request = api::MirrorAdd {
                target,
                name,
                hub,
                follow,
                interval,
            };
            let reply = node.call(request, "")?;
            node.show(&reply, render::mirror_changed)
        }
        Command::Mirror(MirrorCommand::Rm { target }) => {
            let reply = node.call(api::MirrorRm { target }, "")?;
            node.show(&reply, render::mirror_changed)
        }
        Command::Mirror(MirrorCommand::Ls) => {
            let reply = node.call(api::MirrorList {}, "")?;
            node.show(&reply, |r| render::mirror_entries(&r.entries))
        }
        Command::Key(KeyCommand::Generate { name, algorithm }) => {
            let request = api::KeyGenerate {
                name,
                algorithm: Some(algorithm),
            };
            let reply = node.call(request, "")?;
            node.show(&reply, render::key_made)
        }
        Command::Key(KeyCommand::Import { name, file }) => {
            let pem = read_small(&file)?;
            let reply = node.call(api::KeyImport { name, pem }, "")?;
            node.show(&reply, render::key_made)
        }
        Command::Key(KeyCommand::Ls) => {
            let reply = node.call(api::KeyList {}, "")?;
            node.show(&reply, render::keys)
        }
        Command::Key(KeyCommand::ExportPublic { name, output }) => {
            let reply = node.call(api::KeyExport { name }, "")?;
            if let Some(file) = &output {
                std::fs::write(file, &reply.pem)
                    .with_context(|| format!("cannot write {}", file.display()))?;
            }
            node.show(&reply, |r| render::public_key(r, output.as_deref()))
        }
        Command::Sign { target, key } => {
            let reply = node.call(api::Sign { target, key }, "signing")?;
            node.show(&reply, render::signed)
        }
        Command::Publish {
            name,
            target,
            key,
            valid_days,
            offline,
            bootstrap: _,
        } => {
            let request = api::Publish {
                name,
                target,
                key,
                valid_days,
                offline,
            };
            let reply = node.call(request, "publishing")?;
            node.show(&reply, render::published)
        }
        Command::Resolve {
            name,
            allow_older,
            bootstrap: _,
        } => {
            let reply = node.call(api::Resolve { name, allow_older }, "resolving")?;
            node.show(&reply, render::resolved)
        }
        // Answered above, without a session.
        Command::Node(NodeCommand::Run { .. } | NodeCommand::Id) | Command::Bundle(_) => {
            Ok(ExitCode::SUCCESS)
        }
    };
    node.close();
    code
}
