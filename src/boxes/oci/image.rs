//! Container images (OCI image spec: an image manifest, its config and its layers) moved
//! between a registry (OCI distribution spec) and an OCI image layout on disk, for stashes
//! (docs/stash.md, "Registries"). A pull reads what a tag or digest names (of an image
//! index, the entry for linux on this machine's architecture, as podman picks it) and
//! fetches each blob the layout lacks with the resumable fetcher, checked against its
//! digest. A push uploads the blobs the registry lacks and then the manifest byte for byte
//! (so its digest stays), and signs it as `box push --sign-key` does.

use super::client::{Registry, RegistryError};
use super::format::{oci_arch, IMAGE_CONFIG_MEDIA_TYPE, INDEX_MEDIA_TYPE, MANIFEST_MEDIA_TYPE};
use super::layout::Layout;
use super::push::{self, Blob};
use super::source::Source;
use crate::boxes::fetch::{Download, Fetcher};
use crate::boxes::reference::BoxReference;
use crate::sys::digest::sha256_hex;
use crate::sys::error::{Error, Result};
use crate::sys::ui::Ui;
use oci_client::manifest::{OciDescriptor, OciImageIndex, OciImageManifest};
use std::path::Path;

/// What a reference names, resolved to one image manifest.
#[derive(Debug)]
pub struct Resolved {
    /// `sha256:HEX` of what the reference names (an index, or the manifest itself): the
    /// digest a signature signs.
    pub top: String,
    /// The image manifest as the registry stores it, and its `sha256:HEX`.
    pub manifest: Vec<u8>,
    pub digest: String,
    /// Config first, then the layers in order.
    pub blobs: Vec<OciDescriptor>,
}

impl Resolved {
    /// The manifest's size in bytes (for an index entry).
    pub fn size(&self) -> u64 {
        self.manifest.len() as u64
    }
}

/// One line for a registry error about `reference`. An unknown tag of a repository that
/// exists names the tags there are.
pub fn explain(registry: &Registry, reference: &BoxReference, e: RegistryError) -> Error {
    if let (RegistryError::NotFound, Some(tag)) = (&e, reference.inner.tag()) {
        if reference.digest().is_none() {
            if let Ok(tags) = registry.tags(&reference.inner) {
                if !tags.is_empty() {
                    return Error::setup(format!(
                        "{}: no tag '{tag}' in {} (tags: {})",
                        reference.text,
                        reference.repository_text(),
                        tags.join(", ")
                    ));
                }
            }
        }
    }
    e.explain(&reference.text, reference.inner.registry())
}

/// Reads what `reference` names: an OCI image manifest, or of an OCI image index the
/// manifest for linux on this machine's architecture. Errors, one line naming the
/// reference: the registry's (unreachable, refused, unknown repository or tag), an index
/// without this platform, a document that is no OCI container image (a Docker schema 2
/// manifest, which `skopeo copy --format oci` converts; a boxbuild box).
pub fn resolve(registry: &Registry, reference: &BoxReference) -> Result<Resolved> {
    let bad = |what: String| Error::setup(format!("{}: {what}", reference.text));
    let (bytes, top) = registry
        .manifest(&reference.inner)
        .map_err(|e| explain(registry, reference, e))?;
    let (manifest, digest) = match media_type(&bytes).as_str() {
        INDEX_MEDIA_TYPE => {
            let index: OciImageIndex = serde_json::from_slice(&bytes)
                .map_err(|e| bad(format!("not an OCI image index: {e}")))?;
            let arch = oci_arch(std::env::consts::ARCH);
            let entry = index
                .manifests
                .iter()
                .find(|m| {
                    m.platform
                        .as_ref()
                        .is_some_and(|p| p.os == "linux".into() && p.architecture == arch.into())
                })
                .ok_or_else(|| bad(format!("the index lists no image for linux/{arch}")))?;
            registry
                .manifest(&reference.at_digest(&entry.digest).inner)
                .map_err(|e| explain(registry, reference, e))?
        }
        _ => (bytes, top.clone()),
    };
    let kind = media_type(&manifest);
    if kind != MANIFEST_MEDIA_TYPE {
        return Err(bad(format!(
            "a '{kind}', not an OCI image manifest; copy it as OCI with 'skopeo copy --format oci'"
        )));
    }
    let parsed: OciImageManifest =
        serde_json::from_slice(&manifest).map_err(|e| bad(format!("manifest {digest}: {e}")))?;
    if parsed.config.media_type != IMAGE_CONFIG_MEDIA_TYPE {
        return Err(bad(format!(
            "not a container image (its config is '{}')",
            parsed.config.media_type
        )));
    }
    let blobs: Vec<OciDescriptor> = std::iter::once(parsed.config)
        .chain(parsed.layers)
        .collect();
    if let Some(b) = blobs.iter().find(|b| sha256_hex(&b.digest).is_none()) {
        return Err(bad(format!("manifest {digest} names blob {:?}", b.digest)));
    }
    Ok(Resolved {
        top,
        manifest,
        digest,
        blobs,
    })
}

/// The `mediaType` a document declares; without one, an index or an image manifest by
/// its shape (`manifests`, `config`), else what it is (a Docker schema 1 manifest).
fn media_type(bytes: &[u8]) -> String {
    let value: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_default();
    match value.get("mediaType").and_then(|m| m.as_str()) {
        Some(declared) => declared.to_string(),
        None if value.get("manifests").is_some() => INDEX_MEDIA_TYPE.to_string(),
        None if value.get("config").is_some() => MANIFEST_MEDIA_TYPE.to_string(),
        None => format!("schema {} manifest", value["schemaVersion"]),
    }
}

/// Writes the manifest of `resolved` and fetches its config and layers into
/// `into/blobs/sha256/`, each checked against its digest and size, skipping the blobs
/// `have` says are at hand. Returns the bytes fetched. Progress is shown per layer,
/// labelled `label`.
pub fn fetch(
    fetcher: &Fetcher,
    reference: &BoxReference,
    resolved: &Resolved,
    into: &Path,
    have: impl Fn(&str) -> bool,
    label: &str,
) -> Result<u64> {
    let dir = into.join("blobs/sha256");
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::setup(format!("cannot create {}: {e}", dir.display())))?;
    let manifest_hex = sha256_hex(&resolved.digest).unwrap_or_default();
    crate::sys::atomic::write_atomically(&dir.join(manifest_hex), &resolved.manifest)?;
    let mut fetched = 0;
    for blob in &resolved.blobs {
        if have(&blob.digest) {
            continue;
        }
        let Some(hex) = sha256_hex(&blob.digest) else {
            continue; // resolve() refused such a manifest.
        };
        let url = reqwest::Url::parse(&format!("{}@{}", reference.repository_text(), blob.digest))
            .map_err(|e| Error::setup(format!("{}: {e}", reference.text)))?;
        let size = u64::try_from(blob.size).ok();
        fetcher.fetch(&Download {
            url: &url,
            dest: dir.join(hex),
            size,
            sha256: hex,
            label: format!("{label}: {}", short(&blob.digest)),
        })?;
        fetched += size.unwrap_or(0);
    }
    Ok(fetched)
}

/// `sha256:` and the first 12 hex digits, for progress lines.
fn short(digest: &str) -> &str {
    digest.get(..19).unwrap_or(digest)
}

/// Pushes the image manifest `layout` names (by its tag or digest) to `target`, which
/// names the tag: the config and layers the registry lacks first, then the manifest as
/// stored, so its digest is the same there; with `key`, a cosign-style signature of that
/// digest beside it. Returns the digest. Errors: one line naming the layout (a missing
/// tag, a damaged blob) or the target (refused, unreachable).
pub fn push_image(
    registry: &Registry,
    ui: Ui,
    layout: &Layout,
    target: &BoxReference,
    key: Option<&p256::ecdsa::SigningKey>,
    label: &str,
) -> Result<String> {
    let local = |e: RegistryError| match e {
        RegistryError::Invalid(m) => Error::setup(format!("{}: {m}", layout.text)),
        other => other.explain(&layout.text, &layout.dir.display().to_string()),
    };
    let to = |e: RegistryError| e.explain(&target.text, target.inner.registry());
    let (bytes, digest) = layout.top().map_err(local)?;
    if media_type(&bytes) != MANIFEST_MEDIA_TYPE {
        return Err(Error::setup(format!(
            "{}: {digest} is not an OCI image manifest",
            layout.text
        )));
    }
    let manifest: OciImageManifest = serde_json::from_slice(&bytes)
        .map_err(|e| Error::setup(format!("{}: manifest {digest}: {e}", layout.text)))?;
    for blob in std::iter::once(&manifest.config).chain(&manifest.layers) {
        let path = layout.blob_path(&blob.digest).map_err(local)?;
        if !path.is_file() {
            return Err(Error::setup(format!(
                "{}: blob {} is missing ({})",
                layout.text,
                blob.digest,
                path.display()
            )));
        }
        let file = Blob {
            path: &path,
            digest: &blob.digest,
            size: u64::try_from(blob.size).unwrap_or(0),
        };
        push::upload_file(
            registry,
            ui,
            target,
            &format!("{label}: {}", short(&blob.digest)),
            None,
            &file,
        )
        .map_err(to)?;
    }
    registry
        .push_manifest(&target.inner, bytes.clone(), MANIFEST_MEDIA_TYPE)
        .map_err(to)?;
    if let Some(key) = key {
        push::sign_digest(registry, target, &digest, key).map_err(to)?;
    }
    Ok(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_digests() {
        let d = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(short(&d), "sha256:abababababab");
        assert_eq!(short("x"), "x");
    }
}
