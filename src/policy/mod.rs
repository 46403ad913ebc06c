//! The policy file: parse `publish.yaml`, check everything that can be checked offline, and
//! lower it into plain values (`Resolved`) the later stages use. Every mistake is a located
//! `Diagnostic`. No network here; the only disk reads are the policy and its `ca_file`s.

pub mod diag;
pub mod located;
pub mod model;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;

pub use diag::{Diagnostic, Diagnostics};
pub use located::Located;
pub use model::{Billing, Policy, PublishTo, RegistryKind, Visibility};

use crate::reference::{self, is_loopback_host};
use crate::types::{ByteSize, Platform};

/// The values tag templates see: `git.*` and `env.*`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TemplateContext {
    pub git: GitContext,
    pub env: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct GitContext {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub short_sha: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

/// A policy that passed every offline check, lowered to plain values.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub file: String,
    pub images: Vec<ResolvedImage>,
    /// The CI runner's upload rate, bytes per second, when the policy gives it.
    pub upload_rate: Option<ByteSize>,
    pub runpod: Option<ResolvedRunPod>,
    pub signing: Option<ResolvedSigning>,
    pub transfer: crate::http::Settings,
    /// What templates were rendered with (git, env), for the RunPod stage.
    pub context: TemplateContext,
}

#[derive(Debug, Clone)]
pub struct ResolvedSigning {
    /// A path (resolved against the policy's directory) or `env://VAR`; `None` for keyless.
    pub key: Option<String>,
    pub fulcio_url: String,
    pub rekor_url: String,
    pub password_env: String,
    pub format: model::SignFormat,
}

pub const DEFAULT_RUNPOD_API: &str = "https://api.runpod.io";

#[derive(Debug, Clone)]
pub struct ResolvedRunPod {
    pub api_key_env: String,
    /// Base URL without a trailing slash; `/v2/...` is appended.
    pub api_url: String,
    pub vars: std::collections::BTreeMap<String, serde_json::Value>,
    pub templates: Vec<ResolvedTemplate>,
}

#[derive(Debug, Clone)]
pub struct ResolvedTemplate {
    pub name: String,
    /// The image (from `images:`) the template follows.
    pub image: String,
    pub source: TemplateSource,
    pub endpoints: Vec<String>,
    /// `runpod.templates[N]`.
    pub field: String,
}

/// Where a template body comes from.
#[derive(Debug, Clone)]
pub enum TemplateSource {
    /// `body:` in the policy, and where it starts.
    Inline { body: serde_json::Value, at: (u64, u64) },
    /// `file:`: its name as written and its text.
    File { display: String, text: String },
}

#[derive(Debug, Clone)]
pub struct ResolvedImage {
    pub name: String,
    /// The transport string as written, and where, so the image stage's errors can be located.
    pub source: Located<String>,
    /// Directory relative sources are resolved against (the policy file's).
    pub base_dir: PathBuf,
    pub tags: Vec<String>,
    pub visibility: Visibility,
    pub platforms: Vec<Platform>,
    pub platforms_at: (u64, u64),
    /// Candidate registries in order of preference.
    pub candidates: Vec<ResolvedRegistry>,
    pub publish_to: PublishTo,
    pub compression: crate::types::LayerCompression,
    pub pulls_per_month: Option<u64>,
    pub region: Option<String>,
    /// Where the image's entry starts (its `name`), for errors about the image as a whole.
    pub at: (u64, u64),
    pub index: usize,
}

#[derive(Debug, Clone)]
pub struct ResolvedRegistry {
    pub id: String,
    pub kind: RegistryKind,
    /// `host[:port]`.
    pub host: String,
    /// Namespace inside the registry (may be empty): images go to `<namespace>/<image name>`.
    pub namespace: String,
    pub insecure: bool,
    pub ca_file: Option<PathBuf>,
    pub credentials: Option<CredentialRef>,
    pub pull_credentials: Option<CredentialRef>,
    /// PATCH chunk size, when blobs go up in chunks.
    pub chunk_size: Option<ByteSize>,
    /// The plan named in the policy (checked against the catalog by the selection stage).
    pub tier: Option<Located<String>>,
    pub billing: Billing,
    pub limits: LimitOverrides,
    pub used: GivenUsage,
    pub region: Option<String>,
}

/// Catalog facts the policy overrides for one registry.
#[derive(Debug, Clone, Default)]
pub struct LimitOverrides {
    pub storage: Option<ByteSize>,
    pub transfer: Option<ByteSize>,
    pub max_layer: Option<ByteSize>,
    pub private_repositories: Option<u32>,
    pub private: Option<bool>,
    pub cost_per_month: Option<f64>,
}

/// Usage the policy states for one registry.
#[derive(Debug, Clone, Default)]
pub struct GivenUsage {
    pub storage: Option<ByteSize>,
    pub transfer: Option<ByteSize>,
    pub private_repositories: Option<u32>,
}

impl ResolvedRegistry {
    /// The repository an image named `image` goes to.
    pub fn repository_for(&self, image: &str) -> String {
        if self.namespace.is_empty() { image.to_string() } else { format!("{}/{}", self.namespace, image) }
    }
}

/// Where a password lives: never the password itself.
#[derive(Debug, Clone)]
pub struct CredentialRef {
    pub username: String,
    pub password_env: String,
    /// Where `password_env` was written, for errors found at run time.
    pub at: (u64, u64),
    pub field: String,
}

/// Parses `text` (named `file` in messages) into a policy, or located diagnostics.
pub fn parse(file: &str, text: &str) -> Result<Policy, Diagnostics> {
    let mut path = None;
    let result = serde_saphyr::with_deserializer_from_str(text, |de| {
        serde_path_to_error::deserialize::<_, Policy>(de).map_err(|e| {
            path = Some(e.path().to_string());
            e.into_inner()
        })
    });
    result.map_err(|err| {
        let (line, col) = err.location().map_or((1, 1), |l| (l.line(), l.column()));
        let field = path.map(|p| clean_path(&p)).unwrap_or_else(|| ".".to_string());
        let (message, hint) = explain(&err.to_string());
        Diagnostics(vec![Diagnostic { file: file.to_string(), line, col, field, message, hint }])
    })
}

/// Reads and parses the policy at `path`.
pub fn load(path: &Path) -> Result<(Policy, String), Diagnostics> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        Diagnostics(vec![Diagnostic {
            file: file.clone(),
            line: 1,
            col: 1,
            field: ".".into(),
            message: format!("cannot read the policy file: {e}"),
            hint: Some("pass --policy FILE, or run from the directory holding publish.yaml".into()),
        }])
    })?;
    Ok((parse(&file, &text)?, file))
}

/// `serde_path_to_error` sees through `Located`, which adds a `.value` step; users never wrote it.
fn clean_path(p: &str) -> String {
    p.replace(".value", "")
}

/// Turns a deserializer message into one line for users, plus a hint.
fn explain(rendered: &str) -> (String, Option<String>) {
    let first = rendered.lines().next().unwrap_or(rendered);
    // "error: line 5 column 5: unknown field `tgas`, expected one of a, b"
    let msg = first.strip_prefix("error: ").unwrap_or(first);
    let msg = match msg.split_once(": ") {
        Some((loc, rest)) if loc.starts_with("line ") => rest,
        _ => msg,
    };
    for (kind, noun) in [("unknown field `", "field"), ("unknown variant `", "value")] {
        if let Some(rest) = msg.strip_prefix(kind) {
            let (word, tail) = rest.split_once('`').unwrap_or((rest, ""));
            let expected: Vec<&str> = tail
                .split_once("expected one of ")
                .or_else(|| tail.split_once("expected "))
                .map(|(_, list)| list.split(", ").map(|s| s.trim_matches('`')).collect())
                .unwrap_or_default();
            let hint = match diag::closest(word, expected.iter().copied()) {
                Some(best) => format!("did you mean `{best}`? valid {noun}s here: {}", expected.join(", ")),
                None if !expected.is_empty() => {
                    format!("valid {noun}s here: {}", expected.join(", "))
                }
                None => "remove it".to_string(),
            };
            return (format!("unknown {noun} `{word}`"), Some(hint));
        }
    }
    let friendly = match msg {
        "expected sequence start" => "expected a list".to_string(),
        "expected mapping start" => "expected a mapping (key: value pairs)".to_string(),
        "expected string scalar" => "expected a string".to_string(),
        "invalid boolean" => "expected true or false".to_string(),
        m if m.starts_with("invalid u") || m.starts_with("invalid i") => "expected a whole number".to_string(),
        m => m.to_string(),
    };
    (friendly, None)
}

struct Checker<'a> {
    file: &'a str,
    out: Vec<Diagnostic>,
}

impl Checker<'_> {
    fn err<T>(&mut self, at: &Located<T>, field: impl Into<String>, message: impl Into<String>, hint: Option<String>) {
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

    let env = Environment::new();
    let mut env = env;
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    let mut names = HashSet::new();
    let mut images = Vec::new();
    for (i, img) in policy.images.iter().enumerate() {
        let field = format!("images[{i}]");
        if let Err(e) = reference::validate_repository(&img.name) {
            c.err(
                &img.name,
                format!("{field}.name"),
                e.to_string(),
                Some("use lowercase letters, digits and '-', e.g. comfyui".into()),
            );
        }
        if !names.insert(img.name.value.clone()) {
            c.err(&img.name, format!("{field}.name"), format!("image {:?} is listed twice", *img.name), None);
        }
        if img.source.trim().is_empty() {
            c.err(
                &img.source,
                format!("{field}.source"),
                "the source is empty",
                Some("e.g. oci:build/comfyui or oci-archive:comfyui.tar".into()),
            );
        }
        let mut tags = Vec::new();
        if img.tags.is_empty() {
            c.err(
                &img.name,
                format!("{field}.tags"),
                "no tags: the image would be unreachable",
                Some("add tags: [latest]".into()),
            );
        }
        for (j, t) in img.tags.iter().enumerate() {
            let tf = format!("{field}.tags[{j}]");
            match env.render_str(t, minijinja::value::Serde(ctx)) {
                Ok(rendered) => match reference::validate_tag(&rendered) {
                    Ok(()) => {
                        if !tags.contains(&rendered) {
                            tags.push(rendered)
                        }
                    }
                    Err(e) => c.err(t, tf, e.to_string(), None),
                },
                Err(e) => c.err(
                    t,
                    tf,
                    format!("cannot render {:?}: {}", t.value, template_error(&e)),
                    Some("available: git.sha, git.short_sha, git.branch, git.tag (when known) and env.NAME".into()),
                ),
            }
        }
        let mut platforms = Vec::new();
        if img.platforms.is_empty() {
            c.err(
                &img.name,
                format!("{field}.platforms"),
                "no platforms required",
                Some("RunPod runs linux/amd64: platforms: [linux/amd64]".into()),
            );
        }
        for (j, p) in img.platforms.iter().enumerate() {
            match p.parse::<Platform>() {
                Ok(p) => platforms.push(p),
                Err(e) => c.err(p, format!("{field}.platforms[{j}]"), e, None),
            }
        }
        let mut candidates = Vec::new();
        match &img.registries {
            Some(ids) => {
                if ids.is_empty() {
                    c.err(&img.name, format!("{field}.registries"), "no candidate registries", None);
                }
                for (j, id) in ids.iter().enumerate() {
                    match registries.iter().find(|r: &&ResolvedRegistry| r.id == **id) {
                        Some(r) => candidates.push(r.clone()),
                        None if policy.registries.contains_key(&id.value) => {} // already reported
                        None => {
                            let known: Vec<&str> = policy.registries.keys().map(String::as_str).collect();
                            let hint = match diag::closest(id, known.iter().copied()) {
                                Some(best) => {
                                    Some(format!("did you mean `{best}`? registries defined: {}", known.join(", ")))
                                }
                                None if known.is_empty() => Some("define it under registries:".into()),
                                None => Some(format!("registries defined: {}", known.join(", "))),
                            };
                            c.err(
                                id,
                                format!("{field}.registries[{j}]"),
                                format!("no registry with id `{}`", id.value),
                                hint,
                            );
                        }
                    }
                }
            }
            None => {
                candidates = registries.clone();
                if policy.registries.is_empty() {
                    c.err(
                        &img.name,
                        "registries",
                        "no registries are defined",
                        Some(
                            "add a registries: section, e.g. home: {kind: registry, repository: 127.0.0.1:5000/ml}"
                                .into(),
                        ),
                    );
                }
            }
        }
        let platforms_at = img.platforms.first().map_or((img.name.line, img.name.col), |p| (p.line, p.col));
        images.push(ResolvedImage {
            name: img.name.value.clone(),
            source: img.source.clone(),
            base_dir: base_dir.to_path_buf(),
            tags,
            visibility: *img.visibility,
            platforms,
            platforms_at,
            candidates,
            publish_to: img.publish_to.as_ref().map(|p| p.value).unwrap_or_default(),
            compression: img.compression.as_ref().map(|c| c.value).unwrap_or_default(),
            pulls_per_month: img.pulls_per_month.as_ref().map(|p| p.value),
            region: img.region.as_ref().map(|r| r.value.clone()),
            at: (img.name.line, img.name.col),
            index: i,
        });
    }
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
    let signing = policy.signing.as_ref().map(|sg| {
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
                    hint: Some(
                        "make a key with `publish generate-key-pair`, or sign keyless from GitHub Actions".into(),
                    ),
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
        let fulcio_url = url(&sg.fulcio_url, crate::sign::keyless::FULCIO_URL, "signing.fulcio_url", &mut c);
        let rekor_url = url(&sg.rekor_url, crate::sign::keyless::REKOR_URL, "signing.rekor_url", &mut c);
        let password_env = sg
            .password_env
            .as_ref()
            .map_or_else(|| crate::sign::keys::COSIGN_PASSWORD.to_string(), |p| p.value.clone());
        if let Some(p) = &sg.password_env
            && !valid_env_name(p)
        {
            c.err(p, "signing.password_env", format!("{:?} is not an environment variable name", p.value), None);
        }
        ResolvedSigning {
            key,
            fulcio_url,
            rekor_url,
            password_env,
            format: sg.format.as_ref().map(|f| f.value).unwrap_or_default(),
        }
    });
    if c.out.is_empty() {
        Ok(Resolved { file: file.to_string(), images, upload_rate, runpod, signing, transfer, context: ctx.clone() })
    } else {
        Err(Diagnostics(c.out))
    }
}

fn resolve_transfer(c: &mut Checker, t: Option<&model::Transfer>) -> crate::http::Settings {
    let mut s = crate::http::Settings::default();
    let Some(t) = t else { return s };
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
    if let Some(n) = &t.concurrency {
        s.concurrency = n.value.max(1) as usize;
    }
    s
}

fn valid_env_name(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit()
}

fn credential_ref(c: &mut Checker, cr: &model::Credentials, field: &str) -> CredentialRef {
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

fn resolve_runpod(c: &mut Checker, rp: &model::RunPod, images: &[ResolvedImage], base_dir: &Path) -> ResolvedRunPod {
    let api_key_env = rp.api_key_env.as_ref().map_or_else(|| "RUNPOD_API_KEY".to_string(), |k| k.value.clone());
    if let Some(k) = &rp.api_key_env
        && !valid_env_name(k)
    {
        c.err(
            k,
            "runpod.api_key_env",
            format!("{:?} is not an environment variable name", k.value),
            Some("give the variable's name, never the key itself".into()),
        );
    }
    let api_url = rp
        .api_url
        .as_ref()
        .map_or_else(|| DEFAULT_RUNPOD_API.to_string(), |u| u.value.trim_end_matches('/').to_string());
    if let Some(u) = &rp.api_url {
        match url::Url::parse(u) {
            Ok(parsed)
                if parsed.scheme() == "https"
                    || (parsed.scheme() == "http" && parsed.host_str().is_some_and(is_loopback_host)) => {}
            Ok(_) => {
                c.err(u, "runpod.api_url", "the RunPod API is reached over HTTPS (plain HTTP only on loopback)", None)
            }
            Err(e) => c.err(u, "runpod.api_url", format!("not a URL: {e}"), Some("e.g. https://api.runpod.io".into())),
        }
    }
    let mut names = HashSet::new();
    let mut templates = Vec::new();
    for (i, t) in rp.templates.iter().enumerate() {
        let field = format!("runpod.templates[{i}]");
        if t.name.trim().is_empty() {
            c.err(&t.name, format!("{field}.name"), "a template needs a name", None);
        }
        if !names.insert(t.name.value.clone()) {
            c.err(
                &t.name,
                format!("{field}.name"),
                format!("template {:?} is listed twice: RunPod names are unique", t.name.value),
                None,
            );
        }
        if !images.iter().any(|img| img.name == *t.image) {
            let known: Vec<&str> = images.iter().map(|i| i.name.as_str()).collect();
            let hint = match diag::closest(&t.image, known.iter().copied()) {
                Some(best) => format!("did you mean `{best}`? images: {}", known.join(", ")),
                None => format!("images: {}", known.join(", ")),
            };
            c.err(
                &t.image,
                format!("{field}.image"),
                format!("no image named `{}` in images:", t.image.value),
                Some(hint),
            );
        }
        let source = match (&t.body, &t.file) {
            (Some(body), None) => Some(TemplateSource::Inline { body: body.value.clone(), at: (body.line, body.col) }),
            (None, Some(f)) => {
                let path = base_dir.join(&f.value);
                match std::fs::read_to_string(&path) {
                    Ok(text) => Some(TemplateSource::File { display: f.value.display().to_string(), text }),
                    Err(e) => {
                        c.err(
                            f,
                            format!("{field}.file"),
                            format!("cannot read {}: {e}", path.display()),
                            Some("paths are relative to the policy file".into()),
                        );
                        None
                    }
                }
            }
            (Some(body), Some(_)) => {
                c.err(body, field.clone(), "give either body: or file:, not both", None);
                None
            }
            (None, None) => {
                c.err(
                    &t.name,
                    field.clone(),
                    "the template has no body: or file:",
                    Some("body: {disk: 20, ports: [8888/http]} or file: runpod/template.json".into()),
                );
                None
            }
        };
        if let Some(source) = source {
            templates.push(ResolvedTemplate {
                name: t.name.value.clone(),
                image: t.image.value.clone(),
                source,
                endpoints: t.endpoints.iter().map(|e| e.value.clone()).collect(),
                field,
            });
        }
    }
    ResolvedRunPod { api_key_env, api_url, vars: rp.vars.clone(), templates }
}

fn template_error(e: &minijinja::Error) -> String {
    let mut s = e.kind().to_string();
    if let Some(detail) = e.detail() {
        s = format!("{s}: {detail}");
    }
    s
}

fn resolve_registry(
    c: &mut Checker,
    id: &str,
    r: &model::Registry,
    field: &str,
    base_dir: &Path,
) -> Option<ResolvedRegistry> {
    let before = c.out.len();
    let repo = r.repository.trim_end_matches('/');
    let (host, namespace) = match repo.split_once('/') {
        Some((h, ns)) => (h.to_string(), ns.to_string()),
        None => (repo.to_string(), String::new()),
    };
    let looks_like_host = host.contains('.') || host.contains(':') || host == "localhost";
    if !looks_like_host {
        c.err(
            &r.repository,
            format!("{field}.repository"),
            format!("{:?} does not start with a registry host", *r.repository),
            Some("write <host>[:port]/<namespace>, e.g. ghcr.io/my-org or 127.0.0.1:5000/ml".into()),
        );
    } else if !namespace.is_empty() && reference::validate_repository(&namespace).is_err() {
        c.err(
            &r.repository,
            format!("{field}.repository"),
            format!("namespace {namespace:?} is invalid: lowercase letters, digits, '.', '_' and '-' only"),
            None,
        );
    }
    let expected_host = match *r.kind {
        RegistryKind::Ghcr => Some("ghcr.io"),
        RegistryKind::Dockerhub => Some("docker.io"),
        RegistryKind::EcrPublic => Some("public.ecr.aws"),
        RegistryKind::Registry => None,
    };
    if let Some(h) = expected_host
        && looks_like_host
        && host != h
        && !is_loopback_host(&host)
    {
        c.err(
            &r.repository,
            format!("{field}.repository"),
            format!("a {} registry lives at {h}, not {host}", r.kind.as_str()),
            Some(format!("write {h}/<namespace>, or use kind: registry for another host")),
        );
    }
    if matches!(*r.kind, RegistryKind::Ghcr | RegistryKind::Dockerhub | RegistryKind::EcrPublic)
        && namespace.is_empty()
        && looks_like_host
    {
        c.err(
            &r.repository,
            format!("{field}.repository"),
            format!("{} needs a namespace (user, organisation or alias) after the host", r.kind.as_str()),
            None,
        );
    }
    if *r.insecure && !is_loopback_host(&host) {
        c.err(
            &r.insecure,
            format!("{field}.insecure"),
            format!("plain HTTP is refused for {host}: only loopback registries may be insecure"),
            Some("serve the registry over TLS and give its CA with ca_file:".into()),
        );
    }
    let ca_file = r.ca_file.as_ref().and_then(|ca| {
        let path = base_dir.join(&ca.value);
        if path.is_file() {
            Some(path)
        } else {
            c.err(
                ca,
                format!("{field}.ca_file"),
                format!("{} does not exist", path.display()),
                Some("paths are relative to the policy file".into()),
            );
            None
        }
    });
    let credentials = r.credentials.as_ref().map(|cr| credential_ref(c, cr, &format!("{field}.credentials")));
    let pull_credentials =
        r.pull_credentials.as_ref().map(|cr| credential_ref(c, cr, &format!("{field}.pull_credentials")));
    if let Some(chunk) = &r.chunk_size
        && chunk.value.0.0 == 0
    {
        c.err(
            chunk,
            format!("{field}.chunk_size"),
            "a chunk of 0 bytes never finishes",
            Some("e.g. chunk_size: 8MiB".into()),
        );
    }
    if let Some(b) = &r.billing
        && *r.kind != RegistryKind::Ghcr
    {
        c.err(b, format!("{field}.billing"), format!("billing applies to ghcr only, not {}", r.kind.as_str()), None);
    }
    let limits = r.limits.clone().unwrap_or_default();
    if let Some(cost) = &limits.cost_per_month
        && !(cost.value >= 0.0 && cost.value.is_finite())
    {
        c.err(cost, format!("{field}.limits.cost_per_month"), "a monthly cost is a number of USD, 0 or more", None);
    }
    let size = |s: &Option<Located<model::Size>>| s.as_ref().map(|s| s.value.0);
    let used = r.used.clone().unwrap_or_default();
    (c.out.len() == before).then(|| ResolvedRegistry {
        id: id.to_string(),
        kind: *r.kind,
        host,
        namespace,
        insecure: *r.insecure,
        ca_file,
        credentials,
        pull_credentials,
        chunk_size: r
            .chunk_size
            .as_ref()
            .map(|c| c.value.0)
            .or((*r.kind == RegistryKind::EcrPublic).then_some(ByteSize(8 * 1024 * 1024))),
        tier: r.tier.clone(),
        billing: r.billing.as_ref().map(|b| b.value).unwrap_or_default(),
        limits: LimitOverrides {
            storage: size(&limits.storage),
            transfer: size(&limits.transfer),
            max_layer: size(&limits.max_layer),
            private_repositories: limits.private_repositories.as_ref().map(|p| p.value),
            private: limits.private.as_ref().map(|p| p.value),
            cost_per_month: limits.cost_per_month.as_ref().map(|p| p.value),
        },
        used: GivenUsage {
            storage: size(&used.storage),
            transfer: size(&used.transfer),
            private_repositories: used.private_repositories.as_ref().map(|p| p.value),
        },
        region: r.region.as_ref().map(|r| r.value.clone()),
    })
}

/// The JSON Schema of the policy file.
pub fn schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(Policy)).unwrap_or_default()
}
