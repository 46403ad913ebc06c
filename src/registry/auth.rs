//! Registry authentication inputs: parsing `WWW-Authenticate` challenges and finding
//! credentials in Docker's `config.json` (inline `auths`, `credHelpers`, `credsStore`).
//! Secrets are wrapped in `Secret` as soon as they are read.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use base64::Engine;
use serde::Deserialize;

use crate::types::Secret;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer { realm: String, service: Option<String>, scope: Option<String> },
}

/// Parses a `WWW-Authenticate` header value (`Bearer realm="…",service="…"` or `Basic realm="…"`).
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let (scheme, params) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
    let mut map = HashMap::new();
    let mut rest = params.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let key = key.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, tail) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"')?;
            (&quoted[..end], &quoted[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        map.insert(key, value.to_string());
        rest = tail.trim_start().trim_start_matches(',').trim_start();
    }
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic),
        "bearer" => Some(Challenge::Bearer {
            realm: map.remove("realm")?,
            service: map.remove("service"),
            scope: map.remove("scope"),
        }),
        _ => None,
    }
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

fn docker_config_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json"))
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

/// Looks up credentials for `host` in Docker's config. `Ok(None)` when there are none.
pub fn from_docker_config(host: &str) -> anyhow::Result<Option<Credential>> {
    let Some(path) = docker_config_path() else {
        return Ok(None);
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => anyhow::bail!("cannot read {}: {e}", path.display()),
    };
    let config: DockerConfig =
        serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{} is not valid JSON: {e}", path.display()))?;
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

/// Runs `docker-credential-<helper> get` with the host on stdin, as Docker does.
fn run_helper(helper: &str, host: &str) -> anyhow::Result<Option<Credential>> {
    let program = format!("docker-credential-{helper}");
    let server = if host == crate::reference::DOCKER_HUB { "https://index.docker.io/v1/" } else { host };
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot run credential helper {program}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(server.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if msg.contains("credentials not found") {
            return Ok(None);
        }
        anyhow::bail!("credential helper {program} failed for {host} ({})", out.status);
    }
    let reply: HelperReply = serde_json::from_slice(&out.stdout).map_err(|_| {
        anyhow::anyhow!("credential helper {program} answered something other than its JSON for {host}")
    })?;
    Ok(Some(Credential { username: reply.username, password: Secret::new(reply.secret) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_and_basic() {
        let c =
            parse_challenge(r#"Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:o/n:pull""#);
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://ghcr.io/token".into(),
                service: Some("ghcr.io".into()),
                scope: Some("repository:o/n:pull".into())
            })
        );
        assert_eq!(parse_challenge(r#"Basic realm="Registry Realm""#), Some(Challenge::Basic));
        assert_eq!(parse_challenge("Negotiate"), None);
    }

    #[test]
    fn normalizes_config_keys() {
        assert_eq!(normalize_key("https://127.0.0.1:5000/v2/"), "127.0.0.1:5000");
        assert_eq!(normalize_key("ghcr.io"), "ghcr.io");
    }
}
