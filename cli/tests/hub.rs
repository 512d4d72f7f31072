//! End-to-end: Hub repositories imported from a Hub-compatible origin (the test origin in
//! `commons_simulations::hub_origin`, on loopback), verified against the origin's ids, shared
//! between mirrors through the DHT, followed as `main` moves, and resumed after a kill.

mod common;

use std::{fs, path::Path, time::Duration};

use common::{commons, http, json_ok, pattern, status_until, Node};
use commons_simulations::hub_origin::HubOrigin;

/// The test origin and the runtime it is served from.
struct Origin {
    hub: HubOrigin,
    rt: tokio::runtime::Runtime,
}

impl Origin {
    fn start() -> Self {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let hub = rt.block_on(HubOrigin::start()).expect("origin starts");
        Self { hub, rt }
    }

    /// Publishes `folder` as the new `main` of `repo`; returns the commit.
    fn publish(&self, kind: &str, repo: &str, folder: &Path) -> String {
        self.rt
            .block_on(self.hub.publish(kind, repo, folder, "main"))
            .expect("publish")
    }

    fn url(&self) -> String {
        self.hub.url()
    }

    fn addr(&self) -> String {
        self.url().trim_start_matches("http://").to_string()
    }
}

/// A small model: a config, an LFS weights file, a nested file; `weights` bytes of weights.
fn make_model(root: &Path, weights: usize, seed: u8) -> u64 {
    fs::create_dir_all(root.join("nested/deep")).expect("mkdir");
    fs::write(root.join("config.json"), b"{\"hidden_size\": 64}\n").expect("write");
    fs::write(root.join("model.safetensors"), pattern(weights, seed)).expect("write");
    fs::write(root.join("nested/deep/notes.txt"), pattern(5000, 7)).expect("write");
    fs::write(root.join("tokenizer.json"), b"{\"vocab\": {}}\n").expect("write");
    common::files(root)
        .iter()
        .map(|(_, b)| b.len() as u64)
        .sum()
}

/// The origin's tree listing of `repo` at `main`, by path: (oid, lfs oid).
fn origin_ids(origin: &Origin, repo: &str) -> Vec<(String, String, Option<String>)> {
    let reply = http(
        &origin.addr(),
        "GET",
        &format!("/api/models/{repo}/tree/main?recursive=true"),
        &[],
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    let entries: Vec<serde_json::Value> = serde_json::from_slice(&reply.body).expect("json");
    let mut ids: Vec<_> = entries
        .iter()
        .filter(|e| e["type"] == "file")
        .map(|e| {
            (
                e["path"].as_str().expect("path").to_string(),
                e["oid"].as_str().expect("oid").to_string(),
                e["lfs"]["oid"].as_str().map(str::to_string),
            )
        })
        .collect();
    ids.sort();
    ids
}

fn add_hf(dir: &Path, origin: &Origin, source: &str, extra: &[&str]) -> std::process::Output {
    let url = origin.url();
    let mut args = vec!["--json", "add", source, "--origin", url.as_str()];
    args.extend_from_slice(extra);
    commons(dir).args(&args).output().expect("run commons")
}

fn ok_json(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

#[test]
fn a_hub_repository_is_imported_verified_and_exported_identically() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("model");
    let total = make_model(&src, 300_000, 1);
    let origin = Origin::start();
    // Two entries per page: the listing is followed through its `Link`s.
    origin.hub.set_page_size(2);
    let commit = origin.publish("model", "acme/model", &src);
    let dir = tmp.path().join("node");

    let imported = ok_json(&add_hf(&dir, &origin, "hf://acme/model", &[]));
    assert_eq!(imported["commit"], commit.as_str());
    assert_eq!(imported["files"], 4);
    assert_eq!(imported["origin_bytes"], total);
    let names: Vec<&str> = imported["names"]
        .as_array()
        .expect("names")
        .iter()
        .filter_map(|n| n.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "acme/model@main".to_string(),
            format!("acme/model@{commit}")
        ]
    );

    // Byte-identical export, by name.
    let out = tmp.path().join("out");
    json_ok(
        &dir,
        &["export", "acme/model", out.to_str().expect("utf-8")],
    );
    assert_eq!(common::files(&out), common::files(&src));

    // The manifest records the origin's ids: git blob ids, and SHA-256 for the LFS file.
    origin.hub.set_page_size(1000);
    let listing = json_ok(&dir, &["ls", "acme/model"]);
    let mut recorded: Vec<_> = listing["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| {
            let hub = &f["hub"];
            let lfs = hub["lfs"].as_bool().expect("lfs flag");
            (
                f["path"].as_str().expect("path").to_string(),
                hub["git_oid"].as_str().expect("git oid").to_string(),
                lfs.then(|| hub["sha256"].as_str().expect("sha256").to_string()),
            )
        })
        .collect();
    recorded.sort();
    assert_eq!(recorded, origin_ids(&origin, "acme/model"));
    assert!(recorded
        .iter()
        .any(|(p, _, lfs)| p == "model.safetensors" && lfs.is_some()));

    // Again: everything is held, nothing is downloaded, the same root.
    let again = ok_json(&add_hf(&dir, &origin, "hf://acme/model", &[]));
    assert_eq!(again["hash"], imported["hash"]);
    assert_eq!(again["origin_bytes"], 0);
    assert_eq!(again["held_files"], 4);
}

#[test]
fn a_gated_repository_needs_its_token_which_goes_only_to_the_origin() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("model");
    make_model(&src, 20_000, 2);
    let origin = Origin::start();
    origin.publish("model", "acme/gated", &src);
    origin.hub.require_token("acme/gated", "s3cret-token");
    let dir = tmp.path().join("node");

    let out = add_hf(&dir, &origin, "hf://acme/gated", &[]);
    assert!(!out.status.success());
    let err: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json error");
    assert_eq!(err["kind"], "invalid_input", "{err}");
    assert!(
        err["error"].as_str().expect("text").contains("token"),
        "{err}"
    );

    let token = tmp.path().join("token");
    fs::write(&token, "s3cret-token\n").expect("write");
    let ok = ok_json(&add_hf(
        &dir,
        &origin,
        "hf://acme/gated",
        &["--token-file", token.to_str().expect("utf-8")],
    ));
    assert_eq!(ok["files"], 4);
    // The token is not in anything the command printed.
    assert!(!ok.to_string().contains("s3cret"));
}

#[test]
fn a_corrupted_byte_from_the_origin_is_refused_naming_the_file_and_nothing_of_it_is_kept() {
    // Streamed straight into the store, and staged in incoming/ first (8 MiB and more).
    for weights in [200_000, 9 << 20] {
        corrupted_byte_refused(weights);
    }
}

fn corrupted_byte_refused(weights: usize) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("model");
    make_model(&src, weights, 3);
    let origin = Origin::start();
    origin.publish("model", "acme/model", &src);
    origin
        .hub
        .corrupt("acme/model", "model.safetensors", 100_000);
    let dir = tmp.path().join("node");

    let out = add_hf(&dir, &origin, "hf://acme/model", &[]);
    assert!(!out.status.success());
    let err: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json error");
    let text = err["error"].as_str().expect("text");
    assert_eq!(err["kind"], "corrupt", "{err}");
    assert!(
        text.contains("model.safetensors") && text.contains(&origin.url()),
        "names the file and the origin: {text}"
    );

    // The store is consistent and holds nothing of the bad file.
    let verified = json_ok(&dir, &["verify"]);
    assert_eq!(
        verified["corrupt"].as_array().map(Vec::len),
        Some(0),
        "{verified}"
    );
    let mut bad = fs::read(src.join("model.safetensors")).expect("read");
    bad[100_000] ^= 0xff;
    let bad_hash = blake3::hash(&bad).to_hex().to_string();
    let all = json_ok(&dir, &["ls", "--all"]);
    assert!(
        !all.to_string().contains(&bad_hash),
        "the corrupted content is not stored"
    );
    assert!(!all.to_string().contains(
        &blake3::hash(&fs::read(src.join("model.safetensors")).expect("read"))
            .to_hex()
            .to_string()
    ));
    assert!(
        fs::read_dir(dir.join("incoming")).map_or(true, |mut d| d.next().is_none()),
        "no staged copy of the refused file is kept"
    );
}

/// A node config: a gateway-less mirror of `acme/model` on `origin`, checked every second.
fn mirror_config(dir: &Path, origin: &Origin) -> String {
    fs::create_dir_all(dir).expect("mkdir");
    let path = dir.join("commons.toml");
    fs::write(
        &path,
        format!(
            "[mirror]\ndatasets = [{{ hf = \"acme/model\", origin = \"{}\", interval = 1 }}]\n",
            origin.url()
        ),
    )
    .expect("write config");
    path.to_str().expect("utf-8").to_string()
}

fn mirror_complete(dir: &Path, secs: u64) -> serde_json::Value {
    let status = status_until(dir, secs, |s| s["mirror"][0]["state"] == "complete");
    assert_eq!(status["mirror"][0]["state"], "complete", "{status}");
    status
}

#[test]
fn a_second_mirror_fetches_from_the_first_and_refuses_a_peer_whose_ids_differ() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("model");
    let total = make_model(&src, 1 << 20, 4);
    let origin = Origin::start();
    let commit = origin.publish("model", "acme/model", &src);

    // A hostile peer: a Hugging Face snapshot of that commit with one file changed. Added,
    // it records the commit as its upstream and answers for it, with its own ids.
    let forged = tmp
        .path()
        .join(format!("hf/models--acme--model/snapshots/{commit}"));
    make_model(&forged, 1 << 20, 99);
    let liar_dir = tmp.path().join("liar");
    json_ok(&liar_dir, &["add", forged.to_str().expect("utf-8")]);
    let liar = Node::start_with(&liar_dir, &["--dht-mode", "server"]);

    let first_dir = tmp.path().join("first");
    let first_cfg = mirror_config(&first_dir.join("cfg"), &origin);
    let first_log = tmp.path().join("first.log");
    let first = Node::start_logging(
        &first_dir,
        &[
            "--dht-mode",
            "server",
            "--config",
            &first_cfg,
            "--bootstrap",
            &liar.addr(),
        ],
        &first_log,
        "info",
    );
    mirror_complete(&first_dir, 60);
    let served_to_first = origin.hub.bytes_served();
    assert_eq!(
        served_to_first, total,
        "the first mirror takes everything from the origin"
    );

    // The second mirror is told only of the origin and the network.
    origin.hub.reset_counters();
    let second_dir = tmp.path().join("second");
    let second_cfg = mirror_config(&second_dir.join("cfg"), &origin);
    let _second = Node::start_with(
        &second_dir,
        &[
            "--dht-mode",
            "server",
            "--config",
            &second_cfg,
            "--bootstrap",
            &first.addr(),
        ],
    );
    mirror_complete(&second_dir, 90);
    let from_origin = origin.hub.bytes_served();
    assert!(
        from_origin * 10 <= total,
        "the second mirror took {from_origin} of {total} bytes from the origin"
    );
    // Same dataset, same root, both pinned and named.
    let a = json_ok(&first_dir, &["ls", "acme/model"]);
    let b = json_ok(&second_dir, &["ls", "acme/model"]);
    assert_eq!(a["hash"], b["hash"]);

    // The first mirror met only the liar at first: it refused the liar's copy, naming it.
    let log = fs::read_to_string(&first_log).expect("log");
    assert!(
        log.lines()
            .any(|l| l.contains("refused a peer's copy") && l.contains(&liar.peer_id())),
        "the liar's copy was refused: {log}"
    );
}

#[test]
fn a_mirror_follows_main_keeps_both_commits_and_fetches_only_what_changed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let v1 = tmp.path().join("v1");
    make_model(&v1, 200_000, 5);
    let origin = Origin::start();
    let c1 = origin.publish("model", "acme/model", &v1);
    let dir = tmp.path().join("mirror");
    let cfg = mirror_config(&dir.join("cfg"), &origin);
    let node = Node::start_with(&dir, &["--config", &cfg]);
    mirror_complete(&dir, 60);

    // main moves: only the weights changed.
    let v2 = tmp.path().join("v2");
    make_model(&v2, 200_000, 6);
    origin.hub.reset_counters();
    let c2 = origin.publish("model", "acme/model", &v2);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let names = loop {
        let names = json_ok(&dir, &["name", "ls"]).to_string();
        if names.contains(&c2) || std::time::Instant::now() > deadline {
            break names;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(names.contains(&c1) && names.contains(&c2), "{names}");
    assert_eq!(
        origin.hub.bytes_served(),
        200_000,
        "only the changed file was fetched again"
    );
    // Both commits are served: each exports as it was.
    for (commit, src) in [(&c1, &v1), (&c2, &v2)] {
        let out = tmp.path().join(format!("out-{commit}"));
        json_ok(
            &dir,
            &[
                "export",
                &format!("acme/model@{commit}"),
                out.to_str().expect("utf-8"),
            ],
        );
        assert_eq!(common::files(&out), common::files(src));
    }
    drop(node);
}

#[test]
fn an_import_killed_half_way_resumes_without_fetching_verified_files_again() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("data");
    fs::create_dir_all(&src).expect("mkdir");
    for i in 0..6u8 {
        // Odd seeds: `pattern` makes seeds 2k and 2k+1 the same bytes.
        fs::write(
            src.join(format!("part-{i}.bin")),
            pattern(256 * 1024, 2 * i + 1),
        )
        .expect("write");
    }
    let total = 6 * 256 * 1024u64;
    let origin = Origin::start();
    origin.publish("dataset", "acme/data", &src);
    origin.hub.set_rate(1 << 20);
    let dir = tmp.path().join("node");
    let url = origin.url();
    let mut child = commons(&dir)
        .args(["--json", "add", "hf://datasets/acme/data", "--origin", &url])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    // Killed (SIGKILL) once more than half the bytes have left the origin.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while origin.hub.bytes_served() < total / 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    let first = origin.hub.bytes_served();
    assert!(first < total, "killed before the end ({first} of {total})");

    origin.hub.set_rate(0);
    origin.hub.reset_counters();
    let resumed = ok_json(&add_hf(&dir, &origin, "hf://datasets/acme/data", &[]));
    let held = resumed["held_files"].as_u64().expect("held");
    assert!(
        held >= 1,
        "files verified before the kill are kept: {resumed}"
    );
    assert_eq!(resumed["origin_bytes"], total - held * 256 * 1024);
    assert_eq!(origin.hub.bytes_served(), total - held * 256 * 1024);
    let out = tmp.path().join("out");
    json_ok(&dir, &["export", "acme/data", out.to_str().expect("utf-8")]);
    assert_eq!(common::files(&out), common::files(&src));
    let verified = json_ok(&dir, &["verify"]);
    assert_eq!(
        verified["corrupt"].as_array().map(Vec::len),
        Some(0),
        "{verified}"
    );
}

#[test]
fn two_mirrors_starting_at_once_share_files_instead_of_each_taking_all_from_the_origin() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("model");
    fs::create_dir_all(&src).expect("mkdir");
    for i in 0..8u8 {
        fs::write(
            src.join(format!("model-{i:05}-of-00008.safetensors")),
            // Odd seeds: `pattern` makes seeds 2k and 2k+1 the same bytes.
            pattern(256 * 1024, 2 * i + 1),
        )
        .expect("write");
    }
    let total = 8 * 256 * 1024u64;
    let origin = Origin::start();
    origin.publish("model", "acme/model", &src);
    // The origin's uplink is the bottleneck (shared by both mirrors): 1 MiB/s.
    origin.hub.set_rate(1 << 20);
    let a_dir = tmp.path().join("a");
    let a_cfg = mirror_config(&a_dir.join("cfg"), &origin);
    let a = Node::start_with(&a_dir, &["--dht-mode", "server", "--config", &a_cfg]);
    let b_dir = tmp.path().join("b");
    let b_cfg = mirror_config(&b_dir.join("cfg"), &origin);
    let _b = Node::start_with(
        &b_dir,
        &[
            "--dht-mode",
            "server",
            "--config",
            &b_cfg,
            "--bootstrap",
            &a.addr(),
        ],
    );
    mirror_complete(&a_dir, 60);
    mirror_complete(&b_dir, 60);
    let served = origin.hub.bytes_served();
    eprintln!("the origin sent {served} bytes for two mirrors of {total}");
    assert!(
        served < 2 * total,
        "the origin sent {served} bytes for two mirrors of {total}: they took no file from each other"
    );
    let a_files = json_ok(&a_dir, &["ls", "acme/model"]);
    let b_files = json_ok(&b_dir, &["ls", "acme/model"]);
    assert_eq!(a_files["hash"], b_files["hash"]);
}

#[test]
fn the_gateway_answers_for_an_imported_repository_only_as_its_type() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("data");
    fs::create_dir_all(&src).expect("mkdir");
    fs::write(src.join("train.csv"), b"a,b\n1,2\n").expect("write");
    let origin = Origin::start();
    let commit = origin.publish("dataset", "acme/data", &src);
    let dir = tmp.path().join("node");
    ok_json(&add_hf(&dir, &origin, "hf://datasets/acme/data", &[]));
    let cfg = tmp.path().join("commons.toml");
    fs::write(&cfg, "[gateway]\nlisten = \"127.0.0.1:0\"\n").expect("write config");
    let node = Node::start_with(&dir, &["--config", cfg.to_str().expect("utf-8")]);
    let gw = common::gateway_addr(&node);
    let as_dataset = http(&gw, "GET", "/api/datasets/acme/data", &[]);
    assert_eq!(as_dataset.status, 200, "{}", as_dataset.text());
    let info: serde_json::Value = serde_json::from_slice(&as_dataset.body).expect("json");
    assert_eq!(info["sha"], commit.as_str(), "the upstream commit");
    let file = http(
        &gw,
        "GET",
        "/datasets/acme/data/resolve/main/train.csv",
        &[],
    );
    assert_eq!(file.status, 200);
    assert_eq!(file.header("x-repo-commit"), Some(commit.as_str()));
    for wrong in ["/api/models/acme/data", "/acme/data/resolve/main/train.csv"] {
        let reply = http(&gw, "GET", wrong, &[]);
        assert_eq!(reply.status, 404, "{wrong}");
        assert_eq!(
            reply.header("x-error-code"),
            Some("RepoNotFound"),
            "{wrong}"
        );
    }
}

#[test]
fn a_large_file_cut_off_half_way_resumes_from_where_it_stopped() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("model");
    fs::create_dir_all(&src).expect("mkdir");
    let size = 12u64 << 20; // above the staging threshold (8 MiB)
    fs::write(src.join("model.safetensors"), pattern(size as usize, 9)).expect("write");
    let origin = Origin::start();
    origin.publish("model", "acme/big", &src);
    origin.hub.set_rate(8 << 20);
    let dir = tmp.path().join("node");
    let url = origin.url();
    let mut child = commons(&dir)
        .args(["--json", "add", "hf://acme/big", "--origin", &url])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while origin.hub.bytes_served() < size / 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    let first = origin.hub.bytes_served();
    assert!(first < size, "killed before the end ({first} of {size})");

    origin.hub.set_rate(0);
    origin.hub.reset_counters();
    ok_json(&add_hf(&dir, &origin, "hf://acme/big", &[]));
    let again = origin.hub.bytes_served();
    assert!(
        again <= size - first + (1 << 20),
        "the second attempt fetched {again} bytes after {first} of {size}"
    );
    let out = tmp.path().join("out");
    json_ok(&dir, &["export", "acme/big", out.to_str().expect("utf-8")]);
    assert_eq!(common::files(&out), common::files(&src));
    assert!(
        fs::read_dir(dir.join("incoming")).map_or(true, |mut d| d.next().is_none()),
        "the staged download is gone once imported"
    );
}
