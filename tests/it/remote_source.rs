//! `docker://` sources: registry to registry, blobs streamed without touching disk; within one
//! registry, blobs mounted instead of copied. What lands is checked with skopeo byte for byte.

use crate::support::image::{write_index_layout, write_layout};
use crate::support::{PASSWORD, Registry, RegistryOptions, USER, publish, run, text};
use serde_json::Value;

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
