//! Image sources: open an image where CI left it, in skopeo's syntax (`oci:DIR[:REF]`,
//! `oci-archive:FILE[:REF]`, `docker-archive:FILE[:REF]`, `docker-daemon:NAME`,
//! `docker://HOST/REPO`), read and verify its manifests and configs, and stream its blobs. Layers are never held in memory; only manifests and configs (bounded) are read
//! whole. Knows nothing of policies; a `docker://` source reads its blobs through the
//! registry client (`remote`).

pub mod compress;
pub use compress::Deferred;
pub mod daemon;
pub mod docker;
pub mod oci;
pub mod pgzip;
pub mod remote;
mod store;
pub mod tarwalk;
mod transport;

pub use transport::Transport;

use std::collections::HashSet;
use std::path::PathBuf;

use oci::{ConfigDoc, ManifestDoc};
pub use oci::{DOCKER_LIST, DOCKER_MANIFEST, Descriptor, Manifest, OCI_INDEX, OCI_MANIFEST, OciPlatform};

use crate::types::{ByteSize, Digest, Platform};
pub use store::BlobReader;
use store::Store;

/// Manifests are limited to 4 MiB by registries; configs get the same bound here.
const MAX_METADATA: u64 = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(
        "unknown transport in {0:?}: expected oci:DIR[:REF], oci-archive:FILE[:REF], docker-archive:FILE[:REF], docker-daemon:NAME[:TAG] or docker://HOST/REPO[:TAG|@DIGEST]"
    )]
    Transport(String),
    #[error("{path}: {what}")]
    Layout { path: String, what: String },
    #[error("{path}: cannot read: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: blob {digest} is corrupt: its content hashes to {actual}")]
    Corrupt { path: String, digest: Digest, actual: Digest },
}

/// An opened image: its root manifest (image or index), the image manifests under an index,
/// and every blob they reference.
#[derive(Debug)]
pub struct Image {
    pub source: String,
    store: Store,
    pub root: Manifest,
    /// Image manifests of an index, in index order (empty for a single image).
    pub children: Vec<Manifest>,
    /// The daemon's export this image is read from, as a stream: a push reads it once more
    /// and uploads the blobs it needs as they go past (`push`).
    pub export: Option<daemon::Export>,
    /// Layers Docker saved uncompressed, compressed while they are pushed; the root and
    /// children above list them uncompressed until `finish` writes the manifests as pushed.
    pub deferred: Option<Deferred>,
    /// For an image read from a registry: where its blobs come from, and `(host, repository)`
    /// so a push to the same registry can mount them instead of copying.
    remote: Option<std::sync::Arc<dyn RemoteBlobs>>,
    pub origin: Option<(String, String)>,
}

/// A stream of a blob's bytes.
pub type BlobStream = Box<dyn tokio::io::AsyncRead + Send + Unpin>;

/// Where a remote image's blobs are read from (implemented by the registry client).
pub trait RemoteBlobs: Send + Sync + std::fmt::Debug {
    /// A stream of the blob `digest` of `size` bytes, from `offset`.
    fn open<'a>(
        &'a self,
        digest: &'a Digest,
        size: u64,
        offset: u64,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<BlobStream>> + Send + 'a>>;
}

/// How to open local sources: the compression for the layers Docker saved uncompressed, and
/// the Docker daemon's socket.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    pub compression: crate::types::LayerCompression,
    /// The compressor's level (`None`: its default).
    pub compression_level: Option<u32>,
    pub docker_socket: PathBuf,
    /// The longest wait for the next bytes of a daemon's export (`transfer.read_timeout`).
    pub read_timeout: std::time::Duration,
}

impl Image {
    /// Opens an image from a local transport (`docker://` goes through `remote::open`).
    pub fn open_with(transport: &Transport, opts: &OpenOptions) -> Result<Image, ImageError> {
        let compression = opts.compression;
        let mut export = None;
        let (mut store, reference, source, docker) = match transport {
            Transport::OciDir { path, reference } => {
                (Store::dir(path)?, reference.clone(), format!("oci:{}", path.display()), false)
            }
            Transport::OciArchive { path, reference } => {
                (Store::archive(path)?, reference.clone(), format!("oci-archive:{}", path.display()), false)
            }
            Transport::DockerArchive { path, reference } => {
                (Store::archive(path)?, reference.clone(), format!("docker-archive:{}", path.display()), true)
            }
            Transport::Registry { reference } => {
                return Err(ImageError::Layout {
                    path: format!("docker://{reference}"),
                    what: "a registry source is opened through the registry client".into(),
                });
            }
            Transport::DockerDaemon { name } => {
                let tagged = if name.rsplit('/').next().is_some_and(|last| last.contains(':') || last.contains('@')) {
                    name.clone()
                } else {
                    format!("{name}:latest")
                };
                // Read once for its manifests, configs and sizes; nothing is written to disk.
                let daemon = daemon::Export {
                    name: tagged.clone(),
                    socket: opts.docker_socket.clone(),
                    read_timeout: opts.read_timeout,
                };
                let source = format!("docker-daemon:{name}");
                let store = Store::scanned(source.clone(), daemon.scan()?, daemon.clone());
                export = Some(daemon);
                (store, Some(tagged), source, true)
            }
        };
        let compression = compress::Compression::new(compression, opts.compression_level);
        let image = |store, root, children| Image {
            source,
            store,
            root,
            children,
            export,
            deferred: None,
            remote: None,
            origin: None,
        };
        if docker && !store.has("oci-layout") {
            let root = docker::open_legacy(&mut store, reference.as_deref(), compression)?;
            return Ok(image(store, root, Vec::new()).deferring(compression));
        }
        let layout: serde_json::Value = serde_json::from_slice(&store.read_path("oci-layout", 64 * 1024)?)
            .map_err(|e| store.layout_error(format!("oci-layout is not JSON (line {})", e.line())))?;
        match layout.get("imageLayoutVersion").and_then(|v| v.as_str()) {
            Some("1.0.0") => {}
            Some(v) => {
                return Err(store.layout_error(format!(
                    "oci-layout has imageLayoutVersion {v:?}; publish reads version 1.0.0 (the OCI image layout spec's)"
                )));
            }
            None => {
                return Err(store.layout_error("oci-layout has no imageLayoutVersion: not an OCI image layout".into()));
            }
        }
        let index: ManifestDoc =
            serde_json::from_slice(&store.read_path("index.json", MAX_METADATA)?).map_err(|e| {
                store.layout_error(format!("index.json is not an OCI index (line {}, column {})", e.line(), e.column()))
            })?;
        if let Some(d) =
            index.manifests.iter().find(|d| !oci::valid_media_type(&d.media_type) || d.size > oci::MAX_BLOB)
        {
            return Err(store.layout_error(format!("index.json lists {} with a bad media type or size", d.digest)));
        }
        let entry = select_entry(&store, &index.manifests, reference.as_deref())?;
        let mut root = read_manifest(&store, entry)?;
        let mut children = Vec::new();
        if root.is_index() {
            let doc: ManifestDoc = parse_doc(&store, &root)?;
            for d in &doc.manifests {
                let child = read_manifest(&store, d)?;
                if child.is_index() {
                    return Err(store.layout_error(format!(
                        "{} is an index nested in an index, which publish does not read",
                        d.digest
                    )));
                }
                children.push(child);
            }
        } else if root.platform.is_none() {
            root.platform = config_platform(&store, &root)?;
        }
        for child in children.iter_mut().filter(|c| c.platform.is_none()) {
            child.platform = config_platform(&store, child)?;
        }
        // What Docker saved uncompressed is compressed as it is pushed; an OCI layout the user
        // built keeps its bytes.
        let image = image(store, root, children);
        Ok(if docker { image.deferring(compression) } else { image })
    }

    /// The image with its uncompressed layers to be compressed as they are pushed (none
    /// without a compression, or when it has none).
    fn deferring(mut self, compression: Option<compress::Compression>) -> Image {
        let layers = docker::uncompressed_layers(&self.image_manifests());
        if let Some(compression) = compression.filter(|_| !layers.is_empty()) {
            self.deferred = Some(Deferred::new(compression, layers));
        }
        self
    }

    /// The manifests as pushed to one repository: the root and the children with each layer's
    /// compressed form there (`compressed`: diff_id → digest and size) in place of the
    /// uncompressed one; the same manifests when nothing was to be compressed. An error when a
    /// layer's compressed form is not in `compressed`.
    pub fn finish(
        &self,
        compressed: &std::collections::HashMap<Digest, (Digest, u64)>,
    ) -> Result<(Manifest, Vec<Manifest>), ImageError> {
        let Some(deferred) = &self.deferred else { return Ok((self.root.clone(), self.children.clone())) };
        docker::finish(&self.root, &self.children, deferred.compression, compressed)
            .map_err(|what| ImageError::Layout { path: self.source.clone(), what })
    }

    /// The layer `diff_id` compressed as the image says, streamed as it is made; `on_read` hears
    /// of the uncompressed bytes as the compressor reads them (progress in the layer's terms).
    pub fn compressed_layer(
        &self,
        diff_id: &Digest,
        on_read: Option<compress::OnRead>,
    ) -> std::io::Result<compress::Compressed> {
        let Some(deferred) = &self.deferred else {
            return Err(std::io::Error::other(format!("{diff_id} is not a layer to compress")));
        };
        let label = format!("{}: layer {diff_id}", self.source);
        let counted = move |reader: Box<dyn std::io::Read + Send>| -> Box<dyn std::io::Read + Send> {
            match on_read {
                Some(on_read) => Box::new(compress::Counted { inner: reader, on_read }),
                None => reader,
            }
        };
        if let (Some(export), true) = (self.export.clone(), self.store.in_memory(diff_id).is_none()) {
            // A fresh export read up to the layer, on the compressor's thread.
            let path = self.store.path_of(diff_id);
            let open = move || export.entry(&path).map(counted).map_err(std::io::Error::other);
            return compress::stream(open, diff_id.clone(), deferred.compression, label);
        }
        let reader = counted(self.store.blob_reader(diff_id).map_err(std::io::Error::other)?.0);
        compress::stream(move || Ok(reader), diff_id.clone(), deferred.compression, label)
    }

    /// Where the blob `digest` is in the daemon's export, and its bytes when they are in memory.
    pub fn export_path(&self, digest: &Digest) -> (String, bool) {
        (self.store.path_of(digest), self.store.in_memory(digest).is_some())
    }

    /// Every image manifest: the children of an index, or the root itself.
    pub fn image_manifests(&self) -> Vec<&Manifest> {
        if self.root.is_index() { self.children.iter().collect() } else { vec![&self.root] }
    }

    /// Unique blobs (configs and layers) in push order: each manifest's config, then its layers.
    pub fn blobs(&self) -> Vec<&Descriptor> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for m in self.image_manifests() {
            for d in m.config.iter().chain(m.layers.iter()) {
                if seen.insert(&d.digest) {
                    out.push(d);
                }
            }
        }
        out
    }

    /// Platforms the image provides (attestation manifests, `unknown/unknown`, are left out).
    pub fn platforms(&self) -> Vec<Platform> {
        let mut ps: Vec<Platform> =
            self.image_manifests().iter().filter_map(|m| m.platform.clone()).filter(|p| p.os != "unknown").collect();
        ps.dedup();
        ps
    }

    pub fn total_size(&self) -> ByteSize {
        ByteSize(self.blobs().iter().map(|d| d.size).sum())
    }

    pub fn largest_layer(&self) -> ByteSize {
        ByteSize(self.image_manifests().iter().flat_map(|m| m.layers.iter()).map(|d| d.size).max().unwrap_or(0))
    }

    /// An image read from a registry: its manifests, and where its blobs come from.
    pub fn from_remote(
        source: String,
        root: Manifest,
        children: Vec<Manifest>,
        remote: std::sync::Arc<dyn RemoteBlobs>,
        origin: (String, String),
    ) -> Image {
        Image {
            source,
            store: Store::none(),
            root,
            children,
            export: None,
            deferred: None,
            remote: Some(remote),
            origin: Some(origin),
        }
    }

    /// Checks, offline, that every blob is in the source with its descriptor's size (`hash`:
    /// and its digest). An image read from a registry is checked by the registry instead.
    pub fn check_blobs(&self, hash: bool) -> Result<(), ImageError> {
        if self.remote.is_some() {
            return Ok(());
        }
        self.blobs().into_iter().try_for_each(|d| self.store.check_blob(&d.digest, d.size, hash))
    }

    /// The repository on `host` to mount this image's blobs from when pushing to
    /// `repository` there: the one it was read from, if on the same registry and not the same.
    pub fn mount_source(&self, host: &str, repository: &str) -> Option<String> {
        self.origin.as_ref().filter(|(h, repo)| h == host && repo != repository).map(|(_, repo)| repo.clone())
    }

    /// Whether the image is read from files here (not from a registry).
    pub fn is_local(&self) -> bool {
        self.remote.is_none()
    }

    /// A local blob's size on disk (`None` for an image read from a registry), read from file
    /// metadata without reading the blob.
    pub fn source_size(&self, d: &Descriptor) -> std::io::Result<Option<u64>> {
        if self.remote.is_some() {
            return Ok(None);
        }
        self.store.blob_size(&d.digest).map(Some).map_err(std::io::Error::other)
    }

    /// A streaming reader over a blob's bytes from `offset`. The caller hashes what it reads.
    /// The file holding blob `d` and where in it the blob starts, when it is a byte range of a
    /// file on disk (not for an image read from a registry); its size is checked.
    pub async fn blob_file(&self, d: &Descriptor) -> Option<std::io::Result<(std::fs::File, u64)>> {
        if self.remote.is_some() || self.store.is_scanned() {
            return None;
        }
        Some(self.store.open_blob(&d.digest, d.size, 0).await.map(|r| r.into_file()).map_err(std::io::Error::other))
    }

    pub async fn blob(&self, d: &Descriptor, offset: u64) -> std::io::Result<BlobStream> {
        if let Some(bytes) = self.store.in_memory(&d.digest) {
            let at = (offset as usize).min(bytes.len());
            return Ok(Box::new(std::io::Cursor::new(bytes[at..].to_vec())));
        }
        if let Some(export) = self.export.clone().filter(|_| self.store.is_scanned()) {
            // Read from a fresh export up to the blob (a retry after the pass that carried it).
            let path = self.store.path_of(&d.digest);
            let reader = tokio::task::spawn_blocking(move || {
                let mut reader = export.entry(&path).map_err(std::io::Error::other)?;
                std::io::copy(&mut std::io::Read::take(&mut reader, offset), &mut std::io::sink())?;
                Ok::<_, std::io::Error>(reader)
            })
            .await
            .map_err(std::io::Error::other)??;
            return Ok(Box::new(compress::pipe(reader)?));
        }
        match &self.remote {
            Some(remote) => remote.open(&d.digest, d.size, offset).await,
            None => self
                .store
                .open_blob(&d.digest, d.size, offset)
                .await
                .map(|r| Box::new(r) as BlobStream)
                .map_err(std::io::Error::other),
        }
    }
}

fn select_entry<'a>(
    store: &Store,
    entries: &'a [Descriptor],
    reference: Option<&str>,
) -> Result<&'a Descriptor, ImageError> {
    let name =
        |d: &Descriptor| d.annotations.as_ref().and_then(|a| a.get("org.opencontainers.image.ref.name")).cloned();
    // Docker 25+'s `docker save` names images with containerd's annotation.
    let image_name = |d: &Descriptor| d.annotations.as_ref().and_then(|a| a.get("io.containerd.image.name")).cloned();
    match reference {
        Some(r) => entries
            .iter()
            .find(|d| name(d).as_deref() == Some(r) || image_name(d).is_some_and(|n| docker::same_name(&n, r)))
            .ok_or_else(|| {
                let names: Vec<String> = entries.iter().filter_map(name).collect();
                store.layout_error(format!(
                    "no image named {r:?} in index.json (names there: {})",
                    if names.is_empty() { "none".into() } else { names.join(", ") }
                ))
            }),
        None => match entries {
            [one] => Ok(one),
            [] => Err(store.layout_error("index.json lists no image".to_string())),
            many => {
                let names: Vec<String> = many.iter().filter_map(name).collect();
                Err(store.layout_error(format!(
                    "index.json lists {} images: name one as DIR:REF (names: {})",
                    many.len(),
                    names.join(", ")
                )))
            }
        },
    }
}

fn read_manifest(store: &Store, d: &Descriptor) -> Result<Manifest, ImageError> {
    let bytes = store.read_blob(&d.digest, d.size.min(MAX_METADATA))?;
    let platform = d.platform.as_ref().map(Platform::from);
    Manifest::parse(d.digest.clone(), bytes, &d.media_type, platform).map_err(|e| store.layout_error(e.to_string()))
}

fn parse_doc(store: &Store, m: &Manifest) -> Result<ManifestDoc, ImageError> {
    serde_json::from_slice(&m.bytes)
        .map_err(|e| store.layout_error(format!("manifest {} is not valid JSON (line {})", m.digest, e.line())))
}

fn config_platform(store: &Store, m: &Manifest) -> Result<Option<Platform>, ImageError> {
    let Some(config) = &m.config else {
        return Ok(None);
    };
    let bytes = store.read_blob(&config.digest, config.size.min(MAX_METADATA))?;
    let doc: ConfigDoc = serde_json::from_slice(&bytes)
        .map_err(|e| store.layout_error(format!("config {} is not valid JSON (line {})", config.digest, e.line())))?;
    if doc.os.is_empty() || doc.architecture.is_empty() {
        return Ok(None);
    }
    Ok(Some(Platform { os: doc.os, architecture: doc.architecture, variant: doc.variant }))
}
