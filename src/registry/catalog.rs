//! The catalog and tag lists (usage measurement), following `Link` pagination.

use reqwest::{Method, StatusCode};

use super::{Client, RegistryError};
use crate::http::{MAX_SMALL_BODY, json_limited};

impl Client {
    /// Every repository in the registry's catalog.
    pub async fn repositories(&self) -> Result<Vec<String>, RegistryError> {
        #[derive(serde::Deserialize)]
        struct Catalog {
            #[serde(default)]
            repositories: Vec<String>,
        }
        let mut out = Vec::new();
        let mut url = self.url("v2/_catalog?n=1000");
        loop {
            let resp = self.send(Method::GET, url.clone(), |r| r).await?;
            if !resp.status().is_success() {
                return Err(self.api_error(resp).await);
            }
            let next = crate::http::link_next(&url, resp.headers());
            let page: Catalog =
                json_limited(resp, 4 * MAX_SMALL_BODY).await.map_err(|e| self.refused(e.to_string()))?;
            out.extend(page.repositories);
            match next {
                Some(n) => url = n,
                None => return Ok(out),
            }
        }
    }

    /// The tags of `repository` (empty when it has none).
    pub async fn tags(&self, repository: &str) -> Result<Vec<String>, RegistryError> {
        #[derive(serde::Deserialize)]
        struct Tags {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        // Registries that page (`Link: <…>; rel="next"`) are followed, up to 100 pages.
        let mut url = self.url(&format!("v2/{repository}/tags/list"));
        let mut out = Vec::new();
        for _ in 0..100 {
            let resp = self.send(Method::GET, url.clone(), |r| r).await?;
            if resp.status() == StatusCode::NOT_FOUND {
                return Ok(out);
            }
            if !resp.status().is_success() {
                return Err(self.api_error(resp).await);
            }
            // Credentials go to the registry's own origin only.
            let next = crate::http::link_next(&url, resp.headers()).filter(|n| n.origin() == url.origin());
            let t: Tags = json_limited(resp, 4 * MAX_SMALL_BODY).await.map_err(|e| self.refused(e.to_string()))?;
            out.extend(t.tags.unwrap_or_default());
            match next {
                Some(n) => url = n,
                None => return Ok(out),
            }
        }
        Err(self.refused(format!("{repository}: more than 100 pages of tags")))
    }

    pub(super) fn refused(&self, message: String) -> RegistryError {
        RegistryError::Refused { registry: self.registry.clone(), message }
    }
}
