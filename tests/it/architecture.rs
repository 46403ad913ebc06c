//! The rules of docs/architecture.md that a machine can check, over the source tree as it is:
//! the environment read in one file, no settings global, no function over 100 lines, no file
//! over 500.

use std::path::{Path, PathBuf};

fn sources() -> Vec<(PathBuf, String)> {
    fn walk(dir: &Path, out: &mut Vec<(PathBuf, String)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                out.push((path, text));
            }
        }
    }
    let mut out = Vec::new();
    walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut out);
    assert!(out.len() > 50, "the source tree was not found");
    out
}

fn name(path: &Path) -> String {
    path.strip_prefix(env!("CARGO_MANIFEST_DIR")).unwrap_or(path).display().to_string()
}

/// (start line, length in lines, name) of each function: from its `fn` line to the `}` at the
/// same indentation.
fn functions(text: &str) -> Vec<(usize, usize, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let fn_line =
        regex::Regex::new(r"^(\s*)(pub(\([^)]*\))?\s+)?(async\s+)?(const\s+)?(unsafe\s+)?fn\s+(\w+)").unwrap();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(c) = fn_line.captures(line) else { continue };
        let indent = c.get(1).unwrap().as_str();
        // A declaration without a body (in a trait) ends with `;` before any `{`.
        let Some(open) =
            (i..lines.len()).find(|&j| lines[j].trim_end().ends_with('{') || lines[j].trim_end().ends_with(';'))
        else {
            continue;
        };
        if lines[open].trim_end().ends_with(';') {
            continue;
        }
        let close = format!("{indent}}}");
        if let Some(end) = (open + 1..lines.len()).find(|&j| lines[j] == close) {
            out.push((i + 1, end - i + 1, c.get(7).unwrap().as_str().to_string()));
        }
    }
    out
}

#[test]
fn the_environment_is_read_in_one_file() {
    let mut found = Vec::new();
    for (path, text) in sources() {
        if path.ends_with("commands/load.rs") {
            continue;
        }
        for (i, line) in text.lines().enumerate() {
            if line.contains("env::var") {
                found.push(format!("{}:{}: {}", name(&path), i + 1, line.trim()));
            }
        }
    }
    assert!(found.is_empty(), "only src/commands/load.rs reads the environment:\n{}", found.join("\n"));
}

#[test]
fn no_global_holds_the_settings() {
    let mut found = Vec::new();
    for (path, text) in sources() {
        for (i, line) in text.lines().enumerate() {
            let setting = ["ClientConfig", "RetryPolicy", "Duration"].iter().any(|t| line.contains(t));
            if line.contains("SETTINGS") || (line.trim_start().starts_with("static") && setting) {
                found.push(format!("{}:{}: {}", name(&path), i + 1, line.trim()));
            }
        }
    }
    assert!(found.is_empty(), "settings are values handed to clients, not globals:\n{}", found.join("\n"));
}

#[test]
fn no_function_over_100_lines_and_no_file_over_500() {
    let mut found = Vec::new();
    let mut counted = 0;
    for (path, text) in sources() {
        let lines = text.lines().count();
        if lines > 500 {
            found.push(format!("{}: {lines} lines", name(&path)));
        }
        for (start, len, f) in functions(&text) {
            counted += 1;
            if len > 100 {
                found.push(format!("{}:{start}: fn {f} is {len} lines", name(&path)));
            }
        }
    }
    assert!(counted > 500, "only {counted} functions were found: the scan is broken");
    assert!(found.is_empty(), "split these by what they decide:\n{}", found.join("\n"));
}

#[test]
fn the_function_scan_measures_what_it_should() {
    let text = "fn a() {\n    x();\n}\n\n    pub async fn b(\n        y: u8,\n    ) -> u8 {\n        y\n    }\n";
    assert_eq!(functions(text), vec![(1, 3, "a".into()), (5, 5, "b".into())]);
}
