//! The node API end to end: a real kube-apiserver (`staticlet-k8s-testenv`, kubeadm's PKI, its
//! `--kubelet-client-certificate`) and the real kubectl drive staticlet's kubelet API on both
//! runtimes: `kubectl logs` (`-f` ending at the container's exit, `--previous`, `--tail`,
//! `--timestamps`, `--limit-bytes`), `kubectl exec` (exit codes, stdin, a terminal through
//! `script`), `kubectl port-forward` carrying an HTTP request, the stats and metrics kubectl top's
//! metrics-server reads (`get --raw .../proxy/...`), `kubectl attach` (stdin, live output, a
//! terminal through `script`), and kubelet's refusals (401 without or
//! with another CA's certificate, 403 for a user without `nodes/proxy`, 404 for a missing
//! container to exec into or attach to, 400/422 for bad log options).
//!
//! Needs root, the Kubernetes binaries of `scripts/build-k8s.sh` and, for the containerd variant,
//! containerd (`scripts/test.sh` provides all).
// Real processes in real time: std::time::Instant is right here.
#![allow(clippy::disallowed_types)]

#[macro_use]
mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, http_get, Env};
use staticlet_k8s_testenv::ControlPlane;

on_both_backends!(
    kubectl_logs_exec_port_forward_and_stats_through_the_api_server,
    kubectl_attach_through_the_api_server,
);

fn text(out: &std::process::Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `curl` to the node API directly: (HTTP status, body).
fn curl(url: &str, cert: Option<(&Path, &Path)>) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sk", "--max-time", "20", "-w", "\n%{http_code}"]);
    if let Some((c, k)) = cert {
        cmd.arg("--cert").arg(c).arg("--key").arg(k);
    }
    let out = cmd.arg(url).output().unwrap();
    let s = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = s.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn sh(cmd: &str) {
    let out = Command::new("sh").args(["-c", cmd]).output().unwrap();
    assert!(out.status.success(), "{cmd}: {}", text(&out));
}

/// The node's client certificate and key from kubeadm's `kubelet.conf`.
fn node_cert(cp: &ControlPlane, dir: &Path) -> (PathBuf, PathBuf) {
    let (c, k) = (dir.join("node.crt"), dir.join("node.key"));
    let conf = cp.node_kubeconfig();
    for (field, out) in [("client-certificate-data", &c), ("client-key-data", &k)] {
        sh(&format!(
            "grep '{field}:' {} | awk '{{print $2}}' | base64 -d > {}",
            conf.display(),
            out.display()
        ));
    }
    (c, k)
}

fn kubectl_ok(cp: &ControlPlane, args: &[&str]) -> String {
    let out = cp.kubectl(args);
    assert!(out.status.success(), "kubectl {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn kubectl_logs_exec_port_forward_and_stats_through_the_api_server(env: &mut Env) {
    if let Some(why) = staticlet_k8s_testenv::skip_reason() {
        eprintln!("skipped: {why}");
        return;
    }
    let cp = ControlPlane::start(env.node()).unwrap();
    let node = env.node().to_string();
    let (api_port, http_port) = (free_port(), free_port());
    let web = env.full_name("web");
    let counter = env.full_name("counter");
    env.manifest(
        "web",
        &env.pod_manifest(
            "web",
            &format!(
                "  hostNetwork: true\n  containers:\n  - name: app\n    image: IMAGE\n    imagePullPolicy: IfNotPresent\n    command: [sh, -c, 'mkdir -p /tmp/w && echo hello-from-web > /tmp/w/index.html && echo line-one && echo err-one >&2 && exec httpd -f -p {http_port} -h /tmp/w']\n"
            ),
        ),
    );
    env.manifest(
        "counter",
        &env.pod_manifest(
            "counter",
            "  hostNetwork: true\n  containers:\n  - name: app\n    image: IMAGE\n    imagePullPolicy: IfNotPresent\n    command: [sh, -c, 'i=0; while [ $i -lt 3 ]; do i=$((i+1)); echo tick-$i; sleep 1; done; exit 3']\n",
        ),
    );
    // The node's own address (not loopback: the API server's node proxy refuses those).
    env.start_with(&[
        "--kubeconfig".into(),
        cp.node_kubeconfig().display().to_string(),
        "--port".into(),
        api_port.to_string(),
        "--client-ca-file".into(),
        cp.pki("ca.crt").display().to_string(),
    ]);
    let node_api = format!("https://127.0.0.1:{api_port}");

    // The Node tells the API server where the node API is.
    env.wait("Node with the kubelet endpoint", 120, || {
        cp.kubectl_json(&["get", "node", &node])
            .is_ok_and(|n| n["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"] == api_port)
    });
    env.wait("web mirror Running", 180, || {
        cp.kubectl_json(&["get", "pod", "-n", "default", &web])
            .is_ok_and(|p| p["status"]["phase"] == "Running")
            && http_get(http_port).is_some_and(|b| b.contains("hello-from-web"))
    });

    // --- kubectl logs ---
    let logs = kubectl_ok(&cp, &["logs", "-n", "default", &web]);
    assert!(
        logs.contains("line-one\n") && logs.contains("err-one\n"),
        "{logs}"
    );
    let ts = kubectl_ok(&cp, &["logs", "-n", "default", &web, "--timestamps"]);
    assert!(
        ts.lines().all(|l| l.starts_with("20") && l.contains("T")),
        "{ts}"
    );
    let limited = kubectl_ok(&cp, &["logs", "-n", "default", &web, "--limit-bytes=4"]);
    assert_eq!(limited.len(), 4, "{limited:?}");
    env.wait("counter restarted once", 120, || {
        cp.kubectl_json(&["get", "pod", "-n", "default", &counter])
            .is_ok_and(|p| {
                p["status"]["containerStatuses"][0]["restartCount"]
                    .as_i64()
                    .is_some_and(|n| n >= 1)
            })
    });
    let prev = kubectl_ok(&cp, &["logs", "-n", "default", &counter, "--previous"]);
    assert_eq!(prev, "tick-1\ntick-2\ntick-3\n");
    let tail = kubectl_ok(
        &cp,
        &["logs", "-n", "default", &counter, "--previous", "--tail=1"],
    );
    assert_eq!(tail, "tick-3\n");
    // -f ends when the container exits (it runs 3 s); the request timeout is only a guard.
    let t0 = Instant::now();
    let follow = kubectl_ok(
        &cp,
        &[
            "logs",
            "-n",
            "default",
            &counter,
            "-f",
            "--request-timeout=90s",
        ],
    );
    assert!(follow.contains("tick-3"), "{follow}");
    assert!(t0.elapsed() < Duration::from_secs(80), "{:?}", t0.elapsed());

    // --- kubectl exec ---
    let out = cp.kubectl(&[
        "exec",
        "-n",
        "default",
        &web,
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    for code in [1, 42] {
        let out = cp.kubectl(&[
            "exec",
            "-n",
            "default",
            &web,
            "--",
            "sh",
            "-c",
            &format!("exit {code}"),
        ]);
        assert_eq!(out.status.code(), Some(code), "{}", text(&out));
    }
    let out = cp.kubectl(&["exec", "-n", "default", &web, "--", "false"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    // stdin.
    let mut child = cp
        .kubectl_command(&["exec", "-i", "-n", "default", &web, "--", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"through-stdin\n").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "through-stdin\n",
        "{}",
        text(&out)
    );
    // A terminal (kubectl -it needs one: `script` gives it a pty).
    let k = cp.kubectl_command(&[
        "exec",
        "-it",
        "-n",
        "default",
        &web,
        "--",
        "sh",
        "-c",
        "tty; exit 7",
    ]);
    let line = std::iter::once(k.get_program())
        .chain(k.get_args())
        .map(|a| format!("'{}'", a.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ");
    let out = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let o = String::from_utf8_lossy(&out.stdout);
    assert!(o.contains("/dev/pts/"), "{}", text(&out));
    assert_eq!(out.status.code(), Some(7), "{}", text(&out));

    // --- kubectl port-forward ---
    let local = free_port();
    let mut pf = cp
        .kubectl_command(&[
            "port-forward",
            "-n",
            "default",
            &format!("pod/{web}"),
            &format!("{local}:{http_port}"),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(pf.stdout.take().unwrap()).lines();
    let first = lines.next().and_then(|l| l.ok()).unwrap_or_default();
    assert!(first.contains("Forwarding from"), "{first}");
    let body = http_get(local);
    let _ = pf.kill();
    let _ = pf.wait();
    assert!(
        body.as_deref()
            .is_some_and(|b| b.contains("hello-from-web")),
        "{body:?}"
    );

    // --- stats, metrics, pods, healthz through the API server's node proxy ---
    let proxy = format!("/api/v1/nodes/{node}/proxy");
    let summary: serde_json::Value = serde_json::from_str(&kubectl_ok(
        &cp,
        &["get", "--raw", &format!("{proxy}/stats/summary")],
    ))
    .unwrap();
    assert_eq!(summary["node"]["nodeName"], node.as_str());
    let web_stats = summary["pods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["podRef"]["name"] == web.as_str())
        .unwrap_or_else(|| panic!("{summary}"));
    assert!(
        web_stats["containers"][0]["memory"]["workingSetBytes"].as_u64() > Some(0),
        "{web_stats}"
    );
    let resource = kubectl_ok(&cp, &["get", "--raw", &format!("{proxy}/metrics/resource")]);
    assert!(
        resource.contains(&format!(
            "container_cpu_usage_seconds_total{{container=\"app\",namespace=\"default\",pod=\"{web}\"}}"
        )),
        "{resource}"
    );
    assert!(
        resource.contains("node_memory_working_set_bytes "),
        "{resource}"
    );
    let pods: serde_json::Value = serde_json::from_str(&kubectl_ok(
        &cp,
        &["get", "--raw", &format!("{proxy}/pods")],
    ))
    .unwrap();
    assert_eq!(pods["kind"], "PodList");
    assert_eq!(
        kubectl_ok(&cp, &["get", "--raw", &format!("{proxy}/healthz")]),
        "ok"
    );

    // --- refusals ---
    // No client certificate (anonymous is off): 401.
    assert_eq!(
        curl(&format!("{node_api}/pods"), None),
        (401, "Unauthorized".into())
    );
    // A certificate of another CA: 401.
    let d = tempfile::tempdir().unwrap();
    let (oc, ok) = (d.path().join("other.crt"), d.path().join("other.key"));
    sh(&format!(
        "openssl req -x509 -newkey rsa:2048 -nodes -keyout {} -out {} -subj /CN=kube-apiserver-kubelet-client/O=kubeadm:cluster-admins -days 1 2>/dev/null",
        ok.display(),
        oc.display()
    ));
    assert_eq!(curl(&format!("{node_api}/pods"), Some((&oc, &ok))).0, 401);
    // The node itself has no nodes/proxy: 403 with kubelet's message.
    let (nc, nk) = node_cert(&cp, d.path());
    let (code, body) = curl(
        &format!("{node_api}/exec/default/{web}/app?command=true&output=1"),
        Some((&nc, &nk)),
    );
    assert_eq!(code, 403, "{body}");
    assert_eq!(
        body,
        format!("Forbidden (user=system:node:{node}, verb=get, resource=nodes, subresource(s)=[proxy])\n")
    );
    // The API server's identity, but a container that does not exist: 404.
    let (ac, ak) = (
        cp.pki("apiserver-kubelet-client.crt"),
        cp.pki("apiserver-kubelet-client.key"),
    );
    let admin = Some((ac.as_path(), ak.as_path()));
    let (code, body) = curl(
        &format!("{node_api}/exec/default/{web}/nope?command=true&output=1"),
        admin,
    );
    assert_eq!(
        (code, body.as_str()),
        (404, "container not found (\"nope\")")
    );
    let (code, _) = curl(
        &format!("{node_api}/exec/default/no-such-pod/app?command=true&output=1"),
        admin,
    );
    assert_eq!(code, 404);
    // Bad log options: kubelet's status codes.
    let logs_url = format!("{node_api}/containerLogs/default/{web}/app");
    assert_eq!(curl(&format!("{logs_url}?tailLines=-5"), admin).0, 422);
    assert_eq!(
        curl(&format!("{logs_url}?sinceTime=yesterday"), admin).0,
        400
    );
    assert_eq!(curl(&format!("{logs_url}?tailLines=1"), admin).0, 200);
    // A user the API server does not let read logs: its 403, before the node API is asked.
    let out = cp.kubectl(&["logs", "-n", "default", &web, "--as=nobody"]);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("Forbidden"),
        "{}",
        text(&out)
    );
}

/// A child's output, line by line, from a thread of its own, so the test waits on it with a
/// deadline.
struct Lines {
    rx: std::sync::mpsc::Receiver<String>,
    seen: String,
}

impl Lines {
    fn new(from: impl std::io::Read + Send + 'static) -> Self {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(from).split(b'\n').map_while(Result::ok) {
                if tx
                    .send(String::from_utf8_lossy(&line).into_owned())
                    .is_err()
                {
                    break;
                }
            }
        });
        Lines {
            rx,
            seen: String::new(),
        }
    }

    /// Waits (up to 60 s) until the output so far contains `want`.
    fn wait_for(&mut self, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.seen.contains(want) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push_str(&l);
                    self.seen.push('\n');
                }
                Err(e) => panic!("no {want:?} in the output ({e}); got: {:?}", self.seen),
            }
        }
    }
}

/// Waits (up to 60 s) for a child to exit; kills it and fails if it does not.
fn wait_exit(child: &mut std::process::Child, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not end");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn kubectl_attach_through_the_api_server(env: &mut Env) {
    use std::io::Write;
    if let Some(why) = staticlet_k8s_testenv::skip_reason() {
        eprintln!("skipped: {why}");
        return;
    }
    let cp = ControlPlane::start(env.node()).unwrap();
    let api_port = free_port();
    let (echo, ticker, term) = (
        env.full_name("echo"),
        env.full_name("ticker"),
        env.full_name("term"),
    );
    env.manifest(
        "echo",
        &env.pod_manifest(
            "echo",
            "  hostNetwork: true\n  containers:\n  - name: app\n    image: IMAGE\n    imagePullPolicy: IfNotPresent\n    stdin: true\n    command: [sh, -c, 'while read l; do echo got:$l; done; echo stdin-closed; sleep 1000']\n",
        ),
    );
    env.manifest(
        "ticker",
        &env.pod_manifest(
            "ticker",
            "  hostNetwork: true\n  containers:\n  - name: app\n    image: IMAGE\n    imagePullPolicy: IfNotPresent\n    command: [sh, -c, 'i=0; while true; do i=$((i+1)); echo tick-$i; echo tock-$i >&2; sleep 0.2; done']\n",
        ),
    );
    env.manifest(
        "term",
        &env.pod_manifest(
            "term",
            "  hostNetwork: true\n  containers:\n  - name: app\n    image: IMAGE\n    imagePullPolicy: IfNotPresent\n    stdin: true\n    tty: true\n    command: [sh, -c, 'while read l; do echo got:$l; tty; done']\n",
        ),
    );
    env.start_with(&[
        "--kubeconfig".into(),
        cp.node_kubeconfig().display().to_string(),
        "--port".into(),
        api_port.to_string(),
        "--client-ca-file".into(),
        cp.pki("ca.crt").display().to_string(),
    ]);
    for pod in [&echo, &ticker, &term] {
        env.wait(&format!("{pod} mirror Running"), 180, || {
            cp.kubectl_json(&["get", "pod", "-n", "default", pod])
                .is_ok_and(|p| p["status"]["containerStatuses"][0]["state"]["running"].is_object())
        });
    }

    // (a) stdin: a line sent through `kubectl attach -i` reaches the container, whose answer
    // comes back; the client's stdin EOF detaches it without closing the container's stdin
    // (no stdinOnce), so a second client is heard too.
    for word in ["first", "second"] {
        let mut k = cp
            .kubectl_command(&["attach", "-i", "-q", "-n", "default", &echo])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = Lines::new(k.stdout.take().unwrap());
        let mut stdin = k.stdin.take().unwrap();
        // Sent until answered: the attach may not be in place when the first line is written
        // (a line the container reads before then is answered to nobody).
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            stdin.write_all(format!("{word}\n").as_bytes()).unwrap();
            match lines.rx.recv_timeout(Duration::from_secs(1)) {
                Ok(l) if l == format!("got:{word}") => break,
                Ok(l) => lines.seen.push_str(&l),
                Err(_) if Instant::now() < deadline => {}
                Err(e) => panic!("no answer to {word} ({e}): {:?}", lines.seen),
            }
        }
        drop(stdin);
        let st = wait_exit(&mut k, "kubectl attach -i after stdin EOF");
        assert!(st.success(), "{st:?}");
    }
    let p = cp
        .kubectl_json(&["get", "pod", "-n", "default", &echo])
        .unwrap();
    assert_eq!(
        p["status"]["containerStatuses"][0]["restartCount"], 0,
        "{p}"
    );

    // (b) output only: a live stream of stdout and stderr.
    let mut k = cp
        .kubectl_command(&["attach", "-q", "-n", "default", &ticker])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = Lines::new(k.stdout.take().unwrap());
    let mut err = Lines::new(k.stderr.take().unwrap());
    out.wait_for("tick-");
    err.wait_for("tock-");
    // Live: more comes while attached.
    let first: u32 = out.seen.lines().next().unwrap()["tick-".len()..]
        .parse()
        .unwrap();
    out.wait_for(&format!("tick-{}\n", first + 3));
    let _ = k.kill();
    let _ = k.wait();

    // (c) a terminal: `kubectl attach -it` under `script`, whose pty is kubectl's terminal.
    let k = cp.kubectl_command(&["attach", "-it", "-q", "-n", "default", &term]);
    let line = std::iter::once(k.get_program())
        .chain(k.get_args())
        .map(|a| format!("'{}'", a.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ");
    let mut s = Command::new("script")
        .args(["-qfec", &line, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = Lines::new(s.stdout.take().unwrap());
    let mut stdin = s.stdin.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !lines.seen.contains("got:hello") {
        stdin.write_all(b"hello\n").unwrap();
        stdin.flush().unwrap();
        while let Ok(l) = lines.rx.recv_timeout(Duration::from_secs(1)) {
            lines.seen.push_str(&l);
            lines.seen.push('\n');
        }
        assert!(Instant::now() < deadline, "no answer: {:?}", lines.seen);
    }
    // The container's stdio is a terminal of its own.
    lines.wait_for("/dev/pts/");
    let _ = s.kill();
    let _ = s.wait();

    // (d) a container that does not exist: 404 with kubelet's message.
    let node_api = format!("https://127.0.0.1:{api_port}");
    let (ac, ak) = (
        cp.pki("apiserver-kubelet-client.crt"),
        cp.pki("apiserver-kubelet-client.key"),
    );
    let admin = Some((ac.as_path(), ak.as_path()));
    let (code, body) = curl(
        &format!("{node_api}/attach/default/{echo}/nope?output=1"),
        admin,
    );
    assert_eq!(
        (code, body.as_str()),
        (
            404,
            format!("container nope not found in pod {echo}_default").as_str()
        )
    );
    let (code, body) = curl(
        &format!("{node_api}/attach/default/no-such-pod/app?output=1"),
        admin,
    );
    assert_eq!((code, body.as_str()), (404, "pod does not exist"));
    // No stream asked for: kubelet's 400.
    let (code, body) = curl(&format!("{node_api}/attach/default/{echo}/app"), admin);
    assert_eq!(
        (code, body.as_str()),
        (400, "you must specify at least 1 of stdin, stdout, stderr")
    );
    let out = cp.kubectl(&["attach", "-n", "default", &echo, "-c", "nope"]);
    assert!(!out.status.success(), "{}", text(&out));
}
