//! GitHub Packages' REST API for container packages (GHCR), as prune uses it: the versions of
//! a package with their tags and creation times (paginated), and deleting one by id, for an
//! organisation's or a user's package. GHCR has no registry-API delete.

use reqwest::Method;
use serde_json::Value;
use url::Url;

use crate::http::ClientConfig;
use crate::types::{Digest, Secret};

/// Pages of 100 versions read at most.
const MAX_PAGES: usize = 100;

#[derive(Debug, thiserror::Error)]
#[error("GitHub Packages: {0}")]
pub struct PackagesError(pub String);

/// A package version: a manifest, by digest.
#[derive(Debug, Clone)]
pub struct Version {
    pub id: u64,
    pub digest: Digest,
    pub created_at: Option<String>,
    pub tags: Vec<String>,
}

/// What a delete did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deleted {
    Done,
    Gone,
    /// GitHub refuses to delete a package's last tagged version (400): kept, with its message.
    Refused(String),
}

pub struct Packages {
    http: reqwest::Client,
    base: Url,
    token: Secret,
    config: ClientConfig,
}

/// `orgs/OWNER` or `users/OWNER`: where the package is.
#[derive(Debug, Clone)]
pub struct Package {
    owner_path: String,
    /// The package name, `/` encoded as `%2F`.
    name: String,
}

impl Packages {
    pub fn new(api_url: &str, token: Secret, config: &ClientConfig) -> Result<Packages, PackagesError> {
        let base = Url::parse(&format!("{}/", api_url.trim_end_matches('/')))
            .map_err(|e| PackagesError(format!("GITHUB_API_URL {api_url:?}: {e}")))?;
        let http = config.http(None).map_err(|e| PackagesError(e.to_string()))?;
        Ok(Packages { http, base, token, config: *config })
    }

    async fn call(&self, method: Method, url: &Url) -> Result<(u16, Value, Option<Url>), PackagesError> {
        let (status, value, next) = super::rest(&self.http, (&self.token, &self.config.retry()), method, url, None)
            .await
            .map_err(|e| PackagesError(e.to_string()))?;
        // The token goes to the API's own origin only.
        Ok((status.as_u16(), value, next.filter(|n| n.origin() == self.base.origin())))
    }

    fn refused(what: &str, status: u16, v: &Value) -> PackagesError {
        let message = v.get("message").and_then(Value::as_str).unwrap_or("no message");
        let fix = match status {
            401 | 403 => {
                ": the token needs to read and delete packages (GITHUB_TOKEN: permissions packages: write, and the repository given admin access to the package; a classic token: read:packages and delete:packages)"
            }
            _ => "",
        };
        PackagesError(format!("{what}: {message} ({status}){fix}"))
    }

    /// The versions of container package `name` (`REPO/PATH` under `owner`), trying the
    /// organisation's packages, then the user's.
    pub async fn versions(&self, owner: &str, name: &str) -> Result<(Package, Vec<Version>), PackagesError> {
        let encoded = name.replace('/', "%2F");
        for kind in ["orgs", "users"] {
            let package = Package { owner_path: format!("{kind}/{owner}"), name: encoded.clone() };
            let first = self.url(&package, "versions?per_page=100")?;
            let (status, page, mut next) = self.call(Method::GET, &first).await?;
            if status == 404 {
                continue;
            }
            if status != 200 {
                return Err(Self::refused(&format!("listing {owner}/{name}'s versions"), status, &page));
            }
            let mut out = parse_page(&page)?;
            for _ in 1..MAX_PAGES {
                let Some(url) = next.take() else { break };
                let (status, page, n) = self.call(Method::GET, &url).await?;
                if status != 200 {
                    return Err(Self::refused(&format!("listing {owner}/{name}'s versions"), status, &page));
                }
                out.extend(parse_page(&page)?);
                next = n;
            }
            if next.is_some() {
                return Err(PackagesError(format!(
                    "{owner}/{name} has more than {} versions: not pruned",
                    MAX_PAGES * 100
                )));
            }
            return Ok((package, out));
        }
        Err(PackagesError(format!(
            "no container package {name} of {owner} (as an organisation or a user) that this token can see"
        )))
    }

    /// Deletes version `id` of `package`.
    pub async fn delete(&self, package: &Package, id: u64) -> Result<Deleted, PackagesError> {
        let url = self.url(package, &format!("versions/{id}"))?;
        let (status, v, _) = self.call(Method::DELETE, &url).await?;
        match status {
            200..=299 => Ok(Deleted::Done),
            404 => Ok(Deleted::Gone),
            400 => Ok(Deleted::Refused(v.get("message").and_then(Value::as_str).unwrap_or("refused").to_string())),
            _ => Err(Self::refused(&format!("deleting version {id}"), status, &v)),
        }
    }

    fn url(&self, p: &Package, rest: &str) -> Result<Url, PackagesError> {
        let path = format!("{}/packages/container/{}/{rest}", p.owner_path, p.name);
        self.base.join(&path).map_err(|e| PackagesError(format!("{path}: {e}")))
    }
}

fn parse_page(page: &Value) -> Result<Vec<Version>, PackagesError> {
    let list = page.as_array().ok_or_else(|| PackagesError("a page of versions is not a list".into()))?;
    Ok(list
        .iter()
        .filter_map(|v| {
            Some(Version {
                id: v.get("id")?.as_u64()?,
                digest: v.get("name")?.as_str()?.parse().ok()?,
                created_at: v.get("created_at").and_then(Value::as_str).map(str::to_string),
                tags: v
                    .pointer("/metadata/container/tags")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|t| t.as_str().map(str::to_string))
                    .collect(),
            })
        })
        .collect())
}
