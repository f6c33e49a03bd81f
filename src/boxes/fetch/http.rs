//! The network side of fetching: one lazily built HTTP client (rustls, the system's CA
//! certificates, proxies from the usual environment variables), ranged GETs for resumable
//! downloads, and conditional GETs for the update check.

use reqwest::blocking::{Client, Response};
use reqwest::header::{
    CONTENT_RANGE, ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, LAST_MODIFIED, RANGE,
};
use reqwest::{StatusCode, Url};
use std::fmt;
use std::sync::OnceLock;
use std::time::Duration;

/// A stalled connection is given up after this long without a byte.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// The update check must not hold a build up for long.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a request failed, and whether trying again can help.
#[derive(Debug)]
pub enum FetchError {
    /// The server answered with a status that another try will not change (404, 403...).
    Refused(StatusCode),
    /// The range asked for lies beyond the file: the partial copy is stale.
    RangeNotSatisfiable,
    /// Network trouble or a server error: worth another try.
    Transient(String),
    /// A 429 or 503 with `Retry-After`: worth another try after that long.
    RetryAfter(String, Duration),
    /// The answer does not continue the partial copy (a 206 from elsewhere than asked):
    /// the copy is dropped and the transfer starts from byte 0.
    StartOver(String),
    /// A local file (a layout's blob) that cannot be read: the message says which and why.
    Local(String),
    /// A signal arrived while waiting.
    Interrupted(i32),
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchError::Refused(status) => write!(f, "HTTP {status}"),
            FetchError::RangeNotSatisfiable => write!(f, "HTTP 416 Range Not Satisfiable"),
            FetchError::Transient(cause)
            | FetchError::RetryAfter(cause, _)
            | FetchError::StartOver(cause)
            | FetchError::Local(cause) => write!(f, "{cause}"),
            FetchError::Interrupted(sig) => {
                write!(f, "interrupted by {}", crate::sys::error::signal_name(*sig))
            }
        }
    }
}

/// A response body positioned at `start`.
pub struct Opened {
    pub body: Box<dyn std::io::Read>,
    /// Where the body begins in the file: the requested offset, or 0 if the server
    /// sent the whole file.
    pub start: u64,
    /// The whole file's size, if known.
    pub total: Option<u64>,
    /// What identifies this version of the file for a later resume (ETag or date).
    pub validator: Option<String>,
}

pub enum Revalidated {
    Unchanged,
    Changed {
        text: String,
        etag: Option<String>,
        last_modified: Option<String>,
    },
}

#[derive(Default)]
pub struct Http {
    client: OnceLock<Result<Client, String>>,
}

impl Http {
    pub fn new() -> Http {
        Http::default()
    }

    /// Built on first use: a cache hit never pays for loading CA certificates.
    fn client(&self) -> Result<&Client, FetchError> {
        self.client
            .get_or_init(|| {
                Client::builder()
                    .user_agent(concat!("boxbuild/", env!("CARGO_PKG_VERSION")))
                    .connect_timeout(CONNECT_TIMEOUT)
                    .timeout(READ_TIMEOUT)
                    .build()
                    .map_err(|e| format!("cannot set up HTTP: {}", chain(&e)))
            })
            .as_ref()
            .map_err(|e| FetchError::Transient(e.clone()))
    }

    /// GET from `offset` on; `If-Range` makes the server send the whole file instead if
    /// it changed since the partial copy was made.
    pub fn open(
        &self,
        url: &Url,
        offset: u64,
        validator: Option<&str>,
    ) -> Result<Opened, FetchError> {
        let mut request = self.client()?.get(url.clone());
        if offset > 0 {
            request = request.header(RANGE, format!("bytes={offset}-"));
            if let Some(v) = validator {
                request = request.header(IF_RANGE, v);
            }
        }
        let response = request.send().map_err(transient)?;
        let status = response.status();
        let validator = validator_of(&response);
        match status {
            StatusCode::PARTIAL_CONTENT => {
                let (start, total) = partial_start(response.headers(), offset)?;
                Ok(Opened {
                    start,
                    total,
                    validator,
                    body: Box::new(response),
                })
            }
            StatusCode::OK => Ok(Opened {
                start: 0,
                total: response.content_length(),
                validator,
                body: Box::new(response),
            }),
            StatusCode::RANGE_NOT_SATISFIABLE => Err(FetchError::RangeNotSatisfiable),
            s => Err(with_retry_after(classify(s), response.headers())),
        }
    }

    /// A small text document (a remote catalog), unless it is unchanged since the copy
    /// described by `validators` (ETag, Last-Modified).
    pub fn get_text_if_changed(
        &self,
        url: &Url,
        validators: Option<(Option<String>, Option<String>)>,
    ) -> Result<Revalidated, FetchError> {
        let mut request = self.client()?.get(url.clone()).timeout(CHECK_TIMEOUT);
        if let Some((etag, last_modified)) = validators {
            if let Some(etag) = etag {
                request = request.header(IF_NONE_MATCH, etag);
            }
            if let Some(date) = last_modified {
                request = request.header(IF_MODIFIED_SINCE, date);
            }
        }
        let response = request.send().map_err(transient)?;
        match response.status() {
            StatusCode::NOT_MODIFIED => Ok(Revalidated::Unchanged),
            StatusCode::OK => {
                let (etag, last_modified) =
                    (header(&response, ETAG), header(&response, LAST_MODIFIED));
                let text = response.text().map_err(transient)?;
                Ok(Revalidated::Changed {
                    text,
                    etag,
                    last_modified,
                })
            }
            s => Err(classify(s)),
        }
    }
}

impl Http {
    /// A small file (a signature) in memory; `None` when the server has none (404).
    pub fn get_bytes(&self, url: &Url) -> Result<Option<Vec<u8>>, FetchError> {
        let response = self
            .client()?
            .get(url.clone())
            .timeout(CHECK_TIMEOUT)
            .send()
            .map_err(transient)?;
        match response.status() {
            StatusCode::OK => Ok(Some(response.bytes().map_err(transient)?.to_vec())),
            StatusCode::NOT_FOUND | StatusCode::GONE => Ok(None),
            s => Err(classify(s)),
        }
    }
}

fn classify(status: StatusCode) -> FetchError {
    let retry = status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS;
    if retry {
        FetchError::Transient(format!("HTTP {status}"))
    } else {
        FetchError::Refused(status)
    }
}

/// A transient error of an answer that carries `Retry-After` (seconds) waits that long.
pub fn with_retry_after(error: FetchError, headers: &reqwest::header::HeaderMap) -> FetchError {
    let wait = headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    match (error, wait) {
        (FetchError::Transient(m), Some(wait)) => FetchError::RetryAfter(m, wait),
        (error, _) => error,
    }
}

/// Where a 206 answer to a request for bytes from `offset` on starts, and the whole
/// file's size, by its `Content-Range`. An answer from byte 0 is the whole file (some
/// proxies and servers send that); one from anywhere else, or without a readable
/// `Content-Range`, cannot continue the partial copy: start over.
pub fn partial_start(
    headers: &reqwest::header::HeaderMap,
    offset: u64,
) -> Result<(u64, Option<u64>), FetchError> {
    let range = headers
        .get(CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_content_range);
    match range {
        Some((start, total)) if start == offset || start == 0 => Ok((start, total)),
        Some((start, _)) => Err(FetchError::StartOver(format!(
            "asked for bytes from {offset}, the server sent them from {start}"
        ))),
        None => Err(FetchError::StartOver(
            "the server answered a range request without a readable Content-Range".into(),
        )),
    }
}

fn transient(e: reqwest::Error) -> FetchError {
    FetchError::Transient(chain(&e))
}

/// An error and its causes on one line ("error sending request: connection refused").
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

/// A strong ETag, else Last-Modified: what `If-Range` accepts.
fn validator_of(response: &Response) -> Option<String> {
    header(response, ETAG)
        .filter(|e| !e.starts_with("W/"))
        .or_else(|| header(response, LAST_MODIFIED))
}

fn header(response: &Response, name: reqwest::header::HeaderName) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(String::from)
}

/// `Content-Range: bytes START-END/TOTAL` (TOTAL may be `*`).
fn parse_content_range(text: &str) -> Option<(u64, Option<u64>)> {
    let rest = text.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, _end) = range.split_once('-')?;
    let total = match total {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((start.parse().ok()?, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges() {
        assert_eq!(
            parse_content_range("bytes 100-199/200"),
            Some((100, Some(200)))
        );
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, None)));
        assert_eq!(parse_content_range("items 5-9/10"), None);
    }

    #[test]
    fn a_206_from_elsewhere_than_asked_starts_over() {
        let headers = |range: Option<&str>| {
            let mut h = reqwest::header::HeaderMap::new();
            if let Some(r) = range {
                h.insert(CONTENT_RANGE, r.parse().unwrap());
            }
            h
        };
        assert_eq!(
            partial_start(&headers(Some("bytes 100-199/200")), 100).unwrap(),
            (100, Some(200))
        );
        // The whole file from byte 0: taken as such (the fetcher drops its copy).
        assert_eq!(
            partial_start(&headers(Some("bytes 0-199/200")), 100).unwrap(),
            (0, Some(200))
        );
        assert!(matches!(
            partial_start(&headers(Some("bytes 50-199/200")), 100),
            Err(FetchError::StartOver(_))
        ));
        assert!(matches!(
            partial_start(&headers(None), 100),
            Err(FetchError::StartOver(_))
        ));
    }

    #[test]
    fn statuses_are_classified() {
        assert!(matches!(
            classify(StatusCode::NOT_FOUND),
            FetchError::Refused(_)
        ));
        assert!(matches!(
            classify(StatusCode::INTERNAL_SERVER_ERROR),
            FetchError::Transient(_)
        ));
        assert!(matches!(
            classify(StatusCode::TOO_MANY_REQUESTS),
            FetchError::Transient(_)
        ));
    }
}
