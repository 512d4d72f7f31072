//! What the store remembers about provenance, in the `meta` column family:
//!
//! - `sig/{root}{bundle id}` → [`StoredSignature`]: a signature bundle (`model.sig` bytes)
//!   over the dataset `root`, checked against its manifest before it was kept, and whether
//!   its signature was verified with a known key (made here, or required of a fetch); at
//!   most [`MAX_SIGNATURES_PER_ROOT`] per root, and a verified one takes the place of an
//!   unverified one when all are taken, so strangers' bundles cannot crowd out a
//!   publisher's. The bundle id is the BLAKE3 hash of its bytes.
//! - `name-seen/{DHT key}` → [`SeenName`]: the highest name record ever accepted for a
//!   (publisher, name) pair, whether from the network, a bundle or `publish`. An older
//!   record is refused afterwards (rollback protection), and a record this node published
//!   or follows is re-published by it.

use commons_protocol::{provenance::SignedNameRecord, wire::MAX_SIGNATURES_PER_ROOT, Hash};
use rocksdb::{Direction, IteratorMode, WriteBatch};
use serde::{Deserialize, Serialize};

use super::{layout::CF_META, Result, Store};

const SIG_PREFIX: &[u8] = b"sig/";
const NAME_SEEN_PREFIX: &[u8] = b"name-seen/";
const NAME_LOG_PREFIX: &[u8] = b"name-log/";
/// Records of one name kept in its history (`resolve` shows them), at most.
pub const MAX_NAME_HISTORY: usize = 64;
/// Name records kept for re-publishing, at most: each costs a DHT put per interval.
pub const MAX_KEPT_NAMES: usize = 10_000;

fn sig_key(root: &Hash, id: &Hash) -> Vec<u8> {
    [SIG_PREFIX, root.as_bytes(), id.as_bytes()].concat()
}

fn seen_key(key: &Hash) -> Vec<u8> {
    [NAME_SEEN_PREFIX, key.as_bytes()].concat()
}

fn log_key(key: &Hash, seq: u64) -> Vec<u8> {
    [NAME_LOG_PREFIX, key.as_bytes(), &seq.to_be_bytes()].concat()
}

/// The value under `name-seen/{key}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenName {
    /// The record's bytes (checked when stored; checked again when read).
    pub record: Vec<u8>,
    /// Whether this node keeps the name alive in the DHT (it published or follows it).
    pub keep: bool,
}

/// The value under `sig/{root}{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSignature {
    /// Whether its signature verified with a known publisher key when it was kept.
    pub verified: bool,
    /// The bundle's bytes.
    pub bundle: Vec<u8>,
}

/// What [`Store::remember_name`] did with a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameUpdate {
    /// It is newer than anything seen (or the first): now the one remembered.
    Newer,
    /// It is the one already remembered.
    Same,
    /// It is older than the one remembered, which stays: a rollback, refused.
    Older(Box<SignedNameRecord>),
}

impl Store {
    /// Keeps `bundle` as a signature of dataset `root` (already checked against its
    /// manifest by the caller; `verified`: and its signature with a known key). Returns
    /// false when it was held already (a verified copy then marks it verified), or `root`
    /// has [`MAX_SIGNATURES_PER_ROOT`] and no unverified one a verified one may replace.
    pub fn put_signature(&self, root: &Hash, bundle: &[u8], verified: bool) -> Result<bool> {
        // Read, decide, write: one at a time, or two could pass the cap together.
        let _one = self.bind_lock.lock().unwrap_or_else(|e| e.into_inner());
        let id = Hash::of(bundle);
        let held = self.stored_signatures(root)?;
        let value = |verified| {
            postcard::to_stdvec(&StoredSignature {
                verified,
                bundle: bundle.to_vec(),
            })
            .unwrap_or_default()
        };
        if let Some((_, old)) = held.iter().find(|(i, _)| *i == id) {
            if verified && !old.verified {
                self.put(CF_META, sig_key(root, &id), value(true))?;
            }
            return Ok(false);
        }
        if held.len() >= MAX_SIGNATURES_PER_ROOT {
            let evictable = held.iter().find(|(_, s)| !s.verified).map(|(i, _)| *i);
            match evictable {
                Some(old) if verified => {
                    self.delete(CF_META, sig_key(root, &old))?;
                }
                _ => return Ok(false),
            }
        }
        self.put(CF_META, sig_key(root, &id), value(verified))?;
        Ok(true)
    }

    /// The signatures held for `root` with their ids, verified ones first.
    pub fn stored_signatures(&self, root: &Hash) -> Result<Vec<(Hash, StoredSignature)>> {
        let prefix = [SIG_PREFIX, root.as_bytes()].concat();
        let mut out = Vec::new();
        let iter = self.db.iterator_cf(
            self.cf(CF_META),
            IteratorMode::From(&prefix, Direction::Forward),
        );
        for item in iter {
            let (key, value) = item?;
            if !key.starts_with(&prefix) {
                break;
            }
            let (Some(id), Ok(stored)) = (
                Hash::from_slice(&key[prefix.len()..]),
                postcard::from_bytes::<StoredSignature>(&value),
            ) else {
                continue;
            };
            out.push((id, stored));
        }
        out.sort_by_key(|(_, s)| !s.verified);
        Ok(out)
    }

    /// The signature bundles held for `root`, verified ones first.
    pub fn signatures(&self, root: &Hash) -> Result<Vec<Vec<u8>>> {
        Ok(self
            .stored_signatures(root)?
            .into_iter()
            .map(|(_, s)| s.bundle)
            .collect())
    }

    /// Adds the deletion of every signature of `root` to `batch` (when its dataset record
    /// goes: garbage collection, `rm`); returns how many.
    pub(super) fn delete_signatures(&self, batch: &mut WriteBatch, root: &Hash) -> Result<usize> {
        let held = self.stored_signatures(root)?;
        for (id, _) in &held {
            batch.delete_cf(self.cf(CF_META), sig_key(root, id));
        }
        Ok(held.len())
    }

    /// The highest record remembered under DHT key `key`.
    pub fn seen_name(&self, key: &Hash) -> Result<Option<(SignedNameRecord, bool)>> {
        let Some(bytes) = self.db.get_cf(self.cf(CF_META), seen_key(key))? else {
            return Ok(None);
        };
        let Some(seen) = postcard::from_bytes::<SeenName>(&bytes).ok() else {
            return Ok(None);
        };
        Ok(SignedNameRecord::decode_signed(&seen.record)
            .ok()
            .map(|r| (r, seen.keep)))
    }

    /// Remembers `record` (already checked) under `key` if it is not older than the one
    /// remembered; `keep` marks the name as one this node re-publishes (a kept name stays
    /// kept). `allow_older` replaces a newer record anyway (the user's explicit override).
    pub fn remember_name(
        &self,
        key: &Hash,
        record: &SignedNameRecord,
        keep: bool,
        allow_older: bool,
    ) -> Result<NameUpdate> {
        // Read, compare, write: one at a time, or a lower record could land last.
        let _one = self.bind_lock.lock().unwrap_or_else(|e| e.into_inner());
        let held = self.seen_name(key)?;
        let (update, kept) = match &held {
            None => (NameUpdate::Newer, false),
            Some((old, kept)) if old == record => (NameUpdate::Same, *kept),
            Some((old, kept)) if record.supersedes(old) || allow_older => {
                (NameUpdate::Newer, *kept)
            }
            Some((old, _)) => return Ok(NameUpdate::Older(Box::new(old.clone()))),
        };
        if update == NameUpdate::Same && (kept || !keep) {
            return Ok(update);
        }
        let keep = keep || kept;
        if keep && !kept && self.kept_names()?.len() >= MAX_KEPT_NAMES {
            return Err(super::StoreError::Limit(format!(
                "this node already keeps {MAX_KEPT_NAMES} names alive"
            )));
        }
        let value = SeenName {
            record: record.encode(),
            keep,
        };
        self.put(
            CF_META,
            seen_key(key),
            postcard::to_stdvec(&value).unwrap_or_default(),
        )?;
        if update == NameUpdate::Newer {
            self.log_name(key, record)?;
        }
        Ok(update)
    }

    /// Adds `record` to the history of `key`, dropping the oldest past
    /// [`MAX_NAME_HISTORY`].
    fn log_name(&self, key: &Hash, record: &SignedNameRecord) -> Result<()> {
        self.put(CF_META, log_key(key, record.record.seq), record.encode())?;
        let history = self.name_history(key)?;
        for old in history
            .iter()
            .take(history.len().saturating_sub(MAX_NAME_HISTORY))
        {
            self.delete(CF_META, log_key(key, old.record.seq))?;
        }
        Ok(())
    }

    /// The records of `key` this node accepted, oldest first (at most
    /// [`MAX_NAME_HISTORY`]).
    pub fn name_history(&self, key: &Hash) -> Result<Vec<SignedNameRecord>> {
        let prefix = [NAME_LOG_PREFIX, key.as_bytes()].concat();
        let mut out = Vec::new();
        let iter = self.db.iterator_cf(
            self.cf(CF_META),
            IteratorMode::From(&prefix, Direction::Forward),
        );
        for item in iter {
            let (k, value) = item?;
            if !k.starts_with(&prefix) {
                break;
            }
            if let Ok(r) = SignedNameRecord::decode_signed(&value) {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// Every remembered record this node keeps alive, with its DHT key.
    pub fn kept_names(&self) -> Result<Vec<(Hash, SignedNameRecord)>> {
        Ok(self
            .remembered_names()?
            .into_iter()
            .filter(|(_, _, keep)| *keep)
            .map(|(key, record, _)| (key, record))
            .collect())
    }

    /// Every remembered record (the highest per name), with its DHT key and whether this
    /// node keeps it alive.
    pub fn remembered_names(&self) -> Result<Vec<(Hash, SignedNameRecord, bool)>> {
        let mut out = Vec::new();
        let iter = self.db.iterator_cf(
            self.cf(CF_META),
            IteratorMode::From(NAME_SEEN_PREFIX, Direction::Forward),
        );
        for item in iter {
            let (key, value) = item?;
            let Some(dht_key) = key.strip_prefix(NAME_SEEN_PREFIX) else {
                break;
            };
            let Some(seen) = postcard::from_bytes::<SeenName>(&value).ok() else {
                continue;
            };
            if let (Some(k), Ok(r)) = (
                Hash::from_slice(dht_key),
                SignedNameRecord::decode_signed(&seen.record),
            ) {
                out.push((k, r, seen.keep));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use commons_protocol::{
        provenance::{name_key, KeyAlgorithm, NameRecord, SecretKey},
        NameRef,
    };

    use super::*;
    use crate::store::StoreOptions;

    fn record(key: &SecretKey, seq: u64) -> SignedNameRecord {
        let name = NameRef::parse("lab-x/corpus").expect("name");
        let root = Hash::of(&seq.to_be_bytes());
        NameRecord::new(&key.public(), &name, root, seq, None, 1..2).sign(key)
    }

    #[test]
    fn an_older_record_never_replaces_a_newer_one_unless_asked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), StoreOptions::default()).expect("open");
        let key = SecretKey::from_seed(KeyAlgorithm::Ed25519, &[1; 32]).expect("key");
        let (v1, v2) = (record(&key, 1), record(&key, 2));
        let k = name_key(&key.public(), &v1.record.name_ref());
        assert_eq!(
            store.remember_name(&k, &v1, false, false).expect("v1"),
            NameUpdate::Newer
        );
        assert_eq!(
            store.remember_name(&k, &v2, false, false).expect("v2"),
            NameUpdate::Newer
        );
        assert_eq!(
            store.remember_name(&k, &v2, false, false).expect("v2"),
            NameUpdate::Same
        );
        assert_eq!(
            store
                .remember_name(&k, &v1, false, false)
                .expect("v1 again"),
            NameUpdate::Older(Box::new(v2.clone()))
        );
        assert_eq!(
            store.seen_name(&k).expect("seen"),
            Some((v2.clone(), false))
        );
        assert!(store.kept_names().expect("kept").is_empty());
        store.remember_name(&k, &v2, true, false).expect("keep");
        assert_eq!(store.kept_names().expect("kept"), vec![(k, v2.clone())]);
        assert_eq!(
            store.remember_name(&k, &v1, false, true).expect("override"),
            NameUpdate::Newer
        );
        assert_eq!(store.seen_name(&k).expect("seen"), Some((v1.clone(), true)));
        let history = store.name_history(&k).expect("history");
        assert_eq!(history, vec![v1, v2], "by sequence; each record once");
    }

    #[test]
    fn signatures_are_kept_once_and_bounded_per_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), StoreOptions::default()).expect("open");
        let root = Hash::of(b"root");
        assert!(store.put_signature(&root, b"one", false).expect("put"));
        assert!(!store.put_signature(&root, b"one", false).expect("again"));
        for i in 1..MAX_SIGNATURES_PER_ROOT {
            let bundle = format!("{i}");
            assert!(store
                .put_signature(&root, bundle.as_bytes(), false)
                .expect("put"));
        }
        assert!(!store
            .put_signature(&root, b"one too many", false)
            .expect("full"));
        assert_eq!(
            store.signatures(&root).expect("list").len(),
            MAX_SIGNATURES_PER_ROOT
        );
        // Strangers' bundles filled every place: a verified one still gets in, first.
        assert!(store
            .put_signature(&root, b"the publisher's", true)
            .expect("evicts"));
        assert_eq!(
            store.signatures(&root).expect("list")[0],
            b"the publisher's"
        );
        assert_eq!(
            store.signatures(&root).expect("list").len(),
            MAX_SIGNATURES_PER_ROOT
        );
        for i in 0..MAX_SIGNATURES_PER_ROOT {
            let bundle = format!("verified {i}");
            store
                .put_signature(&root, bundle.as_bytes(), true)
                .expect("put");
        }
        assert!(
            !store
                .put_signature(&root, b"more", true)
                .expect("all verified"),
            "verified signatures are never evicted"
        );
        assert!(store
            .signatures(&Hash::of(b"other"))
            .expect("none")
            .is_empty());
        let mut batch = WriteBatch::default();
        let n = store.delete_signatures(&mut batch, &root).expect("rm");
        assert_eq!(n, MAX_SIGNATURES_PER_ROOT);
        store.db.write(batch).expect("write");
        assert!(store.signatures(&root).expect("gone").is_empty());
    }
}
