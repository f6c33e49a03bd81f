//! Boxes in an OCI image layout directory (`oci:DIR[:TAG]`, `oci:DIR@sha256:...`): read
//! into a catalog of their own (`oci::layout`).

use super::{BoxSource, Library};
use crate::boxes::catalog;
use crate::sys::error::Result;

pub struct Layout;

impl BoxSource for Layout {
    fn resolve(&self, library: &mut Library, reference: &str, _arch: &str) -> Result<String> {
        if !crate::boxes::oci::layout::is_layout(reference) {
            return Ok(reference.to_string());
        }
        let layout = crate::boxes::oci::layout::Layout::parse(reference)?;
        let interval = catalog::update_check_interval(&library.catalogs)?.as_secs();
        let (found, name) = library.resolver(interval).layout_catalog(&layout)?;
        library.catalogs.insert(0, found);
        Ok(name)
    }
}
