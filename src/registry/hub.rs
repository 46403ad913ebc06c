//! Docker Hub's API (not the registry): how many private repositories a namespace has, for
//! the free plan's limit. `POST /v2/auth/token {identifier, secret}` → bearer, then
//! `GET /v2/namespaces/{ns}/repositories` (paginated by `next`). `DOCKERHUB_API_URL` points it
//! elsewhere (tests).

use serde_json::{Value, json};

use super::Credential;

#[derive(Debug, thiserror::Error)]
#[error("Docker Hub API: {0}")]
pub struct HubError(String);

/// Counts the private repositories of `namespace`.
pub async fn private_repositories(namespace: &str, cred: &Credential) -> Result<u32, HubError> {
    let base = std::env::var("DOCKERHUB_API_URL")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "https://hub.docker.com".into());
    let base = base.trim_end_matches('/');
    let http = crate::http::client(None).map_err(|e| HubError(e.to_string()))?;
    let resp = http
        .post(format!("{base}/v2/auth/token"))
        .json(&json!({"identifier": cred.username, "secret": cred.password.expose()}))
        .send()
        .await
        .map_err(|e| HubError(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(HubError(format!("sign-in as {} answered {}", cred.username, resp.status())));
    }
    let v: Value = resp.json().await.map_err(|e| HubError(e.to_string()))?;
    let token = crate::types::Secret::new(
        v.get("access_token").and_then(Value::as_str).ok_or_else(|| HubError("no access_token".into()))?,
    );
    let mut url = format!("{base}/v2/namespaces/{namespace}/repositories?page_size=100");
    let mut private = 0u32;
    loop {
        let resp = http
            .get(&url)
            .header(reqwest::header::AUTHORIZATION, format!("Bearer {}", token.expose()))
            .send()
            .await
            .map_err(|e| HubError(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(HubError(format!("listing {namespace}'s repositories answered {}", resp.status())));
        }
        let page: Value = resp.json().await.map_err(|e| HubError(e.to_string()))?;
        private += page.get("results").and_then(Value::as_array).map_or(0, |r| {
            r.iter().filter(|x| x.get("is_private").and_then(Value::as_bool) == Some(true)).count() as u32
        });
        match page.get("next").and_then(Value::as_str) {
            Some(next) if !next.is_empty() => url = next.to_string(),
            _ => return Ok(private),
        }
    }
}
