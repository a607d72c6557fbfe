//! Wiring: sources → merger → pod manager → workers, plus the local API and a runtime
//! readiness probe. [`start`] takes every piece of I/O (runtime, listeners, shutdown) so that
//! component tests run the whole agent against the fake runtime.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use staticlet_runtime::{Clock, ContainerRuntime};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::cluster::ClusterView;
use crate::config::file::FileSource;
use crate::config::http::HttpSource;
use crate::config::lastgood::LastGood;
use crate::config::merge::{self, DesiredPods, Merger};
use crate::config::{ManifestRecord, SourceKind};
use crate::kuberuntime::NodeContext;
use crate::pod_workers::worker::WorkerCtx;
use crate::pod_workers::{PodManager, PodsView};
use crate::rollout::controller::Controller;
use crate::rollout::store::Store;
use crate::server::{self, ApiState, Readiness};

/// Everything `staticlet run` is configured with.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub node_name: String,
    pub root_dir: PathBuf,
    pub log_dir: PathBuf,
    pub host_ip: String,
    pub pod_manifest_path: Option<PathBuf>,
    pub manifest_url: Option<String>,
    pub manifest_url_headers: Vec<(String, String)>,
    pub file_check_frequency: Duration,
    /// What to do with a manifest someone other than root could have written.
    pub manifest_permissions: crate::config::trust::Policy,
    pub http_check_frequency: Duration,
    /// Prefix of container IDs in status (`staticlet`, `containerd`).
    pub runtime_name: String,
    /// Period of the pod workers' relist (kubelet's PLEG period).
    pub relist_period: Duration,
    /// Where the cgroup hierarchies holding the pods' cgroups are found
    /// (`/proc/self/mountinfo`); `None` when the runtime makes no cgroups (the simulator).
    pub cgroup_mountinfo: Option<PathBuf>,
    /// Image garbage collection (kubelet's `imageGC*`).
    pub image_gc: crate::image_gc::ImageGcPolicy,
    /// Graceful node shutdown (kubelet's `shutdownGracePeriod*`); `None`: off.
    pub node_shutdown: Option<crate::nodeshutdown::ShutdownPolicy>,
    /// `--rollout-ready-deadline`: how long an updated pod has to become Ready before it is
    /// rolled back (`None`: no check unless a pod's `staticlet.io/ready-deadline` asks).
    pub rollout_ready_deadline: Option<Duration>,
}

/// Listeners of the local API (either may be absent, e.g. in tests).
#[derive(Debug, Default)]
pub struct Listeners {
    pub unix: Option<tokio::net::UnixListener>,
    pub tcp: Option<tokio::net::TcpListener>,
}

/// A running agent: read handles on what it owns, and its tasks.
pub struct RunningAgent {
    pub pods: watch::Receiver<Arc<PodsView>>,
    pub manifests: watch::Receiver<Arc<Vec<ManifestRecord>>>,
    pub desired: watch::Receiver<Arc<DesiredPods>>,
    pub readiness: watch::Receiver<Readiness>,
    /// When the pod manager's loop last listed the runtime (see `PodManager::heartbeat`).
    pub heartbeat: watch::Receiver<tokio::time::Instant>,
    /// Where the cluster side (if any) publishes what the local API shows of it.
    pub cluster: watch::Sender<Arc<ClusterView>>,
    /// Where the local API's control verbs go (`staticlet restart|stop|start pod`).
    pub control: mpsc::Sender<crate::control::ControlRequest>,
    /// Where the node's shutdown watcher reports, with graceful node shutdown on.
    pub node_shutdown: Option<mpsc::Sender<crate::nodeshutdown::ShutdownEvent>>,
    /// The pod workers' counters (`/metrics`).
    pub counters: Arc<crate::pod_workers::WorkerCounters>,
    tasks: JoinSet<()>,
}

impl RunningAgent {
    /// Waits until every task has stopped (after shutdown).
    pub async fn wait(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Starts the agent. It runs until `shutdown` is cancelled; containers are left running.
pub fn start(
    cfg: AgentConfig,
    runtime: Arc<dyn ContainerRuntime>,
    listeners: Listeners,
    clock: Clock,
    shutdown: CancellationToken,
) -> RunningAgent {
    let mut tasks = JoinSet::new();
    let lastgood = LastGood::new(cfg.root_dir.join("lastgood"));
    let (src_tx, src_rx) = mpsc::channel(16);
    let mut kinds = Vec::new();
    if let Some(path) = &cfg.pod_manifest_path {
        kinds.push(SourceKind::File);
        let src = FileSource::new(
            path,
            &cfg.node_name,
            cfg.file_check_frequency,
            Some(lastgood.clone()),
            clock,
        )
        .with_permissions(cfg.manifest_permissions);
        tasks.spawn(src.run(src_tx.clone(), shutdown.clone()));
    }
    if let Some(url) = &cfg.manifest_url {
        kinds.push(SourceKind::Http);
        let src = HttpSource::new(
            url,
            cfg.manifest_url_headers.clone(),
            &cfg.node_name,
            cfg.http_check_frequency,
            Some(lastgood.clone()),
            clock,
        );
        tasks.spawn(src.run(src_tx.clone(), shutdown.clone()));
    }
    drop(src_tx);
    let no_sources = kinds.is_empty();
    if no_sources {
        info!("no pod source configured (--pod-manifest-path, --manifest-url): running no pods");
    }

    let (desired_tx, desired_rx) = watch::channel(Arc::new(DesiredPods {
        all_sources_seen: no_sources,
        ..Default::default()
    }));
    let (manifests_tx, merged_manifests_rx) = watch::channel(Arc::new(Vec::new()));
    tasks.spawn(merge::run(
        Merger::new(kinds),
        src_rx,
        desired_tx,
        manifests_tx,
        clock,
        shutdown.clone(),
    ));
    // The rollout controller turns what the sources want into what runs (a rolled back pod
    // runs its last Ready version) and adds the rollouts to the manifest records.
    let (run_tx, run_rx) = watch::channel(desired_rx.borrow().clone());
    let (manifests_tx, manifests_rx) = watch::channel(Arc::new(Vec::new()));
    let rollouts = Controller::new(
        Store::new(cfg.root_dir.join("rollout")),
        cfg.rollout_ready_deadline,
        &cfg.node_name,
        clock,
    );
    let desired_rx_merged = desired_rx;
    let desired_rx = run_rx;

    let counters = Arc::new(crate::pod_workers::WorkerCounters::default());
    let ctx = Arc::new(WorkerCtx {
        runtime: runtime.clone(),
        node: NodeContext {
            node_name: cfg.node_name.clone(),
            root_dir: cfg.root_dir.clone(),
            log_dir: cfg.log_dir.clone(),
            host_ip: cfg.host_ip.clone(),
        },
        clock,
        runtime_name: cfg.runtime_name.clone(),
        relist_period: cfg.relist_period,
        cgroup_mountinfo: cfg.cgroup_mountinfo.clone(),
        counters: counters.clone(),
    });
    let (pods_tx, pods_rx) = watch::channel(Arc::new(PodsView::new()));
    tasks.spawn(rollouts.run(
        desired_rx_merged,
        merged_manifests_rx,
        pods_rx.clone(),
        run_tx,
        manifests_tx,
        shutdown.clone(),
    ));
    let manager = PodManager::new(ctx, pods_tx);
    let heartbeat = manager.heartbeat();
    // Every image a wanted pod names, stopped or not, is kept by the image GC.
    let wanted_rx = desired_rx.clone();
    // Pods stopped on request (`staticlet stop pod`) are taken out here.
    let (control_tx, control_rx) = mpsc::channel(16);
    let (ctl_tx, ctl_rx) = watch::channel(desired_rx.borrow().clone());
    tasks.spawn(crate::control::run(
        crate::control::Stopped::open(&cfg.root_dir.join("control")),
        control_rx,
        desired_rx.clone(),
        ctl_tx,
        manager.requests(),
        shutdown.clone(),
    ));
    // Pods whose `staticlet.io/after` dependencies are not Ready yet are held back here.
    let (ord_tx, ord_rx) = watch::channel(ctl_rx.borrow().clone());
    tasks.spawn(crate::ordering::run(
        ctl_rx,
        pods_rx.clone(),
        ord_tx,
        shutdown.clone(),
    ));
    let desired_rx = ord_rx;
    // With graceful node shutdown, the manager sees the desired pods through its filter.
    let (manager_desired, node_shutdown) = match cfg.node_shutdown.clone() {
        None => (desired_rx.clone(), None),
        Some(policy) => {
            let (events_tx, events_rx) = mpsc::channel(4);
            let (tx, rx) = watch::channel(desired_rx.borrow().clone());
            tasks.spawn(crate::nodeshutdown::run(
                policy,
                events_rx,
                desired_rx.clone(),
                tx,
                pods_rx.clone(),
                shutdown.clone(),
            ));
            (rx, Some(events_tx))
        }
    };
    tasks.spawn(manager.run(manager_desired, shutdown.clone()));

    tasks.spawn(crate::image_gc::run(
        runtime.clone(),
        wanted_rx,
        cfg.image_gc,
        clock,
        shutdown.clone(),
    ));

    let (ready_tx, ready_rx) = watch::channel(Readiness::default());
    tasks.spawn(readiness(
        runtime.clone(),
        desired_rx.clone(),
        ready_tx,
        shutdown.clone(),
    ));

    let control = control_tx.clone();
    let (cluster_tx, cluster_rx) = watch::channel(Arc::new(ClusterView::default()));
    let state = ApiState {
        pods: pods_rx.clone(),
        manifests: manifests_rx.clone(),
        readiness: ready_rx.clone(),
        cluster: cluster_rx,
        runtime: runtime.clone(),
        counters: counters.clone(),
    };
    if let Some(l) = listeners.unix {
        tasks.spawn(server::serve(
            l,
            server::router(state.clone()).merge(server::control_router(control_tx)),
            shutdown.clone(),
        ));
    }
    if let Some(l) = listeners.tcp {
        tasks.spawn(server::serve(l, server::router(state), shutdown.clone()));
    }
    RunningAgent {
        pods: pods_rx,
        manifests: manifests_rx,
        desired: desired_rx,
        readiness: ready_rx,
        heartbeat,
        cluster: cluster_tx,
        node_shutdown,
        control,
        counters,
        tasks,
    }
}

async fn readiness(
    runtime: Arc<dyn ContainerRuntime>,
    mut desired: watch::Receiver<Arc<DesiredPods>>,
    tx: watch::Sender<Readiness>,
    shutdown: CancellationToken,
) {
    let mut last_runtime_error = None;
    loop {
        let (runtime_ready, runtime_msg) = match runtime.status().await {
            Ok(s) if s.runtime_ready => (true, String::new()),
            Ok(s) => (false, format!("container runtime not ready: {}", s.message)),
            Err(e) => (false, e.to_string()),
        };
        if !runtime_ready && last_runtime_error.as_ref() != Some(&runtime_msg) {
            warn!(error = %runtime_msg, "container runtime not ready");
        }
        last_runtime_error = (!runtime_ready).then(|| runtime_msg.clone());
        let seen = desired.borrow_and_update().all_sources_seen;
        let message = match (seen, runtime_ready) {
            (true, true) => String::new(),
            (false, _) => "waiting for every pod source to be read once".to_string(),
            (true, false) => runtime_msg,
        };
        tx.send_if_modified(|r| {
            let new = Readiness {
                sources_seen: seen,
                runtime_ready,
                message,
            };
            let changed = *r != new;
            *r = new;
            changed
        });
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = desired.changed() => {}
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}
