//! RunPod templates, pure: render a body from the policy (inline or a JSON file with minijinja
//! expressions, strict about undefined variables), fill `name` and the pinned `image`, check it
//! against RunPod's documented v2 template fields, and diff it against what RunPod has.

use std::collections::BTreeMap;

use minijinja::Environment;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::policy::{GitContext, ResolvedTemplate, TemplateSource, diag, template_error};

/// What template expressions see.
#[derive(Debug, Clone, Serialize)]
pub struct RenderContext {
    pub image: ImageContext,
    pub git: GitContext,
    pub env: BTreeMap<String, String>,
    pub vars: BTreeMap<String, Value>,
}

/// The published image, as templates see it (`image.ref`, `image.digest`, …).
#[derive(Debug, Clone, Serialize)]
pub struct ImageContext {
    pub name: String,
    /// `host/repository:tag`.
    #[serde(rename = "ref")]
    pub reference: String,
    pub digest: String,
    /// `host/repository:tag@sha256:…`: what the template pins.
    pub ref_with_digest: String,
    /// The registry id from the policy.
    pub registry: String,
    pub repository: String,
    pub tag: String,
    pub visibility: String,
}

/// A template problem, located in the policy or the template file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {field}: {message}")]
pub struct TemplateError {
    /// `publish.yaml:12:7` or `runpod/comfyui.json:4`.
    pub location: String,
    pub field: String,
    pub message: String,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct TemplateErrors(pub Vec<TemplateError>);

fn env() -> Environment<'static> {
    crate::policy::template_environment()
}

/// Renders a template's body, fills `name` and `image` (unless the body sets them) and checks
/// it against RunPod's fields. `policy_file` names the policy in locations.
pub fn render(
    t: &ResolvedTemplate,
    ctx: &RenderContext,
    policy_file: &str,
) -> Result<Map<String, Value>, TemplateErrors> {
    let env = env();
    let value = minijinja::value::Value::from(minijinja::value::Serde(ctx));
    let (body, locate): (Value, Locator) = match &t.source {
        TemplateSource::Inline { body, at } => {
            let at = format!("{policy_file}:{}:{}", at.0, at.1);
            let mut errors = Vec::new();
            let rendered = render_value(&env, &value, body, &format!("{}.body", t.field), &at, &mut errors);
            if !errors.is_empty() {
                return Err(TemplateErrors(errors));
            }
            (rendered, Box::new(move |_| at.clone()))
        }
        TemplateSource::File { display, text } => {
            let rendered = env.render_named_str(display, text, &value).map_err(|e| {
                let failure = template_error(&e, text);
                let location = match failure.at {
                    Some((line, Some(column))) => format!("{display}:{line}:{column}"),
                    Some((line, None)) => format!("{display}:{line}"),
                    None => format!("{display}:1"),
                };
                TemplateErrors(vec![TemplateError { location, field: t.field.clone(), message: failure.message }])
            })?;
            let parsed: Value = serde_json::from_str(&rendered).map_err(|e| {
                TemplateErrors(vec![TemplateError {
                    location: format!("{display}:{}:{}", e.line(), e.column()),
                    field: t.field.clone(),
                    message: format!("after rendering, not JSON: {e}"),
                }])
            })?;
            let (display, text) = (display.clone(), text.clone());
            (parsed, Box::new(move |key: &str| locate_key(&display, &text, key)))
        }
    };
    let Value::Object(mut map) = body else {
        return Err(TemplateErrors(vec![TemplateError {
            location: locate(""),
            field: t.field.clone(),
            message: "the body must be a mapping of RunPod template fields".into(),
        }]));
    };
    map.entry("name").or_insert_with(|| Value::String(t.name.clone()));
    map.entry("image").or_insert_with(|| Value::String(ctx.image.ref_with_digest.clone()));
    let errors: Vec<TemplateError> = validate(&map)
        .into_iter()
        .map(|(key, field, message)| TemplateError {
            location: locate(&key),
            field: format!("{}.{field}", t.field),
            message,
        })
        .collect();
    if errors.is_empty() { Ok(map) } else { Err(TemplateErrors(errors)) }
}

/// Finds where a top-level key of the body was written.
type Locator = Box<dyn Fn(&str) -> String>;

fn render_value(
    env: &Environment,
    ctx: &minijinja::value::Value,
    v: &Value,
    field: &str,
    at: &str,
    errors: &mut Vec<TemplateError>,
) -> Value {
    match v {
        Value::String(s) if s.contains("{{") || s.contains("{%") => match env.render_str(s, ctx) {
            Ok(r) => Value::String(r),
            Err(e) => {
                errors.push(TemplateError {
                    location: at.to_string(),
                    field: field.to_string(),
                    message: template_error(&e, s).message,
                });
                Value::Null
            }
        },
        Value::Array(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, x)| render_value(env, ctx, x, &format!("{field}[{i}]"), at, errors))
                .collect(),
        ),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| (k.clone(), render_value(env, ctx, x, &format!("{field}.{k}"), at, errors)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// `file:LINE` of the first `"key"` in the file's text (the line of the file when absent).
fn locate_key(display: &str, text: &str, key: &str) -> String {
    let needle = format!("\"{key}\"");
    let line = if key.is_empty() { None } else { text.lines().position(|l| l.contains(&needle)) };
    format!("{display}:{}", line.map_or(1, |l| l + 1))
}

/// RunPod v2 template fields (CreateTemplateRequest in https://api.runpod.io/v2/openapi.json). The API rejects
/// any other key with 422, so we do first, with a suggestion.
pub const FIELDS: &[&str] = &[
    "name",
    "image",
    "args",
    "disk",
    "env",
    "ports",
    "registry",
    "mounts",
    "serverless",
    "public",
    "category",
    "startSsh",
    "startJupyter",
    "allowedCudaVersions",
];

/// Returns (top-level key, field path, message) per problem.
pub fn validate(body: &Map<String, Value>) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut bad = |key: &str, field: String, msg: String| out.push((key.to_string(), field, msg));
    for (key, v) in body {
        let k = key.as_str();
        match k {
            "name" | "image" => match v.as_str() {
                Some(s) if !s.trim().is_empty() => {}
                _ => bad(k, k.into(), "must be a non-empty string".into()),
            },
            "args" => {
                if !v.is_string() {
                    bad(k, k.into(), "must be one string passed to the entrypoint (v2 `args`, not an array)".into())
                }
            }
            "disk" => {
                if v.as_u64().is_none_or(|d| d < 1) {
                    bad(k, k.into(), format!("must be a whole number of GB, 1 or more (got {v})"))
                }
            }
            "env" => env_problems(v).into_iter().for_each(|(field, msg)| bad(k, field, msg)),
            "ports" => ports_problems(v).into_iter().for_each(|(field, msg)| bad(k, field, msg)),
            "registry" => {
                if !(v.is_string() || v.is_null()) {
                    bad(k, k.into(), "must be a registry credential id (a string) or null".into())
                }
            }
            "mounts" => mounts_problems(v).into_iter().for_each(|(field, msg)| bad(k, field, msg)),
            "serverless" | "public" | "startSsh" | "startJupyter" => {
                if !v.is_boolean() {
                    bad(k, k.into(), format!("must be true or false (got {v})"))
                }
            }
            "category" => {
                if !matches!(v.as_str(), Some("CPU" | "NVIDIA" | "AMD")) {
                    bad(k, k.into(), format!("must be one of CPU, NVIDIA, AMD (got {v})"))
                }
            }
            "allowedCudaVersions" => {
                if !cuda_versions(v) {
                    bad(k, k.into(), "must be a list of versions such as [\"12.4\", \"12.8\"]".into())
                }
            }
            other => {
                let msg = match diag::closest(other, FIELDS.iter().copied()) {
                    Some(best) => {
                        format!("unknown field `{other}` (did you mean `{best}`?): RunPod rejects it with 422")
                    }
                    None => format!("unknown field `{other}`: RunPod's v2 template fields are {}", FIELDS.join(", ")),
                };
                bad(k, other.into(), msg);
            }
        }
    }
    out
}

/// `env`: a mapping of names to strings. Problems as (field path, message).
fn env_problems(v: &Value) -> Vec<(String, String)> {
    let Some(m) = v.as_object() else {
        return vec![("env".into(), "must be a mapping of NAME: value (v2 uses a map, not [{key, value}])".into())];
    };
    m.iter()
        .filter(|(_, val)| !val.is_string())
        .map(|(name, val)| (format!("env.{name}"), format!("must be a string (got {val}); quote it")))
        .collect()
}

/// `ports`: a list of PORT/PROTOCOL.
fn ports_problems(v: &Value) -> Vec<(String, String)> {
    let Some(items) = v.as_array() else {
        return vec![("ports".into(), "must be a list such as [8888/http, 22/tcp]".into())];
    };
    let ok = |p: &Value| {
        p.as_str()
            .and_then(|s| s.split_once('/'))
            .is_some_and(|(n, proto)| n.parse::<u16>().is_ok_and(|n| n > 0) && matches!(proto, "http" | "tcp" | "udp"))
    };
    items
        .iter()
        .enumerate()
        .filter(|(_, p)| !ok(p))
        .map(|(i, p)| (format!("ports[{i}]"), format!("{p} is not PORT/PROTOCOL such as 8888/http or 22/tcp")))
        .collect()
}

/// `mounts`: only `persistent`, as {size: GB (10 or more), path}.
fn mounts_problems(v: &Value) -> Vec<(String, String)> {
    let Some(m) = v.as_object() else { return vec![("mounts".into(), "must be a mapping".into())] };
    let mut out = Vec::new();
    for (mk, mv) in m {
        if mk != "persistent" {
            out.push((format!("mounts.{mk}"), "only `persistent` is allowed (RunPod rejects others with 422)".into()));
            continue;
        }
        let ok = mv.as_object().is_some_and(|p| {
            p.len() == 2
                && p.get("size").and_then(Value::as_u64).is_some_and(|s| s >= 10)
                && p.get("path").is_some_and(Value::is_string)
        });
        if !ok {
            out.push(("mounts.persistent".into(), "must be {size: GB (10 or more), path: string}".into()));
        }
    }
    out
}

/// `allowedCudaVersions`: a list of MAJOR.MINOR strings.
fn cuda_versions(v: &Value) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    v.as_array().is_some_and(|a| {
        a.iter().all(|x| x.as_str().and_then(|s| s.split_once('.')).is_some_and(|(a, b)| digits(a) && digits(b)))
    })
}

/// One field that differs between RunPod's template and the wanted one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldChange {
    pub field: String,
    /// Absent when the template does not exist yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old: Option<Value>,
    pub new: Value,
}

/// The fields of `wanted` whose value differs in `current` (`None`: no template yet, so every
/// field). Fields `wanted` leaves out are not compared: a PATCH only changes what it names.
pub fn diff(current: Option<&Map<String, Value>>, wanted: &Map<String, Value>) -> Vec<FieldChange> {
    let same = |a: &Value, b: &Value| {
        // RunPod answers `registry: null` for "none"; a PATCH clears it with "".
        let blank = |v: &Value| v.is_null() || v.as_str() == Some("");
        a == b || (blank(a) && blank(b))
    };
    wanted
        .iter()
        .filter_map(|(k, v)| {
            let old = current.map(|c| c.get(k).cloned().unwrap_or(Value::Null));
            match &old {
                Some(o) if same(o, v) => None,
                _ => Some(FieldChange { field: k.clone(), old, new: v.clone() }),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn validation_names_the_field_and_suggests() {
        let body = json!({"name": "t", "image": "i", "dsik": 20, "ports": ["8888/http", "22"], "category": "TPU",
            "env": {"A": 1}, "mounts": {"network": {}}, "allowedCudaVersions": ["12"]});
        let problems: Vec<String> =
            validate(body.as_object().unwrap()).into_iter().map(|(_, f, m)| format!("{f}: {m}")).collect();
        assert!(
            problems.iter().any(|p| p.starts_with("dsik: unknown field `dsik` (did you mean `disk`?)")),
            "{problems:?}"
        );
        assert!(problems.iter().any(|p| p.starts_with("ports[1]:")));
        assert!(problems.iter().any(|p| p.starts_with("category:")));
        assert!(problems.iter().any(|p| p.starts_with("env.A:")));
        assert!(problems.iter().any(|p| p.starts_with("mounts.network:")));
        assert!(problems.iter().any(|p| p.starts_with("allowedCudaVersions:")));
        assert_eq!(problems.len(), 6);
    }

    #[test]
    fn diff_compares_only_wanted_fields_and_treats_blank_registries_alike() {
        let current = json!({"id": "x", "name": "t", "image": "a@sha256:1", "registry": null, "disk": 20});
        let wanted = json!({"name": "t", "image": "a@sha256:2", "registry": ""});
        let d = diff(current.as_object(), wanted.as_object().unwrap());
        assert_eq!(
            d,
            vec![FieldChange { field: "image".into(), old: Some(json!("a@sha256:1")), new: json!("a@sha256:2") }]
        );
        assert_eq!(diff(None, wanted.as_object().unwrap()).len(), 3);
    }
}
