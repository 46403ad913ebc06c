//! ECR Public: AWS credentials from the environment, web identity (STS) or a profile →
//! SigV4-signed GetAuthorizationToken, CreateRepository, DescribeRepositories and
//! DescribeImages against the stand-ins in support/aws.rs, which check every signature
//! independently; then a push with `AWS:<token>` to a real registry, and storage measured
//! from it.

use crate::support;

use crate::support::aws::*;
use crate::support::image::write_layout;
use crate::support::{PASSWORD, Registry, RegistryOptions, publish, run, text};
use serde_json::Value;

#[test]
fn ecr_public_gets_a_token_creates_the_repository_and_pushes() {
    let reg = Registry::start(RegistryOptions { htpasswd: true, ..Default::default() });
    let state = std::sync::Arc::new(std::sync::Mutex::new(EcrState::default()));
    let api = ecr_api(state.clone());
    let work = tempfile::tempdir().unwrap();
    let image = write_layout(&work.path().join("img"), 98, &[20_000], "linux", "amd64", "latest");
    // ECR Public's registry is public.ecr.aws; a loopback stand-in takes its place here.
    std::fs::write(
        work.path().join("publish.yaml"),
        format!("version: 1\nregistries:\n  ecr:\n    kind: ecr-public\n    repository: {}/my-alias\n    insecure: true\nimages:\n  - name: app\n    source: oci:img\n    visibility: public\n    tags: [v1]\n", reg.host),
    )
    .unwrap();
    for _ in 0..2 {
        let out = run(publish_ecr_keys(work.path(), api.port).args(["run", "-o", "json"]));
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
        assert!(!stdout.contains(SECRET_KEY) && !stderr.contains(SECRET_KEY) && !stderr.contains(PASSWORD));
        let json: Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(json["images"][0]["targets"][0]["digest"], image.manifest_digest);
    }
    assert_eq!(state.lock().unwrap().repositories, vec!["app".to_string()], "created once, found the second time");
    let calls: Vec<String> =
        api.requests().iter().filter_map(|r| r.header("x-amz-target").map(str::to_string)).collect();
    assert!(
        api.requests().iter().all(|r| r.header("authorization").is_some_and(|a| a.starts_with("AWS4-HMAC-SHA256"))),
        "every API call is signed: {calls:?}"
    );
    assert_eq!(calls.iter().filter(|c| c.ends_with("CreateRepository")).count(), 2, "once per run: {calls:?}");
    // `run` measures storage before choosing, as `plan` does.
    assert_eq!(calls.iter().filter(|c| c.ends_with("DescribeRepositories")).count(), 2, "{calls:?}");

    // Without AWS credentials: a clear error, nothing pushed.
    let out = run(publish_ecr(work.path(), api.port).arg("run").env("HOME", work.path()));
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout.contains("no AWS credentials"), "{stdout}");
}

/// Two images in one repository sharing their layers, and an empty repository: `publish plan`
/// measures storage through DescribeRepositories + DescribeImages (both paginated) and the
/// registry's manifests, counting each shared layer once.
#[test]
fn ecr_public_storage_is_measured_with_shared_layers_counted_once() {
    let reg = Registry::start(RegistryOptions { htpasswd: true, ..Default::default() });
    let work = tempfile::tempdir().unwrap();
    let a = write_layout(&work.path().join("a"), 30, &[400_000, 100_000], "linux", "amd64", "latest");
    let b = write_layout(&work.path().join("b"), 30, &[400_000, 100_000, 50_000], "linux", "arm64", "latest");
    assert_eq!(a.layer_digests[..2], b.layer_digests[..2]);
    for (src, tag) in [("oci:a", "v1"), ("oci:b", "v2")] {
        let out = run(publish(work.path())
            .args(["push", src, &format!("docker://{}/my-alias/app:{tag}", reg.host), "--insecure"])
            .args(["--username", support::USER, "--password-env", "REG_PASSWORD"])
            .env("REG_PASSWORD", PASSWORD));
        assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    }
    let size =
        |dir: &std::path::Path, d: &str| std::fs::metadata(dir.join("blobs/sha256").join(&d[7..])).unwrap().len();
    let whole = |dir: &std::path::Path, img: &support::image::TestImage| {
        size(dir, &img.config_digest) + img.layer_digests.iter().map(|d| size(dir, d)).sum::<u64>()
    };
    let unique = whole(&a.dir, &a) + size(&b.dir, &b.config_digest) + size(&b.dir, &b.layer_digests[2]);
    let state = std::sync::Arc::new(std::sync::Mutex::new(EcrState {
        repositories: vec!["app".into(), "empty".into()],
        images: vec![
            ("app".into(), a.manifest_digest.clone(), whole(&a.dir, &a)),
            ("app".into(), b.manifest_digest.clone(), whole(&b.dir, &b)),
        ],
        ..Default::default()
    }));
    let api = ecr_api(state);
    std::fs::write(
        work.path().join("publish.yaml"),
        format!("version: 1\nregistries:\n  ecr:\n    kind: ecr-public\n    repository: {}/my-alias\n    insecure: true\nimages:\n  - name: app\n    source: oci:a\n    visibility: public\n    tags: [v1]\n", reg.host),
    )
    .unwrap();
    let plan = |args: &[&str], keys: bool| {
        let mut cmd = publish(work.path());
        cmd.arg("plan")
            .args(args)
            .args(["-o", "json"])
            .env("AWS_ENDPOINT_URL_ECR_PUBLIC", format!("http://127.0.0.1:{}", api.port));
        if keys {
            cmd.env("AWS_ACCESS_KEY_ID", ACCESS_KEY).env("AWS_SECRET_ACCESS_KEY", SECRET_KEY);
        }
        let out = run(&mut cmd);
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
        assert!(!stdout.contains(SECRET_KEY) && !stderr.contains(SECRET_KEY));
        let json: Value = serde_json::from_str(&stdout).unwrap();
        (json["images"][0]["candidates"][0]["usage"].clone(), stderr)
    };
    let (usage, _) = plan(&[], true);
    assert_eq!(usage["source"], "measured", "{usage}");
    assert_eq!(usage["storage"], unique, "shared layers counted once: {usage}");
    let calls: Vec<String> =
        api.requests().iter().filter_map(|r| r.header("x-amz-target").map(str::to_string)).collect();
    assert_eq!(
        calls.iter().filter(|c| c.ends_with("DescribeImages")).count(),
        3,
        "two pages for app, one for the empty repository: {calls:?}"
    );
    assert_eq!(calls.iter().filter(|c| c.ends_with("DescribeRepositories")).count(), 2, "{calls:?}");
    assert!(!calls.iter().any(|c| c.ends_with("CreateRepository")), "planning writes nothing: {calls:?}");

    // --no-measure, and no AWS credentials, leave it unknown; only --measure says why.
    let before = api.requests().len();
    let (usage, _) = plan(&["--no-measure"], true);
    assert_ne!(usage["source"], "measured", "{usage}");
    let (usage, stderr) = plan(&[], false);
    assert_ne!(usage["source"], "measured", "{usage}");
    assert!(!stderr.contains("no AWS credentials"), "{stderr}");
    assert_eq!(api.requests().len(), before, "no API call without measuring or credentials");
    let (_, stderr) = plan(&["--measure"], false);
    assert!(stderr.contains("usage not measured") && stderr.contains("no AWS credentials"), "{stderr}");
}

/// GitHub's OIDC path: a web identity token exchanged at STS for temporary keys that sign the
/// ECR calls with their session token; and a named profile in the shared credentials file.
#[test]
fn ecr_public_takes_credentials_from_web_identity_and_profiles() {
    let reg = Registry::start(RegistryOptions { htpasswd: true, ..Default::default() });
    let state = std::sync::Arc::new(std::sync::Mutex::new(EcrState::default()));
    let api = ecr_api(state.clone());
    let sts = sts();
    let work = tempfile::tempdir().unwrap();
    write_layout(&work.path().join("img"), 99, &[20_000], "linux", "amd64", "latest");
    std::fs::write(
        work.path().join("publish.yaml"),
        format!("version: 1\nregistries:\n  ecr:\n    kind: ecr-public\n    repository: {}/my-alias\n    insecure: true\nimages:\n  - name: app\n    source: oci:img\n    visibility: public\n    tags: [v1]\n", reg.host),
    )
    .unwrap();
    let token_file = work.path().join("oidc-token");
    std::fs::write(&token_file, WEB_IDENTITY_TOKEN).unwrap();
    let out = run(publish_ecr(work.path(), api.port)
        .args(["run", "-o", "json"])
        .env("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/publish")
        .env("AWS_WEB_IDENTITY_TOKEN_FILE", &token_file)
        .env("AWS_ENDPOINT_URL_STS", format!("http://127.0.0.1:{}", sts.port)));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    for secret in [TEMP_SECRET, SESSION_TOKEN, WEB_IDENTITY_TOKEN] {
        assert!(!stdout.contains(secret) && !stderr.contains(secret), "{secret} leaked");
    }
    assert!(!sts.requests().is_empty(), "STS was asked");
    assert!(api.requests().iter().all(|r| r.header("x-amz-security-token") == Some(SESSION_TOKEN)));
    assert_eq!(state.lock().unwrap().repositories, vec!["app".to_string()]);

    // A wrong token: STS refuses, and the error says it was the web identity.
    std::fs::write(&token_file, "not-the-token").unwrap();
    let out = run(publish_ecr(work.path(), api.port)
        .args(["run"])
        .env("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/publish")
        .env("AWS_WEB_IDENTITY_TOKEN_FILE", &token_file)
        .env("AWS_ENDPOINT_URL_STS", format!("http://127.0.0.1:{}", sts.port)));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("AWS credentials") && stdout.contains("web identity"), "{stdout}");

    // A named profile in the shared credentials file.
    let creds = work.path().join("credentials");
    std::fs::write(
        &creds,
        format!("[default]\naws_access_key_id = AKIAWRONG\naws_secret_access_key = wrong\n\n[ci]\naws_access_key_id = {PROFILE_KEY}\naws_secret_access_key = {PROFILE_SECRET}\n"),
    )
    .unwrap();
    let before = api.requests().len();
    let out = run(publish_ecr(work.path(), api.port)
        .args(["run"])
        .env("AWS_SHARED_CREDENTIALS_FILE", &creds)
        .env("AWS_PROFILE", "ci"));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(!stdout.contains(PROFILE_SECRET) && !stderr.contains(PROFILE_SECRET));
    assert!(
        api.requests()[before..].iter().all(|r| r.header("authorization").is_some_and(|a| a.contains(PROFILE_KEY))),
        "signed with the ci profile's key"
    );
}

/// What the ECR Public registry stand-in saw of layer uploads.
#[derive(Default)]
struct Parts {
    /// Upload id → (bytes received, parts, largest part, last part).
    uploads: std::collections::HashMap<u32, (u64, u64, u64, u64)>,
    /// Completed blobs: digest → size.
    blobs: std::collections::HashMap<String, u64>,
    next: u32,
    refused: Vec<String>,
}

/// A registry that takes uploads the way ECR Public does: chunked, every part but the last at
/// least 5 MiB, at most 1,000 parts a layer (the 1,001st is refused), a part's answer 201.
/// Bytes are counted, not kept (a 9.5 GB layer passes through).
fn ecr_registry(state: std::sync::Arc<std::sync::Mutex<Parts>>) -> u16 {
    use std::io::{BufReader, Read, Write};
    const MIB: u64 = 1024 * 1024;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(1_000) {
            let Ok(stream) = stream else { continue };
            let state = state.clone();
            std::thread::spawn(move || -> std::io::Result<()> {
                let mut out = stream.try_clone()?;
                let mut reader = BufReader::new(stream);
                loop {
                    let Some(head) = support::http::read_head(&mut reader)? else { return Ok(()) };
                    let len = head.content_length();
                    let (method, target) = (head.method, head.target);
                    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
                    // Read (and drop) the body in pieces.
                    let mut left = len;
                    let mut buf = vec![0u8; 1 << 20];
                    while left > 0 {
                        let n = left.min(buf.len() as u64) as usize;
                        reader.read_exact(&mut buf[..n])?;
                        left -= n as u64;
                    }
                    let mut s = state.lock().unwrap();
                    let answer = match (method.as_str(), path) {
                        ("GET", "/v2/") => "200 OK\r\nContent-Length: 0\r\n".to_string(),
                        ("HEAD", p) if p.contains("/blobs/") => match s.blobs.get(p.rsplit('/').next().unwrap_or("")) {
                            Some(size) => format!("200 OK\r\nContent-Length: {size}\r\n"),
                            None => "404 Not Found\r\nContent-Length: 0\r\n".to_string(),
                        },
                        ("POST", p) if p.ends_with("/blobs/uploads/") => {
                            s.next += 1;
                            let id = s.next;
                            s.uploads.insert(id, (0, 0, 0, 0));
                            format!("202 Accepted\r\nLocation: {p}{id}\r\nRange: 0-0\r\nContent-Length: 0\r\n")
                        }
                        ("PATCH", p) => {
                            let id: u32 = p.rsplit('/').next().and_then(|i| i.parse().ok()).unwrap_or(0);
                            let (have, parts, largest, last) = s.uploads.get(&id).copied().unwrap_or_default();
                            let small_before = parts > 0 && last < 5 * MIB;
                            if parts >= 1_000 || small_before {
                                s.refused.push(format!("upload {id}: part {} of {len} bytes", parts + 1));
                                "400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: 80\r\n\r\n{\"errors\":[{\"code\":\"PART_LIMIT\",\"message\":\"at most 1000 parts of 5 MiB or more\"}]}".to_string()
                            } else {
                                s.uploads.insert(id, (have + len, parts + 1, largest.max(len), len));
                                format!(
                                    "201 Created\r\nLocation: {p}\r\nRange: 0-{}\r\nContent-Length: 0\r\n",
                                    have + len - 1
                                )
                            }
                        }
                        ("PUT", p) if p.contains("/blobs/uploads/") => {
                            let id: u32 = p.rsplit('/').next().and_then(|i| i.parse().ok()).unwrap_or(0);
                            let digest = query
                                .split('&')
                                .find_map(|kv| kv.strip_prefix("digest="))
                                .unwrap_or("")
                                .replace("%3A", ":");
                            let (have, ..) = s.uploads.get(&id).copied().unwrap_or_default();
                            s.blobs.insert(digest.clone(), have);
                            format!("201 Created\r\nDocker-Content-Digest: {digest}\r\nContent-Length: 0\r\n")
                        }
                        ("PUT", p) if p.contains("/manifests/") => "201 Created\r\nContent-Length: 0\r\n".to_string(),
                        _ => "404 Not Found\r\nContent-Length: 0\r\n".to_string(),
                    };
                    drop(s);
                    let answer = if answer.contains("\r\n\r\n") { answer } else { answer + "\r\n" };
                    out.write_all(format!("HTTP/1.1 {answer}").as_bytes())?;
                }
            });
        }
    });
    port
}

/// A 9.5 GB layer on ECR Public: 8 MiB parts would take 1,133 of them, past ECR's 1,000; the
/// parts grow to 10 MiB (906 parts) and the layer goes up.
#[test]
fn a_layer_over_8000_mib_goes_to_ecr_public_in_at_most_1000_parts() {
    let parts = std::sync::Arc::new(std::sync::Mutex::new(Parts::default()));
    let port = ecr_registry(parts.clone());
    let state = std::sync::Arc::new(std::sync::Mutex::new(EcrState::default()));
    let api = ecr_api(state);
    let work = tempfile::tempdir().unwrap();
    support::image::sparse_layout(&work.path().join("img"), 7, &[9_500_000_000]);
    std::fs::write(
        work.path().join("publish.yaml"),
        format!("version: 1\nregistries:\n  ecr:\n    kind: ecr-public\n    repository: 127.0.0.1:{port}/my-alias\n    insecure: true\nimages:\n  - name: big\n    source: oci:img\n    visibility: public\n    tags: [v1]\n    pulls_per_month: 1\n"),
    )
    .unwrap();
    let out = run(publish_ecr_keys(work.path(), api.port).args(["run", "-o", "json"]));
    let (stdout, stderr) = text(&out);
    let p = parts.lock().unwrap();
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}\nrefused: {:?}", p.refused);
    let (bytes, count, largest, _) = p.uploads.values().copied().max_by_key(|u| u.0).unwrap();
    assert_eq!(bytes, 9_500_000_000);
    assert!(count <= 1_000, "{count} parts");
    assert_eq!(largest, 10 * 1024 * 1024, "parts of 10 MiB");
    println!("9.5 GB layer to ECR Public: {count} parts of {largest} bytes");
}

/// `publish` with ECR Public's API at the stand-in on `port`.
fn publish_ecr(dir: &std::path::Path, port: u16) -> std::process::Command {
    let mut cmd = publish(dir);
    cmd.env("AWS_ENDPOINT_URL_ECR_PUBLIC", format!("http://127.0.0.1:{port}"));
    cmd
}

/// `publish_ecr` with the test's access keys in the environment.
fn publish_ecr_keys(dir: &std::path::Path, port: u16) -> std::process::Command {
    let mut cmd = publish_ecr(dir, port);
    cmd.env("AWS_ACCESS_KEY_ID", ACCESS_KEY).env("AWS_SECRET_ACCESS_KEY", SECRET_KEY);
    cmd
}
