//! ECR Public: AWS credentials from the environment, web identity (STS) or a profile →
//! SigV4-signed GetAuthorizationToken, CreateRepository, DescribeRepositories and
//! DescribeImages against the stand-ins in support/aws.rs, which check every signature
//! independently; then a push with `AWS:<token>` to a real registry, and storage measured
//! from it.

mod support;

use serde_json::Value;
use support::aws::*;
use support::image::write_layout;
use support::{PASSWORD, Registry, RegistryOptions, publish, run, text};

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
        let out = run(publish(work.path())
            .args(["run", "-o", "json"])
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("AWS_ENDPOINT_URL_ECR_PUBLIC", format!("http://127.0.0.1:{}", api.port)));
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
    let out = run(publish(work.path())
        .arg("run")
        .env("HOME", work.path())
        .env("AWS_ENDPOINT_URL_ECR_PUBLIC", format!("http://127.0.0.1:{}", api.port)));
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
    let out = run(publish(work.path())
        .args(["run", "-o", "json"])
        .env("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/publish")
        .env("AWS_WEB_IDENTITY_TOKEN_FILE", &token_file)
        .env("AWS_ENDPOINT_URL_STS", format!("http://127.0.0.1:{}", sts.port))
        .env("AWS_ENDPOINT_URL_ECR_PUBLIC", format!("http://127.0.0.1:{}", api.port)));
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
    let out = run(publish(work.path())
        .args(["run"])
        .env("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/publish")
        .env("AWS_WEB_IDENTITY_TOKEN_FILE", &token_file)
        .env("AWS_ENDPOINT_URL_STS", format!("http://127.0.0.1:{}", sts.port))
        .env("AWS_ENDPOINT_URL_ECR_PUBLIC", format!("http://127.0.0.1:{}", api.port)));
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
    let out = run(publish(work.path())
        .args(["run"])
        .env("AWS_SHARED_CREDENTIALS_FILE", &creds)
        .env("AWS_PROFILE", "ci")
        .env("AWS_ENDPOINT_URL_ECR_PUBLIC", format!("http://127.0.0.1:{}", api.port)));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(!stdout.contains(PROFILE_SECRET) && !stderr.contains(PROFILE_SECRET));
    assert!(
        api.requests()[before..].iter().all(|r| r.header("authorization").is_some_and(|a| a.contains(PROFILE_KEY))),
        "signed with the ci profile's key"
    );
}
