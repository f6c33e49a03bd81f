//! How a box is laid out in a registry (docs/oci-boxes.md): an OCI image index with one
//! entry per architecture (`platform` as for container images); each entry an OCI 1.1
//! artifact manifest whose config holds the box's settings and whose layers are the box
//! files, named by the `org.opencontainers.image.title` annotation as ORAS names files.

use crate::boxes::catalog::{BoxEntry, FileRef, Protocol, Role, VersionEntry};
use oci_client::manifest::{OciDescriptor, OciImageIndex, OciImageManifest};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The manifest's `artifactType`.
pub const ARTIFACT_TYPE: &str = "application/vnd.boxbuild.box.v1";
/// The config blob's media type (JSON, [`BoxConfig`]).
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.boxbuild.box.config.v1+json";
/// The OCI image spec's media types for index, manifest and a container image's config.
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const IMAGE_CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
/// The annotation naming a layer's file (OCI image spec, pre-defined annotation keys).
pub const TITLE: &str = "org.opencontainers.image.title";
/// The annotation carrying the box version on the index.
pub const VERSION: &str = "org.opencontainers.image.version";
/// The suffix of a layer stored zstd-compressed; its digest is the compressed blob's.
pub const ZSTD_SUFFIX: &str = "+zstd";

/// A box file's layer media type: `application/vnd.boxbuild.box.ROLE.v1`.
pub fn layer_media_type(role: Role) -> String {
    format!("application/vnd.boxbuild.box.{}.v1", role.name())
}

/// The role and compression a layer media type stands for; `None` for foreign layers.
pub fn parse_layer_media_type(media_type: &str) -> Option<(Role, Option<&'static str>)> {
    let (base, compression) = match media_type.strip_suffix(ZSTD_SUFFIX) {
        Some(base) => (base, Some("zstd")),
        None => (media_type, None),
    };
    [Role::Kernel, Role::Initrd, Role::Disk]
        .into_iter()
        .find(|role| layer_media_type(*role) == base)
        .map(|role| (role, compression))
}

/// The config blob: what a catalog version holds besides its files.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BoxConfig {
    /// The box's name where it was built (informative).
    pub name: String,
    pub version: String,
    /// boxbuild's architecture name: x86_64, aarch64, s390x, ppc64le, riscv64.
    pub arch: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    pub cmdline: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub builder: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scratch: Option<String>,
    #[serde(default = "yes")]
    pub network: bool,
    /// The box as a container image (`--container`), as podman takes the reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
}

fn yes() -> bool {
    true
}

impl BoxConfig {
    /// The settings of one catalog version, as they go into the registry.
    pub fn from_catalog(name: &str, entry: &BoxEntry, version: &VersionEntry) -> BoxConfig {
        let settings = entry.settings(version);
        BoxConfig {
            name: name.to_string(),
            version: version.version.clone(),
            arch: version.arch.clone(),
            description: entry.description.clone(),
            cmdline: version.cmdline.clone(),
            console: version.console.clone(),
            builder: settings.builder,
            memory: settings.memory,
            cpus: settings.cpus,
            protocol: match settings.protocol {
                Protocol::BoxbuildAgent => None,
                Protocol::KiwiBoxedPlugin => Some("kiwi-boxed-plugin".into()),
            },
            scratch: settings.scratch,
            network: settings.network,
            container: version.container.clone(),
        }
    }
}

/// The OCI platform architecture for a boxbuild architecture (GOARCH names, as the
/// image index's `platform.architecture` uses them).
pub fn oci_arch(arch: &str) -> &str {
    match arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// One box file as a layer.
pub fn layer(role: Role, digest: &str, size: u64, compression: Option<&str>) -> OciDescriptor {
    let mut media_type = layer_media_type(role);
    if compression == Some("zstd") {
        media_type.push_str(ZSTD_SUFFIX);
    }
    OciDescriptor {
        media_type,
        digest: digest.to_string(),
        size: size as i64,
        urls: None,
        annotations: Some(BTreeMap::from([(
            TITLE.to_string(),
            role.name().to_string(),
        )])),
        artifact_type: None,
    }
}

/// The artifact manifest of one architecture.
pub fn manifest(config: OciDescriptor, layers: Vec<OciDescriptor>) -> OciImageManifest {
    OciImageManifest {
        schema_version: 2,
        media_type: Some(MANIFEST_MEDIA_TYPE.to_string()),
        config,
        layers,
        subject: None,
        artifact_type: Some(ARTIFACT_TYPE.to_string()),
        annotations: None,
    }
}

/// Serialises a manifest or index as pushed: compact JSON, fields in the spec's order.
/// Its sha256 is the digest the registry stores it under.
pub fn to_bytes<T: Serialize>(document: &T) -> Vec<u8> {
    // Cannot fail: derived Serialize impls of strings, numbers and maps.
    serde_json::to_vec(document).expect("serialisable")
}

/// The files of one architecture's manifest as a catalog version, each file fetched from
/// `blob_url(digest)`. Errors name what is missing or foreign.
pub fn version_entry(
    config: &BoxConfig,
    manifest: &OciImageManifest,
    blob_url: impl Fn(&str) -> String,
) -> Result<VersionEntry, String> {
    let mut files: BTreeMap<Role, FileRef> = BTreeMap::new();
    for layer in &manifest.layers {
        let Some((role, compression)) = parse_layer_media_type(&layer.media_type) else {
            return Err(format!(
                "layer {} has the media type '{}', which is not a box file",
                layer.digest, layer.media_type
            ));
        };
        let Some(hex) = layer.digest.strip_prefix("sha256:") else {
            return Err(format!("layer {} is not addressed by sha256", layer.digest));
        };
        let size = u64::try_from(layer.size)
            .map_err(|_| format!("layer {} has a negative size", layer.digest))?;
        files.insert(
            role,
            FileRef {
                url: Some(blob_url(&layer.digest)),
                path: None,
                size: Some(size),
                sha256: Some(hex.to_string()),
                member: None,
                compression: compression.map(str::to_string),
            },
        );
    }
    let kernel = files
        .remove(&Role::Kernel)
        .ok_or_else(|| "the manifest has no kernel layer".to_string())?;
    config.version_entry(
        kernel,
        files.remove(&Role::Initrd),
        files.remove(&Role::Disk),
    )
}

impl BoxConfig {
    /// These settings with the box files `kernel`, `initrd` and `disk` as a catalog
    /// version. Errors: an unknown `protocol`.
    pub fn version_entry(
        &self,
        kernel: FileRef,
        initrd: Option<FileRef>,
        disk: Option<FileRef>,
    ) -> Result<VersionEntry, String> {
        let protocol = match self.protocol.as_deref() {
            None | Some("boxbuild-agent") => None,
            Some("kiwi-boxed-plugin") => Some(Protocol::KiwiBoxedPlugin),
            Some(other) => return Err(format!("unknown protocol '{other}' in the box config")),
        };
        Ok(VersionEntry {
            version: self.version.clone(),
            arch: self.arch.clone(),
            cmdline: self.cmdline.clone(),
            console: self.console.clone(),
            kernel,
            initrd,
            disk,
            builder: (!self.builder.is_empty()).then(|| self.builder.clone()),
            memory: self.memory.clone(),
            cpus: self.cpus,
            protocol,
            scratch: self.scratch.clone(),
            network: Some(self.network),
            container: self.container.clone(),
        })
    }
}

/// An empty index to fill with one entry per architecture.
pub fn index(version: &str) -> OciImageIndex {
    OciImageIndex {
        schema_version: 2,
        media_type: Some(INDEX_MEDIA_TYPE.to_string()),
        manifests: Vec::new(),
        artifact_type: Some(ARTIFACT_TYPE.to_string()),
        annotations: Some(BTreeMap::from([(VERSION.to_string(), version.to_string())])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_round_trip() {
        for role in [Role::Kernel, Role::Initrd, Role::Disk] {
            assert_eq!(
                parse_layer_media_type(&layer_media_type(role)),
                Some((role, None))
            );
        }
        assert_eq!(
            parse_layer_media_type("application/vnd.boxbuild.box.disk.v1+zstd"),
            Some((Role::Disk, Some("zstd")))
        );
        assert_eq!(
            parse_layer_media_type("application/vnd.oci.image.layer.v1.tar"),
            None
        );
    }

    #[test]
    fn a_manifest_becomes_a_catalog_version() {
        let config = BoxConfig {
            name: "tiny".into(),
            version: "1.0".into(),
            arch: "x86_64".into(),
            description: String::new(),
            cmdline: "console=ttyS0".into(),
            console: Some("ttyS0".into()),
            builder: vec!["/bin/build".into()],
            memory: None,
            cpus: Some(2),
            protocol: None,
            scratch: None,
            network: true,
            container: None,
        };
        let k = format!("sha256:{}", "1".repeat(64));
        let d = format!("sha256:{}", "2".repeat(64));
        let m = manifest(
            layer(Role::Kernel, &k, 0, None),
            vec![
                layer(Role::Kernel, &k, 10, None),
                layer(Role::Disk, &d, 20, Some("zstd")),
            ],
        );
        let v = version_entry(&config, &m, |digest| format!("oci://r/x@{digest}")).unwrap();
        assert_eq!(v.kernel.size, Some(10));
        assert_eq!(v.kernel.sha256.as_deref(), Some("1".repeat(64).as_str()));
        let disk = v.disk.unwrap();
        assert_eq!(disk.compression.as_deref(), Some("zstd"));
        assert_eq!(disk.url.unwrap(), format!("oci://r/x@{d}"));
        assert_eq!(v.cpus, Some(2));
        let mut foreign = m.clone();
        foreign.layers[0].media_type = "text/plain".into();
        assert!(version_entry(&config, &foreign, |d| d.to_string())
            .unwrap_err()
            .contains("text/plain"));
        foreign.layers.remove(0);
        foreign.layers.remove(0);
        assert!(version_entry(&config, &foreign, |d| d.to_string())
            .unwrap_err()
            .contains("no kernel"));
    }
}
