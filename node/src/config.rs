//! The node's configuration file (TOML): where it listens, how it joins the network.
//!
//! Read from `--config <file>`, else `<data dir>/config.toml` if present. Every key is
//! optional; unknown keys are errors, so a typo is reported (with its line) rather than
//! silently ignored. See `docs/config.md` for a commented example. The file's contents and
//! their rules are in [`file`] (pure, shared with the `config` fuzz target); this module
//! reads it from disk and turns it into the node's settings.

use std::{path::Path, time::Duration};

// What `file` takes from the rest of the node (the fuzz target gives its own).
use crate::{
    discovery::{default_ttl_and_interval_secs, DhtMode},
    origin::source::HubSource,
};
use libp2p::Multiaddr;

use crate::{
    discovery::{DiscoveryConfig, ProviderLimits},
    net::relay::{NatConfig, RelayConfig},
};

mod file;

pub use file::*;

impl ConfigFile {
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
            bulk_offload: self.bulk_offload.unwrap_or(defaults.bulk_offload),
            relay: self.relay_config(),
            nat: self.nat_config(),
            ..defaults
        }
    }

    /// The `[relay]` settings: defaults, overridden by the file.
    pub fn relay_config(&self) -> RelayConfig {
        let r = &self.relay;
        let d = RelayConfig::default();
        let bytes = |v: Option<f64>, unit: f64, default: u64| {
            v.map_or(default, |v| (v * unit).round().max(1.0) as u64)
        };
        RelayConfig {
            enabled: r.enabled,
            max_circuit_bytes: bytes(r.max_circuit_mib, 1048576.0, d.max_circuit_bytes),
            max_circuit_duration: r
                .max_circuit_secs
                .map_or(d.max_circuit_duration, Duration::from_secs),
            max_circuits: r.max_circuits.unwrap_or(d.max_circuits),
            max_circuits_per_peer: r.max_circuits_per_peer.unwrap_or(d.max_circuits_per_peer),
            max_reservations: r.max_reservations.unwrap_or(d.max_reservations),
            budget_bytes_per_hour: bytes(
                r.budget_gib_per_hour,
                1073741824.0,
                d.budget_bytes_per_hour,
            ),
        }
    }

    /// The `[nat]` settings: defaults, overridden by the file.
    pub fn nat_config(&self) -> NatConfig {
        let n = &self.nat;
        let d = NatConfig::default();
        NatConfig {
            relays: n.relays.clone(),
            relay_slots: n.relay_slots.unwrap_or(d.relay_slots),
            autonat: n.autonat.unwrap_or(d.autonat),
            hole_punching: n.hole_punching.unwrap_or(d.hole_punching),
        }
    }
}

/// Replays the committed corpus of one of the node's fuzz targets (`fuzz/corpus/<target>/`)
/// through its property, so a crash once found stays fixed without a fuzzer in CI. The
/// protocol crate's targets are replayed by `commons_protocol::fuzzing`.
#[cfg(test)]
pub(crate) fn replay_fuzz_corpus(target: &str, check: fn(&[u8])) {
    // Read at run time: it names this checkout even when the test binary was built from
    // another one sharing the target dir.
    let crate_dir = std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(
        || env!("CARGO_MANIFEST_DIR").into(),
        std::path::PathBuf::from,
    );
    let dir = crate_dir.join("../fuzz/corpus").join(target);
    let entries =
        std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()));
    let mut inputs = 0;
    for entry in entries {
        let path = entry.expect("corpus entry").path();
        // A fuzzer running beside the tests may have just removed it (reduced).
        match std::fs::read(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            read => check(&read.expect("corpus file")),
        }
        inputs += 1;
    }
    assert!(inputs > 0, "the corpus of {target} is empty");
    assert!(
        crate_dir
            .join(format!("../fuzz/fuzz_targets/{target}.rs"))
            .exists(),
        "{target} has a fuzz target"
    );
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
    fn relay_and_nat_tables_parse_into_settings_and_bad_values_are_named() {
        let relay = "/ip4/192.0.2.1/udp/4433/quic-v1/p2p/12D3KooWLRPJAA5o6ADKfzEXu2Mxv1qsPAnvTCtkJGEJ6S8CuXAH";
        let text = format!(
            "[relay]\nenabled = true\nmax_circuit_mib = 64\nmax_circuit_secs = 600\nmax_circuits = 8\nbudget_gib_per_hour = 2\n[nat]\nrelays = [\"{relay}\"]\nrelay_slots = 1\nhole_punching = false\n"
        );
        let d = ConfigFile::parse(&text, "r.toml")
            .expect("parses")
            .discovery();
        assert_eq!(d.relay.enabled, Some(true));
        assert_eq!(d.relay.max_circuit_bytes, 64 << 20);
        assert_eq!(d.relay.max_circuit_duration, Duration::from_secs(600));
        assert_eq!(d.relay.max_circuits, 8);
        assert_eq!(d.relay.budget_bytes_per_hour, 2 << 30);
        assert_eq!(d.nat.relays.len(), 1);
        assert_eq!(d.nat.relay_slots, 1);
        assert!(d.nat.autonat && !d.nat.hole_punching);
        let defaults = ConfigFile::default().discovery();
        assert_eq!(defaults.relay, RelayConfig::default());
        assert_eq!(defaults.nat, NatConfig::default());

        for (text, key) in [
            ("[relay]\nmax_circuits = 0\n", "relay.max_circuits"),
            ("[relay]\nmax_circuit_mib = -1\n", "relay.max_circuit_mib"),
            (
                "[relay]\nbudget_gib_per_hour = inf\n",
                "relay.budget_gib_per_hour",
            ),
            ("[relay]\nmax_circuit_secs = 0\n", "relay.max_circuit_secs"),
            ("[nat]\nrelay_slots = 99\n", "nat.relay_slots"),
            (
                "[nat]\nrelays = [\"/ip4/192.0.2.1/udp/1/quic-v1\"]\n",
                "nat.relays",
            ),
        ] {
            let err = ConfigFile::parse(text, "r.toml")
                .expect_err(key)
                .to_string();
            assert!(err.contains(key) && err.contains("line"), "{key}: {err}");
        }
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
