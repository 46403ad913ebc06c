//! The reference decision matrix as an acceptance table: one row per scenario of the reference
//! research, planned by `publish plan` with default inputs (no `pulls_per_month`, no
//! `upload_rate`, no `used:`), usage measured from the stand-ins — a real registry with
//! htpasswd for the self-hosted candidate (catalog walk), a Docker Hub API and registry
//! stand-in (private repositories, `ratelimit-limit`), ECR Public's API (DescribeRepositories,
//! DescribeImages) — and every row's outcome compared with
//! the table in docs/selection.md, which explains with the numbers where the facts disagree
//! with the reference.

use crate::support;

use crate::support::http::{Response, Server};
use crate::support::{PASSWORD, Registry, RegistryOptions, USER, publish, run, text};
use serde_json::{Value, json};

const GB: u64 = 1_000_000_000;
const MB: u64 = 1_000_000;

/// The Docker Hub stand-in: the Hub API (one private repository in use) and the registry's
/// anonymous HEAD with Docker's documented limit.
fn docker_hub() -> Server {
    Server::start(|req| match (req.method.as_str(), req.target.split('?').next().unwrap_or_default()) {
        ("POST", "/v2/auth/token") => Response::new(200).json(&json!({"access_token": "hub-jwt"})),
        ("GET", "/v2/namespaces/me/repositories") => Response::new(200)
            .json(&json!({"count": 1, "next": null, "results": [{"name": "other", "is_private": true}]})),
        ("GET", "/v2/") => Response::new(200),
        ("HEAD", "/v2/ratelimitpreview/test/manifests/latest") => {
            Response::new(200).header("ratelimit-limit", "100;w=21600")
        }
        _ => Response::new(404),
    })
}

/// Rows of the matrix table in docs/selection.md: (scenario, reference, publish's choice).
fn documented() -> Vec<(String, String, String)> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/selection.md")).unwrap();
    let start = doc.find("| scenario (reference) |").expect("docs/selection.md has the matrix table");
    doc[start..]
        .lines()
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            let cells: Vec<String> = l.split('|').map(|c| c.trim().trim_matches('`').to_string()).collect();
            (cells[1].clone(), cells[2].clone(), cells[3].clone())
        })
        .collect()
}

#[test]
fn the_reference_matrix_with_default_inputs_and_measured_usage_matches_docs_selection_md() {
    let home = Registry::start(RegistryOptions { htpasswd: true, ..Default::default() });
    let hub = docker_hub();
    // ECR Public's API: one repository holding a 2 GB image (its manifest is not in the
    // registry stand-in, so it counts whole).
    let ecr = support::aws::ecr_api(std::sync::Arc::new(std::sync::Mutex::new(support::aws::EcrState {
        repositories: vec!["existing".into()],
        images: vec![("existing".into(), format!("sha256:{}", "e".repeat(64)), 2 * GB)],
        ..Default::default()
    })));
    // (scenario as the docs table names it, visibility, layer sizes)
    let rows: &[(&str, &str, &[u64])] = &[
        ("Public image, <5GB", "public", &[1_500 * MB, 1_500 * MB]),
        ("Public image, 5-50GB", "public", &[8 * GB, 8 * GB, 4 * GB]),
        ("Private image, <1GB", "private", &[200 * MB, 200 * MB]),
        ("Private image, 1-10GB", "private", &[2 * GB, 2 * GB]),
        ("Large AI image, models baked in", "public", &[9_500 * MB, 9_500 * MB, 3 * GB]),
        ("Large AI image, best practice", "public", &[GB, GB, GB, GB]),
        ("Full control, no limits", "private", &[12 * GB, 12 * GB, 6 * GB]),
    ];
    let docs = documented();
    assert_eq!(docs.len(), rows.len(), "one docs row per scenario: {docs:?}");
    for (i, (scenario, visibility, layers)) in rows.iter().enumerate() {
        let work = tempfile::tempdir().unwrap();
        support::image::sparse_layout(&work.path().join("img"), i as u64, layers);
        let yaml = format!(
            "version: 1
registries:
  ghcr:
    kind: ghcr
    repository: ghcr.io/octo
  ecr:
    kind: ecr-public
    repository: {home}/octo
    insecure: true
  hub:
    kind: dockerhub
    repository: 127.0.0.1:{hub}/me
    insecure: true
    credentials: {{username: me, password_env: HUB_TOKEN}}
  home:
    kind: registry
    repository: {home}/ml
    insecure: true
    credentials: {{username: {USER}, password_env: REG_PASSWORD}}
    limits: {{storage: 500GB}}
images:
  - name: app
    source: oci:img
    tags: [v1]
    visibility: {visibility}
    registries: [ghcr, ecr, hub, home]
",
            hub = hub.port,
            home = home.host
        );
        std::fs::write(work.path().join("publish.yaml"), yaml).unwrap();
        let out = run(publish(work.path())
            .args(["plan", "-o", "json"])
            .env("HUB_TOKEN", "dckr_pat_test")
            .env("REG_PASSWORD", PASSWORD)
            .env("DOCKERHUB_API_URL", format!("http://127.0.0.1:{}", hub.port))
            .env("AWS_ACCESS_KEY_ID", support::aws::ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", support::aws::SECRET_KEY)
            .env("AWS_ENDPOINT_URL_ECR_PUBLIC", format!("http://127.0.0.1:{}", ecr.port)));
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(0), "{scenario}: {stdout}\n{stderr}");
        let plan: Value = serde_json::from_str(&stdout).unwrap();
        let selected = plan["images"][0]["selected"][0].as_str().unwrap_or_default().to_string();
        let (doc_scenario, _reference, doc_choice) = &docs[i];
        assert_eq!(doc_scenario, scenario, "docs/selection.md rows are in the reference's order");
        assert_eq!(
            &selected,
            doc_choice,
            "{scenario}: publish chose {selected}, docs/selection.md says {doc_choice}\n{}",
            serde_json::to_string_pretty(&plan["images"][0]["candidates"]).unwrap()
        );
        // Usage came from measurement, not from the policy.
        let usage = |id: &str| {
            plan["images"][0]["candidates"].as_array().unwrap().iter().find(|c| c["registry"] == id).unwrap()["usage"]
                .clone()
        };
        for id in ["home", "ecr"] {
            assert_eq!(usage(id)["source"], "measured", "{scenario}: {id}: {}", usage(id));
        }
        assert_eq!(usage("ecr")["storage"], 2 * GB, "{scenario}");
    }
}
