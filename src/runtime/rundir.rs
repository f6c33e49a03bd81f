//! The run dir: a fresh private directory per run holding everything the run creates
//! (overlay, sockets, logs). Removed when the run ends, whichever way; dirs left by a
//! boxbuild that was killed outright are swept by the next run.

use crate::sys::error::{Error, Result};
use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// sun_path holds 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

pub struct RunDir {
    dir: tempfile::TempDir,
}

/// `$TMPDIR/boxbuild-<uid>`: private to the user, shared by that user's runs.
pub fn base_dir() -> Result<PathBuf> {
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    let base = std::env::temp_dir().join(format!("boxbuild-{uid}"));
    ensure_private_dir(&base)?;
    Ok(base)
}

fn ensure_private_dir(dir: &Path) -> Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.mode(0o700);
    match builder.create(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(Error::setup(format!(
                "cannot create {}: {e}",
                dir.display()
            )))
        }
    }
    let meta =
        fs::symlink_metadata(dir).map_err(|e| Error::setup(format!("{}: {e}", dir.display())))?;
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    if !meta.is_dir() || meta.uid() != uid {
        return Err(Error::setup(format!(
            "{} exists but is not a directory owned by you; remove it or set TMPDIR elsewhere",
            dir.display()
        )));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::setup(format!("{}: {e}", dir.display())))?;
    }
    Ok(())
}

fn process_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    unsafe { libc::kill(pid, 0) == 0 || *libc::__errno_location() == libc::EPERM }
}

/// Removes run dirs whose boxbuild process is gone.
fn sweep_stale(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let is_run = entry.file_name().to_string_lossy().starts_with("run-");
        let pid = fs::read_to_string(path.join("pid"))
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok());
        if let (true, Some(pid)) = (is_run, pid) {
            if !process_alive(pid) {
                let _ = fs::remove_dir_all(&path);
            }
        }
    }
}

impl RunDir {
    pub fn create() -> Result<RunDir> {
        let base = base_dir()?;
        sweep_stale(&base);
        let dir = tempfile::Builder::new()
            .prefix("run-")
            .tempdir_in(&base)
            .map_err(|e| {
                Error::setup(format!(
                    "cannot create a run dir in {}: {e}",
                    base.display()
                ))
            })?;
        fs::write(dir.path().join("pid"), std::process::id().to_string())
            .map_err(|e| Error::setup(format!("{}: {e}", dir.path().display())))?;
        let run = RunDir { dir };
        let longest = run.path("agent.sock");
        if longest.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(Error::setup(format!(
                "the run dir {} is too deep for unix sockets; set TMPDIR to a shorter path such as /tmp",
                run.dir.path().display()
            )));
        }
        Ok(run)
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweeps_only_dead_runs() {
        let tmp = tempfile::tempdir().unwrap();
        let dead = tmp.path().join("run-dead");
        let alive = tmp.path().join("run-alive");
        let other = tmp.path().join("kvm-probe");
        for d in [&dead, &alive] {
            fs::create_dir(d).unwrap();
        }
        fs::write(&other, "x").unwrap();
        // pid_max is at most 2^22, so this pid cannot exist.
        fs::write(dead.join("pid"), "99999999").unwrap();
        fs::write(alive.join("pid"), std::process::id().to_string()).unwrap();
        sweep_stale(tmp.path());
        assert!(!dead.exists());
        assert!(alive.exists());
        assert!(other.exists());
    }

    #[test]
    fn private_dir_is_made_private() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("b");
        fs::create_dir(&d).unwrap();
        fs::set_permissions(&d, fs::Permissions::from_mode(0o777)).unwrap();
        ensure_private_dir(&d).unwrap();
        assert_eq!(
            fs::metadata(&d).unwrap().permissions().mode() & 0o777,
            0o700
        );
    }
}
