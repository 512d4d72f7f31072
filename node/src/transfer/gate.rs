//! Admission to the transfer server: what one peer, and all peers together, may make it do.
//!
//! - **requests in progress per peer** ([`ServeLimits::streams_per_peer`]): more get `Busy`
//!   at once;
//! - **requests per second per peer** ([`ServeLimits::requests_per_sec`], a token bucket of
//!   [`ServeLimits::request_burst`]): a stream costs an accept, a task and usually a store
//!   read, so one peer opening thousands a second could keep the node busy on its own. A
//!   request beyond the rate is not refused but paced: it waits for its token before it is
//!   read. An honest client fetching many small files one after another (~400 requests/s
//!   measured on loopback) is slowed at most to the rate, never failed; a peer that opens
//!   more is soon at its streams-in-progress limit, and the rest of its streams get `Busy`;
//! - **the send buffer** ([`ServeLimits::send_buffer`], of which one peer may hold
//!   [`ServeLimits::send_buffer_per_peer`]): bytes of responses handed to QUIC and not yet
//!   taken by their clients. QUIC accepts a whole 4 MiB batch into its send buffer at once
//!   (the client's stream window is 16 MiB), so without this bound the seeder's memory grew
//!   with the number of fetchers (40 fetchers: 384 MB RSS). A data request reserves its
//!   response's size (at most a stream window) before its header is sent, waits in line
//!   for it at most [`ServeLimits::send_wait`], and gives it back once the client has let
//!   the stream go. A peer with no response in the buffer goes ahead of the others' further
//!   ones ([`ServeLimits::send_buffer_first`]): under 200 fetchers hammering the seeder, a
//!   new peer's `get` waited in line behind all their second requests until it gave up
//!   (load lab). The wait is shorter than the bulk endpoint's idle timeout: a request
//!   waiting in line is silent, and a bulk connection (no keep-alive) whose only requests
//!   are waiting would be closed under them (the load lab's first run, with a 10 s wait:
//!   217 requests of 200 fetchers lost their connection instead of getting `Busy`).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use commons_protocol::{tree::CHUNK_GROUP_BYTES, wire::GroupRange};
use libp2p::PeerId;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::io::{CHUNK_BYTES, CHUNK_QUEUE};
use crate::net::QUIC_STREAM_WINDOW;

/// Bounds on what one peer, and all peers together, can make the server do.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// Requests one peer may have in progress at once; more get `Busy`.
    pub streams_per_peer: usize,
    /// Requests one peer may have served per second, on average; more wait their turn.
    pub requests_per_sec: u32,
    /// Requests one peer may have served at once beyond that rate (its bucket's size).
    pub request_burst: u32,
    /// Bytes of responses, all peers together, handed to the transport and not yet taken
    /// by their clients: bounds the memory serving takes, whatever the number of fetchers.
    pub send_buffer: u64,
    /// The part of the send buffer one peer may hold.
    pub send_buffer_per_peer: u64,
    /// The part of the send buffer kept for peers with no response in it: peers already
    /// holding some may together hold the rest, so each peer's first response is never in
    /// line behind other peers' second ones.
    pub send_buffer_first: u64,
    /// How long a data request may wait for its part of the send buffer; then `Busy`.
    /// Kept under [`crate::net::bulk::BULK_IDLE_TIMEOUT`] (see the module doc).
    pub send_wait: Duration,
    /// Time a client has to send its request after opening a stream.
    pub request_timeout: Duration,
    /// Time one write to a client may stall before the stream is dropped; also how long a
    /// finished response keeps its part of the send buffer while the client reads it.
    pub write_timeout: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            streams_per_peer: 16,
            requests_per_sec: 500,
            request_burst: 100,
            send_buffer: 64 << 20,
            send_buffer_per_peer: 16 << 20,
            send_buffer_first: 16 << 20,
            send_wait: SEND_WAIT,
            request_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(30),
        }
    }
}

/// How long a data request waits for its part of the send buffer by default: half the
/// bulk endpoint's idle timeout, so a connection whose requests all wait stays up.
pub const SEND_WAIT: Duration = Duration::from_secs(5);

/// Peers whose counters are kept at most; idle ones are forgotten first.
pub const MAX_GATED_PEERS: usize = 4096;
/// Longest a request is paced; one that would wait longer gets `Busy` (with the default
/// limits it never would: 16 requests in progress at 500 per second wait 32 ms at most).
pub const MAX_PACING: Duration = Duration::from_secs(1);

/// Why a request stream is refused at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The peer has [`ServeLimits::streams_per_peer`] requests in progress.
    TooMany,
    /// The peer's requests are so far beyond [`ServeLimits::requests_per_sec`] that this
    /// one would wait more than [`MAX_PACING`].
    TooFast,
}

/// One peer's counters.
#[derive(Debug)]
struct PeerGate {
    /// Requests in progress.
    active: usize,
    /// Its request bucket (may be fractional).
    tokens: f64,
    /// When `tokens` was last brought up to date.
    at: Instant,
    /// Its part of the send buffer, in KiB.
    buffer: Arc<Semaphore>,
}

/// The server's admission state, shared by its tasks.
#[derive(Debug)]
pub struct Gate {
    limits: ServeLimits,
    peers: Mutex<HashMap<PeerId, PeerGate>>,
    /// The send buffer, in KiB.
    buffer: Arc<Semaphore>,
    /// The part of it peers with a response in it may hold, in KiB.
    shared: Arc<Semaphore>,
}

/// A request admitted: counts as in progress for its peer until dropped.
#[derive(Debug)]
pub struct Admitted {
    gate: Arc<Gate>,
    peer: PeerId,
    /// How long it must wait before it is read (pacing to the request rate).
    pub wait: Duration,
}

/// A response's part of the send buffer (its peer's and everyone's), given back when
/// dropped.
#[derive(Debug)]
pub struct Reserved {
    _peer: OwnedSemaphorePermit,
    /// None for a peer's first response (see [`ServeLimits::send_buffer_first`]).
    _shared: Option<OwnedSemaphorePermit>,
    _all: OwnedSemaphorePermit,
}

fn kib(bytes: u64) -> u32 {
    bytes.div_ceil(1024).min(u64::from(u32::MAX >> 4)) as u32
}

impl Gate {
    /// A gate enforcing `limits`.
    pub fn new(limits: ServeLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            peers: Mutex::default(),
            buffer: Arc::new(Semaphore::new(kib(limits.send_buffer) as usize)),
            shared: Arc::new(Semaphore::new(kib(limits.shared_send_buffer()) as usize)),
        })
    }

    /// Admits a new request stream from `peer` arriving at `now` (to be read after the
    /// wait it is given), or says why not.
    pub fn admit(self: &Arc<Self>, peer: PeerId, now: Instant) -> Result<Admitted, Refused> {
        let limits = self.limits;
        let rate = f64::from(limits.requests_per_sec.max(1));
        let burst = f64::from(limits.request_burst.max(1));
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        if peers.len() >= MAX_GATED_PEERS && !peers.contains_key(&peer) {
            // Forget idle peers whose bucket has filled up again first (nothing is lost),
            // then any idle peer.
            peers.retain(|_, g| {
                g.active > 0 || g.tokens + now.duration_since(g.at).as_secs_f64() * rate < burst
            });
            if peers.len() >= MAX_GATED_PEERS {
                peers.retain(|_, g| g.active > 0);
            }
        }
        let g = peers.entry(peer).or_insert_with(|| PeerGate {
            active: 0,
            tokens: burst,
            at: now,
            buffer: Arc::new(Semaphore::new(kib(limits.send_buffer_per_peer) as usize)),
        });
        if g.active >= limits.streams_per_peer {
            return Err(Refused::TooMany);
        }
        // The bucket goes into debt for requests still waiting for their token.
        let refill = now.saturating_duration_since(g.at).as_secs_f64() * rate;
        g.tokens = (g.tokens + refill).min(burst);
        g.at = now;
        let wait = Duration::from_secs_f64((1.0 - g.tokens).max(0.0) / rate);
        if wait > MAX_PACING {
            return Err(Refused::TooFast);
        }
        g.tokens -= 1.0;
        g.active += 1;
        Ok(Admitted {
            gate: self.clone(),
            peer,
            wait,
        })
    }

    /// Waits (at most [`ServeLimits::send_wait`]) for `bytes` of the send buffer for a
    /// response to `peer`; `None` when it did not come in time. A peer holding none of it
    /// takes it from the whole buffer, one holding some from the shared part first.
    pub async fn reserve(&self, peer: PeerId, bytes: u64) -> Option<Reserved> {
        let per_peer = kib(self.limits.send_buffer_per_peer);
        let wanted = kib(bytes);
        let from_mine = wanted.min(per_peer);
        let from_shared = wanted.min(kib(self.limits.shared_send_buffer()));
        let from_all = wanted.min(kib(self.limits.send_buffer));
        // Whether this is the peer's first response, decided and taken under the lock: of
        // many requests a peer sends at once, only one goes in the first-response lane.
        let (mine, first) = {
            let peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
            let mine = peers.get(&peer)?.buffer.clone();
            let first = (mine.available_permits() >= per_peer as usize)
                .then(|| mine.clone().try_acquire_many_owned(from_mine).ok())
                .flatten();
            (mine, first)
        };
        let shared = first.is_none().then(|| self.shared.clone());
        let all = self.buffer.clone();
        tokio::time::timeout(self.limits.send_wait, async move {
            let peer = match first {
                Some(taken) => taken,
                None => mine.acquire_many_owned(from_mine).await.ok()?,
            };
            let shared = match shared {
                Some(shared) => Some(shared.acquire_many_owned(from_shared).await.ok()?),
                None => None,
            };
            let all = all.acquire_many_owned(from_all).await.ok()?;
            Some(Reserved {
                _peer: peer,
                _shared: shared,
                _all: all,
            })
        })
        .await
        .ok()
        .flatten()
    }

    /// KiB of the send buffer free now, all peers together.
    #[cfg(test)]
    pub fn buffer_free_kib(&self) -> usize {
        self.buffer.available_permits()
    }
}

impl ServeLimits {
    /// The part of the send buffer peers with a response in it may hold together.
    pub fn shared_send_buffer(&self) -> u64 {
        self.send_buffer
            .saturating_sub(self.send_buffer_first)
            .max(1)
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut peers = self.gate.peers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(g) = peers.get_mut(&self.peer) {
            g.active = g.active.saturating_sub(1);
        }
    }
}

/// The most memory a response to `ranges` of a blob of `size` bytes can take while it is
/// sent: its Bao encoding (the data, a 64-byte hash pair per 16 KiB group, the path from
/// the root), of which the transport holds at most a stream window at once, plus the
/// encoder's queue and buffer.
pub fn response_memory(size: u64, ranges: &[GroupRange]) -> u64 {
    let groups = size.div_ceil(CHUNK_GROUP_BYTES);
    let data: u64 = ranges
        .iter()
        .map(|r| {
            let end = r.end.unwrap_or(groups).min(groups);
            end.saturating_sub(r.start.min(end))
                .saturating_mul(CHUNK_GROUP_BYTES)
        })
        .fold(0u64, u64::saturating_add)
        .min(size);
    let encoded = data.saturating_add(data / 256).saturating_add(64 * 64);
    let queue = (CHUNK_QUEUE as u64) * CHUNK_BYTES as u64;
    encoded.min(u64::from(QUIC_STREAM_WINDOW) + queue) + CHUNK_BYTES as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ServeLimits {
        ServeLimits {
            streams_per_peer: 4,
            requests_per_sec: 10,
            request_burst: 2,
            send_buffer: 3 << 20,
            send_buffer_per_peer: 2 << 20,
            send_buffer_first: 1 << 20,
            send_wait: Duration::from_millis(100),
            ..ServeLimits::default()
        }
    }

    #[tokio::test]
    async fn a_peers_first_response_goes_ahead_of_other_peers_further_ones() {
        // 3 MiB in all, of which 1 MiB for first responses: 2 MiB shared.
        let gate = Gate::new(ServeLimits {
            send_buffer_per_peer: 16 << 20,
            ..limits()
        });
        let t0 = Instant::now();
        let (busy, new) = (PeerId::random(), PeerId::random());
        let _admitted = (gate.admit(busy, t0), gate.admit(new, t0));
        // The busy peer's first response, then a second taking the whole shared part...
        let _first = gate.reserve(busy, 256 << 10).await.expect("room");
        let _second = gate.reserve(busy, 2 << 20).await.expect("room");
        assert_eq!(gate.buffer_free_kib(), 768);
        // ... so its third waits, though the buffer has room for it,
        let waiting = {
            let gate = gate.clone();
            tokio::spawn(async move { gate.reserve(busy, 512 << 10).await })
        };
        tokio::task::yield_now().await;
        // and that room is left to a peer with no response yet.
        let new_first = gate.reserve(new, 512 << 10).await;
        assert!(new_first.is_some(), "a new peer's first response waited");
        assert!(
            waiting.await.expect("task").is_none(),
            "the shared part is full"
        );
    }

    #[tokio::test]
    async fn of_requests_sent_at_once_only_one_is_a_first_response() {
        // 3 MiB in all, 1 MiB for first responses, 2 MiB shared.
        let gate = Gate::new(ServeLimits {
            send_buffer_per_peer: 16 << 20,
            ..limits()
        });
        let t0 = Instant::now();
        let (greedy, new) = (PeerId::random(), PeerId::random());
        let _admitted = (gate.admit(greedy, t0), gate.admit(new, t0));
        // Four reservations of 768 KiB at once: one first, two from the shared part, and
        // the fourth waits in vain for the shared part, not taking the first-response lane.
        let reserved =
            futures_util::future::join_all((0..4).map(|_| gate.reserve(greedy, 768 << 10))).await;
        assert_eq!(reserved.iter().filter(|r| r.is_some()).count(), 3);
        assert!(
            gate.reserve(new, 256 << 10).await.is_some(),
            "room is left for another peer's first response"
        );
    }

    #[test]
    fn requests_beyond_the_rate_wait_their_turn_and_too_many_get_busy() {
        let gate = Gate::new(limits());
        let (peer, other) = (PeerId::random(), PeerId::random());
        let t0 = Instant::now();
        // The burst goes at once; then one request per 100 ms.
        let a = gate.admit(peer, t0).expect("burst");
        let b = gate.admit(peer, t0).expect("burst");
        assert_eq!((a.wait, b.wait), (Duration::ZERO, Duration::ZERO));
        let c = gate.admit(peer, t0).expect("paced");
        let d = gate.admit(peer, t0).expect("paced");
        assert_eq!(c.wait.as_millis(), 100);
        assert_eq!(d.wait.as_millis(), 200);
        // Four in progress: the fifth is refused, and costs no token.
        assert_eq!(gate.admit(peer, t0).err(), Some(Refused::TooMany));
        // Another peer has its own bucket and count.
        assert_eq!(gate.admit(other, t0).expect("other").wait, Duration::ZERO);
        drop((a, b));
        let e = gate.admit(peer, t0).expect("a slot is free again");
        assert_eq!(e.wait.as_millis(), 300);
        drop(e);
        // A second later the debt is paid; the bucket refills up to the burst only.
        let later = t0 + Duration::from_secs(10);
        drop((c, d));
        let f = gate.admit(peer, later).expect("refilled");
        let g = gate.admit(peer, later).expect("refilled");
        assert_eq!((f.wait, g.wait), (Duration::ZERO, Duration::ZERO));
        assert!(gate.admit(peer, later).expect("paced").wait > Duration::ZERO);
    }

    #[test]
    fn a_peer_far_beyond_the_rate_is_refused() {
        let gate = Gate::new(ServeLimits {
            streams_per_peer: 1000,
            ..limits()
        });
        let peer = PeerId::random();
        let t0 = Instant::now();
        // 2 at once, then 10 per second: the 13th would wait more than a second.
        let held: Vec<_> = (0..12)
            .map(|_| gate.admit(peer, t0).expect("within a second"))
            .collect();
        assert_eq!(gate.admit(peer, t0).err(), Some(Refused::TooFast));
        assert_eq!(held.len(), 12);
    }

    #[test]
    fn idle_peers_are_forgotten_when_the_map_is_full() {
        let gate = Gate::new(limits());
        let t0 = Instant::now();
        let busy = PeerId::random();
        let _held = gate.admit(busy, t0).expect("admitted");
        for _ in 0..MAX_GATED_PEERS + 10 {
            drop(gate.admit(PeerId::random(), t0).expect("admitted"));
        }
        let peers = gate.peers.lock().unwrap_or_else(|e| e.into_inner());
        assert!(peers.len() <= MAX_GATED_PEERS, "{}", peers.len());
        assert!(
            peers.contains_key(&busy),
            "a peer with a request in progress is kept"
        );
    }

    #[tokio::test]
    async fn responses_wait_for_the_send_buffer_and_get_it_back_when_released() {
        let gate = Gate::new(limits());
        let t0 = Instant::now();
        let (peer, other) = (PeerId::random(), PeerId::random());
        let (_a, _b) = (gate.admit(peer, t0), gate.admit(other, t0));
        let first = gate.reserve(peer, 1536 << 10).await.expect("room");
        // The peer's share is 2 MiB: another 1 MiB does not fit, and waits in vain.
        assert!(gate.reserve(peer, 1 << 20).await.is_none());
        // Another peer takes the last 1.5 MiB of the 3 MiB; then the buffer is full.
        let second = gate.reserve(other, 1536 << 10).await.expect("room");
        assert_eq!(gate.buffer_free_kib(), 0);
        assert!(gate.reserve(other, 1 << 10).await.is_none());
        drop(first);
        assert!(gate.reserve(other, 1 << 10).await.is_some());
        drop(second);
        assert_eq!(gate.buffer_free_kib(), 3 << 10);
        // A peer without a request in progress is given nothing.
        assert!(gate.reserve(PeerId::random(), 1).await.is_none());
    }

    #[test]
    fn a_request_waits_for_the_send_buffer_less_than_a_silent_connection_lives() {
        // A request waiting in line sends nothing; a bulk connection closes after
        // BULK_IDLE_TIMEOUT of silence, and its `Busy` must come before that.
        let idle = crate::net::bulk::BULK_IDLE_TIMEOUT;
        assert!(
            ServeLimits::default().send_wait * 3 / 2 <= idle,
            "{:?} against {idle:?}",
            ServeLimits::default().send_wait
        );
    }

    #[test]
    fn response_memory_counts_the_encoding_up_to_a_stream_window() {
        let all = [GroupRange {
            start: 0,
            end: None,
        }];
        let mib = 1u64 << 20;
        let four = response_memory(4 * mib, &all);
        // 4 MiB of data, 16 KiB of hash pairs, the path and the encoder's buffer.
        assert!(
            four > 4 * mib + 16 * 1024 && four < 4 * mib + 128 * 1024,
            "{four}"
        );
        let huge = response_memory(1 << 40, &all);
        assert!(huge < u64::from(QUIC_STREAM_WINDOW) + mib, "{huge}");
        // Ranges past the end count nothing.
        let past = [GroupRange {
            start: 1 << 20,
            end: Some(1 << 21),
        }];
        assert!(response_memory(4 * mib, &past) < 128 * 1024);
    }
}
