//! End-to-end: the HTTP gateway and a mirror node configured by a TOML file, run as a user
//! would (`commons node run --config …`, real processes on loopback).

mod common;

use std::{fs, path::Path};

use common::{
    add, commons, gateway_addr, http, json_ok, make_dataset, status_until, wait_for_http_ok, Node,
};

/// Writes a config with a gateway on a free loopback port (and `extra` TOML after it).
fn config(dir: &Path, extra: &str) -> String {
    let path = dir.join("commons.toml");
    fs::create_dir_all(dir).expect("mkdir");
    fs::write(
        &path,
        format!("[gateway]\nlisten = \"127.0.0.1:0\"\n\n{extra}"),
    )
    .expect("write config");
    path.to_str().expect("utf-8").to_string()
}

fn hash_of(v: &serde_json::Value) -> String {
    v["hash"].as_str().expect("hash").to_string()
}

#[test]
fn the_gateway_serves_whole_files_ranges_and_clear_errors() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("model");
    make_dataset(&src, 1 << 20);
    let a = tmp.path().join("a");
    let added = json_ok(
        &a,
        &["add", src.to_str().expect("utf-8"), "--name", "lab/model"],
    );
    let root = hash_of(&added);
    let cfg = config(&tmp.path().join("cfg"), "");
    let node = Node::start_with(&a, &["--config", &cfg]);
    let gw = gateway_addr(&node);
    let big = fs::read(src.join("shards/model-00001.safetensors")).expect("read");
    let size = big.len();

    // The listing, by hash and by name.
    let listing = http(&gw, "GET", &format!("/dataset/{root}"), &[]);
    assert_eq!(listing.status, 200, "{}", listing.text());
    let listing: serde_json::Value = serde_json::from_slice(&listing.body).expect("json");
    let files = listing["files"].as_array().expect("files");
    assert_eq!(files.len(), 4);
    let big_hash = files
        .iter()
        .find(|f| f["path"] == "shards/model-00001.safetensors")
        .and_then(|f| f["hash"].as_str())
        .expect("the big file is listed")
        .to_string();
    let by_name = http(&gw, "GET", "/dataset/lab/model", &[]);
    assert_eq!(by_name.status, 200, "{}", by_name.text());

    // Whole files: by blob hash, by dataset path, by name and path; byte-identical.
    for path in [
        format!("/blob/{big_hash}"),
        format!("/dataset/{root}/shards/model-00001.safetensors"),
        "/dataset/lab/model/shards/model-00001.safetensors".to_string(),
    ] {
        let r = http(&gw, "GET", &path, &[]);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(r.header("content-length"), Some(size.to_string().as_str()));
        assert_eq!(r.header("etag"), Some(format!("\"{big_hash}\"").as_str()));
        assert!(r.body == big, "{path}: byte-identical");
    }
    let config_json = http(&gw, "GET", "/dataset/lab/model/config.json", &[]);
    assert_eq!(config_json.body, br#"{"layers": 2}"#);
    let empty = http(&gw, "GET", &format!("/dataset/{root}/empty.txt"), &[]);
    assert_eq!((empty.status, empty.body.len()), (200, 0));

    // Ranges: first byte, a middle stretch across chunk groups, the last bytes.
    let blob = format!("/blob/{big_hash}");
    for (range, want) in [
        ("bytes=0-0", 0..1),
        ("bytes=16000-50000", 16000..50001),
        ("bytes=-7", size - 7..size),
        (&*format!("bytes={}-", size - 1), size - 1..size),
    ] {
        let r = http(&gw, "GET", &blob, &[("Range", range)]);
        assert_eq!(r.status, 206, "{range}: {}", r.text());
        assert!(r.body == big[want.clone()], "{range}: the right bytes");
        let content_range = format!("bytes {}-{}/{size}", want.start, want.end - 1);
        assert_eq!(r.header("content-range"), Some(content_range.as_str()));
    }
    let r = http(&gw, "GET", &blob, &[("Range", &format!("bytes={size}-"))]);
    assert_eq!(r.status, 416, "a range past the end");
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes */{size}").as_str())
    );

    // HEAD gives the length without the body; a matching ETag gives 304.
    let head = http(&gw, "HEAD", &blob, &[]);
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("content-length"),
        Some(size.to_string().as_str())
    );
    assert!(head.body.is_empty());
    let etag = format!("\"{big_hash}\"");
    let cached = http(&gw, "GET", &blob, &[("If-None-Match", &etag)]);
    assert_eq!((cached.status, cached.body.len()), (304, 0));

    // Clear errors.
    let unknown = "ab".repeat(32);
    let r = http(&gw, "GET", &format!("/blob/{unknown}"), &[]);
    assert_eq!(r.status, 404);
    assert!(r.text().contains("not held by this node"), "{}", r.text());
    let r = http(&gw, "GET", "/blob/xyz", &[]);
    assert_eq!(r.status, 400);
    assert!(r.text().contains("bad hash"), "{}", r.text());
    let r = http(
        &gw,
        "GET",
        &format!("/dataset/{root}/shards/../config.json"),
        &[],
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains(".."), "{}", r.text());
    let r = http(&gw, "GET", &format!("/dataset/{root}/nope.bin"), &[]);
    assert_eq!(r.status, 404);
    assert!(r.text().contains("no file"), "{}", r.text());
    let r = http(&gw, "GET", "/dataset/lab/unknown/config.json", &[]);
    assert_eq!(r.status, 404);
    assert!(
        r.text().contains("no dataset named lab/unknown"),
        "{}",
        r.text()
    );

    // The Hugging Face endpoints: repository info, file list, resolve.
    let info = http(&gw, "GET", "/api/models/lab/model/revision/main", &[]);
    assert_eq!(info.status, 200, "{}", info.text());
    let info: serde_json::Value = serde_json::from_slice(&info.body).expect("json");
    let sha = info["sha"].as_str().expect("sha").to_string();
    assert!(root.starts_with(&sha) && sha.len() == 40, "{sha}");
    assert_eq!(info["siblings"].as_array().map(Vec::len), Some(4));
    let tree = http(
        &gw,
        "GET",
        &format!("/api/datasets/lab/model/tree/{sha}?recursive=true"),
        &[],
    );
    let tree: serde_json::Value = serde_json::from_slice(&tree.body).expect("json");
    // Four files and, as the Hub lists them recursively, their folder `shards`.
    assert_eq!(tree.as_array().map(Vec::len), Some(5), "{tree}");
    let head = http(
        &gw,
        "HEAD",
        "/lab/model/resolve/main/shards/model-00001.safetensors",
        &[],
    );
    assert_eq!(head.status, 200);
    assert_eq!(head.header("x-repo-commit"), Some(sha.as_str()));
    assert_eq!(
        head.header("content-length"),
        Some(size.to_string().as_str())
    );
    let r = http(
        &gw,
        "GET",
        &format!("/datasets/lab/model/resolve/{sha}/shards/model-00001.safetensors"),
        &[("Range", "bytes=100-")],
    );
    assert_eq!(r.status, 206);
    assert!(r.body == big[100..]);
    let r = http(&gw, "GET", "/lab/model/resolve/v9/config.json", &[]);
    assert_eq!(r.status, 404);
    assert_eq!(r.header("x-error-code"), Some("RevisionNotFound"));
    let r = http(&gw, "GET", "/lab/model/resolve/main/missing.json", &[]);
    assert_eq!(r.header("x-error-code"), Some("EntryNotFound"));
}

#[test]
fn a_mirror_fetches_what_its_config_names_pins_it_and_serves_it_after_a_restart() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("dataset");
    make_dataset(&src, 2 << 20);
    let seeder_dir = tmp.path().join("seeder");
    add(&seeder_dir, &src);
    let seeder = Node::start(&seeder_dir);
    let ticket = seeder.ticket();

    let mirror_dir = tmp.path().join("mirror");
    let cfg = config(
        &tmp.path().join("cfg"),
        &format!("[mirror]\ndatasets = [{{ target = \"{ticket}\", name = \"org/data\" }}]\n"),
    );
    let mirror = Node::start_with(&mirror_dir, &["--config", &cfg]);
    let gw = gateway_addr(&mirror);
    let big = fs::read(src.join("shards/model-00001.safetensors")).expect("read");
    // The mirror fetches in the background; the name is bound once it is complete.
    let r = wait_for_http_ok(&gw, "/dataset/org/data/shards/model-00001.safetensors", 60);
    assert!(r.body == big, "served byte-identical");

    // Pinned (so garbage collection keeps it) and named, as `ls` and `name ls` say.
    let ls = json_ok(&mirror_dir, &["ls", "--pinned"]);
    let datasets = ls["datasets"].as_array().expect("datasets");
    assert_eq!(datasets.len(), 1, "{ls}");
    assert_eq!(datasets[0]["complete"], true);
    let names = json_ok(&mirror_dir, &["name", "ls"]);
    assert_eq!(names["names"][0]["name"], "org/data");
    let gc = json_ok(&mirror_dir, &["gc", "--dry-run"]);
    assert_eq!(
        gc["blobs"].as_array().map(Vec::len),
        Some(0),
        "nothing to collect"
    );

    // Restarted without the seeder: it still holds and serves everything.
    mirror.stop();
    seeder.stop();
    let mirror = Node::start_with(&mirror_dir, &["--config", &cfg]);
    let gw = gateway_addr(&mirror);
    let r = http(
        &gw,
        "GET",
        "/dataset/org/data/shards/model-00001.safetensors",
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.body == big);
    let verify = commons(&mirror_dir).arg("verify").output().expect("verify");
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
}

#[test]
fn pins_and_names_are_managed_from_the_command_line() {
    let tmp = tempfile::tempdir().expect("tempdir");
    pins_and_names(tmp.path(), false);
}

#[test]
fn pins_and_names_are_managed_through_a_running_node() {
    let tmp = tempfile::tempdir().expect("tempdir");
    pins_and_names(tmp.path(), true);
}

fn pins_and_names(tmp: &Path, through_node: bool) {
    let src = tmp.join("dataset");
    make_dataset(&src, 64 << 10);
    let dir = tmp.join("store");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let _node = through_node.then(|| Node::start(&dir));
    let root = hash_of(&json_ok(&dir, &["add", src.to_str().expect("utf-8")]));

    let named = json_ok(&dir, &["name", "set", "org/data@v1", &root[..8]]);
    assert_eq!(
        (named["name"].as_str(), named["revision"].as_str()),
        (Some("org/data"), Some("v1"))
    );
    // A name works wherever a hash does.
    let out = tmp.join("out");
    json_ok(
        &dir,
        &["export", "org/data@v1", out.to_str().expect("utf-8")],
    );
    assert!(out.join("config.json").exists());

    // Unpinning keeps the data until gc, drops its names, and `ls --pinned` shows nothing.
    let unpinned = json_ok(&dir, &["unpin", &root]);
    assert_eq!(unpinned["changed"], true);
    assert_eq!(
        json_ok(&dir, &["name", "ls"])["names"]
            .as_array()
            .map(Vec::len),
        Some(0)
    );
    let pinned = json_ok(&dir, &["ls", "--pinned"]);
    assert_eq!(pinned["datasets"].as_array().map(Vec::len), Some(0));
    assert_eq!(
        json_ok(&dir, &["ls"])["datasets"].as_array().map(Vec::len),
        Some(1)
    );
    let dry = json_ok(&dir, &["gc", "--dry-run"]);
    assert!(
        !dry["blobs"].as_array().expect("blobs").is_empty(),
        "unpinned data would go"
    );
    json_ok(&dir, &["pin", &root]);
    let dry = json_ok(&dir, &["gc", "--dry-run"]);
    assert_eq!(
        dry["blobs"].as_array().map(Vec::len),
        Some(0),
        "pinned again: kept"
    );

    // Bad input: one clear line, non-zero exit.
    for (args, needle) in [
        (vec!["name", "set", "../x", &root], "may not start with"),
        (vec!["name", "rm", "org/none"], "no name org/none"),
        (
            vec!["export", "org/none", "/tmp/never"],
            "no dataset is named org/none",
        ),
        (
            vec!["add", "/nonexistent", "--name", "bad name"],
            "not a dataset name",
        ),
    ] {
        let out = commons(&dir).args(&args).output().expect("run");
        assert!(!out.status.success(), "{args:?} must fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

/// Seconds a fetch of `bytes` through a limit of `mib_per_sec` takes at the least: the
/// bucket's burst goes free, the rest at the rate.
fn floor_secs(bytes: u64, mib_per_sec: f64) -> f64 {
    let burst = commons_node::transfer::BURST_BYTES;
    bytes.saturating_sub(burst) as f64 / (mib_per_sec * 1024.0 * 1024.0)
}

#[test]
fn upload_and_download_limits_make_a_transfer_take_at_least_the_time_they_imply() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("dataset");
    let size = make_dataset(&src, 3 << 20);
    let rate = 4.0;

    // A seeder capped at 4 MiB/s upload.
    let capped_dir = tmp.path().join("capped");
    add(&capped_dir, &src);
    let cfg_dir = tmp.path().join("cfg");
    fs::create_dir_all(&cfg_dir).expect("mkdir");
    let upload_cfg = cfg_dir.join("upload.toml");
    fs::write(
        &upload_cfg,
        format!("[limits]\nupload_mib_per_sec = {rate}\n"),
    )
    .expect("write");
    let capped = Node::start_with(
        &capped_dir,
        &["--config", upload_cfg.to_str().expect("utf-8")],
    );
    let start = std::time::Instant::now();
    let got = json_ok(&tmp.path().join("b"), &["get", &capped.ticket()]);
    let took = start.elapsed().as_secs_f64();
    assert_eq!(got["size"], size);
    let floor = floor_secs(size, rate);
    assert!(
        took >= floor,
        "upload-limited fetch took {took:.2} s; the limit implies ≥ {floor:.2} s"
    );

    // An unlimited seeder, and a fetcher capped at 4 MiB/s download.
    let free_dir = tmp.path().join("free");
    add(&free_dir, &src);
    let free = Node::start(&free_dir);
    let download_cfg = cfg_dir.join("download.toml");
    fs::write(
        &download_cfg,
        format!("[limits]\ndownload_mib_per_sec = {rate}\n"),
    )
    .expect("write");
    let start = std::time::Instant::now();
    let got = json_ok(
        &tmp.path().join("c"),
        &[
            "--config",
            download_cfg.to_str().expect("utf-8"),
            "get",
            &free.ticket(),
        ],
    );
    let took = start.elapsed().as_secs_f64();
    assert_eq!(got["size"], size);
    assert!(
        took >= floor,
        "download-limited fetch took {took:.2} s; the limit implies ≥ {floor:.2} s"
    );
}

#[test]
fn a_node_over_its_quota_collects_only_unpinned_data() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("dataset");
    let size = make_dataset(&src, 100 << 10);
    let dir = tmp.path().join("node");
    let root = hash_of(&json_ok(&dir, &["add", src.to_str().expect("utf-8")]));
    let extra = tmp.path().join("extra.bin");
    fs::write(&extra, common::pattern(300 << 10, 9)).expect("write");
    let blob = hash_of(&json_ok(&dir, &["add", extra.to_str().expect("utf-8")]));
    json_ok(&dir, &["unpin", &blob]);
    // Room for the pinned dataset (and its manifest), not for the unpinned blob too.
    let quota_gib = (size + (64 << 10)) as f64 / (1u64 << 30) as f64;
    let cfg = config(
        &tmp.path().join("cfg"),
        &format!("[storage]\nquota_gib = {quota_gib}\n"),
    );
    let _node = Node::start_with(&dir, &["--config", &cfg]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let all = json_ok(&dir, &["ls", "--all"]);
        let blobs = all["blobs"].as_array().expect("blobs");
        if !blobs.iter().any(|b| b["hash"] == blob.as_str()) {
            assert_eq!(all["datasets"][0]["hash"], root.as_str());
            assert_eq!(all["datasets"][0]["complete"], true, "pinned data is kept");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the unpinned blob is still there"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn a_node_reports_its_status_metrics_and_json_logs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("dataset");
    make_dataset(&src, 200 << 10);
    let dir = tmp.path().join("node");
    add(&dir, &src);
    let cfg = config(
        &tmp.path().join("cfg"),
        "[metrics]\nlisten = \"127.0.0.1:0\"\n[storage]\nquota_gib = 1\n",
    );
    let log = tmp.path().join("node.log");
    let node = Node::start_logging(
        &dir,
        &["--log-format", "json", "--config", &cfg],
        &log,
        "info",
    );

    let status = json_ok(&dir, &["node", "status"]);
    assert_eq!(status["datasets"], 1);
    assert_eq!(status["pinned"], 1);
    assert_eq!(status["quota_bytes"], 1u64 << 30);
    assert!(status["stored_bytes"].as_u64().expect("bytes") > 200 << 10);
    let text = commons(&dir)
        .args(["node", "status"])
        .output()
        .expect("status");
    assert!(String::from_utf8_lossy(&text.stdout).contains("of a 1.00 GiB quota"));

    let metrics_url = node.ready["metrics"].as_str().expect("metrics address");
    let addr = metrics_url
        .trim_start_matches("http://")
        .trim_end_matches("/metrics");
    let metrics = http(addr, "GET", "/metrics", &[]);
    assert_eq!(metrics.status, 200);
    let body = metrics.text();
    assert!(body.contains("commons_datasets 1"), "{body}");
    assert!(body.contains("commons_quota_bytes 1073741824"), "{body}");

    node.stop();
    let logs = fs::read_to_string(&log).expect("logs");
    let lines: Vec<&str> = logs.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "info logs were written");
    for l in lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{l}");
    }
}

#[test]
fn a_gateway_with_fetch_missing_fetches_from_the_network_what_it_lacks() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("dataset");
    make_dataset(&src, 1 << 20);
    let seeder_dir = tmp.path().join("seeder");
    let root = hash_of(&json_ok(
        &seeder_dir,
        &["add", src.to_str().expect("utf-8")],
    ));
    // Both are DHT servers (loopback is not public, so `auto` would make clients).
    // And a 1 MiB file on its own (a blob, announced by itself).
    let lone = tmp.path().join("lone.bin");
    fs::write(&lone, common::pattern(1 << 20, 9)).expect("write");
    let lone_hash = hash_of(&json_ok(
        &seeder_dir,
        &["add", lone.to_str().expect("utf-8")],
    ));
    let seeder = Node::start_with(&seeder_dir, &["--dht-mode", "server"]);
    let cfg = config(&tmp.path().join("cfg"), "");
    let cfg = {
        // At most ~537 KB per file fetched on demand: the 1 MiB shard is refused.
        let text = fs::read_to_string(&cfg).expect("read")
            + "fetch_missing = true\nfetch_missing_max_gib = 0.0005\n";
        fs::write(&cfg, text).expect("write");
        cfg
    };
    let gw_dir = tmp.path().join("gateway");
    let gateway = Node::start_with(
        &gw_dir,
        &[
            "--config",
            &cfg,
            "--dht-mode",
            "server",
            "--bootstrap",
            &seeder.addr(),
        ],
    );
    let gw = gateway_addr(&gateway);
    // The gateway's node holds nothing: the listing fetches the manifest only (found in
    // the DHT), a file request fetches that file.
    let listing = wait_for_http_ok(&gw, &format!("/dataset/{root}"), 30);
    let listing: serde_json::Value = serde_json::from_slice(&listing.body).expect("json");
    assert_eq!(listing["files"].as_array().map(Vec::len), Some(4));
    let all = json_ok(&gw_dir, &["ls", "--all"]);
    assert_eq!(
        all["datasets"][0]["complete"], false,
        "only the manifest so far: {all}"
    );
    let too_big = http(
        &gw,
        "GET",
        &format!("/dataset/{root}/shards/model-00001.safetensors"),
        &[],
    );
    assert_eq!(too_big.status, 403, "{}", too_big.text());
    assert!(
        too_big
            .text()
            .contains("larger than this gateway fetches on demand"),
        "{}",
        too_big.text()
    );
    // A bare blob's size is not known before the fetch: it stops once past the limit.
    let r = http(&gw, "GET", &format!("/blob/{lone_hash}"), &[]);
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("larger than"), "{}", r.text());
    let path = "shards/model-00002.safetensors";
    let size = fs::metadata(src.join(path)).expect("stat").len();
    // A HEAD is answered from the manifest, without fetching the file.
    let head = http(&gw, "HEAD", &format!("/dataset/{root}/{path}"), &[]);
    assert_eq!(head.status, 200, "{}", head.text());
    assert_eq!(
        head.header("content-length"),
        Some(size.to_string().as_str())
    );
    let files = json_ok(&gw_dir, &["ls", &root]);
    let held = files["files"]
        .as_array()
        .and_then(|f| f.iter().find(|f| f["path"] == path))
        .map(|f| f["held"].clone());
    assert_eq!(
        held,
        Some(serde_json::json!(0)),
        "not fetched by a HEAD: {files}"
    );
    let r = http(&gw, "GET", &format!("/dataset/{root}/{path}"), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.body == fs::read(src.join(path)).expect("read"),
        "byte-identical"
    );
    // Without fetch_missing, a hash nobody holds is a clear 404 either way; here the
    // network has none either, so it is a 502 naming the failure.
    let unknown = "cd".repeat(32);
    let r = http(&gw, "GET", &format!("/blob/{unknown}"), &[]);
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.text().contains("cannot fetch"), "{}", r.text());
    // What HTTP clients made the node fetch is not pinned: the quota (or `gc`) may take
    // it, so a stranger cannot fill the disk with data nobody can remove.
    let pinned = json_ok(&gw_dir, &["ls", "--pinned", "--all"]);
    assert!(
        pinned["datasets"].as_array().expect("datasets").is_empty()
            && pinned["blobs"].as_array().expect("blobs").is_empty(),
        "{pinned}"
    );
    let collected = json_ok(&gw_dir, &["gc"]);
    assert!(
        !collected["blobs"].as_array().expect("blobs").is_empty(),
        "garbage collection can take it: {collected}"
    );
}

/// Polls `node status` on `dir` until `check` holds (at most `secs`); returns the last.
#[test]
fn mirror_entries_change_at_run_time_and_status_shows_each_and_the_gateway_traffic() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("dataset");
    make_dataset(&src, 1 << 20);
    let seeder_dir = tmp.path().join("seeder");
    add(&seeder_dir, &src);
    // Both DHT servers (loopback is not public, so `auto` would make clients).
    let seeder = Node::start_with(&seeder_dir, &["--dht-mode", "server"]);
    let ticket = seeder.ticket();
    let root = ticket
        .parse::<commons_protocol::Ticket>()
        .expect("ticket")
        .hash
        .to_string();
    let mirror_dir = tmp.path().join("mirror");
    // Configured by hash alone: found in the DHT once the node has joined it.
    let cfg = config(
        &tmp.path().join("cfg"),
        &format!("[mirror]\ndatasets = [{{ target = \"{root}\", name = \"org/data\" }}]\n"),
    );
    let log = tmp.path().join("mirror.log");
    let mirror = Node::start_logging(
        &mirror_dir,
        &[
            "--config",
            &cfg,
            "--dht-mode",
            "server",
            "--bootstrap",
            &seeder.addr(),
        ],
        &log,
        "warn",
    );

    let status = status_until(&mirror_dir, 60, |s| s["mirror"][0]["state"] == "complete");
    let entry = &status["mirror"][0];
    assert_eq!(entry["state"], "complete", "{status}");
    assert_eq!(entry["source"], "config");
    assert_eq!(entry["name"], "org/data@main");
    assert!(entry["size"].as_u64() > Some(1 << 20), "{entry}");

    // Added while the node runs, with no restart and no config edit: a dataset nobody
    // holds, failing, with the error and when it is tried again.
    let unknown = "cd".repeat(32);
    let added = json_ok(&mirror_dir, &["mirror", "add", &unknown]);
    assert_eq!(added["changed"], true);
    let status = status_until(&mirror_dir, 60, |s| {
        s["mirror"]
            .as_array()
            .is_some_and(|m| m.iter().any(|e| e["state"] == "failing"))
    });
    let failing = status["mirror"]
        .as_array()
        .expect("mirror")
        .iter()
        .find(|e| e["target"] == unknown.as_str())
        .expect("the unknown entry");
    assert_eq!(failing["state"], "failing", "{status}");
    assert!(
        failing["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("no provider")),
        "{failing}"
    );
    assert!(failing["retry_at"].as_u64().is_some());

    // Gateway traffic counts in the status.
    let gw = gateway_addr(&mirror);
    let r = http(
        &gw,
        "GET",
        "/dataset/org/data/shards/model-00001.safetensors",
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let status = status_until(&mirror_dir, 10, |s| {
        s["gateway_bytes"].as_u64() >= Some(1 << 20)
    });
    assert!(
        status["gateway_bytes"].as_u64() >= Some(1 << 20),
        "{status}"
    );
    assert!(status["gateway_responses"].as_u64() >= Some(1), "{status}");
    // The entry that could be fetched was fetched without a 'fetch failed' warning: the
    // mirror waited for the network before its first attempt.
    let logs = fs::read_to_string(&log).expect("log");
    assert!(
        !logs
            .lines()
            .any(|l| l.contains("fetch failed") && l.contains(&root)),
        "{logs}"
    );

    // Removed at run time; saved across restarts.
    json_ok(&mirror_dir, &["mirror", "rm", &unknown]);
    mirror.stop();
    let listed = {
        let out = commons(&mirror_dir)
            .args(["--json", "--config", &cfg, "mirror", "ls"])
            .output()
            .expect("ls");
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("json")
    };
    let targets: Vec<&str> = listed["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["target"].as_str())
        .collect();
    assert_eq!(targets, [root.as_str()], "{listed}");
    assert_eq!(listed["entries"][0]["source"], "config");
    // A config file entry is removed in the file, and says so.
    let out = commons(&mirror_dir)
        .args(["--config", &cfg, "mirror", "rm", &root])
        .output()
        .expect("rm");
    assert!(String::from_utf8_lossy(&out.stderr).contains("config file"));
    let out = commons(&mirror_dir)
        .args(["mirror", "rm", &unknown])
        .output()
        .expect("rm");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not mirrored here"));
}
