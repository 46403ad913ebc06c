//! The README's first command, `scripts/try`: the whole job on the shipped example against a
//! throwaway registry — plan, push, sign, verify, render — and nothing left running.

use crate::support;

use std::process::Command;

#[test]
fn scripts_try_runs_the_whole_job_and_leaves_nothing_behind() {
    support::require("docker-registry");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("bash")
        .arg(root.join("scripts/try"))
        .env("PUBLISH_BIN", env!("CARGO_BIN_EXE_publish"))
        .env_remove("GITHUB_SHA")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for step in [
        "== plan",
        "== run: push and sign",
        "legacy (.sig): 1 valid",
        "bundle (referrer): 1 valid",
        "verified",
        "\"name\": \"hello-main\"",
    ] {
        assert!(stdout.contains(step), "missing {step:?} in\n{stdout}");
    }
    // The template points at what was pushed, by digest.
    let image = stdout.lines().find(|l| l.contains("\"image\": \"127.0.0.1:")).expect("rendered image line");
    assert!(
        image
            .contains("/examples/hello:latest@sha256:225dc631d03b87d2e6aec5092bca8d5a37486bffbd97af7e3cb9ec0424dee10d"),
        "{image}"
    );
    // The registry is gone: its port refuses connections.
    let port: u16 = image.split("127.0.0.1:").nth(1).unwrap().split('/').next().unwrap().parse().unwrap();
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the throwaway registry is still running on {port}"
    );
}
