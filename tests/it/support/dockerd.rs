//! A real Docker daemon (Debian's `docker.io`) for the `docker-daemon:` tests: started as root
//! with the vfs storage driver and no networking, its socket, data root, exec root and pid file
//! under a temporary directory, so it touches nothing of the machine's own Docker; stopped
//! (SIGTERM, then SIGKILL after a deadline) when dropped, with the containerd it started.
//! Where it cannot start (not root, no `dockerd`), `start` says why and the test says so.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

pub struct Dockerd {
    dir: TempDir,
    child: Child,
    pub socket: PathBuf,
}

impl Dockerd {
    /// Starts a private daemon, or says why it cannot.
    pub fn start() -> Result<Dockerd, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("dockerd needs root here, and the tests do not run as root".into());
        }
        let Some(dockerd) = ["/usr/sbin/dockerd", "/usr/bin/dockerd"].into_iter().map(Path::new).find(|p| p.exists())
        else {
            return Err("dockerd is not installed (Debian's docker.io; scripts/test installs it)".into());
        };
        // Short paths: a unix socket's path is limited to 108 bytes.
        let dir = tempfile::Builder::new().prefix("dk").tempdir_in("/tmp").map_err(|e| e.to_string())?;
        let socket = dir.path().join("s");
        let log = std::fs::File::create(dir.path().join("log")).map_err(|e| e.to_string())?;
        let child = Command::new(dockerd)
            .args(["--storage-driver=vfs", "--iptables=false", "--ip-masq=false", "--bridge=none"])
            .arg("--data-root")
            .arg(dir.path().join("d"))
            .arg("--exec-root")
            .arg(dir.path().join("e"))
            .arg("--pidfile")
            .arg(dir.path().join("pid"))
            .arg("-H")
            .arg(format!("unix://{}", socket.display()))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start dockerd: {e}"))?;
        let mut daemon = Dockerd { dir, child, socket };
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = daemon.child.try_wait() {
                return Err(format!("dockerd exited ({status}): {}", daemon.log_tail()));
            }
            if daemon.ping() {
                return Ok(daemon);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!("dockerd did not answer within 60 s: {}", daemon.log_tail()))
    }

    /// `unix://SOCKET`, for `DOCKER_HOST`.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    fn ping(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = std::os::unix::net::UnixStream::connect(&self.socket) else { return false };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if s.write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n").is_err() {
            return false;
        }
        let mut answer = String::new();
        let _ = s.take(4096).read_to_string(&mut answer);
        answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200")
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default();
        log.lines().rev().take(5).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// `docker load -i ARCHIVE` into this daemon (the CLI found on the PATH).
    pub fn load(&self, archive: &Path) {
        let out = Command::new("docker")
            .args(["-H", &self.host(), "load", "-i"])
            .arg(archive)
            .output()
            .expect("the docker CLI (Debian's docker.io installs it)");
        assert!(out.status.success(), "docker load: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // SIGTERM: dockerd stops the containerd it started, then itself.
        // SAFETY: signals a child this harness started and has not reaped yet.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // vfs leaves read-only trees root can still remove; a mount left behind is unmounted.
        let _ = Command::new("umount").arg("-R").arg(self.dir.path().join("e")).stderr(Stdio::null()).status();
    }
}
