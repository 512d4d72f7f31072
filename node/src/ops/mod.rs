//! The operations: how a node runs each request of [`crate::api`]. One function per
//! request, run the same way in-process and behind the admin socket; side effects that
//! belong to an operation (announcing after `add` and `pin`, withdrawing after `rm` and
//! `unpin`, holding data while it is fetched) happen here, once.
//!
//! Store work runs on the blocking pool ([`crate::store::AsyncStore::run`]).

use std::collections::{BTreeMap, BTreeSet};

use commons_protocol::{Hash, NameRef, Ticket, TicketKind};

use crate::{
    api::{
        require_absolute, Add, AddOutcome, ApiError, BlobEntry, Call, CollectedBlob, DatasetEntry,
        ErrorKind, Export, ExportOutcome, FileEntry, FileListing, Files, Gc, GcOutcome, Get,
        GetOutcome, Import, ImportOutcome, List, Listing, MirrorAdd, MirrorChanged, MirrorEntries,
        MirrorList, MirrorRm, NameList, NameRemoved, NameRm, NameSet, Names, Pack, PackOutcome,
        PeerStatsEntry, PeerStatsList, Peers, PinOutcome, Progress, ProviderEntry, Providers,
        ProvidersReport, Remove, RemoveOutcome, SetPin, Stats, Status, Unpack, UnpackOutcome,
        Verify, VerifyProblem, VerifyReport,
    },
    bundle,
    config::MirrorEntry,
    export,
    fetch::{self, FetchOptions, GetTarget},
    include::Include,
    net::NetworkStatus,
    node::Node,
    resolve::resolve,
    status::{self, NodeStatus},
    store::{BlobState, HubIdChoice, ImportProgress, NameEntry, PinKind, Store, StoreError},
};

/// Declares that `$request` is answered by `$reply`, run by `$op`.
macro_rules! call {
    ($request:ident => $reply:ty, $op:ident) => {
        impl Call for $request {
            type Reply = $reply;
            fn run(
                self,
                node: &Node,
                progress: Progress,
            ) -> impl std::future::Future<Output = Result<$reply, ApiError>> + Send {
                $op(node, self, progress)
            }
        }
    };
}

call!(Add => AddOutcome, add);
call!(Import => ImportOutcome, import);
call!(List => Listing, list);
call!(Files => FileListing, files);
call!(SetPin => PinOutcome, set_pin);
call!(NameSet => NameEntry, name_set);
call!(NameRm => NameRemoved, name_rm);
call!(Names => NameList, names);
call!(Get => GetOutcome, get);
call!(Export => ExportOutcome, export);
call!(Verify => VerifyReport, verify);
call!(Remove => RemoveOutcome, remove);
call!(Gc => GcOutcome, gc);
call!(Providers => ProvidersReport, providers);
call!(Peers => NetworkStatus, peers);
call!(Stats => PeerStatsList, stats);
call!(Status => NodeStatus, node_status);
call!(MirrorAdd => MirrorChanged, mirror_add);
call!(MirrorRm => MirrorChanged, mirror_rm);
call!(MirrorList => MirrorEntries, mirror_list);
call!(Pack => PackOutcome, pack);
call!(Unpack => UnpackOutcome, unpack);

mod provenance;

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorKind::InvalidInput, message)
}

/// Adds a file (as a blob) or a folder (as a dataset), names it if asked, pins and
/// announces it. The ticket names this node's addresses when it runs.
async fn add(node: &Node, req: Add, progress: Progress) -> Result<AddOutcome, ApiError> {
    require_absolute(&req.path)?;
    let name = req
        .name
        .map(|n| NameRef::parse(&n).map(|_| n))
        .transpose()?;
    let providers = match (node.daemon(), node.started_network()) {
        (Ok(_), Some(network)) => network
            .host
            .listen_addrs()
            .await
            .iter()
            .map(|a| a.to_string())
            .collect(),
        _ => Vec::new(),
    };
    let path = req.path;
    let (outcome, outcome_upstream) = node
        .store()
        .run(move |store| {
            let cannot = |e: StoreError| {
                ApiError::from(e).context(format_args!("cannot add {}", path.display()))
            };
            let meta = std::fs::metadata(&path).map_err(|source| {
                cannot(StoreError::Io {
                    path: path.clone(),
                    source,
                })
            })?;
            let mut upstream_key = None;
            let mut signature = None;
            let (kind, hash, files, size, new_blobs) = if meta.is_dir() {
                let folder_signature = provenance::folder_signature(&path)?;
                // A signature listing SHA-256 digests is checked against Hub ids.
                let needs_sha256 = folder_signature
                    .as_ref()
                    .is_some_and(|(_, b)| b.needs_sha256());
                let hub_ids = match req.hub_ids {
                    Some(false) if needs_sha256 => {
                        return Err(invalid(format!(
                            "{}/model.sig lists SHA-256 digests, which need --hub-ids",
                            path.display()
                        )))
                    }
                    _ if needs_sha256 => HubIdChoice::Yes,
                    None => HubIdChoice::Auto,
                    Some(true) => HubIdChoice::Yes,
                    Some(false) => HubIdChoice::No,
                };
                // The signature, and what it leaves out, are not the signed dataset's files.
                let mut skip: Vec<&str> = Vec::new();
                if let Some((_, bundle)) = &folder_signature {
                    skip.push(commons_protocol::provenance::bundle::SIGNATURE_FILE);
                    skip.extend(bundle.ignore_paths().iter().map(String::as_str));
                }
                let ds = store
                    .add_folder_skipping(&path, hub_ids, &skip, &progress)
                    .map_err(cannot)?;
                if let Some((bytes, bundle)) = &folder_signature {
                    signature = Some(provenance::keep_folder_signature(
                        store,
                        &ds.root,
                        &ds.manifest,
                        bytes,
                        bundle,
                    )?);
                }
                upstream_key = ds.manifest.upstream().map(|u| u.dht_key());
                let files = ds.manifest.entries().len() as u64;
                (
                    TicketKind::Dataset,
                    ds.root,
                    files,
                    ds.manifest.total_size(),
                    ds.new_blobs,
                )
            } else {
                let blob = store.add_file(&path, &progress).map_err(cannot)?;
                let new = u64::from(!blob.already_stored);
                (TicketKind::Blob, blob.hash, 1, blob.size, new)
            };
            if let Some(name) = &name {
                bind_name(store, name, &hash.to_string())?;
            }
            let ticket = Ticket {
                kind,
                hash,
                providers,
            }
            .to_string();
            Ok::<_, ApiError>((
                AddOutcome {
                    kind,
                    hash,
                    files,
                    size,
                    new_blobs,
                    ticket,
                    name,
                    signature,
                },
                upstream_key,
            ))
        })
        .await?;
    node.announce(outcome.hash);
    if let Some(key) = outcome_upstream {
        node.announce(key);
    }
    Ok(outcome)
}

/// Lists datasets, blobs added on their own, and blobs being fetched on their own (every
/// blob with `all`; only pinned ones with `pinned`).
async fn list(node: &Node, req: List, _progress: Progress) -> Result<Listing, ApiError> {
    let mut listing = node.store().run(move |s| listing(s, req.all)).await?;
    if req.pinned {
        listing.datasets.retain(|d| d.pinned);
        listing.blobs.retain(|b| b.pinned);
    }
    Ok(listing)
}

fn listing(store: &Store, all: bool) -> Result<Listing, StoreError> {
    let pins: BTreeMap<Hash, PinKind> = store
        .pins()?
        .into_iter()
        .map(|(h, p)| (h, p.kind))
        .collect();
    let blobs = store.blobs()?;
    let states: BTreeMap<Hash, BlobState> = blobs.iter().map(|(h, m)| (*h, m.state)).collect();
    let complete = |h: &Hash| states.get(h) == Some(&BlobState::Complete);
    let mut listing = Listing::default();
    let mut held_of_partial: BTreeMap<Hash, u64> = BTreeMap::new();
    let mut names: BTreeMap<Hash, Vec<String>> = BTreeMap::new();
    // Files of the datasets listed: shown with their dataset, not again on their own.
    let mut dataset_files: BTreeSet<Hash> = BTreeSet::new();
    for e in store.names()? {
        names
            .entry(e.root)
            .or_default()
            .push(format!("{}@{}", e.name, e.revision));
    }
    for (root, meta) in store.datasets()? {
        let manifest = store.read_manifest(&root).ok();
        let all_there = complete(&root)
            && manifest
                .as_ref()
                .is_some_and(|m| m.entries().iter().all(|e| complete(&e.hash)));
        let mut held = 0;
        for entry in manifest.iter().flat_map(|m| m.entries()) {
            dataset_files.insert(entry.hash);
            held += if complete(&entry.hash) {
                entry.size
            } else if let Some(bytes) = held_of_partial.get(&entry.hash) {
                *bytes
            } else {
                let bytes = store.held_bytes(&entry.hash)?;
                held_of_partial.insert(entry.hash, bytes);
                bytes
            };
        }
        listing.datasets.push(DatasetEntry {
            hash: root,
            files: meta.files,
            size: meta.total_size,
            complete: all_there,
            held,
            pinned: pins.contains_key(&root),
            names: names.remove(&root).unwrap_or_default(),
        });
    }
    let roots: BTreeSet<Hash> = listing.datasets.iter().map(|d| d.hash).collect();
    for (h, m) in blobs
        .iter()
        .filter(|(h, _)| !roots.contains(h))
        .filter(|(h, m)| {
            // A blob fetched by itself (`get <hash>`) is pinned once complete; until then
            // it shows as partial, or a stopped fetch would look like an empty store.
            let fetching_alone = m.state != BlobState::Complete && !dataset_files.contains(h);
            all || fetching_alone || pins.get(h) == Some(&PinKind::Blob)
        })
    {
        let complete = m.state == BlobState::Complete;
        listing.blobs.push(BlobEntry {
            hash: *h,
            size: m.size,
            complete,
            held: if complete {
                m.size
            } else {
                store.held_bytes(h)?
            },
            pinned: pins.contains_key(h),
        });
    }
    Ok(listing)
}

/// Lists the files of one dataset (or the one blob), with how much of each is held.
async fn files(node: &Node, req: Files, _progress: Progress) -> Result<FileListing, ApiError> {
    node.store()
        .run(move |store| {
            let hash = resolve(store, &req.target)?;
            let held = |h: &Hash, size: u64| -> Result<(u64, bool), StoreError> {
                Ok(match store.blob(h)? {
                    Some(m) if m.state == BlobState::Complete => (size, true),
                    Some(_) => (store.held_bytes(h)?, false),
                    None => (0, false),
                })
            };
            if store.dataset(&hash)?.is_none() {
                let size = store
                    .blob(&hash)?
                    .ok_or(StoreError::NotFound { hash })?
                    .size;
                let (held, complete) = held(&hash, size)?;
                let files = vec![FileEntry {
                    path: hash.to_string(),
                    hash,
                    size,
                    held,
                    complete,
                    hub: None,
                }];
                return Ok::<_, ApiError>(FileListing {
                    hash,
                    dataset: false,
                    files,
                });
            }
            let manifest = store.read_manifest(&hash)?;
            let mut files = Vec::with_capacity(manifest.entries().len());
            for e in manifest.entries() {
                let (held, complete) = held(&e.hash, e.size)?;
                files.push(FileEntry {
                    path: e.path.clone(),
                    hash: e.hash,
                    size: e.size,
                    held,
                    complete,
                    hub: e.hub,
                });
            }
            Ok(FileListing {
                hash,
                dataset: true,
                files,
            })
        })
        .await
}

/// Pins (and announces) or unpins (and withdraws) a dataset or blob. Unpinning keeps the
/// data until garbage collection needs the space, and drops names bound to it.
async fn set_pin(node: &Node, req: SetPin, _progress: Progress) -> Result<PinOutcome, ApiError> {
    let pin = req.pin;
    let outcome = node
        .store()
        .run(move |store| {
            let hash = resolve(store, &req.target)?;
            let was = store.pinned(&hash)?.is_some();
            let verb = if pin { "pin" } else { "unpin" };
            let changed = if pin {
                store.pin(&hash).map(|_| ())
            } else {
                store.unpin(&hash).map(|_| ())
            };
            changed.map_err(|e| ApiError::from(e).context(format_args!("cannot {verb} {hash}")))?;
            Ok::<_, ApiError>(PinOutcome {
                hash,
                pinned: pin,
                changed: was != pin,
            })
        })
        .await?;
    if pin {
        node.announce(outcome.hash);
    } else {
        node.withdraw(outcome.hash);
    }
    Ok(outcome)
}

/// Binds `name` (`org/name` or `org/name@revision`) to the dataset `target` names, and pins it.
fn bind_name(store: &Store, name: &str, target: &str) -> Result<NameEntry, ApiError> {
    let name = NameRef::parse(name)?;
    let root = resolve(store, target)?;
    store
        .set_name(&name.name, &name.revision, &root)
        .map_err(|e| ApiError::from(e).context(format_args!("cannot name {root} {}", name.name)))
}

async fn name_set(node: &Node, req: NameSet, _progress: Progress) -> Result<NameEntry, ApiError> {
    let entry = node
        .store()
        .run(move |store| bind_name(store, &req.name, &req.target))
        .await?;
    node.announce(entry.root);
    Ok(entry)
}

/// Imports a Hub repository (peers first when a network can be joined).
async fn import(node: &Node, req: Import, progress: Progress) -> Result<ImportOutcome, ApiError> {
    let use_peers = node.daemon().is_ok();
    crate::origin::import(node, &req.source, use_peers, &progress).await
}

/// Removes the binding of a name; the dataset stays pinned.
async fn name_rm(node: &Node, req: NameRm, _progress: Progress) -> Result<NameRemoved, ApiError> {
    let name = NameRef::parse(&req.name)?;
    let existed = node
        .store()
        .run(move |store| store.unset_name(&name.name, &name.revision))
        .await?;
    if !existed {
        return Err(ApiError::new(
            ErrorKind::NotFound,
            format!(
                "no name {} is bound on this node (see `commons name ls`)",
                req.name
            ),
        ));
    }
    Ok(NameRemoved {
        name: req.name,
        removed: true,
    })
}

async fn names(node: &Node, _req: Names, _progress: Progress) -> Result<NameList, ApiError> {
    let names = node.store().run(|store| store.names()).await?;
    Ok(NameList { names })
}

/// Fetches what a ticket or hash names, then writes it to `output` if given.
async fn get(node: &Node, req: Get, progress: Progress) -> Result<GetOutcome, ApiError> {
    // A signed name resolves through the DHT; its publisher's signature is then required.
    let (mut target, bind) = if crate::provenance::names::is_published_name(node, &req.target) {
        let (target, name, _) =
            crate::provenance::names::name_target(node, &req.target, req.allow_older).await?;
        (target, Some(name))
    } else {
        (GetTarget::parse(&req.target)?, None)
    };
    if let Some(p) = &req.publisher {
        let key = crate::provenance::names::publisher(node, p).await?;
        if target.publisher.as_ref().is_some_and(|k| k != &key) {
            return Err(invalid(format!(
                "--publisher {key} is not the publisher the name's record is signed by"
            )));
        }
        target.publisher = Some(key);
    }
    let include = Include::parse(&req.include).map_err(invalid)?;
    match &req.output {
        Some(dir) => require_absolute(dir)?,
        None if !req.keep => {
            return Err(invalid("keeping no copy needs an output folder (--output)"))
        }
        None => {}
    }
    let hash = target.hash;
    // --no-keep drops only what this get brought: data kept here before stays.
    let kept_before = !req.keep && node.store().run(move |s| s.pinned(&hash)).await?.is_some();
    let rate_limit = match req.limit_rate {
        Some(rate) if !(rate.is_finite() && rate > 0.0 && rate <= 1e6) => {
            return Err(invalid(format!(
                "--limit-rate {rate}: give MiB/s, a number above 0 and at most 1000000"
            )))
        }
        rate => rate.map(crate::transfer::mib_per_sec).map(|b| b.max(1)),
    };
    let fetch_options = FetchOptions {
        rate_limit,
        ..FetchOptions::pinned()
    };
    // A ticket's providers are enough to start; a bare hash needs the DHT.
    let network = if target.providers.is_empty() {
        node.joined_network().await
    } else {
        node.network().await
    }
    .map_err(|e| e.context(format_args!("cannot look up {hash}")))?;
    let mut outcome = fetch::get(node, network, &target, &include, fetch_options, &progress)
        .await
        .map_err(|e| ApiError::from(e).context(format_args!("cannot get {hash}")))?;
    if let Some(name) = bind {
        // Bound locally (the gateway serves it by name), checked by its publisher's record.
        let local = name.to_string();
        node.store()
            .run(move |store| bind_name(store, &local, &hash.to_string()))
            .await
            .map_err(|e| e.context(format_args!("fetched {hash}, but cannot name it {name}")))?;
    }
    if let Some(dir) = req.output {
        let force = req.force;
        let publisher = target.publisher.clone();
        let exported = node
            .store()
            .run(move |store| {
                let cancel = crate::progress::CancelOnly(progress);
                let mut exported = export::export(store, &hash, &dir, force, &include, &cancel)
                    .map_err(ApiError::from)?;
                if include.is_empty() {
                    exported.signature =
                        provenance::write_signature(store, &hash, &dir, publisher.as_ref(), force)?;
                }
                Ok::<_, ApiError>(exported)
            })
            .await
            .map_err(|e| e.context(format_args!("fetched {hash}, but cannot export it")))?;
        outcome.exported = Some(exported);
        if !req.keep && !kept_before {
            // Written and verified: the folder's copy is the one kept.
            node.store()
                .run(move |store| store.remove(&hash))
                .await
                .map_err(|e| {
                    ApiError::from(e).context(format_args!(
                        "exported {hash}, but cannot drop the store's copy"
                    ))
                })?;
            node.withdraw(hash);
            outcome.kept = false;
        }
    }
    Ok(outcome)
}

/// Writes a bundle of the datasets `targets` to `output` (see [`bundle::write_bundle`]: a
/// file or volumes are renamed into place once whole, so a bundle at that name is never
/// half written; a named pipe is written as the bundle is made).
async fn pack(node: &Node, req: Pack, progress: Progress) -> Result<PackOutcome, ApiError> {
    require_absolute(&req.output)?;
    if req.targets.is_empty() {
        return Err(invalid("name at least one dataset to pack"));
    }
    node.store()
        .run(move |store| {
            let resolve_all = |targets: &[String]| {
                targets
                    .iter()
                    .map(|t| resolve(store, t))
                    .collect::<Result<Vec<_>, _>>()
            };
            let roots = resolve_all(&req.targets)?;
            let since = resolve_all(&req.since)?;
            let (mut outcome, files) =
                bundle::write_bundle(&req.output, req.split, req.force, |out| {
                    bundle::pack(store, &roots, &since, out, &progress)
                })?;
            outcome.files = files;
            Ok(outcome)
        })
        .await
}

/// Imports the bundle at `bundle` (a file or its volumes), verified, into the store.
async fn unpack(node: &Node, req: Unpack, progress: Progress) -> Result<UnpackOutcome, ApiError> {
    require_absolute(&req.bundle)?;
    node.store()
        .run(move |store| {
            let archive = bundle::open(&req.bundle)?;
            bundle::unpack(store, &archive, req.resume, &progress)
                .map_err(|e| e.context(req.bundle.display()))
        })
        .await
}

/// Writes a dataset (the files `include` accepts) or a blob to `dest`, verified.
async fn export(node: &Node, req: Export, progress: Progress) -> Result<ExportOutcome, ApiError> {
    require_absolute(&req.dest)?;
    let include = Include::parse(&req.include).map_err(invalid)?;
    let publisher = match &req.publisher {
        Some(p) => Some(crate::provenance::names::publisher(node, p).await?),
        None => None,
    };
    node.store()
        .run(move |store| {
            let hash = resolve(store, &req.target)?;
            if let Some(p) = &publisher {
                // Refused before any file is written.
                if !crate::provenance::signatures::is_signed_by(store, &hash, p)? {
                    return Err(ApiError::new(
                        ErrorKind::NotFound,
                        format!("{hash} holds no signature by publisher {p}"),
                    ));
                }
            }
            let mut outcome =
                export::export(store, &hash, &req.dest, req.force, &include, &progress)
                    .map_err(|e| ApiError::from(e).context(format_args!("cannot export {hash}")))?;
            // A partial export (--include) is not what the signature lists.
            if !req.no_signature && include.is_empty() {
                outcome.signature = provenance::write_signature(
                    store,
                    &hash,
                    &req.dest,
                    publisher.as_ref(),
                    req.force,
                )?;
            }
            Ok(outcome)
        })
        .await
}

/// Re-checks every complete blob, or one blob, or one dataset (its manifest and files),
/// against the hash trees.
async fn verify(node: &Node, req: Verify, progress: Progress) -> Result<VerifyReport, ApiError> {
    let publisher = match &req.publisher {
        Some(p) => Some(crate::provenance::names::publisher(node, p).await?),
        None => None,
    };
    node.store()
        .run(move |store| {
            let hash = req.target.map(|t| resolve(store, &t)).transpose()?;
            let mut report = verify_store(store, hash.as_ref(), &progress)?;
            let dataset = match hash {
                Some(h) if store.dataset(&h)?.is_some() => Some(h),
                _ => None,
            };
            if let Some(root) = dataset {
                report.signatures =
                    crate::provenance::signatures::statuses(store, &root, publisher.as_ref())?;
            }
            if let Some(key) = publisher {
                let Some(root) = dataset else {
                    return Err(invalid(
                        "--publisher checks the signature of one dataset: name it",
                    ));
                };
                if !report.signatures.iter().any(|s| s.verified == Some(true)) {
                    let why = if report.signatures.is_empty() {
                        "it is unsigned (no signature is held for it)".to_string()
                    } else {
                        report
                            .signatures
                            .iter()
                            .map(|s| s.problem.clone().unwrap_or_default())
                            .collect::<Vec<_>>()
                            .join("; ")
                    };
                    return Err(ApiError::new(
                        ErrorKind::Corrupt,
                        format!("{root} carries no valid signature by publisher {key}: {why}"),
                    ));
                }
                report.signed_by = Some(key.to_string());
            }
            Ok::<_, ApiError>(report)
        })
        .await
}

fn verify_store(
    store: &Store,
    target: Option<&Hash>,
    progress: &dyn ImportProgress,
) -> Result<VerifyReport, StoreError> {
    let mut names: BTreeMap<Hash, Vec<String>> = BTreeMap::new();
    let hashes: Vec<Hash> = match target {
        Some(hash) if store.dataset(hash)?.is_some() => {
            for e in store.read_manifest(hash)?.entries() {
                names.entry(e.hash).or_default().push(e.path.clone());
            }
            std::iter::once(*hash)
                .chain(names.keys().copied())
                .collect()
        }
        Some(hash) if store.blob(hash)?.is_some() => vec![*hash],
        Some(hash) => return Err(StoreError::NotFound { hash: *hash }),
        None => store.blobs()?.into_iter().map(|(h, _)| h).collect(),
    };
    let mut report = VerifyReport::default();
    if target.is_none() {
        let rows = store.check_rows()?;
        report.store_problems = rows.problems;
        report.store_problem_count = rows.problem_count;
    }
    let mut sizes = Vec::with_capacity(hashes.len());
    for hash in &hashes {
        let meta = store.blob(hash)?;
        if meta
            .as_ref()
            .is_some_and(|m| m.state != BlobState::Complete)
        {
            // What a fetch has not finished: the spans it holds are checked.
            report.partial_blobs += 1;
            report.partial_bytes += store.held_bytes(hash)?;
            for c in store.verify_blob(hash)? {
                report.corrupt.push(VerifyProblem {
                    blob: *hash,
                    range: Some(c.range),
                    files: names.get(hash).cloned().unwrap_or_default(),
                });
            }
            continue;
        }
        sizes.push((hash, meta.map(|m| m.size)));
    }
    progress.start(sizes.len() as u64, sizes.iter().flat_map(|(_, s)| *s).sum());
    for (hash, size) in sizes {
        let files = names.get(hash).cloned().unwrap_or_default();
        let Some(size) = size else {
            report.corrupt.push(VerifyProblem {
                blob: *hash,
                range: None,
                files,
            });
            continue;
        };
        for c in store.verify_blob(hash)? {
            report.corrupt.push(VerifyProblem {
                blob: *hash,
                range: Some(c.range),
                files: files.clone(),
            });
        }
        report.checked_blobs += 1;
        report.checked_bytes += size;
        progress.advance(size);
    }
    Ok(report)
}

/// Forgets a dataset or blob, reclaims its space and stops announcing it.
async fn remove(node: &Node, req: Remove, _progress: Progress) -> Result<RemoveOutcome, ApiError> {
    let outcome = node
        .store()
        .run(move |store| {
            let hash = resolve(store, &req.target)?;
            let report = store
                .remove(&hash)
                .map_err(|e| ApiError::from(e).context(format_args!("cannot remove {hash}")))?;
            Ok::<_, ApiError>(RemoveOutcome {
                hash,
                kind: if report.was_dataset {
                    TicketKind::Dataset
                } else {
                    TicketKind::Blob
                },
                removed_blobs: report.gc.removed.len() as u64,
                freed_bytes: report.gc.bytes(),
                kept_shared: report.kept_shared,
            })
        })
        .await?;
    node.withdraw(outcome.hash);
    Ok(outcome)
}

/// Removes unpinned data (down to a quota, least recently used first, when given).
async fn gc(node: &Node, req: Gc, _progress: Progress) -> Result<GcOutcome, ApiError> {
    let report = node
        .store()
        .run(move |store| match req.quota {
            Some(q) => store.gc_to_quota(q, req.dry_run),
            None => store.gc(req.dry_run),
        })
        .await?;
    Ok(GcOutcome {
        dry_run: req.dry_run,
        bytes: report.bytes(),
        blobs: report
            .removed
            .into_iter()
            .map(|(hash, size)| CollectedBlob { hash, size })
            .collect(),
        stored_bytes: report.stored_bytes,
        over_quota: report.over_quota,
    })
}

/// Looks `hash` up in the DHT, asking for every provider it can return.
async fn providers(
    node: &Node,
    req: Providers,
    _progress: Progress,
) -> Result<ProvidersReport, ApiError> {
    let hash = req.hash;
    let cannot = |e: ApiError| e.context(format_args!("cannot look up {hash}"));
    let network = node.joined_network().await.map_err(cannot)?;
    let lookup = network
        .host
        .find_providers(hash, usize::MAX, false)
        .await
        .map_err(|e| cannot(e.into()))?;
    Ok(ProvidersReport {
        hash,
        providers: lookup
            .providers
            .into_iter()
            .map(|p| ProviderEntry {
                peer_id: p.peer.to_string(),
                addrs: p.addrs.iter().map(|a| a.to_string()).collect(),
            })
            .collect(),
        cost: lookup.cost,
    })
}

async fn peers(node: &Node, _req: Peers, _progress: Progress) -> Result<NetworkStatus, ApiError> {
    node.daemon()?;
    Ok(node.network().await?.host.status().await?)
}

async fn stats(node: &Node, _req: Stats, _progress: Progress) -> Result<PeerStatsList, ApiError> {
    node.daemon()?;
    let paths = node.network().await?.host.status().await?.nat.counters;
    Ok(PeerStatsList {
        paths,
        peers: node
            .stats()
            .snapshot()
            .into_iter()
            .map(|(peer, s)| PeerStatsEntry {
                peer_id: peer.to_string(),
                bytes_sent: s.bytes_sent,
                bytes_received: s.bytes_received,
                requests_served: s.requests_served,
                requests_made: s.requests_made,
                bad_responses: s.bad_responses,
            })
            .collect(),
    })
}

async fn node_status(
    node: &Node,
    _req: Status,
    _progress: Progress,
) -> Result<NodeStatus, ApiError> {
    status::snapshot(node).await
}

/// Mirrors a dataset from now on (saved in the store; kept after restarts).
async fn mirror_add(
    node: &Node,
    req: MirrorAdd,
    _progress: Progress,
) -> Result<MirrorChanged, ApiError> {
    if let Some(source) = req.hub {
        source.check().map_err(invalid)?;
        let added = crate::mirror::add(node, MirrorEntry::Hub(source.clone())).await?;
        return Ok(MirrorChanged {
            target: source.label(),
            changed: added,
        });
    }
    let target = req.target.trim().to_string();
    if req.follow {
        if !crate::provenance::names::is_published_name(node, &target) {
            return Err(invalid(format!(
                "following {target} needs a publisher: a [trust] rule for it in the config, or \
                 the form <publisher>/org/name"
            )));
        }
        if req.interval == Some(0) {
            return Err(invalid("--interval must be above 0"));
        }
        crate::provenance::names::published_name(node, &target).await?;
        let added = crate::mirror::add(
            node,
            MirrorEntry::Follow(crate::config::FollowEntry {
                follow: target.clone(),
                interval: req.interval,
            }),
        )
        .await?;
        return Ok(MirrorChanged {
            target,
            changed: added,
        });
    }
    let is_target = target.parse::<Hash>().is_ok()
        || target.parse::<Ticket>().is_ok()
        || NameRef::parse(&target).is_ok();
    if !is_target {
        return Err(invalid(format!(
            "{target:?} is neither a full hash, a ticket nor a name (org/name)"
        )));
    }
    let entry = match req.name {
        None => MirrorEntry::Target(target.clone()),
        Some(name) => {
            let name = NameRef::parse(&name)?;
            MirrorEntry::Named {
                target: target.clone(),
                name: Some(name.name),
                revision: Some(name.revision),
            }
        }
    };
    let changed = crate::mirror::add(node, entry).await?;
    Ok(MirrorChanged { target, changed })
}

/// Stops mirroring a dataset added with `mirror add`.
async fn mirror_rm(
    node: &Node,
    req: MirrorRm,
    _progress: Progress,
) -> Result<MirrorChanged, ApiError> {
    let target = req.target.trim().to_string();
    crate::mirror::remove(node, &target).await?;
    Ok(MirrorChanged {
        target,
        changed: true,
    })
}

async fn mirror_list(
    node: &Node,
    _req: MirrorList,
    _progress: Progress,
) -> Result<MirrorEntries, ApiError> {
    Ok(MirrorEntries {
        entries: node.mirror().statuses(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreOptions;

    #[test]
    fn a_blob_being_fetched_on_its_own_is_listed_as_partial() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), StoreOptions::default()).expect("store");
        let data: Vec<u8> = (0..3 * store.span_bytes()).map(|i| i as u8).collect();
        let hash = Hash::from(blake3::hash(&data));
        let partial = store
            .begin_partial(&hash, data.len() as u64)
            .expect("begin");
        let span = store.span_bytes() as usize;
        store
            .put_verified_span(partial.id, data.len() as u64, 0, &data[..span], None, &[])
            .expect("span");
        let listing = listing(&store, false).expect("listing");
        assert_eq!(listing.blobs.len(), 1, "{listing:?}");
        let blob = &listing.blobs[0];
        assert_eq!((blob.hash, blob.complete), (hash, false));
        assert_eq!((blob.held, blob.size), (span as u64, data.len() as u64));
    }
}
