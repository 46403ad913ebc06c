//! The plan: one serialisable value saying, per image, what it is (platforms, sizes, blobs)
//! and where it goes (registry, repository, tags). `build` is pure; `open_sources` reads the
//! images from disk. Printed by `publish plan`, executed by `publish run`.

use serde::Serialize;

use crate::image::{Image, Transport};
use crate::policy::{
    Diagnostic, Diagnostics, RegistryKind, Resolved, ResolvedImage, ResolvedRegistry, Visibility,
};
use crate::types::{ByteSize, Digest, Platform};

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub policy: String,
    pub images: Vec<ImagePlan>,
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
        self.repository
            .split_once('/')
            .map_or(self.repository.as_str(), |(_, p)| p)
    }
}

/// Opens every image's source, turning failures into diagnostics at the `source` field.
pub fn open_sources(resolved: &Resolved) -> Result<Vec<Image>, Diagnostics> {
    let mut images = Vec::new();
    let mut errors = Vec::new();
    for (i, img) in resolved.images.iter().enumerate() {
        let opened = Transport::parse(&img.source, &img.base_dir).and_then(|t| Image::open(&t));
        match opened {
            Ok(image) => images.push(image),
            Err(e) => errors.push(Diagnostic {
                file: resolved.file.clone(),
                line: img.source.line.max(1),
                col: img.source.col.max(1),
                field: format!("images[{i}].source"),
                message: e.to_string(),
                hint: Some(hint_for_source(&img.source)),
            }),
        }
    }
    if errors.is_empty() {
        Ok(images)
    } else {
        Err(Diagnostics(errors))
    }
}

fn hint_for_source(source: &str) -> String {
    if source.starts_with("oci:") || source.starts_with("oci-archive:") {
        "paths are relative to the policy file; `skopeo copy docker-daemon:IMG oci:DIR` or `docker buildx build --output type=oci,dest=FILE` make one".into()
    } else {
        "write oci:DIR[:REF] or oci-archive:FILE[:REF]".into()
    }
}

/// Builds the plan from the resolved policy and the opened images (same order). Pure.
pub fn build(resolved: &Resolved, images: &[Image]) -> Result<Plan, Diagnostics> {
    let mut errors = Vec::new();
    let mut plans = Vec::new();
    for (i, (spec, image)) in resolved.images.iter().zip(images).enumerate() {
        let provided = image.platforms();
        let missing: Vec<String> = spec
            .platforms
            .iter()
            .filter(|w| !provided.iter().any(|p| p.satisfies(w)))
            .map(ToString::to_string)
            .collect();
        if !missing.is_empty() {
            let have = if provided.is_empty() {
                "no platform".to_string()
            } else {
                join(&provided)
            };
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
        plans.push(image_plan(spec, image, provided));
    }
    if errors.is_empty() {
        Ok(Plan {
            policy: resolved.file.clone(),
            images: plans,
        })
    } else {
        Err(Diagnostics(errors))
    }
}

fn image_plan(spec: &ResolvedImage, image: &Image, platforms: Vec<Platform>) -> ImagePlan {
    let targets = spec
        .candidates
        .first()
        .map(|r| TargetPlan {
            registry: r.id.clone(),
            kind: r.kind,
            repository: format!("{}/{}", r.host, r.repository_for(&spec.name)),
            tags: spec.tags.clone(),
            reason: "first candidate in the image's order of preference".into(),
            endpoint: r.clone(),
        })
        .into_iter()
        .collect();
    ImagePlan {
        name: spec.name.clone(),
        source: spec.source.value.clone(),
        manifest_digest: image.root.digest.clone(),
        media_type: image.root.media_type.clone(),
        platforms,
        visibility: spec.visibility,
        total_size: image.total_size(),
        largest_layer: image.largest_layer(),
        blobs: image
            .blobs()
            .into_iter()
            .map(|d| BlobPlan {
                digest: d.digest.clone(),
                size: ByteSize(d.size),
                media_type: d.media_type.clone(),
            })
            .collect(),
        targets,
    }
}

fn join(ps: &[Platform]) -> String {
    ps.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
