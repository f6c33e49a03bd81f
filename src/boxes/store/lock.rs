//! Per-entry locks (flock on a file under `locks/`): a build holds its box version
//! shared for as long as it runs, a fetch holds it exclusive while it downloads, and
//! prune/remove take it exclusive without waiting, so they never pull a box from under a
//! running build. Waiting polls, so Ctrl-C still works while another process fetches.

use crate::sys::error::{Error, Result};
use crate::sys::signals::SignalWatch;
use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Shared,
    Exclusive,
}

/// Held until dropped (closing the file releases the lock).
#[derive(Debug)]
pub struct EntryLock {
    _file: File,
}

fn open(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| Error::setup(format!("cannot open lock {}: {e}", path.display())))
}

fn try_on(file: &File, mode: Mode) -> std::io::Result<bool> {
    let attempt = match mode {
        Mode::Shared => file.try_lock_shared(),
        Mode::Exclusive => file.try_lock(),
    };
    match attempt {
        Ok(()) => Ok(true),
        Err(TryLockError::WouldBlock) => Ok(false),
        Err(TryLockError::Error(e)) => Err(e),
    }
}

/// The lock if it is free now, else None.
pub fn try_acquire(path: &Path, mode: Mode) -> Result<Option<EntryLock>> {
    let file = open(path)?;
    match try_on(&file, mode) {
        Ok(true) => Ok(Some(EntryLock { _file: file })),
        Ok(false) => Ok(None),
        Err(e) => Err(Error::setup(format!("cannot lock {}: {e}", path.display()))),
    }
}

/// Waits for the lock; `waiting` is called once if it is not free at once.
pub fn acquire(
    path: &Path,
    mode: Mode,
    signals: &SignalWatch,
    waiting: impl FnOnce(),
) -> Result<EntryLock> {
    let file = open(path)?;
    let mut waiting = Some(waiting);
    loop {
        match try_on(&file, mode) {
            Ok(true) => return Ok(EntryLock { _file: file }),
            Ok(false) => {}
            Err(e) => return Err(Error::setup(format!("cannot lock {}: {e}", path.display()))),
        }
        if let Some(tell) = waiting.take() {
            tell();
        }
        if let Some(sig) = signals.pending() {
            return Err(Error::Interrupted(sig));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
