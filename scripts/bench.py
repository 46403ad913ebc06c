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

    scripts/bench [SIZE_MIB [LAYERS [RUNS]]]      (default 2048 8 3)
"""
import base64, hashlib, json, math, os, shutil, socket, statistics, subprocess, sys, tempfile, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PUBLISH = os.path.join(ROOT, "target/dist/publish")
CRANE = os.environ.get("CRANE") or os.path.join(ROOT, "../shared/tools/crane")
USER, PASSWORD = "bench", "bench-pw-7c1e"


def want(section):
    """BENCH_ONLY=plain,tls,noop,slow,cut runs only those sections (all when unset)."""
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
    try:
        img = f"{work}/img"
        digest = layout(img, size, layers)
        cpus = os.cpu_count()
        model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
        print(f"machine: {cpus} cores, {model}")
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
