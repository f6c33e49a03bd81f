//! The scratch area as the box sees it: where the builder's work files go (a disk the
//! agent mounts in a VM, a directory bind-mounted in a container).

/// The serial the scratch disk carries, by which the agent finds it.
pub const SERIAL: &str = "boxbuild-scratch";
/// Where the scratch area appears: kiwi keeps its temporary files in /var/tmp as well.
pub const GUEST_PATH: &str = "/var/tmp";
/// Mount options in the box: the inode tables stay uninitialised (the kernel would
/// otherwise zero them in the background, competing with the build).
pub const MOUNT_OPTIONS: &str = "noinit_itable";
