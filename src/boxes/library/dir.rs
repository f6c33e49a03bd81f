//! A box image's files in a directory (`dir:/PATH`), as a Kubernetes image volume mounts
//! them (docs/box-images.md): read into a catalog of their own whose files are used in
//! place, read-only; nothing is copied into the cache.

use super::{BoxSource, Library};
use crate::boxes::catalog::Catalog;
use crate::sys::error::{Error, Result};

/// The prefix of a directory reference.
pub const PREFIX: &str = "dir:";

pub struct Dir;

impl BoxSource for Dir {
    fn resolve(&self, library: &mut Library, reference: &str, _arch: &str) -> Result<String> {
        let Some(path) = reference.strip_prefix(PREFIX) else {
            return Ok(reference.to_string());
        };
        if path.is_empty() {
            return Err(Error::setup(format!(
                "'{reference}': name the directory, e.g. dir:/box"
            )));
        }
        let dir = std::path::Path::new(path);
        let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
        let version = crate::boxes::oci::box_image::dir_version(&dir)
            .map_err(|m| Error::setup(format!("{reference}: {m}")))?;
        let name = box_name(&dir);
        library.catalogs.insert(
            0,
            Catalog::of_one(&name, String::new(), vec![version], reference)?,
        );
        Ok(name)
    }
}

/// The box's name: `dir` and the path, every character outside the catalog's name
/// alphabet as `_` (`dir_box` for `/box`).
fn box_name(dir: &std::path::Path) -> String {
    crate::boxes::reference::sanitize(&format!("dir{}", dir.display()))
}
