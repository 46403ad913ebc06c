//! A signer made ready before anything is pushed: a key loaded (a wrong password is found
//! offline), or keyless endpoints whose session (OIDC token and Fulcio certificate) starts at
//! the first signature and serves the rest of the run. `publish run` and `publish sign` both
//! prepare theirs here.

use super::{KeySigner, SignError, Signer, keyless, rekor::Rekor};
use crate::credentials::Env;
use crate::http::ClientConfig;
use crate::types::Secret;

/// Why a signer could not be prepared: a usage mistake (exit 2), found before any network call.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PrepareError(pub String);

// One per run: its size does not matter.
#[allow(clippy::large_enum_variant)]
pub enum PreparedSigner {
    /// A key, and the Rekor it logs in when the transparency log is on.
    Key(KeySigner, Option<Rekor>),
    Keyless(Keyless),
}

/// Keyless endpoints and the OIDC token's source; the session starts at the first signature.
pub struct Keyless {
    endpoints: keyless::Endpoints,
    oidc: keyless::Oidc,
    config: ClientConfig,
    session: tokio::sync::OnceCell<keyless::Session>,
}

impl PreparedSigner {
    /// Loads `key` (a path or `env://VAR`) with the password in `password_var`; `rekor` logs
    /// each signature there.
    pub fn key(
        key: &str,
        password_var: &str,
        rekor: Option<&str>,
        env: &Env,
        config: &ClientConfig,
    ) -> Result<PreparedSigner, PrepareError> {
        let password = env.get(password_var).ok_or_else(|| {
            PrepareError(format!("environment variable {password_var} (the signing key's password) is not set"))
        })?;
        let rekor = rekor.map(|url| Rekor::new(url, config)).transpose().map_err(|e| PrepareError(e.to_string()))?;
        let key = KeySigner::load(key, &Secret::new(password.clone()), env).map_err(|e| PrepareError(e.to_string()))?;
        Ok(PreparedSigner::Key(key, rekor))
    }

    /// The signer a plan's `signing` asks for: its key loaded (its password from the variable
    /// the plan names), or keyless with the plan's Fulcio and Rekor.
    pub fn for_plan(
        s: &crate::plan::SigningPlan,
        env: &Env,
        config: &ClientConfig,
    ) -> Result<PreparedSigner, PrepareError> {
        match (s.method, &s.key) {
            (crate::plan::SignMethod::Key, Some(key)) => {
                let var = s.password_env.as_deref().unwrap_or(super::keys::COSIGN_PASSWORD);
                let rekor = s.rekor_url.as_deref().filter(|_| s.tlog);
                PreparedSigner::key(key, var, rekor, env, config)
            }
            _ => {
                let defaults = keyless::Endpoints::default();
                let endpoints = keyless::Endpoints {
                    fulcio: s.fulcio_url.clone().unwrap_or(defaults.fulcio),
                    rekor: s.rekor_url.clone().unwrap_or(defaults.rekor),
                };
                PreparedSigner::keyless(endpoints, env, config)
            }
        }
    }

    /// Keyless through GitHub's OIDC token: its prerequisites are checked now.
    pub fn keyless(
        endpoints: keyless::Endpoints,
        env: &Env,
        config: &ClientConfig,
    ) -> Result<PreparedSigner, PrepareError> {
        let oidc = keyless::check_prerequisites(env).map_err(|e| PrepareError(e.to_string()))?;
        let session = tokio::sync::OnceCell::new();
        Ok(PreparedSigner::Keyless(Keyless { endpoints, oidc, config: *config, session }))
    }

    pub async fn signer(&self) -> Result<Signer<'_>, SignError> {
        Ok(match self {
            PreparedSigner::Key(k, rekor) => Signer::Key(k, rekor.as_ref()),
            PreparedSigner::Keyless(k) => Signer::Keyless(
                k.session.get_or_try_init(|| keyless::Session::start(&k.endpoints, &k.oidc, &k.config)).await?,
            ),
        })
    }
}
