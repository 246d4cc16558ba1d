//! Progress bars on a terminal (indicatif), nothing otherwise.

use std::path::Path;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use lifeboat_core::progress::Progress;

pub struct Bar {
    bar: ProgressBar,
    warnings: bool,
    visible: bool,
}

impl Bar {
    /// A byte-based bar with files, rate and ETA; hidden unless `visible`.
    pub fn new(visible: bool, warnings: bool, prefix: &str) -> Self {
        let bar = if visible {
            ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(4))
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}",
            )
            .expect("valid template"),
        );
        bar.set_prefix(prefix.to_string());
        bar.enable_steady_tick(Duration::from_millis(250));
        Self {
            bar,
            warnings,
            visible,
        }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Progress for Bar {
    fn wants_totals(&self) -> bool {
        self.visible
    }
    fn set_totals(&self, files: u64, bytes: u64) {
        self.bar.set_length(bytes);
        self.bar.set_message(format!("of {files} files"));
    }
    fn add_bytes(&self, bytes: u64) {
        self.bar.inc(bytes);
    }
    fn current(&self, _path: &Path) {}
    fn warning(&self, message: &str) {
        if self.warnings {
            self.bar.suspend(|| eprintln!("warning: {message}"));
        }
    }
}
