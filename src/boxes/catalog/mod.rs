//! Where boxes are described: catalogs (TOML), searched in a fixed order; the first catalog
//! that names a box wins for that box. Format and order: docs/catalog.md.

pub mod openpgp;
pub mod plugin_config;
mod sources;

pub use sources::{load_all, update_check_interval, LoadPolicy, Refresh};

use crate::sys::error::{Error, Result};
use reqwest::Url;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The default catalog compiled into the binary.
pub const BUILTIN: &str = include_str!("../../../boxes/catalog.toml");

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogFile {
    #[serde(default)]
    pub boxes: BTreeMap<String, BoxEntry>,
    /// Catalogs to fetch and read right after this one (index URLs).
    #[serde(default)]
    pub remote_catalogs: Vec<String>,
    /// How often remote catalogs are checked for news, e.g. "1d" or "6h".
    pub update_check_interval: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoxEntry {
    #[serde(default)]
    pub description: String,
    /// The builder's command inside the box; the user's arguments are appended.
    pub builder: Option<Vec<String>>,
    /// Default memory, e.g. "8G"; `--box-memory` overrides it.
    pub memory: Option<String>,
    /// Default vCPUs; `--box-smp-cpus` overrides it.
    pub cpus: Option<u32>,
    /// How boxbuild talks to the box (default: boxbuild-agent).
    pub protocol: Option<Protocol>,
    /// Size of the per-run scratch disk, e.g. "40G" (default: none); `--scratch-size`
    /// overrides it.
    pub scratch: Option<String>,
    /// Whether the box gets QEMU's user-mode network (default: true).
    pub network: Option<bool>,
    /// An OCI repository (`oci://REGISTRY/REPOSITORY`) whose tags are the box's versions,
    /// instead of `versions` (docs/oci-boxes.md).
    pub oci: Option<String>,
    #[serde(default)]
    pub versions: Vec<VersionEntry>,
}

/// What a version runs with: its own settings, else its box's.
#[derive(Debug, Clone)]
pub struct Settings {
    pub builder: Vec<String>,
    pub memory: Option<String>,
    pub cpus: Option<u32>,
    pub protocol: Protocol,
    pub scratch: Option<String>,
    pub network: bool,
}

impl BoxEntry {
    pub fn settings(&self, version: &VersionEntry) -> Settings {
        Settings {
            builder: version
                .builder
                .clone()
                .or_else(|| self.builder.clone())
                .unwrap_or_default(),
            memory: version.memory.clone().or_else(|| self.memory.clone()),
            cpus: version.cpus.or(self.cpus),
            protocol: version.protocol.or(self.protocol).unwrap_or_default(),
            scratch: version.scratch.clone().or_else(|| self.scratch.clone()),
            network: version.network.or(self.network).unwrap_or(true),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// boxbuild's guest agent on a virtio-serial port (docs/guest-agent.md).
    #[default]
    BoxbuildAgent,
    /// The kernel-command-line protocol of KIWI's Python boxbuild plugin, for the boxes
    /// published for it (docs/plugin-boxes.md).
    KiwiBoxedPlugin,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionEntry {
    pub version: String,
    pub arch: String,
    /// Kernel command line; boxbuild adds nothing that changes the builder's arguments.
    pub cmdline: String,
    /// The guest console device, e.g. ttyS0 (x86_64) or ttyAMA0 (aarch64).
    pub console: Option<String>,
    pub kernel: FileRef,
    pub initrd: Option<FileRef>,
    pub disk: Option<FileRef>,
    /// Per-version overrides of the box's settings.
    pub builder: Option<Vec<String>>,
    pub memory: Option<String>,
    pub cpus: Option<u32>,
    pub protocol: Option<Protocol>,
    pub scratch: Option<String>,
    pub network: Option<bool>,
    /// The box as a container image, for `--container` (an image reference as podman
    /// takes it, e.g. `registry.example.org/boxes/debian:12`); the plugin's `container:`.
    #[serde(default)]
    pub container: Option<String>,
}

impl VersionEntry {
    /// The box's files by role, in a fixed order.
    pub fn files(&self) -> Vec<(Role, &FileRef)> {
        let mut files = vec![(Role::Kernel, &self.kernel)];
        files.extend(self.initrd.as_ref().map(|f| (Role::Initrd, f)));
        files.extend(self.disk.as_ref().map(|f| (Role::Disk, f)));
        files
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Kernel,
    Initrd,
    Disk,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Kernel => "kernel",
            Role::Initrd => "initrd",
            Role::Disk => "disk",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRef {
    /// Where to fetch the file from (https, http, file); copied into the cache once.
    pub url: Option<String>,
    /// A local file used in place (e.g. a box built on this machine); not cached.
    pub path: Option<String>,
    /// Checked on every use (one stat call).
    pub size: Option<u64>,
    /// Verified while the file is fetched and by `box verify`; required with `url`.
    pub sha256: Option<String>,
    /// The fetched file is a tar archive (e.g. the Python plugin's `*-Kernel.tar.xz`) and
    /// this role's file is its one member matching this pattern, e.g. `*.kernel`.
    pub member: Option<String>,
    /// The fetched file is compressed ("zstd"); `sha256` and `size` are the compressed
    /// file's, and the box file is what it decompresses to.
    pub compression: Option<String>,
}

/// Where a box file comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// Used where it is.
    InPlace(PathBuf),
    /// Fetched into the cache.
    Remote(Url),
}

/// What relative references in a catalog are relative to.
#[derive(Debug, Clone)]
pub enum Base {
    Dir(PathBuf),
    Url(Url),
    Builtin,
}

/// A catalog as loaded, with where it came from.
#[derive(Debug, Clone)]
pub struct Catalog {
    pub origin: String,
    pub base: Base,
    pub file: CatalogFile,
}

impl Catalog {
    /// Parses TOML, or YAML when `origin` ends in .yaml or .yml.
    pub fn parse(text: &str, origin: &str, base: Base) -> Result<Catalog> {
        let file: CatalogFile = if is_yaml(origin) {
            serde_norway::from_str(text).map_err(|e| {
                let (line, col) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
                let message = e.to_string();
                // The library appends " at line L column C"; the prefix says it already.
                let message = message.split(" at line ").next().unwrap_or(&message);
                Error::setup(format!("{origin}:{line}:{col}: bad catalog: {message}"))
            })?
        } else {
            toml::from_str(text).map_err(|e| {
                let (line, col) = e.span().map(|s| line_col(text, s.start)).unwrap_or((0, 0));
                Error::setup(format!(
                    "{origin}:{line}:{col}: bad catalog: {}",
                    e.message()
                ))
            })?
        };
        Catalog::from_file(file, origin, base)
    }

    /// A catalog made in memory (e.g. from a registry's index), validated as a read one.
    pub fn from_file(file: CatalogFile, origin: &str, base: Base) -> Result<Catalog> {
        let catalog = Catalog {
            origin: origin.to_string(),
            base,
            file,
        };
        catalog.validate()?;
        Ok(catalog)
    }

    /// A catalog in memory of one box `name` with `versions` (a registry box, a box
    /// image's directory), validated as a read one; `origin` names it in messages.
    pub fn of_one(
        name: &str,
        description: String,
        versions: Vec<VersionEntry>,
        origin: &str,
    ) -> Result<Catalog> {
        let entry = BoxEntry {
            description,
            builder: None,
            memory: None,
            cpus: None,
            protocol: None,
            scratch: None,
            network: None,
            oci: None,
            versions,
        };
        let file = CatalogFile {
            boxes: BTreeMap::from([(name.to_string(), entry)]),
            remote_catalogs: Vec::new(),
            update_check_interval: None,
        };
        Catalog::from_file(file, origin, Base::Builtin)
    }

    /// Names become cache paths and digests are compared as text: check both up front.
    fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(Error::setup(format!("{}: {what}", self.origin)));
        for (name, entry) in &self.file.boxes {
            if !is_safe_name(name) {
                return bad(format!(
                    "box name '{name}' may hold only letters, digits and . _ + - (not first)"
                ));
            }
            if let Some(repository) = &entry.oci {
                if !entry.versions.is_empty() {
                    return bad(format!(
                        "box '{name}': give either oci (its tags are the versions) or versions, not both"
                    ));
                }
                crate::boxes::reference::BoxReference::parse(repository)?;
            }
            for v in &entry.versions {
                let settings = entry.settings(v);
                // The plugin's boxes run kiwi by themselves.
                if settings.builder.is_empty() && settings.protocol == Protocol::BoxbuildAgent {
                    return bad(format!(
                        "box '{name}' {}: no builder command (set builder for the box or the version)",
                        v.version
                    ));
                }
                if !is_safe_name(&v.version) || !is_safe_name(&v.arch) {
                    return bad(format!(
                        "box '{name}': version '{}' / arch '{}' may hold only letters, digits and . _ + -",
                        v.version, v.arch
                    ));
                }
                for (role, file) in v.files() {
                    let at = format!("box '{name}' {} {}: {}", v.version, v.arch, role.name());
                    match (&file.url, &file.path) {
                        (Some(_), Some(_)) | (None, None) => {
                            return bad(format!("{at}: give exactly one of url or path"))
                        }
                        (Some(_), None) if file.sha256.is_none() => {
                            return bad(format!("{at}: a fetched file needs its sha256"))
                        }
                        _ => {}
                    }
                    match (&file.compression, &file.url, &file.member) {
                        (None, _, _) => {}
                        (Some(c), _, _) if c != "zstd" => {
                            return bad(format!("{at}: unknown compression '{c}' (known: zstd)"))
                        }
                        (Some(_), None, _) | (Some(_), _, Some(_)) => {
                            return bad(format!(
                                "{at}: compression applies to a fetched file that is not an archive member"
                            ))
                        }
                        _ => {}
                    }
                    if let Some(digest) = &file.sha256 {
                        if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
                            return bad(format!("{at}: sha256 must be 64 hex digits"));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Where a file of this catalog is: `url`s resolve against a remote catalog's URL or
    /// a local catalog's directory, `path`s against the directory.
    pub fn locate(&self, file: &FileRef) -> Result<Location> {
        if let Some(url) = &file.url {
            let parsed = match (&self.base, Url::parse(url)) {
                (_, Ok(absolute)) => absolute,
                (Base::Url(base), Err(_)) => base.join(url).map_err(|e| self.bad_url(url, e))?,
                (Base::Dir(dir), Err(_)) => Url::from_file_path(dir.join(url))
                    .map_err(|()| self.bad_url(url, "bad path"))?,
                (Base::Builtin, Err(e)) => return Err(self.bad_url(url, e)),
            };
            return match parsed.scheme() {
                "http" | "https" | "file" | "oci" => Ok(Location::Remote(parsed)),
                other => Err(Error::setup(format!(
                    "{}: {url}: unsupported URL scheme '{other}' (use https, http, file or oci)",
                    self.origin
                ))),
            };
        }
        let path = PathBuf::from(file.path.as_deref().unwrap_or_default());
        match &self.base {
            Base::Url(_) => Err(Error::setup(format!(
                "{}: a remote catalog cannot name local paths ({}); use url",
                self.origin,
                path.display()
            ))),
            Base::Dir(dir) => Ok(Location::InPlace(dir.join(path))),
            Base::Builtin => Ok(Location::InPlace(path)),
        }
    }

    fn bad_url(&self, url: &str, e: impl std::fmt::Display) -> Error {
        Error::setup(format!("{}: bad url '{url}': {e}", self.origin))
    }
}

pub fn is_yaml(origin: &str) -> bool {
    origin.ends_with(".yaml") || origin.ends_with(".yml")
}

fn is_safe_name(text: &str) -> bool {
    let mut chars = text.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "._+-".contains(c))
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    (line, col)
}

/// Compares versions part by part, numerically where both parts are numbers
/// ("1.10" > "1.9"), so "newest" means what people expect.
pub fn compare_versions(a: &str, b: &str) -> std::cmp::Ordering {
    let parts = |s: &str| -> Vec<String> { s.split(['.', '-', '_']).map(String::from).collect() };
    let (pa, pb) = (parts(a), parts(b));
    for (x, y) in pa.iter().zip(pb.iter()) {
        let ord = match (x.parse::<u64>(), y.parse::<u64>()) {
            (Ok(nx), Ok(ny)) => nx.cmp(&ny),
            _ => x.cmp(y),
        };
        if ord != std::cmp::Ordering::Equal {
            return ord;
        }
    }
    pa.len().cmp(&pb.len())
}

/// Splits `NAME@VERSION`.
pub fn parse_box_ref(text: &str) -> (&str, Option<&str>) {
    match text.split_once('@') {
        Some((name, version)) => (name, Some(version)),
        None => (text, None),
    }
}

/// A box as one catalog describes it for one architecture.
#[derive(Debug, Clone)]
pub struct Found<'c> {
    pub name: String,
    pub arch: String,
    pub catalog: &'c Catalog,
    pub entry: &'c BoxEntry,
    /// Newest first; only the pinned one when a version was pinned.
    pub versions: Vec<&'c VersionEntry>,
    pub pinned: bool,
}

impl Found<'_> {
    pub fn newest(&self) -> &VersionEntry {
        // Cannot fail: `find`, the only maker of a `Found`, refuses an empty list.
        self.versions[0]
    }
}

/// The catalog that names `name`, if any (the first one wins).
pub fn catalog_for<'c>(catalogs: &'c [Catalog], name: &str) -> Option<&'c Catalog> {
    catalogs.iter().find(|c| c.file.boxes.contains_key(name))
}

/// Finds a box for `arch` in the first catalog naming it.
pub fn find<'c>(catalogs: &'c [Catalog], box_ref: &str, arch: &str) -> Result<Found<'c>> {
    let (name, pinned) = parse_box_ref(box_ref);
    let found = catalogs
        .iter()
        .find_map(|c| c.file.boxes.get(name).map(|entry| (c, entry)));
    let Some((catalog, entry)) = found else {
        let known: Vec<String> = known_boxes(catalogs)
            .into_iter()
            .map(String::from)
            .collect();
        return Err(unknown_box(name, &known));
    };
    let mut versions: Vec<&VersionEntry> =
        entry.versions.iter().filter(|v| v.arch == arch).collect();
    if versions.is_empty() {
        return Err(Error::setup(format!(
            "box '{name}' has no {arch} version (it has: {})",
            or_none(&archs_of(entry))
        )));
    }
    versions.sort_by(|a, b| compare_versions(&b.version, &a.version));
    if let Some(want) = pinned {
        let have: Vec<&str> = versions.iter().map(|v| v.version.as_str()).collect();
        versions.retain(|v| v.version == want);
        if versions.is_empty() {
            return Err(Error::setup(format!(
                "box '{name}' has no version {want} for {arch} (it has: {})",
                have.join(", ")
            )));
        }
    }
    Ok(Found {
        name: name.to_string(),
        arch: arch.to_string(),
        catalog,
        entry,
        versions,
        pinned: pinned.is_some(),
    })
}

/// The error for a box name nobody knows, listing the names that are known.
pub fn unknown_box(name: &str, known: &[String]) -> Error {
    Error::setup(format!(
        "no box named '{name}' in any catalog (known: {}); see 'boxbuild --list-boxes'",
        if known.is_empty() {
            "none".to_string()
        } else {
            known.join(", ")
        }
    ))
}

pub fn archs_of(entry: &BoxEntry) -> Vec<&str> {
    let mut archs: Vec<&str> = entry.versions.iter().map(|v| v.arch.as_str()).collect();
    archs.sort();
    archs.dedup();
    archs
}

fn or_none(items: &[&str]) -> String {
    if items.is_empty() {
        "none".to_string()
    } else {
        items.join(", ")
    }
}

pub fn known_boxes(catalogs: &[Catalog]) -> Vec<&str> {
    let mut names: Vec<&str> = catalogs
        .iter()
        .flat_map(|c| c.file.boxes.keys().map(String::as_str))
        .collect();
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
[boxes.demo]
description = "demo"
builder = ["b"]

[[boxes.demo.versions]]
version = "1.9"
arch = "x86_64"
cmdline = "console=ttyS0"
kernel = { path = "k" }

[[boxes.demo.versions]]
version = "1.10"
arch = "x86_64"
cmdline = "console=ttyS0"
kernel = { url = "k", sha256 = "0000000000000000000000000000000000000000000000000000000000000000" }

[[boxes.demo.versions]]
version = "2.0"
arch = "aarch64"
cmdline = "console=ttyAMA0"
kernel = { url = "https://example.org/k", sha256 = "0000000000000000000000000000000000000000000000000000000000000000" }
"#;

    fn sample() -> Vec<Catalog> {
        vec![Catalog::parse(SAMPLE, "sample", Base::Dir("/cat".into())).unwrap()]
    }

    #[test]
    fn finds_versions_newest_first_and_pins() {
        let cats = sample();
        let found = find(&cats, "demo", "x86_64").unwrap();
        let order: Vec<&str> = found.versions.iter().map(|v| v.version.as_str()).collect();
        assert_eq!(order, ["1.10", "1.9"]);
        let pinned = find(&cats, "demo@1.9", "x86_64").unwrap();
        assert!(pinned.pinned);
        assert_eq!(pinned.newest().version, "1.9");
    }

    #[test]
    fn errors_name_what_exists() {
        let cats = sample();
        let e = find(&cats, "demo", "riscv64").unwrap_err().to_string();
        assert!(e.contains("aarch64, x86_64"), "{e}");
        let e = find(&cats, "demo@3", "x86_64").unwrap_err().to_string();
        assert!(e.contains("1.10, 1.9"), "{e}");
        let e = find(&cats, "nope", "x86_64").unwrap_err().to_string();
        assert!(e.contains("known: demo"), "{e}");
    }

    #[test]
    fn locations_resolve_against_the_catalog() {
        let cats = sample();
        let demo = &cats[0].file.boxes["demo"];
        assert_eq!(
            cats[0].locate(&demo.versions[0].kernel).unwrap(),
            Location::InPlace("/cat/k".into())
        );
        assert_eq!(
            cats[0].locate(&demo.versions[1].kernel).unwrap(),
            Location::Remote(Url::parse("file:///cat/k").unwrap())
        );
        let remote = Catalog::parse(
            SAMPLE,
            "remote",
            Base::Url(Url::parse("http://h/boxes/index.toml").unwrap()),
        )
        .unwrap();
        let demo = &remote.file.boxes["demo"];
        assert_eq!(
            remote.locate(&demo.versions[1].kernel).unwrap(),
            Location::Remote(Url::parse("http://h/boxes/k").unwrap())
        );
        assert!(remote.locate(&demo.versions[0].kernel).is_err());
    }

    #[test]
    fn unsafe_names_and_missing_digests_are_refused() {
        let e = Catalog::parse("[boxes.\"../x\"]\nbuilder = []\n", "c", Base::Builtin)
            .unwrap_err()
            .to_string();
        assert!(e.contains("box name '../x'"), "{e}");
        let e = Catalog::parse(
            &SAMPLE.replace("version = \"1.9\"", "version = \"..\""),
            "c",
            Base::Builtin,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("version '..'"), "{e}");
        let e = Catalog::parse(
            &SAMPLE.replace("{ path = \"k\" }", "{ url = \"k\" }"),
            "c",
            Base::Builtin,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("needs its sha256"), "{e}");
    }

    #[test]
    fn versions_override_their_box() {
        let text = SAMPLE.replacen(
            "version = \"1.9\"",
            "version = \"1.9\"\nmemory = \"1G\"\nbuilder = [\"other\"]",
            1,
        );
        let cat = Catalog::parse(&text, "c", Base::Builtin).unwrap();
        let entry = &cat.file.boxes["demo"];
        let old = entry.settings(&entry.versions[0]);
        assert_eq!(
            (old.builder[0].as_str(), old.memory.as_deref()),
            ("other", Some("1G"))
        );
        let new = entry.settings(&entry.versions[1]);
        assert_eq!((new.builder[0].as_str(), new.memory), ("b", None));
        let e = Catalog::parse(&SAMPLE.replace("builder = [\"b\"]", ""), "c", Base::Builtin)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no builder command"), "{e}");
    }

    #[test]
    fn bad_catalog_names_file_and_line() {
        let e = Catalog::parse("[boxes.x]\nbuilder = 3\n", "f.toml", Base::Builtin)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("f.toml:2:"), "{e}");
    }

    #[test]
    fn yaml_catalogs_read_like_toml_ones() {
        let yaml = "boxes:\n  demo:\n    builder: [b]\n    versions:\n      - version: '1'\n        arch: x86_64\n        cmdline: c\n        kernel: { path: k }\n";
        let cats = vec![Catalog::parse(yaml, "c.yaml", Base::Dir("/d".into())).unwrap()];
        assert_eq!(find(&cats, "demo", "x86_64").unwrap().newest().version, "1");
        let e = Catalog::parse("boxes:\n  demo:\n    builder: 3\n", "c.yml", Base::Builtin)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("c.yml:3:"), "{e}");
    }

    #[test]
    fn version_order_is_numeric() {
        use std::cmp::Ordering::*;
        assert_eq!(compare_versions("1.10", "1.9"), Greater);
        assert_eq!(compare_versions("1.0", "1.0.1"), Less);
        assert_eq!(compare_versions("2", "2"), Equal);
    }

    #[test]
    fn builtin_catalog_parses() {
        Catalog::parse(BUILTIN, "built-in", Base::Builtin).unwrap();
    }
}
