//! RunPod templates against a local stand-in of RunPod's v2 API (tests/support/runpod.rs) and
//! a real registry: create, then a no-op, then one update when the image changes; credentials
//! for private images; the dry-run diff; rendering and its errors.

use crate::support;

use std::path::Path;

use crate::support::image::write_layout;
use crate::support::runpod::{API_KEY, FakeRunPod};
use crate::support::{Registry, RegistryOptions, publish, run, run_json, text};
use serde_json::{Value, json};

const SHA: &str = "0123456789abcdef0123456789abcdef01234567";
const PULL_PASSWORD: &str = "pull-token-77aa88bb99cc";

fn write_policy(dir: &Path, host: &str, visibility: &str, template: &str) {
    let yaml = format!(
        "version: 1
registries:
  home:
    kind: registry
    repository: {host}/ml
    insecure: true
    pull_credentials: {{username: puller, password_env: PULL_PASSWORD}}
images:
  - name: app
    source: oci:img
    tags: [main]
    visibility: {visibility}
runpod:
  vars: {{model: llama-3-8b}}
  templates:
{template}"
    );
    std::fs::write(dir.join("publish.yaml"), yaml).unwrap();
}

const INLINE: &str = "    - name: app-main
      image: app
      endpoints: [ep1]
      body:
        disk: 20
        ports: [8888/http, 22/tcp]
        serverless: true
        env: {MODEL: \"{{ vars.model }}\", COMMIT: \"{{ git.short_sha }}\", IMAGE: \"{{ image.ref }}\"}
";

fn publish_with(dir: &Path, rp: &FakeRunPod) -> std::process::Command {
    let mut cmd = publish(dir);
    cmd.env("RUNPOD_API_KEY", API_KEY)
        .env("RUNPOD_API_URL", rp.url())
        .env("GITHUB_SHA", SHA)
        .env("PULL_PASSWORD", PULL_PASSWORD);
    cmd
}

#[test]
fn creates_then_does_nothing_then_updates_only_the_image() {
    let reg = Registry::start(RegistryOptions::default());
    let rp = support::runpod::start();
    rp.add_endpoint("ep1", "old/image:1");
    let work = tempfile::tempdir().unwrap();
    let first = write_layout(&work.path().join("img"), 40, &[5_000], "linux", "amd64", "latest");
    write_policy(work.path(), &reg.host, "public", INLINE);

    let (code, json, stderr) = run_json(publish_with(work.path(), &rp).args(["run", "-o", "json"]));
    assert_eq!(code, Some(0), "{json}\n{stderr}");
    assert_eq!(json["runpod"][0]["sync"]["action"], "created");
    let pinned = format!("{}/ml/app:main@{}", reg.host, first.manifest_digest);
    {
        let s = rp.state.lock().unwrap();
        let t = &s.templates[0];
        assert_eq!(t["name"], "app-main");
        assert_eq!(t["image"], pinned);
        assert_eq!(
            t["env"],
            json!({"MODEL": "llama-3-8b", "COMMIT": "0123456", "IMAGE": format!("{}/ml/app:main", reg.host)})
        );
        assert_eq!(t["registry"], Value::Null, "a public image needs no credential");
        assert_eq!(s.endpoints["ep1"]["image"], pinned, "the endpoint follows the image");
    }
    let writes = rp.writes().len();
    assert_eq!(writes, 2, "one template created, one endpoint moved: {:?}", rp.writes());

    let (code, json, _) = run_json(publish_with(work.path(), &rp).args(["run", "-o", "json"]));
    assert_eq!(code, Some(0));
    assert_eq!(json["runpod"][0]["sync"]["action"], "unchanged");
    assert_eq!(rp.writes().len(), writes, "a second run must not write to RunPod");

    let second = write_layout(&work.path().join("img"), 41, &[6_000], "linux", "amd64", "latest");
    let (code, json, _) = run_json(publish_with(work.path(), &rp).args(["run", "-o", "json"]));
    assert_eq!(code, Some(0));
    assert_eq!(json["runpod"][0]["sync"]["action"], "updated");
    let new_writes: Vec<_> = rp.writes().into_iter().skip(writes).collect();
    let patches: Vec<_> = new_writes.iter().filter(|r| r.target.starts_with("/v2/templates/")).collect();
    assert_eq!(patches.len(), 1, "{new_writes:?}");
    assert_eq!(patches[0].method, "PATCH");
    let body: Value = serde_json::from_slice(&patches[0].body).unwrap();
    assert_eq!(body, json!({"image": format!("{}/ml/app:main@{}", reg.host, second.manifest_digest)}));
}

#[test]
fn private_image_gets_one_credential_referenced_by_the_template() {
    let (_reg, rp, work) = private_image_without_endpoints(42);
    for _ in 0..2 {
        let mut cmd = publish_with(work.path(), &rp);
        cmd.args(["run", "--debug"]).env("RUST_LOG", "trace");
        let out = run(&mut cmd);
        let (stdout, stderr) = text(&out);
        // The test registry lets anyone pull, so the private image is published but exposed:
        // exit 3 says so; the template still follows the image.
        assert_eq!(out.status.code(), Some(3), "{stdout}\n{stderr}");
        assert!(stdout.contains("PULLABLE BY ANYONE"), "{stdout}");
        for secret in [PULL_PASSWORD, API_KEY] {
            assert!(!stdout.contains(secret) && !stderr.contains(secret), "a secret leaked");
        }
    }
    let s = rp.state.lock().unwrap();
    assert_eq!(s.registries.len(), 1, "the credential is created once");
    let (id, name, user, password) = &s.registries[0];
    assert_eq!((user.as_str(), password.as_str()), ("puller", PULL_PASSWORD));
    assert!(name.starts_with(&credential_prefix("home", "ml/app")), "{name}");
    assert_eq!(s.templates[0]["registry"], json!(id));
    let posts = rp.writes().into_iter().filter(|r| r.target == "/v2/registries").count();
    assert_eq!(posts, 1);
}

#[test]
fn template_is_skipped_when_its_image_failed_to_publish() {
    let rp = support::runpod::start();
    let work = tempfile::tempdir().unwrap();
    write_layout(&work.path().join("img"), 43, &[5_000], "linux", "amd64", "latest");
    write_policy(work.path(), &format!("127.0.0.1:{}", support::free_port()), "public", INLINE);
    let (code, json, _) = run_json(publish_with(work.path(), &rp).args(["run", "-o", "json"]));
    assert_eq!(code, Some(1));
    assert_eq!(json["runpod"][0]["status"], "skipped");
    assert!(rp.writes().is_empty() && rp.server.requests().is_empty(), "RunPod must not be touched");
}

#[test]
fn dry_run_sync_prints_a_field_by_field_diff_and_writes_nothing() {
    let rp = support::runpod::start();
    let reg = Registry::start(RegistryOptions::default());
    let work = tempfile::tempdir().unwrap();
    write_layout(&work.path().join("img"), 44, &[5_000], "linux", "amd64", "latest");
    write_policy(work.path(), &reg.host, "public", &INLINE.replace("      endpoints: [ep1]\n", ""));
    // The image is published (a sync never points a template at one that is not).
    publish_app_main(work.path(), &reg);
    rp.state.lock().unwrap().templates.push(
        json!({"id": "tpl9", "name": "app-main", "image": format!("{}/ml/app:main@sha256:", reg.host) + "0000000000000000000000000000000000000000000000000000000000000000",
               "disk": 10, "ports": ["8888/http", "22/tcp"], "env": {"MODEL": "old"}, "serverless": true, "registry": null,
               "args": "", "mounts": {}, "public": false, "category": "NVIDIA", "startSsh": true, "startJupyter": true, "allowedCudaVersions": []})
        .as_object()
        .cloned()
        .unwrap(),
    );
    let out = run(publish_with(work.path(), &rp).args(["runpod", "sync", "--dry-run"]));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(rp.writes().is_empty());
    insta::assert_snapshot!(stdout.replace(&reg.host, "127.0.0.1:5999"));
}

#[test]
fn render_prints_the_template_runpod_will_get() {
    let work = tempfile::tempdir().unwrap();
    write_layout(&work.path().join("img"), 45, &[5_000], "linux", "amd64", "latest");
    std::fs::create_dir_all(work.path().join("runpod")).unwrap();
    std::fs::write(
        work.path().join("runpod/app.json"),
        "{\n  \"disk\": 20,\n  \"args\": \"python -m serve --model {{ vars.model }}\",\n  \"env\": {\"IMAGE_DIGEST\": \"{{ image.digest }}\", \"BRANCH\": \"{{ git.sha[:7] }}\"},\n  \"mounts\": {\"persistent\": {\"size\": 50, \"path\": \"/workspace\"}},\n  \"allowedCudaVersions\": [\"12.4\"]\n}\n",
    )
    .unwrap();
    let out = render_file_template(work.path());
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    insta::assert_snapshot!(stdout);
}

#[test]
fn undefined_variable_in_a_template_file_names_file_line_and_variable() {
    let work = tempfile::tempdir().unwrap();
    write_layout(&work.path().join("img"), 46, &[5_000], "linux", "amd64", "latest");
    std::fs::create_dir_all(work.path().join("runpod")).unwrap();
    std::fs::write(work.path().join("runpod/app.json"), "{\n  \"disk\": 20,\n  \"args\": \"{{ vars.nope }}\"\n}\n")
        .unwrap();
    let out = render_file_template(work.path());
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2));
    insta::assert_snapshot!(stderr);
}

#[test]
fn invalid_fields_are_refused_before_any_call() {
    let rp = support::runpod::start();
    let work = tempfile::tempdir().unwrap();
    write_layout(&work.path().join("img"), 47, &[5_000], "linux", "amd64", "latest");
    let template = "    - name: app-main\n      image: app\n      body: {dsik: 20, ports: [\"8888\"], category: TPU, env: {N: 1}}\n";
    write_policy(work.path(), &format!("127.0.0.1:{}", support::free_port()), "public", template);
    let out = run(publish_with(work.path(), &rp).arg("run"));
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2));
    assert!(rp.server.requests().is_empty());
    insta::assert_snapshot!(stderr);
}

#[test]
fn throttling_is_retried_and_problem_details_are_shown() {
    let reg = Registry::start(RegistryOptions::default());
    let rp = support::runpod::start();
    rp.state.lock().unwrap().throttle = 2;
    let work = tempfile::tempdir().unwrap();
    write_layout(&work.path().join("img"), 48, &[5_000], "linux", "amd64", "latest");
    // ep1 does not exist on RunPod: its 404 problem document must reach the user.
    write_policy(work.path(), &reg.host, "public", INLINE);
    let (code, json, stderr) = run_json(publish_with(work.path(), &rp).args(["run", "-o", "json"]));
    assert_eq!(code, Some(3), "pushed, but the template's endpoint failed: {json}\n{stderr}");
    assert!(stderr.contains("retrying RunPod request"), "{stderr}");
    assert_eq!(json["runpod"][0]["status"], "failed");
    assert_eq!(json["runpod"][0]["reason"], "RunPod API: GET /v2/serverless/ep1: 404 Not Found: no such endpoint");
    assert_eq!(rp.state.lock().unwrap().templates.len(), 1, "the template itself was created after the retries");
}

/// docs/runpod.md's commands, run as shown on the page's own policy and template file (its
/// registry replaced by a real one on loopback with htpasswd, its serverless endpoint added to
/// the RunPod stand-in): before anything is published, then after `publish run`, when a sync
/// finds nothing to change.
#[test]
fn the_commands_in_docs_runpod_md_run_as_shown() {
    let reg = Registry::start(RegistryOptions { htpasswd: true, ..Default::default() });
    let rp = support::runpod::start();
    rp.add_endpoint("abc123xyz", "old/image:1");
    let work = tempfile::tempdir().unwrap();
    support::docs::runpod_example(work.path(), Some(&reg.host));
    let commands = support::docs::sh_commands("docs/runpod.md");
    assert_eq!(commands.len(), 4, "{commands:?}");
    let mut codes = Vec::new();
    for pass in ["before publishing", "after publish run"] {
        for (_, command) in &commands {
            for variant in support::docs::expand(command) {
                let words: Vec<&str> =
                    variant.split_whitespace().map(|w| if w == "NAME" { "comfyui-main" } else { w }).collect();
                assert_eq!(words[0], "publish", "{variant}");
                let out = run(publish_with(work.path(), &rp)
                    .args(&words[1..])
                    .env("REGISTRY_PUSH_TOKEN", support::PASSWORD)
                    .env("REGISTRY_PULL_TOKEN", PULL_PASSWORD));
                let (stdout, stderr) = text(&out);
                assert!(!stdout.contains(PULL_PASSWORD) && !stderr.contains(PULL_PASSWORD));
                codes.push((pass, variant.clone(), out.status.code(), format!("{stdout}{stderr}")));
            }
        }
    }
    let code =
        |pass: &str, v: &str| codes.iter().find(|c| c.0 == pass && c.1 == v).map(|c| (c.2, c.3.clone())).unwrap();
    // Rendering is offline and always works; `publish run` pushes and syncs.
    for pass in ["before publishing", "after publish run"] {
        for v in ["publish runpod render", "publish runpod render --template NAME", "publish run"] {
            let (c, out) = code(pass, v);
            assert_eq!(c, Some(0), "{pass}: {v}:\n{out}");
        }
    }
    // After the run, the template and the endpoint point at the image, and a sync (dry or
    // not) finds nothing to change.
    for v in ["publish runpod sync --dry-run", "publish runpod sync"] {
        let (c, out) = code("after publish run", v);
        assert_eq!(c, Some(0), "{v}:\n{out}");
    }
    // Before the image is published, a sync refuses to point the template at it.
    for v in ["publish runpod sync --dry-run", "publish runpod sync"] {
        let (c, out) = code("before publishing", v);
        assert_eq!(c, Some(1), "{v}:\n{out}");
        assert!(
            out.contains(&format!("error: template comfyui-main: {}/ml/comfyui@sha256:", reg.host))
                && out.contains("is not in registry home: publish the image first (publish run), then sync"),
            "{v}:\n{out}"
        );
    }
    let state = rp.state.lock().unwrap();
    let t = state.templates.iter().find(|t| t["name"] == "comfyui-main").expect("the template was created");
    let image = t["image"].as_str().unwrap();
    assert!(image.starts_with(&format!("{}/ml/comfyui:main@sha256:", reg.host)), "{image}");
    assert_eq!(state.endpoints["abc123xyz"]["image"].as_str(), Some(image));
    assert_eq!(state.templates.len(), 1);
}

/// The name prefix this tool gives the credentials of one registry and repository.
fn credential_prefix(registry: &str, repository: &str) -> String {
    use sha2::Digest as _;
    let clean: String =
        repository.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    let h = hex::encode(sha2::Sha256::digest(format!("{registry}/{repository}")));
    format!("publish-{registry}-{clean}-{}-", &h[..8])
}

/// A replaced credential is deleted only when it is exactly one this tool made for this
/// registry and repository and no template refers to it: not `ml/app/x`'s (whose cleaned name
/// starts the same), not one named the old way (`ml_app` and `ml-app` cleaned to the same
/// name), not one another template pulls with.
#[test]
fn replacing_a_credential_never_deletes_another_repositorys_or_one_still_used() {
    let (_reg, rp, work) = private_image_without_endpoints(47);
    let ours = credential_prefix("home", "ml/app");
    let others = credential_prefix("home", "ml/app/x");
    assert!(others.starts_with("publish-home-ml-app-"), "{others}");
    {
        let mut s = rp.state.lock().unwrap();
        for (id, name) in [
            ("regold1", format!("{ours}aaaaaaaaaaaa")),
            ("regold2", format!("{ours}bbbbbbbbbbbb")),
            ("regx", format!("{others}cccccccccccc")),
            ("reglegacy", "publish-home-ml-app-dddddddddddd".to_string()),
        ] {
            s.registries.push((id.into(), name, "u".into(), "p".into()));
        }
        let other = json!({"id": "tplother", "name": "other", "image": "x/y:z", "registry": "regold2", "args": "", "disk": 10,
                           "mounts": {}, "ports": [], "env": {}, "serverless": false, "public": false, "category": "NVIDIA",
                           "startSsh": true, "startJupyter": true, "allowedCudaVersions": []});
        s.templates.push(other.as_object().cloned().unwrap());
    }
    let out = run(publish_with(work.path(), &rp).arg("run"));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(3), "{stdout}\n{stderr}");
    let s = rp.state.lock().unwrap();
    let ids: Vec<&str> = s.registries.iter().map(|r| r.0.as_str()).collect();
    assert!(!ids.contains(&"regold1"), "the unused earlier credential of ml/app is deleted: {ids:?}");
    for kept in ["regold2", "regx", "reglegacy"] {
        assert!(ids.contains(&kept), "{kept} was deleted: {ids:?}\n{stdout}");
    }
    let current = s.registries.iter().find(|r| !["regold2", "regx", "reglegacy"].contains(&r.0.as_str())).unwrap();
    assert!(current.1.starts_with(&ours), "{}", current.1);
    assert!(stdout.contains(&format!("replaced credential {ours}aaaaaaaaaaaa: deleted")), "{stdout}");
    assert!(
        stdout.contains(&format!("replaced credential {ours}bbbbbbbbbbbb: kept (template other still refers to it)")),
        "{stdout}"
    );
}

/// A public image the registry will not serve anonymously (htpasswd: every pull needs a
/// login, as a new GHCR package starts private) is pushed, but the template keeps its image:
/// RunPod pulls public images without credentials. Exit 3, and the message says the fix.
#[test]
fn a_public_image_nobody_can_pull_anonymously_does_not_move_the_template() {
    let reg = Registry::start(RegistryOptions { htpasswd: true, ..Default::default() });
    let rp = support::runpod::start();
    let work = tempfile::tempdir().unwrap();
    write_layout(&work.path().join("img"), 48, &[5_000], "linux", "amd64", "latest");
    let yaml = format!(
        "version: 1\nregistries:\n  home:\n    kind: registry\n    repository: {}/ml\n    insecure: true\n    credentials: {{username: {}, password_env: REG_PASSWORD}}\nimages:\n  - name: app\n    source: oci:img\n    tags: [main]\n    visibility: public\nrunpod:\n  templates:\n{}",
        reg.host,
        support::USER,
        INLINE.replace("      endpoints: [ep1]\n", "").replace("MODEL: \"{{ vars.model }}\", ", "")
    );
    std::fs::write(work.path().join("publish.yaml"), yaml).unwrap();
    let out = run(publish_with(work.path(), &rp).args(["run", "-o", "json"]).env("REG_PASSWORD", support::PASSWORD));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(3), "{stdout}\n{stderr}");
    let json: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["images"][0]["targets"][0]["status"], "pushed", "{json:#}");
    assert_eq!(json["runpod"][0]["status"], "skipped", "{json:#}");
    let reason = json["runpod"][0]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("cannot be pulled without credentials") && reason.contains("set visibility: private"),
        "{reason}"
    );
    assert!(rp.writes().is_empty(), "RunPod must not be written to: {:?}", rp.writes());
}

/// With signing in the policy, `runpod sync` moves a template only to an image signed with the
/// policy's key: pushed but unsigned → exit 3, the template untouched, and the message says
/// "pushed, not signed"; once signed, the template follows.
#[test]
fn runpod_sync_moves_templates_only_to_images_signed_with_the_policys_key() {
    let reg = Registry::start(RegistryOptions::default());
    let rp = support::runpod::start();
    let work = tempfile::tempdir().unwrap();
    let d = work.path();
    let image = write_layout(&d.join("img"), 49, &[5_000], "linux", "amd64", "latest");
    write_policy(d, &reg.host, "public", &INLINE.replace("      endpoints: [ep1]\n", ""));
    let policy = std::fs::read_to_string(d.join("publish.yaml")).unwrap() + "signing:\n  key: cosign.key\n";
    std::fs::write(d.join("publish.yaml"), policy).unwrap();
    let pw = ("COSIGN_PASSWORD", "sync-test");
    let out = run(publish(d).arg("generate-key-pair").env(pw.0, pw.1));
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    let dest = format!("{}/ml/app", reg.host);
    let out = run(publish(d).args(["push", "oci:img", &format!("docker://{dest}:main"), "--insecure"]));
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));

    let out = run(publish_with(d, &rp).args(["runpod", "sync"]).env(pw.0, pw.1));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(3), "{stdout}\n{stderr}");
    assert!(stderr.contains("is pushed, not signed as the policy's signing: says"), "{stderr}");
    assert!(rp.writes().is_empty(), "the template must not move: {:?}", rp.writes());

    let by_digest = format!("{dest}@{}", image.manifest_digest);
    let out = run(publish(d).args(["sign", &by_digest, "--key", "cosign.key", "--insecure"]).env(pw.0, pw.1));
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    let out = run(publish_with(d, &rp).args(["runpod", "sync"]).env(pw.0, pw.1));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let s = rp.state.lock().unwrap();
    assert_eq!(s.templates.len(), 1);
    assert_eq!(s.templates[0]["image"], json!(format!("{dest}:main@{}", image.manifest_digest)));
}

/// A RunPod API that answers every request 429 with a `Retry-After` of three years: sync gives
/// up at once (the wait cannot fit `transfer.request_timeout` × 2.5) and says how long it
/// waited and which setting bounds it.
#[test]
fn a_runpod_api_that_asks_to_wait_years_is_given_up_on_with_the_setting_named() {
    let reg = Registry::start(RegistryOptions::default());
    let api = support::http::Server::start(|_| {
        support::http::Response::new(429)
            .header("Retry-After", "99999999")
            .json(&json!({"title": "Too Many Requests", "status": 429, "detail": "slow down"}))
    });
    let work = tempfile::tempdir().unwrap();
    write_layout(&work.path().join("img"), 50, &[3_000], "linux", "amd64", "latest");
    write_policy(work.path(), &reg.host, "public", &INLINE.replace("      endpoints: [ep1]\n", ""));
    let yaml = std::fs::read_to_string(work.path().join("publish.yaml")).unwrap() + "transfer: {request_timeout: 2}\n";
    std::fs::write(work.path().join("publish.yaml"), yaml).unwrap();
    publish_app_main(work.path(), &reg);
    let started = std::time::Instant::now();
    let out = run(publish(work.path())
        .args(["runpod", "sync"])
        .env("RUNPOD_API_KEY", API_KEY)
        .env("RUNPOD_API_URL", format!("http://127.0.0.1:{}", api.port))
        .env("GITHUB_SHA", SHA));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("gave up after")
            && stderr.contains("transfer.request_timeout: 2 s per request, 5 s with retries"),
        "{stderr}"
    );
    assert!(stderr.contains("asked to wait 99999999 s"), "{stderr}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "{:?}", started.elapsed());
}

/// `publish runpod render` of the template `runpod/app.json` (file:), for image `app`.
fn render_file_template(dir: &Path) -> std::process::Output {
    write_policy(
        dir,
        "127.0.0.1:5999",
        "public",
        "    - name: app-file\n      image: app\n      file: runpod/app.json\n",
    );
    run(publish(dir).args(["runpod", "render"]).env("GITHUB_SHA", SHA))
}

/// A registry, the RunPod stand-in, and a private image (from `seed`) with the inline template
/// and no endpoint.
fn private_image_without_endpoints(seed: u64) -> (Registry, support::runpod::FakeRunPod, tempfile::TempDir) {
    let reg = Registry::start(RegistryOptions::default());
    let rp = support::runpod::start();
    let work = tempfile::tempdir().unwrap();
    write_layout(&work.path().join("img"), seed, &[5_000], "linux", "amd64", "latest");
    write_policy(work.path(), &reg.host, "private", &INLINE.replace("      endpoints: [ep1]\n", ""));
    (reg, rp, work)
}

/// `publish push` of `oci:img` to `ml/app:main` on `reg`, which must succeed.
fn publish_app_main(dir: &Path, reg: &Registry) {
    let out = run(publish(dir).args(["push", "oci:img", &format!("docker://{}/ml/app:main", reg.host), "--insecure"]));
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
}

/// A docker source's digest is known once its layers are compressed in the push: the plan says
/// so, the template is pinned to the digest pushed, and a later `runpod sync` finds the same
/// digest from the repository (nothing to change).
#[test]
fn a_docker_source_pins_the_template_to_the_digest_it_was_pushed_with() {
    let reg = Registry::start(RegistryOptions::default());
    let rp = support::runpod::start();
    rp.add_endpoint("ep1", "old/image:1");
    let work = tempfile::tempdir().unwrap();
    support::docker::save_legacy(&work.path().join("app.tar"), 48, &[30_000, 8_000]);
    write_policy(work.path(), &reg.host, "public", INLINE);
    let yaml = std::fs::read_to_string(work.path().join("publish.yaml")).unwrap();
    std::fs::write(work.path().join("publish.yaml"), yaml.replace("source: oci:img", "source: docker-archive:app.tar"))
        .unwrap();

    let out = run(publish_with(work.path(), &rp).args(["plan", "--no-measure"]));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stdout.contains("manifest   known once its layers are compressed, in the push"), "{stdout}");
    assert_eq!(stdout.matches("compressed (gzip) as it is sent").count(), 2, "{stdout}");

    // Offline, before any push: rendered with the digest of what was read, and said so.
    let out = run(publish_with(work.path(), &rp).args(["runpod", "render"]));
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("is a docker source whose manifest digest is known once it is pushed"), "{stderr}");

    let (code, json, stderr) = run_json(publish_with(work.path(), &rp).args(["run", "-o", "json"]));
    assert_eq!(code, Some(0), "{json}\n{stderr}");
    let digest = json["images"][0]["digest"].as_str().unwrap().to_string();
    assert_eq!(support::image::sha(&reg.inspect(&format!("{}/ml/app:main", reg.host), true).stdout), digest);
    let pinned = format!("{}/ml/app:main@{digest}", reg.host);
    {
        let s = rp.state.lock().unwrap();
        assert_eq!(s.templates[0]["image"], pinned);
        assert_eq!(s.endpoints["ep1"]["image"], pinned);
    }
    let writes = rp.writes().len();
    let (code, json, stderr) = run_json(publish_with(work.path(), &rp).args(["runpod", "sync", "-o", "json"]));
    assert_eq!(code, Some(0), "{json}\n{stderr}");
    assert_eq!(json[0]["action"], "unchanged", "{json}");
    assert_eq!(rp.writes().len(), writes);
}
