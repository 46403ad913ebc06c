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
}

/// Entries of the export kept in memory when opening: every file up to this size (configs,
/// manifests, `manifest.json`, the smallest layers), up to `MAX_KEPT` in all; of the others
/// only the size is kept.
const KEEP_UNDER: u64 = 256 * 1024;
const MAX_KEPT: u64 = 16 * 1024 * 1024;

/// What a first read of the export found: small files' bytes, every file's size.
#[derive(Debug, Default)]
pub struct Scanned {
    pub files: HashMap<String, Vec<u8>>,
    pub sizes: HashMap<String, u64>,
}

impl Export {
    /// The export's bytes, streamed from the daemon.
    pub fn open(&self) -> Result<Box<dyn Read + Send>, ImageError> {
        request(&self.name, &self.socket)
    }

    /// Reads the whole export once, keeping small files and every file's size.
    pub fn scan(&self) -> Result<Scanned, ImageError> {
        let err = |e: std::io::Error| ImageError::Layout {
            path: format!("docker-daemon:{}", self.name),
            what: format!("reading the Docker daemon's export: {e}"),
        };
        let mut walk = TarWalk::new(self.open()?);
        let mut out = Scanned::default();
        let mut kept = 0u64;
        while let Some((name, size)) = walk.next_entry().map_err(err)? {
            if size <= KEEP_UNDER && kept + size <= MAX_KEPT {
                let mut bytes = Vec::with_capacity(size as usize);
                walk.data().read_to_end(&mut bytes).map_err(err)?;
                kept += size;
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
        let mut walk = TarWalk::new(self.open()?);
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

/// A tar read front to back, entry by entry, without seeking: regular files are returned with
/// their sizes; directories, links, PAX and GNU long-name headers are read past (a long name
/// names the entry after it).
pub struct TarWalk<R> {
    inner: R,
    /// Bytes of the current entry not read yet, and the padding after them.
    left: u64,
    pad: u64,
}

impl<R: Read> TarWalk<R> {
    pub fn new(inner: R) -> TarWalk<R> {
        TarWalk { inner, left: 0, pad: 0 }
    }

    /// The next regular file: its path (without a leading `./`) and size. `None` at the end.
    pub fn next_entry(&mut self) -> std::io::Result<Option<(String, u64)>> {
        let mut long_name: Option<String> = None;
        loop {
            self.skip_rest()?;
            let mut header = [0u8; 512];
            if !read_full(&mut self.inner, &mut header)? || header.iter().all(|&b| b == 0) {
                return Ok(None);
            }
            let size = octal(&header[124..136])?;
            let kind = header[156];
            self.left = size;
            self.pad = (512 - size % 512) % 512;
            match kind {
                b'L' => {
                    let mut name = Vec::new();
                    (&mut self.inner).take(size.min(64 * 1024)).read_to_end(&mut name)?;
                    self.left -= name.len() as u64;
                    long_name = Some(String::from_utf8_lossy(&name).trim_end_matches('\0').to_string());
                }
                b'0' | 0 | b'7' => {
                    let name = long_name.take().unwrap_or_else(|| ustar_name(&header));
                    return Ok(Some((name.trim_start_matches("./").to_string(), size)));
                }
                _ => long_name = None,
            }
        }
    }

    /// The current entry's bytes.
    pub fn data(&mut self) -> impl Read + '_ {
        Data { walk: self }
    }

    /// The underlying reader, at the start of the current entry's bytes.
    pub fn into_inner(self) -> R {
        self.inner
    }

    fn skip_rest(&mut self) -> std::io::Result<()> {
        let n = self.left + self.pad;
        let skipped = std::io::copy(&mut (&mut self.inner).take(n), &mut std::io::sink())?;
        if skipped != n {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the export ended inside an entry"));
        }
        self.left = 0;
        self.pad = 0;
        Ok(())
    }
}

struct Data<'a, R> {
    walk: &'a mut TarWalk<R>,
}

impl<R: Read> Read for Data<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let want = buf.len().min(self.walk.left as usize);
        if want == 0 {
            return Ok(0);
        }
        let n = self.walk.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the export ended inside an entry"));
        }
        self.walk.left -= n as u64;
        Ok(n)
    }
}

/// Fills `buf`; false when the reader ended before its first byte.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<bool> {
    let mut at = 0;
    while at < buf.len() {
        let n = r.read(&mut buf[at..])?;
        if n == 0 {
            return if at == 0 {
                Ok(false)
            } else {
                Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the export ended inside a tar header"))
            };
        }
        at += n;
    }
    Ok(true)
}

fn octal(field: &[u8]) -> std::io::Result<u64> {
    let text = String::from_utf8_lossy(field);
    let digits = text.trim_matches(|c: char| c == '\0' || c == ' ');
    if digits.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(digits, 8)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("bad tar size field {digits:?}")))
}

/// A ustar header's path: its prefix and name.
fn ustar_name(header: &[u8; 512]) -> String {
    let field = |b: &[u8]| String::from_utf8_lossy(b.split(|&c| c == 0).next().unwrap_or_default()).to_string();
    let name = field(&header[0..100]);
    let prefix = if &header[257..262] == b"ustar" { field(&header[345..500]) } else { String::new() };
    if prefix.is_empty() { name } else { format!("{prefix}/{name}") }
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
/// The longest wait for the next bytes of the export.
const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// Asks the daemon for the export of `name`; its body, as it comes.
fn request(name: &str, socket: &Path) -> Result<Box<dyn Read + Send>, ImageError> {
    let err = |what: String| ImageError::Layout { path: format!("docker-daemon:{name}"), what };
    let mut stream = UnixStream::connect(socket)
        .map_err(|e| err(format!("cannot reach the Docker daemon at {}: {e}", socket.display())))?;
    // A daemon that stops sending for this long has hung: the read fails, and says so.
    stream
        .set_read_timeout(Some(READ_TIMEOUT))
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
    Ok(body)
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
    use super::{Chunked, TarWalk};
    use std::io::Read;

    /// The walker finds every regular file of a tar the `tar` crate writes — long GNU names,
    /// PAX headers, directories and links among them — with its bytes, in order.
    #[test]
    fn the_walker_reads_what_tar_writes() {
        let mut t = tar::Builder::new(Vec::new());
        let files: Vec<(String, Vec<u8>)> = vec![
            ("a/layer.tar".into(), vec![1; 1000]),
            (format!("{}/long", "d".repeat(150)), vec![2; 512]),
            ("empty".into(), Vec::new()),
            ("./dotted.json".into(), b"{}".to_vec()),
        ];
        let mut dir = tar::Header::new_gnu();
        dir.set_entry_type(tar::EntryType::Directory);
        dir.set_size(0);
        dir.set_cksum();
        t.append_data(&mut dir, "a/", std::io::empty()).unwrap();
        t.append_pax_extensions([("comment", b"x".as_slice())]).unwrap();
        for (name, data) in &files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            t.append_data(&mut h, name, data.as_slice()).unwrap();
        }
        let mut link = tar::Header::new_gnu();
        link.set_entry_type(tar::EntryType::Symlink);
        link.set_size(0);
        t.append_link(&mut link, "l", "a/layer.tar").unwrap();
        let bytes = t.into_inner().unwrap();
        let mut walk = TarWalk::new(&bytes[..]);
        let mut seen = Vec::new();
        while let Some((name, size)) = walk.next_entry().unwrap() {
            let mut data = Vec::new();
            if name != "empty" {
                walk.data().read_to_end(&mut data).unwrap();
            }
            assert_eq!(data.len() as u64, if name == "empty" { 0 } else { size });
            seen.push((name, data));
        }
        let want: Vec<(String, Vec<u8>)> =
            files.into_iter().map(|(n, d)| (n.trim_start_matches("./").to_string(), d)).collect();
        assert_eq!(seen, want);
        // Cut short: an error, not a short entry.
        let mut walk = TarWalk::new(&bytes[..1500]);
        let mut failed = false;
        while let Ok(Some(_)) = walk.next_entry().map_err(|_| failed = true) {
            if walk.data().read_to_end(&mut Vec::new()).is_err() {
                failed = true;
                break;
            }
        }
        assert!(failed, "a tar cut inside an entry is an error");
    }

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
