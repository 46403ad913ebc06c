//! `docker://` sources: registry to registry, blobs streamed without touching disk; within one
//! registry, blobs mounted instead of copied. What lands is checked with skopeo byte for byte.

use crate::support::image::{write_index_layout, write_layout};
use crate::support::policy::Policy;
use crate::support::{PASSWORD, Registry, RegistryOptions, USER, publish, run, text};
use serde_json::{Value, json};

use crate::support::image::sha;

fn push(work: &std::path::Path, args: &[&str]) -> (Value, String) {
    let out = run(publish(work).args(["push"]).args(args).args(["-o", "json"]).env("REG_PASSWORD", PASSWORD));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    (serde_json::from_str(&stdout).unwrap(), stderr)
}

#[test]
fn copies_between_registries_and_mounts_within_one() {
    let a = Registry::start(RegistryOptions::default());
    let b = Registry::start(RegistryOptions { htpasswd: true, ..Default::default() });
    let work = tempfile::tempdir().unwrap();
    let image = write_layout(&work.path().join("img"), 95, &[2_000_000, 300_000], "linux", "amd64", "latest");
    push(work.path(), &["oci:img", &format!("docker://{}/ml/src:v1", a.host), "--insecure"]);
    let src_raw = a.inspect(&format!("{}/ml/src:v1", a.host), true).stdout;
    assert_eq!(sha(&src_raw), image.manifest_digest);

    // Within registry A: every blob mounted, nothing copied.
    let (json, stderr) = push(
        work.path(),
        &[
            &format!("docker://{}/ml/src:v1", a.host),
            &format!("docker://{}/ml/dst:v1", a.host),
            "--insecure",
            "--src-insecure",
        ],
    );
    let t = &json["images"][0]["targets"][0];
    assert_eq!(t["bytes_sent"], 0, "{json}");
    assert_eq!(stderr.matches("blob mounted, not copied").count(), 3, "{stderr}");
    assert_eq!(a.inspect(&format!("{}/ml/dst:v1", a.host), true).stdout, src_raw);

    // From A to B (with credentials): blobs streamed across, byte for byte.
    let (json, _) = push(
        work.path(),
        &[
            &format!("docker://{}/ml/src:v1", a.host),
            &format!("docker://{}/ml/copy:v1", b.host),
            "--insecure",
            "--src-insecure",
            "--username",
            USER,
            "--password-env",
            "REG_PASSWORD",
        ],
    );
    assert_eq!(json["images"][0]["targets"][0]["bytes_sent"], image.total_bytes);
    assert_eq!(b.inspect(&format!("{}/ml/copy:v1", b.host), true).stdout, src_raw);
}

#[test]
fn a_two_platform_index_is_copied_registry_to_registry() {
    let a = Registry::start(RegistryOptions::default());
    let b = Registry::start(RegistryOptions::default());
    let work = tempfile::tempdir().unwrap();
    let (index_digest, children) =
        write_index_layout(&work.path().join("multi"), 96, &[("linux", "amd64"), ("linux", "arm64")], "latest");
    push(work.path(), &["oci:multi", &format!("docker://{}/ml/multi:v1", a.host), "--insecure"]);
    let (json, _) = push(
        work.path(),
        &[
            &format!("docker://{}/ml/multi:v1", a.host),
            &format!("docker://{}/ml/multi:v1", b.host),
            "--insecure",
            "--src-insecure",
        ],
    );
    assert_eq!(json["images"][0]["digest"], index_digest);
    let raw = b.inspect(&format!("{}/ml/multi:v1", b.host), true).stdout;
    assert_eq!(sha(&raw), index_digest);
    for child in &children {
        let child_raw = b.inspect(&format!("{}/ml/multi@{}", b.host, child.manifest_digest), true).stdout;
        assert_eq!(sha(&child_raw), child.manifest_digest);
    }
}

#[test]
fn a_missing_source_image_is_a_runtime_failure_naming_it() {
    let a = Registry::start(RegistryOptions::default());
    let work = tempfile::tempdir().unwrap();
    let out = run(publish(work.path()).args([
        "push",
        &format!("docker://{}/ml/none:v1", a.host),
        &format!("docker://{}/ml/x:v1", a.host),
        "--insecure",
        "--src-insecure",
    ]));
    let (_, stderr) = text(&out);
    // The source registry was contacted and has no such image: exit 1, as for any registry failure.
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("no image") && stderr.contains("ml/none:v1"), "{stderr}");
}

/// A source registry that serves one layout, every blob over 1 MB trickled in 100 KB pieces
/// 100 ms apart (about 1 MB/s, the default `transfer.min_rate`).
fn slow_source(dir: std::path::PathBuf, manifest_digest: String) -> u16 {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(100) {
            let Ok(stream) = stream else { continue };
            let dir = dir.clone();
            let manifest_digest = manifest_digest.clone();
            std::thread::spawn(move || -> std::io::Result<()> {
                let mut out = stream.try_clone()?;
                let mut reader = BufReader::new(stream);
                let mut line = String::new();
                reader.read_line(&mut line)?;
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
                        break;
                    }
                }
                let mut words = line.split_whitespace();
                let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
                let digest = if path.contains("/manifests/") {
                    Some(manifest_digest.clone())
                } else {
                    path.contains("/blobs/").then(|| path.rsplit('/').next().unwrap_or("").to_string())
                };
                let file = digest.map(|d| dir.join("blobs/sha256").join(d.trim_start_matches("sha256:")));
                let Some(bytes) = file.and_then(|f| std::fs::read(f).ok()) else {
                    let status = if path == "/v2/" { "200 OK" } else { "404 Not Found" };
                    return write!(out, "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                };
                let kind = if path.contains("/manifests/") {
                    format!(
                        "Content-Type: application/vnd.oci.image.manifest.v1+json\r\nDocker-Content-Digest: {manifest_digest}\r\n"
                    )
                } else {
                    String::new()
                };
                write!(out, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n{kind}Connection: close\r\n\r\n", bytes.len())?;
                if method == "HEAD" {
                    return Ok(());
                }
                if bytes.len() < 1_000_000 {
                    return out.write_all(&bytes);
                }
                for piece in bytes.chunks(100_000) {
                    out.write_all(piece)?;
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                Ok(())
            });
        }
    });
    port
}

/// A layer from a source registry may take as long to arrive as its size at
/// `transfer.min_rate` (plus `request_timeout`), like an upload: a 3 MB layer trickled over
/// 3 s is copied with `request_timeout: 1`, not cut at 1 s as a small request would be.
#[test]
fn a_large_layer_from_a_source_registry_gets_the_time_its_size_needs() {
    let dst = Registry::start(RegistryOptions::default());
    let work = tempfile::tempdir().unwrap();
    let image = write_layout(&work.path().join("img"), 96, &[3_000_000], "linux", "amd64", "latest");
    let port = slow_source(image.dir.clone(), image.manifest_digest.clone());
    Policy::new()
        .local("home", &dst.host)
        .local("src", &format!("127.0.0.1:{port}"))
        .set("transfer", json!({"request_timeout": 1}))
        .image(json!({"name": "app", "source": format!("docker://127.0.0.1:{port}/ml/src:v1"), "tags": ["v1"], "visibility": "public", "registries": ["home", "src"]}))
        .write(work.path());
    let out = run(publish(work.path()).args(["run", "-o", "json"]));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let copied = dst.inspect(&format!("{}/ml/app:v1", dst.host), true).stdout;
    assert_eq!(sha(&copied), image.manifest_digest);
}
