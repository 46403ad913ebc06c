//! Docker Hub's API (not the registry): how many private repositories a namespace has, for
//! the free plan's limit. `POST /v2/auth/token {identifier, secret}` → bearer, then
//! `GET /v2/namespaces/{ns}/repositories` (paginated by `next`). The base URL is an argument
//! (`DOCKERHUB_API_URL` in the command layer points it elsewhere). Every call is retried by
//! `crate::retry` and every answer is bounded.

use serde_json::{Value, json};

use super::Credential;
use crate::http::{MAX_SMALL_BODY, json_limited};
use crate::retry::RetryPolicy;

#[derive(Debug, thiserror::Error)]
#[error("Docker Hub API: {0}")]
pub struct HubError(String);

/// Docker Hub's API.
pub const API: &str = "https://hub.docker.com";

/// Counts the private repositories of `namespace`.
pub async fn private_repositories(api: &str, namespace: &str, cred: &Credential) -> Result<u32, HubError> {
    let base = api.trim_end_matches('/');
    let http = crate::http::client(None).map_err(|e| HubError(e.to_string()))?;
    let retry = RetryPolicy::default();
    let body = json!({"identifier": cred.username, "secret": cred.password.expose()});
    let resp =
        crate::retry::send(&retry, "Docker Hub sign-in", || http.post(format!("{base}/v2/auth/token")).json(&body))
            .await
            .map_err(|e| HubError(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(HubError(format!("sign-in as {} answered {}", cred.username, resp.status())));
    }
    let v: Value = json_limited(resp, MAX_SMALL_BODY).await.map_err(|e| HubError(e.to_string()))?;
    let token = crate::types::Secret::new(
        v.get("access_token").and_then(Value::as_str).ok_or_else(|| HubError("no access_token".into()))?,
    );
    let mut url = format!("{base}/v2/namespaces/{namespace}/repositories?page_size=100");
    let mut private = 0u32;
    loop {
        let resp = crate::retry::send(&retry, "Docker Hub repositories", || {
            http.get(&url).header(reqwest::header::AUTHORIZATION, format!("Bearer {}", token.expose()))
        })
        .await
        .map_err(|e| HubError(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(HubError(format!("listing {namespace}'s repositories answered {}", resp.status())));
        }
        let page: Value = json_limited(resp, 4 * MAX_SMALL_BODY).await.map_err(|e| HubError(e.to_string()))?;
        private += page.get("results").and_then(Value::as_array).map_or(0, |r| {
            r.iter().filter(|x| x.get("is_private").and_then(Value::as_bool) == Some(true)).count() as u32
        });
        match page.get("next").and_then(Value::as_str) {
            // The bearer token goes to the API's own origin only.
            Some(next) if next.starts_with(&format!("{base}/")) => url = next.to_string(),
            Some(next) if !next.is_empty() => {
                return Err(HubError(format!("the next page is on another origin ({next}): not followed")));
            }
            _ => return Ok(private),
        }
    }
}
