//! OCI distribution client over reqwest: `/v2/` ping, Basic and Bearer challenges, blob
//! existence, streaming monolithic uploads (POST, then PUT with the digest), and manifest
//! PUT. It never holds a layer in memory and never logs a header.

pub mod auth;
pub mod ecr;
pub mod hub;
pub mod remote;
pub mod usage;

use std::path::Path;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};

use reqwest::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, LOCATION, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncRead, ReadBuf};
use url::Url;

use crate::http::RetryPolicy;
use crate::reference::is_loopback_host;
use crate::types::{Digest, Secret};
pub use auth::Credential;

/// Every manifest media type `publish` reads, for `Accept` (distribution serves OCI manifests
/// only when asked for them).
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";
use auth::{Challenge, parse_challenge};

/// Errors a caller may act on. Messages name the registry, never a secret.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{registry}: authentication failed{detail}: check the username and password or token for this registry")]
    Unauthorized { registry: String, detail: String },
    #[error("{registry}: {status} {code}: {message}")]
    Api { registry: String, status: u16, code: String, message: String },
    #[error("{registry}: {message}")]
    Transport { registry: String, message: String },
    #[error("{registry}: {message}")]
    Refused { registry: String, message: String },
    /// 429 (or 503) with `Retry-After`: wait that long before trying again.
    #[error("{registry}: {status} {message} (asked to wait {wait:?})")]
    Throttled { registry: String, status: u16, message: String, wait: std::time::Duration },
    #[error("source blob {digest} does not match its digest (read {actual}): the image on disk is corrupt")]
    CorruptSource { digest: Digest, actual: Digest },
    #[error("reading the source: {0}")]
    Source(String),
}

impl RegistryError {
    fn retryable(&self) -> bool {
        match self {
            RegistryError::Transport { .. } | RegistryError::Throttled { .. } => true,
            RegistryError::Api { status, code, .. } => {
                *status >= 500 || *status == 408 || *status == 429 || code == "BLOB_UPLOAD_UNKNOWN"
            }
            _ => false,
        }
    }
}

/// Where a registry is and how to reach it.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `host[:port]`; `docker.io` is reached at `registry-1.docker.io`.
    pub host: String,
    /// Plain HTTP; only ever allowed for loopback hosts.
    pub insecure: bool,
}

impl Endpoint {
    fn base_url(&self) -> Result<Url, RegistryError> {
        if self.insecure && !is_loopback_host(&self.host) {
            return Err(RegistryError::Refused {
                registry: self.host.clone(),
                message: "plain HTTP is only allowed for loopback registries".into(),
            });
        }
        let host = if self.host == crate::reference::DOCKER_HUB { "registry-1.docker.io" } else { &self.host };
        let scheme = if self.insecure { "http" } else { "https" };
        Url::parse(&format!("{scheme}://{host}/")).map_err(|e| RegistryError::Refused {
            registry: self.host.clone(),
            message: format!("not a valid registry address: {e}"),
        })
    }
}

/// A client for one repository on one registry.
pub struct Client {
    http: reqwest::Client,
    base: Url,
    registry: String,
    repository: String,
    credential: Option<Credential>,
    /// The token scope asked for on a Bearer challenge.
    scope: String,
    mode: UploadMode,
    /// The `Authorization` value in use (Basic or Bearer), once the challenge is known.
    authorization: Mutex<Option<Secret>>,
    retry: RetryPolicy,
}

/// What one blob upload did.
#[derive(Debug, Clone, Copy, Default)]
pub struct UploadStats {
    /// Every byte put on the wire, including bytes sent again after a failure.
    pub bytes_sent: u64,
    pub attempts: u32,
    /// Times a chunked upload continued where the registry said it stood.
    pub resumes: u32,
}

impl UploadStats {
    /// Bytes sent more than once, for an upload of `size` bytes that succeeded.
    pub fn bytes_resent(&self, size: u64) -> u64 {
        self.bytes_sent.saturating_sub(size)
    }
}

/// How blobs go up: one streaming PUT, or PATCH chunks (resumable where the registry reports
/// how much it kept, as the OCI spec's upload status does).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UploadMode {
    #[default]
    Monolithic,
    Chunked {
        chunk: u64,
    },
}

impl Client {
    pub fn new(
        endpoint: &Endpoint,
        repository: &str,
        ca_file: Option<&Path>,
        credential: Option<Credential>,
        retry: RetryPolicy,
    ) -> Result<Client, RegistryError> {
        let base = endpoint.base_url()?;
        let http = crate::http::client(ca_file)
            .map_err(|e| RegistryError::Refused { registry: endpoint.host.clone(), message: e.to_string() })?;
        Ok(Client {
            http,
            base,
            registry: endpoint.host.clone(),
            repository: repository.to_string(),
            scope: format!("repository:{repository}:pull,push"),
            mode: UploadMode::Monolithic,
            credential,
            authorization: Mutex::new(None),
            retry,
        })
    }

    /// Uploads blobs this way.
    pub fn with_upload_mode(mut self, mode: UploadMode) -> Self {
        self.mode = mode;
        self
    }

    /// Asks for these token scopes (space-separated) instead of pull and push on the repository.
    pub fn with_scope(mut self, scope: &str) -> Self {
        self.scope = scope.to_string();
        self
    }

    pub fn registry(&self) -> &str {
        &self.registry
    }

    fn url(&self, path: &str) -> Url {
        // Paths are built from validated repository names and digests only.
        self.base.join(path).unwrap_or_else(|_| self.base.clone())
    }

    fn transport_error(&self, e: reqwest::Error) -> RegistryError {
        // reqwest's message carries the URL but never headers.
        let mut message = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            message = format!("{message}: {s}");
            source = s.source();
        }
        RegistryError::Transport { registry: self.registry.clone(), message }
    }

    async fn api_error(&self, resp: reqwest::Response) -> RegistryError {
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED {
            return RegistryError::Unauthorized { registry: self.registry.clone(), detail: String::new() };
        }
        // Retry-After (seconds) is only in the spec's draft: honoured when present, never required.
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(std::time::Duration::from_secs);
        let body = resp.text().await.unwrap_or_default();
        if let Some(wait) = retry_after
            && (status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE)
        {
            let message = body.chars().take(200).collect::<String>().trim().to_string();
            return RegistryError::Throttled {
                registry: self.registry.clone(),
                status: status.as_u16(),
                message,
                wait,
            };
        }
        #[derive(serde::Deserialize)]
        struct Errors {
            errors: Vec<ApiError>,
        }
        #[derive(serde::Deserialize)]
        struct ApiError {
            code: String,
            #[serde(default)]
            message: String,
        }
        let (code, message) = match serde_json::from_str::<Errors>(&body) {
            Ok(e) if !e.errors.is_empty() => (e.errors[0].code.clone(), e.errors[0].message.clone()),
            _ => (
                status.canonical_reason().unwrap_or("error").to_uppercase().replace(' ', "_"),
                body.chars().take(200).collect::<String>().trim().to_string(),
            ),
        };
        RegistryError::Api { registry: self.registry.clone(), status: status.as_u16(), code, message }
    }

    /// Pings `/v2/` and, on a challenge, obtains authorization for pull and push on the
    /// repository. Fails with `Unauthorized` when the credentials are refused.
    pub async fn authenticate(&self) -> Result<(), RegistryError> {
        let resp = self.with_retries(Method::GET, self.url("v2/"), |r| r, false).await?;
        if resp.status().is_success() {
            return Ok(());
        }
        if resp.status() != StatusCode::UNAUTHORIZED {
            return Err(self.api_error(resp).await);
        }
        let challenge = resp.headers().get(WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()).and_then(parse_challenge);
        match challenge {
            Some(Challenge::Basic) | None => {
                let Some(cred) = &self.credential else {
                    return Err(RegistryError::Unauthorized {
                        registry: self.registry.clone(),
                        detail: " (the registry wants credentials and none were found)".into(),
                    });
                };
                let header = cred.basic_header();
                let resp = self
                    .with_retries(Method::GET, self.url("v2/"), |r| r.header(AUTHORIZATION, header.expose()), false)
                    .await?;
                if !resp.status().is_success() {
                    return Err(match self.api_error(resp).await {
                        RegistryError::Unauthorized { registry, .. } => {
                            RegistryError::Unauthorized { registry, detail: format!(" for user {:?}", cred.username) }
                        }
                        e => e,
                    });
                }
                self.set_authorization(header);
            }
            Some(Challenge::Bearer { realm, service, .. }) => {
                let token = self.fetch_token(&realm, service.as_deref()).await?;
                self.set_authorization(Secret::new(format!("Bearer {}", token.expose())));
            }
        }
        Ok(())
    }

    fn set_authorization(&self, value: Secret) {
        if let Ok(mut a) = self.authorization.lock() {
            *a = Some(value);
        }
    }

    fn authorization(&self) -> Option<Secret> {
        self.authorization.lock().ok().and_then(|a| a.clone())
    }

    async fn fetch_token(&self, realm: &str, service: Option<&str>) -> Result<Secret, RegistryError> {
        let mut url = Url::parse(realm).map_err(|e| RegistryError::Refused {
            registry: self.registry.clone(),
            message: format!("the token realm {realm:?} is not a URL: {e}"),
        })?;
        let realm_host = url.host_str().unwrap_or_default().to_string();
        if url.scheme() != "https" && !is_loopback_host(&realm_host) {
            return Err(RegistryError::Refused {
                registry: self.registry.clone(),
                message: format!("refusing to request a token over plain HTTP from {realm_host}"),
            });
        }
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            for scope in self.scope.split(' ') {
                q.append_pair("scope", scope);
            }
        }
        let basic = self.credential.as_ref().map(Credential::basic_header);
        let resp = self
            .with_retries(
                Method::GET,
                url,
                |r| match &basic {
                    Some(b) => r.header(AUTHORIZATION, b.expose()),
                    None => r,
                },
                false,
            )
            .await?;
        if resp.status() == StatusCode::UNAUTHORIZED || resp.status() == StatusCode::FORBIDDEN {
            let who = self.credential.as_ref().map(|c| format!(" for user {:?}", c.username)).unwrap_or_default();
            return Err(RegistryError::Unauthorized {
                registry: self.registry.clone(),
                detail: format!(" at the token service {realm_host}{who}"),
            });
        }
        if !resp.status().is_success() {
            return Err(self.api_error(resp).await);
        }
        #[derive(serde::Deserialize)]
        struct TokenReply {
            #[serde(default)]
            token: Option<String>,
            #[serde(default)]
            access_token: Option<String>,
        }
        let reply: TokenReply = resp.json().await.map_err(|e| self.transport_error(e))?;
        reply.token.or(reply.access_token).map(Secret::new).ok_or_else(|| RegistryError::Refused {
            registry: self.registry.clone(),
            message: format!("the token service {realm_host} answered without a token"),
        })
    }

    /// One try: builds the request, adds the current authorization when `auth`, and turns
    /// 5xx and 429 answers into errors so they can be retried.
    async fn attempt(
        &self,
        method: &Method,
        url: &Url,
        build: &impl Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
        auth: bool,
    ) -> Result<reqwest::Response, RegistryError> {
        let mut req = build(self.http.request(method.clone(), url.clone()));
        if auth && let Some(a) = self.authorization() {
            req = req.header(AUTHORIZATION, a.expose());
        }
        tracing::debug!(%method, url = %url.path(), "registry request");
        match req.send().await {
            Ok(resp) if resp.status().is_server_error() || resp.status() == StatusCode::TOO_MANY_REQUESTS => {
                Err(self.api_error(resp).await)
            }
            Ok(resp) => Ok(resp),
            Err(e) => Err(self.transport_error(e)),
        }
    }

    /// Retries transient failures (5xx, 429, connection errors) with backoff. Only for
    /// requests whose body can be built again.
    async fn with_retries(
        &self,
        method: Method,
        url: Url,
        build: impl Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
        auth: bool,
    ) -> Result<reqwest::Response, RegistryError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.attempt(&method, &url, &build, auth).await {
                Err(error) if error.retryable() && attempt < self.retry.attempts => {
                    let wait = match &error {
                        RegistryError::Throttled { wait, .. } => (*wait).min(self.retry.max),
                        _ => self.retry.delay(attempt),
                    };
                    tracing::warn!(registry = %self.registry, %error, ?wait, "retrying");
                    tokio::time::sleep(wait).await;
                }
                other => return other,
            }
        }
    }

    /// Sends an authorized request, retrying transient failures and re-authenticating once
    /// on 401 (tokens expire during long pushes).
    async fn send(
        &self,
        method: Method,
        url: Url,
        build: impl Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, RegistryError> {
        let resp = self.with_retries(method.clone(), url.clone(), &build, true).await?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        self.authenticate().await?;
        self.with_retries(method, url, &build, true).await
    }

    /// Whether the repository already has the blob.
    pub async fn blob_exists(&self, digest: &Digest) -> Result<bool, RegistryError> {
        let url = self.url(&format!("v2/{}/blobs/{digest}", self.repository));
        let resp = self.send(Method::HEAD, url, |r| r).await?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.api_error(resp).await),
        }
    }

    /// Uploads one blob, read from `open(offset)`, hashing every byte. A chunked upload that
    /// fails part way asks the registry where it stands and continues from there; where the
    /// registry keeps nothing (2.8 drops a session cut mid-stream), this blob restarts, never
    /// the image.
    pub async fn upload_blob<F, Fut, R>(
        &self,
        digest: &Digest,
        size: u64,
        open: F,
    ) -> Result<UploadStats, RegistryError>
    where
        F: Fn(u64) -> Fut,
        Fut: std::future::Future<Output = Result<R, String>>,
        R: AsyncRead + Send + Unpin + 'static,
    {
        let mut stats = UploadStats::default();
        loop {
            stats.attempts += 1;
            let result = match self.mode {
                UploadMode::Monolithic => self.upload_once(digest, size, &open, &mut stats).await,
                UploadMode::Chunked { chunk } => {
                    self.upload_chunked(digest, size, chunk.max(1), &open, &mut stats).await
                }
            };
            match result {
                Ok(()) => return Ok(stats),
                Err(e) if e.retryable() && stats.attempts < self.retry.attempts => {
                    let wait = match &e {
                        RegistryError::Throttled { wait, .. } => (*wait).min(self.retry.max),
                        _ => self.retry.delay(stats.attempts),
                    };
                    tracing::warn!(registry = %self.registry, %digest, error = %e, ?wait, "restarting blob upload");
                    tokio::time::sleep(wait).await;
                }
                Err(RegistryError::Unauthorized { .. }) if stats.attempts == 1 => {
                    self.authenticate().await?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn upload_once<F, Fut, R>(
        &self,
        digest: &Digest,
        size: u64,
        open: &F,
        stats: &mut UploadStats,
    ) -> Result<(), RegistryError>
    where
        F: Fn(u64) -> Fut,
        Fut: std::future::Future<Output = Result<R, String>>,
        R: AsyncRead + Send + Unpin + 'static,
    {
        let mut location = self.start_upload().await?;
        location.query_pairs_mut().append_pair("digest", digest.as_str());

        let reader = open(0).await.map_err(RegistryError::Source)?;
        let (hashing, progress) = HashingReader::new(reader, digest.clone(), size);
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(hashing, 256 * 1024));
        let mut req = self
            .http
            .put(location.clone())
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_LENGTH, size)
            .body(body);
        if let Some(a) = self.authorization() {
            req = req.header(AUTHORIZATION, a.expose());
        }
        tracing::debug!(url = %location.path(), %digest, size, "uploading blob");
        let result = req.send().await;
        let (read, mismatch) = progress.snapshot();
        stats.bytes_sent += read;
        if let Some(actual) = mismatch {
            return Err(RegistryError::CorruptSource { digest: digest.clone(), actual });
        }
        let resp = match result {
            Ok(resp) => resp,
            // The answer was lost: the blob may be complete anyway, so look before sending again.
            Err(e) if read == size && self.blob_exists(digest).await.unwrap_or(false) => {
                tracing::warn!(registry = %self.registry, %digest, "the upload's answer was lost ({e}), but the blob is there");
                return Ok(());
            }
            Err(e) => return Err(self.transport_error(e)),
        };
        if resp.status() != StatusCode::CREATED && !resp.status().is_success() {
            return Err(self.api_error(resp).await);
        }
        Ok(())
    }

    /// Opens an upload session and returns its URL.
    async fn start_upload(&self) -> Result<Url, RegistryError> {
        let start = self.url(&format!("v2/{}/blobs/uploads/", self.repository));
        let resp = self.send(Method::POST, start.clone(), |r| r.header(CONTENT_LENGTH, "0")).await?;
        if resp.status() != StatusCode::ACCEPTED && resp.status() != StatusCode::CREATED {
            return Err(self.api_error(resp).await);
        }
        self.location(&start, &resp)
    }

    /// PATCH chunks, continuing after a failure from the offset the upload status reports.
    async fn upload_chunked<F, Fut, R>(
        &self,
        digest: &Digest,
        size: u64,
        chunk: u64,
        open: &F,
        stats: &mut UploadStats,
    ) -> Result<(), RegistryError>
    where
        F: Fn(u64) -> Fut,
        Fut: std::future::Future<Output = Result<R, String>>,
        R: AsyncRead + Send + Unpin + 'static,
    {
        let mut location = self.start_upload().await?;
        let mut hasher = Sha256::new();
        let mut offset = 0u64;
        let mut failures = 0u32;
        // One reader for the whole blob, reopened only where a resume moves the offset (for a
        // `docker://` source, each open is a request to the source registry).
        let mut reader: Option<(u64, R)> = None;
        while offset < size {
            let len = chunk.min(size - offset);
            let bytes = read_chunk(open, &mut reader, offset, len).await?;
            let range = format!("{}-{}", offset, offset + len - 1);
            let url = location.clone();
            let build = |r: reqwest::RequestBuilder| {
                r.header(CONTENT_TYPE, "application/octet-stream")
                    .header(CONTENT_LENGTH, len)
                    .header("Content-Range", range.as_str())
                    .body(bytes.clone())
            };
            tracing::debug!(url = %url.path(), range, "uploading chunk");
            stats.bytes_sent += len;
            let outcome = match self.attempt(&Method::PATCH, &url, &build, true).await {
                Ok(resp) if resp.status() == StatusCode::UNAUTHORIZED => {
                    // The token expired mid-upload: a fresh one, and the same chunk again.
                    self.authenticate().await?;
                    stats.bytes_sent += len;
                    self.attempt(&Method::PATCH, &url, &build, true).await
                }
                other => other,
            };
            let error = match outcome {
                Ok(resp) if resp.status().is_success() => {
                    // ECR answers 201 and a stuck Range: the offset is ours to track.
                    if resp.headers().contains_key(LOCATION) {
                        location = self.location(&url, &resp)?;
                    }
                    hasher.update(&bytes);
                    offset += len;
                    continue;
                }
                Ok(resp) => self.api_error(resp).await,
                Err(e) => e,
            };
            failures += 1;
            let resumable = matches!(&error, RegistryError::Transport { .. })
                || matches!(&error, RegistryError::Api { status, .. } if *status >= 500 || *status == 416 || *status == 429);
            if !resumable || failures >= self.retry.attempts {
                return Err(error);
            }
            tokio::time::sleep(self.retry.delay(failures)).await;
            // Where does the session stand? (OCI spec: GET on the upload URL, 204 and Range.)
            let (kept, next) = self.upload_status(&location).await?;
            if kept < offset || kept > offset + len {
                // The registry lost data it had acknowledged: start this blob again.
                return Err(RegistryError::Api {
                    registry: self.registry.clone(),
                    status: 400,
                    code: "BLOB_UPLOAD_UNKNOWN".into(),
                    message: format!("the upload session kept {kept} bytes, expected {offset} to {}", offset + len),
                });
            }
            tracing::warn!(registry = %self.registry, %digest, offset = kept, %error, "resuming the upload where the registry stands");
            hasher.update(&bytes[..(kept - offset) as usize]);
            offset = kept;
            location = next;
            stats.resumes += 1;
        }
        let actual = Digest::from_sha256(&hasher.finalize());
        if &actual != digest {
            return Err(RegistryError::CorruptSource { digest: digest.clone(), actual });
        }
        let mut done = location.clone();
        done.query_pairs_mut().append_pair("digest", digest.as_str());
        let resp = self.send(Method::PUT, done, |r| r.header(CONTENT_LENGTH, "0")).await?;
        if !resp.status().is_success() {
            return Err(self.api_error(resp).await);
        }
        Ok(())
    }

    /// The bytes an upload session holds and the URL to continue at. A session the registry
    /// no longer knows (2.8 after a cut, ECR's 404) is `BLOB_UPLOAD_UNKNOWN`: restart the blob.
    async fn upload_status(&self, location: &Url) -> Result<(u64, Url), RegistryError> {
        let resp = self.attempt(&Method::GET, location, &|r| r, true).await?;
        if resp.status() != StatusCode::NO_CONTENT && !resp.status().is_success() {
            let status = resp.status().as_u16();
            tracing::warn!(registry = %self.registry, status, "the upload session is gone: restarting this blob");
            return Err(RegistryError::Api {
                registry: self.registry.clone(),
                status: 404,
                code: "BLOB_UPLOAD_UNKNOWN".into(),
                message: format!("upload status answered {status}"),
            });
        }
        let kept = resp
            .headers()
            .get(reqwest::header::RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(|r| r.trim_start_matches("bytes=").split_once('-'))
            .and_then(|(_, end)| end.parse::<u64>().ok())
            .map_or(0, |end| end + 1);
        let next =
            if resp.headers().contains_key(LOCATION) { self.location(location, &resp)? } else { location.clone() };
        Ok((kept, next))
    }

    fn location(&self, request: &Url, resp: &reqwest::Response) -> Result<Url, RegistryError> {
        let value =
            resp.headers().get(LOCATION).and_then(|v| v.to_str().ok()).ok_or_else(|| RegistryError::Refused {
                registry: self.registry.clone(),
                message: "upload started without a Location header".into(),
            })?;
        // Location may be relative; resolve it against the request (OCI distribution spec).
        request.join(value).map_err(|e| RegistryError::Refused {
            registry: self.registry.clone(),
            message: format!("upload Location {value:?} is not a URL: {e}"),
        })
    }

    /// Every repository in the registry's catalog, following `Link` pagination.
    pub async fn repositories(&self) -> Result<Vec<String>, RegistryError> {
        #[derive(serde::Deserialize)]
        struct Catalog {
            #[serde(default)]
            repositories: Vec<String>,
        }
        let mut out = Vec::new();
        let mut url = self.url("v2/_catalog?n=1000");
        loop {
            let resp = self.send(Method::GET, url.clone(), |r| r).await?;
            if !resp.status().is_success() {
                return Err(self.api_error(resp).await);
            }
            let next = link_next(&url, &resp);
            let page: Catalog = resp.json().await.map_err(|e| self.transport_error(e))?;
            out.extend(page.repositories);
            match next {
                Some(n) => url = n,
                None => return Ok(out),
            }
        }
    }

    /// The tags of `repository` (empty when it has none).
    pub async fn tags(&self, repository: &str) -> Result<Vec<String>, RegistryError> {
        #[derive(serde::Deserialize)]
        struct Tags {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let resp = self.send(Method::GET, self.url(&format!("v2/{repository}/tags/list")), |r| r).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(Vec::new());
        }
        if !resp.status().is_success() {
            return Err(self.api_error(resp).await);
        }
        let t: Tags = resp.json().await.map_err(|e| self.transport_error(e))?;
        Ok(t.tags.unwrap_or_default())
    }

    /// A manifest's bytes, by tag or digest, in any of the image media types (`None`: absent).
    pub async fn manifest(&self, repository: &str, reference: &str) -> Result<Option<Vec<u8>>, RegistryError> {
        let url = self.url(&format!("v2/{repository}/manifests/{reference}"));
        let resp = self.send(Method::GET, url, |r| r.header(reqwest::header::ACCEPT, MANIFEST_ACCEPT)).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(self.api_error(resp).await);
        }
        let bytes = resp.bytes().await.map_err(|e| self.transport_error(e))?;
        Ok(Some(bytes.to_vec()))
    }

    /// Whether `reference` can be pulled with no credentials at all: an anonymous token (when
    /// the registry uses them), then a HEAD of the manifest. Works on every registry and needs
    /// no API permission. The client must have been made without credentials.
    pub async fn pullable_anonymously(&self, reference: &str) -> Result<bool, RegistryError> {
        match self.authenticate().await {
            Ok(()) => {}
            Err(RegistryError::Unauthorized { .. }) => return Ok(false),
            Err(e) => return Err(e),
        }
        let url = self.url(&format!("v2/{}/manifests/{reference}", self.repository));
        match self.send(Method::HEAD, url, |r| r.header(reqwest::header::ACCEPT, MANIFEST_ACCEPT)).await {
            Ok(resp) if resp.status().is_success() => Ok(true),
            Ok(resp) if matches!(resp.status().as_u16(), 401 | 403 | 404) => Ok(false),
            Ok(resp) => Err(self.api_error(resp).await),
            Err(RegistryError::Unauthorized { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// A small blob's bytes (signatures, bundles), checked against its digest; `None` when
    /// the repository does not have it.
    pub async fn get_blob(&self, digest: &Digest, max: u64) -> Result<Option<Vec<u8>>, RegistryError> {
        let url = self.url(&format!("v2/{}/blobs/{digest}", self.repository));
        let resp = self.send(Method::GET, url, |r| r).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(self.api_error(resp).await);
        }
        if resp.content_length().is_some_and(|n| n > max) {
            return Err(RegistryError::Refused {
                registry: self.registry.clone(),
                message: format!("blob {digest} is larger than the {max} bytes expected"),
            });
        }
        let bytes = resp.bytes().await.map_err(|e| self.transport_error(e))?;
        let actual = Digest::of(&bytes);
        if &actual != digest {
            return Err(RegistryError::Refused {
                registry: self.registry.clone(),
                message: format!("blob {digest} came back as {actual}"),
            });
        }
        Ok(Some(bytes.to_vec()))
    }

    /// Uploads a small in-memory blob (skipped when the repository has it).
    pub async fn put_blob(&self, bytes: &[u8]) -> Result<Digest, RegistryError> {
        let digest = Digest::of(bytes);
        if !self.blob_exists(&digest).await? {
            let data = bytes.to_vec();
            self.upload_blob(&digest, data.len() as u64, |offset| {
                let mut cursor = std::io::Cursor::new(data.clone());
                cursor.set_position(offset);
                async move { Ok::<_, String>(cursor) }
            })
            .await?;
        }
        Ok(digest)
    }

    /// The digest and media type of what `reference` (a tag) points at; `None` when absent.
    pub async fn resolve(&self, reference: &str) -> Result<Option<(Digest, String, u64)>, RegistryError> {
        let Some(bytes) = self.manifest(&self.repository, reference).await? else { return Ok(None) };
        let media_type = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("mediaType").and_then(|m| m.as_str()).map(str::to_string))
            .unwrap_or_else(|| crate::image::OCI_MANIFEST.to_string());
        Ok(Some((Digest::of(&bytes), media_type, bytes.len() as u64)))
    }

    /// Puts a manifest under `reference` (a tag or its digest) and checks the digest the
    /// registry computed, when it says.
    pub async fn put_manifest(&self, reference: &str, media_type: &str, bytes: &[u8]) -> Result<Digest, RegistryError> {
        let digest = Digest::of(bytes);
        let url = self.url(&format!("v2/{}/manifests/{reference}", self.repository));
        let body = bytes.to_vec();
        let resp = self.send(Method::PUT, url, |r| r.header(CONTENT_TYPE, media_type).body(body.clone())).await?;
        if !resp.status().is_success() {
            return Err(self.api_error(resp).await);
        }
        if let Some(theirs) = resp.headers().get("docker-content-digest").and_then(|v| v.to_str().ok())
            && theirs != digest.as_str()
        {
            return Err(RegistryError::Refused {
                registry: self.registry.clone(),
                message: format!("stored manifest {reference} as {theirs}, but it hashes to {digest}"),
            });
        }
        Ok(digest)
    }
}

/// Reads `len` bytes of the source from `offset` (one chunk: bounded by the chunk size),
/// continuing with `reader` when it stands at `offset`, else opening the source there.
async fn read_chunk<F, Fut, R>(
    open: &F,
    reader: &mut Option<(u64, R)>,
    offset: u64,
    len: u64,
) -> Result<Vec<u8>, RegistryError>
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = Result<R, String>>,
    R: AsyncRead + Send + Unpin + 'static,
{
    use tokio::io::AsyncReadExt;
    // A failed read leaves no reader: the next chunk opens the source afresh.
    let mut source = match reader.take() {
        Some((at, source)) if at == offset => source,
        _ => open(offset).await.map_err(RegistryError::Source)?,
    };
    let mut buf = Vec::with_capacity(len as usize);
    (&mut source).take(len).read_to_end(&mut buf).await.map_err(|e| RegistryError::Source(e.to_string()))?;
    *reader = Some((offset + buf.len() as u64, source));
    if buf.len() as u64 != len {
        return Err(RegistryError::Source(format!(
            "the source ended at {} bytes, {len} were expected",
            offset + buf.len() as u64
        )));
    }
    Ok(buf)
}

/// The `rel="next"` target of a `Link` header, resolved against the request URL.
fn link_next(request: &Url, resp: &reqwest::Response) -> Option<Url> {
    let link = resp.headers().get(reqwest::header::LINK)?.to_str().ok()?;
    let target = link.split(';').next()?.trim().trim_start_matches('<').trim_end_matches('>');
    link.contains("rel=\"next\"").then(|| request.join(target).ok()).flatten()
}

/// Progress shared between the body stream (which reqwest owns) and the uploader.
#[derive(Clone, Default)]
struct Progress(std::sync::Arc<Mutex<(u64, Option<Digest>)>>);

impl Progress {
    fn snapshot(&self) -> (u64, Option<Digest>) {
        self.0.lock().map(|g| g.clone()).unwrap_or_default()
    }
}

/// Hashes bytes as they are read and fails the stream, before its last bytes go out, when
/// the content does not match the digest; so the registry never completes a wrong blob.
/// The check runs on reaching the expected size, because the HTTP client stops reading the
/// body at `Content-Length` and may never see the end of the stream.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    expected: Digest,
    size: u64,
    read: u64,
    progress: Progress,
}

impl<R> HashingReader<R> {
    fn new(inner: R, expected: Digest, size: u64) -> (Self, Progress) {
        let progress = Progress::default();
        let reader =
            HashingReader { inner, hasher: Sha256::new(), expected, size, read: 0, progress: progress.clone() };
        (reader, progress)
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for HashingReader<R> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let Poll::Ready(result) = Pin::new(&mut this.inner).poll_read(cx, buf) else {
            return Poll::Pending;
        };
        result?;
        let new = &buf.filled()[before..];
        this.read += new.len() as u64;
        this.hasher.update(new);
        let mismatch = if this.read >= this.size || new.is_empty() {
            let actual = Digest::from_sha256(&this.hasher.clone().finalize());
            (actual != this.expected || this.read != this.size).then_some(actual)
        } else {
            None
        };
        if let Ok(mut p) = this.progress.0.lock() {
            *p = (this.read, mismatch.clone());
        }
        if mismatch.is_some() {
            buf.set_filled(before);
            return Poll::Ready(Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "source digest mismatch")));
        }
        Poll::Ready(Ok(()))
    }
}
