//! A seeded randomized fault run against the real registry: 429 with `Retry-After`, 5xx
//! storms and expired credentials (401) on every registry request type (ping, HEAD, POST,
//! PATCH, PUT blob, PUT manifest), streamed and chunked. After every push: no tag whose
//! manifest lacks a blob; the same push without faults completes; bytes sent again stay
//! within one blob per fault. Prints a one-line summary.

use crate::support;

use crate::support::http_faults::{self, Rule};
use crate::support::image::{TestImage, write_layout};
use crate::support::{PASSWORD, Registry, RegistryOptions, USER, publish, run, text};
use serde_json::Value;

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

/// The other kinds of fault, seeded the same way: connections cut at random byte offsets
/// mid-upload, 5xx and 429 on a `docker://` source's manifest and blob reads, and RunPod
/// answering 429. The same invariants: a tag is whole or absent, a re-run completes.
#[test]
fn cuts_source_read_faults_and_runpod_throttling_leave_nothing_broken() {
    let mut rng = Rng(0xc0ff_ee11);
    let reg = Registry::start(RegistryOptions::default());
    let work = tempfile::tempdir().unwrap();
    let (mut cuts, mut source_faults, mut runpod_faults) = (0u32, 0usize, 0u32);

    // Cuts at random offsets of a streamed upload.
    let cutter = support::fault_proxy::start(reg.backend_port);
    for round in 0..40u32 {
        let tag = format!("cut{round}");
        let image =
            write_layout(&work.path().join(&tag), 1000 + u64::from(round), &[1_300_000], "linux", "amd64", "latest");
        {
            let mut f = cutter.faults.lock().unwrap();
            f.cut_at = Some(f.forwarded + 1 + rng.next() % 1_300_000);
            f.cut_every = None;
        }
        let out = run(publish(work.path()).args([
            "push",
            &format!("oci:{tag}"),
            &format!("docker://127.0.0.1:{}/ml/cuts:{tag}", cutter.port),
            "--insecure",
        ]));
        cuts = cutter.faults.lock().unwrap().cuts;
        if out.status.code() != Some(0) {
            cutter.faults.lock().unwrap().cut_at = None;
            let again = run(publish(work.path()).args([
                "push",
                &format!("oci:{tag}"),
                &format!("docker://127.0.0.1:{}/ml/cuts:{tag}", cutter.port),
                "--insecure",
            ]));
            assert_eq!(again.status.code(), Some(0), "{}", text(&again).1);
        }
        let info = reg.inspect(&format!("{}/ml/cuts:{tag}", reg.host), false);
        let info: Value = serde_json::from_slice(&info.stdout).unwrap();
        assert_eq!(info["Digest"], image.manifest_digest);
    }

    // 5xx and 429 on a docker:// source's reads.
    let source = Registry::start(RegistryOptions::default());
    let src_image = write_layout(&work.path().join("src"), 2000, &[900_000, 30_000], "linux", "amd64", "latest");
    let pushed = run(publish(work.path()).args([
        "push",
        "oci:src",
        &format!("docker://{}/ml/src:v1", source.host),
        "--insecure",
    ]));
    assert_eq!(pushed.status.code(), Some(0));
    let reader = http_faults::start(source.backend_port);
    for round in 0..40u32 {
        let rules: Vec<Rule> = (0..1 + rng.next() % 3)
            .map(|_| {
                let path = if rng.next().is_multiple_of(2) { "/blobs/" } else { "/manifests/" };
                let (status, headers) = fault(rng.next() % 4);
                Rule { method: "GET", path, status, headers, times: 1 }
            })
            .collect();
        reader.served.lock().unwrap().clear();
        *reader.rules.lock().unwrap() = rules;
        let copy = |cmd: &mut std::process::Command| {
            cmd.args([
                "push",
                &format!("docker://127.0.0.1:{}/ml/src:v1", reader.port),
                &format!("docker://{}/ml/copy:c{round}", reg.host),
                "--insecure",
                "--src-insecure",
            ]);
        };
        let mut cmd = publish(work.path());
        copy(&mut cmd);
        let out = run(&mut cmd);
        source_faults += reader.served.lock().unwrap().len();
        if out.status.code() != Some(0) {
            assert_eq!(out.status.code(), Some(1), "{}", text(&out).1);
            reader.rules.lock().unwrap().clear();
            let mut again = publish(work.path());
            copy(&mut again);
            assert_eq!(run(&mut again).status.code(), Some(0));
        }
        let info = reg.inspect(&format!("{}/ml/copy:c{round}", reg.host), false);
        let info: Value = serde_json::from_slice(&info.stdout).unwrap();
        assert_eq!(info["Digest"], src_image.manifest_digest);
    }

    // RunPod answering 429 (with Retry-After) before it answers.
    let rp = support::runpod::start();
    write_layout(&work.path().join("rp"), 3000, &[5_000], "linux", "amd64", "latest");
    let yaml = format!(
        "version: 1\nregistries:\n  home: {{kind: registry, repository: {}/ml, insecure: true}}\nimages:\n  - {{name: rp, source: oci:rp, tags: [main], visibility: public}}\nrunpod:\n  templates:\n    - {{name: rp-main, image: rp, body: {{disk: 20, env: {{IMAGE: \"{{{{ image.ref }}}}\"}}}}}}\n",
        reg.host
    );
    std::fs::write(work.path().join("publish.yaml"), yaml).unwrap();
    for _ in 0..10 {
        let n = 1 + (rng.next() % 2) as u32;
        rp.state.lock().unwrap().throttle = n;
        let out = run(publish(work.path())
            .arg("run")
            .env("RUNPOD_API_KEY", support::runpod::API_KEY)
            .env("RUNPOD_API_URL", rp.url()));
        runpod_faults += n - rp.state.lock().unwrap().throttle;
        assert_eq!(out.status.code(), Some(0), "{}", text(&out).1);
    }
    assert_eq!(rp.state.lock().unwrap().templates.len(), 1, "one template, synced idempotently");

    // Rekor answering 503 while an image is signed keylessly.
    let s = support::sigstore::start();
    let mut rekor_faults = 0u32;
    let signed = |round: u32| {
        format!(
            "version: 1\nregistries:\n  home: {{kind: registry, repository: {}/ml, insecure: true}}\nimages:\n  - {{name: signed, source: oci:k{round}, tags: [k{round}], visibility: public}}\nsigning: {{keyless: true, fulcio_url: {}, rekor_url: {}}}\n",
            reg.host,
            s.fulcio_url(),
            s.rekor_url()
        )
    };
    for round in 0..10u32 {
        let n = 1 + (rng.next() % 2) as u32;
        // A new image each round, so each round logs a new signature.
        write_layout(
            &work.path().join(format!("k{round}")),
            4000 + u64::from(round),
            &[2_000],
            "linux",
            "amd64",
            "latest",
        );
        s.rekor_faults.store(n, std::sync::atomic::Ordering::SeqCst);
        std::fs::write(work.path().join("publish.yaml"), signed(round)).unwrap();
        let out = run(publish(work.path())
            .args(["run", "-o", "json"])
            .env("ACTIONS_ID_TOKEN_REQUEST_URL", s.token_url())
            .env("ACTIONS_ID_TOKEN_REQUEST_TOKEN", support::sigstore::REQUEST_TOKEN));
        rekor_faults += n - s.rekor_faults.load(std::sync::atomic::Ordering::SeqCst);
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
        let json: Value = serde_json::from_str(&stdout).unwrap();
        assert!(json["images"][0]["targets"][0]["signed"]["legacy"].is_string(), "{json}");
    }

    println!(
        "fault run, other kinds: {cuts} cuts mid-upload, {source_faults} faults on source reads, {runpod_faults} RunPod 429s, {rekor_faults} Rekor 503s; 0 broken tags"
    );
    assert!(cuts >= 30 && source_faults >= 40 && runpod_faults >= 10 && rekor_faults >= 10);
}
