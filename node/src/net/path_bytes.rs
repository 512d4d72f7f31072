//! Bytes over direct and over relayed connections, for `node status`, `node stats` and the
//! metrics.
//!
//! A stream cannot tell which connection carries it (libp2p-stream picks one), but the
//! transport can: libp2p-metrics wraps every connection's muxer and counts its substreams'
//! bytes under the connection's protocol stack. That crate is used rather than a muxer
//! wrapper of our own; its counters are private, so they are read back from their
//! OpenMetrics text. A relayed connection's stack holds `p2p-circuit` when dialled and is
//! bare `/p2p` when accepted (the relay client names the far end by its id only).
//!
//! A relayed connection's bytes also cross the direct connection to the relay, inside it;
//! they are counted once, as relayed (see [`PathBytes::from_openmetrics`]). The family's name
//! is checked end to end by `node/tests/relay.rs`, which needs relayed bytes counted.

use prometheus_client::{encoding::text::encode, registry::Registry};
use serde::{Deserialize, Serialize};

/// The family libp2p-metrics registers (prefix `libp2p`, name `bandwidth`, unit bytes).
const FAMILY: &str = "libp2p_bandwidth_bytes_total{";

/// Bytes sent and received since start, by path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathBytes {
    /// Sent over direct connections (not counting relayed connections' data inside them).
    pub direct_sent: u64,
    /// Received over direct connections (likewise).
    pub direct_received: u64,
    /// Sent over connections through a relay.
    pub relayed_sent: u64,
    /// Received over connections through a relay.
    pub relayed_received: u64,
}

impl PathBytes {
    /// Sums libp2p-metrics' counters in `text` by path. Direct totals have the relayed
    /// ones taken off: those bytes crossed a direct connection to the relay too.
    pub fn from_openmetrics(text: &str) -> Self {
        let (mut direct, mut relayed) = ([0u64; 2], [0u64; 2]);
        for line in text.lines() {
            let Some(rest) = line.strip_prefix(FAMILY) else {
                continue;
            };
            let Some((labels, value)) = rest.split_once("} ") else {
                continue;
            };
            let Ok(value) = value.trim().parse::<u64>() else {
                continue;
            };
            let Some(protocols) = label(labels, "protocols") else {
                continue;
            };
            let slot = match label(labels, "direction") {
                Some("Outbound") => 0,
                Some("Inbound") => 1,
                _ => continue,
            };
            let path = if is_relayed_stack(protocols) {
                &mut relayed
            } else {
                &mut direct
            };
            path[slot] = path[slot].saturating_add(value);
        }
        Self {
            direct_sent: direct[0].saturating_sub(relayed[0]),
            direct_received: direct[1].saturating_sub(relayed[1]),
            relayed_sent: relayed[0],
            relayed_received: relayed[1],
        }
    }
}

/// Whether a protocol stack (`/ip4/udp/quic-v1`, `/ip4/udp/quic-v1/p2p/p2p-circuit/p2p`,
/// `/p2p`) is a relayed connection's: a circuit, or one accepted through a relay, whose
/// stack has no address of its own.
fn is_relayed_stack(protocols: &str) -> bool {
    protocols.split('/').any(|p| p == "p2p-circuit")
        || !["/ip4/", "/ip6/", "/dns"]
            .iter()
            .any(|start| protocols.starts_with(start))
}

/// The value of label `name` in `a="x",b="y"` (values here never hold quotes).
fn label<'a>(labels: &'a str, name: &str) -> Option<&'a str> {
    labels.split(',').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == name).then(|| value.trim_matches('"'))
    })
}

/// The registry the transport's byte counters live in; read with [`Self::read`].
#[derive(Default)]
pub(super) struct PathMeter {
    pub(super) registry: Registry,
}

impl PathMeter {
    /// The counters now.
    pub(super) fn read(&self) -> PathBytes {
        let mut text = String::new();
        if encode(&mut text, &self.registry).is_err() {
            return PathBytes::default();
        }
        PathBytes::from_openmetrics(&text)
    }
}

impl std::fmt::Debug for PathMeter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PathMeter").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_summed_by_path_and_relayed_bytes_come_off_the_direct_ones() {
        let text = "\
# TYPE libp2p_bandwidth_bytes counter
libp2p_bandwidth_bytes_total{protocols=\"/ip4/udp/quic-v1\",direction=\"Outbound\"} 1000
libp2p_bandwidth_bytes_total{protocols=\"/ip4/udp/quic-v1\",direction=\"Inbound\"} 5000
libp2p_bandwidth_bytes_total{protocols=\"/ip6/tcp\",direction=\"Inbound\"} 500
libp2p_bandwidth_bytes_total{protocols=\"/ip4/udp/quic-v1/p2p/p2p-circuit/p2p\",direction=\"Outbound\"} 100
libp2p_bandwidth_bytes_total{protocols=\"/p2p\",direction=\"Inbound\"} 2000
libp2p_bandwidth_bytes_total{protocols=\"/p2p\",direction=\"sideways\"} 7
commons_other_total{protocols=\"/p2p\",direction=\"Inbound\"} 9
# EOF
";
        assert_eq!(
            PathBytes::from_openmetrics(text),
            PathBytes {
                direct_sent: 900,
                direct_received: 3500,
                relayed_sent: 100,
                relayed_received: 2000,
            }
        );
    }

    #[test]
    fn garbage_counts_nothing_and_never_underflows() {
        let text = "libp2p_bandwidth_bytes_total{protocols=\"/p2p\",direction=\"Inbound\"} 10\n\
                    libp2p_bandwidth_bytes_total{protocols=\"/ip4\" 5\n\
                    libp2p_bandwidth_bytes_total{direction=\"Inbound\"} 5\n\
                    libp2p_bandwidth_bytes_total{protocols=\"/ip4\",direction=\"Inbound\"} x\n";
        let bytes = PathBytes::from_openmetrics(text);
        assert_eq!(bytes.relayed_received, 10);
        assert_eq!(bytes.direct_received, 0);
    }
}
