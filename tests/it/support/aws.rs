//! AWS stand-ins: the ECR Public JSON 1.1 API and STS's `AssumeRoleWithWebIdentity`. Every
//! ECR call's SigV4 signature is recomputed with Python's hmac/hashlib (an implementation
//! nobody here wrote) and refused when it does not match.

use std::process::Command;

use base64::Engine;
use serde_json::{Value, json};

use super::http::{Response, Server};
use super::{PASSWORD, USER};

pub const ACCESS_KEY: &str = "AKIDEXAMPLE";
pub const SECRET_KEY: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

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

/// Access keys the stand-ins know, with their secrets and the session token they need.
const KEYS: &[(&str, &str, Option<&str>)] = &[
    (ACCESS_KEY, SECRET_KEY, None),
    (TEMP_KEY, TEMP_SECRET, Some(SESSION_TOKEN)),
    (PROFILE_KEY, PROFILE_SECRET, None),
];
pub const TEMP_KEY: &str = "ASIATEMPORARYEXAMPLE";
pub const TEMP_SECRET: &str = "temporary/secret/from/sts/EXAMPLEKEY";
pub const SESSION_TOKEN: &str = "session-token-from-sts";
pub const PROFILE_KEY: &str = "AKIAPROFILEEXAMPLE";
pub const PROFILE_SECRET: &str = "profile/secret/EXAMPLEKEY";
pub const WEB_IDENTITY_TOKEN: &str = "github-oidc-jwt-example";

/// Whether the request carries a SigV4 signature for ECR Public in us-east-1 by a known key,
/// recomputed by Python (with the session token a temporary key needs).
fn signature_ok(headers: &std::collections::HashMap<String, String>, body: &[u8]) -> bool {
    let auth = headers.get("authorization").cloned().unwrap_or_default();
    let Some(&(key, secret, token)) = KEYS.iter().find(|(k, _, _)| auth.contains(&format!("Credential={k}/"))) else {
        return false;
    };
    if headers.get("x-amz-security-token").map(String::as_str) != token {
        return false;
    }
    let input = json!({"headers": headers, "body": String::from_utf8_lossy(body), "secret": secret}).to_string();
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
    let given = auth.split("Signature=").nth(1).unwrap_or_default();
    !expected.is_empty()
        && expected == given
        && auth.contains(&format!("Credential={key}/"))
        && auth.contains("/us-east-1/ecr-public/aws4_request")
}

/// What the ECR Public stand-in holds: repositories, and images as (repository, digest,
/// imageSizeInBytes).
#[derive(Default)]
pub struct EcrState {
    pub repositories: Vec<String>,
    pub images: Vec<(String, String, u64)>,
    /// Tags and push times (epoch seconds) by digest, as `DescribeImages` gives them.
    pub tags: std::collections::HashMap<String, Vec<String>>,
    pub pushed_at: std::collections::HashMap<String, f64>,
    /// Digests `BatchDeleteImage` removed.
    pub deleted: Vec<String>,
    /// Answer the next call 429 ThrottlingException, as AWS's JSON APIs throttle.
    pub throttle_next: bool,
}

/// The ECR Public JSON 1.1 API: every call's signature checked; `DescribeRepositories` and
/// `DescribeImages` answer one item per page, so following `nextToken` is needed.
pub fn ecr_api(state: std::sync::Arc<std::sync::Mutex<EcrState>>) -> Server {
    Server::start(move |req| {
        if req.method != "POST"
            || req.header("content-type") != Some("application/x-amz-json-1.1")
            || !signature_ok(&req.headers, &req.body)
        {
            return Response::new(403)
                .json(&json!({"__type": "InvalidSignatureException", "message": "bad signature"}));
        }
        let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        let page = body["nextToken"].as_str().map_or(0, |t| t.parse::<usize>().unwrap());
        let paged = |items: Vec<Value>, field: &str| {
            let mut out = json!({ field: items.get(page).map_or(vec![], |i| vec![i.clone()]) });
            if page + 1 < items.len() {
                out["nextToken"] = json!((page + 1).to_string());
            }
            Response::new(200).json(&out)
        };
        let mut state = state.lock().unwrap();
        if state.throttle_next {
            state.throttle_next = false;
            return Response::new(429).json(&json!({"__type": "ThrottlingException", "message": "Rate exceeded"}));
        }
        match req.header("x-amz-target") {
            Some("SpencerFrontendService.GetAuthorizationToken") => {
                let token = base64::engine::general_purpose::STANDARD.encode(format!("{}:{PASSWORD}", USER));
                Response::new(200)
                    .json(&json!({"authorizationData": {"authorizationToken": token, "expiresAt": 4102444800u64}}))
            }
            Some("SpencerFrontendService.CreateRepository") => {
                let name = body["repositoryName"].as_str().unwrap_or_default().to_string();
                if state.repositories.contains(&name) {
                    return Response::new(400)
                        .json(&json!({"__type": "RepositoryAlreadyExistsException", "message": "exists"}));
                }
                state.repositories.push(name.clone());
                Response::new(200).json(&json!({"repository": {"repositoryName": name}}))
            }
            Some("SpencerFrontendService.DescribeRepositories") => paged(
                state.repositories.iter().map(|r| json!({"repositoryName": r, "registryId": "123456789012"})).collect(),
                "repositories",
            ),
            Some("SpencerFrontendService.DescribeImages") => {
                let repo = body["repositoryName"].as_str().unwrap_or_default();
                if !state.repositories.iter().any(|r| r == repo) {
                    return Response::new(400).json(&json!({"__type": "RepositoryNotFoundException", "message": repo}));
                }
                let details = state
                    .images
                    .iter()
                    .filter(|(r, _, _)| r == repo)
                    .map(|(r, d, size)| {
                        let mut i = json!({"repositoryName": r, "imageDigest": d, "imageSizeInBytes": size});
                        if let Some(t) = state.tags.get(d) {
                            i["imageTags"] = json!(t);
                        }
                        if let Some(p) = state.pushed_at.get(d) {
                            i["imagePushedAt"] = json!(p);
                        }
                        i
                    })
                    .collect();
                paged(details, "imageDetails")
            }
            Some("SpencerFrontendService.BatchDeleteImage") => {
                let repo = body["repositoryName"].as_str().unwrap_or_default().to_string();
                let mut failures = Vec::new();
                let mut deleted = Vec::new();
                for id in body["imageIds"].as_array().into_iter().flatten() {
                    let d = id["imageDigest"].as_str().unwrap_or_default().to_string();
                    match state.images.iter().position(|(r, x, _)| r == &repo && x == &d) {
                        Some(i) => {
                            state.images.remove(i);
                            state.deleted.push(d.clone());
                            deleted.push(json!({"imageDigest": d}));
                        }
                        None => failures.push(json!({"imageId": {"imageDigest": d}, "failureCode": "ImageNotFound", "failureReason": "Requested image not found"})),
                    }
                }
                Response::new(200).json(&json!({"imageIds": deleted, "failures": failures}))
            }
            _ => Response::new(400).json(&json!({"__type": "UnknownOperationException"})),
        }
    })
}

/// STS `AssumeRoleWithWebIdentity` (query protocol): checks the form, answers temporary keys.
pub fn sts() -> Server {
    Server::start(|req| {
        let form: std::collections::HashMap<String, String> =
            url::form_urlencoded::parse(&req.body).into_owned().collect();
        let get = |k: &str| form.get(k).map(String::as_str);
        if req.method != "POST"
            || get("Action") != Some("AssumeRoleWithWebIdentity")
            || get("Version") != Some("2011-06-15")
            || get("RoleArn") != Some("arn:aws:iam::123456789012:role/publish")
            || get("WebIdentityToken") != Some(WEB_IDENTITY_TOKEN)
            || get("RoleSessionName").is_none()
        {
            return Response::new(400)
                .header("content-type", "text/xml")
                .text("<ErrorResponse><Error><Code>InvalidParameterValue</Code></Error></ErrorResponse>");
        }
        Response::new(200).header("content-type", "text/xml").text(&format!(
            "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><AssumeRoleWithWebIdentityResult><SubjectFromWebIdentityToken>repo:octo/app:ref:refs/heads/main</SubjectFromWebIdentityToken><AssumedRoleUser><Arn>arn:aws:sts::123456789012:assumed-role/publish/gha</Arn><AssumedRoleId>AROAEXAMPLE:gha</AssumedRoleId></AssumedRoleUser><Credentials><AccessKeyId>{TEMP_KEY}</AccessKeyId><SecretAccessKey>{TEMP_SECRET}</SecretAccessKey><SessionToken>{SESSION_TOKEN}</SessionToken><Expiration>2099-01-01T00:00:00Z</Expiration></Credentials><Audience>sts.amazonaws.com</Audience></AssumeRoleWithWebIdentityResult><ResponseMetadata><RequestId>r1</RequestId></ResponseMetadata></AssumeRoleWithWebIdentityResponse>"
        ))
    })
}
