//! RunPod: a client for REST v2 (templates, registry credentials, serverless endpoints) that
//! takes a base URL, and `sync`, which creates or updates a template idempotently — writing
//! nothing when RunPod already has it — with a credential for private images.

pub mod stage;
pub mod template;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha256};
use url::Url;

use crate::retry::RetryPolicy;
use crate::types::Secret;
use template::FieldChange;

#[derive(Debug, thiserror::Error)]
pub enum RunPodError {
    /// An RFC 9457 problem document from the API.
    #[error("RunPod API: {method} {path}: {status} {title}: {detail}{}", if .errors.is_empty() { String::new() } else { format!(" ({})", .errors.join("; ")) })]
    Api { method: String, path: String, status: u16, title: String, detail: String, errors: Vec<String> },
    #[error("RunPod API: {0}")]
    Transport(String),
    #[error("RunPod API: {0}")]
    Unexpected(String),
}

/// A RunPod REST v2 client.
pub struct Client {
    http: reqwest::Client,
    base: Url,
    key: Secret,
    retry: RetryPolicy,
}

impl Client {
    /// `api_url` is the base (`https://api.runpod.io`); `/v2/...` is appended.
    pub fn new(api_url: &str, key: Secret, config: &crate::http::ClientConfig) -> Result<Client, RunPodError> {
        let base = Url::parse(&format!("{}/", api_url.trim_end_matches('/')))
            .map_err(|e| RunPodError::Unexpected(format!("the API URL {api_url:?} is not a URL: {e}")))?;
        let http = config.http(None).map_err(|e| RunPodError::Transport(e.to_string()))?;
        Ok(Client { http, base, key, retry: config.retry() })
    }

    /// Sends one request, retried by `crate::retry` (429 after `Retry-After`, 5xx, transport
    /// errors), and returns the JSON body (`Null` for 204), bounded in bytes.
    async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value, RunPodError> {
        let url = self.base.join(path).map_err(|e| RunPodError::Unexpected(e.to_string()))?;
        let what = format!("RunPod request {method} {path}");
        let resp = crate::retry::send(&self.retry, &what, || {
            let req = self
                .http
                .request(method.clone(), url.clone())
                .header(AUTHORIZATION, format!("Bearer {}", self.key.expose()));
            match body {
                Some(b) => req.header(CONTENT_TYPE, "application/json").body(b.to_string()),
                None => req,
            }
        })
        .await
        .map_err(|e| RunPodError::Transport(e.to_string()))?;
        let status = resp.status();
        if status == StatusCode::NO_CONTENT {
            return Ok(Value::Null);
        }
        let bytes = crate::http::body_limited(resp, 8 * crate::http::MAX_SMALL_BODY)
            .await
            .map_err(|e| RunPodError::Transport(format!("{method} {path}: {e}")))?;
        let text = String::from_utf8_lossy(&bytes);
        if !status.is_success() {
            return Err(problem(&method, path, status, &text));
        }
        serde_json::from_str(&text)
            .map_err(|e| RunPodError::Unexpected(format!("{method} {path}: the answer is not JSON: {e}")))
    }

    pub async fn list_templates(&self) -> Result<Vec<Map<String, Value>>, RunPodError> {
        let v = self.call(Method::GET, "v2/templates", None).await?;
        objects(&v, "templates")
    }

    /// The `image` of the template named `name` (`None`: no such template).
    pub async fn template_image(&self, name: &str) -> Result<Option<String>, RunPodError> {
        let templates = self.list_templates().await?;
        Ok(templates
            .iter()
            .find(|t| t.get("name").and_then(Value::as_str) == Some(name))
            .and_then(|t| t.get("image").and_then(Value::as_str).map(str::to_string)))
    }

    pub async fn create_template(&self, body: &Map<String, Value>) -> Result<Map<String, Value>, RunPodError> {
        let v = self.call(Method::POST, "v2/templates", Some(&Value::Object(body.clone()))).await?;
        v.as_object()
            .cloned()
            .ok_or_else(|| RunPodError::Unexpected("POST /v2/templates answered without a template".into()))
    }

    pub async fn update_template(&self, id: &str, patch: &Map<String, Value>) -> Result<(), RunPodError> {
        self.call(Method::PATCH, &format!("v2/templates/{id}"), Some(&Value::Object(patch.clone()))).await.map(drop)
    }

    pub async fn list_registries(&self) -> Result<Vec<Map<String, Value>>, RunPodError> {
        let v = self.call(Method::GET, "v2/registries", None).await?;
        objects(&v, "registries")
    }

    pub async fn create_registry(&self, name: &str, username: &str, password: &Secret) -> Result<String, RunPodError> {
        let body = json!({"name": name, "username": username, "password": password.expose()});
        let v = self.call(Method::POST, "v2/registries", Some(&body)).await?;
        v.get("id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| RunPodError::Unexpected("POST /v2/registries answered without an id".into()))
    }

    pub async fn delete_registry(&self, id: &str) -> Result<(), RunPodError> {
        self.call(Method::DELETE, &format!("v2/registries/{id}"), None).await.map(drop)
    }

    pub async fn get_endpoint(&self, id: &str) -> Result<Map<String, Value>, RunPodError> {
        let v = self.call(Method::GET, &format!("v2/serverless/{id}"), None).await?;
        v.as_object()
            .cloned()
            .ok_or_else(|| RunPodError::Unexpected(format!("GET /v2/serverless/{id} answered no object")))
    }

    pub async fn update_endpoint(&self, id: &str, patch: &Map<String, Value>) -> Result<(), RunPodError> {
        self.call(Method::PATCH, &format!("v2/serverless/{id}"), Some(&Value::Object(patch.clone()))).await.map(drop)
    }
}

fn objects(v: &Value, key: &str) -> Result<Vec<Map<String, Value>>, RunPodError> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|x| x.as_object().cloned()).collect())
        .ok_or_else(|| RunPodError::Unexpected(format!("the list has no `{key}` array")))
}

fn problem(method: &Method, path: &str, status: StatusCode, body: &str) -> RunPodError {
    #[derive(serde::Deserialize, Default)]
    struct Problem {
        #[serde(default)]
        title: String,
        #[serde(default)]
        detail: String,
        #[serde(default)]
        errors: Vec<String>,
    }
    let p: Problem = serde_json::from_str(body).unwrap_or_else(|_| Problem {
        detail: body.chars().take(300).collect::<String>().trim().to_string(),
        ..Default::default()
    });
    RunPodError::Api {
        method: method.to_string(),
        path: format!("/{path}"),
        status: status.as_u16(),
        title: if p.title.is_empty() { status.canonical_reason().unwrap_or("error").to_string() } else { p.title },
        detail: p.detail,
        errors: p.errors,
    }
}

/// Credentials RunPod pulls a private image with.
#[derive(Debug, Clone)]
pub struct PullCredential {
    /// Deterministic: `publish-<registry>-<repository>-<8 hex of a hash of registry and
    /// repository>-<12 hex of a hash of the secret>`, so a changed secret gets a new credential
    /// (the API has no update), and repositories whose cleaned names agree or share a prefix
    /// (`ml` and `ml/app`; `ml/app`, `ml_app` and `ml-app`) never share names.
    pub name: String,
    /// What every credential this tool made for this registry and repository starts with; the
    /// 12 hex of a secret's hash follow it and nothing else.
    pub prefix: String,
    /// The name the same credential had before repositories were hashed into names
    /// (`publish-<registry>-<repository>-<12 hex>`): reused when RunPod has it, never deleted.
    pub legacy_name: String,
    pub username: String,
    pub password: Secret,
}

impl PullCredential {
    pub fn new(registry_id: &str, repository: &str, username: &str, password: Secret) -> Self {
        let clean: String =
            repository.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
        let repo_hash = hex::encode(Sha256::digest(format!("{registry_id}/{repository}")));
        let prefix = format!("publish-{registry_id}-{clean}-{}-", &repo_hash[..8]);
        let hash = hex::encode(Sha256::digest(format!("{username}:{}", password.expose())));
        PullCredential {
            name: format!("{prefix}{}", &hash[..12]),
            legacy_name: format!("publish-{registry_id}-{clean}-{}", &hash[..12]),
            prefix,
            username: username.to_string(),
            password,
        }
    }

    /// Whether `name` is a credential this tool made for this registry and repository (with
    /// any secret): the prefix, then exactly 12 lowercase hex digits.
    pub fn is_ours(&self, name: &str) -> bool {
        name.strip_prefix(&self.prefix).is_some_and(|rest| {
            rest.len() == 12 && rest.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
    }
}

crate::word_enum! {
    /// What became of a credential the current one replaces.
    pub enum CredentialAction {
        Deleted => "deleted",
        /// With the reason: something still refers to it, or deleting failed.
        Kept => "kept",
        WouldDelete => "would-delete",
    }
}

crate::word_enum! {
    /// What a sync did (or, in a dry run, would do) to a template.
    pub enum SyncAction {
        Created => "created",
        Updated => "updated",
        Unchanged => "unchanged",
        WouldCreate => "would-create",
        WouldUpdate => "would-update",
    }
}

crate::word_enum! {
    /// What a sync did (or would do) to a serverless endpoint.
    pub enum EndpointAction {
        Updated => "updated",
        Unchanged => "unchanged",
        WouldUpdate => "would-update",
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ReplacedCredential {
    pub name: String,
    pub action: CredentialAction,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What `sync` wants on RunPod for one template.
#[derive(Debug, Clone)]
pub struct Wanted {
    pub body: Map<String, Value>,
    pub credential: Option<PullCredential>,
    pub endpoints: Vec<String>,
}

/// What happened (or, in a dry run, would happen) to one template.
#[derive(Debug, Clone, Serialize)]
pub struct SyncOutcome {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub action: SyncAction,
    pub changes: Vec<FieldChange>,
    /// The registry credential's name, for private images (never its secret).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registry_credential: Option<String>,
    pub endpoints: Vec<EndpointOutcome>,
    /// Earlier credentials of this registry and repository, replaced by the current one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub replaced_credentials: Vec<ReplacedCredential>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EndpointOutcome {
    pub id: String,
    pub action: EndpointAction,
}

/// Creates or updates the template so RunPod has `wanted`, idempotently.
pub async fn sync(client: &Client, wanted: Wanted, dry_run: bool) -> Result<SyncOutcome, RunPodError> {
    let Wanted { mut body, credential, endpoints } = wanted;
    let name = body.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
    let templates = client.list_templates().await?;
    let current = templates.iter().find(|t| t.get("name").and_then(Value::as_str) == Some(name.as_str()));

    // Registry credential: reuse the one for this secret, or create it.
    let mut stale = Vec::new();
    let mut registry_credential = None;
    match &credential {
        Some(cred) => {
            let (id, earlier) = credential_id(client, cred, dry_run).await?;
            stale = earlier;
            body.insert("registry".into(), Value::String(id));
            registry_credential = Some(cred.name.clone());
        }
        // A public image needs no credential: clear one left from when it was private.
        None => {
            if current.is_some_and(|c| c.get("registry").is_some_and(|r| r.as_str().is_some_and(|s| !s.is_empty()))) {
                body.insert("registry".into(), Value::String(String::new()));
            }
        }
    }

    let changes = template::diff(current, &body);
    let id = current.and_then(|c| c.get("id")).and_then(Value::as_str).map(str::to_string);
    let (action, id) = move_template(client, id, &changes, &body, dry_run).await?;
    let (endpoint_outcomes, endpoint_credentials) = move_endpoints(client, &endpoints, &body, dry_run).await?;
    let users =
        Users { templates: &templates, this: &name, endpoints: &endpoint_credentials, moved: &endpoint_outcomes };
    let replaced_credentials = retire_credentials(client, stale, &users, dry_run).await;
    Ok(SyncOutcome {
        name,
        id,
        action,
        changes,
        registry_credential,
        endpoints: endpoint_outcomes,
        replaced_credentials,
    })
}

/// The id of the account's credential for `cred` (created unless a dry run), and the
/// earlier credentials of the same registry and repository (id, name), which it replaces.
async fn credential_id(
    client: &Client,
    cred: &PullCredential,
    dry_run: bool,
) -> Result<(String, Vec<(String, String)>), RunPodError> {
    let registries = client.list_registries().await?;
    let id_of = |r: &Map<String, Value>| r.get("id").and_then(Value::as_str).map(str::to_string);
    let named = |n: &str| registries.iter().find(|r| r.get("name").and_then(Value::as_str) == Some(n));
    let existing = named(&cred.name).or_else(|| named(&cred.legacy_name));
    let id = match existing.and_then(id_of) {
        Some(id) => id,
        None if dry_run => "(new credential)".to_string(),
        None => {
            tracing::info!(credential = %cred.name, "creating the RunPod registry credential");
            client.create_registry(&cred.name, &cred.username, &cred.password).await?
        }
    };
    let stale = registries
        .iter()
        .filter(|r| {
            let n = r.get("name").and_then(Value::as_str).unwrap_or_default();
            cred.is_ours(n) && n != cred.name
        })
        .filter_map(|r| Some((id_of(r)?, r.get("name").and_then(Value::as_str)?.to_string())))
        .collect::<Vec<(String, String)>>();
    Ok((id, stale))
}

/// Creates the template, or updates the fields that differ: the action and the template id.
async fn move_template(
    client: &Client,
    id: Option<String>,
    changes: &[FieldChange],
    body: &Map<String, Value>,
    dry_run: bool,
) -> Result<(SyncAction, Option<String>), RunPodError> {
    Ok(match (id, changes.is_empty(), dry_run) {
        (Some(id), true, _) => (SyncAction::Unchanged, Some(id)),
        (Some(id), false, true) => (SyncAction::WouldUpdate, Some(id)),
        (None, _, true) => (SyncAction::WouldCreate, None),
        (Some(id), false, false) => {
            let patch: Map<String, Value> = changes.iter().map(|c| (c.field.clone(), c.new.clone())).collect();
            client.update_template(&id, &patch).await?;
            (SyncAction::Updated, Some(id))
        }
        (None, _, false) => {
            let created = client.create_template(body).await?;
            (SyncAction::Created, created.get("id").and_then(Value::as_str).map(str::to_string))
        }
    })
}

/// Points each endpoint at the template's image and credential. Returns what happened to
/// each, and the credential each one held before (credential id, endpoint id).
async fn move_endpoints(
    client: &Client,
    endpoints: &[String],
    body: &Map<String, Value>,
    dry_run: bool,
) -> Result<(Vec<EndpointOutcome>, Vec<(String, String)>), RunPodError> {
    let mut endpoint_outcomes = Vec::new();
    let mut endpoint_credentials: Vec<(String, String)> = Vec::new();
    for e in endpoints {
        let current = client.get_endpoint(e).await?;
        if let Some(r) = current.get("registry").and_then(Value::as_str) {
            endpoint_credentials.push((r.to_string(), e.clone()));
        }
        let mut patch = Map::new();
        for key in ["image", "registry"] {
            if let Some(want) = body.get(key)
                && current.get(key) != Some(want)
                && !(key == "registry" && want.as_str() == Some("") && current.get(key).is_none_or(Value::is_null))
            {
                patch.insert(key.into(), want.clone());
            }
        }
        let action = match (patch.is_empty(), dry_run) {
            (true, _) => EndpointAction::Unchanged,
            (false, true) => EndpointAction::WouldUpdate,
            (false, false) => {
                client.update_endpoint(e, &patch).await?;
                EndpointAction::Updated
            }
        };
        endpoint_outcomes.push(EndpointOutcome { id: e.clone(), action });
    }
    Ok((endpoint_outcomes, endpoint_credentials))
}

/// Who may still refer to a credential: the account's templates other than `this`, and the
/// endpoints of the policy with the credential they held (those moved no longer do).
struct Users<'a> {
    templates: &'a [Map<String, Value>],
    this: &'a str,
    endpoints: &'a [(String, String)],
    moved: &'a [EndpointOutcome],
}

/// Earlier credentials of this registry and repository go once no template of the account
/// and no endpoint this template moves refers to them (v2 documents no endpoint listing, so
/// endpoints outside the policy cannot be seen: see docs/runpod.md).
async fn retire_credentials(
    client: &Client,
    stale: Vec<(String, String)>,
    users: &Users<'_>,
    dry_run: bool,
) -> Vec<ReplacedCredential> {
    let mut replaced_credentials = Vec::new();
    for (cred_id, cred_name) in stale {
        let user = users
            .templates
            .iter()
            .filter(|t| t.get("name").and_then(Value::as_str) != Some(users.this))
            .find(|t| t.get("registry").and_then(Value::as_str) == Some(cred_id.as_str()))
            .map(|t| format!("template {}", t.get("name").and_then(Value::as_str).unwrap_or("?")))
            .or_else(|| {
                users
                    .endpoints
                    .iter()
                    .find(|(r, e)| {
                        r == &cred_id
                            && !users.moved.iter().any(|o| {
                                &o.id == e && matches!(o.action, EndpointAction::Updated | EndpointAction::WouldUpdate)
                            })
                    })
                    .map(|(_, e)| format!("endpoint {e}"))
            });
        let (action, reason) = match (user, dry_run) {
            (Some(user), _) => (CredentialAction::Kept, Some(format!("{user} still refers to it"))),
            (None, true) => (CredentialAction::WouldDelete, None),
            (None, false) => match client.delete_registry(&cred_id).await {
                Ok(()) => (CredentialAction::Deleted, None),
                Err(e) => {
                    tracing::warn!("could not delete the replaced RunPod credential {cred_name}: {e}");
                    (CredentialAction::Kept, Some(format!("deleting it failed: {e}")))
                }
            },
        };
        replaced_credentials.push(ReplacedCredential { name: cred_name, action, reason });
    }
    replaced_credentials
}
