//! The one request path of the registry client: URLs, the origin rule for credentials,
//! retries (through `crate::retry`'s classification), re-authentication on 401, and turning
//! answers into `RegistryError`s with bounded bodies.

use reqwest::header::{AUTHORIZATION, LOCATION};
use reqwest::{Method, StatusCode};
use url::Url;

use super::{Client, ErrorCode, RegistryError};
use crate::retry::{self, Class};

/// Scheme, host and port: credentials go only to the registry's own origin.
pub(super) fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme() && a.host_str() == b.host_str() && a.port_or_known_default() == b.port_or_known_default()
}

impl Client {
    pub(super) fn url(&self, path: &str) -> Url {
        // Paths are built from validated repository names and digests only.
        self.base.join(path).unwrap_or_else(|_| self.base.clone())
    }

    /// Adds the registry's `Authorization` to a request for `url` when, and only when, `url` is
    /// on the registry's origin. An upload `Location` or a blob URL elsewhere gets none.
    pub(super) fn authorize(&self, req: reqwest::RequestBuilder, url: &Url) -> reqwest::RequestBuilder {
        if !same_origin(url, &self.base) {
            tracing::debug!(host = url.host_str().unwrap_or(""), "another origin: sent without credentials");
            return req;
        }
        match self.authorization() {
            Some(a) => req.header(AUTHORIZATION, a.expose()),
            None => req,
        }
    }

    pub(super) fn transport_error(&self, e: reqwest::Error) -> RegistryError {
        let connect = e.is_connect();
        // reqwest's message carries the URL but never headers.
        let mut message = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            message = format!("{message}: {s}");
            source = s.source();
        }
        if message.contains("InvalidContentType") || message.contains("corrupt message") {
            // rustls read a plain-HTTP answer where a TLS record was expected: trying again
            // cannot help, so this is not a transport error (which is retried).
            message.push_str(" (the registry answers plain HTTP: for a loopback registry set insecure: true in the policy (--insecure on the command line), else use its HTTPS port)");
            return RegistryError::Refused { registry: self.registry.clone(), message };
        }
        if e.is_timeout() {
            message.push_str(" (the request's deadline passed: transfer.request_timeout, transfer.min_rate)");
        }
        RegistryError::Transport { registry: self.registry.clone(), message, connect }
    }

    pub(super) async fn api_error(&self, resp: reqwest::Response) -> RegistryError {
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED {
            return RegistryError::Unauthorized { registry: self.registry.clone(), detail: String::new() };
        }
        let retry_after = retry::retry_after(resp.headers());
        let html = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/html"));
        let body = crate::http::body_limited(resp, crate::http::MAX_SMALL_BODY).await.unwrap_or_default();
        let body = String::from_utf8_lossy(&body);
        // An HTML error page (a proxy's) says nothing the status does not.
        let short = if html { String::new() } else { body.chars().take(200).collect::<String>().trim().to_string() };
        if let Some(wait) = retry_after
            && (status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE)
        {
            return RegistryError::Throttled {
                registry: self.registry.clone(),
                status: status.as_u16(),
                message: short,
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
            Ok(e) if !e.errors.is_empty() => (ErrorCode::parse(&e.errors[0].code), e.errors[0].message.clone()),
            _ => {
                (ErrorCode::Other(status.canonical_reason().unwrap_or("error").to_uppercase().replace(' ', "_")), short)
            }
        };
        RegistryError::Api { registry: self.registry.clone(), status: status.as_u16(), code, message }
    }

    /// One try: builds the request, adds the authorization when `auth` (origin permitting),
    /// and turns the answers `retry::classify` calls retryable into errors.
    pub(super) async fn attempt(
        &self,
        method: &Method,
        url: &Url,
        build: &impl Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
        auth: bool,
    ) -> Result<reqwest::Response, RegistryError> {
        // A small request's deadline; an upload's builder sets its own, scaled by size.
        let mut req = build(self.http.request(method.clone(), url.clone()).timeout(self.config.request_timeout));
        if auth {
            req = self.authorize(req, url);
        }
        tracing::debug!(%method, url = %url.path(), "registry request");
        match req.send().await {
            Ok(resp) if retry::classify(resp.status()) == Class::Retry => Err(self.api_error(resp).await),
            Ok(resp) => Ok(resp),
            Err(e) => Err(self.transport_error(e)),
        }
    }

    /// Retries transient failures with backoff. Only for requests whose body can be built again.
    /// The whole, attempts and waits, ends within `transfer.request_timeout` × 2.5: the
    /// attempt in flight is cut and a wait (however long the server asked for) is shortened.
    pub(super) async fn with_retries(
        &self,
        method: Method,
        url: Url,
        build: impl Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
        auth: bool,
    ) -> Result<reqwest::Response, RegistryError> {
        self.retries_within(&self.request_bound(), method, url, build, auth).await
    }

    /// `with_retries` within a bound the caller holds (one for a request and its retry after
    /// re-authenticating).
    async fn retries_within<F: Fn() -> String>(
        &self,
        bound: &Bound<F>,
        method: Method,
        url: Url,
        build: impl Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
        auth: bool,
    ) -> Result<reqwest::Response, RegistryError> {
        let request_timeout = self.config.request_timeout;
        let mut attempt = 0;
        loop {
            attempt += 1;
            // Late in the bound, an attempt (its answer's body included) gets only what is left.
            let remaining = bound.remaining();
            let capped = |r: reqwest::RequestBuilder| {
                let r = build(r);
                if remaining < request_timeout {
                    r.timeout(remaining.max(std::time::Duration::from_millis(1)))
                } else {
                    r
                }
            };
            let result = bound
                .cut(self, &format!("{method} {}", url.path()), self.attempt(&method, &url, &capped, auth))
                .await?;
            match result {
                Err(error) if self.should_retry(&error, attempt, bound.started, bound.limit) => {
                    let wait = self.backoff(&error, attempt);
                    tracing::warn!(registry = %self.registry, %error, ?wait, "retrying");
                    bound.sleep(self, wait, &error).await?;
                }
                // Out of time, or asked to wait by a server that kept saying so: final, so that
                // no caller starts the same wait again.
                Err(error)
                    if error.retryable()
                        && (matches!(error, RegistryError::Throttled { .. })
                            || bound.started.elapsed() + self.backoff(&error, attempt) >= bound.limit) =>
                {
                    return Err(bound.gave_up(self, &error));
                }
                other => return other,
            }
        }
    }

    /// Whether to try again after `error` on try `attempt` of something begun at `started`:
    /// a retryable error within the attempts, or an unreachable registry (a restart) until
    /// `deadline`; never past it.
    pub(super) fn should_retry(
        &self,
        error: &RegistryError,
        attempt: u32,
        started: std::time::Instant,
        deadline: std::time::Duration,
    ) -> bool {
        let within = started.elapsed() + self.backoff(error, attempt) < deadline;
        // An unreachable registry (restarting, say) gets twice the attempts, still within the deadline.
        let attempts = if error.unreachable() { self.retry().attempts * 2 } else { self.retry().attempts };
        within && error.retryable() && attempt < attempts
    }

    /// How long to wait before retry `attempt` after `error`.
    pub(super) fn backoff(&self, error: &RegistryError, attempt: u32) -> std::time::Duration {
        let asked = match error {
            RegistryError::Throttled { wait, .. } => Some(*wait),
            _ => None,
        };
        self.retry().wait(attempt, asked)
    }

    /// The bound of a small request with its retries: `transfer.request_timeout` × 2.5.
    pub(super) fn request_bound(&self) -> Bound<impl Fn() -> String + use<>> {
        let retry = self.retry();
        Bound::new(retry.deadline(), move || retry.bound_text())
    }

    /// Sends an authorized request, retrying transient failures and re-authenticating once
    /// on 401 (tokens expire during long pushes).
    pub(super) async fn send(
        &self,
        method: Method,
        url: Url,
        build: impl Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, RegistryError> {
        // One bound for the request, its retries and its one retry after re-authenticating.
        let bound = self.request_bound();
        let resp = self.retries_within(&bound, method.clone(), url.clone(), &build, true).await?;
        let resp = if retry::classify(resp.status()) == Class::Reauthenticate {
            bound.cut(self, "re-authenticating", self.authenticate()).await??;
            self.retries_within(&bound, method.clone(), url.clone(), &build, true).await?
        } else {
            resp
        };
        // A write redirected to another origin did not land where it was meant to.
        if !matches!(method, Method::GET | Method::HEAD) && !same_origin(resp.url(), &url) {
            return Err(RegistryError::Refused {
                registry: self.registry.clone(),
                message: format!("{method} {} was redirected to another origin: refused", url.path()),
            });
        }
        Ok(resp)
    }

    /// The `Location` of an answer, resolved against the request (it may be relative).
    pub(super) fn location(&self, request: &Url, resp: &reqwest::Response) -> Result<Url, RegistryError> {
        let value =
            resp.headers().get(LOCATION).and_then(|v| v.to_str().ok()).ok_or_else(|| RegistryError::Refused {
                registry: self.registry.clone(),
                message: "upload started without a Location header".into(),
            })?;
        request.join(value).map_err(|e| RegistryError::Refused {
            registry: self.registry.clone(),
            message: format!("upload Location {value:?} is not a URL: {e}"),
        })
    }
}

/// An operation's overall deadline: every attempt is cut at it, every wait ends at it, and
/// the error says how long it waited and which setting bounds it.
pub(super) struct Bound<F: Fn() -> String> {
    pub started: std::time::Instant,
    pub limit: std::time::Duration,
    setting: F,
}

impl<F: Fn() -> String> Bound<F> {
    pub fn new(limit: std::time::Duration, setting: F) -> Self {
        Bound { started: std::time::Instant::now(), limit, setting }
    }

    pub fn remaining(&self) -> std::time::Duration {
        self.limit.saturating_sub(self.started.elapsed())
    }

    pub fn gave_up(&self, client: &Client, last: &dyn std::fmt::Display) -> RegistryError {
        RegistryError::GaveUp {
            registry: client.registry.clone(),
            waited: self.started.elapsed(),
            bound: (self.setting)(),
            last: last.to_string(),
        }
    }

    /// Runs `work`, cut when the deadline passes (`Err` then; `what` names the request cut).
    pub async fn cut<T>(
        &self,
        client: &Client,
        what: &str,
        work: impl std::future::Future<Output = T>,
    ) -> Result<T, RegistryError> {
        tokio::time::timeout(self.remaining(), work)
            .await
            .map_err(|_| self.gave_up(client, &format!("{what} had not finished when the deadline passed")))
    }

    /// Waits `wait`, or until the deadline, which then ends the operation with `last`.
    pub async fn sleep(
        &self,
        client: &Client,
        wait: std::time::Duration,
        last: &RegistryError,
    ) -> Result<(), RegistryError> {
        let remaining = self.remaining();
        if wait >= remaining {
            tokio::time::sleep(remaining).await;
            return Err(self.gave_up(client, last));
        }
        tokio::time::sleep(wait).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_compare_scheme_host_and_port() {
        let u = |s: &str| Url::parse(s).unwrap();
        assert!(same_origin(&u("https://r.example/v2/"), &u("https://r.example:443/v2/x/blobs/uploads/1")));
        assert!(!same_origin(&u("https://r.example/"), &u("http://r.example/")));
        assert!(!same_origin(&u("http://127.0.0.1:5000/"), &u("http://127.0.0.1:5001/")));
        assert!(!same_origin(&u("https://r.example/"), &u("https://storage.example/")));
    }
}
