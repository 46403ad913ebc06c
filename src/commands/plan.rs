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
    let measured = plan::measure_usage(
        &resolved,
        env,
        args.measure,
        &plan::Known::new(),
        (&resolved.transfer, &load::service_urls(env).dockerhub_api),
    )
    .await;
    let (mut plan, _) = plan::finish(&resolved, &images, &measured)?;
    if !args.matrix {
        plan::look_up_layers(&mut plan, env, args.measure, &resolved.transfer).await;
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

/// Prints the plan in the chosen format.
pub fn print(plan: &Plan, output: Output) {
    super::print_json_or(output, plan, || crate::report::plan_text(plan));
}
