//! Boxes in an OCI image layout directory (OCI image spec, `image-layout.md`): what
//! `skopeo copy ... oci:DIR:TAG` or `oras copy --to-oci-layout` writes. Named as skopeo
//! names it, `oci:PATH[:TAG]` or `oci:PATH@sha256:HEX`; blobs are read from
//! `PATH/blobs/sha256/HEX` and fetched into the cache like any box file.

use super::client::{RegistryError, MAX_MANIFEST};
use super::source::Source;
use crate::sys::error::{Error, Result};
use oci_client::manifest::OciImageIndex;
use std::path::{Path, PathBuf};

/// The annotation naming a tag in a layout's `index.json`.
const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Whether a `--box` value names a layout directory (`oci:` but not `oci://`).
pub fn is_layout(text: &str) -> bool {
    text.starts_with("oci:") && !text.starts_with(crate::boxes::reference::SCHEME)
}

#[derive(Debug, Clone)]
pub struct Layout {
    pub text: String,
    pub dir: PathBuf,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl Layout {
    /// Errors: not `oci:PATH...`, or PATH holds no `index.json`.
    pub fn parse(text: &str) -> Result<Layout> {
        let rest = text
            .strip_prefix("oci:")
            .filter(|_| is_layout(text))
            .ok_or_else(|| {
                Error::setup(format!(
                    "'{text}': not an OCI layout reference (oci:PATH[:TAG])"
                ))
            })?;
        let (path, tag, digest) = match rest.split_once('@') {
            Some((path, digest)) => (path, None, Some(digest.to_string())),
            None => match rest.rsplit_once(':') {
                // A colon in the last path component starts the tag.
                Some((path, tag)) if !tag.contains('/') => (path, Some(tag.to_string()), None),
                _ => (rest, None, None),
            },
        };
        let dir = PathBuf::from(path);
        if !dir.join("index.json").is_file() {
            return Err(Error::setup(format!(
                "'{text}': {} is not an OCI image layout (no index.json); make one with 'skopeo copy docker://... oci:{}:TAG'",
                dir.display(),
                dir.display()
            )));
        }
        let dir = dir.canonicalize().unwrap_or(dir);
        Ok(Layout {
            text: text.to_string(),
            dir,
            tag,
            digest,
        })
    }

    /// The box's name in the cache: `layout` and the directory, as for registries.
    pub fn box_name(&self) -> String {
        crate::boxes::reference::sanitize(&format!("layout{}", self.dir.display()))
    }

    /// The file of blob `digest`; an error when `digest` is no `sha256:` digest.
    pub fn blob_path(&self, digest: &str) -> std::result::Result<PathBuf, RegistryError> {
        let hex = crate::sys::digest::sha256_hex(digest).ok_or_else(|| {
            RegistryError::Invalid(format!(
                "{}: {digest} is not a sha256 digest",
                self.dir.display()
            ))
        })?;
        Ok(self.dir.join("blobs/sha256").join(hex))
    }

    /// A document (index, manifest, config, signature payload) of at most `MAX_MANIFEST`
    /// bytes, checked against its digest.
    fn read_checked(&self, digest: &str) -> std::result::Result<Vec<u8>, RegistryError> {
        let path = self.blob_path(digest)?;
        let bytes = read(&path, MAX_MANIFEST)?;
        if crate::sys::digest::sha256_digest(&bytes) != digest {
            return Err(RegistryError::Invalid(format!(
                "{} does not hash to its name",
                path.display()
            )));
        }
        Ok(bytes)
    }

    fn index(&self) -> std::result::Result<OciImageIndex, RegistryError> {
        let path = self.dir.join("index.json");
        let bytes = read(&path, MAX_MANIFEST)?;
        serde_json::from_slice(&bytes).map_err(|e| {
            RegistryError::Invalid(format!("{}: not an OCI image index: {e}", path.display()))
        })
    }

    /// The tags `index.json` names (for messages).
    fn tags(&self) -> Vec<String> {
        self.index()
            .map(|index| {
                index
                    .manifests
                    .iter()
                    .filter_map(|m| m.annotations.as_ref()?.get(REF_NAME).cloned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The digest `tag` names in `index.json`; with no tag, the only entry.
    fn digest_of(&self, tag: Option<&str>) -> std::result::Result<Option<String>, RegistryError> {
        let index = self.index()?;
        let named = |m: &&oci_client::manifest::ImageIndexEntry| {
            m.annotations
                .as_ref()
                .and_then(|a| a.get(REF_NAME))
                .map(String::as_str)
                == tag
        };
        Ok(match tag {
            Some(_) => index.manifests.iter().find(named).map(|m| m.digest.clone()),
            None if index.manifests.len() == 1 => Some(index.manifests[0].digest.clone()),
            None => None,
        })
    }
}

/// A file of the layout, refused when it is not a regular file or larger than `limit`;
/// every error names the file.
fn read(path: &Path, limit: u64) -> std::result::Result<Vec<u8>, RegistryError> {
    crate::sys::files::read_regular(path, limit).map_err(|e| {
        RegistryError::Invalid(match e.kind() {
            std::io::ErrorKind::NotFound => format!("{} is missing", path.display()),
            _ => format!("{}: {e}", path.display()),
        })
    })
}

impl Source for Layout {
    fn text(&self) -> &str {
        &self.text
    }

    fn top(&self) -> std::result::Result<(Vec<u8>, String), RegistryError> {
        let digest = match &self.digest {
            Some(digest) => digest.clone(),
            None => self.digest_of(self.tag.as_deref())?.ok_or_else(|| {
                let tags = self.tags();
                RegistryError::Invalid(format!(
                    "{} names {} (tags there: {})",
                    self.dir.join("index.json").display(),
                    match &self.tag {
                        Some(tag) => format!("no tag '{tag}'"),
                        None => "more than one image; add ':TAG'".to_string(),
                    },
                    if tags.is_empty() {
                        "none".to_string()
                    } else {
                        tags.join(", ")
                    }
                ))
            })?,
        };
        Ok((self.read_checked(&digest)?, digest))
    }

    fn manifest(&self, digest: &str) -> std::result::Result<Vec<u8>, RegistryError> {
        self.read_checked(digest)
    }

    fn tagged(&self, tag: &str) -> std::result::Result<Option<Vec<u8>>, RegistryError> {
        match self.digest_of(Some(tag))? {
            Some(digest) => self.read_checked(&digest).map(Some),
            None => Ok(None),
        }
    }

    fn blob(&self, digest: &str) -> std::result::Result<Vec<u8>, RegistryError> {
        self.read_checked(digest)
    }

    fn blob_url(&self, digest: &str) -> String {
        let hex = digest.trim_start_matches("sha256:");
        let path = self.dir.join("blobs/sha256").join(hex);
        reqwest::Url::from_file_path(&path)
            .map(|u| u.to_string())
            .unwrap_or_else(|()| format!("file://{}", path.display()))
    }

    fn open_blob(
        &self,
        digest: &str,
    ) -> std::result::Result<Box<dyn std::io::Read>, RegistryError> {
        let path = self.blob_path(digest)?;
        crate::sys::files::open_regular(&path)
            .map(|file| Box::new(file) as Box<dyn std::io::Read>)
            .map_err(|e| RegistryError::Invalid(format!("{}: {e}", path.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_as_skopeo_writes_them() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("index.json"),
            r#"{"schemaVersion":2,"manifests":[]}"#,
        )
        .unwrap();
        let path = dir.path().display().to_string();
        let tagged = Layout::parse(&format!("oci:{path}:1.0")).unwrap();
        assert_eq!(tagged.tag.as_deref(), Some("1.0"));
        let plain = Layout::parse(&format!("oci:{path}")).unwrap();
        assert_eq!(plain.tag, None);
        let pinned = Layout::parse(&format!("oci:{path}@sha256:{}", "a".repeat(64))).unwrap();
        assert!(pinned.digest.is_some());
        assert!(is_layout("oci:/x") && !is_layout("oci://r/x:1"));
        let e = Layout::parse("oci:/nonexistent/dir:1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no index.json"), "{e}");
    }
}
