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

/// Starts `commons get TICKET` on `data_dir` in the background; its stderr is kept.
fn spawn_get(data_dir: &std::path::Path, ticket: &str) -> std::process::Child {
    commons(data_dir)
        .args(["get", ticket])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn get")
}

#[test]
fn a_get_killed_half_way_resumes_and_completes() {
    let (tmp, src, size, provider) = seeded(48 << 20);

    let b = tmp.path().join("b");
    // Below the rate at which fetched spans skip the WAL (`UNLOGGED_RATE`), so a kill keeps
    // what was stored. At full speed a kill may lose what the memtables held, which is by
    // design and tested in node/tests/crash.rs; here the point is what the next run fetches.
    slow_data_dir(&b, 32);
    let mut child = spawn_get(&b, &provider.ticket());
    let store = b.join("store");
    common::kill_when_dir_grows(&mut child, &store, 20 << 20);

    let listing = json_ok(&b, &["ls"]);
    let held = listing["datasets"][0]["held"].as_u64().expect("held");
    assert!(
        held >= 10 << 20,
        "the killed run kept what it stored: {held} of {size}"
    );

    let out_dir = tmp.path().join("out");
    let out_dir_arg = out_dir.to_str().expect("utf-8");
    let v = json_ok(&b, &["get", &provider.ticket(), "-o", out_dir_arg]);
    let second = v["bytes_received"].as_u64().expect("bytes");
    // What was missing, plus at most a span's worth of framing and re-sent pieces.
    assert!(
        second <= size - held + (1 << 20),
        "the resumed run fetched only what was missing: {second} of {size}, {held} held"
    );
    assert!(files(&src) == files(&out_dir), "export is byte-identical");
    let verify = commons(&b).arg("verify").output().expect("verify");
    assert!(verify.status.success());
}

/// A data dir whose fetches are slowed to `mib_per_sec`, so a test can stop one midway.
fn slow_data_dir(dir: &std::path::Path, mib_per_sec: u32) {
    fs::create_dir_all(dir).expect("mkdir");
    fs::write(
        dir.join("config.toml"),
        format!("[limits]\ndownload_mib_per_sec = {mib_per_sec}\n"),
    )
    .expect("config");
}

#[test]
fn ctrl_c_stops_a_get_which_keeps_what_it_received_and_resumes() {
    let (tmp, src, size, provider) = seeded(48 << 20);
    let b = tmp.path().join("b");
    slow_data_dir(&b, 16);
    let mut child = spawn_get(&b, &provider.ticket());
    common::wait_for_dir_to_grow(&mut child, &b.join("store"), 20 << 20);
    common::send_signal(&child, "INT");
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("interrupted: what was received is kept"),
        "{stderr}"
    );

    // `ls` shows the dataset as partial, with what it holds.
    let listing = json_ok(&b, &["ls"]);
    let dataset = &listing["datasets"][0];
    assert_eq!(dataset["complete"], false, "{listing}");
    let held = dataset["held"].as_u64().expect("held");
    assert!(held > 0 && held < size, "held {held} of {size}");
    let ls = commons(&b).arg("ls").output().expect("ls");
    assert!(
        String::from_utf8_lossy(&ls.stdout).contains("partial "),
        "{}",
        String::from_utf8_lossy(&ls.stdout)
    );
    // Export refuses before creating anything, and says what to do.
    let out_dir = tmp.path().join("out");
    let hash = dataset["hash"].as_str().expect("hash");
    let export = commons(&b)
        .args(["export", hash, out_dir.to_str().expect("utf-8")])
        .output()
        .expect("export");
    let stderr = String::from_utf8_lossy(&export.stderr);
    assert!(!export.status.success());
    assert!(
        stderr.contains("`commons get") && stderr.contains("fetches the rest"),
        "{stderr}"
    );
    assert!(!out_dir.exists(), "nothing created");
    // verify checks what is complete and says what it left for the fetch to finish.
    let verify = json_ok(&b, &["verify"]);
    assert!(verify["partial_blobs"].as_u64().expect("partial") >= 1);
    assert!(verify["corrupt"].as_array().expect("array").is_empty());

    // The same command again resumes: what the first run received is not fetched again.
    let v = json_ok(
        &b,
        &[
            "get",
            &provider.ticket(),
            "-o",
            out_dir.to_str().expect("utf-8"),
        ],
    );
    let second = v["bytes_received"].as_u64().expect("bytes");
    assert!(
        second <= size - held + (1 << 20),
        "resumed: {second} received, {held} of {size} already held"
    );
    assert!(files(&src) == files(&out_dir), "export is byte-identical");
}

#[test]
fn ctrl_c_on_a_get_through_a_node_stops_the_node_fetching() {
    let (tmp, _src, size, provider) = seeded(48 << 20);
    let b = tmp.path().join("b");
    slow_data_dir(&b, 8);
    let node_b = Provider::start(&b);
    let fetched = || {
        json_ok(&b, &["node", "status"])["bytes_fetched"]
            .as_u64()
            .expect("n")
    };
    let mut child = spawn_get(&b, &provider.ticket());
    let deadline = Instant::now() + Duration::from_secs(60);
    while fetched() < 4 << 20 {
        assert!(
            child.try_wait().expect("wait").is_none(),
            "finished too soon"
        );
        assert!(Instant::now() < deadline, "no progress within 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    common::send_signal(&child, "INT");
    let out = child.wait_with_output().expect("wait");
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The node noticed its client left and stopped: nothing more arrives.
    std::thread::sleep(Duration::from_millis(500));
    let stopped_at = fetched();
    std::thread::sleep(Duration::from_secs(2));
    let later = fetched();
    assert!(
        later - stopped_at < 1 << 20 && later < size,
        "the node fetched on: {stopped_at} then {later} of {size}"
    );
    let listing = json_ok(&b, &["ls"]);
    assert_eq!(listing["datasets"][0]["complete"], false, "{listing}");
    drop(node_b);
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

/// A ticket's provider that is gone, at an address that swallows every packet as a
/// vanished host's does (each dial waits for its handshake to time out), costs a dataset's
/// fetch one dial: later files take that dial over instead of each starting its own and
/// waiting `DIAL_GRACE` for it (1 s and one more dial per file before).
#[test]
fn a_gone_provider_in_a_ticket_is_dialled_once_per_get_not_once_per_file() {
    const FILES: usize = 20;
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("dataset");
    fs::create_dir_all(&src).expect("mkdir");
    for i in 0..FILES {
        fs::write(
            src.join(format!("part-{i:02}.txt")),
            pattern(1000 + i, i as u8),
        )
        .expect("write");
    }
    add(&tmp.path().join("a"), &src);
    let provider = Provider::start(&tmp.path().join("a"));

    let gone = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    let port = gone.local_addr().expect("addr").port();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let counter = {
        let stop = stop.clone();
        std::thread::spawn(move || quic_dials_received(&gone, &stop))
    };
    let mut ticket: commons_protocol::Ticket = provider.ticket().parse().expect("ticket");
    ticket.providers.push(format!(
        "/ip4/127.0.0.1/udp/{port}/quic-v1/p2p/{}",
        libp2p::PeerId::random()
    ));

    let out = tmp.path().join("out");
    let v = json_ok(
        &tmp.path().join("b"),
        &[
            "get",
            &ticket.to_string(),
            "-o",
            out.to_str().expect("utf-8"),
        ],
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let dials = counter.join().expect("counter");
    assert_eq!(v["files"], FILES as u64);
    assert!(files(&out) == files(&src), "the files are the dataset's");
    // One dial, taken over blob after blob; another each time one runs out (its handshake
    // times out after a few seconds) while files are left. One dial per file before.
    assert!(
        (1..FILES / 2).contains(&dials),
        "the gone provider was dialled {dials} times for {FILES} files"
    );
}

/// Counts the QUIC connections a client tried to open at `socket` (distinct destination
/// connection ids of Initial packets; a retransmitted Initial keeps its id) until `stop`.
fn quic_dials_received(
    socket: &std::net::UdpSocket,
    stop: &std::sync::atomic::AtomicBool,
) -> usize {
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    let mut ids = std::collections::HashSet::new();
    let mut buf = [0u8; 2048];
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let Ok(len) = socket.recv(&mut buf) else {
            continue;
        };
        let packet = &buf[..len];
        // Long header (0x80), type Initial (0x00 in bits 0x30); then the version (4 bytes),
        // the destination id's length and the id.
        if len > 6 && packet[0] & 0x80 != 0 && packet[0] & 0x30 == 0 {
            let id_len = packet[5] as usize;
            if let Some(id) = packet.get(6..6 + id_len) {
                ids.insert(id.to_vec());
            }
        }
    }
    ids.len()
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
    let hash = ticket.hash.to_string();
    let named = json_ok(&b, &["name", "set", "lab/more", &hash]);
    assert_eq!(named["root"], hash.as_str());
    assert_eq!(json_ok(&b, &["unpin", &hash])["changed"], true);
    let dry = json_ok(&b, &["gc", "--dry-run"]);
    assert!(
        !dry["blobs"].as_array().expect("blobs").is_empty(),
        "the unpinned dataset would go"
    );
    json_ok(&b, &["pin", &hash]);
    let removed = json_ok(&b, &["rm", &hash]);
    assert_eq!(removed["kind"], "dataset");
    assert!(json_ok(&b, &["ls"])["datasets"]
        .as_array()
        .expect("array")
        .is_empty());
    let gc = json_ok(&b, &["gc"]);
    assert_eq!(gc["dry_run"], false);
    // A missing name is `not_found` through the node too, as JSON on stdout.
    let out = commons(&b)
        .args(["--json", "name", "rm", "lab/none"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let error: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json error");
    assert_eq!(error["kind"], "not_found", "{error}");
    drop(node_b);
    drop(node_a);
}
