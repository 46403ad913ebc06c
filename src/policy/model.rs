//! The policy file's types (`publish.yaml`, version 1). They are the single source of the
//! JSON Schema (`publish schema`) and of the parser; checks that need more than types live
//! in `policy::validate`. Nothing here touches the network or the disk.

use std::path::PathBuf;

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::Deserialize;

use super::located::Located;
use crate::types::ByteSize;

/// A `publish.yaml` policy: which images to publish, to which registries.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "publish policy")]
pub struct Policy {
    /// Format version of this file. Only `1` exists.
    pub version: Located<u32>,
    /// Candidate registries, by an id the rest of the file refers to.
    #[serde(default)]
    pub registries: IndexMap<String, Registry>,
    /// The images to publish.
    #[serde(default)]
    pub images: Vec<Image>,
    /// How fast the CI runner uploads, per second (e.g. `20MB`): checks layers against upload
    /// time limits such as GHCR's 10 minutes. Unknown when not given.
    #[serde(default)]
    pub upload_rate: Option<Located<Size>>,
    /// RunPod templates that follow the published images.
    #[serde(default)]
    pub runpod: Option<RunPod>,
    /// How transfers behave: retries, timeouts, concurrency.
    #[serde(default)]
    pub transfer: Option<Transfer>,
    /// Sign every pushed image in cosign's formats.
    #[serde(default)]
    pub signing: Option<Signing>,
    /// Environment variables tags and RunPod templates may read as `env.NAME`, besides `CI`,
    /// `RUNNER_*` and `GITHUB_*` (but `GITHUB_TOKEN`). Variables the policy names as secrets
    /// (`password_env`, the RunPod key, `COSIGN_PASSWORD`), tokens and `AWS_*` never are.
    #[serde(default)]
    pub template_env: Vec<Located<String>>,
    /// What `publish prune` keeps of each repository; without it nothing is ever deleted.
    #[serde(default)]
    pub retention: Option<super::retention::Retention>,
    /// Attestations signed beside each signature (with `signing:`'s settings and formats).
    #[serde(default)]
    pub attest: Option<Attest>,
}

/// Attestations every signed image gets.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Attest {
    /// SLSA provenance v1 of the run that published the image, as GitHub's own attestations
    /// write it (default `true` when `signing:` is set).
    #[serde(default)]
    pub provenance: Option<Located<bool>>,
}

/// Transfer settings; every field has a default.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Transfer {
    /// Attempts per request and per blob (default 4).
    #[serde(default)]
    pub attempts: Option<Located<u32>>,
    /// Longest wait between attempts, seconds (default 30; also caps `Retry-After`).
    #[serde(default)]
    pub max_delay: Option<Located<u64>>,
    /// Seconds to connect (default 30).
    #[serde(default)]
    pub connect_timeout: Option<Located<u64>>,
    /// Seconds without a byte before a transfer is dropped and retried (default 300).
    #[serde(default)]
    pub read_timeout: Option<Located<u64>>,
    /// Blobs uploaded at once to one registry (default 4).
    #[serde(default)]
    pub concurrency: Option<Located<u32>>,
    /// Seconds a small request (ping, token, HEAD, manifest) may take in all, whatever its
    /// pace (default 60); with its retries it gives up after 2.5 times this.
    #[serde(default)]
    pub request_timeout: Option<Located<u64>>,
    /// The slowest upload accepted, per second (default 1MB): a blob's deadline is its size
    /// at this rate, plus `request_timeout`.
    #[serde(default)]
    pub min_rate: Option<Located<Size>>,
    /// Who checks each blob's digest on a push: `registry` (default: it refuses a mismatch,
    /// so the bytes are not hashed twice) or `client` (also hashed on the way out).
    #[serde(default)]
    pub verify: Option<Located<Verify>>,
    /// How layers Docker saved uncompressed are pushed, for every image that does not say:
    /// `gzip` (default), `zstd` or `none`.
    #[serde(default)]
    pub compression: Option<Located<crate::types::LayerCompression>>,
    /// The compressor's level: gzip 1–9 (default 2), zstd 1–19 (default 3).
    #[serde(default)]
    pub compression_level: Option<Located<u32>>,
}

/// Who checks blob digests on a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Verify {
    Registry,
    Client,
}

/// Signing with a cosign key pair.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Signing {
    /// The cosign private key (`ENCRYPTED SIGSTORE PRIVATE KEY`): a path relative to the
    /// policy file, or `env://VAR` for a variable holding the PEM.
    #[serde(default)]
    pub key: Option<Located<String>>,
    /// Keyless: GitHub Actions' OIDC token → a Fulcio certificate → Rekor entries. Needs
    /// `permissions: id-token: write`.
    #[serde(default)]
    pub keyless: Option<Located<bool>>,
    /// Fulcio's URL (default https://fulcio.sigstore.dev).
    #[serde(default)]
    pub fulcio_url: Option<Located<String>>,
    /// Rekor's URL (default https://rekor.sigstore.dev).
    #[serde(default)]
    pub rekor_url: Option<Located<String>>,
    /// Log key-pair signatures in Rekor (`rekor_url`), with the entries and inclusion proofs
    /// keyless signatures get. Default `false`: a private image's digest does not go to a
    /// public log unasked (cosign's own default is to upload). Keyless always logs.
    #[serde(default)]
    pub tlog: Option<Located<bool>>,
    /// The environment variable holding the key's password (default `COSIGN_PASSWORD`).
    #[serde(default)]
    pub password_env: Option<Located<String>>,
    /// `legacy` (the `sha256-<hex>.sig` tag), `bundle` (cosign v3's Sigstore bundle as a
    /// referrer) or `both` (default).
    #[serde(default)]
    pub format: Option<Located<SignFormat>>,
}

/// One signing format type for the policy, the plan and the signer.
pub use crate::sign::Format as SignFormat;

/// The RunPod section: templates rendered from the policy and synced through RunPod's API.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunPod {
    /// The environment variable holding the RunPod API key (default `RUNPOD_API_KEY`).
    #[serde(default)]
    pub api_key_env: Option<Located<String>>,
    /// API base URL (default `https://api.runpod.io`; `/v2/...` is appended). The
    /// `RUNPOD_API_URL` environment variable overrides it.
    #[serde(default)]
    pub api_url: Option<Located<String>>,
    /// Values templates see as `vars.NAME`.
    #[serde(default)]
    pub vars: std::collections::BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    pub templates: Vec<Template>,
    /// Move templates, their endpoints and moving tags even when they hold a newer image than
    /// this run's (by default such a run leaves them, says so and exits 3), as `--allow-rollback`.
    #[serde(default)]
    pub allow_rollback: Option<Located<bool>>,
}

/// One RunPod template that follows an image.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Template {
    /// The template's name on RunPod (names are unique per account).
    pub name: Located<String>,
    /// The image it follows: a `name` from `images:`.
    pub image: Located<String>,
    /// The template body, in RunPod's v2 template fields; strings may hold minijinja expressions.
    #[serde(default)]
    pub body: Option<Located<serde_json::Value>>,
    /// Or a JSON file with minijinja expressions, relative to the policy file.
    #[serde(default)]
    pub file: Option<Located<PathBuf>>,
    /// Serverless endpoint ids moved to the new image on every change (a rolling release).
    #[serde(default)]
    pub endpoints: Vec<Located<String>>,
}

/// A size: `500MB`, `1.2GB`, `10GiB`, or a number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub ByteSize);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a size such as 500MB, 1.2GB or 10GiB")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Size, E> {
                Ok(Size(ByteSize(v)))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Size, E> {
                u64::try_from(v).map(|v| Size(ByteSize(v))).map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Size, E> {
                v.parse().map(Size).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for Size {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Size".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A size: 500MB, 1.2GB, 10GiB (decimal kB/MB/GB/TB or binary KiB/MiB/GiB/TiB), or a number of bytes.",
            "anyOf": [
                {"type": "string", "pattern": "^\\s*[0-9.]+\\s*([kKmMgGtT]i?[bB]?|[bB])?\\s*$"},
                {"type": "integer", "minimum": 0}
            ]
        })
    }
}

/// Facts about a registry that override the built-in catalog (paid plans, self-hosted disks).
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Storage available (free quota, or the disk of a self-hosted registry).
    #[serde(default)]
    pub storage: Option<Located<Size>>,
    /// Transfer (egress) available per month.
    #[serde(default)]
    pub transfer: Option<Located<Size>>,
    /// Largest layer the registry accepts.
    #[serde(default)]
    pub max_layer: Option<Located<Size>>,
    /// How many private repositories the plan allows.
    #[serde(default)]
    pub private_repositories: Option<Located<u32>>,
    /// Whether private images are allowed at all.
    #[serde(default)]
    pub private: Option<Located<bool>>,
    /// Fixed monthly cost in USD (e.g. the VPS of a self-hosted registry); default 0.
    #[serde(default)]
    pub cost_per_month: Option<Located<f64>>,
}

/// Usage already spent this month on a registry, for what `publish` cannot measure.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Used {
    #[serde(default)]
    pub storage: Option<Located<Size>>,
    #[serde(default)]
    pub transfer: Option<Located<Size>>,
    #[serde(default)]
    pub private_repositories: Option<Located<u32>>,
}

/// How GHCR's private quota is treated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Billing {
    /// Use the documented quota as the limit (default): no surprise bill the day billing starts.
    #[default]
    Documented,
    /// Rely on GitHub not billing container storage and transfer today.
    CurrentlyFree,
}

/// Mirror to every eligible candidate, or push to the cheapest one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PublishTo {
    #[default]
    Best,
    All,
}

/// One candidate registry.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Registry {
    /// Which registry service this is: it decides authentication and limits.
    pub kind: Located<RegistryKind>,
    /// Where images go: `<host>[:port]/<namespace>`; an image lands at `<repository>/<image name>`.
    pub repository: Located<String>,
    /// Talk plain HTTP. Refused unless the host is loopback (127.0.0.0/8, ::1, localhost).
    #[serde(default)]
    pub insecure: Located<bool>,
    /// An extra CA certificate (PEM) to trust for this registry, relative to the policy file.
    #[serde(default)]
    pub ca_file: Option<Located<PathBuf>>,
    /// Credentials for pushing. Without them, Docker's `config.json` (and its credential
    /// helpers) is consulted for the registry's host.
    #[serde(default)]
    pub credentials: Option<Credentials>,
    /// Upload blobs in PATCH chunks of this size (resumable where the registry reports how
    /// much it kept). Default: one streaming PUT, except ECR Public (8MiB: it takes 5–10 MiB parts).
    #[serde(default)]
    pub chunk_size: Option<Located<Size>>,
    /// Read-only credentials RunPod pulls private images with (default: the push credentials,
    /// with a warning).
    #[serde(default)]
    pub pull_credentials: Option<Credentials>,
    /// The plan the account is on: ghcr free | pro | team | enterprise; dockerhub personal |
    /// pro | team | business; ecr-public free; registry self-hosted. Decides the free-tier facts.
    #[serde(default)]
    pub tier: Option<Located<String>>,
    /// GHCR: `documented` (default) or `currently-free`.
    #[serde(default)]
    pub billing: Option<Located<Billing>>,
    /// Overrides of the built-in facts for this registry.
    #[serde(default)]
    pub limits: Option<Limits>,
    /// Usage already spent, for what cannot be measured.
    #[serde(default)]
    pub used: Option<Used>,
    /// Where the registry serves from (e.g. `eu-west`), compared with images' `region` hints.
    #[serde(default)]
    pub region: Option<Located<String>>,
}

impl Default for Located<bool> {
    fn default() -> Self {
        Located::unplaced(false)
    }
}

/// A username and the name of the environment variable holding the password or token.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// The user name (for GHCR, the GitHub user; for ECR Public, `AWS`).
    pub username: Located<String>,
    /// The environment variable that holds the password or token (never the secret itself).
    pub password_env: Located<String>,
}

/// Registry services whose behaviour `publish` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RegistryKind {
    /// GitHub Container Registry (ghcr.io).
    Ghcr,
    /// Amazon ECR Public (public.ecr.aws).
    EcrPublic,
    /// Docker Hub (docker.io).
    Dockerhub,
    /// Any OCI distribution registry, such as a self-hosted `registry:2`.
    Registry,
    /// Google Artifact Registry (`REGION-docker.pkg.dev/PROJECT/REPOSITORY`).
    Gar,
}

impl RegistryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RegistryKind::Ghcr => "ghcr",
            RegistryKind::EcrPublic => "ecr-public",
            RegistryKind::Dockerhub => "dockerhub",
            RegistryKind::Registry => "registry",
            RegistryKind::Gar => "gar",
        }
    }
}

/// One image to publish.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Image {
    /// The image's name: it is appended to the registry's repository.
    pub name: Located<String>,
    /// Where CI left the image, in skopeo's transport syntax: `oci:DIR[:REF]`,
    /// `oci-archive:FILE[:REF]` or `docker-archive:FILE[:REF]`, relative to the policy file.
    pub source: Located<String>,
    /// Tags to push; each is a minijinja expression over `git` (`sha`, `short_sha`,
    /// `branch`, `tag`) and `env`.
    #[serde(default = "default_tags")]
    pub tags: Vec<Located<String>>,
    /// Who may pull the image.
    #[serde(default)]
    pub visibility: Located<Visibility>,
    /// Platforms the image must provide, as `os/arch[/variant]`. RunPod runs linux/amd64 only.
    #[serde(default = "default_platforms")]
    pub platforms: Vec<Located<String>>,
    /// Candidate registry ids, in order of preference (default: every registry, in file order).
    #[serde(default)]
    pub registries: Option<Vec<Located<String>>>,
    /// `best`: push to the cheapest eligible candidate; `all`: mirror to every eligible one.
    #[serde(default)]
    pub publish_to: Option<Located<PublishTo>>,
    /// Expected pulls a month (each pulling the whole image, the worst case): checks free transfer.
    #[serde(default)]
    pub pulls_per_month: Option<Located<u64>>,
    /// How the layers Docker saved uncompressed (`docker save`, `docker-daemon:`) are pushed:
    /// `gzip`, `zstd` or `none` (default: `transfer.compression`, else gzip). An OCI layout
    /// you built keeps its bytes.
    #[serde(default)]
    pub compression: Option<Located<crate::types::LayerCompression>>,
    /// The compressor's level for this image (default: `transfer.compression_level`).
    #[serde(default)]
    pub compression_level: Option<Located<u32>>,
    /// Where the image runs, e.g. the RunPod data centre region (`EU-RO-1`).
    #[serde(default)]
    pub region: Option<Located<String>>,
    /// This image's retention, field by field over the top-level `retention:`.
    #[serde(default)]
    pub retention: Option<super::retention::Retention>,
    /// The SBOM the build made (SPDX 2.3 JSON or CycloneDX 1.5–1.7 JSON, e.g. from syft),
    /// relative to the policy file: checked, then attested with `signing:`'s settings.
    #[serde(default)]
    pub sbom: Option<Located<PathBuf>>,
}

fn default_tags() -> Vec<Located<String>> {
    vec![Located::unplaced("latest".to_string())]
}

fn default_platforms() -> Vec<Located<String>> {
    vec![Located::unplaced("linux/amd64".to_string())]
}

/// Who may pull an image. Private is the default: nothing is made public by accident.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Visibility {
    Public,
    #[default]
    Private,
}

impl Default for Located<Visibility> {
    fn default() -> Self {
        Located::unplaced(Visibility::Private)
    }
}
