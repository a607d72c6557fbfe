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
//! 5. Upgrade by manifest, health-gated (`--rollout-ready-deadline`, issue 17): a flag added to
//!    kube-scheduler.yaml → new pod, new mirror hash, acknowledged by `staticlet wait manifest
//!    --for=ready --hash`; a bad flag → rolled back to that version (the mirror shows its hash,
//!    the `RolledBack` event in the API says why); the scheduler stopped and started with the
//!    local verbs; etcd edited under the API server's `staticlet.io/after: etcd` (the API server
//!    waited for etcd at boot and is not restarted by the edit).
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

use serde_json::Value;

#[path = "common/control_plane.rs"]
mod control_plane;

use control_plane::{
    annotation, container_id, host_ip, pod_pids, ready, restarts, text, Node, COMPONENTS,
};

const NODE: &str = "cp-e2e";

/// The node-wide rollout deadline: generous, so that a good version is never rolled back on a
/// loaded machine (the scheduler's startup probe alone waits 10 s, then 10 s of Ready count).
const ROLLOUT_DEADLINE: &str = "120s";

/// The agent as this test runs it: kubeadm's phases wrote no KubeletConfiguration, so flags.
fn start_agent(node: &mut Node) {
    node.start_agent(&[
        "--rollout-ready-deadline",
        ROLLOUT_DEADLINE,
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

/// Rewrites the manifest of `component` as the operator would (whole file, renamed into place):
/// `edit` changes its object; written as JSON, which is YAML too. Returns its content hash.
fn edit_manifest(node: &Node, component: &str, edit: impl FnOnce(&mut Value)) -> String {
    let path = format!("/etc/kubernetes/manifests/{component}.yaml");
    let out = node.ns("cat").arg(&path).output().unwrap();
    assert!(out.status.success(), "cat {path}: {}", text(&out));
    let mut pod = staticlet_manifest::decode_document(&out.stdout).unwrap();
    edit(&mut pod);
    let content = serde_json::to_string_pretty(&pod).unwrap();
    let staged = node.path(&format!("{component}.new"));
    std::fs::write(&staged, &content).unwrap();
    node.ns_sh(&format!(
        "cp {} /etc/kubernetes/{component}.new && mv /etc/kubernetes/{component}.new {path}",
        staged.display()
    ));
    staticlet_manifest::content_hash(content.as_bytes())
}

fn set_annotation(pod: &mut Value, key: &str, value: &str) {
    let meta = pod["metadata"].as_object_mut().unwrap();
    let anns = meta
        .entry("annotations")
        .or_insert_with(|| Value::Object(Default::default()));
    anns[key] = Value::String(value.to_string());
}

fn add_flag(pod: &mut Value, flag: &str) {
    pod["spec"]["containers"][0]["command"]
        .as_array_mut()
        .unwrap()
        .push(Value::String(flag.to_string()));
}

/// `staticlet ARGS --root-dir ROOT` in the node's namespace: exit code and output.
fn cli(node: &Node, args: &[&str]) -> (Option<i32>, String) {
    let out = node
        .ns(env!("CARGO_BIN_EXE_staticlet"))
        .args(args)
        .arg("--root-dir")
        .arg(node.root())
        .output()
        .unwrap();
    (out.status.code(), text(&out))
}

/// `staticlet wait manifest` on a component's manifest.
fn wait_manifest(node: &Node, component: &str, args: &[&str]) -> (Option<i32>, String) {
    let file = format!("/etc/kubernetes/manifests/{component}.yaml");
    let mut a = vec!["wait", "manifest", file.as_str()];
    a.extend_from_slice(args);
    cli(node, &a)
}

/// The `/manifests` record of a component's manifest.
fn manifest_record(node: &Node, component: &str) -> Option<Value> {
    let (code, out) = cli(node, &["get", "--raw", "/manifests"]);
    if code != Some(0) {
        return None;
    }
    let v: Value = serde_json::from_str(out.trim()).ok()?;
    let origin = format!("/etc/kubernetes/manifests/{component}.yaml");
    v["items"]
        .as_array()?
        .iter()
        .find(|r| r["origin"] == origin.as_str())
        .cloned()
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
    // Ordering, as an operator would add it with a kubeadm patch: the API server starts only
    // once etcd is Ready (without it, it starts at once and retries etcd until it answers).
    edit_manifest(&node, "kube-apiserver", |p| {
        set_annotation(p, "staticlet.io/after", "etcd")
    });
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
    timings.push((
        "manifests -> 4 mirror pods Ready (API server after etcd)".into(),
        t0.elapsed(),
    ));
    // The API server's container started once etcd was Ready, and never had to restart.
    let etcd = node.local("etcd").unwrap();
    let etcd_ready = etcd["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .map(|c| c["lastTransitionTime"].as_str().unwrap().to_string())
        .unwrap();
    let api = node.local("kube-apiserver").unwrap();
    let api_started = api["status"]["containerStatuses"][0]["state"]["running"]["startedAt"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        api_started >= etcd_ready,
        "kube-apiserver started at {api_started}, before etcd was Ready at {etcd_ready}"
    );
    assert_eq!(restarts(&api), 0, "{api}");
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

    // 5. Upgrade by manifest, as `kubeadm upgrade` does: a new flag for the scheduler, applied
    //    under the rollout and acknowledged by its content hash.
    let old = node.local("kube-scheduler").unwrap();
    let old_hash = annotation(&old, "kubernetes.io/config.hash").to_string();
    let t_upgrade = Instant::now();
    let good = edit_manifest(&node, "kube-scheduler", |p| add_flag(p, "--v=2"));
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
    let (code, out) = wait_manifest(
        &node,
        "kube-scheduler",
        &["--for=ready", "--hash", &good, "--timeout", "180s"],
    );
    assert_eq!(code, Some(0), "wait manifest --for=ready: {out}");
    timings.push((
        "scheduler manifest edited -> acknowledged Ready".into(),
        t_upgrade.elapsed(),
    ));
    let cm = node
        .kubectl_json(&["get", "configmap", "survivor", "-n", "default"])
        .unwrap();
    assert_eq!(cm["data"]["k"], "v");

    // 5b. A version that cannot start (a flag kube-scheduler does not know), with a deadline of
    //     its own: rolled back to the good version; the mirror and the API's events say so.
    let t_bad = Instant::now();
    let bad = edit_manifest(&node, "kube-scheduler", |p| {
        add_flag(p, "--no-such-flag=1");
        set_annotation(p, "staticlet.io/ready-deadline", "20s");
    });
    let record = node.wait("the bad version rolled back", 240, || {
        manifest_record(&node, "kube-scheduler").filter(|r| {
            r["rollout"]["state"] == "rolledBack"
                && r["rollout"]["rolledBackFrom"] == bad.as_str()
                && r["rollout"]["rolledBackTo"] == good.as_str()
                && r["running"] == good.as_str()
        })
    });
    let why = record["rollout"]["message"].as_str().unwrap().to_string();
    assert!(
        why.contains("not Ready within 20s") && why.contains("kube-scheduler"),
        "{why}"
    );
    node.wait("the mirror back on the good version, Ready", 180, || {
        node.mirror("kube-scheduler")
            .filter(|m| annotation(m, "kubernetes.io/config.mirror") == new_hash && ready(m))
    });
    timings.push((
        "bad scheduler flag -> rolled back, mirror Ready".into(),
        t_bad.elapsed(),
    ));
    let event = node.wait("the RolledBack event in the API", 60, || {
        node.events(&format!("kube-scheduler-{NODE}"), "RolledBack")?
            .last()
            .cloned()
    });
    assert_eq!(event["type"], "Warning", "{event}");
    assert!(
        event["message"]
            .as_str()
            .is_some_and(|m| m.contains(&why[..why.len().min(60)])),
        "{event}\n(rollout message: {why})"
    );
    // About the static pod (the mirror's config.mirror), as kubelet's events.
    assert_eq!(event["involvedObject"]["uid"], new_hash.as_str(), "{event}");
    let (code, out) = wait_manifest(
        &node,
        "kube-scheduler",
        &["--for=ready", "--hash", &bad, "--timeout", "10s"],
    );
    assert_eq!(
        code,
        Some(2),
        "the rolled-back version can never be Ready: {out}"
    );

    // 5c. The scheduler stopped and started with the local verbs; the mirror follows.
    let sched = format!("kube-scheduler-{NODE}");
    let (code, out) = cli(&node, &["stop", "pod", &sched, "-n", "kube-system"]);
    assert_eq!(code, Some(0), "stop: {out}");
    let stopped = node.wait("the scheduler stopped", 120, || {
        node.local("kube-scheduler")
            .filter(|p| p["status"]["reason"] == "Stopped")
    });
    let sched_uid = stopped["metadata"]["uid"].as_str().unwrap().to_string();
    assert!(pod_pids(&sched_uid).is_empty(), "the scheduler still runs");
    node.wait("the mirror shows it stopped", 60, || {
        node.mirror("kube-scheduler")
            .filter(|m| m["status"]["reason"] == "Stopped" && !ready(m))
    });
    let (code, out) = cli(&node, &["start", "pod", &sched, "-n", "kube-system"]);
    assert_eq!(code, Some(0), "start: {out}");
    node.wait("the mirror Ready again after start", 180, || {
        node.mirror("kube-scheduler")
            .filter(|m| ready(m) && m["status"]["reason"].is_null())
    });

    // 5d. etcd edited while the API server depends on it: etcd's new version becomes Ready and
    //     is acknowledged; the API server is not restarted (the dependency gates starts only)
    //     and the data is there.
    let api_id = container_id(&node.local("kube-apiserver").unwrap());
    let t_etcd = Instant::now();
    let etcd_v2 = edit_manifest(&node, "etcd", |p| add_flag(p, "--log-level=info"));
    let (code, out) = wait_manifest(
        &node,
        "etcd",
        &["--for=ready", "--hash", &etcd_v2, "--timeout", "240s"],
    );
    assert_eq!(code, Some(0), "wait manifest etcd --for=ready: {out}");
    node.wait("API ready after the etcd edit", 120, || {
        node.api_ready().then_some(())
    });
    timings.push((
        "etcd manifest edited -> acknowledged Ready, API ready".into(),
        t_etcd.elapsed(),
    ));
    let api = node.local("kube-apiserver").unwrap();
    assert_eq!(container_id(&api), api_id, "the API server was restarted");
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
