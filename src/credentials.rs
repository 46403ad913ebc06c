//! Where a registry's credentials come from: decided once, when the plan is built, from the
//! policy alone (never from the machine), and resolved to a secret only when the plan runs.
//!
//! The one lookup order, used by every command:
//! 1. the policy's `credentials:` (`username` + the variable named by `password_env`);
//! 2. Docker's config for the registry's host (`auths`, `credHelpers`, `credsStore`);
//! 3. the registry kind's ambient credential: `GITHUB_TOKEN` (user `GITHUB_ACTOR`) for GHCR,
//!    the AWS credential chain for ECR Public;
//! 4. none: the registry is contacted anonymously.
//!
//! The plan records the source (`{"from": "env", …}` or `{"from": "docker-config", …}`),
//! never a secret. This module does not read the process environment: callers pass it in.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::policy::{CredentialRef, RegistryKind};
use crate::registry::Credential;
use crate::types::Secret;

/// The environment a command runs with, captured once by the command layer.
pub type Env = BTreeMap<String, String>;

/// The ambient credential a registry kind falls back to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Ambient {
    /// `GITHUB_TOKEN`, user `GITHUB_ACTOR` (GHCR).
    GithubToken,
    /// The AWS credential chain, exchanged for a registry token (ECR Public).
    AwsChain,
}

/// Where one registry's credentials come from. Never holds a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "from", rename_all = "kebab-case")]
pub enum CredentialSource {
    /// The policy's `credentials:`: a username and the variable holding the password.
    Env { username: String, password_env: String },
    /// Docker's config for `host`; when it has none, `otherwise` (or anonymous).
    DockerConfig {
        host: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        otherwise: Option<Ambient>,
    },
}

/// A source resolved against the environment: what a client is built with.
#[derive(Debug, Clone)]
pub enum Resolved {
    Credential(Credential),
    /// ECR Public: a token is exchanged from the AWS chain when the push starts.
    AwsChain,
    Anonymous,
}

impl Resolved {
    pub fn credential(&self) -> Option<Credential> {
        match self {
            Resolved::Credential(c) => Some(c.clone()),
            _ => None,
        }
    }
}

/// A policy variable that is not set (a located policy error, exit 2).
#[derive(Debug, thiserror::Error)]
#[error("environment variable {variable} is not set")]
pub struct Missing {
    pub variable: String,
}

impl CredentialSource {
    /// The source for a registry, in the documented order.
    pub fn for_registry(kind: RegistryKind, host: &str, policy: Option<&CredentialRef>) -> Self {
        match policy {
            Some(c) => CredentialSource::Env { username: c.username.clone(), password_env: c.password_env.clone() },
            None => CredentialSource::DockerConfig {
                host: host.to_string(),
                otherwise: match kind {
                    RegistryKind::Ghcr => Some(Ambient::GithubToken),
                    RegistryKind::EcrPublic => Some(Ambient::AwsChain),
                    _ => None,
                },
            },
        }
    }

    /// The source for a host named on the command line: `--username`/`--password-env`, else
    /// Docker's config.
    pub fn for_cli(host: &str, username: Option<&str>, password_env: Option<&str>) -> Self {
        match (username, password_env) {
            (Some(u), Some(p)) => CredentialSource::Env { username: u.to_string(), password_env: p.to_string() },
            _ => CredentialSource::DockerConfig { host: host.to_string(), otherwise: None },
        }
    }

    /// Resolves the source to a secret. Only a missing policy variable is an error; a broken
    /// Docker config is a warning and counts as no entry.
    pub fn resolve(&self, env: &Env) -> Result<Resolved, Missing> {
        let var = |k: &str| env.get(k).filter(|v| !v.is_empty()).cloned();
        match self {
            CredentialSource::Env { username, password_env } => match var(password_env) {
                Some(p) => {
                    Ok(Resolved::Credential(Credential { username: username.clone(), password: Secret::new(p) }))
                }
                None => Err(Missing { variable: password_env.clone() }),
            },
            CredentialSource::DockerConfig { host, otherwise } => {
                match crate::registry::auth::from_docker_config(&docker_config_path(env), host) {
                    Ok(Some(c)) => return Ok(Resolved::Credential(c)),
                    Ok(None) => {}
                    Err(e) => tracing::warn!("ignoring Docker credentials for {host}: {e:#}"),
                }
                Ok(match otherwise {
                    Some(Ambient::GithubToken) => match var("GITHUB_TOKEN") {
                        Some(token) => Resolved::Credential(Credential {
                            username: var("GITHUB_ACTOR").unwrap_or_else(|| "github-actions".into()),
                            password: Secret::new(token),
                        }),
                        None => Resolved::Anonymous,
                    },
                    Some(Ambient::AwsChain) => Resolved::AwsChain,
                    None => Resolved::Anonymous,
                })
            }
        }
    }

    /// The variable a policy source needs, for offline checks.
    pub fn required_variable(&self) -> Option<&str> {
        match self {
            CredentialSource::Env { password_env, .. } => Some(password_env),
            CredentialSource::DockerConfig { .. } => None,
        }
    }

    /// One line for the plan's text output.
    pub fn describe(&self) -> String {
        match self {
            CredentialSource::Env { username, password_env } => format!("{username} / ${password_env}"),
            CredentialSource::DockerConfig { host, otherwise } => {
                let then = match otherwise {
                    Some(Ambient::GithubToken) => ", else $GITHUB_TOKEN",
                    Some(Ambient::AwsChain) => ", else the AWS credential chain",
                    None => ", else anonymous",
                };
                format!("Docker's config for {host}{then}")
            }
        }
    }
}

/// Docker's `config.json`: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
pub fn docker_config_path(env: &Env) -> Option<PathBuf> {
    if let Some(dir) = env.get("DOCKER_CONFIG") {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    env.get("HOME").map(|h| PathBuf::from(h).join(".docker/config.json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn policy_ref() -> CredentialRef {
        CredentialRef { username: "bot".into(), password_env: "REG_PASS".into(), at: (3, 5), field: "f".into() }
    }

    #[test]
    fn the_policy_comes_first_then_docker_config_then_the_kind() {
        let p = policy_ref();
        assert_eq!(
            CredentialSource::for_registry(RegistryKind::Ghcr, "ghcr.io", Some(&p)),
            CredentialSource::Env { username: "bot".into(), password_env: "REG_PASS".into() }
        );
        assert_eq!(
            CredentialSource::for_registry(RegistryKind::Ghcr, "ghcr.io", None),
            CredentialSource::DockerConfig { host: "ghcr.io".into(), otherwise: Some(Ambient::GithubToken) }
        );
        assert_eq!(
            CredentialSource::for_registry(RegistryKind::EcrPublic, "public.ecr.aws", None),
            CredentialSource::DockerConfig { host: "public.ecr.aws".into(), otherwise: Some(Ambient::AwsChain) }
        );
        assert_eq!(
            CredentialSource::for_registry(RegistryKind::Registry, "r:5000", None),
            CredentialSource::DockerConfig { host: "r:5000".into(), otherwise: None }
        );
    }

    #[test]
    fn a_missing_policy_variable_is_an_error_and_an_empty_one_too() {
        let s = CredentialSource::Env { username: "bot".into(), password_env: "REG_PASS".into() };
        assert!(s.resolve(&env(&[])).is_err());
        assert!(s.resolve(&env(&[("REG_PASS", "")])).is_err());
        let r = s.resolve(&env(&[("REG_PASS", "pw")])).unwrap();
        assert_eq!(r.credential().map(|c| c.username), Some("bot".into()));
    }

    #[test]
    fn docker_config_wins_over_github_token() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"auths":{"ghcr.io":{"auth":"ZG9ja2VyLXVzZXI6ZG9ja2VyLXB3"}}}"#,
        )
        .unwrap();
        let s = CredentialSource::for_registry(RegistryKind::Ghcr, "ghcr.io", None);
        let with_config = env(&[("DOCKER_CONFIG", dir.path().to_str().unwrap()), ("GITHUB_TOKEN", "ght")]);
        assert_eq!(s.resolve(&with_config).unwrap().credential().map(|c| c.username), Some("docker-user".into()));
        let without = env(&[("DOCKER_CONFIG", "/nonexistent"), ("GITHUB_TOKEN", "ght"), ("GITHUB_ACTOR", "me")]);
        assert_eq!(s.resolve(&without).unwrap().credential().map(|c| c.username), Some("me".into()));
        let nothing = env(&[("DOCKER_CONFIG", "/nonexistent")]);
        assert!(matches!(s.resolve(&nothing).unwrap(), Resolved::Anonymous));
    }

    #[test]
    fn the_plan_form_names_no_secret() {
        let s = CredentialSource::Env { username: "bot".into(), password_env: "REG_PASS".into() };
        assert_eq!(
            serde_json::to_value(&s).unwrap(),
            serde_json::json!({"from": "env", "username": "bot", "password_env": "REG_PASS"})
        );
    }
}
