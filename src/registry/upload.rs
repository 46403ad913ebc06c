//! Blob uploads: a session is begun (POST), fed (one streaming PUT, or PATCH chunks that
//! continue after a failure from the offset the session status reports) and finished (PUT
//! with the digest). The registry checks the digest it is given, so a corrupt source never
//! completes a blob; `transfer.verify: client` also hashes every byte on the way. Over plain
//! HTTP (loopback registries), a blob that is a range of a file goes with sendfile(2).

use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::{Method, StatusCode};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncRead;
use url::Url;

use super::checked::{CheckedReader, Mismatch};
use super::{Client, RegistryError};
use crate::types::Digest;

/// A blob as a byte range of a file on disk, for zero-copy sends, and what to tell of progress.
pub struct FileRange<'a> {
    pub file: &'a std::fs::File,
    pub start: u64,
    pub sent: &'a (dyn Fn(u64) + Send + Sync),
}

/// What one blob upload did.
#[derive(Debug, Clone, Copy, Default)]
pub struct UploadStats {
    /// Every byte put on the wire, including bytes sent again after a failure.
    pub bytes_sent: u64,
    pub attempts: u32,
    /// Times a chunked upload continued where the registry said it stood.
    pub resumes: u32,
}

impl UploadStats {
    /// Bytes sent more than once, for an upload of `size` bytes that succeeded.
    pub fn bytes_resent(&self, size: u64) -> u64 {
        self.bytes_sent.saturating_sub(size)
    }
}

/// How blobs go up: one streaming PUT, or PATCH chunks (resumable where the registry reports
/// how much it kept, as the OCI spec's upload status does).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UploadMode {
    #[default]
    Monolithic,
    Chunked {
        chunk: u64,
        /// The most parts the registry takes for one blob: a larger blob goes in larger chunks.
        max_parts: Option<u64>,
    },
}

impl UploadMode {
    /// The chunk size for a blob of `size` bytes: the configured one, or, when that would take
    /// more than `max_parts` parts, the smallest whole MiB that fits (a 9.5 GB layer on ECR
    /// Public: 10 MiB parts, 906 of them).
    pub fn chunk_for(chunk: u64, max_parts: Option<u64>, size: u64) -> u64 {
        const MIB: u64 = 1024 * 1024;
        match max_parts {
            Some(n) if size.div_ceil(chunk.max(1)) > n => size.div_ceil(n.max(1)).div_ceil(MIB) * MIB,
            _ => chunk.max(1),
        }
    }
}

/// Opens a blob's source at a byte offset: what an upload reads from, and reopens where a
/// resume moves the offset.
pub trait OpenAt: Fn(u64) -> Self::Opening {
    type Opening: std::future::Future<Output = std::io::Result<Self::Reader>>;
    type Reader: AsyncRead + Send + Unpin + 'static;
}

impl<F, Fut, R> OpenAt for F
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = std::io::Result<R>>,
    R: AsyncRead + Send + Unpin + 'static,
{
    type Opening = Fut;
    type Reader = R;
}

/// A source blob that does not have its descriptor's size.
fn size_mismatch(digest: &Digest, had: u64, size: u64) -> RegistryError {
    RegistryError::Source(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!(
            "source blob {digest} has {had} bytes or more, its descriptor says {size}: the image on disk is corrupt"
        ),
    ))
}

/// The registry's `DIGEST_INVALID` for a blob we sent: the source is corrupt.
fn refused_digest(e: RegistryError, digest: &Digest) -> RegistryError {
    match e {
        RegistryError::Api { code: super::ErrorCode::DigestInvalid, .. } => {
            RegistryError::DigestRefused { digest: digest.clone() }
        }
        other => other,
    }
}

/// The bytes an upload status `Range` (`0-N`, inclusive) says the session holds. Distribution
/// 2.8 answers `0-0` for an empty session, so `0-0` is read as nothing kept: resending one
/// byte costs nothing, skipping one corrupts the blob.
fn kept_bytes(range: Option<&str>) -> u64 {
    match range.and_then(|r| r.trim_start_matches("bytes=").split_once('-')) {
        Some((_, "0")) | None => 0,
        Some((_, end)) => end.parse::<u64>().map_or(0, |e| e + 1),
    }
}

impl Client {
    /// Uploads one blob, read from `open(offset)` through a `CheckedReader` (its size always
    /// checked, its digest hashed only with `transfer.verify: client`). A chunked upload that
    /// fails part way asks the registry where it stands and continues from there; where the
    /// registry keeps nothing (2.8 drops a session cut mid-stream), this blob restarts, never
    /// the image.
    ///
    /// `file` (the blob as a byte range of a file, with a progress callback) lets a monolithic
    /// upload over plain HTTP go with sendfile(2), when the client does not hash what it sends.
    pub async fn upload_blob<F: OpenAt>(
        &self,
        digest: &Digest,
        size: u64,
        open: F,
        file: Option<FileRange<'_>>,
    ) -> Result<UploadStats, RegistryError> {
        let mut stats = UploadStats::default();
        let settings = self.config;
        let bound = super::transport::Bound::new(settings.upload_deadline(size) + settings.retry_deadline(), || {
            format!(
                "an upload of {size} bytes may take transfer.request_timeout ({} s) + its size at transfer.min_rate ({} bytes/s), {} s with retries",
                settings.request_timeout.as_secs(),
                settings.min_rate,
                (settings.upload_deadline(size) + settings.retry_deadline()).as_secs()
            )
        });
        loop {
            stats.attempts += 1;
            let attempt = async {
                match (self.mode, &file) {
                    #[cfg(target_os = "linux")]
                    (UploadMode::Monolithic, Some(file)) if self.sends_files_zero_copy() => {
                        self.upload_sendfile(digest, size, file, &mut stats).await
                    }
                    (UploadMode::Monolithic, _) => self.upload_once(digest, size, &open, &mut stats).await,
                    (UploadMode::Chunked { chunk, max_parts }, _) => {
                        let chunk = UploadMode::chunk_for(chunk, max_parts, size);
                        self.upload_chunked(digest, size, chunk, &open, &mut stats).await
                    }
                }
            };
            let result = bound.cut(self, &format!("the upload of blob {digest}"), attempt).await?;
            match result {
                Ok(()) => return Ok(stats),
                Err(e) if self.should_retry(&e, stats.attempts, bound.started, bound.limit) => {
                    let wait = self.backoff(&e, stats.attempts);
                    tracing::warn!(registry = %self.registry, %digest, error = %e, ?wait, "restarting blob upload");
                    bound.sleep(self, wait, &e).await?;
                }
                Err(RegistryError::Unauthorized { .. }) if stats.attempts == 1 => {
                    self.authenticate().await?;
                }
                // Distribution refuses the digest of one of two uploads of the same blob at one
                // moment (overlapping runs of one image): content-addressed, a blob it then
                // holds with this size is these bytes.
                Err(RegistryError::DigestRefused { .. }) if matches!(self.blob_head(digest).await, Ok(Some(held)) if held.is_none_or(|h| h == size)) =>
                {
                    tracing::info!(registry = %self.registry, %digest, "uploaded at the same time by another client: it is there");
                    return Ok(stats);
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn upload_once<F: OpenAt>(
        &self,
        digest: &Digest,
        size: u64,
        open: &F,
        stats: &mut UploadStats,
    ) -> Result<(), RegistryError> {
        let mut location = self.start_upload().await?;
        location.query_pairs_mut().append_pair("digest", digest.as_str());

        let reader = open(0).await.map_err(RegistryError::Source)?;
        let verify = self.config.verify_client;
        let (checked, progress) = CheckedReader::new(reader, digest.clone(), size, verify);
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(checked, 256 * 1024));
        let req = self
            .http
            .put(location.clone())
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_LENGTH, size)
            .timeout(self.config.upload_deadline(size))
            .body(body);
        let req = self.authorize(req, &location);
        tracing::debug!(url = %location.path(), %digest, size, "uploading blob");
        let result = req.send().await;
        let (read, mismatch) = progress.snapshot();
        stats.bytes_sent += read;
        match mismatch {
            Some(Mismatch::Digest(actual)) => {
                return Err(RegistryError::CorruptSource { digest: digest.clone(), actual });
            }
            Some(Mismatch::Size(had)) => return Err(size_mismatch(digest, had, size)),
            None => {}
        }
        self.completed(result, read == size, digest, |e| self.transport_error(e)).await
    }

    /// The answer to the request that completes a blob (`PUT …?digest=`), whichever way its
    /// bytes went. An answer lost after every byte went out (`all_sent`) is looked into before
    /// anything is sent again: the blob may be complete anyway.
    pub(super) async fn completed<E: std::fmt::Display>(
        &self,
        answer: Result<reqwest::Response, E>,
        all_sent: bool,
        digest: &Digest,
        error: impl FnOnce(E) -> RegistryError,
    ) -> Result<(), RegistryError> {
        let resp = match answer {
            Ok(resp) => resp,
            Err(e) if all_sent && self.blob_exists(digest).await.unwrap_or(false) => {
                tracing::warn!(registry = %self.registry, %digest, "the upload's answer was lost ({e}), but the blob is there");
                return Ok(());
            }
            Err(e) => return Err(error(e)),
        };
        if resp.status() != StatusCode::CREATED && !resp.status().is_success() {
            return Err(refused_digest(self.api_error(resp).await, digest));
        }
        self.check_stored_digest(&resp, digest)
    }

    /// Whether `upload_blob` sends a `FileRange` with sendfile(2): a monolithic upload over
    /// plain HTTP, on Linux, when the client does not hash what it sends.
    pub fn sends_files_zero_copy(&self) -> bool {
        cfg!(target_os = "linux")
            && self.mode == UploadMode::Monolithic
            && self.base.scheme() == "http"
            && !self.config.verify_client
    }

    /// A registry that says it stored the blob under another digest did not store ours.
    fn check_stored_digest(&self, resp: &reqwest::Response, digest: &Digest) -> Result<(), RegistryError> {
        match resp.headers().get("docker-content-digest").and_then(|v| v.to_str().ok()) {
            Some(theirs) if theirs != digest.as_str() => Err(RegistryError::Refused {
                registry: self.registry.clone(),
                message: format!("stored blob {digest} as {theirs}"),
            }),
            _ => Ok(()),
        }
    }

    /// Opens an upload session and returns its URL.
    pub(super) async fn start_upload(&self) -> Result<Url, RegistryError> {
        let start = self.uploads_url();
        let resp = self.send(Method::POST, start.clone(), |r| r.header(CONTENT_LENGTH, "0")).await?;
        if !upload_started(resp.status()) {
            return Err(self.api_error(resp).await);
        }
        self.location(&start, &resp)
    }

    /// Where an upload session is opened (POST).
    pub(super) fn uploads_url(&self) -> Url {
        self.url(&format!("v2/{}/blobs/uploads/", self.repository))
    }

    /// PATCH chunks, continuing after a failure from the offset the upload status reports.
    async fn upload_chunked<F: OpenAt>(
        &self,
        digest: &Digest,
        size: u64,
        chunk: u64,
        open: &F,
        stats: &mut UploadStats,
    ) -> Result<(), RegistryError> {
        let mut location = self.start_upload().await?;
        // Hashed here only with `transfer.verify: client`; the registry checks the digest anyway.
        let mut hasher = self.config.verify_client.then(Sha256::new);
        let mut offset = 0u64;
        let mut failures = 0u32;
        // One reader for the whole blob, reopened only where a resume moves the offset (for a
        // `docker://` source, each open is a request to the source registry).
        let mut reader: Option<(u64, F::Reader)> = None;
        while offset < size {
            let len = chunk.min(size - offset);
            let bytes = read_chunk(open, &mut reader, offset, len).await?;
            let url = location.clone();
            tracing::debug!(url = %url.path(), offset, len, "uploading chunk");
            let outcome = self.patch_chunk(&url, offset, &bytes, stats).await?;
            let error = match outcome {
                Ok(resp) if resp.status().is_success() => {
                    // ECR answers 201 and a stuck Range: the offset is ours to track.
                    if resp.headers().contains_key(LOCATION) {
                        location = self.location(&url, &resp)?;
                    }
                    if let Some(h) = &mut hasher {
                        h.update(&bytes);
                    }
                    offset += len;
                    continue;
                }
                Ok(resp) => self.api_error(resp).await,
                Err(e) => e,
            };
            failures += 1;
            let (kept, next) = self.resume_point(error, failures, &location, (offset, offset + len)).await?;
            if let Some(h) = &mut hasher {
                h.update(&bytes[..(kept - offset) as usize]);
            }
            offset = kept;
            location = next;
            stats.resumes += 1;
        }
        if let Some(actual) = hasher.map(|h| Digest::from_sha256(&h.finalize()))
            && &actual != digest
        {
            return Err(RegistryError::CorruptSource { digest: digest.clone(), actual });
        }
        let mut done = location.clone();
        done.query_pairs_mut().append_pair("digest", digest.as_str());
        let answer = self.send(Method::PUT, done, |r| r.header(CONTENT_LENGTH, "0")).await;
        // `send` retried already: its error is final.
        self.completed(answer, false, digest, |e| e).await
    }

    /// One PATCH of `bytes` at `offset` of the session at `url`, sent again once with a fresh
    /// token when the registry answers 401 (a token that expired mid-upload). The outer error
    /// is the authentication's; the inner result is the PATCH's.
    pub(super) async fn patch_chunk(
        &self,
        url: &Url,
        offset: u64,
        bytes: &[u8],
        stats: &mut UploadStats,
    ) -> Result<Result<reqwest::Response, RegistryError>, RegistryError> {
        let len = bytes.len() as u64;
        let range = format!("{}-{}", offset, offset + len.max(1) - 1);
        let build = |r: reqwest::RequestBuilder| {
            r.header(CONTENT_TYPE, "application/octet-stream")
                .timeout(self.config.upload_deadline(len))
                .header(CONTENT_LENGTH, len)
                .header("Content-Range", range.as_str())
                .body(bytes.to_vec())
        };
        stats.bytes_sent += len;
        match self.attempt(&Method::PATCH, url, &build, true).await {
            Ok(resp) if resp.status() == StatusCode::UNAUTHORIZED => {
                self.authenticate().await?;
                stats.bytes_sent += len;
                Ok(self.attempt(&Method::PATCH, url, &build, true).await)
            }
            other => Ok(other),
        }
    }

    /// After a PATCH of the bytes `from..to` of the session at `location` failed with `error`
    /// (the `failures`th time): waits, asks the session where it stands (OCI spec: GET on the
    /// upload URL, 204 and `Range`) and returns what it kept and the URL to go on at. The error
    /// itself when it is not one to resume or the attempts are spent; a session that kept less
    /// than it acknowledged (`from`), or more than was sent, is lost: the blob starts again.
    pub(super) async fn resume_point(
        &self,
        error: RegistryError,
        failures: u32,
        location: &Url,
        (from, to): (u64, u64),
    ) -> Result<(u64, Url), RegistryError> {
        let resumable = error.retryable() || matches!(error, RegistryError::Api { status: 416, .. });
        if !resumable || failures >= self.retry().attempts {
            return Err(error);
        }
        tokio::time::sleep(self.retry().delay(failures)).await;
        let (kept, next) = self.upload_status(location).await.inspect_err(|_| {
            tracing::warn!(registry = %self.registry, %error, "a part failed, and its session could not be asked where it stands");
        })?;
        if kept < from || kept > to {
            return Err(RegistryError::session_lost(
                &self.registry,
                format!("the upload session kept {kept} bytes, expected {from} to {to}"),
            ));
        }
        tracing::warn!(registry = %self.registry, offset = kept, %error, "resuming the upload where the registry stands");
        Ok((kept, next))
    }

    /// The bytes an upload session holds and the URL to continue at. A session the registry
    /// no longer knows (2.8 after a cut, ECR's 404) is `BLOB_UPLOAD_UNKNOWN`: restart the blob.
    pub(super) async fn upload_status(&self, location: &Url) -> Result<(u64, Url), RegistryError> {
        let resp = self.attempt(&Method::GET, location, &|r| r, true).await?;
        if resp.status() != StatusCode::NO_CONTENT && !resp.status().is_success() {
            let status = resp.status().as_u16();
            tracing::warn!(registry = %self.registry, status, "the upload session is gone: restarting this blob");
            return Err(RegistryError::session_lost(&self.registry, format!("upload status answered {status}")));
        }
        let kept = kept_bytes(resp.headers().get(reqwest::header::RANGE).and_then(|v| v.to_str().ok()));
        let next =
            if resp.headers().contains_key(LOCATION) { self.location(location, &resp)? } else { location.clone() };
        Ok((kept, next))
    }
}

/// Reads `len` bytes of the source from `offset` (one chunk: bounded by the chunk size),
/// continuing with `reader` when it stands at `offset`, else opening the source there.
async fn read_chunk<F: OpenAt>(
    open: &F,
    reader: &mut Option<(u64, F::Reader)>,
    offset: u64,
    len: u64,
) -> Result<Vec<u8>, RegistryError> {
    use tokio::io::AsyncReadExt;
    // A failed read leaves no reader: the next chunk opens the source afresh.
    let mut source = match reader.take() {
        Some((at, source)) if at == offset => source,
        _ => open(offset).await.map_err(RegistryError::Source)?,
    };
    let mut buf = Vec::with_capacity(len as usize);
    (&mut source).take(len).read_to_end(&mut buf).await.map_err(RegistryError::Source)?;
    *reader = Some((offset + buf.len() as u64, source));
    if buf.len() as u64 != len {
        return Err(RegistryError::Source(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("the source ended at {} bytes, {len} were expected", offset + buf.len() as u64),
        )));
    }
    Ok(buf)
}

/// The answers that open an upload session: 202, or 201 from registries that take the POST as
/// the whole upload.
pub(super) fn upload_started(status: StatusCode) -> bool {
    status == StatusCode::ACCEPTED || status == StatusCode::CREATED
}

#[cfg(test)]
mod chunk_tests {
    use super::UploadMode;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn parts_grow_to_stay_within_the_registrys_limit() {
        // ECR Public: 8 MiB parts up to 8,000 MiB; past that, the smallest whole MiB that keeps
        // 1,000 parts or fewer, up to its 10,000 MiB layer limit.
        assert_eq!(UploadMode::chunk_for(8 * MIB, Some(1000), 100 * MIB), 8 * MIB);
        assert_eq!(UploadMode::chunk_for(8 * MIB, Some(1000), 8000 * MIB), 8 * MIB);
        let layer = 9_500_000_000;
        let part = UploadMode::chunk_for(8 * MIB, Some(1000), layer);
        assert_eq!(part, 10 * MIB);
        assert!(layer.div_ceil(part) <= 1000);
        assert_eq!(UploadMode::chunk_for(8 * MIB, Some(1000), 10_000 * MIB), 10 * MIB);
        // Without a limit the configured size stands.
        assert_eq!(UploadMode::chunk_for(4 * MIB, None, 9_500_000_000), 4 * MIB);
    }
}

#[cfg(test)]
mod tests {
    use super::kept_bytes;

    #[test]
    fn an_empty_session_is_zero_bytes_not_one() {
        assert_eq!(kept_bytes(None), 0);
        assert_eq!(kept_bytes(Some("0-0")), 0);
        assert_eq!(kept_bytes(Some("0-1023")), 1024);
        assert_eq!(kept_bytes(Some("bytes=0-9")), 10);
        assert_eq!(kept_bytes(Some("junk")), 0);
    }
}
