//! Glue between the plan and RunPod: the context each template renders with (the image as it
//! is published), the credentials RunPod pulls private images with, and the API client from
//! the policy and the environment the command layer passes in. Makes no request.

use serde_json::{Map, Value};

use super::template::{self, ImageContext, RenderContext, TemplateErrors};
use super::{Client, PullCredential, Wanted};
use crate::credentials::{CredentialSource, Env};
use crate::plan::{ImagePlan, Plan, TargetPlan};
use crate::policy::{Resolved, ResolvedRunPod, ResolvedTemplate, Visibility};
use crate::types::Digest;
use crate::types::Secret;

/// What keeps a template from being synced, found before any request (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error(
        "template {template:?}: image {image} is private, so RunPod needs credentials to pull it: set pull_credentials: on registry {registry}"
    )]
    NoPullCredentials { template: String, image: String, registry: String },
    #[error("template {template:?}: environment variable {variable} ({what}) is not set")]
    MissingVariable { template: String, variable: String, what: String },
    #[error("environment variable {0} (runpod.api_key_env) is not set: RunPod's API needs a key")]
    NoApiKey(String),
    #[error(transparent)]
    Client(#[from] Box<super::RunPodError>),
    /// A saved plan the policy no longer gives.
    #[error("{0}")]
    PlanChanged(String),
}

/// A template rendered for the image it follows.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub template: ResolvedTemplate,
    pub body: Map<String, Value>,
    /// The image's plan and the target whose reference the template pins.
    pub image: ImagePlan,
    pub target: TargetPlan,
    /// The image's manifest digest is known only once it is pushed (a docker source whose
    /// layers are compressed then): this body only shows that the template renders, and is
    /// rendered again with the digest (`with_digest`) before anything is sent.
    pub digest_pending: bool,
    context: RenderContext,
    file: String,
}

impl Rendered {
    /// The template rendered again for the image's manifest digest, once known.
    pub fn with_digest(&self, digest: &Digest) -> Result<Rendered, TemplateErrors> {
        let mut context = self.context.clone();
        context.image.ref_with_digest = format!("{}@{digest}", context.image.reference);
        context.image.digest = digest.to_string();
        let body = template::render(&self.template, &context, &self.file)?;
        let mut image = self.image.clone();
        image.manifest_digest = Some(digest.clone());
        Ok(Rendered { body, image, digest_pending: false, context, ..self.clone() })
    }
}

/// The context of a template: the image as published to `target`.
pub fn context(
    resolved: &Resolved,
    image: &ImagePlan,
    target: &TargetPlan,
    vars: &std::collections::BTreeMap<String, Value>,
) -> RenderContext {
    let tag = target.tags.first().cloned().unwrap_or_else(|| crate::reference::DEFAULT_TAG.into());
    let reference = format!("{}:{tag}", target.repository);
    // Until the push makes it known, the digest of what was read stands in for checking that
    // the template renders; such a body is rendered again before it is sent (`with_digest`).
    let digest = image.manifest_digest.as_ref().unwrap_or(&image.source_digest);
    RenderContext {
        image: ImageContext {
            name: image.name.clone(),
            ref_with_digest: format!("{reference}@{digest}"),
            reference,
            digest: digest.to_string(),
            registry: target.registry.clone(),
            repository: target.repository.clone(),
            tag,
            visibility: if image.visibility == Visibility::Public { "public" } else { "private" }.into(),
        },
        git: resolved.context.git.clone(),
        env: resolved.context.env.clone(),
        vars: vars.clone(),
    }
}

/// Renders every template whose image is in the plan (an image left out by `--only` leaves
/// its templates out too). All problems are reported together.
pub fn render_all(resolved: &Resolved, plan: &Plan) -> Result<Vec<Rendered>, TemplateErrors> {
    let Some(rp) = &resolved.runpod else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for t in &rp.templates {
        let Some(image) = plan.images.iter().find(|i| i.name == t.image) else { continue };
        let Some(target) = image.targets.first() else { continue };
        let ctx = context(resolved, image, target, &rp.vars);
        match template::render(t, &ctx, &resolved.file) {
            Ok(body) => out.push(Rendered {
                template: t.clone(),
                body,
                image: image.clone(),
                target: target.clone(),
                digest_pending: image.manifest_digest.is_none(),
                context: ctx,
                file: resolved.file.clone(),
            }),
            Err(TemplateErrors(mut e)) => errors.append(&mut e),
        }
    }
    if errors.is_empty() { Ok(out) } else { Err(TemplateErrors(errors)) }
}

/// What RunPod should have for a rendered template, with the pull credential of a private
/// image read from `env`: the registry's `pull_credentials`, else (with a warning) its push
/// credentials from the policy.
pub fn wanted(r: &Rendered, env: &Env) -> Result<Wanted, StageError> {
    let credential = if r.image.visibility == Visibility::Private {
        let source = match (&r.target.pull_credentials, &r.target.credentials) {
            (Some(pull), _) => pull,
            (None, push @ CredentialSource::Env { .. }) => {
                tracing::warn!(
                    registry = %r.target.registry,
                    "RunPod gets the push credentials for the private image {}: give it read-only ones with pull_credentials:",
                    r.image.name
                );
                push
            }
            (None, _) => {
                return Err(StageError::NoPullCredentials {
                    template: r.template.name.clone(),
                    image: r.image.name.clone(),
                    registry: r.target.registry.clone(),
                });
            }
        };
        let CredentialSource::Env { username, password_env } = source else {
            return Err(StageError::NoPullCredentials {
                template: r.template.name.clone(),
                image: r.image.name.clone(),
                registry: r.target.registry.clone(),
            });
        };
        let password = env.get(password_env).filter(|v| !v.is_empty()).ok_or_else(|| StageError::MissingVariable {
            template: r.template.name.clone(),
            variable: password_env.clone(),
            what: format!("registries.{}.pull_credentials", r.target.registry),
        })?;
        Some(PullCredential::new(&r.target.registry, r.target.path(), username, Secret::new(password.clone())))
    } else {
        None
    };
    Ok(Wanted { body: r.body.clone(), credential, endpoints: r.template.endpoints.clone() })
}

/// The digest of a rendered body, as the plan records it.
pub fn body_digest(body: &Map<String, Value>) -> Digest {
    Digest::of(Value::Object(body.clone()).to_string().as_bytes())
}

/// The API client: key from `api_key_env`, base URL from `RUNPOD_API_URL` or the policy.
/// `api_url` (from `RUNPOD_API_URL`) overrides the policy's.
pub fn client(
    rp: &ResolvedRunPod,
    env: &Env,
    api_url: Option<&str>,
    config: &crate::http::ClientConfig,
) -> Result<Client, StageError> {
    let key = env
        .get(&rp.api_key_env)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| StageError::NoApiKey(rp.api_key_env.clone()))?;
    let url = api_url.unwrap_or(&rp.api_url);
    Client::new(url, Secret::new(key.clone()), config).map_err(|e| StageError::Client(Box::new(e)))
}

/// The RunPod client and what it should have for each template of the plan.
pub type Prepared = (Client, Vec<(Rendered, Wanted)>);

/// Why templates could not be prepared: both are exit 2, found before any network call.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error(transparent)]
    Templates(#[from] TemplateErrors),
    #[error(transparent)]
    Stage(#[from] StageError),
}

/// Checks every template of the plan (rendered with the plan, or now for a saved plan), reads
/// its pull credential and the API key: all before any network call. A body that differs
/// from the planned one is exit 2.
pub fn prepare(
    plan: &Plan,
    resolved: &Resolved,
    rendered: Option<Vec<Rendered>>,
    env: &Env,
    (config, runpod_api): (&crate::http::ClientConfig, Option<&str>),
) -> Result<Option<Prepared>, PrepareError> {
    if plan.templates.is_empty() {
        return Ok(None);
    }
    let Some(rp) = &resolved.runpod else { return Ok(None) };
    let rendered = match rendered {
        Some(r) => r,
        None => render_all(resolved, plan)?,
    };
    let mut all = Vec::new();
    for r in rendered {
        let Some(planned) = plan.templates.iter().find(|t| t.name == r.template.name) else { continue };
        let digest = body_digest(&r.body);
        if let Some(p) = &planned.body_digest
            && *p != digest
        {
            return Err(StageError::PlanChanged(format!(
                "template {}: the policy now renders a body with digest {digest}, but the plan has {p}: make the plan again",
                r.template.name
            ))
            .into());
        }
        let mut w = wanted(&r, env)?;
        // The plan's steps, exactly: its endpoints, and a credential only where it says so.
        w.endpoints = planned
            .steps
            .iter()
            .filter_map(|s| match s {
                crate::plan::steps::TemplateStep::MoveEndpoint { id } => Some(id.clone()),
                _ => None,
            })
            .collect();
        let credential_step =
            planned.steps.iter().any(|s| matches!(s, crate::plan::steps::TemplateStep::PullCredential { .. }));
        if credential_step != w.credential.is_some() {
            return Err(StageError::PlanChanged(format!(
                "template {}: the plan's steps and the policy disagree on its registry credential: make the plan again",
                r.template.name
            ))
            .into());
        }
        all.push((r, w));
    }
    if all.is_empty() {
        return Ok(None);
    }
    let client = client(rp, env, runpod_api, config)?;
    Ok(Some((client, all)))
}
