//! Persistent layers for `--no-snapshot`: one qcow2 overlay per box version, kept across
//! runs, so changes made in the box (a package cache, installed tools) stay. The verified
//! box disk below is never written. A layer belongs to one version: a box update starts
//! from a fresh layer, and a layer whose box disk changed (a local box rebuilt in place)
//! is reset. One build at a time may use a layer.

use super::lock::{self, EntryLock};
use super::{Key, Store};
use crate::boxes::store::overlay;
use crate::sys::error::{Context, Error, Result};
use serde::{Deserialize, Serialize};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A layer in use; others cannot open it until this is dropped.
pub struct Layer {
    pub path: PathBuf,
    pub state: LayerState,
    _lock: EntryLock,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerState {
    Created,
    Reused,
    /// The box disk below changed; the old layer was discarded.
    Reset,
}

/// The box disk a layer was made over.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Backing {
    disk: PathBuf,
    size: u64,
    mtime_ns: i128,
}

impl Backing {
    fn of(disk: &Path) -> Result<Backing> {
        let disk = disk
            .canonicalize()
            .context(|| format!("box disk {}", disk.display()))?;
        let meta = fs::metadata(&disk).context(|| format!("box disk {}", disk.display()))?;
        Ok(Backing {
            size: meta.len(),
            mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
            disk,
        })
    }
}

/// A layer on disk, for listing and pruning.
pub struct StoredLayer {
    pub key: Key,
    pub bytes: u64,
}

impl Store {
    fn layer_dir(&self, key: &Key) -> PathBuf {
        self.bucket(super::Bucket::Layers)
            .join(&key.name)
            .join(&key.arch)
            .join(&key.version)
    }

    fn layer_lock(&self, key: &Key) -> Result<PathBuf> {
        let dir = self.bucket(super::Bucket::Locks);
        fs::create_dir_all(&dir).context(|| format!("cannot create {}", dir.display()))?;
        Ok(dir.join(format!("layer-{}.lock", key.flat())))
    }

    /// The persistent layer of `key` over `disk`, created or reset as needed.
    pub fn open_layer(&self, key: &Key, disk: &Path) -> Result<Layer> {
        let Some(lock) = lock::try_acquire(&self.layer_lock(key)?, lock::Mode::Exclusive)? else {
            return Err(Error::setup(format!(
                "the persistent layer of box {key} is in use by another --no-snapshot build; wait for it or build without --no-snapshot"
            )));
        };
        let dir = self.layer_dir(key);
        let path = dir.join("layer.qcow2");
        let record = dir.join("backing.json");
        let backing = Backing::of(disk)?;
        let recorded: Option<Backing> = fs::read(&record)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok());
        let state = match recorded {
            Some(old) if old == backing && path.exists() => {
                return Ok(Layer {
                    path,
                    state: LayerState::Reused,
                    _lock: lock,
                })
            }
            Some(_) => LayerState::Reset,
            None => LayerState::Created,
        };
        fs::create_dir_all(&dir).context(|| format!("cannot create {}", dir.display()))?;
        // Made aside and renamed in: a layer is either complete or absent.
        let fresh = dir.join(".layer.qcow2.new");
        let _ = fs::remove_file(&fresh);
        overlay::create(&backing.disk, &fresh)?;
        fs::rename(&fresh, &path).context(|| format!("cannot install {}", path.display()))?;
        // Fails only for a path that is not UTF-8 (serde writes paths as strings).
        let json = serde_json::to_vec_pretty(&backing)
            .context(|| format!("cannot record the box disk {}", backing.disk.display()))?;
        crate::sys::atomic::write_atomically(&record, &json)?;
        Ok(Layer {
            path,
            state,
            _lock: lock,
        })
    }

    /// Every persistent layer on disk.
    pub fn layers(&self) -> Vec<StoredLayer> {
        let mut found = Vec::new();
        let root = self.bucket(super::Bucket::Layers);
        for name in super::subdirs(&root) {
            for arch in super::subdirs(&root.join(&name)) {
                for version in super::subdirs(&root.join(&name).join(&arch)) {
                    let key = Key::new(&name, &arch, &version);
                    let bytes = super::du(&self.layer_dir(&key));
                    found.push(StoredLayer { key, bytes });
                }
            }
        }
        found
    }

    /// Deletes a layer unless a build uses it (then false).
    pub fn remove_layer(&self, key: &Key) -> Result<bool> {
        let Some(_lock) = lock::try_acquire(&self.layer_lock(key)?, lock::Mode::Exclusive)? else {
            return Ok(false);
        };
        let dir = self.layer_dir(key);
        fs::remove_dir_all(&dir).context(|| format!("cannot remove {}", dir.display()))?;
        for parent in dir.ancestors().skip(1).take(2) {
            let _ = fs::remove_dir(parent);
        }
        Ok(true)
    }
}
