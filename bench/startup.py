#!/usr/bin/env python3
"""Start-up latency and memory of staticlet's embedded runtime, side by side with the floor
(runc / crun running the same bundle) and a peer (podman kube play), on one machine in one go.

Also the crash -> first restart latency (ROUNDS pods, one after the other: the time between the
crashing container's line and its restarted copy's), with the number of exits the agent found
only through its relist.

Measures, for 1 pod (ROUNDS times, default 20, one after the other) and for N pods at once
(default 50): the time from writing a manifest to the container's process running (it writes its
name into a FIFO the benchmark reads: no polling) and to the agent's API reporting it Running
(the arrival of its event on the API's `/pods?watch=true` stream), p50 / p90, and the difference
between the two per pod; the agent's resident memory and the shims'
(VmRSS from /proc). The floor runs the same command in the same rootfs with `runc run -d` /
`crun run -d`, timed the same way. Usage: bench/startup.py [N] [ROUNDS]. Prints a table. Run as root after
`cargo build --release -p staticlet && cargo build --profile shim -p staticlet-shim && install target/shim/staticlet-shim target/release/` (what scripts/quickstart.sh does); installs runc, crun and podman if missing.
STATICLET_BIN overrides the binary (staticlet-shim is taken from the same directory).
"""
import http.client, json, os, shutil, socket, statistics, subprocess, sys, tempfile, threading, time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("STATICLET_BIN", os.path.join(REPO, "target/release/staticlet"))
# The command line is read in main(): the other benchmarks import this module's helpers.
N, ROUNDS = 50, 20
STEADY_AFTER = 15


def sh(*args, **kw):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw)


def proc_kib(pid, file="status", field="VmRSS"):
    """A kB figure of /proc/PID/FILE (VmRSS of status, Pss of smaps_rollup); 0 once it is gone."""
    try:
        for line in open(f"/proc/{pid}/{file}"):
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_kib(pid):
    return proc_kib(pid)


def pids_of(name):
    out = subprocess.run(["pgrep", "-x", name], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


MANIFEST = """apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  hostNetwork: true
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: docker.io/library/busybox:latest
    imagePullPolicy: IfNotPresent
    command: [sh, -c, "echo {name} > /bench/fifo; {then}"]
    volumeMounts:
    - {{name: bench, mountPath: /bench}}
  volumes:
  - {{name: bench, hostPath: {{path: {fifo_dir}}}}}
"""


class Fifo:
    """A FIFO every benchmark container writes its pod name into as its first act: the time the
    line arrives is when the container's process runs, with no polling."""

    def __init__(self, d):
        import queue, threading
        os.makedirs(d, exist_ok=True)
        self.dir, path = d, os.path.join(d, "fifo")
        os.mkfifo(path)
        # Read-write: the open never blocks and the FIFO never reports EOF between writers.
        fd = os.open(path, os.O_RDWR)
        self.q = queue.Queue()
        # A thread of its own, so arrival times are not delayed by the API polling.
        threading.Thread(target=self._read, args=(fd,), daemon=True).start()

    def _read(self, fd):
        buf = b""
        while True:
            data = os.read(fd, 65536)
            now = time.monotonic()
            *done, buf = (buf + data).split(b"\n")
            for line in done:
                if line:
                    self.q.put((line.decode(), now))

    def lines(self, timeout):
        """Lines that arrived (within `timeout` seconds if none yet), with their arrival times."""
        import queue
        out = []
        try:
            out.append(self.q.get(timeout=timeout) if timeout else self.q.get_nowait())
            while True:
                out.append(self.q.get_nowait())
        except queue.Empty:
            pass
        return out


class UnixHTTP(http.client.HTTPConnection):
    """HTTP/1.1 to the agent's local API socket, one connection kept open: polling it costs the
    agent one request, not a `staticlet get` process starting (which would load the 2 cores the
    burst is measured on)."""

    def __init__(self, path):
        super().__init__("localhost", timeout=30)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(self.path)

    def get(self, path):
        self.request("GET", path)
        r = self.getresponse()
        body = r.read()
        if r.status != 200:
            raise RuntimeError(f"GET {path}: {r.status} {body[:200]!r}")
        return body


class Agent:
    """`staticlet run` on a manifest dir of its own (`tag` names its dirs), with busybox
    imported; waits until it answers. On exit: every manifest removed, its containers gone,
    the agent stopped and its sandboxes mount released. `args` are added to `staticlet run`'s
    (bench/peers.py: a CRI endpoint, whose runtime then holds the images)."""

    def __init__(self, work, tag, args=()):
        self.root, self.mdir = os.path.join(work, f"root{tag}"), os.path.join(work, f"m{tag}")
        self.logs = os.path.join(work, f"logs{tag}")
        self.args = list(args)
        os.makedirs(self.mdir)
        if "--container-runtime-endpoint" not in self.args:
            sh(BIN, "images", "import", os.path.join(work, "busybox.tar"), "--root-dir", self.root)

    def __enter__(self):
        self.proc = subprocess.Popen([BIN, "run", "--hostname-override", "bench", "--pod-manifest-path",
                                      self.mdir, "--root-dir", self.root, "--log-dir", self.logs, *self.args],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 30
        while subprocess.run([BIN, "get", "pods", "--root-dir", self.root], capture_output=True).returncode != 0:
            assert time.time() < deadline, "agent did not start"
            time.sleep(0.05)
        return self

    def write(self, name, text):
        """Writes manifest `name` whole (renamed into place)."""
        with open(os.path.join(self.mdir, f".{name}"), "w") as f:
            f.write(text)
        os.rename(os.path.join(self.mdir, f".{name}"), os.path.join(self.mdir, f"{name}.yaml"))

    def containers_left(self):
        """Whether any container of the agent's is left (the embedded runtime's records)."""
        return bool(os.listdir(os.path.join(self.root, "runtime/containers")))

    def clear(self, timeout=120):
        """Removes every manifest and waits until the containers are gone."""
        for f in os.listdir(self.mdir):
            os.remove(os.path.join(self.mdir, f))
        deadline = time.time() + timeout
        while self.containers_left() and time.time() < deadline:
            time.sleep(0.05)

    def __exit__(self, *exc):
        self.clear()
        self.proc.terminate()
        self.proc.wait()
        subprocess.run(["umount", os.path.join(self.root, "runtime/sandboxes")], capture_output=True)


class PodWatch(threading.Thread):
    """Follows the agent's `/pods?watch=true` and records when each pod is first reported with
    its container running (arrival of the event): no polling interval in the figure."""

    def __init__(self, sock_path):
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(sock_path)
        self.sock.sendall(b"GET /pods?watch=true HTTP/1.1\r\nHost: localhost\r\n\r\n")
        self.running = {}
        self.start()

    def run(self):
        # Chunked transfer: each chunk holds whole event lines; the rest are chunk framing.
        for line in self.sock.makefile("rb"):
            now = time.monotonic()
            if not line.startswith(b"{"):
                continue
            ev = json.loads(line)
            obj = ev.get("object") or {}
            nm = (obj.get("metadata") or {}).get("name", "").removesuffix("-bench")
            cs = (obj.get("status") or {}).get("containerStatuses") or []
            if ev.get("type") in ("ADDED", "MODIFIED") and cs and "running" in (cs[0].get("state") or {}):
                self.running.setdefault(nm, now)

    def close(self):
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


def staticlet_run(work, n, rounds=1):
    """`rounds` times: write n manifests at once, then wait until every container runs (its
    line in the FIFO) and until the agent reports it Running (the arrival of its watch event);
    then remove them and wait until they are gone. Returns the latency lists (process runs, API
    says Running, and the API's delay after the process ran) and the memory of the agent and
    shims while the last round's pods ran."""
    fifo = Fifo(os.path.join(work, f"fifo{n}"))
    started, reported, behind, mem = [], [], [], (0, 0, 0)
    with Agent(work, n) as agent:
        for r in range(rounds):
            written, ran = {}, {}
            watch = PodWatch(os.path.join(agent.root, "staticlet.sock"))
            for i in range(n):
                name = f"p{r}x{i}"
                agent.write(name, MANIFEST.format(name=name, fifo_dir=fifo.dir, then=RUN))
                written[name] = time.monotonic()
            deadline = time.time() + 300
            while len(ran) < n or any(nm not in watch.running for nm in written):
                assert time.time() < deadline, f"only {len(ran)}/{n} running, {len(watch.running)} reported"
                for name, t in fifo.lines(0.02):
                    ran.setdefault(name, t)
            watch.close()
            started += [ran[nm] - written[nm] for nm in written]
            reported += [watch.running[nm] - written[nm] for nm in written]
            behind += [watch.running[nm] - ran[nm] for nm in written]
            shims = pids_of("staticlet-shim")
            mem = (rss_kib(agent.proc.pid), sum(rss_kib(p) for p in shims) / max(1, len(shims)))
            if r == rounds - 1:
                # Again once the start-up burst is over (idle blocking threads exit after 2 s).
                time.sleep(STEADY_AFTER)
                mem += (rss_kib(agent.proc.pid),)
            agent.clear()
    return started, reported, behind, mem


# What the benchmark containers do after writing their line: run on, or (the crash benchmark)
# exit 1 the first time and run on when restarted.
RUN = "exec sleep 3600"
CRASH_ONCE = "[ -e /bench/{name}.done ] && exec sleep 3600; touch /bench/{name}.done; exit 1"


def crash_restart(work, rounds):
    """`rounds` pods, one after the other, whose container exits 1 right after it writes its line
    and runs (sleeps) when started again: the time between its two lines is the crash -> first
    restart latency (plus the ~1 ms the first run takes to exit). Also returns how many of those
    exits the agent found only through its 1 s relist (staticlet_relist_found_exits_total)."""
    fifo = Fifo(os.path.join(work, "fifo-crash"))
    lat, found = [], None
    with Agent(work, "-crash") as agent:
        for r in range(rounds):
            name = f"c{r}"
            agent.write(name, MANIFEST.format(name=name, fifo_dir=fifo.dir,
                                              then=CRASH_ONCE.format(name=name)))
            times = []
            deadline = time.time() + 60
            while len(times) < 2:
                assert time.time() < deadline, f"{name} was not restarted"
                times += [t for line, t in fifo.lines(1) if line == name]
            lat.append(times[1] - times[0])
            agent.clear()
        out = subprocess.run([BIN, "get", "--raw", "/metrics", "--root-dir", agent.root],
                             capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("staticlet_relist_found_exits_total "):
                found = int(float(line.split()[1]))
    return lat, found


def oci_floor(work, runtime, n):
    """`<runtime> run -d` of the same busybox rootfs, sequentially: the runtime's own floor."""
    if not shutil.which(runtime):
        return None
    bundle = os.path.join(work, f"bundle-{runtime}")
    os.makedirs(os.path.join(bundle, "rootfs"))
    sh("tar", "-xf", os.path.join(work, "busybox.tar"), "-C", bundle)
    layer = next(os.path.join(dp, f) for dp, _, fs in os.walk(bundle) for f in fs if f == "layer.tar")
    sh("tar", "-xf", layer, "-C", os.path.join(bundle, "rootfs"))
    sh(runtime, "spec", "--bundle", bundle) if runtime == "runc" else sh(runtime, "spec", cwd=bundle)
    spec = json.load(open(os.path.join(bundle, "config.json")))
    fifo = Fifo(os.path.join(work, f"fifo-{runtime}"))
    spec["process"]["args"] = ["sh", "-c", "echo x > /bench/fifo; exec sleep 3600"]
    spec["mounts"].append({"destination": "/bench", "type": "bind", "source": fifo.dir,
                           "options": ["rbind", "rw"]})
    spec["process"]["terminal"] = False
    spec["linux"]["namespaces"] = [ns for ns in spec["linux"]["namespaces"] if ns["type"] != "network"]
    json.dump(spec, open(os.path.join(bundle, "config.json"), "w"))
    lat = []
    for i in range(n):
        cid = f"bench-{runtime}-{i}"
        t = time.monotonic()
        # stderr to a file: a detached container keeps its stdio, so a pipe would never close.
        errf = os.path.join(work, f"{runtime}.err")
        with open(errf, "w") as err:
            r = subprocess.run([runtime, "run", "-d", "--bundle", bundle, cid],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        if r.returncode != 0:
            # crun refuses the cgroup v1+v2 hybrid layout of some hosts (runtime-notes.md).
            print(f"{runtime}: skipped: {open(errf).read().strip()[:200]}", file=sys.stderr)
            return None
        # Like staticlet's: until the container's process writes its line.
        while not fifo.lines(30):
            pass
        lat.append(time.monotonic() - t)
    for i in range(n):
        subprocess.run([runtime, "delete", "-f", f"bench-{runtime}-{i}"], capture_output=True)
    return lat


def podman_play(work, n):
    if not shutil.which("podman"):
        return None
    sh("podman", "load", "-i", os.path.join(work, "busybox.tar"))
    fifo_dir = os.path.join(work, "fifo-podman")
    os.makedirs(fifo_dir, exist_ok=True)
    lat = []
    for i in range(n):
        f = os.path.join(work, f"podman-{i}.yaml")
        open(f, "w").write(MANIFEST.format(name=f"pm{i}", fifo_dir=fifo_dir, then=RUN))
        t = time.monotonic()
        r = subprocess.run(["podman", "kube", "play", "--network", "host", f], capture_output=True, text=True)
        if r.returncode != 0:
            # podman 4.3 cannot start its infra container on hosts without CAP_SYS_RESOURCE
            # (it raises RLIMIT_NOFILE) or, with crun, on a cgroup v1+v2 hybrid.
            print(f"podman: skipped: {r.stderr.strip()[:300]}", file=sys.stderr)
            subprocess.run(["podman", "kube", "down", f], capture_output=True)
            return None
        lat.append(time.monotonic() - t)
    for i in range(n):
        subprocess.run(["podman", "kube", "down", os.path.join(work, f"podman-{i}.yaml")], capture_output=True)
    return lat


def main():
    global N, ROUNDS
    N = int(sys.argv[1]) if len(sys.argv) > 1 else N
    ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else ROUNDS
    if os.geteuid() != 0:
        sys.exit("run as root")
    missing = [p for p in ("runc", "crun", "podman") if not shutil.which(p)]
    if missing:
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], capture_output=True)
    work = tempfile.mkdtemp(prefix="staticlet-bench-")
    sh(os.path.join(REPO, "scripts/busybox-image.sh"), os.path.join(work, "busybox.tar"))
    rows = []
    for n, rounds in ((1, ROUNDS), (N, 1)):
        started, reported, behind, (agent_kib, shim_kib, steady_kib) = staticlet_run(work, n, rounds)
        what = f"1 pod, {rounds} times" if n == 1 else f"{n} pods at once"
        mem = (f"agent {agent_kib / 1024:.1f} MiB ({steady_kib / 1024:.1f} MiB {STEADY_AFTER} s later), "
               f"shim {shim_kib / 1024:.2f} MiB each")
        rows.append((f"staticlet, {what}: process runs", started, mem))
        rows.append((f"staticlet, {what}: API says Running", reported, "(its /pods watch event arrives)"))
        rows.append((f"staticlet, {what}: API after the process", behind, "(watch event - FIFO line)"))
    lat, found = crash_restart(work, ROUNDS)
    rows.append((f"staticlet, crash -> first restart, {ROUNDS} pods", lat,
                 f"max {max(lat) * 1000:.0f} ms; {found} of {ROUNDS} exits found by the relist"))
    for rt in ("runc", "crun"):
        lat = oci_floor(work, rt, N)
        if lat:
            rows.append((f"{rt} run -d (floor), {N} sequential", lat, ""))
    lat = podman_play(work, min(N, 10))
    if lat:
        rows.append((f"podman kube play, {min(N, 10)} sequential", lat, ""))
    print(f"{'what':56} {'p50 ms':>8} {'p90 ms':>8}  memory")
    for name, lat, mem in rows:
        print(f"{name:56} {pct(lat, 50) * 1000:8.0f} {pct(lat, 90) * 1000:8.0f}  {mem}")
    sys.stdout.flush()
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
