//! TLS bootstrap and client-certificate rotation (issue 14 item 4) against a real kube-apiserver
//! and kube-controller-manager (its csrapproving and csrsigning controllers, with the cluster
//! CA), as `kubeadm join` sets a node up: a bootstrap token Secret and kubeadm's RBAC for it
//! (`phases/bootstraptoken/node`), a bootstrap kubeconfig, no kubeconfig.
//!
//! The agent is the real binary with simulated containers. First the controller-manager is not
//! running: the CSR waits (reported in `/cluster`) while the static pod runs. Then it starts
//! (certificates valid for 3 minutes): the CSR is approved and signed, the certificate stored
//! as `kubelet-client-<ts>.pem` behind `kubelet-client-current.pem`, the kubeconfig written,
//! the Node registered with the new identity. With `rotateCertificates: true`, a renewal CSR
//! made by `system:node:<node>` itself follows at 70-90 % of the lifetime, the symlink is
//! swapped, and the Lease is still renewed after the first certificate expired: the agent
//! switched identity without a restart. Takes about 4 minutes.
// Real processes in real time: std::time::Instant is right here.
#![allow(clippy::disallowed_types)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use staticlet_k8s_testenv::{bin_dir, skip_reason, ControlPlane};

const NODE: &str = "node-tls";
const TOKEN_ID: &str = "abcdef";
const TOKEN_SECRET: &str = "0123456789abcdef";
/// The signing duration of the controller-manager: short, to see a rotation.
const SIGNING: &str = "3m";

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_staticlet"))
}

/// kubeadm's bootstrap token and the RBAC `kubeadm init` creates for it
/// (`phases/bootstraptoken/node`: kubeadm:kubelet-bootstrap, kubeadm:node-autoapprove-bootstrap,
/// kubeadm:node-autoapprove-certificate-rotation).
fn bootstrap_objects() -> String {
    let group = "system:bootstrappers:kubeadm:default-node-token";
    let crb = |name: &str, role: &str, subject: &str| {
        format!(
            "---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: {name}\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: {role}\nsubjects:\n- apiGroup: rbac.authorization.k8s.io\n  kind: Group\n  name: {subject}\n"
        )
    };
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: bootstrap-token-{TOKEN_ID}\n  namespace: kube-system\ntype: bootstrap.kubernetes.io/token\nstringData:\n  token-id: {TOKEN_ID}\n  token-secret: {TOKEN_SECRET}\n  usage-bootstrap-authentication: \"true\"\n  usage-bootstrap-signing: \"true\"\n  auth-extra-groups: {group}\n{}{}{}",
        crb("kubeadm:kubelet-bootstrap", "system:node-bootstrapper", group),
        crb(
            "kubeadm:node-autoapprove-bootstrap",
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            group
        ),
        crb(
            "kubeadm:node-autoapprove-certificate-rotation",
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
            "system:nodes"
        ),
    )
}

/// A bootstrap kubeconfig as `kubeadm join` writes it (bootstrap-kubelet.conf).
fn bootstrap_kubeconfig(cp: &ControlPlane, token: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    certificate-authority: {ca}\n    server: {server}\n  name: kubernetes\ncontexts:\n- context:\n    cluster: kubernetes\n    user: tls-bootstrap-token-user\n  name: tls-bootstrap-token-user@kubernetes\ncurrent-context: tls-bootstrap-token-user@kubernetes\nusers:\n- name: tls-bootstrap-token-user\n  user:\n    token: {token}\n",
        ca = cp.pki("ca.crt").display(),
        server = cp.server()
    )
}

fn start_controller_manager(cp: &ControlPlane, log: &Path) -> KillOnDrop {
    let log = std::fs::File::create(log).unwrap();
    let child = Command::new(bin_dir().join("kube-controller-manager"))
        .arg(format!("--kubeconfig={}", cp.admin_kubeconfig().display()))
        .arg("--controllers=csrapproving,csrsigning")
        .arg(format!(
            "--cluster-signing-cert-file={}",
            cp.pki("ca.crt").display()
        ))
        .arg(format!(
            "--cluster-signing-key-file={}",
            cp.pki("ca.key").display()
        ))
        .arg(format!("--cluster-signing-duration={SIGNING}"))
        .args([
            "--leader-elect=false",
            "--secure-port=0",
            "--use-service-account-credentials=false",
        ])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    KillOnDrop(child)
}

struct Env {
    cp: ControlPlane,
    dir: tempfile::TempDir,
}

impl Env {
    fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn tail(&self) -> String {
        let t = |f: &str, n: usize| {
            let log = std::fs::read_to_string(self.p(f)).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        };
        format!(
            "--- agent log tail:\n{}\n--- controller-manager log tail:\n{}\n--- apiserver log tail:\n{}",
            t("agent.log", 40),
            t("kcm.log", 15),
            self.cp.apiserver_log_tail(15)
        )
    }

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
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn cluster_status(&self) -> Value {
        let out = bin()
            .args(["get", "--raw", "/cluster", "--root-dir"])
            .arg(self.p("root"))
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    fn csrs(&self) -> Vec<Value> {
        self.cp
            .kubectl_json(&["get", "csr", "--request-timeout=5s"])
            .map(|v| v["items"].as_array().cloned().unwrap_or_default())
            .unwrap_or_default()
    }

    fn lease_renew_time(&self) -> Option<String> {
        let l = self
            .cp
            .kubectl_json(&[
                "get",
                "lease",
                "-n",
                "kube-node-lease",
                NODE,
                "--request-timeout=5s",
            ])
            .ok()?;
        l["spec"]["renewTime"].as_str().map(str::to_string)
    }
}

/// An RFC 3339 timestamp of `/cluster` (`2026-12-06T21:04:05Z`), through date(1).
fn parse_time(s: &str) -> SystemTime {
    let out = Command::new("date")
        .args(["-u", "-d", s, "+%s"])
        .output()
        .unwrap();
    let secs: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

const WEB: &str =
    "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: c\n    image: nginx\n";

/// The tests run one at a time: each has its own control plane, and both wait in real time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The agent with --kubeconfig (absent at first), --bootstrap-kubeconfig and --cert-dir in the
/// test's directory, simulated containers, no node API port.
fn start_agent(env: &Env, extra: &[&str]) -> KillOnDrop {
    let log = std::fs::File::create(env.p("agent.log")).unwrap();
    let child = bin()
        .args([
            "run",
            "--hostname-override",
            NODE,
            "--container-runtime-endpoint",
            "simulate://",
            "--file-check-frequency",
            "1s",
            "--port",
            "0",
            "--healthz-port",
            "0",
        ])
        .arg("--pod-manifest-path")
        .arg(env.p("manifests"))
        .arg("--root-dir")
        .arg(env.p("root"))
        .arg("--log-dir")
        .arg(env.p("logs"))
        .arg("--kubeconfig")
        .arg(env.p("kubelet.conf"))
        .arg("--bootstrap-kubeconfig")
        .arg(env.p("bootstrap-kubelet.conf"))
        .arg("--cert-dir")
        .arg(env.p("pki"))
        .args(extra)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    KillOnDrop(child)
}

/// The static pod runs, whatever the cluster side is doing.
fn wait_web_running(env: &Env) {
    env.wait("the static pod running", 60, || {
        let out = bin()
            .args([
                "get",
                "pod",
                &format!("web-{NODE}"),
                "-o",
                "json",
                "--root-dir",
            ])
            .arg(env.p("root"))
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        (v["status"]["phase"] == "Running").then_some(())
    });
}

fn approved(csr: &Value) -> bool {
    csr["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Approved"))
        && csr["status"]["certificate"].is_string()
}

#[test]
fn tls_bootstrap_then_rotation() {
    if let Some(why) = skip_reason() {
        eprintln!("skipped: {why}");
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let started = Instant::now();
    let cp = ControlPlane::start(NODE).unwrap_or_else(|e| panic!("control plane: {e}"));
    let env = Env {
        cp,
        dir: tempfile::tempdir().unwrap(),
    };
    env.cp
        .apply(&bootstrap_objects())
        .unwrap_or_else(|e| panic!("bootstrap token and RBAC: {e}"));
    std::fs::create_dir(env.p("manifests")).unwrap();
    std::fs::write(env.p("manifests/web.yaml"), WEB).unwrap();
    std::fs::write(
        env.p("bootstrap-kubelet.conf"),
        bootstrap_kubeconfig(&env.cp, &format!("{TOKEN_ID}.{TOKEN_SECRET}")),
    )
    .unwrap();
    std::fs::write(
        env.p("config.yaml"),
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nrotateCertificates: true\n",
    )
    .unwrap();
    let kubeconfig = env.p("kubelet.conf");
    let cert_dir = env.p("pki");
    let config = env.p("config.yaml");
    let agent = start_agent(&env, &["--config", config.to_str().unwrap()]);
    let agent_pid = agent.0.id();

    // 1. No controller-manager yet: the CSR (made with the bootstrap token) waits, /cluster
    //    says so, and the static pod runs regardless.
    let pending = env.wait(
        "the bootstrap CSR waiting for approval in /cluster",
        90,
        || {
            let s = env.cluster_status();
            let status = s["clientCertificate"]["status"].as_str()?.to_string();
            status.contains("waiting for approval").then_some(status)
        },
    );
    assert!(pending.contains("node-csr-"), "{pending}");
    wait_web_running(&env);
    let csrs = env.csrs();
    assert_eq!(csrs.len(), 1, "{csrs:?}");
    let boot = &csrs[0];
    assert_eq!(
        boot["spec"]["username"],
        format!("system:bootstrap:{TOKEN_ID}")
    );
    assert_eq!(
        boot["spec"]["signerName"],
        "kubernetes.io/kube-apiserver-client-kubelet"
    );
    assert_eq!(
        boot["spec"]["usages"],
        serde_json::json!(["digital signature", "client auth"])
    );
    assert!(!kubeconfig.exists(), "no kubeconfig before the certificate");

    // 2. The controller-manager approves and signs it: files, kubeconfig, Node.
    let _kcm = start_controller_manager(&env.cp, &env.p("kcm.log"));
    let t_kcm = Instant::now();
    env.wait(
        "the Node registered with the bootstrapped identity",
        120,
        || {
            let s = env.cluster_status();
            (s["nodeUID"].is_string() && s["leaseRenewed"].is_string()).then_some(())
        },
    );
    eprintln!(
        "bootstrap: approved, signed, Node registered {:.1}s after the controller-manager started",
        t_kcm.elapsed().as_secs_f64()
    );
    let boot = env
        .csrs()
        .into_iter()
        .find(|c| c["spec"]["username"] == format!("system:bootstrap:{TOKEN_ID}"))
        .unwrap();
    assert!(approved(&boot), "{boot}");
    let reason = boot["status"]["conditions"][0]["reason"].clone();
    assert_eq!(reason, "AutoApproved", "{boot}");
    let current = cert_dir.join("kubelet-client-current.pem");
    let first = std::fs::read_link(&current).unwrap();
    let name = first.file_name().unwrap().to_string_lossy().to_string();
    assert!(
        name.starts_with("kubelet-client-20") && name.ends_with(".pem") && name.len() == 38,
        "{name}"
    );
    let pem = std::fs::read_to_string(&first).unwrap();
    assert!(
        pem.contains("BEGIN CERTIFICATE") && pem.contains("PRIVATE KEY"),
        "{first:?}"
    );
    assert!(!cert_dir.join("kubelet-client.key.tmp").exists());
    let kc = std::fs::read_to_string(&kubeconfig).unwrap();
    assert!(
        kc.contains(&format!("client-certificate: \"{}\"", current.display())),
        "{kc}"
    );
    // kubectl with the written kubeconfig is the node: it can read its own Node.
    let out = env.cp.kubectl(&[
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "auth",
        "whoami",
        "-o",
        "json",
    ]);
    let who: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert_eq!(
        who["status"]["userInfo"]["username"],
        format!("system:node:{NODE}"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = env.cluster_status();
    let cc = &s["clientCertificate"];
    assert_eq!(cc["subject"], format!("system:node:{NODE}"), "{s}");
    assert!(cc["renewAt"].is_string(), "{s}");
    let first_not_after = parse_time(cc["notAfter"].as_str().unwrap());
    let renew_at = parse_time(cc["renewAt"].as_str().unwrap());
    assert!(renew_at < first_not_after, "{s}");

    // 3. Rotation at 70-90 % of the lifetime, by the node itself, without a restart.
    let t_rotation = Instant::now();
    let rotated = env.wait("the client certificate rotated", 240, || {
        let target = std::fs::read_link(&current).ok()?;
        (target != first).then_some(target)
    });
    let rotated_at = SystemTime::now();
    eprintln!(
        "rotation: {:.1}s after bootstrap (renewAt was {}), new file {}",
        t_rotation.elapsed().as_secs_f64(),
        cc["renewAt"],
        rotated.display()
    );
    assert!(
        rotated_at + Duration::from_secs(5) >= renew_at,
        "rotated before its deadline"
    );
    let renewal = env
        .csrs()
        .into_iter()
        .find(|c| c["spec"]["username"] == format!("system:node:{NODE}"))
        .unwrap_or_else(|| panic!("no renewal CSR by the node\n{}", env.tail()));
    assert!(approved(&renewal), "{renewal}");
    assert!(
        renewal["metadata"]["name"]
            .as_str()
            .unwrap()
            .starts_with("csr-"),
        "{renewal}"
    );
    assert!(first.exists(), "the old certificate file is kept");
    // The first certificate expires: the Lease is still renewed, with the new identity.
    let wait_expiry = first_not_after
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    env.wait(
        "the first certificate to expire",
        wait_expiry.as_secs() + 30,
        || (SystemTime::now() > first_not_after + Duration::from_secs(2)).then_some(()),
    );
    let before = env.lease_renew_time();
    env.wait(
        "the Lease renewed after the first certificate expired",
        60,
        || {
            let now = env.lease_renew_time();
            (now.is_some() && now != before).then_some(())
        },
    );
    let s = env.cluster_status();
    assert!(s["error"].is_null(), "{s}");
    assert_eq!(agent.0.id(), agent_pid);
    let log = std::fs::read_to_string(env.p("agent.log")).unwrap();
    assert!(log.contains("client certificate rotated"), "{log}");
    eprintln!("total: {:.1}s", started.elapsed().as_secs_f64());
}

/// Bad input, each a reported, retried wait while the static pod runs (the issue's "Bad
/// input"): a bootstrap kubeconfig whose CA does not match, a bootstrap token the API server
/// rejects, a CSR an admin denies (then a new CSR with a new key), a CSR approved with no signer
/// running. The agent picks up each fix of the bootstrap kubeconfig at its next attempt. About
/// a minute.
#[test]
fn tls_bootstrap_bad_input_is_reported_and_retried() {
    if let Some(why) = skip_reason() {
        eprintln!("skipped: {why}");
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let cp = ControlPlane::start(NODE).unwrap_or_else(|e| panic!("control plane: {e}"));
    let env = Env {
        cp,
        dir: tempfile::tempdir().unwrap(),
    };
    env.cp
        .apply(&bootstrap_objects())
        .unwrap_or_else(|e| panic!("bootstrap token and RBAC: {e}"));
    std::fs::create_dir(env.p("manifests")).unwrap();
    std::fs::write(env.p("manifests/web.yaml"), WEB).unwrap();
    let bootstrap = env.p("bootstrap-kubelet.conf");
    // The front-proxy CA is kubeadm's too, but not the API server's.
    let wrong_ca = bootstrap_kubeconfig(&env.cp, &format!("{TOKEN_ID}.{TOKEN_SECRET}")).replace(
        &env.cp.pki("ca.crt").display().to_string(),
        &env.cp.pki("front-proxy-ca.crt").display().to_string(),
    );
    std::fs::write(&bootstrap, wrong_ca).unwrap();
    let _agent = start_agent(&env, &[]);
    let status = |what: &str, needle: &'static [&'static str]| {
        env.wait(what, 90, || {
            let s = env.cluster_status();
            let st = s["clientCertificate"]["status"].as_str()?.to_string();
            needle.iter().all(|n| st.contains(n)).then_some(st)
        })
    };
    let st = status(
        "the CA mismatch reported",
        &["bootstrap-kubelet.conf", "certificate"],
    );
    eprintln!("wrong CA: {st}");
    wait_web_running(&env);

    std::fs::write(
        &bootstrap,
        bootstrap_kubeconfig(&env.cp, &format!("{TOKEN_ID}.ffffffffffffffff")),
    )
    .unwrap();
    let st = status(
        "the rejected bootstrap token reported",
        &[
            "bootstrap-kubelet.conf",
            "refused the bootstrap token (401)",
        ],
    );
    eprintln!("wrong token: {st}");

    std::fs::write(
        &bootstrap,
        bootstrap_kubeconfig(&env.cp, &format!("{TOKEN_ID}.{TOKEN_SECRET}")),
    )
    .unwrap();
    status("the CSR waiting for approval", &["waiting for approval"]);
    let first = env.csrs()[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let out = env.cp.kubectl(&["certificate", "deny", &first]);
    assert!(out.status.success(), "{out:?}");
    let st = status("the denial reported", &["was denied"]);
    eprintln!("denied: {st}");
    // A new CSR, with a new key (so a new name), is sent and waits.
    let second = env.wait("a new CSR after the denial", 90, || {
        env.csrs()
            .into_iter()
            .filter_map(|c| c["metadata"]["name"].as_str().map(str::to_string))
            .find(|n| *n != first)
    });
    assert!(second.starts_with("node-csr-"), "{second}");
    let out = env.cp.kubectl(&["certificate", "approve", &second]);
    assert!(out.status.success(), "{out:?}");
    status(
        "the approved CSR waiting for a signer",
        &["approved, waiting for the signer"],
    );
    assert!(!env.p("kubelet.conf").exists());
    wait_web_running(&env);
    let log = std::fs::read_to_string(env.p("agent.log")).unwrap();
    assert!(
        log.contains("no client certificate for the cluster side yet; static pods run meanwhile"),
        "{log}"
    );
}
