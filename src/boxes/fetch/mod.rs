//! Downloads one file into a staging directory: resumable (the partial copy survives a
//! failed run and is continued with a ranged request), hashed while the bytes arrive (no
//! second pass), retried with backoff on network errors, and renamed into place only once
//! its sha256 matched.

pub mod http;
mod partial;
pub mod progress;

use crate::sys::error::{Error, Result};
use crate::sys::signals::SignalWatch;
use crate::sys::ui::Ui;
use http::{FetchError, Http, Opened};
use partial::{Partial, CHUNK};
use progress::Progress;
use reqwest::Url;
use serde::{Deserialize, Serialize};

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

const DEFAULT_RETRIES: u32 = 3;
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(8);
/// The longest wait a server's `Retry-After` gets: a longer one is cut to this.
pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(60);

/// How long to wait before try `failures + 1`: 0.5 s doubling up to 8 s, or what the
/// server asked for with `Retry-After` when that is longer (at most `RETRY_AFTER_CAP`).
pub fn wait_before_retry(failures: u32, retry_after: Option<Duration>) -> Duration {
    let backoff = FIRST_BACKOFF
        .saturating_mul(1 << failures.saturating_sub(1).min(8))
        .min(MAX_BACKOFF);
    retry_after
        .map(|asked| asked.min(RETRY_AFTER_CAP))
        .map_or(backoff, |asked| asked.max(backoff))
}

/// Sleeps for `wait`, unless one of the watched signals arrives first (its number).
pub fn sleep_unless(wait: Duration, signals: Option<&SignalWatch>) -> std::result::Result<(), i32> {
    let until = std::time::Instant::now() + wait;
    loop {
        if let Some(sig) = signals.and_then(SignalWatch::pending) {
            return Err(sig);
        }
        let now = std::time::Instant::now();
        if now >= until {
            return Ok(());
        }
        std::thread::sleep((until - now).min(Duration::from_millis(50)));
    }
}

/// One file to fetch.
pub struct Download<'a> {
    pub url: &'a Url,
    /// Where the verified file ends up; the partial copy lives beside it.
    pub dest: PathBuf,
    pub size: Option<u64>,
    pub sha256: &'a str,
    /// Names the file in messages: "box tiny 1.0 (x86_64): disk".
    pub label: String,
}

/// Where `oci://REGISTRY/REPOSITORY@DIGEST` blobs are read from: the registry client
/// (`boxes::oci::Registry`), which fetching itself does not know.
pub trait BlobSource {
    /// The blob `digest` (`sha256:HEX`) of `repository`'s repository, from byte `offset`
    /// on. Errors: as for an HTTP transfer (`FetchError`).
    fn open_blob(
        &self,
        repository: &oci_client::Reference,
        digest: &str,
        offset: u64,
    ) -> std::result::Result<Opened, FetchError>;
}

pub struct Fetcher<'a> {
    pub http: &'a Http,
    /// For `oci://` blobs.
    pub registry: &'a dyn BlobSource,
    pub ui: Ui,
    pub signals: &'a SignalWatch,
    /// Further tries after a network error that made no progress.
    pub retries: u32,
}

/// What the partial copy is a prefix of, so a later run can resume it safely.
#[derive(Debug, Serialize, Deserialize)]
struct PartMeta {
    url: String,
    validator: Option<String>,
}

/// `$BOXBUILD_FETCH_RETRIES`, else 3.
pub fn retries_from_env() -> u32 {
    std::env::var("BOXBUILD_FETCH_RETRIES")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(DEFAULT_RETRIES)
}

fn part_paths(dest: &Path) -> (PathBuf, PathBuf) {
    let name = dest.file_name().unwrap_or_default().to_string_lossy();
    (
        dest.with_file_name(format!("{name}.part")),
        dest.with_file_name(format!("{name}.part.json")),
    )
}

impl<'a> Fetcher<'a> {
    /// A fetcher trying `$BOXBUILD_FETCH_RETRIES` more times after a network error.
    pub fn new(
        http: &'a Http,
        registry: &'a dyn BlobSource,
        ui: Ui,
        signals: &'a SignalWatch,
    ) -> Fetcher<'a> {
        Fetcher {
            http,
            registry,
            ui,
            signals,
            retries: retries_from_env(),
        }
    }

    pub fn fetch(&self, d: &Download) -> Result<()> {
        let (part_path, meta_path) = part_paths(&d.dest);
        let io = |what: &str, e: std::io::Error| {
            Error::setup(format!("{}: {what} {}: {e}", d.label, part_path.display()))
        };
        // A partial copy of another URL is not a prefix of this one.
        let meta: Option<PartMeta> = fs::read(&meta_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let mut validator = match meta {
            Some(m) if m.url == d.url.as_str() => m.validator,
            _ => {
                let _ = fs::remove_file(&part_path);
                None
            }
        };
        let mut partial = Partial::open(&part_path).map_err(|e| io("cannot open", e))?;
        // Where the first ranged request started: an earlier run's copy or a broken transfer.
        let mut resumed_from = partial.len;
        let mut received = 0u64;
        let mut failures = 0u32;
        let mut restarted_after_416 = false;
        let progress = Progress::start(self.ui, &d.label, d.size, partial.len);
        loop {
            if let Some(sig) = self.signals.pending() {
                return Err(Error::Interrupted(sig));
            }
            if d.size.is_some_and(|size| partial.len == size) {
                break; // Complete from an earlier run; the digest decides.
            }
            if d.size.is_some_and(|size| partial.len > size) {
                // Longer than the file: no prefix of it (a bad answer appended to it).
                partial.restart().map_err(|e| io("cannot truncate", e))?;
                resumed_from = 0;
            }
            let opened = match open(self, d.url, partial.len, validator.as_deref()) {
                Ok(opened) => opened,
                Err(FetchError::RangeNotSatisfiable) if !restarted_after_416 => {
                    restarted_after_416 = true;
                    partial.restart().map_err(|e| io("cannot truncate", e))?;
                    resumed_from = 0;
                    continue;
                }
                Err(FetchError::Interrupted(sig)) => return Err(Error::Interrupted(sig)),
                Err(FetchError::Local(message)) => {
                    return Err(Error::setup(format!("{}: {message}", d.label)))
                }
                Err(e @ FetchError::StartOver(_)) => {
                    // The answer cannot continue the copy: drop it, ask from byte 0.
                    partial.restart().map_err(|e| io("cannot truncate", e))?;
                    resumed_from = 0;
                    failures = failures.saturating_add(1);
                    self.back_off(d, failures, &e, &progress)?;
                    continue;
                }
                Err(FetchError::Refused(status)) if d.url.scheme() == "oci" => {
                    return Err(Error::setup(format!(
                        "{}: {} answered HTTP {status}; {}",
                        d.label,
                        d.url,
                        if status.as_u16() == 401 || status.as_u16() == 403 {
                            "log in with 'podman login' or 'skopeo login'"
                        } else {
                            "the registry lost the blob; try 'boxbuild box update'"
                        }
                    )))
                }
                Err(FetchError::Refused(status)) => {
                    return Err(Error::setup(format!(
                        "{}: {} answered HTTP {status}; the catalog may be out of date (try 'boxbuild box update')",
                        d.label, d.url
                    )))
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    self.back_off(d, failures, &e, &progress)?;
                    continue;
                }
            };
            if opened.start == 0 && partial.len > 0 {
                partial.restart().map_err(|e| io("cannot truncate", e))?;
                resumed_from = 0;
            }
            if resumed_from == 0 {
                resumed_from = opened.start;
            }
            if let (Some(total), Some(size)) = (opened.total, d.size) {
                if total != size {
                    return Err(Error::setup(format!(
                        "{}: {} is {total} bytes, the catalog says {size}; the catalog and the server disagree",
                        d.label, d.url
                    )));
                }
            }
            validator = opened.validator.clone();
            let meta = PartMeta {
                url: d.url.to_string(),
                validator: validator.clone(),
            };
            // Cannot fail: a derived Serialize of strings, written into a Vec.
            fs::write(&meta_path, serde_json::to_vec(&meta).expect("serialisable"))
                .map_err(|e| io("cannot write", e))?;
            progress.set_position(partial.len, opened.total);
            let before = partial.len;
            let streamed = self.stream(opened, &mut partial, &progress, d.size);
            received += partial.len.saturating_sub(before);
            match streamed {
                Ok(()) => break,
                Err(StreamError::Io(e)) => return Err(io("cannot write", e)),
                Err(StreamError::Interrupted(sig)) => return Err(Error::Interrupted(sig)),
                Err(StreamError::Network(cause)) => {
                    if partial.len > before {
                        failures = 0; // Progress was made: it is worth going on.
                    }
                    failures = failures.saturating_add(1);
                    self.back_off(d, failures, &FetchError::Transient(cause), &progress)?;
                }
            }
        }
        progress.finish();
        let length = partial.len;
        let (file, digest) = partial.digest().map_err(|e| io("cannot hash", e))?;
        file.sync_all().map_err(|e| io("cannot sync", e))?;
        let discard = || {
            let _ = fs::remove_file(&part_path);
            let _ = fs::remove_file(&meta_path);
        };
        if let Some(size) = d.size.filter(|s| *s != length) {
            discard();
            return Err(Error::setup(format!(
                "{}: {} gave {length} bytes, the catalog says {size}; the download was discarded",
                d.label, d.url
            )));
        }
        if !digest.eq_ignore_ascii_case(d.sha256) {
            discard();
            return Err(Error::setup(format!(
                "{}: sha256 mismatch for {}: expected {}, got {digest}; the download was discarded (try again; if it persists, the catalog or the server is wrong)",
                d.label, d.url, d.sha256
            )));
        }
        fs::rename(&part_path, &d.dest).map_err(|e| io("cannot rename", e))?;
        let _ = fs::remove_file(&meta_path);
        self.ui.detail(&format!(
            "{}: {} bytes received{}",
            d.label,
            received,
            if resumed_from > 0 {
                format!(", resumed from byte {resumed_from}")
            } else {
                String::new()
            }
        ));
        Ok(())
    }

    /// Waits before the next try, or gives up with one line naming URL and cause.
    fn back_off(
        &self,
        d: &Download,
        failures: u32,
        cause: &FetchError,
        progress: &Progress,
    ) -> Result<()> {
        if failures > self.retries {
            return Err(Error::setup(format!(
                "{}: cannot fetch {}: {cause}{}",
                d.label,
                d.url,
                if self.retries > 0 {
                    format!(" (tried {} times)", self.retries.saturating_add(1))
                } else {
                    String::new()
                }
            )));
        }
        let asked = match cause {
            FetchError::RetryAfter(_, wait) => Some(*wait),
            _ => None,
        };
        let wait = wait_before_retry(failures, asked);
        progress.note(&format!(
            "{}: {cause}; trying again in {:.1}s",
            d.label,
            wait.as_secs_f64()
        ));
        sleep_unless(wait, Some(self.signals)).map_err(Error::Interrupted)
    }

    fn stream(
        &self,
        mut opened: Opened,
        partial: &mut Partial,
        progress: &Progress,
        size: Option<u64>,
    ) -> std::result::Result<(), StreamError> {
        loop {
            if size.is_some_and(|size| partial.len > size) {
                // More than the file holds: the size check after the transfer discards it.
                return Ok(());
            }
            if let Some(sig) = self.signals.pending() {
                return Err(StreamError::Interrupted(sig));
            }
            // A fresh buffer per chunk: it moves on to the hashing thread.
            let mut chunk = Vec::with_capacity(CHUNK);
            let read = (&mut opened.body)
                .take(CHUNK as u64)
                .read_to_end(&mut chunk);
            // Bytes read before an error are kept: they are part of the file.
            if !chunk.is_empty() {
                partial.append(chunk).map_err(StreamError::Io)?;
                progress.set_position(partial.len, opened.total);
            }
            match read {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(StreamError::Network(format!(
                        "the transfer broke off at byte {}{}: {}",
                        partial.len,
                        opened.total.map(|t| format!(" of {t}")).unwrap_or_default(),
                        http::chain(&e)
                    )))
                }
            }
        }
        match opened.total {
            Some(total) if partial.len < total => Err(StreamError::Network(format!(
                "the transfer broke off at byte {} of {total}",
                partial.len
            ))),
            _ => Ok(()),
        }
    }
}

enum StreamError {
    Network(String),
    Io(std::io::Error),
    Interrupted(i32),
}

/// http(s) through the client; oci:// (`oci://REGISTRY/REPOSITORY@DIGEST`, a blob)
/// through the registry client; file:// straight from the file system.
fn open(
    fetcher: &Fetcher,
    url: &Url,
    offset: u64,
    validator: Option<&str>,
) -> std::result::Result<Opened, FetchError> {
    if url.scheme() == "oci" {
        let blob = crate::boxes::reference::BoxReference::parse(url.as_str())
            .map_err(|e| FetchError::Transient(e.to_string()))?;
        let digest = blob
            .digest()
            .ok_or_else(|| FetchError::Transient(format!("{url} names no blob digest")))?
            .to_string();
        return fetcher.registry.open_blob(&blob.inner, &digest, offset);
    }
    if url.scheme() != "file" {
        return fetcher.http.open(url, offset, validator);
    }
    let path = url
        .to_file_path()
        .map_err(|()| FetchError::Transient(format!("bad file URL {url}")))?;
    let mut file = crate::sys::files::open_regular(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => FetchError::Local(format!("{} is missing", path.display())),
        _ => FetchError::Local(format!("{}: {e}", path.display())),
    })?;
    let meta = file
        .metadata()
        .map_err(|e| FetchError::Local(format!("{}: {e}", path.display())))?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let current = format!("{}-{mtime}", meta.len());
    let start = if validator == Some(current.as_str()) && offset <= meta.len() {
        offset
    } else {
        0
    };
    file.seek(SeekFrom::Start(start))
        .map_err(|e| FetchError::Transient(e.to_string()))?;
    Ok(Opened {
        body: Box::new(file),
        start,
        total: Some(meta.len()),
        validator: Some(current),
    })
}
