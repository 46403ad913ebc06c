#!/usr/bin/env python3
"""Side-by-side push benchmark: publish, crane and skopeo, alternating, a fresh registry per push.

Called by scripts/bench (which builds publish with the dist profile). Makes an OCI layout of random
layers, then for each of RUNS rounds and each transport (plain HTTP, TLS through nginx with a
private CA) starts a fresh CNCF distribution with htpasswd, pushes with each tool in turn
(the order rotates per round), checks the pushed digest with crane, and records wall time,
client CPU (user+sys), peak RSS and the registry's (and nginx's) CPU. Registries store on
tmpfs when it has room (BENCH_STORAGE=disk: on disk). Prints medians, ratios, and the ratios
within each round (median and range); then a no-op re-push of a
20-layer image (every blob present) and `publish plan` timing. Ratios, not absolute times,
are what compare across machines.

The docker section (BENCH_ONLY=docker; also by default) measures the path most users take,
`docker build` then `docker save` or `docker-daemon:`: a legacy `docker save` archive of real
files of this machine (BENCH_DOCKER_MIB, default 1600, uncompressed, four layers), pushed cold by
each tool (BENCH_DOCKER_RUNS rounds, default 3) with every local cache emptied; a rebuild (top
layer changed) onto the image that tool pushed; and, as root, from a private dockerd.
BENCH_PUBLISH: the publish binary (default target/dist/publish).

    scripts/bench [SIZE_MIB [LAYERS [RUNS]]]      (default 2048 8 3)
"""
import base64, glob, hashlib, json, math, os, shutil, socket, statistics, subprocess, sys, tempfile, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PUBLISH = os.environ.get("BENCH_PUBLISH") or os.path.join(ROOT, "target/dist/publish")
CRANE = os.environ.get("CRANE") or os.path.join(ROOT, "../shared/tools/crane")
USER, PASSWORD = "bench", "bench-pw-7c1e"


def want(section):
    """BENCH_ONLY=plain,tls,noop,slow,cut,docker runs only those sections (all when unset)."""
    only = os.environ.get("BENCH_ONLY") or None
    return only is None or section in only.split(",")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def finish_layout(out, descs, ref):
    """Writes the config, manifest, index.json and oci-layout for layer descriptors `descs`
    already in `out/blobs`; returns the manifest digest."""
    def put(data):
        d = hashlib.sha256(data).hexdigest()
        open(f"{out}/blobs/sha256/{d}", "wb").write(data)
        return "sha256:" + d, len(data)

    cfg = json.dumps({"architecture": "amd64", "os": "linux",
                      "rootfs": {"type": "layers", "diff_ids": [l["digest"] for l in descs]}}).encode()
    cd, cn = put(cfg)
    m = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cn},
                    "layers": descs}).encode()
    md, mn = put(m)
    json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
               "digest": md, "size": mn, "annotations": {"org.opencontainers.image.ref.name": ref}}]},
              open(f"{out}/index.json", "w"))
    open(f"{out}/oci-layout", "w").write('{"imageLayoutVersion":"1.0.0"}')
    return md


def layout(out, size_mib, layers, ref="latest"):
    os.makedirs(f"{out}/blobs/sha256")
    descs = []
    per = size_mib * 1024 * 1024 // layers
    for i in range(layers):
        tmp = f"{out}/layer{i}"
        h = hashlib.sha256()
        with open(tmp, "wb") as f:
            left = per
            while left:
                chunk = os.urandom(min(left, 1 << 20))
                f.write(chunk)
                h.update(chunk)
                left -= len(chunk)
        d = h.hexdigest()
        os.rename(tmp, f"{out}/blobs/sha256/{d}")
        descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": "sha256:" + d, "size": per})
    return finish_layout(out, descs, ref)


def drop_caches():
    """Empties the page cache (root only), so that each push of a big image starts from the
    same memory state rather than reclaiming what the previous tool left. Says whether it did."""
    try:
        subprocess.run(["sync"], check=True)
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("1\n")
        return True
    except OSError:
        return False


def sparse_layout(out, gib, layers):
    """Layers of zeros as sparse files (distinct sizes, so distinct digests): a big image that
    costs no disk in the layout, for the memory measurement."""
    os.makedirs(f"{out}/blobs/sha256")
    per = gib * 1024 ** 3 // layers
    zeros = bytes(1 << 20)
    descs = []
    for i in range(layers):
        size = per + i
        h = hashlib.sha256()
        left = size
        while left:
            n = min(left, len(zeros))
            h.update(zeros[:n])
            left -= n
        d = h.hexdigest()
        with open(f"{out}/blobs/sha256/{d}", "wb") as f:
            f.truncate(size)
        descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": "sha256:" + d, "size": size})
    return finish_layout(out, descs, "latest")


class Registry:
    """A fresh distribution (htpasswd) on a free loopback port; with tls, nginx in front."""

    def __init__(self, work, tls):
        self.dir = tempfile.mkdtemp(dir=work)
        self.procs = []
        subprocess.run(["htpasswd", "-Bbc", f"{self.dir}/htpasswd", USER, PASSWORD], check=True, capture_output=True)
        backend = free_port()
        open(f"{self.dir}/config.yml", "w").write(
            f"version: 0.1\nlog: {{level: error, accesslog: {{disabled: true}}}}\n"
            f"storage: {{filesystem: {{rootdirectory: {self.dir}/data}}, delete: {{enabled: true}}}}\n"
            f"http: {{addr: 127.0.0.1:{backend}, secret: bench}}\n"
            f"auth: {{htpasswd: {{realm: bench, path: {self.dir}/htpasswd}}}}\n")
        self.procs.append(subprocess.Popen(["docker-registry", "serve", f"{self.dir}/config.yml"],
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        self.wait(f"http://127.0.0.1:{backend}/v2/")
        self.port = backend
        if tls:
            self.port = free_port()
            d = self.dir
            run = lambda *a: subprocess.run(a, check=True, capture_output=True, cwd=d)
            run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=bench ca",
                "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign")
            run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
            open(f"{d}/ext.cnf", "w").write("subjectAltName=IP:127.0.0.1\n")
            run("openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "2", "-extfile", "ext.cnf", "-out", "server.pem")
            os.makedirs(f"{d}/certs.d")
            shutil.copy(f"{d}/ca.pem", f"{d}/certs.d/ca.crt")
            open(f"{d}/nginx.conf", "w").write(f"""
daemon off; worker_processes 1; pid {d}/nginx.pid; error_log {d}/nginx.err;
events {{ worker_connections 256; }}
http {{
  access_log off; client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/f; uwsgi_temp_path {d}/u; scgi_temp_path {d}/s;
  server {{
    listen 127.0.0.1:{self.port} ssl http2;
    ssl_certificate {d}/server.pem; ssl_certificate_key {d}/server.key;
    client_max_body_size 0; chunked_transfer_encoding on;
    proxy_request_buffering off; proxy_buffering off; proxy_read_timeout 900; proxy_send_timeout 900;
    location /v2/ {{
      proxy_pass http://127.0.0.1:{backend}; proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-Proto https; proxy_http_version 1.1;
    }}
  }}
}}
""")
            self.procs.append(subprocess.Popen(["nginx", "-c", f"{d}/nginx.conf"],
                                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            self.wait(f"https://127.0.0.1:{self.port}/v2/", ca=f"{d}/ca.pem")
        self.tls = tls
        self.host = f"127.0.0.1:{self.port}"
        self.docker_config = f"{self.dir}/docker"
        os.makedirs(self.docker_config)
        auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        json.dump({"auths": {self.host: {"auth": auth}}}, open(f"{self.docker_config}/config.json", "w"))

    def wait(self, url, ca=None):
        import ssl
        ctx = ssl.create_default_context(cafile=ca) if ca else None
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                urllib.request.urlopen(url, timeout=1, context=ctx)
                return
            except urllib.error.HTTPError:
                return  # 401: up
            except Exception:
                time.sleep(0.05)
        raise SystemExit(f"{url} did not come up")

    def stop(self):
        for p in reversed(self.procs):
            p.terminate()
            p.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class Proxy:
    """A TCP proxy in a thread of its own (asyncio) in front of a registry.

    slow: adds `delay` seconds each way (40 ms round trip) and caps each direction at `rate`
    bytes a second, shared by all connections (kernel netem is not available here).
    cut_at: closes the first connection that has carried that many bytes towards the registry,
    once. `up` counts every byte sent towards the registry (what a cut makes a client resend)."""

    def __init__(self, target_port, slow=False, delay=0.020, rate=400e6 / 8, cut_at=None):
        import asyncio, threading
        self.port = free_port()
        self.up = 0
        self.cut_done = False
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        next_free = {"up": 0.0, "down": 0.0}

        async def pipe(reader, writer, direction, conn):
            queue = asyncio.Queue()

            async def deliver():
                while True:
                    item = await queue.get()
                    if item is None:
                        break
                    at, data = item
                    wait = at - self.loop.time()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    writer.write(data)
                    await writer.drain()
                writer.close()

            task = asyncio.create_task(deliver())
            try:
                while True:
                    data = await reader.read(256 * 1024)
                    if not data:
                        break
                    if direction == "up":
                        self.up += len(data)
                        conn["up"] += len(data)
                        if cut_at and not self.cut_done and conn["up"] >= cut_at:
                            self.cut_done = True
                            conn["cut"] = True
                            break
                    at = self.loop.time()
                    if slow:
                        slot = max(at, next_free[direction])
                        next_free[direction] = slot + len(data) / rate
                        at = next_free[direction] + delay
                    if slow:
                        await queue.put((at, data))
                        while queue.qsize() > 64:
                            await asyncio.sleep(0.001)
                    else:
                        writer.write(data)
                        await writer.drain()
            except (ConnectionError, OSError):
                pass
            await queue.put(None)
            await task
            if conn.get("cut"):
                for w in conn["writers"]:
                    w.transport.abort()

        async def handle(creader, cwriter):
            try:
                sreader, swriter = await asyncio.open_connection("127.0.0.1", target_port)
            except OSError:
                cwriter.close()
                return
            conn = {"up": 0, "writers": [cwriter, swriter]}
            await asyncio.gather(pipe(creader, swriter, "up", conn), pipe(sreader, cwriter, "down", conn),
                                 return_exceptions=True)

        def run():
            asyncio.set_event_loop(self.loop)
            server = self.loop.run_until_complete(asyncio.start_server(handle, "127.0.0.1", self.port))
            ready.set()
            self.loop.run_forever()
            server.close()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        ready.wait()

    def stop(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


def timed(cmd, env, allow_fail=False):
    out = tempfile.NamedTemporaryFile(delete=False)
    r = subprocess.run(["/usr/bin/time", "-f", "%e %U %S %M", "-o", out.name] + cmd, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if r.returncode and not allow_fail:
        raise SystemExit(f"{' '.join(cmd)} failed: {r.stderr.decode()[-2000:]}")
    wall, user, sys_, rss = open(out.name).read().split()[-4:]
    os.unlink(out.name)
    return {"wall": float(wall), "cpu": float(user) + float(sys_), "rss": int(rss) / 1024, "ok": r.returncode == 0}


def interval(ratios, digits):
    """The distribution-free 95 % confidence interval of the median of `ratios` (sorted): the
    k-th smallest and k-th largest, with k the largest rank whose binomial coverage is still at
    least 95 %. Shown when there are rounds enough (six or more); a ratio whose interval holds
    1.00 is a tie this many rounds cannot break."""
    n = len(ratios)
    below = lambda k: sum(math.comb(n, i) for i in range(k)) / 2**n  # P(Binomial(n, 1/2) < k)
    k = max((k for k in range(1, n // 2 + 1) if 1 - 2 * below(k) >= 0.95), default=0)
    if not k:
        return ""
    return f", 95 % interval of the median {ratios[k - 1]:.{digits}f}-{ratios[n - k]:.{digits}f}x"


def spread(ratios, digits=2):
    """Per-round ratios (sorted) as text: median, range, and the median's interval."""
    return (f"median {statistics.median(ratios):.{digits}f}x, "
            f"range {ratios[0]:.{digits}f}-{ratios[-1]:.{digits}f}x{interval(ratios, digits)}")


def plan_ms(policy):
    """`publish plan` wall time in ms, median of 5, timed here (/usr/bin/time counts in 10 ms)."""
    walls = []
    for _ in range(5):
        start = time.perf_counter()
        subprocess.run([PUBLISH, "plan", "--no-measure", "--policy", policy], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        walls.append((time.perf_counter() - start) * 1000)
    return statistics.median(walls)


def push(tool, reg, img, repo, host=None, allow_fail=False):
    env = dict(os.environ, DOCKER_CONFIG=reg.docker_config)
    host = host or reg.host
    if host != reg.host:
        auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        json.dump({"auths": {host: {"auth": auth}, reg.host: {"auth": auth}}}, open(f"{reg.docker_config}/config.json", "w"))
    ref = f"{host}/bench/{repo}:v1"
    if tool.startswith("publish"):
        cmd = [PUBLISH, "push", f"oci:{img}", f"docker://{ref}"]
        if tool == "publish-chunked":
            cmd += ["--chunk-size", "64MiB"]
        cmd += ["--ca-file", f"{reg.dir}/ca.pem"] if reg.tls else ["--insecure"]
    elif tool == "crane":
        cmd = [CRANE, "push", img, ref]
        if reg.tls:
            env["SSL_CERT_FILE"] = f"{reg.dir}/ca.pem"
        else:
            cmd.append("--insecure")
    else:
        cmd = ["skopeo", "copy", "--insecure-policy", "--preserve-digests", "--dest-authfile",
               f"{reg.docker_config}/config.json", f"oci:{img}:latest", f"docker://{ref}"]
        cmd += ["--dest-cert-dir", f"{reg.dir}/certs.d"] if reg.tls else ["--dest-tls-verify=false"]
    m = timed(cmd, env, allow_fail)
    ref = f"{reg.host}/bench/{repo}:v1"
    check = [CRANE, "digest", ref] + ([] if reg.tls else ["--insecure"])
    cenv = dict(env, SSL_CERT_FILE=f"{reg.dir}/ca.pem") if reg.tls else env
    got = subprocess.run(check, env=cenv, capture_output=True, text=True).stdout.strip()
    return m, got


def cpu_seconds(pid):
    """user+system CPU a live process has used so far."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def push_fresh(work, tool, image, expected, tls=False, proxy=None, allow_fail=False):
    """Pushes `image` with `tool` to a fresh registry — through `proxy(port)` when given — and
    checks the digest it left (unless `allow_fail`). Returns the measurement (with `server`:
    the CPU the registry and nginx spent on the push), the digest left and the bytes the proxy
    carried towards the registry."""
    reg = Registry(work, tls)
    p = proxy(reg.port) if proxy else None
    try:
        before = sum(cpu_seconds(q.pid) for q in reg.procs)
        m, got = push(tool, reg, image, tool, host=f"127.0.0.1:{p.port}" if p else None, allow_fail=allow_fail)
        m["server"] = sum(cpu_seconds(q.pid) for q in reg.procs) - before
    finally:
        if p:
            p.stop()
        reg.stop()
    if got != expected and not allow_fail:
        raise SystemExit(f"{tool} left {got!r}, not {expected}")
    return m, got, p.up if p else 0


# --- The docker section: `docker build` then `docker save` / `docker-daemon:`, the path most users take.

DOCKER_MTIME = 1704067200  # 2024-01-01: every entry's mtime, so the archives are the same bytes each time
DOCKER_REF = "bench/app:v1"
DOCKER_LAYERS = (  # (what, trees): each capped at a third of BENCH_DOCKER_MIB, filled in this order
    ("shared libraries", ["/usr/lib/x86_64-linux-gnu"]),
    ("toolchain binaries", sorted(glob.glob("/usr/lib/llvm-*")) + ["/usr/lib/gcc", "/root/.rustup/toolchains"]),
    ("/usr/share", ["/usr/share"]),
)
SKOPEO_CACHES = ("/var/lib/containers/cache/blob-info-cache-v1.boltdb", "/var/lib/containers/cache/blob-info-cache-v1.sqlite",
                 os.path.expanduser("~/.local/share/containers/cache/blob-info-cache-v1.boltdb"),
                 os.path.expanduser("~/.local/share/containers/cache/blob-info-cache-v1.sqlite"))


def tree_entries(roots, cap):
    """{arcname: path} of files under `roots`, walked in sorted order, each taken while the layer
    tar (headers and padding counted) stays within `cap` bytes, with the directories that lead to
    them; symbolic links stay links (nothing dereferenced), a hard-linked file's bytes count once,
    sockets, devices and FIFOs are skipped. Also returns the tar's estimated size."""
    import stat
    entries, inodes, total = {}, set(), 0

    def missing_parents(arc):
        parts = arc.split("/")
        return [a for a in ("/".join(parts[:i]) for i in range(1, len(parts))) if a not in entries]

    for root in roots:
        if not os.path.isdir(root) or os.path.islink(root):
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            if cap - total < 2048:
                return entries, total
            dirnames.sort()
            # os.walk lists links to directories among the directories and does not follow them.
            names = sorted(filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))])
            for name in names:
                path = os.path.join(dirpath, name)
                arc = path.lstrip("/")
                try:
                    st = os.lstat(path)
                except OSError:
                    continue
                cost, inode = 512 + (1024 if len(arc.encode()) > 99 else 0), None
                if stat.S_ISREG(st.st_mode):
                    if (st.st_dev, st.st_ino) not in inodes:
                        inode = (st.st_dev, st.st_ino)
                        cost += -(-st.st_size // 512) * 512
                elif not stat.S_ISLNK(st.st_mode):
                    continue
                parents = missing_parents(arc)
                if total + cost + 512 * len(parents) > cap:
                    continue
                if inode:
                    inodes.add(inode)
                for a in parents:
                    entries[a] = "/" + a
                entries[arc] = path
                total += cost + 512 * len(parents)
    return entries, total


class _HashingWriter:
    def __init__(self, f):
        self.f, self.h, self.n = f, hashlib.sha256(), 0

    def write(self, data):
        self.h.update(data)
        self.n += len(data)
        return self.f.write(data)


def write_layer(path, entries):
    """An uncompressed layer tar at `path` from {arcname: path on this machine, or bytes, or None
    for a directory}, in sorted order, owned by root, every mtime DOCKER_MTIME. Returns its
    sha256 (the diff_id) and size."""
    import io, tarfile
    with open(path, "wb") as raw:
        w = _HashingWriter(raw)
        with tarfile.open(fileobj=w, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            for arc in sorted(entries):
                src = entries[arc]
                if not isinstance(src, str):
                    ti = tarfile.TarInfo(arc)
                    ti.type, ti.mode = (tarfile.DIRTYPE, 0o755) if src is None else (tarfile.REGTYPE, 0o755)
                    ti.size = 0 if src is None else len(src)
                    ti.mtime = DOCKER_MTIME
                    tar.addfile(ti, None if src is None else io.BytesIO(src))
                    continue
                try:
                    ti = tar.gettarinfo(src, arc)
                except OSError:
                    continue
                if ti is None:  # a socket
                    continue
                ti.mtime, ti.uid, ti.gid, ti.uname, ti.gname = DOCKER_MTIME, 0, 0, "", ""
                if ti.isreg():
                    with open(src, "rb") as f:
                        tar.addfile(ti, f)
                else:
                    tar.addfile(ti)
    return "sha256:" + w.h.hexdigest(), w.n


def top_layer_files(build):
    """The small top layer (~256 KiB): an app binary made of the first 232 KiB of a real binary of
    this machine (the first in /usr/bin, sorted, of at least 256 KiB) and 16 KiB that depend on
    `build`, its BUILD file and a config file. Builds 1 and 2 differ only in those bytes."""
    real = next((f"/usr/bin/{n}" for n in sorted(os.listdir("/usr/bin"))
                 if not os.path.islink(f"/usr/bin/{n}") and os.path.isfile(f"/usr/bin/{n}")
                 and os.path.getsize(f"/usr/bin/{n}") >= 256 * 1024), None)
    head = open(real, "rb").read(232 * 1024) if real else b""
    stamp = b"".join(hashlib.sha256(f"build {build} block {i}".encode()).digest() for i in range(512))
    conf = "".join(f"option_{i} = {i * 7 % 13}\n" for i in range(400)).encode()
    return {"app": None, "app/bin": None, "app/etc": None, "app/bin/app": head + stamp,
            "app/BUILD": f"bench/app build {build}\n".encode(), "app/etc/app.conf": conf}


def write_docker_save(out, layers):
    """A legacy `docker save` archive at `out` (Docker before 25): per layer `<id>/VERSION`,
    `<id>/json`, `<id>/layer.tar` (uncompressed), the config `<sha256>.json` whose diff_ids are
    the layers' sha256, `manifest.json` and `repositories`, tagged DOCKER_REF.
    `layers`: [(file, diff_id, created_by)]. Returns the config's digest."""
    import io, tarfile
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(DOCKER_MTIME))
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "created": created,
                      "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                                 "Cmd": ["/app/bin/app"], "WorkingDir": "/app"},
                      "history": [{"created": created, "created_by": by} for _, _, by in layers],
                      "rootfs": {"type": "layers", "diff_ids": [d for _, d, _ in layers]}},
                     separators=(",", ":")).encode()
    cfg_hex = hashlib.sha256(cfg).hexdigest()
    files, parent, ids = {}, "", []
    for i, (path, diff_id, _) in enumerate(layers):
        lid = hashlib.sha256(f"{parent}\n{diff_id}".encode()).hexdigest()
        v1 = {"id": lid, "created": created, "container_config": {"Cmd": None}}
        if parent:
            v1["parent"] = parent
        if i == len(layers) - 1:
            v1.update(architecture="amd64", os="linux", config={"Cmd": ["/app/bin/app"]})
        files[f"{lid}/VERSION"] = b"1.0"
        files[f"{lid}/json"] = json.dumps(v1, separators=(",", ":")).encode()
        files[f"{lid}/layer.tar"] = path
        ids.append(lid)
        parent = lid
    files[f"{cfg_hex}.json"] = cfg
    repo, tag = DOCKER_REF.rsplit(":", 1)
    files["manifest.json"] = json.dumps([{"Config": f"{cfg_hex}.json", "RepoTags": [DOCKER_REF],
                                          "Layers": [f"{i}/layer.tar" for i in ids]}], separators=(",", ":")).encode()
    files["repositories"] = json.dumps({repo: {tag: ids[-1]}}, separators=(",", ":")).encode()
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(set(files) | {f"{i}" for i in ids}):
            ti = tarfile.TarInfo(name)
            ti.mtime, ti.mode = DOCKER_MTIME, 0o644
            src = files.get(name)
            if src is None:
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(ti)
            elif isinstance(src, bytes):
                ti.size = len(src)
                tar.addfile(ti, io.BytesIO(src))
            else:
                ti.size = os.path.getsize(src)
                with open(src, "rb") as f:
                    tar.addfile(ti, f)
    return "sha256:" + cfg_hex


def docker_archives(work, mib):
    """The v1 archive and its rebuild (the top layer's bytes changed), from real files. Returns
    (v1, rebuild, v1 config digest, rebuild config digest, [(what, MiB)] per layer)."""
    share = (mib * 2**20 - 256 * 1024) // len(DOCKER_LAYERS)
    layers, sizes = [], []
    for i, (what, roots) in enumerate(DOCKER_LAYERS):
        entries, _ = tree_entries(roots, share)
        path = f"{work}/layer{i}.tar"
        diff_id, n = write_layer(path, entries)
        used = [r for r in roots if any(a == r.lstrip("/") or a.startswith(r.lstrip("/") + "/") for a in entries)]
        layers.append((path, diff_id, f"COPY {' '.join(used) or '(nothing)'} /"))
        sizes.append((f"{what} ({', '.join(used) or 'none found'})", n / 2**20))
    out = []
    for build in (1, 2):
        path = f"{work}/top{build}.tar"
        diff_id, n = write_layer(path, top_layer_files(build))
        archive = f"{work}/{'app' if build == 1 else 'rebuild'}.tar"
        cfg = write_docker_save(archive, layers + [(path, diff_id, "COPY app /app")])
        out.append((archive, cfg))
        if build == 1:
            sizes.append(("top layer (app/, 256 KiB)", n / 2**20))
    for path, _, _ in layers:
        os.unlink(path)
    for build in (1, 2):
        os.unlink(f"{work}/top{build}.tar")
    return out[0][0], out[1][0], out[0][1], out[1][1], sizes


def dir_bytes(path):
    """Bytes allocated on disk under `path` (like du), 0 for what vanishes while it is walked."""
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in filenames + dirnames:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
            except OSError:
                pass
    return total


def file_bytes(path):
    """Apparent size of the files under `path`."""
    total = 0
    for dirpath, _, filenames in os.walk(path):
        for name in filenames:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


def measured(cmd, env, scratch):
    """Runs `cmd`, returning wall and CPU (user+sys) from wait4, peak RSS from GNU time, `written`: the bytes the
    client (its threads and children) caused to be written to block storage (wait4's ru_oublock,
    the kernel's write_bytes at exit, exact; tmpfs writes are not counted), `scratch`: the peak
    size of the directory `scratch` (TMPDIR and the tools' caches), sampled every 100 ms, and
    `kept`: its size once the client has exited."""
    import threading
    err = tempfile.TemporaryFile()
    peak = [0]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], dir_bytes(scratch))
            done.wait(0.1)

    # Peak RSS from GNU time, not wait4: a child forked from this Python process carries its
    # resident size into ru_maxrss across exec, so wait4 reports at least this script's own.
    rss_file = tempfile.NamedTemporaryFile(delete=False)
    start = time.perf_counter()
    p = subprocess.Popen(["/usr/bin/time", "-f", "%M", "-o", rss_file.name] + cmd, env=env,
                         stdout=subprocess.DEVNULL, stderr=err)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - start
    done.set()
    sampler.join()
    p.returncode = os.waitstatus_to_exitcode(status)
    kept = dir_bytes(scratch)
    if p.returncode:
        err.seek(0)
        raise SystemExit(f"{' '.join(cmd)} failed: {err.read().decode(errors='replace')[-2000:]}")
    rss_kib = int(open(rss_file.name).read().split()[-1])
    os.unlink(rss_file.name)
    return {"wall": wall, "cpu": ru.ru_utime + ru.ru_stime, "rss": rss_kib / 1024,
            "written": ru.ru_oublock * 512 / 2**20, "scratch": max(peak[0], kept) / 2**20, "kept": kept / 2**20}


def empty_caches():
    """Before each push: skopeo's blob-info cache removed (publish's cache and every TMPDIR are
    a fresh directory per push; crane keeps no cache), dirty pages written back."""
    for path in SKOPEO_CACHES:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    os.sync()


def docker_cmd(tool, source, host, authfile, tmpdir, daemon_host=None):
    """The push command; `source` is an archive path or, with `daemon_host`, an image name."""
    ref = f"{host}/{DOCKER_REF}"
    src = f"docker-daemon:{source}" if daemon_host else f"docker-archive:{source}"
    if tool == "publish":
        return [PUBLISH, "push", src, f"docker://{ref}", "--insecure"]
    if tool == "crane":
        return [CRANE, "push", source, ref, "--insecure"]
    # skopeo 1.9 ignores DOCKER_HOST for docker-daemon: (it goes to /var/run/docker.sock), and
    # TMPDIR for its big temporary files (/var/tmp): the flags.
    return (["skopeo", "--tmpdir", tmpdir, "copy", "--insecure-policy", "--dest-authfile", authfile, "--dest-tls-verify=false"]
            + (["--src-daemon-host", daemon_host] if daemon_host else []) + [src, f"docker://{ref}"])


def docker_push(tool, reg, work, source, config, daemon=None):
    """Pushes with every local cache emptied, to `reg` (its current content stays); checks that
    the registry holds the image with config `config` and returns the measurement, with `stored`:
    the bytes in the registry's blob store after the push (MB) and `daemon`: the daemon's CPU."""
    scratch = tempfile.mkdtemp(dir=work, prefix="scratch")
    try:
        for d in ("tmp", "cache"):
            os.makedirs(f"{scratch}/{d}")
        env = dict(os.environ, DOCKER_CONFIG=reg.docker_config, TMPDIR=f"{scratch}/tmp",
                   PUBLISH_CACHE_DIR=f"{scratch}/cache")
        if daemon:
            env["DOCKER_HOST"] = daemon.host
        empty_caches()
        before = cpu_seconds(daemon.proc.pid) if daemon else 0
        m = measured(docker_cmd(tool, source, reg.host, f"{reg.docker_config}/config.json",
                                f"{scratch}/tmp", daemon.host if daemon else None), env, scratch)
        m["daemon"] = cpu_seconds(daemon.proc.pid) - before if daemon else 0
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    got = subprocess.run([CRANE, "manifest", f"{reg.host}/{DOCKER_REF}", "--insecure"],
                         env=dict(os.environ, DOCKER_CONFIG=reg.docker_config), capture_output=True, text=True)
    try:
        manifest = json.loads(got.stdout)
        ok = manifest["config"]["digest"] == config and len(manifest["layers"]) == len(DOCKER_LAYERS) + 1
        kinds = sorted({l["mediaType"].rsplit(".", 1)[-1] for l in manifest["layers"]})
        m["layers"] = "+".join("none" if k == "tar" else k for k in kinds)
    except (ValueError, KeyError, TypeError, AttributeError):
        ok = False
    if not ok:
        raise SystemExit(f"{tool} did not leave the image with config {config}: {got.stdout[:500]} {got.stderr[-500:]}")
    m["stored"] = file_bytes(f"{reg.dir}/data/docker/registry/v2/blobs") / 1e6
    return m


class Dockerd:
    """A private Docker daemon (vfs, no networking, everything under a short directory in /tmp),
    as tests/it/support/dockerd.rs starts it. `why` says why it did not start (then no daemon)."""

    def __init__(self):
        self.proc, self.why = None, None

    def start(self):
        """Starts it and waits for /_ping (60 s at most); False, with `why`, when it cannot."""
        dockerd = "/usr/sbin/dockerd"
        if os.geteuid() != 0:
            self.why = "not root"
            return False
        if not os.path.exists(dockerd):
            self.why = f"{dockerd} is not installed (Debian's docker.io)"
            return False
        if not shutil.which("docker"):
            self.why = "no docker CLI on the PATH"
            return False
        self.dir = tempfile.mkdtemp(prefix="dk", dir="/tmp")  # a unix socket's path: 108 bytes at most
        self.host = f"unix://{self.dir}/s"
        d = self.dir
        self.log = open(f"{d}/log", "wb")
        try:
            self.proc = subprocess.Popen([dockerd, "--storage-driver=vfs", "--iptables=false", "--ip-masq=false",
                                          "--bridge=none", "--data-root", f"{d}/d", "--exec-root", f"{d}/e",
                                          "--pidfile", f"{d}/pid", "-H", self.host],
                                         stdout=subprocess.DEVNULL, stderr=self.log)
        except OSError as e:
            self.why = f"cannot start {dockerd}: {e}"
            self.log.close()
            shutil.rmtree(d, ignore_errors=True)
            return False
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                self.why = f"dockerd exited ({self.proc.returncode}): {self.log_tail()}"
                break
            if self.ping():
                return True
            time.sleep(0.05)
        else:
            self.why = f"dockerd did not answer /_ping within 60 s: {self.log_tail()}"
        self.stop()
        return False

    def ping(self):
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(2)
        try:
            s.connect(f"{self.dir}/s")
            s.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return s.recv(64).split(b" ")[1:2] == [b"200"]
        except OSError:
            return False
        finally:
            s.close()

    def log_tail(self):
        return " | ".join(open(f"{self.dir}/log", errors="replace").read().splitlines()[-3:])

    def stop(self):
        """SIGTERM (dockerd stops the containerd it started), a deadline, then SIGKILL for both."""
        if self.proc is None:
            return
        import signal
        containerd = None
        try:
            containerd = int(open(f"{self.dir}/e/containerd/containerd.pid").read())
        except (OSError, ValueError):
            pass
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
                if containerd:
                    try:
                        os.kill(containerd, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        self.proc = None
        self.log.close()
        subprocess.run(["umount", "-R", f"{self.dir}/e"], stderr=subprocess.DEVNULL)
        shutil.rmtree(self.dir, ignore_errors=True)


def docker_table(title, tools, results, size_mb, keys):
    """Medians per tool, then publish's ratios to each other tool (and per round, with rounds)."""
    print(title)
    med = {t: {k: statistics.median(x[k] for x in results[t]) for k, v in results[t][0].items()
               if not isinstance(v, str)} for t in tools}
    for t in tools:
        m = med[t]
        line = f"  {t:<8} layers {'/'.join(sorted({x['layers'] for x in results[t]})):<5} wall {m['wall']:6.2f} s"
        if size_mb:
            line += f"  {size_mb / m['wall']:6.1f} MB/s"
        line += f"  cpu {m['cpu']:6.2f} s  rss {m['rss']:6.1f} MiB"
        if "daemon" in keys:
            line += f"  daemon cpu {m['daemon']:5.2f} s"
        if "stored" in keys:
            line += f"  stored {m['stored']:7.1f} MB"
        if "new" in keys:
            line += f"  new {m['new']:7.2f} MB"
        line += f"  scratch {m['scratch']:6.1f} MiB (kept {m['kept']:6.1f})  written {m['written']:6.1f} MiB"
        print(line)
    kinds = {t: {x["layers"] for x in results[t]} for t in tools}
    if len({frozenset(k) for k in kinds.values()}) > 1:
        print("  NOTE: the tools left layers compressed differently ("
              + ", ".join(f"{t}: {'/'.join(sorted(k))}" for t, k in kinds.items())
              + "): wall, cpu and stored compare different work")
    for t in tools[1:]:
        ratio = lambda k: f"{med['publish'][k] / med[t][k]:.2f}x" if med[t][k] else "-"
        line = f"  publish/{t}: wall {ratio('wall')}  cpu {ratio('cpu')}  rss {ratio('rss')}"
        for k in ("stored", "new"):
            if k in keys:
                line += f"  {k} {ratio(k)}"
        print(line)
        if len(results[t]) > 1:
            ratios = sorted(a["wall"] / b["wall"] for a, b in zip(results["publish"], results[t]))
            print(f"    wall per round: {spread(ratios)}")


def docker_section(work, store):
    mib = int(os.environ.get("BENCH_DOCKER_MIB", "1600"))
    runs = max(1, int(os.environ.get("BENCH_DOCKER_RUNS", "3")))
    tools = ["publish"] + (["skopeo"] if shutil.which("skopeo") else []) + ["crane"]
    # ../shared/tools/crane unpacks the real binary into ~/.cache on first use: not in a push.
    subprocess.run([CRANE, "version"], check=True, capture_output=True)
    start = time.perf_counter()
    v1, rebuild, cfg1, cfg2, sizes = docker_archives(work, mib)
    size_mb = os.path.getsize(v1) / 1e6
    print(f"\ndocker: a legacy `docker save` archive (Docker < 25: manifest.json, <config>.json, "
          f"uncompressed <id>/layer.tar) of real files, {size_mb:.1f} MB, built in {time.perf_counter() - start:.1f} s:")
    for what, n in sizes:
        print(f"  layer {what}: {n:.1f} MiB")
    print(f"  rebuild: the same but the top layer's bytes (so the config differs in the last diff_id only)\n"
          f"  {runs} alternating runs, a fresh distribution per push (storage on "
          f"{'tmpfs' if store.startswith('/dev/shm') else 'disk'}), every local cache emptied before each push:\n"
          f"  publish's (PUBLISH_CACHE_DIR and TMPDIR in a fresh directory on disk), skopeo's blob-info cache\n"
          f"  ({SKOPEO_CACHES[0]} removed; its --tmpdir in the fresh directory), crane's (it keeps none;\n"
          f"  its wrapper's unpacked binary, ~/.cache/reference-tools, is unpacked before); dirty pages synced; the archive\n"
          f"  stays in the page cache, as just after `docker save`. Each push checked (config digest, layer count).\n"
          f"  wall/cpu: the client (wait4); rss: its peak (GNU time); stored: bytes in the registry's blob store; scratch: peak of\n"
          f"  the fresh directory sampled every 100 ms (kept: left at exit); written: what the client wrote to\n"
          f"  disk anywhere (the kernel's write_bytes at exit, via wait4's ru_oublock)")
    print("  commands (HOST a fresh registry, SCRATCH a fresh directory; env DOCKER_CONFIG=<the registry's "
          "credentials>\n  TMPDIR=SCRATCH/tmp PUBLISH_CACHE_DIR=SCRATCH/cache; daemon: DOCKER_HOST=unix://D/s too):")
    for t in tools:
        print(f"    {' '.join(docker_cmd(t, 'ARCHIVE', 'HOST', 'AUTHFILE', 'SCRATCH/tmp'))}")
    for t in tools[:-1]:
        print(f"    {' '.join(docker_cmd(t, DOCKER_REF, 'HOST', 'AUTHFILE', 'SCRATCH/tmp', 'unix://D/s'))}")

    results = {t: [] for t in tools}
    for r in range(runs):
        for t in tools[r % len(tools):] + tools[:r % len(tools)]:
            reg = Registry(store, False)
            try:
                results[t].append(docker_push(t, reg, work, v1, cfg1))
            finally:
                reg.stop()
    docker_table(f"\ndocker-archive, cold push (medians of {runs})", tools, results, size_mb,
                 ("stored",))

    results = {t: [] for t in tools}
    for r in range(runs):
        for t in tools[r % len(tools):] + tools[:r % len(tools)]:
            reg = Registry(store, False)
            try:
                seeded = docker_push(t, reg, work, v1, cfg1)["stored"]
                m = docker_push(t, reg, work, rebuild, cfg2)
                m["new"] = m["stored"] - seeded
                results[t].append(m)
            finally:
                reg.stop()
    docker_table(f"\ndocker-archive rebuild (top layer changed) onto the v1 that tool pushed, caches emptied "
                 f"(medians of {runs}; new: MB the push added to the registry)", tools, results, 0, ("new",))

    daemon_tools = [t for t in tools if t != "crane"]
    daemon = Dockerd()
    try:
        if not daemon.start():
            print(f"\ndocker-daemon: skipped: {daemon.why}")
            return
        start = time.perf_counter()
        load = subprocess.run(["docker", "-H", daemon.host, "load", "-i", v1], capture_output=True, text=True)
        if load.returncode:
            print(f"\ndocker-daemon: skipped: docker load failed: {load.stderr.strip()[-500:]}")
            return
        loaded = time.perf_counter() - start
        results = {t: [] for t in daemon_tools}
        for r in range(runs):
            for t in daemon_tools[r % len(daemon_tools):] + daemon_tools[:r % len(daemon_tools)]:
                reg = Registry(store, False)
                try:
                    results[t].append(docker_push(t, reg, work, DOCKER_REF, cfg1, daemon=daemon))
                finally:
                    reg.stop()
        docker_table(f"\ndocker-daemon: private dockerd (vfs), the archive loaded ({loaded:.1f} s); cold push "
                     f"(medians of {runs}; daemon cpu: dockerd's during the push; crane reads no daemon)",
                     daemon_tools, results, size_mb, ("stored", "daemon"))
    finally:
        daemon.stop()


def main():
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 2048
    layers = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    tools = ["publish", "crane"] + (["skopeo"] if shutil.which("skopeo") else [])
    work = tempfile.mkdtemp()
    # The registries store on tmpfs when it has room (BENCH_STORAGE=disk keeps them on disk):
    # on disk, the machine's writeback paces every client alike and hides what the clients cost.
    shm = shutil.disk_usage("/dev/shm").free if os.path.isdir("/dev/shm") else 0
    on_tmpfs = os.environ.get("BENCH_STORAGE", "tmpfs") != "disk" and shm > 3 * size * 2**20 + 2**30
    store = tempfile.mkdtemp(dir="/dev/shm") if on_tmpfs else work
    # The random OCI layout (and `publish plan` on it) only for the sections that use it, not for
    # BENCH_ONLY=docker alone.
    need_img = any(want(s) for s in ("plain", "tls", "noop", "slow", "cut"))
    try:
        img = f"{work}/img"
        cpus = os.cpu_count()
        model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
        print(f"machine: {cpus} cores, {model}")
        if need_img:
            digest = layout(img, size, layers)
            print(f"image: {size} MiB in {layers} random layers; fresh distribution + htpasswd per push, "
                  f"storage on {'tmpfs' if on_tmpfs else 'disk'}; {runs} alternating runs")
        for tls in [t for t in (False, True) if want("tls" if t else "plain")]:
            results = {t: [] for t in tools}
            for r in range(runs):
                order = tools[r % len(tools):] + tools[:r % len(tools)]
                for t in order:
                    results[t].append(push_fresh(store, t, img, digest, tls=tls)[0])
            print(f"\n{'TLS via nginx' if tls else 'plain HTTP'} (medians; server: registry{' + nginx' if tls else ''} CPU)")
            keys = ("wall", "cpu", "rss", "server")
            med = {t: {k: statistics.median(x[k] for x in results[t]) for k in keys} for t in tools}
            gb = size / 1024 * 1.073741824
            for t in tools:
                m = med[t]
                print(f"  {t:<8} wall {m['wall']:6.2f} s  {size * 1.048576 / m['wall']:7.1f} MB/s  "
                      f"cpu {m['cpu']:5.2f} s ({m['cpu'] / gb:4.2f} s/GB)  rss {m['rss']:6.1f} MiB  server {m['server']:5.2f} s")
            for t in tools[1:]:
                print(f"  publish/{t}: wall {med['publish']['wall'] / med[t]['wall']:.2f}x  "
                      f"cpu {med['publish']['cpu'] / med[t]['cpu']:.2f}x  rss {med['publish']['rss'] / med[t]['rss']:.2f}x")
                # Ratios within each round (the two pushes minutes apart at most): the host's
                # drift cancels out; median and range over the rounds.
                for k in ("wall", "rss", "server"):
                    ratios = sorted(a[k] / b[k] for a, b in zip(results["publish"], results[t]) if b[k])
                    if ratios:
                        print(f"    {k} per round: {spread(ratios)}")
                # The server's CPU for the same bytes drifts with the shared host (about ±10 %
                # between pushes a minute apart), and the wall time with it: wall time per
                # server CPU-second cancels that drift and shows what the client adds to the
                # server's work (the server CPU above shows the work it causes).
                ratios = sorted((a["wall"] / a["server"]) / (b["wall"] / b["server"])
                                for a, b in zip(results["publish"], results[t]) if a["server"] and b["server"])
                if ratios:
                    print(f"    wall per server CPU-second, per round: {spread(ratios, 3)}")

        if want("noop"):
            # No-op re-push of a 20-layer image: every blob is already there.
            small = f"{work}/small"
            layout(small, 20, 20)
            reg = Registry(store, False)
            try:
                print("\nno-op re-push, 20 layers of 1 MiB, every blob present (median of 5)")
                for t in tools:
                    push(t, reg, small, f"noop-{t}")
                    walls = [push(t, reg, small, f"noop-{t}")[0]["wall"] for _ in range(5)]
                    print(f"  {t:<8} {statistics.median(walls):6.3f} s")
            finally:
                reg.stop()

        if want("slow"):
            # Through a 40 ms / 400 Mbit/s link: 1 GiB in 8 layers, and 200 small layers.
            many = f"{work}/many"
            many_digest = layout(many, 50, 200)
            for label, image, expected in ((f"{size} MiB in {layers} layers", img, digest), ("200 layers of 256 KiB", many, many_digest)):
                print(f"\nslow link (40 ms round trip, 400 Mbit/s), {label}: wall (median of {runs})")
                walls = {t: [] for t in tools}
                for r in range(runs):
                    for t in tools[r % len(tools):] + tools[:r % len(tools)]:
                        m = push_fresh(store, t, image, expected, proxy=lambda port: Proxy(port, slow=True))[0]
                        walls[t].append(m["wall"])
                med = {t: statistics.median(w) for t, w in walls.items()}
                for t in tools:
                    line = f"  {t:<8} {med[t]:6.2f} s"
                    if t != "publish":
                        ratios = sorted(a / b for a, b in zip(walls["publish"], walls[t]))
                        line += f"   publish/{t} {med['publish'] / med[t]:.2f}x, per round {spread(ratios)}"
                    print(line)
        if want("cut"):
            # A connection cut at half of a 1 GiB layer: how many bytes each client sends again.
            one = f"{work}/one"
            one_digest = layout(one, 1024, 1)
            blob = 1024 * 1024 * 1024
            print("\nconnection cut at 50 % of a 1 GiB layer: bytes sent towards the registry beyond the blob")
            for t in ["publish", "publish-chunked"] + tools[1:]:
                m, got, up = push_fresh(store, t, one, one_digest, proxy=lambda port: Proxy(port, cut_at=blob // 2), allow_fail=True)
                outcome = "pushed" if got == one_digest and m["ok"] else "FAILED"
                print(f"  {t:<8} {outcome:<7} resent {(up - blob) / 2**20:8.1f} MiB  wall {m['wall']:6.2f} s")

        if want("docker"):
            # docker build, then docker save or docker-daemon: (the path most users take).
            docker_section(work, store)

        big = int(os.environ.get("BENCH_SPARSE_GIB", "0"))
        if big:
            # Memory on a big image: sparse layers of zeros over plain HTTP, BENCH_SPARSE_RUNS
            # alternating rounds (one by default: each push takes minutes).
            rounds = max(1, int(os.environ.get("BENCH_SPARSE_RUNS", "1")))
            sparse = f"{work}/sparse"
            sparse_digest = sparse_layout(sparse, big, 8)
            dropped = drop_caches()
            print(f"\n{big} GiB image (8 sparse layers), plain HTTP, registry storage on disk, {rounds} alternating runs"
                  + (", page cache dropped before each push" if dropped else " (page cache not dropped: not root)"))
            got = {t: [] for t in tools}
            for r in range(rounds):
                for t in tools[r % len(tools):] + tools[:r % len(tools)]:
                    drop_caches()
                    m = push_fresh(work, t, sparse, sparse_digest)[0]
                    got[t].append(m)
                    print(f"  {t:<8} wall {m['wall']:7.1f} s  cpu {m['cpu']:6.2f} s  rss {m['rss']:6.1f} MiB")
            if rounds > 1:
                for t in tools[1:]:
                    for k in ("wall", "cpu", "rss"):
                        ratios = sorted(a[k] / b[k] for a, b in zip(got["publish"], got[t]))
                        print(f"  publish/{t} {k} per round: {spread(ratios)}")
            open(f"{work}/sparse.yaml", "w").write(
                "version: 1\nregistries:\n  home:\n    kind: registry\n    repository: 127.0.0.1:5999/bench\n    insecure: true\n"
                "images:\n  - name: app\n    source: oci:sparse\n    tags: [v1]\n")
            print(f"  publish plan on the {big} GiB layout: {plan_ms(f'{work}/sparse.yaml'):.1f} ms (median of 5)")

        # publish plan on the big layout: no blob is read.
        if need_img:
            open(f"{work}/publish.yaml", "w").write(
                "version: 1\nregistries:\n  home:\n    kind: registry\n    repository: 127.0.0.1:5999/bench\n    insecure: true\n"
                "images:\n  - name: app\n    source: oci:img\n    tags: [v1]\n")
            print(f"\npublish plan on the {size} MiB layout: {plan_ms(f'{work}/publish.yaml'):.1f} ms (median of 5)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if store != work:
            shutil.rmtree(store, ignore_errors=True)


if __name__ == "__main__":
    main()
