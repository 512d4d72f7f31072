//! Blob files a flush has finished, dropped from the page cache while large blobs are fetched.
//!
//! A fetched span of a large blob is written once, into a blob file when its memtable is
//! flushed (`partial::UNLOGGED_SPANS_FROM`), and that write goes through the page cache.
//! Left there, every GiB fetched takes a GiB of pages the kernel must find afresh; on a VM
//! that hands freed memory back to its host, each such page also costs a fault in the host,
//! and the flush's copy was a third of the fetcher's CPU (docs/benchmarks.md, issue 22,
//! part 10). RocksDB syncs a blob file before it closes it, so once it is closed its pages
//! are clean: dropping them (`POSIX_FADV_DONTNEED`) frees them at once, and the next flush
//! reuses them. RocksDB's own `SstFileWriter` does the same with the table files of large
//! imports (`ingest`). The data is on disk; serving it later reads it from there, as it
//! would once the kernel had evicted it.
//!
//! Only while spans skip the WAL (they arrive at `partial::UNLOGGED_RATE` or more): there
//! the cost per byte is what bounds the fetch, whereas a slower fetch in a swarm is likelier
//! to be asked for what it just received, better served from the cache. Which files a flush
//! finished comes from inotify (a file in the store's folder closed after writing), watched
//! only meanwhile: the watch ends with the flush that ends such a run
//! ([`FlushedBlobFiles::stop`], from `persist_spans`: the rate fell, the blob completed, the
//! node stops). A fast fetch cancelled mid-run leaves the watch on until the next such
//! flush; meanwhile the kernel's queue of events (bounded by
//! `fs.inotify.max_queued_events`) is all it holds, and the next run drops the blob files
//! closed in between too, which only costs a later read of them from the disk. Where
//! inotify is missing or refused (its per-user limit), nothing is dropped: the pages stay
//! cached, as they would without this module.

use std::path::Path;

/// The watch on the store's folder (see the module's documentation).
#[derive(Debug, Default)]
pub(super) struct FlushedBlobFiles {
    #[cfg(target_os = "linux")]
    watch: std::sync::Mutex<linux::Watch>,
}

impl FlushedBlobFiles {
    /// Called as a span that skips the WAL is stored in `dir`: starts watching `dir` if it is
    /// not watched yet, and drops from the page cache, on a thread of their own, the blob
    /// files closed since the last call. Another thread already doing so is left to it.
    pub(super) fn drop_finished(&self, dir: &Path) {
        #[cfg(target_os = "linux")]
        {
            use std::sync::TryLockError;
            let mut watch = match self.watch.try_lock() {
                Ok(watch) => watch,
                Err(TryLockError::Poisoned(e)) => e.into_inner(),
                Err(TryLockError::WouldBlock) => return,
            };
            watch.start(dir);
            watch.drop_finished(dir, Aside::Yes);
        }
        #[cfg(not(target_os = "linux"))]
        let _ = dir;
    }

    /// Called after a flush of the column families spans are written to (whether it
    /// succeeded or not): drops the blob files it finished, then ends the watch.
    pub(super) fn stop(&self, dir: &Path) {
        #[cfg(target_os = "linux")]
        {
            let mut watch = self.watch.lock().unwrap_or_else(|e| e.into_inner());
            // Here the caller has just waited for a whole flush: it can wait for this too,
            // and what it flushed is out of the cache when it returns.
            watch.drop_finished(dir, Aside::No);
            *watch = linux::Watch::Off;
        }
        #[cfg(not(target_os = "linux"))]
        let _ = dir;
    }
}

#[cfg(target_os = "linux")]
use linux::Aside;

#[cfg(target_os = "linux")]
mod linux {
    use std::{
        io,
        os::fd::AsRawFd,
        path::{Path, PathBuf},
    };

    use inotify::{EventMask, Inotify, WatchMask};

    /// Bytes read from the watch at a time: 15 events at the longest file name; a drain reads
    /// until the queue is empty.
    const EVENT_BUFFER_BYTES: usize = 4096;

    /// Whether the store's folder is watched.
    #[derive(Debug, Default)]
    pub(super) enum Watch {
        /// Not watched: no spans are skipping the WAL.
        #[default]
        Off,
        /// Watched for files closed after writing.
        On(Inotify),
        /// inotify refused; not asked again until the next [`super::FlushedBlobFiles::stop`].
        Refused,
    }

    impl Watch {
        pub(super) fn start(&mut self, dir: &Path) {
            if !matches!(self, Watch::Off) {
                return;
            }
            let watch = Inotify::init().and_then(|inotify| {
                inotify.watches().add(dir, WatchMask::CLOSE_WRITE)?;
                Ok(inotify)
            });
            *self = match watch {
                Ok(inotify) => Watch::On(inotify),
                Err(e) => {
                    tracing::debug!(error = %e, "no inotify watch: blob files stay cached");
                    Watch::Refused
                }
            };
        }

        pub(super) fn drop_finished(&mut self, dir: &Path, aside: Aside) {
            let Watch::On(inotify) = self else {
                return;
            };
            let mut buffer = [0u8; EVENT_BUFFER_BYTES];
            let mut finished = Vec::new();
            loop {
                let events = match inotify.read_events(&mut buffer) {
                    Ok(events) => events,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        tracing::debug!(error = %e, "inotify failed: blob files stay cached");
                        *self = Watch::Refused;
                        break;
                    }
                };
                for event in events {
                    // Events lost to an overflowing queue leave their files cached: harmless.
                    if event.mask.contains(EventMask::Q_OVERFLOW) {
                        continue;
                    }
                    let blob_file = event
                        .name
                        .filter(|name| Path::new(name).extension() == Some("blob".as_ref()));
                    if let Some(name) = blob_file {
                        finished.push(dir.join(name));
                    }
                }
            }
            match aside {
                Aside::Yes => drop_from_cache_aside(finished),
                Aside::No => finished.iter().for_each(|f| drop_from_cache(f)),
            }
        }
    }

    /// Whether files are dropped from the cache on a thread of their own (see
    /// [`drop_from_cache_aside`]) or before returning.
    pub(super) enum Aside {
        Yes,
        No,
    }

    /// Drops `files` from the page cache on a thread of their own: freeing a flushed file's
    /// pages takes a few milliseconds, which the span being stored should not wait for (a
    /// stream that waits looks stalled to the swarm, which then asks another peer for its
    /// batch). One file per 16 MiB flush, so a thread each time costs little.
    fn drop_from_cache_aside(files: Vec<PathBuf>) {
        if files.is_empty() {
            return;
        }
        let spawned = std::thread::Builder::new()
            .name("drop-cached".into())
            .spawn(move || files.iter().for_each(|f| drop_from_cache(f)));
        if let Err(e) = spawned {
            tracing::debug!(error = %e, "no thread to drop flushed blob files: they stay cached");
        }
    }

    /// Asks the kernel to drop `file`'s cached pages. Only clean pages go: dirty ones stay
    /// (their writeback is started). A file already removed (collected) is left alone.
    #[allow(unsafe_code)]
    fn drop_from_cache(file: &Path) {
        if let Ok(f) = std::fs::File::open(file) {
            // SAFETY: a valid open descriptor; advice changes no data.
            let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
            if rc != 0 {
                tracing::debug!(file = %file.display(), rc, "posix_fadvise refused");
            }
        }
    }
}
