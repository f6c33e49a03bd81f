//! A started box as the drivers see it: the box itself (`RunningBox`), the agent's channel if
//! the box has an agent, and the follower that copies its console to the terminal.
//! Dropping a session stops the box, so every early return cleans up.

use crate::job::wire::{self, AgentEvent};
use crate::runtime::rundir::RunDir;
use crate::runtime::startup::Timeline;
use crate::sys::error::{Error, Result};
use crate::sys::signals::SignalWatch;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a box's process may take to connect a socket after it started.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// The agent's channel: the writer for jobs, and the decoded frames as they arrive.
pub type AgentChannel = (UnixStream, mpsc::Receiver<AgentEvent>);

/// The box's process as the drivers see it, whichever runtime runs it.
pub trait RunningBox {
    /// The box's process has ended, with its status; None while it runs.
    fn try_wait(&mut self) -> Option<std::process::ExitStatus>;
    /// Stops the box if it still runs: politely, then by force. Idempotent.
    fn stop(&mut self);
    /// Why the box ended without a status from the builder, as precisely as its logs tell.
    fn failure(&self, exit: std::process::ExitStatus) -> crate::sys::error::Error;
    /// The box's last console lines, for error details.
    fn console_tail(&self) -> String;
    /// How long the box may take from its start to the agent's greeting.
    fn greeting_timeout(&self) -> std::time::Duration;
}

pub struct Session {
    /// The box itself: QEMU or a container.
    pub running: Box<dyn RunningBox>,
    /// None for boxes without an agent (the Python plugin's).
    pub agent: Option<AgentChannel>,
    /// The host's start-up so far (the box's start included), for `-v`.
    pub timeline: Timeline,
    /// When the box was started.
    pub started: Instant,
    console: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
}

impl Session {
    pub fn new(
        running: Box<dyn RunningBox>,
        agent: Option<AgentChannel>,
        timeline: Timeline,
        started: Instant,
    ) -> Session {
        Session {
            running,
            agent,
            timeline,
            started,
            console: None,
        }
    }

    /// Hands over a console follower (`output::follow_console`), stopped with the session.
    pub fn with_console(mut self, follower: Option<(Arc<AtomicBool>, JoinHandle<()>)>) -> Self {
        self.console = follower;
        self
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.running.stop();
        if let Some((stop, follower)) = self.console.take() {
            stop.store(true, Ordering::SeqCst);
            let _ = follower.join();
        }
    }
}

/// A listening unix socket named `name` in the run dir, and its path.
pub fn bind(run_dir: &RunDir, name: &str) -> Result<(UnixListener, PathBuf)> {
    let path = run_dir.path(name);
    let listener = UnixListener::bind(&path)
        .map_err(|e| Error::setup(format!("cannot listen on {}: {e}", path.display())))?;
    Ok((listener, path))
}

/// Waits for the agent to connect on `listener` while `child` (QEMU or the engine) runs,
/// and starts reading its frames. Errors: the child ended, the timeout passed, a signal.
pub fn connect_agent(
    listener: &UnixListener,
    child: &mut Child,
    signals: &SignalWatch,
) -> Result<AgentChannel> {
    let pending = || signals.pending();
    let stream = wire::accept(listener, "agent", child, CONNECT_TIMEOUT, &pending)?;
    let writer = stream
        .try_clone()
        .map_err(|e| Error::setup(format!("agent socket: {e}")))?;
    let (tx, events) = mpsc::channel();
    wire::spawn_reader(stream, tx, |e| e)?;
    Ok((writer, events))
}
