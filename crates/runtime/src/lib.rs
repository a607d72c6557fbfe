//! The container runtime seam of staticlet.
//!
//! [`ContainerRuntime`] is a small, object-safe async trait shaped like the verbs of the
//! Container Runtime Interface (CRI v1): pod sandboxes, images, containers, exec. The agent
//! (pod workers) only ever talks to an `Arc<dyn ContainerRuntime>`; the embedded runtime and the
//! CRI client are two implementations of it, and [`fake::FakeRuntime`] is the scripted one the
//! component tests use.
//!
//! What this crate owns: the trait, the plain data types that cross it, the label keys that make
//! runtime objects attributable to pods (and so make adoption after an agent restart possible),
//! and the [`Clock`] every timestamp is taken from. What it does not own: anything about Pods as
//! Kubernetes objects. The agent translates a Pod into [`SandboxConfig`] and [`ContainerConfig`]
//! in one place, so both backends receive the same, already-decided configuration (as kubelet's
//! `kuberuntime` does for CRI).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

pub mod cgroups;
pub mod fake;
pub mod fault;

/// Writes `data` to `path` readable by root only (mode 0600), atomically: a temporary file next
/// to it, synced, then renamed into place (parent directories are made). Keys, certificates.
/// On failure, the path the failing step worked on and its error.
pub fn write_private(
    path: &std::path::Path,
    data: &[u8],
) -> Result<(), (std::path::PathBuf, std::io::Error)> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    fn at(
        p: &std::path::Path,
    ) -> impl FnOnce(std::io::Error) -> (std::path::PathBuf, std::io::Error) {
        let p = p.to_path_buf();
        move |e| (p, e)
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(at(dir))?;
    }
    let tmp = path.with_extension("tmp-write");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(at(&tmp))?;
    f.write_all(data).map_err(at(&tmp))?;
    f.sync_all().map_err(at(&tmp))?;
    std::fs::rename(&tmp, path).map_err(at(path))
}

/// Labels and annotations on runtime objects.
pub type Labels = BTreeMap<String, String>;

/// Label keys staticlet puts on every sandbox and container it creates.
///
/// The pod keys are kubelet's, so `crictl` shows staticlet's objects the way it shows kubelet's.
/// [`MANAGED`](labels::MANAGED) marks objects as ours: objects without it are never touched, as a
/// node may share its runtime with other clients.
pub mod labels {
    /// `"true"` on every object staticlet created.
    pub const MANAGED: &str = "io.staticlet.managed";
    /// The static pod's UID (its config hash).
    pub const POD_UID: &str = "io.kubernetes.pod.uid";
    /// The pod's full name (`<name>-<node>`).
    pub const POD_NAME: &str = "io.kubernetes.pod.name";
    /// The pod's namespace.
    pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
    /// The container's name in the pod spec.
    pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";
    /// `init`, `sidecar` or `app`.
    pub const CONTAINER_KIND: &str = "io.staticlet.container.kind";
    /// The restart attempt of the container (0 for the first run), as a decimal.
    pub const ATTEMPT: &str = "io.staticlet.container.attempt";
    /// Hash of the container's spec, so a container of an older spec is recognised.
    pub const CONTAINER_HASH: &str = "io.staticlet.container.hash";
    /// The pod's termination grace period in seconds, so an orphan can be stopped politely.
    pub const GRACE_PERIOD: &str = "io.staticlet.pod.terminationGracePeriod";
}

/// kubelet's confinement of a container that is not privileged (`securitycontext`'s
/// `DefaultProcMount` lists, which kubelet sends to CRI runtimes as `masked_paths` and
/// `readonly_paths`): every runtime applies them, so that a pod is confined the same on each.
pub mod confinement {
    /// Paths hidden from the container (`/dev/null` over files, an empty read-only tmpfs over
    /// directories).
    pub const MASKED_PATHS: &[&str] = &[
        "/proc/asound",
        "/proc/acpi",
        "/proc/kcore",
        "/proc/keys",
        "/proc/latency_stats",
        "/proc/timer_list",
        "/proc/timer_stats",
        "/proc/sched_debug",
        "/proc/scsi",
        "/sys/firmware",
        "/sys/devices/virtual/powercap",
    ];
    /// Paths made read-only.
    pub const READONLY_PATHS: &[&str] = &[
        "/proc/bus",
        "/proc/fs",
        "/proc/irq",
        "/proc/sys",
        "/proc/sysrq-trigger",
    ];
}

/// A source of wall-clock time that follows tokio's clock.
///
/// All timestamps the agent compares (container start/finish times, back-off windows) come from
/// one `Clock`, so component tests that pause tokio time see a consistent world. In production it
/// is the wall clock at start plus tokio's monotonic elapsed time.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    wall: SystemTime,
    mono: tokio::time::Instant,
}

impl Clock {
    /// A clock anchored at the current wall time and tokio instant.
    pub fn new() -> Self {
        Self {
            wall: SystemTime::now(),
            mono: tokio::time::Instant::now(),
        }
    }

    /// A clock anchored at a fixed wall time (tests), moving with tokio's clock.
    pub fn anchored(wall: SystemTime) -> Self {
        Self {
            wall,
            mono: tokio::time::Instant::now(),
        }
    }

    /// The current time.
    pub fn now(&self) -> SystemTime {
        self.wall + self.mono.elapsed()
    }

    /// The tokio instant corresponding to a wall time of this clock (saturating at the anchor).
    pub fn instant_at(&self, at: SystemTime) -> tokio::time::Instant {
        self.mono + at.duration_since(self.wall).unwrap_or_default()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// Identifies a pod sandbox inside one runtime.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SandboxId(pub String);

/// Identifies a container inside one runtime.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContainerId(pub String);

impl std::fmt::Display for SandboxId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Display for ContainerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Errors of a runtime call. Which are retryable is stated per variant; the pod worker retries
/// every failed step on its next sync anyway, so "retryable" only decides the wording of status.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RuntimeError {
    /// The object does not exist (any more). Not an error for stop/remove (they are idempotent).
    #[error("{kind} {id} not found")]
    NotFound { kind: &'static str, id: String },
    /// The runtime cannot be reached or is not ready. Retryable.
    #[error("container runtime unavailable: {0}")]
    Unavailable(String),
    /// The image could not be pulled; `message` is the registry's or runtime's own words.
    #[error("failed to pull image {image:?}: {message}")]
    ImagePull { image: String, message: String },
    /// The image is not present and the pull policy forbids pulling it.
    #[error("image {0:?} is not present with pull policy of Never")]
    ImageNeverPull(String),
    /// The runtime rejected the configuration (not retryable without a spec change).
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// Any other failure of the named operation. Retryable.
    #[error("{op} failed: {message}")]
    Failed { op: &'static str, message: String },
}

/// Result alias of the runtime crate.
pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

/// Name and version of a runtime, as CRI's `Version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeVersion {
    pub runtime_name: String,
    pub runtime_version: String,
    pub api_version: String,
}

/// Readiness of a runtime, as CRI's `Status` conditions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeStatus {
    pub runtime_ready: bool,
    pub network_ready: bool,
    /// Why the runtime or the network is not ready (empty when both are).
    pub message: String,
}

/// Resource usage of one container (CRI's `ContainerStats`, the fields kubelet's resource
/// metrics use). `None`: the runtime could not read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerStats {
    pub id: ContainerId,
    pub labels: Labels,
    pub timestamp: SystemTime,
    /// Cumulative CPU time, in nanoseconds of one core.
    pub cpu_usage_core_nanos: Option<u64>,
    /// Memory in use that cannot be reclaimed easily (usage minus inactive file pages).
    pub memory_working_set_bytes: Option<u64>,
}

/// A DNS configuration for a sandbox (`/etc/resolv.conf`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsConfig {
    pub servers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

/// A port published by a sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMapping {
    pub protocol: String,
    pub container_port: i32,
    pub host_port: i32,
    pub host_ip: String,
}

/// Everything a runtime needs to create a pod sandbox (CRI's `PodSandboxConfig`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxConfig {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub attempt: u32,
    /// Empty under hostNetwork (the host's name is kept).
    pub hostname: String,
    /// Directory the container logs of this pod go to.
    pub log_directory: PathBuf,
    pub dns: Option<DnsConfig>,
    pub port_mappings: Vec<PortMapping>,
    pub labels: Labels,
    pub annotations: Labels,
    pub host_network: bool,
    pub host_pid: bool,
    pub host_ipc: bool,
    pub share_process_namespace: bool,
    /// The pod's cgroup (absolute, e.g. `/staticlet/pod<uid>`), under which the runtime puts the
    /// sandbox's and containers' cgroups. The agent removes it once the pod is gone.
    pub cgroup_parent: String,
    pub sysctls: Labels,
    /// `runtimeClassName`, for runtimes that support handlers.
    pub runtime_handler: String,
}

/// How an image is named.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ImageSpec {
    pub image: String,
}

/// Credentials for a registry (a docker `config.json` entry, decoded).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthConfig {
    pub username: String,
    pub password: String,
    pub auth: String,
    pub server_address: String,
    pub identity_token: String,
    pub registry_token: String,
}

/// An image present in the runtime.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Image {
    /// The image's content reference (`sha256:...` or `repo@sha256:...`).
    pub id: String,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    pub size: u64,
}

/// A bind mount into a container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mount {
    pub container_path: String,
    pub host_path: PathBuf,
    pub readonly: bool,
    /// `None`, `HostToContainer` or `Bidirectional` (Kubernetes `mountPropagation`).
    pub propagation: String,
}

/// Resource settings of a container, already converted to cgroup terms.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    pub cpu_period: i64,
    pub cpu_quota: i64,
    pub cpu_shares: i64,
    pub memory_limit_in_bytes: i64,
    pub oom_score_adj: i64,
}

/// Security settings of a container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecurityContext {
    pub privileged: bool,
    pub run_as_user: Option<i64>,
    pub run_as_group: Option<i64>,
    pub supplemental_groups: Vec<i64>,
    pub readonly_rootfs: bool,
    pub add_capabilities: Vec<String>,
    pub drop_capabilities: Vec<String>,
    pub no_new_privs: bool,
    /// `runAsNonRoot`: the runtime refuses to start the container as uid 0.
    pub run_as_non_root: bool,
    pub seccomp: Seccomp,
}

/// The seccomp profile of a container (Kubernetes `seccompProfile`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Seccomp {
    /// No filter (Kubernetes' default when no profile is set).
    #[default]
    Unconfined,
    /// The runtime's default profile.
    RuntimeDefault,
    /// A profile file (absolute path) in the OCI `linux.seccomp` JSON format.
    Localhost(PathBuf),
}

/// Everything a runtime needs to create a container (CRI's `ContainerConfig`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerConfig {
    pub name: String,
    pub attempt: u32,
    pub image: ImageSpec,
    /// Entrypoint override (Kubernetes `command`); empty keeps the image's.
    pub command: Vec<String>,
    /// Arguments (Kubernetes `args`); empty keeps the image's when `command` is empty too.
    pub args: Vec<String>,
    pub working_dir: String,
    /// Environment, already expanded (`$(VAR)` references resolved).
    pub envs: Vec<(String, String)>,
    pub mounts: Vec<Mount>,
    pub labels: Labels,
    pub annotations: Labels,
    /// Log file, relative to the sandbox's log directory (`<container>/<attempt>.log`).
    pub log_path: PathBuf,
    /// Keep the container's stdin open for attached clients (Kubernetes `stdin`); without it
    /// the container reads EOF at once.
    pub stdin: bool,
    /// Close the container's stdin when the first attached client's stdin ends (Kubernetes
    /// `stdinOnce`; only with `stdin`).
    pub stdin_once: bool,
    /// Run the container on a terminal (Kubernetes `tty`): its stdout and stderr are one stream.
    pub tty: bool,
    pub resources: Resources,
    pub security: SecurityContext,
    /// Signal to stop the container with (`SIGTERM` when empty or when the image says nothing).
    pub stop_signal: String,
}

/// State of a sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxState {
    Ready,
    NotReady,
}

/// What a runtime reports about a sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxStatus {
    pub id: SandboxId,
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub attempt: u32,
    pub state: SandboxState,
    pub created_at: SystemTime,
    /// The pod IP (empty under hostNetwork or without a network).
    pub ip: String,
    pub labels: Labels,
    pub annotations: Labels,
}

/// State of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerState {
    Created,
    Running,
    Exited,
    Unknown,
}

/// What a runtime reports about a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerStatus {
    pub id: ContainerId,
    pub sandbox_id: SandboxId,
    /// The container's name in the pod spec.
    pub name: String,
    pub attempt: u32,
    pub state: ContainerState,
    pub created_at: SystemTime,
    pub started_at: Option<SystemTime>,
    pub finished_at: Option<SystemTime>,
    pub exit_code: Option<i32>,
    /// A short CamelCase reason (`Completed`, `Error`, `OOMKilled`), empty when unknown.
    pub reason: String,
    pub message: String,
    pub image: ImageSpec,
    /// The image's content reference.
    pub image_ref: String,
    pub labels: Labels,
    pub annotations: Labels,
    pub log_path: PathBuf,
}

/// Selects runtime objects whose labels contain all the given pairs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(pub Labels);

impl LabelSelector {
    /// Every object staticlet manages.
    pub fn managed() -> Self {
        Self(Labels::from([(
            labels::MANAGED.to_string(),
            "true".to_string(),
        )]))
    }

    /// The objects of one pod.
    pub fn pod(uid: &str) -> Self {
        let mut s = Self::managed();
        s.0.insert(labels::POD_UID.to_string(), uid.to_string());
        s
    }

    /// Whether `labels` match this selector.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.0.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}

/// Result of an exec that ran to completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecResult {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit_code: i32,
}

/// An interactive command in a running container (CRI `ExecRequest`, as `kubectl exec` asks
/// for it through the node API).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExecRequest {
    pub cmd: Vec<String>,
    /// Run the command on a terminal (stdout and stderr are then one stream, stdout).
    pub tty: bool,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

/// An attach to a running container's own stdio (CRI `AttachRequest`, as `kubectl attach`
/// asks for it through the node API). Each stream is present in [`ExecIo`] when asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AttachRequest {
    /// Whether the container runs on a terminal (from its spec: a running process cannot
    /// change it, so kubelet takes it from the pod, not from the client).
    pub tty: bool,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

/// A terminal size (columns, rows), as the `resize` stream of `kubectl exec -t` sends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TerminalSize {
    pub width: u16,
    pub height: u16,
}

/// The streams of an interactive exec or an attach. Each is present when the request asked for
/// it. For an exec, `stdin` reaching EOF closes the command's stdin and the exec ends when the
/// command exits; for an attach, see [`ContainerRuntime::attach`].
pub struct ExecIo {
    pub stdin: Option<Box<dyn tokio::io::AsyncRead + Send + Unpin>>,
    pub stdout: Option<Box<dyn tokio::io::AsyncWrite + Send + Unpin>>,
    pub stderr: Option<Box<dyn tokio::io::AsyncWrite + Send + Unpin>>,
    /// Terminal size changes (with `tty`); the first one sets the initial size.
    pub resize: Option<tokio::sync::mpsc::Receiver<TerminalSize>>,
}

impl std::fmt::Debug for ExecIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecIo")
            .field("stdin", &self.stdin.is_some())
            .field("stdout", &self.stdout.is_some())
            .field("stderr", &self.stderr.is_some())
            .field("resize", &self.resize.is_some())
            .finish()
    }
}

/// A change a runtime observed, for agents that want to react faster than their relist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerEvent {
    pub container_id: ContainerId,
    pub pod_uid: String,
    pub state: ContainerState,
}

/// The runtime seam, shaped like CRI v1.
///
/// Contracts every implementation keeps (CRI's own, api.proto):
/// - `stop_pod_sandbox`, `remove_pod_sandbox`, `stop_container` and `remove_container` are
///   idempotent: an object that is already stopped or gone is success, not [`RuntimeError::NotFound`].
/// - `stop_container(id, timeout)` sends the container's stop signal, waits up to `timeout`, then
///   kills it; it returns once the container is no longer running.
/// - Labels given in the configs come back unchanged in statuses and are what `list_*` filter on.
/// - Timestamps are taken from the runtime's [`Clock`] where the implementation has one.
#[async_trait]
pub trait ContainerRuntime: Send + Sync + 'static {
    /// Name and version of the runtime.
    async fn version(&self) -> Result<RuntimeVersion>;
    /// Whether the runtime and its pod network are ready.
    async fn status(&self) -> Result<RuntimeStatus>;

    /// Creates and starts a sandbox; returns its id.
    async fn run_pod_sandbox(&self, config: &SandboxConfig) -> Result<SandboxId>;
    /// Stops every container of the sandbox and tears its network down. Idempotent.
    async fn stop_pod_sandbox(&self, id: &SandboxId) -> Result<()>;
    /// Removes a stopped sandbox and its containers. Idempotent.
    async fn remove_pod_sandbox(&self, id: &SandboxId) -> Result<()>;
    /// The status of one sandbox.
    async fn pod_sandbox_status(&self, id: &SandboxId) -> Result<SandboxStatus>;
    /// The sandboxes whose labels match.
    async fn list_pod_sandboxes(&self, selector: &LabelSelector) -> Result<Vec<SandboxStatus>>;

    /// The image if it is present.
    async fn image_status(&self, image: &ImageSpec) -> Result<Option<Image>>;
    /// Pulls an image; returns its content reference.
    async fn pull_image(&self, image: &ImageSpec, auth: Option<&AuthConfig>) -> Result<String>;
    /// Every image present, one entry per image id (CRI `ListImages`).
    async fn list_images(&self) -> Result<Vec<Image>>;
    /// Removes an image, named by reference or id (CRI `RemoveImage`). Idempotent: an image
    /// that is not present is success.
    async fn remove_image(&self, image: &ImageSpec) -> Result<()>;
    /// The directory the runtime keeps its images in, on this host (CRI `ImageFsInfo` reports
    /// the usage of its filesystem); `None` when the images are not the runtime's own files.
    fn image_store_dir(&self) -> Option<PathBuf> {
        None
    }

    /// Creates a container in a sandbox; returns its id.
    async fn create_container(
        &self,
        sandbox: &SandboxId,
        config: &ContainerConfig,
        sandbox_config: &SandboxConfig,
    ) -> Result<ContainerId>;
    /// Starts a created container.
    async fn start_container(&self, id: &ContainerId) -> Result<()>;
    /// Stops a container: stop signal, then SIGKILL after `timeout`. Idempotent.
    async fn stop_container(&self, id: &ContainerId, timeout: Duration) -> Result<()>;
    /// Removes a container. Idempotent.
    async fn remove_container(&self, id: &ContainerId) -> Result<()>;
    /// The status of one container.
    async fn container_status(&self, id: &ContainerId) -> Result<ContainerStatus>;
    /// The containers whose labels match.
    async fn list_containers(&self, selector: &LabelSelector) -> Result<Vec<ContainerStatus>>;

    /// Resource usage of the running containers whose labels match (CRI
    /// `ListContainerStats`).
    async fn list_container_stats(&self, selector: &LabelSelector) -> Result<Vec<ContainerStats>>;

    /// Runs a command in a running container and waits up to `timeout` for it.
    async fn exec_sync(
        &self,
        id: &ContainerId,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<ExecResult>;

    /// CRI `Exec`: the URL of the runtime's own streaming server that serves this exec (the
    /// node API proxies the client's upgrade request to it, as kubelet does with containerd's),
    /// or `None` when the runtime runs interactive commands itself through [`Self::exec`].
    async fn exec_url(&self, id: &ContainerId, req: &ExecRequest) -> Result<Option<String>> {
        let _ = (id, req);
        Ok(None)
    }

    /// Runs an interactive command in a running container with the given streams; returns its
    /// exit code (128 + signal when killed). Runtimes whose [`Self::exec_url`] gives a URL
    /// need not implement it.
    async fn exec(&self, id: &ContainerId, req: &ExecRequest, io: ExecIo) -> Result<i32> {
        let _ = (id, req, io);
        Err(RuntimeError::Failed {
            op: "exec",
            message: "interactive exec is not supported by this runtime".into(),
        })
    }

    /// CRI `Attach`: the URL of the runtime's own streaming server that serves this attach (the
    /// node API proxies to it, as for [`Self::exec_url`]), or `None` when the runtime attaches
    /// clients itself through [`Self::attach`].
    async fn attach_url(&self, id: &ContainerId, req: &AttachRequest) -> Result<Option<String>> {
        let _ = (id, req);
        Ok(None)
    }

    /// Attaches the given streams to the running container's own stdio (containerd's semantics):
    /// its output from now on is copied to `stdout`/`stderr` (a client too slow to keep up is
    /// dropped, never slows the container); `stdin` is written to the container's stdin when
    /// it was created with `stdin` (else it is read and dropped); `resize` resizes its terminal.
    /// Returns when the container exits, when the client's output is gone, or when the client's
    /// stdin ends on a container with `stdin`: then, with `stdin_once` and no terminal, the
    /// container's stdin is closed and the attach goes on to the container's exit; otherwise
    /// the attach ends there and the container's stdin stays open for the next client.
    /// Runtimes whose [`Self::attach_url`] gives a URL need not implement it.
    async fn attach(&self, id: &ContainerId, req: &AttachRequest, io: ExecIo) -> Result<()> {
        let _ = (id, req, io);
        Err(RuntimeError::Failed {
            op: "attach",
            message: "attach is not supported by this runtime".into(),
        })
    }

    /// CRI `PortForward`: the URL of the runtime's streaming server for forwarding to the
    /// sandbox's ports, or `None` when the runtime connects itself ([`Self::port_forward`]).
    async fn port_forward_url(&self, sandbox: &SandboxId, ports: &[u16]) -> Result<Option<String>> {
        let _ = (sandbox, ports);
        Ok(None)
    }

    /// Opens a TCP connection to `port` on the loopback address of the sandbox's network
    /// namespace (kubelet's port-forward semantics: the pod's own `localhost`).
    async fn port_forward(&self, sandbox: &SandboxId, port: u16) -> Result<tokio::net::TcpStream> {
        let _ = (sandbox, port);
        Err(RuntimeError::Failed {
            op: "port-forward",
            message: "port forwarding is not supported by this runtime".into(),
        })
    }

    /// A stream of container state changes, if the runtime has one. Agents still relist
    /// periodically: events only make them faster.
    fn subscribe_events(&self) -> Option<tokio::sync::broadcast::Receiver<ContainerEvent>> {
        None
    }
}

/// Parses a label that holds a decimal number, as the agent writes them.
pub fn label_u32(labels: &Labels, key: &str) -> Option<u32> {
    labels.get(key).and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selector_matches_subset() {
        let sel = LabelSelector::pod("abc");
        let mut l = Labels::new();
        assert!(!sel.matches(&l));
        l.insert(labels::MANAGED.into(), "true".into());
        l.insert(labels::POD_UID.into(), "abc".into());
        l.insert("other".into(), "x".into());
        assert!(sel.matches(&l));
        l.insert(labels::POD_UID.into(), "abd".into());
        assert!(!sel.matches(&l));
    }

    #[tokio::test(start_paused = true)]
    async fn clock_follows_paused_tokio_time() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let c = Clock::anchored(t0);
        assert_eq!(c.now(), t0);
        tokio::time::advance(Duration::from_secs(7)).await;
        assert_eq!(c.now(), t0 + Duration::from_secs(7));
        assert_eq!(
            c.instant_at(t0 + Duration::from_secs(7)),
            tokio::time::Instant::now()
        );
    }
}
