//! Threads started by name, with a set-up error instead of a panic when the system
//! refuses one (its thread or memory limits).

use crate::sys::error::{Error, Result};
use std::thread::JoinHandle;

/// Starts `f` on a thread called `name`. Errors: the system cannot start a thread.
pub fn spawn<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<JoinHandle<T>> {
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(f)
        .map_err(|e| Error::setup(format!("cannot start a thread ({name}): {e}")))
}
