//! Signers at the same time on one image. Distribution 2.8 has no referrers API and no
//! conditional writes, so every signer reads, changes and writes back the `.sig` manifest and
//! the referrers fallback index: before each write was checked, 8 signers started at once left
//! 1 signature of 8 in each. Now 8 and 32 signers, each with its own key, in both formats: every
//! signature is there afterwards (read back with skopeo) and the real cosign verifies each key's.

use std::path::Path;
use std::process::Stdio;

use crate::cosign::{KEY_PASSWORD, cosign, cosign_cmd, out_text};
use crate::support::image::write_layout;
use crate::support::{Registry, RegistryOptions, publish, run, sigstore, text};
use serde_json::Value;

/// `n` signers with their own keys (in `dirs`) sign `by_digest` at once in `format`; returns how
/// many found the list rewritten by another signer and merged again.
fn sign_at_once(dirs: &[std::path::PathBuf], by_digest: &str, format: &str) -> usize {
    let children: Vec<_> = dirs
        .iter()
        .map(|dir| {
            publish(dir)
                .args(["sign", by_digest, "--key", "cosign.key", "--insecure", "--format", format])
                .env("COSIGN_PASSWORD", KEY_PASSWORD)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut merged_again = 0;
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", out_text(&out));
        merged_again += usize::from(String::from_utf8_lossy(&out.stderr).contains("merging again"));
    }
    merged_again
}

fn signers_at_once(n: usize, seed: u64) {
    let Some(cosign) = cosign() else { return };
    let reg = Registry::start(RegistryOptions::default());
    let s = sigstore::start();
    let work = tempfile::tempdir().unwrap();
    let image = write_layout(&work.path().join("img"), seed, &[10_000], "linux", "amd64", "latest");
    let dirs: Vec<_> = (0..n).map(|i| work.path().join(format!("k{i}"))).collect();
    for dir in &dirs {
        std::fs::create_dir_all(dir).unwrap();
        let out = run(publish(dir).arg("generate-key-pair").env("COSIGN_PASSWORD", KEY_PASSWORD));
        assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    }
    let home = work.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let root = s.trusted_root().display().to_string();
    // Both formats in one repository; the legacy format alone in another, for cosign, which
    // verifies the bundles when there are any.
    for (repo, format) in [("both", "both"), ("legacy", "legacy")] {
        let dst = format!("{}/ml/{repo}", reg.host);
        let out = run(publish(work.path()).args(["push", "oci:img", &format!("docker://{dst}:v1"), "--insecure"]));
        assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
        let by_digest = format!("{dst}@{}", image.manifest_digest);
        let merged_again = sign_at_once(&dirs, &by_digest, format);
        println!("{n} signers at once ({format}): {merged_again} found the list rewritten and merged again");
        // 32 at once on two cores do overlap (25 or 26 of them, in every run measured): the
        // merge was exercised, not only a queue of signers one after another.
        if n >= 32 {
            assert!(merged_again > 0, "no signer found the list rewritten: nothing was tested");
        }

        let hex = &image.manifest_digest[7..];
        let raw = |tag: &str| -> Value {
            let out = reg.inspect(&format!("{dst}:{tag}"), true);
            assert!(out.status.success(), "{}", out_text(&out));
            serde_json::from_slice(&out.stdout).unwrap()
        };
        assert_eq!(raw(&format!("sha256-{hex}.sig"))["layers"].as_array().unwrap().len(), n, "legacy signatures");
        if format == "both" {
            assert_eq!(raw(&format!("sha256-{hex}"))["manifests"].as_array().unwrap().len(), n, "bundles");
        }
        let extra: Vec<&str> =
            if format == "both" { vec!["--new-bundle-format", "--trusted-root", &root] } else { Vec::new() };
        for dir in &dirs {
            let out = cosign_cmd(&cosign, &home)
                .args(["verify", "--allow-http-registry", "--insecure-ignore-tlog", "--key"])
                .arg(dir.join("cosign.pub"))
                .args(&extra)
                .arg(&by_digest)
                .output()
                .unwrap();
            assert!(out.status.success(), "{format}, {}: {}", dir.display(), out_text(&out));
        }
        assert_verifies_with_publish(work.path(), &dst, format, &dirs[n - 1].join("cosign.pub"));
    }
}

/// `publish verify` finds the last signer's signature in `format`.
fn assert_verifies_with_publish(work: &Path, dst: &str, format: &str, public: &Path) {
    let out = run(publish(work)
        .args(["verify", &format!("{dst}:v1"), "--format", format, "--insecure", "--key"])
        .arg(public));
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
}

#[test]
fn eight_signers_at_once_keep_all_eight_signatures() {
    signers_at_once(8, 241);
}

#[test]
fn thirty_two_signers_at_once_keep_all_thirty_two_signatures() {
    signers_at_once(32, 242);
}
