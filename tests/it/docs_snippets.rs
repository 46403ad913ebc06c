//! Every YAML snippet in README.md and docs/*.md is executed: a workflow step names only the
//! action's real inputs; a policy (or a fragment of one, completed with a minimal registry and
//! image) passes `publish check` with the files it names made for it (image layouts and
//! archives, RunPod template files, a cosign key).

use crate::support;

use std::path::Path;

use crate::support::image::write_layout;
use crate::support::{publish, run, text};
use serde_json::{Map, Value, json};

fn snippets() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for f in support::doc_files() {
        let text = std::fs::read_to_string(&f).unwrap();
        let mut block: Option<String> = None;
        for (i, line) in text.lines().enumerate() {
            match (&mut block, line.trim_start().starts_with("```")) {
                (None, true) if line.trim() == "```yaml" => block = Some(String::new()),
                (Some(b), true) => {
                    out.push((format!("{}:{}", f.file_name().unwrap().to_string_lossy(), i + 1), std::mem::take(b)));
                    block = None;
                }
                (Some(b), false) => {
                    b.push_str(line);
                    b.push('\n');
                }
                _ => {}
            }
        }
    }
    out
}

fn yaml(text: &str) -> Value {
    serde_saphyr::from_str::<Value>(text).unwrap_or_else(|e| panic!("not YAML: {e}\n{text}"))
}

/// The policy a fragment belongs to: its keys over a minimal valid policy.
fn complete(fragment: &Value) -> Value {
    let mut policy: Map<String, Value> = fragment.as_object().cloned().unwrap_or_default();
    policy.entry("version").or_insert(json!(1));
    let registries = policy.entry("registries").or_insert(json!({})).as_object_mut().unwrap();
    if registries.is_empty() {
        registries
            .insert("home".into(), json!({"kind": "registry", "repository": "127.0.0.1:5000/ml", "insecure": true}));
    }
    let first = registries.keys().next().unwrap().clone();
    let images = policy.entry("images").or_insert(json!([{"name": "app"}]));
    for img in images.as_array_mut().unwrap() {
        let img = img.as_object_mut().unwrap();
        img.entry("source").or_insert(json!("oci:build/app"));
        img.entry("tags").or_insert(json!(["v1"]));
        if let Some(regs) = img.get("registries").and_then(Value::as_array) {
            assert!(!regs.is_empty());
        } else {
            img.insert("registries".into(), json!([first]));
        }
    }
    Value::Object(policy)
}

/// Makes the files a policy names, relative to `dir`.
fn make_files(policy: &Value, dir: &Path) {
    for (i, img) in policy["images"].as_array().unwrap().iter().enumerate() {
        let source = img["source"].as_str().unwrap();
        let (transport, path) = source.split_once(':').unwrap();
        let path = path.split(':').next().unwrap();
        match transport {
            "oci" => {
                write_layout(&dir.join(path), 300 + i as u64, &[1_000], "linux", "amd64", "latest");
            }
            "oci-archive" | "docker-archive" => {
                let layout = dir.join(format!(".layout{i}"));
                write_layout(&layout, 300 + i as u64, &[1_000], "linux", "amd64", "latest");
                let file = dir.join(path);
                std::fs::create_dir_all(file.parent().unwrap()).unwrap();
                let ok = std::process::Command::new("tar")
                    .arg("-cf")
                    .arg(&file)
                    .arg("-C")
                    .arg(&layout)
                    .arg(".")
                    .status()
                    .unwrap()
                    .success();
                assert!(ok && transport == "oci-archive", "docker-archive snippets need a docker save tarball");
            }
            other => panic!("a snippet's source {other}: is not made by this test"),
        }
        if let Some(sbom) = img["sbom"].as_str() {
            // A CycloneDX 1.6 document that names no digest, as syft writes one for a tag.
            let doc = json!({"bomFormat": "CycloneDX", "specVersion": "1.6", "version": 1,
                "metadata": {"component": {"type": "container", "name": "app", "version": "v1"}}, "components": []});
            let p = dir.join(sbom);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, doc.to_string()).unwrap();
        }
    }
    for t in policy.pointer("/runpod/templates").and_then(Value::as_array).into_iter().flatten() {
        if let Some(file) = t["file"].as_str() {
            let p = dir.join(file);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, r#"{"disk": 20, "env": {"MODEL": "{{ vars.model | default('none') }}"}}"#).unwrap();
        }
    }
    for r in policy["registries"].as_object().into_iter().flat_map(|m| m.values()) {
        if let Some(ca) = r["ca_file"].as_str() {
            let made = tempfile::tempdir().unwrap();
            support::make_ca(made.path(), "/CN=docs snippet CA");
            let p = dir.join(ca);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::copy(made.path().join("ca.pem"), p).unwrap();
        }
    }
    if let Some(key) = policy.pointer("/signing/key").and_then(Value::as_str) {
        let out = run(publish(dir).arg("generate-key-pair").env("COSIGN_PASSWORD", "docs-test"));
        assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
        assert_eq!(key, "cosign.key", "snippets name the key generate-key-pair writes");
    }
}

#[test]
fn every_yaml_snippet_in_the_docs_is_checked() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let action = yaml(&std::fs::read_to_string(root.join("action.yml")).unwrap());
    let inputs: Vec<String> = action["inputs"].as_object().unwrap().keys().cloned().collect();
    let (mut steps, mut policies) = (0, 0);
    for (at, snippet) in snippets() {
        let value = yaml(&snippet);
        if let Some(step) = value.as_array().and_then(|a| a.first()).filter(|s| s.get("uses").is_some()) {
            steps += 1;
            for k in step["with"].as_object().into_iter().flat_map(|w| w.keys()) {
                assert!(inputs.contains(k), "{at}: the action has no input {k:?} (inputs: {inputs:?})");
            }
            continue;
        }
        policies += 1;
        let policy = complete(&value);
        let dir = tempfile::tempdir().unwrap();
        make_files(&policy, dir.path());
        std::fs::write(dir.path().join("publish.yaml"), serde_json::to_string_pretty(&policy).unwrap()).unwrap();
        let out = run(publish(dir.path())
            .arg("check")
            .env("GITHUB_SHA", "0123456789abcdef0123456789abcdef01234567")
            .env("GITHUB_REF_NAME", "main")
            .env("GITHUB_REF_TYPE", "branch"));
        let (stdout, stderr) = text(&out);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{at}: the snippet does not pass publish check:\n{stdout}{stderr}\n{snippet}"
        );
    }
    assert!(steps >= 2 && policies >= 6, "{steps} workflow steps, {policies} policies");
}

/// The docs state their facts with public sources: none names a file users do not have (the
/// project's shared/ folder of research notes and tools).
#[test]
fn no_doc_cites_files_outside_the_repository() {
    for f in support::doc_files() {
        let text = std::fs::read_to_string(&f).unwrap();
        for (n, line) in text.lines().enumerate() {
            assert!(!line.contains("shared/"), "{}:{}: names shared/: {line}", f.display(), n + 1);
        }
    }
}
