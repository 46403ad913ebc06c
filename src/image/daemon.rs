//! `docker-daemon:NAME[:TAG]`: the Docker Engine API's image export (`GET /images/NAME/get`)
//! over its unix socket (`DOCKER_HOST=unix://…`, default `/var/run/docker.sock`), streamed to
//! a temporary docker-archive on disk, never into memory, then read as one.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use super::ImageError;

/// A file removed when dropped.
#[derive(Debug)]
pub struct TempFile(pub PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The daemon's socket from `DOCKER_HOST` (unix:// only), else Docker's default.
pub fn socket_path(docker_host: Option<&str>) -> Result<PathBuf, ImageError> {
    match docker_host {
        Some(h) if !h.is_empty() => h.strip_prefix("unix://").map(PathBuf::from).ok_or_else(|| ImageError::Layout {
            path: format!("DOCKER_HOST={h}"),
            what: "only unix:// sockets are supported for docker-daemon:".into(),
        }),
        _ => Ok(PathBuf::from("/var/run/docker.sock")),
    }
}

/// The longest status, header or chunk-size line read from the daemon, and how many header
/// lines: a head past these is not an answer.
const MAX_LINE: u64 = 16 * 1024;
const MAX_HEADERS: usize = 100;

/// Exports `name` from the daemon into a temporary file in `dir`.
pub fn export(name: &str, dir: &Path, socket: &Path) -> Result<TempFile, ImageError> {
    let err = |what: String| ImageError::Layout { path: format!("docker-daemon:{name}"), what };
    let mut stream = UnixStream::connect(socket)
        .map_err(|e| err(format!("cannot reach the Docker daemon at {}: {e}", socket.display())))?;
    let escaped: String = name.chars().map(|c| if c == '/' { "%2F".to_string() } else { c.to_string() }).collect();
    write!(
        stream,
        "GET /images/{escaped}/get HTTP/1.1\r\nHost: docker\r\nUser-Agent: {}\r\nConnection: close\r\n\r\n",
        crate::http::USER_AGENT
    )
    .map_err(|e| err(format!("writing to the Docker daemon: {e}")))?;
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    (&mut reader)
        .take(MAX_LINE)
        .read_line(&mut status)
        .map_err(|e| err(format!("reading the Docker daemon's answer: {e}")))?;
    let code: u16 = status.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let mut chunked = false;
    let mut length = None;
    for count in 0.. {
        if count == MAX_HEADERS {
            return Err(err(format!("the Docker daemon's answer has more than {MAX_HEADERS} header lines")));
        }
        let mut h = String::new();
        (&mut reader).take(MAX_LINE).read_line(&mut h).map_err(|e| err(e.to_string()))?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "transfer-encoding" => chunked = v.trim().eq_ignore_ascii_case("chunked"),
                "content-length" => length = v.trim().parse::<u64>().ok(),
                _ => {}
            }
        }
    }
    let mut body: Box<dyn Read> = if chunked {
        Box::new(Chunked { inner: reader, left: 0, done: false })
    } else {
        match length {
            Some(n) => Box::new(reader.take(n)),
            None => Box::new(reader),
        }
    };
    if code != 200 {
        let mut text = String::new();
        let _ = body.take(2000).read_to_string(&mut text);
        let message = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_string))
            .unwrap_or(text);
        return Err(err(format!("the Docker daemon answered {code}: {}", message.trim())));
    }
    std::fs::create_dir_all(dir).map_err(|e| err(format!("cannot create {}: {e}", dir.display())))?;
    let path = dir.join(format!("export-{}-{}.tar", std::process::id(), name.replace(['/', ':'], "_")));
    let file = TempFile(path);
    let mut out = std::fs::File::create(&file.0).map_err(|e| err(format!("cannot write {}: {e}", file.0.display())))?;
    std::io::copy(&mut body, &mut out).map_err(|e| err(format!("exporting from the Docker daemon: {e}")))?;
    Ok(file)
}

/// HTTP/1.1 chunked transfer decoding (RFC 9112 §7.1; extensions ignored, trailers not read).
/// Hand-written with the request above: the export is read synchronously while the image is
/// opened, and reqwest's Unix-socket client is async; a proptest below checks it against
/// bodies cut into chunks every way.
struct Chunked<R> {
    inner: R,
    left: u64,
    done: bool,
}

impl<R: BufRead> Read for Chunked<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.done {
            return Ok(0);
        }
        if self.left == 0 {
            let mut line = String::new();
            (&mut self.inner).take(MAX_LINE).read_line(&mut line)?;
            if line.trim().is_empty() {
                // The CRLF after the previous chunk.
                line.clear();
                (&mut self.inner).take(MAX_LINE).read_line(&mut line)?;
            }
            let size = u64::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16).map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, "bad chunk size from the Docker daemon")
            })?;
            if size == 0 {
                self.done = true;
                return Ok(0);
            }
            self.left = size;
        }
        let want = buf.len().min(self.left as usize);
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the Docker daemon's export ended early",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::Chunked;
    use std::io::Read;

    fn decode(wire: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        Chunked { inner: std::io::BufReader::new(wire), left: 0, done: false }.read_to_end(&mut out)?;
        Ok(out)
    }

    proptest::proptest! {
        /// A body cut into chunks of any sizes, with or without extensions, decodes to itself;
        /// whatever else a daemon sends ends in bytes or an error, never a panic.
        #[test]
        fn chunked_bodies_decode_to_what_was_sent(
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..3000),
            cuts in proptest::collection::vec(1usize..700, 1..20),
            extension in proptest::bool::ANY,
            junk in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
        ) {
            let mut wire = Vec::new();
            let (mut at, mut i) = (0, 0);
            while at < body.len() {
                let n = cuts[i % cuts.len()].min(body.len() - at);
                let ext = if extension { ";name=value" } else { "" };
                wire.extend_from_slice(format!("{n:x}{ext}\r\n").as_bytes());
                wire.extend_from_slice(&body[at..at + n]);
                wire.extend_from_slice(b"\r\n");
                at += n;
                i += 1;
            }
            wire.extend_from_slice(b"0\r\n\r\n");
            proptest::prop_assert_eq!(decode(&wire).unwrap(), body);
            let _ = decode(&junk);
        }
    }
}
