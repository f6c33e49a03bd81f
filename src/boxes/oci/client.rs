//! A blocking face on `oci-client` (the OCI distribution API: manifests, blobs, ranged
//! blob reads, uploads, cross-repository mounts) for boxbuild's synchronous code: one
//! current-thread tokio runtime, built on first use, so a cache hit never pays for it.
//! Plain HTTP only for registries marked insecure in registries.conf; credentials from
//! the auth files podman, skopeo and docker write (see `registries`).

use super::registries;
use crate::boxes::fetch::http::{chain, FetchError, Opened};
use crate::sys::error::Error;
use bytes::Bytes;
use futures_util::StreamExt;
use oci_client::client::{BlobResponse, ClientConfig, ClientProtocol, SizedStream};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use std::io::Read;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a registry request failed, classified for the message and for retries.
#[derive(Debug)]
pub enum RegistryError {
    /// 401/403: credentials missing or refused.
    Unauthorized,
    /// 404 or the registry's MANIFEST_UNKNOWN / BLOB_UNKNOWN / NAME_UNKNOWN.
    NotFound,
    /// Another answer that a retry will not change.
    Refused(u16, String),
    /// Network trouble, TLS, a 5xx: worth another try.
    Transient(String),
}

impl RegistryError {
    fn from_oci(e: OciDistributionError) -> RegistryError {
        match e {
            OciDistributionError::UnauthorizedError { .. }
            | OciDistributionError::AuthenticationFailure(_) => RegistryError::Unauthorized,
            OciDistributionError::ImageManifestNotFoundError(_) => RegistryError::NotFound,
            OciDistributionError::RegistryError { envelope, url } => {
                let unknown = envelope.errors.iter().any(|e| {
                    matches!(
                        e.code,
                        OciErrorCode::ManifestUnknown
                            | OciErrorCode::BlobUnknown
                            | OciErrorCode::NameUnknown
                            | OciErrorCode::NotFound
                    )
                });
                let denied = envelope
                    .errors
                    .iter()
                    .any(|e| matches!(e.code, OciErrorCode::Unauthorized | OciErrorCode::Denied));
                if unknown {
                    RegistryError::NotFound
                } else if denied {
                    RegistryError::Unauthorized
                } else {
                    RegistryError::Refused(400, format!("{url}: {envelope}"))
                }
            }
            OciDistributionError::ServerError { code, url, message } => match code {
                401 | 403 => RegistryError::Unauthorized,
                404 => RegistryError::NotFound,
                500..=599 | 429 => {
                    RegistryError::Transient(format!("{url}: HTTP {code} {}", message.trim()))
                }
                _ => RegistryError::Refused(code, format!("{url}: {}", message.trim())),
            },
            OciDistributionError::RequestError(e) => RegistryError::Transient(chain(&e)),
            other => RegistryError::Transient(chain(&other)),
        }
    }

    /// For the blob fetcher: what a retry can change.
    pub fn into_fetch_error(self) -> FetchError {
        match self {
            RegistryError::Unauthorized => FetchError::Refused(reqwest::StatusCode::UNAUTHORIZED),
            RegistryError::NotFound => FetchError::Refused(reqwest::StatusCode::NOT_FOUND),
            RegistryError::Refused(code, _) => FetchError::Refused(
                reqwest::StatusCode::from_u16(code).unwrap_or(reqwest::StatusCode::BAD_REQUEST),
            ),
            RegistryError::Transient(m) => FetchError::Transient(m),
        }
    }

    /// One line for the user about `what` (a reference), saying what to do.
    pub fn explain(&self, what: &str, registry: &str) -> Error {
        Error::setup(match self {
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
            RegistryError::Refused(code, m) => format!("{what}: the registry answered HTTP {code}: {m}"),
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

fn looks_like_tls_to_http(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("invalidcontenttype") || m.contains("corrupt message") || m.contains("tls")
}

struct Inner {
    runtime: tokio::runtime::Runtime,
    client: Client,
    auth_files: Vec<PathBuf>,
}

/// The registry side, shared by every reference a run touches.
#[derive(Default)]
pub struct Registry {
    inner: OnceLock<std::result::Result<Arc<Inner>, String>>,
    warnings: OnceLock<Vec<String>>,
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
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
                    protocol: ClientProtocol::HttpsExcept(insecure),
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
                Ok(Arc::new(Inner {
                    runtime,
                    client,
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

    /// The manifest or index `reference` names, as bytes, and its sha256 digest
    /// (`sha256:HEX`) computed here over the bytes. A digest reference whose bytes do
    /// not hash to it is refused by the client.
    pub fn manifest(&self, reference: &Reference) -> Result<(Vec<u8>, String), RegistryError> {
        let inner = self.inner()?;
        let accepted = [
            super::format::INDEX_MEDIA_TYPE,
            super::format::MANIFEST_MEDIA_TYPE,
        ];
        inner.runtime.block_on(async {
            Self::login(&inner, reference, RegistryOperation::Pull).await?;
            let auth = Self::auth(&inner, reference);
            let (bytes, _) = inner
                .client
                .pull_manifest_raw(reference, &auth, &accepted)
                .await
                .map_err(RegistryError::from_oci)?;
            Ok((bytes.to_vec(), crate::sys::digest::sha256_digest(&bytes)))
        })
    }

    /// A small blob (a config, a signature payload) in memory, checked against `digest`.
    pub fn small_blob(
        &self,
        reference: &Reference,
        digest: &str,
    ) -> Result<Vec<u8>, RegistryError> {
        let inner = self.inner()?;
        let bytes = inner.runtime.block_on(async {
            Self::login(&inner, reference, RegistryOperation::Pull).await?;
            let mut out = Vec::new();
            inner
                .client
                .pull_blob(reference, digest, &mut out)
                .await
                .map_err(RegistryError::from_oci)?;
            Ok::<_, RegistryError>(out)
        })?;
        if crate::sys::digest::sha256_digest(&bytes) != digest {
            return Err(RegistryError::Refused(
                200,
                format!("blob {digest}: the registry sent other content"),
            ));
        }
        Ok(bytes)
    }

    /// Reads blob `digest` of `reference`'s repository from byte `offset` on (an HTTP
    /// Range request), for the resumable fetcher. The validator is the digest itself.
    pub fn open_blob(
        &self,
        reference: &Reference,
        digest: &str,
        offset: u64,
    ) -> Result<Opened, FetchError> {
        let inner = self.inner().map_err(RegistryError::into_fetch_error)?;
        let response = inner
            .runtime
            .block_on(async {
                Self::login(&inner, reference, RegistryOperation::Pull).await?;
                inner
                    .client
                    .pull_blob_stream_partial(reference, digest, offset, None)
                    .await
                    .map_err(RegistryError::from_oci)
            })
            .map_err(RegistryError::into_fetch_error)?;
        let (stream, start) = match response {
            BlobResponse::Full(stream) => (stream, 0),
            BlobResponse::Partial(stream) => (stream, offset),
        };
        let total = stream.content_length.map(|len| len + start);
        Ok(Opened {
            body: Box::new(BlobReader {
                inner: inner.clone(),
                stream,
                pending: Bytes::new(),
            }),
            start,
            total,
            validator: Some(digest.to_string()),
        })
    }

    /// The repository's tags (the distribution API's tag list).
    pub fn tags(&self, reference: &Reference) -> Result<Vec<String>, RegistryError> {
        let inner = self.inner()?;
        inner.runtime.block_on(async {
            Self::login(&inner, reference, RegistryOperation::Pull).await?;
            let auth = Self::auth(&inner, reference);
            inner
                .client
                .list_tags(reference, &auth, None, None)
                .await
                .map(|t| t.tags)
                .map_err(RegistryError::from_oci)
        })
    }

    /// Whether the repository already has blob `digest` (a HEAD request).
    pub fn has_blob(&self, reference: &Reference, digest: &str) -> Result<bool, RegistryError> {
        let inner = self.inner()?;
        inner.runtime.block_on(async {
            Self::login(&inner, reference, RegistryOperation::Push).await?;
            inner
                .client
                .blob_exists(reference, digest)
                .await
                .map_err(RegistryError::from_oci)
        })
    }

    /// Asks the registry to link blob `digest` from `source`'s repository into
    /// `reference`'s (a cross-repository mount); false when it would not.
    pub fn mount_blob(&self, reference: &Reference, source: &Reference, digest: &str) -> bool {
        let Ok(inner) = self.inner() else {
            return false;
        };
        inner.runtime.block_on(async {
            Self::login(&inner, reference, RegistryOperation::Push)
                .await
                .is_ok()
                && inner
                    .client
                    .mount_blob(reference, source, digest)
                    .await
                    .is_ok()
        })
    }

    /// Uploads a blob from memory.
    pub fn push_bytes(
        &self,
        reference: &Reference,
        data: Vec<u8>,
        digest: &str,
    ) -> Result<(), RegistryError> {
        let inner = self.inner()?;
        inner.runtime.block_on(async {
            Self::login(&inner, reference, RegistryOperation::Push).await?;
            inner
                .client
                .push_blob(reference, data, digest)
                .await
                .map(|_| ())
                .map_err(RegistryError::from_oci)
        })
    }

    /// Uploads a file as blob `digest` in chunks (PATCH requests of the client's chunk
    /// size), reading it as it goes; `progress` gets the bytes sent so far.
    pub fn push_file(
        &self,
        reference: &Reference,
        path: &std::path::Path,
        digest: &str,
        size: u64,
        progress: impl Fn(u64) + Send + 'static,
    ) -> Result<(), RegistryError> {
        let inner = self.inner()?;
        let file = std::fs::File::open(path)
            .map_err(|e| RegistryError::Refused(0, format!("{}: {e}", path.display())))?;
        let chunks = FileChunks {
            file,
            sent: 0,
            progress: Box::new(progress),
        };
        inner.runtime.block_on(async {
            Self::login(&inner, reference, RegistryOperation::Push).await?;
            let stream = futures_util::stream::iter(chunks);
            inner
                .client
                .push_blob_stream(reference, stream, digest, Some(size))
                .await
                .map(|_| ())
                .map_err(RegistryError::from_oci)
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
        let inner = self.inner()?;
        let content_type = media_type
            .parse()
            .map_err(|_| RegistryError::Refused(0, format!("bad media type {media_type}")))?;
        inner.runtime.block_on(async {
            Self::login(&inner, reference, RegistryOperation::Push).await?;
            inner
                .client
                .push_manifest_raw(reference, bytes, content_type)
                .await
                .map(|_| ())
                .map_err(RegistryError::from_oci)
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
    stream: SizedStream,
    pending: Bytes,
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pending.is_empty() {
            match self.inner.runtime.block_on(self.stream.next()) {
                Some(Ok(bytes)) => self.pending = bytes,
                // The client's own digest check of a whole blob: every byte has arrived,
                // and the fetcher's check says what is wrong and discards the copy.
                Some(Err(e))
                    if e.get_ref()
                        .is_some_and(|inner| inner.is::<oci_client::errors::DigestError>()) =>
                {
                    return Ok(0)
                }
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.pending.len());
        buf[..n].copy_from_slice(&self.pending.split_to(n));
        Ok(n)
    }
}

/// A file as a stream of upload chunks.
struct FileChunks {
    file: std::fs::File,
    sent: u64,
    progress: Box<dyn Fn(u64) + Send>,
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
                (self.progress)(self.sent);
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
