//! Child processes that are the box or serve it (QEMU, virtiofsd, podman): started in their
//! own process group (the terminal's Ctrl-C reaches boxbuild, which then stops them in
//! order), killed by the kernel if boxbuild dies, and found on PATH (`on_path`).

use crate::sys::error::{Error, Result};
use std::ffi::OsString;
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A command for `binary` whose process the kernel kills (SIGKILL) when boxbuild dies,
/// even by SIGKILL.
pub fn command(binary: &str) -> Command {
    let mut command = Command::new(binary);
    // SAFETY: prctl is async-signal-safe; it only sets a flag of the new process.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command
}

/// The set-up error for a QEMU `binary` that could not be started; `package` is the
/// Debian package to install when it is missing.
pub fn spawn_error(binary: &str, package: &str, e: &std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        Error::setup(format!(
            "{binary} not found: install QEMU (Debian/Ubuntu: apt-get install {package})"
        ))
    } else {
        Error::setup(format!("cannot start {binary}: {e}"))
    }
}

/// Starts QEMU with its stdout and stderr in `log`. With `interactive` QEMU shares
/// boxbuild's terminal and process group (`--box-debug`: the console is the user's) and
/// only its stderr goes to `log`; otherwise its stdin is closed and it gets a group of its
/// own. Errors: `log` cannot be created, or QEMU cannot be started (missing: with the
/// package to install).
pub fn spawn(
    binary: &str,
    package: &str,
    args: &[OsString],
    log: &Path,
    interactive: bool,
) -> Result<Child> {
    let log_file = File::create(log)
        .map_err(|e| Error::setup(format!("cannot create {}: {e}", log.display())))?;
    let log_err = log_file
        .try_clone()
        .map_err(|e| Error::setup(format!("{}: {e}", log.display())))?;
    let mut command = command(binary);
    command.args(args).stderr(log_err);
    if !interactive {
        command
            .stdin(Stdio::null())
            .stdout(log_file)
            .process_group(0);
    }
    command
        .spawn()
        .map_err(|e| spawn_error(binary, package, &e))
}

/// Waits up to `grace` for the process to exit on its own; its status, or None if it is
/// still running.
pub fn wait_exit(child: &mut Child, grace: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + grace;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => return None,
        }
    }
}

/// Waits up to `grace` for the process to exit on its own, then kills it.
pub fn stop(child: &mut Child, grace: Duration) {
    if wait_exit(child, grace).is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A program on PATH or in the sbin directories (not on a normal user's PATH on Debian).
pub fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}
