//! End-to-end tests of the `commons` binary, run the way a user runs it.

mod common;

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use commons_node::store::layout;

struct Env {
    /// A node running on the data dir, when the test goes through one (dropped first).
    node: Option<common::Node>,
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        Self {
            node: None,
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// An environment whose data dir has a node running: every command goes through it.
    fn with_node() -> Self {
        let mut env = Self::new();
        fs::create_dir_all(env.data_dir()).expect("mkdir");
        env.node = Some(common::Node::start(&env.data_dir()));
        env
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn data_dir(&self) -> PathBuf {
        self.path("data")
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_commons"));
        cmd.env("COMMONS_DATA_DIR", self.data_dir()).args(args);
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run commons")
    }

    /// Runs a command that must succeed and returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "commons {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    /// Runs a command that must fail; returns its stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "commons {args:?} should fail");
        String::from_utf8(out.stderr).expect("utf-8 output")
    }

    /// `commons --json add`, returning the hash.
    fn add(&self, path: &Path) -> String {
        let out = self.ok(&["--json", "add", path.to_str().expect("utf-8 path")]);
        let v: serde_json::Value = serde_json::from_str(&out).expect("json");
        v["hash"].as_str().expect("hash").to_string()
    }
}

fn pattern(size: usize, seed: u8) -> Vec<u8> {
    (0..size)
        .map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed) ^ (i >> 10) as u8)
        .collect()
}

fn assert_same_tree(a: &Path, b: &Path) {
    let list = |root: &Path| {
        let mut files: Vec<(PathBuf, Vec<u8>)> = walk(root)
            .into_iter()
            .map(|p| {
                let data = fs::read(&p).expect("read");
                (p.strip_prefix(root).expect("inside").to_path_buf(), data)
            })
            .collect();
        files.sort();
        files
    };
    let (la, lb) = (list(a), list(b));
    assert_eq!(la.len(), lb.len(), "same number of files");
    for ((pa, da), (pb, db)) in la.iter().zip(&lb) {
        assert_eq!(pa, pb);
        assert!(da == db, "{} differs", pa.display());
    }
}

fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(root).expect("read_dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Runs `test` twice: on a store the command opens itself, then through a running node.
/// The commands and what they must print are the same either way.
fn with_and_without_a_node(test: fn(&Env)) {
    test(&Env::new());
    let mut env = Env::with_node();
    test(&env);
    // The node holds the store's lock: had any command opened the store itself, it would
    // have failed. The node must also have outlived them all.
    let node = env.node.as_mut().expect("started");
    assert!(
        node.child.try_wait().expect("wait").is_none(),
        "the node still runs"
    );
}

const EDGE_SIZES: [usize; 10] = [
    0,
    1,
    1023,
    1024,
    1025,
    16383,
    16384,
    16385,
    (1 << 20) + 1,
    3 * 256 * 1024 + 1,
];

#[test]
fn add_export_round_trip_for_every_edge_size_and_a_unicode_tree() {
    with_and_without_a_node(add_export_round_trip_for_every_edge_size_and_a_unicode_tree_in);
}

fn add_export_round_trip_for_every_edge_size_and_a_unicode_tree_in(env: &Env) {
    let src = env.path("dataset");
    for (i, size) in EDGE_SIZES.into_iter().enumerate() {
        let data = pattern(size, i as u8);
        let file = src.join(format!("sizes/file-{size}.bin"));
        fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
        fs::write(&file, &data).expect("write");
        // Each size on its own, as a blob.
        let hash = env.add(&file);
        assert_eq!(
            hash,
            blake3::hash(&data).to_hex().as_str(),
            "blob hash is BLAKE3"
        );
        let out = env.path(&format!("blob-{size}"));
        env.ok(&["export", &hash, out.to_str().expect("utf-8")]);
        assert!(fs::read(&out).expect("exported") == data, "size {size}");
    }
    fs::create_dir_all(src.join("données/日本/ñ")).expect("mkdir");
    fs::write(
        src.join("données/日本/ñ/weights.safetensors"),
        pattern(40_000, 9),
    )
    .expect("write");
    fs::write(src.join("données/README ü.md"), "# hé").expect("write");

    let root = env.add(&src);
    assert_eq!(env.add(&src), root, "the same folder gives the same hash");
    let out = env.path("out");
    let printed = env.ok(&["export", &root, out.to_str().expect("utf-8")]);
    assert!(printed.contains("12 files"), "{printed}");
    assert_same_tree(&src, &out);

    let ls: serde_json::Value = serde_json::from_str(&env.ok(&["--json", "ls"])).expect("json");
    let ds = &ls["datasets"][0];
    assert_eq!(ds["hash"], root.as_str());
    assert_eq!(ds["files"], 12);
    assert_eq!(ds["complete"], true);
    assert!(env.ok(&["verify"]).contains("all intact"));
    assert!(env.ok(&["verify", &root[..10]]).contains("all intact"));
}

#[test]
fn export_refuses_to_overwrite_unless_forced() {
    with_and_without_a_node(export_refuses_to_overwrite_unless_forced_in);
}

fn export_refuses_to_overwrite_unless_forced_in(env: &Env) {
    let src = env.path("ds");
    fs::create_dir_all(&src).expect("mkdir");
    fs::write(src.join("a.txt"), "new content").expect("write");
    let root = env.add(&src);
    let out = env.path("out");
    fs::create_dir_all(&out).expect("mkdir");
    fs::write(out.join("a.txt"), "precious").expect("write");
    let err = env.fails(&["export", &root, out.to_str().expect("utf-8")]);
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(
        fs::read_to_string(out.join("a.txt")).expect("read"),
        "precious"
    );
    env.ok(&["export", "--force", &root, out.to_str().expect("utf-8")]);
    assert_eq!(
        fs::read_to_string(out.join("a.txt")).expect("read"),
        "new content"
    );
}

#[cfg(unix)]
#[test]
fn export_never_writes_through_a_symlink_out_of_the_target() {
    with_and_without_a_node(export_never_writes_through_a_symlink_out_of_the_target_in);
}

fn export_never_writes_through_a_symlink_out_of_the_target_in(env: &Env) {
    let src = env.path("ds");
    fs::create_dir_all(src.join("sub")).expect("mkdir");
    fs::write(src.join("sub/file"), "payload").expect("write");
    let root = env.add(&src);
    let out = env.path("out");
    let outside = env.path("outside");
    fs::create_dir_all(&out).expect("mkdir");
    fs::create_dir_all(&outside).expect("mkdir");
    std::os::unix::fs::symlink(&outside, out.join("sub")).expect("symlink");
    // An identical file reached through the link is not taken as already exported.
    fs::write(outside.join("file"), "payload").expect("write");
    let err = env.fails(&["export", &root, out.to_str().expect("utf-8")]);
    assert!(err.contains("outside the target folder"), "{err}");
    fs::remove_file(outside.join("file")).expect("rm");
    let err = env.fails(&["export", "--force", &root, out.to_str().expect("utf-8")]);
    assert!(err.contains("outside the target folder"), "{err}");
    assert!(
        fs::read_dir(&outside).expect("read").next().is_none(),
        "nothing written outside"
    );
}

/// Flips one byte of a stored chunk directly in RocksDB, the way disk rot would.
fn corrupt_stored_byte(data_dir: &Path, hash: &str, offset: u64) {
    let path = data_dir.join("store");
    let mut opts = rocksdb::Options::default();
    opts.create_if_missing(false);
    let db = rocksdb::DB::open_cf(&opts, &path, layout::ALL_CFS).expect("open raw db");
    let blobs = db.cf_handle(layout::CF_BLOBS).expect("cf");
    let hash_bytes = blake3::Hash::from_hex(hash).expect("hex");
    let meta: layout::BlobMeta = layout::decode(
        &db.get_cf(blobs, hash_bytes.as_bytes())
            .expect("get")
            .expect("meta"),
    )
    .expect("decode");
    let span: u64 = layout::decode_u64(
        &db.get_cf(
            db.cf_handle(layout::CF_META).expect("cf"),
            layout::META_SPAN_BYTES,
        )
        .expect("get")
        .expect("span"),
    )
    .expect("span");
    let data = db.cf_handle(layout::CF_DATA).expect("cf");
    let key = layout::span_key(meta.id, offset / span);
    let mut row = db.get_cf(data, key).expect("get").expect("row");
    row[(offset % span) as usize] ^= 0xff;
    db.put_cf(data, key, row).expect("put");
}

#[test]
fn corruption_inside_rocksdb_is_named_by_verify_and_refused_by_export() {
    let env = Env::new();
    let file = env.path("weights.bin");
    let data = pattern(20 * 16384, 3);
    fs::write(&file, &data).expect("write");
    let src = env.path("ds");
    fs::create_dir_all(&src).expect("mkdir");
    fs::copy(&file, src.join("weights.bin")).expect("copy");
    let root = env.add(&src);
    let hash = blake3::hash(&data).to_hex().to_string();
    corrupt_stored_byte(&env.data_dir(), &hash, 7 * 16384 + 100);

    let out = env.run(&["verify"]);
    assert_eq!(out.status.code(), Some(1), "verify fails on corruption");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("CORRUPT blob {hash}")) && stdout.contains("bytes 114688..131072"),
        "{stdout}"
    );
    let named = String::from_utf8_lossy(&env.run(&["verify", &root]).stdout).to_string();
    assert!(named.contains("(file weights.bin)"), "{named}");

    let target = env.path("out");
    let err = env.fails(&["export", &root, target.to_str().expect("utf-8")]);
    assert!(
        err.contains(&format!("blob {hash} is corrupt at byte offset 114688")),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one clear line: {err}");
    assert!(!target.join("weights.bin").exists(), "no bad file written");
    let err = env.fails(&[
        "export",
        &hash,
        env.path("blob.out").to_str().expect("utf-8"),
    ]);
    assert!(err.contains("corrupt"), "{err}");
    assert!(!env.path("blob.out").exists());
}

#[test]
fn add_killed_half_way_leaves_a_consistent_store_and_runs_again() {
    let env = Env::new();
    let file = env.path("big.bin");
    let size = 256 << 20;
    fs::write(&file, pattern(size, 5)).expect("write");
    let store_dir = env.data_dir().join("store");
    let mut child = env
        .cmd(&["add", file.to_str().expect("utf-8")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    // Kill once the import has put a good part of the file on disk, but before it ends.
    common::kill_when_dir_grows(&mut child, &store_dir, 40 << 20);

    // The store opens, holds nothing half-done, and verifies clean.
    assert!(env.ok(&["verify"]).contains("checked 0 blobs"));
    assert!(env.ok(&["ls"]).contains("empty"));
    // Run again: completes and round-trips.
    let hash = env.add(&file);
    assert!(env.ok(&["verify"]).contains("checked 1 blobs"));
    let out = env.path("copy.bin");
    env.ok(&["export", &hash, out.to_str().expect("utf-8")]);
    assert!(fs::read(&out).expect("read") == fs::read(&file).expect("read"));
}

#[test]
fn bad_input_gets_one_clear_line_and_a_failing_exit() {
    with_and_without_a_node(bad_input_gets_one_clear_line_and_a_failing_exit_in);
}

fn bad_input_gets_one_clear_line_and_a_failing_exit_in(env: &Env) {
    let cases: [(&[&str], &str); 6] = [
        (
            &["add", "/nonexistent/path"],
            "cannot add /nonexistent/path",
        ),
        (&["export", &"ab".repeat(32), "out"], "is not in the store"),
        (&["export", "commons1notaticket", "out"], "invalid ticket"),
        (&["rm", "hello"], "neither a hash"),
        (&["rm", "commons€xyz"], "neither a hash"),
        (
            &["verify", "abcd"],
            "no blob or dataset in the store starts with 'abcd'",
        ),
    ];
    for (args, expected) in cases {
        let err = env.fails(args);
        assert!(err.contains(expected), "{args:?}: {err}");
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "{args:?}: one line: {err}"
        );
    }
    // clap's own usage errors also fail.
    assert!(!env.run(&["export"]).status.success());
}

#[test]
fn rm_keeps_shared_files_and_the_other_dataset_exports() {
    with_and_without_a_node(rm_keeps_shared_files_and_the_other_dataset_exports_in);
}

fn rm_keeps_shared_files_and_the_other_dataset_exports_in(env: &Env) {
    for (name, own) in [("a", 1u8), ("b", 2u8)] {
        let d = env.path(name);
        fs::create_dir_all(&d).expect("mkdir");
        fs::write(d.join("shared.bin"), pattern(100_000, 42)).expect("write");
        fs::write(d.join("own.bin"), pattern(50_000, own)).expect("write");
    }
    let a = env.add(&env.path("a"));
    let b = env.add(&env.path("b"));
    let out = env.ok(&["rm", &a]);
    assert!(
        out.contains("removed dataset") && out.contains("kept 1 blob"),
        "{out}"
    );
    env.ok(&["export", &b, env.path("out").to_str().expect("utf-8")]);
    assert_same_tree(&env.path("b"), &env.path("out"));
    let err = env.fails(&["rm", &a]);
    assert!(err.contains("not in the store"), "{err}");
}
