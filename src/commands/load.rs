//! What every policy command starts with: the environment (read once, here), the policy
//! resolved offline, the run's transfer settings, and the image sources opened.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::credentials::{CredentialSource, Env};
use crate::http::ClientConfig;
use crate::image::{Image, Transport};
use crate::plan::{self, SourcePlan};
use crate::policy::{self, Diagnostics, GitContext, Resolved, TemplateContext};
use crate::reference::Reference;
use crate::registry::RegistryAccess;

/// The process environment, captured once for the whole command.
pub fn environment() -> Env {
    std::env::vars().collect()
}

/// The run's client configuration from its transfer settings (the policy's, a saved plan's,
/// or the defaults for commands without a policy); `PUBLISH_RETRY_BASE_MS` shrinks the first
/// retry's wait (tests). Every client of the run is built from the value this returns.
pub fn client_config(mut transfer: ClientConfig, env: &Env) -> ClientConfig {
    if let Some(ms) = env.get("PUBLISH_RETRY_BASE_MS").and_then(|v| v.parse().ok()) {
        transfer.retry_base = std::time::Duration::from_millis(ms);
    }
    transfer
}

/// The base URLs of the APIs that are not registries, as the environment may point them
/// elsewhere (`DOCKERHUB_API_URL`, `RUNPOD_API_URL`: a mirror, or the tests' stand-ins): read
/// here, once, typed, and handed to what calls those APIs.
#[derive(Debug, Clone)]
pub struct ServiceUrls {
    pub dockerhub_api: String,
    /// Overrides the policy's `runpod.api_url`.
    pub runpod_api: Option<String>,
}

pub fn service_urls(env: &Env) -> ServiceUrls {
    let var = |k: &str| env.get(k).filter(|v| !v.is_empty()).cloned();
    ServiceUrls {
        dockerhub_api: var("DOCKERHUB_API_URL").unwrap_or_else(|| crate::registry::hub::API.to_string()),
        runpod_api: var("RUNPOD_API_URL"),
    }
}

/// Loads and resolves the policy, offline.
pub fn policy(path: &Path, env: &Env) -> anyhow::Result<Resolved> {
    let (policy, file) = policy::load(path)?;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let ctx = template_context(dir, env);
    let mut resolved = policy::resolve(&policy, &file, dir, &ctx)?;
    resolved.transfer = client_config(resolved.transfer, env);
    Ok(resolved)
}

/// Loads the policy and opens every image it names (offline, but for `docker://` sources,
/// whose manifests are read from their registry). `images[i]` is the policy's image `i`.
pub async fn policy_and_images(path: &Path, env: &Env) -> anyhow::Result<(Resolved, Vec<Image>)> {
    let resolved = policy(path, env)?;
    let mut images = Vec::new();
    let mut errors = Vec::new();
    let in_actions = crate::github::Actions::detect(env).is_some();
    for (i, spec) in resolved.images.iter().enumerate() {
        let source = plan::build::source_plan(&resolved, spec);
        // Opening a docker source reads a whole archive or daemon export: in GitHub Actions its
        // lines sit in a group of their own.
        let docker = ["docker-archive:", "docker-daemon:"].iter().any(|t| source.transport.starts_with(t));
        let _group = crate::github::Group::start(in_actions && docker, &format!("Opening image {}", spec.name));
        match open_image(&source, env, &resolved.transfer).await {
            Ok(image) => images.push(image),
            // A `docker://` source's registry was contacted and failed: a runtime failure
            // (exit 1), not a mistake in the policy.
            Err(e) if e.downcast_ref::<crate::registry::RegistryError>().is_some() => {
                return Err(e.context(format!("{}: images[{i}].source {}", resolved.file, spec.source.value)));
            }
            Err(e) => errors.push(plan::source_diagnostic(&resolved, i, format!("{e:#}"))),
        }
    }
    if !errors.is_empty() {
        return Err(Diagnostics(errors).into());
    }
    Ok((resolved, images))
}

/// Where publish caches what it fetches (Sigstore's trust root): `PUBLISH_CACHE_DIR`, else the
/// XDG cache directory.
pub fn cache_dir(env: &Env) -> PathBuf {
    if let Some(d) = env.get("PUBLISH_CACHE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let base = env
        .get("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| env.get("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("publish")
}

/// Opens a source as the plan describes it; `docker://` through the registry client.
pub async fn open_image(source: &SourcePlan, env: &Env, config: &ClientConfig) -> anyhow::Result<Image> {
    // The path is already resolved: parse it as it stands.
    let transport = Transport::parse(&source.transport, Path::new(""))?;
    let opts = crate::image::OpenOptions {
        compression: source.compression,
        compression_level: source.compression_level,
        docker_socket: crate::image::daemon::socket_path(env.get("DOCKER_HOST").map(String::as_str))?,
        read_timeout: config.read_timeout,
    };
    match (&transport, &source.registry) {
        (Transport::Registry { reference }, access) => {
            let r = Reference::parse(reference).map_err(|e| anyhow::anyhow!("{reference:?}: {e}"))?;
            let (endpoint, ca, credentials) = match access {
                Some(a) => (a.endpoint.endpoint(), a.endpoint.ca_file.clone(), a.credentials.clone()),
                None => (
                    crate::registry::Endpoint { host: r.host.clone(), insecure: false },
                    None,
                    CredentialSource::for_cli(&r.host, None, None),
                ),
            };
            let access = RegistryAccess {
                endpoint,
                ca_file: ca,
                credential: credentials.resolve(env)?.credential(),
                config: *config,
            };
            let client = access.client(&r.repository)?;
            Ok(crate::image::remote::open(&r, client).await?)
        }
        _ => Ok(Image::open_with(&transport, &opts)?),
    }
}

/// `git` facts for tag templates: from GitHub Actions' variables, else from `git` itself.
fn template_context(dir: &Path, env: &Env) -> TemplateContext {
    let git_out = |args: &[&str]| -> Option<String> {
        let out =
            Command::new("git").arg("-C").arg(dir).args(args).stderr(std::process::Stdio::null()).output().ok()?;
        let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
        (out.status.success() && !s.is_empty()).then_some(s)
    };
    let sha = env.get("GITHUB_SHA").cloned().or_else(|| git_out(&["rev-parse", "HEAD"]));
    let ref_type = env.get("GITHUB_REF_TYPE").map(String::as_str);
    let ref_name = env.get("GITHUB_REF_NAME").cloned();
    let branch = match ref_type {
        Some("branch") => ref_name.clone(),
        Some(_) => None,
        // No ref type (not GitHub Actions, or an older runner): git, else GITHUB_REF_NAME.
        None => git_out(&["symbolic-ref", "--short", "-q", "HEAD"]).or_else(|| ref_name.clone()),
    };
    let tag = match ref_type {
        Some("tag") => ref_name,
        Some(_) => None,
        None => git_out(&["describe", "--tags", "--exact-match"]),
    };
    let short_sha = sha.as_ref().map(|s| s.chars().take(7).collect());
    let no_commit = sha.is_none() && git_out(&["rev-parse", "--is-inside-work-tree"]).as_deref() == Some("true");
    TemplateContext { git: GitContext { sha, short_sha, branch, tag, no_commit }, env: env.clone() }
}
