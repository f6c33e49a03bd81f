//! qcow2 overlays over a box disk: every write goes to the overlay, the box disk is only
//! ever read. One per run, or one kept per box version for `--no-snapshot`.

use crate::sys::error::{Error, Result};
use std::path::Path;
use std::process::Command;

/// Creates `overlay` (qcow2) backed by `disk` (qcow2 or raw), by its absolute path.
pub fn create(disk: &Path, overlay: &Path) -> Result<()> {
    let disk = disk
        .canonicalize()
        .map_err(|e| Error::setup(format!("box disk {}: {e}", disk.display())))?;
    let format = if is_qcow2(&disk) { "qcow2" } else { "raw" };
    let out = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", format, "-b"])
        .arg(&disk)
        .arg(overlay)
        .output()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::setup(
                    "qemu-img not found: install it (Debian/Ubuntu: apt-get install qemu-utils)",
                )
            } else {
                Error::setup(format!("cannot run qemu-img: {e}"))
            }
        })?;
    if !out.status.success() {
        return Err(Error::setup(format!(
            "qemu-img could not create the overlay over {}: {}",
            disk.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

fn is_qcow2(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .map(|_| &magic == b"QFI\xfb")
        .unwrap_or(false)
}
