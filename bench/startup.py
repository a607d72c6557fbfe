#!/usr/bin/env python3
"""Start-up latency and memory of staticlet's embedded runtime, side by side with the floor
(runc / crun running the same bundle) and a peer (podman kube play), on one machine in one go.

Measures, for 1 pod and for N pods (default 50): the time from writing a manifest to the pod's
container running (p50 / p90, polled every 20 ms through the agent's API, so +-20 ms), the
agent's resident memory and the shims' (VmRSS from /proc). Prints a table. Run as root after
`cargo build --release -p staticlet && cargo build --profile shim -p staticlet-shim && install target/shim/staticlet-shim target/release/` (what scripts/quickstart.sh does); installs runc, crun and podman if missing.
"""
import json, os, shutil, statistics, subprocess, sys, tempfile, time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(REPO, "target/release/staticlet")
N = int(sys.argv[1]) if len(sys.argv) > 1 else 50


def sh(*args, **kw):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw)


def rss_kib(pid):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


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
    command: [sleep, "3600"]
"""


def staticlet_run(work, n):
    root, mdir = os.path.join(work, f"root{n}"), os.path.join(work, f"m{n}")
    os.makedirs(mdir)
    sh(BIN, "images", "import", os.path.join(work, "busybox.tar"), "--root-dir", root)
    agent = subprocess.Popen([BIN, "run", "--hostname-override", "bench", "--pod-manifest-path", mdir,
                              "--root-dir", root, "--log-dir", os.path.join(work, f"logs{n}")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 30
        while subprocess.run([BIN, "get", "pods", "--root-dir", root], capture_output=True).returncode != 0:
            assert time.time() < deadline, "agent did not start"
            time.sleep(0.05)
        written = {}
        for i in range(n):
            name = f"p{i}"
            with open(os.path.join(mdir, f".{name}"), "w") as f:
                f.write(MANIFEST.format(name=name))
            os.rename(os.path.join(mdir, f".{name}"), os.path.join(mdir, f"{name}.yaml"))
            written[f"{name}-bench"] = time.monotonic()
        running = {}
        deadline = time.time() + 300
        while len(running) < n:
            assert time.time() < deadline, f"only {len(running)}/{n} running"
            out = subprocess.run([BIN, "get", "pods", "-o", "json", "--root-dir", root],
                                 capture_output=True, text=True).stdout
            now = time.monotonic()
            for item in json.loads(out or '{"items": []}')["items"]:
                nm = item["metadata"]["name"]
                cs = (item.get("status") or {}).get("containerStatuses") or []
                if nm not in running and cs and "running" in (cs[0].get("state") or {}):
                    running[nm] = now - written[nm]
            time.sleep(0.02)
        shims = pids_of("staticlet-shim")
        mem = (rss_kib(agent.pid), sum(rss_kib(p) for p in shims) / max(1, len(shims)))
        return list(running.values()), mem
    finally:
        for f in os.listdir(mdir):
            os.remove(os.path.join(mdir, f))
        deadline = time.time() + 120
        while os.listdir(os.path.join(root, "runtime/containers")) and time.time() < deadline:
            time.sleep(0.1)
        agent.terminate()
        agent.wait()
        subprocess.run(["umount", os.path.join(root, "runtime/sandboxes")], capture_output=True)


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
    spec["process"]["args"] = ["sleep", "3600"]
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
        lat.append(time.monotonic() - t)
    for i in range(n):
        subprocess.run([runtime, "delete", "-f", f"bench-{runtime}-{i}"], capture_output=True)
    return lat


def podman_play(work, n):
    if not shutil.which("podman"):
        return None
    sh("podman", "load", "-i", os.path.join(work, "busybox.tar"))
    lat = []
    for i in range(n):
        f = os.path.join(work, f"podman-{i}.yaml")
        open(f, "w").write(MANIFEST.format(name=f"pm{i}"))
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
    if os.geteuid() != 0:
        sys.exit("run as root")
    missing = [p for p in ("runc", "crun", "podman") if not shutil.which(p)]
    if missing:
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], capture_output=True)
    work = tempfile.mkdtemp(prefix="staticlet-bench-")
    sh(os.path.join(REPO, "scripts/busybox-image.sh"), os.path.join(work, "busybox.tar"))
    rows = []
    for n in (1, N):
        lat, (agent_kib, shim_kib) = staticlet_run(work, n)
        rows.append((f"staticlet, {n} pod(s)", lat, f"agent {agent_kib / 1024:.1f} MiB, shim {shim_kib / 1024:.2f} MiB each"))
    for rt in ("runc", "crun"):
        lat = oci_floor(work, rt, N)
        if lat:
            rows.append((f"{rt} run -d (floor), {N} sequential", lat, ""))
    lat = podman_play(work, min(N, 10))
    if lat:
        rows.append((f"podman kube play, {min(N, 10)} sequential", lat, ""))
    print(f"{'what':44} {'p50 ms':>8} {'p90 ms':>8}  memory")
    for name, lat, mem in rows:
        print(f"{name:44} {pct(lat, 50) * 1000:8.0f} {pct(lat, 90) * 1000:8.0f}  {mem}")
    sys.stdout.flush()
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
