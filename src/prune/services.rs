//! Where a repository's manifests are listed and deleted when the registry API cannot: GHCR
//! (GitHub's Packages API: versions by id) and ECR Public (`DescribeImages`,
//! `BatchDeleteImage`); an OCI distribution registry is its own (`DELETE` by digest).

use std::collections::HashMap;

use super::{Deleted, Deleter, Listed};
use crate::github::packages::{self, Package, Packages};
use crate::http::ClientConfig;
use crate::registry::Client;
use crate::types::{Digest, Secret};

/// Where one repository's deletes go.
pub enum Target<'a> {
    Registry(&'a Client),
    Ghcr { api: Packages, package: Package, ids: HashMap<Digest, u64> },
    Ecr { api: crate::registry::ecr::Api, repository: String },
}

impl Deleter for Target<'_> {
    async fn delete(&self, digest: &Digest) -> anyhow::Result<Deleted> {
        match self {
            Target::Registry(client) => client.delete(digest).await,
            Target::Ghcr { api, package, ids } => {
                let Some(id) = ids.get(digest) else { return Ok(Deleted::Gone) };
                Ok(match api.delete(package, *id).await? {
                    packages::Deleted::Done => Deleted::Done,
                    packages::Deleted::Gone => Deleted::Gone,
                    packages::Deleted::Refused(why) => Deleted::Refused(why),
                })
            }
            Target::Ecr { api, repository } => {
                Ok(if api.delete_image(repository, digest).await? { Deleted::Done } else { Deleted::Gone })
            }
        }
    }
}

/// A GHCR package (`OWNER/NAME` is `path`): its versions, and where they are deleted.
pub async fn ghcr(
    api_url: &str,
    token: Secret,
    config: &ClientConfig,
    path: &str,
) -> anyhow::Result<(Vec<Listed>, Target<'static>)> {
    let api = Packages::new(api_url, token, config)?;
    let (owner, name) = path.split_once('/').unwrap_or((path, ""));
    let (package, versions) = api.versions(owner, name).await?;
    let ids = versions.iter().map(|v| (v.digest.clone(), v.id)).collect();
    let listed =
        versions.into_iter().map(|v| Listed { digest: v.digest, tags: v.tags, created_at: v.created_at }).collect();
    Ok((listed, Target::Ghcr { api, package, ids }))
}

/// An ECR Public repository (`ALIAS/NAME` is `path`): its images, and where they are deleted.
pub async fn ecr(
    env: &crate::credentials::Env,
    config: &ClientConfig,
    path: &str,
) -> anyhow::Result<(Vec<Listed>, Target<'static>)> {
    let api = crate::registry::ecr::Api::from_environment(env, config).await?;
    let repository = path.split_once('/').map_or(path, |(_, r)| r).to_string();
    let listed = api.images(&repository).await?;
    Ok((listed, Target::Ecr { api, repository }))
}
