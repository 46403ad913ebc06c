//! `publish check`: the policy resolved, every source opened and the plan built, offline.

use super::{ExitStatus, Output, PolicyArgs, load};
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
    let (built, _) = crate::plan::finish(&resolved, &images, &crate::plan::MeasuredUsage::new())?;
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
    // Variables the policy names that are not set here: not an error (a laptop has no CI
    // secrets), but said, with the lines the workflow's step needs.
    let unset = unset_variables(&built, &resolved, env);
    if !unset.is_empty() {
        let mut w = format!("{}: variables the policy names are not set here:", resolved.file);
        for (var, why) in &unset {
            w.push_str(&format!("\n  {var} ({why})"));
        }
        w.push_str("\nthe workflow's publish step needs them, e.g.\n        env:");
        for (var, _) in &unset {
            w.push_str(&format!("\n          {var}: ${{{{ secrets.{var} }}}}"));
        }
        eprintln!("warning: {w}");
        if actions.is_some() {
            github::warning(&w);
        }
    }
    let warnings: Vec<String> = unset.iter().map(|(var, why)| format!("{var} is not set ({why})")).collect();
    let result = serde_json::json!({"status": "ok", "policy": resolved.file, "warnings": warnings});
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

/// Each environment variable the plan will read that is unset or empty here, with what names it.
fn unset_variables(plan: &crate::plan::Plan, resolved: &crate::policy::Resolved, env: &Env) -> Vec<(String, String)> {
    use crate::credentials::CredentialSource;
    let mut named: Vec<(String, String)> = Vec::new();
    let mut add = |var: &str, why: String| {
        if !named.iter().any(|(v, _)| v == var) {
            named.push((var.to_string(), why));
        }
    };
    for t in plan.images.iter().flat_map(|i| &i.targets) {
        if let CredentialSource::Env { password_env, .. } = &t.credentials {
            add(password_env, format!("registries.{}.credentials.password_env", t.registry));
        }
        if let Some(CredentialSource::Env { password_env, .. }) = &t.pull_credentials {
            add(password_env, format!("registries.{}.pull_credentials.password_env", t.registry));
        }
    }
    if let Some(s) = &plan.signing {
        if let Some(var) = s.key.as_deref().and_then(|k| k.strip_prefix("env://")) {
            add(var, "signing.key".into());
        }
        if let Some(var) = &s.password_env {
            add(var, "signing.password_env".into());
        }
    }
    if let Some(rp) = resolved.runpod.as_ref().filter(|rp| !rp.templates.is_empty()) {
        add(&rp.api_key_env, "runpod.api_key_env".into());
    }
    named.retain(|(var, _)| env.get(var).is_none_or(|v| v.is_empty()));
    named
}
