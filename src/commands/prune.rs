//! `publish prune [--dry-run] [--only IMAGE[@REGISTRY]]`: for every image with `retention:`,
//! each repository of its candidate registries: every image there with its verdict and reason,
//! the bytes it frees, then the deletes (`prune`). What RunPod runs is read from its API first;
//! without `retention:` nothing is ever deleted. Does not open the images' sources.

use std::fmt::Write;

use serde::Serialize;

use super::{ExitStatus, Output, PolicyArgs, UsageError, load};
use crate::credentials::Env;
use crate::policy::{RegistryKind, Resolved, ResolvedImage, ResolvedRegistry};
use crate::prune::{self, Action, InUse, Verdict, services};
use crate::types::{ByteSize, Secret};

#[derive(Debug, Clone)]
pub struct PruneArgs {
    pub policy: PolicyArgs,
    pub dry_run: bool,
    /// One image, or one image on one registry (`IMAGE@REGISTRY`).
    pub only: Option<String>,
}

/// One repository's prune.
#[derive(Debug, Clone, Serialize)]
pub struct RepositoryPrune {
    pub image: String,
    pub registry: String,
    pub repository: String,
    /// `pruned`, `would-prune` (a dry run), `skipped` or `failed`.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub verdicts: Vec<Verdict>,
    /// Bytes the deleted images free once the registry's garbage collection runs.
    pub frees: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub applied: Option<prune::Applied>,
    /// Whether the space comes back only with the registry's garbage collection.
    #[serde(skip)]
    pub gc: bool,
}

pub async fn prune(args: PruneArgs, env: &Env, actions: Option<&crate::github::Actions>) -> anyhow::Result<ExitStatus> {
    let resolved = load::policy(&args.policy.policy, env)?;
    let targets = targets(&resolved, args.only.as_deref())?;
    if targets.is_empty() {
        eprintln!("{}: no retention: for any image: nothing is ever deleted", resolved.file);
        return Ok(ExitStatus::Success);
    }
    let out = prune_all(&resolved, &args.policy.policy, env, (targets, &InUse::new()), args.dry_run).await;
    match args.policy.output {
        Output::Json => super::print_out(&format!("{}\n", crate::report::json(&out))),
        Output::Text => super::print_out(&text(&out)),
    }
    if let Some(a) = actions {
        a.append_summary(&markdown(&out))?;
    }
    let failed = out.iter().filter(|r| r.status == "failed").count();
    Ok(match failed {
        0 => ExitStatus::Success,
        n if n == out.len() => ExitStatus::Failure,
        _ => ExitStatus::Partial,
    })
}

/// What `retention:` would delete now from each measured registry (a dry run of the prune),
/// as `storage_after_retention` on its usage, counted by selection with `retention.on_run`.
/// A registry whose prune cannot be surveyed is left as measured (and said).
pub async fn after_retention(
    resolved: &Resolved,
    policy: &std::path::Path,
    env: &Env,
    measured: &mut crate::plan::MeasuredUsage,
) {
    let targets: Vec<(&ResolvedImage, &ResolvedRegistry)> = resolved
        .images
        .iter()
        .filter(|i| i.retention.is_some())
        .flat_map(|i| i.candidates.iter().map(move |r| (i, r)))
        .filter(|(_, r)| measured.get(&r.id).is_some_and(|u| u.storage.is_some()))
        .collect();
    if targets.is_empty() {
        return;
    }
    // What every run frees (images with on_run) is counted apart from what only a prune by
    // hand would: with any on_run image on a registry, the counted figure has only the former.
    let mut frees: std::collections::HashMap<String, (u64, u64)> = std::collections::HashMap::new();
    let on_run =
        |image: &str| resolved.images.iter().any(|i| i.name == image && i.retention.as_ref().is_some_and(|x| x.on_run));
    for r in prune_all(resolved, policy, env, (targets, &InUse::new()), true).await {
        if r.status == "failed" {
            tracing::warn!(registry = %r.registry, "storage after retention not estimated: {}", r.reason.unwrap_or_default());
            continue;
        }
        let f = frees.entry(r.registry.clone()).or_default();
        f.0 += r.frees;
        if on_run(&r.image) {
            f.1 += r.frees;
        }
    }
    for (registry, (all, every_run)) in frees {
        let Some(usage) = measured.get_mut(&registry) else { continue };
        let now = usage.storage.unwrap_or_default();
        usage.counts_retention = every_run > 0
            || resolved.images.iter().any(|i| on_run(&i.name) && i.candidates.iter().any(|c| c.id == registry));
        let freed = if usage.counts_retention { every_run } else { all };
        usage.storage_after_retention = Some(ByteSize(now.0.saturating_sub(freed)));
    }
}

/// `publish run` with `retention.on_run: true`, after a fully successful push and sync: the
/// repositories it pushed to whose images have it, keeping what it pushed. The report goes to
/// stderr (stdout holds the run's); `false` when a repository's prune failed.
pub async fn after_run(
    resolved: &Resolved,
    policy: &std::path::Path,
    env: &Env,
    report: &crate::report::RunReport,
) -> bool {
    let mut pushed = InUse::new();
    let mut targets = Vec::new();
    for i in &report.images {
        let Some(spec) = resolved.images.iter().find(|s| s.name == i.name) else { continue };
        if !spec.retention.as_ref().is_some_and(|r| r.on_run) {
            continue;
        }
        for t in &i.targets {
            pushed.insert(t.digest.clone(), "this run (it pushed it)".to_string());
            if let Some(r) = spec.candidates.iter().find(|r| r.id == t.registry) {
                targets.push((spec, r));
            }
        }
    }
    if targets.is_empty() {
        return true;
    }
    let out = prune_all(resolved, policy, env, (targets, &pushed), false).await;
    eprint!("{}", text(&out));
    out.iter().all(|r| r.status != "failed")
}

/// Prunes each (image, registry), keeping `extra` besides what RunPod runs.
async fn prune_all(
    resolved: &Resolved,
    policy: &std::path::Path,
    env: &Env,
    (targets, extra): (Vec<(&ResolvedImage, &ResolvedRegistry)>, &InUse),
    dry_run: bool,
) -> Vec<RepositoryPrune> {
    let signing = resolved.signing.as_ref().map(crate::plan::signing_plan);
    let verifier = super::runpod::signature_verifier(signing.as_ref(), env, true).await.unwrap_or_else(|e| {
        tracing::info!("signatures are not read to order images: {e:#}");
        None
    });
    let git = crate::order::Git::new(policy.parent());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    // What RunPod runs is read once for every repository.
    let running = running(resolved, env).await;
    let mut out = Vec::new();
    for (image, registry) in targets {
        let path = registry.repository_for(&image.name);
        let mut r = RepositoryPrune {
            image: image.name.clone(),
            registry: registry.id.clone(),
            repository: format!("{}/{path}", registry.host),
            status: if dry_run { "would-prune" } else { "pruned" },
            reason: None,
            verdicts: Vec::new(),
            frees: 0,
            applied: None,
            gc: registry.kind == RegistryKind::Registry,
        };
        if registry.kind == RegistryKind::Gar {
            r.status = "skipped";
            r.reason = Some(format!(
                "{} repositories are pruned through {}'s own API, which publish does not call yet: nothing deleted",
                registry.kind.as_str(),
                registry.kind.as_str()
            ));
            out.push(r);
            continue;
        }
        let context = (resolved, env, verifier.as_ref(), &git);
        let result = match &running {
            Ok(running) => one(&mut r, (image, registry, &path), (context, (extra, running)), (dry_run, now)).await,
            Err(e) => Err(anyhow::anyhow!("{e:#}")),
        };
        if let Err(e) = result {
            r.status = "failed";
            r.reason = Some(format!("{e:#}"));
        }
        out.push(r);
    }
    out
}

type Context<'a> = (&'a Resolved, &'a Env, Option<&'a crate::sign::Verifier>, &'a crate::order::Git);

/// Who runs what: (`RunPod template NAME`, its image reference).
type Running = (String, String);

/// Surveys one repository, decides, and deletes unless a dry run.
async fn one(
    r: &mut RepositoryPrune,
    (image, registry, path): (&ResolvedImage, &ResolvedRegistry, &str),
    ((resolved, env, verifier, git), (extra, running)): (Context<'_>, (&InUse, &[Running])),
    (dry_run, now): (bool, i64),
) -> anyhow::Result<()> {
    let Some(retention) = &image.retention else { return Ok(()) };
    let config = resolved.transfer;
    let scope = format!("repository:{path}:pull,push,delete");
    let (client, credential) = super::runpod::registry_client_with(registry, path, env, &config).await?;
    let client = client.with_scope(&scope);
    client.authenticate().await?;
    let mut in_use = in_use(running, &r.repository, &client).await?;
    for (d, who) in extra {
        in_use.entry(d.clone()).or_insert_with(|| who.clone());
    }
    // GHCR and ECR Public list and delete through their own APIs; a registry through its own.
    let (listed, target) = match registry.kind {
        RegistryKind::Ghcr => {
            let token =
                credential.map(|c| c.password).or_else(|| env.get("GITHUB_TOKEN").map(|t| Secret::new(t.clone())));
            let token = token.ok_or_else(|| {
                UsageError::Message(format!(
                    "registry {}: no token for GitHub's Packages API (the registry's credentials, or GITHUB_TOKEN)",
                    registry.id
                ))
            })?;
            let api_url = env.get("GITHUB_API_URL").cloned().unwrap_or_else(|| "https://api.github.com".into());
            let (listed, target) = services::ghcr(&api_url, token, &config, path).await?;
            (Some(listed), target)
        }
        RegistryKind::EcrPublic => {
            let (listed, target) = services::ecr(env, &config, path).await?;
            (Some(listed), target)
        }
        RegistryKind::Dockerhub => {
            let credential = credential.ok_or_else(|| {
                UsageError::Message(format!(
                    "registry {}: Docker Hub's API needs the registry's credentials",
                    registry.id
                ))
            })?;
            let api_url = super::load::service_urls(env).dockerhub_api;
            let (listed, target) = services::hub(&api_url, &credential, &config, path).await?;
            (Some(listed), target)
        }
        _ => (None, services::Target::Registry(&client)),
    };
    let survey = match &listed {
        Some(listed) => prune::survey_versions(&client, path, listed, verifier, git).await?,
        None => prune::survey(&client, path, verifier, git).await?,
    };
    // Docker Hub's API cannot delete an untagged manifest: the dry run says so too.
    let mut retention = retention.clone();
    if registry.kind == RegistryKind::Dockerhub {
        retention.delete_untagged = false;
    }
    r.verdicts = prune::decide(&survey, &retention, &in_use, now);
    if !dry_run {
        let image_first = matches!(registry.kind, RegistryKind::Ghcr | RegistryKind::Dockerhub);
        let applied = prune::apply(&target, &survey, &r.verdicts, image_first).await?;
        keep_refused(&mut r.verdicts, &applied, &survey);
        r.applied = Some(applied);
        // What was kept is checked afterwards: every kept image and index child still there.
        let kept = r.verdicts.iter().filter(|v| v.action == Action::Keep);
        for v in kept.filter(|v| matches!(v.kind, prune::Kind::Image | prune::Kind::Child)) {
            if !client.has_manifest(&v.digest).await? {
                anyhow::bail!("after the prune, kept {} {} is missing from {}", v.kind, v.digest, r.repository);
            }
        }
    }
    r.frees = r.verdicts.iter().filter_map(|v| v.frees).sum();
    Ok(())
}

/// Deletes the registry refused (GHCR keeps a package's last tagged version) are kept, with
/// its reason: not a failure; an image refused keeps its children and signatures too.
fn keep_refused(verdicts: &mut [Verdict], applied: &prune::Applied, survey: &prune::Survey) {
    for (d, why) in &applied.refused {
        let children: Vec<&crate::types::Digest> =
            survey.images.iter().filter(|e| &e.digest == d).flat_map(|e| &e.children).collect();
        for v in verdicts.iter_mut().filter(|v| v.action == Action::Delete) {
            if &v.digest == d {
                v.reason = why.clone();
            } else if v.subject.as_ref() == Some(d) || children.contains(&&v.digest) {
                v.reason = format!("kept with image {}, which was not deleted", d.short());
            } else {
                continue;
            }
            v.action = Action::Keep;
            v.frees = None;
        }
    }
}

/// What RunPod runs: (who, image reference) for every template of the account and the
/// endpoints the policy's templates move. With `runpod:` in the policy, its key must be there:
/// without it, what production runs cannot be seen and nothing is pruned.
async fn running(resolved: &Resolved, env: &Env) -> anyhow::Result<Vec<Running>> {
    let mut running: Vec<Running> = Vec::new();
    let Some(rp) = &resolved.runpod else { return Ok(running) };
    let runpod = super::runpod::runpod_client(rp, env, &resolved.transfer)
        .map_err(|e| UsageError::Message(format!("{e:#}: prune reads which images RunPod runs before deleting any")))?;
    for t in runpod.list_templates().await? {
        let name = t.get("name").and_then(serde_json::Value::as_str).unwrap_or("?").to_string();
        if let Some(image) = t.get("image").and_then(serde_json::Value::as_str) {
            running.push((format!("RunPod template {name}"), image.to_string()));
        }
    }
    for e in rp.templates.iter().flat_map(|t| &t.endpoints) {
        if let Some(image) = runpod.get_endpoint(e).await?.get("image").and_then(serde_json::Value::as_str) {
            running.push((format!("RunPod endpoint {e}"), image.to_string()));
        }
    }
    Ok(running)
}

/// The images of `repository` (read with `client`) that something in `running` runs.
async fn in_use(
    running: &[(String, String)],
    repository: &str,
    client: &crate::registry::Client,
) -> anyhow::Result<InUse> {
    let mut out = InUse::new();
    for (who, image) in running {
        let (repo, tag, digest) = crate::guard::split_reference(image);
        if normalized(&repo) != normalized(repository) {
            continue;
        }
        if let Some(d) = crate::guard::digest_of(client, (tag, digest)).await? {
            out.entry(d).or_insert_with(|| who.clone());
        }
    }
    Ok(out)
}

/// A repository as Docker names it in full: `ns/name` and `name` are Docker Hub's
/// (`docker.io/ns/name`, `docker.io/library/name`), `index.docker.io` is `docker.io`.
fn normalized(repository: &str) -> String {
    let (first, rest) = repository.split_once('/').unwrap_or(("", repository));
    let is_host = first.contains('.') || first.contains(':') || first == "localhost";
    match (first, is_host) {
        ("", _) => format!("docker.io/library/{rest}"),
        ("index.docker.io" | "registry-1.docker.io", _) => format!("docker.io/{rest}"),
        (_, true) => repository.to_string(),
        (_, false) => format!("docker.io/{repository}"),
    }
}

/// Every image with `retention:` and each of its candidate registries, as `--only` allows.
fn targets<'a>(
    resolved: &'a Resolved,
    only: Option<&str>,
) -> anyhow::Result<Vec<(&'a ResolvedImage, &'a ResolvedRegistry)>> {
    let (image, registry) = match only.map(|o| o.split_once('@').map_or((o, None), |(i, r)| (i, Some(r)))) {
        Some((i, r)) => (Some(i), r),
        None => (None, None),
    };
    if let Some(i) = image
        && !resolved.images.iter().any(|x| x.name == i)
    {
        return Err(UsageError::Message(format!(
            "--only {}: no image named {i:?} in {}",
            only.unwrap_or_default(),
            resolved.file
        ))
        .into());
    }
    Ok(resolved
        .images
        .iter()
        .filter(|i| i.retention.is_some() && image.is_none_or(|n| n == i.name))
        .flat_map(|i| i.candidates.iter().map(move |r| (i, r)))
        .filter(|(_, r)| registry.is_none_or(|id| id == r.id))
        .collect())
}

fn text(out: &[RepositoryPrune]) -> String {
    let mut s = String::new();
    for r in out {
        let _ = writeln!(s, "{} ({} on {}): {}", r.repository, r.image, r.registry, r.status);
        if let Some(why) = &r.reason {
            let _ = writeln!(s, "  {why}");
        }
        for v in &r.verdicts {
            let tags = if v.tags.is_empty() { String::new() } else { format!(" {}", v.tags.join(", ")) };
            let frees = v.frees.map(|f| format!(" (frees {})", ByteSize(f))).unwrap_or_default();
            let _ = writeln!(
                s,
                "  {:<6} {:<9} {}{tags}: {}{frees}",
                v.action.as_str(),
                v.kind.as_str(),
                v.digest,
                v.reason
            );
        }
        let deleting = r.verdicts.iter().filter(|v| v.action == Action::Delete).count();
        if let Some(a) = &r.applied {
            let _ = writeln!(s, "  deleted {} manifests ({} already gone)", a.deleted, a.already_gone);
        } else if r.status == "would-prune" {
            let _ = writeln!(s, "  would delete {deleting} manifests (a dry run: nothing deleted)");
        }
        if deleting > 0 && r.status != "failed" {
            let when = if r.gc {
                " once the registry's garbage collection runs (distribution: registry garbage-collect CONFIG; the self-hosted kit's gc.sh)"
            } else {
                ""
            };
            let _ = writeln!(s, "  frees up to {}{when}", ByteSize(r.frees));
        }
    }
    s
}

fn markdown(out: &[RepositoryPrune]) -> String {
    let mut s =
        String::from("### publish prune\n\n| repository | kept | deleted | frees | status |\n|---|---|---|---|---|\n");
    for r in out {
        let count = |a: Action| r.verdicts.iter().filter(|v| v.action == a).count();
        let status = r.reason.as_deref().map_or_else(|| r.status.to_string(), |why| format!("{}: {why}", r.status));
        let _ = writeln!(
            s,
            "| `{}` | {} | {} | {} | {} |",
            r.repository,
            count(Action::Keep),
            count(Action::Delete),
            ByteSize(r.frees),
            status.replace('|', "\\|").replace('\n', " ")
        );
    }
    s
}
