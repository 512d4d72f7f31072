//! Dataset signatures: made with a publisher key (`commons sign`), kept beside the manifest,
//! fetched with the dataset from peers, checked against a publisher (`commons verify
//! --publisher`), and written out as `model.sig` by `export`.
//!
//! A bundle is kept only if its statement lists exactly the dataset's files with their
//! digests ([`SignatureBundle::check_manifest`]): a bundle for other data is refused at the
//! door. Whether it was signed by a given publisher is checked when someone asks (`verify`,
//! a trust policy), since the key is not part of the bundle (its hint only names it).
//! Parsing and checking a bundle is CPU work on up to 16 MiB: it runs on the blocking pool.

use commons_protocol::{
    provenance::{bundle, PublicKey, SecretKey, SignatureBundle, MAX_SIGNATURE_BYTES},
    wire::MAX_SIGNATURES_PER_ROOT,
    Hash, Manifest,
};
use libp2p::PeerId;
use serde::{Deserialize, Serialize};

use crate::{
    error::{ApiError, ErrorKind},
    net::Host,
    store::{AsyncStore, Store, StoreError},
    transfer::ask_signatures,
};

/// Providers asked for a dataset's signatures, at most, per fetch.
pub const MAX_SIGNATURE_PEERS: usize = 4;

/// One signature held for a dataset, as `verify` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureStatus {
    /// The bundle's id (BLAKE3 of its bytes).
    pub id: Hash,
    /// The key hint the signer wrote (SHA-256 of its public key PEM, hex), possibly empty.
    pub key_hint: String,
    /// `blake3` or `sha256`: how the statement lists the files.
    pub file_digest: String,
    /// Whether it verified with the publisher asked about (`None`: no publisher given).
    pub verified: Option<bool>,
    /// Why it did not verify, or what is wrong with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// Parses `bytes` and checks it lists exactly the files of dataset `root` (`manifest`).
pub fn check_bundle(
    root: &Hash,
    manifest: &Manifest,
    bytes: &[u8],
) -> Result<SignatureBundle, ApiError> {
    let bundle = SignatureBundle::parse(bytes)
        .map_err(|e| ApiError::new(ErrorKind::Corrupt, e.to_string()))?;
    bundle
        .check_manifest(root, manifest)
        .map_err(|e| ApiError::new(ErrorKind::Corrupt, e.to_string()))?;
    Ok(bundle)
}

/// Signs dataset `root` with `key` and keeps the signature; returns its id.
pub fn sign(store: &Store, root: &Hash, key: &SecretKey) -> Result<Hash, ApiError> {
    let manifest = store.read_manifest(root)?;
    let bytes = bundle::sign_manifest(root, &manifest, key)
        .map_err(|e| ApiError::new(ErrorKind::InvalidInput, e.to_string()))?;
    if bytes.len() > MAX_SIGNATURE_BYTES {
        return Err(ApiError::new(
            ErrorKind::InvalidInput,
            format!(
                "{root} has {} files: its signature would take {} bytes, over the limit of \
                 {MAX_SIGNATURE_BYTES} (about 80,000 files)",
                manifest.entries().len(),
                bytes.len()
            ),
        ));
    }
    // Never keep what would not verify (a defect here must not become a bad signature).
    check_bundle(root, &manifest, &bytes)?
        .verify_signature(&key.public())
        .map_err(|e| ApiError::new(ErrorKind::Internal, e.to_string()))?;
    keep(store, root, &bytes, true)?;
    Ok(Hash::of(&bytes))
}

/// Keeps a checked bundle for `root` (`verified`: its signature checked with a known
/// key); an error when `root` holds the most signatures and none this one may replace.
pub fn keep(store: &Store, root: &Hash, bytes: &[u8], verified: bool) -> Result<(), ApiError> {
    let id = Hash::of(bytes);
    if store.put_signature(root, bytes, verified)?
        || store
            .stored_signatures(root)?
            .iter()
            .any(|(held, _)| *held == id)
    {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorKind::InvalidInput,
            format!(
                "{root} already has {MAX_SIGNATURES_PER_ROOT} signatures, the most kept \
                 (`commons rm` and adding it again clears them)"
            ),
        ))
    }
}

/// The status of every signature held for `root`, checked against `publisher` if given.
pub fn statuses(
    store: &Store,
    root: &Hash,
    publisher: Option<&PublicKey>,
) -> Result<Vec<SignatureStatus>, StoreError> {
    let manifest = store.read_manifest(root)?;
    Ok(store
        .signatures(root)?
        .iter()
        .map(|bytes| status(root, &manifest, bytes, publisher))
        .collect())
}

fn status(
    root: &Hash,
    manifest: &Manifest,
    bytes: &[u8],
    publisher: Option<&PublicKey>,
) -> SignatureStatus {
    let id = Hash::of(bytes);
    let bundle = match SignatureBundle::parse(bytes) {
        Ok(b) => b,
        Err(e) => {
            return SignatureStatus {
                id,
                key_hint: String::new(),
                file_digest: String::new(),
                verified: publisher.map(|_| false),
                problem: Some(e.to_string()),
            }
        }
    };
    let file_digest = match bundle.file_digest() {
        Ok(bundle::FileDigest::Sha256) => "sha256",
        Ok(_) => "blake3",
        Err(_) => "unknown",
    };
    let checked = match publisher {
        Some(key) => bundle.verify(key, root, manifest),
        None => bundle.check_manifest(root, manifest),
    };
    SignatureStatus {
        id,
        key_hint: bundle.hint().to_string(),
        file_digest: file_digest.into(),
        verified: publisher.map(|_| checked.is_ok()),
        problem: checked.err().map(|e| e.to_string()),
    }
}

/// The signature of `root` by `publisher`, if one is held: what `export` writes as
/// `model.sig` (or, with no publisher, the first held that matches: verified ones first).
pub fn chosen(
    store: &Store,
    root: &Hash,
    publisher: Option<&PublicKey>,
) -> Result<Option<Vec<u8>>, StoreError> {
    let manifest = store.read_manifest(root)?;
    Ok(store
        .signatures(root)?
        .into_iter()
        .find(|bytes| status(root, &manifest, bytes, publisher).problem.is_none()))
}

/// Whether `root` holds a signature by `publisher` that matches its files and root.
pub fn is_signed_by(store: &Store, root: &Hash, publisher: &PublicKey) -> Result<bool, StoreError> {
    Ok(chosen(store, root, Some(publisher))?.is_some())
}

/// Asks providers for the signatures of `root` and keeps each that matches `manifest`.
/// With a `required` publisher: up to [`MAX_SIGNATURE_PEERS`] providers at once, and only
/// bundles its key verifies are kept (marked verified: they take the place of strangers'
/// if all places are taken). Without: the first provider only, and only while no verified
/// signature is held (signatures travel with the data without slowing every fetch).
/// Returns how many were kept; what a peer sends that does not check is logged, never kept.
pub async fn fetch_from_peers(
    host: &Host,
    store: &AsyncStore,
    peers: &[PeerId],
    root: Hash,
    manifest: &Manifest,
    required: Option<&PublicKey>,
) -> usize {
    let asked = match required {
        Some(_) => MAX_SIGNATURE_PEERS,
        None => {
            let held = store.run(move |s| s.stored_signatures(&root)).await;
            if held.is_ok_and(|h| h.iter().any(|(_, s)| s.verified)) {
                return 0;
            }
            1
        }
    };
    let answers = futures_util::future::join_all(
        peers
            .iter()
            .take(asked)
            .map(|&peer| async move { (peer, ask_signatures(host, peer, root).await) }),
    )
    .await;
    let mut kept = 0;
    for (peer, answer) in answers {
        let bundles = match answer {
            Ok(b) => b,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "no signatures from this peer");
                continue;
            }
        };
        let (manifest, required) = (manifest.clone(), required.cloned());
        let stored = store
            .run(move |s| {
                let mut kept = 0;
                for bytes in bundles {
                    let checked =
                        check_bundle(&root, &manifest, &bytes).and_then(|b| match &required {
                            Some(key) => b
                                .verify_signature(key)
                                .map_err(|e| ApiError::new(ErrorKind::Corrupt, e.to_string())),
                            None => Ok(()),
                        });
                    match checked {
                        Ok(()) => {
                            kept +=
                                usize::from(s.put_signature(&root, &bytes, required.is_some())?)
                        }
                        Err(e) => tracing::info!(%peer, %root, error = %e.message,
                            "ignored a signature from a peer"),
                    }
                }
                Ok::<_, StoreError>(kept)
            })
            .await;
        match stored {
            Ok(n) => kept += n,
            Err(e) => tracing::warn!(error = %e, "cannot keep a signature"),
        }
    }
    kept
}
