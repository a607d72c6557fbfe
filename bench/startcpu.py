#!/usr/bin/env python3
"""Where the CPU of one embedded pod start goes, by process role (issue 18 items 2 and 3).

Starts ROUNDS single busybox pods one after the other (bench/startup.py's hostNetwork manifest
and agent) while `perf record -a -e cpu-clock -F 4999` samples every CPU, and attributes the
samples taken from the manifest's write to 30 ms after the agent's API reported the pod Running
(the shim's re-exec into its monitor can come after that event) to:
  agent          the agent process (all its threads)
  shim           staticlet-shim processes (supervisor start-up, monitor re-exec, exec helpers)
  libcontainer   youki's intermediate and init processes, until the init execs the container
  container      the container's own processes (busybox `sh`, its `exe` re-exec for `sleep`)
  other          everything else in the windows (the benchmark itself, other work on the machine;
                 idle CPUs are not counted)
Each sample is 0.2 ms of one CPU. The agent's share includes what it does for the API watch the
benchmark holds open. Prints a table (median and range over the rounds) and the number of
execs of the shim binary per start. Not a latency benchmark: CPU time is what limits many pods at once on 2 cores.

Usage (root, release build as for bench/startup.py): bench/startcpu.py [ROUNDS]
Needs `perf` (Debian: `apt-get install linux-perf`; installed here if missing).
STATICLET_BIN overrides the binary (staticlet-shim is taken from the same directory).
"""
import collections, os, re, shutil, statistics, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import startup as S  # noqa: E402

HZ = 4999
ROLES = ("agent", "shim", "libcontainer", "container", "other")


def role(comm, pid, agent_pid, init_pids):
    if pid == agent_pid:
        return "agent"
    if comm == "staticlet-shim":
        return "shim"
    if comm.startswith("youki:"):
        return "libcontainer"
    if pid in init_pids:
        return "container"
    return "other"


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    if os.geteuid() != 0:
        sys.exit("run as root")
    if not shutil.which("perf"):
        subprocess.run(["apt-get", "install", "-y", "-qq", "linux-perf"], capture_output=True)
        if not shutil.which("perf"):
            sys.exit("perf is missing: apt-get install linux-perf")
    work = tempfile.mkdtemp(prefix="staticlet-startcpu-")
    S.sh(os.path.join(S.REPO, "scripts/busybox-image.sh"), os.path.join(work, "busybox.tar"))
    fifo = S.Fifo(os.path.join(work, "fifo"))
    data = os.path.join(work, "perf.data")
    windows = []
    with S.Agent(work, 1) as agent:
        agent.write("warm", S.MANIFEST.format(name="warm", fifo_dir=fifo.dir, then=S.RUN))
        fifo.lines(60)
        agent.clear()
        perf = subprocess.Popen(["perf", "record", "-q", "-a", "-k", "mono", "-F", str(HZ), "-e", "cpu-clock",
                                 "-o", data], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1)
        for r in range(rounds):
            watch = S.PodWatch(os.path.join(agent.root, "staticlet.sock"))
            time.sleep(0.3)
            name = f"r{r}"
            t0 = time.monotonic()
            agent.write(name, S.MANIFEST.format(name=name, fifo_dir=fifo.dir, then=S.RUN))
            assert fifo.lines(60), f"{name} did not run"
            deadline = time.time() + 60
            while name not in watch.running:
                assert time.time() < deadline, f"{name} not reported Running"
                time.sleep(0.002)
            watch.close()
            windows.append((t0, watch.running[name] + 0.03))
            time.sleep(0.1)
            agent.clear()
            time.sleep(0.5)
        perf.send_signal(2)
        perf.wait()
        agent_pid = agent.proc.pid
    out = subprocess.run(["perf", "script", "-i", data, "-F", "comm,pid,time"],
                         capture_output=True, text=True).stdout
    execs = subprocess.run(["perf", "script", "-i", data, "-F", "comm,pid,time", "--show-task-events"],
                           capture_output=True, text=True).stdout
    # The container's process is youki's init after its exec (same pid): `sh`, then busybox's
    # `exe` for `exec sleep`.
    init_pids = [set() for _ in windows]
    per_round = [collections.Counter() for _ in windows]
    for line in out.splitlines():
        m = re.match(r"\s*(.+?)\s+(\d+)\s+(\d+\.\d+):", line)
        if not m:
            continue
        comm, pid, ts = m.group(1), int(m.group(2)), float(m.group(3))
        if pid == 0:
            continue  # an idle CPU (cpu-clock samples those too)
        for i, (a, b) in enumerate(windows):
            if a <= ts <= b:
                if comm.startswith("youki:[2"):
                    init_pids[i].add(pid)
                per_round[i][role(comm, pid, agent_pid, init_pids[i])] += 1
                break
    exec_counts = [0] * len(windows)
    for line in execs.splitlines():
        m = re.match(r"\s*(.+?)\s+(\d+)\s+(\d+\.\d+):\s+PERF_RECORD_COMM exec:", line)
        if not m:
            continue
        ts = float(m.group(3))
        if m.group(1) not in ("staticlet-shim", "staticlet"):
            continue
        for i, (a, b) in enumerate(windows):
            if a <= ts <= b:
                exec_counts[i] += 1
    print(f"CPU per pod start, {rounds} rounds (ms of CPU; median, range):")
    total = [0.0] * len(windows)
    for r in ROLES:
        xs = [c[r] * 1000 / HZ for c in per_round]
        total = [t + x for t, x in zip(total, xs)] if r != "other" else total
        print(f"  {r:14} {statistics.median(xs):6.2f}  ({min(xs):.2f}-{max(xs):.2f})")
    print(f"  {'all but other':14} {statistics.median(total):6.2f}  ({min(total):.2f}-{max(total):.2f})")
    print(f"  shim execs per start: {statistics.median(exec_counts):.0f} ({min(exec_counts)}-{max(exec_counts)})")
    lat = [(b - 0.03 - a) * 1000 for a, b in windows]
    print(f"  manifest -> API Running: p50 {statistics.median(lat):.1f} ms")
    subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    main()
