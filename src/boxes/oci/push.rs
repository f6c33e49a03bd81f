//! `boxbuild box push` and `box sign`: a box version, every architecture at hand or
//! fetchable, into a registry as one OCI image index (docs/oci-boxes.md), uploading only
//! the blobs the registry lacks, and a cosign-compatible signature beside it.

use super::client::{Registry, RegistryError};
use super::format::{self, BoxConfig};
use super::signature;
use crate::boxes::catalog::Role;
use crate::boxes::fetch::progress::Progress;
use crate::boxes::reference::BoxReference;
use crate::boxes::store::ReadyBox;
use crate::sys::error::{Error, Result};
use crate::sys::ui::Ui;
use oci_client::manifest::{ImageIndexEntry, OciDescriptor, Platform};
use std::collections::BTreeMap;
use std::path::Path;

/// One architecture of the version, ready on disk, with its settings.
pub struct ArchBox {
    pub ready: ReadyBox,
    pub config: BoxConfig,
}

/// How to push.
pub struct Options<'a> {
    /// Sign the index with this key (PKCS#8 PEM).
    pub sign_key: Option<&'a Path>,
    /// Store the disk zstd-compressed.
    pub zstd_disk: bool,
    /// Where a compressed disk is written before upload (its digest must be known first).
    pub scratch: std::path::PathBuf,
}

/// Pushes the architectures as one index under `target` (which must carry a tag);
/// returns the index digest. With a sign key, signs it too.
pub fn push(
    registry: &Registry,
    ui: Ui,
    target: &BoxReference,
    boxes: &[ArchBox],
    options: &Options,
) -> Result<String> {
    let sign_key = options.sign_key;
    let explain = |e: RegistryError| e.explain(&target.text, target.inner.registry());
    if target.digest().is_some() || target.inner.tag().is_none() {
        return Err(Error::setup(format!(
            "{}: push needs a tag (oci://REGISTRY/REPOSITORY:TAG)",
            target.text
        )));
    }
    // Load the key first: a bad key must not leave an unsigned push behind.
    let key = sign_key
        .map(signature::load_signing_key)
        .transpose()
        .map_err(Error::setup)?;
    let Some(first) = boxes.first() else {
        return Err(Error::setup(format!("{}: nothing to push", target.text)));
    };
    let mut index = format::index(&first.config.version);
    for arch_box in boxes {
        let mut layers = Vec::new();
        for (role, original) in files(&arch_box.ready) {
            let compressed = if options.zstd_disk && role == Role::Disk {
                Some(compress(original, &options.scratch)?)
            } else {
                None
            };
            let path = compressed.as_ref().map_or(original, |t| t.path());
            let size = std::fs::metadata(path)
                .map_err(|e| Error::setup(format!("{}: {e}", path.display())))?
                .len();
            let digest = format!(
                "sha256:{}",
                crate::sys::digest::sha256_file(path)
                    .map_err(|e| Error::setup(format!("{}: {e}", path.display())))?
            );
            upload_file(
                registry,
                ui,
                target,
                &arch_box.ready,
                role,
                path,
                &digest,
                size,
            )
            .map_err(explain)?;
            layers.push(format::layer(
                role,
                &digest,
                size,
                compressed.is_some().then_some("zstd"),
            ));
        }
        let config_bytes = format::to_bytes(&arch_box.config);
        let config_digest = crate::sys::digest::sha256_digest(&config_bytes);
        let config = OciDescriptor {
            media_type: format::CONFIG_MEDIA_TYPE.to_string(),
            digest: config_digest.clone(),
            size: config_bytes.len() as i64,
            urls: None,
            annotations: None,
            artifact_type: None,
        };
        if !registry
            .has_blob(&target.inner, &config_digest)
            .map_err(explain)?
        {
            registry
                .push_bytes(&target.inner, config_bytes, &config_digest)
                .map_err(explain)?;
        }
        let manifest = format::to_bytes(&format::manifest(config, layers));
        let manifest_digest = crate::sys::digest::sha256_digest(&manifest);
        let manifest_size = manifest.len() as i64;
        registry
            .push_manifest(
                &target.at_digest(&manifest_digest).inner,
                manifest,
                format::MANIFEST_MEDIA_TYPE,
            )
            .map_err(explain)?;
        index.manifests.push(ImageIndexEntry {
            media_type: format::MANIFEST_MEDIA_TYPE.to_string(),
            digest: manifest_digest,
            size: manifest_size,
            platform: Some(Platform {
                architecture: format::oci_arch(&arch_box.config.arch).into(),
                os: "linux".into(),
                os_version: None,
                os_features: None,
                variant: None,
                features: None,
            }),
            annotations: None,
            artifact_type: Some(format::ARTIFACT_TYPE.to_string()),
        });
        ui.info(&format!(
            "pushed {} {} ({})",
            arch_box.config.name, arch_box.config.version, arch_box.config.arch
        ));
    }
    let index_bytes = format::to_bytes(&index);
    let digest = crate::sys::digest::sha256_digest(&index_bytes);
    registry
        .push_manifest(&target.inner, index_bytes, format::INDEX_MEDIA_TYPE)
        .map_err(explain)?;
    if let Some(key) = key {
        sign_digest(registry, target, &digest, &key).map_err(explain)?;
    }
    Ok(digest)
}

/// The disk zstd-compressed into a temporary file under `scratch` (level 3: most of the
/// gain of higher levels on disk images, at a fraction of the time).
fn compress(path: &Path, scratch: &Path) -> Result<tempfile::NamedTempFile> {
    let io = |e: std::io::Error| Error::setup(format!("cannot compress {}: {e}", path.display()));
    std::fs::create_dir_all(scratch).map_err(io)?;
    let mut out = tempfile::NamedTempFile::new_in(scratch).map_err(io)?;
    let input = std::fs::File::open(path).map_err(io)?;
    zstd::stream::copy_encode(input, out.as_file_mut(), 3).map_err(io)?;
    Ok(out)
}

fn files(ready: &ReadyBox) -> Vec<(Role, &Path)> {
    let mut files = vec![(Role::Kernel, ready.kernel.as_path())];
    files.extend(ready.initrd.as_deref().map(|p| (Role::Initrd, p)));
    files.extend(ready.disk.as_deref().map(|p| (Role::Disk, p)));
    files
}

/// HEAD first; then a cross-repository mount when the box came from another repository
/// of the same registry; else an upload with progress.
#[allow(clippy::too_many_arguments)]
fn upload_file(
    registry: &Registry,
    ui: Ui,
    target: &BoxReference,
    ready: &ReadyBox,
    role: Role,
    path: &Path,
    digest: &str,
    size: u64,
) -> std::result::Result<(), RegistryError> {
    let label = format!(
        "{} {} ({}): {}",
        ready.name,
        ready.version.version,
        ready.version.arch,
        role.name()
    );
    if registry.has_blob(&target.inner, digest)? {
        ui.detail(&format!("{label}: the registry has it already"));
        return Ok(());
    }
    if let Ok(source) = BoxReference::parse(&ready.source) {
        if source.inner.registry() == target.inner.registry()
            && source.inner.repository() != target.inner.repository()
            && registry.mount_blob(&target.inner, &source.inner, digest)
        {
            ui.detail(&format!(
                "{label}: mounted from {}",
                source.repository_text()
            ));
            return Ok(());
        }
    }
    let progress = Progress::upload(ui, &label, size);
    let result = registry.push_file(&target.inner, path, digest, size, progress.setter());
    progress.finish();
    result
}

/// Signs the manifest or index `digest` of `target`'s repository: payload blob, cosign
/// config blob, and the signature manifest under `sha256-HEX.sig`, keeping the signatures
/// already there.
pub fn sign_digest(
    registry: &Registry,
    target: &BoxReference,
    digest: &str,
    key: &p256::ecdsa::SigningKey,
) -> std::result::Result<(), RegistryError> {
    let repository = format!("{}/{}", target.inner.registry(), target.inner.repository());
    let payload = signature::payload(&repository, digest);
    let payload_digest = crate::sys::digest::sha256_digest(&payload);
    let signed = signature::sign(key, &payload);
    let payload_size = payload.len() as i64;
    registry.push_bytes(&target.inner, payload, &payload_digest)?;
    let layer = OciDescriptor {
        media_type: signature::PAYLOAD_MEDIA_TYPE.to_string(),
        digest: payload_digest,
        size: payload_size,
        urls: None,
        annotations: Some(BTreeMap::from([(
            signature::SIGNATURE_ANNOTATION.to_string(),
            signed,
        )])),
        artifact_type: None,
    };
    // Signatures by other keys stay: like cosign, a signature is added to those there.
    let tag = target.at_tag(&signature::signature_tag(digest));
    let mut layers: Vec<OciDescriptor> = match registry.manifest(&tag.inner) {
        Ok((bytes, _)) => serde_json::from_slice::<oci_client::manifest::OciImageManifest>(&bytes)
            .map(|m| m.layers)
            .unwrap_or_default(),
        Err(RegistryError::NotFound) => Vec::new(),
        Err(e) => return Err(e),
    };
    layers.retain(|l| l.media_type == signature::PAYLOAD_MEDIA_TYPE && l.digest != layer.digest);
    layers.push(layer);
    let diff_ids: Vec<String> = layers.iter().map(|l| l.digest.clone()).collect();
    let config = signature::config_blob(&diff_ids);
    let config_digest = crate::sys::digest::sha256_digest(&config);
    let config_size = config.len() as i64;
    if !registry.has_blob(&target.inner, &config_digest)? {
        registry.push_bytes(&target.inner, config, &config_digest)?;
    }
    let manifest = oci_client::manifest::OciImageManifest {
        schema_version: 2,
        media_type: Some(format::MANIFEST_MEDIA_TYPE.to_string()),
        config: OciDescriptor {
            media_type: "application/vnd.oci.image.config.v1+json".to_string(),
            digest: config_digest,
            size: config_size,
            urls: None,
            annotations: None,
            artifact_type: None,
        },
        layers,
        subject: None,
        artifact_type: None,
        annotations: None,
    };
    registry.push_manifest(
        &tag.inner,
        format::to_bytes(&manifest),
        format::MANIFEST_MEDIA_TYPE,
    )
}

/// `box sign REF --key KEY`: signs what `reference` names now.
pub fn sign(registry: &Registry, reference: &BoxReference, key_path: &Path) -> Result<String> {
    let explain = |e: RegistryError| e.explain(&reference.text, reference.inner.registry());
    let key = signature::load_signing_key(key_path).map_err(Error::setup)?;
    let (_, digest) = registry.manifest(&reference.inner).map_err(explain)?;
    sign_digest(registry, reference, &digest, &key).map_err(explain)?;
    Ok(digest)
}
