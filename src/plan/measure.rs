//! What registries already use, measured read-only before ranking, for those whose usage the
//! policy does not state: self-hosted registries by walking the catalog, Docker Hub's
//! private repositories through its API and its anonymous pull limit from a HEAD, ECR
//! Public's storage through its API. A registry that cannot be measured stays unknown.

use super::MeasuredUsage;
use crate::credentials::{CredentialSource, Env};
use crate::http::ClientConfig;
use crate::policy::{RegistryKind, Resolved, ResolvedRegistry, Visibility};
use crate::registry::{Credential, Endpoint, RegistryAccess, usage};
use crate::select::{Usage, UsageSource};

/// The repository Docker documents for checking the pull limit.
const PROBE_REPOSITORY: &str = "ratelimitpreview/test";

/// Which registries to measure.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Measure {
    /// Nothing (`--no-measure`, and `publish --dry-run`, which stays offline).
    #[default]
    Nothing,
    /// Registries whose credentials are there (`publish plan`'s default).
    WithCredentials,
    /// Every registry that allows it, anonymously where no credential is there (`--measure`).
    All,
    /// What the selection needs (`publish run`): a self-hosted registry with a storage limit,
    /// a Docker Hub or ECR Public that hosts an image of the visibility measured.
    Needed,
}

impl Measure {
    /// Every registry, not only those whose measurement changes a verdict.
    fn all(self) -> bool {
        matches!(self, Measure::WithCredentials | Measure::All)
    }

    /// Only registries whose credentials are there.
    pub fn need_credentials(self) -> bool {
        self == Measure::WithCredentials
    }
}

/// Credentials already resolved, by registry id (a run's preflight), so that no credential
/// helper is started twice.
pub type Known = std::collections::HashMap<String, Option<Credential>>;

/// Measures as `scope` says; credentials come from `known`, else are resolved here.
pub async fn measure_usage(
    resolved: &Resolved,
    env: &Env,
    scope: Measure,
    known: &Known,
    (config, dockerhub_api): (&ClientConfig, &str),
) -> MeasuredUsage {
    let mut measured = MeasuredUsage::new();
    if scope == Measure::Nothing {
        return measured;
    }
    for r in resolved.images.iter().flat_map(|i| &i.candidates) {
        if measured.contains_key(&r.id) {
            continue;
        }
        let credential = match known.get(&r.id) {
            Some(c) => c.clone(),
            None => CredentialSource::for_registry(r.kind, &r.host, r.credentials.as_ref())
                .resolve(env)
                .ok()
                .and_then(|c| c.credential()),
        };
        if scope.need_credentials() && credential.is_none() && r.kind != RegistryKind::EcrPublic {
            continue;
        }
        // Whether an image of this visibility has the registry as a candidate.
        let here = |v: Visibility| {
            resolved.images.iter().any(|i| i.visibility == v && i.candidates.iter().any(|c| c.id == r.id))
        };
        let access = RegistryAccess {
            endpoint: Endpoint { host: r.host.clone(), insecure: r.insecure },
            ca_file: r.ca_file.clone(),
            credential,
            config: *config,
        };
        match r.kind {
            // It hosts public images only; its credentials are AWS's, tried by the measurement.
            RegistryKind::EcrPublic if r.used.storage.is_none() && (scope.all() || here(Visibility::Public)) => {
                measure_ecr(r, &access, env, scope, &mut measured).await
            }
            RegistryKind::Dockerhub => {
                if here(Visibility::Public) && r.pull_credentials.is_none() {
                    measure_pull_limit(r, &access, &mut measured).await;
                }
                if r.used.private_repositories.is_none() && (scope.all() || here(Visibility::Private)) {
                    measure_private_repositories(r, &access, dockerhub_api, &mut measured).await;
                }
            }
            RegistryKind::Registry if (scope.all() || r.limits.storage.is_some()) && r.used.storage.is_none() => {
                measure_catalog(r, &access, &mut measured).await
            }
            _ => {}
        }
    }
    measured
}

fn entry<'a>(measured: &'a mut MeasuredUsage, r: &ResolvedRegistry) -> &'a mut Usage {
    measured.entry(r.id.clone()).or_insert_with(|| Usage { source: UsageSource::Measured, ..Default::default() })
}

/// What RunPod's anonymous cold starts run into on Docker Hub: the limit and window it states
/// on a HEAD (which is not counted as a pull), asked anonymously.
async fn measure_pull_limit(r: &ResolvedRegistry, access: &RegistryAccess, measured: &mut MeasuredUsage) {
    let result = async {
        let client =
            access.anonymous().client(PROBE_REPOSITORY)?.with_scope(&format!("repository:{PROBE_REPOSITORY}:pull"));
        client.authenticate().await?;
        client.rate_limit("latest").await
    }
    .await;
    match result {
        Ok(Some(rate)) => {
            tracing::info!(registry = %r.id, pulls = rate.0, window_secs = rate.1, "measured the anonymous pull limit");
            entry(measured, r).anonymous_pulls = Some(rate);
        }
        Ok(None) => tracing::info!(registry = %r.id, "no anonymous pull limit stated"),
        Err(e) => tracing::warn!(registry = %r.id, "anonymous pull limit not measured: {e}"),
    }
}

/// Docker Hub's private repositories of the namespace, through its API (with a credential).
async fn measure_private_repositories(
    r: &ResolvedRegistry,
    access: &RegistryAccess,
    api: &str,
    measured: &mut MeasuredUsage,
) {
    let Some(cred) = &access.credential else { return };
    match crate::registry::hub::private_repositories(api, &r.namespace, cred, &access.config).await {
        Ok(n) => {
            tracing::info!(registry = %r.id, private_repositories = n, "measured usage");
            entry(measured, r).private_repositories = Some(n);
        }
        Err(e) => tracing::warn!(registry = %r.id, "usage not measured, so it stays unknown: {e}"),
    }
}

/// A self-hosted registry's storage, from its catalog and manifests.
async fn measure_catalog(r: &ResolvedRegistry, access: &RegistryAccess, measured: &mut MeasuredUsage) {
    let result = async {
        let client = access.client("")?.with_scope("registry:catalog:*");
        client.authenticate().await?;
        usage::measure(&client).await
    }
    .await;
    match result {
        Ok(stored) => {
            tracing::info!(registry = %r.id, stored = %stored.bytes, repositories = stored.repositories, "measured usage");
            measured.insert(
                r.id.clone(),
                Usage { storage: Some(stored.bytes), source: UsageSource::Measured, ..Default::default() },
            );
        }
        Err(e) => tracing::warn!(registry = %r.id, "usage not measured, so it stays unknown: {e}"),
    }
}

/// ECR Public's storage through its API (`DescribeRepositories`, `DescribeImages`, and the
/// registry's manifests for shared layers). Without AWS credentials it stays unknown, said only
/// when measuring was asked of every registry.
async fn measure_ecr(
    r: &ResolvedRegistry,
    access: &RegistryAccess,
    env: &Env,
    scope: Measure,
    measured: &mut MeasuredUsage,
) {
    let result = async {
        let api = crate::registry::ecr::Api::from_environment(env, &access.config).await?;
        api.stored(&access.endpoint, access.ca_file.as_deref(), &r.namespace).await
    }
    .await;
    match result {
        Ok(stored) => {
            tracing::info!(registry = %r.id, stored = %stored.bytes, repositories = stored.repositories, images = stored.images, "measured usage");
            entry(measured, r).storage = Some(stored.bytes);
        }
        Err(e @ crate::registry::ecr::EcrError::NoCredentials) if scope.need_credentials() => {
            tracing::debug!(registry = %r.id, "usage not measured: {e}")
        }
        Err(e) => tracing::warn!(registry = %r.id, "usage not measured, so it stays unknown: {e}"),
    }
}
