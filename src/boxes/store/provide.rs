//! From a catalog entry to box files on disk: pick the version (pinned, else the newest
//! one at hand), fetch it when missing (once, however many builds ask), and hold it
//! shared for the build so prune and remove leave it alone.

use super::kernels::{Boot, BootKernel};
use super::lock::{self, EntryLock, Mode};
use super::{Cached, Key, Manifest, ManifestFile, Store, MANIFEST, MANIFEST_FORMAT};
use crate::boxes::catalog::{Found, Location, Role, Settings, VersionEntry};
use crate::boxes::fetch::{Download, Fetcher};
use crate::sys::error::{Context, Error, Result};
use crate::sys::ui::Ui;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// One box version ready to boot, with local file paths.
#[derive(Debug)]
pub struct ReadyBox {
    pub name: String,
    pub settings: Settings,
    pub version: VersionEntry,
    /// The box's kernel file.
    pub kernel: PathBuf,
    /// What the box boots instead of `kernel` when that is an x86 bzImage.
    pub boot: Boot,
    pub initrd: Option<PathBuf>,
    pub disk: Option<PathBuf>,
    /// Which catalog described it (for messages).
    pub source: String,
    /// Whether it was fetched by this call.
    pub fetched: bool,
    /// Held while the box is in use.
    pub _lock: Option<EntryLock>,
}

impl ReadyBox {
    /// The file QEMU boots: the extracted uncompressed kernel if there is one, else the
    /// box's kernel file.
    pub fn boot_kernel(&self) -> &Path {
        match &self.boot.kernel {
            BootKernel::Extracted(path, _) | BootKernel::Reused(path) => path,
            BootKernel::AsIs(_) | BootKernel::Unavailable(_) => &self.kernel,
        }
    }

    /// Says which kernel file the box boots: one `-v` line, or a warning when the cache
    /// could not hold the uncompressed kernel.
    pub fn tell_boot_kernel(&self, ui: Ui) {
        let shown = self.kernel.display();
        match &self.boot.kernel {
            BootKernel::AsIs(reason) => {
                ui.detail(&format!("kernel: booting {shown} as it is: {reason}"))
            }
            BootKernel::Unavailable(reason) => {
                ui.warn(&format!("booting the compressed kernel {shown}: {reason}"))
            }
            BootKernel::Extracted(path, took) => ui.detail(&format!(
                "kernel: booting the uncompressed kernel {} through PVH, extracted from {shown} in {:.2}s",
                path.display(),
                took.as_secs_f64()
            )),
            BootKernel::Reused(path) => ui.detail(&format!(
                "kernel: booting the uncompressed kernel {} through PVH, extracted from {shown} earlier",
                path.display()
            )),
        }
    }
}

/// A file of a version at hand, with the sha256 the catalog (in place) or the manifest
/// (fetched) gives for it.
struct Local {
    path: PathBuf,
    sha256: Option<String>,
}

/// The local files of a version if it is at hand: in-place files exist with the right
/// size, fetched files are in the cache with the catalog's digests. O(1): stats only.
fn at_hand(
    store: &Store,
    found: &Found,
    version: &VersionEntry,
) -> Result<Option<BTreeMap<Role, Local>>> {
    let key = Key::new(&found.name, &found.arch, &version.version);
    let mut cached: Option<Option<Cached>> = None;
    let mut paths = BTreeMap::new();
    for (role, file) in version.files() {
        let local = match found.catalog.locate(file)? {
            Location::InPlace(path) => {
                check_in_place(&path, file.size, &found.catalog.origin)?;
                Local {
                    path,
                    sha256: file.sha256.clone(),
                }
            }
            Location::Remote(_) => {
                let entry = cached.get_or_insert_with(|| store.cached(&key));
                let Some(entry) = entry else {
                    return Ok(None);
                };
                match entry.manifest.file(role) {
                    // A compressed file's catalog size is the download's, not the file's.
                    Some(m)
                        if matches_catalog(
                            m,
                            file.sha256.as_deref(),
                            file.size.filter(|_| file.compression.is_none()),
                        ) =>
                    {
                        let path = entry.dir.join(&m.file);
                        if fs::metadata(&path).map(|meta| meta.len()).ok() != Some(m.size) {
                            return Ok(None);
                        }
                        Local {
                            path,
                            sha256: Some(m.file_sha256.as_ref().unwrap_or(&m.sha256).clone()),
                        }
                    }
                    _ => return Ok(None),
                }
            }
        };
        paths.insert(role, local);
    }
    Ok(Some(paths))
}

/// How a version is at hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtHand {
    /// In the cache.
    Cached,
    /// Local files named by path.
    InPlace,
}

/// Whether a version is at hand, and how; a missing local file counts as not at hand.
pub fn at_hand_kind(
    store: &Store,
    found: &Found,
    version: &VersionEntry,
) -> Result<Option<AtHand>> {
    if !matches!(at_hand(store, found, version), Ok(Some(_))) {
        return Ok(None);
    }
    Ok(Some(if has_remote_files(found, version)? {
        AtHand::Cached
    } else {
        AtHand::InPlace
    }))
}

fn matches_catalog(m: &ManifestFile, sha256: Option<&str>, size: Option<u64>) -> bool {
    sha256.is_some_and(|d| d.eq_ignore_ascii_case(&m.sha256)) && size.is_none_or(|s| s == m.size)
}

/// A box built on this machine, used where it is: a size check, never a hash.
fn check_in_place(path: &Path, size: Option<u64>, origin: &str) -> Result<()> {
    let meta = fs::metadata(path).map_err(|e| {
        let what_to_do = if e.kind() == std::io::ErrorKind::PermissionDenied {
            "make it and the directories above it readable for this user (chmod a+rX)"
        } else {
            "rebuild the box"
        };
        Error::setup(format!(
            "{origin}: box file {}: {e}; {what_to_do}",
            path.display()
        ))
    })?;
    match size {
        Some(size) if size != meta.len() => Err(Error::setup(format!(
            "{origin}: box file {} is {} bytes, the catalog says {size}; rebuild the box",
            path.display(),
            meta.len()
        ))),
        _ => Ok(()),
    }
}

fn has_remote_files(found: &Found, version: &VersionEntry) -> Result<bool> {
    for (_, file) in version.files() {
        if let Location::Remote(_) = found.catalog.locate(file)? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The version a build uses: the pinned one, else the newest one at hand, else the
/// newest in the catalog. Returns it and, when a newer one exists, that one.
pub fn choose<'f>(
    store: &Store,
    found: &'f Found,
) -> Result<(&'f VersionEntry, Option<&'f VersionEntry>)> {
    if found.pinned {
        return Ok((found.newest(), None));
    }
    for (i, version) in found.versions.iter().enumerate() {
        if at_hand(store, found, version)?.is_some() {
            let newer = (i > 0).then(|| found.versions[0]);
            return Ok((version, newer));
        }
    }
    Ok((found.newest(), None))
}

/// `version` as its container image runs it (`container =`): its settings and none of its
/// files, so nothing is fetched; the image is the container engine's to pull.
pub fn image_only(found: &Found, version: &VersionEntry) -> ReadyBox {
    ReadyBox {
        name: found.name.clone(),
        settings: found.entry.settings(version),
        version: version.clone(),
        kernel: PathBuf::new(),
        boot: Boot::as_is("the box runs as its container image"),
        initrd: None,
        disk: None,
        source: found.catalog.origin.clone(),
        fetched: false,
        _lock: None,
    }
}

/// Makes `version` available locally and returns it held shared.
pub fn provide(
    store: &Store,
    found: &Found,
    version: &VersionEntry,
    fetcher: &Fetcher,
) -> Result<ReadyBox> {
    let key = Key::new(&found.name, &found.arch, &version.version);
    // The kernel to boot is settled here, with the version held: at install for a
    // fetched box, on first use for one used in place.
    let ready = |mut files: BTreeMap<Role, Local>, lock, fetched| -> Result<ReadyBox> {
        // Every version names a kernel (the catalog's schema requires one).
        let kernel = files.remove(&Role::Kernel).ok_or_else(|| {
            Error::setup(format!(
                "box {key} has no kernel in {}",
                found.catalog.origin
            ))
        })?;
        let boot = store.boot_kernel(
            &found.arch,
            &kernel.path,
            kernel.sha256.as_deref(),
            fetcher.signals,
        )?;
        Ok(ReadyBox {
            name: found.name.clone(),
            settings: found.entry.settings(version),
            version: version.clone(),
            kernel: kernel.path,
            boot,
            initrd: files.remove(&Role::Initrd).map(|f| f.path),
            disk: files.remove(&Role::Disk).map(|f| f.path),
            source: found.catalog.origin.clone(),
            fetched,
            _lock: lock,
        })
    };
    if !has_remote_files(found, version)? {
        // Files used in place are checked by at_hand: missing ones are errors, not None.
        let files = at_hand(store, found, version)?
            .ok_or_else(|| Error::setup(format!("box {key}: its files are not at hand")))?;
        return ready(files, None, false);
    }
    let lock_path = store.lock_path(&key)?;
    let mut fetched = false;
    // A prune may slip in between fetching and taking the shared lock: look again.
    for _ in 0..3 {
        let shared = lock::acquire(&lock_path, Mode::Shared, fetcher.signals, || {
            fetcher.ui.info(&format!(
                "waiting for another boxbuild to finish fetching box {key}"
            ))
        })?;
        if let Some(files) = at_hand(store, found, version)? {
            return ready(files, Some(shared), fetched);
        }
        drop(shared);
        let exclusive = lock::acquire(&lock_path, Mode::Exclusive, fetcher.signals, || {
            fetcher.ui.info(&format!(
                "waiting for another boxbuild to finish with box {key}"
            ))
        })?;
        if at_hand(store, found, version)?.is_none() {
            fetch_and_install(store, found, version, &key, fetcher)?;
            fetched = true;
        }
        drop(exclusive);
    }
    Err(Error::setup(format!(
        "box {key} keeps disappearing from the cache at {}; is a 'box prune' running in a loop?",
        store.root().display()
    )))
}

/// Fetches every remote file into the staging dir, then installs the version with one
/// rename. Called with the entry's lock held exclusive.
fn fetch_and_install(
    store: &Store,
    found: &Found,
    version: &VersionEntry,
    key: &Key,
    fetcher: &Fetcher,
) -> Result<()> {
    let staging = store.staging_dir(key);
    fs::create_dir_all(&staging).context(|| format!("cannot create {}", staging.display()))?;
    let mut files = Vec::new();
    for (role, file) in version.files() {
        let Location::Remote(url) = found.catalog.locate(file)? else {
            continue;
        };
        // The catalog is validated on reading: a fetched file has a 64-digit sha256.
        let sha256 = file.sha256.as_deref().unwrap_or_default();
        let Some(tag) = sha256.get(..16) else {
            return Err(Error::setup(format!(
                "box {key}: {} has no sha256 in {}",
                role.name(),
                found.catalog.origin
            )));
        };
        // The digest in the name: a file staged for other content is never taken for this.
        // Roles taken from one archive share its download.
        let staged_name = match &file.member {
            Some(_) => format!("archive.{tag}"),
            None => format!("{}.{tag}", role.name()),
        };
        let fetched = staging.join(staged_name);
        let done = fs::metadata(&fetched)
            .is_ok_and(|m| file.member.is_some() || file.size.is_none_or(|s| s == m.len()));
        if !done {
            fetcher.fetch(&Download {
                url: &url,
                dest: fetched.clone(),
                size: if file.member.is_some() {
                    None
                } else {
                    file.size
                },
                sha256,
                label: format!("box {key}: {}", role.name()),
            })?;
        }
        let unpacked = match (&file.member, &file.compression) {
            (Some(pattern), _) => {
                let dest = staging.join(role.name());
                Some(crate::sys::archive::take_member(&fetched, pattern, &dest).map(|_| dest))
            }
            (None, Some(_)) => Some(decompress_zstd(&fetched, &staging.join(role.name()))),
            (None, None) => None,
        };
        let (dest, file_sha256) = match unpacked {
            Some(result) => {
                let dest =
                    result.map_err(|e| Error::setup(format!("box {key}: {}: {e}", role.name())))?;
                let digest = crate::sys::digest::sha256_file(&dest)
                    .context(|| dest.display().to_string())?;
                (dest, Some(digest))
            }
            None => (fetched, None),
        };
        let size = fs::metadata(&dest)
            .context(|| dest.display().to_string())?
            .len();
        files.push((
            dest,
            ManifestFile {
                role,
                file: role.name().to_string(),
                size,
                sha256: sha256.to_ascii_lowercase(),
                url: url.to_string(),
                member: file.member.clone(),
                file_sha256,
            },
        ));
    }
    install(store, key, files)?;
    let _ = fs::remove_dir_all(&staging);
    Ok(())
}

/// Decompresses a verified zstd file (a registry layer stored compressed) into `dest`.
fn decompress_zstd(compressed: &Path, dest: &Path) -> std::result::Result<PathBuf, String> {
    let input = fs::File::open(compressed).map_err(|e| format!("{}: {e}", compressed.display()))?;
    let mut output = fs::File::create(dest).map_err(|e| format!("{}: {e}", dest.display()))?;
    zstd::stream::copy_decode(input, &mut output)
        .map_err(|e| format!("cannot decompress the zstd layer: {e}"))?;
    output
        .sync_all()
        .map_err(|e| format!("{}: {e}", dest.display()))?;
    Ok(dest.to_path_buf())
}

/// Assembles the version dir beside its final place and renames it in.
fn install(store: &Store, key: &Key, files: Vec<(PathBuf, ManifestFile)>) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let target = store.entry_dir(key);
    let parent = target
        .parent()
        .ok_or_else(|| Error::setup(format!("{} has no parent dir", target.display())))?;
    fs::create_dir_all(parent).context(|| format!("cannot create {}", parent.display()))?;
    let assembly = tempfile::Builder::new()
        .prefix(".install-")
        .tempdir_in(parent)
        .context(|| format!("cannot create a directory in {}", parent.display()))?;
    let mut manifest = Manifest {
        format: MANIFEST_FORMAT,
        name: key.name.clone(),
        arch: key.arch.clone(),
        version: key.version.clone(),
        fetched: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        files: Vec::new(),
    };
    for (staged, entry) in files {
        let dest = assembly.path().join(&entry.file);
        fs::rename(&staged, &dest).context(|| format!("cannot move {}", staged.display()))?;
        // Read-only: the box is only ever a backing file.
        let _ = fs::set_permissions(&dest, fs::Permissions::from_mode(0o444));
        manifest.files.push(entry);
    }
    // Cannot fail: a derived Serialize of strings, numbers and enums, written into a Vec.
    let bytes = serde_json::to_vec_pretty(&manifest).expect("serialisable");
    crate::sys::atomic::write_atomically(&assembly.path().join(MANIFEST), &bytes)?;
    if target.exists() {
        // A stale or damaged copy of this version (its digests no longer match).
        store.discard_dir(&target)?;
    }
    let assembled = assembly.keep();
    fs::rename(&assembled, &target).map_err(|e| {
        let _ = fs::remove_dir_all(&assembled);
        Error::setup(format!("cannot install {}: {e}", target.display()))
    })?;
    if let Ok(dir) = fs::File::open(parent) {
        let _ = dir.sync_all();
    }
    Ok(())
}
