//! Signed name records: "publisher K says `org/name@rev` is root R", version `seq`.
//!
//! A record lives in the DHT under [`name_key`]`(K, name)`, so only K's records can sit
//! there and anyone can check one offline. Like BEP 44 and IPNS, the highest sequence
//! number wins; unlike IPNS, a record carries its own expiry chosen by the publisher (up to
//! [`MAX_RECORD_LIFETIME_SECS`]) and any node that follows the name re-publishes it, so a
//! name outlives its publisher's uptime. `prev` chains each record to the one it replaces,
//! so a history can be checked link by link.
//!
//! Encoding (version 1, `docs/formats.md`): postcard of [`SignedNameRecord`]; the signed
//! message is [`RECORD_DOMAIN`] followed by the postcard of the [`NameRecord`].

use serde::{Deserialize, Serialize};

use super::key::{KeyAlgorithm, KeyError, PublicKey, SecretKey};
use crate::{name::check_revision, DatasetName, Hash, NameRef};

/// Largest encoded record accepted from anyone, in bytes (a record is ~250 bytes).
pub const MAX_NAME_RECORD_BYTES: usize = 1024;
/// Longest validity a record may claim: one year. Followers re-publish it meanwhile; the
/// publisher re-signs (a higher sequence) to extend it.
pub const MAX_RECORD_LIFETIME_SECS: u64 = 366 * 24 * 3600;
/// How far in the future an issue time may be, for clocks that disagree.
pub const MAX_CLOCK_SKEW_SECS: u64 = 600;
/// The record format version this code writes and reads.
pub const RECORD_VERSION: u8 = 1;
/// Prefix of every signed record message (domain separation from other signatures).
pub const RECORD_DOMAIN: &[u8] = b"commons name record v1\n";
/// Prefix of the DHT key derivation.
const KEY_DOMAIN: &[u8] = b"commons name key v1\n";

/// Why a record was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Longer than [`MAX_NAME_RECORD_BYTES`].
    #[error("name record of {0} bytes is over the limit of {MAX_NAME_RECORD_BYTES}")]
    TooLarge(usize),
    /// Not a record.
    #[error("malformed name record: {0}")]
    Malformed(String),
    /// The key or signature is wrong.
    #[error("name record: {0}")]
    Key(#[from] KeyError),
    /// Stored under a key that is not derived from its publisher and name.
    #[error("name record for {0} is stored under the wrong DHT key")]
    WrongKey(String),
    /// Its validity is over, or not begun.
    #[error("name record for {name} (sequence {seq}) {why}")]
    Expired {
        /// The name.
        name: String,
        /// The sequence.
        seq: u64,
        /// Expired, or issued in the future.
        why: String,
    },
}

/// What the publisher signs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameRecord {
    /// [`RECORD_VERSION`].
    pub version: u8,
    /// Signature scheme of `publisher`.
    pub algorithm: KeyAlgorithm,
    /// The publisher's key bytes ([`PublicKey::to_bytes`]).
    pub publisher: Vec<u8>,
    /// `org/name`.
    pub name: DatasetName,
    /// The revision (`main`, `v3`).
    pub revision: String,
    /// The dataset root the name points at.
    pub root: Hash,
    /// Grows with each record the publisher signs for this name.
    pub seq: u64,
    /// [`SignedNameRecord::id`] of the record this one replaces, if any.
    pub prev: Option<Hash>,
    /// Unix seconds when signed.
    pub issued_unix: u64,
    /// Unix seconds after which nobody stores or believes it.
    pub expires_unix: u64,
}

/// A record with its signature: what travels and is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedNameRecord {
    /// What was signed.
    pub record: NameRecord,
    /// The publisher's signature over [`RECORD_DOMAIN`] ‖ postcard(record), 64 bytes.
    pub signature: Vec<u8>,
}

/// The DHT key of `publisher`'s records for `name@revision`: BLAKE3 of a domain prefix,
/// the key's text form, a newline and `org/name@revision`.
pub fn name_key(publisher: &PublicKey, name: &NameRef) -> Hash {
    let mut hasher = blake3::Hasher::new();
    hasher.update(KEY_DOMAIN);
    hasher.update(publisher.to_string().as_bytes());
    hasher.update(b"\n");
    hasher.update(name.name.as_str().as_bytes());
    hasher.update(b"@");
    hasher.update(name.revision.as_bytes());
    hasher.finalize().into()
}

impl NameRecord {
    /// A record of `publisher` pointing `name` at `root`, valid from `valid.start` to
    /// `valid.end` (unix seconds): version, algorithm and key bytes come from the key, so
    /// they cannot disagree with it.
    pub fn new(
        publisher: &PublicKey,
        name: &NameRef,
        root: Hash,
        seq: u64,
        prev: Option<Hash>,
        valid: std::ops::Range<u64>,
    ) -> Self {
        Self {
            version: RECORD_VERSION,
            algorithm: publisher.algorithm(),
            publisher: publisher.to_bytes(),
            name: name.name.clone(),
            revision: name.revision.clone(),
            root,
            seq,
            prev,
            issued_unix: valid.start,
            expires_unix: valid.end,
        }
    }

    /// The message the publisher signs.
    pub fn signed_message(&self) -> Vec<u8> {
        let body = postcard::to_stdvec(self).unwrap_or_default();
        [RECORD_DOMAIN, &body].concat()
    }

    /// The name and revision.
    pub fn name_ref(&self) -> NameRef {
        NameRef {
            name: self.name.clone(),
            revision: self.revision.clone(),
        }
    }

    /// The publisher's key.
    pub fn publisher_key(&self) -> Result<PublicKey, KeyError> {
        PublicKey::from_bytes(self.algorithm, &self.publisher)
    }

    /// Signs this record with `key`, whose public half must be `publisher`.
    pub fn sign(self, key: &SecretKey) -> SignedNameRecord {
        let signature = key.sign(&self.signed_message());
        SignedNameRecord {
            record: self,
            signature,
        }
    }
}

impl SignedNameRecord {
    /// The wire and storage form.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).unwrap_or_default()
    }

    /// A record's identity: the BLAKE3 hash of its encoding (what `prev` refers to).
    pub fn id(&self) -> Hash {
        Hash::of(&self.encode())
    }

    /// Decodes and fully checks a record found under DHT key `key` at time `now_unix`:
    /// size, encoding (canonical), version, name, key, signature, key derivation and
    /// validity period. Every record from a peer goes through here before it is stored,
    /// believed or passed on.
    pub fn decode_verified(bytes: &[u8], key: &[u8], now_unix: u64) -> Result<Self, RecordError> {
        let record = Self::decode_unverified(bytes, key, now_unix)?;
        record.verify_signature()?;
        Ok(record)
    }

    /// Every check of [`Self::decode_verified`] but the signature, the costly one: a store
    /// runs the cheap ones (and compares with what it holds) before it.
    pub fn decode_unverified(bytes: &[u8], key: &[u8], now_unix: u64) -> Result<Self, RecordError> {
        let record = Self::decode_shape(bytes)?;
        let publisher = record.record.publisher_key()?;
        if name_key(&publisher, &record.record.name_ref()).as_bytes() != key {
            return Err(RecordError::WrongKey(record.record.name_ref().to_string()));
        }
        record.check_time(now_unix)?;
        Ok(record)
    }

    /// Checks the publisher's signature.
    pub fn verify_signature(&self) -> Result<(), RecordError> {
        let r = &self.record;
        r.publisher_key()?
            .verify(&r.signed_message(), &self.signature)?;
        Ok(())
    }

    /// Decodes and checks everything but the DHT key and the time: for records carried
    /// outside the DHT (bundles, files), whose key is derived from their own content.
    pub fn decode_signed(bytes: &[u8]) -> Result<Self, RecordError> {
        let record = Self::decode_shape(bytes)?;
        record.verify_signature()?;
        Ok(record)
    }

    /// Size, canonical encoding, version, revision and validity period: no key, no time.
    fn decode_shape(bytes: &[u8]) -> Result<Self, RecordError> {
        if bytes.len() > MAX_NAME_RECORD_BYTES {
            return Err(RecordError::TooLarge(bytes.len()));
        }
        let record: Self =
            postcard::from_bytes(bytes).map_err(|e| RecordError::Malformed(e.to_string()))?;
        if record.encode() != bytes {
            return Err(RecordError::Malformed("not in canonical form".into()));
        }
        let r = &record.record;
        if r.version != RECORD_VERSION {
            return Err(RecordError::Malformed(format!(
                "version {} (this node reads version {RECORD_VERSION})",
                r.version
            )));
        }
        check_revision(&r.revision).map_err(|e| RecordError::Malformed(e.to_string()))?;
        if r.expires_unix < r.issued_unix
            || r.expires_unix - r.issued_unix > MAX_RECORD_LIFETIME_SECS
        {
            return Err(RecordError::Malformed(format!(
                "validity from {} to {} is not within {MAX_RECORD_LIFETIME_SECS} s",
                r.issued_unix, r.expires_unix
            )));
        }
        Ok(record)
    }

    /// Whether the record is valid at `now_unix`.
    pub fn check_time(&self, now_unix: u64) -> Result<(), RecordError> {
        let r = &self.record;
        let why = if r.expires_unix <= now_unix {
            "has expired".to_string()
        } else if r.issued_unix > now_unix.saturating_add(MAX_CLOCK_SKEW_SECS) {
            "is issued in the future (check the clocks)".to_string()
        } else {
            return Ok(());
        };
        Err(RecordError::Expired {
            name: r.name_ref().to_string(),
            seq: r.seq,
            why,
        })
    }

    /// The order in which records for one key supersede each other: the higher sequence,
    /// and between two different records of the same sequence (a publisher that signed
    /// twice) the higher id, so every node settles on the same one.
    pub fn rank(&self) -> (u64, Hash) {
        (self.record.seq, self.id())
    }

    /// Whether this record should replace `held` under the same key.
    pub fn supersedes(&self, held: &Self) -> bool {
        self.rank() > held.rank()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn publisher() -> SecretKey {
        SecretKey::from_seed(KeyAlgorithm::P256, &[3; 32]).expect("key")
    }

    pub(crate) fn record(key: &SecretKey, seq: u64, root: Hash) -> SignedNameRecord {
        let name = NameRef::parse("lab-x/corpus").expect("name");
        NameRecord::new(&key.public(), &name, root, seq, None, NOW..NOW + 3600).sign(key)
    }

    fn key_of(r: &SignedNameRecord) -> Hash {
        name_key(
            &r.record.publisher_key().expect("key"),
            &r.record.name_ref(),
        )
    }

    #[test]
    fn a_signed_record_verifies_under_its_key_only() {
        for algorithm in [KeyAlgorithm::P256, KeyAlgorithm::Ed25519] {
            let key = SecretKey::from_seed(algorithm, &[9; 32]).expect("key");
            let r = record(&key, 1, Hash::of(b"v1"));
            let bytes = r.encode();
            assert!(bytes.len() < MAX_NAME_RECORD_BYTES / 2, "{}", bytes.len());
            let k = key_of(&r);
            assert_eq!(
                SignedNameRecord::decode_verified(&bytes, k.as_bytes(), NOW + 1),
                Ok(r.clone())
            );
            assert!(matches!(
                SignedNameRecord::decode_verified(&bytes, Hash::of(b"x").as_bytes(), NOW),
                Err(RecordError::WrongKey(_))
            ));
            assert!(matches!(
                SignedNameRecord::decode_verified(&bytes, k.as_bytes(), NOW + 3600),
                Err(RecordError::Expired { .. })
            ));
            assert!(matches!(
                SignedNameRecord::decode_verified(&bytes, k.as_bytes(), NOW - 3600),
                Err(RecordError::Expired { .. })
            ));
        }
    }

    #[test]
    fn any_flipped_bit_is_refused() {
        let r = record(&publisher(), 5, Hash::of(b"v5"));
        let bytes = r.encode();
        let k = key_of(&r);
        for i in 0..bytes.len() {
            for bit in [0x01, 0x80] {
                let mut bad = bytes.clone();
                bad[i] ^= bit;
                assert!(
                    SignedNameRecord::decode_verified(&bad, k.as_bytes(), NOW).is_err(),
                    "byte {i} bit {bit:#x}"
                );
            }
        }
        let mut long = bytes.clone();
        long.resize(MAX_NAME_RECORD_BYTES + 1, 0);
        assert_eq!(
            SignedNameRecord::decode_verified(&long, k.as_bytes(), NOW),
            Err(RecordError::TooLarge(MAX_NAME_RECORD_BYTES + 1))
        );
    }

    #[test]
    fn another_key_cannot_sign_for_a_publisher() {
        let honest = publisher();
        let thief = SecretKey::from_seed(KeyAlgorithm::P256, &[4; 32]).expect("key");
        let mut forged = record(&honest, 9, Hash::of(b"evil"));
        forged.signature = thief.sign(&forged.record.signed_message());
        let k = key_of(&forged);
        assert!(matches!(
            SignedNameRecord::decode_verified(&forged.encode(), k.as_bytes(), NOW),
            Err(RecordError::Key(KeyError::BadSignature(_)))
        ));
    }

    #[test]
    fn a_higher_sequence_supersedes_and_ties_settle_the_same_way_everywhere() {
        let key = publisher();
        let (v1, v2) = (
            record(&key, 1, Hash::of(b"a")),
            record(&key, 2, Hash::of(b"b")),
        );
        assert!(v2.supersedes(&v1) && !v1.supersedes(&v2) && !v1.supersedes(&v1));
        let twin = record(&key, 2, Hash::of(b"c"));
        assert!(twin.supersedes(&v2) != v2.supersedes(&twin));
    }

    #[test]
    fn a_lifetime_over_the_limit_is_malformed() {
        let key = publisher();
        let mut r = record(&key, 1, Hash::of(b"a")).record;
        r.expires_unix = r.issued_unix + MAX_RECORD_LIFETIME_SECS + 1;
        let signed = r.sign(&key);
        assert!(matches!(
            SignedNameRecord::decode_signed(&signed.encode()),
            Err(RecordError::Malformed(_))
        ));
    }
}

#[cfg(test)]
mod vector {
    use super::*;

    /// The test vector of `docs/formats.md`: a record signed with the P-256 key of seed
    /// `[7; 32]` (RFC 6979 makes the signature deterministic).
    pub(crate) fn record() -> SignedNameRecord {
        let key = SecretKey::from_seed(KeyAlgorithm::P256, &[7; 32]).expect("key");
        let name = NameRef::parse("lab-x/corpus@v3").expect("name");
        let (root, prev) = (Hash::of(b"root"), Some(Hash::of(b"prev")));
        NameRecord::new(
            &key.public(),
            &name,
            root,
            3,
            prev,
            1_800_000_000..1_802_592_000,
        )
        .sign(&key)
    }

    /// Its encoding, DHT key and id, as `docs/formats.md` gives them: any change to the
    /// format or the signing shows here first.
    #[test]
    fn the_documented_test_vector_holds() {
        let r = record();
        let hex = "010021031e18532fd4754c02f3041d9c75ceb33b83ffd81ac7ce4fe882ccb1c98bc5896e\
                   0c6c61622d782f636f7270757302763392a2b787a06d7272df43eaf87acc3b9c1d315d79d5\
                   99d61c285983483e4319980301a11cb032790dba2f14af21a5eeeabe59468e99c3b2e78e63\
                   2919462fe3d76bbb80a4a7da0680bec5db0640ae8489b04b6e89cf8491341bb6219aaff884\
                   769afc36977905b2c5c5603e23f9790890c89a91566a6ea84d843c42d5e6181a25791b5f39\
                   35b8c936f0b1d6ce27";
        assert_eq!(data_encoding::HEXLOWER.encode(&r.encode()), hex);
        let key = r.record.publisher_key().expect("key");
        assert_eq!(
            key.to_string(),
            "p256:031e18532fd4754c02f3041d9c75ceb33b83ffd81ac7ce4fe882ccb1c98bc5896e"
        );
        let dht_key = name_key(&key, &r.record.name_ref());
        assert_eq!(
            dht_key.to_string(),
            "87f89bfdec1f6db6bd0b578b379c9f5fbfc12dd61165484ee57bece6575f9644"
        );
        assert_eq!(
            r.id().to_string(),
            "6930604bdbd5c975599e992b7f7b2ad93fc7b7f99516f497ca691a78385f7b13"
        );
        let bytes = data_encoding::HEXLOWER.decode(hex.as_bytes()).expect("hex");
        assert_eq!(
            SignedNameRecord::decode_verified(&bytes, dht_key.as_bytes(), 1_800_000_001),
            Ok(r)
        );
    }
}
