//! Process-level tests of the binary: `validate`, and `run` + `get` over the unix socket.
// Real processes in real time: std::time::Instant is right here.
#![allow(clippy::disallowed_types)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant as StdInstant};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_staticlet"))
}

const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: c\n    image: busybox:1\n    ports:\n    - containerPort: 80\n";

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn validate_exit_codes_and_messages() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("ok.yaml"), POD).unwrap();
    let out = bin()
        .args(["validate", "--hostname-override", "n1"])
        .arg(d.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    std::fs::write(
        d.path().join("bad.yaml"),
        POD.replace("containerPort: 80", "containerPort: 70000"),
    )
    .unwrap();
    let out = bin()
        .args(["validate", "--hostname-override", "n1"])
        .arg(d.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("bad.yaml: spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive"),
        "{stdout}"
    );
}

#[test]
fn kubeadm_manifests_validate_unmodified() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../manifest/testdata/kubeadm");
    let out = bin()
        .args(["validate", "--hostname-override", "cp-1", dir])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert_eq!(stdout.matches(": ok (kube-system/").count(), 4, "{stdout}");
}

#[test]
fn bad_flags_fail_at_start() {
    let out = bin()
        .args(["run", "--file-check-frequency", "20"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing unit"));
    let out = bin().args(["run", "--no-such-flag"]).output().unwrap();
    assert!(!out.status.success());
    // The unauthenticated local API on TCP: loopback only.
    let d = tempfile::tempdir().unwrap();
    let out = bin()
        .args(["run", "--container-runtime-endpoint", "simulate://"])
        .args([
            "--listen",
            "tcp://0.0.0.0:0",
            "--healthz-port",
            "0",
            "--root-dir",
        ])
        .arg(d.path().join("root"))
        .arg("--log-dir")
        .arg(d.path().join("logs"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("loopback"), "{err}");
}

#[test]
fn run_and_get_pods_over_the_socket() {
    let d = tempfile::tempdir().unwrap();
    let manifests = d.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    std::fs::write(manifests.join("web.yaml"), POD).unwrap();
    let root = d.path().join("root");
    let agent = bin()
        .args([
            "run",
            "--hostname-override",
            "n1",
            "--container-runtime-endpoint",
            "simulate://",
        ])
        .arg("--pod-manifest-path")
        .arg(&manifests)
        .arg("--root-dir")
        .arg(&root)
        .arg("--log-dir")
        .arg(d.path().join("logs"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Killed even when an assertion fails, so no agent outlives the test.
    let _agent = KillOnDrop(agent);
    let deadline = StdInstant::now() + Duration::from_secs(60);
    let list = loop {
        let out = bin()
            .args(["get", "pods", "-o", "json"])
            .arg("--root-dir")
            .arg(&root)
            .output()
            .unwrap();
        if out.status.success() {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            if v["items"][0]["status"]["phase"] == "Running" {
                break v;
            }
        }
        assert!(StdInstant::now() < deadline, "pod not Running within 60 s");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(list["kind"], "PodList");
    assert_eq!(list["apiVersion"], "v1");
    let pod = &list["items"][0];
    assert_eq!(pod["metadata"]["name"], "web-n1");
    assert_eq!(
        pod["metadata"]["annotations"]["kubernetes.io/config.source"],
        "file"
    );
    assert_eq!(pod["spec"]["nodeName"], "n1");
    // Regression (found booting kubeadm's control plane): with a default route, the host IP is
    // its source address, never loopback, even when the hostname does not resolve.
    let has_default_route = std::fs::read_to_string("/proc/net/route")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .any(|l| l.split_whitespace().nth(1) == Some("00000000"));
    if has_default_route {
        let host_ip = pod["status"]["hostIP"].as_str().unwrap_or_default();
        assert!(
            !host_ip.is_empty() && host_ip != "127.0.0.1",
            "hostIP {host_ip:?}"
        );
    }
    let table = bin()
        .args(["get", "pods"])
        .arg("--root-dir")
        .arg(&root)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.starts_with(
            "NAME     READY   STATUS    RESTARTS   AGE\nweb-n1   1/1     Running   0 "
        ),
        "{table}"
    );
    let one = bin()
        .args(["get", "pod", "web-n1", "-o", "json"])
        .arg("--root-dir")
        .arg(&root)
        .output()
        .unwrap();
    assert!(one.status.success());
    let missing = bin()
        .args(["get", "pod", "nope"])
        .arg("--root-dir")
        .arg(&root)
        .output()
        .unwrap();
    assert!(!missing.status.success());
    let mf = bin()
        .args(["get", "manifests"])
        .arg("--root-dir")
        .arg(&root)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&mf.stdout).contains("default/web-n1"));
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(root.join("staticlet.sock"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let out = bin()
        .args(["describe", "pod", "web-n1", "--root-dir"])
        .arg(&root)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "Name:         web-n1",
        "Status:       Running",
        "Static pod read from file",
        "Started container c",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    let event_reasons: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("Events:"))
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert_eq!(
        event_reasons,
        vec!["Reason", "Seen", "Pulling", "Pulled", "Created", "Started"],
        "{text}"
    );
    let wait = |args: &[&str]| {
        bin()
            .arg("wait")
            .args(args)
            .arg("--root-dir")
            .arg(&root)
            .output()
            .unwrap()
    };
    let out = wait(&["pod", "web-n1", "--for=condition=Ready", "--timeout", "60s"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "pod/web-n1 condition met\n"
    );
    let out = wait(&["pod", "web-n1", "--for=delete", "--timeout", "1s"]);
    assert_eq!(out.status.code(), Some(1), "the pod is still there");
    // The watch `staticlet wait` follows, read raw: the pods there are, the end of the initial
    // events, then the removal.
    let watch = |query: &str| {
        use std::io::Write;
        let mut s = std::os::unix::net::UnixStream::connect(root.join("staticlet.sock")).unwrap();
        write!(s, "GET /pods?{query} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
        std::io::BufReader::new(s)
    };
    let mut bad = String::new();
    std::io::BufRead::read_line(&mut watch("watch=maybe"), &mut bad).unwrap();
    assert!(bad.starts_with("HTTP/1.1 400"), "{bad}");
    let mut stream = watch("watch=true");
    let mut events = Vec::new();
    let mut read_until = |want: &str| loop {
        let mut line = String::new();
        assert_ne!(
            std::io::BufRead::read_line(&mut stream, &mut line).unwrap(),
            0,
            "the watch ended before {want}: {events:?}"
        );
        // Chunked encoding: the events are the lines that are JSON objects (a chunk's size in
        // hex can read as a JSON number: "150").
        let Ok(ev @ serde_json::Value::Object(_)) =
            serde_json::from_str::<serde_json::Value>(line.trim())
        else {
            continue;
        };
        let e = format!(
            "{} {}",
            ev["type"].as_str().unwrap(),
            ev["object"]["metadata"]["name"].as_str().unwrap_or("")
        );
        events.push(e.clone());
        if e == want {
            return events.clone();
        }
    };
    assert_eq!(read_until("BOOKMARK "), ["ADDED web-n1", "BOOKMARK "]);
    std::fs::remove_file(manifests.join("web.yaml")).unwrap();
    let out = wait(&["pod", "web-n1", "--for=delete", "--timeout", "90s"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen = read_until("DELETED web-n1");
    assert!(
        seen[2..]
            .iter()
            .all(|e| e == "MODIFIED web-n1" || e == "DELETED web-n1"),
        "{seen:?}"
    );
}

/// What kubeadm v1.34 writes for the kubelet (`testdata/kubeadm/README.md`).
const KUBEADM_CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/kubeadm/config.yaml");
const KUBEADM_FLAGS_ENV: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/testdata/kubeadm/kubeadm-flags.env"
);

/// Starts `staticlet run ARGS` on the simulator with its state in `dir` (`--root-dir`,
/// `--log-dir`, node API and healthz off), waits until `get pods` answers with `pods` pods
/// Running, stops it, and returns the list and the agent's stderr.
fn run_until_pods_run(
    dir: &std::path::Path,
    args: &[&str],
    pods: usize,
) -> (serde_json::Value, String) {
    let root = dir.join("root");
    let mut child = bin()
        .arg("run")
        .args(args)
        .args([
            "--container-runtime-endpoint",
            "simulate://",
            "--port",
            "0",
            "--healthz-port",
            "0",
        ])
        .arg("--root-dir")
        .arg(&root)
        .arg("--log-dir")
        .arg(dir.join("logs"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let agent = KillOnDrop(child);
    let deadline = StdInstant::now() + Duration::from_secs(60);
    let list = loop {
        let out = bin()
            .args(["get", "pods", "-o", "json", "--root-dir"])
            .arg(&root)
            .output()
            .unwrap();
        if out.status.success() {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let items = v["items"].as_array().unwrap();
            if items.len() == pods && items.iter().all(|p| p["status"]["phase"] == "Running") {
                break v;
            }
        }
        assert!(
            StdInstant::now() < deadline,
            "agent not serving {pods} Running pods within 60 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    drop(agent);
    let mut text = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut text).unwrap();
    (list, text)
}

#[test]
fn run_takes_kubeadms_config_and_flags_unmodified() {
    let d = tempfile::tempdir().unwrap();
    let manifests = d.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    let manifests = manifests.to_str().unwrap();
    // kubeadm's systemd drop-in: $KUBELET_KUBECONFIG_ARGS (without --kubeconfig: no cluster
    // here) $KUBELET_CONFIG_ARGS $KUBELET_KUBEADM_ARGS, then the test's own flags.
    let config = format!("--config={KUBEADM_CONFIG}");
    let (list, stderr) = run_until_pods_run(
        d.path(),
        &[
            "--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf",
            &config,
            "--hostname-override=cp-1",
            "--pod-infra-container-image=registry.k8s.io/pause:3.10.1",
            "--pod-manifest-path",
            manifests,
        ],
        0,
    );
    assert_eq!(list["kind"], "PodList");
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("ignoring")).collect();
    assert_eq!(warnings.len(), 2, "{stderr}");
    assert!(
        warnings[0].contains("ignoring KubeletConfiguration fields staticlet does not use: clusterDNS, clusterDomain")
            && warnings[0].contains("config.yaml"),
        "{stderr}"
    );
    assert!(
        warnings[1].contains("ignoring kubelet flags staticlet does not use: --bootstrap-kubeconfig, --pod-infra-container-image"),
        "{stderr}"
    );
}

#[test]
fn run_reads_a_kubeadm_flags_env_file() {
    let d = tempfile::tempdir().unwrap();
    let manifests = d.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    std::fs::write(manifests.join("web.yaml"), POD).unwrap();
    let env = format!("--kubeadm-flags-env={KUBEADM_FLAGS_ENV}");
    // As in kubelet, `_` in a flag name is `-`, and a boolean flag takes `=false`.
    let (list, stderr) = run_until_pods_run(
        d.path(),
        &[
            &env,
            "--config",
            KUBEADM_CONFIG,
            "--pod-manifest-path",
            manifests.to_str().unwrap(),
            "--fail_swap_on=false",
            "--cgroup-driver",
            "systemd",
        ],
        1,
    );
    // The node name comes from the file's --hostname-override=cp-1.
    assert_eq!(list["items"][0]["metadata"]["name"], "web-cp-1");
    assert!(
        stderr.contains("ignoring kubelet flags staticlet does not use: --fail-swap-on, --pod-infra-container-image"),
        "{stderr}"
    );
}

/// `cgroupDriver` with a CRI runtime (a simulator agent serving CRI), checked before any pod is
/// touched: a value kubelet does not know is refused; `systemd` is replaced by the runtime's own
/// answer to CRI `RuntimeConfig` (cgroupfs from staticlet's CRI endpoint), said once, and the
/// pod already running on that runtime is left alone.
#[test]
fn cgroup_driver_checked_and_the_cri_runtime_s_own_answer_wins() {
    let d = tempfile::tempdir().unwrap();
    let manifests = d.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    std::fs::write(manifests.join("web.yaml"), POD).unwrap();
    let sock = d.path().join("cri.sock");
    let endpoint = format!("unix://{}", sock.display());
    // The runtime: a simulator agent serving CRI, running one pod.
    let root = d.path().join("runtime");
    let runtime = bin()
        .args(["run", "--hostname-override", "n1"])
        .args(["--container-runtime-endpoint", "simulate://"])
        .args([
            "--cri-listen",
            &endpoint,
            "--port",
            "0",
            "--healthz-port",
            "0",
        ])
        .arg("--pod-manifest-path")
        .arg(&manifests)
        .arg("--root-dir")
        .arg(&root)
        .arg("--log-dir")
        .arg(d.path().join("runtime-logs"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _runtime = KillOnDrop(runtime);
    let web = || {
        let out = bin()
            .args(["get", "pods", "-o", "json", "--root-dir"])
            .arg(&root)
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let c = &v["items"][0]["status"]["containerStatuses"][0];
        (v["items"][0]["status"]["phase"] == "Running" && sock.exists())
            .then(|| (c["containerID"].clone(), c["restartCount"].clone()))
    };
    let deadline = StdInstant::now() + Duration::from_secs(60);
    let before = loop {
        if let Some(w) = web() {
            break w;
        }
        assert!(
            StdInstant::now() < deadline,
            "runtime's pod not Running within 60 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    };

    // The agent on that runtime, run to its end: its stderr.
    let agent = |args: &[&str], until: &str| {
        let log = d.path().join("agent.log");
        let child = bin()
            .args([
                "run",
                "--hostname-override",
                "n2",
                "--port",
                "0",
                "--healthz-port",
                "0",
            ])
            .args(["--container-runtime-endpoint", &endpoint])
            .args(args)
            .arg("--root-dir")
            .arg(d.path().join("agent"))
            .arg("--log-dir")
            .arg(d.path().join("agent-logs"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut child = KillOnDrop(child);
        let deadline = StdInstant::now() + Duration::from_secs(60);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(status) = child.0.try_wait().unwrap() {
                return (Some(status), text);
            }
            if text.contains(until) {
                return (None, text);
            }
            assert!(
                StdInstant::now() < deadline,
                "agent neither exited nor said {until:?}: {text}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let cfg = d.path().join("config.yaml");
    // A driver value kubelet does not know is refused before anything starts.
    std::fs::write(&cfg, "kind: KubeletConfiguration\ncgroupDriver: Systemd\n").unwrap();
    let (status, stderr) = agent(
        &["--config", cfg.to_str().unwrap()],
        "using the CRI runtime",
    );
    assert!(status.is_some_and(|s| !s.success()), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}: cgroupDriver: \"Systemd\" must be cgroupfs or systemd",
            cfg.display()
        )),
        "{stderr}"
    );
    assert!(!d.path().join("agent/staticlet.sock").exists(), "{stderr}");

    // staticlet's CRI server answers RuntimeConfig with cgroupfs, and the runtime's answer
    // replaces the configured driver (kubelet v1.34): kubeadm's `systemd` is overridden, said
    // once. (A runtime that does not answer, with `systemd` configured, is refused:
    // cri_e2e.rs, with containerd 1.6.)
    std::fs::write(&cfg, "kind: KubeletConfiguration\ncgroupDriver: systemd\n").unwrap();
    let (status, stderr) = agent(
        &["--config", cfg.to_str().unwrap()],
        "using the CRI runtime",
    );
    assert!(status.is_none(), "{stderr}");
    let line = format!(
        "the container runtime at {endpoint} reports the cgroupfs cgroup driver, which replaces \
         cgroupDriver: systemd ({})",
        cfg.display()
    );
    assert_eq!(stderr.matches(&line).count(), 1, "{stderr}");
    assert_eq!(web(), Some(before), "the running pod was touched");
}

#[test]
fn kubelet_flags_and_files_fail_clearly() {
    let d = tempfile::tempdir().unwrap();
    let fail = |args: &[&str]| {
        let out = bin().arg("run").args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // Flags kubelet does not have (any more) are refused, as kubelet refuses them.
    for flag in ["--container-runtime=remote", "--no-such-flag"] {
        let e = fail(&[flag]);
        assert!(e.contains("unexpected argument"), "{flag}: {e}");
    }
    let e = fail(&["--max-pods=many"]);
    assert!(e.contains("--max-pods") && e.contains("\"many\""), "{e}");
    let env = d.path().join("kubeadm-flags.env");
    std::fs::write(&env, "KUBELET_KUBEADM_ARGS=\"--node-ip=10.0.0.5\n").unwrap();
    let e = fail(&["--kubeadm-flags-env", env.to_str().unwrap()]);
    assert!(
        e.contains(&format!("{}:1: ", env.display())) && e.contains("unterminated"),
        "{e}"
    );
    let cfg = d.path().join("config.yaml");
    std::fs::write(
        &cfg,
        "kind: KubeletConfiguration\nauthentication:\n  webhook:\n    cacheTTL: soon\n",
    )
    .unwrap();
    let e = fail(&[
        "--config",
        cfg.to_str().unwrap(),
        "--hostname-override",
        "n1",
    ]);
    assert!(
        e.contains(&format!(
            "{}: authentication.webhook.cacheTTL: invalid duration \"soon\"",
            cfg.display()
        )),
        "{e}"
    );
    std::fs::write(&cfg, "kind: KubeletConfiguration\ncgroupDriver: cgroup\n").unwrap();
    let e = fail(&[
        "--config",
        cfg.to_str().unwrap(),
        "--hostname-override",
        "n1",
    ]);
    assert!(
        e.contains(&format!(
            "{}: cgroupDriver: \"cgroup\" must be cgroupfs or systemd",
            cfg.display()
        )),
        "{e}"
    );
    let e = fail(&["--cgroup-driver=Systemd", "--hostname-override", "n1"]);
    assert!(
        e.contains("--cgroup-driver \"Systemd\": must be cgroupfs or systemd"),
        "{e}"
    );
    std::fs::write(&cfg, "kind: KubeletConfiguration\nfooBar: 1\n").unwrap();
    let e = fail(&[
        "--config",
        cfg.to_str().unwrap(),
        "--hostname-override",
        "n1",
    ]);
    assert!(
        e.contains(&format!("{}: unknown field \"fooBar\"", cfg.display())),
        "{e}"
    );
}

/// `staticlet wait manifest` on the simulator: a version is waited for by its content hash until
/// Ready; a version whose container exits is rolled back, which a wait for Ready reports (exit
/// 2, with the reason) and a wait for the rollback sees; a wait that times out names what was
/// last seen (exit 1); content that does not validate is reported as not applied (exit 2).
#[test]
fn wait_manifest_by_content_hash() {
    let d = tempfile::tempdir().unwrap();
    let manifests = d.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    let file = manifests.join("web.yaml");
    let version = |container: &str| {
        format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: {container}\n    image: busybox:1\n")
    };
    let write = |content: &str| {
        let tmp = manifests.join(".web.tmp");
        std::fs::write(&tmp, content).unwrap();
        std::fs::rename(&tmp, &file).unwrap();
        staticlet_manifest::content_hash(content.as_bytes())
    };
    let root = d.path().join("root");
    let h1 = write(&version("app"));
    let agent = bin()
        .args([
            "run",
            "--hostname-override",
            "n1",
            "--container-runtime-endpoint",
            "simulate://?exit-1=bad",
            "--rollout-ready-deadline",
            "15s",
            "--file-check-frequency",
            "1s",
            "--port",
            "0",
            "--healthz-port",
            "0",
        ])
        .arg("--pod-manifest-path")
        .arg(&manifests)
        .arg("--root-dir")
        .arg(&root)
        .arg("--log-dir")
        .arg(d.path().join("logs"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _agent = KillOnDrop(agent);
    let wait = |args: &[&str]| {
        let out = bin()
            .args(["wait", "manifest"])
            .arg(&file)
            .args(args)
            .arg("--root-dir")
            .arg(&root)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    // The agent's socket may not be up yet: retry while the agent cannot be reached (any
    // failure other than the wait's own verdicts).
    let deadline = StdInstant::now() + Duration::from_secs(60);
    let (code, out, err) = loop {
        let r = wait(&["--for=ready", "--timeout", "60s"]);
        let unreachable = r.0 == Some(1) && !r.2.contains("timed out waiting");
        if !unreachable || StdInstant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(
        out,
        format!("manifest {}: version {} ready\n", file.display(), &h1[..12])
    );

    // A version whose container exits 1.
    let h2 = write(&version("bad"));
    let (code, _, err) = wait(&["--for=ready", "--timeout", "120s"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "version {} will not be Ready: rolled back from {} to {}: not Ready within 15s: container bad",
            &h2[..12],
            &h2[..12],
            &h1[..12]
        )) && err.contains("exited with code 1"),
        "{err}"
    );
    let (code, out, err) = wait(&["--for=rolledback", "--hash", &h2, "--timeout", "10s"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("rolled back"), "{out}");
    // The last Ready version is Ready again.
    let (code, _, err) = wait(&["--for=ready", "--hash", &h1, "--timeout", "60s"]);
    assert_eq!(code, Some(0), "{err}");

    // A version nobody wrote: a timeout naming what was last seen.
    let other = "0".repeat(64);
    let (code, _, err) = wait(&["--for=applied", "--hash", &other, "--timeout", "1s"]);
    assert_eq!(code, Some(1));
    assert!(
        err.starts_with(&format!(
            "error: timed out waiting for manifest {} version 000000000000 to be applied; last seen: seen {}, applied {}, ready {}, rollout rolledBack",
            file.display(),
            &h2[..12],
            &h2[..12],
            &h1[..12]
        )),
        "{err}"
    );

    // Content that does not validate is not applied.
    let h3 = write(&version("app").replace("image: busybox:1", "image: \"\""));
    let (code, _, err) = wait(&["--for=applied", "--timeout", "60s"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(&format!("version {} is not applied: ", &h3[..12])) && err.contains("image"),
        "{err}"
    );
    // A good edit is applied and Ready.
    let h4 = write(&version("app2"));
    let (code, out, err) = wait(&["--for=ready", "--hash", &h4, "--timeout", "90s"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains(&h4[..12]), "{out}");
    let (code, _, err) = wait(&["--for=ready", "--hash", "xyz"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("expected a SHA-256"), "{err}");
}

/// `staticlet images prune` keeps tagged images; `--all` removes every unused one.
#[test]
fn images_prune_removes_unused_images() {
    use staticlet_images::testutil::{write_docker_archive, Layer, LayerBuilder, TestImage};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let arch = staticlet_images::Platform::host().architecture;
    for name in ["a", "b"] {
        let archive = dir.path().join(format!("{name}.tar"));
        let layer = Layer::gzip(
            LayerBuilder::new()
                .file(name, name.as_bytes(), 0o644)
                .build(),
        );
        let image = TestImage::new(&arch, serde_json::json!({}), vec![layer]);
        write_docker_archive(&archive, &[(&[&format!("{name}:1")], &image)], false).unwrap();
        let out = bin()
            .args(["images", "import", "--root-dir"])
            .arg(&root)
            .arg(&archive)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let images = |args: &[&str]| {
        let out = bin()
            .arg("images")
            .args(args)
            .arg("--root-dir")
            .arg(&root)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let out = images(&["prune"]);
    assert!(out.contains("0 image references removed"), "{out}");
    let list = images(&["list"]);
    assert!(list.contains("a ") && list.contains("b "), "{list}");
    let out = images(&["prune", "--all"]);
    assert!(out.contains("2 image references removed"), "{out}");
    assert_eq!(
        images(&["list"]).lines().count(),
        1,
        "only the header is left"
    );
}

/// `staticlet validate` refuses `staticlet.io/after` cycles and unknown names across the files.
#[test]
fn validate_refuses_after_cycles_and_unknown_names() {
    let d = tempfile::tempdir().unwrap();
    let pod = |name: &str, after: &str| {
        format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  annotations:\n    staticlet.io/after: \"{after}\"\nspec:\n  containers:\n  - {{name: c, image: busybox}}\n")
    };
    std::fs::write(d.path().join("a.yaml"), pod("a", "b")).unwrap();
    std::fs::write(d.path().join("b.yaml"), pod("b", "a")).unwrap();
    std::fs::write(d.path().join("c.yaml"), pod("c", "nope")).unwrap();
    let out = bin()
        .args(["validate", "--hostname-override", "n1"])
        .arg(d.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for want in [
        "a.yaml: metadata.annotations: staticlet.io/after: dependency cycle a -> b -> a",
        "b.yaml: metadata.annotations: staticlet.io/after: dependency cycle b -> a -> b",
        "c.yaml: metadata.annotations: staticlet.io/after names no static pod in namespace \"default\": nope",
    ] {
        assert!(stdout.contains(want), "{want:?} not in {stdout}");
    }
}

/// `staticlet images import` refuses a decompression bomb over `--max-layer-size`, naming the
/// image and the entry, and keeps nothing of it; within the default limits it imports.
#[test]
fn images_import_applies_the_layer_limits() {
    use staticlet_images::testutil::{write_docker_archive, Layer, LayerBuilder, TestImage};
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("bomb.tar");
    let layer = Layer::gzip(
        LayerBuilder::new()
            .file("zeros", &vec![0u8; 4 << 20], 0o644)
            .build(),
    );
    let arch = staticlet_images::Platform::host().architecture;
    let image = TestImage::new(&arch, serde_json::json!({}), vec![layer]);
    write_docker_archive(&archive, &[(&["bomb:1"], &image)], false).unwrap();
    let root = dir.path().join("root");
    let out = bin()
        .args(["images", "import", "--max-layer-size", "1Mi", "--root-dir"])
        .arg(&root)
        .arg(&archive)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    for s in ["bomb:1", "layer size limit of 1048576", "\"zeros\""] {
        assert!(stderr.contains(s), "{s:?} not in {stderr}");
    }
    assert_eq!(
        std::fs::read_dir(root.join("images/blobs/sha256"))
            .unwrap()
            .count(),
        0,
        "nothing of the refused image is kept"
    );
    let out = bin()
        .args(["images", "import", "--root-dir"])
        .arg(&root)
        .arg(&archive)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
