//! Pruning through a service's own API: ECR Public and Docker Hub (see their tests below), and
//! a GHCR package: its versions listed and deleted through a stand-in of GitHub's
//! Packages REST API that is strict the way the real one is (bearer token, API version header,
//! `Link` pagination, 429 with `Retry-After`, 403 without the scope, 400 for the last tagged
//! version), the manifests read from a real registry standing in for ghcr.io on loopback.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use crate::support::http::{Request, Response, Server};
use crate::support::image::write_layout_with;
use crate::support::{Registry, RegistryOptions, publish, run, text};

const TOKEN: &str = "ghp-prune-test-token-0123456789";
const READ_ONLY: &str = "ghp-read-only-token-9876543210";

#[derive(Default)]
struct State {
    /// (id, digest, created_at, tags)
    versions: Vec<(u64, String, String, Vec<String>)>,
    deleted: Vec<u64>,
    /// Versions GitHub refuses to delete (as it does a package's last tagged version).
    last_tagged: Option<u64>,
    throttled_once: bool,
    /// `orgs` or `users`: who owns the package (the other path answers 404).
    owner: &'static str,
}

fn handle(state: &Arc<Mutex<State>>, req: &Request) -> Response {
    let bearer = req.header("authorization").unwrap_or_default().to_string();
    if req.header("x-github-api-version") != Some("2022-11-28")
        || !req.header("accept").unwrap_or_default().contains("github")
    {
        return Response::new(400).json(&json!({"message": "missing API version or Accept header"}));
    }
    if bearer != format!("Bearer {TOKEN}") && bearer != format!("Bearer {READ_ONLY}") {
        return Response::new(401).json(&json!({"message": "Bad credentials"}));
    }
    let mut s = state.lock().unwrap();
    let base = format!("/{}/acme/packages/container/app/versions", s.owner);
    let base = base.as_str();
    if !req.target.starts_with(base) {
        return Response::new(404).json(&json!({"message": "Not Found"}));
    }
    if req.method == "GET" && req.target.starts_with(base) {
        if !s.throttled_once {
            s.throttled_once = true;
            return Response::new(429).header("Retry-After", "0").json(&json!({"message": "slow down"}));
        }
        let page: usize =
            req.target.split("&page=").nth(1).and_then(|p| p.split('&').next()?.parse().ok()).unwrap_or(1);
        let live: Vec<_> = s.versions.iter().filter(|v| !s.deleted.contains(&v.0)).collect();
        let per = 2;
        let chunk: Vec<Value> = live
            .iter()
            .skip((page - 1) * per)
            .take(per)
            .map(|(id, d, created, tags)| {
                json!({"id": id, "name": d, "created_at": created, "metadata": {"package_type": "container", "container": {"tags": tags}}})
            })
            .collect();
        let mut resp = Response::new(200).json(&Value::Array(chunk));
        if page * per < live.len() {
            let host = req.header("host").unwrap_or_default();
            let next = format!("<http://{host}{base}?per_page=100&page={}>; rel=\"next\"", page + 1);
            resp = resp.header("Link", &next);
        }
        return resp;
    }
    if req.method == "DELETE" && req.target.starts_with(&format!("{base}/")) {
        if bearer != format!("Bearer {TOKEN}") {
            return Response::new(403).json(&json!({"message": "Must have admin rights to Repository."}));
        }
        let id: u64 = req.target.rsplit('/').next().and_then(|i| i.parse().ok()).unwrap_or(0);
        if s.last_tagged == Some(id) {
            let message =
                "You cannot delete the last tagged version of a package. You must delete the package instead.";
            return Response::new(400).json(&json!({"message": message}));
        }
        if !s.versions.iter().any(|v| v.0 == id) || s.deleted.contains(&id) {
            return Response::new(404).json(&json!({"message": "Not Found"}));
        }
        s.deleted.push(id);
        return Response::new(204);
    }
    Response::new(404).json(&json!({"message": "Not Found"}))
}

#[test]
fn a_ghcr_package_is_pruned_through_the_packages_api_with_its_rules() {
    let reg = Registry::start(RegistryOptions::default());
    let work = tempfile::tempdir().unwrap();
    let state = Arc::new(Mutex::new(State { owner: "orgs", ..Default::default() }));
    // Three versions pushed to the registry, old; an untagged version nothing refers to.
    for v in 1..=3u64 {
        let img = write_layout_with(
            &work.path().join(format!("v{v}")),
            400 + v,
            &[2_000],
            ("linux", "amd64", "latest"),
            &json!({}),
        );
        let dst = format!("docker://{}/acme/app:v{v}", reg.host);
        let out = run(publish(work.path()).args(["push", &format!("oci:v{v}"), &dst, "--insecure"]));
        assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
        // No created time in the configs: GitHub's created_at orders them.
        let created = format!("2021-0{v}-01T00:00:00Z");
        state.lock().unwrap().versions.push((v * 10, img.manifest_digest, created, vec![format!("v{v}")]));
    }
    let orphan = format!("sha256:{}", "e".repeat(64));
    state.lock().unwrap().versions.push((99, orphan, "2020-01-01T00:00:00Z".into(), vec![]));
    state.lock().unwrap().last_tagged = Some(20);
    let st = state.clone();
    let api = Server::start(move |req| handle(&st, req));
    let yaml = format!(
        "version: 1
registries:
  gh: {{kind: ghcr, repository: {}/acme, insecure: true}}
images:
  - {{name: app, source: oci:v3, tags: [v3], visibility: public}}
retention: {{keep_last: 1, untagged: delete}}
",
        reg.host
    );
    std::fs::write(work.path().join("publish.yaml"), yaml).unwrap();
    let prune = |token: &str, extra: &[&str]| {
        let out = run(publish(work.path())
            .arg("prune")
            .args(extra)
            .env("GITHUB_TOKEN", token)
            .env("GITHUB_ACTOR", "ci")
            .env("GITHUB_API_URL", format!("http://127.0.0.1:{}", api.port)));
        let (stdout, stderr) = text(&out);
        assert!(!stdout.contains(TOKEN) && !stderr.contains(TOKEN), "the token leaked");
        (out.status.code(), stdout, stderr)
    };

    // A dry run lists, and makes no DELETE request at all.
    let (code, stdout, stderr) = prune(TOKEN, &["--dry-run"]);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("would delete 3 manifests"), "{stdout}");
    assert_eq!(api.requests().iter().filter(|r| r.method == "DELETE").count(), 0, "a dry run deletes nothing");

    // A token that cannot delete: the prune fails, says which permission, deletes nothing.
    let (code, stdout, stderr) = prune(READ_ONLY, &[]);
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("Must have admin rights to Repository. (403)") && stdout.contains("packages: write"),
        "{stdout}"
    );
    assert!(state.lock().unwrap().deleted.is_empty());

    let (code, stdout, stderr) = prune(TOKEN, &[]);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let deleted: BTreeSet<u64> = state.lock().unwrap().deleted.iter().copied().collect();
    assert_eq!(deleted, BTreeSet::from([10, 99]), "v1 and the untagged version; v3 is the newest:\n{stdout}");
    assert!(
        stdout.contains("keep   image ")
            && stdout.contains("GitHub refused to delete it: You cannot delete the last tagged version"),
        "v2's refusal is a kept image with GitHub's reason, not a failure:\n{stdout}"
    );
    let gets = api.requests().iter().filter(|r| r.method == "GET").count();
    assert!(gets >= 4, "throttled once, then two pages: {gets} GETs");

    // A user's package: the organisation's path answers 404, the user's is used.
    state.lock().unwrap().owner = "users";
    let (code, stdout, stderr) = prune(TOKEN, &["--dry-run"]);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(api.requests().iter().any(|r| r.target.starts_with("/users/acme/packages/container/app/versions")));
    assert!(stdout.contains("newest 1 (keep_last)"), "{stdout}");
}

/// ECR Public: images listed with `DescribeImages` (paged, one 429 first) and deleted with
/// `BatchDeleteImage`, every call signed with SigV4 (the stand-in checks each signature); the
/// manifests read from a registry standing in for public.ecr.aws with the token ECR gives.
#[test]
fn an_ecr_public_repository_is_pruned_through_batch_delete_image() {
    use crate::support::aws::{ACCESS_KEY, EcrState, SECRET_KEY, ecr_api};
    let reg = Registry::start(RegistryOptions { htpasswd: true, ..Default::default() });
    let work = tempfile::tempdir().unwrap();
    let mut state = EcrState { repositories: vec!["app".into()], throttle_next: true, ..Default::default() };
    let mut digests = Vec::new();
    for v in 1..=3u64 {
        let img = write_layout_with(
            &work.path().join(format!("v{v}")),
            420 + v,
            &[2_000],
            ("linux", "amd64", "latest"),
            &json!({}),
        );
        let out = run(publish(work.path())
            .args(["push", &format!("oci:v{v}"), &format!("docker://{}/my-alias/app:v{v}", reg.host), "--insecure"])
            .args(["--username", crate::support::USER, "--password-env", "REG_PASSWORD"])
            .env("REG_PASSWORD", crate::support::PASSWORD));
        assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
        state.images.push(("app".into(), img.manifest_digest.clone(), 2_500));
        state.tags.insert(img.manifest_digest.clone(), vec![format!("v{v}")]);
        state.pushed_at.insert(img.manifest_digest.clone(), 1_609_459_200.0 + (v as f64) * 86_400.0);
        digests.push(img.manifest_digest);
    }
    let state = Arc::new(Mutex::new(state));
    let api = ecr_api(state.clone());
    let yaml = format!(
        "version: 1\nregistries:\n  ecr: {{kind: ecr-public, repository: {}/my-alias, insecure: true}}\nimages:\n  - {{name: app, source: oci:v3, tags: [v3], visibility: public}}\nretention: {{keep_last: 1}}\n",
        reg.host
    );
    std::fs::write(work.path().join("publish.yaml"), yaml).unwrap();
    let out = run(publish(work.path())
        .args(["prune"])
        .env("AWS_ENDPOINT_URL_ECR_PUBLIC", format!("http://127.0.0.1:{}", api.port))
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(!stdout.contains(SECRET_KEY) && !stderr.contains(SECRET_KEY) && !stderr.contains(crate::support::PASSWORD));
    let deleted: BTreeSet<String> = state.lock().unwrap().deleted.iter().cloned().collect();
    assert_eq!(deleted, BTreeSet::from([digests[0].clone(), digests[1].clone()]), "{stdout}");
    assert!(stdout.contains("newest 1 (keep_last)") && !stdout.contains("garbage collection"), "{stdout}");
}

/// Docker Hub: tags listed through the Hub API (signed in with `POST /v2/auth/token`, paged by
/// `next`, one 429 first) and deleted one by one (`DELETE /v2/repositories/NS/NAME/tags/TAG/`);
/// a token without the delete permission gets 403 and the prune says which permission.
#[test]
fn a_docker_hub_repository_is_pruned_by_deleting_its_tags() {
    use crate::support::{PASSWORD, USER};
    let reg = Registry::start(RegistryOptions { htpasswd: true, ..Default::default() });
    let work = tempfile::tempdir().unwrap();
    let mut tags = Vec::new();
    for v in 1..=3u64 {
        let img = write_layout_with(
            &work.path().join(format!("v{v}")),
            440 + v,
            &[2_000],
            ("linux", "amd64", "latest"),
            &json!({}),
        );
        let out = run(publish(work.path())
            .args(["push", &format!("oci:v{v}"), &format!("docker://{}/me/app:v{v}", reg.host), "--insecure"])
            .args(["--username", USER, "--password-env", "REG_PASSWORD"])
            .env("REG_PASSWORD", PASSWORD));
        assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
        tags.push((format!("v{v}"), img.manifest_digest, format!("2022-0{v}-01T00:00:00.000000Z")));
    }
    let deleted: Arc<Mutex<Vec<String>>> = Arc::default();
    let allow_delete = Arc::new(Mutex::new(false));
    let throttled = Arc::new(Mutex::new(false));
    let (d, allow, th) = (deleted.clone(), allow_delete.clone(), throttled.clone());
    let api = Server::start(move |req| {
        if req.method == "POST" && req.target == "/v2/auth/token" {
            let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
            if body["identifier"] != USER || body["secret"] != PASSWORD {
                return Response::new(401).json(&json!({"detail": "Incorrect authentication credentials"}));
            }
            return Response::new(200).json(&json!({"access_token": "hub-jwt-1"}));
        }
        if req.header("authorization") != Some("Bearer hub-jwt-1") {
            return Response::new(401).json(&json!({"detail": "authentication required"}));
        }
        let host = req.header("host").unwrap_or_default().to_string();
        if req.method == "GET" && req.target.starts_with("/v2/namespaces/me/repositories/app/tags?") {
            if !std::mem::replace(&mut *th.lock().unwrap(), true) {
                return Response::new(429).header("Retry-After", "0").json(&json!({"detail": "Too Many Requests"}));
            }
            let second = req.target.contains("page=2");
            let live: Vec<&(String, String, String)> =
                tags.iter().filter(|t| !d.lock().unwrap().contains(&t.0)).collect();
            let (page, next) = if second {
                (&live[2.min(live.len())..], Value::Null)
            } else {
                (
                    &live[..2.min(live.len())],
                    json!(format!("http://{host}/v2/namespaces/me/repositories/app/tags?page=2&page_size=100")),
                )
            };
            let results: Vec<Value> = page
                .iter()
                .map(|(n, dg, at)| json!({"name": n, "digest": dg, "tag_last_pushed": at, "images": [{"digest": dg}]}))
                .collect();
            return Response::new(200).json(&json!({"count": live.len(), "next": if live.len() > 2 { next } else { Value::Null }, "results": results}));
        }
        if req.method == "DELETE"
            && req.target.starts_with("/v2/repositories/me/app/tags/")
            && req.target.ends_with('/')
        {
            if !*allow.lock().unwrap() {
                return Response::new(403).json(&json!({"detail": "access denied: insufficient scope"}));
            }
            let tag = req.target.trim_end_matches('/').rsplit('/').next().unwrap().to_string();
            d.lock().unwrap().push(tag);
            return Response::new(204);
        }
        Response::new(404).json(&json!({"detail": "Not Found"}))
    });
    let yaml = format!(
        "version: 1\nregistries:\n  hub: {{kind: dockerhub, repository: {}/me, insecure: true, credentials: {{username: {USER}, password_env: HUB_TOKEN}}}}\nimages:\n  - {{name: app, source: oci:v3, tags: [v3], visibility: public}}\nretention: {{keep_last: 1}}\n",
        reg.host
    );
    std::fs::write(work.path().join("publish.yaml"), yaml).unwrap();
    let prune = || {
        let out = run(publish(work.path())
            .arg("prune")
            .env("HUB_TOKEN", PASSWORD)
            .env("DOCKERHUB_API_URL", format!("http://127.0.0.1:{}", api.port)));
        let (stdout, stderr) = text(&out);
        assert!(!stdout.contains(PASSWORD) && !stderr.contains(PASSWORD), "the token leaked");
        (out.status.code(), stdout, stderr)
    };
    let (code, stdout, stderr) = prune();
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("access denied: insufficient scope") && stdout.contains("Read, Write, Delete"), "{stdout}");
    *allow_delete.lock().unwrap() = true;
    let (code, stdout, stderr) = prune();
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let gone: BTreeSet<String> = deleted.lock().unwrap().iter().cloned().collect();
    assert_eq!(gone, BTreeSet::from(["v1".to_string(), "v2".to_string()]), "{stdout}");
}
