//! The ground floor: what every floor uses and that knows nothing of boxes. Errors and
//! their exit codes, boxbuild's own messages, signals, threads, child processes, sizes,
//! atomic files, files of a kind checked before reading, digests and tar archives.

pub mod archive;
pub mod atomic;
pub mod digest;
pub mod error;
pub mod files;
pub mod process;
pub mod signals;
pub mod size;
pub mod threads;
pub mod ui;
