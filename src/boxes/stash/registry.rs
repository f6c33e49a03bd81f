//! Stashes in OCI registries (docs/stash.md, "Registries"). A stackbuild's
//! `--stash oci://REGISTRY/REPOSITORY:TAG` (or `@sha256:...`), and kiwi 11's
//! `--from-registry oci://REGISTRY/PREFIX` with `--stash NAME[:TAG]` (then
//! `PREFIX/NAME:TAG`), are pulled into a cache of OCI layouts in the stash dir, one per
//! repository (`STASH_DIR/.registry/REGISTRY_REPOSITORY`, the tag as in the registry, a
//! digest as the tag `sha256-HEX`), and stacked from there like local stashes.
//! `stash pull` pulls into a named stash, `stash push` pushes a stash's version.
//!
//! The registry client, credentials, `insecure` rules and the trust rules for signatures
//! are those of registry boxes (`boxes::oci`); a pull is committed as the box's stashes
//! are (`StashDir::commit`): whole or not at all, under the layout's exclusive lock.

use super::{blob_path, Pin, Source, StashDir, StashRef, DEFAULT_TAG};
use crate::boxes::fetch::{self, http::Http, Fetcher};
use crate::boxes::oci::layout::Layout;
use crate::boxes::oci::{image, resolve, signature, Registry};
use crate::boxes::reference::{BoxReference, SCHEME};
use crate::boxes::store::lock::{EntryLock, Mode};
use crate::boxes::trust::{self, Rule};
use crate::sys::error::{Context, Error, Result};
use crate::sys::signals::SignalWatch;
use crate::sys::ui::Ui;
use p256::ecdsa::SigningKey;
use serde_json::json;
use std::cell::Cell;
use std::path::Path;

/// Where the registry cache lives in the stash dir (hidden from `stash list`).
pub const CACHE_DIR: &str = ".registry";

/// A `--stash` of a stackbuild: a stash in the stash dir or an image in a registry.
#[derive(Debug, Clone)]
pub enum Wanted {
    Local(StashRef),
    Remote(BoxReference),
}

/// Reads a stackbuild's `--stash` value: `oci://...` is a registry reference; with
/// `--from-registry URI` a name (kiwi's rule) and tag or digest become `URI/NAME:TAG`
/// (`URI/NAME@sha256:...`); else a stash of the stash dir. Errors: one line naming the
/// value (a name kiwi would reject, a bad tag, a URI that is no `oci://HOST[:PORT]/PREFIX`).
pub fn wanted(text: &str, from_registry: Option<&str>) -> Result<Wanted> {
    if text.starts_with(SCHEME) {
        return BoxReference::parse(text).map(Wanted::Remote);
    }
    let stash = StashRef::parse(text)?;
    let Some(uri) = from_registry else {
        return Ok(Wanted::Local(stash));
    };
    let prefix = uri
        .strip_prefix(SCHEME)
        .or_else(|| uri.strip_prefix("docker://"))
        .map(|rest| rest.trim_end_matches('/'))
        .filter(|rest| !rest.is_empty())
        .ok_or_else(|| {
            Error::setup(format!(
                "--from-registry {uri}: give oci://HOST[:PORT]/PREFIX (the registry and the path the stash names go below)"
            ))
        })?;
    let pin = match &stash.pin {
        Pin::Tag(tag) => format!(":{tag}"),
        Pin::Digest(digest) => format!("@{digest}"),
    };
    BoxReference::parse(&format!("{SCHEME}{prefix}/{}{pin}", stash.name))
        .map(Wanted::Remote)
        .map_err(|e| Error::setup(format!("--from-registry {uri}: {e}")))
}

/// The cache layout of `reference`'s repository, as a name below the stash dir.
pub fn cache_name(reference: &BoxReference) -> String {
    format!("{CACHE_DIR}/{}", reference.box_name())
}

/// The registry cache's entries, as `cache_name` names them, sorted.
pub fn cache_entries(dir: &StashDir) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.path(CACHE_DIR))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().to_str().map(|n| format!("{CACHE_DIR}/{n}")))
        .collect();
    names.sort();
    names
}

/// The tag a reference is kept under in the cache: its tag, or `sha256-HEX` for a digest.
fn cache_tag(reference: &BoxReference) -> String {
    match reference.digest() {
        Some(digest) => digest.replacen(':', "-", 1),
        None => reference.inner.tag().unwrap_or(DEFAULT_TAG).to_string(),
    }
}

/// The manifest digest of version `tag` of layout `name`, if it is there (and is
/// `digest`, when given) with all its blobs.
fn find(dir: &StashDir, name: &str, tag: &str, digest: Option<&str>) -> Option<String> {
    let version = dir
        .versions(name)
        .ok()?
        .into_iter()
        .find(|v| v.tag.as_deref() == Some(tag) && digest.is_none_or(|d| d == v.digest))?;
    let layout = dir.path(name);
    let complete = std::iter::once(&version.digest)
        .chain(version.layers.iter().map(|l| &l.0))
        .all(|d| blob_path(&layout, d).is_file());
    complete.then_some(version.digest)
}

/// The key a stash push signs with: `--sign-key KEY`, a P-256 private key in PKCS#8 PEM
/// (as `box push --sign-key` and cosign). Errors: one line naming the file and how to make
/// one, exit 125.
pub fn signing_key(path: &Path) -> Result<SigningKey> {
    signature::load_signing_key(path).map_err(Error::setup)
}

/// The registry side of stashes: client, fetcher, trust rules.
pub struct Remote {
    registry: Registry,
    http: Http,
    rules: Vec<Rule>,
    signals: SignalWatch,
    ui: Ui,
    warned: Cell<bool>,
}

impl Remote {
    /// Reads the trust rules. Errors: a trust file that cannot be read (one line).
    pub fn open(ui: Ui, signals: &SignalWatch) -> Result<Remote> {
        Ok(Remote {
            registry: Registry::with_signals(signals.clone(), fetch::retries_from_env()),
            http: Http::new(),
            rules: trust::load(&trust::files())?,
            signals: signals.clone(),
            ui,
            warned: Cell::new(false),
        })
    }

    fn fetcher(&self) -> Fetcher<'_> {
        Fetcher::new(&self.http, &self.registry, self.ui, &self.signals)
    }

    fn lock(&self, dir: &StashDir, name: &str, mode: Mode) -> Result<EntryLock> {
        let ui = self.ui;
        dir.lock(name, mode, &self.signals, move || {
            ui.info(&format!(
                "waiting for {name}: another boxbuild is writing it"
            ))
        })
    }

    /// For a stackbuild: the image `reference` names, pulled into the cache unless it is
    /// there (only the blobs the cache lacks, under the entry's exclusive lock, released
    /// again); its manifest digest. A digest reference found in the cache needs no
    /// registry, unless a trust rule asks for its signature. A stackbuild pulls all its
    /// references first and then `hold`s them, so two stackbuilds never wait for each
    /// other's locks in turn. Errors: as `pull`.
    pub fn cache(&self, dir: &StashDir, reference: &BoxReference) -> Result<String> {
        let name = cache_name(reference);
        let tag = cache_tag(reference);
        if reference.digest().is_some() && trust::rule_for(&self.rules, &reference.text).is_none() {
            let _reading = self.lock(dir, &name, Mode::Shared)?;
            if let Some(digest) = find(dir, &name, &tag, None) {
                self.ui.detail(&format!("{}: in the cache", reference.text));
                return Ok(digest);
            }
        }
        let resolved = self.resolve(reference)?;
        {
            let _reading = self.lock(dir, &name, Mode::Shared)?;
            if find(dir, &name, &tag, Some(&resolved.digest)).is_some() {
                self.ui.detail(&format!(
                    "{}: {} is in the cache",
                    reference.text, resolved.digest
                ));
                return Ok(resolved.digest);
            }
        }
        self.store(dir, reference, &resolved, &name, &tag)
    }

    /// The cache entry of `reference` at `digest` (what `cache` returned), with its shared
    /// lock, held while the box reads it: stackbuilds of one reference run side by side.
    /// Errors: the version is gone (another boxbuild moved the tag meanwhile).
    pub fn hold(
        &self,
        dir: &StashDir,
        reference: &BoxReference,
        digest: &str,
    ) -> Result<(EntryLock, Source)> {
        let name = cache_name(reference);
        let lock = self.lock(dir, &name, Mode::Shared)?;
        match find(dir, &name, &cache_tag(reference), Some(digest)) {
            Some(manifest) => Ok((
                lock,
                Source::Layout {
                    dir: dir.path(&name),
                    manifest,
                },
            )),
            None => Err(Error::setup(format!(
                "{}: another boxbuild moved its tag in the cache meanwhile; run again",
                reference.text
            ))),
        }
    }

    /// `stash pull`: the image `reference` names as version `tag` of stash `name` (a new
    /// stash, or a version added to an OCI layout). Returns the manifest digest. Errors,
    /// one line: the registry's (unreachable, refused, unknown repository or tag), a bad
    /// signature where a trust rule asks for one, no container image, a blob that does not
    /// match its digest; the stash is then as it was.
    pub fn pull(
        &self,
        dir: &StashDir,
        reference: &BoxReference,
        name: &str,
        tag: &str,
    ) -> Result<String> {
        let resolved = self.resolve(reference)?;
        self.store(dir, reference, &resolved, name, tag)
    }

    /// What `reference` names, its signature checked where a trust rule asks for one.
    fn resolve(&self, reference: &BoxReference) -> Result<image::Resolved> {
        let resolved = image::resolve(&self.registry, reference)?;
        if !self.warned.replace(true) {
            for warning in self.registry.warnings() {
                self.ui.warn(warning);
            }
        }
        resolve::check_trust(&self.registry, &self.rules, reference, &resolved.top)?;
        Ok(resolved)
    }

    /// Fetches what the layout `name` lacks of `resolved` and commits it as `name:tag`,
    /// under the name's exclusive lock (nothing to do when it is there already, also when
    /// another boxbuild holding the lock put it there).
    fn store(
        &self,
        dir: &StashDir,
        reference: &BoxReference,
        resolved: &image::Resolved,
        name: &str,
        tag: &str,
    ) -> Result<String> {
        // Another boxbuild writing or reading the name may have what is wanted: looked for
        // while waiting, so a stackbuild never waits for another one to end.
        let mut told = false;
        let _writing = loop {
            if let Some(lock) = dir.try_lock(name, Mode::Exclusive)? {
                break lock;
            }
            if let Some(_reading) = dir.try_lock(name, Mode::Shared)? {
                if find(dir, name, tag, Some(&resolved.digest)).is_some() {
                    return Ok(resolved.digest.clone());
                }
            }
            if !std::mem::replace(&mut told, true) {
                self.ui
                    .info(&format!("waiting for {name}: another boxbuild is using it"));
            }
            if let Some(sig) = self.signals.pending() {
                return Err(Error::Interrupted(sig));
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        };
        if dir.path(name).exists() {
            // An oci-archive of kiwi, or no OCI layout: refused as for a new layer.
            dir.newest(name)?;
        }
        if find(dir, name, tag, Some(&resolved.digest)).is_some() {
            self.ui.detail(&format!(
                "{}: {} is at hand",
                reference.text, resolved.digest
            ));
            return Ok(resolved.digest.clone());
        }
        let layout = dir.path(name);
        let staging = dir.staging(name)?;
        let out = staging.path().join("out");
        let have = |digest: &str| blob_path(&layout, digest).is_file();
        let fetched = image::fetch(
            &self.fetcher(),
            reference,
            resolved,
            &out,
            have,
            &reference.text,
        )?;
        let result = json!({"manifest": {
            "mediaType": crate::boxes::oci::format::MANIFEST_MEDIA_TYPE,
            "digest": resolved.digest,
            "size": resolved.size(),
        }});
        std::fs::write(out.join("result.json"), result.to_string())
            .context(|| format!("cannot write {}", out.display()))?;
        let digest = dir.commit(name, tag, &out)?;
        self.ui.info(&format!(
            "pulled {} ({digest}, {:.1} MiB fetched)",
            reference.text,
            fetched as f64 / (1024.0 * 1024.0)
        ));
        Ok(digest)
    }

    /// Whether `target`'s registry answers and lets this user push to its repository (a
    /// HEAD request for a blob, authenticated for pushing), before a build whose stash
    /// goes there. Errors: one line naming the target.
    pub fn check_target(&self, target: &BoxReference) -> Result<()> {
        let empty = crate::sys::digest::sha256_digest(b"");
        self.registry
            .has_blob(&target.inner, &empty)
            .map(|_| ())
            .map_err(|e| e.explain(&target.text, target.inner.registry()))
    }

    /// `stash push`: version `stash` of the stash dir to `target` (its tag, else the
    /// stash's), blobs the registry lacks first, the manifest as stored (the digest stays),
    /// signed with `key` (from [`signing_key`]). Returns the digest.
    /// Errors, one line, before anything is sent where they can be: an unknown stash or
    /// tag, an oci-archive of kiwi, a target without a tag or with a digest.
    /// `held`: the name's lock, when the caller holds it already (else it is taken shared).
    pub fn push(
        &self,
        dir: &StashDir,
        stash: &StashRef,
        target: &BoxReference,
        key: Option<&SigningKey>,
        held: Option<&EntryLock>,
    ) -> Result<(String, BoxReference)> {
        if target.digest().is_some() {
            return Err(Error::setup(format!(
                "{}: push to a tag (oci://REGISTRY/REPOSITORY[:TAG]), not a digest",
                target.text
            )));
        }
        let target = match (target.written_tag(), &stash.pin) {
            (Some(_), _) => target.clone(),
            (None, Pin::Tag(tag)) => target.at_tag(tag),
            (None, Pin::Digest(_)) => {
                return Err(Error::setup(format!(
                    "{}: name the tag to push {stash} as (oci://REGISTRY/REPOSITORY:TAG)",
                    target.text
                )))
            }
        };
        let _reading = match held {
            Some(_) => None,
            None => Some(self.lock(dir, &stash.name, Mode::Shared)?),
        };
        let (layout_dir, manifest) = match dir.resolve(stash)? {
            Source::Layout { dir, manifest } => (dir, manifest),
            Source::Archive { file, reference } => {
                return Err(Error::setup(format!(
                    "stash {stash} is an oci-archive of kiwi-ng system stash; push it with 'skopeo copy oci-archive:{}:{reference} docker://...'",
                    file.display()
                )))
            }
        };
        let layout = Layout {
            text: format!("oci:{}@{manifest}", layout_dir.display()),
            dir: layout_dir,
            tag: None,
            digest: Some(manifest),
        };
        let digest = image::push_image(
            &self.registry,
            self.ui,
            &layout,
            &target,
            key,
            &format!("stash {stash}"),
        )?;
        Ok((digest, target))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(text: &str, from: Option<&str>) -> String {
        match wanted(text, from).unwrap() {
            Wanted::Remote(r) => r.text,
            Wanted::Local(s) => panic!("local {s}"),
        }
    }

    #[test]
    fn stash_values_and_from_registry() {
        assert!(matches!(wanted("base:1", None).unwrap(), Wanted::Local(_)));
        assert_eq!(
            remote("base:1", Some("oci://127.0.0.1:5000/os/")),
            "oci://127.0.0.1:5000/os/base:1"
        );
        assert_eq!(
            remote("base", Some("docker://registry.example.org/os")),
            "oci://registry.example.org/os/base:latest"
        );
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            remote(&format!("base@{d}"), Some("oci://r.example.org/os")),
            format!("oci://r.example.org/os/base@{d}")
        );
        assert_eq!(
            remote("oci://r.example.org/x/y:2", Some("oci://other.org/p")),
            "oci://r.example.org/x/y:2"
        );
        for (text, from, says) in [
            (
                "my_base",
                Some("oci://r.example.org/os"),
                "kiwi accepts only",
            ),
            ("base", Some("registry.example.org/os"), "give oci://HOST"),
            ("base", Some("oci://"), "give oci://HOST"),
            ("base", Some("oci://os"), "--from-registry oci://os: "),
            ("oci://nohost/x:1", None, "not a registry host"),
        ] {
            let e = wanted(text, from).unwrap_err().to_string();
            assert!(e.contains(says), "{text} {from:?}: {e}");
        }
    }

    #[test]
    fn cache_names_and_tags() {
        let r = BoxReference::parse("oci://127.0.0.1:5000/os/base:1").unwrap();
        assert_eq!(cache_name(&r), ".registry/127.0.0.1_5000_os_base");
        assert_eq!(cache_tag(&r), "1");
        let d = format!("sha256:{}", "b".repeat(64));
        let pinned = r.at_digest(&d);
        assert_eq!(cache_tag(&pinned), format!("sha256-{}", "b".repeat(64)));
        assert!(super::super::valid_tag(&cache_tag(&pinned)));
    }
}
