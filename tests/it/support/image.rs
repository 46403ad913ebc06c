//! Test images: OCI layouts (and archives of them) with layers of pseudo-random bytes, for
//! any platform, written the way `skopeo copy … oci:` and buildx write them.

use std::path::{Path, PathBuf};

use serde_json::json;
use sha2::{Digest as _, Sha256};

pub struct TestImage {
    pub dir: PathBuf,
    pub manifest_digest: String,
    pub config_digest: String,
    pub layer_digests: Vec<String>,
    pub total_bytes: u64,
}

/// `sha256:<hex>` of `data`.
pub fn sha(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Deterministic bytes from a seed (xorshift), so tests can make layers of any size.
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn put(dir: &Path, data: &[u8]) -> String {
    let d = sha(data);
    let p = dir.join("blobs/sha256").join(&d["sha256:".len()..]);
    std::fs::write(p, data).unwrap();
    d
}

/// The media type of the test layouts' layers.
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// Writes an OCI layout at `dir` with one image whose layers have `layer_sizes` bytes
/// (seeded by `seed`), for `os/arch`, named `ref_name` in index.json.
pub fn write_layout(dir: &Path, seed: u64, layer_sizes: &[usize], os: &str, arch: &str, ref_name: &str) -> TestImage {
    write_layout_with(dir, seed, layer_sizes, (os, arch, ref_name), &json!({}))
}

/// `write_layout` with `extra` merged into the config's top level (`created`, a `config` with
/// `Labels`).
pub fn write_layout_with(
    dir: &Path,
    seed: u64,
    layer_sizes: &[usize],
    (os, arch, ref_name): (&str, &str, &str),
    extra: &serde_json::Value,
) -> TestImage {
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let mut layers = Vec::new();
    let mut layer_digests = Vec::new();
    let mut total = 0u64;
    for (i, size) in layer_sizes.iter().enumerate() {
        let data = bytes(seed * 1000 + i as u64, *size);
        let d = put(dir, &data);
        total += data.len() as u64;
        // Labelled gzip as a build's layers are (the bytes are noise; nothing here reads them).
        layers.push(json!({"mediaType": LAYER_MEDIA_TYPE, "digest": d, "size": data.len()}));
        layer_digests.push(d);
    }
    let diff_ids: Vec<_> = layer_digests.clone();
    let mut config = json!({
        "architecture": arch, "os": os,
        "config": {"Env": ["SEED=".to_string() + &seed.to_string()]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids}
    });
    for (k, v) in extra.as_object().into_iter().flatten() {
        config[k] = v.clone();
    }
    let config = serde_json::to_vec(&config).unwrap();
    let config_digest = put(dir, &config);
    total += config.len() as u64;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": layers
    }))
    .unwrap();
    let manifest_digest = put(dir, &manifest);
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest, "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": ref_name}
        }]
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    TestImage { dir: dir.to_path_buf(), manifest_digest, config_digest, layer_digests, total_bytes: total }
}

/// Packs an OCI layout directory into an `oci-archive` tar.
pub fn write_archive(layout: &Path, archive: &Path) {
    let file = std::fs::File::create(archive).unwrap();
    let mut tar = tar::Builder::new(file);
    tar.append_dir_all(".", layout).unwrap();
    tar.finish().unwrap();
}

/// Writes an OCI layout whose one entry is an image index over one image per `(os, arch)`.
/// Returns the index digest and the child images.
pub fn write_index_layout(
    dir: &Path,
    seed: u64,
    platforms: &[(&str, &str)],
    ref_name: &str,
) -> (String, Vec<TestImage>) {
    write_index_layout_with(dir, seed, platforms, ref_name, &json!({}))
}

/// `write_index_layout` with `extra` merged into each platform's config (`write_layout_with`).
pub fn write_index_layout_with(
    dir: &Path,
    seed: u64,
    platforms: &[(&str, &str)],
    ref_name: &str,
    extra: &serde_json::Value,
) -> (String, Vec<TestImage>) {
    let mut children = Vec::new();
    let mut entries = Vec::new();
    for (i, (os, arch)) in platforms.iter().enumerate() {
        let sizes = [20_000 + i * 1000, 4_000];
        let child = write_layout_with(dir, seed * 10 + i as u64, &sizes, (os, arch, "unused"), extra);
        let size =
            std::fs::metadata(dir.join("blobs/sha256").join(&child.manifest_digest["sha256:".len()..])).unwrap().len();
        entries.push(json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": child.manifest_digest, "size": size,
            "platform": {"os": os, "architecture": arch}
        }));
        children.push(child);
    }
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": entries
    }))
    .unwrap();
    let index_digest = put(dir, &index);
    let top = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json", "digest": index_digest, "size": index.len(),
            "annotations": {"org.opencontainers.image.ref.name": ref_name}
        }]
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();
    (index_digest, children)
}

/// Flips one byte of a blob, keeping its size: a corrupt source.
pub fn corrupt_blob(dir: &Path, digest: &str) {
    let p = dir.join("blobs/sha256").join(&digest["sha256:".len()..]);
    let mut data = std::fs::read(&p).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0xff;
    std::fs::write(p, data).unwrap();
}

/// An OCI layout whose layers are sparse files of the given sizes (named by made-up digests:
/// planning reads manifests and checks sizes, never layer contents).
pub fn sparse_layout(dir: &Path, seed: u64, layers: &[u64]) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |data: &[u8]| -> String {
        let hex = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(data));
        std::fs::write(blobs.join(&hex), data).unwrap();
        format!("sha256:{hex}")
    };
    let mut descs = Vec::new();
    for (i, size) in layers.iter().enumerate() {
        let hex = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(format!("layer {seed} {i}").as_bytes()));
        let f = std::fs::File::create(blobs.join(&hex)).unwrap();
        f.set_len(*size).unwrap();
        descs.push(json!({"mediaType": LAYER_MEDIA_TYPE, "digest": format!("sha256:{hex}"), "size": size}));
    }
    let config = serde_json::to_vec(&json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": descs.iter().map(|d| d["digest"].clone()).collect::<Vec<_>>()}})).unwrap();
    let config_digest = put(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": descs
    }))
    .unwrap();
    let manifest_digest = put(&manifest);
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest, "size": manifest.len(), "annotations": {"org.opencontainers.image.ref.name": "latest"}}]})).unwrap(),
    )
    .unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

/// Rewrites the layout's manifest so that its first layer's descriptor says `extra` bytes more
/// than the blob has (the blob itself unchanged). Returns the new manifest's bytes and digest,
/// and the first layer's digest and true size.
pub fn lie_about_first_layer_size(image: &TestImage, extra: u64) -> (Vec<u8>, String, String, u64) {
    let blob = |d: &str| image.dir.join("blobs/sha256").join(&d["sha256:".len()..]);
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blob(&image.manifest_digest)).unwrap()).unwrap();
    let layer = manifest["layers"][0]["digest"].as_str().unwrap().to_string();
    let size = manifest["layers"][0]["size"].as_u64().unwrap();
    manifest["layers"][0]["size"] = json!(size + extra);
    let bytes = serde_json::to_vec(&manifest).unwrap();
    let digest = put(&image.dir, &bytes);
    let index_path = image.dir.join("index.json");
    let mut index: serde_json::Value = serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    index["manifests"][0]["digest"] = json!(digest);
    index["manifests"][0]["size"] = json!(bytes.len());
    std::fs::write(index_path, serde_json::to_vec(&index).unwrap()).unwrap();
    (bytes, digest, layer, size)
}
