//! `commons node run`: the long-running node. Opens the store, starts the host, joins the
//! DHT and announces what it holds, serves transfers until Ctrl-C or SIGTERM, then shuts
//! down cleanly (known peers saved, the store closed, so the next start finds it consistent
//! and rejoins without a bootstrap list).

use libp2p::{Multiaddr, PeerId};

use crate::{
    api::ApiError,
    gateway::Gateway,
    net::Host,
    node::{DaemonInfo, Node, NodeSettings},
    store::AsyncStore,
    transfer::{serve, ServeLimits},
};

pub use crate::node::{default_listen_addrs, DEFAULT_PORT};

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
    /// The datasets it holds (roots), for tickets.
    pub datasets: Vec<commons_protocol::Hash>,
}

/// Why the daemon stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    /// The node could not be assembled (store, identity, network).
    #[error(transparent)]
    Node(#[from] ApiError),
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

/// The daemon's background work: each runs until the node's shutdown token is cancelled.
struct Tasks {
    node: Node,
    set: tokio::task::JoinSet<()>,
}

impl Tasks {
    /// Runs `work` until it ends or the node shuts down; `what` names it in logs.
    fn spawn(
        &mut self,
        what: &'static str,
        work: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let token = self.node.shutdown_token().clone();
        self.set.spawn(async move {
            tokio::select! {
                () = token.cancelled() => tracing::debug!("{what}: stopped"),
                () = work => {}
            }
        });
    }

    /// Cancels every task and waits for them to end.
    async fn stop(mut self) {
        self.node.shutdown_token().cancel();
        while self.set.join_next().await.is_some() {}
    }
}

/// Runs the node until Ctrl-C or SIGTERM. `ready` is called once it listens.
pub async fn run(settings: NodeSettings, ready: impl FnOnce(Ready)) -> Result<(), DaemonError> {
    // Bound first: the status the admin socket and metrics report names the gateway.
    let gateway_listener = match &settings.gateway {
        Some(gw) => Some(bind_http(gw.listen).await?),
        None => None,
    };
    let metrics_listener = match settings.metrics {
        Some(addr) => Some(bind_http(addr).await?),
        None => None,
    };
    let (gateway_config, quota) = (settings.gateway.clone(), settings.quota);
    let data_dir = settings.data_dir.clone();
    let bootstrap = settings.discovery.bootstrap.clone();
    let save_interval = settings.discovery.save_interval;
    let node = Node::start(settings).await?;
    let local = |l: &Option<tokio::net::TcpListener>| l.as_ref().and_then(|l| l.local_addr().ok());
    node.set_daemon(DaemonInfo {
        started: std::time::Instant::now(),
        gateway: local(&gateway_listener),
    });
    let network = node.network().await?;
    let host = network.host.clone();
    let mut tasks = Tasks {
        node: node.clone(),
        set: tokio::task::JoinSet::new(),
    };
    let server = serve(
        node.store().clone(),
        host.clone(),
        node.stats().clone(),
        node.holders().clone(),
        ServeLimits::default(),
    )
    .map_err(ApiError::from)?;
    tasks.spawn("transfer server", server);
    let metrics_addr = local(&metrics_listener);
    #[cfg(unix)]
    {
        let listener = crate::admin::bind_admin(&data_dir).map_err(DaemonError::Admin)?;
        let node = node.clone();
        tasks.spawn("admin socket", async move {
            let everything = crate::admin::Serving::Everything;
            if let Err(e) = crate::admin::serve_admin(listener, node, everything).await {
                tracing::error!(error = %e, "the admin socket failed; the CLI cannot reach this node");
            }
        });
    }
    if let (Some(listener), Some(gw)) = (gateway_listener, gateway_config) {
        let fetcher = gw.fetch_missing.then(|| node.clone());
        let gateway = Gateway::new(node.store().clone(), fetcher)
            .with_trust(node.trust().clone())
            .with_stats(node.gateway_stats().clone())
            .with_fetch_limit(gw.fetch_missing_max_bytes);
        tasks.spawn("HTTP gateway", async move {
            if let Err(e) = gateway.serve(listener).await {
                tracing::error!(error = %e, "the HTTP gateway failed");
            }
        });
    }
    if let Some(listener) = metrics_listener {
        let node = node.clone();
        tasks.spawn("metrics", async move {
            if let Err(e) = crate::metrics::serve(listener, node).await {
                tracing::error!(error = %e, "the metrics endpoint failed");
            }
        });
    }
    crate::mirror::start(&node);
    crate::provenance::names::spawn_republisher(
        &node,
        crate::provenance::names::REPUBLISH_INTERVAL,
    );
    if let Some(quota) = quota {
        tasks.spawn("quota", keep_quota(node.store().clone(), quota));
    }
    let datasets = node
        .store()
        .run(|s| s.datasets())
        .await
        .map_err(ApiError::from)?
        .into_iter()
        .map(|(root, _)| root)
        .collect();
    ready(Ready {
        peer: host.peer_id(),
        addrs: host.listen_addrs().await,
        gateway: node.daemon()?.gateway,
        metrics: metrics_addr,
        bulk: host.bulk().and_then(|b| b.local_addr().ok()),
        datasets,
    });
    tasks.spawn("join", join_network(node.clone(), host.clone(), bootstrap));
    tasks.spawn("save peers", save_periodically(node.clone(), save_interval));
    shutdown_signal().await.map_err(DaemonError::Signals)?;
    tracing::info!("shutting down");
    tasks.stop().await;
    // Fetches stopped with the tasks: keep the spans they received, and the known peers.
    node.close().await;
    #[cfg(unix)]
    {
        let _ = std::fs::remove_file(data_dir.join(crate::api::ADMIN_SOCKET));
    }
    Ok(())
}

/// Dials the bootstrap peers and fills the routing table; warns about peers that do not
/// answer, and keeps running either way (the first node of a network has no one to join).
async fn join_network(node: Node, host: Host, bootstrap: Vec<Multiaddr>) {
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
    node.mark_join_tried();
}

async fn bind_http(addr: std::net::SocketAddr) -> Result<tokio::net::TcpListener, DaemonError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| DaemonError::Http { addr, source })
}

/// Collects unpinned data, least recently used first, whenever the store holds more than
/// `quota` bytes; checks at start and every [`QUOTA_CHECK`].
async fn keep_quota(store: AsyncStore, quota: u64) {
    let mut tick = tokio::time::interval(QUOTA_CHECK);
    let mut warned_over = 0;
    loop {
        tick.tick().await;
        match store.run(move |s| s.gc_to_quota(quota, false)).await {
            Ok(report) => {
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
            Err(e) => tracing::warn!(error = %e, "quota: collection failed"),
        }
    }
}

async fn save_periodically(node: Node, every: std::time::Duration) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await; // the first tick is immediate
    loop {
        tick.tick().await;
        node.save_net_state().await;
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
