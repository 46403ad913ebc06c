//! `publish runpod render|sync`: the templates rendered from the plan, printed, or synced
//! for images already published — each image is checked to be in its registry first, so a
//! template never points at one that is not (`--dry-run`: the diff, read-only requests only).

use super::{ExitStatus, Output, PolicyArgs, UsageError, load};
use crate::credentials::Env;
use crate::plan::MeasuredUsage;
use crate::runpod::stage;

#[derive(Debug, Clone)]
pub struct RunPodArgs {
    pub policy: PolicyArgs,
    pub command: RunPodCommand,
}

#[derive(Debug, Clone)]
pub enum RunPodCommand {
    /// Print the rendered template bodies (one, with a name).
    Render { template: Option<String> },
    /// Create or update the templates for images already published.
    Sync { dry_run: bool, allow_rollback: bool },
    /// The images a template could point to, newest first.
    History { template: String },
    /// Point a template and its endpoints at an earlier image.
    Rollback { template: String, to: super::rollback::To, allow_unsigned: bool, dry_run: bool },
}

pub async fn runpod(args: RunPodArgs, env: &Env) -> anyhow::Result<ExitStatus> {
    // Neither opens the image's source: a rollback runs where no build was made.
    match &args.command {
        RunPodCommand::History { template } => return super::rollback::history(&args.policy, template, env).await,
        RunPodCommand::Rollback { template, to, allow_unsigned, dry_run } => {
            let how = (*allow_unsigned, *dry_run);
            return super::rollback::rollback(&args.policy, (template, to), how, env).await;
        }
        _ => {}
    }
    let (resolved, images) = load::policy_and_images(&args.policy.policy, env).await?;
    let (plan, rendered) = crate::plan::finish(&resolved, &images, &MeasuredUsage::new())?;
    let Some(rp) = resolved.runpod.as_ref().filter(|rp| !rp.templates.is_empty()) else {
        return Err(UsageError::Message(format!("{}: no runpod: templates to work on", resolved.file)).into());
    };
    let config = &resolved.transfer;
    let named: std::collections::HashMap<&str, &crate::image::Image> =
        resolved.images.iter().map(|i| i.name.as_str()).zip(images.iter()).collect();
    match args.command {
        RunPodCommand::Render { template } => render(&rendered, template.as_deref()),
        RunPodCommand::History { .. } | RunPodCommand::Rollback { .. } => unreachable!("answered above"),
        RunPodCommand::Sync { dry_run, allow_rollback } => {
            let git = crate::order::Git::new(args.policy.policy.parent());
            let client = runpod_client(rp, env, config)?;
            let how = Sync { dry_run, allow_rollback: allow_rollback || rp.allow_rollback, git };
            sync(&args, (env, config), (&plan, &rendered, &named), &client, how).await
        }
    }
}

type Images<'a> = std::collections::HashMap<&'a str, &'a crate::image::Image>;

/// How `runpod sync` moves templates.
struct Sync {
    dry_run: bool,
    allow_rollback: bool,
    git: crate::order::Git,
}

/// `runpod sync`: each template whose image is published (and signed, with signing in the
/// policy), and is not older than the one the template holds, created or updated.
async fn sync(
    args: &RunPodArgs,
    (env, config): (&Env, &crate::http::ClientConfig),
    (plan, rendered, named): (&crate::plan::Plan, &[stage::Rendered], &Images<'_>),
    client: &crate::runpod::Client,
    how: Sync,
) -> anyhow::Result<ExitStatus> {
    // Every body and credential is checked before the first request.
    let wanted = rendered
        .iter()
        .map(|r| stage::wanted(r, env).map(|w| (r, w)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(UsageError::of)?;
    // Templates only ever follow signed images: with signing in the policy, each image
    // is verified with the policy's key before its template moves.
    let verifier = signature_verifier(plan.signing.as_ref(), env, false).await?;
    let provenance = crate::sign::provenance::from_environment(env, args.policy.policy.parent());
    let guard = crate::guard::Guard {
        verifier: verifier.as_ref(),
        git: how.git.clone(),
        provenance: &provenance,
        allow_rollback: how.allow_rollback,
    };
    let mut results = Vec::new();
    let (mut failed, mut held) = (false, false);
    for (r, mut w) in wanted {
        // A docker source's template, rendered for the digest it was pushed with.
        let r = if r.digest_pending {
            match with_pushed_digest(r.clone(), named, env, config).await {
                Ok(now) => {
                    w.body = now.body.clone();
                    now
                }
                Err(e) => {
                    failed = true;
                    eprintln!("error: {e:#}");
                    continue;
                }
            }
        } else {
            r.clone()
        };
        let digest = r.image.manifest_digest.clone().unwrap_or_else(|| r.image.source_digest.clone());
        match movable(&r, &digest, (verifier.as_ref(), &guard), (named, client), env, config).await {
            Ok(Some(true)) => {}
            // It holds an image of the same commit: nothing to do.
            Ok(None) => continue,
            Ok(Some(false)) => {
                held = true;
                continue;
            }
            Err(e) => {
                failed = true;
                eprintln!("error: template {}: {e:#}", r.template.name);
                continue;
            }
        }
        match crate::runpod::sync(client, w, how.dry_run).await {
            Ok(s) => results.push(s),
            Err(e) => {
                failed = true;
                eprintln!("error: template {}: {e}", r.template.name);
            }
        }
    }
    match args.policy.output {
        Output::Json => super::print_out(&format!("{}\n", crate::report::json(&results))),
        Output::Text => results.iter().for_each(|s| super::print_out(&crate::report::sync_text(s))),
    }
    // An image that is there but unsigned, or older than the template's, is a partial
    // result (3): published, held back.
    Ok(match (failed, held, results.is_empty()) {
        (false, false, _) => ExitStatus::Success,
        (true, _, true) => ExitStatus::Failure,
        _ => ExitStatus::Partial,
    })
}

/// Whether template `r` may move to `digest`: the registry has it, signed when the policy
/// signs, and it is not older than what the template holds (`guard`). `Some(false)`: held
/// back, with the reason printed; `None`: it holds an image of the same commit; `Err`: it
/// could not be checked or is not published.
async fn movable(
    r: &stage::Rendered,
    digest: &crate::types::Digest,
    (verifier, guard): (Option<&crate::sign::Verifier>, &crate::guard::Guard<'_>),
    (named, rp): (&Images<'_>, &crate::runpod::Client),
    env: &Env,
    config: &crate::http::ClientConfig,
) -> anyhow::Result<Option<bool>> {
    let name = &r.template.name;
    // A template never points at an image the registry does not have.
    let client = match published(&r.target, digest, verifier, env, config).await {
        Ok((Published::Signed, client)) => client,
        Ok((Published::Unsigned, _)) => {
            eprintln!(
                "error: template {name}: {}@{digest} is pushed, not signed as the policy's signing: says: the template is not moved (publish run signs what it pushes; or publish sign)",
                r.target.repository
            );
            return Ok(Some(false));
        }
        Ok((Published::Missing, _)) => anyhow::bail!(
            "{}@{digest} is not in registry {}: publish the image first (publish run), then sync",
            r.target.repository,
            r.target.registry
        ),
        Err(e) => anyhow::bail!("could not check that its image is published: {e}"),
    };
    let Some(image) = named.get(r.image.name.as_str()) else { return Ok(Some(true)) };
    match crate::guard::template_at(guard, (rp, name), (&client, &r.target), (image, digest)).await {
        crate::order::Decision::Keep(why) => {
            eprintln!("error: template {name} {why}");
            Ok(Some(false))
        }
        crate::order::Decision::Same(why) => {
            eprintln!("template {name}: {why}");
            Ok(None)
        }
        crate::order::Decision::Move(Some(note)) | crate::order::Decision::MoveBack(note) => {
            eprintln!("note: template {name}: {note}");
            Ok(Some(true))
        }
        crate::order::Decision::Move(None) => Ok(Some(true)),
    }
}

/// `runpod render`: the bodies, offline (one, with a name).
fn render(rendered: &[stage::Rendered], template: Option<&str>) -> anyhow::Result<ExitStatus> {
    // Offline: a docker source's digest is known once it is pushed.
    for r in rendered.iter().filter(|r| r.digest_pending) {
        eprintln!(
            "note: template {}: image {} is a docker source whose manifest digest is known once it is pushed; image.digest shows {} (the digest of the manifest as read), and runpod sync renders it with the pushed one",
            r.template.name, r.image.name, r.image.source_digest
        );
    }
    let bodies: Vec<&serde_json::Map<String, serde_json::Value>> =
        rendered.iter().filter(|r| template.is_none_or(|t| r.template.name == t)).map(|r| &r.body).collect();
    match (&template, bodies.as_slice()) {
        (Some(t), []) => return Err(UsageError::Message(format!("no template named {t:?}")).into()),
        (Some(_), [one]) => super::print_out(&format!("{}\n", crate::report::json(one))),
        _ => super::print_out(&format!("{}\n", crate::report::json(&bodies))),
    }
    Ok(ExitStatus::Success)
}

/// What the target's registry has of an image.
enum Published {
    Missing,
    /// There, and signed with the policy's key (or the policy does not sign).
    Signed,
    /// There, but no signature verifies with the policy's key.
    Unsigned,
}

/// GitHub Actions' OIDC issuer: what keyless signatures from a workflow are certified for.
const GITHUB_ISSUER: &str = "https://token.actions.githubusercontent.com";

/// The verifier for the policy's signatures: the public half of its key pair, or keyless, the
/// workflow identity (this workflow's `GITHUB_WORKFLOW_REF`, else any workflow of
/// `GITHUB_REPOSITORY`; with `any_workflow`, any workflow of the repository: images another
/// workflow published, read by a rollback or a prune) certified by a trusted Fulcio and logged
/// in a trusted Rekor. `None` when the policy does not sign.
pub(super) async fn signature_verifier(
    signing: Option<&crate::plan::SigningPlan>,
    env: &Env,
    any_workflow: bool,
) -> anyhow::Result<Option<crate::sign::Verifier>> {
    let Some(s) = signing else { return Ok(None) };
    let (crate::plan::SignMethod::Key, Some(key)) = (s.method, &s.key) else {
        return keyless_verifier(s, env, any_workflow).await.map(Some);
    };
    // The public half beside the key (cosign.key → cosign.pub, as generate-key-pair writes
    // them) needs no password; else it is derived from the private key.
    let public = std::path::Path::new(key).with_extension("pub");
    if !key.starts_with("env://")
        && public.is_file()
        && let Ok(pem) = crate::http::read_file_limited(&public, 64 * 1024)
        && let Some(spki) = crate::sign::tlog::pem_der(&pem)
    {
        let key = crate::sign::keys::load_public(&public).map_err(UsageError::of)?;
        return Ok(Some(crate::sign::Verifier::Key { key, spki, trust: None }));
    }
    let var = s.password_env.as_deref().unwrap_or(crate::sign::keys::COSIGN_PASSWORD);
    let password = env
        .get(var)
        .ok_or_else(|| UsageError::Message(format!("environment variable {var} (the signing key's password) is not set: runpod sync verifies each image's signature with the policy's key")))?;
    let signer = crate::sign::keys::KeySigner::load(key, &crate::types::Secret::new(password.clone()), env)
        .map_err(UsageError::of)?;
    let pem = signer.public_pem();
    let spki = crate::sign::tlog::pem_der(pem.as_bytes())
        .ok_or_else(|| UsageError::Message(format!("{key}: no public key")))?;
    Ok(Some(crate::sign::Verifier::Key { key: signer.verification_key().map_err(UsageError::of)?, spki, trust: None }))
}

/// Keyless: who may have signed, and the roots that certify it (cosign's environment for a
/// private Sigstore; Sigstore's public-good roots through TUF for the default Fulcio).
async fn keyless_verifier(
    s: &crate::plan::SigningPlan,
    env: &Env,
    any_workflow: bool,
) -> anyhow::Result<crate::sign::Verifier> {
    use crate::sign::keyless::{Matcher, Policy};
    let var = |name: &str| env.get(name).filter(|v| !v.is_empty()).cloned();
    // Any workflow of the repository: the repository, else the one the workflow ref names.
    let repository = var("GITHUB_REPOSITORY").or_else(|| {
        var("GITHUB_WORKFLOW_REF").and_then(|w| w.splitn(3, '/').take(2).collect::<Vec<_>>().join("/").into())
    });
    let workflow = var("GITHUB_WORKFLOW_REF").filter(|_| !any_workflow);
    let identity = match (workflow, repository) {
        (Some(workflow), _) => Matcher::Exact(format!("https://github.com/{workflow}")),
        (None, Some(repository)) => {
            Matcher::regex(&format!("https://github\\.com/{}/\\.github/workflows/.+", regex::escape(&repository)))
                .map_err(UsageError::Message)?
        }
        (None, None) => {
            return Err(UsageError::Message(
                "runpod sync verifies keyless signatures against the workflow that made them: set GITHUB_REPOSITORY=OWNER/REPO (any of its workflows) or GITHUB_WORKFLOW_REF (one workflow), as GitHub Actions does".into(),
            )
            .into());
        }
    };
    let read = |name: &str| -> anyhow::Result<Option<Vec<u8>>> {
        var(name)
            .map(|path| {
                crate::http::read_file_limited(std::path::Path::new(&path), 4 * 1024 * 1024)
                    .map_err(|e| UsageError::Message(format!("{name}: {e}")).into())
            })
            .transpose()
    };
    let trust = match read("SIGSTORE_ROOT_FILE")? {
        Some(roots) => {
            let rekor = read("SIGSTORE_REKOR_PUBLIC_KEY")?;
            let ctlog = read("SIGSTORE_CT_LOG_PUBLIC_KEY_FILE")?;
            crate::sign::trust::TrustedRoot::from_pem(&roots, rekor.as_deref(), ctlog.as_deref())
                .map_err(|e| UsageError::Message(format!("SIGSTORE_ROOT_FILE: {e}")))?
        }
        None if s.fulcio_url.is_none() => {
            let cache = super::load::cache_dir(env).join("tuf");
            crate::sign::trust::TrustedRoot::public_good(Some(&cache)).await.map_err(anyhow::Error::msg)?
        }
        None => {
            return Err(UsageError::Message(format!(
                "runpod sync verifies keyless signatures from {} against roots it is given: set SIGSTORE_ROOT_FILE (and SIGSTORE_REKOR_PUBLIC_KEY, SIGSTORE_CT_LOG_PUBLIC_KEY_FILE), as for cosign",
                s.fulcio_url.as_deref().unwrap_or_default()
            ))
            .into());
        }
    };
    Ok(crate::sign::Verifier::Keyless {
        policy: Policy { identity, issuer: Matcher::Exact(GITHUB_ISSUER.into()) },
        trust,
    })
}

/// A template whose image is a docker source with layers to compress, rendered for the digest
/// it was pushed with: its target repository's images tell each layer's compressed form (as a
/// rebuild's push learns them), from which the manifest as pushed follows. When they do not,
/// the image is not pushed there yet.
async fn with_pushed_digest(
    r: stage::Rendered,
    images: &std::collections::HashMap<&str, &crate::image::Image>,
    env: &Env,
    config: &crate::http::ClientConfig,
) -> anyhow::Result<stage::Rendered> {
    let (Some(image), Some(deferred)) =
        (images.get(r.image.name.as_str()), images.get(r.image.name.as_str()).and_then(|i| i.deferred.as_ref()))
    else {
        return Ok(r);
    };
    let client = target_client(&r.target, env, config).await?;
    client.authenticate().await?;
    let learnt = crate::push::learn_from_repository(&client, deferred, &r.target.tags).await;
    let (root, _) = image.finish(&learnt).map_err(|_| {
        UsageError::Message(format!(
            "template {}: image {} is a docker source whose manifest digest is known once it is pushed, and {} holds no image with its layers: publish it first (publish run), then sync",
            r.template.name, r.image.name, r.target.repository
        ))
    })?;
    Ok(r.with_digest(&root.digest)?)
}

/// The RunPod client of the policy's `runpod:` (`RUNPOD_API_URL` overrides its URL).
pub(super) fn runpod_client(
    rp: &crate::policy::ResolvedRunPod,
    env: &Env,
    config: &crate::http::ClientConfig,
) -> anyhow::Result<crate::runpod::Client> {
    Ok(stage::client(rp, env, load::service_urls(env).runpod_api.as_deref(), config).map_err(UsageError::of)?)
}

/// A read-only client for `path` on a registry of the policy, with its push credentials.
pub(super) async fn registry_client(
    r: &crate::policy::ResolvedRegistry,
    path: &str,
    env: &Env,
    config: &crate::http::ClientConfig,
) -> anyhow::Result<crate::registry::Client> {
    Ok(registry_client_with(r, path, env, config).await?.0)
}

/// `registry_client`, and the credential it was made with.
pub(super) async fn registry_client_with(
    r: &crate::policy::ResolvedRegistry,
    path: &str,
    env: &Env,
    config: &crate::http::ClientConfig,
) -> anyhow::Result<(crate::registry::Client, Option<crate::registry::Credential>)> {
    let source = crate::credentials::CredentialSource::for_registry(r.kind, &r.host, r.credentials.as_ref());
    let endpoint = crate::plan::EndpointPlan::new(&r.host, r.insecure, r.ca_file.clone());
    let credential = resolved_credential(&source, &r.id, env, config).await?;
    let access = crate::registry::RegistryAccess {
        endpoint: endpoint.endpoint(),
        ca_file: r.ca_file.clone(),
        credential: credential.clone(),
        config: *config,
    };
    Ok((access.client(path)?.with_scope(&format!("repository:{path}:pull")), credential))
}

/// The credential a source names, from the environment (ECR Public: through AWS).
async fn resolved_credential(
    source: &crate::credentials::CredentialSource,
    registry: &str,
    env: &Env,
    config: &crate::http::ClientConfig,
) -> anyhow::Result<Option<crate::registry::Credential>> {
    let resolved = source.resolve(env).map_err(|m| {
        UsageError::Message(format!("environment variable {} is not set (registry {registry})", m.variable))
    })?;
    Ok(match resolved {
        crate::credentials::Resolved::AwsChain => {
            Some(crate::registry::ecr::Api::from_environment(env, config).await?.registry_credential().await?)
        }
        other => other.credential(),
    })
}

/// A read-only client for the target's repository, with its credentials.
async fn target_client(
    t: &crate::plan::TargetPlan,
    env: &Env,
    config: &crate::http::ClientConfig,
) -> anyhow::Result<crate::registry::Client> {
    let credential = resolved_credential(&t.credentials, &t.registry, env, config).await?;
    Ok(crate::execute::destination(t, credential, *config)
        .access
        .client(&t.path)?
        .with_scope(&format!("repository:{}:pull", t.path)))
}

/// Whether the target's repository has the manifest (a HEAD by digest, with the target's
/// credentials and pull scope: read-only), and with `verifier`, a signature of it that verifies.
async fn published(
    t: &crate::plan::TargetPlan,
    digest: &crate::types::Digest,
    verifier: Option<&crate::sign::Verifier>,
    env: &Env,
    config: &crate::http::ClientConfig,
) -> anyhow::Result<(Published, crate::registry::Client)> {
    let client = target_client(t, env, config).await?;
    client.authenticate().await?;
    if !client.has_manifest(digest).await? {
        return Ok((Published::Missing, client));
    }
    let Some(verifier) = verifier else { return Ok((Published::Signed, client)) };
    let verified =
        crate::sign::verify(&client, &t.path, digest, verifier, crate::sign::VerifyOptions::default()).await?;
    let found =
        if verified.legacy.is_empty() && verified.bundle.is_empty() { Published::Unsigned } else { Published::Signed };
    Ok((found, client))
}
