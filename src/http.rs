//! The one HTTP client builder for the program (user agent, timeouts, CA, redirect rules),
//! the run's client configuration (`ClientConfig`, a value handed to every client), and
//! bounded body reads: nothing read from the network is
//! unbounded in bytes.

use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use crate::reference::is_loopback_host;

pub const USER_AGENT: &str = concat!("publish/", env!("CARGO_PKG_VERSION"));

/// Token answers, error bodies and API documents: a ceiling well above any real one.
pub const MAX_SMALL_BODY: u64 = 1024 * 1024;
/// Manifests and indexes: distribution's own limit.
pub const MAX_MANIFEST: u64 = 4 * 1024 * 1024;
/// A CA bundle file.
pub const MAX_CA_FILE: u64 = 1024 * 1024;

/// Builds an HTTP client. `extra_ca` adds a PEM CA (or bundle) to the system's roots.
///
/// Redirects: reqwest drops `Authorization` when a redirect leaves the original host, port or
/// scheme, so credentials never follow a blob download to object storage; on top of that a
/// redirect from HTTPS to plain HTTP on a non-loopback host is refused outright.
fn client(extra_ca: Option<&Path>, config: &ClientConfig) -> anyhow::Result<reqwest::Client> {
    let policy = reqwest::redirect::Policy::custom(|attempt| {
        let downgrade = attempt.previous().last().is_some_and(|p| p.scheme() == "https")
            && attempt.url().scheme() == "http"
            && !attempt.url().host_str().is_some_and(is_loopback_host);
        if downgrade {
            attempt.error("refusing a redirect from HTTPS to plain HTTP")
        } else if attempt.previous().len() >= 10 {
            attempt.error("too many redirects")
        } else {
            attempt.follow()
        }
    });
    let mut builder = reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .connect_timeout(config.connect_timeout)
        .read_timeout(config.read_timeout)
        .redirect(policy);
    if let Some(ca) = extra_ca {
        let pem = read_file_limited(ca, MAX_CA_FILE).map_err(|e| anyhow::anyhow!("CA file {e}"))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| anyhow::anyhow!("CA file {} is not PEM: {e}", ca.display()))?;
        if certs.is_empty() {
            anyhow::bail!("CA file {} holds no PEM certificate", ca.display());
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    Ok(builder.build()?)
}

/// The `rel="next"` target of an answer's `Link` header (RFC 8288: several links may share
/// one header), resolved against the request URL: the next page of a registry's catalog or of
/// GitHub's list. Whether to follow it (its origin) is the caller's.
pub fn link_next(request: &url::Url, headers: &reqwest::header::HeaderMap) -> Option<url::Url> {
    let link = headers.get(reqwest::header::LINK)?.to_str().ok()?;
    let next = link.split(',').find(|part| part.contains("rel=\"next\""))?;
    let target = next.split(';').next()?.trim().trim_start_matches('<').trim_end_matches('>');
    request.join(target).ok()
}

/// A bounded read that failed. Names the file, never echoes its bytes.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{path}: cannot read: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{0}: not a regular file")]
    NotAFile(String),
    #[error("{what} is larger than {max} bytes")]
    TooLarge { what: String, max: u64 },
    #[error("reading the answer: {0}")]
    Network(#[from] reqwest::Error),
    #[error("the answer is not the JSON expected (line {line}, column {column})")]
    Json { line: usize, column: usize },
}

/// Reads a small file whole, refusing what is not a regular file (a FIFO or `/dev/zero`) and
/// anything over `max` bytes, whatever `stat` says.
pub fn read_file_limited(path: &Path, max: u64) -> Result<Vec<u8>, ReadError> {
    use std::io::Read;
    let name = path.display().to_string();
    let io = |source| ReadError::Io { path: name.clone(), source };
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        return Err(ReadError::NotAFile(name));
    }
    let file = std::fs::File::open(path).map_err(io)?;
    let mut out = Vec::new();
    file.take(max + 1).read_to_end(&mut out).map_err(io)?;
    if out.len() as u64 > max {
        return Err(ReadError::TooLarge { what: name, max });
    }
    Ok(out)
}

/// A response body of at most `max` bytes; more is an error, and the rest is not read.
pub async fn body_limited(resp: reqwest::Response, max: u64) -> Result<Vec<u8>, ReadError> {
    let too_large = || ReadError::TooLarge { what: "the answer".into(), max };
    if resp.content_length().is_some_and(|n| n > max) {
        return Err(too_large());
    }
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if (out.len() + chunk.len()) as u64 > max {
            return Err(too_large());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// A JSON answer of at most `max` bytes.
pub async fn json_limited<T: serde::de::DeserializeOwned>(resp: reqwest::Response, max: u64) -> Result<T, ReadError> {
    let bytes = body_limited(resp, max).await?;
    serde_json::from_slice(&bytes).map_err(|e| ReadError::Json { line: e.line(), column: e.column() })
}

/// How every remote client of a run behaves: timeouts, retries, in-flight limits (the
/// policy's `transfer:`, recorded in the plan). A value, built once by the command layer
/// (`commands/load.rs`) and handed to each client: no client reads a global.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientConfig {
    pub attempts: u32,
    #[serde(with = "seconds")]
    pub max_delay: Duration,
    #[serde(with = "seconds")]
    pub connect_timeout: Duration,
    #[serde(with = "seconds")]
    pub read_timeout: Duration,
    /// Blobs uploaded at once to one registry.
    pub concurrency: usize,
    /// The whole of a small request (ping, token, HEAD, manifest), retries not counted.
    #[serde(with = "seconds")]
    pub request_timeout: Duration,
    /// The slowest upload accepted, bytes per second: a blob's deadline is its size at this
    /// rate plus `request_timeout`.
    pub min_rate: u64,
    /// Hash every blob on the way out as well (`transfer.verify: client`); by default the
    /// registry's own digest check is relied on, and only sizes are checked here.
    #[serde(default)]
    pub verify_client: bool,
    /// The first retry's wait (the command layer shrinks it from `PUBLISH_RETRY_BASE_MS` for tests).
    #[serde(skip, default = "default_retry_base")]
    pub retry_base: Duration,
}

fn default_retry_base() -> Duration {
    Duration::from_millis(500)
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            attempts: 4,
            max_delay: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(300),
            concurrency: 4,
            request_timeout: Duration::from_secs(60),
            min_rate: 1_000_000,
            verify_client: false,
            retry_base: default_retry_base(),
        }
    }
}

mod seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}

impl ClientConfig {
    /// How long an upload of `size` bytes may take in all.
    pub fn upload_deadline(&self, size: u64) -> Duration {
        self.request_timeout + Duration::from_secs(size / self.min_rate.max(1))
    }

    /// How long a small request may keep being retried: two and a half times its timeout.
    pub fn retry_deadline(&self) -> Duration {
        self.retry().deadline()
    }

    /// The retry policy of every client built from this configuration.
    pub fn retry(&self) -> crate::retry::RetryPolicy {
        crate::retry::RetryPolicy {
            attempts: self.attempts.max(1),
            base: self.retry_base,
            max: self.max_delay,
            jitter: true,
            request_timeout: self.request_timeout,
        }
    }

    /// An HTTP client with these timeouts (see [`client`]).
    pub fn http(&self, extra_ca: Option<&Path>) -> anyhow::Result<reqwest::Client> {
        client(extra_ca, self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_link_is_found_among_several() {
        let url = url::Url::parse("https://r.example/v2/_catalog?n=2").unwrap();
        let headers = |v: &str| {
            let mut h = reqwest::header::HeaderMap::new();
            h.insert(reqwest::header::LINK, v.parse().unwrap());
            h
        };
        let next = |v: &str| link_next(&url, &headers(v)).map(|u| u.to_string());
        assert_eq!(
            next(r#"</v2/_catalog?last=b&n=2>; rel="next""#).as_deref(),
            Some("https://r.example/v2/_catalog?last=b&n=2")
        );
        // GitHub sends prev and first before next in one header.
        assert_eq!(
            next(r#"<https://api.example/x?page=1>; rel="prev", <https://api.example/x?page=3>; rel="next""#)
                .as_deref(),
            Some("https://api.example/x?page=3")
        );
        assert_eq!(next(r#"<https://api.example/x?page=1>; rel="prev""#), None);
        assert_eq!(link_next(&url, &reqwest::header::HeaderMap::new()), None);
    }
}
