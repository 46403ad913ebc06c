//! The binary in GitHub Actions (`GITHUB_ACTIONS=true`): step outputs, job summary,
//! annotations, masks; the plan comment upserted through a local GitHub API; the anonymous
//! pull probe; and the action's install step against a local release download.

use crate::support;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use crate::support::image::write_layout;
use crate::support::policy::{Policy, credentials, local, with};
use crate::support::{PASSWORD, Registry, RegistryOptions, USER, publish, run, text};
use serde_json::{Value, json};

/// Parses `$GITHUB_OUTPUT` (`name=value` and `name<<DELIMITER` blocks) as the runner does.
fn parse_outputs(text: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if let Some((name, delim)) = line.split_once("<<") {
            let mut value = Vec::new();
            for l in lines.by_ref() {
                if l == delim {
                    break;
                }
                value.push(l);
            }
            out.insert(name.to_string(), value.join("\n"));
        } else if let Some((name, value)) = line.split_once('=') {
            out.insert(name.to_string(), value.to_string());
        }
    }
    out
}

fn actions_env(cmd: &mut Command, dir: &Path) {
    cmd.env("GITHUB_ACTIONS", "true")
        .env("GITHUB_OUTPUT", dir.join("output.txt"))
        .env("GITHUB_STEP_SUMMARY", dir.join("summary.md"))
        .env("GITHUB_SHA", "0123456789abcdef0123456789abcdef01234567");
}

fn policy(dir: &Path, host: &str, visibility: &str) {
    Policy::new()
        .registry("home", with(local(host), json!({"credentials": credentials(USER, "REG_PASSWORD")})))
        .image(json!({"name": "app", "source": "oci:img", "tags": ["main", "sha-{{ git.short_sha }}"], "visibility": visibility}))
        .write(dir);
}

#[test]
fn run_writes_outputs_summary_and_masks_secrets_before_use() {
    let reg = Registry::start(RegistryOptions { htpasswd: true, ..Default::default() });
    let work = tempfile::tempdir().unwrap();
    let image = write_layout(&work.path().join("img"), 60, &[20_000], "linux", "amd64", "latest");
    policy(work.path(), &reg.host, "private");
    let mut cmd = publish(work.path());
    actions_env(&mut cmd, work.path());
    let out = run(cmd.args(["run", "-o", "json"]).env("REG_PASSWORD", PASSWORD));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    serde_json::from_str::<Value>(&stdout).expect("stdout stays one JSON document in Actions");

    let outputs = parse_outputs(&std::fs::read_to_string(work.path().join("output.txt")).unwrap());
    let result: Value = serde_json::from_str(&outputs["result"]).unwrap();
    assert_eq!(result["status"], "success");
    assert_eq!(outputs["digest"], image.manifest_digest);
    // References carry their digest, so the next step needs no parsing of `result`.
    let images: Value = serde_json::from_str(&outputs["images"]).unwrap();
    let d = &image.manifest_digest;
    let refs =
        serde_json::json!([format!("{}/ml/app:main@{d}", reg.host), format!("{}/ml/app:sha-0123456@{d}", reg.host)]);
    assert_eq!(images["app"], refs);
    let references: Value = serde_json::from_str(&outputs["references"]).unwrap();
    assert_eq!(references["app"]["home"], refs, "{references}");

    let summary = std::fs::read_to_string(work.path().join("summary.md")).unwrap();
    assert!(summary.contains("| registry | verdict | cost/month | why |"), "{summary}");
    assert!(summary.contains("| image | registry | references | digest |"), "{summary}");
    assert!(summary.contains("✅ pushed"), "{summary}");

    // The password is masked before anything could print it, and printed nowhere else.
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains(PASSWORD)).collect();
    assert_eq!(lines, vec![format!("::add-mask::{PASSWORD}")], "{stderr}");
    let first_mask = stderr.find(&format!("::add-mask::{PASSWORD}")).unwrap();
    let first_group = stderr.find("::group::Pushing app").expect("the push is grouped");
    assert!(first_mask < first_group);
    assert!(stderr.contains("::endgroup::"));
}

#[test]
fn policy_errors_become_annotations_on_the_policy_file() {
    let work = tempfile::tempdir().unwrap();
    write_layout(&work.path().join("img"), 61, &[1_000], "linux", "amd64", "latest");
    std::fs::write(
        work.path().join("publish.yaml"),
        "version: 1\nregistries:\n  home:\n    kind: registry\n    repository: 127.0.0.1:1/ml\n    insecure: true\nimages:\n  - name: app\n    source: oci:img\n    tgas: [v1]\n",
    )
    .unwrap();
    let mut cmd = publish(work.path());
    actions_env(&mut cmd, work.path());
    let out = run(cmd.arg("check"));
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr.contains("::error file=publish.yaml,line=10,col=5,title=images[0].tgas::unknown field `tgas`%0Ahint: did you mean `tags`?"),
        "{stderr}"
    );
}

#[test]
fn plan_comment_is_created_once_then_updated_in_place() {
    let gh = support::github::start("octo/repo", 7, 120);
    let work = tempfile::tempdir().unwrap();
    write_layout(&work.path().join("img"), 62, &[1_000], "linux", "amd64", "latest");
    policy(work.path(), "127.0.0.1:1", "public");
    std::fs::write(work.path().join("event.json"), r#"{"pull_request": {"number": 7}}"#).unwrap();
    for round in 0..2 {
        let mut cmd = publish(work.path());
        actions_env(&mut cmd, work.path());
        cmd.args(["plan"])
            .env("GITHUB_EVENT_NAME", "pull_request")
            .env("GITHUB_EVENT_PATH", work.path().join("event.json"))
            .env("GITHUB_REPOSITORY", "octo/repo")
            .env("GITHUB_API_URL", gh.url())
            .env("GITHUB_TOKEN", support::github::TOKEN);
        if round == 1 {
            // A different plan: the same comment must change.
            cmd.env("GITHUB_SHA", "fedcba9876543210fedcba9876543210fedcba98");
        }
        let out = run(&mut cmd);
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
        assert!(!stderr.contains("::warning"), "{stderr}");
    }
    let comments = gh.comments.lock().unwrap();
    let ours: Vec<&(u64, String)> = comments.iter().filter(|c| c.1.contains("<!-- publish-action:plan -->")).collect();
    assert_eq!(ours.len(), 1, "one comment, never duplicated");
    assert!(ours[0].1.contains("sha-fedcba9") && ours[0].1.contains("| registry | verdict |"), "{}", ours[0].1);
    let writes: Vec<String> =
        gh.server.requests().iter().filter(|r| r.method != "GET").map(|r| r.target.clone()).collect();
    assert_eq!(
        writes,
        vec![
            "/repos/octo/repo/issues/7/comments".to_string(),
            format!("/repos/octo/repo/issues/comments/{}", ours[0].0)
        ]
    );
    assert!(!gh.server.requests().iter().any(|r| r.header("authorization").is_none()));
}

#[test]
fn public_image_that_needs_credentials_is_flagged() {
    let reg = Registry::start(RegistryOptions { htpasswd: true, ..Default::default() });
    let work = tempfile::tempdir().unwrap();
    write_layout(&work.path().join("img"), 63, &[1_000], "linux", "amd64", "latest");
    policy(work.path(), &reg.host, "public");
    let mut cmd = publish(work.path());
    actions_env(&mut cmd, work.path());
    let out = run(cmd.args(["run", "-o", "json"]).env("REG_PASSWORD", PASSWORD));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let json: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["images"][0]["targets"][0]["anonymous_pull"], false);
    assert!(stderr.contains("::warning::image app is public in the policy, but"), "{stderr}");

    // On a registry that serves anonymous pulls, the probe says so and nothing is flagged.
    let open = Registry::start(RegistryOptions::default());
    let work = tempfile::tempdir().unwrap();
    write_layout(&work.path().join("img"), 64, &[1_000], "linux", "amd64", "latest");
    std::fs::write(
        work.path().join("publish.yaml"),
        format!("version: 1\nregistries:\n  home:\n    kind: registry\n    repository: {}/ml\n    insecure: true\nimages:\n  - name: app\n    source: oci:img\n    visibility: public\n", open.host),
    )
    .unwrap();
    let out = run(publish(work.path()).args(["run", "-o", "json"]));
    let json: Value = serde_json::from_str(&text(&out).0).unwrap();
    assert_eq!(json["images"][0]["targets"][0]["anonymous_pull"], true);
}

/// Runs the action's install script against a local stand-in for the release download.
fn install(files: HashMap<String, Vec<u8>>, dir: &Path) -> std::process::Output {
    install_with(files, dir, &[])
}

/// `install`, with more environment for the script (`PUBLISH_ACTION_REF`, say).
fn install_with(files: HashMap<String, Vec<u8>>, dir: &Path, env: &[(&str, &str)]) -> std::process::Output {
    let server = support::http::Server::start(move |req| {
        let name = req.target.rsplit('/').next().unwrap_or_default();
        match files.get(name) {
            Some(body) if req.target.starts_with("/publish-action/publish/releases/download/v1.2.3/") => {
                let mut r = support::http::Response::new(200);
                r.body = body.clone();
                r
            }
            _ => support::http::Response::new(404),
        }
    });
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/install-action.sh");
    Command::new("bash")
        .arg(script)
        .env("PUBLISH_DOWNLOAD_BASE", format!("http://127.0.0.1:{}", server.port))
        .env("PUBLISH_ACTION_REF", "v1.2.3")
        .env("PUBLISH_ACTION_REPOSITORY", "publish-action/publish")
        .env("PUBLISH_OS", "Linux")
        .env("PUBLISH_ARCH", "X64")
        .env("RUNNER_TEMP", dir)
        .env("GITHUB_PATH", dir.join("path.txt"))
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn release_asset(dir: &Path) -> Vec<u8> {
    let stage = dir.join("stage");
    std::fs::create_dir_all(&stage).unwrap();
    std::fs::write(stage.join("publish"), "#!/bin/sh\necho publish 1.2.3\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(stage.join("publish"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let tarball = dir.join("asset.tar.gz");
    let ok = Command::new("tar").arg("-czf").arg(&tarball).arg("-C").arg(&stage).arg("publish").status().unwrap();
    assert!(ok.success());
    std::fs::read(tarball).unwrap()
}

#[test]
fn install_step_checks_the_release_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let asset = release_asset(dir.path());
    let good = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&asset));
    let name = "publish-x86_64-unknown-linux-musl.tar.gz".to_string();

    let files = HashMap::from([
        (name.clone(), asset.clone()),
        ("checksums.txt".into(), format!("{good}  {name}\n").into_bytes()),
    ]);
    let out = install(files, dir.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let path = std::fs::read_to_string(dir.path().join("path.txt")).unwrap();
    let bin = Path::new(path.trim()).join("publish");
    let ran = Command::new(&bin).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&ran.stdout), "publish 1.2.3\n");

    let other = tempfile::tempdir().unwrap();
    let bad = "0".repeat(64);
    let files =
        HashMap::from([(name.clone(), asset), ("checksums.txt".into(), format!("{bad}  {name}\n").into_bytes())]);
    let out = install(files, other.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout
            .contains("::error title=publish install::checksum mismatch for publish-x86_64-unknown-linux-musl.tar.gz"),
        "{stdout}"
    );
    assert!(!other.path().join("path.txt").exists(), "nothing is put on the PATH after a mismatch");
    assert!(!other.path().join("publish-bin/publish").exists(), "nothing is unpacked after a mismatch");
}

/// The action's run step (scripts/run-action.sh) with `publish` on the PATH.
fn action_step(dir: &Path, inputs: &[(&str, &str)]) -> std::process::Output {
    let bin = Path::new(env!("CARGO_BIN_EXE_publish")).parent().unwrap().to_path_buf();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/run-action.sh");
    let mut step = Command::new("bash");
    step.arg(script)
        .current_dir(dir)
        .env("PATH", path)
        .env("DOCKER_CONFIG", dir.join(".none"))
        .env("PUBLISH_RETRY_BASE_MS", "10")
        .env_remove("RUST_LOG");
    actions_env(&mut step, dir);
    for (k, v) in inputs {
        step.env(k, v);
    }
    step.output().unwrap()
}

/// The matrix flow of examples/workflows/publish-matrix.yml: the plan job's step writes the
/// plan file and the `matrix` output; a publish job's step runs one entry of that plan.
#[test]
fn plan_job_feeds_matrix_jobs_that_run_the_saved_plan() {
    let reg = Registry::start(RegistryOptions { htpasswd: true, ..Default::default() });
    let work = tempfile::tempdir().unwrap();
    let image = write_layout(&work.path().join("img"), 91, &[12_000], "linux", "amd64", "latest");
    policy(work.path(), &reg.host, "private");
    let out = action_step(work.path(), &[("INPUT_COMMAND", "plan"), ("INPUT_PLAN_FILE", "plan.json")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let plan: Value = serde_json::from_slice(&std::fs::read(work.path().join("plan.json")).unwrap()).unwrap();
    assert_eq!(plan["version"], 3);
    let outputs = parse_outputs(&std::fs::read_to_string(work.path().join("output.txt")).unwrap());
    let matrix: Value = serde_json::from_str(&outputs["matrix"]).unwrap();
    let only = matrix["include"][0]["only"].as_str().unwrap().to_string();
    assert_eq!(only, "app@home");

    // A matrix job rehearsed: dry-run with the saved plan and one entry of it writes nothing.
    let out = action_step(
        work.path(),
        &[("INPUT_PLAN", "plan.json"), ("INPUT_ONLY", &only), ("INPUT_DRY_RUN", "true"), ("REG_PASSWORD", PASSWORD)],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let rehearsed: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(rehearsed["images"][0]["targets"][0]["id"], only, "{rehearsed:#}");
    let absent = reg.inspect(&format!("{}/ml/app:main", reg.host), false);
    assert!(!absent.status.success(), "a dry run pushed the image");

    std::fs::remove_file(work.path().join("output.txt")).unwrap();
    let out =
        action_step(work.path(), &[("INPUT_PLAN", "plan.json"), ("INPUT_ONLY", &only), ("REG_PASSWORD", PASSWORD)]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["images"][0]["digest"], image.manifest_digest);
    assert!(!stdout.contains(PASSWORD) && !stderr.replace(&format!("::add-mask::{PASSWORD}"), "").contains(PASSWORD));
    let pushed = reg.inspect(&format!("{}/ml/app:main", reg.host), false);
    assert!(pushed.status.success());
}

/// The `uses:` lines users copy name the action's repository as the release workflow
/// publishes it (`<org>/publish-action@v1`), in the README, the docs and the examples.
#[test]
fn every_documented_uses_line_names_the_action_repository() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let release = std::fs::read_to_string(root.join(".github/workflows/release.yml")).unwrap();
    assert!(release.contains("uses: <org>/publish-action@v1"), "release.yml says how the action is installed");
    let mut files = vec![root.join("README.md")];
    for dir in ["docs", "examples/workflows"] {
        for e in std::fs::read_dir(root.join(dir)).unwrap() {
            files.push(e.unwrap().path());
        }
    }
    let mut seen = 0;
    for f in files.iter().filter(|f| f.extension().is_some_and(|e| e == "md" || e == "yml")) {
        let text = std::fs::read_to_string(f).unwrap();
        for line in text.lines().filter(|l| l.contains("uses:") && l.contains("publish")) {
            let target = line.split("uses:").nth(1).unwrap().split_whitespace().next().unwrap_or_default();
            if target.starts_with("actions/") {
                continue;
            }
            seen += 1;
            assert!(target.ends_with("/publish-action@v1"), "{}: {line}", f.display());
        }
    }
    assert!(seen >= 4, "{seen} uses: lines");
}

/// An action pinned to a commit SHA installs the release named by the crate version in the
/// action's own Cargo.toml at that commit; without a version there, it fails naming the
/// `version` input; a branch name fails the same way.
#[test]
fn pinning_the_action_to_a_commit_installs_the_release_of_its_cargo_version() {
    let dir = tempfile::tempdir().unwrap();
    let asset = release_asset(dir.path());
    let good = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&asset));
    let name = "publish-x86_64-unknown-linux-musl.tar.gz".to_string();
    let files =
        HashMap::from([(name.clone(), asset), ("checksums.txt".into(), format!("{good}  {name}\n").into_bytes())]);
    let action = dir.path().join("action");
    std::fs::create_dir_all(&action).unwrap();
    std::fs::write(action.join("Cargo.toml"), "[package]\nname = \"publish-action\"\nversion = \"1.2.3\"\n").unwrap();
    let sha = "0123456789abcdef0123456789abcdef01234567";
    let action_path = action.to_string_lossy().to_string();
    let out =
        install_with(files.clone(), dir.path(), &[("PUBLISH_ACTION_REF", sha), ("GITHUB_ACTION_PATH", &action_path)]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("installing release v1.2.3"), "{stdout}");

    std::fs::write(action.join("Cargo.toml"), "[package]\nname = \"publish-action\"\n").unwrap();
    let other = tempfile::tempdir().unwrap();
    let out =
        install_with(files.clone(), other.path(), &[("PUBLISH_ACTION_REF", sha), ("GITHUB_ACTION_PATH", &action_path)]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("set input version"), "{stdout}");

    let third = tempfile::tempdir().unwrap();
    let out = install_with(files, third.path(), &[("PUBLISH_ACTION_REF", "main")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("set input version"), "{stdout}");
}

/// The archive `scripts/package` built for this host (scripts/test builds it before the tests,
/// into target/package): installed by the action's install script from a local server, the
/// binary runs `--version` (version and commit) and a `check`.
#[test]
fn the_packaged_release_archive_installs_and_runs() {
    let package = std::env::var_os("PUBLISH_PACKAGE_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/package"));
    let archive = std::fs::read_dir(&package).ok().and_then(|entries| {
        entries.filter_map(Result::ok).map(|e| e.path()).find(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy().to_string();
            name.starts_with("publish-") && name.ends_with(".tar.gz")
        })
    });
    let Some(archive) = archive else {
        println!("skipped: no packaged archive in {} (scripts/test runs scripts/package first)", package.display());
        return;
    };
    let name = archive.file_name().unwrap().to_string_lossy().to_string();
    let target = name.trim_start_matches("publish-").trim_end_matches(".tar.gz").to_string();
    let files = HashMap::from([
        (name.clone(), std::fs::read(&archive).unwrap()),
        ("checksums.txt".to_string(), std::fs::read(package.join("checksums.txt")).unwrap()),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let out = install_with(files, dir.path(), &[("PUBLISH_TARGET", &target)]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let path = std::fs::read_to_string(dir.path().join("path.txt")).unwrap();
    let bin = Path::new(path.trim()).join("publish");
    let version = Command::new(&bin).arg("--version").output().unwrap();
    let version = String::from_utf8_lossy(&version.stdout).to_string();
    assert!(
        version.starts_with(&format!("publish {} (commit ", env!("CARGO_PKG_VERSION"))) && !version.contains("unknown"),
        "{version}"
    );
    write_layout(&dir.path().join("img"), 95, &[1_000], "linux", "amd64", "latest");
    policy(dir.path(), "127.0.0.1:5000", "public");
    let check = Command::new(&bin)
        .arg("check")
        .current_dir(dir.path())
        .env("GITHUB_SHA", "0123456789abcdef0123456789abcdef01234567")
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    println!("installed {name} ({}): {}", target, version.trim());
}

/// `publish --version`: the version and the commit this test binary's tree is at.
#[test]
fn version_names_the_commit_it_was_built_from() {
    let out = Command::new(env!("CARGO_BIN_EXE_publish")).arg("--version").output().unwrap();
    let version = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(version.starts_with(&format!("publish {} (commit ", env!("CARGO_PKG_VERSION"))), "{version}");
    let head =
        Command::new("git").args(["rev-parse", "--short=12", "HEAD"]).current_dir(env!("CARGO_MANIFEST_DIR")).output();
    if let Some(head) = head.ok().filter(|h| h.status.success()) {
        let head = String::from_utf8_lossy(&head.stdout).trim().to_string();
        assert!(version.contains(&head), "{version} is not at {head}");
    }
}

/// A recording stand-in for `gh`: every call is logged; releases live as directories of
/// assets; after every call, a major release (`v1`) without checksums.txt is logged as a
/// violation.
fn fake_gh(dir: &Path, v1_exists: bool) -> std::path::PathBuf {
    let bin = dir.join("bin");
    let state = dir.join("state");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(state.join("refs")).unwrap();
    if v1_exists {
        std::fs::create_dir_all(state.join("releases/v1")).unwrap();
        std::fs::write(state.join("releases/v1/checksums.txt"), "old\n").unwrap();
        std::fs::write(state.join("releases/v1/publish-old.tar.gz"), "old\n").unwrap();
        std::fs::write(state.join("refs/v1"), "oldsha").unwrap();
    }
    let script = format!(
        r#"#!/usr/bin/env bash
state="{state}"
echo "$*" >> "$state/calls.log"
check() {{
  if [ -d "$state/releases/v1" ] && [ ! -f "$state/releases/v1/checksums.txt" ]; then echo "VIOLATION after: $*" >> "$state/calls.log"; fi
}}
trap check EXIT
files() {{ for a in "$@"; do case "$a" in *.tar.gz|checksums.txt) echo "$a";; esac; done; }}
case "$1 $2" in
  "release create") mkdir -p "$state/releases/$3"; for f in $(files "$@"); do cp "$f" "$state/releases/$3/"; done ;;
  "release upload") [ -d "$state/releases/$3" ] || exit 1; for f in $(files "$@"); do cp "$f" "$state/releases/$3/"; done ;;
  "release view") [ -d "$state/releases/$3" ] || exit 1 ;;
  "release edit") [ -d "$state/releases/$3" ] || exit 1 ;;
  "release delete") rm -rf "$state/releases/$3" ;;
  "api repos/o/r/git/ref/tags/v1") [ -f "$state/refs/v1" ] || exit 1 ;;
  "api -X") echo "$GITHUB_SHA" > "$state/refs/v1" ;;
  *) echo "unexpected gh call: $*" >&2; exit 3 ;;
esac
"#,
        state = state.display()
    );
    std::fs::write(bin.join("gh"), script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(bin.join("gh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

/// release.yml's release job (scripts/release) against a recording `gh`: the version's
/// release, then the major release updated in place when it exists (upload with --clobber,
/// then edit), created only when missing, never deleted; no call leaves it without
/// checksums.txt; the major tag moves to the released commit.
#[test]
fn the_release_script_keeps_the_major_release_whole() {
    for v1_exists in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let bin = fake_gh(dir.path(), v1_exists);
        let assets = dir.path().join("dist");
        std::fs::create_dir_all(&assets).unwrap();
        for t in ["x86_64-unknown-linux-musl", "aarch64-apple-darwin"] {
            std::fs::write(assets.join(format!("publish-{t}.tar.gz")), t).unwrap();
        }
        let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
        let out = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/release"))
            .current_dir(&assets)
            .env("PATH", path)
            .env("TAG", "v1.4.0")
            .env("REPO", "o/r")
            .env("GITHUB_SHA", "abc123")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let log = std::fs::read_to_string(dir.path().join("state/calls.log")).unwrap();
        assert!(!log.contains("VIOLATION") && !log.contains("release delete"), "{log}");
        let calls: Vec<String> = log.lines().map(|l| l.split(' ').take(3).collect::<Vec<_>>().join(" ")).collect();
        let expected: &[&str] = if v1_exists {
            &[
                "release create v1.4.0",
                "api repos/o/r/git/ref/tags/v1",
                "release view v1",
                "release upload v1",
                "release edit v1",
                "api -X PATCH",
            ]
        } else {
            &["release create v1.4.0", "api repos/o/r/git/ref/tags/v1", "api -X POST", "release create v1"]
        };
        assert_eq!(calls, expected, "{log}");
        let v1 = dir.path().join("state/releases/v1");
        let checksums = std::fs::read_to_string(v1.join("checksums.txt")).unwrap();
        assert!(checksums.contains("publish-x86_64-unknown-linux-musl.tar.gz"), "{checksums}");
        assert_eq!(std::fs::read_to_string(dir.path().join("state/refs/v1")).unwrap().trim(), "abc123");
        assert!(log.contains("--clobber") || !v1_exists, "{log}");
    }
}
