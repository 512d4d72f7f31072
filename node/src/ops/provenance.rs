//! The provenance operations: publisher keys, signing, and signed names (publish,
//! resolve), plus what `get`, `verify` and `export` need of them.

use commons_protocol::{
    provenance::{record::MAX_RECORD_LIFETIME_SECS, KeyAlgorithm, PublicKey, SignedNameRecord},
    Hash, NameRef,
};

use super::{invalid, Call};
use crate::{
    api::{
        ApiError, ErrorKind, KeyExport, KeyGenerate, KeyImport, KeyList, KeyListing, NameRecordOut,
        Progress, PublicKeyOut, Publish, PublishOutcome, Resolve, ResolveOutcome, Sign,
        SignOutcome,
    },
    node::Node,
    provenance::{
        keys::{self, KeyInfo},
        names::{self, published_name},
        signatures,
    },
    resolve::resolve,
};

call!(KeyGenerate => KeyInfo, key_generate);
call!(KeyImport => KeyInfo, key_import);
call!(KeyList => KeyListing, key_list);
call!(KeyExport => PublicKeyOut, key_export);
call!(Sign => SignOutcome, sign);
call!(Publish => PublishOutcome, publish);
call!(Resolve => ResolveOutcome, resolve_name);

/// Key files are small: read and written on the blocking pool all the same.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::new(ErrorKind::Internal, e.to_string()))?
}

async fn key_generate(node: &Node, req: KeyGenerate, _: Progress) -> Result<KeyInfo, ApiError> {
    let algorithm = match req.algorithm.as_deref() {
        None => KeyAlgorithm::P256,
        Some(a) => a
            .parse()
            .map_err(|e: commons_protocol::provenance::KeyError| invalid(e.to_string()))?,
    };
    let dir = node.data_dir().to_path_buf();
    blocking(move || keys::generate(&dir, &req.name, algorithm)).await
}

async fn key_import(node: &Node, req: KeyImport, _: Progress) -> Result<KeyInfo, ApiError> {
    let dir = node.data_dir().to_path_buf();
    blocking(move || keys::import(&dir, &req.name, &req.pem)).await
}

async fn key_list(node: &Node, _: KeyList, _: Progress) -> Result<KeyListing, ApiError> {
    let dir = node.data_dir().to_path_buf();
    blocking(move || keys::list(&dir).map(|keys| KeyListing { keys })).await
}

async fn key_export(node: &Node, req: KeyExport, _: Progress) -> Result<PublicKeyOut, ApiError> {
    let dir = node.data_dir().to_path_buf();
    blocking(move || {
        let public = keys::load(&dir, &req.name)?.public();
        Ok(PublicKeyOut {
            name: req.name,
            public_key: public.to_string(),
            pem: public.to_pem(),
        })
    })
    .await
}

async fn sign(node: &Node, req: Sign, _: Progress) -> Result<SignOutcome, ApiError> {
    let dir = node.data_dir().to_path_buf();
    let key = blocking(move || keys::load(&dir, &req.key)).await?;
    node.store()
        .run(move |store| {
            let root = resolve(store, &req.target)?;
            if store.dataset(&root)?.is_none() {
                return Err(invalid(format!(
                    "{root} is not a dataset held here: only datasets (folders) are signed"
                )));
            }
            let files = store.read_manifest(&root)?.entries().len() as u64;
            let signature = signatures::sign(store, &root, &key)?;
            Ok(SignOutcome {
                hash: root,
                signature,
                publisher: key.public().to_string(),
                files,
            })
        })
        .await
}

fn record_out(record: &SignedNameRecord) -> NameRecordOut {
    let r = &record.record;
    NameRecordOut {
        name: r.name_ref().to_string(),
        publisher: r.publisher_key().map(|k| k.to_string()).unwrap_or_default(),
        root: r.root,
        seq: r.seq,
        prev: r.prev,
        issued_unix: r.issued_unix,
        expires_unix: r.expires_unix,
        encoded: data_encoding::HEXLOWER.encode(&record.encode()),
    }
}

async fn publish(node: &Node, req: Publish, _: Progress) -> Result<PublishOutcome, ApiError> {
    let name = NameRef::parse(&req.name)?;
    let lifetime = match req.valid_days {
        None => names::DEFAULT_LIFETIME_SECS,
        Some(days)
            if days > 0
                && days
                    .checked_mul(86_400)
                    .is_some_and(|s| s <= MAX_RECORD_LIFETIME_SECS) =>
        {
            days * 86_400
        }
        Some(days) => {
            return Err(invalid(format!(
                "--valid-days {days}: give 1 to {}",
                MAX_RECORD_LIFETIME_SECS / 86_400
            )))
        }
    };
    let dir = node.data_dir().to_path_buf();
    let key_name = req.key.clone();
    let key = blocking(move || keys::load(&dir, &key_name)).await?;
    if let Some(trusted) = node.trust().publisher_of(&name.name) {
        if trusted != &key.public() {
            return Err(invalid(format!(
                "this node's trust policy names publisher {trusted} for {}, not key {:?} ({}): \
                 its own resolutions would refuse this record",
                name.name,
                req.key,
                key.public()
            )));
        }
    }
    let target = req.target.clone();
    let root: Hash = node
        .store()
        .run(move |store| {
            let root = resolve(store, &target)?;
            if store.dataset(&root)?.is_none() {
                return Err(invalid(format!(
                    "{root} is not a dataset held here: add or fetch it before publishing a name for it"
                )));
            }
            Ok(root)
        })
        .await?;
    if req.offline {
        let (record, _) = names::sign_and_keep(node, &key, &name, root, lifetime, None).await?;
        return Ok(PublishOutcome {
            record: record_out(&record),
            stored: false,
            peers: 0,
            error: Some("--offline: kept here only".into()),
        });
    }
    let network = node
        .joined_network()
        .await
        .map_err(|e| e.context(format_args!("cannot publish {name}")))?;
    let published = names::publish(node, network, &key, &name, root, lifetime).await?;
    node.announce(root);
    let (stored, peers, error) = match &published.cost {
        Ok(cost) => (true, cost.successes, None),
        Err(e) => (false, 0, Some(e.clone())),
    };
    Ok(PublishOutcome {
        record: record_out(&published.record),
        stored,
        peers,
        error,
    })
}

async fn resolve_name(node: &Node, req: Resolve, _: Progress) -> Result<ResolveOutcome, ApiError> {
    let (key, name) = published_name(node, &req.name).await?;
    let network = node
        .joined_network()
        .await
        .map_err(|e| e.context(format_args!("cannot resolve {name}")))?;
    let found = names::resolve(node, network, &key, &name, req.allow_older).await?;
    let dht_key = commons_protocol::provenance::name_key(&key, &name);
    let history = node
        .store()
        .run(move |s| s.name_history(&dht_key))
        .await?
        .iter()
        .map(record_out)
        .collect();
    Ok(ResolveOutcome {
        record: record_out(&found.record),
        answers: found.answers as u64,
        stale_peers: found.stale_peers as u64,
        from_network: found.from_network,
        history,
        millis: found.cost.millis,
    })
}

/// The OpenSSF Model Signing bundle at the top of a folder being added (`model.sig`), if
/// any: read within its size limit and parsed (not yet checked against the files).
pub(super) fn folder_signature(
    folder: &std::path::Path,
) -> Result<Option<(Vec<u8>, commons_protocol::provenance::SignatureBundle)>, ApiError> {
    use std::io::Read;
    let path = folder.join(commons_protocol::provenance::bundle::SIGNATURE_FILE);
    // Followed if a link: a model.sig is read as the signature, never added as data.
    let meta = match std::fs::metadata(&path) {
        Ok(meta) if meta.is_file() => meta,
        Ok(_) => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(ApiError::new(
                ErrorKind::Io,
                format!("{}: {e}", path.display()),
            ))
        }
    };
    let limit = commons_protocol::provenance::MAX_SIGNATURE_BYTES;
    let mut bytes = Vec::with_capacity(meta.len().min(limit as u64) as usize);
    std::fs::File::open(&path)
        .and_then(|f| f.take(limit as u64 + 1).read_to_end(&mut bytes))
        .map_err(|e| ApiError::new(ErrorKind::Io, format!("{}: {e}", path.display())))?;
    let bundle = commons_protocol::provenance::SignatureBundle::parse(&bytes).map_err(|e| {
        ApiError::new(
            ErrorKind::InvalidInput,
            format!(
                "{}: {e} (a model.sig beside the files is read as their OpenSSF Model Signing \
                 signature; move it away to add the folder without it)",
                path.display()
            ),
        )
    })?;
    Ok(Some((bytes, bundle)))
}

/// Keeps a folder's `model.sig` for the dataset just added from it, if it lists exactly its
/// files; returns the signature's id.
pub(super) fn keep_folder_signature(
    store: &crate::store::Store,
    root: &Hash,
    manifest: &commons_protocol::Manifest,
    bytes: &[u8],
    bundle: &commons_protocol::provenance::SignatureBundle,
) -> Result<Hash, ApiError> {
    bundle.check_manifest(root, manifest).map_err(|e| {
        ApiError::new(
            ErrorKind::Corrupt,
            format!(
                "model.sig: {e}; the files were stored as {root}, without this signature \
                 (re-sign the folder, or move model.sig away)"
            ),
        )
    })?;
    // Its key is not known here: kept as unverified until someone checks it with one.
    signatures::keep(store, root, bytes, false)?;
    Ok(Hash::of(bytes))
}

/// Writes the dataset's signature (by `publisher` if given, else the first held that
/// matches) as `<dest>/model.sig` beside its exported files; returns the path written.
/// Nothing is written for a blob, an unsigned dataset, or a dataset that has a file named
/// `model.sig` itself. A different `model.sig` already there is replaced only with `force`.
pub(super) fn write_signature(
    store: &crate::store::Store,
    root: &Hash,
    dest: &std::path::Path,
    publisher: Option<&PublicKey>,
    force: bool,
) -> Result<Option<String>, ApiError> {
    use commons_protocol::provenance::bundle::SIGNATURE_FILE;
    if store.dataset(root)?.is_none() {
        return Ok(None);
    }
    let manifest = store.read_manifest(root)?;
    if manifest.entry(SIGNATURE_FILE).is_some() {
        return Ok(None);
    }
    let Some(bytes) = signatures::chosen(store, root, publisher)? else {
        return match publisher {
            Some(p) => Err(ApiError::new(
                ErrorKind::NotFound,
                format!("{root} holds no signature by publisher {p}"),
            )),
            None => Ok(None),
        };
    };
    let path = dest.join(SIGNATURE_FILE);
    let io = |e: std::io::Error| ApiError::new(ErrorKind::Io, format!("{}: {e}", path.display()));
    match std::fs::read(&path) {
        Ok(old) if old == bytes => return Ok(Some(path.display().to_string())),
        Ok(_) if !force => {
            return Err(ApiError::new(
                ErrorKind::InvalidInput,
                format!(
                    "{} exists with other content; --force replaces it",
                    path.display()
                ),
            ))
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let partial = dest.join(format!(".{SIGNATURE_FILE}.partial"));
    std::fs::write(&partial, &bytes)
        .and_then(|()| std::fs::rename(&partial, &path))
        .map_err(io)?;
    Ok(Some(path.display().to_string()))
}
