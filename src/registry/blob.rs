//! Blobs: existence (HEAD), small reads checked against their digest (signatures, configs),
//! small in-memory uploads, streamed reads from an offset (`docker://` sources) and
//! cross-repository mounts.

use futures_util::TryStreamExt;
use reqwest::header::{CONTENT_LENGTH, RANGE};
use reqwest::{Method, StatusCode};

use super::{Client, RegistryError};
use crate::image::BlobStream;
use crate::types::Digest;

impl Client {
    /// Whether the repository already has the blob.
    pub async fn blob_exists(&self, digest: &Digest) -> Result<bool, RegistryError> {
        Ok(self.blob_head(digest).await?.is_some())
    }

    /// A HEAD of the blob: `None` when the repository does not have it, else the size its
    /// `Content-Length` reports (`None` inside when the answer carries none).
    pub async fn blob_head(&self, digest: &Digest) -> Result<Option<Option<u64>>, RegistryError> {
        let url = self.url(&format!("v2/{}/blobs/{digest}", self.repository));
        let resp = self.send(Method::HEAD, url, |r| r).await?;
        match resp.status() {
            s if s.is_success() => {
                Ok(Some(resp.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())))
            }
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(self.api_error(resp).await),
        }
    }

    /// A small blob's bytes (signatures, bundles, configs), at most `max`, checked against its
    /// digest; `None` when the repository does not have it.
    pub async fn get_blob(&self, digest: &Digest, max: u64) -> Result<Option<Vec<u8>>, RegistryError> {
        let url = self.url(&format!("v2/{}/blobs/{digest}", self.repository));
        let resp = self.send(Method::GET, url, |r| r).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(self.api_error(resp).await);
        }
        let refused = |message: String| RegistryError::Refused { registry: self.registry.clone(), message };
        let bytes = crate::http::body_limited(resp, max).await.map_err(|e| refused(format!("blob {digest}: {e}")))?;
        let actual = Digest::of(&bytes);
        if &actual != digest {
            return Err(refused(format!("blob {digest} came back as {actual}")));
        }
        Ok(Some(bytes))
    }

    /// Uploads a small in-memory blob (skipped when the repository has it).
    pub async fn put_blob(&self, bytes: &[u8]) -> Result<Digest, RegistryError> {
        let digest = Digest::of(bytes);
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let round = match self.blob_exists(&digest).await {
                Ok(true) => break,
                Ok(false) => {
                    let data = bytes.to_vec();
                    self.upload_blob(
                        &digest,
                        data.len() as u64,
                        |offset| {
                            let mut cursor = std::io::Cursor::new(data.clone());
                            cursor.set_position(offset);
                            async move { std::io::Result::Ok(cursor) }
                        },
                        None,
                    )
                    .await
                    .map(drop)
                }
                Err(e) => Err(e),
            };
            match round {
                Ok(()) => break,
                // Other clients uploading the same bytes at the same moment can make the
                // registry refuse this session's digest, or answer a HEAD or an upload with a
                // bare 500 past the request's own retries (distribution 2.8 under 32 concurrent
                // signers, whose payloads and configs are the same): the blob is
                // content-addressed, so once the registry holds it under this digest it is
                // this one. Asked again, a few times.
                Err(
                    RegistryError::DigestRefused { .. }
                    | RegistryError::Api { code: super::ErrorCode::DigestInvalid, .. }
                    | RegistryError::Api { status: 500, .. },
                ) if attempt < 4 => {
                    tracing::debug!(%digest, "an upload of the same blob at the same time: asking again");
                    let jitter = fastrand::u64(0..25);
                    tokio::time::sleep(std::time::Duration::from_millis(25 * u64::from(attempt) + jitter)).await;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(digest)
    }

    /// A blob's bytes from `offset`, as a stream (redirects to object storage are followed,
    /// without the credentials). The whole read, body included, may take what an upload of the
    /// rest of its `size` bytes may (`transfer.request_timeout` + the size at `transfer.min_rate`),
    /// not a small request's timeout.
    pub async fn blob_stream(&self, digest: &Digest, size: u64, offset: u64) -> Result<BlobStream, RegistryError> {
        let url = self.url(&format!("v2/{}/blobs/{digest}", self.repository));
        let range = format!("bytes={offset}-");
        let deadline = self.config.upload_deadline(size.saturating_sub(offset));
        let resp = self
            .send(Method::GET, url, |r| {
                let r = r.timeout(deadline);
                if offset > 0 { r.header(RANGE, range.as_str()) } else { r }
            })
            .await?;
        if !resp.status().is_success() {
            return Err(self.api_error(resp).await);
        }
        if offset > 0 && resp.status() != StatusCode::PARTIAL_CONTENT {
            return Err(RegistryError::Refused {
                registry: self.registry.clone(),
                message: format!("blob {digest}: the source registry cannot serve from byte {offset}"),
            });
        }
        let stream = resp.bytes_stream().map_err(std::io::Error::other);
        Ok(Box::new(tokio_util::io::StreamReader::new(stream)))
    }

    /// Tries to mount `digest` from `from` (a repository on the same registry): true when the
    /// registry mounted it, false when it wants a normal upload (its upload session is closed).
    pub async fn mount(&self, digest: &Digest, from: &str) -> Result<bool, RegistryError> {
        let mut url = self.uploads_url();
        url.query_pairs_mut().append_pair("mount", digest.as_str()).append_pair("from", from);
        let resp = self.send(Method::POST, url.clone(), |r| r.header(CONTENT_LENGTH, "0")).await?;
        match resp.status().as_u16() {
            201 => Ok(true),
            202 => {
                if let Ok(session) = self.location(&url, &resp) {
                    let _ = self.send(Method::DELETE, session, |r| r).await;
                }
                Ok(false)
            }
            _ => Err(self.api_error(resp).await),
        }
    }
}
