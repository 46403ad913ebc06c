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

/// As `Resolved`, with the tag whose image names each layer.
pub type Found = HashMap<Digest, (Digest, u64, String)>;

/// A layer to compress as one repository holds it: reused from the image a tag names there
/// (neither compressed nor sent), or, without `reused_from`, to compress and send.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LayerReuse {
    pub diff_id: Digest,
    /// The tag whose image lists the layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reused_from: Option<String>,
    /// The compressed blob reused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<Digest>,
}

impl LayerReuse {
    pub fn describe(&self) -> String {
        match (&self.reused_from, &self.digest) {
            (Some(tag), Some(d)) => format!("{} reused from {tag} ({d})", self.diff_id),
            _ => format!("{} to compress and send", self.diff_id),
        }
    }
}

/// Every layer to compress, in the image's order, as `found` says.
pub fn reuse_list(deferred: &Deferred, found: &Found) -> Vec<LayerReuse> {
    deferred
        .layers
        .iter()
        .map(|(diff_id, _)| {
            let held = found.get(diff_id);
            LayerReuse {
                diff_id: diff_id.clone(),
                reused_from: held.map(|(_, _, tag)| tag.clone()),
                digest: held.map(|(d, _, _)| d.clone()),
            }
        })
        .collect()
}

/// The compressed forms the images in the repository give the layers to compress: the tags
/// this push moves first (a rebuild's previous image), then up to `MORE_TAGS` of the others. A
/// layer is taken only with the compression asked for. Failures only mean less is known: every
/// layer found here is checked with a HEAD before it is skipped.
pub async fn learn_from_repository(client: &Client, deferred: &Deferred, tags: &[String]) -> Resolved {
    forms(learn_with_tags(client, deferred, tags).await)
}

/// What was found, without the tags.
pub fn forms(found: Found) -> Resolved {
    found.into_iter().map(|(k, (d, n, _))| (k, (d, n))).collect()
}

/// `learn_from_repository`, saying which tag's image names each layer found.
pub async fn learn_with_tags(client: &Client, deferred: &Deferred, tags: &[String]) -> Found {
    let mut found = Found::new();
    let unknown = |found: &Found| deferred.layers.len() - found.len();
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
async fn learn_from_manifest(client: &Client, deferred: &Deferred, m: &oci::Manifest, tag: &str, found: &mut Found) {
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
            found.insert(diff_id, (layer.digest.clone(), layer.size, tag.to_string()));
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

/// Whether the blob `digest` of `size` bytes, read from the repository, decompresses (as the
/// image's compression) to the layer `diff_id`.
async fn decompresses_to(
    client: &Client,
    deferred: &Deferred,
    (digest, size): (&Digest, u64),
    diff_id: &Digest,
) -> Result<bool, RegistryError> {
    use std::io::Write;
    let mut stream = client.blob_stream(digest, size, 0).await?;
    let hasher = HashWriter(sha2::Sha256::default());
    let mut decoder: Box<dyn DecodeTo> = if deferred.compression.zstd() {
        Box::new(zstd::stream::write::Decoder::new(hasher).map_err(RegistryError::Source)?)
    } else {
        Box::new(flate2::write::MultiGzDecoder::new(hasher))
    };
    let mut buf = vec![0u8; 256 * 1024];
    let mut read = 0u64;
    loop {
        let n = stream.read(&mut buf).await.map_err(RegistryError::Source)?;
        if n == 0 {
            break;
        }
        read += n as u64;
        if read > size {
            return Ok(false);
        }
        // Not a layer in this compression: not this layer.
        if decoder.write_all(&buf[..n]).is_err() {
            return Ok(false);
        }
    }
    Ok(read == size && decoder.finish_hash().is_some_and(|actual| &actual == diff_id))
}

/// A decompressor writing into a hasher.
trait DecodeTo: std::io::Write + Send {
    fn finish_hash(self: Box<Self>) -> Option<Digest>;
}

impl DecodeTo for flate2::write::MultiGzDecoder<HashWriter> {
    fn finish_hash(self: Box<Self>) -> Option<Digest> {
        self.finish().ok().map(|h| h.digest())
    }
}

impl DecodeTo for zstd::stream::write::Decoder<'static, HashWriter> {
    fn finish_hash(mut self: Box<Self>) -> Option<Digest> {
        std::io::Write::flush(&mut *self).ok()?;
        Some(self.into_inner().digest())
    }
}

struct HashWriter(sha2::Sha256);

impl HashWriter {
    fn digest(self) -> Digest {
        Digest::from_sha256(&sha2::Digest::finalize(self.0))
    }
}

impl std::io::Write for HashWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        sha2::Digest::update(&mut self.0, data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
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
        // `transfer.verify: client`: what another image names is read back and decompressed
        // once, and taken only if it is the layer.
        if !client.config().verify_client || decompresses_to(client, deferred, (digest, *size), diff_id).await? {
            record((digest.clone(), *size));
            return Ok(Ok(()));
        }
        tracing::warn!(
            registry = client.registry(),
            layer = diff_id.short(),
            blob = digest.short(),
            "the blob an image in the repository names for this layer does not decompress to its diff_id: this layer is compressed and sent"
        );
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
    // Progress in the layer's own (uncompressed) bytes, as the compressor reads them: what is
    // left, and the time it takes, are in those terms.
    let progress = reporter.blob(&format!("{} (compressed as it is sent)", d.digest.short()), d.size);
    let streamed = client
        .upload_stream(
            |_| {
                let progress = progress.clone();
                let on_read: crate::image::compress::OnRead = std::sync::Arc::new(move |n| progress.add(n));
                async move { image.compressed_layer(&d.digest, Some(on_read)).map(|c| Box::new(c) as BlobStream) }
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

/// Records, for the later targets of this run, that `dest` now holds this run's compression of
/// each layer in `resolved` that is one.
pub fn hold_own(image: &Image, dest: &super::Destination, resolved: &Resolved) {
    let Some(deferred) = &image.deferred else { return };
    for (diff_id, form) in resolved {
        if deferred.known(diff_id).as_ref() == Some(form) {
            deferred.hold(form.0.clone(), &dest.access, &dest.path);
        }
    }
}

/// A layer whose compressed form this run made but this repository lacks: copied from a
/// registry this run put it in (compressed once for every registry it goes to), else
/// compressed again and uploaded under that digest (an upload that resumes skips what the
/// registry kept; the compressors are deterministic).
async fn again(
    client: &Client,
    image: &Image,
    d: &Descriptor,
    (digest, size): (&Digest, u64),
    reporter: &crate::progress::Reporter,
) -> Result<Sent, RegistryError> {
    if let Some(held) = image.deferred.as_ref().and_then(|x| x.held(digest)) {
        match copy_from(client, &held, (digest, size), reporter).await {
            // This repository's own refusal (quota, permissions): compressing again would
            // meet it too.
            Err(e) if !from_holder(&e) => return Err(e),
            Ok(sent) => {
                tracing::info!(
                    registry = client.registry(),
                    layer = d.digest.short(),
                    digest = digest.short(),
                    from = %held.0.endpoint.host,
                    "layer compressed once, copied from the registry this run put it in"
                );
                return Ok(sent);
            }
            Err(e) => tracing::warn!(
                registry = client.registry(),
                from = %held.0.endpoint.host,
                "copying the layer failed ({e}): compressing it again"
            ),
        }
    }
    let sent = upload_from(client, (digest, size), reporter, |offset| async move {
        let mut c = image.compressed_layer(&d.digest, None)?;
        tokio::io::copy(&mut (&mut c).take(offset), &mut tokio::io::sink()).await?;
        Ok(Box::new(c) as BlobStream)
    })
    .await?;
    tracing::info!(
        registry = client.registry(),
        layer = d.digest.short(),
        digest = digest.short(),
        "layer compressed again and sent"
    );
    Ok(sent)
}

/// Whether a failed copy failed on the side of the registry it reads from: its login, its
/// reads (the upload's source), or bytes that were not the blob (refused by their digest).
fn from_holder(e: &RegistryError) -> bool {
    matches!(e, RegistryError::Source(_) | RegistryError::DigestRefused { .. } | RegistryError::CorruptSource { .. })
}

/// Uploads `digest` to `client`'s repository from the repository `held` names, read as it is
/// sent (a resumed upload reads from its offset). The holder's login failing is a `Source`
/// error, as its reads are.
async fn copy_from(
    client: &Client,
    (access, path): &(crate::registry::RegistryAccess, String),
    (digest, size): (&Digest, u64),
    reporter: &crate::progress::Reporter,
) -> Result<Sent, RegistryError> {
    let holder = |e: RegistryError| RegistryError::Source(std::io::Error::other(e.to_string()));
    let source = access.client(path).map_err(holder)?.with_scope(&format!("repository:{path}:pull"));
    source.authenticate().await.map_err(holder)?;
    let source = &source;
    upload_from(client, (digest, size), reporter, |offset| async move {
        source.blob_stream(digest, size, offset).await.map_err(std::io::Error::other)
    })
    .await
}

/// Uploads the blob `digest` of `size` bytes from what `open(offset)` yields (a resumed upload
/// opens at its offset), its progress shown as it is read.
async fn upload_from<F, Fut>(
    client: &Client,
    (digest, size): (&Digest, u64),
    reporter: &crate::progress::Reporter,
    open: F,
) -> Result<Sent, RegistryError>
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = std::io::Result<BlobStream>>,
{
    let progress = reporter.blob(digest.short(), size);
    let stats = client
        .upload_blob(
            digest,
            size,
            |offset| {
                let (progress, opening) = (progress.clone(), open(offset));
                async move { Ok(Box::new(progress.wrap(opening.await?)) as BlobStream) }
            },
            None,
        )
        .await?;
    progress.done();
    Ok(Sent { uploaded: true, bytes: stats.bytes_sent, resent: stats.bytes_resent(size) })
}
