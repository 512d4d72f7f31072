//! The ids the Hugging Face Hub gives files and commits, so data imported from the Hub (or
//! served to its clients) is checked and named the way the Hub checks and names it.
//!
//! - A file's **git blob id**: SHA-1 of `"blob {size}\0"` followed by the content (what git
//!   and the Hub's tree listing call `oid`).
//! - A large (LFS) file's **SHA-256** of its content (`lfs.oid`, also its `X-Linked-Etag`);
//!   its tree `oid` is then the git blob id of its LFS *pointer* text, which follows from
//!   the SHA-256 and the size.
//! - An upstream **commit**: 40 hex digits, and the repository it belongs to.
//!
//! Format (in manifest version 2): `docs/formats.md`.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha1::Digest as _;

use crate::Hash;

/// Longest repository id accepted (`org/name`): the Hub allows 96 characters per part.
pub const MAX_REPO_ID_BYTES: usize = 96 * 2 + 1;
/// Longest `last_modified` text accepted.
pub const MAX_LAST_MODIFIED_BYTES: usize = 64;
/// Files this large or larger are LFS files on the Hub whatever their name (the Hub refuses
/// plain git files of 10 MB and more; 10 MiB here).
pub const LFS_MIN_SIZE: u64 = 10 << 20;
/// Extensions the Hub's default `.gitattributes` stores in LFS.
const LFS_EXTENSIONS: &[&str] = &[
    "7z",
    "arrow",
    "bin",
    "bz2",
    "ckpt",
    "ftz",
    "gguf",
    "gz",
    "h5",
    "joblib",
    "mlmodel",
    "model",
    "msgpack",
    "npy",
    "npz",
    "onnx",
    "ot",
    "parquet",
    "pb",
    "pickle",
    "pkl",
    "pt",
    "pth",
    "rar",
    "safetensors",
    "tar",
    "tflite",
    "tgz",
    "wasm",
    "xz",
    "zip",
    "zst",
];

/// Whether the Hub would store a file with this path and size in LFS (by default rules:
/// used when adding a local folder, where no listing says so).
pub fn is_lfs_by_default(path: &str, size: u64) -> bool {
    if size >= LFS_MIN_SIZE {
        return true;
    }
    let name = path.rsplit('/').next().unwrap_or(path);
    // Case-sensitive, as git attributes patterns (`*.safetensors`) are.
    name.rsplit_once('.')
        .is_some_and(|(_, ext)| LFS_EXTENSIONS.contains(&ext))
}

macro_rules! hex_id {
    ($(#[$doc:meta])* $name:ident, $len:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; $len]);

        impl $name {
            /// Parses lowercase or uppercase hex of exactly the right length.
            pub fn parse(s: &str) -> Result<Self, HubIdError> {
                let bytes = data_encoding::HEXLOWER_PERMISSIVE
                    .decode(s.as_bytes())
                    .ok()
                    .and_then(|b| <[u8; $len]>::try_from(b).ok())
                    .ok_or_else(|| HubIdError::BadHex {
                        what: stringify!($name),
                        len: $len * 2,
                        found: s.chars().take(80).collect(),
                    })?;
                Ok(Self(bytes))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&data_encoding::HEXLOWER.encode(&self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({self})", stringify!($name))
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if s.is_human_readable() {
                    s.serialize_str(&self.to_string())
                } else {
                    self.0.serialize(s)
                }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                if d.is_human_readable() {
                    let s = String::deserialize(d)?;
                    Self::parse(&s).map_err(serde::de::Error::custom)
                } else {
                    <[u8; $len]>::deserialize(d).map(Self)
                }
            }
        }
    };
}

hex_id!(
    /// A git object id (SHA-1): a file's blob id or a commit.
    GitOid,
    20
);
hex_id!(
    /// A SHA-256 digest: an LFS file's id.
    Sha256,
    32
);

/// Why a Hub id or repository reference was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HubIdError {
    /// Not hex of the expected length.
    #[error("{what} must be {len} hex digits, not {found:?}")]
    BadHex {
        /// Which id.
        what: &'static str,
        /// Hex digits expected.
        len: usize,
        /// What was given (cut at 80 characters).
        found: String,
    },
    /// Not a repository id the Hub accepts.
    #[error("{0:?} is not a Hub repository id (org/name: letters, digits, '-', '_', '.')")]
    BadRepo(String),
    /// Neither `model` nor `dataset`.
    #[error("{0:?} is not a repository type (model or dataset)")]
    BadKind(String),
    /// `last_modified` too long or not printable ASCII.
    #[error("last-modified time {0:?} is not printable ASCII of at most 64 bytes")]
    BadTime(String),
}

/// The Hub ids of one file: recorded in the manifest, checked against an origin's listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HubIds {
    /// The tree `oid`: git blob id of the content, or of the LFS pointer for an LFS file.
    pub git_oid: GitOid,
    /// SHA-256 of the content (the `lfs.oid` of an LFS file).
    pub sha256: Sha256,
    /// Whether the file is stored in LFS (its ETag is then the SHA-256, otherwise the git id).
    pub lfs: bool,
}

impl HubIds {
    /// The id the Hub sends as `ETag` (non-LFS) or `X-Linked-Etag` (LFS) and the
    /// `huggingface_hub` cache names the file's blob by.
    pub fn etag(&self) -> String {
        if self.lfs {
            self.sha256.to_string()
        } else {
            self.git_oid.to_string()
        }
    }
}

/// A file's ids as an origin's tree listing gives them: what its content must hash to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListedIds {
    /// The tree `oid` (of the content, or of the LFS pointer).
    pub git_oid: GitOid,
    /// `lfs.oid` for an LFS file.
    pub lfs_sha256: Option<Sha256>,
}

impl ListedIds {
    /// The ids to record for content that hashed to `computed` (from
    /// `HubHasher::finish(false)`, the content's own git id), if they agree with the
    /// listing: the SHA-256 for an LFS file, the git blob id otherwise.
    pub fn confirm(&self, computed: &HubIds) -> Option<HubIds> {
        let agrees = match self.lfs_sha256 {
            Some(sha256) => computed.sha256 == sha256,
            None => computed.git_oid == self.git_oid,
        };
        agrees.then_some(HubIds {
            git_oid: self.git_oid,
            sha256: computed.sha256,
            lfs: self.lfs_sha256.is_some(),
        })
    }

    /// Whether ids recorded in a manifest (by another node) say what this listing says.
    pub fn matches(&self, recorded: &HubIds) -> bool {
        recorded.git_oid == self.git_oid
            && recorded.lfs == self.lfs_sha256.is_some()
            && self.lfs_sha256.is_none_or(|s| s == recorded.sha256)
    }

    /// The id the listing names the file by, as a peer is asked for it.
    pub fn file_id(&self) -> crate::wire::HubFileId {
        match self.lfs_sha256 {
            Some(s) => crate::wire::HubFileId::Sha256(s),
            None => crate::wire::HubFileId::GitOid(self.git_oid),
        }
    }

    /// The id the listing names the file by (SHA-256 for LFS, git blob id otherwise), as
    /// the Hub's ETag.
    pub fn etag(&self) -> String {
        match self.lfs_sha256 {
            Some(s) => s.to_string(),
            None => self.git_oid.to_string(),
        }
    }
}

/// The text of the LFS pointer git stores for a file with this SHA-256 and size.
pub fn lfs_pointer(sha256: &Sha256, size: u64) -> String {
    format!("version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n")
}

/// The git blob id of `content`.
pub fn git_blob_oid(content: &[u8]) -> GitOid {
    let mut h = sha1::Sha1::new();
    h.update(format!("blob {}\0", content.len()).as_bytes());
    h.update(content);
    GitOid(h.finalize().into())
}

/// Computes a file's [`HubIds`] in the same pass that reads it for BLAKE3: feed it every
/// byte, in order.
#[derive(Clone)]
pub struct HubHasher {
    sha256: sha2::Sha256,
    sha1: sha1::Sha1,
    size: u64,
    seen: u64,
}

impl HubHasher {
    /// A hasher for a file of `size` bytes (git's blob header holds the size).
    pub fn new(size: u64) -> Self {
        let mut sha1 = sha1::Sha1::new();
        sha1.update(format!("blob {size}\0").as_bytes());
        Self {
            sha256: sha2::Sha256::new(),
            sha1,
            size,
            seen: 0,
        }
    }

    /// Feeds the next bytes of the file.
    pub fn update(&mut self, bytes: &[u8]) {
        self.seen += bytes.len() as u64;
        self.sha256.update(bytes);
        self.sha1.update(bytes);
    }

    /// The ids, `lfs` saying whether the file is an LFS file. `None` when the bytes fed do not
    /// add up to the size given (the git id would be wrong).
    pub fn finish(self, lfs: bool) -> Option<HubIds> {
        if self.seen != self.size {
            return None;
        }
        let sha256 = Sha256(self.sha256.finalize().into());
        let git_oid = if lfs {
            git_blob_oid(lfs_pointer(&sha256, self.size).as_bytes())
        } else {
            GitOid(self.sha1.finalize().into())
        };
        Some(HubIds {
            git_oid,
            sha256,
            lfs,
        })
    }
}

/// Hub repository type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RepoKind {
    /// A model repository (`/api/models/…`, `/{repo}/resolve/…`).
    Model,
    /// A dataset repository (`/api/datasets/…`, `/datasets/{repo}/resolve/…`).
    Dataset,
}

impl RepoKind {
    /// Parses `model`/`dataset` (also the plural the API paths use).
    pub fn parse(s: &str) -> Result<Self, HubIdError> {
        match s {
            "model" | "models" => Ok(Self::Model),
            "dataset" | "datasets" => Ok(Self::Dataset),
            _ => Err(HubIdError::BadKind(s.to_string())),
        }
    }

    /// `model` or `dataset`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Model => "model",
            Self::Dataset => "dataset",
        }
    }

    /// The plural used in API paths: `models` or `datasets`.
    pub fn plural(&self) -> &'static str {
        match self {
            Self::Model => "models",
            Self::Dataset => "datasets",
        }
    }
}

impl fmt::Display for RepoKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Checks a Hub repository id: `name` or `org/name`, each part 1–96 of `[A-Za-z0-9._-]`,
/// not `.` or `..`, nor starting with `-` or `.`.
pub fn validate_repo_id(repo: &str) -> Result<(), HubIdError> {
    let bad = || HubIdError::BadRepo(repo.chars().take(200).collect());
    if repo.len() > MAX_REPO_ID_BYTES {
        return Err(bad());
    }
    let parts: Vec<&str> = repo.split('/').collect();
    if parts.is_empty() || parts.len() > 2 {
        return Err(bad());
    }
    for part in parts {
        let ok = (1..=96).contains(&part.len())
            && !part.starts_with(['-', '.'])
            && part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !ok {
            return Err(bad());
        }
    }
    Ok(())
}

/// Where a dataset came from: a commit of a Hub repository.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Upstream {
    /// Model or dataset repository.
    pub kind: RepoKind,
    /// The repository id, `org/name`.
    pub repo: String,
    /// The commit the files are from.
    pub commit: GitOid,
    /// The commit's time as the origin gave it (`lastModified`, ISO 8601), if known.
    pub last_modified: Option<String>,
}

impl Upstream {
    /// Checks the repository id and time against the rules above.
    pub fn validate(&self) -> Result<(), HubIdError> {
        validate_repo_id(&self.repo)?;
        if let Some(t) = &self.last_modified {
            if t.len() > MAX_LAST_MODIFIED_BYTES || !t.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(HubIdError::BadTime(t.chars().take(80).collect()));
            }
        }
        Ok(())
    }

    /// The DHT key under which holders of this commit are announced (see
    /// [`hub_commit_key`]).
    pub fn dht_key(&self) -> Hash {
        hub_commit_key(self.kind, &self.repo, &self.commit)
    }
}

/// The DHT key for "who holds commit `commit` of Hub repository `repo`": a BLAKE3 hash over
/// a domain tag and the three fields, so it can never equal a blob or dataset hash.
pub fn hub_commit_key(kind: RepoKind, repo: &str, commit: &GitOid) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(b"commons/hub-commit/1\0");
    h.update(kind.as_str().as_bytes());
    h.update(b"\0");
    h.update(repo.as_bytes());
    h.update(b"\0");
    h.update(&commit.0);
    Hash::from(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_ids_match_git() {
        // `printf 'hello\n' | git hash-object --stdin`
        assert_eq!(
            git_blob_oid(b"hello\n").to_string(),
            "ce013625030ba8dba906f756967f9e9ca394464a"
        );
        let mut h = HubHasher::new(6);
        h.update(b"hel");
        h.update(b"lo\n");
        let ids = h.finish(false).expect("sizes add up");
        assert_eq!(ids.git_oid, git_blob_oid(b"hello\n"));
        assert_eq!(
            ids.sha256.to_string(),
            "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
        );
        assert_eq!(ids.etag(), ids.git_oid.to_string());
    }

    #[test]
    fn an_lfs_file_is_named_by_its_pointer_and_sha256() {
        let mut h = HubHasher::new(6);
        h.update(b"hello\n");
        let ids = h.finish(true).expect("sizes add up");
        let pointer = lfs_pointer(&ids.sha256, 6);
        assert!(pointer.contains("oid sha256:5891b5b5"));
        assert_eq!(ids.git_oid, git_blob_oid(pointer.as_bytes()));
        assert_eq!(ids.etag(), ids.sha256.to_string());
    }

    #[test]
    fn listed_ids_confirm_only_matching_content() {
        let mut h = HubHasher::new(6);
        h.update(b"hello\n");
        let computed = h.finish(false).expect("sizes add up");
        let plain = ListedIds {
            git_oid: computed.git_oid,
            lfs_sha256: None,
        };
        let recorded = plain.confirm(&computed).expect("same content");
        assert!(plain.matches(&recorded));
        let lfs = ListedIds {
            git_oid: GitOid([9; 20]),
            lfs_sha256: Some(computed.sha256),
        };
        let recorded_lfs = lfs.confirm(&computed).expect("same sha256");
        assert!(recorded_lfs.lfs && recorded_lfs.git_oid == GitOid([9; 20]));
        assert!(lfs.matches(&recorded_lfs) && !plain.matches(&recorded_lfs));
        let other = ListedIds {
            git_oid: GitOid([1; 20]),
            lfs_sha256: None,
        };
        assert!(other.confirm(&computed).is_none());
        let wrong_sha = ListedIds {
            git_oid: GitOid([9; 20]),
            lfs_sha256: Some(Sha256([0; 32])),
        };
        assert!(wrong_sha.confirm(&computed).is_none());
        assert!(!wrong_sha.matches(&recorded_lfs));
    }

    #[test]
    fn a_short_or_long_feed_gives_no_ids() {
        let mut h = HubHasher::new(7);
        h.update(b"hello\n");
        assert!(h.clone().finish(false).is_none());
        h.update(b"!!");
        assert!(h.finish(false).is_none());
    }

    #[test]
    fn ids_parse_and_print_as_hex_in_json_and_bytes_in_postcard() {
        let oid = GitOid::parse("CE013625030BA8DBA906F756967F9E9CA394464A").expect("hex");
        let json = serde_json::to_string(&oid).expect("json");
        assert_eq!(json, "\"ce013625030ba8dba906f756967f9e9ca394464a\"");
        assert_eq!(serde_json::from_str::<GitOid>(&json).expect("parses"), oid);
        assert_eq!(postcard::to_stdvec(&oid).expect("postcard").len(), 20);
        assert!(GitOid::parse("ce01").is_err());
        assert!(Sha256::parse(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn repository_ids_follow_the_hub_rules() {
        for ok in ["acme/model", "gpt2", "org-1/name_2.v3"] {
            assert_eq!(validate_repo_id(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "a/b/c",
            "../x",
            "a/..",
            "a/.hidden",
            "-a/b",
            "a b/c",
            "a/",
        ] {
            assert!(validate_repo_id(bad).is_err(), "{bad}");
        }
        assert!(validate_repo_id(&format!("a/{}", "x".repeat(97))).is_err());
    }

    #[test]
    fn default_lfs_rule() {
        assert!(is_lfs_by_default("w/model.safetensors", 10));
        assert!(is_lfs_by_default("data/train.parquet", 10));
        assert!(!is_lfs_by_default("data/train.PARQUET", 10));
        assert!(!is_lfs_by_default("config.json", 10));
        assert!(is_lfs_by_default("big.txt", LFS_MIN_SIZE));
    }

    #[test]
    fn commit_keys_differ_by_every_field() {
        let c = GitOid([1; 20]);
        let k = hub_commit_key(RepoKind::Model, "a/b", &c);
        assert_ne!(k, hub_commit_key(RepoKind::Dataset, "a/b", &c));
        assert_ne!(k, hub_commit_key(RepoKind::Model, "a/c", &c));
        assert_ne!(k, hub_commit_key(RepoKind::Model, "a/b", &GitOid([2; 20])));
    }
}
