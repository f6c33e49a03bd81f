//! The box cache. Its folders are the `Bucket`s, named here and nowhere else (as uv names
//! its cache buckets); docs/cache.md describes each.
//!
//! A version directory appears by one rename, manifest included, so whatever is under
//! `boxes/` is complete and was verified when it was fetched; a hit costs a few stat
//! calls and a small JSON read, never a hash of the box.

pub mod kernel;
mod kernels;
mod layers;
pub mod lock;
pub mod overlay;
pub mod packages;
mod provide;

pub use layers::LayerState;
pub use provide::{at_hand_kind, choose, image_only, provide, AtHand, ReadyBox};

use crate::boxes::catalog::{compare_versions, Role};
use crate::sys::error::{Context, Error, Result};
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::{Path, PathBuf};

const MANIFEST: &str = "manifest.json";
const MANIFEST_FORMAT: u32 = 1;

/// The cache's folders, each with one job. Every path under the cache root starts with
/// one of these (`Store::bucket`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    /// `boxes/NAME/ARCH/VERSION/`: complete, verified box versions.
    Boxes,
    /// `catalogs/`: copies of remote catalogs, entries made for the plugin's boxes, and
    /// (`catalogs/oci/`) what resolving registry boxes found.
    Catalogs,
    /// `kernels/`: uncompressed kernels taken out of x86 bzImages.
    Kernels,
    /// `layers/NAME/ARCH/VERSION/`: `--no-snapshot`'s persistent layers.
    Layers,
    /// `rootfs/`: box disks unpacked into directories for `--container`.
    Rootfs,
    /// `images/`: when each container image of a plugin box was last pulled.
    Images,
    /// `packages/NAME/ARCH/`: packages kept across builds, per box (`packages`).
    Packages,
    /// `hints/`: marks of one-time hints already given.
    Hints,
    /// `locks/`: one lock file per entry of the other buckets.
    Locks,
    /// `tmp/staging/`: downloads in progress.
    Staging,
    /// `tmp/trash/`: entries being deleted.
    Trash,
}

impl Bucket {
    pub const ALL: [Bucket; 11] = [
        Bucket::Boxes,
        Bucket::Catalogs,
        Bucket::Kernels,
        Bucket::Layers,
        Bucket::Rootfs,
        Bucket::Images,
        Bucket::Packages,
        Bucket::Hints,
        Bucket::Locks,
        Bucket::Staging,
        Bucket::Trash,
    ];

    /// The folder's path under the cache root.
    pub fn dir(self) -> &'static str {
        match self {
            Bucket::Boxes => "boxes",
            Bucket::Catalogs => "catalogs",
            Bucket::Kernels => "kernels",
            Bucket::Layers => "layers",
            Bucket::Rootfs => "rootfs",
            Bucket::Images => "images",
            Bucket::Packages => "packages",
            Bucket::Hints => "hints",
            Bucket::Locks => "locks",
            Bucket::Staging => "tmp/staging",
            Bucket::Trash => "tmp/trash",
        }
    }

    /// What `box prune` does with the bucket (also in docs/cache.md).
    pub fn pruned(self) -> &'static str {
        match self {
            Bucket::Boxes => "all but the newest version of each box, unless a build holds one",
            Bucket::Catalogs => "kept: small, and refreshed by the update check",
            Bucket::Kernels => "kernels of box versions removed",
            Bucket::Layers => "layers of box versions removed",
            Bucket::Rootfs => "roots whose disk is gone or changed, unless a build holds one",
            Bucket::Images => "kept: a few bytes per image; podman owns the images",
            Bucket::Packages => {
                "trimmed to the size cap, least recently used first; partial copies of killed builds removed"
            }
            Bucket::Hints => "kept: a few bytes",
            Bucket::Locks => "kept: empty files, held by builds",
            Bucket::Staging => "partial downloads of versions removed",
            Bucket::Trash => "emptied",
        }
    }
}

/// Names one cache entry.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    pub name: String,
    pub arch: String,
    pub version: String,
}

impl Key {
    pub fn new(name: &str, arch: &str, version: &str) -> Key {
        Key {
            name: name.into(),
            arch: arch.into(),
            version: version.into(),
        }
    }

    /// `NAME@VERSION-ARCH`, the flat form used for locks and staging.
    pub(super) fn flat(&self) -> String {
        format!("{}@{}-{}", self.name, self.version, self.arch)
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} ({})", self.name, self.version, self.arch)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub name: String,
    pub arch: String,
    pub version: String,
    /// When the version was installed (seconds since the epoch).
    pub fetched: u64,
    pub files: Vec<ManifestFile>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManifestFile {
    pub role: Role,
    /// File name inside the version directory.
    pub file: String,
    pub size: u64,
    /// The digest of what was fetched (for a member of an archive: the archive's).
    pub sha256: String,
    pub url: String,
    /// For a file taken out of a fetched archive: the member's name pattern and the
    /// digest of the file itself, which `box verify` checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_sha256: Option<String>,
}

impl Manifest {
    pub fn file(&self, role: Role) -> Option<&ManifestFile> {
        self.files.iter().find(|f| f.role == role)
    }
}

/// A cached version as found on disk.
#[derive(Debug, Clone)]
pub struct Cached {
    pub key: Key,
    pub dir: PathBuf,
    pub manifest: Manifest,
}

impl Cached {
    pub fn bytes(&self) -> u64 {
        self.manifest.files.iter().map(|f| f.size).sum()
    }
}

pub struct Store {
    root: PathBuf,
}

impl Store {
    /// `$BOXBUILD_CACHE_DIR`, else the Python plugin's `$KIWI_BOXED_CACHE_DIR`, else the
    /// user's cache dir (`$XDG_CACHE_HOME/boxbuild`).
    pub fn open() -> Result<Store> {
        let chosen = ["BOXBUILD_CACHE_DIR", "KIWI_BOXED_CACHE_DIR"]
            .iter()
            .find_map(|name| std::env::var_os(name).filter(|dir| !dir.is_empty()));
        let root = match chosen {
            Some(dir) => PathBuf::from(dir),
            _ => dirs::cache_dir()
                .map(|d| d.join("boxbuild"))
                .ok_or_else(|| {
                    Error::setup("cannot tell where the cache goes: set BOXBUILD_CACHE_DIR or HOME")
                })?,
        };
        Ok(Store { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The folder of `bucket` (not created).
    pub fn bucket(&self, bucket: Bucket) -> PathBuf {
        self.root.join(bucket.dir())
    }

    pub fn catalogs_dir(&self) -> PathBuf {
        self.bucket(Bucket::Catalogs)
    }

    pub fn entry_dir(&self, key: &Key) -> PathBuf {
        self.bucket(Bucket::Boxes)
            .join(&key.name)
            .join(&key.arch)
            .join(&key.version)
    }

    fn staging_dir(&self, key: &Key) -> PathBuf {
        self.bucket(Bucket::Staging).join(key.flat())
    }

    pub fn lock_path(&self, key: &Key) -> Result<PathBuf> {
        let dir = self.bucket(Bucket::Locks);
        fs::create_dir_all(&dir).context(|| format!("cannot create {}", dir.display()))?;
        Ok(dir.join(format!("{}.lock", key.flat())))
    }

    /// The installed version, if any (one small read).
    pub fn cached(&self, key: &Key) -> Option<Cached> {
        let dir = self.entry_dir(key);
        let manifest: Manifest =
            serde_json::from_slice(&fs::read(dir.join(MANIFEST)).ok()?).ok()?;
        (manifest.format == MANIFEST_FORMAT).then(|| Cached {
            key: key.clone(),
            dir,
            manifest,
        })
    }

    /// Every installed version, sorted by name, arch, then version (oldest first).
    pub fn all_cached(&self) -> Vec<Cached> {
        let mut found = Vec::new();
        let boxes = self.bucket(Bucket::Boxes);
        for name in subdirs(&boxes) {
            for arch in subdirs(&boxes.join(&name)) {
                for version in subdirs(&boxes.join(&name).join(&arch)) {
                    if let Some(c) = self.cached(&Key::new(&name, &arch, &version)) {
                        found.push(c);
                    }
                }
            }
        }
        found.sort_by(|a, b| {
            (&a.key.name, &a.key.arch)
                .cmp(&(&b.key.name, &b.key.arch))
                .then_with(|| compare_versions(&a.key.version, &b.key.version))
        });
        found
    }

    /// Moves a directory out of sight with one rename, then deletes it.
    fn discard_dir(&self, dir: &Path) -> Result<()> {
        if !dir.exists() {
            return Ok(());
        }
        let trash = self.bucket(Bucket::Trash);
        fs::create_dir_all(&trash).context(|| format!("cannot create {}", trash.display()))?;
        let holder = tempfile::Builder::new()
            .prefix("gone-")
            .tempdir_in(&trash)
            .context(|| format!("cannot create a directory in {}", trash.display()))?;
        let moved = holder.path().join("entry");
        fs::rename(dir, &moved).context(|| format!("cannot remove {}", dir.display()))?;
        make_writable(&moved);
        drop(holder); // Deletes what was moved.
        Ok(())
    }

    /// Removes one version unless a build uses it; Ok(false) when it is in use.
    pub fn remove(&self, key: &Key) -> Result<bool> {
        let Some(_lock) = lock::try_acquire(&self.lock_path(key)?, lock::Mode::Exclusive)? else {
            return Ok(false);
        };
        self.discard_dir(&self.entry_dir(key))?;
        let version_parent = self.entry_dir(key);
        // Empty NAME/ARCH and NAME directories go too.
        for dir in version_parent.ancestors().skip(1).take(2) {
            let _ = fs::remove_dir(dir);
        }
        Ok(true)
    }

    /// Partial downloads and leftovers of deletions nobody is working on.
    pub fn clean_tmp(&self) -> Result<u64> {
        let mut freed = 0;
        let staging = self.bucket(Bucket::Staging);
        for flat in subdirs(&staging) {
            let lock_path = self.bucket(Bucket::Locks).join(format!("{flat}.lock"));
            if let Some(_lock) = lock::try_acquire(&lock_path, lock::Mode::Exclusive)? {
                let dir = staging.join(&flat);
                freed += du(&dir);
                self.discard_dir(&dir)?;
            }
        }
        let trash = self.bucket(Bucket::Trash);
        for name in subdirs(&trash) {
            let dir = trash.join(name);
            freed += du(&dir);
            make_writable(&dir);
            let _ = fs::remove_dir_all(&dir);
        }
        Ok(freed)
    }
}

pub(super) fn subdirs(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Bytes under a directory (for prune's report).
pub(crate) fn du(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => du(&e.path()),
            _ => e.metadata().map(|m| m.len()).unwrap_or(0),
        })
        .sum()
}

/// Cached files are read-only; their directories must be writable to be deleted.
fn make_writable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o755));
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                make_writable(&e.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bucket_is_documented_with_its_prune_rule() {
        let doc =
            fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/cache.md")).unwrap();
        for bucket in Bucket::ALL {
            let row = doc
                .lines()
                .find(|l| l.starts_with(&format!("| `{}/", bucket.dir())))
                .unwrap_or_else(|| panic!("docs/cache.md has no row for {}/", bucket.dir()));
            assert!(row.contains(bucket.pruned()), "{row}");
        }
    }

    fn store(dir: &Path) -> Store {
        Store {
            root: dir.to_path_buf(),
        }
    }

    fn install(store: &Store, key: &Key) {
        let dir = store.entry_dir(key);
        fs::create_dir_all(&dir).unwrap();
        let manifest = Manifest {
            format: MANIFEST_FORMAT,
            name: key.name.clone(),
            arch: key.arch.clone(),
            version: key.version.clone(),
            fetched: 0,
            files: vec![],
        };
        fs::write(dir.join(MANIFEST), serde_json::to_vec(&manifest).unwrap()).unwrap();
    }

    #[test]
    fn lists_versions_in_order_and_ignores_incomplete_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let s = store(tmp.path());
        install(&s, &Key::new("b", "x86_64", "1.10"));
        install(&s, &Key::new("b", "x86_64", "1.9"));
        install(&s, &Key::new("a", "aarch64", "1"));
        fs::create_dir_all(s.entry_dir(&Key::new("a", "aarch64", "2"))).unwrap();
        let keys: Vec<String> = s.all_cached().iter().map(|c| c.key.to_string()).collect();
        assert_eq!(keys, ["a 1 (aarch64)", "b 1.9 (x86_64)", "b 1.10 (x86_64)"]);
    }

    #[test]
    fn remove_refuses_an_entry_in_use() {
        let tmp = tempfile::tempdir().unwrap();
        let s = store(tmp.path());
        let key = Key::new("b", "x86_64", "1");
        install(&s, &key);
        let held = lock::try_acquire(&s.lock_path(&key).unwrap(), lock::Mode::Shared).unwrap();
        assert!(!s.remove(&key).unwrap());
        assert!(s.cached(&key).is_some());
        drop(held);
        assert!(s.remove(&key).unwrap());
        assert!(s.cached(&key).is_none());
        assert!(!tmp.path().join("boxes/b").exists());
    }
}
