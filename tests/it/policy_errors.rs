//! Policy mistakes: each gives exit 2 and `file:line:col: field: message` plus a hint, before
//! any network call. The messages are pinned with snapshots.

use std::path::Path;

use crate::support::image::write_layout;
use crate::support::{publish, run, text};

const REGISTRIES: &str =
    "version: 1\nregistries:\n  home:\n    kind: registry\n    repository: 127.0.0.1:1/ml\n    insecure: true\n";

/// Runs `publish check` on `yaml` in a fresh directory (with an amd64 image at build/app and an
/// arm64-only one at build/arm) and returns the exit code and stderr.
fn check(yaml: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    prepare(dir.path());
    std::fs::write(dir.path().join("publish.yaml"), yaml).unwrap();
    let out = run(publish(dir.path()).arg("check"));
    let (stdout, stderr) = text(&out);
    assert!(stdout.is_empty(), "errors go to stderr, not stdout: {stdout}");
    (out.status.code(), stderr)
}

fn prepare(dir: &Path) {
    write_layout(&dir.join("build/app"), 1, &[100], "linux", "amd64", "latest");
    write_layout(&dir.join("build/arm"), 2, &[100], "linux", "arm64", "latest");
}

#[test]
fn typo_in_a_key_suggests_the_closest_one() {
    let (code, stderr) =
        check(&format!("{REGISTRIES}images:\n  - name: app\n    source: oci:build/app\n    tgas: [v1]\n"));
    assert_eq!(code, Some(2));
    insta::assert_snapshot!(stderr);
}

#[test]
fn wrong_type_names_the_field_and_what_was_expected() {
    let (code, stderr) =
        check(&format!("{REGISTRIES}images:\n  - name: app\n    source: oci:build/app\n    tags: 5\n"));
    assert_eq!(code, Some(2));
    insta::assert_snapshot!(stderr);
}

#[test]
fn wrong_boolean_is_located() {
    let yaml = "version: 1\nregistries:\n  home:\n    kind: registry\n    repository: 127.0.0.1:1/ml\n    insecure: maybe\nimages: []\n";
    let (code, stderr) = check(yaml);
    assert_eq!(code, Some(2));
    insta::assert_snapshot!(stderr);
}

#[test]
fn unknown_registry_kind_lists_the_kinds() {
    let (code, stderr) =
        check("version: 1\nregistries:\n  home:\n    kind: gchr\n    repository: ghcr.io/o\nimages: []\n");
    assert_eq!(code, Some(2));
    insta::assert_snapshot!(stderr);
}

#[test]
fn missing_image_source_points_at_the_source_field() {
    let (code, stderr) = check(&format!("{REGISTRIES}images:\n  - name: app\n    source: oci:build/missing\n"));
    assert_eq!(code, Some(2));
    insta::assert_snapshot!(stderr);
}

#[test]
fn arm64_only_image_fails_when_amd64_is_required() {
    let (code, stderr) = check(&format!(
        "{REGISTRIES}images:\n  - name: app\n    source: oci:build/arm\n    platforms: [linux/amd64]\n"
    ));
    assert_eq!(code, Some(2));
    insta::assert_snapshot!(stderr);
}

#[test]
fn unknown_registry_id_suggests_a_defined_one() {
    let (code, stderr) =
        check(&format!("{REGISTRIES}images:\n  - name: app\n    source: oci:build/app\n    registries: [hom]\n"));
    assert_eq!(code, Some(2));
    insta::assert_snapshot!(stderr);
}

#[test]
fn insecure_is_refused_for_a_remote_host() {
    let yaml = "version: 1\nregistries:\n  far:\n    kind: registry\n    repository: registry.example.com/ml\n    insecure: true\nimages: []\n";
    let (code, stderr) = check(yaml);
    assert_eq!(code, Some(2));
    insta::assert_snapshot!(stderr);
}

#[test]
fn several_mistakes_are_all_reported() {
    let (code, stderr) = check(&format!(
        "{REGISTRIES}images:\n  - name: App\n    source: oci:build/app\n    tags: [\"v1 beta\", \"{{{{ git.nope }}}}\"]\n    platforms: [linux]\n"
    ));
    assert_eq!(code, Some(2));
    insta::assert_snapshot!(stderr);
}

#[test]
fn a_valid_policy_checks_clean() {
    let dir = tempfile::tempdir().unwrap();
    prepare(dir.path());
    std::fs::write(
        dir.path().join("publish.yaml"),
        format!("{REGISTRIES}images:\n  - name: app\n    source: oci:build/app\n"),
    )
    .unwrap();
    let out = run(publish(dir.path()).arg("check"));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(stdout, "publish.yaml: ok (1 images)\n");
}

#[test]
fn missing_policy_file_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(publish(dir.path()).args(["plan", "--policy", "nope.yaml"]));
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.starts_with("nope.yaml:1:1: .: cannot read the policy file"), "{stderr}");
}

#[test]
fn transfer_settings_are_checked() {
    let (code, stderr) =
        check(&format!("{REGISTRIES}transfer:\n  attempts: 0\n  concurrency: 2\n  read_timeout: 60\nimages: []\n"));
    assert_eq!(code, Some(2));
    assert_eq!(stderr.trim(), "publish.yaml:8:13: transfer.attempts: must be 1 or more");
    let (code, stderr) = check(&format!("{REGISTRIES}transfer:\n  concurency: 2\nimages: []\n"));
    assert_eq!(code, Some(2));
    assert!(stderr.contains("did you mean `concurrency`?"), "{stderr}");
}

/// Outside a git checkout, `git.*` comes from GitHub's variables; without them the error says
/// why and what to do, located at the tag.
#[test]
fn git_values_outside_a_checkout_come_from_github_variables_or_say_why_not() {
    let dir = tempfile::tempdir().unwrap();
    prepare(dir.path());
    let yaml = format!(
        "{REGISTRIES}images:\n  - name: app\n    source: oci:build/app\n    tags: [\"{{{{ git.short_sha }}}}\", \"{{{{ git.branch }}}}\"]\n"
    );
    std::fs::write(dir.path().join("publish.yaml"), yaml).unwrap();
    let check = |env: &[(&str, &str)]| {
        let mut cmd = publish(dir.path());
        cmd.arg("check").env("GIT_CEILING_DIRECTORIES", dir.path().parent().unwrap());
        for v in ["GITHUB_SHA", "GITHUB_REF_NAME", "GITHUB_REF_TYPE"] {
            cmd.env_remove(v);
        }
        cmd.envs(env.iter().copied());
        let out = run(&mut cmd);
        (out.status.code(), text(&out).1)
    };
    let (code, stderr) = check(&[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("publish.yaml:10:12: images[0].tags[0]"), "located at the tag: {stderr}");
    assert!(stderr.contains("not a git checkout and GITHUB_SHA is not set"), "{stderr}");
    let (code, stderr) =
        check(&[("GITHUB_SHA", "0123456789abcdef0123456789abcdef01234567"), ("GITHUB_REF_NAME", "main")]);
    assert_eq!(code, Some(0), "{stderr}");
}

/// An unknown tier fails where it is written, even when that registry is no image's candidate.
#[test]
fn an_unknown_tier_fails_even_on_a_registry_no_image_uses() {
    let (code, stderr) = check(&format!(
        "{REGISTRIES}  spare:\n    kind: ghcr\n    repository: ghcr.io/octo\n    tier: platinum\nimages:\n  - name: app\n    source: oci:build/app\n    tags: [v1]\n    registries: [home]\n"
    ));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("publish.yaml:10:11: registries.spare.tier: ghcr has no tier \"platinum\""), "{stderr}");
}

#[test]
fn artifact_registry_repositories_are_regional_with_project_and_repository() {
    let image = "images:\n  - name: app\n    source: oci:build/app\n    tags: [v1]\n    registries: [gar]\n";
    let (code, stderr) =
        check(&format!("version: 1\nregistries:\n  gar:\n    kind: gar\n    repository: gcr.io/my-project\n{image}"));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "registries.gar.repository: an Artifact Registry repository lives at REGION-docker.pkg.dev, not gcr.io"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("gar needs the project and the repository after the host"), "{stderr}");
    let dir = tempfile::tempdir().unwrap();
    prepare(dir.path());
    std::fs::write(
        dir.path().join("publish.yaml"),
        format!("version: 1\nregistries:\n  gar:\n    kind: gar\n    repository: europe-west4-docker.pkg.dev/my-project/images\n    credentials: {{username: oauth2accesstoken, password_env: GAR_TOKEN}}\n{image}"),
    )
    .unwrap();
    let out = run(publish(dir.path()).arg("check"));
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
}
