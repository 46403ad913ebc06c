//! Attestations: SLSA provenance of the run and the build's SBOMs, signed beside the signature
//! in both of cosign's formats. The real cosign (`cosign verify-attestation`, skipped with the
//! reason printed when absent) accepts what `publish` writes — key pair and keyless, legacy
//! `.att` and bundle — and refuses another key or identity; `publish verify --attestation`
//! accepts what `cosign attest` writes and refuses a statement about another digest, a
//! tampered envelope and another predicate type; the provenance is GitHub's, field by field.

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use crate::cosign::{KEY_PASSWORD, Setup, out_text};
use crate::support::image::{sha, write_layout};
use crate::support::policy::Policy;
use crate::support::sigstore::{self, ISSUER, REQUEST_TOKEN};
use crate::support::{Registry, RegistryOptions, curl_put_manifest, publish, run, text};

/// What these tests do with `cosign::Setup`'s image: publish it attested, write its SBOMs.
trait Attesting {
    fn run_attested(&self, repo: &str, signing: Value, image: Value, env: &[(String, String)]) -> (String, String);
    fn spdx(&self, name: &str, digest: &str) -> String;
    fn cyclonedx(&self, name: &str) -> String;
}

impl Attesting for Setup {
    /// `publish run` of the image to `ml/REPO` with `signing` and `image` fields added.
    fn run_attested(&self, repo: &str, signing: Value, image: Value, env: &[(String, String)]) -> (String, String) {
        let mut img = json!({"name": repo, "source": "oci:img", "tags": ["main"], "visibility": "public"});
        img.as_object_mut().unwrap().extend(image.as_object().cloned().unwrap_or_default());
        Policy::new().local("home", &self.reg.host).image(img).set("signing", signing).write(self.work.path());
        let out = run(publish(self.work.path()).arg("run").env("COSIGN_PASSWORD", KEY_PASSWORD).envs(env.to_vec()));
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
        (stdout, stderr)
    }

    /// An SPDX 2.3 document as syft writes one for this image (root package, its checksum).
    fn spdx(&self, name: &str, digest: &str) -> String {
        let doc = json!({
            "spdxVersion": "SPDX-2.3", "dataLicense": "CC0-1.0", "SPDXID": "SPDXRef-DOCUMENT",
            "name": "ml/app", "documentNamespace": "https://anchore.com/syft/image/ml-app-0b6e",
            "creationInfo": {"created": "2026-12-01T10:00:00Z", "creators": ["Organization: Anchore, Inc", "Tool: syft-1.38.0"]},
            "packages": [
                {"SPDXID": "SPDXRef-DocumentRoot-Image-ml-app", "name": "ml/app", "versionInfo": "main",
                 "downloadLocation": "NOASSERTION", "primaryPackagePurpose": "CONTAINER",
                 "checksums": [{"algorithm": "SHA256", "checksumValue": &digest["sha256:".len()..]}]},
                {"SPDXID": "SPDXRef-Package-python-torch", "name": "torch", "versionInfo": "2.5.1", "downloadLocation": "NOASSERTION"}
            ],
            "relationships": [{"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES", "relatedSpdxElement": "SPDXRef-DocumentRoot-Image-ml-app"}]
        });
        std::fs::write(self.work.path().join(name), serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
        name.to_string()
    }

    /// A CycloneDX 1.6 document of a CUDA image's size: 20,000 components, over 2 MB (its
    /// bundle, base64, is past any 1 MiB bound on reading one back).
    fn cyclonedx(&self, name: &str) -> String {
        let components: Vec<Value> = (0..20_000)
            .map(|i| {
                json!({"type": "library", "name": format!("python-package-{i:05}"), "version": "2.5.1",
                "purl": format!("pkg:pypi/python-package-{i:05}@2.5.1")})
            })
            .collect();
        let doc = json!({
            "bomFormat": "CycloneDX", "specVersion": "1.6", "version": 1,
            "serialNumber": "urn:uuid:3e671687-395b-41f5-a30f-a58921a69b79",
            "metadata": {"component": {"bom-ref": "0f2d1c8a", "type": "container", "name": "ml/app", "version": self.image.manifest_digest}},
            "components": components
        });
        std::fs::write(self.work.path().join(name), serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
        name.to_string()
    }
}

fn keyless_env(s: &sigstore::Sigstore) -> Vec<(String, String)> {
    vec![
        ("ACTIONS_ID_TOKEN_REQUEST_URL".into(), s.token_url()),
        ("ACTIONS_ID_TOKEN_REQUEST_TOKEN".into(), REQUEST_TOKEN.into()),
    ]
}

fn keyless(s: &sigstore::Sigstore, format: &str) -> Value {
    json!({"keyless": true, "format": format, "fulcio_url": s.fulcio_url(), "rekor_url": s.rekor_url()})
}

/// The fixture: GitHub's variables for a run, and the predicate GitHub writes for it.
fn fixture() -> (Vec<(String, String)>, Value) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/github-provenance.json");
    let f: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let env =
        f["environment"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_str().unwrap().into())).collect();
    (env, f["predicate"].clone())
}

/// Every leaf of `v`, by JSON pointer.
fn leaves(v: &Value, at: String, out: &mut Vec<(String, Value)>) {
    match v {
        Value::Object(m) => m.iter().for_each(|(k, v)| leaves(v, format!("{at}/{k}"), out)),
        Value::Array(a) => a.iter().enumerate().for_each(|(i, v)| leaves(v, format!("{at}/{i}"), out)),
        _ => out.push((at, v.clone())),
    }
}

/// `publish verify --attestation TYPE` (JSON): exit code and document.
fn publish_verify(t: &Setup, reference: &str, kind: &str, how: &[&str]) -> (Option<i32>, Value, String) {
    let out = run(publish(t.work.path())
        .args(["verify", reference, "--insecure", "--attestation", kind, "-o", "json"])
        .args(how));
    let (stdout, stderr) = text(&out);
    let doc = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
    (out.status.code(), doc, stderr)
}

#[test]
fn the_provenance_is_githubs_field_by_field_and_the_action_lists_every_attestation() {
    let Some(t) = Setup::new(260) else { return };
    let ours = t.key_pair("ours");
    let (mut env, expected) = fixture();
    let outputs = t.work.path().join("outputs");
    let summary = t.work.path().join("summary.md");
    env.push(("GITHUB_OUTPUT".into(), outputs.display().to_string()));
    env.push(("GITHUB_STEP_SUMMARY".into(), summary.display().to_string()));
    let sbom = t.spdx("sbom.spdx.json", &t.image.manifest_digest);
    t.run_attested("app", json!({"key": ours.join("cosign.key"), "format": "both"}), json!({"sbom": sbom}), &env);

    let key = ours.join("cosign.pub").display().to_string();
    let (code, doc, stderr) = publish_verify(&t, &t.reference("app"), "slsaprovenance1", &["--key", &key]);
    assert_eq!(code, Some(0), "{doc:#}\n{stderr}");
    let found = doc["result"]["attestations"].as_array().unwrap();
    assert_eq!(found.len(), 2, "one per format: {doc:#}");
    for a in found {
        let predicate = &a["predicate"];
        let mut want = Vec::new();
        leaves(&expected, String::new(), &mut want);
        for (at, value) in &want {
            assert_eq!(predicate.pointer(at), Some(value), "{at} differs from GitHub's: {predicate:#}");
        }
        let mut have = Vec::new();
        leaves(predicate, String::new(), &mut have);
        let extra: Vec<&String> =
            have.iter().map(|(at, _)| at).filter(|at| !want.iter().any(|(w, _)| w == *at)).collect();
        assert_eq!(extra, ["/runDetails/metadata/finishedOn", "/runDetails/metadata/startedOn"], "{predicate:#}");
    }
    // The SBOM, as the file says.
    let (code, doc, _) = publish_verify(&t, &t.reference("app"), "spdxjson", &["--key", &key]);
    assert_eq!(code, Some(0), "{doc:#}");
    assert_eq!(doc["result"]["attestations"][0]["predicate"]["packages"][1]["name"], "torch");

    // The Action's output: the digest → both attestations and where each format went.
    let text = std::fs::read_to_string(&outputs).unwrap();
    let line = text.lines().skip_while(|l| !l.starts_with("attestations<<")).nth(1).unwrap_or_default();
    let out: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {text}"));
    let list = out[&t.image.manifest_digest].as_array().unwrap_or_else(|| panic!("{out:#}"));
    let types: Vec<&str> = list.iter().map(|a| a["predicate_type"].as_str().unwrap()).collect();
    assert_eq!(types, ["https://slsa.dev/provenance/v1", "https://spdx.dev/Document"], "{out:#}");
    let hex = &t.image.manifest_digest["sha256:".len()..];
    assert_eq!(list[0]["legacy"], format!("{}/ml/app:sha256-{hex}.att", t.reg.host));
    assert!(list[1]["bundle"].as_str().is_some_and(|d| d.starts_with("sha256:")), "{out:#}");
    let summary = std::fs::read_to_string(&summary).unwrap();
    assert!(summary.contains("| attested | predicate type |") && summary.contains("sbom.spdx.json"), "{summary}");
}

#[test]
fn cosign_verify_attestation_accepts_key_pair_provenance_and_sboms_and_refuses_another_key() {
    let Some(t) = Setup::new(261) else { return };
    let s = sigstore::start();
    let ours = t.key_pair("ours");
    let theirs = t.key_pair("theirs");
    let key = ours.join("cosign.key").display().to_string();
    let spdx = t.spdx("sbom.spdx.json", &t.image.manifest_digest);
    let cdx = t.cyclonedx("sbom.cdx.json");
    t.run_attested("legacy", json!({"key": key, "format": "legacy"}), json!({"sbom": spdx}), &[]);
    let logged = json!({"key": key, "format": "legacy", "tlog": true, "rekor_url": s.rekor_url()});
    t.run_attested("legacy-logged", logged, json!({"sbom": spdx}), &[]);
    let both = json!({"key": key, "format": "both", "tlog": true, "rekor_url": s.rekor_url()});
    t.run_attested("both", both, json!({"sbom": cdx}), &[]);
    let root = s.trusted_root().display().to_string();
    let verify = |repo: &str, kind: &str, public: &Path, extra: &[&str], env: Vec<(&str, PathBuf)>| {
        let out = t
            .cosign()
            .args(["verify-attestation", "--allow-http-registry", "--type", kind, "--key"])
            .arg(public)
            .args(extra)
            .arg(t.reference(repo))
            .envs(env)
            .output()
            .unwrap();
        (out.status.success(), out_text(&out))
    };
    let bundle = ["--new-bundle-format", "--trusted-root", &root];
    // Repository, --type, cosign's flags, its environment (the legacy log's roots).
    type Case<'a> = (&'a str, &'a str, Vec<&'a str>, Vec<(&'static str, PathBuf)>);
    let cases: Vec<Case> = vec![
        ("legacy", "slsaprovenance1", vec!["--insecure-ignore-tlog"], vec![]),
        ("legacy", "spdxjson", vec!["--insecure-ignore-tlog"], vec![]),
        // The legacy layer's Rekor entry (a `dsse` entry of the envelope as stored) is checked.
        ("legacy-logged", "slsaprovenance1", vec![], s.cosign_env()),
        ("legacy-logged", "spdxjson", vec![], s.cosign_env()),
        ("both", "slsaprovenance1", bundle.to_vec(), vec![]),
        ("both", "cyclonedx", bundle.to_vec(), vec![]),
    ];
    for (repo, kind, extra, env) in &cases {
        let (ok, out) = verify(repo, kind, &ours.join("cosign.pub"), extra, env.clone());
        assert!(ok, "{repo} {kind}: cosign refused publish's attestation:\n{out}");
        assert!(out.contains("\"payloadType\":\"application/vnd.in-toto+json\""), "{out}");
        let (ok, out) = verify(repo, kind, &theirs.join("cosign.pub"), extra, env.clone());
        assert!(!ok, "{repo} {kind}: cosign accepted another key:\n{out}");
    }
    // No attestation of a type that was not attested.
    let (ok, out) = verify("legacy", "cyclonedx", &ours.join("cosign.pub"), &["--insecure-ignore-tlog"], vec![]);
    assert!(!ok && out.contains("none of the attestations matched the predicate type"), "{out}");
}

#[test]
fn cosign_verify_attestation_accepts_keyless_provenance_in_both_formats_and_refuses_another_identity() {
    let Some(t) = Setup::new(262) else { return };
    let s = sigstore::start();
    let mut env = keyless_env(&s);
    env.extend(fixture().0);
    t.run_attested("legacy", keyless(&s, "legacy"), json!({}), &env);
    t.run_attested("both", keyless(&s, "both"), json!({}), &env);
    let identity = sigstore::identity();
    let verify = |repo: &str, who: &str, extra: &[&str], env: Vec<(&str, PathBuf)>| {
        let out = t
            .cosign()
            .args(["verify-attestation", "--allow-http-registry", "--type", "slsaprovenance1"])
            .args(["--certificate-identity", who, "--certificate-oidc-issuer", ISSUER])
            .args(extra)
            .arg(t.reference(repo))
            .envs(env)
            .output()
            .unwrap();
        (out.status.success(), out_text(&out))
    };
    let root = s.trusted_root().display().to_string();
    let evil = "https://github.com/evil/repo/.github/workflows/x.yml@refs/heads/main";
    for (repo, extra, env) in [
        ("legacy", vec![], s.cosign_env()),
        ("both", vec!["--new-bundle-format", "--trusted-root", root.as_str()], vec![]),
    ] {
        let (ok, out) = verify(repo, &identity, &extra, env.clone());
        assert!(ok, "{repo}: cosign refused publish's keyless attestation:\n{out}");
        let (ok, out) = verify(repo, evil, &extra, env);
        assert!(!ok, "{repo}: cosign accepted another identity:\n{out}");
    }
    // Keyless, the builder is the certificate's identity (GitHub's job_workflow_ref).
    let (code, doc, _) = publish_verify(
        &t,
        &t.reference("both"),
        "slsaprovenance1",
        &["--certificate-identity", &identity, "--certificate-oidc-issuer", ISSUER, "--trusted-root", &root],
    );
    assert_eq!(code, Some(0), "{doc:#}");
    assert_eq!(doc["result"]["attestations"][0]["predicate"]["runDetails"]["builder"]["id"], identity.as_str());
    let passed = doc["result"]["attestations"][0]["passed"].as_array().unwrap();
    assert!(passed.contains(&json!("builder is the certificate's identity")), "{doc:#}");
}

/// Uploads `data` as a blob of `repo` with curl (POST for an upload, then one PUT).
fn curl_put_blob(reg: &Registry, repo: &str, data: &[u8]) -> String {
    let digest = sha(data);
    let out = Command::new("curl")
        .args(["-sSf", "-o", "/dev/null", "-X", "POST", "-w", "%header{location}"])
        .arg(format!("http://{}/v2/{repo}/blobs/uploads/", reg.host))
        .output()
        .unwrap();
    assert!(out.status.success(), "upload start: {}", String::from_utf8_lossy(&out.stderr));
    let location = String::from_utf8(out.stdout).unwrap();
    let url = if location.starts_with("http") { location } else { format!("http://{}{location}", reg.host) };
    let sep = if url.contains('?') { '&' } else { '?' };
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), data).unwrap();
    let out = Command::new("curl")
        .args(["-sSf", "-X", "PUT", "-H", "Content-Type: application/octet-stream", "--data-binary"])
        .arg(format!("@{}", file.path().display()))
        .arg(format!("{url}{sep}digest={digest}"))
        .output()
        .unwrap();
    assert!(out.status.success(), "blob upload: {}", String::from_utf8_lossy(&out.stderr));
    digest
}

fn curl_get(reg: &Registry, path: &str) -> Vec<u8> {
    let out = Command::new("curl")
        .args(["-sSf", "-H", "Accept: application/vnd.oci.image.manifest.v1+json"])
        .arg(format!("http://{}/v2/{path}", reg.host))
        .output()
        .unwrap();
    assert!(out.status.success(), "GET {path}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

#[test]
fn publish_verifies_what_cosign_attests_and_refuses_another_subject_a_tampered_envelope_and_another_type() {
    let Some(t) = Setup::new(263) else { return };
    let theirs = t.key_pair("theirs");
    let other = write_layout(&t.work.path().join("other"), 264, &[9_000], "linux", "amd64", "latest");
    for (src, repo) in [("img", "legacy"), ("img", "bundle"), ("img", "moved"), ("other", "moved"), ("img", "tampered")]
    {
        let tag = if src == "img" { "main" } else { "other" };
        let out = run(publish(t.work.path()).args([
            "push",
            &format!("oci:{src}"),
            &format!("docker://{}/ml/{repo}:{tag}", t.reg.host),
            "--insecure",
        ]));
        assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    }
    let predicate = t.work.path().join("provenance.json");
    let (_, expected) = fixture();
    std::fs::write(&predicate, expected.to_string()).unwrap();
    let attest = |reference: &str, extra: &[&str]| {
        let out = t
            .cosign()
            .args(["attest", "--yes", "--allow-http-registry", "--type", "slsaprovenance1", "--key"])
            .arg(theirs.join("cosign.key"))
            .arg("--predicate")
            .arg(&predicate)
            .args(["--tlog-upload=false"])
            .args(extra)
            .arg(reference)
            .output()
            .unwrap();
        assert!(out.status.success(), "cosign attest {reference}: {}", out_text(&out));
    };
    attest(&t.reference("legacy"), &[]);
    attest(&t.reference("bundle"), &["--new-bundle-format"]);
    // Logged as cosign before 2.2 logged attestations: an `intoto` entry.
    let s = sigstore::start();
    let out = t
        .cosign()
        .args(["attest", "--yes", "--allow-http-registry", "--type", "slsaprovenance1", "--key"])
        .arg(theirs.join("cosign.key"))
        .arg("--predicate")
        .arg(&predicate)
        .args(["--rekor-entry-type", "intoto", &format!("--rekor-url={}", s.rekor_url())])
        .arg(t.reference("intoto"))
        .output()
        .unwrap();
    assert!(out.status.success(), "cosign attest (intoto): {}", out_text(&out));
    attest(&format!("{}/ml/moved@{}", t.reg.host, other.manifest_digest), &[]);
    attest(&t.reference("tampered"), &[]);
    let key = theirs.join("cosign.pub").display().to_string();

    for (repo, format) in [("legacy", "legacy"), ("bundle", "bundle")] {
        let (code, doc, stderr) =
            publish_verify(&t, &t.reference(repo), "slsaprovenance1", &["--key", &key, "--format", format]);
        assert_eq!(code, Some(0), "{repo}: publish refused cosign's attestation: {doc:#}\n{stderr}");
        let a = &doc["result"]["attestations"][0];
        assert_eq!(a["format"], format);
        assert_eq!(
            a["predicate"]["buildDefinition"]["resolvedDependencies"],
            expected["buildDefinition"]["resolvedDependencies"]
        );
    }
    // cosign's `intoto` log entry: its SET, and that it holds this key and this statement.
    let root = s.trusted_root().display().to_string();
    let (code, doc, stderr) =
        publish_verify(&t, &t.reference("intoto"), "slsaprovenance1", &["--key", &key, "--trusted-root", &root]);
    assert_eq!(code, Some(0), "{doc:#}\n{stderr}");
    let passed = doc["result"]["attestations"][0]["passed"].as_array().unwrap();
    assert!(passed.contains(&json!("SET")) && passed.contains(&json!("tlog entry is this signature")), "{doc:#}");

    // The text names the predicate's key fields.
    let out = run(publish(t.work.path()).args([
        "verify",
        &t.reference("legacy"),
        "--insecure",
        "--attestation",
        "slsaprovenance1",
        "--key",
        &key,
    ]));
    let (stdout, _) = text(&out);
    assert!(
        stdout.contains(
            "source: git+https://github.com/my-org/comfyui@refs/heads/main (7d5b3c2a1f0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c)"
        ) && stdout
            .contains("builder: https://github.com/my-org/comfyui/.github/workflows/publish.yml@refs/heads/main"),
        "{stdout}"
    );

    // Another predicate type: nothing of it there, said with what there is.
    let out = run(publish(t.work.path()).args([
        "verify",
        &t.reference("legacy"),
        "--insecure",
        "--attestation",
        "cyclonedx",
        "--key",
        &key,
    ]));
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("no attestation of https://cyclonedx.org/bom (found: https://slsa.dev/provenance/v1)"),
        "{stdout}"
    );

    // A statement about another digest, moved to this image's `.att` tag.
    let other_hex = &other.manifest_digest["sha256:".len()..];
    let hex = &t.image.manifest_digest["sha256:".len()..];
    let moved = curl_get(&t.reg, &format!("ml/moved/manifests/sha256-{other_hex}.att"));
    let media_type = "application/vnd.oci.image.manifest.v1+json";
    curl_put_manifest(&t.reg, "ml/moved", &format!("sha256-{hex}.att"), media_type, &String::from_utf8(moved).unwrap());
    let (code, doc, _) = publish_verify(&t, &t.reference("moved"), "slsaprovenance1", &["--key", &key]);
    assert_eq!(code, Some(1), "{doc:#}");
    let failed = doc["result"]["attestations"][0]["failed"].as_str().unwrap_or_default();
    assert_eq!(
        failed,
        format!("digest: the statement is about {}, not {}", other.manifest_digest, t.image.manifest_digest)
    );

    // A tampered envelope: the commit changed, the signature kept.
    let mut manifest: Value =
        serde_json::from_slice(&curl_get(&t.reg, &format!("ml/tampered/manifests/sha256-{hex}.att"))).unwrap();
    let layer = manifest["layers"][0]["digest"].as_str().unwrap().to_string();
    let mut envelope: Value = serde_json::from_slice(&curl_get(&t.reg, &format!("ml/tampered/blobs/{layer}"))).unwrap();
    let statement = String::from_utf8(B64.decode(envelope["payload"].as_str().unwrap()).unwrap()).unwrap();
    let forged =
        statement.replace("7d5b3c2a1f0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c", "0000000000000000000000000000000000000000");
    assert_ne!(forged, statement);
    envelope["payload"] = json!(B64.encode(forged));
    let bytes = envelope.to_string().into_bytes();
    let digest = curl_put_blob(&t.reg, "ml/tampered", &bytes);
    manifest["layers"][0]["digest"] = json!(digest);
    manifest["layers"][0]["size"] = json!(bytes.len());
    curl_put_manifest(&t.reg, "ml/tampered", &format!("sha256-{hex}.att"), media_type, &manifest.to_string());
    let (code, doc, _) = publish_verify(&t, &t.reference("tampered"), "slsaprovenance1", &["--key", &key]);
    assert_eq!(code, Some(1), "{doc:#}");
    assert_eq!(doc["result"]["attestations"][0]["failed"], "signature: does not verify with the key", "{doc:#}");
    assert!(doc["result"]["attestations"][0].get("predicate").is_none(), "a forged predicate is not shown: {doc:#}");

    // publish attests beside cosign's attestations: both stay, each verifies with its key.
    let ours = t.key_pair("ours");
    for (repo, format) in [("legacy", "legacy"), ("bundle", "bundle")] {
        t.run_attested(repo, json!({"key": ours.join("cosign.key"), "format": format}), json!({}), &[]);
        for who in [&theirs, &ours] {
            let key = who.join("cosign.pub").display().to_string();
            let (code, doc, _) = publish_verify(&t, &t.reference(repo), "slsaprovenance1", &["--key", &key]);
            assert_eq!(code, Some(0), "{repo}: {} lost: {doc:#}", who.display());
            let valid =
                doc["result"]["attestations"].as_array().unwrap().iter().filter(|a| a["verified"] == true).count();
            assert_eq!(valid, 1, "{doc:#}");
        }
    }
}

/// Writes `data` as a blob of the layout at `dir`; its digest.
fn put(dir: &Path, data: &[u8]) -> String {
    let digest = sha(data);
    std::fs::write(dir.join("blobs/sha256").join(&digest["sha256:".len()..]), data).unwrap();
    digest
}

/// An OCI layout as `docker buildx build --sbom=true --output type=oci` writes one: an index
/// with the linux/amd64 image and BuildKit's attestation manifest for it. The index digest,
/// the image's manifest digest and the attestation manifest's.
fn buildkit_layout(dir: &Path) -> (String, String, String) {
    let (_, children) = crate::support::image::write_index_layout(dir, 265, &[("linux", "amd64")], "latest");
    let image = &children[0].manifest_digest;
    let image_size = std::fs::metadata(dir.join("blobs/sha256").join(&image["sha256:".len()..])).unwrap().len();
    let statement = json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "pkg:docker/ml/app@main?platform=linux%2Famd64", "digest": {"sha256": &image["sha256:".len()..]}}],
        "predicateType": "https://spdx.dev/Document",
        "predicate": {"spdxVersion": "SPDX-2.3", "name": "sbom"}
    })
    .to_string();
    let layer = put(dir, statement.as_bytes());
    let config = put(dir, b"{}");
    let attestation = json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.docker.attestation.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": config, "size": 2},
        "layers": [{"mediaType": "application/vnd.in-toto+json", "digest": layer, "size": statement.len(),
                    "annotations": {"in-toto.io/predicate-type": "https://spdx.dev/Document"}}],
        "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": image, "size": image_size}
    })
    .to_string();
    let attestation_digest = put(dir, attestation.as_bytes());
    let index = json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": image, "size": image_size,
             "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": attestation_digest, "size": attestation.len(),
             "platform": {"os": "unknown", "architecture": "unknown"},
             "annotations": {"vnd.docker.reference.type": "attestation-manifest", "vnd.docker.reference.digest": image}}
        ]
    })
    .to_string();
    let index_digest = put(dir, index.as_bytes());
    let top = json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.index.v1+json",
        "digest": index_digest, "size": index.len(), "annotations": {"org.opencontainers.image.ref.name": "latest"}}]});
    std::fs::write(dir.join("index.json"), top.to_string()).unwrap();
    (index_digest, image.clone(), attestation_digest)
}

#[test]
fn sbom_mistakes_are_found_offline_where_written_and_the_plan_lists_every_attestation() {
    let reg = Registry::start(RegistryOptions::default());
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let (index, image, attestation) = buildkit_layout(&dir.join("img"));
    let out = run(publish(dir).arg("generate-key-pair").env("COSIGN_PASSWORD", KEY_PASSWORD));
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    let policy = |signing: &str| {
        let text = format!(
            "version: 1\nregistries:\n  home: {{kind: registry, repository: {}/ml, insecure: true}}\nimages:\n  - name: app\n    source: oci:img\n    visibility: public\n    sbom: sbom.json\n{signing}",
            reg.host
        );
        std::fs::write(dir.join("publish.yaml"), text).unwrap();
    };
    let check = |cmd: &[&str]| {
        let out = run(publish(dir).args(cmd).env("COSIGN_PASSWORD", KEY_PASSWORD));
        let (stdout, stderr) = text(&out);
        (out.status.code(), format!("{stdout}{stderr}"))
    };
    policy("signing: {key: cosign.key}\n");
    // Missing, not an SBOM, an SBOM of another image: exit 2 at the sbom: line.
    let (code, out) = check(&["check"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("publish.yaml:8:11: images[0].sbom: sbom.json:"), "{out}");
    std::fs::write(dir.join("sbom.json"), r#"{"hello": 1}"#).unwrap();
    let (code, out) = check(&["check"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("neither SPDX JSON (no spdxVersion) nor CycloneDX JSON (no bomFormat)"), "{out}");
    let other = format!("sha256:{}", "b".repeat(64));
    let spdx = |digest: &str| {
        json!({"spdxVersion": "SPDX-2.3", "dataLicense": "CC0-1.0", "SPDXID": "SPDXRef-DOCUMENT", "name": "ml/app",
            "documentNamespace": "https://anchore.com/syft/image/ml-app", "creationInfo": {"created": "2026-12-01T10:00:00Z", "creators": ["Tool: syft-1.38.0"]},
            "packages": [{"SPDXID": "SPDXRef-DocumentRoot-Image-ml-app", "name": "ml/app", "downloadLocation": "NOASSERTION",
                "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
                    "referenceLocator": format!("pkg:oci/ml%2Fapp@{}?arch=amd64", digest.replace(':', "%3A"))}]}],
            "relationships": [{"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES", "relatedSpdxElement": "SPDXRef-DocumentRoot-Image-ml-app"}]})
        .to_string()
    };
    std::fs::write(dir.join("sbom.json"), spdx(&other)).unwrap();
    let (code, out) = check(&["plan", "--no-measure"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains(&format!(
            "describes {other} (at packages[0].externalRefs[0].referenceLocator), which is not this image"
        )),
        "{out}"
    );
    // Without signing, nothing can be attested.
    std::fs::write(dir.join("sbom.json"), spdx(&image)).unwrap();
    policy("attest: {provenance: true}\n");
    let (code, out) = check(&["check"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("images[0].sbom: an SBOM is attested with the signing settings, and there are none"), "{out}");
    assert!(out.contains("attest.provenance: provenance is attested with the signing settings"), "{out}");

    // The plan lists the run's attestations and BuildKit's; the run writes them, and pushes
    // BuildKit's attestation manifest as it is.
    policy("signing: {key: cosign.key}\n");
    let (code, out) = check(&["plan", "--no-measure"]);
    assert_eq!(code, Some(0), "{out}");
    for line in [
        "attest     https://slsa.dev/provenance/v1 (SLSA provenance of this run), signed".to_string(),
        format!(
            "attest     https://spdx.dev/Document (BuildKit's, in the image's index, about {image}), pushed as it is"
        ),
        "step 3   sign and attach attestations https://slsa.dev/provenance/v1, https://spdx.dev/Document".to_string(),
    ] {
        assert!(out.contains(&line), "{line}\n{out}");
    }
    assert!(out.contains("(SBOM ") && out.contains("sbom.json), signed"), "{out}");
    let (code, report, stderr) =
        crate::support::run_json(publish(dir).args(["run", "-o", "json"]).env("COSIGN_PASSWORD", KEY_PASSWORD));
    assert_eq!(code, Some(0), "{report:#}\n{stderr}");
    let written = report["images"][0]["targets"][0]["attestations"].as_array().cloned().unwrap_or_default();
    let types: Vec<&str> = written.iter().map(|w| w["predicate_type"].as_str().unwrap_or_default()).collect();
    assert_eq!(types, ["https://slsa.dev/provenance/v1", "https://spdx.dev/Document"], "{report:#}");
    let pushed = reg.inspect(&format!("{}/ml/app@{attestation}", reg.host), true);
    assert!(pushed.status.success(), "BuildKit's attestation manifest was not pushed");
    assert_eq!(sha(&pushed.stdout), attestation, "BuildKit's attestation manifest changed");
    assert_eq!(sha(&reg.inspect(&format!("{}/ml/app:latest", reg.host), true).stdout), index);
    // The provenance is about the index and its platform image, not BuildKit's attestation.
    let att = reg.inspect(&format!("{}/ml/app:sha256-{}.att", reg.host, &index["sha256:".len()..]), true);
    let att: Value = serde_json::from_slice(&att.stdout).unwrap();
    let layer = att["layers"][0]["digest"].as_str().unwrap();
    assert_eq!(att["layers"][0]["annotations"]["predicateType"], "https://slsa.dev/provenance/v1");
    let envelope: Value = serde_json::from_slice(&crate::support::blob(&reg, "ml/app", layer)).unwrap();
    let statement: Value = serde_json::from_slice(&B64.decode(envelope["payload"].as_str().unwrap()).unwrap()).unwrap();
    let subjects: Vec<String> = statement["subject"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| format!("sha256:{}", s["digest"]["sha256"].as_str().unwrap()))
        .collect();
    assert_eq!(subjects, [index.clone(), image.clone()], "{statement:#}");
    assert_eq!(statement["subject"][0]["name"], format!("{}/ml/app", reg.host));

    // The SBOM is about the index and the platform image it names.
    let sbom_layer = att["layers"][1]["digest"].as_str().unwrap();
    let envelope: Value = serde_json::from_slice(&crate::support::blob(&reg, "ml/app", sbom_layer)).unwrap();
    let statement: Value = serde_json::from_slice(&B64.decode(envelope["payload"].as_str().unwrap()).unwrap()).unwrap();
    assert_eq!(statement["predicateType"], "https://spdx.dev/Document");
    assert_eq!(statement["subject"].as_array().unwrap().len(), 2, "{statement:#}");

    // A saved plan whose SBOM changed since: refused before anything is pushed.
    let out = run(publish(dir).args(["plan", "--no-measure", "-o", "json"]));
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    std::fs::write(dir.join("plan.json"), &out.stdout).unwrap();
    std::fs::write(dir.join("sbom.json"), spdx(&image).replace("ml/app", "ml/app2")).unwrap();
    let (code, out) = check(&["run", "--plan", "plan.json"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("sbom.json changed since the plan was made: make the plan again"), "{out}");
    std::fs::write(dir.join("sbom.json"), spdx(&image)).unwrap();

    // attest.provenance: false, and no SBOM: signed, nothing attested.
    std::fs::write(
        dir.join("publish.yaml"),
        std::fs::read_to_string(dir.join("publish.yaml")).unwrap().replace("    sbom: sbom.json\n", "")
            + "attest: {provenance: false}\n",
    )
    .unwrap();
    let (code, out) = check(&["plan", "--no-measure"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(!out.contains("SLSA provenance") && !out.contains("sign and attach"), "{out}");
    assert!(out.contains("(BuildKit's, in the image's index"), "BuildKit's are still listed: {out}");
}

/// Eight runs at once, each with its own key, attest one image in both formats: every run's
/// provenance is there afterwards and verifies with its key (the merge signatures use).
#[test]
fn eight_runs_at_once_each_keep_their_provenance_in_both_formats() {
    let reg = Registry::start(RegistryOptions::default());
    let work = tempfile::tempdir().unwrap();
    let dirs: Vec<PathBuf> = (0..8).map(|i| work.path().join(format!("run{i}"))).collect();
    let mut digest = String::new();
    for dir in &dirs {
        digest = write_layout(&dir.join("img"), 266, &[6_000], "linux", "amd64", "latest").manifest_digest;
        let out = run(publish(dir).arg("generate-key-pair").env("COSIGN_PASSWORD", KEY_PASSWORD));
        assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
        Policy::new()
            .local("home", &reg.host)
            .image(json!({"name": "app", "source": "oci:img", "tags": ["main"], "visibility": "public"}))
            .set("signing", json!({"key": "cosign.key", "format": "both"}))
            .write(dir);
    }
    let children: Vec<_> = dirs
        .iter()
        .map(|dir| {
            publish(dir)
                .arg("run")
                .env("COSIGN_PASSWORD", KEY_PASSWORD)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", out_text(&out));
    }
    let hex = &digest["sha256:".len()..];
    let raw = |tag: &str| -> Value {
        serde_json::from_slice(&reg.inspect(&format!("{}/ml/app:{tag}", reg.host), true).stdout).unwrap()
    };
    assert_eq!(raw(&format!("sha256-{hex}.att"))["layers"].as_array().unwrap().len(), 8, "legacy attestations");
    let index = raw(&format!("sha256-{hex}"));
    let provenance = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["annotations"]["dev.sigstore.bundle.predicateType"] == "https://slsa.dev/provenance/v1")
        .count();
    assert_eq!(provenance, 8, "bundle attestations: {index:#}");
    for dir in &dirs {
        let out = run(publish(dir).args([
            "verify",
            &format!("{}/ml/app@{digest}", reg.host),
            "--insecure",
            "--attestation",
            "slsaprovenance1",
            "--key",
            "cosign.pub",
        ]));
        let (stdout, _) = text(&out);
        assert_eq!(out.status.code(), Some(0), "{stdout}");
        assert!(stdout.contains("legacy (.att): 1 valid") && stdout.contains("bundle (referrer): 1 valid"), "{stdout}");
    }
}
