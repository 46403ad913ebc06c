//! `publish run` (the default command): build the plan — or read the one `publish plan
//! --output json` saved (`--plan FILE`) — check everything offline (credentials, key,
//! templates, and with `--plan` that every source still has the planned digest), then
//! execute it exactly. `--dry-run` prints the plan and writes nothing.

use std::collections::HashMap;
use std::path::PathBuf;

use super::{ExitStatus, PolicyArgs, UsageError, load, plan};
use crate::credentials::{Env, Resolved as Credentials};
use crate::execute;
use crate::github;
use crate::http::ClientConfig;
use crate::image::Image;
use crate::plan::steps::TemplateStep;
use crate::plan::{Known, Measure, MeasuredUsage, PLAN_VERSION, Plan, SignMethod};
use crate::policy::{Diagnostic, Diagnostics, Resolved};
use crate::runpod::stage;
use crate::sign::{PreparedSigner, keyless};

/// The largest plan file read.
const MAX_PLAN: u64 = 16 * 1024 * 1024;

#[derive(Debug, Clone, Default)]
pub struct RunArgs {
    pub policy: PolicyArgs,
    /// A plan saved by `publish plan --output json`, executed as it is.
    pub plan: Option<PathBuf>,
    /// One entry: an image id or a target id (`IMAGE@REGISTRY`).
    pub only: Option<String>,
    pub dry_run: bool,
}

pub async fn run(args: RunArgs, env: &Env, actions: Option<&github::Actions>) -> anyhow::Result<ExitStatus> {
    // Credentials resolved before measuring (helpers started once), reused when the final plan
    // has no other target.
    let mut early: Option<HashMap<String, Credentials>> = None;
    let (mut plan, resolved, mut images, rendered) = match &args.plan {
        Some(file) => {
            let plan = read_plan(file)?;
            crate::plan::steps::check(&plan)
                .map_err(|e| UsageError::Message(format!("{}: {e}: make the plan again", file.display())))?;
            // Templates are re-rendered from the policy the plan names, and must match.
            let resolved =
                if plan.templates.is_empty() { None } else { Some(load::policy(plan.policy.as_ref(), env)?) };
            (plan, resolved, HashMap::new(), None)
        }
        None => {
            let (resolved, images) = load::policy_and_images(&args.policy.policy, env).await?;
            // Everything offline is checked before measuring contacts any registry.
            let offline = crate::plan::finish(&resolved, &images, &MeasuredUsage::new())?;
            let (plan, rendered) = if args.dry_run {
                // Shown without secrets and without measuring: nothing is contacted.
                offline
            } else {
                let credentials = preflight(&offline.0, Some(&resolved), env, HashMap::new())?;
                let known: Known = offline
                    .0
                    .images
                    .iter()
                    .flat_map(|i| &i.targets)
                    .filter_map(|t| Some((t.registry.clone(), credentials.get(&t.id)?.credential())))
                    .collect();
                early = Some(credentials);
                let measured =
                    crate::plan::measure_usage(&resolved, env, Measure::Needed, &known, &resolved.transfer).await;
                // Only a measurement can change the selection: otherwise the plan stands.
                if measured.is_empty() {
                    offline
                } else {
                    crate::plan::remeasured(&resolved, &images, &measured, offline)?
                }
            };
            let by_id = resolved.images.iter().map(|i| i.name.clone()).zip(images).collect();
            (plan, Some(resolved), by_id, Some(rendered))
        }
    };
    let config = load::client_config(plan.transfer, env);
    if let Some(only) = &args.only {
        plan.restrict(only).map_err(UsageError::of)?;
    }
    if args.plan.is_some() {
        images = reopen(&plan, env, &config).await?;
    }
    if args.dry_run {
        // Shown as it would run; secrets are not needed to look.
        plan::print(&plan, args.policy.output);
        return Ok(ExitStatus::Success);
    }
    // Only targets the first preflight did not see (a measurement chose another registry).
    let credentials = preflight(&plan, resolved.as_ref(), env, early.unwrap_or_default())?;
    let signer = prepare_signer(&plan, env, &config)?;
    let templates = prepare_templates(&plan, resolved.as_ref(), rendered, env, &config)?;
    let inputs = execute::Inputs {
        images: &images,
        credentials,
        signer: signer.as_ref(),
        templates,
        in_actions: actions.is_some(),
        env,
        config,
    };
    let report = execute::execute(&plan, inputs).await;
    super::print_json_or(args.policy.output, &report, || crate::report::run_text(&report));
    if let Some(a) = actions {
        github::outputs::run(a, &plan, &report)?;
    }
    Ok(super::exit_for_report(&report))
}

/// A saved plan, of this version.
fn read_plan(file: &std::path::Path) -> anyhow::Result<Plan> {
    let bytes = crate::http::read_file_limited(file, MAX_PLAN).map_err(UsageError::of)?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
        UsageError::Message(format!("{}: not a plan (JSON error at line {})", file.display(), e.line()))
    })?;
    match value.get("version").and_then(serde_json::Value::as_u64) {
        Some(v) if v == u64::from(PLAN_VERSION) => {}
        Some(v) => {
            return Err(UsageError::Message(format!(
                "{}: plan version {v}, but this publish reads version {PLAN_VERSION}: make the plan with the same publish",
                file.display()
            ))
            .into());
        }
        None => return Err(UsageError::Message(format!("{}: not a plan (no version field)", file.display())).into()),
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        UsageError::Message(format!("{}: not a plan: {} ({})", file.display(), e.path(), e.inner())).into()
    })
}

/// Opens every planned source again and checks it is still what was planned: a different
/// digest is exit 2, and nothing is written.
async fn reopen(plan: &Plan, env: &Env, config: &ClientConfig) -> anyhow::Result<HashMap<String, Image>> {
    let mut out = HashMap::new();
    for img in &plan.images {
        let image = load::open_image(&img.open, env, config)
            .await
            .map_err(|e| UsageError::Message(format!("image {}: source {}: {e}", img.id, img.open.transport)))?;
        if image.root.digest != img.manifest_digest {
            return Err(UsageError::Message(format!(
                "image {}: the source {} now has manifest {}, but the plan was made for {}: make the plan again",
                img.id, img.open.transport, image.root.digest, img.manifest_digest
            ))
            .into());
        }
        out.insert(img.id.clone(), image);
    }
    Ok(out)
}

/// Resolves every target's credentials from its named source, before anything is contacted;
/// a policy variable that is not set is exit 2 (located in the policy when it is at hand).
/// Targets already in `known` are kept as they are (no credential helper runs twice).
fn preflight(
    plan: &Plan,
    resolved: Option<&Resolved>,
    env: &Env,
    known: HashMap<String, Credentials>,
) -> anyhow::Result<HashMap<String, Credentials>> {
    let mut errors: Vec<Diagnostic> = Vec::new();
    let mut out = known;
    let missing: Vec<_> = plan.images.iter().flat_map(|i| &i.targets).filter(|t| !out.contains_key(&t.id)).collect();
    for t in missing {
        match t.credentials.resolve(env) {
            Ok(c) => {
                out.insert(t.id.clone(), c);
            }
            Err(missing) => {
                let at = resolved
                    .and_then(|r| r.images.iter().flat_map(|i| &i.candidates).find(|c| c.id == t.registry))
                    .and_then(|r| r.credentials.as_ref());
                let (line, col, field) = at.map_or((1, 1, format!("registries.{}.credentials", t.registry)), |c| {
                    (c.at.0.max(1), c.at.1.max(1), c.field.clone())
                });
                if errors.iter().any(|e| e.field == field) {
                    continue;
                }
                errors.push(Diagnostic {
                    file: plan.policy.clone(),
                    line,
                    col,
                    field,
                    message: format!("environment variable {} is not set (registry {})", missing.variable, t.registry),
                    hint: Some(format!("export {} with the password or token for {}", missing.variable, t.registry)),
                });
            }
        }
    }
    if errors.is_empty() { Ok(out) } else { Err(Diagnostics(errors).into()) }
}

/// Loads the signing key before anything is contacted: a missing password or key is exit 2.
fn prepare_signer(plan: &Plan, env: &Env, config: &ClientConfig) -> anyhow::Result<Option<PreparedSigner>> {
    let Some(s) = &plan.signing else { return Ok(None) };
    let prepared = match (s.method, &s.key) {
        (SignMethod::Key, Some(key)) => {
            let var = s.password_env.as_deref().unwrap_or(crate::sign::keys::COSIGN_PASSWORD);
            let rekor = s.rekor_url.as_deref().filter(|_| s.tlog);
            PreparedSigner::key(key, var, rekor, env, config)
        }
        _ => {
            let defaults = keyless::Endpoints::default();
            let endpoints = keyless::Endpoints {
                fulcio: s.fulcio_url.clone().unwrap_or(defaults.fulcio),
                rekor: s.rekor_url.clone().unwrap_or(defaults.rekor),
            };
            PreparedSigner::keyless(endpoints, env, config)
        }
    };
    Ok(Some(prepared.map_err(UsageError::of)?))
}

type Templates = (crate::runpod::Client, Vec<(stage::Rendered, crate::runpod::Wanted)>);

/// Checks every template of the plan (rendered with the plan, or now for a saved plan), reads
/// its pull credential and the API key: all before any network call. A body that differs
/// from the planned one is exit 2.
fn prepare_templates(
    plan: &Plan,
    resolved: Option<&Resolved>,
    rendered: Option<Vec<stage::Rendered>>,
    env: &Env,
    config: &ClientConfig,
) -> anyhow::Result<Option<Templates>> {
    let (Some(resolved), false) = (resolved, plan.templates.is_empty()) else { return Ok(None) };
    let Some(rp) = &resolved.runpod else { return Ok(None) };
    let rendered = match rendered {
        Some(r) => r,
        None => stage::render_all(resolved, plan)?,
    };
    let mut wanted = Vec::new();
    for r in rendered {
        let Some(planned) = plan.templates.iter().find(|t| t.name == r.template.name) else { continue };
        let digest = stage::body_digest(&r.body);
        if let Some(p) = &planned.body_digest
            && *p != digest
        {
            return Err(UsageError::Message(format!(
                "template {}: the policy now renders a body with digest {digest}, but the plan has {p}: make the plan again",
                r.template.name
            ))
            .into());
        }
        let mut w = stage::wanted(&r, env).map_err(UsageError::of)?;
        // The plan's steps, exactly: its endpoints, and a credential only where it says so.
        w.endpoints = planned
            .steps
            .iter()
            .filter_map(|s| match s {
                TemplateStep::MoveEndpoint { id } => Some(id.clone()),
                _ => None,
            })
            .collect();
        let credential_step = planned.steps.iter().any(|s| matches!(s, TemplateStep::PullCredential { .. }));
        if credential_step != w.credential.is_some() {
            return Err(UsageError::Message(format!(
                "template {}: the plan's steps and the policy disagree on its registry credential: make the plan again",
                r.template.name
            ))
            .into());
        }
        wanted.push((r, w));
    }
    if wanted.is_empty() {
        return Ok(None);
    }
    let client = stage::client(rp, env, config).map_err(UsageError::of)?;
    Ok(Some((client, wanted)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_plan_version_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("plan.json");
        std::fs::write(&f, r#"{"version": 99, "policy": "p.yaml"}"#).unwrap();
        let e = read_plan(&f).unwrap_err();
        assert!(e.to_string().contains("plan version 99"), "{e}");
        assert!(e.downcast_ref::<UsageError>().is_some());
        std::fs::write(&f, r#"{"policy": "p.yaml"}"#).unwrap();
        assert!(read_plan(&f).unwrap_err().to_string().contains("no version field"));
    }
}
