//! The policy as the later stages see it: every value checked, defaults filled in, templates
//! rendered, paths resolved, and where each value was written kept for errors found later.

use std::path::PathBuf;

use serde::Serialize;

use super::located::Located;
use super::model::{Billing, PublishTo, RegistryKind, Visibility};
use crate::types::{ByteSize, Platform};

/// The values tag templates see: `git.*` and `env.*`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TemplateContext {
    pub git: GitContext,
    pub env: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct GitContext {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub short_sha: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// The policy's directory is a git checkout that has no commit yet (so no `git.sha`).
    #[serde(skip)]
    pub no_commit: bool,
}

/// A policy that passed every offline check, lowered to plain values.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub file: String,
    pub images: Vec<ResolvedImage>,
    /// The CI runner's upload rate, bytes per second, when the policy gives it.
    pub upload_rate: Option<ByteSize>,
    pub runpod: Option<ResolvedRunPod>,
    pub signing: Option<ResolvedSigning>,
    pub transfer: crate::http::ClientConfig,
    /// What templates were rendered with (git, env), for the RunPod stage.
    pub context: TemplateContext,
    /// Attest each signed image's provenance (`attest.provenance`, default on with signing).
    pub provenance: bool,
}

#[derive(Debug, Clone)]
pub struct ResolvedSigning {
    /// A path (resolved against the policy's directory) or `env://VAR`; `None` for keyless.
    pub key: Option<String>,
    pub fulcio_url: String,
    pub rekor_url: String,
    pub password_env: String,
    pub format: crate::sign::Format,
    /// Log in Rekor: always for keyless, `signing.tlog` for key pairs.
    pub tlog: bool,
}

pub const DEFAULT_RUNPOD_API: &str = "https://api.runpod.io";

#[derive(Debug, Clone)]
pub struct ResolvedRunPod {
    pub api_key_env: String,
    /// Base URL without a trailing slash; `/v2/...` is appended.
    pub api_url: String,
    pub vars: std::collections::BTreeMap<String, serde_json::Value>,
    pub templates: Vec<ResolvedTemplate>,
    /// Move templates and tags even to an older image than the one they hold (`--allow-rollback`).
    pub allow_rollback: bool,
}

#[derive(Debug, Clone)]
pub struct ResolvedTemplate {
    pub name: String,
    /// The image (from `images:`) the template follows.
    pub image: String,
    pub source: TemplateSource,
    pub endpoints: Vec<String>,
    /// `runpod.templates[N]`.
    pub field: String,
}

/// Where a template body comes from.
#[derive(Debug, Clone)]
pub enum TemplateSource {
    /// `body:` in the policy, and where it starts.
    Inline { body: serde_json::Value, at: (u64, u64) },
    /// `file:`: its name as written and its text.
    File { display: String, text: String },
}

#[derive(Debug, Clone)]
pub struct ResolvedImage {
    pub name: String,
    /// The transport string as written, and where, so the image stage's errors can be located.
    pub source: Located<String>,
    /// Directory relative sources are resolved against (the policy file's).
    pub base_dir: PathBuf,
    pub tags: Vec<String>,
    pub visibility: Visibility,
    pub platforms: Vec<Platform>,
    pub platforms_at: (u64, u64),
    /// Candidate registries in order of preference.
    pub candidates: Vec<ResolvedRegistry>,
    pub publish_to: PublishTo,
    pub compression: crate::types::LayerCompression,
    /// `None`: the compressor's default.
    pub compression_level: Option<u32>,
    pub pulls_per_month: Option<u64>,
    pub region: Option<String>,
    /// Where the image's entry starts (its `name`), for errors about the image as a whole.
    pub at: (u64, u64),
    pub index: usize,
    /// What `publish prune` keeps of its repositories (`None`: nothing is deleted).
    pub retention: Option<super::retention::ResolvedRetention>,
    /// The SBOM the build made, checked, and where `sbom:` is written.
    pub sbom: Option<ResolvedSbom>,
}

#[derive(Debug, Clone)]
pub struct ResolvedSbom {
    /// Resolved against the policy's directory.
    pub path: PathBuf,
    pub sbom: crate::attest::sbom::Sbom,
    pub at: (u64, u64),
    /// `images[N].sbom`.
    pub field: String,
}

#[derive(Debug, Clone)]
pub struct ResolvedRegistry {
    pub id: String,
    pub kind: RegistryKind,
    /// `host[:port]`.
    pub host: String,
    /// Namespace inside the registry (may be empty): images go to `<namespace>/<image name>`.
    pub namespace: String,
    pub insecure: bool,
    pub ca_file: Option<PathBuf>,
    pub credentials: Option<CredentialRef>,
    pub pull_credentials: Option<CredentialRef>,
    /// PATCH chunk size, when blobs go up in chunks.
    pub chunk_size: Option<ByteSize>,
    /// The plan named in the policy (checked against the catalog by the selection stage).
    pub tier: Option<Located<String>>,
    pub billing: Billing,
    pub limits: LimitOverrides,
    pub used: GivenUsage,
    pub region: Option<String>,
}

/// Catalog facts the policy overrides for one registry.
#[derive(Debug, Clone, Default)]
pub struct LimitOverrides {
    pub storage: Option<ByteSize>,
    pub transfer: Option<ByteSize>,
    pub max_layer: Option<ByteSize>,
    pub private_repositories: Option<u32>,
    pub private: Option<bool>,
    pub cost_per_month: Option<f64>,
}

/// Usage the policy states for one registry.
#[derive(Debug, Clone, Default)]
pub struct GivenUsage {
    pub storage: Option<ByteSize>,
    pub transfer: Option<ByteSize>,
    pub private_repositories: Option<u32>,
}

impl ResolvedRegistry {
    /// The repository an image named `image` goes to.
    pub fn repository_for(&self, image: &str) -> String {
        if self.namespace.is_empty() { image.to_string() } else { format!("{}/{}", self.namespace, image) }
    }
}

/// Where a password lives: never the password itself.
#[derive(Debug, Clone)]
pub struct CredentialRef {
    pub username: String,
    pub password_env: String,
    /// Where `password_env` was written, for errors found at run time.
    pub at: (u64, u64),
    pub field: String,
}
