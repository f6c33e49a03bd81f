//! `kiwi_boxed_plugin.yml`, the box list of KIWI's Python boxbuild plugin, read so that
//! its users keep their boxes and configuration. It is consulted for a box that no
//! boxbuild catalog names, from the plugin's own search places.
//!
//! A plugin box has no versions: a new box is announced by a new "packages file" next to
//! the box files. boxbuild turns one box and architecture into a catalog entry whose
//! version is the packages file's digest (first 12 hex digits), whose file digests come
//! from the `.sha256` sidecars, and whose kernel and initrd are members of the
//! `*-Kernel.tar.xz`. The entry is kept among the cached catalogs and checked again
//! like a remote catalog (once per update interval; offline, the kept entry is used).

use super::{Base, Catalog};
use crate::boxes::fetch::http::{FetchError, Http, Revalidated};
use crate::sys::error::{Context, Error, Result};
use reqwest::Url;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

pub const FILE_NAME: &str = "kiwi_boxed_plugin.yml";
/// The public boxes the plugin ships in its default configuration (same format).
const BUILTIN: &str = include_str!("../../../boxes/kiwi-plugin-boxes.yml");
/// Where `obs://Project:Sub/repo` sources live.
const OBS_DOWNLOAD: &str = "https://download.opensuse.org/repositories/";

#[derive(Debug, Deserialize)]
pub struct PluginConfig {
    #[serde(rename = "box", default)]
    pub boxes: Vec<PluginBox>,
}

#[derive(Debug, Deserialize)]
pub struct PluginBox {
    pub name: String,
    pub mem_mb: Option<serde_norway::Value>,
    pub processors: Option<serde_norway::Value>,
    pub console: Option<String>,
    #[serde(default)]
    pub arch: Vec<PluginArch>,
}

#[derive(Debug, Deserialize)]
pub struct PluginArch {
    pub name: String,
    #[serde(default)]
    pub cmdline: Vec<String>,
    pub source: String,
    pub packages_file: Option<String>,
    #[serde(default)]
    pub boxfiles: Vec<String>,
    #[serde(default)]
    pub use_initrd: bool,
    /// The box as a container image, run by `--container`.
    pub container: Option<String>,
}

/// The plugin's search order: `$KIWI_BOXED_PLUGIN_CFG`, `./kiwi_boxed_plugin.yml`,
/// `~/.config/kiwi/kiwi_boxed_plugin.yml`, `/etc/kiwi_boxed_plugin.yml`; the first that
/// exists is used, else the built-in list of the plugin's public boxes.
pub fn find() -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(path) = std::env::var_os("KIWI_BOXED_PLUGIN_CFG").filter(|p| !p.is_empty()) {
        candidates.push(PathBuf::from(path));
    }
    candidates.push(PathBuf::from(FILE_NAME));
    if let Some(home) = dirs::home_dir() {
        candidates.push(home.join(".config/kiwi").join(FILE_NAME));
    }
    candidates.push(Path::new("/etc").join(FILE_NAME));
    candidates.into_iter().find(|p| p.is_file())
}

/// The configuration in effect and where it came from.
pub fn load() -> Result<(PluginConfig, String)> {
    match find() {
        Some(path) => {
            let text = std::fs::read_to_string(&path).context(|| path.display().to_string())?;
            let origin = path.display().to_string();
            Ok((parse(&text, &origin)?, origin))
        }
        None => Ok((
            parse(BUILTIN, "built-in plugin boxes")?,
            "built-in plugin boxes".into(),
        )),
    }
}

pub fn parse(text: &str, origin: &str) -> Result<PluginConfig> {
    serde_norway::from_str(text).map_err(|e| {
        let (line, col) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
        let message = e.to_string();
        let message = message
            .split(" at line ")
            .next()
            .unwrap_or(&message)
            .to_string();
        Error::setup(format!("{origin}:{line}:{col}: bad {FILE_NAME}: {message}"))
    })
}

/// The directory URL of a source: `obs://Project:Sub/repo` on openSUSE's download
/// server, http(s) as given.
pub fn source_url(source: &str) -> Result<Url> {
    let text = if let Some(rest) = source.strip_prefix("obs://") {
        let (project, repo) = rest.split_once('/').unwrap_or((rest, ""));
        format!(
            "{OBS_DOWNLOAD}{}/{}/",
            project.replace(':', ":/"),
            repo.trim_matches('/')
        )
    } else {
        format!("{}/", source.trim_end_matches('/'))
    };
    let url = Url::parse(&text).map_err(|e| Error::setup(format!("box source '{source}': {e}")))?;
    match url.scheme() {
        "http" | "https" | "file" => Ok(url),
        other => Err(Error::setup(format!(
            "box source '{source}': unsupported scheme '{other}' (use obs://, https://, http://)"
        ))),
    }
}

/// The plugin's memory setting (`8096M`, `8G`, or a number of MiB as in `mem_mb`).
fn memory(value: &serde_norway::Value) -> Option<String> {
    match value {
        serde_norway::Value::Number(n) => Some(format!("{n}M")),
        serde_norway::Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

fn get_text(http: &Http, url: &Url) -> Result<String> {
    match http.get_text_if_changed(url, None) {
        Ok(Revalidated::Changed { text, .. }) => Ok(text),
        Ok(Revalidated::Unchanged) => Err(Error::setup(format!("{url}: unexpected 304"))),
        Err(FetchError::Refused(status)) => Err(Error::setup(format!("{url}: HTTP {status}"))),
        Err(e) => Err(Error::setup(format!("{url}: {e}"))),
    }
}

/// The first word of a `sha256sum` line: the digest.
fn sidecar_digest(text: &str, url: &Url) -> Result<String> {
    let digest = text
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    if digest.len() == 64 && digest.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(digest)
    } else {
        Err(Error::setup(format!("{url}: not a sha256sum line")))
    }
}

/// A catalog (TOML) for one box and architecture, from the server's current files.
pub fn synthesize(config: &PluginConfig, name: &str, arch: &str, http: &Http) -> Result<String> {
    let ready_box = config
        .boxes
        .iter()
        .find(|b| b.name == name)
        .ok_or_else(|| Error::setup(format!("box {name} is not in {FILE_NAME}")))?;
    let Some(a) = ready_box.arch.iter().find(|a| a.name == arch) else {
        let known: Vec<&str> = ready_box.arch.iter().map(|a| a.name.as_str()).collect();
        return Err(Error::setup(format!(
            "box {name} has no {arch} version (it has: {}); choose one with --arch",
            known.join(", ")
        )));
    };
    let base = source_url(&a.source)?;
    let file_url = |file: &str| {
        base.join(file)
            .map_err(|e| Error::setup(format!("box {name}: {file}: {e}")))
    };
    let kernel_file = a.boxfiles.iter().find(|f| f.ends_with(".tar.xz"));
    let disk_file = a.boxfiles.iter().find(|f| f.ends_with(".qcow2"));
    let (Some(kernel_file), Some(disk_file)) = (kernel_file, disk_file) else {
        return Err(Error::setup(format!(
            "box {name} ({arch}): boxfiles must name a *-Kernel.tar.xz and a *.qcow2"
        )));
    };
    let digest_of = |file: &str| -> Result<String> {
        let url = file_url(&format!("{file}.sha256"))?;
        sidecar_digest(&get_text(http, &url)?, &url)
    };
    let kernel_sha = digest_of(kernel_file)?;
    let disk_sha = digest_of(disk_file)?;
    // A new packages file marks a new box; without one, the disk's digest does.
    let version = match &a.packages_file {
        Some(file) => {
            let text = get_text(http, &file_url(file)?)?;
            hex(&Sha256::digest(text.as_bytes()))[..12].to_string()
        }
        None => disk_sha[..12].to_string(),
    };
    let console = ready_box.console.clone().unwrap_or_else(|| "hvc0".into());
    let mut cmdline = vec![format!("console={console}")];
    cmdline.extend(a.cmdline.iter().cloned());
    let mut toml = format!(
        "[boxes.{name}]\ndescription = {}\nprotocol = \"kiwi-boxed-plugin\"\n",
        quote(&format!("KIWI boxed plugin box from {}", a.source))
    );
    if let Some(mem) = ready_box.mem_mb.as_ref().and_then(memory) {
        toml.push_str(&format!("memory = {}\n", quote(&mem)));
    }
    if let Some(cpus) = ready_box.processors.as_ref().and_then(|v| match v {
        serde_norway::Value::Number(n) => n.as_u64(),
        serde_norway::Value::String(s) => s.parse().ok(),
        _ => None,
    }) {
        toml.push_str(&format!("cpus = {cpus}\n"));
    }
    toml.push_str(&format!(
        "\n[[boxes.{name}.versions]]\nversion = {}\narch = {}\ncmdline = {}\nconsole = {}\n",
        quote(&version),
        quote(arch),
        quote(&cmdline.join(" ")),
        quote(&console)
    ));
    let kernel_url = file_url(kernel_file)?;
    toml.push_str(&format!(
        "kernel = {{ url = {}, sha256 = {}, member = \"*.kernel\" }}\n",
        quote(kernel_url.as_str()),
        quote(&kernel_sha)
    ));
    if a.use_initrd {
        toml.push_str(&format!(
            "initrd = {{ url = {}, sha256 = {}, member = \"*.initrd\" }}\n",
            quote(kernel_url.as_str()),
            quote(&kernel_sha)
        ));
    }
    if let Some(image) = a.container.as_deref().filter(|i| !i.trim().is_empty()) {
        toml.push_str(&format!("container = {}\n", quote(image.trim())));
    }
    toml.push_str(&format!(
        "disk = {{ url = {}, sha256 = {} }}\n",
        quote(file_url(disk_file)?.as_str()),
        quote(&disk_sha)
    ));
    Ok(toml)
}

fn quote(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The synthesized catalog for `name`/`arch`, from the server when due, else the kept
/// copy; None if the configuration does not name the box.
pub fn catalog_for(
    name: &str,
    arch: &str,
    http: &Http,
    cache_dir: &Path,
    due: impl Fn(u64) -> bool,
    warn: impl Fn(&str),
) -> Result<Option<Catalog>> {
    let (config, origin) = load()?;
    if !config.boxes.iter().any(|b| b.name == name) {
        return Ok(None);
    }
    let key = hex(&Sha256::digest(
        format!("{origin}\0{name}\0{arch}").as_bytes(),
    ))[..16]
        .to_string();
    let copy_path = cache_dir.join(format!("plugin-{key}.toml"));
    let checked = std::fs::metadata(&copy_path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .map(|age| age.as_secs());
    let label = format!("{origin} (box {name}, {arch})");
    let parse = |text: &str| Catalog::parse(text, &label, Base::Builtin).map(Some);
    let copy = std::fs::read_to_string(&copy_path).ok();
    if let (Some(text), Some(age)) = (&copy, checked) {
        if !due(age) {
            return parse(text);
        }
    }
    match synthesize(&config, name, arch, http) {
        Ok(text) => {
            let catalog = parse(&text)?;
            std::fs::create_dir_all(cache_dir).context(|| cache_dir.display().to_string())?;
            crate::sys::atomic::write_atomically(&copy_path, text.as_bytes())?;
            Ok(catalog)
        }
        Err(e) => match copy {
            Some(text) => {
                warn(&format!(
                    "could not check box {name} for a newer version ({e}); using the one known"
                ));
                // Touch the copy: an offline machine tries once per interval.
                crate::sys::atomic::write_atomically(&copy_path, text.as_bytes())?;
                parse(&text)
            }
            None => Err(e),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn obs_sources_map_to_the_download_server() {
        assert_eq!(
            source_url("obs://Virtualization:Appliances:SelfContained:tumbleweed/images")
                .unwrap()
                .as_str(),
            "https://download.opensuse.org/repositories/Virtualization:/Appliances:/SelfContained:/tumbleweed/images/"
        );
        assert_eq!(
            source_url("https://example.org/boxes").unwrap().as_str(),
            "https://example.org/boxes/"
        );
        assert!(source_url("ftp://x/y").is_err());
    }

    #[test]
    fn the_builtin_list_names_the_public_boxes() {
        let config = parse(BUILTIN, "built-in").unwrap();
        let names: Vec<&str> = config.boxes.iter().map(|b| b.name.as_str()).collect();
        for wanted in ["tumbleweed", "leap", "fedora", "ubuntu", "universal"] {
            assert!(names.contains(&wanted), "{names:?}");
        }
        for b in &config.boxes {
            for a in &b.arch {
                source_url(&a.source).unwrap();
                assert!(
                    a.boxfiles.iter().any(|f| f.ends_with(".qcow2")),
                    "{}",
                    b.name
                );
            }
        }
    }

    #[test]
    fn a_broken_file_is_reported_with_its_line() {
        let e = parse(
            "box:\n  - name: x\n    arch: 3\n",
            "/etc/kiwi_boxed_plugin.yml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("/etc/kiwi_boxed_plugin.yml:3:"), "{e}");
    }

    #[test]
    fn sidecars_hold_a_digest_first() {
        let url = Url::parse("http://x/a.sha256").unwrap();
        let line = format!("{}  a.qcow2\n", "AB".repeat(32));
        assert_eq!(sidecar_digest(&line, &url).unwrap(), "ab".repeat(32));
        assert!(sidecar_digest("nonsense", &url).is_err());
    }
}
