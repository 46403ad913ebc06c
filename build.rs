//! Records the commit the binary is built from, for `publish --version`:
//! `PUBLISH_BUILD_COMMIT` when set, else `git rev-parse` in the source tree, else `unknown`
//! (a crate tarball).

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=PUBLISH_BUILD_COMMIT");
    // `.git` itself when it is a file (a worktree), else what moves when HEAD does.
    for path in [".git", ".git/HEAD", ".git/refs/heads", ".git/packed-refs"] {
        if std::path::Path::new(path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    let from_git = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    let commit = std::env::var("PUBLISH_BUILD_COMMIT").ok().filter(|s| !s.is_empty()).or(from_git);
    println!("cargo:rustc-env=PUBLISH_COMMIT={}", commit.as_deref().unwrap_or("unknown"));
}
