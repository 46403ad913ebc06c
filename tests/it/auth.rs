//! Authentication against a real registry configured for token auth (the Bearer flow GHCR
//! and Docker Hub use), with a local token service; credentials and tokens never printed,
//! and never forwarded to another host on a redirect.

use crate::support;

use std::path::Path;

use crate::support::http::{Response, Server};
use crate::support::image::write_layout;
use crate::support::policy::{Policy, credentials, local, with};
use crate::support::{PASSWORD, Registry, RegistryOptions, USER, publish, run, text};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};

/// Mints a registry token (RS256 JWT with the signing certificate in `x5c`) with openssl,
/// granting pull and push on `repository`.
fn mint_token(dir: &Path, repository: &str) -> String {
    let run_ssl = |args: &[&str]| support::run_ok("openssl", args, dir);
    run_ssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "tok.key",
        "-out",
        "tok.pem",
        "-days",
        "2",
        "-subj",
        "/CN=token issuer",
    ]);
    let der = run_ssl(&["x509", "-in", "tok.pem", "-outform", "DER"]);
    let header = json!({"alg": "RS256", "typ": "JWT", "x5c": [STANDARD.encode(der)]});
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let claims = json!({
        "iss": "test-issuer", "sub": USER, "aud": "test-registry",
        "exp": now + 3600, "nbf": now - 60, "iat": now - 60, "jti": "t1",
        "access": [{"type": "repository", "name": repository, "actions": ["pull", "push"]}]
    });
    let input =
        format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
    std::fs::write(dir.join("input"), &input).unwrap();
    let sig = run_ssl(&["dgst", "-sha256", "-sign", "tok.key", "input"]);
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

struct TokenRegistry {
    reg: Registry,
    tokens: Server,
    token: String,
    _dir: tempfile::TempDir,
}

fn token_registry(repository: &str) -> TokenRegistry {
    let dir = tempfile::tempdir().unwrap();
    let token = mint_token(dir.path(), repository);
    let expected = format!("Basic {}", STANDARD.encode(format!("{USER}:{PASSWORD}")));
    let reply = token.clone();
    let tokens = Server::start(move |req| {
        if req.header("authorization") == Some(expected.as_str()) {
            Response::new(200).json(&json!({"token": reply, "expires_in": 300}))
        } else {
            Response::new(401).json(&json!({"details": "incorrect username or password"}))
        }
    });
    let auth = format!(
        "auth:\n  token:\n    realm: http://127.0.0.1:{}/token\n    service: test-registry\n    issuer: test-issuer\n    rootcertbundle: {}\n",
        tokens.port,
        dir.path().join("tok.pem").display()
    );
    let reg = Registry::start(RegistryOptions { auth_yaml: Some(auth), ..Default::default() });
    TokenRegistry { reg, tokens, token, _dir: dir }
}

fn write_policy(dir: &Path, host: &str) {
    Policy::new()
        .registry("home", with(local(host), json!({"credentials": credentials(USER, "REG_PASSWORD")})))
        .image(json!({"name": "tok", "source": "oci:img", "tags": ["v1"], "visibility": "public"}))
        .write(dir);
}

#[test]
fn bearer_token_flow_pushes_and_asks_for_pull_push_scope() {
    let t = token_registry("ml/tok");
    let work = tempfile::tempdir().unwrap();
    let image = write_layout(&work.path().join("img"), 7, &[40_000, 5_000], "linux", "amd64", "latest");
    write_policy(work.path(), &t.reg.host);
    let out = run(publish(work.path()).args(["run", "-o", "json"]).env("REG_PASSWORD", PASSWORD));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let json: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["images"][0]["targets"][0]["digest"], image.manifest_digest);
    let reqs = t.tokens.requests();
    assert!(!reqs.is_empty(), "the token service was never asked");
    for r in &reqs {
        assert!(r.target.contains("service=test-registry"), "{}", r.target);
        // With credentials: pull and push; the anonymous pull probe after the push asks pull only.
        let scope = if r.header("authorization").is_some() { "%3Apull%2Cpush" } else { "%3Apull" };
        assert!(r.target.contains(&format!("scope=repository%3Aml%2Ftok{scope}")), "{}", r.target);
    }
    assert!(reqs.iter().any(|r| r.header("authorization").is_some()));
}

#[test]
fn wrong_password_at_the_token_service_exits_1() {
    let t = token_registry("ml/tok");
    let work = tempfile::tempdir().unwrap();
    write_layout(&work.path().join("img"), 8, &[1_000], "linux", "amd64", "latest");
    write_policy(work.path(), &t.reg.host);
    let out = run(publish(work.path()).arg("run").env("REG_PASSWORD", "wrong-pw-424242"));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains(&t.reg.host) && stdout.contains("token service"), "{stdout}");
    assert!(!stdout.contains("wrong-pw-424242") && !stderr.contains("wrong-pw-424242"));
}

#[test]
fn password_and_token_never_appear_even_at_trace_level() {
    let t = token_registry("ml/tok");
    let work = tempfile::tempdir().unwrap();
    write_layout(&work.path().join("img"), 9, &[30_000], "linux", "amd64", "latest");
    write_policy(work.path(), &t.reg.host);
    let basic = STANDARD.encode(format!("{USER}:{PASSWORD}"));
    let token_sig = t.token.rsplit('.').next().unwrap().to_string();
    for (debug, log) in [(true, None), (false, Some("trace")), (true, Some("trace"))] {
        for output in ["text", "json"] {
            let mut cmd = publish(work.path());
            cmd.args(["run", "-o", output]).env("REG_PASSWORD", PASSWORD);
            if debug {
                cmd.arg("--debug");
            }
            if let Some(l) = log {
                cmd.env("RUST_LOG", l);
            }
            let out = run(&mut cmd);
            let (stdout, stderr) = text(&out);
            assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
            if log == Some("trace") {
                assert!(stderr.lines().count() > 20, "trace logging was not on: {stderr}");
            }
            for secret in [PASSWORD, basic.as_str(), t.token.as_str(), token_sig.as_str()] {
                assert!(
                    !stdout.contains(secret) && !stderr.contains(secret),
                    "a secret leaked (debug={debug}, RUST_LOG={log:?})"
                );
            }
        }
    }
}

#[test]
fn credentials_are_not_forwarded_when_a_redirect_leaves_the_registry() {
    // A registry stand-in that wants Basic auth and redirects blob checks to another host
    // (object storage), which records what it receives.
    // It answers each HEAD with the blob's true size (what a HEAD's Content-Length carries).
    let work = tempfile::tempdir().unwrap();
    let image = write_layout(&work.path().join("img"), 10, &[2_000], "linux", "amd64", "latest");
    let sizes: Vec<(String, usize)> = [&image.layer_digests[0], &image.config_digest]
        .iter()
        .map(|d| {
            let path = image.dir.join("blobs/sha256").join(&d["sha256:".len()..]);
            (d.to_string(), std::fs::metadata(path).unwrap().len() as usize)
        })
        .collect();
    let storage = Server::start(move |req| {
        let size = sizes.iter().find(|(d, _)| req.target.ends_with(d.as_str())).map_or(0, |(_, n)| *n);
        let mut resp = Response::new(200);
        resp.body = vec![0; size];
        resp
    });
    let storage_port = storage.port;
    let expected = format!("Basic {}", STANDARD.encode(format!("{USER}:{PASSWORD}")));
    let registry = Server::start(move |req| {
        if req.header("authorization") != Some(expected.as_str()) {
            return Response::new(401).header("WWW-Authenticate", "Basic realm=\"test\"");
        }
        match req.method.as_str() {
            "HEAD" if req.target.contains("/blobs/") => {
                Response::new(307).header("Location", &format!("http://localhost:{storage_port}/blob{}", req.target))
            }
            "PUT" if req.target.contains("/manifests/") => Response::new(201),
            // The image is not there yet.
            "HEAD" if req.target.contains("/manifests/") => Response::new(404),
            _ => Response::new(200),
        }
    });
    write_policy(work.path(), &format!("127.0.0.1:{}", registry.port));
    let out = run(publish(work.path()).arg("run").env("REG_PASSWORD", PASSWORD));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let seen = storage.requests();
    assert_eq!(seen.len(), 2, "both blobs were checked through the redirect");
    for r in seen {
        assert_eq!(r.header("authorization"), None, "credentials followed a redirect to another host");
    }
}
