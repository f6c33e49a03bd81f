//! The host kernel's file systems: in a container the builder mounts with the host's
//! kernel, so a file system it lacks fails a build minutes in (`mount: unknown filesystem
//! type 'vfat'`) that a VM, with the box's own kernel, builds. Known are the file systems
//! in /proc/filesystems and those a module on the host provides (`alias fs-NAME` in
//! modules.alias of the running kernel: the kernel loads it on the first mount).
//! `BOXBUILD_HOST_FILESYSTEMS=FILE` names a file read instead of both, in
//! /proc/filesystems's format (docs/container.md).

use std::path::PathBuf;

/// The variable naming a file to read in place of /proc/filesystems and the modules.
pub const HOST_FILESYSTEMS_VAR: &str = "BOXBUILD_HOST_FILESYSTEMS";

/// The file systems the host's kernel can mount.
pub struct Filesystems {
    names: Vec<String>,
}

impl Filesystems {
    /// The host's, as now; None when nothing can be read (then nothing is refused).
    pub fn of_host() -> Option<Filesystems> {
        if let Some(file) = std::env::var_os(HOST_FILESYSTEMS_VAR).filter(|f| !f.is_empty()) {
            let text = std::fs::read_to_string(PathBuf::from(file)).ok()?;
            return Some(Filesystems::parse(&text, ""));
        }
        let text = std::fs::read_to_string("/proc/filesystems").ok()?;
        let aliases = uname_release()
            .and_then(|r| std::fs::read_to_string(format!("/lib/modules/{r}/modules.alias")).ok())
            .unwrap_or_default();
        Some(Filesystems::parse(&text, &aliases))
    }

    /// From /proc/filesystems's lines (`[nodev]\tNAME`) and modules.alias's
    /// (`alias fs-NAME MODULE`).
    fn parse(filesystems: &str, aliases: &str) -> Filesystems {
        let mut names: Vec<String> = filesystems
            .lines()
            .filter_map(|l| l.split_whitespace().last())
            .map(String::from)
            .collect();
        names.extend(aliases.lines().filter_map(|l| {
            let mut words = l.split_whitespace();
            match (words.next(), words.next()) {
                (Some("alias"), Some(alias)) => alias.strip_prefix("fs-").map(String::from),
                _ => None,
            }
        }));
        Filesystems { names }
    }

    pub fn has(&self, filesystem: &str) -> bool {
        self.names.iter().any(|n| n == filesystem)
    }
}

/// The running kernel's release (`uname -r`).
fn uname_release() -> Option<String> {
    // SAFETY: uname fills the struct it is given.
    let mut name: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut name) } != 0 {
        return None;
    }
    // SAFETY: uname NUL-terminates the field.
    let release = unsafe { std::ffi::CStr::from_ptr(name.release.as_ptr()) };
    Some(release.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernels_list_and_its_modules() {
        let fs = Filesystems::parse(
            "nodev\tsysfs\nnodev\ttmpfs\n\text4\n\tsquashfs\nnodev\toverlay\n",
            "alias fs-vfat vfat\nalias fs-msdos msdos\nalias pci:v* something\n",
        );
        for present in ["ext4", "squashfs", "vfat", "msdos", "tmpfs"] {
            assert!(fs.has(present), "{present}");
        }
        for absent in ["xfs", "iso9660", "nodev", "fs-vfat"] {
            assert!(!fs.has(absent), "{absent}");
        }
    }
}
