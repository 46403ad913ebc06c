//! ECR Public: AWS credentials from `aws-config`'s providers (environment; web identity through
//! STS, as GitHub's OIDC and `aws-actions/configure-aws-credentials` set up; the shared config
//! and credentials files with `AWS_PROFILE`, roles assumed from them included), every API call
//! signed by `aws-sigv4` (`ecr-public`, us-east-1): `GetAuthorizationToken` → Basic
//! `AWS:<token>` for the registry; `CreateRepository`, since ECR refuses pushes to a repository
//! that does not exist; and `DescribeRepositories` + `DescribeImages` to measure what the
//! registry already stores. The API URL follows the SDKs' endpoint override
//! (`AWS_ENDPOINT_URL_ECR_PUBLIC`, then `AWS_ENDPOINT_URL`; STS: `AWS_ENDPOINT_URL_STS`).
//!
//! EC2 instance profiles and ECS task roles are not asked: their endpoints are link-local
//! addresses a laptop or a GitHub-hosted runner would wait on. On such a runner, export the
//! role's credentials first (`aws configure export-credentials --format env`).

use std::collections::HashSet;
use std::time::SystemTime;

use aws_config::meta::credentials::CredentialsProviderChain;
use aws_config::provider_config::ProviderConfig;
use aws_credential_types::Credentials;
use aws_credential_types::provider::ProvideCredentials as _;
use aws_credential_types::provider::error::CredentialsError;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use base64::Engine;
use serde_json::{Value, json};

use super::{Credential, RegistryError};
use crate::credentials::Env;
use crate::http::{ClientConfig, MAX_SMALL_BODY, body_limited};
use crate::image::oci::ManifestDoc;
use crate::types::{ByteSize, Digest, Secret};

const REGION: &str = "us-east-1";
const SERVICE: &str = "ecr-public";
const TARGET_PREFIX: &str = "SpencerFrontendService";
const JSON_1_1: &str = "application/x-amz-json-1.1";
/// Pages of `DescribeRepositories`/`DescribeImages` followed at most (1,000 items each).
const MAX_PAGES: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum EcrError {
    #[error(
        "ECR Public: no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_ROLE_ARN with AWS_WEB_IDENTITY_TOKEN_FILE, or a profile in ~/.aws/credentials (aws-actions/configure-aws-credentials sets them)"
    )]
    NoCredentials,
    #[error("ECR Public: {0}")]
    Api(String),
}

/// `aws-config`'s providers, in the SDKs' order, over this tool's HTTP client (its timeouts
/// and body bounds) for the STS calls web identity and assumed roles make.
/// The providers read the process environment themselves (the SDKs' documented chain); `vars`
/// (the command's captured environment) picks the region and names the provider that failed.
pub async fn credentials(http: &reqwest::Client, vars: &Env) -> Result<Credentials, EcrError> {
    let var = |k: &str| vars.get(k).filter(|v| !v.is_empty()).cloned();
    let region = var("AWS_REGION").unwrap_or_else(|| REGION.into());
    let conf = ProviderConfig::default()
        .with_http_client(Connector(http.clone()))
        .with_region(Some(aws_config::Region::new(region)));
    let chain = CredentialsProviderChain::first_try(
        "environment",
        aws_config::environment::EnvironmentVariableCredentialsProvider::new(),
    )
    .or_else(
        "web identity",
        aws_config::web_identity_token::WebIdentityTokenCredentialsProvider::builder().configure(&conf).build(),
    )
    .or_else("profile", aws_config::profile::ProfileFileCredentialsProvider::builder().configure(&conf).build());
    match chain.provide_credentials().await {
        Ok(c) => Ok(c),
        Err(CredentialsError::CredentialsNotLoaded(_)) => Err(EcrError::NoCredentials),
        Err(e) => {
            // The chain's first provider that applied failed: name it, then the causes.
            let provider = if var("AWS_ACCESS_KEY_ID").is_some() {
                "the environment's keys".to_string()
            } else if var("AWS_WEB_IDENTITY_TOKEN_FILE").is_some() {
                format!("web identity for {} (STS AssumeRoleWithWebIdentity)", var("AWS_ROLE_ARN").unwrap_or_default())
            } else {
                format!("profile {}", var("AWS_PROFILE").unwrap_or_else(|| "default".into()))
            };
            let mut causes = vec![e.to_string()];
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                let text = s.to_string();
                if !causes.iter().any(|c| c.contains(&text)) {
                    causes.push(text);
                }
                source = s.source();
            }
            Err(EcrError::Api(format!("AWS credentials from {provider}: {}", causes.join(": "))))
        }
    }
}

/// `aws-config`'s HTTP client: requests sent with reqwest, answers read up to 1 MiB.
#[derive(Debug, Clone)]
struct Connector(reqwest::Client);

impl HttpClient for Connector {
    fn http_connector(&self, _: &HttpConnectorSettings, _: &RuntimeComponents) -> SharedHttpConnector {
        SharedHttpConnector::new(self.clone())
    }
}

impl HttpConnector for Connector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let http = self.0.clone();
        HttpConnectorFuture::new(async move {
            let user = |m: String| ConnectorError::user(m.into());
            let method = reqwest::Method::from_bytes(request.method().as_bytes()).map_err(|e| user(e.to_string()))?;
            let body = request.body().bytes().ok_or_else(|| user("a streaming request body".into()))?.to_vec();
            let mut req = http.request(method, request.uri());
            for (k, v) in request.headers() {
                req = req.header(k, v);
            }
            let resp = req.body(body).send().await.map_err(|e| {
                if e.is_timeout() { ConnectorError::timeout(e.into()) } else { ConnectorError::io(e.into()) }
            })?;
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let body =
                body_limited(resp, MAX_SMALL_BODY).await.map_err(|e| ConnectorError::io(e.to_string().into()))?;
            let mut out = HttpResponse::new(status.try_into().map_err(|e| user(format!("{e}")))?, SdkBody::from(body));
            for (k, v) in &headers {
                if let Ok(v) = v.to_str() {
                    let _ = out.headers_mut().try_insert(k.as_str().to_string(), v.to_string());
                }
            }
            Ok(out)
        })
    }
}

/// The headers that sign a JSON 1.1 POST of `body` to `url` for `target` at `time`.
pub fn signed_headers(
    credentials: &Credentials,
    url: &url::Url,
    target: &str,
    body: &[u8],
    time: SystemTime,
) -> Result<Vec<(String, String)>, EcrError> {
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
    let identity = credentials.clone().into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(REGION)
        .name(SERVICE)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| EcrError::Api(format!("signing: {e}")))?
        .into();
    let headers = [("content-type", JSON_1_1), ("x-amz-target", target)];
    let request = SignableRequest::new("POST", url.as_str(), headers.iter().copied(), SignableBody::Bytes(body))
        .map_err(|e| EcrError::Api(format!("signing: {e}")))?;
    let (instructions, _) = sign(request, &params).map_err(|e| EcrError::Api(format!("signing: {e}")))?.into_parts();
    let mut out: Vec<(String, String)> = headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    out.extend(instructions.headers().map(|(k, v)| (k.to_string(), v.to_string())));
    Ok(out)
}

/// What a registry alias stores, measured through the API: the unique blobs of each
/// repository's images (ECR bills storage per repository, so a layer two repositories share
/// counts in both).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    pub bytes: ByteSize,
    pub repositories: u32,
    pub images: u32,
}

/// The ECR Public API.
pub struct Api {
    http: reqwest::Client,
    url: url::Url,
    credentials: Credentials,
    config: ClientConfig,
}

impl Api {
    pub async fn from_environment(vars: &Env, config: &ClientConfig) -> Result<Api, EcrError> {
        let env = |k: &str| vars.get(k).filter(|v| !v.is_empty()).cloned();
        let http = config.http(None).map_err(|e| EcrError::Api(e.to_string()))?;
        let credentials = credentials(&http, vars).await?;
        let base = env("AWS_ENDPOINT_URL_ECR_PUBLIC")
            .or_else(|| env("AWS_ENDPOINT_URL"))
            .unwrap_or_else(|| format!("https://api.ecr-public.{REGION}.amazonaws.com"));
        let url = url::Url::parse(&format!("{}/", base.trim_end_matches('/')))
            .map_err(|e| EcrError::Api(format!("{base}: {e}")))?;
        Ok(Api { http, url, credentials, config: *config })
    }

    async fn call(&self, operation: &str, body: Value) -> Result<(u16, Value), EcrError> {
        let body = body.to_string().into_bytes();
        let target = format!("{TARGET_PREFIX}.{operation}");
        // Signed here, so a signing error is returned; a retry signs afresh (the signature
        // covers the time) and cannot fail where this did not.
        let first = std::sync::Mutex::new(Some(signed_headers(
            &self.credentials,
            &self.url,
            &target,
            &body,
            SystemTime::now(),
        )?));
        let resp = crate::retry::send(&self.config.retry(), operation, || {
            let headers = first.lock().ok().and_then(|mut h| h.take()).unwrap_or_else(|| {
                signed_headers(&self.credentials, &self.url, &target, &body, SystemTime::now()).unwrap_or_default()
            });
            let mut req = self.http.post(self.url.clone()).body(body.clone());
            for (k, v) in headers {
                req = req.header(k, v);
            }
            req
        })
        .await
        .map_err(|e| EcrError::Api(format!("{operation}: {e}")))?;
        let status = resp.status().as_u16();
        let v: Value = crate::http::json_limited(resp, 4 * MAX_SMALL_BODY).await.unwrap_or(Value::Null);
        Ok((status, v))
    }

    /// `operation` must answer 200; otherwise the error names AWS's exception and message.
    async fn call_ok(&self, operation: &str, body: Value) -> Result<Value, EcrError> {
        let (status, v) = self.call(operation, body).await?;
        if status != 200 {
            let kind = v.get("__type").and_then(Value::as_str).unwrap_or_default();
            let kind = kind.rsplit('#').next().unwrap_or(kind);
            let message = v.get("message").or_else(|| v.get("Message")).and_then(Value::as_str).unwrap_or_default();
            return Err(EcrError::Api(format!("{operation} answered {status} {kind}: {message}")));
        }
        Ok(v)
    }

    /// Basic credentials for the registry: `AWS` and a 12-hour token.
    pub async fn registry_credential(&self) -> Result<Credential, EcrError> {
        let v = self.call_ok("GetAuthorizationToken", json!({})).await?;
        let token = v
            .pointer("/authorizationData/authorizationToken")
            .and_then(Value::as_str)
            .ok_or_else(|| EcrError::Api("no authorization token".into()))?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(token)
            .map_err(|_| EcrError::Api("the token is not base64".into()))?;
        let decoded =
            Secret::new(String::from_utf8(decoded).map_err(|_| EcrError::Api("the token is not text".into()))?);
        let (user, password) =
            decoded.expose().split_once(':').ok_or_else(|| EcrError::Api("the token is not user:password".into()))?;
        Ok(Credential { username: user.to_string(), password: Secret::new(password) })
    }

    /// Creates the repository unless it exists.
    pub async fn ensure_repository(&self, name: &str) -> Result<bool, EcrError> {
        let (status, v) = self.call("CreateRepository", json!({"repositoryName": name})).await?;
        let kind = v.get("__type").and_then(Value::as_str).unwrap_or_default();
        match status {
            200 => Ok(true),
            _ if kind.ends_with("RepositoryAlreadyExistsException") => Ok(false),
            _ => Err(EcrError::Api(format!("CreateRepository {name} answered {status} {kind}"))),
        }
    }

    /// Every item of a paginated operation's `field`, following `nextToken`.
    async fn all(&self, operation: &str, mut request: Value, field: &str) -> Result<Vec<Value>, EcrError> {
        let mut out = Vec::new();
        for _ in 0..MAX_PAGES {
            let page = self.call_ok(operation, request.clone()).await?;
            out.extend(page.get(field).and_then(Value::as_array).cloned().unwrap_or_default());
            match page.get("nextToken").and_then(Value::as_str) {
                Some(next) if !next.is_empty() => request["nextToken"] = json!(next),
                _ => return Ok(out),
            }
        }
        Err(EcrError::Api(format!("{operation}: more than {MAX_PAGES} pages")))
    }

    /// The images of `repository` (`DescribeImages`, every page): digest, tags, pushed at.
    pub async fn images(&self, repository: &str) -> Result<Vec<crate::prune::Listed>, EcrError> {
        let details = self
            .all("DescribeImages", json!({"repositoryName": repository, "maxResults": 1000}), "imageDetails")
            .await?;
        Ok(details
            .iter()
            .filter_map(|d| {
                Some(crate::prune::Listed {
                    digest: d.get("imageDigest")?.as_str()?.parse().ok()?,
                    tags: d
                        .get("imageTags")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(|t| t.as_str().map(str::to_string))
                        .collect(),
                    created_at: d.get("imagePushedAt").and_then(Value::as_f64).map(|s| crate::types::rfc3339(s as i64)),
                })
            })
            .collect())
    }

    /// Deletes the image `digest` of `repository` and its tags (`BatchDeleteImage`): `false`
    /// when it was not there; any other failure is an error naming AWS's code and reason.
    pub async fn delete_image(&self, repository: &str, digest: &crate::types::Digest) -> Result<bool, EcrError> {
        let body = json!({"repositoryName": repository, "imageIds": [{"imageDigest": digest.as_str()}]});
        let v = self.call_ok("BatchDeleteImage", body).await?;
        match v.get("failures").and_then(Value::as_array).and_then(|f| f.first()) {
            None => Ok(true),
            Some(f) if f.get("failureCode").and_then(Value::as_str) == Some("ImageNotFound") => Ok(false),
            Some(f) => Err(EcrError::Api(format!(
                "BatchDeleteImage of {digest}: {} {}",
                f.get("failureCode").and_then(Value::as_str).unwrap_or("failed"),
                f.get("failureReason").and_then(Value::as_str).unwrap_or_default()
            ))),
        }
    }

    /// What the caller's registry stores: every repository (`DescribeRepositories`), every
    /// image in it (`DescribeImages`), and each image's layers read from the registry at
    /// `endpoint` under `alias` (pull scope, with the registry token) so that a layer several
    /// images of a repository share counts once. An image whose manifest cannot be read counts
    /// its `imageSizeInBytes` whole.
    pub async fn stored(
        &self,
        endpoint: &super::Endpoint,
        ca_file: Option<&std::path::Path>,
        alias: &str,
    ) -> Result<Stored, EcrError> {
        let repositories = self.all("DescribeRepositories", json!({"maxResults": 1000}), "repositories").await?;
        if repositories.is_empty() {
            return Ok(Stored { bytes: ByteSize(0), repositories: 0, images: 0 });
        }
        let credential = self.registry_credential().await?;
        let access = super::RegistryAccess {
            endpoint: endpoint.clone(),
            ca_file: ca_file.map(Into::into),
            credential: Some(credential),
            config: self.config,
        };
        let base = access.client(alias).map_err(|e| EcrError::Api(e.to_string()))?;
        let (mut total, mut images) = (0u64, 0u32);
        for repo in &repositories {
            let Some(name) = repo.get("repositoryName").and_then(Value::as_str) else { continue };
            let details =
                self.all("DescribeImages", json!({"repositoryName": name, "maxResults": 1000}), "imageDetails").await?;
            let path = format!("{alias}/{name}");
            let registry = async {
                let c = base.for_repository(&path).with_scope(&format!("repository:{path}:pull"));
                c.authenticate().await?;
                Ok::<_, RegistryError>(c)
            }
            .await;
            let mut blobs = HashSet::new();
            for d in &details {
                images += 1;
                let whole = d.get("imageSizeInBytes").and_then(Value::as_u64).unwrap_or(0);
                let Some(digest) = d.get("imageDigest").and_then(Value::as_str) else {
                    total += whole;
                    continue;
                };
                let read = match &registry {
                    Ok(registry) => layers(registry, &path, digest).await,
                    Err(e) => Err(e.to_string()),
                };
                match read {
                    Ok(Some(blobs_of)) => {
                        for (digest, size) in blobs_of {
                            if blobs.insert(digest) {
                                total += size;
                            }
                        }
                    }
                    // An index: its children are images of their own.
                    Ok(None) => {}
                    Err(e) => {
                        tracing::debug!("{name}@{digest}: layers not read ({e}); counted as {whole} bytes");
                        total += whole;
                    }
                }
            }
        }
        Ok(Stored { bytes: ByteSize(total), repositories: repositories.len() as u32, images })
    }
}

/// The config and layers of an image manifest (`None` for an index).
async fn layers(
    registry: &super::Client,
    repository: &str,
    digest: &str,
) -> Result<Option<Vec<(Digest, u64)>>, String> {
    let bytes = registry
        .manifest(repository, digest)
        .await
        .map_err(|e: RegistryError| e.to_string())?
        .ok_or_else(|| format!("{repository}@{digest} is not in the registry"))?;
    let doc: ManifestDoc = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    if !doc.manifests.is_empty() {
        return Ok(None);
    }
    Ok(Some(doc.config.iter().chain(doc.layers.iter()).map(|d| (d.digest.clone(), d.size)).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS's documented SigV4 example key and the form of what aws-sigv4 adds.
    #[test]
    fn calls_are_signed_for_ecr_public_in_us_east_1() {
        let creds = Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            Some("session".into()),
            None,
            "test",
        );
        let url = url::Url::parse("http://127.0.0.1:8080/").unwrap();
        let h = signed_headers(&creds, &url, "SpencerFrontendService.DescribeImages", b"{}", SystemTime::UNIX_EPOCH)
            .unwrap();
        let get = |k: &str| h.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str()).unwrap_or_default();
        assert_eq!(get("x-amz-date"), "19700101T000000Z");
        assert_eq!(get("x-amz-security-token"), "session");
        let auth = get("authorization");
        assert!(auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/19700101/us-east-1/ecr-public/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-security-token;x-amz-target, Signature="), "{auth}");
    }
}

#[cfg(test)]
mod rfc3339_tests {
    #[test]
    fn epoch_seconds_become_rfc3339_and_back() {
        for t in [0, 1_577_836_800, 1_709_208_000, 1_649_880_375] {
            let s = crate::types::rfc3339(t);
            assert_eq!(crate::sign::trust::parse_rfc3339(&s), Some(t), "{s}");
        }
        assert_eq!(crate::types::rfc3339(1_709_208_000), "2024-02-29T12:00:00Z");
    }
}
