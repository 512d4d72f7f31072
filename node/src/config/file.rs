//! The configuration file's contents and their rules: parsing the TOML and refusing values
//! the node cannot use, each error naming its line and key.
//!
//! Pure (serde, toml and `commons_protocol` only): the `config` fuzz target (`fuzz/`)
//! includes this very file and checks [`fuzz_property`] without building the node. What it
//! needs from the rest of the node (the address type, the DHT mode, a Hub source, the DHT's
//! default timings) it takes from its parent module, `config`.

use serde::{Deserialize, Serialize};

use super::{default_ttl_and_interval_secs, DhtMode, HubSource, Multiaddr};

/// Longest duration a setting may name, in seconds: ten years.
pub const MAX_DURATION_SECS: u64 = 10 * 365 * 24 * 3600;

/// Largest `dht.announce_concurrency`: announcements in flight at once.
pub const MAX_ANNOUNCE_CONCURRENCY: usize = 1024;
/// Largest `dht.max_provider_keys`.
pub const MAX_PROVIDER_KEYS_SETTING: usize = 10_000_000;
/// Largest `dht.max_providers_per_key`.
pub const MAX_PROVIDERS_PER_KEY_SETTING: usize = 10_000;
/// Smallest rate (MiB/s) or size (GiB) a setting may name: about a byte per second, or a
/// KiB (tests use tiny quotas).
pub const MIN_AMOUNT: f64 = 0.000_001;
/// Largest rate (MiB/s) or size (GiB) a setting may name.
pub const MAX_AMOUNT: f64 = 1_000_000.0;

/// Largest `relay.max_circuits`, `relay.max_circuits_per_peer` and `relay.max_reservations`.
pub const MAX_RELAY_COUNT_SETTING: usize = 100_000;
/// Largest `nat.relay_slots`.
pub const MAX_RELAY_SLOTS_SETTING: usize = 8;
/// Largest `nat.relays` list.
pub const MAX_RELAYS_SETTING: usize = 32;

/// File name looked for in the data dir when no `--config` is given.
pub const CONFIG_FILE: &str = "config.toml";

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid (the message names the line and key).
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong, and where.
        message: String,
    },
}

/// Largest file an HTTP request may make the node fetch, unless the config says otherwise.
pub const DEFAULT_FETCH_MISSING_MAX_BYTES: u64 = 16 << 30;

/// Where the HTTP gateway listens and what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayConfig {
    /// TCP address (keep it on loopback unless the node is meant to serve the world).
    pub listen: std::net::SocketAddr,
    /// Fetch data the node does not hold from the network before serving it.
    pub fetch_missing: bool,
    /// Largest file such a fetch may bring in (one fetch runs at a time; what it brings
    /// is unpinned, so the quota bounds the total).
    pub fetch_missing_max_bytes: u64,
}

/// The file's contents, as written.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// The data dir, when no `--data-dir` or `COMMONS_DATA_DIR` is given (read only from a
    /// file named with `--config`: the default file lives in the data dir).
    pub data_dir: Option<std::path::PathBuf>,
    /// Addresses to listen on.
    #[serde(default)]
    pub listen: Vec<Multiaddr>,
    /// Peers to join the network through.
    #[serde(default)]
    pub bootstrap: Vec<Multiaddr>,
    /// Addresses this node is reachable at from outside (port forwards, public IPs).
    #[serde(default)]
    pub external_addrs: Vec<Multiaddr>,
    /// Find peers on the local network with mDNS.
    #[serde(default)]
    pub mdns: bool,
    /// Use the bulk-data endpoint (default: yes).
    pub bulk: Option<bool>,
    /// Let the kernel segment and coalesce the bulk endpoint's datagrams (default: yes).
    pub bulk_offload: Option<bool>,
    /// DHT settings.
    #[serde(default)]
    pub dht: DhtSection,
    /// The HTTP gateway (off unless this table is present).
    pub gateway: Option<GatewaySection>,
    /// What this node keeps: the datasets it mirrors.
    #[serde(default)]
    pub mirror: MirrorSection,
    /// Upload and download rate limits.
    #[serde(default)]
    pub limits: LimitsSection,
    /// Disk budget.
    #[serde(default)]
    pub storage: StorageSection,
    /// The Prometheus metrics endpoint (off unless this table is present).
    pub metrics: Option<MetricsSection>,
    /// The trust policy: name pattern (`org/name`, `org/*`, `*`) → publisher key
    /// (`p256:<hex>` or `ed25519:<hex>`).
    #[serde(default)]
    pub trust: std::collections::BTreeMap<String, String>,
    /// Relaying for nodes behind NAT.
    #[serde(default)]
    pub relay: RelaySection,
    /// Reachability: AutoNAT, relay reservations, hole punching.
    #[serde(default)]
    pub nat: NatSection,
}

/// The `[relay]` table: whether this node relays for private nodes, and within what.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RelaySection {
    /// `true`: always; `false`: never; unset: once the node is reachable at a public
    /// address.
    pub enabled: Option<bool>,
    /// Bytes one circuit may carry, in MiB.
    pub max_circuit_mib: Option<f64>,
    /// Longest circuit, in seconds.
    pub max_circuit_secs: Option<u64>,
    /// Circuits at once.
    pub max_circuits: Option<usize>,
    /// Circuits at once per peer.
    pub max_circuits_per_peer: Option<usize>,
    /// Reservations at once.
    pub max_reservations: Option<usize>,
    /// Bytes all circuits may carry per hour, in GiB.
    pub budget_gib_per_hour: Option<f64>,
}

/// The `[nat]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NatSection {
    /// Relays to reserve slots on (each ending in `/p2p/<peer id>`).
    #[serde(default)]
    pub relays: Vec<Multiaddr>,
    /// Relays found through the DHT to hold slots on when private (default 2; 0: none).
    pub relay_slots: Option<usize>,
    /// Probe reachability with AutoNAT (default: yes).
    pub autonat: Option<bool>,
    /// Hole punching over relayed connections (default: yes).
    pub hole_punching: Option<bool>,
}

impl ConfigFile {
    /// The `[trust]` table as a policy.
    pub fn trust_policy(
        &self,
    ) -> Result<commons_protocol::provenance::TrustPolicy, commons_protocol::provenance::TrustError>
    {
        commons_protocol::provenance::TrustPolicy::from_rules(
            self.trust.iter().map(|(p, k)| (p.as_str(), k.as_str())),
        )
    }
}

/// The `[metrics]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// TCP address of `GET /metrics`, e.g. `127.0.0.1:9100`.
    pub listen: std::net::SocketAddr,
}

/// The `[storage]` table.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSection {
    /// Most GiB of data to keep; unpinned data is collected (least recently used first)
    /// to stay under it. Absent: no quota.
    pub quota_gib: Option<f64>,
}

impl StorageSection {
    /// The quota in bytes.
    pub fn quota_bytes(&self) -> Option<u64> {
        self.quota_gib
            .map(|g| (g * 1024.0 * 1024.0 * 1024.0) as u64)
    }
}

/// The `[limits]` table, in MiB/s (fractions allowed); absent means unlimited.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    /// All uploads together.
    pub upload_mib_per_sec: Option<f64>,
    /// Uploads to any one peer.
    pub upload_per_peer_mib_per_sec: Option<f64>,
    /// All downloads together.
    pub download_mib_per_sec: Option<f64>,
}

/// The `[gateway]` table.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySection {
    /// TCP address, e.g. `127.0.0.1:8080`.
    pub listen: std::net::SocketAddr,
    /// Fetch data this node does not hold from the network before serving it.
    #[serde(default)]
    pub fetch_missing: bool,
    /// Largest file (GiB) an HTTP request may make the node fetch (default 16).
    pub fetch_missing_max_gib: Option<f64>,
}

/// The `[mirror]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorSection {
    /// Datasets to fetch, keep (pinned) and announce.
    #[serde(default)]
    pub datasets: Vec<MirrorEntry>,
}

/// One dataset a mirror keeps: a hash or ticket, or a table that also names it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum MirrorEntry {
    /// `"<hash or ticket>"`.
    Target(String),
    /// `{ hf = "org/name", type = "model|dataset", revision = "main", origin = "https://…",
    /// token_file = "…", interval = 3600 }`: a Hub repository, imported and followed.
    Hub(HubSource),
    /// `{ follow = "org/name[@revision]", interval = 300 }`: a name signed by the publisher
    /// the trust policy names for it, resolved through the DHT; each new version is fetched
    /// as it is published, bound locally, and its record kept alive in the DHT.
    Follow(FollowEntry),
    /// `{ target = "<hash or ticket>", name = "org/name", revision = "main" }`.
    Named {
        /// Hash or ticket.
        target: String,
        /// The local name to bind once fetched.
        name: Option<commons_protocol::DatasetName>,
        /// The revision of that name (`main` unless given).
        revision: Option<String>,
    },
}

/// A followed name (see [`MirrorEntry::Follow`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FollowEntry {
    /// The name: `org/name[@revision]`, or `<publisher>/org/name[@revision]`.
    pub follow: String,
    /// Seconds between checks for a new version (default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<u64>,
}

impl MirrorEntry {
    /// The hash or ticket to fetch, or the Hub source's label (`hf://…@revision`): what
    /// names the entry in listings and `mirror rm`.
    pub fn target(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Self::Target(t) | Self::Named { target: t, .. } => std::borrow::Cow::Borrowed(t),
            Self::Hub(source) => std::borrow::Cow::Owned(source.label()),
            Self::Follow(f) => std::borrow::Cow::Borrowed(&f.follow),
        }
    }

    /// The name and revision to bind, if any.
    pub fn name(&self) -> Option<(&commons_protocol::DatasetName, &str)> {
        match self {
            Self::Named {
                name: Some(name),
                revision,
                ..
            } => Some((
                name,
                revision
                    .as_deref()
                    .unwrap_or(commons_protocol::name::DEFAULT_REVISION),
            )),
            _ => None,
        }
    }
}

/// A value the file's syntax allows but its meaning does not: which key, and what is wrong.
#[derive(Debug)]
struct BadValue {
    /// Dotted key: `dht.record_ttl_secs`, `mirror.datasets`.
    key: String,
    /// Text on the offending line, when the key spans several (an entry of a list).
    near: Option<String>,
    message: String,
}

impl BadValue {
    fn new(key: &str, message: String) -> Self {
        Self {
            key: key.into(),
            near: None,
            message,
        }
    }
}

/// The line (1-based) where `bad`'s key is set in `text`: the `key =` line inside its
/// table, or the first line from there holding `bad.near`.
fn line_of(text: &str, bad: &BadValue) -> Option<usize> {
    let (table, leaf) = bad.key.rsplit_once('.').unwrap_or(("", &bad.key));
    let mut current = "";
    let mut key_line = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if key_line.is_none() {
            if let Some(header) = line.strip_prefix('[') {
                current = header.trim_end_matches(']').trim();
                continue;
            }
            if current == table && line.split('=').next().map(str::trim) == Some(leaf) {
                key_line = Some(i + 1);
            }
        }
        if let Some(start) = key_line {
            match &bad.near {
                None => return Some(start),
                Some(needle) if raw.contains(needle.as_str()) => return Some(i + 1),
                Some(_) => {}
            }
        }
    }
    key_line
}

impl ConfigFile {
    /// The `[relay]` and `[nat]` tables' rules.
    fn check_reachability(&self) -> Result<(), BadValue> {
        let r = &self.relay;
        for (key, value) in [
            ("relay.max_circuits", r.max_circuits),
            ("relay.max_circuits_per_peer", r.max_circuits_per_peer),
            ("relay.max_reservations", r.max_reservations),
        ] {
            if value.is_some_and(|v| v == 0 || v > MAX_RELAY_COUNT_SETTING) {
                return Err(BadValue::new(
                    key,
                    format!("{key} must be between 1 and {MAX_RELAY_COUNT_SETTING}"),
                ));
            }
        }
        if r.max_circuit_secs
            .is_some_and(|v| v == 0 || v > MAX_DURATION_SECS)
        {
            return Err(BadValue::new(
                "relay.max_circuit_secs",
                format!("relay.max_circuit_secs must be between 1 and {MAX_DURATION_SECS}"),
            ));
        }
        for (key, value) in [
            ("relay.max_circuit_mib", r.max_circuit_mib),
            ("relay.budget_gib_per_hour", r.budget_gib_per_hour),
        ] {
            if value.is_some_and(|v| !(v.is_finite() && (MIN_AMOUNT..=MAX_AMOUNT).contains(&v))) {
                return Err(BadValue::new(
                    key,
                    format!("{key} must be a number between {MIN_AMOUNT} and {MAX_AMOUNT}"),
                ));
            }
        }
        let n = &self.nat;
        if n.relay_slots.is_some_and(|v| v > MAX_RELAY_SLOTS_SETTING) {
            return Err(BadValue::new(
                "nat.relay_slots",
                format!("nat.relay_slots must be at most {MAX_RELAY_SLOTS_SETTING}"),
            ));
        }
        if n.relays.len() > MAX_RELAYS_SETTING {
            return Err(BadValue::new(
                "nat.relays",
                format!("nat.relays may list at most {MAX_RELAYS_SETTING} relays"),
            ));
        }
        for relay in &n.relays {
            if !relay.to_string().contains("/p2p/") || relay.to_string().contains("/p2p-circuit") {
                return Err(BadValue {
                    key: "nat.relays".into(),
                    near: Some(relay.to_string()),
                    message: format!(
                        "nat.relays: {relay} must be a relay's address ending in /p2p/<peer id>"
                    ),
                });
            }
        }
        Ok(())
    }
}

/// The `[dht]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DhtSection {
    /// `auto`, `server` or `client`.
    pub mode: Option<DhtMode>,
    /// Lifetime of provider records this node stores for others, in seconds.
    pub record_ttl_secs: Option<u64>,
    /// How often each of this node's records is re-announced, in seconds.
    pub announce_interval_secs: Option<u64>,
    /// Announcements in flight at once.
    pub announce_concurrency: Option<usize>,
    /// Longest DHT lookup, in seconds.
    pub query_timeout_secs: Option<u64>,
    /// Keys with provider records kept for others, at most.
    pub max_provider_keys: Option<usize>,
    /// Providers kept per key, at most.
    pub max_providers_per_key: Option<usize>,
    /// How often known peers and records are saved, in seconds.
    pub save_interval_secs: Option<u64>,
}

impl ConfigFile {
    /// Parses TOML text; `path` is only for messages.
    pub fn parse(text: &str, path: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|e| ConfigError::Invalid {
            path: path.to_string(),
            message: e.to_string().trim_end().to_string(),
        })?;
        config.check().map_err(|bad| ConfigError::Invalid {
            path: path.to_string(),
            message: match line_of(text, &bad) {
                Some(line) => format!("line {line}, {}", bad.message),
                None => bad.message,
            },
        })?;
        Ok(config)
    }

    fn check(&self) -> Result<(), BadValue> {
        self.trust_policy().map_err(|e| BadValue {
            key: "trust".into(),
            near: None,
            message: e.to_string(),
        })?;
        let d = &self.dht;
        let positive = [
            ("dht.record_ttl_secs", d.record_ttl_secs),
            ("dht.announce_interval_secs", d.announce_interval_secs),
            ("dht.query_timeout_secs", d.query_timeout_secs),
            ("dht.save_interval_secs", d.save_interval_secs),
            (
                "dht.announce_concurrency",
                d.announce_concurrency.map(|n| n as u64),
            ),
            (
                "dht.max_provider_keys",
                d.max_provider_keys.map(|n| n as u64),
            ),
            (
                "dht.max_providers_per_key",
                d.max_providers_per_key.map(|n| n as u64),
            ),
        ];
        for (key, value) in positive {
            if value == Some(0) {
                return Err(BadValue::new(key, format!("{key} must be greater than 0")));
            }
        }
        // Counts that size tasks or tables: a typo of 2^64 must not be taken as asked.
        let counts = [
            (
                "dht.announce_concurrency",
                d.announce_concurrency,
                MAX_ANNOUNCE_CONCURRENCY,
            ),
            (
                "dht.max_provider_keys",
                d.max_provider_keys,
                MAX_PROVIDER_KEYS_SETTING,
            ),
            (
                "dht.max_providers_per_key",
                d.max_providers_per_key,
                MAX_PROVIDERS_PER_KEY_SETTING,
            ),
        ];
        for (key, value, max) in counts {
            if value.is_some_and(|v| v > max) {
                return Err(BadValue::new(key, format!("{key} must be at most {max}")));
            }
        }
        // Times are added to clocks: past about ten years they would overflow them.
        let durations = [
            ("dht.record_ttl_secs", d.record_ttl_secs),
            ("dht.announce_interval_secs", d.announce_interval_secs),
            ("dht.query_timeout_secs", d.query_timeout_secs),
            ("dht.save_interval_secs", d.save_interval_secs),
        ];
        for (key, value) in durations {
            if value.is_some_and(|v| v > MAX_DURATION_SECS) {
                return Err(BadValue::new(
                    key,
                    format!("{key} must be at most {MAX_DURATION_SECS} (ten years)"),
                ));
            }
        }
        let (default_ttl, default_every) = default_ttl_and_interval_secs();
        let ttl = d.record_ttl_secs.unwrap_or(default_ttl);
        let every = d.announce_interval_secs.unwrap_or(default_every);
        if every >= ttl {
            return Err(BadValue::new(
                "dht.announce_interval_secs",
                format!("dht.announce_interval_secs ({every}) must be shorter than dht.record_ttl_secs ({ttl}), or records lapse between announcements"),
            ));
        }
        self.check_reachability()?;
        let l = &self.limits;
        for (key, value) in [
            ("limits.upload_mib_per_sec", l.upload_mib_per_sec),
            (
                "limits.upload_per_peer_mib_per_sec",
                l.upload_per_peer_mib_per_sec,
            ),
            ("limits.download_mib_per_sec", l.download_mib_per_sec),
            ("storage.quota_gib", self.storage.quota_gib),
            (
                "gateway.fetch_missing_max_gib",
                self.gateway.as_ref().and_then(|g| g.fetch_missing_max_gib),
            ),
        ] {
            if value.is_some_and(|v| !(v.is_finite() && v > 0.0)) {
                return Err(BadValue::new(
                    key,
                    format!("{key} must be a positive number (leave it out for no limit)"),
                ));
            }
            // Rates in MiB/s and sizes in GiB alike: below a millionth nothing would move
            // (under a byte per second), above a million it is a typo.
            if value.is_some_and(|v| !(MIN_AMOUNT..=MAX_AMOUNT).contains(&v)) {
                return Err(BadValue::new(
                    key,
                    format!(
                        "{key} must be between {MIN_AMOUNT} and {MAX_AMOUNT} (leave it out for no limit)"
                    ),
                ));
            }
        }
        for (i, entry) in self.mirror.datasets.iter().enumerate() {
            let target = entry.target();
            let bad = |message: String| BadValue {
                key: "mirror.datasets".into(),
                near: Some(target.to_string()),
                message,
            };
            if let MirrorEntry::Hub(source) = entry {
                source
                    .check()
                    .map_err(|e| bad(format!("mirror.datasets[{i}]: {e}")))?;
                continue;
            }
            if let MirrorEntry::Follow(FollowEntry { follow, interval }) = entry {
                // `<publisher>/org/name` names its publisher itself.
                let (publisher, name) = match follow.split_once('/') {
                    Some((first, rest)) if rest.contains('/') => (Some(first), rest),
                    _ => (None, follow.as_str()),
                };
                let name = commons_protocol::NameRef::parse(name)
                    .map_err(|e| bad(format!("mirror.datasets[{i}]: {e}")))?;
                if interval == &Some(0) {
                    return Err(bad(format!(
                        "mirror.datasets[{i}]: interval must be above 0"
                    )));
                }
                if publisher.is_some() {
                    continue;
                }
                let policy = self.trust_policy().map_err(|e| bad(e.to_string()))?;
                if policy.publisher_of(&name.name).is_none() {
                    return Err(bad(format!(
                        "mirror.datasets[{i}]: following {follow} needs a [trust] rule naming \
                         its publisher (e.g. \"{}/*\" = \"p256:…\")",
                        name.name.as_str().split('/').next().unwrap_or_default()
                    )));
                }
                continue;
            }
            if target.trim().parse::<commons_protocol::Hash>().is_err()
                && target.trim().parse::<commons_protocol::Ticket>().is_err()
                && commons_protocol::NameRef::parse(&target).is_err()
            {
                return Err(bad(format!(
                    "mirror.datasets[{i}]: {target:?} is neither a hash, a ticket (commons1…) nor a name (org/name)"
                )));
            }
            if let Some((_, revision)) = entry.name() {
                commons_protocol::name::check_revision(revision)
                    .map_err(|e| bad(format!("mirror.datasets[{i}].revision: {e}")))?;
            }
        }
        Ok(())
    }
}

/// The `config` fuzz target's property, for one input (TOML text): what parses holds only
/// values within their documented bounds (the counts, durations, rates and sizes of the
/// constants above), and re-serializes (as JSON: the TOML crate here only parses) to the
/// same values, which pass the checks again.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn fuzz_property(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = ConfigFile::parse(text, "fuzz.toml") else {
        return;
    };
    assert_eq!(
        ConfigFile::parse(text, "fuzz.toml").ok().as_ref(),
        Some(&config),
        "parsing is repeatable"
    );
    let d = &config.dht;
    for secs in [
        d.record_ttl_secs,
        d.announce_interval_secs,
        d.query_timeout_secs,
        d.save_interval_secs,
    ]
    .into_iter()
    .flatten()
    {
        assert!((1..=MAX_DURATION_SECS).contains(&secs), "{secs} s accepted");
    }
    for (count, max) in [
        (d.announce_concurrency, MAX_ANNOUNCE_CONCURRENCY),
        (d.max_provider_keys, MAX_PROVIDER_KEYS_SETTING),
        (d.max_providers_per_key, MAX_PROVIDERS_PER_KEY_SETTING),
    ] {
        if let Some(count) = count {
            assert!((1..=max).contains(&count), "a count of {count} accepted");
        }
    }
    let (default_ttl, default_every) = default_ttl_and_interval_secs();
    assert!(
        d.announce_interval_secs.unwrap_or(default_every)
            < d.record_ttl_secs.unwrap_or(default_ttl),
        "records would lapse between announcements"
    );
    for amount in amounts(&config).into_iter().flatten() {
        assert!(
            amount.is_finite() && (MIN_AMOUNT..=MAX_AMOUNT).contains(&amount),
            "an amount of {amount} accepted"
        );
    }
    if let Some(bytes) = config.storage.quota_bytes() {
        assert!(
            bytes > 0 && bytes as f64 <= MAX_AMOUNT * f64::from(1u32 << 30),
            "a quota of {bytes} bytes"
        );
    }
    assert!(config.trust_policy().is_ok());
    for entry in &config.mirror.datasets {
        if let MirrorEntry::Hub(source) = entry {
            assert_eq!(source.check(), Ok(()));
        }
        if let Some((_, revision)) = entry.name() {
            assert!(commons_protocol::name::check_revision(revision).is_ok());
        }
    }
    let json = serde_json::to_string(&config).expect("a parsed config serializes");
    let mut again: ConfigFile =
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("{json} does not parse back: {e}"));
    // JSON may round a float's last bit: within that, the amounts must agree.
    let (was, now) = (amounts(&config), amounts(&again));
    for (a, b) in was.iter().zip(&now) {
        match (a, b) {
            (Some(a), Some(b)) => assert!((a - b).abs() <= a.abs() * 1e-15, "{a} became {b}"),
            _ => assert_eq!(a, b),
        }
    }
    set_amounts(&mut again, was);
    assert_eq!(again, config, "re-serialized as {json}");
    assert!(
        again.check().is_ok(),
        "the same values pass the checks again"
    );
}

/// The file's amounts (rates in MiB/s, sizes in GiB), in a fixed order.
#[cfg_attr(not(test), allow(dead_code))]
fn amounts(config: &ConfigFile) -> [Option<f64>; 5] {
    let l = &config.limits;
    [
        l.upload_mib_per_sec,
        l.upload_per_peer_mib_per_sec,
        l.download_mib_per_sec,
        config.storage.quota_gib,
        config
            .gateway
            .as_ref()
            .and_then(|g| g.fetch_missing_max_gib),
    ]
}

/// Sets the file's amounts, in the order of [`amounts`].
#[cfg_attr(not(test), allow(dead_code))]
fn set_amounts(config: &mut ConfigFile, [up, per_peer, down, quota, fetch]: [Option<f64>; 5]) {
    let l = &mut config.limits;
    (l.upload_mib_per_sec, l.upload_per_peer_mib_per_sec) = (up, per_peer);
    l.download_mib_per_sec = down;
    config.storage.quota_gib = quota;
    if let Some(g) = config.gateway.as_mut() {
        g.fetch_missing_max_gib = fetch;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fuzz_corpus_replays_clean() {
        super::super::replay_fuzz_corpus("config", fuzz_property);
    }
}
