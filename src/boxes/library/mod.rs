//! The catalogs and the cache together: a box reference goes in, a ready box on disk
//! comes out (`ready`). Where boxes come from is one module each, behind one small
//! interface (`BoxSource`), listed in `SOURCES` in the order a reference passes through
//! them: a box image's files in a directory (`dir`), an OCI layout (`layout`), a registry
//! (`registry`), a catalog box kept in an OCI repository (`repository`), a box of KIWI's
//! Python plugin (`plugin`); the catalogs
//! themselves need no step. A new source is one new module and one line in `SOURCES`.

mod dir;
mod layout;
mod plugin;
mod registry;
mod repository;

use crate::boxes::catalog::{self, Catalog, Found, LoadPolicy, Refresh};
use crate::boxes::fetch::{self, http::Http, Fetcher};
use crate::boxes::store::{self, ReadyBox, Store};
use crate::sys::error::Result;
use crate::sys::signals::SignalWatch;
use crate::sys::ui::Ui;

/// One place boxes come from.
trait BoxSource {
    /// Adds what `reference` names, if it is this source's, to `library`'s catalogs
    /// (searched first) and returns the reference to look up: `NAME[@VERSION]`, or
    /// `reference` itself when it is not this source's. Errors: one line naming the
    /// reference (not found, refused, unsigned, not a box).
    fn resolve(&self, library: &mut Library, reference: &str, arch: &str) -> Result<String>;

    /// Adds every box of this source known without being asked; failures are warnings.
    fn add_known(&self, _library: &mut Library) {}
}

/// The sources, in the order a reference passes through them.
const SOURCES: [&dyn BoxSource; 5] = [
    &dir::Dir,
    &layout::Layout,
    &registry::Registry,
    &repository::Repository,
    &plugin::Plugin,
];

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
        Fetcher::new(&self.http, &self.registry, self.ui, &self.signals)
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

    /// Passes `box_ref` through every source in turn (`SOURCES`); each adds what it knows
    /// of the reference to the catalogs, searched first, and hands on the reference to
    /// look up (`NAME[@VERSION]`). Errors: the first source's that fails.
    pub fn resolve(&mut self, box_ref: &str, arch: &str) -> Result<String> {
        let mut reference = box_ref.to_string();
        for source in SOURCES {
            reference = source.resolve(self, &reference, arch)?;
        }
        Ok(reference)
    }

    /// Adds every box each source knows without being asked (for `box list`, `update`,
    /// `outdated`); one that fails is a warning.
    pub fn add_known(&mut self) {
        for source in SOURCES {
            source.add_known(self);
        }
    }

    /// The resolver of registry and layout boxes, with this library's settings.
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

    /// The box for a build, its files at hand (fetched if need be). With `container`, a
    /// box of KIWI's plugin that names a container image is resolved without its VM
    /// files: the image is what runs.
    pub fn ready(
        &mut self,
        box_ref: &str,
        arch: &str,
        tell_newer: bool,
        container: bool,
    ) -> Result<ReadyBox> {
        let box_ref = &self.resolve(box_ref, arch)?;
        let name = catalog::parse_box_ref(box_ref).0;
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
