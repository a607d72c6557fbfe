#!/usr/bin/env python3
"""Probe overhead of the staticlet agent: N real containers (embedded runtime, default 100), each
with an exec readiness probe every second, against the same N containers without probes.

For each case, once every pod is Running (and Ready when probed), samples for SECONDS (default
60): the agent's own CPU time (utime+stime of the agent process, from /proc/PID/stat), the
shims' own (the agent's `staticlet-shim` children: each serves its container's exec socket), the
CPU of what the agent and the shims spawned and reaped meanwhile (cutime+cstime: the exec
helpers, or the shims' exec children, with the probe commands they ran), the whole machine's
busy CPU (/proc/stat), and the agent's VmRSS. Prints a table in percent of one core, and the CPU
of one exec probe all-in: (agent + shims + spawned) of the probed case minus the same of the
plain one, over the probes run (N per second). Targets (issue 18 item 8): the agent <= 3 % of
one core with 100 probed containers, <= 1.5 ms of CPU per exec probe all-in.

Usage (root, after a release build as scripts/quickstart.sh does it):
    python3 bench/probes.py [N] [SECONDS]
With STATICLET_BENCH_PERF=FILE, the agent of the probed case is profiled by `perf record -g`
while it is sampled (perf itself then adds to the machine's CPU).
"""
import json, os, shutil, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from startup import BIN, REPO, rss_kib, sh  # noqa: E402

N = int(sys.argv[1]) if len(sys.argv) > 1 else 100
SECONDS = float(sys.argv[2]) if len(sys.argv) > 2 else 60.0
TICK = os.sysconf("SC_CLK_TCK")

# A pod like startup.py's (hostNetwork busybox sleeping), with an optional probe.
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
{probe}"""

PROBE = """    readinessProbe:
      exec:
        command: ["true"]
      periodSeconds: 1
"""


def proc_cpu(pid):
    """(self, reaped children) CPU seconds of a process."""
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    # After the command: state(0) ... utime(11) stime(12) cutime(13) cstime(14)
    return (int(f[11]) + int(f[12])) / TICK, (int(f[13]) + int(f[14])) / TICK


def shim_pids(agent_pid):
    """The agent's shim children (the supervisors; not the exec children they fork)."""
    pids = []
    for task in os.listdir(f"/proc/{agent_pid}/task"):
        try:
            pids += [int(p) for p in open(f"/proc/{agent_pid}/task/{task}/children").read().split()]
        except OSError:
            pass
    out = []
    for p in pids:
        try:
            # Supervisors (`run`, or `monitor` after an earlier version's re-exec), not the exec
            # helpers the agent spawns for shims without an exec socket.
            words = open(f"/proc/{p}/cmdline", "rb").read().split(b"\0")
            if open(f"/proc/{p}/comm").read().strip() == "staticlet-shim" and \
                    (b"run" in words or b"monitor" in words):
                out.append(p)
        except OSError:
            pass
    return out


def shims_cpu(pids):
    """(self, reaped children) CPU seconds summed over the shims that are still there."""
    own = reaped = 0.0
    for p in pids:
        try:
            a, c = proc_cpu(p)
        except OSError:
            continue
        own, reaped = own + a, reaped + c
    return own, reaped


def machine_busy():
    """(busy, total) jiffies of all CPUs."""
    v = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    idle = v[3] + v[4]
    return sum(v) - idle, sum(v)


def run_case(work, probed):
    tag = "probed" if probed else "plain"
    root, mdir = os.path.join(work, f"root-{tag}"), os.path.join(work, f"m-{tag}")
    os.makedirs(mdir)
    sh(BIN, "images", "import", os.path.join(work, "busybox.tar"), "--root-dir", root)
    agent = subprocess.Popen([BIN, "run", "--hostname-override", "bench", "--pod-manifest-path", mdir,
                              "--root-dir", root, "--log-dir", os.path.join(work, f"logs-{tag}")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for i in range(N):
            name = f"p{i}"
            with open(os.path.join(mdir, f".{name}"), "w") as f:
                f.write(MANIFEST.format(name=name, probe=PROBE if probed else ""))
            os.rename(os.path.join(mdir, f".{name}"), os.path.join(mdir, f"{name}.yaml"))
        deadline = time.time() + 600
        while True:
            assert time.time() < deadline, "pods not all up within 600 s"
            out = subprocess.run([BIN, "get", "pods", "-o", "json", "--root-dir", root],
                                 capture_output=True, text=True).stdout
            items = json.loads(out or '{"items": []}')["items"]
            up = 0
            for item in items:
                st = item.get("status") or {}
                conds = {c["type"]: c["status"] for c in st.get("conditions") or []}
                if st.get("phase") == "Running" and (not probed or conds.get("Ready") == "True"):
                    up += 1
            if up == N:
                break
            time.sleep(1)
        time.sleep(5)  # let the start-up burst settle before sampling
        shims = shim_pids(agent.pid)
        assert len(shims) == N, f"{len(shims)} shims for {N} containers"
        a0, c0 = proc_cpu(agent.pid)
        s0, sc0 = shims_cpu(shims)
        b0, t0 = machine_busy()
        w0 = time.monotonic()
        perf_out = os.environ.get("STATICLET_BENCH_PERF")
        if perf_out and probed:
            # Profile the agent while sampling (perf report -i FILE): where its CPU goes.
            subprocess.run(["perf", "record", "-g", "--no-inherit", "-o", perf_out, "-p", str(agent.pid), "--",
                            "sleep", str(SECONDS)], capture_output=True)
        else:
            time.sleep(SECONDS)
        a1, c1 = proc_cpu(agent.pid)
        s1, sc1 = shims_cpu(shims)
        b1, t1 = machine_busy()
        wall = time.monotonic() - w0
        ncpu = os.cpu_count()
        return {
            "agent": 100 * (a1 - a0) / wall,
            "shims": 100 * (s1 - s0) / wall,
            "children": 100 * ((c1 - c0) + (sc1 - sc0)) / wall,
            "machine": 100 * ncpu * (b1 - b0) / max(1, t1 - t0),
            "rss": rss_kib(agent.pid) / 1024,
        }
    finally:
        for f in os.listdir(mdir):
            os.remove(os.path.join(mdir, f))
        deadline = time.time() + 300
        while os.listdir(os.path.join(root, "runtime/containers")) and time.time() < deadline:
            time.sleep(0.5)
        agent.terminate()
        agent.wait()
        subprocess.run(["umount", os.path.join(root, "runtime/sandboxes")], capture_output=True)


def main():
    if os.geteuid() != 0:
        sys.exit("run as root")
    work = tempfile.mkdtemp(prefix="staticlet-probes-")
    sh(os.path.join(REPO, "scripts/busybox-image.sh"), os.path.join(work, "busybox.tar"))
    rows = [(f"{N} containers, no probes", run_case(work, False)),
            (f"{N} containers, exec readiness every 1 s", run_case(work, True))]
    print(f"sampled {SECONDS:.0f} s after all pods were up; CPU in % of one core "
          f"({os.cpu_count()} cores here)")
    print(f"{'case':44} {'agent':>7} {'shims':>7} {'spawned':>8} {'machine':>8} {'agent RSS':>10}")
    for name, r in rows:
        print(f"{name:44} {r['agent']:6.1f}% {r['shims']:6.1f}% {r['children']:7.1f}% "
              f"{r['machine']:7.1f}% {r['rss']:7.1f} MiB")
    total = {k: r["agent"] + r["shims"] + r["children"] for k, (_, r) in zip(("plain", "probed"), rows)}
    # % of a core = 10 ms of CPU per second; N probes per second.
    print(f"one exec probe, all-in: {10 * (total['probed'] - total['plain']) / N:.2f} ms of CPU "
          f"(agent {10 * (rows[1][1]['agent'] - rows[0][1]['agent']) / N:.2f} ms)")
    sys.stdout.flush()
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
