//! sshfs without SSH: for each shared directory boxbuild serves SFTP itself (`sftp`) on a
//! virtio-serial port, and the guest's `sshfs -o passive` speaks it over that port. No
//! sshd, no login to the host, no keys, no ports, and nothing in `~/.ssh`.

use super::sftp::Server;
use super::{HelperThread, Helpers, ShareBackend, SharedDir};
use crate::runtime::activity::SHARE_THREAD_PREFIX;
use crate::runtime::rundir::RunDir;
use crate::runtime::vm::arch::ArchProfile;
use crate::runtime::vm::qemu::with_path;
use crate::sys::error::{Error, Result};
use guest_agent::protocol::Mount;
use std::ffi::OsString;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct Sshfs {
    pub dirs: Vec<SharedDir>,
    /// The per-share sockets QEMU connects to, once prepared.
    pub sockets: Vec<PathBuf>,
}

/// The virtio-serial port name of a share.
fn port_name(dir: &SharedDir) -> String {
    format!("org.boxbuild.sftp.{}", dir.tag)
}

impl ShareBackend for Sshfs {
    fn name(&self) -> &'static str {
        "sshfs"
    }

    fn prepare(&mut self, run_dir: &RunDir) -> Result<Helpers> {
        let mut helpers = Helpers::default();
        for dir in &self.dirs {
            let path = run_dir.path(&format!("sftp-{}.sock", dir.tag));
            let listener = UnixListener::bind(&path)
                .map_err(|e| Error::setup(format!("cannot listen on {}: {e}", path.display())))?;
            listener
                .set_nonblocking(true)
                .map_err(|e| Error::setup(format!("{}: {e}", path.display())))?;
            let mut server = Server::new(&dir.host, dir.readonly)
                .map_err(|e| Error::setup(format!("cannot share {}: {e}", dir.host.display())))?;
            let stop = Arc::new(AtomicBool::new(false));
            let stream = Arc::new(Mutex::new(None));
            let thread = {
                let (stop, stream) = (stop.clone(), stream.clone());
                // The name marks the thread's CPU time and I/O as the box's (status line).
                let name = format!("{SHARE_THREAD_PREFIX}{}", dir.tag);
                crate::sys::threads::spawn(&name, move || {
                    // QEMU connects once, at start.
                    let connection = loop {
                        if stop.load(Ordering::SeqCst) {
                            return;
                        }
                        match listener.accept() {
                            Ok((connection, _)) => break connection,
                            Err(_) => std::thread::sleep(Duration::from_millis(10)),
                        }
                    };
                    let _ = connection.set_nonblocking(false);
                    let Ok(reader) = connection.try_clone() else {
                        return;
                    };
                    if let Ok(clone) = connection.try_clone() {
                        *stream.lock().unwrap_or_else(|p| p.into_inner()) = Some(clone);
                    }
                    let _ = server.serve(reader, connection);
                })?
            };
            helpers.push_thread(HelperThread {
                stop,
                stream,
                thread,
            });
            self.sockets.push(path);
        }
        Ok(helpers)
    }

    fn qemu_args(&self, _profile: &ArchProfile, _memory_mib: u64) -> Vec<OsString> {
        let mut args = Vec::new();
        for (i, (dir, socket)) in self.dirs.iter().zip(&self.sockets).enumerate() {
            args.push("-chardev".into());
            args.push(with_path(
                &format!("socket,id=sftp{i},path="),
                socket.as_os_str(),
            ));
            args.push("-device".into());
            args.push(format!("virtserialport,chardev=sftp{i},name={}", port_name(dir)).into());
        }
        args
    }

    fn mounts(&self) -> Vec<Mount> {
        self.dirs
            .iter()
            .map(|dir| Mount {
                fstype: b"sshfs".to_vec(),
                source: port_name(dir).into_bytes(),
                target: std::os::unix::ffi::OsStrExt::as_bytes(dir.guest.as_os_str()).to_vec(),
                options: Vec::new(),
                readonly: dir.readonly,
            })
            .collect()
    }
}
