//! Mirror pods, Node and Lease against a real kube-apiserver (with `--authorization-mode=Node,RBAC`
//! and NodeRestriction, staticlet authenticating as `system:node:<name>` like a kubelet), driven
//! with the real kubectl. The agent is the real binary; containers are simulated
//! (`simulate://`): what is under test is the API side; containers named `slow` ignore their
//! stop signal, so they take their whole grace period to stop.
//!
//! Reproduces kubelet's node-e2e mirror pod scenarios (spec §7: M1-M4, G1, G3) and the faults
//! of issue 6: API server killed and frozen, a mirror refused by an admission policy, the Node
//! deleted. Skipped (with the reason) when the Kubernetes binaries are missing, unless
//! `STATICLET_REQUIRE_K8S=1` (CI).
// Real processes in real time: std::time::Instant is right here.
#![allow(clippy::disallowed_types)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use staticlet_k8s_testenv::{skip_reason, ControlPlane};

const NODE: &str = "node-a";

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_staticlet"))
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn pod_yaml(name: &str, image: &str, extra_meta: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels:\n    app: {name}\n{extra_meta}spec:\n{extra_spec}  containers:\n  - name: c\n    image: {image}\n"
    )
}

struct Env {
    cp: ControlPlane,
    dir: tempfile::TempDir,
    agent: Option<KillOnDrop>,
}

impl Env {
    fn new() -> Option<Env> {
        if let Some(why) = skip_reason() {
            eprintln!("skipped: {why}");
            return None;
        }
        let cp = ControlPlane::start(NODE).unwrap_or_else(|e| panic!("control plane: {e}"));
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("manifests")).unwrap();
        Some(Env {
            cp,
            dir,
            agent: None,
        })
    }

    fn manifests(&self) -> PathBuf {
        self.dir.path().join("manifests")
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("agent.log")
    }

    fn write(&self, file: &str, yaml: &str) {
        // Written whole then renamed, as an editor or `kubeadm upgrade` does.
        let tmp = self.dir.path().join(".tmp-manifest");
        std::fs::write(&tmp, yaml).unwrap();
        std::fs::rename(&tmp, self.manifests().join(file)).unwrap();
    }

    fn remove(&self, file: &str) {
        std::fs::remove_file(self.manifests().join(file)).unwrap();
    }

    fn start_agent(&mut self) {
        self.start_agent_with(&[]);
    }

    fn start_agent_with(&mut self, extra: &[&str]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .unwrap();
        let child = bin()
            .args([
                "run",
                "--hostname-override",
                NODE,
                "--container-runtime-endpoint",
                "simulate://?ignore-stop-signal=slow",
                "--node-labels",
                "example.com/role=edge",
                "--file-check-frequency",
                "1s",
            ])
            .arg("--pod-manifest-path")
            .arg(self.manifests())
            .arg("--root-dir")
            .arg(self.root())
            .arg("--log-dir")
            .arg(self.dir.path().join("logs"))
            .arg("--kubeconfig")
            .arg(self.cp.node_kubeconfig())
            // No node API or healthz port: tests run side by side (node_api_e2e.rs tests them).
            .args(["--port", "0", "--healthz-port", "0"])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.agent = Some(KillOnDrop(child));
    }

    fn tail(&self) -> String {
        let log = std::fs::read_to_string(self.log()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let agent = lines[lines.len().saturating_sub(40)..].join("\n");
        format!(
            "--- agent log tail:\n{agent}\n--- apiserver log tail:\n{}",
            self.cp.apiserver_log_tail(15)
        )
    }

    /// Polls `f` every 250 ms until it gives a value, for at most `secs`.
    fn wait<T>(&self, what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {secs} s waiting for {what}\n{}",
                self.tail()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The mirror pod in the API (None: NotFound).
    fn mirror(&self, name: &str) -> Option<Value> {
        let full = format!("{name}-{NODE}");
        match self
            .cp
            .kubectl_json(&["get", "pod", "-n", "default", &full, "--request-timeout=5s"])
        {
            Ok(v) => Some(v),
            Err(e) if e.contains("NotFound") || e.contains("not found") => None,
            Err(e) => panic!("kubectl get pod {full}: {e}"),
        }
    }

    /// The pod as the agent serves it locally.
    fn local(&self, name: &str) -> Option<Value> {
        let out = bin()
            .args(["get", "pod", &format!("{name}-{NODE}"), "-o", "json"])
            .arg("--root-dir")
            .arg(self.root())
            .output()
            .unwrap();
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).unwrap())
    }

    fn node(&self) -> Option<Value> {
        self.cp
            .kubectl_json(&["get", "node", NODE, "--request-timeout=5s"])
            .ok()
    }

    /// Waits for a running, valid mirror (not `not_uid`) and returns it.
    fn wait_mirror_running(&self, name: &str, not_uid: Option<&str>, secs: u64) -> Value {
        self.wait(&format!("mirror {name} running"), secs, || {
            let m = self.mirror(name)?;
            (running(&m) && m["metadata"]["uid"].as_str() != not_uid).then_some(m)
        })
    }

    /// kubelet's `validateMirrorPod` (test/e2e_node/mirror_pod_test.go), plus the node owner.
    fn validate_mirror(&self, m: &Value) {
        let ann = &m["metadata"]["annotations"];
        let hash = ann["kubernetes.io/config.hash"].as_str().unwrap_or("");
        assert!(!hash.is_empty(), "no config.hash: {m}");
        assert_eq!(
            ann["kubernetes.io/config.mirror"].as_str(),
            Some(hash),
            "{m}"
        );
        let source = ann["kubernetes.io/config.source"].as_str().unwrap_or("api");
        assert_ne!(source, "api", "{m}");
        let node_uid = self.node().unwrap()["metadata"]["uid"].clone();
        assert_eq!(
            m["metadata"]["ownerReferences"],
            serde_json::json!([{"apiVersion": "v1", "kind": "Node", "name": NODE,
                "uid": node_uid, "controller": true}]),
            "{m}"
        );
        assert_eq!(m["spec"]["nodeName"], NODE);
    }
}

fn running(p: &Value) -> bool {
    p["status"]["phase"] == "Running"
        && p["status"]["containerStatuses"]
            .as_array()
            .is_some_and(|cs| {
                !cs.is_empty() && cs.iter().all(|c| c["state"]["running"].is_object())
            })
}

fn uid(p: &Value) -> String {
    p["metadata"]["uid"].as_str().unwrap().to_string()
}

fn image(p: &Value) -> String {
    p["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap()
        .to_string()
}

fn kubectl_ok(cp: &ControlPlane, args: &[&str]) {
    let out = cp.kubectl(args);
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn node_lease_and_mirror_lifecycle() {
    let Some(mut env) = Env::new() else { return };
    env.write("web.yaml", &pod_yaml("web", "busybox:1", "", ""));
    env.start_agent();

    // The Node: registered by the agent with kubelet's labels, ours, addresses, capacity.
    let node = env.wait("Node Ready", 60, || {
        let n = env.node()?;
        let ready = n["status"]["conditions"]
            .as_array()?
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        ready.then_some(n)
    });
    let labels = &node["metadata"]["labels"];
    assert_eq!(labels["kubernetes.io/hostname"], NODE);
    assert_eq!(labels["kubernetes.io/os"], "linux");
    assert_eq!(labels["example.com/role"], "edge");
    assert!(node["status"]["nodeInfo"]["kubeletVersion"]
        .as_str()
        .unwrap()
        .starts_with("v1.34.0+staticlet."));
    assert_eq!(node["status"]["capacity"]["pods"], "110");
    let node_uid = uid(&node);

    // M0: the mirror appears, valid and running.
    let m = env.wait_mirror_running("web", None, 60);
    env.validate_mirror(&m);
    assert_eq!(m["metadata"]["labels"]["app"], "web");
    let local = env.local("web").unwrap();
    assert_eq!(
        local["metadata"]["annotations"]["staticlet.io/mirror-uid"],
        m["metadata"]["uid"]
    );
    assert_ne!(local["metadata"]["uid"], m["metadata"]["uid"]);

    // The pod's events are in the API, about the static pod (its UID is the mirror's
    // config.mirror annotation, where `kubectl describe pod` looks): describe lists them.
    let ev = env.wait("the pod's Started event in the API", 60, || {
        let evs = env
            .cp
            .kubectl_json(&[
                "get",
                "events",
                "-n",
                "default",
                "--field-selector",
                &format!("involvedObject.name=web-{NODE},reason=Started"),
            ])
            .ok()?;
        evs["items"].as_array()?.first().cloned()
    });
    assert_eq!(
        ev["involvedObject"]["uid"], m["metadata"]["annotations"]["kubernetes.io/config.mirror"],
        "{ev}"
    );
    assert_eq!(ev["involvedObject"]["kind"], "Pod", "{ev}");
    assert_eq!(ev["source"]["component"], "staticlet", "{ev}");
    assert_eq!(ev["source"]["host"], NODE, "{ev}");
    let dbg = env.cp.kubectl(&["get", "events", "-n", "default", "-o", "json", "--field-selector", &format!("involvedObject.name=web-node-a,involvedObject.namespace=default,involvedObject.kind=Pod,involvedObject.uid={}", uid(&m))]);
    eprintln!("DEBUG {}", String::from_utf8_lossy(&dbg.stdout));
    let out = env
        .cp
        .kubectl(&["describe", "pod", "-n", "default", "web-node-a", "-v=8"]);
    eprintln!("DEBUG2 {}", String::from_utf8_lossy(&out.stderr));
    let describe = String::from_utf8_lossy(&out.stdout);
    let events = describe.split("Events:").nth(1).unwrap_or_default();
    assert!(
        events
            .lines()
            .any(|l| l.contains("Started") && l.contains("staticlet")),
        "{describe}"
    );

    // The Lease: held by the node, 40 s, renewed.
    let lease = env.wait("Lease", 30, || {
        env.cp
            .kubectl_json(&["get", "lease", "-n", "kube-node-lease", NODE])
            .ok()
    });
    assert_eq!(lease["spec"]["holderIdentity"], NODE);
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 40);
    let first = lease["spec"]["renewTime"].clone();
    env.wait("Lease renewed", 40, || {
        let l = env
            .cp
            .kubectl_json(&["get", "lease", "-n", "kube-node-lease", NODE])
            .ok()?;
        (l["spec"]["renewTime"] != first).then_some(())
    });

    // M1: the manifest changes → the mirror is recreated with the new spec.
    let before = uid(&m);
    env.write("web.yaml", &pod_yaml("web", "busybox:2", "", ""));
    let m = env.wait_mirror_running("web", Some(&before), 60);
    assert_eq!(image(&m), "busybox:2");
    env.validate_mirror(&m);

    // M2: a graceful delete from kubectl → deleted at once and recreated; M3: a forced delete
    // → recreated.
    let mut m = m;
    for how in [
        &["--grace-period=30", "--wait=false"][..],
        &["--grace-period=0", "--force"],
    ] {
        let before = uid(&m);
        let mut args = vec!["delete", "pod", "-n", "default", "web-node-a"];
        args.extend_from_slice(how);
        kubectl_ok(&env.cp, &args);
        m = env.wait_mirror_running("web", Some(&before), 60);
        env.validate_mirror(&m);
    }

    // Status drift: someone rewrites the mirror's status → staticlet puts it back.
    kubectl_ok(
        &env.cp,
        &[
            "patch",
            "pod",
            "-n",
            "default",
            "web-node-a",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"phase":"Failed"}}"#,
        ],
    );
    let same = uid(&m);
    env.wait("mirror status restored", 30, || {
        let m = env.mirror("web")?;
        (running(&m) && uid(&m) == same).then_some(())
    });

    // The Node deleted → registered again (new UID); the mirror follows the new Node.
    kubectl_ok(&env.cp, &["delete", "node", NODE, "--wait=false"]);
    env.wait("Node registered again", 60, || {
        let n = env.node()?;
        (uid(&n) != node_uid).then_some(())
    });
    let m = env.wait("mirror owned by the new Node", 60, || {
        let m = env.mirror("web")?;
        let n = env.node()?;
        (running(&m) && m["metadata"]["ownerReferences"][0]["uid"] == n["metadata"]["uid"])
            .then_some(m)
    });
    env.validate_mirror(&m);

    // The manifest removed → the mirror is deleted.
    env.remove("web.yaml");
    env.wait("mirror deleted", 60, || {
        env.mirror("web").is_none().then_some(())
    });
    env.wait("pod gone locally", 30, || {
        env.local("web").is_none().then_some(())
    });
}

#[test]
fn grace_period_recreate_and_rapid_rewrites() {
    let Some(mut env) = Env::new() else { return };
    let graceful = pod_yaml(
        "graceful",
        "busybox:1",
        "",
        "  terminationGracePeriodSeconds: 20\n",
    )
    .replace("- name: c\n", "- name: slow\n");
    env.write("graceful.yaml", &graceful);
    env.start_agent();
    let m = env.wait_mirror_running("graceful", None, 60);
    let m_uid = uid(&m);

    // G1: the manifest deleted → the mirror stays, same UID, Running, for the grace period
    // (the simulated container ignores SIGTERM), then goes.
    env.remove("graceful.yaml");
    let t0 = Instant::now();
    env.wait("pod terminating locally", 30, || {
        let p = env.local("graceful")?;
        p["metadata"]["deletionTimestamp"].is_string().then_some(())
    });
    while t0.elapsed() < Duration::from_secs(15) {
        let m = env
            .mirror("graceful")
            .unwrap_or_else(|| panic!("mirror gone after {:?}\n{}", t0.elapsed(), env.tail()));
        assert_eq!(uid(&m), m_uid);
        assert_eq!(m["status"]["phase"], "Running", "{m}");
        std::thread::sleep(Duration::from_millis(200));
    }
    env.wait("mirror deleted after the grace period", 60, || {
        env.mirror("graceful").is_none().then_some(())
    });

    // M4: removed and rewritten identically while the old one is still stopping → the same
    // static pod comes back (restartCount 1) and its mirror is Running. (A remove and rewrite
    // faster than the directory relist are one unchanged snapshot: nothing restarts.)
    let quick = pod_yaml(
        "quick",
        "busybox:1",
        "",
        "  terminationGracePeriodSeconds: 3\n",
    )
    .replace("- name: c\n", "- name: slow\n");
    env.write("quick.yaml", &quick);
    env.wait_mirror_running("quick", None, 60);
    env.remove("quick.yaml");
    env.wait("quick terminating locally", 30, || {
        let p = env.local("quick")?;
        p["metadata"]["deletionTimestamp"].is_string().then_some(())
    });
    env.write("quick.yaml", &quick);
    env.wait("mirror with restartCount 1", 60, || {
        let m = env.mirror("quick")?;
        (running(&m) && m["status"]["containerStatuses"][0]["restartCount"] == 1).then_some(())
    });

    // G3: 300 rapid rewrites end with the final spec.
    for i in 0..300 {
        env.write(
            "quick.yaml",
            &pod_yaml("quick", &format!("image-{i}"), "", ""),
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    env.write("quick.yaml", &pod_yaml("quick", "busybox:final", "", ""));
    let m = env.wait("mirror with the final spec", 120, || {
        let m = env.mirror("quick")?;
        (running(&m) && image(&m) == "busybox:final").then_some(m)
    });
    env.validate_mirror(&m);
}

#[test]
fn api_server_faults_and_refused_mirrors() {
    let Some(mut env) = Env::new() else { return };
    env.write("web.yaml", &pod_yaml("web", "busybox:1", "", ""));
    env.start_agent();
    let first = uid(&env.wait_mirror_running("web", None, 60));

    // API server killed: the static pod is untouched; an edit made meanwhile reaches the
    // mirror once the API server is back.
    env.cp.kill_apiserver();
    let local_uid = env.local("web").unwrap()["metadata"]["uid"].clone();
    env.write("web.yaml", &pod_yaml("web", "busybox:2", "", ""));
    env.wait("new version running locally with the API down", 60, || {
        let p = env.local("web")?;
        (running(&p) && image(&p) == "busybox:2" && p["metadata"]["uid"] != local_uid).then_some(())
    });
    env.cp.restart_apiserver().unwrap();
    let m = env.wait("mirror converged after the restart", 90, || {
        let m = env.mirror("web")?;
        (running(&m) && image(&m) == "busybox:2" && uid(&m) != first).then_some(m)
    });
    env.validate_mirror(&m);

    // API server frozen (SIGSTOP): pods still start locally; the mirror comes after the thaw.
    env.cp.freeze_apiserver();
    env.write("late.yaml", &pod_yaml("late", "busybox:1", "", ""));
    env.wait("late pod running locally with the API frozen", 60, || {
        env.local("late").filter(running).map(|_| ())
    });
    // The agent notices the frozen API server (its requests time out) and says so.
    env.wait("the frozen API server reported in /cluster", 60, || {
        let out = bin()
            .args(["get", "--raw", "/cluster", "--root-dir"])
            .arg(env.root())
            .output()
            .ok()?;
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        v["error"].is_string().then_some(())
    });
    env.cp.thaw_apiserver();
    env.wait_mirror_running("late", None, 90);

    // A mirror refused by admission: reported locally with the API's message, pod running.
    env.cp
        .apply(
            r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: no-forbidden-label
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
    - apiGroups: [""]
      apiVersions: ["v1"]
      operations: ["CREATE"]
      resources: ["pods"]
  validations:
  - expression: "!has(object.metadata.labels) || !('forbidden' in object.metadata.labels)"
    message: "pods labelled forbidden are not allowed here"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: no-forbidden-label
spec:
  policyName: no-forbidden-label
  validationActions: [Deny]
"#,
        )
        .unwrap();
    // The policy takes a moment to be enforced: probe it with a server-side dry run.
    env.wait("admission policy enforced", 60, || {
        let out = env.cp.kubectl(&[
            "run",
            "probe",
            "--image=x",
            "--labels=forbidden=yes",
            "--dry-run=server",
        ]);
        String::from_utf8_lossy(&out.stderr)
            .contains("pods labelled forbidden are not allowed here")
            .then_some(())
    });
    env.write(
        "denied.yaml",
        &pod_yaml("denied", "busybox:1", "  annotations:\n    note: x\n", "").replace(
            "    app: denied\n",
            "    app: denied\n    forbidden: \"yes\"\n",
        ),
    );
    let p = env.wait("refusal reported locally", 60, || {
        let p = env.local("denied")?;
        p["metadata"]["annotations"]["staticlet.io/mirror-error"]
            .is_string()
            .then_some(p)
    });
    assert!(running(&p), "the static pod runs anyway: {p}");
    let msg = p["metadata"]["annotations"]["staticlet.io/mirror-error"]
        .as_str()
        .unwrap();
    assert!(
        msg.contains("pods labelled forbidden are not allowed here"),
        "{msg}"
    );
    let out = bin()
        .args(["describe", "pod", "denied-node-a", "--root-dir"])
        .arg(env.root())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("FailedMirror"), "{text}");
    assert!(env.mirror("denied").is_none());
    // The other mirrors are unaffected.
    assert!(running(&env.mirror("web").unwrap()));
}

/// The `StaticPodsOnly` events of pod default/bound.
fn static_pods_only_events(cp: &ControlPlane) -> Vec<Value> {
    cp.kubectl_json(&[
        "get",
        "events",
        "-n",
        "default",
        "--field-selector",
        "involvedObject.name=bound,reason=StaticPodsOnly",
    ])
    .ok()
    .and_then(|e| e["items"].as_array().cloned())
    .unwrap_or_default()
}

/// Issue 14, items 5 and 6: `registerWithTaints` at registration; labels, taints and
/// annotations of others survive an agent restart; a pod bound to the node by someone else is
/// never run or written, and gets exactly one `StaticPodsOnly` Warning Event, also across a
/// restart; `/cluster` lists it.
#[test]
fn node_ownership_and_scheduled_pods() {
    let Some(mut env) = Env::new() else { return };
    let cfg = env.dir.path().join("kubelet.yaml");
    std::fs::write(
        &cfg,
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nregisterWithTaints:\n- key: example.com/dedicated\n  value: cp\n  effect: NoSchedule\n",
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap().to_string();
    env.start_agent_with(&["--config", &cfg]);
    let node = env.wait("Node registered", 60, || env.node());
    // (The API server's TaintNodesByCondition admission adds node.kubernetes.io/not-ready too.)
    assert!(
        node["spec"]["taints"].as_array().is_some_and(|ts| ts.contains(
            &serde_json::json!({"key": "example.com/dedicated", "value": "cp", "effect": "NoSchedule"})
        )),
        "{node}"
    );

    // Someone else's label, annotation and taint, and a pod bound here (no scheduler runs).
    kubectl_ok(
        &env.cp,
        &[
            "label",
            "node",
            NODE,
            "node-role.kubernetes.io/control-plane=",
        ],
    );
    kubectl_ok(
        &env.cp,
        &["annotate", "node", NODE, "example.com/note=keep"],
    );
    kubectl_ok(
        &env.cp,
        &[
            "taint",
            "node",
            NODE,
            "example.com/other=x:PreferNoSchedule",
        ],
    );
    let pod = env.dir.path().join("bound.yaml");
    std::fs::write(
        &pod,
        format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: bound\n  namespace: default\nspec:\n  nodeName: {NODE}\n  containers:\n  - name: c\n    image: busybox:1\n"),
    )
    .unwrap();
    kubectl_ok(&env.cp, &["apply", "-f", pod.to_str().unwrap()]);
    let ev = env.wait("the StaticPodsOnly event", 60, || {
        let e = static_pods_only_events(&env.cp);
        (!e.is_empty()).then_some(e)
    });
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0]["type"], "Warning");
    assert_eq!(ev[0]["involvedObject"]["kind"], "Pod");
    let root = env.root();
    let status = || -> Value {
        let out = bin()
            .args(["get", "--raw", "/cluster", "--root-dir"])
            .arg(&root)
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    };
    env.wait("/cluster listing the pod", 30, || {
        status()["scheduledPods"]
            .as_array()?
            .iter()
            .any(|p| p["name"] == "bound" && p["eventSent"] == true)
            .then_some(())
    });
    let before = env
        .cp
        .kubectl_json(&["get", "pod", "bound", "-n", "default"])
        .unwrap();

    // An agent restart: nothing of the others' is lost, the event is not repeated.
    env.agent = None;
    env.start_agent_with(&["--config", &cfg]);
    let renewed = status()["leaseRenewed"].clone();
    env.wait("the new agent renewing the Lease", 60, || {
        let s = status();
        (s["leaseRenewed"].is_string() && s["leaseRenewed"] != renewed).then_some(())
    });
    env.wait("/cluster listing the pod again", 30, || {
        status()["scheduledPods"]
            .as_array()?
            .iter()
            .any(|p| p["name"] == "bound" && p["eventSent"] == true)
            .then_some(())
    });
    let node = env.node().unwrap();
    assert!(
        node["metadata"]["labels"]
            .get("node-role.kubernetes.io/control-plane")
            .is_some(),
        "{node}"
    );
    assert_eq!(
        node["metadata"]["annotations"]["example.com/note"], "keep",
        "{node}"
    );
    let taints = node["spec"]["taints"].as_array().unwrap();
    for key in ["example.com/dedicated", "example.com/other"] {
        assert!(taints.iter().any(|t| t["key"] == key), "{key}: {node}");
    }
    assert_eq!(
        static_pods_only_events(&env.cp).len(),
        1,
        "the event was repeated"
    );
    let after = env
        .cp
        .kubectl_json(&["get", "pod", "bound", "-n", "default"])
        .unwrap();
    assert_eq!(
        before["metadata"]["resourceVersion"], after["metadata"]["resourceVersion"],
        "the scheduled pod was written to"
    );
    assert_eq!(after["status"]["phase"], "Pending", "{after}");
}
