//! Host directories made visible in the box. Each backend knows its QEMU arguments and the
//! mounts the agent performs; the run decides which directories are shared.

use crate::vm::arch::ArchProfile;
use crate::vm::qemu::with_path;
use guest_agent::protocol::Mount;
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// One directory shared with the box.
#[derive(Debug, Clone)]
pub struct SharedDir {
    /// Short name, used as the 9p mount tag and QEMU device id.
    pub tag: String,
    pub host: PathBuf,
    pub guest: PathBuf,
    pub readonly: bool,
}

pub trait ShareBackend {
    fn name(&self) -> &'static str;
    fn qemu_args(&self, profile: &ArchProfile) -> Vec<OsString>;
    fn mounts(&self) -> Vec<Mount>;
}

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

    fn qemu_args(&self, profile: &ArchProfile) -> Vec<OsString> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::arch::profile;

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
            .qemu_args(profile("x86_64").unwrap())
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(args[1].ends_with("readonly=on"), "{args:?}");
        assert_eq!(args[3], "virtio-9p-pci,fsdev=fs0,mount_tag=description");
        assert!(share.mounts()[0].readonly);
    }
}
