//! `kubeadm init`, unmodified and with all its phases, on a node whose "kubelet" is staticlet
//! with its embedded runtime (issue 14, item 7):
//!
//! 1. The agent is started before kubeadm, as kubeadm's systemd drop-in starts it
//!    (`packaging/systemd/10-kubeadm.conf`: `--kubeconfig`, `--config
//!    /var/lib/kubelet/config.yaml`; the flags file, which systemd would read, through
//!    `--kubeadm-flags-env`). Neither file exists yet: the agent serves CRI on
//!    `/run/staticlet/cri.sock` and waits for kubeadm's config.
//! 2. `kubeadm init --config` with `criSocket: unix:///run/staticlet/cri.sock`: its preflight
//!    checks the runtime and pulls the images through staticlet's CRI server (imported
//!    beforehand: the control-plane images of `scripts/control-plane-images.sh` and
//!    placeholders for those never run here). kubeadm writes the kubelet's files and restarts
//!    "the kubelet" through systemd, which this sandbox does not run (kubeadm warns): the agent
//!    plays that part itself, starting again with the files kubeadm wrote (same PID). kubeadm
//!    then waits on its healthz, the control plane comes up from the manifests, and kubeadm
//!    labels and taints the Node, uploads its configuration, makes the bootstrap token and
//!    installs coredns and kube-proxy, to its final line.
//! 3. The Node is Ready with kubeadm's control-plane label and taint, the four mirror pods are
//!    Running and Ready, `kubectl logs` and `kubectl exec` on them work; kube-proxy's pod,
//!    bound here by the scheduler, is not run and gets one `StaticPodsOnly` Warning Event.
//! 4. The agent restarted: kubeadm's label and taint, a user's label and annotation remain.
//! 5. `kubeadm upgrade plan` and `kubeadm upgrade apply` to the same release after a change of
//!    the ClusterConfiguration (extra arguments for the scheduler and the controller-manager):
//!    kubeadm replaces those two manifests, staticlet stops each old pod and starts the new
//!    one, kubeadm sees each mirror's new `kubernetes.io/config.hash` and the pods Running and
//!    succeeds; etcd and the API server are not touched (with the API server changed too,
//!    etcd, whose manifest kubeadm then moves out and back in, is restarted as kubelet
//!    restarts it), the agent keeps running with the KubeletConfiguration kubeadm wrote
//!    again, and the cluster's data is intact. In the middle of it, once kubeadm moved its first
//!    new manifest in and waits for that mirror's new hash, the agent itself is upgraded as a
//!    package upgrade does it: stopped with SIGTERM (`systemctl stop`, `KillMode=process`) and
//!    started again, with this build. With `STATICLET_PREVIOUS_BIN` (a staticlet binary of an
//!    earlier build: `scripts/build-previous.sh REV`, not run by CI since it costs a build),
//!    steps 1 to 5 run on that build until then; without it, this build is restarted. The test
//!    prints which. kubeadm still succeeds; the containers of the components it did not replace
//!    are the same (ID, start time, restart count), the replaced ones were started exactly once,
//!    the upgraded agent's log stops or starts nothing else, and its Lease is renewed.
//! 6. A failing `kubeadm upgrade apply`: etcd's image tag changed to one that exists nowhere
//!    (the node is offline), `timeouts.upgradeManifests` 30 s. staticlet stops the old etcd
//!    and cannot pull the new image; kubeadm, which cannot read the mirror's hash from an API
//!    server without its store, times out and rolls back: it moves the old manifest back,
//!    sees the old etcd answer again and exits with its rollback error. staticlet runs the old
//!    pod again (same UID), its mirror is Ready with the old hash, nothing is lost, and the
//!    events recorded while the API server was down (the failing pull, the stop) reach it.
//!
//! Isolated like `control_plane_e2e.rs` (fixture: `common/control_plane.rs`). Timings go to
//! `target/control-plane-timings.txt`.
// Real processes in real time: std::time::Instant is right here.
#![allow(clippy::disallowed_types)]

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

#[path = "common/control_plane.rs"]
mod control_plane;

use control_plane::{
    annotation, container_id, has_taint, host_ip, ready, restarts, run_kubeadm,
    run_kubeadm_watching, run_kubeadm_with_node, started_at, text, Node, COMPONENTS,
};

const NODE: &str = "kubeadm-e2e";

/// What kubeadm prints just before it moves a component's new manifest in
/// (`phases/upgrade/staticpods.go`); step 5 upgrades the agent once it has.
const MOVING_NEW_MANIFEST: &str = "[upgrade/staticpods] Moving new manifest to";

/// What kubeadm prints once it saw a component's new mirror hash and the pod Running.
const COMPONENT_UPGRADED: &str = "upgraded successfully!";

/// What an agent's log says when it acts on a pod's containers or sandbox, or on a pod that
/// has no manifest (step 5 checks the upgraded agent's log for them).
const ACTIONS: [&str; 6] = [
    "container started",
    "stopping container",
    "pod sandbox created",
    "terminating pod",
    "stopping runtime pod that has no manifest",
    "finishing the cleanup of a pod that has no manifest",
];

/// How many records of the node's embedded runtime of `kind` (`sandboxes`, `containers`: the
/// `record` file of each object's directory) belong to pod `uid`.
fn runtime_records(node: &Node, kind: &str, record: &str, uid: &str) -> usize {
    std::fs::read_dir(node.root().join("runtime").join(kind))
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path().join(record)).ok())
        .filter_map(|b| serde_json::from_slice::<Value>(&b).ok())
        .filter(|r| r["uid"] == uid || r["labels"]["io.kubernetes.pod.uid"] == uid)
        .count()
}

/// `bin --version`, one line.
fn version_of(bin: &std::path::Path) -> String {
    let out = std::process::Command::new(bin)
        .arg("--version")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} --version: {}",
        bin.display(),
        text(&out)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The lines of an agent's log about pod `uid` (its worker's span) with `message`.
fn pod_lines<'a>(log: &'a str, uid: &str, message: &str) -> Vec<&'a str> {
    let uid = format!("uid={uid}");
    log.lines()
        .filter(|l| l.contains(&uid) && l.contains(message))
        .collect()
}

/// The health checks of `kubeadm upgrade plan` and `apply` (`phases/upgrade/health.go`) that
/// cannot pass on a staticlet node, each with the reason. kubeadm still runs an ignored check
/// (it only turns its error into a warning): CreateJob waits its full 15 s for the Job.
const IGNORED_UPGRADE_PREFLIGHT: [(&str, &str); 1] = [(
    "CreateJob",
    "it runs a Job and waits for its pod to complete on a schedulable node; the only node is \
     staticlet's, which runs static pods only (the pod, bound here, gets a StaticPodsOnly event)",
)];

/// The preflight check of the failing upgrade (step 6) that fails by construction, with the
/// reason.
const IGNORED_FAILING_UPGRADE_PREFLIGHT: [(&str, &str); 1] = [(
    "ImagePull",
    "the new etcd image is deliberately one that exists nowhere (and the node is offline): \
     kubeadm's pull of it must fail, as staticlet's does after",
)];

/// kubeadm's `timeouts.upgradeManifests` for the failing upgrade (default 5 min): how long it
/// waits for etcd's mirror to change before it rolls back.
const FAILING_UPGRADE_TIMEOUT_S: u64 = 30;

/// What the upgrade changes: an argument added to the `extraArgs` of these sections of the
/// ClusterConfiguration, with the component whose manifest it changes.
///
/// Not the API server, for CI's time: a changed API server manifest also makes kubeadm restart
/// etcd (see step 5), and the old API server, stopped while etcd restarts, used its whole 30 s
/// grace period here, which made `kubeadm upgrade apply` take about 64 s instead of about 21 s.
/// With `("apiServer", "kube-apiserver", "profiling", "false")` added, the test checks that path
/// instead (etcd restarted in place, as kubelet does).
const UPGRADE_ARGS: &[(&str, &str, &str, &str)] = &[
    ("scheduler", "kube-scheduler", "profiling", "false"),
    (
        "controllerManager",
        "kube-controller-manager",
        "profiling",
        "false",
    ),
];

/// `cluster` (the ClusterConfiguration kubeadm uploaded, v1beta4 YAML, where an unset section
/// is `{}`) with `--name=value` in the `extraArgs` (a list of `{name, value}` in v1beta4) of
/// `section`.
fn with_extra_arg(cluster: &str, section: &str, name: &str, value: &str) -> String {
    // Sections are top-level keys: at the start of a line (the first one too).
    let text = format!("\n{cluster}");
    let empty = format!("\n{section}: {{}}\n");
    assert!(
        text.contains(&empty),
        "no empty {section} section in the ClusterConfiguration:\n{cluster}"
    );
    text.replacen(
        &empty,
        &format!("\n{section}:\n  extraArgs:\n  - name: {name}\n    value: \"{value}\"\n"),
        1,
    )[1..]
        .to_string()
}

/// `cluster` (as in `with_extra_arg`) with `etcd.local.imageTag: tag`.
fn with_etcd_image_tag(cluster: &str, tag: &str) -> String {
    let local = "\netcd:\n  local:\n";
    let text = format!("\n{cluster}");
    assert!(
        text.contains(local),
        "no etcd.local section in the ClusterConfiguration:\n{cluster}"
    );
    text.replacen(local, &format!("{local}    imageTag: \"{tag}\"\n"), 1)[1..].to_string()
}

/// Replaces the ClusterConfiguration in kubeadm's `kubeadm-config` ConfigMap (what `kubeadm
/// upgrade` reads).
fn set_cluster_configuration(node: &Node, cluster: &str) {
    let patch = serde_json::json!({ "data": { "ClusterConfiguration": cluster } }).to_string();
    let out = node.kubectl(&[
        "patch",
        "configmap",
        "kubeadm-config",
        "-n",
        "kube-system",
        "--type",
        "merge",
        "-p",
        &patch,
    ]);
    assert!(out.status.success(), "{}", text(&out));
}

/// The events of `component`'s pod as the agent serves them (`/pods/{ns}/{name}/events`).
fn local_events(node: &Node, component: &str) -> Vec<Value> {
    let out = control_plane::staticlet()
        .args([
            "get",
            "--raw",
            &format!("/pods/kube-system/{component}-{}/events", node.name),
            "--root-dir",
        ])
        .arg(node.root())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    list["items"].as_array().cloned().unwrap_or_default()
}

#[test]
fn kubeadm_init_runs_to_the_end_on_staticlet() {
    if let Some(why) = control_plane::skip_reason() {
        eprintln!("skipped: {why}");
        return;
    }
    let mut timings: Vec<(String, Duration)> = Vec::new();
    let t_setup = Instant::now();
    let mut node = Node::new(NODE);
    // The agent build the node runs up to the middle of step 5's upgrade (see the module doc).
    let previous = std::env::var_os("STATICLET_PREVIOUS_BIN")
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from);
    let current = control_plane::current_bin();
    match &previous {
        Some(p) => {
            eprintln!(
                "agent upgrade in the middle of `kubeadm upgrade apply`: the node runs \
                 STATICLET_PREVIOUS_BIN={} ({}) and is upgraded to this build ({})",
                p.display(),
                version_of(p),
                version_of(&current)
            );
            node.agent_bin = p.clone();
        }
        None => eprintln!(
            "agent restart in the middle of `kubeadm upgrade apply`: STATICLET_PREVIOUS_BIN is \
             unset, so this build ({}) is stopped and started again",
            version_of(&current)
        ),
    }
    node.import_images(true);
    timings.push(("images imported".into(), t_setup.elapsed()));
    let version = node.kubernetes_version();
    let config = format!(
        "apiVersion: kubeadm.k8s.io/v1beta4\nkind: InitConfiguration\nlocalAPIEndpoint:\n  advertiseAddress: {ip}\n  bindPort: {port}\nnodeRegistration:\n  name: {NODE}\n  criSocket: unix:///run/staticlet/cri.sock\n---\napiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\nkubernetesVersion: {version}\nclusterName: staticlet-kubeadm-e2e\netcd:\n  local:\n    dataDir: {data}\n",
        ip = host_ip(),
        port = control_plane::free_port(),
        data = node.path("etcd-data").display(),
    );
    std::fs::write(node.path("kubeadm.yaml"), config).unwrap();

    // 1. The agent first, as systemd would start it: it waits for kubeadm's config, serving CRI.
    node.start_kubeadm_agent();
    let agent_pid = node.agent.as_ref().unwrap().id();
    node.wait_for_kubeadm_config();

    // 2. kubeadm init, all phases.
    let ignore = control_plane::ignored_preflight();
    let kubeadm_log = node.path("kubeadm-init.log");
    let t0 = Instant::now();
    let mut kubeadm = node
        .ns(node.bin.join("kubeadm"))
        .args(["init", "--config"])
        .arg(node.path("kubeadm.yaml"))
        .arg(format!("--ignore-preflight-errors={ignore}"))
        .stdout(std::fs::File::create(&kubeadm_log).unwrap())
        .stderr(Stdio::from(
            std::fs::OpenOptions::new()
                .append(true)
                .open(&kubeadm_log)
                .unwrap(),
        ))
        .spawn()
        .unwrap();
    let manifests = node.etc("kubernetes/manifests");
    let (mut t_manifests, mut t_api, mut t_mirrors) = (None, None, None);
    let status = loop {
        if let Some(status) = kubeadm.try_wait().unwrap() {
            break status;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "kubeadm init did not finish in 300 s:\n{}\n--- agent log tail:\n{}",
            std::fs::read_to_string(&kubeadm_log).unwrap_or_default(),
            node.tail()
        );
        if t_manifests.is_none()
            && COMPONENTS
                .iter()
                .all(|c| manifests.join(format!("{c}.yaml")).exists())
        {
            t_manifests = Some(t0.elapsed());
        }
        if t_manifests.is_some() && t_api.is_none() && node.api_ready() {
            t_api = Some(t0.elapsed());
        }
        if t_api.is_some()
            && t_mirrors.is_none()
            && COMPONENTS
                .iter()
                .all(|c| node.mirror(c).is_some_and(|m| ready(&m)))
        {
            t_mirrors = Some(t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let t_init = t0.elapsed();
    let out = std::fs::read_to_string(&kubeadm_log).unwrap_or_default();
    assert!(
        status.success()
            && out.contains("Your Kubernetes control-plane has initialized successfully!"),
        "kubeadm init failed ({status}):\n{out}\n--- agent log tail:\n{}",
        node.tail()
    );
    node.assert_host_untouched();
    // kubeadm named the node through its flags file; the agent started again with it in place.
    let flags = std::fs::read_to_string(node.path("varlib-upper/kubelet/kubeadm-flags.env"))
        .unwrap_or_default();
    assert!(
        flags.contains(&format!("--hostname-override={NODE}")),
        "{flags}"
    );
    assert!(
        node.agent.as_mut().unwrap().try_wait().unwrap().is_none(),
        "the agent exited:\n{}",
        node.tail()
    );
    assert_eq!(node.agent.as_ref().unwrap().id(), agent_pid);
    assert!(
        node.agent_log().contains("starting with kubeadm's files"),
        "{}",
        node.tail()
    );
    let t_manifests = t_manifests.expect("kubeadm wrote the four manifests");
    timings.push(("kubeadm init -> manifests written".into(), t_manifests));
    if let Some(t) = t_api {
        timings.push(("kubeadm init -> API ready".into(), t));
    }
    if let Some(t) = t_mirrors {
        timings.push(("kubeadm init -> 4 mirror pods Ready".into(), t));
    }
    timings.push(("kubeadm init, all phases".into(), t_init));

    // 3. The Node as kubeadm left it, the mirrors, logs and exec.
    let n = node.wait("Node Ready with kubeadm's label and taint", 120, || {
        node.kubectl_json(&["get", "node", NODE]).filter(|n| {
            ready(n)
                && n["metadata"]["labels"]
                    .get("node-role.kubernetes.io/control-plane")
                    .is_some()
                && has_taint(n, "node-role.kubernetes.io/control-plane", "NoSchedule")
        })
    });
    assert!(
        n["status"]["nodeInfo"]["kubeletVersion"]
            .as_str()
            .unwrap_or_default()
            .starts_with("v1.34.0+staticlet."),
        "{n}"
    );
    for c in COMPONENTS {
        node.wait(&format!("mirror {c} Running and Ready"), 120, || {
            node.mirror(c)
                .filter(|m| ready(m) && m["status"]["phase"] == "Running")
        });
    }
    // kube-proxy's DaemonSet pod is bound here by the scheduler: never run, one Warning Event.
    let proxy = node.wait("kube-proxy's pod bound to the node", 120, || {
        let pods = node.kubectl_json(&[
            "get",
            "pods",
            "-n",
            "kube-system",
            "-l",
            "k8s-app=kube-proxy",
        ])?;
        pods["items"].as_array()?.first().cloned()
    });
    let proxy_name = proxy["metadata"]["name"].as_str().unwrap().to_string();
    let events = node.wait("the StaticPodsOnly event of kube-proxy's pod", 120, || {
        let items = node.events(&proxy_name, "StaticPodsOnly")?;
        (!items.is_empty()).then_some(items)
    });
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["type"], "Warning");
    let status = node.cluster_status().unwrap();
    assert!(
        status["scheduledPods"]
            .as_array()
            .is_some_and(|ps| ps.iter().any(|p| p["name"] == proxy_name.as_str())),
        "{status}"
    );
    let proxy = node
        .kubectl_json(&["get", "pod", "-n", "kube-system", &proxy_name])
        .unwrap();
    assert_ne!(proxy["status"]["phase"], "Running", "{proxy}");
    // coredns tolerates the control-plane taint: Pending, or bound here and never run.
    let dns = node
        .kubectl_json(&["get", "pods", "-n", "kube-system", "-l", "k8s-app=kube-dns"])
        .unwrap();
    for p in dns["items"].as_array().unwrap() {
        assert_eq!(p["status"]["phase"], "Pending", "{p}");
    }
    if t_mirrors.is_none() {
        timings.push(("kubeadm init -> 4 mirror pods Ready".into(), t0.elapsed()));
    }
    let etcd = format!("etcd-{NODE}");
    let logs = node.wait("kubectl logs on the etcd mirror", 60, || {
        let out = node.kubectl(&["logs", "-n", "kube-system", &etcd, "--tail", "5"]);
        (out.status.success() && !out.stdout.is_empty())
            .then(|| String::from_utf8_lossy(&out.stdout).to_string())
    });
    assert!(logs.lines().count() <= 5, "{logs}");
    let out = node.kubectl(&[
        "exec",
        "-n",
        "kube-system",
        &etcd,
        "--",
        "sh",
        "-c",
        "echo exec-works-on-$(hostname)",
    ]);
    assert!(out.status.success(), "kubectl exec: {}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("exec-works-on-"),
        "{}",
        text(&out)
    );

    // 4. Node ownership: kubeadm's label and taint, and a user's label and annotation, survive
    //    an agent restart (staticlet writes only what kubelet owns).
    let out = node.kubectl(&["label", "node", NODE, "example.com/owner=ops"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = node.kubectl(&["annotate", "node", NODE, "example.com/note=keep"]);
    assert!(out.status.success(), "{}", text(&out));
    node.kill_agent();
    let t_restart = Instant::now();
    node.start_kubeadm_agent();
    node.wait("the restarted agent renewing the Lease", 120, || {
        node.cluster_status()
            .filter(|s| s["leaseRenewed"].is_string() && s["error"].is_null())
    });
    for c in COMPONENTS {
        node.wait(&format!("mirror {c} Ready after the restart"), 120, || {
            node.mirror(c).filter(ready)
        });
    }
    timings.push((
        "agent restart -> 4 mirrors Ready".into(),
        t_restart.elapsed(),
    ));
    let n = node.kubectl_json(&["get", "node", NODE]).unwrap();
    let labels = &n["metadata"]["labels"];
    assert!(
        labels
            .get("node-role.kubernetes.io/control-plane")
            .is_some(),
        "{n}"
    );
    assert_eq!(labels["example.com/owner"], "ops", "{n}");
    assert_eq!(
        n["metadata"]["annotations"]["example.com/note"], "keep",
        "{n}"
    );
    assert!(
        has_taint(&n, "node-role.kubernetes.io/control-plane", "NoSchedule"),
        "{n}"
    );

    // 5. `kubeadm upgrade plan` and `kubeadm upgrade apply` to the same release after a change
    //    of the cluster's configuration (kubeadm's documented reconfiguration path): some
    //    components get an extra argument in the ClusterConfiguration of the `kubeadm-config`
    //    ConfigMap (`UPGRADE_ARGS`); kubeadm regenerates the four manifests. What it does with
    //    each (`phases/upgrade/staticpods.go`, `upgradeComponent`), and what kubelet does:
    //    - a changed manifest: the component's certificates are renewed, the manifest moved to
    //      the backup directory and the new one moved in; kubeadm waits for the mirror's
    //      `kubernetes.io/config.hash` to change and the pod to be Running;
    //    - etcd's manifest, equal, when the API server's changed: its certificates are renewed
    //      and the same manifest is moved out and back in ("Restarting the etcd static pod"):
    //      kubelet sees the file removed and created (REMOVE then ADD of the same UID) and
    //      restarts etcd, so it runs with the renewed certificates; staticlet does the same
    //      (same hash, new container);
    //    - any other equal manifest is skipped before anything else: no renewal, no move, no
    //      restart.
    //    admin.conf and super-admin.conf are renewed at the end (no pod reads them).
    let out = node.kubectl(&[
        "create",
        "configmap",
        "upgrade-survivor",
        "-n",
        "default",
        "--from-literal=written=before-upgrade",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    // Each component's hash, container, restart count and container start time.
    let before: Vec<(String, String, i64, String)> = COMPONENTS
        .iter()
        .map(|c| {
            let m = node.mirror(c).unwrap();
            let local = node.local(c).unwrap();
            (
                annotation(&m, "kubernetes.io/config.hash").to_string(),
                container_id(&local),
                restarts(&local),
                started_at(&local),
            )
        })
        .collect();
    let kubelet_config = node.path("varlib-upper/kubelet/config.yaml");
    let kubelet_config_before = std::fs::read(&kubelet_config).unwrap();
    let cm = node
        .kubectl_json(&["get", "configmap", "kubeadm-config", "-n", "kube-system"])
        .unwrap();
    let changed = UPGRADE_ARGS.iter().fold(
        cm["data"]["ClusterConfiguration"]
            .as_str()
            .unwrap()
            .to_string(),
        |cluster, (section, _, name, value)| with_extra_arg(&cluster, section, name, value),
    );
    set_cluster_configuration(&node, &changed);
    let ignore = IGNORED_UPGRADE_PREFLIGHT
        .iter()
        .map(|(check, _)| *check)
        .collect::<Vec<_>>()
        .join(",");
    let ignore = format!("--ignore-preflight-errors={ignore}");
    let t_plan = Instant::now();
    let plan = run_kubeadm(
        &node,
        "kubeadm-upgrade-plan.log",
        &["upgrade", "plan", &version, &ignore],
        300,
    );
    timings.push(("kubeadm upgrade plan".into(), t_plan.elapsed()));
    assert!(
        plan.0.success(),
        "kubeadm upgrade plan failed ({}):\n{}\n--- agent log tail:\n{}",
        plan.0,
        plan.1,
        node.tail()
    );
    // In the middle of it, the agent is upgraded (or, without STATICLET_PREVIOUS_BIN, restarted)
    // as a package upgrade does it: once kubeadm moved its first new manifest in and waits for
    // that component's new mirror hash, the agent is stopped (SIGTERM, as `systemctl stop`) and
    // this build started with the same command line. It adopts every running container.
    let new_manifests: Vec<(std::path::PathBuf, String)> = UPGRADE_ARGS
        .iter()
        .map(|(_, c, name, value)| {
            (
                node.etc(&format!("kubernetes/manifests/{c}.yaml")),
                format!("--{name}={value}"),
            )
        })
        .collect();
    let old_log = node.log_n;
    let t_apply = Instant::now();
    // (since the apply started, the agent's stop, whether kubeadm still waited for a component)
    let mut upgraded_agent: Option<(Duration, Duration, bool)> = None;
    let (status, out) = run_kubeadm_with_node(
        &mut node,
        "kubeadm-upgrade-apply.log",
        &["upgrade", "apply", &version, "--yes", &ignore],
        600,
        |node, out| {
            if upgraded_agent.is_some() || !out.contains(MOVING_NEW_MANIFEST) {
                return;
            }
            // kubeadm prints the line just before its rename.
            node.wait("kubeadm's first new manifest in place", 30, || {
                new_manifests
                    .iter()
                    .any(|(path, flag)| {
                        std::fs::read_to_string(path).is_ok_and(|m| m.contains(flag))
                    })
                    .then_some(())
            });
            let log = node.path("kubeadm-upgrade-apply.log");
            let waiting = !std::fs::read_to_string(log)
                .unwrap_or_default()
                .contains(COMPONENT_UPGRADED);
            let at = t_apply.elapsed();
            let t_stop = Instant::now();
            node.stop_agent();
            let stop = t_stop.elapsed();
            node.agent_bin = current.clone();
            node.start_kubeadm_agent();
            upgraded_agent = Some((at, stop, waiting));
        },
    );
    let t_apply = t_apply.elapsed();
    assert!(
        status.success()
            && out.contains(&format!(
                "[upgrade] SUCCESS! A control plane node of your cluster was upgraded to \"{version}\"."
            )),
        "kubeadm upgrade apply failed ({status}):\n{out}\n--- agent log tail:\n{}",
        node.tail()
    );
    timings.push((
        format!(
            "kubeadm upgrade apply ({} manifests changed)",
            UPGRADE_ARGS.len()
        ),
        t_apply,
    ));
    let (at, stop, waiting) = upgraded_agent
        .unwrap_or_else(|| panic!("kubeadm never printed {MOVING_NEW_MANIFEST:?}:\n{out}"));
    assert!(
        waiting,
        "kubeadm had already seen a component upgraded when the agent stopped:\n{out}"
    );
    timings.push(("apply -> agent stopped for its upgrade".into(), at));
    timings.push(("agent stop (SIGTERM -> exit)".into(), stop));
    node.assert_host_untouched();
    let backups: Vec<_> = std::fs::read_dir(node.etc("kubernetes/tmp"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("kubeadm-backup-manifests-"))
        })
        .collect();
    assert_eq!(backups.len(), 1, "{backups:?}");
    // The UIDs of the pods kubeadm replaced: the old and the new version of each.
    let mut replaced_uids: Vec<String> = Vec::new();
    for &(_, c, name, value) in UPGRADE_ARGS {
        let flag = format!("--{name}={value}");
        // The new manifest in place, the old one in kubeadm's backup directory.
        let manifest =
            std::fs::read_to_string(node.etc(&format!("kubernetes/manifests/{c}.yaml"))).unwrap();
        assert!(manifest.contains(&flag), "{c}: {manifest}");
        let old = std::fs::read_to_string(backups[0].join(format!("{c}.yaml"))).unwrap();
        assert!(!old.contains(&flag), "{c}: {old}");
        // The component runs the new manifest: a new UID, which its mirror carries, Ready;
        // the process in the pod's cgroup has the flag.
        let i = COMPONENTS.iter().position(|x| *x == c).unwrap();
        let local = node.wait(&format!("the new {c} pod Ready"), 120, || {
            node.local(c)
                .filter(|p| ready(p) && container_id(p) != before[i].1)
        });
        let uid = local["metadata"]["uid"].as_str().unwrap().to_string();
        assert_ne!(uid, before[i].0, "{c}");
        replaced_uids.extend([uid.clone(), before[i].0.clone()]);
        node.wait(
            &format!("{c}'s mirror with the new hash, Ready"),
            120,
            || {
                node.mirror(c)
                    .filter(|m| ready(m) && annotation(m, "kubernetes.io/config.hash") == uid)
            },
        );
        // Replaced exactly once: the runtime holds one sandbox and one container of the new
        // pod, which never restarted, started by one of the two agents. (An agent stopped right
        // after it asked the runtime to start the container does not log "container started":
        // the start completes as the process exits, and the next agent adopts the container.)
        assert_eq!(restarts(&local), 0, "{local}");
        for (kind, record) in [
            ("sandboxes", "sandbox.json"),
            ("containers", "container.json"),
        ] {
            let n = runtime_records(&node, kind, record, &uid);
            assert_eq!(n, 1, "{c}: {n} {kind} of the new pod {uid}");
        }
        for message in ["pod sandbox created", "container started"] {
            let lines: Vec<String> = [old_log, node.log_n]
                .iter()
                .flat_map(|&n| {
                    pod_lines(&node.agent_log_n(n), &uid, message)
                        .into_iter()
                        .map(String::from)
                        .collect::<Vec<_>>()
                })
                .collect();
            assert!(lines.len() <= 1, "{c}: {lines:#?}");
        }
        let cmdlines: Vec<String> = control_plane::pod_pids(&uid)
            .iter()
            .filter_map(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).ok())
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .collect();
        assert!(
            cmdlines.iter().any(|l| l.contains(c) && l.contains(&flag)),
            "{c}: {cmdlines:?}"
        );
    }
    let killing = |c: &str| -> Vec<String> {
        local_events(&node, c)
            .into_iter()
            .filter(|e| e["reason"] == "Killing")
            .map(|e| e["message"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    let changed = |c: &str| UPGRADE_ARGS.iter().any(|(_, x, _, _)| *x == c);
    let api_changed = changed("kube-apiserver");
    for (i, c) in COMPONENTS.iter().enumerate() {
        if changed(c) {
            continue;
        }
        if *c == "etcd" && api_changed {
            // Restarted in place: same hash, a new container, and the agent says why.
            let local = node.wait("etcd restarted and Ready", 120, || {
                node.local("etcd")
                    .filter(|p| ready(p) && container_id(p) != before[i].1)
            });
            assert_eq!(local["metadata"]["uid"], before[i].0.as_str());
            node.wait("etcd's mirror Ready, same hash", 120, || {
                node.mirror("etcd").filter(|m| {
                    ready(m) && annotation(m, "kubernetes.io/config.hash") == before[i].0
                })
            });
            assert!(
                killing("etcd").iter().any(|m| m
                    == "Stopping the pod to restart it (its manifest was removed and added again)"),
                "{:?}",
                local_events(&node, "etcd")
            );
            continue;
        }
        // Not touched: same hash, Ready, nothing stopped by the agent.
        node.wait(&format!("{c}'s mirror Ready, same hash"), 120, || {
            node.mirror(c)
                .filter(|m| ready(m) && annotation(m, "kubernetes.io/config.hash") == before[i].0)
        });
        assert_eq!(killing(c), Vec::<String>::new(), "the agent stopped {c}");
        if !api_changed {
            // Adopted across the agent's upgrade: the same container, never restarted.
            let local = node.local(c).unwrap();
            assert_eq!(container_id(&local), before[i].1, "{c} was restarted");
            assert_eq!(restarts(&local), before[i].2, "{c} was restarted: {local}");
            assert_eq!(
                started_at(&local),
                before[i].3,
                "{c} was restarted: {local}"
            );
            assert!(!before[i].3.is_empty(), "{c}: no start time: {local}");
        }
        // Else its container may have restarted on its own: the controller-manager and the
        // scheduler exit when they cannot renew their leader lease while the API server
        // restarts, and are restarted under `restartPolicy: Always`, as under kubelet.
    }
    // The upgraded agent adopted what ran: it stopped or started containers and sandboxes only
    // of the pods kubeadm replaced (the old version, if the earlier agent had not finished
    // stopping it; the new one, if it had not started it), nothing else. (With the API server
    // changed, etcd is restarted by kubeadm's move too.)
    if api_changed {
        replaced_uids.push(before[0].0.clone());
    }
    let new_log = node.agent_log();
    let about_replaced = |l: &str| {
        replaced_uids
            .iter()
            .any(|u| l.contains(&format!("uid={u}")))
    };
    let acts = |l: &&str| ACTIONS.iter().any(|m| l.contains(m));
    let touched: Vec<&str> = new_log
        .lines()
        .filter(acts)
        .filter(|l| !about_replaced(l))
        .collect();
    assert_eq!(
        touched,
        Vec::<&str>::new(),
        "the upgraded agent touched other pods (replaced: {replaced_uids:?})"
    );
    // Which agent did what of the replacement (it depends on how far the earlier one got).
    for (who, log) in [
        ("earlier agent", node.agent_log_n(old_log)),
        ("upgraded agent", new_log.clone()),
    ] {
        for l in log.lines().filter(acts).filter(|l| about_replaced(l)) {
            eprintln!("{who}: {l}");
        }
    }
    node.wait("the upgraded agent renewing the Lease", 120, || {
        node.cluster_status()
            .filter(|s| s["leaseRenewed"].is_string() && s["error"].is_null())
    });
    // kubeadm's kubelet-config phase wrote the KubeletConfiguration again (from the
    // kubelet-config ConfigMap, unchanged here); kubelet does not watch its config file and
    // kubeadm does not restart it (the upgrade guide restarts it by hand after upgrading its
    // package), so the agent goes on as it is.
    assert_eq!(
        std::fs::read(&kubelet_config).unwrap(),
        kubelet_config_before
    );
    assert!(
        node.agent.as_mut().unwrap().try_wait().unwrap().is_none(),
        "the agent exited:\n{}",
        node.tail()
    );
    // The Node, the API and the data are intact.
    let n = node.kubectl_json(&["get", "node", NODE]).unwrap();
    assert!(ready(&n), "{n}");
    assert!(
        has_taint(&n, "node-role.kubernetes.io/control-plane", "NoSchedule"),
        "{n}"
    );
    assert_eq!(n["metadata"]["labels"]["example.com/owner"], "ops", "{n}");
    assert!(node.api_ready());
    let cm = node
        .kubectl_json(&["get", "configmap", "upgrade-survivor", "-n", "default"])
        .unwrap();
    assert_eq!(cm["data"]["written"], "before-upgrade", "{cm}");

    // 6. A failing upgrade and kubeadm's own rollback (`phases/upgrade/staticpods.go`): etcd's
    //    image tag is set in the ClusterConfiguration to one that exists nowhere (this node is
    //    offline; the tag keeps the current version, with build metadata, so that kubeadm's
    //    version check lets the "upgrade" go ahead). kubeadm backs etcd's data up, moves the
    //    new manifest in and waits `timeouts.upgradeManifests` (short here) for the mirror's
    //    hash to change; staticlet stops the old etcd and cannot pull the new image, so the API
    //    server loses its store and the wait fails. kubeadm moves the old manifest back,
    //    waits for the old etcd to answer (through etcd's client port, not the API) and exits
    //    with its rollback error; staticlet runs the old pod again, the API server reconnects
    //    and the mirror is the old one, Ready. The cluster's data is intact (kubeadm did not
    //    need its data backup: the old etcd came back with its own).
    let manifests_before: Vec<Vec<u8>> = COMPONENTS
        .iter()
        .map(|c| std::fs::read(node.etc(&format!("kubernetes/manifests/{c}.yaml"))).unwrap())
        .collect();
    let etcd_path = node.etc("kubernetes/manifests/etcd.yaml");
    let etcd_i = COMPONENTS.iter().position(|c| *c == "etcd").unwrap();
    let etcd_old = node.wait("etcd Ready before the failing upgrade", 120, || {
        node.local("etcd").filter(ready)
    });
    let etcd_uid = etcd_old["metadata"]["uid"].as_str().unwrap().to_string();
    let etcd_container = container_id(&etcd_old);
    let image = etcd_old["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, tag) = image.rsplit_once(':').unwrap();
    let missing_tag = format!("{tag}_staticlet-e2e-missing");
    let out = node.kubectl(&[
        "create",
        "configmap",
        "rollback-survivor",
        "-n",
        "default",
        "--from-literal=written=before-failing-upgrade",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let cm = node
        .kubectl_json(&["get", "configmap", "kubeadm-config", "-n", "kube-system"])
        .unwrap();
    let cluster_before = cm["data"]["ClusterConfiguration"]
        .as_str()
        .unwrap()
        .to_string();
    set_cluster_configuration(&node, &with_etcd_image_tag(&cluster_before, &missing_tag));
    std::fs::write(
        node.path("kubeadm-upgrade-failing.yaml"),
        format!(
            "apiVersion: kubeadm.k8s.io/v1beta4\nkind: UpgradeConfiguration\ntimeouts:\n  upgradeManifests: {FAILING_UPGRADE_TIMEOUT_S}s\n"
        ),
    )
    .unwrap();
    let ignore = IGNORED_UPGRADE_PREFLIGHT
        .iter()
        .chain(&IGNORED_FAILING_UPGRADE_PREFLIGHT)
        .map(|(check, _)| *check)
        .collect::<Vec<_>>()
        .join(",");
    let config = node.path("kubeadm-upgrade-failing.yaml");
    let t_fail = Instant::now();
    let (mut t_new_in, mut t_restored, mut t_api_back) = (None, None, None);
    let mut pull_failure: Option<String> = None;
    let (status, out) = run_kubeadm_watching(
        &node,
        "kubeadm-upgrade-apply-failing.log",
        &[
            "upgrade",
            "apply",
            &version,
            "--yes",
            "--config",
            config.to_str().unwrap(),
            &format!("--ignore-preflight-errors={ignore}"),
        ],
        600,
        || {
            let on_disk = std::fs::read(&etcd_path).unwrap_or_default();
            if t_new_in.is_none() {
                if String::from_utf8_lossy(&on_disk).contains(&missing_tag) {
                    t_new_in = Some(t_fail.elapsed());
                }
                return;
            }
            if pull_failure.is_none() {
                // What staticlet does with the new version: the image cannot be pulled.
                pull_failure = node
                    .local("etcd")
                    .filter(|p| p["metadata"]["uid"] != etcd_uid.as_str())
                    .and_then(|p| {
                        p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
                            .as_str()
                            .filter(|r| matches!(*r, "ErrImagePull" | "ImagePullBackOff"))
                            .map(String::from)
                    });
            }
            if t_restored.is_none() && on_disk == manifests_before[etcd_i] {
                t_restored = Some(t_fail.elapsed());
            }
            if t_restored.is_some() && t_api_back.is_none() && node.api_ready() {
                t_api_back = Some(t_fail.elapsed());
            }
        },
    );
    let t_failing = t_fail.elapsed();
    let failed = |why: &str| {
        format!(
            "{why} ({status}):\n{out}\n--- agent log tail:\n{}",
            node.tail()
        )
    };
    assert!(!status.success(), "{}", failed("kubeadm succeeded"));
    for line in [
        "[upgrade/staticpods] Moving new manifest to",
        // The wait's error: the API server's (it lost etcd) or, had it answered, "did not
        // change after 30s".
        "static Pod hash for component etcd on Node",
        "couldn't upgrade control plane. kubeadm has tried to recover everything into the earlier state",
        "[upgrade/etcd] Etcd was rolled back and is now available",
        "fatal error when trying to upgrade the etcd cluster, rolled the state back to pre-upgrade state",
    ] {
        assert!(out.contains(line), "{}", failed(&format!("no {line:?}")));
    }
    assert!(
        !out.contains("Rolling back etcd data"),
        "{}",
        failed("kubeadm had to restore etcd's data")
    );
    let t_new_in = t_new_in.unwrap_or_else(|| panic!("{}", failed("no new etcd manifest seen")));
    let pull_failure = pull_failure.unwrap_or_else(|| {
        panic!(
            "{}",
            failed("the new etcd pod was never seen waiting on its image")
        )
    });
    node.assert_host_untouched();
    // Every manifest is the one before: etcd's moved back, the others never touched.
    for (i, c) in COMPONENTS.iter().enumerate() {
        assert_eq!(
            std::fs::read(node.etc(&format!("kubernetes/manifests/{c}.yaml"))).unwrap(),
            manifests_before[i],
            "{c}'s manifest"
        );
    }
    // staticlet runs the old etcd again (same UID, new containers), its mirror the old one.
    let local = node.wait("the old etcd pod Ready again", 180, || {
        node.local("etcd")
            .filter(|p| ready(p) && container_id(p) != etcd_container)
    });
    assert_eq!(local["metadata"]["uid"], etcd_uid.as_str(), "{local}");
    node.wait("etcd's mirror with the old hash, Ready", 180, || {
        node.mirror("etcd")
            .filter(|m| ready(m) && annotation(m, "kubernetes.io/config.hash") == etcd_uid)
    });
    let t_api_back = t_api_back.unwrap_or_else(|| {
        node.wait("the API server ready again", 180, || {
            node.api_ready().then_some(())
        });
        t_fail.elapsed()
    });
    for c in COMPONENTS {
        node.wait(&format!("mirror {c} Ready after the rollback"), 180, || {
            node.mirror(c).filter(ready)
        });
    }
    // What the agent tells: the new version's pull failure and the stops, recorded while the
    // API server had no store, reach it once it answers again (`kubectl get events`, `kubectl
    // describe pod`), about the pod each happened to: the failing version (the new UID) and the
    // old etcd stopped for it.
    let etcd_name = format!("etcd-{NODE}");
    let api_events = node.wait("the failing upgrade's events in the API", 180, || {
        let items = node
            .kubectl_json(&[
                "get",
                "events",
                "-n",
                "kube-system",
                "--field-selector",
                &format!("involvedObject.name={etcd_name}"),
            ])?
            .get("items")?
            .as_array()?
            .clone();
        let about = |reason: &str, new: bool, needle: &str| {
            items.iter().any(|e| {
                e["reason"] == reason
                    && (e["involvedObject"]["uid"] != etcd_uid.as_str()) == new
                    && e["message"].as_str().unwrap_or_default().contains(needle)
            })
        };
        (about("Failed", true, &missing_tag) && about("Killing", false, "")).then_some(items)
    });
    let shown: Vec<String> = api_events
        .iter()
        .map(|e| {
            format!(
                "{} {} x{}: {}",
                e["involvedObject"]["uid"].as_str().unwrap_or_default(),
                e["reason"].as_str().unwrap_or_default(),
                e["count"],
                e["message"].as_str().unwrap_or_default()
            )
        })
        .collect();
    eprintln!("etcd's events after the rollback:\n{}", shown.join("\n"));
    let manifests = control_plane::staticlet()
        .args(["get", "manifests", "-o", "json", "--root-dir"])
        .arg(node.root())
        .output()
        .unwrap();
    assert!(manifests.status.success(), "{}", text(&manifests));
    let manifests: Value = serde_json::from_slice(&manifests.stdout).unwrap();
    let etcd_source = manifests["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| {
            m["origin"]
                .as_str()
                .is_some_and(|o| o.ends_with("/etcd.yaml"))
        })
        .unwrap_or_else(|| panic!("no etcd.yaml in {manifests:#}"));
    assert!(etcd_source["error"].is_null(), "{etcd_source}");
    // Nothing lost, the cluster usable: both ConfigMaps read, a write works.
    for (name, value) in [
        ("upgrade-survivor", "before-upgrade"),
        ("rollback-survivor", "before-failing-upgrade"),
    ] {
        let cm = node
            .kubectl_json(&["get", "configmap", name, "-n", "default"])
            .unwrap();
        assert_eq!(cm["data"]["written"], value, "{cm}");
    }
    // Back to the configuration that runs (kubeadm uploads it only after a successful
    // upgrade; the operator undoes the edit).
    set_cluster_configuration(&node, &cluster_before);
    assert!(
        node.agent.as_mut().unwrap().try_wait().unwrap().is_none(),
        "the agent exited:\n{}",
        node.tail()
    );
    eprintln!("the failing etcd pod waited with {pull_failure}");
    timings.push((
        "failing apply -> new etcd manifest in place".into(),
        t_new_in,
    ));
    if let Some(t) = t_restored {
        timings.push(("failing apply -> old manifest back".into(), t));
    }
    timings.push(("failing apply -> API ready again".into(), t_api_back));
    timings.push((
        format!("failing kubeadm upgrade apply ({FAILING_UPGRADE_TIMEOUT_S} s timeout)"),
        t_failing,
    ));

    control_plane::report_timings(
        &format!(
            "kubeadm init on staticlet (Kubernetes {version}, embedded runtime, this machine):"
        ),
        &timings,
    );
}
