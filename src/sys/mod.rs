//! The ground floor: what every floor uses and that knows nothing of boxes. Errors and
//! their exit codes, boxbuild's own messages, signals, threads, child processes, sizes,
//! atomic files and digests.

pub mod atomic;
pub mod digest;
pub mod error;
pub mod process;
pub mod signals;
pub mod size;
pub mod threads;
pub mod ui;
