//! End-to-end tests of what only the CRI backend has, against a real containerd started by the
//! test (`staticlet_runtime_cri::testutil`): the runtime restarting under running pods, and other
//! clients' containers in the same runtime. What every runtime does is in `scenarios/`, which
//! runs each scenario on containerd too. Root and containerd are needed (`scripts/test.sh`
//! installs containerd); otherwise the tests say so and pass.

mod common;

use staticlet_runtime::{
    ContainerConfig, ContainerRuntime, ContainerState, ImageSpec, SandboxConfig,
};
use staticlet_runtime_cri::testutil::BUSYBOX;

use common::{status, Backend, Env};

/// containerd killed while pods run: nothing is lost, every pod worker reports the runtime down
/// and the agent keeps serving its pods; after containerd's restart supervision resumes (the
/// crash-looping pod keeps being restarted) and the running pod was never restarted. A container
/// of another client of the same containerd is never touched, not even when our pods go.
#[test]
fn containerd_restart_and_foreign_containers() {
    if !Backend::Containerd.can_run() {
        return;
    }
    let mut env = Env::with_backend(Backend::Containerd, "cri");

    // A container of another client of the same containerd: never touched.
    let other = SandboxConfig {
        name: "other".into(),
        namespace: "elsewhere".into(),
        uid: "other-uid".into(),
        log_directory: env.containerd().logs_dir().join("other"),
        host_network: true,
        ..Default::default()
    };
    std::fs::create_dir_all(&other.log_directory).unwrap();
    let (cri, rt) = env.cri();
    let other_c = rt.block_on(async {
        let other_sb = cri.run_pod_sandbox(&other).await.unwrap();
        let other_c = cri
            .create_container(
                &other_sb,
                &ContainerConfig {
                    name: "c".into(),
                    image: ImageSpec {
                        image: BUSYBOX.into(),
                    },
                    command: vec!["sleep".into(), "3600".into()],
                    log_path: "c/0.log".into(),
                    ..Default::default()
                },
                &other,
            )
            .await
            .unwrap();
        cri.start_container(&other_c).await.unwrap();
        other_c
    });

    let prefix = env.pod_network();
    let manifest = |env: &Env, name: &str, host_network: bool, cmd: &str| {
        env.pod_manifest(
            name,
            &format!(
                "  hostNetwork: {host_network}\n  terminationGracePeriodSeconds: 2\n  containers:\n  - name: app\n    image: IMAGE\n    imagePullPolicy: IfNotPresent\n    command: [sh, -c, '{cmd}']\n"
            ),
        )
    };
    env.manifest("web", &manifest(&env, "web", true, "echo up; sleep 3600"));
    env.manifest("crash", &manifest(&env, "crash", true, "echo boom; exit 3"));
    env.manifest("net", &manifest(&env, "net", false, "sleep 3600"));
    env.start();
    env.wait(
        "web running, net with a pod IP, crash restarted",
        180,
        || {
            let web = env
                .pod("web")
                .is_some_and(|p| p["status"]["phase"] == "Running");
            let net = env.pod("net").is_some_and(|p| {
                p["status"]["phase"] == "Running"
                    && p["status"]["podIP"]
                        .as_str()
                        .is_some_and(|ip| ip.starts_with(&prefix))
            });
            let crash = status(&env, "crash", "app").is_some_and(|c| {
                c["restartCount"].as_i64() >= Some(1)
                    && c["lastState"]["terminated"]["exitCode"] == 3
            });
            web && net && crash
        },
    );
    let started = status(&env, "web", "app").unwrap()["state"]["running"]["startedAt"].clone();
    let restarts = |env: &Env| {
        status(env, "crash", "app")
            .and_then(|c| c["restartCount"].as_i64())
            .unwrap_or(0)
    };
    let before = restarts(&env);
    let log_len = std::fs::metadata(env.path("agent.log")).map_or(0, |m| m.len() as usize);
    env.containerd().kill();
    // Each of the three pod workers relists against the missing runtime and says so (once per
    // outage); the agent keeps serving its pods meanwhile.
    env.wait("every pod worker to find the runtime down", 60, || {
        let log = std::fs::read(env.path("agent.log")).unwrap_or_default();
        String::from_utf8_lossy(&log[log_len.min(log.len())..])
            .matches("cannot observe pod in the runtime")
            .count()
            >= 3
    });
    assert!(
        env.pod("web").is_some(),
        "the agent keeps serving its pods while the runtime is down"
    );
    env.containerd().restart();
    env.wait("supervision resumed", 120, || {
        restarts(&env) > before
            && status(&env, "web", "app")
                .is_some_and(|c| c["state"]["running"]["startedAt"] == started)
    });

    // Manifests removed: our sandboxes go, the other client's stays.
    for m in ["web", "crash", "net"] {
        env.remove_manifest(m);
    }
    env.wait("our sandboxes removed", 120, || env.sandboxes() == 0);
    let (cri, rt) = env.cri();
    let st = rt.block_on(cri.container_status(&other_c)).unwrap();
    assert_eq!(
        st.state,
        ContainerState::Running,
        "another client's container is left alone"
    );
}

/// `cgroupDriver: systemd` (kubeadm's default) with containerd 1.6, which does not report its
/// own driver (CRI `RuntimeConfig` unimplemented): the agent refuses to start, saying how to fix
/// it, before it touches anything; the pod of the previous run keeps running in its cgroup and
/// is adopted, not restarted, once the agent starts with cgroupfs.
#[test]
fn systemd_cgroup_driver_is_refused_before_any_pod_is_touched() {
    if !Backend::Containerd.can_run() {
        return;
    }
    let mut env = Env::with_backend(Backend::Containerd, "cgdrv");
    env.manifest(
        "web",
        &env.pod_manifest(
            "web",
            "  hostNetwork: true\n  terminationGracePeriodSeconds: 2\n  containers:\n  - name: app\n    image: IMAGE\n    imagePullPolicy: IfNotPresent\n    command: [sleep, '3600']\n",
        ),
    );
    env.start();
    env.wait("web running", 180, || {
        status(&env, "web", "app").is_some_and(|c| c["state"]["running"].is_object())
    });
    let before = status(&env, "web", "app").unwrap();
    let uid = env.uid("web");
    let containers = env.containers();
    env.kill_agent();

    let cfg = env.path("config.yaml");
    std::fs::write(&cfg, "kind: KubeletConfiguration\ncgroupDriver: systemd\n").unwrap();
    env.start_with(&["--config".into(), cfg.display().to_string()]);
    let exit = env.agent_exit(60);
    let log = env.agent_log();
    assert!(!exit.success(), "{log}");
    for part in [
        format!("cgroupDriver: systemd ({})", cfg.display()),
        "staticlet supports only the cgroupfs driver with a CRI runtime".into(),
        "does not report its own driver (no CRI RuntimeConfig".into(),
        "SystemdCgroup = false".into(),
        "set cgroupDriver: cgroupfs (--cgroup-driver=cgroupfs)".into(),
    ] {
        assert!(log.contains(&part), "missing {part:?}: {log}");
    }
    assert_eq!(env.containers(), containers, "{log}");
    let (cri, rt) = env.cri();
    let id = staticlet_runtime::ContainerId(containers[0].clone());
    let st = rt.block_on(cri.container_status(&id)).unwrap();
    assert_eq!(st.state, ContainerState::Running, "{log}");
    assert!(
        !common::pod_cgroups(&uid).is_empty(),
        "the pod's cgroup is still there"
    );

    // The flag wins over the file: the pod is adopted as it runs.
    env.start_with(&[
        "--config".into(),
        cfg.display().to_string(),
        "--cgroup-driver=cgroupfs".into(),
    ]);
    env.wait("web adopted", 120, || {
        status(&env, "web", "app").is_some_and(|c| {
            c["ready"] == true
                && c["containerID"] == before["containerID"]
                && c["restartCount"] == before["restartCount"]
        })
    });
}
