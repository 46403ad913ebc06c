//! The reader every streamed blob upload reads its source through: it counts what went out,
//! and stops the body before its last bytes when the source does not have its descriptor's
//! size or (with `transfer.verify: client`) its digest.

use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};

use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncRead, ReadBuf};

use crate::types::Digest;

/// What the body stream found wrong with the source.
#[derive(Clone, Debug)]
pub(super) enum Mismatch {
    /// The content hashes to this, not to its digest (only when the client verifies).
    Digest(Digest),
    /// The source had this many bytes, not its descriptor's size.
    Size(u64),
}

/// Progress shared between the body stream (which reqwest owns) and the uploader.
#[derive(Clone, Default)]
pub(super) struct Progress(std::sync::Arc<Mutex<(u64, Option<Mismatch>)>>);

impl Progress {
    pub(super) fn snapshot(&self) -> (u64, Option<Mismatch>) {
        self.0.lock().map(|g| g.clone()).unwrap_or_default()
    }
}

/// Counts bytes as they are read, and fails the stream before its last bytes go out when the
/// source does not have its descriptor's size — or, with `transfer.verify: client` (`hash`),
/// does not hash to its digest. Without it the registry checks the digest it is given (distribution,
/// GHCR, ECR and Docker Hub refuse a mismatch), so the bytes are not hashed twice. The checks
/// run on reaching the expected size, because the HTTP client stops reading the body at
/// `Content-Length` and may never see the end of the stream.
pub(super) struct CheckedReader<R> {
    inner: R,
    hasher: Option<Sha256>,
    expected: Digest,
    size: u64,
    read: u64,
    progress: Progress,
}

impl<R> CheckedReader<R> {
    pub(super) fn new(inner: R, expected: Digest, size: u64, hash: bool) -> (Self, Progress) {
        let progress = Progress::default();
        let hasher = hash.then(Sha256::new);
        let reader = CheckedReader { inner, hasher, expected, size, read: 0, progress: progress.clone() };
        (reader, progress)
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for CheckedReader<R> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let Poll::Ready(result) = Pin::new(&mut this.inner).poll_read(cx, buf) else {
            return Poll::Pending;
        };
        result?;
        let new = &buf.filled()[before..];
        this.read += new.len() as u64;
        if let Some(h) = &mut this.hasher {
            h.update(new);
        }
        let mismatch = if this.read > this.size || (new.is_empty() && this.read != this.size) {
            Some(Mismatch::Size(this.read))
        } else if this.read == this.size {
            this.hasher
                .as_ref()
                .map(|h| Digest::from_sha256(&h.clone().finalize()))
                .filter(|actual| *actual != this.expected)
                .map(Mismatch::Digest)
        } else {
            None
        };
        if let Ok(mut p) = this.progress.0.lock() {
            *p = (this.read, mismatch.clone());
        }
        if mismatch.is_some() {
            buf.set_filled(before);
            return Poll::Ready(Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "source digest mismatch")));
        }
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::{CheckedReader, Mismatch};
    use crate::types::Digest;

    async fn read_all(
        data: &[u8],
        digest: &Digest,
        size: u64,
        hash: bool,
    ) -> (std::io::Result<Vec<u8>>, Option<Mismatch>) {
        use tokio::io::AsyncReadExt;
        let (mut r, progress) = CheckedReader::new(std::io::Cursor::new(data.to_vec()), digest.clone(), size, hash);
        let mut out = Vec::new();
        let result = r.read_to_end(&mut out).await.map(|_| out);
        (result, progress.snapshot().1)
    }

    #[tokio::test]
    async fn sizes_are_always_checked_and_digests_only_when_asked() {
        let good = Digest::of(b"hello");
        assert!(read_all(b"hello", &good, 5, false).await.0.is_ok());
        assert!(read_all(b"hello", &good, 5, true).await.0.is_ok());
        // Same size, other bytes: only the client-side hash sees it (the registry would refuse).
        assert!(read_all(b"jello", &good, 5, false).await.0.is_ok());
        assert!(matches!(read_all(b"jello", &good, 5, true).await.1, Some(Mismatch::Digest(_))));
        // Shorter than the descriptor says: caught either way.
        assert!(matches!(read_all(b"hell", &good, 5, false).await.1, Some(Mismatch::Size(4))));
    }
}
