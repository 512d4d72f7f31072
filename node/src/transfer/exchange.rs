//! Small exchanges beside the data: `Request::Holders` asks a peer which other nodes it
//! knows to hold a root (peers fetching the same dataset learn of each other this way,
//! beyond what one DHT lookup returns: a DHT key keeps at most a few dozen providers);
//! `Request::Have` asks which chunk groups of a blob a peer holds (a peer still fetching it
//! serves what it has).

use std::time::Duration;

use commons_protocol::{
    wire::{
        encode_frame, HaveResponse, HoldersResponse, HubFileId, HubFileResponse, Request,
        ResponseHeader, SignaturesResponse, UpstreamResponse, MAX_HAVE_BYTES, MAX_HOLDERS_BYTES,
        MAX_HUB_FILE_BYTES, MAX_SIGNATURES_BYTES, MAX_UPSTREAM_BYTES,
    },
    Hash,
};
use libp2p::{futures::AsyncWriteExt, PeerId};

use super::{
    io::{read_frame, write_frame},
    FetchError,
};
use crate::{
    discovery::{holders::parse_records, Holders},
    net::{transfer_protocol, Host, PeerAddrs},
};

/// How long a peer has to answer a holders or have request.
pub const HOLDERS_TIMEOUT: Duration = Duration::from_secs(10);

/// Asks `peer` for the other holders of `hash` it knows.
pub async fn ask_holders(
    host: &Host,
    peer: PeerId,
    hash: Hash,
) -> Result<Vec<PeerAddrs>, FetchError> {
    let body = ask(host, peer, &Request::Holders { hash }, MAX_HOLDERS_BYTES).await?;
    let response =
        HoldersResponse::decode(&body).map_err(|source| FetchError::Protocol { peer, source })?;
    Ok(parse_records(response.holders))
}

/// Asks `peer` which chunk groups of blob `hash` it holds (all, some, or none). `None`:
/// the peer predates `Have` (it answers with a `BadRequest` header), so it serves only
/// complete blobs.
pub async fn ask_have(
    host: &Host,
    peer: PeerId,
    hash: Hash,
) -> Result<Option<HaveResponse>, FetchError> {
    let body = ask(host, peer, &Request::Have { hash }, MAX_HAVE_BYTES).await?;
    match HaveResponse::decode(&body) {
        Ok(have) => Ok(Some(have)),
        Err(source) => match ResponseHeader::decode(&body) {
            Ok(ResponseHeader::BadRequest(_)) => Ok(None),
            _ => Err(FetchError::Protocol { peer, source }),
        },
    }
}

/// Asks `peer` which dataset roots it holds for the Hub commit whose DHT key is `key`.
pub async fn ask_upstream(host: &Host, peer: PeerId, key: Hash) -> Result<Vec<Hash>, FetchError> {
    let body = ask(host, peer, &Request::Upstream { key }, MAX_UPSTREAM_BYTES).await?;
    let response =
        UpstreamResponse::decode(&body).map_err(|source| FetchError::Protocol { peer, source })?;
    Ok(response.roots)
}

/// Asks `peer` which blob (and size) it holds for the file with Hub id `id`, or whether it
/// is downloading it now.
pub async fn ask_hub_file(
    host: &Host,
    peer: PeerId,
    id: HubFileId,
) -> Result<HubFileResponse, FetchError> {
    let body = ask(host, peer, &Request::HubFile { id }, MAX_HUB_FILE_BYTES).await?;
    HubFileResponse::decode(&body).map_err(|source| FetchError::Protocol { peer, source })
}

/// Asks `peer` for the signature bundles it holds for dataset `root` (unchecked: the
/// caller checks each against the manifest). A peer that predates the request answers
/// with a `BadRequest` header: no signatures.
pub async fn ask_signatures(
    host: &Host,
    peer: PeerId,
    root: Hash,
) -> Result<Vec<Vec<u8>>, FetchError> {
    let body = ask(
        host,
        peer,
        &Request::Signatures { root },
        MAX_SIGNATURES_BYTES,
    )
    .await?;
    match SignaturesResponse::decode(&body) {
        Ok(response) => Ok(response.bundles),
        Err(source) => match ResponseHeader::decode(&body) {
            Ok(ResponseHeader::BadRequest(_)) => Ok(Vec::new()),
            _ => Err(FetchError::Protocol { peer, source }),
        },
    }
}

/// One request answered by one frame of at most `limit` bytes, within [`HOLDERS_TIMEOUT`].
pub(super) async fn ask(
    host: &Host,
    peer: PeerId,
    request: &Request,
    limit: u32,
) -> Result<Vec<u8>, FetchError> {
    let stream_err = |reason: String| FetchError::Stream { peer, reason };
    let exchange = async {
        let open = || async {
            host.control()
                .open_stream(peer, transfer_protocol())
                .await
                .map_err(|e| e.to_string())
        };
        let mut stream = super::request::send_request(open, &encode_frame(request))
            .await
            .map_err(stream_err)?;
        let body = read_frame(&mut stream, limit)
            .await
            .map_err(|e| stream_err(e.to_string()))?;
        let _ = stream.close().await;
        Ok(body)
    };
    tokio::time::timeout(HOLDERS_TIMEOUT, exchange)
        .await
        .map_err(|_| stream_err("no answer in time".into()))?
}

/// Answers a holders request from `asker`, then records the asker as a holder of `hash`:
/// a peer asking is fetching it, and will serve what it has.
pub async fn answer_holders(
    host: &Host,
    holders: &Holders,
    asker: PeerId,
    hash: Hash,
    stream: &mut (impl libp2p::futures::AsyncWrite + Unpin),
) -> std::io::Result<u64> {
    let response = HoldersResponse {
        holders: holders.records_for(&hash, &asker, &host.peer_id()),
    };
    let frame = encode_frame(&response);
    write_frame(stream, &frame).await?;
    let _ = stream.close().await;
    if let Ok(addrs) = host.addresses(asker).await {
        holders.add(hash, asker, addrs);
    }
    Ok(frame.len() as u64)
}
