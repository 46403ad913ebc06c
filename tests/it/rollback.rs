//! Merge after merge (#24): a re-run of an older workflow never moves RunPod or a moving tag
//! back by accident; `--allow-rollback` does on purpose; a re-run of the same commit is a no-op.
//! Images are ordered by their verified signatures' commits, else their revision labels (git
//! ancestry in the checkout, a shallow one deepened), else their configs' `created`; when
//! nothing tells, the tag moves and the run says it could not tell. Against distribution 2.8,
//! the RunPod stand-in and skopeo.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use crate::cosign::KEY_PASSWORD;
use crate::support::image::write_layout_with;
use crate::support::runpod::{API_KEY, FakeRunPod};
use crate::support::{Registry, RegistryOptions, publish, run, run_json, text};

/// Runs git in `dir` with a fixed identity; its trimmed stdout.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid", "-c", "commit.gpgsign=false"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A repository at `dir` with commits A then B (B's parent is A): (A, B).
pub fn two_commits(dir: &Path) -> (String, String) {
    std::fs::create_dir_all(dir).unwrap();
    git(dir, &["init", "-q", "-b", "main"]);
    let mut shas = Vec::new();
    for name in ["a", "b"] {
        std::fs::write(dir.join("src.txt"), name).unwrap();
        git(dir, &["add", "src.txt"]);
        git(dir, &["commit", "-q", "-m", name]);
        shas.push(git(dir, &["rev-parse", "HEAD"]));
    }
    (shas[0].clone(), shas[1].clone())
}

struct Setup {
    reg: Registry,
    rp: FakeRunPod,
    dir: std::path::PathBuf,
    _work: tempfile::TempDir,
}

impl Setup {
    /// A checkout (commits A, B) with a policy that signs with a key pair, tags `main` and
    /// moves template `app-main` and endpoint `ep1`.
    fn new(tags: &str) -> (Setup, String, String) {
        let reg = Registry::start(RegistryOptions::default());
        let rp = crate::support::runpod::start();
        rp.add_endpoint("ep1", "old/image:1");
        let work = tempfile::tempdir().unwrap();
        let dir = work.path().join("repo");
        let (a, b) = two_commits(&dir);
        let out = run(publish(&dir).arg("generate-key-pair").env("COSIGN_PASSWORD", KEY_PASSWORD));
        assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
        let yaml = format!(
            "version: 1
registries:
  home: {{kind: registry, repository: {}/ml, insecure: true}}
images:
  - {{name: app, source: oci:img, tags: {tags}, visibility: public}}
signing: {{key: cosign.key}}
runpod:
  templates:
    - name: app-main
      image: app
      endpoints: [ep1]
      body: {{disk: 20}}
",
            reg.host
        );
        std::fs::write(dir.join("publish.yaml"), yaml).unwrap();
        (Setup { reg, rp, dir, _work: work }, a, b)
    }

    /// `publish run` as the workflow of `commit` would, with an image of its own (`seed`).
    fn run_at(&self, commit: &str, seed: u64, extra: &[&str]) -> (Option<i32>, Value, String, String) {
        let image = write_layout_with(&self.dir.join("img"), seed, &[4_000], ("linux", "amd64", "latest"), &json!({}));
        let mut cmd = publish(&self.dir);
        cmd.args(["run", "-o", "json"])
            .args(extra)
            .env("COSIGN_PASSWORD", KEY_PASSWORD)
            .env("RUNPOD_API_KEY", API_KEY)
            .env("RUNPOD_API_URL", self.rp.url())
            .env("GITHUB_SHA", commit);
        let (code, json, stderr) = run_json(&mut cmd);
        (code, json, stderr, image.manifest_digest)
    }

    fn runpod(&self, args: &[&str]) -> (Option<i32>, String, String) {
        let out = run(publish(&self.dir)
            .arg("runpod")
            .args(args)
            .env("COSIGN_PASSWORD", KEY_PASSWORD)
            .env("RUNPOD_API_KEY", API_KEY)
            .env("RUNPOD_API_URL", self.rp.url()));
        let (stdout, stderr) = text(&out);
        (out.status.code(), stdout, stderr)
    }

    fn pinned(&self, digest: &str) -> String {
        format!("{}/ml/app:main@{digest}", self.reg.host)
    }

    /// The template's and the endpoint's images, and the digest of tag `main`.
    fn state(&self) -> (Value, Value, String) {
        let s = self.rp.state.lock().unwrap();
        let out = self.reg.inspect(&format!("{}/ml/app:main", self.reg.host), false);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let inspected: Value = serde_json::from_slice(&out.stdout).unwrap();
        (
            s.templates[0]["image"].clone(),
            s.endpoints["ep1"]["image"].clone(),
            inspected["Digest"].as_str().unwrap().into(),
        )
    }
}

#[test]
fn a_rerun_of_an_older_commit_moves_nothing_back_unless_allowed_and_the_same_commit_is_a_no_op() {
    let (t, a, b) = Setup::new("[main]");
    let (code, json, stderr, at_b) = t.run_at(&b, 1, &[]);
    assert_eq!(code, Some(0), "{json}\n{stderr}");
    assert_eq!(t.state(), (json!(t.pinned(&at_b)), json!(t.pinned(&at_b)), at_b.clone()));

    // The plan of A's run says what the run will do: main stays at B.
    write_layout_with(&t.dir.join("img"), 2, &[4_000], ("linux", "amd64", "latest"), &json!({}));
    let mut plan = publish(&t.dir);
    plan.args(["plan", "--measure"]).env("COSIGN_PASSWORD", KEY_PASSWORD).env("GITHUB_SHA", &a);
    let (stdout, stderr) = text(&run(&mut plan));
    let planned =
        format!("tag      main holds {at_b} from {}, newer than this run's {}: not moved", &b[..12], &a[..12]);
    assert!(stdout.contains(&planned), "{stdout}\n{stderr}");

    // The workflow of A (B's parent) run again after B's: pushed, nothing moved, exit 3.
    let (code, json, stderr, at_a) = t.run_at(&a, 2, &[]);
    assert_eq!(code, Some(3), "{json}\n{stderr}");
    assert_eq!(t.state(), (json!(t.pinned(&at_b)), json!(t.pinned(&at_b)), at_b.clone()), "nothing moved back");
    let target = &json["images"][0]["targets"][0];
    assert_eq!(target["digest"], at_a.as_str(), "the push itself still happens");
    assert_eq!(target["moving_tags"][0]["action"], "kept", "{target}");
    let want = format!(
        "holds {at_b} from {}, newer than this run's {}: not moved (re-run of an older workflow?)",
        &b[..12],
        &a[..12]
    );
    assert!(target["moving_tags"][0]["reason"].as_str().unwrap().contains(&want), "{target}");
    assert_eq!(json["runpod"][0]["status"], "kept");
    assert!(json["runpod"][0]["reason"].as_str().unwrap().contains(&want), "{}", json["runpod"][0]);
    assert!(
        t.reg.inspect(&format!("{}/ml/app@{at_a}", t.reg.host), true).status.success(),
        "A's image is there by digest"
    );
    let text_out = run(publish(&t.dir)
        .args(["run"])
        .env("COSIGN_PASSWORD", KEY_PASSWORD)
        .env("RUNPOD_API_KEY", API_KEY)
        .env("RUNPOD_API_URL", t.rp.url())
        .env("GITHUB_SHA", &a));
    let (stdout, _) = text(&text_out);
    assert!(stdout.contains(&format!("tag main {want}")), "{stdout}");
    assert!(stdout.contains("--allow-rollback"), "the message names the fix: {stdout}");

    // On purpose: --allow-rollback moves the template, the endpoint and the tag to A.
    let (code, json, stderr, _) = t.run_at(&a, 2, &["--allow-rollback"]);
    assert_eq!(code, Some(0), "{json}\n{stderr}");
    assert_eq!(t.state(), (json!(t.pinned(&at_a)), json!(t.pinned(&at_a)), at_a.clone()));
    assert_eq!(json["images"][0]["targets"][0]["moving_tags"][0]["action"], "moved-back");

    // A's workflow once more, rebuilding another image of the same commit: nothing moves, exit 0.
    let writes = t.rp.writes().len();
    let (code, json, stderr, other) = t.run_at(&a, 3, &[]);
    assert_ne!(other, at_a);
    assert_eq!(code, Some(0), "{json}\n{stderr}");
    assert_eq!(t.state(), (json!(t.pinned(&at_a)), json!(t.pinned(&at_a)), at_a.clone()));
    assert_eq!(json["runpod"][0]["status"], "current");
    assert_eq!(json["images"][0]["targets"][0]["moving_tags"][0]["action"], "unchanged");
    assert_eq!(t.rp.writes().len(), writes, "a same-commit re-run writes nothing to RunPod");
}

/// Unsigned images in `dir` (a policy tagging `main` in a repository named after `dir`),
/// pushed in turn, each with its config fields and the commit its run is from (`GITHUB_SHA`);
/// the last run's JSON report and exit code.
fn push_in_turn(reg: &Registry, dir: &Path, steps: &[(Value, Option<&str>)]) -> (Option<i32>, Value) {
    let name = dir.file_name().unwrap().to_str().unwrap();
    let yaml = format!(
        "version: 1\nregistries:\n  home: {{kind: registry, repository: {}/{name}, insecure: true}}\nimages:\n  - {{name: app, source: oci:img, tags: [main], visibility: public}}\n",
        reg.host
    );
    std::fs::write(dir.join("publish.yaml"), yaml).unwrap();
    let mut last = (None, Value::Null);
    for (i, (extra, commit)) in steps.iter().enumerate() {
        write_layout_with(&dir.join("img"), 60 + i as u64, &[2_000], ("linux", "amd64", "latest"), extra);
        let mut cmd = publish(dir);
        cmd.args(["run", "-o", "json"]).env_remove("GITHUB_SHA");
        if let Some(c) = commit {
            cmd.env("GITHUB_SHA", c);
        }
        let (code, json, stderr) = run_json(&mut cmd);
        assert!(matches!(code, Some(0 | 3)), "{json}\n{stderr}");
        last = (code, json);
    }
    last
}

fn labelled(commit: &str) -> Value {
    json!({"config": {"Labels": {"org.opencontainers.image.revision": commit}}})
}

#[test]
fn unsigned_images_are_ordered_by_revision_label_then_created_and_otherwise_said_unknown() {
    let reg = Registry::start(RegistryOptions::default());
    let work = tempfile::tempdir().unwrap();

    // Revision labels, by ancestry in the checkout: B's image, then A's, keeps main at B.
    let checkout = work.path().join("labels");
    let (a, b) = two_commits(&checkout);
    let (code, json) = push_in_turn(&reg, &checkout, &[(labelled(&b), Some(&b)), (labelled(&a), Some(&a))]);
    assert_eq!(code, Some(3), "{json}");
    let held = &json["images"][0]["targets"][0]["moving_tags"][0];
    assert_eq!(held["action"], "kept", "{json}");
    assert!(
        held["reason"].as_str().unwrap().contains(&format!("from {}, newer than this run's {}", &b[..12], &a[..12])),
        "{held}"
    );

    // Created times, outside any checkout and without labels: February's, then January's.
    let plain = work.path().join("created");
    std::fs::create_dir_all(&plain).unwrap();
    let created = |t: &str| json!({"created": t});
    let (code, json) =
        push_in_turn(&reg, &plain, &[(created("2026-02-01T00:00:00Z"), None), (created("2026-01-01T00:00:00Z"), None)]);
    assert_eq!(code, Some(3), "{json}");
    let held = &json["images"][0]["targets"][0]["moving_tags"][0];
    assert!(
        held["reason"]
            .as_str()
            .unwrap()
            .contains("created 2026-02-01T00:00:00Z, newer than this run's created 2026-01-01T00:00:00Z"),
        "{held}"
    );

    // Nothing to tell them apart: moved, and said.
    let none = work.path().join("none");
    std::fs::create_dir_all(&none).unwrap();
    let (code, json) = push_in_turn(&reg, &none, &[(json!({}), None), (json!({}), None)]);
    assert_eq!(code, Some(0), "{json}");
    let held = &json["images"][0]["targets"][0]["moving_tags"][0];
    assert_eq!(held["action"], "moved", "{json}");
    assert!(held["reason"].as_str().unwrap().contains("cannot tell which is newer"), "{held}");
}

#[test]
fn a_shallow_checkout_is_deepened_to_order_commits_or_says_it_cannot() {
    let reg = Registry::start(RegistryOptions::default());
    let work = tempfile::tempdir().unwrap();
    let origin = work.path().join("origin");
    let (a, b) = two_commits(&origin);
    let url = format!("file://{}", origin.display());
    for (name, keep_origin) in [("deepened", true), ("cut-off", false)] {
        let clone = work.path().join(name);
        let out = Command::new("git").args(["clone", "-q", "--depth", "1", &url]).arg(&clone).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(git(&clone, &["rev-parse", "--is-shallow-repository"]), "true");
        if !keep_origin {
            git(&clone, &["remote", "set-url", "origin", &format!("file://{}", work.path().join("gone").display())]);
        }
        let (code, json) = push_in_turn(&reg, &clone, &[(labelled(&b), Some(&b)), (labelled(&a), Some(&a))]);
        let held = &json["images"][0]["targets"][0]["moving_tags"][0];
        if keep_origin {
            assert_eq!((code, held["action"].as_str()), (Some(3), Some("kept")), "{json}");
            assert_eq!(git(&clone, &["rev-parse", "--is-shallow-repository"]), "false", "fetched what it needed");
        } else {
            assert_eq!((code, held["action"].as_str()), (Some(0), Some("moved")), "{json}");
            assert!(
                held["reason"].as_str().unwrap().contains("is shallow and `git fetch --unshallow` failed"),
                "{held}"
            );
        }
    }
}

#[test]
fn history_lists_newest_first_and_rollback_verifies_then_moves_template_and_endpoint() {
    let (t, a, b) = Setup::new("[main, \"sha-{{ git.short_sha }}\"]");
    let (code, json, stderr, at_a) = t.run_at(&a, 11, &[]);
    assert_eq!(code, Some(0), "{json}\n{stderr}");
    let (code, json, stderr, at_b) = t.run_at(&b, 12, &[]);
    assert_eq!(code, Some(0), "{json}\n{stderr}");

    let (code, stdout, stderr) = t.runpod(&["history", "app-main", "-o", "json"]);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let entries: Value = serde_json::from_str(&stdout).unwrap();
    let digests: Vec<&str> = entries.as_array().unwrap().iter().map(|e| e["digest"].as_str().unwrap()).collect();
    assert_eq!(digests, [at_b.as_str(), at_a.as_str()], "newest first: {stdout}");
    assert_eq!(entries[0]["current"], true);
    assert_eq!(entries[0]["tags"], json!(["main", format!("sha-{}", &b[..7])]));
    assert_eq!(entries[1]["origin"], json!({"commit": a, "commit_from": "signature", "signed": true}));
    let (_, text_history, _) = t.runpod(&["history", "app-main"]);
    assert!(text_history.contains(&format!("* {at_b}  main, sha-{}", &b[..7])), "{text_history}");
    assert!(text_history.contains(&format!("commit {} (signature)", &a[..12])), "{text_history}");

    // A dry run writes nothing; the rollback moves the template and its endpoint to A.
    let writes = t.rp.writes().len();
    let (code, stdout, stderr) = t.runpod(&["rollback", "app-main", "--to", "previous", "--dry-run"]);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(stdout.starts_with("would roll back template app-main"), "{stdout}");
    assert_eq!(t.rp.writes().len(), writes, "a dry run writes nothing");
    let (code, stdout, stderr) = t.runpod(&["rollback", "app-main", "--to", "previous"]);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains(&format!("to {at_a} (from {}, signature verified)", &a[..12])), "{stdout}");
    // The target's provenance (this run's outside Actions: the checkout's commit, a local builder).
    let head = String::from_utf8(
        std::process::Command::new("git").arg("-C").arg(&t.dir).args(["rev-parse", "HEAD"]).output().unwrap().stdout,
    )
    .unwrap();
    let line =
        format!("provenance: commit {}, built by urn:publish:builders:local (attestation verified)", head.trim());
    assert!(stdout.contains(&line), "{line}\n{stdout}");
    let want = json!(format!("{}/ml/app:sha-{}@{at_a}", t.reg.host, &a[..7]));
    let (template, endpoint, main) = t.state();
    assert_eq!((template, endpoint, main), (want.clone(), want, at_b.clone()), "the tags stay; RunPod moves");

    // An image nobody signed is refused, unless asked for.
    write_layout_with(&t.dir.join("unsigned"), 13, &[1_000], ("linux", "amd64", "latest"), &json!({}));
    let dest = format!("docker://{}/ml/app:unsigned", t.reg.host);
    let out = run(publish(&t.dir).args(["push", "oci:unsigned", &dest, "--insecure"]));
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    let (code, stdout, stderr) = t.runpod(&["rollback", "app-main", "--to", "unsigned"]);
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains(
            "has no signature that verifies with the policy's signing settings: not rolled back (--allow-unsigned"
        ),
        "{stderr}"
    );
    let (code, stdout, stderr) = t.runpod(&["rollback", "app-main", "--to", "unsigned", "--allow-unsigned"]);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("NOT SIGNED (--allow-unsigned)"), "{stdout}");

    // The action's step: command rollback with template and to.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/run-action.sh");
    let bin = Path::new(env!("CARGO_BIN_EXE_publish")).parent().unwrap().to_path_buf();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let out = Command::new("bash")
        .arg(script)
        .current_dir(&t.dir)
        .env("PATH", path)
        .env("DOCKER_CONFIG", t.dir.join(".none"))
        .env("COSIGN_PASSWORD", KEY_PASSWORD)
        .env("RUNPOD_API_KEY", API_KEY)
        .env("RUNPOD_API_URL", t.rp.url())
        .envs([
            ("INPUT_COMMAND", "rollback"),
            ("INPUT_TEMPLATE", "app-main"),
            ("INPUT_TO", &format!("sha-{}", &b[..7])),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{:?}", text(&out));
    assert_eq!(t.state().0, json!(format!("{}/ml/app:sha-{}@{at_b}", t.reg.host, &b[..7])));
    // The Action's allow-unsigned input reaches the command.
    let step = |allow: &str| {
        Command::new("bash")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/run-action.sh"))
            .current_dir(&t.dir)
            .env("PATH", format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default()))
            .env("DOCKER_CONFIG", t.dir.join(".none"))
            .env("COSIGN_PASSWORD", KEY_PASSWORD)
            .env("RUNPOD_API_KEY", API_KEY)
            .env("RUNPOD_API_URL", t.rp.url())
            .envs([("INPUT_COMMAND", "rollback"), ("INPUT_TEMPLATE", "app-main"), ("INPUT_TO", "unsigned")])
            .env("INPUT_ALLOW_UNSIGNED", allow)
            .output()
            .unwrap()
    };
    assert_eq!(step("false").status.code(), Some(1), "an unsigned image is refused by default");
    assert!(step("true").status.success(), "allow-unsigned: true moves to it");
}
