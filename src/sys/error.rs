//! boxbuild's own failures and the exit codes they map to (documented in the README).
//! A builder's exit code (0..=255) passes through unchanged; these are used only when the
//! builder's own status is not what ends the run.

use std::fmt;

pub mod exit_code {
    /// The box reported no status: it crashed, panicked, or the agent failed.
    pub const BOX_FAILED: u8 = 123;
    /// The run took longer than --timeout.
    pub const TIMEOUT: u8 = 124;
    /// boxbuild could not set the build up (config, box, QEMU, arguments).
    pub const SETUP: u8 = 125;
    /// Interrupted by a signal: 128 + its number, as shells do.
    pub const SIGNAL_BASE: u8 = 128;
}

#[derive(Debug)]
pub enum Error {
    /// Could not set up the build; nothing ran.
    Setup(String),
    /// The box died or never reported a status; `details` holds the console tail.
    BoxFailed {
        reason: String,
        details: String,
    },
    Timeout {
        after: String,
        details: String,
    },
    Interrupted(i32),
}

impl Error {
    pub fn setup(message: impl Into<String>) -> Self {
        Error::Setup(message.into())
    }

    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Setup(_) => exit_code::SETUP,
            Error::BoxFailed { .. } => exit_code::BOX_FAILED,
            Error::Timeout { .. } => exit_code::TIMEOUT,
            Error::Interrupted(sig) => exit_code::SIGNAL_BASE.saturating_add(*sig as u8),
        }
    }

    /// Extra lines shown under the one-line message (console tail), if any.
    pub fn details(&self) -> &str {
        match self {
            Error::BoxFailed { details, .. } | Error::Timeout { details, .. } => details,
            _ => "",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Setup(m) => write!(f, "{m}"),
            Error::BoxFailed { reason, .. } => write!(f, "the box failed: {reason}"),
            Error::Timeout { after, .. } => {
                write!(
                    f,
                    "the build did not finish within --timeout {after}; the box was stopped"
                )
            }
            Error::Interrupted(sig) => write!(f, "interrupted by {}", signal_name(*sig)),
        }
    }
}

impl std::error::Error for Error {}

pub fn signal_name(sig: i32) -> String {
    match sig {
        libc::SIGINT => "SIGINT".into(),
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGHUP => "SIGHUP".into(),
        libc::SIGKILL => "SIGKILL".into(),
        libc::SIGSEGV => "SIGSEGV".into(),
        libc::SIGABRT => "SIGABRT".into(),
        n => format!("signal {n}"),
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// Turns any error into a setup error that says what was being done.
pub trait Context<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: fmt::Display> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::Setup(format!("{}: {e}", what())))
    }
}
