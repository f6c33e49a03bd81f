//! Where a box's OCI documents and blobs come from, behind one trait: a registry
//! (`RegistrySource`, here) or an OCI image layout directory (`layout::Layout`).

use super::client::{Registry, RegistryError};
use crate::boxes::reference::BoxReference;

/// Where a box's documents and blobs are read from: a registry, or an OCI image layout
/// directory (`layout.rs`).
pub trait Source {
    /// The reference as the user wrote it (messages, trust rules, the kept resolution).
    fn text(&self) -> &str;
    /// What the reference names (an index or a manifest) and its `sha256:` digest.
    fn top(&self) -> std::result::Result<(Vec<u8>, String), RegistryError>;
    /// The manifest stored under `digest`, checked against it.
    fn manifest(&self, digest: &str) -> std::result::Result<Vec<u8>, RegistryError>;
    /// The manifest a tag names, if the tag exists (signatures live under tags).
    fn tagged(&self, tag: &str) -> std::result::Result<Option<Vec<u8>>, RegistryError>;
    /// A small blob (config, signature payload), checked against `digest`.
    fn blob(&self, digest: &str) -> std::result::Result<Vec<u8>, RegistryError>;
    /// Where the fetcher reads blob `digest` from (`oci://` or `file://`).
    fn blob_url(&self, digest: &str) -> String;
    /// Blob `digest` as a stream from its start, unchecked (for a look at a layer's
    /// first members; what is installed is fetched and checked by the fetcher).
    fn open_blob(&self, digest: &str)
        -> std::result::Result<Box<dyn std::io::Read>, RegistryError>;
}

/// A box in a registry.
pub struct RegistrySource<'a> {
    pub registry: &'a Registry,
    pub reference: &'a BoxReference,
}

impl Source for RegistrySource<'_> {
    fn text(&self) -> &str {
        &self.reference.text
    }

    fn top(&self) -> std::result::Result<(Vec<u8>, String), RegistryError> {
        self.registry.manifest(&self.reference.inner)
    }

    fn manifest(&self, digest: &str) -> std::result::Result<Vec<u8>, RegistryError> {
        let (bytes, got) = self
            .registry
            .manifest(&self.reference.at_digest(digest).inner)?;
        if got != digest {
            return Err(RegistryError::Refused(
                200,
                format!("manifest {digest}: the registry sent other content"),
            ));
        }
        Ok(bytes)
    }

    fn tagged(&self, tag: &str) -> std::result::Result<Option<Vec<u8>>, RegistryError> {
        match self.registry.manifest(&self.reference.at_tag(tag).inner) {
            Ok((bytes, _)) => Ok(Some(bytes)),
            Err(RegistryError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn blob(&self, digest: &str) -> std::result::Result<Vec<u8>, RegistryError> {
        self.registry.small_blob(&self.reference.inner, digest)
    }

    fn blob_url(&self, digest: &str) -> String {
        format!("{}@{digest}", self.reference.repository_text())
    }

    fn open_blob(
        &self,
        digest: &str,
    ) -> std::result::Result<Box<dyn std::io::Read>, RegistryError> {
        self.registry
            .open_blob(&self.reference.inner, digest, 0)
            .map(|opened| opened.body)
            .map_err(|e| RegistryError::Transient(format!("blob {digest}: {e}")))
    }
}
