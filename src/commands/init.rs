//! `publish init`: writes a commented `publish.yaml` and `.github/workflows/publish.yml` from
//! what it finds in the checkout — the git remote's GitHub owner (GHCR), an OCI layout, OCI
//! archive or `docker save` tarball in the tree, a `RUNPOD_API_KEY` in the environment — and
//! refuses to overwrite either file. The result passes `publish check` once the image it names
//! exists (the workflow builds it), and actionlint (tested).

use std::path::{Path, PathBuf};

use super::{ExitStatus, UsageError};
use crate::credentials::Env;

#[derive(Debug, Clone)]
pub struct InitArgs {
    pub dir: PathBuf,
    /// Write a self-hosted registry set-up instead.
    pub self_hosted: Option<SelfHostedArgs>,
}

#[derive(Debug, Clone)]
pub struct SelfHostedArgs {
    pub dir: PathBuf,
    pub host: String,
    pub listen: String,
    pub backend_port: u16,
}

/// Exit 2 naming the first of `paths` that exists: `init` never overwrites.
fn refuse_existing<'a>(paths: impl IntoIterator<Item = &'a Path>) -> Result<(), UsageError> {
    match paths.into_iter().find(|p| std::fs::symlink_metadata(p).is_ok()) {
        Some(p) => Err(UsageError::Message(format!(
            "{} exists: publish init never overwrites; move it away to start again",
            p.display()
        ))),
        None => Ok(()),
    }
}

/// Writes a new file (and its directory); `create_new`, so a file that appeared meanwhile is
/// not overwritten either.
fn write_new(path: &Path, text: &str, executable: bool) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(path)?;
    std::io::Write::write_all(&mut f, text.as_bytes())?;
    if executable {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}

/// `publish init --self-hosted DIR`: distribution + nginx + htpasswd files, never overwriting.
fn self_hosted(args: &SelfHostedArgs) -> anyhow::Result<ExitStatus> {
    std::fs::create_dir_all(&args.dir)?;
    let dir = args.dir.canonicalize()?;
    let files: Vec<(PathBuf, String, bool)> = vec![
        (dir.join("registry.yml"), crate::selfhost::distribution_config(&dir, args.backend_port), false),
        (
            dir.join("nginx/nginx.conf"),
            crate::selfhost::nginx_conf(
                &dir,
                &args.listen,
                args.backend_port,
                &dir.join("tls/server.pem"),
                &dir.join("tls/server.key"),
            ),
            false,
        ),
        (dir.join("setup.sh"), crate::selfhost::setup_script(&args.host), true),
        (dir.join("run.sh"), crate::selfhost::run_script(), true),
        (dir.join("gc.sh"), crate::selfhost::gc_script(), true),
    ];
    refuse_existing(files.iter().map(|(p, _, _)| p.as_path()))?;
    for (p, text, executable) in &files {
        write_new(p, text, *executable)?;
    }
    super::print_out(&format!(
        "wrote {d}/registry.yml, nginx/nginx.conf, setup.sh, run.sh and gc.sh
next: REGISTRY_USER=ci REGISTRY_PASSWORD=… {d}/setup.sh   (a private CA, a certificate for {host}, the first user)
      {d}/run.sh                                              (distribution on 127.0.0.1:{b}, nginx on {l})
then in publish.yaml: kind: registry, repository: {host}/ml, ca_file: {d}/tls/ca.pem,
      credentials: {{username: ci, password_env: REGISTRY_PASSWORD}}
",
        d = dir.display(),
        host = args.host,
        b = args.backend_port,
        l = args.listen
    ));
    Ok(ExitStatus::Success)
}

/// What `init` found.
#[derive(Debug, Default)]
struct Found {
    owner: Option<String>,
    repo: Option<String>,
    /// `TRANSPORT:PATH`, relative to the directory.
    source: Option<String>,
    runpod: bool,
    /// A git checkout without a commit yet: `git.short_sha` has nothing to come from.
    no_commit: bool,
}

/// `git@github.com:Owner/Repo.git`, `https://github.com/Owner/Repo(.git)` → (owner, repo).
fn github_remote(url: &str) -> Option<(String, String)> {
    let rest = url
        .strip_prefix("git@github.com:")
        .or_else(|| url.strip_prefix("ssh://git@github.com/"))
        .or_else(|| url.strip_prefix("https://github.com/"))
        .or_else(|| url.strip_prefix("http://github.com/"))?;
    let mut parts = rest.trim_end_matches('/').trim_end_matches(".git").splitn(2, '/');
    let (owner, repo) = (parts.next()?, parts.next()?);
    let ok = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    (ok(owner) && ok(repo)).then(|| (owner.to_string(), repo.to_string()))
}

/// A repository path component: lowercase letters and digits separated by `-`.
fn path_component(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    let out = out.trim_end_matches('-').to_string();
    if out.is_empty() { "app".into() } else { out }
}

/// The transport of a tarball: `oci-archive` (has `oci-layout`) or `docker-archive`
/// (`manifest.json`), from its first entries.
fn archive_kind(path: &Path) -> Option<&'static str> {
    let file = std::fs::File::open(path).ok()?;
    let mut archive = tar::Archive::new(std::io::Read::take(file, 64 * 1024 * 1024));
    for entry in archive.entries().ok()?.take(10_000) {
        let entry = entry.ok()?;
        let name = entry.path().ok()?.to_string_lossy().trim_start_matches("./").to_string();
        match name.as_str() {
            "oci-layout" => return Some("oci-archive"),
            "manifest.json" => return Some("docker-archive"),
            _ => {}
        }
    }
    None
}

/// The first image source in the tree (three levels down, skipping `.git`, `target`,
/// `node_modules` and hidden directories), in a stable order.
fn find_source(dir: &Path) -> Option<String> {
    fn walk(root: &Path, dir: &Path, depth: u32) -> Option<String> {
        let rel = |p: &Path| p.strip_prefix(root).ok().map(|r| r.to_string_lossy().to_string());
        if depth > 0 && dir.join("oci-layout").is_file() && dir.join("index.json").is_file() {
            return Some(format!("oci:{}", rel(dir)?));
        }
        let mut entries: Vec<_> = std::fs::read_dir(dir).ok()?.filter_map(Result::ok).map(|e| e.path()).collect();
        entries.sort();
        for p in &entries {
            let meta = std::fs::symlink_metadata(p).ok()?;
            if meta.is_file()
                && p.extension().is_some_and(|e| e == "tar")
                && let Some(kind) = archive_kind(p)
            {
                return Some(format!("{kind}:{}", rel(p)?));
            }
        }
        if depth >= 3 {
            return None;
        }
        for p in entries {
            let name = p.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
            let skip = name.starts_with('.') || ["target", "node_modules"].contains(&name.as_str());
            if !skip
                && std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir())
                && let Some(found) = walk(root, &p, depth + 1)
            {
                return Some(found);
            }
        }
        None
    }
    walk(dir, dir, 0)
}

fn detect(dir: &Path, env: &Env) -> Found {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_string())
    };
    let remote = git(&["config", "--get", "remote.origin.url"]).and_then(|u| github_remote(&u));
    let (owner, repo) = match remote {
        Some((o, r)) => (Some(o), Some(r)),
        None => (env.get("GITHUB_REPOSITORY_OWNER").cloned(), None),
    };
    let no_commit = git(&["rev-parse", "--verify", "-q", "HEAD"]).is_none()
        && git(&["rev-parse", "--is-inside-work-tree"]).as_deref() == Some("true");
    Found {
        owner,
        repo,
        source: find_source(dir),
        runpod: env.get("RUNPOD_API_KEY").is_some_and(|v| !v.is_empty()),
        no_commit,
    }
}

fn policy(found: &Found, name: &str) -> String {
    let owner = found.owner.as_deref().map(path_component).unwrap_or_else(|| "my-org".into());
    let owner_note = if found.owner.is_some() { "from the git remote" } else { "set your GitHub user or organisation" };
    let (source, source_note) = match &found.source {
        Some(s) => (s.clone(), "found in the checkout".to_string()),
        None => (
            "oci-archive:build/image.tar".to_string(),
            "the workflow builds it here; none was found in the checkout".to_string(),
        ),
    };
    let mut out = format!(
        "# publish.yaml, written by `publish init`: check it with `publish check`, preview with
# `publish --dry-run`. Reference: docs/ in the publish-action repository.
version: 1

registries:
  ghcr:
    kind: ghcr
    repository: ghcr.io/{owner}          # {owner_note}; the job's GITHUB_TOKEN pushes here

images:
  - name: {name}
    source: {source}      # {source_note}
    tags: [latest, \"sha-{{{{ git.short_sha }}}}\"]
    visibility: public                  # private images need a registry that allows them
    platforms: [linux/amd64]            # what RunPod runs
    registries: [ghcr]                  # candidates, in order of preference
    # pulls_per_month: 30               # lets selection check free transfer quotas

# Keyless signing from GitHub Actions (the workflow grants id-token: write); or
# key: cosign.key with COSIGN_PASSWORD.
signing:
  keyless: true
"
    );
    if found.runpod {
        out.push_str(&format!(
            "
# RUNPOD_API_KEY is set: a RunPod template follows the image once it is published and signed.
runpod:
  templates:
    - name: {name}
      image: {name}
      body:
        disk: 20
        # args: python3 /app/handler.py
        env:
          IMAGE_DIGEST: \"{{{{ image.digest }}}}\"
"
        ));
    }
    out
}

/// `mkdir -p DIR && ` for the directory a build writes `path` into (none for the checkout's
/// top level): `docker save -o` and buildx's `dest=` do not create it.
fn mkdir_for(path: &str) -> String {
    match Path::new(path).parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) => format!("mkdir -p {} && ", dir.display()),
        None => String::new(),
    }
}

fn workflow(found: &Found) -> String {
    let transport = found.source.as_deref().and_then(|s| s.split_once(':')).map(|(t, _)| t);
    // buildx's OCI output needs a builder of the docker-container driver (the runner's default
    // docker driver refuses it); `--load` into the daemon works with the default one.
    let buildx = if transport == Some("docker-archive") {
        ""
    } else {
        "\n      - name: A builder that writes OCI output\n        uses: docker/setup-buildx-action@v3 # pin to a commit SHA in production"
    };
    let build = match found.source.as_deref().and_then(|s| s.split_once(':')) {
        Some(("oci", path)) => format!(
            "docker buildx build --platform linux/amd64 --output type=oci,dest={path}.tar . && mkdir -p {path} && tar -xf {path}.tar -C {path}"
        ),
        Some(("docker-archive", path)) => format!(
            "{}docker buildx build --platform linux/amd64 --load -t image:ci . && docker save image:ci -o {path}",
            mkdir_for(path)
        ),
        Some((_, path)) => {
            format!("{}docker buildx build --platform linux/amd64 --output type=oci,dest={path} .", mkdir_for(path))
        }
        None => "mkdir -p build && docker buildx build --platform linux/amd64 --output type=oci,dest=build/image.tar ."
            .into(),
    };
    let runpod_env =
        if found.runpod { "\n        env:\n          RUNPOD_API_KEY: ${{ secrets.RUNPOD_API_KEY }}" } else { "" };
    format!(
        "# Written by `publish init`: on every merge to main, build the image, push it to the
# registry publish.yaml selects, sign it keyless and update RunPod.
name: publish

on:
  push:
    branches: [main]

permissions: {{}}

# One publish at a time. Runs that overlap anyway (a re-run of an older run) never move RunPod
# or the main tag back to an older image: publish says so and exits 3.
concurrency:
  group: publish-main
  cancel-in-progress: false

jobs:
  publish:
    runs-on: ubuntu-latest
    timeout-minutes: 60
    permissions:
      contents: read
      packages: write # push to ghcr.io with GITHUB_TOKEN
      id-token: write # keyless signing
    steps:
      - uses: actions/checkout@11bd71901bbe5b1630ceea73d27597364c9af683 # v4.2.2
        with:
          persist-credentials: false
          fetch-depth: 0 # the history that orders two images' commits{buildx}
      - name: Build the image
        run: {build}
      - name: Publish
        uses: my-org/publish-action@v1 # pin to a commit SHA in production
        with:
          policy: publish.yaml{runpod_env}
"
    )
}

pub fn init(args: InitArgs, env: &Env) -> anyhow::Result<ExitStatus> {
    if let Some(s) = &args.self_hosted {
        return self_hosted(s);
    }
    let dir = &args.dir;
    if !dir.is_dir() {
        return Err(UsageError::Message(format!("{}: not a directory", dir.display())).into());
    }
    let policy_path = dir.join("publish.yaml");
    let workflow_path = dir.join(".github/workflows/publish.yml");
    refuse_existing([policy_path.as_path(), workflow_path.as_path()])?;
    let found = detect(dir, env);
    let name = found
        .repo
        .as_deref()
        .map(path_component)
        .or_else(|| dir.canonicalize().ok().and_then(|d| d.file_name().map(|n| path_component(&n.to_string_lossy()))))
        .unwrap_or_else(|| "app".into());
    write_new(&policy_path, &policy(&found, &name), false)?;
    if let Err(e) = write_new(&workflow_path, &workflow(&found), false) {
        let _ = std::fs::remove_file(&policy_path);
        return Err(e);
    }
    let mut s = format!("wrote {} and {}\n", policy_path.display(), workflow_path.display());
    match &found.owner {
        Some(o) => s.push_str(&format!("  registry: ghcr.io/{} (from the git remote)\n", path_component(o))),
        None => s.push_str("  registry: ghcr.io/my-org: no GitHub remote found, edit repository:\n"),
    }
    match &found.source {
        Some(src) => s.push_str(&format!("  image {name}: {src}\n")),
        None => s.push_str(&format!(
            "  image {name}: oci-archive:build/image.tar (none found: build it there before `publish check`)\n"
        )),
    }
    if found.runpod {
        s.push_str("  RunPod: a template for the image (RUNPOD_API_KEY is set)\n");
    } else {
        s.push_str(
            "  RunPod: no template, as RUNPOD_API_KEY is not set here: export it and run init again, or add a runpod: section (docs/runpod.md)\n",
        );
    }
    if found.no_commit {
        s.push_str(
            "next: make a first commit (the sha- tag is made from it), then publish check, then publish --dry-run\n",
        );
    } else {
        s.push_str("next: publish check, then publish --dry-run\n");
    }
    super::print_out(&s);
    Ok(ExitStatus::Success)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_remotes_give_owner_and_repository() {
        for url in [
            "git@github.com:Octo-Org/Comfy-UI.git",
            "https://github.com/Octo-Org/Comfy-UI",
            "ssh://git@github.com/Octo-Org/Comfy-UI.git",
        ] {
            assert_eq!(github_remote(url), Some(("Octo-Org".into(), "Comfy-UI".into())), "{url}");
        }
        assert_eq!(github_remote("https://gitlab.com/a/b"), None);
        assert_eq!(path_component("Comfy_UI.v2"), "comfy-ui-v2");
        assert_eq!(path_component("--"), "app");
    }
}
