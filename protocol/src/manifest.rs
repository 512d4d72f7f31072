//! The dataset manifest: which files a dataset has and which blob each one is.
//!
//! A manifest is itself stored as a blob; a dataset's address is the hash of its manifest's
//! canonical encoding. Canonical means: entries sorted by path bytes, no duplicates, and
//! exactly one byte string per manifest (the decoder re-encodes and compares), so the same
//! folder always yields the same dataset hash, whatever order the file system lists it in.
//!
//! Paths come from strangers, so every rule is enforced both when a manifest is built and
//! when one is parsed: relative, `/`-separated, UTF-8, no `..`, `.` or empty components, no
//! NUL or backslash, and bounded in length, depth and count. Format: `docs/formats.md`.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::{
    hub::{HubIdError, HubIds, Upstream},
    Hash,
};

/// Bytes every encoded manifest starts with, so a manifest blob is recognisable.
pub const MANIFEST_MAGIC: &[u8; 4] = b"CMNF";
/// The format version of a manifest without Hub ids (the same folder keeps the same root
/// it had before Hub ids existed).
pub const MANIFEST_VERSION: u32 = 1;
/// The format version of a manifest carrying Hub ids or an upstream commit.
pub const MANIFEST_VERSION_HUB: u32 = 2;
/// Largest encoded manifest accepted (64 MiB): bounds what a peer can make us parse.
pub const MAX_MANIFEST_BYTES: u64 = 64 << 20;
/// Most files one dataset may list.
pub const MAX_ENTRIES: usize = 1_000_000;
/// Longest path accepted, in bytes (Linux's `PATH_MAX`).
pub const MAX_PATH_BYTES: usize = 4096;
/// Longest single path component, in bytes (Linux's `NAME_MAX`).
pub const MAX_COMPONENT_BYTES: usize = 255;
/// Deepest folder nesting accepted.
pub const MAX_DEPTH: usize = 64;

/// One file of a dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// Relative, `/`-separated path inside the dataset.
    pub path: String,
    /// File size in bytes; must equal the blob's size.
    pub size: u64,
    /// The blob holding the file's bytes.
    pub hash: Hash,
    /// Whether the file is executable (Unix `x` bit).
    pub executable: bool,
    /// The file's Hugging Face Hub ids, when recorded (manifest version 2).
    pub hub: Option<HubIds>,
}

/// An entry as version 1 encodes it (no Hub ids).
#[derive(Serialize, Deserialize)]
struct EntryV1<'a> {
    path: std::borrow::Cow<'a, str>,
    size: u64,
    hash: Hash,
    executable: bool,
}

/// What is wrong with a path, in words a user can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PathProblem {
    /// Starts with `/`.
    Absolute,
    /// Has a `..` component, which could escape the target folder.
    ParentComponent,
    /// Has a `.` component (not canonical).
    CurrentComponent,
    /// Has an empty component (`a//b`, trailing `/`) or is empty.
    EmptyComponent,
    /// Contains a NUL byte.
    Nul,
    /// Contains a backslash, a separator on Windows.
    Backslash,
    /// Longer than [`MAX_PATH_BYTES`].
    TooLong,
    /// A component is longer than [`MAX_COMPONENT_BYTES`].
    ComponentTooLong,
    /// Deeper than [`MAX_DEPTH`].
    TooDeep,
}

impl std::fmt::Display for PathProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Absolute => "is absolute",
            Self::ParentComponent => "contains '..'",
            Self::CurrentComponent => "contains '.'",
            Self::EmptyComponent => "has an empty component",
            Self::Nul => "contains a NUL byte",
            Self::Backslash => "contains a backslash",
            Self::TooLong => "is longer than 4096 bytes",
            Self::ComponentTooLong => "has a component longer than 255 bytes",
            Self::TooDeep => "is nested deeper than 64 folders",
        })
    }
}

/// Why a manifest was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// The encoding is larger than [`MAX_MANIFEST_BYTES`].
    #[error("manifest is {len} bytes, more than the limit of {MAX_MANIFEST_BYTES}")]
    TooLarge {
        /// Size of the encoding.
        len: u64,
    },
    /// The bytes do not start with [`MANIFEST_MAGIC`]: this blob is not a manifest.
    #[error("not a Commons manifest")]
    NotAManifest,
    /// Written by a newer (or unknown) format version.
    #[error(
        "manifest format version {version} is not supported (this build reads {MANIFEST_VERSION} and {MANIFEST_VERSION_HUB})"
    )]
    UnsupportedVersion {
        /// The version found.
        version: u32,
    },
    /// The bytes do not decode.
    #[error("manifest is malformed: {0}")]
    Malformed(String),
    /// Decodes, but is not the canonical encoding of what it says.
    #[error("manifest is not in canonical form (entries unsorted or non-minimal encoding)")]
    NotCanonical,
    /// More than [`MAX_ENTRIES`] files.
    #[error("manifest lists {count} files, more than the limit of {MAX_ENTRIES}")]
    TooManyEntries {
        /// Number of entries.
        count: usize,
    },
    /// A path breaks the rules.
    #[error("manifest entry {path:?} {problem}")]
    InvalidPath {
        /// The offending path, as given.
        path: String,
        /// Which rule it breaks.
        problem: PathProblem,
    },
    /// Two entries have the same path.
    #[error("manifest lists {path:?} twice")]
    DuplicatePath {
        /// The repeated path.
        path: String,
    },
    /// The upstream repository or commit is not valid.
    #[error("manifest upstream: {0}")]
    Upstream(HubIdError),
    /// A path is both a file and a folder holding other files.
    #[error("manifest entry {path:?} is a file but also a folder of other entries")]
    FileIsAlsoFolder {
        /// The path used both ways.
        path: String,
    },
}

/// Checks one manifest path against the rules in the module doc.
pub fn validate_path(path: &str) -> Result<(), PathProblem> {
    if path.len() > MAX_PATH_BYTES {
        return Err(PathProblem::TooLong);
    }
    if path.contains('\0') {
        return Err(PathProblem::Nul);
    }
    if path.contains('\\') {
        return Err(PathProblem::Backslash);
    }
    if path.starts_with('/') {
        return Err(PathProblem::Absolute);
    }
    let mut depth = 0;
    for component in path.split('/') {
        depth += 1;
        match component {
            "" => return Err(PathProblem::EmptyComponent),
            "." => return Err(PathProblem::CurrentComponent),
            ".." => return Err(PathProblem::ParentComponent),
            c if c.len() > MAX_COMPONENT_BYTES => return Err(PathProblem::ComponentTooLong),
            _ => {}
        }
    }
    if depth > MAX_DEPTH {
        return Err(PathProblem::TooDeep);
    }
    Ok(())
}

/// The list of files in a dataset, always valid and in canonical order, and the Hub
/// commit it came from, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    entries: Vec<ManifestEntry>,
    upstream: Option<Upstream>,
}

/// Version 1's layout after the magic (see `docs/formats.md`).
#[derive(Serialize, Deserialize)]
struct EncodedV1<'a> {
    version: u32,
    #[serde(borrow)]
    entries: Vec<EntryV1<'a>>,
}

/// Version 2's layout after the magic: the upstream commit, then entries with Hub ids.
#[derive(Serialize, Deserialize)]
struct EncodedV2<'a> {
    version: u32,
    upstream: Option<Upstream>,
    entries: std::borrow::Cow<'a, [ManifestEntry]>,
}

impl Manifest {
    /// Builds a manifest from entries in any order, enforcing every rule.
    pub fn new(entries: Vec<ManifestEntry>) -> Result<Self, ManifestError> {
        Self::with_upstream(entries, None)
    }

    /// Like [`Manifest::new`], recording the Hub commit the files came from.
    pub fn with_upstream(
        mut entries: Vec<ManifestEntry>,
        upstream: Option<Upstream>,
    ) -> Result<Self, ManifestError> {
        entries.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
        Self::check(&entries, upstream.as_ref())?;
        Ok(Self { entries, upstream })
    }

    /// The Hub commit the files came from, if recorded.
    pub fn upstream(&self) -> Option<&Upstream> {
        self.upstream.as_ref()
    }

    /// Whether this manifest carries Hub ids or an upstream (and so encodes as version 2).
    pub fn has_hub_ids(&self) -> bool {
        self.upstream.is_some() || self.entries.iter().any(|e| e.hub.is_some())
    }

    /// The files, sorted by path bytes.
    pub fn entries(&self) -> &[ManifestEntry] {
        &self.entries
    }

    /// The file at `path`, if listed (entries are sorted by path bytes: a binary search).
    pub fn entry(&self, path: &str) -> Option<&ManifestEntry> {
        self.entries
            .binary_search_by(|e| e.path.as_bytes().cmp(path.as_bytes()))
            .ok()
            .map(|i| &self.entries[i])
    }

    /// Total bytes of all files.
    pub fn total_size(&self) -> u64 {
        self.entries.iter().map(|e| e.size).sum()
    }

    /// The canonical encoding: what is stored as the manifest blob and hashed.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = MANIFEST_MAGIC.to_vec();
        // Serializing strings and integers into a Vec cannot fail.
        let body = if self.has_hub_ids() {
            postcard::to_stdvec(&EncodedV2 {
                version: MANIFEST_VERSION_HUB,
                upstream: self.upstream.clone(),
                entries: std::borrow::Cow::Borrowed(&self.entries),
            })
        } else {
            postcard::to_stdvec(&EncodedV1 {
                version: MANIFEST_VERSION,
                entries: self
                    .entries
                    .iter()
                    .map(|e| EntryV1 {
                        path: std::borrow::Cow::Borrowed(&e.path),
                        size: e.size,
                        hash: e.hash,
                        executable: e.executable,
                    })
                    .collect(),
            })
        };
        out.extend(body.unwrap_or_default());
        out
    }

    /// The dataset's address: the hash of [`Manifest::to_bytes`].
    pub fn hash(&self) -> Hash {
        Hash::of(&self.to_bytes())
    }

    /// Parses untrusted bytes, refusing anything that is not a valid, canonical manifest.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ManifestError> {
        if bytes.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(ManifestError::TooLarge {
                len: bytes.len() as u64,
            });
        }
        let body = bytes
            .strip_prefix(MANIFEST_MAGIC)
            .ok_or(ManifestError::NotAManifest)?;
        // Read the version alone first so a future format gets a precise error.
        let (version, _) = postcard::take_from_bytes::<u32>(body)
            .map_err(|e| ManifestError::Malformed(e.to_string()))?;
        let malformed = |e: postcard::Error| ManifestError::Malformed(e.to_string());
        let ((entries, upstream), rest) = match version {
            MANIFEST_VERSION => {
                let (v1, rest) =
                    postcard::take_from_bytes::<EncodedV1<'_>>(body).map_err(malformed)?;
                let entries = v1
                    .entries
                    .into_iter()
                    .map(|e| ManifestEntry {
                        path: e.path.into_owned(),
                        size: e.size,
                        hash: e.hash,
                        executable: e.executable,
                        hub: None,
                    })
                    .collect();
                ((entries, None), rest)
            }
            MANIFEST_VERSION_HUB => {
                let (v2, rest) =
                    postcard::take_from_bytes::<EncodedV2<'_>>(body).map_err(malformed)?;
                ((v2.entries.into_owned(), v2.upstream), rest)
            }
            _ => return Err(ManifestError::UnsupportedVersion { version }),
        };
        if !rest.is_empty() {
            return Err(ManifestError::Malformed(format!(
                "{} trailing bytes",
                rest.len()
            )));
        }
        // Path rules first: they give the most useful error for a hostile manifest.
        Self::check(&entries, upstream.as_ref())?;
        let manifest = Self { entries, upstream };
        if manifest.to_bytes() != bytes {
            return Err(ManifestError::NotCanonical);
        }
        Ok(manifest)
    }

    /// Enforces count, path, uniqueness and file-versus-folder rules on sorted entries.
    fn check(entries: &[ManifestEntry], upstream: Option<&Upstream>) -> Result<(), ManifestError> {
        if let Some(up) = upstream {
            up.validate().map_err(ManifestError::Upstream)?;
        }
        if entries.len() > MAX_ENTRIES {
            return Err(ManifestError::TooManyEntries {
                count: entries.len(),
            });
        }
        for e in entries {
            validate_path(&e.path).map_err(|problem| ManifestError::InvalidPath {
                path: e.path.clone(),
                problem,
            })?;
        }
        let mut files: HashSet<&str> = HashSet::with_capacity(entries.len());
        for e in entries {
            if !files.insert(&e.path) {
                return Err(ManifestError::DuplicatePath {
                    path: e.path.clone(),
                });
            }
        }
        for e in entries {
            for (i, _) in e.path.match_indices('/') {
                let folder = &e.path[..i];
                if files.contains(folder) {
                    return Err(ManifestError::FileIsAlsoFolder {
                        path: folder.to_string(),
                    });
                }
            }
        }
        for pair in entries.windows(2) {
            if pair[0].path.as_bytes() >= pair[1].path.as_bytes() {
                return Err(ManifestError::NotCanonical);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str) -> ManifestEntry {
        ManifestEntry {
            path: path.to_string(),
            size: path.len() as u64,
            hash: Hash::of(path.as_bytes()),
            executable: false,
            hub: None,
        }
    }

    /// Encodes entries exactly as given, bypassing [`Manifest::new`]'s checks, the way a
    /// hostile peer could.
    fn raw_encoding(entries: Vec<ManifestEntry>, version: u32) -> Vec<u8> {
        let mut out = MANIFEST_MAGIC.to_vec();
        out.extend(
            postcard::to_stdvec(&EncodedV1 {
                version,
                entries: entries
                    .iter()
                    .map(|e| EntryV1 {
                        path: std::borrow::Cow::Borrowed(&e.path),
                        size: e.size,
                        hash: e.hash,
                        executable: e.executable,
                    })
                    .collect(),
            })
            .expect("encodes"),
        );
        out
    }

    #[test]
    fn order_of_input_does_not_change_the_hash() {
        let a = Manifest::new(vec![entry("b/x"), entry("a"), entry("c.txt")]).expect("valid");
        let b = Manifest::new(vec![entry("c.txt"), entry("b/x"), entry("a")]).expect("valid");
        assert_eq!(a.hash(), b.hash());
        assert_eq!(Manifest::from_bytes(&a.to_bytes()), Ok(a));
    }

    #[test]
    fn an_entry_is_found_by_its_exact_path() {
        let m = Manifest::new(vec![entry("b/x"), entry("a"), entry("c.txt"), entry("b/w")])
            .expect("valid");
        for path in ["a", "b/w", "b/x", "c.txt"] {
            assert_eq!(m.entry(path).map(|e| e.path.as_str()), Some(path));
        }
        for missing in ["", "b", "b/", "c", "z"] {
            assert!(m.entry(missing).is_none(), "{missing}");
        }
    }

    #[test]
    fn unicode_and_empty_manifests_round_trip() {
        let m = Manifest::new(vec![entry("données/ñ/日本.txt"), entry("ü")]).expect("valid");
        assert_eq!(Manifest::from_bytes(&m.to_bytes()), Ok(m));
        let empty = Manifest::new(vec![]).expect("valid");
        assert_eq!(Manifest::from_bytes(&empty.to_bytes()), Ok(empty));
    }

    #[test]
    fn hostile_paths_are_rejected_at_parse_time_naming_the_entry() {
        let cases = [
            ("../escape", PathProblem::ParentComponent),
            ("a/../../escape", PathProblem::ParentComponent),
            ("/etc/passwd", PathProblem::Absolute),
            ("a\0b", PathProblem::Nul),
            ("a//b", PathProblem::EmptyComponent),
            ("a/", PathProblem::EmptyComponent),
            ("", PathProblem::EmptyComponent),
            ("./a", PathProblem::CurrentComponent),
            ("a\\..\\b", PathProblem::Backslash),
        ];
        for (path, problem) in cases {
            let bytes = raw_encoding(vec![entry(path)], MANIFEST_VERSION);
            let err = Manifest::from_bytes(&bytes).expect_err(path);
            assert_eq!(
                err,
                ManifestError::InvalidPath {
                    path: path.to_string(),
                    problem
                }
            );
            assert!(err.to_string().contains(&format!("{path:?}")), "{err}");
            // The builder refuses the same path.
            assert!(Manifest::new(vec![entry(path)]).is_err());
        }
    }

    #[test]
    fn limits_on_length_and_depth() {
        let long_component = "x".repeat(MAX_COMPONENT_BYTES + 1);
        assert_eq!(
            validate_path(&long_component),
            Err(PathProblem::ComponentTooLong)
        );
        assert_eq!(validate_path(&"x".repeat(MAX_COMPONENT_BYTES)), Ok(()));
        let deep = vec!["d"; MAX_DEPTH + 1].join("/");
        assert_eq!(validate_path(&deep), Err(PathProblem::TooDeep));
        assert_eq!(validate_path(&vec!["d"; MAX_DEPTH].join("/")), Ok(()));
        let long = vec!["y".repeat(200); 25].join("/");
        assert_eq!(validate_path(&long), Err(PathProblem::TooLong));
    }

    #[test]
    fn non_canonical_and_conflicting_manifests_are_rejected() {
        let unsorted = raw_encoding(vec![entry("b"), entry("a")], MANIFEST_VERSION);
        assert_eq!(
            Manifest::from_bytes(&unsorted),
            Err(ManifestError::NotCanonical)
        );
        let dup = raw_encoding(vec![entry("a"), entry("a")], MANIFEST_VERSION);
        assert!(matches!(
            Manifest::from_bytes(&dup),
            Err(ManifestError::DuplicatePath { .. })
        ));
        let conflict = raw_encoding(vec![entry("a"), entry("a/b")], MANIFEST_VERSION);
        assert!(matches!(
            Manifest::from_bytes(&conflict),
            Err(ManifestError::FileIsAlsoFolder { .. })
        ));
        let mut trailing = Manifest::new(vec![entry("a")]).expect("valid").to_bytes();
        trailing.push(0);
        assert!(matches!(
            Manifest::from_bytes(&trailing),
            Err(ManifestError::Malformed(_))
        ));
    }

    #[test]
    fn wrong_magic_version_and_garbage() {
        assert_eq!(
            Manifest::from_bytes(b"hello world"),
            Err(ManifestError::NotAManifest)
        );
        assert_eq!(
            Manifest::from_bytes(&raw_encoding(vec![], 3)),
            Err(ManifestError::UnsupportedVersion { version: 3 })
        );
        // A huge declared entry count with no data behind it must fail, not allocate.
        let mut huge = MANIFEST_MAGIC.to_vec();
        huge.extend([1, 0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(matches!(
            Manifest::from_bytes(&huge),
            Err(ManifestError::Malformed(_))
        ));
    }

    fn upstream() -> Upstream {
        Upstream {
            kind: crate::RepoKind::Model,
            repo: "acme/model".into(),
            commit: crate::GitOid([7; 20]),
            last_modified: Some("2026-01-02T03:04:05.000Z".into()),
        }
    }

    #[test]
    fn hub_ids_make_a_version_2_manifest_and_plain_ones_stay_version_1() {
        let plain = Manifest::new(vec![entry("a"), entry("b/c")]).expect("valid");
        let plain_bytes = plain.to_bytes();
        assert_eq!(plain_bytes[4], MANIFEST_VERSION as u8);
        let mut with_ids = entry("a");
        let mut hasher = crate::hub::HubHasher::new(1);
        hasher.update(b"a");
        with_ids.hub = hasher.finish(false);
        let hub =
            Manifest::with_upstream(vec![with_ids, entry("b/c")], Some(upstream())).expect("valid");
        let hub_bytes = hub.to_bytes();
        assert_eq!(hub_bytes[4], MANIFEST_VERSION_HUB as u8);
        assert_eq!(Manifest::from_bytes(&hub_bytes).as_ref(), Ok(&hub));
        assert_eq!(hub.upstream(), Some(&upstream()));
        assert_ne!(hub.hash(), plain.hash());
        // Upstream alone is enough for version 2, and round-trips.
        let only_upstream =
            Manifest::with_upstream(vec![entry("a")], Some(upstream())).expect("valid");
        assert_eq!(
            Manifest::from_bytes(&only_upstream.to_bytes()),
            Ok(only_upstream)
        );
        // A version 1 manifest still parses to the same thing.
        assert_eq!(Manifest::from_bytes(&plain_bytes), Ok(plain));
    }

    #[test]
    fn a_version_2_manifest_without_hub_fields_is_not_canonical() {
        let mut out = MANIFEST_MAGIC.to_vec();
        out.extend(
            postcard::to_stdvec(&EncodedV2 {
                version: MANIFEST_VERSION_HUB,
                upstream: None,
                entries: std::borrow::Cow::Owned(vec![entry("a")]),
            })
            .expect("encodes"),
        );
        assert_eq!(Manifest::from_bytes(&out), Err(ManifestError::NotCanonical));
    }

    #[test]
    fn a_bad_upstream_repository_is_refused() {
        let mut up = upstream();
        up.repo = "../../etc".into();
        assert!(matches!(
            Manifest::with_upstream(vec![entry("a")], Some(up.clone())),
            Err(ManifestError::Upstream(_))
        ));
        let mut out = MANIFEST_MAGIC.to_vec();
        out.extend(
            postcard::to_stdvec(&EncodedV2 {
                version: MANIFEST_VERSION_HUB,
                upstream: Some(up),
                entries: std::borrow::Cow::Owned(vec![entry("a")]),
            })
            .expect("encodes"),
        );
        assert!(matches!(
            Manifest::from_bytes(&out),
            Err(ManifestError::Upstream(_))
        ));
    }

    proptest::proptest! {
        #[test]
        fn parsing_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let mut input = MANIFEST_MAGIC.to_vec();
            input.extend(bytes);
            let _ = Manifest::from_bytes(&input);
            let mut v2 = MANIFEST_MAGIC.to_vec();
            v2.push(MANIFEST_VERSION_HUB as u8);
            v2.extend(&input[4..]);
            let _ = Manifest::from_bytes(&v2);
        }
    }
}
