//! SLSA Provenance v1 for the run that published an image, field by field as GitHub's own
//! attestations write it (`@actions/attest`'s `buildSLSAProvenancePredicate`), so that one
//! policy checks both. In GitHub Actions every field comes from the run's variables (and,
//! keyless, the certificate's identity, which is `job_workflow_ref` on GitHub's server);
//! elsewhere the same shape comes from the checkout's git, and the builder says local.
//! docs/signing.md lists each field with its source.

use std::path::Path;

use serde_json::{Map, Value, json};

use crate::credentials::Env;

pub const PREDICATE_TYPE: &str = "https://slsa.dev/provenance/v1";
/// GitHub's build type for a workflow run.
pub const GITHUB_BUILD_TYPE: &str = "https://actions.github.io/buildtypes/workflow/v1";
/// A run outside GitHub Actions: nothing vouches for it but the signer.
pub const LOCAL_BUILD_TYPE: &str = "urn:publish:buildtypes:local:v1";
pub const LOCAL_BUILDER: &str = "urn:publish:builders:local";

/// A value longer than this is left out (none of GitHub's is ever near it).
const MAX_VALUE: usize = 1024;

/// When the run started and when the statement was made (seconds since the epoch).
#[derive(Debug, Clone, Copy)]
pub struct Times {
    pub started: i64,
    pub finished: i64,
}

/// The predicate for this run. `builder` is the keyless certificate's identity (GitHub's
/// `job_workflow_ref` as a URL), when signing keylessly; `git_dir` is the policy's checkout.
pub fn predicate(env: &Env, builder: Option<&str>, git_dir: Option<&Path>, times: Times) -> Value {
    let var = |k: &str| env.get(k).filter(|v| !v.is_empty() && v.len() <= MAX_VALUE).cloned();
    let in_actions = var("GITHUB_ACTIONS").as_deref() == Some("true") && var("GITHUB_REPOSITORY").is_some();
    let mut p = if in_actions { actions(&var, builder) } else { local(git_dir) };
    let metadata = p.pointer_mut("/runDetails/metadata").and_then(Value::as_object_mut);
    if let Some(m) = metadata {
        m.insert("startedOn".into(), json!(crate::types::rfc3339(times.started)));
        m.insert("finishedOn".into(), json!(crate::types::rfc3339(times.finished)));
    }
    p
}

/// GitHub's fields, from the run's variables.
fn actions(var: &dyn Fn(&str) -> Option<String>, builder: Option<&str>) -> Value {
    let server = var("GITHUB_SERVER_URL").unwrap_or_else(|| "https://github.com".into());
    let repository = var("GITHUB_REPOSITORY").unwrap_or_default();
    let git_ref = var("GITHUB_REF").unwrap_or_default();
    let workflow_ref = var("GITHUB_WORKFLOW_REF").unwrap_or_default();
    // `owner/repo/.github/workflows/x.yml@refs/heads/main` → `.github/workflows/x.yml`
    let path = workflow_ref.strip_prefix(&format!("{repository}/")).unwrap_or(&workflow_ref);
    let path = path.rsplit_once('@').map_or(path, |(p, _)| p);
    let mut github = Map::new();
    for (key, name) in [
        ("event_name", "GITHUB_EVENT_NAME"),
        ("repository_id", "GITHUB_REPOSITORY_ID"),
        ("repository_owner_id", "GITHUB_REPOSITORY_OWNER_ID"),
        ("runner_environment", "RUNNER_ENVIRONMENT"),
    ] {
        if let Some(v) = var(name) {
            github.insert(key.into(), json!(v));
        }
    }
    let builder_id = match builder.filter(|b| b.starts_with(&format!("{server}/"))) {
        Some(identity) => identity.to_string(),
        None => format!("{server}/{workflow_ref}"),
    };
    let run = format!(
        "{server}/{repository}/actions/runs/{}/attempts/{}",
        var("GITHUB_RUN_ID").unwrap_or_default(),
        var("GITHUB_RUN_ATTEMPT").unwrap_or_else(|| "1".into())
    );
    json!({
        "buildDefinition": {
            "buildType": GITHUB_BUILD_TYPE,
            "externalParameters": {
                "workflow": {"ref": git_ref, "repository": format!("{server}/{repository}"), "path": path}
            },
            "internalParameters": {"github": github},
            "resolvedDependencies": [{
                "uri": format!("git+{server}/{repository}@{git_ref}"),
                "digest": {"gitCommit": var("GITHUB_SHA").unwrap_or_default()}
            }]
        },
        "runDetails": {
            "builder": {"id": builder_id},
            "metadata": {"invocationId": run}
        }
    })
}

/// The same shape from the checkout: its origin (without credentials), branch and commit; a
/// value git cannot give is left out.
fn local(dir: Option<&Path>) -> Value {
    let git = |args: &[&str]| crate::sign::provenance::git(dir, args);
    let repository = git(&["remote", "get-url", "origin"]).map(|u| without_credentials(&u)).unwrap_or_default();
    let git_ref = git(&["symbolic-ref", "-q", "HEAD"]).unwrap_or_default();
    let mut dependency = Map::new();
    if !repository.is_empty() {
        dependency.insert("uri".into(), json!(format!("git+{repository}@{git_ref}")));
    }
    if let Some(commit) = git(&["rev-parse", "HEAD"]) {
        dependency.insert("digest".into(), json!({"gitCommit": commit}));
    }
    let dependencies: Vec<Value> = (!dependency.is_empty()).then_some(Value::Object(dependency)).into_iter().collect();
    json!({
        "buildDefinition": {
            "buildType": LOCAL_BUILD_TYPE,
            "externalParameters": {"workflow": {"ref": git_ref, "repository": repository, "path": policy_path(dir)}},
            "resolvedDependencies": dependencies
        },
        "runDetails": {"builder": {"id": LOCAL_BUILDER}, "metadata": {}}
    })
}

/// The policy's directory relative to the checkout's top (where a workflow's path would be).
fn policy_path(dir: Option<&Path>) -> String {
    crate::sign::provenance::git(dir, &["rev-parse", "--show-prefix"])
        .unwrap_or_default()
        .trim_end_matches('/')
        .to_string()
}

/// A remote URL with any `user:password@`, query and fragment taken out: a token in a clone
/// URL is a secret.
pub fn without_credentials(url: &str) -> String {
    let url = url.split(['?', '#']).next().unwrap_or_default();
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            let path = if path.is_empty() { String::new() } else { format!("/{path}") };
            format!("{scheme}://{host}{path}")
        }
        // scp-like `git@github.com:owner/repo.git`: the user is not a secret.
        None => url.to_string(),
    }
}

/// The predicate's key fields, for `publish verify --attestation`: source commit, workflow,
/// builder.
pub fn summary(p: &Value) -> Vec<(&'static str, String)> {
    let s = |ptr: &str| p.pointer(ptr).and_then(Value::as_str).unwrap_or_default().to_string();
    let mut out = Vec::new();
    let commit = s("/buildDefinition/resolvedDependencies/0/digest/gitCommit");
    let source = s("/buildDefinition/resolvedDependencies/0/uri");
    out.push(("source", format!("{source} ({commit})").replace(" ()", "")));
    let workflow = format!(
        "{} {} @ {}",
        s("/buildDefinition/externalParameters/workflow/repository"),
        s("/buildDefinition/externalParameters/workflow/path"),
        s("/buildDefinition/externalParameters/workflow/ref")
    );
    out.push(("workflow", workflow));
    out.push(("builder", s("/runDetails/builder/id")));
    let run = s("/runDetails/metadata/invocationId");
    if !run.is_empty() {
        out.push(("run", run));
    }
    out
}

/// The source commit a provenance predicate names.
pub fn commit(p: &Value) -> Option<&str> {
    p.pointer("/buildDefinition/resolvedDependencies/0/digest/gitCommit")
        .and_then(Value::as_str)
        .filter(|c| !c.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_stay_in_a_remote_url() {
        assert_eq!(
            without_credentials("https://x-access-token:ghs_secret@github.com/o/r.git"),
            "https://github.com/o/r.git"
        );
        assert_eq!(without_credentials("https://github.com/o/r"), "https://github.com/o/r");
        assert_eq!(without_credentials("git@github.com:o/r.git"), "git@github.com:o/r.git");
        assert_eq!(
            without_credentials("https://gitlab.example/o/r.git?private_token=glpat-x#f"),
            "https://gitlab.example/o/r.git"
        );
    }

    #[test]
    fn the_workflow_path_is_the_workflow_ref_without_repository_and_ref() {
        let env: Env = [
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_REPOSITORY", "octo/app"),
            ("GITHUB_WORKFLOW_REF", "octo/app/.github/workflows/publish.yml@refs/heads/main"),
            ("GITHUB_REF", "refs/heads/main"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let p = predicate(&env, None, None, Times { started: 0, finished: 1 });
        assert_eq!(
            p.pointer("/buildDefinition/externalParameters/workflow/path"),
            Some(&json!(".github/workflows/publish.yml"))
        );
        assert_eq!(
            p.pointer("/runDetails/builder/id"),
            Some(&json!("https://github.com/octo/app/.github/workflows/publish.yml@refs/heads/main"))
        );
        assert_eq!(p.pointer("/runDetails/metadata/finishedOn"), Some(&json!("1970-01-01T00:00:01Z")));
    }
}
