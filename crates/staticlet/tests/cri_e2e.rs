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
