//! The plan is the program: `run` executes exactly what `plan` shows, `--only` picks entries
//! by id (never by position), `run --plan FILE` executes a saved plan after checking every
//! source still has the planned digest, and `--dry-run` writes nothing on any command. A
//! recording proxy in front of the real registry counts the writes; skopeo checks the result.

use crate::support;

use std::collections::BTreeSet;

use crate::support::http_faults;
use crate::support::image::{TestImage, write_layout};
use crate::support::policy::{Policy, credentials, local, with};
use crate::support::{Registry, RegistryOptions, publish, run, text};
use serde_json::{Value, json};

struct Setup {
    reg: Registry,
    proxy: http_faults::HttpFaults,
    work: tempfile::TempDir,
    first: TestImage,
    second: TestImage,
}

/// Two images on one registry, reached through the recording proxy.
fn setup(runpod: Option<Value>) -> Setup {
    let reg = Registry::start(RegistryOptions::default());
    let proxy = http_faults::start(reg.backend_port);
    let work = tempfile::tempdir().unwrap();
    let first = write_layout(&work.path().join("build/first"), 101, &[30_000, 4_000], "linux", "amd64", "latest");
    let second = write_layout(&work.path().join("build/second"), 202, &[50_000], "linux", "amd64", "latest");
    let home = json!({"pull_credentials": credentials("puller", "PULL_PASSWORD")});
    let mut policy = Policy::new()
        .registry("home", with(local(&format!("127.0.0.1:{}", proxy.port)), home))
        .image(json!({"name": "first", "source": "oci:build/first", "tags": ["v1", "stable"], "visibility": "public"}))
        .image(json!({"name": "second", "source": "oci:build/second", "tags": ["v1"], "visibility": "public"}));
    if let Some(runpod) = runpod {
        policy = policy.set("runpod", runpod);
    }
    policy.write(work.path());
    Setup { reg, proxy, work, first, second }
}

/// The manifest digest skopeo sees at `repository:tag` through the registry itself.
fn digest_at(reg: &Registry, repo_tag: &str) -> Option<String> {
    let out = reg.inspect(&format!("{}/{repo_tag}", reg.host), false);
    out.status.success().then(|| {
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["Digest"].as_str().unwrap().to_string()
    })
}

fn ok(cmd: &mut std::process::Command) -> String {
    let out = run(cmd);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    stdout
}

#[test]
fn run_only_pushes_the_named_image_with_its_own_bytes() {
    let s = setup(None);
    ok(publish(s.work.path()).args(["run", "--only", "second@home", "-o", "json"]));
    assert_eq!(digest_at(&s.reg, "ml/second:v1"), Some(s.second.manifest_digest.clone()));
    assert_eq!(digest_at(&s.reg, "ml/first:v1"), None, "first was not to be touched");
    let writes = s.proxy.writes();
    assert!(!writes.is_empty() && writes.iter().all(|w| w.contains("/v2/ml/second/")), "{writes:?}");
}

#[test]
fn a_saved_plan_runs_exactly_and_only_the_entry_named() {
    let s = setup(None);
    let plan = ok(publish(s.work.path()).args(["plan", "-o", "json"]));
    std::fs::write(s.work.path().join("plan.json"), &plan).unwrap();
    // The matrix names the plan's target ids.
    let matrix: Value = serde_json::from_str(&ok(publish(s.work.path()).args(["plan", "--matrix"]))).unwrap();
    let only: Vec<&str> = matrix["include"].as_array().unwrap().iter().map(|e| e["only"].as_str().unwrap()).collect();
    assert_eq!(only, ["first@home", "second@home"]);

    ok(publish(s.work.path()).args(["run", "--plan", "plan.json", "--only", "second@home"]));
    assert_eq!(digest_at(&s.reg, "ml/second:v1"), Some(s.second.manifest_digest.clone()));
    assert_eq!(digest_at(&s.reg, "ml/first:v1"), None);
    assert!(s.proxy.writes().iter().all(|w| w.contains("/v2/ml/second/")));
}

#[test]
fn run_plan_writes_exactly_what_the_plan_lists() {
    let s = setup(None);
    let plan_text = ok(publish(s.work.path()).args(["plan", "-o", "json"]));
    std::fs::write(s.work.path().join("plan.json"), &plan_text).unwrap();
    let plan: Value = serde_json::from_str(&plan_text).unwrap();
    assert!(s.proxy.seen.lock().unwrap().is_empty(), "planning contacted the registry");

    ok(publish(s.work.path()).args(["run", "--plan", "plan.json"]));
    let writes = s.proxy.writes();
    // Every manifest PUT is a planned tag, and every planned tag was PUT.
    let put_manifests: BTreeSet<String> = writes
        .iter()
        .filter_map(|w| w.strip_prefix("PUT /v2/"))
        .filter(|w| w.contains("/manifests/"))
        .map(str::to_string)
        .collect();
    let mut planned = BTreeSet::new();
    let mut blobs = BTreeSet::new();
    for img in plan["images"].as_array().unwrap() {
        for b in img["blobs"].as_array().unwrap() {
            blobs.insert(b["digest"].as_str().unwrap().to_string());
        }
        for t in img["targets"].as_array().unwrap() {
            for tag in t["tags"].as_array().unwrap() {
                planned.insert(format!("{}/manifests/{}", t["path"].as_str().unwrap(), tag.as_str().unwrap()));
            }
        }
    }
    assert_eq!(put_manifests, planned);
    // The other writes are blob uploads of planned blobs into planned repositories.
    for w in writes.iter().filter(|w| !w.contains("/manifests/")) {
        let into_planned =
            ["/v2/ml/first/blobs/uploads/", "/v2/ml/second/blobs/uploads/"].iter().any(|p| w.contains(p));
        assert!(into_planned, "unplanned write {w}");
        if let Some((_, digest)) = w.split_once("digest=") {
            let digest = digest.replace("%3A", ":");
            assert!(blobs.contains(&digest), "blob {digest} is not in the plan");
        }
    }
    assert_eq!(digest_at(&s.reg, "ml/first:stable"), Some(s.first.manifest_digest.clone()));
    assert_eq!(digest_at(&s.reg, "ml/second:v1"), Some(s.second.manifest_digest.clone()));
}

#[test]
fn a_source_changed_after_planning_is_refused_before_anything_is_contacted() {
    let s = setup(None);
    let plan = ok(publish(s.work.path()).args(["plan", "-o", "json"]));
    std::fs::write(s.work.path().join("plan.json"), &plan).unwrap();
    std::fs::remove_dir_all(s.work.path().join("build/second")).unwrap();
    let changed = write_layout(&s.work.path().join("build/second"), 303, &[7_000], "linux", "amd64", "latest");
    let out = run(publish(s.work.path()).args(["run", "--plan", "plan.json"]));
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&changed.manifest_digest) && stderr.contains(&s.second.manifest_digest), "{stderr}");
    assert!(s.proxy.seen.lock().unwrap().is_empty(), "contacted: {:?}", s.proxy.seen.lock().unwrap());
}

#[test]
fn a_plan_of_another_version_is_refused() {
    let s = setup(None);
    let plan = ok(publish(s.work.path()).args(["plan", "-o", "json"])).replace("\"version\": 3", "\"version\": 7");
    std::fs::write(s.work.path().join("plan.json"), plan).unwrap();
    let out = run(publish(s.work.path()).args(["run", "--plan", "plan.json"]));
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("plan version 7"), "{stderr}");
    assert!(s.proxy.seen.lock().unwrap().is_empty());
}

#[test]
fn a_saved_plan_whose_steps_were_edited_is_refused_before_anything_is_contacted() {
    let s = setup(None);
    let plan: Value = serde_json::from_str(&ok(publish(s.work.path()).args(["plan", "-o", "json"]))).unwrap();
    let steps = &plan["images"][0]["targets"][0]["steps"];
    assert_eq!(
        steps,
        &serde_json::json!([{"step": "push", "tags": ["v1", "stable"]}, {"step": "probe-anonymous-pull"}]),
        "{plan:#}"
    );
    let mut edited = plan.clone();
    edited["images"][0]["targets"][0]["steps"].as_array_mut().unwrap().pop();
    std::fs::write(s.work.path().join("plan.json"), edited.to_string()).unwrap();
    let out = run(publish(s.work.path()).args(["run", "--plan", "plan.json"]));
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("target first@home: the plan's steps") && stderr.contains("make the plan again"),
        "{stderr}"
    );
    assert!(s.proxy.seen.lock().unwrap().is_empty(), "contacted: {:?}", s.proxy.seen.lock().unwrap());
}

/// The `runpod:` section: one template following image `second`.
fn template() -> Value {
    json!({"templates": [{"name": "second-main", "image": "second", "body": {"disk": 20, "env": {"IMAGE": "{{ image.ref }}"}}}]})
}

#[test]
fn dry_run_writes_nothing_on_any_command() {
    let s = setup(Some(template()));
    let rp = support::runpod::start();
    let dir = s.work.path();
    // Something to sign: pushed straight to the registry, around the proxy.
    let target = format!("docker://{}/ml/signed:v1", s.reg.host);
    ok(publish(dir).args(["push", "oci:build/first", &target, "--insecure"]));
    ok(publish(dir).args(["generate-key-pair", "--output-dir", "keys"]).env("COSIGN_PASSWORD", "pw"));

    let via = format!("127.0.0.1:{}", s.proxy.port);
    let with_runpod = |cmd: &mut std::process::Command| {
        cmd.env("RUNPOD_API_KEY", support::runpod::API_KEY)
            .env("RUNPOD_API_URL", rp.url())
            .env("PULL_PASSWORD", "pull-pw");
    };
    let mut run_cmd = publish(dir);
    with_runpod(run_cmd.args(["run", "--dry-run"]));
    let shown = ok(&mut run_cmd);
    assert!(shown.contains("dry run: nothing is written"), "{shown}");

    let pushed = ok(publish(dir).args([
        "push",
        "oci:build/second",
        &format!("docker://{via}/ml/second:v1"),
        "--insecure",
        "--dry-run",
    ]));
    assert!(pushed.contains("would upload") && pushed.contains("would tag"), "{pushed}");

    let signed = ok(publish(dir)
        .args(["sign", &format!("{via}/ml/signed@{}", s.first.manifest_digest), "--key", "keys/cosign.key"])
        .args(["--insecure", "--dry-run"])
        .env("COSIGN_PASSWORD", "pw"));
    assert!(signed.contains(".sig"), "{signed}");

    // A sync needs the image published: put it there around the proxy, under another tag.
    ok(publish(dir).args([
        "push",
        "oci:build/second",
        &format!("docker://{}/ml/second:elsewhere", s.reg.host),
        "--insecure",
    ]));
    let mut sync = publish(dir);
    with_runpod(sync.args(["runpod", "sync", "--dry-run"]));
    ok(&mut sync);

    assert_eq!(s.proxy.writes(), Vec::<String>::new(), "a dry run wrote to the registry");
    assert!(!s.proxy.seen.lock().unwrap().is_empty(), "the dry runs did read");
    assert!(rp.writes().is_empty(), "a dry run wrote to RunPod: {:?}", rp.writes());
    assert_eq!(digest_at(&s.reg, "ml/second:v1"), None);
}

#[test]
fn generate_key_pair_refuses_to_overwrite_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let gen_keys = |force: bool| {
        let mut cmd = publish(dir.path());
        cmd.args(["generate-key-pair", "--output-dir", "."]).env("COSIGN_PASSWORD", "pw");
        if force {
            cmd.arg("--force");
        }
        run(&mut cmd)
    };
    assert_eq!(gen_keys(false).status.code(), Some(0));
    let before = std::fs::read(dir.path().join("cosign.key")).unwrap();
    let again = gen_keys(false);
    assert_eq!(again.status.code(), Some(2));
    assert!(text(&again).1.contains("--force"), "{}", text(&again).1);
    assert_eq!(std::fs::read(dir.path().join("cosign.key")).unwrap(), before, "the key was overwritten");
    assert_eq!(gen_keys(true).status.code(), Some(0));
    assert_ne!(std::fs::read(dir.path().join("cosign.key")).unwrap(), before);
}

#[test]
fn run_checks_credentials_before_contacting_any_registry() {
    let s = setup(None);
    let home = json!({"credentials": credentials("bot", "NOT_SET_ANYWHERE"), "limits": {"storage": "1GB"}});
    Policy::new()
        .registry("home", with(local(&format!("127.0.0.1:{}", s.proxy.port)), home))
        .image(json!({"name": "first", "source": "oci:build/first", "tags": ["v1"], "visibility": "public"}))
        .write(s.work.path());
    let out = run(publish(s.work.path()).arg("run"));
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("NOT_SET_ANYWHERE"), "{stderr}");
    assert!(s.proxy.seen.lock().unwrap().is_empty(), "usage was measured first: {:?}", s.proxy.seen.lock().unwrap());
}

/// An image of the plan whose source is missing from the inputs execution is given fails
/// each of its targets with a message, never silently: the run cannot report success.
#[test]
fn an_image_missing_from_the_inputs_fails_its_targets() {
    let work = tempfile::tempdir().unwrap();
    write_layout(&work.path().join("img"), 303, &[1_000], "linux", "amd64", "latest");
    std::fs::write(
        work.path().join("publish.yaml"),
        "version: 1\nregistries:\n  home: {kind: registry, repository: 127.0.0.1:9/ml, insecure: true}\nimages:\n  - {name: app, source: oci:img, tags: [v1], visibility: public}\n",
    )
    .unwrap();
    let out = run(publish(work.path()).args(["plan", "--no-measure", "-o", "json"]));
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    let plan: publish_action::plan::Plan = serde_json::from_slice(&out.stdout).unwrap();
    let images = std::collections::HashMap::new();
    let env = publish_action::credentials::Env::new();
    let inputs = publish_action::execute::Inputs {
        images: &images,
        credentials: std::collections::HashMap::new(),
        signer: None,
        templates: None,
        in_actions: false,
        env: &env,
        config: plan.transfer,
        dockerhub_api: publish_action::registry::hub::API,
        provenance: Default::default(),
        verifier: None,
        git: Default::default(),
        allow_rollback: false,
        run: publish_action::attest::write::RunFacts {
            env: env.clone(),
            git_dir: None,
            started: 0,
            sboms: Default::default(),
        },
    };
    let report = tokio::runtime::Runtime::new().unwrap().block_on(publish_action::execute::execute(&plan, inputs));
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["status"], "failed", "{json:#}");
    let target = &json["images"][0]["targets"][0];
    assert_eq!(target["status"], "failed", "{json:#}");
    assert!(target["error"].as_str().unwrap_or_default().contains("was not opened"), "{json:#}");
}

/// A saved plan of a docker source carries its config and diff_ids, not a manifest digest (known
/// once the layers are compressed, in the push); `run --plan` pushes it, and refuses an archive
/// whose config changed since, before anything is contacted.
#[test]
fn a_saved_plan_of_a_docker_source_runs_and_a_changed_archive_is_refused() {
    let reg = Registry::start(RegistryOptions::default());
    let work = tempfile::tempdir().unwrap();
    let diff_ids = support::docker::save_legacy(&work.path().join("app.tar"), 61, &[20_000]);
    Policy::new()
        .local("home", &reg.host)
        .image(json!({"name": "app", "source": "docker-archive:app.tar", "tags": ["v1"], "visibility": "public"}))
        .write(work.path());
    let out = run(publish(work.path()).args(["plan", "-o", "json"]));
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    let image = &plan["images"][0];
    assert_eq!(image["manifest_digest"], Value::Null);
    assert!(image["config_digest"].as_str().unwrap().starts_with("sha256:"));
    let compressed: Vec<&str> = image["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["compress"] == "gzip")
        .map(|b| b["digest"].as_str().unwrap())
        .collect();
    assert_eq!(compressed, diff_ids.iter().map(String::as_str).collect::<Vec<_>>());
    std::fs::write(work.path().join("plan.json"), &out.stdout).unwrap();

    let out = run(publish(work.path()).args(["run", "--plan", "plan.json", "-o", "json"]));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let digest = serde_json::from_str::<Value>(&stdout).unwrap()["images"][0]["digest"].as_str().unwrap().to_string();
    assert_eq!(support::image::sha(&reg.inspect(&format!("{}/ml/app:v1", reg.host), true).stdout), digest);

    support::docker::save_legacy(&work.path().join("app.tar"), 62, &[20_000]);
    let out = run(publish(work.path()).args(["run", "--plan", "plan.json"]));
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("its config is now") && stderr.contains("make the plan again"), "{stderr}");
}
