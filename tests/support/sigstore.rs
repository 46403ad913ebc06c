//! Local stand-ins for keyless signing's services, speaking their documented requests and
//! refusing others: GitHub's OIDC token endpoint, Fulcio v2 `signingCert` (checks the proof of
//! possession over the token's `sub`, issues a certificate from a test CA with openssl, SAN
//! `https://github.com/` + `job_workflow_ref`), and Rekor (`hashedrekord` entries whose
//! signature it checks, 409 for a duplicate, and `entries/retrieve`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD};
use serde_json::{Value, json};

use super::http::{Response, Server};

pub const REQUEST_TOKEN: &str = "actions-request-token-9a8b7c";
pub const ISSUER: &str = "https://token.actions.githubusercontent.com";
pub const WORKFLOW_REF: &str = "octo/repo/.github/workflows/publish.yml@refs/heads/main";

pub fn identity() -> String {
    format!("https://github.com/{WORKFLOW_REF}")
}

/// A GitHub-shaped token (its signature is not checked by the Fulcio stand-in).
pub fn token() -> String {
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","typ":"JWT","kid":"test"}"#);
    let claims = json!({
        "iss": ISSUER, "aud": "sigstore", "sub": "repo:octo/repo:ref:refs/heads/main",
        "repository": "octo/repo", "ref": "refs/heads/main", "job_workflow_ref": WORKFLOW_REF,
        "exp": 4102444800u64, "iat": 1700000000u64
    });
    format!("{header}.{}.c2lnbmF0dXJlLW5vdC1jaGVja2Vk", URL_SAFE_NO_PAD.encode(claims.to_string()))
}

pub struct Sigstore {
    pub oidc: Server,
    pub fulcio: Server,
    pub rekor: Server,
    pub rekor_entries: Arc<Mutex<Vec<Value>>>,
    /// While above 0, Rekor answers 503 (and counts down): faults for the fault run.
    pub rekor_faults: Arc<std::sync::atomic::AtomicU32>,
    pub dir: tempfile::TempDir,
}

impl Sigstore {
    pub fn roots(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
    pub fn token_url(&self) -> String {
        format!("http://127.0.0.1:{}/token?api-version=2.0", self.oidc.port)
    }
    pub fn fulcio_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.fulcio.port)
    }
    pub fn rekor_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.rekor.port)
    }
}

fn openssl_ok(args: &[&str], dir: &Path) -> bool {
    std::process::Command::new(super::require("openssl"))
        .args(args)
        .current_dir(dir)
        .output()
        .is_ok_and(|o| o.status.success())
}

pub fn start() -> Sigstore {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    super::make_ca(&d, "/O=test fulcio/CN=test fulcio root");

    let oidc = Server::start(|req| {
        let ok = req.header("authorization") == Some(&format!("Bearer {REQUEST_TOKEN}"))
            && req.target.contains("audience=sigstore");
        if ok { Response::new(200).json(&json!({"value": token()})) } else { Response::new(401) }
    });

    let fd = d.clone();
    let counter = Arc::new(Mutex::new(0u32));
    let fulcio = Server::start(move |req| {
        if req.method != "POST" || req.target != "/api/v2/signingCert" {
            return Response::new(404);
        }
        let Ok(body) = serde_json::from_slice::<Value>(&req.body) else { return Response::new(400) };
        let (Some(token), Some(alg), Some(public), Some(proof)) = (
            body.pointer("/credentials/oidcIdentityToken").and_then(Value::as_str),
            body.pointer("/publicKeyRequest/publicKey/algorithm").and_then(Value::as_str),
            body.pointer("/publicKeyRequest/publicKey/content").and_then(Value::as_str),
            body.pointer("/publicKeyRequest/proofOfPossession").and_then(Value::as_str),
        ) else {
            return Response::new(400).json(&json!({"code": 3, "message": "missing fields"}));
        };
        let claims: Value = token
            .split('.')
            .nth(1)
            .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null);
        let (Some(sub), Some(wf)) = (claims["sub"].as_str(), claims["job_workflow_ref"].as_str()) else {
            return Response::new(401).json(&json!({"code": 16, "message": "invalid token"}));
        };
        if alg != "ECDSA" {
            return Response::new(400).json(&json!({"code": 3, "message": "unsupported algorithm"}));
        }
        let n = {
            let mut c = counter.lock().unwrap();
            *c += 1;
            *c
        };
        let work = fd.join(format!("req{n}"));
        std::fs::create_dir_all(&work).unwrap();
        std::fs::write(work.join("pub.pem"), public).unwrap();
        std::fs::write(work.join("sub"), sub).unwrap();
        std::fs::write(work.join("proof"), B64.decode(proof).unwrap_or_default()).unwrap();
        if !openssl_ok(&["dgst", "-sha256", "-verify", "pub.pem", "-signature", "proof", "sub"], &work) {
            return Response::new(400).json(&json!({"code": 3, "message": "proof of possession does not verify"}));
        }
        std::fs::write(
            work.join("ext.cnf"),
            format!(
                "subjectAltName=critical,URI:https://github.com/{wf}\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=codeSigning\n1.3.6.1.4.1.57264.1.8=ASN1:UTF8String:{}\nbasicConstraints=critical,CA:FALSE\n",
                claims["iss"].as_str().unwrap_or_default()
            ),
        )
        .unwrap();
        let ca = fd.join("ca.pem").display().to_string();
        let ca_key = fd.join("ca.key").display().to_string();
        if !openssl_ok(
            &[
                "x509",
                "-new",
                "-subj",
                "/O=sigstore.dev",
                "-force_pubkey",
                "pub.pem",
                "-CA",
                &ca,
                "-CAkey",
                &ca_key,
                "-days",
                "1",
                "-extfile",
                "ext.cnf",
                "-out",
                "leaf.pem",
            ],
            &work,
        ) {
            return Response::new(500);
        }
        let leaf = std::fs::read_to_string(work.join("leaf.pem")).unwrap();
        let root = std::fs::read_to_string(fd.join("ca.pem")).unwrap();
        Response::new(201).json(&json!({"signedCertificateEmbeddedSct": {"chain": {"certificates": [leaf, root]}}}))
    });

    let entries: Arc<Mutex<Vec<Value>>> = Arc::new(Mutex::new(Vec::new()));
    let store = entries.clone();
    let rd = d.clone();
    let rekor_faults = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let faults = rekor_faults.clone();
    let rekor = Server::start(move |req| {
        let take = |n: u32| (n > 0).then(|| n - 1);
        if faults.fetch_update(std::sync::atomic::Ordering::SeqCst, std::sync::atomic::Ordering::SeqCst, take).is_ok() {
            return Response::new(503);
        }
        let Ok(body) = serde_json::from_slice::<Value>(&req.body) else { return Response::new(400) };
        let answer = |index: usize, e: &Value| {
            let uuid = format!("{:064x}", index + 1);
            json!({uuid: {
                "body": B64.encode(e.to_string()), "integratedTime": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs(),
                "logID": "c0d23d6ad406973f9559f3ba2d1ca01f84147d8ffc5b8445c224f98b9591801d", "logIndex": index,
                "verification": {"signedEntryTimestamp": B64.encode(format!("set-{index}"))}
            }})
        };
        match (req.method.as_str(), req.target.as_str()) {
            ("POST", "/api/v1/log/entries") => {
                let ok = body["kind"] == "hashedrekord"
                    && body["apiVersion"] == "0.0.1"
                    && body.pointer("/spec/data/hash/algorithm") == Some(&json!("sha256"));
                let (Some(hash), Some(sig), Some(cert)) = (
                    body.pointer("/spec/data/hash/value").and_then(Value::as_str),
                    body.pointer("/spec/signature/content").and_then(Value::as_str),
                    body.pointer("/spec/signature/publicKey/content").and_then(Value::as_str),
                ) else {
                    return Response::new(400).json(&json!({"code": 400, "message": "invalid hashedrekord"}));
                };
                if !ok {
                    return Response::new(400).json(&json!({"code": 400, "message": "invalid hashedrekord"}));
                }
                // The signature must verify over the hash with the certificate's key.
                let work = tempfile::tempdir_in(&rd).unwrap();
                std::fs::write(work.path().join("cert.pem"), B64.decode(cert).unwrap_or_default()).unwrap();
                std::fs::write(work.path().join("sig"), B64.decode(sig).unwrap_or_default()).unwrap();
                std::fs::write(work.path().join("hash"), hex::decode(hash).unwrap_or_default()).unwrap();
                let verified =
                    openssl_ok(&["x509", "-in", "cert.pem", "-pubkey", "-noout", "-out", "pub.pem"], work.path())
                        && openssl_ok(
                            &["pkeyutl", "-verify", "-pubin", "-inkey", "pub.pem", "-sigfile", "sig", "-in", "hash"],
                            work.path(),
                        );
                if !verified {
                    return Response::new(400).json(&json!({"code": 400, "message": "signature does not verify"}));
                }
                let mut all = store.lock().unwrap();
                if let Some(i) = all.iter().position(|e| *e == body) {
                    return Response::new(409)
                        .header("Location", &format!("/api/v1/log/entries/{:064x}", i + 1))
                        .json(&json!({"code": 409, "message": "an equivalent entry already exists"}));
                }
                all.push(body.clone());
                Response::new(201).json(&answer(all.len() - 1, &body))
            }
            ("POST", "/api/v1/log/entries/retrieve") => {
                let all = store.lock().unwrap();
                let found: Vec<Value> = body["entries"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|e| all.iter().position(|x| x == e).map(|i| answer(i, e)))
                    .collect();
                Response::new(200).json(&Value::Array(found))
            }
            _ => Response::new(404),
        }
    });
    Sigstore { oidc, fulcio, rekor, rekor_entries: entries, rekor_faults, dir }
}
