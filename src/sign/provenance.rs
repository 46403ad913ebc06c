//! Where an image came from, written into its signatures so that a later run can order two
//! images (a re-run of an older workflow must not move RunPod back): cosign's `optional` map in
//! the legacy payload (what `cosign sign -a KEY=VALUE` writes and `cosign verify -a` checks),
//! and the statement's predicate in a bundle. From GitHub's variables; outside GitHub Actions,
//! the commit and branch from `git` in the working directory.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::credentials::Env;

/// Annotation → value, in key order (as cosign, through Go's maps, writes them).
pub type Annotations = BTreeMap<String, String>;

/// The annotations, and the GitHub Actions variable each comes from.
pub const KEYS: [(&str, &str); 6] = [
    ("git.sha", "GITHUB_SHA"),
    ("git.ref", "GITHUB_REF"),
    ("github.repository", "GITHUB_REPOSITORY"),
    ("github.run_id", "GITHUB_RUN_ID"),
    ("github.run_attempt", "GITHUB_RUN_ATTEMPT"),
    ("github.workflow_ref", "GITHUB_WORKFLOW_REF"),
];

/// A value longer than this is left out (none of these is ever near it).
const MAX_VALUE: usize = 512;

/// The annotations this run's signatures carry; `git` runs in `dir` (the policy's directory,
/// as for tag templates), else in the working directory.
pub fn from_environment(env: &Env, dir: Option<&Path>) -> Annotations {
    let mut out = Annotations::new();
    for (key, var) in KEYS {
        if let Some(v) = env.get(var).filter(|v| !v.is_empty() && v.len() <= MAX_VALUE) {
            out.insert(key.to_string(), v.clone());
        }
    }
    if !out.contains_key("git.sha")
        && let Some(sha) = git(dir, &["rev-parse", "HEAD"])
    {
        out.insert("git.sha".into(), sha);
    }
    if !out.contains_key("git.ref")
        && let Some(r) = git(dir, &["symbolic-ref", "-q", "HEAD"])
    {
        out.insert("git.ref".into(), r);
    }
    out
}

/// One line of `git`'s output in `dir`, when it succeeds.
pub(crate) fn git(dir: Option<&Path>, args: &[&str]) -> Option<String> {
    let mut cmd = Command::new("git");
    if let Some(d) = dir.filter(|d| !d.as_os_str().is_empty()) {
        cmd.arg("-C").arg(d);
    }
    let out = cmd.args(args).stdin(Stdio::null()).stderr(Stdio::null()).output().ok()?;
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !s.is_empty() && s.len() <= MAX_VALUE && !s.contains('\n')).then_some(s)
}

/// The annotations a signature's claims carry: string values of `map` (the legacy payload's
/// `optional`, a bundle statement's `predicate.annotations`).
pub fn read(map: Option<&serde_json::Value>) -> Annotations {
    map.and_then(serde_json::Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
        .filter(|(k, v)| k.len() <= MAX_VALUE && v.len() <= MAX_VALUE)
        .filter(|(k, v)| !k.chars().chain(v.chars()).any(char::is_control))
        .collect()
}
