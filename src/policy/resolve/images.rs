//! The `images:` section: names, sources, tags rendered, platforms, candidate registries.

use std::collections::HashSet;
use std::path::Path;

use minijinja::Environment;

use super::super::diag;
use super::super::model::{self, Policy};
use super::super::resolved::*;
use super::{Checker, template_environment, template_error};
use crate::reference;
use crate::types::Platform;

/// The `images:` section: names, sources, tags rendered, platforms, candidate registries.
pub(super) fn resolve_images(
    c: &mut Checker,
    policy: &Policy,
    registries: &[ResolvedRegistry],
    base_dir: &Path,
    ctx: &TemplateContext,
) -> Vec<ResolvedImage> {
    let env = template_environment();
    let mut names = HashSet::new();
    let mut images = Vec::new();
    for (i, img) in policy.images.iter().enumerate() {
        let field = format!("images[{i}]");
        if let Err(e) = reference::validate_repository(&img.name) {
            c.err(
                &img.name,
                format!("{field}.name"),
                e.to_string(),
                Some("use lowercase letters, digits and '-', e.g. comfyui".into()),
            );
        }
        if !names.insert(img.name.value.clone()) {
            c.err(&img.name, format!("{field}.name"), format!("image {:?} is listed twice", *img.name), None);
        }
        if img.source.trim().is_empty() {
            c.err(
                &img.source,
                format!("{field}.source"),
                "the source is empty",
                Some("e.g. oci:build/comfyui or oci-archive:comfyui.tar".into()),
            );
        }
        let tags = tags(c, img, &field, &env, ctx);
        let platforms = platforms(c, img, &field);
        let candidates = candidates(c, policy, registries, img, &field);
        let (compression, compression_level) = compression(c, policy, img, &field);
        let platforms_at = img.platforms.first().map_or((img.name.line, img.name.col), |p| (p.line, p.col));
        images.push(ResolvedImage {
            name: img.name.value.clone(),
            source: img.source.clone(),
            base_dir: base_dir.to_path_buf(),
            tags,
            visibility: *img.visibility,
            platforms,
            platforms_at,
            candidates,
            publish_to: img.publish_to.as_ref().map(|p| p.value).unwrap_or_default(),
            compression,
            compression_level,
            pulls_per_month: img.pulls_per_month.as_ref().map(|p| p.value),
            region: img.region.as_ref().map(|r| r.value.clone()),
            at: (img.name.line, img.name.col),
            index: i,
            retention: crate::policy::retention::resolve(c, policy.retention.as_ref(), img.retention.as_ref(), &field),
            sbom: sbom(c, policy, img, (&field, base_dir)),
        });
    }
    images
}

/// `tags:`, rendered with the git facts and the allowed environment, each a valid tag.
fn tags(c: &mut Checker, img: &model::Image, field: &str, env: &Environment, ctx: &TemplateContext) -> Vec<String> {
    let mut tags = Vec::new();
    if img.tags.is_empty() {
        c.err(
            &img.name,
            format!("{field}.tags"),
            "no tags: the image would be unreachable",
            Some("add tags: [latest]".into()),
        );
    }
    for (j, t) in img.tags.iter().enumerate() {
        let tf = format!("{field}.tags[{j}]");
        match env.render_str(t, minijinja::value::Serde(ctx)) {
            Ok(rendered) => match reference::validate_tag(&rendered) {
                Ok(()) => {
                    if !tags.contains(&rendered) {
                        tags.push(rendered)
                    }
                }
                Err(e) => c.err(t, tf, e.to_string(), None),
            },
            Err(e) => {
                let no_git = ctx.git.sha.is_none()
                    && ["git.sha", "git.short_sha", "git.branch", "git.tag"].iter().any(|k| t.value.contains(k));
                let hint = if no_git && ctx.git.no_commit {
                    "git.* is unknown here: this git checkout has no commit yet, and git.sha comes from the checked-out commit; make a first commit, set GITHUB_SHA, or use a fixed tag"
                } else if no_git {
                    "git.* is unknown here: the policy's directory is not a git checkout and GITHUB_SHA is not set; run inside the checkout, set GITHUB_SHA (and GITHUB_REF_NAME), or use a fixed tag"
                } else {
                    "available: git.sha, git.short_sha, git.branch, git.tag (when known), and env.NAME for CI, RUNNER_*, GITHUB_* and the variables template_env: lists"
                };
                c.err(
                    t,
                    tf,
                    format!("cannot render {:?}: {}", t.value, template_error(&e, &t.value).message),
                    Some(hint.into()),
                )
            }
        }
    }
    tags
}

/// `platforms:`, at least one.
fn platforms(c: &mut Checker, img: &model::Image, field: &str) -> Vec<Platform> {
    let mut platforms = Vec::new();
    if img.platforms.is_empty() {
        c.err(
            &img.name,
            format!("{field}.platforms"),
            "no platforms required",
            Some("RunPod runs linux/amd64: platforms: [linux/amd64]".into()),
        );
    }
    for (j, p) in img.platforms.iter().enumerate() {
        match p.parse::<Platform>() {
            Ok(p) => platforms.push(p),
            Err(e) => c.err(p, format!("{field}.platforms[{j}]"), e, None),
        }
    }
    platforms
}

/// `registries:` of the image (every defined registry when absent), each one defined.
fn candidates(
    c: &mut Checker,
    policy: &Policy,
    registries: &[ResolvedRegistry],
    img: &model::Image,
    field: &str,
) -> Vec<ResolvedRegistry> {
    let mut candidates = Vec::new();
    match &img.registries {
        Some(ids) => {
            if ids.is_empty() {
                c.err(&img.name, format!("{field}.registries"), "no candidate registries", None);
            }
            for (j, id) in ids.iter().enumerate() {
                match registries.iter().find(|r: &&ResolvedRegistry| r.id == **id) {
                    Some(r) => candidates.push(r.clone()),
                    None if policy.registries.contains_key(&id.value) => {} // already reported
                    None => {
                        let known: Vec<&str> = policy.registries.keys().map(String::as_str).collect();
                        let hint = match diag::closest(id, known.iter().copied()) {
                            Some(best) => {
                                Some(format!("did you mean `{best}`? registries defined: {}", known.join(", ")))
                            }
                            None if known.is_empty() => Some("define it under registries:".into()),
                            None => Some(format!("registries defined: {}", known.join(", "))),
                        };
                        c.err(
                            id,
                            format!("{field}.registries[{j}]"),
                            format!("no registry with id `{}`", id.value),
                            hint,
                        );
                    }
                }
            }
        }
        None => {
            candidates = registries.to_vec();
            if policy.registries.is_empty() {
                c.err(
                    &img.name,
                    "registries",
                    "no registries are defined",
                    Some(
                        "add a registries: section, e.g. home: {kind: registry, repository: 127.0.0.1:5000/ml}".into(),
                    ),
                );
            }
        }
    }
    candidates
}

/// The image's compression and level, else `transfer:`'s; a level outside the compressor's
/// range is a located mistake.
fn compression(
    c: &mut Checker,
    policy: &Policy,
    img: &model::Image,
    field: &str,
) -> (crate::types::LayerCompression, Option<u32>) {
    use crate::types::LayerCompression;
    let transfer = policy.transfer.as_ref();
    let compression = img
        .compression
        .as_ref()
        .or_else(|| transfer.and_then(|t| t.compression.as_ref()))
        .map(|c| c.value)
        .unwrap_or_default();
    let (level, at) = match (&img.compression_level, transfer.and_then(|t| t.compression_level.as_ref())) {
        (Some(l), _) => (l, format!("{field}.compression_level")),
        (None, Some(l)) => (l, "transfer.compression_level".to_string()),
        (None, None) => return (compression, None),
    };
    let range = match compression {
        LayerCompression::Gzip => 1..=9,
        LayerCompression::Zstd => 1..=19,
        LayerCompression::None => return (compression, None),
    };
    if !range.contains(&level.value) {
        c.err(
            level,
            at,
            format!(
                "{} levels are {} to {}",
                if compression == LayerCompression::Zstd { "zstd" } else { "gzip" },
                range.start(),
                range.end()
            ),
            Some("leave it out for the default (3)".into()),
        );
    }
    (compression, Some(level.value))
}

/// The image's SBOM, read and checked; signing must be set to attest it.
fn sbom(
    c: &mut Checker,
    policy: &Policy,
    img: &model::Image,
    (field, base_dir): (&str, &Path),
) -> Option<ResolvedSbom> {
    let at = img.sbom.as_ref()?;
    let field = format!("{field}.sbom");
    if policy.signing.is_none() {
        c.err(
            at,
            &field,
            "an SBOM is attested with the signing settings, and there are none",
            Some("add signing: (key: cosign.key, or keyless: true)".into()),
        );
        return None;
    }
    let path = base_dir.join(&at.value);
    match crate::attest::sbom::load(&path) {
        Ok(sbom) => Some(ResolvedSbom { path, sbom, at: (at.line, at.col), field }),
        Err(e) => {
            c.err(at, &field, format!("{}: {e}", at.value.display()), Some("give the SPDX 2.3 JSON or CycloneDX 1.5–1.7 JSON the build wrote (syft -o spdx-json, -o cyclonedx-json@1.6)".into()));
            None
        }
    }
}
