//! Which box sources must be signed, and by whom: `trust.toml` in the user's config dir
//! (`$XDG_CONFIG_HOME/boxbuild/trust.toml`) and the system's (`/etc/boxbuild/trust.toml`),
//! both read. Format (docs/signatures.md):
//!
//! ```toml
//! [[source]]
//! prefix = "oci://registry.example.org/boxes/"   # or a catalog URL prefix
//! keys = ["boxes.pub"]        # P-256 public keys (PEM), for OCI references
//! keyring = "boxes.gpg"       # OpenPGP keyring, for catalogs fetched over HTTP(S)
//! ```
//!
//! A source matching a rule (the longest matching prefix wins) is used only when signed by
//! one of the rule's keys; relative key paths are relative to the file. A registry box's
//! signature must also name the repository it is pulled from, unless the rule says which
//! other repository signed it (`signed_identity`) or how names map (`signed_prefix`).

use crate::sys::error::{Error, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrustFile {
    #[serde(default)]
    source: Vec<RuleText>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleText {
    prefix: String,
    #[serde(default)]
    keys: Vec<PathBuf>,
    keyring: Option<PathBuf>,
    signed_identity: Option<String>,
    signed_prefix: Option<String>,
}

/// Which repository a registry box's signature must name
/// (`critical.identity.docker-reference`, as containers/image's `signedIdentity`).
#[derive(Debug, Clone, PartialEq)]
pub enum SignedIdentity {
    /// The repository the box is pulled from (the default, `matchRepository`).
    Pulled,
    /// This one repository (`oci://REGISTRY/REPOSITORY`), for every reference of the rule
    /// (`exactRepository`): a mirror of one box.
    Exact(String),
    /// The pulled reference with the rule's prefix replaced by this one (`remapIdentity`):
    /// a mirror of a whole tree of repositories.
    Remap(String),
}

/// One source bound to keys.
#[derive(Debug, Clone)]
pub struct Rule {
    pub prefix: String,
    /// Absolute paths of PEM public keys.
    pub keys: Vec<PathBuf>,
    /// Absolute path of an OpenPGP keyring.
    pub keyring: Option<PathBuf>,
    /// Whose name a signature must carry.
    pub signed_identity: SignedIdentity,
    /// The file the rule is in (for messages).
    pub origin: PathBuf,
}

/// The trust files, user's first.
pub fn files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    files.extend(dirs::config_dir().map(|d| d.join("boxbuild/trust.toml")));
    files.push(PathBuf::from("/etc/boxbuild/trust.toml"));
    files
}

/// Every rule of the existing files. Errors: a file that cannot be read or parsed (one
/// line naming it): a broken trust file must not silently allow unsigned boxes.
pub fn load(files: &[PathBuf]) -> Result<Vec<Rule>> {
    let mut rules = Vec::new();
    for file in files {
        let text = match std::fs::read_to_string(file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(Error::setup(format!(
                    "{}: {e}; boxbuild does not run boxes while it cannot read its trust rules",
                    file.display()
                )))
            }
        };
        let parsed: TrustFile = toml::from_str(&text).map_err(|e| {
            Error::setup(format!(
                "{}: bad trust file: {}",
                file.display(),
                e.message()
            ))
        })?;
        let dir = file.parent().unwrap_or(Path::new("/"));
        for rule in parsed.source {
            if rule.keys.is_empty() && rule.keyring.is_none() {
                return Err(Error::setup(format!(
                    "{}: the rule for '{}' names no keys and no keyring",
                    file.display(),
                    rule.prefix
                )));
            }
            let signed_identity = match (rule.signed_identity, rule.signed_prefix) {
                (None, None) => SignedIdentity::Pulled,
                (Some(exact), None) => SignedIdentity::Exact(exact),
                (None, Some(prefix)) => SignedIdentity::Remap(prefix),
                (Some(_), Some(_)) => {
                    return Err(Error::setup(format!(
                    "{}: the rule for '{}' has both signed_identity and signed_prefix; keep one",
                    file.display(),
                    rule.prefix
                )))
                }
            };
            rules.push(Rule {
                prefix: rule.prefix,
                keys: rule.keys.iter().map(|k| dir.join(k)).collect(),
                keyring: rule.keyring.map(|k| dir.join(k)),
                signed_identity,
                origin: file.clone(),
            });
        }
    }
    Ok(rules)
}

impl Rule {
    /// The repository (`REGISTRY/REPOSITORY`, as cosign's payload names it) a signature
    /// for `reference` (`oci://REGISTRY/REPOSITORY[:TAG|@DIGEST]` or a layout) must name;
    /// `None` when the rule gives none for a layout (which has no repository of its own).
    pub fn expected_identity(&self, reference: &str) -> Option<String> {
        let wanted = match &self.signed_identity {
            SignedIdentity::Pulled => reference.to_string(),
            SignedIdentity::Exact(repository) => repository.clone(),
            SignedIdentity::Remap(prefix) => match reference.strip_prefix(&self.prefix) {
                Some(rest) => format!("{prefix}{rest}"),
                None => reference.to_string(),
            },
        };
        let text = wanted.strip_prefix("oci://")?;
        Some(repository_of(text).to_string())
    }
}

/// `REGISTRY/REPOSITORY` of `REGISTRY/REPOSITORY[:TAG][@DIGEST]` (a port's colon stays).
pub fn repository_of(reference: &str) -> &str {
    let without_digest = reference.split('@').next().unwrap_or(reference);
    match without_digest.rsplit_once(':') {
        Some((repository, tag)) if !tag.contains('/') => repository,
        _ => without_digest,
    }
}

/// The rule for `source` (an `oci://` reference or a catalog URL): the longest prefix.
pub fn rule_for<'r>(rules: &'r [Rule], source: &str) -> Option<&'r Rule> {
    rules
        .iter()
        .filter(|r| source.starts_with(&r.prefix))
        .max_by_key(|r| r.prefix.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_wins_and_paths_are_relative_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("trust.toml");
        std::fs::write(
            &file,
            "[[source]]\nprefix = \"oci://r/\"\nkeys = [\"a.pub\"]\n[[source]]\nprefix = \"oci://r/boxes/\"\nkeys = [\"/k/b.pub\"]\n",
        )
        .unwrap();
        let rules = load(&[file, dir.path().join("missing.toml")]).unwrap();
        assert_eq!(
            rules[0]
                .expected_identity("oci://r:5000/boxes/tiny:1")
                .as_deref(),
            Some("r:5000/boxes/tiny")
        );
        assert_eq!(rules[0].expected_identity("oci:/some/dir:1"), None);
        assert_eq!(
            rule_for(&rules, "oci://r/boxes/tiny:1").unwrap().keys,
            [PathBuf::from("/k/b.pub")]
        );
        assert_eq!(
            rule_for(&rules, "oci://r/other:1").unwrap().keys,
            [dir.path().join("a.pub")]
        );
        assert!(rule_for(&rules, "oci://s/x:1").is_none());
    }

    #[test]
    fn a_mirror_names_whose_signature_it_accepts() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("trust.toml");
        std::fs::write(
            &file,
            "[[source]]\nprefix = \"oci://m/mirror/\"\nkeys = [\"a.pub\"]\nsigned_prefix = \"oci://r/boxes/\"\n[[source]]\nprefix = \"oci://m/one\"\nkeys = [\"a.pub\"]\nsigned_identity = \"oci://r/boxes/tiny\"\n[[source]]\nprefix = \"oci:/layouts/\"\nkeys = [\"a.pub\"]\nsigned_identity = \"oci://r/boxes/tiny:1\"\n",
        )
        .unwrap();
        let rules = load(std::slice::from_ref(&file)).unwrap();
        let identity = |r: &str| rule_for(&rules, r).unwrap().expected_identity(r);
        assert_eq!(
            identity("oci://m/mirror/debian@sha256:00").as_deref(),
            Some("r/boxes/debian")
        );
        assert_eq!(identity("oci://m/one:2").as_deref(), Some("r/boxes/tiny"));
        assert_eq!(
            identity("oci:/layouts/x:1").as_deref(),
            Some("r/boxes/tiny")
        );
        std::fs::write(
            &file,
            "[[source]]\nprefix = \"oci://m/\"\nkeys = [\"a.pub\"]\nsigned_prefix = \"oci://r/\"\nsigned_identity = \"oci://r/x\"\n",
        )
        .unwrap();
        let e = load(&[file]).unwrap_err().to_string();
        assert!(e.contains("keep one"), "{e}");
    }

    #[test]
    fn a_broken_trust_file_stops_everything() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("trust.toml");
        std::fs::write(&file, "[[source]]\nprefix = \"oci://r/\"\n").unwrap();
        let e = load(std::slice::from_ref(&file)).unwrap_err().to_string();
        assert!(e.contains("no keys"), "{e}");
        std::fs::write(&file, "[[source]]\nprefx = 1\n").unwrap();
        let e = load(&[file]).unwrap_err().to_string();
        assert!(e.contains("bad trust file"), "{e}");
    }
}
