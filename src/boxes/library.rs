//! The catalogs and the cache together: what builds and `box` commands need to turn a
//! box name into files on disk.

use crate::boxes::catalog::{self, Catalog, Found, LoadPolicy, Refresh};
use crate::boxes::fetch::{self, http::Http, Fetcher};
use crate::boxes::store::{self, Ready, Store};
use crate::sys::error::{Error, Result};
use crate::sys::signals::SignalWatch;
use crate::sys::ui::Ui;

pub struct Library {
    pub store: Store,
    /// Which sources must be signed (trust.toml).
    pub rules: Vec<crate::boxes::trust::Rule>,
    pub http: Http,
    pub registry: crate::boxes::oci::Registry,
    pub catalogs: Vec<Catalog>,
    pub ui: Ui,
    pub signals: SignalWatch,
    refresh: Refresh,
}

impl Library {
    pub fn open(ui: Ui, refresh: Refresh, signals: SignalWatch) -> Result<Library> {
        let store = Store::open()?;
        let http = Http::new();
        let rules = crate::boxes::trust::load(&crate::boxes::trust::files())?;
        let catalogs = catalog::load_all(&LoadPolicy {
            rules: &rules,
            refresh,
            ui,
            http: &http,
            cache_dir: store.catalogs_dir(),
        })?;
        Ok(Library {
            store,
            rules,
            http,
            registry: crate::boxes::oci::Registry::with_signals(
                signals.clone(),
                fetch::retries_from_env(),
            ),
            catalogs,
            ui,
            signals,
            refresh,
        })
    }

    pub fn fetcher(&self) -> Fetcher<'_> {
        Fetcher {
            http: &self.http,
            registry: &self.registry,
            ui: self.ui,
            signals: &self.signals,
            retries: fetch::retries_from_env(),
        }
    }

    pub fn find(&self, box_ref: &str, arch: &str) -> Result<Found<'_>> {
        catalog::find(&self.catalogs, box_ref, arch)
    }

    /// Every box name a build can use: the catalogs' and those of KIWI's Python plugin
    /// (its configuration file, else its public boxes), sorted, without repeats. A broken
    /// plugin configuration contributes none (it is reported where it is used).
    pub fn known_boxes(&self) -> Vec<String> {
        let mut names: Vec<String> = catalog::known_boxes(&self.catalogs)
            .into_iter()
            .map(str::to_string)
            .collect();
        if let Ok((plugin, _)) = catalog::plugin_config::load() {
            names.extend(plugin.boxes.into_iter().map(|b| b.name));
        }
        names.sort();
        names.dedup();
        names
    }

    /// Whether something checked `age_secs` ago is due for a new check: always with
    /// `box update`, never with --no-update-check, else once per update interval.
    pub fn due(&self, age_secs: u64) -> Result<bool> {
        Ok(match self.refresh {
            Refresh::Now => true,
            Refresh::Never => false,
            Refresh::WhenDue => {
                age_secs >= catalog::update_check_interval(&self.catalogs)?.as_secs()
            }
        })
    }

    /// A box no catalog names may be one of KIWI's Python plugin (its configuration file,
    /// else its public boxes): its catalog entry is made from the server's files.
    fn add_plugin_box(&mut self, name: &str, arch: &str) -> Result<()> {
        if catalog::catalog_for(&self.catalogs, name).is_some() {
            return Ok(());
        }
        let interval = catalog::update_check_interval(&self.catalogs)?.as_secs();
        let refresh = self.refresh;
        let ui = self.ui;
        let found = catalog::plugin_config::catalog_for(
            name,
            arch,
            &self.http,
            &self.store.catalogs_dir(),
            |age| match refresh {
                Refresh::Now => true,
                Refresh::Never => false,
                Refresh::WhenDue => age >= interval,
            },
            |message| ui.warn(message),
        )?;
        self.catalogs.extend(found);
        Ok(())
    }

    /// The box for a build: pinned, else the newest at hand (saying so when the catalog
    /// has a newer one and `tell_newer`), fetched if needed, held until dropped.
    fn resolver<'a>(&'a self, interval_secs: u64) -> crate::boxes::oci::resolve::Resolver<'a> {
        crate::boxes::oci::resolve::Resolver {
            registry: &self.registry,
            cache_dir: self.store.catalogs_dir(),
            refresh: self.refresh,
            interval_secs,
            rules: &self.rules,
            ui: self.ui,
        }
    }

    /// A catalog box whose versions are the tags of an OCI repository (`oci = ...`): the
    /// pinned tag, else the newest, resolved into a catalog of its own under the box's name,
    /// each version named after its tag.
    pub fn add_catalog_oci_box(&mut self, box_ref: &str) -> Result<()> {
        let (name, pinned) = catalog::parse_box_ref(box_ref);
        let Some(repository) = catalog::catalog_for(&self.catalogs, name)
            .and_then(|c| c.file.boxes.get(name))
            .and_then(|e| e.oci.clone())
        else {
            return Ok(());
        };
        let repository = crate::boxes::reference::BoxReference::parse(&repository)?;
        let interval = catalog::update_check_interval(&self.catalogs)?.as_secs();
        let resolver = self.resolver(interval);
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
            for cached in self.store.all_cached() {
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
            self.catalogs.insert(0, found);
        }
        Ok(())
    }

    /// Resolves an `oci://` reference into a catalog of its own (kept first, so its name
    /// is found) and returns the box name to use; other references are returned as they are.
    pub fn add_oci_box(&mut self, box_ref: &str) -> Result<String> {
        if crate::boxes::oci::layout::is_layout(box_ref) {
            let layout = crate::boxes::oci::layout::Layout::parse(box_ref)?;
            let interval = catalog::update_check_interval(&self.catalogs)?.as_secs();
            let (found, name) = self.resolver(interval).layout_catalog(&layout)?;
            self.catalogs.insert(0, found);
            return Ok(name);
        }
        if !crate::boxes::reference::is_oci(box_ref) {
            return Ok(box_ref.to_string());
        }
        let reference = crate::boxes::reference::BoxReference::parse(box_ref)?;
        let interval = catalog::update_check_interval(&self.catalogs)?.as_secs();
        let (found, name) = self.resolver(interval).catalog(&reference)?;
        for warning in self.registry.warnings() {
            self.ui.warn(warning);
        }
        self.catalogs.insert(0, found);
        Ok(name)
    }

    /// Adds every registry box resolved before (kept under `catalogs/oci/`), so `box list`,
    /// `update` and `outdated` see them; tags are checked as the refresh policy says. One
    /// that fails (unreachable and never kept, refused by a trust rule) is a warning.
    pub fn add_kept_oci_boxes(&mut self) {
        let dir = self.store.catalogs_dir().join("oci");
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
            if let Err(e) = self.add_oci_box(&reference) {
                self.ui.warn(&format!("skipping {reference}: {e}"));
            }
        }
    }

    /// Resolves every catalog box kept in an OCI repository (for `box list`, `update`,
    /// `outdated`); one that fails is a warning.
    pub fn add_catalog_oci_boxes(&mut self) {
        let names: Vec<String> = catalog::known_boxes(&self.catalogs)
            .into_iter()
            .map(String::from)
            .collect();
        for name in names {
            if let Err(e) = self.add_catalog_oci_box(&name) {
                self.ui.warn(&format!("skipping box {name}: {e}"));
            }
        }
    }

    /// The box for a build, its files at hand (fetched if need be). With `container`, a
    /// box of KIWI's plugin that names a container image is resolved without its VM
    /// files: the image is what runs.
    pub fn ready(
        &mut self,
        box_ref: &str,
        arch: &str,
        tell_newer: bool,
        container: bool,
    ) -> Result<Ready> {
        let box_ref = &self.add_oci_box(box_ref)?;
        self.add_catalog_oci_box(box_ref)?;
        let name = catalog::parse_box_ref(box_ref).0;
        self.add_plugin_box(name, arch)?;
        if catalog::catalog_for(&self.catalogs, name).is_none() {
            return Err(catalog::unknown_box(name, &self.known_boxes()));
        }
        let found = self.find(box_ref, arch)?;
        let newest = found.newest();
        if container
            && newest.container.is_some()
            && found.entry.settings(newest).protocol == catalog::Protocol::KiwiBoxedPlugin
        {
            return Ok(store::image_only(&found, newest));
        }
        let (version, newer) = store::choose(&self.store, &found)?;
        if let (Some(newer), true) = (newer, tell_newer) {
            self.ui.warn(&format!(
                "box {} {} is available (this build uses {} from the cache); fetch it with 'boxbuild box update {}'",
                found.name, newer.version, version.version, found.name
            ));
        }
        store::provide(&self.store, &found, version, &self.fetcher())
    }
}
