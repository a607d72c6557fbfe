#!/usr/bin/env python3
"""Importing the control-plane images: staticlet beside containerd (issue 18 item 9).

For each image archive, RUNS times (default 3) and each time on a fresh store:
  staticlet   `staticlet images import FILE --root-dir FRESH`: blobs stored and verified, every
              layer unpacked (and its diff ID verified) into the store's layer directories, which
              is all a container start needs
  containerd  `ctr -n k8s.io images import FILE` on a private containerd started for the run on
              fresh root and state directories (its own config and socket; not the system's):
              content stored, then unpacked into the overlayfs snapshotter (ctr's default)
Measured: wall time of the importing command; its CPU (user + system); the peak resident memory
(ru_maxrss from wait4) of staticlet's process, and of ctr plus the containerd daemon's
peak (VmHWM of the fresh daemon, which includes its resident memory before the import: given in
the notes below the table); "+sync": the time a syncfs of the store's filesystem then takes
(what the importer left unwritten; staticlet fsyncs blobs and unpacked layers, containerd 1.6
fsyncs content but not unpacked snapshots). Runs of the two alternate; the input archives stay in
the page cache (both read them warm). Medians with [min-max] over the runs, and ratios
containerd / staticlet.

Images: scripts/control-plane-images.sh's four (docker-archive, uncompressed tar layer) and,
with CONTROL_PLANE_COMPRESSION, the same as OCI archives with gzip and zstd layers, and a five-layer
image of all four (busybox userland + one layer per binary), gzip and zstd.

Usage (root; release build; not in CI):
    bench/images.py [--runs 3] [--only SUBSTRING] [--images DIR] [--also NAME=BIN]
--images DIR reuses archives written there before (else they are built in the work dir, ~1 min);
--also adds another staticlet binary (e.g. an older build), with arguments of `images import`
if given (`--also 'alone=target/release/staticlet --unpack-threads 1'`), as a column of its own.
STATICLET_BIN: staticlet, default target/release/staticlet. STATICLET_K8S_BIN: the bin dir of
kubeadm and the control-plane binaries, default /var/cache/staticlet-k8s/v1.34.4/bin.
"""
import argparse, ctypes, os, shlex, shutil, statistics, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peers import containerd_config  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("STATICLET_BIN", os.path.join(REPO, "target/release/staticlet"))
K8S_BIN = os.environ.get("STATICLET_K8S_BIN", "/var/cache/staticlet-k8s/v1.34.4/bin")
TICK = os.sysconf("SC_CLK_TCK")
LIBC = ctypes.CDLL(None, use_errno=True)


def log(msg):
    print(f"[images {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def syncfs_time(path):
    """Seconds a syncfs(2) of the filesystem holding `path` takes."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        t = time.perf_counter()
        if LIBC.syncfs(fd) != 0:
            raise OSError(ctypes.get_errno(), "syncfs")
        return time.perf_counter() - t
    finally:
        os.close(fd)


def timed(argv, **kw):
    """Runs argv to completion: (wall seconds, CPU seconds, max RSS KiB, stdout+stderr)."""
    out = tempfile.TemporaryFile()
    t = time.perf_counter()
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, **kw)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t
    p.returncode = os.waitstatus_to_exitcode(status)
    out.seek(0)
    text = out.read().decode(errors="replace")
    if p.returncode != 0:
        raise RuntimeError(f"{argv} failed ({p.returncode}): {text}")
    return wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss, text


def proc_status_kib(pid, field):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def proc_cpu(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def staticlet_import(command, archive, work):
    """`command` is the binary and extra arguments of `images import`."""
    root = tempfile.mkdtemp(prefix="st-", dir=work)
    try:
        wall, cpu, rss, out = timed([command[0], "images", "import", archive, "--root-dir", root,
                                     *command[1:]])
        sync = syncfs_time(root)
        layers = os.listdir(os.path.join(root, "images/layers"))
        if not layers or not out.startswith("imported "):
            raise RuntimeError(f"staticlet imported nothing from {archive}: {out}")
        return {"wall": wall, "cpu": cpu, "rss": rss, "sync": sync, "layers": len(layers)}
    finally:
        shutil.rmtree(root, ignore_errors=True)


class Containerd:
    """A private containerd on fresh directories under `work` (no CRI plugin: ctr needs none)."""

    def __init__(self, work):
        self.dir = tempfile.mkdtemp(prefix="ctrd-", dir=work)
        self.sock = os.path.join(self.dir, "containerd.sock")
        d = self.dir
        with open(os.path.join(d, "config.toml"), "w") as f:
            f.write(containerd_config(d, self.sock, disabled=["io.containerd.grpc.v1.cri"]))

    def ctr(self, *args):
        return ["ctr", "-a", self.sock, "-n", "k8s.io", *args]

    def __enter__(self):
        self.log = open(os.path.join(self.dir, "containerd.log"), "w")
        self.proc = subprocess.Popen(["containerd", "--config", os.path.join(self.dir, "config.toml")],
                                     stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 60
        while subprocess.run(self.ctr("version"), capture_output=True).returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError(f"containerd did not start; see {self.dir}/containerd.log")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        mounts = [l.split()[4] for l in open("/proc/self/mountinfo") if l.split()[4].startswith(self.dir)]
        for m in sorted(mounts, reverse=True):
            subprocess.run(["umount", "-l", m], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)


def containerd_import(archive, work):
    with Containerd(work) as c:
        pid = c.proc.pid
        base_rss, base_cpu = proc_status_kib(pid, "VmRSS"), proc_cpu(pid)
        wall, cpu, rss, out = timed(c.ctr("images", "import", archive))
        sync = syncfs_time(c.dir)
        daemon_hwm, daemon_cpu = proc_status_kib(pid, "VmHWM"), proc_cpu(pid) - base_cpu
        snaps = subprocess.run(c.ctr("snapshots", "ls"), capture_output=True, text=True).stdout
        committed = [l for l in snaps.splitlines()[1:] if "Committed" in l]
        if not committed or "unpacking" not in out:
            raise RuntimeError(f"ctr did not unpack {archive}: {out}\n{snaps}")
        return {"wall": wall, "cpu": cpu + daemon_cpu, "rss": rss + daemon_hwm, "sync": sync,
                "layers": len(committed), "ctr_rss": rss, "daemon_hwm": daemon_hwm,
                "daemon_base": base_rss}


def build_images(out):
    env = dict(os.environ, CONTROL_PLANE_COMPRESSION="gzip zstd")
    log(f"building the image archives in {out} (scripts/control-plane-images.sh)")
    text = subprocess.run(["bash", os.path.join(REPO, "scripts/control-plane-images.sh"), out, K8S_BIN],
                          env=env, check=True, capture_output=True, text=True).stdout
    return [l.split(" ", 1)[0] for l in text.splitlines() if l.strip()]


def fmt(xs, unit):
    med = statistics.median(xs)
    if unit == "s":
        return f"{med:.2f} s [{min(xs):.2f}-{max(xs):.2f}]"
    return f"{med / 1024:.0f} MiB [{min(xs) / 1024:.0f}-{max(xs) / 1024:.0f}]"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--only", default="", help="only archives whose file name contains this")
    ap.add_argument("--images", help="directory of archives built before (else built now)")
    ap.add_argument("--also", action="append", default=[], metavar="NAME=BIN [ARGS]",
                    help="another staticlet binary (and arguments of `images import`, e.g. "
                         "--unpack-threads 1), measured as a column of its own")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root")
    for tool in ("containerd", "ctr"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing (apt-get install containerd)")
    bins = [("staticlet", [BIN])]
    for a in args.also:
        name, command = a.split("=", 1)
        bins.append((name, shlex.split(command)))
    for _, command in bins:
        if not os.access(command[0], os.X_OK):
            sys.exit(f"no staticlet binary at {command[0]} (cargo build --release -p staticlet)")
    work = tempfile.mkdtemp(prefix="staticlet-images-bench-", dir="/var/tmp")
    try:
        if args.images:
            archives = sorted(os.path.join(args.images, f) for f in os.listdir(args.images) if f.endswith(".tar"))
        else:
            archives = build_images(os.path.join(work, "archives"))
        archives = [a for a in archives if args.only in os.path.basename(a)]
        results = {}  # (archive, tool) -> [run dicts]
        for a in archives:
            for run in range(args.runs):
                for name, b in bins:
                    r = staticlet_import(b, a, work)
                    results.setdefault((a, name), []).append(r)
                    log(f"{os.path.basename(a)} {name} run {run + 1}: {r['wall']:.2f} s, "
                        f"{r['rss'] / 1024:.0f} MiB, +sync {r['sync']:.2f} s")
                r = containerd_import(a, work)
                results.setdefault((a, "containerd"), []).append(r)
                log(f"{os.path.basename(a)} containerd run {run + 1}: {r['wall']:.2f} s, "
                    f"ctr {r['ctr_rss'] / 1024:.0f} + daemon {r['daemon_hwm'] / 1024:.0f} MiB, "
                    f"+sync {r['sync']:.2f} s")
        print_table(archives, bins, results, args.runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def print_table(archives, bins, results, runs):
    tools = [n for n, _ in bins] + ["containerd"]
    head = ["image (archive, size)", "layers"]
    for t in tools:
        head += [f"{t} time", f"{t} +sync", f"{t} CPU", f"{t} peak RSS"]
    head += ["time ratio", "RSS ratio"]
    rows = []
    for a in archives:
        size = os.path.getsize(a) / (1 << 20)
        st, cd = results[(a, "staticlet")], results[(a, "containerd")]
        row = [f"{os.path.basename(a)} ({size:.0f} MiB)", str(st[0]["layers"])]
        for t in tools:
            rs = results[(a, t)]
            row += [fmt([r["wall"] for r in rs], "s"), fmt([r["sync"] for r in rs], "s"),
                    fmt([r["cpu"] for r in rs], "s"), fmt([r["rss"] for r in rs], "k")]
        med = lambda rs, k: statistics.median(r[k] for r in rs)  # noqa: E731
        row += [f"{med(cd, 'wall') / med(st, 'wall'):.2f}x", f"{med(cd, 'rss') / med(st, 'rss'):.1f}x"]
        rows.append(row)
    print(f"\n{runs} runs each, fresh store each run; median [min-max]; ratios containerd / staticlet")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    cd = [r for a in archives for r in results[(a, "containerd")]]
    print(f"\ncontainerd's peak RSS = ctr's ({fmt([r['ctr_rss'] for r in cd], 'k')}) + the daemon's "
          f"VmHWM ({fmt([r['daemon_hwm'] for r in cd], 'k')}; it was "
          f"{fmt([r['daemon_base'] for r in cd], 'k')} before the import); its CPU is ctr's + the daemon's.")


if __name__ == "__main__":
    main()
