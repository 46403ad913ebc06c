//! Keyless signing end to end against local stand-ins of GitHub's OIDC endpoint, Fulcio and
//! Rekor (tests/support/sigstore.rs) and a real registry; verification checks the certificate
//! chain, the workflow identity and the issuer.

use crate::support;

use std::path::Path;

use crate::support::image::write_layout;
use crate::support::policy::Policy;
use crate::support::sigstore::{self, ISSUER, REQUEST_TOKEN};
use crate::support::{Registry, RegistryOptions, publish, run, text};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

fn policy(work: &Path, reg: &Registry, s: &sigstore::Sigstore) {
    named_policy(work, reg, s, "app");
}

/// Image `name` from `oci:img`, signed keylessly through the stand-ins.
fn named_policy(work: &Path, reg: &Registry, s: &sigstore::Sigstore, name: &str) {
    Policy::new()
        .local("home", &reg.host)
        .image(json!({"name": name, "source": "oci:img", "tags": ["main"], "visibility": "public"}))
        .set("signing", json!({"keyless": true, "fulcio_url": s.fulcio_url(), "rekor_url": s.rekor_url()}))
        .write(work);
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
        "--trusted-root",
        s.trusted_root().to_str().unwrap(),
    ]));
    (out.status.code(), text(&out).0)
}

#[test]
fn keyless_signs_through_fulcio_and_rekor_and_verifies_the_workflow_identity() {
    let reg = Registry::start(RegistryOptions::default());
    let s = sigstore::start();
    let work = tempfile::tempdir().unwrap();
    let img = write_layout(&work.path().join("img"), 80, &[20_000], "linux", "amd64", "latest");
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
            let provenance = &json["images"][0]["targets"][0]["attestations"][0];
            assert_eq!(provenance["already_there"], serde_json::json!(["legacy", "bundle"]), "{provenance}");
        }
    }
    assert_eq!(
        s.rekor_entries.lock().unwrap().len(),
        4,
        "one entry per format for the signature and the provenance, none added by the second run"
    );

    // A legacy signature whose certificate is this workflow's but whose signature its key did
    // not make (the certificate copied beside garbage) is not taken for this run's own: the
    // next run signs again.
    let sig_tag = format!("sha256-{}.sig", &img.manifest_digest[7..]);
    let raw = reg.inspect(&format!("{}/ml/app:{sig_tag}", reg.host), true).stdout;
    let mut forged: Value = serde_json::from_slice(&raw).unwrap();
    forged["layers"][0]["annotations"]["dev.cosignproject.cosign/signature"] = json!(B64.encode([7u8; 64]));
    forged["layers"][0]["annotations"].as_object_mut().unwrap().remove("dev.sigstore.cosign/bundle");
    support::curl_put_manifest(
        &reg,
        "ml/app",
        &sig_tag,
        "application/vnd.oci.image.manifest.v1+json",
        &forged.to_string(),
    );
    let out = run(publish(work.path())
        .args(["run", "-o", "json"])
        .env("ACTIONS_ID_TOKEN_REQUEST_URL", s.token_url())
        .env("ACTIONS_ID_TOKEN_REQUEST_TOKEN", REQUEST_TOKEN));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let json: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["images"][0]["targets"][0]["signed"]["already_signed"], json!(["bundle"]), "{json}");

    let identity = sigstore::identity();
    for format in ["legacy", "bundle", "both"] {
        let (code, stdout) = verify(work.path(), &reg, &s, &identity, format);
        assert_eq!(code, Some(0), "{format}: {stdout}");
    }
    let (code, stdout) =
        verify(work.path(), &reg, &s, "https://github.com/evil/repo/.github/workflows/x.yml@refs/heads/main", "both");
    assert_eq!(code, Some(1), "{stdout}");
    assert!(stdout.contains(&format!("identity: signed by {identity}, not https://github.com/evil")), "{stdout}");

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
        "--trusted-root",
        other.trusted_root().to_str().unwrap(),
    ]));
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("the entry is from a log that is not trusted"), "{stdout}");
    // The same roots as PEM files, as cosign's environment variables name them.
    let out = run(publish(work.path())
        .args(["verify", &format!("{}/ml/app:main", reg.host), "--insecure", "--certificate-identity", &identity])
        .args(["--certificate-oidc-issuer", ISSUER, "--certificate-roots", s.roots().to_str().unwrap()])
        .envs(s.cosign_env()));
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains(
            "checked: digest, signature, SET, tlog entry is this signature, certificate chain, SCT, identity, issuer"
        ),
        "{stdout}"
    );
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

/// Signs `ml/NAME` keylessly through `s`, returning the work directory.
fn sign_keyless(reg: &Registry, s: &sigstore::Sigstore, name: &str, seed: u64) -> tempfile::TempDir {
    let work = tempfile::tempdir().unwrap();
    write_layout(&work.path().join("img"), seed, &[3_000], "linux", "amd64", "latest");
    named_policy(work.path(), reg, s, name);
    let out = run(publish(work.path())
        .arg("run")
        .env("ACTIONS_ID_TOKEN_REQUEST_URL", s.token_url())
        .env("ACTIONS_ID_TOKEN_REQUEST_TOKEN", REQUEST_TOKEN));
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    work
}

fn verify_with(work: &Path, image: &str, args: &[&str], env: &[(&str, std::path::PathBuf)]) -> (Option<i32>, String) {
    let out = run(publish(work)
        .args(["verify", image, "--insecure"])
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_os_str()))));
    let (stdout, stderr) = text(&out);
    (out.status.code(), format!("{stdout}{stderr}"))
}

#[test]
fn verify_names_the_check_that_fails_tampered_log_other_ca_expired_certificate_identity_issuer() {
    use sigstore::{Options, Tamper};
    let reg = Registry::start(RegistryOptions::default());
    let identity = sigstore::identity();
    let cases = [
        (
            "set",
            Options::default(),
            Tamper::Set,
            "bundle",
            "tlog: the signed entry timestamp (SET) does not verify with the Rekor key",
        ),
        (
            "proof",
            Options::default(),
            Tamper::Proof,
            "bundle",
            "tlog: the inclusion proof does not lead to the root hash",
        ),
        (
            "expired",
            Options { expired_certificates: true },
            Tamper::None,
            "both",
            "certificate: not valid at the logged time",
        ),
    ];
    for (i, (name, options, tamper, format, expected)) in cases.into_iter().enumerate() {
        let s = sigstore::start_with(options);
        s.set_tamper(tamper);
        let work = sign_keyless(&reg, &s, name, 90 + i as u64);
        let image = format!("{}/ml/{name}:main", reg.host);
        let root = s.trusted_root();
        let args = ["--format", format, "--certificate-identity", &identity, "--certificate-oidc-issuer", ISSUER];
        let (code, out) =
            verify_with(work.path(), &image, &[&args[..], &["--trusted-root", root.to_str().unwrap()]].concat(), &[]);
        assert_eq!(code, Some(1), "{name}: {out}");
        assert!(out.contains(expected), "{name}: expected {expected:?} in\n{out}");
        assert!(out.contains("NOT verified"), "{out}");
    }

    let s = sigstore::start();
    let work = sign_keyless(&reg, &s, "good", 99);
    let image = format!("{}/ml/good:main", reg.host);
    let root = s.trusted_root().display().to_string();
    let with_root =
        |extra: &[&str]| verify_with(work.path(), &image, &[extra, &["--trusted-root", &root]].concat(), &[]);

    let (code, out) = with_root(&[
        "--certificate-identity-regexp",
        "https://github.com/my-org/comfyui/.*",
        "--certificate-oidc-issuer",
        ISSUER,
    ]);
    assert_eq!(code, Some(0), "{out}");
    let (code, out) =
        with_root(&["--certificate-identity", &identity, "--certificate-oidc-issuer", "https://accounts.example.com"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains(&format!("issuer: issued for {ISSUER}, not https://accounts.example.com")), "{out}");
    let (code, out) = with_root(&[
        "--certificate-identity-regexp",
        "https://github.com/evil/.*",
        "--certificate-oidc-issuer",
        ISSUER,
    ]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("identity: signed by https://github.com/my-org/comfyui"), "{out}");

    // A Fulcio CA nobody trusts, with the right log keys: the chain is what fails.
    let other = sigstore::start();
    let env = [("SIGSTORE_REKOR_PUBLIC_KEY", s.rekor_key()), ("SIGSTORE_CT_LOG_PUBLIC_KEY_FILE", s.ctlog_key())];
    let args = ["--certificate-identity", &identity, "--certificate-oidc-issuer", ISSUER];
    let (code, out) = verify_with(
        work.path(),
        &image,
        &[&args[..], &["--certificate-roots", other.roots().to_str().unwrap()]].concat(),
        &env,
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("certificate: does not chain to a trusted Fulcio root"), "{out}");
    // The right CA but another CT log: the SCT is what fails, unless told to skip it.
    let env = [("SIGSTORE_REKOR_PUBLIC_KEY", s.rekor_key()), ("SIGSTORE_CT_LOG_PUBLIC_KEY_FILE", other.ctlog_key())];
    let roots_file = s.roots();
    let roots = ["--certificate-roots", roots_file.to_str().unwrap()];
    let (code, out) = verify_with(work.path(), &image, &[&args[..], &roots[..]].concat(), &env);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("SCT: no embedded SCT is from a trusted CT log"), "{out}");
    let (code, out) =
        verify_with(work.path(), &image, &[&args[..], &roots[..], &["--insecure-ignore-sct"]].concat(), &env);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("SCT not checked (--insecure-ignore-sct)"), "{out}");

    // Offline without a trusted root: exit 2, naming the flag.
    let (code, out) = verify_with(work.path(), &image, &[&args[..], &["--offline"]].concat(), &[]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("--trusted-root trusted_root.json"), "{out}");
}

/// With keyless signing in the policy, `runpod sync` moves a template only to an image whose
/// keyless signature verifies for the workflow (GITHUB_WORKFLOW_REF), certified by the roots
/// cosign's environment names: unsigned → exit 3 and RunPod untouched; signed → synced; signed
/// but checked for another workflow → exit 3.
#[test]
fn runpod_sync_moves_templates_only_to_images_signed_by_the_workflow() {
    let reg = Registry::start(RegistryOptions::default());
    let s = sigstore::start();
    let rp = support::runpod::start();
    let work = tempfile::tempdir().unwrap();
    let d = work.path();
    let image = write_layout(&d.join("img"), 87, &[4_000], "linux", "amd64", "latest");
    Policy::new()
        .local("home", &reg.host)
        .image(json!({"name": "app", "source": "oci:img", "tags": ["main"], "visibility": "public"}))
        .set("signing", json!({"keyless": true, "fulcio_url": s.fulcio_url(), "rekor_url": s.rekor_url()}))
        .set("runpod", json!({"templates": [{"name": "app-main", "image": "app", "body": {"disk": 20}}]}))
        .write(d);
    let dest = format!("{}/ml/app", reg.host);
    let out = run(publish(d).args(["push", "oci:img", &format!("docker://{dest}:main"), "--insecure"]));
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    let sync = |workflow: &str| {
        let out = run(publish(d)
            .args(["runpod", "sync"])
            .env("RUNPOD_API_KEY", support::runpod::API_KEY)
            .env("RUNPOD_API_URL", rp.url())
            .env("GITHUB_WORKFLOW_REF", workflow)
            .envs(s.cosign_env()));
        let (stdout, stderr) = text(&out);
        (out.status.code(), format!("{stdout}{stderr}"))
    };
    let (code, all) = sync(sigstore::WORKFLOW_REF);
    assert_eq!(code, Some(3), "{all}");
    assert!(all.contains("is pushed, not signed"), "{all}");
    assert!(rp.writes().is_empty(), "unsigned: RunPod untouched");

    let by_digest = format!("{dest}@{}", image.manifest_digest);
    let out = run(publish(d)
        .args([
            "sign",
            &by_digest,
            "--keyless",
            "--insecure",
            "--fulcio-url",
            &s.fulcio_url(),
            "--rekor-url",
            &s.rekor_url(),
        ])
        .env("ACTIONS_ID_TOKEN_REQUEST_URL", s.token_url())
        .env("ACTIONS_ID_TOKEN_REQUEST_TOKEN", REQUEST_TOKEN));
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    let (code, all) = sync("my-org/comfyui/.github/workflows/other.yml@refs/heads/main");
    assert_eq!(code, Some(3), "another workflow's identity does not verify: {all}");
    assert!(rp.writes().is_empty(), "another identity: RunPod untouched");
    let (code, all) = sync(sigstore::WORKFLOW_REF);
    assert_eq!(code, Some(0), "{all}");
    let writes = rp.writes();
    assert_eq!(writes.len(), 1, "{writes:?}");
    let body: Value = serde_json::from_slice(&writes[0].body).unwrap();
    assert_eq!(body["image"], format!("{dest}:main@{}", image.manifest_digest));
}

/// A signature whose certificate names this workflow's identity but comes from another Fulcio
/// CA (anyone can mint one on their own CA) is not taken for this run's own: the run signs,
/// and a second run then finds its own signatures.
#[test]
fn the_same_identity_from_another_ca_is_not_taken_for_this_runs_signature() {
    let reg = Registry::start(RegistryOptions::default());
    let (ours, other) = (sigstore::start(), sigstore::start());
    let _theirs = sign_keyless(&reg, &other, "app", 90);
    let work = tempfile::tempdir().unwrap();
    write_layout(&work.path().join("img"), 90, &[3_000], "linux", "amd64", "latest");
    named_policy(work.path(), &reg, &ours, "app");
    let already = || {
        let out = run(publish(work.path())
            .args(["run", "-o", "json"])
            .env("ACTIONS_ID_TOKEN_REQUEST_URL", ours.token_url())
            .env("ACTIONS_ID_TOKEN_REQUEST_TOKEN", REQUEST_TOKEN));
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
        let json: Value = serde_json::from_str(&stdout).unwrap();
        json["images"][0]["targets"][0]["signed"]["already_signed"].clone()
    };
    assert_eq!(already(), json!([]), "another CA's certificate was taken for this workflow's");
    assert_eq!(already(), json!(["legacy", "bundle"]));
}
