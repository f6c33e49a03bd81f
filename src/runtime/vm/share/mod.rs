//! Host directories made visible in the box. Each backend knows its QEMU arguments and the
//! mounts the agent performs; the run decides which directories are shared.

mod ninep;
mod sftp;
mod sshfs;
mod virtiofs;

pub use ninep::NineP;
pub use sshfs::Sshfs;
pub use virtiofs::Virtiofs;

pub use crate::job::shares::{SharedDir, Sharing};
use crate::runtime::rundir::RunDir;
use crate::runtime::vm::arch::ArchProfile;
use crate::sys::error::Result;
use crate::sys::process;
use guest_agent::protocol::Mount;
use std::ffi::OsString;
use std::os::unix::net::UnixStream;

use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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

/// Fails, before anything slow starts, when the backend `choice` cannot work on this host
/// (virtiofs without a virtiofsd). Errors: one set-up line naming what to install.
pub fn check(choice: Sharing) -> Result<()> {
    match choice {
        Sharing::Virtiofs => Virtiofs::new(Vec::new()).map(drop),
        Sharing::NineP | Sharing::Sshfs => Ok(()),
    }
}

/// The backend for a run: the one asked for, else 9p (docs/sharing.md says why).
pub fn backend(dirs: Vec<SharedDir>, choice: Sharing) -> Result<Box<dyn ShareBackend>> {
    Ok(match choice {
        Sharing::NineP => Box::new(NineP { dirs }),
        Sharing::Virtiofs => Box::new(Virtiofs::new(dirs)?),
        Sharing::Sshfs => Box::new(Sshfs {
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
