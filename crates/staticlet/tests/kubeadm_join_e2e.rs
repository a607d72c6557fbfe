//! `kubeadm join --control-plane`, unmodified, with staticlet as the "kubelet" of both nodes
//! (issue 14, item 7): a two-node control plane with stacked etcd.
//!
//! Two nodes, each in its own mount namespace (overlays on /etc and /var/lib, its own
//! /var/lib/etcd, /run/staticlet, root and log directories) and its own network namespace
//! (fixture: `common/control_plane.rs`, [`Node::isolated`]), joined by a veth pair: node 1 at
//! [`IP1`], node 2 at [`IP2`]. Nothing listens on the machine's own network, so the test can run
//! beside any other. The pods' cgroups do not collide: a static pod's UID (its cgroup's name,
//! `/staticlet/pod<uid>`) is a hash that includes the node's name, as kubelet's.
//!
//! 1. Node 1: the agent as kubeadm's systemd drop-in starts it, then `kubeadm init --config
//!    --upload-certs` with `controlPlaneEndpoint: IP1:6443` (the endpoint both nodes reach; a
//!    load balancer's address in production), a known bootstrap token and certificate key:
//!    kubeadm uploads the control-plane certificates, encrypted with that key, to the
//!    `kubeadm-certs` Secret and prints the join command, whose CA hash the test takes.
//! 2. Node 2: the agent started the same way (it waits for kubeadm's files, serving CRI), then
//!    `kubeadm join IP1:6443 --control-plane --token --discovery-token-ca-cert-hash
//!    --certificate-key`: discovery through the `cluster-info` ConfigMap, preflight through
//!    staticlet's CRI, the certificates downloaded and the API server, controller-manager and
//!    scheduler manifests written; kubelet-start writes `bootstrap-kubelet.conf` (pointing at
//!    node 2's own API server: kubeadm's `ControlPlaneKubeletLocalMode`, on by default in
//!    v1.34), `config.yaml` and `kubeadm-flags.env` and "restarts the kubelet" (the agent
//!    starts with them itself); kubeadm adds node 2's etcd to the cluster as a learner (through
//!    the client URL it finds in node 1's etcd mirror pod's annotation), writes etcd's manifest
//!    and promotes the member once it caught up; the agent's TLS bootstrap goes through node 2's
//!    API server once that has its etcd (CSR approved by the controller-manager,
//!    `/etc/kubernetes/kubelet.conf` written); kubeadm waits for it, for the control plane, and
//!    labels and taints node 2's Node, to its final line.
//! 3. Both Nodes Ready with the control-plane label and taint; the 8 mirror pods Running and
//!    Ready, each owned by its own Node; etcd lists 2 voting members; a ConfigMap written
//!    through node 1's API server is read through node 2's; `kubectl logs` on node 2's etcd
//!    mirror through both API servers (each reaching node 2's node API at its address).
//! 4. kubeadm deleted node 2's `bootstrap-kubelet.conf`; the `kubelet.conf` the agent wrote
//!    points at node 2's own API server. The agent restarted ("systemctl restart kubelet")
//!    starts with `kubelet.conf` alone and adopts the four running pods: no restart.
//!
//! Timings go to `target/control-plane-timings.txt`.
// Real processes in real time: std::time::Instant is right here.
#![allow(clippy::disallowed_types)]

use std::time::{Duration, Instant};

use serde_json::Value;

#[path = "common/control_plane.rs"]
mod control_plane;

use control_plane::{has_taint, ready, run_kubeadm_watching, text, Node, COMPONENTS};

const NODE1: &str = "kjoin-1";
const NODE2: &str = "kjoin-2";
const IP1: &str = "192.168.251.1";
const IP2: &str = "192.168.251.2";
/// The API servers' port (each node has its own network).
const PORT: u16 = 6443;
/// The bootstrap token of `kubeadm init`, used by `kubeadm join` for discovery and for the
/// agent's TLS bootstrap.
const TOKEN: &str = "kjoin0.0123456789abcdef";

/// A new certificate key (what `kubeadm certs certificate-key` prints: 32 random bytes, hex).
fn certificate_key() -> String {
    let mut b = [0u8; 32];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom").unwrap(), &mut b).unwrap();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The `--discovery-token-ca-cert-hash` value in kubeadm init's printed join command.
fn ca_cert_hash(init_out: &str) -> String {
    let (_, rest) = init_out
        .split_once("--discovery-token-ca-cert-hash ")
        .unwrap_or_else(|| panic!("no join command in kubeadm init's output:\n{init_out}"));
    rest.split_whitespace().next().unwrap().to_string()
}

/// kubectl against node 2's own API server, as the cluster admin (the `admin.conf` kubeadm
/// join wrote there, whose server is the control-plane endpoint).
fn kubectl2(node2: &Node, args: &[&str]) -> std::process::Output {
    node2.kubectl_with("admin.conf", Some(&format!("https://{IP2}:{PORT}")), args)
}

/// etcd's members, through node 1's etcd client URL (etcd's gRPC gateway) with kubeadm's
/// health-check client certificate.
fn etcd_members(node1: &Node) -> Option<Vec<Value>> {
    let pki = node1.etc("kubernetes/pki/etcd");
    let out = node1
        .ns("curl")
        .args(["-sf", "--max-time", "5", "--cacert"])
        .arg(pki.join("ca.crt"))
        .arg("--cert")
        .arg(pki.join("healthcheck-client.crt"))
        .arg("--key")
        .arg(pki.join("healthcheck-client.key"))
        .args(["-X", "POST", "-d", "{}"])
        .arg(format!("https://{IP1}:2379/v3/cluster/member/list"))
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    v["members"].as_array().cloned()
}

#[test]
fn kubeadm_join_control_plane_on_staticlet() {
    if let Some(why) = control_plane::skip_reason() {
        eprintln!("skipped: {why}");
        return;
    }
    let mut timings: Vec<(String, Duration)> = Vec::new();
    let t_setup = Instant::now();
    let mut node1 = Node::isolated(NODE1);
    let mut node2 = Node::isolated(NODE2);
    control_plane::link(&node1, IP1, &node2, IP2);
    // The images, imported into the two stores side by side (node 2's import may go on while
    // node 1 runs kubeadm init).
    let tars = node1.build_images(true);
    let importer = {
        let (root, tars) = (node2.root(), tars.clone());
        std::thread::spawn(move || control_plane::import_archives(&root, &tars))
    };
    node1.import_archives(&tars);
    timings.push((
        "two nodes set up, node 1's images".into(),
        t_setup.elapsed(),
    ));
    let version = node1.kubernetes_version();
    let key = certificate_key();
    let endpoint = format!("{IP1}:{PORT}");
    std::fs::write(
        node1.path("kubeadm.yaml"),
        format!(
            "apiVersion: kubeadm.k8s.io/v1beta4\nkind: InitConfiguration\nbootstrapTokens:\n- token: {TOKEN}\ncertificateKey: {key}\nlocalAPIEndpoint:\n  advertiseAddress: {IP1}\n  bindPort: {PORT}\nnodeRegistration:\n  name: {NODE1}\n  criSocket: unix:///run/staticlet/cri.sock\n---\napiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\nkubernetesVersion: {version}\nclusterName: staticlet-kubeadm-join-e2e\ncontrolPlaneEndpoint: {endpoint}\n"
        ),
    )
    .unwrap();
    let ignore = format!(
        "--ignore-preflight-errors={}",
        control_plane::ignored_preflight()
    );

    // 1. Node 1: kubeadm init, its certificates uploaded for the joining control plane.
    node1.start_kubeadm_agent();
    node1.wait_for_kubeadm_config();
    let t_init = Instant::now();
    let config = node1.path("kubeadm.yaml");
    let (status, out) = run_kubeadm_watching(
        &node1,
        "kubeadm-init.log",
        &[
            "init",
            "--upload-certs",
            "--config",
            config.to_str().unwrap(),
            &ignore,
        ],
        300,
        || {},
    );
    assert!(
        status.success()
            && out.contains("Your Kubernetes control-plane has initialized successfully!"),
        "kubeadm init failed ({status}):\n{out}\n--- agent log tail:\n{}",
        node1.tail()
    );
    timings.push((
        "node 1: kubeadm init --upload-certs".into(),
        t_init.elapsed(),
    ));
    let hash = ca_cert_hash(&out);
    for c in COMPONENTS {
        node1.wait(&format!("node 1: mirror {c} Ready"), 180, || {
            node1.mirror(c).filter(ready)
        });
    }
    timings.push(("node 1: 4 mirrors Ready".into(), t_init.elapsed()));

    // 2. Node 2: kubeadm join --control-plane.
    importer.join().unwrap();
    timings.push(("node 2's images imported".into(), t_setup.elapsed()));
    node2.start_kubeadm_agent();
    node2.wait_for_kubeadm_config();
    let manifests2 = node2.etc("kubernetes/manifests");
    let kubelet_conf2 = node2.etc("kubernetes/kubelet.conf");
    let t_join = Instant::now();
    let (mut t_manifests, mut t_etcd_manifest, mut t_bootstrapped, mut t_api2) =
        (None, None, None, None);
    let (status, out) = run_kubeadm_watching(
        &node2,
        "kubeadm-join.log",
        &[
            "join",
            &endpoint,
            "--control-plane",
            "--token",
            TOKEN,
            "--discovery-token-ca-cert-hash",
            &hash,
            "--certificate-key",
            &key,
            "--node-name",
            NODE2,
            "--cri-socket",
            "unix:///run/staticlet/cri.sock",
            "--apiserver-advertise-address",
            IP2,
            "--apiserver-bind-port",
            &PORT.to_string(),
            &ignore,
        ],
        400,
        || {
            let at = Some(t_join.elapsed());
            if t_manifests.is_none()
                && [
                    "kube-apiserver",
                    "kube-controller-manager",
                    "kube-scheduler",
                ]
                .iter()
                .all(|c| manifests2.join(format!("{c}.yaml")).exists())
            {
                t_manifests = at;
            }
            if t_etcd_manifest.is_none() && manifests2.join("etcd.yaml").exists() {
                t_etcd_manifest = at;
            }
            if t_bootstrapped.is_none() && kubelet_conf2.exists() {
                t_bootstrapped = at;
            }
            if t_etcd_manifest.is_some() && t_api2.is_none() {
                let out = kubectl2(&node2, &["get", "--raw", "/readyz"]);
                if out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok" {
                    t_api2 = at;
                }
            }
        },
    );
    let t_joined = t_join.elapsed();
    assert!(
        status.success()
            && out.contains(
                "This node has joined the cluster and a new control plane instance was created"
            ),
        "kubeadm join failed ({status}):\n{out}\n--- node 2 agent log tail:\n{}\n--- node 1 agent log tail:\n{}",
        node2.tail(),
        node1.tail()
    );
    node1.assert_host_untouched();
    assert!(
        node2.agent_log().contains("starting with kubeadm's files"),
        "{}",
        node2.tail()
    );
    for (what, t) in [
        (
            "kubeadm join -> 3 control-plane manifests written",
            t_manifests,
        ),
        ("kubeadm join -> etcd manifest written", t_etcd_manifest),
        (
            "kubeadm join -> TLS bootstrap done (kubelet.conf)",
            t_bootstrapped,
        ),
        ("kubeadm join -> node 2's API server ready", t_api2),
    ] {
        if let Some(t) = t {
            timings.push((what.into(), t));
        }
    }
    timings.push(("kubeadm join --control-plane, all phases".into(), t_joined));

    // 3. The two-node control plane.
    for name in [NODE1, NODE2] {
        node1.wait(
            &format!("Node {name} Ready with kubeadm's label and taint"),
            180,
            || {
                node1.kubectl_json(&["get", "node", name]).filter(|n| {
                    ready(n)
                        && n["metadata"]["labels"]
                            .get("node-role.kubernetes.io/control-plane")
                            .is_some()
                        && has_taint(n, "node-role.kubernetes.io/control-plane", "NoSchedule")
                })
            },
        );
    }
    let mut uids = Vec::new();
    for node in [&node1, &node2] {
        let n = node1.kubectl_json(&["get", "node", &node.name]).unwrap();
        let node_uid = n["metadata"]["uid"].as_str().unwrap().to_string();
        for c in COMPONENTS {
            let m = node1.wait(
                &format!("mirror {c}-{} Running, Ready, owned by its Node", node.name),
                180,
                || {
                    node1.mirror_of(&node.name, c).filter(|m| {
                        let owner = &m["metadata"]["ownerReferences"][0];
                        ready(m)
                            && m["status"]["phase"] == "Running"
                            && owner["kind"] == "Node"
                            && owner["name"] == node.name.as_str()
                            && owner["uid"] == node_uid.as_str()
                    })
                },
            );
            assert_eq!(m["spec"]["nodeName"], node.name.as_str(), "{m}");
            uids.push(control_plane::annotation(&m, "kubernetes.io/config.hash").to_string());
        }
    }
    // Eight static pods, eight UIDs (and so eight pod cgroups), though the controller-manager's
    // manifest is the same, byte for byte, on both nodes.
    uids.sort();
    uids.dedup();
    assert_eq!(uids.len(), 8, "{uids:?}");
    timings.push(("kubeadm join -> 8 mirrors Ready".into(), t_join.elapsed()));
    let members = node1.wait("etcd with 2 voting members", 120, || {
        etcd_members(&node1).filter(|ms| ms.len() == 2 && ms.iter().all(|m| m["isLearner"] != true))
    });
    let mut names: Vec<&str> = members
        .iter()
        .map(|m| m["name"].as_str().unwrap_or_default())
        .collect();
    names.sort();
    assert_eq!(names, [NODE1, NODE2], "{members:?}");
    // Written through node 1's API server, read through node 2's.
    let out = node1.kubectl(&[
        "create",
        "configmap",
        "written-on-node-1",
        "-n",
        "default",
        "--from-literal=via=node-1",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let cm = node2.wait("the ConfigMap through node 2's API server", 60, || {
        let out = kubectl2(
            &node2,
            &[
                "get",
                "configmap",
                "written-on-node-1",
                "-n",
                "default",
                "-o",
                "json",
            ],
        );
        out.status
            .success()
            .then(|| serde_json::from_slice::<Value>(&out.stdout).ok())?
    });
    assert_eq!(cm["data"]["via"], "node-1", "{cm}");
    // The node API of node 2 through the API servers (each reaches node 2 at its address).
    let etcd2 = format!("etcd-{NODE2}");
    for (via, kubectl) in [
        (
            "node 1's",
            Box::new(|a: &[&str]| node1.kubectl(a)) as Box<dyn Fn(&[&str]) -> _>,
        ),
        ("node 2's", Box::new(|a: &[&str]| kubectl2(&node2, a))),
    ] {
        let logs = node2.wait(
            &format!("kubectl logs on {etcd2} through {via} API server"),
            60,
            || {
                let out = kubectl(&["logs", "-n", "kube-system", &etcd2, "--tail", "3"]);
                (out.status.success() && !out.stdout.is_empty())
                    .then(|| String::from_utf8_lossy(&out.stdout).to_string())
            },
        );
        assert!(logs.lines().count() <= 3, "{logs}");
    }
    for node in [&mut node1, &mut node2] {
        assert!(
            node.agent.as_mut().unwrap().try_wait().unwrap().is_none(),
            "{}'s agent exited:\n{}",
            node.name,
            node.tail()
        );
    }

    // 4. Node 2 as kubeadm left it: the bootstrap kubeconfig deleted (its token's credential
    //    off the disk), the kubeconfig the agent wrote pointing at the node's own API server,
    //    the Node's address node 2's. Then "systemctl restart kubelet": the agent starts with
    //    kubelet.conf alone and adopts the running pods, none restarted.
    assert!(
        !node2.etc("kubernetes/bootstrap-kubelet.conf").exists(),
        "kubeadm left bootstrap-kubelet.conf"
    );
    let kubelet_conf = std::fs::read_to_string(&kubelet_conf2).unwrap();
    assert!(
        kubelet_conf.lines().any(|l| l.trim().starts_with("server:")
            && l.trim_end()
                .trim_end_matches('"')
                .ends_with(&format!("https://{IP2}:{PORT}"))),
        "{kubelet_conf}"
    );
    let n = node1.kubectl_json(&["get", "node", NODE2]).unwrap();
    assert!(
        n["status"]["addresses"].as_array().is_some_and(|a| a
            .iter()
            .any(|a| a["type"] == "InternalIP" && a["address"] == IP2)),
        "{n}"
    );
    let containers: Vec<String> = COMPONENTS
        .iter()
        .map(|c| control_plane::container_id(&node2.local(c).unwrap()))
        .collect();
    node2.kill_agent();
    let t_restart = Instant::now();
    node2.start_kubeadm_agent();
    node2.wait("node 2's restarted agent renewing its Lease", 120, || {
        node2
            .cluster_status()
            .filter(|s| s["leaseRenewed"].is_string() && s["error"].is_null())
    });
    for (c, id) in COMPONENTS.iter().zip(&containers) {
        let m = node1.wait(
            &format!("mirror {c}-{NODE2} Ready after the restart"),
            120,
            || node1.mirror_of(NODE2, c).filter(ready),
        );
        assert_eq!(control_plane::restarts(&m), 0, "{m}");
        assert_eq!(
            &control_plane::container_id(&node2.local(c).unwrap()),
            id,
            "{c} was restarted"
        );
    }
    timings.push((
        "node 2's agent restarted -> 4 mirrors Ready".into(),
        t_restart.elapsed(),
    ));

    control_plane::report_timings(
        &format!(
            "kubeadm join --control-plane on staticlet (Kubernetes {version}, 2 nodes, embedded runtime, this machine):"
        ),
        &timings,
    );
}
