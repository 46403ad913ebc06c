//! A seeded randomized fault run against the real registry: 429 with `Retry-After`, 5xx
//! storms and expired credentials (401) on every registry request type (ping, HEAD, POST,
//! PATCH, PUT blob, PUT manifest), streamed and chunked. After every push: no tag whose
//! manifest lacks a blob; the same push without faults completes; bytes sent again stay
//! within one blob per fault. Prints a one-line summary.

mod support;

use serde_json::Value;
use support::http_faults::{self, Rule};
use support::image::{TestImage, write_layout};
use support::{PASSWORD, Registry, RegistryOptions, USER, publish, run, text};

const REQUESTS: [(&str, &str); 6] = [
    ("GET", "/v2/"),
    ("HEAD", "/blobs/"),
    ("POST", "/blobs/uploads/"),
    ("PATCH", "/blobs/uploads/"),
    ("PUT", "/blobs/uploads/"),
    ("PUT", "/manifests/"),
];

/// A fault: status and headers.
fn fault(kind: u64) -> (u16, Vec<(&'static str, &'static str)>) {
    match kind % 5 {
        0 => (429, vec![("Retry-After", "0")]),
        1 => (500, vec![]),
        2 => (502, vec![]),
        3 => (503, vec![]),
        _ => (401, vec![("WWW-Authenticate", "Basic realm=\"test\"")]),
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn push(dir: &std::path::Path, port: u16, tag: &str, chunked: bool) -> (Option<i32>, Option<Value>, String) {
    let mut cmd = publish(dir);
    cmd.args([
        "push",
        &format!("oci:{tag}"),
        &format!("docker://127.0.0.1:{port}/ml/faults:{tag}"),
        "--insecure",
        "-o",
        "json",
    ])
    .args(["--username", USER, "--password-env", "REG_PASSWORD"])
    .env("REG_PASSWORD", PASSWORD);
    if chunked {
        cmd.args(["--chunk-size", "512KiB"]);
    }
    let out = run(&mut cmd);
    let (stdout, stderr) = text(&out);
    assert!(!stdout.contains(PASSWORD) && !stderr.contains(PASSWORD), "the password was printed");
    (out.status.code(), serde_json::from_str(&stdout).ok(), stderr)
}

/// The tag, when it exists, names our manifest, and every blob it lists is there.
fn tag_is_whole(reg: &Registry, image: &TestImage, tag: &str) -> bool {
    let out = reg.inspect(&format!("{}/ml/faults:{tag}", reg.host), false);
    if !out.status.success() {
        return false;
    }
    let info: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["Digest"], image.manifest_digest, "tag {tag} names another manifest");
    let layers: Vec<&str> = info["Layers"].as_array().unwrap().iter().map(|l| l.as_str().unwrap()).collect();
    assert_eq!(layers, image.layer_digests.iter().map(String::as_str).collect::<Vec<_>>());
    true
}

#[test]
fn three_hundred_random_faults_leave_no_broken_tag_and_every_rerun_completes() {
    let seed = std::env::var("FAULT_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_f00d_u64);
    let mut rng = Rng(seed);
    let reg = Registry::start(RegistryOptions { htpasswd: true, ..Default::default() });
    let proxy = http_faults::start(reg.backend_port);
    let work = tempfile::tempdir().unwrap();
    let largest = 1_300_000u64;
    let (mut served, mut rounds, mut failed_runs, mut resent_total) = (0usize, 0u32, 0u32, 0u64);
    while served < 300 {
        rounds += 1;
        assert!(rounds < 400, "only {served} faults served in {rounds} rounds");
        let tag = format!("r{rounds}");
        // New blobs every round, so every request type is reached: the small layer is shared.
        let image =
            write_layout(&work.path().join(&tag), u64::from(rounds), &[1_300_000, 40_000], "linux", "amd64", "latest");
        let rules: Vec<Rule> = (0..1 + rng.next() % 4)
            .map(|_| {
                let (method, path) = REQUESTS[(rng.next() % REQUESTS.len() as u64) as usize];
                let (status, headers) = fault(rng.next());
                Rule { method, path, status, headers, times: 1 + (rng.next() % 2) as u32 }
            })
            .collect();
        proxy.served.lock().unwrap().clear();
        *proxy.rules.lock().unwrap() = rules;
        // Every third round uploads in chunks.
        let chunked = rounds % 3 == 0;
        let (code, json, stderr) = push(work.path(), proxy.port, &tag, chunked);
        let faults_now = proxy.served.lock().unwrap().len();
        served += faults_now;
        match code {
            Some(0) => {
                assert!(tag_is_whole(&reg, &image, &tag), "round {rounds}: exit 0 but no whole tag\n{stderr}");
                let resent =
                    json.as_ref().map_or(0, |j| j["images"][0]["targets"][0]["bytes_resent"].as_u64().unwrap_or(0));
                assert!(
                    resent <= faults_now as u64 * largest,
                    "round {rounds}: resent {resent} for {faults_now} faults"
                );
                resent_total += resent;
            }
            Some(1) => {
                failed_runs += 1;
                // Whatever failed, a tag that exists is whole.
                tag_is_whole(&reg, &image, &tag);
                proxy.rules.lock().unwrap().clear();
                let (again, _, stderr) = push(work.path(), proxy.port, &tag, chunked);
                assert_eq!(again, Some(0), "round {rounds}: the re-run did not complete\n{stderr}");
                assert!(tag_is_whole(&reg, &image, &tag));
            }
            other => panic!("round {rounds}: exit {other:?}\n{stderr}"),
        }
    }
    println!(
        "fault run (seed {seed:#x}): {served} faults in {rounds} pushes, {failed_runs} gave up and completed on re-run, {resent_total} bytes resent, 0 broken tags"
    );
}
