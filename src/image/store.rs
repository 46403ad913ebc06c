//! Where an OCI layout's files live: a directory, or a tar archive indexed once by entry
//! offset so blobs are streamed straight from the file without unpacking it.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::ImageError;
use crate::types::Digest;

/// A blob's bytes, streamed from disk.
pub type BlobReader = tokio::io::Take<tokio::fs::File>;

#[derive(Debug)]
pub(super) enum Store {
    Dir(PathBuf),
    /// Archive path and, per entry path, its data offset and size.
    Archive(PathBuf, HashMap<String, (u64, u64)>),
}

impl Store {
    pub fn dir(path: &Path) -> Result<Store, ImageError> {
        if !path.is_dir() {
            let what = if path.exists() { "is not a directory" } else { "does not exist" };
            return Err(ImageError::Layout { path: path.display().to_string(), what: what.into() });
        }
        Ok(Store::Dir(path.to_path_buf()))
    }

    pub fn archive(path: &Path) -> Result<Store, ImageError> {
        let io = |source| ImageError::Io { path: path.display().to_string(), source };
        let file = std::fs::File::open(path).map_err(io)?;
        let mut archive = tar::Archive::new(std::io::BufReader::new(file));
        let mut entries = HashMap::new();
        for entry in archive.entries().map_err(io)? {
            let entry = entry.map_err(io)?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let name = entry.path().map_err(io)?.to_string_lossy().trim_start_matches("./").to_string();
            entries.insert(name, (entry.raw_file_position(), entry.size()));
        }
        Ok(Store::Archive(path.to_path_buf(), entries))
    }

    fn display(&self) -> String {
        match self {
            Store::Dir(p) | Store::Archive(p, _) => p.display().to_string(),
        }
    }

    pub fn layout_error(&self, what: String) -> ImageError {
        ImageError::Layout { path: self.display(), what }
    }

    fn blob_path(digest: &Digest) -> String {
        format!("blobs/sha256/{}", digest.hex())
    }

    /// Reads a whole small file of the layout, refusing anything over `max` bytes.
    pub fn read_path(&self, rel: &str, max: u64) -> Result<Vec<u8>, ImageError> {
        let missing = || self.layout_error(format!("{rel} is missing: not an OCI image layout"));
        let io = |source| ImageError::Io { path: format!("{}/{rel}", self.display()), source };
        let (mut reader, size): (Box<dyn Read>, u64) = match self {
            Store::Dir(dir) => {
                let p = dir.join(rel);
                let f = std::fs::File::open(&p)
                    .map_err(|e| if e.kind() == std::io::ErrorKind::NotFound { missing() } else { io(e) })?;
                let size = f.metadata().map_err(io)?.len();
                (Box::new(f), size)
            }
            Store::Archive(path, entries) => {
                let (offset, size) = *entries.get(rel).ok_or_else(missing)?;
                let mut f = std::fs::File::open(path).map_err(io)?;
                f.seek(SeekFrom::Start(offset)).map_err(io)?;
                (Box::new(f.take(size)), size)
            }
        };
        if size > max {
            return Err(self.layout_error(format!("{rel} is {size} bytes, more than the {max} allowed for metadata")));
        }
        let mut buf = Vec::with_capacity(size as usize);
        reader.read_to_end(&mut buf).map_err(io)?;
        Ok(buf)
    }

    /// Reads a small blob whole and checks its digest.
    pub fn read_blob(&self, digest: &Digest, max: u64) -> Result<Vec<u8>, ImageError> {
        let bytes = self.read_path(&Self::blob_path(digest), max)?;
        let actual = Digest::of(&bytes);
        if &actual != digest {
            return Err(ImageError::Corrupt { path: self.display(), digest: digest.clone(), actual });
        }
        Ok(bytes)
    }

    /// Opens a blob for streaming from `offset`, checking its size against the descriptor's.
    pub async fn open_blob(&self, digest: &Digest, size: u64, offset: u64) -> Result<BlobReader, ImageError> {
        let rel = Self::blob_path(digest);
        let io = |source| ImageError::Io { path: format!("{}/{rel}", self.display()), source };
        let (file, start, actual) = match self {
            Store::Dir(dir) => {
                let f = tokio::fs::File::open(dir.join(&rel)).await.map_err(io)?;
                let len = f.metadata().await.map_err(io)?.len();
                (f, 0, len)
            }
            Store::Archive(path, entries) => {
                let (offset, len) = *entries.get(&rel).ok_or_else(|| self.layout_error(format!("{rel} is missing")))?;
                (tokio::fs::File::open(path).await.map_err(io)?, offset, len)
            }
        };
        if actual != size {
            return Err(self.layout_error(format!("blob {digest} is {actual} bytes but its descriptor says {size}")));
        }
        let offset = offset.min(size);
        let mut file = file;
        file.seek(SeekFrom::Start(start + offset)).await.map_err(io)?;
        Ok(file.take(size - offset))
    }
}
