//! QEMU's process: started in its own process group (the terminal's Ctrl-C reaches
//! boxbuild, which then stops the VM in order), and killed by the kernel if boxbuild dies.

use crate::error::{Error, Result};
use std::ffi::OsString;
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// With `interactive` QEMU shares boxbuild's terminal and process group (`--box-debug`:
/// the console is the user's); otherwise its stdin is closed and it gets a group of its own.
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
    let mut command = Command::new(binary);
    command.args(args).stderr(log_err);
    if !interactive {
        command
            .stdin(Stdio::null())
            .stdout(log_file)
            .process_group(0);
    }
    // SAFETY: prctl is async-signal-safe; it only sets a flag of the new process.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.spawn().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::setup(format!(
                "{binary} not found: install QEMU (Debian/Ubuntu: apt-get install {package})"
            ))
        } else {
            Error::setup(format!("cannot start {binary}: {e}"))
        }
    })
}

/// Waits up to `grace` for the process to exit on its own, then kills it.
pub fn stop(child: &mut Child, grace: Duration) {
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}
