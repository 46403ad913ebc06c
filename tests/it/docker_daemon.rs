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

fn blob(reg: &Registry, repo: &str, digest: &str) -> Vec<u8> {
    let out = std::process::Command::new("curl")
        .arg("-sSf")
        .arg(format!("http://{}/v2/{repo}/blobs/{digest}", reg.host))
        .output()
        .unwrap();
    assert!(out.status.success());
    out.stdout
}

/// An image loaded into a real daemon goes up with gzip layers that decompress to the diff_ids
/// the daemon reports, as the same manifest as its own `docker save` pushed as a file; the
/// export leaves nothing on disk; an image the daemon lacks is its 404, exit 2.
#[test]
fn a_real_daemons_image_goes_up_compressed_and_the_same_as_its_docker_save() {
    let Some(docker) = daemon() else { return };
    let reg = Registry::start(RegistryOptions::default());
    let work = tempfile::tempdir().unwrap();
    let diff_ids = support::docker::save_loadable(&work.path().join("in.tar"), 31, &[400_000, 60_000], "ml/app:v1");
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
    let digest = serde_json::from_str::<Value>(&stdout).unwrap()["images"][0]["digest"].as_str().unwrap().to_string();
    let raw = reg.inspect(&format!("{}/ml/app:daemon", reg.host), true).stdout;
    assert_eq!(sha(&raw), digest);
    let manifest: Value = serde_json::from_slice(&raw).unwrap();
    for (layer, diff_id) in manifest["layers"].as_array().unwrap().iter().zip(&diff_ids) {
        assert_eq!(layer["mediaType"], "application/vnd.docker.image.rootfs.diff.tar.gzip");
        let gz = blob(&reg, "ml/app", layer["digest"].as_str().unwrap());
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut plain).unwrap();
        assert_eq!(&sha(&plain), diff_id);
    }
    assert!(
        std::fs::read_dir(work.path().join(".publish-cache/exports")).map(|d| d.count()).unwrap_or(0) == 0,
        "the export is removed"
    );

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
