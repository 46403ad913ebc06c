//! `publish check`: the policy resolved, every source opened and the plan built, offline.

use super::{ExitStatus, Output, PolicyArgs, load, plan};
use crate::credentials::Env;
use crate::github;

/// `publish check [--verify-digests]`.
#[derive(Debug, Clone, Default)]
pub struct CheckArgs {
    pub policy: PolicyArgs,
    /// Hash every blob too, not only check it is there with its size.
    pub verify_digests: bool,
}

pub async fn check(args: CheckArgs, env: &Env, actions: Option<&github::Actions>) -> anyhow::Result<ExitStatus> {
    let (resolved, images) = load::policy_and_images(&args.policy.policy, env).await?;
    plan::build(&resolved, &images, &crate::plan::MeasuredUsage::new())?;
    // Every blob of every planned manifest is in the source, a regular file of its size.
    let errors: Vec<_> = images
        .iter()
        .enumerate()
        .filter_map(|(i, image)| {
            image
                .check_blobs(args.verify_digests)
                .err()
                .map(|e| crate::plan::source_diagnostic(&resolved, i, e.to_string()))
        })
        .collect();
    if !errors.is_empty() {
        return Err(crate::policy::Diagnostics(errors).into());
    }
    let result = serde_json::json!({"status": "ok", "policy": resolved.file});
    if let Some(a) = actions {
        a.set_outputs(&[("result", result.to_string())])?;
    }
    if args.policy.output == Output::Json {
        super::print_out(&format!("{}\n", crate::report::json(&result)));
    } else {
        super::print_out(&format!("{}: ok ({} images)\n", resolved.file, resolved.images.len()));
    }
    Ok(ExitStatus::Success)
}
