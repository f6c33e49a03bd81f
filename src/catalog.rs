//! Where boxes are described: TOML catalogs, searched in a fixed order; the first catalog
//! that names a box wins for that box. Format and order: docs/catalog.md.

use crate::error::{Context, Error, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The default catalog compiled into the binary.
const BUILTIN: &str = include_str!("../boxes/catalog.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogFile {
    #[serde(default)]
    pub boxes: BTreeMap<String, BoxEntry>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoxEntry {
    #[serde(default)]
    pub description: String,
    /// The builder's command inside the box; the user's arguments are appended.
    pub builder: Vec<String>,
    /// Default memory, e.g. "8G"; `--box-memory` overrides it.
    pub memory: Option<String>,
    /// Default vCPUs; `--box-smp-cpus` overrides it.
    pub cpus: Option<u32>,
    #[serde(default)]
    pub versions: Vec<VersionEntry>,
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
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRef {
    /// `file://` URL, or a path relative to the catalog file.
    pub url: String,
    /// Checked on every use (one stat call).
    pub size: Option<u64>,
    /// Verified when a box is fetched or by `box verify`, not on every run.
    #[allow(dead_code)]
    pub sha256: Option<String>,
}

/// One box version as a build needs it, with local file paths.
#[derive(Debug, Clone)]
pub struct ResolvedBox {
    pub name: String,
    pub entry: BoxEntry,
    pub version: VersionEntry,
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub disk: Option<PathBuf>,
    /// Which catalog file described it (for messages).
    pub source: String,
}

/// A catalog as loaded, with where it came from (file paths resolve relative to it).
#[derive(Debug, Clone)]
pub struct Catalog {
    pub origin: String,
    pub base_dir: Option<PathBuf>,
    pub file: CatalogFile,
}

impl Catalog {
    pub fn parse(text: &str, origin: &str, base_dir: Option<PathBuf>) -> Result<Catalog> {
        let file: CatalogFile = toml::from_str(text).map_err(|e| {
            let (line, col) = e.span().map(|s| line_col(text, s.start)).unwrap_or((0, 0));
            Error::setup(format!(
                "{origin}:{line}:{col}: bad catalog: {}",
                e.message()
            ))
        })?;
        Ok(Catalog {
            origin: origin.to_string(),
            base_dir,
            file,
        })
    }

    pub fn load(path: &Path) -> Result<Catalog> {
        let text = std::fs::read_to_string(path).context(|| format!("{}", path.display()))?;
        Catalog::parse(
            &text,
            &path.display().to_string(),
            path.parent().map(Path::to_path_buf),
        )
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    (line, col)
}

/// The catalog files to read, in order of precedence.
pub fn search_paths() -> Vec<PathBuf> {
    let mut paths = Vec::new();
    if let Some(p) = std::env::var_os("BOXBUILD_CONFIG") {
        paths.push(PathBuf::from(p));
    }
    paths.push(PathBuf::from("boxbuild.toml"));
    let mut dirs_in_order = Vec::new();
    if let Some(config) = dirs::config_dir() {
        dirs_in_order.push(config.join("boxbuild"));
    }
    dirs_in_order.push(PathBuf::from("/etc/boxbuild"));
    for dir in dirs_in_order {
        paths.push(dir.join("boxbuild.toml"));
        // Drop-in files, e.g. written by the box recipes in boxes/.
        if let Ok(entries) = std::fs::read_dir(dir.join("catalog.d")) {
            let mut drop_ins: Vec<PathBuf> = entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect();
            drop_ins.sort();
            paths.extend(drop_ins);
        }
    }
    paths
}

/// Every catalog in precedence order, ending with the built-in one. A file named by
/// BOXBUILD_CONFIG must exist; the others are optional.
pub fn load_all() -> Result<Vec<Catalog>> {
    let explicit = std::env::var_os("BOXBUILD_CONFIG").map(PathBuf::from);
    let mut catalogs = Vec::new();
    for path in search_paths() {
        if path.is_file() {
            catalogs.push(Catalog::load(&path)?);
        } else if Some(&path) == explicit.as_ref() {
            return Err(Error::setup(format!(
                "BOXBUILD_CONFIG names {}, which does not exist",
                path.display()
            )));
        }
    }
    catalogs.push(Catalog::parse(BUILTIN, "built-in catalog", None)?);
    Ok(catalogs)
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

/// Finds a box for `arch` in the first catalog naming it, newest version unless pinned.
pub fn resolve(catalogs: &[Catalog], box_ref: &str, arch: &str) -> Result<ResolvedBox> {
    let (name, pinned) = parse_box_ref(box_ref);
    let catalog = catalogs
        .iter()
        .find(|c| c.file.boxes.contains_key(name))
        .ok_or_else(|| {
            let known: Vec<&str> = known_boxes(catalogs);
            Error::setup(format!(
                "no box named '{name}' in any catalog (known: {}); see 'boxbuild --list-boxes'",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ))
        })?;
    let entry = &catalog.file.boxes[name];
    let for_arch: Vec<&VersionEntry> = entry.versions.iter().filter(|v| v.arch == arch).collect();
    if for_arch.is_empty() {
        let mut archs: Vec<&str> = entry.versions.iter().map(|v| v.arch.as_str()).collect();
        archs.sort();
        archs.dedup();
        return Err(Error::setup(format!(
            "box '{name}' has no {arch} version (it has: {})",
            if archs.is_empty() {
                "none".to_string()
            } else {
                archs.join(", ")
            }
        )));
    }
    let version = match pinned {
        Some(want) => for_arch.iter().find(|v| v.version == want).ok_or_else(|| {
            let have: Vec<&str> = for_arch.iter().map(|v| v.version.as_str()).collect();
            Error::setup(format!(
                "box '{name}' has no version {want} for {arch} (it has: {})",
                have.join(", ")
            ))
        })?,
        None => for_arch
            .iter()
            .max_by(|a, b| compare_versions(&a.version, &b.version))
            .expect("non-empty"),
    };
    let local = |f: &FileRef| local_path(catalog, f);
    Ok(ResolvedBox {
        name: name.to_string(),
        entry: entry.clone(),
        version: (*version).clone(),
        kernel: local(&version.kernel)?,
        initrd: version.initrd.as_ref().map(local).transpose()?,
        disk: version.disk.as_ref().map(local).transpose()?,
        source: catalog.origin.clone(),
    })
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

/// A local path for a file reference: `file://` URLs and plain paths (relative to the
/// catalog file). Remote URLs need the box store.
fn local_path(catalog: &Catalog, file: &FileRef) -> Result<PathBuf> {
    let url = file.url.as_str();
    let path = if let Some(p) = url.strip_prefix("file://") {
        PathBuf::from(p)
    } else if url.contains("://") {
        return Err(Error::setup(format!(
            "{}: {url}: only local (file://) boxes are supported in this version",
            catalog.origin
        )));
    } else {
        match &catalog.base_dir {
            Some(base) => base.join(url),
            None => PathBuf::from(url),
        }
    };
    let meta = std::fs::metadata(&path).map_err(|e| {
        Error::setup(format!(
            "{}: box file {}: {e}; rebuild or re-fetch the box",
            catalog.origin,
            path.display()
        ))
    })?;
    match file.size {
        Some(size) if size != meta.len() => Err(Error::setup(format!(
            "{}: box file {} is {} bytes, the catalog says {size}; rebuild or re-fetch the box",
            catalog.origin,
            path.display(),
            meta.len()
        ))),
        _ => Ok(path),
    }
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
kernel = { url = "k" }

[[boxes.demo.versions]]
version = "1.10"
arch = "x86_64"
cmdline = "console=ttyS0"
kernel = { url = "k" }

[[boxes.demo.versions]]
version = "2.0"
arch = "aarch64"
cmdline = "console=ttyAMA0"
kernel = { url = "k" }
"#;

    fn sample_catalog(dir: &Path) -> Vec<Catalog> {
        std::fs::write(dir.join("k"), b"kernel").unwrap();
        vec![Catalog::parse(SAMPLE, "sample", Some(dir.to_path_buf())).unwrap()]
    }

    #[test]
    fn picks_the_newest_version_for_the_arch() {
        let tmp = tempfile::tempdir().unwrap();
        let cats = sample_catalog(tmp.path());
        let b = resolve(&cats, "demo", "x86_64").unwrap();
        assert_eq!(b.version.version, "1.10");
        assert_eq!(b.kernel, tmp.path().join("k"));
        assert_eq!(
            resolve(&cats, "demo@1.9", "x86_64")
                .unwrap()
                .version
                .version,
            "1.9"
        );
    }

    #[test]
    fn errors_name_what_exists() {
        let tmp = tempfile::tempdir().unwrap();
        let cats = sample_catalog(tmp.path());
        let e = resolve(&cats, "demo", "riscv64").unwrap_err().to_string();
        assert!(e.contains("aarch64, x86_64"), "{e}");
        let e = resolve(&cats, "demo@3", "x86_64").unwrap_err().to_string();
        assert!(e.contains("1.9, 1.10"), "{e}");
        let e = resolve(&cats, "nope", "x86_64").unwrap_err().to_string();
        assert!(e.contains("known: demo"), "{e}");
    }

    #[test]
    fn a_file_of_the_wrong_size_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("k"), b"kernel").unwrap();
        let text = SAMPLE.replacen(
            "kernel = { url = \"k\" }",
            "kernel = { url = \"k\", size = 99 }",
            1,
        );
        let cats = vec![Catalog::parse(&text, "s", Some(tmp.path().to_path_buf())).unwrap()];
        let e = resolve(&cats, "demo@1.9", "x86_64")
            .unwrap_err()
            .to_string();
        assert!(e.contains("6 bytes, the catalog says 99"), "{e}");
    }

    #[test]
    fn bad_catalog_names_file_and_line() {
        let e = Catalog::parse("[boxes.x]\nbuilder = 3\n", "f.toml", None)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("f.toml:2:"), "{e}");
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
        Catalog::parse(BUILTIN, "built-in", None).unwrap();
    }
}
