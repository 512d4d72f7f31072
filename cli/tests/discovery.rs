//! End-to-end discovery: real `commons` nodes on loopback forming a Kademlia DHT, with
//! record lifetimes shortened in their config file so lapses take seconds.

mod common;

use std::{
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use common::{add, commons, eventually, files, json_ok, make_dataset, Node};

/// The DHT mode is the default (`auto`: nodes on loopback form a DHT among themselves with
/// no `mode = "server"`); records lapse 4 s after their last announcement, announcements
/// every second.
const FAST_DHT: &str = "[dht]
record_ttl_secs = 4
announce_interval_secs = 1
save_interval_secs = 1
";

/// A data dir `n<i>` under `root` with the fast DHT config.
fn node_dir(root: &Path, i: usize) -> PathBuf {
    let dir = root.join(format!("n{i}"));
    fs::create_dir_all(&dir).expect("mkdir");
    fs::write(dir.join("config.toml"), FAST_DHT).expect("config");
    dir
}

/// Starts `n` nodes; node 1 bootstraps from nobody, every other node only from the one
/// started before it.
fn chain(root: &Path, n: usize) -> Vec<Node> {
    let mut nodes: Vec<Node> = Vec::new();
    for i in 1..=n {
        let dir = node_dir(root, i);
        let node = match nodes.last() {
            None => Node::start(&dir),
            Some(prev) => Node::start_with(&dir, &["--bootstrap", &prev.addr()]),
        };
        nodes.push(node);
    }
    nodes
}

/// A dataset folder under `root`, added to node 1's data dir; returns it and its hash.
fn seed(root: &Path) -> (PathBuf, String) {
    let src = root.join("dataset");
    make_dataset(&src, 100_000);
    let dir = node_dir(root, 1);
    add(&dir, &src);
    let listing = json_ok(&dir, &["ls"]);
    let hash = listing["datasets"][0]["hash"]
        .as_str()
        .expect("hash")
        .to_string();
    (src, hash)
}

/// The PeerIds `commons providers` lists on `dir`'s node.
fn providers(dir: &Path, hash: &str) -> Vec<String> {
    json_ok(dir, &["providers", hash])["providers"]
        .as_array()
        .expect("providers")
        .iter()
        .map(|p| p["peer_id"].as_str().expect("peer id").to_string())
        .collect()
}

#[test]
fn five_nodes_each_given_one_bootstrap_address_fetch_by_hash_alone() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (src, hash) = seed(tmp.path());
    let nodes = chain(tmp.path(), 5);
    let n5 = node_dir(tmp.path(), 5);
    assert!(
        eventually(Duration::from_secs(20), || providers(&n5, &hash)
            .contains(&nodes[0].peer_id())),
        "node 5 finds node 1 through the DHT"
    );
    let out = tmp.path().join("out");
    let got = json_ok(&n5, &["get", &hash, "-o", out.to_str().expect("utf-8")]);
    assert_eq!(
        got["kind"], "dataset",
        "a bare hash that is a manifest is a dataset"
    );
    assert!(files(&src) == files(&out), "export is byte-identical");
    let stats = json_ok(&n5, &["node", "stats"]);
    let from_node1 = stats["peers"]
        .as_array()
        .expect("a list")
        .iter()
        .find(|p| p["peer_id"] == nodes[0].peer_id().as_str())
        .expect("node 1 in the per-peer counters");
    assert!(from_node1["bytes_received"].as_u64() > Some(0), "{stats}");

    // AutoNAT: another node on this machine dialled node 5 back at its loopback address,
    // so it is reachable here but not from the internet, and says so.
    assert!(
        eventually(Duration::from_secs(30), || json_ok(
            &n5,
            &["node", "status"]
        )["nat"]["reachability"]
            == "private"),
        "{}",
        json_ok(&n5, &["node", "status"])
    );
    let status = json_ok(&n5, &["node", "status"]);
    assert!(
        status["nat"]["local_addrs"][0]
            .as_str()
            .is_some_and(|a| a.starts_with("/ip4/127.0.0.1/")),
        "{status}"
    );
    assert_eq!(
        status["nat"]["public_addrs"],
        serde_json::json!([]),
        "{status}"
    );
    let text = commons(&n5)
        .args(["node", "status"])
        .output()
        .expect("status");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("reach:     private: reachable on the local network only"),
        "{text}"
    );
}

#[test]
fn two_providers_are_listed_and_a_removed_dataset_stops_being_found() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (_src, hash) = seed(tmp.path());
    let nodes = chain(tmp.path(), 3);
    let (n1, n2, n3) = (
        node_dir(tmp.path(), 1),
        node_dir(tmp.path(), 2),
        node_dir(tmp.path(), 3),
    );
    let (id1, id3) = (nodes[0].peer_id(), nodes[2].peer_id());
    assert!(eventually(Duration::from_secs(20), || providers(
        &n3, &hash
    )
    .contains(&id1)));
    json_ok(&n3, &["get", &hash]);
    assert!(
        eventually(Duration::from_secs(20), || {
            let found = providers(&n2, &hash);
            found.contains(&id1) && found.contains(&id3)
        }),
        "after node 3 fetched it, both holders are listed"
    );

    json_ok(&n1, &["rm", &hash]);
    assert!(
        eventually(Duration::from_secs(20), || {
            let found = providers(&n2, &hash);
            !found.contains(&id1) && found.contains(&id3)
        }),
        "node 1's records lapse once it stops announcing; node 3's stay"
    );
}

#[test]
fn a_bootstrap_address_that_answers_nothing_fails_clearly_in_bounded_time() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // A port nobody listens on: bound, then released.
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("free port")
        .port();
    let id = String::from_utf8(
        commons(&tmp.path().join("other"))
            .args(["node", "id"])
            .output()
            .expect("node id")
            .stdout,
    )
    .expect("utf-8");
    let dead = format!("/ip4/127.0.0.1/udp/{port}/quic-v1/p2p/{}", id.trim());
    let hash = "ab".repeat(32);
    for args in [
        vec!["get", hash.as_str(), "--bootstrap", dead.as_str()],
        vec!["providers", hash.as_str(), "--bootstrap", dead.as_str()],
    ] {
        let start = Instant::now();
        let out = commons(&tmp.path().join("me"))
            .args(&args)
            .output()
            .expect("run");
        assert!(!out.status.success(), "{args:?} fails");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("no bootstrap peer answered") && err.contains(&dead),
            "the error names the address: {err}"
        );
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        assert!(start.elapsed() < Duration::from_secs(20), "bounded time");
    }
    // Without any bootstrap peer at all, it says what to do at once.
    let out = commons(&tmp.path().join("me"))
        .args(["get", &hash])
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--bootstrap"),
        "{err}"
    );
}

#[test]
fn with_mdns_two_nodes_on_one_lan_find_each_other_without_bootstrap() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // mDNS announces on real interfaces, not on loopback: listen on all of them too.
    let lan = ["--mdns", "--listen", "/ip4/0.0.0.0/udp/0/quic-v1"];
    let first = Node::start_with(&node_dir(tmp.path(), 1), &lan);
    let _second = Node::start_with(&node_dir(tmp.path(), 2), &lan);
    let n2 = node_dir(tmp.path(), 2);
    assert!(
        eventually(Duration::from_secs(20), || {
            let peers = json_ok(&n2, &["node", "peers"]);
            peers["routing_table"].as_u64() >= Some(1)
                && peers["connected"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|p| p == &first.peer_id()))
        }),
        "the second node finds the first through mDNS alone"
    );
}

#[test]
fn a_restarted_node_finds_the_network_without_the_bootstrap_list() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (_src, hash) = seed(tmp.path());
    let mut nodes = chain(tmp.path(), 3);
    let n3 = node_dir(tmp.path(), 3);
    let id1 = nodes[0].peer_id();
    assert!(eventually(Duration::from_secs(20), || providers(
        &n3, &hash
    )
    .contains(&id1)));
    let third = nodes.pop().expect("node 3");
    third.stop(); // SIGTERM: saves the peers it knows

    let _again = Node::start(&n3); // no --bootstrap, none in its config
    assert!(
        eventually(Duration::from_secs(20), || providers(&n3, &hash)
            .contains(&id1)),
        "the restarted node reaches the DHT through the peers it saved"
    );
    let peers = json_ok(&n3, &["node", "peers"]);
    assert!(
        peers["routing_table"].as_u64().expect("count") >= 1,
        "{peers}"
    );
}
