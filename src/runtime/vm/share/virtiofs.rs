//! virtiofs: one virtiofsd per shared directory, each on its own socket in the run dir,
//! with guest memory in a shared memfd (no file in /dev/shm). Both daemons work: the Rust
//! virtiofsd and the C one that Debian 12 ships with QEMU. As root they run directly; a
//! normal user's runs them as root of a user namespace (`unshare`, subordinate ids), so
//! the files the box writes belong to that user on the host.

use super::{Helpers, ShareBackend, SharedDir};
use crate::runtime::rundir::RunDir;
use crate::runtime::vm::arch::ArchProfile;
use crate::runtime::vm::qemu::with_path;
use crate::sys::error::{Error, Result};
use crate::sys::process;
use guest_agent::protocol::Mount;
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// Where distributions put virtiofsd, after `$BOXBUILD_VIRTIOFSD` and PATH.
const KNOWN_PLACES: &[&str] = &[
    "/usr/libexec/virtiofsd",
    "/usr/lib/qemu/virtiofsd",
    "/usr/lib/virtiofsd",
];
const SOCKET_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavour {
    /// virtiofsd from the virtiofsd project (`--shared-dir`); newer ones have `--readonly`.
    Rust { readonly: bool },
    /// The older daemon in QEMU's tree (`-o source=`).
    C,
}

pub struct Virtiofs {
    dirs: Vec<SharedDir>,
    daemon: PathBuf,
    flavour: Flavour,
    sockets: Vec<PathBuf>,
}

fn find_daemon() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("BOXBUILD_VIRTIOFSD") {
        return Ok(PathBuf::from(path));
    }
    let on_path: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("virtiofsd"))
                .collect()
        })
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain(KNOWN_PLACES.iter().map(PathBuf::from))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            Error::setup(
                "--virtiofs-sharing needs virtiofsd, which was not found (PATH, /usr/libexec, /usr/lib/qemu); install it (Debian 12: apt-get install qemu-system-common) or use --9p-sharing",
            )
        })
}

fn flavour_of(daemon: &Path) -> Result<Flavour> {
    let out = Command::new(daemon)
        .arg("--help")
        .output()
        .map_err(|e| Error::setup(format!("cannot run {}: {e}", daemon.display())))?;
    let help = [out.stdout, out.stderr].concat();
    let help = String::from_utf8_lossy(&help);
    Ok(if help.contains("--shared-dir") {
        Flavour::Rust {
            readonly: help.contains("--readonly"),
        }
    } else {
        Flavour::C
    })
}

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

impl Virtiofs {
    pub fn new(dirs: Vec<SharedDir>) -> Result<Virtiofs> {
        let daemon = find_daemon()?;
        let flavour = flavour_of(&daemon)?;
        Ok(Virtiofs {
            dirs,
            daemon,
            flavour,
            sockets: Vec::new(),
        })
    }

    fn daemon_args(&self, dir: &SharedDir, socket: &Path) -> Vec<OsString> {
        let mut args: Vec<OsString> = Vec::new();
        match self.flavour {
            Flavour::Rust { readonly } => {
                args.push("--socket-path".into());
                args.push(socket.into());
                args.push("--shared-dir".into());
                args.push(dir.host.clone().into());
                args.extend(["--cache", "auto", "--sandbox", "namespace"].map(OsString::from));
                if dir.readonly && readonly {
                    args.push("--readonly".into());
                }
            }
            Flavour::C => {
                let mut socket_arg = OsString::from("--socket-path=");
                socket_arg.push(socket);
                args.push(socket_arg);
                args.push("-o".into());
                let mut source = OsString::from("source=");
                source.push(fuse_opt_escape(dir.host.as_os_str()));
                args.push(source);
                args.extend(["-o", "cache=auto", "-o", "sandbox=namespace"].map(OsString::from));
            }
        }
        args
    }

    /// The command that starts one daemon: directly as root; otherwise as root of a new
    /// user namespace with the user's subordinate ids, and a private /run (the C daemon
    /// keeps its lock files there).
    fn command(&self, dir: &SharedDir, socket: &Path) -> (String, Vec<OsString>) {
        let daemon_args = self.daemon_args(dir, socket);
        if is_root() {
            return (self.daemon.display().to_string(), daemon_args);
        }
        let mut args: Vec<OsString> = [
            "--user",
            "--map-user=0",
            "--map-group=0",
            "--map-users=auto",
            "--map-groups=auto",
            "--mount",
            "--",
            "/bin/sh",
            "-c",
            "mount -t tmpfs tmpfs /run && exec \"$0\" \"$@\"",
        ]
        .map(OsString::from)
        .to_vec();
        args.push(self.daemon.clone().into());
        args.extend(daemon_args);
        ("unshare".to_string(), args)
    }
}

impl ShareBackend for Virtiofs {
    fn name(&self) -> &'static str {
        "virtiofs"
    }

    fn prepare(&mut self, run_dir: &RunDir) -> Result<Helpers> {
        let mut helpers = Helpers::default();
        for dir in self.dirs.clone() {
            let socket = run_dir.path(&format!("vfs-{}.sock", dir.tag));
            let log = run_dir.path(&format!("virtiofsd-{}.log", dir.tag));
            let (binary, args) = self.command(&dir, &socket);
            let helper = helpers.push(process::spawn(&binary, "util-linux", &args, &log, false)?);
            wait_for_socket(&socket, helper, &log)?;
            self.sockets.push(socket);
        }
        Ok(helpers)
    }

    fn qemu_args(&self, profile: &ArchProfile, memory_mib: u64) -> Vec<OsString> {
        // vhost-user needs guest memory the daemon can map: a memfd, shared.
        let mut args: Vec<OsString> = vec![
            "-object".into(),
            format!("memory-backend-memfd,id=mem,size={memory_mib}M,share=on").into(),
            "-numa".into(),
            "node,memdev=mem".into(),
        ];
        for (i, (dir, socket)) in self.dirs.iter().zip(&self.sockets).enumerate() {
            args.push("-chardev".into());
            args.push(with_path(
                &format!("socket,id=vfs{i},path="),
                socket.as_os_str(),
            ));
            args.push("-device".into());
            args.push(
                format!(
                    "{},chardev=vfs{i},tag={}",
                    profile.virtio("vhost-user-fs"),
                    dir.tag
                )
                .into(),
            );
        }
        args
    }

    fn mounts(&self) -> Vec<Mount> {
        self.dirs
            .iter()
            .map(|dir| Mount {
                fstype: b"virtiofs".to_vec(),
                source: dir.tag.as_bytes().to_vec(),
                target: dir.guest.as_os_str().as_bytes().to_vec(),
                options: Vec::new(),
                readonly: dir.readonly,
            })
            .collect()
    }
}

/// A value inside a libfuse `-o` list (the C daemon's options), where `,` separates
/// options and `\` escapes.
fn fuse_opt_escape(value: &std::ffi::OsStr) -> OsString {
    use std::os::unix::ffi::OsStringExt;
    let mut out = Vec::with_capacity(value.len());
    for &b in value.as_bytes() {
        if b == b',' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
    OsString::from_vec(out)
}

/// Waits until the daemon listens, or reports why it did not.
fn wait_for_socket(socket: &Path, helper: &mut Child, log: &Path) -> Result<()> {
    let start = Instant::now();
    while !socket.exists() {
        if let Ok(Some(status)) = helper.try_wait() {
            let said = std::fs::read_to_string(log).unwrap_or_default();
            let said = said
                .lines()
                .last()
                .unwrap_or("no output")
                .trim()
                .to_string();
            let hint = if is_root() {
                String::new()
            } else {
                "; a normal user needs subordinate ids (/etc/subuid, /etc/subgid) for virtiofs, or use --9p-sharing".to_string()
            };
            return Err(Error::setup(format!(
                "virtiofsd exited ({status}) before it listened: {said}{hint}"
            )));
        }
        if start.elapsed() > SOCKET_TIMEOUT {
            return Err(Error::setup(format!(
                "virtiofsd did not listen on {} within {}s",
                socket.display(),
                SOCKET_TIMEOUT.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(flavour: Flavour) -> Virtiofs {
        Virtiofs {
            dirs: vec![SharedDir {
                tag: "description".into(),
                host: "/h/d,x".into(),
                guest: "/description".into(),
                readonly: true,
            }],
            daemon: "/usr/lib/qemu/virtiofsd".into(),
            flavour,
            sockets: vec!["/run/r/vfs-description.sock".into()],
        }
    }

    fn strings(args: Vec<OsString>) -> Vec<String> {
        args.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn each_daemon_gets_its_own_dialect() {
        let socket = Path::new("/run/r/s.sock");
        let c = with(Flavour::C);
        let args = strings(c.daemon_args(&c.dirs[0], socket));
        assert_eq!(args[0], "--socket-path=/run/r/s.sock");
        assert!(args.contains(&"source=/h/d\\,x".to_string()), "{args:?}");
        let rust = with(Flavour::Rust { readonly: true });
        let args = strings(rust.daemon_args(&rust.dirs[0], socket));
        assert!(args.windows(2).any(|w| w == ["--shared-dir", "/h/d,x"]));
        assert!(args.contains(&"--readonly".to_string()));
        let old = with(Flavour::Rust { readonly: false });
        assert!(!strings(old.daemon_args(&old.dirs[0], socket)).contains(&"--readonly".into()));
    }

    #[test]
    fn qemu_gets_shared_memory_and_one_device_per_directory() {
        let v = with(Flavour::C);
        let args = strings(v.qemu_args(crate::runtime::vm::arch::profile("x86_64").unwrap(), 512));
        assert_eq!(args[1], "memory-backend-memfd,id=mem,size=512M,share=on");
        assert_eq!(args[5], "socket,id=vfs0,path=/run/r/vfs-description.sock");
        assert_eq!(args[7], "vhost-user-fs-pci,chardev=vfs0,tag=description");
        assert!(v.mounts()[0].readonly);
    }
}
