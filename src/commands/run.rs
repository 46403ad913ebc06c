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
use crate::plan::{Known, Measure, MeasuredUsage, PLAN_VERSION, Plan};
use crate::runpod::stage;
use crate::sign::PreparedSigner;

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
    /// Move tags and templates even to an older image than the one they hold.
    pub allow_rollback: bool,
}

/// The plan a run executes, with what building it left at hand.
struct Planned {
    plan: Plan,
    /// The policy: for a saved plan, only when it has templates (they are rendered again).
    resolved: Option<crate::policy::Resolved>,
    images: HashMap<String, Image>,
    /// Templates rendered with the plan (a saved plan's are rendered when prepared).
    rendered: Option<Vec<stage::Rendered>>,
    /// Credentials resolved before measuring (helpers started once).
    credentials: HashMap<String, Credentials>,
}

pub async fn run(args: RunArgs, env: &Env, actions: Option<&github::Actions>) -> anyhow::Result<ExitStatus> {
    let started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let urls = load::service_urls(env);
    let Planned { mut plan, resolved, mut images, rendered, credentials: early } = match &args.plan {
        Some(file) => saved_plan(file, env)?,
        None => policy_plan(&args, env, &urls.dockerhub_api).await?,
    };
    let config = load::client_config(plan.transfer, env);
    if let Some(only) = &args.only {
        plan.restrict(only).map_err(UsageError::of)?;
    }
    // The SBOMs as read (and checked) before anything is pushed: the run attests these bytes.
    let mut sboms: HashMap<String, crate::attest::sbom::Sbom> = resolved
        .iter()
        .flat_map(|r| &r.images)
        .filter_map(|i| Some((i.name.clone(), i.sbom.as_ref()?.sbom.clone())))
        .collect();
    if args.plan.is_some() {
        (images, sboms) = reopen(&plan, env, &config).await?;
    }
    if args.dry_run {
        // Shown as it would run; secrets are not needed to look.
        plan::print(&plan, args.policy.output);
        return Ok(ExitStatus::Success);
    }
    // Only targets the first preflight did not see (a measurement chose another registry).
    let credentials = crate::plan::preflight(&plan, resolved.as_ref(), env, early)?;
    let signer = match &plan.signing {
        Some(signing) => Some(PreparedSigner::for_plan(signing, env, &config).map_err(UsageError::of)?),
        None => None,
    };
    let templates = match resolved.as_ref() {
        Some(resolved) => stage::prepare(&plan, resolved, rendered, env, (&config, urls.runpod_api.as_deref()))
            .map_err(|e| match e {
                stage::PrepareError::Templates(t) => anyhow::Error::from(t),
                stage::PrepareError::Stage(s) => UsageError::of(s).into(),
            })?,
        None => None,
    };
    // A held image's signature tells its commit only when it verifies with the policy's
    // settings; without a verifier, labels and created times order images.
    let verifier = match super::runpod::signature_verifier(plan.signing.as_ref(), env, true).await {
        Ok(v) => v,
        Err(e) => {
            tracing::info!("held images' signatures are not read to order them: {e:#}");
            None
        }
    };
    let inputs = execute::Inputs {
        images: &images,
        credentials,
        signer: signer.as_ref(),
        templates,
        in_actions: actions.is_some(),
        env,
        config,
        dockerhub_api: &urls.dockerhub_api,
        // `git` where the policy is, as for tag templates (a saved plan: the working directory).
        provenance: crate::sign::provenance::from_environment(env, resolved.as_ref().and(args.policy.policy.parent())),
        verifier: verifier.as_ref(),
        git: crate::order::Git::new(resolved.as_ref().and(args.policy.policy.parent())),
        allow_rollback: args.allow_rollback
            || resolved.as_ref().and_then(|r| r.runpod.as_ref()).is_some_and(|rp| rp.allow_rollback),
        run: crate::attest::write::RunFacts {
            env: env.clone(),
            git_dir: resolved.as_ref().and(args.policy.policy.parent()).map(std::path::Path::to_path_buf),
            started,
            sboms,
        },
    };
    let report = execute::execute(&plan, inputs).await;
    super::print_json_or(args.policy.output, &report, || crate::report::run_text(&report));
    if let Some(a) = actions {
        github::outputs::run(a, &plan, &report)?;
    }
    // retention.on_run: only after a run where everything was pushed, signed and synced.
    if report.status == crate::report::RunStatus::Success
        && let Some(resolved) = resolved.as_ref()
        && !super::prune::after_run(resolved, &args.policy.policy, env, &report).await
    {
        eprintln!("error: the prune after the run failed (see above): the run itself succeeded");
        return Ok(ExitStatus::Partial);
    }
    Ok(super::exit_for_report(&report))
}

/// A saved plan, its steps checked; the policy it names is loaded when it has templates.
fn saved_plan(file: &std::path::Path, env: &Env) -> anyhow::Result<Planned> {
    let plan = read_plan(file)?;
    crate::plan::steps::check(&plan)
        .map_err(|e| UsageError::Message(format!("{}: {e}: make the plan again", file.display())))?;
    // Templates are re-rendered from the policy the plan names, and must match.
    let resolved = if plan.templates.is_empty() { None } else { Some(load::policy(plan.policy.as_ref(), env)?) };
    Ok(Planned { plan, resolved, images: HashMap::new(), rendered: None, credentials: HashMap::new() })
}

/// The plan built from the policy: everything offline checked first, then (unless a dry run)
/// the credentials resolved and the usage measured, which may change the selection.
async fn policy_plan(args: &RunArgs, env: &Env, dockerhub_api: &str) -> anyhow::Result<Planned> {
    let (resolved, images) = load::policy_and_images(&args.policy.policy, env).await?;
    let offline = crate::plan::finish(&resolved, &images, &MeasuredUsage::new())?;
    let mut credentials = HashMap::new();
    let (plan, rendered) = if args.dry_run {
        // Shown without secrets and without measuring: nothing is contacted.
        offline
    } else {
        credentials = crate::plan::preflight(&offline.0, Some(&resolved), env, HashMap::new())?;
        let known: Known = offline
            .0
            .images
            .iter()
            .flat_map(|i| &i.targets)
            .filter_map(|t| Some((t.registry.clone(), credentials.get(&t.id)?.credential())))
            .collect();
        let scope = (&resolved.transfer, dockerhub_api);
        let mut measured = crate::plan::measure_usage(&resolved, env, Measure::Needed, &known, scope).await;
        super::prune::after_retention(&resolved, &args.policy.policy, env, &mut measured).await;
        // Only a measurement can change the selection: otherwise the plan stands.
        if measured.is_empty() { offline } else { crate::plan::remeasured(&resolved, &images, &measured, offline)? }
    };
    let images = resolved.images.iter().map(|i| i.name.clone()).zip(images).collect();
    Ok(Planned { plan, resolved: Some(resolved), images, rendered: Some(rendered), credentials })
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
type Reopened = (HashMap<String, Image>, HashMap<String, crate::attest::sbom::Sbom>);

async fn reopen(plan: &Plan, env: &Env, config: &ClientConfig) -> anyhow::Result<Reopened> {
    let mut out = HashMap::new();
    let mut sboms = HashMap::new();
    for img in &plan.images {
        let image = load::open_image(&img.open, env, config)
            .await
            .map_err(|e| UsageError::Message(format!("image {}: source {}: {e}", img.id, img.open.transport)))?;
        if image.root.digest != img.source_digest {
            let config = image.root.config.as_ref().map(|c| &c.digest);
            let mut now = format!("manifest {}, but the plan was made for {}", image.root.digest, img.source_digest);
            if let (Some(now_config), Some(then)) = (config, &img.config_digest)
                && now_config != then
            {
                now.push_str(&format!(" (its config is now {now_config}, was {then})"));
            }
            return Err(UsageError::Message(format!(
                "image {}: the source {} now has {now}: make the plan again",
                img.id, img.open.transport
            ))
            .into());
        }
        // An SBOM changed since the plan would be found only after the push: refused now.
        for a in img.attestations.iter().filter(|a| a.kind == "sbom") {
            let file = a.file.as_deref().unwrap_or_default();
            let now = crate::attest::sbom::load(std::path::Path::new(file))
                .map_err(|e| UsageError::Message(format!("image {}: SBOM {file}: {e}", img.id)))?;
            if a.file_digest.as_ref() != Some(&now.digest) {
                return Err(UsageError::Message(format!(
                    "image {}: the SBOM {file} changed since the plan was made: make the plan again",
                    img.id
                ))
                .into());
            }
            sboms.insert(img.id.clone(), now);
        }
        out.insert(img.id.clone(), image);
    }
    Ok((out, sboms))
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
