//! What a push would write (`--dry-run`), found with read-only requests.

use serde::Serialize;

use super::*;

/// What a push would write, found with read-only requests (`--dry-run`).
#[derive(Debug, Clone, Serialize)]
pub struct WouldWrite {
    pub registry: String,
    pub repository: String,
    /// The manifest's digest; `None` for a docker source with layers to compress that the
    /// repository does not hold yet (known once they are compressed).
    pub digest: Option<Digest>,
    /// Blobs the repository lacks: they would be uploaded.
    pub blobs_to_send: Vec<Digest>,
    pub bytes_to_send: Size,
    pub blobs_present: usize,
    /// Layers Docker saved uncompressed (by diff_id) that would be compressed and uploaded.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub layers_to_compress: Vec<Digest>,
    /// Layers Docker saved uncompressed that an image in the repository already holds
    /// compressed: neither compressed nor sent (counted in `blobs_present` when there).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub layers_reused: Vec<layers::LayerReuse>,
    /// Manifests put by digest (an index's children), then every `repository:tag`.
    pub manifests: Vec<String>,
    pub references: Vec<String>,
}

/// Authenticates and asks, blob by blob (HEAD), what the repository already has. Writes nothing.
pub async fn would_write(image: &Image, dest: &Destination) -> Result<WouldWrite, RegistryError> {
    // A dry run refuses what the push would refuse.
    check_source_sizes(image)?;
    let client = dest.access.client(&dest.path)?;
    client.authenticate().await?;
    let repository = format!("{}/{}", dest.access.endpoint.host, dest.path);
    let found = match &image.deferred {
        Some(deferred) => layers::learn_with_tags(&client, deferred, &dest.tags).await,
        None => layers::Found::new(),
    };
    let layers_reused = match &image.deferred {
        Some(deferred) => {
            layers::reuse_list(deferred, &found).into_iter().filter(|l| l.reused_from.is_some()).collect()
        }
        None => Vec::new(),
    };
    let learnt = layers::forms(found);
    // A layer to compress is asked about by the compressed digest an image here gives it.
    let deferred = |d: &Descriptor| image.deferred.as_ref().filter(|x| x.has(&d.digest));
    let blobs: Vec<(Descriptor, bool)> = image
        .blobs()
        .into_iter()
        .map(|d| match deferred(d) {
            Some(_) => match learnt.get(&d.digest) {
                Some((digest, size)) => (Descriptor { digest: digest.clone(), size: *size, ..d.clone() }, false),
                None => (d.clone(), true),
            },
            None => (d.clone(), false),
        })
        .collect();
    let (root, children) = match image.finish(&learnt) {
        Ok((root, children)) => (Some(root), children),
        Err(_) => (None, image.children.clone()),
    };
    let mut out = WouldWrite {
        registry: dest.registry_id.clone(),
        digest: root.map(|r| r.digest),
        blobs_to_send: Vec::new(),
        bytes_to_send: Size(0),
        blobs_present: 0,
        layers_to_compress: Vec::new(),
        layers_reused,
        manifests: children.iter().map(|c| c.digest.to_string()).collect(),
        references: dest
            .tags
            .iter()
            .map(|t| format!("{repository}{}{t}", if t.starts_with("sha256:") { '@' } else { ':' }))
            .collect(),
        repository,
    };
    let client = &client;
    let present: Vec<bool> =
        futures_util::stream::iter(blobs.iter().map(|(d, compress)| async move {
            if *compress { Ok(false) } else { client.blob_exists(&d.digest).await }
        }))
        .buffered(dest.access.config.concurrency.max(1))
        .try_collect()
        .await?;
    // A layer taken from an image here whose blob turns out missing is to be sent, not reused.
    let missing: Vec<Digest> =
        blobs.iter().zip(&present).filter(|(_, here)| !**here).map(|((d, _), _)| d.digest.clone()).collect();
    out.layers_reused.retain(|l| l.digest.as_ref().is_some_and(|d| !missing.contains(d)));
    for ((d, compress), here) in blobs.into_iter().zip(present) {
        if compress {
            out.layers_to_compress.push(d.digest.clone());
        } else if here {
            out.blobs_present += 1;
        } else {
            out.blobs_to_send.push(d.digest.clone());
            out.bytes_to_send.0 += d.size;
        }
    }
    Ok(out)
}
