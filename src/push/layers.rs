//! Layers Docker saved uncompressed, on their way to one repository. A layer the repository
//! already holds — an image there lists the same diff_id with the same compression, whoever
//! compressed it — is neither compressed nor sent (a HEAD confirms it), and this repository's
//! manifest names that blob. A layer this run compressed for an earlier target is compressed
//! again for this one (the compressors are deterministic: the same bytes) and uploaded under
//! the digest it had; the others are compressed while they are uploaded, their digest found on
//! the way. What each layer became here is kept per target (`Resolved`): another repository
//! may hold other bytes for the same diff_id.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use tokio::io::AsyncReadExt;

use super::{NOT_SENT, Sent, same_size};
use crate::image::docker::{DOCKER_LAYER_GZIP, OCI_LAYER_GZIP, OCI_LAYER_ZSTD};
use crate::image::{BlobStream, Deferred, Descriptor, Image, oci};
use crate::registry::{Client, RegistryError};
use crate::types::{ByteSize, Digest};

/// How many of the repository's tags (besides the ones this push moves) are looked into, and
/// how many manifests are read at most, looking for layers already there.
const MORE_TAGS: usize = 10;
const MAX_MANIFESTS: usize = 24;
/// A config is read whole; it is small.
const MAX_CONFIG: u64 = 4 * 1024 * 1024;

/// What each layer to compress is in one repository: diff_id → compressed digest and size.
pub type Resolved = HashMap<Digest, (Digest, u64)>;

/// The compressed forms the images in the repository give the layers to compress: the tags
/// this push moves first (a rebuild's previous image), then up to `MORE_TAGS` of the others. A
/// layer is taken only with the compression asked for. Failures only mean less is known: every
/// layer found here is checked with a HEAD before it is skipped.
pub async fn learn_from_repository(client: &Client, deferred: &Deferred, tags: &[String]) -> Resolved {
    let mut found = Resolved::new();
    let unknown = |found: &Resolved| deferred.layers.len() - found.len();
    let mut refs: Vec<String> = tags.to_vec();
    match client.tags(client.repository()).await {
        Ok(mut all) => {
            all.retain(|t| !tags.contains(t) && !t.starts_with("sha256-"));
            refs.extend(all.into_iter().rev().take(MORE_TAGS));
        }
        Err(e) => tracing::debug!("the repository's tags could not be listed: {e}"),
    }
    let mut read = 0usize;
    let mut seen = HashSet::new();
    let mut queue: Vec<(String, String)> = refs.into_iter().map(|r| (r.clone(), r)).collect();
    queue.reverse();
    while let Some((reference, tag)) = queue.pop() {
        if read >= MAX_MANIFESTS || unknown(&found) == 0 {
            break;
        }
        if !seen.insert(reference.clone()) {
            continue;
        }
        read += 1;
        let bytes = match client.manifest(client.repository(), &reference).await {
            Ok(Some(b)) => b,
            Ok(None) => continue,
            Err(e) => {
                tracing::debug!(reference, "not read: {e}");
                continue;
            }
        };
        let media_type = oci::media_type_of(&bytes).unwrap_or_else(|| oci::OCI_MANIFEST.to_string());
        let Ok(m) = oci::Manifest::parse(Digest::of(&bytes), bytes, &media_type, None) else { continue };
        if m.is_index() {
            let Ok(doc) = serde_json::from_slice::<oci::ManifestDoc>(&m.bytes) else { continue };
            // Children next, before other tags.
            queue.extend(doc.manifests.iter().rev().map(|d| (d.digest.to_string(), tag.clone())));
            continue;
        }
        learn_from_manifest(client, deferred, &m, &tag, &mut found).await;
    }
    found
}

/// Pairs an image manifest's layers with its config's diff_ids, and learns those to compress.
async fn learn_from_manifest(client: &Client, deferred: &Deferred, m: &oci::Manifest, tag: &str, found: &mut Resolved) {
    let Some(config) = &m.config else { return };
    let wanted = if deferred.compression.zstd() { &[OCI_LAYER_ZSTD][..] } else { &[DOCKER_LAYER_GZIP, OCI_LAYER_GZIP] };
    if !m.layers.iter().any(|l| wanted.contains(&l.media_type.as_str())) {
        return;
    }
    let Ok(Some(bytes)) = client.get_blob(&config.digest, MAX_CONFIG).await else { return };
    let Ok(doc) = serde_json::from_slice::<serde_json::Value>(&bytes) else { return };
    let Some(diff_ids) = doc.pointer("/rootfs/diff_ids").and_then(|v| v.as_array()) else { return };
    if diff_ids.len() != m.layers.len() {
        return;
    }
    for (layer, diff_id) in m.layers.iter().zip(diff_ids) {
        let Some(diff_id) = diff_id.as_str().and_then(|d| d.parse::<Digest>().ok()) else { continue };
        if wanted.contains(&layer.media_type.as_str()) && deferred.has(&diff_id) && !found.contains_key(&diff_id) {
            tracing::info!(
                registry = client.registry(),
                layer = diff_id.short(),
                tag,
                "layer already in the repository: not compressed again"
            );
            found.insert(diff_id, (layer.digest.clone(), layer.size));
        }
    }
}

/// Whether the repository holds the blob `digest` of `size` bytes (a HEAD; a size it reports
/// must be that one).
async fn holds(client: &Client, digest: &Digest, size: u64) -> Result<bool, RegistryError> {
    match client.blob_head(digest).await? {
        Some(held) => {
            if let Some(held) = held {
                let c = Descriptor {
                    media_type: String::new(),
                    digest: digest.clone(),
                    size,
                    annotations: None,
                    platform: None,
                };
                same_size(&c, "the registry holds", held)?;
            }
            Ok(true)
        }
        None => Ok(false),
    }
}

/// What the repository has of the layer `diff_id` without anything being sent: the blob an
/// image there names, or the one this run made for an earlier target; recorded in `resolved`.
/// `Err(Some(made))`: this run made it, the repository lacks it; `Err(None)`: unknown here.
pub async fn already_there(
    client: &Client,
    deferred: &Deferred,
    diff_id: &Digest,
    (learnt, resolved): (&Resolved, &Mutex<Resolved>),
) -> Result<Result<(), Option<(Digest, u64)>>, RegistryError> {
    let record = |form: (Digest, u64)| {
        if let Ok(mut r) = resolved.lock() {
            r.insert(diff_id.clone(), form);
        }
    };
    if let Some((digest, size)) = learnt.get(diff_id)
        && holds(client, digest, *size).await?
    {
        record((digest.clone(), *size));
        return Ok(Ok(()));
    }
    let Some((digest, size)) = deferred.known(diff_id) else { return Ok(Err(None)) };
    if holds(client, &digest, size).await? {
        tracing::info!(
            registry = client.registry(),
            layer = diff_id.short(),
            digest = digest.short(),
            "compressed layer exists, skipped"
        );
        record((digest, size));
        return Ok(Ok(()));
    }
    Ok(Err(Some((digest, size))))
}

/// Gets the uncompressed layer `d` into the repository in its compressed form, and records
/// what it became here in `resolved`.
pub async fn send(
    client: &Client,
    image: &Image,
    deferred: &Deferred,
    d: &Descriptor,
    (learnt, resolved): (&Resolved, &Mutex<Resolved>),
    reporter: &crate::progress::Reporter,
) -> Result<Sent, RegistryError> {
    let record = |form: (Digest, u64)| {
        if let Ok(mut r) = resolved.lock() {
            r.insert(d.digest.clone(), form);
        }
    };
    match already_there(client, deferred, &d.digest, (learnt, resolved)).await? {
        Ok(()) => return Ok(NOT_SENT),
        Err(Some((digest, size))) => {
            let sent = again(client, image, d, (&digest, size), reporter).await?;
            record((digest, size));
            return Ok(sent);
        }
        Err(None) => {}
    }
    let progress = reporter.blob(d.digest.short(), d.size);
    let streamed = client
        .upload_stream(
            |_| {
                let progress = progress.clone();
                async move { image.compressed_layer(&d.digest).map(|c| Box::new(progress.wrap(c)) as BlobStream) }
            },
            d.size,
        )
        .await?;
    progress.done();
    tracing::info!(
        registry = client.registry(),
        layer = d.digest.short(),
        digest = streamed.digest.short(),
        size = %ByteSize(streamed.size),
        of = %ByteSize(d.size),
        attempts = streamed.stats.attempts,
        "layer compressed and sent"
    );
    deferred.learn(d.digest.clone(), (streamed.digest.clone(), streamed.size));
    record((streamed.digest.clone(), streamed.size));
    Ok(Sent { uploaded: true, bytes: streamed.stats.bytes_sent, resent: streamed.stats.bytes_resent(streamed.size) })
}

/// A layer whose compressed form is known but not in this repository: compressed again and
/// uploaded under that digest (an upload that resumes skips what the registry kept).
async fn again(
    client: &Client,
    image: &Image,
    d: &Descriptor,
    (digest, size): (&Digest, u64),
    reporter: &crate::progress::Reporter,
) -> Result<Sent, RegistryError> {
    let progress = reporter.blob(digest.short(), size);
    let stats = client
        .upload_blob(
            digest,
            size,
            |offset| {
                let progress = progress.clone();
                async move {
                    let mut c = image.compressed_layer(&d.digest)?;
                    tokio::io::copy(&mut (&mut c).take(offset), &mut tokio::io::sink()).await?;
                    Ok(Box::new(progress.wrap(c)) as BlobStream)
                }
            },
            None,
        )
        .await?;
    progress.done();
    tracing::info!(
        registry = client.registry(),
        layer = d.digest.short(),
        digest = digest.short(),
        "layer compressed again and sent"
    );
    Ok(Sent { uploaded: true, bytes: stats.bytes_sent, resent: stats.bytes_resent(size) })
}

/// How a blob goes up from the daemon's export.
#[derive(Clone)]
enum Mode {
    /// Compressed as it streams past; its compressed digest and size, when already known.
    Compress(Option<(Digest, u64)>),
    /// As it is (already compressed).
    AsIs,
}

/// An image read from the Docker daemon: its export is read once more, front to back, and each
/// blob the repository lacks is uploaded as it streams past — compressed on the way when Docker
/// saved it uncompressed. Nothing is written to disk. Returns what was sent, and the digests of
/// the blobs this pass saw to (the rest go the usual way).
pub async fn send_from_export(
    client: &Client,
    image: &Image,
    export: &crate::image::daemon::Export,
    (learnt, resolved): (&Resolved, &Mutex<Resolved>),
    reporter: &crate::progress::Reporter,
) -> Result<(Vec<Sent>, HashSet<Digest>), RegistryError> {
    let mut wanted: HashMap<String, (Descriptor, Mode)> = Default::default();
    let mut handled = HashSet::new();
    for d in image.blobs() {
        let (path, in_memory) = image.export_path(&d.digest);
        if in_memory {
            continue;
        }
        // What the repository has is left to the usual way, which skips it.
        let mode = match image.deferred.as_ref().filter(|x| x.has(&d.digest)) {
            Some(x) => match already_there(client, x, &d.digest, (learnt, resolved)).await? {
                Ok(()) => continue,
                Err(made) => Mode::Compress(made),
            },
            None if client.blob_head(&d.digest).await?.is_some() => continue,
            None => Mode::AsIs,
        };
        handled.insert(d.digest.clone());
        wanted.insert(path, (d.clone(), mode));
    }
    if wanted.is_empty() {
        return Ok((Vec::new(), handled));
    }
    let (starts_tx, mut starts) = tokio::sync::mpsc::channel::<(String, crate::image::compress::Compressed)>(1);
    let reader = {
        let (export, paths) = (export.clone(), wanted.clone());
        let compression = image.deferred.as_ref().map(|x| x.compression);
        let source = image.source.clone();
        std::thread::Builder::new()
            .name("export".into())
            .spawn(move || pass(&export, &paths, compression, &source, starts_tx))
            .map_err(RegistryError::Source)?
    };
    let mut sent = Vec::new();
    while let Some((path, stream)) = starts.recv().await {
        let Some((d, mode)) = wanted.get(&path) else { continue };
        let first = Mutex::new(Some(stream));
        let (one, form) = send_passing(client, image, d, mode, &first, reporter).await?;
        if let Some(form) = form
            && let Ok(mut r) = resolved.lock()
        {
            r.insert(d.digest.clone(), form);
        }
        sent.push(one);
    }
    let finished = tokio::task::spawn_blocking(move || reader.join()).await;
    match finished {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => return Err(RegistryError::Source(e)),
        _ => return Err(RegistryError::Source(std::io::Error::other("the export's reader stopped"))),
    }
    if sent.len() != wanted.len() {
        return Err(RegistryError::Source(std::io::Error::other(format!(
            "the daemon's export carried {} of the {} blobs to send",
            sent.len(),
            wanted.len()
        ))));
    }
    Ok((sent, handled))
}

/// One blob from the pass: its bytes from the stream going past on the first attempt, from a
/// fresh export on any later one. Returns what was sent and, for a layer compressed, its
/// compressed digest and size.
async fn send_passing(
    client: &Client,
    image: &Image,
    d: &Descriptor,
    mode: &Mode,
    first: &Mutex<Option<crate::image::compress::Compressed>>,
    reporter: &crate::progress::Reporter,
) -> Result<(Sent, Option<(Digest, u64)>), RegistryError> {
    let take = || first.lock().ok().and_then(|mut f| f.take());
    let progress = reporter.blob(d.digest.short(), d.size);
    let result = match mode {
        Mode::Compress(None) => {
            let streamed = client
                .upload_stream(
                    |_| {
                        let (progress, passing) = (progress.clone(), take());
                        async move {
                            let c = match passing {
                                Some(c) => c,
                                None => image.compressed_layer(&d.digest)?,
                            };
                            Ok(Box::new(progress.wrap(c)) as BlobStream)
                        }
                    },
                    d.size,
                )
                .await?;
            if let Some(x) = &image.deferred {
                x.learn(d.digest.clone(), (streamed.digest.clone(), streamed.size));
            }
            tracing::info!(registry = client.registry(), layer = d.digest.short(), digest = streamed.digest.short(), size = %ByteSize(streamed.size), "layer compressed and sent as the export streamed");
            let sent = Sent {
                uploaded: true,
                bytes: streamed.stats.bytes_sent,
                resent: streamed.stats.bytes_resent(streamed.size),
            };
            (sent, Some((streamed.digest, streamed.size)))
        }
        Mode::Compress(Some((digest, size))) => {
            let sent = upload_known(client, image, d, (digest, *size), true, &take, &progress).await?;
            (sent, Some((digest.clone(), *size)))
        }
        Mode::AsIs => (upload_known(client, image, d, (&d.digest, d.size), false, &take, &progress).await?, None),
    };
    progress.done();
    Ok(result)
}

/// A blob whose digest is known, from the stream going past (`take`) or, on a later attempt,
/// from a fresh export (compressed again when `compress`).
async fn upload_known(
    client: &Client,
    image: &Image,
    d: &Descriptor,
    (digest, size): (&Digest, u64),
    compress: bool,
    take: &(dyn Fn() -> Option<crate::image::compress::Compressed> + Sync),
    progress: &crate::progress::BlobProgress,
) -> Result<Sent, RegistryError> {
    let stats = client
        .upload_blob(
            digest,
            size,
            |offset| {
                let (progress, passing) = (progress.clone(), if offset == 0 { take() } else { None });
                async move {
                    let mut s: BlobStream = match (passing, compress) {
                        (Some(c), _) => Box::new(c),
                        (None, true) => Box::new(image.compressed_layer(&d.digest)?),
                        (None, false) => image.blob(d, 0).await?,
                    };
                    tokio::io::copy(&mut (&mut s).take(offset), &mut tokio::io::sink()).await?;
                    Ok(Box::new(progress.wrap(s)) as BlobStream)
                }
            },
            None,
        )
        .await?;
    tracing::info!(registry = client.registry(), digest = digest.short(), size = %ByteSize(size), "blob sent as the export streamed");
    Ok(Sent { uploaded: true, bytes: stats.bytes_sent, resent: stats.bytes_resent(size) })
}

/// The reading side of `send_from_export`, on a thread of its own: walks the export and, for
/// each wanted entry, announces a stream and feeds it (compressed or as it is) before going on.
fn pass(
    export: &crate::image::daemon::Export,
    wanted: &HashMap<String, (Descriptor, Mode)>,
    compression: Option<crate::image::compress::Compression>,
    source: &str,
    starts: tokio::sync::mpsc::Sender<(String, crate::image::compress::Compressed)>,
) -> std::io::Result<()> {
    use crate::image::compress;
    let mut walk = crate::image::tarwalk::TarWalk::new(export.open().map_err(std::io::Error::other)?);
    let mut left = wanted.len();
    // Stops as soon as the push has stopped listening: nothing more is read from the daemon.
    while left > 0
        && !starts.is_closed()
        && let Some((name, _)) = walk.next_entry()?
    {
        let Some((d, mode)) = wanted.get(&name) else { continue };
        left -= 1;
        let (tx, stream) = compress::channel();
        if starts.blocking_send((name.clone(), stream)).is_err() {
            return Ok(());
        }
        let errors = tx.clone();
        let fed = match (mode, compression) {
            (Mode::Compress(_), Some(c)) => {
                compress::feed(&mut walk.data(), &d.digest, c, &format!("{source}: layer {}", d.digest), tx)
            }
            _ => compress::copy(&mut walk.data(), tx),
        };
        if let Err(e) = fed {
            // The upload learns why its stream ends here; if it has gone, so does this pass.
            if errors.blocking_send(Err(e)).is_err() {
                return Ok(());
            }
        }
    }
    Ok(())
}
