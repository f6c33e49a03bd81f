//! Boxes of KIWI's Python plugin: a box no catalog names may be one of the plugin's (its
//! configuration file, else its public boxes); its catalog entry is made from the
//! server's files (`catalog::plugin_config`).

use super::{BoxSource, Library};
use crate::boxes::catalog::{self, Refresh};
use crate::sys::error::Result;

pub struct Plugin;

impl BoxSource for Plugin {
    fn resolve(&self, library: &mut Library, reference: &str, arch: &str) -> Result<String> {
        let name = catalog::parse_box_ref(reference).0;
        if catalog::catalog_for(&library.catalogs, name).is_some() {
            return Ok(reference.to_string());
        }
        let interval = catalog::update_check_interval(&library.catalogs)?.as_secs();
        let refresh = library.refresh;
        let ui = library.ui;
        let found = catalog::plugin_config::catalog_for(
            name,
            arch,
            &library.http,
            &library.store.catalogs_dir(),
            |age| match refresh {
                Refresh::Now => true,
                Refresh::Never => false,
                Refresh::WhenDue => age >= interval,
            },
            |message| ui.warn(message),
        )?;
        library.catalogs.extend(found);
        Ok(reference.to_string())
    }
}
