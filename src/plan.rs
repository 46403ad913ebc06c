//! The plan: one serialisable value saying, per image, what it is (platforms, sizes, blobs)
//! and where it goes (registry, repository, tags). `build` is pure; `open_sources` reads the
//! images from disk. Printed by `publish plan`, executed by `publish run`.

use serde::Serialize;

use crate::image::Image;
use crate::policy::{Diagnostic, Diagnostics, RegistryKind, Resolved, ResolvedImage, ResolvedRegistry, Visibility};
use crate::select::{self, Candidate, ImageFacts, Usage, Verdict, VerdictKind, catalog};
use crate::types::{ByteSize, Digest, Platform};

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub policy: String,
    pub images: Vec<ImagePlan>,
    /// How pushed images are signed, when they are.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signing: Option<SigningPlan>,
    /// RunPod templates that follow the images, once published (and signed).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub templates: Vec<TemplatePlan>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SigningPlan {
    /// `key` or `keyless`.
    pub method: &'static str,
    /// `legacy`, `bundle` or `both`.
    pub format: crate::policy::model::SignFormat,
}

#[derive(Debug, Clone, Serialize)]
pub struct TemplatePlan {
    pub name: String,
    pub image: String,
    pub endpoints: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ImagePlan {
    pub name: String,
    pub source: String,
    pub manifest_digest: Digest,
    pub media_type: String,
    pub platforms: Vec<Platform>,
    pub visibility: Visibility,
    pub total_size: ByteSize,
    pub largest_layer: ByteSize,
    pub blobs: Vec<BlobPlan>,
    /// Every candidate registry's verdict, with reasons, cost and free-tier margins.
    pub candidates: Vec<Verdict>,
    /// Ids of the registries the image goes to.
    pub selected: Vec<String>,
    pub targets: Vec<TargetPlan>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BlobPlan {
    pub digest: Digest,
    pub size: ByteSize,
    pub media_type: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct TargetPlan {
    pub registry: String,
    pub kind: RegistryKind,
    /// `host/namespace/name`.
    pub repository: String,
    pub tags: Vec<String>,
    /// Why this registry was chosen.
    pub reason: String,
    #[serde(skip)]
    pub endpoint: ResolvedRegistry,
}

impl TargetPlan {
    /// The repository path inside the registry (without the host).
    pub fn path(&self) -> &str {
        self.repository.split_once('/').map_or(self.repository.as_str(), |(_, p)| p)
    }
}

/// A source that could not be opened, as a diagnostic at image `i`'s `source` field.
pub fn source_diagnostic(resolved: &Resolved, i: usize, message: String) -> Diagnostic {
    let img = &resolved.images[i];
    Diagnostic {
        file: resolved.file.clone(),
        line: img.source.line.max(1),
        col: img.source.col.max(1),
        field: format!("images[{i}].source"),
        message,
        hint: Some(hint_for_source(&img.source)),
    }
}

fn hint_for_source(source: &str) -> String {
    if source.starts_with("docker://") {
        "the registry must serve the image: check the reference and its credentials (Docker's config.json, or the policy's registry for that host)".into()
    } else if source.starts_with("oci:") || source.starts_with("oci-archive:") || source.starts_with("docker-archive:")
    {
        "paths are relative to the policy file; `skopeo copy docker-daemon:IMG oci:DIR` or `docker buildx build --output type=oci,dest=FILE` make one".into()
    } else {
        "write oci:DIR[:REF], oci-archive:FILE[:REF], docker-archive:FILE[:REF], docker-daemon:NAME[:TAG] or docker://HOST/REPO[:TAG]".into()
    }
}

/// Usage measured on registries, by registry id (the rest comes from the policy or is unknown).
pub type MeasuredUsage = std::collections::HashMap<String, Usage>;

/// Builds the plan from the resolved policy, the opened images (same order) and any measured
/// usage: checks platforms, selects registries. Pure.
pub fn build(resolved: &Resolved, images: &[Image], measured: &MeasuredUsage) -> Result<Plan, Diagnostics> {
    let mut errors = Vec::new();
    let mut plans = Vec::new();
    for (spec, image) in resolved.images.iter().zip(images) {
        let i = spec.index;
        let provided = image.platforms();
        let missing: Vec<String> = spec
            .platforms
            .iter()
            .filter(|w| !provided.iter().any(|p| p.satisfies(w)))
            .map(ToString::to_string)
            .collect();
        if !missing.is_empty() {
            let have = if provided.is_empty() { "no platform".to_string() } else { join(&provided) };
            errors.push(Diagnostic {
                file: resolved.file.clone(),
                line: spec.platforms_at.0.max(1),
                col: spec.platforms_at.1.max(1),
                field: format!("images[{i}].platforms"),
                message: format!("image {:?} provides {have} but {} is required", spec.name, missing.join(", ")),
                hint: Some("build for the required platform (docker buildx build --platform linux/amd64), or change platforms:".into()),
            });
            continue;
        }
        match image_plan(resolved, spec, image, provided, measured) {
            Ok(plan) => plans.push(plan),
            Err(mut e) => errors.append(&mut e),
        }
    }
    if !errors.is_empty() {
        return Err(Diagnostics(errors));
    }
    let signing = resolved
        .signing
        .as_ref()
        .map(|s| SigningPlan { method: if s.key.is_some() { "key" } else { "keyless" }, format: s.format });
    let templates = resolved
        .runpod
        .iter()
        .flat_map(|rp| &rp.templates)
        .map(|t| TemplatePlan { name: t.name.clone(), image: t.image.clone(), endpoints: t.endpoints.clone() })
        .collect();
    Ok(Plan { policy: resolved.file.clone(), images: plans, signing, templates })
}

fn usage_for(r: &ResolvedRegistry, measured: &MeasuredUsage) -> Usage {
    if let Some(m) = measured.get(&r.id) {
        // What the policy states wins over a measurement of the same thing it cannot see.
        return Usage {
            storage: m.storage.or(r.used.storage),
            transfer: m.transfer.or(r.used.transfer),
            private_repositories: m.private_repositories.or(r.used.private_repositories),
            source: m.source,
        };
    }
    let given = r.used.storage.is_some() || r.used.transfer.is_some() || r.used.private_repositories.is_some();
    Usage {
        storage: r.used.storage,
        transfer: r.used.transfer,
        private_repositories: r.used.private_repositories,
        source: if given { "policy" } else { "unknown" },
    }
}

fn image_plan(
    resolved: &Resolved,
    spec: &ResolvedImage,
    image: &Image,
    platforms: Vec<Platform>,
    measured: &MeasuredUsage,
) -> Result<ImagePlan, Vec<Diagnostic>> {
    let mut errors = Vec::new();
    let mut candidates = Vec::new();
    for r in &spec.candidates {
        match catalog::tier(r.kind, r.tier.as_ref().map(|t| t.value.as_str())) {
            Some(tier) => candidates.push(Candidate {
                id: &r.id,
                tier,
                overrides: &r.limits,
                billing: r.billing,
                region: r.region.as_deref(),
                usage: usage_for(r, measured),
            }),
            None => {
                let at = r.tier.as_ref().map_or((1, 1), |t| (t.line, t.col));
                let names: Vec<&str> = catalog::tiers(r.kind).map(|t| t.name).collect();
                errors.push(Diagnostic {
                    file: resolved.file.clone(),
                    line: at.0.max(1),
                    col: at.1.max(1),
                    field: format!("registries.{}.tier", r.id),
                    message: format!(
                        "{} has no tier {:?}",
                        r.kind.as_str(),
                        r.tier.as_ref().map(|t| t.value.as_str()).unwrap_or("")
                    ),
                    hint: Some(format!("tiers of {}: {}", r.kind.as_str(), names.join(", "))),
                });
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let facts = ImageFacts {
        total: image.total_size(),
        largest_layer: image.largest_layer(),
        visibility: spec.visibility,
        pulls_per_month: spec.pulls_per_month,
        region: spec.region.clone(),
    };
    let verdicts = select::select(&facts, &candidates, resolved.upload_rate, spec.publish_to);
    let selected: Vec<String> =
        verdicts.iter().filter(|v| v.verdict == VerdictKind::Selected).map(|v| v.registry.clone()).collect();
    if selected.is_empty() {
        let mut message = format!(
            "no candidate registry fits image {:?} ({}, largest layer {}, {}):",
            spec.name,
            facts.total,
            facts.largest_layer,
            visibility_word(spec.visibility)
        );
        for v in &verdicts {
            message.push_str(&format!(
                "\n    {} ({}): {}",
                v.registry,
                v.label,
                v.reasons.iter().filter(|r| !r.starts_with("anonymous pulls")).cloned().collect::<Vec<_>>().join("; ")
            ));
            for fix in &v.fixes {
                message.push_str(&format!("\n      to fit: {fix}"));
            }
        }
        return Err(vec![Diagnostic {
            file: resolved.file.clone(),
            line: spec.at.0.max(1),
            col: spec.at.1.max(1),
            field: format!("images[{}]", spec.index),
            message,
            hint: Some("add a candidate under registries:, or override facts with limits:, tier: or used:".into()),
        }]);
    }
    let targets = verdicts
        .iter()
        .filter(|v| v.verdict == VerdictKind::Selected)
        .filter_map(|v| spec.candidates.iter().find(|r| r.id == v.registry).map(|r| (v, r)))
        .map(|(v, r)| TargetPlan {
            registry: r.id.clone(),
            kind: r.kind,
            repository: format!("{}/{}", r.host, r.repository_for(&spec.name)),
            tags: spec.tags.clone(),
            reason: v.reasons.first().cloned().unwrap_or_default(),
            endpoint: r.clone(),
        })
        .collect();
    Ok(ImagePlan {
        name: spec.name.clone(),
        source: spec.source.value.clone(),
        manifest_digest: image.root.digest.clone(),
        media_type: image.root.media_type.clone(),
        platforms,
        visibility: spec.visibility,
        total_size: facts.total,
        largest_layer: facts.largest_layer,
        blobs: image
            .blobs()
            .into_iter()
            .map(|d| BlobPlan { digest: d.digest.clone(), size: ByteSize(d.size), media_type: d.media_type.clone() })
            .collect(),
        candidates: verdicts,
        selected,
        targets,
    })
}

fn visibility_word(v: Visibility) -> &'static str {
    match v {
        Visibility::Public => "public",
        Visibility::Private => "private",
    }
}

fn join(ps: &[Platform]) -> String {
    ps.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}
