//! Local names: `org/name` at a revision → a dataset root (`names` column family).
//!
//! Binding a name pins its dataset (a name that points at collected data would be a broken
//! promise); removing the dataset drops its names.

use commons_protocol::{DatasetName, Hash};
use rocksdb::{IteratorMode, WriteBatch};
use serde::{Deserialize, Serialize};

use super::{layout::*, unix_now, Result, Store, StoreError};

/// One binding, as listed by [`Store::names`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameEntry {
    /// `org/name`.
    pub name: DatasetName,
    /// The revision (`main` unless given).
    pub revision: String,
    /// The dataset root it names.
    pub root: Hash,
    /// When it was bound (unix seconds).
    pub set_at: u64,
}

impl Store {
    /// Binds `name` at `revision` to the dataset `root` (replacing an earlier binding of
    /// that name and revision) and pins the dataset. Fails if `root` is not a dataset here.
    pub fn set_name(&self, name: &DatasetName, revision: &str, root: &Hash) -> Result<NameEntry> {
        commons_protocol::name::check_revision(revision)
            .map_err(|e| StoreError::BadName(e.to_string()))?;
        if self.dataset(root)?.is_none() {
            return Err(if self.blob(root)?.is_some() {
                StoreError::BadName(format!(
                    "{root} is a blob, not a dataset: only datasets can be named"
                ))
            } else {
                StoreError::NotFound { hash: *root }
            });
        }
        let value = NameMeta {
            root: *root,
            set_at: unix_now(),
        };
        let mut batch = WriteBatch::default();
        batch.put_cf(
            self.cf(CF_NAMES),
            name_key(name.as_str(), revision),
            encode(&value),
        );
        self.put_pin(&mut batch, root, PinKind::Dataset);
        self.write(batch)?;
        Ok(NameEntry {
            name: name.clone(),
            revision: revision.to_string(),
            root: *root,
            set_at: value.set_at,
        })
    }

    /// The root `name` names at `revision`, if bound.
    pub fn resolve_name(&self, name: &DatasetName, revision: &str) -> Result<Option<Hash>> {
        match self
            .db
            .get_pinned_cf(self.cf(CF_NAMES), name_key(name.as_str(), revision))?
        {
            Some(v) => decode::<NameMeta>(&v)
                .map(|m| Some(m.root))
                .ok_or_else(|| StoreError::Damaged(format!("name {name}@{revision}"))),
            None => Ok(None),
        }
    }

    /// Every binding, sorted by name then revision.
    pub fn names(&self) -> Result<Vec<NameEntry>> {
        self.bindings(&[])
    }

    /// The bindings of `name`, one per revision (a prefix scan: keys sort by name).
    pub fn revisions(&self, name: &DatasetName) -> Result<Vec<NameEntry>> {
        self.bindings(&name_key(name.as_str(), ""))
    }

    /// The bindings whose keys start with `prefix`.
    fn bindings(&self, prefix: &[u8]) -> Result<Vec<NameEntry>> {
        let mut out = Vec::new();
        let from = IteratorMode::From(prefix, rocksdb::Direction::Forward);
        for item in self.db.iterator_cf(self.cf(CF_NAMES), from) {
            let (key, value) = item?;
            if !key.starts_with(prefix) {
                break;
            }
            let damaged = || StoreError::Damaged("a name record".into());
            let (name, revision) = split_name_key(&key).ok_or_else(damaged)?;
            let meta: NameMeta = decode(&value).ok_or_else(damaged)?;
            out.push(NameEntry {
                name: DatasetName::parse(name).map_err(|_| damaged())?,
                revision: revision.to_string(),
                root: meta.root,
                set_at: meta.set_at,
            });
        }
        Ok(out)
    }

    /// Removes the binding of `name` at `revision`; returns whether there was one. The
    /// dataset stays pinned.
    pub fn unset_name(&self, name: &DatasetName, revision: &str) -> Result<bool> {
        let key = name_key(name.as_str(), revision);
        let existed = self.db.get_pinned_cf(self.cf(CF_NAMES), &key)?.is_some();
        self.delete(CF_NAMES, key)?;
        Ok(existed)
    }

    /// Adds to `batch` the deletion of every name bound to `root`.
    pub(super) fn delete_names_of(&self, batch: &mut WriteBatch, root: &Hash) -> Result<()> {
        for entry in self.names()? {
            if entry.root == *root {
                batch.delete_cf(
                    self.cf(CF_NAMES),
                    name_key(entry.name.as_str(), &entry.revision),
                );
            }
        }
        Ok(())
    }
}
