//! Progress bars for long work, drawn on stderr only when it is a terminal.

use commons_node::{export::ExportProgress, store::ImportProgress};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bytes/rate/ETA bar; hidden for `--json` and when stderr is not a terminal.
pub struct Bar(ProgressBar);

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
        Self(bar)
    }

    pub fn inc(&self, bytes: u64) {
        self.0.inc(bytes);
    }

    pub fn set_length(&self, bytes: u64) {
        self.0.set_length(bytes);
    }

    pub fn finish(&self) {
        self.0.finish_and_clear();
    }
}

impl ImportProgress for Bar {
    fn start(&self, files: u64, bytes: u64) {
        self.0.set_length(bytes);
        if files > 1 {
            self.0.set_message(format!("{files} files"));
        }
    }

    fn advance(&self, bytes: u64) {
        self.0.inc(bytes);
    }
}

impl ExportProgress for Bar {
    fn start(&self, files: u64, bytes: u64) {
        self.0.set_length(bytes);
        self.0.set_message(format!("{files} files"));
    }

    fn file_done(&self, bytes: u64) {
        self.0.inc(bytes);
    }
}
