//! How the box runs, as the build's driver sees it: the process that is the box, a QEMU VM
//! (`vm::guest`) or a container (`container`). The driver (the agent's frames or the
//! plugin's `result.code`) only asks it whether the box has ended, why, and to stop.

use crate::error::Error;
use std::process::ExitStatus;
use std::time::Duration;

pub trait Guest {
    /// The box's process has ended, with its status; None while it runs.
    fn try_wait(&mut self) -> Option<ExitStatus>;
    /// Stops the box if it still runs: politely, then by force. Idempotent.
    fn stop(&mut self);
    /// Why the box ended without a status from the builder, as precisely as its logs tell.
    fn failure(&self, exit: ExitStatus) -> Error;
    /// The box's last console lines, for error details.
    fn console_tail(&self) -> String;
    /// How long the box may take from its start to the agent's greeting.
    fn greeting_timeout(&self) -> Duration;
}
