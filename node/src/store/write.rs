//! Every store write goes through here, so none waits forever.
//!
//! RocksDB makes a writer wait while flushes fall behind (back pressure, normally well under
//! a second), and, once a flush failed on a full disk, for as long as its background
//! recovery waits for free space: forever in a one-shot command (one `commons add` in five
//! hung on a full tmpfs this way). Here a write asks RocksDB never to wait
//! (`no_slowdown`); while RocksDB answers that it would, the write waits in this module
//! instead, checking the disk: a full disk becomes [`StoreError::DiskFull`] within
//! [`DISK_FULL_GRACE`], anything else that stops writes for [`STALL_LIMIT`] becomes
//! [`StoreError::Stalled`]. Free space coming back (a `gc`, a deleted file) lets the
//! background recovery resume writes; nothing already stored is touched.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use rocksdb::{WriteBatch, WriteOptions};

use super::{Result, Store, StoreError};

/// How long writes may be refused while the disk is nearly full before the write fails
/// as [`StoreError::DiskFull`]: a flush that frees memtables takes far less.
pub const DISK_FULL_GRACE: Duration = Duration::from_secs(3);
/// Free space under which a stalled store is taken to be on a full disk: less than the
/// store's memtables need to flush (3 × 16 MiB data + metadata) plus a margin.
pub const LOW_FREE_BYTES: u64 = 128 << 20;
/// The longest a write waits for RocksDB to accept it on a disk with free space (a
/// failing or hopelessly slow disk); healthy back pressure lasts milliseconds.
pub const STALL_LIMIT: Duration = Duration::from_secs(60);

/// Bytes an unprivileged writer may still use on the file system holding `path`.
#[allow(unsafe_code)]
pub fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c_path` is a valid NUL-terminated string and `stat` is writable memory of
    // the right type; statvfs fills it when it returns 0.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), stat.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it initialised `stat`.
    let stat = unsafe { stat.assume_init() };
    // The field types vary by platform (u64 on Linux x86-64).
    #[allow(clippy::unnecessary_cast)]
    Some((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64))
}

/// Whether a RocksDB error says the disk is full.
pub(super) fn is_no_space(e: &rocksdb::Error) -> bool {
    e.to_string().contains("No space left on device")
}

impl Store {
    /// Writes `batch` through the WAL.
    pub(super) fn write(&self, batch: WriteBatch) -> Result<()> {
        self.write_opt(batch, WriteOptions::default())
    }

    /// Writes `batch` with `options` (see the module docs for how a stall ends).
    pub(super) fn write_opt(&self, batch: WriteBatch, options: WriteOptions) -> Result<()> {
        let mut first = Some(batch);
        let mut copy: Option<Vec<u8>> = None;
        self.write_with(options, 0, |attempt| match first.take() {
            Some(batch) => {
                // Kept only in case RocksDB refuses it for now (cheap: small batches).
                copy = Some(batch.data().to_vec());
                *attempt = batch;
            }
            None => *attempt = WriteBatch::from_data(copy.as_deref().unwrap_or_default()),
        })
    }

    /// Writes the batch `build` fills, building it again for each attempt (no copy kept:
    /// for the bulk writes of data rows). The batch starts with room for `reserve` bytes:
    /// a batch that outgrows its buffer moves into one twice the size, which for a span of
    /// data is a copy of the span and fresh pages for it (more than half of the fetcher's
    /// page faults, `docs/benchmarks.md`).
    pub(super) fn write_with(
        &self,
        mut options: WriteOptions,
        reserve: usize,
        mut build: impl FnMut(&mut WriteBatch),
    ) -> Result<()> {
        options.set_no_slowdown(true);
        let started = Instant::now();
        let mut pause = Duration::from_millis(1);
        let mut low_since: Option<Instant> = None;
        loop {
            let mut batch = WriteBatch::with_capacity_bytes(reserve);
            build(&mut batch);
            let e = match self.db.write_opt(batch, &options) {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if is_no_space(&e) {
                return Err(self.disk_full());
            }
            if e.kind() != rocksdb::ErrorKind::Incomplete {
                return Err(StoreError::Db(e));
            }
            // RocksDB would stall this write: wait here, bounded.
            let now = Instant::now();
            let low = free_bytes(&self.path).is_some_and(|free| free < LOW_FREE_BYTES);
            match (low, low_since) {
                (true, None) => low_since = Some(now),
                (true, Some(since)) if now - since >= DISK_FULL_GRACE => {
                    return Err(self.disk_full())
                }
                (false, _) => low_since = None,
                _ => {}
            }
            if now - started >= STALL_LIMIT {
                return Err(StoreError::Stalled {
                    path: self.path.clone(),
                    secs: STALL_LIMIT.as_secs(),
                });
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// Puts one value (through the WAL).
    pub(super) fn put(
        &self,
        cf: &str,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
    ) -> Result<()> {
        let cf = self.cf(cf);
        self.write_with(WriteOptions::default(), 0, |b| {
            b.put_cf(cf, key.as_ref(), value.as_ref())
        })
    }

    /// Deletes one value (through the WAL).
    pub(super) fn delete(&self, cf: &str, key: impl AsRef<[u8]>) -> Result<()> {
        let cf = self.cf(cf);
        self.write_with(WriteOptions::default(), 0, |b| {
            b.delete_cf(cf, key.as_ref())
        })
    }

    /// The error for a write refused for lack of space.
    pub(super) fn disk_full(&self) -> StoreError {
        StoreError::DiskFull {
            path: self.path.clone(),
            free: free_bytes(&self.path).unwrap_or(0),
        }
    }

    /// Maps a RocksDB error from a flush or compaction: a full disk is named as such.
    pub(super) fn db_error(&self, e: rocksdb::Error) -> StoreError {
        if is_no_space(&e) {
            self.disk_full()
        } else {
            StoreError::Db(e)
        }
    }
}
