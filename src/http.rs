//! The one HTTP client builder for the program (user agent, timeouts, CA, redirect rules)
//! and the retry policy value every remote client uses.

use std::path::Path;
use std::time::Duration;

use crate::reference::is_loopback_host;

pub const USER_AGENT: &str = concat!("publish/", env!("CARGO_PKG_VERSION"));

/// Builds an HTTP client. `extra_ca` adds a PEM CA (or bundle) to the system's roots.
///
/// Redirects: reqwest drops `Authorization` when a redirect leaves the original host, port or
/// scheme, so credentials never follow a blob download to object storage; on top of that a
/// redirect from HTTPS to plain HTTP on a non-loopback host is refused outright.
pub fn client(extra_ca: Option<&Path>) -> anyhow::Result<reqwest::Client> {
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
        .connect_timeout(settings().connect_timeout)
        .read_timeout(settings().read_timeout)
        .redirect(policy);
    if let Some(ca) = extra_ca {
        let pem = std::fs::read(ca).map_err(|e| anyhow::anyhow!("cannot read CA file {}: {e}", ca.display()))?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| anyhow::anyhow!("CA file {} is not PEM: {e}", ca.display()))?
        {
            builder = builder.add_root_certificate(cert);
        }
    }
    Ok(builder.build()?)
}

/// How often and how patiently to retry. Tests shrink the delays with
/// `PUBLISH_RETRY_BASE_MS` (the one setting that does so).
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub base: Duration,
    pub max: Duration,
    pub jitter: bool,
}

/// Transfer settings for the whole run (the policy's `transfer:`), set once at start.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub attempts: u32,
    pub max_delay: Duration,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    /// Blobs uploaded at once to one registry.
    pub concurrency: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            attempts: 4,
            max_delay: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(300),
            concurrency: 4,
        }
    }
}

static SETTINGS: std::sync::OnceLock<Settings> = std::sync::OnceLock::new();

/// Sets the run's transfer settings; the first call wins.
pub fn configure(settings: Settings) {
    let _ = SETTINGS.set(settings);
}

pub fn settings() -> Settings {
    SETTINGS.get().copied().unwrap_or_default()
}

impl Default for RetryPolicy {
    fn default() -> Self {
        let base = std::env::var("PUBLISH_RETRY_BASE_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map_or(Duration::from_millis(500), Duration::from_millis);
        let s = settings();
        RetryPolicy { attempts: s.attempts.max(1), base, max: s.max_delay, jitter: true }
    }
}

impl RetryPolicy {
    /// The wait before retry number `attempt` (1-based): exponential, capped, with up to 50% jitter.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self.base.saturating_mul(1u32 << attempt.saturating_sub(1).min(16)).min(self.max);
        if !self.jitter {
            return exp;
        }
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        exp.mul_f64(0.5 + f64::from(nanos % 1000) / 2000.0)
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
        };
        let d: Vec<u128> = (1..=4).map(|a| p.delay(a).as_millis()).collect();
        assert_eq!(d, vec![100, 200, 350, 350]);
    }
}
