//! The capstone: staticlet boots a real Kubernetes control plane from kubeadm's manifests,
//! unmodified, with the embedded runtime, and joins the API server it hosts.
//!
//! 1. Images: the Go-built etcd, kube-apiserver, kube-controller-manager and kube-scheduler
//!    (`scripts/build-k8s.sh`) packed by `scripts/control-plane-images.sh` with the tags kubeadm's
//!    manifests name, imported into staticlet's image store.
//! 2. The real kubeadm writes certificates, kubeconfigs and the four manifests — in a private
//!    mount namespace whose `/etc` is an overlay, so the machine's `/etc/kubernetes` is never
//!    touched (etcd's data dir is a temporary directory through kubeadm's own option).
//! 3. `staticlet run --pod-manifest-path /etc/kubernetes/manifests --kubeconfig
//!    /etc/kubernetes/kubelet.conf` in that namespace: etcd, then the API server, then the
//!    scheduler and controller-manager, the Node and four mirror pods.
//! 4. Self-healing: the API server's process killed → restarted; a mirror deleted → recreated;
//!    staticlet killed -9 and started again → no container restarts; a ConfigMap survives.
//! 5. Upgrade by manifest: a flag added to kube-scheduler.yaml → new pod, new mirror hash.
//! 6. Manifests removed → everything stops; no process, mount or cgroup is left.
//!
//! Timings are printed and written to `target/control-plane-timings.txt` (scripts/test.sh shows
//! them). Needs root and the binaries of `scripts/build-k8s.sh`; skipped with the reason
//! otherwise (unless `STATICLET_REQUIRE_K8S=1`).
// Real processes in real time: std::time::Instant is right here.
#![allow(clippy::disallowed_types)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const NODE: &str = "cp-e2e";
const COMPONENTS: [&str; 4] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
];

fn staticlet() -> Command {
    Command::new(env!("CARGO_BIN_EXE_staticlet"))
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../scripts")
        .join(name)
}

fn text(out: &Output) -> String {
    format!(
        "{} {}",
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    )
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
}

/// A free TCP port on all addresses (the API server binds 0.0.0.0).
fn free_port() -> u16 {
    std::net::TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The source address of the default route (kubeadm refuses loopback advertise addresses).
fn host_ip() -> String {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    s.connect("192.0.2.254:9").unwrap();
    s.local_addr().unwrap().ip().to_string()
}

struct Node {
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// A process holding the private mount namespace (`sleep infinity` under `unshare`).
    holder: Child,
    agent: Option<Child>,
    log_n: usize,
}

impl Node {
    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn root(&self) -> PathBuf {
        self.path("root")
    }

    /// A command run inside the node's mount namespace.
    fn ns(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--mount=/proc/{}/ns/mnt", self.holder.id()))
            .arg("--")
            .arg(program);
        c
    }

    fn ns_sh(&self, cmd: &str) {
        let out = self.ns("sh").args(["-c", cmd]).output().unwrap();
        assert!(out.status.success(), "{cmd}: {}", text(&out));
    }

    /// kubectl as the cluster's super-admin (the kubeconfig kubeadm wrote under /etc/kubernetes,
    /// read from the overlay's upper directory).
    fn kubectl(&self, args: &[&str]) -> Output {
        Command::new(self.bin.join("kubectl"))
            .arg("--kubeconfig")
            .arg(self.path("etc-upper/kubernetes/super-admin.conf"))
            .arg("--request-timeout=5s")
            .args(args)
            .output()
            .unwrap()
    }

    fn kubectl_json(&self, args: &[&str]) -> Option<Value> {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        let out = self.kubectl(&a);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())?
    }

    fn start_agent(&mut self) {
        self.log_n += 1;
        let log = std::fs::File::create(self.path(&format!("agent-{}.log", self.log_n))).unwrap();
        let child = self
            .ns(env!("CARGO_BIN_EXE_staticlet"))
            .args(["run", "--hostname-override", NODE])
            .args(["--pod-manifest-path", "/etc/kubernetes/manifests"])
            .args(["--kubeconfig", "/etc/kubernetes/kubelet.conf"])
            // No node API (node_api_e2e.rs tests it); the healthz port may be taken.
            .args(["--port", "0", "--healthz-port", "0"])
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

    fn kill_agent(&mut self) {
        if let Some(mut a) = self.agent.take() {
            let _ = a.kill();
            let _ = a.wait();
        }
    }

    fn tail(&self) -> String {
        let log = std::fs::read_to_string(self.path(&format!("agent-{}.log", self.log_n)))
            .unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn wait<T>(&self, what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
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
    fn local(&self, component: &str) -> Option<Value> {
        let out = staticlet()
            .args([
                "get",
                "pod",
                &format!("{component}-{NODE}"),
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

    fn mirror(&self, component: &str) -> Option<Value> {
        self.kubectl_json(&[
            "get",
            "pod",
            "-n",
            "kube-system",
            &format!("{component}-{NODE}"),
        ])
    }

    fn api_ready(&self) -> bool {
        let out = self.kubectl(&["get", "--raw", "/readyz"]);
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok"
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // Stop whatever is left (a failed test): an agent with no manifests stops every pod.
        self.kill_agent();
        let empty = self.path("empty");
        let _ = std::fs::create_dir_all(&empty);
        if let Ok(mut a) = self
            .ns(env!("CARGO_BIN_EXE_staticlet"))
            .args(["run", "--hostname-override", NODE, "--pod-manifest-path"])
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

fn ready(p: &Value) -> bool {
    p["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

fn container_id(p: &Value) -> String {
    p["status"]["containerStatuses"][0]["containerID"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn restarts(p: &Value) -> i64 {
    p["status"]["containerStatuses"][0]["restartCount"]
        .as_i64()
        .unwrap_or(-1)
}

fn annotation<'a>(p: &'a Value, key: &str) -> &'a str {
    p["metadata"]["annotations"][key]
        .as_str()
        .unwrap_or_default()
}

/// PIDs of processes in the cgroups of static pod `uid`.
fn pod_pids(uid: &str) -> Vec<u32> {
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

#[test]
fn kubeadm_control_plane_runs_on_staticlet() {
    if !is_root() {
        eprintln!("skipped: the embedded runtime needs root");
        return;
    }
    if let Some(why) = staticlet_k8s_testenv::skip_reason() {
        eprintln!("skipped: {why}");
        return;
    }
    let bin = staticlet_k8s_testenv::bin_dir();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for sub in [
        "etc-upper",
        "etc-work",
        "etcd-data",
        "root",
        "logs",
        "images",
    ] {
        std::fs::create_dir_all(d.join(sub)).unwrap();
    }
    let host_had_kubernetes = Path::new("/etc/kubernetes").exists();
    let mut timings: Vec<(String, Duration)> = Vec::new();
    let t_setup = Instant::now();

    // 1. Images, tagged as kubeadm names them, into staticlet's store.
    let out = Command::new("bash")
        .arg(script("control-plane-images.sh"))
        .arg(d.join("images"))
        .arg(&bin)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "control-plane-images.sh: {}",
        text(&out)
    );
    for c in COMPONENTS {
        let out = staticlet()
            .args(["images", "import"])
            .arg(d.join(format!("images/{c}.tar")))
            .arg("--root-dir")
            .arg(d.join("root"))
            .output()
            .unwrap();
        assert!(out.status.success(), "import {c}: {}", text(&out));
    }

    // 2. A private mount namespace with an overlay on /etc, then kubeadm's phases in it.
    let holder = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "mount -t overlay overlay -o lowerdir=/etc,upperdir={0}/etc-upper,workdir={0}/etc-work /etc && exec sleep infinity",
            d.display()
        ))
        .spawn()
        .unwrap();
    let mut node = Node {
        dir,
        bin: bin.clone(),
        holder,
        agent: None,
        log_n: 0,
    };
    let ours = std::fs::read_link("/proc/self/ns/mnt").unwrap();
    node.wait("the private mount namespace", 30, || {
        let theirs = std::fs::read_link(format!("/proc/{}/ns/mnt", node.holder.id())).ok()?;
        let overlay = std::fs::read_to_string(format!("/proc/{}/mounts", node.holder.id()))
            .ok()?
            .lines()
            .any(|l| l.starts_with("overlay /etc "));
        (theirs != ours && overlay).then_some(())
    });
    let api_port = free_port();
    let config = format!(
        "apiVersion: kubeadm.k8s.io/v1beta4\nkind: InitConfiguration\nlocalAPIEndpoint:\n  advertiseAddress: {ip}\n  bindPort: {api_port}\nnodeRegistration:\n  name: {NODE}\n---\napiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\nkubernetesVersion: {ver}\nclusterName: staticlet-e2e\netcd:\n  local:\n    dataDir: {data}\n",
        ip = host_ip(),
        ver = String::from_utf8_lossy(
            &Command::new(bin.join("kubeadm"))
                .args(["version", "-o", "short"])
                .output()
                .unwrap()
                .stdout
        )
        .trim(),
        data = node.path("etcd-data").display(),
    );
    std::fs::write(node.path("kubeadm.yaml"), config).unwrap();
    for phase in [
        &["certs", "all"][..],
        &["kubeconfig", "all"],
        &["etcd", "local"],
        &["control-plane", "all"],
    ] {
        let out = node
            .ns(bin.join("kubeadm"))
            .args(["init", "phase"])
            .args(phase)
            .arg("--config")
            .arg(node.path("kubeadm.yaml"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kubeadm init phase {phase:?}: {}",
            text(&out)
        );
    }
    if !host_had_kubernetes {
        assert!(
            !Path::new("/etc/kubernetes").exists(),
            "kubeadm wrote into the machine's /etc"
        );
    }
    timings.push(("images + kubeadm phases".into(), t_setup.elapsed()));

    // 3. staticlet runs the four manifests unmodified.
    let t0 = Instant::now();
    node.start_agent();
    node.wait("etcd Ready", 180, || node.local("etcd").filter(ready));
    timings.push(("manifests -> etcd ready".into(), t0.elapsed()));
    node.wait("API server /readyz", 240, || node.api_ready().then_some(()));
    timings.push(("manifests -> API ready".into(), t0.elapsed()));
    let node_obj = node.wait("Node registered", 120, || {
        node.kubectl_json(&["get", "node", NODE])
    });
    let node_uid = node_obj["metadata"]["uid"].clone();
    let mut mirrors = Vec::new();
    for c in COMPONENTS {
        let m = node.wait(&format!("mirror {c} Ready"), 240, || {
            node.mirror(c)
                .filter(|m| ready(m) && m["status"]["phase"] == "Running")
        });
        mirrors.push(m);
    }
    timings.push(("manifests -> 4 mirror pods Ready".into(), t0.elapsed()));
    for (c, m) in COMPONENTS.iter().zip(&mirrors) {
        let local = node.local(c).unwrap();
        assert_eq!(
            annotation(m, "kubernetes.io/config.mirror"),
            annotation(&local, "kubernetes.io/config.hash"),
            "{c}"
        );
        assert_eq!(m["metadata"]["ownerReferences"][0]["kind"], "Node");
        assert_eq!(m["metadata"]["ownerReferences"][0]["uid"], node_uid);
        assert_eq!(m["metadata"]["ownerReferences"][0]["controller"], true);
    }
    let out = node.kubectl(&[
        "create",
        "configmap",
        "survivor",
        "-n",
        "default",
        "--from-literal=k=v",
    ]);
    assert!(out.status.success(), "{}", text(&out));

    // 4a. Kill the API server's process: restarted, the API comes back, the mirror follows.
    let api_uid = node.local("kube-apiserver").unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    let pids = pod_pids(&api_uid);
    let api_pid = pids
        .iter()
        .find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm"))
                .is_ok_and(|c| c.trim() == "kube-apiserver")
        })
        .unwrap_or_else(|| panic!("no kube-apiserver process among {pids:?}"));
    let t_kill = Instant::now();
    assert!(Command::new("kill")
        .args(["-9", &api_pid.to_string()])
        .status()
        .unwrap()
        .success());
    node.wait("API server restarted and Ready", 240, || {
        node.local("kube-apiserver")
            .filter(|p| restarts(p) == 1 && ready(p))
            .map(|_| ())
    });
    node.wait("API back", 120, || node.api_ready().then_some(()));
    node.wait("mirror shows the restart", 120, || {
        node.mirror("kube-apiserver")
            .filter(|m| restarts(m) == 1 && ready(m))
    });
    timings.push((
        "kube-apiserver killed -> mirror Ready again".into(),
        t_kill.elapsed(),
    ));

    // 4b. Delete a mirror with kubectl: recreated.
    let before = node.mirror("kube-controller-manager").unwrap()["metadata"]["uid"].clone();
    let out = node.kubectl(&[
        "delete",
        "pod",
        "-n",
        "kube-system",
        &format!("kube-controller-manager-{NODE}"),
        "--wait=false",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    node.wait("mirror recreated", 120, || {
        node.mirror("kube-controller-manager")
            .filter(|m| m["metadata"]["uid"] != before && ready(m))
    });

    // 4c. kill -9 staticlet and start it again: nothing restarts.
    let ids: Vec<(String, i64)> = COMPONENTS
        .iter()
        .map(|c| {
            let p = node.local(c).unwrap();
            (container_id(&p), restarts(&p))
        })
        .collect();
    node.kill_agent();
    let t_restart = Instant::now();
    node.start_agent();
    for (c, (id, n)) in COMPONENTS.iter().zip(&ids) {
        node.wait(&format!("{c} adopted and Ready"), 120, || {
            node.local(c).filter(ready).map(|_| ())
        });
        let p = node.local(c).unwrap();
        assert_eq!(
            &container_id(&p),
            id,
            "{c} was restarted by the agent restart"
        );
        assert_eq!(restarts(&p), *n, "{c}");
    }
    timings.push((
        "staticlet kill -9 -> all adopted Ready".into(),
        t_restart.elapsed(),
    ));
    node.wait("API ready after the agent restart", 60, || {
        node.api_ready().then_some(())
    });
    let cm = node
        .kubectl_json(&["get", "configmap", "survivor", "-n", "default"])
        .unwrap();
    assert_eq!(cm["data"]["k"], "v");

    // 5. Upgrade by manifest, as `kubeadm upgrade` does: a new flag for the scheduler.
    let old = node.local("kube-scheduler").unwrap();
    let old_hash = annotation(&old, "kubernetes.io/config.hash").to_string();
    let t_upgrade = Instant::now();
    node.ns_sh(
        "sed 's/    - --leader-elect=true/    - --leader-elect=true\\n    - --v=2/' /etc/kubernetes/manifests/kube-scheduler.yaml > /etc/kubernetes/kube-scheduler.yaml.new && mv /etc/kubernetes/kube-scheduler.yaml.new /etc/kubernetes/manifests/kube-scheduler.yaml",
    );
    let new = node.wait("new scheduler Ready", 180, || {
        node.local("kube-scheduler")
            .filter(|p| annotation(p, "kubernetes.io/config.hash") != old_hash && ready(p))
    });
    let new_hash = annotation(&new, "kubernetes.io/config.hash").to_string();
    assert!(new["spec"]["containers"][0]["command"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a == "--v=2"));
    node.wait("mirror with the new hash", 120, || {
        node.mirror("kube-scheduler")
            .filter(|m| annotation(m, "kubernetes.io/config.mirror") == new_hash && ready(m))
    });
    assert!(
        pod_pids(&old_hash).is_empty(),
        "the old scheduler still runs"
    );
    timings.push((
        "scheduler manifest edited -> new mirror Ready".into(),
        t_upgrade.elapsed(),
    ));
    let cm = node
        .kubectl_json(&["get", "configmap", "survivor", "-n", "default"])
        .unwrap();
    assert_eq!(cm["data"]["k"], "v");

    // 6. Remove the manifests: everything stops, nothing is left.
    let uids: Vec<String> = COMPONENTS
        .iter()
        .map(|c| {
            node.local(c).unwrap()["metadata"]["uid"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let t_stop = Instant::now();
    node.ns_sh("rm /etc/kubernetes/manifests/*.yaml");
    node.wait("all pods gone", 180, || {
        COMPONENTS
            .iter()
            .all(|c| node.local(c).is_none())
            .then_some(())
    });
    timings.push(("manifests removed -> all stopped".into(), t_stop.elapsed()));
    for uid in &uids {
        assert!(pod_pids(uid).is_empty(), "processes left for pod {uid}");
        for ctl in ["memory", "pids", "cpu", "unified"] {
            let p = format!("/sys/fs/cgroup/{ctl}/staticlet/pod{uid}");
            assert!(!Path::new(&p).exists(), "cgroup left: {p}");
        }
    }
    let mounts = std::fs::read_to_string(format!("/proc/{}/mounts", node.holder.id())).unwrap();
    let root = node.root().display().to_string();
    // Pods' mounts (namespace pins, overlay roots, volumes); the sandboxes directory itself is
    // the agent's own private bind mount, released when it exits for good.
    let left: Vec<&str> = mounts
        .lines()
        .filter(|l| {
            let mp = l.split_whitespace().nth(1).unwrap_or("");
            mp.starts_with(&format!("{root}/")) && mp != format!("{root}/runtime/sandboxes")
        })
        .collect();
    assert!(left.is_empty(), "mounts left: {left:#?}");
    node.kill_agent();

    let report: String = timings
        .iter()
        .map(|(what, t)| format!("{what:<48} {:>6.1} s\n", t.as_secs_f64()))
        .collect();
    let report = format!(
        "kubeadm control plane on staticlet (Kubernetes {}, embedded runtime, this machine):\n{report}",
        String::from_utf8_lossy(
            &Command::new(bin.join("kubeadm"))
                .args(["version", "-o", "short"])
                .output()
                .unwrap()
                .stdout
        )
        .trim()
    );
    eprintln!("{report}");
    let target =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/control-plane-timings.txt");
    let _ = std::fs::write(target, report);
}
