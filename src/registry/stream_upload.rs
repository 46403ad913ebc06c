//! Blobs whose digest is known only once their last byte is read: a layer compressed while it
//! is pushed. The session is opened (POST), fed as the bytes come (one streaming PATCH, as
//! `docker push` sends layers, or PATCH chunks of the upload mode's size, each held in memory
//! once), hashed on the way, and closed with the digest found (PUT `?digest=`). A part that
//! fails is sent again from where the registry says it stands; any other failure starts the
//! blob again from a fresh source (the compressors are deterministic, so the bytes are the
//! same). A streaming PATCH cut half way is not resumed: distribution drops such a session.

use std::sync::{Arc, Mutex};

use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::{Method, StatusCode};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::upload::{OpenAt, UploadMode, UploadStats};
use super::{Client, RegistryError};
use crate::types::Digest;

/// A blob uploaded from a stream: its digest and size, found on the way.
#[derive(Debug, Clone)]
pub struct Streamed {
    pub digest: Digest,
    pub size: u64,
    pub stats: UploadStats,
}

impl Client {
    /// Uploads what `open(0)` yields, of about `size_hint` bytes (its bound on time), and
    /// returns its digest and size.
    pub async fn upload_stream<F: OpenAt>(&self, open: F, size_hint: u64) -> Result<Streamed, RegistryError> {
        let mut stats = UploadStats::default();
        let settings = self.config;
        let limit = settings.upload_deadline(size_hint) + settings.retry_deadline();
        let bound = super::transport::Bound::new(limit, || {
            format!(
                "an upload of up to {size_hint} bytes may take transfer.request_timeout ({} s) + its size at transfer.min_rate ({} bytes/s), {} s with retries",
                settings.request_timeout.as_secs(),
                settings.min_rate,
                limit.as_secs()
            )
        });
        loop {
            stats.attempts += 1;
            let attempt = async {
                match self.mode {
                    UploadMode::Monolithic => self.stream_once(&open, size_hint, &mut stats).await,
                    // The configured part size: the compressed size, which the part count
                    // depends on, is known only at the end (more parts than the registry
                    // takes is an error that names the fix).
                    UploadMode::Chunked { chunk, max_parts } => {
                        self.stream_chunks(&open, (chunk.max(1), max_parts), &mut stats).await
                    }
                }
            };
            match bound.cut(self, "a compressed layer's upload", attempt).await? {
                Ok((digest, size)) => return Ok(Streamed { digest, size, stats }),
                Err(e) if self.should_retry(&e, stats.attempts, bound.started, bound.limit) => {
                    let wait = self.backoff(&e, stats.attempts);
                    tracing::warn!(registry = %self.registry, error = %e, ?wait, "restarting a compressed layer's upload");
                    bound.sleep(self, wait, &e).await?;
                }
                Err(RegistryError::Unauthorized { .. }) if stats.attempts == 1 => self.authenticate().await?,
                Err(e) => return Err(e),
            }
        }
    }

    /// One PATCH whose body streams (chunked transfer encoding), then the closing PUT.
    async fn stream_once<F: OpenAt>(
        &self,
        open: &F,
        size_hint: u64,
        stats: &mut UploadStats,
    ) -> Result<(Digest, u64), RegistryError> {
        let location = self.start_upload().await?;
        let reader = open(0).await.map_err(RegistryError::Source)?;
        let (hashing, tally) = Hashing::new(reader);
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(hashing, 256 * 1024));
        let req = self
            .http
            .patch(location.clone())
            .header(CONTENT_TYPE, "application/octet-stream")
            .timeout(self.config.upload_deadline(size_hint))
            .body(body);
        let req = self.authorize(req, &location);
        tracing::debug!(url = %location.path(), "streaming a compressed layer");
        let answer = req.send().await;
        let (digest, size, source_failed, ended) = tally.finish();
        stats.bytes_sent += size;
        // The source's own failure (a corrupt layer) first; then the transport's and the
        // registry's, which a retry may cure; a registry that answered before the end last.
        if let Some(e) = source_failed {
            return Err(RegistryError::Source(e));
        }
        let resp = answer.map_err(|e| self.transport_error(e))?;
        if !resp.status().is_success() {
            return Err(self.api_error(resp).await);
        }
        if !ended {
            return Err(self.refused("the registry answered before the end of the compressed layer".into()));
        }
        let next = if resp.headers().contains_key(LOCATION) { self.location(&location, &resp)? } else { location };
        self.close_upload(next, &digest).await?;
        Ok((digest, size))
    }

    /// PATCH chunks of `chunk` bytes (each read whole before it is sent), then the closing PUT.
    async fn stream_chunks<F: OpenAt>(
        &self,
        open: &F,
        (chunk, max_parts): (u64, Option<u64>),
        stats: &mut UploadStats,
    ) -> Result<(Digest, u64), RegistryError> {
        let mut location = self.start_upload().await?;
        let mut reader = open(0).await.map_err(RegistryError::Source)?;
        let mut hasher = Sha256::new();
        let mut offset = 0u64;
        let mut parts = 0u64;
        loop {
            let mut bytes = Vec::with_capacity(chunk as usize);
            (&mut reader).take(chunk).read_to_end(&mut bytes).await.map_err(RegistryError::Source)?;
            if bytes.is_empty() {
                break;
            }
            let len = bytes.len() as u64;
            parts += 1;
            if let Some(max) = max_parts
                && parts > max
            {
                return Err(self.refused(format!(
                    "a compressed layer needs more than {max} parts of {chunk} bytes, the most this registry takes: set a larger chunk size"
                )));
            }
            location = self.send_part(location, offset, &bytes, stats).await?;
            hasher.update(&bytes);
            offset += len;
            if len < chunk {
                break;
            }
        }
        let digest = Digest::from_sha256(&hasher.finalize());
        self.close_upload(location, &digest).await?;
        Ok((digest, offset))
    }

    /// One part at `offset` of the session at `location`; returns where the session goes on. A
    /// PATCH that fails asks the registry where it stands and sends the rest of the part from
    /// there (the part is in memory: nothing is compressed again); a registry that kept less
    /// than it acknowledged, or forgot the session, is an error that restarts the layer.
    async fn send_part(
        &self,
        mut location: url::Url,
        offset: u64,
        bytes: &[u8],
        stats: &mut UploadStats,
    ) -> Result<url::Url, RegistryError> {
        let len = bytes.len() as u64;
        let mut held = 0u64;
        let mut failures = 0u32;
        while held < len {
            let url = location.clone();
            let error = match self.patch_chunk(&url, offset + held, &bytes[held as usize..], stats).await? {
                Ok(resp) if resp.status().is_success() => {
                    if resp.headers().contains_key(LOCATION) {
                        location = self.location(&url, &resp)?;
                    }
                    return Ok(location);
                }
                Ok(resp) => self.api_error(resp).await,
                Err(e) => e,
            };
            failures += 1;
            let (kept, next) = self.resume_point(error, failures, &location, (offset + held, offset + len)).await?;
            held = kept - offset;
            location = next;
            stats.resumes += 1;
        }
        Ok(location)
    }

    /// The PUT that completes a session with the digest of what it was fed.
    async fn close_upload(&self, mut location: url::Url, digest: &Digest) -> Result<(), RegistryError> {
        location.query_pairs_mut().append_pair("digest", digest.as_str());
        let answer = self.send(Method::PUT, location, |r| r.header(CONTENT_LENGTH, "0")).await;
        if let Ok(resp) = &answer
            && resp.status() == StatusCode::NOT_FOUND
        {
            tracing::debug!(registry = %self.registry, "the session was gone at its close");
        }
        // `send` retried already: its error is final.
        self.completed(answer, false, digest, |e| e).await
    }
}

/// A reader that hashes and counts what passes, and keeps the source's error (a corrupt layer)
/// apart from the transport's.
struct Hashing<R> {
    inner: R,
    tally: Arc<Mutex<Tally>>,
}

#[derive(Default)]
struct Tally {
    hasher: Sha256,
    size: u64,
    error: Option<std::io::Error>,
    ended: bool,
}

/// What a `Hashing` reader saw, read after the request.
struct TallyHandle(Arc<Mutex<Tally>>);

impl TallyHandle {
    /// The digest and size of what passed, the source's error, and whether the source was read
    /// to its end.
    fn finish(self) -> (Digest, u64, Option<std::io::Error>, bool) {
        let mut t = match self.0.lock() {
            Ok(t) => t,
            Err(poisoned) => poisoned.into_inner(),
        };
        let error = t.error.take();
        let hasher = std::mem::take(&mut t.hasher);
        (Digest::from_sha256(&hasher.finalize()), t.size, error, t.ended)
    }
}

impl<R> Hashing<R> {
    fn new(inner: R) -> (Hashing<R>, TallyHandle) {
        let tally = Arc::new(Mutex::new(Tally::default()));
        (Hashing { inner, tally: tally.clone() }, TallyHandle(tally))
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Hashing<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if let std::task::Poll::Ready(result) = &poll
            && let Ok(mut t) = self.tally.lock()
        {
            match result {
                Ok(()) => {
                    let new = &buf.filled()[before..];
                    if new.is_empty() {
                        t.ended = true;
                    }
                    t.hasher.update(new);
                    t.size += new.len() as u64;
                }
                Err(e) => t.error = Some(std::io::Error::new(e.kind(), e.to_string())),
            }
        }
        poll
    }
}
