//! Checking and lowering the policy, a section at a time (`registries:` in `registry`,
//! `images:` in `images`, `runpod:` in `runpod`; signing and transfer here). All mistakes are collected and
//! reported together.

mod images;
mod registry;
mod runpod;

use std::collections::HashSet;
use std::path::Path;

use minijinja::{Environment, UndefinedBehavior};

use super::diag::{Diagnostic, Diagnostics};
use super::located::Located;
use super::model::{self, Policy};
use super::resolved::*;
use crate::reference::is_loopback_host;
use crate::types::ByteSize;
use images::resolve_images;
use registry::resolve_registry;
use runpod::resolve_runpod;

/// Template work allowed per render: ample for any real tag or body, and a loop that would
/// run for minutes (or grow a string without end) stops with an error instead.
const TEMPLATE_FUEL: u64 = 50_000;

/// The one template environment for tags and RunPod bodies: undefined values are errors,
/// and the work a template may do is bounded.
pub fn template_environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(TEMPLATE_FUEL));
    // Errors carry the span of the failing expression, so messages can name it.
    env.set_debug(true);
    env
}

pub(super) struct Checker<'a> {
    pub(super) file: &'a str,
    pub(super) out: Vec<Diagnostic>,
}

impl Checker<'_> {
    pub(super) fn err<T>(
        &mut self,
        at: &Located<T>,
        field: impl Into<String>,
        message: impl Into<String>,
        hint: Option<String>,
    ) {
        self.out.push(Diagnostic {
            file: self.file.to_string(),
            line: at.line.max(1),
            col: at.col.max(1),
            field: field.into(),
            message: message.into(),
            hint,
        });
    }
}

/// Checks everything about the policy that needs neither the images nor the network, and
/// lowers it. `base_dir` is the policy file's directory.
pub fn resolve(policy: &Policy, file: &str, base_dir: &Path, ctx: &TemplateContext) -> Result<Resolved, Diagnostics> {
    let mut c = Checker { file, out: Vec::new() };
    if *policy.version != 1 {
        c.err(
            &policy.version,
            "version",
            format!("unsupported version {}", *policy.version),
            Some("this publish understands version: 1".into()),
        );
    }

    let mut registries = Vec::new();
    for (id, r) in &policy.registries {
        let field = format!("registries.{id}");
        match resolve_registry(&mut c, id, r, &field, base_dir) {
            Some(rr) => registries.push(rr),
            None => continue,
        }
    }

    let ctx = &template_context(&mut c, policy, ctx);
    let images = resolve_images(&mut c, policy, &registries, base_dir, ctx);
    let upload_rate = policy.upload_rate.as_ref().map(|r| r.value.0);
    if let Some(r) = &policy.upload_rate
        && r.value.0 == ByteSize(0)
    {
        c.err(
            r,
            "upload_rate",
            "an upload rate of 0 never finishes",
            Some("write the runner's upload rate per second, e.g. 20MB".into()),
        );
    }
    let runpod = policy.runpod.as_ref().map(|rp| resolve_runpod(&mut c, rp, &images, base_dir));
    let transfer = resolve_transfer(&mut c, policy.transfer.as_ref());
    let signing = policy.signing.as_ref().map(|sg| resolve_signing(&mut c, sg, base_dir));
    let provenance = match policy.attest.as_ref().and_then(|a| a.provenance.as_ref()) {
        Some(p) if p.value && signing.is_none() => {
            c.err(
                p,
                "attest.provenance",
                "provenance is attested with the signing settings, and there are none",
                Some("add signing: (key: cosign.key, or keyless: true), or leave attest.provenance out".into()),
            );
            false
        }
        Some(p) => p.value,
        None => signing.is_some(),
    };
    if c.out.is_empty() {
        let context = ctx.clone();
        Ok(Resolved { file: file.to_string(), images, upload_rate, runpod, signing, transfer, context, provenance })
    } else {
        Err(Diagnostics(c.out))
    }
}

/// Variables that are never shown to templates, whatever `template_env` says.
fn is_secret_by_nature(name: &str) -> bool {
    name == "GITHUB_TOKEN"
        || name.starts_with("ACTIONS_")
        || name.starts_with("AWS_")
        || name == crate::sign::keys::COSIGN_PASSWORD
        || name.contains("TOKEN")
        || name.contains("SECRET")
        || name.contains("PASSWORD")
}

/// The context templates render with: `git.*`, and of the environment only `CI`, `RUNNER_*`,
/// `GITHUB_*` and what `template_env` lists; never a variable the policy names as a secret.
fn template_context(c: &mut Checker, policy: &Policy, ctx: &TemplateContext) -> TemplateContext {
    let mut secrets: HashSet<String> = HashSet::new();
    for r in policy.registries.values() {
        for cr in r.credentials.iter().chain(&r.pull_credentials) {
            secrets.insert(cr.password_env.value.clone());
        }
    }
    if let Some(rp) = &policy.runpod {
        secrets.insert(rp.api_key_env.as_ref().map_or_else(|| "RUNPOD_API_KEY".to_string(), |k| k.value.clone()));
    }
    if let Some(sg) = &policy.signing {
        secrets.extend(sg.password_env.iter().map(|p| p.value.clone()));
        secrets.extend(sg.key.iter().filter_map(|k| k.strip_prefix("env://").map(str::to_string)));
    }
    let secret = |name: &str| secrets.contains(name) || is_secret_by_nature(name);
    for (i, v) in policy.template_env.iter().enumerate() {
        if secret(v) {
            c.err(
                v,
                format!("template_env[{i}]"),
                format!("{} holds a secret (the policy or GitHub uses it as one): templates never see it", v.value),
                Some("pass a non-secret value in another variable".into()),
            );
        }
    }
    let allowed = |name: &str| {
        !secret(name)
            && (name == "CI"
                || name.starts_with("RUNNER_")
                || name.starts_with("GITHUB_")
                || policy.template_env.iter().any(|v| v.value == name))
    };
    let env = ctx.env.iter().filter(|(k, _)| allowed(k)).map(|(k, v)| (k.clone(), v.clone())).collect();
    TemplateContext { git: ctx.git.clone(), env }
}

/// The `signing:` section: a key (path or `env://VAR`) or keyless, URLs, password variable.
fn resolve_signing(c: &mut Checker, sg: &model::Signing, base_dir: &Path) -> ResolvedSigning {
    let keyless = sg.keyless.as_ref().is_some_and(|k| k.value);
    let key = sg.key.as_ref().map(|key| {
        if let Some(var) = key.strip_prefix("env://") {
            if !valid_env_name(var) {
                c.err(
                    key,
                    "signing.key",
                    format!("{:?} does not name an environment variable", key.value),
                    Some("write env://COSIGN_PRIVATE_KEY".into()),
                );
            }
            key.value.clone()
        } else {
            let path = base_dir.join(&key.value);
            if !path.is_file() {
                c.err(
                    key,
                    "signing.key",
                    format!("{} does not exist", path.display()),
                    Some("make one with `publish generate-key-pair`, or give env://VAR".into()),
                );
            }
            path.display().to_string()
        }
    });
    match (&sg.key, keyless) {
        (Some(k), true) => c.err(k, "signing", "give either key: or keyless: true, not both", None),
        (None, false) => {
            let at = sg.keyless.as_ref().map_or((1, 1), |k| (k.line, k.col));
            c.out.push(Diagnostic {
                file: c.file.to_string(),
                line: at.0.max(1),
                col: at.1.max(1),
                field: "signing".into(),
                message: "signing needs key: (a cosign key) or keyless: true".into(),
                hint: Some("make a key with `publish generate-key-pair`, or sign keyless from GitHub Actions".into()),
            });
        }
        _ => {}
    }
    let url = |u: &Option<Located<String>>, default: &str, field: &str, c: &mut Checker| -> String {
        match u {
            Some(u) => {
                let ok = url::Url::parse(u)
                    .is_ok_and(|p| p.scheme() == "https" || p.host_str().is_some_and(is_loopback_host));
                if !ok {
                    c.err(
                        u,
                        field.to_string(),
                        format!("{:?} is not an HTTPS URL (plain HTTP only on loopback)", u.value),
                        None,
                    );
                }
                u.value.trim_end_matches('/').to_string()
            }
            None => default.to_string(),
        }
    };
    let fulcio_url = url(&sg.fulcio_url, crate::sign::keyless::FULCIO_URL, "signing.fulcio_url", c);
    let rekor_url = url(&sg.rekor_url, crate::sign::keyless::REKOR_URL, "signing.rekor_url", c);
    let password_env =
        sg.password_env.as_ref().map_or_else(|| crate::sign::keys::COSIGN_PASSWORD.to_string(), |p| p.value.clone());
    if let Some(p) = &sg.password_env
        && !valid_env_name(p)
    {
        c.err(p, "signing.password_env", format!("{:?} is not an environment variable name", p.value), None);
    }
    let tlog = match &sg.tlog {
        Some(t) if !t.value && key.is_none() => {
            c.err(
                t,
                "signing.tlog",
                "keyless signatures are always logged in Rekor: their certificates are only valid for minutes, and the log entry is what proves when they signed",
                Some("remove `tlog: false`, or sign with a key pair".into()),
            );
            true
        }
        Some(t) => t.value,
        None => key.is_none(),
    };
    ResolvedSigning {
        key,
        fulcio_url,
        rekor_url,
        password_env,
        format: sg.format.as_ref().map(|f| f.value).unwrap_or_default(),
        tlog,
    }
}

fn resolve_transfer(c: &mut Checker, t: Option<&model::Transfer>) -> crate::http::ClientConfig {
    let mut s = crate::http::ClientConfig::default();
    let Some(t) = t else { return s };
    if let Some(r) = &t.min_rate {
        if r.value.0.0 == 0 {
            c.err(r, "transfer.min_rate", "must be more than 0 bytes a second", Some("e.g. min_rate: 1MB".into()));
        }
        s.min_rate = r.value.0.0.max(1);
    }
    let mut positive = |v: &Option<Located<u64>>, field: &str| -> Option<u64> {
        let v = v.as_ref()?;
        if v.value == 0 {
            c.err(v, format!("transfer.{field}"), "must be 1 or more", None);
        }
        Some(v.value)
    };
    if let Some(d) = positive(&t.max_delay, "max_delay") {
        s.max_delay = std::time::Duration::from_secs(d);
    }
    if let Some(d) = positive(&t.connect_timeout, "connect_timeout") {
        s.connect_timeout = std::time::Duration::from_secs(d);
    }
    if let Some(d) = positive(&t.read_timeout, "read_timeout") {
        s.read_timeout = std::time::Duration::from_secs(d);
    }
    if let Some(d) = positive(&t.request_timeout, "request_timeout") {
        s.request_timeout = std::time::Duration::from_secs(d);
    }
    for (v, field) in [(&t.attempts, "attempts"), (&t.concurrency, "concurrency")] {
        if let Some(v) = v
            && v.value == 0
        {
            c.err(v, format!("transfer.{field}"), "must be 1 or more", None);
        }
    }
    if let Some(a) = &t.attempts {
        s.attempts = a.value.max(1);
    }
    s.verify_client = t.verify.as_ref().is_some_and(|v| v.value == model::Verify::Client);
    if let Some(n) = &t.concurrency {
        s.concurrency = n.value.max(1) as usize;
    }
    s
}

pub(super) fn valid_env_name(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit()
}

pub(super) fn credential_ref(c: &mut Checker, cr: &model::Credentials, field: &str) -> CredentialRef {
    let name = &cr.password_env;
    if !valid_env_name(name) {
        c.err(
            name,
            format!("{field}.password_env"),
            format!("{:?} is not an environment variable name", name.value),
            Some("give the variable's name, never the secret itself".into()),
        );
    }
    CredentialRef {
        username: cr.username.value.clone(),
        password_env: cr.password_env.value.clone(),
        at: (name.line, name.col),
        field: format!("{field}.password_env"),
    }
}

pub fn template_error(e: &minijinja::Error, source: &str) -> TemplateFailure {
    let mut message = e.kind().to_string();
    if let Some(detail) = e.detail() {
        message = format!("{message}: {detail}");
    }
    let Some(range) = e.range().filter(|r| source.get(r.clone()).is_some_and(|x| !x.trim().is_empty())) else {
        return TemplateFailure { message, at: e.line().map(|l| (l, None)) };
    };
    let expression = source[range.clone()].trim();
    message = match e.detail() {
        None => format!("{message}: {expression}"),
        Some(d) if d.contains(expression) => message,
        Some(_) => format!("{message} (in {expression})"),
    };
    let before = &source[..range.start];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    TemplateFailure { message, at: Some((line, Some(column))) }
}

/// A template that failed to render: what failed, naming the failing expression where the
/// engine gives its span, and where in the template's text (line, column; 1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateFailure {
    pub message: String,
    pub at: Option<(usize, Option<usize>)>,
}

#[cfg(test)]
mod tests {
    use super::{template_environment, template_error};

    /// The failing expression is named, and located by line and column in the template's text.
    #[test]
    fn an_undefined_value_is_named_with_its_line_and_column() {
        let env = template_environment();
        let ctx = serde_json::json!({"vars": {"model": "x"}, "git": {}});
        let source = "{\n  \"env\": {\"MODEL\": \"{{ vars.nope }}\"}\n}";
        let e = env.render_named_str("runpod/t.json", source, minijinja::value::Serde(&ctx)).unwrap_err();
        let failure = template_error(&e, source);
        assert!(failure.message.contains("vars.nope"), "{failure:?}");
        assert!(failure.message.starts_with("undefined value"), "{failure:?}");
        assert_eq!(failure.at, Some((2, Some(24))), "{failure:?}");

        let tag = "v-{{ git.nope }}";
        let e = env.render_str(tag, minijinja::value::Serde(&ctx)).unwrap_err();
        let failure = template_error(&e, tag);
        assert!(failure.message.contains("git.nope"), "{failure:?}");
    }
}
