//! `boxbuild box push` and `box sign`: a box version, every architecture at hand or
//! fetchable, into a registry as one OCI image index (docs/oci-boxes.md), uploading only
//! the blobs the registry lacks, and a cosign-compatible signature beside it.

use super::client::{Registry, RegistryError};
use super::format::{self, BoxConfig};
use super::signature;
use super::source::{RegistrySource, Source};
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

/// What `box push` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// boxbuild's box format: an OCI artifact per architecture (docs/oci-boxes.md).
    Box,
    /// An ordinary container image per architecture, the disk under `/disk/`
    /// (docs/box-images.md).
    Container,
}

/// How to push.
pub struct Options<'a> {
    pub format: Format,
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
    if options.format == Format::Container && options.zstd_disk {
        return Err(Error::setup(format!(
            "{}: --zstd applies to --format box; a container image's layers are uncompressed tar",
            target.text
        )));
    }
    // A registry or layout box is copied as stored into its own format (a container
    // image's files are members of its layers), else made anew from its files.
    let stored = stored_source(boxes).filter(|_| {
        boxes.iter().all(|b| {
            b.ready.version.kernel.member.is_some() == (options.format == Format::Container)
        })
    });
    if let Some(source) = stored {
        if options.zstd_disk {
            return Err(Error::setup(format!(
                "{}: --zstd does not apply to a copy of {source}: a registry or layout box is copied as it is stored",
                target.text
            )));
        }
        return copy_as_stored(
            registry,
            ui,
            target,
            &source,
            boxes,
            key.as_ref(),
            &options.scratch,
        );
    }
    let mut index = match options.format {
        Format::Box => format::index(&first.config.version),
        Format::Container => super::box_image::index(&first.config.version),
    };
    for arch_box in boxes {
        let (manifest, artifact_type) = match options.format {
            Format::Box => (
                box_manifest(registry, ui, target, arch_box, options)?,
                Some(format::ARTIFACT_TYPE.to_string()),
            ),
            Format::Container => (
                image_manifest(registry, ui, target, arch_box, &options.scratch)?,
                None,
            ),
        };
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
            artifact_type,
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

/// One architecture in boxbuild's box format (docs/oci-boxes.md): its files uploaded as
/// layers (the disk zstd-compressed if asked), its config; returns the manifest's bytes.
fn box_manifest(
    registry: &Registry,
    ui: Ui,
    target: &BoxReference,
    arch_box: &ArchBox,
    options: &Options,
) -> Result<Vec<u8>> {
    let explain = |e: RegistryError| e.explain(&target.text, target.inner.registry());
    let mut layers = Vec::new();
    for (role, original) in files(&arch_box.ready) {
        let compressed = if options.zstd_disk && role == Role::Disk {
            Some(compress(original, &options.scratch)?)
        } else {
            None
        };
        let path = compressed.as_ref().map_or(original, |t| t.path());
        let (size, digest) =
            upload_box_file(registry, ui, target, &arch_box.ready, role.name(), path)?;
        layers.push(format::layer(
            role,
            &digest,
            size,
            compressed.is_some().then_some("zstd"),
        ));
    }
    let config = push_config(
        registry,
        target,
        format::CONFIG_MEDIA_TYPE,
        format::to_bytes(&arch_box.config),
    )
    .map_err(explain)?;
    Ok(format::to_bytes(&format::manifest(config, layers)))
}

/// One architecture as a container image (docs/box-images.md): each file, and the
/// settings as `labels.json`, in a tar layer of its own written under `scratch` and
/// uploaded; the image config with the labels; returns the manifest's bytes.
fn image_manifest(
    registry: &Registry,
    ui: Ui,
    target: &BoxReference,
    arch_box: &ArchBox,
    scratch: &Path,
) -> Result<Vec<u8>> {
    use super::box_image as image;
    let explain = |e: RegistryError| e.explain(&target.text, target.inner.registry());
    let io = |what: &str, e: std::io::Error| {
        Error::setup(format!(
            "cannot write the {what} layer under {}: {e}",
            scratch.display()
        ))
    };
    std::fs::create_dir_all(scratch).map_err(|e| io("first", e))?;
    let ready_files = files(&arch_box.ready);
    let roles: Vec<Role> = ready_files.iter().map(|(role, _)| *role).collect();
    let labels = image::labels(&arch_box.config, &roles);
    let settings = tempfile::NamedTempFile::new_in(scratch).map_err(|e| io("labels.json", e))?;
    std::fs::write(settings.path(), format::to_bytes(&arch_box.config))
        .map_err(|e| io("labels.json", e))?;
    let mut sources: Vec<(&str, &str, &Path)> = ready_files
        .iter()
        .filter_map(|(role, path)| {
            let (_, in_image) = image::FILES.iter().find(|(r, _)| r == role)?;
            Some((role.name(), *in_image, *path))
        })
        .collect();
    sources.push(("labels.json", image::LABELS_PATH, settings.path()));
    let owner = crate::sys::archive::Owner {
        uid: image::QEMU_UID,
        gid: image::QEMU_UID,
        mode: image::FILE_MODE,
        mtime: 0,
    };
    let mut layers = Vec::new();
    for (what, in_image, source) in sources {
        let mut tar = tempfile::NamedTempFile::new_in(scratch).map_err(|e| io(what, e))?;
        crate::sys::archive::write_one_file(
            std::io::BufWriter::new(tar.as_file_mut()),
            in_image,
            source,
            owner,
        )
        .map_err(|e| io(what, e))?;
        let (size, digest) =
            upload_box_file(registry, ui, target, &arch_box.ready, what, tar.path())?;
        layers.push(image::layer(in_image, &digest, size));
    }
    // Uncompressed layers: each layer's digest is its diff_id.
    let diff_ids = layers.iter().map(|l| l.digest.clone()).collect();
    let config = image::image_config(&arch_box.config.arch, labels.clone(), diff_ids);
    let config = push_config(
        registry,
        target,
        format::IMAGE_CONFIG_MEDIA_TYPE,
        format::to_bytes(&config),
    )
    .map_err(explain)?;
    let manifest = image::manifest(config, layers, &labels, &arch_box.config.version);
    Ok(format::to_bytes(&manifest))
}

/// A file's size and `sha256:` digest.
fn size_and_digest(path: &Path) -> Result<(u64, String)> {
    let failed = |e: std::io::Error| Error::setup(format!("{}: {e}", path.display()));
    let size = std::fs::metadata(path).map_err(failed)?.len();
    let hex = crate::sys::digest::sha256_file(path).map_err(failed)?;
    Ok((size, format!("sha256:{hex}")))
}

/// Uploads a config blob unless the registry has it; returns its descriptor.
fn push_config(
    registry: &Registry,
    target: &BoxReference,
    media_type: &str,
    bytes: Vec<u8>,
) -> std::result::Result<OciDescriptor, RegistryError> {
    let digest = crate::sys::digest::sha256_digest(&bytes);
    let descriptor = OciDescriptor {
        media_type: media_type.to_string(),
        digest: digest.clone(),
        size: bytes.len() as i64,
        urls: None,
        annotations: None,
        artifact_type: None,
    };
    if !registry.has_blob(&target.inner, &digest)? {
        registry.push_bytes(&target.inner, bytes, &digest)?;
    }
    Ok(descriptor)
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

/// A file to upload as blob `digest` of `size` bytes.
pub struct Blob<'a> {
    pub path: &'a Path,
    pub digest: &'a str,
    pub size: u64,
}

/// Uploads the file at `path` as a blob of `ready`'s push (named `NAME VERSION (ARCH):
/// WHAT` in the progress line, mounted from the repository the box came from where it
/// can be); returns its size in bytes and `sha256:` digest. Errors: the file unreadable,
/// the registry's answer, naming `target`.
fn upload_box_file(
    registry: &Registry,
    ui: Ui,
    target: &BoxReference,
    ready: &ReadyBox,
    what: &str,
    path: &Path,
) -> Result<(u64, String)> {
    let (size, digest) = size_and_digest(path)?;
    let label = format!(
        "{} {} ({}): {what}",
        ready.name, ready.version.version, ready.version.arch
    );
    let blob = Blob {
        path,
        digest: &digest,
        size,
    };
    upload_file(registry, ui, target, &label, Some(&ready.source), &blob)
        .map_err(|e| e.explain(&target.text, target.inner.registry()))?;
    Ok((size, digest))
}

/// Puts one blob into `target`'s repository: nothing when the registry has it (a HEAD
/// request); a cross-repository mount when `mount_from` (an `oci://` reference the blob
/// came from) is another repository of the same registry; else an upload with progress,
/// named `label`.
pub fn upload_file(
    registry: &Registry,
    ui: Ui,
    target: &BoxReference,
    label: &str,
    mount_from: Option<&str>,
    blob: &Blob,
) -> std::result::Result<(), RegistryError> {
    if registry.has_blob(&target.inner, blob.digest)? {
        ui.detail(&format!("{label}: the registry has it already"));
        return Ok(());
    }
    if let Some(source) = mount_from.and_then(|s| BoxReference::parse(s).ok()) {
        if source.inner.registry() == target.inner.registry()
            && source.inner.repository() != target.inner.repository()
            && registry.mount_blob(&target.inner, &source.inner, blob.digest)
        {
            ui.detail(&format!(
                "{label}: mounted from {}",
                source.repository_text()
            ));
            return Ok(());
        }
    }
    let progress = Progress::upload(ui, label, blob.size);
    let result = registry.push_file(
        &target.inner,
        blob.path,
        blob.digest,
        blob.size,
        progress.setter(),
    );
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

/// The registry or layout reference every box came from, when they all came from one:
/// such a box is copied byte for byte, not rebuilt from its files.
fn stored_source(boxes: &[ArchBox]) -> Option<String> {
    let source = &boxes.first()?.ready.source;
    let stored = crate::boxes::reference::is_oci(source) || super::layout::is_layout(source);
    (stored && boxes.iter().all(|b| &b.ready.source == source)).then(|| source.clone())
}

/// The media type a stored document declares (`mediaType`), else what its shape says.
fn media_type_of(bytes: &[u8]) -> String {
    let value: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_default();
    match value.get("mediaType").and_then(|m| m.as_str()) {
        Some(media_type) => media_type.to_string(),
        None if value.get("manifests").is_some() => format::INDEX_MEDIA_TYPE.to_string(),
        None => format::MANIFEST_MEDIA_TYPE.to_string(),
    }
}

/// Copies the box `source` names to `target` as it is stored: the index, manifests and
/// configs byte for byte (so their digests, `@sha256:` pins and signatures stay valid),
/// each blob as stored (a zstd layer stays compressed): already there, mounted from the
/// source repository on the same registry, uploaded from the verified cached file when
/// that is the blob itself, else streamed from the source. Signatures stored beside the
/// source are copied along. Only when `boxes` holds fewer architectures than the source
/// (`--arch`) is a new index written, listing those manifests unchanged.
#[allow(clippy::too_many_arguments)]
fn copy_as_stored(
    registry: &Registry,
    ui: Ui,
    target: &BoxReference,
    source_text: &str,
    boxes: &[ArchBox],
    key: Option<&p256::ecdsa::SigningKey>,
    scratch: &Path,
) -> Result<String> {
    let layout;
    let reference;
    let registry_source;
    let source: &dyn Source = if super::layout::is_layout(source_text) {
        layout = super::layout::Layout::parse(source_text)?;
        &layout
    } else {
        reference = BoxReference::parse(source_text)?;
        registry_source = RegistrySource {
            registry,
            reference: &reference,
        };
        &registry_source
    };
    let from = |e: RegistryError| match e {
        RegistryError::Invalid(m) => Error::setup(format!("{source_text}: {m}")),
        other => other.explain(source_text, source_text),
    };
    let to = |e: RegistryError| e.explain(&target.text, target.inner.registry());
    let (top, top_digest) = source.top().map_err(from)?;
    let listed = super::resolve::manifest_digests(&String::from_utf8_lossy(&top), &top_digest)
        .map_err(|m| Error::setup(format!("{source_text}: {m}")))?;
    let wanted: Vec<&str> = boxes.iter().map(|b| b.config.arch.as_str()).collect();
    let mut kept = Vec::new();
    for manifest_digest in &listed {
        let bytes = if *manifest_digest == top_digest {
            top.clone()
        } else {
            source.manifest(manifest_digest).map_err(from)?
        };
        let manifest: oci_client::manifest::OciImageManifest = serde_json::from_slice(&bytes)
            .map_err(|e| Error::setup(format!("{source_text}: manifest {manifest_digest}: {e}")))?;
        let config_bytes = source.blob(&manifest.config.digest).map_err(from)?;
        let config = super::box_image::stored_config(&manifest.config.media_type, &config_bytes)
            .map_err(|e| Error::setup(format!("{source_text}: manifest {manifest_digest}: {e}")))?;
        if !wanted.contains(&config.arch.as_str()) {
            continue;
        }
        copy_blob(
            registry,
            target,
            source,
            Some(config_bytes),
            &manifest.config.digest,
            None,
            scratch,
        )
        .map_err(to)?;
        for layer in &manifest.layers {
            let size = u64::try_from(layer.size).unwrap_or(0);
            let local = local_copy(boxes, &layer.digest, &layer.media_type);
            if registry
                .has_blob(&target.inner, &layer.digest)
                .map_err(to)?
            {
                ui.detail(&format!("{}: the registry has it already", layer.digest));
                continue;
            }
            if mounted(registry, target, source_text, &layer.digest) {
                ui.detail(&format!("{}: mounted from {source_text}", layer.digest));
                continue;
            }
            let label = format!(
                "{} {} ({}): {}",
                config.name, config.version, config.arch, layer.digest
            );
            let progress = Progress::upload(ui, &label, size);
            let result = match local {
                Some(path) => {
                    registry.push_file(&target.inner, &path, &layer.digest, size, progress.setter())
                }
                None => copy_blob(
                    registry,
                    target,
                    source,
                    None,
                    &layer.digest,
                    Some((size, Box::new(progress.setter()))),
                    scratch,
                ),
            };
            progress.finish();
            result.map_err(to)?;
        }
        registry
            .push_manifest(
                &target.at_digest(manifest_digest).inner,
                bytes.clone(),
                &media_type_of(&bytes),
            )
            .map_err(to)?;
        kept.push(manifest_digest.clone());
        ui.info(&format!(
            "copied {} {} ({})",
            config.name, config.version, config.arch
        ));
    }
    let top_is_index = !(listed.len() == 1 && listed[0] == top_digest);
    let (index, digest) = if kept.len() == listed.len() || !top_is_index {
        (top.clone(), top_digest.clone())
    } else {
        let mut index: serde_json::Value = serde_json::from_slice(&top)
            .map_err(|e| Error::setup(format!("{source_text}: {e}")))?;
        if let Some(entries) = index.get_mut("manifests").and_then(|m| m.as_array_mut()) {
            entries.retain(|e| {
                e["digest"]
                    .as_str()
                    .is_some_and(|d| kept.iter().any(|k| k == d))
            });
        }
        let bytes = format::to_bytes(&index);
        let digest = crate::sys::digest::sha256_digest(&bytes);
        (bytes, digest)
    };
    registry
        .push_manifest(&target.inner, index.clone(), &media_type_of(&index))
        .map_err(to)?;
    if digest == top_digest {
        copy_signatures(registry, target, source, &digest, scratch).map_err(to)?;
    }
    if let Some(key) = key {
        sign_digest(registry, target, &digest, key).map_err(to)?;
    }
    Ok(digest)
}

/// The cached file that is blob `digest` itself: verified at fetch, and not decompressed
/// (a `+zstd` layer's cached file is the decompressed disk, another blob).
fn local_copy(boxes: &[ArchBox], digest: &str, media_type: &str) -> Option<std::path::PathBuf> {
    if media_type.ends_with(format::ZSTD_SUFFIX) {
        return None;
    }
    let hex = digest.strip_prefix("sha256:")?;
    boxes.iter().find_map(|b| {
        b.ready
            .version
            .files()
            .into_iter()
            .find(|(_, file)| file.sha256.as_deref() == Some(hex) && file.compression.is_none())
            .and_then(|(role, _)| files(&b.ready).into_iter().find(|(r, _)| *r == role))
            .map(|(_, path)| path.to_path_buf())
    })
}

/// A cross-repository mount from `source_text` when it is a repository of the target's
/// registry.
fn mounted(registry: &Registry, target: &BoxReference, source_text: &str, digest: &str) -> bool {
    let Ok(source) = BoxReference::parse(source_text) else {
        return false;
    };
    source.inner.registry() == target.inner.registry()
        && source.inner.repository() != target.inner.repository()
        && registry.mount_blob(&target.inner, &source.inner, digest)
}

/// Puts blob `digest` into the target: nothing if it is there, a mount if it can be, else
/// `bytes` when given (a config), else the blob read from the source: a layout's file as
/// it is, a registry's streamed into `scratch`, checked against its digest, and uploaded.
#[allow(clippy::type_complexity)]
fn copy_blob(
    registry: &Registry,
    target: &BoxReference,
    source: &dyn Source,
    bytes: Option<Vec<u8>>,
    digest: &str,
    upload: Option<(u64, Box<dyn Fn(u64) + Send>)>,
    scratch: &Path,
) -> std::result::Result<(), RegistryError> {
    if bytes.is_some()
        && (registry.has_blob(&target.inner, digest)?
            || mounted(registry, target, source.text(), digest))
    {
        return Ok(());
    }
    if let Some(bytes) = bytes {
        return registry.push_bytes(&target.inner, bytes, digest);
    }
    let (size, progress) = upload.unwrap_or((0, Box::new(|_| {})));
    let url = source.blob_url(digest);
    if let Some(path) = url.strip_prefix("file://") {
        return registry.push_file(&target.inner, Path::new(path), digest, size, progress);
    }
    let reference = BoxReference::parse(&url).map_err(|e| RegistryError::Invalid(e.to_string()))?;
    let io = |e: std::io::Error| {
        RegistryError::Invalid(format!(
            "cannot copy blob {digest} through {}: {e}",
            scratch.display()
        ))
    };
    std::fs::create_dir_all(scratch).map_err(io)?;
    let mut file = tempfile::NamedTempFile::new_in(scratch).map_err(io)?;
    let opened = registry
        .open_blob(&reference.inner, digest, 0)
        .map_err(|e| RegistryError::Transient(format!("blob {digest}: {e}")))?;
    let mut hashing = HashingWriter {
        inner: file.as_file_mut(),
        hasher: <sha2::Sha256 as sha2::Digest>::new(),
    };
    std::io::copy(&mut { opened.body }, &mut hashing).map_err(io)?;
    let got = format!(
        "sha256:{}",
        crate::sys::digest::hex(&sha2::Digest::finalize(hashing.hasher))
    );
    if got != digest {
        return Err(RegistryError::Invalid(format!(
            "blob {digest}: the source registry sent other content ({got})"
        )));
    }
    registry.push_file(&target.inner, file.path(), digest, size, progress)
}

/// Writes through and hashes what passes.
struct HashingWriter<'a> {
    inner: &'a mut std::fs::File,
    hasher: sha2::Sha256,
}

impl std::io::Write for HashingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        sha2::Digest::update(&mut self.hasher, &buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The signatures stored beside the source for `digest` (`sha256-HEX.sig`), copied as
/// they are; none there, nothing to do.
fn copy_signatures(
    registry: &Registry,
    target: &BoxReference,
    source: &dyn Source,
    digest: &str,
    scratch: &Path,
) -> std::result::Result<(), RegistryError> {
    let tag = signature::signature_tag(digest);
    let Some(bytes) = source.tagged(&tag)? else {
        return Ok(());
    };
    let manifest: oci_client::manifest::OciImageManifest = serde_json::from_slice(&bytes)
        .map_err(|e| RegistryError::Invalid(format!("signature manifest: {e}")))?;
    for blob in std::iter::once(&manifest.config).chain(&manifest.layers) {
        let content = source.blob(&blob.digest)?;
        copy_blob(
            registry,
            target,
            source,
            Some(content),
            &blob.digest,
            None,
            scratch,
        )?;
    }
    registry.push_manifest(
        &target.at_tag(&tag).inner,
        bytes.clone(),
        &media_type_of(&bytes),
    )
}
