//! Executes one image's push to one target: authenticate, skip blobs the repository has,
//! stream the rest, then manifests (children before the index, and only once every blob is
//! in place). Layers Docker saved uncompressed are compressed on the way (`layers`), and the
//! manifests that list them written once their digests are known. Returns an outcome; it never
//! prints.

mod dry_run;
mod export;
mod layers;

pub use dry_run::{WouldWrite, would_write};

pub use layers::{LayerReuse, learn_from_repository, learn_with_tags, reuse_list};

use futures_util::{StreamExt, TryStreamExt};
use serde::Serialize;

use crate::image::{Descriptor, Image};
use crate::registry::{Client, RegistryAccess, RegistryError, UploadMode};
use crate::types::ByteSize as Size;
use crate::types::{ByteSize, Digest};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Pushed,
    /// Pushed, but signing it failed: published and unsigned.
    PushedUnsigned,
    /// Pushed and signed, but its attestations (provenance, SBOMs) were not all written.
    PushedUnattested,
    /// Pushed, but private in the policy and pullable by anyone: published and exposed.
    PushedExposed,
    Failed,
}

/// What happened to one image on one registry.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub registry: String,
    pub repository: String,
    /// Every `repository:tag` written.
    pub references: Vec<String>,
    pub digest: Digest,
    pub bytes_sent: u64,
    /// Bytes sent more than once (after dropped connections or failed chunks).
    pub bytes_resent: u64,
    pub blobs_sent: usize,
    pub blobs_skipped: usize,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The signatures written, when signing is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signed: Option<crate::sign::Signed>,
    /// Whether the pushed image can be pulled without credentials (checked for every image).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anonymous_pull: Option<bool>,
    /// The media type and size of the manifest put (what a signature names with `digest`).
    #[serde(skip)]
    pub manifest: Option<(String, u64)>,
    /// Tags that held another image: kept (it was newer), unchanged (the same commit), moved
    /// back (`--allow-rollback`), or moved though the order was unknown (`order`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub moving_tags: Vec<crate::order::Held>,
    /// The attestations signed and written beside the signature (provenance, SBOMs).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attestations: Vec<crate::attest::Written>,
}

/// Where to push: the registry's address and the repository path inside it.
#[derive(Debug, Clone)]
pub struct Destination {
    pub registry_id: String,
    pub access: RegistryAccess,
    /// Repository path inside the registry: `ml/comfyui`.
    pub path: String,
    pub tags: Vec<String>,
    pub upload: UploadMode,
    /// A repository on the same registry to mount blobs from instead of copying them.
    pub mount_from: Option<String>,
}

/// The outcome of a push that could not start.
pub fn failed(image: &Image, dest: &Destination, error: String) -> Outcome {
    let mut o = blank(image, dest);
    o.error = Some(error);
    o
}

fn blank(image: &Image, dest: &Destination) -> Outcome {
    Outcome::nothing_written(
        dest.registry_id.clone(),
        format!("{}/{}", dest.access.endpoint.host, dest.path),
        image.root.digest.clone(),
    )
}

impl Outcome {
    /// A failed target on which nothing was written (yet): no reference, no byte sent.
    pub fn nothing_written(registry: String, repository: String, digest: Digest) -> Outcome {
        Outcome {
            registry,
            repository,
            references: Vec::new(),
            digest,
            bytes_sent: 0,
            bytes_resent: 0,
            blobs_sent: 0,
            blobs_skipped: 0,
            status: Status::Failed,
            error: None,
            signed: None,
            anonymous_pull: None,
            manifest: None,
            moving_tags: Vec::new(),
            attestations: Vec::new(),
        }
    }
}

pub async fn push(image: &Image, dest: &Destination) -> Outcome {
    let mut outcome = blank(image, dest);
    match push_inner(image, dest, &mut outcome).await {
        Ok(()) => outcome.status = Status::Pushed,
        Err(e) => outcome.error = Some(e.to_string()),
    }
    outcome
}

/// Checks that a pushed image can be pulled anonymously, as RunPod does without credentials.
/// `None` when the check itself could not be made.
pub async fn probe_anonymous(dest: &Destination) -> Option<bool> {
    let tag = dest.tags.first()?;
    let scope = format!("repository:{}:pull", dest.path);
    let client = dest.access.anonymous().client(&dest.path).ok()?.with_scope(&scope);
    match client.pullable_anonymously(tag).await {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!("could not check anonymous pulls on {}: {e}", dest.access.endpoint.host);
            None
        }
    }
}

async fn push_inner(image: &Image, dest: &Destination, out: &mut Outcome) -> Result<(), RegistryError> {
    let mut client = dest.access.client(&dest.path)?.with_upload_mode(dest.upload);
    let mount_from = dest.mount_from.clone();
    if let Some(from) = &mount_from {
        client = client.with_scope(&format!("repository:{}:pull,push repository:{from}:pull", dest.path));
    }
    // Every descriptor's size is the source's: a manifest that lies about a blob's size is
    // never tagged, whichever way its blobs reach the registry (checked without reading).
    check_source_sizes(image)?;
    client.authenticate().await?;

    // Already there by digest? Registries refuse a manifest whose blobs are missing, so its
    // blobs are there too: a re-push is then a GET and the tag PUTs, no blob HEADs. Not for an
    // image read from a registry: its sizes were checked against no file, so every blob is
    // asked about (HEAD) and sized.
    // (Not for an image with layers to compress: its digest is known only once they are.)
    let present =
        image.is_local() && image.deferred.is_none() && client.has_manifest(&image.root.digest).await.unwrap_or(false);
    // What each layer to compress is in this repository: found in its images, or sent now.
    let learnt = match &image.deferred {
        Some(deferred) => layers::learn_from_repository(&client, deferred, &dest.tags).await,
        None => layers::Resolved::new(),
    };
    let resolved = std::sync::Mutex::new(layers::Resolved::new());
    let forms = (&learnt, &resolved);
    let mut blobs = image.blobs();
    // From the Docker daemon: its export, read once more, carries the blobs the repository
    // lacks as it streams past; the rest go the usual way.
    if let (Some(export), false) = (&image.export, present) {
        let reporter = crate::progress::Reporter::new(&out.repository, 0);
        let (sent, handled) = export::send_from_export(&client, image, export, forms, &reporter).await?;
        reporter.finish();
        for s in sent {
            out.blobs_sent += 1;
            out.bytes_sent += s.bytes;
            out.bytes_resent += s.resent;
        }
        blobs.retain(|d| !handled.contains(&d.digest));
    }
    if present {
        out.blobs_skipped += blobs.len();
        blobs.clear();
        tracing::info!(registry = client.registry(), digest = %image.root.digest, "the manifest is already there: no blob to send");
    }
    let total: u64 = blobs.iter().map(|d| d.size).sum();
    let reporter = crate::progress::Reporter::new(&out.repository, total);
    // Largest first, so the longest transfer starts at once; bytes in flight, not blob count,
    // bound the work: see `InFlight`.
    blobs.sort_by_key(|d| std::cmp::Reverse(d.size));
    let in_flight = InFlight::new(dest.access.config.concurrency);
    let results: Vec<Sent> = futures_util::stream::iter(blobs.into_iter().map(|d| {
        let (in_flight, client, reporter, mount_from) = (&in_flight, &client, &reporter, mount_from.as_deref());
        async move {
            let _permit = in_flight.acquire(d.size).await;
            send_blob(client, image, d, (mount_from, forms), reporter).await
        }
    }))
    .buffer_unordered(in_flight.max_requests)
    .try_collect()
    .await?;
    reporter.finish();
    for sent in results {
        if sent.uploaded {
            out.blobs_sent += 1;
        } else {
            out.blobs_skipped += 1;
        }
        out.bytes_sent += sent.bytes;
        out.bytes_resent += sent.resent;
    }

    // Every blob is in place: manifests now, children before the index that lists them.
    let resolved = resolved.into_inner().unwrap_or_default();
    let (root, children) = image.finish(&resolved).map_err(|e| RegistryError::Source(std::io::Error::other(e)))?;
    out.digest = root.digest.clone();
    out.manifest = Some((root.media_type.clone(), root.bytes.len() as u64));
    for child in &children {
        client.put_manifest(child.digest.as_str(), &child.media_type, &child.bytes).await?;
    }
    // Every tag held a newer image (`order`): the manifest goes in by digest alone.
    if dest.tags.is_empty() {
        client.put_manifest(root.digest.as_str(), &root.media_type, &root.bytes).await?;
        out.references.push(format!("{}@{}", out.repository, root.digest));
    }
    for tag in &dest.tags {
        client.put_manifest(tag, &root.media_type, &root.bytes).await?;
        let sep = if tag.starts_with("sha256:") { '@' } else { ':' };
        out.references.push(format!("{}{sep}{tag}", out.repository));
    }
    // A repository the image is complete in: later targets copy this run's layers from it.
    layers::hold_own(image, dest, &resolved);
    Ok(())
}

/// What getting one blob into the repository took.
struct Sent {
    /// False: it was there already (or mounted).
    uploaded: bool,
    /// Bytes that went out.
    bytes: u64,
    /// Of those, bytes sent more than once.
    resent: u64,
}

const NOT_SENT: Sent = Sent { uploaded: false, bytes: 0, resent: 0 };

/// Gets one blob into the repository: skipped when it is there, mounted when it can be, else
/// uploaded.
async fn send_blob(
    client: &Client,
    image: &Image,
    d: &Descriptor,
    (mount_from, forms): (Option<&str>, (&layers::Resolved, &std::sync::Mutex<layers::Resolved>)),
    reporter: &crate::progress::Reporter,
) -> Result<Sent, RegistryError> {
    if let Some(deferred) = image.deferred.as_ref().filter(|x| x.has(&d.digest)) {
        return layers::send(client, image, deferred, d, forms, reporter).await;
    }
    // A local blob's size was checked against its file before anything was sent; a blob read
    // from a registry is sized by what the destination reports, or counted as it is copied.
    let local = image.is_local();
    let skip = |held: Option<u64>, whose: &'static str| match held {
        Some(held) => same_size(d, whose, held).map(|()| true),
        None => Ok(local),
    };
    if let Some(held) = client.blob_head(&d.digest).await?
        && skip(held, "the registry holds")?
    {
        tracing::info!(registry = client.registry(), digest = d.digest.short(), size = %ByteSize(d.size), "blob exists, skipped");
        return Ok(NOT_SENT);
    }
    if let Some(from) = mount_from {
        // Registries that refuse (or do not know the repository) answer 202 or an error:
        // the blob is then copied as usual, and so is one a HEAD does not find right after.
        match client.mount(&d.digest, from).await {
            Ok(true) => match client.blob_head(&d.digest).await? {
                Some(held) if skip(held, "the mounted blob has")? => {
                    tracing::info!(
                        registry = client.registry(),
                        digest = d.digest.short(),
                        from,
                        "blob mounted, not copied"
                    );
                    return Ok(NOT_SENT);
                }
                _ => tracing::debug!(digest = d.digest.short(), "mounted, but not seen with its size: copying"),
            },
            Ok(false) => tracing::debug!(digest = d.digest.short(), "mount refused: copying"),
            Err(e) => tracing::debug!(digest = d.digest.short(), "mount failed ({e}): copying"),
        }
    }
    let progress = reporter.blob(d.digest.short(), d.size);
    // A blob that is a range of a file on disk can be sent without being read here.
    let file = if client.sends_files_zero_copy() {
        image.blob_file(d).await.transpose().map_err(RegistryError::Source)?
    } else {
        None
    };
    let sent = |n: u64| progress.add(n);
    let range = file.as_ref().map(|(file, start)| crate::registry::FileRange { file, start: *start, sent: &sent });
    let stats =
        client
            .upload_blob(
                &d.digest,
                d.size,
                |offset| {
                    let progress = progress.clone();
                    async move {
                        image.blob(d, offset).await.map(|r| Box::new(progress.wrap(r)) as crate::image::BlobStream)
                    }
                },
                range,
            )
            .await?;
    progress.done();
    tracing::info!(
        registry = client.registry(),
        digest = d.digest.short(),
        size = %ByteSize(d.size),
        attempts = stats.attempts,
        resumes = stats.resumes,
        resent = %ByteSize(stats.bytes_resent(d.size)),
        "blob sent"
    );
    Ok(Sent { uploaded: true, bytes: stats.bytes_sent, resent: stats.bytes_resent(d.size) })
}

/// Refuses a blob whose size, as `whose` reports it, is not its descriptor's.
fn same_size(d: &Descriptor, whose: &'static str, actual: u64) -> Result<(), RegistryError> {
    if actual == d.size {
        return Ok(());
    }
    Err(RegistryError::SizeMismatch { digest: d.digest.clone(), descriptor: d.size, whose, actual })
}

/// Checks every blob of a local source against its descriptor's size (file metadata only); an
/// image read from a registry is checked as it streams and by the destination's HEAD.
fn check_source_sizes(image: &Image) -> Result<(), RegistryError> {
    for d in image.blobs() {
        if let Some(actual) = image.source_size(d).map_err(RegistryError::Source)? {
            same_size(d, "the source file has", actual)?;
        }
    }
    Ok(())
}

/// Concurrency by bytes in flight: `concurrency` (per registry, `transfer.concurrency`) large
/// blobs at once, each counted as at most `LARGE`; smaller blobs share the same budget, so
/// many small layers go up to `SMALL_FACTOR`× as many requests at once (round trips, not
/// bandwidth, bound them), and one huge layer leaves room for the small ones beside it.
struct InFlight {
    budget: tokio::sync::Semaphore,
    max_requests: usize,
}

const LARGE: u64 = 64 * 1024 * 1024;
const UNIT: u64 = 1024 * 1024;
const SMALL_FACTOR: usize = 4;

impl InFlight {
    fn new(concurrency: usize) -> InFlight {
        let concurrency = concurrency.max(1);
        InFlight {
            budget: tokio::sync::Semaphore::new(concurrency * (LARGE / UNIT) as usize),
            max_requests: concurrency * SMALL_FACTOR,
        }
    }

    /// The share of the budget a blob of `size` bytes holds while it is sent.
    fn units(size: u64) -> u32 {
        size.min(LARGE).div_ceil(UNIT).max(1) as u32
    }

    async fn acquire(&self, size: u64) -> Option<tokio::sync::SemaphorePermit<'_>> {
        self.budget.acquire_many(Self::units(size)).await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::InFlight;

    #[test]
    fn large_blobs_are_bounded_by_concurrency_and_small_ones_by_requests() {
        let f = InFlight::new(4);
        assert_eq!(f.max_requests, 16);
        assert_eq!(f.budget.available_permits(), 256);
        assert_eq!(InFlight::units(0), 1);
        assert_eq!(InFlight::units(1), 1);
        assert_eq!(InFlight::units(10 * 1024 * 1024 * 1024), 64, "a huge layer counts as one large one");
        // Four huge layers fill the budget; a fifth waits.
        let held: Vec<_> = (0..4).map(|_| f.budget.try_acquire_many(InFlight::units(u64::MAX)).unwrap()).collect();
        assert!(f.budget.try_acquire_many(1).is_err());
        drop(held);
        // One huge layer leaves room for 192 small ones (requests cap them at 16).
        let _huge = f.budget.try_acquire_many(64).unwrap();
        assert_eq!(f.budget.available_permits(), 192);
    }
}
