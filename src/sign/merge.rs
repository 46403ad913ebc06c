//! Signatures live in manifests that every signer of an image rewrites: the legacy `.sig`
//! manifest (a layer per signature) and the referrers fallback index (an entry per referrer).
//! A registry without conditional writes (distribution 2.8, and the spec does not ask for them)
//! keeps the last write, so a signer that read the list before another one wrote it would drop
//! that signature. So every write is checked: the list is read again after it, and whatever this
//! signer wrote, or saw there before, that is missing is merged in and written again, until a
//! read after a pause (twice this signer's own read-to-write time, with jitter) still finds it
//! all. Entries are only ever added here, never removed; the expensive work (signing, the
//! transparency log, the blobs) is done before the first read, the `.sig` manifest's config goes
//! up before a last read, and the PUT goes in one try (a retried PUT could land late, over
//! another signer's settled write): between the read a write rests on and the write, one
//! request.

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
    let mut refusal = None;
    for attempt in 0..ATTEMPTS {
        let started = Instant::now();
        let (base, current) = read(client, path, tag, list).await?;
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
            match write(client, (path, tag, list), base, &current, missing).await {
                Ok(true) => window = window.max(started.elapsed()),
                Ok(false) => tracing::debug!(tag, "the list changed while its config went up: read again"),
                Err(SignError::Registry(e)) if again(&e) => {
                    tracing::info!(tag, "the list was not written while other signers wrote ({e}): again");
                    refusal = Some(e.to_string());
                }
                Err(e) => return Err(e),
            }
        }
        tokio::time::sleep(pause(window, attempt)).await;
    }
    let last = refusal.map(|e| format!(" (the registry's last refusal: {e})")).unwrap_or_default();
    Err(SignError::Contended { tag: tag.to_string(), attempts: ATTEMPTS, last })
}

/// A failed write that the next round may cure: the transport's and the registry's passing
/// failures, and what distribution 2.8 answers while another signer links the same blob
/// (DIGEST_INVALID, BLOB_UNKNOWN).
fn again(e: &RegistryError) -> bool {
    e.retryable()
        || matches!(
            e,
            RegistryError::DigestRefused { .. }
                | RegistryError::Api {
                    code: ErrorCode::DigestInvalid | ErrorCode::BlobUnknown | ErrorCode::ManifestBlobUnknown,
                    ..
                }
        )
}

/// The manifest at a tag signers share, if any. Distribution's filesystem storage rewrites a
/// tag in place, so a read while another signer writes it can be answered `500` (seen with 32
/// signers at once, past the request's own retries): read again after a pause, within the
/// rounds of a merge.
pub async fn shared(client: &Client, path: &str, tag: &str) -> Result<Option<Value>, SignError> {
    let mut attempt = 0;
    loop {
        match manifest_json(client, path, tag).await {
            Err(SignError::Registry(e)) if e.retryable() && attempt + 1 < ATTEMPTS => {
                attempt += 1;
                tracing::info!(tag, "the list could not be read while other signers wrote it ({e}): again");
                tokio::time::sleep(pause(Duration::ZERO, attempt)).await;
            }
            other => return other,
        }
    }
}

/// The manifest at `tag` (if any) and its list.
async fn read(client: &Client, path: &str, tag: &str, list: List) -> Result<(Option<Value>, Vec<Value>), SignError> {
    let base = shared(client, path, tag).await?;
    let current = match &base {
        Some(m) => descriptors(m, tag, list.field())?,
        None => Vec::new(),
    };
    Ok((base, current))
}

/// Twice the longest read-to-write time seen, plus 20 to 80 ms of jitter (growing with the
/// attempts), so that a signer whose read came just before this write has written by the
/// next read.
fn pause(window: Duration, attempt: u32) -> Duration {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let noise = u64::from((nanos ^ std::process::id().rotate_left(16)) % 60);
    window * 2 + Duration::from_millis(20 + noise + 10 * u64::from(attempt.min(8)))
}

/// Writes `current` with `missing` added: a `.sig` manifest with its config (whose diff_ids are
/// the layers'), or the index as read with its entries replaced. The PUT goes in one try, right
/// after a read (for a `.sig` manifest, a read after its config went up) that still shows
/// `current`; `false` when the list changed meanwhile (nothing written: read again).
async fn write(
    client: &Client,
    (path, tag, list): (&str, &str, List),
    base: Option<Value>,
    current: &[Value],
    missing: Vec<Value>,
) -> Result<bool, SignError> {
    let mut entries = current.to_vec();
    entries.extend(missing);
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
            if read(client, path, tag, list).await?.1 != current {
                return Ok(false);
            }
            let manifest = json!({
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": config.len(), "digest": config_digest.as_str()},
                "layers": entries
            });
            client.put_manifest_once(tag, OCI_MANIFEST, manifest.to_string().as_bytes()).await?;
        }
        List::Referrers => {
            let mut index = base.unwrap_or_else(|| json!({"schemaVersion": 2, "mediaType": OCI_INDEX}));
            index["manifests"] = Value::Array(entries);
            client.put_manifest_once(tag, OCI_INDEX, index.to_string().as_bytes()).await?;
        }
    }
    Ok(true)
}
