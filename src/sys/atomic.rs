//! Files replaced atomically: written under a temporary name beside their place, synced,
//! and renamed over it (rename(2) is atomic within a file system), so a reader sees the
//! old content or the new, never a part, whatever happens to the writer.

use crate::sys::error::{Context, Error, Result};
use std::fs;
use std::io::Write;
use std::path::Path;

/// Writes a small file so that readers see the old or the new content, never a part.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomically_with_mode(path, bytes, None)
}

/// Writes a file under a temporary name beside `path`, synced, with `mode` (e.g. `0o444`)
/// if given, and renames it into place: readers see the old or the new content, never a
/// part. Errors name the file.
pub fn write_atomically_with_mode(path: &Path, bytes: &[u8], mode: Option<u32>) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).context(|| format!("cannot create {}", dir.display()))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".write-")
        .tempfile_in(dir)
        .context(|| format!("cannot create a file in {}", dir.display()))?;
    tmp.write_all(bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .and_then(|()| match mode {
            Some(mode) => tmp
                .as_file()
                .set_permissions(fs::Permissions::from_mode(mode)),
            None => Ok(()),
        })
        .context(|| format!("cannot write {}", path.display()))?;
    tmp.persist(path)
        .map_err(|e| Error::setup(format!("cannot write {}: {}", path.display(), e.error)))?;
    Ok(())
}
