//! `staticlet run --cri-listen`: the agent's runtime served as CRI v1, reached by staticlet's
//! own CRI client (`CriRuntime`, as kubelet reaches containerd) and by the real `kubeadm`.
//!
//! - On the simulator (no root needed): the flag's checks, the socket, a pod made through it
//!   beside a static pod, and `kubeadm config images pull` (skipped without kubeadm unless
//!   `STATICLET_REQUIRE_K8S=1`, see `crates/k8s-testenv`).
//! - On the embedded runtime with real containers (root): a busybox pod made through CRI runs,
//!   writes its log, answers `ExecSync`, is left alone by the agent and goes when removed; and
//!   kubeadm pulls its control-plane images through CRI from a local registry into the
//!   embedded image store.
// Real processes in real time: std::time::Instant is right here.
#![allow(clippy::disallowed_types)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{bin, can_run, Env, Registry};
use staticlet_runtime::{
    labels, ContainerConfig, ContainerRuntime, ContainerState, ImageSpec, LabelSelector,
    SandboxConfig, SandboxState,
};
use staticlet_runtime_cri::{CriOptions, CriRuntime};

/// The agent process, killed when dropped.
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn tokio_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

fn endpoint(sock: &Path) -> String {
    format!("unix://{}", sock.display())
}

/// An agent on the simulator serving CRI on `<dir>/run/cri.sock`, with the given manifests.
fn simulated_agent(dir: &Path, manifests: &[(&str, &str)]) -> (Agent, PathBuf) {
    let m = dir.join("manifests");
    std::fs::create_dir_all(&m).unwrap();
    for (name, yaml) in manifests {
        std::fs::write(m.join(format!("{name}.yaml")), yaml).unwrap();
    }
    let sock = dir.join("run/cri.sock");
    let child = bin()
        .args([
            "run",
            "--hostname-override",
            "n1",
            "--container-runtime-endpoint",
            "simulate://",
            "--healthz-port",
            "0",
            "--file-check-frequency",
            "1s",
            "--cri-listen",
        ])
        .arg(endpoint(&sock))
        .arg("--pod-manifest-path")
        .arg(&m)
        .arg("--root-dir")
        .arg(dir.join("root"))
        .arg("--log-dir")
        .arg(dir.join("logs"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("agent.log")).unwrap())
        .spawn()
        .unwrap();
    let agent = Agent(child);
    wait("the CRI socket", 60, || sock.exists());
    (agent, sock)
}

const WEB: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  hostNetwork: true\n  terminationGracePeriodSeconds: 1\n  containers:\n  - {name: app, image: busybox, imagePullPolicy: IfNotPresent, command: [sleep, '3600']}\n";

#[test]
fn cri_listen_is_refused_with_a_cri_runtime_or_a_bad_uri() {
    let d = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| {
        let out = bin()
            .args(["run", "--healthz-port", "0", "--root-dir"])
            .arg(d.path().join("root"))
            .args(extra)
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = run(&[
        "--container-runtime-endpoint",
        "unix:///run/containerd/containerd.sock",
        "--cri-listen",
        "unix:///run/staticlet/cri.sock",
    ]);
    assert!(
        e.contains("--cri-listen serves staticlet's embedded runtime"),
        "{e}"
    );
    let e = run(&[
        "--container-runtime-endpoint",
        "simulate://",
        "--cri-listen",
        "tcp://127.0.0.1:1",
    ]);
    assert!(e.contains("expected unix:///absolute/path"), "{e}");
}

/// On the simulator: the socket is 0660; staticlet's CRI client connects to it (`Version` says
/// `staticlet`, v1); a pod it makes runs beside the static pod, lists show both, and the agent
/// leaves it alone; the socket goes when the agent stops.
#[test]
fn the_simulator_served_as_cri() {
    let d = tempfile::tempdir().unwrap();
    let (agent, sock) = simulated_agent(d.path(), &[("web", WEB)]);
    assert_eq!(
        std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777,
        0o660
    );
    let rt = tokio_rt();
    let cri = rt
        .block_on(CriRuntime::connect(&endpoint(&sock), CriOptions::default()))
        .unwrap();
    let v = cri.connected_version();
    assert_eq!(
        (v.runtime_name.as_str(), v.api_version.as_str()),
        ("staticlet", "v1")
    );
    wait("the static pod's sandbox", 60, || {
        rt.block_on(cri.list_pod_sandboxes(&LabelSelector::managed()))
            .unwrap()
            .len()
            == 1
    });
    let sb_cfg = SandboxConfig {
        name: "tool".into(),
        namespace: "default".into(),
        uid: "tool-uid".into(),
        log_directory: d.path().join("tool-logs"),
        labels: [("app".to_string(), "tool".to_string())].into(),
        host_network: true,
        ..Default::default()
    };
    let sb = rt.block_on(cri.run_pod_sandbox(&sb_cfg)).unwrap();
    let image = ImageSpec {
        image: "busybox".into(),
    };
    rt.block_on(cri.pull_image(&image, None)).unwrap();
    let c = rt
        .block_on(cri.create_container(
            &sb,
            &ContainerConfig {
                name: "tool".into(),
                image,
                log_path: "tool.log".into(),
                ..Default::default()
            },
            &sb_cfg,
        ))
        .unwrap();
    rt.block_on(cri.start_container(&c)).unwrap();
    let all = rt
        .block_on(cri.list_pod_sandboxes(&LabelSelector::default()))
        .unwrap();
    assert_eq!(all.len(), 2, "{all:?}");
    // Relists every second: give the agent a few.
    std::thread::sleep(Duration::from_secs(4));
    let st = rt.block_on(cri.container_status(&c)).unwrap();
    assert_eq!(st.state, ContainerState::Running);
    assert_eq!(
        rt.block_on(cri.pod_sandbox_status(&sb)).unwrap().state,
        SandboxState::Ready
    );
    let pods = bin()
        .args(["get", "pods", "-o", "json", "--root-dir"])
        .arg(d.path().join("root"))
        .output()
        .unwrap();
    let pods: serde_json::Value = serde_json::from_slice(&pods.stdout).unwrap();
    assert_eq!(pods["items"].as_array().unwrap().len(), 1, "{pods}");
    assert_eq!(pods["items"][0]["metadata"]["name"], "web-n1");

    rt.block_on(cri.stop_pod_sandbox(&sb)).unwrap();
    rt.block_on(cri.remove_pod_sandbox(&sb)).unwrap();
    assert_eq!(
        rt.block_on(cri.list_pod_sandboxes(&LabelSelector::default()))
            .unwrap()
            .len(),
        1
    );
    drop(cri);
    drop(rt);
    let mut agent = agent;
    terminate(&agent.0);
    let status = agent.0.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(!sock.exists(), "the socket is removed at exit");
}

fn terminate(child: &Child) {
    let out = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .output()
        .unwrap();
    assert!(out.status.success());
}

/// `kubeadm` (skipped when missing unless STATICLET_REQUIRE_K8S=1).
fn kubeadm() -> Option<PathBuf> {
    if let Some(why) = staticlet_k8s_testenv::skip_reason() {
        eprintln!("skipped: {why}");
        return None;
    }
    Some(staticlet_k8s_testenv::bin_dir().join("kubeadm"))
}

const K8S_VERSION: &str = "v1.34.4";

/// The real kubeadm pulls the control-plane images through the CRI endpoint (`ImageStatus`,
/// then `PullImage` for each) with `kubeadm config images pull`, and init's preflight passes
/// its container runtime and image checks against it.
#[test]
fn kubeadm_pulls_images_through_the_simulator() {
    let Some(kubeadm) = kubeadm() else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let (_agent, sock) = simulated_agent(d.path(), &[]);
    let out = Command::new(&kubeadm)
        .args([
            "config",
            "images",
            "pull",
            "--kubernetes-version",
            K8S_VERSION,
        ])
        .arg("--cri-socket")
        .arg(endpoint(&sock))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pulled = stdout.matches("[config/images] Pulled ").count();
    assert!(pulled >= 6, "{stdout}");
    assert!(
        stdout.contains(&format!(
            "[config/images] Pulled registry.k8s.io/kube-apiserver:{K8S_VERSION}"
        )),
        "{stdout}"
    );
    // Pulled again: kubeadm finds them present (ImageStatus) and says so.
    let again = Command::new(&kubeadm)
        .args([
            "config",
            "images",
            "pull",
            "--kubernetes-version",
            K8S_VERSION,
        ])
        .arg("--cri-socket")
        .arg(endpoint(&sock))
        .output()
        .unwrap();
    assert!(again.status.success());
    let rt = tokio_rt();
    let cri = rt
        .block_on(CriRuntime::connect(&endpoint(&sock), CriOptions::default()))
        .unwrap();
    let images = rt.block_on(cri.list_images()).unwrap();
    assert_eq!(images.len(), pulled, "{images:?}");

    // init's preflight with `criSocket` set to the endpoint: its container runtime check
    // (`Status`: RuntimeReady) and its image pulls pass; the other checks are about this host
    // (no kubelet, cgroup version, ports) and only warn. It changes nothing on the host.
    let cfg = d.path().join("kubeadm.yaml");
    std::fs::write(
        &cfg,
        format!(
            "apiVersion: kubeadm.k8s.io/v1beta4\nkind: InitConfiguration\nnodeRegistration:\n  \
             criSocket: {}\n  name: n1\n---\napiVersion: kubeadm.k8s.io/v1beta4\nkind: \
             ClusterConfiguration\nkubernetesVersion: {K8S_VERSION}\n",
            endpoint(&sock)
        ),
    )
    .unwrap();
    let out = Command::new(&kubeadm)
        .args([
            "init",
            "phase",
            "preflight",
            "--ignore-preflight-errors=all",
        ])
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{all}");
    assert!(all.contains("[preflight] Pulling images required"), "{all}");
    for bad in ["CRI", "ContainerRuntime", "container runtime", "ImagePull"] {
        assert!(
            !all.lines()
                .any(|l| l.contains("WARNING") && l.contains(bad)),
            "{bad}: {all}"
        );
    }
}

/// With real containers: a pod made through CRI (as `crictl runp` / `create` / `start` /
/// `exec -s` would) runs busybox, writes its CRI-format log, answers ExecSync with output and
/// exit code, is left alone by the agent beside a static pod, and goes when removed; the
/// image is listed, and removable once no container uses it (`crictl images` / `rmi`).
#[test]
fn a_busybox_pod_made_through_cri_on_the_embedded_runtime() {
    if !can_run() {
        return;
    }
    let mut env = Env::new("cri-e");
    env.manifest("web", WEB);
    let sock = env.path("run/cri.sock");
    env.start_with(&["--cri-listen".into(), endpoint(&sock)]);
    env.wait("the CRI socket", 60, || sock.exists());
    env.wait("the static pod running", 120, || {
        env.pod("web")
            .is_some_and(|p| p["status"]["phase"] == "Running")
    });
    let rt = tokio_rt();
    let cri = rt
        .block_on(CriRuntime::connect(&endpoint(&sock), CriOptions::default()))
        .unwrap();
    let uid = format!("crictl-{}", std::process::id());
    let logs = env.path("crictl-logs");
    let sb_cfg = SandboxConfig {
        name: "hello".into(),
        namespace: "default".into(),
        uid: uid.clone(),
        log_directory: logs.clone(),
        labels: [("app".to_string(), "hello".to_string())].into(),
        host_network: true,
        ..Default::default()
    };
    let sb = rt.block_on(cri.run_pod_sandbox(&sb_cfg)).unwrap();
    let c = rt
        .block_on(cri.create_container(
            &sb,
            &ContainerConfig {
                name: "hello".into(),
                image: ImageSpec {
                    image: "busybox".into(),
                },
                command: vec![
                    "sh".into(),
                    "-c".into(),
                    "echo hello-from-cri; exec sleep 3600".into(),
                ],
                log_path: "hello.log".into(),
                labels: [("app".to_string(), "hello".to_string())].into(),
                ..Default::default()
            },
            &sb_cfg,
        ))
        .unwrap();
    rt.block_on(cri.start_container(&c)).unwrap();
    env.wait("the container running", 60, || {
        rt.block_on(cri.container_status(&c)).unwrap().state == ContainerState::Running
    });
    env.wait("its log line", 30, || {
        std::fs::read_to_string(logs.join("hello.log"))
            .is_ok_and(|l| l.contains(" stdout F hello-from-cri"))
    });
    let out = rt
        .block_on(cri.exec_sync(
            &c,
            &[
                "sh".into(),
                "-c".into(),
                "echo out; echo err >&2; exit 3".into(),
            ],
            Duration::from_secs(30),
        ))
        .unwrap();
    assert_eq!(
        (out.stdout.as_slice(), out.stderr.as_slice(), out.exit_code),
        (&b"out\n"[..], &b"err\n"[..], 3)
    );
    // Both kinds listed; only the static pod's is the agent's.
    let all = rt
        .block_on(cri.list_pod_sandboxes(&LabelSelector::default()))
        .unwrap();
    assert_eq!(all.len(), 2, "{all:?}");
    let ours = rt
        .block_on(cri.list_pod_sandboxes(&LabelSelector::managed()))
        .unwrap();
    assert_eq!(ours.len(), 1);
    assert_ne!(ours[0].id, sb);
    assert!(!all
        .iter()
        .find(|s| s.id == sb)
        .unwrap()
        .labels
        .contains_key(labels::MANAGED));
    // The agent relists every second: a few of them leave the pod as it is.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        rt.block_on(cri.container_status(&c)).unwrap().state,
        ContainerState::Running
    );
    assert!(env.pod("hello").is_none(), "not one of the agent's pods");

    rt.block_on(cri.stop_container(&c, Duration::from_secs(2)))
        .unwrap();
    let st = rt.block_on(cri.container_status(&c)).unwrap();
    assert_eq!(st.state, ContainerState::Exited);
    rt.block_on(cri.remove_container(&c)).unwrap();
    rt.block_on(cri.stop_pod_sandbox(&sb)).unwrap();
    rt.block_on(cri.remove_pod_sandbox(&sb)).unwrap();
    assert_eq!(
        rt.block_on(cri.list_pod_sandboxes(&LabelSelector::default()))
            .unwrap(),
        ours
    );
    // The pod's cgroup is its client's to remove (as with containerd): here the test's.
    for cg in common::pod_cgroups(&uid) {
        let _ = std::fs::remove_dir(cg);
    }
    assert!(
        env.pod("web")
            .is_some_and(|p| p["status"]["phase"] == "Running"),
        "the static pod runs on"
    );

    // Images: listed; not removable while a container (the static pod's) uses it, removable
    // once none does.
    let busybox = ImageSpec {
        image: "busybox".into(),
    };
    let img = rt.block_on(cri.image_status(&busybox)).unwrap().unwrap();
    let listed = rt.block_on(cri.list_images()).unwrap();
    assert!(
        listed.iter().any(|i| i.id == img.id
            && i.repo_tags
                .iter()
                .any(|t| t == "docker.io/library/busybox:latest")),
        "{listed:?}"
    );
    let err = rt.block_on(cri.remove_image(&busybox)).unwrap_err();
    assert!(err.to_string().contains("in use"), "{err}");
    env.remove_manifest("web");
    env.wait("the static pod's containers removed", 120, || {
        env.containers().is_empty()
    });
    rt.block_on(cri.remove_image(&busybox)).unwrap();
    assert_eq!(rt.block_on(cri.image_status(&busybox)).unwrap(), None);
    assert!(rt.block_on(cri.list_images()).unwrap().is_empty());
}

/// The real kubeadm pulls its control-plane images through CRI into the embedded runtime's
/// store, from a local registry holding them (busybox under each name).
#[test]
fn kubeadm_pulls_images_through_cri_into_the_embedded_store() {
    if !can_run() {
        return;
    }
    let Some(kubeadm) = kubeadm() else {
        return;
    };
    let mut env = Env::new("cri-k");
    let reg = Registry::start();
    let repo = format!("127.0.0.1:{}", reg.port);
    let list = Command::new(&kubeadm)
        .args([
            "config",
            "images",
            "list",
            "--kubernetes-version",
            K8S_VERSION,
        ])
        .args(["--image-repository", &repo])
        .output()
        .unwrap();
    assert!(list.status.success());
    let images: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert!(images.len() >= 6, "{images:?}");
    for image in &images {
        let name = image.strip_prefix(&format!("{repo}/")).unwrap();
        reg.push(&env.path("busybox.tar"), name);
    }
    let sock = env.path("run/cri.sock");
    env.start_with(&[
        "--cri-listen".into(),
        endpoint(&sock),
        "--insecure-registry".into(),
        repo.clone(),
    ]);
    env.wait("the CRI socket", 60, || sock.exists());
    let out = Command::new(&kubeadm)
        .args([
            "config",
            "images",
            "pull",
            "--kubernetes-version",
            K8S_VERSION,
        ])
        .args(["--image-repository", &repo])
        .arg("--cri-socket")
        .arg(endpoint(&sock))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}\nagent: {}",
        String::from_utf8_lossy(&out.stderr),
        env.agent_log()
    );
    for image in &images {
        assert!(
            stdout.contains(&format!("[config/images] Pulled {image}")),
            "{stdout}"
        );
    }
    let listed = bin()
        .args(["images", "list", "--root-dir"])
        .arg(env.root())
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout);
    for image in &images {
        let repo_name = image.rsplit_once(':').unwrap().0;
        assert!(listed.contains(repo_name), "{image} not in\n{listed}");
    }
}
