//! Hostile and broken inputs, each with the exit code and the words its message must have:
//! policies and templates that would leak secrets or never finish, layouts that point out of
//! themselves or never end, registries that redirect writes elsewhere. No input may panic,
//! hang, print a secret or write anything.

mod support;

use std::path::Path;

use support::http::{Response, Server};
use support::image::write_layout;
use support::{publish, run, text};

const SECRET: &str = "s3cr3t-value-41c9e2";

struct Case {
    name: &'static str,
    /// Extra policy lines (under `registries:`, then top level), the image's tags, and a
    /// change to the layout.
    registry: &'static str,
    top: &'static str,
    tags: &'static str,
    layout: fn(&Path),
    args: &'static [&'static str],
    code: i32,
    says: &'static [&'static str],
}

fn nothing(_: &Path) {}

fn write_policy(dir: &Path, case: &Case) {
    let yaml = format!(
        "version: 1
registries:
  home:
    kind: registry
    repository: 127.0.0.1:1/ml
    insecure: true
    credentials: {{username: bot, password_env: REG_PASS}}
{registry}{top}images:
  - name: app
    source: oci:img
    tags: {tags}
",
        registry = case.registry,
        top = case.top,
        tags = case.tags
    );
    std::fs::write(dir.join("publish.yaml"), yaml).unwrap();
}

fn blob_path(dir: &Path, digest: &str) -> std::path::PathBuf {
    dir.join("img/blobs/sha256").join(&digest["sha256:".len()..])
}

fn layer_of(dir: &Path) -> String {
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("img/index.json")).unwrap()).unwrap();
    let m = index["manifests"][0]["digest"].as_str().unwrap().to_string();
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(blob_path(dir, &m)).unwrap()).unwrap();
    manifest["layers"][0]["digest"].as_str().unwrap().to_string()
}

const CASES: &[Case] = &[
    Case {
        name: "a registry password as a tag",
        registry: "",
        top: "",
        tags: "[\"{{ env.REG_PASS }}\"]",
        layout: nothing,
        args: &["check"],
        code: 2,
        says: &["images[0].tags[0]", "env.REG_PASS", "template_env"],
    },
    Case {
        name: "a secret listed in template_env",
        registry: "",
        top: "template_env: [REG_PASS]\n",
        tags: "[v1]",
        layout: nothing,
        args: &["check"],
        code: 2,
        says: &["template_env[0]", "REG_PASS holds a secret"],
    },
    Case {
        name: "a token by its nature in template_env",
        registry: "",
        top: "template_env: [GITHUB_TOKEN, AWS_SECRET_ACCESS_KEY]\n",
        tags: "[v1]",
        layout: nothing,
        args: &["check"],
        code: 2,
        says: &["template_env[0]", "template_env[1]"],
    },
    Case {
        name: "the whole environment in a tag",
        registry: "",
        top: "",
        tags: "[\"{{ env }}\"]",
        layout: nothing,
        args: &["plan"],
        code: 2,
        says: &["images[0].tags[0]"],
    },
    Case {
        name: "nested loops in a tag",
        registry: "",
        top: "",
        tags: "[\"{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}\"]",
        layout: nothing,
        args: &["check"],
        code: 2,
        says: &["images[0].tags[0]", "fuel"],
    },
    Case {
        name: "a layer blob that is missing",
        registry: "",
        top: "",
        tags: "[v1]",
        layout: |d| std::fs::remove_file(blob_path(d, &layer_of(d))).unwrap(),
        args: &["check"],
        code: 2,
        says: &["images[0].source", "is missing"],
    },
    Case {
        name: "a layer blob of the wrong size",
        registry: "",
        top: "",
        tags: "[v1]",
        layout: |d| std::fs::write(blob_path(d, &layer_of(d)), b"short").unwrap(),
        args: &["check"],
        code: 2,
        says: &["images[0].source", "5 bytes but its descriptor says"],
    },
    Case {
        name: "a layer blob that is a symlink out of the layout",
        registry: "",
        top: "",
        tags: "[v1]",
        layout: |d| {
            let p = blob_path(d, &layer_of(d));
            std::fs::remove_file(&p).unwrap();
            std::os::unix::fs::symlink("/etc/passwd", &p).unwrap();
        },
        args: &["check"],
        code: 2,
        says: &["symlink out of the layout"],
    },
    Case {
        name: "index.json that is a FIFO",
        registry: "",
        top: "",
        tags: "[v1]",
        layout: |d| {
            std::fs::remove_file(d.join("img/index.json")).unwrap();
            let ok = std::process::Command::new("mkfifo").arg(d.join("img/index.json")).status().unwrap();
            assert!(ok.success());
        },
        args: &["check"],
        code: 2,
        says: &["index.json is not a regular file"],
    },
    Case {
        name: "index.json that is /dev/zero",
        registry: "",
        top: "",
        tags: "[v1]",
        layout: |d| {
            std::fs::remove_file(d.join("img/index.json")).unwrap();
            std::os::unix::fs::symlink("/dev/zero", d.join("img/index.json")).unwrap();
        },
        args: &["check"],
        code: 2,
        says: &["index.json"],
    },
    Case {
        name: "an unknown image layout version",
        registry: "",
        top: "",
        tags: "[v1]",
        layout: |d| std::fs::write(d.join("img/oci-layout"), r#"{"imageLayoutVersion":"9.9.9"}"#).unwrap(),
        args: &["check"],
        code: 2,
        says: &["imageLayoutVersion \"9.9.9\""],
    },
    Case {
        name: "a ca_file that is /dev/zero",
        registry: "  tls:\n    kind: registry\n    repository: 127.0.0.1:2/ml\n    ca_file: /dev/zero\n",
        top: "",
        tags: "[v1]",
        layout: nothing,
        args: &["check"],
        code: 2,
        says: &["registries.tls.ca_file", "not a regular file"],
    },
    Case {
        name: "a key written twice",
        registry: "",
        top: "upload_rate: 1MB\nupload_rate: 2MB\n",
        tags: "[v1]",
        layout: nothing,
        args: &["check"],
        code: 2,
        says: &["upload_rate", "twice"],
    },
    Case {
        name: "a transfer deadline of zero",
        registry: "",
        top: "transfer: {request_timeout: 0, min_rate: 0B}\n",
        tags: "[v1]",
        layout: nothing,
        args: &["check"],
        code: 2,
        says: &["transfer.request_timeout", "transfer.min_rate"],
    },
];

#[test]
fn hostile_policies_templates_and_layouts_get_their_exit_code_and_message() {
    for case in CASES {
        let dir = tempfile::tempdir().unwrap();
        write_layout(&dir.path().join("img"), 33, &[20_000], "linux", "amd64", "latest");
        (case.layout)(dir.path());
        write_policy(dir.path(), case);
        let out = run(publish(dir.path()).args(case.args).env("REG_PASS", SECRET).env("COSIGN_PASSWORD", SECRET));
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(case.code), "{}: {stdout}\n{stderr}", case.name);
        for word in case.says {
            assert!(stderr.contains(word), "{}: the message lacks {word:?}:\n{stderr}", case.name);
        }
        assert!(!stdout.contains(SECRET) && !stderr.contains(SECRET), "{}: the secret was printed", case.name);
    }
}

#[test]
fn a_ca_file_that_never_ends_or_is_not_pem_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_layout(&dir.path().join("img"), 34, &[1_000], "linux", "amd64", "latest");
    std::fs::write(dir.path().join("not.pem"), "hello").unwrap();
    for (ca, says) in [("/dev/zero", "not a regular file"), ("not.pem", "no PEM certificate")] {
        let out = run(publish(dir.path()).args(["push", "oci:img", "docker://127.0.0.1:9/ml/x:v1", "--ca-file", ca]));
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{ca}");
        assert!(stdout.contains(says) || stderr.contains(says), "{ca}: {stdout}{stderr}");
    }
}

#[test]
fn a_manifest_put_redirected_to_another_origin_is_not_reported_as_pushed() {
    let elsewhere = Server::start(|_| Response::new(201));
    let other = elsewhere.port;
    let reg = Server::start(move |req| match (req.method.as_str(), req.target.as_str()) {
        ("GET", "/v2/") => Response::new(200),
        ("HEAD", _) => Response::new(200),
        ("PUT", t) if t.contains("/manifests/") => {
            Response::new(307).header("Location", &format!("http://127.0.0.1:{other}{t}"))
        }
        _ => Response::new(404),
    });
    let dir = tempfile::tempdir().unwrap();
    write_layout(&dir.path().join("img"), 35, &[1_000], "linux", "amd64", "latest");
    let out = run(publish(dir.path()).args([
        "push",
        "oci:img",
        &format!("docker://127.0.0.1:{}/ml/x:v1", reg.port),
        "--insecure",
        "-o",
        "json",
    ]));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("redirected to another origin"), "{stdout}");
}
