//! ECR Public: AWS credentials → SigV4-signed GetAuthorizationToken and CreateRepository
//! against a stand-in of the ECR Public JSON API that checks every signature with Python's
//! hmac/hashlib (an implementation nobody here wrote), then a push with `AWS:<token>` to a
//! real registry.

mod support;

use std::process::Command;

use base64::Engine;
use serde_json::{Value, json};
use support::http::{Response, Server};
use support::image::write_layout;
use support::{PASSWORD, Registry, RegistryOptions, publish, run, text};

const ACCESS_KEY: &str = "AKIDEXAMPLE";
const SECRET_KEY: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

/// The SigV4 signature AWS would compute, by Python's standard library.
const VERIFY: &str = r#"
import hashlib, hmac, json, sys
r = json.load(sys.stdin)
h = {k.lower(): v for k, v in r["headers"].items()}
auth = h["authorization"]
signed = auth.split("SignedHeaders=")[1].split(",")[0]
scope = auth.split("Credential=")[1].split(",")[0].split("/", 1)[1]
date = h["x-amz-date"]
canonical = "\n".join(["POST", "/", ""] + [k + ":" + h[k].strip() for k in signed.split(";")] + ["", signed, hashlib.sha256(r["body"].encode()).hexdigest()])
to_sign = "\n".join(["AWS4-HMAC-SHA256", date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
k = ("AWS4" + r["secret"]).encode()
for part in scope.split("/"):
    k = hmac.new(k, part.encode(), hashlib.sha256).digest()
print(hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest())
"#;

fn signature_ok(headers: &std::collections::HashMap<String, String>, body: &[u8]) -> bool {
    let input = json!({"headers": headers, "body": String::from_utf8_lossy(body), "secret": SECRET_KEY}).to_string();
    let mut child = Command::new("python3")
        .args(["-c", VERIFY])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let expected = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let given = headers.get("authorization").and_then(|a| a.split("Signature=").nth(1)).unwrap_or_default();
    !expected.is_empty()
        && expected == given
        && headers.get("authorization").is_some_and(|a| {
            a.contains(&format!("Credential={ACCESS_KEY}/")) && a.contains("/us-east-1/ecr-public/aws4_request")
        })
}

#[test]
fn ecr_public_gets_a_token_creates_the_repository_and_pushes() {
    let reg = Registry::start(RegistryOptions { htpasswd: true, ..Default::default() });
    let created = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let c = created.clone();
    let api = Server::start(move |req| {
        if req.method != "POST"
            || req.header("content-type") != Some("application/x-amz-json-1.1")
            || !signature_ok(&req.headers, &req.body)
        {
            return Response::new(403)
                .json(&json!({"__type": "InvalidSignatureException", "message": "bad signature"}));
        }
        let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        match req.header("x-amz-target") {
            Some("SpencerFrontendService.GetAuthorizationToken") => {
                let token = base64::engine::general_purpose::STANDARD.encode(format!("{}:{PASSWORD}", support::USER));
                Response::new(200)
                    .json(&json!({"authorizationData": {"authorizationToken": token, "expiresAt": 4102444800u64}}))
            }
            Some("SpencerFrontendService.CreateRepository") => {
                let name = body["repositoryName"].as_str().unwrap_or_default().to_string();
                let mut c = c.lock().unwrap();
                if c.contains(&name) {
                    return Response::new(400)
                        .json(&json!({"__type": "RepositoryAlreadyExistsException", "message": "exists"}));
                }
                c.push(name.clone());
                Response::new(200).json(&json!({"repository": {"repositoryName": name}}))
            }
            _ => Response::new(400).json(&json!({"__type": "UnknownOperationException"})),
        }
    });
    let work = tempfile::tempdir().unwrap();
    let image = write_layout(&work.path().join("img"), 98, &[20_000], "linux", "amd64", "latest");
    // ECR Public's registry is public.ecr.aws; a loopback stand-in takes its place here.
    std::fs::write(
        work.path().join("publish.yaml"),
        format!("version: 1\nregistries:\n  ecr:\n    kind: ecr-public\n    repository: {}/my-alias\n    insecure: true\nimages:\n  - name: app\n    source: oci:img\n    visibility: public\n    tags: [v1]\n", reg.host),
    )
    .unwrap();
    for _ in 0..2 {
        let out = run(publish(work.path())
            .args(["run", "-o", "json"])
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("AWS_ENDPOINT_URL_ECR_PUBLIC", format!("http://127.0.0.1:{}", api.port)));
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
        assert!(!stdout.contains(SECRET_KEY) && !stderr.contains(SECRET_KEY) && !stderr.contains(PASSWORD));
        let json: Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(json["images"][0]["targets"][0]["digest"], image.manifest_digest);
    }
    assert_eq!(*created.lock().unwrap(), vec!["app".to_string()], "created once, found the second time");
    let signed = api
        .requests()
        .iter()
        .filter(|r| r.header("authorization").is_some_and(|a| a.starts_with("AWS4-HMAC-SHA256")))
        .count();
    assert_eq!(signed, 4, "every API call is signed");

    // Without AWS credentials: a clear error, nothing pushed.
    let mut cmd = publish(work.path());
    for var in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_ROLE_ARN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_PROFILE",
        "AWS_SHARED_CREDENTIALS_FILE",
    ] {
        cmd.env_remove(var);
    }
    let out = run(cmd
        .arg("run")
        .env("HOME", work.path())
        .env("AWS_ENDPOINT_URL_ECR_PUBLIC", format!("http://127.0.0.1:{}", api.port)));
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout.contains("no AWS credentials"), "{stdout}");
}
