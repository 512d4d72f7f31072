//! Progress bars for long work, drawn on stderr only when it is a terminal.

use std::sync::atomic::{AtomicU64, Ordering};

use commons_node::api::{ProgressEvent, ProgressSink};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bytes/rate/ETA bar; hidden for `--json` and when stderr is not a terminal. Also tells
/// the work it reports on that the user interrupted it.
pub struct Bar(ProgressBar, FileCount, std::sync::atomic::AtomicBool);

/// Files done out of files to do, and providers in use, for the bar's message.
#[derive(Default)]
struct FileCount {
    done: AtomicU64,
    total: AtomicU64,
    peers: AtomicU64,
}

impl Bar {
    pub fn new(json: bool, verb: &'static str) -> Self {
        let bar = ProgressBar::with_draw_target(
            None,
            if json {
                ProgressDrawTarget::hidden()
            } else {
                ProgressDrawTarget::stderr()
            },
        );
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>9} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_prefix(verb);
        Self(bar, FileCount::default(), Default::default())
    }

    pub fn inc(&self, bytes: u64) {
        self.0.inc(bytes);
    }

    pub fn set_length(&self, bytes: u64) {
        self.0.set_length(bytes);
    }

    /// Tells the work (blocking parts check it) that the user interrupted it.
    pub fn cancel(&self) {
        self.2.store(true, Ordering::Relaxed);
    }

    pub fn finish(&self) {
        self.0.finish_and_clear();
    }

    /// Sets how many files there are to do.
    pub fn set_files(&self, total: u64) {
        self.1.total.store(total, Ordering::Relaxed);
        self.show_counts();
    }

    /// Counts one more file done.
    pub fn file_done(&self) {
        self.1.done.fetch_add(1, Ordering::Relaxed);
        self.show_counts();
    }

    /// Sets how many providers the fetch is using.
    pub fn set_peers(&self, peers: u64) {
        self.1.peers.store(peers, Ordering::Relaxed);
        self.show_counts();
    }

    fn show_counts(&self) {
        let done = self.1.done.load(Ordering::Relaxed);
        let total = self.1.total.load(Ordering::Relaxed);
        let peers = self.1.peers.load(Ordering::Relaxed);
        let files = if total > 0 {
            format!("{done}/{total} files")
        } else {
            String::new()
        };
        let peers = match peers {
            0 => String::new(),
            1 => ", 1 peer".into(),
            n => format!(", {n} peers"),
        };
        self.0.set_message(
            format!("{files}{peers}")
                .trim_start_matches(", ")
                .to_string(),
        );
    }
}

impl ProgressSink for Bar {
    fn event(&self, event: ProgressEvent) {
        match event {
            ProgressEvent::Start { files, bytes } => {
                self.set_length(bytes);
                if files > 1 {
                    self.set_files(files);
                }
            }
            ProgressEvent::Advance { bytes } => self.inc(bytes),
            ProgressEvent::FileDone => self.file_done(),
            ProgressEvent::Peers { count } => self.set_peers(count),
        }
    }
    fn cancelled(&self) -> bool {
        self.2.load(Ordering::Relaxed)
    }
}
