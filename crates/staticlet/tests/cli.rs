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
    std::fs::remove_file(manifests.join("web.yaml")).unwrap();
    let out = wait(&["pod", "web-n1", "--for=delete", "--timeout", "90s"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
