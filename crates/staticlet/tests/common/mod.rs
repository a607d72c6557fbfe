//! Helpers shared by the real-container end-to-end tests (`e2e.rs`, `probes_e2e.rs`): the
//! `staticlet` binary, a per-test agent with its own root, manifest and log directories
//! ([`Env`]), and small readers of its pods.
// Each test crate uses a subset of these.
#![allow(dead_code)]
// Real processes in real time: std::time::Instant is right here.
#![allow(clippy::disallowed_types)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_staticlet"))
}

pub fn can_run() -> bool {
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
    if !root {
        eprintln!("skipped: real containers need root");
        return false;
    }
    if !Path::new("/bin/busybox").exists() {
        panic!("busybox-static is missing: run scripts/test.sh, which installs it");
    }
    true
}

pub struct Env {
    dir: tempfile::TempDir,
    node: String,
    agent: Option<Child>,
}

impl Env {
    pub fn new(node: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("manifests")).unwrap();
        let e = Env {
            dir,
            node: node.into(),
            agent: None,
        };
        let tar = e.path("busybox.tar");
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../scripts/busybox-image.sh"
        );
        let out = Command::new("bash").arg(script).arg(&tar).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = bin()
            .args(["images", "import"])
            .arg(&tar)
            .arg("--root-dir")
            .arg(e.root())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        e
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    pub fn root(&self) -> PathBuf {
        self.path("root")
    }

    pub fn start(&mut self, cni: Option<&Path>) {
        self.start_with(cni, &[]);
    }

    pub fn start_with(&mut self, cni: Option<&Path>, extra: &[String]) {
        let mut cmd = bin();
        cmd.args([
            "run",
            "--hostname-override",
            &self.node,
            "--file-check-frequency",
            "1s",
        ])
        .arg("--pod-manifest-path")
        .arg(self.path("manifests"))
        .arg("--root-dir")
        .arg(self.root())
        .arg("--log-dir")
        .arg(self.path("logs"))
        .arg("--cni-conf-dir")
        .arg(
            cni.map(Path::to_path_buf)
                .unwrap_or_else(|| self.path("no-cni")),
        )
        .args(extra)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(self.path("agent.log")).unwrap());
        self.agent = Some(cmd.spawn().unwrap());
    }

    /// Exited children of the agent not reaped yet (`<defunct>` in ps): shims whose container
    /// ended are the agent's children and must be reaped.
    pub fn zombie_children(&self) -> Vec<String> {
        let Some(agent) = self.agent.as_ref().map(|a| a.id().to_string()) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            // pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
            let Some((head, rest)) = stat.rsplit_once(')') else {
                continue;
            };
            let mut f = rest.split_whitespace();
            if f.next() == Some("Z") && f.next() == Some(agent.as_str()) {
                out.push(head.to_string() + ")");
            }
        }
        out
    }

    pub fn kill_agent(&mut self) {
        if let Some(mut a) = self.agent.take() {
            let _ = a.kill();
            let _ = a.wait();
        }
    }

    pub fn manifest(&self, name: &str, yaml: &str) {
        let tmp = self.path("manifests").join(format!(".{name}.tmp"));
        std::fs::write(&tmp, yaml).unwrap();
        std::fs::rename(tmp, self.path("manifests").join(format!("{name}.yaml"))).unwrap();
    }

    pub fn pod(&self, name: &str) -> Option<serde_json::Value> {
        let out = bin()
            .args([
                "get",
                "pod",
                &format!("{name}-{}", self.node),
                "-o",
                "json",
                "--root-dir",
            ])
            .arg(self.root())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())?
    }

    /// The pod's full name (`<name>-<node>`).
    pub fn full_name(&self, name: &str) -> String {
        format!("{name}-{}", self.node)
    }

    /// `staticlet exec` in a container of the pod; panics unless the command exits 0.
    pub fn exec(&self, name: &str, container: &str, cmd: &[&str]) -> String {
        let out = bin()
            .args(["exec", &self.full_name(name), "-c", container, "--root-dir"])
            .arg(self.root())
            .arg("--")
            .args(cmd)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "staticlet exec {cmd:?} in {name}/{container}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The body of a local API path (over the unix socket) when it answers 200.
    pub fn api_get(&self, path: &str) -> Option<String> {
        let mut s =
            std::os::unix::net::UnixStream::connect(self.root().join("staticlet.sock")).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).ok()?;
        let resp = String::from_utf8_lossy(&resp);
        let (head, body) = resp.split_once("\r\n\r\n")?;
        (head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"))
            .then(|| body.to_string())
    }

    /// The pod's events from the local API (`/pods/default/{name}/events`), oldest first; empty
    /// when the agent does not answer.
    pub fn events(&self, name: &str) -> Vec<serde_json::Value> {
        self.api_get(&format!("/pods/default/{}/events", self.full_name(name)))
            .and_then(|body| serde_json::from_str::<serde_json::Value>(&body).ok())
            .and_then(|list| list["items"].as_array().cloned())
            .unwrap_or_default()
    }

    pub fn wait(&self, what: &str, timeout_s: u64, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(timeout_s);
        while !f() {
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(self.path("agent.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                panic!(
                    "timed out waiting for {what}\nagent log (last lines, newest first):\n{}",
                    tail.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.kill_agent();
        // Stop whatever is left (a failed test) so no container outlives the test.
        let _ = std::fs::remove_dir_all(self.path("manifests"));
        let _ = std::fs::create_dir_all(self.path("manifests"));
        self.start(None);
        let root = self.root();
        // Until containers and sandboxes are gone: removing a sandbox also removes the pod's
        // cgroups, so killing the agent earlier would leave them behind.
        let deadline = Instant::now() + Duration::from_secs(60);
        let entries = |d: &str| {
            std::fs::read_dir(root.join(d))
                .map(|d| d.count())
                .unwrap_or(0)
        };
        while (entries("runtime/containers") > 0 || entries("runtime/sandboxes") > 0)
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(200));
        }
        self.kill_agent();
        let _ = staticlet_runtime_embedded::release(&root);
    }
}

pub fn container_state<'a>(
    pod: &'a serde_json::Value,
    name: &str,
) -> Option<&'a serde_json::Value> {
    pod["status"]["containerStatuses"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == name)
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn http_get(port: u16) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

/// The status (`"True"`, `"False"`) of a pod condition.
pub fn condition<'a>(pod: &'a serde_json::Value, type_: &str) -> Option<&'a str> {
    pod["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)?["status"]
        .as_str()
}
