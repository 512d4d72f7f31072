//! Bundles end to end, the way a user runs them: `pack` on one store, `bundle verify` with
//! no store, `unpack` on another; bad, cut and hostile bundles.

mod common;

use std::{fs, path::Path, process::Output};

use common::{commons, files, json_ok, make_dataset};

/// Adds a dataset to `store` and packs it into `bundle`; returns the root.
fn packed_dataset(tmp: &Path, store: &Path, bundle: &Path, big: usize) -> String {
    let data = tmp.join("data");
    make_dataset(&data, big);
    let added = json_ok(store, &["add", data.to_str().expect("test step")]);
    let root = added["hash"].as_str().expect("test step").to_string();
    json_ok(
        store,
        &["pack", &root, "-o", bundle.to_str().expect("test step")],
    );
    root
}

fn run(store: &Path, args: &[&str]) -> Output {
    commons(store).args(args).output().expect("run commons")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_bundle_round_trips_byte_identical_and_is_deterministic() {
    let tmp = tempfile::tempdir().expect("test step");
    let (seeder, site) = (tmp.path().join("seeder"), tmp.path().join("site"));
    let bundle = tmp.path().join("set.tar");
    let root = packed_dataset(tmp.path(), &seeder, &bundle, 700_000);

    // The same roots give the same bytes.
    let again = tmp.path().join("again.tar");
    json_ok(
        &seeder,
        &["pack", &root, "-o", again.to_str().expect("test step")],
    );
    assert!(fs::read(&bundle).expect("test step") == fs::read(&again).expect("test step"));

    // Checked with no store at all.
    let nowhere = tmp.path().join("no-store");
    let verified = json_ok(
        &nowhere,
        &["bundle", "verify", bundle.to_str().expect("test step")],
    );
    assert_eq!(verified["roots"], 1);
    assert_eq!(verified["blobs"], 5, "4 files (one empty) and the manifest");
    assert!(!nowhere.exists(), "bundle verify opened no store");
    json_ok(
        &nowhere,
        &[
            "bundle",
            "verify",
            "--quick",
            bundle.to_str().expect("test step"),
        ],
    );

    // B3SUMS inside the extracted tar: what `b3sum -c B3SUMS` checks, line by line.
    let extracted = tmp.path().join("extracted");
    fs::create_dir_all(&extracted).expect("test step");
    let tar = std::process::Command::new("tar")
        .arg("xf")
        .arg(&bundle)
        .arg("-C")
        .arg(&extracted)
        .status()
        .expect("test step");
    assert!(tar.success());
    let sums = fs::read_to_string(extracted.join("B3SUMS")).expect("test step");
    assert_eq!(sums.lines().count(), 2 * 5 + 1, "{sums}");
    for line in sums.lines() {
        let (hash, name) = line.split_once("  ").expect("test step");
        let bytes = fs::read(extracted.join(name)).expect("test step");
        assert_eq!(blake3::hash(&bytes).to_hex().as_str(), hash, "{name}");
    }
    if let Ok(out) = std::process::Command::new("b3sum")
        .args(["-c", "B3SUMS"])
        .current_dir(&extracted)
        .output()
    {
        assert!(out.status.success(), "b3sum -c: {}", stderr(&out));
    }

    // Unpacked on a fresh store: the dataset, complete and pinned, exports identical.
    let out = json_ok(&site, &["unpack", bundle.to_str().expect("test step")]);
    assert_eq!(out["complete"][0], root.as_str());
    assert_eq!(out["blobs_imported"], 5);
    let export = tmp.path().join("export");
    json_ok(
        &site,
        &["export", &root, export.to_str().expect("test step")],
    );
    assert!(files(&export) == files(&tmp.path().join("data")));
    let listed = json_ok(&site, &["ls"]);
    assert!(listed.to_string().contains(&root), "{listed}");

    // Again: nothing is read twice.
    let out = json_ok(&site, &["unpack", bundle.to_str().expect("test step")]);
    assert_eq!(
        (out["blobs_imported"].as_u64(), out["blobs_held"].as_u64()),
        (Some(0), Some(5))
    );
}

#[test]
fn a_flipped_byte_is_named_and_nothing_of_that_blob_is_kept() {
    let tmp = tempfile::tempdir().expect("test step");
    let (seeder, site) = (tmp.path().join("seeder"), tmp.path().join("site"));
    let bundle = tmp.path().join("set.tar");
    let root = packed_dataset(tmp.path(), &seeder, &bundle, 700_000);
    let big = blake3::hash(
        &fs::read(tmp.path().join("data/shards/model-00001.safetensors")).expect("test step"),
    )
    .to_hex()
    .to_string();
    let mut bytes = fs::read(&bundle).expect("test step");
    // The big shard's data starts after its header; 600,000 bytes in is group 36.
    let name = format!("blobs/{big}");
    let header = bytes
        .windows(name.len() + 1)
        .position(|w| w[..name.len()] == *name.as_bytes() && w[name.len()] == 0)
        .expect("the shard's header");
    let at = header + 512 + 600_000;
    bytes[at] ^= 0x40;
    let bad = tmp.path().join("bad.tar");
    fs::write(&bad, &bytes).expect("test step");

    let out = run(
        &seeder,
        &["bundle", "verify", bad.to_str().expect("test step")],
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&name) && err.contains("bytes 589824..606208"),
        "names the file and the 16 KiB range: {err}"
    );

    let out = run(&site, &["unpack", bad.to_str().expect("test step")]);
    assert!(!out.status.success(), "unpack refuses it");
    assert!(stderr(&out).contains(&name), "{}", stderr(&out));
    // Nothing of that blob was kept: the good bundle then imports all of it anew.
    let out = json_ok(&site, &["unpack", bundle.to_str().expect("test step")]);
    assert_eq!(out["complete"][0], root.as_str());
    assert!(
        out["bytes_imported"].as_u64().expect("test step") >= 700_000,
        "the shard came from the good bundle: {out}"
    );
}

#[test]
fn a_cut_bundle_resumes_where_it_stopped_and_shows_only_when_complete() {
    let tmp = tempfile::tempdir().expect("test step");
    let (seeder, site) = (tmp.path().join("seeder"), tmp.path().join("site"));
    let bundle = tmp.path().join("set.tar");
    let root = packed_dataset(tmp.path(), &seeder, &bundle, 3_000_000);
    let whole = fs::read(&bundle).expect("test step");
    let cut = tmp.path().join("cut.tar");
    fs::write(&cut, &whole[..whole.len() * 6 / 10]).expect("test step");

    let out = run(&site, &["unpack", cut.to_str().expect("test step")]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("truncated"), "{}", stderr(&out));

    let out = run(
        &site,
        &[
            "--json",
            "unpack",
            "--resume",
            cut.to_str().expect("test step"),
        ],
    );
    assert_eq!(out.status.code(), Some(3), "work left: {}", stderr(&out));
    let first: serde_json::Value = serde_json::from_slice(&out.stdout).expect("test step");
    assert_eq!(first["incomplete"][0], root.as_str());
    let imported_first = first["bytes_imported"].as_u64().expect("test step");
    assert!(imported_first > 1_000_000, "{first}");
    let listed = json_ok(&site, &["ls"]);
    assert!(
        !listed.to_string().contains(&root),
        "not listed while incomplete: {listed}"
    );

    // The rest arrives: only what is missing is read, at most one span again.
    let out = json_ok(&site, &["unpack", bundle.to_str().expect("test step")]);
    assert_eq!(out["complete"][0], root.as_str());
    let total = 13 + 3_000_000 + 1_000_007;
    let imported = out["bytes_imported"].as_u64().expect("test step");
    assert!(
        imported + imported_first <= total + 256 * 1024 + 200,
        "re-read at most one 256 KiB span: {imported} + {imported_first} of {total}"
    );
    let export = tmp.path().join("export");
    json_ok(
        &site,
        &["export", &root, export.to_str().expect("test step")],
    );
    assert!(files(&export) == files(&tmp.path().join("data")));
}

#[test]
fn hostile_bundles_get_clear_errors() {
    let tmp = tempfile::tempdir().expect("test step");
    let store = tmp.path().join("store");
    // A tar whose first file climbs out of the folder.
    let evil = tmp.path().join("evil.tar");
    let victim = tmp.path().join("victim");
    fs::create_dir_all(tmp.path().join("src")).expect("test step");
    fs::write(tmp.path().join("victim"), b"keep").expect("test step");
    let status = std::process::Command::new("tar")
        .arg("cf")
        .arg(&evil)
        .arg("-P")
        .arg("-C")
        .arg(tmp.path().join("src"))
        .arg("../victim")
        .status()
        .expect("test step");
    assert!(status.success());
    for args in [
        vec!["bundle", "verify", evil.to_str().expect("test step")],
        vec!["unpack", evil.to_str().expect("test step")],
    ] {
        let out = run(&store, &args);
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains("unexpected file") && stderr(&out).contains("../victim"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    assert_eq!(fs::read(&victim).expect("test step"), b"keep");
    // Not a tar at all.
    let junk = tmp.path().join("junk.tar");
    fs::write(&junk, vec![7u8; 4096]).expect("test step");
    let out = run(
        &store,
        &["bundle", "verify", junk.to_str().expect("test step")],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not a Commons bundle"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn volumes_stdout_plain_files_and_a_required_publisher() {
    let tmp = tempfile::tempdir().expect("test step");
    let (seeder, site) = (tmp.path().join("seeder"), tmp.path().join("site"));
    let bundle = tmp.path().join("set.tar");
    let root = packed_dataset(tmp.path(), &seeder, &bundle, 3_000_000);
    let s = |p: &Path| p.to_str().expect("test step").to_string();

    // Signed by a publisher: `bundle verify --publisher` requires that signature.
    let public = json_ok(&seeder, &["key", "generate", "lab-x"])["public_key"]
        .as_str()
        .expect("test step")
        .to_string();
    json_ok(&seeder, &["sign", &root, "--key", "lab-x"]);
    json_ok(&seeder, &["pack", &root, "-o", &s(&bundle), "--force"]);
    let verified = json_ok(
        &site,
        &["bundle", "verify", &s(&bundle), "--publisher", &public],
    );
    assert_eq!(verified["signed_by_publisher"], 1, "{verified}");
    let other = json_ok(&seeder, &["key", "generate", "lab-y"])["public_key"]
        .as_str()
        .expect("test step")
        .to_string();
    let out = run(
        &site,
        &["bundle", "verify", &s(&bundle), "--publisher", &other],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no signature by"), "{}", stderr(&out));

    // To stdout: the same bytes as the file.
    let out = run(&seeder, &["pack", &root, "-o", "-"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stdout == fs::read(&bundle).expect("test step"));
    assert!(
        stderr(&out).contains("packed 1 dataset"),
        "{}",
        stderr(&out)
    );

    // In volumes of 1 MiB, arriving one at a time at the site.
    let vols = tmp.path().join("vols");
    fs::create_dir_all(&vols).expect("test step");
    let packed = json_ok(
        &seeder,
        &[
            "pack",
            &root,
            "-o",
            &s(&vols.join("set.tar")),
            "--split",
            "1M",
        ],
    );
    let volumes: Vec<String> = packed["files"]
        .as_array()
        .expect("test step")
        .iter()
        .map(|f| f.as_str().expect("test step").to_string())
        .collect();
    assert!(volumes.len() >= 3, "{packed}");
    assert!(volumes[0].ends_with("set.tar.000"), "{volumes:?}");
    let joined: Vec<u8> = volumes
        .iter()
        .flat_map(|v| fs::read(v).expect("test step"))
        .collect();
    assert!(
        joined == fs::read(&bundle).expect("test step"),
        "cat FILE.* is the bundle"
    );
    json_ok(&site, &["bundle", "verify", &s(&vols.join("set.tar"))]);
    let arrived = tmp.path().join("arrived");
    fs::create_dir_all(&arrived).expect("test step");
    for (i, v) in volumes.iter().enumerate() {
        let name = Path::new(v).file_name().expect("test step");
        fs::copy(v, arrived.join(name)).expect("test step");
        let out = run(
            &site,
            &[
                "--json",
                "unpack",
                "--resume",
                &s(&arrived.join("set.tar.000")),
            ],
        );
        let last = i + 1 == volumes.len();
        assert_eq!(
            out.status.code(),
            Some(if last { 0 } else { 3 }),
            "volume {i}: {}",
            stderr(&out)
        );
    }
    let listed = json_ok(&site, &["ls"]);
    assert!(listed.to_string().contains(&root), "{listed}");

    // A new version with one file changed, as a delta: only that file travels.
    let v2_dir = tmp.path().join("v2");
    make_dataset(&v2_dir, 3_000_000);
    fs::write(v2_dir.join("config.json"), br#"{"layers": 3}"#).expect("test step");
    let v2 = json_ok(&seeder, &["add", &s(&v2_dir)])["hash"]
        .as_str()
        .expect("test step")
        .to_string();
    let delta = tmp.path().join("delta.tar");
    let packed = json_ok(&seeder, &["pack", &v2, "--since", &root, "-o", &s(&delta)]);
    assert_eq!(packed["requires"][0], root.as_str());
    assert!(
        packed["data_bytes"].as_u64().expect("test step") < 2_000,
        "{packed}"
    );
    let out = run(&tmp.path().join("fresh-store"), &["unpack", &s(&delta)]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!("holds only what dataset {root} lacks")),
        "{}",
        stderr(&out)
    );
    let out = json_ok(&site, &["unpack", &s(&delta)]);
    assert_eq!(out["complete"][0], v2.as_str());
    assert_eq!(
        out["blobs_imported"], 2,
        "the new config and v2's manifest: {out}"
    );

    // Plain files with no store, and the signature beside them.
    let out_dir = tmp.path().join("plain");
    let nowhere = tmp.path().join("no-store");
    let written = json_ok(&nowhere, &["unpack", &s(&bundle), "--to", &s(&out_dir)]);
    assert_eq!(written["datasets"][0]["root"], root.as_str());
    assert!(!nowhere.exists(), "no store was opened");
    let mut got = files(&out_dir);
    let sig = got
        .iter()
        .position(|(p, _)| p == Path::new("model.sig"))
        .expect("model.sig written");
    assert!(!got.remove(sig).1.is_empty());
    assert!(
        got == files(&tmp.path().join("data")),
        "the files, identical"
    );
    let again = run(&nowhere, &["unpack", &s(&bundle), "--to", &s(&out_dir)]);
    assert!(
        again.status.success(),
        "identical files are kept: {}",
        stderr(&again)
    );
}

#[test]
fn a_signed_name_travels_and_an_older_one_is_refused() {
    let tmp = tempfile::tempdir().expect("test step");
    let (publisher, site) = (tmp.path().join("publisher"), tmp.path().join("site"));
    let s = |p: &Path| p.to_str().expect("test step").to_string();
    json_ok(&publisher, &["key", "generate", "lab-x"]);
    let mut bundles = Vec::new();
    for version in 1..=2 {
        let dir = tmp.path().join(format!("v{version}"));
        make_dataset(&dir, 50_000 * version);
        let root = json_ok(&publisher, &["add", &s(&dir)])["hash"]
            .as_str()
            .expect("test step")
            .to_string();
        json_ok(&publisher, &["sign", &root, "--key", "lab-x"]);
        // No network where the publisher is: the record is signed and kept here.
        let published = json_ok(
            &publisher,
            &[
                "publish",
                "lab-x/corpus",
                &root,
                "--key",
                "lab-x",
                "--offline",
            ],
        );
        assert_eq!(published["record"]["seq"], version as u64);
        let bundle = tmp.path().join(format!("v{version}.tar"));
        let packed = json_ok(&publisher, &["pack", &root, "-o", &s(&bundle)]);
        assert_eq!(packed["names"], 1, "{packed}");
        let verified = json_ok(&site, &["bundle", "verify", &s(&bundle)]);
        assert_eq!(verified["names"], 1);
        bundles.push((root, bundle));
    }
    let out = json_ok(&site, &["unpack", &s(&bundles[1].1)]);
    assert_eq!(out["names"], 1, "{out}");
    let out = run(&site, &["unpack", &s(&bundles[0].1)]);
    assert!(!out.status.success(), "the older record is refused");
    assert!(stderr(&out).contains("rollback"), "{}", stderr(&out));
    let listed = json_ok(&site, &["ls"]);
    assert!(
        !listed.to_string().contains(&bundles[0].0),
        "nothing of the refused bundle was stored: {listed}"
    );
}
