//! The node's configuration file (TOML): where it listens, how it joins the network.
//!
//! Read from `--config <file>`, else `<data dir>/config.toml` if present. Every key is
//! optional; unknown keys are errors, so a typo is reported (with its line) rather than
//! silently ignored. See `docs/config.md` for a commented example.

use std::{path::Path, time::Duration};

use libp2p::Multiaddr;
use serde::Deserialize;

use crate::discovery::{DhtMode, DiscoveryConfig, ProviderLimits};

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
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// TCP address of `GET /metrics`, e.g. `127.0.0.1:9100`.
    pub listen: std::net::SocketAddr,
}

/// The `[storage]` table.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
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
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Deserialize)]
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
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorSection {
    /// Datasets to fetch, keep (pinned) and announce.
    #[serde(default)]
    pub datasets: Vec<MirrorEntry>,
}

/// One dataset a mirror keeps: a hash or ticket, or a table that also names it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(untagged)]
pub enum MirrorEntry {
    /// `"<hash or ticket>"`.
    Target(String),
    /// `{ hf = "org/name", type = "model|dataset", revision = "main", origin = "https://…",
    /// token_file = "…", interval = 3600 }`: a Hub repository, imported and followed.
    Hub(crate::origin::source::HubSource),
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
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
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

/// The `[dht]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
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

    /// Reads `explicit` if given (it must exist), else `<data_dir>/config.toml` if it
    /// exists, else the defaults.
    pub fn load(explicit: Option<&Path>, data_dir: &Path) -> Result<Self, ConfigError> {
        let implicit = data_dir.join(CONFIG_FILE);
        let path = match explicit {
            Some(p) => p.to_path_buf(),
            None if implicit.exists() => implicit,
            None => return Ok(Self::default()),
        };
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
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
        let ttl = d
            .record_ttl_secs
            .unwrap_or(DiscoveryConfig::default().record_ttl.as_secs());
        let every = d
            .announce_interval_secs
            .unwrap_or(DiscoveryConfig::default().announce_interval.as_secs());
        if every >= ttl {
            return Err(BadValue::new(
                "dht.announce_interval_secs",
                format!("dht.announce_interval_secs ({every}) must be shorter than dht.record_ttl_secs ({ttl}), or records lapse between announcements"),
            ));
        }
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

    /// The transfer rate limits the file sets.
    pub fn transfer_limits(&self) -> crate::transfer::TransferLimits {
        let l = &self.limits;
        let bytes = |v: Option<f64>| v.map(crate::transfer::mib_per_sec);
        crate::transfer::TransferLimits::new(
            bytes(l.upload_mib_per_sec),
            bytes(l.upload_per_peer_mib_per_sec),
            bytes(l.download_mib_per_sec),
        )
    }

    /// The discovery settings: defaults, overridden by the file.
    pub fn discovery(&self) -> DiscoveryConfig {
        let d = &self.dht;
        let defaults = DiscoveryConfig::default();
        let secs = |v: Option<u64>, default: Duration| v.map_or(default, Duration::from_secs);
        DiscoveryConfig {
            mode: d.mode.unwrap_or(defaults.mode),
            bootstrap: self.bootstrap.clone(),
            external_addrs: self.external_addrs.clone(),
            record_ttl: secs(d.record_ttl_secs, defaults.record_ttl),
            announce_interval: secs(d.announce_interval_secs, defaults.announce_interval),
            announce_concurrency: d
                .announce_concurrency
                .unwrap_or(defaults.announce_concurrency),
            query_timeout: secs(d.query_timeout_secs, defaults.query_timeout),
            limits: ProviderLimits {
                max_keys: d.max_provider_keys.unwrap_or(defaults.limits.max_keys),
                max_providers_per_key: d
                    .max_providers_per_key
                    .unwrap_or(defaults.limits.max_providers_per_key),
                ..defaults.limits
            },
            save_interval: secs(d.save_interval_secs, defaults.save_interval),
            mdns: self.mdns,
            bulk: self.bulk.unwrap_or(defaults.bulk),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_file_parses_into_discovery_settings() {
        let text = r#"
listen = ["/ip4/127.0.0.1/udp/0/quic-v1"]
bootstrap = ["/ip4/127.0.0.1/udp/4433/quic-v1"]
[dht]
mode = "server"
record_ttl_secs = 10
announce_interval_secs = 3
max_providers_per_key = 5
"#;
        let config = ConfigFile::parse(text, "test.toml").expect("parses");
        let d = config.discovery();
        assert_eq!(d.mode, DhtMode::Server);
        assert_eq!(d.record_ttl, Duration::from_secs(10));
        assert_eq!(d.announce_interval, Duration::from_secs(3));
        assert_eq!(d.limits.max_providers_per_key, 5);
        assert_eq!(d.bootstrap.len(), 1);
        assert_eq!(config.listen.len(), 1);
    }

    #[test]
    fn mirror_and_gateway_tables_parse_and_bad_entries_are_named() {
        let hash = commons_protocol::Hash::of(b"dataset");
        let text = format!(
            "[gateway]\nlisten = \"127.0.0.1:8080\"\nfetch_missing = true\n[mirror]\ndatasets = [\"{hash}\", {{ target = \"{hash}\", name = \"org/data\" }}]\n"
        );
        let config = ConfigFile::parse(&text, "m.toml").expect("parses");
        let gateway = config.gateway.expect("gateway");
        assert!(gateway.fetch_missing);
        assert_eq!(gateway.listen.port(), 8080);
        assert_eq!(config.mirror.datasets.len(), 2);
        assert_eq!(config.mirror.datasets[0].target(), hash.to_string());
        let (name, revision) = config.mirror.datasets[1].name().expect("named");
        assert_eq!((name.as_str(), revision), ("org/data", "main"));

        let err = ConfigFile::parse(
            &format!("[mirror]\ndatasets = [\n  \"{hash}\",\n  \"not-a-hash\",\n]\n"),
            "m.toml",
        )
        .expect_err("bad target");
        let text = err.to_string();
        assert!(
            text.contains("mirror.datasets[1]") && text.contains("line 4"),
            "{text}"
        );
        let err = ConfigFile::parse("listen = []\n[limits]\nupload_mib_per_sec = 0\n", "m.toml")
            .expect_err("a zero limit");
        let text = err.to_string();
        assert!(
            text.contains("limits.upload_mib_per_sec") && text.contains("line 3"),
            "{text}"
        );
        let err = ConfigFile::parse("[gateway]\nlisten = \"nowhere\"\n", "m.toml")
            .expect_err("bad address");
        assert!(err.to_string().contains("line 2"), "{err}");
        let err = ConfigFile::parse(
            &format!("[mirror]\ndatasets = [{{ target = \"{hash}\", name = \"../x\" }}]\n"),
            "m.toml",
        )
        .expect_err("bad name");
        assert!(err.to_string().contains("line 2"), "{err}");
    }

    #[test]
    fn errors_name_the_line_and_the_key() {
        let err = ConfigFile::parse("listen = []\n[dht]\nmoed = \"server\"\n", "c.toml")
            .expect_err("unknown key");
        let text = err.to_string();
        assert!(
            text.contains("c.toml") && text.contains("line 3") && text.contains("moed"),
            "{text}"
        );
        let err = ConfigFile::parse("bootstrap = [\"not an address\"]\n", "c.toml")
            .expect_err("bad multiaddr");
        assert!(err.to_string().contains("line 1"), "{err}");
        let err = ConfigFile::parse(
            "[dht]\nrecord_ttl_secs = 5\nannounce_interval_secs = 9\n",
            "c.toml",
        )
        .expect_err("interval beyond ttl");
        let text = err.to_string();
        assert!(
            text.contains("line 3") && text.contains("announce_interval_secs"),
            "{text}"
        );
        let err = ConfigFile::parse("[dht]\nrecord_ttl_secs = 9223372036854775807\n", "c.toml")
            .expect_err("a duration no clock can hold");
        assert!(err.to_string().contains("at most"), "{err}");
    }

    #[test]
    fn the_documented_example_parses() {
        let doc = include_str!("../../docs/config.md");
        let start = doc.find("```toml\n").expect("a toml block") + "```toml\n".len();
        let end = start + doc[start..].find("```").expect("its end");
        let config = ConfigFile::parse(&doc[start..end], "docs/config.md").expect("parses");
        assert_eq!(
            config.discovery().record_ttl,
            DiscoveryConfig::default().record_ttl
        );
        assert_eq!(config.bootstrap.len(), 1);
        assert_eq!(config.mirror.datasets.len(), 3);
        assert!(config.mirror.datasets[1].name().is_some());
        assert!(matches!(
            &config.mirror.datasets[2],
            MirrorEntry::Hub(s) if s.hf == "bigscience/bloom-560m" && s.interval == Some(3600)
        ));
        assert_eq!(config.storage.quota_bytes(), Some(500 << 30));
        assert_eq!(config.limits.upload_per_peer_mib_per_sec, Some(20.0));
        assert!(config.gateway.is_some() && config.metrics.is_some());
    }

    #[test]
    fn a_missing_implicit_file_means_defaults_but_a_missing_explicit_one_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(
            ConfigFile::load(None, dir.path()).expect("defaults"),
            ConfigFile::default()
        );
        assert!(ConfigFile::load(Some(&dir.path().join("nope.toml")), dir.path()).is_err());
    }

    #[test]
    fn absurd_amounts_and_counts_are_refused_with_their_key() {
        for (text, key) in [
            (
                "[dht]\nannounce_concurrency = 18446744073709551615\n",
                "dht.announce_concurrency",
            ),
            ("[storage]\nquota_gib = 1e308\n", "storage.quota_gib"),
            (
                "[limits]\nupload_mib_per_sec = 1e-300\n",
                "limits.upload_mib_per_sec",
            ),
            (
                "[dht]\nmax_providers_per_key = 99999999\n",
                "dht.max_providers_per_key",
            ),
        ] {
            let err = ConfigFile::parse(text, "test.toml").expect_err(text);
            assert!(err.to_string().contains(key), "{text}: {err}");
        }
        ConfigFile::parse(
            "[storage]\nquota_gib = 2000\n[limits]\nupload_mib_per_sec = 0.5\n",
            "ok.toml",
        )
        .expect("ordinary values pass");
    }
}
