//! End-to-end: what a new user and a mirror operator trip over in everyday use, run as
//! they would (real processes on loopback).

mod common;

use std::{fs, path::Path, process::Stdio};

use common::{commons, files, json_ok, make_dataset, Node};

/// A temp dir with a dataset in `dataset/` (its big file `big` bytes), added to data dir
/// `a/` and served by a node there. Returns the dir, the dataset folder, its size and the
/// node.
fn seeded(big: usize) -> (tempfile::TempDir, std::path::PathBuf, u64, Node) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("dataset");
    let size = make_dataset(&src, big);
    common::add(&tmp.path().join("a"), &src);
    let seeder = Node::start(&tmp.path().join("a"));
    (tmp, src, size, seeder)
}

/// Runs `commons ARGS` on `dir`, which must fail; returns its stderr.
fn fails(dir: &Path, args: &[&str]) -> String {
    let out = commons(dir).args(args).output().expect("run commons");
    assert!(!out.status.success(), "commons {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `commons ARGS` on `dir`, which must succeed; returns its stdout.
fn ok(dir: &Path, args: &[&str]) -> String {
    let out = commons(dir).args(args).output().expect("run commons");
    assert!(
        out.status.success(),
        "commons {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_ticket_printed_without_a_running_node_says_it_is_hash_only() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("dataset");
    make_dataset(&src, 1 << 12);
    let dir = tmp.path().join("a");
    let printed = ok(&dir, &["add", src.to_str().expect("utf-8")]);
    assert!(printed.contains("ticket: commons1"), "{printed}");
    assert!(
        printed.contains("hash only") && printed.contains("commons node run"),
        "the ticket says it names no address, and what gives one that does: {printed}"
    );
    // Through a running node the ticket names its addresses, and says nothing of the kind.
    let _node = Node::start(&dir);
    let printed = ok(&dir, &["add", src.to_str().expect("utf-8")]);
    assert!(!printed.contains("hash only"), "{printed}");
}

#[test]
fn rerunning_a_finished_get_into_a_folder_succeeds_and_changed_files_are_refused() {
    let (tmp, src, _size, seeder) = seeded(1 << 16);
    let b = tmp.path().join("b");
    let out = tmp.path().join("out");
    let out_arg = out.to_str().expect("utf-8");
    json_ok(&b, &["get", &seeder.ticket(), "-o", out_arg]);
    // The documented way to resume is to run the same command again: once finished, it
    // checks the files already there and succeeds.
    let again = json_ok(&b, &["get", &seeder.ticket(), "-o", out_arg]);
    assert_eq!(again["exported"]["unchanged"], 4, "{again}");
    assert!(files(&src) == files(&out));
    // A file changed since is not silently replaced.
    fs::write(out.join("config.json"), b"{\"layers\": 3}").expect("write");
    let err = fails(&b, &["get", &seeder.ticket(), "-o", out_arg]);
    assert!(err.contains("already exists with other content"), "{err}");
}

#[test]
fn a_failed_get_by_hash_says_what_it_tried() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("dataset");
    make_dataset(&src, 1 << 12);
    let a = tmp.path().join("a");
    common::add(&a, &src);
    let node = Node::start_with(&a, &["--dht-mode", "server"]);
    let unknown = "ab".repeat(32);
    let err = fails(
        &tmp.path().join("b"),
        &["get", &unknown, "--bootstrap", &node.addr()],
    );
    assert!(err.contains("no provider of"), "{err}");
    assert!(err.contains("the DHT lookup asked"), "{err}");
    assert!(
        !err.contains("ticket") && !err.contains("give --bootstrap"),
        "no blame on a ticket or flag the user did not give: {err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

#[test]
fn ls_shows_names_and_a_datasets_files_and_an_include_matching_nothing_fails() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("dataset");
    make_dataset(&src, 1 << 12);
    let a = tmp.path().join("a");
    json_ok(
        &a,
        &["add", src.to_str().expect("utf-8"), "--name", "lab/corpus"],
    );
    let listing = ok(&a, &["ls"]);
    assert!(listing.contains("lab/corpus@main"), "{listing}");
    let by_name = json_ok(&a, &["ls", "lab/corpus"]);
    let paths: Vec<&str> = by_name["files"]
        .as_array()
        .expect("files")
        .iter()
        .filter_map(|f| f["path"].as_str())
        .collect();
    assert_eq!(
        paths,
        [
            "config.json",
            "empty.txt",
            "shards/model-00001.safetensors",
            "shards/model-00002.safetensors"
        ]
    );
    let text = ok(&a, &["ls", "lab/corpus"]);
    assert!(
        text.contains("shards/model-00001.safetensors") && text.contains("complete"),
        "{text}"
    );

    let seeder = Node::start(&a);
    let b = tmp.path().join("b");
    let err = fails(&b, &["get", &seeder.ticket(), "--include", "*.parquet"]);
    assert!(
        err.contains("no file of the dataset matches --include *.parquet"),
        "{err}"
    );
}

#[test]
fn get_no_keep_leaves_only_the_exported_copy() {
    let (tmp, src, _size, seeder) = seeded(1 << 16);
    let b = tmp.path().join("b");
    let out = tmp.path().join("out");
    let got = json_ok(
        &b,
        &[
            "get",
            &seeder.ticket(),
            "-o",
            out.to_str().expect("utf-8"),
            "--no-keep",
        ],
    );
    assert_eq!(got["kept"], false);
    assert!(files(&src) == files(&out), "exported byte-identical");
    let listing = json_ok(&b, &["ls", "--all"]);
    assert!(
        listing["datasets"].as_array().expect("datasets").is_empty()
            && listing["blobs"].as_array().expect("blobs").is_empty(),
        "the store keeps no copy: {listing}"
    );
    // Data kept here before the get is never dropped by --no-keep.
    json_ok(&b, &["get", &seeder.ticket()]);
    let out2 = tmp.path().join("out2");
    let again = json_ok(
        &b,
        &[
            "get",
            &seeder.ticket(),
            "-o",
            out2.to_str().expect("utf-8"),
            "--no-keep",
        ],
    );
    assert_eq!(again["kept"], true, "{again}");
    assert_eq!(json_ok(&b, &["ls"])["datasets"][0]["pinned"], true);
    // --no-keep without a folder would keep nothing at all: refused by the parser.
    let err = fails(&b, &["get", &seeder.ticket(), "--no-keep"]);
    assert!(err.contains("--output"), "{err}");
}

#[test]
fn read_only_commands_work_while_a_one_shot_get_holds_the_store() {
    let (tmp, _src, _size, seeder) = seeded(24 << 20);
    let b = tmp.path().join("b");
    fs::create_dir_all(&b).expect("mkdir");
    fs::write(
        b.join("config.toml"),
        "[limits]\ndownload_mib_per_sec = 8\n",
    )
    .expect("config");
    let mut get = commons(&b)
        .args(["get", &seeder.ticket()])
        .env("COMMONS_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn get");
    common::wait_for_dir_to_grow(&mut get, &b.join("store"), 4 << 20);
    // The get holds the store: listings go through it.
    let listing = json_ok(&b, &["ls"]);
    assert_eq!(listing["datasets"][0]["complete"], false, "{listing}");
    let hash = listing["datasets"][0]["hash"].as_str().expect("hash");
    let files = json_ok(&b, &["ls", hash]);
    assert_eq!(files["files"].as_array().map(Vec::len), Some(4), "{files}");
    // Long work is not taken on by a process about to exit: a clear answer instead.
    let err = fails(&b, &["verify"]);
    assert!(err.contains("held by another commons command"), "{err}");
    let _ = get.kill();
    let out = get.wait_with_output().expect("wait");
    // Its logs went to a pipe: no colour codes in them.
    let logs = String::from_utf8_lossy(&out.stderr);
    assert!(!logs.is_empty(), "debug logs were written");
    assert!(!logs.contains('\u{1b}'), "no ANSI escapes in piped logs");
}

#[test]
fn a_listen_port_already_in_use_is_named_with_what_to_do() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let err = fails(
        tmp.path(),
        &[
            "node",
            "run",
            "--listen",
            &format!("/ip4/127.0.0.1/udp/{port}/quic-v1"),
        ],
    );
    assert!(
        err.contains("already in use") && err.contains("--listen"),
        "the cause, and what to do: {err}"
    );
}

#[test]
fn limit_rate_caps_one_get_and_bad_rates_are_refused() {
    let (tmp, _src, size, seeder) = seeded(3 << 20);
    let b = tmp.path().join("b");
    let rate = 2.0;
    let started = std::time::Instant::now();
    let got = json_ok(&b, &["get", &seeder.ticket(), "--limit-rate", "2"]);
    let took = started.elapsed().as_secs_f64();
    let received = got["bytes_received"].as_u64().expect("received");
    // A bound, not a speed: at 2 MiB/s what was received cannot arrive faster than this.
    let burst = commons_node::transfer::BURST_BYTES;
    let floor = received.saturating_sub(burst) as f64 / (rate * 1024.0 * 1024.0);
    assert!(received >= size, "{got}");
    assert!(
        took >= floor * 0.99,
        "took {took} s, the limit implies at least {floor} s"
    );
    for bad in ["0", "-1", "nan"] {
        let err = fails(
            &b,
            &["get", &seeder.ticket(), &format!("--limit-rate={bad}")],
        );
        assert!(err.contains("--limit-rate"), "{bad}: {err}");
    }
}

#[cfg(unix)]
#[test]
fn the_data_dir_is_private_and_another_users_is_refused_clearly() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    ok(&dir, &["ls"]);
    for d in [dir.clone(), dir.join("store")] {
        let mode = fs::metadata(&d).expect("meta").permissions().mode();
        assert_eq!(mode & 0o077, 0, "{} is {mode:o}: not private", d.display());
    }
    // A data dir of another user (nobody, 65534): a clear refusal, nothing written there.
    let other = tmp.path().join("other");
    fs::create_dir_all(other.join("store")).expect("mkdir");
    let owned = std::os::unix::fs::chown(&other, Some(65534), Some(65534));
    if owned.is_err() {
        eprintln!("not root: cannot give a data dir to another user here; part skipped");
        return;
    }
    let err = fails(&other, &["ls"]);
    assert!(err.contains("belongs to another user"), "{err}");
    assert_eq!(
        fs::read_dir(other.join("store")).expect("read").count(),
        0,
        "nothing written into it"
    );
}
