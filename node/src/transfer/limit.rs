//! Rate limits on transfers: a mirror must not saturate a university's uplink.
//!
//! A token bucket per limit: it refills at the configured rate up to a small burst, and a
//! transfer that takes more than is there waits until the debt is repaid. So moving `B`
//! bytes through a limit of `R` bytes/s takes at least `(B − burst) / R` seconds. Limits
//! are applied where bytes cross the wire: before each chunk a server writes, after each
//! chunk a client reads (the QUIC flow-control window then slows the sender).
//!
//! Written here rather than taken from `governor`: the bucket is twenty lines, and
//! `governor` refuses a single take larger than its burst, which chunked streams need.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use libp2p::PeerId;

/// Bytes a bucket may hold: a short burst, so limits hold over fractions of a second.
pub const BURST_BYTES: u64 = 256 * 1024;
/// Peers with an upload bucket kept at most; idle ones are forgotten first.
const MAX_PEER_BUCKETS: usize = 4096;

/// One token bucket.
#[derive(Debug)]
pub struct RateLimit {
    bytes_per_sec: f64,
    bucket: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    /// Negative while in debt.
    tokens: f64,
    at: Instant,
}

impl RateLimit {
    /// A limit of `bytes_per_sec` (at least 1).
    pub fn new(bytes_per_sec: u64) -> Self {
        Self {
            bytes_per_sec: bytes_per_sec.max(1) as f64,
            bucket: Mutex::new(Bucket {
                tokens: BURST_BYTES as f64,
                at: Instant::now(),
            }),
        }
    }

    /// Takes `n` bytes; returns how long the caller must wait before moving them.
    pub fn debit(&self, n: u64) -> Duration {
        let mut b = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let refill = now.duration_since(b.at).as_secs_f64() * self.bytes_per_sec;
        b.tokens = (b.tokens + refill).min(BURST_BYTES as f64) - n as f64;
        b.at = now;
        if b.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-b.tokens / self.bytes_per_sec)
        }
    }
}

/// Converts a rate in MiB/s (as the config file writes it) to bytes/s.
pub fn mib_per_sec(rate: f64) -> u64 {
    (rate * 1024.0 * 1024.0) as u64
}

/// The node's limits, shared by its server and its fetches.
#[derive(Debug, Default)]
pub struct TransferLimits {
    upload: Option<RateLimit>,
    upload_per_peer: Option<u64>,
    download: Option<RateLimit>,
    peers: Mutex<HashMap<PeerId, Arc<RateLimit>>>,
}

impl TransferLimits {
    /// Limits in bytes per second; `None` is unlimited.
    pub fn new(upload: Option<u64>, upload_per_peer: Option<u64>, download: Option<u64>) -> Self {
        Self {
            upload: upload.map(RateLimit::new),
            upload_per_peer,
            download: download.map(RateLimit::new),
            peers: Mutex::default(),
        }
    }

    /// Waits until `n` more bytes may be sent to `peer`.
    pub async fn before_upload(&self, peer: PeerId, n: u64) {
        let mut wait = self.upload.as_ref().map_or(Duration::ZERO, |l| l.debit(n));
        if let Some(rate) = self.upload_per_peer {
            let bucket = {
                let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
                if peers.len() >= MAX_PEER_BUCKETS && !peers.contains_key(&peer) {
                    peers.retain(|_, b| Arc::strong_count(b) > 1);
                }
                peers
                    .entry(peer)
                    .or_insert_with(|| Arc::new(RateLimit::new(rate)))
                    .clone()
            };
            wait = wait.max(bucket.debit(n));
        }
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// Waits after `n` bytes were received, until the download limit allows more.
    pub async fn after_download(&self, n: u64) {
        if let Some(limit) = &self.download {
            let wait = limit.debit(n);
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_lets_a_burst_through_then_charges_the_rate() {
        let limit = RateLimit::new(1024 * 1024);
        assert_eq!(
            limit.debit(BURST_BYTES),
            Duration::ZERO,
            "the burst is free"
        );
        let wait = limit.debit(1024 * 1024);
        // 1 MiB of debt at 1 MiB/s (a little refilled in between).
        assert!(
            wait > Duration::from_millis(900) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        let more = limit.debit(512 * 1024);
        assert!(more > wait, "debt accumulates: {more:?}");
    }

    #[tokio::test]
    async fn moving_bytes_through_a_limit_takes_at_least_the_time_it_implies() {
        // 1 MiB at 4 MiB/s down, and at 4 MiB/s per peer up: at least (1 MiB − burst) / rate.
        let rate = 4 * 1024 * 1024;
        let limits = TransferLimits::new(None, Some(rate), Some(rate));
        let floor = (1024.0 * 1024.0 - BURST_BYTES as f64) / rate as f64;
        let start = Instant::now();
        for _ in 0..16 {
            limits.after_download(64 * 1024).await;
        }
        let took = start.elapsed().as_secs_f64();
        assert!(
            took >= floor * 0.99,
            "download took {took} s, floor {floor} s"
        );
        let (peer, other) = (PeerId::random(), PeerId::random());
        let start = Instant::now();
        for _ in 0..16 {
            limits.before_upload(peer, 64 * 1024).await;
        }
        let took = start.elapsed().as_secs_f64();
        assert!(
            took >= floor * 0.99,
            "upload took {took} s, floor {floor} s"
        );
        // Another peer has its own bucket: its first burst does not wait.
        let start = Instant::now();
        limits.before_upload(other, 64 * 1024).await;
        assert!(start.elapsed() < Duration::from_millis(50));
    }
}
