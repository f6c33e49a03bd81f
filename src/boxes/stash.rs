//! Stashes on the host (docs/stash.md): an image's root tree kept as an OCI image, one OCI
//! image layout per stash name under the stash dir (`DIR/NAME/{oci-layout,index.json,
//! blobs/sha256/...}`), tags as versions, so `skopeo inspect oci:DIR/NAME:TAG` and every
//! other OCI tool read them. A stash made by `kiwi-ng system stash` (`DIR/NAME/NAME.tar`,
//! an oci-archive) is read as well.
//!
//! A stash is written whole or not at all: the box writes its new blobs into a staging dir
//! (`DIR/.incoming/`), and `commit` renames a new layout into place, or moves the blobs
//! into an existing one and then replaces its `index.json` atomically. Writers of one name
//! hold an exclusive lock (`DIR/.locks/NAME.lock`), readers a shared one. Stashes in
//! registries: `registry`.

pub mod registry;

use crate::boxes::store::lock::{self, EntryLock, Mode};
use crate::sys::atomic::write_atomically;
use crate::sys::digest::sha256_file;
use crate::sys::error::{Context, Error, Result};
use crate::sys::signals::SignalWatch;
use serde_json::{json, Value};
use std::fs;
use std::path::{Path, PathBuf};

pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
pub const CREATED: &str = "org.opencontainers.image.created";
const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// The tag kiwi gives a stash without `--tag`.
pub const DEFAULT_TAG: &str = "latest";

/// kiwi's rule for stash names (`StackBuildDefaults.is_container_name_valid`):
/// `^[0-9a-zA-Z][0-9a-zA-Z-]*[0-9a-zA-Z]$`.
pub fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() >= 2
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// An OCI tag: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
pub fn valid_tag(tag: &str) -> bool {
    let b = tag.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

fn valid_digest(digest: &str) -> bool {
    crate::sys::digest::sha256_hex(digest).is_some()
}

/// Which version of a stash: a tag, or a manifest digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pin {
    Tag(String),
    Digest(String),
}

/// `NAME`, `NAME:TAG` or `NAME@sha256:HEX`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StashRef {
    pub name: String,
    pub pin: Pin,
}

impl std::fmt::Display for StashRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.pin {
            Pin::Tag(tag) => write!(f, "{}:{tag}", self.name),
            Pin::Digest(digest) => write!(f, "{}@{digest}", self.name),
        }
    }
}

impl StashRef {
    pub fn parse(text: &str) -> Result<StashRef> {
        let (name, pin) = if let Some((name, digest)) = text.split_once('@') {
            if !valid_digest(digest) {
                return Err(Error::setup(format!(
                    "--stash {text}: {digest:?} is not a digest (sha256: and 64 hex digits)"
                )));
            }
            (name, Pin::Digest(digest.to_string()))
        } else if let Some((name, tag)) = text.split_once(':') {
            if !valid_tag(tag) {
                return Err(Error::setup(format!(
                    "--stash {text}: {tag:?} is not a valid tag (letters, digits, '_', '.', '-'; at most 128)"
                )));
            }
            (name, Pin::Tag(tag.to_string()))
        } else {
            (text, Pin::Tag(DEFAULT_TAG.to_string()))
        };
        check_name(name)?;
        Ok(StashRef {
            name: name.to_string(),
            pin,
        })
    }
}

pub fn check_name(name: &str) -> Result<()> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(Error::setup(format!(
            "stash name {name:?}: kiwi accepts only letters, digits and '-', starting and ending with a letter or digit"
        )))
    }
}

/// One version of a stash, as `stash list` shows it.
#[derive(Debug, Clone)]
pub struct Version {
    pub tag: Option<String>,
    pub digest: String,
    pub created: Option<String>,
    pub layers: Vec<(String, u64)>,
    /// Manifest, config and layers.
    pub size: u64,
}

/// Where a stash's data is for a box to read.
#[derive(Debug, Clone)]
pub enum Source {
    /// An OCI layout dir and the manifest's digest in it.
    Layout { dir: PathBuf, manifest: String },
    /// A `kiwi-ng system stash` oci-archive and the reference inside it.
    Archive { file: PathBuf, reference: String },
}

/// The stash dir.
#[derive(Debug, Clone)]
pub struct StashDir {
    pub root: PathBuf,
}

impl StashDir {
    /// `--stash-dir`/`$BOXBUILD_STASH_DIR`, else `$XDG_DATA_HOME/boxbuild/stashes`.
    pub fn new(chosen: Option<&Path>) -> Result<StashDir> {
        let root = match chosen {
            Some(dir) => dir.to_path_buf(),
            None => dirs::data_dir()
                .ok_or_else(|| Error::setup("no data dir (set HOME or XDG_DATA_HOME)"))?
                .join("boxbuild/stashes"),
        };
        if root.exists() && !root.is_dir() {
            return Err(Error::setup(format!(
                "stash dir {}: not a directory",
                root.display()
            )));
        }
        Ok(StashDir { root })
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    fn kiwi_archive(&self, name: &str) -> PathBuf {
        self.path(name).join(format!("{name}.tar"))
    }

    /// The stash names here (directories not starting with a dot).
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        names
    }

    /// Takes the lock of a name: shared to read, exclusive to write (waits, Ctrl-C works).
    pub fn lock(
        &self,
        name: &str,
        mode: Mode,
        signals: &SignalWatch,
        waiting: impl FnOnce(),
    ) -> Result<EntryLock> {
        let dir = self.root.join(".locks");
        fs::create_dir_all(&dir).context(|| format!("cannot create {}", dir.display()))?;
        lock::acquire(
            &dir.join(format!("{}.lock", file_name(name))),
            mode,
            signals,
            waiting,
        )
    }

    /// The lock of a name if it is free now, else None.
    pub fn try_lock(&self, name: &str, mode: Mode) -> Result<Option<EntryLock>> {
        let dir = self.root.join(".locks");
        fs::create_dir_all(&dir).context(|| format!("cannot create {}", dir.display()))?;
        lock::try_acquire(&dir.join(format!("{}.lock", file_name(name))), mode)
    }

    /// The versions of a stash, newest last; an error if it is missing or no OCI layout.
    pub fn versions(&self, name: &str) -> Result<Vec<Version>> {
        let dir = self.path(name);
        if !dir.is_dir() {
            return Err(Error::setup(format!(
                "no stash {name:?} in {} (see 'boxbuild stash list')",
                self.root.display()
            )));
        }
        if !dir.join("index.json").is_file() {
            if self.kiwi_archive(name).is_file() {
                return Ok(vec![]);
            }
            return Err(Error::setup(format!(
                "stash {name:?}: {} is not an OCI image layout (no index.json)",
                dir.display()
            )));
        }
        let index = read_json(&dir.join("index.json"))?;
        let manifests = index["manifests"].as_array().cloned().unwrap_or_default();
        let mut out = Vec::new();
        for entry in manifests {
            let digest = entry["digest"].as_str().unwrap_or_default().to_string();
            if !valid_digest(&digest) {
                return Err(Error::setup(format!(
                    "stash {name:?}: index.json names a manifest without a sha256 digest"
                )));
            }
            let manifest = read_json(&blob_path(&dir, &digest))?;
            let layers: Vec<(String, u64)> = manifest["layers"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|l| {
                    (
                        l["digest"].as_str().unwrap_or_default().to_string(),
                        l["size"].as_u64().unwrap_or(0),
                    )
                })
                .collect();
            let size = entry["size"].as_u64().unwrap_or(0)
                + manifest["config"]["size"].as_u64().unwrap_or(0)
                + layers.iter().map(|l| l.1).sum::<u64>();
            out.push(Version {
                tag: entry["annotations"][REF_NAME].as_str().map(str::to_string),
                digest,
                created: entry["annotations"][CREATED].as_str().map(str::to_string),
                layers,
                size,
            });
        }
        Ok(out)
    }

    /// Where the box reads a stash; an error (one line) if the name or version is unknown.
    pub fn resolve(&self, stash: &StashRef) -> Result<Source> {
        let versions = self.versions(&stash.name)?;
        let archive = self.kiwi_archive(&stash.name);
        if versions.is_empty() && archive.is_file() {
            // kiwi names the image in its archive NAME:TAG; its index is checked in the box.
            return match &stash.pin {
                Pin::Tag(tag) => Ok(Source::Archive {
                    file: archive,
                    reference: format!("{}:{tag}", stash.name),
                }),
                Pin::Digest(_) => Err(Error::setup(format!(
                    "stash {stash}: a stash of kiwi-ng system stash (an oci-archive) is named by tag, not digest"
                ))),
            };
        }
        let found = versions.iter().find(|v| match &stash.pin {
            Pin::Tag(tag) => v.tag.as_deref() == Some(tag.as_str()),
            Pin::Digest(digest) => &v.digest == digest,
        });
        match found {
            Some(v) => Ok(Source::Layout {
                dir: self.path(&stash.name),
                manifest: v.digest.clone(),
            }),
            None => {
                let tags: Vec<&str> = versions.iter().filter_map(|v| v.tag.as_deref()).collect();
                Err(Error::setup(format!(
                    "stash {}: no {} (tags: {})",
                    stash.name,
                    match &stash.pin {
                        Pin::Tag(tag) => format!("tag {tag:?}"),
                        Pin::Digest(d) => format!("manifest {d}"),
                    },
                    if tags.is_empty() {
                        "none".to_string()
                    } else {
                        tags.join(", ")
                    }
                )))
            }
        }
    }

    /// The version a new stash of `name` builds on: the newest one, if the stash exists.
    pub fn newest(&self, name: &str) -> Result<Option<Version>> {
        if !self.path(name).exists() {
            return Ok(None);
        }
        let mut versions = self.versions(name)?;
        if versions.is_empty() {
            return Err(Error::setup(format!(
                "stash {name:?} is an oci-archive of kiwi-ng system stash: boxbuild adds layers only to OCI layouts; choose another name"
            )));
        }
        // Newest by the created annotation; the order of index.json breaks ties.
        let mut newest = versions.pop();
        for v in versions.into_iter().rev() {
            if v.created > newest.as_ref().and_then(|n| n.created.clone()) {
                newest = Some(v);
            }
        }
        Ok(newest)
    }

    /// Removes the layout `name` (a stash, or a registry-cache entry `.registry/...`) whole,
    /// unless a boxbuild holds its lock (then None): it is renamed into `.incoming` first, so
    /// no reader ever finds half of it. Returns the bytes it held. Errors: one line naming
    /// the path that could not be moved or removed.
    pub fn remove(&self, name: &str) -> Result<Option<u64>> {
        let Some(_writing) = self.try_lock(name, Mode::Exclusive)? else {
            return Ok(None);
        };
        let path = self.path(name);
        let bytes = crate::boxes::store::du(&path);
        let gone = self.staging(name)?;
        let parked = gone.path().join("gone");
        fs::rename(&path, &parked).context(|| format!("cannot move {} away", path.display()))?;
        gone.close()
            .context(|| format!("cannot remove {}", parked.display()))?;
        Ok(Some(bytes))
    }

    /// A fresh staging dir for a stash's new blobs, removed when dropped.
    pub fn staging(&self, name: &str) -> Result<tempfile::TempDir> {
        let dir = self.root.join(".incoming");
        fs::create_dir_all(&dir).context(|| format!("cannot create {}", dir.display()))?;
        sweep_incoming(&dir);
        tempfile::Builder::new()
            .prefix(&format!("{}-{}-", std::process::id(), file_name(name)))
            .tempdir_in(&dir)
            .context(|| format!("cannot create a staging dir in {}", dir.display()))
    }

    /// Makes what the box left in `staging` (`blobs/sha256/*` and `result.json` naming the
    /// new manifest) version `tag` of `name`. Call with the name's exclusive lock held.
    pub fn commit(&self, name: &str, tag: &str, staging: &Path) -> Result<String> {
        let result = read_json(&staging.join("result.json"))?;
        let manifest = result["manifest"].clone();
        let digest = manifest["digest"].as_str().unwrap_or_default().to_string();
        if !valid_digest(&digest) {
            return Err(Error::setup(
                "the box's stash result names no manifest digest",
            ));
        }
        let layout = self.path(name);
        let exists = layout.join("index.json").is_file();
        // Every blob the box sent is checked against its name before anything moves.
        let blobs = staging.join("blobs/sha256");
        for entry in fs::read_dir(&blobs)
            .context(|| format!("cannot read {}", blobs.display()))?
            .flatten()
        {
            let expected = format!("sha256:{}", entry.file_name().to_string_lossy());
            let got = sha256_file(&entry.path())
                .map(|hex| format!("sha256:{hex}"))
                .context(|| format!("cannot read {}", entry.path().display()))?;
            if got != expected {
                return Err(Error::setup(format!(
                    "the box's stash blob {expected} has digest {got}"
                )));
            }
        }
        let have = |d: &str| blob_path(staging, d).is_file() || blob_path(&layout, d).is_file();
        let m = read_json(&if blob_path(staging, &digest).is_file() {
            blob_path(staging, &digest)
        } else {
            blob_path(&layout, &digest)
        })?;
        let mut needed = vec![m["config"]["digest"]
            .as_str()
            .unwrap_or_default()
            .to_string()];
        for l in m["layers"].as_array().into_iter().flatten() {
            needed.push(l["digest"].as_str().unwrap_or_default().to_string());
        }
        if let Some(missing) = needed.iter().find(|d| !valid_digest(d) || !have(d)) {
            return Err(Error::setup(format!(
                "the box's stash lacks blob {missing:?}"
            )));
        }
        let entry = json!({
            "mediaType": manifest["mediaType"].as_str().unwrap_or(MANIFEST_TYPE),
            "digest": digest,
            "size": manifest["size"].as_u64().unwrap_or(0),
            "annotations": { REF_NAME: tag, CREATED: now_rfc3339() },
        });
        if !exists {
            // A new stash: the staging dir becomes the layout by one rename.
            write_atomically(
                &staging.join("oci-layout"),
                br#"{"imageLayoutVersion":"1.0.0"}"#,
            )?;
            let index = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [entry]});
            write_atomically(&staging.join("index.json"), &to_bytes(&index))?;
            let _ = fs::remove_file(staging.join("result.json"));
            let parent = layout.parent().unwrap_or(&self.root);
            fs::create_dir_all(parent).context(|| format!("cannot create {}", parent.display()))?;
            fs::rename(staging, &layout)
                .context(|| format!("cannot move the new stash to {}", layout.display()))?;
            return Ok(digest);
        }
        // Blobs first (each rename atomic; a blob never changes under its name), then the
        // index in one atomic replace.
        let into = layout.join("blobs/sha256");
        fs::create_dir_all(&into).context(|| format!("cannot create {}", into.display()))?;
        for e in fs::read_dir(&blobs)
            .context(|| format!("cannot read {}", blobs.display()))?
            .flatten()
        {
            let to = into.join(e.file_name());
            if !to.exists() {
                fs::rename(e.path(), &to)
                    .context(|| format!("cannot move a blob into {}", into.display()))?;
            }
        }
        let mut index = read_json(&layout.join("index.json"))?;
        let mut manifests: Vec<Value> = index["manifests"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|m| m["annotations"][REF_NAME].as_str() != Some(tag))
            .collect();
        manifests.push(entry);
        index["manifests"] = Value::Array(manifests);
        write_atomically(&layout.join("index.json"), &to_bytes(&index))?;
        self.collect_garbage(&layout);
        Ok(digest)
    }

    /// Removes blobs no manifest of the index reaches (after a tag moved). Best effort.
    fn collect_garbage(&self, layout: &Path) {
        let Ok(index) = read_json(&layout.join("index.json")) else {
            return;
        };
        let mut keep = std::collections::BTreeSet::new();
        for m in index["manifests"].as_array().into_iter().flatten() {
            let Some(d) = m["digest"].as_str() else {
                return;
            };
            keep.insert(d.to_string());
            let Ok(manifest) = read_json(&blob_path(layout, d)) else {
                return;
            };
            for r in std::iter::once(&manifest["config"])
                .chain(manifest["layers"].as_array().into_iter().flatten())
            {
                match r["digest"].as_str() {
                    Some(d) => keep.insert(d.to_string()),
                    None => return,
                };
            }
        }
        for e in fs::read_dir(layout.join("blobs/sha256"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let d = format!("sha256:{}", e.file_name().to_string_lossy());
            if !keep.contains(&d) {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

/// Removes staging dirs whose boxbuild is gone (killed by SIGKILL: nothing else skips
/// their removal). Their names start with the writer's pid.
fn sweep_incoming(dir: &Path) {
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(pid) = name.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

/// A name below the stash dir as one file name (the registry cache's names hold a `/`).
fn file_name(name: &str) -> String {
    name.replace('/', "_")
}

pub fn blob_path(layout: &Path, digest: &str) -> PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap_or(digest))
}

fn read_json(path: &Path) -> Result<Value> {
    let text = fs::read(path).context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_slice(&text)
        .map_err(|e| Error::setup(format!("{}: not valid JSON: {e}", path.display())))
}

fn to_bytes(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_kiwi() {
        for ok in ["ab", "my-base", "Base2", "a-b-c"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["a", "-ab", "ab-", "a_b", "a.b", "", "a b"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn references() {
        assert_eq!(
            StashRef::parse("base").unwrap().pin,
            Pin::Tag("latest".into())
        );
        assert_eq!(
            StashRef::parse("base:2026-12").unwrap().pin,
            Pin::Tag("2026-12".into())
        );
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            StashRef::parse(&format!("base@{d}")).unwrap().pin,
            Pin::Digest(d)
        );
        assert!(StashRef::parse("base@sha256:12").is_err());
        assert!(StashRef::parse("b_ase:1").is_err());
        assert!(StashRef::parse("base:").is_err());
        assert!(StashRef::parse("base:-x").is_err());
    }

    fn blob(dir: &Path, bytes: &[u8]) -> (String, u64) {
        let d = crate::sys::digest::sha256_digest(bytes);
        let p = blob_path(dir, &d);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, bytes).unwrap();
        (d, bytes.len() as u64)
    }

    /// What the box leaves: one layer, a config, a manifest, result.json.
    fn stage(dir: &StashDir, name: &str, layer: &[u8]) -> tempfile::TempDir {
        let s = dir.staging(name).unwrap();
        let (ld, ls) = blob(s.path(), layer);
        let (cd, cs) = blob(s.path(), b"{}");
        let m = json!({"schemaVersion":2,"mediaType":MANIFEST_TYPE,
            "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":cd,"size":cs},
            "layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":ld,"size":ls}]});
        let (md, ms) = blob(s.path(), &to_bytes(&m));
        fs::write(
            s.path().join("result.json"),
            to_bytes(&json!({"manifest":{"mediaType":MANIFEST_TYPE,"digest":md,"size":ms}})),
        )
        .unwrap();
        s
    }

    #[test]
    fn commit_creates_then_adds_and_moves_tags() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StashDir::new(Some(tmp.path())).unwrap();
        let s = stage(&dir, "base", b"one");
        let first = dir.commit("base", "1", s.path()).unwrap();
        assert!(dir.path("base/oci-layout").is_file());
        assert_eq!(dir.names(), ["base"]);
        let s = stage(&dir, "base", b"two");
        dir.commit("base", "2", s.path()).unwrap();
        let v = dir.versions("base").unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[1].tag.as_deref(), Some("2"));
        assert_eq!(
            dir.newest("base").unwrap().unwrap().tag.as_deref(),
            Some("2")
        );
        let r = dir.resolve(&StashRef::parse("base:1").unwrap()).unwrap();
        assert!(matches!(r, Source::Layout { manifest, .. } if manifest == first));
        let e = dir
            .resolve(&StashRef::parse("base:3").unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("no tag \"3\" (tags: 1, 2)"), "{e}");
        // Moving tag 1 drops its old blobs.
        let s = stage(&dir, "base", b"three");
        dir.commit("base", "1", s.path()).unwrap();
        assert_eq!(dir.versions("base").unwrap().len(), 2);
        assert!(!blob_path(&dir.path("base"), &first).exists());
        let e = dir
            .resolve(&StashRef::parse("other").unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("no stash \"other\""), "{e}");
    }

    #[test]
    fn staging_dirs_of_dead_writers_are_swept() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StashDir::new(Some(tmp.path())).unwrap();
        let stale = tmp.path().join(".incoming/4194999-base-x");
        fs::create_dir_all(stale.join("out")).unwrap();
        let mine = dir.staging("base").unwrap();
        assert!(!stale.exists());
        assert!(mine.path().exists());
    }

    #[test]
    fn a_bad_blob_changes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StashDir::new(Some(tmp.path())).unwrap();
        let s = stage(&dir, "base", b"one");
        let (d, _) = blob(s.path(), b"x");
        fs::write(blob_path(s.path(), &d), b"y").unwrap();
        assert!(dir.commit("base", "1", s.path()).is_err());
        assert!(!dir.path("base").exists());
        fs::create_dir_all(dir.path("junk")).unwrap();
        let e = dir.versions("junk").unwrap_err().to_string();
        assert!(e.contains("not an OCI image layout"), "{e}");
    }
}
