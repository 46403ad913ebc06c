//! The OCI data model every stage uses: media types, descriptors, image manifests and
//! indexes (kept as the exact bytes read, since re-serialising would change the digest), and
//! the config's platform. Sources, the registry client, signing and usage measurement read
//! manifests through these types only.

use serde::{Deserialize, Serialize};

use crate::types::{Digest, Platform};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_EMPTY_CONFIG: &str = "application/vnd.oci.empty.v1+json";

/// Every manifest media type `publish` reads, for `Accept` (distribution serves OCI manifests
/// only when asked for them).
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

/// A manifest that is not one `publish` can push. Never quotes the document's bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest {digest} is not valid JSON (line {line}, column {column})")]
    NotJson { digest: Digest, line: usize, column: usize },
    #[error("manifest {digest} has media type {media_type:?}, not an image manifest or index")]
    NotImage { digest: Digest, media_type: String },
    #[error("manifest {digest} has no config")]
    NoConfig { digest: Digest },
    #[error("manifest {digest}: {what}")]
    Descriptor { digest: Digest, what: String },
}

/// The largest blob a descriptor may claim: far above any registry's layer limit (GHCR and
/// ECR Public stop at 10 GB), far below what would overflow a sum of sizes.
pub const MAX_BLOB: u64 = 1 << 40;

/// A media type as RFC 6838 writes one (`type/subtype`, restricted characters): what goes
/// into `Content-Type` and `Accept` headers must not carry anything else.
pub fn valid_media_type(m: &str) -> bool {
    let part = |p: &str| {
        !p.is_empty()
            && p.len() <= 127
            && p.as_bytes()[0].is_ascii_alphanumeric()
            && p.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b))
    };
    matches!(m.split_once('/'), Some((t, sub)) if part(t) && part(sub))
}

/// Whether a media type is a layer's (OCI or Docker), which a config can never be.
pub fn is_layer(m: &str) -> bool {
    m.starts_with("application/vnd.oci.image.layer.") || m.starts_with("application/vnd.docker.image.rootfs.")
}

fn check_descriptor(digest: &Digest, d: &Descriptor) -> Result<(), ManifestError> {
    let what = if !valid_media_type(&d.media_type) {
        "a descriptor's media type is not a media type".to_string()
    } else if d.size > MAX_BLOB {
        format!("descriptor {} claims {} bytes, more than the {MAX_BLOB} a blob may have", d.digest, d.size)
    } else {
        return Ok(());
    };
    Err(ManifestError::Descriptor { digest: digest.clone(), what })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_are_checked_before_they_reach_a_header() {
        assert!(valid_media_type(OCI_MANIFEST));
        assert!(valid_media_type("application/vnd.oci.image.layer.v1.tar+zstd"));
        assert!(!valid_media_type("application/json\r\nX-Injected: 1"));
        assert!(!valid_media_type("text"));
        assert!(!valid_media_type(""));
    }

    fn manifest(config_type: &str, layer_size: u64) -> Vec<u8> {
        serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": config_type, "digest": format!("sha256:{}", "a".repeat(64)), "size": 2},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": format!("sha256:{}", "b".repeat(64)), "size": layer_size}]
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn a_config_with_a_layer_type_or_an_absurd_size_is_refused() {
        assert!(Manifest::from_bytes(manifest("application/vnd.oci.image.config.v1+json", 10), "", None).is_ok());
        let e = Manifest::from_bytes(manifest("application/vnd.oci.image.layer.v1.tar", 10), "", None).unwrap_err();
        assert!(e.to_string().contains("layer media type"), "{e}");
        let e =
            Manifest::from_bytes(manifest("application/vnd.oci.image.config.v1+json", 1 << 60), "", None).unwrap_err();
        assert!(e.to_string().contains("claims"), "{e}");
    }
}

/// The `mediaType` a manifest document names, if any.
pub fn media_type_of(bytes: &[u8]) -> Option<String> {
    serde_json::from_slice::<ManifestDoc>(bytes).ok()?.media_type
}

/// An OCI descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<OciPlatform>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OciPlatform {
    pub os: String,
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl From<&OciPlatform> for Platform {
    fn from(p: &OciPlatform) -> Platform {
        Platform { os: p.os.clone(), architecture: p.architecture.clone(), variant: p.variant.clone() }
    }
}

/// The fields of an image manifest or index that `publish` uses.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestDoc {
    #[serde(default)]
    pub media_type: Option<String>,
    #[serde(default)]
    pub config: Option<Descriptor>,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
pub struct ConfigDoc {
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub variant: Option<String>,
}

/// A manifest, exactly as its bytes were read (pushing re-serialised JSON would change the digest).
#[derive(Debug, Clone)]
pub struct Manifest {
    pub digest: Digest,
    pub media_type: String,
    pub bytes: Vec<u8>,
    /// For an image manifest: its platform, from the index entry or the config.
    pub platform: Option<Platform>,
    pub config: Option<Descriptor>,
    pub layers: Vec<Descriptor>,
}

impl Manifest {
    pub fn is_index(&self) -> bool {
        self.media_type == OCI_INDEX || self.media_type == DOCKER_LIST
    }
}

impl Manifest {
    /// A manifest from its bytes, checked to be an image manifest (with a config) or an index;
    /// `media_type` when the document does not say (the descriptor's, or the registry's).
    pub fn parse(
        digest: Digest,
        bytes: Vec<u8>,
        media_type: &str,
        platform: Option<Platform>,
    ) -> Result<Manifest, ManifestError> {
        let doc: ManifestDoc = serde_json::from_slice(&bytes).map_err(|e| ManifestError::NotJson {
            digest: digest.clone(),
            line: e.line(),
            column: e.column(),
        })?;
        let media_type = doc.media_type.clone().unwrap_or_else(|| media_type.to_string());
        if ![OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST].contains(&media_type.as_str()) {
            return Err(ManifestError::NotImage { digest, media_type });
        }
        if (media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST) && doc.config.is_none() {
            return Err(ManifestError::NoConfig { digest });
        }
        for d in doc.config.iter().chain(&doc.layers).chain(&doc.manifests) {
            check_descriptor(&digest, d)?;
        }
        if let Some(c) = &doc.config
            && is_layer(&c.media_type)
        {
            return Err(ManifestError::Descriptor {
                digest,
                what: format!("its config has the layer media type {:?}", c.media_type),
            });
        }
        Ok(Manifest { digest, media_type, bytes, platform, config: doc.config, layers: doc.layers })
    }

    /// A manifest fetched from a registry: its digest is what its bytes hash to.
    pub fn from_bytes(bytes: Vec<u8>, media_type: &str, platform: Option<Platform>) -> Result<Manifest, ManifestError> {
        Self::parse(Digest::of(&bytes), bytes, media_type, platform)
    }

    /// The manifests an index lists (empty for an image manifest).
    pub fn entries(&self) -> Vec<Descriptor> {
        serde_json::from_slice::<ManifestDoc>(&self.bytes).map(|d| d.manifests).unwrap_or_default()
    }
}
