//! Signs of life while the builder is silent. On a terminal, after a few seconds without
//! output, one line on stderr shows the phase, the time since the box started and the
//! box's activity (`activity`), refreshed every second and cleared before anything else
//! is written. Where stderr is not a terminal, one plain notice per five minutes of
//! silence. Nothing of it reaches `result.log`, and nothing shows with `--quiet`.

mod text;

use crate::job::wire::AgentEvent;
use crate::runtime::activity::{Activity, ProcFs, Sample};
use crate::sys::ui::Ui;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use text::Report;

/// Silence after which the line appears on a terminal.
const SILENT_AFTER: Duration = Duration::from_secs(5);
/// How often the line is refreshed, and the box's activity measured.
const REFRESH: Duration = Duration::from_secs(1);
/// Silence between two notices where stderr is not a terminal.
const NOTICE_EVERY: Duration = Duration::from_secs(300);
/// What `kiwi-ng result bundle` logs when it starts (the Debian box runs it after the
/// build); from then on the phase is bundling.
const BUNDLE_MARKER: &[u8] = b"Bundle build results from";

/// What the box is doing, as far as boxbuild can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// From power-on to the agent's greeting.
    Booting,
    /// From the job's hand-over to the builder's status.
    Building,
    /// After kiwi announced its result bundle, until the builder's status.
    Bundling,
    /// After the builder's status, until the box is off.
    PoweringOff,
}

impl Phase {
    /// The phase as the status line names it.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Booting => "booting",
            Phase::Building => "building",
            Phase::Bundling => "bundling",
            Phase::PoweringOff => "powering off",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// stderr is a terminal: a line redrawn in place.
    Line,
    /// stderr is a pipe or file: a plain notice now and then.
    Notices,
}

/// What the writers and the refreshing thread share; every write to the terminal while
/// the status runs happens under its lock.
struct State {
    phase: Phase,
    /// When the builder (or boxbuild, with -v) last wrote something.
    last_output: Instant,
    /// When the last notice was written (notices mode).
    last_notice: Option<Instant>,
    bar: Option<ProgressBar>,
    /// Whether the output on stderr's file ends with a complete line.
    at_line_start: bool,
    /// Whether stdout writes to the same file as stderr (then both streams share a line).
    stdout_shares_stderr: bool,
    /// The last bytes of output, for a marker split across writes.
    tail: Vec<u8>,
}

impl State {
    fn saw_output(&mut self, to_stderr: bool, bytes: &[u8]) {
        if let Some(last) = bytes.last() {
            if to_stderr || self.stdout_shares_stderr {
                self.at_line_start = *last == b'\n';
            }
        }
        let mut window = std::mem::take(&mut self.tail);
        window.extend_from_slice(bytes);
        if self.phase == Phase::Building && contains(&window, BUNDLE_MARKER) {
            self.phase = Phase::Bundling;
        }
        let keep = BUNDLE_MARKER.len().saturating_sub(1);
        self.tail = window[window.len().saturating_sub(keep)..].to_vec();
    }

    /// Removes the line from the terminal, if it is shown.
    fn clear(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }

    /// Shows `text` as the line, starting it on a line of its own.
    fn show(&mut self, text: String) {
        let bar = self.bar.get_or_insert_with(|| {
            if !self.at_line_start {
                let _ = std::io::stderr().write_all(b"\n");
                self.at_line_start = true;
            }
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{wide_msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar
        });
        bar.set_message(text);
    }

    /// Writes `text` as a line of its own on stderr.
    fn notice(&mut self, text: &str) {
        let mut err = std::io::stderr().lock();
        let newline = if self.at_line_start { "" } else { "\n" };
        let _ = writeln!(err, "{newline}{text}");
        let _ = err.flush();
        self.at_line_start = true;
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether stdout and stderr are the same file (one terminal, or `2>&1`).
fn stdout_shares_stderr() -> bool {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let identity = |fd: std::os::fd::BorrowedFd<'_>| {
        let file = std::fs::File::from(fd.try_clone_to_owned().ok()?);
        let meta = file.metadata().ok()?;
        Some((meta.dev(), meta.ino(), meta.rdev()))
    };
    let out = identity(std::io::stdout().as_fd());
    out.is_some() && out == identity(std::io::stderr().as_fd())
}

/// The status of one build. Dropping it stops the refreshing and clears the line.
pub struct StatusLine {
    state: Option<Arc<Mutex<State>>>,
    /// Whether boxbuild's own messages (-v) count as output.
    verbose: bool,
    /// Dropped to stop the refreshing thread.
    stop: Option<Sender<()>>,
    refresher: Option<JoinHandle<()>>,
}

/// Exclusive use of the terminal while one agent event is handled; the line stays away
/// until the guard is dropped, and the silence counts from then.
pub struct Hold<'a> {
    state: Option<MutexGuard<'a, State>>,
    counts_as_output: bool,
}

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        if let (Some(state), true) = (self.state.as_mut(), self.counts_as_output) {
            state.last_output = Instant::now();
        }
    }
}

impl StatusLine {
    /// Starts watching a box started at `box_started`. Nothing is ever shown with
    /// `--quiet`, or when `console_shown` (the box's console is on the terminal).
    pub fn start(ui: Ui, console_shown: bool, box_started: Instant) -> StatusLine {
        if ui.quiet || console_shown {
            return StatusLine {
                state: None,
                verbose: false,
                stop: None,
                refresher: None,
            };
        }
        let mode = match std::io::stderr().is_terminal() {
            true => Mode::Line,
            false => Mode::Notices,
        };
        let mut status = StatusLine::unrefreshed(ui.verbose > 0, box_started);
        let (stop, stopped) = mpsc::channel();
        if let Some(shared) = status.state.clone() {
            status.refresher = std::thread::Builder::new()
                .name("status-line".into())
                .spawn(move || refresh(&shared, stopped, mode, box_started, &ProcFs::host()))
                .ok();
            status.stop = Some(stop);
        }
        status
    }

    /// A status that tracks events but draws nothing until a refresher is attached.
    fn unrefreshed(verbose: bool, box_started: Instant) -> StatusLine {
        let state = State {
            phase: Phase::Booting,
            last_output: box_started,
            last_notice: None,
            bar: None,
            at_line_start: true,
            stdout_shares_stderr: stdout_shares_stderr(),
            tail: Vec::new(),
        };
        StatusLine {
            state: Some(Arc::new(Mutex::new(state))),
            verbose,
            stop: None,
            refresher: None,
        }
    }

    /// Takes the terminal for handling `event`: clears the line if the event prints, and
    /// moves the phase on (the greeting starts the build, the status the power-off, kiwi's
    /// bundle message the bundling).
    pub fn hold(&self, event: &AgentEvent) -> Hold<'_> {
        let Some(state) = &self.state else {
            return Hold {
                state: None,
                counts_as_output: false,
            };
        };
        let mut state = lock(state);
        match event {
            AgentEvent::Hello { .. } => state.phase = Phase::Building,
            AgentEvent::Status(_) => state.phase = Phase::PoweringOff,
            AgentEvent::Stdout(bytes) => state.saw_output(false, bytes),
            AgentEvent::Stderr(bytes) => state.saw_output(true, bytes),
            _ => {}
        }
        let prints = matches!(event, AgentEvent::Stdout(_) | AgentEvent::Stderr(_)) || self.verbose;
        if prints {
            state.clear();
        }
        Hold {
            state: Some(state),
            counts_as_output: prints,
        }
    }

    /// Takes the terminal for a message of boxbuild's own: clears the line.
    pub fn pause(&self) -> Hold<'_> {
        let state = self.state.as_ref().map(|state| {
            let mut state = lock(state);
            state.clear();
            state
        });
        Hold {
            state,
            counts_as_output: true,
        }
    }
}

impl Drop for StatusLine {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(refresher) = self.refresher.take() {
            let _ = refresher.join();
        }
        if let Some(state) = &self.state {
            lock(state).clear();
        }
    }
}

/// The refreshing thread: measures the box every second and shows the line (or a
/// notice) while the builder is silent, until `stopped` disconnects.
fn refresh(
    state: &Mutex<State>,
    stopped: mpsc::Receiver<()>,
    mode: Mode,
    box_started: Instant,
    proc: &ProcFs,
) {
    let mut previous = proc.sample(Instant::now());
    let mut window: Option<Sample> = None;
    loop {
        match stopped.recv_timeout(REFRESH) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
        let now = Instant::now();
        let sample = proc.sample(now);
        let mut state = lock(state);
        let silent = now.saturating_duration_since(state.last_output);
        let report = |activity: Option<Activity>, phase: Phase| Report {
            phase,
            elapsed: now.saturating_duration_since(box_started),
            silent,
            activity,
        };
        match mode {
            Mode::Line => {
                if silent >= SILENT_AFTER {
                    let activity = Activity::between(&previous, &sample);
                    let line = text::line(&report(activity, state.phase), false);
                    state.show(line);
                }
            }
            Mode::Notices => {
                let since = state
                    .last_notice
                    .map_or(state.last_output, |n| n.max(state.last_output));
                let begun = window.as_ref().map(Sample::at);
                if begun.is_none_or(|at| at < since) {
                    window = Some(sample.clone());
                }
                if now.saturating_duration_since(since) >= NOTICE_EVERY {
                    let activity = window.as_ref().and_then(|w| Activity::between(w, &sample));
                    let line = text::line(&report(activity, state.phase), true);
                    state.notice(&line);
                    state.last_notice = Some(now);
                }
            }
        }
        drop(state);
        previous = sample;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> State {
        State {
            phase: Phase::Building,
            last_output: Instant::now(),
            last_notice: None,
            bar: None,
            at_line_start: true,
            stdout_shares_stderr: false,
            tail: Vec::new(),
        }
    }

    #[test]
    fn kiwi_bundle_message_starts_bundling_even_when_split() {
        let mut s = state();
        s.saw_output(false, b"[ INFO    ]: 10:00:01 | Bundle build ");
        assert_eq!(s.phase, Phase::Building);
        s.saw_output(false, b"results from /var/tmp/kiwi-target\n");
        assert_eq!(s.phase, Phase::Bundling);
        let mut s = state();
        s.phase = Phase::PoweringOff;
        s.saw_output(true, b"Bundle build results from /x\n");
        assert_eq!(s.phase, Phase::PoweringOff);
    }

    #[test]
    fn line_ends_are_tracked_on_stderr_and_a_shared_stdout() {
        let mut s = state();
        s.saw_output(true, b"half a line");
        assert!(!s.at_line_start);
        s.saw_output(false, b"stdout elsewhere\n");
        assert!(!s.at_line_start);
        s.saw_output(true, b"");
        assert!(!s.at_line_start);
        s.saw_output(true, b" and the rest\n");
        assert!(s.at_line_start);
        s.stdout_shares_stderr = true;
        s.saw_output(false, b"progress 50%\r");
        assert!(!s.at_line_start);
    }

    #[test]
    fn quiet_and_console_runs_show_nothing() {
        let quiet = Ui {
            quiet: true,
            verbose: 0,
        };
        let status = StatusLine::start(quiet, false, Instant::now());
        assert!(status.state.is_none() && status.refresher.is_none());
        let hold = status.hold(&AgentEvent::Stdout(b"x\n".to_vec()));
        assert!(hold.state.is_none());
        drop(hold);
        let ui = Ui {
            quiet: false,
            verbose: 0,
        };
        let status = StatusLine::start(ui, true, Instant::now());
        assert!(status.state.is_none());
    }

    #[test]
    fn events_move_the_phase_and_only_output_ends_the_silence() {
        let started = Instant::now() - Duration::from_secs(60);
        let status = StatusLine::unrefreshed(false, started);
        let phase = |s: &StatusLine| lock(s.state.as_ref().unwrap()).phase;
        let last_output = |s: &StatusLine| lock(s.state.as_ref().unwrap()).last_output;
        assert_eq!(phase(&status), Phase::Booting);
        drop(status.hold(&AgentEvent::Hello {
            version: 2,
            agent: "a".into(),
        }));
        assert_eq!(phase(&status), Phase::Building);
        drop(status.hold(&AgentEvent::Log("mounted".into())));
        assert_eq!(last_output(&status), started);
        drop(status.hold(&AgentEvent::Stderr(b"working\n".to_vec())));
        assert!(last_output(&status) > started);
        drop(
            status.hold(&AgentEvent::Status(guest_agent::protocol::Status::Exited(
                0,
            ))),
        );
        assert_eq!(phase(&status), Phase::PoweringOff);
    }
}
