//! The fixture against real etcd + kube-apiserver processes. Skipped (with the reason printed)
//! when the binaries are missing, unless STATICLET_REQUIRE_K8S=1.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, SystemTime};

use staticlet_k8s_testenv::{skip_reason, ControlPlane};

fn skip() -> bool {
    match skip_reason() {
        Some(why) => {
            eprintln!("skipped: {why}");
            true
        }
        None => false,
    }
}

fn start(node: &str) -> ControlPlane {
    let t0 = SystemTime::now();
    let cp = ControlPlane::start(node).unwrap_or_else(|e| panic!("start({node}): {e}"));
    eprintln!(
        "control plane for {node} at {} ready in {:.1} s ({})",
        cp.server(),
        t0.elapsed().unwrap_or_default().as_secs_f64(),
        cp.dir().display()
    );
    cp
}

fn text(out: &Output) -> String {
    format!(
        "{}: stdout: {} stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    )
}

/// `kubectl --kubeconfig <node> create -f <file>` with `manifest` in the file: as the node.
fn create_as_node(cp: &ControlPlane, name: &str, manifest: &str) -> Output {
    let file = cp.dir().join(format!("{name}.json"));
    std::fs::write(&file, manifest).unwrap();
    let node = cp.node_kubeconfig();
    cp.kubectl(&[
        "--kubeconfig",
        node.to_str().unwrap(),
        "create",
        "-f",
        file.to_str().unwrap(),
    ])
}

/// Polls `f` until it returns true or `secs` pass.
fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = SystemTime::now() + Duration::from_secs(secs);
    loop {
        if f() {
            return true;
        }
        if SystemTime::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn admin_and_node_identities_node_restriction_and_admission_policies() {
    if skip() {
        return;
    }
    let cp = start("node-a");
    assert_eq!(cp.node_name(), "node-a");
    assert!(
        cp.server().starts_with("https://127.0.0.1:"),
        "{}",
        cp.server()
    );
    for kc in [cp.admin_kubeconfig(), cp.node_kubeconfig()] {
        let s = std::fs::read_to_string(&kc).unwrap();
        assert!(s.contains(&format!("server: {}", cp.server())), "{s}");
    }

    // Cluster admin.
    let ns = cp.kubectl_json(&["get", "ns", "default"]).unwrap();
    assert_eq!(ns["metadata"]["name"], "default");
    let who = cp.kubectl_json(&["auth", "whoami"]).unwrap();
    let groups = who["status"]["userInfo"]["groups"].as_array().unwrap();
    assert!(groups.iter().any(|g| g == "system:masters"), "{who}");

    // The node's identity: exactly a kubelet's.
    let node = cp.node_kubeconfig();
    let node = node.to_str().unwrap();
    let out = cp.kubectl(&["--kubeconfig", node, "auth", "whoami", "-o", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    let who: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(who["status"]["userInfo"]["username"], "system:node:node-a");
    let groups = who["status"]["userInfo"]["groups"].as_array().unwrap();
    assert!(groups.iter().any(|g| g == "system:nodes"), "{who}");

    // NodeRestriction: a node may create mirror pods only.
    let plain = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"plain","namespace":"default"},
        "spec":{"nodeName":"node-a","containers":[{"name":"c","image":"busybox:1"}]}}"#;
    let out = create_as_node(&cp, "plain-pod", plain);
    assert!(!out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("forbidden") && stderr.contains("mirror"),
        "{}",
        text(&out)
    );

    // ... and register its own Node.
    let node_obj = r#"{"apiVersion":"v1","kind":"Node","metadata":{"name":"node-a"}}"#;
    let out = create_as_node(&cp, "node-a", node_obj);
    assert!(out.status.success(), "{}", text(&out));
    let n = cp.kubectl_json(&["get", "node", "node-a"]).unwrap();
    assert_eq!(n["metadata"]["name"], "node-a");
    // but not another one.
    let other = node_obj.replace("node-a", "node-b");
    let out = create_as_node(&cp, "node-b", &other);
    assert!(!out.status.success(), "{}", text(&out));

    // A plain pod created by the admin is admitted (the default ServiceAccount exists).
    cp.apply(&plain.replace("\"plain\"", "\"admin-pod\""))
        .unwrap();
    let err = cp.kubectl_json(&["get", "pod", "missing"]).unwrap_err();
    assert!(err.contains("NotFound"), "{err}");

    // ValidatingAdmissionPolicy (admissionregistration.k8s.io/v1) is served and enforced.
    cp.apply(
        r#"
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: no-forbidden-configmaps
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
    - apiGroups: [""]
      apiVersions: [v1]
      operations: [CREATE]
      resources: [configmaps]
  validations:
  - expression: "object.metadata.name != 'forbidden'"
    message: testenv policy says no
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: no-forbidden-configmaps
spec:
  policyName: no-forbidden-configmaps
  validationActions: [Deny]
"#,
    )
    .unwrap();
    let vap = cp
        .kubectl_json(&[
            "get",
            "validatingadmissionpolicies.v1.admissionregistration.k8s.io",
        ])
        .unwrap();
    assert_eq!(
        vap["items"][0]["metadata"]["name"],
        "no-forbidden-configmaps"
    );
    // The policy takes effect once the apiserver's informers have seen it.
    let mut last = String::new();
    let denied = eventually(60, || {
        let out = cp.kubectl(&["create", "configmap", "forbidden", "--dry-run=server"]);
        last = text(&out);
        !out.status.success() && last.contains("testenv policy says no")
    });
    assert!(denied, "policy not enforced: {last}");
    let out = cp.kubectl(&["create", "configmap", "allowed"]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn apiserver_faults_and_two_control_planes_at_once() {
    if skip() {
        return;
    }
    // Two at once, started concurrently: distinct ports, CAs and directories.
    let (mut a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| start("node-a"));
        let b = s.spawn(|| start("node-b"));
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_ne!(a.server(), b.server());
    assert_ne!(a.dir(), b.dir());
    // a's admin credentials mean nothing to b (another CA).
    let out = b.kubectl(&[
        "--kubeconfig",
        a.admin_kubeconfig().to_str().unwrap(),
        "--server",
        &b.server(),
        "--request-timeout=10s",
        "get",
        "ns",
    ]);
    assert!(!out.status.success(), "{}", text(&out));

    a.apply(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: survivor\n  namespace: default\ndata:\n  k: v\n",
    )
    .unwrap();

    // Killed: kubectl fails; b is unaffected.
    a.kill_apiserver();
    let out = a.kubectl(&["--request-timeout=5s", "get", "ns"]);
    assert!(!out.status.success(), "{}", text(&out));
    let out = b.kubectl(&["--request-timeout=10s", "get", "ns"]);
    assert!(out.status.success(), "{}", text(&out));

    // Restarted with the same port and certificates: the data is still there.
    let t0 = SystemTime::now();
    a.restart_apiserver()
        .unwrap_or_else(|e| panic!("restart: {e}"));
    eprintln!(
        "apiserver restarted in {:.1} s",
        t0.elapsed().unwrap_or_default().as_secs_f64()
    );
    let cm = a
        .kubectl_json(&["get", "configmap", "survivor"])
        .unwrap_or_else(|e| panic!("{e}\n{}", a.apiserver_log_tail(30)));
    assert_eq!(cm["data"]["k"], "v");
    assert!(a.apiserver_log_tail(10_000).contains("restarted at"));
    // The node credentials still work against the restarted apiserver.
    let node = a.node_kubeconfig();
    let out = a.kubectl(&["--kubeconfig", node.to_str().unwrap(), "auth", "whoami"]);
    assert!(out.status.success(), "{}", text(&out));

    // Frozen: requests time out; a is unaffected; thawed: it answers again.
    b.freeze_apiserver();
    let out = b.kubectl(&["--request-timeout=2s", "get", "ns"]);
    let frozen = text(&out);
    let a_while_b_frozen = a.kubectl(&["--request-timeout=10s", "get", "ns"]);
    b.thaw_apiserver();
    assert!(!out.status.success(), "{frozen}");
    assert!(
        a_while_b_frozen.status.success(),
        "{}",
        text(&a_while_b_frozen)
    );
    let out = b.kubectl(&["--request-timeout=30s", "get", "ns"]);
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out),
        b.apiserver_log_tail(30)
    );

    // Drop removes everything.
    let dirs = [a.dir().to_path_buf(), b.dir().to_path_buf()];
    drop(a);
    drop(b);
    if std::env::var("STATICLET_KEEP_TESTENV").as_deref() != Ok("1") {
        for d in &dirs {
            assert!(!Path::new(d).exists(), "{} still exists", d.display());
        }
    }
}
