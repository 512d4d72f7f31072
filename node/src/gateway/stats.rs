//! What the gateway served, counted as it sends: `node status` and the metrics read it.

use std::sync::atomic::AtomicU64;

/// What the gateway served since the node started.
#[derive(Debug, Default)]
pub struct GatewayStats {
    /// Responses with data (whole files, ranges, blobs).
    pub responses: AtomicU64,
    /// Body bytes sent in them.
    pub bytes: AtomicU64,
}
