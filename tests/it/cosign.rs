//! Interop with the real cosign (`$COSIGN`, else `../shared/tools/cosign`, else the PATH;
//! skipped with the reason printed when none is found): `cosign verify` accepts what
//! `publish` signs — key pair and keyless, legacy `.sig` and bundle — and refuses another key
//! or identity; `publish verify` accepts what `cosign sign` makes; `publish` keeps cosign's
//! signatures when it signs an image cosign already signed. Keyless runs against the local
//! OIDC/Fulcio/Rekor stand-ins, whose trusted_root.json cosign is given.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::image::{TestImage, write_layout};
use crate::support::policy::Policy;
use crate::support::sigstore::{self, ISSUER, REQUEST_TOKEN};
use crate::support::{Registry, RegistryOptions, publish, run, text};
use serde_json::{Value, json};

pub(crate) const KEY_PASSWORD: &str = "cosign-interop-pw-41d2";

pub(crate) fn cosign() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("COSIGN").map(PathBuf::from),
        Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/tools/cosign")),
    ];
    if let Some(found) = candidates.into_iter().flatten().find(|p| p.exists()) {
        return Some(found);
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("cosign"))
        .find(|p| p.exists());
    if on_path.is_none() {
        eprintln!("SKIPPED: no cosign ($COSIGN, ../shared/tools/cosign, PATH): the interop tests need the real cosign");
    }
    on_path
}

/// cosign with its own home (no TUF cache, no Docker config of the user's).
pub(crate) fn cosign_cmd(bin: &Path, home: &Path) -> Command {
    let mut c = Command::new(bin);
    // The wrapper unpacks cosign once into the user's cache: keep that cache while HOME moves.
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")));
    if let Some(cache) = cache {
        c.env("XDG_CACHE_HOME", cache);
    }
    c.env("HOME", home).env("TUF_ROOT", home.join("tuf")).env("COSIGN_PASSWORD", KEY_PASSWORD);
    c.env_remove("SIGSTORE_ROOT_FILE")
        .env_remove("SIGSTORE_REKOR_PUBLIC_KEY")
        .env_remove("SIGSTORE_CT_LOG_PUBLIC_KEY_FILE");
    c
}

pub(crate) fn out_text(o: &Output) -> String {
    format!("{}\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// A registry, a working directory with an image layout, and the real cosign (`None`, the test
/// skipped, without it). `tests/it/attest.rs` uses it too.
pub(crate) struct Setup {
    pub(crate) reg: Registry,
    pub(crate) work: tempfile::TempDir,
    pub(crate) image: TestImage,
    cosign: PathBuf,
}

impl Setup {
    pub(crate) fn new(seed: u64) -> Option<Setup> {
        let cosign = cosign()?;
        let reg = Registry::start(RegistryOptions::default());
        let work = tempfile::tempdir().unwrap();
        let image = write_layout(&work.path().join("img"), seed, &[12_000], "linux", "amd64", "latest");
        Some(Setup { reg, work, image, cosign })
    }

    pub(crate) fn reference(&self, repo: &str) -> String {
        format!("{}/ml/{repo}@{}", self.reg.host, self.image.manifest_digest)
    }

    fn home(&self) -> PathBuf {
        let h = self.work.path().join("home");
        std::fs::create_dir_all(&h).unwrap();
        h
    }

    /// `publish run` with a signing block, pushing the image to `ml/REPO`.
    fn publish(&self, repo: &str, signing: Value, extra_env: &[(&str, String)]) {
        Policy::new()
            .local("home", &self.reg.host)
            .image(json!({"name": repo, "source": "oci:img", "tags": ["main"], "visibility": "public"}))
            .set("signing", signing)
            .write(self.work.path());
        let mut cmd = publish(self.work.path());
        cmd.arg("run").env("COSIGN_PASSWORD", KEY_PASSWORD);
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let out = run(&mut cmd);
        assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    }

    pub(crate) fn cosign(&self) -> Command {
        cosign_cmd(&self.cosign, &self.home())
    }

    pub(crate) fn key_pair(&self, name: &str) -> PathBuf {
        let dir = self.work.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let out = self.cosign().arg("generate-key-pair").current_dir(&dir).output().unwrap();
        assert!(out.status.success(), "{}", out_text(&out));
        dir
    }
}

fn keyless_env(s: &sigstore::Sigstore) -> Vec<(&'static str, String)> {
    vec![("ACTIONS_ID_TOKEN_REQUEST_URL", s.token_url()), ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", REQUEST_TOKEN.into())]
}

fn keyless_signing(s: &sigstore::Sigstore, format: &str) -> Value {
    json!({"keyless": true, "format": format, "fulcio_url": s.fulcio_url(), "rekor_url": s.rekor_url()})
}

#[test]
fn cosign_verifies_keyless_legacy_and_bundle_signatures_and_refuses_another_identity() {
    let Some(t) = Setup::new(150) else { return };
    let s = sigstore::start();
    t.publish("legacy", keyless_signing(&s, "legacy"), &keyless_env(&s));
    t.publish("both", keyless_signing(&s, "both"), &keyless_env(&s));
    let identity = sigstore::identity();

    // Legacy: roots from cosign's environment variables (no bundle is attached to ml/legacy).
    let legacy = |who: &str| {
        t.cosign()
            .args([
                "verify",
                "--allow-http-registry",
                "--certificate-identity",
                who,
                "--certificate-oidc-issuer",
                ISSUER,
            ])
            .arg(t.reference("legacy"))
            .envs(s.cosign_env())
            .output()
            .unwrap()
    };
    let out = legacy(&identity);
    assert!(out.status.success(), "cosign refused publish's keyless legacy signature:\n{}", out_text(&out));
    let out = legacy("https://github.com/evil/repo/.github/workflows/x.yml@refs/heads/main");
    assert!(!out.status.success(), "cosign accepted another identity:\n{}", out_text(&out));

    // Bundle: cosign 2.6 checks only bundles once one is attached, with a trusted root.
    let bundle = |who: &str, root: &Path| {
        t.cosign()
            .args(["verify", "--allow-http-registry", "--new-bundle-format", "--trusted-root"])
            .arg(root)
            .args(["--certificate-identity", who, "--certificate-oidc-issuer", ISSUER])
            .arg(t.reference("both"))
            .output()
            .unwrap()
    };
    let out = bundle(&identity, &s.trusted_root());
    assert!(out.status.success(), "cosign refused publish's keyless bundle:\n{}", out_text(&out));
    let out = bundle("https://github.com/evil/repo/.github/workflows/x.yml@refs/heads/main", &s.trusted_root());
    assert!(!out.status.success(), "cosign accepted another identity:\n{}", out_text(&out));
    let other = sigstore::start();
    let out = bundle(&identity, &other.trusted_root());
    assert!(!out.status.success(), "cosign accepted roots nobody trusts:\n{}", out_text(&out));
}

#[test]
fn cosign_verifies_key_pair_signatures_with_and_without_the_log_and_refuses_another_key() {
    let Some(t) = Setup::new(151) else { return };
    let s = sigstore::start();
    let ours = t.key_pair("ours");
    let theirs = t.key_pair("theirs");
    let key = ours.join("cosign.key").display().to_string();
    t.publish("legacy", json!({"key": key, "format": "legacy"}), &[]);
    t.publish("both", json!({"key": key, "format": "both"}), &[]);
    t.publish("logged", json!({"key": key, "format": "both", "tlog": true, "rekor_url": s.rekor_url()}), &[]);
    let verify = |repo: &str, public: &Path, extra: &[&str]| {
        t.cosign()
            .args(["verify", "--allow-http-registry", "--key"])
            .arg(public)
            .args(extra)
            .arg(t.reference(repo))
            .output()
            .unwrap()
    };
    let root = s.trusted_root().display().to_string();
    let cases: Vec<(&str, Vec<&str>)> = vec![
        ("legacy", vec!["--insecure-ignore-tlog"]),
        ("both", vec!["--new-bundle-format", "--trusted-root", &root, "--insecure-ignore-tlog"]),
        ("logged", vec!["--new-bundle-format", "--trusted-root", &root]),
    ];
    for (repo, extra) in &cases {
        let out = verify(repo, &ours.join("cosign.pub"), extra);
        assert!(out.status.success(), "{repo}: cosign refused publish's signature:\n{}", out_text(&out));
        let out = verify(repo, &theirs.join("cosign.pub"), extra);
        assert!(!out.status.success(), "{repo}: cosign accepted another key:\n{}", out_text(&out));
    }
    // Not logged: cosign's default (tlog required) refuses, as docs/signing.md says.
    let out = verify("legacy", &ours.join("cosign.pub"), &[]);
    assert!(!out.status.success(), "cosign accepted an unlogged signature without --insecure-ignore-tlog");
}

#[test]
fn publish_verifies_what_cosign_signs_and_keeps_cosigns_signatures() {
    let Some(t) = Setup::new(152) else { return };
    let s = sigstore::start();
    let theirs = t.key_pair("theirs");
    let ours = t.key_pair("ours");
    // The image is there, unsigned, at three repositories.
    for repo in ["legacy", "bundle", "shared"] {
        t.publish(repo, json!({"key": ours.join("cosign.key"), "format": "legacy"}), &[]);
    }
    let sign = |repo: &str, extra: &[&str]| {
        let out = t
            .cosign()
            .args(["sign", "--yes", "--allow-http-registry", "--key"])
            .arg(theirs.join("cosign.key"))
            .args(extra)
            .arg(t.reference(repo))
            .output()
            .unwrap();
        assert!(out.status.success(), "cosign sign {repo}: {}", out_text(&out));
    };
    let rekor = format!("--rekor-url={}", s.rekor_url());
    sign("legacy", &[&rekor]);
    sign("bundle", &["--new-bundle-format", "--tlog-upload=false"]);
    sign("shared", &["--tlog-upload=false"]);

    let verify = |repo: &str, public: &Path, extra: &[&str]| {
        let out = run(publish(t.work.path())
            .args(["verify", "--insecure", "--key"])
            .arg(public)
            .args(extra)
            .arg(t.reference(repo)));
        (out.status.code(), text(&out).0)
    };
    let root = s.trusted_root().display().to_string();
    let (code, stdout) = verify("legacy", &theirs.join("cosign.pub"), &["--format", "legacy", "--trusted-root", &root]);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(
        stdout.contains("SET") && stdout.contains("tlog entry is this signature"),
        "cosign's Rekor entry checked: {stdout}"
    );
    let (code, stdout) = verify("bundle", &theirs.join("cosign.pub"), &["--format", "bundle"]);
    assert_eq!(code, Some(0), "{stdout}");

    // publish signs next to cosign's signature, in both formats; cosign's stays and verifies.
    t.publish("shared", json!({"key": ours.join("cosign.key"), "format": "both"}), &[]);
    let (code, stdout) = verify("shared", &theirs.join("cosign.pub"), &["--format", "legacy"]);
    assert_eq!(code, Some(0), "cosign's signature was lost: {stdout}");
    let (code, stdout) = verify("shared", &ours.join("cosign.pub"), &["--format", "both"]);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.contains("legacy (.sig): 1 valid") && stdout.contains("bundle (referrer): 1 valid"), "{stdout}");
    // cosign itself still finds its signature in the .sig manifest when told to look there.
    let out = t
        .cosign()
        .args(["verify", "--allow-http-registry", "--insecure-ignore-tlog", "--key"])
        .arg(theirs.join("cosign.pub"))
        .arg(t.reference("legacy"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", out_text(&out));
}

#[test]
fn cosign_refuses_a_bundle_whose_set_or_inclusion_proof_is_tampered() {
    let Some(t) = Setup::new(153) else { return };
    for (repo, tamper) in [("set", sigstore::Tamper::Set), ("proof", sigstore::Tamper::Proof)] {
        let s = sigstore::start();
        s.set_tamper(tamper);
        t.publish(repo, keyless_signing(&s, "bundle"), &keyless_env(&s));
        let out = t
            .cosign()
            .args(["verify", "--allow-http-registry", "--new-bundle-format", "--trusted-root"])
            .arg(s.trusted_root())
            .args(["--certificate-identity", &sigstore::identity(), "--certificate-oidc-issuer", ISSUER])
            .arg(t.reference(repo))
            .output()
            .unwrap();
        assert!(!out.status.success(), "{repo}: cosign accepted a tampered bundle:\n{}", out_text(&out));
    }
}

/// Every command docs/signing.md shows in its shell blocks runs as shown against a real
/// registry, the Sigstore stand-ins and the real cosign, with only the placeholders filled in:
/// `HOST/REPO` (a loopback registry, one repository per way of signing, chosen by the block's
/// comment or the command's `--format`), `sha256:…` and `:TAG`, `COSIGN_PASSWORD=…`, `IDENTITY`;
/// `cosign` gets `--allow-http-registry` as the page says for a plain-HTTP loopback registry,
/// and `publish` `--insecure`. Optional groups run left out and with each alternative that
/// applies to the repository. The one variant not run is keyless verification with no roots
/// at all: it fetches Sigstore's public-good roots through TUF (no network here).
#[test]
fn every_command_in_docs_signing_md_runs_as_shown() {
    let Some(t) = Setup::new(160) else { return };
    let s = sigstore::start();
    let work = t.work.path();
    for (from, to) in [
        (s.trusted_root(), "trusted_root.json"),
        (s.roots(), "fulcio.pem"),
        (s.rekor_key(), "rekor.pub"),
        (s.ctlog_key(), "ctlog.pub"),
    ] {
        std::fs::copy(from, work.join(to)).unwrap();
    }
    // What each repository holds: formats signed, and whether by key or keyless.
    let repos: &[(&str, &[&str])] = &[
        ("key-default", &["legacy", "bundle"]),
        ("key-legacy", &["legacy"]),
        ("key-bundle", &["bundle"]),
        ("key-both", &["legacy", "bundle"]),
        ("key-tlog", &["legacy", "bundle"]),
        ("keyless-legacy", &["legacy"]),
        ("keyless-both", &["legacy", "bundle"]),
        // Published by `publish run` with the page's key pair and an SBOM: attested.
        ("key-attested", &["legacy"]),
        ("key-attested-both", &["legacy", "bundle"]),
    ];
    // The predicate types each repository has attestations of (keyless: the run's provenance).
    let attested = |repo: &str, kind: &str| match repo {
        "key-attested" | "key-attested-both" => ["slsaprovenance1", "spdxjson"].contains(&kind),
        "keyless-legacy" | "keyless-both" => kind == "slsaprovenance1",
        _ => false,
    };
    for (repo, _) in repos.iter().filter(|(r, _)| r.starts_with("key-")) {
        let out = run(publish(work).args([
            "push",
            "oci:img",
            &format!("docker://{}/ml/{repo}:main", t.reg.host),
            "--insecure",
        ]));
        assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    }
    t.publish("keyless-legacy", keyless_signing(&s, "legacy"), &keyless_env(&s));
    t.publish("keyless-both", keyless_signing(&s, "both"), &keyless_env(&s));

    let mut ran = Vec::new();
    for (comment, command) in support::docs::sh_commands("docs/signing.md") {
        for variant in support::docs::expand(&command) {
            let mut words: Vec<String> = variant.split_whitespace().map(|w| w.trim_matches('\'').to_string()).collect();
            let env: Vec<(String, String)> = words
                .iter()
                .take_while(|w| w.contains('=') && !w.starts_with("--"))
                .map(|w| {
                    let (k, v) = w.split_once('=').unwrap();
                    (k.to_string(), if v == "…" { KEY_PASSWORD.to_string() } else { v.to_string() })
                })
                .collect();
            words.drain(..env.len());
            let mut env = env;
            if words.iter().any(|w| w == "--certificate-roots") {
                // As the page says: the Rekor and CT log keys come from cosign's variables.
                env.push(("SIGSTORE_REKOR_PUBLIC_KEY".into(), "rekor.pub".into()));
                env.push(("SIGSTORE_CT_LOG_PUBLIC_KEY_FILE".into(), "ctlog.pub".into()));
            }
            let format = words.iter().position(|w| w == "--format").map(|i| words[i + 1].clone());
            let attestation = words.iter().position(|w| w == "--attestation").map(|i| words[i + 1].clone());
            let keyless = words.iter().any(|w| w.starts_with("--certificate-identity"));
            let needs_roots = keyless && words[0] == "publish" && words[1] == "verify";
            if needs_roots && !words.iter().any(|w| w == "--trusted-root" || w == "--certificate-roots") {
                continue; // public-good TUF roots: no network here
            }
            // The repositories this command applies to.
            let targets: Vec<&str> = if words[1] == "sign" {
                vec![match format.as_deref() {
                    None => "key-default",
                    Some(f) => ["key-legacy", "key-bundle", "key-both"].into_iter().find(|r| r.ends_with(f)).unwrap(),
                }]
            } else if words[0] == "cosign" {
                let c = comment.as_str();
                match () {
                    _ if c.contains("attestations with a key pair") => vec!["key-attested"],
                    _ if c.contains("keyless, legacy") => vec!["keyless-legacy"],
                    _ if c.contains("keyless, bundle") => vec!["keyless-both"],
                    _ if c.contains("tlog: true") => vec!["key-tlog"],
                    _ if c.contains("key pair, legacy") => vec!["key-legacy"],
                    _ if c.contains("key pair, bundle") => vec!["key-bundle", "key-both"],
                    _ => panic!("docs/signing.md: no image is signed the way {comment:?} says"),
                }
            } else {
                let wanted = |formats: &[&str]| match format.as_deref() {
                    None => true,
                    Some("both") => formats.len() == 2,
                    Some(f) => formats.contains(&f),
                };
                repos
                    .iter()
                    .filter(|(r, f)| r.starts_with("keyless") == keyless && wanted(f))
                    .filter(|(r, _)| attestation.as_deref().is_none_or(|a| attested(r, a)))
                    .map(|(r, _)| *r)
                    .collect()
            };
            if words[0] == "publish" && words[1] == "generate-key-pair" {
                let out = run(publish(work).args(&words[1..]).envs(env.clone()));
                assert_eq!(out.status.code(), Some(0), "{variant}: {:?}", text(&out));
                ran.push(variant.clone());
                // The key with `tlog: true`, as the page's prose shows it.
                let digest_ref = format!("{}/ml/key-tlog@{}", t.reg.host, t.image.manifest_digest);
                let out = run(publish(work)
                    .args(["sign", &digest_ref, "--key", "cosign.key", "--tlog-upload", "--rekor-url", &s.rekor_url()])
                    .arg("--insecure")
                    .env("COSIGN_PASSWORD", KEY_PASSWORD));
                assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
                // Attested with the page's key pair (its provenance, and an SBOM of the image).
                let spdx = json!({"spdxVersion": "SPDX-2.3", "dataLicense": "CC0-1.0", "SPDXID": "SPDXRef-DOCUMENT",
                    "name": "ml/app", "documentNamespace": "https://anchore.com/syft/image/ml-app",
                    "creationInfo": {"created": "2026-12-01T10:00:00Z", "creators": ["Tool: syft-1.38.0"]}, "packages": []});
                std::fs::write(work.join("sbom.spdx.json"), spdx.to_string()).unwrap();
                for (repo, format) in [("key-attested", "legacy"), ("key-attested-both", "both")] {
                    Policy::new()
                        .local("home", &t.reg.host)
                        .image(json!({"name": repo, "source": "oci:img", "tags": ["main"], "visibility": "public", "sbom": "sbom.spdx.json"}))
                        .set("signing", json!({"key": "cosign.key", "format": format}))
                        .write(work);
                    let out = run(publish(work).arg("run").env("COSIGN_PASSWORD", KEY_PASSWORD));
                    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
                }
                continue;
            }
            assert!(!targets.is_empty(), "docs/signing.md: nothing to run {variant:?} on");
            for repo in targets {
                let fill = |w: &String| {
                    w.replace("HOST/REPO@sha256:…", &format!("{}/ml/{repo}@{}", t.reg.host, t.image.manifest_digest))
                        .replace("HOST/REPO:TAG", &format!("{}/ml/{repo}:main", t.reg.host))
                        .replace("IDENTITY", &sigstore::identity())
                };
                let args: Vec<String> = words[1..].iter().map(fill).collect();
                let mut cmd = match words[0].as_str() {
                    "publish" => {
                        let mut c = publish(work);
                        c.args(&args).arg("--insecure");
                        c
                    }
                    "cosign" => {
                        let mut c = t.cosign();
                        c.current_dir(work).arg(&args[0]).arg("--allow-http-registry").args(&args[1..]);
                        c
                    }
                    other => panic!("docs/signing.md: unknown program {other}"),
                };
                let out = run(cmd.envs(env.clone()));
                assert_eq!(out.status.code(), Some(0), "docs/signing.md: `{variant}` on {repo}:\n{}", out_text(&out));
                ran.push(format!("{variant} ({repo})"));
            }
        }
    }
    let count = |p: &str| ran.iter().filter(|r| r.contains(p)).count();
    assert!(count("cosign verify") >= 6 && count("publish verify") >= 12 && count("publish sign") == 4, "{ran:#?}");
    assert!(count("cosign verify-attestation") == 4 && count("--attestation") >= 6, "{ran:#?}");
}

/// A docker source's layers are compressed as they are pushed, so its digest is known only
/// then: what is signed is the manifest pushed, and cosign verifies it there.
#[test]
fn cosign_verifies_the_signature_of_a_docker_source_made_as_it_was_pushed() {
    let Some(t) = Setup::new(152) else { return };
    support::docker::save_legacy(&t.work.path().join("app.tar"), 152, &[40_000]);
    let ours = t.key_pair("ours");
    let key = ours.join("cosign.key").display().to_string();
    Policy::new()
        .local("home", &t.reg.host)
        .image(json!({"name": "app", "source": "docker-archive:app.tar", "tags": ["main"], "visibility": "public"}))
        .set("signing", json!({"key": key, "format": "legacy"}))
        .write(t.work.path());
    let out = run(publish(t.work.path()).args(["run", "-o", "json"]).env("COSIGN_PASSWORD", KEY_PASSWORD));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let digest = serde_json::from_str::<Value>(&stdout).unwrap()["images"][0]["digest"].as_str().unwrap().to_string();
    assert_eq!(support::image::sha(&t.reg.inspect(&format!("{}/ml/app:main", t.reg.host), true).stdout), digest);
    let out = t
        .cosign()
        .args(["verify", "--allow-http-registry", "--insecure-ignore-tlog", "--key"])
        .arg(ours.join("cosign.pub"))
        .arg(format!("{}/ml/app@{digest}", t.reg.host))
        .output()
        .unwrap();
    assert!(out.status.success(), "cosign refused the docker source's signature:\n{}", out_text(&out));
}

/// Every signature says where the image came from (GitHub's variables): cosign checks the
/// legacy one's with `-a` and accepts the bundle whose statement carries them; `publish verify`
/// prints them for both; a re-run of the same image (another attempt) adds no second signature.
#[test]
fn signatures_carry_the_images_source_and_cosign_checks_it() {
    let Some(t) = Setup::new(153) else { return };
    let s = sigstore::start();
    let ours = t.key_pair("ours");
    let key = ours.join("cosign.key").display().to_string();
    let sha = "0123456789abcdef0123456789abcdef01234567";
    let env = |attempt: &str| -> Vec<(&str, String)> {
        [("GITHUB_SHA", sha), ("GITHUB_REF", "refs/heads/main"), ("GITHUB_REPOSITORY", "acme/app")]
            .into_iter()
            .chain([("GITHUB_RUN_ID", "4242"), ("GITHUB_RUN_ATTEMPT", attempt)])
            .map(|(k, v)| (k, v.to_string()))
            .collect()
    };
    t.publish("both", json!({"key": key, "format": "both"}), &env("1"));
    let cosign = |extra: &[&str]| {
        let out = t
            .cosign()
            .args(["verify", "--allow-http-registry", "--insecure-ignore-tlog", "--key"])
            .arg(ours.join("cosign.pub"))
            .args(extra)
            .arg(t.reference("both"))
            .output()
            .unwrap();
        (out.status.success(), out_text(&out))
    };
    let root = s.trusted_root().display().to_string();
    let (ok, out) = cosign(&["--new-bundle-format", "--trusted-root", &root]);
    assert!(ok, "cosign refused a bundle whose statement carries annotations: {out}");
    t.publish("legacy", json!({"key": key, "format": "legacy"}), &env("1"));
    let legacy = |extra: &[&str]| {
        let out = t
            .cosign()
            .args(["verify", "--allow-http-registry", "--insecure-ignore-tlog", "--key"])
            .arg(ours.join("cosign.pub"))
            .args(extra)
            .arg(t.reference("legacy"))
            .output()
            .unwrap();
        (out.status.success(), out_text(&out))
    };
    let (ok, out) = legacy(&["-a", &format!("git.sha={sha}"), "-a", "github.run_id=4242"]);
    assert!(ok, "cosign -a refused publish's annotations: {out}");
    let (ok, out) = legacy(&["-a", "git.sha=ffffffffffffffffffffffffffffffffffffffff"]);
    assert!(!ok, "cosign -a accepted another commit: {out}");

    // Attempt 2 of the same run: the signatures already there stay the only ones.
    t.publish("both", json!({"key": key, "format": "both"}), &env("2"));
    let out = run(publish(t.work.path())
        .args(["verify", &t.reference("both"), "--insecure", "--key"])
        .arg(ours.join("cosign.pub")));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("legacy (.sig): 1 valid") && stdout.contains("bundle (referrer): 1 valid"), "{stdout}");
    let line = format!(
        "annotations: git.ref=refs/heads/main, git.sha={sha}, github.repository=acme/app, github.run_attempt=1, github.run_id=4242"
    );
    assert_eq!(stdout.matches(&line).count(), 2, "{stdout}");
}
