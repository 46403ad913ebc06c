//! A blob PUT over plain HTTP with `sendfile(2)`: the layer goes from the page cache to the
//! socket inside the kernel, never copied into this process — what Go's net/http does for
//! crane. Plain HTTP is only ever allowed to loopback registries, where the client's copies
//! are most of the CPU a push costs (docs/performance.md).
//!
//! Used only for a monolithic upload of a blob that is a byte range of a file on disk, sent
//! without client-side hashing (`transfer.verify: registry`, the default: the registry checks
//! the digest it is given). The request is one HTTP/1.1 PUT on a connection of its own
//! (`Connection: close`) to the upload URL the registry gave, with the `Authorization` the
//! client's origin rule allows for that URL; the answer's head is read up to 64 KiB and its
//! body up to 1 MiB, and the whole exchange has the upload's deadline.

use std::io::{Error, ErrorKind};
use std::os::fd::AsRawFd;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use url::Url;

use crate::types::Secret;

const MAX_HEAD: usize = 64 * 1024;
/// At most this much per sendfile call (Linux caps one call near 2 GiB anyway).
const MAX_CALL: u64 = 1 << 30;

/// PUTs `len` bytes of `file` from `start` to `url`. Returns the answer, or the error, with
/// the bytes put on the wire either way; `sent` is told of progress.
pub async fn put(
    url: &Url,
    authorization: Option<&Secret>,
    file: &std::fs::File,
    start: u64,
    len: u64,
    deadline: Duration,
    sent: &(dyn Fn(u64) + Send + Sync),
) -> (Result<http::Response<Vec<u8>>, Error>, u64) {
    let mut written = 0u64;
    let result =
        tokio::time::timeout(deadline, exchange(url, authorization, file, start, len, &mut written, sent)).await;
    let result = result.unwrap_or_else(|_| {
        Err(Error::new(ErrorKind::TimedOut, format!("no answer within the upload's deadline of {deadline:?}")))
    });
    (result, written)
}

async fn exchange(
    url: &Url,
    authorization: Option<&Secret>,
    file: &std::fs::File,
    start: u64,
    len: u64,
    written: &mut u64,
    sent: &(dyn Fn(u64) + Send + Sync),
) -> Result<http::Response<Vec<u8>>, Error> {
    if url.scheme() != "http" {
        return Err(Error::new(ErrorKind::InvalidInput, "sendfile uploads are for plain HTTP only"));
    }
    let addrs = url.socket_addrs(|| None)?;
    let mut stream = TcpStream::connect(&addrs[..]).await?;
    stream.set_nodelay(true)?;
    let host = match url.port() {
        Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_string(),
    };
    let target = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    };
    let mut head = format!(
        "PUT {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {}\r\nContent-Type: application/octet-stream\r\nContent-Length: {len}\r\nConnection: close\r\n",
        crate::http::USER_AGENT
    );
    if let Some(a) = authorization {
        head.push_str(&format!("Authorization: {}\r\n", a.expose()));
    }
    head.push_str("\r\n");
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
    match read_response(&mut stream).await {
        Ok(resp) => Ok(resp),
        Err(e) => Err(failure.unwrap_or(e)),
    }
}

/// Reads an HTTP/1.1 answer: the head (bounded), then the body up to its length or the end of
/// the connection (bounded).
async fn read_response(stream: &mut TcpStream) -> Result<http::Response<Vec<u8>>, Error> {
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
    let mut length = None;
    for line in lines {
        let (k, v) = line.split_once(':').ok_or_else(|| bad("a header without ':'"))?;
        let v = v.trim();
        if k.eq_ignore_ascii_case("content-length") {
            length = v.parse::<u64>().ok();
        }
        builder = builder.header(k.trim(), v);
    }
    let max = crate::http::MAX_SMALL_BODY;
    let mut body = buf[head_end + 4..].to_vec();
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
    builder.body(body).map_err(|e| bad(&e.to_string()))
}
