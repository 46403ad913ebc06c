//! `docker-archive:` sources, as `docker save` writes them: the legacy layout (uncompressed
//! layers, gzip-compressed on the way through a cache) and Docker 25+'s OCI layout inside the
//! tar; checked with skopeo and by decompressing what the registry holds.

use crate::support;

use std::io::Read;

use crate::support::image::{write_archive, write_layout};
use crate::support::policy::Policy;
use crate::support::{Registry, RegistryOptions, publish, run, text};
use serde_json::{Value, json};

use crate::support::image::sha;

use crate::support::blob as curl_blob;

/// A legacy `docker save` goes up with gzip layers compressed as they are sent: nothing is
/// written to disk, and a push to another tag learns the compressed layers from the image
/// already in the repository, compressing and sending none of them again. Another repository
/// gets the same bytes (the compressor is deterministic).
#[test]
fn legacy_docker_save_is_compressed_as_it_is_sent_and_a_second_push_learns_its_layers_from_the_repository() {
    let reg = Registry::start(RegistryOptions::default());
    let work = tempfile::tempdir().unwrap();
    let diff_ids = support::docker::save_legacy(&work.path().join("app.tar"), 1, &[300_000, 1_000_000]);
    let cache = work.path().join("cache");
    let push = |repo: &str, tag: &str| {
        let out = run(publish(work.path())
            .args([
                "push",
                "docker-archive:app.tar:app:v1",
                &format!("docker://{}/{repo}:{tag}", reg.host),
                "--insecure",
                "-o",
                "json",
            ])
            .env("PUBLISH_CACHE_DIR", &cache));
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
        (serde_json::from_str::<Value>(&stdout).unwrap(), stderr)
    };
    let (json, stderr) = push("ml/app", "v1");
    assert_eq!(stderr.matches("layer compressed and sent").count(), 2, "{stderr}");
    let digest = json["images"][0]["targets"][0]["digest"].as_str().unwrap().to_string();
    assert_eq!(json["images"][0]["digest"], digest.as_str());
    assert!(!cache.exists() || std::fs::read_dir(&cache).unwrap().count() == 0, "nothing is spooled to disk");

    // skopeo reads back exactly the manifest we pushed, with gzip layers.
    let raw = reg.inspect(&format!("{}/ml/app:v1", reg.host), true).stdout;
    assert_eq!(sha(&raw), digest);
    let manifest: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(manifest["mediaType"], "application/vnd.docker.distribution.manifest.v2+json");
    for (layer, diff_id) in manifest["layers"].as_array().unwrap().iter().zip(&diff_ids) {
        assert_eq!(layer["mediaType"], "application/vnd.docker.image.rootfs.diff.tar.gzip");
        let blob = curl_blob(&reg, "ml/app", layer["digest"].as_str().unwrap());
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(&blob[..]).read_to_end(&mut plain).unwrap();
        assert_eq!(&sha(&plain), diff_id, "the layer decompresses to what docker saved");
    }
    let info: Value = serde_json::from_slice(&reg.inspect(&format!("{}/ml/app:v1", reg.host), false).stdout).unwrap();
    assert_eq!(info["Architecture"], "amd64");

    // Again, to a new tag: the repository's v1 gives the compressed layers; nothing is sent.
    let (json, stderr) = push("ml/app", "v2");
    assert_eq!(stderr.matches("layer already in the repository").count(), 2, "{stderr}");
    assert!(!stderr.contains("layer compressed and sent"), "{stderr}");
    assert_eq!(json["images"][0]["targets"][0]["digest"], digest.as_str());
    assert_eq!(json["images"][0]["targets"][0]["bytes_sent"], 0);

    // Another repository knows nothing of it: compressed again, to the same bytes.
    let (json, stderr) = push("ml/other", "v1");
    assert_eq!(stderr.matches("layer compressed and sent").count(), 2, "{stderr}");
    assert_eq!(json["images"][0]["targets"][0]["digest"], digest.as_str());
}

/// A rebuild whose top layer alone changed: the unchanged layer is found in the image the
/// tag holds and neither compressed nor sent; only the new one is.
#[test]
fn a_rebuild_compresses_and_sends_only_the_layer_that_changed() {
    let reg = Registry::start(RegistryOptions::default());
    let work = tempfile::tempdir().unwrap();
    let base = support::image::bytes(70, 900_000);
    let top = |seed| support::image::bytes(seed, 50_000);
    support::docker::save_layers(&work.path().join("v1.tar"), &[base.clone(), top(71)], "app:v1");
    let v2 = support::docker::save_layers(&work.path().join("v2.tar"), &[base, top(72)], "app:v1");
    let push = |archive: &str| {
        let out = run(publish(work.path())
            .args(["push", &format!("docker-archive:{archive}"), &format!("docker://{}/ml/app:main", reg.host)])
            .args(["--insecure", "-o", "json"]));
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
        (serde_json::from_str::<Value>(&stdout).unwrap(), stderr)
    };
    push("v1.tar");
    // Before the rebuild goes up, `push --dry-run` and `publish plan` (when it measures) say
    // which layer is reused from the image `main` holds and which is to compress and send.
    let dry = run(publish(work.path())
        .args(["push", "docker-archive:v2.tar", &format!("docker://{}/ml/app:main", reg.host)])
        .args(["--insecure", "--dry-run"]));
    let (stdout, stderr) = text(&dry);
    assert_eq!(dry.status.code(), Some(0), "{stderr}");
    assert!(stdout.contains(&format!("layer {} reused from main (sha256:", v2[0])), "{stdout}");
    assert!(stdout.contains(&format!("would compress and upload layer {}", v2[1])), "{stdout}");
    Policy::new()
        .local("home", &reg.host)
        .image(json!({"name": "app", "source": "docker-archive:v2.tar", "tags": ["main"]}))
        .write(work.path());
    for (measure, looked) in [("--measure", true), ("--no-measure", false)] {
        let out = run(publish(work.path()).args(["plan", measure]));
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        assert_eq!(stdout.contains(&format!("layer    {} reused from main (sha256:", v2[0])), looked, "{stdout}");
        assert_eq!(stdout.contains(&format!("layer    {} to compress and send", v2[1])), looked, "{stdout}");
    }
    let (json, stderr) = push("v2.tar");
    assert_eq!(stderr.matches("layer already in the repository").count(), 1, "{stderr}");
    assert_eq!(stderr.matches("layer compressed and sent").count(), 1, "{stderr}");
    let sent = json["images"][0]["targets"][0]["bytes_sent"].as_u64().unwrap();
    assert!(sent < 60_000, "only the top layer and the config go up: {sent} bytes");
    let raw = reg.inspect(&format!("{}/ml/app:main", reg.host), true).stdout;
    assert_eq!(sha(&raw), json["images"][0]["digest"].as_str().unwrap());
}

#[test]
fn legacy_layers_can_go_uncompressed_and_a_wrong_tag_is_named() {
    let reg = Registry::start(RegistryOptions::default());
    let work = tempfile::tempdir().unwrap();
    let diff_ids = support::docker::save_legacy(&work.path().join("app.tar"), 2, &[50_000]);
    Policy::new()
        .local("home", &reg.host)
        .image(json!({"name": "app", "source": "docker-archive:app.tar:app:v1", "compression": "none", "visibility": "public"}))
        .write(work.path());
    let out = run(publish(work.path()).arg("run").env("PUBLISH_CACHE_DIR", work.path().join("cache")));
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    let manifest: Value =
        serde_json::from_slice(&reg.inspect(&format!("{}/ml/app:latest", reg.host), true).stdout).unwrap();
    assert_eq!(manifest["layers"][0]["mediaType"], "application/vnd.docker.image.rootfs.diff.tar");
    assert_eq!(manifest["layers"][0]["digest"], diff_ids[0].as_str());

    let out = run(publish(work.path()).args([
        "push",
        "docker-archive:app.tar:other:v9",
        &format!("docker://{}/ml/x:v1", reg.host),
        "--insecure",
    ]));
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("no image tagged \"other:v9\" in the archive (tags there: app:v1)"), "{stderr}");
}

#[test]
fn docker_25_oci_layout_inside_the_tar_is_found_by_its_name() {
    let reg = Registry::start(RegistryOptions::default());
    let work = tempfile::tempdir().unwrap();
    let image = write_layout(&work.path().join("layout"), 3, &[20_000, 7_000], "linux", "amd64", "v2");
    // docker save (25+) names the image with containerd's annotation too.
    let index_path = image.dir.join("index.json");
    let mut index: Value = serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    index["manifests"][0]["annotations"]["io.containerd.image.name"] = json!("docker.io/library/app:v2");
    std::fs::write(&index_path, index.to_string()).unwrap();
    std::fs::write(image.dir.join("manifest.json"), "[]").unwrap();
    write_archive(&image.dir, &work.path().join("app.tar"));
    let out = run(publish(work.path()).args([
        "push",
        "docker-archive:app.tar:app:v2",
        &format!("docker://{}/ml/app:v2", reg.host),
        "--insecure",
        "-o",
        "json",
    ]));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let raw = reg.inspect(&format!("{}/ml/app:v2", reg.host), true).stdout;
    assert_eq!(sha(&raw), image.manifest_digest, "pushed byte for byte as saved");
}

/// Docker 25+'s `docker save`: an OCI layout inside the tar whose layer is an uncompressed tar.
/// It is compressed (the same bytes on every run, cache or not), and the plan warns when
/// `compression: none` would send it as it is.
#[test]
fn docker_25_uncompressed_layers_are_compressed_the_same_on_every_run() {
    let reg = Registry::start(RegistryOptions::default());
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    let put = |data: &[u8]| {
        let d = sha(data);
        std::fs::write(layout.join("blobs/sha256").join(&d["sha256:".len()..]), data).unwrap();
        d
    };
    let layer: Vec<u8> =
        (0..400_000u32).flat_map(|i| format!("usr/lib/libtorch_cuda.so.{} ", i % 97).into_bytes()).collect();
    let layer_digest = put(&layer);
    let config =
        json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [layer_digest]}});
    let config = serde_json::to_vec(&config).unwrap();
    let config_digest = put(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer.len()}]
    }))
    .unwrap();
    let manifest_digest = put(&manifest);
    let index = json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest, "size": manifest.len(),
        "annotations": {"io.containerd.image.name": "docker.io/library/app:v3", "org.opencontainers.image.ref.name": "v3"}
    }]});
    std::fs::write(layout.join("index.json"), index.to_string()).unwrap();
    std::fs::write(layout.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    std::fs::write(layout.join("manifest.json"), "[]").unwrap();
    write_archive(&layout, &work.path().join("app.tar"));

    let push = |tag: &str, cache: &str| {
        let out = run(publish(work.path())
            .args([
                "push",
                "docker-archive:app.tar:app:v3",
                &format!("docker://{}/ml/app:{tag}", reg.host),
                "--insecure",
            ])
            .env("PUBLISH_CACHE_DIR", work.path().join(cache)));
        assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
        let raw = reg.inspect(&format!("{}/ml/app:{tag}", reg.host), true).stdout;
        (sha(&raw), serde_json::from_slice::<Value>(&raw).unwrap())
    };
    let (first, pushed) = push("a", "cache-1");
    let layer_out = &pushed["layers"][0];
    assert_eq!(layer_out["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip", "{pushed:#}");
    assert!(layer_out["size"].as_u64().unwrap() < layer.len() as u64 / 10, "{pushed:#}");
    assert_eq!(pushed["config"]["digest"], config_digest, "the config (and its diff_ids) is kept");
    let mut unpacked = Vec::new();
    let gz = curl_blob(&reg, "ml/app", layer_out["digest"].as_str().unwrap());
    flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut unpacked).unwrap();
    assert!(unpacked == layer, "the compressed layer is the saved one");
    // Again with the cache, and again without it: the same compressed bytes, the same digest.
    assert_eq!(push("b", "cache-1").0, first);
    assert_eq!(push("c", "cache-2").0, first, "compression is deterministic");

    // `compression: none` keeps the layer as saved, and the plan says what that costs.
    Policy::new()
        .local("home", &reg.host)
        .image(json!({"name": "app", "source": "docker-archive:app.tar:app:v3", "compression": "none"}))
        .write(work.path());
    let out = run(publish(work.path()).args(["plan", "--no-measure"]));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stdout.contains("uncompressed in 1 layer"), "{stdout}");
}

/// A Docker 25+ archive whose root is an image index over already-compressed images: nothing to
/// compress, so the index goes up byte for byte (its digest is the one saved).
#[test]
fn docker_25_index_with_compressed_layers_keeps_its_digest() {
    let reg = Registry::start(RegistryOptions::default());
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    let (compact, _) = support::image::write_index_layout(&layout, 12, &[("linux", "amd64"), ("linux", "arm64")], "v4");
    // The index as Docker writes it, indented: a rewrite would not keep these bytes.
    let blob = |d: &str| layout.join("blobs/sha256").join(&d["sha256:".len()..]);
    let index: Value = serde_json::from_slice(&std::fs::read(blob(&compact)).unwrap()).unwrap();
    let pretty = serde_json::to_vec_pretty(&index).unwrap();
    let index_digest = sha(&pretty);
    std::fs::write(blob(&index_digest), &pretty).unwrap();
    let mut top: Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    top["manifests"][0]["digest"] = json!(index_digest);
    top["manifests"][0]["size"] = json!(pretty.len());
    std::fs::write(layout.join("index.json"), top.to_string()).unwrap();
    std::fs::write(layout.join("manifest.json"), "[]").unwrap();
    write_archive(&layout, &work.path().join("app.tar"));
    let out = run(publish(work.path()).args([
        "push",
        "docker-archive:app.tar:v4",
        &format!("docker://{}/ml/app:v4", reg.host),
        "--insecure",
    ]));
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    let raw = reg.inspect(&format!("{}/ml/app:v4", reg.host), true).stdout;
    assert_eq!(sha(&raw), index_digest);
}

#[test]
fn docker_daemon_images_are_exported_through_the_engine_api() {
    let reg = Registry::start(RegistryOptions::default());
    let work = tempfile::tempdir().unwrap();
    support::docker::save_legacy(&work.path().join("app.tar"), 4, &[80_000, 20_000]);
    let socket = support::docker::fake_daemon(work.path(), std::fs::read(work.path().join("app.tar")).unwrap());
    let host = format!("unix://{}", socket.display());
    let out = run(publish(work.path())
        .args([
            "push",
            "docker-daemon:app:v1",
            &format!("docker://{}/ml/app:daemon", reg.host),
            "--insecure",
            "-o",
            "json",
        ])
        .env("DOCKER_HOST", &host));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let from_daemon = serde_json::from_str::<Value>(&stdout).unwrap()["images"][0]["digest"].clone();
    // The same image as pushing the archive docker saved.
    let out = run(publish(work.path()).args([
        "push",
        "docker-archive:app.tar",
        &format!("docker://{}/ml/app:file", reg.host),
        "--insecure",
        "-o",
        "json",
    ]));
    let from_file = serde_json::from_str::<Value>(&text(&out).0).unwrap()["images"][0]["digest"].clone();
    assert_eq!(from_daemon, from_file);
    assert_eq!(sha(&reg.inspect(&format!("{}/ml/app:daemon", reg.host), true).stdout), from_daemon.as_str().unwrap());
    assert!(
        std::fs::read_dir(work.path().join(".publish-cache/exports")).map(|d| d.count()).unwrap_or(0) == 0,
        "the export is removed"
    );

    let out = run(publish(work.path())
        .args(["push", "docker-daemon:missing", &format!("docker://{}/ml/x:v1", reg.host), "--insecure"])
        .env("DOCKER_HOST", &host));
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("the Docker daemon answered 404: reference does not exist"), "{stderr}");
}

/// A daemon that starts the export and then hangs: the open fails once `transfer.read_timeout`
/// passes without a byte, and says so, instead of waiting forever.
#[test]
fn a_daemon_that_hangs_mid_export_fails_after_the_read_timeout() {
    let work = tempfile::tempdir().unwrap();
    let socket = support::docker::stalling_daemon(work.path());
    Policy::new()
        .local("home", "127.0.0.1:1")
        .set("transfer", json!({"read_timeout": 1}))
        .image(json!({"name": "app", "source": "docker-daemon:app:v1"}))
        .write(work.path());
    let started = std::time::Instant::now();
    let out = run(publish(work.path())
        .args(["plan", "--no-measure"])
        .env("DOCKER_HOST", format!("unix://{}", socket.display())));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}\n{stderr}");
    assert!(stderr.contains("docker-daemon:app:v1") && stderr.contains("sent nothing for 1 s"), "{stderr}");
    println!("a hung daemon: plan stopped after {:?}", started.elapsed());
    assert!(started.elapsed() < std::time::Duration::from_secs(60), "the 1 s set was not the one used");
}

#[test]
fn legacy_layers_can_be_zstd_in_an_oci_manifest() {
    let reg = Registry::start(RegistryOptions::default());
    let work = tempfile::tempdir().unwrap();
    let diff_ids = support::docker::save_legacy(&work.path().join("app.tar"), 5, &[200_000]);
    Policy::new()
        .local("home", &reg.host)
        .image(
            json!({"name": "app", "source": "docker-archive:app.tar", "compression": "zstd", "visibility": "public"}),
        )
        .write(work.path());
    let out = run(publish(work.path()).arg("run"));
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    let manifest: Value =
        serde_json::from_slice(&reg.inspect(&format!("{}/ml/app:latest", reg.host), true).stdout).unwrap();
    assert_eq!(manifest["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(manifest["layers"][0]["mediaType"], "application/vnd.oci.image.layer.v1.tar+zstd");
    let blob = curl_blob(&reg, "ml/app", manifest["layers"][0]["digest"].as_str().unwrap());
    let plain = zstd::stream::decode_all(&blob[..]).unwrap();
    assert_eq!(sha(&plain), diff_ids[0], "the layer decompresses to what docker saved");
}

/// An archive whose manifest.json points a layer out of the archive is refused when it is
/// opened, before anything is sent.
#[test]
fn a_layer_pointed_out_of_the_archive_is_refused() {
    let work = tempfile::tempdir().unwrap();
    support::docker::save_legacy(&work.path().join("app.tar"), 6, &[30_000]);
    let policy = |source: &str| {
        Policy::new().local("home", "127.0.0.1:1").image(json!({"name": "app", "source": source})).write(work.path())
    };
    policy("docker-archive:app.tar");
    assert_eq!(run(publish(work.path()).arg("check")).status.code(), Some(0));

    // The same config (same diff_ids), its layer pointed at a path outside the archive.
    let mut hostile = tar::Builder::new(std::fs::File::create(work.path().join("evil.tar")).unwrap());
    let mut original = tar::Archive::new(std::fs::File::open(work.path().join("app.tar")).unwrap());
    for entry in original.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().to_string();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
        let data = match name.as_str() {
            "manifest.json" => {
                String::from_utf8(data).unwrap().replace("layer00/layer.tar", "../../etc/passwd").into_bytes()
            }
            n if n.ends_with("layer.tar") => continue,
            _ => data,
        };
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        hostile.append_data(&mut h, &name, data.as_slice()).unwrap();
    }
    hostile.finish().unwrap();
    drop(hostile);
    policy("docker-archive:evil.tar");
    let out = run(publish(work.path()).arg("check"));
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("../../etc/passwd") && stderr.contains("missing"), "{stderr}");
}

/// `transfer.compression` and `transfer.compression_level` apply to every image that does not
/// say; an image's own win; a level outside the compressor's range is located.
#[test]
fn compression_and_its_level_come_from_the_image_else_from_transfer() {
    let work = tempfile::tempdir().unwrap();
    support::docker::save_legacy(&work.path().join("app.tar"), 9, &[200_000]);
    let plan = |transfer: Value, image: Value| {
        let mut img = json!({"name": "app", "source": "docker-archive:app.tar"});
        img.as_object_mut().unwrap().extend(image.as_object().unwrap().clone());
        Policy::new().local("home", "127.0.0.1:1").set("transfer", transfer).image(img).write(work.path());
        let out = run(publish(work.path())
            .args(["plan", "--no-measure", "-o", "json"])
            .env("PUBLISH_CACHE_DIR", work.path().join("cache")));
        let (stdout, stderr) = text(&out);
        (out.status.code(), stdout, stderr)
    };
    let layer_type = |stdout: &str| {
        let v: Value = serde_json::from_str(stdout).unwrap();
        v["images"][0]["blobs"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|b| b["compress"].as_str().map(str::to_string))
            .collect::<Vec<_>>()
    };
    let (code, stdout, stderr) = plan(json!({"compression": "zstd"}), json!({}));
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(layer_type(&stdout), ["zstd"], "{stdout}");
    let (code, stdout, _) =
        plan(json!({"compression": "zstd"}), json!({"compression": "gzip", "compression_level": 9}));
    assert_eq!(code, Some(0));
    assert_eq!(layer_type(&stdout), ["gzip"], "{stdout}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["images"][0]["open"]["compression_level"], 9);
    // In GitHub Actions, opening (and compressing) a docker source is a group of its own.
    let out = run(publish(work.path())
        .args(["plan", "--no-measure"])
        .env("GITHUB_ACTIONS", "true")
        .env("PUBLISH_CACHE_DIR", work.path().join("cache")));
    let (_, stderr) = text(&out);
    assert!(stderr.contains("::group::Opening image app") && stderr.contains("::endgroup::"), "{stderr}");
    let (code, _, stderr) = plan(json!({"compression_level": 12}), json!({}));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("transfer.compression_level") && stderr.contains("gzip levels are 1 to 9"), "{stderr}");
}

/// What one repository holds for a layer is that repository's: repository A holds the layer
/// compressed at another level (another tool's bytes), and a run to A and B takes A's blob for
/// A and sends B this run's own compression — never A's digest, which B's bytes would not match.
#[test]
fn a_layer_found_in_one_repository_is_not_assumed_in_another() {
    let a = Registry::start(RegistryOptions::default());
    let b = Registry::start(RegistryOptions::default());
    let work = tempfile::tempdir().unwrap();
    let diff_ids = support::docker::save_legacy(&work.path().join("app.tar"), 12, &[400_000]);
    let policy = |level: u32, registries: Vec<&str>| {
        Policy::new()
            .local("a", &a.host)
            .local("b", &b.host)
            .image(json!({"name": "app", "source": "docker-archive:app.tar", "visibility": "public",
                "compression_level": level, "publish_to": "all", "registries": registries}))
            .write(work.path());
    };
    policy(9, vec!["a"]);
    let out = run(publish(work.path()).arg("run"));
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    let layer_in = |reg: &Registry| {
        let m: Value =
            serde_json::from_slice(&reg.inspect(&format!("{}/ml/app:latest", reg.host), true).stdout).unwrap();
        m["layers"][0]["digest"].as_str().unwrap().to_string()
    };
    let level_9 = layer_in(&a);

    policy(3, vec!["a", "b"]);
    let out = run(publish(work.path()).args(["run", "-o", "json"]));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert_eq!(layer_in(&a), level_9, "A keeps the blob it holds");
    let in_b = layer_in(&b);
    assert_ne!(in_b, level_9, "B gets this run's bytes");
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(&curl_blob(&b, "ml/app", &in_b)[..]).read_to_end(&mut plain).unwrap();
    assert_eq!(sha(&plain), diff_ids[0]);
}

/// `publish_to: all` compresses each layer once: the first registry gets it compressed as it is
/// sent, the next one a copy read back from the first (the same bytes and digest), not a second
/// compression.
#[test]
fn publish_to_all_compresses_each_layer_once() {
    let work = tempfile::tempdir().unwrap();
    let diff_ids = support::docker::save_legacy(&work.path().join("app.tar"), 13, &[300_000, 200_000]);
    let socket = support::docker::fake_daemon(work.path(), std::fs::read(work.path().join("app.tar")).unwrap());
    // From the archive, and from the daemon's export (whose pass leaves such layers to the copy).
    for source in ["docker-archive:app.tar", "docker-daemon:app:v1"] {
        let a = Registry::start(RegistryOptions::default());
        let b = Registry::start(RegistryOptions::default());
        Policy::new()
            .local("a", &a.host)
            .local("b", &b.host)
            .image(json!({"name": "app", "source": source, "visibility": "public",
                "publish_to": "all", "registries": ["a", "b"]}))
            .write(work.path());
        let out = run(publish(work.path())
            .args(["run", "-o", "json"])
            .env("DOCKER_HOST", format!("unix://{}", socket.display())));
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(0), "{source}: {stdout}\n{stderr}");
        assert_eq!(stderr.matches("layer compressed once, copied from the registry").count(), 2, "{stderr}");
        assert!(!stderr.contains("compressed again"), "{stderr}");
        let manifest = |reg: &Registry| -> Value {
            serde_json::from_slice(&reg.inspect(&format!("{}/ml/app:latest", reg.host), true).stdout).unwrap()
        };
        assert_eq!(manifest(&a), manifest(&b), "{source}: the same manifest in both");
        for (layer, diff_id) in manifest(&b)["layers"].as_array().unwrap().iter().zip(&diff_ids) {
            let mut plain = Vec::new();
            flate2::read::GzDecoder::new(&curl_blob(&b, "ml/app", layer["digest"].as_str().unwrap())[..])
                .read_to_end(&mut plain)
                .unwrap();
            assert_eq!(&sha(&plain), diff_id, "{source}");
        }
    }
}

/// A compressed layer's streamed upload that the registry fails (a 502 to its PATCH) starts
/// again from a fresh compression and completes; the manifest names what arrived.
#[test]
fn a_failed_streamed_layer_upload_starts_again_and_completes() {
    use crate::support::http_faults::{self, Rule};
    let reg = Registry::start(RegistryOptions::default());
    let proxy = http_faults::start(reg.backend_port);
    proxy.rules.lock().unwrap().push(Rule {
        method: "PATCH",
        path: "/blobs/uploads/",
        status: 502,
        headers: Vec::new(),
        times: 1,
    });
    let work = tempfile::tempdir().unwrap();
    let diff_ids = support::docker::save_legacy(&work.path().join("app.tar"), 13, &[300_000]);
    let out = run(publish(work.path())
        .args(["push", "docker-archive:app.tar", &format!("docker://127.0.0.1:{}/ml/app:v1", proxy.port)])
        .args(["--insecure", "-o", "json"]));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stderr.contains("restarting a compressed layer's upload"), "{stderr}");
    assert_eq!(proxy.served.lock().unwrap().len(), 1);
    let digest = serde_json::from_str::<Value>(&stdout).unwrap()["images"][0]["digest"].as_str().unwrap().to_string();
    let raw = reg.inspect(&format!("{}/ml/app:v1", reg.host), true).stdout;
    assert_eq!(sha(&raw), digest);
    let manifest: Value = serde_json::from_slice(&raw).unwrap();
    let mut plain = Vec::new();
    let layer = curl_blob(&reg, "ml/app", manifest["layers"][0]["digest"].as_str().unwrap());
    flate2::read::GzDecoder::new(&layer[..]).read_to_end(&mut plain).unwrap();
    assert_eq!(sha(&plain), diff_ids[0]);
}

/// `transfer.verify: client`: the blob an image in the repository names for a layer is read
/// back and decompressed before it is taken; a planted blob that is not the layer is not taken,
/// and the layer is compressed and sent instead.
#[test]
fn with_verify_client_a_planted_blob_is_not_taken_for_a_layer() {
    use std::io::Write;
    let reg = Registry::start(RegistryOptions::default());
    let work = tempfile::tempdir().unwrap();
    let diff_ids = support::docker::save_legacy(&work.path().join("app.tar"), 14, &[200_000]);
    // An image whose config claims the archive's diff_id for a blob of other bytes.
    let dir = work.path().join("planted");
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    let put = |data: &[u8]| {
        let d = sha(data);
        std::fs::write(dir.join("blobs/sha256").join(&d[7..]), data).unwrap();
        d
    };
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&support::image::bytes(99, 50_000)).unwrap();
    let layer = gz.finish().unwrap();
    let layer_digest = put(&layer);
    let config = json!({"architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [diff_ids[0]]}})
    .to_string();
    let config_digest = put(config.as_bytes());
    let manifest = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest, "size": layer.len()}]})
    .to_string();
    let manifest_digest = put(manifest.as_bytes());
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    std::fs::write(
        dir.join("index.json"),
        json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest, "size": manifest.len()}]})
        .to_string(),
    )
    .unwrap();
    let out = run(publish(work.path())
        .args(["push", "oci:planted", &format!("docker://{}/ml/app:main", reg.host)])
        .arg("--insecure"));
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));

    Policy::new()
        .local("home", &reg.host)
        .image(json!({"name": "app", "source": "docker-archive:app.tar", "tags": ["main"], "visibility": "public"}))
        .set("transfer", json!({"verify": "client"}))
        .write(work.path());
    let out = run(publish(work.path()).arg("run"));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stderr.contains("does not decompress to its diff_id"), "{stderr}");
    assert!(stderr.contains("layer compressed and sent"), "{stderr}");
    let m: Value = serde_json::from_slice(&reg.inspect(&format!("{}/ml/app:main", reg.host), true).stdout).unwrap();
    let blob = curl_blob(&reg, "ml/app", m["layers"][0]["digest"].as_str().unwrap());
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(&blob[..]).read_to_end(&mut plain).unwrap();
    assert_eq!(sha(&plain), diff_ids[0], "the layer, not the planted blob");

    // Again: the layer the repository now holds is read back, is the layer, and is taken.
    let out = run(publish(work.path()).args(["run", "-o", "json"]));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stderr.contains("layer already in the repository") && !stderr.contains("does not decompress"), "{stderr}");
    assert!(!stderr.contains("layer compressed and sent"), "{stderr}");
}
