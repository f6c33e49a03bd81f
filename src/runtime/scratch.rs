//! The per-run scratch disk: a sparse file in the run dir, formatted on the host (natively,
//! not under emulation) and mounted by the agent. The builder keeps its root tree and
//! intermediate files there instead of on a share, which is many times slower.

use crate::sys::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Creates and formats a sparse ext4 image of `size_mib`. Only the blocks the build writes
/// take space on the host.
pub fn create(path: &Path, size_mib: u64) -> Result<()> {
    let file = std::fs::File::create(path)
        .map_err(|e| Error::setup(format!("scratch disk {}: {e}", path.display())))?;
    let bytes = size_mib
        .checked_mul(1024 * 1024)
        .ok_or_else(|| Error::setup(format!("a scratch disk of {size_mib} MiB is too large")))?;
    file.set_len(bytes)
        .map_err(|e| Error::setup(format!("scratch disk {}: {e}", path.display())))?;
    drop(file);
    let mkfs = find_mkfs().ok_or_else(|| {
        Error::setup("mkfs.ext4 not found: install e2fsprogs (it formats the scratch disk)")
    })?;
    // No journal and lazily initialised inode tables: the disk lives for one run, and
    // formatting stays a fraction of a second whatever its size.
    let out = Command::new(&mkfs)
        .args([
            "-q",
            "-F",
            "-L",
            "scratch",
            "-O",
            "^has_journal",
            "-E",
            "lazy_itable_init=1,lazy_journal_init=1,root_owner=0:0,nodiscard",
        ])
        .arg(path)
        .output()
        .map_err(|e| Error::setup(format!("cannot run {}: {e}", mkfs.display())))?;
    if !out.status.success() {
        return Err(Error::setup(format!(
            "{} could not format the scratch disk: {}",
            mkfs.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

fn find_mkfs() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join("mkfs.ext4"))
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_scratch_disk_is_sparse_and_formatted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scratch.img");
        create(&path, 64 * 1024).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), 64 << 30);
        use std::os::unix::fs::MetadataExt;
        assert!(meta.blocks() * 512 < 256 << 20, "{} blocks", meta.blocks());
        let mut magic = [0u8; 2];
        use std::io::{Read, Seek, SeekFrom};
        let mut f = std::fs::File::open(&path).unwrap();
        f.seek(SeekFrom::Start(1024 + 0x38)).unwrap();
        f.read_exact(&mut magic).unwrap();
        assert_eq!(magic, [0x53, 0xef], "ext4 superblock magic");
    }
}
