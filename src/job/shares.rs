//! What is shared with the box: the description, the target and `--shared-path`, each a
//! host directory with its path in the box, and the backend that carries them into a VM.
//! The backends themselves are `runtime::vm::share`.

use crate::sys::error::{Error, Result};
use std::path::{Path, PathBuf};

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

/// How shared directories reach a VM: the backends a user can choose (docs/sharing.md);
/// a container bind-mounts them instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    NineP,
    Virtiofs,
    Sshfs,
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
