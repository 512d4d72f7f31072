//! The requests, one struct per operation, and their replies. Each reply is what `--json`
//! prints for its command: snake_case keys, hashes as hex strings, sizes in bytes.

use std::path::PathBuf;

use commons_protocol::{Hash, TicketKind};
use serde::{Deserialize, Serialize};

pub use crate::origin::source::{HubSource, ImportOutcome};

use super::{ApiError, ErrorKind};
use crate::{net::QueryCost, store::NameEntry};

/// Declares [`Request`], one variant per request struct, and how each struct becomes one.
macro_rules! requests {
    ($($request:ident),* $(,)?) => {
        /// Every request, as the admin socket carries it (`{"op": "add", …}`).
        #[derive(Debug, Clone, Serialize, Deserialize)]
        #[serde(tag = "op", rename_all = "snake_case")]
        #[allow(missing_docs)] // each variant is documented on its struct
        pub enum Request {
            $($request($request),)*
        }

        $(impl From<$request> for Request {
            fn from(r: $request) -> Self {
                Request::$request(r)
            }
        })*
    };
}

impl Request {
    /// Whether this is a quick read of the store (listings): all that a one-shot command
    /// serves to others while it holds the store.
    pub fn is_quick_read(&self) -> bool {
        matches!(
            self,
            Request::List(_) | Request::Files(_) | Request::Names(_) | Request::MirrorList(_)
        )
    }
}

requests!(
    Add,
    Import,
    List,
    Files,
    SetPin,
    NameSet,
    NameRm,
    Names,
    Get,
    Export,
    Verify,
    Remove,
    Gc,
    Providers,
    Peers,
    Stats,
    Status,
    MirrorAdd,
    MirrorRm,
    MirrorList,
    KeyGenerate,
    KeyImport,
    KeyList,
    KeyExport,
    Sign,
    Publish,
    Resolve,
    Pack,
    Unpack,
);

/// Paths cross the socket to a node running elsewhere in the file system's view of the
/// same user: they must be absolute.
pub(crate) fn require_absolute(path: &std::path::Path) -> Result<(), ApiError> {
    if path.is_absolute() {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorKind::InvalidInput,
            format!("{} is not an absolute path", path.display()),
        ))
    }
}

/// Store a file (as a blob) or a folder (as a dataset), pin and announce it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Add {
    /// What to add (absolute).
    pub path: PathBuf,
    /// A name to bind it to (`org/name[@revision]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Record Hugging Face Hub ids (SHA-256, git blob id) of each file: `None` for a
    /// Hugging Face cache snapshot only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub_ids: Option<bool>,
}

/// Import a Hub repository at a revision from its origin (peers first), verified against
/// the origin's Hub ids; pin, name and announce it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Import {
    /// The repository, revision and origin.
    pub source: HubSource,
}

/// What `add` stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddOutcome {
    /// `blob` (a file) or `dataset` (a folder).
    pub kind: TicketKind,
    /// Its address.
    pub hash: Hash,
    /// Files added (1 for a blob).
    pub files: u64,
    /// Total bytes.
    pub size: u64,
    /// Blobs that were new to the store.
    pub new_blobs: u64,
    /// A ticket for it; carries this node's addresses when a node is running.
    pub ticket: String,
    /// The name bound to it, if one was asked for.
    pub name: Option<String>,
    /// The id of the signature kept from the folder's `model.sig`, if it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<Hash>,
}

/// List what the store holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct List {
    /// Every blob, not only those added on their own.
    #[serde(default)]
    pub all: bool,
    /// Only what is pinned.
    #[serde(default)]
    pub pinned: bool,
}

/// One dataset in a [`Listing`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetEntry {
    /// Root hash.
    pub hash: Hash,
    /// Number of files.
    pub files: u64,
    /// Total bytes.
    pub size: u64,
    /// Whether the manifest and every file are complete.
    pub complete: bool,
    /// Bytes of its files held verified (`size` when complete): how far a fetch got.
    pub held: u64,
    /// Whether it is pinned.
    pub pinned: bool,
    /// Names bound to it on this node (`org/name@revision`).
    pub names: Vec<String>,
}

/// One blob in a [`Listing`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobEntry {
    /// Its hash.
    pub hash: Hash,
    /// Size in bytes.
    pub size: u64,
    /// Whether all of it is stored.
    pub complete: bool,
    /// Bytes held verified (`size` when complete): how far a fetch got.
    pub held: u64,
    /// Whether it is pinned.
    pub pinned: bool,
}

/// What the store holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listing {
    /// Datasets.
    pub datasets: Vec<DatasetEntry>,
    /// Blobs added on their own (with `all`: every blob that is not a manifest).
    pub blobs: Vec<BlobEntry>,
}

/// List one dataset's files (or describe one blob).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Files {
    /// Hash, prefix, ticket or name.
    pub target: String,
}

/// One file of a [`FileListing`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Path inside the dataset (`/`-separated).
    pub path: String,
    /// Its blob.
    pub hash: Hash,
    /// Size in bytes.
    pub size: u64,
    /// Bytes held verified.
    pub held: u64,
    /// Whether all of it is stored.
    pub complete: bool,
    /// Its Hugging Face Hub ids, when the manifest records them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub: Option<commons_protocol::HubIds>,
}

/// A dataset's files, as held here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileListing {
    /// The dataset (or blob).
    pub hash: Hash,
    /// Whether it is a dataset (false: a single blob, listed as one file named by its hash).
    pub dataset: bool,
    /// Its files, in manifest order.
    pub files: Vec<FileEntry>,
}

/// Pin (`pin: true`) or unpin a dataset or blob.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SetPin {
    /// Hash, prefix, ticket or name.
    pub target: String,
    /// Pin or unpin.
    pub pin: bool,
}

/// What `pin` or `unpin` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinOutcome {
    /// The dataset or blob.
    pub hash: Hash,
    /// Whether it is pinned now.
    pub pinned: bool,
    /// Whether anything changed (false: it already was pinned, or was not).
    pub changed: bool,
}

/// Bind a name to a dataset (and pin it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NameSet {
    /// `org/name[@revision]`.
    pub name: String,
    /// Hash, prefix, ticket or name of the dataset.
    pub target: String,
}

/// Remove a name.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NameRm {
    /// `org/name[@revision]`.
    pub name: String,
}

/// What `name rm` removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameRemoved {
    /// The name, as given.
    pub name: String,
    /// Always true: removing an unbound name is a `not_found` error.
    pub removed: bool,
}

/// List the names bound on this node.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Names {}

/// Every name bound on this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameList {
    /// One entry per name and revision.
    pub names: Vec<NameEntry>,
}

/// Fetch what a ticket or hash names, then (with `output`) write it out.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Get {
    /// A ticket, or a full hash to look up in the DHT.
    pub target: String,
    /// Glob patterns of files to fetch (all when empty).
    #[serde(default)]
    pub include: Vec<String>,
    /// Also write the files to this folder (absolute) once fetched.
    #[serde(default)]
    pub output: Option<PathBuf>,
    /// With `output`: replace files that already exist.
    #[serde(default)]
    pub force: bool,
    /// Keep the store's copy (default). With `output` and `false`, the dataset is removed
    /// from the store once written out and verified: one copy on disk, not served.
    #[serde(default = "keep_by_default")]
    pub keep: bool,
    /// This fetch's download limit in MiB/s, on top of the node's (`--limit-rate`).
    #[serde(default)]
    pub limit_rate: Option<f64>,
    /// Require a signature of the dataset by this publisher (a key text, a PEM file's
    /// contents, or a key held here); a name the trust policy covers requires its
    /// publisher's anyway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publisher: Option<String>,
    /// Accept an older name record than one seen before (overrides rollback protection).
    #[serde(default)]
    pub allow_older: bool,
}

fn keep_by_default() -> bool {
    true
}

/// Write datasets to a bundle file (see [`crate::bundle`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pack {
    /// Hashes, prefixes, tickets or names of complete datasets.
    pub targets: Vec<String>,
    /// The bundle to write (absolute): a file, the base name of its volumes, or a named
    /// pipe (written in place).
    pub output: PathBuf,
    /// Replace an existing file.
    #[serde(default)]
    pub force: bool,
    /// Datasets the receiver holds: their blobs are left out (a delta bundle).
    #[serde(default)]
    pub since: Vec<String>,
    /// Write volumes of this many bytes (`FILE.000`, `FILE.001`, …).
    #[serde(default)]
    pub split: Option<u64>,
}

/// Import a bundle into the store.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Unpack {
    /// The bundle (absolute): a file, or its volumes (by base name or first volume).
    pub bundle: PathBuf,
    /// Import what a bundle cut short holds (the rest on a later unpack).
    #[serde(default)]
    pub resume: bool,
}

/// Write a dataset or blob to a folder.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Export {
    /// Hash, prefix, ticket or name.
    pub target: String,
    /// Where (absolute).
    pub dest: PathBuf,
    /// Replace existing files.
    #[serde(default)]
    pub force: bool,
    /// Glob patterns of files to write (all when empty).
    #[serde(default)]
    pub include: Vec<String>,
    /// Which signature to write as `model.sig` when several are held: this publisher's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publisher: Option<String>,
    /// Write no `model.sig` even when a signature is held.
    #[serde(default)]
    pub no_signature: bool,
}

/// Re-check stored data.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Verify {
    /// One dataset or blob (hash, prefix, ticket or name), or everything.
    #[serde(default)]
    pub target: Option<String>,
    /// Also require a signature of the dataset by this publisher (a key text, a PEM file's
    /// contents, or the name of a key held here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publisher: Option<String>,
}

/// One problem `verify` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyProblem {
    /// The blob.
    pub blob: Hash,
    /// Byte range failing verification; `None` when the blob is missing altogether.
    pub range: Option<std::ops::Range<u64>>,
    /// Dataset file names of the blob (when a dataset was verified).
    pub files: Vec<String>,
}

/// What `verify` checked and found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// Blobs checked.
    pub checked_blobs: u64,
    /// Their bytes.
    pub checked_bytes: u64,
    /// Everything that failed.
    pub corrupt: Vec<VerifyProblem>,
    /// Blobs a fetch has not finished: the spans they hold were checked (not counted in
    /// `checked_blobs`).
    pub partial_blobs: u64,
    /// Bytes those partial blobs hold.
    #[serde(default)]
    pub partial_bytes: u64,
    /// Where the store's rows disagree with each other (checked when verifying
    /// everything; `commons_node::store::MAX_ROW_PROBLEMS` at most).
    #[serde(default)]
    pub store_problems: Vec<String>,
    /// How many such problems there were in all.
    #[serde(default)]
    pub store_problem_count: u64,
    /// The signatures held for the dataset checked (none for a blob or everything).
    #[serde(default)]
    pub signatures: Vec<crate::provenance::signatures::SignatureStatus>,
    /// The publisher asked about, whose signature verified (text form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_by: Option<String>,
}

/// Forget a dataset or blob and reclaim its space.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Remove {
    /// Hash, prefix, ticket or name.
    pub target: String,
}

/// What `rm` removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoveOutcome {
    /// What was removed.
    pub hash: Hash,
    /// `dataset` or `blob`.
    pub kind: TicketKind,
    /// Blobs deleted with it.
    pub removed_blobs: u64,
    /// Their bytes.
    pub freed_bytes: u64,
    /// Its blobs kept because other pinned data uses them.
    pub kept_shared: u64,
}

/// Collect garbage.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Gc {
    /// Only report.
    #[serde(default)]
    pub dry_run: bool,
    /// Collect only down to this many bytes (least recently used first).
    #[serde(default)]
    pub quota: Option<u64>,
}

/// One blob garbage collection removed (or would remove).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectedBlob {
    /// The blob.
    pub hash: Hash,
    /// Its size.
    pub size: u64,
}

/// What `gc` removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcOutcome {
    /// Whether this was a dry run (nothing removed).
    pub dry_run: bool,
    /// Blobs removed, least recently used first.
    pub blobs: Vec<CollectedBlob>,
    /// Their bytes.
    pub bytes: u64,
    /// Bytes stored after the collection.
    pub stored_bytes: u64,
    /// Bytes still above the quota (pinned or in use: never removed).
    pub over_quota: u64,
}

/// Look up who holds a hash, in the DHT.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Providers {
    /// The full hash.
    pub hash: Hash,
}

/// Who holds a hash, as a DHT lookup found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvidersReport {
    /// The hash looked up.
    pub hash: Hash,
    /// Each provider: PeerId and the addresses known for it.
    pub providers: Vec<ProviderEntry>,
    /// What the lookup cost.
    pub cost: QueryCost,
}

/// One provider in a [`ProvidersReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderEntry {
    /// Its PeerId.
    pub peer_id: String,
    /// Its known addresses.
    pub addrs: Vec<String>,
}

/// Routing table and connected peers (running node only).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Peers {}

/// Per-peer transfer counters (running node only).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Stats {}

/// Every peer the node exchanged data with since it started (at most
/// [`crate::transfer::MAX_STATS_PEERS`]; the rest are summed in `others`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatsList {
    /// One entry per peer.
    pub peers: Vec<PeerStatsEntry>,
    /// Connections and bytes by path (direct or relayed), and hole punches.
    #[serde(default)]
    pub paths: crate::net::NatCounters,
}

/// One peer's transfer counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatsEntry {
    /// The peer.
    pub peer_id: String,
    /// Response bytes sent to it.
    pub bytes_sent: u64,
    /// Response bytes received from it.
    pub bytes_received: u64,
    /// Requests it made to us.
    pub requests_served: u64,
    /// Requests we made to it.
    pub requests_made: u64,
    /// Its responses that failed verification.
    pub bad_responses: u64,
}

/// The node's status: peers, data, traffic, disk use (running node only).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Status {}

/// Mirror a dataset from now on (`commons mirror add`): fetched, pinned, kept, and saved
/// in the store so it is kept after a restart too. Without a running node it is saved and
/// fetched once one runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MirrorAdd {
    /// A hash, ticket or name bound here.
    pub target: String,
    /// A local name to bind once fetched (`org/name[@revision]`).
    #[serde(default)]
    pub name: Option<String>,
    /// The Hub repository, when `target` is `hf://…` (with its origin and token file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub: Option<HubSource>,
    /// `target` is a signed name to follow: each version its publisher publishes is
    /// fetched (signature required) and bound.
    #[serde(default)]
    pub follow: bool,
    /// With `follow`: seconds between checks for a new version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<u64>,
}

/// Stop mirroring a dataset added with `mirror add` (the data stays, pinned).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MirrorRm {
    /// The target as it was added.
    pub target: String,
}

/// What `mirror add` or `mirror rm` changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorChanged {
    /// The target.
    pub target: String,
    /// Whether anything changed (false: it was mirrored already).
    pub changed: bool,
}

/// List what this node mirrors.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MirrorList {}

/// What this node mirrors, and where each entry is (`waiting` without a running node).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorEntries {
    /// One per entry.
    pub entries: Vec<crate::mirror::MirrorEntryStatus>,
}

/// Create a publisher key in the data dir.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyGenerate {
    /// Its local name.
    pub name: String,
    /// `p256` (the default: OpenSSF Model Signing verifies it) or `ed25519`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<String>,
}

/// Keep an existing PEM private key as a publisher key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyImport {
    /// Its local name.
    pub name: String,
    /// The PEM text (PKCS#8, or SEC1 as `openssl ecparam -genkey` writes).
    pub pem: String,
}

/// List the publisher keys held.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct KeyList {}

/// The publisher keys held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyListing {
    /// By name.
    pub keys: Vec<crate::provenance::keys::KeyInfo>,
}

/// A publisher key's public half, to hand to others.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyExport {
    /// The key's local name.
    pub name: String,
}

/// A public key in both forms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicKeyOut {
    /// The key's local name.
    pub name: String,
    /// Text form (`p256:<hex>`): for trust policies and `--publisher`.
    pub public_key: String,
    /// SubjectPublicKeyInfo PEM: for `openssl` and `model_signing --public_key`.
    pub pem: String,
}

/// Sign a dataset with a publisher key; the signature is kept beside its manifest and
/// travels with it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sign {
    /// The dataset (hash, prefix, ticket or name).
    pub target: String,
    /// The key's local name.
    pub key: String,
}

/// What `sign` made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignOutcome {
    /// The dataset.
    pub hash: Hash,
    /// The signature bundle's id.
    pub signature: Hash,
    /// Who signed (text form).
    pub publisher: String,
    /// Files the signature lists.
    pub files: u64,
}

/// Publish a signed name record into the DHT.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Publish {
    /// `org/name[@revision]`.
    pub name: String,
    /// The dataset it points at (hash, prefix, ticket or local name).
    pub target: String,
    /// The publisher key's local name.
    pub key: String,
    /// Days the record stays valid (default 30, at most 366).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_days: Option<u64>,
    /// Sign and keep the record here only, without the network (an air-gapped publisher:
    /// `pack` carries it; it goes into the DHT when the node next runs with peers).
    #[serde(default)]
    pub offline: bool,
}

/// One name record, as `publish` and `resolve` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameRecordOut {
    /// `org/name@revision`.
    pub name: String,
    /// Publisher key (text form).
    pub publisher: String,
    /// The dataset root.
    pub root: Hash,
    /// Sequence number.
    pub seq: u64,
    /// Id of the record it replaced.
    pub prev: Option<Hash>,
    /// Unix seconds when signed.
    pub issued_unix: u64,
    /// Unix seconds when it lapses.
    pub expires_unix: u64,
    /// The signed record itself, hex: checkable anywhere, offline (`docs/formats.md`).
    pub encoded: String,
}

/// What `publish` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishOutcome {
    /// The record.
    pub record: NameRecordOut,
    /// Whether the DHT took it (otherwise it is kept here and published again later).
    pub stored: bool,
    /// Peers that were sent it.
    pub peers: u32,
    /// Why the DHT did not take it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Resolve a signed name through the DHT.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Resolve {
    /// `<publisher>/<org>/<name>[@revision]` (publisher: a key text, or a key held here), or
    /// `org/name[@revision]` when the trust policy names its publisher.
    pub name: String,
    /// Accept an older record than one this node saw before (overrides the rollback
    /// protection).
    #[serde(default)]
    pub allow_older: bool,
}

/// What `resolve` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolveOutcome {
    /// The newest valid record.
    pub record: NameRecordOut,
    /// Valid answers from the network.
    pub answers: u64,
    /// Peers that had an older or invalid record and were sent the newest.
    pub stale_peers: u64,
    /// Whether the network gave it (false: this node's own copy was newer than any answer).
    pub from_network: bool,
    /// The records of this name this node accepted, oldest first.
    pub history: Vec<NameRecordOut>,
    /// Lookup time in milliseconds.
    pub millis: u64,
}
