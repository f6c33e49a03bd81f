//! A blocking face on `oci-client` (the OCI distribution API: manifests, blobs, ranged
//! blob reads, uploads, cross-repository mounts) for boxbuild's synchronous code: one
//! current-thread tokio runtime, built on first use, so a cache hit never pays for it.
//! Plain HTTP only for registries marked insecure in registries.conf; credentials from
//! the auth files podman, skopeo and docker write (see `registries`).

use super::registries;
use crate::boxes::fetch::http::{self as fetch_http, chain, FetchError, Opened};
use crate::sys::error::Error;
use crate::sys::signals::SignalWatch;
use bytes::Bytes;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciEnvelope, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use std::io::Read;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// The largest manifest or index boxbuild reads (as containers/image: 4 MiB). A box's
/// index and manifests are a few KiB.
pub const MAX_MANIFEST: u64 = 4 * 1024 * 1024;
/// The largest config or signature payload boxbuild reads into memory (4 MiB).
pub const MAX_SMALL_BLOB: u64 = 4 * 1024 * 1024;
/// The largest tag list (4 MiB: some 100,000 tags).
pub const MAX_TAG_LIST: u64 = 4 * 1024 * 1024;
/// Of an error answer's body only this much is read (for its message).
const MAX_ERROR_BODY: u64 = 64 * 1024;

/// Why a registry request failed, classified for the message and for retries.
#[derive(Debug)]
pub enum RegistryError {
    /// 401/403: credentials missing or refused.
    Unauthorized,
    /// 404 or the registry's MANIFEST_UNKNOWN / BLOB_UNKNOWN / NAME_UNKNOWN.
    NotFound,
    /// Another answer that a retry will not change: the HTTP status the server sent (0
    /// when it is not known) and what it said.
    Refused(u16, String),
    /// What arrived is not what a box is made of (too large, not JSON, other content
    /// than its digest): the message says what.
    Invalid(String),
    /// Network trouble, TLS, a 5xx, a 429: worth another try.
    Transient(String),
    /// A signal arrived while waiting for the registry.
    Interrupted(i32),
}

/// One failed try: the error and how long the server asked to wait (`Retry-After`).
struct Failure {
    error: RegistryError,
    retry_after: Option<Duration>,
}

impl From<RegistryError> for Failure {
    fn from(error: RegistryError) -> Failure {
        Failure {
            error,
            retry_after: None,
        }
    }
}

/// Whether an error envelope (`{"errors":[{"code":...}]}`) names one of `codes`.
fn envelope_has(envelope: &OciEnvelope, codes: &[OciErrorCode]) -> bool {
    envelope.errors.iter().any(|e| codes.contains(&e.code))
}

const UNKNOWN_CODES: [OciErrorCode; 4] = [
    OciErrorCode::ManifestUnknown,
    OciErrorCode::BlobUnknown,
    OciErrorCode::NameUnknown,
    OciErrorCode::NotFound,
];
const DENIED_CODES: [OciErrorCode; 2] = [OciErrorCode::Unauthorized, OciErrorCode::Denied];

impl RegistryError {
    fn from_oci(e: OciDistributionError) -> RegistryError {
        match e {
            OciDistributionError::UnauthorizedError { .. }
            | OciDistributionError::AuthenticationFailure(_) => RegistryError::Unauthorized,
            OciDistributionError::ImageManifestNotFoundError(_) => RegistryError::NotFound,
            OciDistributionError::RegistryError { envelope, url } => {
                if envelope_has(&envelope, &UNKNOWN_CODES) {
                    RegistryError::NotFound
                } else if envelope_has(&envelope, &DENIED_CODES) {
                    RegistryError::Unauthorized
                } else if envelope_has(&envelope, &[OciErrorCode::Toomanyrequests]) {
                    // The client keeps the body of a 4xx answer but not its status.
                    RegistryError::Transient(format!(
                        "{url}: HTTP 429 Too Many Requests: {envelope}"
                    ))
                } else {
                    RegistryError::Refused(0, format!("{url}: {envelope}"))
                }
            }
            OciDistributionError::ServerError { code, url, message } => {
                status_error(code, &url, message.trim())
            }
            OciDistributionError::RequestError(e) => RegistryError::Transient(chain(&e)),
            other => RegistryError::Transient(chain(&other)),
        }
    }

    /// For the blob fetcher: what a retry can change.
    pub fn into_fetch_error(self) -> FetchError {
        match self {
            RegistryError::Unauthorized => FetchError::Refused(reqwest::StatusCode::UNAUTHORIZED),
            RegistryError::NotFound => FetchError::Refused(reqwest::StatusCode::NOT_FOUND),
            RegistryError::Refused(code, m) => match reqwest::StatusCode::from_u16(code) {
                Ok(status) => FetchError::Refused(status),
                Err(_) => FetchError::Local(m),
            },
            RegistryError::Invalid(m) => FetchError::Local(m),
            RegistryError::Transient(m) => FetchError::Transient(m),
            RegistryError::Interrupted(sig) => FetchError::Interrupted(sig),
        }
    }

    /// One line for the user about `what` (a reference), saying what to do.
    pub fn explain(&self, what: &str, registry: &str) -> Error {
        Error::setup(match self {
            RegistryError::Interrupted(sig) => return Error::Interrupted(*sig),
            RegistryError::Unauthorized => format!(
                "{what}: the registry refused access (HTTP 401/403); log in with 'podman login {registry}' or 'skopeo login {registry}' (boxbuild reads $REGISTRY_AUTH_FILE, containers/auth.json and ~/.docker/config.json)"
            ),
            RegistryError::NotFound => format!(
                "{what}: not found in the registry; check the repository and tag (e.g. 'skopeo list-tags docker://{}')",
                what.trim_start_matches(crate::boxes::reference::SCHEME)
                    .split(['@'])
                    .next()
                    .unwrap_or(what)
                    .rsplit_once(':')
                    .filter(|(_, tag)| !tag.contains('/'))
                    .map_or(what.trim_start_matches(crate::boxes::reference::SCHEME), |(repo, _)| repo)
            ),
            RegistryError::Refused(0, m) => format!("{what}: the registry refused: {m}"),
            RegistryError::Refused(code, m) => format!("{what}: the registry answered HTTP {code}: {m}"),
            RegistryError::Invalid(m) => format!("{what}: {m}"),
            RegistryError::Transient(m) if m.contains("invalid peer certificate") => format!(
                "{what}: the certificate of {registry} is not trusted ({m}); add its CA to the host's CA store (update-ca-certificates) or name a bundle with it in SSL_CERT_FILE"
            ),
            RegistryError::Transient(m) if looks_like_tls_to_http(m) => format!(
                "{what}: cannot speak HTTPS to {registry} ({m}); if it is a plain-HTTP registry, mark it with 'insecure = true' under a [[registry]] with location = \"{registry}\" in registries.conf"
            ),
            RegistryError::Transient(m) => format!("{what}: cannot reach the registry: {m}"),
        })
    }
}

/// An HTTP status that is not success, as an error: 401/403, 404, the ones worth another
/// try (408, 429, 5xx), and the rest, each with the status the server sent.
fn status_error(code: u16, url: &str, message: &str) -> RegistryError {
    let status = reqwest::StatusCode::from_u16(code)
        .map(|s| s.to_string())
        .unwrap_or_else(|_| code.to_string());
    let said = if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    };
    match code {
        401 | 403 => RegistryError::Unauthorized,
        404 => RegistryError::NotFound,
        408 | 429 | 500..=599 => RegistryError::Transient(format!("{url}: HTTP {status}{said}")),
        _ => RegistryError::Refused(code, format!("{url}{said}")),
    }
}

fn looks_like_tls_to_http(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("invalidcontenttype") || m.contains("corrupt message") || m.contains("tls")
}

struct Inner {
    runtime: tokio::runtime::Runtime,
    /// For authentication (the registry's challenge, token service) and uploads.
    client: Client,
    /// For reads: boxbuild's own requests, so it sees status, headers and sizes.
    http: reqwest::Client,
    insecure: Vec<String>,
    auth_files: Vec<PathBuf>,
}

/// The registry side, shared by every reference a run touches.
#[derive(Default)]
pub struct Registry {
    inner: OnceLock<std::result::Result<Arc<Inner>, String>>,
    warnings: OnceLock<Vec<String>>,
    /// Waits between tries end early when one of these signals arrives.
    signals: Option<SignalWatch>,
    retries: Option<u32>,
}

/// The URL of `path` under `reference`'s repository (`/v2/REPOSITORY/PATH`).
fn v2_url(inner: &Inner, reference: &Reference, path: &str) -> String {
    let registry = reference.resolve_registry();
    let scheme = if inner.insecure.iter().any(|r| r == registry) {
        "http"
    } else {
        "https"
    };
    format!("{scheme}://{registry}/v2/{}/{path}", reference.repository())
}

/// `Retry-After` in its seconds form (the date form is read as "no hint").
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// Reads a body of at most `limit` bytes; a Content-Length above it is refused before a
/// byte is read, and a body that grows beyond it while read is cut off and refused.
async fn read_capped(
    response: reqwest::Response,
    limit: u64,
    what: &str,
) -> Result<Vec<u8>, RegistryError> {
    let too_large = |size: String| {
        RegistryError::Invalid(format!(
            "{what} is {size} bytes, more than boxbuild reads ({} MiB); this is not a box",
            limit / (1024 * 1024)
        ))
    };
    if let Some(length) = response.content_length().filter(|l| *l > limit) {
        return Err(too_large(length.to_string()));
    }
    let mut response = response;
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| RegistryError::Transient(chain(&e)))?
    {
        if body.len() as u64 + chunk.len() as u64 > limit {
            return Err(too_large(format!("more than {limit}")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

impl Registry {
    /// A registry client whose waits between tries end when a signal arrives, trying
    /// `retries` more times after a transient failure.
    pub fn with_signals(signals: SignalWatch, retries: u32) -> Registry {
        Registry {
            signals: Some(signals),
            retries: Some(retries),
            ..Registry::default()
        }
    }

    /// Warnings about registries.conf files that could not be read (said once by the
    /// caller).
    pub fn warnings(&self) -> &[String] {
        self.warnings.get().map(Vec::as_slice).unwrap_or(&[])
    }

    fn inner(&self) -> std::result::Result<Arc<Inner>, RegistryError> {
        self.inner
            .get_or_init(|| {
                let (insecure, warnings) =
                    registries::insecure_registries(&registries::registries_conf_files());
                let _ = self.warnings.set(warnings);
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| format!("cannot start the registry client: {e}"))?;
                let config = ClientConfig {
                    protocol: ClientProtocol::HttpsExcept(insecure.clone()),
                    connect_timeout: Some(CONNECT_TIMEOUT),
                    read_timeout: Some(READ_TIMEOUT),
                    user_agent: concat!("boxbuild/", env!("CARGO_PKG_VERSION")),
                    https_proxy: proxy("https_proxy"),
                    http_proxy: proxy("http_proxy"),
                    no_proxy: proxy("no_proxy"),
                    ..ClientConfig::default()
                };
                let client = Client::try_from(config)
                    .map_err(|e| format!("cannot set up the registry client: {}", chain(&e)))?;
                let http = reqwest::Client::builder()
                    .user_agent(concat!("boxbuild/", env!("CARGO_PKG_VERSION")))
                    .connect_timeout(CONNECT_TIMEOUT)
                    .read_timeout(READ_TIMEOUT)
                    .build()
                    .map_err(|e| format!("cannot set up the registry client: {}", chain(&e)))?;
                Ok(Arc::new(Inner {
                    runtime,
                    client,
                    http,
                    insecure,
                    auth_files: registries::auth_files(),
                }))
            })
            .clone()
            .map_err(RegistryError::Transient)
    }

    fn auth(inner: &Inner, reference: &Reference) -> RegistryAuth {
        match registries::credentials(&inner.auth_files, reference.resolve_registry()) {
            Some((user, password)) => RegistryAuth::Basic(user, password),
            None => RegistryAuth::Anonymous,
        }
    }

    /// Authenticates once per registry and operation (bearer token or basic), as the
    /// registry's challenge asks.
    async fn login(
        inner: &Inner,
        reference: &Reference,
        op: RegistryOperation,
    ) -> Result<(), RegistryError> {
        let auth = Self::auth(inner, reference);
        inner
            .client
            .auth(reference, &auth, op)
            .await
            .map(|_| ())
            .map_err(RegistryError::from_oci)
    }

    /// Runs `attempt` until it succeeds, fails for good, or has failed transiently
    /// `retries + 1` times; between tries it waits as the fetcher does (backoff), or as
    /// long as the registry asked with `Retry-After` (at most `RETRY_AFTER_CAP`).
    fn retrying<T>(
        &self,
        mut attempt: impl FnMut(&Arc<Inner>) -> Result<T, Failure>,
    ) -> Result<T, RegistryError> {
        let inner = self.inner()?;
        let retries = self
            .retries
            .unwrap_or_else(crate::boxes::fetch::retries_from_env);
        let mut failures = 0u32;
        loop {
            if let Some(sig) = self.signals.as_ref().and_then(SignalWatch::pending) {
                return Err(RegistryError::Interrupted(sig));
            }
            let failure = match attempt(&inner) {
                Ok(value) => return Ok(value),
                Err(failure) => failure,
            };
            let RegistryError::Transient(message) = &failure.error else {
                return Err(failure.error);
            };
            failures = failures.saturating_add(1);
            if failures > retries {
                return Err(RegistryError::Transient(if retries > 0 {
                    format!("{message} (tried {} times)", retries.saturating_add(1))
                } else {
                    message.clone()
                }));
            }
            let wait = crate::boxes::fetch::wait_before_retry(failures, failure.retry_after);
            if let Err(sig) = crate::boxes::fetch::sleep_unless(wait, self.signals.as_ref()) {
                return Err(RegistryError::Interrupted(sig));
            }
        }
    }

    /// A GET below `reference`'s repository, authenticated as the registry asks; any
    /// answer but 200/206 is an error with the status the server sent.
    async fn get(
        inner: &Inner,
        reference: &Reference,
        path: &str,
        accept: &[&str],
        offset: u64,
    ) -> Result<reqwest::Response, Failure> {
        let auth = Self::auth(inner, reference);
        let token = inner
            .client
            .auth(reference, &auth, RegistryOperation::Pull)
            .await
            .map_err(RegistryError::from_oci)?;
        let url = v2_url(inner, reference, path);
        let mut request = inner.http.get(&url);
        if !accept.is_empty() {
            request = request.header(reqwest::header::ACCEPT, accept.join(", "));
        }
        request = match (token, auth) {
            (Some(token), _) => request.bearer_auth(token),
            (None, RegistryAuth::Basic(user, password)) => request.basic_auth(user, Some(password)),
            (None, _) => request,
        };
        if offset > 0 {
            request = request.header(reqwest::header::RANGE, format!("bytes={offset}-"));
        }
        let response = request
            .send()
            .await
            .map_err(|e| RegistryError::Transient(chain(&e)))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let wait = retry_after(response.headers());
        let body = read_capped(response, MAX_ERROR_BODY, "an error answer")
            .await
            .unwrap_or_default();
        let envelope = serde_json::from_slice::<OciEnvelope>(&body).ok();
        let message = match &envelope {
            Some(envelope) => envelope
                .errors
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; "),
            None => String::from_utf8_lossy(&body)
                .trim()
                .chars()
                .take(200)
                .collect(),
        };
        let mut error = status_error(status.as_u16(), &url, &message);
        if let Some(envelope) = &envelope {
            if status.as_u16() != 404
                && envelope_has(envelope, &UNKNOWN_CODES)
                && status.is_client_error()
            {
                error = RegistryError::NotFound;
            }
        }
        Err(Failure {
            error,
            retry_after: wait,
        })
    }

    /// The manifest or index `reference` names, as bytes, and its sha256 digest
    /// (`sha256:HEX`) computed here over the bytes. A digest reference whose bytes do
    /// not hash to it is refused, and so is a document larger than `MAX_MANIFEST`.
    pub fn manifest(&self, reference: &Reference) -> Result<(Vec<u8>, String), RegistryError> {
        let accepted = [
            super::format::INDEX_MEDIA_TYPE,
            super::format::MANIFEST_MEDIA_TYPE,
        ];
        let target = reference
            .digest()
            .or(reference.tag())
            .unwrap_or("latest")
            .to_string();
        let bytes = self.retrying(|inner| {
            inner.runtime.block_on(async {
                let response = Self::get(
                    inner,
                    reference,
                    &format!("manifests/{target}"),
                    &accepted,
                    0,
                )
                .await?;
                Ok(read_capped(response, MAX_MANIFEST, &format!("the manifest {target}")).await?)
            })
        })?;
        let digest = crate::sys::digest::sha256_digest(&bytes);
        if let Some(wanted) = reference.digest().filter(|d| *d != digest) {
            return Err(RegistryError::Invalid(format!(
                "manifest {wanted}: the registry sent other content ({digest})"
            )));
        }
        Ok((bytes, digest))
    }

    /// A small blob (a config, a signature payload) in memory, at most `MAX_SMALL_BLOB`
    /// bytes, checked against `digest`.
    pub fn small_blob(
        &self,
        reference: &Reference,
        digest: &str,
    ) -> Result<Vec<u8>, RegistryError> {
        let bytes = self.retrying(|inner| {
            inner.runtime.block_on(async {
                let response =
                    Self::get(inner, reference, &format!("blobs/{digest}"), &[], 0).await?;
                Ok(read_capped(response, MAX_SMALL_BLOB, &format!("blob {digest}")).await?)
            })
        })?;
        if crate::sys::digest::sha256_digest(&bytes) != digest {
            return Err(RegistryError::Invalid(format!(
                "blob {digest}: the registry sent other content"
            )));
        }
        Ok(bytes)
    }

    /// Reads blob `digest` of `reference`'s repository from byte `offset` on (an HTTP
    /// Range request), for the resumable fetcher, which retries. The validator is the
    /// digest itself. A 206 answer that does not start at `offset` (by its
    /// `Content-Range`) is taken from where it starts if that is byte 0, else the
    /// fetcher is told to start over.
    pub fn open_blob(
        &self,
        reference: &Reference,
        digest: &str,
        offset: u64,
    ) -> Result<Opened, FetchError> {
        let inner = self.inner().map_err(RegistryError::into_fetch_error)?;
        let response = inner
            .runtime
            .block_on(Self::get(
                &inner,
                reference,
                &format!("blobs/{digest}"),
                &[],
                offset,
            ))
            .map_err(|failure| match (failure.error, failure.retry_after) {
                (RegistryError::Transient(m), Some(wait)) => FetchError::RetryAfter(m, wait),
                (error, _) => error.into_fetch_error(),
            })?;
        let (start, total) = if response.status() == reqwest::StatusCode::PARTIAL_CONTENT {
            fetch_http::partial_start(response.headers(), offset)?
        } else {
            (0, response.content_length())
        };
        Ok(Opened {
            body: Box::new(BlobReader {
                inner: inner.clone(),
                response,
                pending: Bytes::new(),
            }),
            start,
            total,
            validator: Some(digest.to_string()),
        })
    }

    /// The repository's tags (the distribution API's tag list, at most `MAX_TAG_LIST`).
    pub fn tags(&self, reference: &Reference) -> Result<Vec<String>, RegistryError> {
        #[derive(serde::Deserialize)]
        struct TagList {
            tags: Option<Vec<String>>,
        }
        let bytes = self.retrying(|inner| {
            inner.runtime.block_on(async {
                let response = Self::get(inner, reference, "tags/list", &[], 0).await?;
                Ok(read_capped(response, MAX_TAG_LIST, "the tag list").await?)
            })
        })?;
        let list: TagList = serde_json::from_slice(&bytes)
            .map_err(|e| RegistryError::Invalid(format!("the tag list is not JSON: {e}")))?;
        Ok(list.tags.unwrap_or_default())
    }

    /// Runs one request of the upload client, authenticated for pushing, with retries.
    fn pushing<T, F>(
        &self,
        reference: &Reference,
        mut request: impl FnMut(Arc<Inner>) -> F,
    ) -> Result<T, RegistryError>
    where
        F: std::future::Future<Output = Result<T, OciDistributionError>>,
    {
        self.retrying(|inner| {
            inner.runtime.block_on(async {
                Self::login(inner, reference, RegistryOperation::Push).await?;
                request(inner.clone())
                    .await
                    .map_err(|e| Failure::from(RegistryError::from_oci(e)))
            })
        })
    }

    /// Whether the repository already has blob `digest` (a HEAD request).
    pub fn has_blob(&self, reference: &Reference, digest: &str) -> Result<bool, RegistryError> {
        self.pushing(reference, |inner| async move {
            inner.client.blob_exists(reference, digest).await
        })
    }

    /// Asks the registry to link blob `digest` from `source`'s repository into
    /// `reference`'s (a cross-repository mount); false when it would not.
    pub fn mount_blob(&self, reference: &Reference, source: &Reference, digest: &str) -> bool {
        self.pushing(reference, |inner| async move {
            inner.client.mount_blob(reference, source, digest).await
        })
        .is_ok()
    }

    /// Uploads a blob from memory.
    pub fn push_bytes(
        &self,
        reference: &Reference,
        data: Vec<u8>,
        digest: &str,
    ) -> Result<(), RegistryError> {
        self.pushing(reference, |inner| {
            let data = data.clone();
            async move {
                inner
                    .client
                    .push_blob(reference, data, digest)
                    .await
                    .map(|_| ())
            }
        })
    }

    /// Uploads a file as blob `digest` in chunks (PATCH requests of the client's chunk
    /// size), reading it as it goes; `progress` gets the bytes sent so far. A failed try
    /// starts the upload again from the file's start.
    pub fn push_file(
        &self,
        reference: &Reference,
        path: &std::path::Path,
        digest: &str,
        size: u64,
        progress: impl Fn(u64) + Send + 'static,
    ) -> Result<(), RegistryError> {
        let progress: SharedProgress = Arc::new(Mutex::new(Box::new(progress)));
        self.retrying(|inner| {
            let file = crate::sys::files::open_regular(path)
                .map_err(|e| RegistryError::Invalid(format!("{}: {e}", path.display())))?;
            let chunks = FileChunks {
                file,
                sent: 0,
                progress: progress.clone(),
            };
            inner.runtime.block_on(async {
                Self::login(inner, reference, RegistryOperation::Push).await?;
                let stream = futures_util::stream::iter(chunks);
                inner
                    .client
                    .push_blob_stream(reference, stream, digest, Some(size))
                    .await
                    .map(|_| ())
                    .map_err(|e| Failure::from(RegistryError::from_oci(e)))
            })
        })
    }

    /// Uploads a manifest or index under `reference` (a tag or its digest); returns
    /// nothing, the digest is the caller's sha256 of `bytes`.
    pub fn push_manifest(
        &self,
        reference: &Reference,
        bytes: Vec<u8>,
        media_type: &str,
    ) -> Result<(), RegistryError> {
        let content_type: reqwest::header::HeaderValue = media_type
            .parse()
            .map_err(|_| RegistryError::Invalid(format!("bad media type {media_type}")))?;
        self.pushing(reference, |inner| {
            let (bytes, content_type) = (bytes.clone(), content_type.clone());
            async move {
                inner
                    .client
                    .push_manifest_raw(reference, bytes, content_type)
                    .await
                    .map(|_| ())
            }
        })
    }
}

fn proxy(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .or_else(|| std::env::var(name.to_ascii_uppercase()).ok())
        .filter(|v| !v.is_empty())
}

/// The blob's byte stream as a `Read`, driven by the runtime.
struct BlobReader {
    inner: Arc<Inner>,
    response: reqwest::Response,
    pending: Bytes,
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pending.is_empty() {
            match self.inner.runtime.block_on(self.response.chunk()) {
                Ok(Some(bytes)) => self.pending = bytes,
                Ok(None) => return Ok(0),
                Err(e) => return Err(std::io::Error::other(chain(&e))),
            }
        }
        let n = buf.len().min(self.pending.len());
        buf[..n].copy_from_slice(&self.pending.split_to(n));
        Ok(n)
    }
}

/// The upload's progress callback, kept across tries.
type SharedProgress = Arc<Mutex<Box<dyn Fn(u64) + Send>>>;

/// A file as a stream of upload chunks.
struct FileChunks {
    file: std::fs::File,
    sent: u64,
    progress: SharedProgress,
}

const UPLOAD_CHUNK: usize = 8 * 1024 * 1024;

impl Iterator for FileChunks {
    type Item = oci_client::errors::Result<Bytes>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut chunk = Vec::with_capacity(UPLOAD_CHUNK);
        match (&mut self.file)
            .take(UPLOAD_CHUNK as u64)
            .read_to_end(&mut chunk)
        {
            Ok(0) => None,
            Ok(n) => {
                self.sent += n as u64;
                if let Ok(progress) = self.progress.lock() {
                    progress(self.sent);
                }
                Some(Ok(Bytes::from(chunk)))
            }
            Err(e) => Some(Err(OciDistributionError::IoError(e))),
        }
    }
}

impl crate::boxes::fetch::BlobSource for Registry {
    fn open_blob(
        &self,
        repository: &Reference,
        digest: &str,
        offset: u64,
    ) -> Result<Opened, FetchError> {
        Registry::open_blob(self, repository, digest, offset)
    }
}
