//! One retry policy and one classification of answers for every remote client: registries,
//! RunPod, Docker Hub's API, ECR Public and STS, Fulcio, Rekor, the Actions OIDC endpoint,
//! GitHub's REST API.
//! As regclient's `reghttp` does: 401 → authenticate again (once); 408, 429 and 5xx → back
//! off (honouring `Retry-After` when given); everything else is final.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};

/// How often and how patiently to retry: a value (`ClientConfig::retry` builds it from the
/// policy's `transfer:`), so tests can shrink its delays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub base: Duration,
    pub max: Duration,
    pub jitter: bool,
    /// The whole of one small request; the request and its retries end within 2.5 × this.
    pub request_timeout: Duration,
}

impl RetryPolicy {
    /// How long a small request may keep being retried: two and a half times its timeout.
    pub fn deadline(&self) -> Duration {
        self.request_timeout.mul_f64(2.5)
    }

    /// The settings that bound a small request and its retries, as an error names them.
    pub fn bound_text(&self) -> String {
        format!(
            "transfer.request_timeout: {} s per request, {} s with retries",
            self.request_timeout.as_secs(),
            self.deadline().as_secs()
        )
    }

    /// The wait before retry number `attempt` (1-based): exponential, capped, with up to 50% jitter.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self.base.saturating_mul(1u32 << attempt.saturating_sub(1).min(16)).min(self.max);
        if !self.jitter {
            return exp;
        }
        // Half to all of the backoff, so that clients failing together do not retry together.
        exp.mul_f64(0.5 + fastrand::f64() / 2.0)
    }

    /// The wait before retry `attempt`: what the server asked for (capped), else the backoff.
    pub fn wait(&self, attempt: u32, asked: Option<Duration>) -> Duration {
        asked.map_or_else(|| self.delay(attempt), |w| w.min(self.max))
    }
}

/// What to do with an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// 1xx–3xx, and 4xx the caller interprets (404 is an answer, not a failure).
    Done,
    /// 401: the token expired or was never asked for; authenticate, then once more.
    Reauthenticate,
    /// 408, 429, 5xx: wait and try again.
    Retry,
}

pub fn classify(status: StatusCode) -> Class {
    match status.as_u16() {
        401 => Class::Reauthenticate,
        408 | 429 => Class::Retry,
        // 501 Not Implemented will not change on a retry.
        501 => Class::Done,
        s if s >= 500 => Class::Retry,
        _ => Class::Done,
    }
}

/// `Retry-After` in seconds (only in the distribution spec's draft: honoured, never required).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers.get(RETRY_AFTER)?.to_str().ok()?.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Whether a transport error may succeed on another try (connection refused or reset, a
/// timeout); a malformed request or a refused redirect will not.
pub fn transport_retryable(e: &reqwest::Error) -> bool {
    !(e.is_builder() || e.is_redirect() || e.is_decode())
}

/// Why `send` gave up.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The last attempt's transport error, the attempts used up.
    #[error("{0}")]
    Transport(#[from] reqwest::Error),
    /// The overall bound ran out, or the server asked for a wait past it: final, with how
    /// long it waited and which setting bounds it.
    #[error("{what}: gave up after {:.1} s ({setting}): {last}", .waited.as_secs_f64())]
    GaveUp { what: String, waited: Duration, setting: String, last: String },
}

/// Sends a request built by `build` (called once per attempt), retrying transport errors and
/// 408/429/5xx answers with backoff. Returns the last answer, whatever its status: the caller
/// reads it. For clients without a 401 rule (API keys, one-shot tokens). The whole ends within
/// `transfer.request_timeout` × 2.5: each attempt gets at most what is left, and a wait that
/// does not fit (a server asking for longer) ends it at once with `SendError::GaveUp`.
pub async fn send(
    policy: &RetryPolicy,
    what: &str,
    build: impl Fn() -> reqwest::RequestBuilder,
) -> Result<reqwest::Response, SendError> {
    let limit = policy.deadline();
    let started = std::time::Instant::now();
    let remaining = || limit.saturating_sub(started.elapsed());
    let gave_up = |last: String| SendError::GaveUp {
        what: what.to_string(),
        waited: started.elapsed(),
        setting: policy.bound_text(),
        last,
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let last = attempt >= policy.attempts;
        // reqwest's own timeout, so that a cut attempt is an ordinary timeout error.
        let req = build().timeout(policy.request_timeout.min(remaining()).max(Duration::from_millis(1)));
        match req.send().await {
            Ok(resp) if classify(resp.status()) == Class::Retry && !last => {
                let asked = retry_after(resp.headers());
                let wait = policy.wait(attempt, asked);
                if wait >= remaining() {
                    let asked = asked.map(|a| format!(" (asked to wait {} s)", a.as_secs())).unwrap_or_default();
                    return Err(gave_up(format!("{}{asked}", resp.status())));
                }
                tracing::warn!(status = resp.status().as_u16(), ?wait, "retrying {what}");
                tokio::time::sleep(wait).await;
            }
            Err(e) if transport_retryable(&e) && !last => {
                let wait = policy.delay(attempt);
                if wait >= remaining() {
                    return Err(gave_up(e.to_string()));
                }
                tracing::warn!(error = %e, ?wait, "retrying {what}");
                tokio::time::sleep(wait).await;
            }
            Ok(resp) => return Ok(resp),
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_cap() {
        let p = RetryPolicy {
            attempts: 5,
            base: Duration::from_millis(100),
            max: Duration::from_millis(350),
            jitter: false,
            request_timeout: Duration::from_secs(1),
        };
        let d: Vec<u128> = (1..=4).map(|a| p.delay(a).as_millis()).collect();
        assert_eq!(d, vec![100, 200, 350, 350]);
        assert_eq!(p.wait(1, Some(Duration::from_secs(60))), Duration::from_millis(350));
        assert_eq!(p.wait(1, Some(Duration::from_millis(5))), Duration::from_millis(5));
    }

    #[test]
    fn statuses_are_sorted_in_one_place() {
        let c = |s: u16| classify(StatusCode::from_u16(s).unwrap());
        assert_eq!(c(200), Class::Done);
        assert_eq!(c(404), Class::Done);
        assert_eq!(c(416), Class::Done);
        assert_eq!(c(401), Class::Reauthenticate);
        assert_eq!(c(408), Class::Retry);
        assert_eq!(c(429), Class::Retry);
        assert_eq!(c(502), Class::Retry);
        assert_eq!(c(503), Class::Retry);
        assert_eq!(c(501), Class::Done);
    }

    #[test]
    fn retry_after_is_read_in_seconds() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(RETRY_AFTER, "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }
}
