//! End-to-end transfer between real `commons` processes on loopback.

mod common;

use std::{
    fs,
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use common::{add, commons, files, json_ok, make_dataset, pattern, Node as Provider};

/// A temp dir with a dataset in `dataset/`, added to data dir `a/` and served by a node.
/// Returns the dir, the dataset folder, its size and the node.
fn seeded(big: usize) -> (tempfile::TempDir, PathBuf, u64, Provider) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("dataset");
    let size = make_dataset(&src, big);
    add(&tmp.path().join("a"), &src);
    let provider = Provider::start(&tmp.path().join("a"));
    (tmp, src, size, provider)
}

#[test]
fn a_second_node_gets_a_dataset_by_ticket_byte_identical() {
    let (tmp, src, size, provider) = seeded(3 << 20);

    let b = tmp.path().join("b");
    let out_dir = tmp.path().join("out");
    let out_dir_arg = out_dir.to_str().expect("utf-8");
    let v = json_ok(&b, &["get", &provider.ticket(), "-o", out_dir_arg]);
    assert_eq!(v["size"], size);
    let received = v["bytes_received"].as_u64().expect("bytes");
    assert!(
        received as f64 <= size as f64 * 1.01 + 4096.0,
        "received {received} for {size}"
    );
    assert!(files(&src) == files(&out_dir), "export is byte-identical");

    // Fetching again receives nothing: everything is already verified and stored.
    let v = json_ok(&b, &["get", &provider.ticket()]);
    assert_eq!(v["bytes_received"], 0);
    let verify = commons(&b).arg("verify").output().expect("verify");
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
}

#[test]
fn a_get_killed_half_way_resumes_and_completes() {
    let (tmp, src, size, provider) = seeded(48 << 20);

    let b = tmp.path().join("b");
    let mut child = commons(&b)
        .args(["get", &provider.ticket()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn get");
    let store = b.join("store");
    common::kill_when_dir_grows(&mut child, &store, 20 << 20);

    let out_dir = tmp.path().join("out");
    let out_dir_arg = out_dir.to_str().expect("utf-8");
    let v = json_ok(&b, &["get", &provider.ticket(), "-o", out_dir_arg]);
    let second = v["bytes_received"].as_u64().expect("bytes");
    assert!(
        second < size * 9 / 10,
        "the resumed run fetched only what was missing: {second} of {size}"
    );
    assert!(files(&src) == files(&out_dir), "export is byte-identical");
    let verify = commons(&b).arg("verify").output().expect("verify");
    assert!(verify.status.success());
}

#[test]
fn a_ticket_whose_provider_is_gone_fails_with_a_clear_error_in_bounded_time() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("dataset");
    make_dataset(&src, 1 << 16);
    let a = tmp.path().join("a");
    add(&a, &src);
    let ticket = {
        let provider = Provider::start(&a);
        provider.ticket()
    }; // provider stopped
    let start = Instant::now();
    let out = commons(&tmp.path().join("b"))
        .args(["get", &ticket])
        .output()
        .expect("get");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot get") && err.contains("cannot reach peer"),
        "{err}"
    );
    assert!(start.elapsed() < Duration::from_secs(30), "bounded time");
}

#[test]
fn include_fetches_only_matching_files() {
    let (tmp, _src, _size, provider) = seeded(1 << 20);
    let b = tmp.path().join("b");
    let out_dir = tmp.path().join("out");
    let out = out_dir.to_str().expect("utf-8 path");
    let ticket = provider.ticket();
    let v = json_ok(&b, &["get", &ticket, "--include", "*.json", "-o", out]);
    assert_eq!(v["files"], 1);
    let got = files(&out_dir);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, PathBuf::from("config.json"));
    // The big shards were never fetched: only the manifest and config crossed the wire.
    assert!(v["bytes_received"].as_u64().expect("bytes") < 64 * 1024);
    let ls: serde_json::Value = serde_json::from_slice(
        &commons(&b)
            .args(["--json", "ls"])
            .output()
            .expect("ls")
            .stdout,
    )
    .expect("json");
    assert_eq!(ls["datasets"][0]["complete"], false, "shown as partial");
}

/// The provider's ticket, with its hash (or peer id) swapped.
fn altered_ticket(ticket: &str, hash: Option<[u8; 32]>, peer: Option<String>) -> String {
    let mut t: commons_protocol::Ticket = ticket.parse().expect("ticket");
    if let Some(h) = hash {
        t.hash = commons_protocol::Hash::from_bytes(h);
    }
    if let Some(p) = peer {
        t.providers = t
            .providers
            .iter()
            .map(|a| format!("{}/p2p/{p}", &a[..a.rfind("/p2p/").expect("p2p")]))
            .collect();
    }
    t.to_string()
}

#[test]
fn an_unknown_hash_is_not_found_in_one_clear_line() {
    let (tmp, _src, _size, provider) = seeded(1 << 12);
    let ticket = altered_ticket(&provider.ticket(), Some([7; 32]), None);
    let out = commons(&tmp.path().join("b"))
        .args(["get", &ticket])
        .output()
        .expect("get");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not found"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

#[test]
fn a_ticket_naming_another_peer_at_this_address_is_refused() {
    let (tmp, _src, _size, provider) = seeded(1 << 12);
    // Another node's identity: its PeerId, but the provider's address.
    let other = tmp.path().join("other");
    let id = commons(&other).args(["node", "id"]).output().expect("id");
    let other_id = String::from_utf8(id.stdout)
        .expect("utf-8")
        .trim()
        .to_string();
    let ticket = altered_ticket(&provider.ticket(), None, Some(other_id.clone()));
    let out = commons(&tmp.path().join("b"))
        .args(["get", &ticket])
        .output()
        .expect("get");
    assert!(
        !out.status.success(),
        "a connection to the wrong key must be refused"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot reach peer {other_id}")),
        "{err}"
    );
    assert!(
        !tmp.path().join("b/store").exists() || {
            let ls = commons(&tmp.path().join("b"))
                .arg("ls")
                .output()
                .expect("ls");
            String::from_utf8_lossy(&ls.stdout).contains("empty")
        }
    );
}

#[test]
fn with_a_node_running_every_command_goes_through_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let a = tmp.path().join("a");
    let src = tmp.path().join("dataset");
    make_dataset(&src, 1 << 20);
    add(&a, &src); // so the node prints a ticket at start
    let node_a = Provider::start(&a);

    // `add` while A runs: done by A's node, and the ticket names A.
    let more = tmp.path().join("more");
    fs::create_dir_all(&more).expect("mkdir");
    fs::write(more.join("notes.txt"), pattern(70_000, 9)).expect("write");
    let more_arg = more.to_str().expect("utf-8");
    let added = json_ok(&a, &["add", more_arg]);
    let ticket: commons_protocol::Ticket = added["ticket"]
        .as_str()
        .expect("ticket")
        .parse()
        .expect("parses");
    assert!(
        !ticket.providers.is_empty(),
        "a running node's ticket names it"
    );
    let listing = json_ok(&a, &["ls"]);
    assert_eq!(listing["datasets"].as_array().expect("array").len(), 2);

    // B runs a node too; its `get` and export go through it, and it serves what A added.
    let b = tmp.path().join("b");
    fs::create_dir_all(&b).expect("mkdir");
    let node_b = Provider::start(&b);
    let out_dir = tmp.path().join("out");
    let out = out_dir.to_str().expect("utf-8 path");
    json_ok(&b, &["get", &ticket.to_string(), "-o", out]);
    assert!(files(&more) == files(&out_dir), "byte-identical");
    // verify, rm and gc go through the node as well.
    let verify = commons(&b).arg("verify").output().expect("verify");
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    assert!(String::from_utf8_lossy(&verify.stdout).contains("all intact"));
    let removed = json_ok(&b, &["rm", &ticket.hash.to_string()]);
    assert_eq!(removed["kind"], "dataset");
    assert!(json_ok(&b, &["ls"])["datasets"]
        .as_array()
        .expect("array")
        .is_empty());
    drop(node_b);
    drop(node_a);
}
