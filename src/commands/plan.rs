//! `publish plan` (and `publish --dry-run`): the plan built, measured where asked, printed
//! as text, JSON or a matrix; in GitHub Actions also outputs, the job summary and the PR
//! comment. Writes nothing anywhere.

use super::{ExitStatus, Output, PlanArgs, load};
use crate::credentials::Env;
use crate::github;
use crate::image::Image;
use crate::plan::{self, MeasuredUsage, Plan};
use crate::policy::{RegistryKind, Resolved, Visibility};
use crate::registry::{Client, usage};
use crate::retry::RetryPolicy;
use crate::select::Usage;
use crate::types::Secret;

/// The repository Docker documents for checking the pull limit.
const PROBE_REPOSITORY: &str = "ratelimitpreview/test";

pub async fn plan(args: PlanArgs, env: &Env, actions: Option<&github::Actions>) -> anyhow::Result<ExitStatus> {
    let (resolved, images) = load::policy_and_images(&args.policy.policy, env).await?;
    let measured = match args.measure {
        super::Measure::Nothing => MeasuredUsage::new(),
        super::Measure::WithCredentials => measure_usage(&resolved, env, true, true, &Known::new()).await,
        super::Measure::All => measure_usage(&resolved, env, true, false, &Known::new()).await,
    };
    let plan = build(&resolved, &images, &measured)?;
    if args.matrix {
        super::print_out(&format!("{}\n", crate::report::json(&plan.matrix())));
    } else {
        super::print_json_or(args.policy.output, &plan, || crate::report::plan_text(&plan));
    }
    if let Some(a) = actions {
        plan_to_actions(a, &plan, env).await?;
    }
    Ok(ExitStatus::Success)
}

/// The plan, with every RunPod template rendered (all mistakes at once, exit 2) and the
/// digest of its body recorded.
pub fn build(resolved: &Resolved, images: &[Image], measured: &MeasuredUsage) -> anyhow::Result<Plan> {
    let mut plan = plan::build(resolved, images, measured)?;
    let rendered = crate::runpod::stage::render_all(resolved, &plan)?;
    for t in &mut plan.templates {
        t.body_digest =
            rendered.iter().find(|r| r.template.name == t.name).map(|r| crate::runpod::stage::body_digest(&r.body));
    }
    Ok(plan)
}

/// Credentials already resolved, by registry id (a run's preflight), so that no credential
/// helper is started twice.
pub type Known = std::collections::HashMap<String, Option<crate::registry::Credential>>;

/// Measures what registries already use, read-only, for those whose usage the policy does
/// not state: self-hosted registries by walking the catalog (only where a `limits.storage` is
/// set, unless `all`), Docker Hub's private repositories through its API; with
/// `need_credentials`, only registries whose credentials are there. A registry that cannot be
/// measured stays unknown. Credentials come from `known`, else are resolved here.
pub async fn measure_usage(
    resolved: &Resolved,
    env: &Env,
    all: bool,
    need_credentials: bool,
    known: &Known,
) -> MeasuredUsage {
    let mut measured = MeasuredUsage::new();
    for r in resolved.images.iter().flat_map(|i| &i.candidates) {
        if measured.contains_key(&r.id) {
            continue;
        }
        let credential = match known.get(&r.id) {
            Some(c) => c.clone(),
            None => crate::credentials::CredentialSource::for_registry(r.kind, &r.host, r.credentials.as_ref())
                .resolve(env)
                .ok()
                .and_then(|c| c.credential()),
        };
        if need_credentials && credential.is_none() && r.kind != RegistryKind::EcrPublic {
            continue;
        }
        // Whether an image of this visibility has the registry as a candidate.
        let here = |v: Visibility| {
            resolved.images.iter().any(|i| i.visibility == v && i.candidates.iter().any(|c| c.id == r.id))
        };
        let (private_here, public_here) = (here(Visibility::Private), here(Visibility::Public));
        if r.kind == RegistryKind::EcrPublic {
            // It hosts public images only; its credentials are AWS's, tried by the measurement.
            if r.used.storage.is_none() && (all || public_here) {
                measure_ecr(r, env, need_credentials, &mut measured).await;
            }
            continue;
        }
        if r.kind == RegistryKind::Dockerhub && public_here && r.pull_credentials.is_none() {
            // What RunPod's anonymous cold starts run into: the limit and window Docker Hub
            // states on a HEAD (which is not counted as a pull), asked anonymously.
            let endpoint = crate::registry::Endpoint { host: r.host.clone(), insecure: r.insecure };
            let result = async {
                let client =
                    Client::new(&endpoint, PROBE_REPOSITORY, r.ca_file.as_deref(), None, RetryPolicy::default())?
                        .with_scope(&format!("repository:{PROBE_REPOSITORY}:pull"));
                client.authenticate().await?;
                client.rate_limit("latest").await
            }
            .await;
            match result {
                Ok(Some(rate)) => {
                    tracing::info!(registry = %r.id, pulls = rate.0, window_secs = rate.1, "measured the anonymous pull limit");
                    measured
                        .entry(r.id.clone())
                        .or_insert_with(|| Usage { source: "measured", ..Default::default() })
                        .anonymous_pulls = Some(rate);
                }
                Ok(None) => tracing::info!(registry = %r.id, "no anonymous pull limit stated"),
                Err(e) => tracing::warn!(registry = %r.id, "anonymous pull limit not measured: {e}"),
            }
        }
        if r.kind == RegistryKind::Dockerhub && r.used.private_repositories.is_none() && (all || private_here) {
            let Some(cred) = credential else { continue };
            let api = env.get("DOCKERHUB_API_URL").filter(|v| !v.is_empty()).map_or(crate::registry::hub::API, |v| v);
            match crate::registry::hub::private_repositories(api, &r.namespace, &cred).await {
                Ok(n) => {
                    tracing::info!(registry = %r.id, private_repositories = n, "measured usage");
                    let usage = measured
                        .entry(r.id.clone())
                        .or_insert_with(|| Usage { source: "measured", ..Default::default() });
                    usage.private_repositories = Some(n);
                }
                Err(e) => tracing::warn!(registry = %r.id, "usage not measured, so it stays unknown: {e}"),
            }
            continue;
        }
        let matters = all || r.limits.storage.is_some();
        if r.kind != RegistryKind::Registry || !matters || r.used.storage.is_some() {
            continue;
        }
        let endpoint = crate::registry::Endpoint { host: r.host.clone(), insecure: r.insecure };
        let result = async {
            let client = Client::new(&endpoint, "", r.ca_file.as_deref(), credential, RetryPolicy::default())?
                .with_scope("registry:catalog:*");
            client.authenticate().await?;
            usage::measure(&client).await
        }
        .await;
        match result {
            Ok(stored) => {
                tracing::info!(registry = %r.id, stored = %stored.bytes, repositories = stored.repositories, "measured usage");
                let usage = Usage { storage: Some(stored.bytes), source: "measured", ..Default::default() };
                measured.insert(r.id.clone(), usage);
            }
            Err(e) => tracing::warn!(registry = %r.id, "usage not measured, so it stays unknown: {e}"),
        }
    }
    measured
}

/// ECR Public's storage through its API (`DescribeRepositories`, `DescribeImages`, and the
/// registry's manifests for shared layers). Without AWS credentials it stays unknown, said only
/// when measuring was asked of every registry.
async fn measure_ecr(
    r: &crate::policy::ResolvedRegistry,
    env: &Env,
    need_credentials: bool,
    measured: &mut MeasuredUsage,
) {
    let endpoint = crate::registry::Endpoint { host: r.host.clone(), insecure: r.insecure };
    let result = async {
        let api = crate::registry::ecr::Api::from_environment(env).await?;
        api.stored(&endpoint, r.ca_file.as_deref(), &r.namespace).await
    }
    .await;
    match result {
        Ok(stored) => {
            tracing::info!(registry = %r.id, stored = %stored.bytes, repositories = stored.repositories, images = stored.images, "measured usage");
            measured
                .entry(r.id.clone())
                .or_insert_with(|| Usage { source: "measured", ..Default::default() })
                .storage = Some(stored.bytes);
        }
        Err(e @ crate::registry::ecr::EcrError::NoCredentials) if need_credentials => {
            tracing::debug!(registry = %r.id, "usage not measured: {e}")
        }
        Err(e) => tracing::warn!(registry = %r.id, "usage not measured, so it stays unknown: {e}"),
    }
}

/// The action's outputs: `result` (the JSON document), `digest` (the first image's manifest
/// digest) and `images` (a JSON map image → references).
/// References by image, then by registry id, each `repository:tag@digest`.
pub type References = std::collections::BTreeMap<String, std::collections::BTreeMap<String, Vec<String>>>;

/// The action's outputs: `result`, `digest`, `images` (each image's references, digests
/// included, on every registry) and `references` (the same, per registry id).
pub fn outputs<T: serde::Serialize>(result: &T, digest: String, references: References) -> Vec<(&'static str, String)> {
    let images: std::collections::BTreeMap<&String, Vec<&String>> =
        references.iter().map(|(name, by_registry)| (name, by_registry.values().flatten().collect())).collect();
    vec![
        ("result", serde_json::to_string(result).unwrap_or_default()),
        ("digest", digest),
        ("images", serde_json::to_string(&images).unwrap_or_default()),
        ("references", serde_json::to_string(&references).unwrap_or_default()),
    ]
}

/// Outputs (with `matrix` and the plan as `plan`), job summary and, on a pull request, the
/// plan as one upserted comment.
async fn plan_to_actions(a: &github::Actions, plan: &Plan, env: &Env) -> anyhow::Result<()> {
    let images = plan
        .images
        .iter()
        .map(|i| {
            let by_registry = i
                .targets
                .iter()
                .map(|t| {
                    let refs =
                        t.tags.iter().map(|tag| format!("{}:{tag}@{}", t.repository, i.manifest_digest)).collect();
                    (t.registry.clone(), refs)
                })
                .collect();
            (i.name.clone(), by_registry)
        })
        .collect();
    let digest = plan.images.first().map(|i| i.manifest_digest.to_string()).unwrap_or_default();
    let mut outs = outputs(plan, digest, images);
    outs.push(("matrix", plan.matrix().to_string()));
    a.set_outputs(&outs)?;
    let markdown = github::summary::plan_markdown(plan);
    a.append_summary(&markdown)?;
    if let (Some(number), Some(repository)) = (a.pull_request(), &a.repository) {
        match env.get("GITHUB_TOKEN").filter(|t| !t.is_empty()) {
            Some(token) => {
                let token = Secret::new(token.clone());
                match github::comment::upsert(&a.api_url, &token, repository, number, &markdown).await {
                    Ok(done) => tracing::info!("plan comment on pull request #{number}: {done:?}"),
                    // A fork's read-only token cannot comment: the plan is still in the summary.
                    Err(e) => github::warning(&format!("could not comment the plan on pull request #{number}: {e}")),
                }
            }
            None => github::warning(
                "GITHUB_TOKEN is not set: the plan is in the job summary but not commented on the pull request",
            ),
        }
    }
    Ok(())
}

/// Prints the plan in the chosen format.
pub fn print(plan: &Plan, output: Output) {
    super::print_json_or(output, plan, || crate::report::plan_text(plan));
}
