//! ECR Public: AWS credentials (environment, shared credentials file, or web identity from
//! GitHub's OIDC through STS) → SigV4-signed `GetAuthorizationToken` in us-east-1 → Basic
//! `AWS:<token>` for the registry; and `CreateRepository`, since ECR refuses pushes to a
//! repository that does not exist. The API URL follows the SDKs' endpoint override
//! (`AWS_ENDPOINT_URL_ECR_PUBLIC`, then `AWS_ENDPOINT_URL`).

use base64::Engine;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use super::Credential;
use crate::credentials::Env;
use crate::retry::RetryPolicy;
use crate::types::Secret;

const REGION: &str = "us-east-1";
const SERVICE: &str = "ecr-public";
const TARGET_PREFIX: &str = "SpencerFrontendService";

#[derive(Debug, thiserror::Error)]
#[error("ECR Public: {0}")]
pub struct EcrError(String);

/// AWS credentials.
#[derive(Debug, Clone)]
pub struct AwsCredentials {
    pub access_key: String,
    pub secret_key: Secret,
    pub session_token: Option<Secret>,
}

/// The standard chain: environment, then web identity (STS), then the shared credentials file,
/// from the environment the command layer passes in.
pub async fn credentials(http: &reqwest::Client, vars: &Env) -> Result<AwsCredentials, EcrError> {
    let env = |k: &str| vars.get(k).filter(|v| !v.is_empty()).cloned();
    if let (Some(access_key), Some(secret)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
        return Ok(AwsCredentials {
            access_key,
            secret_key: Secret::new(secret),
            session_token: env("AWS_SESSION_TOKEN").map(Secret::new),
        });
    }
    if let (Some(role), Some(file)) = (env("AWS_ROLE_ARN"), env("AWS_WEB_IDENTITY_TOKEN_FILE")) {
        let sts = env("AWS_ENDPOINT_URL_STS")
            .or_else(|| env("AWS_ENDPOINT_URL"))
            .unwrap_or_else(|| "https://sts.amazonaws.com".into());
        return web_identity(http, &role, &file, &sts).await;
    }
    let path = env("AWS_SHARED_CREDENTIALS_FILE")
        .map(std::path::PathBuf::from)
        .or_else(|| env("HOME").map(|h| std::path::Path::new(&h).join(".aws/credentials")));
    let profile = env("AWS_PROFILE").unwrap_or_else(|| "default".into());
    if let Some(path) = path
        && let Ok(text) = crate::http::read_file_limited(&path, crate::http::MAX_SMALL_BODY)
    {
        let text = String::from_utf8_lossy(&text);
        let mut section = String::new();
        let (mut key, mut secret, mut token) = (None, None, None);
        for line in text.lines().map(str::trim) {
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name.trim().to_string();
            } else if section == profile
                && let Some((k, v)) = line.split_once('=')
            {
                match k.trim() {
                    "aws_access_key_id" => key = Some(v.trim().to_string()),
                    "aws_secret_access_key" => secret = Some(Secret::new(v.trim())),
                    "aws_session_token" => token = Some(Secret::new(v.trim())),
                    _ => {}
                }
            }
        }
        if let (Some(access_key), Some(secret_key)) = (key, secret) {
            return Ok(AwsCredentials { access_key, secret_key, session_token: token });
        }
    }
    Err(EcrError(
        "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_ROLE_ARN with AWS_WEB_IDENTITY_TOKEN_FILE, or a profile in ~/.aws/credentials (aws-actions/configure-aws-credentials sets them)".into(),
    ))
}

/// STS `AssumeRoleWithWebIdentity` (unsigned: the token is the proof).
async fn web_identity(http: &reqwest::Client, role: &str, file: &str, url: &str) -> Result<AwsCredentials, EcrError> {
    let token = crate::http::read_file_limited(std::path::Path::new(file), crate::http::MAX_SMALL_BODY)
        .map_err(|e| EcrError(format!("the web identity token: {e}")))?;
    let token = Secret::new(String::from_utf8_lossy(&token).trim());
    let form = [
        ("Action", "AssumeRoleWithWebIdentity"),
        ("Version", "2011-06-15"),
        ("RoleArn", role),
        ("RoleSessionName", "publish"),
        ("WebIdentityToken", token.expose()),
    ];
    let body: String = form.iter().map(|(k, v)| format!("{k}={}", urlencode(v))).collect::<Vec<_>>().join("&");
    let resp = crate::retry::send(&RetryPolicy::default(), "STS AssumeRoleWithWebIdentity", || {
        http.post(url).header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded").body(body.clone())
    })
    .await
    .map_err(|e| EcrError(format!("STS: {e}")))?;
    let status = resp.status();
    let text = crate::http::body_limited(resp, crate::http::MAX_SMALL_BODY).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    if !status.is_success() {
        return Err(EcrError(format!("STS refused the web identity for {role}: {status}")));
    }
    let tag = |name: &str| {
        text.split(&format!("<{name}>")).nth(1).and_then(|t| t.split(&format!("</{name}>")).next()).map(str::to_string)
    };
    match (tag("AccessKeyId"), tag("SecretAccessKey"), tag("SessionToken")) {
        (Some(access_key), Some(secret), token) => {
            Ok(AwsCredentials { access_key, secret_key: Secret::new(secret), session_token: token.map(Secret::new) })
        }
        _ => Err(EcrError("STS answered without credentials".into())),
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let (mut inner, mut outer) = (Sha256::new(), Sha256::new());
    inner.update(k.iter().map(|b| b ^ 0x36).collect::<Vec<_>>());
    inner.update(data);
    outer.update(k.iter().map(|b| b ^ 0x5c).collect::<Vec<_>>());
    outer.update(inner.finalize());
    outer.finalize().to_vec()
}

/// SigV4 headers for a JSON 1.1 POST to `/` of `host` at `amz_date` (`YYYYMMDDTHHMMSSZ`).
pub fn sign(creds: &AwsCredentials, host: &str, target: &str, body: &[u8], amz_date: &str) -> Vec<(String, String)> {
    let date = &amz_date[..8];
    let payload_hash = hex::encode(Sha256::digest(body));
    let mut headers = vec![
        ("content-type".to_string(), "application/x-amz-json-1.1".to_string()),
        ("host".to_string(), host.to_string()),
        ("x-amz-date".to_string(), amz_date.to_string()),
        ("x-amz-target".to_string(), target.to_string()),
    ];
    if let Some(t) = &creds.session_token {
        headers.push(("x-amz-security-token".to_string(), t.expose().to_string()));
    }
    headers.sort();
    let signed: Vec<&str> = headers.iter().map(|(k, _)| k.as_str()).collect();
    let canonical_headers: String = headers.iter().map(|(k, v)| format!("{k}:{}\n", v.trim())).collect();
    let canonical = format!("POST\n/\n\n{canonical_headers}\n{}\n{payload_hash}", signed.join(";"));
    let scope = format!("{date}/{REGION}/{SERVICE}/aws4_request");
    let to_sign =
        format!("AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}", hex::encode(Sha256::digest(canonical.as_bytes())));
    let key = [date, REGION, SERVICE, "aws4_request"]
        .iter()
        .fold(format!("AWS4{}", creds.secret_key.expose()).into_bytes(), |k, part| hmac(&k, part.as_bytes()));
    let signature = hex::encode(hmac(&key, to_sign.as_bytes()));
    headers.push((
        "authorization".to_string(),
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={}, Signature={signature}",
            creds.access_key,
            signed.join(";")
        ),
    ));
    headers
}

fn amz_date_now() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// The ECR Public API.
pub struct Api {
    http: reqwest::Client,
    url: url::Url,
    creds: AwsCredentials,
}

impl Api {
    pub async fn from_environment(vars: &Env) -> Result<Api, EcrError> {
        let env = |k: &str| vars.get(k).filter(|v| !v.is_empty()).cloned();
        let http = crate::http::client(None).map_err(|e| EcrError(e.to_string()))?;
        let creds = credentials(&http, vars).await?;
        let base = env("AWS_ENDPOINT_URL_ECR_PUBLIC")
            .or_else(|| env("AWS_ENDPOINT_URL"))
            .unwrap_or_else(|| format!("https://api.ecr-public.{REGION}.amazonaws.com"));
        let url = url::Url::parse(&format!("{}/", base.trim_end_matches('/')))
            .map_err(|e| EcrError(format!("{base}: {e}")))?;
        Ok(Api { http, url, creds })
    }

    async fn call(&self, operation: &str, body: Value) -> Result<(u16, Value), EcrError> {
        let body = body.to_string().into_bytes();
        let host = match self.url.port() {
            Some(p) => format!("{}:{p}", self.url.host_str().unwrap_or_default()),
            None => self.url.host_str().unwrap_or_default().to_string(),
        };
        let target = format!("{TARGET_PREFIX}.{operation}");
        // Signed afresh for every attempt: the signature covers the time.
        let resp = crate::retry::send(&RetryPolicy::default(), operation, || {
            let mut req = self.http.post(self.url.clone()).body(body.clone());
            for (k, v) in sign(&self.creds, &host, &target, &body, &amz_date_now()) {
                if k != "host" {
                    req = req.header(k, v);
                }
            }
            req
        })
        .await
        .map_err(|e| EcrError(format!("{operation}: {e}")))?;
        let status = resp.status().as_u16();
        let v: Value = crate::http::json_limited(resp, crate::http::MAX_SMALL_BODY).await.unwrap_or(Value::Null);
        Ok((status, v))
    }

    /// Basic credentials for the registry: `AWS` and a 12-hour token.
    pub async fn registry_credential(&self) -> Result<Credential, EcrError> {
        let (status, v) = self.call("GetAuthorizationToken", json!({})).await?;
        if status != 200 {
            return Err(EcrError(format!(
                "GetAuthorizationToken answered {status}: {}",
                v.get("message").and_then(Value::as_str).unwrap_or("")
            )));
        }
        let token = v
            .pointer("/authorizationData/authorizationToken")
            .and_then(Value::as_str)
            .ok_or_else(|| EcrError("no authorization token".into()))?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(token)
            .map_err(|_| EcrError("the token is not base64".into()))?;
        let decoded = Secret::new(String::from_utf8(decoded).map_err(|_| EcrError("the token is not text".into()))?);
        let (user, password) =
            decoded.expose().split_once(':').ok_or_else(|| EcrError("the token is not user:password".into()))?;
        Ok(Credential { username: user.to_string(), password: Secret::new(password) })
    }

    /// Creates the repository unless it exists.
    pub async fn ensure_repository(&self, name: &str) -> Result<bool, EcrError> {
        let (status, v) = self.call("CreateRepository", json!({"repositoryName": name})).await?;
        let kind = v.get("__type").and_then(Value::as_str).unwrap_or_default();
        match status {
            200 => Ok(true),
            _ if kind.ends_with("RepositoryAlreadyExistsException") => Ok(false),
            _ => Err(EcrError(format!("CreateRepository {name} answered {status} {kind}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigv4_matches_awss_documented_hmac_and_date_forms() {
        // RFC 4231 test case 2 for HMAC-SHA256.
        assert_eq!(
            hex::encode(hmac(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let d = amz_date_now();
        assert_eq!(d.len(), 16);
        assert!(d.ends_with('Z') && d.as_bytes()[8] == b'T');
    }
}
