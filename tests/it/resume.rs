//! Resumable uploads: against a registry that follows the spec's chunked-upload rules
//! strictly, a connection cut half way through a large blob resends at most one chunk; chunk
//! limits like GHCR's and ECR's are respected with the right chunk size.

use crate::support;

use crate::support::image::write_layout;
use crate::support::{publish, run, spec_registry, text};
use serde_json::Value;

const MIB: u64 = 1024 * 1024;

fn push(work: &std::path::Path, port: u16, chunk: &str) -> (Option<i32>, Value, String) {
    let out = run(publish(work).args([
        "push",
        "oci:img",
        &format!("docker://127.0.0.1:{port}/ml/big:v1"),
        "--insecure",
        "--chunk-size",
        chunk,
        "-o",
        "json",
    ]));
    let (stdout, stderr) = text(&out);
    let json = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
    (out.status.code(), json, stderr)
}

#[test]
fn a_cut_at_half_a_large_blob_resends_at_most_one_chunk() {
    let reg = spec_registry::start();
    let work = tempfile::tempdir().unwrap();
    let size = 40 * MIB as usize;
    let image = write_layout(&work.path().join("img"), 90, &[size], "linux", "amd64", "latest");
    reg.state.lock().unwrap().cut_at = Some(size as u64 / 2 + 12345);
    let (code, json, stderr) = push(work.path(), reg.port, "8MiB");
    assert_eq!(code, Some(0), "{json}\n{stderr}");
    let t = &json["images"][0]["targets"][0];
    let resent = t["bytes_resent"].as_u64().unwrap();
    println!("40 MiB blob cut at 50 %: {resent} bytes resent");
    assert!(resent <= 8 * MIB, "resent {resent} bytes, more than one 8 MiB chunk");
    assert!(stderr.contains("resuming the upload where the registry stands"), "{stderr}");
    let s = reg.state.lock().unwrap();
    assert!(s.log.iter().any(|l| l.starts_with("cut at")), "the cut happened");
    assert_eq!(s.blobs[&image.layer_digests[0]].len(), size, "the registry has the whole blob");
    assert!(s.manifests.contains_key("v1"));
    // What the registry received beyond the blob itself is bounded by one chunk too.
    let extra = s.received.saturating_sub(size as u64);
    println!("the registry received {extra} bytes more than the blob");
    assert!(extra <= 8 * MIB, "received {} bytes", s.received);
}

#[test]
fn chunk_limits_like_ghcr_and_ecr_are_kept_with_the_right_size() {
    let work = tempfile::tempdir().unwrap();
    write_layout(&work.path().join("img"), 91, &[23 * MIB as usize], "linux", "amd64", "latest");

    // GHCR: chunks over 4 MiB are refused.
    let ghcr = spec_registry::start();
    ghcr.state.lock().unwrap().max_chunk = Some(4 * MIB);
    let (code, _, _) = push(work.path(), ghcr.port, "8MiB");
    assert_eq!(code, Some(1), "8 MiB chunks must be refused");
    assert!(!ghcr.state.lock().unwrap().manifests.contains_key("v1"), "no manifest without its blobs");
    let (code, json, stderr) = push(work.path(), ghcr.port, "4MiB");
    assert_eq!(code, Some(0), "{json}\n{stderr}");

    // ECR: every part but the last is 5 MiB or more.
    let ecr = spec_registry::start();
    ecr.state.lock().unwrap().min_chunk = Some(5 * MIB);
    let (code, _, _) = push(work.path(), ecr.port, "4MiB");
    assert_eq!(code, Some(1), "4 MiB parts must be refused");
    let (code, json, stderr) = push(work.path(), ecr.port, "8MiB");
    assert_eq!(code, Some(0), "{json}\n{stderr}");
}

/// Pushes `img` through the proxy to the real registry, streaming or in chunks.
fn push_via(work: &std::path::Path, port: u16, tag: &str, chunk: Option<&str>) -> (Option<i32>, Value, String) {
    let mut cmd = publish(work);
    cmd.args([
        "push",
        &format!("oci:img-{tag}"),
        &format!("docker://127.0.0.1:{port}/ml/cut:{tag}"),
        "--insecure",
        "-o",
        "json",
    ]);
    if let Some(c) = chunk {
        cmd.args(["--chunk-size", c]);
    }
    let out = run(&mut cmd);
    let (stdout, stderr) = text(&out);
    let json = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
    (out.status.code(), json, stderr)
}

#[test]
fn registry_2_8_restarts_only_the_cut_blob() {
    let reg = support::Registry::start(support::RegistryOptions::default());
    let proxy = support::fault_proxy::start(reg.backend_port);
    let work = tempfile::tempdir().unwrap();
    let size = 12 * MIB as usize;
    for (seed, tag, chunk) in [(92, "streamed", None), (94, "chunked", Some("4MiB"))] {
        write_layout(&work.path().join(format!("img-{tag}")), seed, &[size, 4096], "linux", "amd64", "latest");
        let cuts_before = {
            let mut f = proxy.faults.lock().unwrap();
            f.cut_at = Some(f.forwarded + size as u64 / 2);
            f.cuts
        };
        let (code, json, stderr) = push_via(work.path(), proxy.port, tag, chunk);
        assert_eq!(code, Some(0), "{tag}: {json}\n{stderr}");
        assert_eq!(proxy.faults.lock().unwrap().cuts, cuts_before + 1, "{tag}: the proxy cut nothing");
        let t = &json["images"][0]["targets"][0];
        let resent = t["bytes_resent"].as_u64().unwrap();
        println!("{tag}: 12 MiB blob cut at 50 % on registry 2.8: {resent} bytes resent");
        assert!(resent > 0 && resent <= size as u64, "{tag}: resent {resent}");
        let probe = reg.inspect(&format!("{}/ml/cut:{tag}", reg.host), true);
        assert!(probe.status.success(), "{tag}: skopeo cannot read what was pushed");
        proxy.faults.lock().unwrap().cut_at = None;
    }
}

#[test]
fn a_blob_that_keeps_failing_leaves_no_manifest() {
    let reg = support::Registry::start(support::RegistryOptions::default());
    let proxy = support::fault_proxy::start(reg.backend_port);
    let work = tempfile::tempdir().unwrap();
    write_layout(&work.path().join("img-never"), 93, &[3 * MIB as usize], "linux", "amd64", "latest");
    {
        let mut f = proxy.faults.lock().unwrap();
        f.cut_at = Some(f.forwarded + MIB);
        f.cut_every = Some(MIB);
    }
    let (code, json, _) = push_via(work.path(), proxy.port, "never", None);
    assert_eq!(code, Some(1), "{json}");
    assert_eq!(json["images"][0]["targets"][0]["status"], "failed");
    let probe = reg.inspect(&format!("{}/ml/cut:never", reg.host), true);
    assert!(!probe.status.success(), "a manifest was written although its blob never arrived");
}

#[test]
fn bad_gateways_throttling_and_an_expired_token_are_survived() {
    use support::http_faults::{self, Rule};
    let reg = support::Registry::start(support::RegistryOptions { htpasswd: true, ..Default::default() });
    let proxy = http_faults::start(reg.backend_port);
    let work = tempfile::tempdir().unwrap();
    write_layout(&work.path().join("img-faults"), 97, &[6 * MIB as usize, 100_000], "linux", "amd64", "latest");
    *proxy.rules.lock().unwrap() = vec![
        Rule { method: "HEAD", path: "/blobs/", status: 429, headers: vec![("Retry-After", "1")], times: 1 },
        Rule { method: "POST", path: "/blobs/uploads/", status: 502, headers: vec![], times: 2 },
        // The credentials are refused once mid-upload, as when a token expires.
        Rule {
            method: "PUT",
            path: "/blobs/uploads/",
            status: 401,
            headers: vec![("WWW-Authenticate", "Basic realm=\"test\"")],
            times: 1,
        },
        Rule { method: "PUT", path: "/blobs/uploads/", status: 502, headers: vec![], times: 1 },
    ];
    let out = run(publish(work.path())
        .args([
            "push",
            "oci:img-faults",
            &format!("docker://127.0.0.1:{}/ml/faults:v1", proxy.port),
            "--insecure",
            "-o",
            "json",
        ])
        .args(["--username", support::USER, "--password-env", "REG_PASSWORD"])
        .env("REG_PASSWORD", support::PASSWORD));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let served = proxy.served.lock().unwrap().clone();
    assert_eq!(served.len(), 5, "every fault was served: {served:?}");
    let json: Value = serde_json::from_str(&stdout).unwrap();
    let resent = json["images"][0]["targets"][0]["bytes_resent"].as_u64().unwrap();
    println!("faults served: {}; bytes resent: {resent}", served.len());
    assert!(resent <= 2 * 6 * MIB, "resent {resent}");
    let probe = reg.inspect(&format!("{}/ml/faults:v1", reg.host), true);
    assert!(probe.status.success(), "skopeo cannot read what was pushed through the faults");
}

/// Distribution 2.8 answers `Range: 0-0` for an empty session: after a 502 on the first
/// PATCH that is nothing kept, and the blob goes on from byte 0 (not 1).
#[test]
fn a_bad_gateway_on_the_first_chunk_restarts_at_byte_zero() {
    use support::http_faults::{self, Rule};
    let reg = support::Registry::start(support::RegistryOptions::default());
    let proxy = http_faults::start(reg.backend_port);
    let work = tempfile::tempdir().unwrap();
    let image = write_layout(&work.path().join("img"), 98, &[3 * MIB as usize], "linux", "amd64", "latest");
    *proxy.rules.lock().unwrap() =
        vec![Rule { method: "PATCH", path: "/blobs/uploads/", status: 502, headers: vec![], times: 1 }];
    let out = run(publish(work.path()).args([
        "push",
        "oci:img",
        &format!("docker://127.0.0.1:{}/ml/first-chunk:v1", proxy.port),
        "--insecure",
        "--chunk-size",
        "1MiB",
        "-o",
        "json",
    ]));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert_eq!(proxy.served.lock().unwrap().len(), 1, "the fault was served");
    let info = reg.inspect(&format!("{}/ml/first-chunk:v1", reg.host), false);
    let info: Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["Digest"], image.manifest_digest);
}

/// The registry goes away mid-push and comes back on the same port: the push waits for it
/// and completes in the same invocation.
#[test]
fn a_registry_restarted_mid_push_is_waited_for() {
    let mut reg = support::Registry::start(support::RegistryOptions::default());
    let work = tempfile::tempdir().unwrap();
    let sizes = [48 * MIB as usize, 48 * MIB as usize, 48 * MIB as usize];
    let image = write_layout(&work.path().join("img"), 99, &sizes, "linux", "amd64", "latest");
    let child = publish(work.path())
        .args(["push", "oci:img", &format!("docker://{}/ml/restart:v1", reg.host), "--insecure", "-o", "json"])
        .env("PUBLISH_RETRY_BASE_MS", "200")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // As soon as an upload is under way, restart the registry.
    let uploads = reg.dir.path().join("data/docker/registry/v2/repositories/ml/restart/_uploads");
    support::wait_until("an upload to start", std::time::Duration::from_secs(60), || uploads.exists());
    reg.restart();
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let json: Value = serde_json::from_str(&stdout).unwrap();
    let resent = json["images"][0]["targets"][0]["bytes_resent"].as_u64().unwrap();
    println!("registry restarted mid-push: bytes resent {resent}");
    assert!(resent <= (sizes.iter().sum::<usize>()) as u64, "more than the blobs in flight were sent again");
    let info = reg.inspect(&format!("{}/ml/restart:v1", reg.host), false);
    assert!(info.status.success());
    let info: Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["Digest"], image.manifest_digest);
}

/// A layer Docker saved uncompressed, compressed as it is sent in 8 MiB parts, cut half way
/// through a part: the rest of that part goes from where the registry stands (it is in
/// memory), and the layer is not compressed or sent again.
#[test]
fn a_compressed_layer_cut_half_way_resumes_within_its_part() {
    let reg = spec_registry::start();
    let work = tempfile::tempdir().unwrap();
    // Random bytes: the compressed layer is about as large (three parts and a bit).
    let layer = support::docker::tar_layer(93, 24 * MIB as usize);
    support::docker::save_layers(&work.path().join("app.tar"), &[layer], "app:v1");
    reg.state.lock().unwrap().cut_at = Some(12 * MIB + 4321);
    let out = run(publish(work.path()).args([
        "push",
        "docker-archive:app.tar",
        &format!("docker://127.0.0.1:{}/ml/app:v1", reg.port),
        "--insecure",
        "--chunk-size",
        "8MiB",
        "-o",
        "json",
    ]));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stderr.contains("resuming the upload where the registry stands"), "{stderr}");
    assert!(!stderr.contains("restarting a compressed layer's upload"), "{stderr}");
    let json: Value = serde_json::from_str(&stdout).unwrap();
    let resent = json["images"][0]["targets"][0]["bytes_resent"].as_u64().unwrap();
    println!("24 MiB compressed layer cut at 12 MiB: {resent} bytes resent");
    let s = reg.state.lock().unwrap();
    assert!(s.log.iter().any(|l| l.starts_with("cut at")), "the cut happened");
    assert!(s.manifests.contains_key("v1"));
    let stored: u64 = s.blobs.values().map(|b| b.len() as u64).sum();
    let extra = s.received.saturating_sub(stored);
    println!("the registry received {extra} bytes more than the blobs");
    assert!(extra < 8 * MIB, "received {} bytes for {stored} stored", s.received);
}
