//! `commons node run`: the long-running node. Opens the store, starts the host, serves
//! transfers until Ctrl-C or SIGTERM, then shuts down cleanly (the store is closed, so the
//! next start finds it consistent).

use std::{path::PathBuf, sync::Arc};

use libp2p::{Multiaddr, PeerId};

use crate::{
    identity,
    net::Host,
    store::{Store, StoreOptions},
    transfer::{serve, ServeLimits, TransferStats},
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
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// The data dir (store, key).
    pub data_dir: PathBuf,
    /// Addresses to listen on.
    pub listen: Vec<Multiaddr>,
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
}

/// Runs the node until Ctrl-C or SIGTERM. `ready` is called once it listens.
pub async fn run(
    config: DaemonConfig,
    ready: impl FnOnce(PeerId, Vec<Multiaddr>),
) -> Result<(), DaemonError> {
    let store = Arc::new(Store::open(
        config.data_dir.join("store"),
        StoreOptions::default(),
    )?);
    let key = identity::load_or_create(&config.data_dir)?;
    let host = Host::start(key, &config.listen).await?;
    let stats = Arc::new(TransferStats::default());
    let server = tokio::spawn(serve(
        store.clone(),
        host.clone(),
        stats.clone(),
        ServeLimits::default(),
    ));
    #[cfg(unix)]
    let admin = {
        let ctx = crate::admin::AdminContext {
            store: store.clone(),
            host: host.clone(),
            stats,
        };
        let listener = crate::admin::bind_admin(&config.data_dir).map_err(DaemonError::Admin)?;
        tokio::spawn(async move {
            if let Err(e) = crate::admin::serve_admin(listener, ctx).await {
                tracing::error!(error = %e, "the admin socket failed; the CLI cannot reach this node");
            }
        })
    };
    ready(host.peer_id(), host.listen_addrs().await);
    shutdown_signal().await.map_err(DaemonError::Signals)?;
    tracing::info!("shutting down");
    server.abort();
    #[cfg(unix)]
    {
        admin.abort();
        let _ = std::fs::remove_file(config.data_dir.join(crate::admin::ADMIN_SOCKET));
    }
    Ok(())
}

async fn shutdown_signal() -> std::io::Result<()> {
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
