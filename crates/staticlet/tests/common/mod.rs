//! Helpers shared by the real-container end-to-end tests (`scenarios/`, `e2e.rs`, `cri_e2e.rs`):
//! the `staticlet` binary, a per-test agent with its own root, manifest and log directories on
//! one of two container runtimes ([`Env`], [`Backend`]), small readers of its pods, and
//! [`on_both_backends!`], which runs one scenario against each runtime.
// Each test crate uses a subset of these.
#![allow(dead_code, unused_macros)]
// Real processes in real time: std::time::Instant is right here.
#![allow(clippy::disallowed_types)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use staticlet_runtime::{ContainerRuntime, LabelSelector};
use staticlet_runtime_cri::testutil::{Containerd, BUSYBOX};
use staticlet_runtime_cri::{CriOptions, CriRuntime};

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_staticlet"))
}

/// Whether the embedded runtime's tests can run here: they need root (otherwise they say so and
/// pass) and `busybox-static` (a missing package is a broken setup: panics).
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

/// The container runtime an [`Env`]'s agent runs its pods on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// staticlet's own runtime (shims, overlayfs, namespaces, CNI plugins run by the agent).
    Embedded,
    /// A private containerd started by the test (`staticlet_runtime_cri::testutil`), reached
    /// through `--container-runtime-endpoint`.
    Containerd,
}

impl Backend {
    /// Whether this machine can run the backend's tests; when not, says why (and the test
    /// passes). Root is needed for both; containerd and ctr for [`Backend::Containerd`].
    pub fn can_run(self) -> bool {
        match self {
            Backend::Embedded => can_run(),
            Backend::Containerd => match staticlet_runtime_cri::testutil::skip_reason() {
                Some(why) => {
                    eprintln!("skipped: {why}");
                    false
                }
                None => can_run(),
            },
        }
    }

    /// A short tag for node names (`e` / `c`), so both variants of a scenario never share pod
    /// UIDs (and the pod cgroups named after them).
    fn tag(self) -> &'static str {
        match self {
            Backend::Embedded => "e",
            Backend::Containerd => "c",
        }
    }
}

/// Runs `scenario` in a fresh [`Env`] on `backend`, unless the machine cannot (then it says why
/// and returns). The node name is derived from the scenario's name and the backend.
pub fn run_scenario(backend: Backend, name: &str, scenario: fn(&mut Env)) {
    if !backend.can_run() {
        return;
    }
    let mut node: String = format!("{}-{}", backend.tag(), name.replace('_', "-"))
        .chars()
        .take(30)
        .collect();
    while node.ends_with('-') {
        node.pop();
    }
    let mut env = Env::with_backend(backend, &node);
    scenario(&mut env);
}

/// Instantiates scenarios (functions `fn(&mut Env)` in the invoking file) for both backends:
/// `embedded::<name>` and `containerd::<name>` tests.
macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {
        mod embedded {
            $(
                #[test]
                fn $scenario() {
                    crate::common::run_scenario(
                        crate::common::Backend::Embedded,
                        stringify!($scenario),
                        super::$scenario,
                    );
                }
            )*
        }
        mod containerd {
            $(
                #[test]
                fn $scenario() {
                    crate::common::run_scenario(
                        crate::common::Backend::Containerd,
                        stringify!($scenario),
                        super::$scenario,
                    );
                }
            )*
        }
    };
}

/// The backend-specific part of an [`Env`].
enum Runtime {
    Embedded {
        /// The CNI conf dir written by [`Env::pod_network`] and the bridge it names.
        cni: Option<(PathBuf, String)>,
    },
    Containerd {
        containerd: Containerd,
        /// A CRI client of the same containerd, for what the test checks or does itself.
        cri: CriRuntime,
        /// Runs the CRI client (its channel lives on this runtime between calls).
        rt: tokio::runtime::Runtime,
    },
}

static NETWORKS: AtomicU32 = AtomicU32::new(0);

/// One agent (`staticlet run`) with its own directories, on one [`Backend`]. Dropping it stops
/// whatever is left: no container outlives the test.
pub struct Env {
    // Dropped first (after `Drop::drop` killed the agent): containerd stops the containers
    // before the directories they use go away.
    runtime: Runtime,
    dir: tempfile::TempDir,
    node: String,
    agent: Option<Child>,
}

impl Env {
    /// An agent on the embedded runtime (callers check [`can_run`] first).
    pub fn new(node: &str) -> Self {
        Self::with_backend(Backend::Embedded, node)
    }

    /// An agent on `backend` (callers check [`Backend::can_run`] first); for
    /// [`Backend::Containerd`] this starts a private containerd with the busybox and pause
    /// images, for [`Backend::Embedded`] it imports busybox into the agent's image store.
    pub fn with_backend(backend: Backend, node: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("manifests")).unwrap();
        let runtime = match backend {
            Backend::Embedded => Runtime::Embedded { cni: None },
            Backend::Containerd => {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                    .unwrap();
                let (containerd, cri) = rt.block_on(async {
                    let containerd = Containerd::start().await;
                    let cri = CriRuntime::connect(&containerd.endpoint(), CriOptions::default())
                        .await
                        .unwrap();
                    (containerd, cri)
                });
                Runtime::Containerd {
                    containerd,
                    cri,
                    rt,
                }
            }
        };
        let e = Env {
            runtime,
            dir,
            node: node.into(),
            agent: None,
        };
        if backend == Backend::Embedded {
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
        }
        e
    }

    pub fn backend(&self) -> Backend {
        match self.runtime {
            Runtime::Embedded { .. } => Backend::Embedded,
            Runtime::Containerd { .. } => Backend::Containerd,
        }
    }

    /// The busybox image as manifests name it on this backend (both import
    /// `docker.io/library/busybox:latest`, built by `scripts/busybox-image.sh`).
    pub fn image(&self) -> &'static str {
        match self.backend() {
            Backend::Embedded => "busybox",
            Backend::Containerd => BUSYBOX,
        }
    }

    /// How this backend's container IDs start in pod statuses (`containerID`).
    pub fn container_id_prefix(&self) -> &'static str {
        match self.backend() {
            Backend::Embedded => "staticlet://",
            Backend::Containerd => "containerd://",
        }
    }

    /// A Pod manifest named `name`; `spec` is the YAML under `spec:` (indented by two spaces),
    /// in which `IMAGE` stands for [`Env::image`].
    pub fn pod_manifest(&self, name: &str, spec: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n{}",
            spec.replace("IMAGE", self.image())
        )
    }

    /// The node name the agent runs as (`--hostname-override`).
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The private containerd (panics on the embedded backend).
    pub fn containerd(&mut self) -> &mut Containerd {
        match &mut self.runtime {
            Runtime::Containerd { containerd, .. } => containerd,
            Runtime::Embedded { .. } => panic!("not a containerd Env"),
        }
    }

    /// A CRI client of the private containerd and a runtime to drive it (panics on the embedded
    /// backend).
    pub fn cri(&self) -> (&CriRuntime, &tokio::runtime::Runtime) {
        match &self.runtime {
            Runtime::Containerd { cri, rt, .. } => (cri, rt),
            Runtime::Embedded { .. } => panic!("not a containerd Env"),
        }
    }

    /// Gives pods without hostNetwork a network (a CNI bridge on its own subnet, no gateway to
    /// the outside) and returns the subnet's prefix (`10.x.y.`): for the embedded runtime a CNI
    /// configuration the agent is started with, for containerd its own (see `testutil`). Call
    /// before [`Env::start`].
    pub fn pod_network(&mut self) -> String {
        if !Path::new("/usr/lib/cni/bridge").exists() && !Path::new("/opt/cni/bin/bridge").exists()
        {
            panic!(
                "containernetworking-plugins is missing: run scripts/test.sh, which installs it"
            );
        }
        match &mut self.runtime {
            Runtime::Containerd { containerd, .. } => containerd.subnet_prefix.clone(),
            Runtime::Embedded { cni } => {
                let seq = NETWORKS.fetch_add(1, Ordering::SeqCst);
                let n = (std::process::id().wrapping_mul(7) + seq * 13) % 200 + 20;
                let conf = self.dir.path().join("cni");
                std::fs::create_dir_all(&conf).unwrap();
                let bridge = format!("stle2e{n}");
                std::fs::write(
                    conf.join("10-test.conflist"),
                    format!(
                        r#"{{"cniVersion":"1.0.0","name":"staticlet-{bridge}","plugins":[
  {{"type":"bridge","bridge":"{bridge}","isGateway":true,"ipMasq":false,
    "ipam":{{"type":"host-local","ranges":[[{{"subnet":"10.234.{n}.0/24"}}]],"dataDir":"{}"}}}},
  {{"type":"loopback"}}]}}"#,
                        self.dir.path().join("ipam").display()
                    ),
                )
                .unwrap();
                *cni = Some((conf, bridge));
                format!("10.234.{n}.")
            }
        }
    }

    /// Whether the pod network's IPAM (host-local) still holds `ip`.
    pub fn ip_allocated(&self, ip: &str) -> bool {
        let dir = match &self.runtime {
            Runtime::Containerd { containerd, .. } => containerd.ipam_dir(),
            Runtime::Embedded { cni } => {
                let (_, bridge) = cni.as_ref().expect("no pod network: see Env::pod_network");
                self.path("ipam").join(format!("staticlet-{bridge}"))
            }
        };
        dir.join(ip).exists()
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    pub fn root(&self) -> PathBuf {
        self.path("root")
    }

    pub fn start(&mut self) {
        self.start_with(&[]);
    }

    pub fn start_with(&mut self, extra: &[String]) {
        self.start_with_env(extra, &[]);
    }

    /// Starts the agent with `extra` flags and `env` added to its environment.
    pub fn start_with_env(&mut self, extra: &[String], env: &[(&str, &str)]) {
        let mut cmd = bin();
        cmd.envs(env.iter().copied());
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
        .arg(self.path("logs"));
        match &self.runtime {
            Runtime::Embedded { cni } => {
                cmd.arg("--cni-conf-dir").arg(
                    cni.as_ref()
                        .map(|(conf, _)| conf.clone())
                        .unwrap_or_else(|| self.path("no-cni")),
                );
            }
            Runtime::Containerd { containerd, .. } => {
                cmd.arg("--container-runtime-endpoint")
                    .arg(containerd.endpoint());
            }
        }
        // Tests run side by side: the healthz port only where a test asks for it.
        if !extra.iter().any(|a| a.starts_with("--healthz-port")) {
            cmd.args(["--healthz-port", "0"]);
        }
        cmd.args(extra)
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

    /// The agent's process id, while it runs.
    pub fn agent_pid(&self) -> Option<u32> {
        self.agent.as_ref().map(|a| a.id())
    }

    /// Waits (up to `timeout_s`) for the agent to exit by itself; its exit status.
    pub fn agent_exit(&mut self, timeout_s: u64) -> std::process::ExitStatus {
        let a = self.agent.as_mut().expect("the agent was started");
        let deadline = std::time::Instant::now() + Duration::from_secs(timeout_s);
        loop {
            if let Some(status) = a.try_wait().unwrap() {
                self.agent = None;
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the agent still runs after {timeout_s} s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// kill -9 the agent (its containers keep running).
    pub fn kill_agent(&mut self) {
        if let Some(mut a) = self.agent.take() {
            let _ = a.kill();
            let _ = a.wait();
        }
    }

    /// Writes (atomically) the manifest `<name>.yaml`.
    pub fn manifest(&self, name: &str, yaml: &str) {
        let tmp = self.path("manifests").join(format!(".{name}.tmp"));
        std::fs::write(&tmp, yaml).unwrap();
        std::fs::rename(tmp, self.path("manifests").join(format!("{name}.yaml"))).unwrap();
    }

    /// Removes the manifest `<name>.yaml`.
    pub fn remove_manifest(&self, name: &str) {
        std::fs::remove_file(self.path("manifests").join(format!("{name}.yaml"))).unwrap();
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

    /// The pod's UID (panics when the agent does not show the pod).
    pub fn uid(&self, name: &str) -> String {
        let p = self
            .pod(name)
            .unwrap_or_else(|| panic!("no pod {name} on {}", self.node));
        p["metadata"]["uid"].as_str().unwrap().to_string()
    }

    /// A container's CRI log file of attempt `attempt` (`<log-dir>/<ns>_<pod>_<uid>/<c>/<n>.log`).
    pub fn log_file(&self, name: &str, uid: &str, container: &str, attempt: u32) -> PathBuf {
        self.path("logs")
            .join(format!("default_{}_{uid}", self.full_name(name)))
            .join(container)
            .join(format!("{attempt}.log"))
    }

    /// `staticlet exec` in a running container of the pod (through the agent, on either
    /// runtime); panics unless the command exits 0.
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

    /// `staticlet logs <pod> ARGS` (with this agent's root directory; asked of the agent, so no
    /// `--log-dir` unless in `args`): its stdout, or its stderr as the error.
    pub fn logs(&self, name: &str, args: &[&str]) -> Result<String, String> {
        let out = bin()
            .args(["logs", &self.full_name(name), "--root-dir"])
            .arg(self.root())
            .args(args)
            .output()
            .unwrap();
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// The IDs of the containers the runtime holds for staticlet (any state), as pod statuses
    /// show them after the `scheme://` prefix.
    pub fn containers(&self) -> Vec<String> {
        match &self.runtime {
            Runtime::Embedded { .. } => dir_entries(&self.root().join("runtime/containers")),
            Runtime::Containerd { cri, rt, .. } => rt
                .block_on(cri.list_containers(&LabelSelector::managed()))
                .unwrap()
                .into_iter()
                .map(|c| c.id.0)
                .collect(),
        }
    }

    /// How many sandboxes (any state) the runtime holds for staticlet.
    pub fn sandboxes(&self) -> usize {
        match &self.runtime {
            Runtime::Embedded { .. } => dir_entries(&self.root().join("runtime/sandboxes")).len(),
            Runtime::Containerd { cri, rt, .. } => rt
                .block_on(cri.list_pod_sandboxes(&LabelSelector::managed()))
                .unwrap()
                .len(),
        }
    }

    /// What is left of pods under the root directory: sandbox, container and pod directories.
    pub fn leftovers(&self) -> Vec<String> {
        ["runtime/sandboxes", "runtime/containers", "pods"]
            .iter()
            .flat_map(|d| {
                std::fs::read_dir(self.root().join(d))
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(move |e| format!("{d}/{}", e.file_name().to_string_lossy()))
            })
            .collect()
    }

    /// Mounts of sandboxes and containers still under the root directory.
    pub fn mounts_left(&self) -> Vec<String> {
        let root = self.root().display().to_string();
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter(|l| {
                l.contains(&format!("{root}/runtime/sandboxes/"))
                    || l.contains(&format!("{root}/runtime/containers/"))
            })
            .map(str::to_string)
            .collect()
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

    /// The agent's log so far.
    pub fn agent_log(&self) -> String {
        std::fs::read_to_string(self.path("agent.log")).unwrap_or_default()
    }

    /// Polls `f` every 250 ms until it holds; after `timeout_s` panics with the end of the
    /// agent's log (and containerd's).
    pub fn wait(&self, what: &str, timeout_s: u64, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(timeout_s);
        while !f() {
            if Instant::now() > deadline {
                let log = self.agent_log();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                let containerd = match &self.runtime {
                    Runtime::Containerd { containerd, .. } => {
                        format!("\ncontainerd log (last lines):\n{}", containerd.log_tail())
                    }
                    Runtime::Embedded { .. } => String::new(),
                };
                panic!(
                    "timed out waiting for {what}\nagent log (last lines, newest first):\n{}{containerd}",
                    tail.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

/// The directories of the pod's cgroup (`/staticlet/pod<uid>`, the agent's cgroup parent) that
/// exist, in every cgroup hierarchy of this process's mount table (each cgroup v1 controller,
/// the v2 tree).
pub fn pod_cgroups(uid: &str) -> Vec<PathBuf> {
    let mountinfo = Path::new(staticlet_runtime::cgroups::MOUNTINFO);
    staticlet_runtime::cgroups::hierarchies(mountinfo)
        .unwrap()
        .iter()
        .filter_map(|h| h.dir_of(&format!("/staticlet/pod{uid}")))
        .filter(|d| d.exists())
        .collect()
}

fn dir_entries(d: &Path) -> Vec<String> {
    std::fs::read_dir(d)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

impl Env {
    /// Whether the runtime holds nothing of staticlet's and the agent has finished cleaning up
    /// after every pod (it removes a pod's directory after its cgroup); `false` while the
    /// runtime cannot be asked.
    fn all_cleaned_up(&self) -> bool {
        let runtime_empty = match &self.runtime {
            Runtime::Embedded { .. } => {
                dir_entries(&self.root().join("runtime/containers")).is_empty()
                    && dir_entries(&self.root().join("runtime/sandboxes")).is_empty()
            }
            Runtime::Containerd { cri, rt, .. } => rt.block_on(async {
                let all = LabelSelector::managed();
                matches!(cri.list_containers(&all).await, Ok(c) if c.is_empty())
                    && matches!(cri.list_pod_sandboxes(&all).await, Ok(s) if s.is_empty())
            }),
        };
        runtime_empty && dir_entries(&self.root().join("pods")).is_empty()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.kill_agent();
        // Stop whatever is left (a failed test, pods still running) through an agent with no
        // manifests, so no container outlives the test and every pod's cgroup is removed (the
        // agent does that after the pod's sandboxes are gone; containerd never does).
        let _ = std::fs::remove_dir_all(self.path("manifests"));
        let _ = std::fs::create_dir_all(self.path("manifests"));
        self.start();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.all_cleaned_up() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
        }
        self.kill_agent();
        // The private containerd stops and removes whatever is still left when it is dropped.
        let Runtime::Embedded { cni } = &self.runtime else {
            return;
        };
        let bridge = cni.as_ref().map(|(_, bridge)| bridge.clone());
        let _ = staticlet_runtime_embedded::release(&self.root());
        if let Some(bridge) = bridge {
            let _ = Command::new("ip")
                .args(["link", "del", &bridge])
                .stderr(Stdio::null())
                .status();
        }
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

/// A container's status in the pod's current status.
pub fn status(env: &Env, pod: &str, container: &str) -> Option<serde_json::Value> {
    env.pod(pod)
        .and_then(|p| container_state(&p, container).cloned())
}

/// The pod's `Ready` condition together with its container's `ready`, when both agree (the
/// condition and the container status are published together).
pub fn ready(env: &Env, pod: &str, container: &str) -> Option<bool> {
    let p = env.pod(pod)?;
    let c = container_state(&p, container)?;
    if c["state"]["running"].is_null() {
        return None;
    }
    let cond = condition(&p, "Ready")? == "True";
    (c["ready"].as_bool() == Some(cond)).then_some(cond)
}

/// Waits until the pod's `Ready` is `want`, and checks the container did not restart on the way
/// (readiness never restarts anything).
pub fn wait_ready(env: &Env, pod: &str, container: &str, want: bool) {
    env.wait(&format!("{pod} Ready={want}"), 60, || {
        ready(env, pod, container) == Some(want)
    });
    let c = status(env, pod, container).unwrap();
    assert_eq!(c["restartCount"], 0, "{c}");
    if !want {
        let p = env.pod(pod).unwrap();
        let cond = p["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap()
            .clone();
        assert_eq!(cond["reason"], "ContainersNotReady", "{cond}");
        assert_eq!(
            cond["message"],
            format!("containers with unready status: [{container}]"),
            "{cond}"
        );
    }
}

/// The pod's events with this reason.
pub fn events(env: &Env, pod: &str, reason: &str) -> Vec<serde_json::Value> {
    env.events(pod)
        .into_iter()
        .filter(|e| e["reason"] == reason)
        .collect()
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

/// A `docker-registry` on a free loopback port, killed on drop.
pub struct Registry {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Registry {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let cfg = dir.path().join("config.yml");
        std::fs::write(
            &cfg,
            format!(
                "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("storage").display()
            ),
        )
        .unwrap();
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry is missing: run scripts/test.sh, which installs it");
        let reg = Registry {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "docker-registry did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        reg
    }

    /// Pushes the docker archive `tar` as `127.0.0.1:PORT/<name>`.
    pub fn push(&self, tar: &Path, name: &str) {
        let out = Command::new("skopeo")
            .args(["copy", "--dest-tls-verify=false"])
            .arg(format!("docker-archive:{}", tar.display()))
            .arg(format!("docker://127.0.0.1:{}/{name}", self.port))
            .output()
            .expect("skopeo is missing: run scripts/test.sh, which installs it");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
