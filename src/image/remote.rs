//! Images read from a registry (`docker://` sources): manifests fetched and checked against
//! their digests, blobs streamed from the source registry straight into the upload — never to
//! disk, never whole in memory — with `Range` to continue from an offset.

use std::sync::Arc;

use super::{BlobStream, Image, Manifest, RemoteBlobs, oci};
use crate::reference::Reference;
use crate::registry::{Client, RegistryError};
use crate::types::{Digest, Platform};

struct Source {
    client: Client,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Source({}/{})", self.client.registry(), self.client.repository())
    }
}

impl RemoteBlobs for Source {
    fn open<'a>(
        &'a self,
        digest: &'a Digest,
        size: u64,
        offset: u64,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<BlobStream>> + Send + 'a>> {
        Box::pin(async move { self.client.blob_stream(digest, size, offset).await.map_err(std::io::Error::other) })
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
    let mut root = Manifest::from_bytes(bytes, oci::OCI_MANIFEST, None).map_err(|e| refused(e.to_string()))?;
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
            let mut child = Manifest::from_bytes(bytes, &d.media_type, platform).map_err(|e| refused(e.to_string()))?;
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
    let Some(bytes) = client.get_blob(&config.digest, crate::http::MAX_MANIFEST).await? else { return Ok(None) };
    Ok(match serde_json::from_slice::<oci::ConfigDoc>(&bytes) {
        Ok(c) if !c.os.is_empty() && !c.architecture.is_empty() => {
            Some(Platform { os: c.os, architecture: c.architecture, variant: c.variant })
        }
        _ => None,
    })
}
