//! Progress of long commands: a bar with an ETA on a terminal (indicatif, on standard
//! error), nothing otherwise (the command prints a summary, or JSON with `--json`); and
//! the Ctrl-C flag they check between steps so that an interruption leaves consistent,
//! resumable state.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A progress bar that is drawn only on a terminal and never with `--json`.
pub struct Bar(ProgressBar);

impl Bar {
    /// A bar of `what` (hidden unless standard error is a terminal and `json` is off).
    pub fn new(what: &str, json: bool) -> Self {
        let bar = ProgressBar::with_draw_target(
            Some(0),
            if !json && std::io::stderr().is_terminal() {
                ProgressDrawTarget::stderr()
            } else {
                ProgressDrawTarget::hidden()
            },
        );
        if let Ok(style) = ProgressStyle::with_template(
            "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg} (ETA {eta})",
        ) {
            bar.set_style(style);
        }
        bar.set_prefix(what.to_owned());
        Self(bar)
    }

    pub fn set_length(&self, n: u64) {
        self.0.set_length(n);
    }

    pub fn set_position(&self, n: u64) {
        self.0.set_position(n);
    }

    pub fn inc(&self, n: u64, msg: &str) {
        self.0.set_message(msg.to_owned());
        self.0.inc(n);
    }

    /// Whether the bar is drawn (a terminal, no `--json`).
    pub fn is_visible(&self) -> bool {
        !self.0.is_hidden()
    }

    pub fn finish(&self) {
        self.0.finish_and_clear();
    }
}

impl portcullis_backend::retention::Progress for Bar {
    fn planned(&self, rows: u64) {
        self.set_length(rows);
    }
    fn advanced(&self, category: &str, rows: u64) {
        self.inc(rows, category);
    }
}

/// Set by the first SIGINT or SIGTERM; a second one ends the process at once (the
/// default action is restored).
pub fn interrupt_flag() -> std::io::Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // Registered first: when the flag is already set, the second signal exits.
        signal_hook::flag::register_conditional_shutdown(signal, 130, Arc::clone(&flag))?;
        signal_hook::flag::register(signal, Arc::clone(&flag))?;
    }
    Ok(flag)
}

/// Whether the flag is set.
pub fn interrupted(flag: &AtomicBool) -> bool {
    flag.load(Ordering::SeqCst)
}

/// Exit status of a command stopped by Ctrl-C (128 + SIGINT); run it again to resume.
pub const EXIT_INTERRUPTED: u8 = 130;

/// A command stopped between steps on Ctrl-C; what it did so far is consistent.
#[derive(Debug, thiserror::Error)]
#[error("{0} interrupted; run it again to resume")]
pub struct Interrupted(pub &'static str);
