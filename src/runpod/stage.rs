//! Glue between the plan and RunPod: the context each template renders with (the image as it
//! is published), the credentials RunPod pulls private images with, and the API client from
//! the policy and environment. Reads the environment; makes no request.

use serde_json::{Map, Value};

use super::template::{self, ImageContext, RenderContext, TemplateErrors};
use super::{Client, PullCredential, Wanted};
use crate::http::RetryPolicy;
use crate::plan::{ImagePlan, Plan, TargetPlan};
use crate::policy::{Resolved, ResolvedRunPod, ResolvedTemplate, Visibility};
use crate::types::Secret;

/// A template rendered for the image it follows.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub template: ResolvedTemplate,
    pub body: Map<String, Value>,
    /// The image's plan and the target whose reference the template pins.
    pub image: ImagePlan,
    pub target: TargetPlan,
}

/// The context of a template: the image as published to `target`.
pub fn context(
    resolved: &Resolved,
    image: &ImagePlan,
    target: &TargetPlan,
    vars: &std::collections::BTreeMap<String, Value>,
) -> RenderContext {
    let tag = target.tags.first().cloned().unwrap_or_else(|| "latest".into());
    let reference = format!("{}:{tag}", target.repository);
    RenderContext {
        image: ImageContext {
            name: image.name.clone(),
            ref_with_digest: format!("{reference}@{}", image.manifest_digest),
            reference,
            digest: image.manifest_digest.to_string(),
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
            Ok(body) => out.push(Rendered { template: t.clone(), body, image: image.clone(), target: target.clone() }),
            Err(TemplateErrors(mut e)) => errors.append(&mut e),
        }
    }
    if errors.is_empty() { Ok(out) } else { Err(TemplateErrors(errors)) }
}

/// What RunPod should have for a rendered template, with the pull credential of a private
/// image read from the environment: the registry's `pull_credentials`, else (with a warning)
/// its push credentials.
pub fn wanted(r: &Rendered) -> Result<Wanted, String> {
    let credential = if r.image.visibility == Visibility::Private {
        let reg = &r.target.endpoint;
        let source = match (&reg.pull_credentials, &reg.credentials) {
            (Some(pull), _) => pull,
            (None, Some(push)) => {
                tracing::warn!(
                    registry = %reg.id,
                    "RunPod gets the push credentials for the private image {}: give it read-only ones with pull_credentials:",
                    r.image.name
                );
                push
            }
            (None, None) => {
                return Err(format!(
                    "template {:?}: image {} is private, so RunPod needs credentials to pull it: set pull_credentials: on registry {}",
                    r.template.name, r.image.name, reg.id
                ));
            }
        };
        let password = std::env::var(&source.password_env).ok().filter(|v| !v.is_empty()).ok_or_else(|| {
            format!(
                "template {:?}: environment variable {} ({}) is not set",
                r.template.name, source.password_env, source.field
            )
        })?;
        let repository = r.target.path().to_string();
        Some(PullCredential::new(&reg.id, &repository, &source.username, Secret::new(password)))
    } else {
        None
    };
    Ok(Wanted { body: r.body.clone(), credential, endpoints: r.template.endpoints.clone() })
}

/// The API client: key from `api_key_env`, base URL from `RUNPOD_API_URL` or the policy.
pub fn client(rp: &ResolvedRunPod) -> Result<Client, String> {
    let key = std::env::var(&rp.api_key_env).ok().filter(|v| !v.is_empty()).ok_or_else(|| {
        format!("environment variable {} (runpod.api_key_env) is not set: RunPod's API needs a key", rp.api_key_env)
    })?;
    let url = std::env::var("RUNPOD_API_URL").ok().filter(|v| !v.is_empty()).unwrap_or_else(|| rp.api_url.clone());
    Client::new(&url, Secret::new(key), RetryPolicy::default()).map_err(|e| e.to_string())
}
