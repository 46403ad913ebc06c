//! Measures what a registry already stores: walk the catalog, every tag's manifest (and an
//! index's children), and sum each blob (config or layer) once, however many images share it.
//! Read-only: nothing is written.

use std::collections::HashSet;

use super::{Client, RegistryError};
use crate::image::oci::ManifestDoc;
use crate::types::{ByteSize, Digest};

/// What the registry stores, and in how many repositories.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    pub bytes: ByteSize,
    pub repositories: u32,
}

/// Sums the unique blobs under every tag of every repository.
pub async fn measure(client: &Client) -> Result<Stored, RegistryError> {
    let mut blobs = HashSet::new();
    let mut manifests = HashSet::new();
    let mut total = 0u64;
    let repositories = client.repositories().await?;
    for repo in &repositories {
        let mut pending: Vec<String> = client.tags(repo).await?;
        while let Some(reference) = pending.pop() {
            let Some(bytes) = client.manifest(repo, &reference).await? else { continue };
            if !manifests.insert(Digest::of(&bytes)) {
                continue;
            }
            let Ok(doc) = serde_json::from_slice::<ManifestDoc>(&bytes) else { continue };
            for d in doc.config.iter().chain(doc.layers.iter()) {
                if blobs.insert(d.digest.clone()) {
                    total += d.size;
                }
            }
            pending.extend(doc.manifests.iter().map(|m| m.digest.to_string()));
        }
    }
    Ok(Stored { bytes: ByteSize(total), repositories: repositories.len() as u32 })
}
