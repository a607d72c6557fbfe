//! Pods' lifecycle: running and serving, pod network, restarts with back-off, logs, manifest
//! edits and removals, the agent killed, image pull failures, metrics.

use crate::common::{
    condition, container_state, events, free_port, http_get, pod_cgroups, status, Env,
};

on_both_backends!(
    host_network_pod_serves,
    crash_loop_backs_off,
    logs_of_current_and_previous,
    pod_network_through_cni,
    managed_hosts_file,
    edited_manifest_replaces_pod,
    removed_manifest_removes_pod,
    agent_kill_keeps_containers,
    image_pull_failure_is_reported,
    metrics_report_usage,
    staticlet_exec_through_the_agent,
    control_verbs_restart_stop_start,
);

/// A hostNetwork web server whose content an init container writes into an emptyDir, on a free
/// port.
fn web_manifest(env: &Env, port: u16) -> String {
    env.pod_manifest(
        "web",
        &r#"  hostNetwork: true
  terminationGracePeriodSeconds: 5
  initContainers:
  - name: content
    image: IMAGE
    imagePullPolicy: IfNotPresent
    command: [sh, -c, 'echo writing content; echo served-by-staticlet > /www/index.html']
    volumeMounts: [{name: www, mountPath: /www}]
  containers:
  - name: httpd
    image: IMAGE
    imagePullPolicy: IfNotPresent
    command: [httpd, -f, -p, 'PORT', -h, /www]
    volumeMounts: [{name: www, mountPath: /www, readOnly: true}]
    resources:
      limits: {memory: 64Mi, cpu: 500m}
  volumes:
  - {name: www, emptyDir: {}}
"#
        .replace("PORT", &port.to_string()),
    )
}

/// A container that prints `attempt`, leaves `bye` as its termination message and exits 3, every
/// time.
fn crash_manifest(env: &Env) -> String {
    env.pod_manifest(
        "crash",
        r#"  hostNetwork: true
  terminationGracePeriodSeconds: 2
  containers:
  - name: app
    image: IMAGE
    imagePullPolicy: IfNotPresent
    command: [sh, -c, 'echo attempt; echo -n bye > /dev/termination-log; exit 3']
"#,
    )
}

/// A hostNetwork pod runs and serves what its init container prepared; its statuses name the
/// backend's containers and its logs are readable with `staticlet logs`.
fn host_network_pod_serves(env: &mut Env) {
    let port = free_port();
    env.manifest("web", &web_manifest(env, port));
    env.start();
    env.wait("web serving", 120, || {
        http_get(port).is_some_and(|b| b.contains("served-by-staticlet"))
    });
    env.wait("web Running and Ready", 60, || {
        env.pod("web").is_some_and(|p| {
            p["status"]["phase"] == "Running" && condition(&p, "Ready") == Some("True")
        })
    });
    let web = env.pod("web").unwrap();
    let httpd = container_state(&web, "httpd").unwrap();
    assert!(
        httpd["containerID"]
            .as_str()
            .is_some_and(|id| id.starts_with(env.container_id_prefix())),
        "{web}"
    );
    assert_eq!(httpd["restartCount"], 0, "{web}");
    let init = &web["status"]["initContainerStatuses"][0];
    assert_eq!(init["name"], "content", "{web}");
    assert_eq!(init["state"]["terminated"]["exitCode"], 0, "{web}");
    assert_eq!(init["state"]["terminated"]["reason"], "Completed", "{web}");
    // The logs land where the agent asked, readable with `staticlet logs`.
    assert_eq!(
        env.logs("web", &["-c", "content"]).unwrap(),
        "writing content\n"
    );
}

/// A container that keeps failing is restarted with back-off (kubelet's CrashLoopBackOff), its
/// last exit code and termination message in `lastState`; each attempt logs in CRI format.
fn crash_loop_backs_off(env: &mut Env) {
    env.manifest("crash", &crash_manifest(env));
    env.start();
    env.wait("crash restarted", 120, || {
        status(env, "crash", "app").is_some_and(|c| {
            c["restartCount"].as_i64() >= Some(1)
                && c["lastState"]["terminated"]["exitCode"] == 3
                && c["lastState"]["terminated"]["message"] == "bye"
        })
    });
    let full = env.full_name("crash");
    let uid = env.uid("crash");
    env.wait("CrashLoopBackOff", 120, || {
        status(env, "crash", "app").is_some_and(|c| {
            let w = &c["state"]["waiting"];
            w["reason"] == "CrashLoopBackOff"
                && w["message"].as_str().is_some_and(|m| {
                    m.starts_with("back-off ")
                        && m.ends_with(&format!(
                            "restarting failed container=app pod={full}_default({uid})"
                        ))
                })
        })
    });
    env.wait("a second restart", 120, || {
        status(env, "crash", "app").is_some_and(|c| c["restartCount"].as_i64() >= Some(2))
    });
    let backoff = events(env, "crash", "BackOff");
    assert!(
        backoff.iter().any(|e| e["type"] == "Warning"
            && e["message"]
                == format!(
                    "Back-off restarting failed container app in pod {full}_default({uid})"
                )),
        "{backoff:?}"
    );
    let log = std::fs::read_to_string(env.log_file("crash", &uid, "app", 0)).unwrap();
    assert!(
        log.lines().next().unwrap().ends_with(" stdout F attempt"),
        "{log}"
    );
    // On the embedded runtime each exited attempt's shim was the agent's child: reaped, no
    // `<defunct>` left behind (containerd's shims are not the agent's children at all).
    env.wait("exited children reaped", 30, || {
        env.zombie_children().is_empty()
    });
}

/// `staticlet logs` shows the running instance's output and, with `--previous`, the one before
/// (the container crashes once, remembering it in an emptyDir, which outlives restarts).
fn logs_of_current_and_previous(env: &mut Env) {
    env.manifest(
        "once",
        &env.pod_manifest(
            "once",
            r#"  hostNetwork: true
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: IMAGE
    imagePullPolicy: IfNotPresent
    command: [sh, -c, 'if [ -f /state/crashed ]; then echo second; sleep 3600; else touch /state/crashed; echo first; exit 3; fi']
    volumeMounts: [{name: state, mountPath: /state}]
  volumes:
  - {name: state, emptyDir: {}}
"#,
        ),
    );
    env.start();
    env.wait("restarted once and running", 120, || {
        status(env, "once", "app").is_some_and(|c| {
            c["restartCount"] == 1
                && c["state"]["running"].is_object()
                && c["lastState"]["terminated"]["exitCode"] == 3
        })
    });
    env.wait("the current instance's output", 60, || {
        env.logs("once", &[]).as_deref() == Ok("second\n")
    });
    assert_eq!(env.logs("once", &["--previous"]).unwrap(), "first\n");
    assert_eq!(
        env.logs("once", &["-c", "app", "-p", "--timestamps"])
            .unwrap()
            .split_once(' ')
            .map(|(_, text)| text),
        Some("first\n")
    );
    // The agent down: the files under --log-dir, read the same way.
    env.kill_agent();
    let logs_dir = env.path("logs");
    assert_eq!(
        env.logs("once", &["--log-dir", logs_dir.to_str().unwrap()])
            .unwrap(),
        "second\n"
    );
    assert_eq!(
        env.logs(
            "once",
            &["--previous", "--log-dir", logs_dir.to_str().unwrap()]
        )
        .unwrap(),
        "first\n"
    );
}

/// A pod without hostNetwork gets an address on the CNI bridge, sees it on its eth0, and the
/// address is released when the pod goes.
fn pod_network_through_cni(env: &mut Env) {
    let prefix = env.pod_network();
    env.manifest(
        "net",
        &env.pod_manifest(
            "net",
            r#"  terminationGracePeriodSeconds: 2
  containers:
  - name: app
    image: IMAGE
    imagePullPolicy: IfNotPresent
    command: [sh, -c, 'ip -4 addr show eth0; hostname; cat /etc/hosts; sleep 3600']
"#,
        ),
    );
    env.start();
    let mut ip = String::new();
    env.wait("pod IP", 120, || {
        env.pod("net").is_some_and(|p| {
            ip = p["status"]["podIP"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            ip.starts_with(&prefix) && p["status"]["phase"] == "Running"
        })
    });
    let p = env.pod("net").unwrap();
    assert_eq!(p["status"]["podIPs"][0]["ip"], ip.as_str(), "{p}");
    assert!(env.ip_allocated(&ip));
    let log = env.log_file("net", &env.uid("net"), "app", 0);
    let full = env.full_name("net");
    // The pod's hostname is its name; /etc/hosts maps it to the pod IP (kubelet's managed hosts
    // file, `managed_hosts_file` has the rest of it).
    env.wait("container output", 60, || {
        std::fs::read_to_string(&log).is_ok_and(|l| {
            l.contains(&format!("inet {ip}/24"))
                && l.contains(&format!(" stdout F {full}"))
                && l.contains(&format!("{ip}\t{full}"))
        })
    });
    env.remove_manifest("net");
    env.wait("pod removed", 60, || env.sandboxes() == 0);
    assert!(!env.ip_allocated(&ip), "the pod's address was released");
}

/// Every container sees the pod's managed /etc/hosts (kubelet's, whatever the runtime): on the
/// pod network localhost, the IPv6 names and `IP<TAB>hostname`, under hostNetwork the node's own
/// file; both end with the pod's `hostAliases`.
fn managed_hosts_file(env: &mut Env) {
    env.pod_network();
    let spec = |host_network: bool| {
        format!(
            r#"  hostNetwork: {host_network}
  terminationGracePeriodSeconds: 1
  hostAliases:
  - ip: 10.9.8.7
    hostnames: [alias-one, alias-two.example]
  - ip: "fd00::7"
    hostnames: [alias-six]
  initContainers:
  - name: init
    image: IMAGE
    imagePullPolicy: IfNotPresent
    command: [cat, /etc/hosts]
  containers:
  - name: app
    image: IMAGE
    imagePullPolicy: IfNotPresent
    command: [sleep, '3600']
"#
        )
    };
    env.manifest("net", &env.pod_manifest("net", &spec(false)));
    env.manifest("host", &env.pod_manifest("host", &spec(true)));
    env.start();
    let running = |env: &Env, name: &str| {
        env.pod(name)
            .is_some_and(|p| p["status"]["phase"] == "Running")
    };
    env.wait("both pods running", 120, || {
        running(env, "net") && running(env, "host")
    });
    let aliases = "\n# Entries added by HostAliases.\n10.9.8.7\talias-one\talias-two.example\nfd00::7\talias-six\n";
    let ip = env.pod("net").unwrap()["status"]["podIP"]
        .as_str()
        .unwrap()
        .to_string();
    let want_net = format!(
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n{ip}\t{}\n{aliases}",
        env.full_name("net")
    );
    let node = std::fs::read_to_string("/etc/hosts").unwrap();
    let want_host = format!("# Kubernetes-managed hosts file (host network).\n{node}{aliases}");
    for (name, want) in [("net", &want_net), ("host", &want_host)] {
        assert_eq!(
            &env.exec(name, "app", &["cat", "/etc/hosts"]),
            want,
            "{name}"
        );
        // The init container saw the same file.
        let uid = env.uid(name);
        let log = std::fs::read_to_string(env.log_file(name, &uid, "init", 0)).unwrap();
        let text: String = log
            .lines()
            .map(|l| l.splitn(4, ' ').nth(3).unwrap_or_default().to_string() + "\n")
            .collect();
        assert_eq!(&text, want, "{name}'s init container");
    }
}

/// An edited manifest is a new pod: the old one terminates completely before the new one's
/// sandbox is created, and only the new one's container is left.
fn edited_manifest_replaces_pod(env: &mut Env) {
    let manifest = |env: &Env, tag: &str| {
        env.pod_manifest(
            "app",
            &r#"  hostNetwork: true
  terminationGracePeriodSeconds: 3
  containers:
  - name: app
    image: IMAGE
    imagePullPolicy: IfNotPresent
    command: [sh, -c, 'echo TAG; trap "sleep 1; exit 0" TERM; while true; do sleep 1; done']
"#
            .replace("TAG", tag),
        )
    };
    env.manifest("app", &manifest(env, "v1"));
    env.start();
    let running_uid = |env: &Env| {
        env.pod("app").and_then(|p| {
            (p["status"]["phase"] == "Running" && p["metadata"]["deletionTimestamp"].is_null())
                .then(|| p["metadata"]["uid"].as_str().unwrap().to_string())
        })
    };
    let mut v1 = String::new();
    env.wait("v1 running", 120, || {
        running_uid(env).map(|u| v1 = u).is_some()
    });
    env.manifest("app", &manifest(env, "v2"));
    let mut v2 = String::new();
    env.wait("v2 running", 120, || {
        running_uid(env).is_some_and(|u| {
            u != v1 && {
                v2 = u;
                true
            }
        })
    });
    // The old pod terminated completely before the new one's sandbox was created.
    let agent_log = env.agent_log();
    let line_of = |uid: &str, what: &str| {
        agent_log
            .lines()
            .position(|l| l.contains(uid) && l.contains(what))
            .unwrap_or_else(|| panic!("no {what:?} for {uid}"))
    };
    assert!(
        line_of(&v1, "pod terminated") < line_of(&v2, "pod sandbox created"),
        "{agent_log}"
    );
    // Only the new pod's container is left in the runtime.
    let new_id = status(env, "app", "app").unwrap()["containerID"]
        .as_str()
        .unwrap()
        .strip_prefix(env.container_id_prefix())
        .unwrap()
        .to_string();
    env.wait("old container removed", 60, || {
        env.containers() == [new_id.clone()]
    });
    // The runtime creates the log file with the container's first line: wait for it.
    let log = env.log_file("app", &v2, "app", 0);
    env.wait("the new version's output", 60, || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains(" stdout F v2"))
    });
}

/// Removed manifests: the pods stop, their containers and sandboxes are removed from the
/// runtime, and their cgroups (`/staticlet/pod<uid>`) from every cgroup hierarchy.
fn removed_manifest_removes_pod(env: &mut Env) {
    let port = free_port();
    env.manifest("web", &web_manifest(env, port));
    env.manifest("crash", &crash_manifest(env));
    env.start();
    env.wait("web serving, crash restarted", 120, || {
        http_get(port).is_some_and(|b| b.contains("served-by-staticlet"))
            && status(env, "crash", "app").is_some_and(|c| c["restartCount"].as_i64() >= Some(1))
    });
    assert_eq!(env.sandboxes(), 2);
    let uids = [env.uid("web"), env.uid("crash")];
    for uid in &uids {
        assert!(!pod_cgroups(uid).is_empty(), "no cgroup of pod {uid}");
    }
    env.remove_manifest("web");
    env.remove_manifest("crash");
    env.wait("everything removed", 120, || {
        env.containers().is_empty() && env.sandboxes() == 0
    });
    assert!(http_get(port).is_none(), "the web server is gone");
    env.wait("pods no longer shown", 30, || {
        env.pod("web").is_none() && env.pod("crash").is_none()
    });
    env.wait("the pods' cgroups removed in every hierarchy", 30, || {
        uids.iter().all(|uid| pod_cgroups(uid).is_empty())
    });
}

/// kill -9 of the agent: the containers keep running without it, and the restarted agent adopts
/// them (nothing restarted, statuses as they were: restart counts, last states).
fn agent_kill_keeps_containers(env: &mut Env) {
    let port = free_port();
    env.manifest("web", &web_manifest(env, port));
    env.manifest("crash", &crash_manifest(env));
    env.start();
    env.wait("web serving, crash restarted", 120, || {
        http_get(port).is_some_and(|b| b.contains("served-by-staticlet"))
            && status(env, "crash", "app").is_some_and(|c| {
                c["restartCount"].as_i64() >= Some(1)
                    && c["lastState"]["terminated"]["exitCode"] == 3
            })
    });
    let web = status(env, "web", "httpd").unwrap();
    let crash_restarts = status(env, "crash", "app").unwrap()["restartCount"]
        .as_i64()
        .unwrap();
    env.kill_agent();
    assert!(
        http_get(port).is_some(),
        "the pod keeps serving without its agent"
    );
    env.start();
    env.wait("web adopted", 60, || {
        status(env, "web", "httpd").is_some_and(|c| {
            c["state"]["running"]["startedAt"] == web["state"]["running"]["startedAt"]
        })
    });
    let again = status(env, "web", "httpd").unwrap();
    assert_eq!(again["restartCount"], 0, "{again}");
    assert_eq!(again["containerID"], web["containerID"], "{again}");
    env.wait("crash's status kept", 60, || {
        status(env, "crash", "app").is_some_and(|c| {
            c["restartCount"].as_i64() >= Some(crash_restarts)
                && c["lastState"]["terminated"]["exitCode"] == 3
                && c["lastState"]["terminated"]["message"] == "bye"
        })
    });
    assert_eq!(env.sandboxes(), 2, "no pod got a second sandbox");
    assert!(http_get(port).is_some_and(|b| b.contains("served-by-staticlet")));
}

/// An image that cannot be pulled: ErrImagePull with the runtime's message (status and a
/// `Failed` event), then ImagePullBackOff.
fn image_pull_failure_is_reported(env: &mut Env) {
    let image = "127.0.0.1:1/no/such:image";
    env.manifest(
        "missing",
        &env.pod_manifest(
            "missing",
            &r#"  hostNetwork: true
  containers:
  - name: app
    image: MISSING
    imagePullPolicy: IfNotPresent
    command: ['true']
"#
            .replace("MISSING", image),
        ),
    );
    env.start();
    env.wait("pull failure reported", 120, || {
        status(env, "missing", "app").is_some_and(|c| {
            let w = &c["state"]["waiting"];
            matches!(
                w["reason"].as_str(),
                Some("ErrImagePull" | "ImagePullBackOff")
            ) && w["message"]
                .as_str()
                .is_some_and(|m| m.contains("127.0.0.1:1"))
        })
    });
    env.wait("ImagePullBackOff", 120, || {
        status(env, "missing", "app").is_some_and(|c| {
            c["state"]["waiting"]["reason"] == "ImagePullBackOff"
                && c["state"]["waiting"]["message"]
                    == format!("Back-off pulling image {image:?}").as_str()
        })
    });
    let failed = events(env, "missing", "Failed");
    assert!(
        failed.iter().any(|e| e["type"] == "Warning"
            && e["message"].as_str().is_some_and(|m| {
                m.starts_with("Error: ErrImagePull: ") && m.contains("127.0.0.1:1")
            })),
        "{failed:?}"
    );
    let pulling = events(env, "missing", "Pulling");
    assert!(
        pulling
            .iter()
            .any(|e| e["message"] == format!("Pulling image {image:?}").as_str()),
        "{pulling:?}"
    );
    let p = env.pod("missing").unwrap();
    assert_eq!(p["status"]["phase"], "Pending", "{p}");
}

/// `/metrics` reports the pod, its container and the container's real CPU time and memory
/// working set (the embedded runtime reads its cgroups, containerd answers
/// `ListContainerStats`).
fn metrics_report_usage(env: &mut Env) {
    env.manifest(
        "busy",
        &env.pod_manifest(
            "busy",
            r#"  hostNetwork: true
  terminationGracePeriodSeconds: 1
  containers:
  - name: spin
    image: IMAGE
    imagePullPolicy: IfNotPresent
    command: [sh, -c, 'while :; do :; done']
"#,
        ),
    );
    env.start();
    let full = env.full_name("busy");
    let key = format!("{{namespace=\"default\",pod=\"{full}\",container=\"spin\"}}");
    let value = |text: &str, metric: &str| -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{metric}{key} ")))
            .and_then(|v| v.parse().ok())
    };
    env.wait("CPU time and memory in /metrics", 120, || {
        env.api_get("/metrics").is_some_and(|text| {
            value(&text, "container_cpu_usage_seconds_total").is_some_and(|s| s > 0.5)
                && value(&text, "container_memory_working_set_bytes").is_some_and(|b| b > 0.0)
        })
    });
    let text = env.api_get("/metrics").unwrap();
    for want in [
        "staticlet_pods{phase=\"Running\"} 1".to_string(),
        format!("staticlet_pod_ready{{namespace=\"default\",pod=\"{full}\"}} 1"),
        "staticlet_runtime_ready 1".to_string(),
    ] {
        assert!(
            text.lines().any(|l| l == want),
            "missing {want:?} in:\n{text}"
        );
    }
    // The same through the CLI (`get --raw`), as an operator reads it.
    let out = crate::common::bin()
        .args(["get", "--raw", "/metrics", "--root-dir"])
        .arg(env.root())
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("container_cpu_usage_seconds_total"));
}

/// `staticlet exec` goes through the agent's local API (the node API's exec, over SPDY) on
/// either runtime: exit codes pass through, `-i` feeds stdin, `-t` gives a terminal.
fn staticlet_exec_through_the_agent(env: &mut Env) {
    env.manifest(
        "shell",
        &env.pod_manifest(
            "shell",
            "  hostNetwork: true\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: app\n    image: IMAGE\n    imagePullPolicy: IfNotPresent\n    command: [sleep, '3600']\n",
        ),
    );
    env.start();
    env.wait("running", 120, || {
        status(env, "shell", "app").is_some_and(|c| c["state"]["running"].is_object())
    });
    let exec = |args: &[&str]| {
        crate::common::bin()
            .args(["exec", &env.full_name("shell"), "--root-dir"])
            .arg(env.root())
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let out = exec(&["--", "sh", "-c", "echo out; echo err >&2; exit 42"])
        .wait_with_output()
        .unwrap();
    assert_eq!(out.status.code(), Some(42));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    let mut child = exec(&["-i", "--", "sh", "-c", "read x; echo got-$x"]);
    {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(b"hello\n").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "got-hello\n",
        "{out:?}"
    );
    // A terminal: `script` gives staticlet one.
    let line = format!(
        "{} exec {} --root-dir {} -it -- sh -c 'tty; exit 7'",
        env!("CARGO_BIN_EXE_staticlet"),
        env.full_name("shell"),
        env.root().display()
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("/dev/pts/"),
        "{out:?}"
    );
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    // A container that does not exist: the agent's 404, named.
    let out = exec(&["-c", "nope", "--", "true"])
        .wait_with_output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nope"),
        "{out:?}"
    );
}

/// `staticlet restart|stop|start pod`: a restart replaces the container in place (restart
/// count 1); a stopped pod has no container, is shown as Stopped, stays stopped across an agent
/// restart, and runs again after `start`.
fn control_verbs_restart_stop_start(env: &mut Env) {
    env.manifest(
        "ctl",
        &env.pod_manifest(
            "ctl",
            "  hostNetwork: true\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: app\n    image: IMAGE\n    imagePullPolicy: IfNotPresent\n    command: [sleep, '3600']\n",
        ),
    );
    env.start();
    let running =
        |env: &Env| status(env, "ctl", "app").filter(|c| c["state"]["running"].is_object());
    env.wait("running", 120, || running(env).is_some());
    let first = running(env).unwrap()["containerID"].clone();
    let verb = |env: &Env, verb: &str, name: &str| {
        let out = crate::common::bin()
            .args([verb, "pod", name, "--root-dir"])
            .arg(env.root())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{verb}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let full = env.full_name("ctl");
    assert!(verb(env, "restart", &full).contains("restarting"));
    env.wait("restarted in place", 120, || {
        running(env).is_some_and(|c| c["restartCount"] == 1 && c["containerID"] != first)
    });
    let stopped = |env: &Env| {
        env.pod("ctl")
            .is_some_and(|p| p["status"]["reason"] == "Stopped")
    };
    assert!(verb(env, "stop", "ctl").contains("stopped"));
    env.wait("shown as stopped", 120, || stopped(env));
    assert!(env.containers().is_empty(), "{:?}", env.containers());
    // Stays stopped for the next agent.
    env.kill_agent();
    env.start();
    env.wait("listed again", 120, || env.pod("ctl").is_some());
    assert!(stopped(env), "{:?}", env.pod("ctl"));
    assert!(env.containers().is_empty(), "{:?}", env.containers());
    assert!(verb(env, "start", &full).contains("started"));
    env.wait("running again", 120, || running(env).is_some());
    env.remove_manifest("ctl");
    env.wait("removed", 120, || env.pod("ctl").is_none());
}
