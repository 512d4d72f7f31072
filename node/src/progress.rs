//! Progress of long work, as events: drawn as a bar by the CLI, or sent as lines over the
//! admin socket, which turns them back into the same events on the other side. Fetches
//! report events; imports and exports report through their traits, implemented here.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::{export::ExportProgress, store::ImportProgress};

/// One step of long work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ProgressEvent {
    /// The totals, once known.
    Start {
        /// Files to do.
        files: u64,
        /// Bytes to do.
        bytes: u64,
    },
    /// More bytes done (received, hashed, written or found already held).
    Advance {
        /// Bytes done since the last event.
        bytes: u64,
    },
    /// One more file done.
    FileDone,
    /// The number of providers a fetch uses now.
    Peers {
        /// Providers.
        count: u64,
    },
}

/// Where progress goes.
pub trait ProgressSink: Send + Sync {
    /// Reports one step.
    fn event(&self, event: ProgressEvent);
    /// Whether whoever asked has gone away: long blocking work then stops.
    fn cancelled(&self) -> bool {
        false
    }
}

/// Progress that goes nowhere.
impl ProgressSink for () {
    fn event(&self, _event: ProgressEvent) {}
}

/// A shared handle to a [`ProgressSink`], handed to the store, fetches and exports.
#[derive(Clone)]
pub struct Progress(Arc<dyn ProgressSink>);

impl Progress {
    /// Reports to `sink`.
    pub fn new(sink: Arc<dyn ProgressSink>) -> Self {
        Self(sink)
    }

    /// Reports nowhere (a mirror's background work).
    pub fn none() -> Self {
        Self(Arc::new(()))
    }

    /// Reports one step.
    pub fn event(&self, event: ProgressEvent) {
        self.0.event(event);
    }
}

impl ImportProgress for Progress {
    fn start(&self, files: u64, bytes: u64) {
        self.event(ProgressEvent::Start { files, bytes });
    }
    fn advance(&self, bytes: u64) {
        self.event(ProgressEvent::Advance { bytes });
    }
    fn cancelled(&self) -> bool {
        self.0.cancelled()
    }
}

impl ExportProgress for Progress {
    fn start(&self, files: u64, bytes: u64) {
        self.event(ProgressEvent::Start { files, bytes });
    }
    fn file_done(&self, bytes: u64) {
        self.event(ProgressEvent::Advance { bytes });
        self.event(ProgressEvent::FileDone);
    }
    fn cancelled(&self) -> bool {
        self.0.cancelled()
    }
}

/// Reports nothing but whether the work was cancelled: for a step whose progress would
/// confuse its caller's (the export that ends a `get -o`).
pub struct CancelOnly(pub Progress);

impl ExportProgress for CancelOnly {
    fn cancelled(&self) -> bool {
        self.0 .0.cancelled()
    }
}

/// Passes on only bytes done (and cancellation): for a step inside larger work whose own
/// totals would reset its caller's (one file of an import fetched from a peer).
pub struct AdvanceOnly(pub Progress);

impl ProgressSink for AdvanceOnly {
    fn event(&self, event: ProgressEvent) {
        if let ProgressEvent::Advance { .. } = event {
            self.0.event(event);
        }
    }
    fn cancelled(&self) -> bool {
        self.0 .0.cancelled()
    }
}

/// Passes on nothing but cancellation: for work whose bytes were already counted (a staged
/// download imported into the store).
pub struct Quiet(pub Progress);

impl ProgressSink for Quiet {
    fn event(&self, _event: ProgressEvent) {}
    fn cancelled(&self) -> bool {
        self.0 .0.cancelled()
    }
}
