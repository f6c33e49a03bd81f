//! Host directories made visible in the box. Each backend knows its QEMU arguments and the
//! mounts the agent performs; the run decides which directories are shared.

mod ninep;
mod sftp;
mod sshfs;
mod virtiofs;

pub use ninep::NineP;
pub use sshfs::Sshfs;
pub use virtiofs::Virtiofs;

use crate::runtime::rundir::RunDir;
use crate::runtime::vm::arch::ArchProfile;
use crate::sys::error::{Error, Result};
use crate::sys::process;
use guest_agent::protocol::Mount;
use std::ffi::OsString;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One directory shared with the box.
#[derive(Debug, Clone)]
pub struct SharedDir {
    /// Short name, used as the 9p mount tag and QEMU device id.
    pub tag: String,
    pub host: PathBuf,
    pub guest: PathBuf,
    pub readonly: bool,
}

/// Guest paths a shared path may not cover or sit in: the box's own system, the virtual
/// file systems the agent mounts, and the other shares.
const GUEST_RESERVED: &[&str] = &[
    "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/usr", "/etc", "/var", "/tmp", "/root", "/boot",
    "/proc", "/sys", "/dev", "/run",
];
/// Guest paths under which nothing may be mounted at all (virtual file systems).
const GUEST_VIRTUAL: &[&str] = &["/proc", "/sys", "/dev", "/run"];

/// `--shared-path`: one more host directory, read-write, at the same path in the box.
pub fn extra_dir(path: &Path, taken: &[&str]) -> Result<SharedDir> {
    let host = path.canonicalize().map_err(|e| {
        Error::setup(format!(
            "--shared-path {}: {e}; give an existing directory",
            path.display()
        ))
    })?;
    if !host.is_dir() {
        return Err(Error::setup(format!(
            "--shared-path {}: not a directory; share the directory that holds it",
            path.display()
        )));
    }
    let clash = GUEST_RESERVED
        .iter()
        .chain(taken)
        .find(|reserved| Path::new(reserved).starts_with(&host) || host == Path::new(reserved))
        .or_else(|| GUEST_VIRTUAL.iter().find(|v| host.starts_with(v)));
    if let Some(reserved) = clash {
        return Err(Error::setup(format!(
            "--shared-path {}: it would be mounted over {reserved} in the box; share a directory below it, e.g. a project directory",
            host.display()
        )));
    }
    Ok(SharedDir {
        tag: "shared".into(),
        guest: host.clone(),
        host,
        readonly: false,
    })
}

pub trait ShareBackend {
    fn name(&self) -> &'static str;
    /// Starts what the backend needs on the host before QEMU starts (e.g. virtiofsd).
    fn prepare(&mut self, _run_dir: &RunDir) -> Result<Helpers> {
        Ok(Helpers::default())
    }
    fn qemu_args(&self, profile: &ArchProfile, memory_mib: u64) -> Vec<OsString>;
    /// What the agent mounts in the guest.
    fn mounts(&self) -> Vec<Mount>;
}

/// Host processes and threads a backend runs for one build; stopped when dropped. They
/// end by themselves when QEMU closes their sockets; this makes sure of it on every path.
#[derive(Default)]
pub struct Helpers {
    children: Vec<Child>,
    threads: Vec<HelperThread>,
}

/// A serving thread and the switch that stops it.
pub struct HelperThread {
    pub stop: Arc<AtomicBool>,
    /// The connection it serves, once there is one: shut down to end the thread.
    pub stream: Arc<Mutex<Option<UnixStream>>>,
    pub thread: std::thread::JoinHandle<()>,
}

impl Helpers {
    pub fn push(&mut self, child: Child) -> &mut Child {
        self.children.push(child);
        // Cannot fail: the vector holds at least the child pushed on the line above.
        self.children.last_mut().expect("just pushed")
    }

    pub fn push_thread(&mut self, thread: HelperThread) {
        self.threads.push(thread);
    }
}

impl Drop for Helpers {
    fn drop(&mut self) {
        for helper in &mut self.children {
            process::stop(helper, Duration::from_millis(500));
        }
        for t in &self.threads {
            t.stop.store(true, Ordering::SeqCst);
            if let Some(stream) = t.stream.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
                let _ = stream.shutdown(std::net::Shutdown::Both);
            }
        }
        for t in self.threads.drain(..) {
            let _ = t.thread.join();
        }
    }
}

/// The sharing backends a user can choose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    NineP,
    Virtiofs,
    Sshfs,
}

/// The backend for a run: the one asked for, else 9p (docs/sharing.md says why).
pub fn backend(dirs: Vec<SharedDir>, choice: Backend) -> Result<Box<dyn ShareBackend>> {
    Ok(match choice {
        Backend::NineP => Box::new(NineP { dirs }),
        Backend::Virtiofs => Box::new(Virtiofs::new(dirs)?),
        Backend::Sshfs => Box::new(Sshfs {
            dirs,
            sockets: Vec::new(),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::vm::arch::profile;

    #[test]
    fn shared_paths_may_not_cover_the_box_system() {
        for bad in ["/", "/usr", "/tmp", "/proc/self", "/dev"] {
            let e = extra_dir(Path::new(bad), &[]).unwrap_err().to_string();
            assert!(e.contains("mounted over"), "{bad}: {e}");
        }
        let e = extra_dir(Path::new("/nonexistent-dir"), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("existing directory"), "{e}");
        let tmp = tempfile::tempdir().unwrap();
        let dir = extra_dir(tmp.path(), &["/description"]).unwrap();
        assert_eq!(dir.guest, tmp.path().canonicalize().unwrap());
        assert!(!dir.readonly);
    }

    #[test]
    fn readonly_reaches_qemu_and_the_guest() {
        let share = NineP {
            dirs: vec![SharedDir {
                tag: "description".into(),
                host: "/h/d".into(),
                guest: "/description".into(),
                readonly: true,
            }],
        };
        let args: Vec<String> = share
            .qemu_args(profile("x86_64").unwrap(), 256)
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(args[1].ends_with("readonly=on"), "{args:?}");
        assert_eq!(args[3], "virtio-9p-pci,fsdev=fs0,mount_tag=description");
        assert!(share.mounts()[0].readonly);
    }
}
