//! End-to-end tests of what only the embedded runtime has, with real containers: the
//! `staticlet` binary, shims, overlayfs, namespaces, cgroups and real CNI plugins (what every
//! runtime does is in `scenarios/`, which runs each scenario on both). They need root,
//! `busybox-static`, `util-linux`, `iproute2`, `containernetworking-plugins`, `docker-registry`
//! and `skopeo` (`scripts/test.sh` installs them); without root they say so and pass.
// Real processes in real time: std::time::Instant is right here.
#![allow(clippy::disallowed_types)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{bin, can_run, container_state, free_port, http_get, pod_cgroups, Env, Registry};

fn mounts_under(p: &Path) -> Vec<String> {
    let p = p.to_string_lossy().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(String::from))
        .filter(|m| m.starts_with(&p) && !m.ends_with("runtime/sandboxes"))
        .collect()
}

/// What only the embedded runtime shows (what every runtime does is in `scenarios/`): the memory
/// limit is in the container's own cgroup under the pod's, and once the manifest is removed no
/// mount under the root directory and no pod cgroup (in any hierarchy) is left. The agent runs
/// with kubeadm's `cgroupDriver: systemd`: accepted, said once at start, and the pod's cgroup is
/// where that line says (`/staticlet/pod<uid>`, kubelet's cgroupfs layout).
#[test]
fn pod_cgroup_limits_and_nothing_left_after_removal() {
    if !can_run() {
        return;
    }
    let mut env = Env::new("e2e-a");
    let port = free_port();
    env.manifest(
        "web",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  hostNetwork: true\n  terminationGracePeriodSeconds: 5\n  initContainers:\n  - name: content\n    image: busybox\n    imagePullPolicy: IfNotPresent\n    command: [sh, -c, 'echo served-by-staticlet > /www/index.html']\n    volumeMounts: [{{name: www, mountPath: /www}}]\n  containers:\n  - name: httpd\n    image: busybox\n    imagePullPolicy: IfNotPresent\n    command: [httpd, -f, -p, '{port}', -h, /www]\n    volumeMounts: [{{name: www, mountPath: /www, readOnly: true}}]\n    resources:\n      limits: {{memory: 64Mi, cpu: 500m}}\n  volumes:\n  - {{name: www, emptyDir: {{}}}}\n"
        ),
    );
    let cfg = env.path("config.yaml");
    std::fs::write(&cfg, "kind: KubeletConfiguration\ncgroupDriver: systemd\n").unwrap();
    env.start_with(&["--config".into(), cfg.display().to_string()]);
    env.wait("web serving", 120, || {
        http_get(port).is_some_and(|b| b.contains("served-by-staticlet"))
    });
    let uid = env.uid("web");
    let log = env.agent_log();
    let said: Vec<&str> = log.lines().filter(|l| l.contains("cgroupDriver")).collect();
    assert_eq!(said.len(), 1, "{log}");
    assert!(
        said[0].contains(&format!(
            "cgroupDriver: systemd ({}): pod cgroups are /staticlet/pod<uid>",
            cfg.display()
        )) && said[0].contains("not systemd slices"),
        "{log}"
    );
    // The memory limit is in the container's cgroup (cgroup v1 here, v2 elsewhere).
    let memory_cgroups: Vec<PathBuf> = [
        "/sys/fs/cgroup/memory/staticlet",
        "/sys/fs/cgroup/staticlet",
    ]
    .iter()
    .map(|b| Path::new(b).join(format!("pod{uid}")))
    .filter(|p| p.exists())
    .collect();
    assert!(!memory_cgroups.is_empty(), "no memory cgroup for {uid}");
    let limits: Vec<String> = std::fs::read_dir(&memory_cgroups[0])
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .filter_map(|e| {
            std::fs::read_to_string(e.path().join("memory.limit_in_bytes"))
                .or_else(|_| std::fs::read_to_string(e.path().join("memory.max")))
                .ok()
        })
        .collect();
    assert!(
        limits.iter().any(|l| l.trim() == (64u64 << 20).to_string()),
        "{limits:?}"
    );
    // The pod's cgroup in every hierarchy (cgroup v1: one per controller).
    let cgroups = pod_cgroups(&uid);
    assert!(!cgroups.is_empty(), "no pod cgroup for {uid}");

    // Manifest removed: everything stops; no container dirs, mounts, shims or cgroups are left.
    env.remove_manifest("web");
    env.wait("everything removed", 120, || {
        env.containers().is_empty() && env.sandboxes() == 0
    });
    assert!(http_get(port).is_none(), "the web server is gone");
    assert_eq!(mounts_under(&env.root()), Vec::<String>::new());
    env.wait("the pod's cgroup removed in every hierarchy", 30, || {
        cgroups.iter().all(|cg| !cg.exists())
    });
    assert_eq!(pod_cgroups(&uid), Vec::<PathBuf>::new());
}

#[test]
fn images_are_pulled_from_a_registry_and_pull_errors_back_off() {
    if !can_run() {
        return;
    }
    let mut env = Env::new("e2e-c");
    let reg = Registry::start();
    let image = format!("127.0.0.1:{}/test/busybox:1", reg.port);
    reg.push(&env.path("busybox.tar"), "test/busybox:1");
    env.manifest(
        "pulled",
        &format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: pulled\nspec:\n  hostNetwork: true\n  terminationGracePeriodSeconds: 2\n  containers:\n  - name: app\n    image: {image}\n    imagePullPolicy: Always\n    command: [sleep, '3600']\n"),
    );
    env.manifest(
        "missing",
        &format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: missing\nspec:\n  hostNetwork: true\n  containers:\n  - name: app\n    image: 127.0.0.1:{}/test/busybox:nope\n", reg.port),
    );
    env.start_with(&[
        "--insecure-registry".into(),
        format!("127.0.0.1:{}", reg.port),
    ]);
    env.wait("pulled pod running", 120, || {
        env.pod("pulled")
            .is_some_and(|p| p["status"]["phase"] == "Running")
    });
    env.wait("pull error with the registry's message", 120, || {
        env.pod("missing").is_some_and(|p| {
            container_state(&p, "app").is_some_and(|c| {
                let w = &c["state"]["waiting"];
                (w["reason"] == "ErrImagePull"
                    && w["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("manifest unknown")))
                    || w["reason"] == "ImagePullBackOff"
            })
        })
    });
    let out = bin()
        .args(["images", "list", "--root-dir"])
        .arg(env.root())
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout)
        .contains(&format!("127.0.0.1:{}/test/busybox", reg.port)));
}

/// Writes a docker archive of an image of `layers` tagged `tag`.
fn hostile_archive(out: &Path, tag: &str, layers: Vec<staticlet_images::testutil::Layer>) {
    use staticlet_images::testutil::{write_docker_archive, TestImage};
    let arch = staticlet_images::Platform::host().architecture;
    let image = TestImage::new(&arch, serde_json::json!({"Cmd": ["sh"]}), layers);
    write_docker_archive(out, &[(&[tag], &image)], false).unwrap();
}

/// Issue 16 item 4, at the agent level: pods whose images are hostile (a layer writing through
/// a symlink to a directory outside the store, a decompression bomb over `--max-layer-size`,
/// and layers each under it that together are over `--max-image-size`) fail with `ErrImagePull` naming the entry, nothing is written outside the
/// store, and a healthy pod next to them starts and keeps running.
#[test]
fn hostile_images_fail_their_pods_and_others_keep_running() {
    use staticlet_images::testutil::{Layer, LayerBuilder};
    if !can_run() {
        return;
    }
    let mut env = Env::new("e2e-h");
    let reg = Registry::start();
    let canary = env.path("canary");
    std::fs::create_dir_all(&canary).unwrap();
    std::fs::write(canary.join("secret"), b"secret").unwrap();
    let escape = env.path("escape.tar");
    hostile_archive(
        &escape,
        "hostile/escape:1",
        vec![Layer::gzip(
            LayerBuilder::new()
                .symlink("link", canary.to_str().unwrap())
                .file("link/pwned", b"x", 0o644)
                .build(),
        )],
    );
    let bomb = env.path("bomb.tar");
    hostile_archive(
        &bomb,
        "hostile/bomb:1",
        vec![Layer::gzip(
            LayerBuilder::new()
                .file("zeros", &vec![0u8; 32 << 20], 0o644)
                .build(),
        )],
    );
    let layers = env.path("layers.tar");
    hostile_archive(
        &layers,
        "hostile/layers:1",
        (0..4)
            .map(|i| {
                Layer::gzip(
                    LayerBuilder::new()
                        .file(&format!("zeros{i}"), &vec![i as u8; 3 << 20], 0o644)
                        .build(),
                )
            })
            .collect(),
    );
    reg.push(&escape, "hostile/escape:1");
    reg.push(&bomb, "hostile/bomb:1");
    reg.push(&layers, "hostile/layers:1");
    let pod = |name: &str, image: &str| {
        format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  hostNetwork: true\n  terminationGracePeriodSeconds: 2\n  containers:\n  - name: app\n    image: {image}\n    imagePullPolicy: IfNotPresent\n    command: [sleep, '3600']\n")
    };
    env.manifest("good", &pod("good", "busybox"));
    env.manifest(
        "escape",
        &pod(
            "escape",
            &format!("127.0.0.1:{}/hostile/escape:1", reg.port),
        ),
    );
    env.manifest(
        "bomb",
        &pod("bomb", &format!("127.0.0.1:{}/hostile/bomb:1", reg.port)),
    );
    env.manifest(
        "layers",
        &pod(
            "layers",
            &format!("127.0.0.1:{}/hostile/layers:1", reg.port),
        ),
    );
    env.start_with(&[
        "--insecure-registry".into(),
        format!("127.0.0.1:{}", reg.port),
        "--max-layer-size".into(),
        "8Mi".into(),
        "--max-image-size".into(),
        "8Mi".into(),
    ]);
    env.wait("good pod running", 120, || {
        env.pod("good")
            .is_some_and(|p| p["status"]["phase"] == "Running")
    });
    let pull_failed = |name: &str, shows: &str| {
        env.events(name).iter().any(|e| {
            e["reason"] == "Failed"
                && e["message"].as_str().is_some_and(|m| {
                    m.contains("ErrImagePull")
                        && m.contains(&format!("hostile/{name}:1"))
                        && m.contains(shows)
                })
        }) && env.pod(name).is_some_and(|p| {
            container_state(&p, "app").is_some_and(|c| {
                let reason = &c["state"]["waiting"]["reason"];
                reason == "ErrImagePull" || reason == "ImagePullBackOff"
            })
        })
    };
    env.wait("the escape fails its pull naming the entry", 120, || {
        pull_failed("escape", "link/pwned")
    });
    env.wait("the bomb fails its pull on the size limit", 120, || {
        pull_failed("bomb", "layer size limit")
    });
    env.wait("the layers fail their pull on the image limit", 120, || {
        pull_failed("layers", "image size limit of 8388608 at \"zeros2\"")
    });
    let names: Vec<String> = std::fs::read_dir(&canary)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        vec!["secret".to_string()],
        "nothing written outside the store"
    );
    let out = bin()
        .args(["images", "list", "--root-dir"])
        .arg(env.root())
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        !listed.contains("hostile"),
        "no hostile image is kept:\n{listed}"
    );
    // The agent stays healthy: the good pod still runs after the failed pulls and back-offs.
    let good = env.pod("good").unwrap();
    assert_eq!(good["status"]["phase"], "Running");
    assert_eq!(
        container_state(&good, "app").unwrap()["restartCount"],
        0,
        "{good}"
    );
    assert!(env.agent_pid().is_some(), "the agent is running");
}

#[test]
fn security_context_user_seccomp_and_read_only_root() {
    if !can_run() {
        return;
    }
    let mut env = Env::new("e2e-d");
    env.manifest(
        "secure",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: secure\nspec:\n  hostNetwork: true\n  terminationGracePeriodSeconds: 1\n  securityContext:\n    seccompProfile: {type: RuntimeDefault}\n  containers:\n  - name: app\n    image: busybox\n    imagePullPolicy: IfNotPresent\n    command: [sh, -c, 'echo uid=$(id -u) gid=$(id -g); unshare -U true 2>/dev/null || echo unshare-blocked; touch /x 2>/dev/null || echo rootfs-read-only; sleep 3600']\n    securityContext:\n      runAsUser: 1000\n      runAsGroup: 1000\n      readOnlyRootFilesystem: true\n  - name: root\n    image: busybox\n    imagePullPolicy: IfNotPresent\n    command: [sleep, '3600']\n    securityContext: {runAsNonRoot: true}\n",
    );
    env.start();
    env.wait("refusal of runAsNonRoot as root", 120, || {
        env.pod("secure").is_some_and(|p| {
            container_state(&p, "root").is_some_and(|c| {
                c["state"]["waiting"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("runAsNonRoot"))
            })
        })
    });
    let uid = env.pod("secure").unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    let log = env
        .path("logs")
        .join(format!("default_secure-e2e-d_{uid}/app/0.log"));
    env.wait("the app's checks", 60, || {
        std::fs::read_to_string(&log).is_ok_and(|l| {
            l.contains("uid=1000 gid=1000")
                && l.contains("unshare-blocked")
                && l.contains("rootfs-read-only")
        })
    });
}

#[test]
fn memory_limit_kill_is_reported_as_oom_killed() {
    if !can_run() {
        return;
    }
    let mut env = Env::new("e2e-f");
    env.manifest(
        "hog",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: hog\nspec:\n  hostNetwork: true\n  restartPolicy: Never\n  containers:\n  - name: app\n    image: busybox\n    imagePullPolicy: IfNotPresent\n    command: [sh, -c, 'x=$(head -c 67108864 /dev/zero | tr \"\\\\000\" x); echo survived']\n    resources:\n      limits: {memory: 16Mi}\n",
    );
    env.start();
    env.wait("OOMKilled", 120, || {
        env.pod("hog").is_some_and(|p| {
            container_state(&p, "app").is_some_and(|c| {
                c["state"]["terminated"]["reason"] == "OOMKilled"
                    && c["state"]["terminated"]["exitCode"] == 137
            }) && p["status"]["phase"] == "Failed"
        })
    });
}

#[test]
fn shared_process_namespace_lets_containers_see_each_other() {
    if !can_run() {
        return;
    }
    let mut env = Env::new("e2e-g");
    env.manifest(
        "shared",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: shared\nspec:\n  hostNetwork: true\n  shareProcessNamespace: true\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: a\n    image: busybox\n    imagePullPolicy: IfNotPresent\n    command: [sleep, '3601']\n  - name: b\n    image: busybox\n    imagePullPolicy: IfNotPresent\n    command: [sh, -c, 'while true; do ps -o pid,args > /tmp/ps; cat /tmp/ps; sleep 1; done']\n",
    );
    env.start();
    env.wait("both running", 120, || {
        env.pod("shared")
            .is_some_and(|p| p["status"]["phase"] == "Running")
    });
    let uid = env.pod("shared").unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    let log = env
        .path("logs")
        .join(format!("default_shared-e2e-g_{uid}/b/0.log"));
    // b sees a's process, and PID 1 is the pod's holder, not a container.
    env.wait("b sees a", 60, || {
        std::fs::read_to_string(&log)
            .is_ok_and(|l| l.contains("sleep 3601") && l.contains(" 1 ") && l.contains("pause"))
    });
    std::fs::remove_file(env.path("manifests/shared.yaml")).unwrap();
    let root = env.root();
    env.wait("removed", 60, || {
        std::fs::read_dir(root.join("runtime/sandboxes"))
            .map(|d| d.count())
            .unwrap_or(0)
            == 0
    });
    let leftover = Command::new("pgrep")
        .args(["-f", "staticlet.* pause"])
        .output()
        .unwrap();
    assert!(
        leftover.stdout.is_empty(),
        "pause holder left: {}",
        String::from_utf8_lossy(&leftover.stdout)
    );
}

/// kubelet's R1 (test/e2e_node/mirror_pod_readiness_test.go) with a real container and a real
/// API server: the container drops its readiness file on SIGTERM and keeps running 10 s; the
/// readiness probe keeps running during termination, so the mirror pod turns Ready=False while
/// it still exists.
#[test]
fn mirror_turns_unready_during_termination() {
    if !can_run() {
        return;
    }
    if let Some(why) = staticlet_k8s_testenv::skip_reason() {
        eprintln!("skipped: {why}");
        return;
    }
    let cp = staticlet_k8s_testenv::ControlPlane::start("e2e-r").unwrap();
    let mut env = Env::new("e2e-r");
    env.manifest(
        "ready",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: ready\nspec:\n  hostNetwork: true\n  terminationGracePeriodSeconds: 30\n  containers:\n  - name: app\n    image: busybox\n    imagePullPolicy: IfNotPresent\n    command: [sh, -c, 'touch /tmp/ready; trap \"rm -f /tmp/ready; sleep 10; exit 0\" TERM; while true; do sleep 1; done']\n    readinessProbe:\n      exec:\n        command: [cat, /tmp/ready]\n      initialDelaySeconds: 1\n      periodSeconds: 1\n      failureThreshold: 1\n",
    );
    env.start_with(&[
        "--kubeconfig".into(),
        cp.node_kubeconfig().display().to_string(),
        // No node API: other tests may hold its port (node_api_e2e.rs tests it).
        "--port".into(),
        "0".into(),
    ]);
    let mirror_ready = |want: &str| {
        cp.kubectl_json(&["get", "pod", "-n", "default", "ready-e2e-r"])
            .ok()
            .filter(|m| {
                m["status"]["conditions"].as_array().is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == want)
                })
            })
    };
    env.wait("mirror Ready=True", 120, || mirror_ready("True").is_some());
    let uid = mirror_ready("True").unwrap()["metadata"]["uid"].clone();
    std::fs::remove_file(env.path("manifests/ready.yaml")).unwrap();
    env.wait("mirror Ready=False during termination", 60, || {
        mirror_ready("False").is_some_and(|m| m["metadata"]["uid"] == uid)
    });
    env.wait("mirror deleted after termination", 60, || {
        let out = cp.kubectl(&["get", "pod", "-n", "default", "ready-e2e-r"]);
        String::from_utf8_lossy(&out.stderr).contains("NotFound")
    });
}

/// Without any CNI configuration (issue 15: the default pod network), a pod without
/// hostNetwork gets an address on the built-in network (bridge staticlet0, 10.87.0.0/16): the
/// host reaches it through its hostPort, another pod reaches it by its IP, and it reaches the
/// host through its gateway; its address is released when it goes.
#[test]
fn built_in_network_without_any_cni_configuration() {
    if !can_run() {
        return;
    }
    use std::io::{Read, Write};
    let mut env = Env::new("e2e-net");
    // Something on the host for the pod to reach, on every address (the gateway included).
    let host = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let host_port = host.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut c in host.incoming().flatten() {
            let mut buf = [0u8; 1024];
            let _ = c.read(&mut buf);
            let _ = c.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 12\r\n\r\nhost-says-hi");
        }
    });
    let port = free_port();
    env.manifest(
        "web",
        &env.pod_manifest(
            "web",
            &format!(
                "  terminationGracePeriodSeconds: 1\n  containers:\n  - name: app\n    image: IMAGE\n    imagePullPolicy: IfNotPresent\n    command: [sh, -c, 'mkdir -p /www && echo pod-says-hi > /www/index.html; wget -O - http://10.87.0.1:{host_port}/; echo \" wget-exit=$?\"; exec httpd -f -p 80 -h /www']\n    ports:\n    - containerPort: 80\n      hostPort: {port}\n"
            ),
        ),
    );
    env.start();
    let mut ip = String::new();
    env.wait("web on the built-in network", 120, || {
        env.pod("web").is_some_and(|p| {
            ip = p["status"]["podIP"].as_str().unwrap_or_default().into();
            p["status"]["phase"] == "Running"
        })
    });
    assert!(ip.starts_with("10.87."), "pod IP {ip}");
    let allocation = Path::new("/var/lib/cni/networks/staticlet").join(&ip);
    assert!(
        allocation.exists(),
        "{} not allocated",
        allocation.display()
    );
    // Pod to host, through the gateway.
    let log = env.log_file("web", &env.uid("web"), "app", 0);
    env.wait("the pod reached the host", 60, || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("wget-exit="))
    });
    let out = std::fs::read_to_string(&log).unwrap();
    assert!(out.contains("host-says-hi wget-exit=0"), "{out}");
    // Host to pod, through the hostPort.
    env.wait("the hostPort answers", 60, || {
        http_get(port).is_some_and(|b| b.contains("pod-says-hi"))
    });
    // Pod to pod, by IP.
    env.manifest(
        "client",
        &env.pod_manifest(
            "client",
            &format!(
                "  terminationGracePeriodSeconds: 1\n  containers:\n  - name: app\n    image: IMAGE\n    imagePullPolicy: IfNotPresent\n    command: [sh, -c, 'until wget -q -O - http://{ip}/; do sleep 1; done; sleep 3600']\n"
            ),
        ),
    );
    let client_log = || {
        env.pod("client")
            .map(|_| env.log_file("client", &env.uid("client"), "app", 0))
    };
    env.wait("the other pod reached web", 120, || {
        client_log()
            .and_then(|l| std::fs::read_to_string(l).ok())
            .is_some_and(|l| l.contains("pod-says-hi"))
    });
    let agent_log = env.agent_log();
    assert!(
        agent_log.contains("use the built-in network (10.87.0.0/16 on bridge staticlet0"),
        "{agent_log}"
    );
    env.remove_manifest("web");
    env.remove_manifest("client");
    env.wait("pods removed", 60, || env.sandboxes() == 0);
    assert!(!allocation.exists(), "the address was released");
}

/// A container's exit reaches its pod worker as the runtime's event, every time (issue 18,
/// item 4): 100 pods whose container crashes once are all restarted while the relist, the only
/// other way the agent learns of an exit, runs once an hour (`--relist-period`, hidden); and no
/// exit is counted as found by a relist.
#[test]
fn every_crash_is_restarted_on_the_runtime_event() {
    if !can_run() {
        return;
    }
    const PODS: usize = 100;
    let mut env = Env::new("e2e-exits");
    for i in 0..PODS {
        env.manifest(
            &format!("crash{i}"),
            &format!(
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: crash{i}\nspec:\n  hostNetwork: true\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: app\n    image: busybox\n    imagePullPolicy: IfNotPresent\n    command: [sh, -c, 'if [ -e /d/crashed ]; then exec sleep 3600; fi; touch /d/crashed; exit 1']\n    volumeMounts: [{{name: d, mountPath: /d}}]\n  volumes:\n  - {{name: d, emptyDir: {{}}}}\n"
            ),
        );
    }
    env.start_with(&["--relist-period".into(), "1h".into()]);
    // Each pod: restarted once after its crash (the first restart has no back-off), running.
    let restarted = |pods: &serde_json::Value| {
        pods["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter(|p| {
                        let c = &p["status"]["containerStatuses"][0];
                        c["restartCount"] == 1 && c["state"]["running"].is_object()
                    })
                    .count()
            })
            .unwrap_or(0)
    };
    let mut seen = 0;
    env.wait("every crashed container restarted", 300, || {
        let Some(body) = env.api_get("/pods") else {
            return false;
        };
        let pods: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        seen = restarted(&pods);
        seen == PODS
    });
    assert_eq!(seen, PODS);
    let metrics = env.api_get("/metrics").unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l == "staticlet_relist_found_exits_total 0"),
        "{metrics}"
    );
}

/// This process's view of another's thread count (`Threads:` of `/proc/<pid>/status`).
fn threads_of(pid: u32) -> Option<usize> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))?
        .trim()
        .parse()
        .ok()
}

/// Pids of the processes whose command line is exactly `cmdline` (words joined by spaces).
fn processes(cmdline: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse().ok()?;
            let raw = std::fs::read(e.path().join("cmdline")).ok()?;
            let words: Vec<String> = raw
                .split(|&b| b == 0)
                .filter(|w| !w.is_empty())
                .map(|w| String::from_utf8_lossy(w).into_owned())
                .collect();
            (words.join(" ") == cmdline).then_some(pid)
        })
        .collect()
}

/// Removing many pods at once holds no agent thread per container for its grace period (the
/// 30-minute soak saw 207 threads when its 200 pods went at once): 50 pods whose container
/// ignores SIGTERM, grace 3 s, all manifests removed together. Every container lives until the
/// end of its grace and is then killed; the agent's thread count stays bounded meanwhile.
#[test]
fn removing_many_pods_at_once_holds_no_thread_per_container() {
    if !can_run() {
        return;
    }
    const PODS: usize = 50;
    const GRACE: std::time::Duration = std::time::Duration::from_secs(3);
    let mut env = Env::new("e2e-stops");
    let marker = 7_000_000 + std::process::id() % 1_000_000;
    let sleep = format!("sleep {marker}");
    for i in 0..PODS {
        env.manifest(
            &format!("stop{i}"),
            &format!(
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: stop{i}\nspec:\n  hostNetwork: true\n  terminationGracePeriodSeconds: {}\n  containers:\n  - name: app\n    image: busybox\n    imagePullPolicy: IfNotPresent\n    command: [sh, -c, \"trap '' TERM; exec {sleep}\"]\n",
                GRACE.as_secs()
            ),
        );
    }
    env.start();
    let pid = env.agent_pid().unwrap();
    env.wait("every pod's container running", 300, || {
        processes(&sleep).len() == PODS
    });
    // The start burst's blocking threads retire after 2 s idle: wait until the count has held
    // still for 3 s.
    let (mut before, mut since) = (threads_of(pid).unwrap(), std::time::Instant::now());
    env.wait("the agent's thread count settled", 120, || {
        let now = threads_of(pid).unwrap();
        if now != before {
            (before, since) = (now, std::time::Instant::now());
        }
        since.elapsed() >= std::time::Duration::from_secs(3)
    });

    let removed = std::time::Instant::now();
    for i in 0..PODS {
        env.remove_manifest(&format!("stop{i}"));
    }
    let mut most = before;
    let mut early = Vec::new();
    let deadline = removed + GRACE + std::time::Duration::from_secs(180);
    loop {
        // Read before the clock: a sample taken within the grace saw processes from within it.
        let alive = processes(&sleep).len();
        let at = removed.elapsed();
        if at < GRACE && alive < PODS {
            early.push((at, alive));
        }
        most = most.max(threads_of(pid).unwrap());
        if alive == 0 && env.leftovers().is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "pods not gone: {alive} containers alive, left: {:?}",
            env.leftovers()
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let gone = removed.elapsed();
    eprintln!(
        "{PODS} pods removed at once (grace {GRACE:?}): gone in {gone:.1?}; agent threads {before} before, at most {most} meanwhile"
    );
    assert!(
        early.is_empty(),
        "killed before the end of the grace: {early:?}"
    );
    assert!(gone >= GRACE, "{gone:?}");
    assert!(
        most <= 40,
        "{PODS} pods removed at once: {before} agent threads before, {most} meanwhile"
    );
}
