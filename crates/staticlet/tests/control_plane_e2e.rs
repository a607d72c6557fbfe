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
//! them). The fixture (namespace, images, agent, kubectl) is `common/control_plane.rs`, shared
//! with `kubeadm_init_e2e.rs`, which runs the whole `kubeadm init` instead of its phases. Needs root and the binaries of `scripts/build-k8s.sh`; skipped with the reason
//! otherwise (unless `STATICLET_REQUIRE_K8S=1`).
// Real processes in real time: std::time::Instant is right here.
#![allow(clippy::disallowed_types)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

#[path = "common/control_plane.rs"]
mod control_plane;

use control_plane::{
    annotation, container_id, host_ip, pod_pids, ready, restarts, text, Node, COMPONENTS,
};

const NODE: &str = "cp-e2e";

/// The agent as this test runs it: kubeadm's phases wrote no KubeletConfiguration, so flags.
fn start_agent(node: &mut Node) {
    node.start_agent(&[
        "--hostname-override",
        NODE,
        "--pod-manifest-path",
        "/etc/kubernetes/manifests",
        "--kubeconfig",
        "/etc/kubernetes/kubelet.conf",
        // No node API (node_api_e2e.rs tests it); the healthz port may be taken.
        "--port",
        "0",
        "--healthz-port",
        "0",
    ]);
}

#[test]
fn kubeadm_control_plane_runs_on_staticlet() {
    if let Some(why) = control_plane::skip_reason() {
        eprintln!("skipped: {why}");
        return;
    }
    let mut timings: Vec<(String, Duration)> = Vec::new();
    let t_setup = Instant::now();
    // 1. Images, tagged as kubeadm names them, into staticlet's store.
    // 2. A private mount namespace with overlays on /etc and /var/lib, then kubeadm's phases.
    let mut node = Node::new(NODE);
    node.import_images(false);
    let bin = node.bin.clone();
    let api_port = control_plane::free_port();
    let config = format!(
        "apiVersion: kubeadm.k8s.io/v1beta4\nkind: InitConfiguration\nlocalAPIEndpoint:\n  advertiseAddress: {ip}\n  bindPort: {api_port}\nnodeRegistration:\n  name: {NODE}\n---\napiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\nkubernetesVersion: {ver}\nclusterName: staticlet-e2e\netcd:\n  local:\n    dataDir: {data}\n",
        ip = host_ip(),
        ver = node.kubernetes_version(),
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
    node.assert_host_untouched();
    timings.push(("images + kubeadm phases".into(), t_setup.elapsed()));

    // 3. staticlet runs the four manifests unmodified.
    let t0 = Instant::now();
    start_agent(&mut node);
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
    start_agent(&mut node);
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

    control_plane::report_timings(
        &format!(
            "kubeadm control plane on staticlet (Kubernetes {}, embedded runtime, this machine):",
            node.kubernetes_version()
        ),
        &timings,
    );
}
