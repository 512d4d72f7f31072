//! `get`: fetch a blob or a whole dataset, from the providers a ticket names or, given a
//! bare hash, from those the DHT finds.
//!
//! The root comes first (for a dataset, its manifest: verified like any blob, then parsed
//! with every path rule); then the provider that served it is asked which other holders it
//! knows; then each wanted file's blob is fetched from up to [`MAX_SWARM_PEERS`] providers
//! at once ([`crate::transfer::swarm_blob`]); one that sends bad data is dropped for the
//! rest of the fetch and shunned for a while, and providers are asked best first
//! ([`crate::scores`]). When every known provider
//! has failed, the DHT is asked (once) for more. Everything is resumable: what the store
//! already holds is never asked for again.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use commons_protocol::{Hash, Ticket, TicketKind};
use libp2p::{
    futures::{stream::FuturesUnordered, StreamExt},
    Multiaddr, PeerId,
};

use serde::{Deserialize, Serialize};

mod holder_asks;
mod plan;

pub use holder_asks::{HolderAsks, KnownHolders, HOLDERS_REFRESH, MAX_KNOWN_HOLDERS};
pub use plan::{NextStep, ProviderPlan};

use crate::{
    error::{ApiError, ErrorKind},
    export::ExportOutcome,
    include::Include,
    net::{split_peer_addr, NetError, PeerAddrs, QueryCost},
    node::{Network, Node},
    progress::{Progress, ProgressEvent},
    store::{BlobState, StoreError},
    transfer::{ask_holders, swarm_blob, FetchError, FoundProvider, PeerFeed, RateLimit},
};

/// Providers asked of the DHT per lookup; more come through the holder exchange.
pub const LOOKUP_WANT: usize = 20;
/// Providers one blob is fetched from at once.
pub use crate::transfer::MAX_SWARM_PEERS;
/// While a blob is being fetched, how often the DHT is asked again for its providers.
/// The holder exchange names peers that asked for the blob, mostly ones still fetching it;
/// those that completed since the fetch started announce themselves in the DHT, and a
/// complete provider takes a slow partial one's place in a full swarm. Without it, the
/// scale model's 1,000-mirror flash crowd left fast mirrors on slow partial providers for
/// hours (docs/benchmarks.md, "Scale model"). A fetch shorter than this never asks again.
pub const PROVIDERS_REFRESH: std::time::Duration = std::time::Duration::from_secs(300);
/// Holders found while a blob is fetched that may wait to join its swarm at once.
pub const MAX_JOINING_HOLDERS: usize = 64;
/// Once one provider is connected, how long the others may still take to join this blob.
/// Paid once per provider and fetch: a dial still running when it ends is kept for the
/// fetch's next blobs, which neither wait for it again nor dial beside it.
pub const DIAL_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// One `Host::connect`; `Sync` as well, since the pool is shared across awaits.
type DialFuture = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<(), NetError>> + Send + Sync + 'static>,
>;

/// A dial to one provider, kept while it runs (it ends within [`crate::net::DIAL_TIMEOUT`]).
struct ProviderDial {
    provider: PeerAddrs,
    host: crate::net::Host,
    dial: DialFuture,
    /// Whether a success asks for the connection again (see [`ProviderDial::take_over`]).
    confirm: bool,
}

impl ProviderDial {
    fn start(host: &crate::net::Host, provider: PeerAddrs) -> Self {
        let (host, dial) = (host.clone(), Self::connect(host, &provider));
        Self {
            provider,
            host,
            dial,
            confirm: false,
        }
    }

    fn connect(host: &crate::net::Host, provider: &PeerAddrs) -> DialFuture {
        let (host, provider) = (host.clone(), provider.clone());
        Box::pin(async move { host.connect(provider.peer, provider.addrs).await })
    }

    /// This dial, kept from an earlier blob, for the blob now starting: should it have
    /// succeeded meanwhile, it asks for the connection again (answered at once while it is
    /// open; the earlier blob's transfer may have outlasted its idle timeout).
    fn take_over(mut self) -> Self {
        self.confirm = true;
        self
    }
}

impl std::future::Future for ProviderDial {
    type Output = (PeerId, Result<(), NetError>);

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        loop {
            let result = std::task::ready!(self.dial.as_mut().poll(cx));
            if result.is_ok() && self.confirm {
                self.confirm = false;
                self.dial = Self::connect(&self.host, &self.provider);
                continue;
            }
            return std::task::Poll::Ready((self.provider.peer, result));
        }
    }
}

/// Why a `get` failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GetError {
    /// Neither the ticket nor the DHT named any provider; `tried` says what was asked.
    #[error("no provider of {hash} found: {tried}")]
    NoProviders {
        /// What was asked for.
        hash: Hash,
        /// What was tried, for the user: the ticket's providers, the DHT lookup.
        tried: String,
    },
    /// `--include` patterns that match no file of the dataset.
    #[error("{0}")]
    NothingIncluded(String),
    /// It is larger than this fetch may bring in.
    #[error("{hash} is larger than the {max} bytes this fetch may bring in")]
    TooLarge {
        /// What was fetched.
        hash: Hash,
        /// The limit.
        max: u64,
    },
    /// A publisher's signature was required of a blob: only datasets are signed.
    #[error("{hash} is a blob: only datasets carry signatures, so a publisher cannot be required")]
    SignedBlob {
        /// The blob.
        hash: Hash,
    },
    /// What to get is neither a ticket nor a full hash.
    #[error("{0:?} is neither a ticket (commons1…) nor a full hash (64 hex characters)")]
    BadTarget(String),
    /// A ticket that does not parse.
    #[error("invalid ticket: {0}")]
    BadTicket(#[from] commons_protocol::TicketError),
    /// A provider address is not a multiaddr ending in `/p2p/<peer id>`.
    #[error("provider address {0:?} is not a multiaddr ending in /p2p/<peer id>")]
    BadProvider(String),
    /// Every provider failed for some blob; the last error of each is listed.
    #[error("could not fetch {hash}: {}", .errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    AllProvidersFailed {
        /// The blob that could not be had.
        hash: Hash,
        /// What each provider did.
        errors: Vec<FetchError>,
    },
    /// The dataset carries no valid signature of the publisher required (by `--publisher`
    /// or the trust policy): nothing of its files was fetched.
    #[error(
        "dataset {root} carries no valid signature by publisher {publisher} (the providers \
         asked served it unsigned or signed by others); refused, none of its files was fetched"
    )]
    Unsigned {
        /// The dataset.
        root: Hash,
        /// The publisher expected (text form).
        publisher: String,
    },
    /// The manifest fetched does not parse.
    #[error("dataset {root}: {source}")]
    BadManifest {
        /// The dataset.
        root: Hash,
        /// Why.
        source: StoreError,
    },
    /// The DHT lookup failed.
    #[error(transparent)]
    Net(#[from] NetError),
    /// Our store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The kind of each fetch failure, for callers of the API.
impl From<GetError> for ApiError {
    fn from(e: GetError) -> Self {
        match e {
            GetError::Store(e) => e.into(),
            GetError::Net(e) => e.into(),
            GetError::NoProviders { .. } => Self::new(ErrorKind::NotFound, e.to_string()),
            GetError::Unsigned { .. } => Self::new(ErrorKind::Corrupt, e.to_string()),
            GetError::BadTarget(_)
            | GetError::BadTicket(_)
            | GetError::BadProvider(_)
            | GetError::SignedBlob { .. }
            | GetError::NothingIncluded(_) => Self::new(ErrorKind::InvalidInput, e.to_string()),
            _ => Self::new(ErrorKind::Peer, e.to_string()),
        }
    }
}

/// What `get` fetched (and exported): the reply of the `get` request (its `--json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetOutcome {
    /// `blob` or `dataset`.
    pub kind: TicketKind,
    /// Its address.
    pub hash: Hash,
    /// Files now complete.
    pub files: u64,
    /// Their total size.
    pub size: u64,
    /// Response bytes received from providers for this fetch.
    pub bytes_received: u64,
    /// Data requests made to providers for this fetch.
    pub requests: u64,
    /// Of those, data requests carried by providers' bulk endpoints (the rest: libp2p).
    pub bulk_requests: u64,
    /// Providers dropped for sending bad data (PeerIds); none of their bytes was stored.
    pub dropped: Vec<String>,
    /// What was written, when an output folder was given.
    pub exported: Option<ExportOutcome>,
    /// Whether the store keeps its copy (false after `--no-keep`).
    pub kept: bool,
}

/// What to get: a ticket (kind and providers known) or a bare hash (both found out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetTarget {
    /// The root.
    pub hash: Hash,
    /// Blob or dataset; `None` for a bare hash (a root that parses as a manifest is a
    /// dataset).
    pub kind: Option<TicketKind>,
    /// Providers the ticket names.
    pub providers: Vec<PeerAddrs>,
    /// The publisher whose signature the dataset must carry, if any.
    pub publisher: Option<commons_protocol::provenance::PublicKey>,
}

impl GetTarget {
    /// Parses a ticket or a full 64-character hash.
    pub fn parse(target: &str) -> Result<Self, GetError> {
        let target = target.trim();
        if let Ok(hash) = target.parse::<Hash>() {
            return Ok(Self {
                hash,
                kind: None,
                providers: Vec::new(),
                publisher: None,
            });
        }
        if !Ticket::looks_like(target) {
            return Err(GetError::BadTarget(target.chars().take(80).collect()));
        }
        let ticket: Ticket = target.parse()?;
        Ok(Self {
            hash: ticket.hash,
            kind: Some(ticket.kind),
            providers: ticket_providers(&ticket)?,
            publisher: None,
        })
    }
}

/// The provider peers and addresses of a ticket.
pub fn ticket_providers(ticket: &Ticket) -> Result<Vec<PeerAddrs>, GetError> {
    ticket
        .providers
        .iter()
        .map(|p| {
            p.parse::<Multiaddr>()
                .ok()
                .and_then(|a| split_peer_addr(&a))
                .map(|(peer, addr)| PeerAddrs {
                    peer,
                    addrs: vec![addr],
                })
                .ok_or_else(|| GetError::BadProvider(p.clone()))
        })
        .collect()
}

/// Whether what a fetch brings in is kept for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Pinned: what a user or a mirror asked for.
    Pinned,
    /// Not pinned: held only while it is fetched, then garbage collection (the quota) may
    /// take it. What an HTTP client's request made the gateway fetch: a stranger must not
    /// be able to fill the node's disk with data nobody can remove.
    Unpinned,
}

/// How one fetch behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchOptions {
    /// Whether what it brings in is pinned.
    pub keep: Keep,
    /// Its own download limit in bytes per second (`get --limit-rate`), on top of the
    /// node's.
    pub rate_limit: Option<u64>,
    /// Most bytes it may receive: past this it stops with [`GetError::TooLarge`] (what it
    /// received stays, unpinned). For fetches a stranger can cause (the gateway's), whose
    /// size is not known before they start.
    pub max_bytes: Option<u64>,
}

impl FetchOptions {
    /// Pinned, no limit of its own: what a user's `get` and a mirror ask for.
    pub fn pinned() -> Self {
        Self {
            keep: Keep::Pinned,
            rate_limit: None,
            max_bytes: None,
        }
    }

    /// Unpinned, no limit of its own: what the gateway fetches for an HTTP client.
    pub fn unpinned() -> Self {
        Self {
            keep: Keep::Unpinned,
            rate_limit: None,
            max_bytes: None,
        }
    }
}

/// Fetches `target` into the store through `network`. For a dataset, only the files
/// `include` accepts are fetched; the dataset is recorded (pinned if `options` say so) and
/// announced as soon as its manifest is held.
pub async fn get(
    node: &Node,
    network: &Network,
    target: &GetTarget,
    include: &Include,
    options: FetchOptions,
    progress: &Progress,
) -> Result<GetOutcome, GetError> {
    let keep = options.keep;
    let before = node.stats().total();
    let root = target.hash;
    let store = node.store();
    // Kept from garbage collection until pinned (the dataset's files are held below).
    let _root_held = store
        .run(move |s| Ok::<_, StoreError>(s.hold([root])))
        .await?;
    let mut pool = Pool::new(node, network, root, target.providers.clone());
    pool.limit = options.rate_limit.map(RateLimit::new);
    pool.max_bytes = options.max_bytes;
    let served_root = pool.fetch(root, progress).await?;
    if let Some(peer) = served_root {
        pool.exchange_holders(peer).await;
    }

    let kind = match target.kind {
        Some(kind) => kind,
        None => {
            let is_dataset = store
                .run(move |s| Ok::<_, StoreError>(s.read_manifest(&root).is_ok()))
                .await?;
            if is_dataset {
                TicketKind::Dataset
            } else {
                TicketKind::Blob
            }
        }
    };
    if target.publisher.is_some() && kind == TicketKind::Blob {
        return Err(GetError::SignedBlob { hash: root });
    }
    let (files, size) = match kind {
        TicketKind::Blob => {
            let size = store
                .run(move |s| {
                    if keep == Keep::Pinned {
                        s.pin(&root)?;
                    }
                    Ok::<_, StoreError>(s.blob(&root)?.map_or(0, |m| m.size))
                })
                .await?;
            progress.event(ProgressEvent::FileDone);
            (1, size)
        }
        TicketKind::Dataset => {
            fetch_files(
                &mut pool,
                root,
                include,
                keep,
                target.publisher.as_ref(),
                served_root,
                progress,
            )
            .await?
        }
    };
    if keep == Keep::Pinned {
        node.announce(root);
    }
    let after = node.stats().total();
    Ok(GetOutcome {
        kind,
        hash: root,
        files,
        size,
        bytes_received: after.bytes_received - before.bytes_received,
        requests: after.requests_made - before.requests_made,
        bulk_requests: after.bulk_requests - before.bulk_requests,
        dropped: pool.misbehaved.iter().map(|p| p.to_string()).collect(),
        exported: None,
        kept: true,
    })
}

/// Fetches a dataset's signatures, then its wanted files; returns their number and total
/// size. With a `publisher` required, a dataset without its signature is refused before any
/// file is fetched.
async fn fetch_files(
    pool: &mut Pool<'_>,
    root: Hash,
    include: &Include,
    keep: Keep,
    publisher: Option<&commons_protocol::provenance::PublicKey>,
    served_root: Option<PeerId>,
    progress: &Progress,
) -> Result<(u64, u64), GetError> {
    let store = pool.node.store().clone();
    // Recorded and pinned now, before any file arrives: an interrupted fetch then shows in
    // `ls` (as partial, with how much is held), and GC keeps what it received. Also when
    // only some files are wanted.
    // Patterns that match nothing are refused before anything is recorded or pinned.
    let include_checked = include.clone();
    let manifest = store
        .run(move |s| {
            let manifest = s
                .read_manifest(&root)
                .map_err(|source| GetError::BadManifest { root, source })?;
            include_checked
                .check_matches(manifest.entries().iter().map(|e| e.path.as_str()))
                .map_err(GetError::NothingIncluded)?;
            Ok::<_, GetError>(manifest)
        })
        .await?;
    // Before anything is recorded: a dataset the publisher did not sign leaves no trace.
    fetch_signatures(pool, root, &manifest, publisher, served_root).await?;
    let recorded = manifest.clone();
    store
        .run(move |s| s.record_dataset(&root, &recorded, keep == Keep::Pinned))
        .await?;
    // Holding the manifest makes this node a (partial) holder others can find; what a
    // gateway client made it fetch is not announced (nothing keeps it: it may be gone).
    if keep == Keep::Pinned {
        pool.node.announce(root);
    }
    let wanted: Vec<_> = manifest
        .entries()
        .iter()
        .filter(|e| include.matches(&e.path))
        .map(|e| (e.hash, e.size))
        .collect();
    let hashes: Vec<Hash> = wanted.iter().map(|(h, _)| *h).collect();
    let _files_held = store
        .run(move |s| Ok::<_, StoreError>(s.hold(hashes)))
        .await?;
    progress.event(ProgressEvent::Start {
        files: wanted.len() as u64,
        bytes: wanted.iter().map(|(_, size)| size).sum(),
    });
    let mut bytes = 0;
    for &(hash, size) in &wanted {
        let held = store.run(move |s| s.blob(&hash)).await?;
        if let Some(meta) = held.filter(|m| m.state == BlobState::Complete) {
            progress.event(ProgressEvent::Advance { bytes: meta.size });
        } else {
            pool.fetch(hash, progress).await?;
        }
        bytes += size;
        progress.event(ProgressEvent::FileDone);
    }
    Ok((wanted.len() as u64, bytes))
}

/// Brings the dataset's signatures from its providers (the one that served the manifest
/// first), so they travel with the data; with `publisher` required, fails unless one by it
/// is held afterwards.
async fn fetch_signatures(
    pool: &mut Pool<'_>,
    root: Hash,
    manifest: &commons_protocol::Manifest,
    publisher: Option<&commons_protocol::provenance::PublicKey>,
    served_root: Option<PeerId>,
) -> Result<(), GetError> {
    use crate::provenance::signatures;
    let node = pool.node;
    let store = node.store();
    let signed = || {
        let publisher = publisher.cloned();
        store.run(move |s| match &publisher {
            Some(p) => signatures::is_signed_by(s, &root, p),
            None => Ok(false),
        })
    };
    if publisher.is_some() && signed().await? {
        return Ok(());
    }
    if publisher.is_some() && pool.peers.is_empty() && !pool.looked_up {
        // The data was held already (no provider was needed): the signature is not.
        pool.lookup().await?;
    }
    let mut peers: Vec<PeerId> = served_root.into_iter().collect();
    peers.extend(
        pool.peers
            .iter()
            .map(|p| p.peer)
            .filter(|p| Some(*p) != served_root),
    );
    let kept =
        signatures::fetch_from_peers(&pool.network.host, store, &peers, root, manifest, publisher)
            .await;
    tracing::debug!(%root, kept, "signatures from peers");
    match publisher {
        Some(p) if !signed().await? => Err(GetError::Unsigned {
            root,
            publisher: p.to_string(),
        }),
        _ => Ok(()),
    }
}

/// The providers of one fetch: from the ticket, the DHT and the holder exchange, minus
/// those that misbehaved.
struct Pool<'a> {
    node: &'a Node,
    network: &'a Network,
    root: Hash,
    peers: Vec<PeerAddrs>,
    looked_up: bool,
    /// Providers dropped for bad data during this fetch.
    misbehaved: Vec<PeerId>,
    /// Providers the ticket named (for the error when none can be had).
    from_ticket: usize,
    /// What the DHT lookup cost and found, once made.
    lookup_cost: Option<(QueryCost, usize)>,
    /// This fetch's own download limit.
    limit: Option<RateLimit>,
    /// Most bytes this fetch may receive, and what it received so far.
    max_bytes: Option<u64>,
    received: Arc<std::sync::atomic::AtomicU64>,
    /// Dials that had their [`DIAL_GRACE`] for one blob and were still running when its
    /// swarm started, by provider: the next blob takes the dial over instead of starting
    /// another. A gone provider the DHT still names (its handshake times out) cost every
    /// file of a dataset the grace, 1 s, and one more dial.
    dials: HashMap<PeerId, ProviderDial>,
}

impl<'a> Pool<'a> {
    fn new(node: &'a Node, network: &'a Network, root: Hash, providers: Vec<PeerAddrs>) -> Self {
        let mut pool = Self {
            node,
            network,
            root,
            peers: Vec::new(),
            looked_up: false,
            misbehaved: Vec::new(),
            from_ticket: providers.len(),
            lookup_cost: None,
            limit: None,
            max_bytes: None,
            received: Arc::default(),
            dials: HashMap::new(),
        };
        for p in providers {
            pool.add(p);
        }
        pool
    }

    /// Adds a provider unless it is this node, shunned, or already known; returns whether
    /// it was new.
    fn add(&mut self, p: PeerAddrs) -> bool {
        if p.peer == self.network.host.peer_id()
            || self.node.scores().is_banned(&p.peer)
            || self.peers.iter().any(|q| q.peer == p.peer)
        {
            return false;
        }
        self.node.holders().add(self.root, p.peer, p.addrs.clone());
        self.peers.push(p);
        true
    }

    /// Asks the DHT for providers of the root (once per fetch); returns how many were new.
    async fn lookup(&mut self) -> Result<usize, GetError> {
        self.looked_up = true;
        let found = self
            .network
            .host
            .find_providers(self.root, LOOKUP_WANT, true)
            .await?;
        tracing::info!(root = %self.root, found = found.providers.len(), "DHT lookup");
        self.lookup_cost = Some((found.cost, found.providers.len()));
        Ok(found
            .providers
            .into_iter()
            .filter(|p| self.add(p.clone()))
            .count())
    }

    /// What this fetch tried before it found no provider, in the user's terms.
    async fn tried(&self) -> String {
        let mut tried = Vec::new();
        if self.from_ticket > 0 {
            tried.push(format!(
                "the ticket's {} provider{} could not be used",
                self.from_ticket,
                if self.from_ticket == 1 { "" } else { "s" }
            ));
        }
        let status = self.network.host.status().await.ok();
        let table = status.as_ref().map_or(0, |s| s.routing_table);
        let mode = status.map_or_else(|| "unknown".into(), |s| s.dht_mode);
        match &self.lookup_cost {
            Some((cost, _)) if table == 0 && cost.successes == 0 => tried.push(
                "this node knows no DHT peer to ask (were the bootstrap peers reached? is a \
                 node running here? see `commons node peers`)"
                    .into(),
            ),
            Some((cost, found)) => tried.push(format!(
                "the DHT lookup asked {} peer{} ({} answered; {table} in this node's routing \
                 table, DHT {mode}) and found {found} holder{}",
                cost.requests,
                if cost.requests == 1 { "" } else { "s" },
                cost.successes,
                if *found == 1 { "" } else { "s" },
            )),
            None => tried.push("the DHT was not asked".into()),
        }
        let hint = if self
            .lookup_cost
            .as_ref()
            .is_some_and(|(c, _)| c.successes > 0)
        {
            "; is the hash right, and does a node that holds it run (`commons node run`) on the \
             same network?"
        } else {
            ""
        };
        format!("{}{hint}", tried.join("; "))
    }

    /// Asks `peer` for the other holders it knows, and adds them.
    async fn exchange_holders(&mut self, peer: PeerId) {
        match ask_holders(&self.network.host, peer, self.root).await {
            Ok(more) => {
                let new = more.into_iter().filter(|p| self.add(p.clone())).count();
                tracing::debug!(%peer, new, "holder exchange");
            }
            Err(e) => tracing::debug!(%peer, error = %e, "holder exchange failed"),
        }
    }

    /// Fetches one blob unless already complete: from up to [`MAX_SWARM_PEERS`] providers
    /// at once, then from the next ones if those failed, then from the DHT's. Providers
    /// that misbehave are dropped for the rest of the fetch. Returns a provider that served
    /// it.
    async fn fetch(&mut self, hash: Hash, progress: &Progress) -> Result<Option<PeerId>, GetError> {
        let (node, host) = (self.node, &self.network.host);
        let complete = node
            .store()
            .run(move |s| s.blob(&hash))
            .await?
            .is_some_and(|m| m.state == BlobState::Complete);
        if complete {
            return Ok(None);
        }
        let too_large = tokio_util::sync::CancellationToken::new();
        let on_bytes = {
            let (progress, received) = (progress.clone(), self.received.clone());
            let (max, too_large) = (self.max_bytes, too_large.clone());
            Arc::new(move |bytes| {
                progress.event(ProgressEvent::Advance { bytes });
                let total = received.fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
                if max.is_some_and(|max| total + bytes > max) {
                    too_large.cancel();
                }
            }) as Arc<dyn Fn(u64) + Send + Sync>
        };
        let mut errors = Vec::new();
        // Which providers to try next (`plan.rs`): each once, the DHT once, second chances
        // after hole punches.
        let mut plan = ProviderPlan::default();
        if self.looked_up {
            plan.mark_looked_up();
        }
        loop {
            let known: Vec<PeerId> = self.peers.iter().map(|p| p.peer).collect();
            // Those that served well before first, those that failed last.
            let step = plan.next(
                known,
                |batch| node.scores().rank(batch, |p| *p),
                |p, at| host.punched_since(p, at),
            );
            let batch: Vec<PeerAddrs> = match step {
                NextStep::Dial(peers) => peers
                    .iter()
                    .filter_map(|p| self.peers.iter().find(|q| q.peer == *p).cloned())
                    .collect(),
                NextStep::LookUp => {
                    self.lookup().await?;
                    continue;
                }
                NextStep::Exhausted => {
                    return Err(if errors.is_empty() {
                        GetError::NoProviders {
                            hash: self.root,
                            tried: self.tried().await,
                        }
                    } else {
                        GetError::AllProvidersFailed { hash, errors }
                    });
                }
            };
            let dialled: Vec<PeerId> = batch.iter().map(|p| p.peer).collect();
            // Dials kept from an earlier blob already had their grace.
            let mut graced = HashSet::new();
            let mut dials = FuturesUnordered::new();
            for p in batch {
                match self.dials.remove(&p.peer) {
                    Some(dial) => {
                        graced.insert(p.peer);
                        dials.push(dial.take_over());
                    }
                    None => dials.push(ProviderDial::start(host, p)),
                }
            }
            let (mut connected, mut failed) = (Vec::new(), Vec::new());
            // Start once the first provider answers and the others had DIAL_GRACE more:
            // a provider that is gone (its DHT record outlives it) must not hold up the rest.
            let mut deadline: Option<tokio::time::Instant> = None;
            loop {
                let awaited = dialled
                    .iter()
                    .any(|p| !connected.contains(p) && !failed.contains(p) && !graced.contains(p));
                if deadline.is_some() && !awaited {
                    break;
                }
                let next = match deadline {
                    Some(d) => match tokio::time::timeout_at(d, dials.next()).await {
                        Ok(next) => next,
                        Err(_) => break,
                    },
                    None => dials.next().await,
                };
                let Some((peer, result)) = next else { break };
                match result {
                    Ok(()) => {
                        connected.push(peer);
                        deadline.get_or_insert(tokio::time::Instant::now() + DIAL_GRACE);
                    }
                    Err(e) => {
                        tracing::info!(%peer, error = %e, "provider unreachable");
                        node.scores().failed(peer);
                        failed.push(peer);
                        plan.dial_failed(peer, std::time::Instant::now());
                        errors.push(e.into());
                    }
                }
            }
            // Still dialling: not tried yet, a later round or blob may use them, and
            // takes the dial over.
            for dial in dials {
                self.dials.insert(dial.provider.peer, dial);
            }
            for peer in dialled {
                if !connected.contains(&peer) && !failed.contains(&peer) {
                    plan.not_dialled(peer);
                }
            }
            if connected.is_empty() {
                continue;
            }
            progress.event(ProgressEvent::Peers {
                count: connected.len() as u64,
            });
            // A holder found joins once (an announced provider is offered again at each
            // PROVIDERS_REFRESH), and at most MAX_JOINING_HOLDERS wait to join: the
            // channel is bounded by that.
            let (joining, feed) = tokio::sync::mpsc::channel(MAX_JOINING_HOLDERS);
            let mut feed = PeerFeed::new(feed);
            let found = std::sync::Mutex::new(Vec::new());
            let swarm = swarm_blob(
                host,
                node.store(),
                &connected,
                &mut feed,
                hash,
                node.stats(),
                on_bytes.clone(),
                self.limit.as_ref(),
            );
            let known: KnownHolders<PeerId> = self.peers.iter().map(|p| p.peer).collect();
            let round_start = std::time::Instant::now();
            let refresh = refresh_holders(
                node,
                host,
                self.root,
                connected.clone(),
                known,
                &found,
                joining,
            );
            let result = tokio::select! {
                result = swarm => result,
                never = refresh => match never {},
                () = too_large.cancelled() => {
                    return Err(GetError::TooLarge {
                        hash,
                        max: self.max_bytes.unwrap_or(0),
                    })
                }
            };
            for p in found.into_inner().unwrap_or_else(|e| e.into_inner()) {
                self.add(p);
            }
            let (report, done) = match result {
                Ok(report) => (report, true),
                Err(e) => (e.report, false),
            };
            let served = report.contributed.first().copied();
            for peer in &report.contributed {
                node.scores().served(*peer);
            }
            for (peer, error) in report.dropped {
                match error {
                    FetchError::Store(e) if !matches!(e, StoreError::SizeConflict { .. }) => {
                        return Err(e.into())
                    }
                    error => {
                        if error.peer_misbehaved() {
                            self.peers.retain(|p| p.peer != peer);
                            node.holders().remove(&self.root, &peer);
                            node.scores().bad_data(peer);
                            self.misbehaved.push(peer);
                            self.dials.remove(&peer);
                        } else if !plan.retried_after_punch(&peer)
                            && (host.punched_since(&peer, round_start)
                                || (matches!(
                                    error,
                                    FetchError::Stream { .. } | FetchError::Truncated { .. }
                                ) && host.punched_since_settled(&peer, round_start).await))
                        {
                            plan.retry_after_punch(peer);
                            // Cut short as a hole punch moved it to a direct connection
                            // (the relayed one closes, with the streams on it): asked
                            // again, once, over the direct one.
                            tracing::info!(%peer, error = %error, "cut by a hole punch; asking again");
                            continue;
                        } else if !matches!(error, FetchError::Refused { .. }) {
                            // Gone, reset, stalled or cut short: a refusal (busy, not held)
                            // is an honest answer and costs nothing.
                            node.scores().failed(peer);
                        }
                        errors.push(error);
                    }
                }
            }
            if done {
                return Ok(served);
            }
        }
    }
}

/// Paced by [`HolderAsks`], asks the next of `asked` for the holders of `root` it knows,
/// and every [`PROVIDERS_REFRESH`] the DHT for its providers; each new one (not in `known`,
/// not shunned) that can be reached is recorded in `found` and sent to `joining`, then
/// asked in turn, until [`MAX_KNOWN_HOLDERS`] are learnt; one the DHT names is sent to
/// `joining` again even if known. Runs until dropped.
async fn refresh_holders(
    node: &Node,
    host: &crate::net::Host,
    root: Hash,
    mut asked: Vec<PeerId>,
    mut known: KnownHolders<PeerId>,
    found: &std::sync::Mutex<Vec<PeerAddrs>>,
    joining: tokio::sync::mpsc::Sender<FoundProvider>,
) -> std::convert::Infallible {
    known.insert(host.peer_id());
    let mut next = 0;
    let mut pace = HolderAsks::default();
    let mut looked_up = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(pace.wait()).await;
        // (holder, announced in the DHT): an announced provider holds the whole blob (or a
        // dataset's manifest), so it is offered to the swarm again even if known (it may
        // have been partial, or busy, when met before); the swarm ignores one it still has.
        let mut holders = Vec::new();
        if looked_up.elapsed() >= PROVIDERS_REFRESH {
            looked_up = tokio::time::Instant::now();
            match host.find_providers(root, LOOKUP_WANT, true).await {
                Ok(found) => holders.extend(found.providers.into_iter().map(|p| (p, true))),
                Err(e) => tracing::debug!(%root, error = %e, "DHT lookup while fetching"),
            }
        }
        if let Some(&peer) = asked.get(next % asked.len().max(1)) {
            next += 1;
            if let Ok(more) = ask_holders(host, peer, root).await {
                holders.extend(more.into_iter().map(|p| (p, false)));
            }
        }
        for (holder, announced) in holders {
            if node.scores().is_banned(&holder.peer) {
                continue;
            }
            let new = known.learn(holder.peer);
            if !(new || announced) {
                continue;
            }
            if host
                .connect(holder.peer, holder.addrs.clone())
                .await
                .is_ok()
            {
                tracing::debug!(peer = %holder.peer, %root, "holder found while fetching");
                // A new holder the swarm does not take now (the channel full, or a full
                // round, `SwarmRound::offer`) still joins the fetch's pool when this
                // blob's swarm ends.
                let _ = joining.try_send(FoundProvider {
                    peer: holder.peer,
                    announced,
                });
                if new {
                    asked.push(holder.peer);
                    found.lock().unwrap_or_else(|e| e.into_inner()).push(holder);
                }
            }
        }
        pace.asked();
    }
}
