//! Blobs from the Docker daemon's export, sent as it streams past: the export is read once
//! more, front to back, and each blob the repository lacks is uploaded as it goes by —
//! compressed on the way when Docker saved it uncompressed. Nothing is written to disk.

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

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
                // Put in another registry by this run: copied from there the usual way, not
                // compressed again from the export.
                Err(Some(made)) if x.held(&made.0).is_some() => continue,
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
    let (starts_tx, mut starts) = tokio::sync::mpsc::channel::<Start>(1);
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
    while let Some((path, stream, read)) = starts.recv().await {
        let Some((d, mode)) = wanted.get(&path) else { continue };
        let first = Mutex::new(Some(stream));
        let (one, form) = send_passing(client, image, (d, mode), (&first, read), reporter).await?;
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
    (d, mode): (&Descriptor, &Mode),
    (first, read): (&Mutex<Option<crate::image::compress::Compressed>>, Arc<AtomicU64>),
    reporter: &crate::progress::Reporter,
) -> Result<(Sent, Option<(Digest, u64)>), RegistryError> {
    let take = || first.lock().ok().and_then(|mut f| f.take());
    let result = match mode {
        Mode::Compress(None) => {
            // Counted in the layer's own bytes, as the compressor reads them (its size is
            // uncompressed): the 30-second lines' time left is right.
            let progress = reporter.blob(&format!("{} (compressed as it is sent)", d.digest.short()), d.size);
            let streamed = client
                .upload_stream(
                    |_| {
                        let (progress, passing, read) = (progress.clone(), take(), read.clone());
                        async move {
                            Ok(match passing {
                                Some(c) => Box::new(Pulled { inner: c, read, progress }) as BlobStream,
                                None => {
                                    let on_read: crate::image::compress::OnRead = Arc::new(move |n| progress.add(n));
                                    Box::new(image.compressed_layer(&d.digest, Some(on_read))?) as BlobStream
                                }
                            })
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
            progress.done();
            (sent, Some((streamed.digest, streamed.size)))
        }
        Mode::Compress(Some((digest, size))) => {
            let progress = reporter.blob(digest.short(), *size);
            let sent = upload_known(client, image, d, (digest, *size), true, &take, &progress).await?;
            progress.done();
            (sent, Some((digest.clone(), *size)))
        }
        Mode::AsIs => {
            let progress = reporter.blob(d.digest.short(), d.size);
            let sent = upload_known(client, image, d, (&d.digest, d.size), false, &take, &progress).await?;
            progress.done();
            (sent, None)
        }
    };
    Ok(result)
}

/// What the export pass announces for each wanted entry: its path, its stream (compressed on
/// the way or as it is) and the count of the entry's own bytes read so far.
type Start = (String, crate::image::compress::Compressed, Arc<AtomicU64>);

/// The compressed stream of a layer going past, moving its progress by the layer's own bytes
/// the pass has read (`read`) each time the upload reads.
struct Pulled<R> {
    inner: R,
    read: Arc<AtomicU64>,
    progress: crate::progress::BlobProgress,
}

impl<R: AsyncRead + Unpin> AsyncRead for Pulled<R> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = self.read.swap(0, Ordering::Relaxed);
        if n > 0 {
            self.progress.add(n);
        }
        polled
    }
}

/// A reader that adds what it yields to `read`.
struct Tally<'a, R> {
    inner: R,
    read: &'a AtomicU64,
}

impl<R: std::io::Read> std::io::Read for Tally<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
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
    starts: tokio::sync::mpsc::Sender<Start>,
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
        let read = Arc::new(AtomicU64::new(0));
        if starts.blocking_send((name.clone(), stream, read.clone())).is_err() {
            return Ok(());
        }
        let errors = tx.clone();
        let fed = match (mode, compression) {
            (Mode::Compress(_), Some(c)) => {
                let mut counted = Tally { inner: walk.data(), read: &read };
                compress::feed(&mut counted, &d.digest, c, &format!("{source}: layer {}", d.digest), tx)
            }
            _ => compress::copy(&mut walk.data(), tx),
        };
        if let Err(e) = fed {
            // The upload learns why its stream ends here. One that has gone (it starts again
            // from a fresh export) leaves the pass to go on with the next entries; a push that
            // stopped listening altogether ends it (`starts` closed, above).
            let _ = errors.blocking_send(Err(e));
        }
    }
    Ok(())
}
