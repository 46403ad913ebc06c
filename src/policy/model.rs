//! The policy file's types (`publish.yaml`, version 1). They are the single source of the
//! JSON Schema (`publish schema`) and of the parser; checks that need more than types live
//! in `policy::validate`. Nothing here touches the network or the disk.

use std::path::PathBuf;

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::Deserialize;

use super::located::Located;

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
}

impl RegistryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RegistryKind::Ghcr => "ghcr",
            RegistryKind::EcrPublic => "ecr-public",
            RegistryKind::Dockerhub => "dockerhub",
            RegistryKind::Registry => "registry",
        }
    }
}

/// One image to publish.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Image {
    /// The image's name: it is appended to the registry's repository.
    pub name: Located<String>,
    /// Where CI left the image, in skopeo's transport syntax: `oci:DIR[:REF]` or
    /// `oci-archive:FILE[:REF]`, relative to the policy file.
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
