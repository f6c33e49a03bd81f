//! Download progress: an indicatif bar (size, rate, ETA) when both stdout and stderr are
//! terminals; otherwise one line when a file starts and one when it is done.

use crate::sys::ui::Ui;
use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::Instant;

pub struct Progress {
    bar: Option<ProgressBar>,
    ui: Ui,
    label: String,
    started: Instant,
    /// "fetched" or "pushed", for the closing line.
    done: &'static str,
}

impl Progress {
    pub fn start(ui: Ui, label: &str, size: Option<u64>, position: u64) -> Progress {
        Progress::begin(ui, ("fetching", "fetched"), label, size, position)
    }

    /// Progress of an upload of `size` bytes.
    pub fn upload(ui: Ui, label: &str, size: u64) -> Progress {
        Progress::begin(ui, ("pushing", "pushed"), label, Some(size), 0)
    }

    fn begin(
        ui: Ui,
        (doing, done): (&'static str, &'static str),
        label: &str,
        size: Option<u64>,
        position: u64,
    ) -> Progress {
        let interactive =
            !ui.quiet && std::io::stdout().is_terminal() && std::io::stderr().is_terminal();
        let bar = interactive.then(|| {
            let bar = ProgressBar::with_draw_target(size, ProgressDrawTarget::stderr());
            if let Ok(style) = ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(label.to_string());
            bar.set_position(position);
            bar.reset_eta();
            bar
        });
        if bar.is_none() {
            let what = match size {
                Some(size) => format!(" ({})", HumanBytes(size)),
                None => String::new(),
            };
            let from = if position > 0 {
                format!(", resuming at {}", HumanBytes(position))
            } else {
                String::new()
            };
            ui.info(&format!("{doing} {label}{what}{from}"));
        }
        Progress {
            bar,
            ui,
            label: label.to_string(),
            started: Instant::now(),
            done,
        }
    }

    pub fn set_position(&self, position: u64, total: Option<u64>) {
        if let Some(bar) = &self.bar {
            if let Some(total) = total {
                bar.set_length(total);
            }
            bar.set_position(position);
        }
    }

    /// Moves the bar from another thread or task.
    pub fn setter(&self) -> impl Fn(u64) + Send + 'static {
        let bar = self.bar.clone();
        move |position| {
            if let Some(bar) = &bar {
                bar.set_position(position);
            }
        }
    }

    /// A line above the bar (or on its own without one).
    pub fn note(&self, message: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| self.ui.warn(message)),
            None => self.ui.warn(message),
        }
    }

    pub fn finish(&self) {
        match &self.bar {
            Some(bar) => bar.finish_and_clear(),
            None => {
                let seconds = self.started.elapsed().as_secs_f64();
                self.ui
                    .detail(&format!("{} {} in {seconds:.1}s", self.done, self.label));
            }
        }
    }
}
