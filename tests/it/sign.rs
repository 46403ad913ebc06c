//! Signing with a cosign key pair against the real registry: both formats, checked by
//! `publish verify` and independently (openssl verifies the ECDSA P-256 signature over the
//! payload fetched with curl); no duplicates; signatures from other keys kept; a signature
//! failure after a push is exit 3; the key password never shows.

use crate::support;

use std::path::Path;
use std::process::Command;

use crate::support::image::{TestImage, write_layout};
use crate::support::policy::{Policy, credentials, local, with};
use crate::support::{PASSWORD, Registry, RegistryOptions, USER, publish, run, text};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

const KEY_PASSWORD: &str = "key-pw-5e6f7a8b9c";

fn generate_key(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let out = run(publish(dir).arg("generate-key-pair").env("COSIGN_PASSWORD", KEY_PASSWORD));
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    // Refuses to overwrite.
    let again = run(publish(dir).arg("generate-key-pair").env("COSIGN_PASSWORD", KEY_PASSWORD));
    assert_eq!(again.status.code(), Some(2));
}

fn push_signed(work: &Path, reg: &Registry, format: &str) -> (Option<i32>, Value, String) {
    Policy::new()
        .registry("home", with(local(&reg.host), json!({"credentials": credentials(USER, "REG_PASSWORD")})))
        .image(json!({"name": "app", "source": "oci:img", "tags": ["v1"]}))
        .set("signing", json!({"key": "keys/cosign.key", "format": format}))
        .write(work);
    let out = run(publish(work)
        .args(["run", "-o", "json"])
        .env("REG_PASSWORD", PASSWORD)
        .env("COSIGN_PASSWORD", KEY_PASSWORD));
    let (stdout, stderr) = text(&out);
    let json = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
    (out.status.code(), json, stderr)
}

/// GETs a registry path with curl (a client nobody here wrote).
fn curl(reg: &Registry, path: &str, accept: Option<&str>) -> Vec<u8> {
    let mut cmd = Command::new("curl");
    cmd.args(["-sSf", "-u", &format!("{USER}:{PASSWORD}")]);
    if let Some(a) = accept {
        cmd.args(["-H", &format!("Accept: {a}")]);
    }
    let out = cmd.arg(format!("http://{}/v2/ml/app/{path}", reg.host)).output().unwrap();
    assert!(out.status.success(), "curl {path}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// openssl checks an ECDSA P-256 / SHA-256 DER signature over `data` with the PEM public key.
fn openssl_verifies(public: &Path, data: &[u8], signature_der: &[u8]) -> bool {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("data"), data).unwrap();
    std::fs::write(dir.path().join("sig"), signature_der).unwrap();
    let out = Command::new(support::require("openssl"))
        .args(["dgst", "-sha256", "-verify"])
        .arg(public)
        .args(["-signature", "sig", "data"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    out.status.success() && String::from_utf8_lossy(&out.stdout).contains("Verified OK")
}

fn legacy_layers(reg: &Registry, image: &TestImage) -> Vec<Value> {
    let m: Value = serde_json::from_slice(&curl(
        reg,
        &format!("manifests/sha256-{}.sig", &image.manifest_digest[7..]),
        Some("application/vnd.oci.image.manifest.v1+json"),
    ))
    .unwrap();
    m["layers"].as_array().unwrap().clone()
}

/// The signature bundles the fallback index lists (the run's provenance, an attestation of
/// another predicate type, is listed there too: `tests/it/attest.rs` reads it).
fn fallback_entries(reg: &Registry, image: &TestImage) -> Vec<Value> {
    let idx: Value = serde_json::from_slice(&curl(
        reg,
        &format!("manifests/sha256-{}", &image.manifest_digest[7..]),
        Some("application/vnd.oci.image.index.v1+json"),
    ))
    .unwrap();
    let all = idx["manifests"].as_array().unwrap();
    let signature =
        |e: &&Value| e["annotations"]["dev.sigstore.bundle.predicateType"] == "https://sigstore.dev/cosign/sign/v1";
    let provenance = all
        .iter()
        .filter(|e| e["annotations"]["dev.sigstore.bundle.predicateType"] == "https://slsa.dev/provenance/v1");
    assert!(provenance.count() <= 2, "one provenance per signer, however many runs: {idx:#}");
    all.iter().filter(signature).cloned().collect()
}

fn verify(work: &Path, reg: &Registry, key: &str, format: &str) -> (Option<i32>, String) {
    let out = run(publish(work)
        .args(["verify", &format!("{}/ml/app:v1", reg.host), "--key", key, "--format", format, "--insecure"])
        .args(["--username", USER, "--password-env", "REG_PASSWORD"])
        .env("REG_PASSWORD", PASSWORD));
    (out.status.code(), text(&out).0)
}

#[test]
fn signs_in_both_formats_and_both_verify_independently() {
    let reg = Registry::start(RegistryOptions { htpasswd: true, ..Default::default() });
    let work = tempfile::tempdir().unwrap();
    let image = write_layout(&work.path().join("img"), 70, &[30_000], "linux", "amd64", "latest");
    generate_key(&work.path().join("keys"));
    let (code, json, stderr) = push_signed(work.path(), &reg, "both");
    assert_eq!(code, Some(0), "{json}\n{stderr}");
    assert!(json["images"][0]["targets"][0]["signed"]["legacy"].as_str().unwrap().ends_with(".sig"));

    let public = work.path().join("keys/cosign.pub");
    // Legacy: the payload names the pushed digest, and its signature verifies with openssl.
    let layers = legacy_layers(&reg, &image);
    assert_eq!(layers.len(), 1);
    assert_eq!(layers[0]["mediaType"], "application/vnd.dev.cosign.simplesigning.v1+json");
    let payload = curl(&reg, &format!("blobs/{}", layers[0]["digest"].as_str().unwrap()), None);
    let claims: Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(claims["critical"]["image"]["docker-manifest-digest"], image.manifest_digest);
    assert_eq!(claims["critical"]["type"], "cosign container image signature");
    let sig = B64.decode(layers[0]["annotations"]["dev.cosignproject.cosign/signature"].as_str().unwrap()).unwrap();
    assert!(openssl_verifies(&public, &payload, &sig), "openssl rejects the legacy signature");

    // Bundle: a referrer of the image through the fallback tag; its DSSE signature over the
    // pre-authentication encoding verifies with openssl, and its statement names the digest.
    let entries = fallback_entries(&reg, &image);
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["artifactType"], "application/vnd.dev.sigstore.bundle.v0.3+json");
    let referrer: Value = serde_json::from_slice(&curl(
        &reg,
        &format!("manifests/{}", entries[0]["digest"].as_str().unwrap()),
        Some("application/vnd.oci.image.manifest.v1+json"),
    ))
    .unwrap();
    assert_eq!(referrer["subject"]["digest"], image.manifest_digest);
    let bundle: Value = serde_json::from_slice(&curl(
        &reg,
        &format!("blobs/{}", referrer["layers"][0]["digest"].as_str().unwrap()),
        None,
    ))
    .unwrap();
    assert_eq!(bundle["mediaType"], "application/vnd.dev.sigstore.bundle.v0.3+json");
    let env = &bundle["dsseEnvelope"];
    let statement = B64.decode(env["payload"].as_str().unwrap()).unwrap();
    let payload_type = env["payloadType"].as_str().unwrap();
    let mut pae = format!("DSSEv1 {} {payload_type} {} ", payload_type.len(), statement.len()).into_bytes();
    pae.extend_from_slice(&statement);
    let sig = B64.decode(env["signatures"][0]["sig"].as_str().unwrap()).unwrap();
    assert!(openssl_verifies(&public, &pae, &sig), "openssl rejects the bundle's signature");
    let st: Value = serde_json::from_slice(&statement).unwrap();
    assert_eq!(st["predicateType"], "https://sigstore.dev/cosign/sign/v1");
    assert_eq!(st["subject"][0]["digest"]["sha256"], &image.manifest_digest[7..]);

    // publish verify accepts each format on its own.
    for format in ["legacy", "bundle", "both"] {
        let (code, stdout) = verify(work.path(), &reg, public.to_str().unwrap(), format);
        assert_eq!(code, Some(0), "{format}: {stdout}");
        assert!(stdout.ends_with("verified\n"), "{stdout}");
    }
}

#[test]
fn signing_again_adds_nothing_and_another_key_is_kept_alongside() {
    let reg = Registry::start(RegistryOptions { htpasswd: true, ..Default::default() });
    let work = tempfile::tempdir().unwrap();
    let image = write_layout(&work.path().join("img"), 71, &[10_000], "linux", "amd64", "latest");
    generate_key(&work.path().join("keys"));
    for _ in 0..2 {
        let (code, _, stderr) = push_signed(work.path(), &reg, "both");
        assert_eq!(code, Some(0), "{stderr}");
    }
    assert_eq!(legacy_layers(&reg, &image).len(), 1, "the same signature must not stack");
    assert_eq!(fallback_entries(&reg, &image).len(), 1);

    // A second key signs too: both signatures stay.
    std::fs::rename(work.path().join("keys"), work.path().join("keys-1")).unwrap();
    generate_key(&work.path().join("keys"));
    let (code, _, stderr) = push_signed(work.path(), &reg, "both");
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(legacy_layers(&reg, &image).len(), 2);
    assert_eq!(fallback_entries(&reg, &image).len(), 2);
    for key in ["keys-1/cosign.pub", "keys/cosign.pub"] {
        let (code, stdout) = verify(work.path(), &reg, work.path().join(key).to_str().unwrap(), "both");
        assert_eq!(code, Some(0), "{key}: {stdout}");
    }
}

#[test]
fn a_different_key_does_not_verify() {
    let reg = Registry::start(RegistryOptions { htpasswd: true, ..Default::default() });
    let work = tempfile::tempdir().unwrap();
    write_layout(&work.path().join("img"), 72, &[10_000], "linux", "amd64", "latest");
    generate_key(&work.path().join("keys"));
    generate_key(&work.path().join("other"));
    let (code, _, stderr) = push_signed(work.path(), &reg, "legacy");
    assert_eq!(code, Some(0), "{stderr}");
    let (code, stdout) = verify(work.path(), &reg, work.path().join("other/cosign.pub").to_str().unwrap(), "both");
    assert_eq!(code, Some(1), "{stdout}");
    assert!(stdout.contains("does not verify with the key") && stdout.ends_with("NOT verified\n"), "{stdout}");
}

#[test]
fn wrong_key_password_stops_before_anything_is_pushed_and_never_shows() {
    let reg = Registry::start(RegistryOptions { htpasswd: true, ..Default::default() });
    let work = tempfile::tempdir().unwrap();
    write_layout(&work.path().join("img"), 73, &[10_000], "linux", "amd64", "latest");
    generate_key(&work.path().join("keys"));
    Policy::new()
        .registry("home", with(local(&reg.host), json!({"credentials": credentials(USER, "REG_PASSWORD")})))
        .image(json!({"name": "app", "source": "oci:img"}))
        .set("signing", json!({"key": "keys/cosign.key"}))
        .write(work.path());
    let wrong = "not-the-key-password-123";
    let out = run(publish(work.path())
        .args(["run", "--debug"])
        .env("RUST_LOG", "trace")
        .env("REG_PASSWORD", PASSWORD)
        .env("COSIGN_PASSWORD", wrong));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}\n{stderr}");
    assert!(stderr.contains("cannot decrypt the signing key"), "{stderr}");
    assert!(!stdout.contains(wrong) && !stderr.contains(wrong));
    let probe = reg.inspect(&format!("{}/ml/app:latest", reg.host), true);
    assert!(!probe.status.success(), "nothing may be pushed when the key cannot be used");

    // And with the right password, at trace level, it never shows either.
    let out = run(publish(work.path())
        .args(["run", "--debug"])
        .env("RUST_LOG", "trace")
        .env("REG_PASSWORD", PASSWORD)
        .env("COSIGN_PASSWORD", KEY_PASSWORD));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stdout.contains(KEY_PASSWORD) && !stderr.contains(KEY_PASSWORD));
}

#[test]
fn a_signature_that_fails_after_the_push_is_partial_and_says_what_is_unsigned() {
    use support::http::{Response, Server};
    // A registry stand-in that takes the image but refuses to store signature tags.
    let server = Server::start(|req| match req.method.as_str() {
        "HEAD" => Response::new(404),
        "POST" => Response::new(202).header("Location", "/v2/ml/app/blobs/uploads/u1"),
        "PUT" if req.target.contains(".sig") || req.target.contains("manifests/sha256-") => Response::new(403)
            .json(&serde_json::json!({"errors": [{"code": "DENIED", "message": "signatures are not allowed here"}]})),
        "PUT" => Response::new(201),
        "GET" if req.target == "/v2/" => Response::new(200),
        _ => Response::new(404),
    });
    let work = tempfile::tempdir().unwrap();
    write_layout(&work.path().join("img"), 74, &[1_000], "linux", "amd64", "latest");
    generate_key(&work.path().join("keys"));
    Policy::new()
        .local("home", &format!("127.0.0.1:{}", server.port))
        .image(json!({"name": "app", "source": "oci:img", "tags": ["v1"]}))
        .set("signing", json!({"key": "keys/cosign.key", "format": "legacy"}))
        .write(work.path());
    let out = run(publish(work.path()).args(["run"]).env("COSIGN_PASSWORD", KEY_PASSWORD));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(3), "{stdout}\n{stderr}");
    assert!(stdout.contains(&format!("PUBLISHED BUT UNSIGNED app at 127.0.0.1:{}/ml/app:v1", server.port)), "{stdout}");
    assert!(stdout.contains("DENIED: signatures are not allowed here"), "{stdout}");
}

#[test]
fn a_key_made_by_cosign_signs_and_verifies() {
    let reg = Registry::start(RegistryOptions { htpasswd: true, ..Default::default() });
    let work = tempfile::tempdir().unwrap();
    let image = write_layout(&work.path().join("img"), 75, &[10_000], "linux", "amd64", "latest");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cosign-generated.key");
    std::fs::create_dir_all(work.path().join("keys")).unwrap();
    std::fs::copy(&fixture, work.path().join("keys/cosign.key")).unwrap();
    // cosign's key, empty password, read by the loader publish uses; its public half for verify.
    let signer = publish_action::sign::KeySigner::load(
        fixture.to_str().unwrap(),
        &publish_action::types::Secret::new(""),
        &Default::default(),
    )
    .unwrap();
    let public = work.path().join("keys/cosign.pub");
    std::fs::write(&public, signer.public_pem()).unwrap();

    Policy::new()
        .registry("home", with(local(&reg.host), json!({"credentials": credentials(USER, "REG_PASSWORD")})))
        .image(json!({"name": "app", "source": "oci:img", "tags": ["v1"]}))
        .set("signing", json!({"key": "keys/cosign.key"}))
        .write(work.path());
    let out = run(publish(work.path()).args(["run"]).env("REG_PASSWORD", PASSWORD).env("COSIGN_PASSWORD", ""));
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    let (code, stdout) = verify(work.path(), &reg, public.to_str().unwrap(), "both");
    assert_eq!(code, Some(0), "{stdout}");
    let layers = legacy_layers(&reg, &image);
    let payload = curl(&reg, &format!("blobs/{}", layers[0]["digest"].as_str().unwrap()), None);
    let sig = B64.decode(layers[0]["annotations"]["dev.cosignproject.cosign/signature"].as_str().unwrap()).unwrap();
    assert!(openssl_verifies(&public, &payload, &sig));
}

#[test]
fn a_signature_tag_holding_something_else_is_never_overwritten() {
    let reg = Registry::start(RegistryOptions { htpasswd: true, ..Default::default() });
    let work = tempfile::tempdir().unwrap();
    let image = write_layout(&work.path().join("img"), 77, &[5_000], "linux", "amd64", "latest");
    generate_key(&work.path().join("keys"));
    // The image is there; its .sig tag holds an index (not a cosign signature manifest).
    let (code, _, stderr) = push_signed(work.path(), &reg, "bundle");
    assert_eq!(code, Some(0), "{stderr}");
    let hex = image.manifest_digest.trim_start_matches("sha256:");
    let size = std::fs::metadata(image.dir.join("blobs/sha256").join(hex)).unwrap().len();
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":{size}}}]}}"#,
        image.manifest_digest
    );
    let tag = format!("sha256-{hex}.sig");
    support::curl_put_manifest(&reg, "ml/app", &tag, "application/vnd.oci.image.index.v1+json", &index);
    let before = curl(&reg, &format!("manifests/{tag}"), Some("application/vnd.oci.image.index.v1+json"));

    let (code, json, stderr) = push_signed(work.path(), &reg, "legacy");
    assert_eq!(code, Some(3), "published, unsigned: {json}\n{stderr}");
    let text = json.to_string();
    assert!(
        text.contains(&tag) && text.contains("signing stopped so that nothing already there is overwritten"),
        "{text}"
    );
    let after = curl(&reg, &format!("manifests/{tag}"), Some("application/vnd.oci.image.index.v1+json"));
    assert_eq!(before, after, "the tag was overwritten");
}
