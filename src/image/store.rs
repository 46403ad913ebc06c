//! Where an image's files live: a directory, or a tar archive indexed once by entry offset so
//! blobs stream straight from the file without unpacking it. Blobs can also live elsewhere
//! (`docker save`'s layer paths), found by digest.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::ImageError;
use crate::types::Digest;

/// A blob's bytes, streamed from disk: `pread(2)` straight into the caller's buffer.
///
/// `tokio::fs::File` reads on the blocking pool into a buffer of its own and copies that into
/// the caller's: for a layer, one more copy of every byte and two thread hand-offs per read.
/// Reads here are positioned reads of at most the caller's buffer (256 KiB on the upload path),
/// made on the calling task: a page-cache read of that size takes tens of microseconds, a cold
/// disk read about a millisecond, which the runtime's other workers absorb. Measured with
/// `scripts/bench` (docs/performance.md).
#[derive(Debug)]
pub struct BlobReader {
    file: std::fs::File,
    /// The next byte to read and the end of the blob, as file offsets.
    at: u64,
    end: u64,
}

impl BlobReader {
    /// The file and the offset of the next byte: for zero-copy sends.
    pub fn into_file(self) -> (std::fs::File, u64) {
        (self.file, self.at)
    }
}

impl tokio::io::AsyncRead for BlobReader {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::os::fd::AsRawFd;
        let want = (self.end - self.at).min(buf.remaining() as u64) as usize;
        if want == 0 {
            return std::task::Poll::Ready(Ok(()));
        }
        // SAFETY: `unfilled_mut` is writable memory of at least `want` bytes; pread writes at
        // most `want` bytes there, and only the `n` it reports are marked initialised.
        let n = unsafe {
            let dst = buf.unfilled_mut();
            libc::pread(self.file.as_raw_fd(), dst.as_mut_ptr().cast(), want, self.at as libc::off_t)
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                _cx.waker().wake_by_ref();
                return std::task::Poll::Pending;
            }
            return std::task::Poll::Ready(Err(e));
        }
        let n = n as usize;
        // SAFETY: pread initialised the first `n` bytes of the unfilled part.
        unsafe { buf.assume_init(n) };
        buf.advance(n);
        self.at += n as u64;
        std::task::Poll::Ready(Ok(()))
    }
}

#[derive(Debug)]
enum Kind {
    Dir(PathBuf),
    /// Archive path and, per entry path, its data offset and size.
    Archive(PathBuf, HashMap<String, (u64, u64)>),
    /// A stream read once (the Docker daemon's export): small files in memory, the others'
    /// sizes; their bytes come as the stream is read again.
    Scanned(String, super::daemon::Scanned, super::daemon::Export),
}

#[derive(Debug)]
pub(super) struct Store {
    kind: Kind,
    /// Blobs at another path inside the layout (legacy `docker save`: `<id>/layer.tar`).
    aliases: HashMap<Digest, String>,
}

impl Store {
    pub fn dir(path: &Path) -> Result<Store, ImageError> {
        if !path.is_dir() {
            let what = if path.exists() { "is not a directory" } else { "does not exist" };
            return Err(ImageError::Layout { path: path.display().to_string(), what: what.into() });
        }
        Ok(Store { kind: Kind::Dir(path.to_path_buf()), aliases: HashMap::new() })
    }

    /// No files: an image whose blobs come from elsewhere (a registry).
    pub fn none() -> Store {
        Store { kind: Kind::Dir(PathBuf::new()), aliases: HashMap::new() }
    }

    pub fn archive(path: &Path) -> Result<Store, ImageError> {
        let io = |source| ImageError::Io { path: path.display().to_string(), source };
        let file = std::fs::File::open(path).map_err(io)?;
        // Seeking past each entry's data: indexing a 15 GB archive reads its headers only.
        let mut archive = tar::Archive::new(std::io::BufReader::new(file));
        let mut entries = HashMap::new();
        for entry in archive.entries_with_seek().map_err(io)? {
            let entry = entry.map_err(io)?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let name = entry.path().map_err(io)?.to_string_lossy().trim_start_matches("./").to_string();
            entries.insert(name, (entry.raw_file_position(), entry.size()));
        }
        Ok(Store { kind: Kind::Archive(path.to_path_buf(), entries), aliases: HashMap::new() })
    }

    /// A stream's files, as `daemon::Export::scan` found them; `display` names the source.
    pub fn scanned(display: String, scanned: super::daemon::Scanned, export: super::daemon::Export) -> Store {
        Store { kind: Kind::Scanned(display, scanned, export), aliases: HashMap::new() }
    }

    /// Whether the layout has this file.
    pub fn has(&self, rel: &str) -> bool {
        match &self.kind {
            Kind::Dir(dir) => dir.join(rel).is_file(),
            Kind::Archive(_, entries) => entries.contains_key(rel),
            Kind::Scanned(_, s, _) => s.sizes.contains_key(rel),
        }
    }

    /// The path of the blob `digest` in the layout.
    pub fn path_of(&self, digest: &Digest) -> String {
        self.blob_path(digest)
    }

    /// The blob's bytes, when a scanned stream kept them in memory.
    pub fn in_memory(&self, digest: &Digest) -> Option<&[u8]> {
        match &self.kind {
            Kind::Scanned(_, s, _) => s.files.get(&self.blob_path(digest)).map(Vec::as_slice),
            _ => None,
        }
    }

    /// Whether blobs are read as a stream goes past rather than from files.
    pub fn is_scanned(&self) -> bool {
        matches!(self.kind, Kind::Scanned(..))
    }

    /// Finds the blob `digest` at `rel` instead of `blobs/sha256/<hex>`.
    pub fn alias(&mut self, digest: Digest, rel: String) {
        self.aliases.insert(digest, rel);
    }

    pub fn display(&self) -> String {
        match &self.kind {
            Kind::Dir(p) | Kind::Archive(p, _) => p.display().to_string(),
            Kind::Scanned(name, _, _) => name.clone(),
        }
    }

    pub fn layout_error(&self, what: String) -> ImageError {
        ImageError::Layout { path: self.display(), what }
    }

    fn blob_path(&self, digest: &Digest) -> String {
        self.aliases.get(digest).cloned().unwrap_or_else(|| format!("blobs/sha256/{}", digest.hex()))
    }

    /// Opens `rel` inside a layout directory: a regular file (not a FIFO or a device), and a
    /// symlink only when it stays inside the layout. Returns the file and its size.
    fn dir_file(&self, dir: &Path, rel: &str) -> Result<(std::fs::File, u64), ImageError> {
        let path = dir.join(rel);
        let io = |source| ImageError::Io { path: format!("{}/{rel}", self.display()), source };
        let meta = std::fs::symlink_metadata(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                self.layout_error(format!("{rel} is missing"))
            } else {
                io(e)
            }
        })?;
        if meta.file_type().is_symlink() {
            let target = std::fs::canonicalize(&path).map_err(io)?;
            let root = std::fs::canonicalize(dir).map_err(io)?;
            if !target.starts_with(&root) {
                return Err(self.layout_error(format!("{rel} is a symlink out of the layout")));
            }
        }
        // Checked before opening: opening a FIFO blocks until someone writes to it.
        if !std::fs::metadata(&path).map_err(io)?.is_file() {
            return Err(self.layout_error(format!("{rel} is not a regular file")));
        }
        let f = std::fs::File::open(&path).map_err(io)?;
        let meta = f.metadata().map_err(io)?;
        if !meta.is_file() {
            return Err(self.layout_error(format!("{rel} is not a regular file")));
        }
        Ok((f, meta.len()))
    }

    /// A reader over a file of the layout and its size.
    fn open_rel(&self, rel: &str) -> Result<(Box<dyn Read + Send>, u64), ImageError> {
        let missing = || self.layout_error(format!("{rel} is missing"));
        let io = |source| ImageError::Io { path: format!("{}/{rel}", self.display()), source };
        match &self.kind {
            Kind::Dir(dir) => {
                let (f, size) = self.dir_file(dir, rel)?;
                Ok((Box::new(f), size))
            }
            Kind::Archive(path, entries) => {
                let (offset, size) = *entries.get(rel).ok_or_else(missing)?;
                let mut f = std::fs::File::open(path).map_err(io)?;
                f.seek(SeekFrom::Start(offset)).map_err(io)?;
                Ok((Box::new(f.take(size)), size))
            }
            Kind::Scanned(_, s, export) => match (s.files.get(rel), s.sizes.get(rel)) {
                (Some(bytes), _) => Ok((Box::new(std::io::Cursor::new(bytes.clone())), bytes.len() as u64)),
                // Not kept in memory (a large config, say): a fresh export, read up to it.
                (None, Some(size)) => Ok((export.entry(rel)?, *size)),
                (None, None) => Err(missing()),
            },
        }
    }

    /// A blob's size, without reading it.
    pub fn blob_size(&self, digest: &Digest) -> Result<u64, ImageError> {
        let rel = self.blob_path(digest);
        match &self.kind {
            Kind::Scanned(_, s, _) => {
                s.sizes.get(&rel).copied().ok_or_else(|| self.layout_error(format!("{rel} is missing")))
            }
            _ => self.open_rel(&rel).map(|(_, size)| size),
        }
    }

    /// Reads a whole small file of the layout, refusing anything over `max` bytes.
    pub fn read_path(&self, rel: &str, max: u64) -> Result<Vec<u8>, ImageError> {
        let (mut reader, size) = self.open_rel(rel)?;
        if size > max {
            return Err(self.layout_error(format!("{rel} is {size} bytes, more than the {max} allowed for metadata")));
        }
        // The size said is not trusted: no more than `max` bytes are read, whatever the file.
        let mut buf = Vec::with_capacity(size as usize);
        (&mut reader)
            .take(max + 1)
            .read_to_end(&mut buf)
            .map_err(|source| ImageError::Io { path: format!("{}/{rel}", self.display()), source })?;
        if buf.len() as u64 > max {
            return Err(self.layout_error(format!("{rel} is more than the {max} bytes allowed for metadata")));
        }
        Ok(buf)
    }

    /// A synchronous reader over a whole blob (for compressing it), and its size.
    pub fn blob_reader(&self, digest: &Digest) -> Result<(Box<dyn Read + Send>, u64), ImageError> {
        self.open_rel(&self.blob_path(digest))
    }

    /// Checks that a blob is there with its descriptor's size, without reading it; with
    /// `hash`, also that its content has its digest.
    pub fn check_blob(&self, digest: &Digest, size: u64, hash: bool) -> Result<(), ImageError> {
        // A blob a stream carries is hashed as it goes up, not here.
        if self.is_scanned() && self.in_memory(digest).is_none() {
            let actual = self.blob_size(digest)?;
            if actual != size {
                return Err(
                    self.layout_error(format!("blob {digest} is {actual} bytes but its descriptor says {size}"))
                );
            }
            return Ok(());
        }
        let (mut reader, actual) = self.blob_reader(digest)?;
        if actual != size {
            return Err(self.layout_error(format!("blob {digest} is {actual} bytes but its descriptor says {size}")));
        }
        if hash {
            let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
            let io = |source| ImageError::Io { path: format!("{}/{}", self.display(), self.blob_path(digest)), source };
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = reader.read(&mut buf).map_err(io)?;
                if n == 0 {
                    break;
                }
                sha2::Digest::update(&mut hasher, &buf[..n]);
            }
            let got = Digest::from_sha256(&sha2::Digest::finalize(hasher));
            if &got != digest {
                return Err(ImageError::Corrupt { path: self.display(), digest: digest.clone(), actual: got });
            }
        }
        Ok(())
    }

    /// Reads a small blob whole and checks its digest.
    pub fn read_blob(&self, digest: &Digest, max: u64) -> Result<Vec<u8>, ImageError> {
        let rel = self.blob_path(digest);
        let bytes = self.read_path(&rel, max)?;
        let actual = Digest::of(&bytes);
        if &actual != digest {
            return Err(ImageError::Corrupt { path: self.display(), digest: digest.clone(), actual });
        }
        Ok(bytes)
    }

    /// Opens a blob for streaming from `offset`, checking its size against the descriptor's.
    pub async fn open_blob(&self, digest: &Digest, size: u64, offset: u64) -> Result<BlobReader, ImageError> {
        let rel = self.blob_path(digest);
        let io = |source| ImageError::Io { path: format!("{}/{rel}", self.display()), source };
        let (file, start, actual) = match &self.kind {
            Kind::Dir(dir) => {
                let (f, len) = self.dir_file(dir, &rel)?;
                (f, 0, len)
            }
            Kind::Archive(path, entries) => {
                let (at, len) = *entries.get(&rel).ok_or_else(|| self.layout_error(format!("{rel} is missing")))?;
                (std::fs::File::open(path).map_err(io)?, at, len)
            }
            Kind::Scanned(..) => return Err(self.layout_error(format!("{rel} is read as the export streams past"))),
        };
        if actual != size {
            return Err(self.layout_error(format!("blob {digest} is {actual} bytes but its descriptor says {size}")));
        }
        let offset = offset.min(size);
        Ok(BlobReader { file, at: start + offset, end: start + size })
    }
}
