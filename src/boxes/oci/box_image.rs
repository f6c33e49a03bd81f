//! A box as an ordinary OCI container image (docs/box-images.md): the layout of KIWI's
//! `format="oci:<fmt>"` images and of KubeVirt's containerDisk, the disk at
//! `/disk/box.qcow2`, with the kernel and initrd at `/boot/kernel` and `/boot/initrd`
//! (KubeVirt's `kernelBoot`) and boxbuild's settings at `/boot/labels.json`, every file
//! owned by uid/gid 107 (KubeVirt's qemu user) with mode 0444. The settings are also the
//! image config's labels and the manifest's annotations (`org.boxbuild.box.*`).
//!
//! Each file is one layer: an uncompressed tar (OCI image spec, `layer.md`) holding that
//! file and the directory above it, annotated with the file's path
//! (`org.boxbuild.box.path`), so a pull fetches only the layers a box needs and the
//! layer's digest is also its `diff_id`.

use super::format::{BoxConfig, IMAGE_CONFIG_MEDIA_TYPE};
use crate::boxes::catalog::{FileRef, Role, VersionEntry};
use oci_client::manifest::{OciDescriptor, OciImageIndex, OciImageManifest};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The files' paths in the image, without the leading `/` (as tar names them).
pub const DISK_PATH: &str = "disk/box.qcow2";
pub const KERNEL_PATH: &str = "boot/kernel";
pub const INITRD_PATH: &str = "boot/initrd";
pub const LABELS_PATH: &str = "boot/labels.json";
/// The owner of every file: KubeVirt's qemu user and group (its containerDisk docs).
pub const QEMU_UID: u64 = 107;
/// Every file's mode: readable by all, writable by none.
pub const FILE_MODE: u32 = 0o444;

/// The OCI image spec's media type for an uncompressed layer.
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";
/// The layer media types read on pull (compression is told by the layer's first bytes).
const READABLE_LAYERS: [&str; 5] = [
    LAYER_MEDIA_TYPE,
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
];
/// The annotation naming the file a layer holds, as an absolute path in the image.
pub const PATH_ANNOTATION: &str = "org.boxbuild.box.path";
/// The prefix of boxbuild's labels and annotations.
pub const LABEL_PREFIX: &str = "org.boxbuild.box.";

/// Where each box file is in the image: the role, its path, and the label naming it.
pub const FILES: [(Role, &str); 3] = [
    (Role::Kernel, KERNEL_PATH),
    (Role::Initrd, INITRD_PATH),
    (Role::Disk, DISK_PATH),
];

fn label(key: &str) -> String {
    format!("{LABEL_PREFIX}{key}")
}

/// A box's settings as labels (`org.boxbuild.box.KEY`, string values): `name`,
/// `version`, `arch`, `cmdline`, and those set of `description`, `console`, `builder` (a
/// JSON array), `memory`, `cpus`, `protocol`, `scratch`, `network` (`true`/`false`),
/// `container`; and `kernel`, `initrd`, `disk`: the path of each file the image holds.
pub fn labels(config: &BoxConfig, roles: &[Role]) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut put = |key: &str, value: Option<String>| {
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            labels.insert(label(key), value);
        }
    };
    put("name", Some(config.name.clone()));
    put("version", Some(config.version.clone()));
    put("arch", Some(config.arch.clone()));
    put("cmdline", Some(config.cmdline.clone()));
    put("description", Some(config.description.clone()));
    put("console", config.console.clone());
    put(
        "builder",
        (!config.builder.is_empty())
            .then(|| super::format::to_bytes(&config.builder))
            .map(|b| String::from_utf8_lossy(&b).into_owned()),
    );
    put("memory", config.memory.clone());
    put("cpus", config.cpus.map(|c| c.to_string()));
    put("protocol", config.protocol.clone());
    put("scratch", config.scratch.clone());
    put("network", Some(config.network.to_string()));
    put("container", config.container.clone());
    for (role, path) in FILES {
        if roles.contains(&role) {
            put(role.name(), Some(format!("/{path}")));
        }
    }
    labels
}

/// The settings the labels hold; `Ok(None)` when there are none of boxbuild's.
/// Errors: a required label is missing, or a value is malformed (named).
pub fn config_from_labels(labels: &BTreeMap<String, String>) -> Result<Option<BoxConfig>, String> {
    if !labels.keys().any(|k| k.starts_with(LABEL_PREFIX)) {
        return Ok(None);
    }
    let get = |key: &str| labels.get(&label(key)).cloned();
    let required =
        |key: &str| get(key).ok_or_else(|| format!("the label {} is missing", label(key)));
    let builder = match get("builder") {
        Some(text) => serde_json::from_str(&text).map_err(|e| {
            format!(
                "the label {} is not a JSON array of strings: {e}",
                label("builder")
            )
        })?,
        None => Vec::new(),
    };
    let cpus = match get("cpus") {
        Some(text) => Some(
            text.parse::<u32>()
                .map_err(|_| format!("the label {} is '{text}', not a number", label("cpus")))?,
        ),
        None => None,
    };
    let network = match get("network").as_deref() {
        None | Some("true") => true,
        Some("false") => false,
        Some(other) => {
            return Err(format!(
                "the label {} is '{other}', not true or false",
                label("network")
            ))
        }
    };
    Ok(Some(BoxConfig {
        name: required("name")?,
        version: required("version")?,
        arch: required("arch")?,
        description: get("description").unwrap_or_default(),
        cmdline: required("cmdline")?,
        console: get("console"),
        builder,
        memory: get("memory"),
        cpus,
        protocol: get("protocol"),
        scratch: get("scratch"),
        network,
        container: get("container"),
    }))
}

/// The image config (OCI image spec, `config.md`): platform, labels, and the layers'
/// `diff_ids`. No `created`, so the same box gives the same digest.
#[derive(Debug, Serialize, Deserialize, Default)]
pub struct ImageConfig {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub config: Option<ContainerConfig>,
    #[serde(default)]
    pub rootfs: RootFs,
}

#[derive(Debug, Serialize, Deserialize, Default)]
pub struct ContainerConfig {
    #[serde(rename = "Labels", default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Serialize, Deserialize, Default)]
pub struct RootFs {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

/// The config of an image with `labels` and the uncompressed layers `diff_ids`.
pub fn image_config(
    arch: &str,
    labels: BTreeMap<String, String>,
    diff_ids: Vec<String>,
) -> ImageConfig {
    ImageConfig {
        architecture: super::format::oci_arch(arch).to_string(),
        os: "linux".into(),
        config: Some(ContainerConfig {
            labels: Some(labels),
        }),
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids,
        },
    }
}

/// One file's layer: an uncompressed tar, annotated with the file's path.
pub fn layer(path: &str, digest: &str, size: u64) -> OciDescriptor {
    OciDescriptor {
        media_type: LAYER_MEDIA_TYPE.to_string(),
        digest: digest.to_string(),
        size: size as i64,
        urls: None,
        annotations: Some(BTreeMap::from([(
            PATH_ANNOTATION.to_string(),
            format!("/{path}"),
        )])),
        artifact_type: None,
    }
}

/// The image manifest of one architecture: an ordinary container image (no
/// `artifactType`), annotated with the labels and the version.
pub fn manifest(
    config: OciDescriptor,
    layers: Vec<OciDescriptor>,
    labels: &BTreeMap<String, String>,
    version: &str,
) -> OciImageManifest {
    let mut annotations = labels.clone();
    annotations.insert(super::format::VERSION.to_string(), version.to_string());
    OciImageManifest {
        schema_version: 2,
        media_type: Some(super::format::MANIFEST_MEDIA_TYPE.to_string()),
        config,
        layers,
        subject: None,
        artifact_type: None,
        annotations: Some(annotations),
    }
}

/// The image index over the architectures' manifests: an ordinary one (no
/// `artifactType`), annotated with the version.
pub fn index(version: &str) -> OciImageIndex {
    OciImageIndex {
        artifact_type: None,
        ..super::format::index(version)
    }
}

/// Whether a manifest's config is a container image's (rather than a box's own).
pub fn is_image_config(media_type: &str) -> bool {
    media_type == IMAGE_CONFIG_MEDIA_TYPE
        || media_type == "application/vnd.docker.container.image.v1+json"
}

/// What a container image lacks to be a box, in one line, for an image without
/// boxbuild's labels; `disk` is a disk found in its layers (e.g. `/disk/x.qcow2`, what
/// KIWI's `format="oci:qcow2"` writes), if one was seen.
pub fn not_a_box(disk: Option<&str>) -> String {
    let has = match disk {
        Some(disk) => format!("holds the disk {disk} but "),
        None => String::new(),
    };
    format!(
        "this container image {has}is not a box: it lacks the kernel (/{KERNEL_PATH}), the initrd (/{INITRD_PATH}) and boxbuild's settings (labels {LABEL_PREFIX}*: version, arch, cmdline, builder); a disk image alone cannot be booted as a box; make a box image with 'boxbuild box push NAME@VERSION oci://... --format container'"
    )
}

/// The settings a manifest's config holds: a box config (docs/oci-boxes.md) as it is,
/// an image config by its labels. Errors: not JSON, or not a box.
pub fn stored_config(media_type: &str, bytes: &[u8]) -> Result<BoxConfig, String> {
    if !is_image_config(media_type) {
        return serde_json::from_slice(bytes).map_err(|e| format!("bad box config: {e}"));
    }
    let image: ImageConfig =
        serde_json::from_slice(bytes).map_err(|e| format!("bad image config: {e}"))?;
    let labels = image.config.and_then(|c| c.labels).unwrap_or_default();
    config_from_labels(&labels)?.ok_or_else(|| not_a_box(None))
}

/// boxbuild's labels of an image: the config's, else the manifest's annotations; `None`
/// when neither holds any (the image is not a box), or the config is not JSON.
pub fn box_labels(
    config_text: &str,
    manifest: &OciImageManifest,
) -> Option<BTreeMap<String, String>> {
    let is_box = |l: &BTreeMap<String, String>| l.keys().any(|k| k.starts_with(LABEL_PREFIX));
    let image: ImageConfig = serde_json::from_str(config_text).ok()?;
    image
        .config
        .and_then(|c| c.labels)
        .filter(is_box)
        .or_else(|| manifest.annotations.clone().filter(is_box))
}

/// A box image's manifest as a catalog version: its settings from `labels` (see
/// [`box_labels`]), each file fetched from `blob_url(layer digest)` and taken out of its
/// layer. Errors, in one line: a label missing or malformed, a file whose layer cannot be
/// told, a layer of a foreign media type.
pub fn version_entry(
    labels: &BTreeMap<String, String>,
    manifest: &OciImageManifest,
    blob_url: impl Fn(&str) -> String,
) -> Result<VersionEntry, String> {
    let Some(config) = config_from_labels(labels)? else {
        return Err(not_a_box(None));
    };
    let named: Vec<(Role, String)> = FILES
        .iter()
        .filter_map(
            |(role, default_path)| match labels.get(&label(role.name())) {
                Some(path) => Some((*role, path.clone())),
                None if *role == Role::Kernel => Some((*role, format!("/{default_path}"))),
                None => None,
            },
        )
        .collect();
    let paths: Vec<String> = named.iter().map(|(_, path)| path.clone()).collect();
    let mut files: BTreeMap<Role, FileRef> = BTreeMap::new();
    for (index, (role, path)) in named.into_iter().enumerate() {
        let layer = layer_holding(manifest, &paths, index)?;
        if !READABLE_LAYERS.contains(&layer.media_type.as_str()) {
            return Err(format!(
                "layer {} has the media type '{}', which is not a tar layer",
                layer.digest, layer.media_type
            ));
        }
        let Some(hex) = layer.digest.strip_prefix("sha256:") else {
            return Err(format!("layer {} is not addressed by sha256", layer.digest));
        };
        files.insert(
            role,
            FileRef {
                url: Some(blob_url(&layer.digest)),
                path: None,
                size: None,
                sha256: Some(hex.to_string()),
                member: Some(crate::sys::archive::normalise(&path).to_string()),
                compression: None,
            },
        );
    }
    let kernel = files
        .remove(&Role::Kernel)
        .ok_or_else(|| format!("the image has no kernel (/{KERNEL_PATH})"))?;
    config.version_entry(
        kernel,
        files.remove(&Role::Initrd),
        files.remove(&Role::Disk),
    )
}

/// The layer holding the `index`th of the image's `files` paths (in [`FILES`] order): the
/// layer annotated with its path; else, where a copy dropped the layers' annotations (a
/// registry-to-layout copy that recompressed them) but kept boxbuild's layer order (the
/// files in that order, then `labels.json`), the layer at that place; else the only layer.
fn layer_holding<'m>(
    manifest: &'m OciImageManifest,
    files: &[String],
    index: usize,
) -> Result<&'m OciDescriptor, String> {
    let path = files.get(index).map(String::as_str).unwrap_or_default();
    let normalised = crate::sys::archive::normalise(path);
    let annotated = manifest.layers.iter().find(|l| {
        l.annotations
            .as_ref()
            .and_then(|a| a.get(PATH_ANNOTATION))
            .is_some_and(|p| crate::sys::archive::normalise(p) == normalised)
    });
    let unannotated = manifest.layers.iter().all(|l| {
        l.annotations
            .as_ref()
            .is_none_or(|a| !a.contains_key(PATH_ANNOTATION))
    });
    let layers = manifest.layers.as_slice();
    match (annotated, layers) {
        (Some(layer), _) => Ok(layer),
        (None, [only]) => Ok(only),
        (None, _) if unannotated && layers.len() == files.len() + 1 => Ok(&layers[index]),
        (None, _) => Err(format!(
            "no layer is annotated {PATH_ANNOTATION}={path} among the image's {} layers, and they are not one per file in boxbuild's order; push the image with 'boxbuild box push --format container' or make it of one layer",
            layers.len()
        )),
    }
}

/// A box image's files in a directory (what a Kubernetes image volume mounts): the
/// settings from `DIR/boot/labels.json`, the files named by path under `DIR`, used in
/// place. Errors, in one line: no disk, no kernel, no labels.json, labels.json damaged.
pub fn dir_version(dir: &std::path::Path) -> Result<VersionEntry, String> {
    let shown = dir.display();
    if !dir.is_dir() {
        return Err(format!("{shown} is not a directory"));
    }
    let in_dir = |path: &str| dir.join(path);
    let labels_path = in_dir(LABELS_PATH);
    if !in_dir(DISK_PATH).is_file() {
        return Err(format!(
            "{shown} holds no box disk (/{DISK_PATH}); mount a box image made by 'boxbuild box push NAME@VERSION oci://... --format container' there"
        ));
    }
    if !labels_path.is_file() {
        return Err(format!(
            "{shown} holds a disk but no /{LABELS_PATH} (the box's settings); mount a box image made by 'boxbuild box push --format container' there"
        ));
    }
    let bytes = crate::sys::files::read_regular(&labels_path, super::client::MAX_SMALL_BLOB)
        .map_err(|e| format!("{}: {e}", labels_path.display()))?;
    let config: BoxConfig = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{}: not a box's settings: {e}", labels_path.display()))?;
    let file = |path: &str| FileRef {
        url: None,
        path: Some(in_dir(path).display().to_string()),
        size: None,
        sha256: None,
        member: None,
        compression: None,
    };
    if !in_dir(KERNEL_PATH).is_file() {
        return Err(format!("{shown} holds no kernel (/{KERNEL_PATH})"));
    }
    let initrd = in_dir(INITRD_PATH).is_file().then(|| file(INITRD_PATH));
    config.version_entry(file(KERNEL_PATH), initrd, Some(file(DISK_PATH)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BoxConfig {
        BoxConfig {
            name: "tiny".into(),
            version: "1.0".into(),
            arch: "x86_64".into(),
            description: "a box".into(),
            cmdline: "console=ttyS0 quiet".into(),
            console: Some("ttyS0".into()),
            builder: vec!["/bin/build".into(), "--flag".into()],
            memory: Some("256M".into()),
            cpus: Some(2),
            protocol: None,
            scratch: None,
            network: false,
            container: None,
        }
    }

    #[test]
    fn labels_round_trip() {
        let labels = labels(&config(), &[Role::Kernel, Role::Disk]);
        assert_eq!(
            labels["org.boxbuild.box.builder"],
            r#"["/bin/build","--flag"]"#
        );
        assert_eq!(labels["org.boxbuild.box.disk"], "/disk/box.qcow2");
        assert!(!labels.contains_key("org.boxbuild.box.initrd"));
        assert_eq!(config_from_labels(&labels).unwrap(), Some(config()));
        assert_eq!(config_from_labels(&BTreeMap::new()).unwrap(), None);
        let mut bad = labels.clone();
        bad.remove("org.boxbuild.box.cmdline");
        let e = config_from_labels(&bad).unwrap_err();
        assert!(e.contains("org.boxbuild.box.cmdline is missing"), "{e}");
        let mut bad = labels.clone();
        bad.insert("org.boxbuild.box.cpus".into(), "many".into());
        let e = config_from_labels(&bad).unwrap_err();
        assert!(e.contains("not a number"), "{e}");
    }

    #[test]
    fn files_come_from_their_layers() {
        let roles = [Role::Kernel, Role::Disk];
        let labels = labels(&config(), &roles);
        let k = format!("sha256:{}", "1".repeat(64));
        let d = format!("sha256:{}", "2".repeat(64));
        let layers = vec![layer(KERNEL_PATH, &k, 10), layer(DISK_PATH, &d, 20)];
        let image = image_config("x86_64", labels.clone(), vec![k.clone(), d.clone()]);
        let text = String::from_utf8(super::super::format::to_bytes(&image)).unwrap();
        let config_descriptor = layer(LABELS_PATH, &k, 1);
        let m = manifest(config_descriptor, layers, &labels, "1.0");
        let found = box_labels(&text, &m).unwrap();
        let v = version_entry(&found, &m, |digest| format!("oci://r/x@{digest}")).unwrap();
        // A copy without the layers' annotations: one layer per file in boxbuild's order.
        let mut copied = m.clone();
        copied.layers.push(layer(LABELS_PATH, &k, 1));
        copied.layers.iter_mut().for_each(|l| l.annotations = None);
        let c = version_entry(&found, &copied, |digest| digest.to_string()).unwrap();
        assert_eq!(c.kernel.url.as_deref(), Some(k.as_str()));
        assert_eq!(c.disk.as_ref().unwrap().url.as_deref(), Some(d.as_str()));
        copied.layers.pop();
        let e = version_entry(&found, &copied, |digest| digest.to_string()).unwrap_err();
        assert!(e.contains("not one per file"), "{e}");
        assert_eq!(v.kernel.member.as_deref(), Some("boot/kernel"));
        assert_eq!(
            v.disk.as_ref().unwrap().url.as_deref(),
            Some(format!("oci://r/x@{d}").as_str())
        );
        assert_eq!(v.cpus, Some(2));
        assert_eq!(v.network, Some(false));
        // Without boxbuild's labels it is a container image, not a box.
        let plain = image_config("x86_64", BTreeMap::new(), vec![]);
        let text = String::from_utf8(super::super::format::to_bytes(&plain)).unwrap();
        let mut bare = m.clone();
        bare.annotations = None;
        assert_eq!(box_labels(&text, &bare), None);
        // The manifest's annotations stand in for missing labels.
        assert!(box_labels(&text, &m).is_some());
        let e = version_entry(&BTreeMap::new(), &bare, |d| d.to_string()).unwrap_err();
        assert!(e.contains("is not a box: it lacks the kernel"), "{e}");
    }

    #[test]
    fn a_dir_without_its_disk_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let e = dir_version(dir.path()).unwrap_err();
        assert!(e.contains("holds no box disk (/disk/box.qcow2)"), "{e}");
        std::fs::create_dir_all(dir.path().join("disk")).unwrap();
        std::fs::write(dir.path().join(DISK_PATH), b"qcow").unwrap();
        let e = dir_version(dir.path()).unwrap_err();
        assert!(e.contains("no /boot/labels.json"), "{e}");
        std::fs::create_dir_all(dir.path().join("boot")).unwrap();
        std::fs::write(
            dir.path().join(LABELS_PATH),
            super::super::format::to_bytes(&config()),
        )
        .unwrap();
        let e = dir_version(dir.path()).unwrap_err();
        assert!(e.contains("no kernel"), "{e}");
        std::fs::write(dir.path().join(KERNEL_PATH), b"k").unwrap();
        let v = dir_version(dir.path()).unwrap();
        assert!(v.kernel.path.unwrap().ends_with("boot/kernel"));
        assert!(v.initrd.is_none());
    }
}
