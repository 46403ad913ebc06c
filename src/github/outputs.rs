//! The action's outputs and job summary, for a plan and for a run: `result` (the JSON
//! document), `digest` (the first image's manifest digest), `images` (each image's
//! references, digests included, on every registry), `references` (the same, per registry
//! id); a plan adds `matrix` and, on a pull request, one upserted comment.

use std::collections::BTreeMap;

use super::Actions;
use crate::http::ClientConfig;
use crate::plan::Plan;
use crate::report::RunReport;
use crate::types::Secret;

/// References by image, then by registry id, each `repository:tag@digest`.
pub type References = BTreeMap<String, BTreeMap<String, Vec<String>>>;

/// The action's outputs: `result`, `digest`, `images` (each image's references, digests
/// included, on every registry) and `references` (the same, per registry id).
fn outputs<T: serde::Serialize>(result: &T, digest: String, references: References) -> Vec<(&'static str, String)> {
    let images: BTreeMap<&String, Vec<&String>> =
        references.iter().map(|(name, by_registry)| (name, by_registry.values().flatten().collect())).collect();
    vec![
        ("result", serde_json::to_string(result).unwrap_or_default()),
        ("digest", digest),
        ("images", serde_json::to_string(&images).unwrap_or_default()),
        ("references", serde_json::to_string(&references).unwrap_or_default()),
    ]
}

/// Outputs (the plan as `result`, and `matrix`), job summary and, on a pull request, the plan
/// as one upserted comment.
pub async fn plan(a: &Actions, plan: &Plan, token: Option<&Secret>, config: &ClientConfig) -> anyhow::Result<()> {
    let mut images = References::new();
    for i in &plan.images {
        images.entry(i.name.clone()).or_default();
        for t in &i.targets {
            // A digest known only once the image is pushed is left out of the plan's references.
            let at = i.manifest_digest.as_ref().map(|d| format!("@{d}")).unwrap_or_default();
            let refs = t.tags.iter().map(|tag| format!("{}:{tag}{at}", t.repository)).collect();
            images.entry(i.name.clone()).or_default().insert(t.registry.clone(), refs);
        }
    }
    let digest =
        plan.images.first().and_then(|i| i.manifest_digest.as_ref()).map(ToString::to_string).unwrap_or_default();
    let mut outs = outputs(plan, digest, images);
    outs.push(("matrix", plan.matrix().to_string()));
    a.set_outputs(&outs)?;
    let markdown = super::summary::plan_markdown(plan);
    a.append_summary(&markdown)?;
    if let (Some(number), Some(repository)) = (a.pull_request(), &a.repository) {
        match token {
            Some(token) => {
                match super::comment::upsert(&a.api_url, token, repository, number, &markdown, config).await {
                    Ok(done) => tracing::info!("plan comment on pull request #{number}: {done:?}"),
                    // A fork's read-only token cannot comment: the plan is still in the summary.
                    Err(e) => super::warning(&format!("could not comment the plan on pull request #{number}: {e}")),
                }
            }
            None => super::warning(
                "GITHUB_TOKEN is not set: the plan is in the job summary but not commented on the pull request",
            ),
        }
    }
    Ok(())
}

/// Outputs and job summary after a run: the references written, each with its digest.
pub fn run(a: &Actions, plan: &Plan, report: &RunReport) -> anyhow::Result<()> {
    let mut refs = References::new();
    for i in &report.images {
        refs.entry(i.name.clone()).or_default();
        for t in i.targets.iter().filter(|t| !t.references.is_empty()) {
            let with_digest = t
                .references
                .iter()
                .map(|r| if r.contains('@') { r.clone() } else { format!("{r}@{}", t.digest) })
                .collect();
            refs.entry(i.name.clone()).or_default().insert(t.registry.clone(), with_digest);
        }
    }
    let digest = report.images.first().map(|i| i.digest.to_string()).unwrap_or_default();
    let mut outs = outputs(report, digest, refs);
    outs.push(("attestations", serde_json::to_string(&attestations(report)).unwrap_or_default()));
    a.set_outputs(&outs)?;
    a.append_summary(&format!("{}\n{}", super::summary::plan_markdown(plan), super::summary::run_markdown(report)))?;
    Ok(())
}

/// The `attestations` output: each attested digest → its attestations (predicate type, what
/// it came from, and where each format was written).
pub fn attestations(report: &RunReport) -> BTreeMap<String, Vec<serde_json::Value>> {
    let mut out: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    for t in report.images.iter().flat_map(|i| &i.targets) {
        for a in &t.attestations {
            let mut v = serde_json::to_value(a).unwrap_or_default();
            v["repository"] = serde_json::json!(t.repository);
            out.entry(t.digest.to_string()).or_default().push(v);
        }
    }
    out
}
