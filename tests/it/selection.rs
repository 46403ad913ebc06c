//! Registry selection as users see it: the plan's candidates table (text and JSON, pinned by
//! snapshots), the no-fit error, the Actions matrix and `--only`, and a self-hosted registry's
//! usage measured against the real registry.

use crate::support;

use crate::support::image::write_layout;
use crate::support::{Registry, RegistryOptions, publish, run, text};
use serde_json::Value;

const CANDIDATES: &str = "version: 1
upload_rate: 10MB
registries:
  ghcr:
    kind: ghcr
    repository: ghcr.io/my-org
  ecr:
    kind: ecr-public
    repository: public.ecr.aws/my-alias
    used: {storage: 10GB, transfer: 0}
  hub:
    kind: dockerhub
    repository: docker.io/myuser
    used: {private_repositories: 1}
  home:
    kind: registry
    repository: 127.0.0.1:1/ml
    insecure: true
    limits: {storage: 500GB}
    used: {storage: 100GB}
";

fn plan_with(images: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    write_layout(&dir.path().join("build/app"), 21, &[1_200_000, 300_000], "linux", "amd64", "latest");
    std::fs::write(dir.path().join("publish.yaml"), format!("{CANDIDATES}{images}")).unwrap();
    let out = run(publish(dir.path()).args(args));
    let (stdout, stderr) = text(&out);
    (out.status.code(), stdout, stderr)
}

const PRIVATE_IMAGE: &str = "images:
  - name: app
    source: oci:build/app
    visibility: private
    pulls_per_month: 3
";

#[test]
fn candidates_table_as_text() {
    let (code, stdout, stderr) = plan_with(PRIVATE_IMAGE, &["plan"]);
    assert_eq!(code, Some(0), "{stderr}");
    insta::assert_snapshot!(stdout);
}

#[test]
fn candidates_as_json() {
    let (code, stdout, stderr) = plan_with(PRIVATE_IMAGE, &["plan", "-o", "json"]);
    assert_eq!(code, Some(0), "{stderr}");
    let json: Value = serde_json::from_str(&stdout).unwrap();
    // GHCR's usage is unknown, so the self-hosted registry, whose margin is known, wins at equal cost.
    assert_eq!(json["images"][0]["selected"], serde_json::json!(["home"]));
    let verdicts: Vec<&str> =
        json["images"][0]["candidates"].as_array().unwrap().iter().map(|c| c["verdict"].as_str().unwrap()).collect();
    assert_eq!(verdicts, ["eligible", "rejected", "rejected", "selected"]);
    insta::assert_json_snapshot!(json["images"][0]["candidates"]);
}

#[test]
fn no_registry_fits_is_exit_2_with_every_reason_and_fix() {
    let images =
        "images:\n  - name: app\n    source: oci:build/app\n    visibility: private\n    registries: [ecr, hub]\n";
    let (code, stdout, stderr) = plan_with(images, &["plan"]);
    assert_eq!(code, Some(2), "{stdout}");
    insta::assert_snapshot!(stderr);
}

#[test]
fn matrix_and_only_fan_out_per_image_and_registry() {
    let images = "images:\n  - name: app\n    source: oci:build/app\n    visibility: public\n    publish_to: all\n    registries: [ghcr, home]\n";
    let (code, stdout, stderr) = plan_with(images, &["plan", "--matrix"]);
    assert_eq!(code, Some(0), "{stderr}");
    let json: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"include": [
            {"image": "app", "registry": "ghcr", "only": "app@ghcr"},
            {"image": "app", "registry": "home", "only": "app@home"}
        ]})
    );
    let (code, _, stderr) = plan_with(images, &["run", "--only", "app@nowhere"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("--only app@nowhere matches nothing in the plan; entries: app@ghcr, app@home"), "{stderr}");
}

#[test]
fn self_hosted_usage_is_measured_with_shared_layers_counted_once() {
    let reg = Registry::start(RegistryOptions { htpasswd: true, ..Default::default() });
    let work = tempfile::tempdir().unwrap();
    // Two images sharing their first layer (same seed and size → same bytes).
    let a = write_layout(&work.path().join("a"), 30, &[400_000, 100_000], "linux", "amd64", "latest");
    let b_dir = work.path().join("b");
    let b = write_layout(&b_dir, 30, &[400_000, 100_000, 50_000], "linux", "arm64", "latest");
    assert_eq!(a.layer_digests[0], b.layer_digests[0]);
    for (src, name) in [("oci:a", "one"), ("oci:b", "two")] {
        let out = run(publish(work.path())
            .args([
                "push",
                src,
                &format!("docker://{}/ml/{name}:v1", reg.host),
                "--insecure",
                "--username",
                support::USER,
                "--password-env",
                "REG_PASSWORD",
            ])
            .env("REG_PASSWORD", support::PASSWORD));
        assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    }
    let sizes = |dir: &std::path::Path, digests: &[&String]| -> u64 {
        digests.iter().map(|d| std::fs::metadata(dir.join("blobs/sha256").join(&d[7..])).unwrap().len()).sum()
    };
    let unique: u64 = sizes(&a.dir, &[&a.config_digest, &a.layer_digests[0], &a.layer_digests[1]])
        + sizes(&b.dir, &[&b.config_digest, &b.layer_digests[2]]);
    assert_eq!(a.layer_digests[1], b.layer_digests[1], "the second layers are shared too");

    let yaml = format!(
        "version: 1\nregistries:\n  home:\n    kind: registry\n    repository: {}/ml\n    insecure: true\n    credentials: {{username: {}, password_env: REG_PASSWORD}}\n    limits: {{storage: 10MB}}\nimages:\n  - name: app\n    source: oci:a\n",
        reg.host,
        support::USER
    );
    std::fs::write(work.path().join("publish.yaml"), yaml).unwrap();
    let out =
        run(publish(work.path()).args(["plan", "--measure", "-o", "json"]).env("REG_PASSWORD", support::PASSWORD));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let json: Value = serde_json::from_str(&stdout).unwrap();
    let usage = &json["images"][0]["candidates"][0]["usage"];
    assert_eq!(usage["source"], "measured");
    assert_eq!(usage["storage"], unique, "shared layers must be counted once");
    let margin = &json["images"][0]["candidates"][0]["margins"][0];
    assert_eq!(margin["left"], 10_000_000 - unique - a.total_bytes);

    // Plain `publish plan` measures too, since the credentials are there; --no-measure and a
    // missing credential leave the usage unknown.
    let plan_usage = |args: &[&str], with_password: bool| -> Value {
        let mut cmd = publish(work.path());
        cmd.arg("plan").args(args).args(["-o", "json"]);
        if with_password {
            cmd.env("REG_PASSWORD", support::PASSWORD);
        } else {
            cmd.env_remove("REG_PASSWORD");
        }
        let out = run(&mut cmd);
        assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
        let json: Value = serde_json::from_str(&text(&out).0).unwrap();
        json["images"][0]["candidates"][0]["usage"].clone()
    };
    assert_eq!(plan_usage(&[], true)["source"], "measured");
    assert_eq!(plan_usage(&["--no-measure"], true)["source"], "unknown");
    assert_eq!(plan_usage(&[], false)["source"], "unknown");
}

#[test]
fn docker_hub_private_repositories_are_counted_through_the_hub_api() {
    use support::http::{Response, Server};
    let hub = Server::start(|req| match (req.method.as_str(), req.target.split('?').next().unwrap_or_default()) {
        ("POST", "/v2/auth/token") => {
            let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
            if body["identifier"] == "me" && body["secret"] == "dckr_pat_test" {
                Response::new(200).json(&serde_json::json!({"access_token": "hub-jwt"}))
            } else {
                Response::new(401).json(&serde_json::json!({"message": "incorrect"}))
            }
        }
        ("GET", "/v2/namespaces/me/repositories") if req.header("authorization") == Some("Bearer hub-jwt") => {
            Response::new(200).json(&serde_json::json!({"count": 2, "next": null, "results": [
                {"name": "secret-model", "is_private": true}, {"name": "public-demo", "is_private": false}
            ]}))
        }
        _ => Response::new(404),
    });
    let dir = tempfile::tempdir().unwrap();
    write_layout(&dir.path().join("build/app"), 22, &[1_000], "linux", "amd64", "latest");
    std::fs::write(
        dir.path().join("publish.yaml"),
        "version: 1\nregistries:\n  hub:\n    kind: dockerhub\n    repository: docker.io/me\n    credentials: {username: me, password_env: HUB_TOKEN}\n  home:\n    kind: registry\n    repository: 127.0.0.1:1/ml\n    insecure: true\nimages:\n  - name: app\n    source: oci:build/app\n    visibility: private\n",
    )
    .unwrap();
    let out = run(publish(dir.path())
        .args(["plan", "--measure", "-o", "json"])
        .env("HUB_TOKEN", "dckr_pat_test")
        .env("DOCKERHUB_API_URL", format!("http://127.0.0.1:{}", hub.port)));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stdout.contains("dckr_pat_test") && !stderr.contains("dckr_pat_test"));
    let json: Value = serde_json::from_str(&stdout).unwrap();
    let hub_verdict = &json["images"][0]["candidates"][0];
    assert_eq!(hub_verdict["usage"]["private_repositories"], 1);
    assert_eq!(hub_verdict["usage"]["source"], "measured");
    assert_eq!(hub_verdict["verdict"], "rejected");
    assert_eq!(json["images"][0]["selected"], serde_json::json!(["home"]));
}
