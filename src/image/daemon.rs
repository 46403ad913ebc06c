//! `docker-daemon:NAME[:TAG]`: the Docker Engine API's image export (`GET /images/NAME/get`)
//! over its unix socket (`DOCKER_HOST=unix://…`, default `/var/run/docker.sock`), read as a
//! stream and never written to disk. Opening the image reads the export once for its small
//! files (manifests, configs: kept in memory) and the sizes of the others (`scan`); a push
//! reads it once more and uploads each layer it needs as it streams past (`Export::open`,
//! `TarWalk`), so the disk a push needs does not grow with the image.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use super::ImageError;

/// An image in the daemon: its name and the daemon's socket.
#[derive(Debug, Clone)]
pub struct Export {
    pub name: String,
    pub socket: PathBuf,
    /// A daemon that sends nothing for this long has hung (`transfer.read_timeout`).
    pub read_timeout: std::time::Duration,
}

/// Entries of the export kept in memory when opening: every file up to this size (configs,
/// manifests, `manifest.json`, the smallest layers), up to `MAX_KEPT` in all; of the others
/// only the size is kept.
const KEEP_UNDER: u64 = 256 * 1024;
const MAX_KEPT: u64 = 16 * 1024 * 1024;
/// The metadata files of an export (kept whatever `MAX_KEPT` says), in all.
const MAX_METADATA_KEPT: u64 = 64 * 1024 * 1024;

/// What a first read of the export found: small files' bytes, every file's size.
#[derive(Debug, Default)]
pub struct Scanned {
    pub files: HashMap<String, Vec<u8>>,
    pub sizes: HashMap<String, u64>,
}

impl Export {
    /// The export's bytes, streamed from the daemon.
    pub fn open(&self) -> Result<Box<dyn Read + Send>, ImageError> {
        request(&self.name, &self.socket, self.read_timeout)
    }

    /// Reads the whole export once, keeping small files and every file's size.
    pub fn scan(&self) -> Result<Scanned, ImageError> {
        let err = |e: std::io::Error| ImageError::Layout {
            path: format!("docker-daemon:{}", self.name),
            what: format!("reading the Docker daemon's export: {e}"),
        };
        let mut walk = super::tarwalk::TarWalk::new(self.open()?);
        let mut out = Scanned::default();
        let (mut kept, mut metadata_kept) = (0u64, 0u64);
        while let Some((name, size)) = walk.next_entry().map_err(err)? {
            // Files outside `blobs/` that are not layers (manifest.json, configs, index.json)
            // are always kept; small blobs while the budget lasts.
            let metadata = !name.starts_with("blobs/") && !name.ends_with("layer.tar");
            if (metadata && size <= super::MAX_METADATA) || (size <= KEEP_UNDER && kept + size <= MAX_KEPT) {
                // Metadata is kept whatever the budget, but not without end: an export whose
                // metadata alone passes this is not one Docker wrote.
                if metadata && metadata_kept + size > MAX_METADATA_KEPT {
                    return Err(err(std::io::Error::other(format!(
                        "its metadata files (manifests, configs) pass {} MiB",
                        MAX_METADATA_KEPT >> 20
                    ))));
                }
                let mut bytes = Vec::with_capacity(size as usize);
                // The entry yields its header's size, checked against the budgets above.
                walk.data().take(size).read_to_end(&mut bytes).map_err(err)?;
                kept += size;
                metadata_kept += if metadata { size } else { 0 };
                out.files.insert(name.clone(), bytes);
            }
            out.sizes.insert(name, size);
        }
        Ok(out)
    }

    /// A fresh export, read up to the entry `rel`: a reader over its bytes (for an upload that
    /// starts again after the pass that carried the entry).
    pub fn entry(&self, rel: &str) -> Result<Box<dyn Read + Send>, ImageError> {
        let err = |e: std::io::Error| ImageError::Layout {
            path: format!("docker-daemon:{}", self.name),
            what: format!("reading the Docker daemon's export: {e}"),
        };
        let mut walk = super::tarwalk::TarWalk::new(self.open()?);
        while let Some((name, size)) = walk.next_entry().map_err(err)? {
            if name == rel {
                return Ok(Box::new(walk.into_inner().take(size)));
            }
        }
        Err(ImageError::Layout {
            path: format!("docker-daemon:{}", self.name),
            what: format!("{rel} is not in the daemon's export any more"),
        })
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
/// Asks the daemon for the export of `name`; its body, as it comes. A read that waits longer
/// than `read_timeout` for the next bytes fails.
fn request(name: &str, socket: &Path, read_timeout: std::time::Duration) -> Result<Box<dyn Read + Send>, ImageError> {
    let err = |what: String| ImageError::Layout { path: format!("docker-daemon:{name}"), what };
    let mut stream = UnixStream::connect(socket)
        .map_err(|e| err(format!("cannot reach the Docker daemon at {}: {e}", socket.display())))?;
    // A daemon that stops sending for this long has hung: the read fails, and says so.
    stream
        .set_read_timeout(Some(read_timeout.max(std::time::Duration::from_secs(1))))
        .map_err(|e| err(format!("cannot set a timeout on the Docker daemon's socket: {e}")))?;
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
        .map_err(|e| err(format!("reading the Docker daemon's answer: {}", stalled(e, read_timeout))))?;
    let code: u16 = status.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let mut chunked = false;
    let mut length = None;
    for count in 0.. {
        if count == MAX_HEADERS {
            return Err(err(format!("the Docker daemon's answer has more than {MAX_HEADERS} header lines")));
        }
        let mut h = String::new();
        (&mut reader).take(MAX_LINE).read_line(&mut h).map_err(|e| err(stalled(e, read_timeout).to_string()))?;
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
    let body: Box<dyn Read + Send> = if chunked {
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
    Ok(Box::new(Hung { inner: body, timeout: read_timeout }))
}

/// A read of the daemon's socket that timed out (EAGAIN, as the socket's timeout shows),
/// saying what happened; other errors as they are.
fn stalled(e: std::io::Error, timeout: std::time::Duration) -> std::io::Error {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "the Docker daemon sent nothing for {} s (transfer.read_timeout): it has hung, or is too busy",
                timeout.as_secs().max(1)
            ),
        ),
        _ => e,
    }
}

/// The export's body, whose read that times out says what happened: the socket's timeout
/// shows as EAGAIN otherwise.
struct Hung<R> {
    inner: R,
    timeout: std::time::Duration,
}

impl<R: Read> Read for Hung<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf).map_err(|e| stalled(e, self.timeout))
    }
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
