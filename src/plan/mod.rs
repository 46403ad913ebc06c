//! The plan: one serialisable value saying, per image, what it is (source, digest, platforms,
//! blobs) and, per target, where it goes and how (endpoint, repository, tags, upload mode,
//! mounts, credential source — never a secret), then the signing and RunPod steps. Images
//! and targets are referred to by id. Built by pure code (`build`), printed by `publish
//! plan`, saved as JSON and executed exactly by `publish run [--plan FILE]`.

pub mod build;
mod measure;
mod preflight;
mod reuse;
pub mod steps;
pub use build::{MeasuredUsage, build, signing_plan, source_diagnostic};
pub use measure::{Known, Measure, measure_usage};
pub use preflight::preflight;
pub use reuse::look as look_up_layers;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::credentials::CredentialSource;
use crate::policy::{RegistryKind, Visibility};
use crate::registry::{Endpoint, UploadMode};
use crate::select::Verdict;
use crate::types::{ByteSize, Digest, LayerCompression, Platform};

/// The plan with every RunPod template rendered (all mistakes at once, exit 2) and the digest
/// of each body recorded, with the rendered templates: a run renders them once, here.
pub fn finish(
    resolved: &crate::policy::Resolved,
    images: &[crate::image::Image],
    measured: &MeasuredUsage,
) -> anyhow::Result<(Plan, Vec<crate::runpod::stage::Rendered>)> {
    let mut plan = build(resolved, images, measured)?;
    let rendered = crate::runpod::stage::render_all(resolved, &plan)?;
    // A body that waits for its image's digest is recorded as rendered with the stand-in
    // (deterministic): a saved plan still catches a template changed since.
    for t in &mut plan.templates {
        t.body_digest =
            rendered.iter().find(|r| r.template.name == t.name).map(|r| crate::runpod::stage::body_digest(&r.body));
    }
    Ok((plan, rendered))
}

/// The plan rebuilt with `measured` usage. The templates rendered offline are kept when every
/// template still pins the same target (a body depends only on its image and target); else
/// they are rendered again.
pub fn remeasured(
    resolved: &crate::policy::Resolved,
    images: &[crate::image::Image],
    measured: &MeasuredUsage,
    offline: (Plan, Vec<crate::runpod::stage::Rendered>),
) -> anyhow::Result<(Plan, Vec<crate::runpod::stage::Rendered>)> {
    let mut plan = build(resolved, images, measured)?;
    let same = plan.templates.len() == offline.0.templates.len()
        && plan.templates.iter().zip(&offline.0.templates).all(|(a, b)| a.name == b.name && a.target == b.target);
    if !same {
        return finish(resolved, images, measured);
    }
    for (t, before) in plan.templates.iter_mut().zip(&offline.0.templates) {
        t.body_digest = before.body_digest.clone();
    }
    Ok((plan, offline.1))
}

/// The plan format's version: `run --plan` refuses any other.
pub const PLAN_VERSION: u32 = 3;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    pub version: u32,
    pub policy: String,
    /// Retries, timeouts and concurrency for every request the run makes.
    pub transfer: crate::http::ClientConfig,
    pub images: Vec<ImagePlan>,
    /// How pushed images are signed, when they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing: Option<SigningPlan>,
    /// RunPod templates that follow the images, once published (and signed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub templates: Vec<TemplatePlan>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SignMethod {
    Key,
    Keyless,
}

/// Every pushed target is signed this way, right after its manifest is in place.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SigningPlan {
    pub method: SignMethod,
    /// `legacy`, `bundle` or `both`.
    pub format: crate::sign::Format,
    /// The private key: a path or `env://VAR` (key pairs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The variable holding the key's password (key pairs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// Fulcio and Rekor (keyless).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fulcio_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rekor_url: Option<String>,
    /// Whether signatures are logged in Rekor (`rekor_url`): always for keyless.
    #[serde(default)]
    pub tlog: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TemplatePlan {
    pub name: String,
    /// The image id the template follows, and the target id whose reference it pins.
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// SHA-256 of the rendered body (the body itself may carry values that stay out of plans).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_digest: Option<Digest>,
    pub endpoints: Vec<String>,
    /// What a run writes on RunPod for it, in order.
    #[serde(default)]
    pub steps: Vec<steps::TemplateStep>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImagePlan {
    /// The image's id in the plan (its name; unique in a policy).
    pub id: String,
    pub name: String,
    /// The source as the policy writes it.
    pub source: String,
    /// How to open it again: the transport with its path resolved, and how to reach it.
    pub open: SourcePlan,
    /// The digest of the manifest pushed; `None` for a docker source with layers to compress,
    /// whose manifest digest is known only once they are (the push reports it).
    pub manifest_digest: Option<Digest>,
    /// The digest of the manifest as read from the source (for a docker source, the manifest
    /// that lists its layers uncompressed: its config and diff_ids); `run --plan` refuses a
    /// source that no longer has it.
    pub source_digest: Digest,
    /// The config of a single image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_digest: Option<Digest>,
    pub media_type: String,
    pub platforms: Vec<Platform>,
    pub visibility: Visibility,
    pub total_size: ByteSize,
    pub largest_layer: ByteSize,
    pub blobs: Vec<BlobPlan>,
    /// Every candidate registry's verdict, with reasons, cost and free-tier margins
    /// (for reading; `run --plan` does not need them).
    #[serde(default, skip_deserializing)]
    pub candidates: Vec<Verdict>,
    /// Ids of the registries the image goes to.
    pub selected: Vec<String>,
    /// Figures the selection assumed because the policy did not give them, and what is unknown.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub assumptions: Vec<String>,
    /// Verdicts that rest on an assumed figure: shown in the plan, the job summary and the
    /// pull-request comment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The attestations each target gets: signed by the run (provenance, the SBOM), and
    /// BuildKit's own in the image's index (pushed as they are).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attestations: Vec<crate::attest::Planned>,
    pub targets: Vec<TargetPlan>,
}

/// Where an image is read from, resolved so another job can open it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourcePlan {
    /// skopeo's transport syntax with the path as resolved from the policy's directory.
    pub transport: String,
    pub compression: LayerCompression,
    /// The compressor's level, when the policy sets one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression_level: Option<u32>,
    /// For `docker://` sources: the source registry and its credential source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<SourceRegistry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRegistry {
    pub endpoint: EndpointPlan,
    pub credentials: CredentialSource,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BlobPlan {
    pub digest: Digest,
    pub size: ByteSize,
    pub media_type: String,
    /// A layer Docker saved uncompressed (`digest` is its diff_id, `size` uncompressed),
    /// compressed so while it is pushed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compress: Option<LayerCompression>,
}

impl ImagePlan {
    /// The manifest digest, or what stands for it until the push.
    pub fn digest_text(&self) -> String {
        match &self.manifest_digest {
            Some(d) => d.to_string(),
            None => "known once its layers are compressed, in the push".into(),
        }
    }
}

/// A registry's address as the client reaches it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointPlan {
    /// `https`, or `http` (loopback registries marked insecure).
    pub scheme: String,
    /// `host[:port]` as references name it.
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// An extra CA certificate (PEM) to trust.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

impl EndpointPlan {
    pub fn new(host: &str, insecure: bool, ca_file: Option<PathBuf>) -> Self {
        let port = host.rsplit_once(':').and_then(|(h, p)| (!h.ends_with(']') || h.starts_with('[')).then_some(p));
        EndpointPlan {
            scheme: if insecure { "http" } else { "https" }.into(),
            host: host.to_string(),
            port: port.and_then(|p| p.parse().ok()),
            ca_file,
        }
    }

    pub fn endpoint(&self) -> Endpoint {
        Endpoint { host: self.host.clone(), insecure: self.scheme == "http" }
    }
}

/// How blobs go up to a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "kebab-case")]
pub enum UploadPlan {
    /// One streaming PUT per blob.
    Streamed,
    /// PATCH chunks of this size, resumable where the registry allows; with `max_parts`, a
    /// blob that would need more parts goes in larger ones (ECR Public: at most 1,000).
    Chunked {
        chunk_size: ByteSize,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_parts: Option<u64>,
    },
}

/// ECR Public takes at most 1,000 parts per layer upload (docs/registries.md).
pub const ECR_MAX_PARTS: u64 = 1_000;

impl UploadPlan {
    pub fn from_chunk(chunk: Option<ByteSize>) -> Self {
        chunk.map_or(UploadPlan::Streamed, |c| UploadPlan::Chunked { chunk_size: c, max_parts: None })
    }

    /// How a registry of `kind` takes blobs, given its `chunk_size` (the policy's or the
    /// kind's default).
    pub fn for_registry(kind: crate::policy::RegistryKind, chunk: Option<ByteSize>) -> Self {
        match (Self::from_chunk(chunk), kind) {
            (UploadPlan::Chunked { chunk_size, .. }, crate::policy::RegistryKind::EcrPublic) => {
                UploadPlan::Chunked { chunk_size, max_parts: Some(ECR_MAX_PARTS) }
            }
            (plan, _) => plan,
        }
    }

    pub fn mode(self) -> UploadMode {
        match self {
            UploadPlan::Streamed => UploadMode::Monolithic,
            UploadPlan::Chunked { chunk_size, max_parts } => {
                UploadMode::Chunked { chunk: chunk_size.0.max(1), max_parts }
            }
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetPlan {
    /// `IMAGE@REGISTRY`: what `run --only` and the matrix name.
    pub id: String,
    pub registry: String,
    pub kind: RegistryKind,
    /// `host/namespace/name`.
    pub repository: String,
    /// The repository path inside the registry (without the host).
    pub path: String,
    pub tags: Vec<String>,
    /// Why this registry was chosen.
    pub reason: String,
    pub endpoint: EndpointPlan,
    pub upload: UploadPlan,
    /// A repository on the same registry to mount the blobs from instead of copying them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_from: Option<String>,
    /// Where the push credentials come from (never the secret).
    pub credentials: CredentialSource,
    /// What RunPod pulls a private image with, when the policy names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_credentials: Option<CredentialSource>,
    /// What a run writes for this target, in order.
    #[serde(default)]
    pub steps: Vec<steps::TargetStep>,
    /// For a docker source, each layer to compress as the repository holds it: reused from a
    /// tag's image or to compress and send (`publish plan` when it measures; empty otherwise).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<crate::push::LayerReuse>,
    /// Tags that hold another image and what a run would do with each (`publish plan` when it
    /// measures): kept when the image there is newer (`guard`).
    #[serde(default, skip_deserializing, skip_serializing_if = "Vec::is_empty")]
    pub held: Vec<crate::order::Held>,
}

impl TargetPlan {
    /// The repository path inside the registry (without the host).
    pub fn path(&self) -> &str {
        &self.path
    }
}

/// `--only` named no image or target of the plan.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--only {only} matches nothing in the plan; entries: {}", .entries.join(", "))]
pub struct NoSuchEntry {
    pub only: String,
    pub entries: Vec<String>,
}

impl Plan {
    /// Keeps only `IMAGE` or `IMAGE@REGISTRY` (an image id or a target id); the templates of
    /// the images left out go too.
    pub fn restrict(&mut self, only: &str) -> Result<(), NoSuchEntry> {
        let ids: Vec<String> = self.images.iter().flat_map(|i| i.targets.iter().map(|t| t.id.clone())).collect();
        self.images.retain(|i| i.id == only || i.targets.iter().any(|t| t.id == only));
        for i in &mut self.images {
            if i.id != only {
                i.targets.retain(|t| t.id == only);
                i.selected.retain(|r| i.targets.iter().any(|t| &t.registry == r));
            }
        }
        if self.images.is_empty() {
            return Err(NoSuchEntry { only: only.to_string(), entries: ids });
        }
        let kept: Vec<String> = self.images.iter().flat_map(|i| i.targets.iter().map(|t| t.id.clone())).collect();
        self.templates.retain(|t| t.target.as_ref().is_some_and(|id| kept.contains(id)));
        Ok(())
    }

    /// One matrix entry per target, for `strategy.matrix`: `only` is the target's id.
    pub fn matrix(&self) -> serde_json::Value {
        let include: Vec<serde_json::Value> = self
            .images
            .iter()
            .flat_map(|i| {
                i.targets.iter().map(move |t| serde_json::json!({"image": i.id, "registry": t.registry, "only": t.id}))
            })
            .collect();
        serde_json::json!({ "include": include })
    }

    pub fn image(&self, id: &str) -> Option<&ImagePlan> {
        self.images.iter().find(|i| i.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(image: &str, registry: &str) -> serde_json::Value {
        serde_json::json!({
            "id": format!("{image}@{registry}"), "registry": registry, "kind": "registry",
            "repository": format!("r.example/{image}"), "path": image, "tags": ["v1"], "reason": "",
            "endpoint": {"scheme": "https", "host": "r.example"}, "upload": {"mode": "streamed"},
            "credentials": {"from": "docker-config", "host": "r.example"}
        })
    }

    fn plan() -> Plan {
        let image = |name: &str, targets: Vec<serde_json::Value>| {
            serde_json::json!({
                "id": name, "name": name, "source": format!("oci:{name}"),
                "open": {"transport": format!("oci:{name}"), "compression": "gzip"},
                "manifest_digest": format!("sha256:{}", "a".repeat(64)), "source_digest": format!("sha256:{}", "a".repeat(64)), "media_type": "m",
                "platforms": [], "visibility": "private", "total_size": 1, "largest_layer": 1, "blobs": [],
                "selected": targets.iter().map(|t| t["registry"].clone()).collect::<Vec<_>>(), "targets": targets
            })
        };
        serde_json::from_value(serde_json::json!({
            "version": PLAN_VERSION, "policy": "publish.yaml",
            "transfer": {"attempts": 4, "max_delay": 30, "connect_timeout": 30, "read_timeout": 300, "concurrency": 4, "request_timeout": 60, "min_rate": 1000000},
            "images": [
                image("first", vec![target("first", "home"), target("first", "ghcr")]),
                image("second", vec![target("second", "home")]),
            ],
            "templates": [
                {"name": "t1", "image": "first", "target": "first@home", "endpoints": []},
                {"name": "t2", "image": "second", "target": "second@home", "endpoints": []}
            ]
        }))
        .unwrap()
    }

    #[test]
    fn only_a_target_id_keeps_that_target_of_that_image_and_its_templates() {
        let mut p = plan();
        p.restrict("second@home").unwrap();
        assert_eq!(p.images.len(), 1);
        assert_eq!(p.images[0].id, "second");
        assert_eq!(p.images[0].targets[0].id, "second@home");
        assert_eq!(p.templates.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["t2"]);

        let mut p = plan();
        p.restrict("first@ghcr").unwrap();
        assert_eq!(p.images[0].targets.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(), ["first@ghcr"]);
        assert_eq!(p.images[0].selected, ["ghcr"]);
        assert!(p.templates.is_empty(), "t1 pins first@home, which is not run");
    }

    #[test]
    fn only_an_image_id_keeps_all_its_targets() {
        let mut p = plan();
        p.restrict("first").unwrap();
        assert_eq!(p.images[0].targets.len(), 2);
    }

    #[test]
    fn only_something_unknown_lists_the_entries() {
        let e = plan().restrict("third@home").unwrap_err();
        assert_eq!(e.entries, ["first@home", "first@ghcr", "second@home"]);
    }

    #[test]
    fn the_matrix_names_target_ids() {
        let m = plan().matrix();
        let only: Vec<&str> = m["include"].as_array().unwrap().iter().map(|e| e["only"].as_str().unwrap()).collect();
        assert_eq!(only, ["first@home", "first@ghcr", "second@home"]);
    }

    #[test]
    fn a_plan_reads_back_what_it_wrote() {
        let p = plan();
        let again: Plan = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(again.images[1].targets[0].credentials, p.images[1].targets[0].credentials);
        assert_eq!(again.images[0].open, p.images[0].open);
        assert_eq!(again.transfer, p.transfer);
    }
}
