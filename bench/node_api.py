#!/usr/bin/env python3
"""Node API costs of the staticlet agent (issue 13's performance goals), embedded runtime.

1. `logs -f` latency: a container prints a line about every millisecond; the container-log
   endpoint (the node API's `/containerLogs`, here through the agent's local unix socket, the same
   handler) is followed with timestamps for SECONDS. Per line, latency = arrival at the client
   minus the CRI timestamp the shim put on it when it read the line from the container (so: what
   the follow adds over the file). Lines lost = lines in the file in the window that the
   follower did not get.
2. 50 concurrent follows of that container: the agent's VmRSS and CPU (utime+stime from /proc)
   with and without them, over SECONDS.
3. `/healthz` on the healthz port with 50 pods running (49 idle ones added): 1000 sequential
   GETs, a new connection each, p50 / p99 / max.

Usage (root, after a release build as scripts/quickstart.sh does it; STATICLET_BIN overrides
the binary):
    python3 bench/node_api.py [SECONDS]
STATICLET_BENCH_PERF=FILE also records a perf profile of the agent during the 50 follows.
"""
import http.client, os, socket, subprocess, sys, tempfile, threading, time, shutil, json
from datetime import datetime

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from startup import BIN, REPO, pct, rss_kib, sh  # noqa: E402

BIN = os.environ.get("STATICLET_BIN", BIN)
SECONDS = float(sys.argv[1]) if len(sys.argv) > 1 else 20.0
TICK = os.sysconf("SC_CLK_TCK")

MANIFEST = """apiVersion: v1
kind: Pod
metadata:
  name: chatty
spec:
  hostNetwork: true
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: docker.io/library/busybox:latest
    imagePullPolicy: IfNotPresent
    command: [sh, -c, 'i=0; while true; do i=$((i+1)); echo "line $i"; usleep 1000; done']
"""


IDLE = """apiVersion: v1
kind: Pod
metadata:
  name: idle{i}
spec:
  hostNetwork: true
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: docker.io/library/busybox:latest
    imagePullPolicy: IfNotPresent
    command: [sleep, "3600"]
"""


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=60)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


def epoch(ts):
    """Seconds since the epoch of an RFC 3339 UTC time with nanoseconds."""
    main, _, frac = ts.rstrip("Z").partition(".")
    t = datetime.strptime(main, "%Y-%m-%dT%H:%M:%S")
    return (t - datetime(1970, 1, 1)).total_seconds() + (float("0." + frac) if frac else 0.0)


def follow(sock, path, seconds, out=None):
    """Follows `path` for `seconds`; returns [(line, arrival - timestamp)] when `out` is None."""
    c = UnixHTTPConnection(sock)
    c.request("GET", path)
    r = c.getresponse()
    assert r.status == 200, r.read()
    end = time.time() + seconds
    got = []
    buf = b""
    while time.time() < end:
        chunk = r.read1(65536)
        now = time.time()
        if not chunk:
            break
        if out is not None:
            continue
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for l in lines:
            ts, _, text = l.decode().partition(" ")
            got.append((text, now - epoch(ts)))
    c.close()
    return got


def proc_cpu(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / TICK


def main():
    if os.geteuid() != 0:
        sys.exit("run as root")
    work = tempfile.mkdtemp(prefix="staticlet-nodeapi-")
    root, mdir, logs = (os.path.join(work, d) for d in ("root", "m", "logs"))
    os.makedirs(mdir)
    sh(os.path.join(REPO, "scripts/busybox-image.sh"), os.path.join(work, "busybox.tar"))
    sh(BIN, "images", "import", os.path.join(work, "busybox.tar"), "--root-dir", root)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    hport = s.getsockname()[1]
    s.close()
    agent = subprocess.Popen([BIN, "run", "--hostname-override", "bench", "--pod-manifest-path", mdir,
                              "--root-dir", root, "--log-dir", logs, "--healthz-port", str(hport)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sock = os.path.join(root, "staticlet.sock")
    try:
        with open(os.path.join(mdir, "chatty.yaml"), "w") as f:
            f.write(MANIFEST)
        deadline = time.time() + 120
        while True:
            assert time.time() < deadline, "pod not running within 120 s"
            out = subprocess.run([BIN, "get", "pod", "chatty-bench", "-o", "json", "--root-dir", root],
                                 capture_output=True, text=True).stdout
            if out and json.loads(out).get("status", {}).get("phase") == "Running":
                break
            time.sleep(0.5)
        time.sleep(2)
        path = "/containerLogs/default/chatty-bench/app?follow=true&timestamps=true&tailLines=0"
        t0 = time.time()
        got = follow(sock, path, SECONDS)
        t1 = t0 + SECONDS
        lat = sorted(d * 1000 for _, d in got)
        # The file's lines of the same window (from the first line received to the last).
        first, last = got[0][0], got[-1][0]
        ldir = next(os.path.join(logs, d) for d in os.listdir(logs) if d.startswith("default_chatty"))
        file_lines = [l.split(" ", 3)[3].rstrip("\n") for l in open(os.path.join(ldir, "app", "0.log"))]
        window = file_lines[file_lines.index(first):file_lines.index(last) + 1]
        lost = len(window) - len(got)
        rate = len(got) / SECONDS

        # 50 concurrent follows.
        rss0 = rss_kib(agent.pid) / 1024
        c0 = proc_cpu(agent.pid)
        time.sleep(SECONDS)
        base_cpu = 100 * (proc_cpu(agent.pid) - c0) / SECONDS
        threads = [threading.Thread(target=follow, args=(sock, path, SECONDS + 5, True)) for _ in range(50)]
        for t in threads:
            t.start()
        time.sleep(2)
        c0 = proc_cpu(agent.pid)
        perf = None
        if os.environ.get("STATICLET_BENCH_PERF"):
            # Profile the agent while the 50 follows run (perf report -i FILE).
            perf = subprocess.Popen(["perf", "record", "-g", "-o", os.environ["STATICLET_BENCH_PERF"],
                                     "-p", str(agent.pid), "--", "sleep", str(SECONDS)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(SECONDS)
        if perf:
            perf.wait()
        follow_cpu = 100 * (proc_cpu(agent.pid) - c0) / SECONDS
        rss50 = rss_kib(agent.pid) / 1024
        for t in threads:
            t.join()

        # healthz, with 50 pods on the node: 49 idle ones beside the chatty one.
        for i in range(49):
            with open(os.path.join(mdir, f"idle{i}.yaml"), "w") as f:
                f.write(IDLE.format(i=i))
        deadline = time.time() + 300
        while True:
            assert time.time() < deadline, "49 idle pods not running within 300 s"
            out = subprocess.run([BIN, "get", "pods", "-o", "json", "--root-dir", root],
                                 capture_output=True, text=True).stdout
            running = [p for p in json.loads(out or '{"items": []}')["items"]
                       if (p.get("status") or {}).get("phase") == "Running"]
            if len(running) >= 50:
                break
            time.sleep(1)
        hl = []
        for _ in range(1000):
            a = time.perf_counter()
            c = http.client.HTTPConnection("127.0.0.1", hport, timeout=10)
            c.request("GET", "/healthz")
            assert c.getresponse().read() == b"ok"
            c.close()
            hl.append((time.perf_counter() - a) * 1000)
        hl.sort()

        print(f"binary {BIN}; {os.cpu_count()} cores; follow sampled {SECONDS:.0f} s")
        print(f"{'what':52} result")
        print(f"{'logs -f: lines/s written and received':52} {rate:.0f}")
        print(f"{'logs -f: lines lost':52} {lost} of {len(window)}")
        print(f"{'logs -f: added latency p50 / p99 / max (ms)':52} "
              f"{pct(lat, 50):.2f} / {pct(lat, 99):.2f} / {lat[-1]:.2f}")
        print(f"{'agent CPU, one writer, no follower / 50 followers':52} {base_cpu:.1f} % / {follow_cpu:.1f} % of a core")
        print(f"{'agent VmRSS, no follower / 50 followers (MiB)':52} {rss0:.1f} / {rss50:.1f}")
        print(f"{'/healthz, 50 pods: p50 / p99 / max (ms, new conn each)':52} "
              f"{pct(hl, 50):.2f} / {pct(hl, 99):.2f} / {hl[-1]:.2f}")
    finally:
        for f in os.listdir(mdir):
            os.remove(os.path.join(mdir, f))
        deadline = time.time() + 60
        while os.path.isdir(os.path.join(root, "runtime/containers")) and \
                os.listdir(os.path.join(root, "runtime/containers")) and time.time() < deadline:
            time.sleep(0.5)
        agent.terminate()
        agent.wait()
        subprocess.run(["umount", os.path.join(root, "runtime/sandboxes")], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
