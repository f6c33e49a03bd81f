//! virtio-9p: QEMU itself serves the directories; no helper process.

use super::{ShareBackend, SharedDir};
use crate::runtime::vm::arch::ArchProfile;
use crate::runtime::vm::qemu::with_path;
use guest_agent::protocol::Mount;
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;

/// virtio-9p with QEMU's `local` driver in `security_model=none`: QEMU runs as the user,
/// so files the guest creates belong to the user on the host, with the modes the guest
/// chose. QEMU resolves every path below the shared root without following symlinks out
/// of it.
pub struct NineP {
    pub dirs: Vec<SharedDir>,
}

/// Large messages: fewer round trips through the emulated transport. The guest kernel
/// caps this to what its transport supports.
const NINEP_MSIZE: u32 = 512 * 1024;

impl ShareBackend for NineP {
    fn name(&self) -> &'static str {
        "9p"
    }

    fn qemu_args(&self, profile: &ArchProfile, _memory_mib: u64) -> Vec<OsString> {
        let mut args = Vec::new();
        for (i, dir) in self.dirs.iter().enumerate() {
            let mut fsdev = with_path(&format!("local,id=fs{i},path="), dir.host.as_os_str());
            fsdev.push(",security_model=none,multidevs=remap");
            if dir.readonly {
                fsdev.push(",readonly=on");
            }
            args.push("-fsdev".into());
            args.push(fsdev);
            args.push("-device".into());
            args.push(
                format!(
                    "{},fsdev=fs{i},mount_tag={}",
                    profile.virtio("virtio-9p"),
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
            .map(|dir| {
                // Read-only input may be cached freely; the output share must not keep
                // writes back from the host.
                let cache = if dir.readonly { "loose" } else { "mmap" };
                Mount {
                    fstype: b"9p".to_vec(),
                    source: dir.tag.as_bytes().to_vec(),
                    target: dir.guest.as_os_str().as_bytes().to_vec(),
                    options: format!(
                        "trans=virtio,version=9p2000.L,msize={NINEP_MSIZE},cache={cache}"
                    )
                    .into_bytes(),
                    readonly: dir.readonly,
                }
            })
            .collect()
    }
}
