//! End-to-end tests of `staticlet run --container-runtime-endpoint unix://...` against a real
//! containerd started by the test (`staticlet_runtime_cri::testutil`). Root and containerd are
//! needed (`scripts/test.sh` installs containerd); otherwise the tests say so and pass.
// Real processes in real time: std::time::Instant is right here.
#![allow(clippy::disallowed_types)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use staticlet_runtime::{
    ContainerConfig, ContainerRuntime, ImageSpec, LabelSelector, SandboxConfig,
};
use staticlet_runtime_cri::testutil::{skip_reason, Containerd, BUSYBOX};
use staticlet_runtime_cri::{CriOptions, CriRuntime};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_staticlet"))
}

struct Agent {
    dir: tempfile::TempDir,
    endpoint: String,
    child: Option<Child>,
}

impl Agent {
    fn new(endpoint: String) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("manifests")).unwrap();
        Agent {
            dir,
            endpoint,
            child: None,
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn start(&mut self) {
        let child = bin()
            .args([
                "run",
                "--hostname-override",
                "cri",
                "--file-check-frequency",
                "1s",
            ])
            .arg("--container-runtime-endpoint")
            .arg(&self.endpoint)
            .arg("--pod-manifest-path")
            .arg(self.path("manifests"))
            .arg("--root-dir")
            .arg(self.path("root"))
            .arg("--log-dir")
            .arg(self.path("logs"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.path("agent.log")).unwrap())
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn manifest(&self, name: &str, yaml: &str) {
        let tmp = self.path("manifests").join(format!(".{name}"));
        std::fs::write(&tmp, yaml).unwrap();
        std::fs::rename(tmp, self.path("manifests").join(format!("{name}.yaml"))).unwrap();
    }

    fn pod(&self, name: &str) -> Option<serde_json::Value> {
        let out = bin()
            .args([
                "get",
                "pod",
                &format!("{name}-cri"),
                "-o",
                "json",
                "--root-dir",
            ])
            .arg(self.path("root"))
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())?
    }

    async fn wait(&self, what: &str, secs: u64, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !f() {
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(self.path("agent.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                panic!(
                    "timed out waiting for {what}\nagent log (newest first):\n{}",
                    tail.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

fn app(p: &serde_json::Value) -> serde_json::Value {
    p["status"]["containerStatuses"][0].clone()
}

fn manifest(name: &str, host_network: bool, cmd: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  hostNetwork: {host_network}\n  terminationGracePeriodSeconds: 2\n  containers:\n  - name: app\n    image: busybox\n    imagePullPolicy: IfNotPresent\n    command: [sh, -c, '{cmd}']\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_pods_on_containerd() {
    if let Some(why) = skip_reason() {
        eprintln!("skipped: {why}");
        return;
    }
    let mut cd = Containerd::start().await;
    let mut agent = Agent::new(cd.endpoint());

    // A container of another client of the same containerd: never touched.
    let cri = CriRuntime::connect(&cd.endpoint(), CriOptions::default())
        .await
        .unwrap();
    let other = SandboxConfig {
        name: "other".into(),
        namespace: "elsewhere".into(),
        uid: "other-uid".into(),
        log_directory: cd.logs_dir().join("other"),
        host_network: true,
        ..Default::default()
    };
    std::fs::create_dir_all(&other.log_directory).unwrap();
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

    agent.manifest("web", &manifest("web", true, "echo up; sleep 3600"));
    agent.manifest("crash", &manifest("crash", true, "echo boom; exit 3"));
    agent.manifest("net", &manifest("net", false, "sleep 3600"));
    agent.start();
    let prefix = cd.subnet_prefix.clone();
    agent
        .wait(
            "web running, net with a pod IP, crash restarted",
            180,
            || {
                let web = agent
                    .pod("web")
                    .is_some_and(|p| p["status"]["phase"] == "Running");
                let net = agent.pod("net").is_some_and(|p| {
                    p["status"]["phase"] == "Running"
                        && p["status"]["podIP"]
                            .as_str()
                            .is_some_and(|ip| ip.starts_with(&prefix))
                });
                let crash = agent.pod("crash").is_some_and(|p| {
                    app(&p)["restartCount"].as_i64() >= Some(1)
                        && app(&p)["lastState"]["terminated"]["exitCode"] == 3
                });
                web && net && crash
            },
        )
        .await;
    let web = agent.pod("web").unwrap();
    let started = app(&web)["state"]["running"]["startedAt"].clone();
    assert!(app(&web)["containerID"]
        .as_str()
        .unwrap()
        .starts_with("containerd://"));
    // The logs land where the agent asked, readable with `staticlet logs`.
    let out = bin()
        .args(["logs", "web-cri", "--root-dir"])
        .arg(agent.path("root"))
        .arg("--log-dir")
        .arg(agent.path("logs"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "up\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // kill -9 the agent, start it again: adopted, no restart; the other client's pod untouched.
    agent.kill();
    agent.start();
    agent
        .wait("web adopted", 60, || {
            agent.pod("web").is_some_and(|p| {
                app(&p)["state"]["running"]["startedAt"] == started && app(&p)["restartCount"] == 0
            })
        })
        .await;

    // containerd killed while pods run: nothing is lost; after its restart supervision resumes
    // (the crash-looping pod keeps being restarted) and the web pod was never restarted.
    let restarts = |agent: &Agent| {
        agent
            .pod("crash")
            .and_then(|p| app(&p)["restartCount"].as_i64())
            .unwrap_or(0)
    };
    let before = restarts(&agent);
    let log_len = std::fs::metadata(agent.path("agent.log"))
        .map(|m| m.len() as usize)
        .unwrap_or(0);
    cd.kill();
    // Each of the three pod workers relists against the missing runtime and says so (once per
    // outage); the agent keeps serving its pods meanwhile.
    agent
        .wait("every pod worker to find the runtime down", 60, || {
            let log = std::fs::read(agent.path("agent.log")).unwrap_or_default();
            String::from_utf8_lossy(&log[log_len.min(log.len())..])
                .matches("cannot observe pod in the runtime")
                .count()
                >= 3
        })
        .await;
    assert!(
        agent.pod("web").is_some(),
        "the agent keeps serving its pods while the runtime is down"
    );
    cd.restart();
    agent
        .wait("supervision resumed", 120, || {
            restarts(&agent) > before
                && agent
                    .pod("web")
                    .is_some_and(|p| app(&p)["state"]["running"]["startedAt"] == started)
        })
        .await;

    // Manifests removed: our sandboxes go, the other client's stays.
    for m in ["web", "crash", "net"] {
        std::fs::remove_file(agent.path("manifests").join(format!("{m}.yaml"))).unwrap();
    }
    let cri2 = cri.clone();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let ours = cri2
            .list_pod_sandboxes(&LabelSelector::managed())
            .await
            .unwrap();
        if ours
            .iter()
            .all(|s| s.state != staticlet_runtime::SandboxState::Ready)
            && ours.is_empty()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "our sandboxes were not removed: {ours:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let st = cri.container_status(&other_c).await.unwrap();
    assert_eq!(
        st.state,
        staticlet_runtime::ContainerState::Running,
        "another client's container is left alone"
    );
}

/// On containerd too: an edited manifest replaces the pod (old container stopped before the new
/// one runs), an exec readiness probe goes through the runtime's ExecSync, and an image that
/// cannot be pulled surfaces as ErrImagePull / ImagePullBackOff with the runtime's message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_exec_probes_and_pull_failures_on_containerd() {
    if let Some(why) = skip_reason() {
        eprintln!("skipped: {why}");
        return;
    }
    let cd = Containerd::start().await;
    let mut agent = Agent::new(cd.endpoint());
    let probed = manifest("probed", true, "touch /tmp/ready; sleep 3600").replace(
        "    command:",
        "    readinessProbe:\n      exec:\n        command: [cat, /tmp/ready]\n      periodSeconds: 1\n    command:",
    );
    agent.manifest("probed", &probed);
    agent.manifest(
        "missing",
        &manifest("missing", true, "true").replace(
            "image: busybox\n    imagePullPolicy: IfNotPresent",
            "image: 127.0.0.1:1/no/such:image\n    imagePullPolicy: IfNotPresent",
        ),
    );
    agent.start();
    let ready = |p: &serde_json::Value| {
        p["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
    };
    agent
        .wait("probed Ready through ExecSync", 180, || {
            agent.pod("probed").is_some_and(|p| ready(&p))
        })
        .await;
    agent
        .wait("pull failure reported", 180, || {
            agent.pod("missing").is_some_and(|p| {
                let w = &app(&p)["state"]["waiting"];
                matches!(
                    w["reason"].as_str(),
                    Some("ErrImagePull" | "ImagePullBackOff")
                ) && w["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("127.0.0.1:1"))
            })
        })
        .await;

    // Container stats through ListContainerStats, in /metrics.
    agent
        .wait("containerd's stats in /metrics", 60, || {
            let out = bin()
                .args(["get", "--raw", "/metrics", "--root-dir"])
                .arg(agent.path("root"))
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            let key = "{namespace=\"default\",pod=\"probed-cri\",container=\"app\"} ";
            text.lines().any(|l| {
                l.strip_prefix(&format!("container_memory_working_set_bytes{key}"))
                    .and_then(|v| v.parse::<f64>().ok())
                    .is_some_and(|b| b > 0.0)
            }) && text
                .lines()
                .any(|l| l.starts_with(&format!("container_cpu_usage_seconds_total{key}")))
        })
        .await;

    // Edit: a new command → a new pod version; the old container is gone, the new one ready.
    let old = agent.pod("probed").unwrap();
    let old_uid = old["metadata"]["uid"].clone();
    let old_id = app(&old)["containerID"].as_str().unwrap().to_string();
    agent.manifest(
        "probed",
        &probed.replace("sleep 3600", "echo v2; sleep 3600"),
    );
    agent
        .wait("new version Ready", 180, || {
            agent
                .pod("probed")
                .is_some_and(|p| p["metadata"]["uid"] != old_uid && ready(&p))
        })
        .await;
    let cri = CriRuntime::connect(&cd.endpoint(), CriOptions::default())
        .await
        .unwrap();
    let id = staticlet_runtime::ContainerId(old_id.trim_start_matches("containerd://").into());
    match cri.container_status(&id).await {
        Err(_) => {}
        Ok(st) => assert_ne!(
            st.state,
            staticlet_runtime::ContainerState::Running,
            "the old version still runs"
        ),
    }
}
