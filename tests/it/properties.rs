//! Property tests over what reads untrusted bytes: the policy parser and resolver, the OCI
//! layout reader and the archive readers never panic, and every policy mistake is located.
//! The kept corpus (tests/corpus/) holds inputs that once broke something or come close; each
//! runs every time.

use std::path::Path;

use proptest::prelude::*;
use publish_action::image::{Image, OpenOptions, Transport};
use publish_action::policy;

fn options(dir: &Path) -> OpenOptions {
    OpenOptions {
        compression: Default::default(),
        compression_level: None,
        docker_socket: dir.join("no-docker.sock"),
        read_timeout: std::time::Duration::from_secs(300),
    }
}

const VALID: &str = "version: 1
registries:
  home: {kind: registry, repository: 127.0.0.1:5000/ml, insecure: true}
images:
  - name: app
    source: oci:build/app
    tags: [latest, \"{{ git.short_sha }}\"]
";

/// Parses and resolves a policy; the result is an Ok or located diagnostics, never a panic.
fn policy_never_panics(text: &str) {
    match policy::parse("p.yaml", text) {
        Ok(p) => {
            let ctx = policy::TemplateContext::default();
            if let Err(d) = policy::resolve(&p, "p.yaml", Path::new("."), &ctx) {
                assert!(d.0.iter().all(|x| x.line >= 1 && x.col >= 1 && !x.field.is_empty()));
            }
        }
        Err(d) => assert!(d.0.iter().all(|x| x.line >= 1 && x.col >= 1)),
    }
}

fn layout_never_panics(index: &[u8], oci_layout: &[u8], blob: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("img");
    std::fs::create_dir_all(img.join("blobs/sha256")).unwrap();
    std::fs::write(img.join("index.json"), index).unwrap();
    std::fs::write(img.join("oci-layout"), oci_layout).unwrap();
    let digest = publish_action::types::Digest::of(blob);
    std::fs::write(img.join("blobs/sha256").join(digest.hex()), blob).unwrap();
    let _ = Image::open_with(&Transport::OciDir { path: img, reference: None }, &options(dir.path()));
}

fn archive_never_panics(bytes: &[u8], docker: bool) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.tar");
    std::fs::write(&path, bytes).unwrap();
    let t = if docker {
        Transport::DockerArchive { path, reference: None }
    } else {
        Transport::OciArchive { path, reference: None }
    };
    let _ = Image::open_with(&t, &options(dir.path()));
}

/// A mutation of a valid policy: a character replaced, a line dropped or duplicated.
fn mutated_policy() -> impl Strategy<Value = String> {
    (0usize..VALID.len(), any::<char>(), 0u8..3).prop_map(|(at, c, how)| {
        let mut lines: Vec<String> = VALID.lines().map(str::to_string).collect();
        let line = at % lines.len();
        match how {
            0 => {
                let mut s: Vec<char> = lines[line].chars().collect();
                if !s.is_empty() {
                    let i = at % s.len();
                    s[i] = c;
                }
                lines[line] = s.into_iter().collect();
            }
            1 => {
                lines.remove(line);
            }
            _ => {
                let l = lines[line].clone();
                lines.insert(line, l);
            }
        }
        lines.join("\n")
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn the_policy_reader_never_panics_on_any_text(text in ".{0,400}") {
        policy_never_panics(&text);
    }

    #[test]
    fn the_policy_reader_never_panics_on_a_damaged_policy(text in mutated_policy()) {
        policy_never_panics(&text);
    }

    #[test]
    fn the_layout_reader_never_panics(
        index in prop::collection::vec(any::<u8>(), 0..300),
        version in prop::sample::select(vec![&b"{\"imageLayoutVersion\":\"1.0.0\"}"[..], b"{}", b"[", b"{\"imageLayoutVersion\":7}"]),
        blob in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        layout_never_panics(&index, version, &blob);
    }

    #[test]
    fn the_archive_readers_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048), docker in any::<bool>()) {
        archive_never_panics(&bytes, docker);
    }
}

#[test]
fn the_kept_corpus_never_panics() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        match path.extension().and_then(|e| e.to_str()) {
            Some("yaml") => policy_never_panics(&String::from_utf8_lossy(&bytes)),
            Some("json") => layout_never_panics(&bytes, b"{\"imageLayoutVersion\":\"1.0.0\"}", b"{}"),
            Some("tar") => {
                archive_never_panics(&bytes, true);
                archive_never_panics(&bytes, false);
            }
            _ => continue,
        }
        n += 1;
    }
    println!("corpus: {n} inputs");
    assert!(n >= 8, "the corpus is missing");
}
