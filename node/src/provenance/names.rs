//! Signed names across the network: publishing a name record into the DHT, resolving one
//! (highest valid sequence wins, never older than what this node saw), writing the newest
//! back to peers that answered with an older one, and keeping followed names alive.
//!
//! Unlike IPNS there is no 16-of-20 quorum: a lookup takes the first [`NAME_ANSWERS`]
//! answers (every record is self-certifying, so one honest answer is enough to learn the
//! newest version; more answers only guard against peers that hide it), and the highest
//! record a node ever accepted is its floor, so no peer can roll it back.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use commons_protocol::{
    provenance::{
        name_key, record::MAX_RECORD_LIFETIME_SECS, NameRecord, PublicKey, SecretKey,
        SignedNameRecord,
    },
    Hash, NameRef,
};
use libp2p::PeerId;

use crate::{
    error::{ApiError, ErrorKind},
    fetch::GetTarget,
    net::{Host, QueryCost},
    node::{Network, Node},
    store::NameUpdate,
};

/// Answers a lookup waits for before it decides (fewer if the walk ends first).
pub const NAME_ANSWERS: usize = 4;
/// How often a running node puts the names it keeps alive (published or followed) into the
/// DHT again, so they survive the churn of the peers closest to their keys.
pub const REPUBLISH_INTERVAL: Duration = Duration::from_secs(3600);
/// How often a followed name is checked for a new version, unless its entry says.
pub const DEFAULT_FOLLOW_INTERVAL_SECS: u64 = 300;
/// How long a record is valid unless the publisher says otherwise: 30 days. Followers
/// re-publish it meanwhile; the publisher publishes again to extend it.
pub const DEFAULT_LIFETIME_SECS: u64 = 30 * 24 * 3600;

/// What a resolution found.
#[derive(Debug, Clone)]
pub struct Resolution {
    /// The newest valid record.
    pub record: SignedNameRecord,
    /// Valid answers from the network.
    pub answers: usize,
    /// Peers that answered with an older or invalid record (sent the newest).
    pub stale_peers: usize,
    /// Whether the record came from the network (false: only this node's own copy, because
    /// the network had nothing newer).
    pub from_network: bool,
    /// What the lookup cost.
    pub cost: QueryCost,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// Whether a DHT answer is a valid record for its key now: only those count towards
/// [`NAME_ANSWERS`] (junk from peers near the key cannot end a lookup early).
fn is_valid_answer(value: &[u8], key: &[u8]) -> bool {
    SignedNameRecord::decode_verified(value, key, unix_now()).is_ok()
}

/// Looks `key` up in the DHT and decides: the newest valid answer, unless `seen` (the
/// newest record this node accepted before) is newer and `allow_older` is not set. Peers
/// that answered anything older or invalid are sent the winner. No store: the benchmark
/// and the node share this.
pub async fn lookup(
    host: &Host,
    key: Hash,
    seen: Option<SignedNameRecord>,
    allow_older: bool,
) -> Result<Option<Resolution>, ApiError> {
    let found = host.get_names(key, NAME_ANSWERS, is_valid_answer).await?;
    let now = unix_now();
    let mut valid: Vec<(Option<PeerId>, SignedNameRecord)> = Vec::new();
    let mut bad_peers = Vec::new();
    for ((peer, bytes), checked) in found.records.into_iter().zip(found.valid) {
        // The signature was checked when the answer came in; the rest is cheap.
        let decoded = if checked {
            SignedNameRecord::decode_unverified(&bytes, key.as_bytes(), now)
        } else {
            SignedNameRecord::decode_verified(&bytes, key.as_bytes(), now)
        };
        match decoded {
            Ok(record) => valid.push((peer, record)),
            Err(e) => {
                tracing::info!(?peer, error = %e, "ignored a name record");
                bad_peers.extend(peer);
            }
        }
    }
    let best = valid
        .iter()
        .map(|(_, r)| r)
        .max_by_key(|r| r.rank())
        .cloned();
    let seen = seen.filter(|r| r.check_time(now).is_ok());
    let (record, from_network) = match (best, seen) {
        (None, None) => return Ok(None),
        (Some(best), Some(seen)) if !best.supersedes(&seen) && !allow_older => {
            if seen.supersedes(&best) {
                tracing::info!(name = %seen.record.name_ref(), seen = seen.record.seq,
                    offered = best.record.seq,
                    "the network's newest record is older than one seen here: kept ours");
            }
            (seen, false)
        }
        (Some(best), _) => (best, true),
        (None, Some(seen)) => (seen, false),
    };
    // Peers that answered with anything but the newest get it (only what verified: a
    // peer's own store refuses anything older than it holds).
    let own_stale = valid
        .iter()
        .any(|(p, r)| p.is_none() && r.rank() < record.rank());
    let mut stale: Vec<PeerId> = valid
        .iter()
        .filter(|(_, r)| r.rank() < record.rank())
        .filter_map(|(p, _)| *p)
        .collect();
    stale.extend(bad_peers);
    stale.sort();
    stale.dedup();
    let stale_peers = stale.len();
    if let Err(e) = host.put_name_to(key, record.encode(), stale).await {
        tracing::debug!(error = %e, "cannot write a name record back");
    }
    if own_stale {
        // This node's own DHT store served an older record: it takes the newest too (and
        // the peers closest to the key with it).
        let (host, bytes) = (host.clone(), record.encode());
        tokio::spawn(async move {
            if let Err(e) = host.put_name(key, bytes).await {
                tracing::debug!(error = %e, "cannot store the newest name record here");
            }
        });
    }
    Ok(Some(Resolution {
        record,
        answers: valid.len(),
        stale_peers,
        from_network,
        cost: found.cost,
    }))
}

/// Resolves `publisher`'s `name` through the DHT, never below the newest record this node
/// accepted before (unless `allow_older`: the explicit override of the rollback
/// protection); a newer record is remembered.
pub async fn resolve(
    node: &Node,
    network: &Network,
    publisher: &PublicKey,
    name: &NameRef,
    allow_older: bool,
) -> Result<Resolution, ApiError> {
    let key = name_key(publisher, name);
    let seen = node.store().run(move |s| s.seen_name(&key)).await?;
    let found = lookup(&network.host, key, seen.map(|(r, _)| r), allow_older)
        .await?
        .ok_or_else(|| {
            ApiError::new(
                ErrorKind::NotFound,
                format!(
                    "no record of {name} by publisher {} was found in the DHT",
                    publisher.fingerprint()
                ),
            )
        })?;
    if found.from_network {
        let remembered = found.record.clone();
        let update = node
            .store()
            .run(move |s| s.remember_name(&key, &remembered, false, allow_older))
            .await?;
        if let NameUpdate::Older(held) = update {
            // A newer record was accepted here before (maybe since expired): it stands,
            // and an expired one names nothing.
            if let Err(e) = held.check_time(unix_now()) {
                return Err(ApiError::new(
                    ErrorKind::NotFound,
                    format!(
                        "{e}; the network offers only older records of {name} (sequence {}), \
                         which this node refuses (--allow-older accepts them)",
                        found.record.record.seq
                    ),
                ));
            }
            return Ok(Resolution {
                record: *held,
                from_network: false,
                ..found
            });
        }
    }
    Ok(found)
}

/// What `publish` did.
#[derive(Debug, Clone)]
pub struct Published {
    /// The new record.
    pub record: SignedNameRecord,
    /// Its DHT key.
    pub key: Hash,
    /// What the DHT put cost; `None` when it failed (the record is kept here and re-published
    /// with the others).
    pub cost: Result<QueryCost, String>,
}

/// Publishes `name` → `root` signed by `key`, valid for `lifetime_secs`: one sequence above
/// the newest record of the name found here or in the DHT, chained to it.
pub async fn publish(
    node: &Node,
    network: &Network,
    key: &SecretKey,
    name: &NameRef,
    root: Hash,
    lifetime_secs: u64,
) -> Result<Published, ApiError> {
    let public = key.public();
    let current = match resolve(node, network, &public, name, false).await {
        Ok(found) => Some(found.record),
        Err(e) if e.kind == ErrorKind::NotFound => None,
        Err(e) => return Err(e.context("cannot look up the name's current record")),
    };
    let (record, dht_key) = sign_and_keep(node, key, name, root, lifetime_secs, current).await?;
    let cost = network
        .host
        .put_name(dht_key, record.encode())
        .await
        .map_err(|e| e.to_string());
    Ok(Published {
        record,
        key: dht_key,
        cost,
    })
}

/// Signs `name` → `root` one sequence above `current` (the newest record found in the
/// DHT, if it was asked) and the newest seen here, chained to it, and keeps it here (to
/// be put in the DHT by the caller or the republisher, and carried by `pack`). Returns
/// the record and its DHT key. Without the network (`publish --offline`), `current` is
/// `None`: the sequence then follows what this node has seen.
pub async fn sign_and_keep(
    node: &Node,
    key: &SecretKey,
    name: &NameRef,
    root: Hash,
    lifetime_secs: u64,
    current: Option<SignedNameRecord>,
) -> Result<(SignedNameRecord, Hash), ApiError> {
    let public = key.public();
    let dht_key = name_key(&public, name);
    // Expired records count too: nodes that hold one refuse any lower sequence for good.
    let seen = node
        .store()
        .run(move |s| s.seen_name(&dht_key))
        .await?
        .map(|(r, _)| r);
    let previous = [current, seen]
        .into_iter()
        .flatten()
        .max_by_key(SignedNameRecord::rank);
    let now = unix_now();
    // Never lapsing sooner than the record it replaces: once a newer record lapsed, the
    // older one (still valid) would be believed again.
    let expires = (now + lifetime_secs).max(
        previous
            .as_ref()
            .map_or(0, |p| p.record.expires_unix)
            .min(now + MAX_RECORD_LIFETIME_SECS),
    );
    let record = NameRecord::new(
        &public,
        name,
        root,
        previous.as_ref().map_or(1, |p| p.record.seq + 1),
        previous.as_ref().map(SignedNameRecord::id),
        now..expires,
    )
    .sign(key);
    // Checked as any peer will check it, before it leaves.
    SignedNameRecord::decode_verified(&record.encode(), dht_key.as_bytes(), now)
        .map_err(|e| ApiError::new(ErrorKind::InvalidInput, e.to_string()))?;
    let kept = record.clone();
    let update = node
        .store()
        .run(move |s| s.remember_name(&dht_key, &kept, true, false))
        .await?;
    if let NameUpdate::Older(newer) = update {
        return Err(ApiError::new(
            ErrorKind::Busy,
            format!(
                "a newer record of {name} (sequence {}) arrived while publishing; publish again",
                newer.record.seq
            ),
        ));
    }
    Ok((record, dht_key))
}

/// Puts every name this node keeps alive (published or followed) into the DHT again,
/// skipping expired ones; returns how many were put.
pub async fn republish(node: &Node, network: &Network) -> usize {
    let kept = match node.store().run(|s| s.kept_names()).await {
        Ok(kept) => kept,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list the names to re-publish");
            return 0;
        }
    };
    let now = unix_now();
    let mut put = 0;
    for (key, record) in kept {
        if record.check_time(now).is_err() {
            continue;
        }
        match network.host.put_name(key, record.encode()).await {
            Ok(_) => put += 1,
            Err(e) => {
                tracing::debug!(name = %record.record.name_ref(), error = %e, "re-publish failed")
            }
        }
    }
    put
}

/// Re-publishes kept names every `interval`, first soon after start (a running node).
pub fn spawn_republisher(node: &Node, interval: Duration) {
    let (node, token) = (node.clone(), node.shutdown_token().clone());
    tokio::spawn(async move {
        let work = async {
            let _ = tokio::time::timeout(Duration::from_secs(30), node.joined()).await;
            loop {
                if let Ok(network) = node.network().await {
                    let put = republish(&node, network).await;
                    if put > 0 {
                        tracing::info!(names = put, "re-published name records");
                    }
                }
                tokio::time::sleep(interval).await;
            }
        };
        tokio::select! {
            () = token.cancelled() => {}
            () = work => {}
        }
    });
}

/// A publisher as a user names one: a key text, a PEM public key (file contents), or the
/// name of a key held here.
pub async fn publisher(node: &Node, text: &str) -> Result<PublicKey, ApiError> {
    let (dir, text) = (node.data_dir().to_path_buf(), text.to_string());
    tokio::task::spawn_blocking(move || super::keys::parse_publisher(&dir, &text))
        .await
        .map_err(|e| ApiError::new(ErrorKind::Internal, e.to_string()))?
}

/// `<publisher>/<org>/<name>[@rev]`, or `org/name[@rev]` whose publisher the trust policy
/// names: the publisher and the name.
pub async fn published_name(node: &Node, text: &str) -> Result<(PublicKey, NameRef), ApiError> {
    let text = text.trim();
    if text.matches('/').count() >= 2 {
        let (first, rest) = text.split_once('/').unwrap_or_default();
        let name = NameRef::parse(rest)?;
        let key = publisher(node, first).await?;
        if let Some(trusted) = node.trust().publisher_of(&name.name) {
            if trusted != &key {
                return Err(ApiError::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "the trust policy names publisher {trusted} for {}, not {key}",
                        name.name
                    ),
                ));
            }
        }
        return Ok((key, name));
    }
    let name = NameRef::parse(text)?;
    match node.trust().publisher_of(&name.name) {
        Some(key) => Ok((key.clone(), name)),
        None => Err(ApiError::new(
            ErrorKind::InvalidInput,
            format!(
                "no [trust] rule names the publisher of {}: give it as <publisher>/{name} \
             (a key p256:…, or a key held here), or add a rule to the config",
                name.name
            ),
        )),
    }
}

/// Whether `text` names a signed name rather than a hash, prefix, ticket or local name:
/// it has a publisher part, or the trust policy covers it.
pub fn is_published_name(node: &Node, text: &str) -> bool {
    let text = text.trim();
    if commons_protocol::Ticket::looks_like(text) || !text.contains('/') {
        return false;
    }
    text.matches('/').count() >= 2
        || NameRef::parse(text).is_ok_and(|n| node.trust().publisher_of(&n.name).is_some())
}

/// What `get <name>` fetches: the root the newest record names, requiring its publisher's
/// signature; and the local name to bind once fetched.
pub async fn name_target(
    node: &Node,
    text: &str,
    allow_older: bool,
) -> Result<(GetTarget, NameRef, SignedNameRecord), ApiError> {
    let (key, name) = published_name(node, text).await?;
    let network = node
        .joined_network()
        .await
        .map_err(|e| e.context(format_args!("cannot resolve {name}")))?;
    let found = resolve(node, network, &key, &name, allow_older)
        .await
        .map_err(|e| e.context(format_args!("cannot resolve {name}")))?;
    Ok((
        GetTarget {
            hash: found.record.record.root,
            kind: Some(commons_protocol::TicketKind::Dataset),
            providers: Vec::new(),
            publisher: Some(key),
        },
        name,
        found.record,
    ))
}
