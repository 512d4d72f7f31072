//! `commons node run`: the long-running node. Opens the store, starts the host, joins the
//! DHT and announces what it holds, serves transfers until Ctrl-C or SIGTERM, then shuts
//! down cleanly (known peers saved, the store closed, so the next start finds it consistent
//! and rejoins without a bootstrap list).

use std::{path::PathBuf, sync::Arc};

use libp2p::{Multiaddr, PeerId};

use crate::{
    config::MirrorEntry,
    discovery::{persist::save_net_state, DhtMode, DiscoveryConfig, Publisher},
    fetch::FetchContext,
    gateway::{Gateway, GatewayConfig},
    identity,
    net::Host,
    status::NodeInfo,
    store::{Store, StoreOptions},
    transfer::{serve, ServeLimits, TransferLimits, TransferStats},
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

/// Settings of a running node.
#[derive(Debug)]
pub struct DaemonConfig {
    /// The data dir (store, key).
    pub data_dir: PathBuf,
    /// Addresses to listen on.
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
    pub metrics: Option<std::net::SocketAddr>,
}

/// How often a node with a quota checks it.
pub const QUOTA_CHECK: std::time::Duration = std::time::Duration::from_secs(60);

/// What a node reports once it is ready.
#[derive(Debug, Clone)]
pub struct Ready {
    /// Its PeerId.
    pub peer: PeerId,
    /// The addresses it listens on.
    pub addrs: Vec<Multiaddr>,
    /// The gateway's address, when it runs.
    pub gateway: Option<std::net::SocketAddr>,
    /// The metrics endpoint's address, when it runs.
    pub metrics: Option<std::net::SocketAddr>,
    /// The bulk-data endpoint's UDP address, when it serves (a second port to open in a
    /// firewall; without it peers use the libp2p port alone).
    pub bulk: Option<std::net::SocketAddr>,
}

/// Why the daemon stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The identity could not be loaded.
    #[error(transparent)]
    Identity(#[from] identity::IdentityError),
    /// The network could not start.
    #[error(transparent)]
    Net(#[from] crate::net::NetError),
    /// The local admin socket could not be created.
    #[error("cannot create the admin socket in the data dir: {0}")]
    Admin(std::io::Error),
    /// Waiting for signals failed.
    #[error("cannot wait for signals: {0}")]
    Signals(std::io::Error),
    /// The gateway's or the metrics' address could not be bound.
    #[error("cannot listen for HTTP on {addr}: {source}")]
    Http {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Runs the node until Ctrl-C or SIGTERM. `ready` is called once it listens.
pub async fn run(config: DaemonConfig, ready: impl FnOnce(Ready)) -> Result<(), DaemonError> {
    let store = Arc::new(Store::open(
        config.data_dir.join("store"),
        StoreOptions::default(),
    )?);
    let key = identity::load_or_create(&config.data_dir)?;
    let discovery = &config.discovery;
    let host = Host::start(key, &config.listen, discovery).await?;
    host.restore_state(store.load_net_state()?).await?;
    let publisher = Publisher::spawn(
        host.clone(),
        discovery.announce_interval,
        discovery.announce_concurrency,
    );
    if discovery.mode != DhtMode::Client {
        // Roots only: pinned datasets and blobs pinned on their own, never their files.
        for (hash, _) in store.pins()? {
            publisher.provide(hash);
        }
    }
    let ctx = FetchContext::new(host.clone(), store.clone(), Some(publisher))
        .with_stats(Arc::new(TransferStats::limited(config.limits)));
    let server = tokio::spawn(serve(
        store.clone(),
        host.clone(),
        ctx.stats.clone(),
        ctx.holders.clone(),
        ServeLimits::default(),
    )?);
    // Bound first: the status the admin socket and metrics report names the gateway.
    let gateway_listener = match &config.gateway {
        Some(gw) => Some(bind_http(gw.listen).await?),
        None => None,
    };
    let metrics_listener = match config.metrics {
        Some(addr) => Some(bind_http(addr).await?),
        None => None,
    };
    let local = |l: &Option<tokio::net::TcpListener>| l.as_ref().and_then(|l| l.local_addr().ok());
    let info = NodeInfo {
        quota: config.quota,
        gateway: local(&gateway_listener),
        started: std::time::Instant::now(),
    };
    let metrics_addr = local(&metrics_listener);
    #[cfg(unix)]
    let admin = {
        let listener = crate::admin::bind_admin(&config.data_dir).map_err(DaemonError::Admin)?;
        let (ctx, info) = (ctx.clone(), info.clone());
        tokio::spawn(async move {
            if let Err(e) = crate::admin::serve_admin(listener, ctx, info).await {
                tracing::error!(error = %e, "the admin socket failed; the CLI cannot reach this node");
            }
        })
    };
    let mut tasks = Vec::new();
    if let (Some(listener), Some(gw)) = (gateway_listener, &config.gateway) {
        let fetcher = gw.fetch_missing.then(|| ctx.clone());
        let gateway = Gateway::new(store.clone(), fetcher);
        tasks.push(tokio::spawn(async move {
            if let Err(e) = gateway.serve(listener).await {
                tracing::error!(error = %e, "the HTTP gateway failed");
            }
        }));
    }
    if let Some(listener) = metrics_listener {
        let (ctx, info) = (ctx.clone(), info.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(e) = crate::metrics::serve(listener, ctx, info).await {
                tracing::error!(error = %e, "the metrics endpoint failed");
            }
        }));
    }
    tasks.extend(crate::mirror::spawn(ctx.clone(), config.mirror.clone()));
    tasks.extend(
        config
            .quota
            .map(|q| tokio::spawn(keep_quota(store.clone(), q))),
    );
    ready(Ready {
        peer: host.peer_id(),
        addrs: host.listen_addrs().await,
        gateway: info.gateway,
        metrics: metrics_addr,
        bulk: host.bulk().and_then(|b| b.local_addr().ok()),
    });
    let joiner = tokio::spawn(join_network(host.clone(), discovery.bootstrap.clone()));
    let saver = tokio::spawn(save_periodically(
        host.clone(),
        store.clone(),
        discovery.save_interval,
    ));
    shutdown_signal().await.map_err(DaemonError::Signals)?;
    tracing::info!("shutting down");
    for task in [joiner, saver].into_iter().chain(tasks) {
        task.abort();
    }
    server.abort();
    save_net_state(&host, &store).await;
    // Fetches stop here: keep the spans they received (large blobs' skip the WAL).
    if let Err(e) = store.persist_spans() {
        tracing::warn!("cannot flush received data at shutdown: {e}");
    }
    #[cfg(unix)]
    {
        admin.abort();
        let _ = std::fs::remove_file(config.data_dir.join(crate::admin::ADMIN_SOCKET));
    }
    Ok(())
}

/// Dials the bootstrap peers and fills the routing table; warns about peers that do not
/// answer, and keeps running either way (the first node of a network has no one to join).
async fn join_network(host: Host, bootstrap: Vec<Multiaddr>) {
    match host.bootstrap(&bootstrap).await {
        Ok(report) => {
            for (addr, reason) in &report.failed {
                tracing::warn!("bootstrap peer {addr} did not answer: {reason}");
            }
        }
        Err(e) if bootstrap.is_empty() => {
            tracing::info!("not joined to any network yet: {e}");
        }
        Err(e) => tracing::warn!("{e}"),
    }
}

async fn bind_http(addr: std::net::SocketAddr) -> Result<tokio::net::TcpListener, DaemonError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| DaemonError::Http { addr, source })
}

/// Collects unpinned data, least recently used first, whenever the store holds more than
/// `quota` bytes; checks at start and every [`QUOTA_CHECK`].
async fn keep_quota(store: Arc<Store>, quota: u64) {
    let mut tick = tokio::time::interval(QUOTA_CHECK);
    let mut warned_over = 0;
    loop {
        tick.tick().await;
        let store = store.clone();
        match tokio::task::spawn_blocking(move || store.gc_to_quota(quota, false)).await {
            Ok(Ok(report)) => {
                if !report.removed.is_empty() {
                    tracing::info!(
                        blobs = report.removed.len(),
                        bytes = report.bytes(),
                        "quota: collected unpinned data"
                    );
                }
                if report.over_quota > 0 && report.over_quota != warned_over {
                    tracing::warn!(
                        over = report.over_quota,
                        "quota: pinned data alone exceeds the quota; nothing pinned is removed"
                    );
                }
                warned_over = report.over_quota;
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "quota: collection failed"),
            Err(e) => tracing::warn!(error = %e, "quota: collection task failed"),
        }
    }
}

async fn save_periodically(host: Host, store: Arc<Store>, every: std::time::Duration) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await; // the first tick is immediate
    loop {
        tick.tick().await;
        save_net_state(&host, &store).await;
    }
}

/// Waits for Ctrl-C (SIGINT) or SIGTERM: what stops the daemon, and a long `get`.
pub async fn shutdown_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}
