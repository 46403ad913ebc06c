//! Every `publish …` command README.md and docs/*.md show — in shell blocks and in inline code
//! — names a real subcommand, and every flag on it is one that subcommand takes (its `--help`
//! lists it); and every page's shell commands are run as shown by a test that reads them from
//! the page (docs/runpod.md: tests/runpod.rs, docs/signing.md: tests/cosign.rs,
//! docs/self-hosting.md: tests/init.rs, README.md: tests/try.rs and .ci/run).

use crate::support;

use std::path::Path;

use crate::support::{publish, run, text};

/// `publish …` commands in shell blocks (continuations joined, env assignments dropped) and in
/// inline code spans.
fn commands() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for f in support::doc_files() {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(&f).unwrap().replace("\\\n", " ");
        let mut in_sh = false;
        for line in text.lines() {
            let t = line.trim();
            if t.starts_with("```") {
                in_sh = t == "```sh";
                continue;
            }
            if in_sh {
                let words: Vec<&str> =
                    t.split_whitespace().skip_while(|w| w.contains('=') && !w.starts_with("--")).collect();
                if words.first() == Some(&"publish") {
                    out.push((name.clone(), words.join(" ")));
                }
            } else {
                for span in line.split('`').skip(1).step_by(2) {
                    if span.starts_with("publish ") {
                        out.push((name.clone(), span.to_string()));
                    }
                }
            }
        }
    }
    out
}

#[test]
fn every_documented_publish_command_and_flag_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut checked = 0;
    for (file, command) in commands() {
        let command = command.split(" # ").next().unwrap().split('#').next().unwrap().to_string();
        let words: Vec<&str> = command.split_whitespace().skip(1).collect();
        // The subcommand path: leading words that are not flags, placeholders or arguments.
        let mut path = Vec::new();
        for w in &words {
            let is_name = w.chars().all(|c| c.is_ascii_lowercase() || c == '-') && !w.starts_with('-');
            let known = [
                "check",
                "plan",
                "run",
                "push",
                "schema",
                "sign",
                "verify",
                "generate-key-pair",
                "runpod",
                "render",
                "sync",
                "history",
                "rollback",
                "init",
                "prune",
            ];
            if is_name && known.contains(w) && (path.is_empty() || path == ["runpod"]) {
                path.push(*w);
            } else {
                break;
            }
        }
        let mut cmd = publish(root);
        cmd.args(&path).arg("--help");
        let out = run(&mut cmd);
        let (help, stderr) = text(&out);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{file}: `{command}`: `publish {} --help` failed: {stderr}",
            path.join(" ")
        );
        for w in &words {
            let flag = w.trim_start_matches(['[', '(']).split(['=', ']', '|', ')', ',']).next().unwrap();
            if flag.starts_with("--") && flag.len() > 2 {
                assert!(help.contains(flag), "{file}: `{command}`: publish {} takes no {flag}", path.join(" "));
            }
        }
        checked += 1;
    }
    assert!(checked >= 20, "{checked} commands");
}

/// Every page with shell commands has a test that runs them as shown (reading them from the
/// page, so a changed command is a changed test); the benchmark's commands are the exception.
#[test]
fn every_page_with_shell_commands_has_a_test_that_runs_them() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap();
    // page → the test file that runs its commands with support::docs::sh_commands
    let runners = [
        ("docs/runpod.md", "tests/it/runpod.rs"),
        ("docs/signing.md", "tests/it/cosign.rs"),
        ("docs/self-hosting.md", "tests/it/init.rs"),
    ];
    for f in support::doc_files() {
        let page = f.strip_prefix(root).unwrap().to_string_lossy().to_string();
        let commands = support::docs::sh_commands(&page);
        if commands.is_empty() {
            continue;
        }
        match page.as_str() {
            // scripts/try is run by tests/try.rs, scripts/test is what .ci/run runs.
            "README.md" => {
                let shown: Vec<&str> = commands.iter().map(|(_, c)| c.as_str()).collect();
                assert_eq!(shown, ["scripts/try", "scripts/test"], "README.md's two set-up commands");
                assert!(read("tests/it/try.rs").contains("scripts/try"));
                assert!(read(".ci/run").contains("exec scripts/test"));
            }
            // Minutes of pushes on two cores: run by hand, the tables are their output.
            "docs/performance.md" => {
                assert!(commands.iter().all(|(_, c)| c.contains("scripts/bench")), "{commands:?}");
            }
            _ => {
                let runner = runners.iter().find(|(p, _)| *p == page).map(|(_, t)| *t);
                let runner = runner.unwrap_or_else(|| panic!("{page} shows commands no test runs: {commands:?}"));
                assert!(
                    read(runner).contains(&format!("sh_commands(\"{page}\")")),
                    "{runner} does not run {page}'s commands"
                );
            }
        }
    }
}
