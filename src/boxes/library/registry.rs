//! Boxes in an OCI registry (`oci://REGISTRY/REPOSITORY[:TAG][@sha256:...]`): resolved
//! into a catalog of their own (`oci::resolve`), kept under `catalogs/oci/` so later runs
//! need no network.

use super::{BoxSource, Library};
use crate::boxes::catalog;
use crate::sys::error::Result;

pub struct Registry;

impl BoxSource for Registry {
    fn resolve(&self, library: &mut Library, reference: &str, _arch: &str) -> Result<String> {
        if !crate::boxes::reference::is_oci(reference) {
            return Ok(reference.to_string());
        }
        let reference = crate::boxes::reference::BoxReference::parse(reference)?;
        let interval = catalog::update_check_interval(&library.catalogs)?.as_secs();
        let (found, name) = library.resolver(interval).catalog(&reference)?;
        for warning in library.registry.warnings() {
            library.ui.warn(warning);
        }
        library.catalogs.insert(0, found);
        Ok(name)
    }

    /// Every registry box resolved before (kept under `catalogs/oci/`); tags are checked
    /// as the refresh policy says. One that fails (unreachable and never kept, refused by
    /// a trust rule) is a warning.
    fn add_known(&self, library: &mut Library) {
        let dir = library.store.catalogs_dir().join("oci");
        let mut references: Vec<String> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| std::fs::read(e.path()).ok())
            .filter_map(|b| {
                serde_json::from_slice::<crate::boxes::oci::resolve::Resolution>(&b).ok()
            })
            .map(|r| r.reference)
            .collect();
        // Digest references first: a tag of the same repository, added later, comes first.
        references.sort_by_key(|r| (!r.contains('@'), r.clone()));
        for reference in references {
            if let Err(e) = self.resolve(library, &reference, "") {
                library.ui.warn(&format!("skipping {reference}: {e}"));
            }
        }
    }
}
