//! What the store remembers about Hugging Face Hub ids, so imports from an origin skip
//! what is already held and peers can ask which root holds a Hub commit:
//!
//! - `hub-file/{etag}` → the blob whose content was checked to have that Hub id (the
//!   SHA-256 of an LFS file, the git blob id of another), its ids, and whether it came from
//!   a gated or private repository (then never named to peers);
//! - `hub-commit/{commit key}{root}` → a dataset root imported (and checked) for that
//!   commit (`commons_protocol::hub::hub_commit_key`).
//!
//! Both live in the `meta` column family. An entry can outlive its data (garbage
//! collection does not look here): readers check that the blob or dataset is still held.

use commons_protocol::{
    hub::{HubHasher, ListedIds},
    Hash, HubIds,
};
use rocksdb::{IteratorMode, WriteBatch};

use super::{layout::CF_META, BlobState, Result, Store};

const HUB_FILE_PREFIX: &[u8] = b"hub-file/";
const HUB_COMMIT_PREFIX: &[u8] = b"hub-commit/";
/// Roots listed for one commit, at most (one per distinct manifest ever imported for it).
const MAX_ROOTS_PER_COMMIT: usize = commons_protocol::wire::MAX_UPSTREAM_ROOTS;

fn file_key(etag: &str) -> Vec<u8> {
    [HUB_FILE_PREFIX, etag.as_bytes()].concat()
}

/// The value under `hub-file/{etag}`.
#[derive(serde::Serialize, serde::Deserialize)]
struct HubFileRecord {
    hash: Hash,
    ids: HubIds,
    /// From a repository read with a token: not named to peers.
    private: bool,
}

impl Store {
    /// Adds "blob `hash` was checked to have Hub ids `ids`" to `batch`; `private`: it came
    /// from a gated or private repository. A file once recorded as public stays public.
    pub(super) fn put_hub_file(
        &self,
        batch: &mut WriteBatch,
        ids: &HubIds,
        hash: &Hash,
        private: bool,
    ) -> Result<()> {
        let private = private && self.hub_record(&ids.etag())?.is_none_or(|r| r.private);
        let record = HubFileRecord {
            hash: *hash,
            ids: *ids,
            private,
        };
        let value = postcard::to_stdvec(&record).unwrap_or_default();
        batch.put_cf(self.cf(CF_META), file_key(&ids.etag()), value);
        Ok(())
    }

    /// The record under `etag`, if any (one that does not decode counts as none).
    fn hub_record(&self, etag: &str) -> Result<Option<HubFileRecord>> {
        Ok(self
            .db
            .get_cf(self.cf(CF_META), file_key(etag))?
            .and_then(|v| postcard::from_bytes(&v).ok()))
    }

    /// The record under `etag` if its blob is still held complete, with the blob's size.
    fn held_hub_record(&self, etag: &str) -> Result<Option<(HubFileRecord, u64)>> {
        let Some(record) = self.hub_record(etag)? else {
            return Ok(None);
        };
        Ok(match self.blob(&record.hash)? {
            Some(m) if m.state == BlobState::Complete => Some((record, m.size)),
            _ => None,
        })
    }

    /// The complete blob of `size` bytes checked to have the Hub id `etag`, and its ids, if
    /// still held.
    pub fn hub_file(&self, etag: &str, size: u64) -> Result<Option<(Hash, HubIds)>> {
        Ok(self
            .held_hub_record(etag)?
            .filter(|(_, held)| *held == size)
            .map(|(r, _)| (r.hash, r.ids)))
    }

    /// The complete blob checked to have the Hub id `etag`, and its size, if still held and
    /// not from a gated or private repository: what this node answers a peer asking.
    pub fn hub_file_held(&self, etag: &str) -> Result<Option<(Hash, u64)>> {
        Ok(self
            .held_hub_record(etag)?
            .filter(|(r, _)| !r.private)
            .map(|(r, size)| (r.hash, size)))
    }

    /// Reads complete blob `hash` (verified against its BLAKE3 tree as it is read) and
    /// checks it has the Hub ids `listed` gives: how data fetched from peers on the
    /// strength of another node's manifest is held to the origin's ids. Remembers and
    /// returns the ids when it does, `None` when it does not.
    pub fn check_hub_file(&self, hash: &Hash, listed: &ListedIds) -> Result<Option<HubIds>> {
        let size = self
            .blob(hash)?
            .map(|m| m.size)
            .ok_or(super::StoreError::NotFound { hash: *hash })?;
        let mut hasher = HashingWriter(HubHasher::new(size));
        self.read_blob_verified(hash, &mut hasher)?;
        let Some(ids) = hasher.0.finish(false).and_then(|c| listed.confirm(&c)) else {
            return Ok(None);
        };
        let mut batch = WriteBatch::default();
        self.put_hub_file(&mut batch, &ids, hash, false)?;
        self.write(batch)?;
        Ok(Some(ids))
    }

    /// Records that dataset `root` holds the Hub commit whose key is `key`.
    pub fn remember_upstream(&self, key: &Hash, root: &Hash) -> Result<()> {
        let k = [HUB_COMMIT_PREFIX, key.as_bytes(), root.as_bytes()].concat();
        self.put(CF_META, k, [])
    }

    /// The keys of every Hub commit held (announced by a running node beside its roots).
    pub fn held_upstream_keys(&self) -> Result<Vec<Hash>> {
        let mut keys: Vec<Hash> = Vec::new();
        let from = IteratorMode::From(HUB_COMMIT_PREFIX, rocksdb::Direction::Forward);
        for item in self.db.iterator_cf(self.cf(CF_META), from) {
            let (k, _) = item?;
            let Some(rest) = k.strip_prefix(HUB_COMMIT_PREFIX) else {
                break;
            };
            let (Some(key), Some(root)) = (
                rest.get(..32).and_then(Hash::from_slice),
                rest.get(32..).and_then(Hash::from_slice),
            ) else {
                continue;
            };
            if keys.last() != Some(&key) && self.dataset(&root)?.is_some() {
                keys.push(key);
            }
        }
        Ok(keys)
    }

    /// Dataset roots held (recorded, manifest complete) for the Hub commit whose key is
    /// `key`, at most [`MAX_ROOTS_PER_COMMIT`].
    pub fn upstream_roots(&self, key: &Hash) -> Result<Vec<Hash>> {
        let prefix = [HUB_COMMIT_PREFIX, key.as_bytes()].concat();
        let mut roots = Vec::new();
        let from = IteratorMode::From(&prefix, rocksdb::Direction::Forward);
        for item in self.db.iterator_cf(self.cf(CF_META), from) {
            let (k, _) = item?;
            if !k.starts_with(&prefix) {
                break;
            }
            let Some(root) = Hash::from_slice(&k[prefix.len()..]) else {
                continue;
            };
            if self.dataset(&root)?.is_some() {
                roots.push(root);
                if roots.len() == MAX_ROOTS_PER_COMMIT {
                    break;
                }
            }
        }
        Ok(roots)
    }
}

/// An `io::Write` that only hashes.
struct HashingWriter(HubHasher);

impl std::io::Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
