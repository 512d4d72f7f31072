//! A seeder that lies, for the swarm lab: it joins the DHT and announces the blobs of its
//! data dir like a real node, then answers every range request with the last byte of the
//! data flipped. Prints `{"addrs": [...]}` when ready; runs until killed.

use std::{path::PathBuf, sync::Arc};

use anyhow::{Context, Result};
use clap::Parser;
use commons_node::{
    discovery::{DhtMode, DiscoveryConfig},
    identity,
    net::{transfer_protocol, Host},
    store::{Store, StoreOptions},
};
use commons_protocol::wire::{
    chunk_ranges, encode_frame, BulkResponse, HaveResponse, HoldersResponse, HubFileResponse,
    Request, ResponseHeader, UpstreamResponse, MAX_REQUEST_BYTES,
};
use libp2p::futures::{AsyncReadExt, AsyncWriteExt, StreamExt};

#[derive(Debug, Parser)]
struct Args {
    /// Data dir holding the blobs to lie about
    #[arg(long)]
    data_dir: PathBuf,
    /// Address to listen on
    #[arg(long)]
    listen: String,
    /// Peer to join the DHT through
    #[arg(long)]
    bootstrap: Option<String>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let store = Arc::new(Store::open(
        args.data_dir.join("store"),
        StoreOptions::default(),
    )?);
    let key = identity::load_or_create(&args.data_dir)?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let config = DiscoveryConfig {
            mode: DhtMode::Server,
            ..DiscoveryConfig::default()
        };
        let host = Host::start(key, &[args.listen.parse()?], &config).await?;
        if let Some(b) = &args.bootstrap {
            host.bootstrap(&[b.parse()?]).await?;
        }
        for (hash, _) in store.pins()? {
            host.announce(hash).await?;
        }
        let addrs: Vec<String> = host
            .listen_addrs()
            .await
            .iter()
            .map(|a| a.to_string())
            .collect();
        println!("{}", serde_json::json!({ "addrs": addrs }));
        let mut incoming = host
            .control()
            .accept(transfer_protocol())
            .context("accept")?;
        while let Some((_, mut stream)) = incoming.next().await {
            let store = store.clone();
            tokio::spawn(async move {
                let mut prefix = [0u8; 4];
                if stream.read_exact(&mut prefix).await.is_err() {
                    return;
                }
                let len = u32::from_be_bytes(prefix).min(MAX_REQUEST_BYTES) as usize;
                let mut body = vec![0u8; len];
                if stream.read_exact(&mut body).await.is_err() {
                    return;
                }
                match Request::decode(&body) {
                    Ok(Request::Get { hash, ranges }) => {
                        let Ok(Some(meta)) = store.blob(&hash) else {
                            return;
                        };
                        let mut encoded = Vec::new();
                        if store
                            .encode_ranges(&hash, &chunk_ranges(&ranges), &mut encoded)
                            .is_err()
                        {
                            return;
                        }
                        if let Some(last) = encoded.last_mut() {
                            *last ^= 1;
                        }
                        let header = encode_frame(&ResponseHeader::Ok { size: meta.size });
                        let _ = stream.write_all(&header).await;
                        let _ = stream.write_all(&encoded).await;
                    }
                    Ok(Request::Have { hash }) => {
                        // It claims what it holds; its lies are in the data.
                        let held = store.held_groups(&hash).unwrap_or(HaveResponse::NotFound);
                        let _ = stream.write_all(&encode_frame(&held)).await;
                    }
                    Ok(Request::Bulk) => {
                        // Its lies go over libp2p: it offers no bulk endpoint.
                        let none = BulkResponse { port: None };
                        let _ = stream.write_all(&encode_frame(&none)).await;
                    }
                    Ok(Request::Holders { .. }) => {
                        let empty = HoldersResponse { holders: vec![] };
                        let _ = stream.write_all(&encode_frame(&empty)).await;
                    }
                    Ok(Request::HubFile { .. }) => {
                        let none = HubFileResponse {
                            blob: None,
                            fetching: false,
                        };
                        let _ = stream.write_all(&encode_frame(&none)).await;
                    }
                    Ok(Request::Upstream { .. }) => {
                        let none = UpstreamResponse { roots: vec![] };
                        let _ = stream.write_all(&encode_frame(&none)).await;
                    }
                    Ok(Request::Signatures { .. }) => {
                        // Serves the data unsigned: the fetched copy shows as unsigned.
                        let none = commons_protocol::wire::SignaturesResponse { bundles: vec![] };
                        let _ = stream.write_all(&encode_frame(&none)).await;
                    }
                    Err(_) => {}
                }
                let _ = stream.close().await;
            });
        }
        Ok(())
    })
}
