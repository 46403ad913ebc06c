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
    Ghcr {
        api: Packages,
        package: Package,
        ids: HashMap<Digest, u64>,
    },
    Ecr {
        api: crate::registry::ecr::Api,
        repository: String,
    },
    /// Hub's API deletes tags: an image goes when its last tag does.
    Hub {
        api: crate::registry::hub::Tags,
        tags: HashMap<Digest, Vec<String>>,
    },
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
                    packages::Deleted::Refused(why) => Deleted::Refused(format!("GitHub refused to delete it: {why}")),
                })
            }
            Target::Ecr { api, repository } => {
                Ok(if api.delete_image(repository, digest).await? { Deleted::Done } else { Deleted::Gone })
            }
            Target::Hub { api, tags } => {
                let Some(tags) = tags.get(digest).filter(|t| !t.is_empty()) else {
                    return Ok(Deleted::Refused(
                        "untagged, and Docker Hub's API deletes tags, not manifests: it stays".into(),
                    ));
                };
                let mut any = false;
                for t in tags {
                    any |= api.delete(t).await?;
                }
                Ok(if any { Deleted::Done } else { Deleted::Gone })
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

/// A Docker Hub repository (`NAMESPACE/NAME` is `path`): its tags grouped by digest, and where
/// they are deleted.
pub async fn hub(
    api_url: &str,
    credential: &crate::registry::Credential,
    config: &ClientConfig,
    path: &str,
) -> anyhow::Result<(Vec<Listed>, Target<'static>)> {
    let (namespace, name) = path.split_once('/').unwrap_or(("library", path));
    let api = crate::registry::hub::Tags::sign_in(api_url, (namespace, name), credential, config).await?;
    let mut listed: Vec<Listed> = Vec::new();
    let mut tags: HashMap<Digest, Vec<String>> = HashMap::new();
    for (tag, digest, pushed) in api.list().await? {
        tags.entry(digest.clone()).or_default().push(tag.clone());
        match listed.iter_mut().find(|l| l.digest == digest) {
            Some(l) => {
                l.tags.push(tag);
                // The latest push of any of its tags.
                if pushed > l.created_at {
                    l.created_at = pushed;
                }
            }
            None => listed.push(Listed { digest, tags: vec![tag], created_at: pushed }),
        }
    }
    Ok((listed, Target::Hub { api, tags }))
}
