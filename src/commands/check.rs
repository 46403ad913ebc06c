//! `publish check`: the policy resolved, every source opened and the plan built, offline.

use super::{ExitStatus, Output, PolicyArgs, load, plan};
use crate::credentials::Env;
use crate::github;

pub async fn check(args: PolicyArgs, env: &Env, actions: Option<&github::Actions>) -> anyhow::Result<ExitStatus> {
    let (resolved, images) = load::policy_and_images(&args.policy, env).await?;
    plan::build(&resolved, &images, &crate::plan::MeasuredUsage::new())?;
    let result = serde_json::json!({"status": "ok", "policy": resolved.file});
    if let Some(a) = actions {
        a.set_outputs(&[("result", result.to_string())])?;
    }
    if args.output == Output::Json {
        println!("{}", crate::report::json(&result));
    } else {
        println!("{}: ok ({} images)", resolved.file, resolved.images.len());
    }
    Ok(ExitStatus::Success)
}
