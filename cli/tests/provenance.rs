//! End-to-end provenance: publisher keys, signatures that travel with a dataset and are
//! checked against a publisher, and signed names in the DHT of real nodes on loopback
//! (publish, resolve, a newer version, a replayed older record, forged and oversized
//! records, the publisher gone, a mirror following the name).

mod common;

use std::{
    fs,
    path::{Path, PathBuf},
    process::Output,
    time::Duration,
};

use common::{commons, eventually, files, json_ok, make_dataset, Node};

/// Every node a DHT server (loopback addresses are not public), saved state every second.
const SERVER: &str = "[dht]\nmode = \"server\"\nsave_interval_secs = 1\n";

fn run(dir: &Path, args: &[&str]) -> Output {
    commons(dir)
        .arg("--json")
        .args(args)
        .output()
        .expect("run commons")
}

/// Runs a command that must fail; returns its error message (stderr).
fn fails(dir: &Path, args: &[&str]) -> String {
    let out = run(dir, args);
    assert!(!out.status.success(), "commons {args:?} should fail");
    assert_eq!(
        out.status.code(),
        Some(1),
        "a clear error, not a crash: {out:?}"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn node_dir(root: &Path, name: &str, extra_config: &str) -> PathBuf {
    let dir = root.join(name);
    fs::create_dir_all(&dir).expect("mkdir");
    fs::write(dir.join("config.toml"), format!("{SERVER}{extra_config}")).expect("config");
    dir
}

fn s(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// Generates key `name` on `dir`; returns its public key text.
fn key(dir: &Path, name: &str) -> String {
    json_ok(dir, &["key", "generate", name])["public_key"]
        .as_str()
        .expect("public key")
        .to_string()
}

fn hash_of(reply: &serde_json::Value) -> String {
    reply["hash"].as_str().expect("hash").to_string()
}

#[test]
fn keys_are_made_listed_exported_and_bad_ones_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("d");
    let p256 = key(&dir, "lab-x");
    assert!(p256.starts_with("p256:"), "{p256}");
    let ed = json_ok(&dir, &["key", "generate", "fast", "--algorithm", "ed25519"]);
    assert!(ed["public_key"]
        .as_str()
        .expect("key")
        .starts_with("ed25519:"));
    let listed = json_ok(&dir, &["key", "ls"]);
    assert_eq!(listed["keys"].as_array().expect("keys").len(), 2);
    let pem = tmp.path().join("pub.pem");
    let out = json_ok(&dir, &["key", "export-public", "lab-x", "-o", s(&pem)]);
    assert_eq!(out["public_key"], p256.as_str());
    let text = fs::read_to_string(&pem).expect("pem");
    assert!(text.starts_with("-----BEGIN PUBLIC KEY-----"), "{text}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let secret = dir.join("keys/lab-x.key");
        let mode = fs::metadata(&secret)
            .expect("key file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert!(fails(&dir, &["key", "generate", "lab-x"]).contains("exists already"));
    assert!(fails(&dir, &["key", "generate", "../escape"]).contains("key name"));
    let junk = tmp.path().join("junk.pem");
    fs::write(
        &junk,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .expect("write");
    assert!(fails(&dir, &["key", "import", "junk", s(&junk)]).contains("not a PEM private key"));
    assert!(fails(&dir, &["sign", "0000", "--key", "nope"]).contains("no key named"));

    // Names outside the trust policy, or under another publisher's rule: refused before
    // any network is asked.
    let other = key(&tmp.path().join("o"), "other");
    fs::write(
        dir.join("config.toml"),
        format!("[trust]\n\"lab-x/*\" = \"{other}\"\n"),
    )
    .expect("config");
    let err = fails(&dir, &["resolve", "lab-y/corpus"]);
    assert!(
        err.contains("no [trust] rule names the publisher of lab-y/corpus"),
        "{err}"
    );
    let err = fails(&dir, &["resolve", &format!("{p256}/lab-x/corpus")]);
    assert!(err.contains("the trust policy names publisher"), "{err}");
    let err = fails(&dir, &["publish", "lab-x/corpus", "0000", "--key", "lab-x"]);
    assert!(err.contains("trust policy names publisher"), "{err}");
    let err = fails(&dir, &["resolve", "p256:zz/lab-x/corpus"]);
    assert!(err.contains("publisher"), "{err}");
    fs::write(
        dir.join("config.toml"),
        "[trust]\n\"lab-x\" = \"p256:00\"\n",
    )
    .expect("config");
    let err = fails(&dir, &["key", "ls"]);
    assert!(err.contains("trust"), "a bad policy is named: {err}");
}

#[test]
fn a_signature_travels_with_the_dataset_and_a_stripped_one_is_refused_by_policy() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("corpus");
    make_dataset(&src, 50_000);
    let publisher = node_dir(tmp.path(), "publisher", "");
    let public = key(&publisher, "lab-x");
    let pem = tmp.path().join("lab-x.pem");
    json_ok(
        &publisher,
        &["key", "export-public", "lab-x", "-o", s(&pem)],
    );
    let root = hash_of(&json_ok(&publisher, &["add", s(&src)]));
    let signed = json_ok(&publisher, &["sign", &root, "--key", "lab-x"]);
    assert_eq!(signed["publisher"], public.as_str());
    let seeder = Node::start(&publisher);

    // Fetched on another node: the signature came with it, and checks.
    let fetcher = node_dir(tmp.path(), "fetcher", "");
    let out = tmp.path().join("out");
    json_ok(&fetcher, &["get", &seeder.ticket(), "-o", s(&out)]);
    let report = json_ok(&fetcher, &["verify", &root, "--publisher", s(&pem)]);
    assert_eq!(report["signed_by"], public.as_str());
    assert_eq!(report["signatures"][0]["verified"], true);
    assert!(
        out.join("model.sig").is_file(),
        "get -o writes the signature beside the files"
    );
    let mut exported = files(&out);
    exported.retain(|(p, _)| p != Path::new("model.sig"));
    assert!(exported == files(&src), "the files are the dataset's");

    // Another key, or a damaged one, fails clearly.
    let other = node_dir(tmp.path(), "other", "");
    let other_key = key(&other, "impostor");
    let err = fails(&fetcher, &["verify", &root, "--publisher", &other_key]);
    assert!(err.contains("no valid signature by publisher"), "{err}");
    assert!(fails(&fetcher, &["verify", &root, "--publisher", "p256:00"]).contains("publisher"));

    // A peer holding the same data unsigned: the copy fetched from it shows as unsigned,
    // and a fetch that requires the publisher refuses it before fetching files.
    let unsigned = node_dir(tmp.path(), "unsigned", "");
    json_ok(&unsigned, &["add", s(&src)]);
    let bare = Node::start(&unsigned);
    let strict = node_dir(
        tmp.path(),
        "strict",
        &format!("[trust]\n\"lab-x/*\" = \"{public}\"\n"),
    );
    let err = fails(&strict, &["get", &bare.ticket(), "--publisher", &public]);
    assert!(
        err.contains("carries no valid signature by publisher"),
        "{err}"
    );
    assert_eq!(
        json_ok(&strict, &["ls"])["datasets"]
            .as_array()
            .map(Vec::len),
        Some(0)
    );
    json_ok(&strict, &["get", &bare.ticket()]);
    let err = fails(&strict, &["verify", &root, "--publisher", &public]);
    assert!(err.contains("unsigned"), "{err}");
    // Bound by hand under a name the policy covers, the unsigned copy is not served as the
    // publisher's by the gateway (its own path, nor the Hugging Face API); the signed copy is.
    json_ok(&strict, &["name", "set", "lab-x/corpus", &root]);
    json_ok(&fetcher, &["name", "set", "lab-x/corpus", &root]);
    let gateway = "[gateway]\nlisten = \"127.0.0.1:0\"\n";
    let policy = format!("{SERVER}[trust]\n\"lab-x/*\" = \"{public}\"\n{gateway}");
    fs::write(strict.join("config.toml"), &policy).expect("config");
    fs::write(fetcher.join("config.toml"), &policy).expect("config");
    let strict_node = Node::start(&strict);
    let gw = common::gateway_addr(&strict_node);
    for path in [
        "/dataset/lab-x/corpus",
        "/api/models/lab-x/corpus/tree/main",
    ] {
        let reply = common::http(&gw, "GET", path, &[]);
        assert_eq!(reply.status, 403, "{path}: {}", reply.text());
        assert!(
            reply.text().contains("carries no signature"),
            "{}",
            reply.text()
        );
    }
    let fetcher_node = Node::start(&fetcher);
    let gw = common::gateway_addr(&fetcher_node);
    let reply = common::http(&gw, "GET", "/dataset/lab-x/corpus", &[]);
    assert_eq!(reply.status, 200, "{}", reply.text());
    drop(bare);
    drop(seeder);
}

#[test]
fn a_model_sig_in_a_folder_is_kept_checked_and_exported_byte_identical() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let a = tmp.path().join("a");
    let src = tmp.path().join("model");
    make_dataset(&src, 20_000);
    let public = key(&a, "k");
    let root = hash_of(&json_ok(&a, &["add", s(&src)]));
    json_ok(&a, &["sign", &root, "--key", "k"]);
    let signed_folder = tmp.path().join("signed");
    json_ok(&a, &["export", &root, s(&signed_folder)]);
    let sig = fs::read(signed_folder.join("model.sig")).expect("model.sig");

    // Added elsewhere with its model.sig: same root, the signature kept.
    let b = tmp.path().join("b");
    let added = json_ok(&b, &["add", s(&signed_folder)]);
    assert_eq!(
        hash_of(&added),
        root,
        "model.sig is the signature, not a file"
    );
    assert!(added["signature"].is_string(), "{added}");
    json_ok(&b, &["verify", &root, "--publisher", &public]);
    let again = tmp.path().join("again");
    json_ok(&b, &["export", &root, s(&again)]);
    assert_eq!(fs::read(again.join("model.sig")).expect("model.sig"), sig);

    // A model.sig that does not sign the folder's files is refused (here: another dataset,
    // named by its root).
    fs::write(signed_folder.join("extra.txt"), b"not signed").expect("write");
    let c = tmp.path().join("c");
    let err = fails(&c, &["add", s(&signed_folder)]);
    assert!(
        err.contains("the signature does not match the dataset: it signs dataset"),
        "{err}"
    );
    fs::write(signed_folder.join("model.sig"), b"{not json").expect("write");
    let err = fails(&c, &["add", s(&signed_folder)]);
    assert!(err.contains("model.sig"), "{err}");
}

/// Five nodes; node 0 publishes. Names resolve everywhere, a new version reaches every
/// node, replayed and forged records change nothing, the name outlives its publisher, and
/// a mirror that follows it fetches each version by itself.
#[test]
fn signed_names_resolve_across_five_nodes_and_cannot_be_rolled_back() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let p = node_dir(tmp.path(), "n0", "");
    let public = key(&p, "lab-x");
    let trust = format!("[trust]\n\"lab-x/*\" = \"{public}\"\n");
    let v1_src = tmp.path().join("v1");
    make_dataset(&v1_src, 30_000);
    let v2_src = tmp.path().join("v2");
    make_dataset(&v2_src, 40_000);
    let v1 = hash_of(&json_ok(&p, &["add", s(&v1_src)]));
    let v2 = hash_of(&json_ok(&p, &["add", s(&v2_src)]));
    for root in [&v1, &v2] {
        json_ok(&p, &["sign", root, "--key", "lab-x"]);
    }
    let mut dirs = vec![p.clone()];
    let mut nodes = vec![Node::start(&p)];
    for i in 1..5 {
        let dir = node_dir(tmp.path(), &format!("n{i}"), &trust);
        nodes.push(Node::start_with(&dir, &["--bootstrap", &nodes[0].addr()]));
        dirs.push(dir);
    }
    let name = format!("{public}/lab-x/corpus");
    let resolved = |dir: &Path| -> Option<(String, u64)> {
        let out = run(dir, &["resolve", "lab-x/corpus"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        Some((
            v["record"]["root"].as_str()?.to_string(),
            v["record"]["seq"].as_u64()?,
        ))
    };

    let published = json_ok(&p, &["publish", "lab-x/corpus", &v1, "--key", "lab-x"]);
    assert_eq!(published["record"]["seq"], 1);
    assert!(
        eventually(Duration::from_secs(20), || resolved(&dirs[3])
            == Some((v1.clone(), 1))),
        "v1 resolves on another node"
    );
    // The explicit form needs no trust rule.
    let explicit = json_ok(&dirs[2], &["resolve", &name]);
    assert_eq!(explicit["record"]["root"], v1.as_str());

    // A mirror that follows the name fetches v1 now and v2 once it is published.
    json_ok(
        &dirs[1],
        &[
            "mirror",
            "add",
            "lab-x/corpus",
            "--follow",
            "--interval",
            "1",
        ],
    );
    let bound = |dir: &Path| {
        json_ok(dir, &["name", "ls"])["names"]
            .as_array()
            .expect("names")
            .iter()
            .find(|n| n["name"] == "lab-x/corpus" && n["revision"] == "main")
            .and_then(|n| n["root"].as_str().map(str::to_string))
    };
    assert!(
        eventually(Duration::from_secs(30), || bound(&dirs[1])
            == Some(v1.clone())),
        "the follower fetched and bound v1"
    );

    let published = json_ok(&p, &["publish", "lab-x/corpus", &v2, "--key", "lab-x"]);
    assert_eq!(published["record"]["seq"], 2);
    for dir in &dirs[1..] {
        assert!(
            eventually(Duration::from_secs(20), || resolved(dir)
                == Some((v2.clone(), 2))),
            "v2 resolves on {}",
            dir.display()
        );
    }
    assert!(
        eventually(Duration::from_secs(30), || bound(&dirs[1])
            == Some(v2.clone())),
        "the follower fetched and bound v2 by itself"
    );
    json_ok(&dirs[1], &["verify", &v2, "--publisher", &public]);
    let history = json_ok(&dirs[1], &["resolve", "lab-x/corpus"])["history"]
        .as_array()
        .map(Vec::len);
    assert_eq!(history, Some(2), "the follower saw both versions");

    // A test peer replays v1 (validly signed, older) and forges records: no node stores
    // them (asked directly for what each holds, not through a node's own floor).
    let v1_record = record_bytes(&dirs[1], "lab-x/corpus", 1);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let bootstrap: libp2p::Multiaddr = nodes[2].addr().parse().expect("multiaddr");
    let held = rt.block_on(replay(bootstrap.clone(), &public, v1_record));
    assert!(
        held.replayed.is_err(),
        "every node refused the replayed v1: {:?}",
        held.replayed
    );
    assert!(
        held.corpus_answers >= 3,
        "nodes answered: {}",
        held.corpus_answers
    );
    assert_eq!(
        held.corpus_seqs,
        vec![2; held.corpus_seqs.len()],
        "every node still holds v2"
    );
    assert_eq!(
        held.forged_answers, 0,
        "no node stored the record with a bad signature"
    );
    assert_eq!(
        held.huge_answers, 0,
        "no node stored the record over the size limit"
    );
    for dir in &dirs[1..] {
        assert_eq!(resolved(dir), Some((v2.clone(), 2)), "{}", dir.display());
    }

    // The publisher goes away: a node that never saw the name resolves it, through the
    // nodes that hold it (the follower among them), and fetches it by name.
    let publisher_node = nodes.remove(0);
    publisher_node.stop();
    let fresh = node_dir(tmp.path(), "fresh", &trust);
    let _fresh_node = Node::start_with(&fresh, &["--bootstrap", &nodes[1].addr()]);
    assert!(
        eventually(Duration::from_secs(20), || resolved(&fresh)
            == Some((v2.clone(), 2))),
        "a fresh node resolves v2 with the publisher gone"
    );
    let out = tmp.path().join("by-name");
    json_ok(&fresh, &["get", "lab-x/corpus", "-o", s(&out)]);
    assert!(out.join("model.sig").is_file());
    let mut got = files(&out);
    got.retain(|(p, _)| p != Path::new("model.sig"));
    assert!(got == files(&v2_src), "the files are v2's");
}

/// The encoded record of `name`'s version `seq` from `dir`'s history (as the network
/// carried it: what a replaying peer could have kept).
fn record_bytes(dir: &Path, name: &str, seq: u64) -> Vec<u8> {
    let history = json_ok(dir, &["resolve", name])["history"].clone();
    let hex = history
        .as_array()
        .expect("history")
        .iter()
        .find(|r| r["seq"] == seq)
        .and_then(|r| r["encoded"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("version {seq} in {history}"));
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

/// What the replaying test peer saw.
struct Replay {
    /// The result of its PUT of v1.
    replayed: Result<(), String>,
    /// Answers from nodes for the name afterwards, and their sequence numbers.
    corpus_answers: usize,
    corpus_seqs: Vec<u64>,
    /// Answers from nodes for the forged and the oversized record's keys.
    forged_answers: usize,
    huge_answers: usize,
}

/// A peer that is not a Commons node joins through `bootstrap` and PUTs records directly:
/// the validly signed but older `v1`, then a record with a forged name (its signature no
/// longer matches) and one padded over the size limit, each under a fresh key; then asks
/// the nodes what they hold under each key.
async fn replay(bootstrap: libp2p::Multiaddr, publisher: &str, v1: Vec<u8>) -> Replay {
    use commons_node::{discovery::DiscoveryConfig, net::Host};
    use commons_protocol::{
        provenance::{name_key, PublicKey, SignedNameRecord},
        DatasetName, NameRef,
    };
    let any: fn(&[u8], &[u8]) -> bool = |_, _| true;
    let public = PublicKey::parse(publisher).expect("key");
    let host = Host::start(
        libp2p::identity::Keypair::generate_ed25519(),
        &["/ip4/127.0.0.1/udp/0/quic-v1".parse().expect("addr")],
        &DiscoveryConfig::client(vec![bootstrap.clone()]),
    )
    .await
    .expect("test peer");
    host.bootstrap(&[bootstrap]).await.expect("joined");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let key = name_key(&public, &NameRef::parse("lab-x/corpus").expect("name"));
    let old = SignedNameRecord::decode_signed(&v1).expect("v1 is a valid record");
    assert_eq!(old.record.seq, 1);
    // Its own (empty) store takes v1; every node it sends v1 to refuses it.
    let replayed = host
        .put_name(key, v1)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string());
    let found = host.get_names(key, 16, any).await.expect("lookup");
    let from_nodes: Vec<_> = found.records.iter().filter(|(p, _)| p.is_some()).collect();
    let peers: Vec<libp2p::PeerId> = from_nodes.iter().filter_map(|(p, _)| *p).collect();
    let corpus_seqs = from_nodes
        .iter()
        .map(|(_, bytes)| {
            SignedNameRecord::decode_signed(bytes)
                .expect("nodes hold valid records")
                .record
                .seq
        })
        .collect();
    let mut forged = old.clone();
    forged.record.name = DatasetName::parse("lab-x/forged").expect("name");
    let forged_key = name_key(&public, &forged.record.name_ref());
    host.put_name_to(forged_key, forged.encode(), peers.clone())
        .await
        .expect("sent");
    let mut huge = old.clone();
    huge.record.name = DatasetName::parse("lab-x/huge").expect("name");
    let huge_key = name_key(&public, &huge.record.name_ref());
    let mut bytes = huge.encode();
    bytes.resize(64 * 1024, 7);
    host.put_name_to(huge_key, bytes, peers)
        .await
        .expect("sent");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let answers = |found: commons_node::net::FoundNames| {
        found.records.iter().filter(|(p, _)| p.is_some()).count()
    };
    Replay {
        replayed,
        corpus_answers: from_nodes.len(),
        corpus_seqs,
        forged_answers: answers(host.get_names(forged_key, 16, any).await.expect("lookup")),
        huge_answers: answers(host.get_names(huge_key, 16, any).await.expect("lookup")),
    }
}
