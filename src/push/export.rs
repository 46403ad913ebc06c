//! Blobs from the Docker daemon's export, sent as it streams past: the export is read once
//! more, front to back, and each blob the repository lacks is uploaded as it goes by —
//! compressed on the way when Docker saved it uncompressed. Nothing is written to disk.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use tokio::io::AsyncReadExt;

use super::Sent;
use super::layers::{Resolved, already_there};
use crate::image::{BlobStream, Descriptor, Image};
use crate::registry::{Client, RegistryError};
use crate::types::{ByteSize, Digest};

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
                                None => image.compressed_layer(&d.digest, None)?,
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
                        (None, true) => Box::new(image.compressed_layer(&d.digest, None)?),
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
