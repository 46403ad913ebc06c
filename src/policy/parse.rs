//! Reading `publish.yaml`: YAML into the model, with the error's line, column and field path,
//! and serde's messages explained in the user's words.

use std::path::Path;

use super::diag::{self, Diagnostic, Diagnostics};
use super::model::Policy;

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
        let (message, hint) = explain(&err.to_string());
        let field = match path.map(|p| clean_path(&p)) {
            Some(p) if p != "?" => p,
            // A duplicate key is found before serde knows the path: name the key.
            _ => duplicate_key(&err.to_string()).unwrap_or(".").to_string(),
        };
        Diagnostics(vec![Diagnostic { file: file.to_string(), line, col, field, message, hint }])
    })
}

/// The largest policy file read: far above any real one.
const MAX_POLICY: u64 = 4 * 1024 * 1024;

/// Reads (bounded, a regular file only) and parses the policy at `path`.
pub fn load(path: &Path) -> Result<(Policy, String), Diagnostics> {
    let file = path.display().to_string();
    let fail = |message: String| {
        Diagnostics(vec![Diagnostic {
            file: file.clone(),
            line: 1,
            col: 1,
            field: ".".into(),
            message,
            hint: Some("pass --policy FILE, or run from the directory holding publish.yaml".into()),
        }])
    };
    let bytes = crate::http::read_file_limited(path, MAX_POLICY)
        .map_err(|e| fail(format!("cannot read the policy file: {e}")))?;
    let text = String::from_utf8(bytes)
        .map_err(|e| fail(format!("the policy is not UTF-8 (byte {})", e.utf8_error().valid_up_to())))?;
    Ok((parse(&file, &text)?, file))
}

/// The key of a "duplicate mapping key: KEY, …" message.
fn duplicate_key(rendered: &str) -> Option<&str> {
    let rest = rendered.split("duplicate mapping key: ").nth(1)?;
    Some(rest.split(',').next().unwrap_or(rest).trim())
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
    if let Some(key) = duplicate_key(msg) {
        return (format!("`{key}` is written twice in the same mapping"), Some("keep one of them".into()));
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
