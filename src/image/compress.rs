//! Layers Docker saved uncompressed, compressed while they are pushed: a thread reads the tar,
//! checks it against its diff_id and compresses it on every core (`pgzip`, or zstd's own
//! workers) into a bounded channel the upload reads from. Nothing of a layer is written to
//! disk, and compression and upload overlap. The compressors are deterministic: the same
//! layer gives the same bytes, so an upload that starts again gets them again.

use std::io::{Read, Write};
use std::pin::Pin;
use std::task::{Context, Poll};

use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;

use crate::types::{Digest, LayerCompression};

/// gzip's level for layers Docker saved uncompressed: the fastest within 5 % of skopeo's size.
/// On the 1.68 GB `docker save` of real file trees of scripts/bench (skopeo: 609.7 MB of
/// layers), one core: level 1 gives 753.6 MB (+24 %) in 10.1 s, 2 gives 632.2 MB (+3.7 %) in
/// 12.6 s, 3 gives 609.0 MB in 15.1 s (docs/performance.md).
pub const GZIP_LEVEL: u32 = 2;
/// zstd's level, its CLI's default.
pub const ZSTD_LEVEL: i32 = 3;

/// How a layer is compressed: gzip or zstd, at a level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compression {
    pub algorithm: LayerCompression,
    pub level: u32,
}

impl Compression {
    /// `algorithm` at `level`, or at its default level. `None` for `compression: none`.
    pub fn new(algorithm: LayerCompression, level: Option<u32>) -> Option<Compression> {
        let default = match algorithm {
            LayerCompression::None => return None,
            LayerCompression::Gzip => GZIP_LEVEL,
            LayerCompression::Zstd => ZSTD_LEVEL as u32,
        };
        Some(Compression { algorithm, level: level.unwrap_or(default) })
    }

    pub fn zstd(&self) -> bool {
        self.algorithm == LayerCompression::Zstd
    }
}

/// The layers of an image that are compressed while it is pushed, and how; what is known of
/// their compressed forms (from a push, or from images already in the target repository) is
/// kept for every later target.
#[derive(Debug)]
pub struct Deferred {
    pub compression: Compression,
    /// diff_ids of the uncompressed layers, with their sizes.
    pub layers: Vec<(Digest, u64)>,
    known: std::sync::Mutex<std::collections::HashMap<Digest, (Digest, u64)>>,
    /// Where this run put its own compressions: compressed digest → the registry and
    /// repository holding it, for later targets to copy instead of compressing again.
    held: std::sync::Mutex<std::collections::HashMap<Digest, (crate::registry::RegistryAccess, String)>>,
}

impl Deferred {
    pub fn new(compression: Compression, layers: Vec<(Digest, u64)>) -> Deferred {
        Deferred { compression, layers, known: Default::default(), held: Default::default() }
    }

    /// Whether the layer `digest` is one to compress.
    pub fn has(&self, digest: &Digest) -> bool {
        self.layers.iter().any(|(d, _)| d == digest)
    }

    /// The compressed digest and size this run gave the layer `diff_id` (its own compression,
    /// reproducible), when it has compressed it.
    pub fn known(&self, diff_id: &Digest) -> Option<(Digest, u64)> {
        self.known.lock().ok()?.get(diff_id).cloned()
    }

    /// Records that the repository `path` of `access` holds `digest`, this run's compression
    /// of a layer (the first holder is kept).
    pub fn hold(&self, digest: Digest, access: &crate::registry::RegistryAccess, path: &str) {
        if let Ok(mut h) = self.held.lock() {
            h.entry(digest).or_insert_with(|| (access.clone(), path.to_string()));
        }
    }

    /// A registry and repository holding `digest`, this run's compression of a layer.
    pub fn held(&self, digest: &Digest) -> Option<(crate::registry::RegistryAccess, String)> {
        self.held.lock().ok()?.get(digest).cloned()
    }

    /// Records the compressed form this run made of the layer `diff_id`.
    pub fn learn(&self, diff_id: Digest, compressed: (Digest, u64)) {
        if let Ok(mut k) = self.known.lock() {
            k.insert(diff_id, compressed);
        }
    }
}

/// Told of the uncompressed bytes a compressor reads.
pub type OnRead = std::sync::Arc<dyn Fn(u64) + Send + Sync>;

/// A reader that tells `on_read` of what it yields.
pub struct Counted {
    pub inner: Box<dyn Read + Send>,
    pub on_read: OnRead,
}

impl Read for Counted {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        (self.on_read)(n as u64);
        Ok(n)
    }
}

/// Bytes handed from the compressor to the upload at a time, and how many may wait: the
/// memory a layer in flight holds is about their product (2 MiB).
const PIECE: usize = 256 * 1024;
const QUEUED: usize = 8;

/// Starts compressing the layer `reader` yields (whose SHA-256 must be `diff_id`) on a thread
/// of its own and returns the compressed bytes as a stream. A layer that does not hash to its
/// diff_id ends the stream with an error before its end, so no upload of it completes.
pub fn stream(
    open: impl FnOnce() -> std::io::Result<Box<dyn Read + Send>> + Send + 'static,
    diff_id: Digest,
    compression: Compression,
    label: String,
) -> std::io::Result<Compressed> {
    let (tx, out) = channel();
    std::thread::Builder::new().name("compress".into()).spawn(move || {
        let errors = tx.clone();
        // Opened here: reaching a layer may mean reading a daemon's export up to it.
        if let Err(e) = open().and_then(|mut reader| feed(&mut reader, &diff_id, compression, &label, tx)) {
            // The upload has gone (a closed channel) or learns why the layer ends here.
            let _ = errors.blocking_send(Err(e));
        }
    })?;
    Ok(out)
}

/// A bounded channel of pieces, and its reading end as a stream.
pub fn channel() -> (Sender, Compressed) {
    let (tx, rx) = mpsc::channel(QUEUED);
    (tx, Compressed { rx, piece: Vec::new(), at: 0, ended: false })
}

/// The writing end of a `channel`.
pub type Sender = mpsc::Sender<std::io::Result<Vec<u8>>>;

/// Compresses what `reader` yields into `tx`, on this thread, checking it hashes to `diff_id`.
pub fn feed(
    reader: &mut dyn Read,
    diff_id: &Digest,
    compression: Compression,
    label: &str,
    tx: Sender,
) -> std::io::Result<()> {
    let sink = ChannelWriter { tx, buf: Vec::with_capacity(PIECE) };
    let mut encoder = Encoder::new(sink, compression)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; PIECE];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        encoder.write_all(&buf[..n])?;
    }
    let actual = Digest::from_sha256(&hasher.finalize());
    if &actual != diff_id {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{label} is corrupt: it hashes to {actual}, its diff_id is {diff_id}"),
        ));
    }
    encoder.finish()?.flush_all()
}

/// Copies what `reader` yields into `tx` as it is, on this thread.
pub fn copy(reader: &mut dyn Read, tx: Sender) -> std::io::Result<()> {
    let mut sink = ChannelWriter { tx, buf: Vec::with_capacity(PIECE) };
    std::io::copy(reader, &mut sink)?;
    sink.flush_all()
}

/// The bytes `reader` yields, as a stream, read on a thread of its own.
pub fn pipe(mut reader: Box<dyn Read + Send>) -> std::io::Result<Compressed> {
    let (tx, out) = channel();
    std::thread::Builder::new().name("pipe".into()).spawn(move || {
        let errors = tx.clone();
        if let Err(e) = copy(&mut reader, tx) {
            let _ = errors.blocking_send(Err(e));
        }
    })?;
    Ok(out)
}

/// The compressed bytes of a layer, as they are made.
/// The writer ends the stream with an empty piece: a channel that closes without one (a thread
/// that stopped half-way) is an error, never a clean end.
pub struct Compressed {
    rx: mpsc::Receiver<std::io::Result<Vec<u8>>>,
    piece: Vec<u8>,
    at: usize,
    ended: bool,
}

impl tokio::io::AsyncRead for Compressed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        while self.at == self.piece.len() {
            if self.ended {
                return Poll::Ready(Ok(()));
            }
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(Ok(piece))) if piece.is_empty() => self.ended = true,
                Poll::Ready(Some(Ok(piece))) => {
                    self.piece = piece;
                    self.at = 0;
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                Poll::Ready(None) => {
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the layer's compressor stopped before the end",
                    )));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        let n = (self.piece.len() - self.at).min(buf.remaining());
        let at = self.at;
        buf.put_slice(&self.piece[at..at + n]);
        self.at += n;
        Poll::Ready(Ok(()))
    }
}

/// Hands compressed bytes to the upload in pieces; fails once the upload has gone.
struct ChannelWriter {
    tx: mpsc::Sender<std::io::Result<Vec<u8>>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let piece = std::mem::replace(&mut self.buf, Vec::with_capacity(PIECE));
        self.tx
            .blocking_send(Ok(piece))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the upload stopped reading"))
    }

    /// Sends what is left, then the empty piece that ends the stream.
    fn flush_all(mut self) -> std::io::Result<()> {
        self.send()?;
        self.tx
            .blocking_send(Ok(Vec::new()))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the upload stopped reading"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= PIECE {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// gzip or zstd on every core, the same bytes whatever their number (see `pgzip`; zstd's
/// workers cut the input into jobs by size, not by worker count).
enum Encoder<W: Write> {
    Gzip(super::pgzip::ParallelGz<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Encoder<W> {
    fn new(sink: W, c: Compression) -> std::io::Result<Encoder<W>> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok(if c.zstd() {
            let mut e = zstd::stream::write::Encoder::new(sink, c.level as i32)?;
            e.multithread(threads as u32)?;
            Encoder::Zstd(e)
        } else {
            Encoder::Gzip(super::pgzip::ParallelGz::new(sink, c.level, threads))
        })
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match self {
            Encoder::Gzip(e) => e.write_all(buf),
            Encoder::Zstd(e) => e.write_all(buf),
        }
    }

    fn finish(self) -> std::io::Result<W> {
        match self {
            Encoder::Gzip(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use tokio::io::AsyncReadExt;

    use super::*;

    fn layer(n: usize) -> Vec<u8> {
        (0..n as u32).flat_map(|i| (i % 251).to_le_bytes()).collect()
    }

    async fn compressed(data: Vec<u8>, diff_id: Digest, c: Compression) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        stream(move || Ok(Box::new(std::io::Cursor::new(data))), diff_id, c, "layer".into())?
            .read_to_end(&mut out)
            .await?;
        Ok(out)
    }

    /// A channel that closes without the end piece (a thread that stopped half-way) is an
    /// error, never a clean end: a truncated layer is never completed.
    #[tokio::test]
    async fn a_stream_cut_without_its_end_is_an_error() {
        let (tx, mut out) = channel();
        std::thread::spawn(move || {
            tx.blocking_send(Ok(vec![1, 2, 3])).unwrap();
        })
        .join()
        .unwrap();
        let mut got = Vec::new();
        let e = out.read_to_end(&mut got).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
        assert_eq!(got, [1, 2, 3]);
        let (tx, mut out) = channel();
        std::thread::spawn(move || copy(&mut &b"abc"[..], tx).unwrap()).join().unwrap();
        let mut got = Vec::new();
        out.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"abc");
    }

    /// zstd's workers cut the input into jobs by size, so the frame is the same bytes whatever
    /// their number (what makes a layer's digest the same on every runner).
    #[test]
    fn zstd_is_the_same_on_1_2_and_8_workers() {
        let data = layer(3_000_000);
        let frame = |workers: u32| {
            let mut e = zstd::stream::write::Encoder::new(Vec::new(), ZSTD_LEVEL).unwrap();
            e.multithread(workers).unwrap();
            e.write_all(&data).unwrap();
            e.finish().unwrap()
        };
        let one = frame(1);
        assert_eq!(zstd::decode_all(&one[..]).unwrap(), data);
        assert_eq!(frame(2), one);
        assert_eq!(frame(8), one);
    }

    /// The stream is the layer compressed (the same bytes each time), and a layer that does not
    /// hash to its diff_id ends in an error, never in a clean end.
    #[tokio::test]
    async fn the_stream_is_the_layer_compressed_and_a_corrupt_layer_is_an_error() {
        let data = layer(1_500_000);
        let diff_id = Digest::of(&data);
        for c in [Compression::new(LayerCompression::Gzip, None), Compression::new(LayerCompression::Zstd, Some(5))] {
            let c = c.unwrap();
            let once = compressed(data.clone(), diff_id.clone(), c).await.unwrap();
            assert_eq!(compressed(data.clone(), diff_id.clone(), c).await.unwrap(), once);
            let plain = if c.zstd() {
                zstd::decode_all(&once[..]).unwrap()
            } else {
                let mut out = Vec::new();
                flate2::read::GzDecoder::new(&once[..]).read_to_end(&mut out).unwrap();
                out
            };
            assert_eq!(plain, data);
            let e = compressed(data.clone(), Digest::of(b"other"), c).await.unwrap_err();
            assert!(e.to_string().contains("layer is corrupt: it hashes to"), "{e}");
        }
    }
}
