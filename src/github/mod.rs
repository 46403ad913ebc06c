//! GitHub Actions integration: workflow commands (masks, annotations, groups) on stderr, step
//! outputs in `$GITHUB_OUTPUT`, the job summary in `$GITHUB_STEP_SUMMARY`, and the plan as one
//! upserted pull-request comment through the REST API (`comment`, over the program's HTTP
//! client, base URL from `GITHUB_API_URL`). Active only when `GITHUB_ACTIONS=true`.
//!
//! Workflow commands go to stderr: the runner reads commands from both streams, and stdout
//! stays one clean JSON document with `--output json`.

pub mod comment;
pub mod outputs;
pub mod packages;
pub mod summary;

use std::io::Write;
use std::path::PathBuf;

/// Limits GitHub documents: 10 error annotations per step, 1 MiB of job summary.
pub const MAX_ERROR_ANNOTATIONS: usize = 10;
pub const MAX_SUMMARY: usize = 1024 * 1024;

/// The Actions environment, when running in it.
#[derive(Debug, Clone)]
pub struct Actions {
    pub output_file: Option<PathBuf>,
    pub summary_file: Option<PathBuf>,
    pub event_name: Option<String>,
    pub event_path: Option<PathBuf>,
    pub repository: Option<String>,
    pub api_url: String,
}

impl Actions {
    /// GitHub Actions' context from `env`, when running there (`GITHUB_ACTIONS=true`).
    pub fn detect(env: &crate::credentials::Env) -> Option<Actions> {
        if env.get("GITHUB_ACTIONS").map(String::as_str) != Some("true") {
            return None;
        }
        let var = |k: &str| env.get(k).filter(|v| !v.is_empty()).cloned();
        Some(Actions {
            output_file: var("GITHUB_OUTPUT").map(PathBuf::from),
            summary_file: var("GITHUB_STEP_SUMMARY").map(PathBuf::from),
            event_name: var("GITHUB_EVENT_NAME"),
            event_path: var("GITHUB_EVENT_PATH").map(PathBuf::from),
            repository: var("GITHUB_REPOSITORY"),
            api_url: var("GITHUB_API_URL").unwrap_or_else(|| "https://api.github.com".into()),
        })
    }

    /// Writes step outputs with the multi-line (`name<<DELIMITER`) syntax.
    pub fn set_outputs(&self, outputs: &[(&str, String)]) -> std::io::Result<()> {
        let Some(path) = &self.output_file else { return Ok(()) };
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        for (name, value) in outputs {
            let delimiter = delimiter(value);
            writeln!(f, "{name}<<{delimiter}\n{value}\n{delimiter}")?;
        }
        Ok(())
    }

    /// Appends markdown to the job summary, cut to GitHub's 1 MiB limit.
    pub fn append_summary(&self, markdown: &str) -> std::io::Result<()> {
        let Some(path) = &self.summary_file else { return Ok(()) };
        let used = std::fs::metadata(path).map(|m| m.len() as usize).unwrap_or(0);
        let room = MAX_SUMMARY.saturating_sub(used);
        let mut text = markdown.to_string();
        if text.len() > room {
            let note = "\n\n_(summary cut at GitHub's 1 MiB limit)_\n";
            let mut cut = room.saturating_sub(note.len());
            while cut > 0 && !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push_str(note);
        }
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        f.write_all(text.as_bytes())
    }

    /// The pull request number, on `pull_request` events.
    pub fn pull_request(&self) -> Option<u64> {
        if !matches!(self.event_name.as_deref(), Some("pull_request" | "pull_request_target")) {
            return None;
        }
        let bytes = crate::http::read_file_limited(self.event_path.as_ref()?, 16 * 1024 * 1024).ok()?;
        let event: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        event.get("pull_request")?.get("number")?.as_u64()
    }
}

/// A delimiter that does not occur in `value`.
fn delimiter(value: &str) -> String {
    let mut n: u64 =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(7, |d| d.as_nanos() as u64);
    loop {
        let d = format!("ghadelimiter_{n:x}");
        if !value.contains(&d) {
            return d;
        }
        n = n.wrapping_mul(6364136223846793005).wrapping_add(1);
    }
}

/// Escapes a command's message (as @actions/core does).
fn escape_data(s: &str) -> String {
    s.replace('%', "%25").replace('\r', "%0D").replace('\n', "%0A")
}

/// Escapes a command's property value.
fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

/// `::add-mask::` for a secret, so the runner hides it in every later log line; once per
/// value, however often it is read.
pub fn mask(secret: &str) {
    static MASKED: std::sync::Mutex<Vec<[u8; 32]>> = std::sync::Mutex::new(Vec::new());
    if secret.is_empty() {
        return;
    }
    let fingerprint: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(secret.as_bytes()).into();
    if let Ok(mut seen) = MASKED.lock() {
        if seen.contains(&fingerprint) {
            return;
        }
        seen.push(fingerprint);
    }
    eprintln!("::add-mask::{}", escape_data(secret));
}

/// Masks every secret read from now on. Call once, first thing, in Actions.
pub fn mask_secrets_from_now_on() {
    crate::types::on_secret_read(mask);
}

/// An error annotation on a file position.
pub fn error_annotation(file: &str, line: u64, col: u64, title: &str, message: &str) {
    eprintln!(
        "::error file={},line={line},col={col},title={}::{}",
        escape_property(file),
        escape_property(title),
        escape_data(message)
    );
}

pub fn error(message: &str) {
    eprintln!("::error::{}", escape_data(message));
}

pub fn warning(message: &str) {
    eprintln!("::warning::{}", escape_data(message));
}

/// A collapsible group in the log, closed when dropped.
pub struct Group(bool);

impl Group {
    pub fn start(active: bool, title: &str) -> Group {
        if active {
            eprintln!("::group::{}", escape_data(title));
        }
        Group(active)
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if self.0 {
            eprintln!("::endgroup::");
        }
    }
}

/// One call to GitHub's REST API with the program's HTTP client: the bearer token, the API's
/// media type and version, retried by `crate::retry` (`retry`), the answer bounded. Its status,
/// its JSON (`Null` when there is none) and its `Link: rel="next"` page; the caller keeps the
/// token on the API's own origin.
pub async fn rest(
    http: &reqwest::Client,
    (token, retry): (&crate::types::Secret, &crate::retry::RetryPolicy),
    method: reqwest::Method,
    url: &url::Url,
    body: Option<&serde_json::Value>,
) -> Result<(reqwest::StatusCode, serde_json::Value, Option<url::Url>), crate::retry::SendError> {
    use reqwest::header::{ACCEPT, AUTHORIZATION};
    let what = format!("GitHub {method} {}", url.path());
    let resp = crate::retry::send(retry, &what, || {
        let req = http
            .request(method.clone(), url.clone())
            .header(AUTHORIZATION, format!("Bearer {}", token.expose()))
            .header(ACCEPT, "application/vnd.github+json")
            .header("X-GitHub-Api-Version", "2022-11-28");
        match body {
            Some(b) => req.json(b),
            None => req,
        }
    })
    .await?;
    let status = resp.status();
    let next = crate::http::link_next(url, resp.headers());
    let value =
        crate::http::json_limited(resp, 16 * crate::http::MAX_SMALL_BODY).await.unwrap_or(serde_json::Value::Null);
    Ok((status, value, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_actions_core() {
        assert_eq!(escape_data("a%b\nc"), "a%25b%0Ac");
        assert_eq!(escape_property("a:b,c"), "a%3Ab%2Cc");
    }

    #[test]
    fn delimiter_never_occurs_in_the_value() {
        let d = delimiter("x");
        let value = format!("line\n{d}\nmore");
        assert!(!value.contains(&delimiter(&value)));
    }
}
