//! Pushing to a real registry (CNCF distribution) with htpasswd auth, plain and behind nginx
//! with TLS from a private CA; what was pushed is checked with skopeo.

mod support;

use std::path::Path;

use serde_json::Value;
use support::image::{TestImage, write_archive, write_layout};
use support::{PASSWORD, Registry, RegistryOptions, USER, publish, run, skopeo, text};

fn policy(dir: &Path, reg: &Registry, source: &str, extra_registry: &str) {
    let insecure = reg.ca.is_none();
    let ca = reg
        .ca
        .as_ref()
        .map(|c| format!("    ca_file: {}\n", c.display()))
        .unwrap_or_default();
    let yaml = format!(
        "version: 1\nregistries:\n  home:\n    kind: registry\n    repository: {host}/ml\n    insecure: {insecure}\n{ca}    credentials:\n      username: {USER}\n      password_env: REG_PASSWORD\n{extra_registry}images:\n  - name: app\n    source: {source}\n    tags: [v1, latest]\n    platforms: [linux/amd64]\n    registries: [home]\n",
        host = reg.host
    );
    std::fs::write(dir.join("publish.yaml"), yaml).unwrap();
}

fn run_json(dir: &Path, password: &str) -> (i32, Value, String) {
    let out = run(publish(dir)
        .args(["run", "--output", "json"])
        .env("REG_PASSWORD", password));
    let (stdout, stderr) = text(&out);
    let json = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {stdout}\nstderr: {stderr}"));
    (out.status.code().unwrap_or(-1), json, stderr)
}

/// skopeo (a client nobody here wrote) sees our manifest digest and every layer, and can copy
/// the image out again blob for blob.
fn check_with_skopeo(reg: &Registry, image: &TestImage, reference: &str) {
    let mut args = vec!["inspect".to_string()];
    args.extend(reg.skopeo_flags(true));
    args.push(format!("docker://{reference}"));
    let info: Value = serde_json::from_slice(&skopeo(&args).stdout).unwrap();
    assert_eq!(
        info["Digest"], image.manifest_digest,
        "manifest digest seen by skopeo"
    );
    let layers: Vec<&str> = info["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        layers,
        image
            .layer_digests
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
    );

    let out = tempfile::tempdir().unwrap();
    let mut args = vec![
        "copy".to_string(),
        "--insecure-policy".to_string(),
        "--preserve-digests".to_string(),
    ];
    args.extend(
        reg.skopeo_flags(true)
            .into_iter()
            .map(|f| f.replace("--", "--src-")),
    );
    args.push(format!("docker://{reference}"));
    args.push(format!("oci:{}:copied", out.path().display()));
    skopeo(&args);
    for d in image
        .layer_digests
        .iter()
        .chain([&image.config_digest, &image.manifest_digest])
    {
        let blob = out.path().join("blobs/sha256").join(&d["sha256:".len()..]);
        assert!(blob.exists(), "skopeo copy did not get {d}");
    }
}

#[test]
fn pushes_oci_layout_with_htpasswd_then_skips_every_blob_on_second_push() {
    let reg = Registry::start(RegistryOptions {
        htpasswd: true,
        ..Default::default()
    });
    let work = tempfile::tempdir().unwrap();
    let image = write_layout(
        &work.path().join("build/app"),
        1,
        &[300_000, 1_200_000, 50_000],
        "linux",
        "amd64",
        "latest",
    );
    policy(work.path(), &reg, "oci:build/app", "");

    let (code, json, stderr) = run_json(work.path(), PASSWORD);
    assert_eq!(code, 0, "first push failed: {json}\n{stderr}");
    let t = &json["images"][0]["targets"][0];
    assert_eq!(t["status"], "pushed");
    assert_eq!(t["digest"], image.manifest_digest);
    assert_eq!(t["blobs_sent"], 4);
    assert_eq!(t["bytes_sent"], image.total_bytes);
    assert_eq!(t["references"][0], format!("{}/ml/app:v1", reg.host));
    check_with_skopeo(&reg, &image, &format!("{}/ml/app:v1", reg.host));

    let (code, json, _) = run_json(work.path(), PASSWORD);
    assert_eq!(code, 0);
    let t = &json["images"][0]["targets"][0];
    assert_eq!(
        (
            t["bytes_sent"].as_u64(),
            t["blobs_sent"].as_u64(),
            t["blobs_skipped"].as_u64()
        ),
        (Some(0), Some(0), Some(4))
    );
    let out = run(publish(work.path())
        .arg("run")
        .env("REG_PASSWORD", PASSWORD));
    let (stdout, _) = text(&out);
    assert!(
        stdout.contains("no blob bytes sent"),
        "second push must say it sent nothing: {stdout}"
    );
}

#[test]
fn pushes_oci_archive_through_nginx_tls_with_private_ca() {
    let reg = Registry::start(RegistryOptions {
        htpasswd: true,
        tls: true,
        ..Default::default()
    });
    let work = tempfile::tempdir().unwrap();
    let image = write_layout(
        &work.path().join("layout"),
        2,
        &[700_000, 2_000_000],
        "linux",
        "amd64",
        "v1",
    );
    write_archive(&image.dir, &work.path().join("app.tar"));
    policy(work.path(), &reg, "oci-archive:app.tar:v1", "");

    let (code, json, stderr) = run_json(work.path(), PASSWORD);
    assert_eq!(code, 0, "push over TLS failed: {json}\n{stderr}");
    assert_eq!(
        json["images"][0]["targets"][0]["digest"],
        image.manifest_digest
    );
    check_with_skopeo(&reg, &image, &format!("{}/ml/app:latest", reg.host));
}

#[test]
fn tls_registry_is_refused_without_its_ca() {
    let reg = Registry::start(RegistryOptions {
        tls: true,
        ..Default::default()
    });
    let work = tempfile::tempdir().unwrap();
    write_layout(
        &work.path().join("img"),
        3,
        &[1000],
        "linux",
        "amd64",
        "latest",
    );
    let out = run(publish(work.path()).args([
        "push",
        "oci:img",
        &format!("docker://{}/ml/x:v1", reg.host),
    ]));
    assert_eq!(out.status.code(), Some(1));
    let (stdout, _) = text(&out);
    assert!(
        stdout.contains(&reg.host) && stdout.to_lowercase().contains("certificate"),
        "{stdout}"
    );
}

#[test]
fn one_shot_push_reads_docker_config_credentials() {
    let reg = Registry::start(RegistryOptions {
        htpasswd: true,
        tls: true,
        ..Default::default()
    });
    let work = tempfile::tempdir().unwrap();
    let image = write_layout(
        &work.path().join("img"),
        4,
        &[10_000, 20_000],
        "linux",
        "amd64",
        "latest",
    );
    let config = work.path().join("docker");
    std::fs::create_dir_all(&config).unwrap();
    let auth = base64_encode(format!("{USER}:{PASSWORD}").as_bytes());
    std::fs::write(
        config.join("config.json"),
        format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, reg.host),
    )
    .unwrap();
    let ca = reg.ca.as_ref().unwrap().display().to_string();
    let out = run(publish(work.path())
        .args([
            "push",
            "oci:img",
            &format!("docker://{}/team/x:v2", reg.host),
            "--ca-file",
            &ca,
            "-o",
            "json",
        ])
        .env("DOCKER_CONFIG", &config));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let json: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        json["images"][0]["targets"][0]["references"][0],
        format!("{}/team/x:v2", reg.host)
    );
    check_with_skopeo(&reg, &image, &format!("{}/team/x:v2", reg.host));
}

#[test]
fn wrong_password_exits_1_naming_the_registry_not_the_password() {
    let reg = Registry::start(RegistryOptions {
        htpasswd: true,
        ..Default::default()
    });
    let work = tempfile::tempdir().unwrap();
    write_layout(
        &work.path().join("build/app"),
        5,
        &[1000],
        "linux",
        "amd64",
        "latest",
    );
    policy(work.path(), &reg, "oci:build/app", "");
    let wrong = "not-the-Right-pw-31337";
    let out = run(publish(work.path()).arg("run").env("REG_PASSWORD", wrong));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&reg.host) && stdout.contains("authentication failed"),
        "{stdout}"
    );
    assert!(
        !stdout.contains(wrong) && !stderr.contains(wrong),
        "the password leaked: {stdout}\n{stderr}"
    );
    // Nothing was written.
    let mut args = vec!["inspect".to_string()];
    args.extend(reg.skopeo_flags(true));
    args.push(format!("docker://{}/ml/app:v1", reg.host));
    let probe = std::process::Command::new(support::require("skopeo"))
        .args(&args)
        .output()
        .unwrap();
    assert!(!probe.status.success(), "a failed login must write nothing");
}

fn base64_encode(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}
