//! `docker-archive:FILE[:REF]`, what `docker save` writes: Docker 25+'s OCI layout inside the
//! tar, or the legacy layout (`manifest.json`, a config file, `<id>/layer.tar` uncompressed).
//! Uncompressed layers are compressed while they are pushed (`compress`): opening the image
//! reads only its manifests and config, and records which layers are to be compressed; the
//! manifests that list them are written once their compressed digests are known (`finish`).

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::json;

use super::compress::Compression;
use super::store::Store;
use super::{DOCKER_MANIFEST, ImageError, Manifest, config_platform};
use crate::types::Digest;

pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// Whether a layer of this media type is an uncompressed tar.
pub fn uncompressed(media_type: &str) -> bool {
    media_type == OCI_LAYER || media_type == DOCKER_LAYER
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Entry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

#[derive(Deserialize)]
struct Rootfs {
    #[serde(default)]
    diff_ids: Vec<Digest>,
}

#[derive(Deserialize)]
struct ConfigDoc {
    rootfs: Rootfs,
}

/// Whether `tag` (from RepoTags, or an OCI name annotation) names `reference` (`app:v1`,
/// `library/app:v1` or `docker.io/library/app:v1` all name the same image).
pub fn same_name(tag: &str, reference: &str) -> bool {
    let norm = |s: &str| {
        let (host, path) = crate::reference::split_host(s);
        format!("{host}/{path}")
    };
    tag == reference || norm(tag) == norm(reference)
}

/// Reads a legacy `docker save` archive into a manifest that lists its layers as they are in
/// the archive (uncompressed, by diff_id): a Docker v2 manifest, or an OCI one when the layers
/// are to become zstd (which only OCI manifests carry; Docker's config is a valid OCI config).
pub(super) fn open_legacy(
    store: &mut Store,
    reference: Option<&str>,
    compression: Option<Compression>,
) -> Result<Manifest, ImageError> {
    let entries: Vec<Entry> = serde_json::from_slice(&store.read_path("manifest.json", super::MAX_METADATA)?)
        .map_err(|e| store.layout_error(format!("manifest.json is not docker save's manifest: {e}")))?;
    let tags = |e: &Entry| e.repo_tags.clone().unwrap_or_default();
    let entry = match reference {
        Some(r) => entries.iter().find(|e| tags(e).iter().any(|t| same_name(t, r))).ok_or_else(|| {
            let all: Vec<String> = entries.iter().flat_map(tags).collect();
            store.layout_error(format!("no image tagged {r:?} in the archive (tags there: {})", all.join(", ")))
        })?,
        None => match entries.as_slice() {
            [one] => one,
            [] => return Err(store.layout_error("manifest.json lists no image".into())),
            many => {
                let all: Vec<String> = many.iter().flat_map(tags).collect();
                return Err(store.layout_error(format!(
                    "the archive holds {} images: name one as FILE:REF (tags: {})",
                    many.len(),
                    all.join(", ")
                )));
            }
        },
    };
    let config = store.read_path(&entry.config, super::MAX_METADATA)?;
    let config_digest = Digest::of(&config);
    store.alias(config_digest.clone(), entry.config.clone());
    let doc: ConfigDoc = serde_json::from_slice(&config)
        .map_err(|e| store.layout_error(format!("{} is not an image config: {e}", entry.config)))?;
    if doc.rootfs.diff_ids.len() != entry.layers.len() {
        return Err(store.layout_error(format!(
            "the config lists {} layers, manifest.json {}",
            doc.rootfs.diff_ids.len(),
            entry.layers.len()
        )));
    }
    let zstd = compression.is_some_and(|c| c.zstd());
    let (manifest_type, config_type, layer_type) = if zstd {
        (super::OCI_MANIFEST, "application/vnd.oci.image.config.v1+json", OCI_LAYER)
    } else {
        (DOCKER_MANIFEST, DOCKER_CONFIG, DOCKER_LAYER)
    };
    let mut layers = Vec::new();
    for (path, diff_id) in entry.layers.iter().zip(&doc.rootfs.diff_ids) {
        store.alias(diff_id.clone(), path.clone());
        let size = store.blob_size(diff_id)?;
        layers.push(json!({"mediaType": layer_type, "size": size, "digest": diff_id.as_str()}));
    }
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": manifest_type,
        "config": {"mediaType": config_type, "size": config.len(), "digest": config_digest.as_str()},
        "layers": layers
    })
    .to_string()
    .into_bytes();
    let mut m = Manifest::parse(Digest::of(&manifest), manifest, manifest_type, None)
        .map_err(|e| store.layout_error(e.to_string()))?;
    m.platform = config_platform(store, &m)?;
    Ok(m)
}

/// The uncompressed layers of these manifests, by diff_id, with their sizes: what a push
/// compresses.
pub(super) fn uncompressed_layers(manifests: &[&Manifest]) -> Vec<(Digest, u64)> {
    let mut seen = std::collections::HashSet::new();
    manifests
        .iter()
        .flat_map(|m| m.layers.iter())
        .filter(|l| uncompressed(&l.media_type) && seen.insert(l.digest.clone()))
        .map(|l| (l.digest.clone(), l.size))
        .collect()
}

/// The manifests as pushed: every uncompressed layer replaced by its compressed form
/// (`compressed`: diff_id → digest and size), an index's entries pointed at the rewritten
/// manifests. An index none of whose images changed keeps its bytes (and its digest).
pub(super) fn finish(
    root: &Manifest,
    children: &[Manifest],
    compression: Compression,
    compressed: &HashMap<Digest, (Digest, u64)>,
) -> Result<(Manifest, Vec<Manifest>), String> {
    if !root.is_index() {
        return Ok((substitute(root, compression, compressed)?, Vec::new()));
    }
    let mut index: serde_json::Value =
        serde_json::from_slice(&root.bytes).map_err(|e| format!("index {} is not JSON: {e}", root.digest))?;
    let mut rewritten = Vec::new();
    let mut changed = false;
    for child in children {
        let after = substitute(child, compression, compressed)?;
        if after.digest != child.digest {
            changed = true;
            rewrite_entries(&mut index, &child.digest, &after);
        }
        rewritten.push(after);
    }
    if !changed {
        return Ok((root.clone(), rewritten));
    }
    let bytes = serde_json::to_vec(&index).map_err(|e| e.to_string())?;
    let root = Manifest::parse(Digest::of(&bytes), bytes, &root.media_type, root.platform.clone())
        .map_err(|e| e.to_string())?;
    Ok((root, rewritten))
}

/// Points the index's entries for manifest `before` at `after`, and the attestation entries
/// that refer to it (Docker's `vnd.docker.reference.digest`) too.
fn rewrite_entries(index: &mut serde_json::Value, before: &Digest, after: &Manifest) {
    let Some(entries) = index.get_mut("manifests").and_then(|m| m.as_array_mut()) else { return };
    for e in entries.iter_mut() {
        if e.get("digest").and_then(|d| d.as_str()) == Some(before.as_str()) {
            e["digest"] = json!(after.digest.as_str());
            e["size"] = json!(after.bytes.len());
            e["mediaType"] = json!(after.media_type);
        }
        let refers = e.pointer("/annotations/vnd.docker.reference.digest").and_then(|d| d.as_str());
        if refers == Some(before.as_str()) {
            e["annotations"]["vnd.docker.reference.digest"] = json!(after.digest.as_str());
        }
    }
}

/// One image manifest with its uncompressed layers replaced (unchanged when it has none).
fn substitute(
    m: &Manifest,
    compression: Compression,
    compressed: &HashMap<Digest, (Digest, u64)>,
) -> Result<Manifest, String> {
    if !m.layers.iter().any(|l| uncompressed(&l.media_type)) {
        return Ok(m.clone());
    }
    let zstd = compression.zstd();
    // zstd layers exist only in OCI manifests; Docker's config JSON is a valid OCI config.
    let media_type = if zstd { super::OCI_MANIFEST.to_string() } else { m.media_type.clone() };
    let mut doc: serde_json::Value =
        serde_json::from_slice(&m.bytes).map_err(|e| format!("manifest {} is not JSON: {e}", m.digest))?;
    for (i, layer) in m.layers.iter().enumerate().filter(|(_, l)| uncompressed(&l.media_type)) {
        let (digest, size) = compressed
            .get(&layer.digest)
            .ok_or_else(|| format!("layer {} of manifest {} was not compressed", layer.digest, m.digest))?;
        let layer_type = match (zstd, media_type == DOCKER_MANIFEST) {
            (true, _) => OCI_LAYER_ZSTD,
            (false, true) => DOCKER_LAYER_GZIP,
            (false, false) => OCI_LAYER_GZIP,
        };
        doc["layers"][i]["mediaType"] = json!(layer_type);
        doc["layers"][i]["digest"] = json!(digest.as_str());
        doc["layers"][i]["size"] = json!(size);
    }
    if zstd && m.media_type == DOCKER_MANIFEST {
        doc["mediaType"] = json!(super::OCI_MANIFEST);
        doc["config"]["mediaType"] = json!("application/vnd.oci.image.config.v1+json");
    }
    let bytes = serde_json::to_vec(&doc).map_err(|e| e.to_string())?;
    Manifest::parse(Digest::of(&bytes), bytes, &media_type, m.platform.clone()).map_err(|e| e.to_string())
}
