//! The box as a container (`--container`): the box's root file system, unpacked from its
//! disk once (`rootfs`), runs under podman (`engine`) with the box's own agent as its
//! entrypoint, talking the same frames as in a VM over a unix socket bind-mounted in. The
//! shares are bind mounts at the same guest paths; writes to the root go to a throw-away
//! overlay. Rootless for a normal user; privileged for root, as KIWI's plugin runs it.

pub mod engine;
pub mod image;
pub mod kernel;
pub mod kiwi_type;
mod launch;
pub mod rootfs;

pub use launch::launch;

use crate::runtime::console;
use crate::runtime::session::RunningBox;
use crate::sys::error::Error;
use engine::Engine;
use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

/// The label naming the boxbuild process a container belongs to (for the sweep).
const PID_LABEL: &str = "org.boxbuild.pid";
/// Where the agent's socket appears in the container.
pub const AGENT_SOCKET: &str = "/run/boxbuild-agent.sock";
/// How long the agent may take to connect after the engine started.
const GREETING_TIMEOUT: Duration = Duration::from_secs(60);
const CONSOLE_TAIL_LINES: usize = 15;

/// What the container runs: the box's unpacked root with a command, or an image with its
/// own entrypoint.
pub enum Root<'a> {
    /// A root file system directory (`--rootfs DIR:O`: writes go to a throw-away overlay).
    Dir(&'a Path),
    /// An image in the engine's storage.
    Image(&'a str),
}

/// A host path bind-mounted into the container.
pub struct Volume {
    pub host: PathBuf,
    pub guest: PathBuf,
    pub readonly: bool,
}

impl Volume {
    pub fn new(host: impl Into<PathBuf>, guest: impl Into<PathBuf>, readonly: bool) -> Volume {
        Volume {
            host: host.into(),
            guest: guest.into(),
            readonly,
        }
    }
}

impl Volume {
    /// podman's `--mount` value: comma-separated `key=value` fields read as one CSV record,
    /// so each path field is quoted (a `"` doubled) and may hold commas, colons, spaces and
    /// quotes. Paths podman cannot pass on at all (see `mountable`) are aliased first.
    fn mount_option(&self) -> OsString {
        let mut text = OsString::from("type=bind,");
        text.push(csv_field("src=", &self.host));
        text.push(",");
        text.push(csv_field("dst=", &self.guest));
        if self.readonly {
            text.push(",ro");
        }
        text
    }
}

/// `"KEY=PATH"` quoted for CSV: the quotes around the whole field, a `"` in it doubled.
fn csv_field(key: &str, path: &Path) -> OsString {
    let mut bytes = vec![b'"'];
    bytes.extend_from_slice(key.as_bytes());
    for &b in path.as_os_str().as_bytes() {
        if b == b'"' {
            bytes.push(b'"');
        }
        bytes.push(b);
    }
    bytes.push(b'"');
    OsString::from_vec(bytes)
}

/// Whether podman can mount `path` as it is: it hands paths to the OCI runtime in JSON,
/// whose strings are UTF-8 (other bytes arrive as U+FFFD), and CSV reading turns a `\r\n`
/// into `\n`.
pub fn mountable(path: &Path) -> bool {
    path.to_str().is_some_and(|s| !s.contains('\r'))
}

/// Whether `path` can be the lower dir of podman's overlay (`--rootfs DIR:O`): it goes
/// into the overlay's mount options unquoted, where a comma ends it.
pub fn overlayable(path: &Path) -> bool {
    path.as_os_str()
        .as_bytes()
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-+@~".contains(b))
}

/// What the container is made of.
pub struct Spec<'a> {
    pub engine: &'a Engine,
    pub name: String,
    pub root: Root<'a>,
    /// The command; empty for an image's own entrypoint.
    pub command: Vec<OsString>,
    pub volumes: Vec<Volume>,
    pub network: Network,
    /// `NAME=value` pairs for the container's environment.
    pub env: Vec<String>,
    /// The engine's memory limit in MiB and CPU limit; None: none.
    pub memory_mib: Option<u64>,
    pub cpus: Option<u32>,
}

impl Spec<'_> {
    /// podman's arguments, `run` onwards.
    pub fn args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            "run".into(),
            "--rm".into(),
            "--name".into(),
            self.name.clone().into(),
            "--label".into(),
            format!("{PID_LABEL}={}", std::process::id()).into(),
            "--hostname".into(),
            "box".into(),
        ];
        if let Some(runtime) = &self.engine.runtime {
            args.extend(["--runtime".into(), runtime.into()]);
        }
        args.extend(engine::ulimit_args());
        if let Some(mib) = self.memory_mib {
            // The swap limit equal to the memory limit: no swap beyond it, as in a VM.
            args.extend(
                [format!("--memory={mib}m"), format!("--memory-swap={mib}m")].map(OsString::from),
            );
        }
        if let Some(cpus) = self.cpus {
            args.push(format!("--cpus={cpus}").into());
        }
        // As KIWI's plugin runs it: as root, loop devices and device-mapper for disk
        // images; rootless, all capabilities within the user's own namespace only, which
        // kiwi needs to mount /proc and bind mounts in the image root.
        args.push("--privileged".into());
        if !self.engine.rootless {
            // The host's /dev, so that partition nodes of loop devices made during the
            // build (/dev/loop0p1) appear: a container's own /dev is filled once, at start.
            args.extend(["--volume".into(), "/dev:/dev".into()]);
        }
        args.push("--network".into());
        args.push(
            match self.network {
                // 10.0.2.2 is the host's loopback, as in a VM with QEMU's user network.
                Network::Slirp => "slirp4netns:allow_host_loopback=true",
                Network::Host => "host",
                Network::None => "none",
            }
            .into(),
        );
        // The environment is exactly what boxbuild passes, not podman's copy of the
        // host's proxy variables.
        args.push("--http-proxy=false".into());
        for pair in &self.env {
            args.extend(["--env".into(), pair.into()]);
        }
        for volume in &self.volumes {
            args.extend(["--mount".into(), volume.mount_option()]);
        }
        match self.root {
            Root::Dir(dir) => {
                // `--rootfs` is a flag: the image position then holds the directory.
                let mut root = OsString::from(dir);
                root.push(":O");
                args.extend(["--rootfs".into(), root]);
            }
            Root::Image(image) => args.push(image.into()),
        }
        args.extend(self.command.iter().cloned());
        args
    }
}

/// The container's network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    /// A user-mode network of its own (slirp4netns), addressed as QEMU's user network.
    Slirp,
    /// The host's network namespace: where a normal user cannot open /dev/net/tun.
    Host,
    None,
}

/// The network a container gets: its own user-mode network where it can have one.
/// The limits for the start line: "memory limit 4096 MiB, 2 CPUs" or "no memory or CPU
/// limit".
pub fn limits_text(memory_mib: Option<u64>, cpus: Option<u32>) -> String {
    match (memory_mib, cpus) {
        (None, None) => "no memory or CPU limit".into(),
        (Some(m), None) => format!("memory limit {m} MiB"),
        (None, Some(c)) => format!("limit {c} CPU(s)"),
        (Some(m), Some(c)) => format!("memory limit {m} MiB, {c} CPU(s)"),
    }
}

/// Whether the host's cgroup hierarchy is v2 only (`/sys/fs/cgroup` is cgroup2fs). A
/// rootless container gets resource limits only there: on v1 and hybrid hosts podman
/// ignores them (containers.conf(5), "cgroups").
pub fn cgroup_v2_only() -> bool {
    const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: the path is a valid C string and `st` a valid out-pointer.
    let rc = unsafe { libc::statfs(c"/sys/fs/cgroup".as_ptr(), &mut st) };
    rc == 0 && st.f_type as i64 == CGROUP2_SUPER_MAGIC
}

pub fn network(engine: &Engine, wanted: bool) -> Network {
    let tun = || {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")
            .is_ok()
    };
    match (wanted, engine.rootless) {
        (false, _) => Network::None,
        (true, false) => Network::Slirp,
        (true, true) if tun() => Network::Slirp,
        (true, true) => Network::Host,
    }
}

/// A running container as the box.
pub struct ContainerBox {
    pub child: Child,
    pub engine: Engine,
    pub name: String,
    /// The engine's own output (and the agent's before it connected).
    pub log: PathBuf,
}

impl ContainerBox {
    /// Starts `spec`; the engine's output goes to `log`.
    pub fn start(spec: &Spec, log: &Path) -> crate::sys::error::Result<ContainerBox> {
        let file = std::fs::File::create(log)
            .map_err(|e| Error::setup(format!("cannot create {}: {e}", log.display())))?;
        let err = file
            .try_clone()
            .map_err(|e| Error::setup(format!("{}: {e}", log.display())))?;
        let child = crate::sys::process::command(&spec.engine.podman.display().to_string())
            .args(spec.args())
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .spawn()
            .map_err(|e| Error::setup(format!("cannot start podman: {e}")))?;
        Ok(ContainerBox {
            child,
            engine: spec.engine.clone(),
            name: spec.name.clone(),
            log: log.to_path_buf(),
        })
    }

    fn podman(&self, args: &[&str]) {
        let _ = Command::new(&self.engine.podman)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl RunningBox for ContainerBox {
    fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    fn stop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.podman(&["kill", "--signal", "KILL", &self.name]);
            crate::sys::process::stop(&mut self.child, Duration::from_secs(10));
        }
        // --rm removes it on a normal exit; after a kill it may still be there.
        self.podman(&["rm", "--force", "--ignore", &self.name]);
    }

    fn failure(&self, exit: ExitStatus) -> Error {
        // podman's own failures (podman-run(1), "Exit Status": 125 to 127) are set-up
        // errors, told by the engine's error line in the log.
        if matches!(exit.code(), Some(125..=127)) {
            if let Some(line) = engine::engine_failure(&self.log) {
                return Error::setup(line);
            }
        }
        Error::BoxFailed {
            reason: format!("the container ended ({exit}) without reporting the builder's status"),
            details: self.console_tail(),
        }
    }

    fn console_tail(&self) -> String {
        console::tail(&self.log, CONSOLE_TAIL_LINES)
    }

    fn greeting_timeout(&self) -> Duration {
        GREETING_TIMEOUT
    }
}

/// Removes the containers of boxbuild processes that are gone (killed before they could
/// clean up). Best effort: an engine that cannot list is left alone.
pub fn sweep(engine: &Engine) {
    let Ok(out) = Command::new(&engine.podman)
        .args(["ps", "--all", "--filter"])
        .arg(format!("label={PID_LABEL}"))
        .args([
            "--format",
            &format!("{{{{.Names}}}} {{{{index .Labels \"{PID_LABEL}\"}}}}"),
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
    else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut words = line.split_whitespace();
        let (Some(name), Some(pid)) = (words.next(), words.next()) else {
            continue;
        };
        let Ok(pid) = pid.parse::<i32>() else {
            continue;
        };
        // SAFETY: kill with signal 0 only checks that the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        if !alive {
            let _ = Command::new(&engine.podman)
                .args(["rm", "--force", "--ignore", name])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// The agent's path in the box: the `init=` of its kernel command line.
pub fn agent_path(cmdline: &str) -> &str {
    cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("init="))
        .unwrap_or("/usr/sbin/boxbuild-agent")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_paths_are_quoted_as_csv() {
        let volume = Volume::new("/a,b/c:d/e f/g\"h", "/target", true);
        assert_eq!(
            volume.mount_option(),
            OsString::from("type=bind,\"src=/a,b/c:d/e f/g\"\"h\",\"dst=/target\",ro")
        );
        let odd = OsString::from_vec(b"/x\xffy".to_vec());
        assert!(!mountable(Path::new(&odd)));
        assert!(!mountable(Path::new("/a\r\nb")));
        assert!(mountable(Path::new("/a,b:c d\"e\nf")));
        assert!(overlayable(Path::new(
            "/home/u/.cache/boxbuild/rootfs/0a1b"
        )));
        for bad in ["/a,b", "/a:b", "/a b", "/a\\b", "/a\"b"] {
            assert!(!overlayable(Path::new(bad)), "{bad}");
        }
    }
}
