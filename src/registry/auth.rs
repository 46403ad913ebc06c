//! Registry authentication: parsing `WWW-Authenticate` challenges, the ping and token
//! exchange (the token cached on the client for every later request), and credentials in
//! Docker's `config.json` (inline `auths`, `credHelpers`, `credsStore`). Secrets are wrapped
//! in `Secret` as soon as they are read.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use base64::Engine;
use reqwest::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use url::Url;

use super::{Client, RegistryError};
use crate::reference::is_loopback_host;
use crate::types::Secret;

impl Client {
    /// Pings `/v2/` and, on a challenge, obtains authorization for the client's scope.
    /// Fails with `Unauthorized` when the credentials are refused.
    pub async fn authenticate(&self) -> Result<(), RegistryError> {
        let resp = self.with_retries(Method::GET, self.url("v2/"), |r| r, false).await?;
        if resp.status().is_success() {
            return Ok(());
        }
        if resp.status() != StatusCode::UNAUTHORIZED {
            return Err(self.api_error(resp).await);
        }
        let challenge =
            parse_challenge(resp.headers().get_all(WWW_AUTHENTICATE).iter().filter_map(|v| v.to_str().ok()));
        match challenge {
            Some(Challenge::Basic) | None => {
                let Some(cred) = &self.credential else {
                    return Err(RegistryError::Unauthorized {
                        registry: self.registry.clone(),
                        detail: " (the registry wants credentials and none were found)".into(),
                    });
                };
                if self.base.scheme() == "http" && !self.base.host_str().is_some_and(is_loopback_host) {
                    return Err(RegistryError::Refused {
                        registry: self.registry.clone(),
                        message: "refusing to send credentials over plain HTTP".into(),
                    });
                }
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

    pub(super) fn authorization(&self) -> Option<Secret> {
        self.authorization.lock().ok().and_then(|a| a.clone())
    }

    /// A token from the realm the challenge names (the one other origin the credentials go to).
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
        let reply: TokenReply =
            crate::http::json_limited(resp, crate::http::MAX_SMALL_BODY).await.map_err(|e| RegistryError::Refused {
                registry: self.registry.clone(),
                message: format!("token service {realm_host}: {e}"),
            })?;
        reply.token.or(reply.access_token).map(Secret::new).ok_or_else(|| RegistryError::Refused {
            registry: self.registry.clone(),
            message: format!("the token service {realm_host} answered without a token"),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer { realm: String, service: Option<String>, scope: Option<String> },
}

/// The challenge to answer among a `WWW-Authenticate` header's (RFC 9110 §11.6.1: one header
/// may hold several, and so may several headers): Bearer when offered (a token scoped to the
/// repository), else Basic. Parsed by `http-auth` (quoted strings with escapes, commas inside
/// them, parameters in any case); an unparsable header counts as no challenge.
pub fn parse_challenge<'a>(headers: impl IntoIterator<Item = &'a str>) -> Option<Challenge> {
    let mut basic = false;
    for header in headers {
        for challenge in http_auth::ChallengeParser::new(header) {
            let Ok(c) = challenge else { break };
            if c.scheme.eq_ignore_ascii_case("basic") {
                basic = true;
            } else if c.scheme.eq_ignore_ascii_case("bearer") {
                let param = |k: &str| {
                    c.params.iter().find(|(name, _)| name.eq_ignore_ascii_case(k)).map(|(_, v)| v.to_unescaped())
                };
                let Some(realm) = param("realm") else { continue };
                return Some(Challenge::Bearer { realm, service: param("service"), scope: param("scope") });
            }
        }
    }
    basic.then_some(Challenge::Basic)
}

/// A username and password (or token) for one registry.
#[derive(Debug, Clone)]
pub struct Credential {
    pub username: String,
    pub password: Secret,
}

impl Credential {
    pub fn basic_header(&self) -> Secret {
        let raw = format!("{}:{}", self.username, self.password.expose());
        Secret::new(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw)))
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DockerConfig {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
    #[serde(default)]
    cred_helpers: HashMap<String, String>,
    #[serde(default)]
    creds_store: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// The keys Docker may have stored credentials for `host` under.
fn host_aliases(host: &str) -> Vec<&str> {
    if host == crate::reference::DOCKER_HUB {
        vec!["https://index.docker.io/v1/", "index.docker.io", "docker.io", "registry-1.docker.io"]
    } else {
        vec![host]
    }
}

fn normalize_key(key: &str) -> &str {
    let k = key.strip_prefix("https://").or_else(|| key.strip_prefix("http://")).unwrap_or(key);
    k.split('/').next().unwrap_or(k)
}

/// Looks up credentials for `host` in Docker's config at `path`. `Ok(None)` when there are none.
pub fn from_docker_config(path: &Option<std::path::PathBuf>, host: &str) -> anyhow::Result<Option<Credential>> {
    let Some(path) = path.as_deref() else {
        return Ok(None);
    };
    if !path.exists() {
        return Ok(None);
    }
    let text = crate::http::read_file_limited(path, crate::http::MAX_SMALL_BODY).map_err(|e| anyhow::anyhow!(e))?;
    let config: DockerConfig = serde_json::from_slice(&text).map_err(|e| {
        anyhow::anyhow!("{} is not valid JSON (line {}, column {})", path.display(), e.line(), e.column())
    })?;
    let path: &Path = path;
    let aliases = host_aliases(host);
    let matches = |key: &str| aliases.contains(&key) || aliases.contains(&normalize_key(key));
    if let Some((_, helper)) = config.cred_helpers.iter().find(|(k, _)| matches(k)) {
        return run_helper(helper, host);
    }
    if let Some((_, entry)) = config.auths.iter().find(|(k, _)| matches(k)) {
        if let (Some(u), Some(p)) = (&entry.username, &entry.password) {
            return Ok(Some(Credential { username: u.clone(), password: Secret::new(p.clone()) }));
        }
        if let Some(auth) = &entry.auth {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| {
                    anyhow::anyhow!("{}: the auth entry for {host} is not base64 user:password", path.display())
                })?;
            let (u, p) = decoded
                .split_once(':')
                .ok_or_else(|| anyhow::anyhow!("{}: the auth entry for {host} is not user:password", path.display()))?;
            return Ok(Some(Credential { username: u.to_string(), password: Secret::new(p) }));
        }
    }
    match &config.creds_store {
        Some(store) if !store.is_empty() => run_helper(store, host),
        _ => Ok(None),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HelperReply {
    username: String,
    secret: String,
}

/// A helper's answer is a few hundred bytes: it gets 64 KiB and 30 s.
const MAX_HELPER_ANSWER: u64 = 64 * 1024;
const HELPER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs `docker-credential-<helper> get` with the host on stdin, as Docker does. The protocol
/// (docker/docker-credential-helpers: the server on stdin, `{"Username", "Secret"}` on stdout)
/// is a few lines; the one crate for it reads Docker's config its own way, past the origin
/// rules of `load_docker_config`. The answer is bounded in bytes and time; a helper that
/// overruns either is killed.
fn run_helper(helper: &str, host: &str) -> anyhow::Result<Option<Credential>> {
    use std::io::Read;
    let program = format!("docker-credential-{helper}");
    let server = if host == crate::reference::DOCKER_HUB { "https://index.docker.io/v1/" } else { host };
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot run credential helper {program}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(server.as_bytes())?;
    }
    // The answer is read on a thread; this one keeps the child, to kill it past the deadline.
    let (tx, rx) = std::sync::mpsc::channel();
    if let Some(stdout) = child.stdout.take() {
        std::thread::spawn(move || {
            let mut out = Vec::new();
            let _ = stdout.take(MAX_HELPER_ANSWER + 1).read_to_end(&mut out);
            let _ = tx.send(out);
        });
    }
    let out = match rx.recv_timeout(HELPER_TIMEOUT) {
        Ok(out) if out.len() as u64 <= MAX_HELPER_ANSWER => out,
        answer => {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!(
                "credential helper {program} {} for {host}",
                if answer.is_ok() {
                    format!("answered more than {MAX_HELPER_ANSWER} bytes")
                } else {
                    format!("did not answer within {} s", HELPER_TIMEOUT.as_secs())
                }
            );
        }
    };
    let status = child.wait()?;
    if !status.success() {
        let msg = String::from_utf8_lossy(&out).trim().to_string();
        if msg.contains("credentials not found") {
            return Ok(None);
        }
        anyhow::bail!("credential helper {program} failed for {host} ({status})");
    }
    let reply: HelperReply = serde_json::from_slice(&out).map_err(|_| {
        anyhow::anyhow!("credential helper {program} answered something other than its JSON for {host}")
    })?;
    Ok(Some(Credential { username: reply.username, password: Secret::new(reply.secret) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_and_basic() {
        let one = |h: &str| parse_challenge([h]);
        let c = one(r#"Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:o/n:pull""#);
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://ghcr.io/token".into(),
                service: Some("ghcr.io".into()),
                scope: Some("repository:o/n:pull".into())
            })
        );
        assert_eq!(one(r#"Basic realm="Registry Realm""#), Some(Challenge::Basic));
        assert_eq!(one("Negotiate"), None);
        // Several challenges in one header, or over several headers: Bearer wins.
        let both = one(r#"Basic realm="r", Bearer realm="https://a/token",service="a""#);
        assert!(matches!(both, Some(Challenge::Bearer { ref realm, .. }) if realm == "https://a/token"), "{both:?}");
        let headers = parse_challenge([r#"Basic realm="r""#, r#"Bearer realm="https://b/token""#]);
        assert!(matches!(headers, Some(Challenge::Bearer { ref realm, .. }) if realm == "https://b/token"));
        // Escaped quotes, commas inside quotes, parameters in any case.
        let escaped = one(r#"bearer Realm="https://c/t",scope="repository:a/b:pull,push",service="x\"y""#);
        assert_eq!(
            escaped,
            Some(Challenge::Bearer {
                realm: "https://c/t".into(),
                service: Some("x\"y".into()),
                scope: Some("repository:a/b:pull,push".into())
            })
        );
    }

    proptest::proptest! {
        /// Whatever a registry sends, parsing ends without a panic; a well-formed Bearer
        /// challenge with any quoted values reads back exactly.
        #[test]
        fn challenges_never_panic_and_quoted_values_read_back(
            junk in "\\PC{0,200}",
            realm in "[ -~]{1,40}",
            scope in "[ -~]{0,40}",
        ) {
            let _ = parse_challenge([junk.as_str()]);
            let quote = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
            let header = format!(r#"Bearer realm="{}",scope="{}""#, quote(&realm), quote(&scope));
            let parsed = parse_challenge([header.as_str()]);
            proptest::prop_assert_eq!(
                parsed,
                Some(Challenge::Bearer { realm: realm.clone(), service: None, scope: Some(scope.clone()) })
            );
        }
    }

    #[test]
    fn normalizes_config_keys() {
        assert_eq!(normalize_key("https://127.0.0.1:5000/v2/"), "127.0.0.1:5000");
        assert_eq!(normalize_key("ghcr.io"), "ghcr.io");
    }
}
