//! Bundles: datasets in one tar file, for sites with no network (removable media, data
//! diodes), checkable there with no store and no node. Format version 1 (see
//! `docs/formats.md`):
//!
//! ```text
//! COMMONS-BUNDLE.json                 the index: roots, blobs (hash, size), signatures
//! blobs/<hash>.obao                   each blob's outboard (post-order, 16 KiB groups) …
//! blobs/<hash>                        … before its data, so one forward pass verifies
//! signatures/<root>/<b3 of file>.sig  signature bundles (model.sig) of the roots
//! names/<b3 of record>.rec            signed name records pointing at the roots
//! B3SUMS                              `b3sum -c` lines for every file above
//! ```
//!
//! A delta bundle (`pack --since`) leaves out the blobs of the datasets it `requires`
//! (their manifests travel, so it can still be checked alone). A bundle written in
//! volumes (`pack --split`) is the same tar cut into `FILE.000`, `FILE.001`, …
//! ([`Volumes`] reads them as one; `cat FILE.* > FILE` joins them).
//!
//! Blobs are sorted by hash, signatures by name; every header is ustar with mtime, uid and
//! gid 0 and mode 0644: the same roots always give the same bytes, so a bundle itself can
//! be hashed and signed. A reader takes nothing on trust: names outside this grammar,
//! sizes that differ from the index, entries the index does not list, and every 16 KiB
//! group of every blob are checked ([`Archive::verify`]), within the limits below.

use std::{
    collections::BTreeMap,
    io::{self, Write},
    ops::Range,
};

use serde::{Deserialize, Serialize};

use crate::{
    manifest::{Manifest, MAX_MANIFEST_BYTES},
    provenance::{
        record::MAX_NAME_RECORD_BYTES, PublicKey, SignatureBundle, SignedNameRecord, TrustPolicy,
    },
    tree::{self, ReadAt, VerifyError, CHUNK_GROUP_BYTES},
    Hash,
};

/// The `format` field of every index.
pub const FORMAT: &str = "commons-bundle";
/// The format version this code writes and reads.
pub const VERSION: u32 = 1;
/// The index's name: always the first entry.
pub const INDEX_FILE: &str = "COMMONS-BUNDLE.json";
/// The checksum file's name: always the last entry.
pub const SUMS_FILE: &str = "B3SUMS";
/// Most blobs a bundle may list (a manifest lists at most 1,000,000 files).
pub const MAX_BLOBS: usize = 1_000_000;
/// Most roots a bundle may list.
pub const MAX_ROOTS: usize = 10_000;
/// Most signatures a bundle may carry.
pub const MAX_SIGNATURES: usize = 10_000;
/// Most name records a bundle may carry.
pub const MAX_NAMES: usize = 10_000;
/// Most datasets a delta bundle may require.
pub const MAX_REQUIRES: usize = 16;
/// Largest index accepted (a full one is ~110 bytes per blob).
pub const MAX_INDEX_BYTES: u64 = 160 << 20;
/// Largest `B3SUMS` accepted (~85 bytes per file, two files per blob).
pub const MAX_SUMS_BYTES: u64 = 256 << 20;
/// Chunk groups checked per blob by a quick verification.
pub const QUICK_SAMPLE_GROUPS: u64 = 16;
/// Tar's block size.
const BLOCK: u64 = 512;

/// The index: what the bundle holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Index {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`VERSION`].
    pub version: u32,
    /// The datasets (manifest hashes), in the order they were asked for.
    pub roots: Vec<Hash>,
    /// Every blob, manifests included, sorted by hash, each once.
    pub blobs: Vec<BlobEntry>,
    /// Signature bundles, sorted by file name.
    pub signatures: Vec<SignatureEntry>,
    /// Signed name records pointing at the roots, by the BLAKE3 of their bytes, sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<Hash>,
    /// For a delta bundle, the datasets whose blobs it leaves out: whoever unpacks it
    /// must hold them. Their manifests are blobs of the bundle.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requires: Vec<Hash>,
}

/// One blob of the bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobEntry {
    /// Its address.
    pub hash: Hash,
    /// Its size in bytes.
    pub size: u64,
}

/// One signature bundle (`model.sig`) of a root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureEntry {
    /// The root it signs.
    pub root: Hash,
    /// BLAKE3 of the file (its name).
    pub hash: Hash,
}

impl Index {
    /// An index of `roots` holding `blobs` (sorted and deduplicated here) and `signatures`.
    pub fn new(
        roots: Vec<Hash>,
        mut blobs: Vec<BlobEntry>,
        mut signatures: Vec<SignatureEntry>,
    ) -> Self {
        blobs.sort_by_key(|b| b.hash);
        blobs.dedup_by_key(|b| b.hash);
        signatures.sort_by_key(signature_name);
        signatures.dedup();
        Self {
            format: FORMAT.to_string(),
            version: VERSION,
            roots,
            blobs,
            signatures,
            names: Vec::new(),
            requires: Vec::new(),
        }
    }

    /// Adds signed name records (by the hash of their bytes) and, for a delta bundle, the
    /// datasets it requires.
    pub fn with(mut self, mut names: Vec<Hash>, requires: Vec<Hash>) -> Self {
        names.sort();
        names.dedup();
        self.names = names;
        self.requires = requires;
        self
    }

    /// Blob `hash`'s entry, if the bundle lists it.
    pub fn blob(&self, hash: &Hash) -> Option<BlobEntry> {
        self.blobs
            .binary_search_by_key(hash, |b| b.hash)
            .ok()
            .map(|i| self.blobs[i])
    }

    /// Total bytes of blob data (an index whose sizes overflow is refused when read).
    pub fn data_bytes(&self) -> u64 {
        self.blobs
            .iter()
            .fold(0, |sum, b| sum.saturating_add(b.size))
    }
}

/// The name of blob `hash`'s data in a bundle.
pub fn data_name(hash: &Hash) -> String {
    format!("blobs/{hash}")
}

/// The name of blob `hash`'s outboard in a bundle.
pub fn outboard_name(hash: &Hash) -> String {
    format!("blobs/{hash}.obao")
}

/// The name of a signature bundle in a bundle.
pub fn signature_name(s: &SignatureEntry) -> String {
    format!("signatures/{}/{}.sig", s.root, s.hash)
}

/// The name of a signed name record in a bundle.
pub fn name_record_name(hash: &Hash) -> String {
    format!("names/{hash}.rec")
}

/// Why a bundle was refused. Each names the file inside the bundle it is about.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchiveError {
    /// Reading (or writing) failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// Not a tar file this format allows.
    #[error("not a Commons bundle: {0}")]
    NotABundle(String),
    /// A name outside the format's grammar (`../x`, an absolute path, an unknown file).
    #[error("unexpected file {name:?} in the bundle (a bundle holds only {INDEX_FILE}, blobs/, signatures/, names/ and {SUMS_FILE})")]
    UnexpectedEntry {
        /// The name, lossily decoded.
        name: String,
    },
    /// A bundle of a format version this build does not know.
    #[error("bundle format version {0} is not supported (this build reads version {VERSION})")]
    Version(u32),
    /// More of something than the named limit allows.
    #[error("the bundle lists {count} {what}, more than the limit of {limit}")]
    Limit {
        /// What was counted.
        what: &'static str,
        /// How many.
        count: u64,
        /// The limit.
        limit: u64,
    },
    /// A file's size differs from what the index (or the blob's tree) says.
    #[error("{name}: {actual} bytes in the bundle, but {expected} expected")]
    SizeMismatch {
        /// The file.
        name: String,
        /// Its size in the tar.
        actual: u64,
        /// What it should be.
        expected: u64,
    },
    /// A file the index lists is not there.
    #[error("{name} is missing from the bundle")]
    Missing {
        /// The file.
        name: String,
    },
    /// The bundle ends inside (or before) this file: the copy broke.
    #[error("the bundle is truncated: it ends in {name} at byte {present} of {size}")]
    Truncated {
        /// The file.
        name: String,
        /// Bytes of it present.
        present: u64,
        /// Its full size.
        size: u64,
    },
    /// Bytes that fail verification.
    #[error("{name}: bytes {}..{} fail verification", range.start, range.end)]
    BadData {
        /// The file (a blob's data or its outboard).
        name: String,
        /// The byte range of the bad 16 KiB group (of the blob's data).
        range: Range<u64>,
    },
    /// A root's manifest is bad, or lists a blob the bundle lacks.
    #[error("dataset {root}: {reason}")]
    BadManifest {
        /// The root.
        root: Hash,
        /// What is wrong.
        reason: String,
    },
    /// A signature file or a signed name record is bad.
    #[error("{name}: {reason}")]
    BadSignature {
        /// The file.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A delta bundle used where the datasets it requires are not.
    #[error("this is a delta bundle: it holds only what dataset {root} lacks, so it unpacks only into a store holding {root} complete (unpack the bundle of {root} first)")]
    Requires {
        /// The dataset required.
        root: Hash,
    },
    /// `B3SUMS` disagrees with the files.
    #[error("{SUMS_FILE}: {0}")]
    BadSums(String),
}

/// One file inside the bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntrySpan {
    /// Offset of its first byte in the bundle.
    pub offset: u64,
    /// Its size per its header.
    pub size: u64,
    /// Bytes of it present (less than `size` only in a truncated bundle's last file).
    pub present: u64,
}

/// A window of `len` bytes at `base` of `src`, read as a file of its own.
#[derive(Debug, Clone, Copy)]
pub struct Slice<'a, R> {
    src: &'a R,
    base: u64,
    len: u64,
}

impl<R: ReadAt> ReadAt for Slice<'_, R> {
    fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<usize> {
        if pos >= self.len {
            return Ok(0);
        }
        let n = (buf.len() as u64).min(self.len - pos) as usize;
        self.src.read_at(self.base + pos, &mut buf[..n])
    }
}

/// Consecutive parts read as one: a bundle written in volumes (`pack --split`).
#[derive(Debug)]
pub struct Volumes<R> {
    /// Each part with the offset of its first byte in the whole.
    parts: Vec<(u64, R)>,
    len: u64,
}

impl<R: ReadAt> Volumes<R> {
    /// The parts, in order, each with its length.
    pub fn new(parts: impl IntoIterator<Item = (R, u64)>) -> Self {
        let mut len = 0;
        let parts = parts
            .into_iter()
            .map(|(part, part_len)| {
                let start = len;
                len += part_len;
                (start, part)
            })
            .collect();
        Self { parts, len }
    }

    /// The length of the whole.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether there are no bytes at all.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many parts.
    pub fn count(&self) -> usize {
        self.parts.len()
    }
}

impl<R: ReadAt> ReadAt for Volumes<R> {
    fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<usize> {
        if pos >= self.len || buf.is_empty() {
            return Ok(0);
        }
        // The last part starting at or before `pos`; a read stops at the part's end.
        let i = self.parts.partition_point(|(start, _)| *start <= pos) - 1;
        let (start, part) = &self.parts[i];
        let end = self.parts.get(i + 1).map_or(self.len, |(next, _)| *next);
        let n = (buf.len() as u64).min(end - pos) as usize;
        part.read_at(pos - start, &mut buf[..n])
    }
}

/// An opened bundle: its index and where each file lies. Opening reads only the headers
/// and the index; [`Archive::verify`] reads the rest.
#[derive(Debug)]
pub struct Archive<R> {
    src: R,
    /// The index.
    pub index: Index,
    entries: BTreeMap<String, EntrySpan>,
    /// Where the bundle ends early, if it does: the file it ends in (or the first missing
    /// one).
    pub truncated: Option<ArchiveError>,
}

/// What [`Archive::verify`] checks of each blob's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    /// Every chunk group.
    Full,
    /// [`QUICK_SAMPLE_GROUPS`] groups per blob, picked from `seed`, plus the manifests.
    Quick {
        /// Varies the sample from run to run.
        seed: u64,
    },
}

/// What a verification found good.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verified {
    /// Datasets, each complete in the bundle.
    pub roots: usize,
    /// Blobs checked.
    pub blobs: usize,
    /// Bytes of blob data verified.
    pub bytes: u64,
    /// Signature bundles that parse and name their root's manifest.
    pub signatures: usize,
    /// Name records whose publisher's signature verifies.
    #[serde(default)]
    pub names: usize,
    /// Datasets signed by the publisher asked for (each root must be, when one is).
    #[serde(default)]
    pub signed_by_publisher: usize,
    /// The datasets a delta bundle requires.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requires: Vec<Hash>,
}

impl<R: ReadAt> Archive<R> {
    /// Reads the headers of the `len`-byte bundle `src` and its index. A bundle cut short
    /// opens (see [`Archive::truncated`]) as long as its index is whole.
    pub fn open(src: R, len: u64) -> Result<Self, ArchiveError> {
        let mut entries = BTreeMap::new();
        let mut truncated = None;
        let mut pos = 0u64;
        let mut header = [0u8; BLOCK as usize];
        // Files the index allows (set once it is read): a tar of more is refused before
        // its table outgrows what the index declared.
        let mut index: Option<Index> = None;
        let mut most = 1u64;
        loop {
            if pos + BLOCK > len {
                // Past the last whole file: the end blocks, or the next header, are missing.
                if entries.is_empty() || !entries.contains_key(SUMS_FILE) {
                    truncated = Some(ArchiveError::Truncated {
                        name: format!("the header at byte {pos}"),
                        present: len.saturating_sub(pos),
                        size: BLOCK,
                    });
                }
                break;
            }
            read_exact_at(&src, pos, &mut header)?;
            if header.iter().all(|b| *b == 0) {
                break;
            }
            let (name, size) = parse_header(&header)?;
            if entries.len() as u64 >= most {
                return Err(ArchiveError::Limit {
                    what: "files (more than its index lists)",
                    count: entries.len() as u64 + 1,
                    limit: most,
                });
            }
            if entries.is_empty() && name != INDEX_FILE {
                return Err(ArchiveError::NotABundle(format!(
                    "its first file is {name:?}, not {INDEX_FILE}"
                )));
            }
            let offset = pos + BLOCK;
            let present = size.min(len.saturating_sub(offset));
            let span = EntrySpan {
                offset,
                size,
                present,
            };
            if entries.insert(name.clone(), span).is_some() {
                return Err(ArchiveError::NotABundle(format!("{name} appears twice")));
            }
            if index.is_none() {
                let read = read_index(&src, span)?;
                most = 2 * read.blobs.len() as u64
                    + read.signatures.len() as u64
                    + read.names.len() as u64
                    + 2;
                index = Some(read);
            }
            if present < size {
                truncated = Some(ArchiveError::Truncated {
                    name,
                    present,
                    size,
                });
                break;
            }
            pos = offset + size.div_ceil(BLOCK) * BLOCK;
        }
        let index =
            index.ok_or_else(|| ArchiveError::NotABundle("it holds no file at all".into()))?;
        Ok(Self {
            src,
            index,
            entries,
            truncated,
        })
    }

    /// Fails with where the bundle ends if it was cut short.
    pub fn check_whole(&self) -> Result<(), ArchiveError> {
        match self.truncated {
            Some(_) => Err(self.missing(SUMS_FILE)),
            None => Ok(()),
        }
    }

    /// Where file `name` lies, if the bundle has it.
    pub fn entry(&self, name: &str) -> Option<EntrySpan> {
        self.entries.get(name).copied()
    }

    /// The file `name` as a reader of its present bytes.
    pub fn reader(&self, name: &str) -> Option<Slice<'_, R>> {
        self.entry(name).map(|e| Slice {
            src: &self.src,
            base: e.offset,
            len: e.present,
        })
    }

    /// Blob `b`'s outboard and data, checked to be listed with the sizes the index and
    /// the tree give. A blob whose data is cut short comes with what is present.
    pub fn blob(&self, b: &BlobEntry) -> Result<(Slice<'_, R>, Slice<'_, R>), ArchiveError> {
        let files = [
            (outboard_name(&b.hash), tree::outboard_size(b.size)),
            (data_name(&b.hash), b.size),
        ];
        for (name, expected) in &files {
            let e = self.entry(name).ok_or_else(|| self.missing(name))?;
            if e.size != *expected {
                return Err(ArchiveError::SizeMismatch {
                    name: name.clone(),
                    actual: e.size,
                    expected: *expected,
                });
            }
        }
        let reader = |name: &str| self.reader(name).ok_or_else(|| self.missing(name));
        Ok((reader(&files[0].0)?, reader(&files[1].0)?))
    }

    /// Why file `name` is not there: the bundle was cut before it, or it never had it.
    fn missing(&self, name: &str) -> ArchiveError {
        match &self.truncated {
            Some(ArchiveError::Truncated {
                name: cut,
                present,
                size,
            }) => ArchiveError::Truncated {
                name: cut.clone(),
                present: *present,
                size: *size,
            },
            _ => ArchiveError::Missing { name: name.into() },
        }
    }

    /// Reads a whole small file the bundle has.
    fn read_small(&self, name: &str, limit: u64) -> Result<Vec<u8>, ArchiveError> {
        let e = self.entry(name).ok_or_else(|| self.missing(name))?;
        if e.size > limit {
            return Err(ArchiveError::Limit {
                what: "bytes in one file",
                count: e.size,
                limit,
            });
        }
        if e.present < e.size {
            return Err(self.missing(name));
        }
        let mut bytes = vec![0; e.size as usize];
        read_exact_at(&self.src, e.offset, &mut bytes)?;
        Ok(bytes)
    }

    /// The manifest of `root`, verified (the manifest is a blob of the bundle).
    pub fn manifest(&self, root: &Hash) -> Result<Manifest, ArchiveError> {
        let entry = self
            .index
            .blob(root)
            .ok_or_else(|| ArchiveError::BadManifest {
                root: *root,
                reason: "its manifest is not in the bundle".into(),
            })?;
        if entry.size > MAX_MANIFEST_BYTES {
            return Err(ArchiveError::BadManifest {
                root: *root,
                reason: format!("its manifest is {} bytes, over the limit", entry.size),
            });
        }
        let bytes = self.read_small(&data_name(root), MAX_MANIFEST_BYTES)?;
        if Hash::of(&bytes) != *root {
            return Err(ArchiveError::BadData {
                name: data_name(root),
                range: 0..entry.size.min(CHUNK_GROUP_BYTES),
            });
        }
        Manifest::from_bytes(&bytes).map_err(|e| ArchiveError::BadManifest {
            root: *root,
            reason: e.to_string(),
        })
    }

    /// The bytes of a signature file, checked against its name.
    pub fn signature(&self, s: &SignatureEntry) -> Result<Vec<u8>, ArchiveError> {
        let name = signature_name(s);
        let bytes = self.read_small(&name, crate::provenance::MAX_SIGNATURE_BYTES as u64)?;
        if Hash::of(&bytes) != s.hash {
            return Err(ArchiveError::BadSignature {
                name,
                reason: "its bytes do not match its name".into(),
            });
        }
        Ok(bytes)
    }

    /// The signed name record `hash` carries, with its publisher's signature checked
    /// (its time is not: a bundle may travel for longer than a record is announced).
    pub fn name_record(&self, hash: &Hash) -> Result<SignedNameRecord, ArchiveError> {
        let name = name_record_name(hash);
        let bytes = self.read_small(&name, MAX_NAME_RECORD_BYTES as u64)?;
        let bad = |reason: String| ArchiveError::BadSignature {
            name: name.clone(),
            reason,
        };
        if Hash::of(&bytes) != *hash {
            return Err(bad("its bytes do not match its name".into()));
        }
        let record = SignedNameRecord::decode_signed(&bytes).map_err(|e| bad(e.to_string()))?;
        if !self.index.roots.contains(&record.record.root) {
            return Err(bad(format!(
                "it points {} at {}, which is not a dataset of the bundle",
                record.record.name_ref(),
                record.record.root
            )));
        }
        Ok(record)
    }

    /// Checks the name records against a trust policy (the config's `[trust]`): a record
    /// of a name the policy gives a publisher must be by that publisher, and the dataset
    /// it points at must carry a signature verified with that key. Returns how many
    /// records the policy covered. Run after [`Archive::verify`].
    pub fn check_trust(&self, policy: &TrustPolicy) -> Result<usize, ArchiveError> {
        let mut covered = 0;
        for hash in &self.index.names {
            let record = self.name_record(hash)?;
            let r = &record.record;
            let Some(trusted) = policy.publisher_of(&r.name) else {
                continue;
            };
            let bad = |reason: String| ArchiveError::BadSignature {
                name: name_record_name(hash),
                reason,
            };
            if r.publisher_key().ok().as_ref() != Some(trusted) {
                return Err(bad(format!(
                    "{} is signed by another key than {trusted}, the publisher the trust policy names",
                    r.name_ref()
                )));
            }
            let signed = self
                .index
                .signatures
                .iter()
                .filter(|s| s.root == r.root)
                .any(|s| {
                    self.signature(s)
                        .ok()
                        .and_then(|bytes| SignatureBundle::parse(&bytes).ok())
                        .is_some_and(|b| b.verify_signature(trusted).is_ok())
                });
            if !signed {
                return Err(bad(format!(
                    "{} points at {}, which carries no signature by {trusted}",
                    r.name_ref(),
                    r.root
                )));
            }
            covered += 1;
        }
        Ok(covered)
    }

    /// Checks the whole bundle: every file is listed and has the size its index and tree
    /// give; every blob's chunk groups (all of them, or a sample); each root's manifest,
    /// and that every file it lists is in the bundle (or, for a delta bundle, in a
    /// dataset it requires); each signature names its root's manifest, and with
    /// `publisher` every root carries a signature verified with that key; each name
    /// record's signature; `B3SUMS` matches. The first problem found is returned, naming
    /// its file. `progress` is told the blob bytes checked as they are.
    pub fn verify(
        &self,
        depth: Depth,
        publisher: Option<&PublicKey>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Verified, ArchiveError> {
        self.check_whole()?;
        self.check_listing()?;
        let mut verified = Verified {
            requires: self.index.requires.clone(),
            ..Verified::default()
        };
        for b in &self.index.blobs {
            let (outboard, data) = self.blob(b)?;
            let fail = |e: VerifyError| bad_data(b, e);
            match depth {
                Depth::Full => {
                    let mut counted = ProgressSink {
                        progress: &mut *progress,
                    };
                    tree::copy_verified(b.hash, b.size, &data, &outboard, &mut counted)
                        .map_err(fail)?;
                }
                Depth::Quick { seed } => {
                    for range in sample(b, seed) {
                        let n = range.end - range.start;
                        tree::copy_range_verified(
                            b.hash,
                            b.size,
                            &data,
                            &outboard,
                            range,
                            io::sink(),
                        )
                        .map_err(fail)?;
                        progress(n);
                    }
                }
            }
            verified.blobs += 1;
            verified.bytes += b.size;
        }
        let mut available: std::collections::HashSet<Hash> =
            self.index.blobs.iter().map(|b| b.hash).collect();
        for required in &self.index.requires {
            let manifest = self.manifest(required)?;
            available.extend(manifest.entries().iter().map(|e| e.hash));
        }
        for root in &self.index.roots {
            let manifest = self.manifest(root)?;
            if let Some(e) = manifest
                .entries()
                .iter()
                .find(|e| !available.contains(&e.hash))
            {
                return Err(ArchiveError::BadManifest {
                    root: *root,
                    reason: format!("{} ({}) is not in the bundle", e.path, e.hash),
                });
            }
            verified.roots += 1;
        }
        let mut signed_by_publisher = std::collections::HashSet::new();
        // Each root's manifest read once, however many signatures it has.
        let mut manifests: BTreeMap<Hash, Manifest> = BTreeMap::new();
        for s in &self.index.signatures {
            let bytes = self.signature(s)?;
            let bad = |reason: String| ArchiveError::BadSignature {
                name: signature_name(s),
                reason,
            };
            let bundle = SignatureBundle::parse(&bytes).map_err(|e| bad(e.to_string()))?;
            let manifest = match manifests.entry(s.root) {
                std::collections::btree_map::Entry::Occupied(m) => m.into_mut(),
                std::collections::btree_map::Entry::Vacant(v) => v.insert(self.manifest(&s.root)?),
            };
            bundle
                .check_manifest(&s.root, manifest)
                .map_err(|e| bad(e.to_string()))?;
            if publisher.is_some_and(|key| bundle.verify_signature(key).is_ok()) {
                signed_by_publisher.insert(s.root);
            }
            verified.signatures += 1;
        }
        if let Some(key) = publisher {
            if let Some(root) = self
                .index
                .roots
                .iter()
                .find(|r| !signed_by_publisher.contains(*r))
            {
                return Err(ArchiveError::BadSignature {
                    name: format!("signatures/{root}/"),
                    reason: format!("dataset {root} carries no signature by {key}"),
                });
            }
            verified.signed_by_publisher = signed_by_publisher.len();
        }
        for hash in &self.index.names {
            self.name_record(hash)?;
            verified.names += 1;
        }
        self.check_sums()?;
        Ok(verified)
    }

    /// Every file is one the index lists (or the index and sums), and every root,
    /// signature and blob the index lists is within the limits.
    fn check_listing(&self) -> Result<(), ArchiveError> {
        let mut expected: std::collections::HashSet<String> = [INDEX_FILE, SUMS_FILE]
            .into_iter()
            .map(String::from)
            .collect();
        for b in &self.index.blobs {
            expected.insert(data_name(&b.hash));
            expected.insert(outboard_name(&b.hash));
        }
        for s in &self.index.signatures {
            if !self.index.roots.contains(&s.root) {
                return Err(ArchiveError::BadSignature {
                    name: signature_name(s),
                    reason: "it signs no root of the bundle".into(),
                });
            }
            expected.insert(signature_name(s));
        }
        expected.extend(self.index.names.iter().map(name_record_name));
        for required in &self.index.requires {
            if self.index.blob(required).is_none() {
                return Err(ArchiveError::BadManifest {
                    root: *required,
                    reason: "the bundle requires this dataset but carries no manifest of it".into(),
                });
            }
        }
        if let Some(name) = self.entries.keys().find(|n| !expected.contains(*n)) {
            return Err(ArchiveError::UnexpectedEntry { name: name.clone() });
        }
        if let Some(name) = expected.iter().find(|n| !self.entries.contains_key(*n)) {
            return Err(ArchiveError::Missing { name: name.clone() });
        }
        Ok(())
    }

    /// `B3SUMS` lists every other file once, each with its BLAKE3 (a blob's is its name).
    fn check_sums(&self) -> Result<(), ArchiveError> {
        let text = self.read_small(SUMS_FILE, MAX_SUMS_BYTES)?;
        let text =
            std::str::from_utf8(&text).map_err(|_| ArchiveError::BadSums("not UTF-8".into()))?;
        let mut listed = std::collections::HashSet::new();
        for line in text.lines() {
            let (hash, name) = line
                .split_once("  ")
                .ok_or_else(|| ArchiveError::BadSums(format!("bad line {line:?}")))?;
            let hash: Hash = hash
                .parse()
                .map_err(|_| ArchiveError::BadSums(format!("bad hash in {line:?}")))?;
            if !self.entries.contains_key(name) || name == SUMS_FILE || !listed.insert(name) {
                return Err(ArchiveError::BadSums(format!("unexpected line {line:?}")));
            }
            let actual = match name.strip_prefix("blobs/").and_then(|n| n.parse().ok()) {
                Some(blob) => blob,
                None => self.hash_file(name)?,
            };
            if actual != hash {
                return Err(ArchiveError::BadSums(format!("{name}: wrong hash")));
            }
        }
        if listed.len() + 1 != self.entries.len() {
            return Err(ArchiveError::BadSums(format!(
                "lists {} files of {}",
                listed.len(),
                self.entries.len() - 1
            )));
        }
        Ok(())
    }

    /// BLAKE3 of a whole file of the bundle (index, outboards, signatures).
    fn hash_file(&self, name: &str) -> Result<Hash, ArchiveError> {
        let reader = self.reader(name).ok_or_else(|| self.missing(name))?;
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut pos = 0;
        loop {
            let n = reader.read_at(pos, &mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            pos += n as u64;
        }
        Ok(Hash::from(hasher.finalize()))
    }
}

/// Counts bytes written for a progress callback and drops them.
struct ProgressSink<'a> {
    progress: &'a mut dyn FnMut(u64),
}

impl Write for ProgressSink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (self.progress)(buf.len() as u64);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A verification failure of blob `b` as the file and 16 KiB group it is about.
pub fn bad_data(b: &BlobEntry, e: VerifyError) -> ArchiveError {
    match e {
        VerifyError::DataMismatch { offset } => ArchiveError::BadData {
            name: data_name(&b.hash),
            range: group_range(offset, b.size),
        },
        VerifyError::OutboardMismatch { offset } => ArchiveError::BadData {
            name: outboard_name(&b.hash),
            range: group_range(offset, b.size),
        },
        VerifyError::Io(e) => ArchiveError::Io(e),
    }
}

/// The 16 KiB group holding `offset`, clipped to the blob.
pub fn group_range(offset: u64, size: u64) -> Range<u64> {
    let start = offset / CHUNK_GROUP_BYTES * CHUNK_GROUP_BYTES;
    start..(start + CHUNK_GROUP_BYTES).min(size.max(start))
}

/// The groups a quick check reads of blob `b`: the first, the last, and a spread between
/// picked from `seed` (all of them for a small blob).
fn sample(b: &BlobEntry, seed: u64) -> Vec<Range<u64>> {
    let groups = b.size.div_ceil(CHUNK_GROUP_BYTES).max(1);
    let mut picks: Vec<u64> = if groups <= QUICK_SAMPLE_GROUPS {
        (0..groups).collect()
    } else {
        let mut x = seed ^ u64::from_le_bytes(b.hash.as_bytes()[..8].try_into().unwrap_or([0; 8]));
        let mut picks = vec![0, groups - 1];
        while (picks.len() as u64) < QUICK_SAMPLE_GROUPS {
            // xorshift64*: a spread, not a secret.
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            picks.push(x.wrapping_mul(0x2545_F491_4F6C_DD1D) % groups);
        }
        picks
    };
    picks.sort_unstable();
    picks.dedup();
    picks
        .into_iter()
        .map(|g| g * CHUNK_GROUP_BYTES..((g + 1) * CHUNK_GROUP_BYTES).min(b.size))
        .collect()
}

/// Reads `buf.len()` bytes at `pos`, failing on a short read.
fn read_exact_at(src: &impl ReadAt, pos: u64, buf: &mut [u8]) -> io::Result<()> {
    tree::read_exact_at(src, pos, buf)
}

/// A header's file name and size, refusing anything but a plain file with a name of the
/// format's grammar and a good checksum.
fn parse_header(block: &[u8; BLOCK as usize]) -> Result<(String, u64), ArchiveError> {
    let header = tar::Header::from_byte_slice(block);
    // The sum of the header's bytes with the checksum field read as spaces (tar writers
    // format the field differently, so the value is compared, not the bytes).
    let sum: u32 = block
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(*b)
            }
        })
        .sum();
    if header.cksum().ok() != Some(sum) {
        return Err(ArchiveError::NotABundle(
            "a tar header's checksum does not match".into(),
        ));
    }
    let raw = header.path_bytes();
    let name = String::from_utf8(raw.to_vec()).map_err(|_| ArchiveError::UnexpectedEntry {
        name: String::from_utf8_lossy(&raw).into_owned(),
    })?;
    if !header.entry_type().is_file() || !is_bundle_name(&name) {
        return Err(ArchiveError::UnexpectedEntry { name });
    }
    let size = header
        .entry_size()
        .map_err(|e| ArchiveError::NotABundle(format!("{name}: {e}")))?;
    Ok((name, size))
}

/// Whether `name` is one the format allows (nothing else is ever written to disk by an
/// unpack, so no `..`, absolute path or link can come through).
fn is_bundle_name(name: &str) -> bool {
    let hash = |s: &str| s.len() == 64 && s.parse::<Hash>().is_ok();
    if name == INDEX_FILE || name == SUMS_FILE {
        return true;
    }
    if let Some(blob) = name.strip_prefix("blobs/") {
        return hash(blob.strip_suffix(".obao").unwrap_or(blob));
    }
    if let Some(record) = name.strip_prefix("names/") {
        return record.strip_suffix(".rec").is_some_and(hash);
    }
    if let Some(sig) = name.strip_prefix("signatures/") {
        return sig
            .strip_suffix(".sig")
            .and_then(|s| s.split_once('/'))
            .is_some_and(|(root, file)| hash(root) && hash(file));
    }
    false
}

/// Reads and parses the index, the file at `span`.
fn read_index(src: &impl ReadAt, span: EntrySpan) -> Result<Index, ArchiveError> {
    if span.size > MAX_INDEX_BYTES {
        return Err(ArchiveError::Limit {
            what: "index bytes",
            count: span.size,
            limit: MAX_INDEX_BYTES,
        });
    }
    if span.present < span.size {
        return Err(ArchiveError::Truncated {
            name: INDEX_FILE.into(),
            present: span.present,
            size: span.size,
        });
    }
    let mut bytes = vec![0; span.size as usize];
    read_exact_at(src, span.offset, &mut bytes)?;
    parse_index(&bytes)
}

/// Parses and checks an index: format, version, limits, blobs sorted and unique.
fn parse_index(bytes: &[u8]) -> Result<Index, ArchiveError> {
    let index: Index = serde_json::from_slice(bytes)
        .map_err(|e| ArchiveError::NotABundle(format!("{INDEX_FILE}: {e}")))?;
    if index.format != FORMAT {
        return Err(ArchiveError::NotABundle(format!(
            "{INDEX_FILE}: format {:?}, not {FORMAT:?}",
            index.format
        )));
    }
    if index.version != VERSION {
        return Err(ArchiveError::Version(index.version));
    }
    for (what, count, limit) in [
        ("blobs", index.blobs.len(), MAX_BLOBS),
        ("roots", index.roots.len(), MAX_ROOTS),
        ("signatures", index.signatures.len(), MAX_SIGNATURES),
        ("name records", index.names.len(), MAX_NAMES),
        ("required datasets", index.requires.len(), MAX_REQUIRES),
    ] {
        if count > limit {
            return Err(ArchiveError::Limit {
                what,
                count: count as u64,
                limit: limit as u64,
            });
        }
    }
    if index
        .blobs
        .iter()
        .try_fold(0u64, |sum, b| sum.checked_add(b.size))
        .is_none()
    {
        return Err(ArchiveError::NotABundle(format!(
            "{INDEX_FILE}: blob sizes add up past 2^64"
        )));
    }
    if index.blobs.windows(2).any(|w| w[0].hash >= w[1].hash) {
        return Err(ArchiveError::NotABundle(format!(
            "{INDEX_FILE}: blobs not sorted by hash, or listed twice"
        )));
    }
    Ok(index)
}

/// Writes a bundle, file by file, in the order the format fixes: [`Writer::new`] writes
/// the index, then for each blob of the index (in its order) [`Writer::outboard`] and
/// [`Writer::data`], then [`Writer::signature`] for each signature,
/// [`Writer::name_record`] for each name record, then [`Writer::finish`] the sums and the
/// end of the tar.
pub struct Writer<W: Write> {
    out: W,
    /// `B3SUMS` lines, in the order the files were written.
    sums: String,
    written: u64,
}

impl<W: Write> Writer<W> {
    /// Starts a bundle holding what `index` lists, on `out`.
    pub fn new(out: W, index: &Index) -> io::Result<Self> {
        let mut writer = Self {
            out,
            sums: String::new(),
            written: 0,
        };
        let bytes = serde_json::to_vec_pretty(index).map_err(io::Error::other)?;
        writer.file(INDEX_FILE, &bytes, None)?;
        Ok(writer)
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Writes blob `b`'s outboard, which `fill` writes (exactly
    /// [`tree::outboard_size`] bytes).
    pub fn outboard(
        &mut self,
        b: &BlobEntry,
        fill: impl FnOnce(&mut dyn Write) -> io::Result<u64>,
    ) -> io::Result<()> {
        self.stream(
            &outboard_name(&b.hash),
            tree::outboard_size(b.size),
            None,
            fill,
        )
    }

    /// Writes blob `b`'s data, which `fill` writes (exactly `b.size` bytes, already
    /// verified by the caller: its hash goes into `B3SUMS` unread).
    pub fn data(
        &mut self,
        b: &BlobEntry,
        fill: impl FnOnce(&mut dyn Write) -> io::Result<u64>,
    ) -> io::Result<()> {
        self.stream(&data_name(&b.hash), b.size, Some(b.hash), fill)
    }

    /// Writes file `name` of `size` bytes from `fill`; its hash for `B3SUMS` is `known`,
    /// else computed on the way.
    fn stream(
        &mut self,
        name: &str,
        size: u64,
        known: Option<Hash>,
        fill: impl FnOnce(&mut dyn Write) -> io::Result<u64>,
    ) -> io::Result<()> {
        self.header(name, size)?;
        let mut counted = CountingWriter {
            out: &mut self.out,
            count: 0,
            hasher: known.is_none().then(blake3::Hasher::new),
        };
        fill(&mut counted)?;
        let (count, hasher) = (counted.count, counted.hasher);
        if count != size {
            return Err(io::Error::other(format!(
                "{name}: {count} bytes written, {size} expected"
            )));
        }
        self.written += count;
        self.pad(count)?;
        let hash = known.or_else(|| hasher.map(|h| Hash::from(h.finalize())));
        if let Some(hash) = hash {
            self.sums.push_str(&format!("{hash}  {name}\n"));
        }
        Ok(())
    }

    /// Writes a signature file.
    pub fn signature(&mut self, s: &SignatureEntry, bytes: &[u8]) -> io::Result<()> {
        self.file(&signature_name(s), bytes, Some(s.hash))
    }

    /// Writes a signed name record (after the signatures).
    pub fn name_record(&mut self, hash: &Hash, bytes: &[u8]) -> io::Result<()> {
        self.file(&name_record_name(hash), bytes, Some(*hash))
    }

    /// Writes `B3SUMS` and the end of the tar; returns the output and the bundle's size.
    pub fn finish(mut self) -> io::Result<(W, u64)> {
        let sums = std::mem::take(&mut self.sums);
        self.header(SUMS_FILE, sums.len() as u64)?;
        self.out.write_all(sums.as_bytes())?;
        self.written += sums.len() as u64;
        self.pad(sums.len() as u64)?;
        self.out.write_all(&[0; 2 * BLOCK as usize])?;
        self.written += 2 * BLOCK;
        self.out.flush()?;
        Ok((self.out, self.written))
    }

    fn file(&mut self, name: &str, bytes: &[u8], hash: Option<Hash>) -> io::Result<()> {
        self.header(name, bytes.len() as u64)?;
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        self.pad(bytes.len() as u64)?;
        let hash = hash.unwrap_or_else(|| Hash::of(bytes));
        self.sums.push_str(&format!("{hash}  {name}\n"));
        Ok(())
    }

    /// A ustar header with everything but name and size fixed (mtime, uid, gid 0, mode
    /// 0644): the same files give the same bytes.
    fn header(&mut self, name: &str, size: u64) -> io::Result<()> {
        let mut header = tar::Header::new_ustar();
        header.set_path(name)?;
        header.set_size(size);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        self.out.write_all(header.as_bytes())?;
        self.written += BLOCK;
        Ok(())
    }

    fn pad(&mut self, size: u64) -> io::Result<()> {
        let pad = (size.div_ceil(BLOCK) * BLOCK - size) as usize;
        self.out.write_all(&[0; BLOCK as usize][..pad])?;
        self.written += pad as u64;
        Ok(())
    }
}

/// Counts (and hashes, if asked) what passes through.
struct CountingWriter<'a, W> {
    out: &'a mut W,
    count: u64,
    hasher: Option<blake3::Hasher>,
}

impl<W: Write> Write for CountingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        self.count += n as u64;
        if let Some(h) = &mut self.hasher {
            h.update(&buf[..n]);
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A dataset of `files`: its manifest bytes, root and blobs (data by hash).
    fn dataset(files: &[(&str, Vec<u8>)]) -> (Manifest, Hash, Vec<(BlobEntry, Vec<u8>)>) {
        let entries = files
            .iter()
            .map(|(path, data)| crate::ManifestEntry {
                path: path.to_string(),
                size: data.len() as u64,
                hash: Hash::of(data),
                executable: false,
                hub: None,
            })
            .collect();
        let manifest = Manifest::new(entries).expect("test step");
        let manifest_bytes = manifest.to_bytes();
        let root = Hash::of(&manifest_bytes);
        let blobs = files
            .iter()
            .map(|(_, d)| d.clone())
            .chain([manifest_bytes])
            .map(|d| {
                (
                    BlobEntry {
                        hash: Hash::of(&d),
                        size: d.len() as u64,
                    },
                    d,
                )
            })
            .collect();
        (manifest, root, blobs)
    }

    /// Writes a bundle of `index` from `blobs` (by hash), with signature and name files.
    fn write(
        index: &Index,
        blobs: &[(BlobEntry, Vec<u8>)],
        signatures: &[(SignatureEntry, Vec<u8>)],
        names: &[Vec<u8>],
    ) -> Vec<u8> {
        let mut w = Writer::new(Vec::new(), index).expect("test step");
        for b in &index.blobs {
            let data = &blobs
                .iter()
                .find(|(e, _)| e.hash == b.hash)
                .expect("test step")
                .1;
            let mut ob = Vec::new();
            tree::compute_outboard(&data[..], b.size, &mut ob).expect("test step");
            w.outboard(b, |out| out.write_all(&ob).map(|()| ob.len() as u64))
                .expect("test step");
            w.data(b, |out| out.write_all(data).map(|()| b.size))
                .expect("test step");
        }
        for (s, bytes) in signatures {
            w.signature(s, bytes).expect("test step");
        }
        for bytes in names {
            w.name_record(&Hash::of(bytes), bytes).expect("test step");
        }
        w.finish().expect("test step").0
    }

    /// A bundle of one dataset of `files` (built by hand: what a store would give).
    fn bundle_of(files: &[(&str, Vec<u8>)]) -> (Vec<u8>, Hash) {
        let (_, root, blobs) = dataset(files);
        let index = Index::new(vec![root], blobs.iter().map(|(b, _)| *b).collect(), vec![]);
        (write(&index, &blobs, &[], &[]), root)
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect()
    }

    fn open(bytes: &[u8]) -> Result<Archive<&[u8]>, ArchiveError> {
        Archive::open(bytes, bytes.len() as u64)
    }

    #[test]
    fn a_bundle_verifies_and_the_same_files_give_the_same_bytes() {
        let files = [("a/x.bin", pattern(100_000, 1)), ("b.txt", b"hi".to_vec())];
        let (bytes, root) = bundle_of(&files);
        assert_eq!(bytes, bundle_of(&files).0);
        assert_eq!(bytes.len() % 512, 0);
        let archive = open(&bytes).expect("test step");
        assert_eq!(archive.index.roots, vec![root]);
        let mut seen = 0;
        let v = archive
            .verify(Depth::Full, None, &mut |n| seen += n)
            .expect("test step");
        assert_eq!((v.roots, v.blobs), (1, 3));
        assert_eq!(seen, v.bytes);
        archive
            .verify(Depth::Quick { seed: 7 }, None, &mut |_| {})
            .expect("test step");
    }

    #[test]
    fn a_flipped_byte_is_named_with_its_file_and_group() {
        let data = pattern(100_000, 2);
        let (mut bytes, _) = bundle_of(&[("x.bin", data.clone())]);
        let archive = open(&bytes).expect("test step");
        let at = archive
            .entry(&data_name(&Hash::of(&data)))
            .expect("test step")
            .offset
            + 40_000;
        bytes[at as usize] ^= 1;
        let err = open(&bytes)
            .expect("test step")
            .verify(Depth::Full, None, &mut |_| {})
            .expect_err("must fail");
        match err {
            ArchiveError::BadData { name, range } => {
                assert_eq!(name, data_name(&Hash::of(&data)));
                assert_eq!(range, 32768..49152);
            }
            other => panic!("{other}"),
        }
    }

    #[test]
    fn a_cut_bundle_opens_and_says_where_it_ends() {
        let (bytes, _) = bundle_of(&[("x.bin", pattern(200_000, 3))]);
        let cut = &bytes[..bytes.len() / 2];
        let archive = open(cut).expect("test step");
        assert!(
            matches!(archive.truncated, Some(ArchiveError::Truncated { .. })),
            "{:?}",
            archive.truncated
        );
        assert!(archive.verify(Depth::Full, None, &mut |_| {}).is_err());
        assert!(matches!(
            open(&bytes[..700]),
            Err(ArchiveError::Truncated { .. })
        ));
    }

    #[test]
    fn names_outside_the_grammar_are_refused() {
        for bad in [
            "../x",
            "/etc/passwd",
            "blobs/../../x",
            "blobs/abc",
            "signatures/x.sig",
            "other",
        ] {
            assert!(!is_bundle_name(bad), "{bad}");
        }
        let hash = Hash::of(b"x");
        assert!(is_bundle_name(&data_name(&hash)));
        assert!(is_bundle_name(&outboard_name(&hash)));
        assert!(is_bundle_name(&signature_name(&SignatureEntry {
            root: hash,
            hash
        })));
        // A tar whose first file is a traversal is refused before anything is read.
        let mut header = tar::Header::new_ustar();
        header.set_path("x").expect("test step");
        header.as_ustar_mut().expect("test step").name[..4].copy_from_slice(b"../x");
        header.set_size(0);
        header.set_cksum();
        let mut tar = header.as_bytes().to_vec();
        tar.extend([0; 1024]);
        assert!(matches!(
            open(&tar),
            Err(ArchiveError::UnexpectedEntry { name }) if name.starts_with("../x")
        ));
    }

    #[test]
    fn a_lying_size_and_an_unlisted_file_are_refused() {
        let data = pattern(50_000, 4);
        let (bytes, _) = bundle_of(&[("x.bin", data.clone())]);
        let mut archive = open(&bytes).expect("test step");
        let i = archive
            .index
            .blobs
            .iter()
            .position(|b| b.hash == Hash::of(&data))
            .expect("test step");
        archive.index.blobs[i].size += 1;
        assert!(matches!(
            archive.verify(Depth::Full, None, &mut |_| {}),
            Err(ArchiveError::SizeMismatch { .. })
        ));
        archive.index.blobs.remove(i);
        assert!(matches!(
            archive.verify(Depth::Full, None, &mut |_| {}),
            Err(ArchiveError::UnexpectedEntry { .. })
        ));
    }

    #[test]
    fn an_index_over_its_limits_is_refused() {
        let mut index = Index::new(vec![], vec![], vec![]);
        index.roots = vec![Hash::of(b"r"); MAX_ROOTS + 1];
        let bytes = serde_json::to_vec(&index).expect("test step");
        assert!(matches!(
            parse_index(&bytes),
            Err(ArchiveError::Limit { what: "roots", .. })
        ));
        assert!(matches!(
            parse_index(b"{\"format\":\"commons-bundle\",\"version\":2,\"roots\":[],\"blobs\":[],\"signatures\":[]}"),
            Err(ArchiveError::Version(2))
        ));
    }

    #[test]
    fn volumes_read_as_one_across_their_boundaries() {
        let (bytes, root) = bundle_of(&[("x.bin", pattern(70_000, 5))]);
        let cuts = [0, 1000, 1000, 40_000, bytes.len()];
        let parts: Vec<(&[u8], u64)> = cuts
            .windows(2)
            .map(|w| (&bytes[w[0]..w[1]], (w[1] - w[0]) as u64))
            .collect();
        let volumes = Volumes::new(parts.clone());
        assert_eq!((volumes.len(), volumes.count()), (bytes.len() as u64, 4));
        let mut whole = vec![0; bytes.len()];
        read_exact_at(&volumes, 0, &mut whole).expect("test step");
        assert_eq!(whole, bytes);
        let archive = Archive::open(Volumes::new(parts), bytes.len() as u64).expect("test step");
        assert_eq!(archive.index.roots, vec![root]);
        archive
            .verify(Depth::Full, None, &mut |_| {})
            .expect("test step");
        // Without the last volume: a bundle cut short.
        let first_three: Vec<(&[u8], u64)> = cuts[..4]
            .windows(2)
            .map(|w| (&bytes[w[0]..w[1]], (w[1] - w[0]) as u64))
            .collect();
        let short = Volumes::new(first_three);
        let len = short.len();
        assert!(Archive::open(short, len)
            .expect("test step")
            .truncated
            .is_some());
    }

    #[test]
    fn a_delta_bundle_checks_against_the_manifest_it_requires() {
        let shared = pattern(60_000, 6);
        let (_, old_root, old_blobs) = dataset(&[("a.bin", shared.clone())]);
        let (_, new_root, new_blobs) =
            dataset(&[("a.bin", shared.clone()), ("b.bin", pattern(30_000, 7))]);
        let old_manifest = old_blobs
            .iter()
            .find(|(b, _)| b.hash == old_root)
            .expect("test step")
            .clone();
        let mut blobs: Vec<(BlobEntry, Vec<u8>)> = new_blobs
            .into_iter()
            .filter(|(b, _)| b.hash != Hash::of(&shared))
            .collect();
        blobs.push(old_manifest);
        let delta = |requires: Vec<Hash>| {
            Index::new(
                vec![new_root],
                blobs.iter().map(|(b, _)| *b).collect(),
                vec![],
            )
            .with(vec![], requires)
        };
        let bytes = write(&delta(vec![old_root]), &blobs, &[], &[]);
        let v = open(&bytes)
            .expect("test step")
            .verify(Depth::Full, None, &mut |_| {})
            .expect("test step");
        assert_eq!(v.requires, vec![old_root]);
        // The same blobs without naming what they need: a.bin is missing.
        let bytes = write(&delta(vec![]), &blobs, &[], &[]);
        let err = open(&bytes)
            .expect("test step")
            .verify(Depth::Full, None, &mut |_| {})
            .expect_err("must fail");
        assert!(err.to_string().contains("a.bin"), "{err}");
    }

    #[test]
    fn signatures_and_name_records_are_checked_and_a_publisher_can_be_required() {
        use crate::provenance::{bundle::sign_manifest, KeyAlgorithm, NameRecord, SecretKey};
        let key = SecretKey::from_seed(KeyAlgorithm::P256, &[3; 32]).expect("test step");
        let other = SecretKey::from_seed(KeyAlgorithm::Ed25519, &[4; 32]).expect("test step");
        let (manifest, root, blobs) = dataset(&[("w.safetensors", pattern(20_000, 8))]);
        let sig = sign_manifest(&root, &manifest, &key).expect("test step");
        let sig_entry = SignatureEntry {
            root,
            hash: Hash::of(&sig),
        };
        let name = crate::NameRef::parse("lab/w").expect("test step");
        let record = NameRecord::new(&key.public(), &name, root, 4, None, 1..2)
            .sign(&key)
            .encode();
        let index = Index::new(
            vec![root],
            blobs.iter().map(|(b, _)| *b).collect(),
            vec![sig_entry],
        )
        .with(vec![Hash::of(&record)], vec![]);
        let bytes = write(
            &index,
            &blobs,
            &[(sig_entry, sig)],
            std::slice::from_ref(&record),
        );
        let archive = open(&bytes).expect("test step");
        let v = archive
            .verify(Depth::Full, Some(&key.public()), &mut |_| {})
            .expect("test step");
        assert_eq!((v.signatures, v.names, v.signed_by_publisher), (1, 1, 1));
        let trusting = |key: &SecretKey| {
            TrustPolicy::from_rules([("lab/*", key.public().to_string().as_str())])
                .expect("test step")
        };
        assert_eq!(archive.check_trust(&trusting(&key)).expect("test step"), 1);
        assert_eq!(
            archive
                .check_trust(&TrustPolicy::default())
                .expect("test step"),
            0
        );
        let err = archive
            .check_trust(&trusting(&other))
            .expect_err("the policy names another publisher");
        assert!(err.to_string().contains("another key"), "{err}");
        let err = archive
            .verify(Depth::Full, Some(&other.public()), &mut |_| {})
            .expect_err("another publisher's signature is required");
        assert!(err.to_string().contains("no signature by"), "{err}");
        // A record whose signature fails is named.
        let mut forged = record.clone();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        let index = Index::new(vec![root], blobs.iter().map(|(b, _)| *b).collect(), vec![])
            .with(vec![Hash::of(&forged)], vec![]);
        let bytes = write(&index, &blobs, &[], &[forged.clone()]);
        let err = open(&bytes)
            .expect("test step")
            .verify(Depth::Full, None, &mut |_| {})
            .expect_err("a forged record");
        assert!(err.to_string().starts_with("names/"), "{err}");
    }

    #[test]
    fn a_tar_with_more_files_than_its_index_lists_stops_at_the_index() {
        // An empty index and then file after file: refused at the first extra one, so the
        // table never grows past what the index declared.
        let index = Index::new(vec![], vec![], vec![]);
        let mut w = Writer::new(Vec::new(), &index).expect("test step");
        for i in 0..5u8 {
            let b = BlobEntry {
                hash: Hash::of(&[i]),
                size: 1,
            };
            w.data(&b, |out| out.write_all(&[i]).map(|()| 1))
                .expect("test step");
        }
        let bytes = w.finish().expect("test step").0;
        match open(&bytes) {
            Err(ArchiveError::Limit { limit, .. }) => assert_eq!(limit, 2),
            other => panic!("{other:?}"),
        }
    }
}
