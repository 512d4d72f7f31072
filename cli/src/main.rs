//! `commons`: seed, fetch and keep open datasets. Parses, calls `commons-node`, prints.

mod commands;
mod progress;
mod render;
mod serve;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Commons: content-addressed, verified distribution of open datasets and model weights.
///
/// Every file is split into 16 KiB chunk groups hashed into a BLAKE3 tree, so any byte can
/// be verified on its own. `add` stores a file or folder and prints its hash and a ticket;
/// `node run` serves and announces it; anyone can then `get` it by ticket or by hash alone
/// (found through the Kademlia DHT); `export` writes it back (verified).
#[derive(Debug, Parser)]
#[command(name = "commons", version, propagate_version = true)]
#[command(after_help = "Examples:
  commons add ./my-dataset          store a folder, print its hash and ticket
  commons add ./llama --name lab/llama   ... and name it (also for the HTTP gateway)
  commons ls                        list stored datasets and blobs
  commons ls lab/llama              list a dataset's files
  commons export <hash> ./out       write a dataset back, verifying every byte
  commons verify                    re-check everything stored
  commons rm <hash>                 forget a dataset (shared files are kept)
  commons node run --bootstrap <addr>   serve and announce, joining a network
  commons get <hash> -o ./out       find holders in the DHT, fetch, verify, write out
  commons providers <hash>          list who holds a dataset
  commons mirror add <hash> --name lab/corpus   keep a dataset on this mirror
  commons key generate lab-x        create a publisher key (ECDSA P-256)
  commons sign lab-x/corpus --key lab-x      sign a dataset (OpenSSF Model Signing)
  commons publish lab-x/corpus@v3 <hash> --key lab-x   publish a signed name in the DHT
  commons get <publisher>/lab-x/corpus@v3 -o ./out     fetch it by name, signature checked
  commons verify lab-x/corpus --publisher pub.pem      check data and signature")]
pub struct Cli {
    /// Where the store lives [default: $XDG_DATA_HOME/commons, i.e. ~/.local/share/commons]
    #[arg(long, global = true, env = "COMMONS_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// Print machine-readable JSON on stdout instead of text
    #[arg(long, global = true)]
    json: bool,

    /// Configuration file (TOML: listen, bootstrap, [dht]; see docs/config.md)
    /// [default: <data dir>/config.toml, if it exists]
    #[arg(long, global = true, env = "COMMONS_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    /// Log lines on stderr: text, or json (one object per line, for log collectors).
    /// Verbosity: COMMONS_LOG (e.g. info, commons_node=debug) [default: warn]
    #[arg(long, global = true, env = "COMMONS_LOG_FORMAT", value_name = "FORMAT",
          value_parser = ["text", "json"], default_value = "text")]
    log_format: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Store a file (as a blob) or a folder (as a dataset), pin it, print its hash and ticket
    ///
    /// A folder's files are hashed in a stable order into a manifest; the dataset's hash is
    /// the manifest's, so the same content always gives the same hash. Identical files are
    /// stored once. Symbolic links are followed only if they point inside the folder.
    Add {
        /// File or folder to add, or a Hub repository: hf://org/name[@revision] (a model),
        /// hf://datasets/org/name[@revision] (a dataset). A repository is imported from
        /// peers that hold the same commit, and from the origin for the rest; every file is
        /// checked against the origin's SHA-256 / git ids
        path: PathBuf,
        /// Also bind a name to the dataset (org/name, or org/name@revision; the revision
        /// defaults to main), so it can be asked for by name here and through the gateway.
        /// A Hub repository is named after itself unless given
        #[arg(long, value_name = "ORG/NAME")]
        name: Option<String>,
        /// Record each file's Hugging Face Hub ids (SHA-256, git blob id) in the manifest,
        /// computed in the same pass (a new manifest version, so a new hash). On by default
        /// for a Hugging Face cache snapshot folder, which also records its commit
        #[arg(long, overrides_with = "no_hub_ids")]
        hub_ids: bool,
        /// Never record Hub ids (the hash the folder had before Hub ids existed)
        #[arg(long)]
        no_hub_ids: bool,
        /// For hf://: the Hub-compatible server to import from
        #[arg(long, value_name = "URL", default_value = commons_node::origin::source::DEFAULT_ORIGIN)]
        origin: String,
        /// For hf://: a file holding the token of a gated or private repository (sent only
        /// to the origin, never logged)
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
    },
    /// List what the store holds (datasets with their names, blobs added on their own), or
    /// the files of one dataset
    ///
    /// Anything whose fetch has not finished shows as "partial" with the share of its
    /// bytes held (`held` in --json); `commons get` of it again fetches the rest.
    Ls {
        /// List this dataset's files (path, size, how much is held): a hash, unique
        /// prefix, ticket or name
        target: Option<String>,
        /// List every blob, including the files inside datasets
        #[arg(long)]
        all: bool,
        /// Only what is pinned (what garbage collection keeps)
        #[arg(long)]
        pinned: bool,
    },
    /// Keep a dataset or blob: garbage collection never removes pinned data
    ///
    /// `add` and `get` pin what they store; pin again what you unpinned.
    Pin {
        /// Hash (or unique prefix), ticket or name
        target: String,
    },
    /// Stop keeping a dataset or blob: it stays until garbage collection needs the space
    ///
    /// Names bound to it are removed. Files shared with another pinned dataset are kept.
    Unpin {
        /// Hash (or unique prefix), ticket or name
        target: String,
    },
    /// Bind human-readable names (org/name[@revision]) to datasets on this node
    #[command(subcommand)]
    Name(NameCommand),
    /// Write a dataset (or blob) back to disk, verifying every chunk before it is written
    ///
    /// A dataset's files go under DIR, which is created if needed. A blob is written to
    /// DIR/<hash> if DIR is an existing folder, else to the path DIR. Existing files are
    /// never replaced unless --force is given; nothing is ever written outside DIR.
    Export {
        /// Hash (or unique prefix, at least 4 hex characters) or ticket
        target: String,
        /// Destination folder (or file path for a blob)
        dir: PathBuf,
        /// Replace files that already exist
        #[arg(long, short)]
        force: bool,
        /// Write this publisher's signature as DIR/model.sig (a key p256:…/ed25519:…, a PEM
        /// public key file, or a key held here) [default: the first signature held]
        #[arg(long, value_name = "KEY")]
        publisher: Option<String>,
        /// Write no model.sig, even when the dataset is signed
        #[arg(long, conflicts_with = "publisher")]
        no_signature: bool,
    },
    /// Write datasets into one bundle file, to carry where no network reaches
    ///
    /// The bundle is a tar: an index, every blob's hash tree before its data, the
    /// datasets' signatures and a B3SUMS file (`b3sum -c B3SUMS` checks an extracted
    /// copy). The same datasets always give the same bytes. `commons bundle verify` checks
    /// it anywhere, with no store; `commons unpack` imports it, verified.
    Pack {
        /// Datasets: hashes, unique prefixes, tickets or names (complete ones)
        #[arg(required = true)]
        targets: Vec<String>,
        /// The bundle to write (written beside as FILE.partial, renamed once whole); `-`
        /// streams it to stdout (for a data diode), the summary going to stderr
        #[arg(long, short, value_name = "FILE")]
        output: PathBuf,
        /// Replace FILE if it exists
        #[arg(long, short)]
        force: bool,
        /// A delta bundle: leave out every file the older dataset OLD holds (repeatable);
        /// the receiving store must hold OLD, and the bundle names it
        #[arg(long, value_name = "OLD")]
        since: Vec<String>,
        /// Write volumes of at most SIZE bytes for media of that size: FILE.000,
        /// FILE.001, … (SIZE like 4G, 700M, 25GB); `cat FILE.* > FILE` joins them, and
        /// `unpack --resume` takes them in as they arrive
        #[arg(long, value_name = "SIZE", value_parser = parse_size)]
        split: Option<u64>,
    },
    /// Import a bundle into the store, verifying every 16 KiB as it is stored
    ///
    /// Blobs already held are skipped. A dataset is listed only once all of it is in.
    /// Interrupted (or given a bundle cut short, with --resume), it continues where it
    /// stopped when run again: only what is missing is read.
    Unpack {
        /// The bundle file, or its volumes (FILE for FILE.000, FILE.001, …, or any one of
        /// them)
        bundle: PathBuf,
        /// Accept a bundle cut short (or volumes still missing): import what it holds,
        /// the rest when run again with the whole
        #[arg(long, conflicts_with_all = ["to", "hf_cache"])]
        resume: bool,
        /// Write the files (and model.sig) into DIR instead, with no store: one dataset
        /// into DIR, several into DIR/<hash>
        #[arg(long, value_name = "DIR", conflicts_with = "hf_cache")]
        to: Option<PathBuf>,
        /// With --to: replace files that already exist
        #[arg(long, short, requires = "to")]
        force: bool,
        /// Write into a Hugging Face cache folder instead (HF_HUB_CACHE, by default
        /// ~/.cache/huggingface/hub), with no store: the Hub's clients then load it with
        /// HF_HUB_OFFLINE=1
        #[arg(long, value_name = "DIR")]
        hf_cache: Option<PathBuf>,
        /// With --hf-cache: the repository, org/name [default: where the dataset came
        /// from on the Hub]
        #[arg(long, value_name = "ORG/NAME", requires = "hf_cache")]
        repo: Option<String>,
        /// With --hf-cache: model or dataset [default: the upstream's, else model]
        #[arg(long, value_name = "TYPE", requires = "hf_cache", value_parser = ["model", "dataset"])]
        repo_type: Option<String>,
        /// With --hf-cache: the ref pointed at the snapshot
        #[arg(
            long,
            value_name = "REF",
            requires = "hf_cache",
            default_value = "main"
        )]
        revision: String,
    },
    /// Check bundles, with no store and no node
    #[command(subcommand)]
    Bundle(BundleCommand),
    /// Re-check stored data against its hash trees and report any corruption
    ///
    /// Without an argument, checks every complete blob. Exits with status 1 if anything is
    /// corrupt, naming the blob, the byte range and, for datasets, the file. Blobs a fetch
    /// has not finished are counted, not checked (each 16 KiB was verified on arrival).
    Verify {
        /// Only this dataset or blob (hash, prefix or ticket)
        target: Option<String>,
        /// Also require the dataset's signature by this publisher (a key p256:…/ed25519:…,
        /// a PEM public key file, or a key held here); exits with status 1 without it
        #[arg(long, value_name = "KEY", requires = "target")]
        publisher: Option<String>,
    },
    /// Fetch a dataset or blob by ticket or by hash, verifying every chunk
    ///
    /// With a ticket, the providers it names are used first; with a bare hash, providers
    /// are found in the DHT (through the running node, or by joining the network through
    /// --bootstrap, the config file or the peers saved by an earlier run). Each 16 KiB chunk
    /// group is checked against the hash tree as it arrives and stored with its "verified"
    /// mark in one atomic write, so an interrupted fetch (Ctrl-C, kill -9, a dropped
    /// connection) resumes where it stopped: run the same command again. A provider that
    /// sends bad data is dropped at the first bad chunk; nothing of it is stored.
    Get {
        /// Ticket printed by `commons add` or `commons node run` (commons1…), a full hash,
        /// or a signed name: org/name[@revision] when the config's [trust] names its
        /// publisher, or <publisher>/org/name[@revision]. A name resolves through the DHT to
        /// its publisher's newest record, and the dataset must carry that publisher's
        /// signature; it is then bound locally under the name
        target: String,
        /// Peer to join the network through (a multiaddr ending in /p2p/<peer id>);
        /// repeatable. Not needed when a node runs on this data dir
        #[arg(long, value_name = "MULTIADDR")]
        bootstrap: Vec<String>,
        /// Also write the files to this folder once fetched and verified. The store keeps
        /// its copy too (two copies on disk: the store's is what this node serves to
        /// peers, and what a re-run resumes from); see --no-keep
        #[arg(long, short, value_name = "DIR")]
        output: Option<PathBuf>,
        /// With --output: once the files are written and verified, drop the store's copy
        /// (one copy on disk instead of two; the data is then no longer served from here,
        /// and fetching it again downloads it again). Re-running is still safe: files
        /// already written are checked and kept
        #[arg(long, requires = "output")]
        no_keep: bool,
        /// Download at most this many MiB/s (this fetch only; a node's own limit is in its
        /// config file's [limits]), as curl's and aria2c's --limit-rate
        #[arg(long, value_name = "MIB_PER_SEC")]
        limit_rate: Option<f64>,
        /// Fetch only files whose path matches this glob (e.g. '*.json', 'data/**'); repeatable
        #[arg(long, value_name = "GLOB")]
        include: Vec<String>,
        /// With --output: replace files that already exist
        #[arg(long, short)]
        force: bool,
        /// Require the dataset's signature by this publisher (a key p256:…/ed25519:…, a PEM
        /// public key file, or a key held here): refused before its files are fetched
        /// otherwise
        #[arg(long, value_name = "KEY")]
        publisher: Option<String>,
        /// For a name: accept a record older than one this node saw before (rollback
        /// protection refuses it otherwise)
        #[arg(long)]
        allow_older: bool,
    },
    /// Forget a dataset or blob and reclaim its space (blobs still used elsewhere are kept)
    Rm {
        /// Hash (or unique prefix) or ticket
        target: String,
    },
    /// Remove data no pin keeps, reclaiming space (least recently used first)
    ///
    /// Pinned datasets and blobs, the files of pinned datasets and data a fetch is writing
    /// are never removed. A running node with `[storage] quota_gib` in its config does this
    /// by itself whenever it holds more than its quota.
    Gc {
        /// Only list what would be removed
        #[arg(long)]
        dry_run: bool,
        /// Remove only as much as needed to keep at most this many GiB
        #[arg(long, value_name = "GIB")]
        quota_gib: Option<f64>,
    },
    /// List the nodes that hold a dataset or blob, as the DHT knows them
    Providers {
        /// The full hash (64 hex characters)
        hash: String,
        /// Peer to join the network through; repeatable (see `get`)
        #[arg(long, value_name = "MULTIADDR")]
        bootstrap: Vec<String>,
    },
    /// Publisher keys: create, list, import, share (kept in <data dir>/keys, mode 0600)
    #[command(subcommand)]
    Key(KeyCommand),
    /// Sign a dataset with a publisher key (an OpenSSF Model Signing signature listing
    /// every file's BLAKE3 digest, taken from the manifest: nothing is re-hashed)
    ///
    /// The signature is kept beside the manifest, fetched with the dataset by every node
    /// that fetches it, and written as model.sig by `export` (verifiable with the
    /// `model_signing` tools and the public key from `commons key export-public`).
    Sign {
        /// The dataset: hash (or unique prefix), ticket or name
        target: String,
        /// The key's name (see `commons key ls`)
        #[arg(long, value_name = "NAME")]
        key: String,
    },
    /// Publish a signed name record in the DHT: NAME points at the dataset, signed by KEY
    ///
    /// Each publish gets a sequence number one above the newest record of the name found,
    /// and names the record it replaces. Nodes store it only if it verifies and is newer
    /// than what they hold; anyone can then `commons get <publisher>/NAME` (or NAME, with a
    /// [trust] rule) and `commons resolve` it. A running node keeps it alive in the DHT.
    Publish {
        /// org/name[@revision]
        name: String,
        /// The dataset: hash (or unique prefix), ticket or local name
        target: String,
        /// The publisher key's name (see `commons key ls`)
        #[arg(long, value_name = "NAME")]
        key: String,
        /// Days the record stays valid [default: 30; at most 366]
        #[arg(long, value_name = "DAYS")]
        valid_days: Option<u64>,
        /// Sign and keep the record here only, without the network (an air-gapped
        /// publisher): `pack` carries it, and a node run later puts it in the DHT
        #[arg(long, conflicts_with = "bootstrap")]
        offline: bool,
        /// Peer to join the network through; repeatable (see `get`)
        #[arg(long, value_name = "MULTIADDR")]
        bootstrap: Vec<String>,
    },
    /// Resolve a signed name through the DHT: its newest record, and the history seen here
    Resolve {
        /// <publisher>/org/name[@revision] (publisher: a key p256:…, or a key held here), or
        /// org/name[@revision] when the config's [trust] names its publisher
        name: String,
        /// Accept a record older than one this node saw before (overrides rollback
        /// protection)
        #[arg(long)]
        allow_older: bool,
        /// Peer to join the network through; repeatable (see `get`)
        #[arg(long, value_name = "MULTIADDR")]
        bootstrap: Vec<String>,
    },
    /// Run the node, or ask it about itself
    #[command(subcommand)]
    Node(NodeCommand),
    /// Change what this node mirrors while it runs (kept after restarts), and see how far
    /// each dataset is
    #[command(subcommand)]
    Mirror(MirrorCommand),
}

#[derive(Debug, Subcommand)]
enum MirrorCommand {
    /// Mirror a dataset: fetch it, keep it pinned and serve it, fetching it again if it
    /// goes missing. Saved in the store; without a running node, fetched once one runs
    Add {
        /// A full hash, a ticket, a name bound on this node, or a Hub repository
        /// (hf://org/name[@revision], hf://datasets/org/name[@revision]): imported from peers
        /// and the origin, and followed: a branch that moves is imported again (older
        /// commits stay, pinned)
        target: String,
        /// Also bind this local name once fetched (org/name[@revision])
        #[arg(long, value_name = "ORG/NAME")]
        name: Option<String>,
        /// For hf://: the Hub-compatible server
        #[arg(long, value_name = "URL")]
        origin: Option<String>,
        /// For hf://: a file holding the token of a gated or private repository
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
        /// For hf:// and --follow: seconds between checks for a new version
        #[arg(long, value_name = "SECONDS")]
        interval: Option<u64>,
        /// TARGET is a signed name to follow (org/name[@revision] with a [trust] rule, or
        /// <publisher>/org/name): each new version its publisher publishes is fetched
        /// (signature required), bound locally, and its record kept alive in the DHT
        #[arg(long, conflicts_with_all = ["name", "origin", "token_file"])]
        follow: bool,
    },
    /// Stop mirroring a dataset added with `mirror add` (its data stays, pinned: `unpin`
    /// lets garbage collection take it). Entries of the config file are removed there
    Rm {
        /// The target as it was added
        target: String,
    },
    /// List what this node mirrors and where each dataset is (fetching n %, complete,
    /// failing with the last error and the next retry)
    Ls,
}

#[derive(Debug, Subcommand)]
enum KeyCommand {
    /// Create a publisher key NAME: ECDSA P-256 by default (what OpenSSF Model Signing
    /// verifies), or Ed25519. Prints its public key
    Generate {
        /// A local name for the key (letters, digits, '.', '_', '-')
        name: String,
        /// p256 or ed25519
        #[arg(long, value_name = "ALGORITHM", default_value = "p256", value_parser = ["p256", "ed25519"])]
        algorithm: String,
    },
    /// List the publisher keys held, with their public keys
    Ls,
    /// Print a key's public half as PEM (for `model_signing verify key --public_key`, and
    /// for others' --publisher); its one-line form goes to stderr
    ExportPublic {
        /// The key's name
        name: String,
        /// Write the PEM to this file instead of stdout
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Keep an existing PEM private key (PKCS#8, or the SEC1 form `openssl ecparam
    /// -genkey` writes) as publisher key NAME
    Import {
        /// A local name for the key
        name: String,
        /// The PEM file
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum NameCommand {
    /// Bind NAME (org/name or org/name@revision; revision main by default) to a dataset,
    /// replacing an earlier binding of that name and revision, and pin the dataset
    Set {
        /// org/name or org/name@revision
        name: String,
        /// The dataset: hash (or unique prefix), ticket or another name
        target: String,
    },
    /// List the names bound on this node
    Ls,
    /// Remove a name (the dataset stays pinned)
    Rm {
        /// org/name or org/name@revision
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum BundleCommand {
    /// Check a bundle: its structure, sizes, every 16 KiB group of every file through
    /// its hash tree, that each dataset is complete, its signatures, name records and
    /// B3SUMS
    ///
    /// Needs no store and no node. Name records of names the config's [trust] gives a
    /// publisher must be by that publisher, and their dataset signed by it. Exits 1
    /// naming the first bad file and byte range.
    Verify {
        /// The bundle file, or its volumes
        bundle: PathBuf,
        /// Check structure, manifests, signatures and 16 random groups per file only
        #[arg(long)]
        quick: bool,
        /// Also require every dataset to carry a signature by this publisher (a key
        /// p256:…/ed25519:… or a PEM public key file)
        #[arg(long, value_name = "KEY")]
        publisher: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum NodeCommand {
    /// Print this node's PeerId (its ed25519 key is created in the data dir on first use)
    Id,
    /// Run the node: serve the store's data to peers over QUIC until Ctrl-C or SIGTERM
    ///
    /// Prints the PeerId and the full addresses (ending in /p2p/<peer id>) it listens on,
    /// and a ticket for each stored dataset that other nodes can `commons get`. Joins the
    /// DHT through the bootstrap peers (or those saved by its last run) and announces every
    /// pinned dataset and blob, re-announcing each before its record lapses.
    Run {
        /// Address to listen on; repeatable [default: the config file's, else
        /// /ip4/0.0.0.0/udp/4433/quic-v1 and /ip6/::/udp/4433/quic-v1]
        #[arg(long, value_name = "MULTIADDR")]
        listen: Vec<String>,
        /// Peer to join the network through (multiaddr ending in /p2p/<peer id>);
        /// repeatable, added to the config file's
        #[arg(long, value_name = "MULTIADDR")]
        bootstrap: Vec<String>,
        /// DHT role: auto (the default: answers lookups and stores records; peers take its
        /// addresses only where they can reach them, and only AutoNAT-confirmed or
        /// external addresses go into its records), server (every listen address counts as
        /// reachable: labs, LANs), or client (only asks)
        #[arg(long, value_name = "MODE", value_parser = ["auto", "server", "client"])]
        dht_mode: Option<String>,
        /// An address others reach this node at (a public IP or port forward); repeatable
        #[arg(long, value_name = "MULTIADDR")]
        external_addr: Vec<String>,
        /// Also find Commons nodes on the local network with mDNS (off by default)
        #[arg(long)]
        mdns: bool,
        /// Carry all data over the libp2p port: no bulk-data endpoint (a second UDP port,
        /// on a free port of the first listen address, that peers with one use for bulk
        /// data; see docs/protocol.md)
        #[arg(long)]
        no_bulk: bool,
    },
    /// Show the DHT routing table size and the connected peers of the running node
    Peers,
    /// Show, per peer, the bytes and requests the running node exchanged with it
    Stats,
    /// Show the running node's status: peers, datasets, bytes served and fetched, disk
    /// use against its quota
    Status,
}

/// A size: bytes, or a number with K, M, G, T (powers of 1024; KB, MB, GB, TB are powers
/// of 1000, as media are sold; KiB, MiB, GiB, TiB as K, M, G, T).
fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size (like 4G, 700M, 25GB)"))?;
    let scale: f64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1.0,
        "K" | "KIB" => 1024.0,
        "M" | "MIB" => 1024f64.powi(2),
        "G" | "GIB" => 1024f64.powi(3),
        "T" | "TIB" => 1024f64.powi(4),
        "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "TB" => 1e12,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?} (K, M, G, T, KB, MB, GB, TB)"
            ))
        }
    };
    let bytes = number * scale;
    if !(1.0..=u64::MAX as f64).contains(&bytes) {
        return Err(format!("{text:?} is out of range"));
    }
    Ok(bytes as u64)
}

/// Lets `commons ls | head` end quietly, as Unix tools do, instead of panicking when the
/// reader of stdout goes away (Rust ignores SIGPIPE by default).
#[cfg(unix)]
#[allow(unsafe_code)]
fn restore_default_sigpipe() {
    // SAFETY: called first thing in main, before any other thread exists; SIG_DFL is a
    // valid disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Allocations below this size come from glibc's heap, where freed memory is reused. A
/// span's buffers (`DEFAULT_SPAN_BYTES`, 256 KiB) stay under it.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MALLOC_MMAP_THRESHOLD: libc::c_int = 1 << 20;
/// Free memory that the top of a glibc heap keeps before it is returned to the kernel.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MALLOC_TRIM_THRESHOLD: libc::c_int = 8 << 20;
/// glibc heaps (arenas) per core; glibc's default is 8. With fewer heaps, less freed
/// memory is kept in them.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MALLOC_ARENAS_PER_CORE: usize = 2;

/// Stops glibc from mapping and unmapping fresh memory for every span. RocksDB returns
/// each blob read in a new span-sized buffer. By default glibc serves that size with a
/// fresh `mmap`, or from the top of a heap that it hands back to the kernel as soon as
/// 512 KiB there are free. Either way, every span's pages are faulted in and zeroed again.
/// Measured with the first two settings (docs/benchmarks.md, issue 22):
/// - a seeder took 150–4,000 page faults per 256 MiB served instead of about 34,000;
/// - it used 4–6 % less CPU per GiB.
///
/// With fewer heaps as well, the seeder's peak RSS under the load lab went down: 290–297 MiB
/// instead of 322–323. Settings in `GLIBC_TUNABLES` for these three are overridden.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn tune_malloc() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let arenas = libc::c_int::try_from(cores * MALLOC_ARENAS_PER_CORE).unwrap_or(libc::c_int::MAX);
    // SAFETY: `mallopt` only sets allocator parameters, and these values are valid for
    // them. If a call fails, glibc keeps its default for that parameter, which is also
    // correct.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, MALLOC_TRIM_THRESHOLD);
        libc::mallopt(libc::M_ARENA_MAX, arenas);
    }
}

/// An error and its chain of causes in one line, each said once: an error that already
/// quotes its cause is not followed by it again (`{:#}` would repeat it).
fn describe(e: &anyhow::Error) -> String {
    let mut message = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !message.contains(&cause) {
            message = format!("{message}: {cause}");
        }
    }
    message
}

/// Says why a command failed: one line on stderr, and with `--json` also an object on
/// stdout, `{"error": "<message>", "kind": "<kind>"}` (kinds as in `api::ErrorKind`, plus
/// `interrupted` and `invalid_input` for what fails before reaching the node).
fn report(e: &anyhow::Error, json: bool) {
    let interrupted = e.downcast_ref::<commands::Interrupted>().is_some();
    let message = describe(e);
    if interrupted {
        eprintln!("{message}");
    } else {
        eprintln!("error: {message}");
    }
    if json {
        let kind = match e.downcast_ref::<commons_node::api::ApiError>() {
            Some(api) => serde_json::to_value(api.kind).unwrap_or_default(),
            None if interrupted => "interrupted".into(),
            None => "invalid_input".into(),
        };
        println!("{}", serde_json::json!({ "error": message, "kind": kind }));
    }
}

fn main() -> std::process::ExitCode {
    #[cfg(unix)]
    restore_default_sigpipe();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    tune_malloc();
    let cli = Cli::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("COMMONS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never into a file or a pipe.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if cli.log_format == "json" {
        logs.json().init();
    } else {
        logs.init();
    }
    let json = cli.json;
    match commands::run(cli) {
        Ok(code) => code,
        Err(e) => {
            report(&e, json);
            if e.downcast_ref::<commands::Interrupted>().is_some() {
                std::process::ExitCode::from(130)
            } else {
                std::process::ExitCode::FAILURE
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_that_quotes_its_cause_says_it_once() {
        let cause = std::io::Error::other("ticket is damaged");
        let e = anyhow::Error::from(cause).context("invalid ticket: ticket is damaged");
        assert_eq!(describe(&e), "invalid ticket: ticket is damaged");
        let e = anyhow::Error::from(std::io::Error::other("no such file")).context("cannot add /x");
        assert_eq!(describe(&e), "cannot add /x: no such file");
    }

    #[test]
    fn sizes_parse_with_binary_and_decimal_units() {
        assert_eq!(parse_size("4G"), Ok(4 << 30));
        assert_eq!(parse_size("700M"), Ok(700 << 20));
        assert_eq!(parse_size("25GB"), Ok(25_000_000_000));
        assert_eq!(parse_size("1.5KiB"), Ok(1536));
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        for bad in ["", "G", "4X", "-1", "0"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
