//! Docker Hub would create a pushed-to repository with the account's default visibility
//! (public on the free plan): a private image's repository is created private through the Hub
//! API before the first push, and an existing public one is refused before anything is
//! written. A Hub API stand-in and a real registry with htpasswd on loopback.

use std::sync::{Arc, Mutex};

use crate::support::http::{Response, Server};
use crate::support::image::write_layout;
use crate::support::policy::{Policy, credentials};
use crate::support::{PASSWORD, Registry, RegistryOptions, USER, publish, run, text};
use serde_json::{Value, json};

/// A Hub API stand-in; `existing`: the repository already exists with this `is_private`.
fn hub(existing: Option<bool>) -> (Server, Arc<Mutex<Vec<Value>>>) {
    let created = Arc::new(Mutex::new(Vec::new()));
    let log = created.clone();
    let server = Server::start(move |req| match (req.method.as_str(), req.target.as_str()) {
        ("POST", "/v2/auth/token") => {
            let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
            if body["identifier"] == USER && body["secret"] == PASSWORD {
                Response::new(200).json(&json!({"access_token": "hub-jwt"}))
            } else {
                Response::new(401).json(&json!({"message": "incorrect"}))
            }
        }
        (_, _) if req.header("authorization") != Some("Bearer hub-jwt") => Response::new(401),
        ("GET", "/v2/namespaces/me/repositories/app") => match existing {
            Some(p) => Response::new(200).json(&json!({"name": "app", "is_private": p})),
            None => Response::new(404),
        },
        ("POST", "/v2/namespaces/me/repositories") => {
            log.lock().unwrap().push(serde_json::from_slice(&req.body).unwrap_or(Value::Null));
            Response::new(201).json(&json!({"name": "app"}))
        }
        _ => Response::new(404),
    });
    (server, created)
}

fn publish_private(reg: &Registry, hub: &Server) -> (Option<i32>, Value, String) {
    let work = tempfile::tempdir().unwrap();
    write_layout(&work.path().join("img"), 55, &[3_000], "linux", "amd64", "latest");
    Policy::new()
        .registry("hub", hub_registry(&reg.host))
        .image(json!({"name": "app", "source": "oci:img", "tags": ["v1"], "visibility": "private"}))
        .write(work.path());
    let out = run(publish(work.path())
        .args(["run", "-o", "json"])
        .env("HUB_TOKEN", PASSWORD)
        .env("DOCKERHUB_API_URL", format!("http://127.0.0.1:{}", hub.port)));
    let (stdout, stderr) = text(&out);
    let json = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
    (out.status.code(), json, stderr)
}

#[test]
fn a_private_image_gets_a_private_repository_before_the_first_push() {
    let reg = Registry::start(RegistryOptions { htpasswd: true, ..Default::default() });
    let (hub, created) = hub(None);
    let (code, json, stderr) = publish_private(&reg, &hub);
    assert_eq!(code, Some(0), "{json}\n{stderr}");
    assert_eq!(*created.lock().unwrap(), vec![json!({"name": "app", "namespace": "me", "is_private": true})]);
    assert_eq!(json["images"][0]["targets"][0]["anonymous_pull"], false, "checked, and not pullable");
}

#[test]
fn a_private_image_is_not_pushed_into_an_existing_public_repository() {
    let reg = Registry::start(RegistryOptions { htpasswd: true, ..Default::default() });
    let (hub, created) = hub(Some(false));
    let (code, json, _) = publish_private(&reg, &hub);
    assert_eq!(code, Some(1), "{json}");
    let error = json["images"][0]["targets"][0]["error"].as_str().unwrap();
    assert!(error.contains("me/app exists and is public"), "{error}");
    assert!(created.lock().unwrap().is_empty());
    assert!(!reg.inspect(&format!("{}/me/app:v1", reg.host), false).status.success(), "something was pushed");
}

/// `publish plan` reads Docker Hub's anonymous pull limit from a HEAD (its `ratelimit-limit`
/// header, window included) and ranks a public image's Docker Hub candidate after an equally
/// cheap registry without such a limit, quoting the measured figure.
#[test]
fn the_anonymous_pull_limit_is_measured_from_the_ratelimit_header_and_ranks_docker_hub_lower() {
    let hub = Server::start(|req| match (req.method.as_str(), req.target.as_str()) {
        ("GET", "/v2/") => Response::new(200),
        ("HEAD", "/v2/ratelimitpreview/test/manifests/latest") if req.header("authorization").is_none() => {
            Response::new(200).header("ratelimit-limit", "50;w=3600").header("ratelimit-remaining", "49;w=3600")
        }
        _ => Response::new(404),
    });
    let work = tempfile::tempdir().unwrap();
    write_layout(&work.path().join("img"), 56, &[3_000], "linux", "amd64", "latest");
    Policy::new()
        .registry("hub", hub_registry(&format!("127.0.0.1:{}", hub.port)))
        .local("home", "127.0.0.1:1")
        .image(json!({"name": "app", "source": "oci:img", "tags": ["v1"], "visibility": "public", "registries": ["hub", "home"]}))
        .write(work.path());
    let out = run(publish(work.path())
        .args(["plan", "-o", "json"])
        .env("HUB_TOKEN", PASSWORD)
        .env("DOCKERHUB_API_URL", format!("http://127.0.0.1:{}", hub.port)));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let json: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["images"][0]["selected"], json!(["home"]), "{stdout}");
    let verdict = &json["images"][0]["candidates"][0];
    assert_eq!(verdict["usage"]["anonymous_pulls"], json!([50, 3600]));
    let reasons = verdict["reasons"].to_string();
    assert!(reasons.contains("ranks after home, which costs the same: RunPod pulls this image anonymously and cold starts would hit the limit of 50 anonymous pulls per 1 h per IPv4 address or IPv6 /64 (measured: ratelimit-limit)"), "{reasons}");
}

/// A Docker Hub stand-in at `host` (namespace `me`), with the account's token in `HUB_TOKEN`.
fn hub_registry(host: &str) -> serde_json::Value {
    json!({"kind": "dockerhub", "repository": format!("{host}/me"), "insecure": true, "credentials": credentials(USER, "HUB_TOKEN")})
}
