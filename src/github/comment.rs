//! The plan as one pull-request comment, found by a hidden marker and updated in place.

use octocrab::Octocrab;

use super::summary::COMMENT_MARKER;
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

/// Creates the plan comment on pull request `number`, or updates the one already there.
pub async fn upsert(
    api_url: &str,
    token: &Secret,
    repository: &str,
    number: u64,
    markdown: &str,
) -> Result<Upsert, CommentError> {
    let (owner, repo) = repository
        .split_once('/')
        .ok_or_else(|| CommentError(format!("GITHUB_REPOSITORY {repository:?} is not OWNER/REPO")))?;
    let gh = Octocrab::builder()
        .base_uri(api_url)
        .map_err(|e| CommentError(format!("GITHUB_API_URL {api_url:?}: {e}")))?
        .personal_token(token.expose().to_string())
        .build()
        .map_err(|e| CommentError(e.to_string()))?;
    let issues = gh.issues(owner, repo);
    let body = format!("{COMMENT_MARKER}\n{markdown}");
    let mut page = issues.list_comments(number).per_page(100).send().await.map_err(|e| CommentError(describe(&e)))?;
    loop {
        if let Some(existing) =
            page.items.iter().find(|c| c.body.as_deref().is_some_and(|b| b.contains(COMMENT_MARKER)))
        {
            let id = existing.id;
            issues.update_comment(id, body).await.map_err(|e| CommentError(describe(&e)))?;
            return Ok(Upsert::Updated(id.0));
        }
        match gh.get_page(&page.next).await.map_err(|e| CommentError(describe(&e)))? {
            Some(next) => page = next,
            None => break,
        }
    }
    let created = issues.create_comment(number, body).await.map_err(|e| CommentError(describe(&e)))?;
    Ok(Upsert::Created(created.id.0))
}

fn describe(e: &octocrab::Error) -> String {
    match e {
        octocrab::Error::GitHub { source, .. } => format!("{} ({})", source.message, source.status_code),
        other => other.to_string(),
    }
}
