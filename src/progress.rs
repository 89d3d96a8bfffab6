//! Progress on stderr for a person at a terminal, never on stdout (that is for jq and cron):
//! a bar per transfer with bytes, rate and time left, a total over them, and a status line a
//! long-running command keeps up to date. `--progress auto` (the default) draws only when stderr
//! is a terminal, so pipes, CI logs and cron mail carry none; `always` draws anyway, `never`
//! not at all. indicatif redraws at most 20 times a second; a transfer only adds to a counter.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Once, OnceLock};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::cli::ProgressMode;

static BOARD: OnceLock<Option<Board>> = OnceLock::new();

/// Every bar of this process, drawn together.
struct Board {
    multi: MultiProgress,
    /// Bytes of every transfer so far against the sizes known so far, shown from the second
    /// transfer on (for one it would say the same twice).
    total: ProgressBar,
    transfers: AtomicUsize,
    total_shown: Once,
}

/// Decides, once, whether this process draws progress.
pub fn init(mode: ProgressMode) {
    let on = match mode {
        ProgressMode::Never => false,
        ProgressMode::Always => true,
        ProgressMode::Auto => std::io::stderr().is_terminal(),
    };
    let _ = BOARD.set(on.then(|| {
        // A Term draws only on a terminal; `always` asks for it on whatever stderr is.
        let target = match mode {
            ProgressMode::Always => {
                ProgressDrawTarget::term_like_with_hz(Box::new(console::Term::stderr()), 20)
            }
            _ => ProgressDrawTarget::stderr_with_hz(20),
        };
        let multi = MultiProgress::with_draw_target(target);
        // Hidden until it joins the board: nothing draws outside the board.
        let total = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::hidden())
            .with_style(style(BYTES))
            .with_prefix("total");
        Board {
            multi,
            total,
            transfers: AtomicUsize::new(0),
            total_shown: Once::new(),
        }
    }));
}

/// Whether this process draws for a person at a terminal (`--progress`, not `-q`).
pub fn drawing() -> bool {
    board().is_some()
}

fn board() -> Option<&'static Board> {
    BOARD.get().and_then(Option::as_ref)
}

const BYTES: &str =
    "{prefix:>20} {bar:24} {bytes:>10}/{total_bytes:<10} {binary_bytes_per_sec:>12} {eta:>4} left";

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

/// One file's transfer: a bar while it runs (none when progress is off), gone when dropped.
pub struct Transfer {
    bar: Option<ProgressBar>,
    sized: Once,
}

impl Transfer {
    /// A bar named `name` (the device, say), once its size is known.
    pub fn start(name: &str) -> Transfer {
        let bar = board().map(|b| {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::hidden())
                .with_style(style(BYTES))
                .with_prefix(name.chars().take(20).collect::<String>());
            if b.transfers.fetch_add(1, Ordering::Relaxed) == 1 {
                b.total_shown.call_once(|| {
                    b.multi.insert(0, b.total.clone());
                });
            }
            b.multi.add(bar)
        });
        Transfer {
            bar,
            sized: Once::new(),
        }
    }

    /// The file's size, and the bytes already here (a resumed part). An attempt after a cut
    /// says it again: the bar goes back to what is here; the total counts only the first size.
    pub fn sized(&self, total: u64, have: u64) {
        if let (Some(bar), Some(b)) = (&self.bar, board()) {
            bar.set_length(total);
            bar.set_position(have);
            self.sized.call_once(|| {
                b.total.inc_length(total);
                b.total.inc(have);
            });
        }
    }

    pub fn add(&self, n: u64) {
        if let (Some(bar), Some(b)) = (&self.bar, board()) {
            bar.inc(n);
            b.total.inc(n);
        }
    }
}

impl Drop for Transfer {
    fn drop(&mut self) {
        if let (Some(bar), Some(b)) = (self.bar.take(), board()) {
            bar.finish_and_clear();
            b.multi.remove(&bar);
        }
    }
}

/// A line of text kept up to date (a session's counts), with the time since it began.
pub struct Status {
    bar: Option<ProgressBar>,
}

impl Status {
    pub fn start() -> Status {
        let bar = board().map(|b| {
            let bar = b.multi.insert(0, ProgressBar::new_spinner());
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg} · {elapsed}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            // The elapsed time moves on while the session waits for an alarm.
            bar.enable_steady_tick(std::time::Duration::from_millis(500));
            bar
        });
        Status { bar }
    }

    pub fn set(&self, text: String) {
        if let Some(bar) = &self.bar {
            bar.set_message(text);
            bar.tick();
        }
    }
}

impl Drop for Status {
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

/// The command's transfers are over: the total goes (before a summary is printed).
pub fn finish() {
    if let Some(b) = board() {
        b.total.finish_and_clear();
        let _ = b.multi.clear();
    }
}

/// Run `f`, which writes stdout, with the bars taken off the screen when stdout is the same
/// terminal (an interactive session); into a pipe or a file, stdout is nowhere near the bars.
pub fn around_stdout<R>(f: impl FnOnce() -> R) -> R {
    static STDOUT_TTY: OnceLock<bool> = OnceLock::new();
    if drawing() && *STDOUT_TTY.get_or_init(|| std::io::stdout().is_terminal()) {
        suspend(f)
    } else {
        f()
    }
}

/// Run `f` with the bars taken off the screen (a warning printed meanwhile is not drawn over).
pub fn suspend<R>(f: impl FnOnce() -> R) -> R {
    match board() {
        Some(b) => b.multi.suspend(f),
        None => f(),
    }
}
