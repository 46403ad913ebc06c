//! Executes a plan's steps as they are written: for each target, the repository created
//! where the plan says, the push (with the credentials resolved from the target's named
//! source), the signature, the anonymous-pull probe; then the RunPod templates whose image
//! was published, with the credential and endpoints their steps name. What to write is the
//! plan's (`plan::steps`); what happens is the registry's answer. Returns a report; it never
//! prints.

use std::collections::HashMap;

use crate::credentials::Resolved as Credentials;
use crate::github;
use crate::guard::{self, Guard};
use crate::http::ClientConfig;
use crate::image::Image;
use crate::order::Decision;
use crate::plan::steps::{RepositoryApi, TargetStep};
use crate::plan::{ImagePlan, Plan, TargetPlan};
use crate::policy::{RegistryKind, Visibility};
use crate::push::{self, Destination};
use crate::registry::{Credential, RegistryAccess, hub};
use crate::report::{ImageOutcome, RunReport, TemplateReport, TemplateStatus};
use crate::runpod::{self, stage::Rendered};
use crate::sign::{self, PreparedSigner};

/// What execution needs besides the plan: the opened images (by image id), the credentials
/// resolved from each target's source (by target id), the signer and the rendered templates.
pub struct Inputs<'a> {
    pub images: &'a HashMap<String, Image>,
    pub credentials: HashMap<String, Credentials>,
    pub signer: Option<&'a PreparedSigner>,
    pub templates: Option<(runpod::Client, Vec<(Rendered, runpod::Wanted)>)>,
    /// Groups and warnings as GitHub Actions workflow commands.
    pub in_actions: bool,
    /// The environment, for the AWS credential chain.
    pub env: &'a crate::credentials::Env,
    /// Timeouts, retries and in-flight limits of every client (the plan's `transfer`).
    pub config: ClientConfig,
    /// Docker Hub's API (`load::ServiceUrls`).
    pub dockerhub_api: &'a str,
    /// Where the images came from, for their signatures (`sign::provenance`).
    pub provenance: sign::provenance::Annotations,
    /// The policy's signatures, to believe what a held image's signature says of its commit.
    pub verifier: Option<&'a sign::Verifier>,
    /// The checkout whose history orders two commits.
    pub git: crate::order::Git,
    /// Move tags and templates even to an older image (`--allow-rollback`).
    pub allow_rollback: bool,
    /// What this run's provenance is made from.
    pub run: crate::attest::write::RunFacts,
}

impl Inputs<'_> {
    fn guard(&self) -> Guard<'_> {
        Guard {
            verifier: self.verifier,
            git: self.git.clone(),
            provenance: &self.provenance,
            allow_rollback: self.allow_rollback,
        }
    }
}

pub async fn execute(plan: &Plan, mut inputs: Inputs<'_>) -> RunReport {
    let format = plan.signing.as_ref().map(|s| s.format).unwrap_or_default();
    let mut outcomes = Vec::new();
    for img in &plan.images {
        let Some(image) = inputs.images.get(&img.id) else {
            // Never silently: an image of the plan that was not opened fails every target.
            let targets = img.targets.iter().map(|t| not_opened(img, t)).collect();
            let digest = img.manifest_digest.clone().unwrap_or_else(|| img.source_digest.clone());
            outcomes.push(ImageOutcome { name: img.name.clone(), digest, targets });
            continue;
        };
        let mut targets = Vec::new();
        for t in &img.targets {
            let credential = inputs.credentials.get(&t.id).cloned().unwrap_or(Credentials::Anonymous);
            let _group = github::Group::start(inputs.in_actions, &format!("Pushing {} to {}", img.name, t.repository));
            targets.push(target(img, image, t, credential, &inputs, format).await);
        }
        // The digest pushed (for a docker source, known only now), else the planned one.
        let pushed = targets.iter().find(|t| t.status != push::Status::Failed).map(|t| t.digest.clone());
        let digest = pushed.or_else(|| img.manifest_digest.clone()).unwrap_or_else(|| img.source_digest.clone());
        outcomes.push(ImageOutcome { name: img.name.clone(), digest, targets });
    }
    let report = RunReport::new(outcomes);
    match inputs.templates.take() {
        Some((client, templates)) => {
            let results = sync_templates(&client, templates, &report, &inputs).await;
            report.with_runpod(results)
        }
        None => report,
    }
}

/// The outcome of a target whose image was not opened.
fn not_opened(img: &ImagePlan, t: &TargetPlan) -> push::Outcome {
    let digest = img.manifest_digest.clone().unwrap_or_else(|| img.source_digest.clone());
    let mut o = push::Outcome::nothing_written(t.registry.clone(), t.repository.clone(), digest);
    o.error = Some(format!("image {}: its source {} was not opened: nothing pushed", img.id, img.open.transport));
    o
}

/// The destination a target describes, with its credential.
pub fn destination(t: &TargetPlan, credential: Option<Credential>, config: ClientConfig) -> Destination {
    Destination {
        registry_id: t.registry.clone(),
        access: RegistryAccess {
            endpoint: t.endpoint.endpoint(),
            ca_file: t.endpoint.ca_file.clone(),
            credential,
            config,
        },
        path: t.path.clone(),
        tags: t.tags.clone(),
        upload: t.upload.mode(),
        mount_from: t.mount_from.clone(),
    }
}

async fn target(
    img: &ImagePlan,
    image: &Image,
    t: &TargetPlan,
    credential: Credentials,
    inputs: &Inputs<'_>,
    format: sign::Format,
) -> push::Outcome {
    let (signer, in_actions) = (inputs.signer, inputs.in_actions);
    let mut dest = destination(t, credential.credential(), inputs.config);
    let step = |api| t.steps.iter().any(|s| matches!(s, TargetStep::CreateRepository { api: a, .. } if *a == api));
    if matches!(credential, Credentials::AwsChain) {
        match ecr_prepare(&dest.path, step(RepositoryApi::EcrPublic), inputs.env, &inputs.config).await {
            Ok(cred) => dest.access.credential = Some(cred),
            Err(err) => return push::failed(image, &dest, err.to_string()),
        }
    }
    // Docker Hub creates a pushed-to repository with the account's default visibility
    // (public on the free plan): create it with the image's visibility first.
    if step(RepositoryApi::DockerHub)
        && let Some(cred) = &dest.access.credential
    {
        let api = inputs.dockerhub_api;
        let (namespace, name) = t.path.split_once('/').unwrap_or(("library", t.path.as_str()));
        let private = img.visibility == Visibility::Private;
        match hub::ensure_repository(api, namespace, name, private, cred, &inputs.config).await {
            Ok(hub::Ensured::Created) => {
                tracing::info!("created {namespace}/{name} on Docker Hub ({:?})", img.visibility)
            }
            Ok(hub::Ensured::Exists) => {}
            Err(e) => return push::failed(image, &dest, e.to_string()),
        }
    }
    tracing::info!(image = %img.name, registry = %t.registry, "pushing to {}", t.repository);
    // Tags that hold a newer image stay where they are; the manifest still goes in.
    let moving_tags = match guard::tags(&inputs.guard(), image, &mut dest).await {
        Ok(held) => held,
        Err(e) => return push::failed(image, &dest, e.to_string()),
    };
    let mut outcome = push::push(image, &dest).await;
    outcome.moving_tags = moving_tags;
    let signs = t.steps.contains(&TargetStep::Sign);
    if let (push::Status::Pushed, Some(signer), true) = (outcome.status, signer, signs) {
        sign_pushed(&dest, &mut outcome, img, inputs, (signer, format)).await;
    }
    // Visibility is checked, not hoped for: every pushed image is pulled anonymously.
    if outcome.status != push::Status::Failed && t.steps.contains(&TargetStep::ProbeAnonymousPull) {
        outcome.anonymous_pull = push::probe_anonymous(&dest).await;
        match (img.visibility, outcome.anonymous_pull) {
            (Visibility::Public, Some(false)) => {
                let message = not_public_message(&img.name, t);
                tracing::warn!("{message}");
                if in_actions {
                    github::warning(&message);
                }
            }
            (Visibility::Private, Some(true)) => {
                outcome.status = push::Status::PushedExposed;
                outcome.error = Some(format!(
                    "image {} is private in the policy, but anyone can pull {} from {}: make the repository private in the registry's settings (Docker Hub: Settings → Visibility), or delete it, then run again",
                    img.name, t.repository, t.registry
                ));
            }
            _ => {}
        }
    }
    outcome
}

/// Signs the manifest just pushed to `dest` (`outcome`: its digest, media type and size), then
/// writes the attestations the plan lists for it, with one client; what happened goes in
/// `outcome` (unsigned, or signed but not attested, is exit 3).
async fn sign_pushed(
    dest: &Destination,
    outcome: &mut push::Outcome,
    img: &ImagePlan,
    inputs: &Inputs<'_>,
    (prepared, format): (&PreparedSigner, sign::Format),
) {
    let ready = async {
        let signer = prepared.signer().await?;
        let client = dest.access.client(&dest.path)?;
        client.authenticate().await?;
        Ok::<_, sign::SignError>((signer, client))
    };
    let (media_type, size) = outcome.manifest.clone().unwrap_or_default();
    let subject = sign::Subject {
        repository: format!("{}/{}", dest.access.endpoint.host, dest.path),
        digest: outcome.digest.clone(),
        media_type,
        size,
        annotations: inputs.provenance.clone(),
    };
    let signed = match ready.await {
        Ok((signer, client)) => {
            sign::sign(&client, &dest.path, &subject, signer, format).await.map(|s| (s, signer, client))
        }
        Err(e) => Err(e),
    };
    let (signer, client) = match signed {
        Ok((signed, signer, client)) => {
            outcome.signed = Some(signed);
            (signer, client)
        }
        Err(e) => {
            outcome.status = push::Status::PushedUnsigned;
            outcome.error = Some(format!("published but not signed: {e}"));
            return;
        }
    };
    if !img.attestations.iter().any(crate::attest::Planned::by_run) {
        return;
    }
    match crate::attest::write::write(&client, &dest.path, &subject, (signer, format), img, &inputs.run).await {
        Ok(written) => outcome.attestations = written,
        Err((written, e)) => {
            outcome.attestations = written;
            outcome.status = push::Status::PushedUnattested;
            outcome.error = Some(format!("published and signed, but its attestations were not all written: {e}"));
        }
    }
}

/// ECR Public: a registry token from the AWS credentials, and the repository created when it
/// does not exist yet (`path` is `ALIAS/REPOSITORY`).
async fn ecr_prepare(
    path: &str,
    create: bool,
    env: &crate::credentials::Env,
    config: &ClientConfig,
) -> Result<Credential, crate::registry::ecr::EcrError> {
    let api = crate::registry::ecr::Api::from_environment(env, config).await?;
    let repository = path.split_once('/').map_or(path, |(_, r)| r);
    if create && api.ensure_repository(repository).await? {
        tracing::info!("created the ECR Public repository {repository}");
    }
    api.registry_credential().await
}

/// The warning for a public image that cannot be pulled anonymously, with the fix.
fn not_public_message(image: &str, t: &TargetPlan) -> String {
    let mut m = format!(
        "image {image} is public in the policy, but {} cannot be pulled without credentials: RunPod, which pulls public images without credentials, cannot pull it.",
        t.repository
    );
    if t.kind == RegistryKind::Ghcr {
        let (owner, package) = t.path.split_once('/').unwrap_or((t.path.as_str(), image));
        let package = package.replace('/', "%2F");
        m.push_str(&format!(
            " New GHCR packages start private: make it public in the package's settings (Danger Zone → Change visibility): https://github.com/orgs/{owner}/packages/container/{package}/settings (for a user: https://github.com/users/{owner}/packages/container/{package}/settings)."
        ));
    } else {
        m.push_str(" Allow anonymous pulls on the registry, or set visibility: private so that RunPod gets a credential (the registry's pull_credentials).");
    }
    m
}

/// Syncs each template whose image reached the registry it pins; the others are skipped: a
/// template never points at an image that failed to publish.
async fn sync_templates(
    client: &runpod::Client,
    templates: Vec<(Rendered, runpod::Wanted)>,
    report: &RunReport,
    inputs: &Inputs<'_>,
) -> Vec<TemplateReport> {
    let mut out = Vec::new();
    for (r, mut wanted) in templates {
        let pushed = report.images.iter().filter(|i| i.name == r.image.name).flat_map(|i| &i.targets).find(|t| {
            t.registry == r.target.registry && matches!(t.status, push::Status::Pushed | push::Status::PushedExposed)
        });
        let base = TemplateReport {
            name: r.template.name.clone(),
            image: r.image.name.clone(),
            status: TemplateStatus::Skipped,
            sync: None,
            reason: None,
        };
        let Some(pushed) = pushed else {
            let status = report
                .images
                .iter()
                .filter(|i| i.name == r.image.name)
                .flat_map(|i| &i.targets)
                .find(|t| t.registry == r.target.registry)
                .map(|t| t.status);
            let what = match status {
                Some(push::Status::PushedUnsigned) => "was pushed to {} but not signed",
                Some(push::Status::PushedUnattested) => {
                    "was pushed to {} and signed, but its attestations were not written"
                }
                _ => "was not published to {}",
            };
            out.push(TemplateReport {
                reason: Some(format!(
                    "image {} {}, so the template keeps its image",
                    r.image.name,
                    what.replace("{}", &r.target.registry)
                )),
                ..base
            });
            continue;
        };
        // RunPod pulls without credentials here: an image nobody can pull anonymously would
        // break every pod and worker the template starts.
        if wanted.credential.is_none() && pushed.anonymous_pull == Some(false) {
            out.push(TemplateReport {
                reason: Some(format!(
                    "{} The template keeps its image until RunPod can pull this one.",
                    not_public_message(&r.image.name, &r.target)
                )),
                ..base
            });
            continue;
        }
        // A body that waited for the image's digest is rendered with the one pushed.
        if r.digest_pending {
            match r.with_digest(&pushed.digest) {
                Ok(now) => wanted.body = now.body,
                Err(e) => {
                    out.push(TemplateReport { status: TemplateStatus::Failed, reason: Some(e.to_string()), ..base });
                    continue;
                }
            }
        }
        // Never back to an older image by accident (a re-run of an older workflow).
        let note = match template_guard(&r, &pushed.digest, inputs, client).await {
            Decision::Keep(why) => {
                let reason = Some(format!("template {} {why}", r.template.name));
                out.push(TemplateReport { status: TemplateStatus::Kept, reason, ..base });
                continue;
            }
            // The same commit's image stays; the rest of the template and its endpoints are
            // still brought to what the policy says (a re-run after a failed endpoint update).
            Decision::Same(why) => {
                if let Ok(Some(held)) = client.template_image(&r.template.name).await {
                    wanted.body.insert("image".into(), serde_json::Value::String(held));
                }
                let (status, sync, reason) = match runpod::sync(client, wanted, false).await {
                    Ok(sync) => (TemplateStatus::Current, Some(sync), Some(why)),
                    Err(e) => (TemplateStatus::Failed, None, Some(e.to_string())),
                };
                out.push(TemplateReport { status, sync, reason, ..base });
                continue;
            }
            Decision::Move(note) => note,
            Decision::MoveBack(note) => Some(note),
        };
        match runpod::sync(client, wanted, false).await {
            Ok(sync) => {
                out.push(TemplateReport { status: TemplateStatus::Synced, sync: Some(sync), reason: note, ..base })
            }
            Err(e) => out.push(TemplateReport { status: TemplateStatus::Failed, reason: Some(e.to_string()), ..base }),
        }
    }
    out
}

/// Whether template `r` may move from the image it holds to `digest`, this run's (`guard`).
async fn template_guard(
    r: &Rendered,
    digest: &crate::types::Digest,
    inputs: &Inputs<'_>,
    rp: &runpod::Client,
) -> Decision {
    let Some(image) = inputs.images.get(&r.image.id) else { return Decision::Move(None) };
    let credential = inputs.credentials.get(&r.target.id).and_then(Credentials::credential);
    let dest = destination(&r.target, credential, inputs.config);
    let Ok(client) = dest.access.client(&r.target.path) else { return Decision::Move(None) };
    if let Err(e) = client.authenticate().await {
        return Decision::Move(Some(format!("its image could not be compared ({e}): moved")));
    }
    guard::template_at(&inputs.guard(), (rp, &r.template.name), (&client, &r.target), (image, digest)).await
}
