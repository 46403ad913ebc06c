//! Signatures live in manifests that every signer of an image rewrites: the legacy `.sig`
//! manifest (a layer per signature) and the referrers fallback index (an entry per referrer).
//! A registry without conditional writes (distribution 2.8, and the spec does not ask for them)
//! keeps the last write, so a signer that read the list before another one wrote it would drop
//! that signature. So every write is checked: the list is read again after it, and whatever this
//! signer wrote, or saw there before, that is missing is merged in and written again, until a
//! read after a pause (twice this signer's own read-to-write time, with jitter) still finds it
//! all. Entries are only ever added here, never removed; the expensive work (signing, the
//! transparency log, the blobs) is done before the first read, so that the read-to-write window
//! another signer can fall into is one request wide.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{OCI_INDEX, OCI_MANIFEST, SignError, descriptors, manifest_json};
use crate::registry::{Client, ErrorCode, RegistryError};

/// Reads and writes of one list before giving up.
const ATTEMPTS: u32 = 16;

/// The two lists signers share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum List {
    /// The `.sig` manifest's layers.
    Signatures,
    /// The fallback index's manifests.
    Referrers,
}

impl List {
    fn field(self) -> &'static str {
        match self {
            List::Signatures => "layers",
            List::Referrers => "manifests",
        }
    }
}

/// Adds `ours` to the list at `tag`, keeping everything there, and returns once a read after a
/// pause finds it and every entry seen there before.
pub async fn add(client: &Client, path: &str, tag: &str, list: List, ours: Value) -> Result<(), SignError> {
    let mut seen = vec![ours];
    let mut confirmed = false;
    let mut window = Duration::ZERO;
    for attempt in 0..ATTEMPTS {
        let started = Instant::now();
        let base = manifest_json(client, path, tag).await?;
        let current = match &base {
            Some(m) => descriptors(m, tag, list.field())?,
            None => Vec::new(),
        };
        let missing: Vec<Value> = seen.iter().filter(|s| !current.contains(s)).cloned().collect();
        if missing.is_empty() {
            if confirmed {
                return Ok(());
            }
            confirmed = true;
        } else {
            if attempt > 0 {
                tracing::info!(tag, missing = missing.len(), "another signer rewrote the list: merging again");
            }
            confirmed = false;
            for c in &current {
                if !seen.contains(c) {
                    seen.push(c.clone());
                }
            }
            let mut merged = current;
            merged.extend(missing);
            match write(client, tag, list, base, merged).await {
                Ok(()) => window = window.max(started.elapsed()),
                // Distribution 2.8 answers DIGEST_INVALID (or BLOB_UNKNOWN) to a manifest whose
                // blob another signer is linking into the repository at that moment: asked
                // again, as a list another signer rewrote is.
                Err(SignError::Registry(RegistryError::Api {
                    code: ErrorCode::DigestInvalid | ErrorCode::BlobUnknown | ErrorCode::ManifestBlobUnknown,
                    ref message,
                    ..
                })) => {
                    tracing::info!(tag, "the registry refused the list while another signer wrote ({message}): again")
                }
                Err(e) => return Err(e),
            }
        }
        tokio::time::sleep(pause(window, attempt)).await;
    }
    Err(SignError::Contended { tag: tag.to_string(), attempts: ATTEMPTS })
}

/// Twice the longest read-to-write time seen, plus 20 to 80 ms of jitter (growing with the
/// attempts), so that a signer whose read came just before this write has written by the
/// next read.
fn pause(window: Duration, attempt: u32) -> Duration {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let noise = u64::from((nanos ^ std::process::id().rotate_left(16)) % 60);
    window * 2 + Duration::from_millis(20 + noise + 10 * u64::from(attempt.min(8)))
}

/// Writes the list: a `.sig` manifest with its config (whose diff_ids are the layers'), or the
/// index as read with its entries replaced.
async fn write(
    client: &Client,
    tag: &str,
    list: List,
    base: Option<Value>,
    entries: Vec<Value>,
) -> Result<(), SignError> {
    match list {
        List::Signatures => {
            let diff_ids: Vec<Value> = entries.iter().filter_map(|l| l.get("digest").cloned()).collect();
            let config = json!({
                "architecture": "", "created": "0001-01-01T00:00:00Z", "history": [{"created": "0001-01-01T00:00:00Z"}],
                "os": "", "rootfs": {"type": "layers", "diff_ids": diff_ids}, "config": {}
            })
            .to_string()
            .into_bytes();
            let config_digest = client.put_blob(&config).await?;
            let manifest = json!({
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": config.len(), "digest": config_digest.as_str()},
                "layers": entries
            });
            client.put_manifest(tag, OCI_MANIFEST, manifest.to_string().as_bytes()).await?;
        }
        List::Referrers => {
            let mut index = base.unwrap_or_else(|| json!({"schemaVersion": 2, "mediaType": OCI_INDEX}));
            index["manifests"] = Value::Array(entries);
            client.put_manifest(tag, OCI_INDEX, index.to_string().as_bytes()).await?;
        }
    }
    Ok(())
}
