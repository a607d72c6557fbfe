#!/usr/bin/env python3
"""The control plane's boot time, per milestone (issue 18 item 7): kubeadm's four static pods
(etcd, kube-apiserver, kube-controller-manager, kube-scheduler) booted by staticlet, beside the
same four binaries started directly as host processes (the floor) and beside kubelet +
containerd, on one machine in one go.

Setup, once: the real kubeadm (`kubeadm init phase certs all`, `kubeconfig all`, `etcd local`,
`control-plane all`) writes certificates, kubeconfigs and the four manifests in a private mount
namespace whose /etc is an overlay (the machine's /etc is never written); they are copied into the
work dir under /tmp and every path /etc/kubernetes and /usr/libexec/kubernetes in them is rewritten
to the work dir's copy (host paths, container paths and flags alike: kubeadm mounts each host path
at the same path in the container, so the floor's host processes read the same files with the same
flags). etcd's data dir is the work dir's `etcd-data`, emptied before every round. The node name is
`bench`, the advertise address the node's IP (kubeadm refuses loopback), the ports kubeadm's:
2379/2380/2381, 6443, 10257, 10259 (the script refuses to start if one of them answers). The
manifests are used as kubeadm writes them: no `staticlet.io/after` ordering.

Columns:
  floor     the four binaries of scripts/build-k8s.sh (those the images hold), started directly as
            host processes with the manifests' command lines (parsed from the manifests), all four
            at t0
  embedded  staticlet's embedded runtime, `--kubeconfig` kubeadm's kubelet.conf (so it publishes
            the mirror pods), the images of scripts/control-plane-images.sh imported once
  kubelet   kubelet v1.34 on a private containerd (bench/peers.py's Kubelet and Containerd: every
            flag and why is in its header), also with `--kubeconfig` kubelet.conf, so that it too
            registers the Node and publishes mirror pods; the same images imported with `ctr`
  cri       (optional, `--columns ...,cri`) staticlet with the CRI backend on that containerd

Each round and column: the agent is started on an empty manifest directory and waited for (its
API answers); t0 is the moment the four manifests are written (renamed into place, one after the
other) -- for the floor, the moment the four processes are started. Then one poller per milestone,
all in parallel from t0, each polling every 20 ms over a kept-alive connection (mirrors: 50 ms):
  etcd serving        https://127.0.0.1:2379/health answers 200 {"health":"true"} (TLS, the
                      API server's etcd client certificate)
  apiserver /readyz   https://NODE_IP:6443/readyz answers 200 (super-admin.conf's client cert)
  controller-manager  https://127.0.0.1:10257/healthz answers 200
  scheduler           https://127.0.0.1:10259/healthz answers 200
  all four healthy    the last of those four
  4 mirrors Ready     the API's kube-system pods of node `bench`: the four mirror pods Ready, each
                      with its containers started after t0 (agents only)
Then the node reboot: the agent, its runtime's daemon and shims and every process of the four
containers are killed with SIGKILL (power loss), the mounts under the agent's and runtime's
directories are unmounted, the containers' cgroups and containerd's state directory (a tmpfs at
/run on a real node) removed: what a reboot leaves is the agents' disk state, the manifests and
etcd's data. t0 is the start of the cold agent (kubelet: containerd, then kubelet once containerd serves
CRI; the floor: the four processes started again on the same data), then the same pollers. Then
the manifests are removed and the agent stopped.

Usage (root; release build of staticlet with its shim, scripts/build-k8s.sh [--with-node]):
    bench/controlplane.py [--rounds 3] [--columns floor,embedded,kubelet[,cri]] [--quick]
--quick: 1 round, floor and embedded only (checks the script itself). STATICLET_BIN as
bench/startup.py's; STATICLET_K8S_BIN the bin dir of scripts/build-k8s.sh (kubelet and crictl
from `--with-node` for the kubelet and cri columns). Each round runs every column (boot, then
reboot) before the next round, so that slow drifts of the machine touch all columns alike.
Prints a table of median (min-max) seconds per cell and the ratios to the floor. The work dir
(agents' logs at RUST_LOG=info, kubelet's and containerd's, the floor's processes') is kept
with STATICLET_BENCH_KEEP=1 or when something fails. Not run in CI.
"""
import argparse, base64, datetime, http.client, json, os, shutil, signal, socket, ssl, subprocess, sys, tempfile, threading, time

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peers  # noqa: E402
from peers import CGROUP_ROOT, NODE, Containerd, Kubelet, cgroup_hierarchies, node_ip, procs, remove_cgroup_tree, wait_for  # noqa: E402
from startup import BIN, REPO, Agent, UnixHTTP, sh  # noqa: E402

COMPONENTS = ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"]
FIXED_PORTS = [2379, 2380, 2381, 6443, 10257, 10259]
POLL, MIRROR_POLL = 0.02, 0.05
BOOT_TIMEOUT = 300
MILESTONES = [
    ("etcd", "etcd serving (2379 /health 200)"),
    ("readyz", "kube-apiserver /readyz 200"),
    ("kcm", "controller-manager /healthz 200 (10257)"),
    ("sched", "scheduler /healthz 200 (10259)"),
    ("healthy", "all four healthy"),
    ("mirrors", "4 mirror pods Ready in the API"),
]


def log(msg):
    print(f"[cpboot {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------ the setup
class Cluster:
    """kubeadm's certificates, kubeconfigs and manifests, in `work`/kubernetes (see the doc)."""

    def __init__(self, work, k8s_bin):
        self.work, self.bin, self.ip = work, k8s_bin, node_ip()
        if self.ip.startswith("127."):
            sys.exit("no node IP (kubeadm refuses a loopback advertise address)")
        self.dir = os.path.join(work, "kubernetes")
        self.data = os.path.join(work, "etcd-data")
        ver = sh(os.path.join(k8s_bin, "kubeadm"), "version", "-o", "short").stdout.strip()
        for d in ("etc-upper", "etc-work", "etcd-data"):
            os.makedirs(os.path.join(work, d))
        config = os.path.join(work, "kubeadm.yaml")
        with open(config, "w") as f:
            f.write(f"""apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
localAPIEndpoint: {{advertiseAddress: {self.ip}, bindPort: 6443}}
nodeRegistration: {{name: {NODE}}}
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
kubernetesVersion: {ver}
clusterName: staticlet-cpboot
etcd: {{local: {{dataDir: {self.data}}}}}
""")
        phases = " && ".join(f"{k8s_bin}/kubeadm init phase {p} --config {config}"
                             for p in ("certs all", "kubeconfig all", "etcd local", "control-plane all"))
        sh("unshare", "-m", "--propagation", "private", "sh", "-c",
           f"mount -t overlay overlay -o lowerdir=/etc,upperdir={work}/etc-upper,workdir={work}/etc-work /etc"
           f" && {phases}")
        shutil.copytree(os.path.join(work, "etc-upper/kubernetes"), self.dir)
        shutil.rmtree(os.path.join(work, "etc-upper"), ignore_errors=True)
        # Every path kubeadm wrote into its files, to the work dir (host and container paths
        # alike). /usr/libexec/kubernetes is the controller-manager's flexvolume dir, a
        # DirectoryOrCreate host path that would otherwise be made on the machine.
        rewrite = {"/etc/kubernetes": self.dir, "/usr/libexec/kubernetes": os.path.join(work, "libexec-kubernetes")}
        self.manifests = {}
        for name in os.listdir(self.dir) + [f"manifests/{m}" for m in os.listdir(os.path.join(self.dir, "manifests"))]:
            path = os.path.join(self.dir, name)
            if not os.path.isfile(path):
                continue
            text = open(path).read()
            for a, b in rewrite.items():
                text = text.replace(a, b)
            with open(path, "w") as f:
                f.write(text)
            if name.startswith("manifests/"):
                self.manifests[os.path.basename(name)[:-len(".yaml")]] = text
        assert sorted(self.manifests) == sorted(COMPONENTS), sorted(self.manifests)
        self.commands = {c: self.command(c) for c in COMPONENTS}
        self.creds()

    def command(self, component):
        """The container's command line, for the floor: its host paths must be where the
        container sees them."""
        pod = yaml.safe_load(self.manifests[component])
        (c,) = pod["spec"]["containers"]
        vols = {v["name"]: v.get("hostPath", {}).get("path") for v in pod["spec"].get("volumes") or []}
        for m in c.get("volumeMounts") or []:
            if vols.get(m["name"]) != m["mountPath"]:
                sys.exit(f"{component}: volume {m['name']} mounted at {m['mountPath']}, host path "
                         f"{vols.get(m['name'])}: the floor's processes would not see it")
        cmd = [*(c.get("command") or []), *(c.get("args") or [])]
        return [os.path.join(self.bin, cmd[0]), *cmd[1:]]

    def creds(self):
        """super-admin.conf's client certificate (system:masters), as files for Python's TLS."""
        conf = yaml.safe_load(open(os.path.join(self.dir, "super-admin.conf")))
        user = conf["users"][0]["user"]
        self.admin_crt = os.path.join(self.work, "admin.crt")
        self.admin_key = os.path.join(self.work, "admin.key")
        for path, key in ((self.admin_crt, "client-certificate-data"), (self.admin_key, "client-key-data")):
            with open(path, "wb") as f:
                f.write(base64.b64decode(user[key]))
        os.chmod(self.admin_key, 0o600)

    def pki(self, p):
        return os.path.join(self.dir, "pki", p)

    def fresh_data(self):
        shutil.rmtree(self.data)
        os.makedirs(self.data, mode=0o700)

    def write(self, mdir):
        """The four manifests into `mdir`, each whole (renamed into place)."""
        for c in COMPONENTS:
            tmp = os.path.join(mdir, f".{c}.yaml")
            with open(tmp, "w") as f:
                f.write(self.manifests[c])
            os.rename(tmp, os.path.join(mdir, f"{c}.yaml"))


# ------------------------------------------------------------------------------------- pollers
class Poller(threading.Thread):
    """GETs `path` every `interval` s from its start on one kept-alive TLS connection (a new one
    after an error) until `ok(status, body)`; `at` is then the time since `t0`."""

    def __init__(self, t0, stop, host, port, path, ctx, ok=lambda st, body: st == 200, interval=POLL):
        super().__init__(daemon=True)
        self.t0, self.stop, self.host, self.port, self.path = t0, stop, host, port, path
        self.ctx, self.ok, self.interval, self.at = ctx, ok, interval, None

    def run(self):
        conn = None
        while not self.stop.is_set():
            try:
                if conn is None:
                    conn = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=2)
                conn.request("GET", self.path)
                r = conn.getresponse()
                body = r.read()
                if self.ok(r.status, body):
                    self.at = time.monotonic() - self.t0
                    break
            except (OSError, http.client.HTTPException):
                if conn is not None:
                    conn.close()
                conn = None
            self.stop.wait(self.interval)
        if conn is not None:
            conn.close()


def tls(ca=None, cert=None, key=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    if ca:
        ctx.load_verify_locations(ca)
    else:
        ctx.verify_mode = ssl.CERT_NONE  # the components' self-signed serving certificates
    if cert:
        ctx.load_cert_chain(cert, key)
    return ctx


def rfc3339(s):
    return datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc).timestamp()


def mirrors_ready(since):
    """ok() for the kube-system pod list: the four mirror pods of the node Ready, their containers
    started at or after the wall-clock second `since` (after a reboot the API first shows the
    statuses from before it)."""
    def ok(status, body):
        if status != 200:
            return False
        ready = set()
        for p in json.loads(body).get("items") or []:
            meta, st = p["metadata"], p.get("status") or {}
            if "kubernetes.io/config.mirror" not in (meta.get("annotations") or {}):
                continue
            cond = any(c["type"] == "Ready" and c["status"] == "True" for c in st.get("conditions") or [])
            cs = st.get("containerStatuses") or []
            fresh = cs and all(c.get("ready") and rfc3339((c.get("state") or {}).get("running", {}).get(
                "startedAt", "1970-01-01T00:00:00Z")) >= since for c in cs)
            if cond and fresh:
                ready.add(meta["name"].removesuffix(f"-{NODE}"))
        return ready >= set(COMPONENTS)
    return ok


def measure(cluster, t0, wall0, mirrors, proc=None):
    """The milestones from `t0` (monotonic; `wall0` the same instant on the wall clock), polled
    in parallel; {key: seconds}. `proc`: the agent, whose exit fails the round."""
    stop = threading.Event()
    etcd_ok = lambda st, body: st == 200 and b'"true"' in body  # noqa: E731
    etcd = tls(cluster.pki("etcd/ca.crt"), cluster.pki("apiserver-etcd-client.crt"), cluster.pki("apiserver-etcd-client.key"))
    api = tls(cluster.pki("ca.crt"), cluster.admin_crt, cluster.admin_key)
    polls = {
        "etcd": Poller(t0, stop, "127.0.0.1", 2379, "/health", etcd, etcd_ok),
        "readyz": Poller(t0, stop, cluster.ip, 6443, "/readyz", api),
        "kcm": Poller(t0, stop, "127.0.0.1", 10257, "/healthz", tls()),
        "sched": Poller(t0, stop, "127.0.0.1", 10259, "/healthz", tls()),
    }
    if mirrors:
        polls["mirrors"] = Poller(t0, stop, cluster.ip, 6443,
                                  f"/api/v1/namespaces/kube-system/pods?fieldSelector=spec.nodeName%3D{NODE}",
                                  api, mirrors_ready(int(wall0)), MIRROR_POLL)
    for p in polls.values():
        p.start()
    deadline = time.monotonic() + BOOT_TIMEOUT
    try:
        while any(p.is_alive() for p in polls.values()):
            if time.monotonic() > deadline:
                raise RuntimeError("not within %d s: %s" % (BOOT_TIMEOUT, [k for k, p in polls.items() if p.at is None]))
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"the agent exited ({proc.returncode})")
            time.sleep(0.1)
    finally:
        stop.set()
    out = {k: p.at for k, p in polls.items()}
    out["healthy"] = max(out[k] for k in ("etcd", "readyz", "kcm", "sched"))
    return out


# ---------------------------------------------------------------------------------- power loss
def kill9(pids):
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def alive(pid):
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def in_cgroups(fragment):
    """Pids of the processes whose cgroup path contains `fragment`."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if fragment in open(f"/proc/{d}/cgroup").read():
                    out.append(int(d))
            except OSError:
                pass
    return out


def umount_under(d):
    mounts = [l.split()[4] for l in open("/proc/self/mountinfo")]
    for m in sorted((m for m in mounts if m == d or m.startswith(d + "/")), reverse=True):
        subprocess.run(["umount", "-l", m], capture_output=True)


def ports_free():
    for port in FIXED_PORTS:
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return port
    return None


def power_loss(pids, cgroup_fragments, dirs):
    """SIGKILL to `pids` and to every process in a cgroup matching one of `cgroup_fragments`
    (until none is left), then what a reboot clears: the mounts under `dirs`."""
    kill9(pids)
    deadline = time.monotonic() + 30
    while True:
        left = [p for f in cgroup_fragments for p in in_cgroups(f) if alive(p)] + [p for p in pids if alive(p)]
        if not left:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes left after SIGKILL: {left}")
        kill9(left)
        time.sleep(0.02)
    for d in dirs:
        umount_under(d)


# ------------------------------------------------------------------------------------- columns
# A column: `name`, `mirrors` (whether it publishes mirror pods), `prepare()` (its agent up on an
# empty manifest dir), `boot()` (t0: the manifests written, or the floor's processes started),
# `power_loss()`, `cold()` (t0: the agent, with its runtime, started again), `teardown()`, and
# `proc` (the process whose exit fails a measurement, or None).
class Floor:
    name, mirrors, proc = "floor", False, None

    def __init__(self, work, cluster):
        self.cluster, self.dir, self.procs = cluster, os.path.join(work, "floor"), []
        os.makedirs(self.dir)

    def prepare(self):
        pass

    def boot(self):
        t0 = time.monotonic()
        for c in COMPONENTS:
            with open(os.path.join(self.dir, f"{c}.log"), "a") as logf:
                self.procs.append(subprocess.Popen(self.cluster.commands[c], cwd="/", stdin=subprocess.DEVNULL,
                                                   stdout=logf, stderr=logf, start_new_session=True))
        return t0

    def power_loss(self):
        kill9([p.pid for p in self.procs])
        for p in self.procs:
            p.wait()
        self.procs = []

    cold = boot

    def teardown(self):
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs = []


class StaticletColumn:
    """`staticlet run` on a manifest dir of its own, with kubeadm's kubelet.conf, at RUST_LOG=info
    (log: `staticlet-TAG.log` in the work dir)."""

    mirrors = True
    write, containers_left = Agent.write, Agent.containers_left

    def __init__(self, work, cluster, tag, args=()):
        self.cluster, self.tag = cluster, tag
        self.root, self.mdir = os.path.join(work, f"root-{tag}"), os.path.join(work, f"m-{tag}")
        self.logs, self.logfile = os.path.join(work, f"logs-{tag}"), os.path.join(work, f"staticlet-{tag}.log")
        os.makedirs(self.mdir)
        os.makedirs(os.path.join(work, "no-cni"), exist_ok=True)
        self.args = [BIN, "run", "--hostname-override", NODE, "--node-ip", cluster.ip,
                     "--pod-manifest-path", self.mdir, "--root-dir", self.root, "--log-dir", self.logs,
                     "--cni-conf-dir", os.path.join(work, "no-cni"),
                     "--kubeconfig", os.path.join(cluster.dir, "kubelet.conf"),
                     # No node API (10250) nor healthz port (10248): fixed ports of the machine.
                     "--port", "0", "--healthz-port", "0", *args]
        self.proc = None

    def spawn(self):
        env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "info"))
        with open(self.logfile, "a") as logf:
            self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=logf, env=env)

    def prepare(self):
        self.spawn()
        sock = os.path.join(self.root, "staticlet.sock")

        def answers():
            try:
                c = UnixHTTP(sock)
                c.get("/pods")
                c.close()
                return True
            except (OSError, RuntimeError, http.client.HTTPException):
                return False
        wait_for(f"{self.name}: the agent's API", answers, 60, self.proc)

    def boot(self):
        t0 = time.monotonic()
        self.cluster.write(self.mdir)
        return t0

    def pod_uids(self):
        c = UnixHTTP(os.path.join(self.root, "staticlet.sock"))
        body = json.loads(c.get("/pods"))
        c.close()
        return [p["metadata"]["uid"] for p in body.get("items") or []]

    def clear(self, timeout=120):
        Agent.clear(self, timeout)
        if self.containers_left():
            raise RuntimeError(f"{self.name}: containers left {timeout} s after the manifests' removal")

    def teardown(self):
        if self.proc.poll() is None:
            self.clear()
        self.proc.terminate()
        self.proc.wait()
        umount_under(os.path.join(self.root, "runtime/sandboxes"))


class Embedded(StaticletColumn):
    name = "staticlet embedded"

    def __init__(self, work, cluster, tars):
        super().__init__(work, cluster, "embedded")
        for tar in tars:
            sh(BIN, "images", "import", tar, "--root-dir", self.root)

    def power_loss(self):
        uids = self.pod_uids()
        shims = [p for p, (_, comm, cmd) in procs().items() if comm == "staticlet-shim" and self.root in cmd]
        power_loss([self.proc.pid, *shims], [f"/staticlet/pod{u}/" for u in uids], [self.root])
        self.proc.wait()
        for h in cgroup_hierarchies(("cgroup", "cgroup2")):
            for u in uids:
                remove_cgroup_tree(f"{h}/staticlet/pod{u}")

    def cold(self):
        t0 = time.monotonic()
        self.spawn()
        return t0


class OnContainerd:
    """Power loss of the columns on the private containerd: the agent, containerd, its shims and
    the containers killed; containerd's mounts and state dir (a tmpfs on a real node) gone."""

    def power_loss(self):
        cd = self.containerd
        power_loss([self.proc.pid, cd.proc.pid, *cd.shims(procs())], self.cgroup_fragments(), [cd.dir])
        self.proc.wait()
        cd.proc.wait()
        cd.log.close()
        state = os.path.join(cd.dir, "state")
        shutil.rmtree(state)
        os.makedirs(state)

    def cold(self):
        # The agent once containerd serves CRI, as systemd orders them on a node: kubelet exits
        # at once when the socket answers before containerd's CRI is initialized.
        t0 = time.monotonic()
        self.containerd.spawn()
        self.containerd.wait_serving()
        self.spawn()
        return t0


class KubeletColumn(OnContainerd):
    name, mirrors = "kubelet + containerd", True

    def __init__(self, work, cluster, containerd):
        self.containerd = containerd
        self.k = Kubelet(work, containerd, "-cp", ["--kubeconfig", os.path.join(cluster.dir, "kubelet.conf")])
        self.cluster, self.mdir = cluster, self.k.mdir

    @property
    def proc(self):
        return self.k.proc

    def prepare(self):
        self.k.__enter__()

    def boot(self):
        t0 = time.monotonic()
        self.cluster.write(self.mdir)
        return t0

    def cgroup_fragments(self):
        return [f"{CGROUP_ROOT}/"]

    def spawn(self):
        Kubelet.make_cgroups()
        self.k.spawn()

    def power_loss(self):
        self.k.log.close()
        super().power_loss()
        for h in cgroup_hierarchies(("cgroup", "cgroup2")):
            remove_cgroup_tree(h + CGROUP_ROOT)

    def teardown(self):
        self.k.__exit__(None, None, None)


class CriColumn(OnContainerd, StaticletColumn):
    name = "staticlet CRI"

    def __init__(self, work, cluster, containerd):
        StaticletColumn.__init__(self, work, cluster, "cri", ["--container-runtime-endpoint", containerd.endpoint])
        self.containerd = containerd

    def cgroup_fragments(self):
        return [f"/staticlet/pod{u}/" for u in self.uids]

    def power_loss(self):
        self.uids = self.pod_uids()
        super().power_loss()
        for h in cgroup_hierarchies(("cgroup", "cgroup2")):
            for u in self.uids:
                remove_cgroup_tree(f"{h}/staticlet/pod{u}")

    def containers_left(self):
        return self.containerd.running()

    def teardown(self):
        StaticletColumn.teardown(self)
        self.containerd.remove_all()


# ------------------------------------------------------------------------------------- the run
def fmt(xs):
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return "-"
    med = xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2
    return (f"{med:.2f} s" if len(xs) == 1 else f"{med:.2f} s ({xs[0]:.2f}-{xs[-1]:.2f})"), med


def table(results, keys, names):
    head = ["milestone (from t0)", *(names[k] for k in keys),
            *(f"{names[k]} / floor" for k in keys if k != "floor" and "floor" in keys)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for phase, label in (("boot", "manifests written"), ("reboot", "node reboot, agent started cold")):
        for m, what in MILESTONES:
            cells, meds = [], {}
            for k in keys:
                r = fmt([run.get(m) for run in results[k][phase]])
                cells.append(r if r == "-" else r[0])
                meds[k] = None if r == "-" else r[1]
            if all(c == "-" for c in cells):
                continue
            ratios = [f"{meds[k] / meds['floor']:.2f}x" if meds[k] and meds.get("floor") else "-"
                      for k in keys if k != "floor" and "floor" in keys]
            lines.append("| " + " | ".join([f"{label}: {what}", *cells, *ratios]) + " |")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, help="rounds (default 3; --quick 1)")
    p.add_argument("--columns", help="of floor,embedded,kubelet,cri (default floor,embedded,kubelet)")
    p.add_argument("--quick", action="store_true", help="1 round, floor and embedded")
    args = p.parse_args()
    rounds = args.rounds or (1 if args.quick else 3)
    keys = (args.columns or ("floor,embedded" if args.quick else "floor,embedded,kubelet")).split(",")
    if set(keys) - {"floor", "embedded", "kubelet", "cri"}:
        sys.exit(f"unknown column in {keys}")
    if os.geteuid() != 0:
        sys.exit("run as root")
    if not os.access(BIN, os.X_OK):
        sys.exit(f"no staticlet at {BIN} (STATICLET_BIN)")
    on_containerd = bool({"kubelet", "cri"} & set(keys))
    k8s_bin = os.environ.get("STATICLET_K8S_BIN") or subprocess.run(
        [os.path.join(REPO, "scripts/build-k8s.sh"), *(["--with-node"] if on_containerd else [])],
        check=True, stdout=subprocess.PIPE, text=True).stdout.strip().splitlines()[-1]
    peers.K8S_BIN, peers.CRICTL = k8s_bin, os.path.join(k8s_bin, "crictl")
    if on_containerd and not (os.access(peers.CRICTL, os.X_OK) and os.access(os.path.join(k8s_bin, "kubelet"), os.X_OK)):
        sys.exit(f"no kubelet/crictl in {k8s_bin} (scripts/build-k8s.sh --with-node)")
    busy = ports_free()
    if busy:
        sys.exit(f"port {busy} answers on this machine: the control plane needs kubeadm's fixed ports")
    work = tempfile.mkdtemp(prefix="staticlet-cpboot-", dir="/tmp")
    log(f"work dir {work}; staticlet {BIN}; Kubernetes binaries {k8s_bin}")
    names = {"floor": "floor (host processes)", "embedded": "staticlet embedded",
             "kubelet": "kubelet + containerd", "cri": "staticlet CRI (same containerd)"}
    results = {k: {"boot": [], "reboot": []} for k in keys}
    ok, containerd, cols = False, None, {}
    try:
        cluster = Cluster(work, k8s_bin)
        log(f"kubeadm's manifests in {cluster.dir}/manifests; node IP {cluster.ip}")
        tars = [line.split()[0] for line in
                sh("bash", os.path.join(REPO, "scripts/control-plane-images.sh"), os.path.join(work, "images"), k8s_bin).stdout.splitlines()]
        if on_containerd:
            containerd = Containerd(work).__enter__()
            for tar in tars:
                containerd.import_image(tar)
        for k in keys:
            cols[k] = {"floor": lambda: Floor(work, cluster), "embedded": lambda: Embedded(work, cluster, tars),
                       "kubelet": lambda: KubeletColumn(work, cluster, containerd),
                       "cri": lambda: CriColumn(work, cluster, containerd)}[k]()
        for r in range(rounds):
            for k in keys:
                col = cols[k]
                cluster.fresh_data()
                col.prepare()
                try:
                    for phase in ("boot", "reboot"):
                        if phase == "reboot":
                            col.power_loss()
                            wait_for("the fixed ports released", lambda: ports_free() is None, 30)
                        wall0 = time.time()
                        t0 = col.boot() if phase == "boot" else col.cold()
                        m = measure(cluster, t0, wall0, col.mirrors, col.proc)
                        results[k][phase].append(m)
                        log(f"round {r + 1}, {col.name}, {phase}: " +
                            ", ".join(f"{key} {v:.2f} s" for key, v in m.items() if v is not None))
                finally:
                    col.teardown()
        ok = True
    finally:
        if containerd is not None:
            containerd.__exit__(None, None, None)
        if ok and not os.environ.get("STATICLET_BENCH_KEEP"):
            shutil.rmtree(work, ignore_errors=True)
        else:
            log(f"kept {work}")
    print(f"{rounds} rounds; staticlet {BIN}; Kubernetes binaries {k8s_bin}; median (min-max) of the rounds")
    print(table(results, keys, names))


if __name__ == "__main__":
    main()
