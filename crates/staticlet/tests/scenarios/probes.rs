//! Probes and lifecycle hooks: liveness, readiness and startup probes of every kind (exec,
//! httpGet, tcpSocket, grpc), postStart and preStop hooks, and termination messages, checked
//! against kubelet's behaviour (`pkg/kubelet/prober`, `kuberuntime_container.go`). Pods use
//! `hostNetwork`, so no CNI is needed.

use std::io::{Read, Write};
use std::time::{Duration, Instant, SystemTime};

use crate::common::{
    condition, container_state, events, free_port, status, wait_ready, Backend, Env,
};

on_both_backends!(
    failing_exec_liveness_probe_restarts_the_container,
    exec_readiness_probe_flips_ready_both_ways,
    startup_probe_holds_liveness_back,
    http_get_readiness_probe_by_named_port,
    tcp_socket_readiness_probe_follows_the_listener,
    pre_stop_runs_before_sigterm_and_is_cut_at_the_grace_period,
    liveness_kill_runs_pre_stop_then_sigterm_within_the_probe_grace,
    startup_kill_runs_pre_stop_then_sigterm_within_the_probe_grace,
    deadline_kill_runs_pre_stop_then_sigterm_within_the_pod_grace,
    edited_manifest_kill_runs_pre_stop_then_sigterm_within_the_pod_grace,
    failing_post_start_hook_kills_and_restarts_the_container,
    termination_message_from_file_or_log_tail,
    every_failed_probe_attempt_is_an_unhealthy_event,
    failed_post_start_hook_event_leaves_the_hook_output_out,
    grpc_readiness_probe_follows_the_serving_status,
);

/// Seconds since the epoch of an RFC 3339 UTC time as the API writes it
/// (`2024-05-06T07:08:09Z`).
fn epoch_seconds(t: &serde_json::Value) -> i64 {
    let s = t.as_str().unwrap_or_else(|| panic!("not a time: {t}"));
    let n = |r: std::ops::Range<usize>| s[r].parse::<i64>().unwrap();
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * 86_400 + n(11..13) * 3600 + n(14..16) * 60 + n(17..19)
}

fn now_seconds() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The HTTP status code of `GET path` on 127.0.0.1:port.
fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    resp.split_whitespace().nth(1)?.parse().ok()
}

/// A pod manifest: one hostNetwork pod named `name`; `rest` is the YAML after `spec:` (indented
/// by two spaces).
fn pod_yaml(env: &Env, name: &str, rest: &str) -> String {
    env.pod_manifest(name, &format!("  hostNetwork: true\n{rest}"))
}

/// kubelet's `prober.probe`: a liveness probe failing `failureThreshold` times in a row kills the
/// container (`Unhealthy` event with the probe's output, `Killing` "... failed liveness probe,
/// will be restarted"), and the restart policy starts it again.
fn failing_exec_liveness_probe_restarts_the_container(env: &mut Env) {
    env.manifest(
        "live",
        &pod_yaml(
            env,
            "live",
            r#"  terminationGracePeriodSeconds: 2
  containers:
  - name: app
    image: IMAGE
    imagePullPolicy: IfNotPresent
    command: [sh, -c, 'touch /tmp/healthy; sleep 5; rm /tmp/healthy; sleep 3600']
    livenessProbe:
      exec:
        command: [cat, /tmp/healthy]
      periodSeconds: 1
      failureThreshold: 2
"#,
        ),
    );
    env.start();
    env.wait("restart after the liveness probe failed", 120, || {
        status(env, "live", "app").is_some_and(|c| {
            c["restartCount"].as_i64() >= Some(1) && c["lastState"]["terminated"].is_object()
        })
    });
    // The first instance was healthy for 5 s, then failed twice at a 1 s period and was killed
    // with a 2 s grace period: it ran at least 5 s and, with a generous margin, at most 30 s.
    let c = status(env, "live", "app").unwrap();
    let t = &c["lastState"]["terminated"];
    let ran = epoch_seconds(&t["finishedAt"]) - epoch_seconds(&t["startedAt"]);
    assert!((5..=30).contains(&ran), "ran {ran} s: {c}");
    let unhealthy = events(env, "live", "Unhealthy");
    assert!(
        unhealthy.iter().any(|e| {
            e["type"] == "Warning"
                && e["message"].as_str().is_some_and(|m| {
                    m.starts_with("Liveness probe failed: ") && m.contains("/tmp/healthy")
                })
        }),
        "{unhealthy:?}"
    );
    let killing = events(env, "live", "Killing");
    assert!(
        killing
            .iter()
            .any(|e| e["message"] == "Container app failed liveness probe, will be restarted"),
        "{killing:?}"
    );
}

/// Readiness follows the probe both ways (kubelet's readiness worker: one failure or success at
/// `failureThreshold`/`successThreshold` 1 flips it) and never restarts the container; the pod's
/// `Ready` condition follows the container's `ready`. On containerd the probe is a CRI
/// `ExecSync`.
fn exec_readiness_probe_flips_ready_both_ways(env: &mut Env) {
    let probe = match env.backend() {
        // The background sleep inherits the probe's stdout and keeps it open for 300 s: the
        // probe's result must not wait for it (the helper's exit is what counts).
        Backend::Embedded => "[sh, -c, 'sleep 300 & cat /tmp/ready']",
        // containerd 1.6's ExecSync answers only once the output is closed (1.7 added
        // drain_exec_sync_io_timeout to bound that): such a probe times out there, with kubelet
        // as with staticlet.
        Backend::Containerd => "[cat, /tmp/ready]",
    };
    env.manifest(
        "ready",
        &pod_yaml(
            env,
            "ready",
            &r#"  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: IMAGE
    imagePullPolicy: IfNotPresent
    command: [sleep, '3600']
    readinessProbe:
      exec:
        command: PROBE
      periodSeconds: 1
      timeoutSeconds: 2
      failureThreshold: 1
"#
            .replace("PROBE", probe),
        ),
    );
    env.start();
    wait_ready(env, "ready", "app", false);
    env.exec("ready", "app", &["touch", "/tmp/ready"]);
    wait_ready(env, "ready", "app", true);
    let p = env.pod("ready").unwrap();
    assert_eq!(condition(&p, "ContainersReady"), Some("True"), "{p}");
    env.exec("ready", "app", &["rm", "/tmp/ready"]);
    wait_ready(env, "ready", "app", false);
    let p = env.pod("ready").unwrap();
    assert_eq!(condition(&p, "ContainersReady"), Some("False"), "{p}");
    env.exec("ready", "app", &["touch", "/tmp/ready"]);
    wait_ready(env, "ready", "app", true);
}

/// A startup probe holds liveness (and readiness) back until it succeeds (kubelet's worker: "Do
/// not probe liveness/readiness until startup succeeds"): a liveness probe that fails from the
/// first second does not restart a container that needs 15 s to start; `started` is false until
/// the startup probe succeeds. Afterwards liveness runs and does restart it.
fn startup_probe_holds_liveness_back(env: &mut Env) {
    env.manifest(
        "slow",
        &pod_yaml(
            env,
            "slow",
            r#"  terminationGracePeriodSeconds: 2
  containers:
  - name: app
    image: IMAGE
    imagePullPolicy: IfNotPresent
    command: [sh, -c, 'sleep 15; touch /tmp/started; sleep 3600']
    startupProbe:
      exec:
        command: [cat, /tmp/started]
      periodSeconds: 1
      failureThreshold: 120
    livenessProbe:
      exec:
        command: [cat, /tmp/started]
      periodSeconds: 1
      failureThreshold: 1
"#,
        ),
    );
    env.start();
    env.wait("running, not started", 120, || {
        status(env, "slow", "app").is_some_and(|c| {
            c["state"]["running"].is_object() && c["started"] == false && c["ready"] == false
        })
    });
    env.wait("started", 90, || {
        status(env, "slow", "app").is_some_and(|c| c["started"] == true)
    });
    let c = status(env, "slow", "app").unwrap();
    assert_eq!(c["restartCount"], 0, "{c}");
    let up = now_seconds() - epoch_seconds(&c["state"]["running"]["startedAt"]);
    assert!(up >= 14, "started after {up} s only: {c}");
    // No readiness probe: ready once started.
    env.wait("ready", 30, || {
        env.pod("slow")
            .is_some_and(|p| condition(&p, "Ready") == Some("True"))
    });
    // The startup probe's failed attempts are Unhealthy events (as kubelet records them); no
    // liveness attempt ran before it succeeded.
    let unhealthy = events(env, "slow", "Unhealthy");
    assert!(
        unhealthy.iter().all(|e| e["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("Startup probe failed: "))),
        "{unhealthy:?}"
    );

    // Liveness now runs: it fails once and the container is restarted; the new instance is
    // not started again until its own startup probe succeeds.
    env.exec("slow", "app", &["rm", "/tmp/started"]);
    env.wait("restart by liveness", 60, || {
        status(env, "slow", "app").is_some_and(|c| {
            c["restartCount"].as_i64() >= Some(1)
                && c["state"]["running"].is_object()
                && c["started"] == false
        })
    });
    let unhealthy = events(env, "slow", "Unhealthy");
    assert!(
        unhealthy.iter().any(|e| e["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("Liveness probe failed: "))),
        "{unhealthy:?}"
    );
}

/// An httpGet readiness probe by named container port against busybox httpd: 200 is ready,
/// 404 is not.
fn http_get_readiness_probe_by_named_port(env: &mut Env) {
    let port = free_port();
    env.manifest(
        "web",
        &pod_yaml(
            env,
            "web",
            &r#"  terminationGracePeriodSeconds: 1
  containers:
  - name: httpd
    image: IMAGE
    imagePullPolicy: IfNotPresent
    command: [httpd, -f, -p, 'PORT', -h, /www]
    ports:
    - {name: http, containerPort: PORT}
    readinessProbe:
      httpGet:
        path: /index.html
        port: http
      periodSeconds: 1
      failureThreshold: 1
"#
            .replace("PORT", &port.to_string()),
        ),
    );
    env.start();
    // Not ready before httpd listens nor while it answers 404; once the file is served, ready;
    // 404 again (httpd still running), not ready.
    wait_ready(env, "web", "httpd", false);
    env.wait("httpd answering 404", 60, || {
        http_status(port, "/index.html") == Some(404)
    });
    env.exec(
        "web",
        "httpd",
        &["sh", "-c", "echo hello > /www/index.html"],
    );
    wait_ready(env, "web", "httpd", true);
    assert_eq!(http_status(port, "/index.html"), Some(200));
    env.exec("web", "httpd", &["rm", "/www/index.html"]);
    wait_ready(env, "web", "httpd", false);
    assert_eq!(http_status(port, "/index.html"), Some(404));
}

/// A tcpSocket readiness probe: ready while something listens on the port, not once it is
/// closed.
fn tcp_socket_readiness_probe_follows_the_listener(env: &mut Env) {
    let port = free_port();
    env.manifest(
        "tcp",
        &pod_yaml(
            env,
            "tcp",
            &r#"  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: IMAGE
    imagePullPolicy: IfNotPresent
    command: [sh, -c, 'while true; do if [ -f /tmp/listen ]; then nc -ll -p PORT -e true; fi; sleep 1; done']
    readinessProbe:
      tcpSocket:
        port: PORT
      periodSeconds: 1
      failureThreshold: 1
"#
            .replace("PORT", &port.to_string()),
        ),
    );
    env.start();
    let open = || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
    wait_ready(env, "tcp", "app", false);
    assert!(!open());
    env.exec("tcp", "app", &["touch", "/tmp/listen"]);
    wait_ready(env, "tcp", "app", true);
    assert!(open());
    env.exec("tcp", "app", &["sh", "-c", "rm /tmp/listen; killall nc"]);
    wait_ready(env, "tcp", "app", false);
    assert!(!open());
    env.exec("tcp", "app", &["touch", "/tmp/listen"]);
    wait_ready(env, "tcp", "app", true);
}

/// A grpc readiness probe (`grpc.health.v1.Health/Check`, service "") against a health server
/// in this test process, on the pod IP, which under hostNetwork is the node IP (127.0.0.1
/// here, `--node-ip`): Ready follows the server's serving status.
fn grpc_readiness_probe_follows_the_serving_status(env: &mut Env) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (reporter, port) = rt.block_on(async {
        let (reporter, svc) = tonic_health::server::health_reporter();
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l))
                .await
                .unwrap()
        });
        (reporter, port)
    });
    let set = |s: tonic_health::ServingStatus| rt.block_on(reporter.set_service_status("", s));

    env.manifest(
        "grpc",
        &pod_yaml(
            env,
            "grpc",
            &r#"  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: IMAGE
    imagePullPolicy: IfNotPresent
    command: [sleep, '3600']
    readinessProbe:
      grpc:
        port: PORT
      periodSeconds: 1
      failureThreshold: 1
"#
            .replace("PORT", &port.to_string()),
        ),
    );
    env.start_with(&["--node-ip".into(), "127.0.0.1".into()]);
    // The health reporter starts with "" SERVING.
    wait_ready(env, "grpc", "app", true);
    set(tonic_health::ServingStatus::NotServing);
    wait_ready(env, "grpc", "app", false);
    set(tonic_health::ServingStatus::Serving);
    wait_ready(env, "grpc", "app", true);
}

/// kubelet's `killContainer`: the preStop hook runs before the stop signal and takes its time
/// out of the grace period; a hook that outlasts it is cut, SIGTERM follows, then SIGKILL after
/// at least 2 s. The pod is gone within grace + 2 s (+ margin).
fn pre_stop_runs_before_sigterm_and_is_cut_at_the_grace_period(env: &mut Env) {
    let host = env.path("host");
    std::fs::create_dir_all(&host).unwrap();
    env.manifest(
        "stop",
        &pod_yaml(
            env,
            "stop",
            &r#"  terminationGracePeriodSeconds: 5
  containers:
  - name: app
    image: IMAGE
    imagePullPolicy: IfNotPresent
    command: [sh, -c, 'trap ''echo term $(date +%s) >> /host/order; exit 0'' TERM; touch /host/running; while true; do sleep 1; done']
    volumeMounts: [{name: host, mountPath: /host}]
    lifecycle:
      preStop:
        exec:
          command: [sh, -c, 'echo prestop $(date +%s) >> /host/order; sleep 600']
  volumes:
  - {name: host, hostPath: {path: HOST}}
"#
            .replace("HOST", &host.display().to_string()),
        ),
    );
    env.start();
    env.wait("running", 120, || {
        host.join("running").exists()
            && status(env, "stop", "app").is_some_and(|c| c["state"]["running"].is_object())
    });
    let t0 = Instant::now();
    std::fs::remove_file(env.path("manifests/stop.yaml")).unwrap();
    env.wait("pod gone", 60, || env.pod("stop").is_none());
    let took = t0.elapsed();
    let order = std::fs::read_to_string(host.join("order")).unwrap();
    let lines: Vec<(&str, i64)> = order
        .lines()
        .map(|l| {
            let (what, at) = l.split_once(' ').unwrap();
            (what, at.parse().unwrap())
        })
        .collect();
    assert_eq!(
        lines.iter().map(|l| l.0).collect::<Vec<_>>(),
        ["prestop", "term"],
        "{order}"
    );
    // The hook had (about) the whole 5 s grace period before SIGTERM, not more (whole seconds,
    // the trap runs after the current `sleep 1`, and the exec itself takes a moment).
    let gap = lines[1].1 - lines[0].1;
    assert!(
        (2..=10).contains(&gap),
        "SIGTERM {gap} s after preStop: {order}"
    );
    // 1 s file check + 5 s grace + a short stop, with a generous margin.
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(40),
        "{took:?}"
    );
}

/// What a kill-sequence scenario's container wrote into the host directory: `(what, epoch
/// seconds)` lines, `prestop` from its preStop hook and `term` from its SIGTERM trap.
fn kill_order(host: &std::path::Path) -> Vec<(String, i64)> {
    std::fs::read_to_string(host.join("order"))
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let (what, at) = l.split_once(' ').unwrap();
            (what.to_string(), at.parse().unwrap())
        })
        .collect()
}

/// One kill path (kubelet's `killContainer`, issue: every kill runs the preStop hook): a
/// container whose preStop hook never ends (`sleep 600`) and whose SIGTERM trap records the
/// time. `spec` is what goes under `spec:` besides the container (`GRACE_LINES` inside the
/// container). `trigger` makes the agent kill it; then the hook must run before SIGTERM, and
/// SIGTERM must come once the grace period `grace` is used up: not before (kubelet gives the
/// hook the whole grace), and not much later.
fn kill_runs_pre_stop_then_sigterm(
    env: &mut Env,
    name: &str,
    pod_spec: &str,
    container_extra: &str,
    grace: i64,
    trigger: impl FnOnce(&mut Env, &std::path::Path),
) {
    let host = env.path(&format!("host-{name}"));
    std::fs::create_dir_all(&host).unwrap();
    env.manifest(
        name,
        &pod_yaml(
            env,
            name,
            &format!(
                r#"{pod_spec}  containers:
  - name: app
    image: IMAGE
    imagePullPolicy: IfNotPresent
    command: [sh, -c, 'trap ''echo term $(date +%s) >> /host/order; exit 0'' TERM; touch /host/running; while true; do sleep 1; done']
    volumeMounts: [{{name: host, mountPath: /host}}]
{container_extra}    lifecycle:
      preStop:
        exec:
          command: [sh, -c, 'echo prestop $(date +%s) >> /host/order; sleep 600']
  volumes:
  - {{name: host, hostPath: {{path: HOST}}}}
"#
            )
            .replace("HOST", &host.display().to_string()),
        ),
    );
    env.start();
    env.wait("running", 120, || {
        host.join("running").exists()
            && status(env, name, "app").is_some_and(|c| c["state"]["running"].is_object())
    });
    trigger(env, &host);
    env.wait("preStop, then SIGTERM", 120, || {
        kill_order(&host).iter().any(|l| l.0 == "term")
    });
    let lines = kill_order(&host);
    let order: Vec<&str> = lines.iter().map(|l| l.0.as_str()).take(2).collect();
    assert_eq!(order, ["prestop", "term"], "{lines:?}");
    // Whole seconds; the trap runs after the current `sleep 1`; the exec takes a moment.
    let gap = lines[1].1 - lines[0].1;
    assert!(
        (grace - 1..=grace + 5).contains(&gap),
        "SIGTERM {gap} s after the preStop hook started, grace period {grace} s: {lines:?}"
    );
}

/// A liveness kill runs the preStop hook and uses the probe's
/// `terminationGracePeriodSeconds` (4 s), not the pod's (60 s).
fn liveness_kill_runs_pre_stop_then_sigterm_within_the_probe_grace(env: &mut Env) {
    kill_runs_pre_stop_then_sigterm(
        env,
        "live-kill",
        "  terminationGracePeriodSeconds: 60\n",
        "    livenessProbe:\n      exec: {command: [sh, -c, 'test ! -e /host/unhealthy']}\n      periodSeconds: 1\n      failureThreshold: 1\n      terminationGracePeriodSeconds: 4\n",
        4,
        |_, host| std::fs::write(host.join("unhealthy"), "").unwrap(),
    );
    let killing = events(env, "live-kill", "Killing");
    assert!(
        killing
            .iter()
            .any(|e| e["message"] == "Container app failed liveness probe, will be restarted"),
        "{killing:?}"
    );
}

/// A startup kill likewise, with the startup probe's grace period.
fn startup_kill_runs_pre_stop_then_sigterm_within_the_probe_grace(env: &mut Env) {
    kill_runs_pre_stop_then_sigterm(
        env,
        "boot-kill",
        "  terminationGracePeriodSeconds: 60\n",
        // Never succeeds: killed after 8 failed attempts, a second apart (the test may see it
        // running only after its restart; the first kill's lines are checked either way).
        "    startupProbe:\n      exec: {command: [sh, -c, 'test -e /host/never']}\n      periodSeconds: 1\n      failureThreshold: 8\n      terminationGracePeriodSeconds: 4\n",
        4,
        |_, _| {},
    );
    let killing = events(env, "boot-kill", "Killing");
    assert!(
        killing
            .iter()
            .any(|e| e["message"] == "Container app failed startup probe, will be restarted"),
        "{killing:?}"
    );
}

/// `activeDeadlineSeconds`: the pod fails and its container is killed through its hook, with
/// the pod's grace period.
fn deadline_kill_runs_pre_stop_then_sigterm_within_the_pod_grace(env: &mut Env) {
    kill_runs_pre_stop_then_sigterm(
        env,
        "deadline-kill",
        "  terminationGracePeriodSeconds: 4\n  activeDeadlineSeconds: 15\n  restartPolicy: Never\n",
        "",
        4,
        |_, _| {},
    );
    env.wait("Failed: DeadlineExceeded", 60, || {
        env.pod("deadline-kill")
            .is_some_and(|p| p["status"]["reason"] == "DeadlineExceeded")
    });
}

/// An edited manifest: the old pod's container is killed through its hook, with the pod's grace
/// period, before the new version starts.
fn edited_manifest_kill_runs_pre_stop_then_sigterm_within_the_pod_grace(env: &mut Env) {
    kill_runs_pre_stop_then_sigterm(
        env,
        "edit-kill",
        "  terminationGracePeriodSeconds: 4\n",
        "",
        4,
        |env, _| {
            let path = env.path("manifests/edit-kill.yaml");
            let yaml = std::fs::read_to_string(&path).unwrap();
            env.manifest(
                "edit-kill",
                &yaml.replace("imagePullPolicy: IfNotPresent", "imagePullPolicy: Never"),
            );
        },
    );
}

/// kubelet's `startContainer`: a failing postStart hook kills the container
/// (`FailedPostStartHook`), which is then restarted per the restart policy.
fn failing_post_start_hook_kills_and_restarts_the_container(env: &mut Env) {
    env.manifest(
        "hook",
        &pod_yaml(
            env,
            "hook",
            r#"  terminationGracePeriodSeconds: 2
  containers:
  - name: app
    image: IMAGE
    imagePullPolicy: IfNotPresent
    command: [sh, -c, 'trap ''exit 0'' TERM; while true; do sleep 1; done']
    lifecycle:
      postStart:
        exec:
          command: [sh, -c, 'echo hook-says-no; exit 1']
"#,
        ),
    );
    env.start();
    env.wait("restarted after the hook failed", 120, || {
        status(env, "hook", "app").is_some_and(|c| {
            c["restartCount"].as_i64() >= Some(1) && c["lastState"]["terminated"].is_object()
        })
    });
    let failed = events(env, "hook", "FailedPostStartHook");
    assert!(
        failed.iter().any(|e| e["type"] == "Warning"
            && e["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("PostStartHook failed"))),
        "{failed:?}"
    );
    // Never reported ready: the container does not count as started before its hook returned.
    let p = env.pod("hook").unwrap();
    assert_eq!(condition(&p, "Ready"), Some("False"), "{p}");
}

/// Termination messages (kubelet `getTerminationMessage`): the file at `terminationMessagePath`
/// (any path), and with `FallbackToLogsOnError` the end of the log of a failed container whose
/// file is empty; the file wins when both exist.
fn termination_message_from_file_or_log_tail(env: &mut Env) {
    env.manifest(
        "msg",
        &pod_yaml(
            env,
            "msg",
            r#"  restartPolicy: Never
  containers:
  - name: file
    image: IMAGE
    imagePullPolicy: IfNotPresent
    terminationMessagePath: /tmp/my-message
    command: [sh, -c, 'echo not-this; echo -n from-the-file > /tmp/my-message']
  - name: logs
    image: IMAGE
    imagePullPolicy: IfNotPresent
    terminationMessagePolicy: FallbackToLogsOnError
    command: [sh, -c, 'echo first-line; echo last-words; exit 1']
  - name: both
    image: IMAGE
    imagePullPolicy: IfNotPresent
    terminationMessagePolicy: FallbackToLogsOnError
    command: [sh, -c, 'echo from-the-log; echo -n the-file-wins > /dev/termination-log; exit 2']
  - name: success
    image: IMAGE
    imagePullPolicy: IfNotPresent
    terminationMessagePolicy: FallbackToLogsOnError
    command: [sh, -c, 'echo no-message-on-success']
"#,
        ),
    );
    env.start();
    env.wait("all terminated", 120, || {
        env.pod("msg").is_some_and(|p| {
            p["status"]["phase"] == "Failed"
                && ["file", "logs", "both", "success"].iter().all(|c| {
                    container_state(&p, c).is_some_and(|s| s["state"]["terminated"].is_object())
                })
        })
    });
    let p = env.pod("msg").unwrap();
    let t = |c: &str| container_state(&p, c).unwrap()["state"]["terminated"].clone();
    assert_eq!(t("file")["exitCode"], 0);
    assert_eq!(t("file")["message"], "from-the-file", "{p}");
    assert_eq!(t("logs")["exitCode"], 1);
    assert_eq!(t("logs")["message"], "first-line\nlast-words\n", "{p}");
    assert_eq!(t("both")["exitCode"], 2);
    assert_eq!(t("both")["message"], "the-file-wins", "{p}");
    assert_eq!(t("success")["exitCode"], 0);
    assert!(t("success")["message"].is_null(), "{p}");
}

/// kubelet's `prober.probe` records a `Warning Unhealthy` event "<Kind> probe failed: <output>"
/// for every failed attempt of every probe kind, readiness included (repeats fold into a
/// count), not only when a liveness or startup probe reaches its failure threshold.
fn every_failed_probe_attempt_is_an_unhealthy_event(env: &mut Env) {
    env.manifest(
        "unready",
        &pod_yaml(
            env,
            "unready",
            r#"  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: IMAGE
    imagePullPolicy: IfNotPresent
    command: [sleep, '3600']
    readinessProbe:
      exec:
        command: [cat, /tmp/never]
      periodSeconds: 1
"#,
        ),
    );
    env.start();
    wait_ready(env, "unready", "app", false);
    env.wait(
        "Unhealthy events for the failing readiness probe",
        60,
        || {
            events(env, "unready", "Unhealthy").iter().any(|e| {
                e["type"] == "Warning"
                    && e["count"].as_i64() >= Some(2)
                    && e["message"].as_str().is_some_and(|m| {
                        m.starts_with("Readiness probe failed: ") && m.contains("/tmp/never")
                    })
            })
        },
    );
}

/// kubelet's `startContainer` records `FailedPostStartHook` with exactly "PostStartHook failed":
/// "do not record the message in the event so that secrets won't leak from the server".
fn failed_post_start_hook_event_leaves_the_hook_output_out(env: &mut Env) {
    env.manifest(
        "hook",
        &pod_yaml(
            env,
            "hook",
            r#"  terminationGracePeriodSeconds: 2
  containers:
  - name: app
    image: IMAGE
    imagePullPolicy: IfNotPresent
    command: [sleep, '3600']
    lifecycle:
      postStart:
        exec:
          command: [sh, -c, 'echo secret-token; exit 1']
"#,
        ),
    );
    env.start();
    env.wait("FailedPostStartHook", 120, || {
        !events(env, "hook", "FailedPostStartHook").is_empty()
    });
    let failed = events(env, "hook", "FailedPostStartHook");
    assert!(
        failed
            .iter()
            .all(|e| e["message"] == "PostStartHook failed"),
        "{failed:?}"
    );
}
