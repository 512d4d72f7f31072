//! [`Node`]: the node assembled once, the same way for the daemon (`commons node run`) and
//! for a one-shot command run in-process (`commons get` with no node running): the store,
//! the transfer counters and limits, the holders and peer scores, and — started when first needed
//! by a one-shot command, at start by the daemon — the libp2p host and the publisher.
//!
//! Every operation of [`crate::api`] runs on a `Node`. Its store is an [`AsyncStore`], so
//! no RocksDB call runs on an async worker.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Instant,
};

use libp2p::Multiaddr;
use tokio_util::sync::CancellationToken;

use crate::{
    config::{ConfigFile, GatewayConfig, MirrorEntry},
    discovery::{DhtMode, DiscoveryConfig, Holders, Publisher},
    error::{ApiError, ErrorKind},
    identity,
    mirror::board::Mirror,
    net::Host,
    scores::PeerScores,
    store::{AsyncStore, Store, StoreError, StoreOptions},
    transfer::{TransferLimits, TransferStats},
};

/// The default UDP port for QUIC.
pub const DEFAULT_PORT: u16 = 4433;

/// Listen addresses used when none are given: all interfaces, IPv4 and IPv6, port 4433.
pub fn default_listen_addrs() -> Vec<Multiaddr> {
    [
        format!("/ip4/0.0.0.0/udp/{DEFAULT_PORT}/quic-v1"),
        format!("/ip6/::/udp/{DEFAULT_PORT}/quic-v1"),
    ]
    .iter()
    .filter_map(|a| a.parse().ok())
    .collect()
}

/// Command-line settings that add to (or override) the config file's.
#[derive(Debug, Clone, Default)]
pub struct NodeFlags {
    /// Addresses to listen on (replace the file's).
    pub listen: Vec<String>,
    /// Peers to join the network through (added to the file's).
    pub bootstrap: Vec<String>,
    /// `auto`, `server` or `client`.
    pub dht_mode: Option<String>,
    /// Addresses others reach this node at (added to the file's).
    pub external_addrs: Vec<String>,
    /// Also find peers with mDNS.
    pub mdns: bool,
    /// No bulk-data endpoint.
    pub no_bulk: bool,
}

/// Everything a node is configured with: the config file, with the flags on top.
#[derive(Debug)]
pub struct NodeSettings {
    /// The data dir (store, key, admin socket).
    pub data_dir: PathBuf,
    /// Addresses a running node listens on.
    pub listen: Vec<Multiaddr>,
    /// How the node joins the DHT and announces what it holds.
    pub discovery: DiscoveryConfig,
    /// The HTTP gateway, if it is to run.
    pub gateway: Option<GatewayConfig>,
    /// The datasets this node mirrors.
    pub mirror: Vec<MirrorEntry>,
    /// Upload and download rate limits.
    pub limits: TransferLimits,
    /// Most bytes of data to keep (unpinned data is collected to stay under it).
    pub quota: Option<u64>,
    /// Where to serve Prometheus metrics, if anywhere.
    pub metrics: Option<SocketAddr>,
    /// Which publisher speaks for which names (`[trust]`).
    pub trust: commons_protocol::provenance::TrustPolicy,
}

fn parse_addrs(list: &[String], what: &str) -> Result<Vec<Multiaddr>, ApiError> {
    list.iter()
        .map(|a| {
            a.parse().map_err(|_| {
                ApiError::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "invalid {what} address {a:?} (expected a multiaddr such as \
                         /ip4/203.0.113.5/udp/4433/quic-v1/p2p/12D3Koo…)"
                    ),
                )
            })
        })
        .collect()
}

impl NodeSettings {
    /// Reads the config file (`config`, else `<data dir>/config.toml` if present) and puts
    /// `flags` on top.
    pub fn load(
        data_dir: &Path,
        config: Option<&Path>,
        flags: &NodeFlags,
    ) -> Result<Self, ApiError> {
        let file = ConfigFile::load(config, data_dir)
            .map_err(|e| ApiError::new(ErrorKind::InvalidInput, e.to_string()))?;
        let trust = file
            .trust_policy()
            .map_err(|e| ApiError::new(ErrorKind::InvalidInput, e.to_string()))?;
        let mut discovery = file.discovery();
        discovery
            .bootstrap
            .extend(parse_addrs(&flags.bootstrap, "bootstrap")?);
        discovery
            .external_addrs
            .extend(parse_addrs(&flags.external_addrs, "external")?);
        discovery.mdns |= flags.mdns;
        discovery.bulk &= !flags.no_bulk;
        if let Some(mode) = &flags.dht_mode {
            discovery.mode = mode
                .parse()
                .map_err(|e: String| ApiError::new(ErrorKind::InvalidInput, e))?;
        }
        let listen = if !flags.listen.is_empty() {
            parse_addrs(&flags.listen, "listen")?
        } else if !file.listen.is_empty() {
            file.listen.clone()
        } else {
            default_listen_addrs()
        };
        Ok(Self {
            data_dir: data_dir.to_path_buf(),
            listen,
            discovery,
            gateway: file.gateway.as_ref().map(|g| GatewayConfig {
                listen: g.listen,
                fetch_missing: g.fetch_missing,
                fetch_missing_max_bytes: g
                    .fetch_missing_max_gib
                    .map_or(crate::config::DEFAULT_FETCH_MISSING_MAX_BYTES, |gib| {
                        (gib * (1u64 << 30) as f64) as u64
                    }),
            }),
            mirror: file.mirror.datasets.clone(),
            limits: file.transfer_limits(),
            quota: file.storage.quota_bytes(),
            metrics: file.metrics.as_ref().map(|m| m.listen),
            trust,
        })
    }
}

/// The network side of a node: its host, and (for a node that stays to serve) the
/// publisher that announces what it holds.
pub struct Network {
    /// The one libp2p host.
    pub host: Host,
    /// Announces roots; `None` for a one-shot command, which does not stay to serve.
    pub publisher: Option<Publisher>,
}

/// What only a running node (the daemon) has.
#[derive(Debug, Clone)]
pub struct DaemonInfo {
    /// When it started.
    pub started: Instant,
    /// The HTTP gateway's address, if it runs.
    pub gateway: Option<SocketAddr>,
}

struct Inner {
    data_dir: PathBuf,
    quota: Option<u64>,
    /// Discovery settings for a host started on demand (one-shot).
    discovery: DiscoveryConfig,
    store: AsyncStore,
    stats: Arc<TransferStats>,
    holders: Arc<Holders>,
    scores: Arc<PeerScores>,
    network: tokio::sync::OnceCell<Network>,
    joined: tokio::sync::OnceCell<()>,
    daemon: std::sync::OnceLock<DaemonInfo>,
    shutdown: CancellationToken,
    /// The datasets it mirrors, and where each is.
    mirror: Mirror,
    /// Becomes true once the first attempt to join the network ended (joined or not).
    join_tried: tokio::sync::watch::Sender<bool>,
    /// What its HTTP gateway served.
    gateway_stats: Arc<crate::gateway::stats::GatewayStats>,
    /// Which publisher speaks for which names.
    trust: commons_protocol::provenance::TrustPolicy,
}

/// The node: what every operation works with. Cheap to clone (one shared state).
#[derive(Clone)]
pub struct Node(Arc<Inner>);

/// Makes the data dir private to its user, and refuses one that belongs to someone else.
///
/// The store holds what a user fetched and the names they bound: `<data dir>` (when created
/// here) and `<data dir>/store` are made 0700, like the key and the admin socket are 0600.
/// A data dir of another user gets a clear error rather than RocksDB's "LOG.old:
/// Permission denied" — and root does not write root-owned files into a service's store.
#[cfg(unix)]
fn prepare_data_dir(data_dir: &Path) -> Result<(), ApiError> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let io = |e: std::io::Error| {
        ApiError::new(
            ErrorKind::Io,
            format!("cannot use the data dir {}: {e}", data_dir.display()),
        )
    };
    let created = !data_dir.exists();
    std::fs::create_dir_all(data_dir).map_err(io)?;
    let owner = std::fs::metadata(data_dir).map_err(io)?.uid();
    let me = euid();
    if owner != me {
        return Err(ApiError::new(
            ErrorKind::Busy,
            format!(
                "the data dir {} belongs to another user (uid {owner}; this is uid {me}): run \
                 commons as that user (e.g. `sudo -u <user> commons …`), or give --data-dir a \
                 folder of your own",
                data_dir.display()
            ),
        ));
    }
    let private = std::fs::Permissions::from_mode(0o700);
    if created {
        std::fs::set_permissions(data_dir, private.clone()).map_err(io)?;
    }
    let store = data_dir.join("store");
    std::fs::create_dir_all(&store).map_err(io)?;
    std::fs::set_permissions(&store, private).map_err(io)?;
    Ok(())
}

#[cfg(not(unix))]
fn prepare_data_dir(_data_dir: &Path) -> Result<(), ApiError> {
    Ok(())
}

/// This process's effective user id.
#[cfg(unix)]
#[allow(unsafe_code)]
fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Opens the store of `data_dir`, naming the cause when another process holds it.
fn open_store(data_dir: &Path) -> Result<Store, ApiError> {
    prepare_data_dir(data_dir)?;
    match Store::open(data_dir.join("store"), StoreOptions::default()) {
        Ok(store) => Ok(store),
        Err(StoreError::InUse { .. }) => Err(ApiError::new(
            ErrorKind::Busy,
            format!(
                "the store in {} is in use by another commons process",
                data_dir.display()
            ),
        )),
        Err(e) => Err(ApiError::from(e).context(format_args!(
            "cannot open the store in {}",
            data_dir.display()
        ))),
    }
}

impl Node {
    /// Opens the node of `settings` in-process: its store now, its network when an
    /// operation first needs it (as a DHT client that asks and leaves).
    pub fn open(settings: NodeSettings) -> Result<Self, ApiError> {
        let store = open_store(&settings.data_dir)?;
        let added = crate::mirror::board::saved_entries(&store)?;
        let discovery = DiscoveryConfig {
            query_timeout: settings.discovery.query_timeout,
            bulk: settings.discovery.bulk,
            ..DiscoveryConfig::client(settings.discovery.bootstrap.clone())
        };
        Self::assemble(settings, store, added, discovery)
    }

    fn assemble(
        mut settings: NodeSettings,
        store: Store,
        mirror_added: Vec<crate::config::MirrorEntry>,
        discovery: DiscoveryConfig,
    ) -> Result<Self, ApiError> {
        let mirror = Mirror::load(std::mem::take(&mut settings.mirror), mirror_added)?;
        Ok(Self(Arc::new(Inner {
            data_dir: settings.data_dir,
            quota: settings.quota,
            discovery,
            store: AsyncStore::new(Arc::new(store)),
            stats: Arc::new(TransferStats::limited(settings.limits)),
            holders: Arc::default(),
            scores: Arc::default(),
            network: tokio::sync::OnceCell::new(),
            joined: tokio::sync::OnceCell::new(),
            daemon: std::sync::OnceLock::new(),
            shutdown: CancellationToken::new(),
            mirror,
            join_tried: tokio::sync::watch::Sender::new(false),
            gateway_stats: Arc::default(),
            trust: settings.trust,
        })))
    }

    /// Opens the node of `settings` to run as the daemon: the store, then the host
    /// listening on `settings.listen`, and the publisher (announcing every pinned root
    /// unless a DHT client). Joining the network is the daemon's to start.
    pub async fn start(settings: NodeSettings) -> Result<Self, ApiError> {
        // Opening RocksDB (and replaying its log) blocks: off the async workers.
        let data_dir = settings.data_dir.clone();
        let (store, pins, net_state, key, added) = tokio::task::spawn_blocking(move || {
            let store = open_store(&data_dir)?;
            let mut pins: Vec<commons_protocol::Hash> =
                store.pins()?.into_iter().map(|(hash, _)| hash).collect();
            // And the Hub commits held, so other mirrors of a repository find them.
            pins.extend(store.held_upstream_keys()?);
            let net_state = store.load_net_state()?;
            let added = crate::mirror::board::saved_entries(&store)?;
            let key = identity::load_or_create(&data_dir)
                .map_err(|e| ApiError::new(ErrorKind::Io, e.to_string()))?;
            Ok::<_, ApiError>((store, pins, net_state, key, added))
        })
        .await
        .map_err(|e| ApiError::new(ErrorKind::Internal, e.to_string()))??;
        let discovery = settings.discovery.clone();
        let host = Host::start(key, &settings.listen, &discovery).await?;
        host.restore_state(net_state).await?;
        let publisher = Publisher::spawn(
            host.clone(),
            discovery.announce_interval,
            discovery.announce_concurrency,
        );
        if discovery.mode != DhtMode::Client {
            // Roots only: pinned datasets and blobs pinned on their own, never their files.
            for hash in pins {
                publisher.provide(hash);
            }
        }
        let node = Self::assemble(settings, store, added, discovery)?;
        let network = Network {
            host,
            publisher: Some(publisher),
        };
        // Freshly made: neither cell can be set yet.
        let _ = node.0.network.set(network);
        let _ = node.0.joined.set(());
        Ok(node)
    }

    /// Records what only a running node has; from then on it answers status requests.
    pub fn set_daemon(&self, info: DaemonInfo) {
        let _ = self.0.daemon.set(info);
    }

    /// The running node's own facts, or a `not_running` error for an in-process node.
    pub fn daemon(&self) -> Result<&DaemonInfo, ApiError> {
        self.0.daemon.get().ok_or_else(|| {
            ApiError::new(
                ErrorKind::NotRunning,
                format!(
                    "no node is running on {}: start one with `commons node run`",
                    self.0.data_dir.display()
                ),
            )
        })
    }

    /// The data dir.
    pub fn data_dir(&self) -> &Path {
        &self.0.data_dir
    }

    /// Which publisher speaks for which names (the config's `[trust]`).
    pub fn trust(&self) -> &commons_protocol::provenance::TrustPolicy {
        &self.0.trust
    }

    /// The storage quota in bytes, if any.
    pub fn quota(&self) -> Option<u64> {
        self.0.quota
    }

    /// The store (every call on the blocking pool).
    pub fn store(&self) -> &AsyncStore {
        &self.0.store
    }

    /// Transfer counters and limits.
    pub fn stats(&self) -> &Arc<TransferStats> {
        &self.0.stats
    }

    /// Who holds what: fed by lookups and the holder exchange.
    pub fn holders(&self) -> &Arc<Holders> {
        &self.0.holders
    }

    /// What fetches learnt of providers: who sent bad data or failed, who served well.
    pub fn scores(&self) -> &Arc<PeerScores> {
        &self.0.scores
    }

    /// What the HTTP gateway served.
    pub fn gateway_stats(&self) -> &Arc<crate::gateway::stats::GatewayStats> {
        &self.0.gateway_stats
    }

    /// The datasets this node mirrors.
    pub fn mirror(&self) -> &Mirror {
        &self.0.mirror
    }

    /// Records that the first attempt to join the network has ended (joined or not).
    pub fn mark_join_tried(&self) {
        self.0.join_tried.send_replace(true);
    }

    /// Waits until the first attempt to join the network has ended.
    pub async fn joined(&self) {
        let mut tried = self.0.join_tried.subscribe();
        let _ = tried.wait_for(|t| *t).await;
    }

    /// Cancelled when the node shuts down: every long-running task of the node ends then.
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.0.shutdown
    }

    /// The network, started on first use by an in-process node (not joined to the DHT:
    /// see [`Node::joined_network`]).
    pub async fn network(&self) -> Result<&Network, ApiError> {
        self.0
            .network
            .get_or_try_init(|| async {
                let key = identity::load_or_create(&self.0.data_dir)
                    .map_err(|e| ApiError::new(ErrorKind::Io, e.to_string()))?;
                let host = Host::start(key, &[], &self.0.discovery).await?;
                let state = self.store().run(|s| s.load_net_state()).await?;
                host.restore_state(state).await?;
                Ok::<_, ApiError>(Network {
                    host,
                    publisher: None,
                })
            })
            .await
    }

    /// The network, if it has started (a running node's always has).
    pub fn started_network(&self) -> Option<&Network> {
        self.0.network.get()
    }

    /// The network, joined to the DHT through the bootstrap peers (and those saved by
    /// earlier runs) once; fails with the reason when it cannot join.
    pub async fn joined_network(&self) -> Result<&Network, ApiError> {
        let network = self.network().await?;
        self.0
            .joined
            .get_or_try_init(|| async {
                let report = network.host.bootstrap(&self.0.discovery.bootstrap).await?;
                for (addr, reason) in &report.failed {
                    tracing::warn!("bootstrap peer {addr} did not answer: {reason}");
                }
                self.mark_join_tried();
                Ok::<_, ApiError>(())
            })
            .await?;
        Ok(network)
    }

    /// Announces `hash` in the DHT, and keeps re-announcing it (a node that serves only).
    pub fn announce(&self, hash: commons_protocol::Hash) {
        if let Some(publisher) = self.publisher() {
            publisher.provide(hash);
        }
    }

    /// Stops announcing `hash`.
    pub fn withdraw(&self, hash: commons_protocol::Hash) {
        if let Some(publisher) = self.publisher() {
            publisher.withdraw(hash);
        }
    }

    fn publisher(&self) -> Option<&Publisher> {
        self.0.network.get().and_then(|n| n.publisher.as_ref())
    }

    /// Saves the host's known peers and the records it holds for others, so the next
    /// start needs no bootstrap list. A failure is only logged: the state is a cache.
    pub async fn save_net_state(&self) {
        let Some(network) = self.0.network.get() else {
            return;
        };
        let Ok(state) = network.host.save_state().await else {
            return;
        };
        if let Err(e) = self.store().run(move |s| s.save_net_state(&state)).await {
            tracing::warn!(
                "cannot save the known peers ({e}); the next start may need --bootstrap"
            );
        }
    }

    /// Ends the node's work: its tasks are told to stop, the network state is saved, and
    /// what fetches received is put on disk (spans of large blobs skip the WAL), so the
    /// next run resumes from it.
    pub async fn close(&self) {
        self.0.shutdown.cancel();
        self.save_net_state().await;
        if let Err(e) = self.store().run(|s| s.persist_spans()).await {
            tracing::warn!("cannot flush received data: {e}");
        }
    }
}
