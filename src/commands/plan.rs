//! `publish plan` (and `publish --dry-run`): the plan built, measured where asked, printed
//! as text, JSON or a matrix; in GitHub Actions also outputs, the job summary and the PR
//! comment. Writes nothing anywhere.

use super::{ExitStatus, Output, PlanArgs, load};
use crate::credentials::Env;
use crate::github;
use crate::plan::{self, Plan};
use crate::types::Secret;

pub async fn plan(args: PlanArgs, env: &Env, actions: Option<&github::Actions>) -> anyhow::Result<ExitStatus> {
    let (resolved, images) = load::policy_and_images(&args.policy.policy, env).await?;
    let mut measured = plan::measure_usage(
        &resolved,
        env,
        args.measure,
        &plan::Known::new(),
        (&resolved.transfer, &load::service_urls(env).dockerhub_api),
    )
    .await;
    super::prune::after_retention(&resolved, &args.policy.policy, env, &mut measured).await;
    let (mut plan, _) = plan::finish(&resolved, &images, &measured)?;
    if !args.matrix {
        plan::look_up_layers(&mut plan, env, args.measure, &resolved.transfer).await;
        look_up_held(&mut plan, (&resolved, &images), &args, env).await;
    }
    if args.matrix {
        super::print_out(&format!("{}\n", crate::report::json(&plan.matrix())));
    } else {
        super::print_json_or(args.policy.output, &plan, || crate::report::plan_text(&plan));
    }
    if let Some(a) = actions {
        let token = env.get("GITHUB_TOKEN").filter(|t| !t.is_empty()).map(|t| Secret::new(t.clone()));
        github::outputs::plan(a, &plan, token.as_ref(), &resolved.transfer).await?;
    }
    Ok(ExitStatus::Success)
}

/// What a run would do with the tags that hold another image (`guard`), as the run decides it:
/// read-only, when the plan measures.
async fn look_up_held(
    plan: &mut Plan,
    (resolved, images): (&crate::policy::Resolved, &[crate::image::Image]),
    args: &PlanArgs,
    env: &Env,
) {
    let named = resolved.images.iter().map(|i| i.name.as_str()).zip(images.iter()).collect();
    let verifier = super::runpod::signature_verifier(plan.signing.as_ref(), env, true).await.unwrap_or_else(|e| {
        tracing::info!("held images' signatures are not read to order them: {e:#}");
        None
    });
    let provenance = crate::sign::provenance::from_environment(env, args.policy.policy.parent());
    let allow_rollback = resolved.runpod.as_ref().is_some_and(|rp| rp.allow_rollback);
    let guard = crate::guard::Guard {
        verifier: verifier.as_ref(),
        git: crate::order::Git::new(args.policy.policy.parent()).read_only(),
        provenance: &provenance,
        allow_rollback,
    };
    crate::guard::look(plan, &named, (env, args.measure, &resolved.transfer), &guard).await;
}

/// Prints the plan in the chosen format.
pub fn print(plan: &Plan, output: Output) {
    super::print_json_or(output, plan, || crate::report::plan_text(plan));
}
