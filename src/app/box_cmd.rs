//! `boxbuild box ...` (and `--list-boxes`): list, fetch, update, outdated, prune,
//! remove and verify boxes in the cache.

/// `println!` that ignores a stdout whose reader is gone (see `ui::say`).
macro_rules! say {
    ($($arg:tt)*) => {
        crate::sys::ui::say(&format!($($arg)*))
    };
}

use crate::boxes::catalog::{self, compare_versions, Refresh};
use crate::boxes::library::Library;
use crate::boxes::store::{self, lock, Cached, Key};
use crate::cli::BoxCommand;
use crate::sys::error::{Error, Result};
use crate::sys::signals::SignalWatch;
use crate::sys::ui::Ui;
use indicatif::HumanBytes;
use std::collections::BTreeMap;

/// Exit status of a `box` command that found something wrong (a damaged or busy box).
const FOUND_PROBLEMS: u8 = 1;

pub fn run(command: &BoxCommand, ui: Ui) -> Result<u8> {
    let signals = SignalWatch::install()?;
    let refresh = match command {
        BoxCommand::Update { .. } | BoxCommand::Outdated => Refresh::Now,
        BoxCommand::List
        | BoxCommand::Fetch { .. }
        | BoxCommand::Push { .. }
        | BoxCommand::Sign { .. } => Refresh::WhenDue,
        // These work on the cache alone.
        BoxCommand::Prune { .. }
        | BoxCommand::Remove { .. }
        | BoxCommand::Verify { .. }
        | BoxCommand::Cache { .. } => Refresh::Never,
    };
    let mut library = Library::open(ui, refresh, signals)?;
    if matches!(
        command,
        BoxCommand::List | BoxCommand::Update { .. } | BoxCommand::Outdated
    ) {
        library.add_known();
    }
    match command {
        BoxCommand::List => list(&library),
        BoxCommand::Fetch { box_ref, arch } => fetch(&mut library, box_ref, arch.as_deref()),
        BoxCommand::Push {
            box_ref,
            target,
            arch,
            sign_key,
            zstd,
            format,
        } => push(
            &mut library,
            box_ref,
            target,
            arch,
            sign_key.as_deref(),
            *zstd,
            match format {
                crate::cli::PushFormat::Box => crate::boxes::oci::push::Format::Box,
                crate::cli::PushFormat::Container => crate::boxes::oci::push::Format::Container,
            },
        ),
        BoxCommand::Sign { reference, key } => {
            let reference = crate::boxes::reference::BoxReference::parse(reference)?;
            let digest = crate::boxes::oci::push::sign(&library.registry, &reference, key)?;
            say!("signed {} ({digest})", reference.text);
            Ok(0)
        }
        BoxCommand::Update { names, arch } => update(&library, names, arch.as_deref()),
        BoxCommand::Outdated => outdated(&library),
        BoxCommand::Prune { dry_run } => prune(&library, *dry_run),
        BoxCommand::Remove { box_ref, arch } => remove(&library, box_ref, arch.as_deref()),
        BoxCommand::Verify { names } => verify(&library, names),
        BoxCommand::Cache { clear, names } => package_caches(&library, *clear, names),
    }
}

/// `box cache`: the package caches, their sizes and the cap; with `--clear` emptied.
fn package_caches(library: &Library, clear: bool, names: &[String]) -> Result<u8> {
    use crate::boxes::store::packages;
    let cap =
        packages::cap(std::env::var("BOXBUILD_PACKAGE_CACHE_MAX").ok()).map_err(Error::setup)?;
    let caches: Vec<_> = library
        .store
        .package_caches()
        .into_iter()
        .filter(|c| names.is_empty() || names.contains(&c.name))
        .collect();
    if clear {
        for cache in &caches {
            let gone = packages::trim(&cache.dir, 0, false, std::time::SystemTime::now());
            say!(
                "emptied the package cache of {} ({}): {} files, {}",
                cache.name,
                cache.arch,
                gone.files,
                HumanBytes(gone.bytes)
            );
        }
        return Ok(0);
    }
    let mut rows = vec![vec![
        "BOX".to_string(),
        "ARCH".into(),
        "FILES".into(),
        "SIZE".into(),
        "DIR".into(),
    ]];
    for c in &caches {
        rows.push(vec![
            c.name.clone(),
            c.arch.clone(),
            c.files.to_string(),
            HumanBytes(c.bytes).to_string(),
            c.dir.display().to_string(),
        ]);
    }
    print_table(&rows);
    say!(
        "total {}; each cache is kept under {} (BOXBUILD_PACKAGE_CACHE_MAX)",
        HumanBytes(caches.iter().map(|c| c.bytes).sum()),
        HumanBytes(cap)
    );
    Ok(0)
}

fn host_arch() -> &'static str {
    std::env::consts::ARCH
}

fn print_table(rows: &[Vec<String>]) {
    let columns = rows.first().map(Vec::len).unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            rows.iter()
                .map(|r| r.get(i).map_or(0, |cell| cell.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == columns {
                line.push_str(cell);
            } else {
                let w = widths.get(i).copied().unwrap_or(0);
                line.push_str(&format!("{cell:w$}  "));
            }
        }
        say!("{}", line.trim_end());
    }
}

/// Name, architectures, newest version and what is at hand, per box and architecture.
pub fn list(library: &Library) -> Result<u8> {
    let mut rows = vec![vec![
        "NAME".to_string(),
        "ARCH".into(),
        "NEWEST".into(),
        "CACHED".into(),
        "DESCRIPTION".into(),
    ]];
    for name in catalog::known_boxes(&library.catalogs) {
        let Some(entry) =
            catalog::catalog_for(&library.catalogs, name).and_then(|c| c.file.boxes.get(name))
        else {
            continue;
        };
        for arch in catalog::archs_of(entry) {
            let found = library.find(name, arch)?;
            let mut at_hand = Vec::new();
            for v in &found.versions {
                if let Some(local) = store::at_hand_kind(&library.store, &found, v)? {
                    at_hand.push(match local {
                        store::AtHand::Cached => v.version.clone(),
                        store::AtHand::InPlace => format!("{} (local)", v.version),
                    });
                }
            }
            rows.push(vec![
                name.to_string(),
                arch.to_string(),
                found.newest().version.clone(),
                if at_hand.is_empty() {
                    "-".into()
                } else {
                    at_hand.join(", ")
                },
                entry.description.clone(),
            ]);
        }
    }
    // Boxes of KIWI's Python plugin that no catalog names: their versions are found on
    // first use (docs/plugin-boxes.md).
    let (plugin, origin) = catalog::plugin_config::load()?;
    for b in &plugin.boxes {
        if catalog::catalog_for(&library.catalogs, &b.name).is_some() {
            continue;
        }
        for a in &b.arch {
            rows.push(vec![
                b.name.clone(),
                a.name.clone(),
                "(on use)".into(),
                "-".into(),
                format!("KIWI plugin box from {} ({origin})", a.source),
            ]);
        }
    }
    if rows.len() == 1 {
        say!("no boxes in any catalog; see docs/catalog.md");
        return Ok(0);
    }
    print_table(&rows);
    Ok(0)
}

fn fetch(library: &mut Library, box_ref: &str, arch: Option<&str>) -> Result<u8> {
    let arch = arch.unwrap_or(host_arch());
    let box_ref = library.resolve(box_ref, arch)?;
    let found = library.find(&box_ref, arch)?;
    let version = found.newest();
    let ready = store::provide(&library.store, &found, version, &library.fetcher())?;
    let key = Key::new(&found.name, &found.arch, &version.version);
    ready.tell_boot_kernel(library.ui);
    let state = if ready.fetched {
        "fetched"
    } else {
        "already at hand"
    };
    library.ui.info(&format!(
        "box {key}: {state} ({})",
        ready.kernel.parent().unwrap_or(&ready.kernel).display()
    ));
    Ok(0)
}

/// `box push`: every architecture of NAME@VERSION (fetched if needed) as one index.
fn push(
    library: &mut Library,
    box_ref: &str,
    target: &str,
    archs: &[String],
    sign_key: Option<&std::path::Path>,
    zstd: bool,
    format: crate::boxes::oci::push::Format,
) -> Result<u8> {
    let target = crate::boxes::reference::BoxReference::parse(target)?;
    // A registry or layout box is copied as it is: its own version, its files mounted
    // from its repository where the registry is the same.
    let box_ref = if crate::boxes::reference::is_oci(box_ref)
        || crate::boxes::oci::layout::is_layout(box_ref)
    {
        let name = library.resolve(box_ref, host_arch())?;
        let version = catalog::catalog_for(&library.catalogs, &name)
            .and_then(|c| c.file.boxes.get(&name))
            .and_then(|e| e.versions.first())
            .map(|v| v.version.clone())
            .unwrap_or_default();
        format!("{name}@{version}")
    } else {
        if catalog::catalog_for(&library.catalogs, catalog::parse_box_ref(box_ref).0).is_none() {
            // A registry box by its cache name.
            library.add_known();
        }
        box_ref.to_string()
    };
    let box_ref = box_ref.as_str();
    let library = &*library;
    let (name, Some(version)) = catalog::parse_box_ref(box_ref) else {
        return Err(Error::setup(format!(
            "'{box_ref}': push needs NAME@VERSION, e.g. tiny@1.0 (see 'boxbuild box list'), or an oci:// reference"
        )));
    };
    let entry = catalog::catalog_for(&library.catalogs, name)
        .and_then(|c| c.file.boxes.get(name))
        .ok_or_else(|| {
            let known: Vec<String> = catalog::known_boxes(&library.catalogs)
                .into_iter()
                .map(String::from)
                .collect();
            catalog::unknown_box(name, &known)
        })?;
    let mut boxes = Vec::new();
    for arch in catalog::archs_of(entry) {
        if !archs.is_empty() && !archs.iter().any(|a| a == arch) {
            continue;
        }
        let found = library.find(box_ref, arch);
        let Ok(found) = found else {
            continue; // This version does not exist for this architecture.
        };
        let v = found.newest();
        let ready = store::provide(&library.store, &found, v, &library.fetcher())?;
        let config = crate::boxes::oci::format::BoxConfig::from_catalog(name, found.entry, v);
        boxes.push(crate::boxes::oci::push::ArchBox { ready, config });
    }
    if boxes.is_empty() {
        return Err(Error::setup(format!(
            "box '{name}' has no version {version}{}",
            if archs.is_empty() {
                String::new()
            } else {
                format!(" for {}", archs.join(", "))
            }
        )));
    }
    let options = crate::boxes::oci::push::Options {
        format,
        sign_key,
        zstd_disk: zstd,
        scratch: library.store.bucket(store::Bucket::Staging),
    };
    let digest =
        crate::boxes::oci::push::push(&library.registry, library.ui, &target, &boxes, &options)?;
    say!(
        "pushed {name}@{version} ({}) to {} as {digest}{}{}",
        boxes
            .iter()
            .map(|b| b.config.arch.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        target.text,
        if format == crate::boxes::oci::push::Format::Container {
            ", a container image"
        } else {
            ""
        },
        if sign_key.is_some() { ", signed" } else { "" }
    );
    Ok(0)
}

/// (name, arch) pairs with at least one cached version, and the cached versions.
fn cached_by_box(library: &Library) -> BTreeMap<(String, String), Vec<Cached>> {
    let mut groups: BTreeMap<(String, String), Vec<Cached>> = BTreeMap::new();
    for c in library.store.all_cached() {
        groups
            .entry((c.key.name.clone(), c.key.arch.clone()))
            .or_default()
            .push(c);
    }
    groups
}

fn update(library: &Library, names: &[String], arch: Option<&str>) -> Result<u8> {
    let cached = cached_by_box(library);
    let mut targets: Vec<(String, String)> = Vec::new();
    if names.is_empty() {
        targets.extend(
            cached
                .keys()
                .filter(|(_, a)| arch.is_none_or(|want| want == a))
                .cloned(),
        );
        if targets.is_empty() {
            library
                .ui
                .info("no boxes in the cache; fetch one with 'boxbuild box fetch NAME'");
        }
    }
    for name in names {
        let mut archs: Vec<String> = cached
            .keys()
            .filter(|(n, a)| n == name && arch.is_none_or(|want| want == a))
            .map(|(_, a)| a.clone())
            .collect();
        if archs.is_empty() {
            archs.push(arch.unwrap_or(host_arch()).to_string());
        }
        targets.extend(archs.into_iter().map(|a| (name.clone(), a)));
    }
    for (name, arch) in targets {
        let found = match library.find(&name, &arch) {
            Ok(found) => found,
            Err(e) if !names.contains(&name) => {
                library.ui.warn(&format!("skipping cached box {name}: {e}"));
                continue;
            }
            Err(e) => return Err(e),
        };
        let newest = found.newest();
        let key = Key::new(&name, &arch, &newest.version);
        let before = cached
            .get(&(name.clone(), arch.clone()))
            .and_then(|v| v.last())
            .map(|c| c.key.version.clone());
        let ready = store::provide(&library.store, &found, newest, &library.fetcher())?;
        match (ready.fetched, before) {
            (false, _) => say!("box {key}: up to date"),
            (true, Some(old)) => say!("box {key}: updated from {old}"),
            (true, None) => say!("box {key}: fetched"),
        }
    }
    Ok(0)
}

fn outdated(library: &Library) -> Result<u8> {
    let mut rows = vec![vec![
        "NAME".to_string(),
        "ARCH".into(),
        "CACHED".into(),
        "AVAILABLE".into(),
    ]];
    for ((name, arch), versions) in cached_by_box(library) {
        let Ok(found) = library.find(&name, &arch) else {
            continue;
        };
        let Some(newest_cached) = versions.last().map(|c| &c.key.version) else {
            continue;
        };
        let newest = &found.newest().version;
        if compare_versions(newest, newest_cached).is_gt() {
            rows.push(vec![name, arch, newest_cached.clone(), newest.clone()]);
        }
    }
    if rows.len() == 1 {
        say!("all cached boxes are up to date");
    } else {
        print_table(&rows);
    }
    Ok(0)
}

/// Deletes (or with `dry_run` lists) the extracted kernels nothing refers to once the
/// versions in `gone` are removed; returns the bytes freed.
fn prune_kernels(library: &Library, gone: &[Key], dry_run: bool) -> Result<u64> {
    let mut freed = 0;
    for k in library
        .store
        .prune_kernels(&library.catalogs, gone, dry_run)?
    {
        let what = format!(
            "the uncompressed kernel of bzImage {}",
            k.sha256.get(..16).unwrap_or(&k.sha256)
        );
        if dry_run {
            println!("would remove {what} ({})", HumanBytes(k.bytes));
        } else {
            println!("removed {what} ({})", HumanBytes(k.bytes));
            freed += k.bytes;
        }
    }
    Ok(freed)
}

fn prune(library: &Library, dry_run: bool) -> Result<u8> {
    // Every bucket of the cache, and what pruning does with it (-v).
    for bucket in store::Bucket::ALL {
        let dir = library.store.bucket(bucket);
        library
            .ui
            .detail(&format!("{}: {}", dir.display(), bucket.pruned()));
    }
    let mut freed = 0u64;
    let mut kept = Vec::new();
    let mut gone = Vec::new();
    for (_, mut versions) in cached_by_box(library) {
        let Some(newest) = versions.pop() else {
            continue;
        };
        say!("keeping box {}", newest.key);
        kept.push(newest.key.clone());
        for old in versions {
            let size = old.bytes();
            if dry_run {
                say!("would remove box {} ({})", old.key, HumanBytes(size));
                gone.push(old.key.clone());
            } else if library.store.remove(&old.key)? {
                say!("removed box {} ({})", old.key, HumanBytes(size));
                freed += size;
            } else {
                say!("kept box {}: a running build uses it", old.key);
            }
        }
    }
    // Persistent layers (--no-snapshot) stay only for the versions kept in the cache.
    for layer in library.store.layers() {
        if kept.contains(&layer.key) {
            say!("keeping the persistent layer of {}", layer.key);
        } else if dry_run {
            say!(
                "would remove the persistent layer of {} ({})",
                layer.key,
                HumanBytes(layer.bytes)
            );
        } else if library.store.remove_layer(&layer.key)? {
            say!(
                "removed the persistent layer of {} ({})",
                layer.key,
                HumanBytes(layer.bytes)
            );
            freed += layer.bytes;
        } else {
            say!(
                "kept the persistent layer of {}: a running build uses it",
                layer.key
            );
        }
    }
    freed += prune_kernels(library, &gone, dry_run)?;
    // Root file systems unpacked for --container whose box disk is gone or changed.
    for stale in crate::runtime::container::rootfs::prune(library.store.root(), dry_run)? {
        let what = format!("the container root file system {}", stale.dir.display());
        if stale.busy {
            say!("kept {what}: a running build uses it");
        } else if dry_run {
            say!("would remove {what} ({})", HumanBytes(stale.bytes));
        } else {
            say!("removed {what} ({})", HumanBytes(stale.bytes));
            freed += stale.bytes;
        }
    }
    // Package caches: each trimmed to the cap.
    let cap = crate::boxes::store::packages::cap(std::env::var("BOXBUILD_PACKAGE_CACHE_MAX").ok())
        .map_err(Error::setup)?;
    for cache in library.store.package_caches() {
        let gone = crate::boxes::store::packages::trim(
            &cache.dir,
            cap,
            dry_run,
            std::time::SystemTime::now(),
        );
        if gone.files > 0 {
            say!(
                "{} {} packages from the cache of {} ({}): {}",
                if dry_run { "would remove" } else { "removed" },
                gone.files,
                cache.name,
                cache.arch,
                HumanBytes(gone.bytes)
            );
            freed += gone.bytes;
        }
    }
    if !dry_run {
        freed += library.store.clean_tmp()?;
        say!("freed {}", HumanBytes(freed));
    }
    Ok(0)
}

fn remove(library: &Library, box_ref: &str, arch: Option<&str>) -> Result<u8> {
    let (name, version) = catalog::parse_box_ref(box_ref);
    let chosen: Vec<Cached> = library
        .store
        .all_cached()
        .into_iter()
        .filter(|c| c.key.name == name)
        .filter(|c| version.is_none_or(|v| v == c.key.version))
        .filter(|c| arch.is_none_or(|a| a == c.key.arch))
        .collect();
    let layers: Vec<_> = library
        .store
        .layers()
        .into_iter()
        .filter(|l| l.key.name == name)
        .filter(|l| version.is_none_or(|v| v == l.key.version))
        .filter(|l| arch.is_none_or(|a| a == l.key.arch))
        .collect();
    let mut busy = false;
    for layer in &layers {
        if library.store.remove_layer(&layer.key)? {
            say!("removed the persistent layer of {}", layer.key);
        } else {
            library.ui.error(&format!(
                "the persistent layer of {} is in use by a running build; not removed",
                layer.key
            ));
            busy = true;
        }
    }
    if chosen.is_empty() && !layers.is_empty() {
        return Ok(if busy { FOUND_PROBLEMS } else { 0 });
    }
    if chosen.is_empty() {
        return Err(Error::setup(format!(
            "box {box_ref} is not in the cache ({}); see 'boxbuild box list'",
            library.store.root().display()
        )));
    }
    for c in chosen {
        if library.store.remove(&c.key)? {
            say!("removed box {} ({})", c.key, HumanBytes(c.bytes()));
        } else {
            library.ui.error(&format!(
                "box {} is in use by a running build; not removed",
                c.key
            ));
            busy = true;
        }
    }
    prune_kernels(library, &[], false)?;
    Ok(if busy { FOUND_PROBLEMS } else { 0 })
}

/// Re-hashes cached boxes; a damaged one is removed so the next build fetches it anew.
fn verify(library: &Library, names: &[String]) -> Result<u8> {
    let mut problems = false;
    let chosen: Vec<Cached> = library
        .store
        .all_cached()
        .into_iter()
        .filter(|c| names.is_empty() || names.contains(&c.key.name))
        .collect();
    if chosen.is_empty() {
        say!("no cached boxes to verify");
    }
    for c in chosen {
        let lock_path = library.store.lock_path(&c.key)?;
        let Some(held) = lock::try_acquire(&lock_path, lock::Mode::Shared)? else {
            say!("busy box {}: being fetched, not verified", c.key);
            continue;
        };
        let mut damage = Vec::new();
        for f in &c.manifest.files {
            let path = c.dir.join(&f.file);
            let expected = f.file_sha256.as_ref().unwrap_or(&f.sha256);
            match crate::sys::digest::sha256_file(&path) {
                Ok(digest) if &digest == expected => {}
                Ok(digest) => damage.push(format!(
                    "{}: sha256 {digest}, expected {expected}",
                    f.role.name(),
                )),
                Err(e) => damage.push(format!("{}: {e}", f.role.name())),
            }
        }
        drop(held);
        if damage.is_empty() {
            say!("ok box {}", c.key);
            continue;
        }
        problems = true;
        say!("BAD box {}: {}", c.key, damage.join("; "));
        if library.store.remove(&c.key)? {
            say!("removed box {}; the next build fetches it again", c.key);
        } else {
            say!(
                "box {} is in use by a running build; remove it with 'boxbuild box remove {}@{}' later",
                c.key, c.key.name, c.key.version
            );
        }
    }
    Ok(if problems { FOUND_PROBLEMS } else { 0 })
}
