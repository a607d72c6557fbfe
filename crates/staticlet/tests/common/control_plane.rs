//! The fixture shared by the self-hosted control-plane tests (`control_plane_e2e.rs`,
//! `kubeadm_init_e2e.rs`, `kubeadm_join_e2e.rs`): a node in a private mount namespace whose
//! `/etc` and `/var/lib` are overlays (kubeadm writes `/etc/kubernetes` and `/var/lib/kubelet`
//! there, never on the machine), whose `/var/lib/etcd` is its own directory and whose
//! `/run/staticlet` is a private tmpfs (the CRI socket); on the machine's network or in a network
//! namespace of its own ([`Node::isolated`], two of them joined by [`link`]); the control-plane
//! images imported into staticlet's store; the agent run in those namespaces as kubeadm's
//! systemd drop-in runs it; kubeadm and kubectl run there; readers of the local and mirror pods;
//! cleanup that leaves nothing running; and the timings report. Included with `#[path]` by each
//! test.
// Each test uses a subset of these.
#![allow(dead_code)]
// Real processes in real time: std::time::Instant is right here.
#![allow(clippy::disallowed_types)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Preflight checks of `kubeadm init` and `kubeadm join` that cannot pass in these tests'
/// sandboxes, each with the reason.
pub const IGNORED_PREFLIGHT: [(&str, &str); 1] = [(
    "KubeletVersion",
    "kubeadm runs a `kubelet` binary to read its version; the node agent here is staticlet",
)];

/// [`IGNORED_PREFLIGHT`] as kubeadm's `--ignore-preflight-errors` value.
pub fn ignored_preflight() -> String {
    IGNORED_PREFLIGHT
        .iter()
        .map(|(check, _)| *check)
        .collect::<Vec<_>>()
        .join(",")
}

/// Imports image archives into the staticlet store under `root`.
pub fn import_archives(root: &Path, tars: &[String]) {
    import_archives_with(&current_bin(), root, tars)
}

/// [`import_archives`] with the staticlet binary `bin` (an earlier build's store format).
pub fn import_archives_with(bin: &Path, root: &Path, tars: &[String]) {
    for tar in tars {
        let out = Command::new(bin)
            .args(["images", "import", tar, "--root-dir"])
            .arg(root)
            .output()
            .unwrap();
        assert!(out.status.success(), "import {tar}: {}", text(&out));
    }
}

/// Connects two nodes made by [`Node::isolated`] with a veth pair: `a` at `a_ip`, `b` at
/// `b_ip` (both in one /24), each the other's default route (the node's address is the
/// default route's source, as on a machine); each node's name resolves to its address on both
/// (their /etc/hosts, as a cluster's DNS would: kubeadm's preflight looks the node's name up).
pub fn link(a: &Node, a_ip: &str, b: &Node, b_ip: &str) {
    assert!(a.netns && b.netns, "link needs two isolated nodes");
    let (ia, ib) = (
        format!("kj{}a", a.holder.id()),
        format!("kj{}b", a.holder.id()),
    );
    let out = Command::new("ip")
        .args(["link", "add", &ia, "netns", &a.holder.id().to_string()])
        .args(["type", "veth", "peer", "name", &ib, "netns"])
        .arg(b.holder.id().to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "ip link add: {}", text(&out));
    for (node, dev, ip, peer) in [(a, &ia, a_ip, b_ip), (b, &ib, b_ip, a_ip)] {
        node.ns_sh(&format!(
            "ip addr add {ip}/24 dev {dev} && ip link set {dev} up \
             && ip route add default via {peer} \
             && printf '%s %s\\n%s %s\\n' {a_ip} {an} {b_ip} {bn} >> /etc/hosts",
            an = a.name,
            bn = b.name,
        ));
    }
}

/// The four control-plane components, in kubeadm's manifest names.
pub const COMPONENTS: [&str; 4] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
];

pub fn staticlet() -> Command {
    Command::new(env!("CARGO_BIN_EXE_staticlet"))
}

/// The staticlet binary of this build.
pub fn current_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_staticlet"))
}

pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../scripts")
        .join(name)
}

pub fn text(out: &Output) -> String {
    format!(
        "{} {}",
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    )
}

/// Why these tests cannot run here (not root, no Kubernetes binaries), printed as the skip.
pub fn skip_reason() -> Option<String> {
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
    if !root {
        return Some("the embedded runtime needs root".into());
    }
    staticlet_k8s_testenv::skip_reason()
}

/// A free TCP port on all addresses (the API server binds 0.0.0.0).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The source address of the default route (kubeadm refuses loopback advertise addresses).
pub fn host_ip() -> String {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    s.connect("192.0.2.254:9").unwrap();
    s.local_addr().unwrap().ip().to_string()
}

pub struct Node {
    pub name: String,
    pub dir: tempfile::TempDir,
    pub bin: PathBuf,
    /// A process holding the private mount namespace (`sleep infinity` under `unshare`).
    pub holder: Child,
    pub agent: Option<Child>,
    /// The binary [`Node::start_agent`] runs: this build's unless a test sets an earlier
    /// build's (an upgrade of the agent itself). The cleanup always uses this build's.
    pub agent_bin: PathBuf,
    pub log_n: usize,
    /// Whether the node has its own network namespace (else it shares the machine's).
    pub netns: bool,
    host_had_kubernetes: bool,
}

impl Node {
    /// A node named `name` in a fresh private mount namespace (see the module doc), on the
    /// machine's network.
    pub fn new(name: &str) -> Node {
        Node::create(name, false)
    }

    /// A node named `name` in a fresh private mount namespace and its own network namespace,
    /// with only its loopback up (see [`link`]): its ports (etcd's, the API server's, the node
    /// API's) are its own, so it can run beside anything else on the machine. `ip_forward` is
    /// on, as kubeadm's preflight wants it on a node (a new network namespace starts with it
    /// off).
    pub fn isolated(name: &str) -> Node {
        Node::create(name, true)
    }

    fn create(name: &str, netns: bool) -> Node {
        let bin = staticlet_k8s_testenv::bin_dir();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for sub in [
            "etc-upper",
            "etc-work",
            "varlib-upper",
            "varlib-work",
            "etcd-data",
            "root",
            "logs",
            "images",
        ] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        std::fs::create_dir_all("/run/staticlet").unwrap();
        // etcd's default data directory (/var/lib/etcd) is the node's own `etcd-data`, kept out
        // of the overlay; a network namespace gets its loopback up and forwarding on.
        let net = if netns {
            " && ip link set lo up && echo 1 > /proc/sys/net/ipv4/ip_forward"
        } else {
            ""
        };
        let mut unshare = Command::new("unshare");
        unshare.args(["--mount", "--propagation", "private"]);
        if netns {
            unshare.arg("--net");
        }
        let holder = unshare
            .args(["sh", "-c"])
            .arg(format!(
                "mount -t overlay overlay -o lowerdir=/etc,upperdir={0}/etc-upper,workdir={0}/etc-work /etc \
                 && mount -t overlay overlay -o lowerdir=/var/lib,upperdir={0}/varlib-upper,workdir={0}/varlib-work /var/lib \
                 && mkdir -p /var/lib/etcd && mount --bind {0}/etcd-data /var/lib/etcd{net} \
                 && mount -t tmpfs -o mode=0711 tmpfs /run/staticlet && exec sleep infinity",
                d.display()
            ))
            .spawn()
            .unwrap();
        let node = Node {
            name: name.to_string(),
            dir,
            bin,
            holder,
            agent: None,
            agent_bin: current_bin(),
            log_n: 0,
            netns,
            host_had_kubernetes: Path::new("/etc/kubernetes").exists(),
        };
        let ours = std::fs::read_link("/proc/self/ns/mnt").unwrap();
        node.wait("the private mount namespace", 30, || {
            let theirs = std::fs::read_link(format!("/proc/{}/ns/mnt", node.holder.id())).ok()?;
            let mounts =
                std::fs::read_to_string(format!("/proc/{}/mounts", node.holder.id())).ok()?;
            let all = mounts
                .lines()
                .any(|l| l.starts_with("tmpfs /run/staticlet "));
            (theirs != ours && all).then_some(())
        });
        node
    }

    /// The images kubeadm's manifests name (`scripts/control-plane-images.sh`), imported into
    /// staticlet's store; with `placeholders`, also the other images kubeadm pulls (pause,
    /// coredns, kube-proxy) as placeholders that are never run on this node.
    pub fn import_images(&self, placeholders: bool) {
        self.import_archives(&self.build_images(placeholders));
    }

    /// The image archives of `scripts/control-plane-images.sh`, written in the node's `images`
    /// directory (see [`Node::import_images`]), for [`import_archives`] into any node's store.
    pub fn build_images(&self, placeholders: bool) -> Vec<String> {
        let mut cmd = Command::new("bash");
        cmd.arg(script("control-plane-images.sh"))
            .arg(self.path("images"))
            .arg(&self.bin);
        if placeholders {
            cmd.env("CONTROL_PLANE_PLACEHOLDERS", "1");
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "control-plane-images.sh: {}",
            text(&out)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|line| Some(line.split_once(' ')?.0.to_string()))
            .collect()
    }

    /// Imports image archives into the node's staticlet store, with the node's agent binary
    /// ([`Node::agent_bin`]: an earlier build writes its own store, which a later one reads).
    pub fn import_archives(&self, tars: &[String]) {
        import_archives_with(&self.agent_bin, &self.root(), tars);
    }

    /// `kubeadm version -o short`.
    pub fn kubernetes_version(&self) -> String {
        String::from_utf8_lossy(
            &Command::new(self.bin.join("kubeadm"))
                .args(["version", "-o", "short"])
                .output()
                .unwrap()
                .stdout,
        )
        .trim()
        .to_string()
    }

    /// Asserts that kubeadm wrote nothing into the machine's own /etc.
    pub fn assert_host_untouched(&self) {
        if !self.host_had_kubernetes {
            assert!(
                !Path::new("/etc/kubernetes").exists(),
                "kubeadm wrote into the machine's /etc"
            );
        }
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    pub fn root(&self) -> PathBuf {
        self.path("root")
    }

    /// A file the node wrote under its /etc (the overlay's upper directory).
    pub fn etc(&self, p: &str) -> PathBuf {
        self.path("etc-upper").join(p)
    }

    /// A command run inside the node's mount namespace (and network namespace, if it has one).
    pub fn ns(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--mount=/proc/{}/ns/mnt", self.holder.id()));
        if self.netns {
            c.arg(format!("--net=/proc/{}/ns/net", self.holder.id()));
        }
        c.arg("--").arg(program);
        c
    }

    pub fn ns_sh(&self, cmd: &str) {
        let out = self.ns("sh").args(["-c", cmd]).output().unwrap();
        assert!(out.status.success(), "{cmd}: {}", text(&out));
    }

    /// kubectl as the cluster's super-admin (the kubeconfig `kubeadm init` wrote under
    /// /etc/kubernetes), from the node's network.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_with("super-admin.conf", None, args)
    }

    /// kubectl with the kubeconfig `conf` kubeadm wrote under the node's /etc/kubernetes, from
    /// the node's network, against `server` (an API server's URL) instead of the kubeconfig's.
    pub fn kubectl_with(&self, conf: &str, server: Option<&str>, args: &[&str]) -> Output {
        let mut c = if self.netns {
            self.ns(self.bin.join("kubectl"))
        } else {
            Command::new(self.bin.join("kubectl"))
        };
        c.arg("--kubeconfig")
            .arg(self.etc(&format!("kubernetes/{conf}")))
            .arg("--request-timeout=5s");
        if let Some(server) = server {
            c.arg(format!("--server={server}"));
        }
        c.args(args).output().unwrap()
    }

    pub fn kubectl_json(&self, args: &[&str]) -> Option<Value> {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        let out = self.kubectl(&a);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())?
    }

    /// Starts `staticlet run` (the binary [`Node::agent_bin`]) in the namespace with `args` and
    /// the test's own root, log and (empty) CNI directories.
    pub fn start_agent(&mut self, args: &[&str]) {
        self.log_n += 1;
        let log = std::fs::File::create(self.path(&format!("agent-{}.log", self.log_n))).unwrap();
        let child = self
            .ns(&self.agent_bin)
            .arg("run")
            .args(args)
            .arg("--root-dir")
            .arg(self.root())
            .arg("--log-dir")
            .arg(self.path("logs"))
            .arg("--cni-conf-dir")
            .arg(self.path("no-cni"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.agent = Some(child);
    }

    /// Starts the agent as kubeadm's systemd drop-in runs it
    /// (`packaging/systemd/10-kubeadm.conf`), before kubeadm wrote any of these files.
    pub fn start_kubeadm_agent(&mut self) {
        self.start_agent(&[
            "--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf",
            "--kubeconfig=/etc/kubernetes/kubelet.conf",
            "--config=/var/lib/kubelet/config.yaml",
            // systemd's `EnvironmentFile=-/var/lib/kubelet/kubeadm-flags.env`.
            "--kubeadm-flags-env=/var/lib/kubelet/kubeadm-flags.env",
        ]);
    }

    /// Waits until the agent started by [`Node::start_kubeadm_agent`] serves CRI and waits for
    /// kubeadm's KubeletConfiguration.
    pub fn wait_for_kubeadm_config(&self) {
        let sock = format!("/proc/{}/root/run/staticlet/cri.sock", self.holder.id());
        self.wait(
            "the agent waiting for kubeadm's config, serving CRI",
            60,
            || {
                (self
                    .agent_log()
                    .contains("waiting for /var/lib/kubelet/config.yaml")
                    && Path::new(&sock).exists())
                .then_some(())
            },
        );
    }

    /// Stops the agent as systemd stops the unit (SIGTERM to the agent only, `KillMode=process`)
    /// and waits for it to exit (at most 60 s), as `systemctl stop` does before a package's
    /// files are replaced. Panics if it does not exit in time or exits with an error.
    pub fn stop_agent(&mut self) {
        let Some(mut a) = self.agent.take() else {
            return;
        };
        let out = Command::new("kill")
            .args(["-TERM", &a.id().to_string()])
            .output()
            .unwrap();
        assert!(out.status.success(), "kill -TERM: {}", text(&out));
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = a.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = a.kill();
                let _ = a.wait();
                panic!(
                    "the agent did not exit within 60 s of SIGTERM:\n{}",
                    self.tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(
            status.success(),
            "the agent exited with {status} on SIGTERM:\n{}",
            self.tail()
        );
    }

    /// The log of the agent started `n`th (1 is the first).
    pub fn agent_log_n(&self, n: usize) -> String {
        std::fs::read_to_string(self.path(&format!("agent-{n}.log"))).unwrap_or_default()
    }

    pub fn kill_agent(&mut self) {
        if let Some(mut a) = self.agent.take() {
            let _ = a.kill();
            let _ = a.wait();
        }
    }

    /// The current agent's log.
    pub fn agent_log(&self) -> String {
        std::fs::read_to_string(self.path(&format!("agent-{}.log", self.log_n))).unwrap_or_default()
    }

    pub fn tail(&self) -> String {
        let log = self.agent_log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    pub fn wait<T>(&self, what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(v) = f() {
                return v;
            }
            if Instant::now() > deadline {
                let pods = staticlet()
                    .args(["get", "pods", "-A", "--root-dir"])
                    .arg(self.root())
                    .output()
                    .map(|o| text(&o))
                    .unwrap_or_default();
                panic!(
                    "timed out after {secs} s waiting for {what}\n--- pods:\n{pods}\n--- agent log tail:\n{}",
                    self.tail()
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The pod as staticlet serves it locally.
    pub fn local(&self, component: &str) -> Option<Value> {
        let out = staticlet()
            .args([
                "get",
                "pod",
                &format!("{component}-{}", self.name),
                "-n",
                "kube-system",
            ])
            .args(["-o", "json", "--root-dir"])
            .arg(self.root())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())?
    }

    /// The agent's `/cluster` status.
    pub fn cluster_status(&self) -> Option<Value> {
        let out = staticlet()
            .args(["get", "--raw", "/cluster", "--root-dir"])
            .arg(self.root())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())?
    }

    pub fn mirror(&self, component: &str) -> Option<Value> {
        self.mirror_of(&self.name, component)
    }

    /// The mirror pod of `component` on node `node`, through this node's API server.
    pub fn mirror_of(&self, node: &str, component: &str) -> Option<Value> {
        self.kubectl_json(&[
            "get",
            "pod",
            "-n",
            "kube-system",
            &format!("{component}-{node}"),
        ])
    }

    /// The API's Events in kube-system about `object` with `reason` (None: kubectl failed).
    pub fn events(&self, object: &str, reason: &str) -> Option<Vec<Value>> {
        let evs = self.kubectl_json(&[
            "get",
            "events",
            "-n",
            "kube-system",
            "--field-selector",
            &format!("involvedObject.name={object},reason={reason}"),
        ])?;
        evs["items"].as_array().cloned()
    }

    pub fn api_ready(&self) -> bool {
        let out = self.kubectl(&["get", "--raw", "/readyz"]);
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok"
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // A failed test: keep the agents' and kubeadm's logs for its report.
        if std::thread::panicking() {
            let keep = std::env::temp_dir().join(format!("staticlet-e2e-{}-logs", self.name));
            let _ = std::fs::remove_dir_all(&keep);
            let _ = std::fs::create_dir_all(&keep);
            for e in std::fs::read_dir(self.dir.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                if e.file_name().to_string_lossy().ends_with(".log") {
                    let _ = std::fs::copy(e.path(), keep.join(e.file_name()));
                }
            }
            eprintln!("the node's logs are kept in {}", keep.display());
        }
        // Stop whatever is left (a failed test): an agent with no manifests stops every pod.
        self.kill_agent();
        let empty = self.path("empty");
        let _ = std::fs::create_dir_all(&empty);
        if let Ok(mut a) = self
            .ns(env!("CARGO_BIN_EXE_staticlet"))
            .args([
                "run",
                "--hostname-override",
                &self.name,
                "--pod-manifest-path",
            ])
            .arg(&empty)
            .arg("--root-dir")
            .arg(self.root())
            .arg("--log-dir")
            .arg(self.path("logs"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            // Until containers and sandboxes (with the pods' cgroups) are gone.
            let deadline = Instant::now() + Duration::from_secs(90);
            let entries = |d: &str| {
                std::fs::read_dir(self.root().join(d))
                    .map(|d| d.count())
                    .unwrap_or(0)
            };
            while (entries("runtime/containers") > 0 || entries("runtime/sandboxes") > 0)
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(200));
            }
            let _ = a.kill();
            let _ = a.wait();
        }
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// Runs `kubeadm args...` in the node's namespaces to its end (at most `secs`), its output in
/// the node's file `log`: its status and output.
pub fn run_kubeadm(
    node: &Node,
    log: &str,
    args: &[&str],
    secs: u64,
) -> (std::process::ExitStatus, String) {
    run_kubeadm_watching(node, log, args, secs, || {})
}

/// `run_kubeadm`, calling `watch` about every 250 ms while kubeadm runs.
pub fn run_kubeadm_watching(
    node: &Node,
    log: &str,
    args: &[&str],
    secs: u64,
    mut watch: impl FnMut(),
) -> (std::process::ExitStatus, String) {
    let log = node.path(log);
    let mut child = spawn_kubeadm(node, &log, args);
    let t0 = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        kubeadm_deadline(node, &mut child, &log, args, t0, secs);
        watch();
        std::thread::sleep(Duration::from_millis(250));
    };
    (status, std::fs::read_to_string(&log).unwrap_or_default())
}

/// `run_kubeadm`, calling `watch` with the node (which it may change: stop and start the
/// agent) and kubeadm's output so far, about every 250 ms while kubeadm runs.
pub fn run_kubeadm_with_node(
    node: &mut Node,
    log: &str,
    args: &[&str],
    secs: u64,
    mut watch: impl FnMut(&mut Node, &str),
) -> (std::process::ExitStatus, String) {
    let log = node.path(log);
    let mut child = spawn_kubeadm(node, &log, args);
    let t0 = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        kubeadm_deadline(node, &mut child, &log, args, t0, secs);
        watch(node, &std::fs::read_to_string(&log).unwrap_or_default());
        std::thread::sleep(Duration::from_millis(250));
    };
    (status, std::fs::read_to_string(&log).unwrap_or_default())
}

/// `kubeadm args...` started in the node's namespaces, its output in the file `log`.
fn spawn_kubeadm(node: &Node, log: &Path, args: &[&str]) -> Child {
    let file = std::fs::File::create(log).unwrap();
    node.ns(node.bin.join("kubeadm"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap()
}

/// Kills kubeadm and panics with its output once it has run `secs` since `t0`.
fn kubeadm_deadline(
    node: &Node,
    child: &mut Child,
    log: &Path,
    args: &[&str],
    t0: Instant,
    secs: u64,
) {
    if t0.elapsed() > Duration::from_secs(secs) {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "kubeadm {args:?} did not finish in {secs} s:\n{}\n--- agent log tail:\n{}",
            std::fs::read_to_string(log).unwrap_or_default(),
            node.tail()
        );
    }
}

/// Whether Node `n` has the taint `key` with `effect`.
pub fn has_taint(n: &Value, key: &str, effect: &str) -> bool {
    n["spec"]["taints"]
        .as_array()
        .is_some_and(|ts| ts.iter().any(|t| t["key"] == key && t["effect"] == effect))
}

/// Whether a pod or a Node has the condition Ready True.
pub fn ready(p: &Value) -> bool {
    p["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

pub fn container_id(p: &Value) -> String {
    p["status"]["containerStatuses"][0]["containerID"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// When the pod's first container started, as its status says (`state.running.startedAt`).
pub fn started_at(p: &Value) -> String {
    p["status"]["containerStatuses"][0]["state"]["running"]["startedAt"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

pub fn restarts(p: &Value) -> i64 {
    p["status"]["containerStatuses"][0]["restartCount"]
        .as_i64()
        .unwrap_or(-1)
}

pub fn annotation<'a>(p: &'a Value, key: &str) -> &'a str {
    p["metadata"]["annotations"][key]
        .as_str()
        .unwrap_or_default()
}

/// PIDs of processes in the cgroups of static pod `uid`.
pub fn pod_pids(uid: &str) -> Vec<u32> {
    let needle = format!("/staticlet/pod{uid}/");
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
                .is_ok_and(|c| c.contains(&needle))
        })
        .collect()
}

/// Prints the timings and writes them as a section of `target/control-plane-timings.txt`
/// (scripts/test.sh shows the file), replacing an earlier section with the same title.
pub fn report_timings(title: &str, timings: &[(String, Duration)]) {
    let body: String = timings
        .iter()
        .map(|(what, t)| format!("{what:<48} {:>6.1} s\n", t.as_secs_f64()))
        .collect();
    let section = format!("{title}\n{body}");
    eprintln!("{section}");
    let target =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/control-plane-timings.txt");
    let old = std::fs::read_to_string(&target).unwrap_or_default();
    let mut sections: Vec<String> = old
        .split("\n\n")
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty() && s.lines().next() != Some(title))
        .collect();
    sections.push(section.trim().to_string());
    let _ = std::fs::write(target, sections.join("\n\n") + "\n");
}
