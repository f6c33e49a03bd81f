//! From an `oci://` reference to a catalog of one box: the tag resolved to an index digest
//! (once per update interval; a digest reference never again once known), each
//! architecture's manifest and config read, the signature checked against the trust rules,
//! and the result kept under `ROOT/catalogs/oci/` so later runs need no network at all.

use super::client::{Registry, RegistryError};
use super::format::{self, BoxConfig};
use super::signature;
use super::source::{RegistrySource, Source};
use crate::boxes::catalog::{Catalog, Refresh};
use crate::boxes::reference::BoxReference;
use crate::boxes::trust::Rule;
use crate::sys::error::{Error, Result};
use crate::sys::ui::Ui;
use oci_client::manifest::{OciImageIndex, OciImageManifest};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What a resolution found, as kept on disk. Documents are kept as the registry sent
/// them, so their digests can be checked again and signatures verified offline.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Resolution {
    pub reference: String,
    /// When the tag was last resolved (seconds since the epoch).
    pub resolved_at: u64,
    /// `sha256:HEX` of the index (or of the single manifest).
    pub digest: String,
    pub index: String,
    /// Per-architecture manifests and their configs, by digest.
    pub manifests: BTreeMap<String, String>,
    pub configs: BTreeMap<String, String>,
    /// Signature layers found (payload, base64 signature); `None`: not looked up.
    pub signatures: Option<Vec<SignatureLayer>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignatureLayer {
    pub payload: String,
    pub signature: String,
}

/// What resolving needs from its caller.
pub struct Resolver<'a> {
    pub registry: &'a Registry,
    pub cache_dir: PathBuf,
    pub refresh: Refresh,
    /// How old a tag resolution may be before it is checked again.
    pub interval_secs: u64,
    pub rules: &'a [Rule],
    pub ui: Ui,
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Resolver<'_> {
    fn cache_path(&self, reference: &BoxReference) -> PathBuf {
        self.cache_dir
            .join("oci")
            .join(format!("{}.json", reference.file_name()))
    }

    /// The catalog for `reference`, and the box name in it. Errors: one line naming the
    /// reference: not found, refused, unsigned or badly signed, not a box.
    pub fn catalog(&self, reference: &BoxReference) -> Result<(Catalog, String)> {
        let path = self.cache_path(reference);
        let cached: Option<Resolution> = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .filter(|r: &Resolution| r.reference == reference.text);
        let rule = crate::boxes::trust::rule_for(self.rules, &reference.text);
        let source = RegistrySource {
            registry: self.registry,
            reference,
        };
        let due = match (&cached, reference.digest(), self.refresh) {
            (None, _, _) => true,
            (Some(_), Some(_), _) => false,
            (Some(_), None, Refresh::Never) => false,
            (Some(_), None, Refresh::Now) => true,
            (Some(c), None, Refresh::WhenDue) => {
                now_secs().saturating_sub(c.resolved_at) >= self.interval_secs
            }
        };
        let mut resolution = match (due, cached) {
            (false, Some(c)) => c,
            (_, cached) => match self.resolve(&source, cached.as_ref()) {
                Ok(fresh) => {
                    self.keep(&path, &fresh);
                    fresh
                }
                Err(e) => match (cached, &e) {
                    (Some(c), RegistryError::Transient(m)) if self.refresh != Refresh::Now => {
                        self.ui.warn(&format!(
                            "{}: the registry cannot be reached ({m}); using what it said {} ago",
                            reference.text,
                            humantime::format_duration(std::time::Duration::from_secs(
                                now_secs().saturating_sub(c.resolved_at)
                            ))
                        ));
                        c
                    }
                    _ => return Err(e.explain(&reference.text, reference.inner.registry())),
                },
            },
        };
        if let Some(rule) = rule {
            // Looked up again on every use: a box signed since, or a signature removed,
            // counts now. Offline, the signatures seen last time are checked again.
            match signatures(&source, &resolution.digest) {
                Ok(found) => {
                    if resolution.signatures.as_ref() != Some(&found) {
                        resolution.signatures = Some(found);
                        self.keep(&path, &resolution);
                    }
                }
                Err(RegistryError::Transient(m))
                    if resolution
                        .signatures
                        .as_ref()
                        .is_some_and(|s| !s.is_empty()) =>
                {
                    self.ui.warn(&format!(
                        "{}: the registry cannot be reached ({m}); checking the signatures it had before",
                        reference.text
                    ));
                }
                Err(e) => return Err(e.explain(&reference.text, reference.inner.registry())),
            }
            check_signatures(
                &reference.text,
                &resolution.digest,
                resolution.signatures.as_deref().unwrap_or_default(),
                rule,
            )?;
        }
        let name = reference.box_name();
        let catalog = to_catalog(&source, &resolution, &name)?;
        Ok((catalog, name))
    }

    /// The catalog for a box in an OCI image layout directory: read afresh every time (it is
    /// local), checked against the trust rules like a registry box.
    pub fn layout_catalog(&self, layout: &super::layout::Layout) -> Result<(Catalog, String)> {
        // The layout's errors name its files; nothing about a registry applies.
        let explain = |e: RegistryError| match e {
            RegistryError::Invalid(m)
            | RegistryError::Refused(_, m)
            | RegistryError::Transient(m) => Error::setup(format!("{}: {m}", layout.text)),
            other => other.explain(&layout.text, &layout.dir.display().to_string()),
        };
        let mut resolution = self.resolve(layout, None).map_err(explain)?;
        if let Some(rule) = crate::boxes::trust::rule_for(self.rules, &layout.text) {
            resolution.signatures = Some(signatures(layout, &resolution.digest).map_err(explain)?);
            check_signatures(
                &layout.text,
                &resolution.digest,
                resolution.signatures.as_deref().unwrap_or_default(),
                rule,
            )?;
        }
        let name = layout.box_name();
        let catalog = to_catalog(layout, &resolution, &name)?;
        Ok((catalog, name))
    }

    /// The tags of `repository` that look like versions (they start with a digit), newest
    /// first; listed once per update interval and kept, like a remote catalog.
    pub fn version_tags(&self, repository: &BoxReference) -> Result<Vec<String>> {
        #[derive(Serialize, Deserialize)]
        struct Kept {
            repository: String,
            listed_at: u64,
            tags: Vec<String>,
        }
        let path = self
            .cache_dir
            .join("oci")
            .join(format!("{}.tags", repository.box_name()));
        let kept: Option<Kept> = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .filter(|k: &Kept| k.repository == repository.repository_text());
        let due = match (&kept, self.refresh) {
            (None, _) | (Some(_), Refresh::Now) => true,
            (Some(_), Refresh::Never) => false,
            (Some(k), Refresh::WhenDue) => {
                now_secs().saturating_sub(k.listed_at) >= self.interval_secs
            }
        };
        let mut tags = match (due, kept) {
            (false, Some(k)) => k.tags,
            (_, kept) => match self.registry.tags(&repository.inner) {
                Ok(tags) => {
                    let fresh = Kept {
                        repository: repository.repository_text(),
                        listed_at: now_secs(),
                        tags,
                    };
                    if let Some(dir) = path.parent() {
                        let _ = std::fs::create_dir_all(dir);
                    }
                    // Cannot fail: derived Serialize of strings and numbers.
                    let bytes = serde_json::to_vec(&fresh).expect("serialisable");
                    let _ = crate::sys::atomic::write_atomically(&path, &bytes);
                    fresh.tags
                }
                Err(RegistryError::Transient(m))
                    if kept.is_some() && self.refresh != Refresh::Now =>
                {
                    self.ui.warn(&format!(
                        "{}: the registry cannot be reached ({m}); using the tags it listed before",
                        repository.repository_text()
                    ));
                    kept.map(|k| k.tags).unwrap_or_default()
                }
                Err(e) => {
                    return Err(
                        e.explain(&repository.repository_text(), repository.inner.registry())
                    )
                }
            },
        };
        tags.retain(|t| t.starts_with(|c: char| c.is_ascii_digit()));
        tags.sort_by(|a, b| crate::boxes::catalog::compare_versions(b, a));
        Ok(tags)
    }

    fn keep(&self, path: &Path, resolution: &Resolution) {
        // Cannot fail: derived Serialize of strings and maps.
        let bytes = serde_json::to_vec_pretty(resolution).expect("serialisable");
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Err(e) = crate::sys::atomic::write_atomically(path, &bytes) {
            self.ui.warn(&format!(
                "cannot keep the resolution of a registry box: {e}"
            ));
        }
    }

    fn resolve(
        &self,
        source: &dyn Source,
        cached: Option<&Resolution>,
    ) -> std::result::Result<Resolution, RegistryError> {
        let (bytes, digest) = source.top()?;
        if let Some(c) = cached.filter(|c| c.digest == digest) {
            // The tag still names the same box: nothing else to read.
            return Ok(Resolution {
                resolved_at: now_secs(),
                ..c.clone()
            });
        }
        let index_text = String::from_utf8(bytes)
            .map_err(|_| RegistryError::Invalid("the index is not UTF-8 JSON".into()))?;
        let mut manifests = BTreeMap::new();
        let mut configs = BTreeMap::new();
        let digests = manifest_digests(&index_text, &digest).map_err(RegistryError::Invalid)?;
        for manifest_digest in digests {
            let text = if manifest_digest == digest {
                index_text.clone()
            } else {
                String::from_utf8(source.manifest(&manifest_digest)?)
                    .map_err(|_| RegistryError::Invalid("a manifest is not UTF-8 JSON".into()))?
            };
            let manifest: OciImageManifest = serde_json::from_str(&text)
                .map_err(|e| RegistryError::Invalid(format!("manifest {manifest_digest}: {e}")))?;
            let media_type = manifest.config.media_type.as_str();
            if media_type != format::CONFIG_MEDIA_TYPE
                && !super::box_image::is_image_config(media_type)
            {
                return Err(RegistryError::Invalid(
                    format!(
                        "manifest {manifest_digest} is not a boxbuild box (its config is '{media_type}', a box's is '{}' or a container image's)",
                        format::CONFIG_MEDIA_TYPE
                    ),
                ));
            }
            let config = source.blob(&manifest.config.digest)?;
            let config = String::from_utf8(config)
                .map_err(|_| RegistryError::Invalid("a box config is not UTF-8".into()))?;
            configs.insert(manifest.config.digest.clone(), config);
            manifests.insert(manifest_digest, text);
        }
        Ok(Resolution {
            reference: source.text().to_string(),
            resolved_at: now_secs(),
            digest,
            index: index_text,
            manifests,
            configs,
            signatures: None,
        })
    }
}

/// The cosign signature layers stored for `digest`; none when there is no signature tag.
fn signatures(
    source: &dyn Source,
    digest: &str,
) -> std::result::Result<Vec<SignatureLayer>, RegistryError> {
    let Some(bytes) = source.tagged(&signature::signature_tag(digest))? else {
        return Ok(Vec::new());
    };
    let manifest: OciImageManifest = serde_json::from_slice(&bytes)
        .map_err(|e| RegistryError::Invalid(format!("signature manifest: {e}")))?;
    let mut found = Vec::new();
    for layer in manifest
        .layers
        .iter()
        .filter(|l| l.media_type == signature::PAYLOAD_MEDIA_TYPE)
    {
        let Some(sig) = layer
            .annotations
            .as_ref()
            .and_then(|a| a.get(signature::SIGNATURE_ANNOTATION))
        else {
            continue;
        };
        let payload = source.blob(&layer.digest)?;
        found.push(SignatureLayer {
            payload: String::from_utf8_lossy(&payload).into_owned(),
            signature: sig.clone(),
        });
    }
    Ok(found)
}

/// The manifests an index lists for boxes, or the document itself when it is a single
/// box manifest.
pub(super) fn manifest_digests(
    text: &str,
    digest: &str,
) -> std::result::Result<Vec<String>, String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Kind {
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
    }
    let kind: Kind = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    if kind.manifests.is_none() {
        return Ok(vec![digest.to_string()]);
    }
    let index: OciImageIndex =
        serde_json::from_str(text).map_err(|e| format!("not an OCI image index: {e}"))?;
    let _ = kind.media_type;
    Ok(index
        .manifests
        .iter()
        .filter(|m| m.platform.is_some())
        .map(|m| m.digest.clone())
        .collect())
}

/// Whether one of `signatures` (the layers stored beside `digest`) is a valid signature
/// of `digest` by one of the rule's keys, naming the repository the rule expects. Errors:
/// one line naming `text` (the reference) and why: unsigned, signed by another key, for
/// another manifest or repository.
fn check_signatures(
    text: &str,
    digest: &str,
    signatures: &[SignatureLayer],
    rule: &Rule,
) -> Result<()> {
    let keys_shown: Vec<String> = rule.keys.iter().map(|k| k.display().to_string()).collect();
    let keys_shown = keys_shown.join(", ");
    if rule.keys.is_empty() {
        return Err(Error::setup(format!(
            "{}: {} binds it to an OpenPGP keyring only, which signs catalogs; add a P-256 public key ('keys') to verify registry boxes",
            text,
            rule.origin.display()
        )));
    }
    let Some(identity) = rule.expected_identity(text) else {
        return Err(Error::setup(format!(
            "{}: {} requires a signature, but a layout has no repository of its own for the signature to name; add signed_identity = \"oci://REGISTRY/REPOSITORY\" (where the box was signed) to that rule",
            text,
            rule.origin.display()
        )));
    };
    if signatures.is_empty() {
        return Err(Error::setup(format!(
            "{}: refused: unsigned (no signature for {} beside it), but {} requires one by {keys_shown}; sign it with 'boxbuild box sign' or use a signed reference",
            text,
            digest,
            rule.origin.display()
        )));
    }
    let mut why = Vec::new();
    for key_path in &rule.keys {
        let key = signature::load_verifying_key(key_path).map_err(Error::setup)?;
        for layer in signatures {
            match signature::verify(
                &key,
                layer.payload.as_bytes(),
                &layer.signature,
                digest,
                &identity,
            ) {
                Ok(()) => return Ok(()),
                Err(signature::Rejection::BadSignature) => why.push(format!(
                    "a signature that does not verify with {}",
                    key_path.display()
                )),
                Err(signature::Rejection::OtherDigest(d)) => {
                    why.push(format!("a signature for another manifest ({d})"))
                }
                Err(signature::Rejection::OtherIdentity(signed)) => why.push(format!(
                    "a signature made for {signed}, not {identity}; to accept a mirror's copies, name the signed repository with signed_identity or signed_prefix in {}",
                    rule.origin.display()
                )),
            }
        }
    }
    why.sort();
    why.dedup();
    Err(Error::setup(format!(
        "{}: refused: no valid signature by {keys_shown} for {} (found {}); it was re-signed by another key or changed after signing",
        text,
        digest,
        why.join("; ")
    )))
}

/// The first disk under `/disk/` in a container image's layers (last layer first), as
/// KIWI's `format="oci:<fmt>"` images hold theirs; only the layers' first members are
/// read. `None` when none is seen or a layer cannot be read.
fn disk_in_layers(source: &dyn Source, manifest: &OciImageManifest) -> Option<String> {
    manifest.layers.iter().rev().find_map(|layer| {
        let reader = source.open_blob(&layer.digest).ok()?;
        crate::sys::archive::first_file(reader, 64, 64 * 1024 * 1024, |name| {
            name.starts_with("disk/")
        })
        .ok()
        .flatten()
        .map(|name| format!("/{name}"))
    })
}

/// Checks `digest`, what `reference` names now, against the trust rule for `reference`
/// (none: nothing to check), reading the signatures stored beside it from the registry,
/// as for a registry box. Errors: one line naming the reference (unreachable, unsigned,
/// badly signed).
pub fn check_trust(
    registry: &Registry,
    rules: &[Rule],
    reference: &BoxReference,
    digest: &str,
) -> Result<()> {
    let Some(rule) = crate::boxes::trust::rule_for(rules, &reference.text) else {
        return Ok(());
    };
    let source = RegistrySource {
        registry,
        reference,
    };
    let found = signatures(&source, digest)
        .map_err(|e| e.explain(&reference.text, reference.inner.registry()))?;
    check_signatures(&reference.text, digest, &found, rule)
}

/// The box described by a resolution, as a catalog with one box named `name`.
pub fn to_catalog(source: &dyn Source, resolution: &Resolution, name: &str) -> Result<Catalog> {
    let bad = |what: String| Error::setup(format!("{}: {what}", source.text()));
    let mut versions = Vec::new();
    let mut description = String::new();
    for (digest, text) in &resolution.manifests {
        if crate::sys::digest::sha256_digest(text.as_bytes()) != *digest {
            return Err(bad(format!(
                "the kept manifest {digest} is damaged; run 'boxbuild box update'"
            )));
        }
        let manifest: OciImageManifest =
            serde_json::from_str(text).map_err(|e| bad(format!("manifest {digest}: {e}")))?;
        let config_text = resolution
            .configs
            .get(&manifest.config.digest)
            .ok_or_else(|| bad(format!("manifest {digest}: its config was not read")))?;
        let blob_url = |blob: &str| source.blob_url(blob);
        let version = if super::box_image::is_image_config(&manifest.config.media_type) {
            match super::box_image::box_labels(config_text, &manifest) {
                Some(labels) => super::box_image::version_entry(&labels, &manifest, blob_url),
                None => Err(super::box_image::not_a_box(
                    disk_in_layers(source, &manifest).as_deref(),
                )),
            }
        } else {
            serde_json::from_str::<BoxConfig>(config_text)
                .map_err(|e| format!("bad box config: {e}"))
                .and_then(|config| {
                    if description.is_empty() {
                        description = config.description.clone();
                    }
                    format::version_entry(&config, &manifest, blob_url)
                })
        }
        .map_err(|m| bad(format!("manifest {digest}: {m}")))?;
        versions.push(version);
    }
    if versions.is_empty() {
        return Err(bad("the index lists no box for any architecture".into()));
    }
    Catalog::of_one(name, description, versions, source.text())
}
