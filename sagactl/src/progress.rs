//! Progress for long operations (scans, rebuilds, load): drawn on stderr only when stderr is a
//! terminal, so piped and scripted runs stay quiet.

use std::io::IsTerminal as _;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// Whether bars are drawn at all.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    enabled: bool,
}

impl Progress {
    /// Bars are drawn when stderr is a terminal, unless `--no-progress`.
    pub fn new(disabled: bool) -> Self {
        Self { enabled: !disabled && std::io::stderr().is_terminal() }
    }

    pub fn enabled(self) -> bool {
        self.enabled
    }

    /// A spinner for one step of unknown length (hidden unless bars are drawn).
    pub fn spinner(self, message: &str) -> ProgressBar {
        if !self.enabled {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new_spinner();
        bar.set_message(message.to_owned());
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    }

    /// A bar over `len` units of work.
    pub fn bar(self, len: u64, message: &str) -> ProgressBar {
        if !self.enabled {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(len);
        if let Ok(style) =
            ProgressStyle::with_template("{msg:>12} [{bar:32.cyan/blue}] {pos}/{len} ({elapsed}, eta {eta}) {prefix}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(message.to_owned());
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    }
}
