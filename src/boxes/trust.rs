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
//! one of the rule's keys; relative key paths are relative to the file.

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
}

/// One source bound to keys.
#[derive(Debug, Clone)]
pub struct Rule {
    pub prefix: String,
    /// Absolute paths of PEM public keys.
    pub keys: Vec<PathBuf>,
    /// Absolute path of an OpenPGP keyring.
    pub keyring: Option<PathBuf>,
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
            rules.push(Rule {
                prefix: rule.prefix,
                keys: rule.keys.iter().map(|k| dir.join(k)).collect(),
                keyring: rule.keyring.map(|k| dir.join(k)),
                origin: file.clone(),
            });
        }
    }
    Ok(rules)
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
