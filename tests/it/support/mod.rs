//! Shared test harness: a real CNCF distribution registry (Debian's `docker-registry`) on
//! 127.0.0.1 on a free port, optionally with htpasswd auth and behind nginx with TLS and a
//! private CA; OCI test images; and helpers to run the `publish` binary and `skopeo`.
//! Servers are polled for readiness with a deadline and killed on drop.
#![allow(dead_code)]

pub mod aws;
pub mod docker;
pub mod dockerd;
pub mod docs;
pub mod fault_proxy;
pub mod github;
pub mod http;
pub mod http_faults;
pub mod image;
pub mod policy;
pub mod runpod;
pub mod sigstore;
pub mod spec_registry;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub const USER: &str = "ci-user";
pub const PASSWORD: &str = "pw-9f8e7d6c5b4a-secret";

pub fn require(tool: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/sbin", "/usr/local/bin"] {
        let p = Path::new(dir).join(tool);
        if p.exists() {
            return p;
        }
    }
    panic!("{tool} is not installed: run scripts/test, which installs what the tests need");
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// Polls `check` until it is true or the deadline passes.
pub fn wait_until(what: &str, deadline: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("{what} was not ready within {deadline:?}");
}

/// Sends a plain HTTP GET to 127.0.0.1:port and returns the status line, if any.
pub fn http_status(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n").ok()?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).ok()?;
    String::from_utf8_lossy(&buf[..n]).lines().next().map(str::to_string)
}

#[derive(Default, Clone)]
pub struct RegistryOptions {
    /// htpasswd auth with `USER`/`PASSWORD`.
    pub htpasswd: bool,
    /// Serve through nginx with TLS from a private CA.
    pub tls: bool,
    /// Use this `auth:` YAML block instead (token auth).
    pub auth_yaml: Option<String>,
}

pub struct Registry {
    pub dir: TempDir,
    /// `127.0.0.1:PORT` that clients use (nginx's when TLS is on).
    pub host: String,
    /// The registry's own port (plain HTTP).
    pub backend_port: u16,
    /// The CA certificate clients must trust, when TLS is on.
    pub ca: Option<PathBuf>,
    /// Whether clients need `USER`/`PASSWORD`.
    pub auth: bool,
    children: Vec<Child>,
}

impl Registry {
    pub fn start(opts: RegistryOptions) -> Registry {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let auth = if let Some(a) = &opts.auth_yaml {
            a.clone()
        } else if opts.htpasswd {
            let out = Command::new(require("htpasswd")).args(["-Bbn", USER, PASSWORD]).output().expect("htpasswd");
            assert!(out.status.success(), "htpasswd failed");
            std::fs::write(dir.path().join("htpasswd"), &out.stdout).unwrap();
            format!("auth:\n  htpasswd:\n    realm: test\n    path: {}\n", dir.path().join("htpasswd").display())
        } else {
            String::new()
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: test-http-secret\n{auth}",
            dir.path().join("data").display()
        );
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let child = spawn_registry(dir.path());
        let mut reg = Registry {
            host: format!("127.0.0.1:{port}"),
            backend_port: port,
            ca: None,
            auth: opts.htpasswd,
            children: vec![child],
            dir,
        };
        wait_until("docker-registry", Duration::from_secs(20), || http_status(port, "/v2/").is_some());
        if opts.tls {
            reg.start_nginx();
        }
        reg
    }

    fn start_nginx(&mut self) {
        let d = self.dir.path();
        let run = |args: &[&str]| run_ok("openssl", args, d);
        make_ca(d, "/CN=publish test CA");
        new_key_request(d, &["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"]);
        std::fs::write(
            d.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ]);
        let port = free_port();
        std::fs::create_dir_all(d.join("nginx")).unwrap();
        // The configuration `publish init --self-hosted` writes (src/selfhost.rs): TLS at
        // nginx, proxy to the registry, Host kept, bodies of any size streamed.
        let conf = publish_action::selfhost::nginx_conf(
            d,
            &format!("127.0.0.1:{port}"),
            self.backend_port,
            &d.join("server.pem"),
            &d.join("server.key"),
        );
        std::fs::write(d.join("nginx/nginx.conf"), conf).unwrap();
        let child = Command::new(require("nginx"))
            .args([
                "-c",
                &d.join("nginx/nginx.conf").display().to_string(),
                "-p",
                &d.join("nginx").display().to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        self.children.push(child);
        wait_until("nginx", Duration::from_secs(20), || TcpStream::connect(("127.0.0.1", port)).is_ok());
        self.host = format!("127.0.0.1:{port}");
        self.ca = Some(d.join("ca.pem"));
    }

    /// Stops the registry process and starts it again on the same port and storage, as a
    /// restart mid-push does; returns once it answers again.
    pub fn restart(&mut self) {
        let _ = self.children[0].kill();
        let _ = self.children[0].wait();
        let port = self.backend_port;
        wait_until("the registry to stop", Duration::from_secs(10), || http_status(port, "/v2/").is_none());
        self.children[0] = spawn_registry(self.dir.path());
        wait_until("docker-registry", Duration::from_secs(20), || http_status(port, "/v2/").is_some());
    }

    /// A directory for `skopeo --cert-dir` holding the CA as `ca.crt`.
    pub fn skopeo_cert_dir(&self) -> Option<PathBuf> {
        let ca = self.ca.as_ref()?;
        let dir = self.dir.path().join("skopeo-certs");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(ca, dir.join("ca.crt")).unwrap();
        Some(dir)
    }

    /// `skopeo inspect [--raw] docker://REFERENCE` against this registry; success not required.
    pub fn inspect(&self, reference: &str, raw: bool) -> Output {
        let mut args = vec!["inspect".to_string()];
        if raw {
            args.push("--raw".to_string());
        }
        args.extend(self.skopeo_flags(self.auth));
        args.push(format!("docker://{reference}"));
        Command::new(require("skopeo")).args(&args).output().expect("run skopeo")
    }

    /// skopeo's transport flags for this registry (TLS or not, credentials).
    pub fn skopeo_flags(&self, creds: bool) -> Vec<String> {
        let mut f = match self.skopeo_cert_dir() {
            Some(d) => vec![format!("--cert-dir={}", d.display())],
            None => vec!["--tls-verify=false".to_string()],
        };
        if creds {
            f.push(format!("--creds={USER}:{PASSWORD}"));
        }
        f
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        for c in &mut self.children {
            // SIGTERM first: nginx's master then stops its workers (SIGKILL would orphan them).
            // SAFETY: signals a child this harness started and has not reaped yet.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn spawn_registry(dir: &Path) -> Child {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("registry.log")).unwrap();
    Command::new(require("docker-registry"))
        .arg("serve")
        .arg(dir.join("config.yml"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start docker-registry")
}

/// A `Command` for the `publish` binary built for these tests, with a clean environment
/// (no Docker config of the developer's, no RUST_LOG) and fast retries.
pub fn publish(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_publish"));
    cmd.current_dir(dir)
        .env_remove("RUST_LOG")
        .env_remove("GITHUB_ACTIONS")
        .env("DOCKER_CONFIG", dir.join(".docker-config-none"))
        .env("PUBLISH_CACHE_DIR", dir.join(".publish-cache"))
        .env("PUBLISH_RETRY_BASE_MS", "10")
        .stdin(Stdio::null());
    // Only the AWS credentials a test sets: never the runner's, never a real AWS endpoint.
    for var in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_ROLE_ARN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_PROFILE",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_ECR_PUBLIC",
        "AWS_ENDPOINT_URL_STS",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("AWS_SHARED_CREDENTIALS_FILE", dir.join(".aws-credentials-none"))
        .env("AWS_CONFIG_FILE", dir.join(".aws-config-none"));
    cmd
}

/// Runs a command; its whole output is scanned for the shared test password, which may only
/// appear in the `::add-mask::` line that hides it in GitHub Actions.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("run command");
    for stream in [&out.stdout, &out.stderr] {
        let text = String::from_utf8_lossy(stream);
        let leaked = text.lines().any(|l| l.contains(PASSWORD) && !l.starts_with("::add-mask::"));
        assert!(!leaked, "the test password appeared in the output:\n{text}");
    }
    out
}

pub fn text(out: &Output) -> (String, String) {
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Makes a P-256 CA in `dir`: `ca.key` and `ca.pem`, for a day or two.
pub fn make_ca(dir: &Path, subject: &str) {
    let ca = ["-x509", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", subject];
    let extensions =
        ["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"];
    new_key_request(dir, &[&ca[..], &extensions[..]].concat());
}

/// `openssl req` with a new P-256 key, unencrypted, and `args`.
fn new_key_request(dir: &Path, args: &[&str]) {
    let key = ["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    run_ok("openssl", &[&key[..], args].concat(), dir);
}

/// Runs a tool (which must succeed) in `dir` and returns its stdout.
pub fn run_ok(tool: &str, args: &[&str], dir: &Path) -> Vec<u8> {
    let out = Command::new(require(tool)).args(args).current_dir(dir).output().expect("run tool");
    assert!(out.status.success(), "{tool} {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

pub fn skopeo(args: &[String]) -> Vec<u8> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_ok("skopeo", &args, Path::new("."))
}

/// README.md and docs/*.md, in a stable order: the documents whose examples tests execute.
pub fn doc_files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    files.sort();
    files.insert(0, root.join("README.md"));
    files
}

/// PUTs `body` as a manifest at `REPO:TAG` with curl (a client that checks nothing, for
/// manifests publish would refuse to write), with the test credentials when the registry
/// wants them.
pub fn curl_put_manifest(reg: &Registry, repo: &str, tag: &str, media_type: &str, body: &str) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sSf", "-X", "PUT"]);
    if reg.auth {
        cmd.args(["-u", &format!("{USER}:{PASSWORD}")]);
    }
    let out = cmd
        .args(["-H", &format!("Content-Type: {media_type}"), "--data-binary", body])
        .arg(format!("http://{}/v2/{repo}/manifests/{tag}", reg.host))
        .output()
        .unwrap();
    assert!(out.status.success(), "curl PUT {repo}:{tag}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Runs a `publish … -o json` command: its exit code, its stdout as JSON, its stderr.
pub fn run_json(cmd: &mut Command) -> (Option<i32>, serde_json::Value, String) {
    let out = run(cmd);
    let (stdout, stderr) = text(&out);
    let json = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {stdout}\nstderr: {stderr}"));
    (out.status.code(), json, stderr)
}

/// A blob's bytes from a plain-HTTP test registry (curl: a client nobody here wrote).
pub fn blob(reg: &Registry, repo: &str, digest: &str) -> Vec<u8> {
    let out =
        Command::new("curl").arg("-sSf").arg(format!("http://{}/v2/{repo}/blobs/{digest}", reg.host)).output().unwrap();
    assert!(out.status.success());
    out.stdout
}
