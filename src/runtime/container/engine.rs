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
    // The user's word first (a path or a name podman knows), then the host's facts.
    let runtime = match std::env::var("BOXBUILD_OCI_RUNTIME") {
        Ok(chosen) if !chosen.is_empty() => Some(chosen),
        _ => choose_runtime(
            super::cgroup_v2_only(),
            on_path("crun").is_some(),
            on_path("runc"),
        )?,
    };
    Ok(Engine {
        podman,
        runtime,
        // SAFETY: geteuid has no preconditions.
        rootless: unsafe { libc::geteuid() } != 0,
    })
}

/// The OCI runtime to name with `--runtime`; None: podman's own choice. crun refuses
/// every container on a host with v1 or hybrid cgroups ("cgroups in hybrid mode not
/// supported"), and a fresh `apt-get install podman` brings crun and makes it podman's
/// default; runc runs on every cgroup layout. So where the host is not cgroups v2 only
/// and runc is installed, runc is named; where crun is missing, runc too. The host's
/// configuration is never changed. Errors: no runtime at all.
pub fn choose_runtime(
    cgroup_v2_only: bool,
    crun: bool,
    runc: Option<PathBuf>,
) -> Result<Option<String>> {
    match (cgroup_v2_only, crun, runc) {
        (_, false, None) => Err(Error::setup(
            "podman has no OCI runtime here: install runc (Debian/Ubuntu: apt-get install runc)",
        )),
        (true, true, _) => Ok(None),
        (_, _, Some(runc)) => Ok(Some(runc.display().to_string())),
        // crun alone on a v1 or hybrid host: it may work (pure v1); its refusal is
        // reported with the fix (`engine_failure`).
        (false, true, None) => Ok(None),
    }
}

/// What podman's output in `log` says went wrong, as one line: its first `Error:` line,
/// with the fix where one is known. None when podman reported no error of its own.
pub fn engine_failure(log: &std::path::Path) -> Option<String> {
    let text = std::fs::read(log).ok()?;
    let text = String::from_utf8_lossy(&text);
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("Error:") || l.starts_with("Error "))?;
    let reason = line.trim_start_matches("Error:").trim();
    let fix = if reason.contains("cgroups in hybrid mode not supported")
        || (reason.contains("crun") && reason.contains("cgroup"))
    {
        "; podman's OCI runtime crun cannot run containers on this host's v1/hybrid cgroups: install runc (Debian/Ubuntu: apt-get install runc), which boxbuild then uses"
    } else if reason.contains("newuidmap") || reason.contains("subuid") || reason.contains("subgid")
    {
        "; a rootless container needs subordinate ids: install uidmap and give the user ranges in /etc/subuid and /etc/subgid"
    } else {
        ""
    };
    Some(format!("podman could not run the box: {reason}{fix}"))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runc_where_crun_cannot_run() {
        let runc = Some(PathBuf::from("/usr/sbin/runc"));
        // cgroups v2: podman's own choice.
        assert_eq!(choose_runtime(true, true, runc.clone()).unwrap(), None);
        // v1 or hybrid: runc, whatever podman would pick.
        assert_eq!(
            choose_runtime(false, true, runc.clone())
                .unwrap()
                .as_deref(),
            Some("/usr/sbin/runc")
        );
        // No crun: runc on any host.
        assert_eq!(
            choose_runtime(true, false, runc).unwrap().as_deref(),
            Some("/usr/sbin/runc")
        );
        assert_eq!(choose_runtime(false, true, None).unwrap(), None);
        let e = choose_runtime(false, false, None).unwrap_err();
        assert!(e.to_string().contains("install runc"), "{e}");
    }

    #[test]
    fn podman_errors_become_one_line_with_the_fix() {
        let tmp = tempfile::tempdir().unwrap();
        let log = tmp.path().join("log");
        std::fs::write(&log, "time=\"...\" level=warning msg=\"x\"\nError: crun: cgroups in hybrid mode not supported, drop all controllers from cgroupv2: OCI runtime error\n").unwrap();
        let line = engine_failure(&log).unwrap();
        assert!(
            line.starts_with("podman could not run the box: crun: cgroups in hybrid"),
            "{line}"
        );
        assert!(line.contains("install runc"), "{line}");
        std::fs::write(&log, "agent: hello\n").unwrap();
        assert_eq!(engine_failure(&log), None);
        std::fs::write(&log, "Error: statfs /nope: no such file or directory\n").unwrap();
        assert_eq!(
            engine_failure(&log).unwrap(),
            "podman could not run the box: statfs /nope: no such file or directory"
        );
    }
}
