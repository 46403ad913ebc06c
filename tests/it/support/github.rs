//! A local stand-in for the GitHub REST API's issue-comment endpoints, in GitHub's shapes:
//! list (paginated with `Link`), create and update comments; token required.

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use super::http::{Request, Response, Server};

pub const TOKEN: &str = "ghs_testtoken0123456789abcdef";

pub struct FakeGitHub {
    pub server: Server,
    /// (id, body) of the comments on the pull request.
    pub comments: Arc<Mutex<Vec<(u64, String)>>>,
}

impl FakeGitHub {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.server.port)
    }
}

fn user(base: &str) -> Value {
    let u = format!("{base}/users/github-actions%5Bbot%5D");
    json!({
        "login": "github-actions[bot]", "id": 41898282, "node_id": "MDM6Qm90NDE4OTgyODI=",
        "avatar_url": "https://avatars.githubusercontent.com/in/15368?v=4", "gravatar_id": "",
        "url": u, "html_url": "https://github.com/apps/github-actions",
        "followers_url": format!("{u}/followers"), "following_url": format!("{u}/following"),
        "gists_url": format!("{u}/gists"), "starred_url": format!("{u}/starred"),
        "subscriptions_url": format!("{u}/subscriptions"), "organizations_url": format!("{u}/orgs"),
        "repos_url": format!("{u}/repos"), "events_url": format!("{u}/events"),
        "received_events_url": format!("{u}/received_events"), "type": "Bot", "site_admin": false
    })
}

fn comment(base: &str, repo: &str, number: u64, id: u64, body: &str) -> Value {
    json!({
        "id": id, "node_id": format!("IC_{id}"),
        "url": format!("{base}/repos/{repo}/issues/comments/{id}"),
        "html_url": format!("https://github.com/{repo}/pull/{number}#issuecomment-{id}"),
        "issue_url": format!("{base}/repos/{repo}/issues/{number}"),
        "body": body, "user": user(base), "author_association": "NONE",
        "created_at": "2026-11-24T10:00:00Z", "updated_at": "2026-11-24T10:00:00Z"
    })
}

/// Serves comments on `repo` pull request `number`, starting with `existing` unrelated ones
/// (more than one page of them, so pagination is exercised).
pub fn start(repo: &'static str, number: u64, existing: usize) -> FakeGitHub {
    let comments = Arc::new(Mutex::new(
        (0..existing).map(|i| (1000 + i as u64, format!("unrelated comment {i}"))).collect::<Vec<_>>(),
    ));
    let state = comments.clone();
    let base = Arc::new(Mutex::new(String::new()));
    let base2 = base.clone();
    let server = Server::start(move |req: &Request| {
        let base = base2.lock().unwrap().clone();
        let auth = req.header("authorization").unwrap_or_default();
        if auth != format!("Bearer {TOKEN}") && auth != format!("token {TOKEN}") {
            return Response::new(401)
                .json(&json!({"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"}));
        }
        let (path, query) = req.target.split_once('?').unwrap_or((&req.target, ""));
        let list_path = format!("/repos/{repo}/issues/{number}/comments");
        let mut comments = state.lock().unwrap();
        if req.method == "GET" && path == list_path {
            let per_page: usize =
                query.split('&').find_map(|kv| kv.strip_prefix("per_page=")).and_then(|v| v.parse().ok()).unwrap_or(30);
            let page: usize =
                query.split('&').find_map(|kv| kv.strip_prefix("page=")).and_then(|v| v.parse().ok()).unwrap_or(1);
            let items: Vec<Value> = comments
                .iter()
                .skip((page - 1) * per_page)
                .take(per_page)
                .map(|(id, b)| comment(&base, repo, number, *id, b))
                .collect();
            let mut resp = Response::new(200).json(&Value::Array(items));
            if page * per_page < comments.len() {
                resp = resp.header(
                    "Link",
                    &format!("<{base}{list_path}?per_page={per_page}&page={}>; rel=\"next\"", page + 1),
                );
            }
            return resp;
        }
        let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        let Some(text) = body.get("body").and_then(Value::as_str) else {
            return Response::new(422).json(&json!({"message": "Validation Failed"}));
        };
        if req.method == "POST" && path == list_path {
            let id = 5000 + comments.len() as u64;
            comments.push((id, text.to_string()));
            return Response::new(201).json(&comment(&base, repo, number, id, text));
        }
        // GitHub accepts POST for PATCH on update endpoints (octocrab sends POST).
        if (req.method == "PATCH" || req.method == "POST")
            && let Some(id) =
                path.strip_prefix(&format!("/repos/{repo}/issues/comments/")).and_then(|i| i.parse::<u64>().ok())
            && let Some(c) = comments.iter_mut().find(|c| c.0 == id)
        {
            c.1 = text.to_string();
            return Response::new(200).json(&comment(&base, repo, number, id, text));
        }
        Response::new(404).json(&json!({"message": "Not Found"}))
    });
    *base.lock().unwrap() = format!("http://127.0.0.1:{}", server.port);
    FakeGitHub { server, comments }
}
