//! `docker-archive:FILE[:REF]`, what `docker save` writes: Docker 25+'s OCI layout inside the
//! tar, or the legacy layout (`manifest.json`, a config file, `<id>/layer.tar` uncompressed).
//! Legacy layers are compressed once, streaming, into a cache keyed by their uncompressed
//! digest (diff_id), so a later push finds the compressed digest without compressing again.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::json;
use sha2::{Digest as _, Sha256};

use super::store::Store;
use super::{DOCKER_MANIFEST, ImageError, Manifest, config_platform};
use crate::types::{Digest, LayerCompression};

pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// gzip's level for layers Docker saved uncompressed. On a 1.35 GB `docker save` of real file
/// trees (libraries, binaries, docs), pushed by skopeo (515.1 MB of layers) on two cores:
/// level 1 gives 631.1 MB (+23 %), 2 gives 531.5 MB (+3.2 %), 3 gives 514.0 MB (−0.2 %) for
/// 1.1 CPU-s more than 2, 6 gives 499.8 MB for 6 CPU-s more. 3 stays within skopeo's size with
/// margin on images that compress less well.
pub const GZIP_LEVEL: u32 = 3;
/// zstd's level, its CLI's default.
pub const ZSTD_LEVEL: i32 = 3;

/// Whether a layer of this media type is an uncompressed tar.
pub fn uncompressed(media_type: &str) -> bool {
    media_type == OCI_LAYER || media_type == DOCKER_LAYER
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Entry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

#[derive(Deserialize)]
struct Rootfs {
    #[serde(default)]
    diff_ids: Vec<Digest>,
}

#[derive(Deserialize)]
struct ConfigDoc {
    rootfs: Rootfs,
}

/// Whether `tag` (from RepoTags, or an OCI name annotation) names `reference` (`app:v1`,
/// `library/app:v1` or `docker.io/library/app:v1` all name the same image).
pub fn same_name(tag: &str, reference: &str) -> bool {
    let norm = |s: &str| {
        let (host, path) = crate::reference::split_host(s);
        format!("{host}/{path}")
    };
    tag == reference || norm(tag) == norm(reference)
}

/// Reads a legacy `docker save` archive into a Docker v2 manifest, compressing its layers
/// (or not) as asked.
pub(super) fn open_legacy(
    store: &mut Store,
    reference: Option<&str>,
    (compression, level): (LayerCompression, Option<u32>),
    cache: &Path,
) -> Result<Manifest, ImageError> {
    let entries: Vec<Entry> = serde_json::from_slice(&store.read_path("manifest.json", super::MAX_METADATA)?)
        .map_err(|e| store.layout_error(format!("manifest.json is not docker save's manifest: {e}")))?;
    let tags = |e: &Entry| e.repo_tags.clone().unwrap_or_default();
    let entry = match reference {
        Some(r) => entries.iter().find(|e| tags(e).iter().any(|t| same_name(t, r))).ok_or_else(|| {
            let all: Vec<String> = entries.iter().flat_map(tags).collect();
            store.layout_error(format!("no image tagged {r:?} in the archive (tags there: {})", all.join(", ")))
        })?,
        None => match entries.as_slice() {
            [one] => one,
            [] => return Err(store.layout_error("manifest.json lists no image".into())),
            many => {
                let all: Vec<String> = many.iter().flat_map(tags).collect();
                return Err(store.layout_error(format!(
                    "the archive holds {} images: name one as FILE:REF (tags: {})",
                    many.len(),
                    all.join(", ")
                )));
            }
        },
    };
    let config = store.read_path(&entry.config, super::MAX_METADATA)?;
    let config_digest = Digest::of(&config);
    store.alias(config_digest.clone(), entry.config.clone());
    let doc: ConfigDoc = serde_json::from_slice(&config)
        .map_err(|e| store.layout_error(format!("{} is not an image config: {e}", entry.config)))?;
    if doc.rootfs.diff_ids.len() != entry.layers.len() {
        return Err(store.layout_error(format!(
            "the config lists {} layers, manifest.json {}",
            doc.rootfs.diff_ids.len(),
            entry.layers.len()
        )));
    }
    let mut layers = Vec::new();
    for (path, diff_id) in entry.layers.iter().zip(&doc.rootfs.diff_ids) {
        store.alias(diff_id.clone(), path.clone());
        let (media_type, digest, size) = match compression {
            LayerCompression::None => {
                let (_, size) = store.blob_reader(diff_id)?;
                (DOCKER_LAYER, diff_id.clone(), size)
            }
            LayerCompression::Gzip | LayerCompression::Zstd => {
                let (digest, size, file) = compressed(store, diff_id, path, (compression, level), cache)?;
                store.add_file(digest.clone(), file);
                let media_type = if compression == LayerCompression::Zstd { OCI_LAYER_ZSTD } else { DOCKER_LAYER_GZIP };
                (media_type, digest, size)
            }
        };
        layers.push(json!({"mediaType": media_type, "size": size, "digest": digest.as_str()}));
    }
    // zstd layers exist only in OCI manifests; Docker's config JSON is a valid OCI config.
    let (manifest_type, config_type) = if compression == LayerCompression::Zstd {
        (super::OCI_MANIFEST, "application/vnd.oci.image.config.v1+json")
    } else {
        (DOCKER_MANIFEST, DOCKER_CONFIG)
    };
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": manifest_type,
        "config": {"mediaType": config_type, "size": config.len(), "digest": config_digest.as_str()},
        "layers": layers
    })
    .to_string()
    .into_bytes();
    let doc: super::ManifestDoc = serde_json::from_slice(&manifest).map_err(|e| store.layout_error(e.to_string()))?;
    let mut m = Manifest {
        digest: Digest::of(&manifest),
        media_type: manifest_type.into(),
        bytes: manifest,
        platform: None,
        config: doc.config,
        layers: doc.layers,
    };
    m.platform = config_platform(store, &m)?;
    Ok(m)
}

/// Docker 25+'s `docker save` (and the daemon's export with the containerd image store) is an
/// OCI layout whose layers may be uncompressed tars: each one is compressed as asked (its
/// digest is its diff_id) and the manifests that list it are written anew, so a 15 GB image is
/// not sent, stored and pulled at 15 GB. `compression: none` keeps them as they are.
pub(super) fn compress_oci(
    store: &mut Store,
    root: Manifest,
    children: Vec<Manifest>,
    (compression, level): (LayerCompression, Option<u32>),
    cache: &Path,
) -> Result<(Manifest, Vec<Manifest>), ImageError> {
    if compression == LayerCompression::None {
        return Ok((root, children));
    }
    if !root.is_index() {
        return Ok((compress_manifest(store, root, (compression, level), cache)?, children));
    }
    let mut index: serde_json::Value = serde_json::from_slice(&root.bytes)
        .map_err(|e| store.layout_error(format!("index {} is not JSON: {e}", root.digest)))?;
    let mut rewritten = Vec::new();
    let mut changed = false;
    for child in children {
        let before = child.digest.clone();
        let after = compress_manifest(store, child, (compression, level), cache)?;
        if after.digest != before {
            changed = true;
            rewrite_entries(&mut index, &before, &after);
        }
        rewritten.push(after);
    }
    // An index none of whose images changed keeps its bytes (and its digest).
    if !changed {
        return Ok((root, rewritten));
    }
    let bytes = serde_json::to_vec(&index).map_err(|e| store.layout_error(e.to_string()))?;
    let root = Manifest::parse(Digest::of(&bytes), bytes, &root.media_type, root.platform)
        .map_err(|e| store.layout_error(e.to_string()))?;
    Ok((root, rewritten))
}

/// Points the index's entries for manifest `before` at `after`, and the attestation entries
/// that refer to it (Docker's `vnd.docker.reference.digest`) too.
fn rewrite_entries(index: &mut serde_json::Value, before: &Digest, after: &Manifest) {
    let Some(entries) = index.get_mut("manifests").and_then(|m| m.as_array_mut()) else { return };
    for e in entries.iter_mut() {
        if e.get("digest").and_then(|d| d.as_str()) == Some(before.as_str()) {
            e["digest"] = json!(after.digest.as_str());
            e["size"] = json!(after.bytes.len());
            e["mediaType"] = json!(after.media_type);
        }
        let refers = e.pointer("/annotations/vnd.docker.reference.digest").and_then(|d| d.as_str());
        if refers == Some(before.as_str()) {
            e["annotations"]["vnd.docker.reference.digest"] = json!(after.digest.as_str());
        }
    }
}

/// One image manifest with its uncompressed layers compressed (unchanged when it has none).
fn compress_manifest(
    store: &mut Store,
    m: Manifest,
    (compression, level): (LayerCompression, Option<u32>),
    cache: &Path,
) -> Result<Manifest, ImageError> {
    if !m.layers.iter().any(|l| uncompressed(&l.media_type)) {
        return Ok(m);
    }
    let zstd = compression == LayerCompression::Zstd;
    // zstd layers exist only in OCI manifests; Docker's config JSON is a valid OCI config.
    let media_type = if zstd { super::OCI_MANIFEST.to_string() } else { m.media_type.clone() };
    let mut doc: serde_json::Value = serde_json::from_slice(&m.bytes)
        .map_err(|e| store.layout_error(format!("manifest {} is not JSON: {e}", m.digest)))?;
    for (i, layer) in m.layers.iter().enumerate().filter(|(_, l)| uncompressed(&l.media_type)) {
        let path = format!("blobs/sha256/{}", layer.digest.hex());
        let (digest, size, file) = compressed(store, &layer.digest, &path, (compression, level), cache)?;
        store.add_file(digest.clone(), file);
        let layer_type = match (zstd, media_type == DOCKER_MANIFEST) {
            (true, _) => OCI_LAYER_ZSTD,
            (false, true) => DOCKER_LAYER_GZIP,
            (false, false) => OCI_LAYER_GZIP,
        };
        doc["layers"][i]["mediaType"] = json!(layer_type);
        doc["layers"][i]["digest"] = json!(digest.as_str());
        doc["layers"][i]["size"] = json!(size);
    }
    if zstd && m.media_type == DOCKER_MANIFEST {
        doc["mediaType"] = json!(super::OCI_MANIFEST);
        doc["config"]["mediaType"] = json!("application/vnd.oci.image.config.v1+json");
    }
    let bytes = serde_json::to_vec(&doc).map_err(|e| store.layout_error(e.to_string()))?;
    Manifest::parse(Digest::of(&bytes), bytes, &media_type, m.platform).map_err(|e| store.layout_error(e.to_string()))
}

/// The compressed layer, from the cache or made now (streaming: uncompressed bytes are hashed
/// against the diff_id as they are compressed).
fn compressed(
    store: &Store,
    diff_id: &Digest,
    path: &str,
    (compression, level): (LayerCompression, Option<u32>),
    cache: &Path,
) -> Result<(Digest, u64, PathBuf), ImageError> {
    let dir = cache.to_path_buf();
    let io = |source| ImageError::Io { path: dir.display().to_string(), source };
    let algo = if compression == LayerCompression::Zstd { "zstd" } else { "gzip" };
    let level = level.unwrap_or(if compression == LayerCompression::Zstd { ZSTD_LEVEL as u32 } else { GZIP_LEVEL });
    // The layer must be in the archive, cache or not: a warm cache never stands in for a
    // layer the archive does not have.
    drop(store.blob_reader(diff_id)?);
    // Each algorithm and level has its own digests.
    let kind = format!("{algo}-{level}");
    let map = dir.join(&kind).join(diff_id.hex());
    if let Ok(line) = crate::http::read_file_limited(&map, 1024).map(|b| String::from_utf8_lossy(&b).into_owned())
        && let Some((d, s)) = line.trim().split_once(' ')
        && let (Ok(digest), Ok(size)) = (d.parse::<Digest>(), s.parse::<u64>())
    {
        let file = dir.join("blobs").join(digest.hex());
        if std::fs::metadata(&file).is_ok_and(|m| m.len() == size) {
            tracing::debug!(layer = path, %digest, "compressed layer found in the cache");
            return Ok((digest, size, file));
        }
    }
    std::fs::create_dir_all(dir.join(&kind)).map_err(io)?;
    std::fs::create_dir_all(dir.join("blobs")).map_err(io)?;
    tracing::info!(layer = path, "compressing ({algo})");
    let tmp = Partial(dir.join("blobs").join(format!(".tmp-{}-{}", diff_id.hex(), std::process::id())));
    let out = std::fs::File::create(&tmp.0).map_err(io)?;
    let sink = HashingWriter { inner: out, hasher: Sha256::new(), written: 0 };
    // Every core, and the same bytes whatever their number (see `pgzip`; zstd's own workers
    // cut the input into jobs by size, not by worker count).
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut encoder: Encoder = if compression == LayerCompression::Zstd {
        let mut e = zstd::stream::write::Encoder::new(sink, level as i32).map_err(io)?;
        e.multithread(threads as u32).map_err(io)?;
        Encoder::Zstd(e)
    } else {
        Encoder::Gzip(super::pgzip::ParallelGz::new(sink, level, threads))
    };
    let (mut reader, size) = store.blob_reader(diff_id)?;
    // Without a terminal, a long layer says how it is going every 30 s.
    let pace = (!std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .then(|| crate::progress::Pace::new(format!("compressing {path} ({algo})"), size));
    let mut uncompressed = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = reader.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        if let Some(p) = &pace {
            p.add(n as u64, "");
        }
        uncompressed.update(&buf[..n]);
        encoder.write_all(&buf[..n]).map_err(io)?;
    }
    let actual = Digest::from_sha256(&uncompressed.finalize());
    if &actual != diff_id {
        return Err(ImageError::Corrupt {
            path: format!("{}:{path}", store.display()),
            digest: diff_id.clone(),
            actual,
        });
    }
    let w = encoder.finish().map_err(io)?;
    let digest = Digest::from_sha256(&w.hasher.finalize());
    let file = dir.join("blobs").join(digest.hex());
    std::fs::rename(&tmp.0, &file).map_err(io)?;
    std::fs::write(&map, format!("{digest} {}\n", w.written)).map_err(io)?;
    Ok((digest, w.written, file))
}

/// A file being written into the cache: removed unless it was renamed into place, so a
/// failed or corrupt compression leaves nothing behind.
struct Partial(PathBuf);

impl Drop for Partial {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// gzip or zstd, writing into a hashing file writer.
enum Encoder {
    Gzip(super::pgzip::ParallelGz<HashingWriter<std::fs::File>>),
    Zstd(zstd::stream::write::Encoder<'static, HashingWriter<std::fs::File>>),
}

impl Encoder {
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match self {
            Encoder::Gzip(e) => e.write_all(buf),
            Encoder::Zstd(e) => e.write_all(buf),
        }
    }

    fn finish(self) -> std::io::Result<HashingWriter<std::fs::File>> {
        match self {
            Encoder::Gzip(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
        }
    }
}

struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    /// zstd's workers cut the input into jobs by size, so the frame is the same bytes whatever
    /// their number (what makes a layer's digest the same on every runner).
    #[test]
    fn zstd_is_the_same_on_1_2_and_8_workers() {
        let data: Vec<u8> = (0..3_000_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
        let frame = |workers: u32| {
            let mut e = zstd::stream::write::Encoder::new(Vec::new(), super::ZSTD_LEVEL).unwrap();
            e.multithread(workers).unwrap();
            e.write_all(&data).unwrap();
            e.finish().unwrap()
        };
        let one = frame(1);
        assert_eq!(zstd::decode_all(&one[..]).unwrap(), data);
        assert_eq!(frame(2), one);
        assert_eq!(frame(8), one);
    }
}
