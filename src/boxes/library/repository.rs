//! Catalog boxes kept in an OCI repository (`oci = ...` in a catalog entry): the tags
//! are the versions. The pinned tag, else the newest, is resolved into a catalog of its
//! own under the box's name, each version named after its tag.

use super::{BoxSource, Library};
use crate::boxes::catalog;
use crate::sys::error::{Error, Result};

pub struct Repository;

impl BoxSource for Repository {
    fn resolve(&self, library: &mut Library, reference: &str, _arch: &str) -> Result<String> {
        let (name, pinned) = catalog::parse_box_ref(reference);
        let Some(repository) = catalog::catalog_for(&library.catalogs, name)
            .and_then(|c| c.file.boxes.get(name))
            .and_then(|e| e.oci.clone())
        else {
            return Ok(reference.to_string());
        };
        let repository = crate::boxes::reference::BoxReference::parse(&repository)?;
        let interval = catalog::update_check_interval(&library.catalogs)?.as_secs();
        let resolver = library.resolver(interval);
        let tags = resolver.version_tags(&repository)?;
        let tag = match pinned {
            Some(tag) => tag.to_string(),
            None => tags.first().cloned().ok_or_else(|| {
                Error::setup(format!(
                    "box '{name}': {} has no version tags (tags starting with a digit); push one with 'boxbuild box push'",
                    repository.repository_text()
                ))
            })?,
        };
        if pinned.is_some() && !tags.contains(&tag) {
            return Err(Error::setup(format!(
                "box '{name}' has no version {tag} ({} has: {})",
                repository.repository_text(),
                if tags.is_empty() {
                    "none".to_string()
                } else {
                    tags.join(", ")
                }
            )));
        }
        // The cached versions too (their resolutions are kept: no request), so a build
        // uses the newest at hand and says when a newer one exists, as with any catalog.
        let mut wanted = vec![tag];
        if pinned.is_none() {
            for cached in library.store.all_cached() {
                if cached.key.name == name
                    && tags.contains(&cached.key.version)
                    && !wanted.contains(&cached.key.version)
                {
                    wanted.push(cached.key.version.clone());
                }
            }
        }
        let mut combined: Option<catalog::Catalog> = None;
        for tag in wanted {
            let (mut found, synthesized) = resolver.catalog(&repository.at_tag(&tag))?;
            let Some(mut entry) = found.file.boxes.remove(&synthesized) else {
                continue;
            };
            for version in &mut entry.versions {
                version.version = tag.clone();
            }
            match combined.as_mut().and_then(|c| c.file.boxes.get_mut(name)) {
                Some(all) => all.versions.extend(entry.versions),
                None => {
                    found.file.boxes.insert(name.to_string(), entry);
                    combined = Some(found);
                }
            }
        }
        if let Some(found) = combined {
            library.catalogs.insert(0, found);
        }
        Ok(reference.to_string())
    }

    /// Every catalog box kept in an OCI repository.
    fn add_known(&self, library: &mut Library) {
        let names: Vec<String> = catalog::known_boxes(&library.catalogs)
            .into_iter()
            .map(String::from)
            .collect();
        for name in names {
            if let Err(e) = self.resolve(library, &name, "") {
                library.ui.warn(&format!("skipping box {name}: {e}"));
            }
        }
    }
}
