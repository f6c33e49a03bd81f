//! Driving a box's agent: hand it the job once it greets, stream the builder's output
//! into the terminal and `result.log`, and turn the builder's status (or how the box
//! ended without one) into boxbuild's exit code. The same for a VM and a container.

use super::{deadline, DriveSettings, TICK};
use crate::drive::output::BuildOutput;
use crate::drive::status::StatusLine;
use crate::job::wire::{self, AgentEvent};
use crate::runtime::session::Session;
use crate::runtime::startup;
use crate::sys::error::{Error, Result};
use crate::sys::signals::SignalWatch;
use crate::sys::ui::Ui;
use guest_agent::protocol::{BootMark, Job, Status, OLDEST_PROTOCOL_VERSION, PROTOCOL_VERSION};
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// After the status arrived, how long the box may take to end by itself.
const POWEROFF_GRACE: Duration = Duration::from_secs(30);

/// Runs the build to its end and turns how it ended into an exit code.
pub fn drive(
    mut session: Session,
    settings: &DriveSettings,
    ui: Ui,
    job: &Job,
    target: &Path,
    signals: &SignalWatch,
) -> Result<u8> {
    let mut output: Option<BuildOutput> = None;
    let result = event_loop(
        &mut session,
        settings,
        ui,
        job,
        target,
        signals,
        &mut output,
    );
    if let (Err(e), Some(out)) = (&result, output.as_mut()) {
        // main reports it on the terminal; result.log gets it too.
        out.log_only(format!("boxbuild: error: {e}\n").as_bytes());
    }
    let status = result?;
    match status {
        Status::Exited(code) => Ok(code.clamp(0, 255) as u8),
        Status::Signaled(sig) => {
            ui.info(&format!(
                "the builder was killed by {}",
                crate::sys::error::signal_name(sig)
            ));
            Ok(128u8.saturating_add(sig as u8))
        }
        Status::AgentError(message) => Err(Error::BoxFailed {
            reason: message,
            details: String::new(),
        }),
    }
}

fn event_loop(
    session: &mut Session,
    settings: &DriveSettings,
    ui: Ui,
    job: &Job,
    target: &Path,
    signals: &SignalWatch,
    output: &mut Option<BuildOutput>,
) -> Result<Status> {
    // Cleared and stopped on every return, before any error is written.
    let status_line = StatusLine::start(ui, settings.console_shown, session.started);
    let deadline = deadline(session.started, settings.timeout);
    let boot_deadline = session.started + session.running.greeting_timeout();
    let mut greeted = false;
    let mut status: Option<(Status, Instant)> = None;
    let mut agent_closed = false;
    let mut qemu_exited: Option<(std::process::ExitStatus, Instant)> = None;
    let mut boot_marks: Option<(Vec<BootMark>, Instant)> = None;
    loop {
        let Some((agent_writer, events)) = session.agent.as_mut() else {
            return Err(Error::setup("the box has no agent channel"));
        };
        let received = events.recv_timeout(TICK);
        let hold = received.as_ref().ok().map(|event| status_line.hold(event));
        match received {
            Ok(AgentEvent::Hello { version, agent }) => {
                if !(OLDEST_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&version) {
                    return Err(Error::BoxFailed {
                        reason: format!(
                            "the box's agent ({agent}) speaks protocol {version}, this boxbuild speaks {OLDEST_PROTOCOL_VERSION} to {PROTOCOL_VERSION}; update the box or boxbuild"
                        ),
                        details: String::new(),
                    });
                }
                ui.detail(&format!(
                    "agent {agent} ready {:.2}s after the box started",
                    session.started.elapsed().as_secs_f64()
                ));
                greeted = true;
                *output = Some(BuildOutput::create(target)?);
                wire::send_job(agent_writer, job, version).map_err(|e| Error::BoxFailed {
                    reason: format!("cannot send the job to the agent: {e}"),
                    details: session.running.console_tail(),
                })?;
            }
            Ok(AgentEvent::Log(line)) => ui.detail(&format!("agent: {line}")),
            Ok(AgentEvent::BootMarks(marks, received)) => boot_marks = Some((marks, received)),
            Ok(AgentEvent::Started(received)) => {
                if ui.verbose > 0 {
                    // The marks come just before the start; their arrival is the
                    // builder's start as the host saw it.
                    let (marks, at) = match &boot_marks {
                        Some((marks, at)) => (marks.as_slice(), *at),
                        None => (&[][..], received),
                    };
                    let (phases, total) = session.timeline.phases(marks, at);
                    ui.detail(&startup::format(&phases, total));
                }
            }
            Ok(AgentEvent::Stdout(bytes)) => {
                if let Some(out) = output.as_mut() {
                    out.stdout(&bytes)
                }
            }
            Ok(AgentEvent::Stderr(bytes)) => {
                if let Some(out) = output.as_mut() {
                    out.stderr(&bytes)
                }
            }
            Ok(AgentEvent::Status(s)) => status = Some((s, Instant::now())),
            Ok(AgentEvent::Closed(error)) => {
                if let Some(error) = error {
                    ui.detail(&format!("agent channel: {error}"));
                }
                agent_closed = true
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => agent_closed = true,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        drop(hold);
        if agent_closed && status.is_none() && qemu_exited.is_none() {
            // The channel can only close early if QEMU is going down; give it a moment.
            std::thread::sleep(TICK);
        }
        if qemu_exited.is_none() {
            if let Some(exit) = session.running.try_wait() {
                qemu_exited = Some((exit, Instant::now()));
            }
        }
        if let Some(sig) = signals.pending() {
            return Err(Error::Interrupted(sig));
        }
        if let Some((exit, at)) = qemu_exited {
            // Frames still in flight arrive before the channel reports its end.
            if agent_closed || at.elapsed() > Duration::from_secs(2) {
                return match status {
                    Some((s, _)) => Ok(s),
                    None => Err(session.running.failure(exit)),
                };
            }
        }
        if let Some((s, at)) = &status {
            // --box-debug: the box stays up until the user leaves its shell.
            if !settings.debug_shell && at.elapsed() > POWEROFF_GRACE {
                let _pause = status_line.pause();
                ui.detail("the box did not power off after the build; stopping it");
                return Ok(s.clone());
            }
        }
        if let (Some((when, limit)), None) = (deadline, &status) {
            if Instant::now() > when {
                return Err(Error::Timeout {
                    after: humantime::format_duration(limit).to_string(),
                    details: session.running.console_tail(),
                });
            }
        }
        if !greeted && Instant::now() > boot_deadline {
            return Err(Error::BoxFailed {
                reason: format!(
                    "the agent did not answer within {}s of power-on",
                    session.running.greeting_timeout().as_secs()
                ),
                details: session.running.console_tail(),
            });
        }
    }
}
