//! The Prometheus metrics endpoint (`GET /metrics` on `[metrics] listen`): the node's status
//! in the text exposition format, read fresh at each scrape.

use axum::{extract::State, http::header, response::IntoResponse, routing::get, Router};
use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, gauge::Gauge},
    registry::Registry,
};

use crate::{
    node::Node,
    status::{self, NodeStatus},
};

/// Serves `/metrics` on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, node: Node) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(scrape))
        .with_state(node);
    axum::serve(listener, app).await
}

async fn scrape(State(node): State<Node>) -> impl IntoResponse {
    match status::snapshot(&node).await {
        Ok(s) => (
            axum::http::StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            render(&s),
        ),
        Err(e) => (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("cannot read the node's status: {e}\n"),
        ),
    }
}

/// The status as OpenMetrics text.
pub fn render(s: &NodeStatus) -> String {
    let mut registry = Registry::with_prefix("commons");
    let counters = [
        (
            "served_bytes",
            "Response bytes served to peers",
            s.bytes_served,
        ),
        (
            "fetched_bytes",
            "Response bytes fetched from peers",
            s.bytes_fetched,
        ),
        (
            "requests_served",
            "Requests peers made to this node",
            s.requests_served,
        ),
        (
            "bad_responses",
            "Responses from peers that failed verification",
            s.bad_responses,
        ),
        (
            "gateway_responses",
            "Responses with data the HTTP gateway sent",
            s.gateway_responses,
        ),
        (
            "gateway_bytes",
            "Body bytes the HTTP gateway sent",
            s.gateway_bytes,
        ),
        (
            "direct_connections",
            "Direct connections established",
            s.nat.counters.direct_connections,
        ),
        (
            "relayed_connections",
            "Connections established through a relay",
            s.nat.counters.relayed_connections,
        ),
        (
            "hole_punches_succeeded",
            "Hole punches that made a direct connection",
            s.nat.counters.punches_succeeded,
        ),
        (
            "hole_punches_failed",
            "Hole punches that failed",
            s.nat.counters.punches_failed,
        ),
        (
            "direct_sent_bytes",
            "Bytes sent over direct libp2p connections",
            s.nat.counters.bytes.direct_sent,
        ),
        (
            "direct_received_bytes",
            "Bytes received over direct libp2p connections",
            s.nat.counters.bytes.direct_received,
        ),
        (
            "relayed_sent_bytes",
            "Bytes sent over connections through a relay",
            s.nat.counters.bytes.relayed_sent,
        ),
        (
            "relayed_received_bytes",
            "Bytes received over connections through a relay",
            s.nat.counters.bytes.relayed_received,
        ),
    ];
    for (name, help, value) in counters {
        let counter: Counter<u64> = Counter::default();
        counter.inc_by(value);
        registry.register(name, help, counter);
    }
    let gauges = [
        (
            "connected_peers",
            "Peers with an open connection",
            s.connected_peers,
        ),
        (
            "routing_table_peers",
            "Peers in the DHT routing table",
            s.routing_table,
        ),
        ("datasets", "Datasets stored", s.datasets),
        ("blobs", "Blobs stored", s.blobs),
        ("complete_blobs", "Complete blobs stored", s.complete_blobs),
        ("pinned", "Pinned datasets and blobs", s.pinned),
        (
            "stored_bytes",
            "Bytes of stored blobs (what the quota counts)",
            s.stored_bytes,
        ),
        (
            "disk_bytes",
            "Bytes the store's files take on disk",
            s.disk_bytes,
        ),
        (
            "quota_bytes",
            "The storage quota (0: none)",
            s.quota_bytes.unwrap_or(0),
        ),
        (
            "uptime_seconds",
            "Seconds since the node started",
            s.uptime_secs,
        ),
        (
            "publicly_reachable",
            "1 if AutoNAT confirmed a public address, else 0",
            u64::from(s.nat.reachability == crate::net::reachability::Reachability::Public),
        ),
        (
            "relay_reservations",
            "Reservations other nodes hold on this relay",
            s.nat.relay_reservations,
        ),
        (
            "relay_circuits",
            "Circuits this relay carries",
            s.nat.relay_circuits,
        ),
    ];
    for (name, help, value) in gauges {
        let gauge: Gauge<i64> = Gauge::default();
        gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
        registry.register(name, help, gauge);
    }
    let mut out = String::new();
    if encode(&mut out, &registry).is_err() {
        out = "# the metrics could not be encoded\n".into();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_renders_as_openmetrics() {
        let status = NodeStatus {
            peer_id: "p".into(),
            dht_mode: "server".into(),
            connected_peers: 3,
            routing_table: 7,
            datasets: 2,
            blobs: 9,
            complete_blobs: 8,
            pinned: 2,
            bytes_served: 1234,
            bytes_fetched: 99,
            requests_served: 5,
            bad_responses: 1,
            stored_bytes: 4096,
            disk_bytes: 5000,
            quota_bytes: Some(1 << 30),
            gateway: None,
            uptime_secs: 60,
            gateway_responses: 4,
            gateway_bytes: 777,
            mirror: Vec::new(),
            nat: crate::net::NatStatus {
                counters: crate::net::NatCounters {
                    relayed_connections: 2,
                    bytes: crate::net::path_bytes::PathBytes {
                        relayed_received: 4242,
                        ..Default::default()
                    },
                    ..Default::default()
                },
                ..Default::default()
            },
        };
        let text = render(&status);
        for line in [
            "# TYPE commons_served_bytes counter",
            "commons_served_bytes_total 1234",
            "commons_gateway_bytes_total 777",
            "commons_connected_peers 3",
            "commons_quota_bytes 1073741824",
            "commons_relayed_connections_total 2",
            "commons_relayed_received_bytes_total 4242",
            "commons_publicly_reachable 0",
            "# EOF",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }
}
