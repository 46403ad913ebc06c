//! OCI distribution client over reqwest: `transport` (the request path of every small request
//! and PATCH chunk: origins, retries, deadlines, errors; a streamed blob PUT and the sendfile
//! PUT are sent on their own, under the same origin rule and deadline, and hand their answer
//! to `Client::completed`), `auth` (challenges, tokens,
//! Docker's config), `blob`, `upload` (sessions: begin, patch, status, finish), `manifest`,
//! `catalog`. Every client is made from a `RegistryAccess` (address, CA, credential and the
//! run's `ClientConfig`). It never holds a layer in memory and never logs a header.

pub mod auth;
mod blob;
mod catalog;
mod checked;
pub mod ecr;
pub mod hub;
mod manifest;
#[cfg(target_os = "linux")]
mod sendfile;
mod stream_upload;
mod transport;
mod upload;
pub mod usage;

use std::path::PathBuf;
use std::sync::Mutex;

use url::Url;

use crate::http::ClientConfig;
use crate::reference::is_loopback_host;
use crate::retry::RetryPolicy;
use crate::types::{Digest, Secret};
pub use auth::Credential;
pub use stream_upload::Streamed;
pub use upload::{FileRange, UploadMode, UploadStats};

/// The error codes of the distribution spec that `publish` acts on; the rest are kept by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorCode {
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    Unauthorized,
    Denied,
    Unsupported,
    TooManyRequests,
    /// Any other code, or the HTTP reason when the body had none.
    Other(String),
}

impl ErrorCode {
    pub fn parse(code: &str) -> ErrorCode {
        match code {
            "BLOB_UNKNOWN" => ErrorCode::BlobUnknown,
            "BLOB_UPLOAD_INVALID" => ErrorCode::BlobUploadInvalid,
            "BLOB_UPLOAD_UNKNOWN" => ErrorCode::BlobUploadUnknown,
            "DIGEST_INVALID" => ErrorCode::DigestInvalid,
            "MANIFEST_BLOB_UNKNOWN" => ErrorCode::ManifestBlobUnknown,
            "MANIFEST_INVALID" => ErrorCode::ManifestInvalid,
            "MANIFEST_UNKNOWN" => ErrorCode::ManifestUnknown,
            "NAME_INVALID" => ErrorCode::NameInvalid,
            "NAME_UNKNOWN" => ErrorCode::NameUnknown,
            "SIZE_INVALID" => ErrorCode::SizeInvalid,
            "UNAUTHORIZED" => ErrorCode::Unauthorized,
            "DENIED" => ErrorCode::Denied,
            "UNSUPPORTED" => ErrorCode::Unsupported,
            "TOOMANYREQUESTS" => ErrorCode::TooManyRequests,
            other => ErrorCode::Other(other.to_string()),
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            ErrorCode::BlobUnknown => "BLOB_UNKNOWN",
            ErrorCode::BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            ErrorCode::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            ErrorCode::DigestInvalid => "DIGEST_INVALID",
            ErrorCode::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            ErrorCode::ManifestInvalid => "MANIFEST_INVALID",
            ErrorCode::ManifestUnknown => "MANIFEST_UNKNOWN",
            ErrorCode::NameInvalid => "NAME_INVALID",
            ErrorCode::NameUnknown => "NAME_UNKNOWN",
            ErrorCode::SizeInvalid => "SIZE_INVALID",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::Denied => "DENIED",
            ErrorCode::Unsupported => "UNSUPPORTED",
            ErrorCode::TooManyRequests => "TOOMANYREQUESTS",
            ErrorCode::Other(s) => s,
        };
        f.write_str(s)
    }
}

/// Errors a caller may act on. Messages name the registry, never a secret.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{registry}: authentication failed{detail}: check the username and password or token for this registry")]
    Unauthorized { registry: String, detail: String },
    #[error("{registry}: {status} {code}: {message}{}", hint_for(*.status))]
    Api { registry: String, status: u16, code: ErrorCode, message: String },
    /// The connection failed or was cut; `connect`: the registry could not be reached at all
    /// (restarting, say), which is waited for until the retry deadline.
    #[error("{registry}: {message}")]
    Transport { registry: String, message: String, connect: bool },
    #[error("{registry}: {message}")]
    Refused { registry: String, message: String },
    /// 429 (or 503) with `Retry-After`: wait that long before trying again.
    #[error("{registry}: {status} {message} (asked to wait {wait:?})")]
    Throttled { registry: String, status: u16, message: String, wait: std::time::Duration },
    #[error("source blob {digest} does not match its digest (read {actual}): the image on disk is corrupt")]
    CorruptSource { digest: Digest, actual: Digest },
    /// The registry computed another digest for what we sent and refused it.
    #[error(
        "source blob {digest} does not match its digest (the registry refused it: DIGEST_INVALID): the image on disk is corrupt"
    )]
    DigestRefused { digest: Digest },
    #[error("reading the source: {0}")]
    Source(#[source] std::io::Error),
    /// A descriptor's size is not the blob's: tagging the manifest would name an image no
    /// runtime can pull, so nothing is tagged.
    #[error(
        "blob {digest}: the manifest's descriptor says {descriptor} bytes, {whose} {actual}: not tagged (the manifest lies about the blob's size; rebuild or fix the image)"
    )]
    SizeMismatch { digest: Digest, descriptor: u64, whose: &'static str, actual: u64 },
    /// The overall bound of an operation ran out, retries and waits included: final.
    #[error("{registry}: gave up after {:.1} s ({bound}): {last}", .waited.as_secs_f64())]
    GaveUp { registry: String, waited: std::time::Duration, bound: String, last: String },
}

fn hint_for(status: u16) -> &'static str {
    if status == 413 {
        " (a proxy in front of the registry limits request bodies: set `client_max_body_size 0;` in nginx)"
    } else {
        ""
    }
}

impl RegistryError {
    pub fn retryable(&self) -> bool {
        match self {
            RegistryError::Transport { .. } | RegistryError::Throttled { .. } => true,
            RegistryError::Api { status, code, .. } => {
                crate::retry::classify(reqwest::StatusCode::from_u16(*status).unwrap_or(reqwest::StatusCode::OK))
                    == crate::retry::Class::Retry
                    || *code == ErrorCode::BlobUploadUnknown
            }
            _ => false,
        }
    }

    /// The registry could not be reached at all: worth waiting for (within the deadline).
    fn unreachable(&self) -> bool {
        matches!(self, RegistryError::Transport { connect: true, .. })
    }

    /// The upload session is gone: the blob starts again from its first byte.
    fn session_lost(registry: &str, message: String) -> RegistryError {
        RegistryError::Api { registry: registry.to_string(), status: 404, code: ErrorCode::BlobUploadUnknown, message }
    }
}

/// Where a registry is and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `host[:port]`; `docker.io` is reached at `registry-1.docker.io`.
    pub host: String,
    /// Plain HTTP; only ever allowed for loopback hosts.
    pub insecure: bool,
}

impl Endpoint {
    pub fn scheme(&self) -> &'static str {
        if self.insecure { "http" } else { "https" }
    }

    fn base_url(&self) -> Result<Url, RegistryError> {
        if self.insecure && !is_loopback_host(&self.host) {
            return Err(RegistryError::Refused {
                registry: self.host.clone(),
                message: "plain HTTP is only allowed for loopback registries".into(),
            });
        }
        let host = if self.host == crate::reference::DOCKER_HUB { "registry-1.docker.io" } else { &self.host };
        Url::parse(&format!("{}://{host}/", self.scheme())).map_err(|e| RegistryError::Refused {
            registry: self.host.clone(),
            message: format!("not a valid registry address: {e}"),
        })
    }
}

/// A registry this run can talk to: its address, the CA it is checked against, the credential
/// it gets and the run's client configuration. Built from a target of the plan, from
/// `publish push`'s flags or from a `docker://` source; every registry client is made by
/// [`RegistryAccess::client`].
#[derive(Debug, Clone)]
pub struct RegistryAccess {
    pub endpoint: Endpoint,
    pub ca_file: Option<PathBuf>,
    pub credential: Option<Credential>,
    pub config: ClientConfig,
}

impl RegistryAccess {
    /// A client for `repository` on this registry.
    pub fn client(&self, repository: &str) -> Result<Client, RegistryError> {
        Client::new(self, repository)
    }

    /// The same registry without a credential (anonymous pulls, as RunPod makes them).
    pub fn anonymous(&self) -> RegistryAccess {
        RegistryAccess { credential: None, ..self.clone() }
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
    /// The `Authorization` value in use (Basic or Bearer) and the origin of the token realm
    /// it may also go to, once the challenge is known.
    authorization: Mutex<Option<Secret>>,
    /// Timeouts, retries and the in-flight limit: the run's, handed in.
    config: ClientConfig,
}

impl Client {
    fn new(access: &RegistryAccess, repository: &str) -> Result<Client, RegistryError> {
        let RegistryAccess { endpoint, ca_file, credential, config } = access;
        let base = endpoint.base_url()?;
        let http = config
            .http(ca_file.as_deref())
            .map_err(|e| RegistryError::Refused { registry: endpoint.host.clone(), message: e.to_string() })?;
        Ok(Client {
            http,
            base,
            registry: endpoint.host.clone(),
            repository: repository.to_string(),
            scope: format!("repository:{repository}:pull,push"),
            mode: UploadMode::Monolithic,
            credential: credential.clone(),
            authorization: Mutex::new(None),
            config: *config,
        })
    }

    /// A client for another repository of the same registry, sharing this one's connection
    /// pool and TLS set-up; it authenticates afresh, for its own scope.
    pub fn for_repository(&self, repository: &str) -> Client {
        Client {
            http: self.http.clone(),
            base: self.base.clone(),
            registry: self.registry.clone(),
            repository: repository.to_string(),
            scope: format!("repository:{repository}:pull,push"),
            mode: self.mode,
            credential: self.credential.clone(),
            authorization: Mutex::new(None),
            config: self.config,
        }
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

    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The run's client configuration this client was built with.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// How this client retries (from its configuration).
    fn retry(&self) -> RetryPolicy {
        self.config.retry()
    }
}
