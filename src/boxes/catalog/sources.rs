//! Which catalogs are read, in which order, and how remote catalogs are kept: a copy in
//! the cache, refreshed with a conditional GET at most once per update-check interval,
//! and used as it is when the network is away.

use super::{Base, Catalog, BUILTIN};
use crate::boxes::fetch::http::{Http, Revalidated};
use crate::sys::error::{Context, Error, Result};
use crate::sys::ui::Ui;
use reqwest::Url;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

pub const DEFAULT_UPDATE_CHECK_INTERVAL: Duration = Duration::from_secs(24 * 3600);

/// How fresh remote catalogs must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresh {
    /// Check when the last check is older than the interval (the default).
    WhenDue,
    /// Use the cached copy; fetch only when there is none (`--no-update-check`).
    Never,
    /// Check now (`box update`).
    Now,
}

pub struct LoadPolicy<'a> {
    pub refresh: Refresh,
    pub ui: Ui,
    pub http: &'a Http,
    /// Where copies of remote catalogs are kept.
    pub cache_dir: PathBuf,
    /// Which catalogs must be signed, and by which keyring.
    pub rules: &'a [crate::boxes::trust::Rule],
}

/// The catalog files to read, in order of precedence.
pub fn search_paths() -> Vec<PathBuf> {
    let mut paths = Vec::new();
    if let Some(p) = std::env::var_os("BOXBUILD_CONFIG") {
        paths.push(PathBuf::from(p));
    }
    let with_extensions =
        |stem: PathBuf| ["toml", "yaml", "yml"].map(|ext| stem.with_extension(ext));
    paths.extend(with_extensions(PathBuf::from("boxbuild")));
    let mut dirs_in_order = Vec::new();
    if let Some(config) = dirs::config_dir() {
        dirs_in_order.push(config.join("boxbuild"));
    }
    dirs_in_order.push(PathBuf::from("/etc/boxbuild"));
    for dir in dirs_in_order {
        paths.extend(with_extensions(dir.join("boxbuild")));
        // Drop-in files, e.g. written by the box recipes in boxes/.
        if let Ok(entries) = std::fs::read_dir(dir.join("catalog.d")) {
            let mut drop_ins: Vec<PathBuf> = entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.extension()
                        .is_some_and(|x| x == "toml" || x == "yaml" || x == "yml")
                })
                .collect();
            drop_ins.sort();
            paths.extend(drop_ins);
        }
    }
    paths
}

fn load_file(path: &Path) -> Result<Catalog> {
    let text = std::fs::read_to_string(path).context(|| format!("{}", path.display()))?;
    let dir = path
        .parent()
        .map(|p| {
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            }
        })
        .unwrap_or(Path::new("."));
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    Catalog::parse(&text, &path.display().to_string(), Base::Dir(dir))
}

/// Every catalog in precedence order, ending with the built-in one. A remote catalog
/// comes right after the file that names it; `$BOXBUILD_CATALOG_URL` comes first.
/// A file named by `$BOXBUILD_CONFIG` must exist; the others are optional.
pub fn load_all(policy: &LoadPolicy) -> Result<Vec<Catalog>> {
    let explicit = std::env::var_os("BOXBUILD_CONFIG").map(PathBuf::from);
    let mut local = Vec::new();
    for path in search_paths() {
        if path.is_file() {
            local.push(load_file(&path)?);
        } else if Some(&path) == explicit.as_ref() {
            return Err(Error::setup(format!(
                "BOXBUILD_CONFIG names {}, which does not exist",
                path.display()
            )));
        }
    }
    local.push(Catalog::parse(BUILTIN, "built-in catalog", Base::Builtin)?);
    let interval = update_check_interval(&local)?;

    let mut catalogs = Vec::new();
    let from_env = std::env::var("BOXBUILD_CATALOG_URL").unwrap_or_default();
    for url in from_env.split_whitespace() {
        catalogs.extend(load_remote(url, "BOXBUILD_CATALOG_URL", interval, policy)?);
    }
    for catalog in local {
        let remotes = catalog.file.remote_catalogs.clone();
        let origin = catalog.origin.clone();
        catalogs.push(catalog);
        for url in &remotes {
            catalogs.extend(load_remote(url, &origin, interval, policy)?);
        }
    }
    Ok(catalogs)
}

/// `$BOXBUILD_UPDATE_CHECK_INTERVAL`, else the first catalog that sets it, else a day.
pub fn update_check_interval(catalogs: &[Catalog]) -> Result<Duration> {
    let parse = |text: &str, origin: &str| {
        humantime::parse_duration(text).map_err(|e| {
            Error::setup(format!(
                "{origin}: update_check_interval '{text}': {e} (examples: 30m, 6h, 1d)"
            ))
        })
    };
    if let Ok(text) = std::env::var("BOXBUILD_UPDATE_CHECK_INTERVAL") {
        if text.trim() == "0" {
            return Ok(Duration::ZERO);
        }
        return parse(&text, "BOXBUILD_UPDATE_CHECK_INTERVAL");
    }
    for c in catalogs {
        if let Some(text) = &c.file.update_check_interval {
            return parse(text, &c.origin);
        }
    }
    Ok(DEFAULT_UPDATE_CHECK_INTERVAL)
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct CopyMeta {
    url: String,
    etag: Option<String>,
    last_modified: Option<String>,
    /// When the copy was last confirmed or fetched (seconds since the epoch).
    checked: u64,
    /// When a check last failed; an offline machine pays for one try per interval.
    #[serde(default)]
    failed: u64,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A remote catalog, from the network or the cached copy. Unreachable with no copy: a
/// warning and no catalog, so boxes from other catalogs still work.
fn load_remote(
    url_text: &str,
    named_by: &str,
    interval: Duration,
    policy: &LoadPolicy,
) -> Result<Option<Catalog>> {
    let url = Url::parse(url_text)
        .map_err(|e| Error::setup(format!("{named_by}: bad catalog URL '{url_text}': {e}")))?;
    let parse = |text: &str| -> Result<Catalog> {
        let catalog = Catalog::parse(text, url.as_str(), Base::Url(url.clone()))?;
        if !catalog.file.remote_catalogs.is_empty() {
            return Err(Error::setup(format!(
                "{url}: a remote catalog cannot name further remote catalogs"
            )));
        }
        Ok(catalog)
    };
    let signed = Signed::new(&url, policy)?;
    match url.scheme() {
        "file" => {
            let path = url
                .to_file_path()
                .map_err(|()| Error::setup(format!("{named_by}: bad file URL {url}")))?;
            let text = std::fs::read_to_string(&path).context(|| url.to_string())?;
            signed.check(&text, true, policy)?;
            return parse(&text).map(Some);
        }
        "http" | "https" => {}
        other => {
            return Err(Error::setup(format!(
            "{named_by}: catalog URL {url}: unsupported scheme '{other}' (use https, http or file)"
        )))
        }
    }

    let key = hex16(url.as_str());
    let copy_path = policy.cache_dir.join(format!("{key}.toml"));
    let meta_path = policy.cache_dir.join(format!("{key}.json"));
    let copy = std::fs::read_to_string(&copy_path).ok();
    let meta: Option<CopyMeta> = std::fs::read(&meta_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let (copy, meta) = match (copy, meta) {
        (Some(c), Some(m)) if m.url == url.as_str() => (Some(c), m),
        _ => (None, CopyMeta::default()),
    };
    let due = match policy.refresh {
        Refresh::Now => true,
        Refresh::Never => copy.is_none(),
        Refresh::WhenDue => {
            copy.is_none()
                || now_secs().saturating_sub(meta.checked.max(meta.failed)) >= interval.as_secs()
        }
    };
    let signature_path = policy.cache_dir.join(format!("{key}.signature"));
    let signed = signed.keeping(signature_path);
    if !due {
        let text = copy.as_deref().unwrap_or_default();
        signed.check(text, false, policy)?;
        return parse(text).map(Some);
    }
    let validators = copy
        .as_ref()
        .map(|_| (meta.etag.clone(), meta.last_modified.clone()));
    match policy.http.get_text_if_changed(&url, validators) {
        Ok(Revalidated::Unchanged) => {
            let meta = CopyMeta {
                checked: now_secs(),
                failed: 0,
                ..meta
            };
            write_meta(&meta_path, &meta)?;
            let text = copy.as_deref().unwrap_or_default();
            signed.check(text, false, policy)?;
            parse(text).map(Some)
        }
        Ok(Revalidated::Changed {
            text,
            etag,
            last_modified,
        }) => {
            let catalog = parse(&text)?;
            signed.check(&text, true, policy)?;
            std::fs::create_dir_all(&policy.cache_dir)
                .context(|| policy.cache_dir.display().to_string())?;
            crate::sys::atomic::write_atomically(&copy_path, text.as_bytes())?;
            write_meta(
                &meta_path,
                &CopyMeta {
                    url: url.to_string(),
                    etag,
                    last_modified,
                    checked: now_secs(),
                    failed: 0,
                },
            )?;
            Ok(Some(catalog))
        }
        Err(e) => match copy {
            Some(text) => {
                let failed = CopyMeta {
                    failed: now_secs(),
                    ..meta
                };
                write_meta(&meta_path, &failed)?;
                let meta = failed;
                let age = Duration::from_secs(now_secs().saturating_sub(meta.checked));
                policy.ui.warn(&format!(
                    "could not check {url} for newer boxes ({e}); using the copy checked {} ago",
                    humantime::format_duration(Duration::from_secs(age.as_secs()))
                ));
                signed.check(&text, false, policy)?;
                parse(&text).map(Some)
            }
            None => {
                policy.ui.warn(&format!(
                    "cannot read the remote catalog {url} ({e}); its boxes are unavailable"
                ));
                Ok(None)
            }
        },
    }
}

/// The OpenPGP check a trust rule asks for a catalog (docs/signatures.md); none when no
/// rule names it.
struct Signed {
    url: Url,
    keyring: Option<(PathBuf, PathBuf)>,
    /// Where the signature of the kept copy is kept.
    kept: Option<PathBuf>,
}

impl Signed {
    fn new(url: &Url, policy: &LoadPolicy) -> Result<Signed> {
        let keyring = match crate::boxes::trust::rule_for(policy.rules, url.as_str()) {
            None => None,
            Some(rule) => match &rule.keyring {
                Some(keyring) => Some((keyring.clone(), rule.origin.clone())),
                None => {
                    return Err(Error::setup(format!(
                        "{url}: {} binds it to P-256 keys, which sign registry boxes; give the rule a 'keyring' (OpenPGP) to verify a catalog",
                        rule.origin.display()
                    )))
                }
            },
        };
        Ok(Signed {
            url: url.clone(),
            keyring,
            kept: None,
        })
    }

    fn keeping(self, path: PathBuf) -> Signed {
        Signed {
            kept: Some(path),
            ..self
        }
    }

    /// Checks `text` against its signature: fetched now when the text is (`fresh`) or no
    /// signature is kept, else the kept one. Errors: one line naming catalog, keyring and why.
    fn check(&self, text: &str, fresh: bool, policy: &LoadPolicy) -> Result<()> {
        let Some((keyring_path, origin)) = &self.keyring else {
            return Ok(());
        };
        let refuse = |why: String| {
            Error::setup(format!(
                "{}: refused: {why}; {} requires a signature by the keyring {}",
                self.url,
                origin.display(),
                keyring_path.display()
            ))
        };
        let kept = self
            .kept
            .as_ref()
            .filter(|_| !fresh)
            .and_then(|p| std::fs::read(p).ok());
        let signature = match kept {
            Some(bytes) => bytes,
            None => self.fetch_signature(policy).map_err(refuse)?,
        };
        let keyring = super::openpgp::load_keyring(keyring_path).map_err(Error::setup)?;
        super::openpgp::verify(&keyring, text.as_bytes(), &signature).map_err(refuse)?;
        if let Some(path) = &self.kept {
            let _ = std::fs::create_dir_all(&policy.cache_dir);
            crate::sys::atomic::write_atomically(path, &signature)?;
        }
        Ok(())
    }

    /// URL.asc, else URL.sig, from the server or the file system.
    fn fetch_signature(&self, policy: &LoadPolicy) -> std::result::Result<Vec<u8>, String> {
        for suffix in super::openpgp::SUFFIXES {
            let url = Url::parse(&format!("{}{suffix}", self.url))
                .map_err(|e| format!("bad signature URL: {e}"))?;
            let found = if url.scheme() == "file" {
                let path = url
                    .to_file_path()
                    .map_err(|()| "bad file URL".to_string())?;
                match std::fs::read(&path) {
                    Ok(bytes) => Some(bytes),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                    Err(e) => return Err(format!("{}: {e}", path.display())),
                }
            } else {
                policy
                    .http
                    .get_bytes(&url)
                    .map_err(|e| format!("cannot fetch {url}: {e}"))?
            };
            if let Some(bytes) = found {
                return Ok(bytes);
            }
        }
        Err(format!(
            "unsigned (neither {0}.asc nor {0}.sig exists)",
            self.url
        ))
    }
}

fn write_meta(path: &Path, meta: &CopyMeta) -> Result<()> {
    // Cannot fail: a derived Serialize of strings and numbers, written into a Vec.
    let bytes = serde_json::to_vec_pretty(meta).expect("serialisable");
    crate::sys::atomic::write_atomically(path, &bytes)
}

fn hex16(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}
