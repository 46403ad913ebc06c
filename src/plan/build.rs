//! Building the plan from the resolved policy, the opened images and any measured usage:
//! platform checks, registry selection, and every target's endpoint, upload mode, mounts and
//! credential source. Pure: no network, no environment, no clock.

use super::*;
use crate::image::{Image, Transport};
use crate::policy::{Diagnostic, Diagnostics, Resolved, ResolvedImage, ResolvedRegistry};
use crate::select::{self, Candidate, ImageFacts, Usage, UsageSource, VerdictKind, catalog};

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

/// Builds the plan from the resolved policy, the opened images (by image index in the
/// policy) and any measured usage: checks platforms, selects registries. Pure.
pub fn build(resolved: &Resolved, images: &[Image], measured: &MeasuredUsage) -> Result<Plan, Diagnostics> {
    let mut errors = Vec::new();
    // Image names are unique (the policy checks it): they are the plan's image ids.
    let mut plans: Vec<ImagePlan> = Vec::new();
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
    let signing = resolved.signing.as_ref().map(signing_plan);
    let templates = resolved
        .runpod
        .iter()
        .flat_map(|rp| &rp.templates)
        .map(|t| TemplatePlan {
            name: t.name.clone(),
            image: t.image.clone(),
            target: plans.iter().find(|i| i.id == t.image).and_then(|i| i.targets.first()).map(|t| t.id.clone()),
            body_digest: None,
            endpoints: t.endpoints.clone(),
            steps: Vec::new(),
        })
        .collect();
    let mut plan = Plan {
        version: PLAN_VERSION,
        policy: resolved.file.clone(),
        transfer: resolved.transfer,
        images: plans,
        signing,
        templates,
    };
    super::steps::fill(&mut plan);
    Ok(plan)
}

/// How to open an image's source again: its transport with the path resolved, and, for a
/// `docker://` source, how to reach that registry (as the policy's registry on that host, if
/// any; else over HTTPS with Docker's credentials).
pub fn source_plan(resolved: &Resolved, spec: &ResolvedImage) -> SourcePlan {
    let transport =
        Transport::parse(&spec.source, &spec.base_dir).map_or_else(|_| spec.source.value.clone(), |t| t.to_string());
    let registry = match Transport::parse(&spec.source, &spec.base_dir) {
        Ok(Transport::Registry { reference }) => {
            let host = crate::reference::split_host(&reference).0;
            let known = resolved.images.iter().flat_map(|i| &i.candidates).find(|r| r.host == host);
            Some(SourceRegistry {
                endpoint: EndpointPlan::new(
                    &host,
                    known.is_some_and(|r| r.insecure),
                    known.and_then(|r| r.ca_file.clone()),
                ),
                credentials: match known {
                    Some(r) => CredentialSource::for_registry(r.kind, &r.host, r.credentials.as_ref()),
                    None => CredentialSource::for_registry(RegistryKind::Registry, &host, None),
                },
            })
        }
        _ => None,
    };
    SourcePlan { transport, compression: spec.compression, compression_level: spec.compression_level, registry }
}

fn usage_for(r: &ResolvedRegistry, measured: &MeasuredUsage) -> Usage {
    if let Some(m) = measured.get(&r.id) {
        // What the policy states wins over a measurement of the same thing it cannot see.
        return Usage {
            storage: m.storage.or(r.used.storage),
            transfer: m.transfer.or(r.used.transfer),
            private_repositories: m.private_repositories.or(r.used.private_repositories),
            source: m.source,
            anonymous_pulls: m.anonymous_pulls,
            storage_after_retention: m.storage_after_retention,
            counts_retention: m.counts_retention,
        };
    }
    let given = r.used.storage.is_some() || r.used.transfer.is_some() || r.used.private_repositories.is_some();
    Usage {
        storage: r.used.storage,
        transfer: r.used.transfer,
        private_repositories: r.used.private_repositories,
        source: if given { UsageSource::Policy } else { UsageSource::Unknown },
        anonymous_pulls: None,
        ..Default::default()
    }
}

fn image_plan(
    resolved: &Resolved,
    spec: &ResolvedImage,
    image: &Image,
    platforms: Vec<Platform>,
    measured: &MeasuredUsage,
) -> Result<ImagePlan, Vec<Diagnostic>> {
    let candidates = candidates(resolved, spec, measured)?;
    let facts = ImageFacts {
        total: image.total_size(),
        largest_layer: image.largest_layer(),
        visibility: spec.visibility,
        pulls_per_month: Some(spec.pulls_per_month.unwrap_or(select::DEFAULT_PULLS_PER_MONTH)),
        region: spec.region.clone(),
        pulls_assumed: spec.pulls_per_month.is_none(),
        sizes_bound: image.deferred.is_some(),
    };
    let rate = resolved.upload_rate.unwrap_or(select::DEFAULT_UPLOAD_RATE);
    let verdicts =
        select::select_with(&facts, &candidates, Some(rate), resolved.upload_rate.is_none(), spec.publish_to);
    let mut assumptions = assumptions(resolved, &facts, &candidates);
    if let Some(deferred) = &image.deferred {
        let bytes: u64 = deferred.layers.iter().map(|(_, size)| size).sum();
        assumptions.push(format!(
            "the {} layer{} to compress count at {} uncompressed, an upper bound: compressed, they are known only in the push",
            deferred.layers.len(),
            if deferred.layers.len() == 1 { "" } else { "s" },
            ByteSize(bytes)
        ));
    }
    let mut warnings: Vec<String> = verdicts.iter().flat_map(|v| v.warnings.iter().cloned()).collect();
    warnings.extend(uncompressed_warning(image));
    let (attestations, warning) =
        crate::attest::plan(resolved.signing.is_some() && resolved.provenance, &resolved.file, spec, image)
            .map_err(|e| vec![e])?;
    warnings.extend(warning);
    let selected: Vec<String> =
        verdicts.iter().filter(|v| v.verdict == VerdictKind::Selected).map(|v| v.registry.clone()).collect();
    if selected.is_empty() {
        return Err(vec![nothing_fits(resolved, spec, &facts, &verdicts)]);
    }
    let targets = verdicts
        .iter()
        .filter(|v| v.verdict == VerdictKind::Selected)
        .filter_map(|v| spec.candidates.iter().find(|r| r.id == v.registry).map(|r| target_plan(spec, image, v, r)))
        .collect();
    Ok(ImagePlan {
        id: spec.name.clone(),
        name: spec.name.clone(),
        source: spec.source.value.clone(),
        open: source_plan(resolved, spec),
        manifest_digest: image.deferred.is_none().then(|| image.root.digest.clone()),
        source_digest: image.root.digest.clone(),
        config_digest: image.root.config.as_ref().map(|c| c.digest.clone()),
        media_type: image.root.media_type.clone(),
        platforms,
        visibility: spec.visibility,
        total_size: facts.total,
        largest_layer: facts.largest_layer,
        blobs: image
            .blobs()
            .into_iter()
            .map(|d| BlobPlan {
                digest: d.digest.clone(),
                size: ByteSize(d.size),
                media_type: d.media_type.clone(),
                compress: image.deferred.as_ref().filter(|x| x.has(&d.digest)).map(|x| x.compression.algorithm),
            })
            .collect(),
        candidates: verdicts,
        selected,
        assumptions,
        warnings,
        attestations,
        targets,
    })
}

/// The engine's view of each candidate registry of `spec`; a tier the catalog lacks is an error.
fn candidates<'a>(
    resolved: &Resolved,
    spec: &'a ResolvedImage,
    measured: &MeasuredUsage,
) -> Result<Vec<Candidate<'a>>, Vec<Diagnostic>> {
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
                anonymous_pulls: spec.visibility == crate::policy::Visibility::Public && r.pull_credentials.is_none(),
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
    if errors.is_empty() { Ok(candidates) } else { Err(errors) }
}

/// The figures the verdicts assumed, each with what to set.
fn assumptions(resolved: &Resolved, facts: &ImageFacts, candidates: &[Candidate]) -> Vec<String> {
    let mut assumptions = Vec::new();
    if facts.pulls_assumed {
        assumptions.push(format!(
            "pulls_per_month: assumed {} (one whole-image pull a day); set it to check free transfer against your own figure",
            select::DEFAULT_PULLS_PER_MONTH
        ));
    }
    if resolved.upload_rate.is_none() {
        assumptions.push(format!(
            "upload_rate: assumed {} a second; set it to your runner's to check upload time limits",
            select::DEFAULT_UPLOAD_RATE
        ));
    }
    if candidates.iter().any(|c| c.tier.kind == crate::policy::RegistryKind::Ghcr) {
        assumptions.push(
            "GHCR has no API for the storage or transfer already used: its usage is unknown unless used: says, so its free-tier margins are too".into(),
        );
    }
    assumptions
}

/// The error when no candidate fits: every candidate's reasons and fixes.
fn nothing_fits(resolved: &Resolved, spec: &ResolvedImage, facts: &ImageFacts, verdicts: &[Verdict]) -> Diagnostic {
    let mut message = format!(
        "no candidate registry fits image {:?} ({}, largest layer {}, {}):",
        spec.name,
        facts.total,
        facts.largest_layer,
        visibility_word(spec.visibility)
    );
    for v in verdicts {
        message.push_str(&format!(
            "\n    {} ({}): {}",
            v.registry,
            v.label,
            v.reasons.iter().filter(|r| !v.notes.contains(r)).cloned().collect::<Vec<_>>().join("; ")
        ));
        for fix in &v.fixes {
            message.push_str(&format!("\n      to fit: {fix}"));
        }
    }
    Diagnostic {
        file: resolved.file.clone(),
        line: spec.at.0.max(1),
        col: spec.at.1.max(1),
        field: format!("images[{}]", spec.index),
        message,
        hint: Some("add a candidate under registries:, or override facts with limits:, tier: or used:".into()),
    }
}

/// Where and how a selected candidate gets the image.
fn target_plan(spec: &ResolvedImage, image: &Image, v: &Verdict, r: &ResolvedRegistry) -> TargetPlan {
    let path = r.repository_for(&spec.name);
    TargetPlan {
        id: format!("{}@{}", spec.name, r.id),
        registry: r.id.clone(),
        kind: r.kind,
        repository: format!("{}/{path}", r.host),
        tags: spec.tags.clone(),
        reason: v.reasons.first().cloned().unwrap_or_default(),
        endpoint: EndpointPlan::new(&r.host, r.insecure, r.ca_file.clone()),
        upload: UploadPlan::for_registry(r.kind, r.chunk_size),
        mount_from: image.mount_source(&r.host, &path),
        credentials: CredentialSource::for_registry(r.kind, &r.host, r.credentials.as_ref()),
        pull_credentials: r.pull_credentials.as_ref().map(|c| CredentialSource::for_registry(r.kind, &r.host, Some(c))),
        path,
        steps: Vec::new(),
        layers: Vec::new(),
        held: Vec::new(),
    }
}

/// Layers a push would send as uncompressed tars: sent, stored against the free tier and pulled
/// by RunPod on every cold start at their full size.
fn uncompressed_warning(image: &Image) -> Option<String> {
    let layers: Vec<_> = image
        .image_manifests()
        .into_iter()
        .flat_map(|m| &m.layers)
        .filter(|l| crate::image::docker::uncompressed(&l.media_type))
        .filter(|l| !image.deferred.as_ref().is_some_and(|x| x.has(&l.digest)))
        .collect();
    let bytes: u64 = layers.iter().map(|l| l.size).sum();
    (bytes > 0).then(|| {
        format!(
            "{} uncompressed in {} layer{}: they would be sent, stored and pulled at that size; leave compression at gzip (a docker source), or build the OCI layout with compressed layers",
            ByteSize(bytes),
            layers.len(),
            if layers.len() == 1 { "" } else { "s" }
        )
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

/// The signing a policy's `signing:` asks for.
pub fn signing_plan(s: &crate::policy::ResolvedSigning) -> SigningPlan {
    match &s.key {
        Some(key) => SigningPlan {
            method: SignMethod::Key,
            format: s.format,
            key: Some(key.clone()),
            password_env: Some(s.password_env.clone()),
            fulcio_url: None,
            rekor_url: s.tlog.then(|| s.rekor_url.clone()),
            tlog: s.tlog,
        },
        None => SigningPlan {
            method: SignMethod::Keyless,
            format: s.format,
            key: None,
            password_env: None,
            fulcio_url: Some(s.fulcio_url.clone()),
            rekor_url: Some(s.rekor_url.clone()),
            tlog: true,
        },
    }
}
