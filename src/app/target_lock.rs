//! A target dir belongs to one build at a time. A build holds an exclusive `flock(2)` on
//! `TARGET/.boxbuild.lock` from before its box is fetched until everything that writes
//! into the target (QEMU, share helpers) has stopped; a second build into the same dir is
//! refused at once. The kernel drops the lock when its holder dies, even by SIGKILL, so a
//! killed build never leaves the dir locked; the file itself, which only says which build
//! holds it (pid and start time), is removed at the end of the build, or reused by the
//! next one when its holder was killed.
//!
//! Removing a lock file races with a build that opened it just before: that build may
//! then lock a file no longer in the dir. So a build that got the lock checks that the
//! path still names the file it locked, and starts over if not.

use crate::sys::error::{Error, Result};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The lock file's name inside the target dir.
pub const LOCK_FILE: &str = ".boxbuild.lock";

/// How often taking the lock starts over when the file was replaced meanwhile.
const ATTEMPTS: usize = 10;

/// The target dir held by this build; dropping it removes the lock file and releases it.
#[derive(Debug)]
pub struct TargetLock {
    file: File,
    path: PathBuf,
}

/// Which build holds a target dir, as its lock file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: Option<u32>,
    /// RFC 3339, UTC, seconds.
    pub started: Option<String>,
}

/// What taking a target dir came to.
#[derive(Debug)]
pub enum Taken {
    Locked(TargetLock),
    /// The file system of the target does not lock files (the reason); the build runs
    /// unprotected.
    Unsupported(String),
}

/// Takes `dir` (an existing directory) for this build. Errors (set-up): another build
/// holds it (the message names its pid and start time), or the lock file cannot be
/// opened (the dir is not writable, or `.boxbuild.lock` is not a regular file).
pub fn take(dir: &Path) -> Result<Taken> {
    let path = dir.join(LOCK_FILE);
    for _ in 0..ATTEMPTS {
        let file = open(&path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(in_use(dir, &holder(&path))),
            Err(TryLockError::Error(e)) if unsupported(&e) => {
                return Ok(Taken::Unsupported(format!(
                    "cannot lock {}: {e}; another build into the same --target-dir would not be noticed",
                    path.display()
                )))
            }
            Err(TryLockError::Error(e)) => {
                return Err(Error::setup(format!(
                    "cannot lock {}: {e}",
                    path.display()
                )))
            }
        }
        if !still_there(&file, &path) {
            continue;
        }
        let mut lock = TargetLock { file, path };
        lock.write_holder()
            .map_err(|e| Error::setup(format!("cannot write {}: {e}", lock.path.display())))?;
        return Ok(Taken::Locked(lock));
    }
    Err(Error::setup(format!(
        "{} keeps being replaced while boxbuild locks it; is something deleting it in a loop?",
        path.display()
    )))
}

fn open(path: &Path) -> Result<File> {
    // O_NOFOLLOW: a symlink planted under this name must not make boxbuild truncate the
    // file it points to. O_NONBLOCK: a FIFO must not hang the open.
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| {
            let what = if e.raw_os_error() == Some(libc::ELOOP) {
                "it is a symlink; remove it".to_string()
            } else {
                e.to_string()
            };
            Error::setup(format!(
                "--target-dir: cannot open its lock file {}: {what}",
                path.display()
            ))
        })?;
    let regular = file.metadata().map(|m| m.is_file()).unwrap_or(false);
    if !regular {
        return Err(Error::setup(format!(
            "--target-dir: {} is not a regular file; remove it",
            path.display()
        )));
    }
    Ok(file)
}

fn unsupported(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOLCK) | Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS)
    )
}

/// Whether `path` still names the file `file` has open.
fn still_there(file: &File, path: &Path) -> bool {
    match (file.metadata(), std::fs::symlink_metadata(path)) {
        (Ok(open), Ok(named)) => open.dev() == named.dev() && open.ino() == named.ino(),
        _ => false,
    }
}

fn in_use(dir: &Path, holder: &Holder) -> Error {
    let who = match (&holder.pid, &holder.started) {
        (Some(pid), Some(started)) => format!("boxbuild pid {pid}, started {started}"),
        (Some(pid), None) => format!("boxbuild pid {pid}"),
        _ => "a boxbuild that has not said which yet".to_string(),
    };
    Error::setup(format!(
        "--target-dir {} is in use by another build ({who}); wait for it to end or build into another directory",
        dir.display()
    ))
}

/// What the lock file at `path` says about its holder. A holder writes it just after
/// taking the lock, so an empty file is read again a few times.
fn holder(path: &Path) -> Holder {
    let mut text = String::new();
    for _ in 0..10 {
        text.clear();
        if let Ok(mut file) = File::open(path) {
            let _ = file.read_to_string(&mut text);
        }
        if !text.trim().is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    parse_holder(&text)
}

/// Parses `pid=N` and `started=TIME` lines; unknown lines are skipped.
pub fn parse_holder(text: &str) -> Holder {
    let mut holder = Holder {
        pid: None,
        started: None,
    };
    for line in text.lines() {
        match line.split_once('=') {
            Some(("pid", pid)) => holder.pid = pid.trim().parse().ok(),
            Some(("started", at)) if !at.trim().is_empty() => {
                holder.started = Some(at.trim().to_string())
            }
            _ => {}
        }
    }
    holder
}

impl TargetLock {
    fn write_holder(&mut self) -> std::io::Result<()> {
        let text = format!(
            "pid={}\nstarted={}\n",
            std::process::id(),
            humantime::format_rfc3339_seconds(SystemTime::now())
        );
        self.file.set_len(0)?;
        self.file.seek(SeekFrom::Start(0))?;
        self.file.write_all(text.as_bytes())
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TargetLock {
    fn drop(&mut self) {
        // Removed while still locked; a build waiting on this file sees it gone and starts
        // over. Closing the file then releases the lock.
        if still_there(&self.file, &self.path) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn locked(dir: &Path) -> TargetLock {
        match take(dir).unwrap() {
            Taken::Locked(lock) => lock,
            Taken::Unsupported(why) => panic!("{why}"),
        }
    }

    #[test]
    fn a_second_build_is_refused_with_the_holders_pid() {
        let tmp = tempfile::tempdir().unwrap();
        let first = locked(tmp.path());
        let text = std::fs::read_to_string(first.path()).unwrap();
        let holder = parse_holder(&text);
        assert_eq!(holder.pid, Some(std::process::id()));
        assert!(holder.started.unwrap().ends_with('Z'));
        let err = take(tmp.path()).unwrap_err();
        assert_eq!(err.exit_code(), 125);
        let message = err.to_string();
        assert!(
            message.contains(&format!(
                "in use by another build (boxbuild pid {}, started ",
                std::process::id()
            )),
            "{message}"
        );
        drop(first);
        assert!(!tmp.path().join(LOCK_FILE).exists(), "removed at the end");
        drop(locked(tmp.path()));
    }

    #[test]
    fn a_file_left_by_a_killed_build_is_taken_over() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(
            tmp.path().join(LOCK_FILE),
            "pid=99999999\nstarted=long ago\n",
        )
        .unwrap();
        let lock = locked(tmp.path());
        let text = std::fs::read_to_string(lock.path()).unwrap();
        assert_eq!(parse_holder(&text).pid, Some(std::process::id()));
    }

    #[test]
    fn a_lock_file_replaced_meanwhile_is_not_trusted() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(LOCK_FILE);
        let old = open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(!still_there(&old, &path));
        std::fs::write(&path, "").unwrap();
        assert!(!still_there(&old, &path));
        assert!(still_there(&open(&path).unwrap(), &path));
    }

    #[test]
    fn a_symlink_or_directory_in_its_place_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, "keep me").unwrap();
        let target = tmp.path().join("out");
        std::fs::create_dir(&target).unwrap();
        std::os::unix::fs::symlink(&victim, target.join(LOCK_FILE)).unwrap();
        let err = take(&target).unwrap_err().to_string();
        assert!(err.contains("symlink"), "{err}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
        std::fs::remove_file(target.join(LOCK_FILE)).unwrap();
        std::fs::create_dir(target.join(LOCK_FILE)).unwrap();
        assert!(take(&target).is_err());
    }

    #[test]
    fn holder_lines_are_read_leniently() {
        assert_eq!(
            parse_holder("pid=12\nstarted=2025-01-01T00:00:00Z\nother=x\n"),
            Holder {
                pid: Some(12),
                started: Some("2025-01-01T00:00:00Z".into())
            }
        );
        assert_eq!(
            parse_holder("garbage\npid=x"),
            Holder {
                pid: None,
                started: None
            }
        );
    }
}
