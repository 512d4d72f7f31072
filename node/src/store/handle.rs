//! [`AsyncStore`]: the store as async code holds it. RocksDB calls block (a read can wait
//! on the disk, a write on a flush or a stall), so they must never run on an async worker
//! thread, where they would stall every task sharing it. Async code gets this handle, which
//! does not hand out `&Store`: the only way in is [`AsyncStore::run`], which runs the work on
//! tokio's blocking pool. The compiler, not each caller's discipline, keeps the rule.

use std::sync::Arc;

use super::{Store, StoreError};

/// A store whose every use from async code runs on the blocking pool.
#[derive(Clone)]
pub struct AsyncStore(Arc<Store>);

impl From<Arc<Store>> for AsyncStore {
    fn from(store: Arc<Store>) -> Self {
        Self(store)
    }
}

impl AsyncStore {
    /// Wraps an open store.
    pub fn new(store: Arc<Store>) -> Self {
        Self(store)
    }

    /// Runs `work` on the store, on tokio's blocking pool, and waits for its result.
    pub async fn run<T, E>(
        &self,
        work: impl FnOnce(&Store) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let store = self.0.clone();
        match tokio::task::spawn_blocking(move || work(&store)).await {
            Ok(result) => result,
            Err(e) => Err(StoreError::Background(e.to_string()).into()),
        }
    }

    /// Bytes per data row (fixed when the store was created; no I/O).
    pub fn span_bytes(&self) -> u64 {
        self.0.span_bytes()
    }

    /// The byte ranges of span ranges of a blob of `size` bytes (no I/O).
    pub fn span_byte_ranges(
        &self,
        spans: &[std::ops::Range<u64>],
        size: u64,
    ) -> Vec<std::ops::Range<u64>> {
        self.0.span_byte_ranges(spans, size)
    }

    /// The store itself, for code that runs outside the async runtime (a blocking thread
    /// of its own, a one-shot command before its runtime starts, tests).
    pub fn blocking(&self) -> &Arc<Store> {
        &self.0
    }
}
