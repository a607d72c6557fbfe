//! staticlet's CRI runtime: [`CriRuntime`] implements the agent's [`ContainerRuntime`] over the
//! Container Runtime Interface (CRI v1 gRPC), so staticlet can run its static pods on containerd
//! or CRI-O like kubelet does.
//!
//! - One gRPC channel per endpoint over a unix socket (tonic + the `k8s-cri` generated client).
//!   When the socket goes away the channel reconnects lazily on the next call; while the runtime
//!   is down every call fails fast with [`RuntimeError::Unavailable`], and reconnect attempts back
//!   off exponentially up to [`CriOptions::max_backoff`].
//! - [`CriRuntime::connect`] refuses runtimes that do not serve CRI `v1`.
//! - [`CriRuntime::cgroup_driver`] asks the runtime for its cgroup driver (CRI `RuntimeConfig`,
//!   as kubelet does at start); the binary refuses a runtime on the systemd driver, since the
//!   agent's pod cgroups are cgroupfs paths.
//! - The conversions between staticlet's types and CRI messages are pure functions in
//!   [`convert`].
//! - Statuses are cached (the `cache` module says why an entry is never stale): listing a steady
//!   runtime costs one `ListContainers` and one `ListPodSandbox`; `ContainerStatus` and
//!   `PodSandboxStatus` are called only for objects that are new or whose state changed.
//!   [`CriRuntime::rpc_counts`] tells how many calls of each method were sent.
//! - Container events come from `GetContainerEvents` when the runtime implements it
//!   (containerd 1.7+); otherwise [`ContainerRuntime::subscribe_events`] returns `None` and the
//!   agent relies on its relist.
//! - Interactive exec and port forwarding are the runtime's streaming server's, as under kubelet:
//!   [`ContainerRuntime::exec_url`] and [`ContainerRuntime::port_forward_url`] call CRI `Exec` and
//!   `PortForward` and return the URL the runtime answers with (containerd's is absolute, e.g.
//!   `http://127.0.0.1:PORT/exec/TOKEN`, a single-use token), for the node API to proxy the
//!   client's upgrade request to.
//!
//! What CRI does not carry: `ContainerConfig::stop_signal` (the runtime uses the image's
//! `StopSignal`). The pod's `/etc/hosts` (its IP and hostname, `hostAliases`) is the agent's: it
//! arrives as a mount in each `ContainerConfig`, as kubelet's does, and containerd then leaves
//! its own copy of the node's out. The pod's cgroup (`SandboxConfig::cgroup_parent`) is the
//! agent's too: containerd creates it and never removes it, the agent does once the pod's
//! sandboxes are gone.
//! Like kubelet, this runtime creates the pod log directory and each container's log directory
//! before asking the runtime to write there, and checks `runAsNonRoot` against the image's user.
//!
//! # For the integrator (the `staticlet` binary)
//!
//! `--container-runtime-endpoint unix:///run/containerd/containerd.sock` selects this runtime.
//! Connecting is async (it calls `Version`), so build it inside the tokio runtime:
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use staticlet_runtime::ContainerRuntime;
//! use staticlet_runtime_cri::{CriOptions, CriRuntime};
//!
//! let endpoint = "unix:///run/containerd/containerd.sock";
//! let rt = CriRuntime::connect(endpoint, CriOptions::default()).await?;
//! let version = rt.version().await?; // e.g. runtime_name "containerd"
//! let runtime: Arc<dyn ContainerRuntime> = Arc::new(rt);
//! # let _ = (runtime, version); Ok(()) }
//! ```
//!
//! `connect` fails with [`RuntimeError::Unavailable`] when the socket is not there (yet): a
//! binary that starts before its runtime should retry it; once connected, the runtime going
//! away and coming back is handled inside (calls fail with `Unavailable` meanwhile).
//!
//! Notes for running it: the runtime must have its pause (sandbox) image available (containerd's
//! `sandbox_image`), and pods without hostNetwork need a CNI configuration in the *runtime's*
//! CNI conf dir (staticlet's `--cni-*` flags do not apply). On hosts whose bounding set lacks
//! `CAP_SYS_RESOURCE`, containerd needs `restrict_oom_score_adj = true` in its CRI plugin config.
//! Log paths reported by [`ContainerRuntime::container_status`] are absolute (containerd joins
//! the sandbox's log directory and the container's relative `log_path`).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use hyper_util::rt::TokioIo;
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use staticlet_runtime::{
    AttachRequest, AuthConfig, ContainerConfig, ContainerEvent, ContainerId, ContainerRuntime,
    ContainerStats, ContainerStatus, ExecRequest, ExecResult, Image, ImageSpec, LabelSelector,
    Result, RuntimeError, RuntimeStatus, RuntimeVersion, SandboxConfig, SandboxId, SandboxStatus,
};
use tokio::sync::broadcast;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::Code;
use tracing::{debug, info, trace, warn};

mod cache;
pub mod convert;
#[cfg(feature = "testutil")]
pub mod testutil;

/// The CRI API version this client speaks.
pub const CRI_API_VERSION: &str = "v1";

/// How [`CriRuntime`] talks to the runtime.
#[derive(Debug, Clone)]
pub struct CriOptions {
    /// A separate image service endpoint (`--image-service-endpoint`); `None` uses the runtime
    /// endpoint for images too.
    pub image_endpoint: Option<String>,
    /// Deadline of one ordinary call (kubelet's `--runtime-request-timeout`, 2 minutes).
    pub request_timeout: Duration,
    /// Deadline of opening the socket.
    pub connect_timeout: Duration,
    /// Deadline of `PullImage` (`None`: no deadline).
    pub pull_timeout: Option<Duration>,
    /// First delay before retrying a runtime that was found down.
    pub min_backoff: Duration,
    /// Longest delay between reconnect attempts.
    pub max_backoff: Duration,
    /// Follow `GetContainerEvents` when the runtime implements it.
    pub events: bool,
}

impl Default for CriOptions {
    fn default() -> Self {
        Self {
            image_endpoint: None,
            request_timeout: Duration::from_secs(120),
            connect_timeout: Duration::from_secs(5),
            pull_timeout: None,
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            events: true,
        }
    }
}

/// The path of a `unix:///path` endpoint.
pub fn socket_path(endpoint: &str) -> Result<PathBuf> {
    match endpoint.strip_prefix("unix://") {
        Some(p) if p.starts_with('/') => Ok(PathBuf::from(p)),
        _ => Err(RuntimeError::InvalidConfig(format!(
            "CRI endpoint {endpoint:?}: expected unix:///absolute/path"
        ))),
    }
}

/// Fails calls fast while the runtime is known to be down, and lets one through per back-off
/// period to find out whether it is back.
#[derive(Debug)]
struct Gate {
    min: Duration,
    max: Duration,
    state: Mutex<GateState>,
}

#[derive(Debug, Default)]
struct GateState {
    failures: u32,
    retry_at: Option<Instant>,
    last_error: String,
}

impl Gate {
    fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            state: Mutex::new(GateState::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn check(&self) -> Result<()> {
        let s = self.lock();
        match s.retry_at {
            Some(at) if Instant::now() < at => Err(RuntimeError::Unavailable(format!(
                "{} (next attempt in {:?})",
                s.last_error,
                at - Instant::now()
            ))),
            _ => Ok(()),
        }
    }

    fn record(&self, down: Option<&str>) {
        let mut s = self.lock();
        match down {
            None => {
                if s.failures > 0 {
                    info!("container runtime is reachable again");
                }
                *s = GateState::default();
            }
            Some(msg) => {
                let exp = s.failures.min(16);
                let delay = self.min.saturating_mul(1 << exp).min(self.max);
                if s.failures == 0 {
                    warn!("container runtime unreachable: {msg}");
                }
                s.failures = s.failures.saturating_add(1);
                s.retry_at = Some(Instant::now() + delay);
                s.last_error = msg.to_string();
            }
        }
    }
}

/// One endpoint: its channel, its back-off gate and how many calls of each method it sent.
#[derive(Debug)]
struct Conn {
    endpoint: String,
    channel: Channel,
    gate: Gate,
    calls: Mutex<BTreeMap<&'static str, u64>>,
}

impl Conn {
    async fn open(endpoint: &str, opts: &CriOptions) -> Result<Self> {
        let path = socket_path(endpoint)?;
        let channel = Endpoint::from_static("http://cri.invalid")
            .connect_timeout(opts.connect_timeout)
            .connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }));
        Ok(Self {
            endpoint: endpoint.to_string(),
            channel,
            gate: Gate::new(opts.min_backoff, opts.max_backoff),
            calls: Mutex::default(),
        })
    }

    /// Runs one call through the gate; transport failures close the gate for a while.
    async fn call<T, F, Fut>(&self, op: &'static str, f: F) -> Result<T, tonic::Status>
    where
        F: FnOnce(Channel) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        if let Err(RuntimeError::Unavailable(m)) = self.gate.check() {
            return Err(tonic::Status::unavailable(m));
        }
        trace!(op, endpoint = %self.endpoint, "CRI call");
        *self
            .calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(op)
            .or_default() += 1;
        let res = f(self.channel.clone()).await;
        match &res {
            Err(s) if is_transport(s) => {
                debug!(op, endpoint = %self.endpoint, "CRI call failed: {s}");
                self.gate
                    .record(Some(&format!("{}: {}", self.endpoint, s.message())));
            }
            _ => self.gate.record(None),
        }
        res.map(tonic::Response::into_inner)
    }
}

/// Whether a status means the runtime could not be reached (rather than it refused the call).
fn is_transport(s: &tonic::Status) -> bool {
    // A peer that drops the connection mid-call surfaces as Cancelled ("operation was
    // canceled") or Unknown (transport / connection errors), depending on timing.
    let m = s.message();
    s.code() == Code::Unavailable
        || (matches!(s.code(), Code::Unknown | Code::Cancelled)
            && (m.contains("transport")
                || m.contains("operation was canceled")
                || m.contains("connection closed before message completed")))
}

fn with_timeout<T>(msg: T, timeout: Option<Duration>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Some(t) = timeout {
        r.set_timeout(t);
    }
    r
}

/// Maps a CRI error onto [`RuntimeError`], keeping the runtime's own message.
pub fn map_status(
    op: &'static str,
    kind: &'static str,
    id: &str,
    s: tonic::Status,
) -> RuntimeError {
    match s.code() {
        Code::NotFound => RuntimeError::NotFound {
            kind,
            id: id.to_string(),
        },
        Code::Unavailable => RuntimeError::Unavailable(s.message().to_string()),
        Code::InvalidArgument => RuntimeError::InvalidConfig(s.message().to_string()),
        Code::Unimplemented => RuntimeError::Failed {
            op,
            message: format!("not implemented by the runtime: {}", s.message()),
        },
        _ if is_transport(&s) => RuntimeError::Unavailable(s.message().to_string()),
        _ => RuntimeError::Failed {
            op,
            message: s.message().to_string(),
        },
    }
}

/// Whether an error of a stop/remove call means the object is already gone.
fn is_gone(s: &tonic::Status) -> bool {
    s.code() == Code::NotFound
        || (matches!(s.code(), Code::Unknown | Code::Internal)
            && s.message().to_ascii_lowercase().contains("not found"))
}

/// [`ContainerRuntime`] over CRI v1. Cheap to clone.
#[derive(Clone)]
pub struct CriRuntime {
    inner: Arc<Inner>,
}

struct Inner {
    opts: CriOptions,
    runtime: Conn,
    /// `None` when images are served by the runtime endpoint.
    image: Option<Conn>,
    version: RuntimeVersion,
    events: Option<broadcast::Sender<ContainerEvent>>,
    events_task: Option<tokio::task::JoinHandle<()>>,
    cache: cache::StatusCache,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(t) = &self.events_task {
            t.abort();
        }
    }
}

impl std::fmt::Debug for CriRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CriRuntime")
            .field("endpoint", &self.inner.runtime.endpoint)
            .field("version", &self.inner.version)
            .finish()
    }
}

impl CriRuntime {
    /// Connects to a CRI runtime at `unix:///path` and checks that it serves CRI v1.
    ///
    /// Fails with [`RuntimeError::Unavailable`] when the socket cannot be reached and with
    /// [`RuntimeError::InvalidConfig`] when the runtime does not speak CRI v1.
    pub async fn connect(endpoint: &str, opts: CriOptions) -> Result<CriRuntime> {
        let runtime = Conn::open(endpoint, &opts).await?;
        let image = match &opts.image_endpoint {
            Some(e) if e != endpoint => Some(Conn::open(e, &opts).await?),
            _ => None,
        };
        let version = check_version(&runtime, opts.request_timeout).await?;
        info!(
            endpoint,
            runtime = %version.runtime_name,
            version = %version.runtime_version,
            "connected to the CRI runtime"
        );
        if let Some(img) = &image {
            // The image service has no Version: one cheap call proves it is there.
            img.call("ImageFsInfo", |ch| async move {
                ImageServiceClient::new(ch)
                    .image_fs_info(with_timeout(
                        cri::ImageFsInfoRequest {},
                        Some(opts.request_timeout),
                    ))
                    .await
            })
            .await
            .map_err(|s| map_status("ImageFsInfo", "image service", &img.endpoint, s))?;
        }
        let (events, events_task) = if opts.events {
            match open_events(&runtime.channel).await {
                Ok(stream) => {
                    let (tx, _) = broadcast::channel(1024);
                    let task = tokio::spawn(follow_events(
                        runtime.channel.clone(),
                        stream,
                        tx.clone(),
                        opts.clone(),
                    ));
                    (Some(tx), Some(task))
                }
                Err(s) => {
                    debug!("no container events from the runtime: {s}");
                    (None, None)
                }
            }
        } else {
            (None, None)
        };
        Ok(CriRuntime {
            inner: Arc::new(Inner {
                opts,
                runtime,
                image,
                version,
                events,
                events_task,
                cache: cache::StatusCache::default(),
            }),
        })
    }

    /// The version the runtime reported when connecting.
    pub fn connected_version(&self) -> &RuntimeVersion {
        &self.inner.version
    }

    /// The runtime's cgroup driver as CRI `RuntimeConfig` reports it, asked as kubelet does at
    /// start: up to 3 attempts 2 s apart while the call fails with anything but
    /// `Unimplemented` (a runtime still starting); see [`convert::cgroup_driver_from_cri`].
    pub async fn cgroup_driver(&self) -> Result<convert::ReportedCgroupDriver> {
        let t = self.timeout();
        let mut attempt = 1;
        let answer = loop {
            let answer = self
                .rt()
                .call("RuntimeConfig", |ch| async move {
                    RuntimeServiceClient::new(ch)
                        .runtime_config(with_timeout(cri::RuntimeConfigRequest {}, t))
                        .await
                })
                .await;
            match &answer {
                Err(s) if s.code() != Code::Unimplemented && attempt < 3 => {
                    debug!(attempt, "CRI RuntimeConfig failed: {s}; retrying");
                    attempt += 1;
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                _ => break answer,
            }
        };
        convert::cgroup_driver_from_cri(answer)
    }

    fn rt(&self) -> &Conn {
        &self.inner.runtime
    }

    fn img(&self) -> &Conn {
        self.inner.image.as_ref().unwrap_or(&self.inner.runtime)
    }

    fn timeout(&self) -> Option<Duration> {
        Some(self.inner.opts.request_timeout)
    }

    /// Calls sent to the runtime (and the image service) since [`CriRuntime::connect`], by CRI
    /// method, including the `Version` call of `connect`. Calls refused by the back-off gate
    /// while the runtime is down are not counted; the `GetContainerEvents` stream is not either.
    pub fn rpc_counts(&self) -> BTreeMap<&'static str, u64> {
        let mut out = BTreeMap::new();
        let conns = std::iter::once(&self.inner.runtime).chain(self.inner.image.as_ref());
        for conn in conns {
            let calls = conn.calls.lock().unwrap_or_else(|e| e.into_inner());
            for (op, n) in calls.iter() {
                *out.entry(*op).or_default() += n;
            }
        }
        out
    }

    /// How many container and sandbox statuses are cached.
    pub fn cached_statuses(&self) -> (usize, usize) {
        self.inner.cache.len()
    }

    /// The sandbox of container `id`: cached (it never changes), else from `ListContainers`.
    async fn sandbox_of(&self, id: &str) -> Result<String> {
        if let Some(sb) = self.inner.cache.container_sandbox(id) {
            return Ok(sb);
        }
        let filter_id = id.to_string();
        let t = self.timeout();
        let list = self
            .rt()
            .call("ListContainers", |ch| async move {
                RuntimeServiceClient::new(ch)
                    .list_containers(with_timeout(
                        cri::ListContainersRequest {
                            filter: Some(cri::ContainerFilter {
                                id: filter_id,
                                ..Default::default()
                            }),
                        },
                        t,
                    ))
                    .await
            })
            .await
            .map_err(|e| map_status("ListContainers", "container", id, e))?;
        Ok(list
            .containers
            .into_iter()
            .find(|c| c.id == id)
            .map(|c| c.pod_sandbox_id)
            .unwrap_or_default())
    }

    async fn raw_container_status(&self, id: &str) -> Result<cri::ContainerStatus> {
        let t = self.timeout();
        let resp = self
            .rt()
            .call("ContainerStatus", |ch| async move {
                RuntimeServiceClient::new(ch)
                    .container_status(with_timeout(
                        cri::ContainerStatusRequest {
                            container_id: id.to_string(),
                            verbose: false,
                        },
                        t,
                    ))
                    .await
            })
            .await
            .map_err(|e| map_status("ContainerStatus", "container", id, e))?;
        resp.status.ok_or_else(|| RuntimeError::Failed {
            op: "ContainerStatus",
            message: format!("runtime returned no status for container {id}"),
        })
    }

    async fn raw_sandbox_status(&self, id: &str) -> Result<cri::PodSandboxStatus> {
        let t = self.timeout();
        let resp = self
            .rt()
            .call("PodSandboxStatus", |ch| async move {
                RuntimeServiceClient::new(ch)
                    .pod_sandbox_status(with_timeout(
                        cri::PodSandboxStatusRequest {
                            pod_sandbox_id: id.to_string(),
                            verbose: false,
                        },
                        t,
                    ))
                    .await
            })
            .await
            .map_err(|e| map_status("PodSandboxStatus", "sandbox", id, e))?;
        resp.status.ok_or_else(|| RuntimeError::Failed {
            op: "PodSandboxStatus",
            message: format!("runtime returned no status for sandbox {id}"),
        })
    }

    async fn raw_image_status(&self, image: &ImageSpec) -> Result<Option<cri::Image>> {
        let t = self.timeout();
        let resp = self
            .img()
            .call("ImageStatus", |ch| async move {
                ImageServiceClient::new(ch)
                    .image_status(with_timeout(
                        cri::ImageStatusRequest {
                            image: Some(convert::image_spec(image)),
                            verbose: false,
                        },
                        t,
                    ))
                    .await
            })
            .await
            .map_err(|e| map_status("ImageStatus", "image", &image.image, e))?;
        Ok(resp.image)
    }
}

async fn check_version(conn: &Conn, timeout: Duration) -> Result<RuntimeVersion> {
    let v = conn
        .call("Version", |ch| async move {
            RuntimeServiceClient::new(ch)
                .version(with_timeout(
                    cri::VersionRequest {
                        version: CRI_API_VERSION.into(),
                    },
                    Some(timeout),
                ))
                .await
        })
        .await;
    version_from_cri(&conn.endpoint, v)
}

/// Checks a `Version` answer: only runtimes serving CRI v1 are accepted.
pub fn version_from_cri(
    endpoint: &str,
    v: Result<cri::VersionResponse, tonic::Status>,
) -> Result<RuntimeVersion> {
    let v = v.map_err(|s| match s.code() {
        Code::Unimplemented => RuntimeError::InvalidConfig(format!(
            "{endpoint}: the runtime does not serve CRI {CRI_API_VERSION} ({})",
            s.message()
        )),
        _ => map_status("Version", "runtime", endpoint, s),
    })?;
    if v.runtime_api_version != CRI_API_VERSION {
        return Err(RuntimeError::InvalidConfig(format!(
            "{endpoint}: the runtime speaks CRI {:?}, staticlet needs {CRI_API_VERSION}",
            v.runtime_api_version
        )));
    }
    Ok(RuntimeVersion {
        runtime_name: v.runtime_name,
        runtime_version: v.runtime_version,
        api_version: v.runtime_api_version,
    })
}

async fn open_events(
    ch: &Channel,
) -> Result<tonic::Streaming<cri::ContainerEventResponse>, tonic::Status> {
    Ok(RuntimeServiceClient::new(ch.clone())
        .get_container_events(cri::GetEventsRequest {})
        .await?
        .into_inner())
}

/// Forwards the runtime's container events, reopening the stream (with back-off) when it ends.
async fn follow_events(
    ch: Channel,
    mut stream: tonic::Streaming<cri::ContainerEventResponse>,
    tx: broadcast::Sender<ContainerEvent>,
    opts: CriOptions,
) {
    let mut delay = opts.min_backoff;
    loop {
        loop {
            match stream.message().await {
                Ok(Some(e)) => {
                    delay = opts.min_backoff;
                    // No receiver is fine: events only speed the agent up.
                    let _ = tx.send(convert::event_from_cri(e));
                }
                Ok(None) => break,
                Err(s) => {
                    debug!("container event stream ended: {s}");
                    break;
                }
            }
        }
        stream = loop {
            tokio::time::sleep(delay).await;
            delay = delay.saturating_mul(2).min(opts.max_backoff);
            match open_events(&ch).await {
                Ok(s) => break s,
                Err(s) if s.code() == Code::Unimplemented => {
                    warn!("the runtime no longer serves container events: {s}");
                    return;
                }
                Err(_) => continue,
            }
        };
    }
}

fn ensure_dir(dir: &Path, what: &str) -> Result<()> {
    if dir.as_os_str().is_empty() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(|e| RuntimeError::Failed {
        op: "create log directory",
        message: format!("{what} {}: {e}", dir.display()),
    })
}

#[async_trait]
impl ContainerRuntime for CriRuntime {
    async fn version(&self) -> Result<RuntimeVersion> {
        check_version(self.rt(), self.inner.opts.request_timeout).await
    }

    async fn status(&self) -> Result<RuntimeStatus> {
        let t = self.timeout();
        let resp = self
            .rt()
            .call("Status", |ch| async move {
                RuntimeServiceClient::new(ch)
                    .status(with_timeout(cri::StatusRequest { verbose: false }, t))
                    .await
            })
            .await
            .map_err(|e| map_status("Status", "runtime", "", e))?;
        Ok(convert::runtime_status_from_cri(resp.status))
    }

    async fn run_pod_sandbox(&self, config: &SandboxConfig) -> Result<SandboxId> {
        let cfg = convert::sandbox_config(config)?;
        ensure_dir(&config.log_directory, "pod log directory")?;
        let t = self.timeout();
        let resp = self
            .rt()
            .call("RunPodSandbox", |ch| async move {
                RuntimeServiceClient::new(ch)
                    .run_pod_sandbox(with_timeout(
                        cri::RunPodSandboxRequest {
                            config: Some(cfg),
                            runtime_handler: config.runtime_handler.clone(),
                        },
                        t,
                    ))
                    .await
            })
            .await
            .map_err(|e| map_status("RunPodSandbox", "sandbox", &config.name, e))?;
        Ok(SandboxId(resp.pod_sandbox_id))
    }

    async fn stop_pod_sandbox(&self, id: &SandboxId) -> Result<()> {
        let t = self.timeout();
        let res = self
            .rt()
            .call("StopPodSandbox", |ch| async move {
                RuntimeServiceClient::new(ch)
                    .stop_pod_sandbox(with_timeout(
                        cri::StopPodSandboxRequest {
                            pod_sandbox_id: id.0.clone(),
                        },
                        t,
                    ))
                    .await
            })
            .await;
        self.inner.cache.forget_sandbox(&id.0, false);
        match res {
            Ok(_) => Ok(()),
            Err(s) if is_gone(&s) => Ok(()),
            Err(s) => Err(map_status("StopPodSandbox", "sandbox", &id.0, s)),
        }
    }

    async fn remove_pod_sandbox(&self, id: &SandboxId) -> Result<()> {
        let t = self.timeout();
        let res = self
            .rt()
            .call("RemovePodSandbox", |ch| async move {
                RuntimeServiceClient::new(ch)
                    .remove_pod_sandbox(with_timeout(
                        cri::RemovePodSandboxRequest {
                            pod_sandbox_id: id.0.clone(),
                        },
                        t,
                    ))
                    .await
            })
            .await;
        self.inner.cache.forget_sandbox(&id.0, true);
        match res {
            Ok(_) => Ok(()),
            Err(s) if is_gone(&s) => Ok(()),
            Err(s) => Err(map_status("RemovePodSandbox", "sandbox", &id.0, s)),
        }
    }

    async fn pod_sandbox_status(&self, id: &SandboxId) -> Result<SandboxStatus> {
        // Asked for by id: always fresh; the answer refreshes the cache.
        match self.raw_sandbox_status(&id.0).await {
            Ok(status) => {
                self.inner.cache.put_sandbox(&status);
                Ok(convert::sandbox_status_from_cri(status))
            }
            Err(e) => {
                if matches!(e, RuntimeError::NotFound { .. }) {
                    self.inner.cache.forget_sandbox(&id.0, true);
                }
                Err(e)
            }
        }
    }

    async fn list_pod_sandboxes(&self, selector: &LabelSelector) -> Result<Vec<SandboxStatus>> {
        let t = self.timeout();
        let resp = self
            .rt()
            .call("ListPodSandbox", |ch| async move {
                RuntimeServiceClient::new(ch)
                    .list_pod_sandbox(with_timeout(
                        cri::ListPodSandboxRequest {
                            filter: Some(cri::PodSandboxFilter {
                                label_selector: convert::label_filter(selector),
                                ..Default::default()
                            }),
                        },
                        t,
                    ))
                    .await
            })
            .await
            .map_err(|e| map_status("ListPodSandbox", "sandbox", "", e))?;
        // The list has no IPs: the status has, cached while the sandbox keeps its state.
        let mut out = Vec::with_capacity(resp.items.len());
        let mut listed = HashSet::with_capacity(resp.items.len());
        for item in resp.items {
            listed.insert(item.id.clone());
            let raw = match self.inner.cache.sandbox(&item.id, item.state) {
                Some(s) => s,
                None => match self.raw_sandbox_status(&item.id).await {
                    Ok(s) => {
                        self.inner.cache.put_sandbox(&s);
                        s
                    }
                    Err(RuntimeError::NotFound { .. }) => {
                        // Removed meanwhile.
                        self.inner.cache.forget_sandbox(&item.id, true);
                        continue;
                    }
                    Err(e) => return Err(e),
                },
            };
            let status = convert::sandbox_status_from_cri(raw);
            // Runtimes filter on labels already; check again in case one does not.
            if selector.matches(&status.labels) {
                out.push(status);
            }
        }
        self.inner.cache.prune_sandboxes(selector, &listed);
        out.sort_by_key(|s| s.created_at);
        Ok(out)
    }

    async fn image_status(&self, image: &ImageSpec) -> Result<Option<Image>> {
        match self.raw_image_status(image).await {
            Ok(i) => Ok(i.map(convert::image_from_cri)),
            Err(RuntimeError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn pull_image(&self, image: &ImageSpec, auth: Option<&AuthConfig>) -> Result<String> {
        let t = self.inner.opts.pull_timeout;
        let resp = self
            .img()
            .call("PullImage", |ch| async move {
                ImageServiceClient::new(ch)
                    .pull_image(with_timeout(
                        cri::PullImageRequest {
                            image: Some(convert::image_spec(image)),
                            auth: auth.map(convert::auth_config),
                            sandbox_config: None,
                        },
                        t,
                    ))
                    .await
            })
            .await
            .map_err(|s| {
                if is_transport(&s) {
                    RuntimeError::Unavailable(s.message().to_string())
                } else {
                    RuntimeError::ImagePull {
                        image: image.image.clone(),
                        message: s.message().to_string(),
                    }
                }
            })?;
        Ok(resp.image_ref)
    }

    async fn list_images(&self) -> Result<Vec<Image>> {
        let t = self.timeout();
        let resp = self
            .img()
            .call("ListImages", |ch| async move {
                ImageServiceClient::new(ch)
                    .list_images(with_timeout(cri::ListImagesRequest { filter: None }, t))
                    .await
            })
            .await
            .map_err(|e| map_status("ListImages", "image", "", e))?;
        Ok(resp
            .images
            .into_iter()
            .map(convert::image_from_cri)
            .collect())
    }

    async fn remove_image(&self, image: &ImageSpec) -> Result<()> {
        let t = self.timeout();
        let res = self
            .img()
            .call("RemoveImage", |ch| async move {
                ImageServiceClient::new(ch)
                    .remove_image(with_timeout(
                        cri::RemoveImageRequest {
                            image: Some(convert::image_spec(image)),
                        },
                        t,
                    ))
                    .await
            })
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(s) if is_gone(&s) => Ok(()),
            Err(s) => Err(map_status("RemoveImage", "image", &image.image, s)),
        }
    }

    async fn create_container(
        &self,
        sandbox: &SandboxId,
        config: &ContainerConfig,
        sandbox_config: &SandboxConfig,
    ) -> Result<ContainerId> {
        let cfg = convert::container_config(config, sandbox_config)?;
        let sandbox_cfg = convert::sandbox_config(sandbox_config)?;
        if config.security.run_as_non_root {
            let image = if config.security.run_as_user.is_none() {
                self.raw_image_status(&config.image).await?
            } else {
                None
            };
            if let Some(why) = convert::run_as_non_root_violation(&config.security, image.as_ref())
            {
                return Err(RuntimeError::InvalidConfig(why));
            }
        }
        if !sandbox_config.log_directory.as_os_str().is_empty() {
            if let Some(parent) = sandbox_config.log_directory.join(&config.log_path).parent() {
                ensure_dir(parent, "container log directory")?;
            }
        }
        let labels = cfg.labels.clone();
        let t = self.timeout();
        let resp = self
            .rt()
            .call("CreateContainer", |ch| async move {
                RuntimeServiceClient::new(ch)
                    .create_container(with_timeout(
                        cri::CreateContainerRequest {
                            pod_sandbox_id: sandbox.0.clone(),
                            config: Some(cfg),
                            sandbox_config: Some(sandbox_cfg),
                        },
                        t,
                    ))
                    .await
            })
            .await
            .map_err(|e| map_status("CreateContainer", "sandbox", &sandbox.0, e))?;
        self.inner
            .cache
            .created_container(&resp.container_id, &sandbox.0, labels);
        Ok(ContainerId(resp.container_id))
    }

    async fn start_container(&self, id: &ContainerId) -> Result<()> {
        let t = self.timeout();
        let res = self
            .rt()
            .call("StartContainer", |ch| async move {
                RuntimeServiceClient::new(ch)
                    .start_container(with_timeout(
                        cri::StartContainerRequest {
                            container_id: id.0.clone(),
                        },
                        t,
                    ))
                    .await
            })
            .await;
        // Started or failed to: either way its CREATED record is out of date.
        self.inner.cache.invalidate_container(&id.0);
        res.map_err(|e| map_status("StartContainer", "container", &id.0, e))?;
        Ok(())
    }

    async fn stop_container(&self, id: &ContainerId, timeout: Duration) -> Result<()> {
        // The call itself may take the whole grace period, plus the kill.
        let t = self.timeout().map(|t| t + timeout);
        let res = self
            .rt()
            .call("StopContainer", |ch| async move {
                RuntimeServiceClient::new(ch)
                    .stop_container(with_timeout(
                        cri::StopContainerRequest {
                            container_id: id.0.clone(),
                            timeout: convert::timeout_secs(timeout),
                        },
                        t,
                    ))
                    .await
            })
            .await;
        // Whatever the answer, the container may have changed: its next status is fetched.
        self.inner.cache.invalidate_container(&id.0);
        match res {
            Ok(_) => Ok(()),
            Err(s) if is_gone(&s) => Ok(()),
            Err(s) => Err(map_status("StopContainer", "container", &id.0, s)),
        }
    }

    async fn remove_container(&self, id: &ContainerId) -> Result<()> {
        let t = self.timeout();
        let res = self
            .rt()
            .call("RemoveContainer", |ch| async move {
                RuntimeServiceClient::new(ch)
                    .remove_container(with_timeout(
                        cri::RemoveContainerRequest {
                            container_id: id.0.clone(),
                        },
                        t,
                    ))
                    .await
            })
            .await;
        self.inner.cache.forget_container(&id.0);
        match res {
            Ok(_) => Ok(()),
            Err(s) if is_gone(&s) => Ok(()),
            Err(s) => Err(map_status("RemoveContainer", "container", &id.0, s)),
        }
    }

    async fn container_status(&self, id: &ContainerId) -> Result<ContainerStatus> {
        // Asked for by id: always fresh; the answer refreshes the cache.
        let raw = match self.raw_container_status(&id.0).await {
            Ok(s) => s,
            Err(e) => {
                if matches!(e, RuntimeError::NotFound { .. }) {
                    self.inner.cache.forget_container(&id.0);
                }
                return Err(e);
            }
        };
        let sandbox_id = self.sandbox_of(&id.0).await?;
        if !sandbox_id.is_empty() {
            self.inner.cache.put_container(&raw, &sandbox_id);
        }
        Ok(convert::container_status_from_cri(raw, sandbox_id))
    }

    async fn list_container_stats(&self, selector: &LabelSelector) -> Result<Vec<ContainerStats>> {
        let t = self.timeout();
        let resp = self
            .rt()
            .call("ListContainerStats", |ch| async move {
                RuntimeServiceClient::new(ch)
                    .list_container_stats(with_timeout(
                        cri::ListContainerStatsRequest {
                            filter: Some(cri::ContainerStatsFilter {
                                label_selector: convert::label_filter(selector),
                                ..Default::default()
                            }),
                        },
                        t,
                    ))
                    .await
            })
            .await
            .map_err(|e| map_status("ListContainerStats", "container", "", e))?;
        let now = std::time::SystemTime::now();
        Ok(resp
            .stats
            .into_iter()
            .filter_map(|s| convert::container_stats_from_cri(s, now))
            .collect())
    }

    async fn list_containers(&self, selector: &LabelSelector) -> Result<Vec<ContainerStatus>> {
        let t = self.timeout();
        let resp = self
            .rt()
            .call("ListContainers", |ch| async move {
                RuntimeServiceClient::new(ch)
                    .list_containers(with_timeout(
                        cri::ListContainersRequest {
                            filter: Some(cri::ContainerFilter {
                                label_selector: convert::label_filter(selector),
                                ..Default::default()
                            }),
                        },
                        t,
                    ))
                    .await
            })
            .await
            .map_err(|e| map_status("ListContainers", "container", "", e))?;
        // The list has no exit codes or times: the status has, cached while the container keeps
        // its state. The sandbox id comes from the list (CRI's status lacks it).
        let mut out = Vec::with_capacity(resp.containers.len());
        let mut listed = HashSet::with_capacity(resp.containers.len());
        for c in resp.containers {
            listed.insert(c.id.clone());
            let raw = match self.inner.cache.container(&c.id, c.state) {
                Some(s) => s,
                None => match self.raw_container_status(&c.id).await {
                    Ok(s) => {
                        self.inner.cache.put_container(&s, &c.pod_sandbox_id);
                        s
                    }
                    Err(RuntimeError::NotFound { .. }) => {
                        // Removed meanwhile.
                        self.inner.cache.forget_container(&c.id);
                        continue;
                    }
                    Err(e) => return Err(e),
                },
            };
            let status = convert::container_status_from_cri(raw, c.pod_sandbox_id);
            if selector.matches(&status.labels) {
                out.push(status);
            }
        }
        self.inner.cache.prune_containers(selector, &listed);
        out.sort_by_key(|s| s.created_at);
        Ok(out)
    }

    async fn exec_sync(
        &self,
        id: &ContainerId,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<ExecResult> {
        let t = self.timeout().map(|t| t + timeout);
        let resp = self
            .rt()
            .call("ExecSync", |ch| async move {
                RuntimeServiceClient::new(ch)
                    .exec_sync(with_timeout(
                        cri::ExecSyncRequest {
                            container_id: id.0.clone(),
                            cmd: cmd.to_vec(),
                            timeout: convert::timeout_secs(timeout),
                        },
                        t,
                    ))
                    .await
            })
            .await
            .map_err(|e| map_status("ExecSync", "container", &id.0, e))?;
        Ok(ExecResult {
            stdout: resp.stdout,
            stderr: resp.stderr,
            exit_code: resp.exit_code,
        })
    }

    async fn exec_url(&self, id: &ContainerId, req: &ExecRequest) -> Result<Option<String>> {
        let t = self.timeout();
        let resp = self
            .rt()
            .call("Exec", |ch| async move {
                RuntimeServiceClient::new(ch)
                    .exec(with_timeout(
                        cri::ExecRequest {
                            container_id: id.0.clone(),
                            cmd: req.cmd.clone(),
                            tty: req.tty,
                            stdin: req.stdin,
                            stdout: req.stdout,
                            // Under a terminal stderr is merged into stdout: CRI rejects both.
                            stderr: req.stderr && !req.tty,
                        },
                        t,
                    ))
                    .await
            })
            .await
            .map_err(|e| map_status("Exec", "container", &id.0, e))?;
        convert::streaming_url(&resp.url)
            .map(Some)
            .map_err(|message| RuntimeError::Failed {
                op: "Exec",
                message: format!("container {id}: {message}"),
            })
    }

    async fn attach_url(&self, id: &ContainerId, req: &AttachRequest) -> Result<Option<String>> {
        let t = self.timeout();
        let resp = self
            .rt()
            .call("Attach", |ch| async move {
                RuntimeServiceClient::new(ch)
                    .attach(with_timeout(
                        cri::AttachRequest {
                            container_id: id.0.clone(),
                            tty: req.tty,
                            stdin: req.stdin,
                            stdout: req.stdout,
                            // As for exec: one stream under a terminal.
                            stderr: req.stderr && !req.tty,
                        },
                        t,
                    ))
                    .await
            })
            .await
            .map_err(|e| map_status("Attach", "container", &id.0, e))?;
        convert::streaming_url(&resp.url)
            .map(Some)
            .map_err(|message| RuntimeError::Failed {
                op: "Attach",
                message: format!("container {id}: {message}"),
            })
    }

    async fn port_forward_url(&self, sandbox: &SandboxId, ports: &[u16]) -> Result<Option<String>> {
        let t = self.timeout();
        let resp = self
            .rt()
            .call("PortForward", |ch| async move {
                RuntimeServiceClient::new(ch)
                    .port_forward(with_timeout(
                        cri::PortForwardRequest {
                            pod_sandbox_id: sandbox.0.clone(),
                            port: ports.iter().map(|&p| i32::from(p)).collect(),
                        },
                        t,
                    ))
                    .await
            })
            .await
            .map_err(|e| map_status("PortForward", "sandbox", &sandbox.0, e))?;
        convert::streaming_url(&resp.url)
            .map(Some)
            .map_err(|message| RuntimeError::Failed {
                op: "PortForward",
                message: format!("sandbox {sandbox}: {message}"),
            })
    }

    fn subscribe_events(&self) -> Option<broadcast::Receiver<ContainerEvent>> {
        self.inner.events.as_ref().map(broadcast::Sender::subscribe)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_table() {
        for (e, want) in [
            (
                "unix:///run/containerd/containerd.sock",
                Some("/run/containerd/containerd.sock"),
            ),
            ("unix://relative.sock", None),
            ("/run/containerd/containerd.sock", None),
            ("tcp://127.0.0.1:1234", None),
        ] {
            assert_eq!(socket_path(e).ok(), want.map(PathBuf::from), "{e}");
        }
    }

    #[test]
    fn status_mapping_table() {
        type Check = fn(&RuntimeError) -> bool;
        let table: Vec<(tonic::Status, Check)> = vec![
            (
                tonic::Status::not_found("x"),
                |e| matches!(e, RuntimeError::NotFound { kind: "container", id } if id == "c1"),
            ),
            (
                tonic::Status::unavailable("down"),
                |e| matches!(e, RuntimeError::Unavailable(m) if m == "down"),
            ),
            (
                tonic::Status::invalid_argument("bad"),
                |e| matches!(e, RuntimeError::InvalidConfig(m) if m == "bad"),
            ),
            (
                tonic::Status::unknown("failed to create containerd task: boom"),
                |e| matches!(e, RuntimeError::Failed { op: "StartContainer", message } if message.contains("boom")),
            ),
            (tonic::Status::unknown("transport error"), |e| {
                matches!(e, RuntimeError::Unavailable(_))
            }),
        ];
        for (s, ok) in table {
            let msg = format!("{s:?}");
            let e = map_status("StartContainer", "container", "c1", s);
            assert!(ok(&e), "{msg} -> {e:?}");
        }
        assert!(is_gone(&tonic::Status::not_found("x")));
        assert!(is_gone(&tonic::Status::unknown(
            "an error occurred when try to find sandbox \"x\": not found"
        )));
        assert!(!is_gone(&tonic::Status::unknown("boom")));
        assert!(!is_gone(&tonic::Status::unavailable("not found")));
    }

    #[test]
    fn version_table() {
        let resp = |api: &str| {
            Ok(cri::VersionResponse {
                version: "0.1.0".into(),
                runtime_name: "containerd".into(),
                runtime_version: "1.6.20".into(),
                runtime_api_version: api.into(),
            })
        };
        let ok = version_from_cri("unix:///s", resp("v1")).unwrap();
        assert_eq!(
            (
                ok.runtime_name.as_str(),
                ok.runtime_version.as_str(),
                ok.api_version.as_str()
            ),
            ("containerd", "1.6.20", "v1")
        );
        for (v, want) in [
            (resp("v1alpha2"), "speaks CRI \"v1alpha2\""),
            (resp(""), "speaks CRI \"\""),
            (
                Err(tonic::Status::unimplemented(
                    "unknown service runtime.v1.RuntimeService",
                )),
                "does not serve CRI v1",
            ),
        ] {
            let e = version_from_cri("unix:///s", v).unwrap_err();
            assert!(
                matches!(&e, RuntimeError::InvalidConfig(m) if m.contains(want) && m.starts_with("unix:///s")),
                "{e:?}"
            );
        }
        assert!(matches!(
            version_from_cri("unix:///s", Err(tonic::Status::unavailable("refused"))),
            Err(RuntimeError::Unavailable(_))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn gate_backs_off_and_resets() {
        let g = Gate::new(Duration::from_millis(100), Duration::from_millis(400));
        assert!(g.check().is_ok());
        let mut delays = Vec::new();
        for _ in 0..5 {
            g.record(Some("down"));
            assert!(matches!(g.check(), Err(RuntimeError::Unavailable(m)) if m.contains("down")));
            let start = Instant::now();
            while g.check().is_err() {
                tokio::time::advance(Duration::from_millis(10)).await;
            }
            delays.push(start.elapsed().as_millis());
        }
        assert_eq!(delays, [100, 200, 400, 400, 400]);
        g.record(None);
        assert!(g.check().is_ok());
        g.record(Some("down again"));
        let start = Instant::now();
        while g.check().is_err() {
            tokio::time::advance(Duration::from_millis(10)).await;
        }
        assert_eq!(start.elapsed().as_millis(), 100);
    }

    #[tokio::test]
    async fn connect_to_a_missing_socket_is_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let ep = format!("unix://{}/none.sock", dir.path().display());
        let err = CriRuntime::connect(&ep, CriOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(err, RuntimeError::Unavailable(_)), "{err:?}");
        let err = CriRuntime::connect("tcp://x", CriOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(err, RuntimeError::InvalidConfig(_)), "{err:?}");
    }
}
