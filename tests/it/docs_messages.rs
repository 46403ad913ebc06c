//! Every message README.md and docs/*.md quote — in double quotes in prose, or as a line of a
//! plain ``` block shaped like `FILE:LINE: …` — is printed by the tool: each quote is mapped to
//! a scenario that runs `publish` against real files, a real registry or a stand-in, and the
//! quote must appear in what it printed (`…` stands for any text, `HOST` for a host). A quote
//! with no scenario fails the test, so a new one cannot go untested.

use crate::support;

use std::process::Command;

use crate::support::http::{Response, Server};
use crate::support::image::{sparse_layout, write_layout};
use crate::support::{Registry, RegistryOptions, publish, run, text};
use serde_json::json;

/// (file, quote) for every quoted message in the docs.
fn quotes() -> Vec<(String, String)> {
    let located = regex::Regex::new(r"^[\w./-]+:\d+(:\d+)?: ").unwrap();
    let mut out = Vec::new();
    for f in support::doc_files() {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        let doc = std::fs::read_to_string(&f).unwrap();
        let mut prose = String::new();
        let mut fence: Option<String> = None;
        for line in doc.lines() {
            if let Some(rest) = line.trim_start().strip_prefix("```") {
                fence = match fence {
                    Some(_) => None,
                    None => Some(rest.to_string()),
                };
                prose.push('\n');
                continue;
            }
            match &fence {
                Some(lang) if lang.is_empty() && located.is_match(line) => out.push((name.clone(), line.to_string())),
                Some(_) => prose.push('\n'),
                // Table rows quote policy values, not messages.
                None if line.starts_with('|') => prose.push('\n'),
                None => {
                    prose.push_str(line);
                    prose.push(' ');
                }
            }
        }
        // Quotes may run over a line break; code spans inside prose are not quotes.
        let prose: String = prose.split('`').step_by(2).collect::<Vec<_>>().join(" ");
        for (i, part) in prose.split('"').enumerate() {
            let q = part.split_whitespace().collect::<Vec<_>>().join(" ");
            if i % 2 == 1 && q.len() >= 12 && !q.contains("{{") && !q.contains('\n') {
                out.push((name.clone(), q));
            }
        }
    }
    out
}

/// Whether `output` holds `quote`, with `…` as any text and `HOST` as a host.
fn printed(quote: &str, output: &str) -> bool {
    let pattern = regex::escape(quote).replace('…', ".*?").replace("HOST", r"[\w.:\[\]-]+");
    let flat = output.split_whitespace().collect::<Vec<_>>().join(" ");
    regex::Regex::new(&pattern).unwrap().is_match(&flat)
}

fn combined(out: &std::process::Output) -> String {
    let (stdout, stderr) = text(out);
    format!("{stdout}\n{stderr}")
}

/// `publish plan` on a public image with a 12.4 GB layer: GHCR and ECR Public reject it
/// (with the numbers), Docker Hub is chosen, GHCR's missing usage API is said once, and the
/// login line names Docker's config for the host.
fn plan_large_public() -> String {
    let work = tempfile::tempdir().unwrap();
    sparse_layout(&work.path().join("img"), 1, &[12_400_000_000, 1_000_000]);
    std::fs::write(
        work.path().join("publish.yaml"),
        "version: 1\nregistries:\n  ghcr: {kind: ghcr, repository: ghcr.io/octo}\n  ecr: {kind: ecr-public, repository: public.ecr.aws/octo}\n  hub: {kind: dockerhub, repository: docker.io/octo}\nimages:\n  - name: app\n    source: oci:img\n    visibility: public\n    tags: [v1]\n",
    )
    .unwrap();
    let out = run(publish(work.path()).args(["plan", "--no-measure"]));
    assert_eq!(out.status.code(), Some(0), "{}", combined(&out));
    combined(&out)
}

/// docs/selection.md's example: a private 300 MB image, candidates ECR Public and GHCR Free,
/// no pulls_per_month. ECR Public refuses private images; GHCR Free's 1 GB of transfer is
/// broken only by the 30 assumed pulls, so GHCR is selected and says at what figure the
/// verdict changes (the reference decision matrix: private < 1 GB → GHCR).
fn plan_private_small() -> String {
    let work = tempfile::tempdir().unwrap();
    sparse_layout(&work.path().join("img"), 2, &[300_000_000, 14_000_000]);
    std::fs::write(
        work.path().join("publish.yaml"),
        "version: 1\nregistries:\n  ecr: {kind: ecr-public, repository: public.ecr.aws/octo}\n  ghcr: {kind: ghcr, repository: ghcr.io/octo}\nimages:\n  - name: app\n    source: oci:img\n    visibility: private\n    tags: [v1]\n    registries: [ecr, ghcr]\n",
    )
    .unwrap();
    let out = run(publish(work.path()).args(["plan", "--no-measure", "-o", "json"]));
    assert_eq!(out.status.code(), Some(0), "{}", combined(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["images"][0]["targets"][0]["registry"], "ghcr", "{plan:#}");
    let out = run(publish(work.path()).args(["plan", "--no-measure"]));
    assert_eq!(out.status.code(), Some(0), "{}", combined(&out));
    combined(&out)
}

/// A small public image that ECR Public and Docker Hub both take at $0.00: Docker Hub ranks
/// after ECR Public because of its anonymous pull limit, first from the catalog, then as
/// measured from a stand-in's `ratelimit-limit` header.
fn plan_cold_starts() -> String {
    let hub = Server::start(|req| match (req.method.as_str(), req.target.as_str()) {
        ("GET", "/v2/") => Response::new(200),
        ("HEAD", "/v2/ratelimitpreview/test/manifests/latest") => {
            Response::new(200).header("ratelimit-limit", "100;w=21600")
        }
        _ => Response::new(404),
    });
    let work = tempfile::tempdir().unwrap();
    write_layout(&work.path().join("img"), 3, &[10_000], "linux", "amd64", "latest");
    let policy = |hub: &str| {
        let insecure = if hub.starts_with("127.") { ", insecure: true" } else { "" };
        format!(
            "version: 1\nregistries:\n  ecr: {{kind: ecr-public, repository: public.ecr.aws/octo, used: {{storage: 0, transfer: 0}}}}\n  hub: {{kind: dockerhub, repository: {hub}{insecure}}}\nimages:\n  - name: app\n    source: oci:img\n    visibility: public\n    tags: [v1]\n    pulls_per_month: 30\n"
        )
    };
    let mut all = String::new();
    for (hub_repo, args) in [
        ("docker.io/octo".to_string(), &["plan", "--no-measure"][..]),
        (format!("127.0.0.1:{}/octo", hub.port), &["plan", "--measure"][..]),
    ] {
        std::fs::write(work.path().join("publish.yaml"), policy(&hub_repo)).unwrap();
        let out = run(publish(work.path()).args(args));
        assert_eq!(out.status.code(), Some(0), "{}", combined(&out));
        all.push_str(&combined(&out));
    }
    all
}

/// docs/runpod.md's own policy and template file, with the two mistakes the page describes.
fn runpod_mistakes() -> String {
    let work = tempfile::tempdir().unwrap();
    let json = support::docs::runpod_example(work.path(), None);
    let mut all = String::new();
    for (from, to) in [("\"disk\"", "\"dsik\""), ("vars.model", "vars.nope")] {
        assert!(json.contains(from), "docs/runpod.md's template has {from}");
        std::fs::write(work.path().join("runpod/comfyui.json"), json.replace(from, to)).unwrap();
        let out = run(publish(work.path()).arg("check").env("GITHUB_SHA", "0123456789abcdef0123456789abcdef01234567"));
        assert_eq!(out.status.code(), Some(2), "{}", combined(&out));
        all.push_str(&combined(&out));
    }
    all
}

/// A key-pair signature (not logged, publish's default) verified by `publish verify`; then a
/// `.sig` tag holding an index, which signing refuses to overwrite.
fn signing() -> String {
    let reg = Registry::start(RegistryOptions::default());
    let work = tempfile::tempdir().unwrap();
    let image = write_layout(&work.path().join("img"), 5, &[10_000], "linux", "amd64", "latest");
    let dir = work.path();
    let pw = [("COSIGN_PASSWORD", "docs-messages")];
    let ok = |cmd: &mut Command| {
        let out = run(cmd);
        assert_eq!(out.status.code(), Some(0), "{}", combined(&out));
        combined(&out)
    };
    ok(publish(dir).arg("generate-key-pair").envs(pw));
    let dst = format!("{}/docs/app", reg.host);
    ok(publish(dir).args(["push", "oci:img", &format!("docker://{dst}:v1"), "--insecure"]));
    let by_digest = format!("{dst}@{}", image.manifest_digest);
    ok(publish(dir).args(["sign", &by_digest, "--key", "cosign.key", "--insecure"]).envs(pw));
    let mut all = ok(publish(dir).args(["verify", &format!("{dst}:v1"), "--key", "cosign.pub", "--insecure"]));

    let other = write_layout(&work.path().join("other"), 6, &[10_000], "linux", "amd64", "latest");
    ok(publish(dir).args(["push", "oci:other", &format!("docker://{dst}:other"), "--insecure"]));
    let hex = other.manifest_digest.trim_start_matches("sha256:");
    let size = std::fs::metadata(other.dir.join("blobs/sha256").join(hex)).unwrap().len();
    let index = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": other.manifest_digest, "size": size}]});
    support::curl_put_manifest(
        &reg,
        "docs/app",
        &format!("sha256-{hex}.sig"),
        "application/vnd.oci.image.index.v1+json",
        &index.to_string(),
    );
    let by_digest = format!("{dst}@{}", other.manifest_digest);
    let out = run(publish(dir)
        .args(["sign", &by_digest, "--key", "cosign.key", "--insecure", "--format", "legacy"])
        .envs(pw));
    assert_eq!(out.status.code(), Some(1), "{}", combined(&out));
    all.push_str(&combined(&out));
    all
}

/// A run of `publish` and everything it printed.
type Scenario = fn() -> String;

/// Scenarios by a distinctive part of the quotes they print.
const SCENARIOS: &[(&str, Scenario)] = &[
    ("per-layer limit", plan_large_public),
    ("GHCR has no API", plan_large_public),
    ("Docker's config for", plan_large_public),
    ("ranks after ecr, which costs the same", plan_cold_starts),
    ("(measured: ratelimit-limit)", plan_cold_starts),
    ("runpod.templates[0]", runpod_mistakes),
    ("fits up to 3 pulls", plan_private_small),
    ("set pulls_per_month", plan_private_small),
    ("not logged in a transparency log", signing),
    ("exists but cannot be read", signing),
];

#[test]
fn every_quoted_message_is_what_the_tool_prints() {
    let quotes = quotes();
    assert!(quotes.len() >= 8, "{quotes:?}");
    let mut outputs: Vec<(usize, String)> = Vec::new();
    for (file, quote) in &quotes {
        let Some(i) = SCENARIOS.iter().position(|(key, _)| quote.contains(key)) else {
            panic!("{file}: the quote {quote:?} has no scenario in tests/docs_messages.rs that prints it");
        };
        let output = match outputs.iter().find(|(j, _)| *j == i) {
            Some((_, o)) => o.clone(),
            None => {
                let o = SCENARIOS[i].1();
                outputs.push((i, o.clone()));
                o
            }
        };
        assert!(printed(quote, &output), "{file}: {quote:?} is not what publish prints:\n{output}");
    }
    // Every scenario still has its quote in the docs.
    for (key, _) in SCENARIOS {
        assert!(quotes.iter().any(|(_, q)| q.contains(key)), "no doc quotes {key:?} any more");
    }
}
