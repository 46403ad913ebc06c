//! Every write a run makes, as typed steps of the plan, derived from the plan's own facts
//! (registry kind, visibility, tags, signing, templates): `publish plan` shows them, `execute`
//! runs exactly those, and `run --plan` refuses a saved plan whose steps are not what this
//! publish would derive from it.

use serde::{Deserialize, Serialize};

use super::{ImagePlan, Plan, TemplatePlan};
use crate::policy::{RegistryKind, Visibility};

/// A write on a target's registry (or its API), in the order a run makes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "kebab-case")]
pub enum TargetStep {
    /// Create the repository through the registry's API, with the image's visibility, when
    /// it is missing (Docker Hub: with the account's credentials; ECR Public: AWS's).
    CreateRepository { api: RepositoryApi, private: bool },
    /// Upload the blobs the repository lacks, then the manifests, then each tag.
    Push { tags: Vec<String> },
    /// Sign the pushed manifest (and log it in Rekor where the signing says so).
    Sign,
    /// Sign and write these attestations of the pushed manifest (provenance, SBOMs), in the
    /// signing's formats.
    Attest { predicate_types: Vec<String> },
    /// Read the pushed manifest without credentials, as RunPod does: a check, no write, but a
    /// request the registry counts.
    ProbeAnonymousPull,
}

/// The API that creates a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RepositoryApi {
    DockerHub,
    EcrPublic,
}

/// A write on RunPod for one template, in the order a run makes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "kebab-case")]
pub enum TemplateStep {
    /// Create (or reuse) the registry credential RunPod pulls the private image with, and
    /// delete the earlier ones of that repository no template or endpoint refers to.
    PullCredential { registry: String },
    /// Create the template, or update the fields that differ.
    MoveTemplate,
    /// Point a serverless endpoint at the template's image.
    MoveEndpoint { id: String },
}

impl TargetStep {
    /// One line for the plan's text.
    pub fn describe(&self) -> String {
        match self {
            TargetStep::CreateRepository { api, private } => format!(
                "create the {}repository through the {} API if it is missing",
                if *private { "private " } else { "" },
                match api {
                    RepositoryApi::DockerHub => "Docker Hub",
                    RepositoryApi::EcrPublic => "ECR Public",
                }
            ),
            TargetStep::Push { tags } => format!("push blobs and manifests, then tag {}", tags.join(", ")),
            TargetStep::Sign => "sign the manifest".into(),
            TargetStep::Attest { predicate_types } => {
                format!("sign and attach attestations {}", predicate_types.join(", "))
            }
            TargetStep::ProbeAnonymousPull => "check that it can (or cannot) be pulled anonymously".into(),
        }
    }
}

impl TemplateStep {
    /// One line for the plan's text.
    pub fn describe(&self) -> String {
        match self {
            TemplateStep::PullCredential { registry } => {
                format!("create or reuse RunPod's credential for {registry}, delete the ones it replaces")
            }
            TemplateStep::MoveTemplate => "create the template or update what differs".into(),
            TemplateStep::MoveEndpoint { id } => format!("point endpoint {id} at the image"),
        }
    }
}

/// The steps of a target on a registry of `kind`, for an image `private` or not.
pub fn for_target(kind: RegistryKind, private: bool, tags: &[String], signed: bool) -> Vec<TargetStep> {
    for_target_attesting(kind, private, tags, signed, &[])
}

/// As `for_target`, with the attestations the run signs (`attest`'s predicate types).
pub fn for_target_attesting(
    kind: RegistryKind,
    private: bool,
    tags: &[String],
    signed: bool,
    attest: &[String],
) -> Vec<TargetStep> {
    let mut steps = Vec::new();
    match kind {
        RegistryKind::Dockerhub => steps.push(TargetStep::CreateRepository { api: RepositoryApi::DockerHub, private }),
        RegistryKind::EcrPublic => steps.push(TargetStep::CreateRepository { api: RepositoryApi::EcrPublic, private }),
        _ => {}
    }
    steps.push(TargetStep::Push { tags: tags.to_vec() });
    if signed {
        steps.push(TargetStep::Sign);
        if !attest.is_empty() {
            steps.push(TargetStep::Attest { predicate_types: attest.to_vec() });
        }
    }
    steps.push(TargetStep::ProbeAnonymousPull);
    steps
}

/// The steps of a template: its image's registry credential when the image is private, the
/// template, its endpoints.
pub fn for_template(t: &TemplatePlan, image: Option<&ImagePlan>) -> Vec<TemplateStep> {
    let mut steps = Vec::new();
    let target = image.and_then(|i| i.targets.iter().find(|x| Some(&x.id) == t.target.as_ref()));
    if let (Some(i), Some(target)) = (image, target)
        && i.visibility == Visibility::Private
    {
        steps.push(TemplateStep::PullCredential { registry: target.registry.clone() });
    }
    steps.push(TemplateStep::MoveTemplate);
    steps.extend(t.endpoints.iter().map(|id| TemplateStep::MoveEndpoint { id: id.clone() }));
    steps
}

/// Sets every target's and template's steps from the plan's facts.
pub fn fill(plan: &mut Plan) {
    let signed = plan.signing.is_some();
    for img in &mut plan.images {
        let private = img.visibility == Visibility::Private;
        let attest: Vec<String> =
            img.attestations.iter().filter(|a| a.by_run()).map(|a| a.predicate_type.clone()).collect();
        let steps: Vec<Vec<TargetStep>> =
            img.targets.iter().map(|t| for_target_attesting(t.kind, private, &t.tags, signed, &attest)).collect();
        for (t, s) in img.targets.iter_mut().zip(steps) {
            t.steps = s;
        }
    }
    let steps: Vec<Vec<TemplateStep>> =
        plan.templates.iter().map(|t| for_template(t, plan.images.iter().find(|i| i.id == t.image))).collect();
    for (t, s) in plan.templates.iter_mut().zip(steps) {
        t.steps = s;
    }
}

/// A saved plan's steps are what this publish derives from its facts; else the first that is
/// not, for the error.
pub fn check(plan: &Plan) -> Result<(), String> {
    let mut expected = plan.clone();
    fill(&mut expected);
    for (img, want) in plan.images.iter().zip(&expected.images) {
        for (t, w) in img.targets.iter().zip(&want.targets) {
            if t.steps != w.steps {
                return Err(format!("target {}: the plan's steps are not what its facts give", t.id));
            }
        }
    }
    for (t, w) in plan.templates.iter().zip(&expected.templates) {
        if t.steps != w.steps {
            return Err(format!("template {}: the plan's steps are not what its facts give", t.name));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_follow_the_registry_kind_signing_and_visibility() {
        let kinds = [
            (RegistryKind::Registry, None),
            (RegistryKind::Dockerhub, Some(RepositoryApi::DockerHub)),
            (RegistryKind::EcrPublic, Some(RepositoryApi::EcrPublic)),
        ];
        for (kind, api) in kinds {
            for signed in [false, true] {
                let steps = steps_of(kind, signed);
                let create =
                    steps.iter().any(|s| matches!(s, TargetStep::CreateRepository { api: a, .. } if Some(*a) == api));
                assert_eq!(create, api.is_some(), "{kind:?}: {steps:?}");
                assert_eq!(steps.contains(&TargetStep::Sign), signed, "{steps:?}");
                assert_eq!(steps.last(), Some(&TargetStep::ProbeAnonymousPull));
            }
        }
    }

    fn steps_of(kind: RegistryKind, signed: bool) -> Vec<TargetStep> {
        for_target(kind, true, &["v1".to_string()], signed)
    }
}
