#!/usr/bin/env python3
"""The peer table: kubelet + containerd beside staticlet (CRI, on the same containerd) and
staticlet embedded, on the same busybox pod manifests, on one machine in one go (issue 18).

Three peers, one after the other, each on a manifest directory of its own:
  kubelet   kubelet standalone (no API server, `--pod-manifest-path`) on a private containerd
  cri       staticlet with `--container-runtime-endpoint` on that same containerd (kubelet stopped)
  embedded  staticlet's embedded runtime (containerd stopped)
The private containerd has its own config, socket, root and state directories, a loopback-only CNI
configuration, `restrict_oom_score_adj` (this VM lacks CAP_SYS_RESOURCE) and locally built busybox
and pause images imported with `ctr -n k8s.io images import` (scripts/busybox-image.sh,
scripts/pause-image.sh; no registry is needed). Pod cgroups: kubelet's under --cgroup-root
/staticlet-peers, staticlet's under /staticlet/pod<uid>.

Every pod is a hostNetwork busybox pod (bench/startup.py's manifest) whose container writes its
name as its first act, then waits (`trap 'exit 0' TERM`, so removal is not the grace period):
  - with a hostPath volume: into a FIFO the benchmark reads (bench/startup.py's Fifo),
  - without a volume: `echo NAME | nc 127.0.0.1 PORT` to a TCP listener of the benchmark,
and the line's arrival is "process runs" for all three peers, with no polling.

Rows (p50 of ROUNDS pods one after the other, unless said):
  1 pod: manifest written -> process runs (hostPath volume), and without a volume
  1 pod: -> API says Running and Ready: the agent's pod list polled every 20 ms over one
         keep-alive connection; kubelet: its read-only port's /pods (standalone kubelet has no
         other API; it carries the status manager's status of static pods), staticlet: /pods on
         its local socket
  N pods at once: all processes running (one burst)
  PSS of everything with N pods: agent + containerd + shims + pause processes (not the
         containers' own sh/sleep), from /proc/PID/smaps_rollup
  agent CPU, N idle pods: utime+stime of the agent over IDLE seconds, SETTLE s after the burst
  crash -> first restart: the container writes its line and exits 1; restarted, it writes it
         again and waits: the time between the two lines
  manifest removed -> process gone: the container holds the write end of a FIFO of its own open;
         once the agent's API says the pod is Running and Ready, and after a random 0.5-1.5 s
         (kubelet reports Ready right after a 1 s relist and acts on a removal at the next one:
         this puts the removal at a random point of that period), the time from the manifest's
         removal until the benchmark's read of it sees EOF (every process of the container gone)
Each peer first runs one pod (not measured) so that the table is about warm agents. Below the
table, per peer: the PSS split (agent / runtime, with the number of daemons, shims and pause
processes counted) and the CPU of all of them over the same idle window.

kubelet runs in a private mount namespace (`unshare -m --propagation slave`) so that it cannot
change the host: /proc/sys/{vm/overcommit_memory,vm/panic_on_oom,kernel/panic,kernel/panic_on_oops,
kernel/keys/root_maxkeys,kernel/keys/root_maxbytes} are bind-mounted copies holding the values its
container manager wants (it would otherwise rewrite the host's sysctls), and /var/log and /var/lib
are private directories (it creates /var/log/containers with a symlink per container, and
/var/lib/kubelet/device-plugins and /var/lib/kubelet/pki, at fixed or defaulted paths whatever its
--root-dir). Its root dir and pod log dir must be seen by containerd (outside that namespace): they
are in the benchmark's work dir, which therefore must not be under /var/lib or /var/log. Its
configuration:
  --node-ip              without it, standalone kubelet resolves its node name through DNS in its
                         sync loop at every pod admission (stalls of 5 s seen here)
  --hostname-override    the node name (pods are NAME-bench for all three)
  --root-dir, podLogsDir private directories (not /var/lib/kubelet, /var/log/pods)
  cgroupRoot             /staticlet-peers (made beforehand in every v1 hierarchy: kubelet requires
                         it to exist), cgroupDriver cgroupfs (no systemd as PID 1 here); the
                         v1+v2 hybrid needs nothing else
  makeIPTablesUtilChains false: it would add chains and a DROP rule to the host's firewall
  authentication/authorization: anonymous, AlwaysAllow (the defaults need an API server's webhook)
  evictionHard (disk 1 %), imageGCHighThresholdPercent 100: with the default 15 % imagefs
                         threshold, a machine whose disk is 85 % full (this one, at times) has
                         kubelet reclaiming every 10 s during the benchmark: container and image
                         GC (the busybox and pause images, which no registry can give back)
  address 127.0.0.1, port / readOnlyPort on free loopback ports, healthzPort 0 (off): nothing on
                         the machine's fixed ports 10248/10250/10255
No swap flag is needed here (the VM has none). Logged and harmless here: it cannot lower its own
oom_score_adj nor raise its open-files limit (no CAP_SYS_RESOURCE), containerd 1.6 lacks the CRI
RuntimeConfig call (kubelet falls back to its cgroupDriver), no imagefs label.

Usage (root):
    bench/peers.py [--rounds 20] [--pods 50] [--idle 30] [--quick] [--peers kubelet,cri,embedded]
--quick makes the defaults 3 rounds, 10 pods, 5 s idle: for checking the benchmark itself, not
for figures.
STATICLET_BIN: staticlet (staticlet-shim next to it), default target/release/staticlet.
STATICLET_K8S_BIN: the bin dir with kubelet and crictl, default what
`scripts/build-k8s.sh --with-node` prints (it builds them on its first run, several minutes).
Prints one table with ratios (kubelet / staticlet). Not run in CI. The work dir (kubelet's and
containerd's logs) is kept when something fails, or always with STATICLET_BENCH_KEEP=1.
"""
import argparse, http.client, json, os, queue, random, select, shutil, socket, subprocess, sys, tempfile, threading, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from startup import BIN, CRASH_ONCE, MANIFEST, REPO, Agent, Fifo, UnixHTTP, pct, proc_kib, sh  # noqa: E402

PAUSE = "registry.k8s.io/pause:3.10.1"  # kubelet v1.34's default sandbox image
CGROUP_ROOT = "/staticlet-peers"
NODE = "bench"
# What the container does after its line: wait, and exit at once on SIGTERM (a shell as PID 1 of
# its PID namespace would otherwise ignore it and be killed only after the grace period).
WAIT = "trap 'exit 0' TERM; sleep 3600 & wait"
# Without a volume the line goes to a TCP listener (hostNetwork: the host's loopback).
NO_VOLUME = MANIFEST.split("    volumeMounts:")[0].replace(
    "echo {name} > /bench/fifo", "echo {name} | nc -w 5 127.0.0.1 {port}")
HOLD = "exec 3>/bench/{name}.hold; " + WAIT
CRASH = CRASH_ONCE.replace("exec sleep 3600", "{{ " + WAIT + "; }}")
KERNEL_TUNABLES = {"vm/overcommit_memory": 1, "vm/panic_on_oom": 0, "kernel/panic": 10,
                   "kernel/panic_on_oops": 1, "kernel/keys/root_maxkeys": 1000000,
                   "kernel/keys/root_maxbytes": 25000000}
TICK = os.sysconf("SC_CLK_TCK")
SETTLE = 15


def log(msg):
    print(f"[peers {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_ports(n):
    """`n` distinct free loopback ports (bound and released by the kernel, not guessed)."""
    ss = [socket.socket() for _ in range(n)]
    for s in ss:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in ss]
    for s in ss:
        s.close()
    return ports


def node_ip():
    """The host's source address towards the outside (a UDP connect sends nothing)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("192.0.2.1", 9))
        return s.getsockname()[0]
    except OSError:
        return "127.0.0.1"
    finally:
        s.close()


def wait_for(what, cond, timeout, proc=None, interval=0.05):
    deadline = time.time() + timeout
    while not cond():
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: the process exited ({proc.returncode})")
        if time.time() > deadline:
            raise RuntimeError(f"{what}: not within {timeout} s")
        time.sleep(interval)


class TcpLines(Fifo):
    """Bench lines over TCP (the pods without a volume): one connection a line, each line's
    arrival time taken when it is read, like Fifo's."""

    def __init__(self):
        self.q = queue.Queue()
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=256)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            conn, _ = self.sock.accept()
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn):
        with conn:
            buf = b""
            while b"\n" not in buf:
                data = conn.recv(4096)
                if not data:
                    break
                buf += data
            now = time.monotonic()
            line = buf.split(b"\n")[0].decode().strip()
            if line:
                self.q.put((line, now))


class TcpHTTP(UnixHTTP):
    """UnixHTTP's keep-alive GET, over TCP (kubelet's read-only port)."""

    def __init__(self, port):
        http.client.HTTPConnection.__init__(self, "127.0.0.1", port, timeout=30)

    connect = http.client.HTTPConnection.connect


def ready_pods(body):
    """Names (without the node suffix) of the pods a PodList says are Running and Ready."""
    out = set()
    for item in json.loads(body).get("items") or []:
        st = item.get("status") or {}
        ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                    for c in st.get("conditions") or [])
        if st.get("phase") == "Running" and ready:
            out.add(item["metadata"]["name"].removesuffix(f"-{NODE}"))
    return out


def procs():
    """{pid: (ppid, comm, cmdline)} of every process."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = open(f"/proc/{d}/stat").read()
            cmd = open(f"/proc/{d}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        out[int(d)] = (ppid, comm, cmd)
    return out


def pss_kib(pid):
    return proc_kib(pid, "smaps_rollup", "Pss")


def cpu_ticks(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


# ------------------------------------------------------------------------------------ runtimes
class Containerd:
    """A private containerd: config, socket, root and state of its own under `work`, the busybox
    and pause images imported. Stopped (its sandboxes removed, shims and mounts gone) on exit."""

    def __init__(self, work):
        self.dir = os.path.join(work, "containerd")
        self.sock = os.path.join(self.dir, "containerd.sock")
        self.endpoint = f"unix://{self.sock}"
        for sub in ("root", "state", "cni", "opt"):
            os.makedirs(os.path.join(self.dir, sub))
        # hostNetwork pods never call CNI; a loopback-only network makes the runtime report its
        # network ready without a bridge or any other change to the host.
        with open(os.path.join(self.dir, "cni/10-peers-lo.conflist"), "w") as f:
            json.dump({"cniVersion": "0.4.0", "name": "peers-lo", "plugins": [{"type": "loopback"}]}, f)
        d = self.dir
        with open(os.path.join(d, "config.toml"), "w") as f:
            f.write(containerd_config(d, self.sock) + f"""[plugins."io.containerd.grpc.v1.cri"]
  restrict_oom_score_adj = true
  sandbox_image = "{PAUSE}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "overlayfs"
[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = "{d}/cni"
""")

    def crictl(self, *args):
        return subprocess.run([CRICTL, "-r", self.endpoint, "-i", self.endpoint, "-t", "30s", *args],
                              capture_output=True, text=True)

    def spawn(self):
        """Starts the daemon (its log appended to), without waiting for it."""
        self.log = open(os.path.join(self.dir, "containerd.log"), "a")
        self.proc = subprocess.Popen(["containerd", "--config", os.path.join(self.dir, "config.toml")],
                                     stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)

    def wait_serving(self):
        wait_for("containerd", lambda: self.crictl("version").returncode == 0, 60, self.proc)

    def import_image(self, tar):
        sh("ctr", "-a", self.sock, "-n", "k8s.io", "images", "import", tar)

    def __enter__(self):
        self.spawn()
        try:
            self.wait_serving()
            for script, ref in (("busybox-image.sh", "docker.io/library/busybox:latest"),
                                ("pause-image.sh", PAUSE)):
                tar = os.path.join(self.dir, script.replace(".sh", ".tar"))
                sh(os.path.join(REPO, "scripts", script), tar, ref)
                self.import_image(tar)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def running(self):
        """Whether any container or sandbox of this containerd is still running."""
        return bool(self.crictl("ps", "-q").stdout.split() or
                    self.crictl("pods", "--state", "ready", "-q").stdout.split())

    def remove_all(self):
        self.crictl("rmp", "-fa")

    def shims(self, table):
        return [p for p, (_, comm, cmd) in table.items()
                if comm.startswith("containerd-shim") and self.sock in cmd]

    def __exit__(self, *exc):
        self.remove_all()
        table = procs()
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for p in self.shims(table):
            try:
                os.kill(p, 9)
            except ProcessLookupError:
                pass
        mounts = [l.split()[4] for l in open("/proc/self/mountinfo") if l.split()[4].startswith(self.dir)]
        for m in sorted(mounts, reverse=True):
            subprocess.run(["umount", "-l", m], capture_output=True)
        self.log.close()


def containerd_config(d, sock, disabled=()):
    """The start of a private containerd's config.toml: its root, state and sockets under `d`
    and `sock`, no debug or metrics listener, the snapshotters this machine lacks (and
    `disabled`) turned off. The caller appends its plugins' sections."""
    off = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
           "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
           "io.containerd.internal.v1.tracing", *disabled]
    return f"""version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = {json.dumps(off)}
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
"""


def cgroup_hierarchies(types=("cgroup",)):
    """The mounted cgroup hierarchies of these filesystem types (kubelet's cgroupfs driver makes
    its cgroups in the v1 ones and, on a hybrid host, in the v2 one too)."""
    out = []
    for line in open("/proc/self/mountinfo"):
        f = line.split()
        if f[f.index("-") + 1] in types:
            out.append(f[4])
    return out


def remove_cgroup_tree(path):
    if not os.path.isdir(path):
        return
    for d, subs, _ in sorted(os.walk(path), key=lambda w: -w[0].count("/")):
        try:
            os.rmdir(d)
        except OSError:
            pass


# ---------------------------------------------------------------------------------------- peers
# A peer: a context manager with `name`, `mdir` (its manifest dir), `write(name, text)`, `clear()`
# (every manifest removed, its containers gone), `pid` (the agent), `api()` (a keep-alive
# connection whose `get("/pods")` is a PodList), `daemons()` (the runtime's daemon pids) and
# `shims(procs())` (the runtime's per-container processes).
class OnContainerd:
    """The runtime side of the peers on the private containerd."""

    def containers_left(self):
        return self.containerd.running()

    def daemons(self):
        return [self.containerd.proc.pid]

    def shims(self, table):
        return self.containerd.shims(table)


class Kubelet(OnContainerd):
    """kubelet standalone on `containerd` (see the module's doc for every flag and why)."""

    name = "kubelet + containerd"
    write, clear = Agent.write, Agent.clear

    def __init__(self, work, containerd, tag="", args=()):
        self.dir = os.path.join(work, f"kubelet{tag}")
        self.mdir = os.path.join(work, f"m-kubelet{tag}")
        self.containerd = containerd
        self.args = list(args)
        for sub in ("root", "logs", "varlog", "varlib", "sysctl"):
            os.makedirs(os.path.join(self.dir, sub))
        os.makedirs(self.mdir)
        port, self.ro_port = free_ports(2)
        with open(os.path.join(self.dir, "config.yaml"), "w") as f:
            f.write(f"""apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: {port}
readOnlyPort: {self.ro_port}
healthzPort: 0
authentication:
  anonymous: {{enabled: true}}
  webhook: {{enabled: false}}
authorization: {{mode: AlwaysAllow}}
cgroupDriver: cgroupfs
cgroupRoot: {CGROUP_ROOT}
containerRuntimeEndpoint: {containerd.endpoint}
podLogsDir: {self.dir}/logs
makeIPTablesUtilChains: false
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%
  nodefs.inodesFree: 1%
  imagefs.available: 1%
  imagefs.inodesFree: 1%
imageGCHighThresholdPercent: 100
""")
        mounts = []
        for name, value in KERNEL_TUNABLES.items():
            copy = os.path.join(self.dir, "sysctl", name.replace("/", "."))
            with open(copy, "w") as f:
                f.write(f"{value}\n")
            mounts.append(f"mount --bind {copy} /proc/sys/{name}")
        for d in ("log", "lib"):
            mounts.append(f"mount --bind {self.dir}/var{d} /var/{d}")
        self.script = " && ".join(mounts) + " && exec \"$@\""

    @staticmethod
    def make_cgroups():
        """The cgroup root in every v1 hierarchy (kubelet requires it to exist)."""
        for h in cgroup_hierarchies():
            d = h + CGROUP_ROOT
            os.makedirs(d, exist_ok=True)
            if os.path.basename(h) == "cpuset":
                for f in ("cpuset.cpus", "cpuset.mems"):
                    with open(os.path.join(d, f), "w") as w:
                        w.write(open(os.path.join(h, f)).read())

    def __enter__(self):
        self.make_cgroups()
        self.spawn()
        try:
            self.wait_serving()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def spawn(self):
        """Starts kubelet (its log appended to), without waiting for it."""
        self.log = open(os.path.join(self.dir, "kubelet.log"), "a")
        self.proc = subprocess.Popen(
            ["unshare", "-m", "--propagation", "slave", "sh", "-c", self.script, "kubelet",
             os.path.join(K8S_BIN, "kubelet"), "--config", os.path.join(self.dir, "config.yaml"),
             "--root-dir", os.path.join(self.dir, "root"), "--hostname-override", NODE,
             "--node-ip", node_ip(), "--pod-manifest-path", self.mdir, *self.args],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)
        self.pid = self.proc.pid

    def wait_serving(self):
        def answers():
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.ro_port, timeout=2)
                c.request("GET", "/pods")
                return c.getresponse().status == 200
            except OSError:
                return False
        wait_for("kubelet's read-only port", answers, 120, self.proc)

    def api(self):
        return TcpHTTP(self.ro_port)

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.clear()
        self.proc.terminate()
        self.proc.wait()
        self.containerd.remove_all()
        for h in cgroup_hierarchies(("cgroup", "cgroup2")):
            remove_cgroup_tree(h + CGROUP_ROOT)
        self.log.close()


class Staticlet(Agent):
    """bench/startup.py's agent, with the same --node-ip as kubelet and no healthz port."""

    def __init__(self, work, tag, args=()):
        super().__init__(work, tag, [*args, "--node-ip", node_ip(), "--healthz-port", "0"])

    def __enter__(self):
        super().__enter__()
        self.pid = self.proc.pid
        return self

    def api(self):
        return UnixHTTP(os.path.join(self.root, "staticlet.sock"))


class StaticletCri(OnContainerd, Staticlet):
    """staticlet on the private containerd."""

    name = "staticlet, CRI"

    def __init__(self, work, containerd):
        super().__init__(work, "-cri", ["--container-runtime-endpoint", containerd.endpoint])
        self.containerd = containerd


class StaticletEmbedded(Staticlet):
    """staticlet's embedded runtime: no daemon, a staticlet-shim per container."""

    name = "staticlet, embedded"

    def __init__(self, work):
        super().__init__(work, "-embedded")

    def daemons(self):
        return []

    def shims(self, table):
        return [p for p, (_, comm, cmd) in table.items() if comm == "staticlet-shim" and self.root in cmd]


# ------------------------------------------------------------------------------------ measuring
class Bench:
    def __init__(self, work, args):
        self.args = args
        self.fifo = Fifo(os.path.join(work, "fifo"))
        self.tcp = TcpLines()
        self.seq = 0
        self.rng = random.Random(18)

    def reset(self):
        """Before each peer: the same random pauses (names stay unique: crash pods leave a file)."""
        self.rng = random.Random(18)

    def name(self, kind):
        self.seq += 1
        return f"{kind}{self.seq}"

    def volume_pod(self, name, then=WAIT):
        return MANIFEST.format(name=name, fifo_dir=self.fifo.dir, then=then)

    def await_lines(self, source, names, timeout=300):
        """{name: arrival} for every name, in order of arrival (repeats of a name kept apart)."""
        got = {}
        deadline = time.time() + timeout
        while len(got) < len(names):
            if time.time() > deadline:
                raise RuntimeError(f"only {len(got)}/{len(names)} processes ran: {sorted(set(names) - set(got))[:5]}")
            for line, t in source.lines(1):
                if line in names:
                    got.setdefault(line, t)
        return got

    def start_one(self, peer, with_api=False):
        """One pod with the hostPath volume: (written -> process runs, written -> API Running and
        Ready or None)."""
        name = self.name("v")
        api = peer.api() if with_api else None
        peer.write(name, self.volume_pod(name))
        t0 = time.monotonic()
        started = ready = None
        deadline = time.time() + 120
        while started is None or (api and ready is None):
            if time.time() > deadline:
                raise RuntimeError(f"{peer.name}: {name} not running/ready in 120 s")
            for line, t in self.fifo.lines(0.02 if api else 1):
                if line == name:
                    started = t - t0
            if api and ready is None and name in ready_pods(api.get("/pods")):
                ready = time.monotonic() - t0
        if api:
            api.close()
        peer.clear()
        return started, ready

    def start_no_volume(self, peer):
        name = self.name("n")
        peer.write(name, NO_VOLUME.format(name=name, port=self.tcp.port, then=WAIT))
        t0 = time.monotonic()
        t = self.await_lines(self.tcp, {name}, 120)[name] - t0
        peer.clear()
        return t

    def burst(self, peer, n):
        """n manifests at once -> all processes run; then SETTLE s, then the CPU of the agent (and
        of everything) over the idle window and the PSS of everything. Returns (seconds, agent
        CPU %, PSS KiB, a line on what was counted)."""
        names = [self.name("b") for _ in range(n)]
        t0 = time.monotonic()
        for name in names:
            peer.write(name, self.volume_pod(name))
        got = self.await_lines(self.fifo, set(names))
        all_running = max(got.values()) - t0
        time.sleep(SETTLE)
        table = procs()
        # Agent, runtime daemon, shims, and the sandboxes' pause processes (the shims' children
        # that are not the containers' own sh/sleep).
        agent, daemons, shims = peer.pid, peer.daemons(), peer.shims(table)
        pause = [p for p, (ppid, comm, _) in table.items() if comm == "pause" and ppid in shims]
        every = [agent, *daemons, *shims, *pause]
        c0, w0 = {p: cpu_ticks(p) for p in every}, time.monotonic()
        time.sleep(self.args.idle)
        window = time.monotonic() - w0
        cpu = {p: (cpu_ticks(p) - c0[p]) / TICK / window * 100 for p in every}
        pss = {p: pss_kib(p) for p in every}
        rest = sum(pss[p] for p in every[1:])
        note = (f"PSS agent {pss[agent] / 1024:.1f} MiB + runtime {rest / 1024:.1f} MiB "
                f"({len(daemons)} daemon, {len(shims)} shims, {len(pause)} pause); "
                f"CPU all-in {sum(cpu.values()):.2f} % of a core")
        peer.clear()
        return all_running, cpu[agent], sum(pss.values()), note

    def crash_restart(self, peer):
        name = self.name("c")
        # Where relists find exits (containerd 1.6 sends no container events), a round that
        # started right after the previous restart would crash at the same point of the relist
        # period every time (each round takes about as long): a random pause, as for removals.
        time.sleep(self.rng.uniform(0.0, 1.0))
        peer.write(name, self.volume_pod(name, CRASH.format(name=name)))
        times = []
        deadline = time.time() + 120
        while len(times) < 2:
            if time.time() > deadline:
                raise RuntimeError(f"{peer.name}: {name} was not restarted in 120 s")
            times += [t for line, t in self.fifo.lines(1) if line == name]
        peer.clear()
        return times[1] - times[0]

    def removal(self, peer):
        name = self.name("r")
        hold = os.path.join(self.fifo.dir, f"{name}.hold")
        os.mkfifo(hold)
        peer.write(name, self.volume_pod(name, HOLD.format(name=name)))
        self.await_lines(self.fifo, {name}, 120)
        fd = os.open(hold, os.O_RDONLY | os.O_NONBLOCK)
        # Until the container has opened the write end (right after its line), a read says EOF;
        # once it has, EAGAIN.
        def writer_there():
            try:
                return os.read(fd, 64) != b""
            except BlockingIOError:
                return True
        wait_for(f"{name} holding its FIFO", writer_there, 60, interval=0.005)
        # A settled pod: its agent done starting it (a removal during the start waits for the
        # start's end first, in kubelet).
        api = peer.api()
        wait_for(f"{peer.name}: {name} Running and Ready", lambda: name in ready_pods(api.get("/pods")), 60)
        api.close()
        # kubelet acts on a removal at its next 1 s relist, and reports Ready right after one:
        # removing at once would always wait the whole second. A random pause puts the removal at
        # a random point of the relist period (the same pauses for every peer: seeded).
        time.sleep(self.rng.uniform(0.5, 1.5))
        poll = select.poll()
        poll.register(fd, select.POLLIN | select.POLLHUP)
        t0 = time.monotonic()
        os.remove(os.path.join(peer.mdir, f"{name}.yaml"))
        # POLLHUP once every writer (every process of the container) is gone.
        if not poll.poll(120_000):
            raise RuntimeError(f"{peer.name}: {name} still runs 120 s after its manifest was removed")
        gone = time.monotonic() - t0
        os.close(fd)
        os.remove(hold)
        peer.clear()
        return gone

    def measure(self, peer):
        a = self.args
        r = {}
        self.reset()

        def samples(what, xs):
            log(f"{peer.name}: {what}: " + " ".join(f"{x * 1000:.0f}" for x in xs) + " ms")
            return xs

        log(f"{peer.name}: warm-up pod")
        self.start_one(peer)
        log(f"{peer.name}: {a.rounds} x 1 pod (hostPath volume), process runs and API Ready")
        runs = [self.start_one(peer, with_api=True) for _ in range(a.rounds)]
        r["start_volume"] = pct(samples("process runs", [s for s, _ in runs]), 50)
        r["ready"] = pct(samples("Running and Ready", [rd for _, rd in runs]), 50)
        log(f"{peer.name}: {a.rounds} x 1 pod (no volume)")
        r["start_plain"] = pct(samples("process runs", [self.start_no_volume(peer) for _ in range(a.rounds)]), 50)
        log(f"{peer.name}: {a.pods} pods at once, then {SETTLE} s + {a.idle} s idle")
        r["burst"], r["cpu"], r["pss"], r["note"] = self.burst(peer, a.pods)
        log(f"{peer.name}: all running after {r['burst']:.2f} s, agent CPU {r['cpu']:.2f} %; {r['note']}")
        log(f"{peer.name}: {a.rounds} x crash -> first restart")
        r["crash"] = samples("restarted after", [self.crash_restart(peer) for _ in range(a.rounds)])
        log(f"{peer.name}: {a.rounds} x manifest removed -> process gone")
        r["removed"] = pct(samples("gone after", [self.removal(peer) for _ in range(a.rounds)]), 50)
        return r


def table(results, args):
    kinds = [k for k in ("kubelet", "cri", "embedded") if k in results]
    ms = lambda v: f"{v * 1000:.0f} ms" if v < 1 else f"{v:.2f} s"  # noqa: E731
    rows = [
        ("1 pod: manifest written -> process runs, p50 (hostPath volume)", "start_volume", ms),
        ("1 pod, no volume", "start_plain", ms),
        ("1 pod: -> API says Running and Ready, p50", "ready", ms),
        (f"{args.pods} pods at once: all processes running", "burst", ms),
        (f"everything with {args.pods} pods (agent, containerd, shims, pause), PSS", "pss",
         lambda v: f"{v / 1024:.0f} MiB"),
        # No tick in the window: below the resolution (one clock tick over the window).
        (f"agent CPU, {args.pods} idle pods ({args.idle:g} s)", "cpu",
         lambda v: f"{v:.2f} %" if v else f"< {100 / TICK / args.idle:.2f} %"),
        ("crash -> first restart, p50 (min-max)", "crash", None),
        ("manifest removed -> process gone, p50", "removed", ms),
    ]
    names = {"kubelet": "kubelet + containerd", "cri": "staticlet, CRI (same containerd)",
             "embedded": "staticlet, embedded"}
    ratio_cols = [k for k in ("cri", "embedded") if k in results] if "kubelet" in results else []
    short = {"cri": "staticlet CRI", "embedded": "staticlet embedded"}
    head = ["metric", *(names[k] for k in kinds), *(f"kubelet / {short[k]}" for k in ratio_cols)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, key, fmt in rows:
        cells, vals = [], {}
        for k in kinds:
            v = results[k][key]
            if key == "crash":
                vals[k] = pct(v, 50)
                cells.append(f"{ms(vals[k])} ({ms(min(v))}-{ms(max(v))})")
            else:
                vals[k] = v
                cells.append(fmt(v))
        ratios = [f"{vals['kubelet'] / vals[k]:.1f}x" if vals[k] else "-" for k in ratio_cols]
        lines.append("| " + " | ".join([label, *cells, *ratios]) + " |")
    return "\n".join(lines)


def main():
    global CRICTL, K8S_BIN
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, help="pods one after the other, per row (default 20)")
    p.add_argument("--pods", type=int, help="pods of the burst (default 50)")
    p.add_argument("--idle", type=float, help="seconds of the agent-CPU window (default 30)")
    p.add_argument("--quick", action="store_true", help="defaults of 3 rounds, 10 pods, 5 s idle")
    p.add_argument("--peers", default="kubelet,cri,embedded")
    args = p.parse_args()
    for key, full, quick in (("rounds", 20, 3), ("pods", 50, 10), ("idle", 30.0, 5.0)):
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)
    kinds = args.peers.split(",")
    if os.geteuid() != 0:
        sys.exit("run as root")
    K8S_BIN = os.environ.get("STATICLET_K8S_BIN") or subprocess.run(
        [os.path.join(REPO, "scripts/build-k8s.sh"), "--with-node"], check=True,
        stdout=subprocess.PIPE, text=True).stdout.strip().splitlines()[-1]
    CRICTL = os.path.join(K8S_BIN, "crictl")
    need = ["containerd", "ctr", "runc", "unshare"]
    missing = [b for b in need if not shutil.which(b)]
    if ("kubelet" in kinds or "cri" in kinds) and (missing or not os.access(CRICTL, os.X_OK)):
        sys.exit(f"missing: {missing} / {CRICTL} (scripts/deps.sh, scripts/build-k8s.sh --with-node)")
    if not os.access(BIN, os.X_OK):
        sys.exit(f"no staticlet at {BIN} (STATICLET_BIN)")
    work = tempfile.mkdtemp(prefix="staticlet-peers-")
    if work.startswith(("/var/lib/", "/var/log/")):
        sys.exit(f"{work}: kubelet's mount namespace hides /var/lib and /var/log: set TMPDIR elsewhere")
    sh(os.path.join(REPO, "scripts/busybox-image.sh"), os.path.join(work, "busybox.tar"))
    bench = Bench(work, args)
    results = {}
    ok = False
    try:
        if "kubelet" in kinds or "cri" in kinds:
            with Containerd(work) as containerd:
                if "kubelet" in kinds:
                    with Kubelet(work, containerd) as k:
                        results["kubelet"] = bench.measure(k)
                if "cri" in kinds:
                    with StaticletCri(work, containerd) as s:
                        results["cri"] = bench.measure(s)
        if "embedded" in kinds:
            with StaticletEmbedded(work) as s:
                results["embedded"] = bench.measure(s)
        ok = True
    finally:
        if ok and not os.environ.get("STATICLET_BENCH_KEEP"):
            shutil.rmtree(work, ignore_errors=True)
        else:
            log(f"kept {work} (kubelet/kubelet.log, containerd/containerd.log, logs*/)")
    print(f"{args.rounds} rounds, {args.pods} pods; staticlet {BIN}; kubelet, crictl from {K8S_BIN}")
    print(table(results, args))
    for k, r in results.items():
        print(f"{k}, {args.pods} pods: {r['note']}")


if __name__ == "__main__":
    main()
