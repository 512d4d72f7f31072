//! What a mirror keeps and where each entry is: the board the mirror's tasks report to,
//! `node status` reads and `commons mirror add/rm` change, and the entries added at run
//! time as saved in the store.

use std::{
    collections::BTreeMap,
    sync::Mutex,
    time::{SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

use crate::{
    config::MirrorEntry,
    error::{ApiError, ErrorKind},
    store::{Store, StoreError},
};

/// Key, in the store's `meta` column family, of the entries added at run time (JSON).
pub const META_MIRROR_ENTRIES: &[u8] = b"mirror_entries";

/// Entries a mirror keeps at most (configured and added at run time).
pub const MAX_MIRROR_ENTRIES: usize = 10_000;

/// Where a mirrored dataset is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MirrorState {
    /// Not tried yet (waiting for the network).
    Waiting,
    /// Being fetched.
    Fetching,
    /// Held whole.
    Complete,
    /// The last attempt failed; it is tried again at `retry_at`.
    Failing,
}

/// One mirrored dataset, as `node status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorEntryStatus {
    /// The hash, ticket or name configured.
    pub target: String,
    /// The local name it is bound to, if any (`org/name@revision`).
    pub name: Option<String>,
    /// `config` (the config file) or `added` (`commons mirror add`).
    pub source: String,
    /// Where it is.
    pub state: MirrorState,
    /// Bytes held of it (while fetching: so far).
    pub held: u64,
    /// Its size, once known.
    pub size: u64,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When it is tried again (unix seconds), while failing.
    pub retry_at: Option<u64>,
}

pub(super) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The entries a node mirrors, their tasks and their states: shared by the mirror tasks
/// (which report), `node status` (which reads) and `commons mirror add/rm` (which change
/// the set while the node runs).
#[derive(Default)]
pub struct Mirror {
    entries: Mutex<BTreeMap<String, Kept>>,
}

/// One entry kept: where it is, and its task while the node runs.
pub(super) struct Kept {
    pub(super) entry: MirrorEntry,
    pub(super) status: MirrorEntryStatus,
    pub(super) task: Option<tokio::task::AbortHandle>,
}

impl Mirror {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Kept>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every entry's state.
    pub fn statuses(&self) -> Vec<MirrorEntryStatus> {
        self.lock().values().map(|k| k.status.clone()).collect()
    }

    pub(super) fn update(&self, target: &str, f: impl FnOnce(&mut MirrorEntryStatus)) {
        if let Some(kept) = self.lock().get_mut(target) {
            f(&mut kept.status);
        }
    }

    /// Records `entry` (from `source`); false when one with its target is kept already.
    pub(super) fn insert(&self, entry: MirrorEntry, source: &str) -> Result<bool, ApiError> {
        let mut entries = self.lock();
        if entries.contains_key(entry.target().as_ref()) {
            return Ok(false);
        }
        if entries.len() >= MAX_MIRROR_ENTRIES {
            return Err(ApiError::new(
                ErrorKind::InvalidInput,
                format!("a mirror keeps at most {MAX_MIRROR_ENTRIES} entries"),
            ));
        }
        let status = MirrorEntryStatus {
            target: entry.target().to_string(),
            name: entry.name().map(|(n, r)| format!("{n}@{r}")),
            source: source.to_string(),
            state: MirrorState::Waiting,
            held: 0,
            size: 0,
            last_error: None,
            retry_at: None,
        };
        entries.insert(
            entry.target().to_string(),
            Kept {
                entry,
                status,
                task: None,
            },
        );
        Ok(true)
    }
}

/// The entries added at run time, as saved in the store. Unreadable ones are an error,
/// not an empty list (the next save would drop them all).
pub fn saved_entries(store: &Store) -> Result<Vec<MirrorEntry>, StoreError> {
    match store.get_meta(META_MIRROR_ENTRIES)? {
        None => Ok(Vec::new()),
        Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            StoreError::Damaged(format!("the saved mirror entries do not parse: {e}"))
        }),
    }
}

/// Serialises read-modify-write of the saved entries: two `mirror add` at once must not
/// each save the list without the other's entry.
static SAVING: Mutex<()> = Mutex::new(());

/// Changes the saved entries with `change`, one change at a time.
pub(super) fn change_saved(
    store: &Store,
    change: impl FnOnce(&mut Vec<MirrorEntry>),
) -> Result<(), StoreError> {
    let _one = SAVING.lock().unwrap_or_else(|e| e.into_inner());
    let mut entries = saved_entries(store)?;
    change(&mut entries);
    save_entries(store, &entries)
}

fn save_entries(store: &Store, entries: &[MirrorEntry]) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(entries).map_err(|e| StoreError::Damaged(e.to_string()))?;
    store.put_meta(META_MIRROR_ENTRIES, &bytes)
}

impl Mirror {
    /// The entries of the config file and those added earlier at run time (as
    /// [`saved_entries`] read them), not yet kept by any task.
    pub fn load(configured: Vec<MirrorEntry>, added: Vec<MirrorEntry>) -> Result<Self, ApiError> {
        let mirror = Self::default();
        for entry in configured {
            mirror.insert(entry, "config")?;
        }
        for entry in added {
            mirror.insert(entry, "added")?;
        }
        Ok(mirror)
    }
}
