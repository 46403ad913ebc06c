//! The plan as one pull-request comment, found by a hidden marker and updated in place, over
//! GitHub's REST API with the program's one HTTP client: `GET
//! /repos/{owner}/{repo}/issues/{number}/comments` (100 a page, followed by `Link: rel="next"`
//! on the API's own origin only), then `PATCH /repos/{owner}/{repo}/issues/comments/{id}` or
//! `POST …/issues/{number}/comments`. Every call is retried by `crate::retry` and every answer
//! is bounded.

use serde_json::{Value, json};

use super::summary::COMMENT_MARKER;
use crate::http::ClientConfig;
use crate::types::Secret;

#[derive(Debug, thiserror::Error)]
#[error("GitHub API: {0}")]
pub struct CommentError(String);

/// What the upsert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upsert {
    Created(u64),
    Updated(u64),
}

/// The pages of comments read at most (100 comments each): past that, no comment rather than
/// a second one.
const MAX_PAGES: usize = 50;

/// Creates the plan comment on pull request `number`, or updates the one already there.
pub async fn upsert(
    api_url: &str,
    token: &Secret,
    repository: &str,
    number: u64,
    markdown: &str,
    config: &ClientConfig,
) -> Result<Upsert, CommentError> {
    if repository.split_once('/').is_none_or(|(o, r)| o.is_empty() || r.is_empty() || r.contains('/')) {
        return Err(CommentError(format!("GITHUB_REPOSITORY {repository:?} is not OWNER/REPO")));
    }
    let base = url::Url::parse(&format!("{}/", api_url.trim_end_matches('/')))
        .map_err(|e| CommentError(format!("GITHUB_API_URL {api_url:?}: {e}")))?;
    let api = Api { http: config.http(None).map_err(|e| CommentError(e.to_string()))?, token, config };
    let body = json!({"body": format!("{COMMENT_MARKER}\n{markdown}")});
    let list = join(&base, &format!("repos/{repository}/issues/{number}/comments"))?;
    let mut next = Some(join(&base, &format!("repos/{repository}/issues/{number}/comments?per_page=100"))?);
    for _ in 0..MAX_PAGES {
        let Some(url) = next.take() else { break };
        let (page, link) = api.call(reqwest::Method::GET, &url, None).await?;
        if !page.is_array() {
            return Err(CommentError(format!(
                "listing the comments of #{number} answered something other than a list"
            )));
        }
        let ours = page
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c.get("body").and_then(Value::as_str).is_some_and(|b| b.contains(COMMENT_MARKER)));
        if let Some(id) = ours.and_then(|c| c.get("id")).and_then(Value::as_u64) {
            let url = join(&base, &format!("repos/{repository}/issues/comments/{id}"))?;
            api.call(reqwest::Method::PATCH, &url, Some(&body)).await?;
            return Ok(Upsert::Updated(id));
        }
        // The token goes to the API's own origin only.
        next = link.filter(|n| n.origin() == base.origin());
    }
    if next.is_some() {
        return Err(CommentError(format!(
            "pull request #{number} has more than {} comments: the plan is in the job summary only",
            MAX_PAGES * 100
        )));
    }
    let (created, _) = api.call(reqwest::Method::POST, &list, Some(&body)).await?;
    created
        .get("id")
        .and_then(Value::as_u64)
        .map(Upsert::Created)
        .ok_or_else(|| CommentError("the created comment has no id".into()))
}

fn join(base: &url::Url, path: &str) -> Result<url::Url, CommentError> {
    base.join(path).map_err(|e| CommentError(format!("{path}: {e}")))
}

struct Api<'a> {
    http: reqwest::Client,
    token: &'a Secret,
    config: &'a ClientConfig,
}

impl Api<'_> {
    /// One call: its JSON answer and the `rel="next"` page, if any.
    async fn call(
        &self,
        method: reqwest::Method,
        url: &url::Url,
        body: Option<&Value>,
    ) -> Result<(Value, Option<url::Url>), CommentError> {
        // A create is not retried: a lost answer could mean a second comment.
        let mut retry = self.config.retry();
        if method == reqwest::Method::POST {
            retry.attempts = 1;
        }
        let (status, value, next) = super::rest(&self.http, (self.token, &retry), method, url, body)
            .await
            .map_err(|e| CommentError(e.to_string()))?;
        if !status.is_success() {
            let message = value.get("message").and_then(Value::as_str).unwrap_or("no message");
            return Err(CommentError(format!("{message} ({status})")));
        }
        Ok((value, next))
    }
}
