//! A blob upload over plain HTTP with `sendfile(2)`: the layer goes from the page cache to the
//! socket inside the kernel, never copied into this process — what Go's net/http does for
//! crane. Plain HTTP is only ever allowed to loopback registries, where the client's copies
//! are most of the CPU a push costs (docs/performance.md).
//!
//! Used only for a monolithic upload of a blob that is a byte range of a file on disk, sent
//! without client-side hashing (`transfer.verify: registry`, the default: the registry checks
//! the digest it is given). The session is opened (POST) on the connection that then carries
//! the PUT with the blob: a connection whose first bytes are a bulk upload keeps the kernel's
//! smallest receive buffer on the registry's side (128 KiB; it never measures a round trip to
//! grow it), so the registry wakes up more often and spends 5–10 % more CPU on the same bytes
//! (docs/performance.md). Requests carry the `Authorization` the client's origin rule allows
//! for their URL; answers' heads are read up to 64 KiB and bodies up to 1 MiB; the whole
//! exchange has the upload's deadline.

use std::io::{Error, ErrorKind};
use std::os::fd::AsRawFd;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use url::Url;

use super::upload::UploadStats;
use super::{FileRange, RegistryError};
use crate::types::Digest;
use crate::types::Secret;

const MAX_HEAD: usize = 64 * 1024;
/// At most this much per sendfile call (Linux caps one call near 2 GiB anyway).
const MAX_CALL: u64 = 1 << 30;

/// A connection to one origin, for requests without a body and then one blob PUT.
pub struct Connection {
    stream: TcpStream,
    origin: Url,
}

/// What a body-less request on a [`Connection`] got: the answer, and whether the connection
/// can carry the next request (a keep-alive answer of known, empty length).
pub struct Answer {
    pub response: http::Response<Vec<u8>>,
    pub reusable: bool,
}

impl Connection {
    pub async fn open(url: &Url) -> Result<Connection, Error> {
        if url.scheme() != "http" {
            return Err(Error::new(ErrorKind::InvalidInput, "sendfile uploads are for plain HTTP only"));
        }
        let addrs = url.socket_addrs(|| None)?;
        let stream = TcpStream::connect(&addrs[..]).await?;
        stream.set_nodelay(true)?;
        Ok(Connection { stream, origin: url.clone() })
    }

    /// Whether `url` is on this connection's origin.
    pub fn serves(&self, url: &Url) -> bool {
        super::transport::same_origin(url, &self.origin)
    }

    /// A request without a body (`Content-Length: 0`), keeping the connection open. An answer
    /// with a body is read only as far as its head (the connection is then not reusable).
    pub async fn request(&mut self, method: &str, url: &Url, authorization: Option<&Secret>) -> Result<Answer, Error> {
        let head = request_head(method, url, authorization, 0, false);
        self.stream.write_all(head.as_bytes()).await?;
        let (response, rest) = read_head(&mut self.stream).await?;
        let headers = response.headers();
        let close =
            headers.get("connection").and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let empty = headers.get("content-length").and_then(|v| v.to_str().ok()).is_some_and(|v| v.trim() == "0")
            && !headers.contains_key("transfer-encoding");
        Ok(Answer { response, reusable: empty && !close && rest.is_empty() })
    }

    /// PUTs the `len` bytes of `blob` to `url` (`Connection: close`). Returns the answer, or
    /// the error, with the bytes put on the wire either way; `blob.sent` is told of progress.
    pub async fn put_file(
        mut self,
        url: &Url,
        authorization: Option<&Secret>,
        blob: &FileRange<'_>,
        len: u64,
        deadline: Duration,
    ) -> (Result<http::Response<Vec<u8>>, Error>, u64) {
        let mut written = 0u64;
        let exchange = self.exchange(url, authorization, blob, len, &mut written);
        let result = tokio::time::timeout(deadline, exchange).await.unwrap_or_else(|_| {
            Err(Error::new(ErrorKind::TimedOut, format!("no answer within the upload's deadline of {deadline:?}")))
        });
        (result, written)
    }

    async fn exchange(
        &mut self,
        url: &Url,
        authorization: Option<&Secret>,
        blob: &FileRange<'_>,
        len: u64,
        written: &mut u64,
    ) -> Result<http::Response<Vec<u8>>, Error> {
        let (file, start, sent) = (blob.file, blob.start, blob.sent);
        let stream = &mut self.stream;
        let head = request_head("PUT", url, authorization, len, true);
        stream.write_all(head.as_bytes()).await?;

        let mut offset = start as libc::off_t;
        let end = start + len;
        let mut failure = None;
        while (offset as u64) < end {
            let count = (end - offset as u64).min(MAX_CALL) as usize;
            let r = stream.try_io(Interest::WRITABLE, || {
                // SAFETY: both descriptors are open for the call; sendfile writes only the
                // offset it is given a pointer to.
                let n = unsafe { libc::sendfile(stream.as_raw_fd(), file.as_raw_fd(), &mut offset, count) };
                if n < 0 { Err(Error::last_os_error()) } else { Ok(n as u64) }
            });
            match r {
                Ok(0) => {
                    failure = Some(Error::new(ErrorKind::UnexpectedEof, "the blob's file ended early"));
                    break;
                }
                Ok(n) => {
                    *written += n;
                    sent(n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => stream.writable().await?,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // The registry may have answered and closed early (a 401, a 413): read that.
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        match read_response(stream).await {
            Ok(resp) => Ok(resp),
            Err(e) => Err(failure.unwrap_or(e)),
        }
    }
}

/// An HTTP/1.1 request head for `url`.
fn request_head(method: &str, url: &Url, authorization: Option<&Secret>, len: u64, close: bool) -> String {
    let host = match url.port() {
        Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_string(),
    };
    let target = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    };
    let mut head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {}\r\nContent-Length: {len}\r\n",
        crate::http::USER_AGENT
    );
    if len > 0 {
        head.push_str("Content-Type: application/octet-stream\r\n");
    }
    if close {
        head.push_str("Connection: close\r\n");
    }
    if let Some(a) = authorization {
        head.push_str(&format!("Authorization: {}\r\n", a.expose()));
    }
    head.push_str("\r\n");
    head
}

/// Reads an HTTP/1.1 answer's head (bounded); returns it with the bytes read past it.
async fn read_head(stream: &mut TcpStream) -> Result<(http::Response<Vec<u8>>, Vec<u8>), Error> {
    let bad = |what: &str| Error::new(ErrorKind::InvalidData, format!("the registry's answer: {what}"));
    let mut buf = Vec::with_capacity(4096);
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_HEAD {
            return Err(bad("a head over 64 KiB"));
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(Error::new(ErrorKind::UnexpectedEof, "the connection closed before an answer"));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| bad("not text"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|s| s.get(2..5))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status line"))?;
    let mut builder = http::Response::builder().status(status);
    for line in lines {
        let (k, v) = line.split_once(':').ok_or_else(|| bad("a header without ':'"))?;
        builder = builder.header(k.trim(), v.trim());
    }
    let response = builder.body(Vec::new()).map_err(|e| bad(&e.to_string()))?;
    Ok((response, buf[head_end + 4..].to_vec()))
}

/// Reads an HTTP/1.1 answer: the head (bounded), then the body up to its length or the end of
/// the connection (bounded).
async fn read_response(stream: &mut TcpStream) -> Result<http::Response<Vec<u8>>, Error> {
    let (response, mut body) = read_head(stream).await?;
    let length = response
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let max = crate::http::MAX_SMALL_BODY;
    let want = length.unwrap_or(max).min(max) as usize;
    while body.len() < want {
        let mut chunk = vec![0u8; (want - body.len()).min(64 * 1024)];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(want);
    let (parts, _) = response.into_parts();
    Ok(http::Response::from_parts(parts, body))
}

impl super::Client {
    /// One PUT with the blob's file range sent by sendfile(2), on the connection that opened
    /// the session (see this module's comment); its answer goes to `Client::completed`.
    pub(super) async fn upload_sendfile(
        &self,
        digest: &Digest,
        size: u64,
        file: &FileRange<'_>,
        stats: &mut UploadStats,
    ) -> Result<(), RegistryError> {
        let settings = self.config;
        let start = self.uploads_url();
        let opened = tokio::time::timeout(settings.request_timeout, async {
            let mut conn = Connection::open(&start).await?;
            let answer = conn.request("POST", &start, self.authorization().as_ref()).await?;
            Ok::<_, std::io::Error>((conn, answer))
        })
        .await;
        let (conn, mut location) = match opened {
            Ok(Ok((conn, answer))) if super::upload::upload_started(answer.response.status()) => {
                let reusable = answer.reusable;
                let location = self.location(&start, &reqwest::Response::from(answer.response))?;
                (reusable.then_some(conn), location)
            }
            // Anything else (a 401 to answer, a redirect, an error to report, no connection):
            // the session is opened the usual way, with its retries, re-authentication and
            // error reporting, and the blob goes on a connection of its own.
            other => {
                if let Ok(Ok((_, answer))) = &other {
                    tracing::debug!(status = %answer.response.status(), "upload not opened on the blob's connection");
                }
                (None, self.start_upload().await?)
            }
        };
        location.query_pairs_mut().append_pair("digest", digest.as_str());
        // The same origin rule as every request: credentials only to the registry's origin.
        let authorization = if super::transport::same_origin(&location, &self.base) {
            self.authorization()
        } else {
            tracing::debug!(host = location.host_str().unwrap_or(""), "another origin: sent without credentials");
            None
        };
        tracing::debug!(url = %location.path(), %digest, size, "uploading blob (sendfile)");
        let transport = |e: std::io::Error| RegistryError::Transport {
            registry: self.registry.clone(),
            message: format!("PUT {}: {e}", location.path()),
            connect: e.kind() == std::io::ErrorKind::ConnectionRefused,
        };
        let conn = match conn {
            Some(conn) if conn.serves(&location) => conn,
            _ => tokio::time::timeout(settings.connect_timeout, Connection::open(&location))
                .await
                .map_err(|_| transport(std::io::Error::new(std::io::ErrorKind::TimedOut, "no connection")))?
                .map_err(transport)?,
        };
        let deadline = settings.upload_deadline(size);
        let (result, sent) = conn.put_file(&location, authorization.as_ref(), file, size, deadline).await;
        stats.bytes_sent += sent;
        // Refused is only ever said before a byte is sent.
        self.completed(result.map(reqwest::Response::from), sent == size, digest, transport).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, BufReader};

    /// Reads one request head and its body of `Content-Length` bytes; returns the request line
    /// and the body's length.
    async fn serve_one<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> (String, usize) {
        let (mut line, mut len) = (String::new(), 0usize);
        r.read_line(&mut line).await.unwrap();
        loop {
            let mut h = String::new();
            r.read_line(&mut h).await.unwrap();
            if h == "\r\n" {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0u8; len];
        r.read_exact(&mut body).await.unwrap();
        (line.trim_end().to_string(), len)
    }

    #[tokio::test]
    async fn the_session_and_the_blob_share_one_connection() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (sock, _) = listener.accept().await.unwrap();
            let (r, mut w) = sock.into_split();
            let mut r = BufReader::new(r);
            let post = serve_one(&mut r).await;
            w.write_all(b"HTTP/1.1 202 Accepted\r\nLocation: /v2/x/blobs/uploads/u1\r\nContent-Length: 0\r\n\r\n")
                .await
                .unwrap();
            let put = serve_one(&mut r).await;
            w.write_all(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n").await.unwrap();
            // No second connection is made.
            let second = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
            (post, put, second.is_err())
        });
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        std::fs::write(&path, vec![7u8; 300_000]).unwrap();
        let file = std::fs::File::open(&path).unwrap();

        let start = Url::parse(&format!("http://127.0.0.1:{port}/v2/x/blobs/uploads/")).unwrap();
        let mut conn = Connection::open(&start).await.unwrap();
        let answer = conn.request("POST", &start, None).await.unwrap();
        assert_eq!(answer.response.status(), 202);
        assert!(answer.reusable, "an empty keep-alive answer leaves the connection usable");
        let put = start.join("/v2/x/blobs/uploads/u1?digest=sha256:0").unwrap();
        assert!(conn.serves(&put));
        let blob = FileRange { file: &file, start: 1000, sent: &|_| {} };
        let (result, sent) = conn.put_file(&put, None, &blob, 200_000, Duration::from_secs(10)).await;
        assert_eq!(result.unwrap().status(), 201);
        assert_eq!(sent, 200_000);
        let (post, put, one_connection) = server.await.unwrap();
        assert_eq!(post, ("POST /v2/x/blobs/uploads/ HTTP/1.1".to_string(), 0));
        assert_eq!(put, ("PUT /v2/x/blobs/uploads/u1?digest=sha256:0 HTTP/1.1".to_string(), 200_000));
        assert!(one_connection, "the blob went on a second connection");
    }

    #[tokio::test]
    async fn an_answer_that_closes_or_has_a_body_leaves_the_connection_unused() {
        for answer in [
            "HTTP/1.1 202 Accepted\r\nLocation: /u\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            "HTTP/1.1 202 Accepted\r\nLocation: /u\r\nContent-Length: 2\r\n\r\n{}",
            "HTTP/1.1 202 Accepted\r\nLocation: /u\r\n\r\n",
        ] {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let server = tokio::spawn(async move {
                let (sock, _) = listener.accept().await.unwrap();
                let (r, mut w) = sock.into_split();
                serve_one(&mut BufReader::new(r)).await;
                w.write_all(answer.as_bytes()).await.unwrap();
            });
            let url = Url::parse(&format!("http://127.0.0.1:{port}/v2/")).unwrap();
            let mut conn = Connection::open(&url).await.unwrap();
            let got = conn.request("POST", &url, None).await.unwrap();
            assert_eq!(got.response.status(), 202);
            assert!(!got.reusable, "{answer:?}");
            server.await.unwrap();
        }
    }
}
