//! What each fuzz target checks, for one input: every decoder of peer or user bytes must
//! refuse bad input without panicking, and what it accepts must survive encode → decode
//! unchanged. The `fuzz/` crate's targets call these (libFuzzer, `make fuzz`); the unit test
//! below replays the committed corpus (`fuzz/corpus/<target>/`) on every `make test`, so a
//! crash once found stays fixed without a fuzzer in CI.
//!
//! Each function panics (the fuzzer's finding) only when a property is broken.

use std::str::FromStr;

use crate::{
    manifest::Manifest,
    name::{DatasetName, NameRef},
    partial::group_count,
    provenance::{PublicKey, SecretKey, SignatureBundle, SignedNameRecord, TrustPolicy},
    ticket::Ticket,
    tree::{compute_outboard, encode_verified},
    wire::{
        chunk_ranges, encode_frame, verify_response, BulkResponse, GroupRange, HaveResponse,
        HoldersResponse, HubFileResponse, Request, ResponseHeader, SignaturesResponse,
        UpstreamResponse,
    },
    GitOid, Hash, Sha256, Upstream,
};

/// The check one fuzz target runs on an input.
pub type Check = fn(&[u8]);

/// Fuzz targets whose properties live beside the node's pure parsers (the gateway's Range
/// header, the config file, the Hub origin's JSON), included by path from `node/src`; the
/// node's unit tests replay their corpora.
pub const NODE_TARGETS: &[&str] = &["http_range", "config", "origin_json", "paths_info"];

/// Every fuzz target of this crate's checks, by name: the names of
/// `fuzz/fuzz_targets/*.rs` and of the corpus folders.
pub const TARGETS: &[(&str, Check)] = &[
    ("wire_request", wire_request),
    ("wire_responses", wire_responses),
    ("verified_range", verified_range),
    ("manifest", manifest),
    ("ticket", ticket),
    ("names", names),
    ("hub_ids", hub_ids),
    ("name_record", name_record),
    ("signature_bundle", signature_bundle),
    ("publisher_key", publisher_key),
];

/// Decodes `frame_body` with `decode`; what decodes must re-encode to something that decodes
/// to the same value.
fn round_trip<T, E>(body: &[u8], decode: impl Fn(&[u8]) -> Result<T, E>)
where
    T: serde::Serialize + PartialEq + std::fmt::Debug,
{
    if let Ok(value) = decode(body) {
        let again = encode_frame(&value);
        let decoded = decode(&again[4..]);
        assert!(
            decoded.as_ref().ok() == Some(&value),
            "{value:?} does not survive encode → decode"
        );
    }
}

/// A request frame body (`Request::decode`).
pub fn wire_request(data: &[u8]) {
    round_trip(data, Request::decode);
}

/// Every response frame body a client decodes.
pub fn wire_responses(data: &[u8]) {
    round_trip(data, ResponseHeader::decode);
    round_trip(data, HaveResponse::decode);
    round_trip(data, HoldersResponse::decode);
    round_trip(data, UpstreamResponse::decode);
    round_trip(data, HubFileResponse::decode);
    round_trip(data, BulkResponse::decode);
    round_trip(data, SignaturesResponse::decode);
}

/// A response stream: the honest encoding of part of a blob (the input's tail) verifies and
/// gives the blob's bytes; the same stream with one bit flipped, or cut short, does not.
/// The first four bytes choose the range, the bit and the cut.
pub fn verified_range(data: &[u8]) {
    let Some((control, blob)) = data.split_first_chunk::<4>() else {
        return;
    };
    let size = blob.len() as u64;
    let mut outboard = Vec::new();
    let Ok(root) = compute_outboard(blob, size, &mut outboard) else {
        panic!("hashing a slice cannot fail");
    };
    let groups = group_count(size).max(1);
    let start = u64::from(control[0]) % groups;
    let ranges = chunk_ranges(&[GroupRange { start, end: None }]);
    let mut encoded = Vec::new();
    if encode_verified(root, size, blob, &outboard[..], &ranges, &mut encoded).is_err() {
        panic!("an honest blob must encode");
    }
    let verify = |stream: &[u8]| -> Result<Vec<(u64, Vec<u8>)>, String> {
        verify_response(root, size, &ranges, stream)
            .map(|g| {
                g.map(|g| (g.offset, g.data.to_vec()))
                    .map_err(|e| e.to_string())
            })
            .collect()
    };
    let honest = verify(&encoded).expect("the honest stream verifies");
    for (offset, bytes) in &honest {
        assert_eq!(
            &blob[*offset as usize..*offset as usize + bytes.len()],
            &bytes[..]
        );
    }
    if encoded.is_empty() {
        return;
    }
    let at = usize::from(u16::from_le_bytes([control[1], control[2]])) % encoded.len();
    let mut flipped = encoded.clone();
    flipped[at] ^= 1 << (control[3] % 8);
    assert!(
        verify(&flipped).is_err(),
        "a flipped bit at {at} went unnoticed"
    );
    let cut = at.min(encoded.len() - 1);
    assert!(
        verify(&encoded[..cut]).is_err(),
        "a stream cut at {cut} went unnoticed"
    );
}

/// A manifest: what parses is canonical (its encoding is the input).
pub fn manifest(data: &[u8]) {
    if let Ok(m) = Manifest::from_bytes(data) {
        assert_eq!(
            m.to_bytes(),
            data,
            "a parsed manifest re-encodes to its input"
        );
        assert_eq!(Manifest::from_bytes(&m.to_bytes()), Ok(m));
    }
}

/// A ticket, as text: what parses prints to a ticket that parses to the same thing.
pub fn ticket(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(t) = Ticket::from_str(text) {
        assert_eq!(Ticket::from_str(&t.to_string()), Ok(t));
    }
}

/// Names (`org/name`, `org/name@revision`): what parses prints back to the same name.
pub fn names(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(name) = DatasetName::parse(text) {
        assert_eq!(DatasetName::parse(&name.to_string()), Ok(name));
    }
    if let Ok(r) = NameRef::parse(text) {
        let again = NameRef::parse(&format!("{}@{}", r.name, r.revision)).expect("reparses");
        assert_eq!((again.name, again.revision), (r.name, r.revision));
    }
}

/// Hub ids and an upstream record as a peer's manifest or an origin's listing carries them.
pub fn hub_ids(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(oid) = GitOid::parse(text) {
            assert_eq!(GitOid::parse(&oid.to_string()), Ok(oid));
        }
        if let Ok(sha) = Sha256::parse(text) {
            assert_eq!(Sha256::parse(&sha.to_string()), Ok(sha));
        }
    }
    if let Ok((up, _)) = postcard::take_from_bytes::<Upstream>(data) {
        if up.validate().is_ok() {
            let bytes = postcard::to_stdvec(&up).expect("encodes");
            assert_eq!(
                postcard::from_bytes::<Upstream>(&bytes).ok(),
                Some(up.clone())
            );
            // Its DHT key depends on nothing but its fields.
            assert_eq!(up.dht_key(), up.clone().dht_key());
        }
    }
    let _ = Hash::from_slice(data);
}

/// A signed name record as a peer PUTs it: what decodes (signature checked) is canonical,
/// and its own DHT key accepts it at a time inside its validity.
pub fn name_record(data: &[u8]) {
    if let Ok(r) = SignedNameRecord::decode_signed(data) {
        assert_eq!(
            r.encode(),
            data,
            "a record decodes only from its canonical form"
        );
        let key = crate::provenance::name_key(
            &r.record
                .publisher_key()
                .expect("a checked record has a key"),
            &r.record.name_ref(),
        );
        let at = r.record.issued_unix;
        if at < r.record.expires_unix {
            assert_eq!(
                SignedNameRecord::decode_verified(data, key.as_bytes(), at),
                Ok(r)
            );
        }
    }
}

/// A signature bundle (`model.sig`) from a peer or a folder: parsing and checking against a
/// small manifest refuse bad input without panicking; the check is repeatable.
pub fn signature_bundle(data: &[u8]) {
    if let Ok(bundle) = SignatureBundle::parse(data) {
        let manifest = Manifest::new(vec![crate::ManifestEntry {
            path: "config.json".into(),
            size: 12,
            hash: Hash::of(b"hello world\n"),
            executable: false,
            hub: None,
        }])
        .expect("manifest");
        let first = bundle.check_manifest(&manifest.hash(), &manifest);
        assert_eq!(bundle.check_manifest(&manifest.hash(), &manifest), first);
        let _ = bundle.file_digest();
        let key = SecretKey::from_seed(crate::provenance::KeyAlgorithm::P256, &[1; 32])
            .expect("key")
            .public();
        let _ = bundle.verify_signature(&key);
    }
}

/// Publisher keys (text or PEM), private keys (PEM) and trust rules, as users and config
/// files give them: what parses prints back to the same key.
pub fn publisher_key(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(key) = PublicKey::parse(text) {
        assert_eq!(PublicKey::parse(&key.to_string()).as_ref(), Ok(&key));
        assert_eq!(PublicKey::parse(&key.to_pem()).as_ref(), Ok(&key));
    }
    if let Ok(secret) = SecretKey::from_pem(text) {
        let again = SecretKey::from_pem(&secret.to_pem()).expect("re-reads");
        assert_eq!(again.public(), secret.public());
    }
    if let Some((pattern, key)) = text.split_once('=') {
        let _ = TrustPolicy::from_rules([(pattern, key)]);
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    /// The repository's `fuzz/` folder. `cargo test` sets `CARGO_MANIFEST_DIR` when it runs
    /// the test too: read at run time, it names this checkout even when the test binary was
    /// built from another one sharing the target dir.
    fn fuzz_dir() -> std::path::PathBuf {
        let crate_dir = std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(
            || env!("CARGO_MANIFEST_DIR").into(),
            std::path::PathBuf::from,
        );
        crate_dir.join("../fuzz")
    }

    /// Replays every committed corpus input through its target.
    #[test]
    fn the_fuzz_corpus_replays_clean() {
        let corpus = fuzz_dir().join("corpus");
        let mut replayed = 0;
        for (name, check) in TARGETS {
            let dir = corpus.join(name);
            let entries =
                std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()));
            let mut inputs = 0;
            for entry in entries {
                let path = entry.expect("corpus entry").path();
                // A fuzzer running beside the tests may have just removed it (reduced).
                let data = match std::fs::read(&path) {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    read => read.expect("corpus file"),
                };
                check(&data);
                inputs += 1;
            }
            assert!(inputs > 0, "the corpus of {name} is empty");
            replayed += inputs;
        }
        assert!(replayed >= TARGETS.len());
    }

    /// The fuzz crate has one target per entry of [`TARGETS`] and [`NODE_TARGETS`], and no other.
    #[test]
    fn every_check_has_a_fuzz_target() {
        let dir = fuzz_dir().join("fuzz_targets");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .expect("fuzz targets")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        let mut names: Vec<String> = TARGETS
            .iter()
            .map(|(n, _)| *n)
            .chain(NODE_TARGETS.iter().copied())
            .map(|n| format!("{n}.rs"))
            .collect();
        names.sort();
        assert_eq!(files, names);
    }

    /// Writes the seed corpus: one valid input of each kind per target
    /// (`cargo test --release --workspace --all-targets -- --ignored write_seed_corpus`).
    #[test]
    #[ignore = "writes fuzz/corpus; run by hand when targets change"]
    fn write_seed_corpus() {
        use crate::{
            hub::{HubHasher, RepoKind},
            wire::*,
            ManifestEntry, TicketKind,
        };
        let frame = |v: &dyn erased::Frame| v.body();
        let mut seeds: Vec<(&str, Vec<u8>)> = vec![
            (
                "wire_request",
                frame(&Request::Get {
                    hash: Hash::of(b"a"),
                    ranges: vec![
                        GroupRange {
                            start: 0,
                            end: Some(2),
                        },
                        GroupRange {
                            start: 5,
                            end: None,
                        },
                    ],
                }),
            ),
            (
                "wire_request",
                frame(&Request::Holders {
                    hash: Hash::of(b"b"),
                }),
            ),
            (
                "wire_request",
                frame(&Request::Have {
                    hash: Hash::of(b"c"),
                }),
            ),
            ("wire_request", frame(&Request::Bulk)),
            (
                "wire_request",
                frame(&Request::Upstream {
                    key: Hash::of(b"k"),
                }),
            ),
            (
                "wire_request",
                frame(&Request::HubFile {
                    id: HubFileId::Sha256(Sha256([3; 32])),
                }),
            ),
            (
                "wire_responses",
                frame(&ResponseHeader::Ok { size: 123_456 }),
            ),
            (
                "wire_responses",
                frame(&ResponseHeader::BadRequest("no".into())),
            ),
            (
                "wire_responses",
                frame(&HaveResponse::Held {
                    size: 1 << 20,
                    complete: false,
                    groups: vec![0..3, 10..20],
                }),
            ),
            (
                "wire_responses",
                frame(&HoldersResponse {
                    holders: vec![HolderRecord {
                        peer: vec![1; 38],
                        addrs: vec![vec![4, 127, 0, 0, 1]],
                    }],
                }),
            ),
            (
                "wire_responses",
                frame(&UpstreamResponse {
                    roots: vec![Hash::of(b"r")],
                }),
            ),
            (
                "wire_responses",
                frame(&HubFileResponse {
                    blob: Some((Hash::of(b"f"), 99)),
                    fetching: false,
                }),
            ),
            ("wire_responses", frame(&BulkResponse { port: Some(4434) })),
        ];
        for size in [0usize, 1, 1024, 16 * 1024, 16 * 1024 + 1, 70_000] {
            let mut input = vec![1u8, 7, 0, 3];
            input.extend((0..size).map(|i| (i * 31 + i / 977) as u8));
            seeds.push(("verified_range", input));
        }
        let entry = |path: &str, hub: bool| ManifestEntry {
            path: path.into(),
            size: 5,
            hash: Hash::of(path.as_bytes()),
            executable: path.ends_with(".sh"),
            hub: hub.then(|| {
                let mut h = HubHasher::new(5);
                h.update(b"hello");
                h.finish(path.ends_with(".bin")).expect("sizes add up")
            }),
        };
        let up = Upstream {
            kind: RepoKind::Dataset,
            repo: "acme/data".into(),
            commit: GitOid([9; 20]),
            last_modified: Some("2026-01-02T03:04:05.000Z".into()),
        };
        seeds.push((
            "manifest",
            Manifest::new(vec![entry("a/b.txt", false), entry("run.sh", false)])
                .expect("valid")
                .to_bytes(),
        ));
        seeds.push((
            "manifest",
            Manifest::with_upstream(
                vec![entry("w.bin", true), entry("c.json", true)],
                Some(up.clone()),
            )
            .expect("valid")
            .to_bytes(),
        ));
        let ticket = Ticket { kind: TicketKind::Dataset, hash: Hash::of(b"t"), providers: vec!["/ip4/127.0.0.1/udp/4433/quic-v1/p2p/12D3KooWEU9pHr4wDLhrrqg96gP5VWJkoxyL4jmpcfxZR6KjsYW4".into()] };
        seeds.push(("ticket", ticket.to_string().into_bytes()));
        seeds.push(("names", b"bigscience/bloom-560m@main".to_vec()));
        seeds.push(("names", b"lab-x/corpus".to_vec()));
        seeds.push((
            "hub_ids",
            b"ce013625030ba8dba906f756967f9e9ca394464a".to_vec(),
        ));
        seeds.push(("hub_ids", postcard::to_stdvec(&up).expect("encodes")));
        for algorithm in [
            crate::provenance::KeyAlgorithm::P256,
            crate::provenance::KeyAlgorithm::Ed25519,
        ] {
            let key = SecretKey::from_seed(algorithm, &[7; 32]).expect("key");
            let public = key.public();
            let name = NameRef::parse("lab-x/corpus@v3").expect("name");
            let record = crate::provenance::NameRecord::new(
                &public,
                &name,
                Hash::of(b"root"),
                3,
                Some(Hash::of(b"prev")),
                1_800_000_000..1_800_086_400,
            )
            .sign(&key);
            seeds.push(("name_record", record.encode()));
            seeds.push(("publisher_key", public.to_string().into_bytes()));
            seeds.push(("publisher_key", public.to_pem().into_bytes()));
            seeds.push(("publisher_key", key.to_pem().as_bytes().to_vec()));
            seeds.push(("publisher_key", format!("lab-x/*={public}").into_bytes()));
            let manifest = Manifest::new(vec![entry("config.json", false)]).expect("valid");
            seeds.push((
                "signature_bundle",
                crate::provenance::bundle::sign_manifest(&manifest.hash(), &manifest, &key)
                    .expect("signs"),
            ));
        }
        let vectors = fuzz_dir().join("../protocol/tests/vectors/openssf");
        for name in ["sha256.model.sig", "blake3.model.sig"] {
            seeds.push((
                "signature_bundle",
                std::fs::read(vectors.join(name)).expect("vector"),
            ));
        }
        let corpus = fuzz_dir().join("corpus");
        for (i, (target, bytes)) in seeds.into_iter().enumerate() {
            let dir = corpus.join(target);
            std::fs::create_dir_all(&dir).expect("mkdir");
            std::fs::write(dir.join(format!("seed-{i:02}")), bytes).expect("write seed");
        }
    }

    /// Frame bodies of differently typed values, for the seed list.
    mod erased {
        pub trait Frame {
            fn body(&self) -> Vec<u8>;
        }
        impl<T: serde::Serialize> Frame for T {
            fn body(&self) -> Vec<u8> {
                crate::wire::encode_frame(self)[4..].to_vec()
            }
        }
    }
}
