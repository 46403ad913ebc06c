//! `docker-daemon:` against a real Docker daemon (Debian's `docker.io`, started privately by
//! `support::dockerd`): images are `docker load`ed into it, pushed from it, and checked with
//! skopeo and by decompressing what the registry holds. Where the daemon cannot start here,
//! each test says why and checks nothing (the stand-in in docker_archive.rs covers the errors).

use std::io::Read;

use serde_json::Value;

use crate::support::dockerd::Dockerd;
use crate::support::image::sha;
use crate::support::{self, Registry, RegistryOptions, publish, run, text};

fn daemon() -> Option<Dockerd> {
    match Dockerd::start() {
        Ok(d) => Some(d),
        Err(why) => {
            eprintln!("skipped: no real Docker daemon: {why}");
            None
        }
    }
}

/// An image loaded into a real daemon goes up with gzip layers that decompress to the diff_ids
/// the daemon reports, as the same manifest as its own `docker save` pushed as a file; the
/// export leaves nothing on disk; an image the daemon lacks is its 404, exit 2.
#[test]
fn a_real_daemons_image_goes_up_compressed_and_the_same_as_its_docker_save() {
    let Some(docker) = daemon() else { return };
    let reg = Registry::start(RegistryOptions::default());
    let work = tempfile::tempdir().unwrap();
    let diff_ids = support::docker::save_loadable(&work.path().join("in.tar"), 31, &[600_000, 300_000], "ml/app:v1");
    docker.load(&work.path().join("in.tar"));
    let inspect = std::process::Command::new("docker")
        .args(["-H", &docker.host(), "image", "inspect", "ml/app:v1"])
        .output()
        .unwrap();
    let inspect: Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(inspect[0]["RootFS"]["Layers"], serde_json::json!(diff_ids), "the daemon keeps the layers' bytes");

    let out = run(publish(work.path())
        .args(["push", "docker-daemon:ml/app:v1", &format!("docker://{}/ml/app:daemon", reg.host), "--insecure"])
        .args(["-o", "json"])
        .env("DOCKER_HOST", docker.host()));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert_eq!(stderr.matches("layer compressed and sent as the export streamed").count(), 2, "{stderr}");
    let digest = serde_json::from_str::<Value>(&stdout).unwrap()["images"][0]["digest"].as_str().unwrap().to_string();
    let raw = reg.inspect(&format!("{}/ml/app:daemon", reg.host), true).stdout;
    assert_eq!(sha(&raw), digest);
    let manifest: Value = serde_json::from_slice(&raw).unwrap();
    for (layer, diff_id) in manifest["layers"].as_array().unwrap().iter().zip(&diff_ids) {
        assert_eq!(layer["mediaType"], "application/vnd.docker.image.rootfs.diff.tar.gzip");
        let gz = support::blob(&reg, "ml/app", layer["digest"].as_str().unwrap());
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut plain).unwrap();
        assert_eq!(&sha(&plain), diff_id);
    }
    assert!(!work.path().join(".publish-cache").exists(), "nothing of the export is written to disk");

    // The daemon's own `docker save` of the image, pushed as a file: the same manifest.
    let saved = work.path().join("saved.tar");
    let out = std::process::Command::new("docker")
        .args(["-H", &docker.host(), "save", "-o"])
        .arg(&saved)
        .arg("ml/app:v1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run(publish(work.path())
        .args(["push", "docker-archive:saved.tar", &format!("docker://{}/ml/app:file", reg.host), "--insecure"])
        .args(["-o", "json"]));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert_eq!(serde_json::from_str::<Value>(&stdout).unwrap()["images"][0]["digest"], digest.as_str());

    let out = run(publish(work.path())
        .args(["push", "docker-daemon:ml/missing:v1", &format!("docker://{}/ml/x:v1", reg.host), "--insecure"])
        .env("DOCKER_HOST", docker.host()));
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("the Docker daemon answered 404"), "{stderr}");
}

/// A rebuild in the daemon whose top layer alone changed: the base layer is found in the image
/// the tag holds, so only the new layer is compressed and sent as the export streams past.
#[test]
fn a_rebuild_from_the_daemon_sends_only_the_layer_that_changed() {
    let Some(docker) = daemon() else { return };
    let reg = Registry::start(RegistryOptions::default());
    let work = tempfile::tempdir().unwrap();
    let tar_of = support::docker::tar_layer;
    let base = tar_of(80, 500_000);
    support::docker::save_layers(&work.path().join("v1.tar"), &[base.clone(), tar_of(81, 300_000)], "ml/app:v1");
    support::docker::save_layers(&work.path().join("v2.tar"), &[base, tar_of(82, 300_000)], "ml/app:v2");
    docker.load(&work.path().join("v1.tar"));
    docker.load(&work.path().join("v2.tar"));
    let push = |tag: &str| {
        let out = run(publish(work.path())
            .args(["push", &format!("docker-daemon:ml/app:{tag}"), &format!("docker://{}/ml/app:main", reg.host)])
            .args(["--insecure", "-o", "json"])
            .env("DOCKER_HOST", docker.host()));
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
        (serde_json::from_str::<Value>(&stdout).unwrap(), stderr)
    };
    push("v1");
    let (json, stderr) = push("v2");
    assert_eq!(stderr.matches("layer already in the repository").count(), 1, "{stderr}");
    assert_eq!(stderr.matches("layer compressed and sent as the export streamed").count(), 1, "{stderr}");
    let sent = json["images"][0]["targets"][0]["bytes_sent"].as_u64().unwrap();
    assert!(sent < 320_000, "only the top layer and the config go up: {sent} bytes");
    let raw = reg.inspect(&format!("{}/ml/app:main", reg.host), true).stdout;
    assert_eq!(sha(&raw), json["images"][0]["digest"].as_str().unwrap());
}
