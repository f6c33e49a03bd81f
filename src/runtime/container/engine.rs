//! The container engine: podman, found on PATH, with an OCI runtime it can use. Debian 12's
//! podman names crun, which it does not install; on such hosts runc is passed explicitly.
//! Resource limits are passed explicitly too: runc there fails to apply the inherited
//! defaults ("error setting rlimit type 6").

use crate::sys::error::{Error, Result};
use crate::sys::process::on_path;
use std::ffi::OsString;
use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct Engine {
    pub podman: PathBuf,
    /// `--runtime` to pass, when podman's default one is missing.
    pub runtime: Option<String>,
    /// Whether the container runs in a user namespace (boxbuild is not root).
    pub rootless: bool,
}

/// The engine, or one line saying what to install.
pub fn find() -> Result<Engine> {
    let podman = on_path("podman").ok_or_else(|| {
        Error::setup(
            "--container needs podman, which is not installed (Debian/Ubuntu: apt-get install podman runc uidmap slirp4netns); or drop --container to build in a VM",
        )
    })?;
    let runtime = match (on_path("crun"), on_path("runc")) {
        (Some(_), _) => None,
        (None, Some(runc)) => Some(runc.display().to_string()),
        (None, None) => {
            return Err(Error::setup(
                "podman has no OCI runtime here: install crun or runc (apt-get install runc)",
            ))
        }
    };
    Ok(Engine {
        podman,
        runtime,
        // SAFETY: geteuid has no preconditions.
        rootless: unsafe { libc::geteuid() } != 0,
    })
}

/// `--ulimit` options for the limits boxbuild itself has (soft:hard), capped where podman
/// caps its own: podman lowers its process limit to 32768 before it starts the runtime
/// (seen with Debian 12's podman 4.3), and runc cannot then set a higher one.
pub fn ulimit_args() -> Vec<OsString> {
    let mut args = Vec::new();
    for (name, resource, cap) in [
        ("nofile", libc::RLIMIT_NOFILE, 1_048_576),
        ("nproc", libc::RLIMIT_NPROC, 32_768),
    ] {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct it is given.
        if unsafe { libc::getrlimit(resource, &mut limit) } != 0 {
            continue;
        }
        let show = |v: libc::rlim_t| v.min(cap).to_string();
        args.push("--ulimit".into());
        args.push(format!("{name}={}:{}", show(limit.rlim_cur), show(limit.rlim_max)).into());
    }
    args
}
