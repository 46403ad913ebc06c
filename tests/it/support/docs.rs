//! The shell commands README.md and docs/*.md show, for the tests that run them as shown.

/// (the comment line above it, the command) for every command in the ```sh blocks of `file`
/// (relative to the repository), continuations joined and trailing `# …` comments dropped.
pub fn sh_commands(file: &str) -> Vec<(String, String)> {
    let doc = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file))
        .unwrap()
        .replace("\\\n", " ");
    let (mut out, mut in_sh, mut comment) = (Vec::new(), false, String::new());
    for line in doc.lines().map(str::trim) {
        if line.starts_with("```") {
            in_sh = line == "```sh";
            continue;
        }
        if !in_sh || line.is_empty() {
            continue;
        }
        if let Some(c) = line.strip_prefix('#') {
            comment = c.trim().to_string();
            continue;
        }
        out.push((comment.clone(), line.split(" # ").next().unwrap().trim().to_string()));
    }
    out
}

/// A documented command with its optional groups expanded: one variant without each `[…]`
/// group and one per alternative in it (`a | b` between options, `x|y|z` within one); a group
/// holding `…` is only left out.
pub fn expand(command: &str) -> Vec<String> {
    let mut variants = vec![String::new()];
    let mut rest = command;
    while let Some(open) = rest.find('[') {
        let close = open + rest[open..].find(']').expect("a closing ]");
        let fixed = &rest[..open];
        let group = &rest[open + 1..close];
        let mut choices = vec![String::new()];
        if !group.contains('…') {
            for alt in group.split(" | ") {
                let words: Vec<&str> = alt.split_whitespace().collect();
                match words.iter().position(|w| w.contains('|')) {
                    Some(k) => choices.extend(words[k].split('|').map(|v| {
                        let mut w = words.clone();
                        w[k] = v;
                        w.join(" ")
                    })),
                    None => choices.push(words.join(" ")),
                }
            }
        }
        variants =
            variants.iter().flat_map(|v| choices.iter().map(move |c| format!("{v}{fixed}{c}"))).collect::<Vec<_>>();
        rest = &rest[close + 1..];
    }
    variants.into_iter().map(|v| format!("{v}{rest}").split_whitespace().collect::<Vec<_>>().join(" ")).collect()
}

/// docs/runpod.md's own example in `dir`: its policy (the registry replaced by `registry`, a
/// loopback `host:port` with the harness's user, when given), its template file, and an image
/// at the source the policy names. Returns the template file as the page shows it.
pub fn runpod_example(dir: &std::path::Path, registry: Option<&str>) -> String {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/runpod.md")).unwrap();
    let block = |lang: &str| {
        let start = doc.find(&format!("```{lang}\n")).unwrap() + lang.len() + 4;
        let body = &doc[start..start + doc[start..].find("```").unwrap()];
        body.lines().filter(|l| !l.starts_with("//")).map(|l| format!("{l}\n")).collect::<String>()
    };
    for sub in ["build", "runpod"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    let img = dir.join("img");
    super::image::write_layout(&img, 4, &[10_000], "linux", "amd64", "latest");
    super::image::write_archive(&img, &dir.join("build/comfyui.tar"));
    let mut policy = block("yaml");
    if let Some(host) = registry {
        for (from, to) in [
            ("repository: registry.example.com/ml", format!("repository: {host}/ml\n    insecure: true")),
            ("{username: ci, ", format!("{{username: {}, ", super::USER)),
        ] {
            assert!(policy.contains(from), "docs/runpod.md's policy has {from}");
            policy = policy.replace(from, &to);
        }
    }
    std::fs::write(dir.join("publish.yaml"), policy).unwrap();
    let template = block("json");
    std::fs::write(dir.join("runpod/comfyui.json"), &template).unwrap();
    template
}
