//! Every source kind pushed to a registry with htpasswd auth behind nginx with TLS from a
//! private CA, checked with skopeo byte for byte.

use crate::support;

use crate::support::image::{write_archive, write_layout};
use crate::support::{PASSWORD, Registry, RegistryOptions, USER, publish, run, text};
use sha2::{Digest as _, Sha256};

#[test]
fn every_source_kind_reaches_a_tls_registry_with_auth() {
    let tls = Registry::start(RegistryOptions { htpasswd: true, tls: true, ..Default::default() });
    let plain = Registry::start(RegistryOptions::default());
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    write_layout(&w.join("layout"), 100, &[40_000, 9_000], "linux", "amd64", "latest");
    write_archive(&w.join("layout"), &w.join("oci.tar"));
    support::docker::save_legacy(&w.join("docker.tar"), 101, &[30_000]);
    let daemon_socket = support::docker::fake_daemon(w, std::fs::read(w.join("docker.tar")).unwrap());
    let out =
        run(publish(w).args(["push", "oci:layout", &format!("docker://{}/ml/remote:v1", plain.host), "--insecure"]));
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));

    let ca = tls.ca.as_ref().unwrap().display().to_string();
    let sources = [
        ("oci", "oci:layout".to_string()),
        ("oci-archive", "oci-archive:oci.tar".to_string()),
        ("docker-archive", "docker-archive:docker.tar:app:v1".to_string()),
        ("docker-daemon", "docker-daemon:app:v1".to_string()),
        ("docker", format!("docker://{}/ml/remote:v1", plain.host)),
    ];
    for (kind, source) in sources {
        let out = run(publish(w)
            .args([
                "push",
                &source,
                &format!("docker://{}/ml/{kind}:v1", tls.host),
                "--ca-file",
                &ca,
                "--src-insecure",
                "-o",
                "json",
            ])
            .args(["--username", USER, "--password-env", "REG_PASSWORD"])
            .env("REG_PASSWORD", PASSWORD)
            .env("DOCKER_HOST", format!("unix://{}", daemon_socket.display())));
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(0), "{kind}: {stdout}\n{stderr}");
        let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        let raw = tls.inspect(&format!("{}/ml/{kind}:v1", tls.host), true).stdout;
        assert_eq!(
            format!("sha256:{}", hex::encode(Sha256::digest(&raw))),
            json["images"][0]["digest"].as_str().unwrap(),
            "{kind}"
        );
    }
}
