//! The plan (`publish plan`, `publish --dry-run`): what users see, pinned by snapshots; the
//! shipped example works offline; the committed JSON Schema matches the code.

use crate::support::image::write_layout;
use crate::support::policy::Policy;
use crate::support::{publish, run, text};
use serde_json::json;

fn plan_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_layout(&dir.path().join("build/app"), 11, &[120_000, 3_400_000], "linux", "amd64", "latest");
    Policy::new()
        .local("home", "127.0.0.1:1")
        .registry("github", json!({"kind": "ghcr", "repository": "ghcr.io/my-org"}))
        .set("template_env", json!(["BUILD_NUMBER"]))
        .image(json!({"name": "app", "source": "oci:build/app", "tags": ["v1", "build-{{ env.BUILD_NUMBER }}"], "visibility": "public"}))
        .write(dir.path());
    dir
}

#[test]
fn dry_run_prints_the_plan_as_text() {
    let dir = plan_dir();
    let out = run(publish(dir.path()).arg("--dry-run").env("BUILD_NUMBER", "42"));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    insta::assert_snapshot!(stdout);
}

#[test]
fn plan_prints_one_json_document() {
    let dir = plan_dir();
    let out = run(publish(dir.path()).args(["plan", "--output", "json"]).env("BUILD_NUMBER", "42"));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    insta::assert_json_snapshot!(json);
}

#[test]
fn shipped_example_dry_run_works_offline() {
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let out = run(publish(&examples).arg("--dry-run").env("GITHUB_SHA", "0123456789abcdef0123456789abcdef01234567"));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stdout.contains("image hello") && stdout.contains("sha-0123456"), "{stdout}");
}

#[test]
fn committed_schema_matches_the_code() {
    let out = run(publish(std::path::Path::new(env!("CARGO_MANIFEST_DIR"))).arg("schema"));
    let (stdout, _) = text(&out);
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/policy.schema.json")).unwrap();
    assert!(
        stdout == committed,
        "docs/policy.schema.json is stale: run `cargo run -- schema > docs/policy.schema.json`"
    );
}
