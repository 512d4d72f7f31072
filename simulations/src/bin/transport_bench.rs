//! Transport benchmark: how fast can bytes move over loopback, with nothing stored and
//! nothing verified? One stream carries `--size-mib` of bytes from a server to a client in
//! the same process (one tokio runtime, both ends sharing the machine's cores, as a seeder
//! and a fetcher on one machine do), over:
//! - the node's libp2p host (libp2p-quic, the transfer protocol's default path);
//! - the node's bulk endpoint (`commons_node::net::bulk`) with five tunings: datagram
//!   limit 1,472 bytes (libp2p-quic's), 6,500 (the node's) or 64 KiB (one datagram per
//!   send: ten of them do not fit a segmented send), ChaCha20 (libp2p-tls's first choice)
//!   or AES-GCM first, segmentation offload on or off;
//! - nginx → curl (`curl -o /dev/null`), the reference the transfer issue names.
//!
//! This is what decides whether the transfer protocol may leave libp2p's connection for
//! bulk data: the fetch can never be faster than the transport under it.

use std::{net::SocketAddr, process::Command, time::Instant};

use anyhow::{Context, Result};
use clap::Parser;
use commons_node::{
    discovery::DiscoveryConfig,
    net::{
        bulk::{BulkEndpoint, BulkStream, BulkTuning, BULK_MAX_UDP_PAYLOAD},
        Host,
    },
};
use commons_simulations::{median, run_measured, sorted, start_nginx, write_random_file, RunStats};
use libp2p::{
    futures::{AsyncReadExt, AsyncWriteExt, StreamExt},
    identity::Keypair,
    StreamProtocol,
};

/// Raw transport throughput on loopback.
#[derive(Debug, Parser)]
struct Args {
    /// Bytes moved per run, in MiB
    #[arg(long, default_value_t = 1024)]
    size_mib: u64,
    /// Repetitions (the median is reported)
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Skip the nginx comparison
    #[arg(long)]
    no_nginx: bool,
}

const WRITE: usize = 256 * 1024;
const BENCH_PROTOCOL: &str = "/commons/bench-raw/1";

/// Writes `bytes` bytes to `stream` in [`WRITE`]-byte writes, then closes it.
async fn send_bytes<S: libp2p::futures::AsyncWrite + Unpin>(
    stream: &mut S,
    bytes: u64,
) -> std::io::Result<()> {
    let buf = vec![0x5au8; WRITE];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(WRITE as u64) as usize;
        stream.write_all(&buf[..n]).await?;
        left -= n as u64;
    }
    stream.close().await
}

/// Reads `stream` to its end; returns the bytes read.
async fn drain<S: libp2p::futures::AsyncRead + Unpin>(stream: &mut S) -> std::io::Result<u64> {
    let mut buf = vec![0u8; WRITE];
    let mut total = 0;
    loop {
        match stream.read(&mut buf).await? {
            0 => return Ok(total),
            n => total += n as u64,
        }
    }
}

async fn libp2p_run(bytes: u64) -> Result<f64> {
    let listen = ["/ip4/127.0.0.1/udp/0/quic-v1".parse()?];
    let discovery = DiscoveryConfig::default();
    let server = Host::start(Keypair::generate_ed25519(), &listen, &discovery).await?;
    let client = Host::start(Keypair::generate_ed25519(), &[], &discovery).await?;
    let protocol = StreamProtocol::new(BENCH_PROTOCOL);
    let mut incoming = server
        .control()
        .accept(protocol.clone())
        .context("accept")?;
    tokio::spawn(async move {
        while let Some((_, mut stream)) = incoming.next().await {
            let _ = send_bytes(&mut stream, bytes).await;
        }
    });
    let addr = server.listen_addrs().await.remove(0);
    let peer = client.connect_addr(addr).await?;
    let started = Instant::now();
    let mut stream = client.control().open_stream(peer, protocol).await?;
    stream.write_all(b"go").await?;
    let got = drain(&mut stream).await?;
    anyhow::ensure!(got == bytes, "short transfer: {got} of {bytes}");
    Ok(started.elapsed().as_secs_f64())
}

async fn bulk_run(bytes: u64, tuning: BulkTuning) -> Result<f64> {
    let loopback: SocketAddr = "127.0.0.1:0".parse()?;
    let server_key = Keypair::generate_ed25519();
    let server_peer = server_key.public().to_peer_id();
    let (server, mut incoming) = BulkEndpoint::bind(server_key, loopback, tuning)?;
    let (client, _) = BulkEndpoint::bind(Keypair::generate_ed25519(), loopback, tuning)?;
    tokio::spawn(async move {
        while let Some((_, stream)) = incoming.recv().await {
            let mut stream: BulkStream = stream;
            let mut go = [0u8; 2];
            if stream.read_exact(&mut go).await.is_ok() {
                let _ = send_bytes(&mut stream, bytes).await;
            }
        }
    });
    let addr = server.local_addr()?;
    // Handshake first (as the libp2p run's dial), then time the bytes.
    let mut warm = client.open_stream(server_peer, addr).await?;
    warm.write_all(b"go").await?;
    drop(warm);
    let started = Instant::now();
    let mut stream = client.open_stream(server_peer, addr).await?;
    stream.write_all(b"go").await?;
    let got = drain(&mut stream).await?;
    anyhow::ensure!(got == bytes, "short transfer: {got} of {bytes}");
    Ok(started.elapsed().as_secs_f64())
}

fn nginx_run(args: &Args) -> Result<f64> {
    let scratch = tempfile::tempdir()?;
    let root = scratch.path().join("www");
    std::fs::create_dir_all(&root)?;
    write_random_file(&root.join("blob"), args.size_mib << 20, 1)?;
    let _nginx = start_nginx(&[], scratch.path(), &root, "127.0.0.1:18432")?;
    // One untimed read puts the file in the page cache, like the in-memory senders above.
    run_measured(Command::new("curl").args([
        "-sf",
        "-o",
        "/dev/null",
        "http://127.0.0.1:18432/blob",
    ]))?;
    let mut runs = Vec::new();
    for _ in 0..args.runs {
        runs.push(run_measured(Command::new("curl").args([
            "-sf",
            "-o",
            "/dev/null",
            "http://127.0.0.1:18432/blob",
        ]))?);
    }
    Ok(RunStats::median(runs).elapsed.as_secs_f64())
}

/// "1,472-byte" or "64 KiB" (the largest UDP payload).
fn datagram_size(bytes: u16) -> String {
    match bytes {
        65_527.. => "64 KiB".into(),
        1_000.. => format!("{},{:03}-byte", bytes / 1000, bytes % 1000),
        _ => format!("{bytes}-byte"),
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let bytes = args.size_mib << 20;
    let mut rows: Vec<(String, f64)> = Vec::new();
    let mut times = Vec::new();
    for _ in 0..args.runs {
        times.push(libp2p_run(bytes).await?);
    }
    rows.push((
        "libp2p host (libp2p-quic: 1,472-byte datagrams, ChaCha20)".into(),
        median(&sorted(times)),
    ));
    let node = BULK_MAX_UDP_PAYLOAD;
    for (max_udp_payload, prefer_aes, offload) in [
        (1_472, false, true),
        (1_472, true, true),
        (node, true, true),
        (node, true, false),
        (65_527, true, false),
    ] {
        let tuning = BulkTuning {
            max_udp_payload,
            prefer_aes,
            offload,
        };
        let label = format!(
            "bulk endpoint, {} datagrams, {}{}",
            datagram_size(max_udp_payload),
            if prefer_aes { "AES-GCM" } else { "ChaCha20" },
            if offload { "" } else { ", no GSO/GRO" }
        );
        let label = if tuning == BulkTuning::default() {
            format!("{label} (the default)")
        } else {
            label
        };
        let mut times = Vec::new();
        for _ in 0..args.runs {
            times.push(bulk_run(bytes, tuning).await?);
        }
        rows.push((label, median(&sorted(times))));
    }
    let nginx = if args.no_nginx {
        None
    } else {
        let nginx = tokio::task::block_in_place(|| nginx_run(&args))?;
        rows.push(("nginx -> curl (plain HTTP, page cache)".into(), nginx));
        Some(nginx)
    };
    let libp2p = rows[0].1;
    println!(
        "{} MiB over loopback, one stream, median of {}:",
        args.size_mib, args.runs
    );
    println!("| transport | seconds | MiB/s | ÷ libp2p host | ÷ nginx |\n|---|---|---|---|---|");
    for (label, secs) in &rows {
        let rate = args.size_mib as f64 / secs;
        let vs_nginx = nginx.map_or("—".into(), |n| format!("{:.2}", n / secs));
        println!(
            "| {label} | {secs:.2} | {rate:.0} | {:.2} | {vs_nginx} |",
            libp2p / secs
        );
    }
    Ok(())
}
