//! staticlet's embedded container runtime: [`EmbeddedRuntime`] implements the agent's
//! [`ContainerRuntime`] with no daemon behind it.
//!
//! - Images come from the content-addressed store of `staticlet-images`.
//! - A pod sandbox is a directory plus pinned namespaces (network, IPC, UTS bind-mounted onto
//!   files, created by a forked child, see [`ns`]): no pause process. Containers join them by path.
//! - A container is an OCI bundle ([`spec`]) over an overlayfs root (copy fallback), run by a
//!   per-container shim process (`staticlet-shim`), which owns stdio, writes CRI-format logs and
//!   records the exit status. Shims outlive the agent; everything the runtime knows is on disk
//!   under `<root-dir>/runtime`, so a restarted agent finds every sandbox and container again.
//! - Commands in containers (`exec_sync`, and interactive `exec` with streams and an optional
//!   terminal, see `interactive`) run under the shim's exec helper as async children of the
//!   agent; port forwarding connects to the sandbox's loopback from inside its pinned network
//!   namespace (`portforward`). The runtime serves both itself: no streaming URL.
//!
//! **Architecture invariant:** this crate never calls libcontainer; only shim processes do (it
//! must run in a single-threaded process). It re-executes the agent's binary in shim mode.
//!
//! Layout under `<root-dir>/runtime` (the directory is a private bind mount of itself, so the
//! namespace bind mounts in it do not propagate):
//! - `sandboxes/<id>/{sandbox.json, hostname, resolv.conf, ns/{net,ipc,uts}}` (`/etc/hosts` is
//!   the agent's: a mount in each `ContainerConfig`)
//! - `containers/<id>/{container.json, bundle/config.json, rootfs/, upper/, work/, shim/,
//!   termination-log}`
//! - `libcontainer/`: libcontainer's state root.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use staticlet_images::ImageStore;
use staticlet_runtime::{
    labels, AttachRequest, AuthConfig, ContainerConfig, ContainerEvent, ContainerId,
    ContainerRuntime, ContainerState, ContainerStats, ContainerStatus, ExecIo, ExecRequest,
    ExecResult, Image, ImageSpec, LabelSelector, Labels, Result, RuntimeError, RuntimeStatus,
    RuntimeVersion, SandboxConfig, SandboxId, SandboxState, SandboxStatus,
};
use staticlet_shim::Reexec;
use tracing::{debug, info, warn};

mod attach;
mod execsock;
mod exits;
mod interactive;
#[allow(unsafe_code)] // fork + raw system calls in the child; see the module's docs
pub mod ns;
mod portforward;
mod prime;
mod readers;
pub mod rootfs;
pub mod spec;
pub mod stats;

/// How the runtime is set up.
#[derive(Debug, Clone)]
pub struct Config {
    /// `--root-dir`: images under `images/`, runtime state under `runtime/`.
    pub root_dir: PathBuf,
    /// How to start a shim (the agent's own binary with a shim-mode prefix).
    pub reexec: Reexec,
    /// `--cni-conf-dir`: non-hostNetwork pods need a network config there.
    pub cni_conf_dir: PathBuf,
    /// `--cni-bin-dir`: where plugin binaries are looked up, in order.
    pub cni_bin_dirs: Vec<PathBuf>,
    /// The network for pods without hostNetwork when `cni_conf_dir` holds none
    /// (`staticlet_cni::builtin`); `None`: such pods wait for a configuration.
    pub default_network: Option<staticlet_cni::NetworkConfig>,
    /// Docker `config.json` files for registry credentials; the first that exists is used.
    pub image_credentials: Vec<PathBuf>,
    /// `--insecure-registry`: `HOST:PORT`s pulled from over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// `--max-layer-size`, `--max-layer-entries`, `--max-layer-header-size`, `--max-image-size`,
    /// `--max-image-entries`: bounds on unpacking one layer, and all the layers of one image, of
    /// a pulled or imported image.
    pub image_limits: staticlet_images::UnpackLimits,
    /// `--image-pull-stall-timeout`: a registry response that sends nothing this long fails.
    pub pull_stall_timeout: std::time::Duration,
}

/// The embedded runtime. Cheap to clone.
#[derive(Clone)]
pub struct EmbeddedRuntime {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: Config,
    base: PathBuf,
    images: Arc<ImageStore>,
    puller: staticlet_images::Puller,
    cni: staticlet_cni::Cni,
    index: std::sync::Mutex<Index>,
    /// Threads for the quick reads (lists, image status, stats); the slow operations use
    /// tokio's blocking pool.
    readers: readers::Readers,
    /// Starts the cgroup-migration grace period as a container start begins.
    primer: prime::MigrationPrimer,
    /// Container exits as events.
    exits: exits::Exits,
    /// Bounds the teardown work on blocking threads ([`TEARDOWN_CONCURRENCY`]).
    teardowns: tokio::sync::Semaphore,
}

/// How many teardowns (a container's removal, a sandbox's stop or removal) run on blocking
/// threads at a time. Pods removed together end their grace periods together: without a bound
/// each one's teardown took a thread of its own at the same moment (50 pods: 48 threads for
/// about a second). Waiting for a turn holds no thread; the work is mostly unmounts and
/// directory removals, which contend in the kernel anyway.
const TEARDOWN_CONCURRENCY: usize = 4;

/// What never changes about a runtime object once it exists (its labels, a container's
/// sandbox), cached from its record so that a list for one pod (a worker's) reads only that
/// pod's files instead of every record.
#[derive(Default)]
struct Index {
    sandboxes: HashMap<String, Arc<Labels>>,
    containers: HashMap<String, (Arc<Labels>, String)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SandboxRecord {
    id: String,
    name: String,
    namespace: String,
    uid: String,
    attempt: u32,
    hostname: String,
    host_network: bool,
    host_pid: bool,
    host_ipc: bool,
    labels: Labels,
    annotations: Labels,
    created_at: SystemTime,
    ready: bool,
    ip: String,
    net_ns: Option<String>,
    ipc_ns: Option<String>,
    uts_ns: Option<String>,
    /// The shared PID namespace (shareProcessNamespace) and the process group of its holder.
    #[serde(default)]
    pid_ns: Option<String>,
    #[serde(default)]
    pid_holder: Option<i32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ContainerRecord {
    id: String,
    sandbox_id: String,
    name: String,
    attempt: u32,
    image: String,
    image_ref: String,
    labels: Labels,
    annotations: Labels,
    log_path: PathBuf,
    created_at: SystemTime,
    stop_signal: String,
    /// The container's stdio as attach serves it (Kubernetes `stdin`, `stdinOnce`, `tty`).
    #[serde(default)]
    stdin: bool,
    #[serde(default)]
    stdin_once: bool,
    #[serde(default)]
    tty: bool,
}

fn io_err(op: &'static str) -> impl Fn(io::Error) -> RuntimeError {
    move |e| RuntimeError::Failed {
        op,
        message: e.to_string(),
    }
}

fn write_json<T: Serialize>(path: &Path, v: &T) -> io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec_pretty(v).map_err(io::Error::other)?,
    )?;
    std::fs::rename(&tmp, path)
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> io::Result<T> {
    let data = std::fs::read(path)?;
    serde_json::from_slice(&data).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {e}", path.display()),
        )
    })
}

/// Removes what a runtime that died while creating a sandbox or container left: a directory
/// without its record (`sandbox.json`, `container.json`, written last but for the namespace
/// pins), which no list shows and so nobody would ever remove. Its mounts (a container's
/// rootfs overlay, a sandbox's namespace pins) go first. Runs when the runtime opens, before
/// anything is created.
fn sweep_half_created(base: &Path) {
    for (kind, record) in [
        ("containers", "container.json"),
        ("sandboxes", "sandbox.json"),
    ] {
        let Ok(entries) = std::fs::read_dir(base.join(kind)) else {
            continue;
        };
        for e in entries.flatten() {
            let dir = e.path();
            if !dir.is_dir() || dir.join(record).exists() {
                continue;
            }
            let unmounted = if kind == "containers" {
                rootfs::unmount(&dir.join("rootfs"))
            } else {
                rootfs::unmount_namespaces(&dir.join("ns"))
            };
            match unmounted.and_then(|()| std::fs::remove_dir_all(&dir)) {
                Ok(()) => {
                    info!(dir = %dir.display(), "removed a half-created {} left by a runtime that died", &kind[..kind.len() - 1])
                }
                Err(e) => {
                    warn!(dir = %dir.display(), error = %e, "cannot remove a half-created runtime object")
                }
            }
        }
    }
}

/// Marks not ready every sandbox recorded ready whose pinned namespaces are gone: its pin
/// files are the empty files they were before the namespaces were bind-mounted onto them, as
/// after a reboot (the records are on disk, the mounts were not). Such a sandbox cannot hold a
/// container any more (joining its IPC namespace fails with EINVAL), and a sandbox that is not
/// ready is replaced by the agent with its containers, as kubelet replaces a dead one. Pins only
/// vanish with the node's mounts, so this is checked once, when the runtime opens its records.
fn mark_lost_sandboxes(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base.join("sandboxes")) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path().join("sandbox.json");
        let Ok(mut rec) = read_json::<SandboxRecord>(&path) else {
            continue;
        };
        let pins = [&rec.net_ns, &rec.ipc_ns, &rec.uts_ns, &rec.pid_ns];
        let lost: Vec<String> = pins
            .into_iter()
            .flatten()
            .filter(|p| !ns::is_pinned(Path::new(p)))
            .cloned()
            .collect();
        if !rec.ready || lost.is_empty() {
            continue;
        }
        warn!(sandbox = %rec.id, pod = %rec.name, ?lost, "the sandbox's namespaces are gone (the node restarted?): marked not ready, its pod gets a new sandbox");
        rec.ready = false;
        if let Err(e) = write_json(&path, &rec) {
            warn!(sandbox = %rec.id, error = %e, "cannot mark a sandbox whose namespaces are gone not ready");
        }
    }
}

fn new_id() -> String {
    use sha2::Digest;
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let seed = format!(
        "{nanos}-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    );
    let d = sha2::Sha256::digest(seed.as_bytes());
    d[..16].iter().map(|b| format!("{b:02x}")).collect()
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| RuntimeError::Failed {
            op: "runtime task",
            message: e.to_string(),
        })?
}

impl Inner {
    /// [`blocking`] for teardown work, at most [`TEARDOWN_CONCURRENCY`] at a time.
    async fn teardown<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let _turn = self
            .teardowns
            .acquire()
            .await
            .map_err(|e| RuntimeError::Failed {
                op: "runtime task",
                message: e.to_string(),
            })?;
        blocking(f).await
    }
}

fn parse_time(s: &Option<String>) -> Option<SystemTime> {
    let s = s.as_deref()?;
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(SystemTime::from)
}

impl EmbeddedRuntime {
    /// Opens (creating) the runtime's directories under `cfg.root_dir`.
    pub fn new(cfg: Config) -> std::result::Result<Self, String> {
        let base = cfg.root_dir.join("runtime");
        for d in ["sandboxes", "containers", "libcontainer"] {
            std::fs::create_dir_all(base.join(d))
                .map_err(|e| format!("creating {}: {e}", base.join(d).display()))?;
        }
        rootfs::make_private_mount(&base.join("sandboxes")).map_err(|e| {
            format!(
                "making {} a private mount: {e}",
                base.join("sandboxes").display()
            )
        })?;
        let images =
            ImageStore::open(&cfg.root_dir).map_err(|e| format!("opening the image store: {e}"))?;
        let images = images.with_limits(cfg.image_limits);
        let mut cni = staticlet_cni::Cni::new(
            &cfg.cni_conf_dir,
            cfg.cni_bin_dirs.clone(),
            base.join("cni"),
        );
        if let Some(n) = &cfg.default_network {
            cni = cni.with_fallback(n.clone());
        }
        sweep_half_created(&base);
        mark_lost_sandboxes(&base);
        let images = Arc::new(images);
        let puller = staticlet_images::Puller::new(images.clone());
        Ok(Self {
            inner: Arc::new(Inner {
                cfg,
                base,
                images,
                puller,
                cni,
                index: Default::default(),
                readers: readers::Readers::new(2),
                primer: prime::MigrationPrimer::new(),
                exits: exits::Exits::new(),
                teardowns: tokio::sync::Semaphore::new(TEARDOWN_CONCURRENCY),
            }),
        })
    }

    /// The image store (for `staticlet images`).
    pub fn images(&self) -> &ImageStore {
        &self.inner.images
    }
}

impl Inner {
    /// Starts the PID-namespace holder of a sandbox; returns the pinned namespace file and the
    /// holder's process group. Waits until the holder runs as PID 1, so no container can become
    /// the namespace's init by joining first.
    fn start_pid_holder(&self, dir: &Path) -> std::result::Result<(String, i32), String> {
        use std::os::unix::process::CommandExt;
        let file = dir.join("ns").join("pid");
        std::fs::write(&file, b"").map_err(|e| e.to_string())?;
        let child = std::process::Command::new("unshare")
            .arg(format!("--pid={}", file.display()))
            .args(["--fork", "--"])
            .arg(&self.cfg.reexec.exe)
            .args(&self.cfg.reexec.prefix)
            .arg("pause")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("running unshare: {e}"))?;
        let pid = child.id() as i32;
        // Reap the unshare process whenever it exits, so it never lingers as a zombie.
        std::thread::spawn(move || {
            let mut child = child;
            let _ = child.wait();
        });
        let children = format!("/proc/{pid}/task/{pid}/children");
        for _ in 0..500 {
            if std::fs::read_to_string(&children).is_ok_and(|c| !c.trim().is_empty()) {
                return Ok((file.to_string_lossy().into_owned(), pid));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        Err("the PID namespace holder did not start within 5 s".into())
    }

    /// Credentials for the registry of `reference` from the first docker config file that exists.
    fn credentials_for(
        &self,
        reference: &str,
    ) -> std::result::Result<Option<staticlet_images::Credentials>, String> {
        let Some(path) = self.cfg.image_credentials.iter().find(|p| p.is_file()) else {
            return Ok(None);
        };
        let cfg = staticlet_images::load_docker_config(path).map_err(|e| e.to_string())?;
        let host = staticlet_images::Reference::parse(reference)
            .map_err(|e| e.to_string())?
            .domain;
        Ok(cfg.auth_for(&host))
    }

    /// CNI DEL for a sandbox with its own network namespace. Idempotent.
    async fn teardown_network(&self, id: &str) -> Result<()> {
        let rec = match self.load_sandbox(id) {
            Ok(r) => r,
            Err(RuntimeError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        let Some(netns) = &rec.net_ns else {
            return Ok(());
        };
        let req = staticlet_cni::AttachRequest {
            container_id: rec.id.clone(),
            netns_path: PathBuf::from(netns),
            ifname: "eth0".into(),
            pod_name: rec.name.clone(),
            pod_namespace: rec.namespace.clone(),
            pod_uid: rec.uid.clone(),
            port_mappings: vec![],
        };
        self.cni.del(&req).await.map_err(|e| RuntimeError::Failed {
            op: "stop pod sandbox",
            message: format!("tearing down the pod network: {e}"),
        })
    }

    fn sandbox_dir(&self, id: &str) -> PathBuf {
        self.base.join("sandboxes").join(id)
    }
    fn container_dir(&self, id: &str) -> PathBuf {
        self.base.join("containers").join(id)
    }

    fn load_sandbox(&self, id: &str) -> Result<SandboxRecord> {
        read_json(&self.sandbox_dir(id).join("sandbox.json")).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => RuntimeError::NotFound {
                kind: "sandbox",
                id: id.to_string(),
            },
            _ => RuntimeError::Failed {
                op: "read sandbox",
                message: e.to_string(),
            },
        })
    }

    fn load_container(&self, id: &str) -> Result<ContainerRecord> {
        read_json(&self.container_dir(id).join("container.json")).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => RuntimeError::NotFound {
                kind: "container",
                id: id.to_string(),
            },
            _ => RuntimeError::Failed {
                op: "read container",
                message: e.to_string(),
            },
        })
    }

    /// IDs of the containers whose labels and sandbox satisfy `keep` (from the index; records
    /// not indexed yet are read once).
    fn container_ids(&self, keep: impl Fn(&Labels, &str) -> bool) -> Vec<String> {
        let mut index = self.index.lock().unwrap_or_else(|e| e.into_inner());
        self.indexed(
            "containers",
            &mut index.containers,
            |id| {
                let r = self.load_container(id).ok()?;
                Some((Arc::new(r.labels), r.sandbox_id))
            },
            |(labels, sandbox)| keep(labels, sandbox),
        )
    }

    /// IDs of the sandboxes whose labels match.
    fn sandbox_ids(&self, selector: &LabelSelector) -> Vec<String> {
        let mut index = self.index.lock().unwrap_or_else(|e| e.into_inner());
        self.indexed(
            "sandboxes",
            &mut index.sandboxes,
            |id| Some(Arc::new(self.load_sandbox(id).ok()?.labels)),
            |labels| selector.matches(labels),
        )
    }

    /// The IDs under `kind` whose indexed facts satisfy `keep`: the index forgets IDs that are
    /// gone and learns new ones with `load` (an ID whose record can't be read is skipped).
    fn indexed<T>(
        &self,
        kind: &str,
        index: &mut HashMap<String, T>,
        load: impl Fn(&str) -> Option<T>,
        keep: impl Fn(&T) -> bool,
    ) -> Vec<String> {
        let ids = self.ids(kind);
        index.retain(|id, _| ids.binary_search(id).is_ok());
        ids.into_iter()
            .filter(|id| {
                if !index.contains_key(id) {
                    match load(id) {
                        Some(v) => {
                            index.insert(id.clone(), v);
                        }
                        None => return false,
                    }
                }
                keep(&index[id])
            })
            .collect()
    }

    fn ids(&self, kind: &str) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.base.join(kind))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn sandbox_status(&self, r: &SandboxRecord) -> SandboxStatus {
        SandboxStatus {
            id: SandboxId(r.id.clone()),
            name: r.name.clone(),
            namespace: r.namespace.clone(),
            uid: r.uid.clone(),
            attempt: r.attempt,
            state: if r.ready {
                SandboxState::Ready
            } else {
                SandboxState::NotReady
            },
            created_at: r.created_at,
            ip: r.ip.clone(),
            labels: r.labels.clone(),
            annotations: r.annotations.clone(),
        }
    }

    /// Reports container `id`'s exit to the event subscribers and ends its watch.
    fn report_exit(&self, id: &str) {
        self.exits.release(id);
        let Ok(rec) = self.load_container(id) else {
            return; // removed meanwhile
        };
        let st = self.container_status(&rec);
        if st.state == ContainerState::Exited {
            self.exits.send(ContainerEvent {
                container_id: st.id,
                pod_uid: rec.labels.get(labels::POD_UID).cloned().unwrap_or_default(),
                state: ContainerState::Exited,
            });
        }
    }

    /// A container seen running whose shim is gone without recording its exit (the shim was
    /// killed): nothing logs its output, records its exit or serves its attach socket any
    /// more, so it is killed (every process of its cgroups) and its exit recorded as unknown
    /// (255, as `stop` does for a container whose shim died), then reported. containerd does
    /// the same when a shim dies (its cleanup force-deletes the task). Called with the watch
    /// of `id` claimed; the report releases it.
    fn finish_orphan(self: &Arc<Self>, id: String, shim_dir: PathBuf) {
        warn!(container = %id, "the container's shim is gone without recording its exit: killing the container");
        let inner = self.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) =
                staticlet_shim::stop(&shim_dir, nix::sys::signal::Signal::SIGKILL, Duration::ZERO)
            {
                warn!(container = %id, "cannot stop the container of a dead shim: {e}");
            }
            inner.report_exit(&id);
        });
    }

    /// Watches the exits of running containers that nobody watches yet (containers whose shims
    /// an earlier agent started), through pidfds. Called with what a list or status read saw.
    fn watch_exits(self: &Arc<Self>, seen: &[ContainerStatus]) {
        if !self.exits.has_receivers() {
            return;
        }
        for st in seen {
            if st.state != ContainerState::Running || !self.exits.claim(&st.id.0) {
                continue;
            }
            let id = st.id.0.clone();
            let shim_dir = self.container_dir(&id).join("shim");
            let shim = staticlet_shim::read_state(&shim_dir);
            let fd = match shim {
                Ok(s) => match exits::open_shim(&s) {
                    Some(fd) => fd,
                    None if !s.is_exited() => {
                        self.finish_orphan(id, shim_dir);
                        continue;
                    }
                    // Exited since the read: the next read shows the exit.
                    None => {
                        self.exits.release(&id);
                        continue;
                    }
                },
                Err(_) => {
                    self.exits.release(&id);
                    continue;
                }
            };
            let inner = self.clone();
            tokio::spawn(async move {
                if let Err(e) = exits::exited(fd).await {
                    debug!(container = %id, "cannot wait for the shim's exit: {e}");
                }
                inner.report_exit(&id);
            });
        }
    }

    fn container_status(&self, r: &ContainerRecord) -> ContainerStatus {
        let shim_dir = self.container_dir(&r.id).join("shim");
        let mut st = ContainerStatus {
            id: ContainerId(r.id.clone()),
            sandbox_id: SandboxId(r.sandbox_id.clone()),
            name: r.name.clone(),
            attempt: r.attempt,
            state: ContainerState::Created,
            created_at: r.created_at,
            started_at: None,
            finished_at: None,
            exit_code: None,
            reason: String::new(),
            message: String::new(),
            image: ImageSpec {
                image: r.image.clone(),
            },
            image_ref: r.image_ref.clone(),
            labels: r.labels.clone(),
            annotations: r.annotations.clone(),
            log_path: r.log_path.clone(),
        };
        let Ok(s) = staticlet_shim::read_state(&shim_dir) else {
            return st;
        };
        st.started_at = parse_time(&s.started_at);
        st.finished_at = parse_time(&s.finished_at);
        match s.status {
            staticlet_shim::Status::Created => {}
            staticlet_shim::Status::Running => {
                if staticlet_shim::client::init_alive(&s) || staticlet_shim::client::shim_alive(&s)
                {
                    st.state = ContainerState::Running;
                } else {
                    st.state = ContainerState::Exited;
                    st.exit_code = Some(255);
                    st.reason = "Error".into();
                    st.message =
                        "the container's shim and process are gone without an exit record".into();
                    st.finished_at = st.finished_at.or(Some(SystemTime::now()));
                }
            }
            staticlet_shim::Status::Exited => {
                st.state = ContainerState::Exited;
                st.exit_code = s.exit_code;
                st.reason = match s.reason {
                    Some(staticlet_shim::Reason::Completed) => "Completed",
                    Some(staticlet_shim::Reason::OomKilled) => "OOMKilled",
                    Some(staticlet_shim::Reason::StartError) => "StartError",
                    _ => "Error",
                }
                .into();
                st.message = s.message.clone();
            }
        }
        st
    }

    fn stop_container_blocking(&self, id: &str, timeout: Duration) -> Result<()> {
        let rec = match self.load_container(id) {
            Ok(r) => r,
            Err(RuntimeError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        let shim_dir = self.container_dir(id).join("shim");
        if !staticlet_shim::state::state_path(&shim_dir).exists() {
            return Ok(()); // never started
        }
        let sig = parse_signal(&rec.stop_signal).unwrap_or(nix::sys::signal::Signal::SIGTERM);
        staticlet_shim::stop(&shim_dir, sig, timeout).map_err(io_err("stop container"))?;
        Ok(())
    }

    /// [`Self::stop_container_blocking`] without holding a thread while the container gets to
    /// exit: the signal and the SIGKILLs are sent from the reader threads (quick, never
    /// waiting), and the waits are for the shim's exit (it exits right after recording the
    /// container's) through a pidfd, bounded by the grace period, then by
    /// [`staticlet_shim::client::KILL_WAIT`] with SIGKILL repeated every
    /// [`staticlet_shim::client::KILL_STEP`]. Removing 200 pods at once used to hold one
    /// blocking thread per container for its whole grace period (207 threads).
    async fn stop_container(self: &Arc<Self>, id: &str, grace: Duration) -> Result<()> {
        use staticlet_shim::client::{self as shim, StopSignal};
        let inner = self.clone();
        let cid = id.to_string();
        let first = self
            .readers
            .run(move || {
                let rec = match inner.load_container(&cid) {
                    Ok(r) => r,
                    Err(RuntimeError::NotFound { .. }) => return Ok(None),
                    Err(e) => return Err(e),
                };
                let shim_dir = inner.container_dir(&cid).join("shim");
                if !staticlet_shim::state::state_path(&shim_dir).exists() {
                    return Ok(None); // never started
                }
                let sig =
                    parse_signal(&rec.stop_signal).unwrap_or(nix::sys::signal::Signal::SIGTERM);
                let sent = shim::stop_signal(&shim_dir, sig).map_err(io_err("stop container"))?;
                // Opened after the signal: a shim that exits in between is seen by
                // `stop_check` (no pidfd).
                let shim_fd = staticlet_shim::read_state(&shim_dir)
                    .ok()
                    .and_then(|s| exits::open_shim(&s));
                Ok(Some((shim_dir, sent, shim_fd)))
            })
            .await?;
        let Some((shim_dir, sent, shim_fd)) = first else {
            return Ok(());
        };
        let mut shim = exits::ShimExit::new(shim_fd);
        let check = |kill: bool| {
            let dir = shim_dir.clone();
            self.readers.run(move || {
                let r = if kill {
                    shim::stop_kill(&dir)
                } else {
                    shim::stop_check(&dir)
                };
                r.map(|s| s.is_some()).map_err(io_err("stop container"))
            })
        };
        if let StopSignal::Exited(_) = sent {
            return Ok(());
        }
        if let StopSignal::Sent = sent {
            let end = tokio::time::Instant::now() + grace;
            // Wakes at the shim's exit, and once a second to notice one that could not be
            // watched.
            while tokio::time::Instant::now() < end {
                let step = (tokio::time::Instant::now() + Duration::from_secs(1)).min(end);
                let gone = shim.wait_until(step).await;
                if check(false).await? {
                    return Ok(());
                }
                if gone {
                    break; // not expected: `check` records a gone shim's orphan as exited
                }
            }
        }
        let end = tokio::time::Instant::now() + shim::KILL_WAIT;
        loop {
            if check(true).await? {
                return Ok(());
            }
            if tokio::time::Instant::now() >= end {
                return Err(RuntimeError::Failed {
                    op: "stop container",
                    message: format!(
                        "container {id} did not exit within {:?} of SIGKILL",
                        shim::KILL_WAIT
                    ),
                });
            }
            let step = (tokio::time::Instant::now() + shim::KILL_STEP).min(end);
            if shim.wait_until(step).await {
                // Gone: the next check finds the exit (or records the orphan's); no busy loop
                // if it somehow does not.
                tokio::time::sleep_until(step).await;
            }
        }
    }

    fn remove_container_blocking(&self, id: &str) -> Result<()> {
        let dir = self.container_dir(id);
        if !dir.exists() {
            return Ok(());
        }
        self.stop_container_blocking(id, Duration::ZERO)?;
        // The container's own cgroups, if its shim could not delete them (before the record
        // that names them goes). The pod cgroup above them is the agent's.
        if let Ok(rec) = self.load_container(id) {
            let uid = match self.load_sandbox(&rec.sandbox_id) {
                Ok(sb) => Some(sb.uid),
                Err(_) => rec.labels.get(staticlet_runtime::labels::POD_UID).cloned(),
            };
            if let Some(uid) = uid {
                remove_container_cgroup(&container_cgroup(&uid, id));
            }
        }
        rootfs::unmount(&dir.join("rootfs")).map_err(io_err("unmount rootfs"))?;
        std::fs::remove_dir_all(&dir).map_err(io_err("remove container"))?;
        Ok(())
    }
}

/// A container's cgroup: under its pod's (`/staticlet/pod<uid>`, the agent's
/// `SandboxConfig::cgroup_parent`), named after the container.
fn container_cgroup(uid: &str, id: &str) -> String {
    format!("/staticlet/pod{uid}/{id}")
}

/// Removes a container's cgroup in every hierarchy, `rmdir` only (a cgroup still in use stays,
/// and is logged). Normally already gone: its shim deletes it when the container exits.
fn remove_container_cgroup(path: &str) {
    let mountinfo = Path::new(staticlet_runtime::cgroups::MOUNTINFO);
    match staticlet_runtime::cgroups::hierarchies(mountinfo) {
        Ok(h) => {
            for (dir, e) in staticlet_runtime::cgroups::remove(&h, path) {
                warn!(cgroup = %dir.display(), error = %e, "cannot remove container cgroup");
            }
        }
        Err(e) => warn!(error = %e, "cannot remove container cgroup {path}"),
    }
}

/// Releases the runtime's own mount of `<root-dir>/runtime/sandboxes` (after every sandbox was
/// removed), e.g. before deleting a root directory. Idempotent.
pub fn release(root_dir: &Path) -> io::Result<()> {
    rootfs::unmount(&root_dir.join("runtime/sandboxes"))
}

fn attach_request(
    rec: &SandboxRecord,
    config: &SandboxConfig,
    netns: &str,
) -> staticlet_cni::AttachRequest {
    staticlet_cni::AttachRequest {
        container_id: rec.id.clone(),
        netns_path: PathBuf::from(netns),
        ifname: "eth0".into(),
        pod_name: rec.name.clone(),
        pod_namespace: rec.namespace.clone(),
        pod_uid: rec.uid.clone(),
        port_mappings: config
            .port_mappings
            .iter()
            .filter_map(|p| {
                Some(staticlet_cni::PortMapping {
                    host_port: u16::try_from(p.host_port).ok()?,
                    container_port: u16::try_from(p.container_port).ok()?,
                    protocol: p.protocol.to_lowercase(),
                    host_ip: p.host_ip.clone(),
                })
            })
            .collect(),
    }
}

/// Parses a stop signal name (`SIGTERM`, `TERM`, `SIGRTMIN+3` is not supported) or number.
pub fn parse_signal(s: &str) -> Option<nix::sys::signal::Signal> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if let Ok(n) = s.parse::<i32>() {
        return nix::sys::signal::Signal::try_from(n).ok();
    }
    let name = if s.starts_with("SIG") {
        s.to_string()
    } else {
        format!("SIG{s}")
    };
    name.parse().ok()
}

#[async_trait]
impl ContainerRuntime for EmbeddedRuntime {
    async fn version(&self) -> Result<RuntimeVersion> {
        Ok(RuntimeVersion {
            runtime_name: "staticlet-embedded".into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            api_version: "v1".into(),
        })
    }

    async fn status(&self) -> Result<RuntimeStatus> {
        let network = self.inner.cni.status().await;
        Ok(RuntimeStatus {
            runtime_ready: true,
            network_ready: network.is_ok(),
            message: match network {
                Ok(()) => String::new(),
                Err(e) => format!("NetworkNotReady: {e} (hostNetwork pods run regardless)"),
            },
        })
    }

    async fn run_pod_sandbox(&self, config: &SandboxConfig) -> Result<SandboxId> {
        let inner = self.inner.clone();
        let config = config.clone();
        if !config.host_network {
            // Without a network plugin such pods wait, as kubelet's do.
            if let Err(e) = inner.cni.status().await {
                return Err(RuntimeError::Unavailable(format!("NetworkNotReady: {e}")));
            }
        }
        // Its containers come next: start the cgroup-migration grace period now.
        inner.primer.prime();
        let id = new_id();
        let dir = inner.sandbox_dir(&id);
        std::fs::create_dir_all(dir.join("ns")).map_err(io_err("create sandbox"))?;
        let hostname = if config.host_network {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .unwrap_or_default()
                .trim()
                .to_string()
        } else {
            config.hostname.clone()
        };
        // Pinned namespaces: IPC unless hostIPC, UTS and network unless hostNetwork.
        let mut rec = SandboxRecord {
            id: id.clone(),
            name: config.name.clone(),
            namespace: config.namespace.clone(),
            uid: config.uid.clone(),
            attempt: config.attempt,
            hostname: hostname.clone(),
            host_network: config.host_network,
            host_pid: config.host_pid,
            host_ipc: config.host_ipc,
            labels: config.labels.clone(),
            annotations: config.annotations.clone(),
            created_at: SystemTime::now(),
            ready: false,
            ip: String::new(),
            net_ns: None,
            ipc_ns: None,
            uts_ns: None,
            pid_ns: None,
            pid_holder: None,
        };
        let pin = |kind: &str, slot: &mut Option<String>| -> Result<()> {
            let f = dir.join("ns").join(kind);
            std::fs::write(&f, b"").map_err(io_err("create namespace file"))?;
            *slot = Some(f.to_string_lossy().into_owned());
            Ok(())
        };
        if !config.host_ipc {
            pin("ipc", &mut rec.ipc_ns)?;
        }
        if !config.host_network {
            pin("uts", &mut rec.uts_ns)?;
            pin("net", &mut rec.net_ns)?;
        }
        write_json(&dir.join("sandbox.json"), &rec).map_err(io_err("write sandbox"))?;
        let (ipc, uts, net, host) = (
            rec.ipc_ns.clone(),
            rec.uts_ns.clone(),
            rec.net_ns.clone(),
            hostname.clone(),
        );
        let pinned = tokio::task::spawn_blocking(move || {
            ns::create_and_pin(&ns::Pins {
                ipc: ipc.as_deref().map(Path::new),
                uts: uts.as_deref().map(Path::new),
                net: net.as_deref().map(Path::new),
                hostname: &host,
            })
        })
        .await
        .map_err(|e| RuntimeError::Failed {
            op: "run pod sandbox",
            message: e.to_string(),
        })?;
        if let Err(e) = pinned {
            let _ = rootfs::unmount_namespaces(&dir.join("ns"));
            return Err(RuntimeError::Failed {
                op: "run pod sandbox",
                message: format!("pinning namespaces: {e}"),
            });
        }
        if config.share_process_namespace && !config.host_pid {
            // A shared PID namespace is held by a reaping PID 1 (kubelet's pause): the shim
            // binary in `pause` mode, pinned at ns/pid, in its own process group.
            let (holder_inner, holder_dir) = (inner.clone(), dir.clone());
            let holder =
                tokio::task::spawn_blocking(move || holder_inner.start_pid_holder(&holder_dir))
                    .await
                    .map_err(|e| RuntimeError::Failed {
                        op: "run pod sandbox",
                        message: e.to_string(),
                    })?;
            match holder {
                Ok((path, pgid)) => {
                    rec.pid_ns = Some(path);
                    rec.pid_holder = Some(pgid);
                    write_json(&dir.join("sandbox.json"), &rec).map_err(io_err("write sandbox"))?;
                }
                Err(e) => {
                    let _ = rootfs::unmount_namespaces(&dir.join("ns"));
                    let _ = std::fs::remove_dir_all(&dir);
                    return Err(RuntimeError::Failed {
                        op: "run pod sandbox",
                        message: format!("shared PID namespace: {e}"),
                    });
                }
            }
        }
        staticlet_runtime::fault::point("sandbox-namespaces-pinned");
        if let Some(netns) = rec.net_ns.clone() {
            let req = attach_request(&rec, &config, &netns);
            match inner.cni.add(&req).await {
                Ok(res) => {
                    rec.ip = res.pod_ip().map(|ip| ip.to_string()).unwrap_or_default();
                    staticlet_runtime::fault::point("sandbox-network-added");
                }
                Err(e) => {
                    let _ = rootfs::unmount_namespaces(&dir.join("ns"));
                    let _ = std::fs::remove_dir_all(&dir);
                    return Err(RuntimeError::Failed {
                        op: "run pod sandbox",
                        message: format!("setting up the pod network: {e}"),
                    });
                }
            }
        }
        // /etc/hostname, /etc/resolv.conf for the pod's containers (/etc/hosts is the agent's).
        let resolv = match &config.dns {
            Some(d) => {
                let mut s = String::new();
                for n in &d.servers {
                    s.push_str(&format!("nameserver {n}\n"));
                }
                if !d.searches.is_empty() {
                    s.push_str(&format!("search {}\n", d.searches.join(" ")));
                }
                if !d.options.is_empty() {
                    s.push_str(&format!("options {}\n", d.options.join(" ")));
                }
                s
            }
            None => std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
        };
        std::fs::write(dir.join("hostname"), format!("{hostname}\n"))
            .map_err(io_err("write hostname"))?;
        std::fs::write(dir.join("resolv.conf"), resolv).map_err(io_err("write resolv.conf"))?;
        rec.ready = true;
        write_json(&dir.join("sandbox.json"), &rec).map_err(io_err("write sandbox"))?;
        info!(sandbox = %id, pod = %config.name, "sandbox ready");
        Ok(SandboxId(id))
    }

    async fn stop_pod_sandbox(&self, id: &SandboxId) -> Result<()> {
        let inner = self.inner.clone();
        let id = id.0.clone();
        inner.teardown_network(&id).await?;
        let work = inner.clone();
        work.teardown(move || {
            let mut rec = match inner.load_sandbox(&id) {
                Ok(r) => r,
                Err(RuntimeError::NotFound { .. }) => return Ok(()),
                Err(e) => return Err(e),
            };
            for cid in inner.container_ids(|_, sandbox| sandbox == id) {
                inner.stop_container_blocking(&cid, Duration::ZERO)?;
            }
            if rec.ready {
                rec.ready = false;
                write_json(&inner.sandbox_dir(&id).join("sandbox.json"), &rec)
                    .map_err(io_err("write sandbox"))?;
            }
            Ok(())
        })
        .await
    }

    async fn remove_pod_sandbox(&self, id: &SandboxId) -> Result<()> {
        let inner = self.inner.clone();
        let id = id.0.clone();
        inner.teardown_network(&id).await?;
        let work = inner.clone();
        work.teardown(move || {
            let dir = inner.sandbox_dir(&id);
            if !dir.exists() {
                return Ok(());
            }
            for cid in inner.container_ids(|_, sandbox| sandbox == id) {
                inner.remove_container_blocking(&cid)?;
            }
            if let Ok(rec) = inner.load_sandbox(&id) {
                if let Some(pgid) = rec.pid_holder {
                    // SIGKILL to the holder's group (the pause and the unshare that waits for it).
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(pgid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
            rootfs::unmount_namespaces(&dir.join("ns")).map_err(io_err("unmount namespaces"))?;
            std::fs::remove_dir_all(&dir).map_err(io_err("remove sandbox"))?;
            Ok(())
        })
        .await
    }

    async fn pod_sandbox_status(&self, id: &SandboxId) -> Result<SandboxStatus> {
        let r = self.inner.load_sandbox(&id.0)?;
        Ok(self.inner.sandbox_status(&r))
    }

    async fn list_pod_sandboxes(&self, selector: &LabelSelector) -> Result<Vec<SandboxStatus>> {
        let inner = self.inner.clone();
        let selector = selector.clone();
        self.inner
            .readers
            .run(move || {
                Ok(inner
                    .sandbox_ids(&selector)
                    .iter()
                    .filter_map(|id| inner.load_sandbox(id).ok())
                    .map(|r| inner.sandbox_status(&r))
                    .collect())
            })
            .await
    }

    async fn image_status(&self, image: &ImageSpec) -> Result<Option<Image>> {
        let inner = self.inner.clone();
        let name = image.image.clone();
        self.inner
            .readers
            .run(move || {
                inner
                    .images
                    .image_status(&name)
                    .map_err(|e| RuntimeError::Failed {
                        op: "image status",
                        message: e.to_string(),
                    })
            })
            .await
    }

    async fn pull_image(&self, image: &ImageSpec, auth: Option<&AuthConfig>) -> Result<String> {
        let reference = image.image.clone();
        let pull_err = |message: String| RuntimeError::ImagePull {
            image: reference.clone(),
            message,
        };
        let creds = match auth {
            Some(a) if !a.username.is_empty() => Some(staticlet_images::Credentials::Basic {
                username: a.username.clone(),
                password: a.password.clone(),
            }),
            Some(a) if !a.identity_token.is_empty() => Some(
                staticlet_images::Credentials::IdentityToken(a.identity_token.clone()),
            ),
            _ => self.inner.credentials_for(&reference).map_err(pull_err)?,
        };
        let opts = staticlet_images::PullOptions {
            auth: creds,
            insecure_registries: self.inner.cfg.insecure_registries.clone(),
            stall_timeout: self.inner.cfg.pull_stall_timeout,
            ..Default::default()
        };
        let rec = self
            .inner
            .puller
            .pull(&reference, &opts)
            .await
            .map_err(|e| pull_err(e.to_string()))?;
        info!(image = %reference, id = %rec.id(), "image pulled");
        Ok(rec.id().to_string())
    }

    async fn list_images(&self) -> Result<Vec<Image>> {
        let inner = self.inner.clone();
        self.inner
            .readers
            .run(move || {
                let failed = |e: staticlet_images::Error| RuntimeError::Failed {
                    op: "list images",
                    message: e.to_string(),
                };
                let mut ids: Vec<String> = inner
                    .images
                    .list()
                    .map_err(failed)?
                    .into_iter()
                    .map(|e| e.image_id)
                    .collect();
                ids.sort();
                ids.dedup();
                let mut out = Vec::with_capacity(ids.len());
                for id in ids {
                    // Gone meanwhile (removed by another caller): not listed.
                    if let Some(img) = inner.images.image_status(&id).map_err(failed)? {
                        out.push(img);
                    }
                }
                Ok(out)
            })
            .await
    }

    async fn remove_image(&self, image: &ImageSpec) -> Result<()> {
        let inner = self.inner.clone();
        let reference = image.image.clone();
        blocking(move || {
            let used = images_in_use(&inner.cfg.root_dir);
            match inner
                .images
                .remove(&reference, &|rec| used.iter().any(|u| u == rec.id()))
            {
                Ok(removed) => {
                    for r in removed {
                        info!(image = %r.reference, "image removed");
                    }
                    Ok(())
                }
                Err(staticlet_images::Error::NotFound(_)) => Ok(()),
                Err(e @ staticlet_images::Error::InUse { .. }) => Err(RuntimeError::Failed {
                    op: "remove image",
                    message: format!("{e}: remove its containers first"),
                }),
                Err(e) => Err(RuntimeError::Failed {
                    op: "remove image",
                    message: e.to_string(),
                }),
            }
        })
        .await
    }

    fn image_store_dir(&self) -> Option<PathBuf> {
        Some(self.inner.images.root().to_path_buf())
    }

    async fn create_container(
        &self,
        sandbox: &SandboxId,
        config: &ContainerConfig,
        sandbox_config: &SandboxConfig,
    ) -> Result<ContainerId> {
        // Its start comes next: start the cgroup-migration grace period now.
        self.inner.primer.prime();
        let inner = self.inner.clone();
        let sandbox = sandbox.0.clone();
        let config = config.clone();
        let log_dir = sandbox_config.log_directory.clone();
        blocking(move || {
            let sb = inner.load_sandbox(&sandbox)?;
            if !sb.ready {
                return Err(RuntimeError::Failed { op: "create container", message: format!("sandbox {sandbox} is not ready") });
            }
            let image = inner
                .images
                .image_config(&config.image.image)
                .map_err(|e| RuntimeError::Failed { op: "create container", message: format!("image {:?}: {e}", config.image.image) })?;
            let image_ref = inner
                .images
                .image_status(&config.image.image)
                .ok()
                .flatten()
                .map(|i| i.id)
                .unwrap_or_default();
            let id = new_id();
            let dir = inner.container_dir(&id);
            let result = (|| -> Result<()> {
                std::fs::create_dir_all(dir.join("bundle")).map_err(io_err("create container"))?;
                let root = dir.join("rootfs");
                let layers = inner
                    .images
                    .rootfs_layers(&config.image.image)
                    .map_err(|e| RuntimeError::Failed { op: "create container", message: e.to_string() })?;
                rootfs::mount_overlay(&layers, &root, &dir.join("upper"), &dir.join("work"))
                    .or_else(|e| {
                        warn!(error = %e, "overlayfs unavailable; copying the image into the container's root");
                        std::fs::create_dir_all(&root)?;
                        inner.images.flatten_rootfs(&config.image.image, &root).map_err(io::Error::other)
                    })
                    .map_err(io_err("prepare rootfs"))?;
                let sdir = inner.sandbox_dir(&sandbox);
                let files = spec::SandboxFiles {
                    hostname: sdir.join("hostname").to_string_lossy().into_owned(),
                    resolv_conf: sdir.join("resolv.conf").to_string_lossy().into_owned(),
                };
                let ns = spec::SandboxNamespaces {
                    net: sb.net_ns.clone(),
                    ipc: sb.ipc_ns.clone(),
                    uts: sb.uts_ns.clone(),
                    pid: sb.pid_ns.clone(),
                    host_pid: sb.host_pid,
                };
                let cgroups_path = container_cgroup(&sb.uid, &id);
                let v = spec::build(&spec::SpecInput {
                    cfg: &config,
                    image: &image,
                    rootfs: &root,
                    namespaces: &ns,
                    files: &files,
                    hostname: &sb.hostname,
                    cgroups_path: &cgroups_path,
                    localhost_seccomp: match &config.security.seccomp {
                        staticlet_runtime::Seccomp::Localhost(path) => Some(
                            std::fs::read(path)
                                .map_err(|e| format!("seccomp profile {}: {e}", path.display()))
                                .and_then(|b| {
                                    serde_json::from_slice(&b).map_err(|e| {
                                        format!("seccomp profile {}: {e}", path.display())
                                    })
                                })
                                .map_err(RuntimeError::InvalidConfig)?,
                        ),
                        _ => None,
                    },
                })
                .map_err(RuntimeError::InvalidConfig)?;
                write_json(&dir.join("bundle/config.json"), &v).map_err(io_err("write OCI spec"))?;
                let stop_signal = if config.stop_signal.is_empty() { image.stop_signal.clone() } else { config.stop_signal.clone() };
                let rec = ContainerRecord {
                    id: id.clone(),
                    sandbox_id: sandbox.clone(),
                    name: config.name.clone(),
                    attempt: config.attempt,
                    image: config.image.image.clone(),
                    image_ref: image_ref.clone(),
                    labels: config.labels.clone(),
                    annotations: config.annotations.clone(),
                    // No log path: the container's output is discarded (as containerd does).
                    log_path: if config.log_path.as_os_str().is_empty() {
                        PathBuf::new()
                    } else {
                        log_dir.join(&config.log_path)
                    },
                    created_at: SystemTime::now(),
                    stop_signal,
                    stdin: config.stdin,
                    stdin_once: config.stdin_once,
                    tty: config.tty,
                };
                write_json(&dir.join("container.json"), &rec).map_err(io_err("write container"))?;
                Ok(())
            })();
            if let Err(e) = result {
                let _ = rootfs::unmount(&dir.join("rootfs"));
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
            debug!(container = %id, name = %config.name, "container created");
            Ok(ContainerId(id))
        })
        .await
    }

    async fn start_container(&self, id: &ContainerId) -> Result<()> {
        let inner = self.inner.clone();
        let id = id.0.clone();
        blocking(move || {
            let rec = inner.load_container(&id)?;
            let log_path = if rec.log_path.as_os_str().is_empty() {
                PathBuf::from("/dev/null")
            } else {
                rec.log_path.clone()
            };
            if let Some(parent) = log_path.parent() {
                std::fs::create_dir_all(parent).map_err(io_err("create log directory"))?;
            }
            let dir = inner.container_dir(&id);
            let cfg = staticlet_shim::ShimConfig {
                reexec: inner.cfg.reexec.clone(),
                id: id.clone(),
                bundle: dir.join("bundle"),
                state_dir: dir.join("shim"),
                log_path,
                root: inner.base.join("libcontainer"),
                start_timeout: Duration::from_secs(60),
                stdio: staticlet_shim::ContainerStdio {
                    stdin: rec.stdin,
                    stdin_once: rec.stdin_once,
                    tty: rec.tty,
                },
            };
            // The supervisor is our child: a task waits for it (through a pidfd: a dropped
            // child would join tokio's orphan queue, which is polled with one waitpid per
            // orphan on every SIGCHLD, i.e. per container on every exec probe). An agent that
            // dies hands its shims to init.
            // That task also reports the container's exit (the shim exits right after
            // recording it).
            let watcher = inner.clone();
            let spawn = |cmd: std::process::Command| {
                let mut child = tokio::process::Command::from(cmd)
                    .kill_on_drop(false)
                    .spawn()?;
                watcher.exits.claim(&id);
                let id = id.clone();
                tokio::spawn(async move {
                    let _ = child.wait().await;
                    watcher.report_exit(&id);
                });
                Ok(())
            };
            staticlet_shim::spawn_shim_with(&cfg, spawn).map_err(|e| RuntimeError::Failed {
                op: "start container",
                message: e.to_string(),
            })?;
            Ok(())
        })
        .await
    }

    async fn stop_container(&self, id: &ContainerId, timeout: Duration) -> Result<()> {
        Inner::stop_container(&self.inner, &id.0, timeout).await
    }

    async fn remove_container(&self, id: &ContainerId) -> Result<()> {
        let inner = self.inner.clone();
        let id = id.0.clone();
        let work = inner.clone();
        work.teardown(move || inner.remove_container_blocking(&id))
            .await
    }

    async fn container_status(&self, id: &ContainerId) -> Result<ContainerStatus> {
        let r = self.inner.load_container(&id.0)?;
        let st = self.inner.container_status(&r);
        self.inner.watch_exits(std::slice::from_ref(&st));
        Ok(st)
    }

    async fn list_containers(&self, selector: &LabelSelector) -> Result<Vec<ContainerStatus>> {
        let inner = self.inner.clone();
        let selector = selector.clone();
        let list: Vec<ContainerStatus> = self
            .inner
            .readers
            .run(move || {
                Ok(inner
                    .container_ids(|labels, _| selector.matches(labels))
                    .iter()
                    .filter_map(|id| inner.load_container(id).ok())
                    .map(|r| inner.container_status(&r))
                    .collect())
            })
            .await?;
        self.inner.watch_exits(&list);
        Ok(list)
    }

    fn subscribe_events(&self) -> Option<tokio::sync::broadcast::Receiver<ContainerEvent>> {
        Some(self.inner.exits.subscribe())
    }

    async fn list_container_stats(&self, selector: &LabelSelector) -> Result<Vec<ContainerStats>> {
        let inner = self.inner.clone();
        let selector = selector.clone();
        self.inner
            .readers
            .run(move || {
                let now = SystemTime::now();
                Ok(inner
                    .container_ids(|labels, _| selector.matches(labels))
                    .iter()
                    .filter_map(|id| inner.load_container(id).ok())
                    .filter(|r| inner.container_status(r).state == ContainerState::Running)
                    .filter_map(|r| {
                        let sb = inner.load_sandbox(&r.sandbox_id).ok()?;
                        let (cpu, mem) = stats::read(
                            Path::new("/sys/fs/cgroup"),
                            &format!("/staticlet/pod{}/{}", sb.uid, r.id),
                        );
                        Some(ContainerStats {
                            id: ContainerId(r.id.clone()),
                            labels: r.labels.clone(),
                            timestamp: now,
                            cpu_usage_core_nanos: cpu,
                            memory_working_set_bytes: mem,
                        })
                    })
                    .collect())
            })
            .await
    }

    async fn exec_sync(
        &self,
        id: &ContainerId,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<ExecResult> {
        // Driven on the async executor (no blocking thread per exec: probes run often).
        let failed = |e: std::io::Error| RuntimeError::Failed {
            op: "exec",
            message: e.to_string(),
        };
        let dir = self.inner.container_dir(&id.0).join("shim");
        // Through the shim, which forks the command's parent: no helper binary to exec.
        if let Some(out) = execsock::exec_sync(&dir, cmd, timeout).await {
            let out = out.map_err(failed)?;
            return Ok(ExecResult {
                stdout: out.stdout,
                stderr: out.stderr,
                exit_code: out.exit_code,
            });
        }
        // A shim of an earlier version (or none: the helper says the container is not running).
        let command = staticlet_shim::helper_command(
            &self.inner.cfg.reexec,
            staticlet_shim::ExecTarget::StateDir(&dir),
            cmd,
            &[],
            timeout,
        )
        .map_err(failed)?;
        let started = tokio::time::Instant::now();
        let mut child = tokio::process::Command::from(command)
            .kill_on_drop(true)
            .spawn()
            .map_err(failed)?;
        let (mut out, mut err) = (child.stdout.take(), child.stderr.take());
        // The helper kills the command at `timeout`; this deadline only guards against a
        // helper that hangs itself.
        let hard = timeout + Duration::from_secs(10);
        let run = collect_output(out.as_mut(), err.as_mut(), child.wait());
        let (status, stdout, stderr) = match tokio::time::timeout(hard, run).await {
            Ok(s) => s,
            Err(_) => {
                let _ = child.kill().await;
                return Err(failed(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("exec helper did not finish within {hard:?}"),
                )));
            }
        };
        let out = staticlet_shim::exec_result(
            status.map_err(failed)?,
            stdout,
            stderr,
            started.elapsed(),
            timeout,
        )
        .map_err(failed)?;
        Ok(ExecResult {
            stdout: out.stdout,
            stderr: out.stderr,
            exit_code: out.exit_code,
        })
    }

    async fn exec(&self, id: &ContainerId, req: &ExecRequest, io: ExecIo) -> Result<i32> {
        let failed = |e: std::io::Error| RuntimeError::Failed {
            op: "exec",
            message: format!("container {id}: {e}"),
        };
        self.inner.load_container(&id.0)?;
        if req.cmd.is_empty() {
            return Err(RuntimeError::InvalidConfig(format!(
                "exec in container {id}: empty command"
            )));
        }
        let dir = self.inner.container_dir(&id.0).join("shim");
        // As containerd does for a command on a terminal.
        let env: Vec<String> = if req.tty {
            vec!["TERM=xterm".into()]
        } else {
            Vec::new()
        };
        let helper = staticlet_shim::interactive_helper_command(
            &self.inner.cfg.reexec,
            staticlet_shim::ExecTarget::StateDir(&dir),
            &req.cmd,
            &env,
            req.tty,
        )
        .map_err(failed)?;
        let code = interactive::run(helper, io).await.map_err(failed)?;
        debug!(container = %id, cmd = ?req.cmd, tty = req.tty, code, "interactive exec ended");
        Ok(code)
    }

    async fn attach(&self, id: &ContainerId, _req: &AttachRequest, io: ExecIo) -> Result<()> {
        let failed = |e: std::io::Error| RuntimeError::Failed {
            op: "attach",
            message: format!("container {id}: {e}"),
        };
        // Whether it has stdin or a terminal is the container's, as it was created.
        let rec = self.inner.load_container(&id.0)?;
        let dir = self.inner.container_dir(&id.0).join("shim");
        let sock = attach::connect(&dir).await.map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                RuntimeError::Failed {
                    op: "attach",
                    // A container whose shim predates attach has no socket either.
                    message: format!("container {id} is not running (no attach socket)"),
                }
            }
            _ => failed(e),
        })?;
        let stdio = attach::ContainerStdio {
            stdin: rec.stdin,
            stdin_once: rec.stdin_once,
            tty: rec.tty,
        };
        attach::run(sock, stdio, io).await.map_err(failed)?;
        debug!(container = %id, "attach ended");
        Ok(())
    }

    async fn port_forward(&self, sandbox: &SandboxId, port: u16) -> Result<tokio::net::TcpStream> {
        let rec = self.inner.load_sandbox(&sandbox.0)?;
        portforward::connect(rec.net_ns.as_deref().map(Path::new), port)
            .await
            .map_err(|e| RuntimeError::Failed {
                op: "port-forward",
                message: format!("connecting to localhost:{port} in sandbox {sandbox}: {e}"),
            })
    }
}

/// Reads a helper's output pipe to its end into `kept`, keeping at most
/// [`staticlet_shim::MAX_OUTPUT`] bytes (what is read before the caller gives up stays in
/// `kept`).
/// A command's stdout and stderr (each kept up to [`staticlet_shim::MAX_OUTPUT`]), read while
/// `done` (the command's end, as its runner reports it) runs. Once `done` has resolved, what is
/// still in the pipes is taken for at most 50 ms more: a process the command left behind may
/// hold them open. Returns `done`'s output and the two streams.
async fn collect_output<A, B, T>(
    out: Option<&mut A>,
    err: Option<&mut B>,
    done: impl std::future::Future<Output = T>,
) -> (T, Vec<u8>, Vec<u8>)
where
    A: tokio::io::AsyncRead + Unpin,
    B: tokio::io::AsyncRead + Unpin,
{
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let result = {
        let mut reads = std::pin::pin!(async {
            tokio::join!(read_capped(out, &mut stdout), read_capped(err, &mut stderr))
        });
        let mut done = std::pin::pin!(done);
        let (mut result, mut read_all) = (None, false);
        while result.is_none() {
            tokio::select! {
                _ = &mut reads, if !read_all => read_all = true,
                r = &mut done => result = Some(r),
            }
        }
        if !read_all {
            let _ = tokio::time::timeout(Duration::from_millis(50), &mut reads).await;
        }
        result.expect("set by the loop")
    };
    (result, stdout, stderr)
}

async fn read_capped<R: tokio::io::AsyncRead + Unpin>(pipe: Option<&mut R>, kept: &mut Vec<u8>) {
    use tokio::io::AsyncReadExt;
    let Some(pipe) = pipe else {
        return;
    };
    let mut buf = [0u8; 4096];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let room = staticlet_shim::MAX_OUTPUT.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}

/// Image ids (config digests) used by the containers under `root_dir`, for `images rm`.
pub fn images_in_use(root_dir: &Path) -> Vec<String> {
    let dir = root_dir.join("runtime/containers");
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| read_json::<ContainerRecord>(&e.path().join("container.json")).ok())
        .map(|r| r.image_ref)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_created_objects_are_swept_and_complete_ones_kept() {
        let base = tempfile::tempdir().unwrap();
        let mk = |p: &str| std::fs::create_dir_all(base.path().join(p)).unwrap();
        mk("containers/half/bundle");
        mk("containers/whole/bundle");
        std::fs::write(base.path().join("containers/whole/container.json"), "{}").unwrap();
        mk("sandboxes/half/ns");
        std::fs::write(base.path().join("sandboxes/half/ns/net"), "").unwrap();
        mk("sandboxes/whole/ns");
        std::fs::write(base.path().join("sandboxes/whole/sandbox.json"), "{}").unwrap();
        sweep_half_created(base.path());
        for (p, kept) in [
            ("containers/half", false),
            ("containers/whole", true),
            ("sandboxes/half", false),
            ("sandboxes/whole", true),
        ] {
            assert_eq!(base.path().join(p).exists(), kept, "{p}");
        }
    }

    #[test]
    fn sandboxes_whose_namespaces_are_gone_are_marked_not_ready() {
        let base = tempfile::tempdir().unwrap();
        let empty = base.path().join("empty-pin");
        std::fs::write(&empty, b"").unwrap();
        let live = "/proc/self/ns/ipc".to_string();
        let record = |id: &str, ipc: Option<String>, ready: bool| SandboxRecord {
            id: id.into(),
            name: format!("{id}-pod"),
            namespace: "kube-system".into(),
            uid: id.into(),
            attempt: 0,
            hostname: String::new(),
            host_network: true,
            host_pid: false,
            host_ipc: ipc.is_none(),
            labels: Labels::default(),
            annotations: Labels::default(),
            created_at: SystemTime::UNIX_EPOCH,
            ready,
            ip: String::new(),
            net_ns: None,
            ipc_ns: ipc,
            uts_ns: None,
            pid_ns: None,
            pid_holder: None,
        };
        let lost_pin = Some(empty.to_string_lossy().into_owned());
        for rec in [
            record("lost", lost_pin.clone(), true),
            record("live", Some(live), true),
            record("nopins", None, true),
            record("stopped", lost_pin, false),
        ] {
            let dir = base.path().join("sandboxes").join(&rec.id);
            std::fs::create_dir_all(&dir).unwrap();
            write_json(&dir.join("sandbox.json"), &rec).unwrap();
        }
        mark_lost_sandboxes(base.path());
        for (id, ready) in [
            ("lost", false),
            ("live", true),
            ("nopins", true),
            ("stopped", false),
        ] {
            let rec: SandboxRecord =
                read_json(&base.path().join("sandboxes").join(id).join("sandbox.json")).unwrap();
            assert_eq!(rec.ready, ready, "{id}");
        }
    }

    #[test]
    fn signals_parse() {
        use nix::sys::signal::Signal;
        assert_eq!(parse_signal("SIGTERM"), Some(Signal::SIGTERM));
        assert_eq!(parse_signal("QUIT"), Some(Signal::SIGQUIT));
        assert_eq!(parse_signal("9"), Some(Signal::SIGKILL));
        assert_eq!(parse_signal(""), None);
        assert_eq!(parse_signal("SIGNOPE"), None);
    }
}
