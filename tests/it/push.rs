//! Pushing to a real registry (CNCF distribution) with htpasswd auth, plain and behind nginx
//! with TLS from a private CA; what was pushed is checked with skopeo.

use crate::support;

use std::path::Path;

use crate::support::image::{TestImage, write_archive, write_layout};
use crate::support::policy::{Policy, credentials, local, with};
use crate::support::{PASSWORD, Registry, RegistryOptions, USER, publish, run, skopeo, text};
use serde_json::{Value, json};

fn policy(dir: &Path, reg: &Registry, source: &str) {
    let mut home = with(local(&reg.host), json!({"credentials": credentials(USER, "REG_PASSWORD")}));
    if let Some(ca) = &reg.ca {
        home = with(home, json!({"insecure": false, "ca_file": ca}));
    }
    Policy::new()
        .registry("home", home)
        .image(json!({"name": "app", "source": source, "tags": ["v1", "latest"], "platforms": ["linux/amd64"], "registries": ["home"]}))
        .write(dir);
}

/// `publish run -o json` with the registry password.
fn run_json(dir: &Path, password: &str) -> (i32, Value, String) {
    let (code, json, stderr) =
        support::run_json(publish(dir).args(["run", "--output", "json"]).env("REG_PASSWORD", password));
    (code.unwrap_or(-1), json, stderr)
}

fn inspect_ok(reg: &Registry, reference: &str, raw: bool) -> Value {
    let out = reg.inspect(reference, raw);
    assert!(out.status.success(), "skopeo inspect {reference}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// skopeo (a client nobody here wrote) sees our manifest digest and every layer, and can copy
/// the image out again blob for blob.
fn check_with_skopeo(reg: &Registry, image: &TestImage, reference: &str) {
    let info = inspect_ok(reg, reference, false);
    assert_eq!(info["Digest"], image.manifest_digest, "manifest digest seen by skopeo");
    let layers: Vec<&str> = info["Layers"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(layers, image.layer_digests.iter().map(String::as_str).collect::<Vec<_>>());

    let out = tempfile::tempdir().unwrap();
    let mut args = vec!["copy".to_string(), "--insecure-policy".to_string(), "--preserve-digests".to_string()];
    args.extend(reg.skopeo_flags(true).into_iter().map(|f| f.replace("--", "--src-")));
    args.push(format!("docker://{reference}"));
    args.push(format!("oci:{}:copied", out.path().display()));
    skopeo(&args);
    for d in image.layer_digests.iter().chain([&image.config_digest, &image.manifest_digest]) {
        let blob = out.path().join("blobs/sha256").join(&d["sha256:".len()..]);
        assert!(blob.exists(), "skopeo copy did not get {d}");
    }
}

#[test]
fn pushes_oci_layout_with_htpasswd_then_skips_every_blob_on_second_push() {
    let reg = Registry::start(RegistryOptions { htpasswd: true, ..Default::default() });
    let work = tempfile::tempdir().unwrap();
    let image =
        write_layout(&work.path().join("build/app"), 1, &[300_000, 1_200_000, 50_000], "linux", "amd64", "latest");
    policy(work.path(), &reg, "oci:build/app");

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
        (t["bytes_sent"].as_u64(), t["blobs_sent"].as_u64(), t["blobs_skipped"].as_u64()),
        (Some(0), Some(0), Some(4))
    );
    let out = run(publish(work.path()).arg("run").env("REG_PASSWORD", PASSWORD).env("RUST_LOG", "info"));
    let (stdout, stderr) = text(&out);
    assert!(stdout.contains("no blob bytes sent"), "second push must say it sent nothing: {stdout}");
    // The manifest is found by digest first (one HEAD), so no blob is even asked about.
    assert!(stderr.contains("the manifest is already there: no blob to send"), "{stderr}");
    assert!(!stderr.contains("blob exists, skipped"), "{stderr}");
}

#[test]
fn pushes_oci_archive_through_nginx_tls_with_private_ca() {
    let reg = Registry::start(RegistryOptions { htpasswd: true, tls: true, ..Default::default() });
    let work = tempfile::tempdir().unwrap();
    let image = write_layout(&work.path().join("layout"), 2, &[700_000, 2_000_000], "linux", "amd64", "v1");
    write_archive(&image.dir, &work.path().join("app.tar"));
    policy(work.path(), &reg, "oci-archive:app.tar:v1");

    let (code, json, stderr) = run_json(work.path(), PASSWORD);
    assert_eq!(code, 0, "push over TLS failed: {json}\n{stderr}");
    assert_eq!(json["images"][0]["targets"][0]["digest"], image.manifest_digest);
    check_with_skopeo(&reg, &image, &format!("{}/ml/app:latest", reg.host));
}

#[test]
fn tls_registry_is_refused_without_its_ca() {
    let reg = Registry::start(RegistryOptions { tls: true, ..Default::default() });
    let work = tempfile::tempdir().unwrap();
    write_layout(&work.path().join("img"), 3, &[1000], "linux", "amd64", "latest");
    let out = run(publish(work.path()).args(["push", "oci:img", &format!("docker://{}/ml/x:v1", reg.host)]));
    assert_eq!(out.status.code(), Some(1));
    let (stdout, _) = text(&out);
    assert!(stdout.contains(&reg.host) && stdout.to_lowercase().contains("certificate"), "{stdout}");
}

#[test]
fn one_shot_push_reads_docker_config_credentials() {
    let reg = Registry::start(RegistryOptions { htpasswd: true, tls: true, ..Default::default() });
    let work = tempfile::tempdir().unwrap();
    let image = write_layout(&work.path().join("img"), 4, &[10_000, 20_000], "linux", "amd64", "latest");
    let config = work.path().join("docker");
    std::fs::create_dir_all(&config).unwrap();
    let auth = base64_encode(format!("{USER}:{PASSWORD}").as_bytes());
    std::fs::write(config.join("config.json"), format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, reg.host))
        .unwrap();
    let ca = reg.ca.as_ref().unwrap().display().to_string();
    let out = run(publish(work.path())
        .args(["push", "oci:img", &format!("docker://{}/team/x:v2", reg.host), "--ca-file", &ca, "-o", "json"])
        .env("DOCKER_CONFIG", &config));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let json: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["images"][0]["targets"][0]["references"][0], format!("{}/team/x:v2", reg.host));
    check_with_skopeo(&reg, &image, &format!("{}/team/x:v2", reg.host));
}

#[test]
fn wrong_password_exits_1_naming_the_registry_not_the_password() {
    let reg = Registry::start(RegistryOptions { htpasswd: true, ..Default::default() });
    let work = tempfile::tempdir().unwrap();
    write_layout(&work.path().join("build/app"), 5, &[1000], "linux", "amd64", "latest");
    policy(work.path(), &reg, "oci:build/app");
    let wrong = "not-the-Right-pw-31337";
    let out = run(publish(work.path()).arg("run").env("REG_PASSWORD", wrong));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains(&reg.host) && stdout.contains("authentication failed"), "{stdout}");
    assert!(!stdout.contains(wrong) && !stderr.contains(wrong), "the password leaked: {stdout}\n{stderr}");
    // Nothing was written.
    let probe = reg.inspect(&format!("{}/ml/app:v1", reg.host), false);
    assert!(!probe.status.success(), "a failed login must write nothing");
}

fn base64_encode(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}

#[test]
fn pushes_a_multi_platform_index_children_first() {
    let reg = Registry::start(RegistryOptions::default());
    let work = tempfile::tempdir().unwrap();
    let (index_digest, children) = support::image::write_index_layout(
        &work.path().join("multi"),
        12,
        &[("linux", "amd64"), ("linux", "arm64")],
        "latest",
    );
    let out = run(publish(work.path()).args([
        "push",
        "oci:multi",
        &format!("docker://{}/ml/multi:v1", reg.host),
        "--insecure",
        "-o",
        "json",
    ]));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let json: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["images"][0]["targets"][0]["digest"], index_digest);
    let raw = reg.inspect(&format!("{}/ml/multi:v1", reg.host), true).stdout;
    assert_eq!(format!("sha256:{}", hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&raw))), index_digest);
    for (child, arch) in children.iter().zip(["amd64", "arm64"]) {
        let info = inspect_ok(&reg, &format!("{}/ml/multi@{}", reg.host, child.manifest_digest), false);
        assert_eq!(info["Architecture"], arch, "the {arch} child is pushed by digest");
        assert_eq!(info["Layers"].as_array().unwrap().len(), child.layer_digests.len());
    }
}

#[test]
fn corrupt_source_blob_fails_and_writes_no_manifest() {
    let reg = Registry::start(RegistryOptions::default());
    let work = tempfile::tempdir().unwrap();
    let image = write_layout(&work.path().join("img"), 13, &[50_000, 60_000], "linux", "amd64", "latest");
    support::image::corrupt_blob(&image.dir, &image.layer_digests[1]);
    let out =
        run(publish(work.path()).args(["push", "oci:img", &format!("docker://{}/ml/bad:v1", reg.host), "--insecure"]));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains(&image.layer_digests[1]) && stdout.contains("corrupt"), "{stdout}");
    let probe = reg.inspect(&format!("{}/ml/bad:v1", reg.host), true);
    assert!(!probe.status.success(), "a manifest was written although a blob failed");
}

#[test]
fn credential_helper_from_docker_config_is_used() {
    let reg = Registry::start(RegistryOptions { htpasswd: true, ..Default::default() });
    let work = tempfile::tempdir().unwrap();
    write_layout(&work.path().join("img"), 14, &[3_000], "linux", "amd64", "latest");
    // A credential helper speaking Docker's protocol: host on stdin, JSON on stdout.
    let bin = work.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let helper = bin.join("docker-credential-publishtest");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\nread host\necho \"$1 $host\" >> \"{}\"\n[ \"$1\" = get ] && [ \"$host\" = \"{}\" ] || exit 1\necho '{{\"ServerURL\":\"'$host'\",\"Username\":\"{USER}\",\"Secret\":\"{PASSWORD}\"}}'\n",
            work.path().join("helper.log").display(),
            reg.host
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = work.path().join("docker");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(config.join("config.json"), format!(r#"{{"credHelpers":{{"{}":"publishtest"}}}}"#, reg.host))
        .unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let out = run(publish(work.path())
        .args(["push", "oci:img", &format!("docker://{}/ml/helper:v1", reg.host), "--insecure"])
        .env("DOCKER_CONFIG", &config)
        .env("PATH", path));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(!stdout.contains(PASSWORD) && !stderr.contains(PASSWORD));

    // `publish run` starts the helper once for its registry, not once per stage.
    std::fs::write(work.path().join("helper.log"), "").unwrap();
    // No credentials in the policy: the helper's are used.
    Policy::new()
        .local("home", &reg.host)
        .image(json!({"name": "app", "source": "oci:img", "tags": ["v1"], "registries": ["home"]}))
        .write(work.path());
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let out = run(publish(work.path()).arg("run").env("DOCKER_CONFIG", &config).env("PATH", path));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let calls = std::fs::read_to_string(work.path().join("helper.log")).unwrap();
    assert_eq!(calls.lines().count(), 1, "the helper ran more than once: {calls}");
}

#[test]
fn insecure_push_to_a_remote_host_is_a_usage_error() {
    let work = tempfile::tempdir().unwrap();
    write_layout(&work.path().join("img"), 15, &[100], "linux", "amd64", "latest");
    let out =
        run(publish(work.path()).args(["push", "oci:img", "docker://registry.example.com/ml/x:v1", "--insecure"]));
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("--insecure is only allowed for loopback registries"), "{stderr}");
}

#[test]
fn transient_server_errors_are_retried() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use support::http::{Response, Server};
    // A registry stand-in whose first answer to each kind of request is a 503.
    let failures = std::sync::Arc::new(AtomicUsize::new(0));
    let seen = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
    let f = failures.clone();
    let server = Server::start(move |req| {
        let kind = format!("{} {}", req.method, req.target.split('?').next().unwrap_or_default());
        if seen.lock().unwrap().insert(kind) && req.method != "PUT" {
            f.fetch_add(1, Ordering::SeqCst);
            return Response::new(503)
                .json(&serde_json::json!({"errors": [{"code": "UNAVAILABLE", "message": "try again"}]}));
        }
        accept_upload(&req.method)
    });
    let out = push_small_image(16, server.port);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(failures.load(Ordering::SeqCst) >= 3, "the stand-in did not fail anything");
    assert!(stderr.contains("retrying"), "retries are logged: {stderr}");
}

#[test]
fn one_target_failing_while_another_succeeds_is_partial_exit_3() {
    let reg = Registry::start(RegistryOptions::default());
    let dead = support::free_port(); // nothing listens there
    let work = tempfile::tempdir().unwrap();
    let good = write_layout(&work.path().join("good"), 17, &[2_000], "linux", "amd64", "latest");
    write_layout(&work.path().join("bad"), 18, &[2_000], "linux", "amd64", "latest");
    let yaml = format!(
        "version: 1\nregistries:\n  up:\n    kind: registry\n    repository: {}/ml\n    insecure: true\n  down:\n    kind: registry\n    repository: 127.0.0.1:{dead}/ml\n    insecure: true\nimages:\n  - name: good\n    source: oci:good\n    registries: [up]\n    visibility: public\n  - name: bad\n    source: oci:bad\n    registries: [down]\n",
        reg.host
    );
    std::fs::write(work.path().join("publish.yaml"), yaml).unwrap();
    let out = run(publish(work.path()).args(["run", "-o", "json"]));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(3), "{stdout}\n{stderr}");
    let json: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["status"], "partial");
    assert_eq!(json["images"][0]["targets"][0]["status"], "pushed");
    assert_eq!(json["images"][0]["targets"][0]["digest"], good.manifest_digest);
    assert_eq!(json["images"][1]["targets"][0]["status"], "failed");
    assert!(json["images"][1]["targets"][0]["error"].as_str().unwrap().contains(&format!("127.0.0.1:{dead}")));
}

#[test]
fn too_many_requests_waits_as_retry_after_says() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use support::http::{Response, Server};
    let throttled = std::sync::Arc::new(AtomicBool::new(false));
    let t = throttled.clone();
    let server = Server::start(move |req| {
        if req.method == "HEAD" && !t.swap(true, Ordering::SeqCst) {
            return Response::new(429)
                .header("Retry-After", "1")
                .json(&serde_json::json!({"errors": [{"code": "TOOMANYREQUESTS", "message": "slow down"}]}));
        }
        accept_upload(&req.method)
    });
    let out = push_small_image(19, server.port);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stderr.contains("asked to wait 1s") && stderr.contains("wait=1s"), "{stderr}");
}

/// HTTPS to a registry that answers plain HTTP (the policy or command forgot `insecure`): the
/// error says so and what to set, instead of a bare TLS failure.
#[test]
fn tls_to_a_plain_http_registry_says_to_set_insecure() {
    let reg = Registry::start(RegistryOptions::default());
    let work = tempfile::tempdir().unwrap();
    write_layout(&work.path().join("img"), 61, &[1_000], "linux", "amd64", "latest");
    let out = run(publish(work.path()).args(["push", "oci:img", &format!("docker://{}/ml/app:v1", reg.host)]));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(!stderr.contains("retrying"), "a protocol mismatch is not retried: {stderr}");
    assert!(
        format!("{stdout}{stderr}").contains(
            "the registry answers plain HTTP: for a loopback registry set insecure: true in the policy (--insecure on the command line), else use its HTTPS port"
        ),
        "{stdout}{stderr}"
    );
}

/// Over plain HTTP (loopback), a layer on disk goes up with sendfile(2) — and with
/// `transfer.verify: client` through the hashing path instead; both land the same digest.
#[cfg(target_os = "linux")]
#[test]
fn plain_http_uploads_from_disk_use_sendfile_unless_the_client_hashes() {
    let reg = Registry::start(RegistryOptions { htpasswd: true, ..Default::default() });
    let work = tempfile::tempdir().unwrap();
    let image = write_layout(&work.path().join("img"), 62, &[300_000, 2_000], "linux", "amd64", "latest");
    for (verify, repo, zero_copy) in [("registry", "zero-copy", true), ("client", "hashed", false)] {
        std::fs::write(
            work.path().join("publish.yaml"),
            format!("version: 1\ntransfer: {{verify: {verify}}}\nregistries:\n  home:\n    kind: registry\n    repository: {}/{repo}\n    insecure: true\n    credentials: {{username: {USER}, password_env: REG_PASSWORD}}\nimages:\n  - name: app\n    source: oci:img\n    tags: [v1]\n", reg.host),
        )
        .unwrap();
        let out = run(publish(work.path()).args(["run", "--debug", "-o", "json"]).env("REG_PASSWORD", PASSWORD));
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
        assert_eq!(stderr.matches("uploading blob (sendfile)").count(), if zero_copy { 3 } else { 0 }, "{stderr}");
        let json: Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(json["images"][0]["targets"][0]["digest"], image.manifest_digest);
        let raw = reg.inspect(&format!("{}/{repo}/app:v1", reg.host), true);
        assert!(raw.status.success(), "{}", String::from_utf8_lossy(&raw.stderr));
        let digest = format!("sha256:{}", hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&raw.stdout)));
        assert_eq!(digest, image.manifest_digest);
    }
}

/// A top-level `--dry-run` reaches the command after it: `push` writes nothing to the registry,
/// `generate-key-pair` refuses (exit 2) and writes no key; an unknown transport lists
/// `docker://` among those it takes.
#[test]
fn a_top_level_dry_run_writes_nothing_anywhere() {
    let reg = Registry::start(RegistryOptions::default());
    let work = tempfile::tempdir().unwrap();
    write_layout(&work.path().join("img"), 17, &[2_000], "linux", "amd64", "latest");
    let dest = format!("docker://{}/ml/dry:v1", reg.host);
    let out = run(publish(work.path()).args(["--dry-run", "-o", "json", "push", "oci:img", &dest, "--insecure"]));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let would: Value = serde_json::from_str(&stdout).expect("-o json before the command reaches push");
    assert_eq!(would["blobs_to_send"].as_array().map(Vec::len), Some(2), "{would}");
    assert!(!reg.inspect(&format!("{}/ml/dry:v1", reg.host), false).status.success(), "a dry run pushed");

    let out = run(publish(work.path()).args(["--dry-run", "generate-key-pair"]).env("COSIGN_PASSWORD", "x"));
    assert_eq!(out.status.code(), Some(2), "{:?}", text(&out));
    assert!(!work.path().join("cosign.key").exists() && !work.path().join("cosign.pub").exists());

    let out = run(publish(work.path()).args(["push", "bogus:img", &dest, "--insecure"]));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    assert!(format!("{stdout}{stderr}").contains("or docker://HOST/REPO[:TAG|@DIGEST]"), "{stdout}{stderr}");
}

/// A registry stand-in's answers once it stops failing: no blob there, uploads accepted.
fn accept_upload(method: &str) -> support::http::Response {
    use support::http::Response;
    match method {
        "HEAD" => Response::new(404),
        "POST" => Response::new(202).header("Location", "/v2/ml/r/blobs/uploads/u1?_state=x"),
        "PUT" => Response::new(201),
        _ => Response::new(200),
    }
}

/// `publish push` of a one-layer image (from `seed`) to `ml/r:v1` on a stand-in at `port`.
fn push_small_image(seed: u64, port: u16) -> std::process::Output {
    let work = tempfile::tempdir().unwrap();
    write_layout(&work.path().join("img"), seed, &[1_000], "linux", "amd64", "latest");
    run(publish(work.path()).args(["push", "oci:img", &format!("docker://127.0.0.1:{port}/ml/r:v1"), "--insecure"]))
}
