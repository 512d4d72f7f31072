//! Load generators for the load lab (`src/bin/load_lab.rs`), run in-process so that
//! hundreds of peers fit on one small machine: honest fetchers (a libp2p host each, asking
//! the transfer protocol for a blob in 4 MiB batches and verifying every group, as `commons
//! get` does, but keeping nothing), idle streams (opened on `/commons/transfer/1`, never
//! sent a request), slow HTTP clients (a request head trickled 1 byte per second, or a
//! body read a few KiB per second) and DHT lookups (Kademlia provider walks that ask the
//! seeder, back to back).
//!
//! Why in-process: a `commons get` process costs ~75 MiB of RSS and a RocksDB store, so 200
//! of them would need 15 GiB and write 12.5 GiB to disk; the seeder cannot tell these
//! clients from real ones (same protocol, same bulk endpoint, one identity each).

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use commons_node::{
    discovery::DiscoveryConfig,
    net::{transfer_protocol, Host},
    transfer::open_data_stream,
};
use commons_protocol::{
    tree::CHUNK_GROUP_BYTES,
    wire::{
        chunk_ranges, encode_frame, frame_len, verify_response, GroupRange, Request,
        ResponseHeader, MAX_HEADER_BYTES,
    },
    Hash,
};
use libp2p::{
    futures::{AsyncRead, AsyncReadExt, AsyncWriteExt},
    identity::Keypair,
    Multiaddr, PeerId,
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpSocket,
};

/// Chunk groups per request: 4 MiB, as `commons get` asks (`BATCH_SPANS` × 256 KiB).
const BATCH_GROUPS: u64 = 256;
/// Requests an honest fetcher keeps in flight, as `commons get` (`REQUESTS_PER_PEER`).
const SLOTS: usize = 2;
/// How long one request may take before the fetcher gives up on it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);
/// Times one batch is asked again after a failure or a `Busy` before the fetch fails.
const RETRIES: u32 = 20;
/// Wait before asking again after `Busy`.
const BUSY_BACKOFF: Duration = Duration::from_millis(250);

/// A peer and blob to load: the seeder, its addresses and one of its blobs.
#[derive(Debug, Clone)]
pub struct Target {
    /// The seeder.
    pub peer: PeerId,
    /// Its addresses (without `/p2p/`).
    pub addrs: Vec<Multiaddr>,
    /// The blob the fetchers fetch.
    pub hash: Hash,
    /// Its size in bytes.
    pub size: u64,
}

/// Set once to stop every generator.
#[derive(Debug, Default)]
pub struct Stop(AtomicBool);

impl Stop {
    /// Stops the generators.
    pub fn stop(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    fn stopped(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Seconds between attempts to connect, and attempts at most: hundreds of handshakes at
/// once on a loaded seeder time out (as they would for real clients arriving together).
const CONNECT_RETRY: Duration = Duration::from_secs(1);
const CONNECT_ATTEMPTS: u32 = 30;

/// A host for one simulated peer: a fresh identity, no listen address (a one-shot client,
/// as `commons get` is), connected to the target (retried; `retries` counts the retries).
async fn peer_host(target: &Target, bulk: bool, retries: &AtomicU64) -> Result<Host> {
    let config = DiscoveryConfig {
        bulk,
        ..DiscoveryConfig::client(Vec::new())
    };
    let host = Host::start(Keypair::generate_ed25519(), &[], &config).await?;
    let mut attempt = 0;
    loop {
        match host.connect(target.peer, target.addrs.clone()).await {
            Ok(()) => return Ok(host),
            Err(e) if attempt + 1 >= CONNECT_ATTEMPTS => return Err(e.into()),
            Err(_) => {
                attempt += 1;
                retries.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(CONNECT_RETRY).await;
            }
        }
    }
}

/// Spreads `n` starts over `over`: the `i`th waits this long first.
fn ramp(i: usize, n: usize, over: Duration) -> Duration {
    over.mul_f64(i as f64 / n.max(1) as f64)
}

/// What the honest fetchers did.
#[derive(Debug, Default)]
pub struct FetchFigures {
    /// Whole-blob fetches completed (every byte verified).
    pub completed: AtomicU64,
    /// Fetches given up (a batch failed [`RETRIES`] times).
    pub failed: AtomicU64,
    /// `Busy` answers received.
    pub busy: AtomicU64,
    /// Requests that failed otherwise (stream errors, timeouts), each retried.
    pub errors: AtomicU64,
    /// Fetchers that completed at least one fetch.
    pub fetchers_done: AtomicU64,
    /// Fetchers that could not start (host or connection failed).
    pub fetchers_broken: AtomicU64,
    /// Connections retried after a failed handshake.
    pub connect_retries: AtomicU64,
    /// Seconds each completed fetch took.
    pub times: Mutex<Vec<f64>>,
    /// Errors seen, by kind (their message's first words), for the report.
    pub error_kinds: Mutex<std::collections::BTreeMap<String, u64>>,
}

impl FetchFigures {
    fn note_error(&self, e: &anyhow::Error) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let message = format!("{e:#}");
        // Peer ids and numbers vary; the words before them say what happened.
        let kind: String = message
            .split_whitespace()
            .map(|w| {
                if w.starts_with("12D3") || w.starts_with(|c: char| c.is_ascii_digit()) {
                    "N"
                } else {
                    w
                }
            })
            .take(12)
            .collect::<Vec<_>>()
            .join(" ");
        let mut kinds = self.error_kinds.lock().unwrap_or_else(|e| e.into_inner());
        if kinds.len() < 64 || kinds.contains_key(&kind) {
            *kinds.entry(kind).or_default() += 1;
        }
    }

    /// The most frequent error kinds, most frequent first.
    pub fn top_errors(&self, n: usize) -> Vec<(String, u64)> {
        let kinds = self.error_kinds.lock().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<(String, u64)> = kinds.iter().map(|(k, v)| (k.clone(), *v)).collect();
        all.sort_by_key(|k| std::cmp::Reverse(k.1));
        all.truncate(n);
        all
    }
}

/// Starts `n` honest fetchers (their starts spread over `ramp_up`), each fetching
/// `target`'s blob again and again until `stop`.
pub fn spawn_fetchers(
    rt: &tokio::runtime::Handle,
    n: usize,
    ramp_up: Duration,
    target: &Target,
    stop: &Arc<Stop>,
    figures: &Arc<FetchFigures>,
) {
    for i in 0..n {
        let (target, stop, figures) = (target.clone(), stop.clone(), figures.clone());
        rt.spawn(async move {
            tokio::time::sleep(ramp(i, n, ramp_up)).await;
            let host = match peer_host(&target, true, &figures.connect_retries).await {
                Ok(h) => h,
                Err(e) => {
                    figures.fetchers_broken.fetch_add(1, Ordering::Relaxed);
                    figures.note_error(&e);
                    return;
                }
            };
            let mut done = 0u64;
            while !stop.stopped() {
                let start = Instant::now();
                match fetch_blob(&host, &target, &figures).await {
                    Ok(()) => {
                        done += 1;
                        if done == 1 {
                            figures.fetchers_done.fetch_add(1, Ordering::Relaxed);
                        }
                        figures.completed.fetch_add(1, Ordering::Relaxed);
                        figures
                            .times
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(start.elapsed().as_secs_f64());
                    }
                    // A fetch cut short by the end of the lab is no failure.
                    Err(_) if stop.stopped() => {}
                    Err(e) => {
                        figures.failed.fetch_add(1, Ordering::Relaxed);
                        figures.note_error(&e);
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
    }
}

/// Fetches the whole blob once, [`SLOTS`] batches in flight, each verified.
async fn fetch_blob(host: &Host, target: &Target, figures: &FetchFigures) -> Result<()> {
    let groups = target.size.div_ceil(CHUNK_GROUP_BYTES).max(1);
    let batches = groups.div_ceil(BATCH_GROUPS);
    let next = AtomicU64::new(0);
    let slot = || async {
        loop {
            let batch = next.fetch_add(1, Ordering::Relaxed);
            if batch >= batches {
                return Ok::<_, anyhow::Error>(());
            }
            let start = batch * BATCH_GROUPS;
            let end = (batch + 1 < batches).then_some(start + BATCH_GROUPS);
            let range = GroupRange { start, end };
            let mut tries = 0;
            loop {
                match fetch_batch(host, target, range).await {
                    Ok(Answer::Verified) => break,
                    Ok(Answer::Busy) => {
                        figures.busy.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(BUSY_BACKOFF).await;
                    }
                    Err(e) => {
                        figures.note_error(&e);
                        // As `commons get` would: wait, and dial the seeder again from its
                        // known addresses (the connection may have closed while idle).
                        tokio::time::sleep(BUSY_BACKOFF * (tries + 1).min(8)).await;
                        let _ = host.connect(target.peer, target.addrs.clone()).await;
                    }
                }
                tries += 1;
                if tries >= RETRIES {
                    bail!("batch {batch} failed {RETRIES} times");
                }
            }
        }
    };
    let results = libp2p::futures::future::join_all((0..SLOTS).map(|_| slot())).await;
    results.into_iter().collect()
}

/// How the seeder answered one batch.
enum Answer {
    Verified,
    Busy,
}

/// One request: asks for `range`, reads the whole answer, verifies it against the root.
async fn fetch_batch(host: &Host, target: &Target, range: GroupRange) -> Result<Answer> {
    let exchange = async {
        let mut stream = open_data_stream(host, target.peer)
            .await
            .map_err(anyhow::Error::msg)?;
        let request = Request::Get {
            hash: target.hash,
            ranges: vec![range],
        };
        stream.write_all(&encode_frame(&request)).await?;
        stream.flush().await?;
        let header = read_frame(&mut stream, MAX_HEADER_BYTES).await?;
        match ResponseHeader::decode(&header)? {
            ResponseHeader::Ok { size } if size == target.size => {}
            ResponseHeader::Busy => return Ok(None),
            other => bail!("the seeder answered {other:?}"),
        }
        let mut encoded = Vec::new();
        stream.read_to_end(&mut encoded).await?;
        Ok(Some(encoded))
    };
    let Some(encoded) = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .context("no whole answer in time")??
    else {
        return Ok(Answer::Busy);
    };
    let (hash, size) = (target.hash, target.size);
    let expected = match range.end {
        Some(end) => (end * CHUNK_GROUP_BYTES).min(size) - range.start * CHUNK_GROUP_BYTES,
        None => size - range.start * CHUNK_GROUP_BYTES,
    };
    let verified = tokio::task::spawn_blocking(move || {
        let ranges = chunk_ranges(&[range]);
        let verified = verify_response(hash, size, &ranges, &encoded[..])
            .try_fold(0u64, |n, group| group.map(|g| n + g.data.len() as u64));
        verified
    })
    .await??;
    anyhow::ensure!(
        verified == expected,
        "{verified} bytes verified of {expected}"
    );
    Ok(Answer::Verified)
}

/// Reads one length-prefixed frame of at most `limit` bytes.
async fn read_frame<S: AsyncRead + Unpin>(stream: &mut S, limit: u32) -> Result<Vec<u8>> {
    let mut prefix = [0u8; 4];
    stream.read_exact(&mut prefix).await?;
    let mut body = vec![0u8; frame_len(prefix, limit)?];
    stream.read_exact(&mut body).await?;
    Ok(body)
}

/// What the idle streams did.
#[derive(Debug, Default)]
pub struct IdleFigures {
    /// Streams open now (opened, not yet closed by the seeder).
    pub open: AtomicI64,
    /// Most open at once.
    pub peak: AtomicI64,
    /// Streams opened in all.
    pub opened: AtomicU64,
    /// Streams the seeder answered with bytes (`Busy`) instead of waiting for a request.
    pub refused: AtomicU64,
    /// Peers whose host or connection failed.
    pub broken: AtomicU64,
    /// Connections retried after a failed handshake.
    pub connect_retries: AtomicU64,
}

/// Starts `peers` peers (spread over `ramp_up`) each keeping `per_peer` streams open on
/// `/commons/transfer/1` without ever sending a request; a stream the seeder closes (its
/// request timeout) is opened again at once, so about `peers × per_peer` stay open until
/// `stop`.
pub fn spawn_idle_streams(
    rt: &tokio::runtime::Handle,
    peers: usize,
    per_peer: usize,
    ramp_up: Duration,
    target: &Target,
    stop: &Arc<Stop>,
    figures: &Arc<IdleFigures>,
) {
    for i in 0..peers {
        let (target, stop, figures) = (target.clone(), stop.clone(), figures.clone());
        rt.spawn(async move {
            tokio::time::sleep(ramp(i, peers, ramp_up)).await;
            let host = match peer_host(&target, false, &figures.connect_retries).await {
                Ok(h) => h,
                Err(_) => {
                    figures.broken.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            };
            let idle = |host: Host| {
                let (target, stop, figures) = (target.clone(), stop.clone(), figures.clone());
                async move {
                    while !stop.stopped() {
                        let Ok(mut stream) = host
                            .control()
                            .open_stream(target.peer, transfer_protocol())
                            .await
                        else {
                            tokio::time::sleep(Duration::from_millis(500)).await;
                            continue;
                        };
                        figures.opened.fetch_add(1, Ordering::Relaxed);
                        let now = figures.open.fetch_add(1, Ordering::Relaxed) + 1;
                        figures.peak.fetch_max(now, Ordering::Relaxed);
                        let mut byte = [0u8; 1];
                        let waited = tokio::select! {
                            read = stream.read(&mut byte) => Some(read),
                            () = until(&stop) => None,
                        };
                        figures.open.fetch_sub(1, Ordering::Relaxed);
                        if let Some(Ok(n)) = waited {
                            if n > 0 {
                                figures.refused.fetch_add(1, Ordering::Relaxed);
                                // Refused: try again a little later, as a patient attacker would.
                                tokio::time::sleep(Duration::from_millis(200)).await;
                            }
                        }
                    }
                }
            };
            let all = (0..per_peer).map(|_| idle(host.clone()));
            libp2p::futures::future::join_all(all).await;
        });
    }
}

/// Resolves once `stop` is set (polled every 100 ms).
async fn until(stop: &Stop) {
    while !stop.stopped() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the slow HTTP clients did.
#[derive(Debug, Default)]
pub struct SlowFigures {
    /// Connections open now.
    pub open: AtomicI64,
    /// Most open at once.
    pub peak: AtomicI64,
    /// Connections made in all.
    pub connections: AtomicU64,
    /// Slow readers that got a `200`/`206` status line.
    pub served: AtomicU64,
    /// Slow readers that got a `503` (no response slot).
    pub unavailable: AtomicU64,
    /// Connections refused or closed before any answer.
    pub refused: AtomicU64,
    /// Milliseconds the connections that ended were held open, in all.
    pub held_ms: AtomicU64,
    /// Connections that ended (closed by either side).
    pub ended: AtomicU64,
    /// Longest a connection was held open, in milliseconds.
    pub longest_ms: AtomicU64,
}

impl SlowFigures {
    /// Mean and longest seconds a connection was held open.
    pub fn held_secs(&self) -> (f64, f64) {
        let ended = self.ended.load(Ordering::Relaxed).max(1) as f64;
        (
            self.held_ms.load(Ordering::Relaxed) as f64 / 1000.0 / ended,
            self.longest_ms.load(Ordering::Relaxed) as f64 / 1000.0,
        )
    }
}

/// How a slow HTTP client is slow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slowness {
    /// Sends its request head one byte per second (the gateway's header timeout should
    /// close it).
    Head,
    /// Sends its request at once, then reads the body `READ_BYTES` per second through a
    /// small receive buffer, holding a response slot as long as it can.
    Reader,
}

/// Bytes a slow reader reads per second.
const READ_BYTES: usize = 4096;
/// Starts `n` slow HTTP clients asking `gateway` (`ip:port`) for `path`, each reconnecting
/// when the gateway closes it, until `stop`. Client `i` connects from 127.0.1.(i mod
/// `sources` + 1): the gateway caps connections per client address.
#[allow(clippy::too_many_arguments)]
pub fn spawn_slow_clients(
    rt: &tokio::runtime::Handle,
    n: usize,
    sources: usize,
    slowness: Slowness,
    gateway: SocketAddr,
    path: &str,
    stop: &Arc<Stop>,
    figures: &Arc<SlowFigures>,
) {
    for i in 0..n {
        let source = IpAddr::V4(Ipv4Addr::new(
            127,
            0,
            1,
            (i % sources.clamp(1, 254)) as u8 + 1,
        ));
        let head = format!("GET {path} HTTP/1.1\r\nHost: lab\r\n\r\n").into_bytes();
        let (stop, figures) = (stop.clone(), figures.clone());
        rt.spawn(async move {
            while !stop.stopped() {
                let answered = tokio::select! {
                    r = slow_connection(source, gateway, &head, slowness, &figures) => r,
                    () = until(&stop) => Ok(true),
                };
                if !matches!(answered, Ok(true)) {
                    figures.refused.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
    }
}

/// One slow connection, until the gateway closes it. `Ok(true)` when something came back
/// (a status line, or the connection stayed open a while).
async fn slow_connection(
    source: IpAddr,
    gateway: SocketAddr,
    head: &[u8],
    slowness: Slowness,
    figures: &SlowFigures,
) -> Result<bool> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    if slowness == Slowness::Reader {
        socket.set_recv_buffer_size(READ_BYTES as u32)?;
    }
    let mut conn = socket.connect(gateway).await?;
    figures.connections.fetch_add(1, Ordering::Relaxed);
    let now = figures.open.fetch_add(1, Ordering::Relaxed) + 1;
    figures.peak.fetch_max(now, Ordering::Relaxed);
    let opened = Instant::now();
    let result = async {
        match slowness {
            Slowness::Head => {
                for byte in head {
                    conn.write_all(std::slice::from_ref(byte)).await?;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                let mut buf = [0u8; 1024];
                while conn.read(&mut buf).await? > 0 {}
                Ok::<_, anyhow::Error>(opened.elapsed() > Duration::from_secs(2))
            }
            Slowness::Reader => {
                conn.write_all(head).await?;
                let mut buf = vec![0u8; READ_BYTES];
                let n = conn.read(&mut buf).await?;
                let status = std::str::from_utf8(&buf[..n.min(12)]).unwrap_or("");
                if status.ends_with(" 503") || status.contains(" 503") {
                    figures.unavailable.fetch_add(1, Ordering::Relaxed);
                    return Ok(true);
                }
                if !(status.contains(" 200") || status.contains(" 206")) {
                    return Ok(false);
                }
                figures.served.fetch_add(1, Ordering::Relaxed);
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    if conn.read(&mut buf).await? == 0 {
                        return Ok(true);
                    }
                }
            }
        }
    }
    .await;
    figures.open.fetch_sub(1, Ordering::Relaxed);
    let held = opened.elapsed().as_millis() as u64;
    figures.held_ms.fetch_add(held, Ordering::Relaxed);
    figures.longest_ms.fetch_max(held, Ordering::Relaxed);
    figures.ended.fetch_add(1, Ordering::Relaxed);
    result
}

/// What the DHT lookers did.
#[derive(Debug, Default)]
pub struct LookupFigures {
    /// Lookups that ended (the walk finished or settled).
    pub done: AtomicU64,
    /// Lookups that failed.
    pub failed: AtomicU64,
    /// Lookers that could not join (host or bootstrap failed).
    pub broken: AtomicU64,
}

/// Starts `n` DHT clients (spread over `ramp_up`) that know only the seeder and look up the
/// providers of random hashes back to back until `stop`: every walk asks the seeder, which
/// answers from its routing table and provider store.
pub fn spawn_lookups(
    rt: &tokio::runtime::Handle,
    n: usize,
    ramp_up: Duration,
    target: &Target,
    stop: &Arc<Stop>,
    figures: &Arc<LookupFigures>,
) {
    for i in 0..n {
        let (target, stop, figures) = (target.clone(), stop.clone(), figures.clone());
        rt.spawn(async move {
            tokio::time::sleep(ramp(i, n, ramp_up)).await;
            let config = DiscoveryConfig {
                bulk: false,
                ..DiscoveryConfig::client(Vec::new())
            };
            let joined = async {
                let host = Host::start(Keypair::generate_ed25519(), &[], &config).await?;
                let seeder: Vec<Multiaddr> = target
                    .addrs
                    .iter()
                    .map(|a| {
                        a.clone()
                            .with(libp2p::multiaddr::Protocol::P2p(target.peer))
                    })
                    .collect();
                host.bootstrap(&seeder).await?;
                Ok::<_, anyhow::Error>(host)
            };
            let host = match joined.await {
                Ok(h) => h,
                Err(_) => {
                    figures.broken.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            };
            while !stop.stopped() {
                let hash = Hash::from_bytes(rand::random());
                match host.find_providers(hash, 1, false).await {
                    Ok(_) => figures.done.fetch_add(1, Ordering::Relaxed),
                    Err(_) => figures.failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        });
    }
}
