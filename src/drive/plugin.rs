//! Driving a box of KIWI's Python plugin: the box runs kiwi by itself and ends; the exit
//! code is the `result.code` it wrote into the target dir during this run
//! (`plugin_box`). The same for its VM and its container image.

use super::{deadline, DriveSettings, TICK};
use crate::job::plugin;
use crate::runtime::session::Session;
use crate::sys::error::{Error, Result};
use crate::sys::signals::SignalWatch;
use std::path::Path;
use std::time::Instant;

/// A box of KIWI's Python plugin: it runs kiwi by itself and powers off; the exit code
/// is the `result.code` it wrote into the target dir during this run.
pub fn drive(
    mut session: Session,
    settings: &DriveSettings,
    target: &Path,
    started_at: std::time::SystemTime,
    signals: &SignalWatch,
) -> Result<u8> {
    let deadline = deadline(session.started, settings.timeout);
    let exit = loop {
        if let Some(sig) = signals.pending() {
            return Err(Error::Interrupted(sig));
        }
        if let Some(exit) = session.running.try_wait() {
            break exit;
        }
        if let Some((when, limit)) = deadline {
            if Instant::now() > when {
                return Err(Error::Timeout {
                    after: humantime::format_duration(limit).to_string(),
                    details: session.running.console_tail(),
                });
            }
        }
        std::thread::sleep(TICK);
    };
    match plugin::read_result(target, started_at) {
        Ok(code) => Ok(code),
        Err(reason) => {
            let mut failure = session.running.failure(exit);
            if let Error::BoxFailed { reason: r, .. } = &mut failure {
                *r = format!("{reason} ({r})");
            }
            Err(failure)
        }
    }
}
