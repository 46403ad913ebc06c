//! Docker Hub's API (not the registry): how many private repositories a namespace has, for
//! the free plan's limit, and a repository created with the image's visibility before the
//! first push (a push to a missing repository would create it with the account's default,
//! public on the free plan). `POST /v2/auth/token {identifier, secret}` → bearer, then
//! `GET /v2/namespaces/{ns}/repositories` (paginated by `next`), `GET …/repositories/{name}`
//! (`is_private`), `POST /v2/namespaces/{ns}/repositories`. The base URL is an argument
//! (`DOCKERHUB_API_URL` in the command layer points it elsewhere). Every call is retried by
//! `crate::retry` and every answer is bounded.

use serde_json::{Value, json};

use super::Credential;
use crate::http::{ClientConfig, MAX_SMALL_BODY, json_limited};
use crate::retry::RetryPolicy;

#[derive(Debug, thiserror::Error)]
#[error("Docker Hub API: {0}")]
pub struct HubError(String);

/// Docker Hub's API.
pub const API: &str = "https://hub.docker.com";

/// The API at one base URL, with the run's client configuration.
struct Hub {
    http: reqwest::Client,
    base: String,
    retry: RetryPolicy,
}

impl Hub {
    fn new(api: &str, config: &ClientConfig) -> Result<Hub, HubError> {
        let http = config.http(None).map_err(|e| HubError(e.to_string()))?;
        Ok(Hub { http, base: api.trim_end_matches('/').to_string(), retry: config.retry() })
    }
}

/// Signs in: a bearer for the API.
async fn sign_in(hub: &Hub, cred: &Credential) -> Result<crate::types::Secret, HubError> {
    let Hub { http, base, retry } = hub;
    let body = json!({"identifier": cred.username, "secret": cred.password.expose()});
    let resp =
        crate::retry::send(retry, "Docker Hub sign-in", || http.post(format!("{base}/v2/auth/token")).json(&body))
            .await
            .map_err(|e| HubError(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(HubError(format!("sign-in as {} answered {}", cred.username, resp.status())));
    }
    let v: Value = json_limited(resp, MAX_SMALL_BODY).await.map_err(|e| HubError(e.to_string()))?;
    Ok(crate::types::Secret::new(
        v.get("access_token").and_then(Value::as_str).ok_or_else(|| HubError("no access_token".into()))?,
    ))
}

/// What `ensure_repository` found or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ensured {
    Created,
    /// It exists with the wanted visibility.
    Exists,
}

/// Makes sure `namespace/name` exists with the wanted visibility before anything is pushed:
/// created when missing; an existing public repository for a private image is refused.
pub async fn ensure_repository(
    api: &str,
    namespace: &str,
    name: &str,
    private: bool,
    cred: &Credential,
    config: &ClientConfig,
) -> Result<Ensured, HubError> {
    let hub = Hub::new(api, config)?;
    let token = sign_in(&hub, cred).await?;
    let Hub { http, base, retry } = &hub;
    let bearer = format!("Bearer {}", token.expose());
    let url = format!("{base}/v2/namespaces/{namespace}/repositories/{name}");
    let resp = crate::retry::send(retry, "Docker Hub repository", || {
        http.get(&url).header(reqwest::header::AUTHORIZATION, &bearer)
    })
    .await
    .map_err(|e| HubError(e.to_string()))?;
    match resp.status().as_u16() {
        200 => {
            let v: Value = json_limited(resp, MAX_SMALL_BODY).await.map_err(|e| HubError(e.to_string()))?;
            let is_private = v.get("is_private").and_then(Value::as_bool).unwrap_or(false);
            if private && !is_private {
                return Err(HubError(format!(
                    "{namespace}/{name} exists and is public, and the image is private: make the repository private on Docker Hub (Settings → Visibility) first; nothing was pushed"
                )));
            }
            Ok(Ensured::Exists)
        }
        404 => {
            let body = json!({"name": name, "namespace": namespace, "is_private": private});
            let create = format!("{base}/v2/namespaces/{namespace}/repositories");
            let resp = crate::retry::send(retry, "Docker Hub create repository", || {
                http.post(&create).header(reqwest::header::AUTHORIZATION, &bearer).json(&body)
            })
            .await
            .map_err(|e| HubError(e.to_string()))?;
            if !resp.status().is_success() {
                let what = if private { "private " } else { "" };
                return Err(HubError(format!(
                    "creating the {what}repository {namespace}/{name} answered {} (a free account has one private repository)",
                    resp.status()
                )));
            }
            Ok(Ensured::Created)
        }
        s => Err(HubError(format!("reading {namespace}/{name} answered {s}"))),
    }
}

/// Counts the private repositories of `namespace`.
pub async fn private_repositories(
    api: &str,
    namespace: &str,
    cred: &Credential,
    config: &ClientConfig,
) -> Result<u32, HubError> {
    let hub = Hub::new(api, config)?;
    let token = sign_in(&hub, cred).await?;
    let url = format!("{}/v2/namespaces/{namespace}/repositories?page_size=100", hub.base);
    let repositories = hub.results(&token, url, &format!("{namespace}'s repositories")).await?;
    Ok(repositories.iter().filter(|x| x.get("is_private").and_then(Value::as_bool) == Some(true)).count() as u32)
}

/// Pages of 100 results read at most.
const MAX_PAGES: usize = 100;

impl Hub {
    /// Every `results` item of a listing from `url` on, its pages followed by `next` on the
    /// API's own origin (the bearer token goes nowhere else), at most `MAX_PAGES`. A page that
    /// cannot be read is an error: a partial list is never taken for the whole.
    async fn results(&self, token: &crate::types::Secret, mut url: String, what: &str) -> Result<Vec<Value>, HubError> {
        let Hub { http, base, retry } = self;
        let mut out = Vec::new();
        for _ in 0..MAX_PAGES {
            let resp = crate::retry::send(retry, &format!("Docker Hub: {what}"), || {
                http.get(&url).header(reqwest::header::AUTHORIZATION, format!("Bearer {}", token.expose()))
            })
            .await
            .map_err(|e| HubError(e.to_string()))?;
            let status = resp.status();
            let page: Result<Value, _> = json_limited(resp, 4 * MAX_SMALL_BODY).await;
            if !status.is_success() {
                let page = page.unwrap_or(Value::Null);
                return Err(HubError(format!("listing {what} answered {status}: {}", detail(&page))));
            }
            let page = page.map_err(|e| HubError(format!("a page of {what}: {e}")))?;
            out.extend(page.get("results").and_then(Value::as_array).into_iter().flatten().cloned());
            match page.get("next").and_then(Value::as_str) {
                Some(next) if next.starts_with(&format!("{base}/")) => url = next.to_string(),
                Some(next) if !next.is_empty() => {
                    return Err(HubError(format!("the next page is on another origin ({next}): not followed")));
                }
                _ => return Ok(out),
            }
        }
        Err(HubError(format!("{what}: more than {} entries", MAX_PAGES * 100)))
    }
}

/// One repository's tags through the Hub API, signed in (prune): `GET
/// /v2/namespaces/{ns}/repositories/{name}/tags` (paginated by `next`) and `DELETE
/// /v2/repositories/{ns}/{name}/tags/{tag}/`. Hub's API deletes tags, never manifests.
pub struct Tags {
    hub: Hub,
    token: crate::types::Secret,
    namespace: String,
    name: String,
}

impl Tags {
    pub async fn sign_in(
        api: &str,
        (namespace, name): (&str, &str),
        cred: &Credential,
        config: &ClientConfig,
    ) -> Result<Tags, HubError> {
        let hub = Hub::new(api, config)?;
        let token = sign_in(&hub, cred).await?;
        Ok(Tags { hub, token, namespace: namespace.to_string(), name: name.to_string() })
    }

    /// Every tag: its name, the digest it points at and when it was last pushed.
    pub async fn list(&self) -> Result<Vec<(String, crate::types::Digest, Option<String>)>, HubError> {
        let url =
            format!("{}/v2/namespaces/{}/repositories/{}/tags?page_size=100", self.hub.base, self.namespace, self.name);
        let results = self.hub.results(&self.token, url, &format!("{}/{}'s tags", self.namespace, self.name)).await?;
        Ok(results
            .iter()
            .filter_map(|t| {
                let name = t.get("name").and_then(Value::as_str)?;
                let digest = t.get("digest").and_then(Value::as_str)?.parse().ok()?;
                let pushed = t.get("tag_last_pushed").or_else(|| t.get("last_updated")).and_then(Value::as_str);
                Some((name.to_string(), digest, pushed.map(str::to_string)))
            })
            .collect())
    }

    /// Deletes `tag`: `false` when it was not there.
    pub async fn delete(&self, tag: &str) -> Result<bool, HubError> {
        let Hub { http, base, retry } = &self.hub;
        let url = format!("{base}/v2/repositories/{}/{}/tags/{tag}/", self.namespace, self.name);
        let resp = crate::retry::send(retry, "Docker Hub tag delete", || {
            http.delete(&url).header(reqwest::header::AUTHORIZATION, format!("Bearer {}", self.token.expose()))
        })
        .await
        .map_err(|e| HubError(e.to_string()))?;
        let status = resp.status().as_u16();
        let v: Value = json_limited(resp, MAX_SMALL_BODY).await.unwrap_or(Value::Null);
        match status {
            200..=299 => Ok(true),
            404 => Ok(false),
            401 | 403 => Err(HubError(format!(
                "deleting tag {tag} answered {status}: {}: the token needs the Read, Write, Delete access permission (a personal access token's scope)",
                detail(&v)
            ))),
            _ => Err(HubError(format!("deleting tag {tag} answered {status}: {}", detail(&v)))),
        }
    }
}

/// The `detail` or `message` of a Hub error.
fn detail(v: &Value) -> &str {
    v.get("detail").or_else(|| v.get("message")).and_then(Value::as_str).unwrap_or("no detail")
}
