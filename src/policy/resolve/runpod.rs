//! The `runpod:` section: templates (inline or from files) checked by rendering them against
//! a sample image, the API key variable and URL, endpoints.

use std::path::Path;

use super::super::model;
use super::super::resolved::*;
use std::collections::HashSet;

use super::super::diag;
use super::{Checker, valid_env_name};
use crate::reference::is_loopback_host;

pub(super) fn resolve_runpod(
    c: &mut Checker,
    rp: &model::RunPod,
    images: &[ResolvedImage],
    base_dir: &Path,
) -> ResolvedRunPod {
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
        let source = template_source(c, t, &field, base_dir);
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
    let allow_rollback = rp.allow_rollback.as_ref().is_some_and(|a| a.value);
    ResolvedRunPod { api_key_env, api_url, vars: rp.vars.clone(), templates, allow_rollback }
}

/// A template's `body:` or `file:` (read now, bounded), exactly one of them.
fn template_source(c: &mut Checker, t: &model::Template, field: &str, base_dir: &Path) -> Option<TemplateSource> {
    match (&t.body, &t.file) {
        (Some(body), None) => Some(TemplateSource::Inline { body: body.value.clone(), at: (body.line, body.col) }),
        (None, Some(f)) => {
            let path = base_dir.join(&f.value);
            // A template file is small; bounded like the policy, and never a FIFO or device.
            let read = crate::http::read_file_limited(&path, 4 * 1024 * 1024)
                .map_err(|e| e.to_string())
                .and_then(|b| String::from_utf8(b).map_err(|_| format!("{} is not UTF-8 text", path.display())));
            match read {
                Ok(text) => Some(TemplateSource::File { display: f.value.display().to_string(), text }),
                Err(e) => {
                    c.err(
                        f,
                        format!("{field}.file"),
                        format!("cannot read the template: {e}"),
                        Some("paths are relative to the policy file".into()),
                    );
                    None
                }
            }
        }
        (Some(body), Some(_)) => {
            c.err(body, field, "give either body: or file:, not both", None);
            None
        }
        (None, None) => {
            c.err(
                &t.name,
                field,
                "the template has no body: or file:",
                Some("body: {disk: 20, ports: [8888/http]} or file: runpod/template.json".into()),
            );
            None
        }
    }
}
