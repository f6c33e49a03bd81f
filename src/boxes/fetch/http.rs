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
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchError::Refused(status) => write!(f, "HTTP {status}"),
            FetchError::RangeNotSatisfiable => write!(f, "HTTP 416 Range Not Satisfiable"),
            FetchError::Transient(cause) => write!(f, "{cause}"),
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
                let (start, total) = content_range(&response).ok_or_else(|| {
                    FetchError::Transient("the server sent a bad Content-Range".into())
                })?;
                if start != offset {
                    return Err(FetchError::Transient(format!(
                        "asked for bytes from {offset}, the server sent from {start}"
                    )));
                }
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
            s => Err(classify(s)),
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
fn content_range(response: &Response) -> Option<(u64, Option<u64>)> {
    let text = response.headers().get(CONTENT_RANGE)?.to_str().ok()?;
    parse_content_range(text)
}

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
