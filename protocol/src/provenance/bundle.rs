//! Dataset signatures as OpenSSF Model Signing writes them: a Sigstore bundle (`model.sig`)
//! holding a DSSE envelope over an in-toto statement that lists every file's digest.
//!
//! Commons signs with publisher keys only (no Fulcio certificate, no Rekor entry), which is
//! what `model_signing sign key` / `verify key` do, so a bundle verifies fully offline. A
//! bundle written here lists the manifest's BLAKE3 digests (the blob hashes: nothing is
//! re-hashed); a bundle written by the reference tool may list SHA-256 digests instead,
//! which Commons checks against the manifest's Hub ids (computed at `add` time).
//!
//! The exact layout (model_signing 1.x, predicate `https://model_signing/signature/v1.0`)
//! is in `docs/formats.md`. Only the `files` serialization is read; shard serializations
//! are refused with a clear error.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::key::{KeyError, PublicKey, SecretKey};
use crate::{manifest::ManifestEntry, Manifest};

pub use super::MAX_SIGNATURE_BYTES;
/// The bundle media type written (Sigstore bundle v0.3).
pub const BUNDLE_MEDIA_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
/// DSSE payload type of an in-toto statement.
pub const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
/// The in-toto statement type.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// OpenSSF Model Signing's predicate type.
pub const PREDICATE_TYPE: &str = "https://model_signing/signature/v1.0";
/// The file name a bundle has beside the files it signs.
pub const SIGNATURE_FILE: &str = "model.sig";
/// Paths the reference tool leaves out of what it signs by default. `add` leaves the ones a
/// folder's `model.sig` ignores out of the dataset, so a signed dataset is exactly what its
/// signature covers.
pub const DEFAULT_IGNORE_PATHS: &[&str] = &[".git", ".gitattributes", ".github", ".gitignore"];
/// Ignore paths a bundle may list, at most (the reference writes five).
pub const MAX_IGNORE_PATHS: usize = 64;

/// Why a bundle was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    /// Over [`MAX_SIGNATURE_BYTES`].
    #[error("signature bundle of {0} bytes is over the limit of {MAX_SIGNATURE_BYTES}")]
    TooLarge(usize),
    /// Not a bundle this code reads.
    #[error("malformed signature bundle: {0}")]
    Malformed(String),
    /// The signature does not verify.
    #[error("signature bundle: {0}")]
    Key(#[from] KeyError),
    /// The statement does not describe these files.
    #[error("the signature does not match the dataset: {0}")]
    Mismatch(String),
}

/// A digest algorithm a statement may list files with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileDigest {
    /// BLAKE3-256 of the whole file: the manifest's blob hash.
    Blake3,
    /// SHA-256 of the whole file: the manifest's Hub id, when recorded.
    Sha256,
}

impl FileDigest {
    fn name(self) -> &'static str {
        match self {
            Self::Blake3 => "blake3",
            Self::Sha256 => "sha256",
        }
    }

    fn parse(name: &str) -> Result<Self, BundleError> {
        match name {
            "blake3" => Ok(Self::Blake3),
            "sha256" => Ok(Self::Sha256),
            _ => Err(BundleError::Malformed(format!(
                "file digest {name:?}: Commons reads blake3 and sha256"
            ))),
        }
    }

    /// The digest of `entry` as the manifest records it, if it does.
    fn of(self, entry: &ManifestEntry) -> Option<[u8; 32]> {
        match self {
            Self::Blake3 => Some(*entry.hash.as_bytes()),
            Self::Sha256 => entry.hub.map(|ids| ids.sha256.0),
        }
    }
}

/// The JSON file (`model.sig`).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BundleJson {
    media_type: String,
    verification_material: VerificationMaterial,
    dsse_envelope: Envelope,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct VerificationMaterial {
    #[serde(default)]
    public_key: Option<KeyHint>,
    /// Never read: written empty, skipped unparsed when read (a list of values in JSON
    /// costs many times its size in memory).
    #[serde(
        default,
        deserialize_with = "skip_value",
        serialize_with = "empty_list"
    )]
    tlog_entries: (),
}

fn skip_value<'de, D: serde::Deserializer<'de>>(d: D) -> Result<(), D::Error> {
    serde::de::IgnoredAny::deserialize(d).map(|_| ())
}

fn empty_list<S: serde::Serializer>(_: &(), s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(std::iter::empty::<()>())
}

#[derive(Debug, Serialize, Deserialize)]
struct KeyHint {
    #[serde(default)]
    hint: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    payload: String,
    payload_type: String,
    signatures: Vec<EnvelopeSignature>,
}

#[derive(Debug, Serialize, Deserialize)]
struct EnvelopeSignature {
    sig: String,
    #[serde(default)]
    keyid: String,
}

/// The in-toto statement.
#[derive(Debug, Serialize, Deserialize)]
struct Statement {
    #[serde(rename = "_type")]
    kind: String,
    subject: Vec<Subject>,
    #[serde(rename = "predicateType")]
    predicate_type: String,
    predicate: Predicate,
}

#[derive(Debug, Serialize, Deserialize)]
struct Subject {
    name: String,
    digest: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Predicate {
    serialization: Serialization,
    resources: Vec<Resource>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Serialization {
    method: String,
    hash_type: String,
    #[serde(default)]
    allow_symlinks: bool,
    #[serde(default)]
    ignore_paths: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Resource {
    name: String,
    algorithm: String,
    digest: String,
}

/// DSSE's pre-authentication encoding: what is actually signed.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

/// OpenSSF Model Signing's key hint: the SHA-256 of the key's SubjectPublicKeyInfo PEM
/// text (LF line ends, 64 columns, final newline), as `cryptography` serializes it.
pub fn key_hint(key: &PublicKey) -> String {
    data_encoding::HEXLOWER.encode(&Sha256::digest(key.to_pem().as_bytes()))
}

/// Whether `path` is one of `ignored` or inside one (paths from the folder's top, as the
/// reference tool matches them).
fn is_ignored<S: AsRef<str>>(ignored: &[S], path: &str) -> bool {
    ignored.iter().any(|p| {
        let p = p.as_ref();
        path == p || path.strip_prefix(p).is_some_and(|r| r.starts_with('/'))
    })
}

/// The order the reference tool lists files in: by path components, so `a/b` sorts
/// before `a-c` (Python's `PurePosixPath` ordering).
fn component_order(a: &str, b: &str) -> std::cmp::Ordering {
    a.split('/').cmp(b.split('/'))
}

/// Writes a signature bundle for dataset `root` (its `manifest`), signed by `key`, listing
/// every file's BLAKE3 digest; the subject is named by the root, which binds the signature
/// to this dataset (its executable bits and Hub ids too). A dataset with a file named
/// `model.sig` at its top cannot be signed this way (the signature would take its place).
pub fn sign_manifest(
    root: &crate::Hash,
    manifest: &Manifest,
    key: &SecretKey,
) -> Result<Vec<u8>, BundleError> {
    if manifest.entry(SIGNATURE_FILE).is_some() {
        return Err(BundleError::Mismatch(format!(
            "the dataset has a file named {SIGNATURE_FILE}, where its signature would go"
        )));
    }
    // Every file is listed, and only the signature itself ignored: the reference verifier
    // (given no hashing config) takes its ignore list from here, so it checks every file
    // too, and the signature covers the whole dataset.
    let ignore_paths = vec![SIGNATURE_FILE.to_string()];
    let mut entries: Vec<&ManifestEntry> = manifest.entries().iter().collect();
    entries.sort_by(|a, b| component_order(&a.path, &b.path));
    let algorithm = FileDigest::Blake3;
    let mut subject_digest = Sha256::new();
    let resources = entries
        .iter()
        .map(|e| {
            let digest = *e.hash.as_bytes();
            subject_digest.update(digest);
            Resource {
                name: e.path.clone(),
                algorithm: algorithm.name().into(),
                digest: data_encoding::HEXLOWER.encode(&digest),
            }
        })
        .collect();
    let statement = Statement {
        kind: STATEMENT_TYPE.into(),
        subject: vec![Subject {
            name: root.to_string(),
            digest: [(
                "sha256".to_string(),
                data_encoding::HEXLOWER.encode(&subject_digest.finalize()),
            )]
            .into(),
        }],
        predicate_type: PREDICATE_TYPE.into(),
        predicate: Predicate {
            serialization: Serialization {
                method: "files".into(),
                hash_type: algorithm.name().into(),
                allow_symlinks: false,
                ignore_paths,
            },
            resources,
        },
    };
    let payload = serde_json::to_vec(&statement).unwrap_or_default();
    let sig = key.sign_dsse(&pae(PAYLOAD_TYPE, &payload));
    let bundle = BundleJson {
        media_type: BUNDLE_MEDIA_TYPE.into(),
        verification_material: VerificationMaterial {
            public_key: Some(KeyHint {
                hint: key_hint(&key.public()),
            }),
            tlog_entries: (),
        },
        dsse_envelope: Envelope {
            payload: data_encoding::BASE64.encode(&payload),
            payload_type: PAYLOAD_TYPE.into(),
            signatures: vec![EnvelopeSignature {
                sig: data_encoding::BASE64.encode(&sig),
                keyid: String::new(),
            }],
        },
    };
    // Compact, and no field the reference verifier does not know: it refuses unknown ones.
    Ok(serde_json::to_vec(&bundle).unwrap_or_default())
}

/// A parsed bundle whose signature is not yet checked.
#[derive(Debug)]
pub struct SignatureBundle {
    hint: String,
    payload: Vec<u8>,
    signature: Vec<u8>,
    statement: Statement,
}

impl SignatureBundle {
    /// Parses a bundle, within [`MAX_SIGNATURE_BYTES`]; checks its shape, not its signature.
    /// Every list a signer controls is bounded before it is used: one subject with one
    /// digest, at most [`MAX_IGNORE_PATHS`] ignore paths, at most `MAX_ENTRIES` files; the
    /// key hint is empty or 64 hex digits.
    pub fn parse(bytes: &[u8]) -> Result<Self, BundleError> {
        if bytes.len() > MAX_SIGNATURE_BYTES {
            return Err(BundleError::TooLarge(bytes.len()));
        }
        let bundle: BundleJson =
            serde_json::from_slice(bytes).map_err(|e| BundleError::Malformed(e.to_string()))?;
        if !bundle
            .media_type
            .starts_with("application/vnd.dev.sigstore.bundle")
        {
            return Err(BundleError::Malformed(format!(
                "media type {:?} is not a Sigstore bundle",
                bundle.media_type
            )));
        }
        let envelope = bundle.dsse_envelope;
        if envelope.payload_type != PAYLOAD_TYPE {
            return Err(BundleError::Malformed(format!(
                "payload type {:?} is not an in-toto statement",
                envelope.payload_type
            )));
        }
        // The reference verifier checks the first signature only; so does this.
        let Some(only) = envelope.signatures.first() else {
            return Err(BundleError::Malformed(
                "no signature in the envelope".into(),
            ));
        };
        let signature = data_encoding::BASE64
            .decode(only.sig.as_bytes())
            .map_err(|_| BundleError::Malformed("the signature is not base64".into()))?;
        let payload = data_encoding::BASE64
            .decode(envelope.payload.as_bytes())
            .map_err(|_| BundleError::Malformed("the payload is not base64".into()))?;
        let statement: Statement = serde_json::from_slice(&payload)
            .map_err(|e| BundleError::Malformed(format!("statement: {e}")))?;
        if statement.kind != STATEMENT_TYPE || statement.predicate_type != PREDICATE_TYPE {
            return Err(BundleError::Malformed(format!(
                "statement {:?} with predicate {:?} is not OpenSSF Model Signing's",
                statement.kind, statement.predicate_type
            )));
        }
        if statement.predicate.serialization.method != "files" {
            return Err(BundleError::Malformed(format!(
                "serialization {:?}: Commons reads per-file signatures (\"files\") only",
                statement.predicate.serialization.method
            )));
        }
        let serialization = &statement.predicate.serialization;
        if serialization.ignore_paths.len() > MAX_IGNORE_PATHS {
            return Err(BundleError::Malformed(format!(
                "{} ignore paths, more than {MAX_IGNORE_PATHS}",
                serialization.ignore_paths.len()
            )));
        }
        if statement.predicate.resources.len() > crate::manifest::MAX_ENTRIES {
            return Err(BundleError::Malformed(format!(
                "{} files, more than a dataset holds ({})",
                statement.predicate.resources.len(),
                crate::manifest::MAX_ENTRIES
            )));
        }
        match statement.subject.as_slice() {
            [one] if one.digest.len() == 1 => {}
            _ => {
                return Err(BundleError::Malformed(
                    "a statement of OpenSSF Model Signing has one subject with one digest".into(),
                ))
            }
        }
        let hint = bundle
            .verification_material
            .public_key
            .map(|k| k.hint)
            .unwrap_or_default();
        if !(hint.is_empty() || (hint.len() == 64 && hint.bytes().all(|b| b.is_ascii_hexdigit()))) {
            return Err(BundleError::Malformed(
                "the key hint is not a SHA-256 in hex".into(),
            ));
        }
        Ok(Self {
            hint: hint.to_ascii_lowercase(),
            payload,
            signature,
            statement,
        })
    }

    /// The key hint the signer wrote (SHA-256 of its public key), possibly empty.
    pub fn hint(&self) -> &str {
        &self.hint
    }

    /// Whether the hint names `key` (an empty hint names no key and every key).
    pub fn hints_at(&self, key: &PublicKey) -> bool {
        self.hint.is_empty() || self.hint == key_hint(key)
    }

    /// The digest algorithm of the listed files.
    pub fn file_digest(&self) -> Result<FileDigest, BundleError> {
        FileDigest::parse(&self.statement.predicate.serialization.hash_type)
    }

    /// Checks the DSSE signature with `key`.
    pub fn verify_signature(&self, key: &PublicKey) -> Result<(), BundleError> {
        key.verify_dsse(&pae(PAYLOAD_TYPE, &self.payload), &self.signature)?;
        Ok(())
    }

    /// Checks the statement lists exactly the files of dataset `root` (its `manifest`),
    /// with their digests, and that the subject digest is the one those digests give. Every
    /// file counts, ignored paths too: a file the signature does not cover is "not
    /// signed" (`add` leaves a signed folder's ignored files out of the dataset). A subject
    /// named by a dataset root (what Commons writes) must name `root`. A manifest without
    /// SHA-256 ids cannot be checked against a SHA-256 statement (a clear error says so).
    pub fn check_manifest(
        &self,
        root: &crate::Hash,
        manifest: &Manifest,
    ) -> Result<(), BundleError> {
        let subject = &self.statement.subject[0];
        if let Ok(named) = subject.name.parse::<crate::Hash>() {
            if named != *root {
                return Err(BundleError::Mismatch(format!(
                    "it signs dataset {named}, not {root}"
                )));
            }
        }
        let mut entries: Vec<&ManifestEntry> = manifest.entries().iter().collect();
        entries.sort_by(|a, b| component_order(&a.path, &b.path));
        let listed = &self.statement.predicate.resources;
        let mut resources: Vec<&Resource> = listed.iter().collect();
        resources.sort_by(|a, b| component_order(&a.name, &b.name));
        let not_signed = |path: &str| BundleError::Mismatch(format!("{path} is not signed"));
        let not_held =
            |path: &str| BundleError::Mismatch(format!("{path} is signed but not in the dataset"));
        let (mut e, mut r) = (entries.iter().peekable(), resources.iter().peekable());
        loop {
            match (e.peek(), r.peek()) {
                (None, None) => break,
                (Some(entry), None) => return Err(not_signed(&entry.path)),
                (None, Some(res)) => return Err(not_held(&res.name)),
                (Some(entry), Some(res)) => match component_order(&entry.path, &res.name) {
                    std::cmp::Ordering::Less => return Err(not_signed(&entry.path)),
                    std::cmp::Ordering::Greater => return Err(not_held(&res.name)),
                    std::cmp::Ordering::Equal => {
                        check_digest(entry, res)?;
                        e.next();
                        r.next();
                    }
                },
            }
        }
        // The subject digest covers the raw digests in the order they are listed.
        let mut subject_digest = Sha256::new();
        for res in listed {
            subject_digest.update(decode_digest(res)?);
        }
        let computed = data_encoding::HEXLOWER.encode(&subject_digest.finalize());
        if subject.digest.get("sha256") == Some(&computed) {
            Ok(())
        } else {
            Err(BundleError::Mismatch(
                "the statement's subject digest is not the digest of its files".into(),
            ))
        }
    }

    /// Whether the statement lists its files by SHA-256 (then the manifest needs Hub ids).
    pub fn needs_sha256(&self) -> bool {
        self.statement
            .predicate
            .resources
            .iter()
            .any(|r| r.algorithm == "sha256")
    }

    /// Checks signature and content together.
    pub fn verify(
        &self,
        key: &PublicKey,
        root: &crate::Hash,
        manifest: &Manifest,
    ) -> Result<(), BundleError> {
        self.verify_signature(key)?;
        self.check_manifest(root, manifest)
    }

    /// The paths the signer left out of what it signed (the folder's top is where they
    /// count from): what `add` leaves out of a signed folder's dataset.
    pub fn ignore_paths(&self) -> &[String] {
        &self.statement.predicate.serialization.ignore_paths
    }

    /// Whether `path` (from the folder's top) is one the signer left out.
    pub fn ignores(&self, path: &str) -> bool {
        is_ignored(self.ignore_paths(), path)
    }
}

/// A listed file's digest, as bytes.
fn decode_digest(res: &Resource) -> Result<Vec<u8>, BundleError> {
    data_encoding::HEXLOWER_PERMISSIVE
        .decode(res.digest.as_bytes())
        .map_err(|_| BundleError::Malformed(format!("digest of {} is not hex", res.name)))
}

/// Checks one listed file against the manifest's entry for the same path.
fn check_digest(entry: &ManifestEntry, res: &Resource) -> Result<(), BundleError> {
    let algorithm = FileDigest::parse(&res.algorithm)?;
    let held = algorithm.of(entry).ok_or_else(|| {
        BundleError::Mismatch(format!(
            "{} is signed by its {} digest, which this manifest does not record (add the \
             folder with --hub-ids)",
            entry.path,
            algorithm.name()
        ))
    })?;
    let signed = decode_digest(res)?;
    if signed != held {
        return Err(BundleError::Mismatch(format!(
            "{}: signed {} {} but the dataset holds {}",
            entry.path,
            algorithm.name(),
            res.digest,
            data_encoding::HEXLOWER.encode(&held)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        hub::HubHasher,
        provenance::{KeyAlgorithm, SecretKey},
        Hash,
    };

    /// The folder the reference tool signed for the vectors in `tests/vectors/openssf/`
    /// (model_signing 1.1.1), less its `.gitignore`, which the bundles ignore (as `add`
    /// leaves it out of the dataset).
    const FILES: &[(&str, &[u8])] = &[
        ("config.json", b"hello world\n"),
        ("empty.txt", b""),
        ("sub/weights.bin", b"\x00\x01\x02weights"),
    ];

    fn vector(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/tests/vectors/openssf/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn manifest(files: &[(&str, &[u8])], hub_ids: bool) -> Manifest {
        let entries = files
            .iter()
            .map(|(path, data)| {
                let mut hasher = HubHasher::new(data.len() as u64);
                hasher.update(data);
                ManifestEntry {
                    path: path.to_string(),
                    size: data.len() as u64,
                    hash: Hash::of(data),
                    executable: false,
                    hub: if hub_ids { hasher.finish(false) } else { None },
                }
            })
            .collect();
        Manifest::new(entries).expect("manifest")
    }

    fn reference_key() -> PublicKey {
        PublicKey::parse(&String::from_utf8(vector("pub.pem")).expect("utf-8")).expect("key")
    }

    fn check(
        bundle: &SignatureBundle,
        key: &PublicKey,
        files: &[(&str, &[u8])],
    ) -> Result<(), BundleError> {
        let m = manifest(files, false);
        bundle.verify(key, &m.hash(), &m)
    }

    #[test]
    fn bundles_signed_by_the_reference_tool_verify() {
        let key = reference_key();
        let blake3 = SignatureBundle::parse(&vector("blake3.model.sig")).expect("parses");
        assert!(
            blake3.hints_at(&key),
            "the hint is the SHA-256 of the key's PEM"
        );
        check(&blake3, &key, FILES).expect("BLAKE3 bundle");
        assert!(blake3.ignores(".gitignore") && !blake3.ignores("sub/.gitignore"));
        let sha256 = SignatureBundle::parse(&vector("sha256.model.sig")).expect("parses");
        assert!(sha256.needs_sha256());
        let with_ids = manifest(FILES, true);
        sha256
            .verify(&key, &with_ids.hash(), &with_ids)
            .expect("SHA-256 bundle");
        let err = check(&sha256, &key, FILES).expect_err("no ids");
        assert!(err.to_string().contains("--hub-ids"), "{err}");
    }

    #[test]
    fn a_file_under_an_ignored_path_is_not_covered_so_not_signed() {
        let key = reference_key();
        let bundle = SignatureBundle::parse(&vector("blake3.model.sig")).expect("parses");
        for extra in [".gitignore", ".git/config", ".github/workflows/x.yml"] {
            let mut files = FILES.to_vec();
            files.push((extra, b"[core]\nfsmonitor = evil\n"));
            let err = check(&bundle, &key, &files).expect_err("uncovered");
            assert!(
                err.to_string().contains(&format!("{extra} is not signed")),
                "{err}"
            );
        }
    }

    #[test]
    fn a_changed_missing_or_extra_file_or_another_key_fails() {
        let key = reference_key();
        let bundle = SignatureBundle::parse(&vector("blake3.model.sig")).expect("parses");
        let mut changed = FILES.to_vec();
        changed[0].1 = b"hello world?";
        let err = check(&bundle, &key, &changed).expect_err("changed");
        assert!(err.to_string().contains("config.json"), "{err}");
        let err = check(&bundle, &key, &FILES[..2]).expect_err("missing");
        assert!(err.to_string().contains("sub/weights.bin"), "{err}");
        let mut extra = FILES.to_vec();
        extra.push(("sub/new.bin", b"x"));
        let err = check(&bundle, &key, &extra).expect_err("extra");
        assert!(
            err.to_string().contains("sub/new.bin is not signed"),
            "{err}"
        );
        let other = SecretKey::from_seed(KeyAlgorithm::P256, &[5; 32]).expect("key");
        assert!(!bundle.hints_at(&other.public()));
        assert!(matches!(
            check(&bundle, &other.public(), FILES),
            Err(BundleError::Key(_))
        ));
    }

    #[test]
    fn a_bundle_written_here_covers_every_file_binds_its_root_and_no_byte_of_it_can_change() {
        let key = SecretKey::from_seed(KeyAlgorithm::P256, &[8; 32]).expect("key");
        let mut files = FILES.to_vec();
        files.push((".gitattributes", b"* text=auto\n"));
        let m = manifest(&files, false);
        let bytes = sign_manifest(&m.hash(), &m, &key).expect("signs");
        let bundle = SignatureBundle::parse(&bytes).expect("parses");
        assert!(bundle.hints_at(&key.public()));
        bundle
            .verify(&key.public(), &m.hash(), &m)
            .expect("verifies");
        assert_eq!(
            bundle.statement.predicate.resources.len(),
            files.len(),
            "every file is listed, .gitattributes too"
        );
        // Bound to its root: the same files in another dataset (other executable bits,
        // other Hub ids) do not pass.
        let err = bundle
            .verify(&key.public(), &Hash::of(b"another root"), &m)
            .expect_err("another root");
        assert!(err.to_string().contains("it signs dataset"), "{err}");
        let mut with_sig = files.clone();
        with_sig.push((SIGNATURE_FILE, b"{}"));
        let m2 = manifest(&with_sig, false);
        assert!(sign_manifest(&m2.hash(), &m2, &key).is_err());
        let json: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
        let sig = json["dsseEnvelope"]["signatures"][0]["sig"]
            .as_str()
            .expect("sig");
        let mut raw = data_encoding::BASE64.decode(sig.as_bytes()).expect("b64");
        for i in 0..raw.len() {
            raw[i] ^= 0x40;
            let mut bad = json.clone();
            bad["dsseEnvelope"]["signatures"][0]["sig"] = data_encoding::BASE64.encode(&raw).into();
            let bad = serde_json::to_vec(&bad).expect("json");
            let parsed = SignatureBundle::parse(&bad).expect("still parses");
            assert!(
                parsed.verify(&key.public(), &m.hash(), &m).is_err(),
                "byte {i}"
            );
            raw[i] ^= 0x40;
        }
    }

    #[test]
    fn malformed_or_oversized_bundles_are_clear_errors() {
        let good = vector("blake3.model.sig");
        let json: serde_json::Value = serde_json::from_slice(&good).expect("json");
        let mut cases: Vec<Vec<u8>> = vec![
            Vec::new(),
            b"{}".to_vec(),
            b"[1,2]".to_vec(),
            good[..good.len() / 2].to_vec(),
            vec![b' '; MAX_SIGNATURE_BYTES + 1],
        ];
        let many_paths: Vec<String> = (0..=MAX_IGNORE_PATHS).map(|i| format!("p{i}")).collect();
        let payload = |f: &dyn Fn(&mut serde_json::Value)| {
            let b64 = json["dsseEnvelope"]["payload"].as_str().expect("payload");
            let mut statement: serde_json::Value =
                serde_json::from_slice(&data_encoding::BASE64.decode(b64.as_bytes()).expect("b64"))
                    .expect("statement");
            f(&mut statement);
            serde_json::json!(
                data_encoding::BASE64.encode(&serde_json::to_vec(&statement).expect("json"))
            )
        };
        for (pointer, value) in [
            ("/mediaType", serde_json::json!("text/plain")),
            ("/dsseEnvelope/payloadType", serde_json::json!("x")),
            ("/dsseEnvelope/payload", serde_json::json!("!!")),
            ("/dsseEnvelope/payload", serde_json::json!("e30=")),
            ("/dsseEnvelope/signatures", serde_json::json!([])),
            ("/dsseEnvelope/signatures/0/sig", serde_json::json!("%%")),
            (
                "/verificationMaterial/publicKey/hint",
                serde_json::json!("aaaaaaaaaaaaaaa€"),
            ),
            (
                "/verificationMaterial/publicKey/hint",
                serde_json::json!("\u{1b}[31m"),
            ),
            (
                "/dsseEnvelope/payload",
                payload(&|s| {
                    s["predicate"]["serialization"]["ignore_paths"] = serde_json::json!(many_paths)
                }),
            ),
            (
                "/dsseEnvelope/payload",
                payload(&|s| s["subject"] = serde_json::json!([])),
            ),
            (
                "/dsseEnvelope/payload",
                payload(&|s| {
                    s["predicate"]["serialization"]["method"] = serde_json::json!("shards")
                }),
            ),
        ] {
            let mut bad = json.clone();
            *bad.pointer_mut(pointer).expect(pointer) = value;
            cases.push(serde_json::to_vec(&bad).expect("json"));
        }
        for case in cases {
            let err = SignatureBundle::parse(&case).expect_err("refused");
            assert!(!err.to_string().is_empty());
        }
        // Transparency-log entries are skipped unread, whatever they hold.
        let mut long_log = json.clone();
        long_log["verificationMaterial"]["tlogEntries"] = serde_json::json!(vec![0; 100_000]);
        let bytes = serde_json::to_vec(&long_log).expect("json");
        SignatureBundle::parse(&bytes).expect("tlog entries are not read");
    }
}
