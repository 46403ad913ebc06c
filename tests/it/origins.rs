//! Credentials go only to the registry's origin and to the token realm its challenge names:
//! a hostile registry that sends uploads to another origin (`Location` on another port) gets
//! the blob there without `Authorization` — Basic or Bearer, streamed or chunked.

use crate::support::http::{Response, Server};
use crate::support::image::write_layout;
use crate::support::{publish, run, text};

const PASSWORD: &str = "origin-pw-5c1e7a9d";
const TOKEN: &str = "origin-token-8f2b6d4e";

/// The other origin: accepts whatever upload comes and records it.
fn elsewhere() -> Server {
    Server::start(|req| match req.method.as_str() {
        "PATCH" => Response::new(202).header("Location", &req.target).header("Range", "0-0"),
        "PUT" => Response::new(201),
        _ => Response::new(404),
    })
}

/// A registry whose uploads start on `other`'s origin; `bearer`: a token realm on `token_port`.
fn hostile_registry(other: u16, bearer: Option<u16>) -> Server {
    Server::start(move |req| {
        let authorized = req.header("authorization").is_some();
        match (req.method.as_str(), req.target.as_str()) {
            ("GET", "/v2/") if !authorized => {
                let challenge = match bearer {
                    Some(p) => format!("Bearer realm=\"http://127.0.0.1:{p}/token\",service=\"hostile\""),
                    None => "Basic realm=\"hostile\"".into(),
                };
                Response::new(401).header("WWW-Authenticate", &challenge)
            }
            ("GET", "/v2/") => Response::new(200),
            ("HEAD", _) => Response::new(404),
            ("POST", t) if t.contains("/blobs/uploads/") => Response::new(202)
                .header("Location", &format!("http://127.0.0.1:{other}/upload/{}", t.len()))
                .header("Range", "0-0"),
            ("PUT", t) if t.contains("/manifests/") => Response::new(201),
            _ => Response::new(404),
        }
    })
}

fn push_through(bearer: bool, chunked: bool) {
    let work = tempfile::tempdir().unwrap();
    write_layout(&work.path().join("img"), 61, &[9_000], "linux", "amd64", "latest");
    let other = elsewhere();
    let token_server = Server::start(|_| Response::new(200).json(&serde_json::json!({"token": TOKEN})));
    let reg = hostile_registry(other.port, bearer.then_some(token_server.port));
    let mut cmd = publish(work.path());
    cmd.args(["push", "oci:img", &format!("docker://127.0.0.1:{}/ml/x:v1", reg.port), "--insecure"])
        .args(["--username", "u", "--password-env", "P", "--debug"])
        .env("P", PASSWORD);
    if chunked {
        cmd.args(["--chunk-size", "4KiB"]);
    }
    let out = run(&mut cmd);
    let (stdout, stderr) = text(&out);
    let uploads = other.requests();
    assert!(!uploads.is_empty(), "the upload never reached the other origin: {stdout}\n{stderr}");
    for r in &uploads {
        assert_eq!(r.header("authorization"), None, "{} {} carried credentials to another origin", r.method, r.target);
    }
    // The registry itself and the realm got them, as they must.
    assert!(reg.requests().iter().any(|r| r.header("authorization").is_some()));
    for secret in [PASSWORD, TOKEN] {
        assert!(!stdout.contains(secret) && !stderr.contains(secret), "a secret was printed");
    }
}

#[test]
fn basic_credentials_stay_home_on_a_streamed_upload() {
    push_through(false, false);
}

#[test]
fn basic_credentials_stay_home_on_a_chunked_upload() {
    push_through(false, true);
}

#[test]
fn a_bearer_token_stays_home_on_a_streamed_upload() {
    push_through(true, false);
}

#[test]
fn a_bearer_token_stays_home_on_a_chunked_upload() {
    push_through(true, true);
}
