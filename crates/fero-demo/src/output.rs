//! What the story shows: step headers and lines, and a progress display per feature, as
//! indicatif bars on a terminal, plain periodic lines otherwise, or nothing (`--json`).

use std::io::IsTerminal;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

use crate::summary::thousands;

/// How often a plain progress line is printed per feature when stdout is not a terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(1);

/// The bar layout: items done / total, items per second, ETA.
const BAR_TEMPLATE: &str = "  {prefix:<22} [{bar:28.cyan/blue}] {human_pos:>7}/{human_len:<7} \
                            {rate:>15} ETA {eta:>3} {msg}";

/// The `{rate}` key: whole items per second (indicatif's `{per_sec}` prints every decimal).
fn rate(state: &ProgressState, out: &mut dyn std::fmt::Write) {
    // A write into the bar's line buffer cannot fail.
    let _ = write!(out, "{:.0} items/s", state.per_sec());
}

/// Prints one line on stdout. A closed stdout (`fero-demo | head`) loses the line instead of
/// stopping the story: the exit status still tells whether the devices converged.
fn print_line(text: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}

/// Where the story's output goes.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Nothing (the JSON summary is printed at the end instead).
    Quiet,
    /// Lines only: progress as a line per feature every second (stdout is not a terminal).
    Plain,
    /// Lines and indicatif progress bars (stdout is a terminal).
    Bars,
}

impl Mode {
    /// The mode for the human output: bars on a terminal, plain lines otherwise.
    pub fn detect() -> Mode {
        if std::io::stdout().is_terminal() {
            Mode::Bars
        } else {
            Mode::Plain
        }
    }
}

/// The story's output. Cheap to clone (shared).
#[derive(Clone, Debug)]
pub struct Output {
    mode: Mode,
    multi: MultiProgress,
}

impl Output {
    /// Output in `mode`.
    pub fn new(mode: Mode) -> Self {
        let target = match mode {
            Mode::Bars => ProgressDrawTarget::stdout(),
            Mode::Plain | Mode::Quiet => ProgressDrawTarget::hidden(),
        };
        Output {
            mode,
            multi: MultiProgress::with_draw_target(target),
        }
    }

    /// The mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// A step header ("1", "4b", ...).
    pub fn step(&self, number: &str, title: &str) {
        self.line("");
        self.line(&format!("── {number}. {title} ──"));
    }

    /// One line of text (above the bars while they are drawn).
    pub fn line(&self, text: &str) {
        match self.mode {
            Mode::Quiet => {}
            Mode::Plain => print_line(text),
            Mode::Bars => {
                // println on a MultiProgress fails only when the terminal is gone; the line is
                // then lost with the terminal.
                let _ = self.multi.println(text);
            }
        }
    }

    /// A progress display of `total` items labelled `label`.
    pub fn progress(&self, label: &str, total: u64) -> FeatureProgress {
        let bar = (self.mode == Mode::Bars).then(|| {
            let bar = self.multi.add(ProgressBar::new(total));
            // The template is a constant: if indicatif ever refused it, keep its default bar
            // rather than stop the demo.
            if let Ok(style) = ProgressStyle::with_template(BAR_TEMPLATE) {
                bar.set_style(style.with_key("rate", rate).progress_chars("=> "));
            }
            bar.set_prefix(label.to_owned());
            bar
        });
        FeatureProgress {
            inner: Arc::new(Inner {
                mode: self.mode,
                label: label.to_owned(),
                total,
                bar,
                state: Mutex::new(State {
                    started: Instant::now(),
                    start_position: 0,
                    position: 0,
                    last_line: None,
                    note: String::new(),
                    finished: None,
                }),
            }),
        }
    }

    /// Ends the displays of a finished phase: their bars leave the live area and their final
    /// state is printed once as text, so the lines of later steps follow them in order.
    pub fn freeze(&self, displays: &[FeatureProgress]) {
        if self.mode != Mode::Bars {
            return;
        }
        for display in displays {
            if let Some(bar) = &display.inner.bar {
                bar.finish();
                self.multi.remove(bar);
            }
        }
        for display in displays {
            self.line(&display.summary_line());
        }
    }
}

/// One feature's progress display. Cheap to clone (shared).
#[derive(Clone, Debug)]
pub struct FeatureProgress {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    mode: Mode,
    label: String,
    total: u64,
    bar: Option<ProgressBar>,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// When the current run started, and the position then (a resumed run starts mid-way).
    started: Instant,
    start_position: u64,
    position: u64,
    /// When the last plain line was printed.
    last_line: Option<Instant>,
    /// The latest note (a cancel, a resume, "done").
    note: String,
    /// When the feature completed: the speed is measured up to here.
    finished: Option<Instant>,
}

impl State {
    fn rate(&self) -> f64 {
        let end = self.finished.unwrap_or_else(Instant::now);
        let seconds = end.duration_since(self.started).as_secs_f64();
        if seconds > 0.0 {
            self.position.saturating_sub(self.start_position) as f64 / seconds
        } else {
            0.0
        }
    }
}

impl FeatureProgress {
    fn state(&self) -> MutexGuard<'_, State> {
        // Plain fields set in single assignments; a panic elsewhere cannot leave them
        // inconsistent.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Items done so far.
    pub fn position(&self) -> u64 {
        self.state().position
    }

    /// Starts (or restarts after a cancel) measuring speed from the current position.
    pub fn start(&self) {
        let mut state = self.state();
        state.started = Instant::now();
        state.start_position = state.position;
        state.finished = None;
        if let Some(bar) = &self.inner.bar {
            bar.reset_eta();
        }
    }

    /// Sets the items done; a plain display prints a line at most every second.
    pub fn set_position(&self, position: u64) {
        let mut state = self.state();
        state.position = position;
        if let Some(bar) = &self.inner.bar {
            bar.set_position(position);
        }
        // The last page's line is the one `finish` prints.
        let due = self.inner.mode == Mode::Plain
            && position < self.inner.total
            && state
                .last_line
                .is_none_or(|last| last.elapsed() >= PLAIN_EVERY);
        if due {
            state.last_line = Some(Instant::now());
            print_line(&self.plain_line(&state, ""));
        }
    }

    /// Shows a note beside the progress (a cancel, a resume).
    pub fn note(&self, text: &str) {
        let mut state = self.state();
        text.clone_into(&mut state.note);
        if let Some(bar) = &self.inner.bar {
            bar.set_message(text.to_owned());
        }
        if self.inner.mode == Mode::Plain {
            print_line(&self.plain_line(&state, text));
        }
    }

    /// The feature completed.
    pub fn finish(&self, text: &str) {
        self.state().finished = Some(Instant::now());
        self.note(text);
        if let Some(bar) = &self.inner.bar {
            bar.finish();
        }
    }

    /// The final state as one line (for [`Output::freeze`]).
    fn summary_line(&self) -> String {
        let state = self.state();
        format!(
            "  {:<22} [{}] {:>7}/{:<7} {:>9} items/s  {}",
            self.inner.label,
            "=".repeat(28),
            thousands(state.position),
            thousands(self.inner.total),
            thousands(state.rate() as u64),
            state.note
        )
    }

    fn plain_line(&self, state: &State, note: &str) -> String {
        let total = self.inner.total;
        let percent = (state.position * 100).checked_div(total).unwrap_or(100);
        let rate = state.rate();
        let eta = if rate > 0.0 {
            format!("{:.0}s", total.saturating_sub(state.position) as f64 / rate)
        } else {
            "-".to_owned()
        };
        let line = format!(
            "  {:<22} {:>7}/{:<7} {:>3}%  {:>9} items/s  ETA {eta}",
            self.inner.label,
            state.position,
            total,
            percent,
            format!("{rate:.0}"),
        );
        if note.is_empty() {
            line
        } else {
            format!("{line}  {note}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_display_tracks_its_position_in_every_mode() {
        for mode in [Mode::Quiet, Mode::Plain] {
            let progress = Output::new(mode).progress("A contacts", 10);
            progress.start();
            progress.set_position(5);
            assert_eq!(progress.position(), 5, "{mode:?}");
        }
        let hidden_bars = Output {
            mode: Mode::Bars,
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::hidden()),
        };
        let progress = hidden_bars.progress("B messages", 100);
        progress.set_position(40);
        assert_eq!(progress.position(), 40);
        assert_eq!(
            progress.inner.bar.as_ref().map(ProgressBar::position),
            Some(40)
        );
    }

    #[test]
    fn a_plain_line_shows_items_done_of_total_and_the_percentage() {
        let progress = Output::new(Mode::Quiet).progress("A contacts", 200);
        progress.state().position = 50;
        let line = progress.plain_line(&progress.state(), "resumed");
        assert!(line.contains("50/200"), "{line}");
        assert!(line.contains("25%"), "{line}");
        assert!(line.ends_with("resumed"), "{line}");
    }

    #[test]
    fn a_frozen_display_keeps_its_last_note() {
        let progress = Output::new(Mode::Quiet).progress("A messages", 2_000);
        progress.set_position(2_000);
        progress.finish("done (0.4 s)");
        let line = progress.summary_line();
        assert!(line.contains("2,000/2,000"), "{line}");
        assert!(line.ends_with("done (0.4 s)"), "{line}");
    }
}
