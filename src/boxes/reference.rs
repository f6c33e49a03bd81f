//! Box references in the registry: `oci://REGISTRY/REPOSITORY[:TAG][@sha256:HEX]`, the
//! reference grammar of the OCI distribution spec behind an `oci://` scheme. The registry
//! is always explicit (no implied docker.io).

use crate::sys::error::{Error, Result};
use oci_client::Reference;

/// The scheme that marks a box reference as an OCI reference.
pub const SCHEME: &str = "oci://";

/// A parsed `oci://` reference, with the text the user gave.
#[derive(Debug, Clone)]
pub struct BoxReference {
    /// What the user wrote, `oci://` included (for messages and the trust rules).
    pub text: String,
    pub inner: Reference,
}

/// Whether a `--box` value names a registry box rather than a catalog box.
pub fn is_oci(text: &str) -> bool {
    text.starts_with(SCHEME)
}

impl BoxReference {
    /// Errors: one line naming the reference and the expected form.
    pub fn parse(text: &str) -> Result<BoxReference> {
        let bad = |why: &str| {
            Error::setup(format!(
                "'{text}': {why}; expected oci://REGISTRY/REPOSITORY:TAG or oci://REGISTRY/REPOSITORY@sha256:DIGEST"
            ))
        };
        let rest = text
            .strip_prefix(SCHEME)
            .ok_or_else(|| bad("not an oci:// reference"))?;
        let (registry, path) = rest
            .split_once('/')
            .ok_or_else(|| bad("no repository after the registry"))?;
        // Without a dot, a colon or "localhost", the first part would be read as a
        // Docker Hub namespace; boxbuild wants the registry spelled out.
        if !(registry.contains('.') || registry.contains(':') || registry == "localhost") {
            return Err(bad(&format!(
                "'{registry}' is not a registry host (give host[:port], e.g. registry.example.org)"
            )));
        }
        if path.is_empty() {
            return Err(bad("no repository after the registry"));
        }
        let inner: Reference = rest.parse().map_err(|e| bad(&format!("{e}")))?;
        Ok(BoxReference {
            text: text.to_string(),
            inner,
        })
    }

    /// The same repository at `digest`.
    pub fn at_digest(&self, digest: &str) -> BoxReference {
        let inner = Reference::with_digest(
            self.inner.registry().to_string(),
            self.inner.repository().to_string(),
            digest.to_string(),
        );
        BoxReference {
            text: format!("{SCHEME}{}", inner.whole()),
            inner,
        }
    }

    /// The same repository at `tag`.
    pub fn at_tag(&self, tag: &str) -> BoxReference {
        let inner = Reference::with_tag(
            self.inner.registry().to_string(),
            self.inner.repository().to_string(),
            tag.to_string(),
        );
        BoxReference {
            text: format!("{SCHEME}{}", inner.whole()),
            inner,
        }
    }

    /// `oci://REGISTRY/REPOSITORY`, without tag or digest.
    pub fn repository_text(&self) -> String {
        format!(
            "{SCHEME}{}/{}",
            self.inner.registry(),
            self.inner.repository()
        )
    }

    /// The tag the text names itself (the parsed reference says `latest` when it names
    /// none).
    pub fn written_tag(&self) -> Option<&str> {
        let last = self.text.rsplit('/').next().unwrap_or_default();
        let before_digest = last.split('@').next().unwrap_or_default();
        before_digest
            .contains(':')
            .then(|| self.inner.tag())
            .flatten()
    }

    /// The digest the reference pins, if any.
    pub fn digest(&self) -> Option<&str> {
        self.inner.digest()
    }

    /// The name the box has in the cache and in `box list`: registry and repository with
    /// every character outside the catalog's name alphabet replaced by `_`, e.g.
    /// `127.0.0.1_5000_boxes_tiny`. Tags and digests of one repository share it, so the
    /// same box reached by tag or by digest is one cache entry (its version is the box's).
    pub fn box_name(&self) -> String {
        sanitize(&format!(
            "{}/{}",
            self.inner.registry(),
            self.inner.repository()
        ))
    }

    /// A file name for what the whole reference resolved to (tag or digest included).
    pub fn file_name(&self) -> String {
        sanitize(self.inner.whole().as_str())
    }
}

/// `text` with every character outside the catalog's name alphabet (letters, digits,
/// `.`, `_`, `+`, `-`) replaced by `_`.
pub fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._+-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_digests_and_names() {
        let r = BoxReference::parse("oci://127.0.0.1:5000/boxes/tiny:1.0").unwrap();
        assert_eq!(r.inner.registry(), "127.0.0.1:5000");
        assert_eq!(r.inner.repository(), "boxes/tiny");
        assert_eq!(r.inner.tag(), Some("1.0"));
        assert_eq!(r.box_name(), "127.0.0.1_5000_boxes_tiny");
        assert_eq!(r.file_name(), "127.0.0.1_5000_boxes_tiny_1.0");
        let digest = format!("sha256:{}", "a".repeat(64));
        let d = r.at_digest(&digest);
        assert_eq!(d.digest(), Some(digest.as_str()));
        assert_eq!(d.text, format!("oci://127.0.0.1:5000/boxes/tiny@{digest}"));
        assert_eq!(r.repository_text(), "oci://127.0.0.1:5000/boxes/tiny");
        assert_eq!(r.written_tag(), Some("1.0"));
        let bare = BoxReference::parse("oci://127.0.0.1:5000/boxes/tiny").unwrap();
        assert_eq!(bare.written_tag(), None);
        assert_eq!(d.written_tag(), None);
    }

    #[test]
    fn registry_must_be_explicit() {
        for bad in [
            "oci://boxes/tiny:1",
            "oci://example.org",
            "oci://example.org/",
            "tiny",
            "oci://example.org/UPPER:1",
        ] {
            let e = BoxReference::parse(bad).unwrap_err().to_string();
            assert!(e.contains("expected oci://REGISTRY"), "{bad}: {e}");
        }
    }
}
