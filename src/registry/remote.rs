//! Images read from a registry (`docker://` sources): manifests fetched and checked against
//! their digests, blobs streamed from the source registry straight into the upload — never to
//! disk, never whole in memory — with `Range` to continue from an offset.

use std::sync::Arc;

use futures_util::TryStreamExt;
use reqwest::header::RANGE;

use super::{Client, RegistryError};
use crate::image::{BlobStream, Image, Manifest, RemoteBlobs};
use crate::reference::Reference;
use crate::types::{Digest, Platform};

struct Source {
    client: Client,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Source({}/{})", self.client.registry, self.client.repository)
    }
}

impl RemoteBlobs for Source {
    fn open<'a>(
        &'a self,
        digest: &'a Digest,
        offset: u64,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<BlobStream, String>> + Send + 'a>> {
        Box::pin(async move { self.client.blob_stream(digest, offset).await.map_err(|e| e.to_string()) })
    }
}

impl Client {
    /// A blob's bytes from `offset`, as a stream (redirects to object storage are followed,
    /// without the credentials).
    pub async fn blob_stream(&self, digest: &Digest, offset: u64) -> Result<BlobStream, RegistryError> {
        let url = self.url(&format!("v2/{}/blobs/{digest}", self.repository));
        let range = format!("bytes={offset}-");
        let resp = self
            .send(reqwest::Method::GET, url, |r| if offset > 0 { r.header(RANGE, range.as_str()) } else { r })
            .await?;
        if !resp.status().is_success() {
            return Err(self.api_error(resp).await);
        }
        if offset > 0 && resp.status() != reqwest::StatusCode::PARTIAL_CONTENT {
            return Err(RegistryError::Refused {
                registry: self.registry.clone(),
                message: format!("blob {digest}: the source registry cannot serve from byte {offset}"),
            });
        }
        let stream = resp.bytes_stream().map_err(std::io::Error::other);
        Ok(Box::new(tokio_util::io::StreamReader::new(stream)))
    }

    /// Tries to mount `digest` from `from` (a repository on the same registry): true when the
    /// registry mounted it, false when it wants a normal upload (its upload session is closed).
    pub async fn mount(&self, digest: &Digest, from: &str) -> Result<bool, RegistryError> {
        let mut url = self.url(&format!("v2/{}/blobs/uploads/", self.repository));
        url.query_pairs_mut().append_pair("mount", digest.as_str()).append_pair("from", from);
        let resp =
            self.send(reqwest::Method::POST, url.clone(), |r| r.header(reqwest::header::CONTENT_LENGTH, "0")).await?;
        match resp.status().as_u16() {
            201 => Ok(true),
            202 => {
                if let Ok(session) = self.location(&url, &resp) {
                    let _ = self.send(reqwest::Method::DELETE, session, |r| r).await;
                }
                Ok(false)
            }
            _ => Err(self.api_error(resp).await),
        }
    }
}

/// Opens `reference` on its registry: the manifest (or index and its children), checked
/// against the digest when the reference names one.
pub async fn open(reference: &Reference, client: Client) -> Result<Image, RegistryError> {
    let client = client.with_scope(&format!("repository:{}:pull", reference.repository));
    client.authenticate().await?;
    let wanted = reference
        .digest
        .as_ref()
        .map(ToString::to_string)
        .or_else(|| reference.tag.clone())
        .unwrap_or_else(|| "latest".into());
    let refused = |message: String| RegistryError::Refused { registry: reference.host.clone(), message };
    let bytes = client
        .manifest(&reference.repository, &wanted)
        .await?
        .ok_or_else(|| refused(format!("no image {reference} on {}", reference.host)))?;
    if let Some(d) = &reference.digest
        && Digest::of(&bytes) != *d
    {
        return Err(refused(format!("the registry served {} for {d}", Digest::of(&bytes))));
    }
    let mut root = Manifest::from_bytes(bytes, crate::image::OCI_MANIFEST, None).map_err(refused)?;
    let mut children = Vec::new();
    if root.is_index() {
        for d in root.entries() {
            let bytes = client
                .manifest(&reference.repository, d.digest.as_str())
                .await?
                .ok_or_else(|| refused(format!("the index lists {} but the registry does not have it", d.digest)))?;
            if Digest::of(&bytes) != d.digest {
                return Err(refused(format!("manifest {} does not match its digest", d.digest)));
            }
            let platform = d.platform.as_ref().map(Platform::from);
            let mut child = Manifest::from_bytes(bytes, &d.media_type, platform).map_err(refused)?;
            if child.platform.is_none() {
                child.platform = config_platform(&client, &child).await?;
            }
            children.push(child);
        }
    } else {
        root.platform = config_platform(&client, &root).await?;
    }
    let origin = (reference.host.clone(), reference.repository.clone());
    let source = format!("docker://{reference}");
    Ok(Image::from_remote(source, root, children, Arc::new(Source { client }), origin))
}

async fn config_platform(client: &Client, m: &Manifest) -> Result<Option<Platform>, RegistryError> {
    let Some(config) = &m.config else { return Ok(None) };
    let Some(bytes) = client.get_blob(&config.digest, 4 * 1024 * 1024).await? else { return Ok(None) };
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
    Ok(match (s("os"), s("architecture")) {
        (Some(os), Some(architecture)) if !os.is_empty() => Some(Platform { os, architecture, variant: s("variant") }),
        _ => None,
    })
}
