//! Pack and unpack between stores: delta bundles and name records (rollback refusal).
//! The command-line round trips are in `cli/tests/bundle.rs`.

use std::{fs, path::Path, sync::Arc};

use commons_protocol::{
    provenance::{name_key, KeyAlgorithm, NameRecord, SecretKey},
    Hash, NameRef,
};

use super::*;
use crate::store::StoreOptions;

fn open_store(dir: &Path) -> Store {
    Store::open(dir, StoreOptions::default()).expect("open store")
}

fn quiet() -> Progress {
    Progress::new(Arc::new(()))
}

/// Adds a folder of `files` to `store` as a dataset; returns its root.
fn add(store: &Store, dir: &Path, files: &[(&str, Vec<u8>)]) -> Hash {
    for (path, data) in files {
        let at = dir.join(path);
        fs::create_dir_all(at.parent().expect("test step")).expect("test step");
        fs::write(at, data).expect("test step");
    }
    store
        .add_folder(dir, &crate::store::NoProgress)
        .expect("add")
        .root
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(29) ^ seed ^ (i >> 13) as u8)
        .collect()
}

/// Packs `roots` (a delta since `since`) from `store` into a bundle in memory, opened.
fn bundle(store: &Store, roots: &[Hash], since: &[Hash]) -> Archive<Vec<u8>> {
    let mut bytes = Vec::new();
    pack(store, roots, since, &mut bytes, &quiet()).expect("pack");
    let len = bytes.len() as u64;
    Archive::open(bytes, len).expect("open bundle")
}

#[test]
fn a_delta_bundle_carries_only_new_blobs_and_needs_its_base() {
    let tmp = tempfile::tempdir().expect("test step");
    let seeder = open_store(&tmp.path().join("seeder"));
    let shared = pattern(900_000, 1);
    let v1 = add(
        &seeder,
        &tmp.path().join("v1"),
        &[
            ("weights.bin", shared.clone()),
            ("README.md", b"v1".to_vec()),
        ],
    );
    let v2 = add(
        &seeder,
        &tmp.path().join("v2"),
        &[
            ("weights.bin", shared),
            ("README.md", b"v2, better".to_vec()),
        ],
    );
    let full = bundle(&seeder, &[v1], &[]);
    let delta = bundle(&seeder, &[v2], &[v1]);
    assert_eq!(delta.index.requires, vec![v1]);
    assert!(
        delta.index.data_bytes() < 10_000,
        "only the new README and the two manifests: {}",
        delta.index.data_bytes()
    );
    delta
        .verify(archive::Depth::Full, None, &mut |_| {})
        .expect("a delta bundle checks alone");

    // Onto a store without v1: refused, naming it, before anything is stored.
    let empty = open_store(&tmp.path().join("empty"));
    let err = unpack(&empty, &delta, false, &quiet()).expect_err("needs v1");
    assert!(err.message.contains(&v1.to_string()), "{err}");
    assert!(empty.blob(&v2).expect("test step").is_none());

    // Onto a store holding v1: only the new blobs come in, and v2 is complete.
    let site = open_store(&tmp.path().join("site"));
    unpack(&site, &full, false, &quiet()).expect("unpack v1");
    let out = unpack(&site, &delta, false, &quiet()).expect("unpack the delta");
    assert_eq!(out.complete, vec![v2]);
    assert_eq!(
        (out.blobs_imported, out.blobs_held),
        (2, 1),
        "the new README and v2's manifest; v1's manifest was held"
    );
    assert!(site.dataset_complete(&v2).expect("test step"));
}

#[test]
fn a_bundle_with_an_older_name_record_is_refused() {
    let tmp = tempfile::tempdir().expect("test step");
    let seeder = open_store(&tmp.path().join("seeder"));
    let v1 = add(
        &seeder,
        &tmp.path().join("v1"),
        &[("a.txt", b"one".to_vec())],
    );
    let v2 = add(
        &seeder,
        &tmp.path().join("v2"),
        &[("a.txt", b"two".to_vec())],
    );
    let key = SecretKey::from_seed(KeyAlgorithm::Ed25519, &[9; 32]).expect("test step");
    let name = NameRef::parse("lab-x/corpus").expect("test step");
    let dht_key = name_key(&key.public(), &name);
    let record = |root: Hash, seq: u64| {
        NameRecord::new(&key.public(), &name, root, seq, None, 1..2).sign(&key)
    };
    seeder
        .remember_name(&dht_key, &record(v1, 1), true, false)
        .expect("test step");
    let old = bundle(&seeder, &[v1], &[]);
    assert_eq!(old.index.names.len(), 1);
    seeder
        .remember_name(&dht_key, &record(v2, 2), true, false)
        .expect("test step");
    let new = bundle(&seeder, &[v2], &[]);
    assert_eq!(new.index.names.len(), 1);
    assert!(
        bundle(&seeder, &[v1], &[]).index.names.is_empty(),
        "the store's newest record points at v2 now"
    );

    let site = open_store(&tmp.path().join("site"));
    let out = unpack(&site, &new, false, &quiet()).expect("unpack v2");
    assert_eq!(out.names, 1);
    let seen = site
        .seen_name(&dht_key)
        .expect("test step")
        .expect("remembered");
    assert_eq!(seen.0.record.seq, 2);
    let err = unpack(&site, &old, false, &quiet()).expect_err("a rollback");
    assert!(err.message.contains("rollback"), "{err}");
    assert!(
        site.blob(&v1).expect("test step").is_none(),
        "refused before anything was stored"
    );
    // The same record again is fine.
    unpack(&site, &new, false, &quiet()).expect("the same record again");
}
