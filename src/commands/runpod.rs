//! `publish runpod render|sync`: the templates rendered from the plan, printed, or synced
//! for images already published — each image is checked to be in its registry first, so a
//! template never points at one that is not (`--dry-run`: the diff, read-only requests only).

use super::{ExitStatus, Output, PolicyArgs, UsageError, load, plan};
use crate::credentials::Env;
use crate::plan::MeasuredUsage;
use crate::runpod::stage;

#[derive(Debug, Clone)]
pub struct RunPodArgs {
    pub policy: PolicyArgs,
    pub command: RunPodCommand,
}

#[derive(Debug, Clone)]
pub enum RunPodCommand {
    /// Print the rendered template bodies (one, with a name).
    Render { template: Option<String> },
    /// Create or update the templates for images already published.
    Sync { dry_run: bool },
}

pub async fn runpod(args: RunPodArgs, env: &Env) -> anyhow::Result<ExitStatus> {
    let (resolved, images) = load::policy_and_images(&args.policy.policy, env).await?;
    let plan = plan::build(&resolved, &images, &MeasuredUsage::new())?;
    let Some(rp) = resolved.runpod.as_ref().filter(|rp| !rp.templates.is_empty()) else {
        return Err(UsageError(format!("{}: no runpod: templates to work on", resolved.file)).into());
    };
    let rendered = stage::render_all(&resolved, &plan)?;
    match args.command {
        RunPodCommand::Render { template } => {
            let bodies: Vec<&serde_json::Map<String, serde_json::Value>> = rendered
                .iter()
                .filter(|r| template.as_ref().is_none_or(|t| &r.template.name == t))
                .map(|r| &r.body)
                .collect();
            match (&template, bodies.as_slice()) {
                (Some(t), []) => return Err(UsageError(format!("no template named {t:?}")).into()),
                (Some(_), [one]) => super::print_out(&format!("{}\n", crate::report::json(one))),
                _ => super::print_out(&format!("{}\n", crate::report::json(&bodies))),
            }
            Ok(ExitStatus::Success)
        }
        RunPodCommand::Sync { dry_run } => {
            // Every body and credential is checked before the first request.
            let wanted = rendered
                .iter()
                .map(|r| stage::wanted(r, env).map(|w| (r, w)))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| UsageError(e.to_string()))?;
            let client = stage::client(rp, env).map_err(|e| UsageError(e.to_string()))?;
            let mut results = Vec::new();
            let mut failed = false;
            for (r, w) in wanted {
                // A template never points at an image the registry does not have.
                match published(&r.target, &r.image.manifest_digest, env).await {
                    Ok(true) => {}
                    Ok(false) => {
                        failed = true;
                        eprintln!(
                            "error: template {}: {}@{} is not in registry {}: publish the image first (publish run), then sync",
                            r.template.name, r.target.repository, r.image.manifest_digest, r.target.registry
                        );
                        continue;
                    }
                    Err(e) => {
                        failed = true;
                        eprintln!(
                            "error: template {}: could not check that its image is published: {e}",
                            r.template.name
                        );
                        continue;
                    }
                }
                match crate::runpod::sync(&client, w, dry_run).await {
                    Ok(s) => results.push(s),
                    Err(e) => {
                        failed = true;
                        eprintln!("error: template {}: {e}", r.template.name);
                    }
                }
            }
            match args.policy.output {
                Output::Json => super::print_out(&format!("{}\n", crate::report::json(&results))),
                Output::Text => results.iter().for_each(|s| super::print_out(&crate::report::sync_text(s))),
            }
            Ok(match (failed, results.is_empty()) {
                (false, _) => ExitStatus::Success,
                (true, true) => ExitStatus::Failure,
                (true, false) => ExitStatus::Partial,
            })
        }
    }
}

/// Whether the target's repository has the manifest (a HEAD by digest, with the target's
/// credentials and pull scope: read-only).
async fn published(t: &crate::plan::TargetPlan, digest: &crate::types::Digest, env: &Env) -> anyhow::Result<bool> {
    let resolved = t
        .credentials
        .resolve(env)
        .map_err(|m| UsageError(format!("environment variable {} is not set (registry {})", m.variable, t.registry)))?;
    let credential = match resolved {
        crate::credentials::Resolved::AwsChain => {
            Some(crate::registry::ecr::Api::from_environment(env).await?.registry_credential().await?)
        }
        other => other.credential(),
    };
    let client = crate::registry::Client::new(
        &t.endpoint.endpoint(),
        &t.path,
        t.endpoint.ca_file.as_deref(),
        credential,
        crate::retry::RetryPolicy::default(),
    )?
    .with_scope(&format!("repository:{}:pull", t.path));
    client.authenticate().await?;
    Ok(client.has_manifest(digest).await?)
}
