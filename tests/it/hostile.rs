//! Hostile and broken inputs, each with the exit code and the words its message must have:
//! policies and templates that would leak secrets or never finish, layouts that point out of
//! themselves or never end, registries that redirect writes elsewhere. No input may panic,
//! hang, print a secret or write anything.

use crate::support;

use std::path::Path;

use crate::support::http::{Response, Server};
use crate::support::image::write_layout;
use crate::support::{publish, run, text};

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

const REG: &str = "registries:\n  home: {kind: registry, repository: 127.0.0.1:5000/ml, insecure: true}\n";

/// Policies with one mistake each: exit 2, and the message names the field.
const POLICIES: &[(&str, &str, &[&str])] = &[
    ("unknown top-level key", "version: 1\nimagez: []\n", &["imagez"]),
    ("version 2", "version: 2\n", &["version", "unsupported version 2"]),
    ("version as text", "version: one\n", &["version"]),
    (
        "duplicate image names",
        "version: 1\n{REG}images:\n  - {name: a, source: oci:img, tags: [v1]}\n  - {name: a, source: oci:img, tags: [v1]}\n",
        &["images[1].name", "listed twice"],
    ),
    (
        "an image name with capitals",
        "version: 1\n{REG}images:\n  - {name: App, source: oci:img, tags: [v1]}\n",
        &["images[0].name"],
    ),
    ("an empty source", "version: 1\n{REG}images:\n  - {name: a, source: \"\", tags: [v1]}\n", &["images[0].source"]),
    (
        "retention with a duration without a unit and keep_last 0",
        "version: 1\n{REG}images:\n  - {name: a, source: oci:img, tags: [v1], retention: {min_age: \"90\"}}\nretention: {keep_within: 30x, keep_last: 0}\n",
        &["retention.keep_within", "\"30x\" is not a duration", "retention.keep_last", "images[0].retention.min_age"],
    ),
    (
        "an unknown transport",
        "version: 1\n{REG}images:\n  - {name: a, source: \"dir:x\", tags: [v1]}\n",
        &["images[0].source", "unknown transport"],
    ),
    ("no tags", "version: 1\n{REG}images:\n  - {name: a, source: oci:img, tags: []}\n", &["images[0].tags"]),
    (
        "a tag with a colon",
        "version: 1\n{REG}images:\n  - {name: a, source: oci:img, tags: [\"a:b\"]}\n",
        &["images[0].tags[0]"],
    ),
    (
        "a tag of 200 characters",
        "version: 1\n{REG}images:\n  - {name: a, source: oci:img, tags: [\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"]}\n",
        &["images[0].tags[0]"],
    ),
    (
        "a tag template that does not parse",
        "version: 1\n{REG}images:\n  - {name: a, source: oci:img, tags: [\"{{ git.sha \"]}\n",
        &["images[0].tags[0]", "cannot render"],
    ),
    (
        "an unknown git fact",
        "version: 1\n{REG}images:\n  - {name: a, source: oci:img, tags: [\"{{ git.nope }}\"]}\n",
        &["images[0].tags[0]"],
    ),
    (
        "a bad platform",
        "version: 1\n{REG}images:\n  - {name: a, source: oci:img, tags: [v1], platforms: [linux]}\n",
        &["images[0].platforms[0]"],
    ),
    (
        "an unknown visibility",
        "version: 1\n{REG}images:\n  - {name: a, source: oci:img, tags: [v1], visibility: secret}\n",
        &["visibility", "unknown value `secret`"],
    ),
    (
        "an unknown compression",
        "version: 1\n{REG}images:\n  - {name: a, source: oci:img, tags: [v1], compression: lz4}\n",
        &["compression"],
    ),
    (
        "an unknown publish_to",
        "version: 1\n{REG}images:\n  - {name: a, source: oci:img, tags: [v1], publish_to: some}\n",
        &["publish_to"],
    ),
    (
        "a registry nobody defined",
        "version: 1\n{REG}images:\n  - {name: a, source: oci:img, tags: [v1], registries: [hme]}\n",
        &["images[0].registries[0]", "did you mean `home`"],
    ),
    (
        "an unknown registry kind",
        "version: 1\nregistries:\n  x: {kind: quay, repository: quay.io/x}\n",
        &["registries.x.kind"],
    ),
    (
        "plain HTTP to a remote host",
        "version: 1\nregistries:\n  x: {kind: registry, repository: r.example.com/ml, insecure: true}\n",
        &["registries.x"],
    ),
    (
        "a password_env that is not a name",
        "version: 1\nregistries:\n  x: {kind: registry, repository: 127.0.0.1:5000/ml, insecure: true, credentials: {username: u, password_env: \"A B\"}}\n",
        &["registries.x.credentials"],
    ),
    (
        "a chunk of 0 bytes",
        "version: 1\nregistries:\n  x: {kind: registry, repository: 127.0.0.1:5000/ml, insecure: true, chunk_size: 0B}\n",
        &["registries.x.chunk_size"],
    ),
    (
        "ECR Public parts under 5 MiB",
        "version: 1\nregistries:\n  x: {kind: ecr-public, repository: public.ecr.aws/o, chunk_size: 4MiB}\n",
        &["registries.x.chunk_size", "from 5 MiB to 10 MiB"],
    ),
    ("an upload rate of 0", "version: 1\nupload_rate: 0MB\n", &["upload_rate"]),
    (
        "a size past 16 EiB",
        "version: 1\nupload_rate: 99999999999999999999TB\n",
        &["upload_rate", "larger than any size"],
    ),
    ("a size without a number", "version: 1\nupload_rate: MB\n", &["upload_rate"]),
    ("zero attempts", "version: 1\ntransfer: {attempts: 0}\n", &["transfer.attempts"]),
    ("zero concurrency", "version: 1\ntransfer: {concurrency: 0}\n", &["transfer.concurrency"]),
    ("a negative timeout", "version: 1\ntransfer: {read_timeout: -5}\n", &["transfer.read_timeout"]),
    ("signing with a key and keyless", "version: 1\nsigning: {key: cosign.key, keyless: true}\n", &["signing"]),
    (
        "signing with neither",
        "version: 1\nsigning: {format: both}\n",
        &["signing", "key: (a cosign key) or keyless: true"],
    ),
    ("a signing key env:// without a name", "version: 1\nsigning: {key: \"env://\"}\n", &["signing.key"]),
    (
        "Fulcio over plain HTTP",
        "version: 1\nsigning: {keyless: true, fulcio_url: \"http://fulcio.example.com\"}\n",
        &["signing.fulcio_url"],
    ),
    ("an unknown signing format", "version: 1\nsigning: {keyless: true, format: pgp}\n", &["format"]),
    (
        "a RunPod key variable that is not a name",
        "version: 1\nrunpod: {api_key_env: \"1KEY\", templates: []}\n",
        &["runpod.api_key_env"],
    ),
    (
        "a template for an image that does not exist",
        "version: 1\n{REG}images:\n  - {name: a, source: oci:img, tags: [v1]}\nrunpod:\n  templates:\n    - {name: t, image: b, body: {disk: 1}}\n",
        &["runpod.templates[0]"],
    ),
    ("a registry without a repository", "version: 1\nregistries:\n  x: {kind: registry}\n", &["registries.x"]),
    (
        "a repository with a space",
        "version: 1\nregistries:\n  x: {kind: registry, repository: \"127.0.0.1:5000/m l\", insecure: true}\n",
        &["registries.x"],
    ),
    (
        "an unknown key in a registry",
        "version: 1\nregistries:\n  x: {kind: registry, repository: 127.0.0.1:5000/ml, insecure: true, pasword_env: X}\n",
        &["pasword_env"],
    ),
    (
        "an unknown key in an image",
        "version: 1\n{REG}images:\n  - {name: a, source: oci:img, tgas: [v1]}\n",
        &["tgas", "did you mean `tags`"],
    ),
    ("an unknown key in transfer", "version: 1\ntransfer: {retries: 3}\n", &["retries"]),
    ("an unknown key in signing", "version: 1\nsigning: {keyles: true}\n", &["keyles"]),
    ("an unknown key in runpod", "version: 1\nrunpod: {template: []}\n", &["template"]),
    ("images as a mapping", "version: 1\nimages: {a: 1}\n", &["images", "expected a list"]),
    (
        "tags as a string",
        "version: 1\n{REG}images:\n  - {name: a, source: oci:img, tags: v1}\n",
        &["tags", "expected a list"],
    ),
    (
        "insecure as text",
        "version: 1\nregistries:\n  x: {kind: registry, repository: 127.0.0.1:5000/ml, insecure: maybe}\n",
        &["insecure", "expected true or false"],
    ),
    (
        "a ca_file that does not exist",
        "version: 1\nregistries:\n  x: {kind: registry, repository: 127.0.0.1:5000/ml, ca_file: nope.pem}\n",
        &["registries.x.ca_file"],
    ),
    (
        "a ca_file that is a directory",
        "version: 1\nregistries:\n  x: {kind: registry, repository: 127.0.0.1:5000/ml, ca_file: img}\n",
        &["registries.x.ca_file", "not a regular file"],
    ),
    ("a signing key that does not exist", "version: 1\nsigning: {key: nope.key}\n", &["signing.key", "does not exist"]),
    (
        "a signing password_env that is not a name",
        "version: 1\nsigning: {key: \"env://K\", password_env: \"-x\"}\n",
        &["signing.password_env"],
    ),
    ("Rekor that is not a URL", "version: 1\nsigning: {keyless: true, rekor_url: \"rekor\"}\n", &["signing.rekor_url"]),
    (
        "a source archive that does not exist",
        "version: 1\n{REG}images:\n  - {name: a, source: \"oci-archive:nope.tar\", tags: [v1]}\n",
        &["images[0].source"],
    ),
    (
        "a source layout that is a file",
        "version: 1\n{REG}images:\n  - {name: a, source: \"oci:publish.yaml\", tags: [v1]}\n",
        &["images[0].source", "not a directory"],
    ),
    (
        "a named image the layout does not have",
        "version: 1\n{REG}images:\n  - {name: a, source: \"oci:img:nope\", tags: [v1]}\n",
        &["images[0].source", "no image named"],
    ),
    (
        "a platform the image does not provide",
        "version: 1\n{REG}images:\n  - {name: a, source: oci:img, tags: [v1], platforms: [linux/arm64]}\n",
        &["images[0].platforms", "linux/arm64 is required"],
    ),
    (
        "an empty candidate list",
        "version: 1\n{REG}images:\n  - {name: a, source: oci:img, tags: [v1], registries: []}\n",
        &["images[0].registries"],
    ),
    (
        "no registries at all",
        "version: 1\nimages:\n  - {name: a, source: oci:img, tags: [v1]}\n",
        &["registries", "no registries are defined"],
    ),
    ("a template_env entry with a password", "version: 1\ntemplate_env: [DB_PASSWORD]\n", &["template_env[0]"]),
    (
        "a RunPod template with an unknown field",
        "version: 1\n{REG}images:\n  - {name: a, source: oci:img, tags: [v1]}\nrunpod:\n  templates:\n    - {name: t, image: a, body: {disk: 1, diskk: 2}}\n",
        &["runpod.templates[0]"],
    ),
    (
        "a RunPod body with an undefined variable",
        "version: 1\n{REG}images:\n  - {name: a, source: oci:img, tags: [v1]}\nrunpod:\n  templates:\n    - {name: t, image: a, body: {disk: 1, env: {X: \"{{ vars.nope }}\"}}}\n",
        &["runpod.templates[0]"],
    ),
    (
        "a port past 65535",
        "version: 1\nregistries:\n  x: {kind: registry, repository: \"127.0.0.1:99999/ml\", insecure: true}\n",
        &["registries.x.repository", "1 to 65535"],
    ),
    ("YAML that is not a mapping", "- just\n- a list\n", &["expected a mapping"]),
    ("tabs for indentation", "version: 1\nregistries:\n\thome: {}\n", &["publish.yaml:"]),
];

#[test]
fn every_policy_mistake_is_exit_2_with_its_field_and_writes_nothing() {
    for (name, yaml, says) in POLICIES {
        let dir = tempfile::tempdir().unwrap();
        write_layout(&dir.path().join("img"), 36, &[1_000], "linux", "amd64", "latest");
        std::fs::write(dir.path().join("publish.yaml"), yaml.replace("{REG}", REG)).unwrap();
        let out = run(publish(dir.path()).arg("check").env("REG_PASS", SECRET));
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{name}: {stdout}\n{stderr}");
        for word in *says {
            assert!(stderr.contains(word), "{name}: the message lacks {word:?}:\n{stderr}");
        }
        assert!(!stderr.contains("panicked") && !stderr.contains("DuplicateKeyPolicy"), "{name}: {stderr}");
    }
    println!("hostile policies: {} cases", POLICIES.len());
}

/// Hostile registry answers to a push: exit 1, these words, no secret printed.
type Answer = fn(&support::http::Request, u16) -> Response;

const REGISTRIES: &[(&str, Answer, &[&str])] =
    &[
        (
            "a token answer larger than 1 MiB",
            |r, p| match r.target.as_str() {
                "/v2/" => Response::new(401)
                    .header("WWW-Authenticate", &format!("Bearer realm=\"http://127.0.0.1:{p}/token\"")),
                _ => {
                    let mut resp = Response::new(200).header("Content-Type", "application/json");
                    resp.body = vec![b' '; 2 * 1024 * 1024];
                    resp
                }
            },
            &["larger than"],
        ),
        (
            "a token answer that is not JSON",
            |r, p| match r.target.as_str() {
                "/v2/" => Response::new(401)
                    .header("WWW-Authenticate", &format!("Bearer realm=\"http://127.0.0.1:{p}/token\"")),
                _ => Response::new(200),
            },
            &["not the JSON expected"],
        ),
        (
            "a token realm over plain HTTP off loopback",
            |_, _| Response::new(401).header("WWW-Authenticate", "Bearer realm=\"http://auth.example.com/token\""),
            &["refusing to request a token over plain HTTP"],
        ),
        (
            "a token realm that is not a URL",
            |_, _| Response::new(401).header("WWW-Authenticate", "Bearer realm=\"::nope\""),
            &["is not a URL"],
        ),
        ("a 401 without a challenge and no credentials", |_, _| Response::new(401), &["authentication failed"]),
        (
            "an upload Location that is not a URL",
            |r, _| match (r.method.as_str(), r.target.as_str()) {
                ("GET", "/v2/") => Response::new(200),
                ("HEAD", _) => Response::new(404),
                ("POST", _) => Response::new(202).header("Location", "http://[::1"),
                _ => Response::new(404),
            },
            &["is not a URL"],
        ),
        (
            "an upload without a Location",
            |r, _| match (r.method.as_str(), r.target.as_str()) {
                ("GET", "/v2/") => Response::new(200),
                ("HEAD", _) => Response::new(404),
                ("POST", _) => Response::new(202),
                _ => Response::new(404),
            },
            &["without a Location"],
        ),
        (
            "a 413 from a proxy with an HTML page",
            |r, _| match (r.method.as_str(), r.target.as_str()) {
                ("GET", "/v2/") => Response::new(200),
                ("HEAD", _) => Response::new(404),
                ("POST", _) => Response::new(202).header("Location", "/upload/1"),
                _ => {
                    let mut resp = Response::new(413).header("Content-Type", "text/html");
                    resp.body = b"<html><body><h1>413 Request Entity Too Large</h1></body></html>".to_vec();
                    resp
                }
            },
            &["client_max_body_size 0"],
        ),
        (
            "a blob stored under another digest",
            |r, _| match (r.method.as_str(), r.target.as_str()) {
                ("GET", "/v2/") => Response::new(200),
                ("HEAD", _) => Response::new(404),
                ("POST", _) => Response::new(202).header("Location", "/upload/1"),
                ("PUT", t) if t.starts_with("/upload/") => Response::new(201).header(
                    "Docker-Content-Digest",
                    "sha256:0000000000000000000000000000000000000000000000000000000000000000",
                ),
                _ => Response::new(404),
            },
            &["stored blob"],
        ),
        (
            "a manifest stored under another digest",
            |r, _| match (r.method.as_str(), r.target.as_str()) {
                ("GET", "/v2/") => Response::new(200),
                ("HEAD", _) => Response::new(200),
                ("PUT", _) => Response::new(201).header(
                    "Docker-Content-Digest",
                    "sha256:0000000000000000000000000000000000000000000000000000000000000000",
                ),
                _ => Response::new(404),
            },
            &["stored manifest"],
        ),
        (
            "an error body that is not JSON",
            |r, _| match (r.method.as_str(), r.target.as_str()) {
                ("GET", "/v2/") => Response::new(200),
                ("HEAD", _) => Response::new(200),
                _ => {
                    let mut resp = Response::new(400);
                    resp.body = b"garbage \x00\x01 not json".to_vec();
                    resp
                }
            },
            &["400 BAD_REQUEST"],
        ),
        (
            "a redirect loop on the ping",
            |_, p| Response::new(302).header("Location", &format!("http://127.0.0.1:{p}/v2/")),
            &["redirect"],
        ),
    ];

#[test]
fn hostile_registry_answers_fail_the_push_with_a_clear_message() {
    for (name, answer, says) in REGISTRIES {
        let port = std::sync::Arc::new(std::sync::atomic::AtomicU16::new(0));
        let p = port.clone();
        let answer = *answer;
        let server = Server::start(move |r| answer(r, p.load(std::sync::atomic::Ordering::SeqCst)));
        port.store(server.port, std::sync::atomic::Ordering::SeqCst);
        let dir = tempfile::tempdir().unwrap();
        write_layout(&dir.path().join("img"), 37, &[2_000], "linux", "amd64", "latest");
        let out = run(publish(dir.path())
            .args(["push", "oci:img", &format!("docker://127.0.0.1:{}/ml/x:v1", server.port), "--insecure"])
            .env("PUBLISH_RETRY_BASE_MS", "1"));
        let (stdout, stderr) = text(&out);
        let all = format!("{stdout}{stderr}");
        assert_eq!(out.status.code(), Some(1), "{name}: {all}");
        for word in *says {
            assert!(all.contains(word), "{name}: the message lacks {word:?}:\n{all}");
        }
        assert!(!all.contains("<html>") && !all.contains("panicked"), "{name}: {all}");
    }
    println!("hostile registries: {} cases", REGISTRIES.len());
}

/// A registry that answers one byte every few seconds (here: not at all for a while) is given
/// up on at the request's deadline, not after the idle timeout; with its retries, within 2.5
/// times `transfer.request_timeout`.
#[test]
fn a_stalling_registry_is_given_up_on_at_the_deadline() {
    let server = Server::start(|_| {
        std::thread::sleep(std::time::Duration::from_secs(3));
        Response::new(200)
    });
    let dir = tempfile::tempdir().unwrap();
    write_layout(&dir.path().join("img"), 38, &[1_000], "linux", "amd64", "latest");
    std::fs::write(
        dir.path().join("publish.yaml"),
        format!(
            "version: 1\nregistries:\n  home: {{kind: registry, repository: 127.0.0.1:{}/ml, insecure: true}}\ntransfer: {{request_timeout: 1, read_timeout: 300}}\nimages:\n  - {{name: a, source: oci:img, tags: [v1], visibility: public}}\n",
            server.port
        ),
    )
    .unwrap();
    let out = run(publish(dir.path()).args(["run", "-o", "json"]));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("deadline passed"), "{stdout}");
}

/// A registry that answers the request `stall` picks one byte every 10 s (never finishing
/// within any deadline), and everything else as a small empty registry would; `throttle`
/// answers every upload start with 429 and a `Retry-After` of years.
fn slow_registry(stall: fn(&str, &str) -> bool, token: bool) -> u16 {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(200) {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    return;
                }
                let mut parts = line.split_whitespace();
                let (method, target) = (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string());
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).map_or(true, |n| n == 0) || h.trim().is_empty() {
                        break;
                    }
                }
                if stall(&method, &target) {
                    // At most 12 bytes, 10 s apart: bounded, and far past any deadline tested.
                    for b in b"HTTP/1.1 200".iter() {
                        if stream.write_all(&[*b]).is_err() {
                            return;
                        }
                        std::thread::sleep(std::time::Duration::from_secs(10));
                    }
                    return;
                }
                let (status, extra) = match (method.as_str(), target.as_str()) {
                    ("GET", "/v2/") if token => (
                        "401 Unauthorized",
                        format!("WWW-Authenticate: Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"x\"\r\n"),
                    ),
                    ("GET", "/v2/") => ("200 OK", String::new()),
                    ("GET", t) if t.starts_with("/token") => ("200 OK", String::new()),
                    ("POST", _) => ("429 Too Many Requests", "Retry-After: 99999999\r\n".to_string()),
                    _ => ("404 Not Found", String::new()),
                };
                let body = if target.starts_with("/token") { r#"{"token":"t"}"# } else { "" };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n{body}",
                    body.len()
                );
            });
        }
    });
    port
}

/// Every wait ends within the documented bound, `transfer.request_timeout` × 2.5 (here 2 s →
/// 5 s), retries and server-asked waits included: a registry that trickles one byte every 10 s
/// on the ping, the token, a blob HEAD or a source's manifest GET, and one that answers every
/// upload start with `Retry-After` of three years. The error says how long it waited and
/// which setting bounds it.
#[test]
fn every_request_ends_within_its_documented_bound_retries_and_waits_included() {
    type Stall = fn(&str, &str) -> bool;
    let cases: &[(&str, Stall, bool, bool)] = &[
        ("the ping", |m, t| m == "GET" && t == "/v2/", false, false),
        ("the token", |m, t| m == "GET" && t.starts_with("/token"), true, false),
        ("a blob HEAD", |m, t| m == "HEAD" && t.contains("/blobs/"), false, false),
        ("a source's manifest GET", |m, t| m == "GET" && t.contains("/src/manifests/"), false, true),
        ("an upload start answered 429, Retry-After: 99999999", |_, _| false, false, false),
    ];
    for (name, stall, token, from_registry) in cases {
        let port = slow_registry(*stall, *token);
        let dir = tempfile::tempdir().unwrap();
        write_layout(&dir.path().join("img"), 39, &[1_000], "linux", "amd64", "latest");
        let source = if *from_registry { format!("docker://127.0.0.1:{port}/ml/src:v1") } else { "oci:img".into() };
        std::fs::write(
            dir.path().join("publish.yaml"),
            format!(
                "version: 1\nregistries:\n  home: {{kind: registry, repository: 127.0.0.1:{port}/ml, insecure: true}}\ntransfer: {{request_timeout: 2}}\nimages:\n  - {{name: a, source: \"{source}\", tags: [v1], visibility: public}}\n"
            ),
        )
        .unwrap();
        let started = std::time::Instant::now();
        let out = run(publish(dir.path()).args(["run", "-o", "json"]).env("PUBLISH_RETRY_BASE_MS", "200"));
        let took = started.elapsed();
        let (stdout, stderr) = text(&out);
        let all = format!("{stdout}{stderr}");
        assert_ne!(out.status.code(), Some(0), "{name}: {all}");
        let waited: f64 = all
            .split("gave up after ")
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{name}: the error must say how long it waited:\n{all}"));
        // The bound is 5 s; a timer on a busy 2-core runner may fire a few hundred ms late.
        assert!(waited <= 5.5, "{name}: waited {waited} s, the bound is 5 s:\n{all}");
        assert!(all.contains("transfer.request_timeout: 2 s"), "{name}: the error must name the setting:\n{all}");
        // The whole command, start-up included: nowhere near the 60+ s a full wait would take.
        assert!(took < std::time::Duration::from_secs(10), "{name}: took {took:?}:\n{all}");
        println!("{name}: gave up after {waited} s ({took:.1?} in all)");
    }
}

/// A manifest whose descriptor says 7 bytes more than its first layer has is never tagged,
/// whichever way the layer reaches the registry: skipped because the registry has it (local
/// source and registry source), mounted from another repository, sent with sendfile, or
/// streamed in chunks. The error names the blob and both sizes.
#[test]
fn a_descriptor_that_lies_about_a_blob_size_is_never_tagged_on_any_upload_path() {
    let reg = support::Registry::start(support::RegistryOptions::default());
    let work = tempfile::tempdir().unwrap();
    let image = write_layout(&work.path().join("img"), 41, &[300_000, 20_000], "linux", "amd64", "latest");
    let push = |src: &str, dest: &str, extra: &[&str]| {
        let out = run(publish(work.path())
            .args(["push", src, &format!("docker://{}/{dest}", reg.host), "--insecure"])
            .args(extra));
        let (stdout, stderr) = text(&out);
        (out.status.code(), format!("{stdout}{stderr}"))
    };
    // The true image first: the registry holds every blob in ml/app.
    for dest in ["ml/app:v1", "ml/lie:true"] {
        let (code, all) = push("oci:img", dest, &[]);
        assert_eq!(code, Some(0), "{all}");
    }

    let (lie, _, layer, size) = support::image::lie_about_first_layer_size(&image, 7);
    let said = |all: &str, whose: &str| {
        assert!(
            all.contains(&layer)
                && all.contains(&format!("says {} bytes", size + 7))
                && all.contains(&format!("{whose} {size}")),
            "the error must name the blob and both sizes ({whose}):\n{all}"
        );
    };
    let tag_absent = |repo: &str, tag: &str| {
        let status = support::http_status(reg.backend_port, &format!("/v2/{repo}/manifests/{tag}"));
        assert!(status.as_deref().is_some_and(|s| s.contains("404")), "{repo}:{tag} was tagged: {status:?}");
    };
    for (dest, extra) in
        [("ml/app:lie", &[][..]), ("ml/fresh:lie", &[][..]), ("ml/chunked:lie", &["--chunk-size", "64KiB"][..])]
    {
        let (code, all) = push("oci:img", dest, extra);
        assert_eq!(code, Some(1), "{dest}: {all}");
        said(&all, "the source file has");
        let (repo, tag) = dest.split_once(':').unwrap();
        tag_absent(repo, tag);
    }

    // The same lie read from a registry (distribution 2.8 does not check descriptor sizes, so
    // it takes the manifest from curl): skipped where the blob is, mounted where it is not.
    support::curl_put_manifest(
        &reg,
        "ml/lie",
        "v1",
        "application/vnd.oci.image.manifest.v1+json",
        &String::from_utf8(lie).unwrap(),
    );
    let src = format!("docker://{}/ml/lie:v1", reg.host);
    let (code, all) = push(&src, "ml/app:remote-lie", &["--src-insecure"]);
    assert_eq!(code, Some(1), "{all}");
    said(&all, "the registry holds");
    tag_absent("ml/app", "remote-lie");
    let (code, all) = push(&src, "ml/mounted:v1", &["--src-insecure"]);
    assert_eq!(code, Some(1), "{all}");
    said(&all, "the mounted blob has");
    tag_absent("ml/mounted", "v1");
}
