//! Keyless signing end to end against local stand-ins of GitHub's OIDC endpoint, Fulcio and
//! Rekor (tests/support/sigstore.rs) and a real registry; verification checks the certificate
//! chain, the workflow identity and the issuer.

mod support;

use std::path::Path;

use serde_json::Value;
use support::image::write_layout;
use support::sigstore::{self, ISSUER, REQUEST_TOKEN};
use support::{Registry, RegistryOptions, publish, run, text};

fn policy(work: &Path, reg: &Registry, s: &sigstore::Sigstore) {
    let yaml = format!(
        "version: 1\nregistries:\n  home:\n    kind: registry\n    repository: {}/ml\n    insecure: true\nimages:\n  - name: app\n    source: oci:img\n    tags: [main]\n    visibility: public\nsigning:\n  keyless: true\n  fulcio_url: {}\n  rekor_url: {}\n",
        reg.host,
        s.fulcio_url(),
        s.rekor_url()
    );
    std::fs::write(work.join("publish.yaml"), yaml).unwrap();
}

fn verify(work: &Path, reg: &Registry, s: &sigstore::Sigstore, identity: &str, format: &str) -> (Option<i32>, String) {
    let out = run(publish(work).args([
        "verify",
        &format!("{}/ml/app:main", reg.host),
        "--insecure",
        "--format",
        format,
        "--certificate-identity",
        identity,
        "--certificate-oidc-issuer",
        ISSUER,
        "--certificate-roots",
        s.roots().to_str().unwrap(),
    ]));
    (out.status.code(), text(&out).0)
}

#[test]
fn keyless_signs_through_fulcio_and_rekor_and_verifies_the_workflow_identity() {
    let reg = Registry::start(RegistryOptions::default());
    let s = sigstore::start();
    let work = tempfile::tempdir().unwrap();
    write_layout(&work.path().join("img"), 80, &[20_000], "linux", "amd64", "latest");
    policy(work.path(), &reg, &s);
    let token = sigstore::token();
    for round in 0..2 {
        let out = run(publish(work.path())
            .args(["run", "-o", "json", "--debug"])
            .env("RUST_LOG", "trace")
            .env("ACTIONS_ID_TOKEN_REQUEST_URL", s.token_url())
            .env("ACTIONS_ID_TOKEN_REQUEST_TOKEN", REQUEST_TOKEN));
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(0), "round {round}: {stdout}\n{stderr}");
        for secret in [token.as_str(), REQUEST_TOKEN] {
            assert!(!stdout.contains(secret) && !stderr.contains(secret), "the OIDC token leaked");
        }
        let json: Value = serde_json::from_str(&stdout).unwrap();
        let signed = &json["images"][0]["targets"][0]["signed"];
        if round == 1 {
            assert_eq!(signed["already_signed"], serde_json::json!(["legacy", "bundle"]), "{signed}");
        }
    }
    assert_eq!(s.rekor_entries.lock().unwrap().len(), 2, "one entry per format, none added by the second run");

    let identity = sigstore::identity();
    for format in ["legacy", "bundle", "both"] {
        let (code, stdout) = verify(work.path(), &reg, &s, &identity, format);
        assert_eq!(code, Some(0), "{format}: {stdout}");
    }
    let (code, stdout) =
        verify(work.path(), &reg, &s, "https://github.com/evil/repo/.github/workflows/x.yml@refs/heads/main", "both");
    assert_eq!(code, Some(1), "{stdout}");
    assert!(stdout.contains(&format!("signed by {identity}, not https://github.com/evil")), "{stdout}");

    // A root nobody trusts: the chain does not verify.
    let other = support::sigstore::start();
    let out = run(publish(work.path()).args([
        "verify",
        &format!("{}/ml/app:main", reg.host),
        "--insecure",
        "--certificate-identity",
        &identity,
        "--certificate-oidc-issuer",
        ISSUER,
        "--certificate-roots",
        other.roots().to_str().unwrap(),
    ]));
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("does not chain to a trusted Fulcio root"), "{stdout}");
}

#[test]
fn keyless_without_an_oidc_token_stops_before_the_push() {
    let reg = Registry::start(RegistryOptions::default());
    let s = sigstore::start();
    let work = tempfile::tempdir().unwrap();
    write_layout(&work.path().join("img"), 81, &[1_000], "linux", "amd64", "latest");
    policy(work.path(), &reg, &s);
    let out = run(publish(work.path())
        .arg("run")
        .env_remove("ACTIONS_ID_TOKEN_REQUEST_URL")
        .env_remove("ACTIONS_ID_TOKEN_REQUEST_TOKEN"));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}\n{stderr}");
    assert!(stderr.contains("permissions: id-token: write"), "{stderr}");
    assert!(!reg.inspect(&format!("{}/ml/app:main", reg.host), true).status.success(), "nothing was pushed");

    // A pull request from a fork gets no token either, and is told so.
    std::fs::write(
        work.path().join("event.json"),
        r#"{"pull_request": {"number": 3, "head": {"repo": {"full_name": "someone/fork"}}, "base": {"repo": {"full_name": "octo/repo"}}}}"#,
    )
    .unwrap();
    let out = run(publish(work.path())
        .arg("run")
        .env("GITHUB_EVENT_PATH", work.path().join("event.json"))
        .env("ACTIONS_ID_TOKEN_REQUEST_URL", s.token_url())
        .env("ACTIONS_ID_TOKEN_REQUEST_TOKEN", REQUEST_TOKEN));
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("comes from the fork someone/fork"), "{stderr}");
}
