//! Manifests: read (bounded to distribution's 4 MiB), resolve a tag, put (checking the digest
//! the registry reports), and the anonymous-pull probe.

use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::{Method, StatusCode};

use super::{Client, RegistryError};
use crate::image::oci;
use crate::types::Digest;

impl Client {
    /// A manifest's bytes, by tag or digest, in any of the image media types (`None`: absent).
    pub async fn manifest(&self, repository: &str, reference: &str) -> Result<Option<Vec<u8>>, RegistryError> {
        let url = self.url(&format!("v2/{repository}/manifests/{reference}"));
        let resp = self.send(Method::GET, url, |r| r.header(ACCEPT, oci::MANIFEST_ACCEPT)).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(self.api_error(resp).await);
        }
        let bytes = crate::http::body_limited(resp, crate::http::MAX_MANIFEST)
            .await
            .map_err(|e| self.refused(format!("manifest {reference}: {e}")))?;
        Ok(Some(bytes))
    }

    /// The descriptor (digest, media type, size) of what `reference` points at; `None` when absent.
    pub async fn resolve(&self, reference: &str) -> Result<Option<oci::Descriptor>, RegistryError> {
        let Some(bytes) = self.manifest(&self.repository, reference).await? else { return Ok(None) };
        let media_type = oci::media_type_of(&bytes).unwrap_or_else(|| oci::OCI_MANIFEST.to_string());
        Ok(Some(oci::Descriptor {
            media_type,
            digest: Digest::of(&bytes),
            size: bytes.len() as u64,
            annotations: None,
            platform: None,
        }))
    }

    /// Deletes the manifest `digest` of the client's repository (`DELETE
    /// /v2/<name>/manifests/<digest>`; distribution removes the tags that point at it too).
    /// `Ok(false)`: it was not there. A registry with deletes disabled answers `405` or
    /// `UNSUPPORTED`: an error that says how to enable them.
    pub async fn delete_manifest(&self, digest: &Digest) -> Result<bool, RegistryError> {
        let url = self.url(&format!("v2/{}/manifests/{digest}", self.repository));
        let resp = self.send(Method::DELETE, url, |r| r).await?;
        let status = resp.status().as_u16();
        match status {
            200..=299 => Ok(true),
            405 => Err(self.refused(format!(
                "DELETE of {digest} answered 405: this registry does not allow deletes (distribution: storage.delete.enabled: true in its configuration, then restart it)"
            ))),
            _ => match self.api_error(resp).await {
                RegistryError::Api { code: super::ErrorCode::Unsupported, .. } => Err(self.refused(format!(
                    "DELETE of {digest} is UNSUPPORTED here (distribution: storage.delete.enabled: true in its configuration)"
                ))),
                // Not there (MANIFEST_UNKNOWN, or no body): deleted already.
                _ if status == 404 => Ok(false),
                e => Err(e),
            },
        }
    }

    /// Whether `reference` can be pulled with no credentials at all: an anonymous token (when
    /// the registry uses them), then a HEAD of the manifest. Works on every registry and needs
    /// no API permission. The client must have been made without credentials.
    pub async fn pullable_anonymously(&self, reference: &str) -> Result<bool, RegistryError> {
        match self.authenticate().await {
            Ok(()) => {}
            Err(RegistryError::Unauthorized { .. }) => return Ok(false),
            Err(e) => return Err(e),
        }
        let url = self.url(&format!("v2/{}/manifests/{reference}", self.repository));
        match self.send(Method::HEAD, url, |r| r.header(ACCEPT, oci::MANIFEST_ACCEPT)).await {
            Ok(resp) if resp.status().is_success() => Ok(true),
            Ok(resp) if matches!(resp.status().as_u16(), 401 | 403 | 404) => Ok(false),
            Ok(resp) => Err(self.api_error(resp).await),
            Err(RegistryError::Unauthorized { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Docker Hub's pull limit from a HEAD on `reference` (which does not count as a pull):
    /// the `ratelimit-limit` header, `100;w=21600` → (100 pulls, 21600 s). `None` when the
    /// registry sends none (no limit for this client).
    pub async fn rate_limit(&self, reference: &str) -> Result<Option<(u32, u32)>, RegistryError> {
        let url = self.url(&format!("v2/{}/manifests/{reference}", self.repository));
        let resp = self.send(Method::HEAD, url, |r| r.header(ACCEPT, oci::MANIFEST_ACCEPT)).await?;
        Ok(resp.headers().get("ratelimit-limit").and_then(|v| v.to_str().ok()).and_then(parse_rate_limit))
    }

    /// Whether the repository has the manifest `digest`: a HEAD by digest (HEADs do not count
    /// as pulls on Docker Hub). A reference by digest is content-addressed, so a 200 is enough.
    pub async fn has_manifest(&self, digest: &Digest) -> Result<bool, RegistryError> {
        let url = self.url(&format!("v2/{}/manifests/{digest}", self.repository));
        let resp = self.send(Method::HEAD, url, |r| r.header(ACCEPT, oci::MANIFEST_ACCEPT)).await?;
        match resp.status().as_u16() {
            200..=299 => Ok(true),
            404 => Ok(false),
            _ => Err(self.api_error(resp).await),
        }
    }

    /// Puts a manifest under `reference` (a tag or its digest) and checks the digest the
    /// registry computed, when it says.
    pub async fn put_manifest(&self, reference: &str, media_type: &str, bytes: &[u8]) -> Result<Digest, RegistryError> {
        self.put_manifest_with(reference, media_type, bytes, true).await
    }

    /// `put_manifest` in one try, never sent again late: for a list other writers rewrite,
    /// where a PUT built from an old read must not land after theirs (the caller reads again).
    pub async fn put_manifest_once(
        &self,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<Digest, RegistryError> {
        self.put_manifest_with(reference, media_type, bytes, false).await
    }

    async fn put_manifest_with(
        &self,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
        retry: bool,
    ) -> Result<Digest, RegistryError> {
        let digest = Digest::of(bytes);
        let url = self.url(&format!("v2/{}/manifests/{reference}", self.repository));
        let body = bytes.to_vec();
        let build = |r: reqwest::RequestBuilder| r.header(CONTENT_TYPE, media_type).body(body.clone());
        let resp = if retry {
            self.send(Method::PUT, url, build).await?
        } else {
            let resp = self.attempt(&Method::PUT, &url, &build, true).await?;
            if resp.status() == reqwest::StatusCode::UNAUTHORIZED {
                self.authenticate().await?;
                self.attempt(&Method::PUT, &url, &build, true).await?
            } else {
                resp
            }
        };
        if !resp.status().is_success() {
            return Err(self.api_error(resp).await);
        }
        if let Some(theirs) = resp.headers().get("docker-content-digest").and_then(|v| v.to_str().ok())
            && theirs != digest.as_str()
        {
            return Err(self.refused(format!("stored manifest {reference} as {theirs}, but it hashes to {digest}")));
        }
        Ok(digest)
    }
}

/// `100;w=21600` (or `100`, a window Docker Hub then leaves unsaid: 6 h) → (100, 21600).
pub fn parse_rate_limit(v: &str) -> Option<(u32, u32)> {
    let mut parts = v.split(';').map(str::trim);
    let n = parts.next()?.parse().ok()?;
    let w = parts.find_map(|p| p.strip_prefix("w=")).and_then(|w| w.parse().ok()).unwrap_or(21_600);
    Some((n, w))
}

#[cfg(test)]
mod rate_limit_tests {
    #[test]
    fn docker_hubs_ratelimit_header() {
        assert_eq!(super::parse_rate_limit("100;w=21600"), Some((100, 21_600)));
        assert_eq!(super::parse_rate_limit("200; w=3600"), Some((200, 3_600)));
        assert_eq!(super::parse_rate_limit("100"), Some((100, 21_600)));
        assert_eq!(super::parse_rate_limit("lots"), None);
    }
}
