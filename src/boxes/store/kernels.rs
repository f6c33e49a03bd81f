//! Uncompressed kernels taken out of x86 boxes' bzImages (vm::kernel), kept in the cache
//! so that every x86_64 box boots through PVH:
//!
//! ```text
//! ROOT/kernels/SHA256.vmlinux     the ELF inside the bzImage whose sha256 is SHA256
//! ROOT/kernels/SHA256.keep        that bzImage is booted as it is; the file says why
//! ROOT/kernels/paths/KEY.json     the sha256 of an in-place kernel the catalog gives none for
//! ROOT/locks/kernel-SHA256.lock   held shared by builds booting it, exclusive to delete it
//! ```
//!
//! Files are named by the digest of the bzImage they come from (the catalog's or the
//! manifest's, so a hit costs one `stat`), written under a temporary name and renamed
//! into place, so parallel builds may extract the same kernel and readers see all of it
//! or nothing. `box prune` and `box remove` delete those no cached version and no in-place
//! box of a catalog refers to any more.

use super::lock::{self, EntryLock, Mode};
use super::{Key, Store};
use crate::boxes::catalog::{Catalog, Location};
use crate::boxes::store::kernel;
use crate::sys::error::{Context, Error, Result};
use crate::sys::signals::SignalWatch;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The architecture whose bzImages are unpacked. An aarch64 `Image.gz` is unpacked by
/// QEMU on the host in a fraction of a second, so doing it ahead gains nothing
/// (docs/booting.md).
const ARCH: &str = "x86_64";

/// The first line of a `.keep` file: a verdict of another extractor (one that knows
/// fewer formats, say) is not taken.
const VERDICT: &str = "kept by extractor 1\n";

/// Temporary files in `kernels/` older than this are leftovers of an interrupted
/// extraction; prune deletes them.
const STALE_TEMP: Duration = Duration::from_secs(3600);

/// Which file a box boots from.
#[derive(Debug)]
pub enum BootKernel {
    /// The box's own kernel file; the reason, for `-v`.
    AsIs(String),
    /// The box's own kernel file, because the cache could not hold the extracted one;
    /// the reason, worth a warning.
    Unavailable(String),
    /// The uncompressed kernel, extracted by this call in the time given.
    Extracted(PathBuf, Duration),
    /// The uncompressed kernel, extracted by an earlier run.
    Reused(PathBuf),
}

/// The kernel a box boots, and the lock that keeps `box prune` from deleting it while
/// the box runs.
#[derive(Debug)]
pub struct Boot {
    pub kernel: BootKernel,
    pub _lock: Option<EntryLock>,
}

impl Boot {
    /// The box's own kernel file, for `reason`.
    pub fn as_is(reason: impl Into<String>) -> Boot {
        Boot {
            kernel: BootKernel::AsIs(reason.into()),
            _lock: None,
        }
    }
}

/// The sha256 of an in-place kernel file, as last computed, with what the file looked like.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
struct PathRecord {
    path: PathBuf,
    size: u64,
    mtime_ns: i128,
    ino: u64,
    sha256: String,
}

impl PathRecord {
    fn matches(&self, path: &Path, meta: &fs::Metadata) -> bool {
        self.path == path
            && self.size == meta.len()
            && self.mtime_ns == mtime_ns(meta)
            && self.ino == meta.ino()
    }
}

fn mtime_ns(meta: &fs::Metadata) -> i128 {
    meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A kernel file found in `kernels/`, for pruning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKernel {
    /// The sha256 of the bzImage it belongs to.
    pub sha256: String,
    /// Bytes on disk.
    pub bytes: u64,
}

impl Store {
    fn kernels_dir(&self) -> PathBuf {
        self.bucket(super::Bucket::Kernels)
    }

    fn kernel_lock(&self, sha256: &str) -> Result<PathBuf> {
        let dir = self.bucket(super::Bucket::Locks);
        fs::create_dir_all(&dir).context(|| format!("cannot create {}", dir.display()))?;
        Ok(dir.join(format!("kernel-{sha256}.lock")))
    }

    fn path_record_file(&self, path: &Path) -> PathBuf {
        let key = hex(&Sha256::digest(path.as_os_str().as_encoded_bytes())[..16]);
        self.kernels_dir().join("paths").join(format!("{key}.json"))
    }

    /// The recorded sha256 of an in-place file, if the file is unchanged since.
    fn recorded_sha256(&self, path: &Path) -> Option<String> {
        let path = path.canonicalize().ok()?;
        let meta = fs::metadata(&path).ok()?;
        let record: PathRecord =
            serde_json::from_slice(&fs::read(self.path_record_file(&path)).ok()?).ok()?;
        record.matches(&path, &meta).then_some(record.sha256)
    }

    fn record_sha256(&self, path: &Path, meta: &fs::Metadata, sha256: &str) -> Result<()> {
        let path = path
            .canonicalize()
            .context(|| format!("cannot resolve {}", path.display()))?;
        let record = PathRecord {
            size: meta.len(),
            mtime_ns: mtime_ns(meta),
            ino: meta.ino(),
            sha256: sha256.to_string(),
            path: path.clone(),
        };
        let bytes = serde_json::to_vec(&record).expect("serialisable");
        crate::sys::atomic::write_atomically(&self.path_record_file(&path), &bytes)
    }

    /// What a box of `arch` boots for its kernel file `kernel`: for an x86_64 bzImage
    /// the uncompressed ELF, extracted once into `kernels/` and reused after that, else
    /// the file itself. `sha256` is the file's digest from the catalog or the manifest;
    /// without one an in-place file is hashed once and its digest recorded.
    ///
    /// Only an interrupt while waiting for a `box prune` to finish is an error: a kernel
    /// that cannot be unpacked or kept is booted as it is.
    pub fn boot_kernel(
        &self,
        arch: &str,
        kernel: &Path,
        sha256: Option<&str>,
        signals: &SignalWatch,
    ) -> Result<Boot> {
        if arch != ARCH {
            return Ok(Boot::as_is(format!(
                "only {ARCH} kernels are unpacked ahead, this is {arch}"
            )));
        }
        let mut head = Vec::with_capacity(kernel::HEADER_LEN);
        let read_head = fs::File::open(kernel)
            .and_then(|f| f.take(kernel::HEADER_LEN as u64).read_to_end(&mut head));
        if let Err(e) = read_head {
            return Ok(Boot::as_is(format!("cannot read it: {e}")));
        }
        if let Err(kept) = kernel::check_header(&head) {
            return Ok(Boot::as_is(kept.to_string()));
        }
        let mut image = None;
        let sha256 = match sha256
            .map(str::to_ascii_lowercase)
            .or_else(|| self.recorded_sha256(kernel))
        {
            Some(known) => known,
            None => {
                let (bytes, meta) = match read_image(kernel) {
                    Ok(read) => read,
                    Err(reason) => return Ok(Boot::as_is(reason)),
                };
                let digest = hex(&Sha256::digest(&bytes));
                if let Err(e) = self.record_sha256(kernel, &meta, &digest) {
                    return Ok(unavailable(e));
                }
                image = Some(bytes);
                digest
            }
        };
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(Boot::as_is(format!("'{sha256}' is no sha256")));
        }
        let lock_path = match self.kernel_lock(&sha256) {
            Ok(path) => path,
            Err(e) => return Ok(unavailable(e)),
        };
        let held = match lock::acquire(&lock_path, Mode::Shared, signals, || ()) {
            Ok(held) => held,
            Err(e @ Error::Interrupted(_)) => return Err(e),
            Err(e) => return Ok(unavailable(e)),
        };
        let dir = self.kernels_dir();
        let elf_path = dir.join(format!("{sha256}.vmlinux"));
        let keep_path = dir.join(format!("{sha256}.keep"));
        let boot = |kernel| Boot {
            kernel,
            _lock: Some(held),
        };
        if fs::metadata(&elf_path).is_ok_and(|m| m.is_file() && m.len() > 0) {
            return Ok(boot(BootKernel::Reused(elf_path)));
        }
        if let Some(reason) = fs::read_to_string(&keep_path)
            .ok()
            .and_then(|text| Some(text.strip_prefix(VERDICT)?.trim().to_string()))
        {
            return Ok(Boot::as_is(reason));
        }
        let image = match image {
            Some(bytes) => bytes,
            None => match read_image(kernel) {
                Ok((bytes, _)) => bytes,
                Err(reason) => return Ok(Boot::as_is(reason)),
            },
        };
        let started = Instant::now();
        match kernel::extract_pvh(&image) {
            Ok(elf) => match write_read_only(&elf_path, &elf) {
                Ok(()) => Ok(boot(BootKernel::Extracted(elf_path, started.elapsed()))),
                Err(e) => Ok(unavailable(e)),
            },
            Err(kept) => {
                let reason = kept.to_string();
                // A verdict on the file's content: the next run need not look again.
                let verdict = format!("{VERDICT}{reason}\n");
                if let Err(e) = crate::sys::atomic::write_atomically(&keep_path, verdict.as_bytes())
                {
                    return Ok(unavailable(e));
                }
                Ok(Boot::as_is(reason))
            }
        }
    }

    /// Digests of the in-place kernels the catalogs name (the catalog's sha256, else the
    /// one recorded when the file was first used).
    fn in_place_kernels(&self, catalogs: &[Catalog]) -> BTreeSet<String> {
        let mut digests = BTreeSet::new();
        for catalog in catalogs {
            for entry in catalog.file.boxes.values() {
                for version in &entry.versions {
                    let Ok(Location::InPlace(path)) = catalog.locate(&version.kernel) else {
                        continue;
                    };
                    let digest = match &version.kernel.sha256 {
                        Some(d) => Some(d.to_ascii_lowercase()),
                        None => self.recorded_sha256(&path),
                    };
                    digests.extend(digest);
                }
            }
        }
        digests
    }

    /// Deletes the extracted kernels (and verdicts) that no cached version outside `gone`
    /// and no in-place box of `catalogs` refers to, skipping those a running build holds;
    /// with `dry_run` only lists them. Also drops stale digest records and temporary
    /// files of interrupted extractions.
    pub fn prune_kernels(
        &self,
        catalogs: &[Catalog],
        gone: &[Key],
        dry_run: bool,
    ) -> Result<Vec<StoredKernel>> {
        let mut wanted = self.in_place_kernels(catalogs);
        for cached in self.all_cached() {
            if gone.contains(&cached.key) {
                continue;
            }
            wanted.extend(
                cached
                    .manifest
                    .file(crate::boxes::catalog::Role::Kernel)
                    .map(|f| {
                        f.file_sha256
                            .as_ref()
                            .unwrap_or(&f.sha256)
                            .to_ascii_lowercase()
                    }),
            );
        }
        let dir = self.kernels_dir();
        let Ok(entries) = fs::read_dir(&dir) else {
            return Ok(Vec::new());
        };
        let mut removed = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if name.starts_with('.') {
                let stale = meta.modified().ok().and_then(|m| m.elapsed().ok());
                if !dry_run && meta.is_file() && stale.is_some_and(|age| age > STALE_TEMP) {
                    let _ = fs::remove_file(entry.path());
                }
                continue;
            }
            let Some(sha256) = name
                .strip_suffix(".vmlinux")
                .or_else(|| name.strip_suffix(".keep"))
                .filter(|d| d.len() == 64 && d.bytes().all(|b| b.is_ascii_hexdigit()))
            else {
                continue;
            };
            if wanted.contains(sha256) {
                continue;
            }
            let found = StoredKernel {
                sha256: sha256.to_string(),
                bytes: meta.len(),
            };
            if dry_run {
                removed.push(found);
                continue;
            }
            let Some(_held) = lock::try_acquire(&self.kernel_lock(sha256)?, Mode::Exclusive)?
            else {
                continue;
            };
            fs::remove_file(entry.path())
                .context(|| format!("cannot remove {}", entry.path().display()))?;
            removed.push(found);
        }
        if !dry_run {
            self.prune_path_records();
        }
        Ok(removed)
    }

    /// Drops digest records of in-place files that changed or are gone.
    fn prune_path_records(&self) {
        let dir = self.kernels_dir().join("paths");
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let record: Option<PathRecord> = fs::read(entry.path())
                .ok()
                .and_then(|bytes| serde_json::from_slice(&bytes).ok());
            let current = record
                .is_some_and(|r| fs::metadata(&r.path).is_ok_and(|meta| r.matches(&r.path, &meta)));
            if !current {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

fn unavailable(e: Error) -> Boot {
    Boot {
        kernel: BootKernel::Unavailable(format!("cannot keep the uncompressed kernel: {e}")),
        _lock: None,
    }
}

/// The whole kernel file, refusing files too large to be a kernel.
fn read_image(path: &Path) -> std::result::Result<(Vec<u8>, fs::Metadata), String> {
    let file = fs::File::open(path).map_err(|e| format!("cannot read it: {e}"))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read it: {e}"))?;
    if meta.len() > kernel::MAX_IMAGE {
        return Err(format!(
            "larger than {} MiB, too large for a kernel",
            kernel::MAX_IMAGE >> 20
        ));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(kernel::MAX_IMAGE)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read it: {e}"))?;
    Ok((bytes, meta))
}

/// Writes a large file under a temporary name beside `path` and renames it into place,
/// read-only like the boxes' files.
fn write_read_only(path: &Path, bytes: &[u8]) -> Result<()> {
    crate::sys::atomic::write_atomically_with_mode(path, bytes, Some(0o444))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boxes::catalog::Base;
    use crate::boxes::store::kernel::samples::{bzimage, elf_with_notes, pvh_elf, xz};

    fn store(dir: &Path) -> Store {
        Store {
            root: dir.join("cache"),
        }
    }

    fn signals() -> SignalWatch {
        SignalWatch::install().unwrap()
    }

    fn write_kernel(dir: &Path, name: &str, elf: &[u8]) -> (PathBuf, String) {
        let image = bzimage(3, &xz(elf), elf.len());
        let path = dir.join(name);
        fs::write(&path, &image).unwrap();
        (path, hex(&Sha256::digest(&image)))
    }

    fn kernels(s: &Store) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(s.kernels_dir())
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_bzimage_is_extracted_once_and_then_reused() {
        let tmp = tempfile::tempdir().unwrap();
        let s = store(tmp.path());
        let (path, digest) = write_kernel(tmp.path(), "vmlinuz", &pvh_elf());
        let first = s
            .boot_kernel("x86_64", &path, Some(&digest), &signals())
            .unwrap();
        let BootKernel::Extracted(elf_path, _) = &first.kernel else {
            panic!("{:?}", first.kernel);
        };
        assert_eq!(*elf_path, s.kernels_dir().join(format!("{digest}.vmlinux")));
        assert_eq!(fs::read(elf_path).unwrap(), pvh_elf());
        let again = s
            .boot_kernel("x86_64", &path, Some(&digest), &signals())
            .unwrap();
        assert!(matches!(again.kernel, BootKernel::Reused(ref p) if p == elf_path));
        assert_eq!(kernels(&s), [format!("{digest}.vmlinux")]);
    }

    #[test]
    fn an_in_place_kernel_without_a_digest_is_hashed_once() {
        let tmp = tempfile::tempdir().unwrap();
        let s = store(tmp.path());
        let (path, digest) = write_kernel(tmp.path(), "vmlinuz", &pvh_elf());
        let first = s.boot_kernel("x86_64", &path, None, &signals()).unwrap();
        assert!(matches!(first.kernel, BootKernel::Extracted(..)));
        assert_eq!(s.recorded_sha256(&path), Some(digest.clone()));
        let again = s.boot_kernel("x86_64", &path, None, &signals()).unwrap();
        assert!(matches!(again.kernel, BootKernel::Reused(..)));
        // A rebuilt file is hashed anew.
        let other = elf_with_notes(&[(b"Xen\0", 18, &0x0200_0000u32.to_le_bytes())]);
        let (_, new_digest) = write_kernel(tmp.path(), "vmlinuz", &other);
        assert_eq!(s.recorded_sha256(&path), None);
        let rebuilt = s.boot_kernel("x86_64", &path, None, &signals()).unwrap();
        assert!(matches!(rebuilt.kernel, BootKernel::Extracted(..)));
        assert_eq!(s.recorded_sha256(&path), Some(new_digest));
    }

    #[test]
    fn a_kernel_without_pvh_is_booted_as_it_is_and_not_looked_at_again() {
        let tmp = tempfile::tempdir().unwrap();
        let s = store(tmp.path());
        let no_pvh = elf_with_notes(&[(b"Linux\0", 1, b"6.1")]);
        let (path, digest) = write_kernel(tmp.path(), "vmlinuz", &no_pvh);
        for _ in 0..2 {
            let boot = s
                .boot_kernel("x86_64", &path, Some(&digest), &signals())
                .unwrap();
            match boot.kernel {
                BootKernel::AsIs(reason) => assert!(reason.contains("no PVH"), "{reason}"),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(kernels(&s), [format!("{digest}.keep")]);
        // A verdict of another extractor is not taken.
        fs::write(s.kernels_dir().join(format!("{digest}.keep")), "other\n").unwrap();
        let boot = s
            .boot_kernel("x86_64", &path, Some(&digest), &signals())
            .unwrap();
        assert!(matches!(boot.kernel, BootKernel::AsIs(ref r) if r.contains("no PVH")));
    }

    #[test]
    fn elf_kernels_and_other_architectures_are_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let s = store(tmp.path());
        let elf = tmp.path().join("kernel");
        fs::write(&elf, pvh_elf()).unwrap();
        let boot = s.boot_kernel("x86_64", &elf, None, &signals()).unwrap();
        assert!(matches!(boot.kernel, BootKernel::AsIs(ref r) if r.contains("already")));
        let (image, digest) = write_kernel(tmp.path(), "vmlinuz", &pvh_elf());
        let boot = s
            .boot_kernel("aarch64", &image, Some(&digest), &signals())
            .unwrap();
        assert!(matches!(boot.kernel, BootKernel::AsIs(_)));
        let missing = s
            .boot_kernel("x86_64", &tmp.path().join("gone"), None, &signals())
            .unwrap();
        assert!(matches!(missing.kernel, BootKernel::AsIs(ref r) if r.contains("cannot read")));
        assert!(kernels(&s).is_empty());
    }

    fn install(s: &Store, key: &Key, kernel_sha256: &str) {
        let dir = s.entry_dir(key);
        fs::create_dir_all(&dir).unwrap();
        let manifest = super::super::Manifest {
            format: super::super::MANIFEST_FORMAT,
            name: key.name.clone(),
            arch: key.arch.clone(),
            version: key.version.clone(),
            fetched: 0,
            files: vec![super::super::ManifestFile {
                role: crate::boxes::catalog::Role::Kernel,
                file: "kernel".into(),
                size: 1,
                sha256: kernel_sha256.into(),
                url: "file:///k".into(),
                member: None,
                file_sha256: None,
            }],
        };
        fs::write(
            dir.join(super::super::MANIFEST),
            serde_json::to_vec(&manifest).unwrap(),
        )
        .unwrap();
    }

    #[test]
    fn prune_deletes_kernels_nothing_refers_to() {
        let tmp = tempfile::tempdir().unwrap();
        let s = store(tmp.path());
        let (cached, cached_sha) = write_kernel(tmp.path(), "cached", &pvh_elf());
        let other = elf_with_notes(&[(b"Xen\0", 18, &0x0200_0000u32.to_le_bytes())]);
        let (in_place, in_place_sha) = write_kernel(tmp.path(), "in-place", &other);
        let busy_elf = elf_with_notes(&[(b"Xen\0", 18, &0x0300_0000u32.to_le_bytes())]);
        let (busy, busy_sha) = write_kernel(tmp.path(), "busy", &busy_elf);
        let (orphan, orphan_sha) = write_kernel(tmp.path(), "orphan", &elf_with_notes(&[]));
        let key = Key::new("b", "x86_64", "1");
        install(&s, &key, &cached_sha);
        s.boot_kernel("x86_64", &cached, Some(&cached_sha), &signals())
            .unwrap();
        s.boot_kernel("x86_64", &in_place, None, &signals())
            .unwrap();
        s.boot_kernel("x86_64", &orphan, Some(&orphan_sha), &signals())
            .unwrap();
        let held = s
            .boot_kernel("x86_64", &busy, Some(&busy_sha), &signals())
            .unwrap();
        let catalog = Catalog::parse(
            &format!(
                "[boxes.local]\nbuilder = [\"b\"]\n[[boxes.local.versions]]\nversion = \"1\"\n\
                 arch = \"x86_64\"\ncmdline = \"\"\nkernel = {{ path = \"{}\" }}\n",
                in_place.display()
            ),
            "c",
            Base::Dir(tmp.path().into()),
        )
        .unwrap();
        let catalogs = [catalog];

        let listed = s
            .prune_kernels(&catalogs, std::slice::from_ref(&key), true)
            .unwrap();
        let mut names: Vec<&str> = listed.iter().map(|k| k.sha256.as_str()).collect();
        names.sort();
        let mut expected = vec![cached_sha.as_str(), busy_sha.as_str(), orphan_sha.as_str()];
        expected.sort();
        assert_eq!(names, expected);
        assert_eq!(kernels(&s).len(), 4);

        let removed = s.prune_kernels(&catalogs, &[], false).unwrap();
        assert_eq!(removed.len(), 1);
        assert_eq!(removed[0].sha256, orphan_sha);
        let mut left = vec![
            format!("{cached_sha}.vmlinux"),
            format!("{in_place_sha}.vmlinux"),
            format!("{busy_sha}.vmlinux"),
        ];
        left.sort();
        assert_eq!(kernels(&s), left);

        // The last version using it is gone; the busy one goes once its build ends.
        fs::remove_dir_all(s.entry_dir(&key)).unwrap();
        s.prune_kernels(&catalogs, &[], false).unwrap();
        assert_eq!(kernels(&s).len(), 2);
        drop(held);
        s.prune_kernels(&[], &[], false).unwrap();
        assert!(kernels(&s).is_empty());
        // The in-place file's record went with it once the file changed.
        fs::write(&in_place, b"rebuilt").unwrap();
        s.prune_kernels(&[], &[], false).unwrap();
        assert!(fs::read_dir(s.kernels_dir().join("paths"))
            .unwrap()
            .next()
            .is_none());
    }
}
