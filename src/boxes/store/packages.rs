//! The package cache kept across builds, one per box and architecture:
//! `packages/NAME/ARCH/`, laid out as kiwi's shared cache dir (`apt-get/archives/*.deb`
//! for apt), so a directory of kiwi's own (`--shared-cache-dir`) serves as well.
//!
//! The box never works in it. The builder copies the packages in before kiwi runs and
//! the new ones out afterwards, each written under a dot-name and renamed into place
//! (boxes/debian/boxbuild-kiwi): a reader never sees half a package, builds of the same
//! box share the cache without a lock (two writers of one package rename complete,
//! equal files), and it works over every share backend and in a container alike.
//! Bounded by a size cap, trimmed oldest first after each build and by `box prune`.

use super::{Bucket, Store};
use crate::sys::error::{Context, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The cap per cache when `BOXBUILD_PACKAGE_CACHE_MAX` does not say.
pub const DEFAULT_CAP_MIB: u64 = 10 * 1024;
/// A dot-file (a package being copied out) older than this was left by a killed build.
const STALE_PART: Duration = Duration::from_secs(3600);

/// One box's package cache as found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageCache {
    pub name: String,
    pub arch: String,
    pub dir: PathBuf,
    pub files: u64,
    pub bytes: u64,
}

/// What trimming removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Trimmed {
    pub files: u64,
    pub bytes: u64,
}

/// The cap per cache in bytes: `$BOXBUILD_PACKAGE_CACHE_MAX` (e.g. `500M`, `20G`; a
/// bare number is GiB; `0` keeps nothing), else 10 GiB. Errors: a size that does not
/// parse.
pub fn cap(var: Option<String>) -> std::result::Result<u64, String> {
    let Some(text) = var.filter(|v| !v.trim().is_empty()) else {
        return Ok(DEFAULT_CAP_MIB << 20);
    };
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "g" | "gb" | "gib" => 30,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "t" | "tb" | "tib" => 40,
        _ => 64,
    };
    digits
        .parse::<u64>()
        .ok()
        .filter(|_| shift < 64)
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or_else(|| {
            format!("BOXBUILD_PACKAGE_CACHE_MAX: invalid size '{text}': use a number with a unit, e.g. 500M or 10G")
        })
}

impl Store {
    /// The package cache of box `name` for `arch`, created if missing.
    pub fn package_cache_dir(&self, name: &str, arch: &str) -> Result<PathBuf> {
        let dir = self.bucket(Bucket::Packages).join(name).join(arch);
        fs::create_dir_all(&dir).context(|| format!("cannot create {}", dir.display()))?;
        Ok(dir)
    }

    /// Every package cache, sorted by box and architecture.
    pub fn package_caches(&self) -> Vec<PackageCache> {
        let root = self.bucket(Bucket::Packages);
        let mut found = Vec::new();
        for name in super::subdirs(&root) {
            for arch in super::subdirs(&root.join(&name)) {
                let dir = root.join(&name).join(&arch);
                let files = files_under(&dir);
                found.push(PackageCache {
                    name: name.clone(),
                    arch,
                    files: files.len() as u64,
                    bytes: files.iter().map(|f| f.1).sum(),
                    dir,
                });
            }
        }
        found
    }
}

/// Every file under `dir`: path, size, modification time.
fn files_under(dir: &Path) -> Vec<(PathBuf, u64, SystemTime)> {
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return found;
    };
    for e in entries.flatten() {
        let Ok(meta) = e.path().symlink_metadata() else {
            continue;
        };
        if meta.is_dir() {
            found.extend(files_under(&e.path()));
        } else {
            let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            found.push((e.path(), meta.len(), mtime));
        }
    }
    found
}

/// Removes from the cache at `dir` what a killed build left half-written, then the
/// least recently used packages (oldest modification time: the builder touches each
/// package it reuses) until at most `cap` bytes are left. A build that is reading a
/// package removed meanwhile keeps reading its open file.
pub fn trim(dir: &Path, cap: u64, dry_run: bool, now: SystemTime) -> Trimmed {
    let mut trimmed = Trimmed::default();
    let mut remove = |path: &Path, size: u64| {
        if dry_run || fs::remove_file(path).is_ok() {
            trimmed.files += 1;
            trimmed.bytes += size;
        }
    };
    let mut kept = Vec::new();
    for (path, size, mtime) in files_under(dir) {
        let partial = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if partial {
            if now.duration_since(mtime).unwrap_or_default() > STALE_PART {
                remove(&path, size);
            }
            continue;
        }
        kept.push((path, size, mtime));
    }
    kept.sort_by(|a, b| a.2.cmp(&b.2).then_with(|| a.0.cmp(&b.0)));
    let mut total: u64 = kept.iter().map(|k| k.1).sum();
    for (path, size, _) in kept {
        if total <= cap {
            break;
        }
        remove(&path, size);
        total -= size;
    }
    trimmed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &Path, size: usize, age_s: u64) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, vec![0u8; size]).unwrap();
        let when = SystemTime::now() - Duration::from_secs(age_s);
        fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(when)
            .unwrap();
    }

    #[test]
    fn caches_per_box_and_arch_trimmed_oldest_first() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store {
            root: tmp.path().to_path_buf(),
        };
        let dir = store.package_cache_dir("debian", "x86_64").unwrap();
        assert_eq!(dir, tmp.path().join("packages/debian/x86_64"));
        let archives = dir.join("apt-get/archives");
        file(&archives.join("old_1_amd64.deb"), 100, 300);
        file(&archives.join("mid_1_amd64.deb"), 100, 200);
        file(&archives.join("new_1_amd64.deb"), 100, 10);
        file(&archives.join(".left_1_amd64.deb.part-7"), 50, 7200);
        file(&archives.join(".busy_1_amd64.deb.part-8"), 50, 5);
        let caches = store.package_caches();
        assert_eq!(caches.len(), 1);
        assert_eq!((caches[0].files, caches[0].bytes), (5, 400));
        let now = SystemTime::now();
        let dry = trim(&dir, 200, true, now);
        assert_eq!(
            dry,
            Trimmed {
                files: 2,
                bytes: 150
            }
        );
        assert!(archives.join("old_1_amd64.deb").exists());
        assert_eq!(trim(&dir, 200, false, now), dry);
        let mut left: Vec<_> = fs::read_dir(&archives)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                ".busy_1_amd64.deb.part-8",
                "mid_1_amd64.deb",
                "new_1_amd64.deb"
            ]
        );
    }

    #[test]
    fn the_cap_comes_from_the_environment() {
        assert_eq!(cap(None), Ok(10 << 30));
        assert_eq!(cap(Some("2G".into())), Ok(2 << 30));
        assert_eq!(cap(Some("0".into())), Ok(0));
        assert_eq!(cap(Some("20M".into())), Ok(20 << 20));
        assert!(cap(Some("lots".into()))
            .unwrap_err()
            .contains("BOXBUILD_PACKAGE_CACHE_MAX"));
    }
}
