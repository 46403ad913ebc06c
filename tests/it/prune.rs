//! Retention (#25) against a real distribution 2.8 with deletes enabled: six versions of an
//! image and a two-platform index, each signed in both formats, a RunPod template (stand-in) on
//! the second-oldest version; `keep_last: 2` deletes exactly the others, with their signatures
//! and the index's children; what is kept stays pullable (skopeo) and its signatures verify
//! with the real cosign. A dry run deletes nothing; a prune killed after each of its deletes in
//! turn leaves every kept image whole, and the next prune finishes the work; `min_age` keeps a
//! just-pushed image.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::cosign::{KEY_PASSWORD, cosign, cosign_cmd, out_text};
use crate::support::image::{write_index_layout_with, write_layout_with};
use crate::support::runpod::{API_KEY, FakeRunPod};
use crate::support::{Registry, RegistryOptions, publish, run, sigstore, text};

struct Setup {
    reg: Registry,
    rp: FakeRunPod,
    work: tempfile::TempDir,
    /// v1..v6 (oldest first), then the oldest index (deleted by keep_last 2): their digests.
    versions: Vec<String>,
    index: String,
    children: Vec<String>,
    /// The newest index (`multi-new`, kept by keep_last 2) and its platform manifests.
    kept_index: String,
    kept_children: Vec<String>,
}

fn old(day: u32) -> Value {
    json!({"created": format!("2020-01-{day:02}T00:00:00Z")})
}

impl Setup {
    fn new(retention: &str) -> Setup {
        let reg = Registry::start(RegistryOptions::default());
        let rp = crate::support::runpod::start();
        let work = tempfile::tempdir().unwrap();
        let dir = work.path().to_path_buf();
        let dir = dir.as_path();
        let out = run(publish(dir).arg("generate-key-pair").env("COSIGN_PASSWORD", KEY_PASSWORD));
        assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
        let mut t = Setup {
            reg,
            rp,
            work,
            versions: Vec::new(),
            index: String::new(),
            children: Vec::new(),
            kept_index: String::new(),
            kept_children: Vec::new(),
        };
        for v in 1..=6u32 {
            let img = write_layout_with(
                &dir.join(format!("v{v}")),
                300 + u64::from(v),
                &[3_000],
                ("linux", "amd64", "latest"),
                &old(v + 1),
            );
            t.push_and_sign(&format!("v{v}"), &format!("v{v}"), &img.manifest_digest);
            t.versions.push(img.manifest_digest);
        }
        let platforms = [("linux", "amd64"), ("linux", "arm64")];
        let (index, children) = write_index_layout_with(&dir.join("multi"), 310, &platforms, "latest", &old(1));
        t.push_and_sign("multi", "multi", &index);
        t.index = index;
        t.children = children.into_iter().map(|c| c.manifest_digest).collect();
        let (index, children) = write_index_layout_with(&dir.join("multi-new"), 311, &platforms, "latest", &old(20));
        t.push_and_sign("multi-new", "multi-new", &index);
        t.kept_index = index;
        t.kept_children = children.into_iter().map(|c| c.manifest_digest).collect();
        // Production runs the second-oldest version.
        let image = format!("{}/ml/app:v2@{}", t.reg.host, t.versions[1]);
        let template = json!({"id": "tpl1", "name": "app-main", "image": image});
        t.rp.state.lock().unwrap().templates.push(template.as_object().unwrap().clone());
        let yaml = format!(
            "version: 1
registries:
  home: {{kind: registry, repository: {}/ml, insecure: true}}
images:
  - {{name: app, source: oci:v6, tags: [v6], visibility: public}}
retention: {retention}
signing: {{key: cosign.key}}
runpod:
  templates:
    - name: app-main
      image: app
      body: {{disk: 20}}
",
            t.reg.host
        );
        std::fs::write(dir.join("publish.yaml"), yaml).unwrap();
        t
    }

    fn push_and_sign(&self, layout: &str, tag: &str, digest: &str) {
        let dst = format!("{}/ml/app", self.reg.host);
        let out = run(publish(self.work.path()).args([
            "push",
            &format!("oci:{layout}"),
            &format!("docker://{dst}:{tag}"),
            "--insecure",
        ]));
        assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
        let out = run(publish(self.work.path())
            .args(["sign", &format!("{dst}@{digest}"), "--key", "cosign.key", "--insecure", "--format", "both"])
            .env("COSIGN_PASSWORD", KEY_PASSWORD));
        assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    }

    fn prune(&self, extra: &[&str]) -> Command {
        let mut cmd = publish(self.work.path());
        cmd.arg("prune")
            .args(extra)
            .env("COSIGN_PASSWORD", KEY_PASSWORD)
            .env("RUNPOD_API_KEY", API_KEY)
            .env("RUNPOD_API_URL", self.rp.url());
        cmd
    }

    fn tags(&self) -> BTreeSet<String> {
        let out = Command::new("skopeo")
            .arg("list-tags")
            .args(self.reg.skopeo_flags(false))
            .arg(format!("docker://{}/ml/app", self.reg.host))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["Tags"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_string()).collect()
    }

    fn present(&self, digest: &str) -> bool {
        self.reg.inspect(&format!("{}/ml/app@{digest}", self.reg.host), true).status.success()
    }

    /// Copies `tag` with skopeo (every blob read) and checks its signatures with cosign.
    fn assert_whole(&self, tag: &str, digest: &str) {
        let to = self.work.path().join(format!("pulled-{tag}"));
        let _ = std::fs::remove_dir_all(&to);
        let out = Command::new("skopeo")
            .args(["copy", "--all", "--src-tls-verify=false"])
            .arg(format!("docker://{}/ml/app:{tag}", self.reg.host))
            .arg(format!("dir:{}", to.display()))
            .output()
            .unwrap();
        assert!(out.status.success(), "{tag} is not pullable: {}", String::from_utf8_lossy(&out.stderr));
        let Some(cosign) = cosign() else { return };
        let home = self.work.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        let s = sigstore::start();
        let root = s.trusted_root().display().to_string();
        // cosign checks the bundles whenever there are any: both calls need the trusted root.
        for extra in
            [vec!["--trusted-root", root.as_str()], vec!["--new-bundle-format", "--trusted-root", root.as_str()]]
        {
            let out = cosign_cmd(&cosign, &home)
                .args(["verify", "--allow-http-registry", "--insecure-ignore-tlog", "--key"])
                .arg(self.work.path().join("cosign.pub"))
                .args(&extra)
                .arg(format!("{}/ml/app@{digest}", self.reg.host))
                .output()
                .unwrap();
            assert!(out.status.success(), "{tag} {extra:?}: {}", out_text(&out));
        }
    }

    /// The tags a prune keeping `kept` (indexes into versions) and the newest index must
    /// leave: theirs and their signatures' (legacy `.sig` and the referrers fallback index).
    fn expected_tags(&self, kept: &[usize]) -> BTreeSet<String> {
        let tagged = kept.iter().map(|&i| (format!("v{}", i + 1), &self.versions[i]));
        tagged
            .chain([("multi-new".to_string(), &self.kept_index)])
            .flat_map(|(tag, digest)| {
                let hex = &digest[7..];
                [tag, format!("sha256-{hex}.sig"), format!("sha256-{hex}")]
            })
            .collect()
    }
}

#[test]
fn keep_last_two_deletes_exactly_the_rest_with_their_signatures_and_keeps_what_runpod_runs() {
    let t = Setup::new("{keep_last: 2, untagged: delete}");
    let before = t.tags();
    let (stdout, stderr) = text(&run(&mut t.prune(&["--dry-run", "-o", "json"])));
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
    assert_eq!(t.tags(), before, "a dry run deletes nothing");
    let verdicts = report[0]["verdicts"].as_array().unwrap();
    let of = |d: &str| verdicts.iter().find(|v| v["digest"] == d).unwrap_or_else(|| panic!("{d}: {stdout}"));
    assert_eq!(of(&t.versions[5])["reason"], "newest 2 (keep_last)");
    assert_eq!(of(&t.kept_index)["reason"], "newest 2 (keep_last)");
    assert!(of(&t.kept_children[1])["reason"].as_str().unwrap().starts_with("child of kept index"), "{stdout}");
    assert_eq!(of(&t.versions[1])["reason"], "RunPod template app-main runs it");
    assert_eq!(of(&t.versions[0])["action"], "delete");
    assert_eq!(of(&t.index)["action"], "delete");
    assert_eq!(of(&t.children[0])["reason"], "child of deleted indexes only (untagged: delete)");
    assert!(of(&t.versions[0])["frees"].as_u64().unwrap() >= 3_000, "{stdout}");

    // The Action's step, command prune with dry-run: the job summary's table, nothing deleted.
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/run-action.sh");
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_publish")).parent().unwrap().to_path_buf();
    let summary = t.work.path().join("summary.md");
    let out = Command::new("bash")
        .arg(script)
        .current_dir(t.work.path())
        .env("PATH", format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default()))
        .envs([("INPUT_COMMAND", "prune"), ("INPUT_DRY_RUN", "true"), ("GITHUB_ACTIONS", "true")])
        .env("GITHUB_STEP_SUMMARY", &summary)
        .env("COSIGN_PASSWORD", KEY_PASSWORD)
        .env("RUNPOD_API_KEY", API_KEY)
        .env("RUNPOD_API_URL", t.rp.url())
        .output()
        .unwrap();
    assert!(out.status.success(), "{:?}", text(&out));
    let table = std::fs::read_to_string(&summary).unwrap();
    let row = format!("| `{}/ml/app` | ", t.reg.host);
    assert!(table.contains("### publish prune") && table.contains(&row) && table.contains("would-prune"), "{table}");
    assert_eq!(t.tags(), before, "a dry run from the Action deletes nothing");

    let out = run(&mut t.prune(&[]));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("frees up to"), "{stdout}");
    assert_eq!(t.tags(), t.expected_tags(&[1, 5]), "{stdout}");
    for i in [1, 5] {
        t.assert_whole(&format!("v{}", i + 1), &t.versions[i]);
    }
    // The kept index: each platform's image pullable (skopeo, every blob), its signatures good.
    t.assert_whole("multi-new", &t.kept_index);
    for c in &t.kept_children {
        assert!(t.present(c), "a kept index's child went:\n{stdout}");
    }
    for d in [0, 2, 3, 4].map(|i| &t.versions[i]).into_iter().chain([&t.index]).chain(&t.children) {
        assert!(!t.present(d), "{d} should be gone:\n{stdout}");
    }
}

#[test]
fn a_prune_killed_after_each_delete_leaves_every_kept_image_whole_and_the_next_one_finishes() {
    let t = Setup::new("{keep_last: 2, untagged: delete}");
    let mut kills = 0;
    loop {
        // Killed as soon as a delete is done (the next one may be under way).
        let mut child =
            t.prune(&["--debug"]).env("RUST_LOG", "info").stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        let lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut deleted = false;
        for line in lines.map_while(Result::ok) {
            if line.contains("deleted sha256:") {
                deleted = true;
                let _ = child.kill();
                break;
            }
        }
        let status = child.wait().unwrap();
        for d in [&t.versions[1], &t.versions[5], &t.kept_index].into_iter().chain(&t.kept_children) {
            assert!(t.present(d), "kill {kills}: a kept image went");
        }
        if !deleted {
            assert_eq!(status.code(), Some(0), "the last prune, with nothing left to delete, succeeds");
            break;
        }
        kills += 1;
        assert!(kills < 40, "the prunes never finished");
    }
    assert!(kills >= 5, "{kills} prunes were cut: the deletes were not interrupted one by one");
    assert_eq!(t.tags(), t.expected_tags(&[1, 5]), "after {kills} interrupted prunes");
    for i in [1, 5] {
        t.assert_whole(&format!("v{}", i + 1), &t.versions[i]);
    }
    t.assert_whole("multi-new", &t.kept_index);
}

#[test]
fn min_age_keeps_a_just_pushed_image_and_without_retention_nothing_is_deleted() {
    let t = Setup::new("{keep_last: 1, min_age: 1h}");
    // Two images pushed just now: the newer is the newest 1, the other is younger than 1 h.
    let date = Command::new("date").args(["-u", "+%Y-%m-%dT%H:%M:%SZ"]).output().unwrap();
    let now = String::from_utf8(date.stdout).unwrap().trim().to_string();
    let mut young = Vec::new();
    for v in [7u64, 8] {
        let img = write_layout_with(
            &t.work.path().join(format!("v{v}")),
            320 + v,
            &[1_000],
            ("linux", "amd64", "latest"),
            &json!({"created": now}),
        );
        t.push_and_sign(&format!("v{v}"), &format!("v{v}"), &img.manifest_digest);
        young.push(img.manifest_digest);
    }
    let (stdout, _) = text(&run(&mut t.prune(&["--dry-run", "-o", "json"])));
    let report: Value = serde_json::from_str(&stdout).unwrap();
    let verdict =
        |d: &str| report[0]["verdicts"].as_array().unwrap().iter().find(|v| v["digest"] == d).cloned().unwrap();
    let reasons: BTreeSet<String> = young.iter().map(|d| verdict(d)["reason"].as_str().unwrap().to_string()).collect();
    assert_eq!(
        reasons,
        BTreeSet::from(["newest 1 (keep_last)".to_string(), "younger than 1 h (min_age)".to_string()]),
        "{stdout}"
    );
    assert_eq!(verdict(&t.versions[5])["action"], "delete", "an old image is not young: {stdout}");

    // Without retention:, prune deletes nothing and says so.
    let policy = std::fs::read_to_string(t.work.path().join("publish.yaml")).unwrap();
    let without: String = policy.lines().filter(|l| !l.starts_with("retention:")).map(|l| format!("{l}\n")).collect();
    std::fs::write(t.work.path().join("publish.yaml"), without).unwrap();
    let before = t.tags();
    let out = run(&mut t.prune(&[]));
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0));
    assert!(stderr.contains("no retention: for any image: nothing is ever deleted"), "{stderr}");
    assert_eq!(t.tags(), before);
}

#[test]
fn a_run_with_on_run_prunes_after_it_succeeds_keeping_what_it_pushed() {
    let t = Setup::new("{keep_last: 1, on_run: true}");
    let mut cmd = publish(t.work.path());
    cmd.arg("run")
        .env("COSIGN_PASSWORD", KEY_PASSWORD)
        .env("RUNPOD_API_KEY", API_KEY)
        .env("RUNPOD_API_URL", t.rp.url());
    let out = run(&mut cmd);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    // The run moved the template to v6: v2 is no longer in use, and everything else went.
    assert!(stderr.contains("this run (it pushed it) runs it") || stderr.contains("newest 1 (keep_last)"), "{stderr}");
    // What the run pushed keeps its provenance (`.att`), written before the prune.
    let mut expected = t.expected_tags(&[5]);
    expected.insert(format!("sha256-{}.att", &t.versions[5][7..]));
    assert_eq!(t.tags(), expected, "{stderr}");
    t.assert_whole("v6", &t.versions[5]);
}

#[test]
fn the_plan_counts_storage_after_retention_when_every_run_prunes() {
    let t = Setup::new("{keep_last: 2, on_run: true}");
    let policy = std::fs::read_to_string(t.work.path().join("publish.yaml")).unwrap();
    let limited = policy.replace("insecure: true}", "insecure: true, limits: {storage: 1GB}}");
    std::fs::write(t.work.path().join("publish.yaml"), limited).unwrap();
    let before = t.tags();
    let out = run(publish(t.work.path())
        .args(["plan", "--measure", "-o", "json"])
        .env("COSIGN_PASSWORD", KEY_PASSWORD)
        .env("RUNPOD_API_KEY", API_KEY)
        .env("RUNPOD_API_URL", t.rp.url()));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let plan: Value = serde_json::from_str(&stdout).unwrap();
    let reasons = plan["images"][0]["candidates"][0]["reasons"].as_array().unwrap();
    let line = reasons
        .iter()
        .filter_map(Value::as_str)
        .find(|r| r.starts_with("storage used: "))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(line.ends_with("after retention: counted (retention.on_run)"), "{line}");
    let (now, after) = line.trim_start_matches("storage used: ").split_once(" measured, ").unwrap();
    assert_ne!(now, after.split(" after").next().unwrap(), "retention frees something: {line}");
    assert_eq!(t.tags(), before, "a plan deletes nothing");
}

/// A registry that does not delete (the spec's `UNSUPPORTED`): the prune fails, names the
/// setting that enables deletes, and nothing is taken for deleted.
#[test]
fn a_registry_without_deletes_says_how_to_enable_them() {
    let reg = crate::support::spec_registry::start();
    let work = tempfile::tempdir().unwrap();
    for (v, day) in [(1u64, 1u32), (2, 2)] {
        write_layout_with(
            &work.path().join(format!("v{v}")),
            340 + v,
            &[1_000],
            ("linux", "amd64", "latest"),
            &old(day),
        );
        let dst = format!("docker://127.0.0.1:{}/ml/app:v{v}", reg.port);
        let out = run(publish(work.path()).args(["push", &format!("oci:v{v}"), &dst, "--insecure"]));
        assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    }
    let yaml = format!(
        "version: 1\nregistries:\n  home: {{kind: registry, repository: 127.0.0.1:{}/ml, insecure: true}}\nimages:\n  - {{name: app, source: oci:v2, tags: [v2], visibility: public}}\nretention: {{keep_last: 1}}\n",
        reg.port
    );
    std::fs::write(work.path().join("publish.yaml"), yaml).unwrap();
    let out = run(publish(work.path()).arg("prune"));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("UNSUPPORTED here (distribution: storage.delete.enabled: true"), "{stdout}");
}
